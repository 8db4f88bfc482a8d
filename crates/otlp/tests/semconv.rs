//! Spans following OpenInference, OpenTelemetry GenAI and OpenLLMetry arrive typed, with
//! inputs, outputs, model and token usage.

use serde_json::{Value, json};
use tracelake_model::{Attributes, Span, SpanEvent, SpanId, SpanKind, SpanStatus, SpanType, TraceId, keys};
use tracelake_otlp::semconv::translate;

fn span_with(attrs: &[(&'static str, Value)]) -> Span {
    let mut attributes = Attributes::new();
    for (k, v) in attrs {
        attributes.insert(*k, v);
    }
    Span {
        trace_id: TraceId::new(1).unwrap(),
        span_id: SpanId::new(1).unwrap(),
        parent_id: None,
        name: "s".into(),
        kind: SpanKind::Internal,
        start_time_unix_nano: 1,
        end_time_unix_nano: Some(2),
        status: SpanStatus::ok(),
        attributes,
        events: vec![],
        links: vec![],
    }
}

fn translated(attrs: &[(&'static str, Value)]) -> Span {
    let mut s = span_with(attrs);
    translate(&mut s);
    s
}

#[test]
fn openinference_llm_spans_get_type_io_model_and_tokens() {
    let s = translated(&[
        ("openinference.span.kind", json!("LLM")),
        ("llm.input_messages.0.message.role", json!("system")),
        ("llm.input_messages.0.message.content", json!("be brief")),
        ("llm.input_messages.1.message.role", json!("user")),
        ("llm.input_messages.1.message.content", json!("hi")),
        ("llm.output_messages.0.message.role", json!("assistant")),
        ("llm.output_messages.0.message.content", json!("hello")),
        ("llm.model_name", json!("gpt-4o")),
        ("llm.token_count.prompt", json!(12)),
        ("llm.token_count.completion", json!(3)),
        ("llm.token_count.total", json!(15)),
        ("llm.token_count.prompt_details.cache_read", json!(4)),
    ]);
    assert_eq!(s.span_type(), SpanType::Llm);
    assert_eq!(s.inputs().unwrap()["messages"][1], json!({"role": "user", "content": "hi"}));
    assert_eq!(s.outputs().unwrap()["messages"][0]["content"], "hello");
    assert_eq!(s.attributes.get(keys::LLM_MODEL), Some(json!("gpt-4o")));
    assert_eq!(
        s.attributes.get(keys::CHAT_TOKEN_USAGE),
        Some(
            json!({"input_tokens": 12, "output_tokens": 3, "total_tokens": 15, "cache_read_input_tokens": 4})
        )
    );
}

#[test]
fn openinference_prompt_and_retriever_spans_mlflow_leaves_unmapped_are_typed() {
    let prompt = translated(&[
        ("openinference.span.kind", json!("PROMPT")),
        ("input.value", json!("{\"topic\": \"x\"}")),
    ]);
    assert_eq!(prompt.span_type(), SpanType::Chain);
    assert_eq!(prompt.inputs(), Some(json!({"topic": "x"})), "JSON text input is parsed");

    let retriever = translated(&[
        ("openinference.span.kind", json!("RETRIEVER")),
        ("input.value", json!("rust tracing")),
        ("retrieval.documents.0.document.id", json!("d1")),
        ("retrieval.documents.0.document.content", json!("tracing in rust")),
        ("retrieval.documents.0.document.score", json!(0.9)),
        ("retrieval.documents.1.document.id", json!("d2")),
        ("retrieval.documents.1.document.metadata", json!("{\"source\": \"wiki\"}")),
    ]);
    assert_eq!(retriever.span_type(), SpanType::Retriever);
    assert_eq!(retriever.inputs(), Some(json!("rust tracing")));
    assert_eq!(
        retriever.outputs(),
        Some(
            json!([{"id": "d1", "content": "tracing in rust", "score": 0.9}, {"id": "d2", "metadata": {"source": "wiki"}}])
        )
    );
}

#[test]
fn genai_attributes_of_1_37_and_later_are_translated() {
    let chat = translated(&[
        ("gen_ai.operation.name", json!("chat")),
        ("gen_ai.provider.name", json!("openai")),
        ("gen_ai.request.model", json!("gpt-x")),
        ("gen_ai.response.model", json!("gpt-x-2026")),
        (
            "gen_ai.input.messages",
            json!("[{\"role\": \"user\", \"parts\": [{\"type\": \"text\", \"content\": \"hi\"}]}]"),
        ),
        (
            "gen_ai.output.messages",
            json!("[{\"role\": \"assistant\", \"parts\": [{\"type\": \"text\", \"content\": \"yo\"}]}]"),
        ),
        ("gen_ai.usage.input_tokens", json!(7)),
        ("gen_ai.usage.output_tokens", json!(2)),
    ]);
    assert_eq!(chat.span_type(), SpanType::ChatModel);
    assert_eq!(chat.inputs().unwrap()["messages"][0]["role"], "user");
    assert_eq!(chat.outputs().unwrap()["messages"][0]["role"], "assistant");
    assert_eq!(chat.attributes.get(keys::LLM_MODEL), Some(json!("gpt-x-2026")), "the response model wins");
    assert_eq!(chat.attributes.get(keys::LLM_PROVIDER), Some(json!("openai")));
    assert_eq!(
        chat.attributes.get(keys::CHAT_TOKEN_USAGE),
        Some(json!({"input_tokens": 7, "output_tokens": 2, "total_tokens": 9}))
    );
    // stored as MLflow's client encodes it
    assert_eq!(
        chat.attributes.get_raw(keys::CHAT_TOKEN_USAGE),
        Some(r#"{"input_tokens": 7, "output_tokens": 2, "total_tokens": 9}"#)
    );

    for (op, want) in [
        ("retrieval", SpanType::Retriever),
        ("invoke_workflow", SpanType::Workflow),
        ("execute_tool", SpanType::Tool),
        ("invoke_agent", SpanType::Agent),
        ("embeddings", SpanType::Embedding),
        ("generate_content", SpanType::Llm),
    ] {
        assert_eq!(translated(&[("gen_ai.operation.name", json!(op))]).span_type(), want, "{op}");
    }
    let tool = translated(&[
        ("gen_ai.operation.name", json!("execute_tool")),
        ("gen_ai.tool.call.arguments", json!("{\"city\": \"Oslo\"}")),
        ("gen_ai.tool.call.result", json!("{\"temp\": 3}")),
    ]);
    assert_eq!((tool.inputs(), tool.outputs()), (Some(json!({"city": "Oslo"})), Some(json!({"temp": 3}))));
}

#[test]
fn genai_events_of_1_36_and_earlier_become_messages() {
    let mut s = span_with(&[
        ("gen_ai.system", json!("anthropic")),
        ("gen_ai.usage.prompt_tokens", json!(5)),
        ("gen_ai.usage.completion_tokens", json!(1)),
    ]);
    s.events = vec![
        SpanEvent::new("gen_ai.system.message", 1).with_attribute("content", "be brief"),
        SpanEvent::new("gen_ai.user.message", 1).with_attribute("content", "hi"),
        SpanEvent::new("gen_ai.choice", 2)
            .with_attribute("message", json!({"role": "assistant", "content": "hello"})),
    ];
    translate(&mut s);
    assert_eq!(s.inputs().unwrap()["messages"][1], json!({"role": "user", "content": "hi"}));
    assert_eq!(s.outputs().unwrap()["messages"][0], json!({"role": "assistant", "content": "hello"}));
    assert_eq!(s.attributes.get(keys::LLM_PROVIDER), Some(json!("anthropic")));
    assert_eq!(s.attributes.get(keys::CHAT_TOKEN_USAGE).unwrap()["total_tokens"], 6);
}

#[test]
fn openllmetry_spans_are_translated() {
    let workflow = translated(&[
        ("traceloop.span.kind", json!("workflow")),
        ("traceloop.entity.input", json!("{\"args\": [1]}")),
        ("traceloop.entity.output", json!("\"done\"")),
    ]);
    assert_eq!(workflow.span_type(), SpanType::Workflow);
    assert_eq!(workflow.inputs(), Some(json!({"args": [1]})));
    let llm = translated(&[
        ("llm.request.type", json!("chat")),
        ("gen_ai.prompt.0.role", json!("user")),
        ("gen_ai.prompt.0.content", json!("hi")),
        ("gen_ai.completion.0.role", json!("assistant")),
        ("gen_ai.completion.0.content", json!("hey")),
        ("gen_ai.usage.prompt_tokens", json!(2)),
        ("gen_ai.usage.completion_tokens", json!(1)),
        ("llm.usage.total_tokens", json!(3)),
    ]);
    assert_eq!(llm.span_type(), SpanType::ChatModel);
    assert_eq!(llm.inputs().unwrap()["messages"][0], json!({"role": "user", "content": "hi"}));
    assert_eq!(llm.outputs().unwrap()["messages"][0]["content"], "hey");
    assert_eq!(llm.attributes.get(keys::CHAT_TOKEN_USAGE).unwrap()["total_tokens"], 3);
}

#[test]
fn spans_from_mlflow_clients_pass_through_unchanged() {
    let attrs = [
        (keys::SPAN_TYPE, json!("TOOL")),
        (keys::INPUTS, json!({"q": 1})),
        (keys::OUTPUTS, json!(2)),
        ("input.value", json!("ignored")),
        ("openinference.span.kind", json!("LLM")),
    ];
    let before = span_with(&attrs);
    let after = translated(&attrs);
    assert_eq!(before, after);
}
