//! Traces written by the SDK straight to a lake directory, with no server, come back whole
//! through the lake store and SQL, each in the schema its destination named.

use std::sync::Arc;

use tracelake::{Destination, SpanType, TraceState};
use tracelake_store::{SqlFormat, TraceStore};
use tracelake_store_lake::{Lake, LakeConfig, LakeStore};
use tracelake_store_sql::SqliteStore;

const SPANS: &str = "mlflow_experiment_trace_otel_spans";

/// One agent trace: a root with a tag, an LLM call with token usage, a failing tool.
fn agent(question: &str) -> String {
    let root = tracelake::span("agent").span_type(SpanType::Agent).start();
    root.set_inputs(&serde_json::json!({ "question": question }));
    tracelake::current_trace().expect("a trace").set_tag("env", "test");
    {
        let llm = tracelake::span("chat").span_type(SpanType::ChatModel).start();
        llm.set_attribute("mlflow.llm.model", "gpt-x");
        llm.set_attribute(
            "mlflow.chat.tokenUsage",
            &serde_json::json!({"input_tokens": 40, "output_tokens": 8}),
        );
    }
    {
        let tool = tracelake::span("tool").span_type(SpanType::Tool).start();
        tool.record_error(&std::io::Error::other("no flights"));
    }
    root.set_outputs("done");
    root.trace_id().expect("a trace id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_go_straight_to_their_lake_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let root = root.to_str().unwrap().to_owned();
    tracelake_lake::install();

    tracelake::set_destination(Destination::lake_schema("main", "direct").in_lake(root.clone()));
    let first = agent("a trip to Lisbon");
    let second = agent("a trip to Porto");
    // a thread of its own writes to another schema of the same lake
    let other_root = root.clone();
    let other = std::thread::spawn(move || {
        let _dest = Destination::lake_schema("main", "other").in_lake(other_root).enter();
        agent("a trip to Faro")
    })
    .join()
    .unwrap();
    tokio::task::spawn_blocking(tracelake::flush).await.unwrap().unwrap();
    let stats = tracelake::export_stats();
    assert_eq!((stats.dropped_traces, stats.exported_traces), (0, 3), "{stats:?}");
    assert!(
        first.starts_with("trace:/main.direct/") && other.starts_with("trace:/main.other/"),
        "{first} {other}"
    );

    let lake = Arc::new(Lake::open(LakeConfig::from_root(&root).unwrap()).await.unwrap());
    let control = SqliteStore::open(dir.path().join("tracking.db")).await.unwrap();
    let store = LakeStore::new(Arc::new(control), lake.clone());
    let traces = store.get_traces(&[first.clone(), second.clone(), other.clone()]).await.unwrap();
    assert_eq!(traces.len(), 3);
    for trace in &traces {
        let names: Vec<&str> = trace.spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(names, ["agent", "chat", "tool"], "{}", trace.info.trace_id);
        let root_id = trace.spans[0].span_id;
        assert!(trace.spans[1..].iter().all(|s| s.parent_id == Some(root_id)));
        assert_eq!(trace.info.state, TraceState::Ok);
        assert_eq!(trace.info.tags.get("env").map(String::as_str), Some("test"));
        assert!(
            trace.info.request_preview.as_deref().unwrap_or_default().contains("a trip to"),
            "{:?}",
            trace.info
        );
        assert_eq!(trace.spans[2].status.code, tracelake::StatusCode::Error);
    }

    let shown = text(
        &lake,
        &format!(
            "SELECT trace_id, llm_model, input_tokens, total_tokens, service_name, instrumentation_scope['name'] AS scope \
             FROM main.direct.{SPANS} WHERE llm_model IS NOT NULL ORDER BY trace_id"
        ),
    )
    .await;
    assert_eq!(shown.matches("| gpt-x ").count(), 2, "{shown}");
    assert!(shown.contains("| 40 ") && shown.contains("| 48 ") && shown.contains("| tracelake |"), "{shown}");
    let count = text(&lake, &format!("SELECT count(*) AS n FROM main.other.{SPANS}")).await;
    assert!(count.contains("| 3 "), "{count}");
}

/// A query's answer as a text table.
async fn text(lake: &Lake, sql: &str) -> String {
    let (schema, batches) = lake.query(sql).await.unwrap();
    String::from_utf8(tracelake_store_lake::encode(&schema, &batches, SqlFormat::Table).unwrap()).unwrap()
}
