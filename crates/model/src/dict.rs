//! The MLflow JSON forms of spans, trace infos and traces.
//!
//! `Serialize` writes exactly what the MLflow client's `Span.to_dict()`, `TraceInfo.to_dict()`
//! and `Trace.to_dict()` produce (the `traces.json` artifact and the span rows of an MLflow
//! store): ids as base64 of their big-endian bytes, attribute values as JSON-encoded strings,
//! event attributes as plain values. `Deserialize` reads that form and the older ones MLflow
//! still reads: hex / `tr-` ids (MLflow 3.5), short status codes, the proto-JSON
//! `execution_duration: "0.171s"` and integer request times.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat};
use serde::de::Error as _;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::attributes::Attributes;
use crate::ids::{SpanId, TraceId};
use crate::json_text;
use crate::span::{Link, Span, SpanEvent, SpanKind, SpanStatus, StatusCode};
use crate::trace::{Trace, TraceInfo, TraceLocation, TraceState};

/// Why a JSON document is not a valid span, trace info or trace.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what}: {problem} at {path}")]
pub struct DictError {
    what: &'static str,
    path: String,
    problem: String,
}

type Obj = Map<String, Value>;

struct Reader<'a> {
    what: &'static str,
    path: String,
    obj: &'a Obj,
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, path: impl Into<String>, value: &'a Value) -> Result<Self, DictError> {
        let path = path.into();
        match value.as_object() {
            Some(obj) => Ok(Self { what, path, obj }),
            None => Err(DictError {
                what,
                path,
                problem: format!("expected an object, found {}", kind_of(value)),
            }),
        }
    }

    fn err(&self, key: &str, problem: impl Into<String>) -> DictError {
        DictError { what: self.what, path: format!("{}.{key}", self.path), problem: problem.into() }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn str(&self, key: &str) -> Result<&'a str, DictError> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.err(key, format!("expected a string, found {}", kind_of(other)))),
            None => Err(self.err(key, "missing required field")),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>, DictError> {
        if self.get(key).is_none() { Ok(None) } else { self.str(key).map(Some) }
    }

    /// An integer that protobuf JSON may also write as a decimal string.
    fn opt_u64(&self, key: &str) -> Result<Option<u64>, DictError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a non-negative integer, found {n}"))),
            Some(Value::String(s)) => {
                s.parse().map(Some).map_err(|_| self.err(key, format!("expected an integer, found {s:?}")))
            }
            Some(other) => Err(self.err(key, format!("expected an integer, found {}", kind_of(other)))),
        }
    }

    fn u64(&self, key: &str) -> Result<u64, DictError> {
        self.opt_u64(key)?.ok_or_else(|| self.err(key, "missing required field"))
    }

    fn opt_obj(&self, key: &str) -> Result<Option<&'a Obj>, DictError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(other) => Err(self.err(key, format!("expected an object, found {}", kind_of(other)))),
        }
    }

    fn opt_array(&self, key: &str) -> Result<&'a [Value], DictError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(other) => Err(self.err(key, format!("expected an array, found {}", kind_of(other)))),
        }
    }

    fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>, DictError> {
        let Some(obj) = self.opt_obj(key)? else { return Ok(BTreeMap::new()) };
        obj.iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => {
                    Err(self
                        .err(&format!("{key}.{k}"), format!("expected a string, found {}", kind_of(other))))
                }
            })
            .collect()
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---- ids ----------------------------------------------------------------------------------

fn looks_base64(s: &str, bytes: usize) -> bool {
    // 16 bytes -> 24 chars, 8 bytes -> 12 chars, both padded.
    s.len() == bytes.div_ceil(3) * 4 && s.ends_with('=')
}

/// A trace id as span dicts write it: base64 of its bytes, or MLflow's `tr-<hex>`.
fn trace_id_text(s: &str) -> Result<TraceId, String> {
    if looks_base64(s, 16) {
        BASE64
            .decode(s)
            .map_err(|e| e.to_string())
            .and_then(|b| TraceId::from_bytes(&b).map_err(|e| e.to_string()))
    } else {
        TraceId::from_mlflow(s).map_err(|e| e.to_string())
    }
}

