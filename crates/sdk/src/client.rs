//! The client API: spans whose lifetimes are not a lexical scope, named by explicit ids.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;
use tracelake_model::{IdError, SpanId, SpanStatus, Trace, TraceId, encode_attribute, keys};

use crate::context::{Current, with_current};
use crate::span::{LiveSpan, SpanBuilder, SpanNode, Started, new_node, start_node};
use crate::trace::{ActiveTrace, TraceHandle, registry};

/// Why a client call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("invalid trace id {id:?}: {source}")]
    InvalidTraceId {
        id: String,
        #[source]
        source: IdError,
    },
    #[error(
        "trace {0} is not in progress in this process (it finished, was never started, or was not sampled)"
    )]
    TraceNotFound(String),
    #[error("span {span_id} is not open in trace {trace_id} (it ended or never existed)")]
    SpanNotFound { trace_id: String, span_id: SpanId },
    #[error(
        "start_trace was called inside span {0}; it would start a second, unrelated trace: \
         use start_span with that span as parent, or call start_trace outside it"
    )]
    InsideActiveSpan(SpanId),
}

/// How a span ends: outputs, extra attributes, status and end time.
#[derive(Debug, Clone, Default)]
pub struct SpanEnd {
    outputs: Option<String>,
    attributes: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    status: Option<SpanStatus>,
    end_time_ns: Option<u64>,
}

impl SpanEnd {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn outputs<T: Serialize + ?Sized>(mut self, outputs: &T) -> Self {
        self.outputs = Some(encode_attribute(outputs));
        self
    }

    pub fn attribute<T: Serialize + ?Sized>(mut self, key: impl Into<Cow<'static, str>>, value: &T) -> Self {
        self.attributes.push((key.into(), encode_attribute(value).into()));
        self
    }

    /// The final status (default OK).
    pub fn status(mut self, status: SpanStatus) -> Self {
        self.status = Some(status);
        self
    }

    pub fn end_time_ns(mut self, ns: u64) -> Self {
        self.end_time_ns = Some(ns);
        self
    }

    fn apply(self, node: &Arc<SpanNode>) {
        let span = LiveSpan::from_node(node.clone());
        if let Some(outputs) = self.outputs {
            span.set_attribute_json(keys::OUTPUTS, outputs);
        }
        for (k, v) in self.attributes {
            span.set_attribute_json(k, v);
        }
        if let Some(status) = self.status {
            span.set_status(status);
        }
        node.end(self.end_time_ns);
    }
}

/// Starts and ends spans by id, from any thread: for lifetimes that callbacks, queues or
/// other threads decide (MLflow's `MlflowClient.start_trace` / `start_span` / `end_span` /
/// `end_trace`). Spans started here are not made current.
///
/// ```
/// use tracelake::{Client, SpanEnd, span};
///
/// let client = Client::new();
/// let root = client.start_trace(span("agent").inputs(&"plan a trip")).unwrap();
/// let trace_id = root.trace_id().unwrap().to_owned();
/// let tool = client.start_span(span("search"), &trace_id, root.span_id().unwrap()).unwrap();
/// client.end_span(&trace_id, tool.span_id().unwrap(), SpanEnd::new().outputs(&["flight"])).unwrap();
/// client.end_trace(&trace_id, SpanEnd::new().outputs(&"booked")).unwrap();
/// assert_eq!(client.get_trace(&trace_id).unwrap().spans.len(), 2);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Client;

impl Client {
    pub fn new() -> Self {
        Client
    }

    /// Starts a new trace with `root` as its root span. Refused inside an active span.
    /// Returns a non-recording span when tracing is disabled or the trace is not sampled.
    pub fn start_trace(&self, root: SpanBuilder) -> Result<LiveSpan, ClientError> {
        if let Some(id) = with_current(|c| match c {
            Current::Span(n) => Some(n.span_id),
            _ => None,
        }) {
            return Err(ClientError::InsideActiveSpan(id));
        }
        if !crate::config::is_enabled() {
            return Ok(LiveSpan::noop());
        }
        Ok(match start_node(&Current::None, root) {
            Started::Span(node) => LiveSpan::from_node(node),
            Started::Unsampled | Started::Noop => LiveSpan::noop(),
        })
    }

    /// Starts a span in trace `trace_id` under the open span `parent_id`.
    pub fn start_span(
        &self,
        span: SpanBuilder,
        trace_id: &str,
        parent_id: SpanId,
    ) -> Result<LiveSpan, ClientError> {
        let trace = self.active(trace_id)?;
        if trace.open_node(parent_id).is_none() {
            return Err(ClientError::SpanNotFound { trace_id: trace_id.to_owned(), span_id: parent_id });
        }
        Ok(LiveSpan::from_node(new_node(trace, Some(parent_id), span)))
    }

    /// Ends the open span `span_id` of trace `trace_id`.
    pub fn end_span(&self, trace_id: &str, span_id: SpanId, end: SpanEnd) -> Result<(), ClientError> {
        let trace = self.active(trace_id)?;
        let node = trace
            .open_node(span_id)
            .ok_or_else(|| ClientError::SpanNotFound { trace_id: trace_id.to_owned(), span_id })?;
        end.apply(&node);
        Ok(())
    }

    /// Ends trace `trace_id`: every span still open in it, then its root.
    pub fn end_trace(&self, trace_id: &str, end: SpanEnd) -> Result<(), ClientError> {
        let trace = self.active(trace_id)?;
        let root = trace.open_node(trace.root_span_id).ok_or_else(|| ClientError::SpanNotFound {
            trace_id: trace_id.to_owned(),
            span_id: trace.root_span_id,
        })?;
        let end_ns = end.end_time_ns.unwrap_or_else(crate::span::now_ns);
        for child in trace.open_children() {
            child.end(Some(end_ns));
        }
        end.end_time_ns(end_ns).apply(&root);
        Ok(())
    }

    /// A trace in progress, for tags, metadata and previews.
    pub fn trace(&self, trace_id: &str) -> Result<TraceHandle, ClientError> {
        self.active(trace_id).map(TraceHandle::new)
    }

    /// A finished trace from the local buffer.
    pub fn get_trace(&self, trace_id: &str) -> Option<Arc<Trace>> {
        crate::trace::get_trace(trace_id)
    }

    fn active(&self, trace_id: &str) -> Result<Arc<ActiveTrace>, ClientError> {
        let id = TraceId::from_mlflow(trace_id)
            .map_err(|source| ClientError::InvalidTraceId { id: trace_id.to_owned(), source })?;
        registry::get(id).ok_or_else(|| ClientError::TraceNotFound(trace_id.to_owned()))
    }
}
