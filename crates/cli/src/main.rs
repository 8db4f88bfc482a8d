//! The `tracelake` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tracelake_server::Limits;
use tracelake_store::{LakeAccess, TraceStore};
use tracelake_store_sql::{PostgresStore, SqliteStore};

/// The server allocates and frees many small objects per span on several threads; glibc's
/// allocator spent about 40% of the server's time under ingest load, mimalloc a fraction.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "tracelake", version, about = "MLflow-compatible tracing backend and tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the MLflow tracing REST API and OTLP ingest.
    Server(ServerArgs),
    /// Run a SQL query over the lake's tables (`catalog.schema.table`) and print the result.
    #[cfg(feature = "store-lake")]
    Sql(SqlArgs),
}

/// `tracelake sql`.
#[cfg(feature = "store-lake")]
#[derive(clap::Args, Debug)]
struct SqlArgs {
    /// One read-only statement, e.g. `SELECT name, count(*) FROM main.agents.mlflow_experiment_trace_otel_spans GROUP BY name`.
    query: String,
    /// The lake: a directory, or `s3://bucket/prefix` (with the `AWS_*` variables).
    #[arg(long, env = "TRACELAKE_LAKE_ROOT", default_value = "./tracelake-lake")]
    lake_root: String,
    /// table, json, csv or arrow (an Arrow IPC stream).
    #[arg(long, default_value = "table")]
    format: String,
}

/// Flags mirror `mlflow server` where they overlap.
#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "TRACELAKE_HOST", default_value = "127.0.0.1")]
    host: String,
    /// HTTP port (MLflow REST, OTLP/HTTP).
    #[arg(long, env = "TRACELAKE_PORT", default_value_t = 5000)]
    port: u16,
    /// OTLP/gRPC port; 0 turns gRPC off.
    #[arg(long, env = "TRACELAKE_GRPC_PORT", default_value_t = 4317)]
    grpc_port: u16,
    /// Where traces are stored: `sqlite:///relative.db`, `sqlite:////absolute.db`, a file path, or
    /// `postgresql://user:password@host:port/database` (created if the server has no such database).
    #[arg(long, env = "TRACELAKE_BACKEND_STORE_URI", default_value = "sqlite:///tracelake.db")]
    backend_store_uri: String,
    /// The lake: a directory, or `s3://bucket/prefix` (with the `AWS_*` variables and
    /// `AWS_ENDPOINT_URL` for S3-compatible stores).
    #[cfg(feature = "store-lake")]
    #[arg(long, env = "TRACELAKE_LAKE_ROOT", default_value = "./tracelake-lake")]
    lake_root: String,
    /// Seconds between compactions and vacuums of the lake's tables; 0 turns them off.
    #[cfg(feature = "store-lake")]
    #[arg(long, env = "TRACELAKE_LAKE_MAINTENANCE_SECS", default_value_t = 600)]
    lake_maintenance_secs: u64,
    /// Hours a file no longer in a lake table's latest version is kept before vacuum removes it
    /// (Delta's default retention is a week).
    #[cfg(feature = "store-lake")]
    #[arg(long, env = "TRACELAKE_LAKE_RETENTION_HOURS", default_value_t = 168)]
    lake_retention_hours: u64,
    /// Largest request body, in bytes.
    #[arg(long, env = "TRACELAKE_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// The directory artifacts uploaded through `/api/2.0/mlflow-artifacts/artifacts` are kept
    /// in: a path or a `file://` URI (local directories only).
    #[arg(long, env = "TRACELAKE_ARTIFACTS_DESTINATION", default_value = "./mlartifacts")]
    artifacts_destination: String,
}

/// The local directory an `--artifacts-destination` names: a path, or a `file://` URI.
fn artifacts_dir(destination: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = destination.strip_prefix("file://") {
        return Ok(PathBuf::from(path));
    }
    if let Some((scheme, _)) = destination.split_once("://") {
        bail!(
            "--artifacts-destination {destination:?}: {scheme}:// is not supported; give a local directory"
        );
    }
    Ok(PathBuf::from(destination))
}

/// The store a backend store URI names, in MLflow's forms.
#[derive(Debug, PartialEq)]
enum Backend {
    /// `sqlite:///rel`, `sqlite:////abs` or a plain path.
    Sqlite(PathBuf),
    /// `postgresql://…`, `postgres://…` or SQLAlchemy's `postgresql+<driver>://…`.
    Postgres(String),
}

fn backend(uri: &str) -> anyhow::Result<Backend> {
    if let Some(rest) = uri.strip_prefix("sqlite://") {
        let path = rest.strip_prefix('/').unwrap_or(rest);
        if path.is_empty() {
            bail!("--backend-store-uri {uri:?} names no file: use sqlite:///tracelake.db");
        }
        return Ok(Backend::Sqlite(PathBuf::from(path)));
    }
    if let Some((scheme, _)) = uri.split_once("://") {
        if scheme == "postgresql" || scheme == "postgres" || scheme.starts_with("postgresql+") {
            return Ok(Backend::Postgres(uri.to_owned()));
        }
        bail!(
            "--backend-store-uri {uri:?}: unsupported scheme {scheme:?}; use sqlite:///<file> or postgresql://<host>/<database>"
        );
    }
    Ok(Backend::Sqlite(PathBuf::from(uri)))
}

