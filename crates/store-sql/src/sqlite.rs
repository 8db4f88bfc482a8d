//! The embedded SQLite store.
//!
//! One writer connection applies each [`WriteBatch`] in a single transaction (WAL journal,
//! `synchronous=FULL`: a batch is on disk when `write` returns); a few reader connections
//! answer queries concurrently with it. Every call runs on tokio's blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Transaction, params, params_from_iter};
use tracelake_model::{Span, SpanId, Trace, TraceId, TraceInfo, keys, tag_keys};
use tracelake_store::eval::{decode_page_token, encode_page_token};
use tracelake_store::{
    AssessmentChange, Attribute, Clause, DeleteTraces, Experiment, LifecycleStage, Literal, NewRun, Op, Page,
    Prepared, Run, StoreError, StoreResult, Target, TraceQuery, TraceStore, ViewType, WriteBatch, validate,
};

use tracelake_store::derive::{Changed, Stored, apply_batch, batch_locations, batch_traces};

use crate::common::{
    InfoRow, OutlineRow, Reduced, RunRow, lifecycle_stage, now_ms, reduced_span, run_from_row, sort_spans,
    span_trace_id, stage,
};
use crate::query::{Dialect, Param, SearchPlan, compile_pattern, search_sql};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: [&str; 4] = [
    include_str!("../migrations/sqlite/0001_initial.sql"),
    include_str!("../migrations/sqlite/0002_runs.sql"),
    include_str!("../migrations/sqlite/0003_sequential_trace_keys.sql"),
    include_str!("../migrations/sqlite/0004_no_span_field_indexes.sql"),
];

/// How often the checkpointer copies committed pages from the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// WAL pages past which the writer checkpoints itself (the checkpointer has fallen behind).
const WRITER_CHECKPOINT_PAGES: i64 = 16_384;

/// How many connections serve reads.
const READERS: usize = 2;

type Conn = Arc<Mutex<Connection>>;

/// A [`TraceStore`] in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Conn,
    readers: Arc<Vec<Conn>>,
    next_reader: Arc<AtomicUsize>,
    _checkpointer: Arc<Checkpointer>,
}

/// A thread that checkpoints the WAL in the background, so the writer spends its time on
/// writes rather than on copying pages into the database file. Stops when the store is dropped.
#[derive(Debug)]
struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(conn: Connection) -> std::io::Result<Checkpointer> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new().name("tracelake-checkpoint".into()).spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                std::thread::park_timeout(CHECKPOINT_EVERY);
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(target: "tracelake", "WAL checkpoint failed: {e}");
                }
            }
        })?;
        Ok(Checkpointer { stop, thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("sqlite: {e}"))
}

fn sql_value(p: &Param) -> SqlValue {
    match p {
        Param::Int(i) => SqlValue::Integer(*i),
        Param::Real(f) => SqlValue::Real(*f),
        Param::Text(s) => SqlValue::Text(s.clone()),
    }
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 10000;
         PRAGMA case_sensitive_like = ON;",
    )?;
    // ILIKE and RLIKE with exactly the semantics of the reference evaluator.
    add_matcher(&conn, "tl_ilike", |p| compile_pattern(Op::ILike, p))?;
    add_matcher(&conn, "tl_rlike", |p| compile_pattern(Op::RLike, p))?;
    Ok(conn)
}

/// Registers `name(pattern, text)`: whether `text` matches `pattern` as `compile` reads it (NULL
/// on either side is no match). The compiled pattern is kept with the statement's argument, so a
/// search compiles it once rather than once per row, and the text is read where SQLite holds it.
fn add_matcher(
    conn: &Connection,
    name: &str,
    compile: fn(&str) -> Result<regex::Regex, String>,
) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function(name, 2, flags, move |ctx| {
        fn text_of(v: rusqlite::types::ValueRef<'_>) -> rusqlite::Result<Option<&str>> {
            v.as_str_or_null().map_err(|e| rusqlite::Error::UserFunctionError(e.into()))
        }
        let (Some(_), Some(text)) = (text_of(ctx.get_raw(0))?, text_of(ctx.get_raw(1))?) else {
            return Ok(false);
        };
        let re = ctx.get_or_create_aux(0, |pattern| compile(pattern.as_str().unwrap_or_default()))?;
        Ok(re.is_match(text))
    })
}

