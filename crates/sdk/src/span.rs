//! Live spans: starting them, recording on them, ending them.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tracelake_model::{
    Attributes, Link, LogLevel, Span, SpanEvent, SpanId, SpanKind, SpanStatus, SpanType, StatusCode, TraceId,
    encode_attribute, keys,
};

use crate::config;
use crate::context::{Current, replace_current, with_current};
use crate::trace::{ActiveTrace, TraceHandle};

/// Nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A span being recorded, shared by its guard, the context and its trace.
pub(crate) struct SpanNode {
    pub(crate) trace: Arc<ActiveTrace>,
    pub(crate) span_id: SpanId,
    pub(crate) parent_id: Option<SpanId>,
    /// Where the span goes in its trace (start order).
    pub(crate) slot: usize,
    /// Where the span sits in its trace's list of open spans (kept by the trace, under its lock).
    pub(crate) open_index: AtomicUsize,
    /// Set once the span has ended; readable without the lock, so a stale context (a span
    /// left current by guards dropped out of order) never parents new spans.
    ended: AtomicBool,
    data: Mutex<SpanData>,
}

/// What is recorded on a live span. The reserved MLflow attributes are kept as fields and
/// turned into [`Attributes`] by the export worker, so recording a span allocates less on the
/// application thread.
struct SpanData {
    name: Cow<'static, str>,
    kind: SpanKind,
    span_type: SpanType,
    start_ns: u64,
    function_json: Option<&'static str>,
    inputs: Option<Cow<'static, str>>,
    outputs: Option<Cow<'static, str>>,
    /// Every other attribute.
    attributes: Attributes,
    events: Vec<SpanEvent>,
    links: Vec<Link>,
    status: SpanStatus,
    log_level: Option<LogLevel>,
    has_exception: bool,
    ended: bool,
}

impl SpanNode {
    /// Turns the recorded data into a finished span and hands it to the trace. Idempotent.
    pub(crate) fn end(self: &Arc<Self>, end_ns: Option<u64>) {
        self.end_with(end_ns, None);
    }

