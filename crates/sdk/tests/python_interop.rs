//! Traces move between tracelake and the stock MLflow Python package (`mlflow==3.17.2`, in the
//! virtualenv `scripts/setup-python` makes) without loss, in both directions.
//!
//! `TRACELAKE_BLESS=1` also refreshes `crates/model/tests/golden/mlflow-3.17.2.jsonl` from
//! what the MLflow package writes now.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use tracelake::export::FileExporter;
use tracelake::{Client, SpanEnd, SpanType, Trace, TracerProvider, trace};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap().to_path_buf()
}

/// The venv's Python; its absence is a setup error, not a reason to skip.
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

fn interop(args: &[&Path]) -> String {
    let out = Command::new(python())
        .arg(repo().join("tests/python/interop.py"))
        .args(args)
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .output()
        .expect("run interop.py");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "interop.py {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[derive(Debug, thiserror::Error)]
#[error("tool failed: {0}")]
struct ToolError(String);

#[trace(span_type = SpanType::Retriever)]
fn retrieve(query: &str) -> Vec<Value> {
    vec![json!({"id": "d1", "text": format!("about {query}"), "score": 0.75})]
}

#[trace(span_type = SpanType::Tool, attributes(version = 2))]
fn lookup(key: &str) -> Result<String, ToolError> {
    Err(ToolError(format!("no entry for {key}")))
}

#[trace(name = "agent", span_type = SpanType::Agent)]
fn agent(question: &str) -> String {
    let trace = tracelake::current_trace().unwrap();
    trace.set_tag("env", "test");
    trace.set_metadata("app.version", "1.0");
    trace.set_session_id("session-1");
    trace.set_user("ann");
    trace.set_client_request_id("req-7");
    let docs = retrieve(question);
    let _ = lookup("cache");
    let llm =
        tracelake::span("chat").span_type(SpanType::ChatModel).kind(tracelake::SpanKind::Client).start();
    llm.set_inputs(&json!({"messages": [{"role": "user", "content": question}]}));
    llm.set_attribute(
        "mlflow.chat.tokenUsage",
        &json!({"input_tokens": 12, "output_tokens": 3, "total_tokens": 15}),
    );
    llm.add_event("first_token", [("latency_ms", json!(12.5)), ("cached", json!(false))]);
    llm.add_link(tracelake::Link {
        trace_id: "tr-0123456789abcdef0123456789abcdef".into(),
        span_id: "0123456789abcdef".into(),
        attributes: None,
    });
    llm.set_outputs(&json!({"choices": [{"message": {"role": "assistant", "content": "héllo 世界"}}]}));
    drop(llm);
    format!("{} docs", docs.len())
}

#[test]
fn traces_written_by_tracelake_load_in_mlflow_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracelake.jsonl");
    let provider = TracerProvider::builder().with_exporter(FileExporter::create(&path).unwrap()).build();
    tracelake::set_tracer_provider(provider.clone());

    agent("what is tracing?");
    {
        let s = tracelake::span("custom").span_type("MY_TYPE").start();
        s.record_exception("panic", "boom", Some("at main.rs:1"));
    }
    let client = Client::new();
    let root = client.start_trace(tracelake::span("client-root").inputs(&[1, 2, 3])).unwrap();
    let trace_id = root.trace_id().unwrap().to_owned();
    client.start_span(tracelake::span("left-open"), &trace_id, root.span_id().unwrap()).unwrap();
    client.end_trace(&trace_id, SpanEnd::new().outputs(&Value::Null)).unwrap();
    provider.shutdown().unwrap();

    let out = interop(&[Path::new("check-tracelake"), &path]);
    assert!(out.contains("checked 3 traces"), "{out}");
    // and MLflow writes them back exactly as tracelake wrote them
    let back = dir.path().join("back.jsonl");
    interop(&[Path::new("roundtrip"), &path, &back]);
    let ours: Vec<Value> = lines(&path);
    let theirs: Vec<Value> = lines(&back);
    assert_eq!(ours, theirs);
}

#[test]
fn the_tracelake_golden_file_loads_in_mlflow_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let golden = repo().join("crates/model/tests/golden/tracelake-trace.json");
    let compact = dir.path().join("golden.jsonl");
    let value: Value = serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
    std::fs::write(&compact, format!("{value}\n")).unwrap();
    let out = interop(&[Path::new("check-tracelake"), &compact]);
    assert!(out.contains("checked 1 traces"), "{out}");
}

#[test]
fn traces_written_by_mlflow_load_in_tracelake_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlflow.jsonl");
    interop(&[Path::new("write-mlflow"), &path]);
    let originals = lines(&path);
    assert!(originals.len() >= 3, "MLflow wrote {} traces", originals.len());
    for (i, original) in originals.iter().enumerate() {
        let trace = Trace::from_dict(original).unwrap_or_else(|e| panic!("trace {i}: {e}"));
        assert_eq!(&serde_json::to_value(&trace).unwrap(), original, "trace {i} changed on the way through");
        let root = trace.root_span().expect("a root span");
        assert_eq!(root.request_id().as_deref(), Some(trace.info.trace_id.as_str()));
    }
    let types: Vec<String> = originals
        .iter()
        .flat_map(|t| Trace::from_dict(t).unwrap().spans)
        .map(|s| s.span_type().to_string())
        .collect();
    for expected in ["TOOL", "LLM", "CHAT_MODEL", "RETRIEVER"] {
        assert!(types.iter().any(|t| t == expected), "no {expected} span among {types:?}");
    }
    if std::env::var_os("TRACELAKE_BLESS").is_some() {
        std::fs::copy(&path, repo().join("crates/model/tests/golden/mlflow-3.17.2.jsonl")).unwrap();
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}
