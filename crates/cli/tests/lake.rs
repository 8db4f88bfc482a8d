//! The lake behind a real `tracelake server`: written by the OpenTelemetry Python exporters and
//! the stock MLflow client, read by polars and duckdb (`tests/python/lake_interop.py`), on a
//! local directory and on S3-compatible storage (`moto_server`); the SDK writing straight to
//! S3; `tracelake sql`; a `kill -9` during ingest; damaged tables.

mod support;

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{Server, app_stats, free_port, poll, post_to, python, repo, run_app_in};
use tracelake_model::TraceId;
use tracelake_store::conformance::span;

const SPANS: &str = "mlflow_experiment_trace_otel_spans";
const LOGS: &str = "mlflow_experiment_trace_otel_logs";
const METRICS: &str = "mlflow_experiment_trace_otel_metrics";
const TABLE_HEADER: &str = "x-tracelake-table-name";

fn run_interop(server: &Server, lake_root: &str, env: &[(&str, &str)]) {
    let out = Command::new(python())
        .arg(repo().join("tests/python/lake_interop.py"))
        .arg(server.url())
        .arg(format!("127.0.0.1:{}", server.grpc_port))
        .arg(lake_root)
        .current_dir(repo().join("tests/python"))
        .envs(env.iter().copied())
        .output()
        .expect("run lake_interop.py");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("ok: "), "lake_interop.py failed:\n{stdout}\n{stderr}");
}

#[test]
fn outside_engines_read_what_otlp_and_mlflow_clients_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake").display().to_string();
    let server = Server::start_with_lake(&lake, &[]);
    run_interop(&server, &lake, &[]);
}

/// `moto_server` from the virtualenv, with one bucket.
struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    endpoint: String,
}

