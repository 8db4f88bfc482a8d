//! SQL backends of the tracelake store. For now the embedded SQLite store, tracelake's
//! default: one file, migrations applied on open, WAL journal, every write batch durable
//! before it is acknowledged. It passes the store conformance suite.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tracelake_store::StoreError> {
//! use tracelake_store::TraceStore;
//!
//! let store = tracelake_store_sql::SqliteStore::open("tracelake.db").await?;
//! let experiment = store.create_experiment("agents", None, &[]).await?;
//! # Ok(()) }
//! ```

mod common;
mod postgres;
mod query;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
