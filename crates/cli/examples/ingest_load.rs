//! Load harness for OTLP/HTTP ingest: concurrent connections post batches of spans (protobuf)
//! and wait for each acknowledgement; reports spans/s and acknowledgement latency percentiles.
//! Bounded in count (it stops by itself) and meant for servers on 127.0.0.1.
//!
//! ```text
//! cargo run --release -p tracelake-cli --example ingest_load -- \
//!     --url http://127.0.0.1:5000 --experiment 0 --batches 2000 --spans-per-batch 100 \
//!     --concurrency 8 --span-bytes 1000
//! ```
//!
//! Works against `tracelake server` and `mlflow server` alike (both take
//! `x-mlflow-experiment-id`).
#![allow(clippy::print_stdout, reason = "a command-line tool reporting its measurements")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Map, json};
use tracelake_model::{Attributes, Span, SpanId, SpanKind, SpanStatus, TraceId, keys};

struct Args {
    host: String,
    experiment: String,
    batches: u64,
    spans_per_batch: usize,
    concurrency: usize,
    span_bytes: usize,
    rate: Option<f64>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        host: "127.0.0.1:5000".into(),
        experiment: "0".into(),
        batches: 1000,
        spans_per_batch: 100,
        concurrency: 8,
        span_bytes: 1000,
        rate: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => a.host = value.trim_start_matches("http://").trim_end_matches('/').to_owned(),
            "--experiment" => a.experiment = value,
            "--batches" => a.batches = value.parse()?,
            "--spans-per-batch" => a.spans_per_batch = value.parse()?,
            "--concurrency" => a.concurrency = value.parse()?,
            "--span-bytes" => a.span_bytes = value.parse()?,
            "--rate" => a.rate = Some(value.parse()?),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// One batch: traces of 10 spans (a root and nine children), each span padded to about
/// `span_bytes` with an inputs payload.
fn batch(spans: usize, span_bytes: usize) -> Vec<u8> {
    let payload = "x".repeat(span_bytes.saturating_sub(300));
    let mut out = Vec::with_capacity(spans);
    let mut trace = TraceId::random();
    let mut root = SpanId::random();
    for i in 0..spans {
        if i % 10 == 0 {
            trace = TraceId::random();
            root = SpanId::random();
        }
        let mut attributes = Attributes::new();
        attributes.insert(keys::SPAN_TYPE, if i % 10 == 0 { "CHAIN" } else { "LLM" });
        attributes.insert(keys::INPUTS, &json!({"prompt": payload}));
        attributes.insert(keys::OUTPUTS, &json!({"answer": "ok"}));
        out.push(Span {
            trace_id: trace,
            span_id: if i % 10 == 0 { root } else { SpanId::random() },
            parent_id: (i % 10 != 0).then_some(root),
            name: format!("step-{}", i % 10).into(),
            kind: SpanKind::Internal,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: Some(1_700_000_000_000_100_000 + i as u64),
            status: SpanStatus::ok(),
            attributes,
            events: vec![],
            links: vec![],
        });
    }
    let request = tracelake_otlp::request_from_spans(&out, &Map::new(), "load", "1");
    tracelake_otlp::encode_protobuf(&request)
}

/// Posts `body` on a keep-alive connection and waits for the whole response.
fn post(conn: &mut TcpStream, host: &str, experiment: &str, body: &[u8]) -> anyhow::Result<u16> {
    write!(
        conn,
        "POST /v1/traces HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-protobuf\r\n\
         x-mlflow-experiment-id: {experiment}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    conn.write_all(body)?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            bail!("connection closed");
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let status: u16 = head.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0);
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>())
        })
        .transpose()?
        .unwrap_or(0);
    let mut rest = vec![0u8; length];
    conn.read_exact(&mut rest)?;
    Ok(status)
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(parse_args()?);
    // Every batch has its own traces (fresh ids), built before the clock starts.
    let bodies: Arc<Vec<Vec<u8>>> =
        Arc::new((0..args.batches).map(|_| batch(args.spans_per_batch, args.span_bytes)).collect());
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let (args, bodies, next, failures) =
                (args.clone(), bodies.clone(), next.clone(), failures.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut conn =
                    TcpStream::connect(&args.host).with_context(|| format!("connect {}", args.host))?;
                conn.set_nodelay(true)?;
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= args.batches {
                        return Ok(latencies);
                    }
                    if let Some(rate) = args.rate {
                        // open loop: batch n is due at n / rate seconds
                        let due = start + Duration::from_secs_f64(n as f64 / rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let t = Instant::now();
                    let status = post(&mut conn, &args.host, &args.experiment, &bodies[n as usize])?;
                    latencies.push(t.elapsed());
                    if status != 200 {
                        failures.fetch_add(1, Ordering::Relaxed);
                        if status == 429 {
                            std::thread::sleep(Duration::from_millis(50 + w as u64));
                        }
                    }
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.join().map_err(|_| anyhow::anyhow!("a worker panicked"))??);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let spans = args.batches * args.spans_per_batch as u64;
    let failed = failures.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({
            "batches": args.batches, "spans_per_batch": args.spans_per_batch, "concurrency": args.concurrency,
            "span_bytes": args.span_bytes, "seconds": elapsed.as_secs_f64(),
            "spans_per_s": (spans - failed * args.spans_per_batch as u64) as f64 / elapsed.as_secs_f64(),
            "failed_batches": failed,
            "ack_ms": {"p50": pct(0.50).as_secs_f64() * 1e3, "p95": pct(0.95).as_secs_f64() * 1e3, "p99": pct(0.99).as_secs_f64() * 1e3},
        })
    );
    Ok(())
}
