//! Trace GenAI applications written in Rust: every step's inputs, outputs, timing and errors,
//! recorded as MLflow-compatible traces and exported in the background.
//!
//! # Concepts
//!
//! - A **span** is one step: a function call, an LLM request, a retrieval. It has a name, a
//!   [`SpanType`], inputs, outputs, attributes, events and a status.
//! - A **trace** is the tree of spans of one request. The first span started with no span
//!   current is its root; spans started while another is current become its children.
//! - The **context** is which span is current. It follows calls and `.await`s by itself; for
//!   spawned tasks and threads, capture it with [`FutureExt::in_current_context`] or
//!   [`Context::wrap`] (see [`context`](crate::Context)).
//! - When a trace's last span ends, the trace goes to the **exporters** of the installed
//!   [`TracerProvider`] through a bounded queue and a background worker: the application never
//!   waits for export, and a full queue drops (and counts) rather than blocks.
//! - A provider built without exporters sends each trace to its **destination** — a tracelake
//!   or MLflow server, an OTLP endpoint, a local directory —, chosen when its root span starts:
//!   context-local ([`Destination::scope`], [`Destination::enter`]), else global
//!   ([`set_destination`]), else what the environment says (`MLFLOW_TRACKING_URI`,
//!   `OTEL_EXPORTER_OTLP_ENDPOINT`, ... — see [`Destination`]). Call [`init`] at the start of
//!   `main` to fail fast on a bad configuration.
//!
//! # Instrumenting
//!
//! ```
//! use tracelake::{SpanType, trace};
//!
//! #[trace(span_type = SpanType::Retriever)]
//! fn retrieve(query: &str, k: usize) -> Vec<String> {
//!     (0..k).map(|i| format!("doc {i} about {query}")).collect()
//! }
//!
//! #[trace(name = "answer", span_type = SpanType::Chain)]
//! fn answer(question: &str) -> Result<String, std::io::Error> {
//!     let docs = retrieve(question, 2);
//!     // a span guard for a step that is not a function of its own
//!     let llm = tracelake::span("llm").span_type(SpanType::ChatModel).start();
//!     llm.set_inputs(&serde_json::json!({"messages": [{"role": "user", "content": question}]}));
//!     let reply = format!("{} documents found", docs.len());
//!     llm.set_outputs(&reply);
//!     Ok(reply)
//! }
//!
//! let exporter = tracelake::export::InMemoryExporter::new();
//! tracelake::set_tracer_provider(
//!     tracelake::TracerProvider::builder().with_exporter(exporter.clone()).build(),
//! );
//! answer("what is tracing?").unwrap();
//! tracelake::flush().unwrap();
//!
//! let trace = &exporter.traces()[0];
//! assert_eq!(trace.spans.len(), 3);
//! let retriever = &trace.search_spans(&tracelake::SpanQuery::span_type(SpanType::Retriever))[0];
//! assert_eq!(retriever.inputs().unwrap()["k"], 2);
//! ```
//!
//! `#[trace]` works on sync and async functions and methods. Other ways in: [`start_span`]
//! guards, [`traced`] for wrapping a function without editing it, and the [`Client`] API for
//! spans whose lifetime is not a lexical scope.

mod client;
mod config;
mod context;
mod destination;
pub mod export;
mod pipeline;
mod provider;
mod settings;
mod span;
mod trace;
mod wrap;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

/// Records a span for every call of the function it is put on.
///
/// ```
/// # use tracelake::{trace, SpanType};
/// #[trace]                                         // span named "lookup"
/// fn lookup(id: u32) -> String { format!("item {id}") }
///
/// #[trace(name = "embed", span_type = SpanType::Embedding, skip(client),
///         attributes(model = "text-embedding-3-small", dims = 1536))]
/// async fn embed(client: &(), text: &str) -> Vec<f32> { vec![0.0; 4] }
///
/// #[trace(span_type = "MY_STEP")]                  // any custom type
/// fn step() -> Result<u8, std::num::ParseIntError> { "7".parse() }
/// ```
///
/// Arguments are recorded by name as the span's inputs and the return value as its outputs:
/// through serde when the type is `Serialize`, as `Debug` text otherwise, else as the type
/// name. `self` is never recorded; `skip(arg, ...)` leaves arguments out. A returned `Err`
/// becomes an `exception` event and status ERROR; a panic does too, and keeps unwinding.
pub use tracelake_macros::trace;

pub use client::{Client, ClientError, SpanEnd};
pub use config::{disable, enable, is_enabled};
pub use context::{Context, ContextGuard, FutureExt, WithContext};
pub use destination::{Destination, DestinationGuard, ExperimentRef, Scoped, reset, set_destination};
pub use pipeline::{ExportStats, FlushError};
pub use provider::{
    DEFAULT_FLUSH_TIMEOUT, DEFAULT_MAX_BATCH_TRACES, DEFAULT_MAX_QUEUED_SPANS, DEFAULT_MAX_QUEUED_TRACES,
    DEFAULT_SCHEDULE_DELAY, TracerProvider, TracerProviderBuilder, export_stats, flush, init,
    set_tracer_provider, shutdown, tracer_provider,
};
pub use settings::{
    Auth, ConfigError, DEFAULT_TRACE_DIRECTORY, DeliverySettings, OtlpProtocol, OtlpSettings, TrackingUri,
};
pub use span::{LiveSpan, SpanBuilder, SpanGuard, current_span, span, start_span};
pub use trace::{
    TraceHandle, current_trace, get_trace, last_active_trace_id, last_active_trace_id_in_thread,
};
pub use wrap::{Args, Callable, Traced, traced};

/// The data model, re-exported.
pub use tracelake_model as model;
pub use tracelake_model::{
    Link, LogLevel, Span, SpanEvent, SpanId, SpanKind, SpanQuery, SpanStatus, SpanType, StatusCode, Trace,
    TraceId, TraceInfo, TraceLocation, TraceState,
};
