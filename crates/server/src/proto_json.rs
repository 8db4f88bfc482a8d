//! The protobuf-JSON forms the MLflow REST API speaks: `TraceInfoV3` (RFC 3339 request time,
//! `"0.171s"` durations) and OTLP spans with snake_case fields, base64 ids and typed values.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use tracelake_model::{Span, TraceInfo, TraceLocation, format_duration_ms, format_timestamp_ms};
use tracelake_otlp::span_to_otlp;

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

/// An OTLP span as proto JSON with the field names MLflow's REST API uses.
pub(crate) fn span(span: &Span) -> Value {
    let otlp = span_to_otlp(span);
    let mut m = Map::new();
    m.insert("trace_id".into(), json!(BASE64.encode(&otlp.trace_id)));
    m.insert("span_id".into(), json!(BASE64.encode(&otlp.span_id)));
    if !otlp.parent_span_id.is_empty() {
        m.insert("parent_span_id".into(), json!(BASE64.encode(&otlp.parent_span_id)));
    }
    m.insert("name".into(), json!(otlp.name));
    m.insert("kind".into(), json!(span.kind.as_otlp_name()));
    m.insert("start_time_unix_nano".into(), json!(otlp.start_time_unix_nano));
    if otlp.end_time_unix_nano != 0 {
        m.insert("end_time_unix_nano".into(), json!(otlp.end_time_unix_nano));
    }
    m.insert("attributes".into(), Value::Array(otlp.attributes.iter().map(key_value).collect()));
    if !otlp.events.is_empty() {
        let events = otlp
            .events
            .iter()
            .map(|e| {
                json!({"time_unix_nano": e.time_unix_nano, "name": e.name,
                       "attributes": e.attributes.iter().map(key_value).collect::<Vec<_>>()})
            })
            .collect();
        m.insert("events".into(), Value::Array(events));
    }
    if !otlp.links.is_empty() {
        let links = otlp
            .links
            .iter()
            .map(|l| {
                json!({"trace_id": BASE64.encode(&l.trace_id), "span_id": BASE64.encode(&l.span_id),
                       "attributes": l.attributes.iter().map(key_value).collect::<Vec<_>>()})
            })
            .collect();
        m.insert("links".into(), Value::Array(links));
    }
    let mut status = Map::new();
    status.insert("code".into(), json!(span.status.code.as_otlp_name()));
    if !span.status.message.is_empty() {
        status.insert("message".into(), json!(span.status.message));
    }
    m.insert("status".into(), Value::Object(status));
    Value::Object(m)
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
