//! The stock MLflow Python client (`mlflow==3.17.2`, from the virtualenv `scripts/setup-python`
//! makes) against a real `tracelake server` process: `tests/python/server_e2e.py` checks every
//! answer, with async and with sync trace logging.

mod support;

use std::process::Command;

use support::{Server, python, repo};

fn run_client(server: &Server, extra: &[&str]) {
    run_script(server, "server_e2e.py", extra);
}

fn run_script(server: &Server, script: &str, extra: &[&str]) {
    let out = Command::new(python())
        .arg(repo().join("tests/python").join(script))
        .arg(server.url())
        .args(extra)
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok:"),
        "{script} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_stock_mlflow_client_works_against_the_server_with_async_logging() {
    let server = Server::start();
    let version = server.get("/version").unwrap();
    assert!(version.ends_with("3.17.2"), "{version}");
    run_client(&server, &[]);
}

#[test]
fn the_stock_mlflow_client_works_against_the_server_with_sync_logging() {
    let server = Server::start();
    run_client(&server, &["--sync"]);
}

/// The differential half: the same script, unchanged, passes against the stock `mlflow server`
/// 3.17.2, so the two servers give the client the same answers.
#[test]
fn the_same_client_checks_pass_against_the_stock_mlflow_server() {
    let server = Server::start_mlflow();
    run_client(&server, &[]);
    run_client(&server, &["--sync"]);
}

/// Spans sent by the stock OpenTelemetry Python exporters, over http/protobuf and over gRPC,
/// arrive whole in their experiments and read back through the MLflow client.
#[test]
fn opentelemetry_exporters_send_over_http_and_grpc() {
    let server = Server::start();
    let grpc = format!("127.0.0.1:{}", server.grpc_port);
    run_script(&server, "otel_export.py", &[&grpc]);
}

/// The same client checks and OpenTelemetry exporters against a server on PostgreSQL.
#[test]
fn the_stock_clients_work_against_a_server_on_postgresql() {
    let server = Server::start_on_postgres();
    run_client(&server, &[]);
    let grpc = format!("127.0.0.1:{}", server.grpc_port);
    run_script(&server, "otel_export.py", &[&grpc]);
}
