//! The SQLite store passes the conformance suite, and keeps what it stored across reopening.

use tracelake_store::TraceStore;
use tracelake_store_sql::SqliteStore;

async fn temporary() -> SqliteStore {
    // The directory lives as long as the test process; each test gets its own file.
    let dir = tempfile::tempdir().expect("temp dir").keep();
    SqliteStore::open(dir.join("tracelake.db")).await.expect("open")
}

tracelake_store::conformance_suite!(temporary());

#[tokio::test]
async fn what_was_written_is_there_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracelake.db");
    let id = {
        let store = SqliteStore::open(&path).await.unwrap();
        store.create_experiment("kept", None, &[]).await.unwrap()
    };
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.get_experiment(&id).await.unwrap().name, "kept");
    assert_eq!(store.get_experiment("0").await.unwrap().name, "Default");
}

/// A database written by the version-2 schema (child rows keyed by trace id) is carried over to
/// version 3 (sequential trace keys) with every row.
#[tokio::test]
async fn a_version_2_database_is_upgraded_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("../migrations/sqlite/0001_initial.sql")).unwrap();
        conn.execute_batch(include_str!("../migrations/sqlite/0002_runs.sql")).unwrap();
        conn.execute_batch(
            "INSERT INTO experiments VALUES (0, 'Default', 'mlflow-artifacts:/0', 'active', 1, 1);
             INSERT INTO traces VALUES ('tr-0000000000000000000000000000abcd', 0, 1000, 5, 'OK', NULL, 'in', 'out', 0, '[]');
             INSERT INTO trace_tags VALUES ('tr-0000000000000000000000000000abcd', 'env', 'prod');
             INSERT INTO trace_metadata VALUES ('tr-0000000000000000000000000000abcd', 'mlflow.trace_schema.version', '3');
             INSERT INTO trace_runs VALUES ('tr-0000000000000000000000000000abcd', 'run-1');
             INSERT INTO spans VALUES ('tr-0000000000000000000000000000abcd', 1, NULL, 'root', 'CHAIN', 'OK', 1000000000, 1005000000, NULL,
               '{\"trace_id\": \"AAAAAAAAAAAAAAAAAACrzQ==\", \"span_id\": \"AAAAAAAAAAE=\", \"parent_span_id\": null, \"name\": \"root\", \"start_time_unix_nano\": 1000000000, \"end_time_unix_nano\": 1005000000, \"events\": [], \"status\": {\"code\": \"STATUS_CODE_OK\", \"message\": \"\"}, \"attributes\": {\"mlflow.traceRequestId\": \"\\\"tr-0000000000000000000000000000abcd\\\"\"}, \"links\": []}');
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let id = "tr-0000000000000000000000000000abcd".to_owned();
    let traces = store.get_traces(std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].info.tags["env"], "prod");
    assert_eq!(traces[0].info.trace_metadata["mlflow.trace_schema.version"], "3");
    assert_eq!(traces[0].spans.len(), 1);
    assert_eq!(traces[0].spans[0].name, "root");
    let query = tracelake_store::TraceQuery {
        experiment_ids: vec!["0".into()],
        filter: tracelake_store::parse_filter(
            "run_id = 'run-1' AND tag.env = 'prod' AND span.type = 'CHAIN'",
        )
        .unwrap(),
        order_by: vec![],
        max_results: 10,
        page_token: None,
    };
    assert_eq!(store.search_traces(&query).await.unwrap().items.len(), 1);
}

/// A tag equality that matches few traces is answered from the tag index, one that matches many
/// by walking traces newest first; both give the reference evaluator's pages.
#[tokio::test]
async fn rare_and_common_tag_values_give_the_reference_answers() {
    // 5,100 traces: "common" is past the store's threshold for starting from the index
    let searches = [("trace.name = 'rare'", 3), ("tag.`mlflow.traceName` = 'common'", 50)];
    tracelake_store::conformance::searches_page_like_the_reference(&temporary().await, 5_100, &searches)
        .await;
}

/// A pattern that does not compile is the caller's mistake, whichever row it first meets.
#[tokio::test]
async fn a_bad_pattern_is_the_callers_error() {
    use tracelake_store::conformance::span;
    use tracelake_store::{StoreError, TraceQuery, WriteBatch, parse_filter};

    let store = temporary().await;
    let t = tracelake_model::TraceId::random();
    store
        .write(WriteBatch {
            infos: vec![],
            spans: vec![("0".into(), span(t, 1, None, "a", 1, 2))],
            ..Default::default()
        })
        .await
        .unwrap();
    for filter in ["span.name RLIKE '(unclosed'", "trace.name RLIKE '['"] {
        let query = TraceQuery {
            experiment_ids: vec!["0".into()],
            filter: parse_filter(filter).unwrap(),
            order_by: vec![],
            max_results: 10,
            page_token: None,
        };
        let err = store.search_traces(&query).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(_)), "{filter}: {err:?}");
    }
}

/// A database from a newer tracelake (a schema version this one does not know) is refused, not
/// misread.
#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracelake.db");
    drop(SqliteStore::open(&path).await.unwrap());
    rusqlite::Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99").unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err().to_string();
    assert!(err.contains("version 99, newer than this tracelake knows"), "{err}");
}
