//! Prometheus remote write 1.0 and 2.0: the protobuf messages, their snappy
//! framing, and conversion to and from [`WriteBatch`].
//!
//! The message structs mirror `prometheus.WriteRequest` (1.0) and
//! `io.prometheus.write.v2.Request` (2.0) field for field; only the fields we act
//! on are typed. Native histograms (integer and float, exponential and custom
//! buckets) convert to [`FloatHistogram`]s. Exemplars are kept as raw bytes:
//! they are counted and refused with a clear error rather than decoded and
//! dropped.

use std::sync::Arc;

use prost::Message;

use crate::error::Error;
use crate::histogram::{Bucket, CounterResetHint, FloatHistogram, HistogramError, HistogramSample, Span};
use crate::labels::Labels;
use crate::sample::Sample;
use crate::seam::{MetricMetadata, MetricType, SeriesSamples, WriteBatch};

/// `Content-Type` of a 2.0 request (parameters aside).
pub const CONTENT_TYPE_V2_PROTO: &str = "io.prometheus.write.v2.Request";
/// `Content-Type` parameter value of a 1.0 request when spelled out.
pub const CONTENT_TYPE_V1_PROTO: &str = "prometheus.WriteRequest";
/// Response headers a 2.0 receiver sets.
pub const HEADER_SAMPLES_WRITTEN: &str = "X-Prometheus-Remote-Write-Samples-Written";
pub const HEADER_HISTOGRAMS_WRITTEN: &str = "X-Prometheus-Remote-Write-Histograms-Written";
pub const HEADER_EXEMPLARS_WRITTEN: &str = "X-Prometheus-Remote-Write-Exemplars-Written";

/// Remote write 1.0 messages (`package prometheus`).
pub mod v1 {
    /// `prometheus.WriteRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    /// `prometheus.TimeSeries`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        /// `repeated Exemplar`, left encoded.
        #[prost(bytes = "vec", repeated, tag = "3")]
        pub exemplars: Vec<Vec<u8>>,
        #[prost(message, repeated, tag = "4")]
        pub histograms: Vec<Histogram>,
    }

    /// `prometheus.Histogram`. Its wire form is the same as 2.0's
    /// `io.prometheus.write.v2.Histogram` up to field 16, so both versions use
    /// this struct; 2.0's `start_timestamp = 17` is skipped like every unknown
    /// field (start timestamps are not stored, for float samples neither).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(oneof = "histogram::Count", tags = "1, 2")]
        pub count: Option<histogram::Count>,
        #[prost(double, tag = "3")]
        pub sum: f64,
        #[prost(sint32, tag = "4")]
        pub schema: i32,
        #[prost(double, tag = "5")]
        pub zero_threshold: f64,
        #[prost(oneof = "histogram::ZeroCount", tags = "6, 7")]
        pub zero_count: Option<histogram::ZeroCount>,
        #[prost(message, repeated, tag = "8")]
        pub negative_spans: Vec<BucketSpan>,
        /// Integer histograms: each bucket's count minus the previous one's.
        #[prost(sint64, repeated, tag = "9")]
        pub negative_deltas: Vec<i64>,
        /// Float histograms: absolute counts.
        #[prost(double, repeated, tag = "10")]
        pub negative_counts: Vec<f64>,
        #[prost(message, repeated, tag = "11")]
        pub positive_spans: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "12")]
        pub positive_deltas: Vec<i64>,
        #[prost(double, repeated, tag = "13")]
        pub positive_counts: Vec<f64>,
        /// `ResetHint` enum: 0 unknown, 1 yes, 2 no, 3 gauge.
        #[prost(int32, tag = "14")]
        pub reset_hint: i32,
        #[prost(int64, tag = "15")]
        pub timestamp: i64,
        #[prost(double, repeated, tag = "16")]
        pub custom_values: Vec<f64>,
    }

    /// The `oneof`s of [`Histogram`].
    pub mod histogram {
        /// `oneof count`: an integer histogram sends `count_int`, a float one `count_float`.
        #[derive(Clone, Copy, PartialEq, prost::Oneof)]
        pub enum Count {
            #[prost(uint64, tag = "1")]
            CountInt(u64),
            #[prost(double, tag = "2")]
            CountFloat(f64),
        }

        /// `oneof zero_count`.
        #[derive(Clone, Copy, PartialEq, prost::Oneof)]
        pub enum ZeroCount {
            #[prost(uint64, tag = "6")]
            ZeroCountInt(u64),
            #[prost(double, tag = "7")]
            ZeroCountFloat(f64),
        }
    }

    /// `prometheus.BucketSpan`.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct BucketSpan {
        #[prost(sint32, tag = "1")]
        pub offset: i32,
        #[prost(uint32, tag = "2")]
        pub length: u32,
    }

    /// `prometheus.Label`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `prometheus.Sample`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    /// `prometheus.MetricMetadata`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricMetadata {
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        #[prost(string, tag = "4")]
        pub help: String,
        #[prost(string, tag = "5")]
        pub unit: String,
    }
}