impl Moto {
    fn start(bucket: &str) -> Moto {
        let port = free_port();
        let child = Command::new(python().with_file_name("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = Command::new(python())
            .args(["-c", &format!("import boto3; boto3.client('s3').create_bucket(Bucket='{bucket}')")])
            .envs(moto.env())
            .status()
            .expect("create the bucket");
        assert!(status.success(), "creating bucket {bucket} failed");
        moto
    }

    /// The `AWS_*` variables that reach it.
    fn env(&self) -> [(&str, &str); 5] {
        [
            ("AWS_ENDPOINT_URL", &self.endpoint),
            ("AWS_ACCESS_KEY_ID", "tracelake"),
            ("AWS_SECRET_ACCESS_KEY", "tracelake"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-s", "TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

#[test]
fn the_lake_works_the_same_on_s3_compatible_storage() {
    let moto = Moto::start("traces");
    let env = moto.env();
    let server = Server::start_with_lake("s3://traces/lake", &env);
    run_interop(&server, "s3://traces/lake", &env);
}

/// The SDK's lake destination, chosen only by environment, writes straight to S3-compatible
/// storage with no server in between; a server opened on that lake afterwards serves the
/// traces through SQL and the MLflow REST API.
#[test]
fn the_sdk_writes_straight_to_a_lake_on_s3() {
    let moto = Moto::start("direct");
    let env = moto.env();
    let workdir = tempfile::tempdir().unwrap();
    let vars = [
        ("MLFLOW_TRACING_DESTINATION", "main.direct"),
        ("TRACELAKE_LAKE_ROOT", "s3://direct/lake"),
        ("OTEL_SERVICE_NAME", "direct-app"),
        ("TRACELAKE_APP_TRACES", "4"),
    ];
    let vars: Vec<(&str, &str)> = env.iter().copied().chain(vars).collect();
    let stats = app_stats(&run_app_in(workdir.path(), &vars));
    assert_eq!(stats["exported_traces"], 4, "{stats}");
    assert_eq!(stats["dropped_traces"], 0, "{stats}");
    // straight to S3: no local store was made on the way
    assert_eq!(std::fs::read_dir(workdir.path()).unwrap().count(), 0, "the example wrote locally");

    let server = Server::start_with_lake("s3://direct/lake", &env);
    let rows = sql(
        &server,
        &format!(
            "SELECT trace_id, service_name, count(*) AS spans, \
             count(*) FILTER (WHERE status.code = 'STATUS_CODE_ERROR') AS errors \
             FROM main.direct.{SPANS} GROUP BY 1, 2 ORDER BY 1"
        ),
    );
    let rows = rows.as_array().unwrap_or_else(|| panic!("{rows}"));
    assert_eq!(rows.len(), 4, "{rows:?}");
    for row in rows {
        assert_eq!(row["service_name"], "direct-app", "{row}");
        // answer, retrieve, two calculator calls (one refused) and chat
        assert_eq!((row["spans"].as_u64(), row["errors"].as_u64()), (Some(5), Some(1)), "{row}");
    }
    let hex = rows[0]["trace_id"].as_str().unwrap();
    let id = TraceId::from_hex(hex).unwrap().to_mlflow_v4("main.direct");
    let got = server.get_trace(&id);
    assert!(got.contains("200 OK"), "{got}");
    for name in ["answer", "retrieve", "calculator", "chat"] {
        assert!(got.contains(&format!("\"name\":\"{name}\"")), "span {name} missing: {got}");
    }
}

/// Upkeep on S3: a server appending one commit per request writes checkpoints to the bucket,
/// its maintenance merges the small data files and vacuums the replaced ones there, and a
/// restarted server reads every trace back from what is left.
#[test]
fn an_s3_lake_is_checkpointed_compacted_and_vacuumed_without_loss() {
    let moto = Moto::start("upkeep");
    let env = moto.env();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tracelake.db").display().to_string();
    let (port, grpc) = (free_port(), free_port());
    let flags =
        ["--lake-root", "s3://upkeep/lake", "--lake-maintenance-secs", "1", "--lake-retention-hours", "0"];
    let start = || Server::start_with(None, &db, port, grpc, &flags, &env);
    let table = format!("lake/main/upkeep/{SPANS}/");
    // (data files, checkpoints) of the spans table, from one listing: two listings could
    // straddle a commit and disagree
    let files = || -> (usize, usize) {
        let script = format!(
            "import boto3\n\
             pages = boto3.client('s3').get_paginator('list_objects_v2').paginate(Bucket='upkeep', Prefix='{table}')\n\
             keys = [o['Key'] for p in pages for o in p.get('Contents', [])]\n\
             checkpoints = sum(1 for k in keys if k.endswith('.checkpoint.parquet'))\n\
             print(sum(1 for k in keys if k.endswith('.parquet')) - checkpoints, checkpoints)"
        );
        let out = Command::new(python()).args(["-c", &script]).envs(env.iter().copied()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let counts: Vec<usize> =
            String::from_utf8_lossy(&out.stdout).split_whitespace().map(|n| n.parse().unwrap()).collect();
        (counts[0], counts[1])
    };

    let mut server = start();
    let traces: Vec<TraceId> = (1..=30u128).map(|n| TraceId::new(0x5300 + n).unwrap()).collect();
    for t in &traces {
        // one request at a time: one commit each
        assert_eq!(send_to(port, "main.upkeep", &[*t], "upkeep-app"), Some(200));
    }
    assert!(files().1 >= 1, "no checkpoint after 30 commits");
    // 30 small files are fewer than compaction waits for under load; the pass after the
    // appends stop merges them (a debug build on S3 can take a while)
    let left = poll(Duration::from_secs(150), || files().0, |n| *n <= 1);
    assert_eq!(left, 1, "the 30 small files were not merged and vacuumed");
    let count = |server: &Server| {
        let rows = sql(
            server,
            &format!("SELECT count(*) AS spans, count(DISTINCT trace_id) AS traces FROM main.upkeep.{SPANS}"),
        );
        (rows[0]["spans"].as_u64(), rows[0]["traces"].as_u64())
    };
    assert_eq!(count(&server), (Some(300), Some(30)));
    server.stop();

    let server = start();
    assert_eq!(count(&server), (Some(300), Some(30)));
    let got = server.get_trace(&traces[7].to_mlflow_v4("main.upkeep"));
    assert!(got.contains("200 OK") && got.contains("step-10"), "{got}");
}

/// A running server reads what another process commits to its lake: a schema the SDK makes
/// while the server runs, and later traces in it, show up in SQL and in GetTrace without a
/// restart (within a second or so; this polls).
#[test]
fn a_running_server_sees_what_the_sdk_writes_to_its_lake() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake").display().to_string();
    let server = Server::start_with_lake(&lake, &[]);
    let vars = [
        ("MLFLOW_TRACING_DESTINATION", "main.beside"),
        ("TRACELAKE_LAKE_ROOT", lake.as_str()),
        ("TRACELAKE_APP_TRACES", "3"),
    ];
    let trace_ids = |server: &Server| -> Vec<String> {
        let query = format!("SELECT DISTINCT trace_id FROM main.beside.{SPANS} ORDER BY 1");
        let body = serde_json::json!({ "query": query }).to_string();
        let answer = server.post_json("/api/2.0/tracelake/sql", &body).unwrap_or_default();
        match serde_json::from_str::<serde_json::Value>(answer.trim()) {
            Ok(serde_json::Value::Array(rows)) => {
                rows.iter().map(|r| r["trace_id"].as_str().unwrap().to_owned()).collect()
            }
            _ => Vec::new(), // the schema is not there yet
        }
    };
    let wait_for = |n: usize| poll(Duration::from_secs(30), || trace_ids(&server), |ids| ids.len() >= n);
    let get = |hex: &str| server.get_trace(&TraceId::from_hex(hex).unwrap().to_mlflow_v4("main.beside"));

    let stats = app_stats(&run_app_in(dir.path(), &vars));
    assert_eq!(stats["exported_traces"], 3, "{stats}");
    let first = wait_for(3);
    assert_eq!(first.len(), 3, "the server does not see the new schema: {first:?}");
    let got = get(&first[0]);
    assert!(got.contains("200 OK") && got.contains("\"name\":\"answer\""), "{got}");

    // the schema is open in the server now; more traces land in it from outside
    let stats = app_stats(&run_app_in(dir.path(), &vars));
    assert_eq!(stats["exported_traces"], 3, "{stats}");
    let all = wait_for(6);
    assert_eq!(all.len(), 6, "the server does not see the new commits: {all:?}");
    let new = all.iter().find(|id| !first.contains(id)).unwrap();
    let got = get(new);
    assert!(got.contains("200 OK") && got.contains("\"name\":\"retrieve\""), "{got}");
    let missing = get(&"ab".repeat(16));
    assert!(missing.contains("404"), "{missing}");
}

/// An experiment linked to a lake schema takes OTLP logs, metrics and traces by the
/// experiment header; unlinked, its traces go back to the tracking store (those written while
/// linked stay readable) and logs and metrics are refused with a 400 that says why.
#[test]
fn a_linked_experiment_routes_logs_metrics_and_traces_until_unlinked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_lake(&dir.path().join("lake").display().to_string(), &[]);
    let port = server.port;
    let id = server.create_experiment("observed");
    let by_experiment = [("x-mlflow-experiment-id", id.as_str())];
    let post = |path: &str, content_type: &str, body: &[u8]| {
        post_to(port, path, content_type, &by_experiment, body).expect("the server answers")
    };
    let log = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "observed-app"}}]},
        "scopeLogs": [{"scope": {"name": "app"}, "logRecords": [{
            "timeUnixNano": "1700000000000000000", "severityText": "INFO", "body": {"stringValue": "hello"}
        }]}]
    }]})
    .to_string();
    let metric = serde_json::json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "observed-app"}}]},
        "scopeMetrics": [{"scope": {"name": "app"}, "metrics": [{"name": "tokens", "sum": {
            "dataPoints": [{"asInt": "5", "timeUnixNano": "1700000000000000000"}],
            "aggregationTemporality": 2, "isMonotonic": true
        }}]}]
    }]})
    .to_string();
    let count = |table: &str| {
        let rows = sql(&server, &format!("SELECT count(*) AS n FROM main.observed.{table}"));
        rows[0]["n"].as_u64().unwrap_or_else(|| panic!("{rows}"))
    };

    // not linked yet: logs have nowhere to go
    let (status, body) = post("/v1/logs", "application/json", log.as_bytes());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not linked to a lake schema"), "{body}");

    let link = serde_json::json!({"experiment_id": id, "uc_schema": {"catalog_name": "main", "schema_name": "observed"}});
    let (status, body) = post(
        &format!("/api/4.0/mlflow/traces/{id}/link-location"),
        "application/json",
        link.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    for (path, body) in [("/v1/logs", &log), ("/v1/metrics", &metric)] {
        let (status, answer) = post(path, "application/json", body.as_bytes());
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let linked_trace = TraceId::new(0xabc1).unwrap();
    let (status, body) =
        post("/v1/traces", "application/x-protobuf", &otlp_request(&[linked_trace], "observed-app"));
    assert_eq!(status, 200, "{body}");
    assert_eq!((count(LOGS), count(METRICS), count(SPANS)), (1, 1, 10));

    let (status, body) =
        post(&format!("/api/4.0/mlflow/traces/{id}/unlink-location"), "application/json", b"{}");
    assert_eq!(status, 200, "{body}");
    let (status, body) = post("/v1/metrics", "application/json", metric.as_bytes());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not linked to a lake schema"), "{body}");
    let later_trace = TraceId::new(0xabc2).unwrap();
    let (status, body) =
        post("/v1/traces", "application/x-protobuf", &otlp_request(&[later_trace], "observed-app"));
    assert_eq!(status, 200, "{body}");
    assert_eq!((count(LOGS), count(METRICS), count(SPANS)), (1, 1, 10), "nothing more went to the lake");
    for trace in [linked_trace, later_trace] {
        let got = server.get_trace(&trace.to_mlflow_v3());
        assert!(got.contains("200 OK") && got.contains("step-10"), "{got}");
    }
}

/// A lake beside a PostgreSQL tracking store, shared by two servers: a link one server makes
/// applies to the other within a second and outlives a restart; the experiment's traces from
/// before the link (in the tracking store) and after it (in the lake) are searched and deleted
/// together.
#[test]
fn two_servers_on_postgresql_and_a_lake_share_experiment_links() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake").display().to_string();
    let uri = support::postgres_uri();
    let (port_a, grpc_a, port_b) = (free_port(), free_port(), free_port());
    let flags = ["--lake-root", lake.as_str()];
    let start_a = || Server::start_with(None, &uri, port_a, grpc_a, &flags, &[]);
    let mut a = start_a();
    let _b = Server::start_with(None, &uri, port_b, free_port(), &flags, &[]);
    let id = a.create_experiment("teams");
    let to_experiment = [("x-mlflow-experiment-id", id.as_str())];
    let send = |port: u16, n: u128| {
        let body = otlp_request(&[TraceId::new(n).unwrap()], "team-app");
        let answer = post_to(port, "/v1/traces", "application/x-protobuf", &to_experiment, &body);
        assert_eq!(answer.as_ref().map(|a| a.0), Some(200), "{answer:?}");
    };
    let search = |server: &Server| -> Vec<String> {
        let query = serde_json::json!({"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": id}}]});
        let answer = server.post_json("/api/3.0/mlflow/traces/search", &query.to_string()).unwrap();
        let found: serde_json::Value = serde_json::from_str(&answer).unwrap();
        let mut ids: Vec<String> = found["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let v3 = |n: u128| TraceId::new(n).unwrap().to_mlflow_v3();
    let lake_traces = |server: &Server| {
        let rows = sql(server, &format!("SELECT count(DISTINCT trace_id) AS n FROM main.teams.{SPANS}"));
        rows[0]["n"].as_u64().unwrap_or_else(|| panic!("{rows}"))
    };

    send(port_b, 0x7ea1); // before the link: the tracking store
    let link = serde_json::json!({"experiment_id": id, "uc_schema": {"catalog_name": "main", "schema_name": "teams"}});
    let path = format!("/api/4.0/mlflow/traces/{id}/link-location");
    let (status, body) =
        post_to(port_a, &path, "application/json", &[], link.to_string().as_bytes()).unwrap();
    assert_eq!(status, 200, "{body}");
    std::thread::sleep(Duration::from_millis(1500)); // b reads links again after a second
    send(port_b, 0x7ea2); // through the other server, to the lake
    let in_lake = poll(Duration::from_secs(20), || lake_traces(&a), |n| *n >= 1);
    assert_eq!(in_lake, 1, "server b did not follow the link server a made");
    assert_eq!(search(&a), [v3(0x7ea1), v3(0x7ea2)]);

    a.stop();
    let a = start_a();
    send(port_a, 0x7ea3);
    assert_eq!(lake_traces(&a), 2, "the link did not outlive the restart");
    assert_eq!(search(&a), [v3(0x7ea1), v3(0x7ea2), v3(0x7ea3)]);

    // one id in each store
    let delete = serde_json::json!({"experiment_id": id, "request_ids": [v3(0x7ea1), v3(0x7ea3)]});
    let answer = a.post_json("/api/3.0/mlflow/traces/delete-traces", &delete.to_string()).unwrap();
    assert!(answer.contains("\"traces_deleted\":2"), "{answer}");
    assert_eq!(search(&a), [v3(0x7ea2)]);
    let delete = serde_json::json!({"experiment_id": id, "max_timestamp_millis": i64::MAX, "max_traces": 5});
    let answer = a.post_json("/api/3.0/mlflow/traces/delete-traces", &delete.to_string()).unwrap();
    assert!(answer.contains("\"traces_deleted\":1"), "{answer}");
    assert!(search(&a).is_empty());
}

