//! The behaviour every [`TraceStore`] must show. A backend's tests run the whole suite with
//!
//! ```text
//! tracelake_store::conformance_suite!(async { MyStore::open_temporary().await });
//! ```
//!
//! which expands to one `#[tokio::test]` per case, each on a fresh store (the calling crate
//! needs `tokio` with `macros` and `rt` as a dev-dependency).

use serde_json::json;
use tracelake_model::{
    Attributes, Span, SpanId, SpanKind, SpanStatus, StatusCode, TraceId, TraceInfo, TraceLocation,
    TraceState, keys, metadata_keys,
};

use crate::assessments::AssessmentChange;
use crate::filter::{parse_experiment_filter, parse_experiment_order_by, parse_filter, parse_order_by};
use crate::store::{StoreError, TraceStore};
use crate::types::{DeleteTraces, ExperimentQuery, LifecycleStage, NewRun, TraceQuery, ViewType, WriteBatch};

/// Expands to one test per conformance case, each on the store `$make` (an async expression)
/// produces.
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@cases $make;
            experiments_have_unique_names_and_a_lifecycle,
            experiments_are_found_by_filter_in_order,
            spans_and_info_in_either_order_store_the_same_trace,
            a_trace_seen_only_through_spans_takes_its_info_from_them,
            a_trace_written_in_pieces_has_the_info_of_one_written_at_once,
            a_batch_is_all_or_nothing,
            a_group_write_fails_only_its_bad_batches,
            prepared_batches_store_what_they_hold,
            writes_to_a_deleted_experiment_are_refused,
            search_answers_every_kind_of_filter,
            search_orders_and_pages_through_everything,
            delete_by_time_count_and_ids,
            trace_tags_are_set_and_deleted,
            assessments_are_logged_updated_searched_and_deleted,
            traces_linked_to_a_run_are_found_by_run_id,
            get_traces_puts_the_root_first_and_skips_unknown_ids,
            outlines_and_single_spans_agree_with_the_whole_trace,
            runs_are_created_updated_and_tagged,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $case() {
                let store = $make.await;
                $crate::conformance::$case(&store).await;
            }
        )*
    };
}

const MS: u64 = 1_000_000;

fn trace_id(n: u128) -> TraceId {
    TraceId::new(n).expect("non-zero")
}

/// A finished span of trace `t`, starting and ending at the given milliseconds.
pub fn span(t: TraceId, id: u64, parent: Option<u64>, name: &str, start_ms: u64, end_ms: u64) -> Span {
    let mut attributes = Attributes::new();
    attributes.insert(keys::REQUEST_ID, &t.to_mlflow_v3());
    attributes.insert(keys::SPAN_TYPE, "UNKNOWN");
    Span {
        trace_id: t,
        span_id: SpanId::new(id).expect("non-zero"),
        parent_id: parent.and_then(SpanId::new),
        name: name.to_owned().into(),
        kind: SpanKind::Internal,
        start_time_unix_nano: start_ms * MS,
        end_time_unix_nano: Some(end_ms * MS),
        status: SpanStatus::ok(),
        attributes,
        events: vec![],
        links: vec![],
    }
}

fn with(mut s: Span, key: &'static str, value: serde_json::Value) -> Span {
    s.attributes.insert(key, &value);
    s
}

/// The info a client writes at the end of trace `t` (MLflow's StartTraceV3).
pub fn info(
    t: TraceId,
    experiment_id: &str,
    start_ms: i64,
    duration_ms: i64,
    state: TraceState,
) -> TraceInfo {
    let mut info = TraceInfo {
        trace_id: t.to_mlflow_v3(),
        trace_location: TraceLocation::experiment(experiment_id),
        request_time_ms: start_ms,
        execution_duration_ms: Some(duration_ms),
        state,
        ..TraceInfo::default()
    };
    info.trace_metadata.insert(metadata_keys::SCHEMA_VERSION.into(), "3".into());
    info
}

fn spans_batch(experiment_id: &str, spans: Vec<Span>) -> WriteBatch {
    WriteBatch {
        infos: vec![],
        spans: spans.into_iter().map(|s| (experiment_id.to_owned(), s)).collect(),
        ..Default::default()
    }
}

fn infos_batch(infos: Vec<TraceInfo>) -> WriteBatch {
    WriteBatch { infos, spans: vec![], ..Default::default() }
}

async fn search(store: &dyn TraceStore, experiment_id: &str, filter: &str) -> Vec<String> {
    let query = TraceQuery {
        experiment_ids: vec![experiment_id.to_owned()],
        filter: parse_filter(filter).unwrap_or_else(|e| panic!("{filter}: {e}")),
        order_by: parse_order_by(&["timestamp_ms ASC"]).unwrap(),
        max_results: 1000,
        page_token: None,
    };
    let page = store.search_traces(&query).await.unwrap_or_else(|e| panic!("{filter}: {e}"));
    page.items.into_iter().map(|i| i.trace_id).collect()
}

