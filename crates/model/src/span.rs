//! Finished spans and their parts.

use std::borrow::Cow;
use std::fmt;

use serde_json::{Map, Value};

use crate::attributes::{Attributes, keys};
use crate::ids::{SpanId, TraceId};

/// What a span does. The fifteen MLflow types, or any other name.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub enum SpanType {
    Llm,
    ChatModel,
    Chain,
    Agent,
    Tool,
    Embedding,
    Retriever,
    Parser,
    Reranker,
    Memory,
    Workflow,
    Task,
    Guardrail,
    Evaluator,
    #[default]
    Unknown,
    /// A type MLflow does not name; kept verbatim.
    Custom(Cow<'static, str>),
}

impl SpanType {
    /// Every type MLflow names, in the order its `SpanType` lists them.
    pub const KNOWN: [SpanType; 15] = [
        SpanType::Llm,
        SpanType::Chain,
        SpanType::Agent,
        SpanType::Tool,
        SpanType::ChatModel,
        SpanType::Retriever,
        SpanType::Parser,
        SpanType::Embedding,
        SpanType::Reranker,
        SpanType::Memory,
        SpanType::Unknown,
        SpanType::Workflow,
        SpanType::Task,
        SpanType::Guardrail,
        SpanType::Evaluator,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            SpanType::Llm => "LLM",
            SpanType::ChatModel => "CHAT_MODEL",
            SpanType::Chain => "CHAIN",
            SpanType::Agent => "AGENT",
            SpanType::Tool => "TOOL",
            SpanType::Embedding => "EMBEDDING",
            SpanType::Retriever => "RETRIEVER",
            SpanType::Parser => "PARSER",
            SpanType::Reranker => "RERANKER",
            SpanType::Memory => "MEMORY",
            SpanType::Workflow => "WORKFLOW",
            SpanType::Task => "TASK",
            SpanType::Guardrail => "GUARDRAIL",
            SpanType::Evaluator => "EVALUATOR",
            SpanType::Unknown => "UNKNOWN",
            SpanType::Custom(name) => name,
        }
    }

    /// The attribute value MLflow stores for this type: the JSON string of its name.
    pub fn to_json(&self) -> Cow<'static, str> {
        match self {
            SpanType::Llm => Cow::Borrowed("\"LLM\""),
            SpanType::ChatModel => Cow::Borrowed("\"CHAT_MODEL\""),
            SpanType::Chain => Cow::Borrowed("\"CHAIN\""),
            SpanType::Agent => Cow::Borrowed("\"AGENT\""),
            SpanType::Tool => Cow::Borrowed("\"TOOL\""),
            SpanType::Embedding => Cow::Borrowed("\"EMBEDDING\""),
            SpanType::Retriever => Cow::Borrowed("\"RETRIEVER\""),
            SpanType::Parser => Cow::Borrowed("\"PARSER\""),
            SpanType::Reranker => Cow::Borrowed("\"RERANKER\""),
            SpanType::Memory => Cow::Borrowed("\"MEMORY\""),
            SpanType::Workflow => Cow::Borrowed("\"WORKFLOW\""),
            SpanType::Task => Cow::Borrowed("\"TASK\""),
            SpanType::Guardrail => Cow::Borrowed("\"GUARDRAIL\""),
            SpanType::Evaluator => Cow::Borrowed("\"EVALUATOR\""),
            SpanType::Unknown => Cow::Borrowed("\"UNKNOWN\""),
            SpanType::Custom(name) => Cow::Owned(crate::attributes::to_json(name.as_ref())),
        }
    }

    /// The MLflow type named `name`, or a custom type.
    pub fn parse(name: &str) -> SpanType {
        Self::KNOWN
            .into_iter()
            .find(|t| t.as_str() == name)
            .unwrap_or_else(|| SpanType::Custom(Cow::Owned(name.to_owned())))
    }

    /// The log level a span of this type gets when it ends without an explicit one:
    /// INFO for the types users look at first, DEBUG for plumbing.
    pub fn default_log_level(&self) -> LogLevel {
        match self {
            SpanType::Llm
            | SpanType::ChatModel
            | SpanType::Tool
            | SpanType::Retriever
            | SpanType::Agent
            | SpanType::Embedding => LogLevel::Info,
            _ => LogLevel::Debug,
        }
    }
}

