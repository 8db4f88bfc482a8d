//! The tables' columns, and how spans and trace infos become rows and come back.
//!
//! The span, log and metric tables follow the OpenTelemetry-shaped trace tables of the MLflow
//! contract (§8): lowercase hex ids, `SPAN_KIND_*` and `STATUS_CODE_*` names, nanosecond times,
//! a microsecond `time` and a `date` partition. Attribute maps are `MAP<STRING, STRING>` whose
//! values are the JSON text of each attribute (numbers cast directly; strings keep their
//! quotes, as MLflow serialises span attributes), so every reader round-trips them exactly.
//!
//! Rows go through serde into arrow's JSON decoder and out through its JSON writer: the column
//! list is written once, in the row structs, and [`spans_schema`] / [`info_schema`] give their
//! arrow types.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Date32Array, Int32Array, Int64Array, MapArray, MapBuilder, MapFieldNames, RecordBatch,
    StringArray, StringBuilder, StructArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::json::{ArrayWriter, ReaderBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracelake_model::summary;
use tracelake_model::{
    Attributes, Link, Span, SpanEvent, SpanId, SpanKind, SpanOrigin, SpanStatus, StatusCode, TraceId,
    TraceInfo, TraceState, date_and_time_micros, keys,
};
use tracelake_store::derive::location_from_key;
use tracelake_store::{StoreError, StoreResult};

pub use tracelake_store::lake::{INFO_TABLE, LOGS_TABLE, METRICS_TABLE, SPANS_TABLE};

/// Every table of a schema.
pub const TABLES: [&str; 4] = [SPANS_TABLE, LOGS_TABLE, METRICS_TABLE, INFO_TABLE];

/// The partition column of every table.
pub const PARTITION: &str = "date";

fn string_map() -> DataType {
    let entries = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, true),
    ]);
    DataType::Map(Arc::new(Field::new("key_value", DataType::Struct(entries), false)), false)
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn list_of(fields: Vec<Field>) -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Struct(Fields::from(fields)), true)))
}

fn attributes_fields() -> Vec<Field> {
    vec![
        Field::new("attributes", string_map(), true),
        Field::new("dropped_attributes_count", DataType::Int32, true),
    ]
}

fn with_attributes(mut fields: Vec<Field>) -> Vec<Field> {
    fields.extend(attributes_fields());
    fields
}

/// Columns every OpenTelemetry table starts with.
fn record_columns() -> Vec<Field> {
    vec![
        Field::new("record_id", DataType::Utf8, false),
        Field::new("time", utc_micros(), false),
        Field::new(PARTITION, DataType::Date32, false),
        Field::new("service_name", DataType::Utf8, true),
    ]
}

fn resource_columns() -> Vec<Field> {
    vec![
        Field::new("resource", DataType::Struct(Fields::from(attributes_fields())), true),
        Field::new("resource_schema_url", DataType::Utf8, true),
        Field::new(
            "instrumentation_scope",
            DataType::Struct(Fields::from(with_attributes(vec![
                Field::new("name", DataType::Utf8, true),
                Field::new("version", DataType::Utf8, true),
            ]))),
            true,
        ),
    ]
}

/// `mlflow_experiment_trace_otel_spans`.
pub fn spans_schema() -> SchemaRef {
    let mut f = record_columns();
    f.extend([
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("trace_state", DataType::Utf8, true),
        Field::new("parent_span_id", DataType::Utf8, true),
        Field::new("flags", DataType::Int32, true),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("start_time_unix_nano", DataType::Int64, false),
        Field::new("end_time_unix_nano", DataType::Int64, true),
    ]);
    f.extend(attributes_fields());
    f.extend([
        Field::new(
            "events",
            list_of(with_attributes(vec![
                Field::new("time_unix_nano", DataType::Int64, true),
                Field::new("name", DataType::Utf8, true),
            ])),
            true,
        ),
        Field::new("dropped_events_count", DataType::Int32, true),
        Field::new(
            "links",
            list_of(with_attributes(vec![
                Field::new("trace_id", DataType::Utf8, true),
                Field::new("span_id", DataType::Utf8, true),
                Field::new("trace_state", DataType::Utf8, true),
                Field::new("flags", DataType::Int32, true),
            ])),
            true,
        ),
        Field::new("dropped_links_count", DataType::Int32, true),
        Field::new(
            "status",
            DataType::Struct(Fields::from(vec![
                Field::new("message", DataType::Utf8, true),
                Field::new("code", DataType::Utf8, true),
            ])),
            true,
        ),
    ]);
    f.extend(resource_columns());
    f.push(Field::new("span_schema_url", DataType::Utf8, true));
    f.extend(shredded_columns());
    Arc::new(Schema::new(f))
}

