//! The tracer provider: where finished traces go and how they are sampled.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::config;
use crate::export::Exporter;
use crate::export::router::Router;
use crate::pipeline::{ExportStats, FlushError, Pipeline};
use crate::settings::{ConfigError, Settings};

/// Default bound on spans waiting for export; beyond it traces are dropped and counted.
pub const DEFAULT_MAX_QUEUED_SPANS: usize = 32_768;
/// Default number of traces handed to exporters in one call.
pub const DEFAULT_MAX_BATCH_TRACES: usize = 512;
/// How long a finished trace may wait before the worker exports it when traffic is light
/// (under load, batches go out as soon as they fill).
pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(100);
/// How long [`flush`] and [`shutdown`] wait for the export worker.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Default bound on traces waiting for export (`MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE`).
pub const DEFAULT_MAX_QUEUED_TRACES: usize = 16_384;

pub(crate) struct ProviderInner {
    pub(crate) pipeline: Pipeline,
    pub(crate) sampling_ratio: f64,
    pub(crate) flush_timeout: Duration,
    /// When false, the end of a root span waits for its trace's export.
    pub(crate) async_export: bool,
}

/// Owns the export pipeline and the sampling policy. A trace keeps the provider that was
/// installed when its root span started, so replacing the provider never splits a trace.
#[derive(Clone)]
pub struct TracerProvider {
    inner: Arc<ProviderInner>,
}

impl TracerProvider {
    pub fn builder() -> TracerProviderBuilder {
        TracerProviderBuilder::default()
    }

    /// Waits until every trace finished so far has been exported.
    pub fn flush(&self) -> Result<(), FlushError> {
        self.inner.pipeline.flush(self.inner.flush_timeout)
    }

    /// Exports what is left, shuts the exporters down and stops the worker.
    pub fn shutdown(&self) -> Result<(), FlushError> {
        self.inner.pipeline.shutdown(self.inner.flush_timeout)
    }

    pub fn stats(&self) -> ExportStats {
        self.inner.pipeline.stats()
    }
}

impl std::fmt::Debug for TracerProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracerProvider")
            .field("sampling_ratio", &self.inner.sampling_ratio)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Builds a [`TracerProvider`]. Defaults come from the environment as MLflow reads it
/// (`MLFLOW_TRACE_SAMPLING_RATIO`, the async-logging variables, `OTEL_BSP_EXPORT_TIMEOUT`).
///
/// A provider built without exporters sends each trace to its destination (see
/// [`crate::Destination`]); one built with exporters sends every trace to them instead,
/// unless [`with_destinations`](Self::with_destinations) asks for both.
pub struct TracerProviderBuilder {
    exporters: Vec<Box<dyn Exporter>>,
    destinations: bool,
    max_queued_spans: usize,
    max_queued_traces: Option<usize>,
    max_batch_traces: usize,
    sampling_ratio: Option<f64>,
    flush_timeout: Option<Duration>,
    schedule_delay: Option<Duration>,
    trace_timeout: Option<Duration>,
    async_export: Option<bool>,
}

impl Default for TracerProviderBuilder {
    fn default() -> Self {
        Self {
            exporters: Vec::new(),
            destinations: false,
            max_queued_spans: DEFAULT_MAX_QUEUED_SPANS,
            max_queued_traces: None,
            max_batch_traces: DEFAULT_MAX_BATCH_TRACES,
            sampling_ratio: None,
            flush_timeout: None,
            schedule_delay: None,
            trace_timeout: None,
            async_export: None,
        }
    }
}

impl std::fmt::Debug for TracerProviderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracerProviderBuilder")
            .field("exporters", &self.exporters.len())
            .field("max_queued_spans", &self.max_queued_spans)
            .field("sampling_ratio", &self.sampling_ratio)
            .finish_non_exhaustive()
    }
}

impl TracerProviderBuilder {
    /// Adds an exporter; every finished trace goes to every exporter.
    pub fn with_exporter(mut self, exporter: impl Exporter) -> Self {
        self.exporters.push(Box::new(exporter));
        self
    }

    /// Also sends each trace to its destination (the default when no exporter is added).
    pub fn with_destinations(mut self) -> Self {
        self.destinations = true;
        self
    }

    /// Bounds the traces waiting for export (default `MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE`,
    /// else 16,384).
    pub fn with_max_queued_traces(mut self, traces: usize) -> Self {
        self.max_queued_traces = Some(traces.max(1));
        self
    }

    /// Whether root spans return before their trace is exported (the default; `false` is
    /// `MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=false`: each root span's end waits for the export).
    pub fn with_async_export(mut self, async_export: bool) -> Self {
        self.async_export = Some(async_export);
        self
    }

    /// Bounds the spans waiting for export (memory stays bounded; overflow is dropped).
    pub fn with_max_queued_spans(mut self, spans: usize) -> Self {
        self.max_queued_spans = spans.max(1);
        self
    }

