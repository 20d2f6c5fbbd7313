//! Blocks: immutable Parquet files holding a closed time window of one tenant.
//!
//! A block is a directory `<tenant>/<ulid>/` in the object store with
//! - `series.parquet`: one row per series, sorted by label set, with the series'
//!   labels, the first row and row count of its samples, its time bounds and
//!   its value encoding;
//! - `samples.parquet`: one row per sample, one row group per time slice
//!   (format 8 on, see [`slice_ms_for_window`]), sorted by series then time
//!   within a slice; the series table gives each series' row count per
//!   slice. Timestamps are distances from the series' previous sample
//!   (format 8; absolute and delta-binary-packed before, with a series id
//!   column), and values are stored per series in the cheaper of
//!   two exact encodings ([`ValueEncoding`]): as decimals (integer deltas of
//!   `value × 10^scale` plus a per-sample ulp correction, which is zero for
//!   values parsed from short decimal strings and tiny for sums of them), or as
//!   deltas of IEEE-754 bit patterns. `series.parquet` records which;
//! - `histograms.parquet` (format 5 on): one row per native histogram sample,
//!   sorted by series then time: series id, timestamp, and the histogram in
//!   the exact binary form the WAL uses ([`crate::histogram_codec`]), custom
//!   bounds included. An opaque column rather than one per field: histograms
//!   are read whole, one exact encoding is tested once, and zstd finds the
//!   repetition between a series' consecutive histograms all the same.
//!   `series.parquet` gives each series' histogram rows as it does samples;
//! - `meta.json`: time bounds, counts, format version, compaction lineage —
//!   written last, so a block without it is an unfinished write and is removed.
//!
//! Opening a block loads `series.parquet` into an in-memory inverted index, so a
//! matcher lookup never scans; samples are read with a row selection covering
//! exactly the selected series.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, MapBuilder, StringBuilder, UInt32Builder};
use arrow_array::{
    Array, ArrayRef, BinaryArray, Int64Array, ListArray, MapArray, RecordBatch, StringArray, UInt8Array, UInt32Array,
    UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
// ParquetObjectReader is deprecated in favour of hand-written AsyncFileReaders;
// it is still the plain way to read a file of an object store. Revisit when it goes.
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
#[allow(deprecated)]
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use tidewatch_model::histogram::HistogramSample;
use tidewatch_model::seam::{SeriesSamples, TimeRange};
use tidewatch_model::{Labels, Matcher, Sample, TimestampMs};

use crate::error::{Error, Result};
use crate::histogram_codec;
use crate::index::Postings;
use crate::segment_cache::{Segment, SegmentCache, SegmentKey};
use crate::shared_labels::SharedLabels;

/// Version of the block layout written by this code.
pub const BLOCK_FORMAT_VERSION: u32 = 8;
/// Oldest layout this code still reads: format 3 had no `value_correction`,
/// formats 3 and 4 no histograms.
pub const OLDEST_READABLE_FORMAT_VERSION: u32 = 3;
/// The first format with `histograms.parquet`.
const FIRST_FORMAT_WITH_HISTOGRAMS: u32 = 5;
/// The first format with keyframes (see [`KEYFRAME_ROWS`]).
const FIRST_FORMAT_WITH_KEYFRAMES: u32 = 6;
/// The first format whose series table holds each series' last float sample.
const FIRST_FORMAT_WITH_LAST_SAMPLE: u32 = 7;
/// The first format with time slices (see [`slice_ms_for_window`]) and
/// timestamps stored as distances.
const FIRST_FORMAT_WITH_SLICES: u32 = 8;

/// The narrowest time slice, and the most slices a block is cut into.
pub const MIN_SLICE_MS: i64 = 30 * 60_000;
pub const MAX_SLICES_PER_BLOCK: i64 = 16;

/// The slice width for a block covering an aligned window of `window_ms`:
/// 30 minutes for a 2-hour head block, wider for compacted blocks so their
/// series tables stay small.
///
/// From format 8 `samples.parquet` holds one row group per time slice
/// (aligned to multiples of the width), each ordered by series then time.
/// A read of a short range (an instant query, a rule) then decompresses the
/// pages of one or two slices instead of every page of the selected series.
pub const fn slice_ms_for_window(window_ms: i64) -> i64 {
    let width = window_ms / MAX_SLICES_PER_BLOCK;
    if width > MIN_SLICE_MS { width } else { MIN_SLICE_MS }
}

/// Every this many samples of a series the value deltas restart from zero
/// (a keyframe), and the series table notes the keyframe's time. A read of a
/// short time range (an instant query, a rule) then decodes from the
/// keyframe before the range instead of from the series' first sample; the
/// restarts cost a few bytes per 128 samples.
pub const KEYFRAME_ROWS: usize = 128;

pub const META_FILE: &str = "meta.json";
pub const SERIES_FILE: &str = "series.parquet";
pub const SAMPLES_FILE: &str = "samples.parquet";
pub const HISTOGRAMS_FILE: &str = "histograms.parquet";

pub const COLUMN_SERIES_ID: &str = "series_id";
pub const COLUMN_LABELS: &str = "labels";
pub const COLUMN_ROW_START: &str = "row_start";
pub const COLUMN_ROW_COUNT: &str = "row_count";
pub const COLUMN_MIN_TIME: &str = "min_time";
pub const COLUMN_MAX_TIME: &str = "max_time";
pub const COLUMN_VALUE_ENCODING: &str = "value_encoding";
pub const COLUMN_TIMESTAMP: &str = "timestamp";
pub const COLUMN_VALUE_DELTA: &str = "value_delta";
pub const COLUMN_VALUE_CORRECTION: &str = "value_correction";
pub const COLUMN_HISTOGRAM_ROW_START: &str = "histogram_row_start";
pub const COLUMN_HISTOGRAM_ROW_COUNT: &str = "histogram_row_count";
/// Per series: the times of its keyframes after the first (samples
/// `KEYFRAME_ROWS`, `2·KEYFRAME_ROWS`, … of each slice's run, and from
/// format 8 the first sample of each run after the first), in ms after its
/// first sample.
pub const COLUMN_KEYFRAME_OFFSETS: &str = "keyframe_offsets";
/// Per series (format 8 on): how many samples it has in each of the block's
/// slices, in time order, zeros included.
pub const COLUMN_SLICE_ROW_COUNTS: &str = "slice_row_counts";
pub const COLUMN_HISTOGRAM: &str = "histogram";
/// Per series: the time and IEEE-754 bits of its last float sample (time
/// `i64::MIN` when it has none). An instant query at the end of a block (the
/// newest sample of every series) reads them instead of the samples file.
pub const COLUMN_LAST_FLOAT_TIME: &str = "last_float_time";
pub const COLUMN_LAST_FLOAT_BITS: &str = "last_float_bits";

/// Rows per data page of `samples.parquet`. A slice holds a short run of
/// every series, so a read of a few series decompresses a page per run:
/// smaller pages read scattered series faster, larger ones compress better.
/// On the load generator's 2-hour data 8,192 rows was the smallest file
/// (2,048: +8 %, 16,384: +1 %).
const SAMPLES_PAGE_ROWS: usize = 8192;
/// Rows a slice buffers before encoding them.
const SLICE_BATCH_ROWS: usize = 64 * 1024;

/// How a series' values are stored (`series.parquet`'s `value_encoding`).
///
/// Either way the stored value is exact for every f64, NaN payloads and
/// staleness markers included; the choice only decides how small it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueEncoding {
    /// `value_delta` is the wrapping difference of consecutive IEEE-754 bit
    /// patterns (sign, exponent and high mantissa bits are shared from sample to
    /// sample); `value_correction` is zero.
    BitsDelta,
    /// Values as decimals with `scale` digits after the point: `value_delta` is
    /// the difference of consecutive `n = round(value × 10^scale)`, and
    /// `value_correction` the difference of consecutive corrections, a
    /// correction being how many units in the last place the value lies from
    /// the double nearest to `n / 10^scale`. Values parsed from short
    /// decimal strings have no correction at all; sums of such values (counters
    /// accumulated in floating point) drift by a few ulps, which is still far
    /// smaller than their bit-pattern deltas. Scale 0 with zero corrections is
    /// format 3's integer encoding.
    Decimal { scale: u8 },
}

/// Powers of ten that are exact doubles, indexed by scale.
const POW10: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

impl ValueEncoding {
    /// The encoding with the fewest significant bits over `samples`: each
    /// decimal scale is tried against bit-pattern deltas. Counting bits is a
    /// good enough proxy for the compressed size, and cheap next to it.
    fn choose(samples: &[Sample]) -> ValueEncoding {
        let mut best = ValueEncoding::BitsDelta;
        let mut best_cost = encoded_bits(best, samples);
        for scale in 0..POW10.len() as u8 {
            let candidate = ValueEncoding::Decimal { scale };
            let cost = encoded_bits(candidate, samples);
            if cost < best_cost {
                (best, best_cost) = (candidate, cost);
            }
            if cost == 0 {
                break;
            }
        }
        best
    }

    fn to_u8(self) -> u8 {
        match self {
            ValueEncoding::BitsDelta => 0,
            ValueEncoding::Decimal { scale } => 1 + scale,
        }
    }

    fn from_u8(value: u8) -> Option<ValueEncoding> {
        match value {
            0 => Some(ValueEncoding::BitsDelta),
            1..=10 => Some(ValueEncoding::Decimal { scale: value - 1 }),
            _ => None,
        }
    }