/// An OTLP/protobuf request of `traces` ten-span traces from service `service`.
fn otlp_request(traces: &[TraceId], service: &str) -> Vec<u8> {
    let spans: Vec<_> = traces
        .iter()
        .flat_map(|&t| {
            (1..=10u64).map(move |i| span(t, i, (i > 1).then_some(1), &format!("step-{i}"), 1000 + i, 2000))
        })
        .collect();
    let resource = [("service.name".to_owned(), serde_json::Value::from(service))].into_iter().collect();
    tracelake_otlp::encode_protobuf(&tracelake_otlp::request_from_spans(&spans, &resource, "lake-test", "1"))
}

fn send_to(port: u16, table: &str, traces: &[TraceId], service: &str) -> Option<u16> {
    let header = format!("{table}.{SPANS}");
    let body = otlp_request(traces, service);
    post_to(port, "/v1/traces", "application/x-protobuf", &[(TABLE_HEADER, &header)], &body)
        .map(|(status, _)| status)
}

fn sql(server: &Server, query: &str) -> serde_json::Value {
    let body = serde_json::json!({ "query": query }).to_string();
    let answer = server.post_json("/api/2.0/tracelake/sql", &body).expect("SQL request");
    serde_json::from_str(answer.trim()).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

#[test]
fn requests_committed_together_keep_their_own_resource() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake").display().to_string();
    let server = Server::start_with_lake(&lake, &[]);
    let port = server.port;
    // Eight senders at once: while one group commit is written the others queue and are
    // merged into the next, each request with its own resource.
    let senders: Vec<_> = (0..8u128)
        .map(|sender| {
            std::thread::spawn(move || {
                for request in 0..10u128 {
                    let first = (sender << 32) + request * 3 + 1;
                    let traces: Vec<TraceId> = (first..first + 3).map(|n| TraceId::new(n).unwrap()).collect();
                    let status = send_to(port, "main.origins", &traces, &format!("service-{sender}"));
                    assert_eq!(status, Some(200), "sender {sender} request {request}");
                }
            })
        })
        .collect();
    senders.into_iter().for_each(|s| s.join().unwrap());

    let rows = sql(
        &server,
        &format!(
            "SELECT trace_id, service_name, resource.attributes['service.name'] AS resource_service, \
             instrumentation_scope.name AS scope, count(*) AS spans \
             FROM main.origins.{SPANS} GROUP BY 1, 2, 3, 4"
        ),
    );
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 8 * 10 * 3, "one group per trace: {rows:?}");
    for row in rows {
        let trace = u128::from_str_radix(row["trace_id"].as_str().unwrap(), 16).unwrap();
        let service = format!("service-{}", trace >> 32);
        assert_eq!(row["service_name"], service.as_str(), "{row}");
        // attribute values are kept as JSON
        assert_eq!(row["resource_service"], serde_json::to_string(&service).unwrap(), "{row}");
        assert_eq!(row["scope"], "lake-test", "{row}");
        assert_eq!(row["spans"], 10, "{row}");
    }
}

