//! Trace-level calls: updates, previews, lookups, search, enable/disable, sampling, wrapping.

mod common;

use common::{capture, exported, only_trace, span};
use regex::Regex;
use serde_json::json;
use tracelake::{SpanQuery, SpanType, TraceState, trace};

#[test]
fn the_current_trace_takes_tags_metadata_ids_previews_session_and_user() {
    let exporter = capture();
    {
        let root = tracelake::start_span("chat");
        root.set_inputs(&json!({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi!"}]}));
        let t = tracelake::current_trace().unwrap();
        assert!(t.set_tag("env", "prod"));
        assert!(t.set_metadata("app.version", "1.2"));
        assert!(t.set_client_request_id("req-42"));
        assert!(t.set_session_id("session-7"));
        assert!(t.set_user("ann"));
        assert!(t.set_response_preview("custom preview"));
        root.set_outputs(&json!({"choices": [{"message": {"role": "assistant", "content": "hello"}}]}));
    }
    let trace = only_trace(&exporter);
    let info = &trace.info;
    assert_eq!(info.tags["env"], "prod");
    assert_eq!(info.tags["mlflow.traceName"], "chat");
    assert_eq!(info.trace_metadata["app.version"], "1.2");
    assert_eq!(info.trace_metadata["mlflow.trace.session"], "session-7");
    assert_eq!(info.trace_metadata["mlflow.trace.user"], "ann");
    assert_eq!(info.trace_metadata["mlflow.trace_schema.version"], "3");
    assert_eq!(info.client_request_id.as_deref(), Some("req-42"));
    assert_eq!(info.request_preview.as_deref(), Some("hi!"));
    assert_eq!(info.response_preview.as_deref(), Some("custom preview"));
    assert!(info.trace_id.starts_with("tr-") && info.trace_id.len() == 35);
    assert_eq!(info.trace_location.experiment_id(), Some("0"));
}

#[test]
fn tags_the_server_owns_are_refused() {
    let exporter = capture();
    {
        let _root = tracelake::start_span("root");
        let t = tracelake::current_trace().unwrap();
        assert!(!t.set_tag("mlflow.artifactLocation", "/elsewhere"));
        assert!(!t.set_tag("mlflow.user", "mallory"));
        assert!(t.set_tag("team", "search"));
    }
    let trace = only_trace(&exporter);
    assert!(!trace.info.tags.contains_key("mlflow.artifactLocation"));
    assert_eq!(trace.info.tags["team"], "search");
}

#[test]
fn updates_after_a_trace_finished_are_refused() {
    let _exporter = capture();
    let handle = {
        let _root = tracelake::start_span("done");
        tracelake::current_trace().unwrap()
    };
    assert!(!handle.set_tag("late", "x"));
    assert!(tracelake::current_trace().is_none());
}

#[test]
fn token_usage_is_summed_over_the_trace_and_state_can_be_overridden() {
    let exporter = capture();
    {
        let _root = tracelake::start_span("agent");
        for tokens in [10, 20] {
            let llm = tracelake::span("llm").span_type(SpanType::ChatModel).start();
            llm.set_attribute(
                "mlflow.chat.tokenUsage",
                &json!({"input_tokens": tokens, "output_tokens": 1, "total_tokens": tokens + 1}),
            );
        }
        tracelake::current_trace().unwrap().set_state(TraceState::Error);
    }
    let trace = only_trace(&exporter);
    assert_eq!(
        trace.info.trace_metadata["mlflow.trace.tokenUsage"],
        "{\"input_tokens\": 30, \"output_tokens\": 2, \"total_tokens\": 32}"
    );
    assert_eq!(trace.info.state, TraceState::Error);
    assert_eq!(span(&trace, "llm").attributes.get("mlflow.spanLogLevel"), Some(json!(20)));
}

#[trace(span_type = SpanType::Tool)]
fn add_one(x: i32) -> i32 {
    x + 1
}
#[trace(span_type = SpanType::Tool)]
fn add_two(x: i32) -> i32 {
    add_one(add_one(x))
}
#[trace(span_type = SpanType::Chain)]
fn run(x: i32) -> i32 {
    add_two(x) + add_one(x)
}

#[test]
fn finished_traces_are_found_by_id_and_searched_by_name_regex_and_type() {
    let _exporter = capture();
    run(1);
    let id = tracelake::last_active_trace_id().unwrap();
    assert_eq!(tracelake::last_active_trace_id_in_thread().as_deref(), Some(id.as_str()));
    let trace = tracelake::get_trace(&id).expect("in the local buffer");
    assert_eq!(trace.search_spans(&SpanQuery::name("add_one")).len(), 3);
    assert_eq!(trace.search_spans(&SpanQuery::name_matching(Regex::new("add.*").unwrap())).len(), 4);
    assert_eq!(trace.search_spans(&SpanQuery::span_type(SpanType::Tool)).len(), 4);
    assert_eq!(trace.search_spans(&SpanQuery::name("add_two").and_span_type(SpanType::Chain)).len(), 0);
    let root = trace.root_span().unwrap();
    assert_eq!(trace.search_spans(&SpanQuery::default().and_span_id(root.span_id))[0].name, "run");
    assert!(tracelake::get_trace("tr-00000000000000000000000000000001").is_none());
}

#[test]
fn disabling_tracing_records_nothing_and_changes_no_result() {
    let exporter = capture();
    tracelake::disable();
    assert!(!tracelake::is_enabled());
    assert_eq!(run(1), 5);
    let guard = tracelake::start_span("ignored");
    guard.set_outputs(&1);
    assert!(!guard.is_recording());
    drop(guard);
    tracelake::enable();
    run(1);
    assert_eq!(exported(&exporter).len(), 1);
}

#[test]
fn unsampled_traces_record_no_span_at_all() {
    let exporter = tracelake::export::InMemoryExporter::new();
    let provider =
        tracelake::TracerProvider::builder().with_exporter(exporter.clone()).with_sampling_ratio(0.0).build();
    tracelake::set_tracer_provider(provider);
    assert_eq!(run(1), 5);
    assert!(exported(&exporter).is_empty());
    // a per-span override samples this root in
    drop(tracelake::span("always").sampling_ratio(1.0).start());
    assert_eq!(exported(&exporter).len(), 1);
}

#[trace]
async fn async_child(x: i32) -> i32 {
    tokio::task::yield_now().await;
    x + 1
}

#[trace]
async fn async_root(x: i32) -> i32 {
    async_child(x).await + async_child(x).await
}

#[tokio::test]
async fn children_of_an_unsampled_async_root_record_nothing() {
    let exporter = tracelake::export::InMemoryExporter::new();
    let provider =
        tracelake::TracerProvider::builder().with_exporter(exporter.clone()).with_sampling_ratio(0.0).build();
    tracelake::set_tracer_provider(provider);
    for _ in 0..20 {
        assert_eq!(async_root(1).await, 4);
    }
    assert!(exported(&exporter).is_empty(), "children must not start traces of their own");
}

#[test]
fn a_miss_in_the_local_buffer_does_not_wait_on_the_exporters() {
    struct SlowFlush(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl tracelake::export::Exporter for SlowFlush {
        fn export(
            &mut self,
            _: tracelake::export::ExportBatch<'_>,
        ) -> Result<(), tracelake::export::ExportError> {
            Ok(())
        }
        fn flush(&mut self) -> Result<(), tracelake::export::ExportError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }
    let flushes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tracelake::set_tracer_provider(
        tracelake::TracerProvider::builder().with_exporter(SlowFlush(flushes.clone())).build(),
    );
    run(1);
    let id = tracelake::last_active_trace_id().unwrap();
    assert!(tracelake::get_trace(&id).is_some(), "a trace that just finished is found");
    assert!(tracelake::get_trace("tr-0000000000000000000000000000abcd").is_none());
    assert_eq!(flushes.load(std::sync::atomic::Ordering::SeqCst), 0, "get_trace never flushes exporters");
}

#[test]
fn wrapped_functions_are_traced_without_editing_them() {
    let exporter = capture();
    let pow = tracelake::traced("pow", f64::powf).arg_names(["base", "exponent"]).span_type(SpanType::Tool);
    assert_eq!(pow.call((2.0, 10.0)), 1024.0);
    let parse = tracelake::traced("parse", |s: &str| s.parse::<u8>());
    assert!(parse.call_fallible(("300",)).is_err());
    let traces = exported(&exporter);
    assert_eq!(traces[0].spans[0].inputs(), Some(json!({"base": 2.0, "exponent": 10.0})));
    assert_eq!(traces[0].spans[0].outputs(), Some(json!(1024.0)));
    assert_eq!(traces[0].spans[0].span_type(), SpanType::Tool);
    assert_eq!(traces[1].spans[0].inputs(), Some(json!({"arg0": "300"})));
    assert_eq!(
        traces[1].spans[0].events[0].attributes["exception.message"],
        "number too large to fit in target type"
    );
}

#[tokio::test]
async fn wrapped_async_functions_cover_the_whole_future() {
    let exporter = capture();
    let fetch = tracelake::traced("fetch", |url: String| async move {
        tokio::task::yield_now().await;
        let _inner = tracelake::start_span("inner");
        url.len()
    });
    assert_eq!(fetch.call_async(("https://x".to_owned(),)).await, 9);
    let trace = only_trace(&exporter);
    assert_eq!(span(&trace, "inner").parent_id, Some(span(&trace, "fetch").span_id));
    assert_eq!(span(&trace, "fetch").outputs(), Some(json!(9)));
}

#[test]
fn guards_record_events_errors_links_and_custom_types() {
    let exporter = capture();
    {
        let s = tracelake::span("step").span_type("MATH").attribute("k", &[1, 2]).start();
        s.add_event("retry", [("attempt", json!(2))]);
        let err = std::io::Error::other("disk full");
        s.record_error(&err);
        s.set_log_level(tracelake::LogLevel::Warning);
    }
    let trace = only_trace(&exporter);
    let s = &trace.spans[0];
    assert_eq!(s.span_type().as_str(), "MATH");
    assert_eq!(s.attributes.get("k"), Some(json!([1, 2])));
    assert_eq!(s.events[0].name, "retry");
    assert_eq!(s.events[0].attributes["attempt"], 2);
    assert_eq!(s.events[1].attributes["exception.type"], "Error");
    assert_eq!(s.status.message, "Error: disk full");
    // an exception raises an explicit lower level to ERROR
    assert_eq!(s.attributes.get("mlflow.spanLogLevel"), Some(json!(40)));
}
