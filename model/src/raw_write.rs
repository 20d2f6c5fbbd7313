//! The zero-copy ingest form of a remote write request.
//!
//! Decoding into owned [`Labels`] allocates two strings per label per series —
//! the dominant cost of ingestion, where almost every series already exists.
//! [`RawWriteBatch`] instead keeps the decompressed request and records where
//! each label name and value lies in it; storage compares and hashes those
//! slices against the series it knows and allocates only for new series.
//! The protobuf is read by hand here (the wire format is small and fixed), with
//! the same acceptance rules as the prost path in [`crate::remote_write`]:
//! UTF-8 strings, exemplars refused, labels canonicalised (sorted by name,
//! empty values dropped). Native histograms are read field by field here too
//! and converted by the same function as the prost path, so the two decoders
//! share one meaning of a histogram and differ only in reading bytes.

use std::ops::Range;

use crate::error::Error;
use crate::histogram::HistogramSample;
use crate::labels::{Label, Labels};
use crate::remote_write::v1;
use crate::sample::Sample;
use crate::seam::{MetricMetadata, MetricType, WriteBatch};

/// A byte range of the request buffer holding a validated UTF-8 string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Debug, Clone)]
struct RawSeries {
    labels: Range<u32>,
    samples: Range<u32>,
    histograms: Range<u32>,
}

/// A decoded write whose label strings still live in the request buffer.
#[derive(Debug, Clone, Default)]
pub struct RawWriteBatch {
    buffer: Vec<u8>,
    series: Vec<RawSeries>,
    /// (name, value) spans, each series' run sorted by name.
    labels: Vec<(Span, Span)>,
    samples: Vec<Sample>,
    /// Histograms own their buckets: unlike label strings there is nothing
    /// in the request buffer they could point to.
    histograms: Vec<HistogramSample>,
    pub metadata: Vec<MetricMetadata>,
}

/// One series of a [`RawWriteBatch`].
#[derive(Debug, Clone, Copy)]
pub struct RawSeriesRef<'a> {
    batch: &'a RawWriteBatch,
    labels: &'a [(Span, Span)],
    pub samples: &'a [Sample],
    /// Native histogram samples, in the order the request sent them.
    pub histograms: &'a [HistogramSample],
}

impl<'a> RawSeriesRef<'a> {
    /// The labels as bytes (valid UTF-8, checked at decode): the hot path
    /// compares and hashes these without re-validating.
    pub fn label_bytes(&self) -> impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + Clone + 'a {
        let batch = self.batch;
        self.labels.iter().map(move |(n, v)| (batch.bytes(*n), batch.bytes(*v)))
    }

    /// An owned label set (for new series); fails on a string that is not UTF-8.
    pub fn to_labels(&self) -> Result<Labels, Error> {
        let mut pairs = Vec::with_capacity(self.labels.len());
        for (name, value) in self.label_bytes() {
            let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else {
                return Err(Error::Invalid(format!(
                    "series {}: a label is not valid UTF-8",
                    self.describe()
                )));
            };
            pairs.push(Label::new(name, value));
        }
        Ok(Labels::from_sorted(pairs))
    }

    /// The series in Prometheus notation for messages, invalid UTF-8 replaced.
    pub fn describe(&self) -> String {
        let pairs = self.label_bytes().map(|(n, v)| {
            (
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        });
        Labels::from_pairs(pairs).to_string()
    }

    /// Whether these labels equal `labels` exactly.
    pub fn equals(&self, labels: &Labels) -> bool {
        labels.len() == self.labels.len()
            && self
                .label_bytes()
                .zip(labels.iter())
                .all(|((n, v), l)| n == l.name.as_bytes() && v == l.value.as_bytes())
    }

    /// The same hash [`Labels::hash64`] gives for the owned label set.
    pub fn hash64(&self) -> u64 {
        crate::labels::hash_byte_pairs(self.label_bytes())
    }
}

impl RawWriteBatch {
    fn bytes(&self, span: Span) -> &[u8] {
        &self.buffer[span.start as usize..(span.start + span.len) as usize]
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Float samples over all series.
    pub fn sample_count(&self) -> usize {
        self.samples.len()
    }

    /// Native histogram samples over all series.
    pub fn histogram_count(&self) -> usize {
        self.histograms.len()
    }

    pub fn series(&self) -> impl ExactSizeIterator<Item = RawSeriesRef<'_>> {
        self.series.iter().map(move |s| RawSeriesRef {
            batch: self,
            labels: &self.labels[s.labels.start as usize..s.labels.end as usize],
            samples: &self.samples[s.samples.start as usize..s.samples.end as usize],
            histograms: &self.histograms[s.histograms.start as usize..s.histograms.end as usize],
        })
    }

