//! The HTTP API in process (`Router::oneshot`): wire shapes and what bad input gets.

use std::io::Write;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;
use tracelake_model::{Span, TraceId};
use tracelake_server::{AppState, IngestService, Limits, router};
use tracelake_store::{InMemoryStore, TraceStore};

fn app_with(limits: Limits) -> Router {
    let store: Arc<dyn TraceStore> = Arc::new(InMemoryStore::new());
    let (ingest, _worker) = IngestService::start(store.clone(), 64, 1000);
    // nothing here reads or writes artifacts
    let artifacts_destination = std::env::temp_dir().join("tracelake-api-tests-artifacts").into();
    router(AppState { store, lake: None, ingest, limits, artifacts_destination })
}

fn app() -> Router {
    app_with(Limits::default())
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn otlp(body: Vec<u8>, content_type: &str, encoding: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/v1/traces")
        .header(header::CONTENT_TYPE, content_type)
        .header("x-mlflow-experiment-id", "0");
    if let Some(e) = encoding {
        b = b.header(header::CONTENT_ENCODING, e);
    }
    b.body(Body::from(body)).unwrap()
}

fn sample_request() -> Vec<u8> {
    let t = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
    let mut root = tracelake_store::conformance::span(t, 1, None, "agent", 1000, 1100);
    root.attributes.insert("mlflow.spanInputs", &json!({"q": "hi"}));
    let child: Span = tracelake_store::conformance::span(t, 2, Some(1), "tool", 1010, 1020);
    let request = tracelake_otlp::request_from_spans(&[root, child], &Default::default(), "test", "1");
    tracelake_otlp::encode_protobuf(&request)
}

#[tokio::test]
async fn otlp_spans_are_readable_in_mlflow_proto_json() {
    let app = app();
    let (status, _) = call(&app, otlp(sample_request(), "application/x-protobuf", None)).await;
    assert_eq!(status, StatusCode::OK);
    let id = "tr-0af7651916cd43dd8448eb211c80319c";
    let (status, body) = call(
        &app,
        Request::get(format!("/api/3.0/mlflow/traces/get?trace_id={id}")).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let trace = &body["trace"];
    assert_eq!(trace["trace_info"]["trace_id"], id);
    assert_eq!(trace["trace_info"]["state"], "OK");
    assert_eq!(trace["trace_info"]["execution_duration"], "0.100s");
    assert_eq!(trace["trace_info"]["request_time"], "1970-01-01T00:00:01Z");
    let root = &trace["spans"][0];
    assert_eq!(root["trace_id"], "CvdlGRbNQ92ESOshHIAxnA==", "base64 ids");
    assert_eq!(root["status"]["code"], "STATUS_CODE_OK");
    let inputs =
        root["attributes"].as_array().unwrap().iter().find(|a| a["key"] == "mlflow.spanInputs").unwrap();
    assert_eq!(
        inputs["value"],
        json!({"kvlist_value": {"values": [{"key": "q", "value": {"string_value": "hi"}}]}})
    );
    // also under /ajax-api, and by batchGet with repeated ids
    let (status, body) = call(
        &app,
        Request::get(format!("/ajax-api/3.0/mlflow/traces/batchGet?trace_ids={id}&trace_ids=tr-00000000000000000000000000000001"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["traces"].as_array().unwrap().len(), 1);
    // and its info alone by batchGetInfos, unknown ids left out
    let (status, body) = call(
        &app,
        Request::post("/api/3.0/mlflow/traces/batchGetInfos")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"trace_ids": [id, "tr-00000000000000000000000000000001"]}).to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["trace_infos"].as_array().unwrap().len(), 1);
    assert_eq!(body["trace_infos"][0]["trace_id"], id);
    assert_eq!(body["trace_infos"][0]["execution_duration"], "0.100s");
}

#[tokio::test]
async fn gzip_and_deflate_bodies_are_accepted() {
    let app = app();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&sample_request()).unwrap();
    assert_eq!(
        call(&app, otlp(gz.finish().unwrap(), "application/x-protobuf", Some("gzip"))).await.0,
        StatusCode::OK
    );
    let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zl.write_all(&sample_request()).unwrap();
    assert_eq!(
        call(&app, otlp(zl.finish().unwrap(), "application/x-protobuf", Some("deflate"))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_otlp_requests_get_a_4xx_that_says_what_is_wrong() {
    let app = app();
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            otlp(b"\x0a\xff".to_vec(), "application/x-protobuf", None),
            StatusCode::BAD_REQUEST,
            "invalid OTLP protobuf",
        ),
        (
            otlp(b"{\"resourceSpans\": [".to_vec(), "application/json", None),
            StatusCode::BAD_REQUEST,
            "invalid OTLP JSON",
        ),
        (otlp(b"{}".to_vec(), "application/json", None), StatusCode::BAD_REQUEST, "no resource_spans"),
        (
            otlp(sample_request(), "text/plain", None),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported Content-Type",
        ),
        (
            otlp(sample_request(), "application/x-protobuf", Some("br")),
            StatusCode::BAD_REQUEST,
            "unsupported Content-Encoding",
        ),
        (
            otlp(b"not gzip".to_vec(), "application/x-protobuf", Some("gzip")),
            StatusCode::BAD_REQUEST,
            "cannot decompress",
        ),
        (
            Request::post("/v1/traces")
                .header(header::CONTENT_TYPE, "application/x-protobuf")
                .body(Body::from(sample_request()))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "missing required header x-mlflow-experiment-id",
        ),
        (
            Request::post("/v1/traces")
                .header(header::CONTENT_TYPE, "application/x-protobuf")
                .header("x-mlflow-experiment-id", "424242")
                .body(Body::from(sample_request()))
                .unwrap(),
            StatusCode::NOT_FOUND,
            "No Experiment with id=424242",
        ),
    ];
    for (req, want_status, want_message) in cases {
        let (status, body) = call(&app, req).await;
        assert_eq!(status, want_status, "{body}");
        assert!(body["message"].as_str().unwrap_or("").contains(want_message), "{body}");
        assert!(body["error_code"].is_string(), "{body}");
    }
    // and the server keeps serving
    assert_eq!(call(&app, otlp(sample_request(), "application/x-protobuf", None)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn oversized_and_zip_bomb_bodies_get_413_naming_the_limit() {
    let app = app_with(Limits { max_body_bytes: 64 << 10, max_decompressed_bytes: 1 << 20 });
    let (status, _) = call(&app, otlp(vec![0u8; 128 << 10], "application/x-protobuf", None)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 16 << 20]).unwrap(); // 16 MiB of zeros, a few KiB compressed
    let (status, body) = call(&app, otlp(gz.finish().unwrap(), "application/x-protobuf", Some("gzip"))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["message"].as_str().unwrap().contains("limit of 1048576 bytes"), "{body}");
}

#[tokio::test]
async fn a_bad_search_filter_is_400_naming_the_column() {
    let app = app();
    let req = Request::post("/api/3.0/mlflow/traces/search")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "0"}}], "filter": "tag.env = prod"}).to_string()))
        .unwrap();
    let (status, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE");
    assert_eq!(
        body["message"],
        "invalid filter at column 11: expected a quoted string or a number after =, found \"prod\" (try 'prod')"
    );
}

