//! A lake root (a directory, or `s3://bucket/prefix`) holding catalogs and schemas, each schema
//! a directory of Delta tables, and SQL over all of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::Schema;
use deltalake::arrow::util::pretty::pretty_format_batches;
use deltalake::datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider,
};
use deltalake::datafusion::execution::context::SQLOptions;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::logstore::store_for;
use deltalake::{ObjectStore, Path as ObjectPath};
use tokio::sync::RwLock;
use tracelake_model::{SpanOrigin, TraceInfo};
use tracelake_store::derive::location_key;
use tracelake_store::lake::{parse_schema_key, validate_name};
use tracelake_store::{SqlFormat, SqlOutput, StoreError, StoreResult, WriteBatch};
use url::Url;

use crate::schema::LakeSchema;
use crate::table::{FRESHNESS, Maintenance};

/// Where the lake is and how to reach it.
#[derive(Debug, Clone)]
pub struct LakeConfig {
    /// The root, ending in `/`: `file:///...` or `s3://bucket/prefix/`.
    pub root: Url,
    /// Object store options (for S3 the `AWS_*` variables are read as well).
    pub storage_options: HashMap<String, String>,
}

impl LakeConfig {
    /// A root from a path or URL: `s3://bucket/prefix`, `file:///dir`, or a local directory
    /// (created when the first schema is).
    pub fn from_root(root: &str) -> StoreResult<Self> {
        let invalid = |e: String| StoreError::InvalidArgument(format!("invalid lake root {root:?}: {e}"));
        let mut url = if root.contains("://") {
            Url::parse(root).map_err(|e| invalid(e.to_string()))?
        } else {
            let cwd = std::env::current_dir().map_err(|e| invalid(e.to_string()))?;
            let abs = std::path::absolute(cwd.join(root)).map_err(|e| invalid(e.to_string()))?;
            Url::from_directory_path(&abs).map_err(|()| invalid("not an absolute directory".into()))?
        };
        match url.scheme() {
            "file" | "s3" | "s3a" | "memory" => {}
            other => return Err(invalid(format!("unsupported scheme {other}: use a directory or s3://"))),
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        Ok(Self { root: url, storage_options: HashMap::new() })
    }
}

/// The lake: its schemas, opened on first use and found again on start.
pub struct Lake {
    config: LakeConfig,
    store: Arc<dyn ObjectStore>,
    schemas: RwLock<BTreeMap<String, Arc<LakeSchema>>>,
    /// When the root was last listed for schemas.
    discovered: parking_lot::Mutex<Instant>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake").field("root", &self.config.root.as_str()).finish_non_exhaustive()
    }
}

fn storage_error(root: &Url, e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("lake {root}: {e}"))
}

impl Lake {
    /// Opens the lake at `config.root` and every schema already in it.
    pub async fn open(config: LakeConfig) -> StoreResult<Self> {
        let store = store_for(&config.root, config.storage_options.clone())
            .map_err(|e| storage_error(&config.root, e))?;
        let lake = Self {
            config,
            store,
            schemas: RwLock::new(BTreeMap::new()),
            discovered: parking_lot::Mutex::new(Instant::now()),
        };
        for key in lake.discover().await? {
            lake.schema(&key).await?;
        }
        Ok(lake)
    }

    /// Opens the schemas other processes made since the root was last listed, when that is
    /// longer ago than [`FRESHNESS`].
    async fn discover_new(&self) -> StoreResult<()> {
        {
            let mut discovered = self.discovered.lock();
            if discovered.elapsed() < FRESHNESS {
                return Ok(());
            }
            *discovered = Instant::now();
        }
        for key in self.discover().await? {
            if self.existing_schema(&key).await.is_none() {
                self.schema(&key).await?;
            }
        }
        Ok(())
    }

    /// The schema `key` if it exists, open already or made by another process; never creates
    /// one.
    pub async fn find_schema(&self, key: &str) -> StoreResult<Option<Arc<LakeSchema>>> {
        if let Some(s) = self.existing_schema(key).await {
            return Ok(Some(s));
        }
        let (catalog, schema) = parse_schema_key(key)?;
        let dir = ObjectPath::from_iter([catalog, schema]);
        let listed = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(|e| storage_error(&self.config.root, e))?;
        if listed.common_prefixes.is_empty() {
            return Ok(None);
        }
        self.schema(key).await.map(Some)
    }