    /// (value_delta, value_correction) of `value`; `previous` carries the
    /// series' last stored number and correction, and starts at zero.
    fn encode(self, value: f64, previous: &mut Previous) -> (i64, i64) {
        let (raw, correction) = match self {
            ValueEncoding::BitsDelta => (value.to_bits(), 0),
            ValueEncoding::Decimal { scale } => {
                let pow = POW10[scale as usize];
                // Non-finite values keep the previous number; the correction
                // carries their bit pattern.
                let n = if value.is_finite() {
                    (value * pow).round() as i64
                } else {
                    previous.number as i64
                };
                let base = n as f64 / pow;
                (n as u64, value.to_bits().wrapping_sub(base.to_bits()) as i64)
            }
        };
        let delta = raw.wrapping_sub(previous.number) as i64;
        let correction_delta = correction.wrapping_sub(previous.correction);
        *previous = Previous {
            number: raw,
            correction,
        };
        (delta, correction_delta)
    }

    fn decode(self, delta: i64, correction_delta: i64, previous: &mut Previous) -> f64 {
        let raw = previous.number.wrapping_add(delta as u64);
        let correction = previous.correction.wrapping_add(correction_delta);
        *previous = Previous {
            number: raw,
            correction,
        };
        match self {
            ValueEncoding::BitsDelta => f64::from_bits(raw),
            // Integers (scale 0) need no division; it is the slow part.
            ValueEncoding::Decimal { scale: 0 } => {
                f64::from_bits(((raw as i64) as f64).to_bits().wrapping_add(correction as u64))
            }
            ValueEncoding::Decimal { scale } => {
                let base = (raw as i64) as f64 / POW10[scale as usize];
                f64::from_bits(base.to_bits().wrapping_add(correction as u64))
            }
        }
    }
}

/// What a series' next value is stored against.
#[derive(Debug, Clone, Copy, Default)]
struct Previous {
    number: u64,
    correction: i64,
}

/// Significant bits of the zigzag form of `x`: what a small integer costs.
fn zigzag_bits(x: i64) -> u64 {
    let zigzag = ((x << 1) ^ (x >> 63)) as u64;
    u64::from(64 - zigzag.leading_zeros())
}

fn encoded_bits(encoding: ValueEncoding, samples: &[Sample]) -> u64 {
    let mut previous = Previous::default();
    samples
        .iter()
        .map(|s| {
            let (delta, correction) = encoding.encode(s.value, &mut previous);
            zigzag_bits(delta) + zigzag_bits(correction)
        })
        .sum()
}

/// `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub version: u32,
    pub ulid: String,
    /// Oldest and newest sample time, inclusive.
    pub min_time: TimestampMs,
    pub max_time: TimestampMs,
    pub num_series: u64,
    pub num_samples: u64,
    /// 1 for blocks cut from the head, one more than the highest source for compactions.
    pub level: u32,
    /// Blocks this one replaces; once it exists they are deleted.
    #[serde(default)]
    pub sources: Vec<String>,
    pub series_file_size: u64,
    pub samples_file_size: u64,
    /// Native histogram samples (format 5 on; absent, so 0, before).
    #[serde(default)]
    pub num_histograms: u64,
    #[serde(default)]
    pub histograms_file_size: u64,
    /// Width of the time slices `samples.parquet` is cut into (format 8 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice_ms: Option<i64>,
}

fn map_field() -> Field {
    let entries = Field::new(
        "entries",
        DataType::Struct(
            vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, true),
            ]
            .into(),
        ),
        false,
    );
    Field::new(COLUMN_LABELS, DataType::Map(Arc::new(entries), false), false)
}

/// Schema of `series.parquet`.
pub fn series_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(COLUMN_SERIES_ID, DataType::UInt32, false),
        map_field(),
        Field::new(COLUMN_ROW_START, DataType::UInt64, false),
        Field::new(COLUMN_ROW_COUNT, DataType::UInt32, false),
        Field::new(COLUMN_MIN_TIME, DataType::Int64, false),
        Field::new(COLUMN_MAX_TIME, DataType::Int64, false),
        Field::new(COLUMN_VALUE_ENCODING, DataType::UInt8, false),
        Field::new(COLUMN_HISTOGRAM_ROW_START, DataType::UInt64, false),
        Field::new(COLUMN_HISTOGRAM_ROW_COUNT, DataType::UInt32, false),
        Field::new(COLUMN_KEYFRAME_OFFSETS, DataType::List(u32_list_item()), false),
        Field::new(COLUMN_LAST_FLOAT_TIME, DataType::Int64, false),
        Field::new(COLUMN_LAST_FLOAT_BITS, DataType::UInt64, false),
        Field::new(COLUMN_SLICE_ROW_COUNTS, DataType::List(u32_list_item()), false),
    ]))
}

/// Schema of `histograms.parquet`.
pub fn histograms_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(COLUMN_SERIES_ID, DataType::UInt32, false),
        Field::new(COLUMN_TIMESTAMP, DataType::Int64, false),
        Field::new(COLUMN_HISTOGRAM, DataType::Binary, false),
    ]))
}

fn histograms_writer_properties() -> WriterProperties {
    let zstd = Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default());
    WriterProperties::builder()
        .set_compression(zstd)
        .set_column_dictionary_enabled(ColumnPath::from(COLUMN_TIMESTAMP), false)
        .set_column_encoding(ColumnPath::from(COLUMN_TIMESTAMP), Encoding::DELTA_BINARY_PACKED)
        .build()
}

/// Schema of `samples.parquet`.
pub fn samples_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(COLUMN_TIMESTAMP, DataType::Int64, false),
        Field::new(COLUMN_VALUE_DELTA, DataType::Int64, false),
        Field::new(COLUMN_VALUE_CORRECTION, DataType::Int64, false),
    ]))
}

fn samples_writer_properties() -> WriterProperties {
    let zstd = Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default());
    WriterProperties::builder()
        .set_compression(zstd)
        .set_data_page_row_count_limit(SAMPLES_PAGE_ROWS)
        // Timestamps are distances from the series' previous sample: a
        // handful of values (the scrape interval, its jitter), which the
        // dictionary's bit-packed runs store in almost nothing (a quarter of
        // delta-binary-packed's size on the load generator's data, which
        // breaks a delta run at every series and slice).
        // Deltas are small integers in 8-byte slots: split into byte streams,
        // the high bytes are runs of 0x00/0xff that zstd all but removes (11 %
        // smaller than plain, 30 % smaller than delta-binary-packed, on the load
        // generator's data).
        .set_column_dictionary_enabled(ColumnPath::from(COLUMN_VALUE_DELTA), false)
        .set_column_encoding(ColumnPath::from(COLUMN_VALUE_DELTA), Encoding::BYTE_STREAM_SPLIT)
        // Correction deltas take a handful of distinct values (mostly 0, ±1):
        // the dictionary's bit-packed indexes suit them best.
        .build()
}

/// The Parquet files of a block, encoded in memory, with their meta.
#[derive(Debug)]
pub struct EncodedBlock {
    pub meta: BlockMeta,
    pub series: Bytes,
    pub samples: Bytes,
    pub histograms: Bytes,
}

/// Encodes series (sorted by labels, samples sorted by time) as a block cut
/// into slices `slice_ms` wide. CPU-heavy: call it from a blocking thread.
pub fn encode_block(series: &[SeriesSamples], level: u32, sources: Vec<String>, slice_ms: i64) -> Result<EncodedBlock> {
    let mut writer = BlockWriter::new(level, sources, slice_ms)?;
    for entry in series {
        writer.push(&entry.labels, &entry.samples, &entry.histograms)?;
    }
    writer.finish()
}

/// A native histogram as the block writer takes it: decoded (compaction reads
/// them so), or still in the codec's form (a flush takes them from the head).
pub trait BlockHistogram {
    fn timestamp(&self) -> TimestampMs;
    /// Appends the histogram in [`histogram_codec`]'s form, custom bounds included.
    fn encode_into(&self, out: &mut Vec<u8>);
}

impl BlockHistogram for HistogramSample {
    fn timestamp(&self) -> TimestampMs {
        self.timestamp
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        histogram_codec::encode(&self.histogram, true, out);
    }
}

impl BlockHistogram for histogram_codec::EncodedHistogram {
    fn timestamp(&self) -> TimestampMs {
        self.timestamp
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        self.append_with_custom_values(out);
    }
}

/// The samples of one time slice: a row group of `samples.parquet` whose
/// columns are encoded (and compressed) as series come, and appended to the
/// file in time order when the block is finished.
struct SliceWriter {
    columns: Vec<ArrowColumnWriter>,
    timestamps: Vec<i64>,
    values: Vec<i64>,
    corrections: Vec<i64>,
    rows: u64,
}

impl SliceWriter {
    fn new(row_groups: &ArrowRowGroupWriterFactory) -> Result<SliceWriter> {
        Ok(SliceWriter {
            // The index only matters to encrypted files; slices are
            // created out of order, so it is not the final one.
            columns: row_groups.create_column_writers(0)?,
            timestamps: Vec::new(),
            values: Vec::new(),
            corrections: Vec::new(),
            rows: 0,
        })
    }

    fn push(&mut self, timestamp: i64, (value, correction): (i64, i64)) -> Result<()> {
        self.timestamps.push(timestamp);
        self.values.push(value);
        self.corrections.push(correction);
        self.rows += 1;
        if self.timestamps.len() == SLICE_BATCH_ROWS {
            self.encode_pending()?;
        }
        Ok(())
    }

    fn encode_pending(&mut self) -> Result<()> {
        if self.timestamps.is_empty() {
            return Ok(());
        }
        let arrays: [ArrayRef; 3] = [
            Arc::new(Int64Array::from(std::mem::take(&mut self.timestamps))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.values))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.corrections))),
        ];
        let schema = samples_schema();
        for ((writer, field), array) in self.columns.iter_mut().zip(schema.fields()).zip(&arrays) {
            for leaf in compute_leaves(field, array)? {
                writer.write(&leaf)?;
            }
        }
        Ok(())
    }

    fn close(mut self) -> Result<Vec<ArrowColumnChunk>> {
        self.encode_pending()?;
        Ok(self.columns.into_iter().map(|c| c.close()).collect::<Result<_, _>>()?)
    }
}

