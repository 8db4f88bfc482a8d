//! Background delivery to network destinations: a small runtime of its own, bounded requests
//! in flight, retries with backoff, and budgets on every wait.
//!
//! The export worker hands each job to [`Delivery::submit`], which returns as soon as the job
//! has room in the destination's buffer: at most [`BUFFERED_SPANS`] spans per destination are
//! being sent or waiting to be retried, so memory stays bounded, and at most `max_in_flight`
//! requests are on the wire at once. While the destination answers, a full buffer makes the
//! export worker wait (back-pressure, up to a bound); once it has failed, jobs that find no
//! room are dropped at once, and counted, so an unreachable destination never holds up the
//! pipeline. Failed attempts are retried with exponential backoff and jitter, honouring
//! `Retry-After`, until the retry window closes.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio::sync::{Semaphore, watch};

use super::ExportError;
use crate::pipeline::DropCounter;
use crate::settings::DeliverySettings;

/// The runtime network exporters run on: two threads, shared by every destination.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tracelake-net")
            .enable_all()
            .build()
            .expect("cannot start the tracelake export runtime")
    })
}

/// What one attempt of a request came to.
#[derive(Debug)]
pub(crate) enum Outcome<T = ()> {
    Delivered(T),
    /// Worth another try (unreachable, timed out, overloaded): after `after` if the
    /// destination said so.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Refused for good (a 4xx other than 408/429): retrying would not help.
    Rejected(String),
}

/// The statuses MLflow's client retries (`MLFLOW_HTTP_REQUEST_*`).
pub(crate) const MLFLOW_RETRY_STATUSES: &[u16] = &[408, 429, 500, 502, 503, 504];
/// The statuses OTLP/HTTP exporters retry (the OTLP specification).
pub(crate) const OTLP_RETRY_STATUSES: &[u16] = &[429, 502, 503, 504];

impl<T> Outcome<T> {
    /// The same outcome, the delivered value (if that is what it is) changed by `f`.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Delivered(v) => Outcome::Delivered(f(v)),
            Outcome::Retry { reason, after } => Outcome::Retry { reason, after },
            Outcome::Rejected(reason) => Outcome::Rejected(reason),
        }
    }
}

/// Reads an HTTP response: 2xx delivered; a status in `retry` retried (after the
/// `Retry-After` seconds, when given); anything else rejected with the body's message.
pub(crate) async fn http_outcome(
    result: Result<reqwest::Response, reqwest::Error>,
    retry: &[u16],
) -> Outcome<reqwest::Response> {
    let response = match result {
        Ok(r) => r,
        Err(e) => return Outcome::Retry { reason: error_chain(&e), after: None },
    };
    let status = response.status();
    if status.is_success() {
        return Outcome::Delivered(response);
    }
    let after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok());
    let body = response.text().await.unwrap_or_default();
    let reason = format!("HTTP {status}: {}", truncate(&body, 300));
    if retry.contains(&status.as_u16()) {
        Outcome::Retry { reason, after }
    } else {
        Outcome::Rejected(reason)
    }
}

/// [`http_outcome`] for requests whose answer is not needed.
pub(crate) async fn http_sent(result: Result<reqwest::Response, reqwest::Error>, retry: &[u16]) -> Outcome {
    http_outcome(result, retry).await.map(drop)
}

/// An error with its causes, which is where reqwest says what actually went wrong.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

pub(crate) fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Spans one destination may hold while they are sent or wait for a retry.
pub(crate) const BUFFERED_SPANS: u32 = 32_768;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// Retries a request until it is delivered, rejected, or the retry window closes.
#[derive(Clone, Debug)]
pub(crate) struct Retry {
    window: Duration,
    /// Requests on the wire to this destination.
    sending: Arc<Semaphore>,
    /// Set while the destination fails, cleared when it answers.
    failing: Arc<AtomicBool>,
}

