//! Checks shared by the fuzz targets.

use tidewatch_model::Sample;
use tidewatch_model::histogram::{Bucket, HistogramSample};
use tidewatch_model::seam::WriteBatch;

/// Panics unless both batches hold the same series, labels, samples and histograms.
pub fn assert_same_series(before: &WriteBatch, after: &WriteBatch) {
    assert_eq!(
        before.series.len(),
        after.series.len(),
        "series count changed in the round trip"
    );
    for (x, y) in before.series.iter().zip(&after.series) {
        assert_eq!(x.labels, y.labels, "labels changed in the round trip");
        assert_eq!(x.samples.len(), y.samples.len(), "sample count of {} changed", x.labels);
        for (s, t) in x.samples.iter().zip(&y.samples) {
            assert!(same_sample(s, t), "sample of {} changed: {s:?} became {t:?}", x.labels);
        }
        assert_eq!(
            x.histograms.len(),
            y.histograms.len(),
            "histogram count of {} changed",
            x.labels
        );
        for (h, g) in x.histograms.iter().zip(&y.histograms) {
            assert!(
                same_histogram(h, g),
                "histogram of {} changed: {h:?} became {g:?}",
                x.labels
            );
        }
    }
}

/// Bitwise like [`same_sample`]; sum and zero threshold are plain doubles on
/// the wire, so -0.0 may come back as 0.0 there too.
fn same_histogram(before: &HistogramSample, after: &HistogramSample) -> bool {
    let same_double = |a: f64, b: f64| a.to_bits() == b.to_bits() || (a == 0.0 && b.to_bits() == 0.0f64.to_bits());
    let (x, y) = (&before.histogram, &after.histogram);
    let same_buckets = |p: &[Bucket], q: &[Bucket]| {
        p.len() == q.len()
            && p.iter()
                .zip(q)
                .all(|(m, n)| m.index == n.index && m.count.to_bits() == n.count.to_bits())
    };
    before.timestamp == after.timestamp
        && x.counter_reset_hint == y.counter_reset_hint
        && x.schema == y.schema
        && same_double(x.zero_threshold, y.zero_threshold)
        && same_double(x.sum, y.sum)
        && x.count.to_bits() == y.count.to_bits()
        && x.zero_count.to_bits() == y.zero_count.to_bits()
        && same_buckets(&x.positive, &y.positive)
        && same_buckets(&x.negative, &y.negative)
        && x.custom_values.len() == y.custom_values.len()
        && x.custom_values
            .iter()
            .zip(y.custom_values.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits())
}

/// Bitwise, so NaN payloads (staleness markers) must survive; prost omits a
/// double equal to 0.0, so -0.0 legitimately comes back as 0.0.
fn same_sample(before: &Sample, after: &Sample) -> bool {
    before.timestamp == after.timestamp
        && (before.value.to_bits() == after.value.to_bits()
            || (before.value == 0.0 && after.value.to_bits() == 0.0f64.to_bits()))
}
