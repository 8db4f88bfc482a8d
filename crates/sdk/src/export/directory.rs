//! The local trace directory: one JSON-lines file per experiment.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::router::{Routed, SinkExporter};
use super::{ExportBatch, ExportError, Exporter, FileExporter};
use crate::destination::ExperimentRef;
use crate::pipeline::DropCounter;

/// Writes `<dir>/<experiment>/traces.jsonl` (the experiment's id, or its name when it was
/// named), each line a trace as MLflow's `Trace.to_json()` writes it.
pub(crate) struct DirectoryExporter {
    dir: PathBuf,
    files: HashMap<String, FileExporter>,
}

impl DirectoryExporter {
    pub(crate) fn new(dir: PathBuf) -> Self {
        DirectoryExporter { dir, files: HashMap::new() }
    }

    fn file(&mut self, experiment: &str) -> Result<&mut FileExporter, ExportError> {
        if !self.files.contains_key(experiment) {
            // A name becomes one path component whatever it holds.
            let component: String = experiment
                .chars()
                .map(|c| if c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' ') { c } else { '_' })
                .collect();
            let dir = self.dir.join(component.trim_start_matches('.'));
            std::fs::create_dir_all(&dir)
                .map_err(|source| ExportError::Io { target: dir.display().to_string(), source })?;
            self.files.insert(experiment.to_owned(), FileExporter::create(dir.join("traces.jsonl"))?);
        }
        Ok(self.files.get_mut(experiment).expect("inserted above"))
    }
}

impl SinkExporter for DirectoryExporter {
    fn export(&mut self, traces: Vec<Routed>, drops: Option<&DropCounter>) {
        let mut by_experiment: Vec<(String, Vec<_>)> = Vec::new();
        for (trace, route) in traces {
            let key = match &route.experiment {
                Some(ExperimentRef::Id(id) | ExperimentRef::Name(id)) => id.clone(),
                None => "0".to_owned(),
            };
            match by_experiment.iter_mut().find(|(k, _)| *k == key) {
                Some((_, list)) => list.push(trace),
                None => by_experiment.push((key, vec![trace])),
            }
        }
        for (experiment, traces) in by_experiment {
            let result = self.file(&experiment).and_then(|f| f.export(ExportBatch::new(&traces)));
            if let Err(e) = result {
                let spans = traces.iter().map(|t| t.spans.len()).sum();
                match drops {
                    Some(d) => d.record(traces.len(), spans, &e.to_string()),
                    None => tracing::warn!(target: "tracelake", "dropping traces: {e}"),
                }
            }
        }
    }

    fn flush(&mut self, _timeout: Duration) -> Result<(), ExportError> {
        self.files.values_mut().try_for_each(Exporter::flush)
    }

    fn shutdown(&mut self, timeout: Duration) -> Result<(), ExportError> {
        self.flush(timeout)
    }
}