#[test]
fn every_acknowledged_span_survives_kill_9_during_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tracelake.db").display().to_string();
    let lake = dir.path().join("lake").display().to_string();
    let (port, grpc) = (free_port(), free_port());
    let lake_flag = ["--lake-root", lake.as_str()];
    let mut server = Server::start_with(None, &db, port, grpc, &lake_flag, &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(1));
    let acked: Vec<_> = (0..4)
        .map(|_| {
            let (stop, next) = (stop.clone(), next.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let first = next.fetch_add(5, Ordering::Relaxed);
                    let traces: Vec<TraceId> =
                        (first..first + 5).map(|n| TraceId::new(n as u128 + (7 << 64)).unwrap()).collect();
                    match send_to(port, "main.crash", &traces, "crash-test") {
                        Some(200) => acked.extend(traces),
                        Some(_) => {}
                        None => break,
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    server.kill();
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<TraceId> = acked.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(acked.len() >= 10, "some requests were acknowledged before the kill ({})", acked.len());

    let server = Server::start_with(None, &db, port, grpc, &lake_flag, &[]);
    let rows = sql(
        &server,
        &format!(
            "SELECT trace_id, count(DISTINCT span_id) AS spans FROM main.crash.{SPANS} GROUP BY trace_id"
        ),
    );
    let stored: HashMap<String, u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["trace_id"].as_str().unwrap().to_owned(), r["spans"].as_u64().unwrap()))
        .collect();
    let missing: Vec<String> =
        acked.iter().map(|t| t.to_string()).filter(|t| stored.get(t) != Some(&10)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged traces lost or partial: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    // and they read back through the REST API
    let got = server.get_trace(&acked[0].to_mlflow_v4("main.crash"));
    assert!(got.contains("200 OK") && got.contains("step-10"), "{got}");
}

fn tracelake_sql(lake: &str, format: &str, query: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracelake"))
        .args(["sql", "--lake-root", lake, "--format", format, query])
        .output()
        .expect("run tracelake sql")
}

fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out
}

#[test]
fn tracelake_sql_reads_the_lake_and_names_damage_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake").display().to_string();
    let mut server = Server::start_with_lake(&lake, &[]);
    let traces: Vec<TraceId> = (1..=2).map(|n| TraceId::new(n).unwrap()).collect();
    assert_eq!(send_to(server.port, "main.cli", &traces, "crash-test"), Some(200));
    let stopped = server.stop();
    assert!(stopped.is_some_and(|s| s.success()), "the server did not exit on SIGTERM: {stopped:?}");

    let out = tracelake_sql(&lake, "csv", &format!("SELECT count(*) AS n FROM main.cli.{SPANS}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n20\n");
    let out = tracelake_sql(
        &lake,
        "table",
        &format!("SELECT name FROM main.cli.{SPANS} WHERE span_id = '0000000000000001' ORDER BY trace_id"),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| step-1 |") && table.lines().count() == 6, "{table}");

    let out = tracelake_sql(&lake, "table", "SELECT name FROM t WHERE )");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Line: 1, Column: 26"), "{err}");

    // a data file gone: the query names it; nothing panics
    let table_dir = dir.path().join("lake/main/cli").join(SPANS);
    let files = parquet_files(&table_dir);
    let gone =
        files.iter().find(|f| std::fs::metadata(f).unwrap().len() > 1000).expect("a data file").clone();
    std::fs::remove_file(&gone).unwrap();
    let out = tracelake_sql(&lake, "json", &format!("SELECT * FROM main.cli.{SPANS}"));
    let err = String::from_utf8_lossy(&out.stderr);
    let name = gone.file_name().unwrap().to_string_lossy();
    assert!(!out.status.success() && err.contains(name.as_ref()) && !err.contains("panicked"), "{err}");

    // a damaged commit: opening the lake names the table; neither the CLI nor the server panics
    let log = table_dir.join("_delta_log/00000000000000000001.json");
    std::fs::write(&log, b"{ this is not a delta log").unwrap();
    let out = tracelake_sql(&lake, "json", "SELECT 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("main.cli.{SPANS}")) && !err.contains("panicked"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tracelake"))
        .args(["server", "--port", &free_port().to_string(), "--grpc-port", "0", "--lake-root", &lake])
        .args(["--backend-store-uri", &dir.path().join("t.db").display().to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("main.cli.{SPANS}")) && !err.contains("panicked"),
        "{err}"
    );
}
