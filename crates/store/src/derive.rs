//! How a stored trace's info follows from its spans and from infos written for it: the
//! merge rules every backend applies (see [`crate::TraceStore`]).

use tracelake_model::summary::{Role, aggregate_token_usage, preview};
use tracelake_model::{
    Span, StatusCode, TraceInfo, TraceLocation, TraceState, encode_attribute, keys, limits, metadata_keys,
    tag_keys,
};

/// Where a trace's spans are: in the store itself.
pub const SPANS_LOCATION_TRACKING_STORE: &str = "TRACKING_STORE";

/// Brings `info` up to date with the trace's spans (all of them, as stored now). Timing and
/// state follow the spans only while no info was written for the trace (`from_spans`); the
/// rest (trace name, tags carried on the root, token usage, previews) fills what is still
/// empty, so the result does not depend on whether spans or info arrived first.
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

/// A fresh info for a trace first seen through its spans.
pub fn info_from_spans(trace_id: &str, experiment_id: &str, spans: &[Span]) -> TraceInfo {
    let mut info = TraceInfo {
        trace_id: trace_id.to_owned(),
        trace_location: TraceLocation::experiment(experiment_id),
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
