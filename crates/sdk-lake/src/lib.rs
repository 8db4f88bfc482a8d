//! The tracelake SDK's direct lake destination.
//!
//! With this crate installed, a lake-schema destination that has a lake root
//! (`Destination::lake_schema("main", "agents").in_lake("s3://bucket/lake")`, or
//! `MLFLOW_TRACING_DESTINATION=main.agents` with `TRACELAKE_LAKE_ROOT`) writes each finished
//! trace straight to the schema's Delta tables, as `tracelake server` would have: no server
//! in between. The SDK itself does not carry the lake's storage engine; this crate does.
//!
//! ```no_run
//! tracelake_lake::install();
//! tracelake::set_destination(tracelake::Destination::lake_schema("main", "agents").in_lake("./lake"));
//! {
//!     let _span = tracelake::start_span("job");
//! }
//! tracelake::flush().unwrap();
//! ```
//!
//! Writes happen on the SDK's export worker thread, one commit per schema per export batch;
//! each returns once the commit is durable. Other processes writing the same tables commit
//! through the Delta log's own concurrency control.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;
use tracelake::export::{LakeWriter, set_lake_writer};
use tracelake_model::{SpanOrigin, Trace};
use tracelake_store::WriteBatch;
use tracelake_store_lake::{Lake, LakeConfig};

/// The scope spans written by the SDK carry, as over OTLP.
const SCOPE_NAME: &str = "tracelake";

/// Installs the direct lake writer in the SDK.
pub fn install() {
    set_lake_writer(Arc::new(DirectLakeWriter::new()));
}

/// Writes traces to lakes through the lake store, one lake per root, opened on first use.
pub struct DirectLakeWriter {
    runtime: tokio::runtime::Runtime,
    lakes: Mutex<HashMap<String, Arc<Lake>>>,
}

impl std::fmt::Debug for DirectLakeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectLakeWriter").field("lakes", &self.lakes.lock().len()).finish_non_exhaustive()
    }
}

impl Default for DirectLakeWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl DirectLakeWriter {
    /// # Panics
    /// When the operating system refuses a thread for its runtime.
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tracelake-lake")
            .enable_all()
            .build()
            .expect("cannot start the lake writer's runtime");
        DirectLakeWriter { runtime, lakes: Mutex::new(HashMap::new()) }
    }

    async fn lake(&self, root: &str) -> Result<Arc<Lake>, String> {
        if let Some(lake) = self.lakes.lock().get(root) {
            return Ok(lake.clone());
        }
        let config = LakeConfig::from_root(root).map_err(|e| e.to_string())?;
        let lake = Arc::new(Lake::open(config).await.map_err(|e| e.to_string())?);
        Ok(self.lakes.lock().entry(root.to_owned()).or_insert(lake).clone())
    }
}

impl LakeWriter for DirectLakeWriter {
    fn write(
        &self,
        root: &str,
        schema: &str,
        traces: &[Arc<Trace>],
        resource: &[(String, String)],
    ) -> Result<(), String> {
        let origin = Arc::new(SpanOrigin {
            resource: resource.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect(),
            scope_name: SCOPE_NAME.to_owned(),
            scope_version: env!("CARGO_PKG_VERSION").to_owned(),
        });
        let mut batch = WriteBatch::default();
        for trace in traces {
            batch.infos.push(trace.info.clone());
            batch.spans.extend(trace.spans.iter().map(|s| (schema.to_owned(), s.clone())));
        }
        batch.origins = vec![origin; batch.spans.len()];
        self.runtime.block_on(async {
            let lake = self.lake(root).await?;
            lake.write(schema, batch).await.map(drop).map_err(|e| e.to_string())
        })
    }
}
