//! The SQLite store passes the conformance suite, and keeps what it stored across reopening.

use tracelake_store::TraceStore;
use tracelake_store_sql::SqliteStore;

async fn temporary() -> SqliteStore {
    // The directory lives as long as the test process; each test gets its own file.
    let dir = tempfile::tempdir().expect("temp dir").keep();
    SqliteStore::open(dir.join("tracelake.db")).await.expect("open")
}

tracelake_store::conformance_suite!(temporary());

#[tokio::test]
async fn what_was_written_is_there_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracelake.db");
    let id = {
        let store = SqliteStore::open(&path).await.unwrap();
        store.create_experiment("kept", None, &[]).await.unwrap()
    };
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.get_experiment(&id).await.unwrap().name, "kept");
    assert_eq!(store.get_experiment("0").await.unwrap().name, "Default");
}
