//! Lake schemas written directly: the SDK hands whole traces to the [`LakeWriter`] the
//! application installed (the `tracelake-lake` crate provides one over the lake store), so
//! that this crate does not carry the lake's storage engine.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::RwLock;
use tracelake_model::{Trace, TraceLocation};

use super::ExportError;
use super::router::{Routed, SinkExporter};
use crate::pipeline::DropCounter;

/// Resource attributes, as a route carries them.
type Resource = Arc<Vec<(String, String)>>;

/// Writes finished traces to lake schemas.
///
/// Called from the export worker thread only; a call returns once the traces are durable in
/// the lake, or with why they are not (they are then dropped and counted).
pub trait LakeWriter: Send + Sync + 'static {
    /// Writes `traces` (each whole, with its info) to schema `schema` (`catalog.schema`) of
    /// the lake at `root`; `resource` is the resource their spans were recorded under.
    fn write(
        &self,
        root: &str,
        schema: &str,
        traces: &[Arc<Trace>],
        resource: &[(String, String)],
    ) -> Result<(), String>;
}

fn writer_slot() -> &'static RwLock<Option<Arc<dyn LakeWriter>>> {
    static WRITER: OnceLock<RwLock<Option<Arc<dyn LakeWriter>>>> = OnceLock::new();
    WRITER.get_or_init(|| RwLock::new(None))
}

/// Installs the writer lake-schema destinations with a lake root use (replacing any before).
pub fn set_lake_writer(writer: Arc<dyn LakeWriter>) {
    *writer_slot().write() = Some(writer);
}

/// The exporter of one lake root.
pub(crate) struct LakeExporter {
    root: String,
}

impl LakeExporter {
    pub(crate) fn new(root: String) -> Self {
        LakeExporter { root }
    }
}

impl SinkExporter for LakeExporter {
    fn export(&mut self, traces: Vec<Routed>, drops: Option<&DropCounter>) {
        let writer = writer_slot().read().clone();
        let mut by_schema: Vec<(String, Vec<Arc<Trace>>, Resource)> = Vec::new();
        for (trace, route) in traces {
            let schema = match &*route.location {
                TraceLocation::UcSchema { catalog_name, schema_name, .. } => {
                    format!("{catalog_name}.{schema_name}")
                }
                other => format!("{other:?}"),
            };
            match by_schema.iter_mut().find(|(k, _, _)| *k == schema) {
                Some((_, list, _)) => list.push(trace),
                None => by_schema.push((schema, vec![trace], route.resource.clone())),
            }
        }
        for (schema, traces, resource) in by_schema {
            let result = match &writer {
                Some(w) => w.write(&self.root, &schema, &traces, &resource),
                None => Err("no lake writer is installed (add the tracelake-lake crate and call \
                             tracelake_lake::install())"
                    .to_owned()),
            };
            if let Err(e) = result {
                let e =
                    ExportError::Other { target: format!("lake {} schema {schema}", self.root), message: e };
                let spans = traces.iter().map(|t| t.spans.len()).sum();
                match drops {
                    Some(d) => d.record(traces.len(), spans, &e.to_string()),
                    None => tracing::warn!(target: "tracelake", "dropping traces: {e}"),
                }
            }
        }
    }

    fn flush(&mut self, _timeout: Duration) -> Result<(), ExportError> {
        // every write is durable when it returns
        Ok(())
    }

    fn shutdown(&mut self, _timeout: Duration) -> Result<(), ExportError> {
        Ok(())
    }
}
