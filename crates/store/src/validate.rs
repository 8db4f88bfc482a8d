//! Argument checks every backend applies the same way, with the same messages.

use tracelake_model::{TraceId, TraceInfo, TraceLocation};

use crate::store::{StoreError, StoreResult};
use crate::types::RUN_STATUSES;

/// Most results one search or listing page may ask for.
pub const MAX_RESULTS_LIMIT: usize = 50_000;
/// Most traces one `link_traces_to_run` call may name, as in MLflow.
pub const MAX_TRACES_PER_LINK: usize = 100;

/// Experiment ids are decimal integers.
pub fn experiment_id(id: &str) -> StoreResult<i64> {
    id.parse::<i64>().map_err(|_| {
        StoreError::InvalidArgument(format!("invalid experiment id {id:?}: expected an integer"))
    })
}

pub fn experiment_name(name: &str) -> StoreResult<()> {
    if name.trim().is_empty() {
        return Err(StoreError::InvalidArgument("experiment name must not be empty".into()));
    }
    Ok(())
}

/// The error for deleting a tag an experiment does not have.
pub fn no_experiment_tag(experiment_id: &str, key: &str) -> StoreError {
    StoreError::NotFound(format!("No tag with name: {key} in experiment with id {experiment_id}"))
}

pub fn max_results(n: usize) -> StoreResult<()> {
    if n == 0 || n > MAX_RESULTS_LIMIT {
        return Err(StoreError::InvalidArgument(format!(
            "max_results must be between 1 and {MAX_RESULTS_LIMIT}, got {n}"
        )));
    }
    Ok(())
}

pub fn traces_per_link(n: usize) -> StoreResult<()> {
    if n > MAX_TRACES_PER_LINK {
        return Err(StoreError::InvalidArgument(format!(
            "at most {MAX_TRACES_PER_LINK} traces can be linked in one call, got {n}"
        )));
    }
    Ok(())
}

/// A status MLflow knows (or none).
pub fn run_status(status: Option<&str>) -> StoreResult<()> {
    match status {
        Some(s) if !RUN_STATUSES.contains(&s) => Err(StoreError::InvalidArgument(format!(
            "invalid run status {s:?}: expected one of {}",
            RUN_STATUSES.join(", ")
        ))),
        _ => Ok(()),
    }
}

/// A trace info fit to store: a valid MLflow trace id and an experiment location, whose id
/// is returned.
pub fn trace_info(info: &TraceInfo) -> StoreResult<&str> {
    TraceId::from_mlflow(&info.trace_id)
        .map_err(|e| StoreError::InvalidArgument(format!("trace info: {e}")))?;
    info.trace_location.experiment_id().ok_or_else(|| {
        StoreError::InvalidArgument(format!(
            "trace {}: only MLFLOW_EXPERIMENT locations are stored here, got {}",
            info.trace_id,
            info.trace_location.type_name()
        ))
    })
}

/// A trace info fit to store anywhere: a valid MLflow trace id and a location an experiment
/// or a lake schema (see [`crate::derive::location_key`]), whose key is returned.
pub fn trace_location(info: &TraceInfo) -> StoreResult<String> {
    TraceId::from_mlflow(&info.trace_id)
        .map_err(|e| StoreError::InvalidArgument(format!("trace info: {e}")))?;
    match &info.trace_location {
        TraceLocation::InferenceTable { .. } => Err(StoreError::InvalidArgument(format!(
            "trace {}: INFERENCE_TABLE locations are not stored here",
            info.trace_id
        ))),
        location => Ok(crate::derive::location_key(location)),
    }
}
