//! Server metadata: version, health, server info.

use axum::Json;
use serde_json::{Value, json};

/// The MLflow API version the server speaks. Clients gate features on it: from 3.4 on, the
/// MLflow client sends spans over `/v1/traces`.
pub const MLFLOW_API_VERSION: &str = "3.17.2";

pub(crate) async fn version() -> &'static str {
    MLFLOW_API_VERSION
}

pub(crate) async fn health() -> &'static str {
    "OK"
}

pub(crate) async fn server_info() -> Json<Value> {
    Json(json!({
        "store_type": "SqlStore",
        "workspaces_enabled": false,
        "trace_archival_enabled": false,
        "artifact_serving_enabled": true,
        "server": "tracelake",
        "tracelake_version": env!("CARGO_PKG_VERSION"),
    }))
}