pub async fn experiments_have_unique_names_and_a_lifecycle(store: &dyn TraceStore) {
    let default = store.get_experiment("0").await.expect("the default experiment exists");
    assert_eq!(default.lifecycle_stage, LifecycleStage::Active);
    let id = store.create_experiment("agents", None, &[("team".into(), "search".into())]).await.unwrap();
    assert_ne!(id, "0");
    let e = store.get_experiment(&id).await.unwrap();
    assert_eq!((e.name.as_str(), e.tags["team"].as_str()), ("agents", "search"));
    assert!(matches!(store.create_experiment("agents", None, &[]).await, Err(StoreError::AlreadyExists(_))));
    assert!(matches!(store.create_experiment("  ", None, &[]).await, Err(StoreError::InvalidArgument(_))));
    assert_eq!(store.get_experiment_by_name("agents").await.unwrap().unwrap().experiment_id, id);
    assert!(store.get_experiment_by_name("nope").await.unwrap().is_none());
    assert!(matches!(store.get_experiment("12345").await, Err(StoreError::NotFound(_))));

    store.rename_experiment(&id, "agents-v2").await.unwrap();
    store.set_experiment_tag(&id, "stage", "beta").await.unwrap();
    store.set_experiment_tag(&id, "owner", "me").await.unwrap();
    store.delete_experiment_tag(&id, "owner").await.unwrap();
    assert!(!store.get_experiment(&id).await.unwrap().tags.contains_key("owner"));
    assert!(matches!(store.delete_experiment_tag(&id, "owner").await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.delete_experiment_tag("12345", "owner").await, Err(StoreError::NotFound(_))));
    store.delete_experiment(&id).await.unwrap();
    assert!(matches!(store.delete_experiment_tag(&id, "stage").await, Err(StoreError::InvalidState(_))));
    // a deleted experiment still owns its name
    assert!(matches!(
        store.create_experiment("agents-v2", None, &[]).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let deleted = store.list_experiments(ViewType::DeletedOnly).await.unwrap();
    assert_eq!(deleted.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["agents-v2"]);
    assert!(matches!(store.restore_experiment("0").await, Err(StoreError::InvalidState(_))));
    store.restore_experiment(&id).await.unwrap();
    let e = store.get_experiment(&id).await.unwrap();
    assert_eq!(
        (e.name.as_str(), e.lifecycle_stage, e.tags["stage"].as_str()),
        ("agents-v2", LifecycleStage::Active, "beta")
    );

    for i in 0..5 {
        store.create_experiment(&format!("e{i}"), None, &[]).await.unwrap();
    }
    let names = experiment_names_by_page(store, &[], 3).await;
    assert_eq!(names.len(), 7, "{names:?}");
}

fn experiment_query(
    view: ViewType,
    filter: &str,
    order_by: &[&str],
    max_results: usize,
    page_token: Option<String>,
) -> ExperimentQuery {
    ExperimentQuery {
        view,
        filter: parse_experiment_filter(filter).unwrap_or_else(|e| panic!("{filter}: {e}")),
        order_by: parse_experiment_order_by(order_by).unwrap(),
        max_results,
        page_token,
    }
}

/// The names of every experiment, active or deleted, read `page_size` at a time until a page
/// comes without a token.
async fn experiment_names_by_page(
    store: &dyn TraceStore,
    order_by: &[&str],
    page_size: usize,
) -> Vec<String> {
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let query = experiment_query(ViewType::All, "", order_by, page_size, token);
        let page = store.search_experiments(&query).await.unwrap();
        names.extend(page.items.into_iter().map(|e| e.name));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => return names,
        }
    }
}

