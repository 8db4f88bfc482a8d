//! The lake's upkeep: every append is a commit, checkpoints follow the commits, and a
//! maintenance pass merges the small files and vacuums the replaced ones, losing nothing; a
//! table made by an earlier version gains the columns added since.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deltalake::DeltaTable;
use deltalake::arrow::datatypes::Schema;
use deltalake::arrow::util::pretty::pretty_format_batches;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use tracelake_model::{SpanOrigin, TraceId, keys};
use tracelake_store::conformance::span;
use tracelake_store::{TraceStore, WriteBatch};
use tracelake_store_lake::columns::{schema_of, spans_schema, spans_to_batch, stats_columns};
use tracelake_store_lake::{Lake, LakeConfig, LakeStore, LakeTable};
use tracelake_store_sql::SqliteStore;
use url::Url;

const SPANS: &str = "mlflow_experiment_trace_otel_spans";
const LOGS: &str = "mlflow_experiment_trace_otel_logs";

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn small_files_are_merged_vacuumed_and_checkpointed_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let control = SqliteStore::open(dir.path().join("tracking.db")).await.unwrap();
    let root = dir.path().join("lake");
    let lake = Arc::new(Lake::open(LakeConfig::from_root(root.to_str().unwrap()).unwrap()).await.unwrap());
    let store = LakeStore::new(Arc::new(control), lake.clone());

    // 100 appends of one three-span trace each: 100 commits after the table's creation
    let mut ids = Vec::new();
    for n in 1..=100u128 {
        let t = TraceId::new(n).unwrap();
        let spans = vec![
            span(t, 1, None, "root", 1000, 1010),
            span(t, 2, Some(1), "a", 1001, 1002),
            span(t, 3, Some(1), "b", 1003, 1009),
        ];
        let batch = WriteBatch {
            spans: spans.into_iter().map(|s| ("main.upkeep".to_owned(), s)).collect(),
            ..Default::default()
        };
        store.write(batch).await.unwrap();
        ids.push(t.to_mlflow_v4("main.upkeep"));
    }
    let table = root.join("main/upkeep").join(SPANS);
    assert!(files(&table, ".parquet").len() >= 100, "one data file per append");
    let checkpoints = files(&table.join("_delta_log"), ".checkpoint.parquet");
    assert!(!checkpoints.is_empty(), "a checkpoint after 100 commits");

    let done = lake.maintain(64 << 20, Duration::ZERO).await.unwrap();
    assert!(done.files_compacted >= 100 && done.files_written >= 1, "{done:?}");
    assert!(done.files_vacuumed >= 100, "{done:?}");
    let data: Vec<PathBuf> =
        files(&table, ".parquet").into_iter().filter(|p| p.to_string_lossy().contains("date=")).collect();
    assert_eq!(data.len(), 1, "one file left in the one date partition: {data:?}");

    // everything is still there, through the store and through SQL
    let traces = store.get_traces(&ids).await.unwrap();
    assert_eq!(traces.len(), 100);
    assert!(traces.iter().all(|t| t.spans.len() == 3 && t.spans[0].name == "root"));
    let out = lake.query(&format!("SELECT count(*) AS n FROM main.upkeep.{SPANS}")).await.unwrap();
    let n =
        out.1[0].column(0).as_any().downcast_ref::<deltalake::arrow::array::Int64Array>().unwrap().value(0);
    assert_eq!(n, 300);
}

