//! The write-ahead log: every acknowledged write is here before the
//! acknowledgement, and replay on start restores the head from it.
//!
//! A WAL directory holds numbered segment files (`00000001`, …) and at most one
//! checkpoint directory (`checkpoint.00000007/`, holding one segment with the
//! series and samples of segments ≤ 7 that were still needed when it was made).
//! Each record is framed as `len: u32 LE | crc32c(payload): u32 LE | payload`.
//! A frame that is short or fails its checksum ends the log: the segment is cut
//! back to the last good record and later segments are removed, with a warning.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, ErrorKind as IoErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tidewatch_model::histogram::FloatHistogram;
use tidewatch_model::seam::{MetricMetadata, MetricType};
use tidewatch_model::{Label, Labels, TimestampMs};

use crate::error::{Error, Result};
use crate::histogram_codec;

const FRAME_HEADER_LEN: usize = 8;
/// No record is larger; a length above this is corruption, not a reason to allocate.
const MAX_RECORD_LEN: usize = 512 << 20;
const CHECKPOINT_PREFIX: &str = "checkpoint.";

const RECORD_SERIES: u8 = 1;
const RECORD_SAMPLES: u8 = 2;
const RECORD_METADATA: u8 = 3;
/// Added with native histograms: older builds stop replay at this record (as
/// at any unknown one), so a WAL written by this build needs this build.
const RECORD_HISTOGRAMS: u8 = 4;
/// Log records live only in a tenant's log WAL (`logs/<tenant>/wal`), never
/// in the metrics WAL: older builds never meet them.
const RECORD_LOG_STREAM: u8 = 5;
const RECORD_LOG_ENTRIES: u8 = 6;

/// When the WAL is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before every acknowledgement: survives power loss, costs a disk flush per write.
    Always,
    /// At most this long after a write: survives a crash of the process (the data
    /// is in the OS before the acknowledgement), may lose the last interval on power loss.
    Interval(Duration),
    /// Never explicitly; the OS decides.
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Interval(Duration::from_secs(1))
    }
}

/// A sample addressed by series reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefSample {
    pub series_ref: u64,
    pub timestamp: TimestampMs,
    pub value: f64,
}

/// A native histogram sample addressed by series reference.
#[derive(Debug, Clone, PartialEq)]
pub struct RefHistogram {
    pub series_ref: u64,
    pub timestamp: TimestampMs,
    pub histogram: FloatHistogram,
}

/// A log entry addressed by stream reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefLogEntry {
    pub stream_ref: u64,
    pub timestamp: i64,
    pub line: String,
    pub structured_metadata: Labels,
}

/// A log entry to be logged, borrowed from wherever it lives.
#[derive(Debug, Clone, Copy)]
pub struct LogEntryView<'a> {
    pub stream_ref: u64,
    pub timestamp: i64,
    pub line: &'a str,
    pub structured_metadata: &'a Labels,
}

impl RefLogEntry {
    pub fn view(&self) -> LogEntryView<'_> {
        LogEntryView {
            stream_ref: self.stream_ref,
            timestamp: self.timestamp,
            line: &self.line,
            structured_metadata: &self.structured_metadata,
        }
    }
}

/// A decoded WAL record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A new series and the reference later records use for it.
    Series {
        series_ref: u64,
        labels: Labels,
    },
    Samples(Vec<RefSample>),
    Metadata(MetricMetadata),
    Histograms(Vec<RefHistogram>),
    /// A new log stream and the reference later entry records use for it.
    LogStream {
        stream_ref: u64,
        labels: Labels,
    },
    LogEntries(Vec<RefLogEntry>),
}

/// Builds a buffer of framed records, written to the WAL in one call.
#[derive(Debug, Default)]
pub struct RecordBuffer {
    bytes: Vec<u8>,
}

