//! Traces in progress, their completion, and the buffer of recently finished traces.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tracelake_model::summary::{Role, aggregate_token_usage, preview, truncate_chars};
use tracelake_model::{
    Span, SpanId, StatusCode, Trace, TraceId, TraceInfo, TraceLocation, TraceState as State,
    encode_attribute, keys, limits, metadata_keys, tag_keys,
};

use crate::config;
use crate::provider::{self, ProviderInner};
use crate::span::SpanNode;

/// Shared state of one trace while its spans are recorded.
pub(crate) struct ActiveTrace {
    pub(crate) otel_id: TraceId,
    /// `tr-<32 hex>`.
    pub(crate) mlflow_id: String,
    /// `mlflow_id` JSON-encoded, as every span carries it under `mlflow.traceRequestId`.
    pub(crate) request_id_json: String,
    pub(crate) root_span_id: SpanId,
    /// Fixed when the root starts: where the trace goes.
    pub(crate) provider: Arc<ProviderInner>,
    pub(crate) location: TraceLocation,
    inner: Mutex<TraceInner>,
}

#[derive(Default)]
struct TraceInner {
    /// Spans started and not yet ended (few at a time: the depth of the call stack).
    open: Vec<Arc<SpanNode>>,
    finished: Vec<Span>,
    root_ended: bool,
    completed: bool,
    updates: TraceUpdates,
}

/// What users set on a trace while it runs.
#[derive(Default, Clone)]
struct TraceUpdates {
    tags: BTreeMap<String, String>,
    metadata: BTreeMap<String, String>,
    client_request_id: Option<String>,
    request_preview: Option<String>,
    response_preview: Option<String>,
    state: Option<State>,
}

impl ActiveTrace {
    /// Starts a new trace under the global provider; `None` when the sampler drops it.
    pub(crate) fn start_root(sampling_ratio: Option<f64>) -> Option<Arc<ActiveTrace>> {
        let provider = provider::global();
        let otel_id = TraceId::random();
        let ratio = sampling_ratio.unwrap_or(provider.sampling_ratio);
        if !config::sampled(otel_id, ratio) {
            return None;
        }
        let mlflow_id = otel_id.to_mlflow_v3();
        let trace = Arc::new(ActiveTrace {
            otel_id,
            request_id_json: encode_attribute(&mlflow_id),
            mlflow_id,
            root_span_id: SpanId::random(),
            location: provider.location.clone(),
            provider,
            inner: Mutex::new(TraceInner::default()),
        });
        registry::insert(&trace);
        Some(trace)
    }

    pub(crate) fn open_span(&self, node: &Arc<SpanNode>) {
        self.inner.lock().open.push(node.clone());
    }

    /// The open span `span_id`, if any.
    pub(crate) fn open_node(&self, span_id: SpanId) -> Option<Arc<SpanNode>> {
        self.inner.lock().open.iter().find(|n| n.span_id == span_id).cloned()
    }

    /// Every open span except the root.
    pub(crate) fn open_children(&self) -> Vec<Arc<SpanNode>> {
        self.inner.lock().open.iter().filter(|n| n.parent_id.is_some()).cloned().collect()
    }

    /// Takes a finished span; completes the trace when its root and every other span have
    /// ended (a root may end before spans running on other threads do).
    pub(crate) fn finish_span(self: &Arc<Self>, node: &Arc<SpanNode>, span: Span) {
        let is_root = span.parent_id.is_none();
        let completed = {
            let mut inner = self.inner.lock();
            if let Some(pos) = inner.open.iter().position(|n| Arc::ptr_eq(n, node)) {
                inner.open.swap_remove(pos);
            }
            if inner.completed {
                drop(inner);
                self.provider.pipeline.count_late_span();
                return;
            }
            inner.finished.push(span);
            inner.root_ended |= is_root;
            if inner.root_ended && inner.open.is_empty() {
                inner.completed = true;
                Some((std::mem::take(&mut inner.finished), std::mem::take(&mut inner.updates)))
            } else {
                None
            }
        };
        if is_root {
            last_active::set(&self.mlflow_id);
        }
        if let Some((spans, updates)) = completed {
            registry::remove(self.otel_id);
            let finished = Arc::new(FinishedTrace::new(self, spans, updates));
            recent::insert(finished.clone());
            self.provider.pipeline.submit(finished);
        }
    }