#[tokio::test]
async fn a_table_made_before_the_typed_columns_gains_them_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = Url::from_directory_path(dir.path().join(SPANS)).unwrap();
    let none = HashMap::new();
    let full = spans_schema();
    let earlier: Vec<_> = full.fields().iter().take_while(|f| f.name() != "span_type").cloned().collect();
    let earlier = Arc::new(Schema::new(earlier));

    let t = TraceId::new(7).unwrap();
    let mut llm = span(t, 1, None, "llm", 1000, 1010);
    llm.attributes.insert(keys::SPAN_TYPE, "CHAT_MODEL");
    llm.attributes.insert(keys::LLM_MODEL, "gpt-x");
    llm.attributes
        .insert(keys::CHAT_TOKEN_USAGE, &serde_json::json!({"input_tokens": 3, "output_tokens": 4}));
    let rows = spans_to_batch([(&llm, &SpanOrigin::default())]).unwrap();
    let earlier_rows = rows.project(&(0..earlier.fields().len()).collect::<Vec<_>>()).unwrap();

    // as an earlier version made it: fewer columns, default properties
    std::fs::create_dir_all(dir.path().join(SPANS)).unwrap();
    DeltaTable::try_from_url(url.clone())
        .await
        .unwrap()
        .write(vec![earlier_rows])
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(["date"])
        .await
        .unwrap();

    let table = LakeTable::open("main.new.spans".into(), url.clone(), &none, full, stats_columns(SPANS))
        .await
        .unwrap();
    table.append(vec![rows]).await.unwrap();
    let log = std::fs::read_dir(dir.path().join(SPANS).join("_delta_log")).unwrap().count();
    assert!(log >= 4, "created, columns added, properties set, appended: {log} log entries");
    let ctx = SessionContext::new();
    ctx.register_table("spans", table.provider(&ctx).await.unwrap()).unwrap();
    let out = ctx
        .sql("SELECT name, span_type, llm_model, input_tokens, output_tokens, total_tokens FROM spans ORDER BY llm_model NULLS FIRST")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let shown = pretty_format_batches(&out).unwrap().to_string();
    let expected = [
        "+------+------------+-----------+--------------+---------------+--------------+",
        "| name | span_type  | llm_model | input_tokens | output_tokens | total_tokens |",
        "+------+------------+-----------+--------------+---------------+--------------+",
        "| llm  |            |           |              |               |              |",
        "| llm  | CHAT_MODEL | gpt-x     | 3            | 4             | 7            |",
        "+------+------------+-----------+--------------+---------------+--------------+",
    ];
    assert_eq!(shown.lines().collect::<Vec<_>>(), expected, "{shown}");
    drop(table);

    // a table whose columns are not tracelake's is refused, naming them
    let err = LakeTable::open("main.other.logs".into(), url, &none, schema_of(LOGS).unwrap(), "time")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("main.other.logs") && err.contains("not made by tracelake"), "{err}");
}

/// Compaction waits until a partition has gathered many small files, or until nothing more
/// is appended; an idle table is not committed to again; appends made while a pass merges
/// files are kept.
#[tokio::test]
async fn compaction_waits_for_many_files_or_quiet_and_leaves_an_idle_table_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SPANS);
    let url = Url::from_directory_path(&path).unwrap();
    let table = Arc::new(
        LakeTable::open(
            "main.upkeep.spans".into(),
            url,
            &HashMap::new(),
            spans_schema(),
            stats_columns(SPANS),
        )
        .await
        .unwrap(),
    );
    let append = |n: u128| {
        let table = table.clone();
        async move {
            let s = span(TraceId::new(n).unwrap(), 1, None, "root", 1000, 1010);
            table.append(vec![spans_to_batch([(&s, &SpanOrigin::default())]).unwrap()]).await.unwrap();
        }
    };
    let data_files =
        || files(&path, ".parquet").into_iter().filter(|p| p.to_string_lossy().contains("date=")).count();
    let log_entries = || files(&path.join("_delta_log"), ".json").len();
    let rows = |table: Arc<LakeTable>| async move {
        let ctx = SessionContext::new();
        ctx.register_table("spans", table.provider(&ctx).await.unwrap()).unwrap();
        let out = ctx.sql("SELECT count(*) FROM spans").await.unwrap().collect().await.unwrap();
        out[0].column(0).as_any().downcast_ref::<deltalake::arrow::array::Int64Array>().unwrap().value(0)
    };
    let maintain = || table.maintain(64 << 20, Duration::ZERO);

    for n in 1..=3 {
        append(n).await;
    }
    // appended to since the last look, and 3 small files are too few to merge yet
    assert_eq!(maintain().await.unwrap(), Default::default());
    assert_eq!(data_files(), 3);
    // nothing appended since: the table is quiet, so its files are merged and vacuumed
    let done = maintain().await.unwrap();
    assert_eq!((done.files_compacted, done.files_written, done.files_vacuumed), (3, 1, 3), "{done:?}");
    assert_eq!(data_files(), 1);
    // idle now: a pass neither merges nor commits
    let commits = log_entries();
    assert_eq!(maintain().await.unwrap(), Default::default());
    assert_eq!(log_entries(), commits, "an idle table gained commits");

    // under steady appends, a pass merges once the partition has 50 small files, and appends
    // made while it runs commit beside it
    for n in 4..=53 {
        append(n).await;
    }
    let (done, ()) = tokio::join!(maintain(), async {
        for n in 54..=63 {
            append(n).await;
        }
    });
    let done = done.unwrap();
    assert!(done.files_compacted >= 50 && done.files_written == 1, "{done:?}");
    assert_eq!(rows(table.clone()).await, 63);
}
