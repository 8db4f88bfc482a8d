//! Where traces go, chosen without touching instrumented code.
//!
//! A trace's destination is resolved when its root span starts and never changes after, so
//! concurrent tenants never mix. The first of these that is set wins:
//!
//! 1. a context-local destination: [`Destination::scope`] for one future (an async task),
//!    [`Destination::enter`] for one thread until the guard drops;
//! 2. the global destination, [`set_destination`] ([`reset`] clears it);
//! 3. `MLFLOW_TRACING_DESTINATION` (`<experiment id>` or `<catalog>.<schema>`);
//! 4. an OTLP endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`),
//!    which replaces the MLflow destination unless `MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT=true`;
//! 5. `MLFLOW_TRACKING_URI` and the active experiment (`MLFLOW_EXPERIMENT_ID` / `_NAME`);
//! 6. the local trace directory `./tracelake-traces`, experiment `0`.
//!
//! With dual export on, an OTLP endpoint from the environment also receives the traces of
//! destinations 1–3.
//!
//! A context-local destination follows the code where a captured [`crate::Context`] goes:
//! futures handed to `tokio::spawn` with `.in_current_context()` and closures run on other
//! threads with `Context::current().wrap(...)` start their traces in the same destination.
//!
//! ```no_run
//! use tracelake::{Destination, FutureExt as _};
//!
//! # async fn handle(_: &str) {}
//! # async fn demo() {
//! // every trace of this process goes to experiment 7 on a tracelake (or MLflow) server
//! tracelake::set_destination(Destination::experiment_id("7").at("http://127.0.0.1:5000"));
//!
//! // one request of one tenant: its traces go to the tenant's experiment
//! Destination::experiment_name("tenant-42").scope(handle("hello")).await;
//!
//! // a worker thread writing to an OTLP collector
//! std::thread::spawn(|| {
//!     let _dest = Destination::otlp(tracelake::OtlpSettings::new(
//!         "http://127.0.0.1:4317",
//!         tracelake::OtlpProtocol::Grpc,
//!     ))
//!     .enter();
//!     let _span = tracelake::start_span("job");
//! });
//! # }
//! ```

use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};

use parking_lot::RwLock;
use tracelake_model::TraceLocation;

use crate::settings::{
    Auth, ConfigError, DEFAULT_TRACE_DIRECTORY, DeliverySettings, OtlpProtocol, OtlpSettings, Settings,
    TrackingUri,
};

/// An MLflow experiment, by id or by name (a name is looked up, or created, on the server
/// when the first trace is exported, as `mlflow.set_experiment` does).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExperimentRef {
    Id(String),
    Name(String),
}

/// Where traces go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Destination {
    /// An MLflow experiment at a tracking URI: a tracelake or MLflow server, or a local trace
    /// directory. Without a URI, `MLFLOW_TRACKING_URI` (else the local directory) is used.
    Experiment { experiment: ExperimentRef, tracking_uri: Option<TrackingUri> },
    /// A lake schema `catalog.schema`: written straight to the lake at `lake_root` (else
    /// `TRACELAKE_LAKE_ROOT`) by the writer [`crate::export::set_lake_writer`] installed, or
    /// without a lake root through the tracelake server at the tracking URI.
    LakeSchema { catalog: String, schema: String, lake_root: Option<String> },
    /// An OTLP endpoint: an OpenTelemetry collector, or any server that speaks OTLP.
    Otlp(OtlpSettings),
}

impl Destination {
    pub fn experiment_id(id: impl Into<String>) -> Self {
        Destination::Experiment { experiment: ExperimentRef::Id(id.into()), tracking_uri: None }
    }

    pub fn experiment_name(name: impl Into<String>) -> Self {
        Destination::Experiment { experiment: ExperimentRef::Name(name.into()), tracking_uri: None }
    }

    pub fn lake_schema(catalog: impl Into<String>, schema: impl Into<String>) -> Self {
        Destination::LakeSchema { catalog: catalog.into(), schema: schema.into(), lake_root: None }
    }

    /// The same lake schema in the lake at `root` (a directory or `s3://bucket/prefix`),
    /// written directly. Other destinations are returned unchanged.
    pub fn in_lake(self, root: impl Into<String>) -> Self {
        match self {
            Destination::LakeSchema { catalog, schema, .. } => {
                Destination::LakeSchema { catalog, schema, lake_root: Some(root.into()) }
            }
            other => other,
        }
    }

