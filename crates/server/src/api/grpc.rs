//! OTLP/gRPC ingest: `TraceService/Export` with the experiment in the `x-mlflow-experiment-id`
//! metadata (or a lake table in `x-tracelake-table-name`), `LogsService/Export` and
//! `MetricsService/Export` to lake tables. Same paths as HTTP.

use std::time::Duration;

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
use tonic_types::{ErrorDetails, StatusExt as _};
use tracelake_store::lake::{LOGS_TABLE, METRICS_TABLE, SPANS_TABLE};

use super::otlp::{EXPERIMENT_HEADER, TABLE_HEADER, append_rows, batch_at, lake_schema_for, location};
use crate::AppState;
use crate::error::ApiError;

/// The gRPC services over the server's state.
#[derive(Debug, Clone)]
pub struct GrpcOtlpService {
    state: AppState,
}

impl GrpcOtlpService {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// The tonic services to mount (gzip requests accepted): traces, logs, metrics. They take
    /// messages up to the decompressed size HTTP takes, not tonic's default of 4 MiB, which
    /// one large trace (the SDK sends a trace in one request) can exceed.
    pub fn into_servers(
        self,
    ) -> (TraceServiceServer<Self>, LogsServiceServer<Self>, MetricsServiceServer<Self>) {
        let gzip = tonic::codec::CompressionEncoding::Gzip;
        let limit = self.state.limits.max_decompressed_bytes;
        (
            TraceServiceServer::new(self.clone()).accept_compressed(gzip).max_decoding_message_size(limit),
            LogsServiceServer::new(self.clone()).accept_compressed(gzip).max_decoding_message_size(limit),
            MetricsServiceServer::new(self).accept_compressed(gzip).max_decoding_message_size(limit),
        )
    }

    /// Writes the rows `rows` makes of a logs or metrics request to `table` of the lake schema
    /// its metadata names.
    async fn export_rows<R>(
        &self,
        request: Request<R>,
        table: &str,
        rows: fn(&R) -> Vec<serde_json::Value>,
    ) -> Result<(), Status> {
        let metadata = |key: &str| request.metadata().get(key).and_then(|v| v.to_str().ok());
        let (lake, key) =
            lake_schema_for(&self.state, metadata(EXPERIMENT_HEADER), metadata(TABLE_HEADER), table)
                .await
                .map_err(status)?;
        append_rows(lake, &key, table, rows(request.get_ref())).await.map_err(status)
    }
}

/// The gRPC status for an API error. 429 becomes RESOURCE_EXHAUSTED with a `RetryInfo` detail
/// carrying the retry hint: OpenTelemetry exporters retry that code only when it is there.
fn status(e: ApiError) -> Status {
    let message = e.message;
    match e.status {
        StatusCode::TOO_MANY_REQUESTS => {
            let delay = Duration::from_secs(e.retry_after.unwrap_or(1));
            Status::with_error_details(
                tonic::Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(delay)),
            )
        }
        StatusCode::NOT_FOUND => Status::not_found(message),
        StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(message),
        s if s.is_client_error() => Status::invalid_argument(message),
        _ => Status::internal(message),
    }
}

#[tonic::async_trait]
impl TraceService for GrpcOtlpService {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let metadata = |key: &str| request.metadata().get(key).and_then(|v| v.to_str().ok());
        let location =
            location(&self.state, metadata(EXPERIMENT_HEADER), metadata(TABLE_HEADER), SPANS_TABLE)
                .map_err(status)?;
        let request = request.into_inner();
        if request.resource_spans.is_empty() {
            return Err(Status::invalid_argument("the request holds no resource_spans"));
        }
        let spans = tracelake_otlp::spans_from_request(&request)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.state.ingest.write(batch_at(location, spans)).await.map_err(status)?;
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl LogsService for GrpcOtlpService {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.export_rows(request, LOGS_TABLE, tracelake_otlp::rows::log_rows).await?;
        Ok(Response::new(ExportLogsServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcOtlpService {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.export_rows(request, METRICS_TABLE, tracelake_otlp::rows::metric_rows).await?;
        Ok(Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_is_resource_exhausted_with_the_retry_hint() {
        let s = status(ApiError::overloaded(2));
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(s.message().contains("retry in 2 s"), "{}", s.message());
        let retry = s.get_details_retry_info().expect("a RetryInfo detail");
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(2)));
    }
}
