//! MLflow runs (REST 2.0), as far as tracing needs them: `with mlflow.start_run()` creates and
//! ends one, and traces made inside name it.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use tracelake_store::{NewRun, Run};

use super::{Tag, required};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

fn info_json(r: &Run) -> Value {
    let mut info = json!({
        "run_id": r.run_id, "run_uuid": r.run_id, "run_name": r.run_name,
        "experiment_id": r.experiment_id, "user_id": r.user_id, "status": r.status,
        "start_time": r.start_time_ms, "artifact_uri": r.artifact_uri,
        "lifecycle_stage": r.lifecycle_stage.as_str(),
    });
    if let Some(end) = r.end_time_ms {
        info["end_time"] = json!(end);
    }
    info
}

fn run_json(r: &Run) -> Value {
    let tags: Vec<Value> = r.tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
    json!({"info": info_json(r), "data": {"tags": tags}, "inputs": {}})
}

#[derive(Deserialize)]
pub(crate) struct Create {
    experiment_id: Option<String>,
    user_id: Option<String>,
    start_time: Option<i64>,
    run_name: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
}

pub(crate) async fn create(State(s): State<AppState>, Json(req): Json<Create>) -> ApiResult<Json<Value>> {
    let run = NewRun {
        experiment_id: req.experiment_id.unwrap_or_else(|| "0".into()),
        run_name: req.run_name,
        user_id: req.user_id.unwrap_or_default(),
        start_time_ms: req.start_time.unwrap_or_default(),
        tags: req.tags.into_iter().map(|t| (t.key, t.value)).collect(),
    };
    let run = s.store.create_run(run).await?;
    Ok(Json(json!({"run": run_json(&run)})))
}

#[derive(Deserialize)]
pub(crate) struct RunId {
    run_id: Option<String>,
    run_uuid: Option<String>,
}

impl RunId {
    fn required(self) -> ApiResult<String> {
        required(self.run_id.or(self.run_uuid), "run_id")
    }
}

pub(crate) async fn get(State(s): State<AppState>, Query(q): Query<RunId>) -> ApiResult<Json<Value>> {
    let run = s.store.get_run(&q.required()?).await?;
    Ok(Json(json!({"run": run_json(&run)})))
}

#[derive(Deserialize)]
pub(crate) struct Update {
    run_id: Option<String>,
    run_uuid: Option<String>,
    status: Option<String>,
    end_time: Option<i64>,
    run_name: Option<String>,
}

pub(crate) async fn update(State(s): State<AppState>, Json(req): Json<Update>) -> ApiResult<Json<Value>> {
    let id = RunId { run_id: req.run_id, run_uuid: req.run_uuid }.required()?;
    let run = s.store.update_run(&id, req.status.as_deref(), req.end_time, req.run_name.as_deref()).await?;
    Ok(Json(json!({"run_info": info_json(&run)})))
}

#[derive(Deserialize)]
pub(crate) struct SetTag {
    run_id: Option<String>,
    run_uuid: Option<String>,
    key: String,
    value: String,
}

pub(crate) async fn set_tag(State(s): State<AppState>, Json(req): Json<SetTag>) -> ApiResult<Json<Value>> {
    let id = RunId { run_id: req.run_id, run_uuid: req.run_uuid }.required()?;
    s.store.set_run_tag(&id, &req.key, &req.value).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(crate) struct LogBatch {
    run_id: Option<String>,
    #[serde(default)]
    metrics: Vec<Value>,
    #[serde(default)]
    params: Vec<Value>,
    #[serde(default)]
    tags: Vec<Tag>,
}

/// Tags are stored; metrics and params are refused rather than dropped: this is a tracing
/// backend, not an experiment tracker.
pub(crate) async fn log_batch(
    State(s): State<AppState>,
    Json(req): Json<LogBatch>,
) -> ApiResult<Json<Value>> {
    let id = RunId { run_id: req.run_id, run_uuid: None }.required()?;
    if !req.metrics.is_empty() || !req.params.is_empty() {
        return Err(ApiError::invalid(
            "tracelake stores traces, not run metrics or params: log only tags to a run here",
        ));
    }
    for t in req.tags {
        s.store.set_run_tag(&id, &t.key, &t.value).await?;
    }
    Ok(Json(json!({})))
}
