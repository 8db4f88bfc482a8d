//! OTLP/gRPC trace ingest: `opentelemetry.proto.collector.trace.v1.TraceService/Export`, with
//! the experiment in the `x-mlflow-experiment-id` metadata. Same ingest path as HTTP.

use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};
use tracelake_store::WriteBatch;

use super::otlp::EXPERIMENT_HEADER;
use crate::error::ApiError;
use crate::ingest::IngestService;

/// The gRPC trace service over the ingest path.
#[derive(Debug, Clone)]
pub struct GrpcTraceService {
    ingest: IngestService,
}

impl GrpcTraceService {
    pub fn new(ingest: IngestService) -> Self {
        Self { ingest }
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
        let experiment_id = request
            .metadata()
            .get(EXPERIMENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Status::invalid_argument(format!("missing required metadata {EXPERIMENT_HEADER}"))
            })?
            .to_owned();
        let request = request.into_inner();
        if request.resource_spans.is_empty() {
            return Err(Status::invalid_argument("the request holds no resource_spans"));
        }
        let spans = tracelake_otlp::spans_from_request(&request)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let batch = WriteBatch {
            infos: vec![],
            spans: spans.into_iter().map(|i| (experiment_id.clone(), i.span)).collect(),
        };
        self.ingest.write(batch).await.map_err(status)?;
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}
