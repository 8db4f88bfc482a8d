//! A small instrumented program whose traces go wherever the environment says: the tests run
//! it unchanged against tracelake and MLflow servers and OTLP endpoints, switching only
//! environment variables (`MLFLOW_TRACKING_URI`, `OTEL_EXPORTER_OTLP_*`, ...). With the direct
//! lake writer installed, `MLFLOW_TRACING_DESTINATION=<catalog>.<schema>` and
//! `TRACELAKE_LAKE_ROOT` send them straight to a lake, with no server in between.
//!
//! `TRACELAKE_APP_TRACES` (default 3) requests are answered, `TRACELAKE_APP_PAUSE_MS` apart.
//! At the end it shuts the tracer down and prints its export statistics as one JSON line. A
//! bad tracing configuration ends it with exit code 2 and the error on stderr.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a program that reports to its caller")]

use std::time::Duration;

use tracelake::{SpanType, trace};

#[derive(Debug, thiserror::Error)]
#[error("the tool refused: {0}")]
struct ToolError(String);

#[trace(span_type = SpanType::Retriever)]
fn retrieve(query: &str, k: usize) -> Vec<String> {
    (0..k).map(|i| format!("document {i} about {query}")).collect()
}

#[trace(span_type = SpanType::Tool)]
fn calculator(expression: &str) -> Result<i64, ToolError> {
    let (a, b) = expression.split_once('+').ok_or_else(|| ToolError(expression.to_owned()))?;
    let parse = |s: &str| s.trim().parse::<i64>().map_err(|_| ToolError(s.to_owned()));
    Ok(parse(a)? + parse(b)?)
}

#[trace(span_type = SpanType::ChatModel, attributes(model = "tiny-model"))]
async fn chat(messages: serde_json::Value) -> serde_json::Value {
    tokio::task::yield_now().await;
    let asked = messages[1]["content"].as_str().unwrap_or_default().to_owned();
    serde_json::json!({"role": "assistant", "content": format!("an answer to {asked}")})
}

#[trace(name = "answer", span_type = SpanType::Chain)]
async fn answer(question: String, n: usize) -> String {
    let docs = retrieve(&question, 2);
    let sum = calculator(&format!("{n} + 1"));
    let refused = calculator("not a sum").is_err();
    let reply = chat(serde_json::json!([
        {"role": "system", "content": docs.join("; ")},
        {"role": "user", "content": question},
    ]))
    .await;
    format!("{} (sum {:?}, refused {refused})", reply["content"].as_str().unwrap_or_default(), sum.ok())
}

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    tracelake_lake::install();
    if let Err(e) = tracelake::init() {
        eprintln!("tracing configuration error: {e}");
        std::process::exit(2);
    }
    let traces = number("TRACELAKE_APP_TRACES", 3) as usize;
    let pause = Duration::from_millis(number("TRACELAKE_APP_PAUSE_MS", 0));
    for i in 0..traces {
        answer(format!("question {i}"), i).await;
        tokio::time::sleep(pause).await;
    }
    let shutdown = tokio::task::spawn_blocking(tracelake::shutdown).await.expect("shutdown");
    let stats = tracelake::export_stats();
    println!(
        "{}",
        serde_json::json!({
            "shutdown": shutdown.as_ref().map_err(ToString::to_string).err(),
            "exported_traces": stats.exported_traces,
            "dropped_traces": stats.dropped_traces,
            "dropped_spans": stats.dropped_spans,
        })
    );
}