impl Retry {
    pub(crate) async fn run<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Outcome<T>>,
    {
        let deadline = Instant::now() + self.window;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let outcome = {
                let _sending = self.sending.acquire().await.map_err(|e| e.to_string())?;
                attempt().await
            };
            match outcome {
                Outcome::Delivered(value) => {
                    self.failing.store(false, Ordering::Relaxed);
                    return Ok(value);
                }
                Outcome::Rejected(reason) => {
                    self.failing.store(false, Ordering::Relaxed);
                    return Err(format!("{what} rejected: {reason}"));
                }
                Outcome::Retry { reason, after } => {
                    self.failing.store(true, Ordering::Relaxed);
                    // Full jitter on our own backoff; a server's Retry-After is taken as given.
                    let wait = after.unwrap_or_else(|| backoff.mul_f64(rand::rng().random_range(0.5..=1.0)));
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if Instant::now().checked_add(wait).is_none_or(|t| t > deadline) {
                        return Err(format!(
                            "{what} failed for {} s, giving up: {reason}",
                            self.window.as_secs()
                        ));
                    }
                    tracing::debug!(target: "tracelake", "{what} failed, retrying in {wait:?}: {reason}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Why a delivery job failed, and how much of it: `counts` (traces, spans) when only part
/// of the job's traces were lost, `None` when all were.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) counts: Option<(usize, usize)>,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure { message, counts: None }
    }
}

/// The requests in flight to one destination.
#[derive(Debug)]
pub(crate) struct Delivery {
    target: String,
    /// Room in the buffer, in spans.
    room: Arc<Semaphore>,
    retry: Retry,
    cancel: watch::Sender<bool>,
    drops: Option<DropCounter>,
    /// How long a submit waits for room while the destination is healthy.
    slot_wait: Duration,
}

impl Delivery {
    pub(crate) fn new(target: String, settings: &DeliverySettings) -> Self {
        let sending = Arc::new(Semaphore::new(settings.max_in_flight.clamp(1, 1024)));
        Delivery {
            target,
            room: Arc::new(Semaphore::new(BUFFERED_SPANS as usize)),
            retry: Retry {
                window: settings.retry_window,
                sending,
                failing: Arc::new(AtomicBool::new(false)),
            },
            cancel: watch::channel(false).0,
            drops: None,
            slot_wait: settings.request_timeout.min(Duration::from_secs(10)),
        }
    }

    pub(crate) fn set_drop_counter(&mut self, drops: Option<&DropCounter>) {
        if self.drops.is_none() {
            self.drops = drops.cloned();
        }
    }

    pub(crate) fn retry(&self) -> Retry {
        self.retry.clone()
    }

    fn record_drop(drops: &Option<DropCounter>, traces: usize, spans: usize, why: &str) {
        match drops {
            Some(d) => d.record(traces, spans, why),
            None => tracing::warn!(target: "tracelake", "dropping {traces} traces: {why}"),
        }
    }

    /// Runs `job` (which delivers `traces` traces of `spans` spans) in the background. What
    /// the job reports as failed, all of it when it is cancelled at shutdown, panics or finds
    /// no room, counts as dropped.
    pub(crate) fn submit<F>(&self, traces: usize, spans: usize, job: F)
    where
        F: Future<Output = Result<(), Failure>> + Send + 'static,
    {
        // A job larger than the whole buffer takes all of it.
        let need = (spans as u32).clamp(1, BUFFERED_SPANS);
        let slot = if self.retry.failing.load(Ordering::Relaxed) {
            self.room.clone().try_acquire_many_owned(need).ok()
        } else {
            let room = self.room.clone();
            runtime().block_on(async {
                tokio::time::timeout(self.slot_wait, room.acquire_many_owned(need)).await.ok()?.ok()
            })
        };
        let Some(slot) = slot else {
            let why =
                format!("{} is not keeping up or unreachable; its delivery buffer is full", self.target);
            return Self::record_drop(&self.drops, traces, spans, &why);
        };
        let mut cancel = self.cancel.subscribe();
        let drops = self.drops.clone();
        let target = self.target.clone();
        runtime().spawn(async move {
            let _slot = slot;
            // The job runs as a task of its own, so a panic in it is seen here and counted.
            let mut job = runtime().spawn(job);
            tokio::select! {
                result = &mut job => match result {
                    Ok(Ok(())) => {}
                    Ok(Err(f)) => {
                        let (t, s) = f.counts.unwrap_or((traces, spans));
                        Self::record_drop(&drops, t, s, &format!("export to {target}: {}", f.message));
                    }
                    Err(e) => {
                        Self::record_drop(&drops, traces, spans, &format!("export to {target} failed: {e}"));
                    }
                },
                _ = cancel.wait_for(|c| *c) => {
                    job.abort();
                    Self::record_drop(&drops, traces, spans, &format!("export to {target} was still being retried at shutdown"));
                }
            }
        });
    }

    /// Waits up to `timeout` for every request in flight to finish; `false` if some did not.
    fn wait_idle(&self, timeout: Duration) -> bool {
        let room = self.room.clone();
        runtime().block_on(async move {
            tokio::time::timeout(timeout, room.acquire_many(BUFFERED_SPANS)).await.is_ok()
        })
    }

    fn timed_out(&self, timeout: Duration) -> ExportError {
        ExportError::Timeout { target: self.target.clone(), timeout_ms: timeout.as_millis() as u64 }
    }

    /// Waits up to `timeout` for the requests in flight (an exporter's `flush`).
    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), ExportError> {
        if self.wait_idle(timeout) { Ok(()) } else { Err(self.timed_out(timeout)) }
    }

    /// Waits up to `timeout` for the requests in flight, then gives up on the rest (they are
    /// counted as dropped): an exporter's `shutdown`.
    pub(crate) fn shutdown(&self, timeout: Duration) -> Result<(), ExportError> {
        if self.wait_idle(timeout) {
            return Ok(());
        }
        let _ = self.cancel.send(true);
        // The cancelled jobs count their drops and free their room at once.
        self.wait_idle(Duration::from_secs(1));
        Err(self.timed_out(timeout))
    }
}
