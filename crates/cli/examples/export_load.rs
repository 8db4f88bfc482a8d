//! End-to-end export benchmark: one process records traces with the SDK and exports them to a
//! server; reports the caller-side cost per span and spans/s delivered (until a shutdown has
//! delivered everything).
//!
//! ```text
//! cargo run --release -p tracelake-cli --example export_load -- \
//!     --route mlflow --url http://127.0.0.1:5000 --traces 20000 --spans-per-trace 10
//! ```
//!
//! `--route`: `mlflow` (spans over OTLP to `/v1/traces`, then StartTraceV3, as to any MLflow
//! server), `grpc` or `http` (OTLP only; `--url` is then the gRPC address or the server's base
//! URL), or `memory` (an in-memory exporter: the caller cost without any network export, the
//! figure the others are compared with). `--threads` records on that many threads at once.
#![allow(clippy::print_stdout, reason = "a command-line tool reporting its measurements")]

#[path = "support/flags.rs"]
mod flags;

use std::time::{Duration, Instant};

use anyhow::bail;
use tracelake::{Destination, OtlpProtocol, OtlpSettings, SpanType, TracerProvider};

struct Args {
    route: String,
    url: String,
    experiment: String,
    traces: usize,
    spans_per_trace: usize,
    threads: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        route: "mlflow".into(),
        url: "http://127.0.0.1:5000".into(),
        experiment: "0".into(),
        traces: 20_000,
        spans_per_trace: 10,
        threads: 1,
    };
    for (flag, value) in flags::pairs()? {
        match flag.as_str() {
            "--route" => a.route = value,
            "--url" => a.url = value,
            "--experiment" => a.experiment = value,
            "--traces" => a.traces = value.parse()?,
            "--spans-per-trace" => a.spans_per_trace = value.parse::<usize>()?.max(1),
            "--threads" => a.threads = value.parse::<usize>()?.max(1),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// One trace: a root and `spans - 1` children, each with small inputs and outputs.
fn record(i: usize, spans: usize) {
    let root = tracelake::span("request").span_type(SpanType::Chain).start();
    root.set_inputs(&serde_json::json!({"question": "what is tracing?", "n": i}));
    for c in 1..spans {
        let child = tracelake::span("step").span_type(SpanType::Tool).start();
        child.set_inputs(&serde_json::json!({"step": c}));
        child.set_attribute("model", "tiny-model");
        child.set_outputs(&"done");
    }
    root.set_outputs(&"an answer");
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let memory = tracelake::export::InMemoryExporter::with_capacity(1);
    // Room for the whole run in the queue: the figure is the export's, not the queue's limit.
    let builder = TracerProvider::builder()
        .with_max_queued_spans(4 << 20)
        .with_max_queued_traces(1 << 20)
        .with_flush_timeout(Duration::from_secs(600));
    let provider = match args.route.as_str() {
        "memory" => builder.with_exporter(memory.clone()).build(),
        "mlflow" => {
            tracelake::set_destination(Destination::experiment_id(args.experiment.clone()).at(&args.url));
            builder.build()
        }
        "grpc" | "http" => {
            let (endpoint, protocol) = if args.route == "grpc" {
                (args.url.clone(), OtlpProtocol::Grpc)
            } else {
                (format!("{}/v1/traces", args.url), OtlpProtocol::HttpProtobuf)
            };
            let otlp =
                OtlpSettings::new(endpoint, protocol).with_header("x-mlflow-experiment-id", &args.experiment);
            tracelake::set_destination(Destination::otlp(otlp));
            builder.build()
        }
        other => bail!("unknown route {other}: use mlflow, grpc, http or memory"),
    };
    tracelake::set_tracer_provider(provider.clone());

    let per_thread = args.traces / args.threads;
    let spans = args.spans_per_trace;
    let started = Instant::now();
    let callers: Vec<_> = (0..args.threads)
        .map(|t| {
            std::thread::spawn(move || {
                let t0 = Instant::now();
                for i in 0..per_thread {
                    record(t * per_thread + i, spans);
                }
                t0.elapsed()
            })
        })
        .collect();
    let caller_time: Duration = callers.into_iter().map(|c| c.join().expect("caller thread")).sum();
    let recorded = started.elapsed();
    provider.shutdown()?;
    let delivered = started.elapsed();

    let stats = provider.stats();
    let total_spans = (per_thread * args.threads * spans) as f64;
    println!("route {} to {} ({} threads)", args.route, args.url, args.threads);
    println!(
        "traces {}  spans {}  exported {}  dropped {}",
        per_thread * args.threads,
        total_spans,
        stats.exported_spans,
        stats.dropped_spans
    );
    println!("caller cost per span: {:.0} ns", caller_time.as_nanos() as f64 / total_spans);
    println!(
        "recorded in {:.2} s: {:.0} spans/s",
        recorded.as_secs_f64(),
        total_spans / recorded.as_secs_f64()
    );
    println!(
        "delivered in {:.2} s: {:.0} spans/s end to end",
        delivered.as_secs_f64(),
        total_spans / delivered.as_secs_f64()
    );
    if stats.dropped_spans > 0 {
        bail!("{} spans were dropped", stats.dropped_spans);
    }
    Ok(())
}
