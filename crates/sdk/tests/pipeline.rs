//! The export pipeline: batching, flush and shutdown, bounded queue, failing exporters.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tracelake::export::{ExportBatch, ExportError, Exporter, FileExporter, InMemoryExporter};
use tracelake::{FlushError, Trace, TracerProvider};

/// An exporter that blocks until released, to fill the queue deterministically.
struct Gate {
    release: mpsc::Receiver<()>,
    entered: mpsc::Sender<()>,
    seen: Arc<AtomicUsize>,
}

impl Exporter for Gate {
    fn export(&mut self, batch: ExportBatch<'_>) -> Result<(), ExportError> {
        let _ = self.entered.send(());
        let _ = self.release.recv();
        self.seen.fetch_add(batch.traces.len(), Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking_the_caller() {
    let (release_tx, release_rx) = mpsc::channel();
    let (entered_tx, entered_rx) = mpsc::channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let gate = Gate { release: release_rx, entered: entered_tx, seen: seen.clone() };
    let provider = TracerProvider::builder().with_exporter(gate).with_max_queued_spans(10).build();
    tracelake::set_tracer_provider(provider.clone());

    drop(tracelake::start_span("first")); // occupies the exporter
    entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    for _ in 0..50 {
        drop(tracelake::start_span("queued-or-dropped"));
    }
    // the queue bound counts the span being exported too: 1 in the exporter + 9 waiting
    let stats = provider.stats();
    assert_eq!(stats.queued_spans, 10, "{stats:?}");
    assert_eq!(stats.dropped_traces, 41, "{stats:?}");
    assert_eq!(stats.dropped_spans, 41);

    for _ in 0..51 {
        let _ = release_tx.send(());
    }
    provider.flush().unwrap();
    let stats = provider.stats();
    assert_eq!(seen.load(Ordering::SeqCst), 10);
    assert_eq!(stats.exported_traces, 10);
    assert_eq!(stats.queued_spans, 0);
    assert_eq!(tracelake::export_stats(), stats);
}

struct Failing {
    calls: Arc<AtomicUsize>,
    panic: bool,
}

impl Exporter for Failing {
    fn export(&mut self, _: ExportBatch<'_>) -> Result<(), ExportError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.panic {
            panic!("exporter bug");
        }
        Err(ExportError::Other { target: "nowhere".into(), message: "connection refused".into() })
    }
}

#[test]
fn failing_and_panicking_exporters_are_counted_and_do_not_stop_the_others() {
    let calls = Arc::new(AtomicUsize::new(0));
    let memory = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_exporter(Failing { calls: calls.clone(), panic: false })
        .with_exporter(Failing { calls: calls.clone(), panic: true })
        .with_exporter(memory.clone())
        .build();
    tracelake::set_tracer_provider(provider.clone());
    drop(tracelake::start_span("one"));
    provider.flush().unwrap();
    drop(tracelake::start_span("two"));
    provider.flush().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(provider.stats().failed_exports, 4);
    assert_eq!(memory.traces().len(), 2);
}

#[test]
fn shutdown_exports_everything_queued_then_refuses_more() {
    let memory = InMemoryExporter::new();
    let provider = TracerProvider::builder().with_exporter(memory.clone()).build();
    tracelake::set_tracer_provider(provider.clone());
    for i in 0..100 {
        let s = tracelake::start_span(format!("t{i}"));
        s.set_outputs(&i);
    }
    provider.shutdown().unwrap();
    assert_eq!(memory.traces().len(), 100);
    drop(tracelake::start_span("late"));
    assert_eq!(provider.stats().dropped_traces, 1);
    assert_eq!(provider.flush(), Err(FlushError::ShutDown));
    assert_eq!(provider.shutdown(), Err(FlushError::ShutDown));
}

#[test]
fn the_file_exporter_writes_one_mlflow_trace_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    let provider = TracerProvider::builder().with_exporter(FileExporter::create(&path).unwrap()).build();
    tracelake::set_tracer_provider(provider.clone());
    for i in 0..3 {
        let root = tracelake::start_span("root");
        root.set_inputs(&serde_json::json!({"i": i}));
        let _child = tracelake::start_span("child");
    }
    provider.flush().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let traces: Vec<Trace> = text.lines().map(|l| Trace::from_json(l).unwrap()).collect();
    assert_eq!(traces.len(), 3);
    for (i, t) in traces.iter().enumerate() {
        assert_eq!(t.spans.len(), 2);
        assert_eq!(t.request().unwrap()["i"], i);
    }
}

#[test]
fn the_in_memory_exporter_can_keep_memory_bounded() {
    let memory = InMemoryExporter::with_capacity(5);
    tracelake::set_tracer_provider(TracerProvider::builder().with_exporter(memory.clone()).build());
    for i in 0..20 {
        drop(tracelake::start_span(format!("t{i}")));
    }
    tracelake::flush().unwrap();
    let names: Vec<_> = memory.traces().iter().map(|t| t.spans[0].name.clone()).collect();
    assert_eq!(names, ["t15", "t16", "t17", "t18", "t19"]);
    assert_eq!(memory.received(), (20, 20));
}

#[test]
fn a_span_nobody_ends_is_ended_with_an_error_after_the_timeout_and_exported() {
    let memory = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_exporter(memory.clone())
        .with_trace_timeout(Duration::from_millis(200))
        .build();
    tracelake::set_tracer_provider(provider.clone());
    let forgotten = {
        let _root = tracelake::start_span("root");
        tracelake::span("forgotten").start_detached()
        // root ends here; the trace waits for "forgotten"
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while memory.traces().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let traces = memory.traces();
    assert_eq!(traces.len(), 1, "the sweep exports the trace");
    let span = traces[0].spans.iter().find(|s| s.name == "forgotten").unwrap();
    assert_eq!(span.status.code, tracelake::StatusCode::Error);
    assert_eq!(span.events[0].attributes["exception.type"], "TimeoutError");
    assert!(!forgotten.is_recording());
}

/// Takes a millisecond per trace: slower than the producer below.
struct Slow;

impl Exporter for Slow {
    fn export(&mut self, batch: ExportBatch<'_>) -> Result<(), ExportError> {
        std::thread::sleep(Duration::from_millis(batch.traces.len() as u64));
        Ok(())
    }
}

#[test]
fn flush_returns_under_a_steady_stream_of_traces() {
    let provider =
        TracerProvider::builder().with_exporter(Slow).with_flush_timeout(Duration::from_secs(30)).build();
    tracelake::set_tracer_provider(provider.clone());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                drop(tracelake::start_span("steady"));
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let flushed = provider.flush();
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    assert_eq!(flushed, Ok(()));
}
