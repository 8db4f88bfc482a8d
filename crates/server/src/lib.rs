//! `tracelake server`: a drop-in backend for the MLflow tracing client and for OpenTelemetry
//! exporters, over any [`TraceStore`].
//!
//! - MLflow REST: experiments and traces (v3, and the 2.0 routes the client still calls),
//!   MLflow's error JSON (`{"error_code": ..., "message": ...}`), every route also under
//!   `/ajax-api`.
//! - MLflow's artifact proxy (`/api/2.0/mlflow-artifacts/artifacts/...`), files under the
//!   artifacts destination; a trace's `traces.json` upload is ingested like OTLP spans.
//! - OTLP/HTTP: `POST /v1/traces`, protobuf or JSON, gzip or deflate, routed by the
//!   `x-mlflow-experiment-id` header.
//! - One [`IngestService`] behind every write: group commit, acknowledgement once durable, 429
//!   with `Retry-After` when the queue is full, everything queued written on shutdown.

pub mod api;
mod error;
pub mod ingest;
mod proto_json;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tracelake_store::{LakeAccess, TraceStore};

pub use api::{MLFLOW_API_VERSION, router};
pub use error::{ApiError, ApiResult};
pub use ingest::IngestService;

/// Request size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body accepted as sent (413 beyond).
    pub max_body_bytes: usize,
    /// Largest body after decompression (413 beyond: zip bombs stop here).
    pub max_decompressed_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 32 << 20, max_decompressed_bytes: 128 << 20 }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn TraceStore>,
    /// The lake behind `store`, when it has one: SQL, experiment links, table-routed ingest.
    pub lake: Option<Arc<dyn LakeAccess>>,
    pub ingest: IngestService,
    pub limits: Limits,
    /// The directory artifacts are kept in (`mlflow server --artifacts-destination`).
    pub artifacts_destination: Arc<Path>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("limits", &self.limits)
            .field("artifacts_destination", &self.artifacts_destination)
            .finish_non_exhaustive()
    }
}

/// Serves `store` (with its `lake`, if any) over HTTP on `listener` and, when given, OTLP/gRPC
/// on `grpc`, with artifacts kept under `artifacts_destination`, until `shutdown` completes;
/// then writes everything that was accepted before returning.
pub async fn serve(
    listener: tokio::net::TcpListener,
    grpc: Option<tokio::net::TcpListener>,
    store: Arc<dyn TraceStore>,
    lake: Option<Arc<dyn LakeAccess>>,
    limits: Limits,
    artifacts_destination: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (ingest, writer) =
        IngestService::start(store.clone(), ingest::DEFAULT_QUEUE_REQUESTS, ingest::DEFAULT_MAX_WRITE_ITEMS);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let state = AppState { store, lake, ingest, limits, artifacts_destination: artifacts_destination.into() };
    let grpc_task = grpc.map(|listener| {
        let (traces, logs, metrics) = api::grpc::GrpcOtlpService::new(state.clone()).into_servers();
        let addr = listener.local_addr().ok();
        tracing::info!(target: "tracelake::server", "OTLP/gRPC on {}", addr.map_or_else(|| "?".into(), |a| a.to_string()));
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(traces)
                .add_service(logs)
                .add_service(metrics)
                .serve_with_incoming_shutdown(incoming, stop)
                .await
        })
    });

    let app = router(state);
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(target: "tracelake::server", "listening on http://{}", addr.map_or_else(|| "?".into(), |a| a.to_string()));
    axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx)).await?;
    if let Some(task) = grpc_task {
        match task.await {
            Ok(Err(e)) => tracing::error!(target: "tracelake::server", "OTLP/gRPC server failed: {e}"),
            Err(e) => tracing::error!(target: "tracelake::server", "OTLP/gRPC server task failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    // Every ingest handle is gone with the servers: the writer drains the queue and stops.
    let _ = writer.await;
    Ok(())
}
