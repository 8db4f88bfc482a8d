//! The lake's upkeep: every append is a commit, checkpoints follow the commits, and a
//! maintenance pass merges the small files and vacuums the replaced ones, losing nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracelake_model::TraceId;
use tracelake_store::conformance::span;
use tracelake_store::{TraceStore, WriteBatch};
use tracelake_store_lake::{Lake, LakeConfig, LakeStore};
use tracelake_store_sql::SqliteStore;

const SPANS: &str = "mlflow_experiment_trace_otel_spans";

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
