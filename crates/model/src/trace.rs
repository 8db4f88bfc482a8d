//! Traces: their info (id, location, timing, state, previews, metadata, tags) and spans.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use serde_json::Value;

use crate::ids::SpanId;
use crate::span::{Span, SpanType};

/// Reserved trace metadata keys (MLflow's `TraceMetadataKey`).
pub mod metadata_keys {
    pub const INPUTS: &str = "mlflow.traceInputs";
    pub const OUTPUTS: &str = "mlflow.traceOutputs";
    pub const SOURCE_RUN: &str = "mlflow.sourceRun";
    pub const MODEL_ID: &str = "mlflow.modelId";
    pub const SIZE_STATS: &str = "mlflow.trace.sizeStats";
    pub const SIZE_BYTES: &str = "mlflow.trace.sizeBytes";
    pub const TOKEN_USAGE: &str = "mlflow.trace.tokenUsage";
    pub const COST: &str = "mlflow.trace.cost";
    pub const USER: &str = "mlflow.trace.user";
    pub const SESSION: &str = "mlflow.trace.session";
    pub const INFO_FINALIZED: &str = "mlflow.trace.infoFinalized";
    pub const SCHEMA_VERSION: &str = "mlflow.trace_schema.version";
    pub const SOURCE_NAME: &str = "mlflow.source.name";
    pub const SOURCE_TYPE: &str = "mlflow.source.type";
    pub const MLFLOW_USER: &str = "mlflow.user";
}

/// Reserved trace tag keys (MLflow's `TraceTagKey`).
pub mod tag_keys {
    pub const TRACE_NAME: &str = "mlflow.traceName";
    pub const SPANS_LOCATION: &str = "mlflow.trace.spansLocation";
    pub const ARTIFACT_LOCATION: &str = "mlflow.artifactLocation";
    pub const EVAL_REQUEST_ID: &str = "mlflow.eval.requestId";
    pub const LINKED_PROMPTS: &str = "mlflow.linkedPrompts";
    /// Tags clients may not set (the server owns them).
    pub const IMMUTABLE: [&str; 5] = [
        "mlflow.user",
        ARTIFACT_LOCATION,
        SPANS_LOCATION,
        "mlflow.trace.archiveLocation",
        "mlflow.trace.archivalFailure",
    ];
}

/// Metadata and tag size limits applied by the MLflow client when it builds a TraceInfo proto.
pub mod limits {
    pub const MAX_METADATA_KEY_CHARS: usize = 250;
    pub const MAX_METADATA_VALUE_CHARS: usize = 250;
    pub const MAX_TAG_KEY_CHARS: usize = 250;
    pub const MAX_TAG_VALUE_CHARS: usize = 4096;
    /// Previews in an OSS store.
    pub const MAX_PREVIEW_CHARS: usize = 1000;
    /// `mlflow.traceInputs` / `mlflow.traceOutputs` metadata.
    pub const MAX_TRACE_IO_METADATA_CHARS: usize = 250;
}

/// The state of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TraceState {
    #[default]
    Unspecified,
    Ok,
    Error,
    InProgress,
}

impl TraceState {
    pub fn as_str(self) -> &'static str {
        match self {
            TraceState::Unspecified => "STATE_UNSPECIFIED",
            TraceState::Ok => "OK",
            TraceState::Error => "ERROR",
            TraceState::InProgress => "IN_PROGRESS",
        }
    }

    pub fn parse(name: &str) -> Option<TraceState> {
        [TraceState::Unspecified, TraceState::Ok, TraceState::Error, TraceState::InProgress]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a trace is stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TraceLocation {
    /// An MLflow experiment (trace ids `tr-...`).
    MlflowExperiment { experiment_id: String },
    /// A lake schema `catalog.schema` (trace ids `trace:/catalog.schema/...`).
    UcSchema {
        catalog_name: String,
        schema_name: String,
        otel_spans_table_name: Option<String>,
        otel_logs_table_name: Option<String>,
    },
    /// A (deprecated) Databricks inference table.
    InferenceTable { full_table_name: String },
}

impl TraceLocation {
    pub fn experiment(experiment_id: impl Into<String>) -> Self {
        TraceLocation::MlflowExperiment { experiment_id: experiment_id.into() }
    }

    pub fn uc_schema(catalog_name: impl Into<String>, schema_name: impl Into<String>) -> Self {
        TraceLocation::UcSchema {
            catalog_name: catalog_name.into(),
            schema_name: schema_name.into(),
            otel_spans_table_name: None,
            otel_logs_table_name: None,
        }
    }

    /// The proto enum name of the location type.
    pub fn type_name(&self) -> &'static str {
        match self {
            TraceLocation::MlflowExperiment { .. } => "MLFLOW_EXPERIMENT",
            TraceLocation::UcSchema { .. } => "UC_SCHEMA",
            TraceLocation::InferenceTable { .. } => "INFERENCE_TABLE",
        }
    }

    pub fn experiment_id(&self) -> Option<&str> {
        match self {
            TraceLocation::MlflowExperiment { experiment_id } => Some(experiment_id),
            _ => None,
        }
    }
}

