//! Export settings read from the environment, under MLflow's and OpenTelemetry's names.
//!
//! Everything is read once, by [`Settings::from_env`]; a value that cannot mean anything is an
//! error naming the variable and the value, never a silent default.

use std::path::PathBuf;
use std::time::Duration;

use crate::destination::{Destination, ExperimentRef};

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?}: {problem}")]
pub struct ConfigError {
    /// The variable (or setting) at fault.
    pub variable: String,
    /// Its value.
    pub value: String,
    /// What is wrong with it, and what would be right.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(variable: &str, value: &str, problem: impl Into<String>) -> Self {
        Self { variable: variable.to_owned(), value: value.to_owned(), problem: problem.into() }
    }
}

/// Where an MLflow tracking URI points.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TrackingUri {
    /// A tracelake or MLflow server (`http://host:5000`, no trailing slash).
    Server(String),
    /// A local trace directory: one JSON-lines file per experiment.
    Directory(PathBuf),
}

impl TrackingUri {
    /// Reads a tracking URI as `MLFLOW_TRACKING_URI` holds it: `http(s)://...`, `file:///dir`
    /// or a plain directory path.
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        Self::parse_for("MLFLOW_TRACKING_URI", raw)
    }

    pub(crate) fn parse_for(variable: &str, raw: &str) -> Result<Self, ConfigError> {
        let value = raw.trim();
        let err = |problem: String| ConfigError::new(variable, raw, problem);
        if value.is_empty() {
            return Err(err("empty tracking URI".into()));
        }
        let Some((scheme, rest)) = value.split_once("://") else {
            if value == "databricks" || value.starts_with("databricks:") {
                return Err(err("Databricks workspaces are not a tracelake destination".into()));
            }
            return Ok(TrackingUri::Directory(PathBuf::from(value)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => {
                let host = rest.split(['/', '?', '#']).next().unwrap_or("");
                if host.is_empty() {
                    return Err(err("the URI has no host".into()));
                }
                Ok(TrackingUri::Server(value.trim_end_matches('/').to_owned()))
            }
            "file" => {
                let path = rest.strip_prefix("localhost").unwrap_or(rest);
                if path.is_empty() {
                    return Err(err("a file URI needs a path".into()));
                }
                Ok(TrackingUri::Directory(PathBuf::from(path)))
            }
            "sqlite" | "postgresql" | "postgres" | "mysql" | "mssql" => Err(err(format!(
                "the SDK does not write to a {scheme} database itself; serve it with \
                 `tracelake server --backend-store-uri {value}` and set the tracking URI to that \
                 server (http://127.0.0.1:5000)"
            ))),
            other => Err(err(format!(
                "unsupported URI scheme {other:?}: use http://, https://, file:// or a directory path"
            ))),
        }
    }
}

/// How an MLflow tracking server is authenticated to.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Auth {
    /// `Authorization: Bearer <token>` (`MLFLOW_TRACKING_TOKEN`).
    Bearer(String),
    /// HTTP basic auth (`MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`).
    Basic { username: String, password: String },
}

impl Auth {
    /// The `Authorization` header value.
    pub(crate) fn header_value(&self) -> String {
        use base64::Engine as _;
        match self {
            Auth::Bearer(token) => format!("Bearer {token}"),
            Auth::Basic { username, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            ),
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

/// The OTLP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl OtlpProtocol {
    /// Reads `grpc`, `http/protobuf` or `http/json`, the values OpenTelemetry defines.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim() {
            "grpc" => Some(OtlpProtocol::Grpc),
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            "http/json" => Some(OtlpProtocol::HttpJson),
            _ => None,
        }
    }
}

/// Where and how spans go to an OTLP endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OtlpSettings {
    /// For HTTP the full URL spans are posted to (`.../v1/traces`); for gRPC the server address.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Sent with every request (`OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`).
    pub headers: Vec<(String, String)>,
    /// Per-request timeout (`OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT`, default 10 s).
    pub timeout: Duration,
    /// Gzip request bodies (`OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION=gzip`).
    pub gzip: bool,
    /// Resource attributes: `service.name`, `OTEL_RESOURCE_ATTRIBUTES` and the SDK's own.
    pub resource: Vec<(String, String)>,
}

