//! Assessments (feedback and expectations) on a trace: how a create, update or delete changes
//! the list a trace's info carries. Every backend applies [`apply`] inside its own write of the
//! trace, so concurrent changes to one trace never lose each other.
//!
//! An assessment is kept as MLflow's `Assessment` message in proto JSON: `assessment_id`,
//! `assessment_name`, `trace_id`, `source`, `create_time`, `last_update_time`, one of
//! `feedback` / `expectation`, `rationale`, `metadata`, `overrides`, `valid`.

use serde_json::{Map, Value};
use tracelake_model::TraceId;

use crate::store::{StoreError, StoreResult};

/// A change to the assessments of one trace. `time` is the moment of the change as an RFC 3339
/// timestamp (proto JSON's form of `google.protobuf.Timestamp`).
#[derive(Debug, Clone, PartialEq)]
pub enum AssessmentChange {
    /// A new assessment; its id is assigned here. If it `overrides` another, that one stops
    /// being valid.
    Create { assessment: Value, time: String },
    /// The fields of `patch` named in `fields` (`assessment_name`, `feedback`, `expectation`, `valid`,
    /// `rationale`, `metadata`, merged) replace the assessment's; source and span stay.
    Update { assessment_id: String, patch: Value, fields: Vec<String>, time: String },
    /// Removes the assessment (nothing if there is none); one it overrode is valid again.
    Delete { assessment_id: String },
}

/// Fields an update may change.
pub const UPDATABLE: [&str; 6] =
    ["assessment_name", "feedback", "expectation", "rationale", "metadata", "valid"];

fn id_of(a: &Value) -> Option<&str> {
    a.get("assessment_id").and_then(Value::as_str)
}

fn not_found(trace_id: &str, assessment_id: &str) -> StoreError {
    StoreError::NotFound(format!("Assessment with ID '{assessment_id}' not found for trace '{trace_id}'"))
}

fn invalid(message: impl Into<String>) -> StoreError {
    StoreError::InvalidArgument(message.into())
}

/// The assessment `assessment_id` of a trace.
pub fn find(assessments: &[Value], trace_id: &str, assessment_id: &str) -> StoreResult<Value> {
    assessments
        .iter()
        .find(|a| id_of(a) == Some(assessment_id))
        .cloned()
        .ok_or_else(|| not_found(trace_id, assessment_id))
}

fn set_valid(assessments: &mut [Value], assessment_id: &str, valid: bool) -> bool {
    match assessments.iter_mut().find(|a| id_of(a) == Some(assessment_id)) {
        Some(a) => {
            a["valid"] = Value::Bool(valid);
            true
        }
        None => false,
    }
}

/// Applies `change` to the assessments of trace `trace_id`; returns the assessment as it now
/// is (`None` after a delete).
pub fn apply(
    assessments: &mut Vec<Value>,
    trace_id: &str,
    change: AssessmentChange,
) -> StoreResult<Option<Value>> {
    match change {
        AssessmentChange::Create { assessment, time } => {
            let Value::Object(mut a) = assessment else {
                return Err(invalid("an assessment is a JSON object"));
            };
            if a.get("assessment_name").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(invalid("missing value for required parameter 'assessment.assessment_name'"));
            }
            if a.contains_key("feedback") == a.contains_key("expectation") {
                return Err(invalid("an assessment holds exactly one of 'feedback' and 'expectation'"));
            }
            if let Some(overridden) = a.get("overrides").and_then(Value::as_str).filter(|o| !o.is_empty())
                && !set_valid(assessments, overridden, false)
            {
                return Err(not_found(trace_id, overridden));
            }
            a.insert("assessment_id".into(), Value::String(format!("a-{}", TraceId::random())));
            a.insert("trace_id".into(), Value::String(trace_id.to_owned()));
            a.entry("create_time").or_insert_with(|| Value::String(time.clone()));
            a.insert("last_update_time".into(), Value::String(time));
            a.entry("valid").or_insert(Value::Bool(true));
            let created = Value::Object(a);
            assessments.push(created.clone());
            Ok(Some(created))
        }
        AssessmentChange::Update { assessment_id, patch, fields, time } => {
            let at = assessments
                .iter()
                .position(|a| id_of(a) == Some(assessment_id.as_str()))
                .ok_or_else(|| not_found(trace_id, &assessment_id))?;
            let current = assessments[at]
                .as_object_mut()
                .ok_or_else(|| invalid("a stored assessment is not an object"))?;
            let empty = Map::new();
            let patch = patch.as_object().unwrap_or(&empty);
            for field in &fields {
                if !UPDATABLE.contains(&field.as_str()) {
                    return Err(invalid(format!(
                        "cannot update assessment field {field:?}; updatable: {}",
                        UPDATABLE.join(", ")
                    )));
                }
                let kind = |k: &str| current.contains_key(k);
                match field.as_str() {
                    "feedback" if !kind("feedback") => {
                        return Err(invalid("Cannot update feedback value on an Expectation assessment."));
                    }
                    "expectation" if !kind("expectation") => {
                        return Err(invalid("Cannot update expectation value on a Feedback assessment."));
                    }
                    "metadata" => {
                        let merged = current.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
                        if let (Some(merged), Some(Value::Object(new))) =
                            (merged.as_object_mut(), patch.get("metadata"))
                        {
                            merged.extend(new.clone());
                        }
                    }
                    _ => match patch.get(field.as_str()) {
                        Some(value) => {
                            current.insert(field.clone(), value.clone());
                        }
                        None => {
                            current.remove(field.as_str());
                        }
                    },
                }
            }
            current.insert("last_update_time".into(), Value::String(time));
            Ok(Some(assessments[at].clone()))
        }
        AssessmentChange::Delete { assessment_id } => {
            let Some(at) = assessments.iter().position(|a| id_of(a) == Some(assessment_id.as_str())) else {
                return Ok(None);
            };
            let removed = assessments.remove(at);
            if let Some(overridden) = removed.get("overrides").and_then(Value::as_str) {
                set_valid(assessments, overridden, true);
            }
            Ok(None)
        }
    }
}

