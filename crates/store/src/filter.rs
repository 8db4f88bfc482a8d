//! MLflow's `search_traces` filter grammar: parsing and validation into a [`Filter`].
//!
//! A filter is comparisons joined by `AND` (MLflow has no `OR` and no grouping):
//!
//! ```text
//! tag.env = 'prod' AND trace.timestamp_ms > 1700000000000 AND span.type IN ('LLM', 'TOOL')
//! ```
//!
//! Identifiers are `<entity>.<key>`; keys with dots, spaces or dashes may be quoted in
//! backticks (``tag.`my key` ``). A bare key (`status`) is a trace attribute. Strings take
//! single or double quotes (a quote inside is doubled); numbers are bare. Every error names the
//! 1-based column where the problem starts and, where it helps, what to write instead.

use std::fmt;

mod experiments;

pub use experiments::{
    ExperimentOrderKey, ExperimentTarget, parse_experiment_filter, parse_experiment_order_by,
};

/// A parsed, validated filter: every clause must hold. `T` is what a clause can name: trace
/// fields ([`Target`]) or experiment fields ([`ExperimentTarget`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter<T = Target> {
    pub clauses: Vec<Clause<T>>,
}

impl<T> Default for Filter<T> {
    fn default() -> Self {
        Filter { clauses: Vec::new() }
    }
}

/// One comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause<T = Target> {
    pub target: T,
    pub op: Op,
    pub value: Literal,
    /// 1-based column of the clause's first character.
    pub column: usize,
}

/// What a clause compares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Attribute(Attribute),
    Tag(String),
    Metadata(String),
    /// A predicate on spans; all span clauses of a filter apply to the same span.
    Span(SpanField),
    /// An assessment of kind feedback, by name.
    Feedback(String),
    /// An assessment of kind expectation, by name.
    Expectation(String),
    /// `issue.id`.
    IssueId,
}

/// Trace attributes a filter can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribute {
    RequestId,
    TimestampMs,
    ExecutionTimeMs,
    /// Timestamp plus duration.
    EndTimeMs,
    Status,
    ClientRequestId,
    /// The root span's name (tag `mlflow.traceName`).
    Name,
    /// Traces of a run: metadata `mlflow.sourceRun` or a trace-to-run link.
    RunId,
    /// A linked prompt, `name/version`.
    Prompt,
    /// Full text over the spans' content.
    Text,
}

/// Span fields a filter can name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SpanField {
    Name,
    Type,
    Status,
    Content,
    /// `span.attributes.<key>`.
    Attribute(String),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    NotEq,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    ILike,
    RLike,
    In,
    NotIn,
    IsNull,
    IsNotNull,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::NotEq => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Like => "LIKE",
            Op::ILike => "ILIKE",
            Op::RLike => "RLIKE",
            Op::In => "IN",
            Op::NotIn => "NOT IN",
            Op::IsNull => "IS NULL",
            Op::IsNotNull => "IS NOT NULL",
        }
    }
}

/// The right-hand side of a clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i64),
    Float(f64),
    List(Vec<String>),
    /// For `IS NULL` / `IS NOT NULL`.
    None,
}

impl Literal {
    /// The value as text to compare with: numbers as written, lists and `None` as empty.
    pub fn text(&self) -> String {
        match self {
            Literal::Int(i) => i.to_string(),
            Literal::Float(f) => f.to_string(),
            Literal::Str(s) => s.clone(),
            _ => String::new(),
        }
    }
}

/// A filter or order-by that cannot be used, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FilterError {
    /// 1-based character column where the problem starts.
    pub column: usize,
    pub message: String,
    /// What to write instead, when there is an obvious fix.
    pub hint: Option<String>,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid filter at column {}: {}", self.column, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (try {hint})")?;
        }
        Ok(())
    }
}

fn error(column: usize, message: impl Into<String>) -> FilterError {
    FilterError { column, message: message.into(), hint: None }
}

fn error_hint(column: usize, message: impl Into<String>, hint: impl Into<String>) -> FilterError {
    FilterError { column, message: message.into(), hint: Some(hint.into()) }
}

