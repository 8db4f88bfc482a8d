//! The lake over HTTP: SQL (`/api/2.0/tracelake/sql`), its schemas, and the links between
//! experiments and lake schemas, on the routes MLflow's client uses for Unity Catalog
//! locations (`/api/4.0/mlflow/traces/location`, `.../{experiment_id}/link-location`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tracelake_store::lake::{INFO_TABLE, LOGS_TABLE, METRICS_TABLE, SPANS_TABLE, parse_schema_key};
use tracelake_store::{LakeAccess, SqlFormat};

use super::required;
use crate::AppState;
use crate::error::{ApiError, ApiResult};

fn lake(s: &AppState) -> ApiResult<&Arc<dyn LakeAccess>> {
    s.lake.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NOT_IMPLEMENTED",
            "this server keeps no lake (build it with the store-lake feature)",
        )
    })
}

#[derive(Deserialize)]
pub(crate) struct Sql {
    query: Option<String>,
    /// `json` (default), `csv`, `arrow` or `table`.
    format: Option<String>,
}

async fn run_sql(s: &AppState, req: Sql) -> ApiResult<Response> {
    let lake = lake(s)?;
    let query = required(req.query.filter(|q| !q.trim().is_empty()), "query")?;
    let format = match req.format.as_deref() {
        None | Some("") => SqlFormat::Json,
        Some(f) => SqlFormat::parse(f).ok_or_else(|| {
            ApiError::invalid(format!("unknown format {f:?}: use json, csv, arrow or table"))
        })?,
    };
    let out = lake.sql(&query, format).await?;
    let mut response = ([(header::CONTENT_TYPE, format.content_type())], out.body).into_response();
    if let Ok(rows) = HeaderValue::from_str(&out.rows.to_string()) {
        response.headers_mut().insert("x-tracelake-rows", rows);
    }
    Ok(response)
}

pub(crate) async fn sql_post(State(s): State<AppState>, Json(req): Json<Sql>) -> ApiResult<Response> {
    run_sql(&s, req).await
}

pub(crate) async fn sql_get(State(s): State<AppState>, Query(req): Query<Sql>) -> ApiResult<Response> {
    run_sql(&s, req).await
}

pub(crate) async fn schemas(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    let schemas = lake(&s)?.schemas().await?;
    Ok(Json(json!({ "schemas": schemas })))
}

fn location_json(key: &str) -> Value {
    let (catalog, schema) = key.split_once('.').unwrap_or((key, ""));
    json!({
        "type": "UC_SCHEMA",
        "uc_schema": {
            "catalog_name": catalog,
            "schema_name": schema,
            "otel_spans_table_name": format!("{key}.{SPANS_TABLE}"),
            "otel_logs_table_name": format!("{key}.{LOGS_TABLE}"),
            "otel_metrics_table_name": format!("{key}.{METRICS_TABLE}"),
            "trace_info_table_name": format!("{key}.{INFO_TABLE}"),
        }
    })
}

#[derive(Deserialize)]
pub(crate) struct UcSchema {
    catalog_name: Option<String>,
    schema_name: Option<String>,
}

impl UcSchema {
    /// `catalog.schema`, checked.
    fn key(self) -> ApiResult<String> {
        let key =
            format!("{}.{}", self.catalog_name.unwrap_or_default(), self.schema_name.unwrap_or_default());
        parse_schema_key(&key)?;
        Ok(key)
    }
}

#[derive(Deserialize)]
pub(crate) struct Location {
    uc_schema: Option<UcSchema>,
}

impl Location {
    fn key(self) -> ApiResult<String> {
        required(self.uc_schema, "uc_schema")?.key()
    }
}

/// `POST /api/4.0/mlflow/traces/location`: creates a schema's tables (an existing schema is
/// fine), as MLflow's `CreateTraceUCStorageLocation`.
pub(crate) async fn create_location(
    State(s): State<AppState>,
    Json(req): Json<Location>,
) -> ApiResult<Json<Value>> {
    let lake = lake(&s)?;
    let key = req.key()?;
    lake.create_schema(&key).await?;
    Ok(Json(json!({ "uc_schema": location_json(&key)["uc_schema"] })))
}

/// `POST /api/4.0/mlflow/traces/{experiment_id}/link-location`: the experiment's traces go to
/// the schema from now on (`LinkExperimentToUCTraceLocation`).
pub(crate) async fn link(
    State(s): State<AppState>,
    Path(experiment_id): Path<String>,
    Json(req): Json<Location>,
) -> ApiResult<Json<Value>> {
    let lake = lake(&s)?;
    let key = req.key()?;
    let (catalog, schema) = key.split_once('.').expect("checked");
    lake.link_experiment(&experiment_id, catalog, schema).await?;
    Ok(Json(json!({ "experiment_id": experiment_id, "trace_location": location_json(&key) })))
}

/// `POST /api/4.0/mlflow/traces/{experiment_id}/unlink-location`: back to the tracking store.
pub(crate) async fn unlink(
    State(s): State<AppState>,
    Path(experiment_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let lake = lake(&s)?;
    s.store.get_experiment(&experiment_id).await?;
    lake.unlink_experiment(&experiment_id).await?;
    Ok(Json(json!({})))
}