impl OtlpSettings {
    /// An endpoint with the defaults OpenTelemetry gives every other setting.
    pub fn new(endpoint: impl Into<String>, protocol: OtlpProtocol) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol,
            headers: Vec::new(),
            timeout: DEFAULT_OTLP_TIMEOUT,
            gzip: false,
            resource: default_resource(None, &[]),
        }
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// OpenTelemetry's default per-request timeout.
pub(crate) const DEFAULT_OTLP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long undelivered spans are retried (`MLFLOW_ASYNC_TRACE_LOGGING_RETRY_TIMEOUT`).
pub(crate) const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(500);
/// Requests in flight to one destination (`MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS`).
pub(crate) const DEFAULT_MAX_IN_FLIGHT: usize = 10;

/// How exporters deliver: concurrency, retries and the budgets that bound waiting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliverySettings {
    pub max_in_flight: usize,
    /// Failed requests are retried, with backoff, for this long after the first attempt.
    pub retry_window: Duration,
    /// Per-request timeout for tracking servers (`MLFLOW_HTTP_REQUEST_TIMEOUT`, default 120 s).
    pub request_timeout: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            retry_window: DEFAULT_RETRY_WINDOW,
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// Everything the environment says about where traces go and how.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    pub(crate) tracking_uri: Option<TrackingUri>,
    pub(crate) experiment: Option<ExperimentRef>,
    /// `MLFLOW_TRACING_DESTINATION`.
    pub(crate) destination: Option<Destination>,
    /// `TRACELAKE_LAKE_ROOT`: lake schemas are written to this lake directly.
    pub(crate) lake_root: Option<String>,
    pub(crate) otlp: Option<OtlpSettings>,
    pub(crate) dual_export: bool,
    pub(crate) auth: Option<Auth>,
    pub(crate) delivery: DeliverySettings,
    /// The resource spans are exported under (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`).
    pub(crate) resource: std::sync::Arc<Vec<(String, String)>>,
    /// `MLFLOW_ENABLE_ASYNC_TRACE_LOGGING` (default true): false waits for each trace's export
    /// when its root span ends.
    pub(crate) async_logging: bool,
    pub(crate) schedule_delay: Option<Duration>,
    pub(crate) max_queued_traces: Option<usize>,
    pub(crate) export_timeout: Option<Duration>,
}

/// The directory traces go to when nothing else is configured.
pub const DEFAULT_TRACE_DIRECTORY: &str = "tracelake-traces";

impl Settings {
    pub(crate) fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `get` (the environment, or a map in tests).
    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // Unset and empty are the same, as in MLflow and the OpenTelemetry SDKs.
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mut s = Settings { async_logging: true, ..Settings::default() };