impl Default for TraceLocation {
    /// MLflow's default experiment.
    fn default() -> Self {
        TraceLocation::experiment("0")
    }
}

/// Everything about a trace except its spans.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TraceInfo {
    /// The MLflow trace id (`tr-<hex>` or `trace:/<location>/<hex>`).
    pub trace_id: String,
    pub client_request_id: Option<String>,
    pub trace_location: TraceLocation,
    /// Start of the root span, milliseconds since the Unix epoch.
    pub request_time_ms: i64,
    /// Root span duration in milliseconds, once the trace has ended.
    pub execution_duration_ms: Option<i64>,
    pub state: TraceState,
    pub request_preview: Option<String>,
    pub response_preview: Option<String>,
    pub trace_metadata: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    /// Assessments, carried through unchanged (their model lands with the server).
    pub assessments: Vec<Value>,
}

/// A trace: its info and its spans.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trace {
    pub info: TraceInfo,
    pub spans: Vec<Span>,
}

impl Trace {
    /// The span without a parent.
    pub fn root_span(&self) -> Option<&Span> {
        self.spans.iter().find(|s| s.is_root())
    }

    /// The spans matching every criterion of `query`, in trace order.
    pub fn search_spans(&self, query: &SpanQuery) -> Vec<&Span> {
        self.spans.iter().filter(|s| query.matches(s)).collect()
    }

    pub fn span(&self, id: SpanId) -> Option<&Span> {
        self.spans.iter().find(|s| s.span_id == id)
    }

    /// The root span's inputs, as MLflow's `TraceData.request`.
    pub fn request(&self) -> Option<Value> {
        self.root_span().and_then(Span::inputs)
    }

    /// The root span's outputs, as MLflow's `TraceData.response`.
    pub fn response(&self) -> Option<Value> {
        self.root_span().and_then(Span::outputs)
    }
}

/// How [`SpanQuery`] matches span names.
#[derive(Debug, Clone)]
pub enum NameMatch {
    Exact(String),
    /// Matches when the pattern is found anywhere in the name (Python's `re.search`).
    Regex(Regex),
}

/// Criteria for [`Trace::search_spans`]; a span matches when it meets all that are set.
#[derive(Debug, Clone, Default)]
pub struct SpanQuery {
    pub name: Option<NameMatch>,
    pub span_type: Option<SpanType>,
    pub span_id: Option<SpanId>,
}

impl SpanQuery {
    /// Spans named exactly `name`.
    pub fn name(name: impl Into<String>) -> Self {
        Self { name: Some(NameMatch::Exact(name.into())), ..Self::default() }
    }

    /// Spans whose name contains a match of `pattern`.
    pub fn name_matching(pattern: Regex) -> Self {
        Self { name: Some(NameMatch::Regex(pattern)), ..Self::default() }
    }

    /// Spans of type `span_type`.
    pub fn span_type(span_type: impl Into<SpanType>) -> Self {
        Self { span_type: Some(span_type.into()), ..Self::default() }
    }

    /// Also require type `span_type`.
    pub fn and_span_type(mut self, span_type: impl Into<SpanType>) -> Self {
        self.span_type = Some(span_type.into());
        self
    }

    /// Also require the id `span_id`.
    pub fn and_span_id(mut self, span_id: SpanId) -> Self {
        self.span_id = Some(span_id);
        self
    }

    pub fn matches(&self, span: &Span) -> bool {
        let name_ok = match &self.name {
            None => true,
            Some(NameMatch::Exact(name)) => span.name == name.as_str(),
            Some(NameMatch::Regex(re)) => re.is_match(&span.name),
        };
        name_ok
            && self.span_type.as_ref().is_none_or(|t| span.span_type() == *t)
            && self.span_id.is_none_or(|id| span.span_id == id)
    }
}