    pub fn otlp(settings: OtlpSettings) -> Self {
        Destination::Otlp(settings)
    }

    /// The same experiment at an explicit tracking URI (`http(s)://...` or a directory).
    ///
    /// # Panics
    /// When the URI is not one; use [`TrackingUri::parse`] to handle that as an error.
    pub fn at(self, tracking_uri: &str) -> Self {
        let uri = TrackingUri::parse_for("tracking_uri", tracking_uri).unwrap_or_else(|e| panic!("{e}"));
        self.at_uri(uri)
    }

    /// The same experiment at `uri`. Other destinations are returned unchanged.
    pub fn at_uri(self, uri: TrackingUri) -> Self {
        match self {
            Destination::Experiment { experiment, .. } => {
                Destination::Experiment { experiment, tracking_uri: Some(uri) }
            }
            other => other,
        }
    }

    /// Runs `future` with this destination: traces whose root span starts inside it go here.
    pub fn scope<F: Future>(self, future: F) -> Scoped<F> {
        Scoped { inner: future, route: Some(route_for(&self)) }
    }

    /// Makes this the destination of traces started on this thread until the guard drops.
    pub fn enter(self) -> DestinationGuard {
        DestinationGuard { id: push_local(route_for(&self)), _not_send: PhantomData }
    }
}

/// One concrete place spans are delivered to; the export router keeps one exporter per sink.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Sink {
    /// A tracelake or MLflow server: spans over OTLP, trace infos over the REST API.
    Server { uri: String, auth: Option<Auth> },
    /// A local trace directory.
    Directory(std::path::PathBuf),
    /// An OTLP endpoint.
    Otlp(OtlpSettings),
    /// A lake root, written directly.
    Lake(String),
    /// A destination that cannot be delivered to: its traces are dropped and counted, the
    /// problem logged (the configuration error already was, at start).
    Unusable(String),
}

/// A resolved destination: the sinks a trace goes to and the experiment it belongs to.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Route {
    pub(crate) sinks: Vec<Arc<Sink>>,
    /// `None` for OTLP-only and lake routes.
    pub(crate) experiment: Option<ExperimentRef>,
    /// Where the trace info says the trace lives (for a named experiment, a placeholder the
    /// server exporter replaces with the experiment's id).
    pub(crate) location: Arc<TraceLocation>,
    pub(crate) delivery: DeliverySettings,
    /// The resource spans sent to a tracking server carry.
    pub(crate) resource: Arc<Vec<(String, String)>>,
}

impl Route {
    fn new(sinks: Vec<Sink>, experiment: Option<ExperimentRef>, settings: &Settings) -> Self {
        let location = match &experiment {
            Some(ExperimentRef::Id(id)) => TraceLocation::experiment(id.clone()),
            _ => TraceLocation::default(),
        };
        Route {
            sinks: sinks.into_iter().map(Arc::new).collect(),
            experiment,
            location: Arc::new(location),
            delivery: settings.delivery.clone(),
            resource: settings.resource.clone(),
        }
    }
}

/// The environment's settings, read once. A bad configuration is logged once and sends every
/// trace to an unusable sink (dropped and counted); [`crate::init`] returns it as an error.
pub(crate) fn env_settings() -> &'static Result<Settings, ConfigError> {
    static SETTINGS: OnceLock<Result<Settings, ConfigError>> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let settings = Settings::from_env();
        if let Err(e) = &settings {
            tracing::error!(target: "tracelake", "tracing configuration error, traces will not be exported: {e}");
        }
        settings
    })
}

fn unusable(e: &ConfigError) -> Arc<Route> {
    Arc::new(Route::new(vec![Sink::Unusable(e.to_string())], None, &Settings::default()))
}

