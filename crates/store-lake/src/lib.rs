//! The tracelake lake: traces, logs and metrics as Delta tables in OpenTelemetry shape, on a
//! local disk or S3, readable by any Delta reader and queried here with DataFusion.
//!
//! - [`Lake`]: a root holding `catalog/schema/table` directories, opened schema by schema, and
//!   SQL over every table as `catalog.schema.table`.
//! - [`LakeSchema`]: the four tables of a schema and how writes land in them.
//! - [`LakeStore`]: the [`tracelake_store::TraceStore`] that keeps experiments in a tracking
//!   store and traces in the lake when they are written to a schema or to a linked experiment.
//! - [`columns`]: the tables' columns and the mapping of spans and trace infos to rows.

pub mod columns;
mod lake;
mod schema;
mod store;
mod table;

pub use lake::{Lake, LakeConfig, encode};
pub use schema::LakeSchema;
pub use store::LakeStore;
pub use table::{LakeTable, Maintenance};
