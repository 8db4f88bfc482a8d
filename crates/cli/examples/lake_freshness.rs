//! Ingest-to-queryable latency of the lake: posts one ten-span trace at a time to a lake schema
//! (OTLP/HTTP, `x-tracelake-table-name`), then asks the SQL endpoint for it until all its spans
//! are counted; reports the time from sending to seeing, as percentiles. Run it beside
//! `ingest_load --table ...` to measure under load. Bounded (`--traces`, default 200).
//!
//! ```text
//! cargo run --release -p tracelake-cli --example lake_freshness -- \
//!     --url http://127.0.0.1:5000 --table main.bench --traces 200
//! ```
#![allow(clippy::print_stdout, reason = "a command-line tool reporting its measurements")]

#[path = "support/flags.rs"]
mod flags;
#[path = "support/http.rs"]
mod http;

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Map, Value, json};
use tracelake_model::{Attributes, Span, SpanId, SpanKind, SpanStatus, TraceId};

fn main() -> anyhow::Result<()> {
    let (mut url, mut table, mut traces) =
        ("http://127.0.0.1:5000".to_owned(), "main.bench".to_owned(), 200usize);
    for (flag, value) in flags::pairs()? {
        match flag.as_str() {
            "--url" => url = value,
            "--table" => table = value,
            "--traces" => traces = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    let header = format!("{table}.mlflow_experiment_trace_otel_spans");
    let mut conn = http::Connection::open(&url)?;
    let mut latencies = Vec::with_capacity(traces);
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
    for n in 0..traces as u64 {
        let trace_id = TraceId::new((u128::from(run) << 32) | u128::from(n + 1)).expect("non-zero");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
        let spans: Vec<Span> = (1..=10u64)
            .map(|k| Span {
                trace_id,
                span_id: SpanId::new(k).expect("non-zero"),
                parent_id: (k > 1).then(|| SpanId::new(1).expect("non-zero")),
                name: format!("step-{k}").into(),
                kind: SpanKind::Internal,
                start_time_unix_nano: now,
                end_time_unix_nano: Some(now + 1_000),
                status: SpanStatus::ok(),
                attributes: Attributes::new(),
                events: vec![],
                links: vec![],
            })
            .collect();
        let body = tracelake_otlp::encode_protobuf(&tracelake_otlp::request_from_spans(
            &spans,
            &Map::new(),
            "fresh",
            "1",
        ));
        let sent = Instant::now();
        let (status, answer) = conn.request(
            "POST",
            "/v1/traces",
            &[("Content-Type", "application/x-protobuf"), ("x-tracelake-table-name", &header)],
            &body,
        )?;
        if status != 200 {
            bail!("ingest answered {status}: {}", String::from_utf8_lossy(&answer));
        }
        let query = json!({ "query": format!(
            "SELECT count(*) AS n FROM {table}.mlflow_experiment_trace_otel_spans WHERE trace_id = '{trace_id}'"
        )});
        loop {
            let (status, answer) = conn.request(
                "POST",
                "/api/2.0/tracelake/sql",
                &[("Content-Type", "application/json")],
                &serde_json::to_vec(&query)?,
            )?;
            if status != 200 {
                bail!("SQL answered {status}: {}", String::from_utf8_lossy(&answer));
            }
            let rows: Value = serde_json::from_slice(&answer)?;
            if rows[0]["n"].as_u64() == Some(10) {
                break;
            }
            if sent.elapsed() > Duration::from_secs(60) {
                bail!("trace {trace_id} not queryable after 60 s");
            }
        }
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let ms = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3
    };
    println!(
        "{}",
        json!({"traces": traces, "ingest_to_queryable_ms": {"p50": ms(0.5), "p95": ms(0.95), "p99": ms(0.99), "max": ms(1.0)}})
    );
    Ok(())
}
