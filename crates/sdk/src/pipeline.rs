//! The export pipeline: a bounded queue and the background worker that drains it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use parking_lot::Mutex;

use crate::config;
use crate::export::{ExportBatch, Exporter};
use tracelake_model::Trace;

use crate::destination::Route;
use crate::trace::FinishedTrace;

/// Counters of what the pipeline did, readable at any time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportStats {
    /// Spans waiting in the queue now.
    pub queued_spans: u64,
    pub exported_traces: u64,
    pub exported_spans: u64,
    /// Traces dropped because the queue was full or the pipeline shut down.
    pub dropped_traces: u64,
    pub dropped_spans: u64,
    /// Spans that ended after their trace had already been completed and handed on.
    pub late_spans: u64,
    /// Exporter calls that returned an error or panicked.
    pub failed_exports: u64,
}

/// Why waiting on the pipeline failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    #[error("the export worker did not finish within {0:?}; traces may still be in flight")]
    Timeout(Duration),
    #[error("the export pipeline has shut down")]
    ShutDown,
}

/// Messages to the worker besides the traces themselves.
enum Control {
    /// Enough traces are waiting for a full batch.
    Wake,
    /// Export what is queued (without flushing the exporters), then answer.
    Sync(Sender<()>),
    Flush(Sender<()>),
    Shutdown(Sender<()>),
}

thread_local! {
    static ON_EXPORT_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this is an export worker thread (where waiting on the pipeline would deadlock).
pub(crate) fn on_export_worker() -> bool {
    ON_EXPORT_WORKER.try_with(std::cell::Cell::get).unwrap_or(false)
}

/// What a shutdown may take beyond the flush timeout: abandoning undelivered exports.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);

/// How often the worker ends traces that have been in progress for too long.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Counters {
    queued_spans: AtomicUsize,
    queued_traces: AtomicUsize,
    /// Traces queued since the worker last drained the queue.
    pending_traces: AtomicUsize,
    /// A `Wake` is on its way; no need to send another.
    wake_sent: AtomicBool,
    exported_traces: AtomicU64,
    exported_spans: AtomicU64,
    dropped_traces: AtomicU64,
    dropped_spans: AtomicU64,
    late_spans: AtomicU64,
    failed_exports: AtomicU64,
    /// Seconds since `epoch` of the last warning about drops, to warn once per interval.
    last_drop_warning: AtomicU64,
    epoch: OnceInstant,
}

/// The instant the counters were made, for the once-per-interval drop warning.
struct OnceInstant(Instant);

impl Default for OnceInstant {
    fn default() -> Self {
        OnceInstant(Instant::now())
    }
}

impl Counters {
    /// Counts traces that will never be delivered, warning at most once per interval.
    fn record_drop(&self, traces: u64, spans: u64, why: &str) {
        let dropped = self.dropped_traces.fetch_add(traces, Ordering::Relaxed) + traces;
        self.dropped_spans.fetch_add(spans, Ordering::Relaxed);
        let now = self.epoch.0.elapsed().as_secs() + DROP_WARNING_INTERVAL_SECS;
        let last = self.last_drop_warning.load(Ordering::Relaxed);
        if now >= last + DROP_WARNING_INTERVAL_SECS
            && self
                .last_drop_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(target: "tracelake", dropped_traces = dropped, "dropping traces: {why}");
        }
    }
}

/// Lets exporters that deliver in the background count what they could not deliver in the
/// provider's [`ExportStats`].
#[derive(Clone)]
pub(crate) struct DropCounter(Arc<Counters>);

impl DropCounter {
    pub(crate) fn record(&self, traces: usize, spans: usize, why: &str) {
        self.0.record_drop(traces as u64, spans as u64, why);
    }
}

impl std::fmt::Debug for DropCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DropCounter")
    }
}

/// The queue between the application and the export worker.
///
/// Handing a trace over is a lock-free push and two atomic adds: the worker is not woken for
/// each trace (a futex wake per trace would cost more than recording the trace). It wakes when
/// a batch's worth is waiting, when its timer fires, or when asked to flush or shut down.
pub(crate) struct Pipeline {
    traces: Sender<FinishedTrace>,
    /// A receiving end kept here to count what a shutdown left behind.
    leftovers: Receiver<FinishedTrace>,
    control: Sender<Control>,
    counters: Arc<Counters>,
    max_queued_spans: usize,
    max_queued_traces: usize,
    wake_at_traces: usize,
    closed: AtomicBool,
    /// Dropping the pipeline drops the senders: the worker then exports what is queued, shuts
    /// the exporters down and exits on its own. Nobody joins it there, since the last
    /// reference may go away on an application thread that must not wait.
    worker: Mutex<Option<JoinHandle<()>>>,
}

/// How often a steady stream of drops is reported in the log.
const DROP_WARNING_INTERVAL_SECS: u64 = 30;

