//! Native histograms: the sparse, exponential-bucket histograms of Prometheus,
//! and their custom-bucket variant (NHCB).
//!
//! Prometheus stores buckets as spans (runs of consecutive bucket indexes) plus
//! a count per bucket. We keep the same information as a list of
//! `(index, count)` pairs in ascending index order, which makes merging,
//! resolution changes and comparisons plain two-pointer walks; spans are
//! derived when a wire format needs them. Counts are absolute (not deltas) and
//! floating point: integer histograms convert losslessly as long as counts stay
//! below 2^53.
//!
//! Bucket index `i` of an exponential schema `s` covers `(b(i-1), b(i)]` with
//! `b(i) = 2^(i·2^-s)`; negative buckets mirror that. Schema
//! [`CUSTOM_BUCKETS_SCHEMA`] uses `custom_values` as the upper bounds instead:
//! index `i` covers `(custom_values[i-1], custom_values[i]]`, the first bucket
//! starts at -Inf and the last (index `custom_values.len()`) ends at +Inf.

use std::sync::Arc;

use crate::sample::{STALE_NAN_BITS, stale_nan};
use crate::time::TimestampMs;

/// The schema of native histograms with custom bucket bounds.
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;
/// The lowest and highest exponential schemas Prometheus accepts.
pub const EXPONENTIAL_SCHEMA_MIN: i32 = -4;
pub const EXPONENTIAL_SCHEMA_MAX: i32 = 8;

/// What the producer of a histogram says about counter resets, as in
/// Prometheus' `CounterResetHint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CounterResetHint {
    /// Nothing known: a reset is detected by comparing with the previous histogram.
    #[default]
    Unknown,
    /// This histogram follows a counter reset.
    CounterReset,
    /// This histogram is known not to follow a counter reset.
    NotCounterReset,
    /// A gauge histogram: counts may go up and down.
    Gauge,
}

impl CounterResetHint {
    /// From remote write's `Histogram.ResetHint` enum (0 unknown, 1 yes, 2 no, 3 gauge).
    pub fn from_proto(value: i32) -> CounterResetHint {
        match value {
            1 => CounterResetHint::CounterReset,
            2 => CounterResetHint::NotCounterReset,
            3 => CounterResetHint::Gauge,
            _ => CounterResetHint::Unknown,
        }
    }

    pub fn to_proto(self) -> i32 {
        match self {
            CounterResetHint::Unknown => 0,
            CounterResetHint::CounterReset => 1,
            CounterResetHint::NotCounterReset => 2,
            CounterResetHint::Gauge => 3,
        }
    }
}

/// A run of consecutive buckets, as the wire formats describe a layout: the
/// first span's offset is the index of its first bucket, later offsets are the
/// gap after the previous span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub offset: i32,
    pub length: u32,
}

/// One bucket: its index in the schema and its (absolute) count.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bucket {
    pub index: i32,
    pub count: f64,
}

/// A native histogram with float counts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FloatHistogram {
    pub counter_reset_hint: CounterResetHint,
    pub schema: i32,
    /// Observations with an absolute value at most this go into the zero bucket.
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub count: f64,
    pub sum: f64,
    /// Ascending by index, each index at most once. Empty buckets may be present.
    pub positive: Vec<Bucket>,
    /// Ascending by index (of the mirrored positive bucket).
    pub negative: Vec<Bucket>,
    /// Upper bounds of the custom buckets (schema [`CUSTOM_BUCKETS_SCHEMA`]
    /// only), ascending, without the implicit `+Inf`. Shared because every
    /// histogram of a series usually has the same bounds.
    pub custom_values: Arc<[f64]>,
}

/// One native histogram sample.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSample {
    pub timestamp: TimestampMs,
    pub histogram: FloatHistogram,
}

/// Why a histogram is not well formed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HistogramError {
    #[error("histogram has an invalid schema {0}, it must be in [-4, 8] or -53 (custom buckets)")]
    InvalidSchema(i32),
    #[error("histogram spans need {spans} buckets, but {buckets} bucket counts were sent")]
    SpansBucketsMismatch { spans: usize, buckets: usize },
    #[error("histogram span number {number} has a negative offset {offset}")]
    NegativeSpanOffset { number: usize, offset: i32 },
    #[error("histogram has a negative bucket count {0}")]
    NegativeBucketCount(f64),
    #[error("histogram with custom buckets must not have negative buckets or a zero bucket")]
    CustomBucketsWithNegativeOrZero,
    #[error("histogram custom bounds must be strictly increasing and finite, got {0:?}")]
    InvalidCustomBounds(Vec<f64>),
    #[error("histogram with custom buckets has a bucket index {index} beyond its {bounds} bounds")]
    CustomBucketOutOfRange { index: i32, bounds: usize },
    #[error("histogram's observation count {count} is lower than the sum of its buckets {buckets}")]
    CountBelowBuckets { count: f64, buckets: f64 },
    #[error("histogram has a negative observation count {0}")]
    NegativeCount(f64),
    #[error("histogram with exponential schema {0} must not have custom bounds")]
    ExponentialWithCustomBounds(i32),
    #[error("histogram mixes integer bucket deltas and float bucket counts")]
    MixedBucketKinds,
}