// ---- lexer --------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// An identifier split into its dot-separated parts (backticks removed).
    Ident(Vec<String>),
    Str(String),
    Num(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    column: usize,
    /// The identifier as written, for keyword checks and messages.
    text: String,
}

fn lex(input: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let tok = match c {
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            ',' => {
                i += 1;
                Tok::Comma
            }
            '\'' | '"' => {
                let (s, next) = lex_string(&chars, i)?;
                i = next;
                Tok::Str(s)
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                return Err(error_hint(column, "'==' is not a comparison operator here", "="));
            }
            '=' => {
                i += 1;
                Tok::Op("=")
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                i += 2;
                Tok::Op("!=")
            }
            '<' => match chars.get(i + 1) {
                Some('=') => {
                    i += 2;
                    Tok::Op("<=")
                }
                Some('>') => {
                    i += 2;
                    Tok::Op("!=")
                }
                _ => {
                    i += 1;
                    Tok::Op("<")
                }
            },
            '>' => {
                if chars.get(i + 1) == Some(&'=') {
                    i += 2;
                    Tok::Op(">=")
                } else {
                    i += 1;
                    Tok::Op(">")
                }
            }
            c if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '+' | '-'))
                {
                    // an exponent sign only directly after 'e'
                    if matches!(chars[i], '+' | '-') && !matches!(chars[i - 1], 'e' | 'E') {
                        break;
                    }
                    i += 1;
                }
                Tok::Num(chars[start..i].iter().collect())
            }
            c if c.is_alphabetic() || c == '_' || c == '`' => {
                let (parts, next) = lex_identifier(&chars, i)?;
                i = next;
                Tok::Ident(parts)
            }
            other => return Err(error(column, format!("unexpected character {other:?}"))),
        };
        tokens.push(Token { tok, column, text: chars[start..i].iter().collect() });
    }
    Ok(tokens)
}

fn lex_string(chars: &[char], open: usize) -> Result<(String, usize), FilterError> {
    let quote = chars[open];
    let mut s = String::new();
    let mut i = open + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                s.push(chars[i + 1]);
                i += 2;
            }
            c if c == quote => {
                if chars.get(i + 1) == Some(&quote) {
                    s.push(quote);
                    i += 2;
                } else {
                    return Ok((s, i + 1));
                }
            }
            c => {
                s.push(c);
                i += 1;
            }
        }
    }
    Err(error_hint(open + 1, "unterminated string", format!("closing it with {quote}")))
}

fn lex_identifier(chars: &[char], start: usize) -> Result<(Vec<String>, usize), FilterError> {
    let mut parts = Vec::new();
    let mut i = start;
    loop {
        let mut part = String::new();
        if chars.get(i) == Some(&'`') {
            let open = i;
            i += 1;
            while i < chars.len() && chars[i] != '`' {
                part.push(chars[i]);
                i += 1;
            }
            if i == chars.len() {
                return Err(error_hint(open + 1, "unterminated backtick-quoted name", "closing it with `"));
            }
            i += 1;
        } else {
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '-' | ':' | '/'))
            {
                part.push(chars[i]);
                i += 1;
            }
            if part.is_empty() {
                return Err(error(i + 1, "expected a name after '.'"));
            }
        }
        parts.push(part);
        if chars.get(i) == Some(&'.') {
            i += 1;
        } else {
            return Ok((parts, i));
        }
    }
}

// ---- parser -------------------------------------------------------------------------------

/// Parses and validates a `search_traces` filter. An empty or blank filter matches everything.
pub fn parse_filter(input: &str) -> Result<Filter, FilterError> {
    parse_with::<TraceGrammar>(input)
}

/// What differs between the filter grammars of traces and experiments: the names a clause may
/// compare, and which operators and values each name takes.
trait Grammar {
    type Target;
    /// Used in messages: "OR is not supported in {KIND} filters".
    const KIND: &'static str;
    /// Examples of names a clause compares, for messages.
    const NAMES: &'static str;
    /// An example of a comparison, for hints.
    const EXAMPLE: &'static str;
    /// How to do without OR, for hints.
    const OR_HINT: &'static str;
    fn resolve(parts: &[String], column: usize) -> Result<Self::Target, FilterError>;
    fn validate(
        target: &Self::Target,
        op: Op,
        value: &Literal,
        name: &str,
        column: usize,
    ) -> Result<(), FilterError>;
}

