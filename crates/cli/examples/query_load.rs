//! Load harness for reads: times `search_traces` (SearchTracesV3) with a filter, or `get_trace`
//! (GetTrace) of one trace, one request after another on a keep-alive connection; reports latency
//! percentiles and what the first answer held.
//!
//! ```text
//! cargo run --release -p tracelake-cli --example query_load -- --url http://127.0.0.1:5000 \
//!     --experiment 0 --filter "tags.\`mlflow.traceName\` = 'trace-7'" --requests 200
//! cargo run --release -p tracelake-cli --example query_load -- --url http://127.0.0.1:5000 \
//!     --trace-id tr-... --requests 20
//! cargo run --release -p tracelake-cli --example query_load -- --url http://127.0.0.1:5000 \
//!     --sql "SELECT count(*) FROM main.bench.mlflow_experiment_trace_otel_spans" --requests 5
//! ```
//!
//! Traces to read are written with `ingest_load`. Works against `mlflow server` too.
#![allow(clippy::print_stdout, reason = "a command-line tool reporting its measurements")]

#[path = "support/flags.rs"]
mod flags;
#[path = "support/http.rs"]
mod http;

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

struct Args {
    url: String,
    experiment: String,
    filter: String,
    max_results: u32,
    trace_id: Option<String>,
    /// A SQL statement for the lake's endpoint instead.
    sql: Option<String>,
    requests: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        url: "http://127.0.0.1:5000".into(),
        experiment: "0".into(),
        filter: String::new(),
        max_results: 100,
        trace_id: None,
        sql: None,
        requests: 100,
    };
    for (flag, value) in flags::pairs()? {
        match flag.as_str() {
            "--url" => a.url = value,
            "--experiment" => a.experiment = value,
            "--filter" => a.filter = value,
            "--max-results" => a.max_results = value.parse()?,
            "--trace-id" => a.trace_id = Some(value),
            "--sql" => a.sql = Some(value),
            "--requests" => a.requests = value.parse::<usize>()?.max(1),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// What one answer held: traces found, or spans in the trace.
fn count(answer: &Value) -> usize {
    match answer.get("traces") {
        Some(traces) => traces.as_array().map_or(0, Vec::len),
        None => answer.pointer("/trace/spans").and_then(Value::as_array).map_or(0, Vec::len),
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut conn = http::Connection::open(&args.url)?;
    let (method, path, body) = match (&args.trace_id, &args.sql) {
        (_, Some(sql)) => {
            ("POST", "/api/2.0/tracelake/sql".to_owned(), serde_json::to_vec(&json!({ "query": sql }))?)
        }
        (Some(id), None) => ("GET", format!("/api/3.0/mlflow/traces/get?trace_id={id}"), Vec::new()),
        (None, None) => {
            let search = json!({
                "locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": args.experiment}}],
                "filter": args.filter, "max_results": args.max_results, "order_by": ["timestamp_ms DESC"],
            });
            ("POST", "/api/3.0/mlflow/traces/search".to_owned(), serde_json::to_vec(&search)?)
        }
    };
    let headers = [("Content-Type", "application/json")];
    let mut latencies = Vec::with_capacity(args.requests);
    let mut found = None;
    for _ in 0..args.requests {
        let t = Instant::now();
        let (status, answer) = conn.request(method, &path, &headers, &body)?;
        latencies.push(t.elapsed());
        if status != 200 {
            bail!("{method} {path} answered {status}: {}", String::from_utf8_lossy(&answer));
        }
        if found.is_none() {
            let answer: Value = serde_json::from_slice(&answer)?;
            found =
                Some(if args.sql.is_some() { answer.as_array().map_or(0, Vec::len) } else { count(&answer) });
        }
    }
    latencies.sort();
    let ms = |p: f64| -> f64 {
        let d: Duration = latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        d.as_secs_f64() * 1e3
    };
    println!(
        "{}",
        json!({
            "request": match (&args.trace_id, &args.sql) {
                (_, Some(_)) => "sql",
                (Some(_), None) => "get_trace",
                (None, None) => "search_traces",
            },
            "sql": args.sql,
            "filter": args.filter, "requests": args.requests, "items_in_first_answer": found,
            "latency_ms": {"p50": ms(0.50), "p95": ms(0.95), "p99": ms(0.99), "max": ms(1.0)},
        })
    );
    Ok(())
}
