//! The UI's pages over an in-memory store: what a user sees and can do, checked in the HTML.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;
use tower::ServiceExt as _;
use tracelake_model::{SpanEvent, SpanStatus, TraceId, TraceState, keys, metadata_keys};
use tracelake_store::conformance::{info, span};
use tracelake_store::{AssessmentChange, InMemoryStore, TraceStore, WriteBatch};

struct Fixture {
    store: Arc<InMemoryStore>,
    experiment: String,
    trace_id: String,
    failing_span: String,
}

/// One experiment with one trace: a chat root, a retriever child and a tool child that failed.
async fn fixture() -> Fixture {
    let store = Arc::new(InMemoryStore::new());
    let experiment = store.create_experiment("support bot", None, &[]).await.unwrap();
    let t = TraceId::new(0xABC).unwrap();
    let mut root = span(t, 1, None, "answer", 1_000, 1_100);
    root.attributes.insert(keys::SPAN_TYPE, "CHAT_MODEL");
    root.attributes.insert(
        keys::INPUTS,
        &json!({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is <b>tracing</b>?"}]}),
    );
    root.attributes.insert(keys::OUTPUTS, &json!({"role": "assistant", "content": "following every step"}));
    let mut retrieve = span(t, 2, Some(1), "retrieve", 1_010, 1_040);
    retrieve.attributes.insert(keys::SPAN_TYPE, "RETRIEVER");
    let mut tool = span(t, 3, Some(1), "lookup", 1_050, 1_090);
    tool.attributes.insert(keys::SPAN_TYPE, "TOOL");
    tool.status = SpanStatus::error("no such order");
    tool.events.push(SpanEvent::exception(
        1_089_000_000,
        "KeyError",
        "order 7",
        Some("Traceback: line 3 in lookup"),
    ));
    let failing_span = tool.span_id.to_string();
    let mut inf = info(t, &experiment, 1_000, 100, TraceState::Error);
    inf.trace_metadata.insert(metadata_keys::SESSION.into(), "session-9".into());
    inf.trace_metadata.insert(
        metadata_keys::TOKEN_USAGE.into(),
        r#"{"input_tokens": 7, "output_tokens": 5, "total_tokens": 12}"#.into(),
    );
    inf.tags.insert("env".into(), "prod".into());
    let spans = [root, retrieve, tool].into_iter().map(|s| (experiment.clone(), s)).collect();
    store.write(WriteBatch { infos: vec![inf], spans, ..Default::default() }).await.unwrap();
    Fixture { store, experiment, trace_id: t.to_mlflow_v3(), failing_span }
}

async fn get(store: &Arc<InMemoryStore>, uri: &str) -> (StatusCode, String) {
    let app = tracelake_ui::router(store.clone(), None);
    let response = app.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn post_form(store: &Arc<InMemoryStore>, uri: &str, form: &str) -> (StatusCode, Option<String>) {
    let app = tracelake_ui::router(store.clone(), None);
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let location = response.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned());
    (response.status(), location)
}

#[tokio::test]
async fn experiments_are_listed_with_links_to_their_traces() {
    let f = fixture().await;
    let (status, html) = get(&f.store, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<h1>Experiments</h1>"), "{html}");
    assert!(html.contains(&format!(r#"<a href="/experiments/{}">support bot</a>"#, f.experiment)), "{html}");
}

#[tokio::test]
async fn an_experiments_traces_show_status_latency_tokens_session_tags_and_previews() {
    let f = fixture().await;
    let (status, html) = get(&f.store, &format!("/experiments/{}", f.experiment)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&format!(r#"<a href="/traces/{}">answer</a>"#, f.trace_id)), "{html}");
    for expected in ["status-ERROR", "100 ms", "<td>12</td>", "session-9", "env=prod"] {
        assert!(html.contains(expected), "missing {expected:?} in {html}");
    }
    // sortable headers, as links with their sort state
    assert!(html.contains(r#"aria-sort="none"><a href="/experiments/"#), "{html}");
}

#[tokio::test]
async fn a_filter_narrows_the_list_and_a_bad_one_is_shown_at_its_position() {
    let f = fixture().await;
    let uri = |filter: &str| {
        format!("/experiments/{}?filter={}", f.experiment, filter.replace(' ', "%20").replace('\'', "%27"))
    };
    let (status, html) = get(&f.store, &uri("tags.env = 'prod'")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("answer</a>"), "{html}");
    let (_, html) = get(&f.store, &uri("tags.env = 'dev'")).await;
    assert!(html.contains("0 traces on this page"), "{html}");

    let (status, html) = get(&f.store, &uri("tags.env = prod")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains(r#"role="alert""#) && html.contains("column 12"), "{html}");
    assert!(html.contains("tags.env = prod\n           ^"), "the caret points at the problem: {html}");
    assert!(html.contains(r#"aria-invalid="true""#), "{html}");
}

#[tokio::test]
async fn a_trace_page_shows_the_span_tree_the_waterfall_and_the_root_span() {
    let f = fixture().await;
    let (status, html) = get(&f.store, &format!("/traces/{}", f.trace_id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(html.matches(r#"role="treeitem""#).count(), 3, "{html}");
    assert!(html.contains(r#"<ul role="group">"#), "children are nested: {html}");
    assert!(html.contains(r#"aria-current="true""#), "{html}");
    // the waterfall: the retriever starts 10 ms into a 100 ms trace and lasts 30 ms
    assert!(html.contains("left:10.00%;width:30.00%"), "{html}");
    // the root's chat inputs as a conversation, escaped
    assert!(html.contains(r#"<li class="role-user"><div class="role">user</div><div>what is &lt;b&gt;tracing&lt;/b&gt;?</div></li>"#), "{html}");
    assert!(html.contains("following every step"), "{html}");
    for expected in ["session-9", "Tokens", "env", "Set tag"] {
        assert!(html.contains(expected), "missing {expected:?}");
    }
}

#[tokio::test]
async fn a_span_has_a_stable_link_showing_its_error_and_stack_trace() {
    let f = fixture().await;
    let (status, html) = get(&f.store, &format!("/traces/{}?span={}", f.trace_id, f.failing_span)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"<h2 id="span-details">lookup <span class="type type-tool">"#), "{html}");
    assert!(
        html.contains(r#"<svg class="icon" aria-hidden="true""#) && html.contains(" TOOL</span></h2>"),
        "{html}"
    );
    assert!(html.contains("no such order"), "{html}");
    assert!(html.contains("<strong>KeyError</strong>: order 7"), "{html}");
    assert!(html.contains("Traceback: line 3 in lookup"), "{html}");
}

/// Feedback and expectations logged on a trace are listed on its page: value, source,
/// rationale, the span assessed (linked); one replaced by a later one is marked overridden.
#[tokio::test]
async fn a_trace_page_lists_its_feedback_and_expectations() {
    let f = fixture().await;
    let (_, html) = get(&f.store, &format!("/traces/{}", f.trace_id)).await;
    assert!(!html.contains("Assessments"), "no section without assessments: {html}");

    let log = |assessment: serde_json::Value| {
        let store = f.store.clone();
        let trace_id = f.trace_id.clone();
        async move {
            let change = AssessmentChange::Create { assessment, time: "2026-11-23T09:00:00Z".into() };
            store.change_assessment(&trace_id, change).await.unwrap().unwrap()
        }
    };
    let judged = log(json!({
        "assessment_name": "relevance",
        "trace_id": f.trace_id,
        "span_id": f.failing_span,
        "source": {"source_type": "LLM_JUDGE", "source_id": "judge-<1>"},
        "feedback": {"value": false},
        "rationale": "the tool answered <nothing>",
    }))
    .await;
    log(json!({
        "assessment_name": "relevance",
        "trace_id": f.trace_id,
        "source": {"source_type": "HUMAN", "source_id": "ana"},
        "feedback": {"value": true},
        "overrides": judged["assessment_id"],
    }))
    .await;
    log(json!({
        "assessment_name": "expected_answer",
        "trace_id": f.trace_id,
        "source": {"source_type": "HUMAN", "source_id": "ana"},
        "expectation": {"value": {"steps": 2}},
    }))
    .await;
    log(json!({
        "assessment_name": "groundedness",
        "trace_id": f.trace_id,
        "source": {"source_type": "CODE"},
        "feedback": {"error": {"error_code": "RATE_LIMIT", "error_message": "judge unavailable"}},
    }))
    .await;

    let (status, html) = get(&f.store, &format!("/traces/{}", f.trace_id)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"<h2 id="assessments-heading">Assessments (4)</h2>"#), "{html}");
    let section = &html[html.find("assessments-heading").unwrap()..html.find("tags-heading").unwrap()];
    let rows: Vec<&str> = section.split("<tr").skip(2).collect();
    assert_eq!(rows.len(), 4, "{section}");
    // the valid ones first, the overridden judgement last, dimmed
    assert!(
        rows[0].contains("relevance") && rows[0].contains("<td>true</td>") && rows[0].contains("HUMAN"),
        "{}",
        rows[0]
    );
    assert!(
        rows[1].contains("expected_answer")
            && rows[1].contains("Expectation")
            && rows[1].contains(r#"{&quot;steps&quot;:2}"#),
        "{}",
        rows[1]
    );
    assert!(
        rows[2].contains("error: RATE_LIMIT judge unavailable") && rows[2].contains("CODE"),
        "{}",
        rows[2]
    );
    let old = rows[3];
    assert!(old.starts_with(r#" class="overridden""#) && old.contains("(overridden)"), "{old}");
    assert!(old.contains("<td>false</td>") && old.contains("judge-&lt;1&gt;"), "{old}");
    assert!(old.contains("the tool answered &lt;nothing&gt;"), "escaped: {old}");
    let link = format!(r#"href="/traces/{}?span={}""#, f.trace_id, f.failing_span);
    assert!(old.contains(&link), "the assessed span is linked: {old}");
}

#[tokio::test]
async fn tags_are_added_edited_and_deleted_from_the_trace_page() {
    let f = fixture().await;
    let tags = format!("/traces/{}/tags", f.trace_id);
    let (status, location) = post_form(&f.store, &tags, "key=reviewed&value=yes").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some(format!("/traces/{}", f.trace_id).as_str()));
    post_form(&f.store, &tags, "key=reviewed&value=twice").await;
    assert_eq!(f.store.get_trace_info(&f.trace_id).await.unwrap().tags["reviewed"], "twice");
    let (status, _) = post_form(&f.store, &format!("{tags}/delete"), "key=reviewed").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(!f.store.get_trace_info(&f.trace_id).await.unwrap().tags.contains_key("reviewed"));
    let (status, _) = post_form(&f.store, &tags, "key=&value=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_session_shows_its_traces_in_order() {
    let f = fixture().await;
    // a second, later trace in the same session, and one in another session
    for (n, session, start) in [(0xABD_u128, "session-9", 5_000), (0xABE, "other's \\ session", 3_000)] {
        let t = TraceId::new(n).unwrap();
        let mut inf = info(t, &f.experiment, start, 10, TraceState::Ok);
        inf.trace_metadata.insert(metadata_keys::SESSION.into(), session.into());
        inf.request_preview = Some(format!("question at {start}"));
        let spans =
            vec![(f.experiment.clone(), span(t, 1, None, "follow-up", start as u64, start as u64 + 10))];
        f.store.write(WriteBatch { infos: vec![inf], spans, ..Default::default() }).await.unwrap();
    }
    let (_, list) = get(&f.store, &format!("/experiments/{}", f.experiment)).await;
    let href = format!("/experiments/{}/sessions/session-9", f.experiment);
    assert!(list.contains(&format!(r#"<a href="{href}">session-9</a>"#)), "{list}");
    let (status, html) = get(&f.store, &href).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("2 traces, oldest first"), "{html}");
    let first = html.find(&f.trace_id).expect("the first trace");
    let second = html.find("question at 5000").expect("the later trace");
    assert!(first < second, "oldest first");
    // a session id with a quote and a backslash is matched literally
    let (status, html) =
        get(&f.store, &format!("/experiments/{}/sessions/other%27s%20%5C%20session", f.experiment)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("1 traces") && html.contains("question at 3000"), "{html}");
}

#[tokio::test]
async fn charts_show_latency_tokens_and_errors_over_time() {
    let f = fixture().await;
    for n in 0..30u64 {
        let t = TraceId::new(0x1000 + u128::from(n)).unwrap();
        let start = 10_000 + n as i64 * 1_000;
        let state = if n % 10 == 0 { TraceState::Error } else { TraceState::Ok };
        let mut inf = info(t, &f.experiment, start, 20 + n as i64, state);
        inf.trace_metadata.insert(metadata_keys::TOKEN_USAGE.into(), r#"{"total_tokens": 3}"#.into());
        let spans =
            vec![(f.experiment.clone(), span(t, 1, None, "step", start as u64, start as u64 + 20 + n))];
        f.store.write(WriteBatch { infos: vec![inf], spans, ..Default::default() }).await.unwrap();
    }
    let (status, html) = get(&f.store, &format!("/experiments/{}/charts", f.experiment)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("From the latest 31 traces"), "{html}");
    for title in ["Latency p50", "Latency p95", "Tokens", "Errors", "Traces"] {
        assert!(html.contains(&format!(r#"<svg role="img" aria-label="{title}""#)), "no {title} chart");
    }
    // the numbers behind the bars, as text: 31 traces, 4 errors (the fixture's and 3 here)
    let errors = html.split("Errors</th>").nth(1).unwrap().split("</tbody>").next().unwrap();
    let total: i64 = errors
        .split("<td>")
        .filter_map(|c| c.split('<').next()?.parse().ok())
        .filter(|v: &i64| *v < 1_000)
        .sum();
    assert_eq!(total, 4, "{errors}");
}

#[tokio::test]
async fn a_large_trace_opens_collapsed_and_expands_on_the_way_to_a_span() {
    let store = Arc::new(InMemoryStore::new());
    let exp = store.create_experiment("big", None, &[]).await.unwrap();
    let t = TraceId::new(0xB16).unwrap();
    // a root, 3 stages, 1,000 steps under each stage: 3,004 spans
    let mut spans = vec![span(t, 1, None, "root", 0, 10_000)];
    for stage in 0..3u64 {
        spans.push(span(
            t,
            10 + stage,
            Some(1),
            &format!("stage-{stage}"),
            stage * 3_000,
            stage * 3_000 + 2_999,
        ));
        for step in 0..1_000u64 {
            let id = 1_000 + stage * 1_000 + step;
            spans.push(span(
                t,
                id,
                Some(10 + stage),
                &format!("step-{stage}-{step}"),
                stage * 3_000 + step,
                stage * 3_000 + step + 1,
            ));
        }
    }
    let batch = WriteBatch {
        infos: vec![],
        spans: spans.into_iter().map(|s| (exp.clone(), s)).collect(),
        ..Default::default()
    };
    store.write(batch).await.unwrap();
    let id = t.to_mlflow_v3();

    let (status, html) = get(&store, &format!("/traces/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Spans (3004)"), "{}", &html[..500]);
    assert_eq!(html.matches(r#"role="treeitem""#).count(), 4, "the root and its 3 stages");
    assert_eq!(html.matches("▸ 1000 more").count(), 3, "each stage says what it holds");

    // a step deep in the last stage: its stage opens (200 steps and the selected one)
    let deep = tracelake_model::SpanId::new(1_000 + 2 * 1_000 + 777).unwrap();
    let (_, html) = get(&store, &format!("/traces/{id}?span={deep}")).await;
    assert!(html.contains("step-2-777"), "the selected span is in the tree");
    assert_eq!(html.matches(r#"role="treeitem""#).count(), 4 + 201);
    assert!(html.contains("▸ 799 more"), "the rest of its stage is counted");
    assert!(html.contains(r#"<h2 id="span-details">step-2-777"#));

    // A collapsed stage says where its children are; they come as a group of their own.
    let (_, html) = get(&store, &format!("/traces/{id}")).await;
    let url = format!("/traces/{id}/children/{}", tracelake_model::SpanId::new(11).unwrap());
    assert!(html.contains(&format!(r#"aria-expanded="false" data-children="{url}""#)), "{html}");
    let (status, group) = get(&store, &url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(group.starts_with(r#"<ul role="group">"#), "{}", &group[..200]);
    assert_eq!(group.matches(r#"role="treeitem""#).count(), 200);
    assert!(group.contains("step-1-0") && group.contains("step-1-199") && !group.contains("step-1-200"));
    assert!(group.contains("800 more"), "the rest is counted");
    assert!(!group.contains("data-children"), "steps have no children to open");
    let (status, _) = get(&store, &format!("/traces/{id}/children/00000000000003e7")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a span the trace does not have");
}

#[tokio::test]
async fn unknown_traces_and_experiments_are_404_pages() {
    let f = fixture().await;
    let (status, html) = get(&f.store, "/traces/tr-00000000000000000000000000000fff").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("not found"), "{html}");
    let (status, _) = get(&f.store, "/experiments/424242").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