    /// Ends the span, recording `outputs` first (one lock for both, on the `#[trace]` path).
    pub(crate) fn end_with(self: &Arc<Self>, end_ns: Option<u64>, outputs: Option<String>) {
        let span = {
            let mut d = self.data.lock();
            if d.ended {
                return;
            }
            if let Some(outputs) = outputs {
                d.outputs = Some(Cow::Owned(outputs));
            }
            d.ended = true;
            self.ended.store(true, Ordering::Release);
            let level = d.log_level.unwrap_or_else(|| d.span_type.default_log_level());
            let level = if d.has_exception { level.max(LogLevel::Error) } else { level };
            let mut status = std::mem::take(&mut d.status);
            if status.code != StatusCode::Error {
                status.code = StatusCode::Ok;
            }
            RawSpan {
                span_id: self.span_id,
                parent_id: self.parent_id,
                name: std::mem::take(&mut d.name),
                kind: d.kind,
                start_ns: d.start_ns,
                end_ns: end_ns.unwrap_or_else(now_ns),
                status,
                span_type: std::mem::take(&mut d.span_type),
                function_json: d.function_json,
                inputs: d.inputs.take(),
                outputs: d.outputs.take(),
                level,
                attributes: std::mem::take(&mut d.attributes),
                events: std::mem::take(&mut d.events),
                links: std::mem::take(&mut d.links),
            }
        };
        self.trace.finish_span(self, span);
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    fn update(&self, f: impl FnOnce(&mut SpanData)) {
        let mut d = self.data.lock();
        if !d.ended {
            f(&mut d);
        }
    }
}

impl SpanData {
    /// Sets an attribute, keeping the reserved ones in their fields.
    fn set(&mut self, key: Cow<'static, str>, json: Cow<'static, str>) {
        match key.as_ref() {
            keys::INPUTS => self.inputs = Some(json),
            keys::OUTPUTS => self.outputs = Some(json),
            keys::SPAN_TYPE => {
                self.span_type =
                    SpanType::from(tracelake_model::decode_attribute(&json).as_str().unwrap_or(&json));
            }
            keys::LOG_LEVEL => {
                self.log_level = match json.as_ref() {
                    "10" => Some(LogLevel::Debug),
                    "20" => Some(LogLevel::Info),
                    "30" => Some(LogLevel::Warning),
                    "40" => Some(LogLevel::Error),
                    "50" => Some(LogLevel::Critical),
                    _ => self.log_level,
                }
            }
            _ => self.attributes.insert_raw(key, json),
        }
    }
}

/// A span as it leaves the application thread: the export worker turns it into a
/// [`Span`] with MLflow's attributes (see [`RawSpan::into_span`]).
pub(crate) struct RawSpan {
    pub(crate) span_id: SpanId,
    pub(crate) parent_id: Option<SpanId>,
    name: Cow<'static, str>,
    kind: SpanKind,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    pub(crate) status: SpanStatus,
    span_type: SpanType,
    function_json: Option<&'static str>,
    inputs: Option<Cow<'static, str>>,
    outputs: Option<Cow<'static, str>>,
    level: LogLevel,
    attributes: Attributes,
    events: Vec<SpanEvent>,
    links: Vec<Link>,
}

impl RawSpan {
    /// The MLflow span, attributes in the order the MLflow client writes them.
    pub(crate) fn into_span(self, trace_id: TraceId, request_id_json: &Arc<str>) -> Span {
        let mut attributes = Attributes::with_capacity(6 + self.attributes.len());
        attributes.insert_raw(keys::REQUEST_ID, request_id_json.clone());
        attributes.insert_raw(keys::SPAN_TYPE, self.span_type.to_json());
        for (k, v) in self.attributes {
            attributes.insert_raw(k, v);
        }
        if let Some(function) = self.function_json {
            attributes.insert_raw(keys::FUNCTION_NAME, function);
        }
        if let Some(inputs) = self.inputs {
            attributes.insert_raw(keys::INPUTS, inputs);
        }
        if let Some(outputs) = self.outputs {
            attributes.insert_raw(keys::OUTPUTS, outputs);
        }
        attributes.insert_raw(keys::LOG_LEVEL, self.level.to_json());
        Span {
            trace_id,
            span_id: self.span_id,
            parent_id: self.parent_id,
            name: self.name,
            kind: self.kind,
            start_time_unix_nano: self.start_ns,
            end_time_unix_nano: Some(self.end_ns),
            status: self.status,
            attributes,
            events: self.events,
            links: self.links,
        }
    }
}

/// A handle on a live span: record inputs, outputs, attributes, events and status on it.
///
/// Handles are cheap to clone and can be sent across threads. A handle on a span that is not
/// recording (tracing disabled, trace not sampled) accepts every call and records nothing.
/// Recording on a span that has ended does nothing.
#[derive(Clone, Default)]
pub struct LiveSpan(Option<Arc<SpanNode>>);

impl LiveSpan {
    /// A span that records nothing.
    pub fn noop() -> LiveSpan {
        LiveSpan(None)
    }

    pub(crate) fn from_node(node: Arc<SpanNode>) -> LiveSpan {
        LiveSpan(Some(node))
    }

    pub(crate) fn node(&self) -> Option<&Arc<SpanNode>> {
        self.0.as_ref()
    }

    /// Whether this span records anything.
    pub fn is_recording(&self) -> bool {
        self.0.as_ref().is_some_and(|n| !n.is_ended())
    }

    pub fn span_id(&self) -> Option<SpanId> {
        self.0.as_ref().map(|n| n.span_id)
    }

    pub fn parent_id(&self) -> Option<SpanId> {
        self.0.as_ref().and_then(|n| n.parent_id)
    }

    /// The MLflow id of the span's trace (`tr-<32 hex>`).
    pub fn trace_id(&self) -> Option<&str> {
        self.0.as_ref().map(|n| n.trace.mlflow_id())
    }

    /// The span's trace, for trace-level updates.
    pub fn trace(&self) -> Option<TraceHandle> {
        self.0.as_ref().map(|n| TraceHandle::new(n.trace.clone()))
    }

    /// Records the inputs (any serde value; MLflow convention is an object of named arguments).
    pub fn set_inputs<T: Serialize + ?Sized>(&self, inputs: &T) {
        if let Some(node) = &self.0 {
            let json = encode_attribute(inputs);
            node.update(|d| d.inputs = Some(json.into()));
        }
    }

    /// Records the outputs.
    pub fn set_outputs<T: Serialize + ?Sized>(&self, outputs: &T) {
        if let Some(node) = &self.0 {
            let json = encode_attribute(outputs);
            node.update(|d| d.outputs = Some(json.into()));
        }
    }

