//! The PostgreSQL store, for teams that share one server.
//!
//! A pool of connections; each [`WriteBatch`] is one transaction of a fixed number of statements
//! whatever its size (arrays bound with `UNNEST`), durable when `write` returns (PostgreSQL's
//! commit). Writers lock the traces they touch (transaction-scoped advisory locks), so several
//! tracelake servers can share one database.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::query::QueryScalar;
use sqlx::{AssertSqlSafe, Connection, PgPool, Postgres, SqlSafeStr};
use tracelake_model::{Span, SpanId, Trace, TraceId, TraceInfo, keys, tag_keys};
use tracelake_store::eval::{decode_page_token, encode_page_token};
use tracelake_store::{
    AssessmentChange, DeleteTraces, Experiment, LifecycleStage, NewRun, Page, Run, StoreError, StoreResult,
    TraceQuery, TraceStore, ViewType, WriteBatch, validate,
};

use tracelake_store::derive::{Changed, Stored, apply_batch, batch_locations, batch_traces};

use crate::common::{
    InfoRow, Reduced, RunRow, lifecycle_stage, now_ms, reduced_span, run_from_row, sort_spans, span_trace_id,
    stage,
};
use crate::query::{Dialect, Param, SearchPlan, search_sql};

/// Connections in the pool.
const MAX_CONNECTIONS: u32 = 16;

fn migrator() -> Migrator {
    let migration = |version, description: &'static str, sql: &'static str| {
        Migration::new(version, description.into(), MigrationType::Simple, sql.into_sql_str(), false)
    };
    Migrator::with_migrations(vec![migration(
        1,
        "initial",
        include_str!("../migrations/postgres/0001_initial.sql"),
    )])
}

/// A [`TraceStore`] in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

/// A backend failure. Text PostgreSQL cannot hold (a NUL character) and a bad pattern in a
/// search filter are the caller's; everything else is internal.
fn pg_error(e: sqlx::Error) -> StoreError {
    if let Some(db) = e.as_database_error() {
        match db.code().as_deref() {
            Some("2201B") => {
                return StoreError::InvalidArgument(format!("invalid regular expression: {}", db.message()));
            }
            Some("22021") => {
                return StoreError::InvalidArgument(format!(
                    "PostgreSQL cannot store this text ({}): remove NUL characters",
                    db.message()
                ));
            }
            _ => {}
        }
    }
    StoreError::Internal(format!("postgres: {e}"))
}

/// `postgresql+<driver>://` (SQLAlchemy's form, as MLflow takes it) read as `postgresql://`.
fn connect_options(uri: &str) -> StoreResult<PgConnectOptions> {
    let uri = match uri.split_once("://") {
        Some((scheme, rest)) if scheme.starts_with("postgresql+") => format!("postgresql://{rest}"),
        _ => uri.to_owned(),
    };
    PgConnectOptions::from_str(&uri)
        .map_err(|e| StoreError::InvalidArgument(format!("not a PostgreSQL URI ({e}): {}", redact(&uri))))
}

/// The URI without its password, for messages.
fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else { return uri.to_owned() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return uri.to_owned() };
    let user = userinfo.split(':').next().unwrap_or_default();
    format!("{scheme}://{user}@{host}")
}

/// Creates database `name` through the server's `postgres` database (as `mlflow server` does for
/// a database that does not exist yet).
async fn create_database(options: &PgConnectOptions, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    let created = sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {quoted}"))).execute(&mut conn).await;
    match created {
        // someone else created it meanwhile
        Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P04") => Ok(()),
        other => other.map(|_| ()),
    }
}

impl PostgresStore {
    /// Connects to the database `uri` names (`postgresql://user:password@host:port/database`),
    /// creating the database if the server has none of that name, and brings its schema up to
    /// date.
    pub async fn connect(uri: &str) -> StoreResult<PostgresStore> {
        let options = connect_options(uri)?;
        let unavailable = |e: sqlx::Error| {
            StoreError::Internal(format!("cannot open PostgreSQL store {}: {e}", redact(uri)))
        };
        let pool_options = || PgPoolOptions::new().max_connections(MAX_CONNECTIONS);
        let pool = match pool_options().connect_with(options.clone()).await {
            Ok(pool) => pool,
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("3D000") => {
                let name = options.get_database().unwrap_or("postgres").to_owned();
                create_database(&options, &name).await.map_err(unavailable)?;
                pool_options().connect_with(options).await.map_err(unavailable)?
            }
            Err(e) => return Err(unavailable(e)),
        };
        migrator().run(&pool).await.map_err(|e| {
            StoreError::Internal(format!("cannot migrate PostgreSQL store {}: {e}", redact(uri)))
        })?;
        Ok(PostgresStore { pool })
    }

