//! One exact binary form of a native histogram, shared by the WAL, the head
//! and blocks, so that a histogram is encoded (and tested) one way only.
//!
//! Layout (varints are LEB128, signed ones zigzagged):
//! `flags: u8 | schema: varint | zero_threshold: f64 | sum: f64 | count | zero_count
//!  | positive buckets | negative buckets | [custom values]`.
//! Flags: bits 0–1 the counter reset hint, bit 2 "integer counts", bit 3
//! "custom values follow". Counter histograms — nearly all of them — have
//! whole-number counts: then counts are varints and bucket counts deltas from
//! the previous bucket, a byte or two each instead of eight. Otherwise every
//! count is its IEEE-754 bit pattern. Buckets are `n: uvarint`, then each
//! index as a varint delta from the previous one (the first from 0): signed,
//! so that even a histogram breaking the ascending-index invariant (a
//! staleness marker is stored unvalidated) round-trips.
//! Floats are stored as bit patterns, so NaN payloads (the staleness marker's
//! sum) survive.

use std::sync::Arc;

use tidewatch_model::TimestampMs;
use tidewatch_model::histogram::{Bucket, CounterResetHint, FloatHistogram, HistogramSample};
use tidewatch_model::seam::TimeRange;

const FLAG_HINT_MASK: u8 = 0b11;
const FLAG_INTEGER: u8 = 0b100;
const FLAG_CUSTOM_VALUES: u8 = 0b1000;
/// Below this every whole f64 is exact, so integer counts round-trip.
const MAX_EXACT_INTEGER: f64 = (1u64 << 53) as f64;

/// The fewest bytes an encoded histogram takes (integer form, no buckets).
pub(crate) const MIN_ENCODED_LEN: usize = 1 + 1 + 8 + 8 + 1 + 1 + 1 + 1;

fn hint_to_bits(hint: CounterResetHint) -> u8 {
    hint.to_proto() as u8 & FLAG_HINT_MASK
}

