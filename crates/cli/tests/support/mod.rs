//! Shared by the tests that run real servers: `tracelake server` processes, the stock
//! `mlflow server` and the Python virtualenv that `scripts/setup-python` makes.
#![allow(dead_code, unreachable_pub)]

pub mod webdriver;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap().to_path_buf()
}

pub fn python() -> PathBuf {
    let path =
        std::env::var_os("TRACELAKE_PYTHON").map_or_else(|| repo().join(".venv/bin/python"), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-python (or set TRACELAKE_PYTHON)",
        path.display()
    );
    path
}

/// The example program `name` of this crate, as `cargo build --workspace --examples` leaves it
/// (`<target>/<profile>/examples/<name>`; `scripts/test` builds them before the tests). The
/// `<name>-<hash>` files beside it are not used: `cargo test --all-targets` (and nextest) builds
/// examples as test harnesses there, which run no `main`. Built here only when missing.
pub fn example(name: &str) -> PathBuf {
    // Tests run from <target>/<profile>/deps; examples sit beside deps.
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--workspace", "--examples"])
            .current_dir(repo())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the examples failed");
    }
    assert!(path.exists(), "example {name} is missing: run cargo build --workspace --examples");
    path
}

/// Runs the instrumented example (`examples/instrumented_app.rs`) in `dir` with exactly these
/// tracing variables: the test's own `MLFLOW_*`, `OTEL_*` and `TRACELAKE_*` are cleared.
pub fn run_app_in(dir: &Path, vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(example("instrumented_app"));
    for (name, _) in std::env::vars() {
        if name.starts_with("MLFLOW_") || name.starts_with("OTEL_") || name.starts_with("TRACELAKE_") {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(dir).envs(vars.iter().copied()).output().expect("run the instrumented example")
}

/// The example's closing statistics line; the test fails when the example did.
pub fn app_stats(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the example failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

pub struct Server {
    child: Child,
    pub port: u16,
    pub grpc_port: u16,
    _dir: Option<tempfile::TempDir>,
}

/// A new database (the server creates it) on the PostgreSQL server
/// `TRACELAKE_TEST_POSTGRES_URI` names (`scripts/test` starts one).
pub fn postgres_uri() -> String {
    let server = std::env::var("TRACELAKE_TEST_POSTGRES_URI")
        .expect("TRACELAKE_TEST_POSTGRES_URI must name a PostgreSQL server (scripts/test starts one)");
    let base = server.rsplit_once('/').map_or(server.as_str(), |(base, _)| base);
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{base}/tracelake_e2e_{}_{stamp}", std::process::id())
}

/// Calls `probe` until `done` holds for its answer or `limit` has passed; returns the last
/// answer (for the caller to assert on).
pub fn poll<T>(limit: Duration, mut probe: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let answer = probe();
        if done(&answer) || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    /// The stock `mlflow server` 3.17.2 from the virtualenv, for the differential test.
    pub fn start_mlflow() -> Server {
        Server::start_mlflow_on(|dir| format!("sqlite:///{}", dir.join("mlflow.db").display()), true)
    }

    /// The stock `mlflow server` on its file store (`./mlruns`), which takes no spans over OTLP
    /// (501): clients send them as `traces.json` artifacts, here through the server's artifact
    /// proxy (`mlflow-artifacts:/`), the default when no artifact root is given.
    pub fn start_mlflow_file_store() -> Server {
        Server::start_mlflow_on(|dir| format!("file://{}", dir.join("mlruns").display()), false)
    }

    fn start_mlflow_on(backend_store_uri: impl Fn(&Path) -> String, local_artifacts: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mlflow = python().with_file_name("mlflow");
        let child = Command::new(mlflow)
            .arg("server")
            .arg("--backend-store-uri")
            .arg(backend_store_uri(dir.path()))
            .args(if local_artifacts {
                vec!["--default-artifact-root".to_owned(), dir.path().join("artifacts").display().to_string()]
            } else {
                vec![]
            })
            // a proxied artifact root (./mlartifacts) lands in the server's own directory
            .current_dir(dir.path())
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            // the file store refuses to start without it since MLflow 3.7
            .env("MLFLOW_ALLOW_FILE_STORE", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mlflow server");
        let server = Server { child, port, grpc_port: 0, _dir: Some(dir) };
        server.wait_until_up(Duration::from_secs(180));
        server
    }

    pub fn wait_until_up(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.get("/version").is_none() {
            assert!(Instant::now() < deadline, "the server did not answer within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `tracelake server` on a SQLite file of its own.
    pub fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tracelake.db").display().to_string();
        Server::start_on(Some(dir), &db)
    }

    /// `tracelake server` on a new database of the PostgreSQL server `TRACELAKE_TEST_POSTGRES_URI`
    /// names (`scripts/test` starts one); the server creates the database.
    pub fn start_on_postgres() -> Server {
        Server::start_on(None, &postgres_uri())
    }

    pub fn start_on(dir: Option<tempfile::TempDir>, backend_store_uri: &str) -> Server {
        Server::start_at(dir, backend_store_uri, free_port(), free_port())
    }

    /// `tracelake server` on given ports (to restart one where it was).
    pub fn start_at(
        dir: Option<tempfile::TempDir>,
        backend_store_uri: &str,
        port: u16,
        grpc_port: u16,
    ) -> Server {
        Server::start_with(dir, backend_store_uri, port, grpc_port, &[], &[])
    }

    /// `tracelake server` with a lake at `lake_root` beside its SQLite store (in a directory of
    /// its own).
    pub fn start_with_lake(lake_root: &str, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tracelake.db").display().to_string();
        Server::start_with(Some(dir), &db, free_port(), free_port(), &["--lake-root", lake_root], env)
    }

    /// `tracelake server` with `extra` flags and environment variables.
    pub fn start_with(
        dir: Option<tempfile::TempDir>,
        backend_store_uri: &str,
        port: u16,
        grpc_port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_tracelake"))
            .args(["server", "--port", &port.to_string(), "--grpc-port", &grpc_port.to_string()])
            .args(["--backend-store-uri", backend_store_uri])
            .args(extra)
            .envs(env.iter().copied())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tracelake server");
        let server = Server { child, port, grpc_port, _dir: dir };
        server.wait_until_up(Duration::from_secs(30));
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// POSTs JSON and returns the answer's body (`None` when the request failed).
    pub fn post_json(&self, path: &str, body: &str) -> Option<String> {
        self.post(path, "application/json", &[], body.as_bytes()).map(|(_, body)| body)
    }

    /// POSTs `body` with extra headers; returns the status and body (`None` when the request
    /// failed on the way).
    pub fn post(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Option<(u16, String)> {
        post_to(self.port, path, content_type, headers, body)
    }

    /// Kills the server at once (SIGKILL): nothing is flushed, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Creates an experiment and returns its id.
    pub fn create_experiment(&self, name: &str) -> String {
        let body = self
            .post_json("/api/2.0/mlflow/experiments/create", &format!("{{\"name\": {name:?}}}"))
            .expect("create experiment");
        let value: serde_json::Value =
            serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
        value["experiment_id"].as_str().unwrap_or_else(|| panic!("no experiment id in {body}")).to_owned()
    }

    pub fn get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// The whole HTTP answer to GetTrace of `trace_id` (any form, `trace:/...` included).
    pub fn get_trace(&self, trace_id: &str) -> String {
        let id = trace_id.replace('/', "%2F");
        self.get(&format!("/api/3.0/mlflow/traces/get?trace_id={id}")).expect("the server answers")
    }
}

impl Server {
    /// Stops the server: SIGTERM, then SIGKILL after 30 s. Returns how it exited when it stopped
    /// by itself (`None` when it was already gone or had to be killed).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return None;
        }
        // SIGTERM to the server's own pid (never a group): `mlflow server` then stops the
        // processes it started. Escalate to SIGKILL if it has not exited in 30 s.
        let _ = Command::new("kill").args(["-s", "TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// POSTs `body` with extra headers to the server on `port`; returns the status and body
/// (`None` when the request failed on the way).
pub fn post_to(
    port: u16,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;

    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}
