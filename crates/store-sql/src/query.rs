//! Search filters to SQL, for both backends. The schemas share their table and column names;
//! what differs (placeholders, pattern operators, reading a span attribute out of the stored
//! span JSON, index hints) is asked of the [`Dialect`].

use tracelake_model::{metadata_keys, tag_keys};
use tracelake_store::eval::like;
use tracelake_store::{
    Attribute, Clause, Literal, Op, OrderBy, OrderKey, SpanField, StoreError, StoreResult, Target,
};

/// The SQL flavour a statement is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// How many characters of a tag or metadata value PostgreSQL indexes: a B-tree entry has a size
/// limit (about 2.7 KB) that a whole value may pass.
pub(crate) const PG_INDEXED_VALUE_CHARS: usize = 256;

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Int(i64),
    Real(f64),
    Text(String),
}

impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl From<String> for Param {
    fn from(v: String) -> Self {
        Param::Text(v)
    }
}

/// SQL text with its parameters. Placeholders are numbered as values are bound, so expressions
/// built ahead of time (which bind their own values) can be placed anywhere in the text.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) dialect: Dialect,
    pub(crate) text: String,
    pub(crate) params: Vec<Param>,
}

impl Sql {
    pub(crate) fn new(dialect: Dialect) -> Sql {
        Sql { dialect, text: String::new(), params: Vec::new() }
    }

    pub(crate) fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    fn bind_str(&mut self, v: &str) -> &mut Self {
        self.bind(v.to_owned())
    }

    pub(crate) fn bind(&mut self, v: impl Into<Param>) -> &mut Self {
        let p = self.placeholder(v);
        self.text.push_str(&p);
        self
    }

