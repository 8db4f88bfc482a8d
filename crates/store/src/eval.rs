//! Evaluating a [`Filter`] and an `order_by` against traces held in memory. SQL backends
//! translate the same [`Filter`] into queries; this is the reference semantics they must match
//! (the conformance suite checks them against each other).

use std::cmp::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use regex::Regex;
use serde_json::Value;
use tracelake_model::{Span, TraceInfo, metadata_keys, tag_keys};

use crate::filter::{
    Attribute, Clause, ExperimentOrderKey, ExperimentTarget, Filter, Literal, Op, OrderBy, OrderKey,
    SpanField, Target,
};
use crate::store::{StoreError, StoreResult};
use crate::types::{Experiment, ExperimentQuery, Page};
use crate::validate;

/// A stored trace as the evaluator sees it.
#[derive(Debug, Clone, Copy)]
pub struct TraceView<'a> {
    pub info: &'a TraceInfo,
    pub spans: &'a [Span],
    /// Runs the trace was linked to with `LinkTracesToRun`.
    pub linked_runs: &'a [String],
}

/// Whether `trace` satisfies every clause. Span clauses must all hold for one and the same
/// span, as in MLflow.
pub fn matches(filter: &Filter, trace: TraceView<'_>) -> StoreResult<bool> {
    let mut span_clauses = Vec::new();
    for clause in &filter.clauses {
        match &clause.target {
            Target::Span(_) => span_clauses.push(clause),
            _ => {
                if !trace_clause(clause, trace)? {
                    return Ok(false);
                }
            }
        }
    }
    if span_clauses.is_empty() {
        return Ok(true);
    }
    for span in trace.spans {
        let mut all = true;
        for clause in &span_clauses {
            if !span_clause(clause, span)? {
                all = false;
                break;
            }
        }
        if all {
            return Ok(true);
        }
    }
    Ok(false)
}

fn trace_clause(clause: &Clause, t: TraceView<'_>) -> StoreResult<bool> {
    let info = t.info;
    match &clause.target {
        Target::Attribute(attr) => match attr {
            Attribute::TimestampMs => compare_number(Some(info.request_time_ms as f64), clause),
            Attribute::ExecutionTimeMs => {
                compare_number(info.execution_duration_ms.map(|d| d as f64), clause)
            }
            Attribute::EndTimeMs => {
                compare_number(info.execution_duration_ms.map(|d| (info.request_time_ms + d) as f64), clause)
            }
            Attribute::RequestId => compare_text(Some(&info.trace_id), clause),
            Attribute::Status => compare_text(Some(info.state.as_str()), clause),
            Attribute::ClientRequestId => compare_text(info.client_request_id.as_deref(), clause),
            Attribute::Name => compare_text(info.tags.get(tag_keys::TRACE_NAME).map(String::as_str), clause),
            Attribute::RunId => {
                let source = info.trace_metadata.get(metadata_keys::SOURCE_RUN).map(String::as_str);
                let candidates = source.into_iter().chain(t.linked_runs.iter().map(String::as_str));
                any_text(candidates, clause)
            }
            Attribute::Prompt => {
                let linked = info.tags.get(tag_keys::LINKED_PROMPTS).map(String::as_str).unwrap_or("[]");
                let prompts: Vec<Value> = serde_json::from_str(linked).unwrap_or_default();
                let names = prompts.iter().filter_map(|p| {
                    let name = p.get("name")?.as_str()?;
                    let version =
                        p.get("version").map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))?;
                    Some(format!("{name}/{version}"))
                });
                let names: Vec<String> = names.collect();
                any_text(names.iter().map(String::as_str), clause)
            }
            Attribute::Text => {
                let contents: Vec<String> = t.spans.iter().map(span_content).collect();
                any_text(contents.iter().map(String::as_str), clause)
            }
        },
        Target::Tag(key) => compare_text(info.tags.get(key).map(String::as_str), clause),
        Target::Metadata(key) => compare_text(info.trace_metadata.get(key).map(String::as_str), clause),
        Target::Feedback(name) => assessment_clause(info, "feedback", name, clause),
        Target::Expectation(name) => assessment_clause(info, "expectation", name, clause),
        Target::IssueId => {
            Err(StoreError::InvalidArgument("issue.id filters are not supported by this store yet".into()))
        }
        Target::Span(_) => unreachable!("span clauses are evaluated per span"),
    }
}

