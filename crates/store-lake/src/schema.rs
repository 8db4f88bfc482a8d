//! One lake schema (`catalog.schema`): its four tables, how a write batch lands in them, and
//! how traces are read back.
//!
//! Spans are appended; a trace's info is appended as a new version each time it changes and
//! the highest `version` of a `trace_id` is its info. A write derives the new infos with the
//! same rules as every store ([`tracelake_store::derive::apply_batch`]) from the traces' spans,
//! which it keeps in memory for recently written traces and reads from the tables otherwise.
//! Spans go first, infos second: a crash between the two leaves spans whose info the next
//! write of the trace (or a read) derives again, and the batch was not acknowledged.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use deltalake::arrow::array::{Array, RecordBatch, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::prelude::{Expr, SessionContext, col, lit};
use parking_lot::RwLock;
use tokio::sync::Mutex;
use tracelake_model::{Span, SpanOrigin, Trace, TraceId, TraceInfo};
use tracelake_store::derive::{Stored, apply_batch, batch_traces, for_write, order_spans};
use tracelake_store::{Experiment, StoreError, StoreResult, WriteBatch};

use crate::columns::{
    INFO_TABLE, LOGS_TABLE, METRICS_TABLE, SPANS_TABLE, StoredInfo, infos_from_batches, infos_to_batch,
    schema_of, spans_from_batches, spans_to_batch, stats_columns,
};
use crate::table::{LakeTable, delta_error};

/// Spans kept in memory for recently written traces, so that spans arriving in several
/// batches do not read the tables back. They are kept as a write reads them
/// ([`for_write`]): roots whole, the others without their contents.
const RECENT_SPANS: usize = 262_144;

/// Trace ids per `IN (...)` list when reading traces back.
const IDS_PER_QUERY: usize = 1_000;

/// A trace as the write path keeps it between batches.
#[derive(Debug, Clone)]
struct Recent {
    info: StoredInfo,
    spans: Vec<Span>,
    /// The write that last touched it.
    touched: u64,
}

#[derive(Debug, Default)]
struct WriteState {
    recent: HashMap<u128, Recent>,
    recent_spans: usize,
    writes: u64,
}

/// A version number for info rows: microseconds since the epoch, strictly increasing.
fn next_version(last: &AtomicI64) -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    let mut current = last.load(Ordering::Relaxed);
    loop {
        let next = now.max(current + 1);
        match last.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => current = seen,
        }
    }
}

fn hex_ids(ids: &[u128]) -> Vec<Expr> {
    ids.iter().map(|id| lit(format!("{id:032x}"))).collect()
}

/// A `catalog.schema` of the lake.
pub struct LakeSchema {
    key: String,
    pub(crate) spans: LakeTable,
    pub(crate) logs: LakeTable,
    pub(crate) metrics: LakeTable,
    pub(crate) info: LakeTable,
    /// Every trace the schema holds; apart from the write state, so that looking a trace up
    /// never waits for a write in progress.
    known: RwLock<HashSet<u128>>,
    state: Mutex<WriteState>,
    version: AtomicI64,
}

impl std::fmt::Debug for LakeSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeSchema").field("key", &self.key).finish_non_exhaustive()
    }
}

