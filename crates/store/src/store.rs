//! The `TraceStore` trait: what every backend (in-memory, SQLite, PostgreSQL, lake) provides.

use async_trait::async_trait;
use tracelake_model::{Span, SpanId, Trace, TraceInfo};

use crate::assessments::AssessmentChange;
use crate::filter::FilterError;
use crate::types::{
    DeleteTraces, Experiment, ExperimentQuery, NewRun, Page, Run, TraceQuery, ViewType, WriteBatch,
};

/// Why a store refused or failed a call. Each kind maps to one MLflow error code, and so to
/// one HTTP status, in exactly one place in the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// `RESOURCE_DOES_NOT_EXIST` (404).
    #[error("{0}")]
    NotFound(String),
    /// `RESOURCE_ALREADY_EXISTS` (400).
    #[error("{0}")]
    AlreadyExists(String),
    /// `INVALID_PARAMETER_VALUE` (400): a bad filter, id, limit or combination of arguments.
    #[error("{0}")]
    InvalidArgument(String),
    /// `INVALID_STATE` (400): the call is valid but not now (an experiment that is deleted).
    #[error("{0}")]
    InvalidState(String),
    /// `INTERNAL_ERROR` (500): the backend failed; the message is for logs, not clients.
    #[error("{0}")]
    Internal(String),
}