    pub fn with_max_batch_traces(mut self, traces: usize) -> Self {
        self.max_batch_traces = traces.max(1);
        self
    }

    /// The share of root spans that start a recorded trace, in [0, 1].
    pub fn with_sampling_ratio(mut self, ratio: f64) -> Self {
        self.sampling_ratio = Some(ratio.clamp(0.0, 1.0));
        self
    }

    /// How long a finished trace may wait for export when traffic is light.
    pub fn with_schedule_delay(mut self, delay: Duration) -> Self {
        self.schedule_delay = Some(delay);
        self
    }

    /// How long a trace may stay in progress before its open spans are ended with an error
    /// and it is exported (default: `MLFLOW_TRACE_TIMEOUT_SECONDS`, else
    /// `MLFLOW_TRACE_BUFFER_TTL_SECONDS`, else one hour).
    pub fn with_trace_timeout(mut self, timeout: Duration) -> Self {
        self.trace_timeout = Some(timeout);
        self
    }

    /// How long [`flush`] and [`shutdown`] wait for exports, and so the longest an
    /// unreachable destination can hold up the end of the program (default
    /// `OTEL_BSP_EXPORT_TIMEOUT` milliseconds, else 30 s). What is undelivered at shutdown
    /// after this is dropped and counted.
    pub fn with_flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = Some(timeout);
        self
    }

    pub fn build(self) -> TracerProvider {
        let env = crate::destination::env_settings().as_ref().ok();
        self.build_with(env)
    }

    fn build_with(mut self, env: Option<&Settings>) -> TracerProvider {
        let flush_timeout = self
            .flush_timeout
            .or_else(|| env.and_then(|s| s.export_timeout))
            .unwrap_or(DEFAULT_FLUSH_TIMEOUT);
        if self.destinations || self.exporters.is_empty() {
            self.exporters.push(Box::new(Router::new(flush_timeout)));
        }
        TracerProvider {
            inner: Arc::new(ProviderInner {
                pipeline: Pipeline::start(
                    self.exporters,
                    self.max_queued_spans,
                    self.max_queued_traces
                        .or_else(|| env.and_then(|s| s.max_queued_traces))
                        .unwrap_or(DEFAULT_MAX_QUEUED_TRACES),
                    self.max_batch_traces,
                    self.schedule_delay
                        .or_else(|| env.and_then(|s| s.schedule_delay))
                        .unwrap_or(DEFAULT_SCHEDULE_DELAY),
                    self.trace_timeout.unwrap_or_else(config::trace_timeout),
                ),
                sampling_ratio: self.sampling_ratio.unwrap_or_else(config::sampling_ratio_from_env),
                flush_timeout,
                async_export: self.async_export.or_else(|| env.map(|s| s.async_logging)).unwrap_or(true),
            }),
        }
    }

    /// Builds the provider, failing when the environment's tracing configuration is invalid
    /// (an error naming the variable and its value).
    pub fn try_build(self) -> Result<TracerProvider, ConfigError> {
        match crate::destination::env_settings() {
            Ok(settings) => Ok(self.build_with(Some(settings))),
            Err(e) => Err(e.clone()),
        }
    }
}

/// Checks the environment's tracing configuration and installs a provider that sends traces
/// to their destinations. Call it at the start of `main` to fail fast on a bad configuration;
/// without it, the same provider is made on first use, and a bad configuration is logged and
/// its traces dropped and counted.
pub fn init() -> Result<(), ConfigError> {
    let provider = TracerProvider::builder().try_build()?;
    set_tracer_provider(provider);
    Ok(())
}

static GLOBAL: RwLock<Option<TracerProvider>> = RwLock::new(None);

/// The installed provider, creating the default one (no exporters: traces stay in the local
/// buffer) on first use.
pub(crate) fn global() -> Arc<ProviderInner> {
    if let Some(p) = GLOBAL.read().as_ref() {
        return p.inner.clone();
    }
    GLOBAL.write().get_or_insert_with(|| TracerProvider::builder().build()).inner.clone()
}

/// The installed provider.
pub fn tracer_provider() -> TracerProvider {
    TracerProvider { inner: global() }
}

/// Installs `provider` for traces started from now on and returns the previous one (traces
/// already running finish with it; flush or shut it down when you are done with it).
pub fn set_tracer_provider(provider: TracerProvider) -> Option<TracerProvider> {
    GLOBAL.write().replace(provider)
}

/// Waits until every trace finished so far under the installed provider has been exported.
pub fn flush() -> Result<(), FlushError> {
    tracer_provider().flush()
}

/// Shuts the installed provider down: exports what is left, then stops exporting.
pub fn shutdown() -> Result<(), FlushError> {
    tracer_provider().shutdown()
}

/// What the installed provider's pipeline has done: exported, queued and dropped counts.
pub fn export_stats() -> ExportStats {
    tracer_provider().stats()
}