        s.tracking_uri = get("MLFLOW_TRACKING_URI").map(|v| TrackingUri::parse(&v)).transpose()?;
        // The name first, as MLflow reads them.
        s.experiment = match (get("MLFLOW_EXPERIMENT_NAME"), get("MLFLOW_EXPERIMENT_ID")) {
            (Some(name), _) => Some(ExperimentRef::Name(name)),
            (None, Some(id)) => Some(ExperimentRef::Id(id.trim().to_owned())),
            (None, None) => None,
        };
        s.destination =
            get("MLFLOW_TRACING_DESTINATION").map(|v| parse_tracing_destination(&v)).transpose()?;
        s.lake_root = get("TRACELAKE_LAKE_ROOT").map(|v| parse_lake_root(&v)).transpose()?;
        s.auth = match (
            get("MLFLOW_TRACKING_TOKEN"),
            get("MLFLOW_TRACKING_USERNAME"),
            get("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(token), _, _) => Some(Auth::Bearer(token)),
            (None, Some(username), Some(password)) => Some(Auth::Basic { username, password }),
            (None, Some(username), None) => {
                return Err(ConfigError::new(
                    "MLFLOW_TRACKING_USERNAME",
                    &username,
                    "set MLFLOW_TRACKING_PASSWORD too, or neither",
                ));
            }
            (None, None, Some(_)) => {
                return Err(ConfigError::new(
                    "MLFLOW_TRACKING_PASSWORD",
                    "<redacted>",
                    "set MLFLOW_TRACKING_USERNAME too, or neither",
                ));
            }
            (None, None, None) => None,
        };
        s.dual_export = flag(&get, "MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT")?.unwrap_or(false);
        if flag(&get, "MLFLOW_ENABLE_OTLP_EXPORTER")?.unwrap_or(true) {
            s.otlp = otlp_from(&get)?;
        }
        s.resource = std::sync::Arc::new(match &s.otlp {
            Some(otlp) => otlp.resource.clone(),
            None => resource_from(&get),
        });
        s.async_logging = flag(&get, "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING")?.unwrap_or(true);
        if let Some(n) = number::<usize>(&get, "MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS", 1)? {
            s.delivery.max_in_flight = n;
        }
        if let Some(secs) = number::<u64>(&get, "MLFLOW_ASYNC_TRACE_LOGGING_RETRY_TIMEOUT", 0)? {
            s.delivery.retry_window = Duration::from_secs(secs);
        }
        if let Some(secs) = number::<u64>(&get, "MLFLOW_HTTP_REQUEST_TIMEOUT", 1)? {
            s.delivery.request_timeout = Duration::from_secs(secs);
        }
        s.max_queued_traces = number::<usize>(&get, "MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE", 1)?;
        s.schedule_delay = number::<u64>(&get, "MLFLOW_ASYNC_TRACE_LOGGING_MAX_INTERVAL_MILLIS", 1)?
            .map(Duration::from_millis);
        s.export_timeout = number::<u64>(&get, "OTEL_BSP_EXPORT_TIMEOUT", 0)?.map(Duration::from_millis);
        Ok(s)
    }
}

fn flag(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<bool>, ConfigError> {
    let Some(raw) = get(name) else { return Ok(None) };
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(Some(true)),
        "false" | "0" | "no" | "off" => Ok(Some(false)),
        _ => Err(ConfigError::new(name, &raw, "expected true or false")),
    }
}

fn number<T: std::str::FromStr + PartialOrd + From<u8> + std::fmt::Display>(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    min: u8,
) -> Result<Option<T>, ConfigError> {
    let Some(raw) = get(name) else { return Ok(None) };
    match raw.trim().parse::<T>() {
        Ok(v) if v >= T::from(min) => Ok(Some(v)),
        _ => Err(ConfigError::new(name, &raw, format!("expected a whole number of at least {min}"))),
    }
}

/// `<experiment id>` or `<catalog>.<schema>`, as MLflow reads the variable.
fn parse_tracing_destination(raw: &str) -> Result<Destination, ConfigError> {
    let name = "MLFLOW_TRACING_DESTINATION";
    let value = raw.trim();
    let word =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let parts: Vec<&str> = value.split('.').collect();
    match parts.as_slice() {
        [id] if word(id) => Ok(Destination::experiment_id(*id)),
        [catalog, schema] if word(catalog) && word(schema) => Ok(Destination::lake_schema(*catalog, *schema)),
        _ => Err(ConfigError::new(
            name,
            raw,
            "expected an experiment id (\"123\") or a lake schema \"<catalog>.<schema>\"",
        )),
    }
}

/// A lake root: a directory, `file://`, or `s3://bucket/prefix` (what `tracelake server
/// --lake-root` takes).
fn parse_lake_root(raw: &str) -> Result<String, ConfigError> {
    let value = raw.trim();
    match value.split_once("://") {
        None => Ok(value.to_owned()),
        Some(("file" | "s3" | "s3a", rest)) if !rest.is_empty() => Ok(value.to_owned()),
        Some(_) => Err(ConfigError::new(
            "TRACELAKE_LAKE_ROOT",
            raw,
            "expected a directory, file:///path or s3://bucket/prefix",
        )),
    }
}

