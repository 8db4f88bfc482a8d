//! An exporter that appends traces to a JSON-lines file.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{ExportBatch, ExportError, Exporter};

/// Appends each trace as one line of MLflow `Trace.to_json()` text, so the file reads back
/// with `tracelake_model::Trace::from_json` or, line by line, with MLflow's
/// `Trace.from_dict(json.loads(line))`. Each batch is written and flushed to the OS before
/// `export` returns; `flush` also syncs it to disk.
#[derive(Debug)]
pub struct FileExporter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl FileExporter {
    /// Opens (creating if needed) `path` for appending.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, ExportError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| ExportError::Io { target: path.display().to_string(), source })?;
        Ok(Self { path, out: BufWriter::with_capacity(64 * 1024, file) })
    }

    fn io_error(&self, source: std::io::Error) -> ExportError {
        ExportError::Io { target: self.path.display().to_string(), source }
    }
}

impl Exporter for FileExporter {
    fn export(&mut self, batch: ExportBatch<'_>) -> Result<(), ExportError> {
        for trace in batch.traces {
            serde_json::to_writer(&mut self.out, &**trace).map_err(|e| self.io_error(e.into()))?;
            self.out.write_all(b"\n").map_err(|e| self.io_error(e))?;
        }
        self.out.flush().map_err(|e| self.io_error(e))
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        self.out.flush().map_err(|e| self.io_error(e))?;
        self.out.get_ref().sync_data().map_err(|e| self.io_error(e))
    }

    fn shutdown(&mut self) -> Result<(), ExportError> {
        self.flush()
    }
}
