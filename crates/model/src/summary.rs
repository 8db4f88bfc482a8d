//! Trace-level summaries derived from spans: request/response previews, the truncated
//! `mlflow.traceInputs` / `mlflow.traceOutputs` metadata, and token usage.
//!
//! These are pure functions so the SDK (when a root span ends) and the server (when spans
//! arrive over OTLP without a trace info) compute them identically.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::attributes::keys;
use crate::ids::SpanId;
use crate::span::Span;

/// Which side of a conversation a preview shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A request preview: the last `user` message.
    User,
    /// A response preview: the last `assistant` message.
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// Cuts `text` to at most `max_chars` characters, ending in `...` when it was cut.
pub fn truncate_chars(text: &str, max_chars: usize) -> String {
    if text.len() <= max_chars {
        return text.to_owned(); // never more characters than bytes
    }
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some(_) => {
            let keep = max_chars.saturating_sub(3);
            let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
            format!("{}...", &text[..end])
        }
    }
}

/// The preview MLflow shows for a root span's JSON-encoded inputs or outputs.
///
/// Chat-shaped payloads (OpenAI chat `messages`, a chat completion's `choices`, Responses API
/// `input`/`output`, or those nested under `request`) preview as the text of the last message
/// of `role`; anything else as its JSON text. NUL characters become U+FFFD.
pub fn preview(json_text: &str, role: Role, max_chars: usize) -> String {
    // Every chat message has a "role" key: without one there is nothing to parse for.
    let content = Some(json_text)
        .filter(|t| t.contains("\"role\""))
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|v| chat_messages(&v).map(|msgs| message_text(last_message(&msgs, role))))
        .filter(|c| !c.is_empty());
    let text = content.as_deref().unwrap_or(json_text);
    let preview = truncate_chars(text, max_chars);
    if preview.contains('\0') { preview.replace('\0', "\u{FFFD}") } else { preview }
}

fn is_message(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.contains_key("role") && o.contains_key("content"))
}

fn chat_messages(v: &Value) -> Option<Vec<&Map<String, Value>>> {
    let obj = v.as_object()?;
    let non_empty_list = |key: &str| obj.get(key).and_then(Value::as_array).filter(|a| !a.is_empty());
    if let Some(list) = non_empty_list("messages") {
        return Some(messages_of(list)).filter(|m| !m.is_empty());
    }
    if let Some(msg) = non_empty_list("choices").and_then(|c| c[0].get("message")).filter(|m| is_message(m)) {
        return msg.as_object().map(|m| vec![m]);
    }
    if let Some(list) = non_empty_list("input") {
        return Some(messages_of(list)).filter(|m| !m.is_empty());
    }
    if let Some(list) = non_empty_list("output") {
        return Some(messages_of(list)).filter(|m| !m.is_empty());
    }
    obj.get("request").and_then(chat_messages)
}

fn messages_of(list: &[Value]) -> Vec<&Map<String, Value>> {
    list.iter().filter(|m| is_message(m)).filter_map(Value::as_object).collect()
}

fn last_message<'a>(messages: &[&'a Map<String, Value>], role: Role) -> &'a Map<String, Value> {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some(role.as_str()))
        .copied()
        .unwrap_or(messages[messages.len() - 1])
}

fn message_text(message: &Map<String, Value>) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .find_map(|part| match part {
                Value::String(s) => Some(s.clone()),
                Value::Object(p)
                    if matches!(p.get("type").and_then(Value::as_str), Some("text" | "output_text")) =>
                {
                    p.get("text").and_then(Value::as_str).map(str::to_owned)
                }
                _ => None,
            })
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Token counts, as in `mlflow.chat.tokenUsage` and `mlflow.trace.tokenUsage`.
pub mod token_keys {
    pub const INPUT: &str = "input_tokens";
    pub const OUTPUT: &str = "output_tokens";
    pub const TOTAL: &str = "total_tokens";
    /// Counted only when some span reports them.
    pub const OPTIONAL: [&str; 3] =
        ["cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation_input_tokens_above_1hr"];
}