    /// Sets one attribute; the value is stored JSON-encoded, as MLflow stores it.
    pub fn set_attribute<T: Serialize + ?Sized>(&self, key: impl Into<Cow<'static, str>>, value: &T) {
        if let Some(node) = &self.0 {
            let json = encode_attribute(value);
            node.update(|d| d.set(key.into(), json.into()));
        }
    }

    /// Sets an attribute whose value is already JSON-encoded.
    pub(crate) fn set_attribute_json(
        &self,
        key: impl Into<Cow<'static, str>>,
        json: impl Into<Cow<'static, str>>,
    ) {
        if let Some(node) = &self.0 {
            node.update(|d| d.set(key.into(), json.into()));
        }
    }

    /// Sets several attributes at once.
    pub fn set_attributes<K, V, I>(&self, attributes: I)
    where
        K: Into<Cow<'static, str>>,
        V: Serialize,
        I: IntoIterator<Item = (K, V)>,
    {
        if let Some(node) = &self.0 {
            let encoded: Vec<_> =
                attributes.into_iter().map(|(k, v)| (k.into(), encode_attribute(&v))).collect();
            node.update(|d| {
                for (k, v) in encoded {
                    d.attributes.insert_raw(k, v);
                }
            });
        }
    }

    /// Changes the span's type.
    pub fn set_span_type(&self, span_type: impl Into<SpanType>) {
        if let Some(node) = &self.0 {
            let span_type = span_type.into();
            node.update(|d| d.span_type = span_type);
        }
    }

    /// Adds an event with plain (not JSON-encoded) attribute values, stamped now.
    pub fn add_event<K, V, I>(&self, name: impl Into<String>, attributes: I)
    where
        K: Into<String>,
        V: Into<Value>,
        I: IntoIterator<Item = (K, V)>,
    {
        if self.0.is_some() {
            let mut event = SpanEvent::new(name, now_ns());
            event.attributes.extend(attributes.into_iter().map(|(k, v)| (k.into(), v.into())));
            self.add_span_event(event);
        }
    }

    /// Adds a fully formed event.
    pub fn add_span_event(&self, event: SpanEvent) {
        if let Some(node) = &self.0 {
            node.update(|d| {
                d.has_exception |= event.name == tracelake_model::exception::EVENT_NAME;
                d.events.push(event);
            });
        }
    }

    pub fn set_status(&self, status: SpanStatus) {
        if let Some(node) = &self.0 {
            node.update(|d| d.status = status);
        }
    }

    /// Overrides the log level the span gets from its type.
    pub fn set_log_level(&self, level: LogLevel) {
        if let Some(node) = &self.0 {
            node.update(|d| d.log_level = Some(level));
        }
    }

    pub fn add_link(&self, link: Link) {
        if let Some(node) = &self.0 {
            node.update(|d| d.links.push(link));
        }
    }

    /// Records an exception: an `exception` event with type, message and stack trace, and
    /// status ERROR with `"<type>: <message>"`.
    pub fn record_exception(&self, kind: &str, message: &str, stacktrace: Option<&str>) {
        if let Some(node) = &self.0 {
            let event = SpanEvent::exception(now_ns(), kind, message, stacktrace);
            let status = SpanStatus::error(format!("{kind}: {message}"));
            node.update(|d| {
                d.has_exception = true;
                d.events.push(event);
                d.status = status;
            });
        }
    }

    /// Records an error as an exception: its type name, its message, and its chain of
    /// sources as the stack trace.
    pub fn record_error<E: std::error::Error + ?Sized>(&self, error: &E) {
        if self.0.is_some() {
            let mut chain = error.to_string();
            let mut source = error.source();
            while let Some(cause) = source {
                chain.push_str("\nCaused by: ");
                chain.push_str(&cause.to_string());
                source = cause.source();
            }
            self.record_exception(
                &short_type_name(std::any::type_name::<E>()),
                &error.to_string(),
                Some(&chain),
            );
        }
    }

    /// Ends the span now. Spans are also ended by their guard; ending twice does nothing.
    pub fn end(&self) {
        if let Some(node) = &self.0 {
            node.end(None);
        }
    }

