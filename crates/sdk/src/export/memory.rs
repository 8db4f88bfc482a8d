//! An exporter that keeps traces in memory, for tests and benchmarks.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tracelake_model::Trace;

use super::{ExportBatch, ExportError, Exporter};

/// Keeps exported traces in memory. Clones share the same store, so keep one clone to read
/// what the provider's clone received.
///
/// ```
/// use tracelake::export::InMemoryExporter;
///
/// let exporter = InMemoryExporter::new();
/// let provider = tracelake::TracerProvider::builder().with_exporter(exporter.clone()).build();
/// let previous = tracelake::set_tracer_provider(provider);
/// { let _span = tracelake::start_span("work"); }
/// tracelake::flush().unwrap();
/// assert_eq!(exporter.traces()[0].spans[0].name, "work");
/// # drop(previous);
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryExporter {
    inner: Arc<Mutex<Store>>,
}

#[derive(Debug, Default)]
struct Store {
    traces: VecDeque<Arc<Trace>>,
    /// Keep at most this many traces (the oldest go first); `None` keeps all.
    capacity: Option<usize>,
    received_traces: u64,
    received_spans: u64,
}

impl InMemoryExporter {
    /// Keeps every trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the latest `capacity` traces, so memory stays bounded however long it runs.
    pub fn with_capacity(capacity: usize) -> Self {
        let store = Store { capacity: Some(capacity), ..Store::default() };
        Self { inner: Arc::new(Mutex::new(store)) }
    }

    /// The traces kept, oldest first.
    pub fn traces(&self) -> Vec<Arc<Trace>> {
        self.inner.lock().traces.iter().cloned().collect()
    }

    /// How many traces and spans were exported here in all (kept or not).
    pub fn received(&self) -> (u64, u64) {
        let s = self.inner.lock();
        (s.received_traces, s.received_spans)
    }

    pub fn clear(&self) {
        let mut s = self.inner.lock();
        s.traces.clear();
        s.received_traces = 0;
        s.received_spans = 0;
    }
}

impl Exporter for InMemoryExporter {
    fn export(&mut self, batch: ExportBatch<'_>) -> Result<(), ExportError> {
        let mut s = self.inner.lock();
        s.received_traces += batch.traces.len() as u64;
        s.received_spans += batch.span_count() as u64;
        s.traces.extend(batch.traces.iter().cloned());
        if let Some(cap) = s.capacity {
            let excess = s.traces.len().saturating_sub(cap);
            s.traces.drain(..excess);
        }
        Ok(())
    }
}