/// A span id as span dicts write it: base64 of its bytes, or hex; empty is none.
fn span_id_text(s: &str) -> Result<Option<SpanId>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let parsed = if looks_base64(s, 8) {
        BASE64
            .decode(s)
            .map_err(|e| e.to_string())
            .and_then(|b| SpanId::from_bytes(&b).map_err(|e| e.to_string()))
    } else {
        SpanId::from_hex(s).map_err(|e| e.to_string())
    };
    parsed.map(Some)
}

fn read_trace_id(r: &Reader<'_>, key: &str) -> Result<TraceId, DictError> {
    trace_id_text(r.str(key)?).map_err(|e| r.err(key, e))
}

fn read_span_id(r: &Reader<'_>, key: &str) -> Result<Option<SpanId>, DictError> {
    let Some(s) = r.opt_str(key)? else { return Ok(None) };
    span_id_text(s).map_err(|e| r.err(key, e))
}

// ---- spans --------------------------------------------------------------------------------

struct B64<'a>(&'a [u8]);

impl Serialize for B64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(self.0))
    }
}

struct AttrMap<'a>(&'a Attributes);

impl Serialize for AttrMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

struct Events<'a>(&'a [SpanEvent]);

impl Serialize for Events<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for event in self.0 {
            seq.serialize_element(&EventDict(event))?;
        }
        seq.end()
    }
}

struct EventDict<'a>(&'a SpanEvent);

impl Serialize for EventDict<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("name", &self.0.name)?;
        map.serialize_entry("time_unix_nano", &self.0.time_unix_nano)?;
        map.serialize_entry("attributes", &self.0.attributes)?;
        map.end()
    }
}

struct StatusDict<'a>(&'a SpanStatus);

impl Serialize for StatusDict<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("code", self.0.code.as_otlp_name())?;
        map.serialize_entry("message", &self.0.message)?;
        map.end()
    }
}

struct Links<'a>(&'a [Link]);

impl Serialize for Links<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for link in self.0 {
            let mut m = Map::new();
            m.insert("trace_id".into(), link.trace_id.clone().into());
            m.insert("span_id".into(), link.span_id.clone().into());
            m.insert("attributes".into(), link.attributes.clone().map_or(Value::Null, Value::Object));
            seq.serialize_element(&m)?;
        }
        seq.end()
    }
}

impl Serialize for Span {
    /// MLflow 3.17's span dict has no `kind`: the MLflow client drops it when it rewrites a
    /// trace, so it is not written here either (OTLP forms carry it; reading accepts it).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(10))?;
        map.serialize_entry("trace_id", &B64(&self.trace_id.to_bytes()))?;
        map.serialize_entry("span_id", &B64(&self.span_id.to_bytes()))?;
        map.serialize_entry("parent_span_id", &self.parent_id.map(|p| BASE64.encode(p.to_bytes())))?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("start_time_unix_nano", &self.start_time_unix_nano)?;
        map.serialize_entry("end_time_unix_nano", &self.end_time_unix_nano)?;
        map.serialize_entry("events", &Events(&self.events))?;
        map.serialize_entry("status", &StatusDict(&self.status))?;
        map.serialize_entry("attributes", &AttrMap(&self.attributes))?;
        map.serialize_entry("links", &Links(&self.links))?;
        map.end()
    }
}

/// Appends a span's events or links: rare, and holding plain values, so serde_json writes them
/// (to a string, which never fails for these).
fn push_list(out: &mut String, empty: bool, list: &impl Serialize) {
    if empty {
        out.push_str("[]");
    } else {
        out.push_str(&serde_json::to_string(list).unwrap_or_else(|_| "[]".into()));
    }
}

