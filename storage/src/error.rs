//! The storage crate's error type.

use tidewatch_model::ErrorKind;

/// Errors of the storage engine. Each carries what it was doing and on what.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("block {block}: {message}")]
    Block { block: String, message: String },
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Limit(String),
    /// A limit that may clear later (Loki answers its streams limit with 429).
    #[error("{0}")]
    Throttled(String),
    #[error("{0}")]
    Model(#[from] tidewatch_model::Error),
    #[error("background task failed: {0}")]
    Task(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// How the error is answered over HTTP.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Rejected(_) | Error::Limit(_) => ErrorKind::BadData,
            Error::Model(inner) => inner.kind(),
            Error::Throttled(_) => ErrorKind::Retryable,
            _ => ErrorKind::Internal,
        }
    }
}

impl From<Error> for tidewatch_model::Error {
    fn from(error: Error) -> Self {
        match error {
            Error::Model(inner) => inner,
            other => tidewatch_model::Error::Backend {
                kind: other.kind(),
                message: other.to_string(),
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