impl FloatHistogram {
    /// Whether this histogram uses custom bucket bounds (NHCB).
    pub fn uses_custom_buckets(&self) -> bool {
        self.schema == CUSTOM_BUCKETS_SCHEMA
    }

    /// Prometheus marks a histogram series stale with a histogram whose sum is
    /// the staleness NaN.
    pub fn is_stale(&self) -> bool {
        self.sum.to_bits() == STALE_NAN_BITS
    }

    /// The staleness marker for histogram series.
    pub fn stale_marker() -> FloatHistogram {
        FloatHistogram {
            sum: stale_nan(),
            ..FloatHistogram::default()
        }
    }

    /// Buckets from a span layout and absolute counts (one count per bucket the
    /// spans describe).
    pub fn buckets_from_spans(spans: &[Span], counts: &[f64]) -> Result<Vec<Bucket>, HistogramError> {
        let needed: usize = spans.iter().map(|s| s.length as usize).sum();
        if needed != counts.len() {
            return Err(HistogramError::SpansBucketsMismatch {
                spans: needed,
                buckets: counts.len(),
            });
        }
        let mut out = Vec::with_capacity(counts.len());
        let mut index: i64 = 0;
        let mut counts = counts.iter();
        for (number, span) in spans.iter().enumerate() {
            if number > 0 && span.offset < 0 {
                return Err(HistogramError::NegativeSpanOffset {
                    number: number + 1,
                    offset: span.offset,
                });
            }
            index += i64::from(span.offset);
            for _ in 0..span.length {
                let count = *counts.next().unwrap_or(&0.0);
                let index32 = i32::try_from(index).map_err(|_| HistogramError::NegativeSpanOffset {
                    number: number + 1,
                    offset: span.offset,
                })?;
                out.push(Bucket { index: index32, count });
                index += 1;
            }
        }
        Ok(out)
    }

    /// Buckets from a span layout and delta-encoded integer counts, as integer
    /// histograms travel on the wire.
    pub fn buckets_from_deltas(spans: &[Span], deltas: &[i64]) -> Result<Vec<Bucket>, HistogramError> {
        let mut running: i64 = 0;
        let counts: Vec<f64> = deltas
            .iter()
            .map(|d| {
                running = running.wrapping_add(*d);
                running as f64
            })
            .collect();
        Self::buckets_from_spans(spans, &counts)
    }

    /// The span layout and counts of `buckets`, with consecutive indexes
    /// joined into one span.
    pub fn spans_of(buckets: &[Bucket]) -> (Vec<Span>, Vec<f64>) {
        let mut spans: Vec<Span> = Vec::new();
        let mut counts = Vec::with_capacity(buckets.len());
        let mut next_index: Option<i32> = None;
        for bucket in buckets {
            match (next_index, spans.last_mut()) {
                (Some(next), Some(span)) if next == bucket.index => span.length += 1,
                (Some(next), _) => spans.push(Span {
                    offset: bucket.index - next,
                    length: 1,
                }),
                (None, _) => spans.push(Span {
                    offset: bucket.index,
                    length: 1,
                }),
            }
            counts.push(bucket.count);
            next_index = Some(bucket.index + 1);
        }
        (spans, counts)
    }