impl Span {
    /// The span dict as compact JSON: exactly `serde_json::to_string(span)`, written directly
    /// (the stores keep every span in this form, and most of its bytes are attribute text that
    /// [`json_text::write_str`] escapes faster than `serde_json` does).
    pub fn to_dict_json(&self) -> String {
        use std::fmt::Write as _;
        let text: usize = self.attributes.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
        let mut out = String::with_capacity(320 + self.name.len() + text);
        let b64 = |out: &mut String, bytes: &[u8]| {
            let mut buf = [0u8; 24]; // 16 bytes encode to 24
            let n = BASE64.encode_slice(bytes, &mut buf).expect("ids fit 24 base64 digits");
            out.push('"');
            out.push_str(std::str::from_utf8(&buf[..n]).expect("base64 is ASCII"));
            out.push('"');
        };
        out.push_str("{\"trace_id\":");
        b64(&mut out, &self.trace_id.to_bytes());
        out.push_str(",\"span_id\":");
        b64(&mut out, &self.span_id.to_bytes());
        out.push_str(",\"parent_span_id\":");
        match self.parent_id {
            Some(p) => b64(&mut out, &p.to_bytes()),
            None => out.push_str("null"),
        }
        out.push_str(",\"name\":");
        json_text::write_str(&mut out, &self.name);
        let _ =
            write!(out, ",\"start_time_unix_nano\":{},\"end_time_unix_nano\":", self.start_time_unix_nano);
        match self.end_time_unix_nano {
            Some(end) => {
                let _ = write!(out, "{end}");
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"events\":");
        push_list(&mut out, self.events.is_empty(), &Events(&self.events));
        out.push_str(",\"status\":{\"code\":");
        json_text::write_str(&mut out, self.status.code.as_otlp_name());
        out.push_str(",\"message\":");
        json_text::write_str(&mut out, &self.status.message);
        out.push_str("},\"attributes\":{");
        for (i, (k, v)) in self.attributes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_text::write_str(&mut out, k);
            out.push(':');
            json_text::write_str(&mut out, v);
        }
        out.push_str("},\"links\":");
        push_list(&mut out, self.links.is_empty(), &Links(&self.links));
        out.push('}');
        out
    }

    /// Reads an MLflow span dict.
    pub fn from_dict(value: &Value) -> Result<Span, DictError> {
        Self::from_dict_at(value, "span")
    }

    fn from_dict_at(value: &Value, path: &str) -> Result<Span, DictError> {
        let r = Reader::new("span", path, value)?;
        if r.get("context").is_some() {
            return Err(r.err(
                "context",
                "MLflow 2.x span dicts are not supported; re-export the trace with MLflow 3",
            ));
        }
        let status = match r.opt_obj("status")? {
            None => SpanStatus::default(),
            Some(obj) => {
                let value = Value::Object(obj.clone());
                let sr = Reader::new("span", format!("{path}.status"), &value)?;
                let code = match sr.opt_str("code")? {
                    None => StatusCode::Unset,
                    Some(c) => StatusCode::parse(c)
                        .ok_or_else(|| sr.err("code", format!("unknown status code {c:?}")))?,
                };
                SpanStatus { code, message: sr.opt_str("message")?.unwrap_or_default().to_owned() }
            }
        };
        let kind = match r.opt_str("kind")? {
            None => SpanKind::Internal,
            Some(k) => SpanKind::from_otlp_name(k)
                .ok_or_else(|| r.err("kind", format!("unknown span kind {k:?}")))?,
        };
        let attributes = match r.opt_obj("attributes")? {
            None => Attributes::new(),
            Some(obj) => obj
                .iter()
                .map(|(k, v)| {
                    // Values are JSON-encoded strings; anything else is kept as its JSON text.
                    let raw = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), raw)
                })
                .collect(),
        };
        let mut events = Vec::new();
        for (i, ev) in r.opt_array("events")?.iter().enumerate() {
            let er = Reader::new("span", format!("{path}.events[{i}]"), ev)?;
            events.push(SpanEvent {
                name: er.str("name")?.to_owned(),
                time_unix_nano: er.opt_u64("time_unix_nano")?.unwrap_or(0),
                attributes: er.opt_obj("attributes")?.cloned().unwrap_or_default(),
            });
        }
        let mut links = Vec::new();
        for (i, l) in r.opt_array("links")?.iter().enumerate() {
            let lr = Reader::new("span", format!("{path}.links[{i}]"), l)?;
            links.push(Link {
                trace_id: lr.str("trace_id")?.to_owned(),
                span_id: lr.str("span_id")?.to_owned(),
                attributes: lr.opt_obj("attributes")?.cloned(),
            });
        }
        Ok(Span {
            trace_id: read_trace_id(&r, "trace_id")?,
            span_id: read_span_id(&r, "span_id")?
                .ok_or_else(|| r.err("span_id", "missing required field"))?,
            parent_id: read_span_id(&r, "parent_span_id")?,
            name: r.str("name")?.to_owned().into(),
            kind,
            start_time_unix_nano: r.u64("start_time_unix_nano")?,
            end_time_unix_nano: r.opt_u64("end_time_unix_nano")?,
            status,
            attributes,
            events,
            links,
        })
    }
}

