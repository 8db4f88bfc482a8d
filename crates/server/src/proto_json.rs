//! The protobuf-JSON forms the MLflow REST API speaks: `TraceInfoV3` (RFC 3339 request time,
//! `"0.171s"` durations) and OTLP spans with snake_case fields, base64 ids and typed values.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value, json};
use tracelake_model::{Span, SpanId, Trace, TraceId, decode_attribute};

/// A trace (`trace_info` and `spans`) as proto JSON, written straight to the serializer: a trace
/// of ten thousand spans never becomes a tree of `Value`s.
pub(crate) struct ProtoTrace<'a>(pub &'a Trace);

impl Serialize for ProtoTrace<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(Some(2))?;
        m.serialize_entry("trace_info", &self.0.info.to_proto_json())?;
        m.serialize_entry("spans", &Seq(self.0.spans.iter().map(ProtoSpan)))?;
        m.end()
    }
}

/// A span as an OTLP span in proto JSON, with the field names MLflow's REST API uses, written
/// straight from the model span: attribute values typed (each attribute's JSON text becomes an
/// `AnyValue`), ids in base64.
struct ProtoSpan<'a>(&'a Span);

impl Serialize for ProtoSpan<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let span = self.0;
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("trace_id", &BASE64.encode(span.trace_id.to_bytes()))?;
        m.serialize_entry("span_id", &BASE64.encode(span.span_id.to_bytes()))?;
        if let Some(parent) = span.parent_id {
            m.serialize_entry("parent_span_id", &BASE64.encode(parent.to_bytes()))?;
        }
        m.serialize_entry("name", &span.name)?;
        m.serialize_entry("kind", span.kind.as_otlp_name())?;
        m.serialize_entry("start_time_unix_nano", &span.start_time_unix_nano)?;
        if let Some(end) = span.end_time_unix_nano.filter(|e| *e != 0) {
            m.serialize_entry("end_time_unix_nano", &end)?;
        }
        m.serialize_entry("attributes", &Attrs(&span.attributes))?;
        if !span.events.is_empty() {
            let events = Seq(span.events.iter().map(Event));
            m.serialize_entry("events", &events)?;
        }
        let links: Vec<Value> = span
            .links
            .iter()
            .filter_map(|l| {
                let trace_id = TraceId::from_mlflow(&l.trace_id).ok()?;
                let span_id = SpanId::from_hex(&l.span_id).ok()?;
                let attributes = l.attributes.iter().flatten().map(|(k, v)| KeyValue(k, AnyJsonRef(v)));
                Some(json!({"trace_id": BASE64.encode(trace_id.to_bytes()),
                            "span_id": BASE64.encode(span_id.to_bytes()),
                            "attributes": serde_json::to_value(Seq(attributes)).ok()?}))
            })
            .collect();
        if !links.is_empty() {
            m.serialize_entry("links", &links)?;
        }
        let mut status = Map::new();
        status.insert("code".into(), json!(span.status.code.as_otlp_name()));
        if !span.status.message.is_empty() {
            status.insert("message".into(), json!(span.status.message));
        }
        m.serialize_entry("status", &status)?;
        m.end()
    }
}

struct Event<'a>(&'a tracelake_model::SpanEvent);

impl Serialize for Event<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = serializer.serialize_map(Some(3))?;
        m.serialize_entry("time_unix_nano", &e.time_unix_nano)?;
        m.serialize_entry("name", &e.name)?;
        let attributes = e.attributes.iter().map(|(k, v)| KeyValue(k, AnyJsonRef(v)));
        m.serialize_entry("attributes", &Seq(attributes))?;
        m.end()
    }
}

/// A sequence serialized from an iterator.
pub(crate) struct Seq<I>(pub I);

impl<I: Iterator<Item = T> + Clone, T: Serialize> Serialize for Seq<I> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.clone())
    }
}

/// `{"key": ..., "value": <AnyValue>}`.
struct KeyValue<'a, V>(&'a str, V);

impl<V: Serialize> Serialize for KeyValue<'_, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(Some(2))?;
        m.serialize_entry("key", self.0)?;
        m.serialize_entry("value", &self.1)?;
        m.end()
    }
}

/// A span's attributes as OTLP key-values, each attribute's JSON text as a typed value.
struct Attrs<'a>(&'a tracelake_model::Attributes);

