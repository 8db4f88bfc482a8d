//! Span attributes, stored the way MLflow stores them.
//!
//! Every attribute value set through the tracing API is kept as a JSON document in a string
//! (`"\"CHAIN\""` for the string `CHAIN`, `"{\"a\": 1}"` for an object), written with Python's
//! default separators (`", "` and `": "`) and without escaping non-ASCII text. That is what
//! `json.dumps` produces, so a span written here is byte-for-byte what the MLflow client would
//! have written, and values read back parse to what was set. Values that are not JSON (set by a
//! foreign OpenTelemetry SDK) read back as plain strings.

use std::borrow::Cow;
use std::io;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

/// Reserved span attribute keys (MLflow's `SpanAttributeKey`).
pub mod keys {
    pub const REQUEST_ID: &str = "mlflow.traceRequestId";
    pub const SPAN_TYPE: &str = "mlflow.spanType";
    pub const INPUTS: &str = "mlflow.spanInputs";
    pub const OUTPUTS: &str = "mlflow.spanOutputs";
    pub const FUNCTION_NAME: &str = "mlflow.spanFunctionName";
    pub const DESCRIPTION: &str = "mlflow.spanDescription";
    pub const LOG_LEVEL: &str = "mlflow.spanLogLevel";
    pub const EXPERIMENT_ID: &str = "mlflow.experimentId";
    pub const START_TIME_NS: &str = "mlflow.spanStartTimeNs";
    pub const CHAT_TOOLS: &str = "mlflow.chat.tools";
    pub const CHAT_TOKEN_USAGE: &str = "mlflow.chat.tokenUsage";
    pub const LLM_COST: &str = "mlflow.llm.cost";
    pub const LLM_MODEL: &str = "mlflow.llm.model";
    pub const LLM_PROVIDER: &str = "mlflow.llm.provider";
    pub const MESSAGE_FORMAT: &str = "mlflow.message.format";
    pub const INTERMEDIATE_OUTPUTS: &str = "mlflow.trace.intermediate_outputs";
    pub const LINKED_PROMPTS: &str = "mlflow.linkedPrompts";
    /// Prefix under which trace tags travel on the root span over plain OTLP.
    pub const TRACE_TAG_PREFIX: &str = "mlflow.traceTag.";
    pub const USER_ID: &str = "user.id";
    pub const SESSION_ID: &str = "session.id";
}

/// Encodes a value as MLflow stores span attributes: JSON with Python's default separators.
///
/// Values serde cannot encode (a map with non-string keys, a failing `Serialize` impl) are
/// recorded as the JSON string of the error, like MLflow's `repr` fallback, rather than lost.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(32);
    write_json(&mut out, value);
    // serde_json writes valid UTF-8 only.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends the encoding of [`to_json`] to `out`.
pub fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let mark = out.len();
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, PythonFormatter);
    if let Err(err) = value.serialize(&mut ser) {
        out.truncate(mark);
        write_json(out, &format!("<unserializable: {err}>"));
    }
}

/// Reads an attribute value: its JSON value, or the raw text when it is not JSON.
pub fn from_json(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// `serde_json` formatter matching Python's `json.dumps` defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// An attribute value's text: static, owned, or shared between spans (every span of a trace
/// carries the same `mlflow.traceRequestId`, which need not be copied per span).
#[derive(Clone, PartialEq, Eq)]
pub enum AttrText {
    Static(&'static str),
    Owned(String),
    Shared(Arc<str>),
}

impl std::ops::Deref for AttrText {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            AttrText::Static(s) => s,
            AttrText::Owned(s) => s,
            AttrText::Shared(s) => s,
        }
    }
}

impl std::fmt::Debug for AttrText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl From<&'static str> for AttrText {
    fn from(s: &'static str) -> Self {
        AttrText::Static(s)
    }
}

impl From<String> for AttrText {
    fn from(s: String) -> Self {
        AttrText::Owned(s)
    }
}