/// Remote write 2.0 messages (`package io.prometheus.write.v2`).
pub mod v2 {
    /// `io.prometheus.write.v2.Histogram` and `BucketSpan`: wire-compatible with 1.0's.
    pub use super::v1::{BucketSpan, Histogram, histogram};

    /// `io.prometheus.write.v2.Request`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(string, repeated, tag = "4")]
        pub symbols: Vec<String>,
        #[prost(message, repeated, tag = "5")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// `io.prometheus.write.v2.TimeSeries`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub histograms: Vec<Histogram>,
        /// `repeated Exemplar`, left encoded.
        #[prost(bytes = "vec", repeated, tag = "4")]
        pub exemplars: Vec<Vec<u8>>,
        #[prost(message, optional, tag = "5")]
        pub metadata: Option<Metadata>,
    }

    /// `io.prometheus.write.v2.Sample`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
        #[prost(int64, tag = "3")]
        pub start_timestamp: i64,
    }

    /// `io.prometheus.write.v2.Metadata`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metadata {
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(uint32, tag = "3")]
        pub help_ref: u32,
        #[prost(uint32, tag = "4")]
        pub unit_ref: u32,
    }
}

/// Which remote write protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V1,
    V2,
}

impl Protocol {
    /// Picks the protocol from a `Content-Type` header: `application/x-protobuf`
    /// alone or with `proto=prometheus.WriteRequest` is 1.0, with
    /// `proto=io.prometheus.write.v2.Request` it is 2.0. Anything else is `None`
    /// (answered with 415).
    pub fn from_content_type(content_type: Option<&str>) -> Option<Protocol> {
        let Some(content_type) = content_type else {
            // Old senders omit the header; they speak 1.0.
            return Some(Protocol::V1);
        };
        let mut parts = content_type.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or_default();
        if !media_type.eq_ignore_ascii_case("application/x-protobuf") {
            return None;
        }
        let mut protocol = Protocol::V1;
        for parameter in parts {
            let Some((key, value)) = parameter.split_once('=') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("proto") {
                protocol = match value.trim().trim_matches('"') {
                    CONTENT_TYPE_V1_PROTO => Protocol::V1,
                    CONTENT_TYPE_V2_PROTO => Protocol::V2,
                    _ => return None,
                };
            }
        }
        Some(protocol)
    }
}

/// Limits applied while decoding, before anything is allocated per series.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest accepted body after snappy decompression.
    pub max_decompressed_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_decompressed_bytes: 256 << 20,
        }
    }
}

/// Decompresses a snappy block-format body, refusing oversized payloads before
/// allocating for them.
pub fn decompress(body: &[u8], limits: DecodeLimits) -> Result<Vec<u8>, Error> {
    let length = snap::raw::decompress_len(body).map_err(|e| Error::Snappy(e.to_string()))?;
    // No snappy op expands more than 64 bytes from 3 (a 2-byte-offset copy), so a
    // header promising more than ~22x the body is a lie: refuse it before allocating.
    if length > body.len().saturating_mul(22).saturating_add(64) {
        return Err(Error::Snappy(format!(
            "header claims {length} decompressed bytes, impossible for a {}-byte body",
            body.len()
        )));
    }
    if length > limits.max_decompressed_bytes {
        return Err(Error::Invalid(format!(
            "decompressed body of {length} bytes exceeds the limit of {} bytes",
            limits.max_decompressed_bytes
        )));
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| Error::Snappy(e.to_string()))
}

/// Decodes a snappy-compressed request of either protocol.
pub fn decode(body: &[u8], protocol: Protocol, limits: DecodeLimits) -> Result<WriteBatch, Error> {
    let raw = decompress(body, limits)?;
    match protocol {
        Protocol::V1 => decode_v1(&raw),
        Protocol::V2 => decode_v2(&raw),
    }
}

/// The error for a histogram message that does not describe a histogram.
pub(crate) fn invalid_histogram(series: &dyn std::fmt::Display, timestamp: i64, error: HistogramError) -> Error {
    Error::Invalid(format!("series {series}: native histogram at {timestamp}: {error}"))
}

