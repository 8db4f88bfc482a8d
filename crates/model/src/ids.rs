//! Trace and span identifiers.
//!
//! A trace id is a 128-bit OpenTelemetry id, a span id a 64-bit one; both are never zero.
//! MLflow names a trace stored in an experiment `tr-<32 hex>` and a trace stored in a lake
//! schema `trace:/<catalog>.<schema>/<32 hex>`: both are pure functions of the OpenTelemetry
//! id, so no round trip to a server is needed to name a trace.

use std::fmt;
use std::str::FromStr;

/// Prefix of MLflow trace ids for traces stored in an experiment.
pub const TRACE_ID_V3_PREFIX: &str = "tr-";
/// Prefix of MLflow trace ids for traces stored in a lake (Unity Catalog style) location.
pub const TRACE_ID_V4_PREFIX: &str = "trace:/";

/// Why an identifier could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("invalid {what} {value:?}: expected {expected}")]
    Malformed { what: &'static str, value: String, expected: &'static str },
    #[error("invalid {what}: expected {expected} bytes, got {got}")]
    Length { what: &'static str, expected: usize, got: usize },
    #[error("invalid {what}: the all-zero id is reserved by OpenTelemetry")]
    Zero { what: &'static str },
}

/// A 128-bit OpenTelemetry trace id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(u128);

/// A 64-bit OpenTelemetry span id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(u64);

impl TraceId {
    /// Wraps a raw id; `None` for the reserved zero id.
    pub const fn new(raw: u128) -> Option<Self> {
        if raw == 0 { None } else { Some(Self(raw)) }
    }

    /// A fresh random id from the thread-local generator.
    pub fn random() -> Self {
        loop {
            if let Some(id) = Self::new(rand::random()) {
                return id;
            }
        }
    }

    pub const fn to_u128(self) -> u128 {
        self.0
    }

    /// Big-endian bytes, as OTLP carries them.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        let arr: [u8; 16] = bytes.try_into().map_err(|_| IdError::Length {
            what: "trace id",
            expected: 16,
            got: bytes.len(),
        })?;
        Self::new(u128::from_be_bytes(arr)).ok_or(IdError::Zero { what: "trace id" })
    }

    /// Reads 32 hex digits (either case).
    pub fn from_hex(hex: &str) -> Result<Self, IdError> {
        let malformed =
            || IdError::Malformed { what: "trace id", value: hex.to_owned(), expected: "32 hex digits" };
        if hex.len() != 32 {
            return Err(malformed());
        }
        let raw = u128::from_str_radix(hex, 16).map_err(|_| malformed())?;
        Self::new(raw).ok_or(IdError::Zero { what: "trace id" })
    }

    /// The MLflow id of a trace stored in an experiment: `tr-<32 hex>`.
    pub fn to_mlflow_v3(self) -> String {
        let mut id = String::with_capacity(35);
        id.push_str(TRACE_ID_V3_PREFIX);
        id.push_str(hex(self.0.to_be_bytes(), &mut [0; 32]));
        id
    }

    /// The MLflow id of a trace stored in a lake location: `trace:/<location>/<32 hex>`.
    pub fn to_mlflow_v4(self, location: &str) -> String {
        format!("{TRACE_ID_V4_PREFIX}{location}/{self}")
    }

    /// Reads any MLflow trace id form: `tr-<hex>`, `trace:/<location>/<hex>` or bare hex.
    pub fn from_mlflow(id: &str) -> Result<Self, IdError> {
        if let Some(hex) = id.strip_prefix(TRACE_ID_V3_PREFIX) {
            return Self::from_hex(hex);
        }
        if let Some(rest) = id.strip_prefix(TRACE_ID_V4_PREFIX) {
            let (_, hex) = rest.rsplit_once('/').ok_or_else(|| IdError::Malformed {
                what: "trace id",
                value: id.to_owned(),
                expected: "trace:/<catalog>.<schema>/<32 hex>",
            })?;
            return Self::from_hex(hex);
        }
        Self::from_hex(id)
    }
}

impl SpanId {
    /// Wraps a raw id; `None` for the reserved zero id.
    pub const fn new(raw: u64) -> Option<Self> {
        if raw == 0 { None } else { Some(Self(raw)) }
    }

    /// A fresh random id from the thread-local generator.
    pub fn random() -> Self {
        loop {
            if let Some(id) = Self::new(rand::random()) {
                return id;
            }
        }
    }

    pub const fn to_u64(self) -> u64 {
        self.0
    }

    /// Big-endian bytes, as OTLP carries them.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        let arr: [u8; 8] = bytes.try_into().map_err(|_| IdError::Length {
            what: "span id",
            expected: 8,
            got: bytes.len(),
        })?;
        Self::new(u64::from_be_bytes(arr)).ok_or(IdError::Zero { what: "span id" })
    }

    /// Reads 16 hex digits (either case).
    pub fn from_hex(hex: &str) -> Result<Self, IdError> {
        let malformed =
            || IdError::Malformed { what: "span id", value: hex.to_owned(), expected: "16 hex digits" };
        if hex.len() != 16 {
            return Err(malformed());
        }
        let raw = u64::from_str_radix(hex, 16).map_err(|_| malformed())?;
        Self::new(raw).ok_or(IdError::Zero { what: "span id" })
    }
}

/// Lowercase hex of `bytes`, written into `out` (twice as long). Ids are formatted on hot
/// paths, where `format!("{:032x}")` costs an order of magnitude more.
fn hex<const N: usize>(bytes: [u8; N], out: &mut [u8]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(&out[..2 * N]).unwrap_or_default()
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(hex(self.0.to_be_bytes(), &mut [0; 32]))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(hex(self.0.to_be_bytes(), &mut [0; 16]))
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

impl FromStr for TraceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_mlflow(s)
    }
}

impl FromStr for SpanId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_round_trips_through_every_mlflow_form() {
        let id = TraceId::from_hex("0976bfff5d59ceb4129a32bae600dae8").unwrap();
        assert_eq!(id.to_mlflow_v3(), "tr-0976bfff5d59ceb4129a32bae600dae8");
        assert_eq!(TraceId::from_mlflow(&id.to_mlflow_v3()).unwrap(), id);
        let v4 = id.to_mlflow_v4("main.agents");
        assert_eq!(v4, "trace:/main.agents/0976bfff5d59ceb4129a32bae600dae8");
        assert_eq!(TraceId::from_mlflow(&v4).unwrap(), id);
        assert_eq!(TraceId::from_bytes(&id.to_bytes()).unwrap(), id);
    }

    #[test]
    fn zero_and_malformed_ids_are_rejected_with_the_reason() {
        assert_eq!(TraceId::from_hex(&"0".repeat(32)).unwrap_err(), IdError::Zero { what: "trace id" });
        let err = SpanId::from_hex("xyz").unwrap_err().to_string();
        assert_eq!(err, "invalid span id \"xyz\": expected 16 hex digits");
    }

    #[test]
    fn span_ids_print_as_sixteen_lowercase_hex_digits() {
        let id = SpanId::new(0xAB).unwrap();
        assert_eq!(id.to_string(), "00000000000000ab");
    }

    #[test]
    fn hex_formatting_matches_the_standard_formatter() {
        for _ in 0..100 {
            let (t, s) = (TraceId::random(), SpanId::random());
            assert_eq!(t.to_string(), format!("{:032x}", t.to_u128()));
            assert_eq!(s.to_string(), format!("{:016x}", s.to_u64()));
            assert_eq!(t.to_mlflow_v3(), format!("tr-{:032x}", t.to_u128()));
        }
    }
}