fn migrate(conn: &mut Connection) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let applied: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if applied > MIGRATIONS.len() as i64 {
        return Err(format!(
            "its schema is version {applied}, newer than this tracelake knows ({}): upgrade tracelake",
            MIGRATIONS.len()
        )
        .into());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if i == 0 {
            let now = now_ms();
            tx.execute(
                "INSERT INTO experiments VALUES (0, 'Default', 'mlflow-artifacts:/0', 'active', ?1, ?1)",
                params![now],
            )?;
        }
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub async fn open(path: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        type OpenError = Box<dyn std::error::Error + Send + Sync>;
        tokio::task::spawn_blocking(move || -> Result<SqliteStore, OpenError> {
            let mut writer = connect(&p)?;
            migrate(&mut writer)?;
            writer.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
            // The savepoints of a group commit keep their sub-journals (the pages a batch
            // changes, as they were before it) in memory rather than in temporary files.
            writer.pragma_update(None, "temp_store", "MEMORY")?;
            let readers = (0..READERS)
                .map(|_| connect(&p).map(|c| Arc::new(Mutex::new(c))))
                .collect::<Result<_, _>>()?;
            let checkpointer = Checkpointer::start(connect(&p)?)?;
            Ok(SqliteStore {
                path: p,
                writer: Arc::new(Mutex::new(writer)),
                readers: Arc::new(readers),
                next_reader: Arc::new(AtomicUsize::new(0)),
                _checkpointer: Arc::new(checkpointer),
            })
        })
        .await
        .map_err(internal)?
        .map_err(|e| StoreError::Internal(format!("cannot open SQLite store {}: {e}", path.display())))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn on<R: Send + 'static>(
        conn: Conn,
        f: impl FnOnce(&mut Connection) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        tokio::task::spawn_blocking(move || f(&mut conn.lock())).await.map_err(internal)?
    }

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        Self::on(self.readers[i].clone(), f).await
    }

    /// Runs `f` in one write transaction, committed only if it succeeds.
    async fn write_tx<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        Self::on(self.writer.clone(), move |conn| {
            let tx = conn.transaction().map_err(internal)?;
            let out = f(&tx)?;
            tx.commit().map_err(internal)?;
            Ok(out)
        })
        .await
    }
}

// ---- experiments -------------------------------------------------------------------------

fn load_experiment(conn: &Connection, id: i64) -> StoreResult<Option<Experiment>> {
    let row = conn
        .query_row(
            "SELECT name, artifact_location, lifecycle_stage, creation_time, last_update_time
             FROM experiments WHERE experiment_id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get(3)?,
                    r.get(4)?,
                ))
            },
        )
        .optional()
        .map_err(internal)?;
    let Some((name, artifact_location, stage, creation_time_ms, last_update_time_ms)) = row else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare_cached("SELECT key, value FROM experiment_tags WHERE experiment_id = ?1")
        .map_err(internal)?;
    let tags = stmt
        .query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(internal)?
        .collect::<Result<BTreeMap<String, String>, _>>()
        .map_err(internal)?;
    Ok(Some(Experiment {
        experiment_id: id.to_string(),
        name,
        artifact_location,
        lifecycle_stage: lifecycle_stage(&stage),
        tags,
        creation_time_ms,
        last_update_time_ms,
    }))
}

fn require_experiment(conn: &Connection, id: &str) -> StoreResult<Experiment> {
    load_experiment(conn, validate::experiment_id(id)?)?
        .ok_or_else(|| StoreError::NotFound(format!("No Experiment with id={id} exists")))
}

fn require_active(conn: &Connection, id: &str) -> StoreResult<Experiment> {
    let e = require_experiment(conn, id)?;
    if e.lifecycle_stage != LifecycleStage::Active {
        return Err(StoreError::InvalidState(format!(
            "experiment {id} is deleted: restore it before writing traces to it"
        )));
    }
    Ok(e)
}

fn set_lifecycle_stage(conn: &Connection, id: &str, stage: &str) -> StoreResult<()> {
    conn.execute(
        "UPDATE experiments SET lifecycle_stage = ?2, last_update_time = ?3 WHERE experiment_id = ?1",
        params![validate::experiment_id(id)?, stage, now_ms()],
    )
    .map_err(internal)?;
    Ok(())
}

fn name_taken(conn: &Connection, name: &str, except: Option<i64>) -> StoreResult<bool> {
    conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM experiments WHERE name = ?1 AND experiment_id IS NOT ?2)",
        params![name, except],
        |r| r.get(0),
    )
    .map_err(internal)
}

// ---- runs ----------------------------------------------------------------------------------

