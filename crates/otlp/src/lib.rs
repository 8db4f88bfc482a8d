//! OTLP to and from the tracelake model, with MLflow's rules for attribute values.
//!
//! - **Ingest** ([`decode_protobuf`], [`decode_json`], [`spans_from_request`]): every OTLP
//!   attribute value is decoded and stored JSON-encoded, as MLflow stores span attributes. Values
//!   that OTLP-only clients (the MLflow client among them) already JSON-encoded before sending
//!   would end up encoded twice; one layer is stripped when the inner value is a string, object
//!   or array, as the MLflow server does (a string `"1"` stays the string `"1"`). The MLflow
//!   trace id is derived from the OTLP trace id; a client-sent `mlflow.traceRequestId` is not
//!   trusted.
//! - **Export** ([`span_to_otlp`], [`request_from_spans`]): attribute JSON is decoded into typed
//!   values (`"20"` becomes the integer 20, `"{\"a\": 1}"` a key-value list), as the MLflow
//!   client sends spans to an MLflow server's `/v1/traces`.
//!
//! Errors name the element: `resource_spans[0].scope_spans[1].spans[3].trace_id: expected 16
//! bytes, got 8`.

pub mod semconv;

pub mod rows;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status, span, status};
use serde_json::{Map, Value};
use tracelake_model::{
    Attributes, IdError, Link, Span, SpanEvent, SpanId, SpanKind, SpanOrigin, SpanStatus, StatusCode,
    TraceId, encode_attribute, json_text, keys,
};

pub use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest as TraceRequest;
pub use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value};
pub use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;