/// A span dict in the shape tracelake writes, read without building a `Value` tree: the fast
/// path of [`Span::from_dict_json`]. Anything it does not take goes to the general reader.
#[derive(Deserialize)]
struct StoredSpan<'a> {
    #[serde(borrow)]
    trace_id: Cow<'a, str>,
    #[serde(borrow)]
    span_id: Cow<'a, str>,
    #[serde(borrow, default)]
    parent_span_id: Option<Cow<'a, str>>,
    name: String,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    start_time_unix_nano: u64,
    #[serde(default)]
    end_time_unix_nano: Option<u64>,
    #[serde(borrow, default)]
    status: Option<StoredStatus<'a>>,
    #[serde(default)]
    attributes: Option<Attributes>,
    #[serde(default)]
    events: Vec<StoredEvent>,
    #[serde(default)]
    links: Vec<StoredLink>,
    #[serde(default)]
    context: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct StoredLink {
    trace_id: String,
    span_id: String,
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct StoredStatus<'a> {
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct StoredEvent {
    name: String,
    #[serde(default)]
    time_unix_nano: Option<u64>,
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
}

impl StoredSpan<'_> {
    fn into_span(self) -> Option<Span> {
        if self.context.is_some() {
            return None;
        }
        let status = match self.status {
            None => SpanStatus::default(),
            Some(s) => SpanStatus {
                code: match s.code {
                    None => StatusCode::Unset,
                    Some(c) => StatusCode::parse(&c)?,
                },
                message: s.message.unwrap_or_default(),
            },
        };
        Some(Span {
            trace_id: trace_id_text(&self.trace_id).ok()?,
            span_id: span_id_text(&self.span_id).ok()??,
            parent_id: match self.parent_span_id {
                None => None,
                Some(p) => span_id_text(&p).ok()?,
            },
            name: self.name.into(),
            kind: match self.kind {
                None => SpanKind::Internal,
                Some(k) => SpanKind::from_otlp_name(&k)?,
            },
            start_time_unix_nano: self.start_time_unix_nano,
            end_time_unix_nano: self.end_time_unix_nano,
            status,
            attributes: self.attributes.unwrap_or_default(),
            events: self
                .events
                .into_iter()
                .map(|e| SpanEvent {
                    name: e.name,
                    time_unix_nano: e.time_unix_nano.unwrap_or(0),
                    attributes: e.attributes.unwrap_or_default(),
                })
                .collect(),
            links: self
                .links
                .into_iter()
                .map(|l| Link { trace_id: l.trace_id, span_id: l.span_id, attributes: l.attributes })
                .collect(),
        })
    }
}

impl Span {
    /// Reads a span dict from its JSON text, as [`Span::from_dict`] does, but straight from the
    /// text when it has the shape tracelake writes (stores read every span this way).
    pub fn from_dict_json(text: &str) -> Result<Span, DictError> {
        if let Some(span) = serde_json::from_str::<StoredSpan<'_>>(text).ok().and_then(StoredSpan::into_span)
        {
            return Ok(span);
        }
        let value: Value = serde_json::from_str(text).map_err(|e| DictError {
            what: "span",
            path: String::new(),
            problem: format!("not JSON: {e}"),
        })?;
        Span::from_dict(&value)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Span::from_dict(&Value::deserialize(d)?).map_err(D::Error::custom)
    }
}