impl Pipeline {
    pub(crate) fn start(
        exporters: Vec<Box<dyn Exporter>>,
        max_queued_spans: usize,
        max_queued_traces: usize,
        max_batch_traces: usize,
        schedule_delay: Duration,
        trace_timeout: Duration,
    ) -> Self {
        let (traces, traces_rx) = crossbeam_channel::unbounded();
        let (control, control_rx) = crossbeam_channel::unbounded();
        let counters = Arc::new(Counters::default());
        let max_batch_traces = max_batch_traces.max(1);
        let worker = Worker {
            traces: traces_rx.clone(),
            control: control_rx,
            exporters,
            counters: counters.clone(),
            max_batch_traces,
            // A zero delay would make the worker spin.
            schedule_delay: schedule_delay.max(Duration::from_millis(1)),
            trace_timeout,
        };
        let handle = std::thread::Builder::new()
            .name("tracelake-export".into())
            .spawn(move || worker.run())
            .map_err(|e| tracing::error!(target: "tracelake", "cannot start the export worker, traces will be dropped: {e}"))
            .ok();
        Pipeline {
            traces,
            leftovers: traces_rx,
            control,
            counters,
            max_queued_spans,
            max_queued_traces: max_queued_traces.max(1),
            wake_at_traces: (max_batch_traces / 2).max(1),
            closed: AtomicBool::new(handle.is_none()),
            worker: Mutex::new(handle),
        }
    }

    /// Queues a finished trace; never blocks. Drops it (and counts) when the queue is full.
    pub(crate) fn submit(&self, trace: FinishedTrace) {
        let spans = trace.span_count;
        if self.closed.load(Ordering::Relaxed) {
            return self.drop_trace(spans);
        }
        let before = self.counters.queued_spans.fetch_add(spans, Ordering::AcqRel);
        let traces_before = self.counters.queued_traces.fetch_add(1, Ordering::AcqRel);
        // A trace larger than the whole queue still goes through when the queue is empty.
        if (before > 0 && before + spans > self.max_queued_spans) || traces_before >= self.max_queued_traces {
            self.unqueue(spans);
            return self.drop_trace(spans);
        }
        if self.traces.send(trace).is_err() {
            self.unqueue(spans);
            return self.drop_trace(spans);
        }
        if self.closed.load(Ordering::Acquire) {
            // Shut down while we were sending: whatever the worker did not take is dropped,
            // and counted.
            self.count_leftovers();
            return;
        }
        let c = &self.counters;
        let pending = c.pending_traces.fetch_add(1, Ordering::AcqRel) + 1;
        let crowded = before + spans >= self.max_queued_spans / 2;
        if (pending >= self.wake_at_traces || crowded) && !c.wake_sent.swap(true, Ordering::AcqRel) {
            let _ = self.control.send(Control::Wake);
        }
    }

    fn unqueue(&self, spans: usize) {
        self.counters.queued_spans.fetch_sub(spans, Ordering::AcqRel);
        self.counters.queued_traces.fetch_sub(1, Ordering::AcqRel);
    }

    fn drop_trace(&self, spans: usize) {
        self.counters.record_drop(
            1,
            spans as u64,
            "the trace export queue is full or shut down (raise the queue size or check the exporter)",
        );
    }

    pub(crate) fn count_late_span(&self) {
        self.counters.late_spans.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> ExportStats {
        let c = &self.counters;
        ExportStats {
            queued_spans: c.queued_spans.load(Ordering::Relaxed) as u64,
            exported_traces: c.exported_traces.load(Ordering::Relaxed),
            exported_spans: c.exported_spans.load(Ordering::Relaxed),
            dropped_traces: c.dropped_traces.load(Ordering::Relaxed),
            dropped_spans: c.dropped_spans.load(Ordering::Relaxed),
            late_spans: c.late_spans.load(Ordering::Relaxed),
            failed_exports: c.failed_exports.load(Ordering::Relaxed),
        }
    }

    /// Waits until every trace queued before the call has been exported and the exporters
    /// have flushed.
    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(FlushError::ShutDown);
        }
        self.round_trip(Control::Flush, timeout)
    }

    /// Exports what is queued, flushes and shuts the exporters down, and stops the worker.
    /// Traces finished afterwards are dropped and counted.
    pub(crate) fn shutdown(&self, timeout: Duration) -> Result<(), FlushError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(FlushError::ShutDown);
        }
        // The exporters' own flush takes up to `timeout`; giving up on what is left takes a
        // moment more.
        self.round_trip(Control::Shutdown, timeout + SHUTDOWN_MARGIN)?;
        if let Some(handle) = self.worker.lock().take() {
            let _ = handle.join();
        }
        self.count_leftovers();
        Ok(())
    }

    /// Exports what is queued now, without flushing the exporters (for [`crate::get_trace`]).
    pub(crate) fn sync(&self, timeout: Duration) -> Result<(), FlushError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(FlushError::ShutDown);
        }
        self.round_trip(Control::Sync, timeout)
    }

    /// Identifies this pipeline (and the traces bound to it) to its worker.
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.counters) as usize
    }

    /// Counts as dropped what is still queued after the worker stopped.
    fn count_leftovers(&self) {
        if self.worker.lock().is_some() {
            return; // the worker is still running and will take it
        }
        while let Ok(trace) = self.leftovers.try_recv() {
            self.unqueue(trace.span_count);
            self.drop_trace(trace.span_count);
        }
    }

    fn round_trip(&self, msg: fn(Sender<()>) -> Control, timeout: Duration) -> Result<(), FlushError> {
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        self.control.send(msg(ack_tx)).map_err(|_| FlushError::ShutDown)?;
        ack_rx.recv_timeout(timeout).map_err(|_| FlushError::Timeout(timeout))
    }
}

