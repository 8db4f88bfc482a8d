//! Process-wide switches: tracing on or off, sampling, buffer sizes.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracelake_model::TraceId;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns tracing on (the default).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Turns tracing off: instrumented code runs as if it were not, at the cost of one load.
/// Spans already started finish normally.
pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

/// Whether tracing is on.
#[inline]
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether a trace with this id is kept under `ratio`. The decision depends only on the
/// trace id, as OpenTelemetry's `TraceIdRatioBased` sampler does, so every process that sees
/// the id agrees.
pub(crate) fn sampled(id: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    ((id.to_u128() as u64) >> 1) < bound
}

/// Reads a variable, warning (once, at start) when its value is unusable.
pub(crate) fn env_parse<T: std::str::FromStr>(name: &str, valid: impl Fn(&T) -> bool) -> Option<T> {
    parse_setting(name, std::env::var(name).ok().as_deref(), valid)
}

fn parse_setting<T: std::str::FromStr>(
    name: &str,
    raw: Option<&str>,
    valid: impl Fn(&T) -> bool,
) -> Option<T> {
    let raw = raw?;
    match raw.trim().parse::<T>() {
        Ok(v) if valid(&v) => Some(v),
        _ => {
            tracing::warn!(target: "tracelake", "ignoring {name}={raw:?}: not a valid value");
            None
        }
    }
}

/// `MLFLOW_TRACE_SAMPLING_RATIO`: the share of root spans that start a recorded trace.
pub(crate) fn sampling_ratio_from_env() -> f64 {
    sampling_ratio(std::env::var("MLFLOW_TRACE_SAMPLING_RATIO").ok().as_deref())
}

/// Like MLflow: unset or invalid means 1.0 (invalid values are warned about and ignored).
fn sampling_ratio(raw: Option<&str>) -> f64 {
    parse_setting("MLFLOW_TRACE_SAMPLING_RATIO", raw, |r: &f64| (0.0..=1.0).contains(r)).unwrap_or(1.0)
}

/// `MLFLOW_TRACE_BUFFER_MAX_SIZE`: how many finished traces [`crate::get_trace`] can find.
pub(crate) fn trace_buffer_size() -> usize {
    static SIZE: OnceLock<usize> = OnceLock::new();
    *SIZE.get_or_init(|| env_parse("MLFLOW_TRACE_BUFFER_MAX_SIZE", |_: &usize| true).unwrap_or(1000))
}

/// How many traces may be in progress at once before the oldest are ended.
pub(crate) const MAX_TRACES_IN_PROGRESS: usize = 100_000;

/// How long a trace may stay in progress before its open spans are ended with an error:
/// `MLFLOW_TRACE_TIMEOUT_SECONDS` when set, else `MLFLOW_TRACE_BUFFER_TTL_SECONDS` (one hour),
/// MLflow's bound on in-progress traces. Where MLflow evicts silently at that bound, the trace
/// is exported here, its unfinished spans marked ERROR.
pub(crate) fn trace_timeout() -> Duration {
    let positive = |s: &f64| *s > 0.0;
    let secs = env_parse("MLFLOW_TRACE_TIMEOUT_SECONDS", positive)
        .or_else(|| env_parse("MLFLOW_TRACE_BUFFER_TTL_SECONDS", positive))
        .unwrap_or(3600.0);
    Duration::from_secs_f64(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampling_ratio_variable_is_parsed_like_mlflow_does() {
        assert_eq!(sampling_ratio(None), 1.0);
        assert_eq!(sampling_ratio(Some("0.25")), 0.25);
        assert_eq!(sampling_ratio(Some(" 0 ")), 0.0);
        assert_eq!(sampling_ratio(Some("1.5")), 1.0);
        assert_eq!(sampling_ratio(Some("half")), 1.0);
    }

    #[test]
    fn sampling_keeps_about_the_requested_share_of_traces() {
        let kept = (0..20_000).filter(|_| sampled(TraceId::random(), 0.25)).count();
        assert!((4_000..6_000).contains(&kept), "kept {kept} of 20000 at ratio 0.25");
        assert!(sampled(TraceId::random(), 1.0));
        assert!(!sampled(TraceId::random(), 0.0));
    }
}
