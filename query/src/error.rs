//! The query crate's error type and its one mapping to HTTP.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tidewatch_model::ErrorKind;

/// Prometheus' `errorType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    BadData,
    Execution,
    Timeout,
    Canceled,
    Internal,
    Unavailable,
    NotFound,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadData => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Timeout => "timeout",
            ErrorType::Canceled => "canceled",
            ErrorType::Internal => "internal",
            ErrorType::Unavailable => "unavailable",
            ErrorType::NotFound => "not_found",
        }
    }

    /// The status Prometheus answers with for this error type.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorType::BadData => StatusCode::BAD_REQUEST,
            ErrorType::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Canceled | ErrorType::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::NotFound => StatusCode::NOT_FOUND,
        }
    }
}

/// An API error: its type and the message the client sees.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub error_type: ErrorType,
    pub message: String,
}

impl Error {
    pub fn bad_data(message: impl Into<String>) -> Self {
        Error {
            error_type: ErrorType::BadData,
            message: message.into(),
        }
    }

    pub fn execution(message: impl Into<String>) -> Self {
        Error {
            error_type: ErrorType::Execution,
            message: message.into(),
        }
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Error {
            error_type: ErrorType::Timeout,
            message: message.into(),
        }
    }
}

impl From<tidewatch_model::Error> for Error {
    fn from(error: tidewatch_model::Error) -> Self {
        let error_type = match error.kind() {
            ErrorKind::BadData => ErrorType::BadData,
            ErrorKind::Retryable => ErrorType::Unavailable,
            ErrorKind::Internal => ErrorType::Internal,
        };
        Error {
            error_type,
            message: error.to_string(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        // Built by hand to keep Prometheus' field order: status, errorType, error.
        let body = format!(
            "{{\"status\":\"error\",\"errorType\":\"{}\",\"error\":{}}}",
            self.error_type.as_str(),
            serde_json::to_string(&self.message).unwrap_or_else(|_| "\"\"".to_string())
        );
        (
            self.error_type.status(),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}