    /// Ends the span at `end_time_ns` (nanoseconds since the Unix epoch).
    pub fn end_at(&self, end_time_ns: u64) {
        if let Some(node) = &self.0 {
            node.end(Some(end_time_ns));
        }
    }
}

impl fmt::Debug for LiveSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("LiveSpan(noop)"),
            Some(n) => write!(f, "LiveSpan({} in {})", n.span_id, n.trace.mlflow_id()),
        }
    }
}

/// A type's name without its module paths, as MLflow records a Python exception's class name:
/// `std::num::error::ParseIntError` becomes `ParseIntError`, `alloc::boxed::Box<dyn
/// core::error::Error>` becomes `Box<dyn Error>`.
pub(crate) fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            segment.clear(); // a module path component: drop it
        } else if c.is_alphanumeric() || c == '_' {
            segment.push(c);
        } else {
            out.push_str(&segment);
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(&segment);
    out
}

/// A span that is current (on this thread, or in the traced future it lives in) until the
/// guard is dropped, which ends it. Derefs to [`LiveSpan`] for recording.
///
/// In async code, hold a guard across `.await` only inside a traced future (a `#[trace]`
/// `async fn`, or a future wrapped with [`FutureExt::in_current_context`](crate::FutureExt)):
/// the wrapper keeps the span current for that future alone. In a bare `tokio::spawn`ed future
/// the span would stay current on the worker thread while the task is suspended, and spans of
/// other tasks on that thread would nest under it.
#[must_use = "the span ends as soon as the guard is dropped"]
pub struct SpanGuard {
    span: LiveSpan,
    /// What was current before this guard; `None` when the guard never changed the context.
    previous: Option<Current>,
}

impl SpanGuard {
    /// The span, detached from the guard's lifetime (for handing to other code).
    pub fn span(&self) -> &LiveSpan {
        &self.span
    }
}

impl std::ops::Deref for SpanGuard {
    type Target = LiveSpan;
    fn deref(&self) -> &LiveSpan {
        &self.span
    }
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        if let Some(node) = &self.span.0 {
            node.end(None);
        }
        if let Some(previous) = self.previous.take() {
            // Only undo our own change: if guards are dropped out of order, the context
            // another guard installed is left alone.
            let ours = with_current(|c| match &self.span.0 {
                Some(node) => c.is(node),
                None => matches!(c, Current::Suppressed),
            });
            if ours {
                replace_current(previous);
            }
        }
    }
}

impl fmt::Debug for SpanGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanGuard({:?})", self.span)
    }
}

/// Options for a span about to start. Start it with [`start`](Self::start) (a guard that
/// makes it current) or [`start_detached`](Self::start_detached) (a handle you end yourself).
#[derive(Debug, Clone)]
pub struct SpanBuilder {
    pub(crate) name: Cow<'static, str>,
    pub(crate) span_type: SpanType,
    pub(crate) kind: SpanKind,
    /// `mlflow.spanFunctionName`, JSON-encoded (set by `#[trace]`).
    pub(crate) function_json: Option<&'static str>,
    pub(crate) attributes: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    pub(crate) inputs: Option<String>,
    pub(crate) start_time_ns: Option<u64>,
    pub(crate) sampling_ratio: Option<f64>,
    pub(crate) links: Vec<Link>,
}

/// Options for a span named `name`.
pub fn span(name: impl Into<Cow<'static, str>>) -> SpanBuilder {
    SpanBuilder {
        name: name.into(),
        span_type: SpanType::Unknown,
        kind: SpanKind::Internal,
        function_json: None,
        attributes: Vec::new(),
        inputs: None,
        start_time_ns: None,
        sampling_ratio: None,
        links: Vec::new(),
    }
}

/// Starts a span named `name` as a child of the current span (or as the root of a new trace)
/// and makes it current until the returned guard is dropped.
///
/// ```
/// let span = tracelake::start_span("retrieve");
/// span.set_inputs(&serde_json::json!({"query": "rust tracing"}));
/// span.set_outputs(&["doc-1", "doc-2"]);
/// ```
pub fn start_span(name: impl Into<Cow<'static, str>>) -> SpanGuard {
    span(name).start()
}

/// The span current here, if one is recording.
pub fn current_span() -> Option<LiveSpan> {
    with_current(|c| match c {
        Current::Span(node) => Some(LiveSpan::from_node(node.clone())),
        _ => None,
    })
}

impl SpanBuilder {
    pub fn span_type(mut self, span_type: impl Into<SpanType>) -> Self {
        self.span_type = span_type.into();
        self
    }