impl LakeSchema {
    /// Opens (creating what is missing) the tables of `key` = `catalog.schema` under `url`
    /// (the schema's directory).
    pub(crate) async fn open(
        key: String,
        url: &url::Url,
        storage_options: &HashMap<String, String>,
    ) -> StoreResult<Self> {
        let open = |table: &'static str| {
            let url = url.join(&format!("{table}/")).expect("a table name is a path segment");
            let name = format!("{key}.{table}");
            LakeTable::open(
                name,
                url,
                storage_options,
                schema_of(table).expect("a lake table"),
                stats_columns(table),
            )
        };
        let schema = Self {
            spans: open(SPANS_TABLE).await?,
            logs: open(LOGS_TABLE).await?,
            metrics: open(METRICS_TABLE).await?,
            info: open(INFO_TABLE).await?,
            key,
            known: RwLock::new(HashSet::new()),
            state: Mutex::new(WriteState::default()),
            version: AtomicI64::new(0),
        };
        *schema.known.write() = schema.known_trace_ids().await?;
        Ok(schema)
    }

    /// `catalog.schema`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its tables, by their short names.
    pub fn tables(&self) -> [(&'static str, &LakeTable); 4] {
        [
            (SPANS_TABLE, &self.spans),
            (LOGS_TABLE, &self.logs),
            (METRICS_TABLE, &self.metrics),
            (INFO_TABLE, &self.info),
        ]
    }

    async fn scan(
        &self,
        table: &LakeTable,
        filter: Option<Expr>,
        columns: Option<&[&str]>,
    ) -> StoreResult<Vec<RecordBatch>> {
        let ctx = SessionContext::new();
        let provider = table.provider(&ctx).await?;
        let failed = |e| delta_error(table.name(), "read", e);
        let mut df = ctx.read_table(provider).map_err(failed)?;
        if let Some(filter) = filter {
            df = df.filter(filter).map_err(failed)?;
        }
        if let Some(columns) = columns {
            df = df.select_columns(columns).map_err(failed)?;
        }
        df.collect().await.map_err(failed)
    }

    async fn known_trace_ids(&self) -> StoreResult<HashSet<u128>> {
        let mut known = HashSet::new();
        for batch in self.scan(&self.info, None, Some(&["trace_id"])).await? {
            // Parquet strings may come back as string views
            let column = cast(batch.column(0), &DataType::Utf8)
                .map_err(|e| StoreError::Internal(format!("{}: trace_id: {e}", self.info.name())))?;
            let ids = column.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
                StoreError::Internal(format!("{}: trace_id is not a string column", self.info.name()))
            })?;
            for i in 0..ids.len() {
                if let Ok(id) = TraceId::from_hex(ids.value(i)) {
                    known.insert(id.to_u128());
                }
            }
        }
        Ok(known)
    }

    /// The latest info of each of `ids` the schema holds.
    pub(crate) async fn load_infos(&self, ids: &[u128]) -> StoreResult<HashMap<u128, StoredInfo>> {
        let mut out: HashMap<u128, StoredInfo> = HashMap::new();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let batches =
                self.scan(&self.info, Some(col("trace_id").in_list(hex_ids(chunk), false)), None).await?;
            for stored in infos_from_batches(&batches, &self.key)? {
                let id = TraceId::from_mlflow(&stored.info.trace_id)
                    .map_err(|e| StoreError::Internal(e.to_string()))?
                    .to_u128();
                keep_latest(&mut out, id, stored);
            }
        }
        Ok(out)
    }

    /// The traces among `ids` this schema holds, whole, in no particular order.
    pub(crate) async fn load_traces(&self, ids: &[u128]) -> StoreResult<Vec<Trace>> {
        let infos = self.load_infos(ids).await?;
        let mut spans = self.load_spans(ids).await?;
        Ok(infos
            .into_iter()
            .map(|(id, stored)| Trace { spans: spans.remove(&id).unwrap_or_default(), info: stored.info })
            .collect())
    }

    /// Every span of each of `ids`, deduplicated by span id (the last written wins).
    pub(crate) async fn load_spans(&self, ids: &[u128]) -> StoreResult<HashMap<u128, Vec<Span>>> {
        let mut out: HashMap<u128, Vec<Span>> = HashMap::new();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let batches =
                self.scan(&self.spans, Some(col("trace_id").in_list(hex_ids(chunk), false)), None).await?;
            for span in spans_from_batches(&batches)? {
                let spans = out.entry(span.trace_id.to_u128()).or_default();
                match spans.iter_mut().find(|s| s.span_id == span.span_id) {
                    Some(existing) => *existing = span,
                    None => spans.push(span),
                }
            }
        }
        for spans in out.values_mut() {
            order_spans(spans);
        }
        Ok(out)
    }

    /// The latest info of every trace in the schema.
    pub(crate) async fn all_infos(&self) -> StoreResult<Vec<StoredInfo>> {
        let batches = self.scan(&self.info, None, None).await?;
        let mut out: HashMap<u128, StoredInfo> = HashMap::new();
        for stored in infos_from_batches(&batches, &self.key)? {
            if let Ok(id) = TraceId::from_mlflow(&stored.info.trace_id) {
                keep_latest(&mut out, id.to_u128(), stored);
            }
        }
        Ok(out.into_values().collect())
    }

    /// The table named `name` (a short name such as `mlflow_experiment_trace_otel_logs`).
    pub fn table(&self, name: &str) -> Option<&LakeTable> {
        self.tables().into_iter().find(|(n, _)| *n == name).map(|(_, t)| t)
    }

    /// Whether the schema holds trace `id`, as far as this process has seen.
    pub(crate) fn holds(&self, id: u128) -> bool {
        self.known.read().contains(&id)
    }

    /// Whether the schema holds trace `id`, looking in the tables when this process has not
    /// seen it (another process may have written it).
    pub(crate) async fn find(&self, id: u128) -> StoreResult<bool> {
        if self.holds(id) {
            return Ok(true);
        }
        let found = !self.load_infos(&[id]).await?.is_empty();
        if found {
            self.known.write().insert(id);
        }
        Ok(found)
    }

    /// Writes a batch whose every item belongs to this schema; `origins` gives each span's
    /// resource and scope (by index into `batch.spans`, default when absent). Returns the
    /// infos of the traces it touched.
    pub(crate) async fn write(
        &self,
        batch: WriteBatch,
        origins: &[Arc<SpanOrigin>],
        experiments: &BTreeMap<String, Experiment>,
    ) -> StoreResult<Vec<TraceInfo>> {
        let mut state = self.state.lock().await;
        state.writes += 1;
        let write_number = state.writes;
        let touched = batch_traces(&batch);
        let mut ids = Vec::with_capacity(touched.len());
        for (id, _) in &touched {
            let trace = TraceId::from_mlflow(id).map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
            ids.push(trace.to_u128());
        }
        // what the store holds of the touched traces: from memory, or read back
        let missing: Vec<u128> = {
            let known = self.known.read();
            ids.iter().copied().filter(|id| known.contains(id) && !state.recent.contains_key(id)).collect()
        };
        if !missing.is_empty() {
            let infos = self.load_infos(&missing).await?;
            let mut spans = self.load_spans(&missing).await?;
            for (id, info) in infos {
                let spans: Vec<Span> =
                    spans.remove(&id).unwrap_or_default().into_iter().map(for_write).collect();
                state.recent_spans += spans.len();
                state.recent.insert(id, Recent { info, spans, touched: write_number });
            }
        }
        // spans sent again replace their stored rows
        let replaced: HashSet<(u128, u64)> = batch
            .spans
            .iter()
            .map(|(_, s)| (s.trace_id.to_u128(), s.span_id.to_u64()))
            .filter(|(t, s)| {
                state.recent.get(t).is_some_and(|r| r.spans.iter().any(|x| x.span_id.to_u64() == *s))
            })
            .collect();
        // The touched traces leave the cache for the write and come back with its result (if
        // the write fails, their next write reads them from the tables again).
        let mut stored = HashMap::new();
        let mut stored_spans = HashMap::new();
        let mut linked: HashMap<u128, Vec<String>> = HashMap::new();
        for ((name, _), id) in touched.iter().zip(&ids) {
            if let Some(r) = state.recent.remove(id) {
                state.recent_spans -= r.spans.len();
                let Recent { info: StoredInfo { info, linked_runs, from_spans_only, .. }, spans, .. } = r;
                stored.insert(name.clone(), Stored { key: *id, info, from_spans_only });
                stored_spans.insert(*id, spans);
                linked.insert(*id, linked_runs);
            }
        }
        let origin_of: HashMap<(u128, u64), &SpanOrigin> = batch
            .spans
            .iter()
            .zip(origins)
            .map(|((_, s), o)| ((s.trace_id.to_u128(), s.span_id.to_u64()), o.as_ref()))
            .collect();
        let changed = apply_batch(batch, &touched, stored, stored_spans, experiments)?;

        let default_origin = SpanOrigin::default();
        let (mut fresh, mut again) = (Vec::new(), Vec::new());
        for span in changed.iter().flat_map(|c| c.written_spans()) {
            let key = (span.trace_id.to_u128(), span.span_id.to_u64());
            let origin = origin_of.get(&key).copied().unwrap_or(&default_origin);
            if replaced.contains(&key) { again.push((span, origin)) } else { fresh.push((span, origin)) }
        }
        let span_rows = spans_to_batch(fresh)?;
        let replacement_rows = spans_to_batch(again)?;
        let infos: Vec<StoredInfo> = changed
            .iter()
            .zip(&ids)
            .map(|(c, id)| StoredInfo {
                info: c.info.clone(),
                linked_runs: linked.remove(id).unwrap_or_default(),
                from_spans_only: c.from_spans_only,
                version: next_version(&self.version),
            })
            .collect();
        let info_rows = infos_to_batch(&infos)?;
        if !replaced.is_empty() {
            let record_ids: Vec<Expr> =
                replaced.iter().map(|(t, s)| lit(format!("{t:032x}-{s:016x}"))).collect();
            self.spans.replace(vec![replacement_rows], col("record_id").in_list(record_ids, false)).await?;
        }
        self.spans.append(vec![span_rows]).await?;
        self.info.append(vec![info_rows]).await?;

        let out = infos.iter().map(|i| i.info.clone()).collect();
        self.known.write().extend(&ids);
        for ((c, info), id) in changed.into_iter().zip(infos).zip(ids) {
            state.recent_spans += c.spans.len();
            let spans = c.spans.into_iter().map(for_write).collect();
            state.recent.insert(id, Recent { info, spans, touched: write_number });
        }
        if state.recent_spans > RECENT_SPANS {
            // keep only what this write touched
            state.recent.retain(|_, r| r.touched == write_number);
            state.recent_spans = state.recent.values().map(|r| r.spans.len()).sum();
        }
        Ok(out)
    }

    /// Replaces the info of trace `id` by what `change` makes of it, as a new version.
    pub(crate) async fn update_info(
        &self,
        id: u128,
        change: impl FnOnce(&mut StoredInfo) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let mut state = self.state.lock().await;
        let mut info = match state.recent.get(&id) {
            Some(r) => r.info.clone(),
            None => self
                .load_infos(&[id])
                .await?
                .remove(&id)
                .ok_or_else(|| StoreError::NotFound(format!("Trace with ID {id:032x} not found.")))?,
        };
        change(&mut info)?;
        info.version = next_version(&self.version);
        self.info.append(vec![infos_to_batch([&info])?]).await?;
        if let Some(r) = state.recent.get_mut(&id) {
            r.info = info;
        }
        Ok(())
    }

    /// Deletes traces, their spans and every version of their infos.
    pub(crate) async fn delete(&self, ids: &[u128]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock().await;
        for chunk in ids.chunks(IDS_PER_QUERY) {
            self.spans.delete(col("trace_id").in_list(hex_ids(chunk), false)).await?;
            self.info.delete(col("trace_id").in_list(hex_ids(chunk), false)).await?;
        }
        let mut known = self.known.write();
        for id in ids {
            known.remove(id);
            if let Some(r) = state.recent.remove(id) {
                state.recent_spans -= r.spans.len();
            }
        }
        Ok(())
    }
}

fn keep_latest(out: &mut HashMap<u128, StoredInfo>, id: u128, stored: StoredInfo) {
    match out.entry(id) {
        Entry::Occupied(mut e) => {
            if stored.version > e.get().version {
                e.insert(stored);
            }
        }
        Entry::Vacant(e) => {
            e.insert(stored);
        }
    }
}