impl Serialize for Attrs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|(k, raw)| KeyValue(k, AnyJson(decode_attribute(raw)))))
    }
}

struct AnyJson(Value);

impl Serialize for AnyJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        AnyJsonRef(&self.0).serialize(serializer)
    }
}

/// A JSON value as an OTLP `AnyValue` in proto JSON: null as `{}`, integers as `int_value`,
/// other numbers as `double_value`, objects as `kvlist_value`.
#[derive(Clone, Copy)]
struct AnyJsonRef<'a>(&'a Value);

impl Serialize for AnyJsonRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => serializer.serialize_map(Some(0))?.end(),
            Value::Bool(b) => Single("bool_value", b).serialize(serializer),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Single("int_value", &i).serialize(serializer),
                None => Single("double_value", &n.as_f64().unwrap_or(f64::NAN)).serialize(serializer),
            },
            Value::String(s) => Single("string_value", s).serialize(serializer),
            Value::Array(items) => {
                Single("array_value", &Single("values", &Seq(items.iter().map(AnyJsonRef))))
                    .serialize(serializer)
            }
            Value::Object(map) => {
                let values = Seq(map.iter().map(|(k, v)| KeyValue(k, AnyJsonRef(v))));
                Single("kvlist_value", &Single("values", &values)).serialize(serializer)
            }
        }
    }
}

/// `{name: value}`.
pub(crate) struct Single<'a, T>(pub &'static str, pub &'a T);

impl<T: Serialize> Serialize for Single<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(Some(1))?;
        m.serialize_entry(self.0, self.1)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracelake_model::{Attributes, SpanEvent, SpanKind, SpanStatus};

    /// Attribute values are typed as OTLP `AnyValue`s in MLflow's proto JSON, events and the
    /// status follow, and ids are base64.
    #[test]
    fn a_span_is_written_as_mlflow_proto_json() {
        let mut attributes = Attributes::new();
        attributes.insert("s", &json!("text"));
        attributes.insert("n", &json!(3));
        attributes.insert("f", &json!(0.5));
        attributes.insert("none", &json!(null));
        attributes.insert("list", &json!([true, "x"]));
        attributes.insert("obj", &json!({"a": {"b": 1}}));
        let mut event_attributes = Map::new();
        event_attributes.insert("exception.message".into(), json!("boom"));
        let span = Span {
            trace_id: TraceId::new(0xabcd).unwrap(),
            span_id: SpanId::new(2).unwrap(),
            parent_id: SpanId::new(1),
            name: "step".into(),
            kind: SpanKind::Client,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: Some(2_000),
            status: SpanStatus { code: tracelake_model::StatusCode::Error, message: "bad".into() },
            attributes,
            events: vec![SpanEvent {
                name: "exception".into(),
                time_unix_nano: 1_500,
                attributes: event_attributes,
            }],
            links: vec![],
        };
        let got = serde_json::to_value(ProtoSpan(&span)).unwrap();
        let kv = |k: &str, v: Value| json!({"key": k, "value": v});
        assert_eq!(
            got,
            json!({
                "trace_id": "AAAAAAAAAAAAAAAAAACrzQ==",
                "span_id": "AAAAAAAAAAI=",
                "parent_span_id": "AAAAAAAAAAE=",
                "name": "step",
                "kind": "SPAN_KIND_CLIENT",
                "start_time_unix_nano": 1_000,
                "end_time_unix_nano": 2_000,
                "attributes": [
                    kv("s", json!({"string_value": "text"})),
                    kv("n", json!({"int_value": 3})),
                    kv("f", json!({"double_value": 0.5})),
                    kv("none", json!({})),
                    kv("list", json!({"array_value": {"values": [{"bool_value": true}, {"string_value": "x"}]}})),
                    kv("obj", json!({"kvlist_value": {"values": [
                        kv("a", json!({"kvlist_value": {"values": [kv("b", json!({"int_value": 1}))]}}))
                    ]}})),
                ],
                "events": [{"time_unix_nano": 1_500, "name": "exception",
                            "attributes": [kv("exception.message", json!({"string_value": "boom"}))]}],
                "status": {"code": "STATUS_CODE_ERROR", "message": "bad"},
            })
        );
    }
}
