//! The model crate's error type.

/// How an error should be answered: the HTTP layer maps each kind to a status
/// code and Prometheus' `errorType` in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller sent something malformed or forbidden; retrying will not help.
    BadData,
    /// A limit was hit that may clear later (rate, capacity); the caller may retry.
    Retryable,
    /// Something broke on our side.
    Internal,
}

/// Errors raised while decoding or validating input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snappy decompression failed: {0}")]
    Snappy(String),
    #[error("protobuf decoding failed: {0}")]
    Protobuf(String),
    #[error("{0}")]
    Invalid(String),
    /// A body larger than a configured limit (answered with 413, not 400).
    #[error("request body too large: {0}")]
    TooLarge(String),
    /// A scrape body (Prometheus text or OpenMetrics) that does not parse;
    /// `line` is 1-based so an operator can find it in the target's output.
    #[error("{format} parse error on line {line}: {message}")]
    Exposition {
        format: &'static str,
        line: usize,
        message: String,
    },
    #[error("invalid regular expression {pattern:?}: {message}")]
    Regex { pattern: String, message: String },
    #[error("invalid tenant id {id:?}: {reason}")]
    Tenant { id: String, reason: &'static str },
    /// An error raised behind a seam (storage, a remote source), already classified.
    #[error("{message}")]
    Backend { kind: ErrorKind, message: String },
}

impl Error {
    /// The class of this error, for mapping to a response.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Backend { kind, .. } => *kind,
            _ => ErrorKind::BadData,
        }
    }
}
