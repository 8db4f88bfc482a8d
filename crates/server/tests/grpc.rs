//! OTLP/gRPC against a served instance (`serve` on loopback, the generated OTLP client): what
//! each kind of bad request gets, that a good one is stored, and that shutdown keeps it.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;
use tracelake_model::TraceId;
use tracelake_server::{Limits, serve};
use tracelake_store::conformance::span;
use tracelake_store::{InMemoryStore, TraceStore};

fn request(t: TraceId) -> ExportTraceServiceRequest {
    let spans = [span(t, 1, None, "root", 1000, 1100), span(t, 2, Some(1), "tool", 1010, 1020)];
    tracelake_otlp::request_from_spans(&spans, &Default::default(), "grpc-test", "1")
}

fn with_metadata<T>(message: T, pairs: &[(&'static str, &str)]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (key, value) in pairs {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_each_bad_request_with_its_status_and_keeps_serving() {
    let store = Arc::new(InMemoryStore::new());
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let artifacts = tempfile::tempdir().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let (store, dir) = (store.clone() as Arc<dyn TraceStore>, artifacts.path().to_owned());
        tokio::spawn(async move {
            serve(http, Some(grpc), store, None, Limits::default(), &dir, async move {
                let _ = stopped.await;
            })
            .await
        })
    };
    let channel = Channel::from_shared(format!("http://{grpc_addr}")).unwrap().connect().await.unwrap();
    let mut traces = TraceServiceClient::new(channel.clone());

    let cases: [(tonic::Request<ExportTraceServiceRequest>, Code, &str); 4] = [
        (
            with_metadata(request(TraceId::new(1).unwrap()), &[]),
            Code::InvalidArgument,
            "x-mlflow-experiment-id",
        ),
        (
            with_metadata(request(TraceId::new(2).unwrap()), &[("x-mlflow-experiment-id", "4242")]),
            Code::NotFound,
            "4242",
        ),
        (
            with_metadata(ExportTraceServiceRequest::default(), &[("x-mlflow-experiment-id", "0")]),
            Code::InvalidArgument,
            "no resource_spans",
        ),
        (
            with_metadata(
                request(TraceId::new(3).unwrap()),
                &[("x-tracelake-table-name", "main.agents.mlflow_experiment_trace_otel_spans")],
            ),
            Code::InvalidArgument,
            "lake",
        ),
    ];
    for (request, code, words) in cases {
        let status = traces.export(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(words), "{words:?} not in {:?}", status.message());
    }
    let mut logs = LogsServiceClient::new(channel);
    let status = logs
        .export(with_metadata(ExportLogsServiceRequest::default(), &[("x-mlflow-experiment-id", "0")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("no lake"), "{status:?}");

    // still serving: a good request is stored, and shutdown keeps it
    let good = TraceId::new(4).unwrap();
    traces.export(with_metadata(request(good), &[("x-mlflow-experiment-id", "0")])).await.unwrap();
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let trace = store.get_traces(&[good.to_mlflow_v3()]).await.unwrap();
    assert_eq!(trace.len(), 1);
    assert_eq!(trace[0].spans.len(), 2);
    for rejected in [1, 2, 3] {
        assert!(store.get_trace_info(&TraceId::new(rejected).unwrap().to_mlflow_v3()).await.is_err());
    }
}