/// The GET form of experiment search takes MLflow's query parameters, `order_by` repeated;
/// the POST form the same as JSON; both refuse a bad filter with its column.
#[tokio::test]
async fn experiments_are_searched_by_get_and_post() {
    let app = app();
    for (name, team) in [("b-agents", "search"), ("a-agents", "search"), ("chat", "chat")] {
        let req = Request::post("/api/2.0/mlflow/experiments/create")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"name": name, "tags": [{"key": "team", "value": team}]}).to_string()))
            .unwrap();
        assert_eq!(call(&app, req).await.0, StatusCode::OK);
    }
    let names = |body: &Value| -> Vec<String> {
        body["experiments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let uri = concat!(
        "/api/2.0/mlflow/experiments/search?filter=tags.team%20%3D%20%27search%27",
        "&order_by=last_update_time+DESC&order_by=name&max_results=1"
    );
    let (status, body) = call(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["next_page_token"].as_str().unwrap().to_owned();
    let mut seen = names(&body);
    let req = Request::post("/ajax-api/2.0/mlflow/experiments/search")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"filter": "tags.team = 'search'", "order_by": ["last_update_time DESC", "name"],
                   "max_results": 1, "page_token": token})
            .to_string(),
        ))
        .unwrap();
    let (status, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("next_page_token").is_none(), "{body}");
    seen.extend(names(&body));
    seen.sort();
    assert_eq!(seen, ["a-agents", "b-agents"]);

    let uri = "/api/2.0/mlflow/experiments/search?filter=name%20%3D%20%27a%27%20OR%20name%20%3D%20%27b%27";
    let (status, body) = call(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE");
    assert!(
        body["message"].as_str().unwrap().starts_with("invalid filter at column 12: OR is not supported"),
        "{body}"
    );
    let uri = "/api/2.0/mlflow/experiments/search?order_by=tags.team";
    let (status, body) = call(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let uri = "/api/2.0/mlflow/experiments/search?max_results=many";
    let (status, body) = call(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn start_trace_before_spans_still_says_spans_are_in_the_store() {
    let app = app();
    let info = json!({"trace": {"trace_info": {
        "trace_id": "tr-0af7651916cd43dd8448eb211c80319c",
        "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "0"}},
        "request_time": "2026-11-21T23:44:03.121Z", "execution_duration": "0.001s", "state": "OK",
        "trace_metadata": {"mlflow.trace_schema.version": "3"}, "tags": {"mlflow.traceName": "agent", "mlflow.user": "forged"}}}});
    let req = Request::post("/api/3.0/mlflow/traces")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(info.to_string()))
        .unwrap();
    let (status, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tags = &body["trace"]["trace_info"]["tags"];
    assert_eq!(tags["mlflow.trace.spansLocation"], "TRACKING_STORE");
    assert!(tags.get("mlflow.user").is_none(), "server-owned tags are not taken from clients");
    assert_eq!(body["trace"]["trace_info"]["trace_metadata"]["mlflow.trace.infoFinalized"], "true");
    // the spans arrive afterwards and join the trace
    assert_eq!(call(&app, otlp(sample_request(), "application/x-protobuf", None)).await.0, StatusCode::OK);
    let (_, body) = call(
        &app,
        Request::get("/api/3.0/mlflow/traces/get?trace_id=tr-0af7651916cd43dd8448eb211c80319c")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(body["trace"]["spans"].as_array().unwrap().len(), 2);
    assert_eq!(
        body["trace"]["trace_info"]["request_time"], "2026-11-21T23:44:03.121Z",
        "the info's timing wins"
    );
}
