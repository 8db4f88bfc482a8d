//! MLflow's artifact proxy (`mlflow server --serve-artifacts`): `PUT` and `GET` on
//! `/2.0/mlflow-artifacts/artifacts/{path}`, files kept under the artifacts destination.
//!
//! The MLflow client uploads a trace's spans here, as
//! `<experiment>/traces/<trace_id>/artifacts/traces.json` holding `{"spans": [...]}` in MLflow's
//! span dict form, when StartTraceV3's answer did not say the spans are in the tracking store.
//! Such an upload is kept as a file and also ingested, so the trace reads as if its spans had come
//! over OTLP. The other way round, a read of the `traces.json` of a trace whose spans came over
//! OTLP is answered from the store, so clients that download the artifact find the spans too.

use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tracelake_model::{TraceData, TraceId};
use tracelake_store::WriteBatch;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// The file name MLflow keeps a trace's spans in.
const TRACE_DATA_FILE: &str = "traces.json";

/// The segments of an artifact path, which must stay inside the artifacts destination: relative,
/// no empty, `.` or `..` segments, no backslashes or NULs (MLflow's `validate_path_is_safe`).
fn segments(path: &str) -> ApiResult<Vec<&str>> {
    let bad = |why: &str| ApiError::invalid(format!("invalid artifact path {path:?}: {why}"));
    if path.is_empty() {
        return Err(bad("it is empty"));
    }
    if path.starts_with('/') {
        return Err(bad("it must be relative"));
    }
    if path.contains(['\\', '\0']) {
        return Err(bad("it may not contain backslashes or NUL characters"));
    }
    let segments: Vec<&str> = path.split('/').collect();
    for s in &segments {
        match *s {
            "" => return Err(bad("it has an empty segment")),
            "." | ".." => return Err(bad("it may not contain '.' or '..' segments")),
            _ => {}
        }
    }
    Ok(segments)
}

/// `(experiment_id, trace_id)` when the path is a trace's spans file,
/// `<experiment>/traces/<trace_id>/artifacts/traces.json`.
fn trace_data<'a>(segments: &[&'a str]) -> Option<(&'a str, &'a str)> {
    match segments {
        [experiment, "traces", trace_id, "artifacts", TRACE_DATA_FILE] => Some((experiment, trace_id)),
        _ => None,
    }
}

fn file_path(root: &FsPath, segments: &[&str]) -> PathBuf {
    let mut file = root.to_path_buf();
    file.extend(segments);
    file
}

/// Writes `bytes` to `file` atomically: into a temporary file next to it, synced, then renamed
/// over it, so a reader sees the old content or the new, never a part.
fn write_atomically(file: &FsPath, bytes: &[u8]) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = file.parent().expect("an artifact path has a parent directory");
    std::fs::create_dir_all(dir)?;
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("artifact");
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

async fn blocking<T: Send + 'static>(
    what: String,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> ApiResult<std::io::Result<T>> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("{what}: {e}")))
}

/// `PUT`: stores the body as the artifact at `path`; a trace's `traces.json` is also ingested.
pub(crate) async fn upload(
    State(s): State<AppState>,
    Path(path): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let segments = segments(&path)?;
    let file = file_path(&s.artifacts_destination, &segments);
    let (target, bytes) = (file.clone(), body.clone());
    blocking(format!("writing artifact {path:?}"), move || write_atomically(&target, &bytes))
        .await?
        .map_err(|e| ApiError::internal(format!("cannot write artifact {}: {e}", file.display())))?;
    if let Some((experiment_id, trace_id)) = trace_data(&segments) {
        ingest_spans(&s, experiment_id, trace_id, &body).await?;
    }
    Ok(Json(json!({})))
}

