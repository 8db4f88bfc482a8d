//! One Delta table of the lake: created on first open, appended to, deleted from, compacted,
//! vacuumed, and read through DataFusion.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::catalog::TableProvider;
use deltalake::datafusion::prelude::{Expr, SessionContext};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use tokio::sync::RwLock;
use tracelake_store::{StoreError, StoreResult};
use url::Url;

use crate::columns::PARTITION;

/// What a maintenance pass did to a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintenance {
    pub files_compacted: u64,
    pub files_written: u64,
    pub files_vacuumed: u64,
}

/// A Delta table with the writes of this process serialised and its latest snapshot at hand.
pub struct LakeTable {
    /// `catalog.schema.table`, for messages.
    name: String,
    schema: SchemaRef,
    table: RwLock<DeltaTable>,
}

impl std::fmt::Debug for LakeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeTable").field("name", &self.name).finish_non_exhaustive()
    }
}

/// A Delta error as a store error naming the table.
pub(crate) fn delta_error(table: &str, action: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("lake table {table}: cannot {action}: {e}"))
}

impl LakeTable {
    /// Opens the table at `url`, creating it empty with `schema` (partitioned by `date`) when
    /// nothing is there. A table whose log or files are damaged is an error naming it.
    pub async fn open(
        name: String,
        url: Url,
        storage_options: &HashMap<String, String>,
        schema: SchemaRef,
    ) -> StoreResult<Self> {
        if let Ok(dir) = url.to_file_path() {
            std::fs::create_dir_all(&dir).map_err(|e| delta_error(&name, "create its directory", e))?;
        }
        let table = DeltaTable::try_from_url_with_storage_options(url, storage_options.clone())
            .await
            .map_err(|e| delta_error(&name, "open", e))?;
        let table = if table.version().is_some() {
            let found = table
                .snapshot()
                .map_err(|e| delta_error(&name, "read the snapshot", e))?
                .schema()
                .fields()
                .count();
            if found != schema.fields().len() {
                return Err(StoreError::Internal(format!(
                    "lake table {name} has {} columns where tracelake writes {}: it was not made by tracelake, or by another version",
                    found,
                    schema.fields().len()
                )));
            }
            table
        } else {
            table
                .write(vec![RecordBatch::new_empty(schema.clone())])
                .with_save_mode(SaveMode::Append)
                .with_partition_columns([PARTITION])
                .with_table_name(name.clone())
                .await
                .map_err(|e| delta_error(&name, "create", e))?
        };
        Ok(Self { name, schema, table: RwLock::new(table) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Appends rows in one commit; returns once the commit is durable.
    pub async fn append(&self, batches: Vec<RecordBatch>) -> StoreResult<()> {
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(());
        }
        let mut guard = self.table.write().await;
        let table = guard.clone();
        let updated = table
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_partition_columns([PARTITION])
            .await
            .map_err(|e| delta_error(&self.name, "append", e))?;
        *guard = updated;
        Ok(())
    }

    /// Replaces the rows matching `predicate` by `batches` (which all match it) in one commit.
    pub async fn replace(&self, batches: Vec<RecordBatch>, predicate: Expr) -> StoreResult<()> {
        let mut guard = self.table.write().await;
        let table = guard.clone();
        let updated = table
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .with_replace_where(predicate)
            .with_partition_columns([PARTITION])
            .await
            .map_err(|e| delta_error(&self.name, "replace rows", e))?;
        *guard = updated;
        Ok(())
    }

    /// Deletes the rows matching `predicate` in one commit; returns how many files changed.
    pub async fn delete(&self, predicate: Expr) -> StoreResult<()> {
        let mut guard = self.table.write().await;
        let table = guard.clone();
        let (updated, _metrics) = table
            .delete()
            .with_predicate(predicate)
            .await
            .map_err(|e| delta_error(&self.name, "delete", e))?;
        *guard = updated;
        Ok(())
    }

    /// Picks up commits other processes made since the last look.
    pub async fn refresh(&self) -> StoreResult<()> {
        let mut guard = self.table.write().await;
        guard.update_state().await.map_err(|e| delta_error(&self.name, "refresh", e))
    }

    /// A DataFusion provider over the latest snapshot, registered with `ctx`'s object stores.
    pub async fn provider(&self, ctx: &SessionContext) -> StoreResult<Arc<dyn TableProvider>> {
        let guard = self.table.read().await;
        guard
            .update_datafusion_session(&ctx.state())
            .map_err(|e| delta_error(&self.name, "register its storage", e))?;
        guard.table_provider().await.map_err(|e| delta_error(&self.name, "scan", e))
    }

    /// The table's version (commits so far, minus one).
    pub async fn version(&self) -> Option<u64> {
        self.table.read().await.version()
    }

    /// Merges small files into larger ones, then removes files no version younger than
    /// `retention` refers to. Checkpoints are written by the commits themselves (every
    /// `delta.checkpointInterval` commits).
    pub async fn maintain(&self, target_file_size: u64, retention: Duration) -> StoreResult<Maintenance> {
        let mut guard = self.table.write().await;
        let mut done = Maintenance::default();
        let table = guard.clone();
        let target = NonZeroU64::new(target_file_size.max(1)).expect("non-zero");
        match table.optimize().with_target_size(target).await {
            Ok((updated, metrics)) => {
                done.files_compacted = metrics.num_files_removed;
                done.files_written = metrics.num_files_added;
                *guard = updated;
            }
            Err(e) => return Err(delta_error(&self.name, "compact", e)),
        }
        let table = guard.clone();
        let retention_hours = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(7));
        match table
            .vacuum()
            .with_retention_period(retention_hours)
            .with_enforce_retention_duration(false)
            .await
        {
            Ok((updated, metrics)) => {
                done.files_vacuumed = metrics.files_deleted.len() as u64;
                *guard = updated;
            }
            Err(DeltaTableError::Generic(e)) if e.contains("No files") => {}
            Err(e) => return Err(delta_error(&self.name, "vacuum", e)),
        }
        Ok(done)
    }
}