struct TraceGrammar;

impl Grammar for TraceGrammar {
    type Target = Target;
    const KIND: &'static str = "trace";
    const NAMES: &'static str = "tag.<key> or trace.status";
    const EXAMPLE: &'static str = "tag.env = 'prod'";
    const OR_HINT: &'static str = "two searches, or IN: status IN ('OK', 'ERROR')";

    fn resolve(parts: &[String], column: usize) -> Result<Target, FilterError> {
        resolve_target(parts, column)
    }

    fn validate(
        target: &Target,
        op: Op,
        value: &Literal,
        name: &str,
        column: usize,
    ) -> Result<(), FilterError> {
        validate(target, op, value, name, column)
    }
}

/// Comparisons joined by AND, each read by grammar `G`.
fn parse_with<G: Grammar>(input: &str) -> Result<Filter<G::Target>, FilterError> {
    let tokens = lex(input)?;
    let end_column = input.chars().count() + 1;
    let mut p = Parser { tokens, pos: 0, end_column };
    let mut clauses = Vec::new();
    if p.tokens.is_empty() {
        return Ok(Filter { clauses });
    }
    loop {
        clauses.push(p.clause::<G>()?);
        match p.peek() {
            None => break,
            Some(t) if p.is_keyword(t, "AND") => {
                p.pos += 1;
                match p.peek() {
                    None => return Err(error(p.end_column, "expected a comparison after AND")),
                    Some(next) if p.is_keyword(next, "AND") => {
                        return Err(error(next.column, "AND appears twice in a row"));
                    }
                    Some(_) => {}
                }
            }
            Some(t) if p.is_keyword(t, "OR") => {
                return Err(error_hint(
                    t.column,
                    format!("OR is not supported in {} filters", G::KIND),
                    G::OR_HINT,
                ));
            }
            Some(t) => {
                return Err(error(t.column, format!("expected AND between comparisons, found {:?}", t.text)));
            }
        }
    }
    Ok(Filter { clauses })
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end_column: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += usize::from(t.is_some());
        t
    }

    fn column(&self) -> usize {
        self.peek().map_or(self.end_column, |t| t.column)
    }

    fn is_keyword(&self, t: &Token, kw: &str) -> bool {
        matches!(&t.tok, Tok::Ident(parts) if parts.len() == 1 && parts[0].eq_ignore_ascii_case(kw))
            && !t.text.starts_with('`')
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if self.peek().is_some_and(|t| self.is_keyword(t, kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn clause<G: Grammar>(&mut self) -> Result<Clause<G::Target>, FilterError> {
        let Some(first) = self.next() else { return Err(error(self.end_column, "expected a comparison")) };
        let Tok::Ident(parts) = &first.tok else {
            return Err(error_hint(
                first.column,
                format!("expected a name such as {}, found {:?}", G::NAMES, first.text),
                G::EXAMPLE,
            ));
        };
        let target = G::resolve(parts, first.column)?;
        let op_column = self.column();
        let op = self.op()?;
        let value = self.value(op, op_column)?;
        G::validate(&target, op, &value, &first.text, op_column)?;
        Ok(Clause { target, op, value, column: first.column })
    }

    fn op(&mut self) -> Result<Op, FilterError> {
        let column = self.column();
        let Some(t) = self.next() else {
            return Err(error_hint(
                column,
                "expected a comparison operator",
                "=, !=, <, >, LIKE, IN or IS NULL",
            ));
        };
        let op = match &t.tok {
            Tok::Op("=") => Op::Eq,
            Tok::Op("!=") => Op::NotEq,
            Tok::Op("<") => Op::Lt,
            Tok::Op("<=") => Op::Le,
            Tok::Op(">") => Op::Gt,
            Tok::Op(">=") => Op::Ge,
            _ if self.is_keyword(&t, "LIKE") => Op::Like,
            _ if self.is_keyword(&t, "ILIKE") => Op::ILike,
            _ if self.is_keyword(&t, "RLIKE") => Op::RLike,
            _ if self.is_keyword(&t, "IN") => Op::In,
            _ if self.is_keyword(&t, "NOT") => {
                if self.keyword("IN") {
                    Op::NotIn
                } else {
                    return Err(error(self.column(), "expected IN after NOT"));
                }
            }
            _ if self.is_keyword(&t, "IS") => {
                let not = self.keyword("NOT");
                if !self.keyword("NULL") {
                    return Err(error_hint(
                        self.column(),
                        "expected NULL after IS",
                        "IS NULL or IS NOT NULL",
                    ));
                }
                if not { Op::IsNotNull } else { Op::IsNull }
            }
            _ => {
                return Err(error_hint(
                    t.column,
                    format!("expected a comparison operator, found {:?}", t.text),
                    "=, !=, <, >, LIKE, IN or IS NULL",
                ));
            }
        };
        Ok(op)
    }

    fn value(&mut self, op: Op, op_column: usize) -> Result<Literal, FilterError> {
        if matches!(op, Op::IsNull | Op::IsNotNull) {
            return Ok(Literal::None);
        }
        let column = self.column();
        let Some(t) = self.next() else {
            return Err(error_hint(
                column,
                format!("expected a value after {}", op.as_str()),
                "a quoted string: 'prod'",
            ));
        };
        match (&t.tok, op) {
            (Tok::LParen, Op::In | Op::NotIn) => self.list(t.column),
            (_, Op::In | Op::NotIn) => Err(error_hint(
                t.column,
                format!("{} takes a parenthesized list of strings", op.as_str()),
                "status IN ('OK', 'ERROR')",
            )),
            (Tok::Str(s), _) => Ok(Literal::Str(s.clone())),
            (Tok::Num(n), _) => parse_number(n, t.column),
            (Tok::Ident(_), _) => Err(error_hint(
                t.column,
                format!("expected a quoted string or a number after {}, found {:?}", op.as_str(), t.text),
                format!("'{}'", t.text),
            )),
            _ => Err(error(
                op_column.max(t.column),
                format!("expected a value after {}, found {:?}", op.as_str(), t.text),
            )),
        }
    }

    fn list(&mut self, open: usize) -> Result<Literal, FilterError> {
        let mut items = Vec::new();
        loop {
            let column = self.column();
            match self.next().map(|t| t.tok) {
                Some(Tok::Str(s)) => items.push(s),
                Some(Tok::RParen) if items.is_empty() => {
                    return Err(error(column, "IN needs at least one value"));
                }
                _ => {
                    return Err(error_hint(
                        column,
                        "expected a quoted string in the list",
                        "('OK', 'ERROR')",
                    ));
                }
            }
            let column = self.column();
            match self.next().map(|t| t.tok) {
                Some(Tok::Comma) => {}
                Some(Tok::RParen) => return Ok(Literal::List(items)),
                _ => {
                    return Err(FilterError {
                        column,
                        message: format!("expected ',' or ')' in the list opened at column {open}"),
                        hint: None,
                    });
                }
            }
        }
    }
}

fn parse_number(text: &str, column: usize) -> Result<Literal, FilterError> {
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Literal::Int(i));
    }
    text.parse::<f64>().map(Literal::Float).map_err(|_| error(column, format!("{text:?} is not a number")))
}