    async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(pg_error)
    }

    async fn conn(&self) -> StoreResult<sqlx::pool::PoolConnection<Postgres>> {
        self.pool.acquire().await.map_err(pg_error)
    }
}

fn bind_all<'q, O>(
    mut q: QueryScalar<'q, Postgres, O, PgArguments>,
    params: &'q [Param],
) -> QueryScalar<'q, Postgres, O, PgArguments> {
    for p in params {
        q = match p {
            Param::Int(i) => q.bind(*i),
            Param::Real(f) => q.bind(*f),
            Param::Text(s) => q.bind(s.as_str()),
        };
    }
    q
}

// ---- experiments and runs --------------------------------------------------------------------

async fn load_experiment(conn: &mut PgConnection, id: i64) -> StoreResult<Option<Experiment>> {
    let row: Option<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT name, artifact_location, lifecycle_stage, creation_time, last_update_time
         FROM experiments WHERE experiment_id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(pg_error)?;
    let Some((name, artifact_location, stage, creation_time_ms, last_update_time_ms)) = row else {
        return Ok(None);
    };
    let tags: Vec<(String, String)> =
        sqlx::query_as("SELECT key, value FROM experiment_tags WHERE experiment_id = $1")
            .bind(id)
            .fetch_all(&mut *conn)
            .await
            .map_err(pg_error)?;
    Ok(Some(Experiment {
        experiment_id: id.to_string(),
        name,
        artifact_location,
        lifecycle_stage: lifecycle_stage(&stage),
        tags: tags.into_iter().collect(),
        creation_time_ms,
        last_update_time_ms,
    }))
}

async fn require_experiment(conn: &mut PgConnection, id: &str) -> StoreResult<Experiment> {
    load_experiment(conn, validate::experiment_id(id)?)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("No Experiment with id={id} exists")))
}

async fn require_active(conn: &mut PgConnection, id: &str) -> StoreResult<Experiment> {
    let e = require_experiment(conn, id).await?;
    if e.lifecycle_stage != LifecycleStage::Active {
        return Err(StoreError::InvalidState(format!(
            "experiment {id} is deleted: restore it before writing traces to it"
        )));
    }
    Ok(e)
}

async fn set_lifecycle_stage(conn: &mut PgConnection, id: &str, stage: &str) -> StoreResult<()> {
    sqlx::query(
        "UPDATE experiments SET lifecycle_stage = $2, last_update_time = $3 WHERE experiment_id = $1",
    )
    .bind(validate::experiment_id(id)?)
    .bind(stage)
    .bind(now_ms())
    .execute(conn)
    .await
    .map_err(pg_error)?;
    Ok(())
}

async fn name_taken(conn: &mut PgConnection, name: &str, except: Option<i64>) -> StoreResult<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS(SELECT 1 FROM experiments WHERE name = $1 AND experiment_id IS DISTINCT FROM $2)",
    )
    .bind(name)
    .bind(except)
    .fetch_one(conn)
    .await
    .map_err(pg_error)
}

async fn load_run(conn: &mut PgConnection, run_id: &str) -> StoreResult<Run> {
    let row: Option<RunRow> = sqlx::query_as(
        "SELECT experiment_id, run_name, user_id, status, start_time, end_time, lifecycle_stage, artifact_uri
         FROM runs WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(pg_error)?;
    if row.is_none() {
        return run_from_row(run_id, None, []);
    }
    let tags: Vec<(String, String)> = sqlx::query_as("SELECT key, value FROM run_tags WHERE run_id = $1")
        .bind(run_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(pg_error)?;
    run_from_row(run_id, row, tags)
}

async fn set_run_tag(conn: &mut PgConnection, run_id: &str, key: &str, value: &str) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO run_tags VALUES ($1, $2, $3) ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
    )
    .bind(run_id)
    .bind(key)
    .bind(value)
    .execute(conn)
    .await
    .map_err(pg_error)?;
    Ok(())
}

// ---- traces: reading -------------------------------------------------------------------------

type TraceRow = (
    i64,
    String,
    i64,
    i64,
    Option<i64>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
    String,
);