fn load_run(conn: &Connection, run_id: &str) -> StoreResult<Run> {
    let row: Option<RunRow> = conn
        .query_row(
            "SELECT experiment_id, run_name, user_id, status, start_time, end_time, lifecycle_stage, artifact_uri
             FROM runs WHERE run_id = ?1",
            params![run_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)),
        )
        .optional()
        .map_err(internal)?;
    if row.is_none() {
        return run_from_row(run_id, None, []);
    }
    let mut stmt =
        conn.prepare_cached("SELECT key, value FROM run_tags WHERE run_id = ?1").map_err(internal)?;
    let tags = stmt
        .query_map(params![run_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(internal)?
        .collect::<Result<Vec<(String, String)>, _>>()
        .map_err(internal)?;
    run_from_row(run_id, row, tags)
}

// ---- traces: reading and writing -----------------------------------------------------------

fn load_info(conn: &Connection, trace_id: &str) -> StoreResult<Option<Stored<i64>>> {
    let row = conn
        .prepare_cached(
            "SELECT trace_key, experiment_id, request_time_ms, execution_duration_ms, state, client_request_id,
                    request_preview, response_preview, from_spans_only, assessments
             FROM traces WHERE trace_id = ?1",
        )
        .map_err(internal)?
        .query_row(params![trace_id], |r| {
            Ok(InfoRow {
                key: r.get(0)?,
                experiment_id: r.get(1)?,
                request_time_ms: r.get(2)?,
                execution_duration_ms: r.get(3)?,
                state: r.get(4)?,
                client_request_id: r.get(5)?,
                request_preview: r.get(6)?,
                response_preview: r.get(7)?,
                from_spans_only: r.get(8)?,
                assessments: r.get(9)?,
            })
        })
        .optional()
        .map_err(internal)?;
    let Some(row) = row else { return Ok(None) };
    let map = |table: &str| -> StoreResult<BTreeMap<String, String>> {
        let mut stmt = conn
            .prepare_cached(&format!("SELECT key, value FROM {table} WHERE trace_key = ?1"))
            .map_err(internal)?;
        stmt.query_map(params![row.key], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(internal)?
            .collect::<Result<_, _>>()
            .map_err(internal)
    };
    let (tags, metadata) = (map("trace_tags")?, map("trace_metadata")?);
    Ok(Some(row.into_stored(trace_id, tags, metadata)))
}

/// Saves a trace a batch changed: its row, tags and metadata, and the spans the batch wrote
/// (their JSON from `serialized` when the batch was prepared).
fn save(tx: &Connection, changed: &Changed<i64>, serialized: Option<&SerializedSpans>) -> StoreResult<()> {
    let info = &changed.info;
    let key: i64 = tx
        .prepare_cached(
            "INSERT INTO traces (trace_id, experiment_id, request_time_ms, execution_duration_ms, state,
                                 client_request_id, request_preview, response_preview, from_spans_only, assessments)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (trace_id) DO UPDATE SET
                 request_time_ms = excluded.request_time_ms, execution_duration_ms = excluded.execution_duration_ms,
                 state = excluded.state, client_request_id = excluded.client_request_id,
                 request_preview = excluded.request_preview, response_preview = excluded.response_preview,
                 from_spans_only = excluded.from_spans_only, assessments = excluded.assessments
             RETURNING trace_key",
        )
        .map_err(internal)?
        .query_row(
            params![
                info.trace_id,
                validate::experiment_id(&changed.location)?,
                info.request_time_ms,
                info.execution_duration_ms,
                info.state.as_str(),
                info.client_request_id,
                info.request_preview,
                info.response_preview,
                changed.from_spans_only,
                serde_json::to_string(&info.assessments).map_err(internal)?,
            ],
            |r| r.get(0),
        )
        .map_err(internal)?;
    let previous = changed.previous.as_ref();
    for (table, map, before) in [
        ("trace_tags", &info.tags, previous.map(|p| &p.0)),
        ("trace_metadata", &info.trace_metadata, previous.map(|p| &p.1)),
    ] {
        // Only the entries that changed are written: rewriting all of them would churn the
        // (key, value) index on every update of a trace (StartTraceV3 after its spans, a tag).
        let empty = BTreeMap::new();
        let before = match (before, changed.key) {
            (Some(before), _) => before,
            (None, None) => &empty,
            (None, Some(_)) => {
                tx.prepare_cached(&format!("DELETE FROM {table} WHERE trace_key = ?1"))
                    .map_err(internal)?
                    .execute(params![key])
                    .map_err(internal)?;
                &empty
            }
        };
        let mut delete = tx
            .prepare_cached(&format!("DELETE FROM {table} WHERE trace_key = ?1 AND key = ?2"))
            .map_err(internal)?;
        for k in before.keys().filter(|k| !map.contains_key(*k)) {
            delete.execute(params![key, k]).map_err(internal)?;
        }
        let mut upsert = tx
            .prepare_cached(&format!(
                "INSERT INTO {table} (trace_key, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (trace_key, key) DO UPDATE SET value = excluded.value"
            ))
            .map_err(internal)?;
        for (k, v) in map.iter().filter(|(k, v)| before.get(*k) != Some(*v)) {
            upsert.execute(params![key, k, v]).map_err(internal)?;
        }
    }
    let mut upsert = tx
        .prepare_cached(
            "INSERT INTO spans (trace_key, span_id, parent_span_id, name, type, status, start_time_ns, end_time_ns,
                                token_usage, content)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (trace_key, span_id) DO UPDATE SET
                 parent_span_id = excluded.parent_span_id, name = excluded.name, type = excluded.type,
                 status = excluded.status, start_time_ns = excluded.start_time_ns, end_time_ns = excluded.end_time_ns,
                 token_usage = excluded.token_usage, content = excluded.content",
        )
        .map_err(internal)?;
    for span in changed.written_spans() {
        let fresh;
        let content = match serialized.and_then(|s| s.0.get(&(span.trace_id, span.span_id.to_u64()))) {
            Some(json) => json.as_str(),
            None => {
                fresh = span.to_dict_json();
                fresh.as_str()
            }
        };
        upsert
            .execute(params![
                key,
                span.span_id.to_u64() as i64,
                span.parent_id.map(|p| p.to_u64() as i64),
                span.name.as_ref(),
                span.span_type().as_str(),
                span.status.code.as_str(),
                span.start_time_unix_nano as i64,
                span.end_time_unix_nano.map(|e| e as i64),
                span.attributes.get_raw(keys::CHAT_TOKEN_USAGE),
                content,
            ])
            .map_err(internal)?;
    }
    Ok(())
}