const ENTITIES: &str = "trace (or attribute), tag, metadata, span, feedback, expectation or issue";
const ATTRIBUTES: &str = "request_id, timestamp_ms, execution_time_ms, end_time_ms, status, client_request_id, \
                          name, run_id, prompt, text";

fn resolve_target(parts: &[String], column: usize) -> Result<Target, FilterError> {
    if parts.len() == 1 {
        return attribute(&parts[0], column).map(Target::Attribute);
    }
    let key = parts[1..].join(".");
    let entity = parts[0].to_ascii_lowercase();
    match entity.as_str() {
        "attribute" | "attributes" | "trace" => attribute(&key, column).map(Target::Attribute),
        "tag" | "tags" => Ok(Target::Tag(key)),
        "metadata" | "request_metadata" => Ok(Target::Metadata(key)),
        "feedback" => Ok(Target::Feedback(key)),
        "expectation" => Ok(Target::Expectation(key)),
        "issue" if key == "id" => Ok(Target::IssueId),
        "issue" => Err(error_hint(column, format!("unknown issue field {key:?}"), "issue.id = '...'")),
        "span" => match parts[1].as_str() {
            "name" if parts.len() == 2 => Ok(Target::Span(SpanField::Name)),
            "type" if parts.len() == 2 => Ok(Target::Span(SpanField::Type)),
            "status" if parts.len() == 2 => Ok(Target::Span(SpanField::Status)),
            "content" if parts.len() == 2 => Ok(Target::Span(SpanField::Content)),
            "attributes" | "attribute" if parts.len() > 2 => {
                Ok(Target::Span(SpanField::Attribute(parts[2..].join("."))))
            }
            _ => Err(error_hint(
                column,
                format!(
                    "unknown span field {key:?}; expected name, type, status, content or attributes.<key>"
                ),
                "span.type = 'LLM'",
            )),
        },
        _ => Err(error(column, format!("unknown entity {:?}; expected {ENTITIES}", parts[0]))),
    }
}