    /// Checks what Prometheus' `Validate` checks: a known schema, sorted unique
    /// buckets, no negative counts, custom bounds that fit the buckets, and a
    /// count not below the sum of the buckets (unless it is NaN).
    pub fn validate(&self) -> Result<(), HistogramError> {
        let custom = self.uses_custom_buckets();
        if !custom && !(EXPONENTIAL_SCHEMA_MIN..=EXPONENTIAL_SCHEMA_MAX).contains(&self.schema) {
            return Err(HistogramError::InvalidSchema(self.schema));
        }
        let mut total = 0.0;
        for side in [&self.positive, &self.negative] {
            for pair in side.windows(2) {
                if pair[1].index <= pair[0].index {
                    return Err(HistogramError::NegativeSpanOffset {
                        number: 0,
                        offset: pair[1].index - pair[0].index,
                    });
                }
            }
            for bucket in side {
                if bucket.count < 0.0 {
                    return Err(HistogramError::NegativeBucketCount(bucket.count));
                }
                total += bucket.count;
            }
        }
        if custom {
            if !self.negative.is_empty() || self.zero_count != 0.0 || self.zero_threshold != 0.0 {
                return Err(HistogramError::CustomBucketsWithNegativeOrZero);
            }
            let bounds = &self.custom_values;
            let increasing = bounds.windows(2).all(|w| w[0] < w[1]);
            if !increasing || bounds.iter().any(|b| !b.is_finite()) {
                return Err(HistogramError::InvalidCustomBounds(bounds.to_vec()));
            }
            for bucket in &self.positive {
                if bucket.index < 0 || bucket.index as usize > bounds.len() {
                    return Err(HistogramError::CustomBucketOutOfRange {
                        index: bucket.index,
                        bounds: bounds.len(),
                    });
                }
            }
        } else {
            if self.zero_count < 0.0 {
                return Err(HistogramError::NegativeBucketCount(self.zero_count));
            }
            if !self.custom_values.is_empty() {
                return Err(HistogramError::ExponentialWithCustomBounds(self.schema));
            }
            total += self.zero_count;
        }
        if self.count < 0.0 {
            return Err(HistogramError::NegativeCount(self.count));
        }
        if !self.count.is_nan() && self.count < total && !self.is_stale() {
            return Err(HistogramError::CountBelowBuckets {
                count: self.count,
                buckets: total,
            });
        }
        Ok(())
    }
}

/// The upper bound of bucket `index` in an exponential `schema`:
/// `2^(index·2^-schema)`, computed exactly as Prometheus does (the last
/// finite bucket ends at `f64::MAX`, the one after it at +Inf).
pub fn exponential_bound(index: i32, schema: i32) -> f64 {
    if schema < 0 {
        let exp = i64::from(index) << (-schema);
        if exp == 1024 {
            return f64::MAX;
        }
        return ldexp(1.0, exp);
    }
    let fraction_index = index & ((1 << schema) - 1);
    let fraction = bound_fraction(schema, fraction_index);
    let exp = i64::from(index >> schema) + 1;
    if fraction == 0.5 && exp == 1025 {
        return f64::MAX;
    }
    ldexp(fraction, exp)
}

/// `2^(i/2^schema - 1)` for `i` in `[0, 2^schema)`: the mantissa of bucket
/// bounds, in `[0.5, 1)`, from a table of Prometheus' values (see
/// [`crate::histogram_bounds`]).
fn bound_fraction(schema: i32, i: i32) -> f64 {
    crate::histogram_bounds::BOUND_FRACTIONS[schema.clamp(0, 8) as usize][i as usize]
}

/// `fraction · 2^exp`, saturating to 0 and +Inf like Go's `math.Ldexp`.
fn ldexp(fraction: f64, exp: i64) -> f64 {
    // Powers of two in the normal range are built from their bits; only the
    // extremes (subnormal or overflowing results) take the slow path.
    if (-1022..=1023).contains(&exp) {
        return fraction * f64::from_bits(((exp + 1023) as u64) << 52);
    }
    let exp = exp.clamp(-2000, 2000) as i32;
    // Split the exponent so intermediate powers stay finite.
    let mut value = fraction;
    let mut remaining = exp;
    while remaining > 1000 {
        value *= 2f64.powi(1000);
        remaining -= 1000;
    }
    while remaining < -1000 {
        value *= 2f64.powi(-1000);
        remaining += 1000;
    }
    value * 2f64.powi(remaining)
}