/// Sums `mlflow.chat.tokenUsage` over a trace's spans without double counting: a span whose
/// ancestor already reports usage is skipped, since frameworks that roll usage up onto a
/// parent also report it on the children. `None` when no span reports usage.
pub fn aggregate_token_usage(spans: &[Span]) -> Option<Map<String, Value>> {
    let usage: HashMap<SpanId, Map<String, Value>> = spans
        .iter()
        .filter_map(|s| match s.attributes.get(keys::CHAT_TOKEN_USAGE) {
            Some(Value::Object(m)) => Some((s.span_id, m)),
            _ => None,
        })
        .collect();
    if usage.is_empty() {
        return None;
    }
    let ids: HashSet<SpanId> = spans.iter().map(|s| s.span_id).collect();
    let parent: HashMap<SpanId, SpanId> = spans
        .iter()
        .filter_map(|s| s.parent_id.filter(|p| ids.contains(p)).map(|p| (s.span_id, p)))
        .collect();
    let ancestor_has_usage = |mut id: SpanId| {
        let mut hops = 0;
        while let Some(&p) = parent.get(&id) {
            if usage.contains_key(&p) {
                return true;
            }
            id = p;
            hops += 1;
            if hops > spans.len() {
                return false; // a cycle in malformed input
            }
        }
        false
    };

    let mut totals = [0i64; 3];
    let mut optional = [None::<i64>; 3];
    for span in spans {
        let Some(data) = usage.get(&span.span_id) else { continue };
        if ancestor_has_usage(span.span_id) {
            continue;
        }
        let count = |k: &str| data.get(k).and_then(Value::as_i64);
        for (total, key) in totals.iter_mut().zip([token_keys::INPUT, token_keys::OUTPUT, token_keys::TOTAL])
        {
            *total += count(key).unwrap_or(0);
        }
        for (slot, key) in optional.iter_mut().zip(token_keys::OPTIONAL) {
            if let Some(n) = count(key) {
                *slot = Some(slot.unwrap_or(0) + n);
            }
        }
    }
    let mut out = Map::new();
    for (key, n) in [token_keys::INPUT, token_keys::OUTPUT, token_keys::TOTAL].into_iter().zip(totals) {
        out.insert(key.into(), n.into());
    }
    for (key, n) in token_keys::OPTIONAL.into_iter().zip(optional) {
        if let Some(n) = n {
            out.insert(key.into(), n.into());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::Attributes;
    use crate::ids::TraceId;
    use crate::span::{SpanKind, SpanStatus};
    use serde_json::json;

    fn span(id: u64, parent: Option<u64>, usage: Option<Value>) -> Span {
        let mut attributes = Attributes::new();
        if let Some(u) = usage {
            attributes.insert(keys::CHAT_TOKEN_USAGE, &u);
        }
        Span {
            trace_id: TraceId::new(1).unwrap(),
            span_id: SpanId::new(id).unwrap(),
            parent_id: parent.and_then(SpanId::new),
            name: format!("s{id}").into(),
            kind: SpanKind::Internal,
            start_time_unix_nano: 0,
            end_time_unix_nano: Some(1),
            status: SpanStatus::ok(),
            attributes,
            events: vec![],
            links: vec![],
        }
    }

    #[test]
    fn token_usage_skips_spans_whose_ancestor_already_counted() {
        let u = |i, o| json!({"input_tokens": i, "output_tokens": o, "total_tokens": i + o});
        let spans = vec![
            span(1, None, None),
            span(2, Some(1), Some(u(10, 5))),
            span(3, Some(2), Some(u(10, 5))), // rolled up into 2 already
            span(
                4,
                Some(1),
                Some(
                    json!({"input_tokens": 1, "output_tokens": 1, "total_tokens": 2, "cache_read_input_tokens": 7}),
                ),
            ),
        ];
        let total = aggregate_token_usage(&spans).unwrap();
        assert_eq!(
            Value::Object(total),
            json!({"input_tokens": 11, "output_tokens": 6, "total_tokens": 17, "cache_read_input_tokens": 7})
        );
        assert_eq!(aggregate_token_usage(&[span(1, None, None)]), None);
    }

    #[test]
    fn previews_show_the_last_message_of_the_role() {
        let req = r#"{"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi there"}]}"#;
        assert_eq!(preview(req, Role::User, 1000), "hi there");
        let resp = r#"{"choices": [{"message": {"role": "assistant", "content": [{"type": "text", "text": "hello"}]}}]}"#;
        assert_eq!(preview(resp, Role::Assistant, 1000), "hello");
        assert_eq!(preview(r#"{"q": 1}"#, Role::User, 1000), r#"{"q": 1}"#);
    }

    #[test]
    fn long_previews_are_cut_inside_the_limit() {
        let long = "é".repeat(20);
        let cut = preview(&format!("\"{long}\""), Role::User, 10);
        assert_eq!(cut.chars().count(), 10);
        assert!(cut.ends_with("..."));
    }
}
