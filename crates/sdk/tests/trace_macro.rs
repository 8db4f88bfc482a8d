//! `#[trace]` on sync and async functions and methods.

mod common;

use common::{capture, only_trace, span};
use serde_json::json;
use tracelake::{SpanType, StatusCode, TraceState, trace};

#[trace]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[trace(name = "outer", span_type = SpanType::Chain, attributes(model = "gpt-x", "gen_ai.system" = "openai", k = 2 + 1))]
fn outer(question: &str) -> String {
    let sum = add(1, 2);
    format!("{question}: {sum}")
}

#[test]
fn traced_functions_record_inputs_outputs_and_nest() {
    let exporter = capture();
    assert_eq!(outer("sum"), "sum: 3");
    let trace = only_trace(&exporter);
    let root = span(&trace, "outer");
    let child = span(&trace, "add");
    assert_eq!(child.parent_id, Some(root.span_id));
    assert_eq!(root.span_type(), SpanType::Chain);
    assert_eq!(child.span_type(), SpanType::Unknown);
    assert_eq!(child.inputs(), Some(json!({"a": 1, "b": 2})));
    assert_eq!(child.outputs(), Some(json!(3)));
    assert_eq!(root.attributes.get("model"), Some(json!("gpt-x")));
    assert_eq!(root.attributes.get("gen_ai.system"), Some(json!("openai")));
    assert_eq!(root.attributes.get("k"), Some(json!(3)));
    assert_eq!(root.attributes.get_raw("mlflow.spanFunctionName"), Some("\"outer\""));
    assert_eq!(child.attributes.get_raw("mlflow.spanInputs"), Some("{\"a\": 1, \"b\": 2}"));
    assert_eq!(trace.info.tags["mlflow.traceName"], "outer");
    assert_eq!(trace.info.state, TraceState::Ok);
    assert_eq!(trace.info.request_preview.as_deref(), Some("{\"question\": \"sum\"}"));
    assert_eq!(trace.info.response_preview.as_deref(), Some("\"sum: 3\""));
}

#[derive(Debug, thiserror::Error)]
#[error("quota exceeded for {0}")]
struct QuotaError(String);

#[trace(span_type = "MY_STEP")]
fn fallible(user: &str, fail: bool) -> Result<u32, QuotaError> {
    if fail {
        return Err(QuotaError(user.to_owned()));
    }
    let n: u32 = "7".parse().map_err(|_| QuotaError("parse".into()))?;
    Ok(n)
}

#[test]
fn an_err_becomes_an_exception_event_and_error_status() {
    let exporter = capture();
    assert!(fallible("ann", true).is_err());
    let trace = only_trace(&exporter);
    let s = &trace.spans[0];
    assert_eq!(s.span_type(), SpanType::Custom("MY_STEP".into()));
    assert_eq!(s.status.code, StatusCode::Error);
    assert_eq!(s.status.message, "QuotaError: quota exceeded for ann");
    assert_eq!(s.outputs(), None);
    let event = &s.events[0];
    assert_eq!(event.name, "exception");
    assert_eq!(event.attributes["exception.type"], "QuotaError");
    assert_eq!(event.attributes["exception.message"], "quota exceeded for ann");
    assert_eq!(event.attributes["exception.stacktrace"], "QuotaError(\"ann\")");
    assert_eq!(s.attributes.get("mlflow.spanLogLevel"), Some(json!(40)));
    assert_eq!(trace.info.state, TraceState::Error);
}

#[test]
fn an_ok_result_records_the_ok_value_as_outputs() {
    let exporter = capture();
    assert_eq!(fallible("ann", false).unwrap(), 7);
    let trace = only_trace(&exporter);
    assert_eq!(trace.spans[0].outputs(), Some(json!(7)));
    assert_eq!(trace.spans[0].status.code, StatusCode::Ok);
    assert!(trace.spans[0].events.is_empty());
}

#[trace]
fn explode(depth: u32) -> u32 {
    if depth == 0 {
        panic!("out of tokens");
    }
    explode(depth - 1)
}

#[test]
fn a_panic_is_recorded_and_keeps_unwinding() {
    let exporter = capture();
    let caught = std::panic::catch_unwind(|| explode(1));
    assert!(caught.is_err(), "the panic must reach the caller");
    let trace = only_trace(&exporter);
    assert_eq!(trace.spans.len(), 2);
    for s in &trace.spans {
        assert_eq!(s.status.code, StatusCode::Error);
        assert_eq!(s.events[0].attributes["exception.type"], "panic");
        assert_eq!(s.events[0].attributes["exception.message"], "out of tokens");
    }
    // the context was restored: a new span starts a new trace
    let _next = tracelake::start_span("after");
    assert_eq!(tracelake::current_span().unwrap().parent_id(), None);
}