// ---- trace info ---------------------------------------------------------------------------

/// Formats milliseconds since the epoch as protobuf JSON does (`2026-11-21T23:45:01.246Z`).
pub fn format_timestamp_ms(ms: i64) -> String {
    let Some(t) = DateTime::from_timestamp_millis(ms) else { return ms.to_string() };
    let precision = if ms.rem_euclid(1000) == 0 { SecondsFormat::Secs } else { SecondsFormat::Millis };
    t.to_rfc3339_opts(precision, true)
}

/// The UTC date (`YYYY-MM-DD`) and the RFC 3339 time to the microsecond
/// (`YYYY-MM-DDTHH:MM:SS.ffffffZ`) of a nanosecond timestamp: the `date` and `time` columns of
/// the lake's OpenTelemetry tables.
pub fn date_and_time_micros(unix_nano: u64) -> (String, String) {
    let secs = (unix_nano / 1_000_000_000) as i64;
    let micros = (unix_nano % 1_000_000_000) as u32 / 1000 * 1000;
    let t = DateTime::from_timestamp(secs, micros).unwrap_or_default();
    (t.format("%Y-%m-%d").to_string(), t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

/// Reads an RFC 3339 timestamp into milliseconds since the epoch.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

/// Formats milliseconds as a protobuf JSON duration (`"0.171s"`).
pub fn format_duration_ms(ms: i64) -> String {
    let (secs, frac) = (ms / 1000, (ms % 1000).abs());
    if frac == 0 { format!("{secs}s") } else { format!("{secs}.{frac:03}s") }
}

/// Reads a protobuf JSON duration (`"0.171s"`) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    Some((secs * 1000.0).round() as i64)
}

struct LocationDict<'a>(&'a TraceLocation);

impl Serialize for LocationDict<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("type", self.0.type_name())?;
        match self.0 {
            TraceLocation::MlflowExperiment { experiment_id } => {
                map.serialize_entry(
                    "mlflow_experiment",
                    &BTreeMap::from([("experiment_id", experiment_id)]),
                )?;
            }
            TraceLocation::InferenceTable { full_table_name } => {
                map.serialize_entry(
                    "inference_table",
                    &BTreeMap::from([("full_table_name", full_table_name)]),
                )?;
            }
            TraceLocation::UcSchema {
                catalog_name,
                schema_name,
                otel_spans_table_name,
                otel_logs_table_name,
            } => {
                let mut m = Map::new();
                m.insert("catalog_name".into(), catalog_name.clone().into());
                m.insert("schema_name".into(), schema_name.clone().into());
                if let Some(t) = otel_spans_table_name {
                    m.insert("otel_spans_table_name".into(), t.clone().into());
                }
                if let Some(t) = otel_logs_table_name {
                    m.insert("otel_logs_table_name".into(), t.clone().into());
                }
                map.serialize_entry("uc_schema", &m)?;
            }
        }
        map.end()
    }
}

fn read_location(value: &Value, path: &str) -> Result<TraceLocation, DictError> {
    let r = Reader::new("trace info", path, value)?;
    let sub = |key: &str| -> Result<Reader<'_>, DictError> {
        let v = r.get(key).ok_or_else(|| r.err(key, "missing required field"))?;
        Reader::new("trace info", format!("{path}.{key}"), v)
    };
    let ty = r.opt_str("type")?.unwrap_or_else(|| {
        // Proto JSON may omit the type; infer it from the one location present.
        ["mlflow_experiment", "uc_schema", "inference_table"].into_iter().find(|k| r.get(k).is_some()).map_or(
            "",
            |k| match k {
                "mlflow_experiment" => "MLFLOW_EXPERIMENT",
                "uc_schema" => "UC_SCHEMA",
                _ => "INFERENCE_TABLE",
            },
        )
    });
    match ty {
        "MLFLOW_EXPERIMENT" => {
            let e = sub("mlflow_experiment")?;
            Ok(TraceLocation::MlflowExperiment { experiment_id: e.str("experiment_id")?.to_owned() })
        }
        "UC_SCHEMA" => {
            let u = sub("uc_schema")?;
            Ok(TraceLocation::UcSchema {
                catalog_name: u.str("catalog_name")?.to_owned(),
                schema_name: u.str("schema_name")?.to_owned(),
                otel_spans_table_name: u.opt_str("otel_spans_table_name")?.map(str::to_owned),
                otel_logs_table_name: u.opt_str("otel_logs_table_name")?.map(str::to_owned),
            })
        }
        "INFERENCE_TABLE" => {
            let t = sub("inference_table")?;
            Ok(TraceLocation::InferenceTable { full_table_name: t.str("full_table_name")?.to_owned() })
        }
        other => Err(r.err("type", format!("unknown trace location type {other:?}"))),
    }
}