    /// Converts an owned batch (self-monitoring, tests) into the raw form.
    pub fn from_batch(batch: &WriteBatch) -> RawWriteBatch {
        let mut raw = RawWriteBatch {
            metadata: batch.metadata.clone(),
            ..RawWriteBatch::default()
        };
        for series in &batch.series {
            let first_label = raw.labels.len() as u32;
            for label in &series.labels {
                let name = raw.push_str(&label.name);
                let value = raw.push_str(&label.value);
                raw.labels.push((name, value));
            }
            let first_sample = raw.samples.len() as u32;
            raw.samples.extend_from_slice(&series.samples);
            let first_histogram = raw.histograms.len() as u32;
            raw.histograms.extend_from_slice(&series.histograms);
            raw.series.push(RawSeries {
                labels: first_label..raw.labels.len() as u32,
                samples: first_sample..raw.samples.len() as u32,
                histograms: first_histogram..raw.histograms.len() as u32,
            });
        }
        raw
    }

    fn push_str(&mut self, value: &str) -> Span {
        let start = self.buffer.len() as u32;
        self.buffer.extend_from_slice(value.as_bytes());
        Span {
            start,
            len: value.len() as u32,
        }
    }

    /// Converts to the owned form; fails where a label is not UTF-8.
    pub fn to_batch(&self) -> Result<WriteBatch, Error> {
        let mut series = Vec::with_capacity(self.series.len());
        for raw in self.series() {
            series.push(crate::seam::SeriesSamples {
                labels: raw.to_labels()?,
                samples: raw.samples.to_vec(),
                histograms: raw.histograms.to_vec(),
                start_timestamps: Default::default(),
            });
        }
        Ok(WriteBatch {
            series,
            metadata: self.metadata.clone(),
        })
    }
}

/// Protobuf wire reading over a buffer, with absolute offsets.
struct Wire<'a> {
    buffer: &'a [u8],
    position: usize,
    end: usize,
}

const WIRE_VARINT: u64 = 0;
const WIRE_I64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_I32: u64 = 5;

fn truncated() -> Error {
    Error::Protobuf("message is truncated".into())
}

impl<'a> Wire<'a> {
    fn new(buffer: &'a [u8], range: Range<usize>) -> Self {
        Wire {
            buffer,
            position: range.start,
            end: range.end,
        }
    }

    fn done(&self) -> bool {
        self.position >= self.end
    }

    fn varint(&mut self) -> Result<u64, Error> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            if self.position >= self.end {
                return Err(truncated());
            }
            let byte = self.buffer[self.position];
            self.position += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(Error::Protobuf("varint is longer than 10 bytes".into()))
    }

    fn fixed64(&mut self) -> Result<u64, Error> {
        let bytes = self
            .buffer
            .get(self.position..self.position + 8)
            .filter(|_| self.position + 8 <= self.end)
            .ok_or_else(truncated)?;
        self.position += 8;
        Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| truncated())?))
    }

    fn length_delimited(&mut self) -> Result<Range<usize>, Error> {
        let len = usize::try_from(self.varint()?).map_err(|_| truncated())?;
        let start = self.position;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.end)
            .ok_or_else(truncated)?;
        self.position = end;
        Ok(start..end)
    }

    /// (field number, wire type) of the next field.
    fn key(&mut self) -> Result<(u64, u64), Error> {
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(Error::Protobuf("field number 0 is invalid".into()));
        }
        Ok((field, key & 7))
    }

    fn skip(&mut self, wire_type: u64) -> Result<(), Error> {
        match wire_type {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_I64 => self.fixed64().map(drop),
            WIRE_LEN => self.length_delimited().map(drop),
            WIRE_I32 => {
                if self.position + 4 > self.end {
                    return Err(truncated());
                }
                self.position += 4;
                Ok(())
            }
            other => Err(Error::Protobuf(format!("unsupported wire type {other}"))),
        }
    }

    fn expect(wire_type: u64, wanted: u64, field: &str) -> Result<(), Error> {
        if wire_type == wanted {
            Ok(())
        } else {
            Err(Error::Protobuf(format!(
                "field {field} has wire type {wire_type}, expected {wanted}"
            )))
        }
    }
}