/// `search_experiments`: MLflow's filter over names, ids, times and tags, its orders and pages.
pub async fn experiments_are_found_by_filter_in_order(store: &dyn TraceStore) {
    let team = |t: &str| vec![("team".to_owned(), t.to_owned())];
    let a = store.create_experiment("agents-a", None, &team("search")).await.unwrap();
    let b = store.create_experiment("agents-B", None, &team("chat")).await.unwrap();
    let c = store.create_experiment("rag", None, &team("search")).await.unwrap();
    let d = store.create_experiment("untagged", None, &[]).await.unwrap();
    store.delete_experiment(&d).await.unwrap();
    let names = |view, filter: &str, order_by: &[&str]| {
        let query = experiment_query(view, filter, order_by, 100, None);
        let filter = filter.to_owned();
        async move {
            let page = store.search_experiments(&query).await.unwrap_or_else(|e| panic!("{filter}: {e}"));
            page.items.into_iter().map(|e| e.name).collect::<Vec<_>>()
        }
    };
    let active = ViewType::ActiveOnly;
    assert_eq!(names(active, "name LIKE 'agents-%'", &["name"]).await, ["agents-B", "agents-a"]);
    assert_eq!(names(active, "name ILIKE 'AGENTS-%'", &["name DESC"]).await, ["agents-a", "agents-B"]);
    assert_eq!(names(active, "name LIKE 'agents-b'", &[]).await, Vec::<String>::new());
    assert_eq!(
        names(active, "name != 'rag' AND name != 'Default'", &["name"]).await,
        ["agents-B", "agents-a"]
    );
    assert_eq!(names(active, "tags.team = 'search'", &["experiment_id"]).await, ["agents-a", "rag"]);
    assert_eq!(names(active, "tags.team != 'search'", &[]).await, ["agents-B"]);
    assert_eq!(names(active, "tags.team ILIKE 'CH%'", &[]).await, ["agents-B"]);
    assert_eq!(names(ViewType::All, "tags.team IS NULL", &["name"]).await, ["Default", "untagged"]);
    assert_eq!(names(ViewType::All, "tags.team IS NOT NULL", &["name"]).await.len(), 3);
    assert_eq!(names(ViewType::DeletedOnly, "name LIKE '%tagged'", &[]).await, ["untagged"]);
    let ids = format!("experiment_id IN ('{a}', '{c}', '{d}')");
    assert_eq!(names(active, &ids, &["experiment_id DESC"]).await, ["rag", "agents-a"]);
    assert_eq!(names(active, &format!("experiment_id = '{b}'"), &[]).await, ["agents-B"]);

    let created = store.get_experiment(&b).await.unwrap().creation_time_ms;
    let later = names(active, &format!("creation_time >= {created} AND name != 'Default'"), &["name"]).await;
    assert!(later.contains(&"agents-B".to_owned()) && !later.is_empty(), "{later:?}");
    assert!(names(active, &format!("creation_time < {created} AND name = 'agents-B'"), &[]).await.is_empty());
    let touched = store.get_experiment(&c).await.unwrap().last_update_time_ms;
    assert_eq!(names(active, &format!("last_update_time <= {touched} AND name = 'rag'"), &[]).await, ["rag"]);

    // by default the newest come first, experiments created in the same millisecond by id
    let page = store.search_experiments(&experiment_query(active, "", &[], 100, None)).await.unwrap();
    let key = |e: &crate::Experiment| {
        (std::cmp::Reverse(e.creation_time_ms), e.experiment_id.parse::<i64>().unwrap())
    };
    let mut sorted = page.items.clone();
    sorted.sort_by_key(key);
    assert_eq!(page.items, sorted);
    assert_eq!(page.items.len(), 4);

    // pages follow the order and end without a token
    let seen = experiment_names_by_page(store, &["name DESC"], 2).await;
    assert_eq!(seen, ["untagged", "rag", "agents-a", "agents-B", "Default"]);
}