impl fmt::Display for SpanType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SpanType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanType({})", self.as_str())
    }
}

impl From<&str> for SpanType {
    fn from(name: &str) -> Self {
        SpanType::parse(name)
    }
}

impl From<String> for SpanType {
    fn from(name: String) -> Self {
        match SpanType::parse(&name) {
            SpanType::Custom(_) => SpanType::Custom(Cow::Owned(name)),
            known => known,
        }
    }
}

/// MLflow's span log level (`SpanLogLevel`), stored as the integer under `mlflow.spanLogLevel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
    Critical = 50,
}

impl LogLevel {
    /// The attribute value MLflow stores: the integer as JSON.
    pub fn to_json(self) -> &'static str {
        match self {
            LogLevel::Debug => "10",
            LogLevel::Info => "20",
            LogLevel::Warning => "30",
            LogLevel::Error => "40",
            LogLevel::Critical => "50",
        }
    }
}

/// OpenTelemetry span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SpanKind {
    Unspecified,
    #[default]
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// The OTLP enum name (`SPAN_KIND_INTERNAL`, ...).
    pub fn as_otlp_name(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "SPAN_KIND_UNSPECIFIED",
            SpanKind::Internal => "SPAN_KIND_INTERNAL",
            SpanKind::Server => "SPAN_KIND_SERVER",
            SpanKind::Client => "SPAN_KIND_CLIENT",
            SpanKind::Producer => "SPAN_KIND_PRODUCER",
            SpanKind::Consumer => "SPAN_KIND_CONSUMER",
        }
    }

    pub fn from_otlp_name(name: &str) -> Option<SpanKind> {
        [
            SpanKind::Unspecified,
            SpanKind::Internal,
            SpanKind::Server,
            SpanKind::Client,
            SpanKind::Producer,
            SpanKind::Consumer,
        ]
        .into_iter()
        .find(|k| k.as_otlp_name() == name || k.as_otlp_name().strip_prefix("SPAN_KIND_") == Some(name))
    }
}

/// Span status code. MLflow forces `Ok` at the end of a span unless it is `Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StatusCode {
    #[default]
    Unset,
    Ok,
    Error,
}

impl StatusCode {
    /// The OTLP enum name (`STATUS_CODE_OK`, ...).
    pub fn as_otlp_name(self) -> &'static str {
        match self {
            StatusCode::Unset => "STATUS_CODE_UNSET",
            StatusCode::Ok => "STATUS_CODE_OK",
            StatusCode::Error => "STATUS_CODE_ERROR",
        }
    }

    /// The short name (`OK`, `ERROR`, `UNSET`) MLflow uses in filters and older files.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusCode::Unset => "UNSET",
            StatusCode::Ok => "OK",
            StatusCode::Error => "ERROR",
        }
    }

    /// Accepts the OTLP name or the short name.
    pub fn parse(name: &str) -> Option<StatusCode> {
        [StatusCode::Unset, StatusCode::Ok, StatusCode::Error]
            .into_iter()
            .find(|c| c.as_otlp_name() == name || c.as_str() == name)
    }
}

/// A span's status: a code and, for errors, a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpanStatus {
    pub code: StatusCode,
    pub message: String,
}

impl SpanStatus {
    pub fn ok() -> Self {
        Self { code: StatusCode::Ok, message: String::new() }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self { code: StatusCode::Error, message: message.into() }
    }
}

/// A timestamped event on a span. Attribute values are plain JSON values, not JSON-encoded
/// strings (unlike span attributes).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    pub name: String,
    pub time_unix_nano: u64,
    pub attributes: Map<String, Value>,
}

/// Name and attribute keys of the OpenTelemetry exception event.
pub mod exception {
    pub const EVENT_NAME: &str = "exception";
    pub const TYPE: &str = "exception.type";
    pub const MESSAGE: &str = "exception.message";
    pub const STACKTRACE: &str = "exception.stacktrace";
}