impl Serialize for TraceInfo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("trace_id", &self.trace_id)?;
        if let Some(id) = &self.client_request_id {
            map.serialize_entry("client_request_id", id)?;
        }
        map.serialize_entry("trace_location", &LocationDict(&self.trace_location))?;
        map.serialize_entry("request_time", &format_timestamp_ms(self.request_time_ms))?;
        if self.state != TraceState::Unspecified {
            map.serialize_entry("state", self.state.as_str())?;
        }
        if !self.trace_metadata.is_empty() {
            map.serialize_entry("trace_metadata", &self.trace_metadata)?;
        }
        if !self.assessments.is_empty() {
            map.serialize_entry("assessments", &self.assessments)?;
        }
        if !self.tags.is_empty() {
            map.serialize_entry("tags", &self.tags)?;
        }
        if let Some(p) = &self.request_preview {
            map.serialize_entry("request_preview", p)?;
        }
        if let Some(p) = &self.response_preview {
            map.serialize_entry("response_preview", p)?;
        }
        if let Some(d) = self.execution_duration_ms {
            map.serialize_entry("execution_duration_ms", &d)?;
        }
        map.end()
    }
}

impl TraceLocation {
    /// The `TraceLocation` message as the MLflow REST API writes it in proto JSON.
    pub fn to_proto_json(&self) -> Value {
        let (kind, field, body) = match self {
            TraceLocation::MlflowExperiment { experiment_id } => (
                "MLFLOW_EXPERIMENT",
                "mlflow_experiment",
                serde_json::json!({"experiment_id": experiment_id}),
            ),
            TraceLocation::InferenceTable { full_table_name } => (
                "INFERENCE_TABLE",
                "inference_table",
                serde_json::json!({"full_table_name": full_table_name}),
            ),
            TraceLocation::UcSchema { catalog_name, schema_name, .. } => (
                "UC_SCHEMA",
                "uc_schema",
                serde_json::json!({"catalog_name": catalog_name, "schema_name": schema_name}),
            ),
        };
        serde_json::json!({"type": kind, field: body})
    }
}

