//! The one place where errors become HTTP responses: MLflow's error JSON and status codes.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracelake_store::StoreError;

/// An error answered to a client: an MLflow error code, a message that says what was wrong
/// with which input, and the status that goes with the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds to wait before retrying (sent as `Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", message)
    }

    /// The ingest queue is full: retry after `seconds`.
    pub fn overloaded(seconds: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            format!("the server is busy writing; retry in {seconds} s"),
        );
        e.retry_after = Some(seconds);
        e
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE", message)
    }

    /// A failure inside the server: `message` is logged, the client is told to look at the log.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!(target: "tracelake::server", "{message}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "internal error; see the server log")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::AlreadyExists(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS", m)
            }
            StoreError::InvalidArgument(m) => ApiError::invalid(m),
            StoreError::InvalidState(m) => ApiError::new(StatusCode::BAD_REQUEST, "INVALID_STATE", m),
            StoreError::Internal(m) => ApiError::internal(format_args!("store failure: {m}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error_code": self.code, "message": self.message});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