/// Typed copies of the GenAI fields `attributes` holds as JSON text, so that aggregates over
/// them (tokens per model per day) read small typed columns rather than every span's whole
/// attribute map, inputs and outputs included. The counterpart of shredding a VARIANT column;
/// tables made before them gain them on open, null in older rows.
fn shredded_columns() -> Vec<Field> {
    vec![
        // `mlflow.spanType`
        Field::new("span_type", DataType::Utf8, true),
        // `mlflow.llm.model` (the GenAI, OpenInference and OpenLLMetry model attributes)
        Field::new("llm_model", DataType::Utf8, true),
        // `mlflow.llm.provider`
        Field::new("llm_provider", DataType::Utf8, true),
        // `mlflow.chat.tokenUsage` (the conventions' token counts)
        Field::new("input_tokens", DataType::Int64, true),
        Field::new("output_tokens", DataType::Int64, true),
        Field::new("total_tokens", DataType::Int64, true),
    ]
}

/// `mlflow_experiment_trace_otel_logs`: OpenTelemetry log records.
pub fn logs_schema() -> SchemaRef {
    let mut f = record_columns();
    f.extend([
        Field::new("time_unix_nano", DataType::Int64, true),
        Field::new("observed_time_unix_nano", DataType::Int64, true),
        Field::new("severity_number", DataType::Int32, true),
        Field::new("severity_text", DataType::Utf8, true),
        // the log body (an OpenTelemetry AnyValue) as JSON text
        Field::new("body", DataType::Utf8, true),
    ]);
    f.extend(attributes_fields());
    f.extend([
        Field::new("flags", DataType::Int32, true),
        Field::new("trace_id", DataType::Utf8, true),
        Field::new("span_id", DataType::Utf8, true),
        Field::new("event_name", DataType::Utf8, true),
    ]);
    f.extend(resource_columns());
    f.push(Field::new("log_schema_url", DataType::Utf8, true));
    Arc::new(Schema::new(f))
}

/// `mlflow_experiment_trace_otel_metrics`: one row per data point.
pub fn metrics_schema() -> SchemaRef {
    let mut f = record_columns();
    f.extend([
        Field::new("name", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, true),
        Field::new("unit", DataType::Utf8, true),
        // gauge, sum, histogram, exponential_histogram or summary
        Field::new("metric_type", DataType::Utf8, false),
        Field::new("start_time_unix_nano", DataType::Int64, true),
        Field::new("time_unix_nano", DataType::Int64, true),
        Field::new("value", DataType::Float64, true),
        Field::new("count", DataType::Int64, true),
        Field::new("sum", DataType::Float64, true),
        Field::new("min", DataType::Float64, true),
        Field::new("max", DataType::Float64, true),
        Field::new(
            "bucket_counts",
            DataType::List(Arc::new(Field::new("element", DataType::Int64, true))),
            true,
        ),
        Field::new(
            "explicit_bounds",
            DataType::List(Arc::new(Field::new("element", DataType::Float64, true))),
            true,
        ),
        Field::new("aggregation_temporality", DataType::Utf8, true),
        Field::new("is_monotonic", DataType::Boolean, true),
        Field::new("flags", DataType::Int32, true),
    ]);
    f.extend(attributes_fields());
    f.extend(resource_columns());
    f.push(Field::new("metric_schema_url", DataType::Utf8, true));
    Arc::new(Schema::new(f))
}

/// `mlflow_experiment_trace_info`: MLflow's TraceInfo, one row per version; the row with the
/// highest `version` of a `trace_id` is the trace's info.
pub fn info_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("request_id", DataType::Utf8, false),
        Field::new("version", DataType::Int64, false),
        Field::new("experiment_id", DataType::Utf8, true),
        Field::new("client_request_id", DataType::Utf8, true),
        Field::new("request_time", utc_micros(), false),
        Field::new(PARTITION, DataType::Date32, false),
        Field::new("request_time_ms", DataType::Int64, false),
        Field::new("execution_duration_ms", DataType::Int64, true),
        Field::new("state", DataType::Utf8, false),
        Field::new("request_preview", DataType::Utf8, true),
        Field::new("response_preview", DataType::Utf8, true),
        Field::new("tags", string_map(), true),
        Field::new("trace_metadata", string_map(), true),
        // MLflow assessment objects, a JSON array
        Field::new("assessments", DataType::Utf8, true),
        Field::new(
            "linked_run_ids",
            DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
            true,
        ),
        // no info was written by a client yet: timing and state follow the spans
        Field::new("from_spans_only", DataType::Boolean, false),
    ]))
}

