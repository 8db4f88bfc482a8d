//! Which span is current, and how that follows the code across calls, `.await`s, tasks and
//! threads.
//!
//! The current span lives in a thread-local slot. Sync code needs nothing more: a span guard
//! makes its span current and restores the previous one when dropped. Async code moves between
//! threads and interleaves with other tasks on one thread, so a future must carry its own
//! context: [`WithContext`] installs the future's context before every poll and, when the poll
//! returns, saves whatever the future left current (a guard opened inside it, say) and puts
//! the thread's previous context back. `#[trace]` on an `async fn` does this by itself; for
//! `tokio::spawn` and `std::thread::spawn`, which carry no context, capture it explicitly:
//!
//! ```
//! use tracelake::{Context, FutureExt};
//!
//! # async fn demo() {
//! let _root = tracelake::start_span("request");
//! // a task: the future runs inside the context current here
//! let task = async { let _child = tracelake::start_span("task"); }.in_current_context();
//! // a thread: the closure runs inside the context current here
//! let job = Context::current().wrap(|| { let _child = tracelake::start_span("job"); });
//! std::thread::spawn(job).join().unwrap();
//! task.await;
//! # }
//! ```

use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use crate::destination::Route;
use crate::span::{LiveSpan, SpanNode};

/// What is current on a thread or in a future.
#[derive(Clone, Default)]
pub(crate) enum Current {
    /// No span: the next span starts a new trace.
    #[default]
    None,
    /// Spans started now are children of this one.
    Span(Arc<SpanNode>),
    /// Inside an unsampled or disabled trace: spans started now record nothing.
    Suppressed,
}

impl Current {
    pub(crate) fn is(&self, node: &Arc<SpanNode>) -> bool {
        matches!(self, Current::Span(n) if Arc::ptr_eq(n, node))
    }

    /// The same context (the same span, or both empty, or both suppressed).
    fn same(&self, other: &Current) -> bool {
        match (self, other) {
            (Current::Span(a), Current::Span(b)) => Arc::ptr_eq(a, b),
            (Current::None, Current::None) | (Current::Suppressed, Current::Suppressed) => true,
            _ => false,
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Current> = const { RefCell::new(Current::None) };
}

/// Makes `next` current on this thread and returns what was current. While the thread's
/// locals are being destroyed there is no context: nothing is current and nothing is kept.
pub(crate) fn replace_current(next: Current) -> Current {
    CURRENT.try_with(|c| std::mem::replace(&mut *c.borrow_mut(), next)).unwrap_or_default()
}

/// Runs `f` on what is current on this thread.
pub(crate) fn with_current<R>(f: impl FnOnce(&Current) -> R) -> R {
    let mut f = Some(f);
    let out = CURRENT.try_with(|c| (f.take().expect("called once"))(&c.borrow()));
    match (out, f) {
        (Ok(r), _) => r,
        (Err(_), Some(f)) => f(&Current::None),
        (Err(_), None) => unreachable!("the closure runs only when the local is alive"),
    }
}

/// A captured tracing context: the span that is current at some point, and the context-local
/// destination (see [`crate::Destination::scope`]), to be made current again elsewhere (another
/// thread, a spawned task), so new traces started there go where the spawning code's would.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Context {
    current: Current,
    destination: Option<Arc<Route>>,
}

impl Context {
    /// The context current on this thread (inside a traced future, that future's context).
    pub fn current() -> Context {
        Context { current: with_current(Current::clone), destination: crate::destination::local_route() }
    }

    /// A context with no current span: spans started in it begin new traces.
    pub fn empty() -> Context {
        Context::default()
    }

    /// The context in which `span` is current.
    pub fn with_span(span: &LiveSpan) -> Context {
        Context {
            current: span.node().map_or(Current::Suppressed, |n| Current::Span(n.clone())),
            destination: None,
        }
    }

    /// The span current in this context, if any.
    pub fn span(&self) -> Option<LiveSpan> {
        match &self.current {
            Current::Span(node) => Some(LiveSpan::from_node(node.clone())),
            _ => None,
        }
    }

