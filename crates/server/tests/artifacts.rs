//! MLflow's artifact proxy over a SQLite store: files kept byte for byte, a trace's
//! `traces.json` ingested as spans, and read back from the store for traces that came over OTLP.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;
use tracelake_model::TraceId;
use tracelake_server::{AppState, IngestService, Limits, router};
use tracelake_store::TraceStore;
use tracelake_store_sql::SqliteStore;

/// The app over a fresh SQLite store, with its artifacts directory.
struct Server {
    app: Router,
    artifacts: TempDir,
    _db: TempDir,
}

async fn server() -> Server {
    let db = tempfile::tempdir().unwrap();
    let artifacts = tempfile::tempdir().unwrap();
    let store: Arc<dyn TraceStore> = Arc::new(SqliteStore::open(db.path().join("t.db")).await.unwrap());
    let (ingest, _worker) = IngestService::start(store.clone(), 64, 1000);
    let state = AppState {
        store,
        lake: None,
        ingest,
        limits: Limits::default(),
        artifacts_destination: artifacts.path().into(),
    };
    Server { app: router(state), artifacts, _db: db }
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Option<String>, Bytes) {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned());
    (status, content_type, to_bytes(response.into_body(), usize::MAX).await.unwrap())
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

fn put(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::put(format!("/api/2.0/mlflow-artifacts/artifacts/{path}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(body.into())
        .unwrap()
}

fn get(uri: impl AsRef<str>) -> Request<Body> {
    Request::get(uri.as_ref()).body(Body::empty()).unwrap()
}

const TRACE: &str = "tr-2c9c1439f6ff91719ee3f6f65afc925f";

/// Two spans of [`TRACE`] as the MLflow client uploads them: its stored span form, with
/// attribute values JSON-encoded.
const TRACES_JSON: &str = r#"{"spans": [{"trace_id": "LJwUOfb/kXGe4/b2WvySXw==", "span_id": "whTdlv4LA5o=", "parent_span_id": null, "name": "f", "start_time_unix_nano": 1795308623857235160, "end_time_unix_nano": 1795308623857971061, "events": [], "status": {"code": "STATUS_CODE_OK", "message": ""}, "attributes": {"mlflow.traceRequestId": "\"tr-2c9c1439f6ff91719ee3f6f65afc925f\"", "mlflow.spanType": "\"UNKNOWN\"", "mlflow.spanFunctionName": "\"f\"", "mlflow.spanInputs": "{\"x\": 6}", "mlflow.spanOutputs": "12"}, "links": []}, {"trace_id": "LJwUOfb/kXGe4/b2WvySXw==", "span_id": "WmWg2NTMIN8=", "parent_span_id": "whTdlv4LA5o=", "name": "g", "start_time_unix_nano": 1795308623857300000, "end_time_unix_nano": 1795308623857900000, "events": [], "status": {"code": "STATUS_CODE_OK", "message": ""}, "attributes": {"mlflow.traceRequestId": "\"tr-2c9c1439f6ff91719ee3f6f65afc925f\"", "mlflow.spanType": "\"TOOL\"", "mlflow.spanInputs": "{\"y\": 6}", "mlflow.spanOutputs": "12"}, "links": []}]}"#;

#[tokio::test]
async fn an_uploaded_traces_json_is_kept_byte_for_byte_and_its_spans_join_the_store() {
    let s = server().await;
    let path = format!("0/traces/{TRACE}/artifacts/traces.json");
    let (status, _, body) = call(&s.app, put(&path, "an older upload")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body2) = call(&s.app, put(&path, TRACES_JSON)).await;
    assert_eq!(status, StatusCode::OK, "a second upload replaces the file");
    assert_eq!((json(&body), json(&body2)), (serde_json::json!({}), serde_json::json!({})));

    for prefix in ["/api", "/ajax-api"] {
        let (status, content_type, body) =
            call(&s.app, get(format!("{prefix}/2.0/mlflow-artifacts/artifacts/{path}"))).await;
        assert_eq!(status, StatusCode::OK, "{prefix}");
        assert_eq!(content_type.as_deref(), Some("application/json"));
        assert_eq!(body, TRACES_JSON.as_bytes(), "{prefix}: the bytes as uploaded");
    }
    // on disk where `mlflow server --artifacts-destination` keeps it, with no temporary files left
    let dir = s.artifacts.path().join(format!("0/traces/{TRACE}/artifacts"));
    assert_eq!(std::fs::read(dir.join("traces.json")).unwrap(), TRACES_JSON.as_bytes());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    let (status, _, body) = call(&s.app, get(format!("/api/3.0/mlflow/traces/get?trace_id={TRACE}"))).await;
    let body = json(&body);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["trace"]["trace_info"]["trace_location"]["mlflow_experiment"]["experiment_id"], "0");
    let spans = body["trace"]["spans"].as_array().unwrap();
    let mut names: Vec<(&str, &str)> =
        spans.iter().map(|s| (s["name"].as_str().unwrap(), s["span_id"].as_str().unwrap())).collect();
    names.sort();
    assert_eq!(names, [("f", "whTdlv4LA5o="), ("g", "WmWg2NTMIN8=")]);
    let child = spans.iter().find(|s| s["name"] == "g").unwrap();
    assert_eq!(child["parent_span_id"], "whTdlv4LA5o=");
}

#[tokio::test]
async fn a_traces_json_that_is_not_span_json_is_kept_as_a_file_only() {
    let s = server().await;
    let trace = "tr-0000000000000000000000000000abcd";
    let path = format!("0/traces/{trace}/artifacts/traces.json");
    let (status, _, _) = call(&s.app, put(&path, "not spans")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = call(&s.app, get(format!("/api/2.0/mlflow-artifacts/artifacts/{path}"))).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"not spans"[..]));
    let (status, _, _) = call(&s.app, get(format!("/api/3.0/mlflow/traces/get?trace_id={trace}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn artifact_paths_that_leave_the_destination_get_400_naming_the_path() {
    let s = server().await;
    for path in ["0/../../escape.txt", "0/%2E%2E/escape.txt", "0//x.txt", "%2Fetc%2Fpasswd"] {
        let (status, _, body) = call(&s.app, put(path, "x")).await;
        let body = json(&body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE");
        assert!(body["message"].as_str().unwrap().starts_with("invalid artifact path \""), "{body}");
        let (status, _, _) = call(&s.app, get(format!("/api/2.0/mlflow-artifacts/artifacts/{path}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "GET {path}");
    }
    let (_, _, body) = call(&s.app, put("0/../escape.txt", "x")).await;
    assert_eq!(
        json(&body)["message"],
        "invalid artifact path \"0/../escape.txt\": it may not contain '.' or '..' segments"
    );
    assert!(!s.artifacts.path().parent().unwrap().join("escape.txt").exists());
}

#[tokio::test]
async fn a_missing_artifact_is_404_resource_does_not_exist() {
    let s = server().await;
    for path in ["0/models/m/model.pkl", &format!("0/traces/{TRACE}/artifacts/traces.json")] {
        let (status, _, body) =
            call(&s.app, get(format!("/ajax-api/2.0/mlflow-artifacts/artifacts/{path}"))).await;
        let body = json(&body);
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error_code"], "RESOURCE_DOES_NOT_EXIST");
        assert!(body["message"].as_str().unwrap().contains(path), "{body}");
    }
}

#[tokio::test]
async fn the_traces_json_of_a_trace_sent_over_otlp_is_read_from_the_store() {
    let s = server().await;
    let t = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
    let root = tracelake_store::conformance::span(t, 1, None, "agent", 1000, 1100);
    let child = tracelake_store::conformance::span(t, 2, Some(1), "tool", 1010, 1020);
    let request = tracelake_otlp::request_from_spans(&[root, child], &Default::default(), "test", "1");
    let otlp = Request::post("/v1/traces")
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header("x-mlflow-experiment-id", "0")
        .body(Body::from(tracelake_otlp::encode_protobuf(&request)))
        .unwrap();
    assert_eq!(call(&s.app, otlp).await.0, StatusCode::OK);

    let path = format!("0/traces/{}/artifacts/traces.json", t.to_mlflow_v3());
    let (status, content_type, body) =
        call(&s.app, get(format!("/api/2.0/mlflow-artifacts/artifacts/{path}"))).await;
    let body = json(&body);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let spans = body["spans"].as_array().unwrap();
    let mut names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["agent", "tool"]);
    // MLflow's stored span form: base64 ids, attribute values JSON-encoded
    let root = spans.iter().find(|s| s["name"] == "agent").unwrap();
    assert_eq!(root["trace_id"], "CvdlGRbNQ92ESOshHIAxnA==");
    assert_eq!(root["attributes"]["mlflow.spanType"], "\"UNKNOWN\"");
    // a client reading it as MLflow does gets the spans back
    let file: Vec<tracelake_model::Span> = serde_json::from_value(body["spans"].clone()).unwrap();
    assert!(file.iter().all(|span| span.trace_id == t));

    // not under another experiment
    let other =
        format!("/api/2.0/mlflow-artifacts/artifacts/1/traces/{}/artifacts/traces.json", t.to_mlflow_v3());
    assert_eq!(call(&s.app, get(other)).await.0, StatusCode::NOT_FOUND);
}
