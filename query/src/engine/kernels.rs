//! The numeric cores of PromQL functions, as pure functions of samples.
//!
//! Results must equal Prometheus' to the last bit where its tests compare
//! them, so the arithmetic follows Prometheus' order of operations: Neumaier
//! compensated sums, the overflow-safe mean, extrapolation rules of `rate`.
//!
//! Range functions take the samples of one series inside one window, in
//! time order, staleness markers already removed.

use tidewatch_model::Sample;

/// One step of Neumaier's compensated sum: returns the new sum and
/// compensation. An infinite sum resets the compensation, which would
/// otherwise turn into NaN.
pub(crate) fn kahan_sum_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// A running mean that sums with compensation while the sum stays finite and
/// switches to an incremental mean once it would overflow, so that averaging
/// huge values still gives a finite answer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Mean {
    count: f64,
    sum: f64,
    compensation: f64,
    mean: f64,
    incremental: bool,
}

impl Mean {
    pub(crate) fn new(first: f64) -> Mean {
        Mean {
            count: 1.0,
            sum: first,
            ..Mean::default()
        }
    }

    pub(crate) fn add(&mut self, v: f64) {
        self.count += 1.0;
        if !self.incremental {
            let (sum, c) = kahan_sum_inc(v, self.sum, self.compensation);
            if !sum.is_infinite() {
                (self.sum, self.compensation) = (sum, c);
                return;
            }
            self.incremental = true;
            self.mean = self.sum / (self.count - 1.0);
            self.compensation /= self.count - 1.0;
        }
        if self.mean.is_infinite() {
            // Inf - Inf would make the mean NaN; an infinite mean absorbs
            // finite values and infinities of its own sign.
            if v.is_infinite() && (self.mean > 0.0) == (v > 0.0) {
                return;
            }
            if !v.is_infinite() && !v.is_nan() {
                return;
            }
        }
        let corrected = self.mean + self.compensation;
        // Dividing both terms by the count keeps their difference finite.
        (self.mean, self.compensation) =
            kahan_sum_inc(v / self.count - corrected / self.count, self.mean, self.compensation);
    }

    pub(crate) fn value(&self) -> f64 {
        if self.incremental {
            self.mean + self.compensation
        } else {
            (self.sum + self.compensation) / self.count
        }
    }
}

