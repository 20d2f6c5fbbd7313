//! The collector's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the collector. Per-line and per-target
/// problems never surface here: they are counted and logged where they happen,
/// and the collector keeps running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read or did not validate.
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    /// A configuration value is invalid (no file involved, e.g. a flag).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A file under the state directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A persisted state file (positions, spool segment) is corrupt or of an
    /// unknown version.
    #[error("{path}: {message}")]
    CorruptState { path: PathBuf, message: String },
    /// Sending to the server failed; `retryable` says whether trying again can help
    /// (connection errors, 429 and 5xx) or not (other 4xx: the batch is refused).
    #[error("sending to {url}: {message}")]
    Send {
        url: String,
        message: String,
        retryable: bool,
    },
    /// The Kubernetes API could not be reached or answered an error.
    #[error("kubernetes: {0}")]
    Kube(String),
    /// A file read for metrics (`/proc/meminfo`, a CA bundle) has content
    /// that could not be understood.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// One scrape of one target failed: connection, timeout, status or body.
    /// Counted and logged by the scrape loop, never returned from it.
    #[error("scraping {target}: {message}")]
    Scrape { target: String, message: String },
}

impl Error {
    pub(crate) fn parse(path: impl Into<PathBuf>, message: String) -> Self {
        Error::Parse {
            path: path.into(),
            message,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The collector's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
