//! Caller-side cost of instrumentation and throughput of the export pipeline.
//!
//! Run with `cargo bench -p tracelake --bench sdk`. The same work done by the stock MLflow
//! Python SDK is measured by `benches/python/mlflow_sdk.py`; `benches/README.md` has both.

#![allow(clippy::print_stderr, reason = "the benchmark reports drop counts next to its timings")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tracelake::export::InMemoryExporter;
use tracelake::{TracerProvider, trace};

#[trace]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn add_plain(a: i64, b: i64) -> i64 {
    a + b
}

#[trace]
fn f9(x: i64) -> i64 {
    x + 1
}
#[trace]
fn f8(x: i64) -> i64 {
    f9(x) + 1
}
#[trace]
fn f7(x: i64) -> i64 {
    f8(x) + 1
}
#[trace]
fn f6(x: i64) -> i64 {
    f7(x) + 1
}
#[trace]
fn f5(x: i64) -> i64 {
    f6(x) + 1
}
#[trace]
fn f4(x: i64) -> i64 {
    f5(x) + 1
}
#[trace]
fn f3(x: i64) -> i64 {
    f4(x) + 1
}
#[trace]
fn f2(x: i64) -> i64 {
    f3(x) + 1
}
#[trace]
fn f1(x: i64) -> i64 {
    f2(x) + 1
}
#[trace]
fn f0(x: i64) -> i64 {
    f1(x) + 1
}

/// Installs a provider whose exporter keeps only the latest traces, so memory stays flat.
fn install(max_queued_spans: usize) -> (TracerProvider, InMemoryExporter) {
    let exporter = InMemoryExporter::with_capacity(16);
    let provider = TracerProvider::builder()
        .with_exporter(exporter.clone())
        .with_max_queued_spans(max_queued_spans)
        .build();
    tracelake::set_tracer_provider(provider.clone());
    (provider, exporter)
}

/// Times `iters` calls of `step` made inside open traces. A fresh root every 100 calls keeps
/// each trace (and memory) small; starting and ending the roots is not timed.
fn time_in_open_traces(iters: u64, mut step: impl FnMut(u64)) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(100);
        let root = tracelake::start_span("root");
        let start = Instant::now();
        (0..n).for_each(&mut step);
        total += start.elapsed();
        drop(root);
        left -= n;
    }
    total
}

fn caller_cost(c: &mut Criterion) {
    let (provider, _exporter) = install(tracelake::DEFAULT_MAX_QUEUED_SPANS);
    tracelake::enable();
    let mut g = c.benchmark_group("caller");

    // One child span with small inputs and outputs inside an open trace.
    g.bench_function("child_span_start_end", |b| {
        b.iter_custom(|iters| {
            time_in_open_traces(iters, |i| {
                black_box(add(black_box(i as i64), 2));
            })
        })
    });
    // A whole trace of one span: root start, end, completion and hand-off to the queue.
    g.bench_function("one_span_trace", |b| b.iter(|| black_box(add(black_box(1), 2))));
    // A whole trace of ten nested spans.
    g.bench_function("ten_span_nested_trace", |b| b.iter(|| black_box(f0(black_box(1)))));
    // A guard with explicit inputs and outputs.
    g.bench_function("guard_start_end", |b| {
        b.iter_custom(|iters| {
            time_in_open_traces(iters, |i| {
                let s = tracelake::start_span("step");
                s.set_inputs(&i);
                s.set_outputs("ok");
            })
        })
    });

    tracelake::disable();
    g.bench_function("disabled_traced_call", |b| b.iter(|| black_box(add(black_box(1), 2))));
    g.bench_function("plain_call_for_reference", |b| b.iter(|| black_box(add_plain(black_box(1), 2))));
    tracelake::enable();
    g.finish();
    let _ = provider.flush();
    eprintln!("caller: pipeline stats after the run: {:?}", provider.stats());
}

fn pipeline_throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    for spans_per_trace in [1u64, 10] {
        let traces = 100_000 / spans_per_trace;
        g.throughput(Throughput::Elements(traces * spans_per_trace));
        g.bench_with_input(
            BenchmarkId::new("spans_into_memory", spans_per_trace),
            &spans_per_trace,
            |b, &k| {
                // The queue bound is what keeps memory flat; it is big enough for the worker
                // to keep up, and drops are reported below.
                let (provider, exporter) = install(1 << 16);
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        for _ in 0..traces {
                            if k == 1 {
                                black_box(add(1, 2));
                            } else {
                                black_box(f0(1)); // ten nested spans
                            }
                        }
                        provider.flush().unwrap();
                    }
                    start.elapsed()
                });
                let stats = provider.stats();
                eprintln!(
                    "pipeline/{k}: exported {} spans, dropped {} spans, kept {} traces in memory",
                    stats.exported_spans,
                    stats.dropped_spans,
                    exporter.traces().len()
                );
            },
        );
    }
    g.finish();
}

criterion_group!(benches, caller_cost, pipeline_throughput);
criterion_main!(benches);
