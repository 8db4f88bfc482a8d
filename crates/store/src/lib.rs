//! The store contract of tracelake: what every backend (in memory, SQLite, PostgreSQL, the
//! lake) provides, and the pieces they share.
//!
//! - [`TraceStore`]: the trait, with its guarantees written above it.
//! - [`parse_filter`] / [`parse_order_by`]: MLflow's `search_traces` grammar, validated into
//!   [`Filter`] and [`OrderBy`] that each backend answers from its own indexes;
//!   [`parse_experiment_filter`] / [`parse_experiment_order_by`], the same for experiments.
//! - [`eval`]: the reference semantics of a filter over traces in memory.
//! - [`derive`]: how a trace's info follows from its spans and from infos written for it.
//! - [`validate`]: argument checks every backend applies alike.
//! - [`InMemoryStore`]: the reference backend.
//! - [`conformance`]: the suite every backend passes (`conformance_suite!`).
//! - [`lake`]: SQL and experiment links of a store with a lake ([`LakeAccess`]).
//!
//! ```
//! use tracelake_store::{Op, Target, parse_filter};
//!
//! let filter = parse_filter("tag.env = 'prod' AND span.type IN ('LLM', 'TOOL')").unwrap();
//! assert_eq!(filter.clauses[0].target, Target::Tag("env".into()));
//! assert_eq!(filter.clauses[1].op, Op::In);
//!
//! let err = parse_filter("tag.env = prod").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "invalid filter at column 11: expected a quoted string or a number after =, found \"prod\" (try 'prod')"
//! );
//! ```

pub mod assessments;
pub mod conformance;
pub mod derive;
pub mod eval;
mod filter;
pub mod lake;
mod memory;
mod store;
mod types;
pub mod validate;

pub use assessments::AssessmentChange;
pub use filter::{
    Attribute, Clause, ExperimentOrderKey, ExperimentTarget, Filter, FilterError, Literal, Op, OrderBy,
    OrderKey, SpanField, Target, parse_experiment_filter, parse_experiment_order_by, parse_filter,
    parse_order_by,
};
pub use lake::{LakeAccess, SqlFormat, SqlOutput};
pub use memory::InMemoryStore;
pub use store::{StoreError, StoreResult, TraceStore, write_merged};
pub use types::{
    DeleteTraces, Experiment, ExperimentQuery, LifecycleStage, NewRun, Page, Prepared, RUN_STATUSES, Run,
    TraceQuery, ViewType, WriteBatch,
};