    /// OpenTelemetry span kind (default INTERNAL).
    pub fn kind(mut self, kind: SpanKind) -> Self {
        self.kind = kind;
        self
    }

    pub fn attribute<T: Serialize + ?Sized>(mut self, key: impl Into<Cow<'static, str>>, value: &T) -> Self {
        self.attributes.push((key.into(), encode_attribute(value).into()));
        self
    }

    pub fn inputs<T: Serialize + ?Sized>(mut self, inputs: &T) -> Self {
        self.inputs = Some(encode_attribute(inputs));
        self
    }

    /// Start time in nanoseconds since the Unix epoch (default: now).
    pub fn start_time_ns(mut self, ns: u64) -> Self {
        self.start_time_ns = Some(ns);
        self
    }

    /// Samples this span's trace with `ratio` in [0, 1] instead of the configured ratio
    /// (only matters when the span is a root).
    pub fn sampling_ratio(mut self, ratio: f64) -> Self {
        self.sampling_ratio = Some(ratio.clamp(0.0, 1.0));
        self
    }

    pub fn link(mut self, link: Link) -> Self {
        self.links.push(link);
        self
    }

    /// Starts the span and makes it current until the guard is dropped.
    pub fn start(self) -> SpanGuard {
        if !config::is_enabled() {
            return SpanGuard { span: LiveSpan::noop(), previous: None };
        }
        let parent = with_current(Current::clone);
        match start_node(&parent, self) {
            Started::Span(node) => {
                let previous = Some(replace_current(Current::Span(node.clone())));
                SpanGuard { span: LiveSpan::from_node(node), previous }
            }
            Started::Unsampled => {
                let previous = Some(replace_current(Current::Suppressed));
                SpanGuard { span: LiveSpan::noop(), previous }
            }
            Started::Noop => SpanGuard { span: LiveSpan::noop(), previous: None },
        }
    }

    /// Starts the span without making it current; end it with [`LiveSpan::end`].
    pub fn start_detached(self) -> LiveSpan {
        if !config::is_enabled() {
            return LiveSpan::noop();
        }
        let parent = with_current(Current::clone);
        match start_node(&parent, self) {
            Started::Span(node) => LiveSpan::from_node(node),
            Started::Unsampled | Started::Noop => LiveSpan::noop(),
        }
    }
}

pub(crate) enum Started {
    Span(Arc<SpanNode>),
    /// A root that the sampler dropped: its whole subtree records nothing.
    Unsampled,
    /// Inside a suppressed subtree.
    Noop,
}

/// Starts a span under `parent` (the current context), or a new trace when there is none.
pub(crate) fn start_node(parent: &Current, b: SpanBuilder) -> Started {
    let (trace, parent_id) = match parent {
        Current::Suppressed => return Started::Noop,
        // A span that has ended cannot be a parent: its trace may be complete already.
        Current::Span(p) if !p.is_ended() => (p.trace.clone(), Some(p.span_id)),
        Current::Span(_) | Current::None => match ActiveTrace::start_root(b.sampling_ratio) {
            Some(trace) => (trace, None),
            None => return Started::Unsampled,
        },
    };
    Started::Span(new_node(trace, parent_id, b))
}

/// Creates a span in `trace` and registers it as open there.
pub(crate) fn new_node(trace: Arc<ActiveTrace>, parent_id: Option<SpanId>, b: SpanBuilder) -> Arc<SpanNode> {
    let span_id = if parent_id.is_none() { trace.root_span_id } else { SpanId::random() };
    let mut data = SpanData {
        name: b.name,
        kind: b.kind,
        span_type: b.span_type,
        start_ns: b.start_time_ns.unwrap_or_else(now_ns),
        function_json: b.function_json,
        inputs: b.inputs.map(Cow::Owned),
        outputs: None,
        attributes: Attributes::new(),
        events: Vec::new(),
        links: b.links,
        status: SpanStatus::default(),
        log_level: None,
        has_exception: false,
        ended: false,
    };
    for (k, v) in b.attributes {
        data.set(k, v);
    }
    let data = Mutex::new(data);
    let owner = trace.clone();
    owner.open_span(move |slot| {
        Arc::new(SpanNode {
            trace,
            span_id,
            parent_id,
            slot,
            open_index: AtomicUsize::new(usize::MAX),
            ended: AtomicBool::new(false),
            data,
        })
    })
}