/// The stored traces among `ids`, by id.
async fn load_infos(
    conn: &mut PgConnection,
    ids: &[impl AsRef<str> + Sync],
) -> StoreResult<HashMap<String, Stored<i64>>> {
    let ids: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
    let rows: Vec<TraceRow> = sqlx::query_as(
        "SELECT trace_key, trace_id, experiment_id, request_time_ms, execution_duration_ms, state, client_request_id,
                request_preview, response_preview, from_spans_only, assessments
         FROM traces WHERE trace_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(pg_error)?;
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let mut tags =
        key_values(conn, "SELECT trace_key, key, value FROM trace_tags WHERE trace_key = ANY($1)", &keys)
            .await?;
    let mut metadata =
        key_values(conn, "SELECT trace_key, key, value FROM trace_metadata WHERE trace_key = ANY($1)", &keys)
            .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for (
        key,
        trace_id,
        experiment_id,
        request_time_ms,
        duration,
        state,
        client_request_id,
        req,
        resp,
        from_spans,
        a,
    ) in rows
    {
        let row = InfoRow {
            key,
            experiment_id,
            request_time_ms,
            execution_duration_ms: duration,
            state,
            client_request_id,
            request_preview: req,
            response_preview: resp,
            from_spans_only: from_spans,
            assessments: a,
        };
        let (tags, metadata) =
            (tags.remove(&key).unwrap_or_default(), metadata.remove(&key).unwrap_or_default());
        let stored = row.into_stored(&trace_id, tags, metadata);
        out.insert(trace_id, stored);
    }
    Ok(out)
}

async fn key_values(
    conn: &mut PgConnection,
    sql: &'static str,
    keys: &[i64],
) -> StoreResult<HashMap<i64, BTreeMap<String, String>>> {
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as(sql).bind(keys).fetch_all(conn).await.map_err(pg_error)?;
    let mut out: HashMap<i64, BTreeMap<String, String>> = HashMap::new();
    for (key, k, v) in rows {
        out.entry(key).or_default().insert(k, v);
    }
    Ok(out)
}

/// The spans of the traces with these keys, by key, in the order `get_traces` gives them.
async fn load_spans(conn: &mut PgConnection, keys: &[i64]) -> StoreResult<HashMap<i64, Vec<Span>>> {
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT trace_key, content FROM spans WHERE trace_key = ANY($1)")
            .bind(keys)
            .fetch_all(conn)
            .await
            .map_err(pg_error)?;
    let mut out: HashMap<i64, Vec<Span>> = HashMap::new();
    for (key, content) in rows {
        let span = Span::from_dict_json(&content).map_err(|e| {
            StoreError::Internal(format!("a stored span of trace key {key} is unreadable: {e}"))
        })?;
        out.entry(key).or_default().push(span);
    }
    for spans in out.values_mut() {
        sort_spans(spans);
    }
    Ok(out)
}

/// The spans of the traces `ids` (trace key → the id their spans carry) as `how` reduces them,
/// without reading span contents whole; by key.
async fn load_reduced(
    conn: &mut PgConnection,
    ids: &HashMap<i64, TraceId>,
    how: Reduced,
) -> StoreResult<HashMap<i64, Vec<Span>>> {
    let keys: Vec<i64> = ids.keys().copied().collect();
    type Row =
        (i64, i64, Option<i64>, String, String, String, i64, Option<i64>, Option<String>, Option<String>);
    let sql = format!("SELECT trace_key, {} FROM spans WHERE trace_key = ANY($1)", how.columns());
    let rows: Vec<Row> =
        sqlx::query_as(AssertSqlSafe(sql)).bind(&keys).fetch_all(&mut *conn).await.map_err(pg_error)?;
    let mut out: HashMap<i64, Vec<Span>> = HashMap::new();
    for (key, span_id, parent, name, span_type, status, start, end, usage, content) in rows {
        let row = (span_id, parent, name, span_type, status, start, end);
        out.entry(key).or_default().push(reduced_span(ids[&key], row, usage, content)?);
    }
    Ok(out)
}

/// The trace keys of `stored` with the ids their spans carry.
fn span_ids_by_key(stored: &HashMap<String, Stored<i64>>) -> StoreResult<HashMap<i64, TraceId>> {
    stored.iter().map(|(id, s)| Ok((s.key, span_trace_id(id)?))).collect()
}

/// The key of trace `id`; NotFound in MLflow's words when there is no such trace.
async fn require_trace_key(conn: &mut PgConnection, id: &str) -> StoreResult<i64> {
    sqlx::query_scalar("SELECT trace_key FROM traces WHERE trace_id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(pg_error)?
        .ok_or_else(|| StoreError::NotFound(format!("Trace with ID {id} not found.")))
}

// ---- traces: writing -------------------------------------------------------------------------

async fn apply(conn: &mut PgConnection, batch: WriteBatch) -> StoreResult<Vec<TraceInfo>> {
    // Validate everything before touching anything.
    let mut experiments: BTreeMap<String, Experiment> = BTreeMap::new();
    for id in batch_locations(&batch)? {
        experiments.insert(id.to_owned(), require_active(conn, &id).await?);
    }
    // Lock the traces in id order (no deadlocks between writers), then read them as they are now.
    let touched = batch_traces(&batch);
    let mut ids: Vec<&str> = touched.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended(id, 0)) FROM unnest($1::text[]) AS id")
        .bind(&ids)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
    let stored = load_infos(conn, &ids).await?;
    let stored_spans = load_reduced(conn, &span_ids_by_key(&stored)?, Reduced::ForWrite).await?;
    let changed = apply_batch(batch, &touched, stored, stored_spans, &experiments)?;
    save(conn, &changed).await?;
    Ok(changed.into_iter().map(|c| c.info).collect())
}

/// Saves what a batch changed: infos, tags and metadata, and the spans it wrote, each kind in
/// one statement of arrays.
async fn save(conn: &mut PgConnection, changed: &[Changed<i64>]) -> StoreResult<()> {
    let mut cols = InfoColumns::default();
    for c in changed {
        cols.push(&c.info, validate::experiment_id(&c.location)?, c.from_spans_only)?;
    }
    let returned: HashMap<String, i64> = sqlx::query_as(
        "INSERT INTO traces (trace_id, experiment_id, request_time_ms, execution_duration_ms, state, client_request_id,
                             request_preview, response_preview, from_spans_only, assessments)
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::text[], $6::text[], $7::text[],
                              $8::text[], $9::bool[], $10::text[])
         ON CONFLICT (trace_id) DO UPDATE SET
             request_time_ms = excluded.request_time_ms, execution_duration_ms = excluded.execution_duration_ms,
             state = excluded.state, client_request_id = excluded.client_request_id,
             request_preview = excluded.request_preview, response_preview = excluded.response_preview,
             from_spans_only = excluded.from_spans_only, assessments = excluded.assessments
         RETURNING trace_id, trace_key",
    )
    .bind(&cols.trace_id)
    .bind(&cols.experiment_id)
    .bind(&cols.request_time_ms)
    .bind(&cols.duration)
    .bind(&cols.state)
    .bind(&cols.client_request_id)
    .bind(&cols.request_preview)
    .bind(&cols.response_preview)
    .bind(&cols.from_spans_only)
    .bind(&cols.assessments)
    .fetch_all(&mut *conn)
    .await
    .map_err(pg_error)?
    .into_iter()
    .collect();
    let key_of = |c: &Changed<i64>| returned[&c.info.trace_id];

    let replaced: Vec<i64> = changed.iter().filter_map(|c| c.key).collect();
    for (table, pick) in [
        ("trace_tags", (|i: &TraceInfo| &i.tags) as fn(&TraceInfo) -> &BTreeMap<String, String>),
        ("trace_metadata", |i: &TraceInfo| &i.trace_metadata),
    ] {
        let (mut keys, mut names, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for c in changed {
            for (name, value) in pick(&c.info) {
                keys.push(key_of(c));
                names.push(name.as_str());
                values.push(value.as_str());
            }
        }
        if !replaced.is_empty() {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE trace_key = ANY($1)")))
                .bind(&replaced)
                .execute(&mut *conn)
                .await
                .map_err(pg_error)?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (trace_key, key, value) SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[])"
        )))
        .bind(&keys)
        .bind(&names)
        .bind(&values)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
    }

    let mut spans = SpanColumns::default();
    for c in changed {
        for span in c.written_spans() {
            spans.push(key_of(c), span)?;
        }
    }
    if spans.trace_key.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO spans (trace_key, span_id, parent_span_id, name, type, status, start_time_ns, end_time_ns,
                            token_usage, content)
         SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::int8[],
                              $8::int8[], $9::text[], $10::text[])
         ON CONFLICT (trace_key, span_id) DO UPDATE SET
             parent_span_id = excluded.parent_span_id, name = excluded.name, type = excluded.type,
             status = excluded.status, start_time_ns = excluded.start_time_ns, end_time_ns = excluded.end_time_ns,
             token_usage = excluded.token_usage, content = excluded.content",
    )
    .bind(&spans.trace_key)
    .bind(&spans.span_id)
    .bind(&spans.parent_span_id)
    .bind(&spans.name)
    .bind(&spans.span_type)
    .bind(&spans.status)
    .bind(&spans.start_time_ns)
    .bind(&spans.end_time_ns)
    .bind(&spans.token_usage)
    .bind(&spans.content)
    .execute(&mut *conn)
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Trace rows as columns, to bind as arrays.
#[derive(Default)]
struct InfoColumns {
    trace_id: Vec<String>,
    experiment_id: Vec<i64>,
    request_time_ms: Vec<i64>,
    duration: Vec<Option<i64>>,
    state: Vec<&'static str>,
    client_request_id: Vec<Option<String>>,
    request_preview: Vec<Option<String>>,
    response_preview: Vec<Option<String>>,
    from_spans_only: Vec<bool>,
    assessments: Vec<String>,
}

