//! The `tracelake` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tracelake_server::Limits;
use tracelake_store::TraceStore;
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
    /// Largest request body, in bytes.
    #[arg(long, env = "TRACELAKE_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
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

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let store = open_store(&args.backend_store_uri).await?;
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
    tracelake_server::serve(listener, grpc, store, limits, shutdown_signal()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRACELAKE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Server(args) => server(args).await,
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
}
