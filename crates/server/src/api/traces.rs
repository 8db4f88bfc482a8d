//! MLflow traces (REST 3.0, and the 2.0 routes the client still calls).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracelake_model::{TraceInfo, tag_keys};
use tracelake_store::{DeleteTraces, StoreError, TraceQuery, WriteBatch, parse_filter, parse_order_by};

use super::required;
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::proto_json::{ProtoTrace, Seq, Single};

/// Largest page `search` returns, as MLflow's SearchTracesV3 validator allows.
const MAX_SEARCH_RESULTS: usize = 500;

#[derive(Deserialize)]
pub(crate) struct StartTrace {
    trace: Option<Value>,
}

/// StartTraceV3: the client sends a finished trace's info (spans go to `/v1/traces`).
pub(crate) async fn start_trace(
    State(s): State<AppState>,
    Json(req): Json<StartTrace>,
) -> ApiResult<Json<Value>> {
    let info = req
        .trace
        .as_ref()
        .and_then(|t| t.get("trace_info"))
        .ok_or_else(|| ApiError::invalid("missing trace.trace_info"))?;
    let info = TraceInfo::from_dict(info).map_err(|e| ApiError::invalid(e.to_string()))?;
    let trace_id = info.trace_id.clone();
    let infos = s.ingest.write(WriteBatch { infos: vec![info], spans: vec![], ..Default::default() }).await?;
    let mut stored = infos
        .into_iter()
        .find(|i| i.trace_id == trace_id)
        .ok_or_else(|| ApiError::not_found(trace_id.clone()))?;
    // Spans are always kept in this store, whether they arrived yet or not: saying so stops the
    // client from uploading them again as an artifact.
    stored.tags.insert(tag_keys::SPANS_LOCATION.into(), "TRACKING_STORE".into());
    Ok(Json(json!({"trace": {"trace_info": stored.to_proto_json()}})))
}

pub(crate) async fn get_info(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let info = s.store.get_trace_info(&id).await?;
    Ok(Json(json!({"trace": {"trace_info": info.to_proto_json()}})))
}

#[derive(Deserialize)]
pub(crate) struct GetTrace {
    trace_id: Option<String>,
}