impl TraceInfo {
    /// The `TraceInfoV3` message as the MLflow REST API writes it in proto JSON: RFC 3339
    /// request time and a `"0.171s"` duration (the dict form, [`Serialize`], has milliseconds).
    pub fn to_proto_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("trace_id".into(), Value::from(self.trace_id.as_str()));
        if let Some(id) = &self.client_request_id {
            m.insert("client_request_id".into(), Value::from(id.as_str()));
        }
        m.insert("trace_location".into(), self.trace_location.to_proto_json());
        m.insert("request_time".into(), Value::from(format_timestamp_ms(self.request_time_ms)));
        if let Some(d) = self.execution_duration_ms {
            m.insert("execution_duration".into(), Value::from(format_duration_ms(d)));
        }
        m.insert("state".into(), Value::from(self.state.as_str()));
        let strings = |map: &BTreeMap<String, String>| {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect())
        };
        if !self.trace_metadata.is_empty() {
            m.insert("trace_metadata".into(), strings(&self.trace_metadata));
        }
        if !self.assessments.is_empty() {
            m.insert("assessments".into(), Value::Array(self.assessments.clone()));
        }
        if !self.tags.is_empty() {
            m.insert("tags".into(), strings(&self.tags));
        }
        if let Some(p) = &self.request_preview {
            m.insert("request_preview".into(), Value::from(p.as_str()));
        }
        if let Some(p) = &self.response_preview {
            m.insert("response_preview".into(), Value::from(p.as_str()));
        }
        Value::Object(m)
    }

    /// Reads an MLflow TraceInfo dict (or the TraceInfoV3 proto JSON of the REST API).
    pub fn from_dict(value: &Value) -> Result<TraceInfo, DictError> {
        Self::from_dict_at(value, "info")
    }

    fn from_dict_at(value: &Value, path: &str) -> Result<TraceInfo, DictError> {
        let r = Reader::new("trace info", path, value)?;
        if r.get("request_id").is_some() && r.get("trace_id").is_none() {
            return Err(r.err(
                "request_id",
                "MLflow 2.x trace infos are not supported; re-export the trace with MLflow 3",
            ));
        }
        let request_time_ms = match r.get("request_time") {
            None => 0,
            Some(Value::String(s)) => parse_timestamp_ms(s).ok_or_else(|| {
                r.err("request_time", format!("expected an RFC 3339 timestamp, found {s:?}"))
            })?,
            Some(Value::Number(n)) => {
                n.as_i64().ok_or_else(|| r.err("request_time", "expected integer milliseconds"))?
            }
            Some(other) => {
                return Err(r.err("request_time", format!("expected a timestamp, found {}", kind_of(other))));
            }
        };
        let execution_duration_ms =
            match (r.get("execution_duration_ms"), r.opt_str("execution_duration").ok().flatten()) {
                (Some(Value::Number(n)), _) => Some(
                    n.as_i64()
                        .ok_or_else(|| r.err("execution_duration_ms", "expected integer milliseconds"))?,
                ),
                (Some(other), _) => {
                    return Err(r.err(
                        "execution_duration_ms",
                        format!("expected an integer, found {}", kind_of(other)),
                    ));
                }
                (None, Some(d)) => Some(parse_duration_ms(d).ok_or_else(|| {
                    r.err(
                        "execution_duration",
                        format!("expected a duration such as \"0.171s\", found {d:?}"),
                    )
                })?),
                (None, None) => None,
            };
        let state = match r.opt_str("state")? {
            None => TraceState::Unspecified,
            Some(s) => {
                TraceState::parse(s).ok_or_else(|| r.err("state", format!("unknown trace state {s:?}")))?
            }
        };
        let trace_location = match r.get("trace_location") {
            Some(loc) => read_location(loc, &format!("{path}.trace_location"))?,
            None => TraceLocation::default(),
        };
        Ok(TraceInfo {
            trace_id: r.str("trace_id")?.to_owned(),
            client_request_id: r.opt_str("client_request_id")?.map(str::to_owned),
            trace_location,
            request_time_ms,
            execution_duration_ms,
            state,
            request_preview: r.opt_str("request_preview")?.map(str::to_owned),
            response_preview: r.opt_str("response_preview")?.map(str::to_owned),
            trace_metadata: r.string_map("trace_metadata")?,
            tags: r.string_map("tags")?,
            assessments: r.opt_array("assessments")?.to_vec(),
        })
    }
}

impl<'de> Deserialize<'de> for TraceInfo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TraceInfo::from_dict(&Value::deserialize(d)?).map_err(D::Error::custom)
    }
}

// ---- traces -------------------------------------------------------------------------------

/// A trace's spans as MLflow's `TraceData.to_dict()`, `{"spans": [...]}`: the `data` of a
/// trace dict, and the whole of its `traces.json` artifact.
#[derive(Debug, Clone, Copy)]
pub struct TraceData<'a>(pub &'a [Span]);

impl TraceData<'_> {
    /// Reads the spans of a `TraceData` dict found at `path` (a missing `spans` is none).
    pub fn spans_from_dict(value: &Value, path: &str) -> Result<Vec<Span>, DictError> {
        Reader::new("trace", path, value)?
            .opt_array("spans")?
            .iter()
            .enumerate()
            .map(|(i, s)| Span::from_dict_at(s, &format!("{path}.spans[{i}]")))
            .collect()
    }
}

impl Serialize for TraceData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("spans", self.0)?;
        map.end()
    }
}