/// Builds a block series by series, so compaction can stream: samples are
/// encoded into their slices' row groups as they come (compressed, in
/// memory), only the series table is held as values.
pub struct BlockWriter {
    level: u32,
    sources: Vec<String>,
    slice_ms: i64,
    samples_file: SerializedFileWriter<Vec<u8>>,
    row_groups: ArrowRowGroupWriterFactory,
    /// Open slices by `timestamp.div_euclid(slice_ms)`.
    slices: BTreeMap<i64, SliceWriter>,
    /// (series id, slice, samples) of every series' run in a slice, in series order.
    runs: Vec<(u32, i64, u32)>,
    labels_builder: MapBuilder<StringBuilder, StringBuilder>,
    last_labels: Option<Labels>,
    row_counts: Vec<u32>,
    min_times: Vec<i64>,
    max_times: Vec<i64>,
    encodings: Vec<u8>,
    rows: u64,
    histograms_writer: ArrowWriter<Vec<u8>>,
    histogram_ids: Vec<u32>,
    histogram_timestamps: Vec<i64>,
    /// Encoded histograms of the pending batch, back to back, and where each ends.
    histogram_bytes: Vec<u8>,
    histogram_ends: Vec<usize>,
    histogram_row_starts: Vec<u64>,
    histogram_row_counts: Vec<u32>,
    histogram_rows: u64,
    keyframes: ListBuilder<UInt32Builder>,
    last_float_times: Vec<i64>,
    last_float_bits: Vec<u64>,
}

/// Histogram rows per batch handed to the Parquet writer.
const HISTOGRAMS_BATCH_ROWS: usize = 64 * 1024;

impl std::fmt::Debug for BlockWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockWriter")
            .field("series", &self.row_counts.len())
            .field("slices", &self.slices.len())
            .field("rows", &self.rows)
            .field("histogram_rows", &self.histogram_rows)
            .finish_non_exhaustive()
    }
}

/// The item of the series table's `u32` list columns.
fn u32_list_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::UInt32, false))
}

fn u32_list_builder() -> ListBuilder<UInt32Builder> {
    ListBuilder::new(UInt32Builder::new()).with_field(u32_list_item())
}

impl BlockWriter {
    /// A writer cutting samples into slices `slice_ms` wide (see
    /// [`slice_ms_for_window`]).
    pub fn new(level: u32, sources: Vec<String>, slice_ms: i64) -> Result<BlockWriter> {
        let (samples_file, row_groups) =
            ArrowWriter::try_new(Vec::new(), samples_schema(), Some(samples_writer_properties()))?
                .into_serialized_writer()?;
        Ok(BlockWriter {
            level,
            sources,
            slice_ms: slice_ms.max(1),
            samples_file,
            row_groups,
            slices: BTreeMap::new(),
            runs: Vec::new(),
            labels_builder: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            last_labels: None,
            row_counts: Vec::new(),
            min_times: Vec::new(),
            max_times: Vec::new(),
            encodings: Vec::new(),
            rows: 0,
            histograms_writer: ArrowWriter::try_new(
                Vec::new(),
                histograms_schema(),
                Some(histograms_writer_properties()),
            )?,
            histogram_ids: Vec::new(),
            histogram_timestamps: Vec::new(),
            histogram_bytes: Vec::new(),
            histogram_ends: Vec::new(),
            histogram_row_starts: Vec::new(),
            histogram_row_counts: Vec::new(),
            keyframes: u32_list_builder(),
            histogram_rows: 0,
            last_float_times: Vec::new(),
            last_float_bits: Vec::new(),
        })
    }

    /// Adds a series. Series must come in ascending label order, samples and
    /// histograms each in ascending time; a series with neither is skipped.
    pub fn push<H: BlockHistogram>(&mut self, labels: &Labels, samples: &[Sample], histograms: &[H]) -> Result<()> {
        let first = samples
            .first()
            .map(|s| s.timestamp)
            .into_iter()
            .chain(histograms.first().map(H::timestamp))
            .min();
        let last = samples
            .last()
            .map(|s| s.timestamp)
            .into_iter()
            .chain(histograms.last().map(H::timestamp))
            .max();
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(());
        };
        debug_assert!(self.last_labels.as_ref().is_none_or(|previous| previous < labels));
        debug_assert!(samples.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
        debug_assert!(histograms.windows(2).all(|w| w[0].timestamp() < w[1].timestamp()));
        // Ids are dense row numbers of series.parquet.
        let id = self.row_counts.len() as u32;
        for label in labels {
            self.labels_builder.keys().append_value(&label.name);
            self.labels_builder.values().append_value(&label.value);
        }
        self.labels_builder.append(true)?;
        self.row_counts.push(samples.len() as u32);
        self.min_times.push(first);
        self.max_times.push(last);
        self.rows += samples.len() as u64;
        self.histogram_row_starts.push(self.histogram_rows);
        self.histogram_row_counts.push(histograms.len() as u32);
        self.histogram_rows += histograms.len() as u64;
        for sample in histograms {
            self.histogram_ids.push(id);
            self.histogram_timestamps.push(sample.timestamp());
            sample.encode_into(&mut self.histogram_bytes);
            self.histogram_ends.push(self.histogram_bytes.len());
            // Bound the batch by bytes too: custom bounds make histograms big.
            if self.histogram_ids.len() == HISTOGRAMS_BATCH_ROWS || self.histogram_bytes.len() > 64 << 20 {
                self.flush_histograms()?;
            }
        }
        let encoding = ValueEncoding::choose(samples);
        self.encodings.push(encoding.to_u8());
        let last_float = samples
            .last()
            .map_or((i64::MIN, 0), |s| (s.timestamp, s.value.to_bits()));
        self.last_float_times.push(last_float.0);
        self.last_float_bits.push(last_float.1);
        // Offsets and the first sample's stored time count from the series'
        // first time (float or histogram), which the series table keeps as
        // its minimum time.
        let base = first;
        let mut previous_time = base;
        let mut first_sample = true;
        let mut rest = samples;
        while let Some(head) = rest.first() {
            let slice = head.timestamp.div_euclid(self.slice_ms);
            let run_len = rest.partition_point(|s| s.timestamp.div_euclid(self.slice_ms) == slice);
            let (run, after) = rest.split_at(run_len);
            let writer = match self.slices.entry(slice) {
                std::collections::btree_map::Entry::Occupied(open) => open.into_mut(),
                std::collections::btree_map::Entry::Vacant(vacant) => {
                    vacant.insert(SliceWriter::new(&self.row_groups)?)
                }
            };
            // Value deltas restart at every run and every KEYFRAME_ROWS
            // samples of it; each restart but the series' first is noted.
            let mut previous = Previous::default();
            for (row, sample) in run.iter().enumerate() {
                if row % KEYFRAME_ROWS == 0 {
                    previous = Previous::default();
                    if !first_sample {
                        // A block spans at most days: milliseconds fit in 32 bits.
                        let offset = u32::try_from(sample.timestamp - base).map_err(|_| Error::Block {
                            block: "(being written)".to_string(),
                            message: format!("series {labels} spans more than 49 days"),
                        })?;
                        self.keyframes.values().append_value(offset);
                    }
                }
                // Timestamps are stored as the distance from the series'
                // previous sample: mostly the scrape interval, a handful of
                // distinct small numbers however the slices cut the series.
                writer.push(
                    sample.timestamp - previous_time,
                    encoding.encode(sample.value, &mut previous),
                )?;
                previous_time = sample.timestamp;
                first_sample = false;
            }
            self.runs.push((id, slice, run_len as u32));
            rest = after;
        }
        self.keyframes.append(true);
        if cfg!(debug_assertions) {
            self.last_labels = Some(labels.clone());
        }
        Ok(())
    }

    fn flush_histograms(&mut self) -> Result<()> {
        if self.histogram_ids.is_empty() {
            return Ok(());
        }
        let ends = std::mem::take(&mut self.histogram_ends);
        let bytes = std::mem::take(&mut self.histogram_bytes);
        let mut start = 0;
        let values = BinaryArray::from_iter_values(ends.iter().map(|&end| {
            let value = &bytes[start..end];
            start = end;
            value
        }));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(std::mem::take(&mut self.histogram_ids))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.histogram_timestamps))),
            Arc::new(values),
        ];
        self.histograms_writer
            .write(&RecordBatch::try_new(histograms_schema(), columns)?)?;
        Ok(())
    }

    /// Appends the slices to the samples file in time order, closes the
    /// files and computes the meta.
    pub fn finish(mut self) -> Result<EncodedBlock> {
        self.flush_histograms()?;
        let slice_keys: Vec<i64> = self.slices.keys().copied().collect();
        let mut slice_first_rows = Vec::with_capacity(slice_keys.len());
        let mut file_rows = 0u64;
        for slice in std::mem::take(&mut self.slices).into_values() {
            slice_first_rows.push(file_rows);
            file_rows += slice.rows;
            let mut row_group = self.samples_file.next_row_group()?;
            for chunk in slice.close()? {
                chunk.append_to_row_group(&mut row_group)?;
            }
            row_group.close()?;
        }
        let samples = Bytes::from(self.samples_file.into_inner()?);
        let histograms = Bytes::from(self.histograms_writer.into_inner()?);
        let series_count = self.row_counts.len();
        // Each series' row count per slice (the runs come in series order),
        // and the file row of its first sample.
        let mut slice_counts = u32_list_builder();
        let mut row_starts = vec![0u64; series_count];
        let mut next_row = slice_first_rows;
        let mut runs = self.runs.iter().peekable();
        for (id, row_start) in row_starts.iter_mut().enumerate() {
            let mut counts = vec![0u32; slice_keys.len()];
            let mut first = true;
            while let Some(&&(run_id, slice, count)) = runs.peek() {
                if run_id as usize != id {
                    break;
                }
                runs.next();
                let index = slice_keys.partition_point(|&key| key < slice);
                counts[index] = count;
                if first {
                    *row_start = next_row[index];
                    first = false;
                }
                next_row[index] += u64::from(count);
            }
            slice_counts.values().append_slice(&counts);
            slice_counts.append(true);
        }
        let block_min = self.min_times.iter().copied().min().unwrap_or(TimestampMs::MAX);
        let block_max = self.max_times.iter().copied().max().unwrap_or(TimestampMs::MIN);
        let series_columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(0..series_count as u32)),
            Arc::new(self.labels_builder.finish()),
            Arc::new(UInt64Array::from(row_starts)),
            Arc::new(UInt32Array::from(self.row_counts)),
            Arc::new(Int64Array::from(self.min_times)),
            Arc::new(Int64Array::from(self.max_times)),
            Arc::new(UInt8Array::from(self.encodings)),
            Arc::new(UInt64Array::from(self.histogram_row_starts)),
            Arc::new(UInt32Array::from(self.histogram_row_counts)),
            Arc::new(self.keyframes.finish()),
            Arc::new(Int64Array::from(self.last_float_times)),
            Arc::new(UInt64Array::from(self.last_float_bits)),
            Arc::new(slice_counts.finish()),
        ];
        let series_batch = RecordBatch::try_new(series_schema(), series_columns)?;
        let series_properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let mut series_writer = ArrowWriter::try_new(Vec::new(), series_schema(), Some(series_properties))?;
        series_writer.write(&series_batch)?;
        let series_bytes = Bytes::from(series_writer.into_inner()?);
        let meta = BlockMeta {
            version: BLOCK_FORMAT_VERSION,
            ulid: ulid::Ulid::new().to_string(),
            min_time: block_min,
            max_time: block_max,
            num_series: series_count as u64,
            num_samples: self.rows,
            level: self.level,
            sources: self.sources,
            series_file_size: series_bytes.len() as u64,
            samples_file_size: samples.len() as u64,
            num_histograms: self.histogram_rows,
            histograms_file_size: histograms.len() as u64,
            slice_ms: Some(self.slice_ms),
        };
        Ok(EncodedBlock {
            meta,
            series: series_bytes,
            samples,
            histograms,
        })
    }
}

