//! The store contract of tracelake.
//!
//! For now: MLflow's `search_traces` filter grammar and `order_by` keys, parsed and validated
//! into types every store backend answers from its own indexes. The `TraceStore` trait, the
//! in-memory store and the conformance suite every backend passes join them here.
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

mod filter;

pub use filter::{
    Attribute, Clause, Filter, FilterError, Literal, Op, OrderBy, OrderKey, SpanField, Target, parse_filter,
    parse_order_by,
};