impl Serialize for Trace {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("info", &self.info)?;
        map.serialize_entry("data", &TraceData(&self.spans))?;
        map.end()
    }
}

impl Trace {
    /// Reads an MLflow `Trace.to_dict()` document.
    pub fn from_dict(value: &Value) -> Result<Trace, DictError> {
        let r = Reader::new("trace", "trace", value)?;
        let info = TraceInfo::from_dict_at(
            r.get("info").ok_or_else(|| r.err("info", "missing required field"))?,
            "trace.info",
        )?;
        let spans = match r.get("data") {
            None => Vec::new(),
            Some(data) => TraceData::spans_from_dict(data, "trace.data")?,
        };
        Ok(Trace { info, spans })
    }

    /// The MLflow `Trace.to_json()` text of this trace (compact).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads the MLflow `Trace.to_json()` text of a trace.
    pub fn from_json(text: &str) -> Result<Trace, DictError> {
        let value: Value = serde_json::from_str(text).map_err(|e| DictError {
            what: "trace",
            path: format!("line {} column {}", e.line(), e.column()),
            problem: e.to_string(),
        })?;
        Trace::from_dict(&value)
    }
}

impl<'de> Deserialize<'de> for Trace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Trace::from_dict(&Value::deserialize(d)?).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_durations_use_protobuf_json_forms() {
        assert_eq!(format_timestamp_ms(1_795_314_263_775), "2026-11-22T02:24:23.775Z");
        assert_eq!(format_timestamp_ms(1_795_314_263_000), "2026-11-22T02:24:23Z");
        assert_eq!(parse_timestamp_ms("2026-11-22T02:24:23.775Z"), Some(1_795_314_263_775));
        assert_eq!(format_duration_ms(171), "0.171s");
        assert_eq!(parse_duration_ms("0.171s"), Some(171));
        assert_eq!(parse_duration_ms("3s"), Some(3000));
    }

    #[test]
    fn the_direct_span_dict_is_what_serde_writes() {
        let mut attributes = Attributes::new();
        attributes
            .insert("mlflow.spanInputs", &serde_json::json!({"q": "a \"quoted\"\nline ✓", "n": [1, 2.5]}));
        attributes.insert_raw("foreign", "not json \\ at all\u{1}".to_owned());
        attributes.insert("mlflow.spanType", "LLM");
        let full = Span {
            trace_id: TraceId::new(0x0976_bfff_5d59_ceb4_129a_32ba_e600_dae8).unwrap(),
            span_id: SpanId::new(7).unwrap(),
            parent_id: SpanId::new(3),
            name: "a \"named\" step\t✓".to_owned().into(),
            kind: SpanKind::Client,
            start_time_unix_nano: 1_795_314_263_775_396_094,
            end_time_unix_nano: Some(1_795_314_263_851_565_106),
            status: SpanStatus { code: StatusCode::Error, message: "boom\n\"why\"".into() },
            attributes,
            events: vec![SpanEvent {
                name: "exception".into(),
                time_unix_nano: 12,
                attributes: serde_json::json!({"exception.message": "bad \"thing\"", "n": 1})
                    .as_object()
                    .cloned()
                    .unwrap(),
            }],
            links: vec![Link {
                trace_id: "tr-0976bfff5d59ceb4129a32bae600dae8".into(),
                span_id: "0000000000000003".into(),
                attributes: None,
            }],
        };
        let bare = Span {
            parent_id: None,
            end_time_unix_nano: None,
            status: SpanStatus::default(),
            attributes: Attributes::new(),
            events: vec![],
            links: vec![],
            ..full.clone()
        };
        for span in [full, bare] {
            assert_eq!(span.to_dict_json(), serde_json::to_string(&span).unwrap());
        }
    }

    #[test]
    fn a_bad_field_is_reported_with_its_path() {
        let value = serde_json::json!({"info": {"trace_id": "tr-1", "state": "DONE"}});
        let err = Trace::from_dict(&value).unwrap_err().to_string();
        assert_eq!(err, "invalid trace info: unknown trace state \"DONE\" at trace.info.state");
    }
}