impl InfoColumns {
    fn push(&mut self, info: &TraceInfo, experiment_id: i64, from_spans_only: bool) -> StoreResult<()> {
        self.trace_id.push(info.trace_id.clone());
        self.experiment_id.push(experiment_id);
        self.request_time_ms.push(info.request_time_ms);
        self.duration.push(info.execution_duration_ms);
        self.state.push(info.state.as_str());
        self.client_request_id.push(info.client_request_id.clone());
        self.request_preview.push(info.request_preview.clone());
        self.response_preview.push(info.response_preview.clone());
        self.from_spans_only.push(from_spans_only);
        self.assessments.push(
            serde_json::to_string(&info.assessments)
                .map_err(|e| StoreError::Internal(format!("assessments: {e}")))?,
        );
        Ok(())
    }
}

/// Span rows as columns, to bind as arrays.
#[derive(Default)]
struct SpanColumns {
    trace_key: Vec<i64>,
    span_id: Vec<i64>,
    parent_span_id: Vec<Option<i64>>,
    name: Vec<String>,
    span_type: Vec<String>,
    status: Vec<&'static str>,
    start_time_ns: Vec<i64>,
    end_time_ns: Vec<Option<i64>>,
    token_usage: Vec<Option<String>>,
    content: Vec<String>,
}