/// The columns whose minimum and maximum each data file records in the table's log, by table.
/// Only times: ids and names are spread over every file, so their ranges would skip nothing,
/// and every commit re-reads the statistics of every file the table holds.
pub fn stats_columns(table: &str) -> &'static str {
    match table {
        INFO_TABLE => "request_time,request_time_ms",
        SPANS_TABLE => "time,start_time_unix_nano",
        _ => "time",
    }
}

/// The arrow schema of a table by name.
pub fn schema_of(table: &str) -> Option<SchemaRef> {
    match table {
        SPANS_TABLE => Some(spans_schema()),
        LOGS_TABLE => Some(logs_schema()),
        METRICS_TABLE => Some(metrics_schema()),
        INFO_TABLE => Some(info_schema()),
        _ => None,
    }
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct StatusRow {
    message: Option<String>,
    code: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct EventRow {
    time_unix_nano: Option<i64>,
    name: Option<String>,
    #[serde(default)]
    attributes: Option<StrMap>,
    dropped_attributes_count: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct LinkRow {
    trace_id: Option<String>,
    span_id: Option<String>,
    trace_state: Option<String>,
    flags: Option<i32>,
    attributes: Option<StrMap>,
    dropped_attributes_count: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct AttributesRow {
    attributes: Option<StrMap>,
    dropped_attributes_count: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct ScopeRow {
    name: Option<String>,
    version: Option<String>,
    attributes: Option<StrMap>,
    dropped_attributes_count: Option<i32>,
}

/// One row of the spans table.
#[derive(Debug, Serialize, Deserialize)]
struct SpanRow {
    record_id: String,
    #[serde(skip_deserializing)]
    time: String,
    #[serde(skip_deserializing)]
    date: String,
    service_name: Option<String>,
    trace_id: String,
    span_id: String,
    trace_state: Option<String>,
    parent_span_id: Option<String>,
    flags: Option<i32>,
    name: String,
    kind: String,
    start_time_unix_nano: i64,
    end_time_unix_nano: Option<i64>,
    attributes: Option<StrMap>,
    dropped_attributes_count: Option<i32>,
    events: Option<Vec<EventRow>>,
    dropped_events_count: Option<i32>,
    links: Option<Vec<LinkRow>>,
    dropped_links_count: Option<i32>,
    status: Option<StatusRow>,
    resource: Option<AttributesRow>,
    resource_schema_url: Option<String>,
    instrumentation_scope: Option<ScopeRow>,
    span_schema_url: Option<String>,
    // derived from `attributes` (see `shredded_columns`)
    #[serde(skip_deserializing)]
    span_type: Option<String>,
    #[serde(skip_deserializing)]
    llm_model: Option<String>,
    #[serde(skip_deserializing)]
    llm_provider: Option<String>,
    #[serde(skip_deserializing)]
    input_tokens: Option<i64>,
    #[serde(skip_deserializing)]
    output_tokens: Option<i64>,
    #[serde(skip_deserializing)]
    total_tokens: Option<i64>,
}

/// A `MAP<STRING, STRING>` cell, in the order its entries were written.
type StrMap = Map<String, Value>;

fn json_map(map: &Map<String, Value>) -> StrMap {
    map.iter().map(|(k, v)| (k.clone(), Value::String(v.to_string()))).collect()
}

fn string_entries<'a>(entries: impl Iterator<Item = (&'a str, &'a str)>) -> StrMap {
    entries.map(|(k, v)| (k.to_owned(), Value::String(v.to_owned()))).collect()
}

/// The text of a map cell's value (`None` for a null value).
fn cell_text(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn from_json_map(map: Option<StrMap>) -> Map<String, Value> {
    map.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            (k, cell_text(v).map_or(Value::Null, |t| serde_json::from_str(&t).unwrap_or(Value::String(t))))
        })
        .collect()
}

/// The 32 hex digits of an MLflow trace id (`tr-<hex>`, `trace:/<location>/<hex>`, or hex).
fn hex_of_trace_id(id: &str) -> String {
    TraceId::from_mlflow(id).map_or_else(|_| id.to_owned(), |t| t.to_string())
}

/// A string attribute's text.
fn text_attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.get_str(key).map(|v| v.into_owned())
}

/// Input, output and total tokens of a span's `mlflow.chat.tokenUsage`; the total is the sum
/// of the other two when the span does not give it.
fn token_counts(span: &Span) -> [Option<i64>; 3] {
    let Some([input, output, total, ..]) =
        span.attributes.get_raw(keys::CHAT_TOKEN_USAGE).and_then(summary::usage_counts)
    else {
        return [None; 3];
    };
    [input, output, total.or_else(|| input?.checked_add(output?))]
}

/// A span's events and links as row cells.
fn nested_row(span: &Span) -> NestedRow {
    let events = span
        .events
        .iter()
        .map(|e| EventRow {
            time_unix_nano: Some(e.time_unix_nano as i64),
            name: Some(e.name.clone()),
            attributes: Some(json_map(&e.attributes)),
            dropped_attributes_count: Some(0),
        })
        .collect();
    let links = span
        .links
        .iter()
        .map(|l| LinkRow {
            trace_id: Some(hex_of_trace_id(&l.trace_id)),
            span_id: Some(l.span_id.clone()),
            trace_state: None,
            flags: None,
            attributes: l.attributes.as_ref().map(json_map),
            dropped_attributes_count: Some(0),
        })
        .collect();
    NestedRow { events: Some(events), links: Some(links) }
}

#[cfg_attr(not(test), allow(dead_code, reason = "the rows spans_to_batch's columns are tested against"))]
fn span_row(span: &Span, origin: &SpanOrigin) -> SpanRow {
    let [input_tokens, output_tokens, total_tokens] = token_counts(span);
    let NestedRow { events, links } = nested_row(span);
    let (date, time) = date_and_time_micros(span.start_time_unix_nano);
    let trace_id = span.trace_id.to_string();
    let span_id = span.span_id.to_string();
    let service_name = origin.resource.get("service.name").and_then(Value::as_str).map(str::to_owned);
    SpanRow {
        record_id: format!("{trace_id}-{span_id}"),
        time,
        date,
        service_name,
        trace_id,
        span_id,
        trace_state: None,
        parent_span_id: span.parent_id.map(|p| p.to_string()),
        flags: None,
        name: span.name.to_string(),
        kind: span.kind.as_otlp_name().to_owned(),
        start_time_unix_nano: span.start_time_unix_nano as i64,
        end_time_unix_nano: span.end_time_unix_nano.map(|t| t as i64),
        attributes: Some(string_entries(span.attributes.iter())),
        dropped_attributes_count: Some(0),
        events,
        dropped_events_count: Some(0),
        links,
        dropped_links_count: Some(0),
        status: Some(StatusRow {
            message: Some(span.status.message.clone()),
            code: Some(span.status.code.as_otlp_name().to_owned()),
        }),
        resource: Some(AttributesRow {
            attributes: Some(json_map(&origin.resource)),
            dropped_attributes_count: Some(0),
        }),
        resource_schema_url: None,
        instrumentation_scope: Some(ScopeRow {
            name: (!origin.scope_name.is_empty()).then(|| origin.scope_name.clone()),
            version: (!origin.scope_version.is_empty()).then(|| origin.scope_version.clone()),
            attributes: None,
            dropped_attributes_count: Some(0),
        }),
        span_schema_url: None,
        span_type: text_attribute(span, keys::SPAN_TYPE),
        llm_model: text_attribute(span, keys::LLM_MODEL),
        llm_provider: text_attribute(span, keys::LLM_PROVIDER),
        input_tokens,
        output_tokens,
        total_tokens,
    }
}

fn bad_row(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("a stored {what} row cannot be read: {e}"))
}

fn span_from_row(row: SpanRow) -> StoreResult<Span> {
    let trace_id = TraceId::from_hex(&row.trace_id).map_err(|e| bad_row("span", e))?;
    let span_id = SpanId::from_hex(&row.span_id).map_err(|e| bad_row("span", e))?;
    let parent_id = match row.parent_span_id.as_deref() {
        None | Some("") => None,
        Some(p) => Some(SpanId::from_hex(p).map_err(|e| bad_row("span", e))?),
    };
    let mut attributes = Attributes::new();
    for (k, v) in row.attributes.unwrap_or_default() {
        attributes.insert_raw(k, cell_text(v).unwrap_or_else(|| "null".to_owned()));
    }
    let status = row.status.unwrap_or_default();
    Ok(Span {
        trace_id,
        span_id,
        parent_id,
        name: row.name.into(),
        kind: SpanKind::from_otlp_name(&row.kind).unwrap_or_default(),
        start_time_unix_nano: row.start_time_unix_nano as u64,
        end_time_unix_nano: row.end_time_unix_nano.map(|t| t as u64),
        status: SpanStatus {
            code: status.code.as_deref().and_then(StatusCode::parse).unwrap_or_default(),
            message: status.message.unwrap_or_default(),
        },
        attributes,
        events: row
            .events
            .unwrap_or_default()
            .into_iter()
            .map(|e| SpanEvent {
                name: e.name.unwrap_or_default(),
                time_unix_nano: e.time_unix_nano.unwrap_or(0) as u64,
                attributes: from_json_map(e.attributes),
            })
            .collect(),
        links: row
            .links
            .unwrap_or_default()
            .into_iter()
            .map(|l| Link {
                trace_id: l.trace_id.unwrap_or_default(),
                span_id: l.span_id.unwrap_or_default(),
                attributes: l.attributes.map(|a| from_json_map(Some(a))),
            })
            .collect(),
    })
}

/// One row of the trace-info table.
#[derive(Debug, Serialize, Deserialize)]
struct InfoRow {
    trace_id: String,
    request_id: String,
    version: i64,
    experiment_id: Option<String>,
    client_request_id: Option<String>,
    #[serde(skip_deserializing)]
    request_time: String,
    #[serde(skip_deserializing)]
    date: String,
    request_time_ms: i64,
    execution_duration_ms: Option<i64>,
    state: String,
    request_preview: Option<String>,
    response_preview: Option<String>,
    tags: Option<StrMap>,
    trace_metadata: Option<StrMap>,
    assessments: Option<String>,
    linked_run_ids: Option<Vec<Option<String>>>,
    from_spans_only: bool,
}

/// A trace's info as the lake keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInfo {
    pub info: TraceInfo,
    pub linked_runs: Vec<String>,
    pub from_spans_only: bool,
    pub version: i64,
}

