//! The stock MLflow Python client (`mlflow==3.17.2`, from the virtualenv `scripts/setup-python`
//! makes) against a real `tracelake server` process: `tests/python/server_e2e.py` checks every
//! answer, with async and with sync trace logging.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(env!("CARGO_BIN_EXE_tracelake"))
            .args(["server", "--port", &port.to_string(), "--backend-store-uri"])
            .arg(dir.path().join("tracelake.db"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tracelake server");
        let server = Server { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.get("/version").is_none() {
            assert!(Instant::now() < deadline, "the server did not answer within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_client(server: &Server, extra: &[&str]) {
    let out = Command::new(python())
        .arg(repo().join("tests/python/server_e2e.py"))
        .arg(server.url())
        .args(extra)
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .output()
        .expect("run server_e2e.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok:"),
        "the MLflow client saw a difference ({}):\n{stdout}\n{}",
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
