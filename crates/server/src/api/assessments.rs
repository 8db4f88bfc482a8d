//! MLflow assessments (REST 3.0): feedback and expectations logged on a trace
//! (`mlflow.log_feedback`, `log_expectation`, `update_assessment`, `delete_assessment`).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};
use tracelake_store::AssessmentChange;

use super::required;
use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Now, as proto JSON writes a `google.protobuf.Timestamp`.
fn now() -> String {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    tracelake_model::format_timestamp_ms(ms)
}

#[derive(Deserialize)]
pub(crate) struct Create {
    assessment: Option<Value>,
}

/// `POST /3.0/mlflow/traces/{trace_id}/assessments`.
pub(crate) async fn create(
    State(s): State<AppState>,
    Path(trace_id): Path<String>,
    Json(req): Json<Create>,
) -> ApiResult<Json<Value>> {
    let change =
        AssessmentChange::Create { assessment: required(req.assessment, "assessment")?, time: now() };
    let created = s.store.change_assessment(&trace_id, change).await?;
    Ok(Json(json!({ "assessment": created })))
}

/// `GET /3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}`.
pub(crate) async fn get(
    State(s): State<AppState>,
    Path((trace_id, assessment_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let info = s.store.get_trace_info(&trace_id).await?;
    let found = tracelake_store::assessments::find(&info.assessments, &trace_id, &assessment_id)?;
    Ok(Json(json!({ "assessment": found })))
}

#[derive(Deserialize)]
pub(crate) struct Update {
    assessment: Option<Value>,
    update_mask: Option<Value>,
}

/// A field mask in proto JSON (`"a,b"`, camelCase or not) or as `{"paths": [...]}`.
fn mask_paths(mask: &Value) -> ApiResult<Vec<String>> {
    let paths: Vec<String> = match mask {
        Value::String(s) => {
            s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect()
        }
        Value::Object(o) => match o.get("paths") {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => return Err(ApiError::invalid("update_mask.paths must be a list of field names")),
        },
        _ => {
            return Err(ApiError::invalid(
                "update_mask must be a string of field names or {\"paths\": [...]}",
            ));
        }
    };
    Ok(paths
        .into_iter()
        .map(|p| {
            let mut snake = String::with_capacity(p.len() + 4);
            for c in p.chars() {
                if c.is_ascii_uppercase() {
                    snake.push('_');
                    snake.push(c.to_ascii_lowercase());
                } else {
                    snake.push(c);
                }
            }
            snake
        })
        .collect())
}

/// `PATCH /3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}`: the fields the update
/// mask names.
pub(crate) async fn update(
    State(s): State<AppState>,
    Path((trace_id, assessment_id)): Path<(String, String)>,
    Json(req): Json<Update>,
) -> ApiResult<Json<Value>> {
    let patch = required(req.assessment, "assessment")?;
    let fields = mask_paths(&required(req.update_mask, "update_mask")?)?;
    let change = AssessmentChange::Update { assessment_id, patch, fields, time: now() };
    let updated = s.store.change_assessment(&trace_id, change).await?;
    Ok(Json(json!({ "assessment": updated })))
}

/// `DELETE /3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}`.
pub(crate) async fn delete(
    State(s): State<AppState>,
    Path((trace_id, assessment_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    s.store.change_assessment(&trace_id, AssessmentChange::Delete { assessment_id }).await?;
    Ok(Json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_masks_are_read_in_every_proto_json_form() {
        assert_eq!(mask_paths(&json!("assessmentName,feedback")).unwrap(), ["assessment_name", "feedback"]);
        assert_eq!(
            mask_paths(&json!({"paths": ["rationale", "metadata"]})).unwrap(),
            ["rationale", "metadata"]
        );
        assert!(mask_paths(&json!(3)).is_err());
        // proto JSON's timestamp, milliseconds left out on a whole second
        let (before, stamp) = (SystemTime::now(), now());
        let ms = tracelake_model::parse_timestamp_ms(&stamp).unwrap_or_else(|| panic!("{stamp}"));
        let since = before.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        assert!(stamp.ends_with('Z') && (since..since + 60_000).contains(&ms), "{stamp}");
    }
}