impl SpanColumns {
    fn push(&mut self, trace_key: i64, span: &Span) -> StoreResult<()> {
        self.trace_key.push(trace_key);
        self.span_id.push(span.span_id.to_u64() as i64);
        self.parent_span_id.push(span.parent_id.map(|p| p.to_u64() as i64));
        self.name.push(span.name.to_string());
        self.span_type.push(span.span_type().as_str().to_owned());
        self.status.push(span.status.code.as_str());
        self.start_time_ns.push(span.start_time_unix_nano as i64);
        self.end_time_ns.push(span.end_time_unix_nano.map(|e| e as i64));
        self.token_usage.push(span.attributes.get_raw(keys::CHAT_TOKEN_USAGE).map(str::to_owned));
        self.content.push(span.to_dict_json());
        Ok(())
    }
}

// ---- the store -------------------------------------------------------------------------------

#[async_trait]
impl TraceStore for PostgresStore {
    async fn create_experiment(
        &self,
        name: &str,
        artifact_location: Option<&str>,
        tags: &[(String, String)],
    ) -> StoreResult<String> {
        validate::experiment_name(name)?;
        let mut tx = self.begin().await?;
        // one creator at a time: ids are the next integer
        sqlx::query("LOCK TABLE experiments IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        if name_taken(&mut tx, name, None).await? {
            return Err(StoreError::AlreadyExists(format!("Experiment '{name}' already exists.")));
        }
        let id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(experiment_id), 0) + 1 FROM experiments")
            .fetch_one(&mut *tx)
            .await
            .map_err(pg_error)?;
        let location = artifact_location.map_or_else(|| format!("mlflow-artifacts:/{id}"), str::to_owned);
        let now = now_ms();
        sqlx::query("INSERT INTO experiments VALUES ($1, $2, $3, 'active', $4, $4)")
            .bind(id)
            .bind(name)
            .bind(location)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        for (k, v) in tags {
            sqlx::query("INSERT INTO experiment_tags VALUES ($1, $2, $3)")
                .bind(id)
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(id.to_string())
    }

    async fn get_experiment(&self, experiment_id: &str) -> StoreResult<Experiment> {
        require_experiment(&mut *self.conn().await?, experiment_id).await
    }

