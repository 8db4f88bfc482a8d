//! The SDK's destinations against real servers: `tracelake server` processes, the stock
//! `mlflow server` 3.17.2, and the stock MLflow Python client reading the traces back.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Server, app_stats as stats, free_port, python, repo};
use tracelake::{Destination, FutureExt as _, OtlpProtocol, OtlpSettings, SpanType};

/// Runs the instrumented example in a fresh directory with exactly these tracing variables.
fn run_app(vars: &[(&str, &str)]) -> Output {
    support::run_app_in(tempfile::tempdir().unwrap().path(), vars)
}

/// Every trace of the named experiments, read through the MLflow client, without ids and times.
fn read_back(server: &Server, experiments: &[&str]) -> BTreeMap<String, Value> {
    let out = Command::new(python())
        .arg(repo().join("tests/python/read_traces.py"))
        .arg(server.url())
        .args(experiments)
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .output()
        .expect("run read_traces.py");
    assert!(out.status.success(), "read_traces.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("read_traces.py prints JSON")
}

#[test]
fn the_same_program_reads_back_the_same_by_every_route() {
    let tracelake = Server::start();
    let mlflow = Server::start_mlflow();
    let grpc = format!("http://127.0.0.1:{}", tracelake.grpc_port);

    let mut runs: Vec<(&str, &Server, String)> = Vec::new();
    // The MLflow REST route: experiment by name, created by the exporter.
    for (server, label) in [(&tracelake, "tracelake REST"), (&mlflow, "mlflow REST")] {
        let st =
            stats(&run_app(&[("MLFLOW_TRACKING_URI", &server.url()), ("MLFLOW_EXPERIMENT_NAME", "by-rest")]));
        assert_eq!(st["dropped_traces"], 0, "{label}: {st}");
        runs.push((label, server, "by-rest".into()));
    }
    // OTLP routes, to experiments made beforehand and named in the standard headers variable.
    let otlp_routes: [(&Server, &str, String, &str); 4] = [
        (&tracelake, "grpc", grpc.clone(), "by-grpc"),
        (&tracelake, "http/protobuf", format!("{}/v1/traces", tracelake.url()), "by-http-protobuf"),
        (&tracelake, "http/json", format!("{}/v1/traces", tracelake.url()), "by-http-json"),
        (&mlflow, "http/protobuf", format!("{}/v1/traces", mlflow.url()), "by-otlp-http"),
    ];
    for (server, protocol, endpoint, experiment) in &otlp_routes {
        let id = server.create_experiment(experiment);
        let headers = format!("x-mlflow-experiment-id={id}");
        let st = stats(&run_app(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", protocol),
            ("OTEL_EXPORTER_OTLP_HEADERS", &headers),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", if *protocol == "grpc" { "gzip" } else { "none" }),
            ("OTEL_SERVICE_NAME", "instrumented-app"),
            // Set, and replaced by OTLP: nothing may arrive there.
            ("MLFLOW_TRACKING_URI", &server.url()),
            ("MLFLOW_EXPERIMENT_NAME", "replaced-by-otlp"),
        ]));
        assert_eq!(st["dropped_traces"], 0, "{protocol} to {endpoint}: {st}");
        runs.push((protocol, server, experiment.to_string()));
    }

    let expected = read_back(&tracelake, &["by-rest"]).remove("by-rest").unwrap();
    let traces = expected.as_array().unwrap();
    assert_eq!(traces.len(), 3, "{expected:#}");
    for trace in traces {
        assert_eq!(trace["name"], "answer");
        assert_eq!(trace["spans"].as_array().unwrap().len(), 5, "{trace:#}");
    }
    let chat = traces[0]["spans"].as_array().unwrap().iter().find(|s| s["name"] == "chat").unwrap();
    assert_eq!(chat["type"], "CHAT_MODEL");
    assert_eq!(chat["outputs"]["role"], "assistant");
    for (label, server, experiment) in &runs {
        let got = read_back(server, &[experiment]).remove(experiment.as_str()).unwrap();
        assert_eq!(got, expected, "{label} into {experiment} on {} differs", server.url());
    }
    for server in [&tracelake, &mlflow] {
        let replaced = read_back(server, &["replaced-by-otlp"]).remove("replaced-by-otlp").unwrap();
        assert_eq!(replaced, Value::Array(vec![]), "OTLP must replace the MLflow destination");
    }
}

/// With `MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT=true` the OTLP endpoint is added to the MLflow
/// destination instead of replacing it: both servers get every trace, the same.
#[test]
fn dual_export_sends_every_trace_to_both_destinations() {
    let mlflow_route = Server::start();
    let otlp_route = Server::start();
    let id = otlp_route.create_experiment("dual-otlp");
    let st = stats(&run_app(&[
        ("MLFLOW_TRACKING_URI", &mlflow_route.url()),
        ("MLFLOW_EXPERIMENT_NAME", "dual-mlflow"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &format!("http://127.0.0.1:{}", otlp_route.grpc_port)),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_HEADERS", &format!("x-mlflow-experiment-id={id}")),
        ("MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT", "true"),
    ]));
    assert_eq!(st["dropped_traces"], 0, "{st}");
    let by_mlflow = read_back(&mlflow_route, &["dual-mlflow"]).remove("dual-mlflow").unwrap();
    let by_otlp = read_back(&otlp_route, &["dual-otlp"]).remove("dual-otlp").unwrap();
    assert_eq!(by_mlflow.as_array().map(Vec::len), Some(3), "{by_mlflow:#}");
    assert_eq!(by_otlp, by_mlflow, "the two destinations hold different traces");
}