/// The key of trace `id`; NotFound in MLflow's words when there is no such trace.
fn require_trace_key(conn: &Connection, id: &str) -> StoreResult<i64> {
    conn.prepare_cached("SELECT trace_key FROM traces WHERE trace_id = ?1")
        .and_then(|mut st| st.query_row(params![id], |r| r.get(0)).optional())
        .map_err(internal)?
        .ok_or_else(|| StoreError::NotFound(format!("Trace with ID {id} not found.")))
}

/// The spans of a trace, in the order `get_traces` gives them. Sorted here rather than by
/// SQLite, which would sort whole rows, contents included.
fn load_spans(conn: &Connection, trace_key: i64) -> StoreResult<Vec<Span>> {
    let mut stmt = conn.prepare_cached("SELECT content FROM spans WHERE trace_key = ?1").map_err(internal)?;
    let contents = stmt
        .query_map(params![trace_key], |r| r.get::<_, String>(0))
        .map_err(internal)?
        .collect::<Result<Vec<_>, _>>();
    let mut spans = contents
        .map_err(internal)?
        .iter()
        .map(|c| {
            Span::from_dict_json(c)
                .map_err(|e| internal(format!("a stored span of trace key {trace_key} is unreadable: {e}")))
        })
        .collect::<StoreResult<Vec<Span>>>()?;
    sort_spans(&mut spans);
    Ok(spans)
}

/// The spans of a trace as `how` reduces them, without reading span contents whole.
fn load_reduced(conn: &Connection, trace_key: i64, trace_id: &str, how: Reduced) -> StoreResult<Vec<Span>> {
    let id = span_trace_id(trace_id)?;
    let sql = format!("SELECT {} FROM spans WHERE trace_key = ?1", how.columns());
    let mut stmt = conn.prepare_cached(&sql).map_err(internal)?;
    let rows = stmt
        .query_map(params![trace_key], |r| {
            let row: OutlineRow =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?);
            Ok((row, r.get::<_, Option<String>>(7)?, r.get::<_, Option<String>>(8)?))
        })
        .map_err(internal)?;
    let mut spans = Vec::new();
    for row in rows {
        let (row, usage, content) = row.map_err(internal)?;
        spans.push(reduced_span(id, row, usage, content)?);
    }
    Ok(spans)
}

/// The span dicts of a batch as JSON, made ahead of the write ([`TraceStore::prepare`]), by
/// trace and span id; the last span of an id wins, as it does in the write.
struct SerializedSpans(hashbrown::HashMap<(TraceId, u64), String>);

fn serialize_spans(batch: &WriteBatch) -> SerializedSpans {
    let mut out = hashbrown::HashMap::with_capacity(batch.spans.len());
    for (_, span) in &batch.spans {
        out.insert((span.trace_id, span.span_id.to_u64()), span.to_dict_json());
    }
    SerializedSpans(out)
}

/// Applies `batch` on `tx`, a connection inside a transaction (or a savepoint of one).
fn apply(tx: &Connection, mut batch: WriteBatch) -> StoreResult<Vec<TraceInfo>> {
    let prepared = batch.prepared.take();
    let serialized = prepared.as_ref().and_then(|p| p.get::<SerializedSpans>());
    // Validate everything before touching anything (the transaction would roll back anyway,
    // but this gives the clearer error).
    let mut experiments: BTreeMap<String, Experiment> = BTreeMap::new();
    for id in batch_locations(&batch)? {
        experiments.insert(id.to_owned(), require_active(tx, &id)?);
    }
    let touched = batch_traces(&batch);
    let (mut stored, mut stored_spans) = (HashMap::new(), HashMap::new());
    for (id, _) in &touched {
        if let Some(s) = load_info(tx, id)? {
            stored_spans.insert(s.key, load_reduced(tx, s.key, id, Reduced::ForWrite)?);
            stored.insert(id.clone(), s);
        }
    }
    let changed = apply_batch(batch, &touched, stored, stored_spans, &experiments)?;
    for c in &changed {
        save(tx, c, serialized)?;
    }
    Ok(changed.into_iter().map(|c| c.info).collect())
}

