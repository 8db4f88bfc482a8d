//! OTLP/HTTP ingest: `POST /v1/traces` (to an experiment or a lake table), `/v1/logs` and
//! `/v1/metrics` (to lake tables).

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flate2::read::{GzDecoder, ZlibDecoder};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tracelake_store::lake::{LOGS_TABLE, METRICS_TABLE, SPANS_TABLE, parse_schema_key};
use tracelake_store::{LakeAccess, WriteBatch};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Header naming the experiment spans go to.
pub(crate) const EXPERIMENT_HEADER: &str = "x-mlflow-experiment-id";
/// Header naming the lake table spans go to, `catalog.schema.table` (the counterpart of
/// Databricks' `X-Databricks-UC-Table-Name`); it wins over the experiment header.
pub(crate) const TABLE_HEADER: &str = "x-tracelake-table-name";

/// Where a request's spans go: the lake schema of the table header, or the experiment of the
/// experiment header (`table` is the table this signal is written to).
pub(crate) fn location(
    s: &AppState,
    experiment: Option<&str>,
    table_name: Option<&str>,
    table: &str,
) -> ApiResult<String> {
    if let Some(name) = table_name.map(str::trim).filter(|v| !v.is_empty()) {
        if s.lake.is_none() {
            return Err(ApiError::invalid(format!(
                "{TABLE_HEADER} {name:?}: this server keeps no lake (build it with the store-lake feature)"
            )));
        }
        let parts: Vec<&str> = name.split('.').collect();
        let [catalog, schema, given] = parts[..] else {
            return Err(ApiError::invalid(format!(
                "{TABLE_HEADER} {name:?}: expected <catalog>.<schema>.<table>"
            )));
        };
        if given != table {
            return Err(ApiError::invalid(format!(
                "{TABLE_HEADER} {name:?}: this endpoint writes to table {table}, not {given}"
            )));
        }
        let key = format!("{catalog}.{schema}");
        parse_schema_key(&key).map_err(|e| ApiError::invalid(format!("{TABLE_HEADER} {name:?}: {e}")))?;
        return Ok(key);
    }
    experiment.map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).ok_or_else(|| {
        ApiError::invalid(format!(
            "missing required header {EXPERIMENT_HEADER} (or {TABLE_HEADER} for a lake table)"
        ))
    })
}

/// Ingested spans as a write to `location`, with their origins.
pub(crate) fn batch_at(location: String, spans: Vec<tracelake_otlp::IngestedSpan>) -> WriteBatch {
    let mut batch = WriteBatch::default();
    batch.spans.reserve(spans.len());
    batch.origins.reserve(spans.len());
    for s in spans {
        batch.spans.push((location.clone(), s.span));
        batch.origins.push(s.origin);
    }
    batch
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Inflates a body, refusing to produce more than `limit` bytes (a zip bomb gets 413).
fn decompress(body: &[u8], encoding: &str, limit: usize) -> ApiResult<Vec<u8>> {
    let mut out = Vec::new();
    let read = match encoding {
        "gzip" => GzDecoder::new(body).take(limit as u64 + 1).read_to_end(&mut out),
        // HTTP "deflate" is zlib-wrapped; raw deflate streams are accepted too.
        "deflate" => match ZlibDecoder::new(body).take(limit as u64 + 1).read_to_end(&mut out) {
            Ok(n) => Ok(n),
            Err(_) => {
                out.clear();
                flate2::read::DeflateDecoder::new(body).take(limit as u64 + 1).read_to_end(&mut out)
            }
        },
        other => {
            return Err(ApiError::invalid(format!(
                "unsupported Content-Encoding {other:?}: send gzip, deflate or an uncompressed body"
            )));
        }
    };
    read.map_err(|e| ApiError::invalid(format!("cannot decompress the {encoding} body: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "INVALID_PARAMETER_VALUE",
            format!("the decompressed body exceeds the limit of {limit} bytes"),
        ));
    }
    Ok(out)
}

/// A request body as sent, decompressed, with its encoding.
fn read_body(s: &AppState, headers: &HeaderMap, body: Bytes) -> ApiResult<(Encoding, Bytes)> {
    let content_type = header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    let encoding = match content_type.split(';').next().unwrap_or("").trim() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "INVALID_PARAMETER_VALUE",
                format!(
                    "unsupported Content-Type {other:?}: send application/x-protobuf or application/json"
                ),
            ));
        }
    };
    let body = match header_str(headers, header::CONTENT_ENCODING.as_str()).map(str::trim) {
        None | Some("") | Some("identity") => body,
        Some(enc) => decompress(&body, &enc.to_ascii_lowercase(), s.limits.max_decompressed_bytes)?.into(),
    };
    Ok((encoding, body))
}