/// Writes an encoded block under `tenant_prefix`, meta last. Returns when durable.
pub async fn write_block(
    store: &Arc<dyn ObjectStore>,
    tenant_prefix: &StorePath,
    block: EncodedBlock,
) -> Result<BlockMeta> {
    let dir = tenant_prefix.clone().join(block.meta.ulid.as_str());
    store
        .put(&dir.clone().join(SERIES_FILE), PutPayload::from_bytes(block.series))
        .await?;
    store
        .put(&dir.clone().join(SAMPLES_FILE), PutPayload::from_bytes(block.samples))
        .await?;
    store
        .put(
            &dir.clone().join(HISTOGRAMS_FILE),
            PutPayload::from_bytes(block.histograms),
        )
        .await?;
    let meta_json = serde_json::to_vec_pretty(&block.meta).map_err(|e| Error::Block {
        block: block.meta.ulid.clone(),
        message: format!("encoding meta.json: {e}"),
    })?;
    store
        .put(&dir.clone().join(META_FILE), PutPayload::from(meta_json))
        .await?;
    Ok(block.meta)
}

/// An opened block: meta, the series table in memory, and its inverted index.
#[derive(Debug)]
pub struct Block {
    meta: BlockMeta,
    dir: StorePath,
    store: Arc<dyn ObjectStore>,
    labels: Vec<Labels>,
    /// Each series' runs of rows in `samples.parquet`, (first row, rows), in
    /// time order: one per slice it has samples in (format 8 on), or one in
    /// all before. Value deltas restart at each run.
    runs: Ragged<(u64, u32)>,
    /// The first row of each slice (format 8 on; empty before).
    slice_first_rows: Vec<u64>,
    /// Keyframe times per series (none before format 6).
    keyframes: Ragged<u32>,
    /// Samples between keyframes within a run: [`KEYFRAME_ROWS`], or all of
    /// a series before format 6.
    keyframe_rows: usize,
    /// (first row, row count) of each series' histograms; (0, 0) before format 5.
    histogram_rows: Vec<(u64, u32)>,
    time_bounds: Vec<(TimestampMs, TimestampMs)>,
    /// Each series' last float sample; empty before format 7.
    last_floats: Vec<Option<Sample>>,
    encodings: Vec<ValueEncoding>,
    postings: Postings,
    /// The Parquet footers (with page indexes) of the samples and histograms
    /// files, read on first use: every query would otherwise fetch and parse
    /// them again.
    samples_footer: tokio::sync::OnceCell<ArrowReaderMetadata>,
    histograms_footer: tokio::sync::OnceCell<ArrowReaderMetadata>,
    /// Decoded segments kept across reads, and this block's number in it.
    cache: Option<(Arc<SegmentCache>, u64)>,
}

/// Reads a Parquet file's footer with its page index.
#[allow(deprecated)]
async fn load_footer(reader: &mut ParquetObjectReader) -> Result<ArrowReaderMetadata> {
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    Ok(ArrowReaderMetadata::load_async(reader, options).await?)
}