    /// Binds a value and returns its placeholder without writing it.
    fn placeholder(&mut self, v: impl Into<Param>) -> String {
        self.params.push(v.into());
        let n = self.params.len();
        match self.dialect {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// `(expr, value)` pattern operators with the reference evaluator's semantics: LIKE with no
    /// escape character, ILIKE, and RLIKE (a regular expression found anywhere in the text).
    fn pattern(&mut self, op: Op, expr: &str, pattern: String) -> StoreResult<()> {
        // SQLite matches through tl_ilike/tl_rlike, whose errors come back from a row as SQLite
        // failures: a pattern they cannot compile is refused here, as the caller's mistake.
        if self.dialect == Dialect::Sqlite && op != Op::Like {
            compile_pattern(op, &pattern).map_err(StoreError::InvalidArgument)?;
        }
        let p = self.placeholder(pattern);
        let text = match (self.dialect, op) {
            (Dialect::Sqlite, Op::Like) => format!("{expr} LIKE {p}"),
            (Dialect::Sqlite, Op::ILike) => format!("tl_ilike({p}, {expr})"),
            (Dialect::Sqlite, _) => format!("tl_rlike({p}, {expr})"),
            (Dialect::Postgres, Op::Like) => format!("{expr} LIKE {p} ESCAPE ''"),
            (Dialect::Postgres, Op::ILike) => format!("{expr} ILIKE {p} ESCAPE ''"),
            (Dialect::Postgres, _) => format!("{expr} ~ {p}"),
        };
        self.text.push_str(&text);
        Ok(())
    }
}

/// An ILIKE or RLIKE pattern as the reference evaluator reads it (what SQLite's `tl_ilike` and
/// `tl_rlike` match with).
pub(crate) fn compile_pattern(op: Op, pattern: &str) -> Result<regex::Regex, String> {
    match op {
        Op::ILike => like(pattern, true).map_err(|e| e.to_string()),
        _ => regex::Regex::new(pattern).map_err(|e| format!("invalid RLIKE pattern: {e}")),
    }
}

/// `<expr> <op> <value>` for a text-valued expression.
fn text_condition(sql: &mut Sql, expr: &str, clause: &Clause) -> StoreResult<()> {
    match (&clause.op, &clause.value) {
        (Op::Eq, l) => {
            sql.push(expr).push(" = ").bind(l.text());
        }
        (Op::NotEq, l) => {
            sql.push(expr).push(" != ").bind(l.text());
        }
        (op @ (Op::Like | Op::ILike | Op::RLike), l) => sql.pattern(*op, expr, l.text())?,
        (op @ (Op::In | Op::NotIn), Literal::List(items)) => {
            sql.push(expr).push(if *op == Op::In { " IN (" } else { " NOT IN (" });
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(item.clone());
            }
            sql.push(")");
        }
        (op, _) => {
            return Err(StoreError::InvalidArgument(format!("{} cannot compare text here", op.as_str())));
        }
    }
    Ok(())
}

fn number_condition(sql: &mut Sql, expr: &str, clause: &Clause) -> StoreResult<()> {
    let value = match clause.value {
        Literal::Int(i) => Param::Int(i),
        Literal::Float(f) => Param::Real(f),
        _ => return Err(StoreError::InvalidArgument("expected a number".into())),
    };
    let op = match clause.op {
        Op::Eq => " = ",
        Op::NotEq => " != ",
        Op::Gt => " > ",
        Op::Ge => " >= ",
        Op::Lt => " < ",
        Op::Le => " <= ",
        op => return Err(StoreError::InvalidArgument(format!("{} cannot compare numbers", op.as_str()))),
    };
    sql.push(expr).push(op).bind(value);
    Ok(())
}

/// `<alias>.key = <key> AND <alias>.value = <value>`, in the form the dialect's `(key, value)`
/// index answers.
pub(crate) fn kv_equals(sql: &mut Sql, alias: &str, key: &str, value: &str) {
    sql.push(&format!("{alias}.key = ")).bind_str(key);
    if sql.dialect == Dialect::Postgres {
        let n = PG_INDEXED_VALUE_CHARS;
        sql.push(&format!(" AND left({alias}.value, {n}) = left(")).bind_str(value).push(&format!(", {n})"));
    }
    sql.push(&format!(" AND {alias}.value = ")).bind_str(value);
}

/// A tag- or metadata-style key/value table condition.
fn kv_condition(sql: &mut Sql, table: &str, key: &str, clause: &Clause) -> StoreResult<()> {
    let exists = format!("EXISTS (SELECT 1 FROM {table} kv WHERE kv.trace_key = t.trace_key AND ");
    match (&clause.op, &clause.value) {
        (Op::IsNull | Op::IsNotNull, _) => {
            sql.push(if clause.op == Op::IsNull { "NOT " } else { "" });
            sql.push(&exists).push("kv.key = ").bind_str(key).push(")");
        }
        (Op::Eq, Literal::Str(value)) => {
            sql.push(&exists);
            kv_equals(sql, "kv", key, value);
            sql.push(")");
        }
        _ => {
            sql.push(&exists).push("kv.key = ").bind_str(key).push(" AND ");
            text_condition(sql, "kv.value", clause)?;
            sql.push(")");
        }
    }
    Ok(())
}

fn unsupported(what: &str) -> StoreError {
    StoreError::InvalidArgument(format!("{what} filters are not supported by the SQL stores yet"))
}

/// `run_id` matches metadata `mlflow.sourceRun` and the runs a trace is linked to; a negative
/// comparison matches traces that have a run and none of them matches.
fn run_condition(sql: &mut Sql, clause: &Clause) -> StoreResult<()> {
    let any = |sql: &mut Sql, c: &Clause| -> StoreResult<()> {
        sql.push("(EXISTS (SELECT 1 FROM trace_metadata kv WHERE kv.trace_key = t.trace_key AND kv.key = ")
            .bind_str(metadata_keys::SOURCE_RUN)
            .push(" AND ");
        text_condition(sql, "kv.value", c)?;
        sql.push(") OR EXISTS (SELECT 1 FROM trace_runs r WHERE r.trace_key = t.trace_key AND ");
        text_condition(sql, "r.run_id", c)?;
        sql.push("))");
        Ok(())
    };
    let positive = match clause.op {
        Op::NotEq => Op::Eq,
        Op::NotIn => Op::In,
        _ => return any(sql, clause),
    };
    sql.push("(NOT ");
    any(sql, &Clause { op: positive, ..clause.clone() })?;
    sql.push(" AND (EXISTS (SELECT 1 FROM trace_metadata kv WHERE kv.trace_key = t.trace_key AND kv.key = ")
        .bind_str(metadata_keys::SOURCE_RUN)
        .push(") OR EXISTS (SELECT 1 FROM trace_runs r WHERE r.trace_key = t.trace_key)))");
    Ok(())
}

/// A condition on the values of a trace's valid assessments of `kind` (`feedback` or
/// `expectation`) named `name`, as the reference evaluator reads them: a JSON string as its
/// text, anything else as JSON; numbers compared as numbers. A negative comparison needs every
/// such value to differ (and one to exist).
fn assessment_condition(sql: &mut Sql, kind: &str, name: &str, clause: &Clause) -> StoreResult<()> {
    let (from, text, number, is_number) = match sql.dialect {
        Dialect::Sqlite => {
            let path = format!("'$.{kind}.value'");
            (
                format!(
                    "FROM json_each(t.assessments) a WHERE json_type(a.value, {path}) IS NOT NULL \
                     AND coalesce(json_extract(a.value, '$.valid'), 1) != 0 AND json_extract(a.value, '$.assessment_name') = "
                ),
                format!(
                    "(CASE json_type(a.value, {path}) WHEN 'text' THEN json_extract(a.value, {path}) \
                     ELSE a.value -> {path} END)"
                ),
                format!("CAST(json_extract(a.value, {path}) AS REAL)"),
                format!("json_type(a.value, {path}) IN ('integer', 'real')"),
            )
        }
        Dialect::Postgres => {
            let value = format!("(a.v -> '{kind}' -> 'value')");
            (
                format!(
                    "FROM jsonb_array_elements(t.assessments::jsonb) a(v) WHERE {value} IS NOT NULL \
                     AND coalesce(a.v ->> 'valid', 'true') != 'false' AND a.v ->> 'assessment_name' = "
                ),
                format!(
                    "(CASE WHEN jsonb_typeof({value}) = 'string' THEN {value} #>> '{{}}' ELSE {value}::text END)"
                ),
                format!("({value} #>> '{{}}')::float8"),
                format!("jsonb_typeof({value}) = 'number'"),
            )
        }
    };
    let exists = |sql: &mut Sql, condition: &dyn Fn(&mut Sql) -> StoreResult<()>| -> StoreResult<()> {
        sql.push("EXISTS (SELECT 1 ").push(&from).bind_str(name).push(" AND ");
        condition(sql)?;
        sql.push(")");
        Ok(())
    };
    let always = |sql: &mut Sql| -> StoreResult<()> {
        sql.push("TRUE");
        Ok(())
    };
    match clause.op {
        Op::IsNull => {
            sql.push("NOT ");
            exists(sql, &always)
        }
        Op::IsNotNull => exists(sql, &always),
        Op::Gt | Op::Ge | Op::Lt | Op::Le => exists(sql, &|sql: &mut Sql| {
            sql.push(&is_number).push(" AND ");
            number_condition(sql, &number, clause)
        }),
        Op::NotEq | Op::NotIn => {
            let positive =
                Clause { op: if clause.op == Op::NotEq { Op::Eq } else { Op::In }, ..clause.clone() };
            sql.push("(");
            exists(sql, &always)?;
            sql.push(" AND NOT ");
            exists(sql, &|sql: &mut Sql| text_condition(sql, &text, &positive))?;
            sql.push(")");
            Ok(())
        }
        _ => exists(sql, &|sql: &mut Sql| text_condition(sql, &text, clause)),
    }
}

fn trace_condition(sql: &mut Sql, clause: &Clause) -> StoreResult<()> {
    match &clause.target {
        Target::Attribute(a) => match a {
            Attribute::TimestampMs => number_condition(sql, "t.request_time_ms", clause),
            Attribute::ExecutionTimeMs => number_condition(sql, "t.execution_duration_ms", clause),
            Attribute::EndTimeMs => {
                number_condition(sql, "(t.request_time_ms + t.execution_duration_ms)", clause)
            }
            Attribute::RequestId => text_condition(sql, "t.trace_id", clause),
            Attribute::Status => text_condition(sql, "t.state", clause),
            Attribute::ClientRequestId => text_condition(sql, "t.client_request_id", clause),
            Attribute::Name => kv_condition(sql, "trace_tags", tag_keys::TRACE_NAME, clause),
            Attribute::RunId => run_condition(sql, clause),
            Attribute::Text => {
                sql.push("EXISTS (SELECT 1 FROM spans s WHERE s.trace_key = t.trace_key AND ");
                text_condition(sql, "s.content", clause)?;
                sql.push(")");
                Ok(())
            }
            Attribute::Prompt => Err(unsupported("prompt")),
        },
        Target::Tag(k) => kv_condition(sql, "trace_tags", k, clause),
        Target::Metadata(k) => kv_condition(sql, "trace_metadata", k, clause),
        Target::Feedback(name) => assessment_condition(sql, "feedback", name, clause),
        Target::Expectation(name) => assessment_condition(sql, "expectation", name, clause),
        Target::IssueId => Err(unsupported("issue.id")),
        Target::Span(_) => unreachable!("span clauses are grouped"),
    }
}

/// A span attribute, decoded as the reference evaluator reads it: a JSON string's text, else
/// the raw JSON.
fn span_attribute_expr(sql: &mut Sql, key: &str) -> String {
    match sql.dialect {
        Dialect::Sqlite => {
            let path = format!("$.attributes.\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""));
            let p = sql.placeholder(path);
            format!(
                "(CASE WHEN json_valid(json_extract(s.content, {p})) AND json_type(json_extract(s.content, {p})) = 'text' \
                 THEN json_extract(json_extract(s.content, {p}), '$') ELSE json_extract(s.content, {p}) END)"
            )
        }
        Dialect::Postgres => {
            let p = sql.placeholder(key.to_owned());
            format!("tl_json_text(s.content::jsonb -> 'attributes' ->> {p})")
        }
    }
}

fn span_conditions(sql: &mut Sql, clauses: &[&Clause]) -> StoreResult<()> {
    sql.push("EXISTS (SELECT 1 FROM spans s WHERE s.trace_key = t.trace_key");
    for clause in clauses {
        sql.push(" AND ");
        let Target::Span(field) = &clause.target else { unreachable!("only span clauses") };
        match field {
            SpanField::Name => text_condition(sql, "s.name", clause)?,
            SpanField::Type => text_condition(sql, "s.type", clause)?,
            SpanField::Status => text_condition(sql, "s.status", clause)?,
            SpanField::Content => text_condition(sql, "s.content", clause)?,
            SpanField::Attribute(k) => {
                let expr = span_attribute_expr(sql, k);
                text_condition(sql, &expr, clause)?;
            }
        }
    }
    sql.push(")");
    Ok(())
}

/// The expression an order key sorts by, and whether it can be NULL.
fn order_expr(sql: &mut Sql, key: &OrderKey) -> (String, bool) {
    let kv = |sql: &mut Sql, table: &str, k: &str| {
        let p = sql.placeholder(k.to_owned());
        (format!("(SELECT value FROM {table} kv WHERE kv.trace_key = t.trace_key AND kv.key = {p})"), true)
    };
    match key {
        OrderKey::ExperimentId => ("t.experiment_id".into(), false),
        OrderKey::Attribute(Attribute::TimestampMs) => ("t.request_time_ms".into(), false),
        OrderKey::Attribute(Attribute::ExecutionTimeMs) => ("t.execution_duration_ms".into(), true),
        OrderKey::Attribute(Attribute::EndTimeMs) => {
            ("(t.request_time_ms + t.execution_duration_ms)".into(), true)
        }
        OrderKey::Attribute(Attribute::Status) => ("t.state".into(), false),
        OrderKey::Attribute(Attribute::RequestId) => ("t.trace_id".into(), false),
        OrderKey::Attribute(Attribute::Name) => kv(sql, "trace_tags", tag_keys::TRACE_NAME),
        OrderKey::Attribute(Attribute::RunId) => kv(sql, "trace_metadata", metadata_keys::SOURCE_RUN),
        OrderKey::Attribute(_) => ("NULL".into(), false),
        OrderKey::Tag(k) => kv(sql, "trace_tags", k),
        OrderKey::Metadata(k) => kv(sql, "trace_metadata", k),
    }
}

/// What a search selects from: the experiments, and optionally a `(table, key, value)` equality
/// that few traces match, to drive the search from the `(key, value)` index.
#[derive(Debug)]
pub(crate) struct SearchPlan<'q> {
    pub(crate) experiment_ids: &'q [i64],
    pub(crate) driver: Option<(&'static str, &'q str, &'q str)>,
    pub(crate) clauses: &'q [Clause],
    pub(crate) order_by: &'q [OrderBy],
    pub(crate) limit: usize,
    pub(crate) offset: usize,
}

/// `SELECT t.trace_id FROM traces t WHERE ...`: the ids of one page of a search, in order
/// (the query's keys, then `timestamp_ms DESC`, then `request_id ASC`; NULLs first ascending,
/// last descending, as the reference evaluator orders them).
pub(crate) fn search_sql(dialect: Dialect, plan: &SearchPlan<'_>) -> StoreResult<Sql> {
    let mut sql = Sql::new(dialect);
    // SQLite's `+` keeps its planner off the (experiment, time) index when a selective clause
    // drives the search.
    let hint = if plan.driver.is_some() && dialect == Dialect::Sqlite { "+" } else { "" };
    sql.push(&format!("SELECT t.trace_id FROM traces t WHERE {hint}t.experiment_id IN ("));
    for (i, id) in plan.experiment_ids.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(*id);
    }
    sql.push(")");
    if let Some((table, key, value)) = plan.driver {
        sql.push(&format!(" AND t.trace_key IN (SELECT trace_key FROM {table} d WHERE "));
        kv_equals(&mut sql, "d", key, value);
        sql.push(")");
    }
    let (span_clauses, trace_clauses): (Vec<&Clause>, Vec<&Clause>) =
        plan.clauses.iter().partition(|c| matches!(c.target, Target::Span(_)));
    for clause in trace_clauses {
        sql.push(" AND ");
        trace_condition(&mut sql, clause)?;
    }
    if !span_clauses.is_empty() {
        sql.push(" AND ");
        span_conditions(&mut sql, &span_clauses)?;
    }
    sql.push(" ORDER BY ");
    for o in plan.order_by {
        let (expr, nullable) = order_expr(&mut sql, &o.key);
        let direction = match (o.ascending, nullable) {
            (true, false) => " ASC, ",
            (false, false) => " DESC, ",
            (true, true) => " ASC NULLS FIRST, ",
            (false, true) => " DESC NULLS LAST, ",
        };
        sql.push(&expr).push(direction);
    }
    sql.push("t.request_time_ms DESC, t.trace_id ASC LIMIT ").bind(plan.limit as i64);
    sql.push(" OFFSET ").bind(plan.offset as i64);
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracelake_store::{parse_filter, parse_order_by};

    fn sql(dialect: Dialect, filter: &str, order_by: &[&str]) -> Sql {
        let filter = parse_filter(filter).unwrap();
        let order_by: Vec<String> = order_by.iter().map(|s| s.to_string()).collect();
        let order_by = parse_order_by(&order_by).unwrap();
        let plan = SearchPlan {
            experiment_ids: &[1, 2],
            driver: None,
            clauses: &filter.clauses,
            order_by: &order_by,
            limit: 10,
            offset: 0,
        };
        search_sql(dialect, &plan).unwrap()
    }

    #[test]
    fn placeholders_follow_the_dialect_and_count_every_bound_value() {
        let s = sql(Dialect::Postgres, "tags.env = 'prod' AND span.attributes.model RLIKE 'gpt'", &[]);
        assert_eq!(s.params.len(), 9, "{}", s.text);
        for n in 1..=9 {
            assert!(s.text.contains(&format!("${n}")), "missing ${n} in {}", s.text);
        }
        assert!(!s.text.contains('?'), "{}", s.text);
        assert!(s.text.contains("left(kv.value, 256)"), "the PostgreSQL value index is used: {}", s.text);
        assert!(s.text.contains(" ~ $"), "{}", s.text);

        let s = sql(Dialect::Sqlite, "tags.env = 'prod'", &[]);
        assert!(s.text.contains("?3") && !s.text.contains('$'), "{}", s.text);
        assert!(!s.text.contains("left("), "{}", s.text);
    }

    #[test]
    fn nullable_order_keys_put_nulls_where_the_evaluator_does() {
        let s = sql(Dialect::Postgres, "", &["tags.rank ASC", "timestamp_ms DESC", "execution_time_ms DESC"]);
        assert!(s.text.contains("= $3) ASC NULLS FIRST, t.request_time_ms DESC, "), "{}", s.text);
        assert!(s.text.contains("t.execution_duration_ms DESC NULLS LAST"), "{}", s.text);
    }

    #[test]
    fn like_has_no_escape_character_in_either_dialect() {
        assert!(sql(Dialect::Postgres, "tags.a LIKE 'x\\%'", &[]).text.contains("ESCAPE ''"));
        assert!(sql(Dialect::Sqlite, "tags.a ILIKE 'x%'", &[]).text.contains("tl_ilike(?"));
    }
}
