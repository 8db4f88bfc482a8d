//! MLflow experiments (REST 2.0).

use axum::Json;
use axum::extract::{Query, RawQuery, State};
use serde::Deserialize;
use serde_json::{Value, json};
use tracelake_store::{
    Experiment, ExperimentQuery, ViewType, parse_experiment_filter, parse_experiment_order_by,
};

use super::{Tag, required};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// MLflow's page size when a search names none.
const SEARCH_EXPERIMENTS_DEFAULT: usize = 1000;

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
    let name = required(req.name, "name")?;
    let tags: Vec<(String, String)> = req.tags.into_iter().map(|t| (t.key, t.value)).collect();
    let artifact_location = req.artifact_location.filter(|l| !l.is_empty());
    let id = s.store.create_experiment(&name, artifact_location.as_deref(), &tags).await?;
    Ok(Json(json!({"experiment_id": id})))
}

#[derive(Deserialize)]
pub(crate) struct ById {
    experiment_id: Option<String>,
}

pub(crate) async fn get(State(s): State<AppState>, Query(q): Query<ById>) -> ApiResult<Json<Value>> {
    let e = s.store.get_experiment(&required(q.experiment_id, "experiment_id")?).await?;
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
    let name = required(q.experiment_name, "experiment_name")?;
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
    filter: Option<String>,
    #[serde(default)]
    order_by: Vec<String>,
}

impl Search {
    /// The GET form: `order_by` may repeat, as MLflow's clients send a list.
    fn from_query(query: &str) -> ApiResult<Search> {
        let mut search = Search::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "max_results" => {
                    let n = value.parse().map_err(|_| {
                        ApiError::invalid(format!(
                            "invalid value {value:?} for parameter 'max_results': expected a positive integer"
                        ))
                    })?;
                    search.max_results = Some(n);
                }
                "page_token" => search.page_token = Some(value.into_owned()),
                "view_type" => search.view_type = Some(value.into_owned()),
                "filter" => search.filter = Some(value.into_owned()),
                "order_by" => search.order_by.push(value.into_owned()),
                _ => {}
            }
        }
        Ok(search)
    }
}

pub(crate) async fn search_get(state: State<AppState>, RawQuery(query): RawQuery) -> ApiResult<Json<Value>> {
    search(state, Search::from_query(query.as_deref().unwrap_or(""))?).await
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
    let filter = parse_experiment_filter(q.filter.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let order_by =
        parse_experiment_order_by(&q.order_by).map_err(|e| ApiError::invalid(format!("order_by: {e}")))?;
    let query = ExperimentQuery {
        view,
        filter,
        order_by,
        max_results: q.max_results.unwrap_or(SEARCH_EXPERIMENTS_DEFAULT),
        page_token: q.page_token,
    };
    let page = s.store.search_experiments(&query).await?;
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
    let name = required(req.new_name, "new_name")?;
    s.store.rename_experiment(&required(req.experiment_id, "experiment_id")?, &name).await?;
    Ok(Json(json!({})))
}

pub(crate) async fn delete(State(s): State<AppState>, Json(req): Json<ById>) -> ApiResult<Json<Value>> {
    s.store.delete_experiment(&required(req.experiment_id, "experiment_id")?).await?;
    Ok(Json(json!({})))
}

pub(crate) async fn restore(State(s): State<AppState>, Json(req): Json<ById>) -> ApiResult<Json<Value>> {
    s.store.restore_experiment(&required(req.experiment_id, "experiment_id")?).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(crate) struct SetTag {
    experiment_id: Option<String>,
    key: String,
    value: String,
}

pub(crate) async fn set_tag(State(s): State<AppState>, Json(req): Json<SetTag>) -> ApiResult<Json<Value>> {
    s.store.set_experiment_tag(&required(req.experiment_id, "experiment_id")?, &req.key, &req.value).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(crate) struct DeleteTag {
    experiment_id: Option<String>,
    key: Option<String>,
}

pub(crate) async fn delete_tag(
    State(s): State<AppState>,
    Json(req): Json<DeleteTag>,
) -> ApiResult<Json<Value>> {
    let key = required(req.key, "key")?;
    s.store.delete_experiment_tag(&required(req.experiment_id, "experiment_id")?, &key).await?;
    Ok(Json(json!({})))
}