    fn update(&self, f: impl FnOnce(&mut TraceUpdates)) -> bool {
        let mut inner = self.inner.lock();
        if inner.completed {
            return false;
        }
        f(&mut inner.updates);
        true
    }
}

/// A handle on a trace in progress, for trace-level updates. Updates made after the trace
/// has finished are ignored (the methods return `false`).
#[derive(Clone)]
pub struct TraceHandle(Arc<ActiveTrace>);

/// The trace the current span belongs to.
pub fn current_trace() -> Option<TraceHandle> {
    crate::span::current_span().and_then(|s| s.trace())
}

impl TraceHandle {
    pub(crate) fn new(state: Arc<ActiveTrace>) -> Self {
        Self(state)
    }

    /// The MLflow trace id (`tr-<32 hex>`).
    pub fn trace_id(&self) -> &str {
        &self.0.mlflow_id
    }

    pub fn otel_trace_id(&self) -> TraceId {
        self.0.otel_id
    }

    pub fn set_tag(&self, key: impl Into<String>, value: impl Into<String>) -> bool {
        let (key, value) = (key.into(), value.into());
        self.0.update(|u| {
            u.tags.insert(key, value);
        })
    }

    pub fn remove_tag(&self, key: &str) -> bool {
        self.0.update(|u| {
            u.tags.remove(key);
        })
    }

    pub fn set_metadata(&self, key: impl Into<String>, value: impl Into<String>) -> bool {
        let (key, value) = (key.into(), value.into());
        self.0.update(|u| {
            u.metadata.insert(key, value);
        })
    }

    pub fn set_client_request_id(&self, id: impl Into<String>) -> bool {
        let id = id.into();
        self.0.update(|u| u.client_request_id = Some(id))
    }

    /// Replaces the preview computed from the root span's inputs.
    pub fn set_request_preview(&self, preview: impl Into<String>) -> bool {
        let preview = preview.into();
        self.0.update(|u| u.request_preview = Some(preview))
    }

    /// Replaces the preview computed from the root span's outputs.
    pub fn set_response_preview(&self, preview: impl Into<String>) -> bool {
        let preview = preview.into();
        self.0.update(|u| u.response_preview = Some(preview))
    }

    /// Overrides the state derived from the root span's status (`OK` or `ERROR` only, as in
    /// MLflow; other states are ignored).
    pub fn set_state(&self, state: State) -> bool {
        matches!(state, State::Ok | State::Error) && self.0.update(|u| u.state = Some(state))
    }

    /// The conversation this trace belongs to (metadata `mlflow.trace.session`).
    pub fn set_session_id(&self, session: impl Into<String>) -> bool {
        self.set_metadata(metadata_keys::SESSION, session)
    }

    /// The end user of this trace (metadata `mlflow.trace.user`).
    pub fn set_user(&self, user: impl Into<String>) -> bool {
        self.set_metadata(metadata_keys::USER, user)
    }
}

impl std::fmt::Debug for TraceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TraceHandle({})", self.0.mlflow_id)
    }
}

/// A trace whose spans have all ended. Its [`Trace`] (with computed previews, token usage and
/// metadata) is built once, by whoever needs it first: usually the export worker, so the
/// application thread that ended the root pays only for handing it over.
pub(crate) struct FinishedTrace {
    pub(crate) otel_id: TraceId,
    pub(crate) span_count: usize,
    raw: Mutex<Option<RawTrace>>,
    built: OnceLock<Arc<Trace>>,
}