struct Worker {
    traces: Receiver<FinishedTrace>,
    control: Receiver<Control>,
    exporters: Vec<Box<dyn Exporter>>,
    counters: Arc<Counters>,
    max_batch_traces: usize,
    schedule_delay: Duration,
    trace_timeout: Duration,
}

impl Worker {
    fn run(mut self) {
        ON_EXPORT_WORKER.with(|w| w.set(true));
        let mut batch: Vec<FinishedTrace> = Vec::with_capacity(self.max_batch_traces);
        let mut last_sweep = Instant::now();
        loop {
            // With a batch's worth still waiting, carry on at once; otherwise sleep until a
            // producer asks (a full batch), a caller asks (flush), or the timer fires.
            let msg = if self.traces.len() >= self.max_batch_traces / 2 {
                self.control.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else {
                self.control.recv_timeout(self.schedule_delay)
            };
            // Traces sent before the message are visible now: drain them first, so a flush
            // covers everything finished before it was asked for.
            self.drain(&mut batch);
            if last_sweep.elapsed() >= SWEEP_INTERVAL {
                last_sweep = Instant::now();
                if crate::trace::registry::sweep(
                    Arc::as_ptr(&self.counters) as usize,
                    crate::span::now_ns(),
                    self.trace_timeout,
                    config::MAX_TRACES_IN_PROGRESS,
                ) > 0
                {
                    self.drain(&mut batch);
                }
            }
            match msg {
                Ok(Control::Wake) | Err(RecvTimeoutError::Timeout) => {}
                Ok(Control::Sync(ack)) => {
                    let _ = ack.send(());
                }
                Ok(Control::Flush(ack)) => {
                    self.each_exporter("flush", |e| e.flush());
                    let _ = ack.send(());
                }
                Ok(Control::Shutdown(ack)) => {
                    self.each_exporter("flush", |e| e.flush());
                    self.each_exporter("shutdown", |e| e.shutdown());
                    let _ = ack.send(());
                    return;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // The provider was dropped. Deliver what is left and stop.
                    self.each_exporter("flush", |e| e.flush());
                    self.each_exporter("shutdown", |e| e.shutdown());
                    return;
                }
            }
        }
    }

    /// Exports the traces queued now, a batch at a time. Only those: under a steady stream
    /// the queue never empties, and a flush waiting behind the drain must still be answered.
    fn drain(&mut self, batch: &mut Vec<FinishedTrace>) {
        // Reset before draining: a trace queued during the drain may ask for a new wake.
        self.counters.pending_traces.store(0, Ordering::Release);
        self.counters.wake_sent.store(false, Ordering::Release);
        for _ in 0..self.traces.len() {
            let Ok(trace) = self.traces.try_recv() else { break };
            batch.push(trace);
            if batch.len() >= self.max_batch_traces {
                self.export(batch);
            }
        }
        self.export(batch);
    }

    fn export(&mut self, batch: &mut Vec<FinishedTrace>) {
        if batch.is_empty() {
            return;
        }
        let spans: usize = batch.iter().map(|t| t.span_count).sum();
        let (traces, routes): (Vec<Arc<Trace>>, Vec<Arc<Route>>) = batch
            .drain(..)
            .map(|t| {
                let (trace, route) = t.build();
                (Arc::new(trace), route)
            })
            .unzip();
        let drops = DropCounter(self.counters.clone());
        self.each_exporter("export", |e| e.export(ExportBatch::routed(&traces, &routes, &drops)));
        crate::trace::recent::insert(&traces);
        let c = &self.counters;
        c.queued_spans.fetch_sub(spans, Ordering::AcqRel);
        c.queued_traces.fetch_sub(traces.len(), Ordering::AcqRel);
        c.exported_traces.fetch_add(traces.len() as u64, Ordering::Relaxed);
        c.exported_spans.fetch_add(spans as u64, Ordering::Relaxed);
    }

    fn each_exporter(
        &mut self,
        what: &str,
        mut call: impl FnMut(&mut dyn Exporter) -> Result<(), crate::export::ExportError>,
    ) {
        for exporter in &mut self.exporters {
            match catch_unwind(AssertUnwindSafe(|| call(exporter.as_mut()))) {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    self.counters.failed_exports.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "tracelake", "trace {what} failed: {err}");
                }
                Err(_) => {
                    self.counters.failed_exports.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(target: "tracelake", "trace exporter panicked during {what}; it stays installed");
                }
            }
        }
    }
}