/// The OTLP exporter the `OTEL_EXPORTER_OTLP_*` variables describe, if they name an endpoint.
fn otlp_from(get: &impl Fn(&str) -> Option<String>) -> Result<Option<OtlpSettings>, ConfigError> {
    // The signal-specific variable wins over the general one, for every setting.
    let pick = |setting: &str| {
        let specific = format!("OTEL_EXPORTER_OTLP_TRACES_{setting}");
        match get(&specific) {
            Some(v) => Some((specific, v)),
            None => {
                let general = format!("OTEL_EXPORTER_OTLP_{setting}");
                get(&general).map(|v| (general, v))
            }
        }
    };
    // Nothing is read (or refused) unless an endpoint is set.
    if get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() && get("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
        return Ok(None);
    }
    let protocol = match pick("PROTOCOL") {
        None => OtlpProtocol::Grpc,
        Some((var, raw)) => OtlpProtocol::parse(&raw)
            .ok_or_else(|| ConfigError::new(&var, &raw, "expected grpc, http/protobuf or http/json"))?,
    };
    let endpoint = match (get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), get("OTEL_EXPORTER_OTLP_ENDPOINT")) {
        (Some(url), _) => {
            check_endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &url)?;
            url.trim().to_owned()
        }
        (None, Some(base)) => {
            check_endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", &base)?;
            let base = base.trim();
            // The general endpoint is a base URL: HTTP exporters append the signal's path.
            match protocol {
                OtlpProtocol::Grpc => base.to_owned(),
                _ => format!("{}/v1/traces", base.trim_end_matches('/')),
            }
        }
        (None, None) => return Ok(None),
    };
    let headers = match pick("HEADERS") {
        None => Vec::new(),
        Some((var, raw)) => {
            parse_key_values(&raw).map_err(|problem| ConfigError::new(&var, &raw, problem))?
        }
    };
    let timeout = match pick("TIMEOUT") {
        None => DEFAULT_OTLP_TIMEOUT,
        Some((var, raw)) => match raw.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => return Err(ConfigError::new(&var, &raw, "expected a timeout in milliseconds")),
        },
    };
    let gzip = match pick("COMPRESSION") {
        None => false,
        Some((var, raw)) => match raw.trim() {
            "gzip" => true,
            "none" => false,
            _ => return Err(ConfigError::new(&var, &raw, "expected gzip or none")),
        },
    };
    Ok(Some(OtlpSettings { endpoint, protocol, headers, timeout, gzip, resource: resource_from(get) }))
}

/// The resource `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` describe (see
/// [`default_resource`]). OpenTelemetry discards a malformed resource variable with a warning
/// rather than failing.
fn resource_from(get: &impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let attrs = match get("OTEL_RESOURCE_ATTRIBUTES") {
        None => Vec::new(),
        Some(raw) => parse_key_values(&raw).unwrap_or_else(|problem| {
            tracing::warn!(target: "tracelake", "ignoring OTEL_RESOURCE_ATTRIBUTES={raw:?}: {problem}");
            Vec::new()
        }),
    };
    let service = get("OTEL_SERVICE_NAME").map(|s| s.trim().to_owned());
    default_resource(service.as_deref(), &attrs)
}

fn check_endpoint(var: &str, raw: &str) -> Result<(), ConfigError> {
    let value = raw.trim();
    match value.split_once("://") {
        Some((scheme, rest)) if matches!(scheme, "http" | "https") && !rest.is_empty() => Ok(()),
        Some((scheme, _)) => Err(ConfigError::new(
            var,
            raw,
            format!("unsupported URI scheme {scheme:?}: an OTLP endpoint is an http:// or https:// URL"),
        )),
        None => Err(ConfigError::new(var, raw, "expected an http:// or https:// URL")),
    }
}

