//! Support for the code `#[trace]` generates. Not a public API: names and shapes change
//! without notice.
//!
//! Arguments and return values are recorded with the best encoding their type allows, chosen
//! at compile time by autoref specialization: serde when the type is `Serialize`, its `Debug`
//! text otherwise, and its type name as a last resort. For `Result`s the `Ok` value is the
//! output and the `Err` value becomes an exception event with status ERROR.

use std::any::Any;
use std::borrow::Cow;
use std::fmt::{Debug, Display};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use serde::Serialize;
use tracelake_model::{SpanType, encode_attribute, write_attribute};

use crate::config;
use crate::context::{Current, WithContext, with_current};
use crate::span::{LiveSpan, SpanBuilder, SpanGuard, Started, short_type_name, start_node};

pub use crate::span::span as builder;

/// Wraps a reference for the probes below.
#[allow(missing_debug_implementations)]
pub struct Probe<'a, T: ?Sized>(pub &'a T);

/// Encodes a value into `out`: `(&&&Probe(&v)).__tl_write(out)`.
pub trait JsonViaSerialize {
    fn __tl_write(&self, out: &mut Vec<u8>);
}
impl<T: Serialize + ?Sized> JsonViaSerialize for &&Probe<'_, T> {
    fn __tl_write(&self, out: &mut Vec<u8>) {
        write_attribute(out, self.0)
    }
}
pub trait JsonViaDebug {
    fn __tl_write(&self, out: &mut Vec<u8>);
}
impl<T: Debug + ?Sized> JsonViaDebug for &Probe<'_, T> {
    fn __tl_write(&self, out: &mut Vec<u8>) {
        write_attribute(out, &format!("{:?}", self.0))
    }
}
pub trait JsonViaTypeName {
    fn __tl_write(&self, out: &mut Vec<u8>);
}
impl<T: ?Sized> JsonViaTypeName for Probe<'_, T> {
    fn __tl_write(&self, out: &mut Vec<u8>) {
        write_attribute(out, &format!("<{}>", std::any::type_name::<T>()))
    }
}

/// Encodes a return value as outputs (`None` for an `Err`): `(&&&&&Probe(&r)).__tl_output()`.
pub trait OutputViaResultSerialize {
    fn __tl_output(&self) -> Option<String>;
}
impl<T: Serialize, E> OutputViaResultSerialize for &&&&Probe<'_, Result<T, E>> {
    fn __tl_output(&self) -> Option<String> {
        self.0.as_ref().ok().map(encode_attribute)
    }
}
pub trait OutputViaResult {
    fn __tl_output(&self) -> Option<String>;
}
impl<T, E> OutputViaResult for &&&Probe<'_, Result<T, E>> {
    fn __tl_output(&self) -> Option<String> {
        self.0.as_ref().ok().map(|_| encode_attribute(&format!("<{}>", std::any::type_name::<T>())))
    }
}
pub trait OutputViaSerialize {
    fn __tl_output(&self) -> Option<String>;
}
impl<T: Serialize + ?Sized> OutputViaSerialize for &&Probe<'_, T> {
    fn __tl_output(&self) -> Option<String> {
        Some(encode_attribute(self.0))
    }
}
pub trait OutputViaDebug {
    fn __tl_output(&self) -> Option<String>;
}
impl<T: Debug + ?Sized> OutputViaDebug for &Probe<'_, T> {
    fn __tl_output(&self) -> Option<String> {
        Some(encode_attribute(&format!("{:?}", self.0)))
    }
}
pub trait OutputViaTypeName {
    fn __tl_output(&self) -> Option<String>;
}
impl<T: ?Sized> OutputViaTypeName for Probe<'_, T> {
    fn __tl_output(&self) -> Option<String> {
        Some(encode_attribute(&format!("<{}>", std::any::type_name::<T>())))
    }
}

/// An error a traced function returned.
#[derive(Debug)]
pub struct ErrorInfo {
    kind: String,
    message: String,
    stacktrace: Option<String>,
}

