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
//! Child spans are LLM calls with `gen_ai.request.model` (one of four) and token usage;
//! `--trace-spacing-ms` (default 1) spreads the traces' start times (over days, for the lake's
//! date partitions). `--spans-per-trace` (default 10) sets the trace size; a trace may span batches, so
//! `--batches 100 --spans-per-trace 10000` writes one trace of 10,000 spans. Root spans are named
//! `trace-<n mod 1000>`, which gives `query_load` a tag (`mlflow.traceName`) matching 0.1% of traces.
//!
//! Works against `tracelake server` and `mlflow server` alike (both take
//! `x-mlflow-experiment-id`). `--table catalog.schema` sends to a tracelake lake schema instead
//! (`x-tracelake-table-name`).
#![allow(clippy::print_stdout, reason = "a command-line tool reporting its measurements")]

#[path = "support/flags.rs"]
mod flags;
#[path = "support/http.rs"]
mod http;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Map, json};
use tracelake_model::{Attributes, Span, SpanId, SpanKind, SpanStatus, TraceId, keys};

struct Args {
    url: String,
    experiment: String,
    /// A lake schema `catalog.schema`: spans go to its spans table by header instead.
    table: Option<String>,
    batches: u64,
    spans_per_batch: usize,
    concurrency: usize,
    span_bytes: usize,
    spans_per_trace: u64,
    rate: Option<f64>,
    /// Milliseconds between the starts of consecutive traces.
    trace_spacing_ms: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        url: "http://127.0.0.1:5000".into(),
        experiment: "0".into(),
        table: None,
        batches: 1000,
        spans_per_batch: 100,
        concurrency: 8,
        span_bytes: 1000,
        spans_per_trace: 10,
        rate: None,
        trace_spacing_ms: 1,
    };
    for (flag, value) in flags::pairs()? {
        match flag.as_str() {
            "--url" => a.url = value,
            "--experiment" => a.experiment = value,
            "--table" => a.table = Some(format!("{value}.mlflow_experiment_trace_otel_spans")),
            "--batches" => a.batches = value.parse()?,
            "--spans-per-batch" => a.spans_per_batch = value.parse()?,
            "--concurrency" => a.concurrency = value.parse()?,
            "--span-bytes" => a.span_bytes = value.parse()?,
            "--spans-per-trace" => a.spans_per_trace = value.parse::<u64>()?.max(1),
            "--rate" => a.rate = Some(value.parse()?),
            "--trace-spacing-ms" => a.trace_spacing_ms = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// The models LLM spans name (`gen_ai.request.model`), by trace.
const MODELS: [&str; 4] = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-3-70b"];

/// Batch `n`: spans `n * spans` onwards of a run of traces of `args.spans_per_trace` spans each
/// (a root and its children), each span padded to about `span_bytes` with an inputs payload of
/// made-up prose ([`Vocabulary`]).
/// Ids are derived from `run` and the span's index, so a trace continues across batches.
fn batch(args: &Args, vocabulary: &Vocabulary, run: u128, n: u64) -> Vec<u8> {
    let spacing = args.trace_spacing_ms * 1_000_000;
    let per_trace = args.spans_per_trace;
    let mut out = Vec::with_capacity(args.spans_per_batch);
    for i in n * args.spans_per_batch as u64..(n + 1) * args.spans_per_batch as u64 {
        let (t, k) = (i / per_trace, i % per_trace);
        let trace_id = TraceId::from_bytes(&(run ^ u128::from(t)).to_be_bytes()).expect("16 bytes");
        let span_id = |k: u64| SpanId::from_bytes(&((t << 20) ^ (k + 1)).to_be_bytes()).expect("8 bytes");
        let mut attributes = Attributes::new();
        attributes.insert(keys::SPAN_TYPE, if k == 0 { "CHAIN" } else { "LLM" });
        if k != 0 {
            attributes.insert("gen_ai.request.model", MODELS[(t % MODELS.len() as u64) as usize]);
            attributes.insert("gen_ai.usage.input_tokens", &(100 + t % 50));
            attributes.insert("gen_ai.usage.output_tokens", &(20 + k));
        }
        let prompt = vocabulary.prose(args.span_bytes.saturating_sub(380), i ^ run as u64);
        attributes.insert(keys::INPUTS, &json!({"prompt": prompt}));
        attributes.insert(keys::OUTPUTS, &json!({"answer": "ok"}));
        out.push(Span {
            trace_id,
            span_id: span_id(k),
            parent_id: (k != 0).then(|| span_id(0)),
            name: if k == 0 { format!("trace-{}", t % 1000) } else { format!("step-{k}") }.into(),
            kind: SpanKind::Internal,
            // traces `--trace-spacing-ms` apart, so they have distinct timestamps to order by
            start_time_unix_nano: 1_700_000_000_000_000_000 + t * spacing + k * 1_000,
            end_time_unix_nano: Some(1_700_000_000_000_000_000 + t * spacing + k * 1_000 + 500),
            status: SpanStatus::ok(),
            attributes,
            events: vec![],
            links: vec![],
        });
    }
    let request = tracelake_otlp::request_from_spans(&out, &Map::new(), "load", "1");
    tracelake_otlp::encode_protobuf(&request)
}

/// Made-up words drawn by Zipf's law, as words of natural language are: the payloads
/// compress about as LLM prompts and answers do (a repeated character would compress to
/// nothing, and flatter any store that compresses).
struct Vocabulary {
    words: Vec<String>,
    /// Cumulative weights of `words` (the word of rank r weighs 1 / (r + 1)).
    cumulative: Vec<f64>,
}

impl Vocabulary {
    const WORDS: usize = 4096;

    fn new() -> Vocabulary {
        const SYLLABLES: [&str; 16] =
            ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ba", "de", "fi", "go", "hu", "je", "pa", "qu"];
        let words = (1..=Self::WORDS)
            .map(|mut i| {
                let mut word = String::new();
                while i > 0 {
                    word.push_str(SYLLABLES[i % 16]);
                    i /= 16;
                }
                word
            })
            .collect();
        let mut total = 0.0;
        let cumulative = (0..Self::WORDS)
            .map(|r| {
                total += 1.0 / (r as f64 + 1.0);
                total
            })
            .collect();
        Vocabulary { words, cumulative }
    }

    /// About `len` bytes of sentences, the same for the same `seed`.
    fn prose(&self, len: usize, seed: u64) -> String {
        let mut state = seed;
        let mut next = || {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let total = self.cumulative[Self::WORDS - 1];
        let mut text = String::with_capacity(len + 16);
        let mut in_sentence = 0;
        while text.len() < len {
            let x = (next() >> 11) as f64 / (1u64 << 53) as f64 * total;
            let word = &self.words[self.cumulative.partition_point(|&c| c < x).min(Self::WORDS - 1)];
            if in_sentence == 0 && !text.is_empty() {
                text.push_str(". ");
            } else if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(word);
            in_sentence = (in_sentence + 1) % (8 + next() as usize % 10);
        }
        text.truncate(len);
        text
    }
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(parse_args()?);
    // Bodies are built before the clock starts; `run` makes every invocation's ids fresh.
    let run = u128::from_str_radix(&TraceId::random().to_string(), 16)?;
    let vocabulary = Vocabulary::new();
    let bodies: Arc<Vec<Vec<u8>>> =
        Arc::new((0..args.batches).map(|n| batch(&args, &vocabulary, run, n)).collect());
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let (args, bodies, next, failures) =
                (args.clone(), bodies.clone(), next.clone(), failures.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut conn = http::Connection::open(&args.url)?;
                let headers = [
                    ("Content-Type", "application/x-protobuf"),
                    match &args.table {
                        Some(table) => ("x-tracelake-table-name", table.as_str()),
                        None => ("x-mlflow-experiment-id", args.experiment.as_str()),
                    },
                ];
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
                    let (status, _) = conn.request("POST", "/v1/traces", &headers, &bodies[n as usize])?;
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