/// `key1=value1,key2=value2` with percent-encoded values, the W3C-baggage-like syntax of
/// `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES`.
pub(crate) fn parse_key_values(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, item) in raw.split(',').enumerate() {
        if item.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!("item {} ({:?}) is not key=value", i + 1, item.trim()));
        };
        let key = key.trim();
        if key.is_empty()
            || !key.bytes().all(|b| b.is_ascii_graphic() && !b"\"(),/:;<=>?@[\\]{}".contains(&b))
        {
            return Err(format!("item {} has an invalid key {key:?}", i + 1));
        }
        let value =
            percent_decode(value.trim()).ok_or_else(|| format!("item {} has a bad %-escape", i + 1))?;
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The resource every exported span carries: the SDK's own attributes, then
/// `OTEL_RESOURCE_ATTRIBUTES`, then `OTEL_SERVICE_NAME` (which wins over a `service.name`
/// there); `unknown_service` when no service name is given, as OpenTelemetry specifies.
pub(crate) fn default_resource(service: Option<&str>, attrs: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![
        ("telemetry.sdk.language".into(), "rust".into()),
        ("telemetry.sdk.name".into(), "tracelake".into()),
        ("telemetry.sdk.version".into(), env!("CARGO_PKG_VERSION").into()),
    ];
    let mut set = |k: &str, v: &str| match out.iter_mut().find(|(key, _)| key == k) {
        Some(slot) => slot.1 = v.to_owned(),
        None => out.push((k.to_owned(), v.to_owned())),
    };
    for (k, v) in attrs {
        set(k, v);
    }
    if let Some(name) = service {
        set("service.name", name);
    }
    if !out.iter().any(|(k, _)| k == "service.name") {
        out.push(("service.name".into(), "unknown_service".into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    fn error(vars: &[(&str, &str)]) -> String {
        read(vars).expect_err("the configuration should be rejected").to_string()
    }

    #[test]
    fn nothing_set_means_defaults() {
        let s = read(&[]).unwrap();
        assert!(s.tracking_uri.is_none() && s.otlp.is_none() && s.destination.is_none());
        assert!(s.async_logging && !s.dual_export);
        assert_eq!(s.delivery, DeliverySettings::default());
    }

    #[test]
    fn otlp_variables_are_read_with_the_signal_specific_ones_first() {
        let s = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,x-mlflow-experiment-id=7"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_SERVICE_NAME", "checkout"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=ignored,deployment.environment=prod"),
        ])
        .unwrap();
        let otlp = s.otlp.unwrap();
        assert_eq!(otlp.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(otlp.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(
            otlp.headers,
            vec![("api-key".into(), "a b".into()), ("x-mlflow-experiment-id".into(), "7".into())]
        );
        assert_eq!(otlp.timeout, Duration::from_millis(2500));
        assert!(otlp.gzip);
        let resource: HashMap<_, _> = otlp.resource.into_iter().collect();
        assert_eq!(resource["service.name"], "checkout");
        assert_eq!(resource["deployment.environment"], "prod");
        assert_eq!(resource["telemetry.sdk.language"], "rust");

        let grpc = read(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4317")]).unwrap();
        let otlp = grpc.otlp.unwrap();
        assert_eq!((otlp.endpoint.as_str(), otlp.protocol), ("http://collector:4317", OtlpProtocol::Grpc));
        let resource: HashMap<_, _> = otlp.resource.into_iter().collect();
        assert_eq!(resource["service.name"], "unknown_service");
    }

    #[test]
    fn mlflow_variables_are_read() {
        let s = read(&[
            ("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000/"),
            ("MLFLOW_EXPERIMENT_NAME", "support bot"),
            ("MLFLOW_TRACKING_USERNAME", "ann"),
            ("MLFLOW_TRACKING_PASSWORD", "secret"),
            ("MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT", "true"),
            ("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false"),
            ("MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS", "4"),
            ("MLFLOW_ASYNC_TRACE_LOGGING_RETRY_TIMEOUT", "30"),
        ])
        .unwrap();
        assert_eq!(s.tracking_uri, Some(TrackingUri::Server("http://127.0.0.1:5000".into())));
        assert_eq!(s.experiment, Some(ExperimentRef::Name("support bot".into())));
        assert_eq!(s.auth, Some(Auth::Basic { username: "ann".into(), password: "secret".into() }));
        assert!(s.dual_export && !s.async_logging);
        assert_eq!(s.delivery.max_in_flight, 4);
        assert_eq!(s.delivery.retry_window, Duration::from_secs(30));
        assert!(!format!("{:?}", s.auth).contains("secret"));

        let s = read(&[("TRACELAKE_LAKE_ROOT", "s3://bucket/lake")]).unwrap();
        assert_eq!(s.lake_root.as_deref(), Some("s3://bucket/lake"));
        let e = read(&[("TRACELAKE_LAKE_ROOT", "ftp://host/lake")]).unwrap_err().to_string();
        assert!(e.contains("TRACELAKE_LAKE_ROOT") && e.contains("ftp://host/lake"), "{e}");
        let s = read(&[("MLFLOW_TRACING_DESTINATION", "main.agents")]).unwrap();
        assert_eq!(s.destination, Some(Destination::lake_schema("main", "agents")));
        let s =
            read(&[("MLFLOW_TRACING_DESTINATION", "42"), ("MLFLOW_TRACKING_URI", "file:///tmp/t")]).unwrap();
        assert_eq!(s.destination, Some(Destination::experiment_id("42")));
        assert_eq!(s.tracking_uri, Some(TrackingUri::Directory("/tmp/t".into())));
    }

    #[test]
    fn bad_values_are_errors_naming_the_variable_and_the_value() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift"),
                ],
                "OTEL_EXPORTER_OTLP_PROTOCOL=\"thrift\": expected grpc, http/protobuf or http/json",
            ),
            (
                &[("MLFLOW_TRACING_DESTINATION", "a.b.c")],
                "MLFLOW_TRACING_DESTINATION=\"a.b.c\": expected an experiment id",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key"),
                ],
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS=\"api-key\": item 1 (\"api-key\") is not key=value",
            ),
            (
                &[("MLFLOW_TRACKING_URI", "ftp://host/x")],
                "MLFLOW_TRACKING_URI=\"ftp://host/x\": unsupported URI scheme \"ftp\"",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "udp://c:4317")],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=\"udp://c:4317\": unsupported URI scheme",
            ),
            (
                &[("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")],
                "MLFLOW_TRACKING_URI=\"sqlite:///mlflow.db\": the SDK does not write to a sqlite database",
            ),
            (
                &[("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "maybe")],
                "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=\"maybe\": expected true or false",
            ),
            (
                &[("MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS", "0")],
                "MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS=\"0\"",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")],
                "OTEL_EXPORTER_OTLP_COMPRESSION=\"zstd\": expected gzip or none",
            ),
        ];
        for (vars, expected) in cases {
            let message = error(vars);
            assert!(message.starts_with(expected), "{vars:?}: got {message:?}, expected {expected:?}");
        }
        assert!(!error(&[("MLFLOW_TRACKING_PASSWORD", "hunter2")]).contains("hunter2"));
    }

    #[test]
    fn the_otlp_exporter_can_be_switched_off_as_in_mlflow() {
        let s = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("MLFLOW_ENABLE_OTLP_EXPORTER", "false"),
        ])
        .unwrap();
        assert!(s.otlp.is_none());
        // Without an endpoint the other OTLP variables are not read, as MLflow ignores them.
        assert!(read(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")]).unwrap().otlp.is_none());
    }

    #[test]
    fn the_experiment_name_wins_over_the_id_as_in_mlflow() {
        let s = read(&[("MLFLOW_EXPERIMENT_ID", "4"), ("MLFLOW_EXPERIMENT_NAME", "named")]).unwrap();
        assert_eq!(s.experiment, Some(ExperimentRef::Name("named".into())));
    }

    #[test]
    fn a_malformed_resource_variable_is_discarded_not_fatal() {
        let s = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_RESOURCE_ATTRIBUTES", "note=100%"),
        ])
        .unwrap();
        assert!(s.otlp.unwrap().resource.iter().all(|(k, _)| k != "note"));
    }
}
