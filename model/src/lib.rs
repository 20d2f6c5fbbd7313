//! Tidewatch's shared vocabulary.
//!
//! Everything the other crates talk about lives here: [`Labels`] and [`Matcher`]s,
//! [`Sample`]s with Prometheus' float semantics, [`TenantId`]s, the [`Clock`] that
//! lets tests drive time, the remote-write and Loki push wire codecs ([`remote_write`],
//! [`loki_push`]), the scrape formats ([`exposition`]: Prometheus text and
//! OpenMetrics), ingest validation ([`validate`], [`log_validate`]) and the read
//! and write seams ([`seam`]) that storage implements and query consumes. This
//! crate depends on nothing of ours.

pub mod error;
pub mod exposition;
pub mod histogram;
mod histogram_bounds;
pub mod labels;
pub mod log_validate;
pub mod logs;
pub mod loki_push;
pub mod matcher;
pub mod raw_write;
pub mod remote_write;
pub mod sample;
pub mod seam;
pub mod tenant;
pub mod time;
pub mod validate;

pub use error::{Error, ErrorKind};
pub use histogram::{FloatHistogram, HistogramSample};
pub use labels::{Label, Labels, METRIC_NAME};
pub use matcher::{MatchOp, Matcher};
pub use sample::{STALE_NAN_BITS, Sample, is_stale_nan, stale_nan};
pub use tenant::TenantId;
pub use time::{Clock, ManualClock, SystemClock, TimestampMs};