fn attribute(key: &str, column: usize) -> Result<Attribute, FilterError> {
    Ok(match key.to_ascii_lowercase().as_str() {
        "request_id" | "trace_id" => Attribute::RequestId,
        "timestamp" | "timestamp_ms" => Attribute::TimestampMs,
        "execution_time" | "execution_time_ms" => Attribute::ExecutionTimeMs,
        "end_time" | "end_time_ms" => Attribute::EndTimeMs,
        "status" | "state" => Attribute::Status,
        "client_request_id" => Attribute::ClientRequestId,
        "name" => Attribute::Name,
        "run_id" => Attribute::RunId,
        "prompt" => Attribute::Prompt,
        "text" => Attribute::Text,
        _ => {
            return Err(error_hint(
                column,
                format!("unknown trace attribute {key:?}; expected one of {ATTRIBUTES}"),
                format!("tag.{key} or metadata.{key} for a tag or metadata key"),
            ));
        }
    })
}

/// Checks the operator and the value's type against what the target supports.
fn validate(target: &Target, op: Op, value: &Literal, name: &str, column: usize) -> Result<(), FilterError> {
    use Op::*;
    let numeric_ops = [Eq, NotEq, Gt, Ge, Lt, Le];
    let (allowed, needs): (&[Op], Need) = match target {
        Target::Attribute(Attribute::TimestampMs | Attribute::ExecutionTimeMs | Attribute::EndTimeMs) => {
            (&numeric_ops, Need::Number)
        }
        Target::Attribute(
            Attribute::Name
            | Attribute::Status
            | Attribute::RequestId
            | Attribute::RunId
            | Attribute::ClientRequestId,
        ) => (&[Eq, NotEq, Like, ILike, RLike, In, NotIn], Need::String),
        Target::Attribute(Attribute::Prompt) => (&[Eq], Need::String),
        Target::Attribute(Attribute::Text) | Target::Span(SpanField::Content) => {
            (&[Like, ILike], Need::String)
        }
        Target::Tag(_) | Target::Metadata(_) => {
            (&[Eq, NotEq, Like, ILike, RLike, IsNull, IsNotNull], Need::String)
        }
        Target::Span(_) => (&[Eq, NotEq, In, NotIn, Like, ILike, RLike], Need::String),
        Target::Feedback(_) | Target::Expectation(_) => {
            if matches!(op, Gt | Ge | Lt | Le) {
                (&numeric_ops, Need::Number)
            } else {
                (&[Eq, NotEq, Like, ILike, RLike, IsNull, IsNotNull], Need::Any)
            }
        }
        Target::IssueId => (&[Eq], Need::String),
    };
    supported(allowed, op, name, column)?;
    match (needs, value) {
        (_, Literal::None | Literal::List(_)) => Ok(()),
        (Need::Number, Literal::Int(_) | Literal::Float(_)) => Ok(()),
        (Need::Number, Literal::Str(s)) => Err(error_hint(
            column,
            format!("{name} is compared with a number, not the string {s:?}"),
            if name.to_ascii_lowercase().contains("time") {
                format!("milliseconds since the epoch: {name} {} 1700000000000", op.as_str())
            } else {
                format!("{name} {} 0.5", op.as_str())
            },
        )),
        (Need::String, Literal::Int(_) | Literal::Float(_)) => Err(error_hint(
            column,
            format!("{name} is compared with a quoted string"),
            format!("{name} {} '{}'", op.as_str(), value.text()),
        )),
        _ => Ok(()),
    }
}

