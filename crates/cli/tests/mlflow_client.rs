//! The stock MLflow Python client (`mlflow==3.17.2`, from the virtualenv `scripts/setup-python`
//! makes) against a real `tracelake server` process: `tests/python/server_e2e.py` checks every
//! answer, with async and with sync trace logging.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap().to_path_buf()
}

fn python() -> PathBuf {
    let path =
        std::env::var_os("TRACELAKE_PYTHON").map_or_else(|| repo().join(".venv/bin/python"), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-python (or set TRACELAKE_PYTHON)",
        path.display()
    );
    path
}

struct Server {
    child: Child,
    port: u16,
    grpc_port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    /// The stock `mlflow server` 3.17.2 from the virtualenv, for the differential test.
    fn start_mlflow() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mlflow = python().with_file_name("mlflow");
        let child = Command::new(mlflow)
            .arg("server")
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.path().join("mlflow.db").display()))
            .arg("--default-artifact-root")
            .arg(dir.path().join("artifacts"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mlflow server");
        let server = Server { child, port, grpc_port: 0, _dir: dir };
        server.wait_until_up(Duration::from_secs(180));
        server
    }

    fn wait_until_up(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.get("/version").is_none() {
            assert!(Instant::now() < deadline, "the server did not answer within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `tracelake server` on a SQLite file of its own.
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tracelake.db").display().to_string();
        Server::start_on(dir, &db)
    }

    /// `tracelake server` on a new database of the PostgreSQL server `TRACELAKE_TEST_POSTGRES_URI`
    /// names (`scripts/test` starts one); the server creates the database.
    fn start_on_postgres() -> Server {
        let server = std::env::var("TRACELAKE_TEST_POSTGRES_URI")
            .expect("TRACELAKE_TEST_POSTGRES_URI must name a PostgreSQL server (scripts/test starts one)");
        let base = server.rsplit_once('/').map_or(server.as_str(), |(base, _)| base);
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let uri = format!("{base}/tracelake_e2e_{}_{stamp}", std::process::id());
        Server::start_on(tempfile::tempdir().unwrap(), &uri)
    }

    fn start_on(dir: tempfile::TempDir, backend_store_uri: &str) -> Server {
        let port = free_port();
        let grpc_port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_tracelake"))
            .args(["server", "--port", &port.to_string(), "--grpc-port", &grpc_port.to_string()])
            .args(["--backend-store-uri", backend_store_uri])
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tracelake server");
        let server = Server { child, port, grpc_port, _dir: dir };
        server.wait_until_up(Duration::from_secs(30));
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM to the server's own pid (never a group): `mlflow server` then stops the
        // processes it started. Escalate to SIGKILL if it has not exited in 30 s.
        let _ = Command::new("kill").args(["-s", "TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