/// An OTLP export request of type `T` in `encoding`.
fn decode<T: prost::Message + Default + serde::de::DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> ApiResult<T> {
    match encoding {
        Encoding::Protobuf => tracelake_otlp::decode_protobuf_as(body),
        Encoding::Json => tracelake_otlp::decode_json_as(body),
    }
    .map_err(|e| ApiError::invalid(e.to_string()))
}

/// An empty export response (every OTLP response message is empty on success), in the
/// request's encoding.
fn accepted(encoding: Encoding) -> Response {
    match encoding {
        Encoding::Protobuf => {
            ([(header::CONTENT_TYPE, "application/x-protobuf")], Vec::<u8>::new()).into_response()
        }
        Encoding::Json => ([(header::CONTENT_TYPE, "application/json")], "{}").into_response(),
    }
}

pub(crate) async fn ingest(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let location = location(
        &s,
        header_str(&headers, EXPERIMENT_HEADER),
        header_str(&headers, TABLE_HEADER),
        SPANS_TABLE,
    )?;
    let (encoding, body) = read_body(&s, &headers, body)?;
    let request: ExportTraceServiceRequest = decode(encoding, &body)?;
    if request.resource_spans.is_empty() {
        return Err(ApiError::invalid("the request holds no resource_spans"));
    }
    let spans = tracelake_otlp::spans_from_request(&request).map_err(|e| ApiError::invalid(e.to_string()))?;
    s.ingest.write(batch_at(location, spans)).await?;
    Ok(accepted(encoding))
}

/// The lake (and its schema) a logs or metrics request goes to: the table header's schema, or
/// that of the experiment the experiment header names when it is linked to one.
pub(crate) async fn lake_schema_for<'s>(
    s: &'s AppState,
    experiment: Option<&str>,
    table_name: Option<&str>,
    table: &str,
) -> ApiResult<(&'s Arc<dyn LakeAccess>, String)> {
    let location = location(s, experiment, table_name, table)?;
    let lake = s.lake.as_ref().ok_or_else(|| {
        ApiError::invalid(format!(
            "{table}: this server keeps no lake (build it with the store-lake feature)"
        ))
    })?;
    if tracelake_store::derive::is_lake_schema(&location) {
        return Ok((lake, location));
    }
    s.store.get_experiment(&location).await?;
    let key = lake.experiment_link(&location).await?.ok_or_else(|| {
        ApiError::invalid(format!(
            "experiment {location} is not linked to a lake schema: logs and metrics go to lake tables \
             (send {TABLE_HEADER}, or link the experiment with /api/4.0/mlflow/traces/{location}/link-location)"
        ))
    })?;
    Ok((lake, key))
}

/// Appends the rows of a logs or metrics request to `table` of schema `key`, in one commit.
pub(crate) async fn append_rows(
    lake: &Arc<dyn LakeAccess>,
    key: &str,
    table: &str,
    rows: Vec<serde_json::Value>,
) -> ApiResult<()> {
    if !rows.is_empty() {
        lake.append_rows(key, table, &rows).await?;
    }
    Ok(())
}

/// `/v1/logs` and `/v1/metrics`: the rows `rows` makes of a request of type `R` go to `table`.
async fn ingest_rows<R: prost::Message + Default + serde::de::DeserializeOwned>(
    s: AppState,
    headers: HeaderMap,
    body: Bytes,
    table: &str,
    rows: fn(&R) -> Vec<serde_json::Value>,
) -> ApiResult<Response> {
    let (lake, key) = lake_schema_for(
        &s,
        header_str(&headers, EXPERIMENT_HEADER),
        header_str(&headers, TABLE_HEADER),
        table,
    )
    .await?;
    let (encoding, body) = read_body(&s, &headers, body)?;
    let request: R = decode(encoding, &body)?;
    append_rows(lake, &key, table, rows(&request)).await?;
    Ok(accepted(encoding))
}

pub(crate) async fn ingest_logs(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    ingest_rows(s, headers, body, LOGS_TABLE, tracelake_otlp::rows::log_rows).await
}

pub(crate) async fn ingest_metrics(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    ingest_rows(s, headers, body, METRICS_TABLE, tracelake_otlp::rows::metric_rows).await
}