impl Block {
    /// Reads `meta.json` and `series.parquet` of the block in `dir`.
    pub async fn open(store: Arc<dyn ObjectStore>, dir: StorePath) -> Result<Block> {
        let meta_bytes = store.get(&dir.clone().join(META_FILE)).await?.bytes().await?;
        let meta: BlockMeta = serde_json::from_slice(&meta_bytes).map_err(|e| Error::Block {
            block: dir.to_string(),
            message: format!("bad meta.json: {e}"),
        })?;
        if !(OLDEST_READABLE_FORMAT_VERSION..=BLOCK_FORMAT_VERSION).contains(&meta.version) {
            return Err(Error::Block {
                block: dir.to_string(),
                message: format!(
                    "format version {} is not supported (this build reads {OLDEST_READABLE_FORMAT_VERSION} to {BLOCK_FORMAT_VERSION})",
                    meta.version
                ),
            });
        }
        let series_bytes = store.get(&dir.clone().join(SERIES_FILE)).await?.bytes().await?;
        let block_name = dir.to_string();
        let has_histograms = meta.version >= FIRST_FORMAT_WITH_HISTOGRAMS;
        let has_keyframes = meta.version >= FIRST_FORMAT_WITH_KEYFRAMES;
        let has_last_floats = meta.version >= FIRST_FORMAT_WITH_LAST_SAMPLE;
        let has_slices = meta.version >= FIRST_FORMAT_WITH_SLICES;
        let SeriesTable {
            labels,
            runs,
            slice_first_rows,
            keyframes,
            histogram_rows,
            time_bounds,
            last_floats,
            encodings,
            postings,
        } = tokio::task::spawn_blocking(move || {
            let columns = SeriesColumns {
                histograms: has_histograms,
                keyframes: has_keyframes,
                last_floats: has_last_floats,
                slices: has_slices,
            };
            decode_series_table(series_bytes, &block_name, columns)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        Ok(Block {
            meta,
            dir,
            store,
            labels,
            runs,
            slice_first_rows,
            keyframes,
            keyframe_rows: if has_keyframes { KEYFRAME_ROWS } else { usize::MAX },
            histogram_rows,
            time_bounds,
            last_floats,
            encodings,
            postings,
            samples_footer: tokio::sync::OnceCell::new(),
            histograms_footer: tokio::sync::OnceCell::new(),
            cache: None,
        })
    }

    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    pub fn dir(&self) -> &StorePath {
        &self.dir
    }

    pub fn overlaps(&self, range: TimeRange) -> bool {
        self.meta.min_time <= range.end && range.start <= self.meta.max_time
    }

    pub fn series_count(&self) -> usize {
        self.labels.len()
    }

    /// Takes the tenant's shared copy of each series' labels (see
    /// [`SharedLabels`]); done once, when the block is opened.
    pub(crate) fn share_labels(&mut self, shared: &SharedLabels) {
        shared.share(self.labels.iter_mut());
    }

    /// Keeps decoded segments of this block in `cache` from now on.
    pub fn use_cache(&mut self, cache: &Arc<SegmentCache>) {
        self.cache = Some((cache.clone(), cache.block_number()));
    }

    pub fn labels(&self, id: u32) -> &Labels {
        &self.labels[id as usize]
    }

    pub fn postings(&self) -> &Postings {
        &self.postings
    }

    /// Ids of selected series that have samples overlapping `range`.
    pub fn select_ids(&self, matchers: &[Matcher], range: TimeRange) -> Vec<u32> {
        self.postings
            .select(matchers)
            .iter()
            .filter(|&id| {
                let (min, max) = self.time_bounds[id as usize];
                min <= range.end && range.start <= max
            })
            .collect()
    }

    /// Selected series with their samples and histograms in `range`.
    pub async fn select(&self, matchers: &[Matcher], range: TimeRange) -> Result<Vec<SeriesSamples>> {
        let ids = self.select_ids(matchers, range);
        let samples = self.read_samples_in(&ids, range).await?;
        let histograms = self.read_histograms_in(&ids, range).await?;
        let mut out = Vec::with_capacity(ids.len());
        for ((id, mut series_samples), series_histograms) in ids.into_iter().zip(samples).zip(histograms) {
            series_samples.retain(|s| range.contains(s.timestamp));
            if !series_samples.is_empty() || !series_histograms.is_empty() {
                out.push(SeriesSamples {
                    labels: self.labels[id as usize].clone(),
                    samples: series_samples,
                    histograms: series_histograms,
                    start_timestamps: Default::default(),
                });
            }
        }
        Ok(out)
    }

    /// Whether this block holds any native histogram.
    pub fn has_histograms(&self) -> bool {
        self.meta.num_histograms > 0
    }

    /// All histograms of the series `ids` (ascending), one vector per id.
    pub async fn read_histograms(&self, ids: &[u32]) -> Result<Vec<Vec<HistogramSample>>> {
        self.read_histograms_in(ids, TimeRange::ALL).await
    }

    /// The native histograms in `range` of the series `ids` (ascending),
    /// one vector per id. Only those are decoded: decoding every histogram
    /// of a selected series made a 5-minute query over 1,000 histogram
    /// series take 0.46 s.
    pub async fn read_histograms_in(&self, ids: &[u32], range: TimeRange) -> Result<Vec<Vec<HistogramSample>>> {
        debug_assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let ranges: Vec<Range<usize>> = ids
            .iter()
            .map(|&id| {
                let (start, count) = self.histogram_rows[id as usize];
                start as usize..(start as usize + count as usize)
            })
            .collect();
        let mut out: Vec<Vec<HistogramSample>> = vec![Vec::new(); ranges.len()];
        if ranges.iter().all(|r| r.is_empty()) {
            return Ok(out);
        }
        #[allow(deprecated)]
        let mut reader = ParquetObjectReader::new(self.store.clone(), self.dir.clone().join(HISTOGRAMS_FILE))
            .with_file_size(self.meta.histograms_file_size);
        let footer = self
            .histograms_footer
            .get_or_try_init(|| load_footer(&mut reader))
            .await?
            .clone();
        let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer);
        let projection = ProjectionMask::columns(builder.parquet_schema(), [COLUMN_TIMESTAMP, COLUMN_HISTOGRAM]);
        let selection = RowSelection::from_consecutive_ranges(
            ranges.iter().filter(|r| !r.is_empty()).cloned(),
            self.meta.num_histograms as usize,
        );
        let mut stream = builder
            .with_projection(projection)
            .with_row_selection(selection)
            .with_batch_size(16 * 1024)
            .build()?;
        // Where reading stands: the series, and rows of it done.
        let (mut current, mut done) = (0usize, 0usize);
        let corrupt = |message: &str| Error::Block {
            block: self.meta.ulid.clone(),
            message: message.to_string(),
        };
        while let Some(batch) = stream.try_next().await? {
            let timestamps = column::<Int64Array>(&batch, COLUMN_TIMESTAMP, &self.meta.ulid)?;
            let encoded = column::<BinaryArray>(&batch, COLUMN_HISTOGRAM, &self.meta.ulid)?;
            for (timestamp, bytes) in timestamps.values().iter().zip(encoded.iter()) {
                while current < ranges.len() && done == ranges[current].len() {
                    (current, done) = (current + 1, 0);
                }
                let target = out
                    .get_mut(current)
                    .ok_or_else(|| corrupt("more histogram rows than the series table accounts for"))?;
                done += 1;
                if !range.contains(*timestamp) {
                    continue;
                }
                let histogram = bytes
                    .and_then(histogram_codec::decode)
                    .ok_or_else(|| corrupt("a histogram does not decode"))?;
                target.push(HistogramSample {
                    timestamp: *timestamp,
                    histogram,
                });
            }
        }
        Ok(out)
    }

    /// All samples of the series `ids` (ascending), one vector per id.
    pub async fn read_samples(&self, ids: &[u32]) -> Result<Vec<Vec<Sample>>> {
        self.read_samples_in(ids, TimeRange::ALL).await
    }

    /// The rows of series `id` to decode for `range`, from the last restart
    /// (keyframe or run start) at or before the range's start to the first
    /// one after its end, as segments (the rows from one restart to the
    /// next) for the series at `position` of a read.
    fn pieces_for(&self, id: u32, range: TimeRange, position: usize, pieces: &mut Vec<Piece>) {
        let base = self.time_bounds[id as usize].0;
        // Restart r ≥ 1 is noted at base + offsets[r - 1]; restart 0 is the
        // series' first sample.
        let offsets = self.keyframes.of(id);
        let time_of = |offset: &u32| base + i64::from(*offset);
        let first = offsets.partition_point(|o| time_of(o) <= range.start);
        let end = offsets.partition_point(|o| time_of(o) <= range.end) + 1;
        let mut restart = 0;
        for &(row, count) in self.runs.of(id) {
            let count = count as usize;
            // Restarts of this run: at rows 0, K, 2K, … of it.
            let restarts = count.div_ceil(self.keyframe_rows);
            for r in first.max(restart)..end.min(restart + restarts) {
                let from_row = (r - restart) * self.keyframe_rows;
                let to_row = (r - restart + 1).saturating_mul(self.keyframe_rows).min(count);
                pieces.push(Piece {
                    rows: row as usize + from_row..row as usize + to_row,
                    series: position,
                    starts_run: r == restart,
                    first_time: match r {
                        0 => FirstTime::StoredAfter(base),
                        noted => FirstTime::Noted(time_of(&offsets[noted - 1])),
                    },
                });
            }
            restart += restarts;
            if restart >= end {
                break;
            }
        }
    }

    /// The samples of the series `ids` (ascending) that a read of `range`
    /// needs, one vector per id: every sample in the range, and possibly
    /// some around it (callers filter by time).
    pub async fn read_samples_in(&self, ids: &[u32], range: TimeRange) -> Result<Vec<Vec<Sample>>> {
        self.read(ids, range, Wanted::All).await
    }

    /// What a read of `range` must decode for `wanted` of the series `ids`
    /// (as pieces in file order, each naming the series' position in
    /// `ids`), and the samples it already knows without decoding.
    fn plan(&self, ids: &[u32], range: TimeRange, wanted: Wanted) -> (Vec<Piece>, Vec<(usize, Sample)>) {
        let mut pieces = Vec::with_capacity(ids.len());
        let mut known = Vec::new();
        for (position, &id) in ids.iter().enumerate() {
            if wanted == Wanted::All {
                self.pieces_for(id, range, position, &mut pieces);
                continue;
            }
            // From format 7 the series table knows each series' last float
            // sample: when it is at or before the range's end it is the
            // answer, and only series with samples after the range need
            // decoding, from the restart before their last sample in range.
            match self.last_floats.get(id as usize) {
                Some(None) => {}
                Some(Some(last)) if last.timestamp <= range.end => {
                    if last.timestamp >= range.start {
                        known.push((position, *last));
                    }
                }
                _ => {
                    let last = self.time_bounds[id as usize].1;
                    let from = if last <= range.end {
                        last.max(range.start)
                    } else {
                        range.start
                    };
                    self.pieces_for(id, TimeRange::new(from, range.end), position, &mut pieces);
                }
            }
        }
        // File order: slice by slice, series by series within a slice.
        pieces.sort_unstable_by_key(|p| p.rows.start);
        (pieces, known)
    }

    /// The samples of the series `ids` (ascending) that a read of `range`
    /// needs for `wanted`, one vector per id, decoded on this task from the
    /// file. For [`Wanted::Latest`] the newest sample in range is the last
    /// of each vector (earlier ones may come along).
    pub async fn read(&self, ids: &[u32], range: TimeRange, wanted: Wanted) -> Result<Vec<Vec<Sample>>> {
        self.read_with(None, Via::File, ids, range, wanted).await
    }

    /// Like [`Block::read`], on two tasks when there are at least
    /// `min_series` series to decode: decoding Parquet is most of a query's
    /// work. The rows to decode are cut in two near the middle, at a slice
    /// boundary when one is close, so each row group (and its column
    /// readers, each with its own zstd contexts) is opened by one task only.
    /// With [`Via::Cache`], segments come from (and go to) the block's
    /// segment cache.
    pub async fn read_in_parallel(
        self: &Arc<Self>,
        ids: &[u32],
        range: TimeRange,
        wanted: Wanted,
        min_series: usize,
        via: Via,
    ) -> Result<Vec<Vec<Sample>>> {
        self.read_with(Some((self, min_series)), via, ids, range, wanted).await
    }

    /// About how many sample rows a read of `series` series over `range`
    /// decodes here: for choosing whether a query goes through the cache.
    pub fn rows_to_read(&self, series: usize, range: TimeRange, wanted: Wanted) -> usize {
        let per_series = self.meta.num_samples / self.meta.num_series.max(1);
        // A read decodes whole segments around what it needs.
        let around = per_series.min(KEYFRAME_ROWS as u64);
        let wanted_rows = match wanted {
            Wanted::Latest => 0,
            Wanted::All => {
                let span = (self.meta.max_time - self.meta.min_time).max(1) as f64;
                let covered = (range.end.min(self.meta.max_time) - range.start.max(self.meta.min_time)).max(0) as f64;
                (per_series as f64 * (covered / span).min(1.0)) as u64
            }
        };
        series.saturating_mul((wanted_rows + around) as usize)
    }

    /// A read through the segment cache when asked for and the block has
    /// one, else straight from the file.
    async fn read_with(
        &self,
        parallel: Option<(&Arc<Block>, usize)>,
        via: Via,
        ids: &[u32],
        range: TimeRange,
        wanted: Wanted,
    ) -> Result<Vec<Vec<Sample>>> {
        let (pieces, known) = self.plan(ids, range, wanted);
        let out = match &self.cache {
            Some((cache, number)) if via == Via::Cache => {
                self.read_through_cache(cache, *number, parallel, ids, range, pieces)
                    .await?
            }
            _ => self.decode(parallel, ids, join_segments(pieces)).await?,
        };
        Ok(with_known(out, known))
    }

    /// Takes each of `pieces` (one segment each) from the cache, decoding
    /// and keeping those it lacks, and hands out the samples in `range`.
    async fn read_through_cache(
        &self,
        cache: &SegmentCache,
        number: u64,
        parallel: Option<(&Arc<Block>, usize)>,
        ids: &[u32],
        range: TimeRange,
        pieces: Vec<Piece>,
    ) -> Result<Vec<Vec<Sample>>> {
        let key = |piece: &Piece| SegmentKey {
            block: number,
            first_row: piece.rows.start as u64,
        };
        let found: Vec<Option<Segment>> = pieces.iter().map(|piece| cache.get(&key(piece))).collect();
        // The missing segments are decoded as if each were a series of its
        // own, so each comes back as its own vector.
        let (mut missing, mut missing_ids) = (Vec::new(), Vec::new());
        for (piece, hit) in pieces.iter().zip(&found) {
            if hit.is_none() {
                missing_ids.push(ids[piece.series]);
                missing.push(Piece {
                    series: missing.len(),
                    ..piece.clone()
                });
            }
        }
        let mut decoded = self.decode(parallel, &missing_ids, missing).await?.into_iter();
        // Only the samples in range are copied out: a short read needs a
        // few of a segment's (up to 128) samples.
        let mut in_range = Vec::with_capacity(pieces.len());
        let mut lengths = vec![0; ids.len()];
        for (piece, hit) in pieces.iter().zip(found) {
            let segment = match hit {
                Some(segment) => segment,
                None => {
                    let segment: Segment = decoded.next().unwrap_or_default().into();
                    cache.insert(key(piece), segment.clone());
                    segment
                }
            };
            let from = segment.partition_point(|s| s.timestamp < range.start);
            let to = segment.partition_point(|s| s.timestamp <= range.end);
            lengths[piece.series] += to.saturating_sub(from);
            in_range.push((segment, from..to.max(from)));
        }
        let mut out: Vec<Vec<Sample>> = lengths.into_iter().map(Vec::with_capacity).collect();
        for (piece, (segment, rows)) in pieces.iter().zip(in_range) {
            out[piece.series].extend_from_slice(&segment[rows]);
        }
        Ok(out)
    }

    /// Decodes `pieces` (in file order) into one vector per entry of `ids`,
    /// on two tasks when `parallel` names this block and there are at least
    /// as many `ids` as it asks for.
    async fn decode(
        &self,
        parallel: Option<(&Arc<Block>, usize)>,
        ids: &[u32],
        mut pieces: Vec<Piece>,
    ) -> Result<Vec<Vec<Sample>>> {
        let block = match parallel {
            Some((block, min_series)) if ids.len() >= min_series && pieces.len() >= 2 => block,
            _ => return self.read_pieces(ids, pieces).await,
        };
        let later = pieces.split_off(self.split_point(&pieces));
        let other = {
            let (block, ids) = (block.clone(), ids.to_vec());
            tokio::spawn(async move { block.read_pieces(&ids, later).await })
        };
        let mut out = self.read_pieces(ids, pieces).await?;
        let rest = other.await.map_err(|e| Error::Task(e.to_string()))??;
        // The later pieces lie after the earlier ones in the file, so after
        // them in time within each series.
        for (series, mut later_samples) in out.iter_mut().zip(rest) {
            if series.is_empty() {
                *series = later_samples;
            } else {
                series.append(&mut later_samples);
            }
        }
        Ok(out)
    }

    /// Where to cut `pieces` (sorted by row, at least two) into two reads of
    /// about equal rows: at the slice boundary nearest the middle when it
    /// leaves each side at least a quarter of the rows, else at the middle.
    fn split_point(&self, pieces: &[Piece]) -> usize {
        let mut rows_before = Vec::with_capacity(pieces.len());
        let mut total = 0;
        for piece in pieces {
            rows_before.push(total);
            total += piece.rows.len();
        }
        let balanced = |cut: &usize| rows_before[*cut] >= total / 4 && total - rows_before[*cut] >= total / 4;
        let middle = rows_before
            .partition_point(|&before| before < total / 2)
            .clamp(1, pieces.len() - 1);
        self.slice_first_rows
            .iter()
            .map(|&first| pieces.partition_point(|p| (p.rows.start as u64) < first))
            .filter(|&cut| cut > 0 && cut < pieces.len())
            .filter(balanced)
            .min_by_key(|&cut| rows_before[cut].abs_diff(total / 2))
            .unwrap_or(middle)
    }

    /// Decodes `pieces` (in file order) into one vector per entry of `ids`
    /// (the series each piece's `series` position names).
    async fn read_pieces(&self, ids: &[u32], pieces: Vec<Piece>) -> Result<Vec<Vec<Sample>>> {
        let mut out: Vec<Vec<Sample>> = vec![Vec::new(); ids.len()];
        // Series holding only histograms have no sample rows.
        if pieces.is_empty() {
            return Ok(out);
        }
        debug_assert!(pieces.windows(2).all(|w| w[0].rows.end <= w[1].rows.start));
        let mut rows_per_series = vec![0usize; ids.len()];
        for piece in &pieces {
            rows_per_series[piece.series] += piece.rows.len();
        }
        for (series, rows) in out.iter_mut().zip(rows_per_series) {
            series.reserve_exact(rows);
        }
        #[allow(deprecated)]
        let mut reader = ParquetObjectReader::new(self.store.clone(), self.dir.clone().join(SAMPLES_FILE))
            .with_file_size(self.meta.samples_file_size);
        let footer = self
            .samples_footer
            .get_or_try_init(|| load_footer(&mut reader))
            .await?
            .clone();
        let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer);
        // Format 3 has no corrections: they are all zero there.
        let has_corrections = self.meta.version >= 4;
        let stored_distances = self.meta.version >= FIRST_FORMAT_WITH_SLICES;
        let columns = [COLUMN_TIMESTAMP, COLUMN_VALUE_DELTA, COLUMN_VALUE_CORRECTION];
        let projection = ProjectionMask::columns(
            builder.parquet_schema(),
            columns[..2 + usize::from(has_corrections)].iter().copied(),
        );
        let selection = RowSelection::from_consecutive_ranges(
            pieces.iter().map(|p| p.rows.clone()),
            self.meta.num_samples as usize,
        );
        let mut stream = builder
            .with_projection(projection)
            .with_row_selection(selection)
            .with_batch_size(64 * 1024)
            .build()?;
        // Where decoding stands: the piece, rows of it done, the value and
        // time the next row is stored against.
        let (mut current, mut done) = (0usize, 0usize);
        let mut previous = Previous::default();
        let mut time: TimestampMs = 0;
        let keyframe_rows = self.keyframe_rows;
        let too_many_rows = || Error::Block {
            block: self.meta.ulid.clone(),
            message: "more sample rows than the series table accounts for".into(),
        };
        let mut zeros = Vec::new();
        while let Some(batch) = stream.try_next().await? {
            let timestamps = column::<Int64Array>(&batch, COLUMN_TIMESTAMP, &self.meta.ulid)?.values();
            let deltas = column::<Int64Array>(&batch, COLUMN_VALUE_DELTA, &self.meta.ulid)?.values();
            let corrections: &[i64] = if has_corrections {
                column::<Int64Array>(&batch, COLUMN_VALUE_CORRECTION, &self.meta.ulid)?.values()
            } else {
                zeros.resize(batch.num_rows(), 0);
                &zeros
            };
            // The batch's rows piece by piece: each belongs to one series,
            // whose encoding is looked up once per piece.
            let mut row = 0;
            while row < timestamps.len() {
                while current < pieces.len() && done == pieces[current].rows.len() {
                    (current, done) = (current + 1, 0);
                }
                let Some(piece) = pieces.get(current) else {
                    return Err(too_many_rows());
                };
                let run = (piece.rows.len() - done).min(timestamps.len() - row);
                let encoding = self.encodings[ids[piece.series] as usize];
                let target = &mut out[piece.series];
                // Deltas restart at every piece (it starts at a restart) and
                // every keyframe within it.
                let mut since_keyframe = done % keyframe_rows;
                if stored_distances && done == 0 {
                    // Set the time the piece's first distance is added to.
                    time = match piece.first_time {
                        // The stored distance is from the previous sample,
                        // which this read does not have: the table's time wins.
                        FirstTime::Noted(noted) => noted.wrapping_sub(timestamps[row]),
                        FirstTime::StoredAfter(base) => base,
                    };
                }
                for ((&stored_time, delta), correction) in timestamps[row..row + run]
                    .iter()
                    .zip(&deltas[row..row + run])
                    .zip(&corrections[row..row + run])
                {
                    if since_keyframe == 0 {
                        previous = Previous::default();
                    }
                    time = if stored_distances {
                        time.wrapping_add(stored_time)
                    } else {
                        stored_time
                    };
                    target.push(Sample::new(time, encoding.decode(*delta, *correction, &mut previous)));
                    since_keyframe += 1;
                    if since_keyframe == keyframe_rows {
                        since_keyframe = 0;
                    }
                }
                done += run;
                row += run;
            }
        }
        Ok(out)
    }
}