/// `rate`, `increase` (counters) and `delta` (gauges) over the window
/// `(range_start, range_end]`: the change between the first and last sample,
/// counter resets added back, extrapolated towards the window's edges.
pub(crate) fn extrapolated_rate(
    samples: &[Sample],
    range_start: i64,
    range_end: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let mut result = last.value - first.value;
    if is_counter {
        let mut previous = first.value;
        for sample in &samples[1..] {
            if sample.value < previous {
                result += previous;
            }
            previous = sample.value;
        }
    }
    let mut duration_to_start = (first.timestamp - range_start) as f64 / 1000.0;
    let mut duration_to_end = (range_end - last.timestamp) as f64 / 1000.0;
    let sampled_interval = (last.timestamp - first.timestamp) as f64 / 1000.0;
    let average_interval = sampled_interval / (samples.len() - 1) as f64;
    // A sample within 110 % of the average spacing from an edge means the
    // series covers that edge: extrapolate all the way. Otherwise it starts
    // or ends inside the window: extrapolate by half a spacing only.
    let threshold = average_interval * 1.1;
    if duration_to_start >= threshold {
        duration_to_start = average_interval / 2.0;
    }
    if is_counter {
        // A counter cannot have been below zero: do not extrapolate past the
        // point where the slope would reach it.
        let duration_to_zero = if result > 0.0 && first.value >= 0.0 {
            sampled_interval * (first.value / result)
        } else {
            duration_to_start
        };
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    if duration_to_end >= threshold {
        duration_to_end = average_interval / 2.0;
    }
    let mut factor = (sampled_interval + duration_to_start + duration_to_end) / sampled_interval;
    if is_rate {
        factor /= (range_end - range_start) as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` (per second, counter resets respected) and `idelta`: from the last
/// two samples.
pub(crate) fn instant_rate(samples: &[Sample], is_rate: bool) -> Option<f64> {
    let [.., previous, last] = samples else {
        return None;
    };
    let mut result = if is_rate && last.value < previous.value {
        // After a reset the counter counted up from zero.
        last.value
    } else {
        last.value - previous.value
    };
    if is_rate {
        let interval = last.timestamp - previous.timestamp;
        if interval == 0 {
            return None;
        }
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// How many times the value decreased.
pub(crate) fn resets(samples: &[Sample]) -> f64 {
    samples.windows(2).filter(|w| w[1].value < w[0].value).count() as f64
}

/// How many times the value changed; NaN followed by NaN is no change.
pub(crate) fn changes(samples: &[Sample]) -> f64 {
    samples
        .windows(2)
        .filter(|w| w[1].value != w[0].value && !(w[1].value.is_nan() && w[0].value.is_nan()))
        .count() as f64
}

/// Least-squares slope and intercept at `intercept_time`, with compensated
/// sums; a constant series has slope 0 (or NaN when it is infinite).
fn linear_regression(samples: &[Sample], intercept_time: i64) -> (f64, f64) {
    let first = samples[0].value;
    let mut constant = true;
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    for sample in samples {
        if constant && sample.value != first {
            constant = false;
        }
        n += 1.0;
        let x = (sample.timestamp - intercept_time) as f64 / 1e3;
        (sum_x, c_x) = kahan_sum_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_sum_inc(sample.value, sum_y, c_y);
        (sum_xy, c_xy) = kahan_sum_inc(x * sample.value, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_sum_inc(x * x, sum_x2, c_x2);
    }
    if constant {
        if first.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, first);
    }
    let (sum_x, sum_y, sum_xy, sum_x2) = (sum_x + c_x, sum_y + c_y, sum_xy + c_xy, sum_x2 + c_x2);
    let covariance = sum_xy - sum_x * sum_y / n;
    let variance = sum_x2 - sum_x * sum_x / n;
    let slope = covariance / variance;
    (slope, sum_y / n - slope * sum_x / n)
}

/// `deriv`: the regression slope per second. The intercept is taken at the
/// first sample, near the data, which keeps the sums accurate.
pub(crate) fn deriv(samples: &[Sample]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    Some(linear_regression(samples, samples[0].timestamp).0)
}

/// `predict_linear`: the regression line's value `duration_s` after `eval_time_ms`.
pub(crate) fn predict_linear(samples: &[Sample], eval_time_ms: i64, duration_s: f64) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (slope, intercept) = linear_regression(samples, eval_time_ms);
    Some(slope * duration_s + intercept)
}

/// `double_exponential_smoothing` (Holt's linear method); factors in (0, 1)
/// are the caller's to check.
pub(crate) fn double_exponential_smoothing(samples: &[Sample], smoothing: f64, trend: f64) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, samples[0].value);
    let mut b = samples[1].value - samples[0].value;
    for (i, sample) in samples.iter().enumerate().skip(1) {
        let x = smoothing * sample.value;
        if i > 1 {
            b = trend * (s1 - s0) + (1.0 - trend) * b;
        }
        let y = (1.0 - smoothing) * (s1 + b);
        (s0, s1) = (s1, x + y);
    }
    Some(s1)
}

pub(crate) fn avg_over_time(samples: &[Sample]) -> f64 {
    let Some(first) = samples.first() else {
        return f64::NAN;
    };
    let mut mean = Mean::new(first.value);
    for sample in &samples[1..] {
        mean.add(sample.value);
    }
    mean.value()
}

pub(crate) fn sum_over_time(samples: &[Sample]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for sample in samples {
        (sum, c) = kahan_sum_inc(sample.value, sum, c);
    }
    if sum.is_infinite() { sum } else { sum + c }
}

/// Population variance by Welford's method with compensated sums.
pub(crate) fn stdvar_over_time(samples: &[Sample]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for sample in samples {
        count += 1.0;
        let delta = sample.value - (mean + c_mean);
        (mean, c_mean) = kahan_sum_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_sum_inc(delta * (sample.value - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

pub(crate) fn stddev_over_time(samples: &[Sample]) -> f64 {
    stdvar_over_time(samples).sqrt()
}

/// The smallest value; a NaN is replaced by any later value.
pub(crate) fn min_over_time(samples: &[Sample]) -> f64 {
    samples.iter().fold(
        f64::NAN,
        |min, s| if s.value < min || min.is_nan() { s.value } else { min },
    )
}

/// The largest value; a NaN is replaced by any later value.
pub(crate) fn max_over_time(samples: &[Sample]) -> f64 {
    samples.iter().fold(
        f64::NAN,
        |max, s| if s.value > max || max.is_nan() { s.value } else { max },
    )
}

/// Median absolute deviation from the median; NaN when any value is NaN.
pub(crate) fn mad_over_time(samples: &[Sample]) -> f64 {
    if samples.iter().any(|s| s.value.is_nan()) {
        return f64::NAN;
    }
    let mut values: Vec<f64> = samples.iter().map(|s| s.value).collect();
    let median = quantile(0.5, &mut values);
    let mut deviations: Vec<f64> = samples.iter().map(|s| (s.value - median).abs()).collect();
    quantile(0.5, &mut deviations)
}

/// The φ-quantile of `values` by linear interpolation between closest ranks
/// (sorts in place, NaN first as Go's sort puts it): NaN when empty or φ is
/// NaN, -Inf below 0, +Inf above 1.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Timestamp (seconds) of the last sample holding the minimum.
pub(crate) fn ts_of_min_over_time(samples: &[Sample]) -> f64 {
    timestamp_of_extreme(samples, |current, best| current <= best)
}

/// Timestamp (seconds) of the last sample holding the maximum.
pub(crate) fn ts_of_max_over_time(samples: &[Sample]) -> f64 {
    timestamp_of_extreme(samples, |current, best| current >= best)
}

fn timestamp_of_extreme(samples: &[Sample], better: impl Fn(f64, f64) -> bool) -> f64 {
    let Some(first) = samples.first() else {
        return f64::NAN;
    };
    let mut best = *first;
    for sample in &samples[1..] {
        if better(sample.value, best.value) || best.value.is_nan() {
            best = *sample;
        }
    }
    best.timestamp as f64 / 1000.0
}

/// One `le` bucket of a classic histogram: cumulative count up to `upper_bound`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bucket {
    pub upper_bound: f64,
    pub count: f64,
}

/// `histogram_quantile`'s answer and whether the buckets needed repair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct QuantileOutcome {
    pub value: f64,
    /// Some bucket count decreased and was raised to its predecessor's.
    pub forced_monotonicity: bool,
    /// Counts differing only by floating-point noise were made equal.
    pub fixed_precision: bool,
}

impl QuantileOutcome {
    fn plain(value: f64) -> QuantileOutcome {
        QuantileOutcome {
            value,
            forced_monotonicity: false,
            fixed_precision: false,
        }
    }
}

/// Relative difference below which two bucket counts are the same count.
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

fn sort_and_coalesce(buckets: &mut Vec<Bucket>) {
    buckets.sort_by(|a, b| {
        a.upper_bound
            .partial_cmp(&b.upper_bound)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    // Buckets with the same bound (e.g. `le="1"` and `le="1.0"`) add up.
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for bucket in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.upper_bound == bucket.upper_bound => last.count += bucket.count,
            _ => merged.push(*bucket),
        }
    }
    *buckets = merged;
}

/// Makes counts non-decreasing; returns (forced monotonicity, fixed precision).
fn ensure_monotonic(buckets: &mut [Bucket]) -> (bool, bool) {
    let (mut forced, mut fixed) = (false, false);
    let Some(first) = buckets.first() else {
        return (false, false);
    };
    let mut previous = first.count;
    for bucket in buckets.iter_mut().skip(1) {
        let current = bucket.count;
        if current == previous {
            continue;
        }
        if almost_equal(previous, current, SMALL_DELTA_TOLERANCE) {
            bucket.count = previous;
            fixed = true;
            continue;
        }
        if current < previous {
            bucket.count = previous;
            forced = true;
            continue;
        }
        previous = current;
    }
    (forced, fixed)
}

/// Equality within a relative tolerance, as Prometheus' `almost.Equal`.
pub(crate) fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let sum = a.abs() + b.abs();
    let difference = (a - b).abs();
    if a == 0.0 || b == 0.0 || sum < MIN_NORMAL {
        return difference < epsilon * MIN_NORMAL;
    }
    difference / sum.min(f64::MAX) < epsilon
}

/// `histogram_quantile` over classic buckets: the bucket holding the q-th
/// observation, interpolated linearly inside it.
pub(crate) fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> QuantileOutcome {
    if q.is_nan() {
        return QuantileOutcome::plain(f64::NAN);
    }
    if q < 0.0 {
        return QuantileOutcome::plain(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return QuantileOutcome::plain(f64::INFINITY);
    }
    sort_and_coalesce(buckets);
    if buckets.last().is_none_or(|b| b.upper_bound != f64::INFINITY) {
        return QuantileOutcome::plain(f64::NAN);
    }
    let (forced_monotonicity, fixed_precision) = ensure_monotonic(buckets);
    if buckets.len() < 2 {
        return QuantileOutcome::plain(f64::NAN);
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return QuantileOutcome::plain(f64::NAN);
    }
    let outcome = |value| QuantileOutcome {
        value,
        forced_monotonicity,
        fixed_precision,
    };
    let mut rank = q * observations;
    // The first bucket (not counting +Inf) whose count reaches the rank.
    let b = buckets[..buckets.len() - 1].partition_point(|bucket| bucket.count < rank);
    if b == buckets.len() - 1 {
        return outcome(buckets[buckets.len() - 2].upper_bound);
    }
    if b == 0 && buckets[0].upper_bound <= 0.0 {
        return outcome(buckets[0].upper_bound);
    }
    let bucket_end = buckets[b].upper_bound;
    let mut count = buckets[b].count;
    let mut bucket_start = 0.0;
    if b > 0 {
        bucket_start = buckets[b - 1].upper_bound;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    outcome(bucket_start + (bucket_end - bucket_start) * (rank / count))
}

/// `histogram_fraction` over classic buckets: the estimated share of
/// observations in `[lower, upper]`, interpolating linearly within buckets
/// (the lowest bucket starts at 0 when its bound is positive).
pub(crate) fn bucket_fraction(lower: f64, upper: f64, buckets: &mut Vec<Bucket>) -> f64 {
    sort_and_coalesce(buckets);
    if buckets.last().is_none_or(|b| b.upper_bound != f64::INFINITY) {
        return f64::NAN;
    }
    let count = buckets[buckets.len() - 1].count;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    for (i, bucket) in buckets.iter().enumerate() {
        let lower_bound = if i > 0 {
            buckets[i - 1].upper_bound
        } else if bucket.upper_bound > 0.0 {
            0.0
        } else {
            f64::NEG_INFINITY
        };
        let upper_bound = bucket.upper_bound;
        // The cumulative count at `v` inside this bucket: linear within a
        // finite bucket; an infinitely wide one holds all its observations at
        // its infinite end, so no finite range takes any of them.
        let cumulative_at = |v: f64| {
            if lower_bound == f64::NEG_INFINITY {
                bucket.count
            } else if upper_bound == f64::INFINITY {
                rank
            } else {
                rank + (bucket.count - rank) * (v - lower_bound) / (upper_bound - lower_bound)
            }
        };
        if !lower_set && lower_bound >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lower_bound >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lower_bound < lower && upper_bound > lower {
            lower_rank = cumulative_at(lower);
            lower_set = true;
        }
        if !upper_set && lower_bound < upper && upper_bound > upper {
            upper_rank = cumulative_at(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = bucket.count;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn series(points: &[(i64, f64)]) -> Vec<Sample> {
        points.iter().map(|&(t, v)| Sample::new(t, v)).collect()
    }

    #[test]
    fn compensated_sum_keeps_small_terms() {
        // 1e100 + 1 - 1e100 loses the 1 in naive summation.
        let (mut sum, mut c) = (0.0, 0.0);
        for v in [1e100, 1.0, -1e100] {
            (sum, c) = kahan_sum_inc(v, sum, c);
        }
        assert_eq!(sum + c, 1.0);
        assert_eq!(sum_over_time(&series(&[(0, 1e100), (1, 1.0), (2, -1e100)])), 1.0);
    }

    #[test]
    fn mean_survives_overflow() {
        let huge = f64::MAX;
        assert_eq!(avg_over_time(&series(&[(0, huge), (1, huge)])), huge);
        assert_eq!(avg_over_time(&series(&[(0, 1.0), (1, 2.0), (2, 3.0)])), 2.0);
        assert!(avg_over_time(&series(&[(0, f64::INFINITY), (1, f64::NEG_INFINITY)])).is_nan());
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // A counter 0+10 every 60 s, window (0, 300 s] holding samples at 60..300 s.
        let samples = series(&[
            (60_000, 10.0),
            (120_000, 20.0),
            (180_000, 30.0),
            (240_000, 40.0),
            (300_000, 50.0),
        ]);
        // Increase 40 over 240 s; start is 60 s away = one average interval
        // (< 1.1×), so extrapolate fully to 0, but not below the zero point
        // (10/40 × 240 s = 60 s) — both 60 s: total 300 s → 50.
        assert_eq!(extrapolated_rate(&samples, 0, 300_000, true, false), Some(50.0));
        assert_eq!(extrapolated_rate(&samples, 0, 300_000, true, true), Some(50.0 / 300.0));
        // A reset adds the value before it back.
        let reset = series(&[(0, 5.0), (60_000, 10.0), (120_000, 2.0)]);
        let increase = extrapolated_rate(&reset, -60_000, 120_000, true, false).unwrap();
        // raw 2-5+10 = 7 over 120 s; start 60 s away ≥ 1.1×60? No (60 < 66): extrapolate
        // 60 s, zero point 5/7×120 ≈ 85.7 s is further; end 0 s → 7 × 180/120.
        assert!((increase - 10.5).abs() < 1e-12, "{increase}");
        // Gauges (delta) may extrapolate below zero.
        let gauge = series(&[(60_000, 10.0), (120_000, 5.0)]);
        assert_eq!(extrapolated_rate(&gauge, 0, 120_000, false, false), Some(-10.0));
        assert_eq!(extrapolated_rate(&gauge[..1], 0, 120_000, false, false), None);
    }

    #[test]
    fn rate_extrapolates_half_an_interval_at_gaps() {
        // Samples only in the middle of a 10 min window: half a 60 s interval each side.
        let samples = series(&[(240_000, 0.0), (300_000, 6.0), (360_000, 12.0)]);
        let increase = extrapolated_rate(&samples, 0, 600_000, false, false).unwrap();
        assert!((increase - 18.0).abs() < 1e-12, "{increase}");
    }

    #[test]
    fn instant_rates_use_the_last_two_samples() {
        let samples = series(&[(0, 1.0), (10_000, 5.0), (20_000, 2.0)]);
        assert_eq!(instant_rate(&samples, true), Some(0.2));
        assert_eq!(instant_rate(&samples, false), Some(-3.0));
        assert_eq!(instant_rate(&samples[..1], true), None);
    }

    #[test]
    fn resets_and_changes_count_transitions() {
        let samples = series(&[(0, 1.0), (1, 0.0), (2, 0.0), (3, f64::NAN), (4, f64::NAN), (5, 3.0)]);
        assert_eq!(resets(&samples), 1.0);
        assert_eq!(changes(&samples), 3.0);
    }

    #[test]
    fn regression_fits_lines_exactly() {
        let line = series(&[(0, 1.0), (10_000, 3.0), (20_000, 5.0)]);
        assert_eq!(deriv(&line), Some(0.2));
        assert_eq!(predict_linear(&line, 20_000, 10.0), Some(7.0));
        let constant = series(&[(0, 4.0), (10_000, 4.0)]);
        assert_eq!(deriv(&constant), Some(0.0));
        assert!(
            deriv(&series(&[(0, f64::INFINITY), (1, f64::INFINITY)]))
                .unwrap()
                .is_nan()
        );
    }

    #[test]
    fn smoothing_follows_holts_method() {
        let samples = series(&[(0, 0.0), (1, 10.0), (2, 20.0)]);
        // A straight line is followed exactly.
        assert_eq!(double_exponential_smoothing(&samples, 0.5, 0.5), Some(20.0));
        assert_eq!(double_exponential_smoothing(&samples[..1], 0.5, 0.5), None);
    }

    #[test]
    fn variance_min_max_and_mad() {
        let samples = series(&[
            (0, 2.0),
            (1, 4.0),
            (2, 4.0),
            (3, 4.0),
            (4, 5.0),
            (5, 5.0),
            (6, 7.0),
            (7, 9.0),
        ]);
        assert_eq!(stdvar_over_time(&samples), 4.0);
        assert_eq!(stddev_over_time(&samples), 2.0);
        assert_eq!(min_over_time(&series(&[(0, f64::NAN), (1, 3.0), (2, 1.0)])), 1.0);
        assert_eq!(max_over_time(&series(&[(0, f64::NAN), (1, 3.0), (2, 1.0)])), 3.0);
        assert_eq!(
            mad_over_time(&series(&[
                (0, 1.0),
                (1, 1.0),
                (2, 2.0),
                (3, 2.0),
                (4, 4.0),
                (5, 6.0),
                (6, 9.0)
            ])),
            1.0
        );
        assert_eq!(
            ts_of_max_over_time(&series(&[(1000, 3.0), (2000, 3.0), (3000, 1.0)])),
            2.0
        );
        assert_eq!(
            ts_of_min_over_time(&series(&[(1000, 3.0), (2000, 3.0), (3000, 1.0)])),
            3.0
        );
    }

    #[test]
    fn quantile_interpolates_and_handles_edges() {
        assert_eq!(quantile(0.5, &mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(quantile(0.25, &mut [1.0, 2.0, 3.0, 4.0, 5.0]), 2.0);
        assert_eq!(quantile(0.1, &mut [1.0, 2.0]), 1.1);
        assert!(quantile(0.5, &mut []).is_nan());
        assert!(quantile(f64::NAN, &mut [1.0]).is_nan());
        assert_eq!(quantile(-1.0, &mut [1.0]), f64::NEG_INFINITY);
        assert_eq!(quantile(2.0, &mut [1.0]), f64::INFINITY);
    }

    fn buckets(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs
            .iter()
            .map(|&(upper_bound, count)| Bucket { upper_bound, count })
            .collect()
    }

    #[test]
    fn bucket_quantile_interpolates_within_the_bucket() {
        let mut b = buckets(&[(f64::INFINITY, 100.0), (0.1, 50.0), (0.5, 90.0)]);
        // rank 50 → first bucket (0, 0.1] holds it exactly at its top.
        assert_eq!(bucket_quantile(0.5, &mut b.clone()).value, 0.1);
        // rank 70 → bucket (0.1, 0.5]: 20 of its 40 → 0.3.
        assert!((bucket_quantile(0.7, &mut b).value - 0.3).abs() < 1e-12);
        // In the +Inf bucket: the highest finite bound.
        let mut b = buckets(&[(0.1, 50.0), (0.5, 90.0), (f64::INFINITY, 100.0)]);
        assert_eq!(bucket_quantile(0.99, &mut b).value, 0.5);
        // Without +Inf, or empty: NaN.
        assert!(bucket_quantile(0.5, &mut buckets(&[(0.1, 5.0)])).value.is_nan());
        assert!(bucket_quantile(0.5, &mut Vec::new()).value.is_nan());
        assert!(
            bucket_quantile(0.5, &mut buckets(&[(0.1, 0.0), (f64::INFINITY, 0.0)]))
                .value
                .is_nan()
        );
        assert_eq!(
            bucket_quantile(-0.1, &mut buckets(&[(f64::INFINITY, 1.0)])).value,
            f64::NEG_INFINITY
        );
    }

    #[test]
    fn bucket_quantile_repairs_non_monotonic_counts() {
        let mut b = buckets(&[(1.0, 10.0), (2.0, 8.0), (f64::INFINITY, 20.0)]);
        let outcome = bucket_quantile(0.5, &mut b);
        assert!(outcome.forced_monotonicity);
        // Counts become 10, 10, 20: rank 10 is reached in the first bucket.
        assert_eq!(outcome.value, 1.0);
        let mut noisy = buckets(&[(1.0, 10.0), (2.0, 10.0 - 1e-14), (f64::INFINITY, 20.0)]);
        let outcome = bucket_quantile(0.5, &mut noisy);
        assert!(outcome.fixed_precision && !outcome.forced_monotonicity);
    }

    #[test]
    fn bucket_fraction_interpolates() {
        let mut b = buckets(&[(1.0, 10.0), (2.0, 20.0), (f64::INFINITY, 20.0)]);
        assert_eq!(bucket_fraction(0.0, 1.0, &mut b.clone()), 0.5);
        assert_eq!(bucket_fraction(1.0, 1.5, &mut b.clone()), 0.25);
        assert_eq!(bucket_fraction(2.0, 1.0, &mut b.clone()), 0.0);
        assert_eq!(bucket_fraction(f64::NEG_INFINITY, f64::INFINITY, &mut b.clone()), 1.0);
        // Nothing of an infinitely wide bucket falls in a finite range.
        assert_eq!(bucket_fraction(2.5, 5.0, &mut b), 0.0);
        let mut negative = buckets(&[(-3.0, 10.0), (-2.0, 12.0), (f64::INFINITY, 100.0)]);
        assert_eq!(bucket_fraction(-4.0, -2.0, &mut negative), 0.02);
    }

    proptest! {
        #[test]
        fn quantile_is_monotone_in_q(mut values in proptest::collection::vec(-1e6f64..1e6, 1..30), a in 0.0f64..=1.0, b in 0.0f64..=1.0) {
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            let ql = quantile(low, &mut values.clone());
            let qh = quantile(high, &mut values);
            prop_assert!(ql <= qh + 1e-9 * qh.abs().max(1.0));
        }

        #[test]
        fn bucket_quantile_stays_within_finite_bounds(
            counts in proptest::collection::vec(0.0f64..1000.0, 2..10),
            q in 0.0f64..=1.0,
        ) {
            let mut cumulative = 0.0;
            let mut b: Vec<Bucket> = counts.iter().enumerate().map(|(i, c)| {
                cumulative += c;
                Bucket { upper_bound: (i + 1) as f64, count: cumulative }
            }).collect();
            b.push(Bucket { upper_bound: f64::INFINITY, count: cumulative });
            let value = bucket_quantile(q, &mut b).value;
            prop_assert!(value.is_nan() || (0.0..=counts.len() as f64).contains(&value), "{value}");
        }
    }
}