/// Refuses an operator `name` does not take, listing those it does.
fn supported(allowed: &[Op], op: Op, name: &str, column: usize) -> Result<(), FilterError> {
    if allowed.contains(&op) {
        return Ok(());
    }
    let list: Vec<_> = allowed.iter().map(|o| o.as_str()).collect();
    Err(error(column, format!("{name} does not support {}; use one of {}", op.as_str(), list.join(", "))))
}

#[derive(Clone, Copy)]
enum Need {
    Number,
    String,
    Any,
}

// ---- order by -----------------------------------------------------------------------------

/// One `order_by` entry: a key of traces ([`OrderKey`]) or of experiments
/// ([`ExperimentOrderKey`]), and its direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy<K = OrderKey> {
    pub key: K,
    pub ascending: bool,
}

/// What search results can be ordered by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrderKey {
    ExperimentId,
    Attribute(Attribute),
    Tag(String),
    Metadata(String),
}

/// Parses `order_by` entries (`"timestamp_ms DESC"`, `"tag.env"`); duplicates are refused.
/// The error's column counts within the offending entry.
pub fn parse_order_by(entries: &[impl AsRef<str>]) -> Result<Vec<OrderBy>, FilterError> {
    parse_order_with(entries, "timestamp_ms DESC", order_key)
}

/// `order_by` entries whose keys `key` resolves; `example` is a valid entry, for hints.
fn parse_order_with<K: PartialEq>(
    entries: &[impl AsRef<str>],
    example: &str,
    key: impl Fn(&[String], usize) -> Result<K, FilterError>,
) -> Result<Vec<OrderBy<K>>, FilterError> {
    let mut out: Vec<OrderBy<K>> = Vec::new();
    for entry in entries {
        let entry = entry.as_ref();
        let tokens = lex(entry)?;
        let (key_tok, rest) = match tokens.split_first() {
            Some((k @ Token { tok: Tok::Ident(_), .. }, rest)) => (k, rest),
            _ => {
                return Err(error_hint(1, format!("expected a key to order by in {entry:?}"), example));
            }
        };
        let Tok::Ident(parts) = &key_tok.tok else { unreachable!("matched above") };
        let ascending = match rest {
            [] => true,
            [t] if matches!(&t.tok, Tok::Ident(p) if p.len() == 1 && p[0].eq_ignore_ascii_case("ASC")) => {
                true
            }
            [t] if matches!(&t.tok, Tok::Ident(p) if p.len() == 1 && p[0].eq_ignore_ascii_case("DESC")) => {
                false
            }
            [t, ..] => {
                return Err(error_hint(
                    t.column,
                    format!("expected ASC or DESC, found {:?}", t.text),
                    example,
                ));
            }
        };
        let key = key(parts, key_tok.column)?;
        if out.iter().any(|o| o.key == key) {
            return Err(error(key_tok.column, format!("{:?} appears twice in order_by", key_tok.text)));
        }
        out.push(OrderBy { key, ascending });
    }
    Ok(out)
}

fn order_key(parts: &[String], column: usize) -> Result<OrderKey, FilterError> {
    if parts.len() == 1 && parts[0].eq_ignore_ascii_case("experiment_id") {
        return Ok(OrderKey::ExperimentId);
    }
    match resolve_target(parts, column)? {
        Target::Attribute(
            a @ (Attribute::TimestampMs
            | Attribute::ExecutionTimeMs
            | Attribute::EndTimeMs
            | Attribute::Status
            | Attribute::RequestId
            | Attribute::Name
            | Attribute::RunId),
        ) => Ok(OrderKey::Attribute(a)),
        Target::Tag(k) => Ok(OrderKey::Tag(k)),
        Target::Metadata(k) => Ok(OrderKey::Metadata(k)),
        _ => Err(error(
            column,
            "cannot order by this key; use experiment_id, timestamp_ms, execution_time_ms, end_time_ms, status, \
             request_id, name, run_id, tag.<key> or metadata.<key>",
        )),
    }
}
