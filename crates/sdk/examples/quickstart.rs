//! A small retrieval-augmented "agent", traced with tracelake, exported to a JSON-lines file.
//!
//! `cargo run -p tracelake --example quickstart [-- traces.jsonl]`
//!
//! Each line of the file is an MLflow trace (`Trace.to_dict()`), readable by
//! `tracelake_model::Trace::from_json` or by MLflow's `Trace.from_dict`.

#![allow(clippy::print_stdout, reason = "an example reports what it did")]

use std::time::Duration;

use serde_json::json;
use tracelake::export::FileExporter;
use tracelake::{FutureExt, SpanType, TracerProvider, trace};

#[derive(Debug, thiserror::Error)]
#[error("no documents match {0:?}")]
struct NotFound(String);

#[trace(span_type = SpanType::Retriever)]
async fn retrieve(query: &str, k: usize) -> Result<Vec<String>, NotFound> {
    tokio::time::sleep(Duration::from_millis(3)).await;
    if query.contains("unknown") {
        return Err(NotFound(query.to_owned()));
    }
    Ok((1..=k).map(|i| format!("doc-{i} about {query}")).collect())
}

#[trace(span_type = SpanType::ChatModel, attributes(model = "demo-llm-1"))]
async fn complete(messages: serde_json::Value) -> serde_json::Value {
    tokio::time::sleep(Duration::from_millis(5)).await;
    if let Some(span) = tracelake::current_span() {
        span.set_attribute(
            "mlflow.chat.tokenUsage",
            &json!({"input_tokens": 42, "output_tokens": 7, "total_tokens": 49}),
        );
    }
    json!({"choices": [{"message": {"role": "assistant", "content": "Tracing records every step."}}]})
}

#[trace(name = "agent", span_type = SpanType::Agent)]
async fn answer(session: &str, question: &str) -> Result<String, NotFound> {
    if let Some(trace) = tracelake::current_trace() {
        trace.set_session_id(session);
        trace.set_tag("app", "quickstart");
    }
    let docs = retrieve(question, 3).await?;
    // tools run concurrently, each in a task that keeps the agent span as parent
    let checks: Vec<_> = docs
        .iter()
        .cloned()
        .map(|doc| {
            tokio::spawn(
                async move {
                    let tool = tracelake::span("check_source").span_type(SpanType::Tool).start();
                    tool.set_inputs(&json!({"doc": doc}));
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    tool.set_outputs(&true);
                }
                .in_current_context(),
            )
        })
        .collect();
    for check in checks {
        check.await.expect("tool task");
    }
    let prompt = json!({"messages": [{"role": "system", "content": docs.join("\n")}, {"role": "user", "content": question}]});
    let reply = complete(prompt).await;
    Ok(reply["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "traces.jsonl".to_owned());
    let provider = TracerProvider::builder().with_exporter(FileExporter::create(&path)?).build();
    tracelake::set_tracer_provider(provider.clone());

    for (session, question) in [("s-1", "what is tracing?"), ("s-1", "why trace?"), ("s-2", "unknown topic")]
    {
        match answer(session, question).await {
            Ok(reply) => println!("{question} -> {reply}"),
            Err(err) => println!("{question} -> error: {err}"),
        }
    }
    provider.shutdown()?;
    let stats = provider.stats();
    println!(
        "wrote {} traces ({} spans) to {path}; dropped {}",
        stats.exported_traces, stats.exported_spans, stats.dropped_traces
    );
    Ok(())
}