    pub fn root(&self) -> &Url {
        &self.config.root
    }

    /// `catalog.schema` directories under the root that hold a tracelake table.
    async fn discover(&self) -> StoreResult<Vec<String>> {
        if let Ok(dir) = self.config.root.to_file_path()
            && !dir.exists()
        {
            return Ok(Vec::new());
        }
        // the store is rooted at the lake root, whatever the scheme
        let list = |prefix: Option<ObjectPath>| {
            let store = self.store.clone();
            async move { store.list_with_delimiter(prefix.as_ref()).await }
        };
        let mut found = Vec::new();
        let catalogs = list(None).await.map_err(|e| storage_error(&self.config.root, e))?;
        for catalog in catalogs.common_prefixes {
            let Some(catalog_name) = catalog.filename().map(str::to_owned) else { continue };
            if validate_name("catalog", &catalog_name).is_err() {
                continue;
            }
            let schemas =
                list(Some(catalog.clone())).await.map_err(|e| storage_error(&self.config.root, e))?;
            for schema in schemas.common_prefixes {
                let Some(schema_name) = schema.filename() else { continue };
                if validate_name("schema", schema_name).is_ok() {
                    found.push(format!("{catalog_name}.{schema_name}"));
                }
            }
        }
        Ok(found)
    }

    /// The schema `catalog.schema`, created with its tables on first use.
    pub async fn schema(&self, key: &str) -> StoreResult<Arc<LakeSchema>> {
        if let Some(s) = self.schemas.read().await.get(key) {
            return Ok(s.clone());
        }
        let (catalog, schema) = parse_schema_key(key)?;
        let mut schemas = self.schemas.write().await;
        if let Some(s) = schemas.get(key) {
            return Ok(s.clone());
        }
        let url = self
            .config
            .root
            .join(&format!("{catalog}/{schema}/"))
            .map_err(|e| storage_error(&self.config.root, e))?;
        let opened = Arc::new(LakeSchema::open(key.to_owned(), &url, &self.config.storage_options).await?);
        schemas.insert(key.to_owned(), opened.clone());
        Ok(opened)
    }

    /// The schema `key` if it is open already.
    /// Writes a batch whose every span and info belongs to schema `key` (`catalog.schema`),
    /// without a tracking store (the SDK's direct lake destination); returns the infos of the
    /// traces it touched. Spans without an origin get the default one.
    pub async fn write(&self, key: &str, mut batch: WriteBatch) -> StoreResult<Vec<TraceInfo>> {
        let elsewhere = batch
            .spans
            .iter()
            .map(|(location, _)| location.clone())
            .chain(batch.infos.iter().map(|i| location_key(&i.trace_location)))
            .find(|location| location != key);
        if let Some(location) = elsewhere {
            return Err(StoreError::InvalidArgument(format!(
                "a write to lake schema {key} holds a trace of {location}"
            )));
        }
        let schema = self.schema(key).await?;
        let mut origins = std::mem::take(&mut batch.origins);
        origins.resize(batch.spans.len(), Arc::new(SpanOrigin::default()));
        schema.write(batch, &origins, &BTreeMap::new()).await
    }

    pub async fn existing_schema(&self, key: &str) -> Option<Arc<LakeSchema>> {
        self.schemas.read().await.get(key).cloned()
    }

    /// Every open schema.
    pub async fn schemas(&self) -> Vec<Arc<LakeSchema>> {
        self.schemas.read().await.values().cloned().collect()
    }

    /// Every schema, those other processes made lately included.
    pub async fn all_schemas(&self) -> StoreResult<Vec<Arc<LakeSchema>>> {
        self.discover_new().await?;
        Ok(self.schemas().await)
    }

