//! OTLP/gRPC trace ingest: `opentelemetry.proto.collector.trace.v1.TraceService/Export`, with
//! the experiment in the `x-mlflow-experiment-id` metadata (or a lake table in
//! `x-tracelake-table-name`). Same ingest path as HTTP.

use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};
use tracelake_store::lake::SPANS_TABLE;

use super::otlp::{EXPERIMENT_HEADER, TABLE_HEADER, batch_at, location};
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