struct Db;
#[derive(Debug)]
struct Opaque(#[allow(dead_code)] u8);
struct Hidden;

impl Db {
    #[trace(skip(secret))]
    fn query(&self, sql: &str, secret: &str, debug_only: Opaque, _hidden: Hidden) -> Vec<u32> {
        let _ = (secret, debug_only, _hidden);
        vec![sql.len() as u32]
    }

    #[trace(name = "db.fetch", span_type = SpanType::Retriever)]
    async fn fetch(&self, key: String) -> Option<String> {
        tokio::task::yield_now().await;
        Some(format!("value of {key}"))
    }
}

#[test]
fn methods_skip_self_and_record_what_each_type_allows() {
    let exporter = capture();
    Db.query("select 1", "hunter2", Opaque(9), Hidden);
    let trace = only_trace(&exporter);
    let inputs = trace.spans[0].inputs().unwrap();
    assert_eq!(
        inputs,
        json!({"sql": "select 1", "debug_only": "Opaque(9)", "_hidden": "<trace_macro::Hidden>"})
    );
}

#[tokio::test]
async fn async_methods_record_a_span_across_awaits() {
    let exporter = capture();
    let value = Db.fetch("k1".into()).await;
    assert_eq!(value.as_deref(), Some("value of k1"));
    let trace = only_trace(&exporter);
    let s = span(&trace, "db.fetch");
    assert_eq!(s.span_type(), SpanType::Retriever);
    assert_eq!(s.inputs(), Some(json!({"key": "k1"})));
    assert_eq!(s.outputs(), Some(json!("value of k1")));
}

#[trace]
fn generic<T: serde::Serialize + Clone, U>(value: T, _other: U) -> T {
    value.clone()
}

#[trace]
fn returns_iter(n: u32) -> impl Iterator<Item = u32> {
    0..n
}

#[test]
fn generic_functions_and_impl_trait_returns_work() {
    let exporter = capture();
    assert_eq!(generic(vec![1, 2], ()), vec![1, 2]);
    assert_eq!(returns_iter(3).sum::<u32>(), 3);
    let traces = common::exported(&exporter);
    assert_eq!(traces[0].spans[0].inputs(), Some(json!({"value": [1, 2], "_other": "<()>"})));
    assert_eq!(traces[1].spans[0].outputs(), Some(json!({"start": 0, "end": 3})));
}

#[trace]
fn never_returns(code: i32) -> ! {
    std::panic::panic_any(code)
}

#[trace]
fn with_inner_attribute(x: u32) -> u32 {
    #![allow(unused_variables)]
    let unused = 1;
    x
}

#[test]
fn diverging_functions_and_inner_attributes_compile_and_trace() {
    let exporter = capture();
    assert_eq!(with_inner_attribute(4), 4);
    assert!(std::panic::catch_unwind(|| never_returns(3)).is_err());
    let traces = common::exported(&exporter);
    assert_eq!(traces[0].spans[0].outputs(), Some(json!(4)));
    assert_eq!(traces[1].spans[0].status.code, StatusCode::Error);
    assert_eq!(
        traces[1].spans[0].events[0].attributes["exception.message"],
        "panic with a non-string payload"
    );
}

#[trace]
async fn async_explode(n: u32) -> u32 {
    tokio::task::yield_now().await;
    if n > 0 {
        panic!("async boom");
    }
    n
}

#[tokio::test]
async fn a_panicking_async_call_records_one_exception_and_no_cancellation() {
    let exporter = capture();
    let joined = tokio::spawn(async_explode(1)).await;
    assert!(joined.is_err(), "the panic reaches the task's joiner");
    let trace = only_trace(&exporter);
    let names: Vec<_> = trace.spans[0].events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["exception"]);
    assert_eq!(trace.spans[0].events[0].attributes["exception.message"], "async boom");
}

#[trace]
async fn waits_forever(_what: &str) {
    std::future::pending::<()>().await
}

#[tokio::test]
async fn a_dropped_async_call_is_recorded_as_cancelled() {
    let exporter = capture();
    {
        let call = waits_forever("reply");
        tokio::pin!(call);
        // poll the call once (its span starts), then drop it unfinished
        tokio::select! {
            biased;
            _ = &mut call => unreachable!("never completes"),
            _ = std::future::ready(()) => {}
        }
    }
    let trace = only_trace(&exporter);
    assert_eq!(trace.spans[0].events[0].name, "cancelled");
}