fn span_clause(clause: &Clause, span: &Span) -> StoreResult<bool> {
    let Target::Span(field) = &clause.target else { unreachable!("only span clauses come here") };
    match field {
        SpanField::Name => compare_text(Some(&span.name), clause),
        SpanField::Type => compare_text(Some(span.span_type().as_str()), clause),
        SpanField::Status => compare_text(Some(span.status.code.as_str()), clause),
        SpanField::Content => compare_text(Some(&span_content(span)), clause),
        SpanField::Attribute(key) => {
            let value = span.attributes.get_str(key);
            compare_text(value.as_deref(), clause)
        }
    }
}

/// The span as the MLflow span dict JSON (what `span.content` and `trace.text` search).
fn span_content(span: &Span) -> String {
    span.to_dict_json()
}

/// Assessments are carried as MLflow JSON: `{"assessment_name", "feedback": {"value"}, ...}`.
fn assessment_clause(info: &TraceInfo, kind: &str, name: &str, clause: &Clause) -> StoreResult<bool> {
    let values: Vec<&Value> = info
        .assessments
        .iter()
        .filter(|a| a.get("assessment_name").and_then(Value::as_str) == Some(name))
        .filter(|a| a.get("valid").and_then(Value::as_bool) != Some(false))
        .filter_map(|a| a.get(kind).and_then(|v| v.get("value")))
        .collect();
    match clause.op {
        Op::IsNull => return Ok(values.is_empty()),
        Op::IsNotNull => return Ok(!values.is_empty()),
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            for v in &values {
                if compare_number(v.as_f64(), clause)? {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        _ => {}
    }
    let texts: Vec<String> =
        values.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect();
    any_text(texts.iter().map(String::as_str), clause)
}

fn any_text<'a>(mut candidates: impl Iterator<Item = &'a str>, clause: &Clause) -> StoreResult<bool> {
    match clause.op {
        // "not equal to any" for negative operators over several candidates
        Op::NotEq | Op::NotIn => {
            let all: Vec<&str> = candidates.collect();
            if all.is_empty() {
                return Ok(false);
            }
            for c in all {
                if !compare_text(Some(c), clause)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        _ => {
            for c in candidates.by_ref() {
                if compare_text(Some(c), clause)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
    }
}

/// Compares a text value; an absent value matches only `IS NULL`.
fn compare_text<T>(value: Option<&str>, clause: &Clause<T>) -> StoreResult<bool> {
    let Some(v) = value else { return Ok(clause.op == Op::IsNull) };
    Ok(match (&clause.op, &clause.value) {
        (Op::IsNull, _) => false,
        (Op::IsNotNull, _) => true,
        (Op::Eq, l) => v == l.text(),
        (Op::NotEq, l) => v != l.text(),
        (Op::In, Literal::List(items)) => items.iter().any(|i| i == v),
        (Op::NotIn, Literal::List(items)) => !items.iter().any(|i| i == v),
        (Op::Like, l) => like(&l.text(), false)?.is_match(v),
        (Op::ILike, l) => like(&l.text(), true)?.is_match(v),
        (Op::RLike, l) => Regex::new(&l.text())
            .map_err(|e| StoreError::InvalidArgument(format!("invalid RLIKE pattern: {e}")))?
            .is_match(v),
        (op, _) => {
            return Err(StoreError::InvalidArgument(format!("{} cannot compare text", op.as_str())));
        }
    })
}

fn compare_number<T>(value: Option<f64>, clause: &Clause<T>) -> StoreResult<bool> {
    let Some(v) = value else { return Ok(false) };
    let n = match clause.value {
        Literal::Int(i) => i as f64,
        Literal::Float(f) => f,
        _ => return Err(StoreError::InvalidArgument("expected a number".into())),
    };
    Ok(match clause.op {
        Op::Eq => v == n,
        Op::NotEq => v != n,
        Op::Gt => v > n,
        Op::Ge => v >= n,
        Op::Lt => v < n,
        Op::Le => v <= n,
        op => return Err(StoreError::InvalidArgument(format!("{} cannot compare numbers", op.as_str()))),
    })
}

/// SQL `LIKE` as a regex: `%` any run, `_` one character, everything else literal.
pub fn like(pattern: &str, case_insensitive: bool) -> StoreResult<Regex> {
    let mut re = String::with_capacity(pattern.len() + 8);
    re.push_str(if case_insensitive { "(?is)^" } else { "(?s)^" });
    for c in pattern.chars() {
        match c {
            '%' => re.push_str(".*"),
            '_' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    Regex::new(&re).map_err(|e| StoreError::InvalidArgument(format!("invalid LIKE pattern: {e}")))
}

/// Orders trace infos by `order_by`, then `timestamp_ms DESC`, then `request_id ASC`.
pub fn compare(a: &TraceInfo, b: &TraceInfo, order_by: &[OrderBy]) -> Ordering {
    for o in order_by {
        let ord = compare_key(a, b, &o.key);
        let ord = if o.ascending { ord } else { ord.reverse() };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    b.request_time_ms.cmp(&a.request_time_ms).then_with(|| a.trace_id.cmp(&b.trace_id))
}

fn compare_key(a: &TraceInfo, b: &TraceInfo, key: &OrderKey) -> Ordering {
    match key {
        OrderKey::ExperimentId => {
            let id = |i: &TraceInfo| i.trace_location.experiment_id().and_then(|e| e.parse::<i64>().ok());
            id(a).cmp(&id(b))
        }
        OrderKey::Attribute(Attribute::TimestampMs) => a.request_time_ms.cmp(&b.request_time_ms),
        OrderKey::Attribute(Attribute::ExecutionTimeMs) => {
            a.execution_duration_ms.cmp(&b.execution_duration_ms)
        }
        OrderKey::Attribute(Attribute::EndTimeMs) => {
            let end = |i: &TraceInfo| i.execution_duration_ms.map(|d| i.request_time_ms + d);
            end(a).cmp(&end(b))
        }
        OrderKey::Attribute(Attribute::Status) => a.state.as_str().cmp(b.state.as_str()),
        OrderKey::Attribute(Attribute::RequestId) => a.trace_id.cmp(&b.trace_id),
        OrderKey::Attribute(Attribute::Name) => {
            a.tags.get(tag_keys::TRACE_NAME).cmp(&b.tags.get(tag_keys::TRACE_NAME))
        }
        OrderKey::Attribute(Attribute::RunId) => a
            .trace_metadata
            .get(metadata_keys::SOURCE_RUN)
            .cmp(&b.trace_metadata.get(metadata_keys::SOURCE_RUN)),
        OrderKey::Attribute(_) => Ordering::Equal,
        OrderKey::Tag(k) => a.tags.get(k).cmp(&b.tags.get(k)),
        OrderKey::Metadata(k) => a.trace_metadata.get(k).cmp(&b.trace_metadata.get(k)),
    }
}

/// Whether `experiment` satisfies every clause of an experiment filter. A tag clause other
/// than `IS NULL` needs the tag to be set, as in MLflow.
pub fn experiment_matches(filter: &Filter<ExperimentTarget>, experiment: &Experiment) -> StoreResult<bool> {
    for clause in &filter.clauses {
        let holds = match &clause.target {
            ExperimentTarget::Name => compare_text(Some(&experiment.name), clause)?,
            ExperimentTarget::ExperimentId => {
                let id = |text: &str| text.parse::<i64>().ok();
                let own = id(&experiment.experiment_id);
                match (&clause.op, &clause.value) {
                    (Op::Eq, l) => own == id(&l.text()),
                    (Op::NotEq, l) => own != id(&l.text()),
                    (Op::In, Literal::List(ids)) => ids.iter().any(|i| id(i) == own),
                    (Op::NotIn, Literal::List(ids)) => !ids.iter().any(|i| id(i) == own),
                    (op, _) => {
                        return Err(StoreError::InvalidArgument(format!(
                            "experiment_id does not support {}",
                            op.as_str()
                        )));
                    }
                }
            }
            ExperimentTarget::CreationTime => {
                compare_number(Some(experiment.creation_time_ms as f64), clause)?
            }
            ExperimentTarget::LastUpdateTime => {
                compare_number(Some(experiment.last_update_time_ms as f64), clause)?
            }
            ExperimentTarget::Tag(key) => compare_text(experiment.tags.get(key).map(String::as_str), clause)?,
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

/// MLflow's order when `order_by` is empty: newest first.
pub const DEFAULT_EXPERIMENT_ORDER: [OrderBy<ExperimentOrderKey>; 2] = [
    OrderBy { key: ExperimentOrderKey::CreationTime, ascending: false },
    OrderBy { key: ExperimentOrderKey::ExperimentId, ascending: true },
];

/// Orders experiments by `order_by` (by [`DEFAULT_EXPERIMENT_ORDER`] when empty), then by
/// experiment id descending.
pub fn compare_experiments(
    a: &Experiment,
    b: &Experiment,
    order_by: &[OrderBy<ExperimentOrderKey>],
) -> Ordering {
    let order_by = if order_by.is_empty() { &DEFAULT_EXPERIMENT_ORDER[..] } else { order_by };
    let id = |e: &Experiment| e.experiment_id.parse::<i64>().ok();
    for o in order_by {
        let ord = match o.key {
            ExperimentOrderKey::Name => a.name.cmp(&b.name),
            ExperimentOrderKey::ExperimentId => id(a).cmp(&id(b)),
            ExperimentOrderKey::CreationTime => a.creation_time_ms.cmp(&b.creation_time_ms),
            ExperimentOrderKey::LastUpdateTime => a.last_update_time_ms.cmp(&b.last_update_time_ms),
        };
        let ord = if o.ascending { ord } else { ord.reverse() };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    id(b).cmp(&id(a))
}

/// Answers a `search_experiments` query from every experiment of its view.
pub fn search_experiments(all: Vec<Experiment>, query: &ExperimentQuery) -> StoreResult<Page<Experiment>> {
    validate::max_results(query.max_results)?;
    let offset = decode_page_token(query.page_token.as_deref())?;
    let mut found = Vec::new();
    for e in all {
        if experiment_matches(&query.filter, &e)? {
            found.push(e);
        }
    }
    found.sort_by(|a, b| compare_experiments(a, b, &query.order_by));
    Ok(page(found, offset, query.max_results))
}

/// The page of `max_results` starting at `offset` of results already in order, with the
/// token of the next page when there is more.
pub fn page<T>(ordered: Vec<T>, offset: usize, max_results: usize) -> Page<T> {
    let total = ordered.len();
    let items: Vec<T> = ordered.into_iter().skip(offset).take(max_results).collect();
    let next = offset + items.len();
    Page { next_page_token: (next < total).then(|| encode_page_token(next)), items }
}

/// MLflow's page token: base64 of `{"offset": N}`.
pub fn encode_page_token(offset: usize) -> String {
    BASE64.encode(serde_json::json!({ "offset": offset }).to_string())
}

/// Reads a page token (none means the first page).
pub fn decode_page_token(token: Option<&str>) -> StoreResult<usize> {
    let Some(token) = token.filter(|t| !t.is_empty()) else { return Ok(0) };
    let invalid =
        || StoreError::InvalidArgument(format!("invalid page token {token:?}: pass back a next_page_token"));
    let bytes = BASE64.decode(token).map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    value.get("offset").and_then(Value::as_u64).map(|o| o as usize).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_follow_sql() {
        assert!(like("chat%", false).unwrap().is_match("chat_model"));
        assert!(!like("chat%", false).unwrap().is_match("Chat"));
        assert!(like("chat%", true).unwrap().is_match("CHAT"));
        assert!(like("a_c", false).unwrap().is_match("abc"));
        assert!(like("1.5%", false).unwrap().is_match("1.5x"));
        assert!(!like("1.5%", false).unwrap().is_match("125x"));
    }

    #[test]
    fn page_tokens_round_trip_and_bad_ones_are_refused() {
        assert_eq!(decode_page_token(Some(&encode_page_token(300))).unwrap(), 300);
        assert_eq!(decode_page_token(None).unwrap(), 0);
        assert!(decode_page_token(Some("bogus!")).is_err());
    }
}
