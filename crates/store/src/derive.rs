//! How a stored trace's info follows from its spans and from infos written for it: the
//! merge rules every backend applies (see [`crate::TraceStore`]), and how a write batch
//! changes the traces it touches ([`apply_batch`]).

use std::collections::{BTreeMap, HashMap};

use hashbrown::{HashMap as FastMap, HashSet as FastSet};

use tracelake_model::summary::{Role, aggregate_token_usage, preview};
use tracelake_model::{
    Attributes, Span, SpanId, SpanKind, SpanStatus, StatusCode, Trace, TraceId, TraceInfo, TraceLocation,
    TraceState, encode_attribute, keys, limits, metadata_keys, tag_keys,
};

use crate::types::{Experiment, WriteBatch};
use crate::{StoreResult, validate};

/// A span in outline: its ids, name, times, status code and span type (its only attribute),
/// nothing else; the kind is left at its default, since stores index no kind.
pub fn outline(span: &Span) -> Span {
    outline_of(
        span.trace_id,
        span.span_id,
        span.parent_id,
        span.name.to_string(),
        span.span_type().as_str(),
        span.status.code,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
    )
}

/// A stored span reduced to what a write reads of it ([`refresh_from_spans`]): a root whole,
/// any other span in [`outline`] with its token usage.
pub fn for_write(span: Span) -> Span {
    if span.is_root() {
        return span;
    }
    let mut reduced = outline(&span);
    if let Some(usage) = span.attributes.get_raw(keys::CHAT_TOKEN_USAGE) {
        reduced.attributes.insert_raw(keys::CHAT_TOKEN_USAGE, usage.to_owned());
    }
    reduced
}

/// The outline of a span from its indexed fields (as [`outline`] makes it from the span).
#[allow(clippy::too_many_arguments, reason = "one argument per indexed column")]
pub fn outline_of(
    trace_id: TraceId,
    span_id: SpanId,
    parent_id: Option<SpanId>,
    name: String,
    span_type: &str,
    status: StatusCode,
    start_time_unix_nano: u64,
    end_time_unix_nano: Option<u64>,
) -> Span {
    let mut attributes = Attributes::new();
    attributes.insert(keys::SPAN_TYPE, span_type);
    Span {
        trace_id,
        span_id,
        parent_id,
        name: name.into(),
        kind: SpanKind::default(),
        start_time_unix_nano,
        end_time_unix_nano,
        status: SpanStatus { code: status, message: String::new() },
        attributes,
        events: Vec::new(),
        links: Vec::new(),
    }
}

/// A trace with its spans in [`outline`].
pub fn trace_outline(trace: Trace) -> Trace {
    Trace { spans: trace.spans.iter().map(outline).collect(), info: trace.info }
}

/// Where a trace's spans are: in the store itself.
pub const SPANS_LOCATION_TRACKING_STORE: &str = "TRACKING_STORE";

