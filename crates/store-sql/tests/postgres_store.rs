//! The PostgreSQL store passes the conformance suite against a real server: the one
//! `TRACELAKE_TEST_POSTGRES_URI` names (`scripts/test` starts Debian's postgresql with
//! `scripts/postgres` and sets it). Every test works in a database of its own, which the store
//! creates on connecting.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracelake_model::{TraceId, TraceState};
use tracelake_store::conformance::span;
use tracelake_store::{TraceQuery, TraceStore, WriteBatch, parse_filter};
use tracelake_store_sql::PostgresStore;

/// The URI of a database no test used before, on the test server.
fn fresh_database_uri() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let server = std::env::var("TRACELAKE_TEST_POSTGRES_URI").expect(
        "TRACELAKE_TEST_POSTGRES_URI must name a PostgreSQL server these tests may create databases on, \
         e.g. postgresql://postgres@127.0.0.1:5432/postgres (scripts/test starts one with scripts/postgres)",
    );
    let (scheme, rest) = server.split_once("://").expect("a postgresql:// URI");
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{scheme}://{host}/tracelake_test_{}_{nanos}_{n}", std::process::id())
}

async fn temporary() -> PostgresStore {
    PostgresStore::connect(&fresh_database_uri()).await.expect("connect")
}

tracelake_store::conformance_suite!(temporary());

#[tokio::test]
async fn what_was_written_is_there_after_reconnecting() {
    let uri = fresh_database_uri();
    let id = {
        let store = PostgresStore::connect(&uri).await.unwrap();
        store.create_experiment("kept", None, &[]).await.unwrap()
    };
    let store = PostgresStore::connect(&uri).await.unwrap();
    assert_eq!(store.get_experiment(&id).await.unwrap().name, "kept");
    assert_eq!(store.get_experiment("0").await.unwrap().name, "Default");
}

/// Two servers on one database write the spans of the same traces at the same time: every span
/// is kept and each trace's info follows all of them.
#[tokio::test]
async fn concurrent_writers_on_one_database_merge_a_trace() {
    let uri = fresh_database_uri();
    let (a, b) = (PostgresStore::connect(&uri).await.unwrap(), PostgresStore::connect(&uri).await.unwrap());
    let traces: Vec<TraceId> = (0..8).map(|_| TraceId::random()).collect();
    let mut writes = Vec::new();
    for span_id in 1..=40u64 {
        let store = if span_id % 2 == 0 { a.clone() } else { b.clone() };
        let spans: Vec<(String, _)> = traces
            .iter()
            .map(|t| {
                let parent = (span_id > 1).then_some(1);
                (
                    "0".to_owned(),
                    span(*t, span_id, parent, &format!("s{span_id}"), 1_000 + span_id, 2_000 + span_id),
                )
            })
            .collect();
        writes.push(tokio::spawn(async move {
            store.write(WriteBatch { infos: vec![], spans, ..Default::default() }).await
        }));
    }
    for w in writes {
        w.await.unwrap().unwrap();
    }
    let ids: Vec<String> = traces.iter().map(|t| t.to_mlflow_v3()).collect();
    for trace in a.get_traces(&ids).await.unwrap() {
        assert_eq!(trace.spans.len(), 40, "{}", trace.info.trace_id);
        assert_eq!(trace.spans[0].name, "s1", "the root comes first");
        assert_eq!(trace.info.state, TraceState::Ok);
        assert_eq!(trace.info.request_time_ms, 1_001);
        assert_eq!(trace.info.execution_duration_ms, Some(2_040 - 1_001));
    }
}

/// Rare and common tag values, and a pattern with a time bound, give the reference evaluator's
/// pages.
#[tokio::test]
async fn rare_and_common_tag_values_give_the_reference_answers() {
    let searches = [
        ("trace.name = 'rare'", 2),
        ("tag.`mlflow.traceName` = 'common'", 50),
        ("trace.name LIKE 'c%n' AND timestamp_ms > 2000", 40),
    ];
    tracelake_store::conformance::searches_page_like_the_reference(&temporary().await, 3_000, &searches)
        .await;
}

/// What PostgreSQL cannot hold, or a pattern it cannot compile, is refused as the caller's
/// mistake, and the store keeps working.
#[tokio::test]
async fn nul_text_and_bad_patterns_are_the_callers_errors() {
    let store = temporary().await;
    let t = TraceId::random();
    let bad = span(t, 1, None, "nul\0name", 1, 2);
    let err = store
        .write(WriteBatch { infos: vec![], spans: vec![("0".into(), bad)], ..Default::default() })
        .await
        .unwrap_err();
    assert!(matches!(err, tracelake_store::StoreError::InvalidArgument(_)), "{err:?}");
    assert!(store.get_traces(&[t.to_mlflow_v3()]).await.unwrap().is_empty(), "nothing of the batch was kept");

    let query = TraceQuery {
        experiment_ids: vec!["0".into()],
        filter: parse_filter("span.name RLIKE '(unclosed'").unwrap(),
        order_by: vec![],
        max_results: 10,
        page_token: None,
    };
    let err = store.search_traces(&query).await.unwrap_err();
    assert!(matches!(err, tracelake_store::StoreError::InvalidArgument(_)), "{err:?}");
    store
        .write(WriteBatch {
            infos: vec![],
            spans: vec![("0".into(), span(t, 1, None, "fine", 1, 2))],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(store.get_traces(&[t.to_mlflow_v3()]).await.unwrap().len(), 1);
}
