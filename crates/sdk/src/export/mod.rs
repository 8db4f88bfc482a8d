//! Where finished traces go.
//!
//! Finished traces leave the application through a bounded queue drained by one background
//! worker thread, which hands them in batches to every [`Exporter`] of the provider. The
//! queue never blocks the application: when it is full, traces are dropped and counted
//! ([`crate::export_stats`]).

mod directory;
mod file;
mod lake;
mod memory;
mod net;
mod otlp;
pub(crate) mod router;
mod server;

use std::sync::Arc;

use tracelake_model::Trace;

use crate::destination::Route;
use crate::pipeline::DropCounter;

pub use file::FileExporter;
pub use lake::{LakeWriter, set_lake_writer};
pub use memory::InMemoryExporter;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("i/o error writing {target}: {source}")]
    Io {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("export to {target} timed out after {timeout_ms} ms")]
    Timeout { target: String, timeout_ms: u64 },
    #[error("export to {target} failed: {message}")]
    Other { target: String, message: String },
}

/// A batch of finished traces, each with all its spans, in the order they finished.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ExportBatch<'a> {
    pub traces: &'a [Arc<Trace>],
    /// Each trace's destination, resolved when its root span started (empty outside the
    /// provider's pipeline).
    pub(crate) routes: &'a [Arc<Route>],
    pub(crate) drops: Option<&'a DropCounter>,
}

impl<'a> ExportBatch<'a> {
    pub fn new(traces: &'a [Arc<Trace>]) -> Self {
        Self { traces, routes: &[], drops: None }
    }

    pub(crate) fn routed(traces: &'a [Arc<Trace>], routes: &'a [Arc<Route>], drops: &'a DropCounter) -> Self {
        Self { traces, routes, drops: Some(drops) }
    }

    pub fn span_count(&self) -> usize {
        self.traces.iter().map(|t| t.spans.len()).sum()
    }
}

/// Receives finished traces from the export worker.
///
/// What an implementation may assume, and must guarantee:
/// - Calls come from the single export worker thread, one at a time, never concurrently;
///   `&mut self` is all the synchronisation needed.
/// - `export` must return in bounded time: an exporter that talks to the network applies
///   its own timeout. The application never waits on it, but `flush` and `shutdown` do.
/// - Retrying is the exporter's own business. A returned error is counted and logged; the
///   batch is not offered again.
/// - It should not panic. A panic is caught, counted as a failed export, and the exporter
///   stays installed.
/// - `flush` makes everything exported so far durable or delivered; `shutdown` is called
///   once, last, after a final `flush`.
pub trait Exporter: Send + 'static {
    fn export(&mut self, batch: ExportBatch<'_>) -> Result<(), ExportError>;

    fn flush(&mut self) -> Result<(), ExportError> {
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), ExportError> {
        Ok(())
    }
}