// ---- search ------------------------------------------------------------------------------

/// Traces an equality on a tag or metadata value may match at most, for the search to start from
/// the `(key, value)` index and sort what it finds; above this, walking the experiment's traces
/// newest first finds a page sooner.
const SELECTIVE_MATCHES: i64 = 5_000;

/// The first `key = 'value'` clause on a tag or metadata entry that matches few traces (counted in
/// the index, stopping past [`SELECTIVE_MATCHES`]), as `(table, key, value)`.
fn selective_driver<'q>(
    conn: &Connection,
    clauses: &[&'q Clause],
) -> StoreResult<Option<(&'static str, &'q str, &'q str)>> {
    for c in clauses {
        let (table, key) = match &c.target {
            Target::Tag(k) => ("trace_tags", k.as_str()),
            Target::Metadata(k) => ("trace_metadata", k.as_str()),
            Target::Attribute(Attribute::Name) => ("trace_tags", tag_keys::TRACE_NAME),
            _ => continue,
        };
        let (Op::Eq, Literal::Str(value)) = (&c.op, &c.value) else { continue };
        let matches: i64 = conn
            .prepare_cached(&format!(
                "SELECT count(*) FROM (SELECT 1 FROM {table} WHERE key = ?1 AND value = ?2 LIMIT ?3)"
            ))
            .and_then(|mut st| st.query_row(params![key, value, SELECTIVE_MATCHES + 1], |r| r.get(0)))
            .map_err(internal)?;
        if matches <= SELECTIVE_MATCHES {
            return Ok(Some((table, key, value)));
        }
    }
    Ok(None)
}

/// A search failure: a bad pattern in a filter (raised by `tl_ilike`/`tl_rlike`) is the caller's.
fn filter_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::UserFunctionError(e) => StoreError::InvalidArgument(e.to_string()),
        e => internal(e),
    }
}