impl RecordBuffer {
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn frame(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[0; FRAME_HEADER_LEN]);
        encode(&mut self.bytes);
        let payload = &self.bytes[start + FRAME_HEADER_LEN..];
        let len = payload.len() as u32;
        let crc = crc32c::crc32c(payload);
        self.bytes[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    pub fn series(&mut self, series_ref: u64, labels: &Labels) {
        self.frame(|out| {
            out.push(RECORD_SERIES);
            put_uvarint(out, series_ref);
            put_labels(out, labels);
        });
    }

    /// A log stream record: same layout as a series record, its own type.
    pub fn log_stream(&mut self, stream_ref: u64, labels: &Labels) {
        self.frame(|out| {
            out.push(RECORD_LOG_STREAM);
            put_uvarint(out, stream_ref);
            put_labels(out, labels);
        });
    }

    /// Log entries are encoded as (ref, timestamp delta to the first, line,
    /// structured metadata pairs).
    pub fn log_entries(&mut self, entries: &[RefLogEntry]) {
        let views: Vec<LogEntryView<'_>> = entries.iter().map(RefLogEntry::view).collect();
        self.log_entry_views(&views);
    }

    /// [`RecordBuffer::log_entries`] from borrowed entries, so a push is
    /// logged without copying its lines.
    pub fn log_entry_views(&mut self, entries: &[LogEntryView<'_>]) {
        let Some(first) = entries.first() else {
            return;
        };
        let base = first.timestamp;
        self.frame(|out| {
            out.push(RECORD_LOG_ENTRIES);
            put_uvarint(out, entries.len() as u64);
            put_varint(out, base);
            for entry in entries {
                put_uvarint(out, entry.stream_ref);
                put_varint(out, entry.timestamp.wrapping_sub(base));
                put_str(out, entry.line);
                put_labels(out, entry.structured_metadata);
            }
        });
    }

    /// Samples are encoded as (ref, timestamp delta to the first, raw value bits).
    pub fn samples(&mut self, samples: &[RefSample]) {
        let Some(first) = samples.first() else {
            return;
        };
        let base = first.timestamp;
        self.frame(|out| {
            out.push(RECORD_SAMPLES);
            put_uvarint(out, samples.len() as u64);
            put_varint(out, base);
            for sample in samples {
                put_uvarint(out, sample.series_ref);
                put_varint(out, sample.timestamp.wrapping_sub(base));
                out.extend_from_slice(&sample.value.to_bits().to_le_bytes());
            }
        });
    }

    /// Histograms are encoded as (ref, timestamp delta to the first, the
    /// histogram in [`histogram_codec`]'s form, custom bounds included).
    pub fn histograms(&mut self, histograms: &[RefHistogram]) {
        let Some(first) = histograms.first() else {
            return;
        };
        let base = first.timestamp;
        self.frame(|out| {
            out.push(RECORD_HISTOGRAMS);
            put_uvarint(out, histograms.len() as u64);
            put_varint(out, base);
            for sample in histograms {
                put_uvarint(out, sample.series_ref);
                put_varint(out, sample.timestamp.wrapping_sub(base));
                histogram_codec::encode(&sample.histogram, true, out);
            }
        });
    }

    /// Appends any record (checkpoints and tests re-encode what they read).
    pub fn record(&mut self, record: &Record) {
        match record {
            Record::Series { series_ref, labels } => self.series(*series_ref, labels),
            Record::Samples(samples) => self.samples(samples),
            Record::Metadata(metadata) => self.metadata(metadata),
            Record::Histograms(histograms) => self.histograms(histograms),
            Record::LogStream { stream_ref, labels } => self.log_stream(*stream_ref, labels),
            Record::LogEntries(entries) => self.log_entries(entries),
        }
    }

    pub fn metadata(&mut self, metadata: &MetricMetadata) {
        self.frame(|out| {
            out.push(RECORD_METADATA);
            put_str(out, &metadata.metric_family_name);
            put_uvarint(out, metadata.metric_type.to_proto() as u64);
            put_str(out, &metadata.help);
            put_str(out, &metadata.unit);
        });
    }
}

use histogram_codec::{put_uvarint, put_varint};

fn put_str(out: &mut Vec<u8>, value: &str) {
    put_uvarint(out, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

fn put_labels(out: &mut Vec<u8>, labels: &Labels) {
    put_uvarint(out, labels.len() as u64);
    for label in labels {
        put_str(out, &label.name);
        put_str(out, &label.value);
    }
}

/// Reads the fields of one record payload; every read is bounds-checked.
struct PayloadReader<'a> {
    inner: histogram_codec::Reader<'a>,
}

impl<'a> PayloadReader<'a> {
    fn remaining(&self) -> usize {
        self.inner.bytes.len()
    }

    fn uvarint(&mut self) -> Option<u64> {
        self.inner.uvarint()
    }

    fn varint(&mut self) -> Option<i64> {
        self.inner.varint()
    }

    fn u64_le(&mut self) -> Option<u64> {
        self.inner.f64().map(f64::to_bits)
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.uvarint()?).ok()?;
        let (head, rest) = self.inner.bytes.split_at_checked(len)?;
        self.inner.bytes = rest;
        String::from_utf8(head.to_vec()).ok()
    }

    /// Passes over a length-prefixed text.
    fn skip_text(&mut self) -> Option<()> {
        let len = usize::try_from(self.uvarint()?).ok()?;
        self.inner.bytes = self.inner.bytes.get(len..)?;
        Some(())
    }

    fn labels(&mut self) -> Option<Labels> {
        let count = usize::try_from(self.uvarint()?).ok()?;
        // Each pair needs at least two length bytes; a larger count is corruption.
        if count > self.remaining() / 2 {
            return None;
        }
        let mut labels = Vec::with_capacity(count);
        for _ in 0..count {
            labels.push(Label::new(self.string()?, self.string()?));
        }
        Some(Labels::from_pairs(labels.into_iter().map(|l| (l.name, l.value))))
    }

    fn byte(&mut self) -> Option<u8> {
        let (&byte, rest) = self.inner.bytes.split_first()?;
        self.inner.bytes = rest;
        Some(byte)
    }
}

/// Decodes one record payload; `None` for anything malformed.
pub fn decode_record(payload: &[u8]) -> Option<Record> {
    let mut reader = PayloadReader {
        inner: histogram_codec::Reader { bytes: payload },
    };
    let record = match reader.byte()? {
        RECORD_SERIES => {
            let series_ref = reader.uvarint()?;
            let count = reader.uvarint()? as usize;
            let mut labels = Vec::with_capacity(count.min(256));
            for _ in 0..count {
                labels.push(Label::new(reader.string()?, reader.string()?));
            }
            Record::Series {
                series_ref,
                labels: Labels::from_pairs(labels.into_iter().map(|l| (l.name, l.value))),
            }
        }
        RECORD_SAMPLES => {
            let count = reader.uvarint()? as usize;
            let base = reader.varint()?;
            // Each sample needs at least 10 bytes; a larger count is corruption.
            if count > reader.remaining() / 10 + 1 {
                return None;
            }
            let mut samples = Vec::with_capacity(count);
            for _ in 0..count {
                let series_ref = reader.uvarint()?;
                let timestamp = base.wrapping_add(reader.varint()?);
                let value = f64::from_bits(reader.u64_le()?);
                samples.push(RefSample {
                    series_ref,
                    timestamp,
                    value,
                });
            }
            Record::Samples(samples)
        }
        RECORD_HISTOGRAMS => {
            let count = reader.uvarint()? as usize;
            let base = reader.varint()?;
            // Each histogram needs at least its ref, its time and the codec's minimum.
            if count > reader.remaining() / (histogram_codec::MIN_ENCODED_LEN + 2) + 1 {
                return None;
            }
            let mut histograms = Vec::with_capacity(count);
            for _ in 0..count {
                let series_ref = reader.uvarint()?;
                let timestamp = base.wrapping_add(reader.varint()?);
                let histogram = reader.inner.histogram()?;
                histograms.push(RefHistogram {
                    series_ref,
                    timestamp,
                    histogram,
                });
            }
            Record::Histograms(histograms)
        }
        RECORD_LOG_STREAM => Record::LogStream {
            stream_ref: reader.uvarint()?,
            labels: reader.labels()?,
        },
        RECORD_LOG_ENTRIES => {
            let count = usize::try_from(reader.uvarint()?).ok()?;
            let base = reader.varint()?;
            // Each entry needs at least ref, time, line length and pair count.
            if count > reader.remaining() / 4 + 1 {
                return None;
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let stream_ref = reader.uvarint()?;
                let timestamp = base.wrapping_add(reader.varint()?);
                let line = reader.string()?;
                let structured_metadata = reader.labels()?;
                entries.push(RefLogEntry {
                    stream_ref,
                    timestamp,
                    line,
                    structured_metadata,
                });
            }
            Record::LogEntries(entries)
        }
        RECORD_METADATA => Record::Metadata(MetricMetadata {
            metric_family_name: reader.string()?,
            metric_type: MetricType::from_proto(reader.uvarint()? as i32),
            help: reader.string()?,
            unit: reader.string()?,
        }),
        _ => return None,
    };
    if reader.remaining() != 0 {
        return None;
    }
    Some(record)
}

fn segment_name(index: u32) -> String {
    format!("{index:08}")
}

fn checkpoint_name(index: u32) -> String {
    format!("{CHECKPOINT_PREFIX}{index:08}")
}

/// Segment indexes present in `dir`, ascending.
fn list_segments(dir: &Path) -> Result<Vec<u32>> {
    let mut segments = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| Error::io(format!("listing WAL directory {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("reading WAL directory entry", e))?;
        if let Some(index) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
            segments.push(index);
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// The newest complete checkpoint in `dir`, if any.
fn latest_checkpoint(dir: &Path) -> Result<Option<u32>> {
    let mut latest = None;
    let entries = fs::read_dir(dir).map_err(|e| Error::io(format!("listing WAL directory {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("reading WAL directory entry", e))?;
        let name = entry.file_name();
        let Some(index) = name
            .to_str()
            .and_then(|n| n.strip_prefix(CHECKPOINT_PREFIX))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        latest = latest.max(Some(index));
    }
    Ok(latest)
}

/// Outcome of reading one segment.
enum SegmentEnd {
    Clean,
    /// Bad data from this byte offset on.
    Corrupt {
        offset: u64,
        reason: &'static str,
    },
}

fn read_segment(path: &Path, on_record: &mut dyn FnMut(Record)) -> Result<SegmentEnd> {
    read_segment_settling(path, LogEntriesKept::Unknown, &mut |read| {
        if let SegmentRecord::Record(record) = read {
            on_record(record);
        }
    })
}

/// What [`read_segment_settling`] hands out for each record.
enum SegmentRecord<'a> {
    Record(Record),
    /// A record settled unread: dropped.
    Dropped,
    /// A record settled unread: kept, its payload as written.
    AsWritten(&'a [u8]),
}

/// [`read_segment`], settling log entry records by their timestamps where
/// `kept` allows it (checksummed, not decoded).
fn read_segment_settling(
    path: &Path,
    kept: LogEntriesKept,
    on_record: &mut dyn FnMut(SegmentRecord<'_>),
) -> Result<SegmentEnd> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening WAL segment {}", path.display()), e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut offset = 0u64;
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut payload = Vec::new();
    loop {
        match read_full(&mut reader, &mut header) {
            Ok(0) => return Ok(SegmentEnd::Clean),
            Ok(n) if n < FRAME_HEADER_LEN => {
                return Ok(SegmentEnd::Corrupt {
                    offset,
                    reason: "torn frame header",
                });
            }
            Ok(_) => {}
            Err(e) => return Err(Error::io(format!("reading WAL segment {}", path.display()), e)),
        }
        let len = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default());
        if len > MAX_RECORD_LEN {
            return Ok(SegmentEnd::Corrupt {
                offset,
                reason: "impossible record length",
            });
        }
        payload.resize(len, 0);
        match read_full(&mut reader, &mut payload) {
            Ok(n) if n < len => {
                return Ok(SegmentEnd::Corrupt {
                    offset,
                    reason: "torn record",
                });
            }
            Ok(_) => {}
            Err(e) => return Err(Error::io(format!("reading WAL segment {}", path.display()), e)),
        }
        if crc32c::crc32c(&payload) != crc {
            return Ok(SegmentEnd::Corrupt {
                offset,
                reason: "checksum mismatch",
            });
        }
        match kept.settle(&payload) {
            Some(true) => on_record(SegmentRecord::AsWritten(&payload)),
            Some(false) => on_record(SegmentRecord::Dropped),
            None => {
                let Some(record) = decode_record(&payload) else {
                    return Ok(SegmentEnd::Corrupt {
                        offset,
                        reason: "undecodable record",
                    });
                };
                on_record(SegmentRecord::Record(record));
            }
        }
        offset += (FRAME_HEADER_LEN + len) as u64;
    }
}

/// Like `read_exact`, but reports how many bytes were read before EOF.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == IoErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// What replay found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    pub segments: u32,
    pub records: u64,
    /// Whether a torn or corrupt tail was cut off.
    pub truncated: bool,
}

/// An open WAL, appending to its newest segment.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    policy: FsyncPolicy,
    segment_size: u64,
    current: File,
    current_index: u32,
    current_len: u64,
    last_sync: Instant,
    unsynced: bool,
}

/// Default size at which a segment is closed and a new one started.
pub const DEFAULT_SEGMENT_SIZE: u64 = 128 << 20;

impl Wal {
    /// Opens the WAL in `dir` (creating it), replays every record in order
    /// through `on_record`, repairs a torn tail, and starts a fresh segment.
    pub fn open(dir: &Path, policy: FsyncPolicy, on_record: &mut dyn FnMut(Record)) -> Result<(Wal, ReplayStats)> {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating WAL directory {}", dir.display()), e))?;
        let mut stats = ReplayStats::default();
        let mut counting = |record: Record| {
            stats.records += 1;
            on_record(record);
        };
        let checkpoint = latest_checkpoint(dir)?;
        if let Some(index) = checkpoint {
            let path = dir.join(checkpoint_name(index)).join(segment_name(0));
            if let SegmentEnd::Corrupt { offset, reason } = read_segment(&path, &mut counting)? {
                // A checkpoint is written to a temporary name and renamed when complete,
                // so damage here is disk corruption: keep what we could read and say so.
                tracing::warn!(path = %path.display(), offset, reason, "corrupt WAL checkpoint, replayed up to the damage");
                stats.truncated = true;
            }
        }
        let segments: Vec<u32> = list_segments(dir)?
            .into_iter()
            .filter(|&index| checkpoint.is_none_or(|c| index > c))
            .collect();
        let mut last_index = checkpoint.unwrap_or(0);
        for (position, &index) in segments.iter().enumerate() {
            let path = dir.join(segment_name(index));
            stats.segments += 1;
            last_index = index;
            if let SegmentEnd::Corrupt { offset, reason } = read_segment(&path, &mut counting)? {
                tracing::warn!(path = %path.display(), offset, reason, "truncating damaged WAL tail");
                stats.truncated = true;
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io(format!("opening {} to truncate", path.display()), e))?;
                file.set_len(offset)
                    .map_err(|e| Error::io(format!("truncating {}", path.display()), e))?;
                file.sync_all()
                    .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
                for &later in &segments[position + 1..] {
                    let later_path = dir.join(segment_name(later));
                    tracing::warn!(path = %later_path.display(), "removing WAL segment after damage");
                    fs::remove_file(&later_path)
                        .map_err(|e| Error::io(format!("removing {}", later_path.display()), e))?;
                }
                break;
            }
        }
        let next_index = last_index + 1;
        let current = create_segment(dir, next_index)?;
        sync_dir(dir)?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            policy,
            segment_size: DEFAULT_SEGMENT_SIZE,
            current,
            current_index: next_index,
            current_len: 0,
            last_sync: Instant::now(),
            unsynced: false,
        };
        Ok((wal, stats))
    }

    pub fn set_segment_size(&mut self, bytes: u64) {
        self.segment_size = bytes.max(1);
    }

    /// Appends framed records. On return the bytes are in the OS (and on disk
    /// when the policy says so); only then may the write be acknowledged.
    pub fn append(&mut self, records: &RecordBuffer) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.current_len > 0 && self.current_len + records.len() as u64 > self.segment_size {
            self.cut()?;
        }
        self.current
            .write_all(records.as_bytes())
            .map_err(|e| Error::io(format!("writing WAL segment {}", self.current_index), e))?;
        self.current_len += records.len() as u64;
        self.unsynced = true;
        match self.policy {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::Interval(interval) if self.last_sync.elapsed() >= interval => self.sync()?,
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => {}
        }
        Ok(())
    }

    /// Flushes the current segment to disk if anything is unsynced.
    pub fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            self.current
                .sync_data()
                .map_err(|e| Error::io(format!("syncing WAL segment {}", self.current_index), e))?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs if the interval policy is due; called by the maintenance loop so
    /// an idle WAL is still synced.
    pub fn sync_if_due(&mut self) -> Result<()> {
        match self.policy {
            FsyncPolicy::Interval(interval) if self.unsynced && self.last_sync.elapsed() >= interval => self.sync(),
            _ => Ok(()),
        }
    }

    /// Closes the current segment and starts the next. Returns the index of the
    /// new segment: every record written before the call is in a lower one.
    /// An empty current segment is closed too: a checkpoint below the new
    /// index then always re-filters the previous checkpoint. Returning the
    /// same index left a flush with nothing new since the last one without a
    /// checkpoint, so records that flush had made obsolete (a log flush of
    /// closed windows keeps the open window's entries) stayed in the WAL.
    pub fn cut(&mut self) -> Result<u32> {
        self.current
            .sync_all()
            .map_err(|e| Error::io(format!("syncing WAL segment {}", self.current_index), e))?;
        self.current_index += 1;
        self.current = create_segment(&self.dir, self.current_index)?;
        self.current_len = 0;
        self.unsynced = false;
        sync_dir(&self.dir)?;
        Ok(self.current_index)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Total bytes of segments and checkpoints on disk.
    pub fn disk_size(&self) -> u64 {
        dir_size(&self.dir)
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        match entry.metadata() {
            Ok(meta) if meta.is_dir() => total += dir_size(&entry.path()),
            Ok(meta) => total += meta.len(),
            Err(_) => {}
        }
    }
    total
}

fn create_segment(dir: &Path, index: u32) -> Result<File> {
    let path = dir.join(segment_name(index));
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(format!("creating WAL segment {}", path.display()), e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// Which log entries a checkpoint keeps, when a rule of time says it: a
/// log entry record is then settled from its entries' timestamps, without
/// decoding its lines. A log flush keeps exactly the entries at or after its
/// cutoff; decoding every line (a `String` each) only to drop it, or to
/// write it again unchanged, was a tenth of the flush's own work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEntriesKept {
    /// No rule: every record is decoded and given to `keep`.
    Unknown,
    /// Exactly the entries at or after this time (ns) are kept.
    From(i64),
    /// No log entry is kept.
    None,
}

impl LogEntriesKept {
    /// Whether the rule keeps an entry of this time (every one without a rule).
    pub fn keeps(self, timestamp: i64) -> bool {
        match self {
            LogEntriesKept::Unknown => true,
            LogEntriesKept::From(cutoff) => timestamp >= cutoff,
            LogEntriesKept::None => false,
        }
    }

    /// `Some(kept)` for a record settled by the rule, `None` to decode it.
    fn settle(self, payload: &[u8]) -> Option<bool> {
        if payload.first() != Some(&RECORD_LOG_ENTRIES) {
            return None;
        }
        match self {
            LogEntriesKept::Unknown => None,
            LogEntriesKept::None => Some(false),
            LogEntriesKept::From(cutoff) => {
                // A malformed record is left to the decoder, which reports it.
                let (oldest, newest) = log_entry_time_bounds(payload)?;
                if newest < cutoff {
                    Some(false)
                } else if oldest >= cutoff {
                    Some(true)
                } else {
                    None
                }
            }
        }
    }
}

/// Oldest and newest entry time of a log entry record, read past the
/// lines; `None` when malformed or empty.
fn log_entry_time_bounds(payload: &[u8]) -> Option<(i64, i64)> {
    let mut reader = PayloadReader {
        inner: histogram_codec::Reader { bytes: payload },
    };
    reader.byte()?;
    let count = reader.uvarint()?;
    let base = reader.varint()?;
    let mut bounds: Option<(i64, i64)> = None;
    for _ in 0..count {
        reader.uvarint()?;
        let timestamp = base.wrapping_add(reader.varint()?);
        reader.skip_text()?;
        for _ in 0..reader.uvarint()? {
            reader.skip_text()?;
            reader.skip_text()?;
        }
        bounds = Some(bounds.map_or((timestamp, timestamp), |(lo, hi)| {
            (lo.min(timestamp), hi.max(timestamp))
        }));
    }
    bounds
}

/// Rewrites the log so that segments below `below` are replaced by one
/// checkpoint holding only the records `keep` retains (samples filtered
/// record by record). Runs without the WAL lock: it reads only closed segments.
pub fn checkpoint(dir: &Path, below: u32, keep: impl FnMut(Record) -> Option<Record>) -> Result<CheckpointStats> {
    checkpoint_settling(dir, below, LogEntriesKept::Unknown, keep)
}

/// [`checkpoint`], settling log entry records by the rule `kept` without
/// decoding them; `keep` must keep entries as [`LogEntriesKept::keeps`] does.
pub fn checkpoint_settling(
    dir: &Path,
    below: u32,
    kept: LogEntriesKept,
    mut keep: impl FnMut(Record) -> Option<Record>,
) -> Result<CheckpointStats> {
    let last = below.saturating_sub(1);
    let previous = latest_checkpoint(dir)?;
    if previous.is_some_and(|p| p >= last) {
        return Ok(CheckpointStats::default());
    }
    let temp = dir.join(format!("{}.tmp", checkpoint_name(last)));
    if temp.exists() {
        fs::remove_dir_all(&temp).map_err(|e| Error::io(format!("removing stale {}", temp.display()), e))?;
    }
    fs::create_dir_all(&temp).map_err(|e| Error::io(format!("creating {}", temp.display()), e))?;
    let mut out = File::create(temp.join(segment_name(0))).map_err(|e| Error::io("creating checkpoint segment", e))?;
    let mut buffer = RecordBuffer::default();
    let mut stats = CheckpointStats::default();
    let mut write_error = None;
    let mut on_record = |read: SegmentRecord<'_>| {
        match read {
            SegmentRecord::Record(record) => match keep(record) {
                Some(record) => buffer.record(&record),
                None => {
                    stats.dropped += 1;
                    return;
                }
            },
            SegmentRecord::AsWritten(payload) => buffer.frame(|out| out.extend_from_slice(payload)),
            SegmentRecord::Dropped => {
                stats.dropped += 1;
                return;
            }
        }
        stats.kept += 1;
        if buffer.len() > 1 << 20 {
            if let Err(e) = out.write_all(buffer.as_bytes()) {
                write_error.get_or_insert(e);
            }
            buffer.clear();
        }
    };
    if let Some(index) = previous {
        let path = dir.join(checkpoint_name(index)).join(segment_name(0));
        read_segment_settling(&path, kept, &mut on_record)?;
    }
    let segments: Vec<u32> = list_segments(dir)?
        .into_iter()
        .filter(|&i| i < below && previous.is_none_or(|p| i > p))
        .collect();
    for &index in &segments {
        read_segment_settling(&dir.join(segment_name(index)), kept, &mut on_record)?;
    }
    if let Some(e) = write_error {
        return Err(Error::io("writing checkpoint", e));
    }
    out.write_all(buffer.as_bytes())
        .map_err(|e| Error::io("writing checkpoint", e))?;
    out.sync_all().map_err(|e| Error::io("syncing checkpoint", e))?;
    let final_path = dir.join(checkpoint_name(last));
    fs::rename(&temp, &final_path)
        .map_err(|e| Error::io(format!("renaming checkpoint to {}", final_path.display()), e))?;
    sync_dir(dir)?;
    // The checkpoint is durable: what it replaces can go.
    for index in segments {
        let path = dir.join(segment_name(index));
        fs::remove_file(&path).map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
    }
    if let Some(index) = previous {
        let path = dir.join(checkpoint_name(index));
        fs::remove_dir_all(&path).map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
    }
    Ok(stats)
}

/// Records a checkpoint kept and dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointStats {
    pub kept: u64,
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn replay(dir: &Path) -> (Vec<Record>, ReplayStats) {
        let mut records = Vec::new();
        let (_wal, stats) = Wal::open(dir, FsyncPolicy::Never, &mut |r| records.push(r)).unwrap();
        (records, stats)
    }

    fn labels(name: &str) -> Labels {
        Labels::from_pairs([("__name__", name), ("job", "test")])
    }

    fn write(wal: &mut Wal, records: &[Record]) {
        let mut buffer = RecordBuffer::default();
        for record in records {
            buffer.record(record);
        }
        wal.append(&buffer).unwrap();
    }

    fn record_strategy() -> impl Strategy<Value = Record> {
        prop_oneof![
            (any::<u64>(), "[a-z]{1,8}").prop_map(|(series_ref, name)| Record::Series {
                series_ref,
                labels: labels(&name)
            }),
            (any::<u64>(), "[a-z]{0,8}").prop_map(|(stream_ref, name)| Record::LogStream {
                stream_ref,
                labels: Labels::from_pairs([("app", name)])
            }),
            proptest::collection::vec((any::<u64>(), any::<i64>(), "\\PC{0,40}", "[a-z]{0,4}"), 1..10).prop_map(|v| {
                Record::LogEntries(
                    v.into_iter()
                        .map(|(stream_ref, timestamp, line, trace)| RefLogEntry {
                            stream_ref,
                            timestamp,
                            line,
                            structured_metadata: if trace.is_empty() {
                                Labels::default()
                            } else {
                                Labels::from_pairs([("trace_id", trace)])
                            },
                        })
                        .collect(),
                )
            }),
            proptest::collection::vec((any::<u64>(), any::<i64>(), any::<u64>()), 1..20).prop_map(|v| Record::Samples(
                v.into_iter()
                    .map(|(series_ref, timestamp, bits)| RefSample {
                        series_ref,
                        timestamp,
                        value: f64::from_bits(bits)
                    })
                    .collect()
            )),
            proptest::collection::vec(
                (
                    any::<u64>(),
                    any::<i64>(),
                    crate::histogram_codec::strategy::histogram()
                ),
                1..5
            )
            .prop_map(|v| Record::Histograms(
                v.into_iter()
                    .map(|(series_ref, timestamp, histogram)| RefHistogram {
                        series_ref,
                        timestamp,
                        histogram
                    })
                    .collect()
            )),
        ]
    }

    /// Bitwise comparison, so NaN payloads must survive too.
    fn same(a: &[Record], b: &[Record]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| match (x, y) {
                (Record::Samples(p), Record::Samples(q)) => {
                    p.len() == q.len()
                        && p.iter().zip(q).all(|(s, t)| {
                            s.series_ref == t.series_ref
                                && s.timestamp == t.timestamp
                                && s.value.to_bits() == t.value.to_bits()
                        })
                }
                (Record::Histograms(p), Record::Histograms(q)) => {
                    p.len() == q.len()
                        && p.iter().zip(q).all(|(s, t)| {
                            s.series_ref == t.series_ref
                                && s.timestamp == t.timestamp
                                && crate::histogram_codec::same_histogram(&s.histogram, &t.histogram)
                        })
                }
                _ => x == y,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        // Replay returns exactly what was written, across segment cuts and reopenings.
        #[test]
        fn replay_returns_what_was_written(batches in proptest::collection::vec(proptest::collection::vec(record_strategy(), 1..5), 1..6), segment_size in 64u64..4096) {
            let dir = tempfile::tempdir().unwrap();
            let mut written = Vec::new();
            for (i, batch) in batches.iter().enumerate() {
                let (mut wal, _) = Wal::open(dir.path(), FsyncPolicy::Never, &mut |_| {}).unwrap();
                wal.set_segment_size(segment_size);
                write(&mut wal, batch);
                if i % 2 == 0 { wal.cut().unwrap(); }
                written.extend(batch.iter().cloned());
            }
            let (replayed, stats) = replay(dir.path());
            prop_assert!(!stats.truncated);
            prop_assert!(same(&replayed, &written));
        }

        // Cutting the last segment anywhere loses at most the torn record, never earlier ones.
        #[test]
        fn torn_tail_is_truncated_not_fatal(records in proptest::collection::vec(record_strategy(), 1..8), cut_fraction in 0.0f64..1.0) {
            let dir = tempfile::tempdir().unwrap();
            let segment_path;
            let mut boundaries = vec![0u64];
            {
                let (mut wal, _) = Wal::open(dir.path(), FsyncPolicy::Never, &mut |_| {}).unwrap();
                segment_path = dir.path().join(segment_name(wal.current_index));
                for record in &records {
                    write(&mut wal, std::slice::from_ref(record));
                    boundaries.push(wal.current_len);
                }
            }
            let full_len = *boundaries.last().unwrap();
            let cut_at = ((full_len as f64) * cut_fraction) as u64;
            OpenOptions::new().write(true).open(&segment_path).unwrap().set_len(cut_at).unwrap();
            let complete = boundaries.iter().filter(|&&b| b > 0 && b <= cut_at).count();
            let (replayed, stats) = replay(dir.path());
            prop_assert!(same(&replayed, &records[..complete]));
            prop_assert_eq!(stats.truncated, !boundaries.contains(&cut_at));
            // After repair the log is clean again.
            let (again, stats) = replay(dir.path());
            prop_assert!(same(&again, &records[..complete]));
            prop_assert!(!stats.truncated);
        }
    }

    #[test]
    fn flipped_bit_ends_the_log_and_drops_later_segments() {
        let dir = tempfile::tempdir().unwrap();
        let first = Record::Series {
            series_ref: 1,
            labels: labels("a"),
        };
        let second = Record::Series {
            series_ref: 2,
            labels: labels("b"),
        };
        {
            let (mut wal, _) = Wal::open(dir.path(), FsyncPolicy::Never, &mut |_| {}).unwrap();
            write(&mut wal, std::slice::from_ref(&first));
            write(&mut wal, std::slice::from_ref(&second));
            wal.cut().unwrap();
            write(&mut wal, std::slice::from_ref(&first));
        }
        let path = dir.path().join(segment_name(1));
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        let (replayed, stats) = replay(dir.path());
        assert!(stats.truncated);
        assert_eq!(replayed, vec![first]);
        // The damaged tail's later segment is gone; the fresh segment in its place is empty.
        assert_eq!(fs::metadata(dir.path().join(segment_name(2))).unwrap().len(), 0);
    }

    /// The test's own rule, written apart from the code's: log entries at
    /// or after `cutoff` are kept (none when `None`), other records as they
    /// are.
    fn keep_entries_from(record: Record, cutoff: Option<i64>) -> Option<Record> {
        match record {
            Record::LogEntries(entries) => {
                let cutoff = cutoff?;
                let kept: Vec<RefLogEntry> = entries.into_iter().filter(|e| e.timestamp >= cutoff).collect();
                (!kept.is_empty()).then_some(Record::LogEntries(kept))
            }
            other => Some(other),
        }
    }

    proptest! {
        // Settling log entry records by their timestamps keeps exactly what
        // decoding each and filtering its entries keeps.
        #[test]
        fn settled_checkpoints_keep_what_decoded_ones_keep(
            records in proptest::collection::vec(record_strategy(), 1..12),
            cutoff in proptest::option::of(prop_oneof![any::<i64>(), -4i64..4]),
            near in any::<bool>(),
        ) {
            // Half the cases cut among timestamps near zero, so that records
            // fall on both sides and across the cut.
            let records: Vec<Record> = records
                .into_iter()
                .map(|record| match record {
                    Record::LogEntries(entries) if near => Record::LogEntries(
                        entries.into_iter().map(|e| RefLogEntry { timestamp: e.timestamp % 5, ..e }).collect(),
                    ),
                    other => other,
                })
                .collect();
            let kept = match cutoff {
                None => LogEntriesKept::None,
                Some(cutoff) => LogEntriesKept::From(cutoff),
            };
            let mut replays = Vec::new();
            for rule in [LogEntriesKept::Unknown, kept] {
                let dir = tempfile::tempdir().unwrap();
                let below = {
                    let (mut wal, _) = Wal::open(dir.path(), FsyncPolicy::Never, &mut |_| {}).unwrap();
                    write(&mut wal, &records);
                    wal.cut().unwrap()
                };
                let stats = checkpoint_settling(dir.path(), below, rule, |r| keep_entries_from(r, cutoff)).unwrap();
                replays.push((replay(dir.path()).0, stats));
            }
            prop_assert!(same(&replays[0].0, &replays[1].0), "{:?} != {:?}", replays[0].0, replays[1].0);
            prop_assert_eq!((replays[0].1.kept, replays[0].1.dropped), (replays[1].1.kept, replays[1].1.dropped));
        }
    }

    #[test]
    fn a_damaged_entry_record_is_left_to_the_decoder() {
        let mut buffer = RecordBuffer::default();
        let entries = [(3, 10, "first line"), (4, 30, "second")].map(|(stream_ref, timestamp, line)| RefLogEntry {
            stream_ref,
            timestamp,
            line: line.to_string(),
            structured_metadata: Labels::from_pairs([("trace_id", "abc")]),
        });
        buffer.record(&Record::LogEntries(entries.to_vec()));
        let payload = &buffer.as_bytes()[FRAME_HEADER_LEN..];
        assert_eq!(log_entry_time_bounds(payload), Some((10, 30)));
        assert_eq!(LogEntriesKept::From(10).settle(payload), Some(true));
        assert_eq!(LogEntriesKept::From(31).settle(payload), Some(false));
        assert_eq!(
            LogEntriesKept::From(20).settle(payload),
            None,
            "across the cut: decoded"
        );
        for end in 0..payload.len() {
            let cut = &payload[..end];
            assert_eq!(log_entry_time_bounds(cut), None, "truncated at {end}");
            assert_eq!(LogEntriesKept::From(0).settle(cut), None, "truncated at {end}");
        }
    }

    #[test]
    fn checkpoint_keeps_only_what_is_asked_and_replays_first() {
        let dir = tempfile::tempdir().unwrap();
        let series = Record::Series {
            series_ref: 7,
            labels: labels("kept"),
        };
        let old = RefSample {
            series_ref: 7,
            timestamp: 10,
            value: 1.0,
        };
        let new = RefSample {
            series_ref: 7,
            timestamp: 20,
            value: 2.0,
        };
        let later = Record::Samples(vec![RefSample {
            series_ref: 7,
            timestamp: 30,
            value: 3.0,
        }]);
        let below = {
            let (mut wal, _) = Wal::open(dir.path(), FsyncPolicy::Never, &mut |_| {}).unwrap();
            write(&mut wal, &[series.clone(), Record::Samples(vec![old, new])]);
            let below = wal.cut().unwrap();
            write(&mut wal, std::slice::from_ref(&later));
            below
        };
        let stats = checkpoint(dir.path(), below, |record| match record {
            Record::Samples(s) => {
                let kept: Vec<RefSample> = s.into_iter().filter(|s| s.timestamp >= 15).collect();
                (!kept.is_empty()).then_some(Record::Samples(kept))
            }
            other => Some(other),
        })
        .unwrap();
        assert_eq!(stats.kept, 2);
        let (replayed, _) = replay(dir.path());
        assert_eq!(replayed, vec![series, Record::Samples(vec![new]), later]);
        assert!(!dir.path().join(segment_name(1)).exists());
    }
}