/// Writes the spans of an uploaded `traces.json` to the store, in `experiment_id`. A body that
/// is not such a file, or holds spans of another trace, is kept as a file only.
async fn ingest_spans(s: &AppState, experiment_id: &str, trace_id: &str, body: &[u8]) -> ApiResult<()> {
    let spans = match serde_json::from_slice::<Value>(body)
        .map_err(|e| e.to_string())
        .and_then(|v| TraceData::spans_from_dict(&v, TRACE_DATA_FILE).map_err(|e| e.to_string()))
    {
        Ok(spans) => spans,
        Err(e) => {
            tracing::debug!(target: "tracelake::server", "{trace_id}/{TRACE_DATA_FILE} kept as a file only: not MLflow span JSON: {e}");
            return Ok(());
        }
    };
    let Ok(id) = TraceId::from_mlflow(trace_id) else {
        tracing::debug!(target: "tracelake::server", "{trace_id}/{TRACE_DATA_FILE} kept as a file only: {trace_id:?} is not a trace id");
        return Ok(());
    };
    if let Some(other) = spans.iter().find(|span| span.trace_id != id) {
        tracing::debug!(target: "tracelake::server", "{trace_id}/{TRACE_DATA_FILE} kept as a file only: it holds a span of trace {}", other.trace_id.to_mlflow_v3());
        return Ok(());
    }
    if spans.is_empty() {
        return Ok(());
    }
    let location = experiment_id.to_owned();
    let spans = spans.into_iter().map(|span| (location.clone(), span)).collect();
    s.ingest.write(WriteBatch { spans, ..Default::default() }).await?;
    Ok(())
}

/// `GET`: the artifact at `path`; for a trace's `traces.json` that was never uploaded, the
/// trace's spans from the store.
pub(crate) async fn download(State(s): State<AppState>, Path(path): Path<String>) -> ApiResult<Response> {
    let segments = segments(&path)?;
    let file = file_path(&s.artifacts_destination, &segments);
    let read = blocking(format!("reading artifact {path:?}"), {
        let file = file.clone();
        move || std::fs::read(file)
    })
    .await?;
    let missing = || ApiError::not_found(format!("artifact {path:?} does not exist"));
    match read {
        Ok(bytes) => Ok(([(header::CONTENT_TYPE, content_type(&segments))], bytes).into_response()),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory) => {
            let Some((experiment_id, trace_id)) = trace_data(&segments) else {
                return Err(missing());
            };
            let traces = s.store.get_traces(&[trace_id.to_owned()]).await?;
            let Some(trace) = traces.first().filter(|t| {
                !t.spans.is_empty() && t.info.trace_location.experiment_id() == Some(experiment_id)
            }) else {
                return Err(missing());
            };
            let body = serde_json::to_vec(&TraceData(&trace.spans))
                .map_err(|e| ApiError::internal(format!("spans of {trace_id} not written: {e}")))?;
            Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
        }
        Err(e) => Err(ApiError::internal(format!("cannot read artifact {}: {e}", file.display()))),
    }
}

/// The media type of an artifact, from its extension.
fn content_type(segments: &[&str]) -> &'static str {
    let name = segments.last().copied().unwrap_or_default();
    match name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).as_deref() {
        Some("json") => "application/json",
        Some("txt" | "log" | "md" | "yaml" | "yml") => "text/plain; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_destination_are_refused() {
        for bad in ["", "/etc/passwd", "0/../x", "0/./x", "0//x", "0/x/", "..", "0\\x"] {
            assert!(segments(bad).is_err(), "{bad:?}");
        }
        assert_eq!(segments("0/traces/tr-1/artifacts/traces.json").unwrap().len(), 5);
        assert_eq!(segments("0/a..b").unwrap(), ["0", "a..b"]);
    }

    #[test]
    fn only_a_traces_json_under_traces_is_trace_data() {
        assert_eq!(trace_data(&["1", "traces", "tr-a", "artifacts", "traces.json"]), Some(("1", "tr-a")));
        assert_eq!(trace_data(&["1", "traces", "tr-a", "artifacts", "other.json"]), None);
        assert_eq!(trace_data(&["1", "runs", "tr-a", "artifacts", "traces.json"]), None);
    }
}
