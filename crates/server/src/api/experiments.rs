//! MLflow experiments (REST 2.0).

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use tracelake_store::{Experiment, ViewType};

use super::Tag;
use crate::AppState;
use crate::error::{ApiError, ApiResult};

fn experiment_json(e: &Experiment) -> Value {
    let tags: Vec<Value> = e.tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
    let mut m = json!({
        "experiment_id": e.experiment_id,
        "name": e.name,
        "artifact_location": e.artifact_location,
        "lifecycle_stage": e.lifecycle_stage.as_str(),
        "last_update_time": e.last_update_time_ms,
        "creation_time": e.creation_time_ms,
    });
    if !tags.is_empty() {
        m["tags"] = Value::Array(tags);
    }
    m
}

#[derive(Deserialize)]
pub(crate) struct Create {
    name: Option<String>,
    artifact_location: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
}

pub(crate) async fn create(State(s): State<AppState>, Json(req): Json<Create>) -> ApiResult<Json<Value>> {
    let name = req.name.ok_or_else(|| ApiError::invalid("missing value for required parameter 'name'"))?;
    let tags: Vec<(String, String)> = req.tags.into_iter().map(|t| (t.key, t.value)).collect();
    let artifact_location = req.artifact_location.filter(|l| !l.is_empty());
    let id = s.store.create_experiment(&name, artifact_location.as_deref(), &tags).await?;
    Ok(Json(json!({"experiment_id": id})))
}

#[derive(Deserialize)]
pub(crate) struct ById {
    experiment_id: Option<String>,
}

fn required(id: Option<String>) -> ApiResult<String> {
    id.ok_or_else(|| ApiError::invalid("missing value for required parameter 'experiment_id'"))
}

pub(crate) async fn get(State(s): State<AppState>, Query(q): Query<ById>) -> ApiResult<Json<Value>> {
    let e = s.store.get_experiment(&required(q.experiment_id)?).await?;
    Ok(Json(json!({"experiment": experiment_json(&e)})))
}

#[derive(Deserialize)]
pub(crate) struct ByName {
    experiment_name: Option<String>,
}

pub(crate) async fn get_by_name(
    State(s): State<AppState>,
    Query(q): Query<ByName>,
) -> ApiResult<Json<Value>> {
    let name = q
        .experiment_name
        .ok_or_else(|| ApiError::invalid("missing value for required parameter 'experiment_name'"))?;
    match s.store.get_experiment_by_name(&name).await? {
        Some(e) => Ok(Json(json!({"experiment": experiment_json(&e)}))),
        None => Err(ApiError::not_found(format!("Could not find experiment with name '{name}'"))),
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct Search {
    max_results: Option<usize>,
    page_token: Option<String>,
    view_type: Option<String>,
}

pub(crate) async fn search_get(state: State<AppState>, Query(q): Query<Search>) -> ApiResult<Json<Value>> {
    search(state, q).await
}

pub(crate) async fn search_post(
    state: State<AppState>,
    body: Option<Json<Search>>,
) -> ApiResult<Json<Value>> {
    search(state, body.map(|b| b.0).unwrap_or_default()).await
}

async fn search(State(s): State<AppState>, q: Search) -> ApiResult<Json<Value>> {
    let view = match q.view_type.as_deref() {
        None | Some("ACTIVE_ONLY") => ViewType::ActiveOnly,
        Some("DELETED_ONLY") => ViewType::DeletedOnly,
        Some("ALL") => ViewType::All,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "invalid view_type {other:?}: expected ACTIVE_ONLY, DELETED_ONLY or ALL"
            )));
        }
    };
    let page = s.store.list_experiments(view, q.max_results.unwrap_or(1000), q.page_token.as_deref()).await?;
    let mut body = json!({"experiments": page.items.iter().map(experiment_json).collect::<Vec<_>>()});
    if let Some(t) = page.next_page_token {
        body["next_page_token"] = json!(t);
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
pub(crate) struct Update {
    experiment_id: Option<String>,
    new_name: Option<String>,
}

pub(crate) async fn update(State(s): State<AppState>, Json(req): Json<Update>) -> ApiResult<Json<Value>> {
    let name =
        req.new_name.ok_or_else(|| ApiError::invalid("missing value for required parameter 'new_name'"))?;
    s.store.rename_experiment(&required(req.experiment_id)?, &name).await?;
    Ok(Json(json!({})))
}

pub(crate) async fn delete(State(s): State<AppState>, Json(req): Json<ById>) -> ApiResult<Json<Value>> {
    s.store.delete_experiment(&required(req.experiment_id)?).await?;
    Ok(Json(json!({})))
}

pub(crate) async fn restore(State(s): State<AppState>, Json(req): Json<ById>) -> ApiResult<Json<Value>> {
    s.store.restore_experiment(&required(req.experiment_id)?).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(crate) struct SetTag {
    experiment_id: Option<String>,
    key: String,
    value: String,
}

pub(crate) async fn set_tag(State(s): State<AppState>, Json(req): Json<SetTag>) -> ApiResult<Json<Value>> {
    s.store.set_experiment_tag(&required(req.experiment_id)?, &req.key, &req.value).await?;
    Ok(Json(json!({})))
}