/// The sinks of an explicit destination under `settings`.
fn route_with(dest: &Destination, settings: &Settings) -> Route {
    let server_sink = |uri: &TrackingUri| match uri {
        TrackingUri::Server(url) => Sink::Server { uri: url.clone(), auth: settings.auth.clone() },
        TrackingUri::Directory(dir) => Sink::Directory(dir.clone()),
    };
    let default_uri = || {
        settings
            .tracking_uri
            .clone()
            .unwrap_or_else(|| TrackingUri::Directory(DEFAULT_TRACE_DIRECTORY.into()))
    };
    let mut route = match dest {
        Destination::Experiment { experiment, tracking_uri } => {
            let uri = tracking_uri.clone().unwrap_or_else(default_uri);
            Route::new(vec![server_sink(&uri)], Some(experiment.clone()), settings)
        }
        Destination::LakeSchema { catalog, schema, lake_root } => {
            let sink = match lake_root.as_ref().or(settings.lake_root.as_ref()) {
                Some(root) => Sink::Lake(root.clone()),
                None => lake_sink(catalog, schema, &default_uri(), settings),
            };
            let mut route = Route::new(vec![sink], None, settings);
            route.location = Arc::new(TraceLocation::uc_schema(catalog.clone(), schema.clone()));
            route
        }
        Destination::Otlp(otlp) => Route::new(vec![Sink::Otlp(otlp.clone())], None, settings),
    };
    if settings.dual_export
        && let Some(otlp) = &settings.otlp
        && !matches!(dest, Destination::Otlp(_))
    {
        route.sinks.push(Arc::new(Sink::Otlp(otlp.clone())));
    }
    route
}

/// How spans reach lake schema `catalog.schema`: through the tracelake server at the tracking
/// URI, over OTLP/HTTP with the table header (the server writes them to the schema's spans
/// table and derives the trace infos).
fn lake_sink(catalog: &str, schema: &str, uri: &TrackingUri, settings: &Settings) -> Sink {
    match uri {
        TrackingUri::Server(url) => {
            let mut otlp = OtlpSettings::new(
                format!("{}/v1/traces", url.trim_end_matches('/')),
                OtlpProtocol::HttpProtobuf,
            );
            otlp.headers.push((LAKE_TABLE_HEADER.into(), format!("{catalog}.{schema}.{LAKE_SPANS_TABLE}")));
            if let Some(auth) = &settings.auth {
                otlp.headers.push(("authorization".into(), auth.header_value()));
            }
            otlp.gzip = true;
            otlp.resource = settings.resource.as_ref().clone();
            Sink::Otlp(otlp)
        }
        TrackingUri::Directory(dir) => Sink::Unusable(format!(
            "lake schema {catalog}.{schema}: the tracking URI is the directory {}; lake schemas are written \
             to a lake root (TRACELAKE_LAKE_ROOT) or through a tracelake server (MLFLOW_TRACKING_URI=http://...)",
            dir.display()
        )),
    }
}

/// The header naming the lake table spans go to, and the spans table of a schema.
const LAKE_TABLE_HEADER: &str = "x-tracelake-table-name";
const LAKE_SPANS_TABLE: &str = "mlflow_experiment_trace_otel_spans";

/// The route of traces with no explicit destination: what the environment says.
fn route_from_env(settings: &Settings) -> Route {
    if let Some(dest) = &settings.destination {
        return route_with(dest, settings);
    }
    let experiment = settings.experiment.clone().unwrap_or(ExperimentRef::Id("0".into()));
    let mlflow = Destination::Experiment { experiment, tracking_uri: None };
    match &settings.otlp {
        Some(otlp) if !settings.dual_export => Route::new(vec![Sink::Otlp(otlp.clone())], None, settings),
        _ => route_with(&mlflow, settings),
    }
}

pub(crate) fn route_for(dest: &Destination) -> Arc<Route> {
    match env_settings() {
        Ok(settings) => Arc::new(route_with(dest, settings)),
        Err(e) => unusable(e),
    }
}

fn default_route() -> Arc<Route> {
    static DEFAULT: OnceLock<Arc<Route>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| match env_settings() {
            Ok(settings) => Arc::new(route_from_env(settings)),
            Err(e) => unusable(e),
        })
        .clone()
}

static GLOBAL: RwLock<Option<Arc<Route>>> = RwLock::new(None);

thread_local! {
    /// The thread's context-local destinations, innermost last, each with the id of the guard
    /// (or poll) that set it: a guard removes its own entry, whatever order guards drop in.
    static LOCAL: RefCell<Vec<(u64, Arc<Route>)>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn push_local(route: Arc<Route>) -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    LOCAL.with(|l| l.borrow_mut().push((id, route)));
    id
}

pub(crate) fn pop_local(id: u64) {
    let _ = LOCAL.try_with(|l| {
        let mut stack = l.borrow_mut();
        if let Some(i) = stack.iter().rposition(|(entry, _)| *entry == id) {
            stack.remove(i);
        }
    });
}