/// Converts a wire histogram to absolute float counts. Integer and float
/// histograms are told apart as Prometheus does, by the kind of `count`
/// (absent means integer); bucket lists of the other kind must be empty.
pub fn histogram_from_proto(message: &v1::Histogram) -> Result<HistogramSample, HistogramError> {
    use v1::histogram::{Count, ZeroCount};
    let float = matches!(message.count, Some(Count::CountFloat(_)));
    let count = match message.count {
        Some(Count::CountInt(count)) => count as f64,
        Some(Count::CountFloat(count)) => count,
        None => 0.0,
    };
    // Either form of the zero count is exact; take whichever was sent.
    let zero_count = match message.zero_count {
        Some(ZeroCount::ZeroCountInt(count)) => count as f64,
        Some(ZeroCount::ZeroCountFloat(count)) => count,
        None => 0.0,
    };
    let buckets = |spans: &[v1::BucketSpan], deltas: &[i64], counts: &[f64]| -> Result<Vec<Bucket>, HistogramError> {
        let spans: Vec<Span> = spans
            .iter()
            .map(|s| Span {
                offset: s.offset,
                length: s.length,
            })
            .collect();
        if float {
            if !deltas.is_empty() {
                return Err(HistogramError::MixedBucketKinds);
            }
            FloatHistogram::buckets_from_spans(&spans, counts)
        } else {
            if !counts.is_empty() {
                return Err(HistogramError::MixedBucketKinds);
            }
            FloatHistogram::buckets_from_deltas(&spans, deltas)
        }
    };
    let positive = buckets(
        &message.positive_spans,
        &message.positive_deltas,
        &message.positive_counts,
    )?;
    let negative = buckets(
        &message.negative_spans,
        &message.negative_deltas,
        &message.negative_counts,
    )?;
    Ok(HistogramSample {
        timestamp: message.timestamp,
        histogram: FloatHistogram {
            counter_reset_hint: CounterResetHint::from_proto(message.reset_hint),
            schema: message.schema,
            zero_threshold: message.zero_threshold,
            zero_count,
            count,
            sum: message.sum,
            positive,
            negative,
            custom_values: Arc::from(message.custom_values.as_slice()),
        },
    })
}

/// Whether `count` travels exactly as an integer count.
fn is_integer_count(count: f64) -> bool {
    const MAX_EXACT: f64 = (1u64 << 53) as f64;
    count.is_sign_positive() && count.fract() == 0.0 && count <= MAX_EXACT
}

/// The wire form of a histogram sample: integer (deltas) when every count is
/// an exact non-negative integer, as Prometheus sends counter histograms,
/// float counts otherwise.
pub fn histogram_to_proto(sample: &HistogramSample) -> v1::Histogram {
    use v1::histogram::{Count, ZeroCount};
    let histogram = &sample.histogram;
    let integer = [histogram.count, histogram.zero_count]
        .into_iter()
        .chain(histogram.positive.iter().map(|b| b.count))
        .chain(histogram.negative.iter().map(|b| b.count))
        .all(is_integer_count);
    let spans = |buckets: &[Bucket]| -> (Vec<v1::BucketSpan>, Vec<f64>) {
        let (spans, counts) = FloatHistogram::spans_of(buckets);
        let spans = spans
            .into_iter()
            .map(|s| v1::BucketSpan {
                offset: s.offset,
                length: s.length,
            })
            .collect();
        (spans, counts)
    };
    let deltas = |counts: &[f64]| -> Vec<i64> {
        let mut previous = 0i64;
        counts
            .iter()
            .map(|&c| {
                let current = c as i64;
                let delta = current.wrapping_sub(previous);
                previous = current;
                delta
            })
            .collect()
    };
    let (positive_spans, positive) = spans(&histogram.positive);
    let (negative_spans, negative) = spans(&histogram.negative);
    let mut message = v1::Histogram {
        sum: histogram.sum,
        schema: histogram.schema,
        zero_threshold: histogram.zero_threshold,
        negative_spans,
        positive_spans,
        reset_hint: histogram.counter_reset_hint.to_proto(),
        timestamp: sample.timestamp,
        custom_values: histogram.custom_values.to_vec(),
        ..v1::Histogram::default()
    };
    if integer {
        message.count = Some(Count::CountInt(histogram.count as u64));
        message.zero_count = Some(ZeroCount::ZeroCountInt(histogram.zero_count as u64));
        message.positive_deltas = deltas(&positive);
        message.negative_deltas = deltas(&negative);
    } else {
        message.count = Some(Count::CountFloat(histogram.count));
        message.zero_count = Some(ZeroCount::ZeroCountFloat(histogram.zero_count));
        message.positive_counts = positive;
        message.negative_counts = negative;
    }
    message
}