    /// Makes this context current on this thread until the guard is dropped.
    pub fn attach(self) -> ContextGuard {
        let attached = self.current.clone();
        let destination = self.destination.map(crate::destination::push_local);
        ContextGuard {
            previous: Some(replace_current(self.current)),
            attached,
            destination,
            _not_send: PhantomData,
        }
    }

    /// Wraps a closure so that it runs in this context, wherever it is called (typically as
    /// the body of `std::thread::spawn`).
    pub fn wrap<F, R>(self, f: F) -> impl FnOnce() -> R
    where
        F: FnOnce() -> R,
    {
        move || {
            let _guard = self.attach();
            f()
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.current {
            Current::None => f.write_str("Context(none)"),
            Current::Suppressed => f.write_str("Context(suppressed)"),
            Current::Span(node) => write!(f, "Context(span {} of {})", node.span_id, node.trace.otel_id),
        }
    }
}

/// Restores the previously current context when dropped. Tied to its thread.
#[must_use = "the context is detached again when the guard is dropped"]
pub struct ContextGuard {
    previous: Option<Current>,
    attached: Current,
    /// The id of the context-local destination it installed, if any.
    destination: Option<u64>,
    _not_send: PhantomData<*const ()>,
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        if let Some(id) = self.destination.take() {
            crate::destination::pop_local(id);
        }
        // Only undo our own change: when guards are dropped out of order, the context another
        // guard installed is left alone.
        if let Some(previous) = self.previous.take()
            && with_current(|c| c.same(&self.attached))
        {
            replace_current(previous);
        }
    }
}

impl std::fmt::Debug for ContextGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContextGuard")
    }
}

pin_project_lite::pin_project! {
    /// A future that runs inside its own tracing context (see the module docs).
    #[must_use = "futures do nothing unless polled"]
    pub struct WithContext<F> {
        #[pin]
        inner: F,
        context: Current,
        // Only futures given a captured `Context` carry a destination; `#[trace]`'s own
        // wrapper does not, and pays nothing for it.
        destination: Option<Arc<Route>>,
    }
}

impl<F> WithContext<F> {
    pub(crate) fn new(inner: F, context: Current) -> Self {
        Self { inner, context, destination: None }
    }
}

/// Puts the thread's context back even when the inner poll panics, so one task's panic never
/// leaves its span current for the next task on the thread.
struct PollScope<'a> {
    saved: &'a mut Current,
    thread_previous: Option<Current>,
}

impl<'a> PollScope<'a> {
    fn enter(saved: &'a mut Current) -> Self {
        let thread_previous = Some(replace_current(std::mem::take(saved)));
        Self { saved, thread_previous }
    }
}

impl Drop for PollScope<'_> {
    fn drop(&mut self) {
        let previous = self.thread_previous.take().unwrap_or_default();
        *self.saved = replace_current(previous);
    }
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _destination =
            this.destination.clone().map(|route| PopLocal(crate::destination::push_local(route)));
        let _scope = PollScope::enter(this.context);
        this.inner.poll(cx)
    }
}

/// Removes a destination installed for one poll, even when the poll panics.
struct PopLocal(u64);

impl Drop for PopLocal {
    fn drop(&mut self) {
        crate::destination::pop_local(self.0);
    }
}

impl<F> std::fmt::Debug for WithContext<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WithContext")
    }
}

/// Runs futures inside a tracing context.
pub trait FutureExt: Future + Sized {
    /// Runs this future inside `context`.
    fn with_context(self, context: Context) -> WithContext<Self> {
        WithContext { inner: self, context: context.current, destination: context.destination }
    }

    /// Runs this future inside the context current now: use it on futures handed to
    /// `tokio::spawn` (or any executor) so their spans nest under the spawning span.
    fn in_current_context(self) -> WithContext<Self> {
        self.with_context(Context::current())
    }
}

impl<F: Future> FutureExt for F {}