impl From<Arc<str>> for AttrText {
    fn from(s: Arc<str>) -> Self {
        AttrText::Shared(s)
    }
}

impl From<Cow<'static, str>> for AttrText {
    fn from(s: Cow<'static, str>) -> Self {
        match s {
            Cow::Borrowed(s) => AttrText::Static(s),
            Cow::Owned(s) => AttrText::Owned(s),
        }
    }
}

impl From<AttrText> for String {
    fn from(t: AttrText) -> String {
        match t {
            AttrText::Owned(s) => s,
            other => other.to_string(),
        }
    }
}

/// An ordered set of span attributes; each value is a JSON document (see the module docs).
///
/// Keys are unique and keep their first insertion position, as a Python dict does. Spans carry
/// a handful of attributes, so a vector beats a hash map here. Keys and values may be static
/// strings, so the reserved keys and common values cost no allocation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attributes(Vec<(Cow<'static, str>, AttrText)>);

impl Attributes {
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets a value that is already JSON-encoded.
    pub fn insert_raw(&mut self, key: impl Into<Cow<'static, str>>, json: impl Into<AttrText>) {
        let (key, json) = (key.into(), json.into());
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = json,
            None => self.0.push((key, json)),
        }
    }

    /// Encodes and sets a value.
    pub fn insert<T: Serialize + ?Sized>(&mut self, key: impl Into<Cow<'static, str>>, value: &T) {
        self.insert_raw(key, to_json(value));
    }

    /// The JSON-encoded value of `key`.
    pub fn get_raw(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
    }

    /// The decoded value of `key` (raw text when it is not JSON).
    pub fn get(&self, key: &str) -> Option<Value> {
        self.get_raw(key).map(from_json)
    }

    /// The value of `key` when it is a JSON string (or, failing that, the raw text).
    pub fn get_str(&self, key: &str) -> Option<Cow<'_, str>> {
        let raw = self.get_raw(key)?;
        Some(match serde_json::from_str::<Cow<'_, str>>(raw) {
            Ok(s) => s,
            Err(_) => Cow::Borrowed(raw),
        })
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        let pos = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(pos).1.into())
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// Keys and JSON-encoded values in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }
}

impl std::fmt::Debug for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl IntoIterator for Attributes {
    type Item = (Cow<'static, str>, AttrText);
    type IntoIter = std::vec::IntoIter<Self::Item>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<(String, String)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut attrs = Self::new();
        for (k, v) in iter {
            attrs.insert_raw(k, v);
        }
        attrs
    }
}

/// Reads the span dict form: each key's value is JSON text, held in a string.
impl<'de> serde::Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Attributes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of attribute names to JSON text")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
                let mut attrs = Attributes::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    attrs.insert_raw(k, v);
                }
                Ok(attrs)
            }
        }
        d.deserialize_map(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_encoded_like_python_json_dumps() {
        assert_eq!(to_json("CHAIN"), "\"CHAIN\"");
        assert_eq!(to_json(&json!({"a": 1, "b": [1, 2]})), "{\"a\": 1, \"b\": [1, 2]}");
        assert_eq!(to_json("héllo"), "\"héllo\"");
        assert_eq!(to_json(&20), "20");
    }

    #[test]
    fn non_json_values_read_back_as_plain_strings() {
        let mut attrs = Attributes::new();
        attrs.insert_raw("foreign", "not json".to_owned());
        attrs.insert("typed", &json!({"k": true}));
        assert_eq!(attrs.get("foreign"), Some(json!("not json")));
        assert_eq!(attrs.get("typed"), Some(json!({"k": true})));
        assert_eq!(attrs.get_str("foreign").as_deref(), Some("not json"));
    }

    #[test]
    fn setting_a_key_again_replaces_it_in_place() {
        let mut attrs = Attributes::new();
        attrs.insert("a", &1);
        attrs.insert("b", &2);
        attrs.insert("a", &3);
        let keys: Vec<_> = attrs.iter().collect();
        assert_eq!(keys, vec![("a", "3"), ("b", "2")]);
    }
}
