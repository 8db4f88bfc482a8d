//! Trace-level summaries derived from spans: request/response previews, the truncated
//! `mlflow.traceInputs` / `mlflow.traceOutputs` metadata, and token usage.
//!
//! These are pure functions so the SDK (when a root span ends) and the server (when spans
//! arrive over OTLP without a trace info) compute them identically.

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
    // By span id, the last of an id winning; only the counts are read, not the whole value.
    let mut usage: Vec<(SpanId, [Option<i64>; 6])> = spans
        .iter()
        .filter_map(|s| {
            let raw = s.attributes.get_raw(keys::CHAT_TOKEN_USAGE)?;
            Some((s.span_id, usage_counts(raw)?))
        })
        .collect();
    if usage.is_empty() {
        return None;
    }
    usage.reverse();
    usage.sort_by_key(|(id, _)| *id); // stable: the last of an id comes first
    usage.dedup_by_key(|(id, _)| *id);
    let counts_of = |id: SpanId| usage.binary_search_by_key(&id, |(i, _)| *i).ok().map(|i| usage[i].1);
    let mut parents: Vec<(SpanId, Option<SpanId>)> = spans.iter().map(|s| (s.span_id, s.parent_id)).collect();
    parents.sort_by_key(|(id, _)| *id);
    let known = |id: SpanId| parents.binary_search_by_key(&id, |(i, _)| *i).is_ok();
    // the parent of `id` when it is a span of this trace
    let parent_of = |id: SpanId| {
        let at = parents.binary_search_by_key(&id, |(i, _)| *i).ok()?;
        parents[at].1.filter(|p| known(*p))
    };
    let ancestor_has_usage = |mut id: SpanId| {
        let mut hops = 0;
        while let Some(p) = parent_of(id) {
            if counts_of(p).is_some() {
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
        let Some(counts) = counts_of(span.span_id) else { continue };
        if ancestor_has_usage(span.span_id) {
            continue;
        }
        for (total, n) in totals.iter_mut().zip(&counts[..3]) {
            *total += n.unwrap_or(0);
        }
        for (slot, n) in optional.iter_mut().zip(&counts[3..]) {
            if let Some(n) = n {
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

/// The counts of a `mlflow.chat.tokenUsage` value (JSON text), in the order input, output,
/// total, then [`token_keys::OPTIONAL`]; `None` when it is not a JSON object. A count is an
/// integer (anything else counts as absent) and a repeated key's last value wins.
pub fn usage_counts(json: &str) -> Option<[Option<i64>; 6]> {
    serde_json::from_str::<UsageCounts>(json).ok().map(|c| c.0)
}

/// The counts of a token usage object, in the order input, output, total, then
/// [`token_keys::OPTIONAL`]: a count is an integer (anything else counts as absent), a
/// repeated key's last value wins, other keys are skipped, and anything but an object is
/// refused.
struct UsageCounts([Option<i64>; 6]);

impl<'de> serde::Deserialize<'de> for UsageCounts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> serde::de::Visitor<'de> for Object {
            type Value = UsageCounts;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a token usage object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UsageCounts, A::Error> {
                let mut counts = [None; 6];
                while let Some(CountKey(slot)) = map.next_key()? {
                    match slot {
                        Some(i) => counts[i] = map.next_value::<Count>()?.0,
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(UsageCounts(counts))
            }
        }
        d.deserialize_map(Object)
    }
}

/// A usage key: its slot in [`UsageCounts`], `None` for keys not counted.
struct CountKey(Option<usize>);

impl<'de> serde::Deserialize<'de> for CountKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key;
        impl serde::de::Visitor<'_> for Key {
            type Value = CountKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<CountKey, E> {
                let keys = [token_keys::INPUT, token_keys::OUTPUT, token_keys::TOTAL];
                Ok(CountKey(keys.into_iter().chain(token_keys::OPTIONAL).position(|k| k == key)))
            }
        }
        d.deserialize_str(Key)
    }
}

/// A count: an integer that fits an i64, or `None` for any other value (which is skipped).
struct Count(Option<i64>);

impl<'de> serde::Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // a number makes no allocation; anything else is rare
        Ok(Count(Value::deserialize(d)?.as_i64()))
    }
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
    fn token_usage_counts_integers_only_and_reads_any_object() {
        let spans = vec![
            span(1, None, None),
            // floats, strings, nested values and unknown keys count as nothing; a repeated
            // key's last value wins
            span(
                2,
                Some(1),
                Some(json!({"input_tokens": 2.5, "output_tokens": "7", "total_tokens": {"n": [1]},
                            "other": [1, {"a": null}], "cache_read_input_tokens": 4})),
            ),
            span(3, Some(1), Some(json!({}))),
            span(4, Some(3), Some(json!({"input_tokens": 100}))), // under a span that reports usage
            span(5, Some(1), Some(json!("not an object"))),
            span(
                6,
                Some(9),
                Some(json!({"output_tokens": 18_446_744_073_709_551_615u64, "total_tokens": 3})),
            ),
            span(7, Some(1), None),
        ];
        let mut spans = spans;
        spans[6].attributes.insert_raw(
            keys::CHAT_TOKEN_USAGE,
            r#"{"input_tokens": 1, "input_tokens": 5, "output_tokens": 2}"#.to_owned(),
        );
        let total = aggregate_token_usage(&spans).unwrap();
        assert_eq!(
            Value::Object(total),
            json!({"input_tokens": 5, "output_tokens": 2, "total_tokens": 3, "cache_read_input_tokens": 4})
        );
        assert_eq!(aggregate_token_usage(&[span(5, None, Some(json!([1, 2, 3])))]), None);
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