struct RawTrace {
    mlflow_id: String,
    root_span_id: SpanId,
    location: TraceLocation,
    spans: Vec<Span>,
    updates: TraceUpdates,
}

impl FinishedTrace {
    fn new(state: &ActiveTrace, spans: Vec<Span>, updates: TraceUpdates) -> Self {
        FinishedTrace {
            otel_id: state.otel_id,
            span_count: spans.len(),
            raw: Mutex::new(Some(RawTrace {
                mlflow_id: state.mlflow_id.clone(),
                root_span_id: state.root_span_id,
                location: state.location.clone(),
                spans,
                updates,
            })),
            built: OnceLock::new(),
        }
    }

    pub(crate) fn trace(&self) -> &Arc<Trace> {
        self.built.get_or_init(|| {
            let raw = self.raw.lock().take().expect("a finished trace is built exactly once");
            Arc::new(raw.build())
        })
    }
}

impl RawTrace {
    fn build(self) -> Trace {
        let RawTrace { mlflow_id, root_span_id, location, mut spans, updates } = self;
        spans.sort_by_key(|s| s.start_time_unix_nano);
        let root = spans.iter().find(|s| s.span_id == root_span_id);
        let (start_ns, end_ns) =
            root.map_or((0, 0), |r| (r.start_time_unix_nano, r.end_time_unix_nano.unwrap_or(0)));
        let root_error = root.is_some_and(|r| r.status.code == StatusCode::Error);
        let root_inputs = root.and_then(|r| r.attributes.get_raw(keys::INPUTS));
        let root_outputs = root.and_then(|r| r.attributes.get_raw(keys::OUTPUTS));

        let mut metadata = environment_metadata().clone();
        metadata.insert(metadata_keys::SCHEMA_VERSION.into(), "3".into());
        if let Some(inputs) = root_inputs {
            metadata.insert(
                metadata_keys::INPUTS.into(),
                truncate_chars(inputs, limits::MAX_TRACE_IO_METADATA_CHARS),
            );
        }
        if let Some(outputs) = root_outputs {
            metadata.insert(
                metadata_keys::OUTPUTS.into(),
                truncate_chars(outputs, limits::MAX_TRACE_IO_METADATA_CHARS),
            );
        }
        if let Some(usage) = aggregate_token_usage(&spans) {
            metadata.insert(metadata_keys::TOKEN_USAGE.into(), encode_attribute(&usage));
        }
        metadata.extend(updates.metadata);

        let mut tags = BTreeMap::new();
        if let Some(root) = root {
            tags.insert(tag_keys::TRACE_NAME.to_owned(), root.name.clone());
        }
        tags.extend(updates.tags);

        let request_preview = updates
            .request_preview
            .or_else(|| root_inputs.map(|i| preview(i, Role::User, limits::MAX_PREVIEW_CHARS)));
        let response_preview = updates
            .response_preview
            .or_else(|| root_outputs.map(|o| preview(o, Role::Assistant, limits::MAX_PREVIEW_CHARS)));

        let info = TraceInfo {
            trace_id: mlflow_id,
            client_request_id: updates.client_request_id,
            trace_location: location,
            request_time_ms: (start_ns / 1_000_000) as i64,
            execution_duration_ms: Some((end_ns.saturating_sub(start_ns) / 1_000_000) as i64),
            state: updates.state.unwrap_or(if root_error { State::Error } else { State::Ok }),
            request_preview,
            response_preview,
            trace_metadata: metadata,
            tags,
            assessments: Vec::new(),
        };
        Trace { info, spans }
    }
}

