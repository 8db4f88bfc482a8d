//! The lake store passes the conformance suite with its traces in Delta tables: every
//! experiment's traces go to a schema of their own (`conformance.experiment_<id>`) under a
//! fresh lake root, with experiments and runs in a SQLite tracking store beside it.

use std::path::PathBuf;
use std::sync::Arc;

use tracelake_store_lake::{Lake, LakeConfig, LakeStore};
use tracelake_store_sql::SqliteStore;

fn fresh_dir() -> PathBuf {
    tempfile::Builder::new()
        .prefix("lake-conformance-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("a temporary directory")
        .keep()
}

async fn temporary() -> LakeStore {
    let dir = fresh_dir();
    let control = SqliteStore::open(dir.join("tracking.db")).await.expect("tracking store");
    let config = LakeConfig::from_root(dir.join("lake").to_str().unwrap()).expect("lake root");
    let lake = Lake::open(config).await.expect("lake");
    LakeStore::new(Arc::new(control), Arc::new(lake)).with_default_catalog("conformance").expect("catalog")
}

tracelake_store::conformance_suite!(temporary());
