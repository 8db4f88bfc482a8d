//! What both SQL backends do the same way: reading rows into the model, and how a write batch
//! changes a stored trace's info (the merge rules of [`tracelake_store::derive`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use tracelake_model::{Span, TraceInfo, TraceLocation, TraceState, tag_keys};
use tracelake_store::derive::{info_from_spans, merge_info, refresh_from_spans};
use tracelake_store::{Experiment, LifecycleStage, Run, StoreError, StoreResult, WriteBatch, validate};

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
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
    ) -> Stored {
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

/// A trace as a write finds it in the store.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) key: i64,
    pub(crate) info: TraceInfo,
    pub(crate) from_spans_only: bool,
}

/// The experiments a batch writes to, each once, in the order named; the caller checks each is
/// active before anything is written.
pub(crate) fn batch_experiments(batch: &WriteBatch) -> StoreResult<Vec<&str>> {
    let mut seen = Vec::new();
    let span_experiments = batch.spans.iter().map(|(experiment_id, _)| Ok(experiment_id.as_str()));
    for experiment_id in batch.infos.iter().map(validate::trace_info).chain(span_experiments) {
        let experiment_id = experiment_id?;
        if !seen.contains(&experiment_id) {
            seen.push(experiment_id);
        }
    }
    Ok(seen)
}

/// The traces a batch touches, each once, in the order first touched, with the experiment the
/// batch names for each: `(trace id, experiment id)`.
pub(crate) fn batch_traces(batch: &WriteBatch) -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    let spans = batch.spans.iter().map(|(e, s)| (s.trace_id.to_mlflow_v3(), e.as_str()));
    let infos =
        batch.infos.iter().map(|i| (i.trace_id.clone(), i.trace_location.experiment_id().unwrap_or("0")));
    spans
        .chain(infos)
        .filter(|(id, _)| seen.insert(id.clone()))
        .map(|(id, experiment)| (id, experiment.to_owned()))
        .collect()
}

/// A trace as a batch leaves it: what to save.
#[derive(Debug)]
pub(crate) struct Changed {
    /// Its key, when it was stored before.
    pub(crate) key: Option<i64>,
    pub(crate) experiment_id: i64,
    pub(crate) info: TraceInfo,
    pub(crate) from_spans_only: bool,
    /// Every span the trace has: the stored ones, replaced or joined by the batch's.
    pub(crate) spans: Vec<Span>,
    /// The span ids the batch wrote.
    pub(crate) written: HashSet<u64>,
    /// The tags and metadata stored before the batch, so a store rewrites only the entries
    /// that changed (and leaves their index entries alone).
    pub(crate) previous: Option<(BTreeMap<String, String>, BTreeMap<String, String>)>,
}

impl Changed {
    /// The spans the batch wrote (the last of each id).
    pub(crate) fn written_spans(&self) -> impl Iterator<Item = &Span> {
        self.spans.iter().filter(|s| self.written.contains(&s.span_id.to_u64()))
    }
}

/// Applies a batch to the traces it touches, in memory: `touched` is [`batch_traces`], `stored`
/// what the store holds of them and `stored_spans` their spans by key. Spans go first, then
/// infos, in the batch's order; the result is in `order`.
pub(crate) fn apply_batch(
    batch: WriteBatch,
    touched: &[(String, String)],
    mut stored: HashMap<String, Stored>,
    mut stored_spans: HashMap<i64, Vec<Span>>,
    experiments: &BTreeMap<String, Experiment>,
) -> StoreResult<Vec<Changed>> {
    struct Pending {
        key: Option<i64>,
        previous: Option<(BTreeMap<String, String>, BTreeMap<String, String>)>,
        experiment_id: String,
        info: Option<(TraceInfo, bool)>,
        spans: Vec<Span>,
        position: HashMap<u64, usize>,
        written: HashSet<u64>,
    }
    let mut pending: HashMap<&str, Pending> = HashMap::with_capacity(touched.len());
    for (id, experiment_id) in touched {
        let p = match stored.remove(id) {
            Some(s) => {
                let spans = stored_spans.remove(&s.key).unwrap_or_default();
                Pending {
                    key: Some(s.key),
                    previous: Some((s.info.tags.clone(), s.info.trace_metadata.clone())),
                    // a stored trace stays in its experiment
                    experiment_id: s.info.trace_location.experiment_id().unwrap_or("0").to_owned(),
                    position: spans.iter().enumerate().map(|(i, s)| (s.span_id.to_u64(), i)).collect(),
                    spans,
                    info: Some((s.info, s.from_spans_only)),
                    written: HashSet::new(),
                }
            }
            None => Pending {
                key: None,
                previous: None,
                experiment_id: experiment_id.clone(),
                info: None,
                spans: Vec::new(),
                position: HashMap::new(),
                written: HashSet::new(),
            },
        };
        pending.insert(id, p);
    }

    let mut with_spans: Vec<String> = Vec::new();
    for (_, span) in batch.spans {
        let id = span.trace_id.to_mlflow_v3();
        let p = pending.get_mut(id.as_str()).expect("touched");
        let span_id = span.span_id.to_u64();
        if p.written.is_empty() {
            with_spans.push(id);
        }
        p.written.insert(span_id);
        match p.position.get(&span_id) {
            Some(&i) => p.spans[i] = span,
            None => {
                p.position.insert(span_id, p.spans.len());
                p.spans.push(span);
            }
        }
    }
    with_spans.sort_unstable();
    for id in with_spans {
        let p = pending.get_mut(id.as_str()).expect("touched");
        p.info = Some(info_after_spans(&id, &p.experiment_id, p.info.take(), &p.spans));
    }
    for incoming in &batch.infos {
        let p = pending.get_mut(incoming.trace_id.as_str()).expect("touched");
        let root = experiments.get(&p.experiment_id).map_or("", |e| e.artifact_location.as_str());
        let stored = p.info.take().map(|(info, _)| info);
        p.info = Some((info_after_write(stored, incoming, root, &p.spans), false));
    }

    let mut out = Vec::with_capacity(touched.len());
    for (id, _) in touched {
        let p = pending.remove(id.as_str()).expect("touched");
        let (info, from_spans_only) = p.info.expect("a touched trace has spans or an info");
        out.push(Changed {
            key: p.key,
            experiment_id: validate::experiment_id(&p.experiment_id)?,
            info,
            from_spans_only,
            spans: p.spans,
            written: p.written,
            previous: p.previous,
        });
    }
    Ok(out)
}

/// A trace's info after spans were written to it: `stored` is what was there before (with its
/// `from_spans_only` flag), `spans` every span the trace has now. Returns the info to save and
/// whether it still follows the spans only.
fn info_after_spans(
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
fn info_after_write(
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
