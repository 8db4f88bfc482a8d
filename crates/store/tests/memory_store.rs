//! The in-memory store passes the conformance suite.

tracelake_store::conformance_suite!(async { tracelake_store::InMemoryStore::new() });
