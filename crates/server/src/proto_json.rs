//! The protobuf-JSON forms the MLflow REST API speaks: `TraceInfoV3` (RFC 3339 request time,
//! `"0.171s"` durations) and OTLP spans with snake_case fields, base64 ids and typed values.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value, json};
use tracelake_model::{Span, Trace, TraceInfo, TraceLocation, format_duration_ms, format_timestamp_ms};
use tracelake_otlp::{OtlpSpan, span_to_otlp};

/// A `TraceInfoV3` as proto JSON.
pub(crate) fn trace_info(info: &TraceInfo) -> Value {
    let mut m = Map::new();
    m.insert("trace_id".into(), json!(info.trace_id));
    if let Some(id) = &info.client_request_id {
        m.insert("client_request_id".into(), json!(id));
    }
    m.insert("trace_location".into(), location(&info.trace_location));
    m.insert("request_time".into(), json!(format_timestamp_ms(info.request_time_ms)));
    if let Some(d) = info.execution_duration_ms {
        m.insert("execution_duration".into(), json!(format_duration_ms(d)));
    }
    m.insert("state".into(), json!(info.state.as_str()));
    if !info.trace_metadata.is_empty() {
        m.insert("trace_metadata".into(), json!(info.trace_metadata));
    }
    if !info.assessments.is_empty() {
        m.insert("assessments".into(), json!(info.assessments));
    }
    if !info.tags.is_empty() {
        m.insert("tags".into(), json!(info.tags));
    }
    if let Some(p) = &info.request_preview {
        m.insert("request_preview".into(), json!(p));
    }
    if let Some(p) = &info.response_preview {
        m.insert("response_preview".into(), json!(p));
    }
    Value::Object(m)
}

pub(crate) fn location(loc: &TraceLocation) -> Value {
    match loc {
        TraceLocation::MlflowExperiment { experiment_id } => {
            json!({"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}})
        }
        TraceLocation::InferenceTable { full_table_name } => {
            json!({"type": "INFERENCE_TABLE", "inference_table": {"full_table_name": full_table_name}})
        }
        TraceLocation::UcSchema { catalog_name, schema_name, .. } => {
            json!({"type": "UC_SCHEMA", "uc_schema": {"catalog_name": catalog_name, "schema_name": schema_name}})
        }
    }
}

/// A trace (`trace_info` and `spans`) as proto JSON, written straight to the serializer: a trace
/// of ten thousand spans never becomes a tree of `Value`s.
pub(crate) struct ProtoTrace<'a>(pub &'a Trace);

impl Serialize for ProtoTrace<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(Some(2))?;
        m.serialize_entry("trace_info", &trace_info(&self.0.info))?;
        m.serialize_entry("spans", &Seq(self.0.spans.iter().map(|s| ProtoSpan(span_to_otlp(s), s))))?;
        m.end()
    }
}

/// An OTLP span as proto JSON with the field names MLflow's REST API uses; the model span gives
/// the kind and status names.
struct ProtoSpan<'a>(OtlpSpan, &'a Span);

impl Serialize for ProtoSpan<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (otlp, span) = (&self.0, self.1);
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("trace_id", &BASE64.encode(&otlp.trace_id))?;
        m.serialize_entry("span_id", &BASE64.encode(&otlp.span_id))?;
        if !otlp.parent_span_id.is_empty() {
            m.serialize_entry("parent_span_id", &BASE64.encode(&otlp.parent_span_id))?;
        }
        m.serialize_entry("name", &otlp.name)?;
        m.serialize_entry("kind", span.kind.as_otlp_name())?;
        m.serialize_entry("start_time_unix_nano", &otlp.start_time_unix_nano)?;
        if otlp.end_time_unix_nano != 0 {
            m.serialize_entry("end_time_unix_nano", &otlp.end_time_unix_nano)?;
        }
        m.serialize_entry("attributes", &KeyValues(&otlp.attributes))?;
        if !otlp.events.is_empty() {
            let events = Seq(otlp.events.iter().map(|e| {
                json!({"time_unix_nano": e.time_unix_nano, "name": e.name,
                       "attributes": KeyValues(&e.attributes).to_value()})
            }));
            m.serialize_entry("events", &events)?;
        }
        if !otlp.links.is_empty() {
            let links = Seq(otlp.links.iter().map(|l| {
                json!({"trace_id": BASE64.encode(&l.trace_id), "span_id": BASE64.encode(&l.span_id),
                       "attributes": KeyValues(&l.attributes).to_value()})
            }));
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

/// A sequence serialized from an iterator.
pub(crate) struct Seq<I>(pub I);

impl<I: Iterator<Item = T> + Clone, T: Serialize> Serialize for Seq<I> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.clone())
    }
}

/// OTLP attributes as `[{"key": ..., "value": {"string_value": ...}}, ...]`.
struct KeyValues<'a>(&'a [tracelake_otlp::KeyValue]);

impl KeyValues<'_> {
    fn to_value(&self) -> Value {
        Value::Array(self.0.iter().map(key_value).collect())
    }
}

impl Serialize for KeyValues<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(KeyValue))
    }
}

struct KeyValue<'a>(&'a tracelake_otlp::KeyValue);

impl Serialize for KeyValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use tracelake_otlp::any_value::Value as V;
        let mut m = serializer.serialize_map(Some(2))?;
        m.serialize_entry("key", &self.0.key)?;
        match self.0.value.as_ref().and_then(|v| v.value.as_ref()) {
            // the common scalars directly; nested values through `any_value`
            Some(V::StringValue(s)) => m.serialize_entry("value", &Single("string_value", s))?,
            Some(V::BoolValue(b)) => m.serialize_entry("value", &Single("bool_value", b))?,
            Some(V::IntValue(i)) => m.serialize_entry("value", &Single("int_value", i))?,
            Some(V::DoubleValue(d)) => m.serialize_entry("value", &Single("double_value", d))?,
            _ => m.serialize_entry("value", &self.0.value.as_ref().map_or(json!({}), any_value))?,
        }
        m.end()
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

fn key_value(kv: &tracelake_otlp::KeyValue) -> Value {
    json!({"key": kv.key, "value": kv.value.as_ref().map_or(json!({}), any_value)})
}

fn any_value(v: &tracelake_otlp::AnyValue) -> Value {
    use tracelake_otlp::any_value::Value as V;
    match &v.value {
        None => json!({}),
        Some(V::StringValue(s)) => json!({"string_value": s}),
        Some(V::BoolValue(b)) => json!({"bool_value": b}),
        Some(V::IntValue(i)) => json!({"int_value": i}),
        Some(V::DoubleValue(d)) => json!({"double_value": d}),
        Some(V::ArrayValue(a)) => {
            json!({"array_value": {"values": a.values.iter().map(any_value).collect::<Vec<_>>()}})
        }
        Some(V::KvlistValue(kv)) => {
            json!({"kvlist_value": {"values": kv.values.iter().map(key_value).collect::<Vec<_>>()}})
        }
        Some(V::BytesValue(b)) => json!({"bytes_value": BASE64.encode(b)}),
        Some(V::StringValueStrindex(_)) => json!({}),
    }
}
