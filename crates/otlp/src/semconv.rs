//! Foreign semantic conventions translated into MLflow's span attributes at write time, so a
//! span from any GenAI instrumentation arrives typed, with inputs, outputs, model and token
//! usage: OpenInference, OpenTelemetry GenAI (≤ 1.36 events and ≥ 1.37 attributes) and
//! OpenLLMetry (Traceloop).
//!
//! Only what the span does not already carry is filled in: spans from MLflow clients, which
//! set `mlflow.*` themselves, pass through unchanged. Beyond MLflow's own translators, this
//! maps OpenInference `PROMPT`, GenAI `retrieval` and `invoke_workflow`, and turns
//! `retrieval.documents` into a retriever's outputs.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use tracelake_model::{Span, SpanEvent, SpanType, keys};

/// Fills MLflow's attributes from the conventions the span follows.
pub fn translate(span: &mut Span) {
    if span.attributes.get_str(keys::SPAN_TYPE).is_none_or(|t| t == "UNKNOWN")
        && let Some(t) = span_type(span)
    {
        span.attributes.insert(keys::SPAN_TYPE, t.as_str());
    }
    if !span.attributes.contains_key(keys::INPUTS)
        && let Some(inputs) = inputs(span)
    {
        span.attributes.insert(keys::INPUTS, &inputs);
    }
    if !span.attributes.contains_key(keys::OUTPUTS)
        && let Some(outputs) = outputs(span)
    {
        span.attributes.insert(keys::OUTPUTS, &outputs);
    }
    if !span.attributes.contains_key(keys::CHAT_TOKEN_USAGE)
        && let Some(usage) = token_usage(span)
    {
        span.attributes.insert_raw(keys::CHAT_TOKEN_USAGE, usage);
    }
    if !span.attributes.contains_key(keys::LLM_MODEL)
        && let Some(model) = first_str(
            span,
            &[
                "llm.response.model_name",
                "llm.model_name",
                "llm.request.model_name",
                "embedding.model_name",
                "gen_ai.response.model",
                "gen_ai.request.model",
            ],
        )
    {
        span.attributes.insert(keys::LLM_MODEL, &model);
    }
    if !span.attributes.contains_key(keys::LLM_PROVIDER)
        && let Some(provider) =
            first_str(span, &["gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"])
    {
        span.attributes.insert(keys::LLM_PROVIDER, &provider);
    }
}

fn str_attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.get_str(key).map(|s| s.into_owned())
}

fn first_str(span: &Span, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| str_attr(span, k)).filter(|s| !s.is_empty())
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    // most counts are plain integers, read without a JSON value
    if let Ok(n) = span.attributes.get_raw(key)?.parse() {
        return Some(n);
    }
    match span.attributes.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn span_type(span: &Span) -> Option<SpanType> {
    if let Some(kind) = str_attr(span, "openinference.span.kind") {
        return Some(match kind.to_ascii_uppercase().as_str() {
            "LLM" => SpanType::Llm,
            "CHAIN" => SpanType::Chain,
            "AGENT" => SpanType::Agent,
            "TOOL" => SpanType::Tool,
            "RETRIEVER" => SpanType::Retriever,
            "EMBEDDING" => SpanType::Embedding,
            "RERANKER" => SpanType::Reranker,
            "GUARDRAIL" => SpanType::Guardrail,
            "EVALUATOR" => SpanType::Evaluator,
            // A prompt template rendered as a step of a chain.
            "PROMPT" => SpanType::Chain,
            _ => SpanType::Unknown,
        });
    }
    if let Some(op) = str_attr(span, "gen_ai.operation.name") {
        let t = match op.as_str() {
            "chat" => SpanType::ChatModel,
            "text_completion" | "generate_content" | "response" => SpanType::Llm,
            "embeddings" => SpanType::Embedding,
            "execute_tool" => SpanType::Tool,
            "invoke_agent" | "create_agent" => SpanType::Agent,
            "retrieval" => SpanType::Retriever,
            "invoke_workflow" => SpanType::Workflow,
            _ => SpanType::Unknown,
        };
        if t != SpanType::Unknown {
            return Some(t);
        }
    }
    if let Some(kind) = str_attr(span, "traceloop.span.kind") {
        return Some(match kind.as_str() {
            "workflow" => SpanType::Workflow,
            "task" => SpanType::Task,
            "agent" => SpanType::Agent,
            "tool" => SpanType::Tool,
            _ => SpanType::Unknown,
        });
    }
    match str_attr(span, "llm.request.type").as_deref() {
        Some("chat") => Some(SpanType::ChatModel),
        Some("completion") => Some(SpanType::Llm),
        Some("embedding") => Some(SpanType::Embedding),
        Some("rerank") => Some(SpanType::Reranker),
        _ => None,
    }
}

/// A value that may hold JSON text: parsed when it is an object or array.
fn maybe_json(v: Value) -> Value {
    match &v {
        Value::String(s) if s.starts_with('{') || s.starts_with('[') => serde_json::from_str(s).unwrap_or(v),
        _ => v,
    }
}

/// `prefix.{i}.rest` attributes gathered into a list of objects keyed by `rest`.
fn indexed(span: &Span, prefix: &str) -> Vec<Map<String, Value>> {
    let mut items: BTreeMap<usize, Map<String, Value>> = BTreeMap::new();
    for (key, _) in span.attributes.iter() {
        let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else { continue };
        let Some((index, field)) = rest.split_once('.') else { continue };
        let Ok(index) = index.parse::<usize>() else { continue };
        if let Some(value) = span.attributes.get(key) {
            items.entry(index).or_default().insert(field.to_owned(), value);
        }
    }
    items.into_values().collect()
}