    async fn get_experiment_by_name(&self, name: &str) -> StoreResult<Option<Experiment>> {
        let mut conn = self.conn().await?;
        let id: Option<i64> = sqlx::query_scalar("SELECT experiment_id FROM experiments WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(pg_error)?;
        match id {
            Some(id) => load_experiment(&mut conn, id).await,
            None => Ok(None),
        }
    }

    async fn list_experiments(&self, view: ViewType) -> StoreResult<Vec<Experiment>> {
        let mut conn = self.conn().await?;
        let ids: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT experiment_id FROM experiments {} ORDER BY experiment_id",
            stage(view)
        )))
        .fetch_all(&mut *conn)
        .await
        .map_err(pg_error)?;
        let mut all = Vec::with_capacity(ids.len());
        for id in ids {
            all.extend(load_experiment(&mut conn, id).await?);
        }
        Ok(all)
    }

    async fn rename_experiment(&self, experiment_id: &str, new_name: &str) -> StoreResult<()> {
        validate::experiment_name(new_name)?;
        let mut tx = self.begin().await?;
        let key = validate::experiment_id(&require_experiment(&mut tx, experiment_id).await?.experiment_id)?;
        if name_taken(&mut tx, new_name, Some(key)).await? {
            return Err(StoreError::AlreadyExists(format!("Experiment '{new_name}' already exists.")));
        }
        sqlx::query("UPDATE experiments SET name = $2, last_update_time = $3 WHERE experiment_id = $1")
            .bind(key)
            .bind(new_name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn delete_experiment(&self, experiment_id: &str) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        require_experiment(&mut conn, experiment_id).await?;
        set_lifecycle_stage(&mut conn, experiment_id, "deleted").await
    }

    async fn restore_experiment(&self, experiment_id: &str) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        if require_experiment(&mut conn, experiment_id).await?.lifecycle_stage == LifecycleStage::Active {
            return Err(StoreError::InvalidState(format!(
                "experiment {experiment_id} is active: nothing to restore"
            )));
        }
        set_lifecycle_stage(&mut conn, experiment_id, "active").await
    }

    async fn set_experiment_tag(&self, experiment_id: &str, key: &str, value: &str) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        require_experiment(&mut conn, experiment_id).await?;
        sqlx::query(
            "INSERT INTO experiment_tags VALUES ($1, $2, $3)
             ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
        )
        .bind(validate::experiment_id(experiment_id)?)
        .bind(key)
        .bind(value)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn delete_experiment_tag(&self, experiment_id: &str, key: &str) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        require_active(&mut conn, experiment_id).await?;
        let deleted = sqlx::query("DELETE FROM experiment_tags WHERE experiment_id = $1 AND key = $2")
            .bind(validate::experiment_id(experiment_id)?)
            .bind(key)
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
        if deleted.rows_affected() == 0 {
            return Err(validate::no_experiment_tag(experiment_id, key));
        }
        Ok(())
    }

    async fn create_run(&self, run: NewRun) -> StoreResult<Run> {
        let mut tx = self.begin().await?;
        let experiment = require_active(&mut tx, &run.experiment_id).await?;
        let run_id = TraceId::random().to_string();
        let name = run.run_name.filter(|n| !n.is_empty()).unwrap_or_else(|| run_id.clone());
        sqlx::query("INSERT INTO runs VALUES ($1, $2, $3, $4, 'RUNNING', $5, NULL, 'active', $6)")
            .bind(&run_id)
            .bind(validate::experiment_id(&experiment.experiment_id)?)
            .bind(name)
            .bind(&run.user_id)
            .bind(run.start_time_ms)
            .bind(format!("{}/{run_id}/artifacts", experiment.artifact_location))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        for (k, v) in &run.tags {
            set_run_tag(&mut tx, &run_id, k, v).await?;
        }
        let created = load_run(&mut tx, &run_id).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(created)
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<Run> {
        load_run(&mut *self.conn().await?, run_id).await
    }

    async fn update_run(
        &self,
        run_id: &str,
        status: Option<&str>,
        end_time_ms: Option<i64>,
        run_name: Option<&str>,
    ) -> StoreResult<Run> {
        validate::run_status(status)?;
        let mut tx = self.begin().await?;
        load_run(&mut tx, run_id).await?;
        sqlx::query(
            "UPDATE runs SET status = COALESCE($2, status), end_time = COALESCE($3, end_time),
                             run_name = COALESCE(NULLIF($4, ''), run_name)
             WHERE run_id = $1",
        )
        .bind(run_id)
        .bind(status)
        .bind(end_time_ms)
        .bind(run_name)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        let updated = load_run(&mut tx, run_id).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(updated)
    }

    async fn set_run_tag(&self, run_id: &str, key: &str, value: &str) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        load_run(&mut conn, run_id).await?;
        set_run_tag(&mut conn, run_id, key, value).await
    }

    async fn write(&self, batch: WriteBatch) -> StoreResult<Vec<TraceInfo>> {
        let mut tx = self.begin().await?;
        let infos = apply(&mut tx, batch).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(infos)
    }

    async fn get_trace_info(&self, trace_id: &str) -> StoreResult<TraceInfo> {
        let mut conn = self.conn().await?;
        let mut found = load_infos(&mut conn, std::slice::from_ref(&trace_id.to_owned())).await?;
        found
            .remove(trace_id)
            .map(|s| s.info)
            .ok_or_else(|| StoreError::NotFound(format!("Trace with ID {trace_id} not found.")))
    }

    async fn get_traces(&self, trace_ids: &[String]) -> StoreResult<Vec<Trace>> {
        let mut conn = self.conn().await?;
        let found = load_infos(&mut conn, trace_ids).await?;
        let keys: Vec<i64> = found.values().map(|s| s.key).collect();
        let mut spans = load_spans(&mut conn, &keys).await?;
        // an id asked for twice is answered twice
        let mut asked: HashMap<&str, usize> = HashMap::new();
        for id in trace_ids {
            *asked.entry(id).or_default() += 1;
        }
        let mut out = Vec::with_capacity(found.len());
        for id in trace_ids {
            let Some(s) = found.get(id) else { continue };
            let left = asked.get_mut(id.as_str()).expect("counted");
            *left -= 1;
            let spans = if *left == 0 { spans.remove(&s.key) } else { spans.get(&s.key).cloned() };
            out.push(Trace { info: s.info.clone(), spans: spans.unwrap_or_default() });
        }
        Ok(out)
    }

    async fn get_trace_outline(&self, trace_id: &str) -> StoreResult<Option<Trace>> {
        let mut conn = self.conn().await?;
        let mut found = load_infos(&mut conn, &[trace_id]).await?;
        let ids = span_ids_by_key(&found)?;
        let Some(stored) = found.remove(trace_id) else { return Ok(None) };
        let mut spans =
            load_reduced(&mut conn, &ids, Reduced::Outline).await?.remove(&stored.key).unwrap_or_default();
        sort_spans(&mut spans);
        Ok(Some(Trace { info: stored.info, spans }))
    }

    async fn get_span(&self, trace_id: &str, span_id: SpanId) -> StoreResult<Option<Span>> {
        let mut conn = self.conn().await?;
        let content: Option<String> = sqlx::query_scalar(
            "SELECT s.content FROM traces t JOIN spans s ON s.trace_key = t.trace_key \
             WHERE t.trace_id = $1 AND s.span_id = $2",
        )
        .bind(trace_id)
        .bind(span_id.to_u64() as i64)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
        content
            .map(|c| {
                Span::from_dict_json(&c).map_err(|e| {
                    StoreError::Internal(format!("span {span_id} of trace {trace_id} is unreadable: {e}"))
                })
            })
            .transpose()
    }

    async fn search_traces(&self, query: &TraceQuery) -> StoreResult<Page<TraceInfo>> {
        validate::max_results(query.max_results)?;
        let offset = decode_page_token(query.page_token.as_deref())?;
        let mut conn = self.conn().await?;
        let mut experiment_ids = Vec::new();
        for id in &query.experiment_ids {
            require_experiment(&mut conn, id).await?;
            experiment_ids.push(validate::experiment_id(id)?);
        }
        if experiment_ids.is_empty() {
            return Ok(Page { items: vec![], next_page_token: None });
        }
        let plan = SearchPlan {
            experiment_ids: &experiment_ids,
            driver: None,
            clauses: &query.filter.clauses,
            order_by: &query.order_by,
            limit: query.max_results + 1,
            offset,
        };
        let sql = search_sql(Dialect::Postgres, &plan)?;
        let ids: Vec<String> = bind_all(sqlx::query_scalar(AssertSqlSafe(sql.text.as_str())), &sql.params)
            .fetch_all(&mut *conn)
            .await
            .map_err(pg_error)?;
        let more = ids.len() > query.max_results;
        let page = &ids[..ids.len().min(query.max_results)];
        let mut found = load_infos(&mut conn, page).await?;
        let items: Vec<TraceInfo> = page.iter().filter_map(|id| found.remove(id).map(|s| s.info)).collect();
        let next = offset + items.len();
        Ok(Page { items, next_page_token: more.then(|| encode_page_token(next)) })
    }

    async fn delete_traces(&self, request: &DeleteTraces) -> StoreResult<usize> {
        let mut conn = self.conn().await?;
        let deleted = match request {
            DeleteTraces::OlderThan { experiment_id, max_timestamp_ms, max_traces } => {
                require_experiment(&mut conn, experiment_id).await?;
                if *max_traces == Some(0) {
                    return Err(StoreError::InvalidArgument("max_traces must be at least 1".into()));
                }
                sqlx::query(
                    "DELETE FROM traces WHERE trace_key IN (
                         SELECT trace_key FROM traces WHERE experiment_id = $1 AND request_time_ms <= $2
                         ORDER BY request_time_ms ASC, trace_id ASC LIMIT $3)",
                )
                .bind(validate::experiment_id(experiment_id)?)
                .bind(max_timestamp_ms)
                .bind(max_traces.map(|m| m as i64))
                .execute(&mut *conn)
                .await
            }
            DeleteTraces::Ids { experiment_id, trace_ids } => {
                require_experiment(&mut conn, experiment_id).await?;
                sqlx::query("DELETE FROM traces WHERE experiment_id = $1 AND trace_id = ANY($2)")
                    .bind(validate::experiment_id(experiment_id)?)
                    .bind(trace_ids)
                    .execute(&mut *conn)
                    .await
            }
        };
        Ok(deleted.map_err(pg_error)?.rows_affected() as usize)
    }

    async fn set_trace_tag(&self, trace_id: &str, key: &str, value: &str) -> StoreResult<()> {
        if tag_keys::IMMUTABLE.contains(&key) {
            return Err(StoreError::InvalidArgument(format!(
                "tag {key:?} is set by the server and cannot be changed"
            )));
        }
        let mut conn = self.conn().await?;
        let trace_key = require_trace_key(&mut conn, trace_id).await?;
        sqlx::query(
            "INSERT INTO trace_tags VALUES ($1, $2, $3) ON CONFLICT (trace_key, key) DO UPDATE SET value = excluded.value",
        )
        .bind(trace_key)
        .bind(key)
        .bind(value)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn change_assessment(
        &self,
        trace_id: &str,
        change: AssessmentChange,
    ) -> StoreResult<Option<serde_json::Value>> {
        let mut tx = self.begin().await?;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT assessments FROM traces WHERE trace_id = $1 FOR UPDATE")
                .bind(trace_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(pg_error)?;
        let stored =
            stored.ok_or_else(|| StoreError::NotFound(format!("Trace with ID {trace_id} not found.")))?;
        let (text, out) = tracelake_store::assessments::apply_to_text(&stored, trace_id, change)?;
        sqlx::query("UPDATE traces SET assessments = $2 WHERE trace_id = $1")
            .bind(trace_id)
            .bind(text)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(out)
    }

    async fn delete_trace_tag(&self, trace_id: &str, key: &str) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        let trace_key = require_trace_key(&mut conn, trace_id).await?;
        let deleted = sqlx::query("DELETE FROM trace_tags WHERE trace_key = $1 AND key = $2")
            .bind(trace_key)
            .bind(key)
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "No trace tag with key '{key}' for trace with ID '{trace_id}'"
            )));
        }
        Ok(())
    }

    async fn link_traces_to_run(&self, trace_ids: &[String], run_id: &str) -> StoreResult<()> {
        validate::traces_per_link(trace_ids.len())?;
        let mut tx = self.begin().await?;
        for id in trace_ids {
            let trace_key = require_trace_key(&mut tx, id).await?;
            sqlx::query("INSERT INTO trace_runs VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(trace_key)
                .bind(run_id)
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_read_like_mlflow_and_messages_hide_passwords() {
        assert!(connect_options("postgresql://u:p@127.0.0.1:5432/db").is_ok());
        assert!(connect_options("postgresql+psycopg2://u@localhost/db").is_ok());
        assert!(connect_options("postgres://localhost/db").is_ok());
        assert_eq!(redact("postgresql://u:secret@h:5432/db"), "postgresql://u@h:5432/db");
        assert_eq!(redact("postgresql://h/db"), "postgresql://h/db");
        let err = connect_options("postgresql://u:secret@h:notaport/db").unwrap_err().to_string();
        assert!(err.contains("not a PostgreSQL URI") && !err.contains("secret"), "{err}");
    }
}
