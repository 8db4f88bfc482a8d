//! What a store with a lake offers beyond [`crate::TraceStore`]: SQL over its tables and the
//! links between experiments and lake schemas. The server and the UI use it through this trait,
//! so they build without the lake's query engine.

use async_trait::async_trait;

use crate::store::StoreResult;

/// The experiment tag holding the lake schema (`catalog.schema`) an experiment's traces go to.
pub const TRACE_LOCATION_TAG: &str = "tracelake.traceLocation";

/// The spans table of a lake schema.
pub const SPANS_TABLE: &str = "mlflow_experiment_trace_otel_spans";
/// The logs table of a lake schema.
pub const LOGS_TABLE: &str = "mlflow_experiment_trace_otel_logs";
/// The metrics table of a lake schema.
pub const METRICS_TABLE: &str = "mlflow_experiment_trace_otel_metrics";
/// The trace-info table of a lake schema: one row per version of a trace's info.
pub const INFO_TABLE: &str = "mlflow_experiment_trace_info";

/// How a SQL result is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqlFormat {
    /// A text table, as a terminal shows it.
    #[default]
    Table,
    /// A JSON array of row objects.
    Json,
    /// CSV with a header row.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
}

impl SqlFormat {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "table" | "text" => Some(SqlFormat::Table),
            "json" => Some(SqlFormat::Json),
            "csv" => Some(SqlFormat::Csv),
            "arrow" | "ipc" | "arrow-ipc" => Some(SqlFormat::Arrow),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            SqlFormat::Table => "text/plain; charset=utf-8",
            SqlFormat::Json => "application/json",
            SqlFormat::Csv => "text/csv; charset=utf-8",
            SqlFormat::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// A SQL result: its columns, row count and the encoded rows.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlOutput {
    pub columns: Vec<String>,
    pub rows: usize,
    pub body: Vec<u8>,
}

/// A lake a server can query and route experiments to.
#[async_trait]
pub trait LakeAccess: Send + Sync + 'static {
    /// Runs one read-only SQL statement over the lake's tables (`catalog.schema.table`). A bad
    /// query is [`crate::StoreError::InvalidArgument`] with the engine's message and position.
    async fn sql(&self, query: &str, format: SqlFormat) -> StoreResult<SqlOutput>;

    /// The schemas the lake holds, as `catalog.schema`.
    async fn schemas(&self) -> StoreResult<Vec<String>>;

    /// Appends rows to a table of a schema (created if need be) in one commit: `rows` are
    /// JSON objects whose keys are the table's columns (see `tracelake_otlp::rows`).
    async fn append_rows(&self, key: &str, table: &str, rows: &[serde_json::Value]) -> StoreResult<usize>;

    /// Creates a schema's tables; an existing schema is left as it is.
    async fn create_schema(&self, key: &str) -> StoreResult<()>;

    /// Sends the traces of an experiment to a lake schema from now on (creating its tables).
    async fn link_experiment(&self, experiment_id: &str, catalog: &str, schema: &str) -> StoreResult<()>;

    /// Sends the traces of an experiment back to the tracking store.
    async fn unlink_experiment(&self, experiment_id: &str) -> StoreResult<()>;

    /// The lake schema an experiment is linked to, if any.
    async fn experiment_link(&self, experiment_id: &str) -> StoreResult<Option<String>>;
}

/// Checks a catalog or schema name: letters, digits and underscores, starting with a letter or
/// an underscore, as unquoted SQL identifiers are.
pub fn validate_name(what: &str, name: &str) -> StoreResult<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(crate::StoreError::InvalidArgument(format!(
            "invalid {what} name {name:?}: use letters, digits and underscores, starting with a letter"
        )))
    }
}

/// Splits `catalog.schema`, checking both names.
pub fn parse_schema_key(key: &str) -> StoreResult<(&str, &str)> {
    let (catalog, schema) = key.split_once('.').ok_or_else(|| {
        crate::StoreError::InvalidArgument(format!(
            "invalid lake schema {key:?}: expected <catalog>.<schema>"
        ))
    })?;
    validate_name("catalog", catalog)?;
    validate_name("schema", schema)?;
    Ok((catalog, schema))
}
