//! Checks shared by the fuzz targets.

use tidewatch_model::Sample;
use tidewatch_model::seam::WriteBatch;

/// Panics unless both batches hold the same series, labels and samples.
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
    }
}

/// Bitwise, so NaN payloads (staleness markers) must survive; prost omits a
/// double equal to 0.0, so -0.0 legitimately comes back as 0.0.
fn same_sample(before: &Sample, after: &Sample) -> bool {
    before.timestamp == after.timestamp
        && (before.value.to_bits() == after.value.to_bits()
            || (before.value == 0.0 && after.value.to_bits() == 0.0f64.to_bits()))
}