impl From<FilterError> for StoreError {
    fn from(e: FilterError) -> Self {
        StoreError::InvalidArgument(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Where traces and experiments are kept.
///
/// What every implementation guarantees, checked by [`crate::conformance`]:
///
/// - **Durability.** When [`write`](Self::write) returns `Ok`, the whole batch is durable
///   (committed, fsynced as the backend defines it) and visible to every later read. When it
///   returns `Err`, none of it was applied: a batch is all or nothing.
/// - **Order independence.** A trace's spans and its info may arrive in any order and in any
///   number of batches; the stored trace is the same. Spans upsert by (trace id, span id); an
///   info overwrites timing, state, previews and client request id, and adds its tags and
///   metadata to what spans derived. A trace first seen through its spans starts with request
///   time = earliest span start, duration = latest end minus that, state from the root span
///   (`IN_PROGRESS` until the root arrives), previews from the root's inputs and outputs, and
///   tag `mlflow.trace.spansLocation = TRACKING_STORE`.
/// - **Experiments.** `"0"` ("Default") exists from the start. Traces are written only to
///   active experiments; names are unique among all experiments, deleted ones included.
/// - **Search.** Every filter [`crate::parse_filter`] accepts is answered or refused with
///   [`StoreError::InvalidArgument`], never silently ignored. Results are ordered by the
///   query's keys, then `timestamp_ms DESC`, then `request_id ASC`; page tokens are opaque and
///   stable while nothing is written.
/// - **Concurrency.** Every method may be called concurrently from many tasks.
#[async_trait]
pub trait TraceStore: Send + Sync + 'static {
    // ---- experiments ----

    /// Creates an experiment and returns its id. `artifact_location` defaults to a location
    /// derived from the id.
    async fn create_experiment(
        &self,
        name: &str,
        artifact_location: Option<&str>,
        tags: &[(String, String)],
    ) -> StoreResult<String>;

    async fn get_experiment(&self, experiment_id: &str) -> StoreResult<Experiment>;

    /// The experiment named `name`, active or deleted.
    async fn get_experiment_by_name(&self, name: &str) -> StoreResult<Option<Experiment>>;

    /// Every experiment of `view`, by id.
    async fn list_experiments(&self, view: ViewType) -> StoreResult<Vec<Experiment>>;

    /// Experiments matching `query.filter`, in its order, `max_results` per page. Experiments
    /// are few (hundreds, not millions), so the default answers from [`Self::list_experiments`]
    /// with the reference evaluator; every backend shares its semantics.
    async fn search_experiments(&self, query: &ExperimentQuery) -> StoreResult<Page<Experiment>> {
        crate::eval::search_experiments(self.list_experiments(query.view).await?, query)
    }

    async fn rename_experiment(&self, experiment_id: &str, new_name: &str) -> StoreResult<()>;

    /// Moves an experiment to the trash; its traces stay until it is purged.
    async fn delete_experiment(&self, experiment_id: &str) -> StoreResult<()>;

    async fn restore_experiment(&self, experiment_id: &str) -> StoreResult<()>;

    async fn set_experiment_tag(&self, experiment_id: &str, key: &str, value: &str) -> StoreResult<()>;

    /// Removes a tag of an active experiment; NotFound when it has no such tag.
    async fn delete_experiment_tag(&self, experiment_id: &str, key: &str) -> StoreResult<()>;

    // ---- runs ----

    /// Creates a run in an active experiment (named after its id when no name is given).
    async fn create_run(&self, run: NewRun) -> StoreResult<Run>;

    async fn get_run(&self, run_id: &str) -> StoreResult<Run>;

    /// Updates a run's status, end time and name; `None` leaves a field as it is.
    async fn update_run(
        &self,
        run_id: &str,
        status: Option<&str>,
        end_time_ms: Option<i64>,
        run_name: Option<&str>,
    ) -> StoreResult<Run>;

    async fn set_run_tag(&self, run_id: &str, key: &str, value: &str) -> StoreResult<()>;

    // ---- traces ----

    /// Applies a batch atomically (see the trait docs). Returns the infos of the traces the
    /// batch touched, as stored after it.
    async fn write(&self, batch: WriteBatch) -> StoreResult<Vec<TraceInfo>>;

    /// Does for `batch` what can be done before it reaches the writer, on the caller's thread,
    /// leaving the result in [`WriteBatch::prepared`]. The server calls it for each request as
    /// it arrives, so this work runs beside the write of the requests ahead of it rather than
    /// inside it. The default does nothing.
    fn prepare(&self, _batch: &mut WriteBatch) {}

    /// Applies several batches together, as group commit does: one result per batch, in order.
    /// Each batch is all or nothing on its own, so one that fails (an unknown experiment, say)
    /// fails alone; every batch that succeeds is durable when this returns.
    ///
    /// The default writes the batches merged into one [`write`](Self::write) and, if that
    /// fails, each alone (the merged batch is a copy). A backend that can isolate batches
    /// inside one transaction, with savepoints, needs neither the copy nor the second try.
    async fn write_group(&self, batches: Vec<WriteBatch>) -> Vec<StoreResult<Vec<TraceInfo>>> {
        write_merged(self, batches).await
    }

    async fn get_trace_info(&self, trace_id: &str) -> StoreResult<TraceInfo>;

    /// The traces among `trace_ids` that exist, with their spans (root first, then by start
    /// time), in the order asked.
    async fn get_traces(&self, trace_ids: &[String]) -> StoreResult<Vec<Trace>>;

    /// Trace `trace_id` with its spans in outline ([`outline`](crate::derive::outline)), in
    /// the order of `get_traces`: what a span tree and a timeline show, which a store can read
    /// without its spans' contents. `None` when there is no such trace.
    async fn get_trace_outline(&self, trace_id: &str) -> StoreResult<Option<Trace>> {
        Ok(self.get_traces(&[trace_id.to_owned()]).await?.pop().map(crate::derive::trace_outline))
    }

    /// Span `span_id` of trace `trace_id`, whole; `None` when the trace has no such span.
    async fn get_span(&self, trace_id: &str, span_id: SpanId) -> StoreResult<Option<Span>> {
        let trace = self.get_traces(&[trace_id.to_owned()]).await?.pop();
        Ok(trace.and_then(|t| t.spans.into_iter().find(|s| s.span_id == span_id)))
    }

    async fn search_traces(&self, query: &TraceQuery) -> StoreResult<Page<TraceInfo>>;

    /// Deletes traces and returns how many were deleted.
    async fn delete_traces(&self, request: &DeleteTraces) -> StoreResult<usize>;

    async fn set_trace_tag(&self, trace_id: &str, key: &str, value: &str) -> StoreResult<()>;

    /// Creates, updates or deletes an assessment of trace `trace_id` as
    /// [`crate::assessments::apply`] does, in one write of the trace; returns the assessment as
    /// it now is (`None` after a delete). NotFound when there is no such trace.
    async fn change_assessment(
        &self,
        trace_id: &str,
        change: AssessmentChange,
    ) -> StoreResult<Option<serde_json::Value>>;

    async fn delete_trace_tag(&self, trace_id: &str, key: &str) -> StoreResult<()>;

    /// Associates traces with a run, so `run_id = '...'` finds them.
    async fn link_traces_to_run(&self, trace_ids: &[String], run_id: &str) -> StoreResult<()>;
}

/// [`TraceStore::write_group`] as its default does it: the batches merged into one
/// [`write`](TraceStore::write) and, if that fails, each alone.
pub async fn write_merged<S: TraceStore + ?Sized>(
    store: &S,
    batches: Vec<WriteBatch>,
) -> Vec<StoreResult<Vec<TraceInfo>>> {
    if batches.len() == 1 {
        let batch = batches.into_iter().next().expect("one batch");
        return vec![store.write(batch).await];
    }
    let mut merged = WriteBatch::default();
    for batch in &batches {
        merged.extend(batch.clone());
    }
    match store.write(merged).await {
        Ok(infos) => batches.iter().map(|batch| Ok(infos_of(batch, &infos))).collect(),
        Err(_) => {
            let mut results = Vec::with_capacity(batches.len());
            for batch in batches {
                results.push(store.write(batch).await);
            }
            results
        }
    }
}

/// The infos among `infos` of the traces `batch` touches.
fn infos_of(batch: &WriteBatch, infos: &[TraceInfo]) -> Vec<TraceInfo> {
    let ids: std::collections::HashSet<String> =
        crate::derive::batch_traces(batch).into_iter().map(|(id, _)| id).collect();
    infos.iter().filter(|i| ids.contains(&i.trace_id)).cloned().collect()
}