/// [`apply`] to assessments kept as JSON text (the SQL stores' column); returns the new text
/// and the assessment as it now is.
pub fn apply_to_text(
    stored: &str,
    trace_id: &str,
    change: AssessmentChange,
) -> StoreResult<(String, Option<Value>)> {
    let internal =
        |e: serde_json::Error| StoreError::Internal(format!("assessments of trace {trace_id}: {e}"));
    let mut assessments: Vec<Value> = serde_json::from_str(stored).map_err(internal)?;
    let out = apply(&mut assessments, trace_id, change)?;
    Ok((serde_json::to_string(&assessments).map_err(internal)?, out))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn create(list: &mut Vec<Value>, a: Value) -> Value {
        apply(list, "tr-1", AssessmentChange::Create { assessment: a, time: "2026-01-01T00:00:00Z".into() })
            .unwrap()
            .unwrap()
    }

    #[test]
    fn assessments_are_created_updated_overridden_and_deleted() {
        let mut list = Vec::new();
        let first = create(&mut list, json!({"assessment_name": "helpful", "feedback": {"value": true}}));
        let id = first["assessment_id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("a-") && id.len() == 34, "{id}");
        assert_eq!((first["trace_id"].as_str(), first["valid"].as_bool()), (Some("tr-1"), Some(true)));

        let change = AssessmentChange::Update {
            assessment_id: id.clone(),
            patch: json!({"feedback": {"value": false}, "metadata": {"by": "me"}, "rationale": "wrong"}),
            fields: vec!["feedback".into(), "metadata".into(), "rationale".into()],
            time: "2026-01-02T00:00:00Z".into(),
        };
        let updated = apply(&mut list, "tr-1", change).unwrap().unwrap();
        assert_eq!(updated["feedback"]["value"], false);
        assert_eq!(
            (updated["rationale"].as_str(), updated["metadata"]["by"].as_str()),
            (Some("wrong"), Some("me"))
        );
        assert_eq!(updated["create_time"], "2026-01-01T00:00:00Z");
        assert_eq!(updated["last_update_time"], "2026-01-02T00:00:00Z");

        let wrong_kind = AssessmentChange::Update {
            assessment_id: id.clone(),
            patch: json!({"expectation": {"value": 1}}),
            fields: vec!["expectation".into()],
            time: "t".into(),
        };
        assert!(matches!(apply(&mut list, "tr-1", wrong_kind), Err(StoreError::InvalidArgument(_))));

        let newer = create(
            &mut list,
            json!({"assessment_name": "helpful", "feedback": {"value": true}, "overrides": id}),
        );
        assert_eq!(find(&list, "tr-1", &id).unwrap()["valid"], false);
        let gone =
            AssessmentChange::Delete { assessment_id: newer["assessment_id"].as_str().unwrap().into() };
        assert_eq!(apply(&mut list, "tr-1", gone).unwrap(), None);
        assert_eq!(find(&list, "tr-1", &id).unwrap()["valid"], true, "the overridden one is valid again");
        assert!(matches!(find(&list, "tr-1", "a-missing"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn a_bad_assessment_is_refused() {
        let mut list = Vec::new();
        for bad in [
            json!({"feedback": {"value": 1}}),
            json!({"assessment_name": "x"}),
            json!({"assessment_name": "x", "feedback": {"value": 1}, "expectation": {"value": 1}}),
        ] {
            let change = AssessmentChange::Create { assessment: bad, time: "t".into() };
            assert!(matches!(apply(&mut list, "tr-1", change), Err(StoreError::InvalidArgument(_))));
        }
        let overrides_nothing = json!({"assessment_name": "x", "feedback": {"value": 1}, "overrides": "a-0"});
        let change = AssessmentChange::Create { assessment: overrides_nothing, time: "t".into() };
        assert!(matches!(apply(&mut list, "tr-1", change), Err(StoreError::NotFound(_))));
        assert!(list.is_empty());
    }
}
