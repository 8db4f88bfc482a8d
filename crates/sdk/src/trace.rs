//! Traces in progress, their completion, and the buffer of recently finished traces.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tracelake_model::summary::{Role, aggregate_token_usage, preview, truncate_chars};
use tracelake_model::{
    Span, SpanId, StatusCode, Trace, TraceId, TraceInfo, TraceLocation, TraceState as State,
    encode_attribute, keys, limits, metadata_keys, tag_keys,
};

use crate::config;
use crate::destination::Route;
use crate::provider::ProviderInner;
use crate::span::{RawSpan, SpanNode};

/// Shared state of one trace while its spans are recorded.
pub(crate) struct ActiveTrace {
    pub(crate) otel_id: TraceId,
    /// `tr-<32 hex>`, formatted on first use.
    mlflow_id: OnceLock<String>,
    pub(crate) root_span_id: SpanId,
    /// Fixed when the root starts: the pipeline that exports the trace...
    pub(crate) provider: Arc<ProviderInner>,
    /// ... and the destination it goes to.
    pub(crate) route: Arc<Route>,
    /// When the root started, nanoseconds since the Unix epoch (for the in-progress timeout).
    started_ns: u64,
    inner: Mutex<TraceInner>,
}

#[derive(Default)]
struct TraceInner {
    /// Spans started and not yet ended (few at a time: the depth of the call stack).
    open: Vec<Arc<SpanNode>>,
    finished: SpanChunks,
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
        let provider = crate::provider::global();
        let otel_id = TraceId::random();
        let ratio = sampling_ratio.unwrap_or(provider.sampling_ratio);
        if !config::sampled(otel_id, ratio) {
            return None;
        }
        let trace = Arc::new(ActiveTrace {
            otel_id,
            mlflow_id: OnceLock::new(),
            root_span_id: SpanId::random(),
            provider,
            route: crate::destination::current_route(),
            started_ns: crate::span::now_ns(),
            inner: Mutex::new(TraceInner::default()),
        });
        registry::insert(&trace);
        Some(trace)
    }

    /// The MLflow trace id (`tr-<32 hex>`).
    pub(crate) fn mlflow_id(&self) -> &str {
        self.mlflow_id.get_or_init(|| mlflow_trace_id(self.otel_id, &self.route.location))
    }

    /// Registers a span as open, giving it the next slot in start order: `make` builds the
    /// node for that slot.
    /// A span started after the trace completed is not registered; it counts as late when
    /// it ends.
    pub(crate) fn open_span(&self, make: impl FnOnce(usize) -> Arc<SpanNode>) -> Arc<SpanNode> {
        let mut inner = self.inner.lock();
        let node = make(inner.finished.reserve());
        if !inner.completed {
            node.open_index.store(inner.open.len(), Ordering::Relaxed);
            inner.open.push(node.clone());
        }
        node
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
    pub(crate) fn finish_span(self: &Arc<Self>, node: &Arc<SpanNode>, span: RawSpan) {
        let is_root = span.parent_id.is_none();
        let completed = {
            let mut inner = self.inner.lock();
            // O(1) removal: the node knows its index, and the one moved into its place learns its
            // new index (both under this lock).
            let pos = node.open_index.load(Ordering::Relaxed);
            if inner.open.get(pos).is_some_and(|n| Arc::ptr_eq(n, node)) {
                inner.open.swap_remove(pos);
                if let Some(moved) = inner.open.get(pos) {
                    moved.open_index.store(pos, Ordering::Relaxed);
                }
            }
            if inner.completed {
                drop(inner);
                self.provider.pipeline.count_late_span();
                return;
            }
            inner.finished.fill(node.slot, span);
            inner.root_ended |= is_root;
            if inner.root_ended && inner.open.is_empty() {
                inner.completed = true;
                Some((std::mem::take(&mut inner.finished), std::mem::take(&mut inner.updates)))
            } else {
                None
            }
        };
        if is_root {
            last_active::set(self.otel_id);
        }
        if let Some((spans, updates)) = completed {
            registry::remove(self.otel_id);
            let pipeline = &self.provider.pipeline;
            pipeline.submit(FinishedTrace::new(self, spans, updates));
            // Without async logging, the root span's end waits for the export, as in MLflow.
            if !self.provider.async_export && !crate::pipeline::on_export_worker() {
                let _ = pipeline.flush(self.provider.flush_timeout);
            }
        }
    }

    /// Ends every open span of the trace with an exception event and status ERROR, children
    /// first: what happens to a trace that runs past the in-progress timeout.
    fn force_end(self: &Arc<Self>, kind: &str, message: &str) {
        let mut open = self.inner.lock().open.clone();
        open.sort_by_key(|n| n.parent_id.is_none()); // the root last
        let now = crate::span::now_ns();
        for node in open {
            let span = crate::span::LiveSpan::from_node(node.clone());
            span.record_exception(kind, message, None);
            node.end(Some(now));
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
        self.0.mlflow_id()
    }

    pub fn otel_trace_id(&self) -> TraceId {
        self.0.otel_id
    }

    /// Sets a tag. Tags the server owns (`mlflow.user`, `mlflow.artifactLocation`,
    /// `mlflow.trace.spansLocation`, ...) are refused, as MLflow refuses them.
    pub fn set_tag(&self, key: impl Into<String>, value: impl Into<String>) -> bool {
        let (key, value) = (key.into(), value.into());
        if tag_keys::IMMUTABLE.contains(&key.as_str()) {
            tracing::warn!(target: "tracelake", "tag {key:?} is set by the server and cannot be changed; ignored");
            return false;
        }
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
        write!(f, "TraceHandle({})", self.0.mlflow_id())
    }
}

/// Spans of a trace in progress, in start order: a span takes the next slot when it starts and
/// fills it when it ends, so the trace comes out ordered without sorting. Slots live in chunks,
/// so a trace of many spans never makes the application thread copy (or map fresh pages for)
/// one big, growing array.
#[derive(Default)]
pub(crate) struct SpanChunks {
    first: Vec<Option<RawSpan>>,
    rest: Vec<Vec<Option<RawSpan>>>,
    filled: usize,
}

impl SpanChunks {
    const FIRST: usize = 8;
    const CHUNK: usize = 64;

    fn reserve(&mut self) -> usize {
        if self.first.capacity() == 0 {
            self.first.reserve_exact(Self::FIRST);
        }
        if self.first.len() < Self::FIRST {
            self.first.push(None);
            return self.first.len() - 1;
        }
        match self.rest.last_mut() {
            Some(chunk) if chunk.len() < Self::CHUNK => chunk.push(None),
            _ => {
                let mut chunk = Vec::with_capacity(Self::CHUNK);
                chunk.push(None);
                self.rest.push(chunk);
            }
        }
        Self::FIRST + (self.rest.len() - 1) * Self::CHUNK + self.rest.last().map_or(0, Vec::len) - 1
    }

    fn fill(&mut self, slot: usize, span: RawSpan) {
        let place = if slot < Self::FIRST {
            self.first.get_mut(slot)
        } else {
            let i = slot - Self::FIRST;
            self.rest.get_mut(i / Self::CHUNK).and_then(|c| c.get_mut(i % Self::CHUNK))
        };
        if let Some(place) = place {
            self.filled += usize::from(place.is_none());
            *place = Some(span);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.filled
    }

    fn into_vec(self) -> Vec<RawSpan> {
        let mut all = Vec::with_capacity(self.filled);
        all.extend(self.first.into_iter().flatten());
        self.rest.into_iter().for_each(|chunk| all.extend(chunk.into_iter().flatten()));
        all
    }
}

/// A trace whose spans have all ended, on its way to the export worker, which turns it into a
/// [`Trace`] (previews, token usage, metadata): the application thread that ended the root
/// pays only for handing it over.
pub(crate) struct FinishedTrace {
    pub(crate) span_count: usize,
    pub(crate) route: Arc<Route>,
    raw: RawTrace,
}

struct RawTrace {
    trace_id: TraceId,
    root_span_id: SpanId,
    location: Arc<TraceLocation>,
    spans: SpanChunks,
    updates: TraceUpdates,
}

impl FinishedTrace {
    fn new(state: &ActiveTrace, spans: SpanChunks, updates: TraceUpdates) -> Self {
        FinishedTrace {
            span_count: spans.len(),
            route: state.route.clone(),
            raw: RawTrace {
                trace_id: state.otel_id,
                root_span_id: state.root_span_id,
                location: state.route.location.clone(),
                spans,
                updates,
            },
        }
    }

    pub(crate) fn build(self) -> (Trace, Arc<Route>) {
        (self.raw.build(), self.route)
    }
}

impl RawTrace {
    fn build(self) -> Trace {
        let RawTrace { trace_id, root_span_id, location, spans, updates } = self;
        let mlflow_id = mlflow_trace_id(trace_id, &location);
        // The id's characters (`tr-`, hex digits, a lake schema's word characters) need no escaping: the JSON string is the id in quotes.
        let request_id_json: Arc<str> = format!("\"{mlflow_id}\"").into();
        let spans: Vec<Span> =
            spans.into_vec().into_iter().map(|s| s.into_span(trace_id, &request_id_json)).collect();
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
            tags.insert(tag_keys::TRACE_NAME.to_owned(), root.name.to_string());
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
            trace_location: TraceLocation::clone(&location),
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

/// `tr-<hex>` for experiment traces, `trace:/<catalog>.<schema>/<hex>` for lake traces.
fn mlflow_trace_id(id: TraceId, location: &TraceLocation) -> String {
    match location {
        TraceLocation::UcSchema { catalog_name, schema_name, .. } => {
            id.to_mlflow_v4(&format!("{catalog_name}.{schema_name}"))
        }
        _ => id.to_mlflow_v3(),
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

/// Hashes trace ids by their low bits: the ids are random, so that is a perfect hash, and
/// far cheaper than SipHash on the hot path.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 ^= n as u64;
    }
}

type IdMap<V> = HashMap<TraceId, V, BuildHasherDefault<IdHasher>>;

/// Traces in progress by id, for the client API (which names traces by id).
pub(crate) mod registry {
    use super::*;

    const SHARDS: usize = 16;
    type Shard = Mutex<IdMap<Arc<ActiveTrace>>>;

    fn shards() -> &'static [Shard; SHARDS] {
        static SHARDS_: OnceLock<[Shard; SHARDS]> = OnceLock::new();
        SHARDS_.get_or_init(|| std::array::from_fn(|_| Mutex::new(IdMap::default())))
    }

    fn shard(id: TraceId) -> &'static Shard {
        &shards()[((id.to_u128() >> 64) as usize) % SHARDS]
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

    pub(crate) fn contains(id: TraceId) -> bool {
        shard(id).lock().contains_key(&id)
    }

    /// Force-ends traces in progress for longer than `timeout`, and the oldest ones beyond
    /// `max_active`, so a span nobody ends cannot hold its trace (and memory) forever. They are
    /// exported with their open spans in ERROR, not dropped.
    ///
    /// Only the traces of pipeline `pipeline` are considered: each provider has its own timeout.
    pub(crate) fn sweep(pipeline: usize, now_ns: u64, timeout: Duration, max_active: usize) -> usize {
        let deadline = now_ns.saturating_sub(timeout.as_nanos().min(u128::from(u64::MAX)) as u64);
        let ours = |t: &&Arc<ActiveTrace>| t.provider.pipeline.id() == pipeline;
        let mut expired = Vec::new();
        let mut all: Vec<(u64, Arc<ActiveTrace>)> = Vec::new();
        let mut total = 0;
        for shard in shards() {
            let shard = shard.lock();
            total += shard.values().filter(ours).count();
            expired.extend(shard.values().filter(ours).filter(|t| t.started_ns < deadline).cloned());
        }
        if total > max_active {
            for shard in shards() {
                all.extend(shard.lock().values().filter(ours).map(|t| (t.started_ns, t.clone())));
            }
            all.sort_by_key(|(started, _)| *started);
            all.truncate(total - max_active);
        }
        let count = expired.len() + all.len();
        let secs = timeout.as_secs();
        for trace in expired {
            trace.force_end(
                "TimeoutError",
                &format!("trace did not finish within {secs} s; its open spans were ended"),
            );
        }
        for (_, trace) in all {
            trace.force_end(
                "TooManyTracesInProgress",
                &format!("more than {max_active} traces were in progress; the oldest were ended"),
            );
        }
        count
    }
}

/// The most recently finished traces, for [`get_trace`].
pub(crate) mod recent {
    use super::*;

    /// Bound on the spans the local buffer holds, whatever the number of traces.
    pub(crate) const MAX_BUFFERED_SPANS: usize = 32_768;

    struct Recent {
        by_id: IdMap<Arc<Trace>>,
        order: VecDeque<TraceId>,
        spans: usize,
    }

    fn recent() -> &'static Mutex<Recent> {
        static RECENT: OnceLock<Mutex<Recent>> = OnceLock::new();
        RECENT
            .get_or_init(|| Mutex::new(Recent { by_id: IdMap::default(), order: VecDeque::new(), spans: 0 }))
    }

    /// Keeps the latest traces, at most `MLFLOW_TRACE_BUFFER_MAX_SIZE` of them and at most
    /// [`MAX_BUFFERED_SPANS`] spans in all, so a run of huge traces cannot hold on to memory.
    /// Called by the export worker, so evicted traces are freed there.
    pub(crate) fn insert(traces: &[Arc<Trace>]) {
        let capacity = config::trace_buffer_size();
        if capacity == 0 {
            return;
        }
        let mut evicted = Vec::new();
        let mut r = recent().lock();
        for trace in traces {
            let Some(id) = trace.spans.first().map(|s| s.trace_id) else { continue };
            while !r.order.is_empty()
                && (r.order.len() >= capacity || r.spans + trace.spans.len() > MAX_BUFFERED_SPANS)
            {
                if let Some(old) = r.order.pop_front().and_then(|old| r.by_id.remove(&old)) {
                    r.spans -= old.spans.len();
                    evicted.push(old);
                }
            }
            r.order.push_back(id);
            r.spans += trace.spans.len();
            if let Some(replaced) = r.by_id.insert(id, trace.clone()) {
                r.spans -= replaced.spans.len();
            }
        }
        drop(r);
        drop(evicted); // outside the lock
    }

    pub(super) fn get(id: TraceId) -> Option<Arc<Trace>> {
        recent().lock().by_id.get(&id).cloned()
    }
}

/// A recently finished trace from the local buffer (the last `MLFLOW_TRACE_BUFFER_MAX_SIZE`
/// traces, 1000 by default, and no more than 32,768 spans in all), by MLflow id (`tr-...`)
/// or hex OpenTelemetry id.
///
/// The buffer is filled as traces are exported; a trace that finished a moment ago and is not
/// there yet is waited for (a flush of the installed provider). Traces dropped because the
/// export queue was full are not in it.
pub fn get_trace(trace_id: &str) -> Option<Arc<Trace>> {
    let id = TraceId::from_mlflow(trace_id).ok()?;
    recent::get(id).or_else(|| {
        // Wait (briefly) only when the trace may be on its way: finished, not in progress,
        // traces queued, and not on the export worker itself.
        if registry::contains(id) || crate::pipeline::on_export_worker() {
            return None;
        }
        let provider = crate::provider::global();
        if provider.pipeline.stats().queued_spans == 0 {
            return None;
        }
        let _ = provider.pipeline.sync(GET_TRACE_WAIT);
        recent::get(id)
    })
}

/// How long [`get_trace`] waits for queued traces to be exported.
const GET_TRACE_WAIT: Duration = Duration::from_secs(1);

mod last_active {
    use super::*;

    thread_local! {
        static IN_THREAD: Cell<Option<TraceId>> = const { Cell::new(None) };
    }
    static GLOBAL: Mutex<Option<TraceId>> = Mutex::new(None);

    pub(super) fn set(id: TraceId) {
        let _ = IN_THREAD.try_with(|t| t.set(Some(id)));
        *GLOBAL.lock() = Some(id);
    }

    pub(super) fn get_global() -> Option<String> {
        GLOBAL.lock().map(TraceId::to_mlflow_v3)
    }

    pub(super) fn get_in_thread() -> Option<String> {
        IN_THREAD.try_with(|t| t.get().map(TraceId::to_mlflow_v3)).ok().flatten()
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