/// Finds the error in a return value: `(&&&&Probe(&r)).__tl_error()`.
pub trait ErrorViaDisplay {
    fn __tl_error(&self) -> Option<ErrorInfo>;
}
impl<T, E: Display + Debug> ErrorViaDisplay for &&&Probe<'_, Result<T, E>> {
    fn __tl_error(&self) -> Option<ErrorInfo> {
        self.0.as_ref().err().map(|e| ErrorInfo {
            kind: short_type_name(std::any::type_name::<E>()),
            message: e.to_string(),
            stacktrace: Some(format!("{e:?}")),
        })
    }
}
pub trait ErrorViaDebug {
    fn __tl_error(&self) -> Option<ErrorInfo>;
}
impl<T, E: Debug> ErrorViaDebug for &&Probe<'_, Result<T, E>> {
    fn __tl_error(&self) -> Option<ErrorInfo> {
        self.0.as_ref().err().map(|e| ErrorInfo {
            kind: short_type_name(std::any::type_name::<E>()),
            message: format!("{e:?}"),
            stacktrace: None,
        })
    }
}
pub trait ErrorViaType {
    fn __tl_error(&self) -> Option<ErrorInfo>;
}
impl<T, E> ErrorViaType for &Probe<'_, Result<T, E>> {
    fn __tl_error(&self) -> Option<ErrorInfo> {
        self.0.as_ref().err().map(|_| ErrorInfo {
            kind: short_type_name(std::any::type_name::<E>()),
            message: short_type_name(std::any::type_name::<E>()),
            stacktrace: None,
        })
    }
}
pub trait ErrorNone {
    fn __tl_error(&self) -> Option<ErrorInfo>;
}
impl<T: ?Sized> ErrorNone for Probe<'_, T> {
    fn __tl_error(&self) -> Option<ErrorInfo> {
        None
    }
}

/// Builds the inputs object `{"a": 1, "b": 2}` in one buffer: `key`, then write the value
/// into `value()`.
#[derive(Debug)]
pub struct Inputs(Vec<u8>);

impl Inputs {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Inputs(Vec::with_capacity(64))
    }

    pub fn key(&mut self, name: &str) {
        self.0.extend_from_slice(if self.0.is_empty() { b"{" } else { b", " });
        write_attribute(&mut self.0, name);
        self.0.extend_from_slice(b": ");
    }

    /// Like [`key`](Self::key), for a name already JSON-encoded (`"\"query\""`).
    pub fn key_json(&mut self, name_json: &str) {
        self.0.extend_from_slice(if self.0.is_empty() { b"{" } else { b", " });
        self.0.extend_from_slice(name_json.as_bytes());
        self.0.extend_from_slice(b": ");
    }

    pub fn value(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    pub fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push(b'{');
        }
        self.0.push(b'}');
        // Keys and values are written by serde_json: valid UTF-8.
        String::from_utf8(self.0).unwrap_or_default()
    }
}

/// Starts building the span of a traced function.
pub fn fn_span(
    name: &'static str,
    function_json: &'static str,
    span_type: impl Into<SpanType>,
) -> SpanBuilder {
    let mut builder = crate::span::span(Cow::Borrowed(name)).span_type(span_type);
    builder.function_json = Some(function_json);
    builder
}

/// Sets the inputs of a span under construction from an [`Inputs`] object.
pub fn with_inputs(mut builder: SpanBuilder, inputs: Inputs) -> SpanBuilder {
    builder.inputs = Some(inputs.finish());
    builder
}

/// The span of one call of a traced function.
#[derive(Debug)]
pub struct FnSpan {
    /// Sync functions: the guard that keeps the span current during the call.
    guard: Option<SpanGuard>,
    /// Async functions: the span, made current by [`FnSpan::run_async`] on every poll.
    /// (Sync functions use the guard's.)
    span: LiveSpan,
    /// Async functions whose root the sampler dropped: the body runs suppressed, so its
    /// children do not start traces of their own.
    unsampled: bool,
    done: bool,
}