fn sample_spans(t: TraceId) -> Vec<Span> {
    let root = with(span(t, 1, None, "agent", 1000, 1100), keys::INPUTS, json!({"q": "hi"}));
    let root = with(root, keys::OUTPUTS, json!("hello"));
    let llm = with(
        span(t, 2, Some(1), "llm", 1010, 1090),
        keys::CHAT_TOKEN_USAGE,
        json!({"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}),
    );
    vec![root, llm]
}

pub async fn spans_and_info_in_either_order_store_the_same_trace(store: &dyn TraceStore) {
    let (a, b) = (trace_id(0xA), trace_id(0xB));
    let mut info_a = info(a, "0", 1000, 100, TraceState::Ok);
    info_a.tags.insert("env".into(), "prod".into());
    let mut info_b = info(b, "0", 1000, 100, TraceState::Ok);
    info_b.tags.insert("env".into(), "prod".into());

    store.write(spans_batch("0", sample_spans(a))).await.unwrap();
    store.write(infos_batch(vec![info_a])).await.unwrap();
    store.write(infos_batch(vec![info_b])).await.unwrap();
    store.write(spans_batch("0", sample_spans(b))).await.unwrap();

    let traces = store.get_traces(&[a.to_mlflow_v3(), b.to_mlflow_v3()]).await.unwrap();
    assert_eq!(traces.len(), 2);
    let (ta, tb) = (&traces[0], &traces[1]);
    let mut ib = tb.info.clone();
    ib.trace_id.clone_from(&ta.info.trace_id);
    ib.tags.insert("mlflow.artifactLocation".into(), ta.info.tags["mlflow.artifactLocation"].clone());
    assert_eq!(ta.info, ib, "the order of arrival changed the stored info");
    assert_eq!(ta.spans.len(), tb.spans.len());
    assert_eq!(ta.info.tags["mlflow.trace.spansLocation"], "TRACKING_STORE");
    assert_eq!(ta.info.trace_metadata["mlflow.trace.infoFinalized"], "true");
    assert_eq!(ta.info.request_preview.as_deref(), Some("{\"q\": \"hi\"}"));

    // re-sending a span replaces it rather than duplicating it
    let renamed = span(a, 2, Some(1), "llm-retry", 1010, 1095);
    store.write(spans_batch("0", vec![renamed])).await.unwrap();
    let t = &store.get_traces(&[a.to_mlflow_v3()]).await.unwrap()[0];
    assert_eq!(t.spans.len(), 2);
    assert!(t.spans.iter().any(|s| s.name == "llm-retry"));
}

pub async fn a_trace_seen_only_through_spans_takes_its_info_from_them(store: &dyn TraceStore) {
    let t = trace_id(0xC);
    let spans = sample_spans(t);
    let mut child = spans[1].clone();
    child.attributes.insert("mlflow.traceTag.channel", "slack");
    store.write(spans_batch("0", vec![child])).await.unwrap();
    let info = store.get_trace_info(&t.to_mlflow_v3()).await.unwrap();
    assert_eq!(info.state, TraceState::InProgress, "no root yet");
    assert_eq!(info.request_time_ms, 1010);

    let mut root = spans[0].clone();
    root.status = SpanStatus::error("boom");
    root.attributes.insert("mlflow.traceTag.channel", "slack");
    store.write(spans_batch("0", vec![root])).await.unwrap();
    let info = store.get_trace_info(&t.to_mlflow_v3()).await.unwrap();
    assert_eq!(info.state, TraceState::Error);
    assert_eq!((info.request_time_ms, info.execution_duration_ms), (1000, Some(100)));
    assert_eq!(info.tags["mlflow.traceName"], "agent");
    assert_eq!(info.tags["channel"], "slack");
    assert_eq!(info.response_preview.as_deref(), Some("\"hello\""));
    assert_eq!(
        info.trace_metadata["mlflow.trace.tokenUsage"],
        "{\"input_tokens\": 3, \"output_tokens\": 4, \"total_tokens\": 7}"
    );
}

pub async fn a_trace_written_in_pieces_has_the_info_of_one_written_at_once(store: &dyn TraceStore) {
    let trace = |t: TraceId| {
        let mut spans = sample_spans(t);
        spans[0].attributes.insert("mlflow.traceTag.channel", "slack");
        let usage = json!({"input_tokens": 10, "output_tokens": 1, "total_tokens": 11});
        let mut tool = with(span(t, 3, Some(1), "tool", 1020, 1030), keys::CHAT_TOKEN_USAGE, usage);
        tool.attributes.insert("session.id", "s-1");
        let mut late = span(t, 4, Some(1), "late", 1040, 1150);
        late.attributes.insert("user.id", "ann");
        // child spans first, each in a batch of its own, the root last
        vec![tool, spans.remove(1), late, spans.remove(0)]
    };
    let (whole, pieces) = (trace_id(0x320), trace_id(0x321));
    store.write(spans_batch("0", trace(whole))).await.unwrap();
    for span in trace(pieces) {
        store.write(spans_batch("0", vec![span])).await.unwrap();
    }
    let at_once = store.get_trace_info(&whole.to_mlflow_v3()).await.unwrap();
    let mut in_pieces = store.get_trace_info(&pieces.to_mlflow_v3()).await.unwrap();
    in_pieces.trace_id.clone_from(&at_once.trace_id);
    assert_eq!(in_pieces, at_once);
    assert_eq!((at_once.request_time_ms, at_once.execution_duration_ms), (1000, Some(150)));
    assert_eq!(at_once.trace_metadata["mlflow.trace.session"], "s-1");
    assert_eq!(at_once.trace_metadata["mlflow.trace.user"], "ann");
    assert_eq!(
        at_once.trace_metadata["mlflow.trace.tokenUsage"],
        "{\"input_tokens\": 13, \"output_tokens\": 5, \"total_tokens\": 18}"
    );
    assert_eq!(at_once.tags["channel"], "slack");
}

pub async fn a_batch_is_all_or_nothing(store: &dyn TraceStore) {
    let t = trace_id(0xD);
    let mut batch = spans_batch("0", sample_spans(t));
    batch.spans.push(("999".into(), span(trace_id(0xE), 1, None, "elsewhere", 1, 2)));
    assert!(matches!(store.write(batch).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.get_trace_info(&t.to_mlflow_v3()).await, Err(StoreError::NotFound(_))));

    let mut bad = info(t, "0", 1, 1, TraceState::Ok);
    bad.trace_id = "tr-not-hex".into();
    let batch =
        WriteBatch { infos: vec![bad], spans: spans_batch("0", sample_spans(t)).spans, ..Default::default() };
    assert!(matches!(store.write(batch).await, Err(StoreError::InvalidArgument(_))));
    assert!(store.get_traces(&[t.to_mlflow_v3()]).await.unwrap().is_empty());
}

/// A batch prepared ahead of its write ([`TraceStore::prepare`]) stores what it holds, alone or
/// in a group, the last span of a repeated id winning.
pub async fn prepared_batches_store_what_they_hold(store: &dyn TraceStore) {
    let (t, u) = (trace_id(0x5A), trace_id(0x5B));
    // a first write, so that a store that prepares only for places it knows has seen this one
    store.write(spans_batch("0", vec![span(u, 1, None, "first", 1, 2)])).await.unwrap();
    let mut alone = spans_batch(
        "0",
        vec![
            span(t, 1, None, "draft", 1000, 1100),
            span(t, 2, Some(1), "child", 1010, 1020),
            span(t, 1, None, "root", 1000, 1100),
        ],
    );
    store.prepare(&mut alone);
    store.write(alone).await.unwrap();
    let mut first = spans_batch("0", vec![span(u, 2, Some(1), "draft", 3, 4)]);
    let mut second = spans_batch("0", vec![span(u, 2, Some(1), "kept", 3, 4)]);
    store.prepare(&mut first);
    store.prepare(&mut second);
    for result in store.write_group(vec![first, second]).await {
        result.unwrap();
    }
    let traces = store.get_traces(&[t.to_mlflow_v3(), u.to_mlflow_v3()]).await.unwrap();
    let names = |i: usize| traces[i].spans.iter().map(|s| s.name.to_string()).collect::<Vec<_>>();
    assert_eq!(names(0), ["root", "child"]);
    assert_eq!(names(1), ["first", "kept"]);
    let root = store.get_span(&t.to_mlflow_v3(), SpanId::new(1).unwrap()).await.unwrap().unwrap();
    assert_eq!(root, traces[0].spans[0]);
}

pub async fn a_group_write_fails_only_its_bad_batches(store: &dyn TraceStore) {
    let (split, other, bad) = (trace_id(0x4A), trace_id(0x4B), trace_id(0x4C));
    let spans = sample_spans(split);
    let group = vec![
        // a trace whose spans come in two batches of one group, the root last
        spans_batch("0", vec![spans[1].clone()]),
        spans_batch("999", vec![span(bad, 1, None, "nowhere", 1, 2)]),
        spans_batch("0", vec![spans[0].clone(), span(other, 1, None, "other", 2000, 2010)]),
    ];
    let results = store.write_group(group).await;
    assert_eq!(results.len(), 3, "one result per batch");
    let ids = |r: &crate::StoreResult<Vec<TraceInfo>>| {
        let mut ids: Vec<String> = r.as_ref().unwrap().iter().map(|i| i.trace_id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&results[0]), [split.to_mlflow_v3()]);
    assert!(matches!(&results[1], Err(StoreError::NotFound(m)) if m.contains("999")), "{:?}", results[1]);
    assert_eq!(ids(&results[2]), [split.to_mlflow_v3(), other.to_mlflow_v3()]);
    let third = results[2].as_ref().unwrap();
    let info = third.iter().find(|i| i.trace_id == split.to_mlflow_v3()).unwrap();
    assert_eq!((info.state, info.request_time_ms), (TraceState::Ok, 1000), "the root completes the trace");

    let stored = store.get_traces(&[split.to_mlflow_v3(), other.to_mlflow_v3()]).await.unwrap();
    assert_eq!(stored.iter().map(|t| t.spans.len()).collect::<Vec<_>>(), [2, 1]);
    assert!(matches!(store.get_trace_info(&bad.to_mlflow_v3()).await, Err(StoreError::NotFound(_))));
}

pub async fn writes_to_a_deleted_experiment_are_refused(store: &dyn TraceStore) {
    let id = store.create_experiment("retired", None, &[]).await.unwrap();
    store.delete_experiment(&id).await.unwrap();
    let result = store.write(spans_batch(&id, sample_spans(trace_id(0xF)))).await;
    assert!(matches!(result, Err(StoreError::InvalidState(_))), "{result:?}");
}

/// Five traces with different shapes, for the search cases.
async fn search_fixture(store: &dyn TraceStore) -> (String, Vec<String>) {
    let exp = store.create_experiment("search", None, &[]).await.unwrap();
    let mut ids = Vec::new();
    for n in 1..=5u64 {
        let t = trace_id(0x100 + u128::from(n));
        let start = n * 1000;
        let mut root =
            span(t, 1, None, if n % 2 == 0 { "chat" } else { "retrieve_docs" }, start, start + n * 10);
        root.attributes.insert(keys::INPUTS, &json!({"question": format!("question {n}")}));
        if n == 3 {
            root.status = SpanStatus::error("failed");
        }
        let mut child = span(t, 2, Some(1), "tool", start + 1, start + 2);
        child.attributes.insert(keys::SPAN_TYPE, if n <= 2 { "LLM" } else { "TOOL" });
        child.attributes.insert("model", &format!("gpt-{n}"));
        let mut inf = info(
            t,
            &exp,
            start as i64,
            (n * 10) as i64,
            if n == 3 { TraceState::Error } else { TraceState::Ok },
        );
        if n != 5 {
            inf.tags.insert("env".into(), if n <= 2 { "prod" } else { "dev" }.into());
        }
        inf.trace_metadata.insert("mlflow.trace.session".into(), format!("s-{}", n % 2));
        if n == 4 {
            inf.trace_metadata.insert("mlflow.sourceRun".into(), "run-4".into());
            inf.client_request_id = Some("req-4".into());
        }
        store
            .write(WriteBatch {
                infos: vec![inf],
                spans: vec![(exp.clone(), root), (exp.clone(), child)],
                ..Default::default()
            })
            .await
            .unwrap();
        ids.push(t.to_mlflow_v3());
    }
    (exp, ids)
}

pub async fn search_answers_every_kind_of_filter(store: &dyn TraceStore) {
    let (exp, ids) = search_fixture(store).await;
    let pick = |ns: &[usize]| ns.iter().map(|n| ids[n - 1].clone()).collect::<Vec<_>>();
    let cases: &[(&str, &[usize])] = &[
        ("", &[1, 2, 3, 4, 5]),
        ("status = 'ERROR'", &[3]),
        ("trace.status IN ('OK')", &[1, 2, 4, 5]),
        ("timestamp_ms > 2000", &[3, 4, 5]),
        ("timestamp_ms >= 2000 AND timestamp_ms < 4000", &[2, 3]),
        ("execution_time_ms <= 20", &[1, 2]),
        ("end_time_ms = 3030", &[3]),
        ("name = 'chat'", &[2, 4]),
        ("trace.name LIKE 'retrieve%'", &[1, 3, 5]),
        ("name ILIKE 'CHAT'", &[2, 4]),
        ("name RLIKE '^re.*docs$'", &[1, 3, 5]),
        ("client_request_id = 'req-4'", &[4]),
        (&format!("request_id = '{}'", ids[1]), &[2]),
        ("tag.env = 'prod'", &[1, 2]),
        ("tag.env != 'prod'", &[3, 4]),
        ("tag.env IS NULL", &[5]),
        ("tag.env IS NOT NULL AND tag.env LIKE 'd%'", &[3, 4]),
        ("metadata.`mlflow.trace.session` = 's-0'", &[2, 4]),
        ("run_id = 'run-4'", &[4]),
        ("span.type = 'LLM'", &[1, 2]),
        ("span.type IN ('TOOL') AND span.name = 'tool'", &[3, 4, 5]),
        ("span.type = 'TOOL' AND span.name = 'chat'", &[]),
        ("span.status = 'ERROR'", &[3]),
        ("span.name NOT IN ('tool', 'chat')", &[1, 3, 5]),
        ("span.attributes.model = 'gpt-2'", &[2]),
        ("span.attributes.model LIKE 'gpt-%'", &[1, 2, 3, 4, 5]),
        ("span.attributes.model ILIKE 'GPT-3'", &[3]),
        ("span.attributes.model RLIKE '[45]$' AND span.name = 'tool'", &[4, 5]),
        ("tag.env ILIKE 'PR%' AND span.attributes.model != 'gpt-1'", &[2]),
        ("span.content ILIKE '%QUESTION 3%'", &[3]),
        ("trace.text LIKE '%question 5%'", &[5]),
    ];
    for (filter, expected) in cases {
        assert_eq!(search(store, &exp, filter).await, pick(expected), "filter: {filter}");
    }
    // a search never leaks traces of other experiments
    let other = store.create_experiment("other", None, &[]).await.unwrap();
    assert!(search(store, &other, "").await.is_empty());
}

pub async fn search_orders_and_pages_through_everything(store: &dyn TraceStore) {
    let (exp, ids) = search_fixture(store).await;
    let query = |order: &[&str], max, token| TraceQuery {
        experiment_ids: vec![exp.clone()],
        filter: parse_filter("").unwrap(),
        order_by: parse_order_by(order).unwrap(),
        max_results: max,
        page_token: token,
    };
    // default: newest first
    let page = store.search_traces(&query(&[], 10, None)).await.unwrap();
    let newest_first: Vec<_> = ids.iter().rev().cloned().collect();
    assert_eq!(page.items.iter().map(|i| i.trace_id.clone()).collect::<Vec<_>>(), newest_first);
    // by execution time descending, then two at a time
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = store.search_traces(&query(&["execution_time_ms DESC"], 2, token)).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|i| i.trace_id));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);
    // by tag, missing values first when ascending
    let by_tag = store.search_traces(&query(&["tag.env", "timestamp_ms"], 10, None)).await.unwrap();
    let order: Vec<_> = by_tag.items.iter().map(|i| i.tags.get("env").cloned().unwrap_or_default()).collect();
    assert_eq!(order, ["", "dev", "dev", "prod", "prod"]);
    assert!(matches!(
        store.search_traces(&query(&[], 10, Some("not-a-token".into()))).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(store.search_traces(&query(&[], 0, None)).await, Err(StoreError::InvalidArgument(_))));
}