impl SpanEvent {
    pub fn new(name: impl Into<String>, time_unix_nano: u64) -> Self {
        Self { name: name.into(), time_unix_nano, attributes: Map::new() }
    }

    /// An `exception` event as OpenTelemetry and MLflow record errors.
    pub fn exception(time_unix_nano: u64, kind: &str, message: &str, stacktrace: Option<&str>) -> Self {
        let mut event = Self::new(exception::EVENT_NAME, time_unix_nano);
        event.attributes.insert(exception::MESSAGE.into(), message.into());
        event.attributes.insert(exception::TYPE.into(), kind.into());
        if let Some(stack) = stacktrace {
            event.attributes.insert(exception::STACKTRACE.into(), stack.into());
        }
        event
    }

    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }
}

/// A link from a span to a span of another (or the same) trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The MLflow id of the linked trace (`tr-...` or `trace:/...`).
    pub trace_id: String,
    /// The linked span id, 16 hex digits.
    pub span_id: String,
    pub attributes: Option<Map<String, Value>>,
}

/// Where spans came from: the OpenTelemetry resource and instrumentation scope they were sent
/// under. Stores that keep OpenTelemetry's shape (the lake) write it; the others ignore it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanOrigin {
    /// Resource attributes, decoded.
    pub resource: Map<String, Value>,
    pub scope_name: String,
    pub scope_version: String,
}

/// A finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_id: Option<SpanId>,
    /// Static for names known at compile time (no allocation per span), as OpenTelemetry does.
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    pub start_time_unix_nano: u64,
    /// `None` only for spans read from a file written while they were still open.
    pub end_time_unix_nano: Option<u64>,
    pub status: SpanStatus,
    pub attributes: Attributes,
    pub events: Vec<SpanEvent>,
    pub links: Vec<Link>,
}

impl Span {
    /// The span's MLflow type (`UNKNOWN` when none was recorded).
    pub fn span_type(&self) -> SpanType {
        self.attributes
            .get_str(keys::SPAN_TYPE)
            .map(|s| match s {
                // a borrowed name is copied only when it is a custom type
                Cow::Borrowed(name) => SpanType::parse(name),
                Cow::Owned(name) => SpanType::from(name),
            })
            .unwrap_or_default()
    }

    pub fn inputs(&self) -> Option<Value> {
        self.attributes.get(keys::INPUTS)
    }

    pub fn outputs(&self) -> Option<Value> {
        self.attributes.get(keys::OUTPUTS)
    }

    /// The MLflow trace id stamped on the span (`mlflow.traceRequestId`).
    pub fn request_id(&self) -> Option<Cow<'_, str>> {
        self.attributes.get_str(keys::REQUEST_ID)
    }

    pub fn is_root(&self) -> bool {
        self.parent_id.is_none()
    }

    /// Duration in nanoseconds, when the span has ended.
    pub fn duration_ns(&self) -> Option<u64> {
        self.end_time_unix_nano.map(|end| end.saturating_sub(self.start_time_unix_nano))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_span_type_parses_back_to_itself() {
        for t in SpanType::KNOWN {
            assert_eq!(SpanType::parse(t.as_str()), t);
        }
        assert_eq!(SpanType::parse("MATH"), SpanType::Custom("MATH".into()));
        assert_eq!(SpanType::from("MATH".to_owned()).as_str(), "MATH");
    }

    #[test]
    fn span_type_json_is_the_encoded_name() {
        for t in SpanType::KNOWN.into_iter().chain([SpanType::Custom("MY \"TYPE\"".into())]) {
            assert_eq!(t.to_json(), crate::attributes::to_json(t.as_str()));
        }
    }

    #[test]
    fn status_codes_accept_otlp_and_short_names() {
        assert_eq!(StatusCode::parse("STATUS_CODE_ERROR"), Some(StatusCode::Error));
        assert_eq!(StatusCode::parse("OK"), Some(StatusCode::Ok));
        assert_eq!(StatusCode::parse("bogus"), None);
    }
}
