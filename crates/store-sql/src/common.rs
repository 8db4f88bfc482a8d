//! What both SQL backends do the same way: reading rows into the model, and how a write batch
//! changes a stored trace's info (the merge rules of [`tracelake_store::derive`]).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use tracelake_model::{Span, TraceInfo, TraceLocation, TraceState, tag_keys};
use tracelake_store::LifecycleStage;
use tracelake_store::derive::{info_from_spans, merge_info, refresh_from_spans};

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn lifecycle_stage(stored: &str) -> LifecycleStage {
    if stored == "deleted" { LifecycleStage::Deleted } else { LifecycleStage::Active }
}

/// A row of `traces`, before its tags and metadata are read.
#[derive(Debug)]
pub(crate) struct InfoRow {
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
    pub(crate) fn into_info(
        self,
        trace_id: &str,
        tags: BTreeMap<String, String>,
        trace_metadata: BTreeMap<String, String>,
    ) -> (TraceInfo, bool) {
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
        (info, self.from_spans_only)
    }
}

/// A trace's info after spans were written to it: `stored` is what was there before (with its
/// `from_spans_only` flag), `spans` every span the trace has now. Returns the info to save and
/// whether it still follows the spans only.
pub(crate) fn info_after_spans(
    trace_id: &str,
    experiment_id: &str,
    stored: Option<(TraceInfo, bool)>,
    spans: &[Span],
) -> (TraceInfo, bool) {
    match stored {
        Some((mut info, false)) => {
            refresh_from_spans(&mut info, spans, false);
            (info, false)
        }
        // no info from the client yet: derived from the spans, keeping tags set meanwhile
        placeholder => {
            let mut info = info_from_spans(trace_id, experiment_id, spans);
            for (k, v) in placeholder.into_iter().flat_map(|(previous, _)| previous.tags) {
                info.tags.entry(k).or_insert(v);
            }
            (info, true)
        }
    }
}

/// A trace's info after a client wrote `incoming` for it (MLflow's StartTraceV3): merged into
/// what was stored, completed from the spans the trace has, with its artifact location under
/// the experiment's `artifact_root`.
pub(crate) fn info_after_write(
    stored: Option<TraceInfo>,
    incoming: &TraceInfo,
    artifact_root: &str,
    spans: &[Span],
) -> TraceInfo {
    let mut info = stored.unwrap_or_else(|| TraceInfo {
        trace_id: incoming.trace_id.clone(),
        trace_location: incoming.trace_location.clone(),
        ..TraceInfo::default()
    });
    merge_info(&mut info, incoming);
    info.tags.insert(
        tag_keys::ARTIFACT_LOCATION.into(),
        format!("{artifact_root}/traces/{}/artifacts", incoming.trace_id),
    );
    if !spans.is_empty() {
        refresh_from_spans(&mut info, spans, false);
    }
    info
}

/// The order `get_traces` returns a trace's spans in: roots first, then by start time and span
/// id (as signed integers, the order of the stored columns).
pub(crate) fn sort_spans(spans: &mut [Span]) {
    spans.sort_unstable_by_key(|s| {
        (s.parent_id.is_some(), s.start_time_unix_nano as i64, s.span_id.to_u64() as i64)
    });
}