/// Brings `info` up to date with the trace's spans (all of them, as stored now). Timing and
/// state follow the spans only while no info was written for the trace (`from_spans`); the
/// rest (trace name, tags carried on the root, token usage, previews) fills what is still
/// empty, so the result does not depend on whether spans or info arrived first.
///
/// Of the spans it reads the roots whole, and of the others the outline (ids, times, status)
/// and the token usage; other attributes only of spans the write brings (for session and
/// user). A store may therefore hand over its stored spans reduced to that.
pub fn refresh_from_spans(info: &mut TraceInfo, spans: &[Span], from_spans: bool) {
    info.tags.insert(tag_keys::SPANS_LOCATION.into(), SPANS_LOCATION_TRACKING_STORE.into());
    let root = spans.iter().find(|s| s.is_root());
    if from_spans {
        let start = spans.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0);
        let end = spans.iter().filter_map(|s| s.end_time_unix_nano).max().unwrap_or(start);
        info.request_time_ms = (start / 1_000_000) as i64;
        info.execution_duration_ms = Some((end.saturating_sub(start) / 1_000_000) as i64);
        info.state = match root {
            None => TraceState::InProgress,
            Some(r) if r.status.code == StatusCode::Error => TraceState::Error,
            Some(_) => TraceState::Ok,
        };
    }
    // Session and user, as OpenTelemetry instrumentations record them on spans.
    for (meta_key, attrs) in [
        (metadata_keys::SESSION, &["session.id", "gen_ai.conversation.id"][..]),
        (metadata_keys::USER, &["user.id"][..]),
    ] {
        if !info.trace_metadata.contains_key(meta_key)
            && let Some(v) = spans.iter().find_map(|s| attrs.iter().find_map(|a| s.attributes.get_str(a)))
        {
            info.trace_metadata.insert(meta_key.into(), v.into_owned());
        }
    }
    if let Some(usage) = aggregate_token_usage(spans) {
        info.trace_metadata
            .entry(metadata_keys::TOKEN_USAGE.into())
            .or_insert_with(|| encode_attribute(&usage));
    }
    let Some(root) = root else { return };
    info.tags.entry(tag_keys::TRACE_NAME.into()).or_insert_with(|| root.name.to_string());
    // Tags smuggled on the root span by OTLP-only clients.
    for (k, v) in root.attributes.iter() {
        if let Some(tag) = k.strip_prefix(keys::TRACE_TAG_PREFIX)
            && !tag_keys::IMMUTABLE.contains(&tag)
        {
            let value = root.attributes.get_str(k).map_or_else(|| v.to_owned(), |s| s.into_owned());
            info.tags.entry(tag.to_owned()).or_insert(value);
        }
    }
    if info.request_preview.is_none()
        && let Some(inputs) = root.attributes.get_raw(keys::INPUTS)
    {
        info.request_preview = Some(preview(inputs, Role::User, limits::MAX_PREVIEW_CHARS));
    }
    if info.response_preview.is_none()
        && let Some(outputs) = root.attributes.get_raw(keys::OUTPUTS)
    {
        info.response_preview = Some(preview(outputs, Role::Assistant, limits::MAX_PREVIEW_CHARS));
    }
}

/// Whether a location key names a lake schema (`catalog.schema`) rather than an experiment id.
pub fn is_lake_schema(location: &str) -> bool {
    location.contains('.')
}

/// The MLflow id of a trace written to `location`: `tr-<hex>` in an experiment,
/// `trace:/<catalog>.<schema>/<hex>` in a lake schema.
pub fn trace_id_in(location: &str, trace_id: TraceId) -> String {
    if is_lake_schema(location) { trace_id.to_mlflow_v4(location) } else { trace_id.to_mlflow_v3() }
}

/// The trace location a location key names.
pub fn location_from_key(location: &str) -> TraceLocation {
    match location.split_once('.') {
        Some((catalog, schema)) => TraceLocation::uc_schema(catalog, schema),
        None => TraceLocation::experiment(location),
    }
}

/// The key of a trace location: its experiment id, or `catalog.schema` for a lake schema
/// (`"0"` for a location stored nowhere else).
pub fn location_key(location: &TraceLocation) -> String {
    match location {
        TraceLocation::MlflowExperiment { experiment_id } => experiment_id.clone(),
        TraceLocation::UcSchema { catalog_name, schema_name, .. } => format!("{catalog_name}.{schema_name}"),
        TraceLocation::InferenceTable { .. } => "0".to_owned(),
    }
}

/// A fresh info for a trace first seen through its spans, written to `location` (an
/// experiment id or a lake schema).
pub fn info_from_spans(trace_id: &str, location: &str, spans: &[Span]) -> TraceInfo {
    let mut info = TraceInfo {
        trace_id: trace_id.to_owned(),
        trace_location: location_from_key(location),
        ..TraceInfo::default()
    };
    info.trace_metadata.insert(metadata_keys::SCHEMA_VERSION.into(), "3".into());
    refresh_from_spans(&mut info, spans, true);
    info
}

