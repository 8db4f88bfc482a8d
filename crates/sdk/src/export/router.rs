//! Sends each trace to the sinks of its destination, one exporter per sink, made on first use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracelake_model::Trace;

use super::directory::DirectoryExporter;
use super::lake::LakeExporter;
use super::otlp::OtlpExporter;
use super::server::ServerExporter;
use super::{ExportBatch, ExportError, Exporter};
use crate::destination::{Route, Sink};
use crate::pipeline::DropCounter;

/// A trace on its way to one sink, with the route it took.
pub(crate) type Routed = (Arc<Trace>, Arc<Route>);

/// What the router needs of the exporter of one sink.
pub(crate) trait SinkExporter: Send {
    /// Takes traces for delivery; failures are counted through `drops`, never returned.
    fn export(&mut self, traces: Vec<Routed>, drops: Option<&DropCounter>);
    /// Waits, up to `timeout`, until what was taken is delivered (or given up on).
    fn flush(&mut self, timeout: Duration) -> Result<(), ExportError>;
    /// A last flush; what is still undelivered after `timeout` is dropped and counted.
    fn shutdown(&mut self, timeout: Duration) -> Result<(), ExportError>;
}

/// The exporter a provider uses to deliver traces to their destinations.
pub(crate) struct Router {
    sinks: HashMap<Arc<Sink>, Box<dyn SinkExporter>>,
    /// Sinks in the order they were made, for orderly flushes.
    order: Vec<Arc<Sink>>,
    flush_timeout: Duration,
    drops: Option<DropCounter>,
}

impl Router {
    pub(crate) fn new(flush_timeout: Duration) -> Self {
        Router { sinks: HashMap::new(), order: Vec::new(), flush_timeout, drops: None }
    }

    fn exporter_for(&mut self, sink: &Arc<Sink>, route: &Route) -> &mut Box<dyn SinkExporter> {
        if !self.sinks.contains_key(sink) {
            let exporter: Box<dyn SinkExporter> = match &**sink {
                Sink::Server { uri, auth } => {
                    Box::new(ServerExporter::new(uri, auth.as_ref(), &route.delivery, &route.resource))
                }
                Sink::Directory(dir) => Box::new(DirectoryExporter::new(dir.clone())),
                Sink::Otlp(settings) => Box::new(OtlpExporter::new(settings, &route.delivery)),
                Sink::Lake(root) => Box::new(LakeExporter::new(root.clone())),
                Sink::Unusable(problem) => Box::new(Unusable(problem.clone())),
            };
            self.order.push(sink.clone());
            self.sinks.insert(sink.clone(), exporter);
        }
        self.sinks.get_mut(sink).expect("inserted above")
    }

    fn each(
        &mut self,
        mut call: impl FnMut(&mut dyn SinkExporter, Duration) -> Result<(), ExportError>,
    ) -> Result<(), ExportError> {
        // One budget for all sinks: a flush never waits longer than the provider allows.
        let deadline = std::time::Instant::now() + self.flush_timeout;
        let mut first_error = None;
        for sink in &self.order {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if let Some(exporter) = self.sinks.get_mut(sink)
                && let Err(e) = call(exporter.as_mut(), left)
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Exporter for Router {
    fn export(&mut self, batch: ExportBatch<'_>) -> Result<(), ExportError> {
        if self.drops.is_none() {
            self.drops = batch.drops.cloned();
        }
        let mut by_sink: Vec<(Arc<Sink>, Vec<Routed>)> = Vec::new();
        for (trace, route) in batch.traces.iter().zip(batch.routes) {
            for sink in &route.sinks {
                let entry = match by_sink.iter_mut().position(|(s, _)| s == sink) {
                    Some(i) => &mut by_sink[i].1,
                    None => {
                        by_sink.push((sink.clone(), Vec::new()));
                        &mut by_sink.last_mut().expect("pushed").1
                    }
                };
                entry.push((trace.clone(), route.clone()));
            }
        }
        let drops = self.drops.clone();
        for (sink, traces) in by_sink {
            let route = traces[0].1.clone();
            self.exporter_for(&sink, &route).export(traces, drops.as_ref());
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        self.each(|e, left| e.flush(left))
    }

    fn shutdown(&mut self) -> Result<(), ExportError> {
        // The pipeline flushes (with the whole budget) just before: what is still in flight
        // now is given up on and counted.
        self.each(|e, _| e.shutdown(Duration::ZERO))
    }
}

/// A destination that cannot be delivered to (its configuration was rejected).
struct Unusable(String);

impl SinkExporter for Unusable {
    fn export(&mut self, traces: Vec<Routed>, drops: Option<&DropCounter>) {
        let spans = traces.iter().map(|(t, _)| t.spans.len()).sum();
        match drops {
            Some(d) => d.record(traces.len(), spans, &self.0),
            None => tracing::warn!(target: "tracelake", "dropping {} traces: {}", traces.len(), self.0),
        }
    }

    fn flush(&mut self, _timeout: Duration) -> Result<(), ExportError> {
        Ok(())
    }

    fn shutdown(&mut self, _timeout: Duration) -> Result<(), ExportError> {
        Ok(())
    }
}
