//! What both SQL backends do the same way: reading rows into the model, and how a write batch
//! changes a stored trace's info (the merge rules of [`tracelake_store::derive`]).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use tracelake_model::{Span, SpanId, StatusCode, TraceId, TraceInfo, TraceLocation, TraceState, keys};
use tracelake_store::derive::{Stored, outline_of};
use tracelake_store::{LifecycleStage, Run, StoreError, StoreResult, ViewType};

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The `WHERE` clause of `experiments` that keeps the experiments of `view`.
pub(crate) fn stage(view: ViewType) -> &'static str {
    match view {
        ViewType::ActiveOnly => "WHERE lifecycle_stage = 'active'",
        ViewType::DeletedOnly => "WHERE lifecycle_stage = 'deleted'",
        ViewType::All => "",
    }
}

pub(crate) fn lifecycle_stage(stored: &str) -> LifecycleStage {
    if stored == "deleted" { LifecycleStage::Deleted } else { LifecycleStage::Active }
}

/// A row of `runs` (`experiment_id, run_name, user_id, status, start_time, end_time,
/// lifecycle_stage, artifact_uri`), before its tags are read.
pub(crate) type RunRow = (i64, String, String, String, i64, Option<i64>, String, String);

/// The run `run_id` from its row and tags; NotFound in MLflow's words when there is no row.
pub(crate) fn run_from_row(
    run_id: &str,
    row: Option<RunRow>,
    tags: impl IntoIterator<Item = (String, String)>,
) -> StoreResult<Run> {
    let Some((experiment_id, run_name, user_id, status, start_time_ms, end_time_ms, stage, artifact_uri)) =
        row
    else {
        return Err(StoreError::NotFound(format!("Run '{run_id}' not found")));
    };
    Ok(Run {
        run_id: run_id.to_owned(),
        experiment_id: experiment_id.to_string(),
        run_name,
        user_id,
        status,
        start_time_ms,
        end_time_ms,
        lifecycle_stage: lifecycle_stage(&stage),
        artifact_uri,
        tags: tags.into_iter().collect(),
    })
}

/// A row of `traces`, before its tags and metadata are read.
#[derive(Debug)]
pub(crate) struct InfoRow {
    pub(crate) key: i64,
    pub(crate) experiment_id: i64,
    pub(crate) request_time_ms: i64,
    pub(crate) execution_duration_ms: Option<i64>,
    pub(crate) state: String,
    pub(crate) client_request_id: Option<String>,
    pub(crate) request_preview: Option<String>,
    pub(crate) response_preview: Option<String>,
    /// No info was written for the trace yet: its timing and state follow its spans.
    pub(crate) from_spans_only: bool,
    /// MLflow assessment JSON objects, as an array.
    pub(crate) assessments: String,
}

impl InfoRow {
    pub(crate) fn into_stored(
        self,
        trace_id: &str,
        tags: BTreeMap<String, String>,
        trace_metadata: BTreeMap<String, String>,
    ) -> Stored<i64> {
        let info = TraceInfo {
            trace_id: trace_id.to_owned(),
            client_request_id: self.client_request_id,
            trace_location: TraceLocation::experiment(self.experiment_id.to_string()),
            request_time_ms: self.request_time_ms,
            execution_duration_ms: self.execution_duration_ms,
            state: TraceState::parse(&self.state).unwrap_or_default(),
            request_preview: self.request_preview,
            response_preview: self.response_preview,
            trace_metadata,
            tags,
            assessments: serde_json::from_str(&self.assessments).unwrap_or_default(),
        };
        Stored { key: self.key, info, from_spans_only: self.from_spans_only }
    }
}

/// The order `get_traces` returns a trace's spans in: roots first, then by start time and span
/// id (as signed integers, the order of the stored columns).
pub(crate) fn sort_spans(spans: &mut [Span]) {
    spans.sort_unstable_by_key(|s| {
        (s.parent_id.is_some(), s.start_time_unix_nano as i64, s.span_id.to_u64() as i64)
    });
}

/// The indexed columns of a `spans` row (`span_id, parent_span_id, name, type, status,
/// start_time_ns, end_time_ns`), which make its outline.
pub(crate) type OutlineRow = (i64, Option<i64>, String, String, String, i64, Option<i64>);

/// How much of each stored span a read takes without reading span contents whole.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reduced {
    /// The outline ([`tracelake_store::derive::outline`]), for `get_trace_outline`.
    Outline,
    /// What a write needs: roots whole, the others in outline with their token usage.
    ForWrite,
}

impl Reduced {
    /// The columns to select from `spans`: the outline's, then the token usage and the root's
    /// content (NULL when not wanted), read by [`reduced_span`].
    pub(crate) fn columns(self) -> &'static str {
        match self {
            Reduced::Outline => {
                "span_id, parent_span_id, name, type, status, start_time_ns, end_time_ns, \
                 CAST(NULL AS TEXT), CAST(NULL AS TEXT)"
            }
            Reduced::ForWrite => {
                "span_id, parent_span_id, name, type, status, start_time_ns, end_time_ns, token_usage, \
                 CASE WHEN parent_span_id IS NULL THEN content END"
            }
        }
    }
}

/// The outline of a stored span of trace `trace_id` (see [`tracelake_store::derive::outline`]).
fn outline_from_row(trace_id: TraceId, row: OutlineRow) -> StoreResult<Span> {
    let (span_id, parent, name, span_type, status, start, end) = row;
    let span_id = SpanId::new(span_id as u64)
        .ok_or_else(|| StoreError::Internal(format!("trace {trace_id} stores a span with id 0")))?;
    let status = StatusCode::parse(&status)
        .ok_or_else(|| StoreError::Internal(format!("span {span_id} stores the status {status:?}")))?;
    Ok(outline_of(
        trace_id,
        span_id,
        parent.and_then(|p| SpanId::new(p as u64)),
        name,
        &span_type,
        status,
        start as u64,
        end.map(|e| e as u64),
    ))
}

/// A stored span read as [`Reduced`] selects it: whole when its `content` was read (a root, for
/// a write), else its outline with its token usage if read. A write needs no more to bring its
/// trace's info up to date (what [`tracelake_store::derive::refresh_from_spans`] reads);
/// reading every span of a large trace whole on each append would make appending to it cost in
/// proportion to its size.
pub(crate) fn reduced_span(
    trace_id: TraceId,
    row: OutlineRow,
    token_usage: Option<String>,
    content: Option<String>,
) -> StoreResult<Span> {
    if let Some(content) = content {
        return Span::from_dict_json(&content).map_err(|e| {
            StoreError::Internal(format!("a stored span of trace {trace_id} is unreadable: {e}"))
        });
    }
    let mut span = outline_from_row(trace_id, row)?;
    if let Some(usage) = token_usage {
        span.attributes.insert_raw(keys::CHAT_TOKEN_USAGE, usage);
    }
    Ok(span)
}

/// The id the spans of a stored trace carry.
pub(crate) fn span_trace_id(trace_id: &str) -> StoreResult<TraceId> {
    TraceId::from_mlflow(trace_id)
        .map_err(|e| StoreError::Internal(format!("stored trace {trace_id:?}: {e}")))
}