/// Chat messages from OpenInference's flattened `llm.{input,output}_messages`.
fn oi_messages(span: &Span, prefix: &str) -> Option<Vec<Value>> {
    let messages: Vec<Value> = indexed(span, prefix)
        .into_iter()
        .map(|m| {
            let mut out = Map::new();
            if let Some(role) = m.get("message.role") {
                out.insert("role".into(), role.clone());
            }
            if let Some(content) = m.get("message.content") {
                out.insert("content".into(), content.clone());
            }
            Value::Object(out)
        })
        .collect();
    (!messages.is_empty()).then_some(messages)
}

/// Chat messages from OpenLLMetry's legacy `gen_ai.{prompt,completion}.{i}.{role,content}`.
fn indexed_messages(span: &Span, prefix: &str) -> Option<Vec<Value>> {
    let messages: Vec<Value> = indexed(span, prefix).into_iter().map(Value::Object).collect();
    (!messages.is_empty()).then_some(messages)
}

/// Messages from GenAI ≤ 1.36 events (`gen_ai.user.message`, `gen_ai.choice`, ...).
fn event_messages(events: &[SpanEvent], names: &[(&str, &str)]) -> Option<Vec<Value>> {
    let messages: Vec<Value> = events
        .iter()
        .filter_map(|e| {
            let role = names.iter().find(|(n, _)| *n == e.name)?.1;
            let mut m = Map::new();
            m.insert("role".into(), json!(role));
            let content = e.attributes.get("content").cloned().or_else(|| {
                e.attributes
                    .get("message")
                    .map(|v| maybe_json(v.clone()))
                    .and_then(|v| v.get("content").cloned())
            });
            m.insert("content".into(), content.unwrap_or(Value::Null));
            Some(Value::Object(m))
        })
        .collect();
    (!messages.is_empty()).then_some(messages)
}

fn inputs(span: &Span) -> Option<Value> {
    if let Some(v) = span.attributes.get("input.value") {
        return Some(maybe_json(v));
    }
    if let Some(messages) = oi_messages(span, "llm.input_messages") {
        return Some(json!({"messages": messages}));
    }
    for key in [
        "gen_ai.input.messages",
        "gen_ai.tool.call.arguments",
        "traceloop.entity.input",
        "gen_ai.retrieval.query.text",
    ] {
        if let Some(v) = span.attributes.get(key) {
            let v = maybe_json(v);
            return Some(if key == "gen_ai.input.messages" { json!({"messages": v}) } else { v });
        }
    }
    if let Some(messages) = indexed_messages(span, "gen_ai.prompt") {
        return Some(json!({"messages": messages}));
    }
    let roles = [
        ("gen_ai.system.message", "system"),
        ("gen_ai.user.message", "user"),
        ("gen_ai.assistant.message", "assistant"),
        ("gen_ai.tool.message", "tool"),
    ];
    event_messages(&span.events, &roles).map(|m| json!({"messages": m}))
}

fn outputs(span: &Span) -> Option<Value> {
    if let Some(v) = span.attributes.get("output.value") {
        return Some(maybe_json(v));
    }
    if let Some(messages) = oi_messages(span, "llm.output_messages") {
        return Some(json!({"messages": messages}));
    }
    // Retrieved documents are a retriever's outputs.
    let documents: Vec<Value> = indexed(span, "retrieval.documents")
        .into_iter()
        .map(|d| {
            let mut doc = Map::new();
            for (field, value) in d {
                let name = field.strip_prefix("document.").unwrap_or(&field).to_owned();
                doc.insert(name, if field == "document.metadata" { maybe_json(value) } else { value });
            }
            Value::Object(doc)
        })
        .collect();
    if !documents.is_empty() {
        return Some(Value::Array(documents));
    }
    for key in [
        "gen_ai.output.messages",
        "gen_ai.tool.call.result",
        "traceloop.entity.output",
        "gen_ai.retrieval.documents",
    ] {
        if let Some(v) = span.attributes.get(key) {
            let v = maybe_json(v);
            return Some(if key == "gen_ai.output.messages" { json!({"messages": v}) } else { v });
        }
    }
    if let Some(messages) = indexed_messages(span, "gen_ai.completion") {
        return Some(json!({"messages": messages}));
    }
    event_messages(&span.events, &[("gen_ai.choice", "assistant")]).map(|m| json!({"messages": m}))
}

/// The token usage the span reports, as the JSON of `mlflow.chat.tokenUsage` (written
/// directly: it is made for most LLM spans).
fn token_usage(span: &Span) -> Option<String> {
    let pick = |keys: &[&str]| keys.iter().find_map(|k| int_attr(span, k));
    let input = pick(&["llm.token_count.prompt", "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"])?;
    let output = pick(&[
        "llm.token_count.completion",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
    ])?;
    let total =
        pick(&["llm.token_count.total", "llm.usage.total_tokens"]).unwrap_or(input.saturating_add(output));
    let mut usage =
        format!("{{\"input_tokens\": {input}, \"output_tokens\": {output}, \"total_tokens\": {total}");
    if let Some(n) = pick(&[
        "llm.token_count.prompt_details.cache_read",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
    ]) {
        usage.push_str(&format!(", \"cache_read_input_tokens\": {n}"));
    }
    if let Some(n) =
        pick(&["llm.token_count.prompt_details.cache_write", "gen_ai.usage.cache_creation.input_tokens"])
    {
        usage.push_str(&format!(", \"cache_creation_input_tokens\": {n}"));
    }
    usage.push('}');
    Some(usage)
}