/// Joins each piece (sorted by row) to the one before it when both are
/// segments of the same run: a read that bypasses the segment cache then
/// selects fewer, longer row ranges.
fn join_segments(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut joined: Vec<Piece> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match joined.last_mut() {
            Some(last) if !piece.starts_run && last.series == piece.series && last.rows.end == piece.rows.start => {
                last.rows.end = piece.rows.end;
            }
            _ => joined.push(piece),
        }
    }
    joined
}

/// Adds the samples a read knew without decoding to what it decoded.
fn with_known(mut out: Vec<Vec<Sample>>, known: Vec<(usize, Sample)>) -> Vec<Vec<Sample>> {
    for (position, sample) in known {
        out[position].push(sample);
    }
    out
}

/// Where a read takes its samples from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Decoded from the samples file every time: compaction, and reads too
    /// big for the cache, which would only evict what repeats.
    File,
    /// From the segment cache, decoding (and keeping) what it lacks.
    Cache,
}

/// How much of each selected series a read hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Every sample in the range.
    All,
    /// The newest float sample and the newest histogram in the range.
    Latest,
}

/// Consecutive rows of one series in `samples.parquet`, starting at a
/// restart of its value deltas.
#[derive(Debug, Clone)]
struct Piece {
    rows: Range<usize>,
    /// The series' position in the read's ids.
    series: usize,
    /// Whether the piece is the first of its run (slice): a piece that is
    /// not may be joined to the one before it, which ends where it starts.
    starts_run: bool,
    first_time: FirstTime,
}

