//! Tidewatch's storage engine.
//!
//! Per tenant: a write-ahead log ([`wal`]), an in-memory head with an inverted
//! index ([`head`], [`index`]), and immutable Parquet blocks ([`block`]) in an
//! object store, merged by compaction and deleted by retention. Float samples
//! and native histogram samples travel the same path; a series may hold both,
//! one value per timestamp. [`Storage`] is
//! the entry point; it implements the model crate's seams
//! ([`Ingest`](tidewatch_model::seam::Ingest),
//! [`SeriesRead`](tidewatch_model::seam::SeriesRead),
//! [`MetadataRead`](tidewatch_model::seam::MetadataRead)).
//!
//! Guarantees: a write is acknowledged only once it is in the WAL; a restart
//! loads blocks and replays the WAL; a torn WAL tail is cut, never fatal; reads
//! merge head and blocks and return one sample per timestamp (the newest
//! source wins).
//!
//! Logs ([`logs`]) take the same path in their own directories: a log WAL, a
//! log head of streams, and log blocks (Parquet for the lines, a Tantivy index
//! over them); [`Storage`] implements the model's
//! [`LogIngest`](tidewatch_model::logs::LogIngest) and
//! [`LogRead`](tidewatch_model::logs::LogRead), and offers full-text search
//! ([`Storage::search_logs`]). Reads return each (stream, timestamp, line) once.

pub mod block;
mod chunk;
mod db;
pub mod error;
mod head;
mod histogram_codec;
pub mod index;
pub mod logs;
mod segment_cache;
mod shared_labels;
pub mod wal;

pub use db::{HeadFigures, Storage, StorageConfig, StorageStats};
pub use error::{Error, Result};
pub use logs::{LogHeadFigures, StreamRetention};
pub use segment_cache::SegmentCache;
pub use tidewatch_model::logs::{LogSearchHit, LogSearchPage, LogSearchRequest};
pub use wal::FsyncPolicy;
