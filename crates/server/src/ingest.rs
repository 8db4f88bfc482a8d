//! The one ingest path behind every transport (MLflow REST, OTLP/HTTP, OTLP/gRPC).
//!
//! Writes are group-committed: requests that arrive while a write is in progress are merged
//! into the next one, so a burst of small requests costs one transaction (and one fsync)
//! instead of many. Each request is acknowledged only after the write that carried it is
//! durable. When the queue is full the caller gets 429 with a retry hint at once; nothing is
//! dropped silently, and nothing acknowledged is lost on a graceful shutdown, which writes
//! everything queued before the worker stops.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracelake_model::TraceInfo;
use tracelake_store::{StoreResult, TraceStore, WriteBatch};

use crate::error::{ApiError, ApiResult};

/// How many requests may wait for the writer before new ones are refused with 429.
pub const DEFAULT_QUEUE_REQUESTS: usize = 1024;
/// Spans and infos merged into one write at most.
pub const DEFAULT_MAX_WRITE_ITEMS: usize = 20_000;

struct Job {
    batch: WriteBatch,
    done: oneshot::Sender<StoreResult<Vec<TraceInfo>>>,
}

/// Handle on the ingest worker; cheap to clone.
#[derive(Clone)]
pub struct IngestService {
    tx: mpsc::Sender<Job>,
    store: Arc<dyn TraceStore>,
}

impl std::fmt::Debug for IngestService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestService").field("capacity", &self.tx.capacity()).finish()
    }
}

impl IngestService {
    /// Starts the writer. It stops once every handle is dropped and the queue is written.
    pub fn start(
        store: Arc<dyn TraceStore>,
        queue_requests: usize,
        max_write_items: usize,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue_requests.max(1));
        let worker = tokio::spawn(run(store.clone(), rx, max_write_items.max(1)));
        (Self { tx, store }, worker)
    }

    /// Writes a batch; returns once it is durable, with the infos of the traces it touched.
    /// What the store can do ahead of the write ([`TraceStore::prepare`]) is done here, on the
    /// request's task, once the queue has taken the request.
    pub async fn write(&self, mut batch: WriteBatch) -> ApiResult<Vec<TraceInfo>> {
        let (done, result) = oneshot::channel();
        let place = match self.tx.try_reserve() {
            Ok(place) => place,
            Err(mpsc::error::TrySendError::Full(())) => return Err(ApiError::overloaded(1)),
            Err(mpsc::error::TrySendError::Closed(())) => {
                return Err(ApiError::unavailable("the server is shutting down"));
            }
        };
        self.store.prepare(&mut batch);
        place.send(Job { batch, done });
        match result.await {
            Ok(r) => r.map_err(ApiError::from),
            Err(_) => Err(ApiError::unavailable("the writer stopped before this request was written")),
        }
    }
}

async fn run(store: Arc<dyn TraceStore>, mut rx: mpsc::Receiver<Job>, max_items: usize) {
    while let Some(first) = rx.recv().await {
        let mut items = first.batch.len();
        let mut jobs = vec![first];
        while items < max_items {
            match rx.try_recv() {
                Ok(job) => {
                    items += job.batch.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        commit(&*store, jobs).await;
    }
}

/// Writes the jobs as one group (see [`TraceStore::write_group`]): one that fails, fails alone.
async fn commit(store: &dyn TraceStore, jobs: Vec<Job>) {
    let (batches, done): (Vec<WriteBatch>, Vec<_>) = jobs.into_iter().map(|j| (j.batch, j.done)).unzip();
    let results = store.write_group(batches).await;
    debug_assert_eq!(results.len(), done.len(), "one result per batch");
    for (done, result) in done.into_iter().zip(results) {
        let _ = done.send(result);
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use futures::future::poll_immediate;
    use tracelake_model::TraceId;
    use tracelake_store::InMemoryStore;
    use tracelake_store::conformance::span;

    use super::*;

    /// A two-span trace `n` in experiment `experiment_id`.
    fn batch(experiment_id: &str, n: u128) -> WriteBatch {
        let t = TraceId::new(n).unwrap();
        let spans = [span(t, 1, None, "root", 1000, 1100), span(t, 2, Some(1), "child", 1010, 1020)];
        WriteBatch {
            spans: spans.into_iter().map(|s| (experiment_id.to_owned(), s)).collect(),
            ..Default::default()
        }
    }

    async fn stored(store: &InMemoryStore, n: u128) -> bool {
        store.get_trace_info(&TraceId::new(n).unwrap().to_mlflow_v3()).await.is_ok()
    }

    // These tests run on tokio's current-thread runtime: the writer runs only when the test
    // awaits, so requests polled once in a row are all in the queue before it looks.

    #[tokio::test]
    async fn a_full_queue_refuses_with_429_and_loses_nothing_it_accepted() {
        let store = Arc::new(InMemoryStore::new());
        let (ingest, _worker) = IngestService::start(store.clone(), 2, 1000);
        let mut first = pin!(ingest.write(batch("0", 1)));
        let mut second = pin!(ingest.write(batch("0", 2)));
        assert!(poll_immediate(&mut first).await.is_none(), "queued");
        assert!(poll_immediate(&mut second).await.is_none(), "queued");
        let refused = ingest.write(batch("0", 3)).await.unwrap_err();
        assert_eq!(
            (refused.status, refused.code, refused.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED", Some(1))
        );
        let response = refused.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");

        assert_eq!(first.await.unwrap().len(), 1);
        assert_eq!(second.await.unwrap().len(), 1);
        assert!(stored(&store, 1).await && stored(&store, 2).await);
        assert!(!stored(&store, 3).await, "a refused request is not written");
        // the queue has room again
        ingest.write(batch("0", 3)).await.unwrap();
        assert!(stored(&store, 3).await);
    }

    #[tokio::test]
    async fn one_bad_request_in_a_group_commit_fails_alone() {
        let store = Arc::new(InMemoryStore::new());
        let (ingest, _worker) = IngestService::start(store.clone(), 8, 1000);
        let mut good = pin!(ingest.write(batch("0", 1)));
        let mut bad = pin!(ingest.write(batch("999", 2)));
        let mut also_good = pin!(ingest.write(batch("0", 3)));
        assert!(poll_immediate(&mut good).await.is_none(), "queued");
        assert!(poll_immediate(&mut bad).await.is_none(), "queued");
        assert!(poll_immediate(&mut also_good).await.is_none(), "queued");
        // the three are merged into one write, which fails; each is then written alone
        let infos = good.await.unwrap();
        assert_eq!(
            infos.iter().map(|i| i.trace_id.as_str()).collect::<Vec<_>>(),
            [TraceId::new(1).unwrap().to_mlflow_v3()]
        );
        let error = bad.await.unwrap_err();
        assert!(
            error.status.is_client_error() && error.message.contains("999"),
            "{} {}",
            error.status,
            error.message
        );
        assert_eq!(also_good.await.unwrap().len(), 1);
        assert!(stored(&store, 1).await && stored(&store, 3).await);
        assert!(!stored(&store, 2).await);
    }
}