impl FnSpan {
    fn off() -> FnSpan {
        FnSpan { guard: None, span: LiveSpan::noop(), unsampled: false, done: true }
    }

    /// Whether there is any point in building a span here: tracing is on and the current
    /// trace (if any) is being recorded.
    #[inline]
    fn wanted() -> bool {
        config::is_enabled() && !with_current(|c| matches!(c, Current::Suppressed))
    }

    /// Starts the span of a sync call and makes it current; `make` only runs when tracing.
    #[inline]
    pub fn enter(make: impl FnOnce() -> SpanBuilder) -> FnSpan {
        if !Self::wanted() {
            return Self::off();
        }
        let guard = make().start();
        FnSpan { guard: Some(guard), span: LiveSpan::noop(), unsampled: false, done: false }
    }

    /// Starts the span of an async call without making it current.
    #[inline]
    pub fn start(make: impl FnOnce() -> SpanBuilder) -> FnSpan {
        if !Self::wanted() {
            return Self::off();
        }
        let parent = with_current(Current::clone);
        match start_node(&parent, make()) {
            Started::Span(node) => {
                FnSpan { guard: None, span: LiveSpan::from_node(node), unsampled: false, done: false }
            }
            Started::Unsampled => FnSpan { guard: None, span: LiveSpan::noop(), unsampled: true, done: true },
            Started::Noop => Self::off(),
        }
    }

    /// The call's span.
    fn live(&self) -> &LiveSpan {
        self.guard.as_ref().map_or(&self.span, |g| g.span())
    }

    #[inline]
    pub fn is_recording(&self) -> bool {
        !self.done && self.live().is_recording()
    }

    /// Runs the body of an async call with this span current on every poll.
    pub fn run_async<F: Future>(&self, body: F) -> TracedBody<F> {
        let context = match self.span.node() {
            Some(node) => Current::Span(node.clone()),
            None if self.unsampled => Current::Suppressed,
            None => with_current(Current::clone),
        };
        TracedBody { inner: WithContext::new(body, context), span: self.span.clone() }
    }

    /// Records the outcome of the call and ends the span.
    pub fn finish(mut self, outputs: Option<String>, error: Option<ErrorInfo>) {
        if let Some(e) = error {
            self.live().record_exception(&e.kind, &e.message, e.stacktrace.as_deref());
        }
        if !self.done {
            self.done = true;
            if let Some(node) = self.live().node() {
                node.end_with(None, outputs);
            }
        }
        self.guard.take();
    }

    /// Records a panic that is unwinding through the call.
    pub fn panicked(&self, payload: &(dyn Any + Send)) {
        record_panic(self.live(), payload);
    }

    fn end(&mut self) {
        if !self.done {
            self.done = true;
            self.live().end();
        }
        self.guard.take();
    }
}

impl Drop for FnSpan {
    fn drop(&mut self) {
        if self.is_recording() && self.guard.is_none() {
            // An async call whose future was dropped before it completed.
            self.live().add_event("cancelled", std::iter::empty::<(String, serde_json::Value)>());
        }
        self.end();
    }
}

/// Records a panic on `span` and ends it: the future or call will not finish normally.
fn record_panic(span: &LiveSpan, payload: &(dyn Any + Send)) {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".to_owned());
    span.record_exception("panic", &message, None);
    span.end();
}

/// Runs a sync body, recording a panic on `span` before letting it continue.
#[inline]
pub fn catch_sync<R>(span: &FnSpan, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => {
            span.panicked(&*payload);
            resume_unwind(payload)
        }
    }
}

pin_project_lite::pin_project! {
    /// The body of a traced async call: runs in the call's span and records panics on it.
    #[derive(Debug)]
    pub struct TracedBody<F> {
        #[pin]
        inner: WithContext<F>,
        span: LiveSpan,
    }
}

impl<F: Future> Future for TracedBody<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        match catch_unwind(AssertUnwindSafe(|| this.inner.poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                // The inner poll scope restored the thread's context as the panic passed.
                record_panic(this.span, &*payload);
                resume_unwind(payload)
            }
        }
    }
}