fn search(conn: &Connection, query: &TraceQuery) -> StoreResult<Page<TraceInfo>> {
    validate::max_results(query.max_results)?;
    let offset = decode_page_token(query.page_token.as_deref())?;
    let mut experiment_ids = Vec::new();
    for id in &query.experiment_ids {
        require_experiment(conn, id)?;
        experiment_ids.push(validate::experiment_id(id)?);
    }
    if experiment_ids.is_empty() {
        return Ok(Page { items: vec![], next_page_token: None });
    }
    let trace_clauses: Vec<&Clause> =
        query.filter.clauses.iter().filter(|c| !matches!(c.target, Target::Span(_))).collect();
    let plan = SearchPlan {
        experiment_ids: &experiment_ids,
        driver: selective_driver(conn, &trace_clauses)?,
        clauses: &query.filter.clauses,
        order_by: &query.order_by,
        limit: query.max_results + 1,
        offset,
    };
    let sql = search_sql(Dialect::Sqlite, &plan)?;

    let mut stmt = conn.prepare(&sql.text).map_err(internal)?;
    let ids = stmt
        .query_map(params_from_iter(sql.params.iter().map(sql_value)), |r| r.get::<_, String>(0))
        .map_err(filter_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(filter_error)?;
    let more = ids.len() > query.max_results;
    let mut items = Vec::with_capacity(ids.len().min(query.max_results));
    for id in ids.iter().take(query.max_results) {
        if let Some(s) = load_info(conn, id)? {
            items.push(s.info);
        }
    }
    let next = offset + items.len();
    Ok(Page { items, next_page_token: more.then(|| encode_page_token(next)) })
}

#[async_trait]
impl TraceStore for SqliteStore {
    async fn create_experiment(
        &self,
        name: &str,
        artifact_location: Option<&str>,
        tags: &[(String, String)],
    ) -> StoreResult<String> {
        validate::experiment_name(name)?;
        let (name, artifact_location, tags) =
            (name.to_owned(), artifact_location.map(str::to_owned), tags.to_vec());
        self.write_tx(move |tx| {
            if name_taken(tx, &name, None)? {
                return Err(StoreError::AlreadyExists(format!("Experiment '{name}' already exists.")));
            }
            let now = now_ms();
            let id: i64 = tx
                .query_row("SELECT COALESCE(MAX(experiment_id), 0) + 1 FROM experiments", [], |r| r.get(0))
                .map_err(internal)?;
            let location = artifact_location.unwrap_or_else(|| format!("mlflow-artifacts:/{id}"));
            tx.execute(
                "INSERT INTO experiments VALUES (?1, ?2, ?3, 'active', ?4, ?4)",
                params![id, name, location, now],
            )
            .map_err(internal)?;
            for (k, v) in &tags {
                tx.execute("INSERT INTO experiment_tags VALUES (?1, ?2, ?3)", params![id, k, v])
                    .map_err(internal)?;
            }
            Ok(id.to_string())
        })
        .await
    }

    async fn get_experiment(&self, experiment_id: &str) -> StoreResult<Experiment> {
        let id = experiment_id.to_owned();
        self.read(move |c| require_experiment(c, &id)).await
    }

    async fn get_experiment_by_name(&self, name: &str) -> StoreResult<Option<Experiment>> {
        let name = name.to_owned();
        self.read(move |c| {
            let id: Option<i64> = c
                .query_row("SELECT experiment_id FROM experiments WHERE name = ?1", params![name], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(internal)?;
            id.map_or(Ok(None), |id| load_experiment(c, id))
        })
        .await
    }

    async fn list_experiments(&self, view: ViewType) -> StoreResult<Vec<Experiment>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT experiment_id FROM experiments {} ORDER BY experiment_id",
                    stage(view)
                ))
                .map_err(internal)?;
            let ids = stmt
                .query_map([], |r| r.get::<_, i64>(0))
                .map_err(internal)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal)?;
            let mut all = Vec::with_capacity(ids.len());
            for id in ids {
                all.extend(load_experiment(c, id)?);
            }
            Ok(all)
        })
        .await
    }

    async fn rename_experiment(&self, experiment_id: &str, new_name: &str) -> StoreResult<()> {
        validate::experiment_name(new_name)?;
        let (id, name) = (experiment_id.to_owned(), new_name.to_owned());
        self.write_tx(move |tx| {
            let key = require_experiment(tx, &id)?.experiment_id.parse::<i64>().map_err(internal)?;
            if name_taken(tx, &name, Some(key))? {
                return Err(StoreError::AlreadyExists(format!("Experiment '{name}' already exists.")));
            }
            tx.execute(
                "UPDATE experiments SET name = ?2, last_update_time = ?3 WHERE experiment_id = ?1",
                params![key, name, now_ms()],
            )
            .map_err(internal)?;
            Ok(())
        })
        .await
    }

    async fn delete_experiment(&self, experiment_id: &str) -> StoreResult<()> {
        let id = experiment_id.to_owned();
        self.write_tx(move |tx| {
            require_experiment(tx, &id)?;
            set_lifecycle_stage(tx, &id, "deleted")
        })
        .await
    }

    async fn restore_experiment(&self, experiment_id: &str) -> StoreResult<()> {
        let id = experiment_id.to_owned();
        self.write_tx(move |tx| {
            if require_experiment(tx, &id)?.lifecycle_stage == LifecycleStage::Active {
                return Err(StoreError::InvalidState(format!(
                    "experiment {id} is active: nothing to restore"
                )));
            }
            set_lifecycle_stage(tx, &id, "active")
        })
        .await
    }

    async fn set_experiment_tag(&self, experiment_id: &str, key: &str, value: &str) -> StoreResult<()> {
        let (id, key, value) = (experiment_id.to_owned(), key.to_owned(), value.to_owned());
        self.write_tx(move |tx| {
            require_experiment(tx, &id)?;
            tx.execute(
                "INSERT INTO experiment_tags VALUES (?1, ?2, ?3)
                 ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
                params![validate::experiment_id(&id)?, key, value],
            )
            .map_err(internal)?;
            Ok(())
        })
        .await
    }

    async fn delete_experiment_tag(&self, experiment_id: &str, key: &str) -> StoreResult<()> {
        let (id, key) = (experiment_id.to_owned(), key.to_owned());
        self.write_tx(move |tx| {
            require_active(tx, &id)?;
            let deleted = tx
                .execute(
                    "DELETE FROM experiment_tags WHERE experiment_id = ?1 AND key = ?2",
                    params![validate::experiment_id(&id)?, key],
                )
                .map_err(internal)?;
            if deleted == 0 {
                return Err(validate::no_experiment_tag(&id, &key));
            }
            Ok(())
        })
        .await
    }

    async fn create_run(&self, run: NewRun) -> StoreResult<Run> {
        self.write_tx(move |tx| {
            let experiment = require_active(tx, &run.experiment_id)?;
            let run_id = TraceId::random().to_string();
            let name = run.run_name.filter(|n| !n.is_empty()).unwrap_or_else(|| run_id.clone());
            tx.execute(
                "INSERT INTO runs VALUES (?1, ?2, ?3, ?4, 'RUNNING', ?5, NULL, 'active', ?6)",
                params![
                    run_id,
                    validate::experiment_id(&experiment.experiment_id)?,
                    name,
                    run.user_id,
                    run.start_time_ms,
                    format!("{}/{run_id}/artifacts", experiment.artifact_location),
                ],
            )
            .map_err(internal)?;
            for (k, v) in &run.tags {
                tx.execute(
                    "INSERT INTO run_tags VALUES (?1, ?2, ?3) ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
                    params![run_id, k, v],
                )
                .map_err(internal)?;
            }
            load_run(tx, &run_id)
        })
        .await
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<Run> {
        let id = run_id.to_owned();
        self.read(move |c| load_run(c, &id)).await
    }

    async fn update_run(
        &self,
        run_id: &str,
        status: Option<&str>,
        end_time_ms: Option<i64>,
        run_name: Option<&str>,
    ) -> StoreResult<Run> {
        validate::run_status(status)?;
        let (id, status, name) = (run_id.to_owned(), status.map(str::to_owned), run_name.map(str::to_owned));
        self.write_tx(move |tx| {
            load_run(tx, &id)?;
            tx.execute(
                "UPDATE runs SET status = COALESCE(?2, status), end_time = COALESCE(?3, end_time),
                                 run_name = COALESCE(NULLIF(?4, ''), run_name)
                 WHERE run_id = ?1",
                params![id, status, end_time_ms, name],
            )
            .map_err(internal)?;
            load_run(tx, &id)
        })
        .await
    }

    async fn set_run_tag(&self, run_id: &str, key: &str, value: &str) -> StoreResult<()> {
        let (id, key, value) = (run_id.to_owned(), key.to_owned(), value.to_owned());
        self.write_tx(move |tx| {
            load_run(tx, &id)?;
            tx.execute(
                "INSERT INTO run_tags VALUES (?1, ?2, ?3) ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
                params![id, key, value],
            )
            .map_err(internal)?;
            Ok(())
        })
        .await
    }

    async fn write(&self, batch: WriteBatch) -> StoreResult<Vec<TraceInfo>> {
        self.write_tx(move |tx| apply(tx, batch)).await
    }

    /// Serializes the batch's span dicts, off the one writer thread.
    fn prepare(&self, batch: &mut WriteBatch) {
        batch.prepared = Some(Prepared::new(serialize_spans(batch)));
    }

    /// One transaction, one fsync, for the whole group; each batch under a savepoint of its
    /// own, rolled back alone if it fails.
    async fn write_group(&self, batches: Vec<WriteBatch>) -> Vec<StoreResult<Vec<TraceInfo>>> {
        let n = batches.len();
        let written = self
            .write_tx(move |tx| {
                let mut results = Vec::with_capacity(n);
                for batch in batches {
                    tx.execute_batch("SAVEPOINT batch").map_err(internal)?;
                    let result = apply(tx, batch);
                    let end =
                        if result.is_ok() { "RELEASE batch" } else { "ROLLBACK TO batch; RELEASE batch" };
                    tx.execute_batch(end).map_err(internal)?;
                    results.push(result);
                }
                Ok(results)
            })
            .await;
        written.unwrap_or_else(|e| vec![Err(e); n])
    }

    async fn get_trace_info(&self, trace_id: &str) -> StoreResult<TraceInfo> {
        let id = trace_id.to_owned();
        self.read(move |c| {
            load_info(c, &id)?
                .map(|s| s.info)
                .ok_or_else(|| StoreError::NotFound(format!("Trace with ID {id} not found.")))
        })
        .await
    }

    async fn get_traces(&self, trace_ids: &[String]) -> StoreResult<Vec<Trace>> {
        let ids = trace_ids.to_vec();
        self.read(move |c| {
            let mut out = Vec::new();
            for id in ids {
                if let Some(s) = load_info(c, &id)? {
                    out.push(Trace { spans: load_spans(c, s.key)?, info: s.info });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn get_trace_outline(&self, trace_id: &str) -> StoreResult<Option<Trace>> {
        let id = trace_id.to_owned();
        self.read(move |c| {
            let Some(s) = load_info(c, &id)? else { return Ok(None) };
            let mut spans = load_reduced(c, s.key, &id, Reduced::Outline)?;
            sort_spans(&mut spans);
            Ok(Some(Trace { spans, info: s.info }))
        })
        .await
    }

    async fn get_span(&self, trace_id: &str, span_id: SpanId) -> StoreResult<Option<Span>> {
        let id = trace_id.to_owned();
        self.read(move |c| {
            let content: Option<String> = c
                .prepare_cached(
                    "SELECT s.content FROM traces t JOIN spans s ON s.trace_key = t.trace_key \
                     WHERE t.trace_id = ?1 AND s.span_id = ?2",
                )
                .and_then(|mut st| {
                    st.query_row(params![id, span_id.to_u64() as i64], |r| r.get(0)).optional()
                })
                .map_err(internal)?;
            content
                .map(|c| {
                    Span::from_dict_json(&c)
                        .map_err(|e| internal(format!("span {span_id} of trace {id} is unreadable: {e}")))
                })
                .transpose()
        })
        .await
    }

    async fn search_traces(&self, query: &TraceQuery) -> StoreResult<Page<TraceInfo>> {
        let query = query.clone();
        self.read(move |c| search(c, &query)).await
    }

    async fn delete_traces(&self, request: &DeleteTraces) -> StoreResult<usize> {
        let request = request.clone();
        self.write_tx(move |tx| {
            let ids: Vec<String> = match &request {
                DeleteTraces::OlderThan { experiment_id, max_timestamp_ms, max_traces } => {
                    require_experiment(tx, experiment_id)?;
                    if *max_traces == Some(0) {
                        return Err(StoreError::InvalidArgument("max_traces must be at least 1".into()));
                    }
                    let limit = max_traces.map_or(-1, |m| m as i64);
                    let mut stmt = tx
                        .prepare(
                            "SELECT trace_id FROM traces WHERE experiment_id = ?1 AND request_time_ms <= ?2
                             ORDER BY request_time_ms ASC, trace_id ASC LIMIT ?3",
                        )
                        .map_err(internal)?;
                    stmt.query_map(params![validate::experiment_id(experiment_id)?, max_timestamp_ms, limit], |r| r.get(0))
                        .map_err(internal)?
                        .collect::<Result<_, _>>()
                        .map_err(internal)?
                }
                DeleteTraces::Ids { experiment_id, trace_ids } => {
                    require_experiment(tx, experiment_id)?;
                    let exp = validate::experiment_id(experiment_id)?;
                    let mut found = Vec::new();
                    for id in trace_ids {
                        let ok: bool = tx
                            .query_row(
                                "SELECT EXISTS(SELECT 1 FROM traces WHERE trace_id = ?1 AND experiment_id = ?2)",
                                params![id, exp],
                                |r| r.get(0),
                            )
                            .map_err(internal)?;
                        if ok {
                            found.push(id.clone());
                        }
                    }
                    found
                }
            };
            for id in &ids {
                tx.execute("DELETE FROM traces WHERE trace_id = ?1", params![id]).map_err(internal)?;
            }
            Ok(ids.len())
        })
        .await
    }

    async fn set_trace_tag(&self, trace_id: &str, key: &str, value: &str) -> StoreResult<()> {
        if tag_keys::IMMUTABLE.contains(&key) {
            return Err(StoreError::InvalidArgument(format!(
                "tag {key:?} is set by the server and cannot be changed"
            )));
        }
        let (id, key, value) = (trace_id.to_owned(), key.to_owned(), value.to_owned());
        self.write_tx(move |tx| {
            let trace_key = require_trace_key(tx, &id)?;
            tx.execute(
                "INSERT INTO trace_tags VALUES (?1, ?2, ?3)
                 ON CONFLICT (trace_key, key) DO UPDATE SET value = excluded.value",
                params![trace_key, key, value],
            )
            .map_err(internal)?;
            Ok(())
        })
        .await
    }

    async fn change_assessment(
        &self,
        trace_id: &str,
        change: AssessmentChange,
    ) -> StoreResult<Option<serde_json::Value>> {
        let id = trace_id.to_owned();
        self.write_tx(move |tx| {
            let stored: Option<String> = tx
                .query_row("SELECT assessments FROM traces WHERE trace_id = ?1", params![id], |r| r.get(0))
                .optional()
                .map_err(internal)?;
            let stored =
                stored.ok_or_else(|| StoreError::NotFound(format!("Trace with ID {id} not found.")))?;
            let (text, out) = tracelake_store::assessments::apply_to_text(&stored, &id, change)?;
            tx.execute("UPDATE traces SET assessments = ?2 WHERE trace_id = ?1", params![id, text])
                .map_err(internal)?;
            Ok(out)
        })
        .await
    }

    async fn delete_trace_tag(&self, trace_id: &str, key: &str) -> StoreResult<()> {
        let (id, key) = (trace_id.to_owned(), key.to_owned());
        self.write_tx(move |tx| {
            let trace_key = require_trace_key(tx, &id)?;
            let n = tx
                .execute("DELETE FROM trace_tags WHERE trace_key = ?1 AND key = ?2", params![trace_key, key])
                .map_err(internal)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "No trace tag with key '{key}' for trace with ID '{id}'"
                )));
            }
            Ok(())
        })
        .await
    }

    async fn link_traces_to_run(&self, trace_ids: &[String], run_id: &str) -> StoreResult<()> {
        validate::traces_per_link(trace_ids.len())?;
        let (ids, run) = (trace_ids.to_vec(), run_id.to_owned());
        self.write_tx(move |tx| {
            for id in &ids {
                let trace_key = require_trace_key(tx, id)?;
                tx.execute("INSERT OR IGNORE INTO trace_runs VALUES (?1, ?2)", params![trace_key, run])
                    .map_err(internal)?;
            }
            Ok(())
        })
        .await
    }
}