/// Why an OTLP payload cannot be ingested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpError {
    #[error("invalid OTLP protobuf: {0}")]
    Protobuf(String),
    #[error("invalid OTLP JSON at line {line} column {column}: {message}")]
    Json { line: usize, column: usize, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// Reads an `ExportTraceServiceRequest` in protobuf.
pub fn decode_protobuf(body: &[u8]) -> Result<ExportTraceServiceRequest, OtlpError> {
    decode_protobuf_as(body)
}

/// Reads any OTLP export request (traces, logs, metrics) in protobuf.
pub fn decode_protobuf_as<T: prost::Message + Default>(body: &[u8]) -> Result<T, OtlpError> {
    T::decode(body).map_err(|e| OtlpError::Protobuf(e.to_string()))
}

/// Reads an `ExportTraceServiceRequest` in OTLP/JSON (ids in hex, as the spec writes them).
pub fn decode_json(body: &[u8]) -> Result<ExportTraceServiceRequest, OtlpError> {
    decode_json_as(body)
}

/// Reads any OTLP export request (traces, logs, metrics) in OTLP/JSON.
pub fn decode_json_as<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, OtlpError> {
    serde_json::from_slice(body).map_err(|e| OtlpError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}

/// Writes an `ExportTraceServiceRequest` in protobuf.
pub fn encode_protobuf(request: &ExportTraceServiceRequest) -> Vec<u8> {
    prost::Message::encode_to_vec(request)
}

/// Writes an `ExportTraceServiceRequest` in OTLP/JSON.
pub fn encode_json(request: &ExportTraceServiceRequest) -> Vec<u8> {
    serde_json::to_vec(request).unwrap_or_default()
}

/// A span as it arrived, with the resource and scope it came under (shared by the spans of one
/// scope).
#[derive(Debug, Clone, PartialEq)]
pub struct IngestedSpan {
    pub span: Span,
    pub origin: Arc<SpanOrigin>,
}

/// Every span of a request, converted, with foreign semantic conventions translated
/// ([`semconv`]). The request is taken whole or refused whole.
pub fn spans_from_request(request: &ExportTraceServiceRequest) -> Result<Vec<IngestedSpan>, OtlpError> {
    let mut out = Vec::new();
    // the spans of a trace mostly come together: they share the text of its request id
    let mut request_id = None;
    for (r, rs) in request.resource_spans.iter().enumerate() {
        let resource = rs.resource.as_ref().map(|res| key_values_to_map(&res.attributes)).unwrap_or_default();
        for (s, ss) in rs.scope_spans.iter().enumerate() {
            let (scope_name, scope_version) =
                ss.scope.as_ref().map(|sc| (sc.name.clone(), sc.version.clone())).unwrap_or_default();
            let origin = Arc::new(SpanOrigin { resource: resource.clone(), scope_name, scope_version });
            for (i, otlp) in ss.spans.iter().enumerate() {
                let path = || format!("resource_spans[{r}].scope_spans[{s}].spans[{i}]");
                let mut span = span_from_otlp(otlp, &path, &mut request_id)?;
                semconv::translate(&mut span);
                out.push(IngestedSpan { span, origin: origin.clone() });
            }
        }
    }
    Ok(out)
}

fn invalid(path: &dyn Fn() -> String, field: &str, e: IdError) -> OtlpError {
    OtlpError::Invalid { path: format!("{}.{field}", path()), message: e.to_string() }
}

/// One OTLP span as a model span; `path` names it in errors and is made only for one. The
/// request id attribute is shared with the previous span converted when it is of the same trace.
fn span_from_otlp(
    otlp: &OtlpSpan,
    path: &dyn Fn() -> String,
    request_id: &mut Option<(TraceId, Arc<str>)>,
) -> Result<Span, OtlpError> {
    let trace_id = TraceId::from_bytes(&otlp.trace_id).map_err(|e| invalid(path, "trace_id", e))?;
    let span_id = SpanId::from_bytes(&otlp.span_id).map_err(|e| invalid(path, "span_id", e))?;
    let parent_id = if otlp.parent_span_id.is_empty() {
        None
    } else {
        Some(SpanId::from_bytes(&otlp.parent_span_id).map_err(|e| invalid(path, "parent_span_id", e))?)
    };
    let mut attributes = Attributes::with_capacity(otlp.attributes.len() + 1);
    let id_json = match request_id {
        Some((id, json)) if *id == trace_id => json.clone(),
        _ => {
            let json: Arc<str> = encode_attribute(&trace_id.to_mlflow_v3()).into();
            *request_id = Some((trace_id, json.clone()));
            json
        }
    };
    attributes.insert_raw(keys::REQUEST_ID, id_json);
    for kv in &otlp.attributes {
        if kv.key == keys::REQUEST_ID {
            continue; // derived from the trace id, never trusted from the client
        }
        let raw = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            // what `strip_double_encoding` would return, without encoding and decoding it first
            Some(any_value::Value::StringValue(text)) if holds_json_text(text) => text.clone(),
            value => attribute_json(value),
        };
        attributes.insert_raw(kv.key.clone(), raw);
    }
    let status = otlp.status.as_ref().map_or_else(SpanStatus::default, |s| SpanStatus {
        code: match status::StatusCode::try_from(s.code) {
            Ok(status::StatusCode::Ok) => StatusCode::Ok,
            Ok(status::StatusCode::Error) => StatusCode::Error,
            _ => StatusCode::Unset,
        },
        message: s.message.clone(),
    });
    let kind = match span::SpanKind::try_from(otlp.kind) {
        Ok(span::SpanKind::Server) => SpanKind::Server,
        Ok(span::SpanKind::Client) => SpanKind::Client,
        Ok(span::SpanKind::Producer) => SpanKind::Producer,
        Ok(span::SpanKind::Consumer) => SpanKind::Consumer,
        Ok(span::SpanKind::Unspecified) => SpanKind::Unspecified,
        _ => SpanKind::Internal,
    };
    let events = otlp
        .events
        .iter()
        .map(|e| SpanEvent {
            name: e.name.clone(),
            time_unix_nano: e.time_unix_nano,
            attributes: key_values_to_map(&e.attributes),
        })
        .collect();
    let mut links = Vec::with_capacity(otlp.links.len());
    for (i, l) in otlp.links.iter().enumerate() {
        let linked_trace = TraceId::from_bytes(&l.trace_id)
            .map_err(|e| invalid(path, &format!("links[{i}].trace_id"), e))?;
        let linked_span =
            SpanId::from_bytes(&l.span_id).map_err(|e| invalid(path, &format!("links[{i}].span_id"), e))?;
        links.push(Link {
            trace_id: linked_trace.to_mlflow_v3(),
            span_id: linked_span.to_string(),
            attributes: (!l.attributes.is_empty()).then(|| key_values_to_map(&l.attributes)),
        });
    }
    Ok(Span {
        trace_id,
        span_id,
        parent_id,
        name: otlp.name.clone().into(),
        kind,
        start_time_unix_nano: otlp.start_time_unix_nano,
        end_time_unix_nano: (otlp.end_time_unix_nano != 0).then_some(otlp.end_time_unix_nano),
        status,
        attributes,
        events,
        links,
    })
}

/// Undoes one layer of JSON encoding applied twice: when `json` is a JSON string whose
/// content is itself a JSON string, object or array, that content is the real value.
pub fn strip_double_encoding(json: String) -> String {
    match serde_json::from_str::<Value>(&json) {
        Ok(Value::String(inner)) if holds_json_text(&inner) => inner,
        _ => json,
    }
}

/// Whether `text` is the JSON encoding of a string, object or array.
fn holds_json_text(text: &str) -> bool {
    matches!(text.trim_start().as_bytes().first(), Some(b'"' | b'{' | b'['))
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// An OTLP value as JSON. Bytes become a string of their hex digits.
pub fn any_value_to_json(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number)
        }
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(any_value_to_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(key_values_to_map(&kv.values)),
        Some(any_value::Value::BytesValue(b)) => {
            Value::String(b.iter().map(|x| format!("{x:02x}")).collect())
        }
        Some(any_value::Value::StringValueStrindex(_)) => Value::Null,
    }
}