    /// A DataFusion session in which every table of every schema is `catalog.schema.table`.
    pub async fn session(&self) -> StoreResult<SessionContext> {
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        let mut catalogs: BTreeMap<String, Arc<MemoryCatalogProvider>> = BTreeMap::new();
        for schema in self.all_schemas().await? {
            let (catalog_name, schema_name) = parse_schema_key(schema.key())?;
            let catalog = catalogs
                .entry(catalog_name.to_owned())
                .or_insert_with(|| Arc::new(MemoryCatalogProvider::new()));
            let tables = Arc::new(MemorySchemaProvider::new());
            for (name, table) in schema.tables() {
                let provider = table.provider(&ctx).await?;
                tables
                    .register_table(name.to_owned(), provider)
                    .map_err(|e| StoreError::Internal(e.to_string()))?;
            }
            catalog.register_schema(schema_name, tables).map_err(|e| StoreError::Internal(e.to_string()))?;
        }
        for (name, catalog) in catalogs {
            ctx.register_catalog(name, catalog);
        }
        Ok(ctx)
    }

    /// Runs one read-only statement; a bad one is `InvalidArgument` with DataFusion's words.
    pub async fn query(&self, sql: &str) -> StoreResult<(Arc<Schema>, Vec<RecordBatch>)> {
        let ctx = self.session().await?;
        let options =
            SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let bad =
            |e: deltalake::datafusion::error::DataFusionError| StoreError::InvalidArgument(e.to_string());
        let df = ctx.sql_with_options(sql, options).await.map_err(bad)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(bad)?;
        Ok((schema, batches))
    }

    /// Runs a statement and encodes its result.
    pub async fn sql(&self, sql: &str, format: SqlFormat) -> StoreResult<SqlOutput> {
        let (schema, batches) = self.query(sql).await?;
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
        let body = encode(&schema, &batches, format)?;
        Ok(SqlOutput { columns, rows, body })
    }

    /// Compacts and vacuums every table of every schema.
    pub async fn maintain(&self, target_file_size: u64, retention: Duration) -> StoreResult<Maintenance> {
        let mut total = Maintenance::default();
        for schema in self.schemas().await {
            for (_, table) in schema.tables() {
                let done = table.maintain(target_file_size, retention).await?;
                total.files_compacted += done.files_compacted;
                total.files_written += done.files_written;
                total.files_vacuumed += done.files_vacuumed;
            }
        }
        Ok(total)
    }
}

/// Encodes a result in `format`.
pub fn encode(schema: &Arc<Schema>, batches: &[RecordBatch], format: SqlFormat) -> StoreResult<Vec<u8>> {
    let failed =
        |e: deltalake::arrow::error::ArrowError| StoreError::Internal(format!("encoding the result: {e}"));
    let mut out = Vec::new();
    match format {
        SqlFormat::Table => {
            let text = if batches.is_empty() {
                pretty_format_batches(&[RecordBatch::new_empty(schema.clone())]).map_err(failed)?
            } else {
                pretty_format_batches(batches).map_err(failed)?
            };
            out.extend_from_slice(text.to_string().as_bytes());
            out.push(b'\n');
        }
        SqlFormat::Json => {
            // null cells are written, so every row has every column
            let mut writer = deltalake::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, deltalake::arrow::json::writer::JsonArray>(&mut out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            writer.write_batches(&refs).map_err(failed)?;
            writer.finish().map_err(failed)?;
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
        }
        SqlFormat::Csv => {
            if let Some(f) = schema.fields().iter().find(|f| f.data_type().is_nested()) {
                return Err(StoreError::InvalidArgument(format!(
                    "CSV cannot hold column {:?} ({}): select scalar columns (e.g. attributes['key']) or ask for json or arrow",
                    f.name(),
                    f.data_type()
                )));
            }
            let mut writer = deltalake::arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
            if batches.is_empty() {
                writer.write(&RecordBatch::new_empty(schema.clone())).map_err(failed)?;
            }
            for b in batches {
                writer.write(b).map_err(failed)?;
            }
        }
        SqlFormat::Arrow => {
            let mut writer =
                deltalake::arrow::ipc::writer::StreamWriter::try_new(&mut out, schema).map_err(failed)?;
            for b in batches {
                writer.write(b).map_err(failed)?;
            }
            writer.finish().map_err(failed)?;
        }
    }
    Ok(out)
}