#[test]
fn a_server_that_keeps_no_spans_gets_them_as_trace_artifacts() {
    let tracelake = Server::start();
    let file_store = Server::start_mlflow_file_store();
    for server in [&tracelake, &file_store] {
        let st = stats(&run_app(&[
            ("MLFLOW_TRACKING_URI", &server.url()),
            ("MLFLOW_EXPERIMENT_NAME", "artifacts"),
        ]));
        assert_eq!(st["dropped_traces"], 0, "{}: {st}", server.url());
    }
    let expected = read_back(&tracelake, &["artifacts"]).remove("artifacts").unwrap();
    assert_eq!(expected.as_array().unwrap().len(), 3);
    let got = read_back(&file_store, &["artifacts"]).remove("artifacts").unwrap();
    assert_eq!(got, expected, "the file store's traces (spans from traces.json) differ");
}

#[test]
fn a_thousand_tasks_and_sixteen_threads_keep_their_own_experiments() {
    let server = Server::start();
    let url = server.url();
    tracelake::set_tracer_provider(tracelake::TracerProvider::builder().build());

    /// One request of one tenant: a root and nine children, across `.await`s and a task.
    #[tracelake::trace(span_type = SpanType::Chain)]
    async fn request(tenant: String) {
        tracelake::current_span().expect("inside the traced function").set_attribute("tenant", &tenant);
        for step in 0..8 {
            let _child = tracelake::span(format!("step-{step}")).start();
            tokio::task::yield_now().await;
        }
        tokio::spawn(async { drop(tracelake::span("spawned").start()) }.in_current_context()).await.unwrap();
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let tenant = format!("task-tenant-{i}");
            let dest = Destination::experiment_name(tenant.clone()).at(&url);
            runtime.spawn(dest.scope(request(tenant)))
        })
        .collect();
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let tenant = format!("thread-tenant-{i}");
                let _dest = Destination::experiment_name(tenant.clone()).at(&url).enter();
                let root = tracelake::span("request").span_type(SpanType::Chain).start();
                root.set_attribute("tenant", &tenant);
                root.set_inputs(&serde_json::json!({"tenant": tenant}));
                for step in 0..9 {
                    let _child = tracelake::span(format!("step-{step}")).start();
                }
            })
        })
        .collect();
    runtime.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    threads.into_iter().for_each(|t| t.join().unwrap());
    tracelake::shutdown().expect("every trace delivered");
    let stats = tracelake::export_stats();
    assert_eq!((stats.exported_traces, stats.dropped_traces), (1016, 0), "{stats:?}");

    let tenants: Vec<String> = (0..1000)
        .map(|i| format!("task-tenant-{i}"))
        .chain((0..16).map(|i| format!("thread-tenant-{i}")))
        .collect();
    let names: Vec<&str> = tenants.iter().map(String::as_str).collect();
    let read = read_back(&server, &names);
    for tenant in &tenants {
        let traces = read[tenant].as_array().unwrap_or_else(|| panic!("no experiment {tenant}"));
        assert_eq!(traces.len(), 1, "{tenant} holds {} traces", traces.len());
        let spans = traces[0]["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 10, "{tenant}: {spans:#?}");
        let root = spans.iter().find(|s| s["parent"].is_null()).unwrap();
        assert_eq!(root["attributes"]["tenant"], tenant.as_str(), "{tenant} got another tenant's trace");
    }
}

/// One trace of 3,000 spans of 2 KB (6 MB in one request, above gRPC's customary 4 MiB message
/// limit) arrives whole over OTLP/gRPC as over HTTP.
#[test]
fn a_trace_of_many_megabytes_arrives_over_grpc_and_http() {
    let server = Server::start();
    let experiment = server.create_experiment("big-traces");
    tracelake::set_tracer_provider(tracelake::TracerProvider::builder().build());
    let routes = [
        (OtlpProtocol::Grpc, format!("http://127.0.0.1:{}", server.grpc_port)),
        (OtlpProtocol::HttpProtobuf, format!("{}/v1/traces", server.url())),
    ];
    let payload = "x".repeat(2048);
    let mut ids = Vec::new();
    for (protocol, endpoint) in routes {
        let settings =
            OtlpSettings::new(endpoint, protocol).with_header("x-mlflow-experiment-id", &experiment);
        let _dest = Destination::otlp(settings).enter();
        let root = tracelake::span("big").start();
        for _ in 0..3000 {
            tracelake::span("part").start().set_attribute("payload", &payload);
        }
        ids.push(root.trace_id().expect("a trace id").to_owned());
    }
    tracelake::shutdown().expect("every trace delivered");
    let stats = tracelake::export_stats();
    assert_eq!((stats.exported_traces, stats.dropped_traces), (2, 0), "{stats:?}");
    for id in ids {
        let got = server.get_trace(&id);
        assert!(got.contains("200 OK"), "{}", &got[..got.len().min(500)]);
        assert_eq!(got.matches("\"name\":\"part\"").count(), 3000, "trace {id}");
    }
}

#[test]
fn a_server_restarted_mid_run_gets_every_trace() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tracelake.db").display().to_string();
    let (port, grpc_port) = (free_port(), free_port());
    let mut server = Server::start_at(None, &db, port, grpc_port);
    let url = server.url();

    let app = std::thread::spawn(move || {
        run_app(&[
            ("MLFLOW_TRACKING_URI", &url),
            ("MLFLOW_EXPERIMENT_NAME", "restarts"),
            ("TRACELAKE_APP_TRACES", "40"),
            ("TRACELAKE_APP_PAUSE_MS", "100"),
            // Export each trace as it ends, so many go out while the server is away.
            ("MLFLOW_ASYNC_TRACE_LOGGING_MAX_INTERVAL_MILLIS", "10"),
        ])
    });
    std::thread::sleep(Duration::from_millis(1200));
    let stopped = server.stop();
    // SIGTERM stops it cleanly (everything accepted written), not the SIGKILL after 30 s.
    assert!(stopped.is_some_and(|s| s.success()), "the server did not exit on SIGTERM: {stopped:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let server = Server::start_at(None, &db, port, grpc_port);
    let st = stats(&app.join().unwrap());
    assert_eq!((st["exported_traces"].as_u64(), st["dropped_traces"].as_u64()), (Some(40), Some(0)), "{st}");
    let read = read_back(&server, &["restarts"]);
    assert_eq!(read["restarts"].as_array().unwrap().len(), 40);
}

#[test]
fn a_server_that_never_returns_costs_the_program_only_its_budget() {
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = run_app(&[
        ("MLFLOW_TRACKING_URI", &nobody),
        ("TRACELAKE_APP_TRACES", "5"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "2000"),
    ]);
    let took = started.elapsed();
    let st = stats(&out);
    assert_eq!((st["dropped_traces"].as_u64(), st["dropped_spans"].as_u64()), (Some(5), Some(25)), "{st}");
    // A functional bound, far above the 2 s budget: without one the program would retry for
    // the whole 500 s retry window.
    assert!(took < Duration::from_secs(60), "the program took {took:?}");
}

#[test]
fn bad_configuration_fails_at_start_naming_the_variable_and_the_value() {
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
            ],
            "OTEL_EXPORTER_OTLP_PROTOCOL=\"carrier-pigeon\"",
        ),
        (
            &[("MLFLOW_TRACING_DESTINATION", "too.many.parts")],
            "MLFLOW_TRACING_DESTINATION=\"too.many.parts\"",
        ),
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"),
            ],
            "OTEL_EXPORTER_OTLP_HEADERS=\"no-equals-sign\"",
        ),
        (&[("MLFLOW_TRACKING_URI", "gopher://127.0.0.1/")], "MLFLOW_TRACKING_URI=\"gopher://127.0.0.1/\""),
        (
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "127.0.0.1:4317")],
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=\"127.0.0.1:4317\"",
        ),
    ];
    for (vars, expected) in cases {
        let out = run_app(vars);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{vars:?} should be refused; stderr: {stderr}");
        assert!(stderr.contains(expected), "{vars:?}: {stderr}");
    }
}