async fn open_store(uri: &str) -> anyhow::Result<Arc<dyn TraceStore>> {
    Ok(match backend(uri)? {
        Backend::Sqlite(path) => Arc::new(
            SqliteStore::open(&path)
                .await
                .with_context(|| format!("opening the store {}", path.display()))?,
        ),
        Backend::Postgres(uri) => Arc::new(PostgresStore::connect(&uri).await?),
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!(target: "tracelake", "shutting down: writing what was accepted");
}

/// The tracking store with the lake beside it: traces of lake schemas and linked experiments
/// go to the lake, which is compacted and vacuumed every `lake_maintenance_secs`.
#[cfg(feature = "store-lake")]
async fn with_lake(
    store: Arc<dyn TraceStore>,
    args: &ServerArgs,
) -> anyhow::Result<(Arc<dyn TraceStore>, Option<Arc<dyn LakeAccess>>)> {
    use tracelake_store_lake::{Lake, LakeConfig, LakeStore};
    let config = LakeConfig::from_root(&args.lake_root)?;
    let lake =
        Arc::new(Lake::open(config).await.with_context(|| format!("opening the lake {}", args.lake_root))?);
    tracing::info!(target: "tracelake", "lake at {}", lake.root());
    if args.lake_maintenance_secs > 0 {
        let (lake, every) = (lake.clone(), std::time::Duration::from_secs(args.lake_maintenance_secs));
        let retention = std::time::Duration::from_secs(args.lake_retention_hours * 3600);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match lake.maintain(LAKE_TARGET_FILE_BYTES, retention).await {
                    Ok(done) => tracing::info!(target: "tracelake::lake", "maintenance: {done:?}"),
                    Err(e) => tracing::warn!(target: "tracelake::lake", "maintenance failed: {e}"),
                }
            }
        });
    }
    let store = Arc::new(LakeStore::new(store, lake));
    Ok((store.clone(), Some(store)))
}

/// Files compaction aims for in the lake's tables.
#[cfg(feature = "store-lake")]
const LAKE_TARGET_FILE_BYTES: u64 = 64 << 20;

#[cfg(feature = "store-lake")]
async fn sql(args: SqlArgs) -> anyhow::Result<()> {
    use std::io::Write;
    use tracelake_store_lake::{Lake, LakeConfig};
    let format = tracelake_store::SqlFormat::parse(&args.format)
        .with_context(|| format!("--format {:?}: use table, json, csv or arrow", args.format))?;
    let lake = Lake::open(LakeConfig::from_root(&args.lake_root)?).await?;
    let out = lake.sql(&args.query, format).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out.body)?;
    stdout.flush()?;
    Ok(())
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let artifacts = artifacts_dir(&args.artifacts_destination)?;
    let store = open_store(&args.backend_store_uri).await?;
    #[cfg(feature = "store-lake")]
    let (store, lake) = with_lake(store, &args).await?;
    #[cfg(not(feature = "store-lake"))]
    let lake: Option<Arc<dyn LakeAccess>> = None;
    let addr: SocketAddr = format!("{}:{}", args.host, args.port).parse().with_context(|| {
        format!("--host {:?} --port {}: not an address to listen on", args.host, args.port)
    })?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let grpc = if args.grpc_port == 0 {
        None
    } else {
        let grpc_addr = SocketAddr::new(addr.ip(), args.grpc_port);
        let grpc = tokio::net::TcpListener::bind(grpc_addr).await.with_context(|| {
            format!("cannot listen on {grpc_addr} for OTLP/gRPC (--grpc-port 0 turns it off)")
        })?;
        Some(grpc)
    };
    let limits = Limits { max_body_bytes: args.max_body_bytes, ..Limits::default() };
    tracing::info!(target: "tracelake", "artifacts in {}", artifacts.display());
    tracelake_server::serve(listener, grpc, store, lake, limits, &artifacts, shutdown_signal()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRACELAKE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,delta_kernel=warn,buoyant_kernel=warn,buoyant_kernel::snapshot::builder=off,deltalake_core=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    no_transparent_huge_pages();
    match Cli::parse().command {
        Command::Server(args) => server(args).await,
        #[cfg(feature = "store-lake")]
        Command::Sql(args) => sql(args).await,
    }
}

/// Keeps the process's memory in 4 KiB pages. The allocator asks for huge pages, and the
/// memory a write frees and the next one takes again was faulted back in as 2 MiB pages, each
/// zeroed whole: under lake ingest the kernel spent about a fifth of the server's time clearing
/// pages. Without them the same lake load took about 15% less CPU and ran about 20% faster.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(target: "tracelake", "cannot turn transparent huge pages off ({e}); continuing with them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_store_uris_read_like_mlflow() {
        let sqlite = |p: &str| Backend::Sqlite(PathBuf::from(p));
        assert_eq!(backend("sqlite:///tracelake.db").unwrap(), sqlite("tracelake.db"));
        assert_eq!(backend("sqlite:////var/lib/t.db").unwrap(), sqlite("/var/lib/t.db"));
        assert_eq!(backend("data/t.db").unwrap(), sqlite("data/t.db"));
        assert!(backend("sqlite://").unwrap_err().to_string().contains("names no file"));
        assert!(backend("mysql://x").unwrap_err().to_string().contains("unsupported scheme \"mysql\""));
        for uri in ["postgresql://u@db/x", "postgres://db/x", "postgresql+psycopg2://u:p@db:5432/x"] {
            assert_eq!(backend(uri).unwrap(), Backend::Postgres(uri.into()));
        }
    }

    #[test]
    fn artifacts_destinations_are_local_directories() {
        assert_eq!(artifacts_dir("./mlartifacts").unwrap(), PathBuf::from("./mlartifacts"));
        assert_eq!(artifacts_dir("file:///srv/artifacts").unwrap(), PathBuf::from("/srv/artifacts"));
        assert!(artifacts_dir("s3://bucket/a").unwrap_err().to_string().contains("s3:// is not supported"));
    }
}
