//! Shared by the integration tests. Each test runs in its own process under nextest, so
//! installing a provider here affects only the test that calls it.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use tracelake::export::InMemoryExporter;
use tracelake::{Trace, TracerProvider};

/// Installs a provider that exports into memory and returns the exporter.
pub fn capture() -> InMemoryExporter {
    let exporter = InMemoryExporter::new();
    tracelake::set_tracer_provider(TracerProvider::builder().with_exporter(exporter.clone()).build());
    exporter
}

/// Flushes and returns every exported trace.
pub fn exported(exporter: &InMemoryExporter) -> Vec<Arc<Trace>> {
    tracelake::flush().expect("flush");
    exporter.traces()
}

/// The single exported trace.
pub fn only_trace(exporter: &InMemoryExporter) -> Arc<Trace> {
    let traces = exported(exporter);
    assert_eq!(traces.len(), 1, "expected exactly one trace, got {}", traces.len());
    traces[0].clone()
}

pub fn span<'a>(trace: &'a Trace, name: &str) -> &'a tracelake::Span {
    trace.spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no span named {name}"))
}
