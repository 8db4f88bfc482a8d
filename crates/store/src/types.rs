//! What goes in and out of a store.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracelake_model::{Span, SpanOrigin, TraceInfo};

use crate::filter::{ExperimentOrderKey, ExperimentTarget, Filter, OrderBy};

/// Whether an experiment is in use or in the trash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleStage {
    Active,
    Deleted,
}

impl LifecycleStage {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleStage::Active => "active",
            LifecycleStage::Deleted => "deleted",
        }
    }
}

/// An MLflow experiment: the unit traces are grouped, searched and deleted by.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// A decimal integer, as MLflow's SQL stores assign them (`"0"` is the default experiment).
    pub experiment_id: String,
    pub name: String,
    pub artifact_location: String,
    pub lifecycle_stage: LifecycleStage,
    pub tags: BTreeMap<String, String>,
    pub creation_time_ms: i64,
    pub last_update_time_ms: i64,
}

/// Which experiments a listing includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewType {
    #[default]
    ActiveOnly,
    DeletedOnly,
    All,
}

/// Spans and trace infos to write together, in one transaction.
///
/// Spans are upserted by (trace id, span id); a trace they name that does not exist yet is
/// created from them. Infos are upserted by trace id and win over what spans derived. Order
/// within a batch does not matter: the result is the same whether a trace's info arrives
/// before, with or after its spans.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Complete trace infos (MLflow's StartTraceV3), each in the experiment of its location.
    pub infos: Vec<TraceInfo>,
    /// Spans, each with the location its trace belongs to: an experiment id, or a lake schema
    /// `catalog.schema`.
    pub spans: Vec<(String, Span)>,
    /// The origin of each span (`origins[i]` for `spans[i]`); shorter than `spans` when some
    /// are unknown.
    pub origins: Vec<Arc<SpanOrigin>>,
    /// What the store worked out of this batch ahead of its write
    /// ([`TraceStore::prepare`](crate::TraceStore::prepare)); a store reads only what it made
    /// itself, and does the work at write time when this is missing.
    pub prepared: Option<Prepared>,
}

/// Work a store did on a batch ahead of writing it, kept with the batch: each store decides
/// what (the SQLite store: each span's dict as the JSON it stores).
#[derive(Clone)]
pub struct Prepared(Arc<dyn std::any::Any + Send + Sync>);

impl Prepared {
    pub fn new<T: std::any::Any + Send + Sync>(value: T) -> Prepared {
        Prepared(Arc::new(value))
    }

    /// What was prepared, if it is a `T`.
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepared(..)")
    }
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.infos.is_empty() && self.spans.is_empty()
    }

    pub fn len(&self) -> usize {
        self.infos.len() + self.spans.len()
    }

    /// Adds everything of `other` to this batch (group commit merges requests this way).
    pub fn extend(&mut self, other: WriteBatch) {
        if !other.origins.is_empty() && self.origins.len() < self.spans.len() {
            let unknown = Arc::new(SpanOrigin::default());
            self.origins.resize(self.spans.len(), unknown);
        }
        self.infos.extend(other.infos);
        self.spans.extend(other.spans);
        self.origins.extend(other.origins);
        // prepared for other spans than the merged batch holds
        self.prepared = None;
    }
}

/// A `search_traces` request.
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    pub experiment_ids: Vec<String>,
    pub filter: Filter,
    /// Empty means `timestamp_ms DESC`; ties are always broken by `request_id ASC`.
    pub order_by: Vec<OrderBy>,
    pub max_results: usize,
    pub page_token: Option<String>,
}

/// A `search_experiments` request.
#[derive(Debug, Clone)]
pub struct ExperimentQuery {
    pub view: ViewType,
    pub filter: Filter<ExperimentTarget>,
    /// Empty means `creation_time DESC, experiment_id ASC`; ties are broken by
    /// `experiment_id DESC`.
    pub order_by: Vec<OrderBy<ExperimentOrderKey>>,
    pub max_results: usize,
    pub page_token: Option<String>,
}

/// One page of results and the token for the next, if there is more.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

/// Which traces of an experiment to delete: the oldest ones up to a time (and at most a
/// number), or the listed ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteTraces {
    OlderThan { experiment_id: String, max_timestamp_ms: i64, max_traces: Option<usize> },
    Ids { experiment_id: String, trace_ids: Vec<String> },
}

/// An MLflow run, as far as tracing needs one: traces made inside `with mlflow.start_run()`
/// name it in their metadata (`mlflow.sourceRun`) and are searched by it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// 32 hex digits.
    pub run_id: String,
    pub experiment_id: String,
    pub run_name: String,
    pub user_id: String,
    /// `RUNNING`, `SCHEDULED`, `FINISHED`, `FAILED` or `KILLED`.
    pub status: String,
    pub start_time_ms: i64,
    pub end_time_ms: Option<i64>,
    pub lifecycle_stage: LifecycleStage,
    pub artifact_uri: String,
    pub tags: BTreeMap<String, String>,
}

/// The run statuses MLflow knows.
pub const RUN_STATUSES: [&str; 5] = ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];

/// A new run's fields.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    pub experiment_id: String,
    pub run_name: Option<String>,
    pub user_id: String,
    pub start_time_ms: i64,
    pub tags: Vec<(String, String)>,
}
