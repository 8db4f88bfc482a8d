//! MLflow's `search_experiments` grammar: the same lexer, operators and errors as trace
//! filters, over an experiment's fields and tags.
//!
//! ```text
//! name LIKE 'agents-%' AND tags.team = 'search' AND creation_time > 1700000000000
//! ```
//!
//! Names: `name`, `experiment_id`, `creation_time`, `last_update_time` (bare or after
//! `attribute.`) and `tags.<key>` (or `tag.<key>`). Results order by the same attributes.

use super::{
    FilterError, Grammar, Literal, Op, OrderBy, error, error_hint, parse_order_with, parse_with, supported,
};
use crate::Filter;

/// What an experiment filter compares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExperimentTarget {
    Name,
    ExperimentId,
    CreationTime,
    LastUpdateTime,
    Tag(String),
}

/// What experiments can be ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExperimentOrderKey {
    Name,
    ExperimentId,
    CreationTime,
    LastUpdateTime,
}

const ATTRIBUTES: &str = "name, experiment_id, creation_time, last_update_time";

/// Parses and validates a `search_experiments` filter; an empty one matches every experiment.
pub fn parse_experiment_filter(input: &str) -> Result<Filter<ExperimentTarget>, FilterError> {
    parse_with::<ExperimentGrammar>(input)
}

/// Parses `search_experiments` `order_by` entries (`"name"`, `"creation_time DESC"`).
pub fn parse_experiment_order_by(
    entries: &[impl AsRef<str>],
) -> Result<Vec<OrderBy<ExperimentOrderKey>>, FilterError> {
    parse_order_with(entries, "creation_time DESC", |parts, column| {
        Ok(match resolve(parts, column)? {
            ExperimentTarget::Name => ExperimentOrderKey::Name,
            ExperimentTarget::ExperimentId => ExperimentOrderKey::ExperimentId,
            ExperimentTarget::CreationTime => ExperimentOrderKey::CreationTime,
            ExperimentTarget::LastUpdateTime => ExperimentOrderKey::LastUpdateTime,
            ExperimentTarget::Tag(_) => {
                return Err(error(
                    column,
                    format!("experiments cannot be ordered by a tag; use one of {ATTRIBUTES}"),
                ));
            }
        })
    })
}

struct ExperimentGrammar;

impl Grammar for ExperimentGrammar {
    type Target = ExperimentTarget;
    const KIND: &'static str = "experiment";
    const NAMES: &'static str = "name or tags.<key>";
    const EXAMPLE: &'static str = "name = 'agents'";
    const OR_HINT: &'static str = "two searches, or IN: experiment_id IN ('1', '2')";

    fn resolve(parts: &[String], column: usize) -> Result<ExperimentTarget, FilterError> {
        resolve(parts, column)
    }

    fn validate(
        target: &ExperimentTarget,
        op: Op,
        value: &Literal,
        name: &str,
        column: usize,
    ) -> Result<(), FilterError> {
        use Op::*;
        let allowed: &[Op] = match target {
            ExperimentTarget::Name => &[Eq, NotEq, Like, ILike],
            ExperimentTarget::ExperimentId => &[Eq, NotEq, In, NotIn],
            ExperimentTarget::CreationTime | ExperimentTarget::LastUpdateTime => &[Eq, NotEq, Gt, Ge, Lt, Le],
            ExperimentTarget::Tag(_) => &[Eq, NotEq, Like, ILike, IsNull, IsNotNull],
        };
        supported(allowed, op, name, column)?;
        let numeric = matches!(target, ExperimentTarget::CreationTime | ExperimentTarget::LastUpdateTime);
        match value {
            Literal::Int(_) if numeric => Ok(()),
            Literal::Float(_) | Literal::Str(_) if numeric => Err(error_hint(
                column,
                format!("{name} is compared with whole milliseconds since the epoch, not {}", shown(value)),
                format!("{name} {} 1700000000000", op.as_str()),
            )),
            Literal::Int(_) | Literal::Float(_) => Err(error_hint(
                column,
                format!("{name} is compared with a quoted string"),
                format!("{name} {} '{}'", op.as_str(), value.text()),
            )),
            Literal::Str(id) if *target == ExperimentTarget::ExperimentId => experiment_id(id, column),
            Literal::List(ids) if *target == ExperimentTarget::ExperimentId => {
                ids.iter().try_for_each(|id| experiment_id(id, column))
            }
            _ => Ok(()),
        }
    }
}