fn info_row(s: &StoredInfo) -> InfoRow {
    let info = &s.info;
    let (date, request_time) = date_and_time_micros((info.request_time_ms.max(0) as u64) * 1_000_000);
    let strings =
        |m: &BTreeMap<String, String>| Some(string_entries(m.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
    InfoRow {
        trace_id: hex_of_trace_id(&info.trace_id),
        request_id: info.trace_id.clone(),
        version: s.version,
        experiment_id: info.trace_location.experiment_id().map(str::to_owned),
        client_request_id: info.client_request_id.clone(),
        request_time,
        date,
        request_time_ms: info.request_time_ms,
        execution_duration_ms: info.execution_duration_ms,
        state: info.state.as_str().to_owned(),
        request_preview: info.request_preview.clone(),
        response_preview: info.response_preview.clone(),
        tags: strings(&info.tags),
        trace_metadata: strings(&info.trace_metadata),
        assessments: (!info.assessments.is_empty())
            .then(|| Value::Array(info.assessments.clone()).to_string()),
        linked_run_ids: Some(s.linked_runs.iter().cloned().map(Some).collect()),
        from_spans_only: s.from_spans_only,
    }
}

fn info_from_row(row: InfoRow, schema_key: &str) -> StoredInfo {
    let strings = |m: Option<StrMap>| {
        m.unwrap_or_default().into_iter().map(|(k, v)| (k, cell_text(v).unwrap_or_default())).collect()
    };
    let trace_location = match &row.experiment_id {
        Some(id) => location_from_key(id),
        None => location_from_key(schema_key),
    };
    StoredInfo {
        info: TraceInfo {
            trace_id: row.request_id,
            client_request_id: row.client_request_id,
            trace_location,
            request_time_ms: row.request_time_ms,
            execution_duration_ms: row.execution_duration_ms,
            state: TraceState::parse(&row.state).unwrap_or_default(),
            request_preview: row.request_preview,
            response_preview: row.response_preview,
            trace_metadata: strings(row.trace_metadata),
            tags: strings(row.tags),
            assessments: row
                .assessments
                .and_then(|a| serde_json::from_str::<Vec<Value>>(&a).ok())
                .unwrap_or_default(),
        },
        linked_runs: row.linked_run_ids.unwrap_or_default().into_iter().flatten().collect(),
        from_spans_only: row.from_spans_only,
        version: row.version,
    }
}

fn to_batch<R: Serialize>(schema: SchemaRef, rows: &[R]) -> StoreResult<RecordBatch> {
    let internal =
        |e: deltalake::arrow::error::ArrowError| StoreError::Internal(format!("building rows: {e}"));
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()
        .map_err(internal)?;
    decoder.serialize(rows).map_err(internal)?;
    Ok(decoder.flush().map_err(internal)?.unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

fn from_batches<R: for<'de> Deserialize<'de>>(what: &str, batches: &[RecordBatch]) -> StoreResult<Vec<R>> {
    let mut writer = ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs).map_err(|e| bad_row(what, e))?;
    writer.finish().map_err(|e| bad_row(what, e))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| bad_row(what, e))
}

/// JSON objects (keys: the columns of `table`) as one batch of it.
pub fn rows_to_batch(table: &str, rows: &[Value]) -> StoreResult<RecordBatch> {
    let schema =
        schema_of(table).ok_or_else(|| StoreError::InvalidArgument(format!("no lake table {table}")))?;
    to_batch(schema, rows).map_err(|e| match e {
        StoreError::Internal(m) => StoreError::InvalidArgument(format!("rows for {table}: {m}")),
        other => other,
    })
}

/// Spans (each with its origin) as one batch of the spans table.
///
/// Built column by column: going through [`SpanRow`] and arrow's JSON decoder, as the other
/// tables do, cost a quarter of the lake's ingest. Only events and links, rare and nested,
/// still go that way. The batch is the one [`span_row`] rows decode to (tested).
pub fn spans_to_batch<'a>(
    spans: impl IntoIterator<Item = (&'a Span, &'a SpanOrigin)>,
) -> StoreResult<RecordBatch> {
    let spans: Vec<(&Span, &SpanOrigin)> = spans.into_iter().collect();
    let schema = spans_schema();
    let internal = |e: ArrowError| StoreError::Internal(format!("building span rows: {e}"));
    let n = spans.len();
    let text = |f: &dyn Fn(&Span, &SpanOrigin) -> Option<String>| -> ArrayRef {
        Arc::new(spans.iter().map(|(s, o)| f(s, o)).collect::<StringArray>())
    };
    let int32 = |v: Option<i32>| -> ArrayRef { Arc::new(Int32Array::from(vec![v; n])) };
    let nulls = || -> ArrayRef { Arc::new(StringArray::new_null(n)) };
    let micros: Vec<i64> = spans.iter().map(|(s, _)| (s.start_time_unix_nano / 1000) as i64).collect();
    let usage: Vec<[Option<i64>; 3]> = spans.iter().map(|(s, _)| token_counts(s)).collect();
    let tokens = |i: usize| -> ArrayRef { Arc::new(usage.iter().map(|u| u[i]).collect::<Int64Array>()) };

    let mut attributes = string_map_builder();
    for (span, _) in &spans {
        for (k, v) in span.attributes.iter() {
            attributes.keys().append_value(k);
            attributes.values().append_value(v);
        }
        attributes.append(true).map_err(internal)?;
    }
    let mut resource_attributes = string_map_builder();
    for (_, origin) in &spans {
        for (k, v) in &origin.resource {
            resource_attributes.keys().append_value(k);
            resource_attributes.values().append_value(v.to_string());
        }
        resource_attributes.append(true).map_err(internal)?;
    }
    let struct_of = |field: &str, arrays: Vec<ArrayRef>| -> StoreResult<ArrayRef> {
        let DataType::Struct(fields) = schema.field_with_name(field).map_err(internal)?.data_type() else {
            return Err(StoreError::Internal(format!("{field} is not a struct column")));
        };
        Ok(Arc::new(StructArray::try_new(fields.clone(), arrays, None).map_err(internal)?))
    };
    let nested: Vec<NestedRow> = spans.iter().map(|(s, _)| nested_row(s)).collect();
    let nested = to_batch(nested_schema(&schema)?, &nested)?;

    let columns: Vec<(&str, ArrayRef)> = vec![
        ("record_id", text(&|s, _| Some(format!("{}-{}", s.trace_id, s.span_id)))),
        ("time", Arc::new(TimestampMicrosecondArray::from(micros.clone()).with_timezone("UTC"))),
        (
            "date",
            Arc::new(Date32Array::from(
                micros.iter().map(|t| (t / MICROS_PER_DAY) as i32).collect::<Vec<_>>(),
            )),
        ),
        (
            "service_name",
            text(&|_, o| o.resource.get("service.name").and_then(Value::as_str).map(str::to_owned)),
        ),
        ("trace_id", text(&|s, _| Some(s.trace_id.to_string()))),
        ("span_id", text(&|s, _| Some(s.span_id.to_string()))),
        ("trace_state", nulls()),
        ("parent_span_id", text(&|s, _| s.parent_id.map(|p| p.to_string()))),
        ("flags", int32(None)),
        ("name", text(&|s, _| Some(s.name.to_string()))),
        ("kind", text(&|s, _| Some(s.kind.as_otlp_name().to_owned()))),
        (
            "start_time_unix_nano",
            Arc::new(spans.iter().map(|(s, _)| s.start_time_unix_nano as i64).collect::<Int64Array>()),
        ),
        (
            "end_time_unix_nano",
            Arc::new(
                spans.iter().map(|(s, _)| s.end_time_unix_nano.map(|t| t as i64)).collect::<Int64Array>(),
            ),
        ),
        ("attributes", Arc::new(attributes.finish())),
        ("dropped_attributes_count", int32(Some(0))),
        ("events", nested.column(0).clone()),
        ("dropped_events_count", int32(Some(0))),
        ("links", nested.column(1).clone()),
        ("dropped_links_count", int32(Some(0))),
        (
            "status",
            struct_of(
                "status",
                vec![
                    text(&|s, _| Some(s.status.message.clone())),
                    text(&|s, _| Some(s.status.code.as_otlp_name().to_owned())),
                ],
            )?,
        ),
        ("resource", struct_of("resource", vec![Arc::new(resource_attributes.finish()), int32(Some(0))])?),
        ("resource_schema_url", nulls()),
        (
            "instrumentation_scope",
            struct_of(
                "instrumentation_scope",
                vec![
                    text(&|_, o| (!o.scope_name.is_empty()).then(|| o.scope_name.clone())),
                    text(&|_, o| (!o.scope_version.is_empty()).then(|| o.scope_version.clone())),
                    Arc::new(null_string_maps(n).map_err(internal)?),
                    int32(Some(0)),
                ],
            )?,
        ),
        ("span_schema_url", nulls()),
        ("span_type", text(&|s, _| text_attribute(s, keys::SPAN_TYPE))),
        ("llm_model", text(&|s, _| text_attribute(s, keys::LLM_MODEL))),
        ("llm_provider", text(&|s, _| text_attribute(s, keys::LLM_PROVIDER))),
        ("input_tokens", tokens(0)),
        ("output_tokens", tokens(1)),
        ("total_tokens", tokens(2)),
    ];
    debug_assert!(
        columns.iter().map(|(name, _)| *name).eq(schema.fields().iter().map(|f| f.name().as_str())),
        "spans_to_batch writes the columns of spans_schema, in order"
    );
    RecordBatch::try_new(schema, columns.into_iter().map(|(_, c)| c).collect()).map_err(internal)
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// A builder of `MAP<STRING, STRING>` cells named as [`string_map`] names them.
fn string_map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames { entry: "key_value".into(), key: "key".into(), value: "value".into() };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
}

/// `n` null `MAP<STRING, STRING>` cells.
fn null_string_maps(n: usize) -> Result<MapArray, ArrowError> {
    let mut maps = string_map_builder();
    for _ in 0..n {
        maps.append(false)?;
    }
    Ok(maps.finish())
}

/// The events and links of a span row, which [`spans_to_batch`] decodes as JSON.
#[derive(Serialize)]
struct NestedRow {
    events: Option<Vec<EventRow>>,
    links: Option<Vec<LinkRow>>,
}

fn nested_schema(spans: &Schema) -> StoreResult<SchemaRef> {
    let field = |name: &str| {
        spans.field_with_name(name).cloned().map_err(|e| StoreError::Internal(format!("spans schema: {e}")))
    };
    Ok(Arc::new(Schema::new(vec![field("events")?, field("links")?])))
}

/// Spans read back from batches of the spans table (any projection holding every column).
pub fn spans_from_batches(batches: &[RecordBatch]) -> StoreResult<Vec<Span>> {
    from_batches::<SpanRow>("span", batches)?.into_iter().map(span_from_row).collect()
}

/// Infos as one batch of the trace-info table.
pub fn infos_to_batch<'a>(infos: impl IntoIterator<Item = &'a StoredInfo>) -> StoreResult<RecordBatch> {
    let rows: Vec<InfoRow> = infos.into_iter().map(info_row).collect();
    to_batch(info_schema(), &rows)
}