fn utf8_span(buffer: &[u8], range: Range<usize>, what: &str) -> Result<Span, Error> {
    std::str::from_utf8(&buffer[range.clone()]).map_err(|_| Error::Protobuf(format!("{what} is not valid UTF-8")))?;
    Ok(Span {
        start: range.start as u32,
        len: (range.end - range.start) as u32,
    })
}

/// A span whose UTF-8 check is deferred: label strings of series that already
/// exist equal stored (valid) strings, so only new series are checked, in
/// [`RawSeriesRef::to_labels`].
fn span(range: Range<usize>) -> Span {
    Span {
        start: range.start as u32,
        len: (range.end - range.start) as u32,
    }
}

fn span_bytes(buffer: &[u8], span: Span) -> &[u8] {
    &buffer[span.start as usize..(span.start + span.len) as usize]
}

fn span_str(buffer: &[u8], span: Span) -> &str {
    std::str::from_utf8(&buffer[span.start as usize..(span.start + span.len) as usize]).unwrap_or_default()
}

/// A sample message of either version: value = 1 (double), timestamp = 2 (int64).
fn decode_sample(buffer: &[u8], range: Range<usize>) -> Result<Sample, Error> {
    let mut wire = Wire::new(buffer, range);
    let mut sample = Sample::new(0, 0.0);
    while !wire.done() {
        let (field, wire_type) = wire.key()?;
        match field {
            1 => {
                Wire::expect(wire_type, WIRE_I64, "Sample.value")?;
                sample.value = f64::from_bits(wire.fixed64()?);
            }
            2 => {
                Wire::expect(wire_type, WIRE_VARINT, "Sample.timestamp")?;
                sample.timestamp = wire.varint()? as i64;
            }
            _ => wire.skip(wire_type)?,
        }
    }
    Ok(sample)
}

/// Sorts a series' label spans by name, drops empty values, and reports duplicates
/// as validation does (duplicates are kept so validation can name them).
fn canonicalise(buffer: &[u8], labels: &mut [(Span, Span)]) -> usize {
    // Byte order of UTF-8 is code point order, the order `str` sorts by.
    // Pairs, not names alone: duplicate names then sit in value order, as
    // `Labels::from_pairs` puts them (the remote_write_v2 fuzz target found
    // a series with a name twice, values descending, that the two decoders
    // ordered differently).
    let order = |a: &(Span, Span), b: &(Span, Span)| {
        span_bytes(buffer, a.0)
            .cmp(span_bytes(buffer, b.0))
            .then_with(|| span_bytes(buffer, a.1).cmp(span_bytes(buffer, b.1)))
    };
    let sorted = labels.windows(2).all(|w| order(&w[0], &w[1]).is_le());
    if !sorted {
        labels.sort_by(order);
    }
    let mut kept = 0;
    for i in 0..labels.len() {
        if labels[i].1.len > 0 {
            labels[kept] = labels[i];
            kept += 1;
        }
    }
    kept
}

/// The labels of a series being decoded, for messages (invalid UTF-8 replaced).
fn describe(buffer: &[u8], labels: &[(Span, Span)]) -> Labels {
    let pairs = labels.iter().map(|(n, v)| {
        (
            String::from_utf8_lossy(span_bytes(buffer, *n)).into_owned(),
            String::from_utf8_lossy(span_bytes(buffer, *v)).into_owned(),
        )
    });
    Labels::from_pairs(pairs)
}

/// `sint32` as prost reads it: the varint truncated to 32 bits, then unzigzagged.
fn zigzag32(raw: u64) -> i32 {
    let value = raw as u32;
    ((value >> 1) as i32) ^ -((value & 1) as i32)
}