/// Metadata describing the process, resolved once (MLflow's allowlisted environment tags).
fn environment_metadata() -> &'static BTreeMap<String, String> {
    static META: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    META.get_or_init(|| {
        let mut m = BTreeMap::new();
        if let Ok(user) = std::env::var("USER").or_else(|_| std::env::var("USERNAME")) {
            m.insert(metadata_keys::MLFLOW_USER.into(), user);
        }
        if let Some(name) =
            std::env::current_exe().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        {
            m.insert(metadata_keys::SOURCE_NAME.into(), name);
        }
        m.insert(metadata_keys::SOURCE_TYPE.into(), "LOCAL".into());
        m
    })
}

/// Traces in progress by id, for the client API (which names traces by id).
pub(crate) mod registry {
    use super::*;

    const SHARDS: usize = 16;
    type Shard = Mutex<HashMap<TraceId, Arc<ActiveTrace>>>;

    fn shards() -> &'static [Shard; SHARDS] {
        static SHARDS_: OnceLock<[Shard; SHARDS]> = OnceLock::new();
        SHARDS_.get_or_init(|| std::array::from_fn(|_| Mutex::new(HashMap::new())))
    }

    fn shard(id: TraceId) -> &'static Shard {
        &shards()[(id.to_u128() as usize) % SHARDS]
    }

    pub(crate) fn insert(trace: &Arc<ActiveTrace>) {
        shard(trace.otel_id).lock().insert(trace.otel_id, trace.clone());
    }

    pub(crate) fn remove(id: TraceId) {
        shard(id).lock().remove(&id);
    }

    pub(crate) fn get(id: TraceId) -> Option<Arc<ActiveTrace>> {
        shard(id).lock().get(&id).cloned()
    }
}

/// The most recently finished traces, for [`get_trace`].
mod recent {
    use super::*;

    struct Recent {
        by_id: HashMap<TraceId, Arc<FinishedTrace>>,
        order: VecDeque<TraceId>,
    }

    fn recent() -> &'static Mutex<Recent> {
        static RECENT: OnceLock<Mutex<Recent>> = OnceLock::new();
        RECENT.get_or_init(|| Mutex::new(Recent { by_id: HashMap::new(), order: VecDeque::new() }))
    }

    pub(super) fn insert(trace: Arc<FinishedTrace>) {
        let capacity = config::trace_buffer_size();
        if capacity == 0 {
            return;
        }
        let mut r = recent().lock();
        while r.order.len() >= capacity {
            if let Some(old) = r.order.pop_front() {
                r.by_id.remove(&old);
            }
        }
        r.order.push_back(trace.otel_id);
        r.by_id.insert(trace.otel_id, trace);
    }

    pub(super) fn get(id: TraceId) -> Option<Arc<FinishedTrace>> {
        recent().lock().by_id.get(&id).cloned()
    }
}

/// A recently finished trace from the local buffer (the last `MLFLOW_TRACE_BUFFER_MAX_SIZE`
/// traces, 1000 by default), by MLflow id (`tr-...`) or hex OpenTelemetry id.
pub fn get_trace(trace_id: &str) -> Option<Arc<Trace>> {
    let id = TraceId::from_mlflow(trace_id).ok()?;
    recent::get(id).map(|f| f.trace().clone())
}

mod last_active {
    use super::*;

    thread_local! {
        static IN_THREAD: RefCell<Option<String>> = const { RefCell::new(None) };
    }
    static GLOBAL: Mutex<Option<String>> = Mutex::new(None);

    pub(super) fn set(id: &str) {
        IN_THREAD.with(|t| *t.borrow_mut() = Some(id.to_owned()));
        *GLOBAL.lock() = Some(id.to_owned());
    }

    pub(super) fn get_global() -> Option<String> {
        GLOBAL.lock().clone()
    }

    pub(super) fn get_in_thread() -> Option<String> {
        IN_THREAD.with(|t| t.borrow().clone())
    }
}

/// The id of the trace whose root span ended last in this process.
pub fn last_active_trace_id() -> Option<String> {
    last_active::get_global()
}

/// The id of the trace whose root span ended last on this thread.
pub fn last_active_trace_id_in_thread() -> Option<String> {
    last_active::get_in_thread()
}