/// An OTLP value as MLflow stores an attribute value: `encode_attribute(&any_value_to_json(v))`,
/// written directly rather than through a JSON value.
pub fn attribute_json(value: Option<&any_value::Value>) -> String {
    let mut out = String::with_capacity(text_len(value) + 16);
    write_attribute_json(&mut out, value);
    out
}

/// About how long the JSON of `value` is: its text, and a few bytes per element.
fn text_len(value: Option<&any_value::Value>) -> usize {
    match value {
        Some(any_value::Value::StringValue(s)) => s.len() + 2,
        Some(any_value::Value::ArrayValue(a)) => {
            a.values.iter().map(|v| text_len(v.value.as_ref()) + 2).sum()
        }
        Some(any_value::Value::KvlistValue(kv)) => kv
            .values
            .iter()
            .map(|e| e.key.len() + 6 + text_len(e.value.as_ref().and_then(|v| v.value.as_ref())))
            .sum(),
        _ => 8,
    }
}

fn write_attribute_json(out: &mut String, value: Option<&any_value::Value>) {
    use std::fmt::Write as _;
    match value {
        None | Some(any_value::Value::StringValueStrindex(_)) => out.push_str("null"),
        Some(any_value::Value::StringValue(s)) => json_text::write_str(out, s),
        Some(any_value::Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(any_value::Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        // serde_json writes a finite double as `Number::from_f64` does and the others as null
        Some(any_value::Value::DoubleValue(d)) => {
            out.push_str(&serde_json::to_string(d).unwrap_or_else(|_| "null".into()))
        }
        Some(any_value::Value::BytesValue(b)) => {
            out.push('"');
            for x in b {
                let _ = write!(out, "{x:02x}");
            }
            out.push('"');
        }
        Some(any_value::Value::ArrayValue(a)) => {
            out.push('[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_attribute_json(out, v.value.as_ref());
            }
            out.push(']');
        }
        // A JSON object holds a key once (the first place, the last value): a list that
        // repeats one goes through the map.
        Some(any_value::Value::KvlistValue(kv)) if repeats_a_key(&kv.values) => {
            out.push_str(&encode_attribute(&key_values_to_map(&kv.values)));
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            out.push('{');
            for (i, entry) in kv.values.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                json_text::write_str(out, &entry.key);
                out.push_str(": ");
                write_attribute_json(out, entry.value.as_ref().and_then(|v| v.value.as_ref()));
            }
            out.push('}');
        }
    }
}

fn repeats_a_key(kvs: &[KeyValue]) -> bool {
    if kvs.len() <= 16 {
        return kvs.iter().enumerate().any(|(i, a)| kvs[..i].iter().any(|b| a.key == b.key));
    }
    let mut seen = std::collections::HashSet::with_capacity(kvs.len());
    !kvs.iter().all(|kv| seen.insert(kv.key.as_str()))
}

/// JSON as a typed OTLP value (what MLflow's client does before sending spans).
pub fn json_to_any_value(value: &Value) -> AnyValue {
    let v = match value {
        Value::Null => None,
        Value::Bool(b) => Some(any_value::Value::BoolValue(*b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => Some(any_value::Value::StringValue(s.clone())),
        Value::Array(items) => Some(any_value::Value::ArrayValue(ArrayValue {
            values: items.iter().map(json_to_any_value).collect(),
        })),
        Value::Object(map) => {
            Some(any_value::Value::KvlistValue(KeyValueList { values: map_to_key_values(map) }))
        }
    };
    AnyValue { value: v }
}

fn key_values_to_map(kvs: &[KeyValue]) -> Map<String, Value> {
    kvs.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, any_value_to_json))).collect()
}