/// Infos read back from batches of the trace-info table; `schema_key` (`catalog.schema`) is
/// the location of traces written there without an experiment.
pub fn infos_from_batches(batches: &[RecordBatch], schema_key: &str) -> StoreResult<Vec<StoredInfo>> {
    Ok(from_batches::<InfoRow>("trace info", batches)?
        .into_iter()
        .map(|r| info_from_row(r, schema_key))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracelake_model::TraceLocation;

    fn sample_span() -> Span {
        let mut attributes = Attributes::new();
        attributes.insert("mlflow.spanType", "LLM");
        attributes.insert("gen_ai.usage.input_tokens", &12);
        attributes.insert("mlflow.spanInputs", &serde_json::json!({"q": "hi"}));
        let mut event_attrs = Map::new();
        event_attrs.insert("exception.message".into(), Value::String("boom".into()));
        event_attrs.insert("n".into(), Value::from(3));
        Span {
            trace_id: TraceId::new(0xabc).unwrap(),
            span_id: SpanId::new(7).unwrap(),
            parent_id: SpanId::new(3),
            name: "llm call".into(),
            kind: SpanKind::Client,
            start_time_unix_nano: 1_700_000_000_123_456_789,
            end_time_unix_nano: Some(1_700_000_001_000_000_000),
            status: SpanStatus { code: StatusCode::Error, message: "bad".into() },
            attributes,
            events: vec![SpanEvent {
                name: "exception".into(),
                time_unix_nano: 1_700_000_000_500_000_000,
                attributes: event_attrs,
            }],
            links: vec![Link {
                trace_id: TraceId::new(0xdef).unwrap().to_mlflow_v3(),
                span_id: "0000000000000009".into(),
                attributes: None,
            }],
        }
    }

    #[test]
    fn spans_round_trip_through_rows() {
        let span = sample_span();
        let origin = SpanOrigin {
            resource: [("service.name".to_owned(), Value::from("svc"))].into_iter().collect(),
            ..SpanOrigin::default()
        };
        let batch = spans_to_batch([(&span, &origin)]).unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema(), spans_schema());
        let back = spans_from_batches(&[batch]).unwrap();
        let mut expected = span;
        // links come back as OpenTelemetry hex ids
        expected.links[0].trace_id = TraceId::new(0xdef).unwrap().to_string();
        assert_eq!(back, vec![expected]);
    }

    #[test]
    fn span_columns_are_the_rows_decoded() {
        let full = sample_span();
        let bare = Span {
            parent_id: None,
            end_time_unix_nano: None,
            attributes: Attributes::new(),
            events: vec![],
            links: vec![Link { attributes: Some(Map::new()), ..full.links[0].clone() }],
            ..full.clone()
        };
        let origins = [
            SpanOrigin {
                resource: serde_json::json!({"service.name": "svc", "n": 1, "tags": ["a"]})
                    .as_object()
                    .cloned()
                    .unwrap(),
                scope_name: "scope".into(),
                scope_version: "1.0".into(),
            },
            SpanOrigin::default(),
        ];
        let spans: Vec<(&Span, &SpanOrigin)> =
            vec![(&full, &origins[0]), (&bare, &origins[1]), (&full, &origins[1]), (&bare, &origins[0])];
        let rows: Vec<SpanRow> = spans.iter().map(|(s, o)| span_row(s, o)).collect();
        let decoded = to_batch(spans_schema(), &rows).unwrap();
        assert_eq!(spans_to_batch(spans.iter().copied()).unwrap(), decoded);
        assert_eq!(spans_to_batch([]).unwrap().num_rows(), 0);
    }

    #[test]
    fn infos_round_trip_through_rows() {
        let mut info = TraceInfo {
            trace_id: TraceId::new(0xabc).unwrap().to_mlflow_v4("main.agents"),
            trace_location: TraceLocation::uc_schema("main", "agents"),
            request_time_ms: 1_700_000_000_123,
            execution_duration_ms: Some(5),
            state: TraceState::Ok,
            request_preview: Some("hi".into()),
            ..TraceInfo::default()
        };
        info.tags.insert("env".into(), "prod".into());
        info.trace_metadata.insert("mlflow.trace.session".into(), "s1".into());
        info.assessments.push(serde_json::json!({"name": "relevance"}));
        let stored = StoredInfo { info, linked_runs: vec!["r1".into()], from_spans_only: true, version: 42 };
        let batch = infos_to_batch([&stored]).unwrap();
        let back = infos_from_batches(&[batch], "main.agents").unwrap();
        assert_eq!(back, vec![stored]);
    }
}