pub async fn delete_by_time_count_and_ids(store: &dyn TraceStore) {
    let (exp, ids) = search_fixture(store).await;
    let deleted = store
        .delete_traces(&DeleteTraces::OlderThan {
            experiment_id: exp.clone(),
            max_timestamp_ms: 3000,
            max_traces: Some(2),
        })
        .await
        .unwrap();
    assert_eq!(deleted, 2, "the two oldest");
    assert_eq!(search(store, &exp, "").await, ids[2..].to_vec());
    let deleted = store
        .delete_traces(&DeleteTraces::Ids {
            experiment_id: exp.clone(),
            trace_ids: vec![ids[4].clone(), "tr-000000000000000000000000000fffff".into()],
        })
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(search(store, &exp, "").await, ids[2..4].to_vec());
    // ids of another experiment are not touched
    let deleted = store
        .delete_traces(&DeleteTraces::Ids { experiment_id: "0".into(), trace_ids: vec![ids[2].clone()] })
        .await
        .unwrap();
    assert_eq!(deleted, 0);
}

pub async fn trace_tags_are_set_and_deleted(store: &dyn TraceStore) {
    let t = trace_id(0x200);
    store.write(spans_batch("0", sample_spans(t))).await.unwrap();
    let id = t.to_mlflow_v3();
    store.set_trace_tag(&id, "reviewed", "yes").await.unwrap();
    assert_eq!(store.get_trace_info(&id).await.unwrap().tags["reviewed"], "yes");
    store.delete_trace_tag(&id, "reviewed").await.unwrap();
    assert!(!store.get_trace_info(&id).await.unwrap().tags.contains_key("reviewed"));
    assert!(matches!(store.delete_trace_tag(&id, "reviewed").await, Err(StoreError::NotFound(_))));
    assert!(matches!(
        store.set_trace_tag(&id, "mlflow.artifactLocation", "x").await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.set_trace_tag("tr-0000000000000000000000000000dead", "k", "v").await,
        Err(StoreError::NotFound(_))
    ));
}