fn zigzag64(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

/// A repeated `sint64`, packed or not (a parser must accept both).
fn repeated_sint64(wire: &mut Wire<'_>, wire_type: u64, out: &mut Vec<i64>, field: &str) -> Result<(), Error> {
    match wire_type {
        WIRE_VARINT => out.push(zigzag64(wire.varint()?)),
        WIRE_LEN => {
            let mut packed = Wire::new(wire.buffer, wire.length_delimited()?);
            while !packed.done() {
                out.push(zigzag64(packed.varint()?));
            }
        }
        _ => Wire::expect(wire_type, WIRE_LEN, field)?,
    }
    Ok(())
}

/// A repeated `double`, packed or not.
fn repeated_double(wire: &mut Wire<'_>, wire_type: u64, out: &mut Vec<f64>, field: &str) -> Result<(), Error> {
    match wire_type {
        WIRE_I64 => out.push(f64::from_bits(wire.fixed64()?)),
        WIRE_LEN => {
            let range = wire.length_delimited()?;
            if !range.len().is_multiple_of(8) {
                return Err(Error::Protobuf(format!(
                    "packed field {field} is {} bytes long, not a multiple of 8",
                    range.len()
                )));
            }
            let mut packed = Wire::new(wire.buffer, range);
            while !packed.done() {
                out.push(f64::from_bits(packed.fixed64()?));
            }
        }
        _ => Wire::expect(wire_type, WIRE_LEN, field)?,
    }
    Ok(())
}

fn decode_bucket_span(buffer: &[u8], range: Range<usize>) -> Result<v1::BucketSpan, Error> {
    let mut wire = Wire::new(buffer, range);
    let mut span = v1::BucketSpan::default();
    while !wire.done() {
        let (field, wire_type) = wire.key()?;
        match field {
            1 => {
                Wire::expect(wire_type, WIRE_VARINT, "BucketSpan.offset")?;
                span.offset = zigzag32(wire.varint()?);
            }
            2 => {
                Wire::expect(wire_type, WIRE_VARINT, "BucketSpan.length")?;
                span.length = wire.varint()? as u32;
            }
            _ => wire.skip(wire_type)?,
        }
    }
    Ok(span)
}

/// A `Histogram` message of either version (the same fields up to 16; 2.0's
/// `start_timestamp = 17` is skipped), read with prost's rules: the last
/// value of a scalar or `oneof` wins, repeated fields append.
fn decode_histogram(buffer: &[u8], range: Range<usize>) -> Result<v1::Histogram, Error> {
    use crate::remote_write::v1::histogram::{Count, ZeroCount};
    let mut wire = Wire::new(buffer, range);
    let mut histogram = v1::Histogram::default();
    while !wire.done() {
        let (field, wire_type) = wire.key()?;
        match field {
            1 => {
                Wire::expect(wire_type, WIRE_VARINT, "Histogram.count_int")?;
                histogram.count = Some(Count::CountInt(wire.varint()?));
            }
            2 => {
                Wire::expect(wire_type, WIRE_I64, "Histogram.count_float")?;
                histogram.count = Some(Count::CountFloat(f64::from_bits(wire.fixed64()?)));
            }
            3 => {
                Wire::expect(wire_type, WIRE_I64, "Histogram.sum")?;
                histogram.sum = f64::from_bits(wire.fixed64()?);
            }
            4 => {
                Wire::expect(wire_type, WIRE_VARINT, "Histogram.schema")?;
                histogram.schema = zigzag32(wire.varint()?);
            }
            5 => {
                Wire::expect(wire_type, WIRE_I64, "Histogram.zero_threshold")?;
                histogram.zero_threshold = f64::from_bits(wire.fixed64()?);
            }
            6 => {
                Wire::expect(wire_type, WIRE_VARINT, "Histogram.zero_count_int")?;
                histogram.zero_count = Some(ZeroCount::ZeroCountInt(wire.varint()?));
            }
            7 => {
                Wire::expect(wire_type, WIRE_I64, "Histogram.zero_count_float")?;
                histogram.zero_count = Some(ZeroCount::ZeroCountFloat(f64::from_bits(wire.fixed64()?)));
            }
            8 | 11 => {
                Wire::expect(wire_type, WIRE_LEN, "Histogram spans")?;
                let span = decode_bucket_span(buffer, wire.length_delimited()?)?;
                if field == 8 {
                    histogram.negative_spans.push(span);
                } else {
                    histogram.positive_spans.push(span);
                }
            }
            9 => repeated_sint64(
                &mut wire,
                wire_type,
                &mut histogram.negative_deltas,
                "Histogram.negative_deltas",
            )?,
            12 => repeated_sint64(
                &mut wire,
                wire_type,
                &mut histogram.positive_deltas,
                "Histogram.positive_deltas",
            )?,
            10 => repeated_double(
                &mut wire,
                wire_type,
                &mut histogram.negative_counts,
                "Histogram.negative_counts",
            )?,
            13 => repeated_double(
                &mut wire,
                wire_type,
                &mut histogram.positive_counts,
                "Histogram.positive_counts",
            )?,
            16 => repeated_double(
                &mut wire,
                wire_type,
                &mut histogram.custom_values,
                "Histogram.custom_values",
            )?,
            14 => {
                Wire::expect(wire_type, WIRE_VARINT, "Histogram.reset_hint")?;
                histogram.reset_hint = wire.varint()? as i32;
            }
            15 => {
                Wire::expect(wire_type, WIRE_VARINT, "Histogram.timestamp")?;
                histogram.timestamp = wire.varint()? as i64;
            }
            _ => wire.skip(wire_type)?,
        }
    }
    Ok(histogram)
}

/// Closes the series whose labels start at `first_label` and samples at
/// `first_sample`: refuses it when it carries exemplars, decodes its
/// histogram messages (now that its labels are known for messages), and
/// records it.
fn close_series(
    buffer: &[u8],
    batch: &mut RawWriteBatch,
    first_label: usize,
    first_sample: usize,
    histograms: &[Range<usize>],
    exemplars: usize,
) -> Result<(), Error> {
    if exemplars > 0 {
        let labels = describe(buffer, &batch.labels[first_label..]);
        return Err(crate::remote_write::unsupported("exemplars", exemplars, &labels));
    }
    let first_histogram = batch.histograms.len();
    for range in histograms {
        let message = decode_histogram(buffer, range.clone())?;
        let sample = crate::remote_write::histogram_from_proto(&message).map_err(|e| {
            let labels = describe(buffer, &batch.labels[first_label..]);
            crate::remote_write::invalid_histogram(&labels, message.timestamp, e)
        })?;
        batch.histograms.push(sample);
    }
    let kept = canonicalise(buffer, &mut batch.labels[first_label..]);
    batch.labels.truncate(first_label + kept);
    batch.series.push(RawSeries {
        labels: first_label as u32..batch.labels.len() as u32,
        samples: first_sample as u32..batch.samples.len() as u32,
        histograms: first_histogram as u32..batch.histograms.len() as u32,
    });
    Ok(())
}

/// Decodes an uncompressed `prometheus.WriteRequest` without copying label strings.
pub fn decode_v1_raw(raw: Vec<u8>) -> Result<RawWriteBatch, Error> {
    let mut batch = RawWriteBatch::default();
    let buffer = raw;
    let mut request = Wire::new(&buffer, 0..buffer.len());
    let mut timeseries = Vec::new();
    let mut metadata = Vec::new();
    while !request.done() {
        let (field, wire_type) = request.key()?;
        match field {
            1 => {
                Wire::expect(wire_type, WIRE_LEN, "WriteRequest.timeseries")?;
                timeseries.push(request.length_delimited()?);
            }
            3 => {
                Wire::expect(wire_type, WIRE_LEN, "WriteRequest.metadata")?;
                metadata.push(request.length_delimited()?);
            }
            _ => request.skip(wire_type)?,
        }
    }
    batch.series.reserve(timeseries.len());
    batch.labels.reserve(timeseries.len() * 8);
    batch.samples.reserve(timeseries.len());
    for range in timeseries {
        let first_label = batch.labels.len();
        let first_sample = batch.samples.len();
        let mut exemplars = 0;
        let mut histograms = Vec::new();
        let mut wire = Wire::new(&buffer, range);
        while !wire.done() {
            let (field, wire_type) = wire.key()?;
            match field {
                1 => {
                    Wire::expect(wire_type, WIRE_LEN, "TimeSeries.labels")?;
                    let label = wire.length_delimited()?;
                    let mut inner = Wire::new(&buffer, label);
                    let mut name = Span { start: 0, len: 0 };
                    let mut value = Span { start: 0, len: 0 };
                    while !inner.done() {
                        let (field, wire_type) = inner.key()?;
                        match field {
                            1 => {
                                Wire::expect(wire_type, WIRE_LEN, "Label.name")?;
                                name = span(inner.length_delimited()?);
                            }
                            2 => {
                                Wire::expect(wire_type, WIRE_LEN, "Label.value")?;
                                value = span(inner.length_delimited()?);
                            }
                            _ => inner.skip(wire_type)?,
                        }
                    }
                    batch.labels.push((name, value));
                }
                2 => {
                    Wire::expect(wire_type, WIRE_LEN, "TimeSeries.samples")?;
                    let sample = wire.length_delimited()?;
                    batch.samples.push(decode_sample(&buffer, sample)?);
                }
                3 => {
                    wire.skip(wire_type)?;
                    exemplars += 1;
                }
                4 => {
                    Wire::expect(wire_type, WIRE_LEN, "TimeSeries.histograms")?;
                    histograms.push(wire.length_delimited()?);
                }
                _ => wire.skip(wire_type)?,
            }
        }
        close_series(&buffer, &mut batch, first_label, first_sample, &histograms, exemplars)?;
    }
    for range in metadata {
        let mut wire = Wire::new(&buffer, range);
        let mut entry = MetricMetadata {
            metric_family_name: String::new(),
            metric_type: MetricType::Unknown,
            help: String::new(),
            unit: String::new(),
        };
        while !wire.done() {
            let (field, wire_type) = wire.key()?;
            match (field, wire_type) {
                (1, WIRE_VARINT) => entry.metric_type = MetricType::from_proto(wire.varint()? as i32),
                (2 | 4 | 5, WIRE_LEN) => {
                    let span = utf8_span(&buffer, wire.length_delimited()?, "metadata string")?;
                    let text = span_str(&buffer, span).to_string();
                    match field {
                        2 => entry.metric_family_name = text,
                        4 => entry.help = text,
                        _ => entry.unit = text,
                    }
                }
                (1 | 2 | 4 | 5, _) => {
                    return Err(Error::Protobuf(format!(
                        "metadata field {field} has wire type {wire_type}"
                    )));
                }
                _ => wire.skip(wire_type)?,
            }
        }
        batch.metadata.push(entry);
    }
    batch.buffer = buffer;
    Ok(batch)
}

/// Decodes an uncompressed `io.prometheus.write.v2.Request` without copying symbols.
pub fn decode_v2_raw(raw: Vec<u8>) -> Result<RawWriteBatch, Error> {
    let buffer = raw;
    let mut request = Wire::new(&buffer, 0..buffer.len());
    let mut symbols: Vec<Span> = Vec::new();
    let mut timeseries = Vec::new();
    while !request.done() {
        let (field, wire_type) = request.key()?;
        match field {
            4 => {
                Wire::expect(wire_type, WIRE_LEN, "Request.symbols")?;
                symbols.push(utf8_span(&buffer, request.length_delimited()?, "symbol")?);
            }
            5 => {
                Wire::expect(wire_type, WIRE_LEN, "Request.timeseries")?;
                timeseries.push(request.length_delimited()?);
            }
            _ => request.skip(wire_type)?,
        }
    }
    if !timeseries.is_empty() && symbols.first().is_none_or(|s| s.len != 0) {
        return Err(Error::Invalid(
            "the first entry of the symbol table must be the empty string".to_string(),
        ));
    }
    let symbol = |reference: u64| -> Result<Span, Error> {
        usize::try_from(reference)
            .ok()
            .and_then(|r| symbols.get(r))
            .copied()
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "symbol reference {reference} is out of range: the symbol table has {} entries",
                    symbols.len()
                ))
            })
    };
    let mut batch = RawWriteBatch::default();
    batch.series.reserve(timeseries.len());
    batch.samples.reserve(timeseries.len());
    for range in timeseries {
        let first_label = batch.labels.len();
        let first_sample = batch.samples.len();
        let mut refs: Vec<u64> = Vec::with_capacity(16);
        let mut exemplars = 0;
        let mut histograms = Vec::new();
        let mut metadata = None;
        let mut wire = Wire::new(&buffer, range);
        while !wire.done() {
            let (field, wire_type) = wire.key()?;
            match (field, wire_type) {
                (1, WIRE_LEN) => {
                    let packed = wire.length_delimited()?;
                    let mut inner = Wire::new(&buffer, packed);
                    while !inner.done() {
                        refs.push(inner.varint()?);
                    }
                }
                (1, WIRE_VARINT) => refs.push(wire.varint()?),
                (2, WIRE_LEN) => {
                    let sample = wire.length_delimited()?;
                    batch.samples.push(decode_sample(&buffer, sample)?);
                }
                (3, WIRE_LEN) => histograms.push(wire.length_delimited()?),
                (4, _) => {
                    wire.skip(wire_type)?;
                    exemplars += 1;
                }
                (5, WIRE_LEN) => {
                    let mut inner = Wire::new(&buffer, wire.length_delimited()?);
                    let (mut metric_type, mut help, mut unit) = (0u64, 0u64, 0u64);
                    while !inner.done() {
                        let (field, wire_type) = inner.key()?;
                        match (field, wire_type) {
                            (1, WIRE_VARINT) => metric_type = inner.varint()?,
                            (3, WIRE_VARINT) => help = inner.varint()?,
                            (4, WIRE_VARINT) => unit = inner.varint()?,
                            _ => inner.skip(wire_type)?,
                        }
                    }
                    metadata = Some((metric_type, help, unit));
                }
                (1 | 2 | 3 | 5, _) => {
                    return Err(Error::Protobuf(format!(
                        "TimeSeries field {field} has wire type {wire_type}"
                    )));
                }
                _ => wire.skip(wire_type)?,
            }
        }
        if !refs.len().is_multiple_of(2) {
            return Err(Error::Invalid(format!(
                "labels_refs of a series has odd length {}: it must hold name/value pairs",
                refs.len()
            )));
        }
        for pair in refs.chunks_exact(2) {
            batch.labels.push((symbol(pair[0])?, symbol(pair[1])?));
        }
        close_series(&buffer, &mut batch, first_label, first_sample, &histograms, exemplars)?;
        if let Some((metric_type, help, unit)) = metadata {
            let metric_type = MetricType::from_proto(metric_type as i32);
            let help = span_str(&buffer, symbol(help)?);
            let unit = span_str(&buffer, symbol(unit)?);
            let name = batch.labels[first_label..]
                .iter()
                .find(|(n, _)| span_str(&buffer, *n) == crate::labels::METRIC_NAME)
                .map(|(_, v)| span_str(&buffer, *v));
            let has_metadata = metric_type != MetricType::Unknown || !help.is_empty() || !unit.is_empty();
            if let (true, Some(name)) = (has_metadata, name) {
                let entry = MetricMetadata {
                    metric_family_name: name.to_string(),
                    metric_type,
                    help: help.to_string(),
                    unit: unit.to_string(),
                };
                if !batch.metadata.contains(&entry) {
                    batch.metadata.push(entry);
                }
            }
        }
    }
    batch.buffer = buffer;
    Ok(batch)
}