/// Converts a series' wire histograms, naming the series on error.
fn to_histograms(histograms: &[v1::Histogram], labels: &Labels) -> Result<Vec<HistogramSample>, Error> {
    let mut out = Vec::with_capacity(histograms.len());
    for message in histograms {
        let sample = histogram_from_proto(message).map_err(|e| invalid_histogram(labels, message.timestamp, e))?;
        out.push(sample);
    }
    Ok(out)
}

pub(crate) fn unsupported(kind: &str, count: usize, labels: &Labels) -> Error {
    Error::Invalid(format!(
        "series {labels} carries {count} {kind}, which this server does not store yet; \
         disable sending them (send_exemplars) for this remote write"
    ))
}

fn to_samples<S>(samples: &[S], pick: impl Fn(&S) -> (i64, f64)) -> Vec<Sample> {
    samples
        .iter()
        .map(|s| {
            let (timestamp, value) = pick(s);
            Sample::new(timestamp, value)
        })
        .collect()
}

/// Decodes an uncompressed `prometheus.WriteRequest`.
pub fn decode_v1(raw: &[u8]) -> Result<WriteBatch, Error> {
    let request = v1::WriteRequest::decode(raw).map_err(|e| Error::Protobuf(e.to_string()))?;
    let mut batch = WriteBatch::default();
    batch.series.reserve(request.timeseries.len());
    for series in request.timeseries {
        let labels = Labels::from_pairs(series.labels.into_iter().map(|l| (l.name, l.value)));
        if !series.exemplars.is_empty() {
            return Err(unsupported("exemplars", series.exemplars.len(), &labels));
        }
        let histograms = to_histograms(&series.histograms, &labels)?;
        let samples = to_samples(&series.samples, |s| (s.timestamp, s.value));
        batch.series.push(SeriesSamples {
            labels,
            samples,
            histograms,
            start_timestamps: Default::default(),
        });
    }
    for metadata in request.metadata {
        batch.metadata.push(MetricMetadata {
            metric_family_name: metadata.metric_family_name,
            metric_type: MetricType::from_proto(metadata.r#type),
            help: metadata.help,
            unit: metadata.unit,
        });
    }
    Ok(batch)
}

fn symbol(symbols: &[String], reference: u32) -> Result<&str, Error> {
    symbols.get(reference as usize).map(String::as_str).ok_or_else(|| {
        Error::Invalid(format!(
            "symbol reference {reference} is out of range: the symbol table has {} entries",
            symbols.len()
        ))
    })
}

/// Decodes an uncompressed `io.prometheus.write.v2.Request`.
pub fn decode_v2(raw: &[u8]) -> Result<WriteBatch, Error> {
    let request = v2::Request::decode(raw).map_err(|e| Error::Protobuf(e.to_string()))?;
    let symbols = &request.symbols;
    if !request.timeseries.is_empty() && symbols.first().is_none_or(|s| !s.is_empty()) {
        return Err(Error::Invalid(
            "the first entry of the symbol table must be the empty string".to_string(),
        ));
    }
    let mut batch = WriteBatch::default();
    batch.series.reserve(request.timeseries.len());
    for series in &request.timeseries {
        if series.labels_refs.len() % 2 != 0 {
            return Err(Error::Invalid(format!(
                "labels_refs of a series has odd length {}: it must hold name/value pairs",
                series.labels_refs.len()
            )));
        }
        let mut pairs = Vec::with_capacity(series.labels_refs.len() / 2);
        for pair in series.labels_refs.chunks_exact(2) {
            pairs.push((symbol(symbols, pair[0])?, symbol(symbols, pair[1])?));
        }
        let labels = Labels::from_pairs(pairs);
        if !series.exemplars.is_empty() {
            return Err(unsupported("exemplars", series.exemplars.len(), &labels));
        }
        if let Some(metadata) = &series.metadata {
            let metric_type = MetricType::from_proto(metadata.r#type);
            let help = symbol(symbols, metadata.help_ref)?;
            let unit = symbol(symbols, metadata.unit_ref)?;
            let has_metadata = metric_type != MetricType::Unknown || !help.is_empty() || !unit.is_empty();
            if let (true, Some(name)) = (has_metadata, labels.metric_name()) {
                batch.metadata.push(MetricMetadata {
                    metric_family_name: name.to_string(),
                    metric_type,
                    help: help.to_string(),
                    unit: unit.to_string(),
                });
            }
        }
        let histograms = to_histograms(&series.histograms, &labels)?;
        let samples = to_samples(&series.samples, |s| (s.timestamp, s.value));
        batch.series.push(SeriesSamples {
            labels,
            samples,
            histograms,
            start_timestamps: Default::default(),
        });
    }
    Ok(batch)
}

/// Encodes a batch as a snappy-compressed 1.0 request (the load generator and
/// tests send these; the collector will too).
pub fn encode_v1(batch: &WriteBatch) -> Vec<u8> {
    let request = v1::WriteRequest {
        timeseries: batch
            .series
            .iter()
            .map(|series| v1::TimeSeries {
                labels: series
                    .labels
                    .iter()
                    .map(|l| v1::Label {
                        name: l.name.clone(),
                        value: l.value.clone(),
                    })
                    .collect(),
                samples: series
                    .samples
                    .iter()
                    .map(|s| v1::Sample {
                        value: s.value,
                        timestamp: s.timestamp,
                    })
                    .collect(),
                exemplars: Vec::new(),
                histograms: series.histograms.iter().map(histogram_to_proto).collect(),
            })
            .collect(),
        metadata: batch
            .metadata
            .iter()
            .map(|m| v1::MetricMetadata {
                r#type: m.metric_type.to_proto(),
                metric_family_name: m.metric_family_name.clone(),
                help: m.help.clone(),
                unit: m.unit.clone(),
            })
            .collect(),
    };
    compress(&request.encode_to_vec())
}

/// Encodes a batch as a snappy-compressed 2.0 request with an interned symbol table.
pub fn encode_v2(batch: &WriteBatch) -> Vec<u8> {
    // The table must start with "" even when no series has a label (the fuzzer
    // found a series without labels encoding to an empty, invalid table).
    let mut symbols = SymbolTable::default();
    symbols.intern("");
    let mut timeseries = Vec::with_capacity(batch.series.len());
    for series in &batch.series {
        let mut labels_refs = Vec::with_capacity(series.labels.len() * 2);
        for label in &series.labels {
            labels_refs.push(symbols.intern(&label.name));
            labels_refs.push(symbols.intern(&label.value));
        }
        let metadata = series.labels.metric_name().and_then(|name| {
            batch
                .metadata
                .iter()
                .find(|m| m.metric_family_name == name)
                .map(|m| v2::Metadata {
                    r#type: m.metric_type.to_proto(),
                    help_ref: symbols.intern(&m.help),
                    unit_ref: symbols.intern(&m.unit),
                })
        });
        timeseries.push(v2::TimeSeries {
            labels_refs,
            samples: series
                .samples
                .iter()
                .map(|s| v2::Sample {
                    value: s.value,
                    timestamp: s.timestamp,
                    start_timestamp: 0,
                })
                .collect(),
            // The spec has a series send samples or histograms; a batch series
            // holding both goes out as one message, which receivers (we and
            // Prometheus) read in full.
            histograms: series.histograms.iter().map(histogram_to_proto).collect(),
            exemplars: Vec::new(),
            metadata,
        });
    }
    let request = v2::Request {
        symbols: symbols.symbols,
        timeseries,
    };
    compress(&request.encode_to_vec())
}

fn compress(raw: &[u8]) -> Vec<u8> {
    // Compressing an in-memory buffer cannot fail except on absurd sizes (> 4 GiB).
    snap::raw::Encoder::new().compress_vec(raw).unwrap_or_default()
}

#[derive(Default)]
struct SymbolTable {
    symbols: Vec<String>,
    index: std::collections::HashMap<String, u32>,
}

impl SymbolTable {
    fn intern(&mut self, symbol: &str) -> u32 {
        if self.symbols.is_empty() {
            self.symbols.push(String::new());
            self.index.insert(String::new(), 0);
        }
        if let Some(&reference) = self.index.get(symbol) {
            return reference;
        }
        let reference = self.symbols.len() as u32;
        self.symbols.push(symbol.to_string());
        self.index.insert(symbol.to_string(), reference);
        reference
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Histograms of every shape the wire carries: exponential or custom
    /// buckets, integer or fractional counts (so both wire forms are sent),
    /// any reset hint. Not necessarily valid: decoding does not validate.
    pub(crate) fn histogram_strategy() -> impl Strategy<Value = HistogramSample> {
        let count = || {
            prop_oneof![
                (0u64..1_000_000).prop_map(|c| c as f64),
                (0u64..1 << 53).prop_map(|c| c as f64),
                any::<f64>(),
            ]
        };
        let buckets = move || {
            proptest::collection::btree_map(-50i32..50, count(), 0..8).prop_map(|m| {
                m.into_iter()
                    .map(|(index, count)| Bucket { index, count })
                    .collect::<Vec<_>>()
            })
        };
        (
            (
                any::<i64>(),
                prop_oneof![-4i32..=8, Just(crate::histogram::CUSTOM_BUCKETS_SCHEMA)],
                0i32..4,
            ),
            (count(), count(), any::<f64>(), prop_oneof![Just(0.0), any::<f64>()]),
            (buckets(), buckets()),
            proptest::collection::vec(-100.0f64..100.0, 0..6),
            any::<bool>(),
        )
            .prop_map(
                |(
                    (timestamp, schema, hint),
                    (count, zero_count, sum, zero_threshold),
                    (positive, negative),
                    bounds,
                    integer,
                )| {
                    // Whole-number counts for the integer wire form.
                    let round = |c: f64| {
                        if integer && c.is_finite() {
                            c.abs().round().min((1u64 << 53) as f64)
                        } else {
                            c
                        }
                    };
                    HistogramSample {
                        timestamp,
                        histogram: FloatHistogram {
                            counter_reset_hint: CounterResetHint::from_proto(hint),
                            schema,
                            zero_threshold,
                            zero_count: round(zero_count),
                            count: round(count),
                            sum,
                            positive: positive
                                .into_iter()
                                .map(|b: Bucket| Bucket {
                                    count: round(b.count),
                                    ..b
                                })
                                .collect(),
                            negative: negative
                                .into_iter()
                                .map(|b: Bucket| Bucket {
                                    count: round(b.count),
                                    ..b
                                })
                                .collect(),
                            custom_values: Arc::from(bounds),
                        },
                    }
                },
            )
    }

    fn batch_strategy() -> impl Strategy<Value = WriteBatch> {
        let series = (
            proptest::collection::btree_map("[a-z_]{1,8}", "[a-zA-Z0-9 ]{1,8}", 0..5),
            "[a-z_]{1,10}",
            proptest::collection::vec((any::<i64>(), any::<f64>()), 0..6),
            proptest::collection::vec(histogram_strategy(), 0..3),
        )
            .prop_map(|(pairs, name, samples, histograms)| SeriesSamples {
                labels: Labels::from_pairs(pairs.into_iter().chain([("__name__".to_string(), name)])),
                samples: samples.into_iter().map(|(t, v)| Sample::new(t, v)).collect(),
                histograms,
                start_timestamps: Default::default(),
            });
        proptest::collection::vec(series, 0..6).prop_map(|series| WriteBatch {
            series,
            metadata: Vec::new(),
        })
    }

    /// Same series, labels, samples (bitwise; -0.0 may come back as 0.0, see
    /// below) and histograms.
    pub(crate) fn same_batch(a: &WriteBatch, b: &WriteBatch) -> bool {
        a.series.len() == b.series.len()
            && a.series.iter().zip(&b.series).all(|(x, y)| {
                x.labels == y.labels
                    && x.histograms.len() == y.histograms.len()
                    && x.histograms
                        .iter()
                        .zip(&y.histograms)
                        .all(|(h, g)| same_histogram(h, g))
                    && x.samples.len() == y.samples.len()
                    && x.samples.iter().zip(&y.samples).all(|(s, t)| {
                        // prost omits a double equal to 0.0, so our encoder turns -0.0
                        // into 0.0; decoding keeps whatever the sender wrote.
                        s.same_as(t) || (s.timestamp == t.timestamp && s.value == 0.0 && t.value == 0.0)
                    })
            })
    }

    /// prost omits a double equal to 0.0 outside `oneof`s and repeated
    /// fields, so -0.0 there comes back as 0.0.
    fn same_double(sent: f64, got: f64) -> bool {
        sent.to_bits() == got.to_bits() || (sent == 0.0 && got == 0.0)
    }

    /// Same histogram, every count bit for bit (sum and zero threshold up to the sign of zero).
    pub(crate) fn same_histogram(a: &HistogramSample, b: &HistogramSample) -> bool {
        let (x, y) = (&a.histogram, &b.histogram);
        let same_buckets = |p: &[Bucket], q: &[Bucket]| {
            p.len() == q.len()
                && p.iter()
                    .zip(q)
                    .all(|(m, n)| m.index == n.index && m.count.to_bits() == n.count.to_bits())
        };
        a.timestamp == b.timestamp
            && x.counter_reset_hint == y.counter_reset_hint
            && x.schema == y.schema
            && same_double(x.zero_threshold, y.zero_threshold)
            && x.zero_count.to_bits() == y.zero_count.to_bits()
            && x.count.to_bits() == y.count.to_bits()
            && same_double(x.sum, y.sum)
            && same_buckets(&x.positive, &y.positive)
            && same_buckets(&x.negative, &y.negative)
            && x.custom_values.len() == y.custom_values.len()
            && x.custom_values
                .iter()
                .zip(y.custom_values.iter())
                .all(|(m, n)| m.to_bits() == n.to_bits())
    }

    proptest! {
        // 1.0 and 2.0 carry the same samples for the same batch.
        #[test]
        fn v1_and_v2_decode_to_the_same_batch(batch in batch_strategy()) {
            let limits = DecodeLimits::default();
            let from_v1 = decode(&encode_v1(&batch), Protocol::V1, limits).unwrap();
            let from_v2 = decode(&encode_v2(&batch), Protocol::V2, limits).unwrap();
            prop_assert!(same_batch(&from_v1, &batch));
            prop_assert!(same_batch(&from_v2, &batch));
        }

        // Arbitrary bytes never panic either decoder.
        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_v1(&bytes);
            let _ = decode_v2(&bytes);
            let _ = decode(&bytes, Protocol::V1, DecodeLimits::default());
        }
    }

    #[test]
    fn metadata_round_trips_through_both_protocols() {
        let batch = WriteBatch {
            series: vec![SeriesSamples {
                labels: Labels::from_pairs([("__name__", "http_requests_total")]),
                samples: vec![Sample::new(1000, 1.0)],
                histograms: Vec::new(),
                start_timestamps: Default::default(),
            }],
            metadata: vec![MetricMetadata {
                metric_family_name: "http_requests_total".into(),
                metric_type: MetricType::Counter,
                help: "Requests served.".into(),
                unit: String::new(),
            }],
        };
        for (body, protocol) in [(encode_v1(&batch), Protocol::V1), (encode_v2(&batch), Protocol::V2)] {
            let decoded = decode(&body, protocol, DecodeLimits::default()).unwrap();
            assert_eq!(decoded.metadata, batch.metadata);
        }
    }

    #[test]
    fn impossible_snappy_lengths_are_refused_before_allocating() {
        // A varint header claiming 128 MiB, then nothing.
        let body = [0x80, 0x80, 0x80, 0x40];
        let err = decompress(&body, DecodeLimits::default()).unwrap_err();
        assert!(err.to_string().contains("impossible"), "{err}");
        // Highly compressible data still decodes.
        let zeros = vec![0u8; 1 << 20];
        let compressed = compress(&zeros);
        assert_eq!(decompress(&compressed, DecodeLimits::default()).unwrap(), zeros);
    }

    #[test]
    fn picks_protocol_from_content_type() {
        assert_eq!(Protocol::from_content_type(None), Some(Protocol::V1));
        assert_eq!(
            Protocol::from_content_type(Some("application/x-protobuf")),
            Some(Protocol::V1)
        );
        assert_eq!(
            Protocol::from_content_type(Some("application/x-protobuf;proto=io.prometheus.write.v2.Request")),
            Some(Protocol::V2)
        );
        assert_eq!(Protocol::from_content_type(Some("application/json")), None);
        assert_eq!(
            Protocol::from_content_type(Some("application/x-protobuf;proto=foo.Bar")),
            None
        );
    }

    #[test]
    fn v2_symbol_table_starts_empty_string_even_without_labels() {
        let batch = WriteBatch {
            series: vec![SeriesSamples::default()],
            metadata: Vec::new(),
        };
        let decoded = decode(&encode_v2(&batch), Protocol::V2, DecodeLimits::default()).unwrap();
        assert_eq!(decoded.series.len(), 1);
    }

    #[test]
    fn v2_rejects_bad_symbol_references() {
        let request = v2::Request {
            symbols: vec![String::new(), "__name__".into()],
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 7],
                ..Default::default()
            }],
        };
        let err = decode_v2(&request.encode_to_vec()).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }

    #[test]
    fn exemplars_are_refused_not_dropped() {
        let request = v1::WriteRequest {
            timeseries: vec![v1::TimeSeries {
                labels: vec![v1::Label {
                    name: "__name__".into(),
                    value: "e".into(),
                }],
                exemplars: vec![vec![8, 1]],
                ..Default::default()
            }],
            metadata: Vec::new(),
        };
        let err = decode_v1(&request.encode_to_vec()).unwrap_err();
        assert!(err.to_string().contains("exemplars"), "{err}");
    }

    fn histogram_series(histograms: Vec<v1::Histogram>) -> v1::WriteRequest {
        v1::WriteRequest {
            timeseries: vec![v1::TimeSeries {
                labels: vec![v1::Label {
                    name: "__name__".into(),
                    value: "h".into(),
                }],
                histograms,
                ..Default::default()
            }],
            metadata: Vec::new(),
        }
    }

    #[test]
    fn integer_histograms_become_absolute_float_counts() {
        use v1::histogram::{Count, ZeroCount};
        let message = v1::Histogram {
            count: Some(Count::CountInt(12)),
            zero_count: Some(ZeroCount::ZeroCountInt(2)),
            sum: 18.4,
            schema: 1,
            zero_threshold: 0.001,
            positive_spans: vec![
                v1::BucketSpan { offset: 0, length: 2 },
                v1::BucketSpan { offset: 1, length: 2 },
            ],
            positive_deltas: vec![1, 1, -1, 0],
            negative_spans: vec![v1::BucketSpan { offset: -1, length: 1 }],
            negative_deltas: vec![3],
            reset_hint: 2,
            timestamp: 1000,
            ..Default::default()
        };
        let batch = decode_v1(&histogram_series(vec![message]).encode_to_vec()).unwrap();
        let sample = &batch.series[0].histograms[0];
        assert_eq!(sample.timestamp, 1000);
        let h = &sample.histogram;
        assert_eq!((h.count, h.zero_count, h.sum, h.schema), (12.0, 2.0, 18.4, 1));
        assert_eq!(h.counter_reset_hint, CounterResetHint::NotCounterReset);
        let positive: Vec<(i32, f64)> = h.positive.iter().map(|b| (b.index, b.count)).collect();
        assert_eq!(positive, [(0, 1.0), (1, 2.0), (3, 1.0), (4, 1.0)]);
        assert_eq!(h.negative, [Bucket { index: -1, count: 3.0 }]);
        assert_eq!(h.validate(), Ok(()));
    }

    #[test]
    fn float_histograms_with_custom_buckets_decode_in_both_protocols() {
        use v1::histogram::Count;
        let message = v1::Histogram {
            count: Some(Count::CountFloat(3.5)),
            sum: 7.25,
            schema: crate::histogram::CUSTOM_BUCKETS_SCHEMA,
            positive_spans: vec![v1::BucketSpan { offset: 1, length: 2 }],
            positive_counts: vec![1.5, 2.0],
            custom_values: vec![0.1, 1.0, 10.0],
            timestamp: 2000,
            ..Default::default()
        };
        let v1_body = histogram_series(vec![message.clone()]).encode_to_vec();
        let v2_body = v2::Request {
            symbols: vec![String::new(), "__name__".into(), "h".into()],
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 2],
                histograms: vec![message],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        for batch in [decode_v1(&v1_body).unwrap(), decode_v2(&v2_body).unwrap()] {
            let h = &batch.series[0].histograms[0].histogram;
            assert_eq!(h.count, 3.5);
            assert_eq!(&*h.custom_values, &[0.1, 1.0, 10.0]);
            let positive: Vec<(i32, f64)> = h.positive.iter().map(|b| (b.index, b.count)).collect();
            assert_eq!(positive, [(1, 1.5), (2, 2.0)]);
            assert_eq!(h.validate(), Ok(()));
        }
    }

    #[test]
    fn malformed_histograms_name_the_series_and_the_reason() {
        use v1::histogram::Count;
        let mismatch = v1::Histogram {
            count: Some(Count::CountInt(3)),
            positive_spans: vec![v1::BucketSpan { offset: 0, length: 3 }],
            positive_deltas: vec![1, 1],
            timestamp: 5,
            ..Default::default()
        };
        let err = decode_v1(&histogram_series(vec![mismatch]).encode_to_vec()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("series h{}") || message.contains("series h"),
            "{message}"
        );
        assert!(message.contains("at 5") && message.contains("3 buckets"), "{message}");
        let mixed = v1::Histogram {
            count: Some(Count::CountFloat(3.0)),
            positive_spans: vec![v1::BucketSpan { offset: 0, length: 1 }],
            positive_deltas: vec![1],
            positive_counts: vec![1.0],
            ..Default::default()
        };
        let err = decode_v1(&histogram_series(vec![mixed]).encode_to_vec()).unwrap_err();
        assert!(err.to_string().contains("mixes integer"), "{err}");
    }

    proptest! {
        // Every histogram survives our encoder and decoder in either wire form.
        #[test]
        fn histograms_round_trip_through_the_wire_form(sample in histogram_strategy()) {
            let back = histogram_from_proto(&histogram_to_proto(&sample)).unwrap();
            prop_assert!(same_histogram(&sample, &back), "{:?} != {:?}", sample, back);
        }
    }
}