/// Merges an info written for a trace (MLflow's StartTraceV3) into what is stored: its
/// timing, state, previews and client request id win; its tags and metadata are added.
pub fn merge_info(stored: &mut TraceInfo, incoming: &TraceInfo) {
    stored.request_time_ms = incoming.request_time_ms;
    stored.execution_duration_ms = incoming.execution_duration_ms.or(stored.execution_duration_ms);
    if incoming.state != TraceState::Unspecified {
        stored.state = incoming.state;
    }
    if incoming.request_preview.is_some() {
        stored.request_preview.clone_from(&incoming.request_preview);
    }
    if incoming.response_preview.is_some() {
        stored.response_preview.clone_from(&incoming.response_preview);
    }
    if incoming.client_request_id.is_some() {
        stored.client_request_id.clone_from(&incoming.client_request_id);
    }
    for (k, v) in &incoming.tags {
        if !tag_keys::IMMUTABLE.contains(&k.as_str()) {
            stored.tags.insert(k.clone(), v.clone());
        }
    }
    stored.trace_metadata.extend(incoming.trace_metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
    stored.trace_metadata.insert(metadata_keys::INFO_FINALIZED.into(), "true".into());
    for a in &incoming.assessments {
        if !stored.assessments.contains(a) {
            stored.assessments.push(a.clone());
        }
    }
}

/// Puts a trace's spans in the order readers expect: the root first, then by start time.
pub fn order_spans(spans: &mut [Span]) {
    spans.sort_by_key(|s| (!s.is_root(), s.start_time_unix_nano));
}

/// A trace as a write finds it in the store.
#[derive(Debug)]
pub struct Stored<K> {
    pub key: K,
    pub info: TraceInfo,
    pub from_spans_only: bool,
}

/// The locations a batch writes to, each once, in the order named; the caller checks each is
/// an active experiment (or a lake schema it keeps) before anything is written.
pub fn batch_locations(batch: &WriteBatch) -> StoreResult<Vec<String>> {
    let mut seen: Vec<String> = Vec::new();
    let span_locations = batch.spans.iter().map(|(location, _)| Ok(location.clone()));
    for location in batch.infos.iter().map(validate::trace_location).chain(span_locations) {
        let location = location?;
        if !seen.contains(&location) {
            seen.push(location);
        }
    }
    Ok(seen)
}

/// The traces a batch touches, each once, in the order first touched, with the location the
/// batch names for each: `(trace id, location)`.
pub fn batch_traces(batch: &WriteBatch) -> Vec<(String, String)> {
    let mut seen = FastSet::new();
    let spans = batch.spans.iter().map(|(l, s)| (trace_id_in(l, s.trace_id), l.clone()));
    let infos = batch.infos.iter().map(|i| (i.trace_id.clone(), location_key(&i.trace_location)));
    spans.chain(infos).filter(|(id, _)| seen.insert(id.clone())).collect()
}

/// A trace as a batch leaves it: what to save.
#[derive(Debug)]
pub struct Changed<K> {
    /// Its key, when it was stored before.
    pub key: Option<K>,
    /// Where it is written: an experiment id, or a lake schema `catalog.schema`.
    pub location: String,
    pub info: TraceInfo,
    pub from_spans_only: bool,
    /// Every span the trace has: the stored ones, replaced or joined by the batch's.
    pub spans: Vec<Span>,
    /// The span ids the batch wrote.
    pub written: FastSet<u64>,
    /// The tags and metadata stored before the batch, so a store rewrites only the entries
    /// that changed (and leaves their index entries alone).
    pub previous: Option<(BTreeMap<String, String>, BTreeMap<String, String>)>,
}

impl<K> Changed<K> {
    /// The spans the batch wrote (the last of each id).
    pub fn written_spans(&self) -> impl Iterator<Item = &Span> {
        self.spans.iter().filter(|s| self.written.contains(&s.span_id.to_u64()))
    }
}

/// Applies a batch to the traces it touches, in memory: `touched` is [`batch_traces`], `stored`
/// what the store holds of them and `stored_spans` their spans by key. Spans go first, then
/// infos, in the batch's order; the result is in `order`.
pub fn apply_batch<K: Copy + Eq + std::hash::Hash>(
    batch: WriteBatch,
    touched: &[(String, String)],
    mut stored: HashMap<String, Stored<K>>,
    mut stored_spans: HashMap<K, Vec<Span>>,
    experiments: &BTreeMap<String, Experiment>,
) -> StoreResult<Vec<Changed<K>>> {
    struct Pending<K> {
        key: Option<K>,
        previous: Option<(BTreeMap<String, String>, BTreeMap<String, String>)>,
        location: String,
        info: Option<(TraceInfo, bool)>,
        spans: Vec<Span>,
        position: FastMap<u64, usize>,
        written: FastSet<u64>,
    }
    let mut pending: FastMap<&str, Pending<K>> = FastMap::with_capacity(touched.len());
    for (id, location) in touched {
        let p = match stored.remove(id) {
            Some(s) => {
                let spans = stored_spans.remove(&s.key).unwrap_or_default();
                Pending {
                    key: Some(s.key),
                    previous: Some((s.info.tags.clone(), s.info.trace_metadata.clone())),
                    // a stored trace stays where it is
                    location: location_key(&s.info.trace_location),
                    position: spans.iter().enumerate().map(|(i, s)| (s.span_id.to_u64(), i)).collect(),
                    spans,
                    info: Some((s.info, s.from_spans_only)),
                    written: FastSet::new(),
                }
            }
            None => Pending {
                key: None,
                previous: None,
                location: location.clone(),
                info: None,
                spans: Vec::new(),
                position: FastMap::new(),
                written: FastSet::new(),
            },
        };
        pending.insert(id, p);
    }

    let mut with_spans: Vec<String> = Vec::new();
    for (location, span) in batch.spans {
        let id = trace_id_in(&location, span.trace_id);
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
        p.info = Some(info_after_spans(&id, &p.location, p.info.take(), &p.spans));
    }
    for incoming in &batch.infos {
        let p = pending.get_mut(incoming.trace_id.as_str()).expect("touched");
        let root = experiments.get(&p.location).map_or("", |e| e.artifact_location.as_str());
        let stored = p.info.take().map(|(info, _)| info);
        p.info = Some((info_after_write(stored, incoming, root, &p.spans), false));
    }

    let mut out = Vec::with_capacity(touched.len());
    for (id, _) in touched {
        let p = pending.remove(id.as_str()).expect("touched");
        let (info, from_spans_only) = p.info.expect("a touched trace has spans or an info");
        out.push(Changed {
            key: p.key,
            location: p.location,
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
    location: &str,
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
            let mut info = info_from_spans(trace_id, location, spans);
            if let Some((previous, _)) = placeholder {
                for (k, v) in previous.tags {
                    info.tags.entry(k).or_insert(v);
                }
                // Session and user came from the stored spans, which a store may hand over
                // without their attributes (see `refresh_from_spans`).
                for key in [metadata_keys::SESSION, metadata_keys::USER] {
                    if let Some(v) = previous.trace_metadata.get(key) {
                        info.trace_metadata.entry(key.into()).or_insert_with(|| v.clone());
                    }
                }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::conformance::span;

    #[test]
    fn a_trace_info_follows_from_spans_reduced_for_a_write_as_from_whole_ones() {
        let t = TraceId::new(0x51).unwrap();
        let mut root = span(t, 1, None, "agent", 1000, 1200);
        root.attributes.insert(keys::INPUTS, &json!({"question": "why"}));
        root.attributes.insert(keys::OUTPUTS, &json!({"answer": "because"}));
        root.attributes.insert("mlflow.traceTag.team", "search");
        let mut llm = span(t, 2, Some(1), "llm", 1010, 1100);
        llm.attributes.insert(keys::SPAN_TYPE, "LLM");
        llm.attributes.insert(keys::INPUTS, &json!({"prompt": "a long prompt"}));
        llm.attributes.insert(
            keys::CHAT_TOKEN_USAGE,
            &json!({"input_tokens": 7, "output_tokens": 2, "total_tokens": 9}),
        );
        llm.status = SpanStatus { code: StatusCode::Error, message: "rate limited".into() };
        let whole = vec![root.clone(), llm.clone()];

        let reduced: Vec<Span> = whole.iter().cloned().map(for_write).collect();
        assert_eq!(reduced[0], root, "a root is kept whole");
        let usage = llm.attributes.get_raw(keys::CHAT_TOKEN_USAGE).unwrap().to_owned();
        let mut expected = outline(&llm);
        expected.attributes.insert_raw(keys::CHAT_TOKEN_USAGE, usage);
        assert_eq!(reduced[1], expected, "a child keeps its outline and token usage only");
        assert_eq!(reduced[1].attributes.get_raw(keys::INPUTS), None);

        let from_whole = info_from_spans("tr-51", "0", &whole);
        let from_reduced = info_from_spans("tr-51", "0", &reduced);
        assert_eq!(from_reduced, from_whole);
        // what the two agree on is there to agree on
        let tokens: serde_json::Value =
            serde_json::from_str(&from_whole.trace_metadata[metadata_keys::TOKEN_USAGE]).unwrap();
        assert_eq!(tokens, json!({"input_tokens": 7, "output_tokens": 2, "total_tokens": 9}));
        assert_eq!(from_whole.tags["team"], "search");
        assert!(from_whole.request_preview.as_deref().is_some_and(|p| p.contains("why")));
        assert!(from_whole.response_preview.as_deref().is_some_and(|p| p.contains("because")));
    }
}