/// Decodes a snappy-compressed request of either protocol into the raw form.
pub fn decode_raw(
    body: &[u8],
    protocol: crate::remote_write::Protocol,
    limits: crate::remote_write::DecodeLimits,
) -> Result<RawWriteBatch, Error> {
    let raw = crate::remote_write::decompress(body, limits)?;
    match protocol {
        crate::remote_write::Protocol::V1 => decode_v1_raw(raw),
        crate::remote_write::Protocol::V2 => decode_v2_raw(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::tests::same_batch;
    use crate::remote_write::{DecodeLimits, Protocol, decode, encode_v1, encode_v2};
    use proptest::prelude::*;

    fn batch_strategy() -> impl Strategy<Value = WriteBatch> {
        let series = (
            proptest::collection::vec(("[a-z_]{1,4}", "[a-zA-Zé0-9 ]{0,4}"), 0..5),
            "[a-z_]{1,6}",
            proptest::collection::vec((any::<i64>(), any::<u64>()), 0..4),
            proptest::collection::vec(crate::remote_write::tests::histogram_strategy(), 0..3),
        )
            .prop_map(|(pairs, name, samples, histograms)| crate::seam::SeriesSamples {
                labels: Labels::from_pairs(pairs.into_iter().chain([("__name__".to_string(), name)])),
                samples: samples
                    .into_iter()
                    .map(|(t, v)| Sample::new(t, f64::from_bits(v)))
                    .collect(),
                histograms,
                start_timestamps: Default::default(),
            });
        (
            proptest::collection::vec(series, 0..5),
            proptest::collection::vec(("[a-z]{1,5}", 0i32..8, "[a-z ]{0,5}"), 0..3),
        )
            .prop_map(|(series, metadata)| WriteBatch {
                series,
                metadata: metadata
                    .into_iter()
                    .map(|(name, t, help)| MetricMetadata {
                        metric_family_name: name,
                        metric_type: MetricType::from_proto(t),
                        help,
                        unit: String::new(),
                    })
                    .collect(),
            })
    }

    proptest! {
        // The hand-written decoders agree with the prost ones on every valid request.
        #[test]
        fn raw_decoding_agrees_with_prost(batch in batch_strategy()) {
            for (body, protocol) in [(encode_v1(&batch), Protocol::V1), (encode_v2(&batch), Protocol::V2)] {
                let owned = decode(&body, protocol, DecodeLimits::default()).unwrap();
                let raw = decode_raw(&body, protocol, DecodeLimits::default()).unwrap();
                prop_assert!(same_batch(&raw.to_batch().unwrap(), &owned));
                if protocol == Protocol::V1 {
                    prop_assert_eq!(&raw.metadata, &owned.metadata);
                }
                for (series, expected) in raw.series().zip(&owned.series) {
                    prop_assert_eq!(series.hash64(), expected.labels.hash64());
                    prop_assert!(series.equals(&expected.labels));
                }
            }
        }

        // On any bytes both decoders either fail or agree.
        #[test]
        fn garbage_agrees_or_fails(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let owned = crate::remote_write::decode_v1(&bytes);
            let raw = decode_v1_raw(bytes.clone());
            if let (Ok(owned), Ok(raw)) = (owned, raw) {
                prop_assert!(same_batch(&raw.to_batch().unwrap(), &owned));
            }
            let _ = decode_v2_raw(bytes);
        }
    }

    #[test]
    fn unpacked_repeated_fields_decode_like_packed_ones() {
        // Histogram{count_int: 3, positive_spans: [{offset: 0, length: 2}],
        // positive_deltas: 1, 1 (unpacked), custom_values: 1.5 (unpacked)}
        let span = [0x08, 0x00, 0x10, 0x02];
        let mut histogram = vec![0x08, 3, 0x5a, span.len() as u8];
        histogram.extend_from_slice(&span);
        histogram.extend_from_slice(&[0x60, 2, 0x60, 2]);
        histogram.push(0x81);
        histogram.push(0x01);
        histogram.extend_from_slice(&1.5f64.to_le_bytes());
        let label = [&[0x0a, 8][..], b"__name__", &[0x12, 1, b'h']].concat();
        let series = [
            &[0x0a, label.len() as u8][..],
            &label,
            &[0x22, histogram.len() as u8],
            &histogram,
        ]
        .concat();
        let request = [&[0x0a, series.len() as u8][..], &series].concat();
        let owned = crate::remote_write::decode_v1(&request).unwrap();
        let raw = decode_v1_raw(request).unwrap().to_batch().unwrap();
        assert!(same_batch(&raw, &owned));
        let h = &raw.series[0].histograms[0].histogram;
        let counts: Vec<f64> = h.positive.iter().map(|b| b.count).collect();
        assert_eq!(counts, [1.0, 2.0]);
        assert_eq!(&*h.custom_values, &[1.5]);
    }

    /// The label set the zero-copy decoder makes of a 1.0 request holding
    /// one series with `labels`, as sent.
    fn raw_labels_of(labels: &[(&str, &str)]) -> Labels {
        let request = crate::remote_write::v1::WriteRequest {
            timeseries: vec![crate::remote_write::v1::TimeSeries {
                labels: labels
                    .iter()
                    .map(|(name, value)| crate::remote_write::v1::Label {
                        name: (*name).into(),
                        value: (*value).into(),
                    })
                    .collect(),
                ..Default::default()
            }],
            metadata: Vec::new(),
        };
        let raw = decode_v1_raw(prost::Message::encode_to_vec(&request)).unwrap();
        let series = raw.series().next().unwrap();
        series.to_labels().unwrap()
    }

    #[test]
    fn a_name_given_twice_is_ordered_by_value_as_from_pairs_orders_it() {
        let pairs = [("__name__", "m"), ("a", "2"), ("a", "1")];
        assert_eq!(raw_labels_of(&pairs), Labels::from_pairs(pairs));
    }

    #[test]
    fn unsorted_labels_are_sorted_and_empty_values_dropped() {
        assert_eq!(
            raw_labels_of(&[("z", "1"), ("__name__", "m"), ("e", "")]),
            Labels::from_pairs([("__name__", "m"), ("z", "1")])
        );
    }
}

#[cfg(test)]
mod utf8_tests {
    use super::*;

    #[test]
    fn invalid_utf8_in_a_new_series_is_refused() {
        // WriteRequest{timeseries: [TimeSeries{labels: [Label{name: "__name__", value: 0xff}]}]}
        let label = [&[0x0a, 8][..], b"__name__", &[0x12, 1, 0xff]].concat();
        let series = [&[0x0a, label.len() as u8][..], &label].concat();
        let request = [&[0x0a, series.len() as u8][..], &series].concat();
        let raw = decode_v1_raw(request).unwrap();
        let err = raw.series().next().unwrap().to_labels().unwrap_err();
        assert!(err.to_string().contains("not valid UTF-8"), "{err}");
    }
}
