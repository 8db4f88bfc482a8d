//! One Delta table of the lake: created on first open, appended to, deleted from, compacted,
//! vacuumed, and read through DataFusion.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::catalog::TableProvider;
use deltalake::datafusion::prelude::{Expr, SessionContext};
use deltalake::kernel::StructField;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::protocol::SaveMode;
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::writer::{DeltaWriter as _, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use tokio::sync::RwLock;
use tracelake_store::{StoreError, StoreResult};
use url::Url;

use crate::columns::PARTITION;

/// The table property naming the columns whose statistics each file's log entry carries.
const STATS_COLUMNS_PROPERTY: &str = "delta.dataSkippingStatsColumns";

/// The table property saying how many commits apart checkpoints are written.
const CHECKPOINT_INTERVAL_PROPERTY: &str = "delta.checkpointInterval";

/// Commits between checkpoints. After each checkpoint the table's state is loaded again from
/// it: a state kept up to date commit by commit replays every commit it has seen (one batch of
/// log entries each) on every later commit, so a commit would cost more the more came before.
const CHECKPOINT_INTERVAL: u64 = 20;

/// How old the snapshot a read sees may be: commits of other processes (the SDK writing
/// straight to the lake, another server) show up in reads within this.
pub(crate) const FRESHNESS: Duration = Duration::from_secs(1);

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
    storage_options: HashMap<String, String>,
    /// When the snapshot was last brought up to date with the log.
    checked: parking_lot::Mutex<Instant>,
    /// Held by what rewrites files (replacing, deleting, maintenance); appends go on beside.
    rewrites: tokio::sync::Mutex<()>,
    /// The version the last maintenance pass left the table at.
    maintained_at: parking_lot::Mutex<Option<u64>>,
    /// The removed files the last vacuum deleted (as the log names them).
    vacuumed: parking_lot::Mutex<HashSet<String>>,
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

/// Commits between the table's checkpoints, as its properties say.
fn checkpoint_interval(table: &DeltaTable) -> Option<u64> {
    Some(table.snapshot().ok()?.table_config().checkpoint_interval().get())
}

/// Whether a checkpoint was written after version `before` (`None`: ever), up to the table's
/// current version.
fn passed_checkpoint(table: &DeltaTable, before: Option<u64>) -> bool {
    match (table.version(), checkpoint_interval(table)) {
        (Some(now), Some(interval)) => before.map_or(0, |b| (b + 1) / interval) < (now + 1) / interval,
        _ => false,
    }
}

impl LakeTable {
    /// Opens the table at `url`, creating it empty with `schema` (partitioned by `date`) when
    /// nothing is there. A table whose log or files are damaged is an error naming it.
    pub async fn open(
        name: String,
        url: Url,
        storage_options: &HashMap<String, String>,
        schema: SchemaRef,
        stats_columns: &str,
    ) -> StoreResult<Self> {
        if let Ok(dir) = url.to_file_path() {
            std::fs::create_dir_all(&dir).map_err(|e| delta_error(&name, "create its directory", e))?;
        }
        let properties = [
            (STATS_COLUMNS_PROPERTY.to_owned(), stats_columns.to_owned()),
            (CHECKPOINT_INTERVAL_PROPERTY.to_owned(), CHECKPOINT_INTERVAL.to_string()),
        ];
        let table = DeltaTable::try_from_url_with_storage_options(url, storage_options.clone())
            .await
            .map_err(|e| delta_error(&name, "open", e))?;
        let table = if table.version().is_some() {
            let found: Vec<String> = table
                .snapshot()
                .map_err(|e| delta_error(&name, "read the snapshot", e))?
                .schema()
                .fields()
                .map(|f| f.name().clone())
                .collect();
            let ours = schema.fields();
            let same_start =
                found.len() <= ours.len() && found.iter().zip(ours.iter()).all(|(a, b)| a == b.name());
            if !same_start {
                return Err(StoreError::Internal(format!(
                    "lake table {name} has columns ({}) where tracelake writes ({}): it was not made by tracelake, or by a later version",
                    found.join(", "),
                    ours.iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
            let mut table = table;
            if found.len() < ours.len() {
                // made by an earlier version: gains the columns added since (null in its rows)
                let added = ours[found.len()..]
                    .iter()
                    .map(|f| f.as_ref().try_into_kernel())
                    .collect::<Result<Vec<StructField>, _>>()
                    .map_err(|e| delta_error(&name, "convert its new columns", e))?;
                table = table
                    .add_columns()
                    .with_fields(added)
                    .await
                    .map_err(|e| delta_error(&name, "add columns", e))?;
            }
            if checkpoint_interval(&table) != Some(CHECKPOINT_INTERVAL) {
                // made by an earlier version: the properties it was created without
                table = table
                    .set_tbl_properties()
                    .with_properties(properties.into_iter().collect())
                    .await
                    .map_err(|e| delta_error(&name, "set its properties", e))?;
            }
            table
        } else {
            table
                .write(vec![RecordBatch::new_empty(schema.clone())])
                .with_save_mode(SaveMode::Append)
                .with_partition_columns([PARTITION])
                .with_table_name(name.clone())
                .with_configuration(properties.map(|(k, v)| (k, Some(v))))
                .await
                .map_err(|e| delta_error(&name, "create", e))?
        };
        Ok(Self {
            name,
            schema,
            table: RwLock::new(table),
            storage_options: storage_options.clone(),
            checked: parking_lot::Mutex::new(Instant::now()),
            rewrites: tokio::sync::Mutex::new(()),
            maintained_at: parking_lot::Mutex::new(None),
            vacuumed: parking_lot::Mutex::new(HashSet::new()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The table after a commit of this process: as the commit left it, or loaded afresh from
    /// the checkpoint the commit wrote. A commit brings the snapshot up to date with every
    /// commit before it, other processes' included.
    async fn settled(&self, updated: DeltaTable) -> DeltaTable {
        *self.checked.lock() = Instant::now();
        let before = updated.version().and_then(|v| v.checked_sub(1));
        if passed_checkpoint(&updated, before) { self.reloaded(updated).await } else { updated }
    }

    /// The table loaded afresh (from its last checkpoint), or `updated` if that fails or is
    /// older.
    async fn reloaded(&self, updated: DeltaTable) -> DeltaTable {
        match DeltaTable::try_from_url_with_storage_options(
            updated.table_url().clone(),
            self.storage_options.clone(),
        )
        .await
        {
            Ok(fresh) if fresh.version() >= updated.version() => fresh,
            Ok(_) => updated,
            Err(e) => {
                tracing::warn!(target: "tracelake::lake", "{}: cannot load from its checkpoint: {e}", self.name);
                updated
            }
        }
    }

    /// Appends rows in one commit; returns once the commit is durable.
    pub async fn append(&self, batches: Vec<RecordBatch>) -> StoreResult<()> {
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(());
        }
        let mut guard = self.table.write().await;
        let mut table = guard.clone();
        let error = |e| delta_error(&self.name, "append", e);
        // Delta's writer for appends: encodes the rows and commits their files, without
        // planning a DataFusion query for each commit as a general write does.
        let mut writer = RecordBatchWriter::for_table(&table).map_err(error)?;
        for batch in batches {
            writer.write(batch).await.map_err(error)?;
        }
        writer.flush_and_commit(&mut table).await.map_err(error)?;
        *guard = self.settled(table).await;
        Ok(())
    }

    /// Replaces the rows matching `predicate` by `batches` (which all match it) in one commit.
    pub async fn replace(&self, batches: Vec<RecordBatch>, predicate: Expr) -> StoreResult<()> {
        let _rewrites = self.rewrites.lock().await;
        let mut guard = self.table.write().await;
        let table = guard.clone();
        let updated = table
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .with_replace_where(predicate)
            .with_partition_columns([PARTITION])
            .await
            .map_err(|e| delta_error(&self.name, "replace rows", e))?;
        *guard = self.settled(updated).await;
        Ok(())
    }

    /// Deletes the rows matching `predicate` in one commit; returns how many files changed.
    pub async fn delete(&self, predicate: Expr) -> StoreResult<()> {
        let _rewrites = self.rewrites.lock().await;
        let mut guard = self.table.write().await;
        let table = guard.clone();
        let (updated, _metrics) = table
            .delete()
            .with_predicate(predicate)
            .await
            .map_err(|e| delta_error(&self.name, "delete", e))?;
        *guard = self.settled(updated).await;
        Ok(())
    }

    /// Picks up the commits other processes made, when the last look is older than
    /// [`FRESHNESS`]. A log that cannot be read now leaves the snapshot as it was (and says so).
    async fn fresh(&self) {
        if self.checked.lock().elapsed() < FRESHNESS {
            return;
        }
        let mut guard = self.table.write().await;
        if self.checked.lock().elapsed() < FRESHNESS {
            return; // brought up to date while this waited
        }
        let before = guard.version();
        if let Err(e) = guard.update_state().await {
            tracing::warn!(target: "tracelake::lake", "{}: cannot read new commits: {e}", self.name);
        }
        if passed_checkpoint(&guard, before) {
            // as after a commit: a snapshot that replayed many commits is loaded from the
            // checkpoint instead
            *guard = self.reloaded(guard.clone()).await;
        }
        *self.checked.lock() = Instant::now();
    }

    /// A DataFusion provider over the latest snapshot (at most [`FRESHNESS`] old), registered
    /// with `ctx`'s object stores.
    pub async fn provider(&self, ctx: &SessionContext) -> StoreResult<Arc<dyn TableProvider>> {
        self.fresh().await;
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
    ///
    /// Appends go on meanwhile: compaction commits without the table's lock (Delta's
    /// conflict check lets an OPTIMIZE commit beside appends), and only replacements and
    /// deletes, which rewrite files compaction may be merging, wait for it. A partition is
    /// compacted once it has [`COMPACT_MIN_FILES`] small files, or two when nothing was
    /// appended since the last pass, so a table under steady load is not rewritten for each
    /// new file. Vacuum runs only when there are removed files it has not deleted yet; it
    /// commits its start and end, so an idle table is left alone.
    pub async fn maintain(&self, target_file_size: u64, retention: Duration) -> StoreResult<Maintenance> {
        let _rewrites = self.rewrites.lock().await;
        let mut done = Maintenance::default();
        let table = self.table.read().await.clone();
        let idle = *self.maintained_at.lock() == table.version();
        let target = NonZeroU64::new(target_file_size.max(1)).expect("non-zero");
        if worth_compacting(&table, target.get(), idle) {
            let (updated, metrics) = table
                .optimize()
                .with_target_size(target)
                .await
                .map_err(|e| delta_error(&self.name, "compact", e))?;
            done.files_compacted = metrics.num_files_removed;
            done.files_written = metrics.num_files_added;
            self.adopt(updated).await;
        }

        let table = self.table.read().await.clone();
        let retention_hours = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(7));
        let vacuum = || {
            table
                .clone()
                .vacuum()
                .with_retention_period(retention_hours)
                .with_enforce_retention_duration(false)
        };
        let due = match vacuum().with_dry_run(true).await {
            Ok((_, plan)) => plan.files_deleted,
            Err(DeltaTableError::Generic(e)) if e.contains("No files") => Vec::new(),
            Err(e) => return Err(delta_error(&self.name, "plan a vacuum", e)),
        };
        let new = {
            let vacuumed = self.vacuumed.lock();
            due.iter().filter(|f| !vacuumed.contains(*f)).count()
        };
        if new > 0 {
            match vacuum().await {
                Ok((updated, _)) => {
                    done.files_vacuumed = new as u64;
                    // what the log still names as removed; older entries have left it
                    *self.vacuumed.lock() = due.into_iter().collect();
                    self.adopt(updated).await;
                }
                Err(DeltaTableError::Generic(e)) if e.contains("No files") => {}
                Err(e) => return Err(delta_error(&self.name, "vacuum", e)),
            }
        }
        *self.maintained_at.lock() = self.table.read().await.version();
        Ok(done)
    }

    /// Takes the table as a maintenance commit left it, unless a commit made since (whose
    /// snapshot includes the maintenance commit) is newer.
    async fn adopt(&self, updated: DeltaTable) {
        let mut guard = self.table.write().await;
        if updated.version() > guard.version() {
            *guard = self.settled(updated).await;
        }
    }
}

/// Small files a partition gathers before compaction merges them (Delta's auto compaction
/// waits for 50 as well).
const COMPACT_MIN_FILES: usize = 50;

/// Whether some partition has enough files smaller than `target` bytes to merge: at least
/// [`COMPACT_MIN_FILES`], or two when the table is `idle`.
fn worth_compacting(table: &DeltaTable, target: u64, idle: bool) -> bool {
    let Ok(snapshot) = table.snapshot() else { return false };
    let mut small: HashMap<Vec<(String, Option<String>)>, usize> = HashMap::new();
    for file in snapshot.log_data().iter() {
        if u64::try_from(file.size()).unwrap_or(0) < target {
            let mut partition: Vec<_> = file.partition_values_map().into_iter().collect();
            partition.sort();
            *small.entry(partition).or_default() += 1;
        }
    }
    let needed = if idle { 2 } else { COMPACT_MIN_FILES };
    small.values().any(|&n| n >= needed)
}