#[test]
fn the_same_program_sends_to_a_lake_schema_through_the_server() {
    let lake = tempfile::tempdir().unwrap();
    let server = Server::start_with_lake(&lake.path().display().to_string(), &[]);
    let st = stats(&run_app(&[
        ("MLFLOW_TRACKING_URI", &server.url()),
        ("MLFLOW_TRACING_DESTINATION", "main.sdk"),
        ("TRACELAKE_APP_TRACES", "4"),
    ]));
    assert_eq!((st["exported_traces"].as_u64(), st["dropped_traces"].as_u64()), (Some(4), Some(0)), "{st}");
    let query = serde_json::json!({
        "query": "SELECT trace_id, count(*) AS spans, max(service_name) AS service \
                  FROM main.sdk.mlflow_experiment_trace_otel_spans GROUP BY trace_id ORDER BY trace_id"
    });
    let answer = server.post_json("/api/2.0/tracelake/sql", &query.to_string()).unwrap();
    let rows: Value = serde_json::from_str(answer.trim()).unwrap_or_else(|e| panic!("{e}: {answer}"));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4, "{answer}");
    // each trace reads back through the REST API under its lake id
    for row in rows {
        assert!(row["spans"].as_u64().unwrap() >= 3, "{row}");
        let id = format!("trace:%2Fmain.sdk%2F{}", row["trace_id"].as_str().unwrap());
        let got = server.get(&format!("/api/3.0/mlflow/traces/{id}")).unwrap();
        assert!(got.contains("200 OK") && got.contains("\"state\":\"OK\""), "{got}");
    }
}
