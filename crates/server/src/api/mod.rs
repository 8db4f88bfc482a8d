//! The HTTP routes. Every MLflow REST route is also served under `/ajax-api`, as MLflow does.

mod artifacts;
mod assessments;
mod experiments;
pub mod grpc;
mod lake;
mod meta;
pub(crate) mod otlp;
mod runs;
mod traces;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, patch, post};
use serde::Deserialize;

pub use meta::MLFLOW_API_VERSION;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// A required request parameter, or MLflow's 400 naming it.
pub(crate) fn required<T>(value: Option<T>, name: &str) -> ApiResult<T> {
    value.ok_or_else(|| ApiError::invalid(format!("missing value for required parameter '{name}'")))
}

/// A `{key, value}` tag in an MLflow request body.
#[derive(Deserialize)]
pub(crate) struct Tag {
    key: String,
    value: String,
}

fn mlflow_routes() -> Router<AppState> {
    Router::new()
        .route("/2.0/mlflow/experiments/create", post(experiments::create))
        .route("/2.0/mlflow/experiments/get", get(experiments::get))
        .route("/2.0/mlflow/experiments/get-by-name", get(experiments::get_by_name))
        .route("/2.0/mlflow/experiments/search", get(experiments::search_get).post(experiments::search_post))
        .route("/2.0/mlflow/experiments/update", post(experiments::update))
        .route("/2.0/mlflow/experiments/delete", post(experiments::delete))
        .route("/2.0/mlflow/experiments/restore", post(experiments::restore))
        .route("/2.0/mlflow/experiments/set-experiment-tag", post(experiments::set_tag))
        .route("/2.0/mlflow/experiments/delete-experiment-tag", post(experiments::delete_tag))
        .route("/2.0/mlflow/runs/create", post(runs::create))
        .route("/2.0/mlflow/runs/get", get(runs::get))
        .route("/2.0/mlflow/runs/update", post(runs::update))
        .route("/2.0/mlflow/runs/set-tag", post(runs::set_tag))
        .route("/2.0/mlflow/runs/log-batch", post(runs::log_batch))
        .route("/3.0/mlflow/traces", post(traces::start_trace))
        .route("/3.0/mlflow/traces/get", get(traces::get_trace))
        .route("/3.0/mlflow/traces/batchGet", get(traces::batch_get))
        .route("/3.0/mlflow/traces/batchGetInfos", post(traces::batch_get_infos))
        .route("/3.0/mlflow/traces/search", post(traces::search))
        .route("/3.0/mlflow/traces/{trace_id}", get(traces::get_info))
        .route("/3.0/mlflow/traces/{trace_id}/assessments", post(assessments::create))
        .route(
            "/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}",
            get(assessments::get).patch(assessments::update).delete(assessments::delete),
        )
        .route("/2.0/mlflow/traces/delete-traces", post(traces::delete))
        .route("/3.0/mlflow/traces/delete-traces", post(traces::delete))
        .route("/2.0/mlflow/traces/{trace_id}/tags", patch(traces::set_tag).delete(traces::delete_tag))
        .route("/3.0/mlflow/traces/{trace_id}/tags", patch(traces::set_tag).delete(traces::delete_tag))
        .route("/2.0/mlflow/traces/link-to-run", post(traces::link_to_run))
        .route("/3.0/mlflow/server-info", get(meta::server_info))
        .route("/2.0/mlflow-artifacts/artifacts/{*path}", get(artifacts::download).put(artifacts::upload))
        .route("/4.0/mlflow/traces/location", post(lake::create_location))
        .route("/4.0/mlflow/traces/{experiment_id}/link-location", post(lake::link))
        .route("/4.0/mlflow/traces/{experiment_id}/unlink-location", post(lake::unlink))
        .route("/2.0/tracelake/sql", get(lake::sql_get).post(lake::sql_post))
        .route("/2.0/tracelake/lake/schemas", get(lake::schemas))
}

/// Every route of the server, over `state`.
pub fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    let ui = tracelake_ui::router(state.store.clone(), state.lake.clone());
    Router::new()
        .nest("/api", mlflow_routes())
        .nest("/ajax-api", mlflow_routes())
        .route("/v1/traces", post(otlp::ingest))
        .route("/v1/logs", post(otlp::ingest_logs))
        .route("/v1/metrics", post(otlp::ingest_metrics))
        .route("/version", get(meta::version))
        .route("/health", get(meta::health))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
        // the web UI at `/`
        .merge(ui)
}
