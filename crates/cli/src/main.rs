//! The `tracelake` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tracelake_server::Limits;
use tracelake_store::TraceStore;
use tracelake_store_sql::SqliteStore;

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
    /// Where traces are stored: `sqlite:///relative.db`, `sqlite:////absolute.db` or a file path.
    #[arg(long, env = "TRACELAKE_BACKEND_STORE_URI", default_value = "sqlite:///tracelake.db")]
    backend_store_uri: String,
    /// Largest request body, in bytes.
    #[arg(long, env = "TRACELAKE_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
}

/// The SQLite file a backend store URI names (MLflow's forms: `sqlite:///rel`, `sqlite:////abs`).
fn sqlite_path(uri: &str) -> anyhow::Result<PathBuf> {
    if let Some(rest) = uri.strip_prefix("sqlite://") {
        let path = rest.strip_prefix('/').unwrap_or(rest);
        if path.is_empty() {
            bail!("--backend-store-uri {uri:?} names no file: use sqlite:///tracelake.db");
        }
        return Ok(PathBuf::from(path));
    }
    if uri.starts_with("postgresql://") || uri.starts_with("postgres://") {
        bail!(
            "--backend-store-uri {uri:?}: the PostgreSQL backend is not available yet; use sqlite:///<file>"
        );
    }
    if uri.contains("://") {
        bail!("--backend-store-uri {uri:?}: unsupported scheme; use sqlite:///<file>");
    }
    Ok(PathBuf::from(uri))
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
    let path = sqlite_path(&args.backend_store_uri)?;
    let store: Arc<dyn TraceStore> = Arc::new(
        SqliteStore::open(&path).await.with_context(|| format!("opening the store {}", path.display()))?,
    );
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
        assert_eq!(sqlite_path("sqlite:///tracelake.db").unwrap(), PathBuf::from("tracelake.db"));
        assert_eq!(sqlite_path("sqlite:////var/lib/t.db").unwrap(), PathBuf::from("/var/lib/t.db"));
        assert_eq!(sqlite_path("data/t.db").unwrap(), PathBuf::from("data/t.db"));
        assert!(sqlite_path("mysql://x").unwrap_err().to_string().contains("unsupported scheme"));
        assert!(sqlite_path("postgresql://db/x").unwrap_err().to_string().contains("not available yet"));
    }
}