/// How the time of a piece's first sample is known (format 8 stores
/// timestamps as distances from the series' previous sample).
#[derive(Debug, Clone, Copy)]
enum FirstTime {
    /// A keyframe or run start after the series' first sample, whose time
    /// the series table notes.
    Noted(TimestampMs),
    /// The series' first sample, stored as its distance from this time (the
    /// series' minimum time).
    StoredAfter(TimestampMs),
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str, block: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Block {
            block: block.to_string(),
            message: format!("column {name} is missing or has the wrong type"),
        })
}

/// A list per series, back to back (keyframe offsets, runs of rows).
#[derive(Debug)]
struct Ragged<T> {
    items: Vec<T>,
    /// Where each series' items start in `items` (one more than series).
    starts: Vec<u32>,
}

impl<T> Default for Ragged<T> {
    fn default() -> Self {
        Ragged {
            items: Vec::new(),
            starts: vec![0],
        }
    }
}

impl<T: Copy> Ragged<T> {
    /// Adds the next series' items.
    fn push(&mut self, items: &[T]) {
        self.items.extend_from_slice(items);
        self.starts.push(self.items.len() as u32);
    }

    /// The items of series `id`.
    fn of(&self, id: u32) -> &[T] {
        match (self.starts.get(id as usize), self.starts.get(id as usize + 1)) {
            (Some(&from), Some(&to)) => &self.items[from as usize..to as usize],
            _ => &[],
        }
    }
}

/// `series.parquet` in memory.
struct SeriesTable {
    labels: Vec<Labels>,
    runs: Ragged<(u64, u32)>,
    slice_first_rows: Vec<u64>,
    keyframes: Ragged<u32>,
    histogram_rows: Vec<(u64, u32)>,
    time_bounds: Vec<(TimestampMs, TimestampMs)>,
    last_floats: Vec<Option<Sample>>,
    encodings: Vec<ValueEncoding>,
    postings: Postings,
}

/// Which of the optional columns a series table has, by format.
#[derive(Debug, Clone, Copy)]
struct SeriesColumns {
    /// The histogram row columns (format 5 on).
    histograms: bool,
    /// Keyframe offsets (format 6 on).
    keyframes: bool,
    /// The last float sample (format 7 on).
    last_floats: bool,
    /// Row counts per slice (format 8 on).
    slices: bool,
}

/// Reads a `u32` list of a series table row.
fn u32_list(lists: &ListArray, row: usize, block: &str, what: &str) -> Result<Vec<u32>> {
    let list = lists.value(row);
    let values = list
        .as_any()
        .downcast_ref::<UInt32Array>()
        .ok_or_else(|| Error::Block {
            block: block.to_string(),
            message: format!("{what} are not u32"),
        })?;
    Ok(values.values().to_vec())
}

/// Each series' runs from its row counts per slice (`slices` counts per
/// series, back to back): slice after slice in the file, series after
/// series within a slice.
/// Also returns each slice's first row.
fn runs_from_slice_counts(counts: &[u32], slices: usize) -> (Ragged<(u64, u32)>, Vec<u64>) {
    let mut next_row = vec![0u64; slices];
    let mut row = 0;
    for (slice, next) in next_row.iter_mut().enumerate() {
        *next = row;
        row += counts
            .iter()
            .skip(slice)
            .step_by(slices.max(1))
            .map(|&c| u64::from(c))
            .sum::<u64>();
    }
    let slice_first_rows = next_row.clone();
    let mut runs = Ragged::default();
    let mut series_runs = Vec::with_capacity(slices);
    for series_counts in counts.chunks(slices.max(1)) {
        series_runs.clear();
        for (&count, next) in series_counts.iter().zip(&mut next_row) {
            if count > 0 {
                series_runs.push((*next, count));
                *next += u64::from(count);
            }
        }
        runs.push(&series_runs);
    }
    (runs, slice_first_rows)
}