fn is_integer_count(count: f64) -> bool {
    count.is_sign_positive() && count.fract() == 0.0 && count <= MAX_EXACT_INTEGER
}

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(crate) fn put_varint(out: &mut Vec<u8>, value: i64) {
    put_uvarint(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// Appends `histogram`; its custom bounds only when `with_custom_values`
/// (the head keeps them apart, shared between samples).
pub(crate) fn encode(histogram: &FloatHistogram, with_custom_values: bool, out: &mut Vec<u8>) {
    let integer = [histogram.count, histogram.zero_count]
        .into_iter()
        .chain(histogram.positive.iter().map(|b| b.count))
        .chain(histogram.negative.iter().map(|b| b.count))
        .all(is_integer_count);
    let custom = with_custom_values && !histogram.custom_values.is_empty();
    let mut flags = hint_to_bits(histogram.counter_reset_hint);
    if integer {
        flags |= FLAG_INTEGER;
    }
    if custom {
        flags |= FLAG_CUSTOM_VALUES;
    }
    out.push(flags);
    put_varint(out, i64::from(histogram.schema));
    out.extend_from_slice(&histogram.zero_threshold.to_bits().to_le_bytes());
    out.extend_from_slice(&histogram.sum.to_bits().to_le_bytes());
    for count in [histogram.count, histogram.zero_count] {
        if integer {
            put_uvarint(out, count as u64);
        } else {
            out.extend_from_slice(&count.to_bits().to_le_bytes());
        }
    }
    for buckets in [&histogram.positive, &histogram.negative] {
        put_uvarint(out, buckets.len() as u64);
        let mut previous: Option<(i32, i64)> = None;
        for bucket in buckets {
            let previous_index = previous.map_or(0, |(index, _)| i64::from(index));
            put_varint(out, i64::from(bucket.index) - previous_index);
            let count = bucket.count as i64;
            if integer {
                put_varint(out, count - previous.map_or(0, |(_, c)| c));
            } else {
                out.extend_from_slice(&bucket.count.to_bits().to_le_bytes());
            }
            previous = Some((bucket.index, count));
        }
    }
    if custom {
        put_uvarint(out, histogram.custom_values.len() as u64);
        for bound in histogram.custom_values.iter() {
            out.extend_from_slice(&bound.to_bits().to_le_bytes());
        }
    }
}

/// Bounds-checked reads over an encoded buffer; `None` on anything malformed.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
}

impl Reader<'_> {
    pub(crate) fn uvarint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }

    pub(crate) fn varint(&mut self) -> Option<i64> {
        let raw = self.uvarint()?;
        Some(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    pub(crate) fn f64(&mut self) -> Option<f64> {
        let (head, rest) = self.bytes.split_at_checked(8)?;
        self.bytes = rest;
        Some(f64::from_bits(u64::from_le_bytes(head.try_into().ok()?)))
    }

    fn byte(&mut self) -> Option<u8> {
        let (&byte, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(byte)
    }

    /// Reads one histogram written by [`encode`].
    pub(crate) fn histogram(&mut self) -> Option<FloatHistogram> {
        let flags = self.byte()?;
        if flags & !(FLAG_HINT_MASK | FLAG_INTEGER | FLAG_CUSTOM_VALUES) != 0 {
            return None;
        }
        let integer = flags & FLAG_INTEGER != 0;
        let schema = i32::try_from(self.varint()?).ok()?;
        let zero_threshold = self.f64()?;
        let sum = self.f64()?;
        let mut counts = [0.0; 2];
        for count in &mut counts {
            *count = if integer { self.uvarint()? as f64 } else { self.f64()? };
        }
        let mut sides = [Vec::new(), Vec::new()];
        for side in &mut sides {
            let len = usize::try_from(self.uvarint()?).ok()?;
            // Every bucket takes at least two bytes: a larger count is corruption.
            if len > self.bytes.len() / 2 {
                return None;
            }
            side.reserve_exact(len);
            let mut previous: Option<(i64, i64)> = None;
            for _ in 0..len {
                let index = previous.map_or(0, |(index, _)| index).checked_add(self.varint()?)?;
                let index32 = i32::try_from(index).ok()?;
                let (count, raw) = if integer {
                    let raw = previous.map_or(0, |(_, c)| c).wrapping_add(self.varint()?);
                    (raw as f64, raw)
                } else {
                    (self.f64()?, 0)
                };
                side.push(Bucket { index: index32, count });
                previous = Some((index, raw));
            }
        }
        let custom_values: Arc<[f64]> = if flags & FLAG_CUSTOM_VALUES != 0 {
            let len = usize::try_from(self.uvarint()?).ok()?;
            if len > self.bytes.len() / 8 {
                return None;
            }
            let mut bounds = Vec::with_capacity(len);
            for _ in 0..len {
                bounds.push(self.f64()?);
            }
            Arc::from(bounds)
        } else {
            Arc::from(Vec::new())
        };
        let [positive, negative] = sides;
        Some(FloatHistogram {
            counter_reset_hint: CounterResetHint::from_proto(i32::from(flags & FLAG_HINT_MASK)),
            schema,
            zero_threshold,
            zero_count: counts[1],
            count: counts[0],
            sum,
            positive,
            negative,
            custom_values,
        })
    }
}

/// Decodes a buffer holding exactly one histogram.
pub(crate) fn decode(bytes: &[u8]) -> Option<FloatHistogram> {
    let mut reader = Reader { bytes };
    let histogram = reader.histogram()?;
    reader.bytes.is_empty().then_some(histogram)
}

/// A native histogram kept in its encoded form, without its custom bounds,
/// which are shared with a neighbouring sample when equal (a series' bounds
/// rarely change, and they would otherwise be most of its bytes). The head
/// holds histograms this way, and a flush hands them to the block writer
/// as they are: decoding every flushed histogram took about ten times the
/// memory the head held them in.
#[derive(Debug)]
pub(crate) struct EncodedHistogram {
    pub(crate) timestamp: TimestampMs,
    encoded: Box<[u8]>,
    pub(crate) custom_values: Arc<[f64]>,
}

impl EncodedHistogram {
    /// Encodes `sample`, sharing the custom bounds of a neighbour with equal ones.
    pub(crate) fn new(sample: &HistogramSample, neighbours: [Option<&EncodedHistogram>; 2]) -> EncodedHistogram {
        let mut encoded = Vec::new();
        encode(&sample.histogram, false, &mut encoded);
        let custom_values = neighbours
            .into_iter()
            .flatten()
            .find(|n| *n.custom_values == *sample.histogram.custom_values)
            .map_or_else(|| sample.histogram.custom_values.clone(), |n| n.custom_values.clone());
        EncodedHistogram {
            timestamp: sample.timestamp,
            encoded: encoded.into_boxed_slice(),
            custom_values,
        }
    }

    pub(crate) fn decode(&self) -> HistogramSample {
        // These bytes were encoded here; failing to read them back is a bug.
        let histogram = decode(&self.encoded);
        debug_assert!(histogram.is_some(), "encoded histogram does not decode");
        HistogramSample {
            timestamp: self.timestamp,
            histogram: FloatHistogram {
                custom_values: self.custom_values.clone(),
                ..histogram.unwrap_or_default()
            },
        }
    }

    /// Appends the histogram as [`encode`] with custom values would, without
    /// decoding it: the bytes differ only in the flag and the trailing bounds.
    pub(crate) fn append_with_custom_values(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.encoded);
        if !self.custom_values.is_empty() {
            out[start] |= FLAG_CUSTOM_VALUES;
            put_uvarint(out, self.custom_values.len() as u64);
            for bound in self.custom_values.iter() {
                out.extend_from_slice(&bound.to_bits().to_le_bytes());
            }
        }
    }

    pub(crate) fn byte_len(&self) -> usize {
        std::mem::size_of::<EncodedHistogram>() + self.encoded.len()
    }

    /// The histograms of `sorted` (ascending by time) in `range`.
    pub(crate) fn in_range(sorted: &[EncodedHistogram], range: TimeRange) -> &[EncodedHistogram] {
        let from = sorted.partition_point(|h| h.timestamp < range.start);
        let to = sorted.partition_point(|h| h.timestamp <= range.end).max(from);
        &sorted[from..to]
    }
}

/// Bit-for-bit equality (NaN payloads included), for tests of every layer
/// that stores histograms.
#[cfg(test)]
pub(crate) fn same_histogram(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    let same_buckets = |p: &[Bucket], q: &[Bucket]| {
        p.len() == q.len()
            && p.iter()
                .zip(q)
                .all(|(m, n)| m.index == n.index && m.count.to_bits() == n.count.to_bits())
    };
    a.counter_reset_hint == b.counter_reset_hint
        && a.schema == b.schema
        && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
        && a.zero_count.to_bits() == b.zero_count.to_bits()
        && a.count.to_bits() == b.count.to_bits()
        && a.sum.to_bits() == b.sum.to_bits()
        && same_buckets(&a.positive, &b.positive)
        && same_buckets(&a.negative, &b.negative)
        && a.custom_values.len() == b.custom_values.len()
        && a.custom_values
            .iter()
            .zip(b.custom_values.iter())
            .all(|(m, n)| m.to_bits() == n.to_bits())
}

/// Random histograms for property tests of the storage layers: any schema,
/// sorted unique buckets, whole or fractional (or odd: NaN, -0.0) counts,
/// custom bounds, staleness markers.
#[cfg(test)]
pub(crate) mod strategy {
    use super::*;
    use proptest::prelude::*;

    fn count(integer: bool) -> BoxedStrategy<f64> {
        if integer {
            prop_oneof![(0u64..1000).prop_map(|c| c as f64), Just(MAX_EXACT_INTEGER)].boxed()
        } else {
            prop_oneof![
                (0.0f64..1e6),
                Just(-0.0),
                Just(f64::NAN),
                any::<u64>().prop_map(f64::from_bits)
            ]
            .boxed()
        }
    }

    fn buckets(integer: bool) -> impl Strategy<Value = Vec<Bucket>> {
        proptest::collection::btree_map(prop_oneof![-5i32..5, any::<i32>()], count(integer), 0..6)
            .prop_map(|m| m.into_iter().map(|(index, count)| Bucket { index, count }).collect())
    }

    pub(crate) fn histogram() -> impl Strategy<Value = FloatHistogram> {
        any::<bool>().prop_flat_map(|integer| {
            (
                (0i32..4, prop_oneof![-4i32..=8, Just(-53), any::<i32>()]),
                (
                    count(integer),
                    count(integer),
                    any::<u64>(),
                    prop_oneof![Just(0.0), 0.0f64..1.0],
                ),
                (buckets(integer), buckets(integer)),
                proptest::collection::vec(-1e3f64..1e3, 0..5),
                any::<bool>(),
            )
                .prop_map(
                    |(
                        (hint, schema),
                        (count, zero_count, sum_bits, zero_threshold),
                        (positive, negative),
                        bounds,
                        stale,
                    )| {
                        let sum = if stale {
                            tidewatch_model::stale_nan()
                        } else {
                            f64::from_bits(sum_bits)
                        };
                        FloatHistogram {
                            counter_reset_hint: CounterResetHint::from_proto(hint),
                            schema,
                            zero_threshold,
                            zero_count,
                            count,
                            sum,
                            positive,
                            negative,
                            custom_values: Arc::from(bounds),
                        }
                    },
                )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Whatever is encoded decodes bit for bit, with or without its bounds.
        #[test]
        fn round_trips(histogram in strategy::histogram()) {
            let mut bytes = Vec::new();
            encode(&histogram, true, &mut bytes);
            let back = decode(&bytes).unwrap();
            prop_assert!(same_histogram(&histogram, &back), "{:?} != {:?}", histogram, back);
            bytes.clear();
            encode(&histogram, false, &mut bytes);
            let without = decode(&bytes).unwrap();
            prop_assert!(without.custom_values.is_empty());
            let restored = FloatHistogram { custom_values: histogram.custom_values.clone(), ..without };
            prop_assert!(same_histogram(&histogram, &restored));
        }

        // A histogram kept encoded writes the same bytes as encoding it anew
        // with its bounds, and decodes to what was stored.
        #[test]
        fn encoded_histograms_write_what_encode_writes(histogram in strategy::histogram(), timestamp in any::<i64>()) {
            let sample = HistogramSample { timestamp, histogram };
            let kept = EncodedHistogram::new(&sample, [None, None]);
            let mut fresh = Vec::new();
            encode(&sample.histogram, true, &mut fresh);
            let mut appended = vec![7u8];
            kept.append_with_custom_values(&mut appended);
            prop_assert_eq!(&appended[1..], &fresh[..]);
            let back = kept.decode();
            prop_assert_eq!(back.timestamp, timestamp);
            prop_assert!(same_histogram(&back.histogram, &sample.histogram));
        }

        // Garbage never panics and never allocates wildly.
        #[test]
        fn garbage_is_rejected_or_decoded(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn counter_histograms_are_compact() {
        let histogram = FloatHistogram {
            count: 1000.0,
            zero_count: 3.0,
            sum: 1234.5,
            positive: (0..10)
                .map(|i| Bucket {
                    index: i,
                    count: f64::from(100 + i),
                })
                .collect(),
            ..FloatHistogram::default()
        };
        let mut bytes = Vec::new();
        encode(&histogram, true, &mut bytes);
        // 18 fixed bytes of threshold and sum, then about 2 bytes per bucket.
        assert!(bytes.len() < 50, "{} bytes", bytes.len());
    }
}