fn shown(value: &Literal) -> String {
    match value {
        Literal::Str(s) => format!("the string {s:?}"),
        other => other.text(),
    }
}

fn experiment_id(id: &str, column: usize) -> Result<(), FilterError> {
    match id.parse::<i64>() {
        Ok(_) => Ok(()),
        Err(_) => Err(error(column, format!("{id:?} is not an experiment id; ids are decimal integers"))),
    }
}

fn resolve(parts: &[String], column: usize) -> Result<ExperimentTarget, FilterError> {
    let key = match parts {
        [key] => key.as_str(),
        [entity, ..] if matches!(entity.to_ascii_lowercase().as_str(), "tag" | "tags") => {
            return Ok(ExperimentTarget::Tag(parts[1..].join(".")));
        }
        [entity, key] if matches!(entity.to_ascii_lowercase().as_str(), "attribute" | "attributes") => {
            key.as_str()
        }
        [entity, ..] => {
            return Err(error_hint(
                column,
                format!("unknown entity {entity:?}; experiments are filtered by attribute or tags"),
                "tags.team = 'search'",
            ));
        }
        [] => unreachable!("an identifier has at least one part"),
    };
    Ok(match key.to_ascii_lowercase().as_str() {
        "name" => ExperimentTarget::Name,
        "experiment_id" => ExperimentTarget::ExperimentId,
        "creation_time" => ExperimentTarget::CreationTime,
        "last_update_time" => ExperimentTarget::LastUpdateTime,
        _ => {
            return Err(error_hint(
                column,
                format!("unknown experiment attribute {key:?}; expected one of {ATTRIBUTES}"),
                format!("tags.{key} for a tag"),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiment_filters_parse_into_clauses() {
        let f = parse_experiment_filter(
            "name LIKE 'a%' AND tags.`team name` = 'x' AND attribute.creation_time >= 5 AND experiment_id IN ('1', '2')",
        )
        .unwrap();
        let targets: Vec<_> = f.clauses.iter().map(|c| c.target.clone()).collect();
        assert_eq!(
            targets,
            [
                ExperimentTarget::Name,
                ExperimentTarget::Tag("team name".into()),
                ExperimentTarget::CreationTime,
                ExperimentTarget::ExperimentId
            ]
        );
        assert_eq!(f.clauses[2].value, Literal::Int(5));
        assert!(parse_experiment_filter("  ").unwrap().clauses.is_empty());
    }

    #[test]
    fn bad_experiment_filters_name_the_column_and_the_problem() {
        let cases = [
            ("name = 'a' OR name = 'b'", 12, "OR is not supported in experiment filters"),
            ("owner = 'me'", 1, "unknown experiment attribute \"owner\""),
            ("metadata.x = 'y'", 1, "unknown entity \"metadata\""),
            ("name > 'a'", 6, "name does not support >"),
            ("creation_time > '2024'", 15, "whole milliseconds"),
            ("creation_time > 1.5", 15, "whole milliseconds"),
            ("experiment_id = 'abc'", 15, "not an experiment id"),
            ("tags.team = 3", 11, "compared with a quoted string"),
            ("name IS NULL", 6, "name does not support IS NULL"),
        ];
        for (input, column, message) in cases {
            let e = parse_experiment_filter(input).unwrap_err();
            assert_eq!(e.column, column, "{input}: {e}");
            assert!(e.message.contains(message), "{input}: {e}");
        }
    }

    #[test]
    fn experiments_order_by_attributes_only() {
        let o = parse_experiment_order_by(&["name", "attribute.last_update_time DESC"]).unwrap();
        assert_eq!(
            o,
            [
                OrderBy { key: ExperimentOrderKey::Name, ascending: true },
                OrderBy { key: ExperimentOrderKey::LastUpdateTime, ascending: false }
            ]
        );
        assert!(parse_experiment_order_by(&["tags.team"]).unwrap_err().message.contains("by a tag"));
        assert!(parse_experiment_order_by(&["name", "name DESC"]).unwrap_err().message.contains("twice"));
    }
}