fn decode_series_table(bytes: Bytes, block: &str, has: SeriesColumns) -> Result<SeriesTable> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .with_batch_size(64 * 1024)
        .build()?;
    let mut labels = Vec::new();
    let mut runs = Ragged::default();
    let mut slice_first_rows = Vec::new();
    // Format 8: every series' row count per slice, back to back.
    let mut slice_counts: Vec<u32> = Vec::new();
    let mut slices: Option<usize> = None;
    let mut histogram_rows = Vec::new();
    let mut bounds = Vec::new();
    let mut encodings = Vec::new();
    let mut postings = Postings::default();
    let mut keyframes = Ragged::default();
    let mut last_floats = Vec::new();
    for batch in reader {
        let batch = batch?;
        let last_float_columns = if has.last_floats {
            Some((
                column::<Int64Array>(&batch, COLUMN_LAST_FLOAT_TIME, block)?,
                column::<UInt64Array>(&batch, COLUMN_LAST_FLOAT_BITS, block)?,
            ))
        } else {
            None
        };
        let keyframe_lists = if has.keyframes {
            Some(column::<ListArray>(&batch, COLUMN_KEYFRAME_OFFSETS, block)?)
        } else {
            None
        };
        let slice_count_lists = if has.slices {
            Some(column::<ListArray>(&batch, COLUMN_SLICE_ROW_COUNTS, block)?)
        } else {
            None
        };
        let maps = column::<MapArray>(&batch, COLUMN_LABELS, block)?;
        let starts = column::<UInt64Array>(&batch, COLUMN_ROW_START, block)?;
        let counts = column::<UInt32Array>(&batch, COLUMN_ROW_COUNT, block)?;
        let mins = column::<Int64Array>(&batch, COLUMN_MIN_TIME, block)?;
        let maxs = column::<Int64Array>(&batch, COLUMN_MAX_TIME, block)?;
        let value_encodings = column::<UInt8Array>(&batch, COLUMN_VALUE_ENCODING, block)?;
        let histogram_columns = if has.histograms {
            Some((
                column::<UInt64Array>(&batch, COLUMN_HISTOGRAM_ROW_START, block)?,
                column::<UInt32Array>(&batch, COLUMN_HISTOGRAM_ROW_COUNT, block)?,
            ))
        } else {
            None
        };
        let keys = maps.keys().as_any().downcast_ref::<StringArray>();
        let values = maps.values().as_any().downcast_ref::<StringArray>();
        let (Some(keys), Some(values)) = (keys, values) else {
            return Err(Error::Block {
                block: block.to_string(),
                message: "labels map does not hold strings".into(),
            });
        };
        let offsets = maps.value_offsets();
        for row in 0..batch.num_rows() {
            let range = offsets[row] as usize..offsets[row + 1] as usize;
            let pairs = range.map(|i| (keys.value(i).to_string(), values.value(i).to_string()));
            let series_labels = Labels::from_pairs(pairs);
            let id = labels.len() as u32;
            postings.add(id, &series_labels);
            labels.push(series_labels);
            match slice_count_lists {
                Some(lists) => {
                    let counts_here = u32_list(lists, row, block, "slice row counts")?;
                    if *slices.get_or_insert(counts_here.len()) != counts_here.len()
                        || counts_here.iter().map(|&c| u64::from(c)).sum::<u64>() != u64::from(counts.value(row))
                    {
                        return Err(Error::Block {
                            block: block.to_string(),
                            message: format!("series {id} has slice row counts that do not add up"),
                        });
                    }
                    slice_counts.extend_from_slice(&counts_here);
                }
                None if counts.value(row) > 0 => runs.push(&[(starts.value(row), counts.value(row))]),
                None => runs.push(&[]),
            }
            histogram_rows
                .push(histogram_columns.map_or((0, 0), |(starts, counts)| (starts.value(row), counts.value(row))));
            bounds.push((mins.value(row), maxs.value(row)));
            if let Some((times, bits)) = last_float_columns {
                let time = times.value(row);
                last_floats.push((time != i64::MIN).then(|| Sample::new(time, f64::from_bits(bits.value(row)))));
            }
            match keyframe_lists {
                Some(lists) => keyframes.push(&u32_list(lists, row, block, "keyframe offsets")?),
                None => keyframes.push(&[]),
            }
            let encoding = ValueEncoding::from_u8(value_encodings.value(row)).ok_or_else(|| Error::Block {
                block: block.to_string(),
                message: format!("unknown value encoding {}", value_encodings.value(row)),
            })?;
            encodings.push(encoding);
        }
    }
    if let Some(slices) = slices {
        (runs, slice_first_rows) = runs_from_slice_counts(&slice_counts, slices);
    }
    Ok(SeriesTable {
        labels,
        runs,
        slice_first_rows,
        keyframes,
        histogram_rows,
        time_bounds: bounds,
        last_floats,
        encodings,
        postings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use proptest::prelude::*;
    use tidewatch_model::STALE_NAN_BITS;

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// A value: any bit pattern, or (in decimal series) a short decimal,
    /// including the ±2^53 edges, -0.0 and the odd NaN.
    fn value_strategy(decimal: bool) -> BoxedStrategy<f64> {
        if decimal {
            prop_oneof![
                8 => (-1_000_000i64..1_000_000, 0..4u32).prop_map(|(v, scale)| v as f64 / 10f64.powi(scale as i32)),
                1 => Just((1u64 << 53) as f64),
                1 => Just(-((1u64 << 53) as f64)),
                1 => Just(-0.0),
                1 => Just(f64::from_bits(STALE_NAN_BITS)),
            ]
            .boxed()
        } else {
            any::<u64>().prop_map(f64::from_bits).boxed()
        }
    }

    fn series_strategy() -> impl Strategy<Value = Vec<SeriesSamples>> {
        let one_series = any::<bool>()
            .prop_flat_map(|decimal| proptest::collection::btree_map(-1000i64..1000, value_strategy(decimal), 1..20));
        // Histograms of any shape (the block stores what the head held, valid or
        // not), in some series only: series with floats, histograms or both.
        let histograms =
            proptest::collection::btree_map(-1000i64..1000, crate::histogram_codec::strategy::histogram(), 0..4);
        proptest::collection::btree_map("[a-c]{1,3}", (one_series, histograms, 0..3u8), 0..12).prop_map(|by_name| {
            by_name
                .into_iter()
                .map(|(name, (samples, histograms, kinds))| SeriesSamples {
                    labels: Labels::from_pairs([("__name__", "m".to_string()), ("name", name)]),
                    // kinds: 0 floats only, 1 histograms only, 2 both.
                    samples: if kinds == 1 {
                        Vec::new()
                    } else {
                        samples.into_iter().map(|(t, v)| Sample::new(t, v)).collect()
                    },
                    histograms: if kinds == 0 {
                        Vec::new()
                    } else {
                        histograms
                            .into_iter()
                            .map(|(timestamp, histogram)| HistogramSample { timestamp, histogram })
                            .collect()
                    },
                    start_timestamps: Default::default(),
                })
                .filter(|s: &SeriesSamples| !s.samples.is_empty() || !s.histograms.is_empty())
                .collect()
        })
    }

    #[test]
    fn decimal_data_takes_its_scale_and_odd_values_survive_every_encoding() {
        let integers = [Sample::new(0, 3.0), Sample::new(1, -((1u64 << 53) as f64))];
        assert_eq!(ValueEncoding::choose(&integers), ValueEncoding::Decimal { scale: 0 });
        let millis: Vec<Sample> = (0..100).map(|i| Sample::new(i, 1234.5 + i as f64 * 0.125)).collect();
        assert_eq!(ValueEncoding::choose(&millis), ValueEncoding::Decimal { scale: 3 });
        // A counter summed in floating point is not exactly decimal, yet it is
        // still far cheaper as decimals plus corrections than as bit patterns.
        let mut total = 0.0;
        let summed: Vec<Sample> = (0..100)
            .map(|i| {
                total += ((i * 7919 % 1000) as f64) / 1000.0;
                Sample::new(i, total)
            })
            .collect();
        assert_eq!(ValueEncoding::choose(&summed), ValueEncoding::Decimal { scale: 3 });
        let odd = [
            -0.0,
            f64::NAN,
            f64::from_bits(STALE_NAN_BITS),
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            1e300,
            0.1 + 0.2,
        ];
        let encodings =
            std::iter::once(ValueEncoding::BitsDelta).chain((0..10).map(|scale| ValueEncoding::Decimal { scale }));
        for encoding in encodings {
            assert_eq!(ValueEncoding::from_u8(encoding.to_u8()), Some(encoding));
            let (mut writer, mut reader) = (Previous::default(), Previous::default());
            for value in odd {
                let (delta, correction) = encoding.encode(value, &mut writer);
                let back = encoding.decode(delta, correction, &mut reader);
                assert_eq!(back.to_bits(), value.to_bits(), "{encoding:?} {value}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        // Long series cross keyframes: a read of any range decodes from the
        // keyframe before it and still gets every sample in it, exactly,
        // also when a histogram comes first and sets the series' start.
        #[test]
        fn reads_from_keyframes_find_every_sample_in_range(
            gaps in proptest::collection::vec(1i64..40, 130..700),
            decimal in any::<bool>(),
            histogram_first in any::<bool>(),
            start in -50i64..12_000,
            span in 0i64..4_000,
            slice_ms in prop_oneof![Just(MIN_SLICE_MS), 50i64..3_000],
        ) {
            run(async {
                let mut t = 0;
                let mut samples = Vec::new();
                for (i, gap) in gaps.iter().enumerate() {
                    t += gap;
                    let value = if decimal { (i % 97) as f64 * 0.25 } else { (i as f64).sin() * 1e6 };
                    samples.push(Sample::new(t, value));
                }
                let histograms = if histogram_first {
                    vec![HistogramSample { timestamp: -100, histogram: tidewatch_model::FloatHistogram::default() }]
                } else {
                    Vec::new()
                };
                let series = vec![SeriesSamples {
                    labels: Labels::from_pairs([("__name__", "long")]),
                    samples: samples.clone(),
                    histograms,
                    start_timestamps: Default::default(),
                }];
                let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
                let prefix = StorePath::from("tenant");
                let meta = write_block(&store, &prefix, encode_block(&series, 1, Vec::new(), slice_ms).unwrap()).await.unwrap();
                let block = Block::open(store.clone(), prefix.clone().join(meta.ulid.as_str())).await.unwrap();
                let range = TimeRange::new(start, start + span);
                let read = block.read_samples_in(&[0], range).await.unwrap().remove(0);
                let got: Vec<Sample> = read.iter().copied().filter(|s| range.contains(s.timestamp)).collect();
                let expected: Vec<Sample> = samples.iter().copied().filter(|s| range.contains(s.timestamp)).collect();
                prop_assert_eq!(got.len(), expected.len());
                prop_assert!(got.iter().zip(&expected).all(|(a, b)| a.same_as(b)));
                // Through the segment cache, segments are decoded one by one
                // (each from its own restart), then served from memory.
                let mut cached = Block::open(store.clone(), prefix.clone().join(meta.ulid.as_str())).await.unwrap();
                cached.use_cache(&SegmentCache::new(1 << 20));
                let cached = Arc::new(cached);
                for round in ["cold", "warm"] {
                    let again = cached
                        .read_in_parallel(&[0], range, Wanted::All, usize::MAX, Via::Cache)
                        .await
                        .unwrap()
                        .remove(0);
                    prop_assert!(
                        again.len() == got.len() && again.iter().zip(&got).all(|(a, b)| a.same_as(b)),
                        "{round} cache read differs"
                    );
                }
                // Short ranges decode at most the keyframe spans around them
                // (two runs' worth when the range crosses a slice boundary).
                if span < 100 {
                    prop_assert!(read.len() <= 3 * KEYFRAME_ROWS, "{} rows read", read.len());
                }
                Ok(())
            })?;
        }

        // Whatever goes into a block comes back out bit for bit, for any selection and range.
        #[test]
        fn blocks_round_trip(
            series in series_strategy(),
            start in -1200i64..1200,
            span in 0i64..2400,
            slice_ms in prop_oneof![Just(MIN_SLICE_MS), 1i64..700],
        ) {
            run(async {
                let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
                let prefix = StorePath::from("tenant");
                let encoded = encode_block(&series, 1, Vec::new(), slice_ms).unwrap();
                let meta = write_block(&store, &prefix, encoded).await.unwrap();
                let block = Block::open(store.clone(), prefix.clone().join(meta.ulid.as_str())).await.unwrap();
                prop_assert_eq!(block.series_count(), series.len());
                let range = TimeRange::new(start, start + span);
                // A subset of series too: value deltas must restart at every selected series.
                let subset = Matcher::new(tidewatch_model::MatchOp::RegexMatch, "name", "b.*|c").unwrap();
                let got = block.select(std::slice::from_ref(&subset), range).await.unwrap();
                // Two tasks, cut at a slice boundary or mid-slice, read what
                // one does; so does the same block through the segment
                // cache, cold and warm, whichever read filled it.
                let block = Arc::new(block);
                let cache = SegmentCache::new(1 << 20);
                let mut cached = Block::open(store.clone(), prefix.clone().join(meta.ulid.as_str())).await.unwrap();
                cached.use_cache(&cache);
                let cached = Arc::new(cached);
                let ids: Vec<u32> = (0..block.series_count() as u32).collect();
                // Reads may hand out samples around the range (the cache
                // trims to it); what is in range must agree.
                let in_range = |read: Vec<Vec<Sample>>| -> Vec<Vec<Sample>> {
                    read.into_iter()
                        .map(|samples| samples.into_iter().filter(|s| range.contains(s.timestamp)).collect())
                        .collect()
                };
                for wanted in [Wanted::All, Wanted::Latest] {
                    let one = in_range(block.read(&ids, range, wanted).await.unwrap());
                    let reads = [
                        ("two tasks", block.read_in_parallel(&ids, range, wanted, 0, Via::File).await.unwrap()),
                        ("cache, two tasks", cached.read_in_parallel(&ids, range, wanted, 0, Via::Cache).await.unwrap()),
                        ("cache, one task", cached.read_in_parallel(&ids, range, wanted, usize::MAX, Via::Cache).await.unwrap()),
                    ];
                    for (how, other) in reads {
                        let other = in_range(other);
                        prop_assert!(
                            one.len() == other.len()
                                && one.iter().zip(&other).all(|(a, b)| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_as(y))),
                            "{wanted:?}, {how}: {one:?} != {other:?}"
                        );
                    }
                    if one.iter().any(|samples| !samples.is_empty()) && wanted == Wanted::All {
                        prop_assert!(cache.hits() > 0, "the second cached read found nothing in the cache");
                    }
                }
                let expected: Vec<SeriesSamples> = series
                    .iter()
                    .filter(|s| subset.matches(s.labels.get("name").unwrap_or("")))
                    .map(|s| SeriesSamples {
                        labels: s.labels.clone(),
                        samples: s.samples.iter().copied().filter(|x| range.contains(x.timestamp)).collect(),
                        histograms: s.histograms.iter().filter(|h| range.contains(h.timestamp)).cloned().collect(),
                        start_timestamps: Default::default(),
                    })
                    .filter(|s| !s.samples.is_empty() || !s.histograms.is_empty())
                    .collect();
                prop_assert_eq!(got.len(), expected.len());
                for (g, e) in got.iter().zip(&expected) {
                    prop_assert_eq!(&g.labels, &e.labels);
                    prop_assert!(g.samples.len() == e.samples.len() && g.samples.iter().zip(&e.samples).all(|(a, b)| a.same_as(b)));
                    prop_assert!(
                        g.histograms.len() == e.histograms.len()
                            && g.histograms.iter().zip(&e.histograms).all(|(a, b)| {
                                a.timestamp == b.timestamp && crate::histogram_codec::same_histogram(&a.histogram, &b.histogram)
                            }),
                        "{:?} != {:?}", g.histograms, e.histograms
                    );
                }
                Ok(())
            })?;
        }
    }
}