/// Feedback on a trace: logged, found by a `feedback.<name>` filter, updated, deleted.
pub async fn assessments_are_logged_updated_searched_and_deleted(store: &dyn TraceStore) {
    let t = trace_id(0x210);
    store.write(spans_batch("0", sample_spans(t))).await.unwrap();
    let id = t.to_mlflow_v3();
    let time = || "2026-01-01T00:00:00Z".to_owned();
    let feedback = json!({"assessment_name": "helpful", "feedback": {"value": true},
                          "source": {"source_type": "HUMAN", "source_id": "me"}});
    let created = store
        .change_assessment(&id, AssessmentChange::Create { assessment: feedback, time: time() })
        .await
        .unwrap()
        .unwrap();
    let assessment_id = created["assessment_id"].as_str().unwrap().to_owned();
    let stored = store.get_trace_info(&id).await.unwrap().assessments;
    assert_eq!(stored, [created]);
    assert_eq!(search(store, "0", "feedback.helpful = 'true'").await, [id.as_str()]);

    let update = AssessmentChange::Update {
        assessment_id: assessment_id.clone(),
        patch: json!({"feedback": {"value": false}}),
        fields: vec!["feedback".into()],
        time: time(),
    };
    store.change_assessment(&id, update).await.unwrap();
    assert!(search(store, "0", "feedback.helpful = 'true'").await.is_empty());
    assert_eq!(search(store, "0", "feedback.helpful = 'false'").await, [id.as_str()]);

    // a second trace with a numeric feedback and an expectation
    let other = trace_id(0x211);
    store.write(spans_batch("0", sample_spans(other))).await.unwrap();
    let other = other.to_mlflow_v3();
    for assessment in [
        json!({"assessment_name": "score", "feedback": {"value": 0.8}}),
        json!({"assessment_name": "answer", "expectation": {"value": "42"}}),
    ] {
        store.change_assessment(&other, AssessmentChange::Create { assessment, time: time() }).await.unwrap();
    }
    assert_eq!(search(store, "0", "feedback.score > 0.5").await, [other.as_str()]);
    assert!(search(store, "0", "feedback.score < 0.5").await.is_empty());
    assert_eq!(search(store, "0", "feedback.score = '0.8'").await, [other.as_str()]);
    assert_eq!(search(store, "0", "expectation.answer = '42'").await, [other.as_str()]);
    assert_eq!(search(store, "0", "expectation.answer LIKE '4%'").await, [other.as_str()]);
    assert_eq!(search(store, "0", "feedback.helpful != 'true'").await, [id.as_str()]);
    assert_eq!(search(store, "0", "feedback.helpful IS NULL").await, [other.as_str()]);
    assert_eq!(search(store, "0", "feedback.score IS NOT NULL").await, [other.as_str()]);

    let delete = AssessmentChange::Delete { assessment_id };
    assert_eq!(store.change_assessment(&id, delete).await.unwrap(), None);
    assert!(store.get_trace_info(&id).await.unwrap().assessments.is_empty());
    let unknown = AssessmentChange::Delete { assessment_id: "a-1".into() };
    assert!(matches!(
        store.change_assessment("tr-0000000000000000000000000000dead", unknown).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn traces_linked_to_a_run_are_found_by_run_id(store: &dyn TraceStore) {
    let (exp, ids) = search_fixture(store).await;
    store.link_traces_to_run(&ids[..2], "run-7").await.unwrap();
    assert_eq!(search(store, &exp, "run_id = 'run-7'").await, ids[..2].to_vec());
    assert_eq!(
        search(store, &exp, "attributes.run_id IN ('run-7', 'run-4')").await,
        [&ids[..2], &ids[3..4]].concat()
    );
    let too_many: Vec<String> = (0..101).map(|_| ids[0].clone()).collect();
    assert!(matches!(store.link_traces_to_run(&too_many, "r").await, Err(StoreError::InvalidArgument(_))));
}

pub async fn get_traces_puts_the_root_first_and_skips_unknown_ids(store: &dyn TraceStore) {
    let t = trace_id(0x300);
    let mut spans = sample_spans(t);
    spans.reverse(); // child first
    let late_child = span(t, 3, Some(1), "early", 999, 1001);
    spans.push(late_child);
    store.write(spans_batch("0", spans)).await.unwrap();
    let got =
        store.get_traces(&["tr-0000000000000000000000000000beef".into(), t.to_mlflow_v3()]).await.unwrap();
    assert_eq!(got.len(), 1);
    let names: Vec<_> = got[0].spans.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["agent", "early", "llm"]);
}

pub async fn outlines_and_single_spans_agree_with_the_whole_trace(store: &dyn TraceStore) {
    let t = trace_id(0x310);
    let mut spans = sample_spans(t);
    let mut failed = with(span(t, 3, Some(1), "tool", 1020, 1030), keys::SPAN_TYPE, json!("TOOL"));
    failed.status = SpanStatus::error("boom");
    let mut untyped = span(t, 4, Some(2), "inner", 1040, 1050);
    untyped.attributes = Attributes::new();
    spans.extend([failed, untyped]);
    store.write(spans_batch("0", spans)).await.unwrap();
    let id = t.to_mlflow_v3();
    let whole = store.get_traces(std::slice::from_ref(&id)).await.unwrap().pop().unwrap();

    let outline = store.get_trace_outline(&id).await.unwrap().expect("the trace has an outline");
    assert_eq!(outline.info, whole.info);
    assert_eq!(outline.spans, whole.spans.iter().map(crate::derive::outline).collect::<Vec<_>>());
    let types: Vec<_> = outline.spans.iter().map(|s| s.span_type().as_str().to_owned()).collect();
    assert_eq!(types, ["UNKNOWN", "UNKNOWN", "TOOL", "UNKNOWN"]);
    assert_eq!(outline.spans[2].status.code, StatusCode::Error);
    assert!(outline.spans.iter().all(|s| s.attributes.len() == 1 && s.status.message.is_empty()));

    for span in &whole.spans {
        assert_eq!(store.get_span(&id, span.span_id).await.unwrap().as_ref(), Some(span));
    }
    let missing = SpanId::new(99).unwrap();
    assert_eq!(store.get_span(&id, missing).await.unwrap(), None);
    let unknown = trace_id(0x311).to_mlflow_v3();
    assert_eq!(store.get_trace_outline(&unknown).await.unwrap(), None);
    assert_eq!(store.get_span(&unknown, whole.spans[0].span_id).await.unwrap(), None);
}

pub async fn runs_are_created_updated_and_tagged(store: &dyn TraceStore) {
    let exp = store.create_experiment("runs", None, &[]).await.unwrap();
    let run = store
        .create_run(NewRun {
            experiment_id: exp.clone(),
            run_name: Some("first".into()),
            user_id: "ann".into(),
            start_time_ms: 1000,
            tags: vec![("mlflow.source.name".into(), "train.py".into())],
        })
        .await
        .unwrap();
    assert_eq!(run.run_id.len(), 32);
    assert_eq!(
        (run.status.as_str(), run.experiment_id.as_str(), run.run_name.as_str()),
        ("RUNNING", exp.as_str(), "first")
    );
    store.set_run_tag(&run.run_id, "stage", "eval").await.unwrap();
    let done = store.update_run(&run.run_id, Some("FINISHED"), Some(2000), None).await.unwrap();
    assert_eq!((done.status.as_str(), done.end_time_ms), ("FINISHED", Some(2000)));
    let got = store.get_run(&run.run_id).await.unwrap();
    assert_eq!(got.tags["stage"], "eval");
    assert_eq!(got.tags["mlflow.source.name"], "train.py");
    assert_eq!(got.run_name, "first");
    assert!(matches!(
        store.update_run(&run.run_id, Some("DONE"), None, None).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(store.get_run("0000").await, Err(StoreError::NotFound(_))));
    let unnamed = store.create_run(NewRun { experiment_id: exp.clone(), ..NewRun::default() }).await.unwrap();
    assert_eq!(unnamed.run_name, unnamed.run_id);
    store.delete_experiment(&exp).await.unwrap();
    let refused = store.create_run(NewRun { experiment_id: exp, ..NewRun::default() }).await;
    assert!(matches!(refused, Err(StoreError::InvalidState(_))));
}

/// Writes `traces` one-span traces a millisecond apart (every 1,000th named "rare", the rest
/// "common") to `store` and to the reference in-memory store, then checks that the first two
/// pages of each `(filter, max_results)` search are the same in both. Backends call it with
/// enough traces to exercise their different plans (an index on a value, a walk by time).
pub async fn searches_page_like_the_reference(
    store: &dyn TraceStore,
    traces: u64,
    searches: &[(&str, usize)],
) {
    let reference = crate::InMemoryStore::new();
    let spans: Vec<(String, Span)> = (0..traces)
        .map(|i| {
            let name = if i % 1_000 == 7 { "rare" } else { "common" };
            ("0".to_owned(), span(TraceId::random(), 1, None, name, 1_000 + i, 1_000 + i))
        })
        .collect();
    for s in [store, &reference] {
        s.write(WriteBatch { infos: vec![], spans: spans.clone(), ..Default::default() }).await.unwrap();
    }
    for &(filter, max_results) in searches {
        let mut query = TraceQuery {
            experiment_ids: vec!["0".into()],
            filter: parse_filter(filter).unwrap(),
            order_by: vec![],
            max_results,
            page_token: None,
        };
        for _ in 0..2 {
            let got = store.search_traces(&query).await.unwrap();
            let want = reference.search_traces(&query).await.unwrap();
            let ids =
                |p: &crate::Page<TraceInfo>| p.items.iter().map(|t| t.trace_id.clone()).collect::<Vec<_>>();
            assert_eq!(ids(&got), ids(&want), "{filter}");
            assert!(!got.items.is_empty(), "{filter}");
            query.page_token = got.next_page_token;
        }
    }
}
