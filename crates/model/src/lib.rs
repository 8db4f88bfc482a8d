//! The tracelake data model, shared by the SDK, the stores and the server.
//!
//! It is MLflow's tracing model, kept compatible to the byte:
//!
//! - [`TraceId`] and [`SpanId`] are OpenTelemetry ids; a trace's MLflow id is `tr-<32 hex>`
//!   (experiment storage) or `trace:/<catalog>.<schema>/<32 hex>` (lake storage).
//! - A [`Span`] has a name, a [`SpanType`] (fifteen named ones or any custom string), start and
//!   end times, a parent, a [`SpanStatus`], [`Attributes`] whose values are JSON-encoded strings
//!   (inputs and outputs live there under `mlflow.spanInputs` / `mlflow.spanOutputs`), events
//!   and links.
//! - A [`Trace`] is a [`TraceInfo`] (id, [`TraceLocation`], timing, [`TraceState`], previews,
//!   metadata, tags) plus its spans.
//! - The `Serialize`/`Deserialize` impls are the MLflow JSON forms (`Trace.to_dict()`), so
//!   traces move between tracelake and the MLflow client without loss.
//!
//! This crate does no I/O.
//!
//! ```
//! use tracelake_model::{SpanQuery, SpanType, Trace};
//!
//! let json = r#"{"info": {"trace_id": "tr-0976bfff5d59ceb4129a32bae600dae8",
//!     "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "0"}},
//!     "request_time": "2026-11-22T02:24:23.775Z", "state": "OK", "execution_duration_ms": 76},
//!   "data": {"spans": [{"trace_id": "CXa//11ZzrQSmjK65gDa6A==", "span_id": "QiclmX4PZnA=",
//!     "parent_span_id": null, "name": "retrieve", "start_time_unix_nano": 1795314263775396094,
//!     "end_time_unix_nano": 1795314263851565106, "events": [],
//!     "status": {"code": "STATUS_CODE_OK", "message": ""},
//!     "attributes": {"mlflow.traceRequestId": "\"tr-0976bfff5d59ceb4129a32bae600dae8\"",
//!                    "mlflow.spanType": "\"RETRIEVER\"", "mlflow.spanInputs": "{\"q\": \"hi\"}"},
//!     "links": []}]}}"#;
//! let trace = Trace::from_json(json).unwrap();
//! let retrievers = trace.search_spans(&SpanQuery::span_type(SpanType::Retriever));
//! assert_eq!(retrievers[0].inputs().unwrap()["q"], "hi");
//! ```

mod attributes;
mod dict;
mod ids;
pub mod json_text;
mod span;
pub mod summary;
mod trace;

pub use attributes::{
    AttrText, Attributes, PythonFormatter, from_json as decode_attribute, keys, to_json as encode_attribute,
    write_json as write_attribute,
};
pub use dict::{
    DictError, TraceData, date_and_time_micros, format_duration_ms, format_timestamp_ms, parse_duration_ms,
    parse_timestamp_ms,
};
pub use ids::{IdError, SpanId, TRACE_ID_V3_PREFIX, TRACE_ID_V4_PREFIX, TraceId};
pub use span::{
    Link, LogLevel, Span, SpanEvent, SpanKind, SpanOrigin, SpanStatus, SpanType, StatusCode, exception,
};
pub use trace::{
    NameMatch, SpanQuery, Trace, TraceInfo, TraceLocation, TraceState, limits, metadata_keys, tag_keys,
};
