//! OTLP/gRPC trace ingest: `opentelemetry.proto.collector.trace.v1.TraceService/Export`, with
//! the experiment in the `x-mlflow-experiment-id` metadata (or a lake table in
//! `x-tracelake-table-name`). Same ingest path as HTTP.

use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};
use tracelake_store::lake::{LOGS_TABLE, METRICS_TABLE, SPANS_TABLE};

use super::otlp::{EXPERIMENT_HEADER, TABLE_HEADER, append, batch_at, lake_schema_for, location};
use crate::AppState;
use crate::error::ApiError;
use crate::ingest::IngestService;

/// The gRPC trace service over the ingest path.
#[derive(Debug, Clone)]
pub struct GrpcTraceService {
    ingest: IngestService,
    has_lake: bool,
}

impl GrpcTraceService {
    /// `has_lake`: whether spans may be sent to a lake table.
    pub fn new(ingest: IngestService, has_lake: bool) -> Self {
        Self { ingest, has_lake }
    }

    /// The tonic service to mount (gzip requests accepted).
    pub fn into_server(self) -> TraceServiceServer<Self> {
        TraceServiceServer::new(self).accept_compressed(tonic::codec::CompressionEncoding::Gzip)
    }
}

/// The gRPC status for an API error: 429 becomes RESOURCE_EXHAUSTED, which exporters retry.
fn status(e: ApiError) -> Status {
    let message = e.message;
    match e.status {
        StatusCode::TOO_MANY_REQUESTS => Status::resource_exhausted(message),
        StatusCode::NOT_FOUND => Status::not_found(message),
        StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(message),
        s if s.is_client_error() => Status::invalid_argument(message),
        _ => Status::internal(message),
    }
}

#[tonic::async_trait]
impl TraceService for GrpcTraceService {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let metadata = |key: &str| request.metadata().get(key).and_then(|v| v.to_str().ok());
        let location =
            location(metadata(EXPERIMENT_HEADER), metadata(TABLE_HEADER), self.has_lake, SPANS_TABLE)
                .map_err(status)?;
        let request = request.into_inner();
        if request.resource_spans.is_empty() {
            return Err(Status::invalid_argument("the request holds no resource_spans"));
        }
        let spans = tracelake_otlp::spans_from_request(&request)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.ingest.write(batch_at(location, spans)).await.map_err(status)?;
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// OTLP/gRPC logs and metrics: `LogsService/Export` and `MetricsService/Export`, to the lake
/// table the `x-tracelake-table-name` metadata names (or the schema the experiment in
/// `x-mlflow-experiment-id` is linked to).
#[derive(Debug, Clone)]
pub struct GrpcLakeService {
    state: AppState,
}

impl GrpcLakeService {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// The tonic services to mount (gzip requests accepted).
    pub fn into_servers(self) -> (LogsServiceServer<Self>, MetricsServiceServer<Self>) {
        let gzip = tonic::codec::CompressionEncoding::Gzip;
        (
            LogsServiceServer::new(self.clone()).accept_compressed(gzip),
            MetricsServiceServer::new(self).accept_compressed(gzip),
        )
    }

    async fn schema<T>(&self, request: &Request<T>, table: &str) -> Result<String, Status> {
        let metadata = |key: &str| request.metadata().get(key).and_then(|v| v.to_str().ok());
        lake_schema_for(&self.state, metadata(EXPERIMENT_HEADER), metadata(TABLE_HEADER), table)
            .await
            .map_err(status)
    }
}

#[tonic::async_trait]
impl LogsService for GrpcLakeService {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let key = self.schema(&request, LOGS_TABLE).await?;
        let rows = tracelake_otlp::rows::log_rows(request.get_ref());
        append(&self.state, &key, LOGS_TABLE, rows).await.map_err(status)?;
        Ok(Response::new(ExportLogsServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcLakeService {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let key = self.schema(&request, METRICS_TABLE).await?;
        let rows = tracelake_otlp::rows::metric_rows(request.get_ref());
        append(&self.state, &key, METRICS_TABLE, rows).await.map_err(status)?;
        Ok(Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}