fn map_to_key_values(map: &Map<String, Value>) -> Vec<KeyValue> {
    map.iter()
        .map(|(k, v)| KeyValue { key: k.clone(), value: Some(json_to_any_value(v)), ..Default::default() })
        .collect()
}

/// A model span as an OTLP span, attribute values typed.
pub fn span_to_otlp(span: &Span) -> OtlpSpan {
    let kind = match span.kind {
        SpanKind::Unspecified => span::SpanKind::Unspecified,
        SpanKind::Internal => span::SpanKind::Internal,
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
        SpanKind::Producer => span::SpanKind::Producer,
        SpanKind::Consumer => span::SpanKind::Consumer,
    };
    let code = match span.status.code {
        StatusCode::Unset => status::StatusCode::Unset,
        StatusCode::Ok => status::StatusCode::Ok,
        StatusCode::Error => status::StatusCode::Error,
    };
    OtlpSpan {
        trace_id: span.trace_id.to_bytes().to_vec(),
        span_id: span.span_id.to_bytes().to_vec(),
        parent_span_id: span.parent_id.map(|p| p.to_bytes().to_vec()).unwrap_or_default(),
        name: span.name.to_string(),
        kind: kind as i32,
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano.unwrap_or(0),
        attributes: span
            .attributes
            .iter()
            .map(|(k, raw)| KeyValue {
                key: k.to_owned(),
                value: Some(json_to_any_value(&tracelake_model::decode_attribute(raw))),
                ..Default::default()
            })
            .collect(),
        events: span
            .events
            .iter()
            .map(|e| span::Event {
                name: e.name.clone(),
                time_unix_nano: e.time_unix_nano,
                attributes: map_to_key_values(&e.attributes),
                ..Default::default()
            })
            .collect(),
        links: span
            .links
            .iter()
            .filter_map(|l| {
                let trace_id = TraceId::from_mlflow(&l.trace_id).ok()?;
                let span_id = SpanId::from_hex(&l.span_id).ok()?;
                Some(span::Link {
                    trace_id: trace_id.to_bytes().to_vec(),
                    span_id: span_id.to_bytes().to_vec(),
                    attributes: l.attributes.as_ref().map(map_to_key_values).unwrap_or_default(),
                    ..Default::default()
                })
            })
            .collect(),
        status: Some(Status { code: code as i32, message: span.status.message.clone() }),
        ..Default::default()
    }
}

/// Spans as one request under one resource and scope.
pub fn request_from_spans<'a>(
    spans: impl IntoIterator<Item = &'a Span>,
    resource: &Map<String, Value>,
    scope_name: &str,
    scope_version: &str,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: map_to_key_values(resource), ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: scope_name.to_owned(),
                    version: scope_version.to_owned(),
                    ..Default::default()
                }),
                spans: spans.into_iter().map(span_to_otlp).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