/// A JSON answer holding `spans` spans, written into one buffer sized for it up front: growing a
/// buffer of many megabytes step by step costs more than building the answer.
fn large_json(answer: &impl Serialize, spans: usize) -> ApiResult<Response> {
    let mut body = Vec::with_capacity(1024 + spans * 1536);
    serde_json::to_writer(&mut body, answer).map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", format!("answer not written: {e}"))
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub(crate) async fn get_trace(State(s): State<AppState>, Query(q): Query<GetTrace>) -> ApiResult<Response> {
    let id = required(q.trace_id, "trace_id")?;
    let traces = s.store.get_traces(std::slice::from_ref(&id)).await?;
    let t = traces.first().ok_or_else(|| ApiError::not_found(format!("Trace with ID {id} not found.")))?;
    large_json(&Single("trace", &ProtoTrace(t)), t.spans.len())
}

/// `?trace_ids=a&trace_ids=b` (repeated keys).
pub(crate) async fn batch_get(
    State(s): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let ids: Vec<String> = q.into_iter().filter(|(k, _)| k == "trace_ids").map(|(_, v)| v).collect();
    let traces = s.store.get_traces(&ids).await?;
    let spans = traces.iter().map(|t| t.spans.len()).sum();
    large_json(&Single("traces", &Seq(traces.iter().map(ProtoTrace))), spans)
}

#[derive(Deserialize)]
pub(crate) struct BatchGetInfos {
    #[serde(default)]
    trace_ids: Vec<String>,
}

pub(crate) async fn batch_get_infos(
    State(s): State<AppState>,
    Json(req): Json<BatchGetInfos>,
) -> ApiResult<Json<Value>> {
    // infos only: the traces' spans are not read; unknown ids are left out
    let mut infos = Vec::with_capacity(req.trace_ids.len());
    for id in &req.trace_ids {
        match s.store.get_trace_info(id).await {
            Ok(info) => infos.push(info.to_proto_json()),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(json!({ "trace_infos": infos })))
}

#[derive(Deserialize, Default)]
pub(crate) struct Search {
    #[serde(default)]
    locations: Vec<Value>,
    #[serde(default)]
    experiment_ids: Vec<String>,
    filter: Option<String>,
    max_results: Option<usize>,
    #[serde(default)]
    order_by: Vec<String>,
    page_token: Option<String>,
}

pub(crate) async fn search(State(s): State<AppState>, Json(req): Json<Search>) -> ApiResult<Json<Value>> {
    let mut experiment_ids = req.experiment_ids;
    for loc in &req.locations {
        if let Some(id) = loc.pointer("/mlflow_experiment/experiment_id").and_then(Value::as_str) {
            experiment_ids.push(id.to_owned());
        }
    }
    let max_results = req.max_results.unwrap_or(100);
    if max_results == 0 || max_results > MAX_SEARCH_RESULTS {
        return Err(ApiError::invalid(format!(
            "invalid value {max_results} for parameter 'max_results': it must be between 1 and {MAX_SEARCH_RESULTS}"
        )));
    }
    let filter =
        parse_filter(req.filter.as_deref().unwrap_or("")).map_err(|e| ApiError::invalid(e.to_string()))?;
    let order_by = parse_order_by(&req.order_by).map_err(|e| ApiError::invalid(format!("order_by: {e}")))?;
    let query = TraceQuery { experiment_ids, filter, order_by, max_results, page_token: req.page_token };
    let page = s.store.search_traces(&query).await?;
    let mut body = json!({"traces": page.items.iter().map(TraceInfo::to_proto_json).collect::<Vec<_>>()});
    if let Some(t) = page.next_page_token {
        body["next_page_token"] = json!(t);
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
pub(crate) struct Delete {
    experiment_id: Option<String>,
    max_timestamp_millis: Option<i64>,
    max_traces: Option<usize>,
    #[serde(default, alias = "trace_ids")]
    request_ids: Option<Vec<String>>,
}

pub(crate) async fn delete(State(s): State<AppState>, Json(req): Json<Delete>) -> ApiResult<Json<Value>> {
    let experiment_id = required(req.experiment_id, "experiment_id")?;
    let request = match (req.max_timestamp_millis, req.request_ids) {
        (Some(ts), None) => {
            DeleteTraces::OlderThan { experiment_id, max_timestamp_ms: ts, max_traces: req.max_traces }
        }
        (None, Some(ids)) if req.max_traces.is_none() => DeleteTraces::Ids { experiment_id, trace_ids: ids },
        (None, Some(_)) => return Err(ApiError::invalid("max_traces cannot be combined with request_ids")),
        _ => {
            return Err(ApiError::invalid(
                "exactly one of max_timestamp_millis and request_ids must be given",
            ));
        }
    };
    let n = s.store.delete_traces(&request).await?;
    Ok(Json(json!({"traces_deleted": n})))
}

#[derive(Deserialize)]
pub(crate) struct SetTag {
    key: String,
    value: String,
}

pub(crate) async fn set_tag(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<SetTag>,
) -> ApiResult<Json<Value>> {
    s.store.set_trace_tag(&id, &req.key, &req.value).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(crate) struct TagKey {
    key: Option<String>,
}

/// The client sends the key in a JSON body of the DELETE; a query parameter is accepted too.
pub(crate) async fn delete_tag(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TagKey>,
    body: Option<Json<TagKey>>,
) -> ApiResult<Json<Value>> {
    let key = required(body.and_then(|b| b.0.key).or(q.key), "key")?;
    s.store.delete_trace_tag(&id, &key).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(crate) struct Link {
    #[serde(default)]
    trace_ids: Vec<String>,
    run_id: Option<String>,
}

pub(crate) async fn link_to_run(State(s): State<AppState>, Json(req): Json<Link>) -> ApiResult<Json<Value>> {
    let run = required(req.run_id, "run_id")?;
    s.store.link_traces_to_run(&req.trace_ids, &run).await?;
    Ok(Json(json!({})))
}