/// Sends the traces started from now on, in the whole process, to `destination` (a
/// context-local destination still wins where one is set).
pub fn set_destination(destination: Destination) {
    *GLOBAL.write() = Some(route_for(&destination));
}

/// Clears the global destination and this thread's context-local one: traces go where the
/// environment says again.
pub fn reset() {
    *GLOBAL.write() = None;
    LOCAL.with(|l| l.borrow_mut().clear());
}

/// The innermost context-local destination of this thread (or of the future being polled).
pub(crate) fn local_route() -> Option<Arc<Route>> {
    LOCAL.try_with(|l| l.borrow().last().map(|(_, r)| r.clone())).ok().flatten()
}

/// Where a trace whose root span starts now goes.
pub(crate) fn current_route() -> Arc<Route> {
    if let Some(route) = local_route() {
        return route;
    }
    if let Some(route) = GLOBAL.read().as_ref() {
        return route.clone();
    }
    default_route()
}

/// Restores the thread's previous context-local destination when dropped.
#[must_use = "the destination applies until the guard is dropped"]
pub struct DestinationGuard {
    id: u64,
    _not_send: PhantomData<*const ()>,
}

impl Drop for DestinationGuard {
    fn drop(&mut self) {
        pop_local(self.id);
    }
}

impl std::fmt::Debug for DestinationGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DestinationGuard")
    }
}

pin_project_lite::pin_project! {
    /// A future whose traces go to one destination (see [`Destination::scope`]).
    #[must_use = "futures do nothing unless polled"]
    pub struct Scoped<F> {
        #[pin]
        inner: F,
        route: Option<Arc<Route>>,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Installed for the poll only: the thread's own destination is back when it returns,
        // even if the poll panics.
        let _restore = this.route.clone().map(|route| Restore(push_local(route)));
        this.inner.poll(cx)
    }
}

struct Restore(u64);

impl Drop for Restore {
    fn drop(&mut self) {
        pop_local(self.0);
    }
}