/// The upper bound of bucket `index` of `histogram` (positive side).
pub fn bucket_upper_bound(index: i32, schema: i32, custom_values: &[f64]) -> f64 {
    if schema == CUSTOM_BUCKETS_SCHEMA {
        let length = custom_values.len() as i64;
        let index = i64::from(index);
        return if index >= length {
            f64::INFINITY
        } else if index < 0 {
            f64::NEG_INFINITY
        } else {
            custom_values[index as usize]
        };
    }
    exponential_bound(index, schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_round_trip() {
        let spans = [Span { offset: -2, length: 2 }, Span { offset: 3, length: 1 }];
        let buckets = FloatHistogram::buckets_from_spans(&spans, &[1.0, 2.0, 3.0]).unwrap();
        let indexes: Vec<i32> = buckets.iter().map(|b| b.index).collect();
        assert_eq!(indexes, [-2, -1, 3]);
        let (back, counts) = FloatHistogram::spans_of(&buckets);
        assert_eq!(back, spans);
        assert_eq!(counts, [1.0, 2.0, 3.0]);
    }

    #[test]
    fn deltas_become_absolute_counts() {
        let spans = [Span { offset: 0, length: 3 }];
        let buckets = FloatHistogram::buckets_from_deltas(&spans, &[2, 1, -3]).unwrap();
        let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
        assert_eq!(counts, [2.0, 3.0, 0.0]);
    }

    #[test]
    fn layout_mismatches_are_errors() {
        let spans = [Span { offset: 0, length: 2 }];
        assert!(FloatHistogram::buckets_from_spans(&spans, &[1.0]).is_err());
        let spans = [Span { offset: 0, length: 1 }, Span { offset: -1, length: 1 }];
        assert!(FloatHistogram::buckets_from_spans(&spans, &[1.0, 1.0]).is_err());
    }

    #[test]
    fn bound_table_is_the_formula_within_a_few_ulps() {
        for schema in 0..=8 {
            let steps = 1 << schema;
            for i in 0..steps {
                let direct = (f64::from(i) / f64::from(steps) - 1.0).exp2();
                let tabled = bound_fraction(schema, i);
                // Prometheus' values are up to four ulps (2^-53 each here) off.
                assert!(
                    (tabled - direct).abs() <= 4.0 * f64::EPSILON / 2.0,
                    "schema {schema} index {i}"
                );
                if i > 0 {
                    assert!(tabled > bound_fraction(schema, i - 1), "schema {schema} index {i}");
                }
                // A finer schema shares every bound of a coarser one.
                if schema > 0 && i % 2 == 0 {
                    assert_eq!(tabled, bound_fraction(schema - 1, i / 2), "schema {schema} index {i}");
                }
            }
        }
        // As Prometheus prints them, not correctly rounded (…476, …145).
        assert_eq!(exponential_bound(-1, 1), 0.7071067811865475);
        assert_eq!(exponential_bound(-1, 2), 0.8408964152537144);
    }

    #[test]
    fn ldexp_agrees_with_repeated_doubling() {
        for exp in [-1022i64, -600, -5, 0, 1, 52, 600, 1023] {
            let slow = 0.75 * 2f64.powi(exp as i32);
            assert_eq!(ldexp(0.75, exp), slow, "exp {exp}");
        }
        assert_eq!(ldexp(0.5, 1025), f64::INFINITY);
        assert_eq!(ldexp(1.0, -1074), f64::from_bits(1));
        assert_eq!(ldexp(0.5, -2000), 0.0);
    }

    #[test]
    fn exponential_bounds_at_the_edges() {
        assert_eq!(exponential_bound(0, 0), 1.0);
        assert_eq!(exponential_bound(1, 0), 2.0);
        assert_eq!(exponential_bound(-1, 0), 0.5);
        // √2 as Prometheus has it (it prints 1.414213562373095): one ulp
        // below the correctly rounded `SQRT_2`.
        let prometheus_sqrt_2 = f64::from_bits(std::f64::consts::SQRT_2.to_bits() - 1);
        assert_eq!(exponential_bound(1, 1), prometheus_sqrt_2);
        assert_eq!(exponential_bound(4, 3), prometheus_sqrt_2);
        assert_eq!(exponential_bound(1, -2), 16.0);
        assert_eq!(exponential_bound(1024, 0), f64::MAX);
        assert_eq!(exponential_bound(1025, 0), f64::INFINITY);
        assert_eq!(exponential_bound(256, -2), f64::MAX);
    }

    #[test]
    fn validation_catches_bad_histograms() {
        let good = FloatHistogram {
            count: 3.0,
            zero_count: 1.0,
            positive: vec![Bucket { index: 0, count: 2.0 }],
            ..FloatHistogram::default()
        };
        assert_eq!(good.validate(), Ok(()));
        let low_count = FloatHistogram {
            count: 1.0,
            ..good.clone()
        };
        assert!(low_count.validate().is_err());
        let bad_schema = FloatHistogram {
            schema: 9,
            ..good.clone()
        };
        assert!(bad_schema.validate().is_err());
        let custom = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            count: 2.0,
            positive: vec![Bucket { index: 2, count: 2.0 }],
            custom_values: Arc::from(vec![1.0, 2.0]),
            ..FloatHistogram::default()
        };
        assert_eq!(custom.validate(), Ok(()));
        let beyond = FloatHistogram {
            positive: vec![Bucket { index: 3, count: 2.0 }],
            ..custom.clone()
        };
        assert!(beyond.validate().is_err());
        let exponential_with_bounds = FloatHistogram {
            custom_values: Arc::from(vec![1.0]),
            ..good.clone()
        };
        assert_eq!(
            exponential_with_bounds.validate(),
            Err(HistogramError::ExponentialWithCustomBounds(0))
        );
        let negative_count = FloatHistogram {
            count: -1.0,
            zero_count: 0.0,
            positive: Vec::new(),
            ..good.clone()
        };
        assert_eq!(negative_count.validate(), Err(HistogramError::NegativeCount(-1.0)));
        assert!(FloatHistogram::stale_marker().is_stale());
    }
}
