//! The client API: explicit ids for spans whose lifetime is not a lexical scope.

mod common;

use common::{capture, only_trace, span};
use serde_json::json;
use tracelake::{Client, ClientError, SpanEnd, SpanStatus, SpanType, StatusCode};

#[test]
fn spans_started_and_ended_by_id_from_other_threads_form_one_trace() {
    let exporter = capture();
    let client = Client::new();
    let root = client.start_trace(tracelake::span("agent").inputs(&json!({"goal": "book"}))).unwrap();
    let trace_id = root.trace_id().unwrap().to_owned();
    let root_id = root.span_id().unwrap();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let trace_id = trace_id.clone();
            std::thread::spawn(move || {
                let client = Client::new();
                let s = client
                    .start_span(
                        tracelake::span(format!("tool-{i}")).span_type(SpanType::Tool),
                        &trace_id,
                        root_id,
                    )
                    .unwrap();
                client.end_span(&trace_id, s.span_id().unwrap(), SpanEnd::new().outputs(&i)).unwrap();
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    client.trace(&trace_id).unwrap().set_tag("env", "prod");
    client.end_trace(&trace_id, SpanEnd::new().outputs(&"done")).unwrap();

    let trace = only_trace(&exporter);
    assert_eq!(trace.info.trace_id, trace_id);
    assert_eq!(trace.spans.len(), 5);
    assert_eq!(span(&trace, "tool-2").outputs(), Some(json!(2)));
    assert_eq!(span(&trace, "tool-2").parent_id, Some(root_id));
    assert_eq!(span(&trace, "agent").outputs(), Some(json!("done")));
    assert_eq!(trace.info.tags["env"], "prod");
}

#[test]
fn ending_a_trace_ends_its_open_children() {
    let exporter = capture();
    let client = Client::new();
    let root = client.start_trace(tracelake::span("root")).unwrap();
    let trace_id = root.trace_id().unwrap().to_owned();
    let child = client.start_span(tracelake::span("left-open"), &trace_id, root.span_id().unwrap()).unwrap();
    client.start_span(tracelake::span("grandchild"), &trace_id, child.span_id().unwrap()).unwrap();
    client.end_trace(&trace_id, SpanEnd::new().status(SpanStatus::error("gave up"))).unwrap();

    let trace = only_trace(&exporter);
    assert_eq!(trace.spans.len(), 3);
    let root_end = span(&trace, "root").end_time_unix_nano;
    for s in &trace.spans {
        assert_eq!(s.end_time_unix_nano, root_end, "{} must end with the trace", s.name);
    }
    assert_eq!(span(&trace, "root").status.code, StatusCode::Error);
    assert_eq!(span(&trace, "left-open").status.code, StatusCode::Ok);
    assert_eq!(trace.info.state, tracelake::TraceState::Error);
}

#[test]
fn calls_naming_unknown_traces_or_spans_are_refused_with_the_reason() {
    let _exporter = capture();
    let client = Client::new();
    let err = client.end_trace("tr-0000000000000000000000000000abcd", SpanEnd::new()).unwrap_err();
    assert!(matches!(err, ClientError::TraceNotFound(_)), "{err}");
    let err = client.end_trace("not-an-id", SpanEnd::new()).unwrap_err();
    assert!(err.to_string().starts_with("invalid trace id \"not-an-id\""), "{err}");

    let root = client.start_trace(tracelake::span("root")).unwrap();
    let trace_id = root.trace_id().unwrap().to_owned();
    let bogus = tracelake::SpanId::new(42).unwrap();
    let err = client.start_span(tracelake::span("x"), &trace_id, bogus).unwrap_err();
    assert_eq!(err, ClientError::SpanNotFound { trace_id: trace_id.clone(), span_id: bogus });

    let _active = tracelake::start_span("fluent");
    let err = client.start_trace(tracelake::span("nested-root")).unwrap_err();
    assert!(matches!(err, ClientError::InsideActiveSpan(_)), "{err}");
}