impl<F> std::fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scoped")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::OtlpProtocol;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let map: std::collections::HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|name| map.get(name).cloned()).unwrap()
    }

    fn sinks(route: &Route) -> Vec<Sink> {
        route.sinks.iter().map(|s| Sink::clone(s)).collect()
    }

    #[test]
    fn the_environment_resolves_in_mlflows_order() {
        let server = "http://127.0.0.1:5000";
        let otlp = "http://127.0.0.1:4317";
        let s = settings(&[]);
        let r = route_from_env(&s);
        assert_eq!(sinks(&r), vec![Sink::Directory(DEFAULT_TRACE_DIRECTORY.into())]);
        assert_eq!(r.location.experiment_id(), Some("0"));

        let s = settings(&[("MLFLOW_TRACKING_URI", server), ("MLFLOW_EXPERIMENT_ID", "3")]);
        let r = route_from_env(&s);
        assert_eq!(sinks(&r), vec![Sink::Server { uri: server.into(), auth: None }]);
        assert_eq!(r.location.experiment_id(), Some("3"));

        // OTLP replaces the MLflow destination...
        let s = settings(&[("MLFLOW_TRACKING_URI", server), ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)]);
        let r = route_from_env(&s);
        assert_eq!(
            sinks(&r),
            vec![Sink::Otlp(OtlpSettings {
                resource: s.otlp.clone().unwrap().resource,
                ..OtlpSettings::new(otlp, OtlpProtocol::Grpc)
            })]
        );
        // ... unless dual export is on.
        let s = settings(&[
            ("MLFLOW_TRACKING_URI", server),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp),
            ("MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT", "true"),
        ]);
        let r = route_from_env(&s);
        assert_eq!(r.sinks.len(), 2);
        assert!(matches!(*r.sinks[0], Sink::Server { .. }) && matches!(*r.sinks[1], Sink::Otlp(_)));

        // MLFLOW_TRACING_DESTINATION wins over OTLP and the active experiment.
        let s = settings(&[
            ("MLFLOW_TRACKING_URI", server),
            ("MLFLOW_EXPERIMENT_ID", "3"),
            ("MLFLOW_TRACING_DESTINATION", "9"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp),
        ]);
        let r = route_from_env(&s);
        assert_eq!(sinks(&r), vec![Sink::Server { uri: server.into(), auth: None }]);
        assert_eq!(r.location.experiment_id(), Some("9"));

        // A lake schema goes through the tracking server, by the table header...
        let s = settings(&[("MLFLOW_TRACKING_URI", server), ("MLFLOW_TRACING_DESTINATION", "main.agents")]);
        let r = route_from_env(&s);
        let Sink::Otlp(otlp) = &*r.sinks[0] else { panic!("{:?}", r.sinks) };
        assert_eq!(otlp.endpoint, format!("{server}/v1/traces"));
        assert_eq!(otlp.protocol, OtlpProtocol::HttpProtobuf);
        let table = (
            "x-tracelake-table-name".to_owned(),
            "main.agents.mlflow_experiment_trace_otel_spans".to_owned(),
        );
        assert_eq!(otlp.headers, vec![table]);
        assert_eq!(r.location.type_name(), "UC_SCHEMA");
        // ... and a local tracking directory cannot take one.
        let s = settings(&[("MLFLOW_TRACKING_URI", "/tmp/x"), ("MLFLOW_TRACING_DESTINATION", "main.agents")]);
        let r = route_from_env(&s);
        assert!(matches!(&*r.sinks[0], Sink::Unusable(why) if why.contains("main.agents")));
        // A lake root wins over the server: spans are written to the lake directly.
        let s = settings(&[
            ("MLFLOW_TRACKING_URI", server),
            ("MLFLOW_TRACING_DESTINATION", "main.agents"),
            ("TRACELAKE_LAKE_ROOT", "s3://bucket/lake"),
        ]);
        let r = route_from_env(&s);
        assert_eq!(sinks(&r), vec![Sink::Lake("s3://bucket/lake".into())]);
        assert_eq!(r.location.type_name(), "UC_SCHEMA");
        let r = route_with(&Destination::lake_schema("main", "agents").in_lake("/tmp/lake"), &s);
        assert_eq!(sinks(&r), vec![Sink::Lake("/tmp/lake".into())]);
    }

    #[test]
    fn context_local_destinations_win_and_are_undone() {
        let a = Destination::experiment_id("a").at("/tmp/tracelake-dest-a");
        let b = Destination::experiment_id("b").at("/tmp/tracelake-dest-b");
        let id = |r: Arc<Route>| r.location.experiment_id().map(str::to_owned);
        {
            let _g = a.clone().enter();
            assert_eq!(id(current_route()).as_deref(), Some("a"));
            {
                let _g = b.clone().enter();
                assert_eq!(id(current_route()).as_deref(), Some("b"));
            }
            assert_eq!(id(current_route()).as_deref(), Some("a"));
        }
        // Guards dropped out of order leave no stale destination behind.
        let (ga, gb) = (a.clone().enter(), b.clone().enter());
        drop(ga);
        assert_eq!(id(current_route()).as_deref(), Some("b"));
        drop(gb);
        assert!(LOCAL.with(|l| l.borrow().is_empty()));
        let fut = b.scope(async { id(current_route()) });
        let seen = futures_lite_block_on(fut);
        assert_eq!(seen.as_deref(), Some("b"));
        assert_ne!(id(current_route()).as_deref(), Some("b"));
    }

    #[test]
    fn a_captured_context_carries_the_destination_to_tasks_and_threads() {
        use crate::{Context, FutureExt as _};
        let t = Destination::experiment_id("tenant").at("/tmp/tracelake-dest-t");
        let id = |r: Arc<Route>| r.location.experiment_id().map(str::to_owned);
        // Captured inside the tenant's scope, as a spawned task or thread would be.
        let (task, ctx) =
            futures_lite_block_on(t.scope(async {
                (async move { id(current_route()) }.in_current_context(), Context::current())
            }));
        assert_ne!(id(current_route()).as_deref(), Some("tenant"));
        assert_eq!(futures_lite_block_on(task).as_deref(), Some("tenant"));
        let seen = std::thread::spawn(ctx.wrap(move || id(current_route()))).join().unwrap();
        assert_eq!(seen.as_deref(), Some("tenant"));
        assert!(LOCAL.with(|l| l.borrow().is_empty()));
    }

    /// Polls a future that never waits to completion.
    fn futures_lite_block_on<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = TaskContext::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("the future waited"),
        }
    }
}
