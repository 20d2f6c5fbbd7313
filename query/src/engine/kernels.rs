//! The numeric kernels of PromQL's functions, as pure functions over one
//! series' samples (or one histogram's buckets).
//!
//! Results must match Prometheus 3.x to within 1e-9 relative, so each kernel
//! keeps Prometheus' order of floating-point operations, its compensated
//! summation and its handling of NaN and ±Inf, rather than a textbook formula
//! that rounds differently. Where Prometheus would produce no output sample the
//! kernel returns `None`; kernels returning a bare `f64` are only meaningful
//! for a non-empty window, and the caller emits nothing for an empty one.
//!
//! Timestamps are subtracted with wrapping arithmetic: Go's int64 wraps, and a
//! debug-build overflow panic on absurd timestamps would be worse than the
//! (equally absurd) number Prometheus returns.

use tidewatch_model::seam::NO_START_TIMESTAMP;
use tidewatch_model::{Sample, TimestampMs, is_stale_nan};

/// One step of Kahan–Babuška (Neumaier) summation: adds `inc` to `sum`, and
/// the rounding error to the compensation `c`. The final value is `sum + c`.
///
/// Once the running sum is infinite the compensation is meaningless (it would
/// turn into NaN on the next `Inf - Inf`), so it is reset to zero.
pub(crate) fn kahan_sum_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        // Neumaier's improvement: the larger magnitude operand loses nothing,
        // so the error is recovered from the smaller one.
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// A running mean, as Prometheus averages (`avg`, `avg_over_time`): a
/// compensated sum while it stays finite; once it would overflow, an
/// incremental mean, so averaging huge values still gives a finite answer.
#[derive(Debug, Clone, Copy, Default)]
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
            // Overflow: continue from the mean of what was summed so far, with
            // the compensation scaled alike.
            self.incremental = true;
            self.mean = self.sum / (self.count - 1.0);
            self.compensation /= self.count - 1.0;
        }
        let q = (self.count - 1.0) / self.count;
        (self.mean, self.compensation) = kahan_sum_inc(v / self.count, q * self.mean, q * self.compensation);
    }

    pub(crate) fn value(&self) -> f64 {
        if self.incremental {
            self.mean + self.compensation
        } else {
            self.sum / self.count + self.compensation / self.count
        }
    }
}

/// Milliseconds from `from` to `to` as seconds, the way Prometheus converts
/// int64 millisecond differences (`float64(d) / 1000`).
fn seconds_between(from: i64, to: i64) -> f64 {
    to.wrapping_sub(from) as f64 / 1000.0
}

/// A range duration in seconds, computed as Go's `time.Duration.Seconds` does
/// (whole seconds plus the sub-second remainder divided by 1e9). For ranges
/// that are not whole seconds this can differ in the last bit from
/// `ms / 1000.0`, and `rate` divides by exactly this number.
fn range_seconds(range_ms: i64) -> f64 {
    let whole = range_ms / 1000;
    let rem_ns = (range_ms % 1000) * 1_000_000;
    whole as f64 + rem_ns as f64 / 1e9
}

/// `rate` (`is_counter && is_rate`), `increase` (`is_counter`) and `delta`
/// (neither) over one series' samples in the left-open window
/// `(range_start, range_end]`.
///
/// The raw difference (plus the pre-reset value at each counter reset) is
/// extrapolated towards the window's edges: all the way if the first/last
/// sample is within 1.1 average intervals of the edge, else by half an average
/// interval, as the series probably started or ended inside the window. A
/// counter is never extrapolated below zero. Fewer than two samples give no
/// output.
pub(crate) fn extrapolated_rate(
    samples: &[Sample],
    range_start: i64,
    range_end: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    let [first, .., last] = samples else {
        return None;
    };
    let mut result = last.value - first.value;
    if is_counter {
        // A decrease is a reset to zero: what the counter had reached before it
        // was lost from the difference and is added back.
        for pair in samples.windows(2) {
            if pair[1].value < pair[0].value {
                result += pair[0].value;
            }
        }
    }

    let zero_point = (is_counter && result > 0.0 && first.value >= 0.0).then(|| first.value / result);
    let window = Window {
        first: first.timestamp,
        last: last.timestamp,
        intervals: samples.len() - 1,
        range_start,
        range_end,
    };
    Some(result * extrapolation_factor(window, zero_point, is_rate))
}

/// Where the samples of a rate's window sit in it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub first: i64,
    pub last: i64,
    /// Samples minus one (at least one).
    pub intervals: usize,
    pub range_start: i64,
    pub range_end: i64,
}

/// The factor that extrapolates a difference over `window`'s samples to the
/// window's edges (per second with `is_rate`), shared by float and histogram
/// rates. `zero_point`, for counters going up from a non-negative start, is
/// `first / difference`: the left extrapolation stops where the counter's line
/// would reach zero.
pub(crate) fn extrapolation_factor(window: Window, zero_point: Option<f64>, is_rate: bool) -> f64 {
    let mut to_start = seconds_between(window.range_start, window.first);
    let mut to_end = seconds_between(window.last, window.range_end);
    let sampled = seconds_between(window.first, window.last);
    let average_interval = sampled / window.intervals as f64;
    let threshold = average_interval * 1.1;

    if to_start >= threshold {
        to_start = average_interval / 2.0;
    }
    if let Some(ratio) = zero_point {
        // Going further left would extrapolate to negative counts.
        let to_zero = sampled * ratio;
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average_interval / 2.0;
    }

    // Two samples at one timestamp cannot be extrapolated; newer Prometheus
    // leaves the difference as it is rather than dividing by zero.
    let mut factor = if sampled != 0.0 {
        (sampled + to_start + to_end) / sampled
    } else {
        1.0
    };
    if is_rate {
        factor /= range_seconds(window.range_end.wrapping_sub(window.range_start));
    }
    factor
}

// ---- sample start timestamps ------------------------------------------
//
// A sample's start timestamp (ST) says when the count it reports began; 0
// ([`NO_START_TIMESTAMP`]) when it does not say. The counter functions that
// read them (`rate`, `increase`, `irate`, `resets`, as in Prometheus 3) learn
// two things from them: a counter restarted between two samples even if the
// value did not drop, and a counter that started inside a `rate` window was
// zero at its start, so there is no need to guess (extrapolate) how far left
// the series goes. Series without start timestamps take the kernels above,
// unchanged: callers choose once per window, never per sample.

/// Whether `start`, the start timestamp of a sample at `time`, says its
/// counter restarted since the previous sample (at `previous_time`, with
/// start timestamp `previous_start`).
///
/// - No start, a start after the sample itself (invalid) or at it
///   (OpenTelemetry's "start unknown") say nothing.
/// - A start before the previous sample: the count ran through it, no reset.
/// - A start after the previous sample: the counter began again after it.
/// - A start exactly at the previous sample is a delta sample (counting
///   from where the previous one ended: a reset) when the previous sample
///   had a real start of its own; after a sample with no start, or one at or
///   after its own time, it is a cumulative series whose first start was
///   unknown, and no reset.
pub(crate) fn start_timestamp_reset(
    previous_start: TimestampMs,
    previous_time: TimestampMs,
    start: TimestampMs,
    time: TimestampMs,
) -> bool {
    if start == NO_START_TIMESTAMP || start >= time || start < previous_time {
        return false;
    }
    if start > previous_time {
        return true;
    }
    previous_start != NO_START_TIMESTAMP && previous_start < previous_time
}

/// Whether a sample's start timestamp reaches back before the previous
/// sample without being that sample's start too: two counts claiming the
/// same time (Prometheus warns). A delta sample starts at the previous
/// sample, a cumulative one shares its start: neither overlaps.
pub(crate) fn start_time_overlap(previous_start: TimestampMs, previous_time: TimestampMs, start: TimestampMs) -> bool {
    start != NO_START_TIMESTAMP && start < previous_time && start != previous_start
}

/// Whether any sample of a window overlaps its predecessor
/// ([`start_time_overlap`]); `times` are the samples' timestamps, `starts`
/// their start timestamps.
pub(crate) fn any_start_time_overlap(times: impl IntoIterator<Item = TimestampMs>, starts: &[TimestampMs]) -> bool {
    let mut previous: Option<(TimestampMs, TimestampMs)> = None;
    for (time, &start) in times.into_iter().zip(starts) {
        if let Some((previous_time, previous_start)) = previous
            && start_time_overlap(previous_start, previous_time, start)
        {
            return true;
        }
        previous = Some((time, start));
    }
    false
}

/// The first sample's start timestamp if the counter started inside the
/// window `(range_start, …]` before that sample: then it was zero there.
pub(crate) fn start_inside_window(first_start: TimestampMs, range_start: i64, first_time: i64) -> Option<TimestampMs> {
    (first_start != NO_START_TIMESTAMP && first_start > range_start && first_start < first_time).then_some(first_start)
}

/// The factor for a counter that was zero at `start`, inside the window
/// before its first sample (see [`start_inside_window`]): the increase is
/// measured from there, so nothing is extrapolated on the left; the right
/// side is extrapolated as usual (not at all for a single sample, which has
/// no average interval).
pub(crate) fn start_anchored_factor(window: Window, start: TimestampMs, is_rate: bool) -> f64 {
    let average_interval = if window.intervals > 0 {
        seconds_between(window.first, window.last) / window.intervals as f64
    } else {
        0.0
    };
    let mut to_end = seconds_between(window.last, window.range_end);
    if to_end >= average_interval * 1.1 {
        to_end = average_interval / 2.0;
    }
    // Positive: `start` is before the first sample, so before the last.
    let sampled = seconds_between(start, window.last);
    let mut factor = (sampled + to_end) / sampled;
    if is_rate {
        factor /= range_seconds(window.range_end.wrapping_sub(window.range_start));
    }
    factor
}

/// [`extrapolated_rate`] of a counter (`rate` with `is_rate`, `increase`)
/// whose samples have start timestamps (`starts`, parallel to `samples`; an
/// entry may be [`NO_START_TIMESTAMP`]). A start-timestamp reset counts like
/// a drop in value ([`start_timestamp_reset`]). When the first sample's
/// counter started inside the window, the increase runs from zero at that
/// start instead of being extrapolated to the left, which also gives a
/// single sample a value. Otherwise, as without start timestamps.
pub(crate) fn counter_rate_with_starts(
    samples: &[Sample],
    starts: &[TimestampMs],
    range_start: i64,
    range_end: i64,
    is_rate: bool,
) -> Option<f64> {
    debug_assert_eq!(samples.len(), starts.len());
    let (first, last) = (samples.first()?, samples.last()?);
    let mut result = last.value - first.value;
    for (pair, pair_starts) in samples.windows(2).zip(starts.windows(2)) {
        let (previous, current) = (pair[0], pair[1]);
        let start_reset = start_timestamp_reset(pair_starts[0], previous.timestamp, pair_starts[1], current.timestamp);
        if current.value < previous.value || start_reset {
            result += previous.value;
        }
    }
    let window = Window {
        first: first.timestamp,
        last: last.timestamp,
        intervals: samples.len() - 1,
        range_start,
        range_end,
    };
    let first_start = starts.first().copied().unwrap_or(NO_START_TIMESTAMP);
    if let Some(start) = start_inside_window(first_start, range_start, first.timestamp) {
        // The first sample's value was counted from zero at `start`.
        result += first.value;
        return Some(result * start_anchored_factor(window, start, is_rate));
    }
    if samples.len() < 2 {
        return None;
    }
    let zero_point = (result > 0.0 && first.value >= 0.0).then(|| first.value / result);
    Some(result * extrapolation_factor(window, zero_point, is_rate))
}

/// `irate` over samples with start timestamps: as [`instant_rate`], a
/// start-timestamp reset between the last two samples counting like a drop.
pub(crate) fn counter_instant_rate_with_starts(samples: &[Sample], starts: &[TimestampMs]) -> Option<f64> {
    let ([.., previous, last], [.., previous_start, last_start]) = (samples, starts) else {
        return instant_rate(samples, true);
    };
    let interval_ms = last.timestamp.wrapping_sub(previous.timestamp);
    if interval_ms == 0 {
        return None;
    }
    let start_reset = start_timestamp_reset(*previous_start, previous.timestamp, *last_start, last.timestamp);
    let increase = if last.value < previous.value || start_reset {
        last.value
    } else {
        last.value - previous.value
    };
    Some(increase / (interval_ms as f64 / 1000.0))
}

/// `resets` over samples with start timestamps: drops in value and
/// start-timestamp resets ([`start_timestamp_reset`]).
pub(crate) fn resets_with_starts(samples: &[Sample], starts: &[TimestampMs]) -> f64 {
    samples
        .windows(2)
        .zip(starts.windows(2))
        .filter(|(pair, pair_starts)| {
            pair[1].value < pair[0].value
                || start_timestamp_reset(pair_starts[0], pair[0].timestamp, pair_starts[1], pair[1].timestamp)
        })
        .count() as f64
}

/// `irate` (`is_rate`) and `idelta`: the difference of the last two samples,
/// per second for `irate`. For `irate` a decrease is a counter reset, so the
/// increase is the last value itself. No output for fewer than two samples or
/// two samples at one timestamp.
pub(crate) fn instant_rate(samples: &[Sample], is_rate: bool) -> Option<f64> {
    let [.., previous, last] = samples else {
        return None;
    };
    let interval_ms = last.timestamp.wrapping_sub(previous.timestamp);
    if interval_ms == 0 {
        return None;
    }
    // Written as "not a decrease" so that a NaN on either side takes the
    // subtraction branch and yields NaN, as in Prometheus.
    let mut result = if is_rate && last.value < previous.value {
        last.value
    } else {
        last.value - previous.value
    };
    if is_rate {
        result /= interval_ms as f64 / 1000.0;
    }
    Some(result)
}

/// `resets`: how many times the value decreased. The caller emits nothing for
/// an empty window (this returns 0 there).
pub(crate) fn resets(samples: &[Sample]) -> f64 {
    samples.windows(2).filter(|pair| pair[1].value < pair[0].value).count() as f64
}

/// `changes`: how many times the value differed from the previous one. NaN
/// followed by NaN is no change (though `NaN != NaN`). The caller emits
/// nothing for an empty window (this returns 0 there).
pub(crate) fn changes(samples: &[Sample]) -> f64 {
    samples
        .windows(2)
        .filter(|pair| {
            let (previous, current) = (pair[0].value, pair[1].value);
            current != previous && !(current.is_nan() && previous.is_nan())
        })
        .count() as f64
}

/// Least-squares line through the samples, with x in seconds relative to
/// `intercept_time_ms`: returns (slope, value at `intercept_time_ms`).
///
/// Sums are compensated, and x is taken relative to a nearby time so that
/// squaring Unix-epoch seconds does not eat the precision. A constant series
/// is answered exactly (slope 0) instead of through `0/0`-prone arithmetic,
/// except a constant ±Inf, which is NaN like any other infinite input.
fn linear_regression(samples: &[Sample], intercept_time_ms: i64) -> (f64, f64) {
    let Some(first) = samples.first() else {
        return (f64::NAN, f64::NAN);
    };
    let init_y = first.value;
    // `!=` rather than a bitwise check so a NaN anywhere (even a leading one)
    // counts as "not constant", as in Prometheus.
    let const_y = samples[1..].iter().all(|s| s.value == init_y);

    let mut n = 0.0;
    let (mut sum_x, mut c_x) = (0.0, 0.0);
    let (mut sum_y, mut c_y) = (0.0, 0.0);
    let (mut sum_xy, mut c_xy) = (0.0, 0.0);
    let (mut sum_x2, mut c_x2) = (0.0, 0.0);
    for s in samples {
        n += 1.0;
        let x = seconds_between(intercept_time_ms, s.timestamp);
        (sum_x, c_x) = kahan_sum_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_sum_inc(s.value, sum_y, c_y);
        (sum_xy, c_xy) = kahan_sum_inc(x * s.value, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_sum_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sum_x += c_x;
    sum_y += c_y;
    sum_xy += c_xy;
    sum_x2 += c_x2;

    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

/// `deriv`: the per-second slope of the least-squares line. x is measured from
/// the first sample, which only serves precision. No output for fewer than two
/// samples.
pub(crate) fn deriv(samples: &[Sample]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    Some(linear_regression(samples, samples[0].timestamp).0)
}

/// `predict_linear`: the least-squares line's value `duration_s` seconds after
/// `eval_time_ms`. `eval_time_ms` is the evaluation step's time (Prometheus'
/// `enh.Ts`), not the range's end, so with `@` or `offset` the prediction is
/// still anchored at the step. No output for fewer than two samples.
pub(crate) fn predict_linear(samples: &[Sample], eval_time_ms: i64, duration_s: f64) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (slope, intercept) = linear_regression(samples, eval_time_ms);
    Some(slope * duration_s + intercept)
}

/// `double_exponential_smoothing` (Holt's linear method) with smoothing factor
/// `sf` and trend factor `tf`, both validated by the caller to lie in (0, 1).
/// The initial trend is the first difference. No output for fewer than two
/// samples.
pub(crate) fn double_exponential_smoothing(
    samples: &[Sample],
    smoothing_factor: f64,
    trend_factor: f64,
) -> Option<f64> {
    let [first, second, ..] = samples else {
        return None;
    };
    let (sf, tf) = (smoothing_factor, trend_factor);
    // s1 is the smoothed value so far, s0 the one before it, b the trend.
    let mut s0 = 0.0;
    let mut s1 = first.value;
    let mut b = second.value - first.value;
    for (i, sample) in samples.iter().enumerate().skip(1) {
        let x = sf * sample.value;
        // The first step uses the initial trend as it is; later steps blend
        // the last smoothed slope into it.
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

/// `avg_over_time`. Averages as sum/count with compensated summation, which
/// Prometheus found more accurate than an incremental mean, but switches to
/// the incremental mean once the running sum would overflow, so that large
/// finite inputs still give a finite mean. NaN for an empty window.
pub(crate) fn avg_over_time(samples: &[Sample]) -> f64 {
    let Some((first, rest)) = samples.split_first() else {
        return f64::NAN;
    };
    let mut mean = Mean::new(first.value);
    for sample in rest {
        mean.add(sample.value);
    }
    mean.value()
}

/// `sum_over_time`, compensated. An infinite sum is returned as is, since
/// adding the (reset) compensation could only turn `Inf` into NaN.
pub(crate) fn sum_over_time(samples: &[Sample]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for sample in samples {
        (sum, c) = kahan_sum_inc(sample.value, sum, c);
    }
    if sum.is_infinite() { sum } else { sum + c }
}

/// `stdvar_over_time`: population variance by Welford's online algorithm, with
/// both the running mean and the sum of squared deviations compensated. NaN
/// for an empty window.
pub(crate) fn stdvar_over_time(samples: &[Sample]) -> f64 {
    let mut count = 0.0;
    let (mut mean, mut c_mean) = (0.0, 0.0);
    let (mut aux, mut c_aux) = (0.0, 0.0);
    for sample in samples {
        count += 1.0;
        let delta = sample.value - (mean + c_mean);
        (mean, c_mean) = kahan_sum_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_sum_inc(delta * (sample.value - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// `stddev_over_time`: the square root of [`stdvar_over_time`].
pub(crate) fn stddev_over_time(samples: &[Sample]) -> f64 {
    stdvar_over_time(samples).sqrt()
}

/// The sample `better` prefers, scanning from the first: a candidate replaces
/// the current pick when `better(candidate, pick)` holds or the pick is NaN, so
/// a leading NaN gives way to the first real number after it.
fn pick_over_time(samples: &[Sample], better: impl Fn(f64, f64) -> bool) -> Option<Sample> {
    let mut pick = *samples.first()?;
    for sample in samples {
        if better(sample.value, pick.value) || pick.value.is_nan() {
            pick = *sample;
        }
    }
    Some(pick)
}

/// `min_over_time`. NaNs are ignored unless every value is NaN. NaN for an
/// empty window.
pub(crate) fn min_over_time(samples: &[Sample]) -> f64 {
    pick_over_time(samples, |value, min| value < min).map_or(f64::NAN, |s| s.value)
}

/// `max_over_time`. NaNs are ignored unless every value is NaN. NaN for an
/// empty window.
pub(crate) fn max_over_time(samples: &[Sample]) -> f64 {
    pick_over_time(samples, |value, max| value > max).map_or(f64::NAN, |s| s.value)
}

/// `ts_of_min_over_time`: the time in seconds of the minimum; of the *last*
/// sample holding it when it occurs more than once (Prometheus compares with
/// `<=`). NaN for an empty window.
pub(crate) fn ts_of_min_over_time(samples: &[Sample]) -> f64 {
    pick_over_time(samples, |value, min| value <= min).map_or(f64::NAN, |s| s.timestamp as f64 / 1000.0)
}

/// `ts_of_max_over_time`: the time in seconds of the maximum; of the *last*
/// sample holding it when it occurs more than once. NaN for an empty window.
pub(crate) fn ts_of_max_over_time(samples: &[Sample]) -> f64 {
    pick_over_time(samples, |value, max| value >= max).map_or(f64::NAN, |s| s.timestamp as f64 / 1000.0)
}

/// `mad_over_time`: the median of the absolute deviations from the median.
/// A NaN makes the median undefined, so any NaN gives NaN (Prometheus does
/// not drop it). NaN for an empty window.
pub(crate) fn mad_over_time(samples: &[Sample]) -> f64 {
    if samples.iter().any(|s| s.value.is_nan()) {
        return f64::NAN;
    }
    let mut values: Vec<f64> = samples.iter().map(|s| s.value).collect();
    let median = quantile(0.5, &mut values);
    for value in &mut values {
        *value = (*value - median).abs();
    }
    quantile(0.5, &mut values)
}

/// The φ-quantile of `values` (for `quantile_over_time` and the `quantile`
/// aggregation), interpolating linearly between the two closest ranks. Sorts
/// `values` in place, NaNs first as Prometheus orders them.
///
/// NaN for no values or a NaN `q`; −Inf for `q < 0`, +Inf for `q > 1`.
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
    values.sort_unstable_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        (false, false) => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    // Kept as the weighted sum (not lower + (upper-lower)·w) because that is
    // what Prometheus computes, including its NaN for `Inf·0`.
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// One bucket of a classic histogram: the cumulative count of observations
/// less than or equal to `upper_bound` (the `le` label).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bucket {
    pub upper_bound: f64,
    pub count: f64,
}

/// What [`bucket_quantile`] computed and what it had to repair on the way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct QuantileOutcome {
    pub value: f64,
    /// Some bucket count decreased and was raised to its predecessor's; the
    /// caller adds Prometheus' "needed to be fixed for monotonicity" info.
    pub forced_monotonicity: bool,
    /// Some neighbouring counts differed only by floating-point noise (relative
    /// difference below 1e-12) and were made equal. Not reported to users.
    pub fixed_precision: bool,
    /// Smallest and largest upper bound whose count was raised, and the largest
    /// decrease removed; the detail of the monotonicity annotation. Only
    /// meaningful when `forced_monotonicity` is set.
    pub min_bucket: f64,
    pub max_bucket: f64,
    pub max_diff: f64,
}

/// Relative difference below which neighbouring bucket counts are taken to be
/// equal: such differences come from float noise (e.g. sharded summation), and
/// one real observation is only that small a change in a bucket of 1e12.
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

/// Sorts by upper bound. Bounds come from parsed `le` labels, so NaN is
/// possible; Go's comparator treats it as equal to everything, which makes the
/// outcome order-dependent. A total order with NaN above +Inf keeps the sort
/// from panicking and makes such input deterministic: its top bucket is then
/// not +Inf, so the answer is NaN. The sort is stable so duplicate bounds are
/// coalesced in input order.
fn sort_by_upper_bound(buckets: &mut [Bucket]) {
    buckets.sort_by(|a, b| {
        a.upper_bound
            .partial_cmp(&b.upper_bound)
            .unwrap_or_else(|| a.upper_bound.is_nan().cmp(&b.upper_bound.is_nan()))
    });
}

/// Merges neighbouring buckets with equal bounds (`le="0.2"` and `le="2e-1"`
/// are one bucket) by adding their counts. Expects sorted input.
fn coalesce(buckets: &mut Vec<Bucket>) {
    buckets.dedup_by(|next, kept| {
        if next.upper_bound == kept.upper_bound {
            kept.count += next.count;
            true
        } else {
            false
        }
    });
}

/// Prometheus' approximate float equality (`util/almost.Equal`): relative
/// difference below `epsilon`, with a floor near zero, both NaN counting as
/// equal, and the staleness marker equal only to itself.
pub(crate) fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if is_stale_nan(a) || is_stale_nan(b) {
        return is_stale_nan(a) && is_stale_nan(b);
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < epsilon * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// Makes cumulative counts non-decreasing, which the rank search relies on.
/// First, counts that differ from the last accepted count only by float noise
/// are set equal to it (in either direction); then any real decrease is raised
/// to the last accepted count. Returns the outcome's repair fields.
fn ensure_monotonic(buckets: &mut [Bucket], outcome: &mut QuantileOutcome) {
    outcome.min_bucket = f64::INFINITY;
    outcome.max_bucket = f64::NEG_INFINITY;
    outcome.max_diff = 0.0;
    let Some(first) = buckets.first() else {
        return;
    };
    let mut previous = first.count;
    for bucket in &mut buckets[1..] {
        let current = bucket.count;
        if current == previous {
            continue;
        }
        // In both repairs `previous` stays: the repaired bucket now equals it.
        if almost_equal(previous, current, SMALL_DELTA_TOLERANCE) {
            bucket.count = previous;
            outcome.fixed_precision = true;
            continue;
        }
        if current < previous {
            bucket.count = previous;
            outcome.forced_monotonicity = true;
            outcome.min_bucket = outcome.min_bucket.min(bucket.upper_bound);
            outcome.max_bucket = outcome.max_bucket.max(bucket.upper_bound);
            if previous - current > outcome.max_diff {
                outcome.max_diff = previous - current;
            }
            continue;
        }
        previous = current;
    }
}

/// Go's `sort.Search`: the first index in `0..n` where `pred` holds, by the
/// same bisection, so that a predicate made non-monotone by NaN counts still
/// lands on the index Prometheus finds.
fn search(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// `histogram_quantile` over one classic histogram's buckets, in any order
/// (they are sorted, and duplicate bounds merged, in place).
///
/// Observations are assumed uniform within a bucket. The lowest bucket spans
/// from 0 when its bound is positive; if its bound is ≤ 0 that bound itself is
/// the answer. A quantile in the +Inf bucket is the highest finite bound.
///
/// NaN for a NaN `q`, a missing +Inf bucket, fewer than two buckets or no
/// observations; −Inf for `q < 0` and +Inf for `q > 1` (checked first, so even
/// without buckets).
pub(crate) fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> QuantileOutcome {
    let mut outcome = QuantileOutcome {
        value: f64::NAN,
        forced_monotonicity: false,
        fixed_precision: false,
        min_bucket: 0.0,
        max_bucket: 0.0,
        max_diff: 0.0,
    };
    if q.is_nan() {
        return outcome;
    }
    if q < 0.0 {
        outcome.value = f64::NEG_INFINITY;
        return outcome;
    }
    if q > 1.0 {
        outcome.value = f64::INFINITY;
        return outcome;
    }
    sort_by_upper_bound(buckets);
    if buckets.last().is_none_or(|b| b.upper_bound != f64::INFINITY) {
        return outcome;
    }
    coalesce(buckets);
    ensure_monotonic(buckets, &mut outcome);

    let len = buckets.len();
    if len < 2 {
        return outcome;
    }
    let observations = buckets[len - 1].count;
    if observations == 0.0 {
        return outcome;
    }
    let mut rank = q * observations;
    let b = search(len - 1, |i| buckets[i].count >= rank);

    outcome.value = if b == len - 1 {
        buckets[len - 2].upper_bound
    } else if b == 0 && buckets[0].upper_bound <= 0.0 {
        buckets[0].upper_bound
    } else {
        let bucket_end = buckets[b].upper_bound;
        let mut bucket_start = 0.0;
        let mut count = buckets[b].count;
        if b > 0 {
            bucket_start = buckets[b - 1].upper_bound;
            count -= buckets[b - 1].count;
            rank -= buckets[b - 1].count;
        }
        bucket_start + (bucket_end - bucket_start) * (rank / count)
    };
    outcome
}

/// `histogram_fraction` over one classic histogram's buckets, in any order
/// (sorted and coalesced in place): the share of observations between `lower`
/// and `upper`, interpolating linearly inside the buckets the limits fall in.
///
/// The lowest bucket spans from 0 when its bound is positive, else from −Inf.
/// Buckets with an infinite side contribute nothing when a limit falls inside
/// them (there is nothing to interpolate over). Unlike `bucket_quantile`,
/// counts are not repaired for monotonicity, as in Prometheus.
///
/// NaN without a +Inf bucket, without observations or for a NaN limit; 0 when
/// `lower >= upper`.
pub(crate) fn bucket_fraction(lower: f64, upper: f64, buckets: &mut Vec<Bucket>) -> f64 {
    sort_by_upper_bound(buckets);
    if buckets.last().is_none_or(|b| b.upper_bound != f64::INFINITY) {
        return f64::NAN;
    }
    coalesce(buckets);

    let count = buckets[buckets.len() - 1].count;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }

    // Cumulative count below the current bucket.
    let mut rank = 0.0;
    let mut lower_rank = None;
    let mut upper_rank = None;
    let mut lower_bound = if buckets[0].upper_bound <= 0.0 {
        f64::NEG_INFINITY
    } else {
        0.0
    };
    for (i, bucket) in buckets.iter().enumerate() {
        if i > 0 {
            lower_bound = buckets[i - 1].upper_bound;
        }
        let upper_bound = bucket.upper_bound;
        let interpolate = |v: f64| {
            // (v − −Inf)/(b − −Inf) would be Inf/Inf = NaN; the whole lowest
            // bucket counts instead. A +Inf upper bound needs no case: v/Inf
            // is 0, so nothing of that bucket counts.
            if lower_bound == f64::NEG_INFINITY {
                bucket.count
            } else {
                rank + (bucket.count - rank) * (v - lower_bound) / (upper_bound - lower_bound)
            }
        };

        // A limit at or below this bucket's lower edge was passed already:
        // everything below the edge is below the limit.
        if lower_rank.is_none() && lower_bound >= lower {
            lower_rank = Some(rank);
        }
        if upper_rank.is_none() && lower_bound >= upper {
            upper_rank = Some(rank);
        }
        if lower_rank.is_some() && upper_rank.is_some() {
            break;
        }
        if lower_rank.is_none() && lower_bound < lower && upper_bound > lower {
            lower_rank = Some(interpolate(lower));
        }
        if upper_rank.is_none() && lower_bound < upper && upper_bound > upper {
            upper_rank = Some(interpolate(upper));
        }
        if lower_rank.is_some() && upper_rank.is_some() {
            break;
        }
        rank = bucket.count;
    }
    let clamp = |r: Option<f64>| match r {
        Some(r) if r <= count => r,
        _ => count,
    };
    (clamp(upper_rank) - clamp(lower_rank)) / count
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ---- helpers -------------------------------------------------------

    /// Expands promqltest series notation (`0+10x10`, `1 2 _ 3`, `5x3`,
    /// `_x2`, `NaN`, `Inf`): `None` is a missing value. Steps are applied by
    /// repeated addition, as the test format specifies.
    fn expand(spec: &str) -> Vec<Option<f64>> {
        fn num(s: &str) -> f64 {
            match s.to_ascii_lowercase().as_str() {
                "inf" | "+inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                "nan" => f64::NAN,
                other => other.parse().unwrap(),
            }
        }
        let mut out = Vec::new();
        for item in spec.split_whitespace() {
            let (body, times) = match item.split_once('x') {
                Some((body, n)) => (body, Some(n.parse::<usize>().unwrap())),
                None => (item, None),
            };
            if body == "_" {
                out.extend(std::iter::repeat_n(None, times.unwrap_or(1)));
                continue;
            }
            // The step's sign is the first '+'/'-' after the start that does
            // not belong to an exponent.
            let bytes = body.as_bytes();
            let split = (1..bytes.len())
                .find(|&i| (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
            match (split, times) {
                (Some(i), Some(n)) => {
                    let mut v = num(&body[..i]);
                    let step = num(&body[i..]);
                    for _ in 0..=n {
                        out.push(Some(v));
                        v += step;
                    }
                }
                (None, Some(n)) => out.extend(std::iter::repeat_n(Some(num(body)), n + 1)),
                _ => out.push(Some(num(body))),
            }
        }
        out
    }

    /// A series loaded like promqltest's `load <interval_ms>`.
    fn load(interval_ms: i64, spec: &str) -> Vec<Sample> {
        expand(spec)
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| Sample::new(i as i64 * interval_ms, v)))
            .collect()
    }

    /// The samples a range selector `[range_ms]` sees at `end_ms`: the
    /// left-open window `(end - range, end]`.
    fn window(series: &[Sample], end_ms: i64, range_ms: i64) -> Vec<Sample> {
        series
            .iter()
            .filter(|s| s.timestamp > end_ms - range_ms && s.timestamp <= end_ms)
            .copied()
            .collect()
    }

    fn values(vs: &[f64]) -> Vec<Sample> {
        vs.iter()
            .enumerate()
            .map(|(i, &v)| Sample::new(i as i64 * 10_000, v))
            .collect()
    }

    const S: i64 = 1000;
    const M: i64 = 60 * S;

    /// Equal within `rel` relative (absolute near zero); NaN equals NaN and
    /// infinities must match exactly.
    #[track_caller]
    fn assert_close(got: f64, want: f64, rel: f64) {
        if want.is_nan() {
            assert!(got.is_nan(), "got {got}, want NaN");
        } else if want.is_infinite() || want == 0.0 {
            assert!(
                got == want || (want == 0.0 && got.abs() < 1e-12),
                "got {got}, want {want}"
            );
        } else {
            assert!(((got - want) / want).abs() <= rel, "got {got}, want {want}");
        }
    }

    /// The precision the test scripts' expectations are written with is far
    /// coarser than our 1e-9 target for some values; use this for those.
    const SCRIPT: f64 = 1e-6;
    const EXACT: f64 = 1e-12;

    fn rate_at(series: &[Sample], end: i64, range: i64, counter: bool, rate: bool) -> Option<f64> {
        extrapolated_rate(&window(series, end, range), end - range, end, counter, rate)
    }

    // ---- Kahan ---------------------------------------------------------

    #[test]
    fn kahan_recovers_what_naive_summation_loses() {
        let xs = [1.0, 1e100, 1.0, -1e100];
        let naive: f64 = xs.iter().sum();
        assert_eq!(naive, 0.0);
        assert_eq!(sum_over_time(&values(&xs)), 2.0);
        assert_eq!(avg_over_time(&values(&xs)), 0.5);

        let tenths = [0.1; 10];
        let naive: f64 = tenths.iter().sum();
        assert_ne!(naive, 1.0);
        assert_eq!(sum_over_time(&values(&tenths)), 1.0);
    }

    #[test]
    fn kahan_compensation_resets_on_overflow() {
        let (sum, c) = kahan_sum_inc(f64::MAX, f64::MAX, 5.0);
        assert_eq!(sum, f64::INFINITY);
        assert_eq!(c, 0.0);
        // Neumaier: the small addend's lost part lands in c whichever side it is.
        let (sum, c) = kahan_sum_inc(1.0, 1e16, 0.0);
        assert_eq!(sum + c, 1e16 + 1.0);
        assert_eq!(c, 1.0);
        let (sum, c) = kahan_sum_inc(1e16, 1.0, 0.0);
        assert_eq!((sum, c), (1e16, 1.0));
    }

    // ---- rate / increase / delta --------------------------------------

    #[test]
    fn increase_extrapolates_and_clamps_at_zero() {
        // functions.test "Tests for increase()".
        let cases = [
            ("0+10x10", 100.0, 100.0),
            ("0+18x5 0+18x5", 160.0, 162.0),
            ("10+10x10", 100.0, 105.0),
            ("1+10x10", 100.0, 101.0),
        ];
        for (spec, over_50m, over_100m) in cases {
            let s = load(5 * M, spec);
            assert_close(rate_at(&s, 50 * M, 50 * M, true, false).unwrap(), over_50m, EXACT);
            assert_close(rate_at(&s, 50 * M, 100 * M, true, false).unwrap(), over_100m, EXACT);
        }
    }

    #[test]
    fn increase_adds_back_counter_resets() {
        let s = load(5 * M, "0 1 2 3 2 3 4");
        assert_close(rate_at(&s, 30 * M, 30 * M, true, false).unwrap(), 7.0, EXACT);
    }

    #[test]
    fn rate_cases_from_the_script() {
        let middle = load(5 * M, "0+27x4 0+27x5");
        assert_close(rate_at(&middle, 50 * M, 50 * M, true, true).unwrap(), 0.08, EXACT);

        // A reset as the only step: one sample in [5m] gives nothing, two in
        // [6m] give the post-reset value, extrapolated from 0 (zero clamp).
        let end = load(5 * M, "0+10x9 0 10");
        assert_eq!(rate_at(&end, 50 * M, 5 * M, true, true), None);
        assert_close(rate_at(&end, 50 * M, 6 * M, true, true).unwrap(), 0.0, EXACT);

        let window_total = load(5 * M, "0+80x10");
        assert_close(
            rate_at(&window_total, 50 * M, 50 * M, true, true).unwrap(),
            0.26666666666666666,
            EXACT,
        );

        // `[10m] offset 5m` at 50m is the window (35m, 45m].
        let a = load(5 * M, "0+10x10");
        let b = load(5 * M, "0+20x10");
        assert_close(
            rate_at(&a, 45 * M, 10 * M, true, true).unwrap(),
            0.03333333333333333,
            EXACT,
        );
        assert_close(
            rate_at(&b, 45 * M, 10 * M, true, true).unwrap(),
            0.06666666666666667,
            EXACT,
        );
    }

    #[test]
    fn rate_zero_cutoff_then_half_interval() {
        // load 4m; each series starts 1m further up its line towards 0.
        let expectations_at_10m = [0.5, 0.55, 0.6, 0.6, 0.6, 0.6];
        for (k, want) in expectations_at_10m.into_iter().enumerate() {
            let s = load(4 * M, &format!("{}+240x10", 60 * k));
            assert_close(rate_at(&s, 10 * M, 20 * M, true, true).unwrap(), want, EXACT);
            assert_close(rate_at(&s, 50 * M, 20 * M, true, true).unwrap(), 0.6, EXACT);
        }
    }

    #[test]
    fn delta_is_signed_and_not_clamped() {
        let up = load(5 * M, "0 50 100 150 200");
        let down = load(5 * M, "200 150 100 50 0");
        assert_close(rate_at(&up, 20 * M, 20 * M, false, false).unwrap(), 200.0, EXACT);
        assert_close(rate_at(&down, 20 * M, 20 * M, false, false).unwrap(), -200.0, EXACT);
        // Decreases are not resets for a gauge, and a gauge may extrapolate
        // below zero: 10 → 0 over 10s, window (0, 30s] with samples at 10..20.
        let g = [Sample::new(10 * S, 10.0), Sample::new(20 * S, 0.0)];
        // Start gap 10s < 11s: full; end gap 10s: full. −10 · 30/10.
        assert_close(extrapolated_rate(&g, 0, 30 * S, false, false).unwrap(), -30.0, EXACT);
    }

    #[test]
    fn extrapolation_limited_to_half_an_interval_beyond_threshold() {
        // Samples every 10s at 30..50s in (0, 60s]: 30s to the start is beyond
        // 1.1 intervals, so only 5s; 10s to the end is within, so all of it.
        let s = [30, 40, 50].map(|t| Sample::new(t * S, t as f64));
        let got = extrapolated_rate(&s, 0, 60 * S, false, false).unwrap();
        assert_close(got, 20.0 * (20.0 + 5.0 + 10.0) / 20.0, EXACT);
        // Exactly at the threshold (11s) counts as beyond it.
        let got = extrapolated_rate(&s, 19 * S, 61 * S, false, false).unwrap();
        assert_close(got, 20.0 * (20.0 + 5.0 + 5.0) / 20.0, EXACT);
        // The zero point of a counter limits the left side: 1 → 11 over 10s
        // reaches zero 1s before the first sample.
        let c = [Sample::new(10 * S, 1.0), Sample::new(20 * S, 11.0)];
        let got = extrapolated_rate(&c, 0, 30 * S, true, false).unwrap();
        assert_close(got, 10.0 * (10.0 + 1.0 + 10.0) / 10.0, EXACT);
        // A negative first value disables the zero clamp.
        let n = [Sample::new(10 * S, -1.0), Sample::new(20 * S, 9.0)];
        let got = extrapolated_rate(&n, 0, 30 * S, true, false).unwrap();
        assert_close(got, 30.0, EXACT);
    }

    #[test]
    fn rate_divides_by_the_range_like_go_durations() {
        let s = [Sample::new(0, 0.0), Sample::new(1234, 1.234)];
        let got = extrapolated_rate(&s, 0, 1234, false, true).unwrap();
        // No extrapolation (factor 1), then the factor is divided by the
        // Go-style seconds before it scales the difference.
        assert_eq!(got, 1.234 * (1.0 / (1.0 + 234_000_000.0 / 1e9)));
        assert_eq!(range_seconds(300_000), 300.0);
        assert_eq!(range_seconds(-1500), -1.5);
    }

    #[test]
    fn rate_edge_inputs() {
        assert_eq!(extrapolated_rate(&[], 0, 1000, true, true), None);
        assert_eq!(extrapolated_rate(&[Sample::new(5, 1.0)], 0, 1000, true, true), None);
        // Same timestamp twice: no division by zero.
        let same = [Sample::new(5, 1.0), Sample::new(5, 3.0)];
        assert_eq!(extrapolated_rate(&same, 0, 10, false, false), Some(2.0));
        let nan = [Sample::new(0, f64::NAN), Sample::new(10, 1.0)];
        assert!(extrapolated_rate(&nan, -10, 10, true, true).unwrap().is_nan());
        let extreme = [Sample::new(i64::MIN, 0.0), Sample::new(i64::MAX, 1.0)];
        let _ = extrapolated_rate(&extreme, i64::MAX, i64::MIN, true, true);
    }

    // ---- irate / idelta ------------------------------------------------

    #[test]
    fn irate_and_idelta_cases_from_the_script() {
        let foo = load(5 * M, "0+10x10");
        let bar = load(5 * M, "0+10x5 0+10x5");
        let irate = |s: &[Sample], end, range| instant_rate(&window(s, end, range), true);
        assert_close(irate(&foo, 50 * M, 50 * M).unwrap(), 1.0 / 30.0, EXACT);
        assert_close(irate(&bar, 50 * M, 50 * M).unwrap(), 1.0 / 30.0, EXACT);
        assert_close(irate(&foo, 30 * M, 50 * M).unwrap(), 1.0 / 30.0, EXACT);
        // At 30m bar has just reset from 50 to 0: the increase is 0.
        assert_close(irate(&bar, 30 * M, 50 * M).unwrap(), 0.0, EXACT);

        let nan = load(5 * M, "1 NaN NaN 5 11");
        let range = 15 * M + S;
        let irates: Vec<_> = (0..=4).map(|k| irate(&nan, k * 5 * M, range)).collect();
        assert_eq!(irates[0], None);
        assert!(irates[1..4].iter().all(|v| v.unwrap().is_nan()));
        assert_close(irates[4].unwrap(), 0.02, EXACT);
        let ideltas: Vec<_> = (0..=4)
            .map(|k| instant_rate(&window(&nan, k * 5 * M, range), false))
            .collect();
        assert_eq!(ideltas[0], None);
        assert!(ideltas[1..4].iter().all(|v| v.unwrap().is_nan()));
        assert_eq!(ideltas[4], Some(6.0));

        let up = load(5 * M, "0 50 100 150");
        let down = load(5 * M, "0 50 100 50");
        assert_eq!(instant_rate(&window(&up, 20 * M, 20 * M), false), Some(50.0));
        assert_eq!(instant_rate(&window(&down, 20 * M, 20 * M), false), Some(-50.0));
    }

    #[test]
    fn instant_rate_edges() {
        assert_eq!(instant_rate(&[], true), None);
        assert_eq!(instant_rate(&[Sample::new(0, 1.0)], true), None);
        assert_eq!(instant_rate(&[Sample::new(7, 1.0), Sample::new(7, 2.0)], true), None);
        // Reset: 10 → 4 over 2s is 4 new counts, 2 per second.
        assert_eq!(
            instant_rate(&[Sample::new(0, 10.0), Sample::new(2000, 4.0)], true),
            Some(2.0)
        );
    }

    // ---- resets / changes ----------------------------------------------

    #[test]
    fn resets_and_changes_from_the_script() {
        let foo = load(5 * M, "1 2 3 0 1 0 0 1 2 0");
        let bar = load(5 * M, "1 2 3 4 5 1 2 3 4 5");
        let biz = load(5 * M, "0 0 0 0 0 1 1 1 1 1");
        let at = |s: &[Sample], range| window(s, 50 * M, range);
        let cases = [
            (10 * M, [0.0, 0.0, 0.0], None),
            (20 * M, [1.0, 0.0, 0.0], Some([2.0, 2.0, 0.0])),
            (30 * M, [1.0, 0.0, 0.0], Some([3.0, 4.0, 0.0])),
            (32 * M, [2.0, 1.0, 0.0], None),
            (50 * M, [3.0, 1.0, 0.0], Some([7.0, 8.0, 1.0])),
        ];
        for (range, want_resets, want_changes) in cases {
            let got: Vec<f64> = [&foo, &bar, &biz].iter().map(|s| resets(&at(s, range))).collect();
            assert_eq!(got, want_resets, "resets over {range}ms");
            if let Some(want) = want_changes {
                let got: Vec<f64> = [&foo, &bar, &biz].iter().map(|s| changes(&at(s, range))).collect();
                assert_eq!(got, want, "changes over {range}ms");
            }
        }
    }

    #[test]
    fn changes_treats_nan_to_nan_as_unchanged() {
        assert_eq!(changes(&load(5 * M, "NaN NaN NaN")), 0.0);
        assert_eq!(changes(&load(5 * M, "0 NaN 0")), 2.0);
        // A NaN never counts as a decrease.
        assert_eq!(resets(&load(5 * M, "5 NaN 1")), 0.0);
        assert_eq!(resets(&[]), 0.0);
        assert_eq!(changes(&[]), 0.0);
    }

    // ---- deriv / predict_linear ----------------------------------------

    #[test]
    fn deriv_and_predict_linear_from_the_script() {
        let total = load(5 * M, "0+80x10");
        assert_close(
            deriv(&window(&total, 50 * M, 50 * M)).unwrap(),
            0.26666666666666666,
            EXACT,
        );

        let middle = load(5 * M, "0+10x4 0+10x5");
        assert_close(
            deriv(&window(&middle, 50 * M, 100 * M)).unwrap(),
            0.010606060606060607,
            EXACT,
        );

        let predict = |end, range, eval, d| predict_linear(&window(&middle, end, range), eval, d).unwrap();
        assert_close(predict(50 * M, 50 * M, 50 * M, 3600.0), 70.0, EXACT);
        // `[55m] @ 3000`: the window ends at 50m whatever the step, but the
        // line is read relative to the step's time.
        assert_close(predict(50 * M, 55 * M, 50 * M, 3600.0), 76.81818181818181, EXACT);
        assert_close(predict(50 * M, 55 * M, 10 * M, 3600.0), 51.36363636363637, EXACT);
        assert_close(predict(50 * M, 55 * M, 70 * M, 3600.0), 89.54545454545455, EXACT);

        // With a sample exactly on the line at the step, predict_linear is
        // that sample plus deriv times the duration.
        let w = window(&total, 50 * M, 50 * M);
        let emulated = 800.0 + deriv(&w).unwrap() * 3600.0;
        assert_close(predict_linear(&w, 50 * M, 3600.0).unwrap() - emulated, 0.0, EXACT);
    }

    #[test]
    fn regression_special_cases() {
        let inf = load(5 * M, "-Inf 0+80x10 Inf");
        assert!(deriv(&window(&inf, 100 * M, 100 * M)).unwrap().is_nan());
        assert!(
            predict_linear(&window(&inf, 100 * M, 100 * M), 100 * M, 6000.0)
                .unwrap()
                .is_nan()
        );
        // Constant: slope exactly 0 and the value itself, whatever the times.
        let c = load(5 * M, "1.5990505637277868x5");
        assert_eq!(deriv(&c), Some(0.0));
        assert_eq!(predict_linear(&c, 1_000_000_000_000, 1e9), Some(1.5990505637277868));
        let c_inf = load(5 * M, "Infx3");
        assert!(deriv(&c_inf).unwrap().is_nan());
        assert_eq!(deriv(&[Sample::new(0, 1.0)]), None);
        assert_eq!(predict_linear(&[], 0, 1.0), None);
    }

    // ---- double_exponential_smoothing ----------------------------------

    #[test]
    fn double_exponential_smoothing_from_the_script() {
        let at = |spec: &str, t_s: i64| {
            let s = load(10 * S, spec);
            double_exponential_smoothing(&window(&s, t_s * S, M), 0.01, 0.1).unwrap()
        };
        assert_close(at("0+10x1000 100+30x1000", 8000), 8000.0, SCRIPT);
        assert_close(at("0+20x1000 200+30x1000", 8000), 16000.0, SCRIPT);
        assert_close(at("0+30x1000 300+80x1000", 8000), 24000.0, SCRIPT);
        assert_close(at("0+40x2000", 8000), 32000.0, SCRIPT);
        assert_close(at("0+10x1000 100+30x1000", 20010), 30100.0, SCRIPT);
        assert_close(at("0+30x1000 300+80x1000", 20010), 80300.0, SCRIPT);
        assert_close(at("0+40x2000", 20010), 80000.0, SCRIPT);
        assert_close(at("8000-10x1000", 8000), 0.0, SCRIPT);
        assert_close(at("0-20x1000", 8000), -16000.0, SCRIPT);
        assert_close(at("0-40x1000 0+40x1000", 8000), -32000.0, SCRIPT);
    }

    #[test]
    fn double_exponential_smoothing_by_hand() {
        // 0, 10, 40 with sf = tf = 0.5:
        // i=1: b=10, s1 = 0.5·10 + 0.5·(0+10) = 10
        // i=2: b = 0.5·(10−0) + 0.5·10 = 10, s1 = 0.5·40 + 0.5·(10+10) = 30
        let s = values(&[0.0, 10.0, 40.0]);
        assert_eq!(double_exponential_smoothing(&s, 0.5, 0.5), Some(30.0));
        assert_eq!(double_exponential_smoothing(&s[..1], 0.5, 0.5), None);
    }

    // ---- *_over_time ---------------------------------------------------

    #[test]
    fn avg_and_sum_over_time_with_infinities_and_nan() {
        let cases = [
            ("1 2 3 4 5", 3.0),
            ("1 2 3 4 Inf", f64::INFINITY),
            ("1 2 3 4 -Inf", f64::NEG_INFINITY),
            ("1 2 3 Inf -Inf", f64::NAN),
            ("Inf 0 Inf", f64::INFINITY),
            ("Inf Inf Inf -Inf", f64::NAN),
            ("1 2 3 -Inf -Inf", f64::NEG_INFINITY),
            ("-Inf 0 -Inf", f64::NEG_INFINITY),
            ("-Inf -Inf -Inf Inf", f64::NAN),
            ("1 2 -Inf -Inf Inf", f64::NAN),
            ("1 2 3 NaN NaN", f64::NAN),
        ];
        for (spec, want) in cases {
            let s = load(10 * S, spec);
            assert_close(avg_over_time(&s), want, EXACT);
            let n = s.len() as f64;
            assert_close(sum_over_time(&s) / n, want, EXACT);
        }
        assert_eq!(avg_over_time(&load(10 * S, "1 2 3 NaN NaN")[..3]), 2.0);
        assert_eq!(avg_over_time(&[Sample::new(0, 5.0)]), 5.0);
        assert!(avg_over_time(&[]).is_nan());
        assert_eq!(sum_over_time(&[]), 0.0);
    }

    #[test]
    fn avg_over_time_switches_to_incremental_mean_on_overflow() {
        // The script's 9.988465674311579e+307, written as clippy wants it
        // (the same f64).
        let big = 9.988_465_674_311_58e307;
        let s = values(&[big, big]);
        assert_eq!(sum_over_time(&s), f64::INFINITY);
        assert_close(avg_over_time(&s), big, EXACT);
        let s = values(&[-big, -big, -big]);
        assert_eq!(sum_over_time(&s), f64::NEG_INFINITY);
        assert_close(avg_over_time(&s), -big, EXACT);
        assert_eq!(avg_over_time(&values(&[-big, big])), 0.0);
    }

    #[test]
    fn avg_over_time_extreme_magnitudes_from_the_script() {
        let cases: [(&[f64], f64); 11] = [
            (&[1e10, 1e-6, 1e-6, 1e-6, 1e-6, 1e-6], 1.6666666666666675e+09),
            (
                &[
                    5.30921651659898,
                    0.961118537914768,
                    1.62091361305318,
                    0.865089463758091,
                    0.323055185914577,
                    0.951811357687154,
                ],
                1.67186744582113,
            ),
            (&[1.78264e50, 0.76342771, 1.9592258, 7.69805412, 458.90154], 3.56528E+49),
            (&[0.76342771, 1.9592258, 7.69805412, 1.78264e50, 458.90154], 3.56528E+49),
            (
                &[1.78264E+50, 0.76342771, 1.9592258, 2.258E+220, 7.69805412, 458.90154],
                3.76333333333333E+219,
            ),
            (
                &[-1.78264E+50, 0.76342771, 1.9592258, 2.258E+220, 7.69805412, -458.90154],
                3.76333333333333E+219,
            ),
            (
                &[-1.78264E+50, 0.76342771, 1.9592258, -2.258E+220, 7.69805412, -458.90154],
                -3.76333333333333E+219,
            ),
            (
                &[-1.78264E+215, 0.76342771, 1.9592258, 2.258E+220, 7.69805412, -458.90154],
                3.76330362266667E+219,
            ),
            (
                &[
                    -1.78264E+215,
                    0.76342771,
                    1.9592258,
                    2.258E+220,
                    7.69805412,
                    1.78264E+215,
                    -458.90154,
                ],
                3.225714285714286e+219,
            ),
            (
                &[
                    -1.78264E+219,
                    0.76342771,
                    1.9592258,
                    2.3757689E+217,
                    -2.3757689E+217,
                    2.258E+220,
                    7.69805412,
                    1.78264E+219,
                    -458.90154,
                ],
                2.5088888888888888e+219,
            ),
            // The large values cancel exactly; even Kahan ends at 0 here, and
            // so does Prometheus.
            (
                &[
                    -2.258E+220,
                    -1.78264E+219,
                    0.76342771,
                    1.9592258,
                    2.3757689E+217,
                    -2.3757689E+217,
                    2.258E+220,
                    7.69805412,
                    1.78264E+219,
                    -458.90154,
                ],
                0.0,
            ),
        ];
        for (xs, want) in cases {
            // 1e-13 relative: the script's figures carry 15 significant digits.
            assert_close(avg_over_time(&values(xs)), want, 1e-13);
        }
    }

    #[test]
    fn avg_over_time_of_a_constant_is_exact() {
        let foo = load(10 * S, "52+0x100");
        for range_s in [100, 110, 120, 130] {
            assert_eq!(avg_over_time(&window(&foo, 10 * M, range_s * S)), 52.0);
        }
        let dense = load(1, "1+0x4000");
        for range in [1000, 1001, 1002, 1003, 2000, 2001, 2002, 2003, 3000, 3001, 3002, 3003] {
            assert_eq!(sum_over_time(&window(&dense, 4 * S, range)), range as f64);
        }
    }

    #[test]
    fn stdvar_and_stddev_over_time() {
        let s = load(10 * S, "0 8 8 2 3");
        assert_close(stdvar_over_time(&s), 10.56, EXACT);
        assert_close(stddev_over_time(&s), 3.249615, SCRIPT);
        // #4927: a constant must give exactly 0, not rounding noise.
        let c = load(10 * S, "1.5990505637277868x2");
        assert_eq!(stdvar_over_time(&c), 0.0);
        assert_eq!(stddev_over_time(&c), 0.0);
        assert_eq!(stdvar_over_time(&values(&[7.0])), 0.0);
        assert!(stdvar_over_time(&[]).is_nan());
        assert!(stdvar_over_time(&values(&[1.0, f64::NAN])).is_nan());
    }

    #[test]
    fn mad_over_time_from_the_script() {
        let s = load(10 * S, "4 6 2 1 999 1 2");
        assert_eq!(mad_over_time(&window(&s, 70 * S, 70 * S)), 1.0);
        assert_eq!(mad_over_time(&window(&load(10 * S, "1 2 3 4 5"), 40 * S, 50 * S)), 1.0);
        assert_eq!(mad_over_time(&window(&load(10 * S, "7 7 7 7 7"), 40 * S, 50 * S)), 0.0);
        assert_eq!(mad_over_time(&load(10 * S, "5")), 0.0);
        assert!(mad_over_time(&load(10 * S, "1 2 NaN 4")).is_nan());
        assert!(mad_over_time(&[]).is_nan());
    }

    #[test]
    fn min_and_max_over_time_skip_nan_unless_all_nan() {
        let cases = [
            ("2 0 3", 0.0, 3.0),
            ("2 0 NaN", 0.0, 2.0),
            ("2 NaN 1", 1.0, 2.0),
            ("NaN 0 1", 0.0, 1.0),
            ("NaN NaN NaN", f64::NAN, f64::NAN),
            ("_ 5 2 _ 4 _", 2.0, 5.0),
        ];
        for (spec, min, max) in cases {
            let s = load(10 * S, spec);
            assert_close(min_over_time(&s), min, EXACT);
            assert_close(max_over_time(&s), max, EXACT);
        }
        assert!(min_over_time(&[]).is_nan());
        assert!(max_over_time(&[]).is_nan());
    }

    #[test]
    fn ts_of_min_and_max_over_time() {
        let s = load(10 * S + 53, "1 2 3 0 5 6 2 1 4");
        let w = window(&s, 90 * S, 90 * S);
        assert_close(ts_of_min_over_time(&w), 30.159, EXACT);
        assert_close(ts_of_max_over_time(&w), 50.265, EXACT);
        // Ties go to the last occurrence.
        let ties = load(10 * S, "3 1 3 1");
        assert_eq!(ts_of_max_over_time(&ties), 20.0);
        assert_eq!(ts_of_min_over_time(&ties), 30.0);
        // A leading NaN gives way; a trailing one does not.
        assert_eq!(ts_of_max_over_time(&load(10 * S, "NaN 1 NaN")), 10.0);
        assert!(ts_of_min_over_time(&[]).is_nan());
    }

    // ---- quantile ------------------------------------------------------

    #[test]
    fn quantile_from_the_script() {
        let sets: [&[f64]; 3] = [&[0.0, 1.0], &[0.0, 1.0, 2.0], &[0.0, 1.0, 4.0]];
        let expected = [
            (0.0, [0.0, 0.0, 0.0]),
            (0.5, [0.5, 1.0, 1.0]),
            (0.75, [0.75, 1.5, 2.5]),
            (0.8, [0.8, 1.6, 2.8]),
            (1.0, [1.0, 2.0, 4.0]),
            (-1.0, [f64::NEG_INFINITY; 3]),
            (2.0, [f64::INFINITY; 3]),
        ];
        for (q, wants) in expected {
            for (set, want) in sets.iter().zip(wants) {
                assert_close(quantile(q, &mut set.to_vec()), want, EXACT);
            }
        }
    }

    #[test]
    fn quantile_edges() {
        assert!(quantile(0.5, &mut []).is_nan());
        assert!(quantile(-1.0, &mut []).is_nan());
        assert!(quantile(f64::NAN, &mut [1.0]).is_nan());
        let mut v = [3.0, 1.0, 2.0];
        assert_eq!(quantile(0.5, &mut v), 2.0);
        assert_eq!(v, [1.0, 2.0, 3.0]);
        // NaNs sort first, so low quantiles see them.
        let mut v = [2.0, f64::NAN, 1.0];
        assert!(quantile(0.0, &mut v).is_nan());
        assert_eq!(quantile(1.0, &mut v), 2.0);
        assert_eq!(quantile(0.75, &mut v), 1.5);
        // aggregators.test: NaN is the smallest value; 0.8 of [0, 1, NaN] is
        // 0.6 of the way from 0 to 1, 0.2 interpolates with the NaN.
        assert_close(quantile(0.8, &mut [0.0, 1.0, f64::NAN]), 0.6, EXACT);
        assert!(quantile(0.2, &mut [0.0, 1.0, f64::NAN]).is_nan());
        // Prometheus' weighted sum gives NaN for Inf·0, even at q = 1 where
        // both ranks are the +Inf.
        assert!(quantile(0.0, &mut [1.0, f64::INFINITY]).is_nan());
        assert!(quantile(1.0, &mut [1.0, f64::INFINITY]).is_nan());
        // …and whenever an infinity is the neighbour of an exact rank.
        assert!(quantile(0.5, &mut [1.0, 2.0, f64::INFINITY]).is_nan());
        assert_eq!(quantile(0.5, &mut [1.0, 2.0, 3.0, f64::INFINITY]), 2.5);
    }

    // ---- classic histograms --------------------------------------------

    fn buckets(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs
            .iter()
            .map(|&(upper_bound, count)| Bucket { upper_bound, count })
            .collect()
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn bucket_quantile_from_the_script() {
        let positive3 = [(0.0, 0.0), (0.1, 50.0), (0.2, 70.0), (1.0, 110.0), (INF, 110.0)];
        let negative3 = [(-0.25, 0.0), (-0.2, 10.0), (-0.1, 20.0), (0.3, 20.0), (INF, 20.0)];
        for (q, pos, neg) in [
            (0.0, 0.0, -0.25),
            (0.25, 0.055, -0.225),
            (0.5, 0.125, -0.2),
            (0.75, 0.45, -0.15),
            (1.0, 1.0, -0.1),
        ] {
            assert_close(bucket_quantile(q, &mut buckets(&positive3)).value, pos, EXACT);
            assert_close(bucket_quantile(q, &mut buckets(&negative3)).value, neg, EXACT);
        }

        // testhistogram, given out of order.
        let positive = [(1.0, 110.0), (0.1, 50.0), (INF, 120.0), (0.2, 70.0)];
        let negative = [(INF, 30.0), (-0.2, 10.0), (0.3, 20.0), (-0.1, 20.0)];
        for (q, pos, neg) in [
            (0.0, 0.0, -0.2),
            (1.0, 1.0, 0.3),
            (0.2, 0.048, -0.2),
            (0.5, 0.15, -0.15),
            (0.8, 0.72, 0.3),
        ] {
            assert_close(bucket_quantile(q, &mut buckets(&positive)).value, pos, EXACT);
            assert_close(bucket_quantile(q, &mut buckets(&negative)).value, neg, EXACT);
        }
        for (q, want) in [(-0.1, f64::NEG_INFINITY), (1.01, INF), (f64::NAN, f64::NAN)] {
            assert_close(bucket_quantile(q, &mut buckets(&positive)).value, want, EXACT);
        }

        let middles = [(0.0, 0.0), (2.0, 1.0), (4.0, 2.0), (6.0, 3.0), (INF, 3.0)];
        for (q, want) in [(1.0 / 6.0, 1.0), (0.5, 3.0), (5.0 / 6.0, 5.0)] {
            assert_close(bucket_quantile(q, &mut buckets(&middles)).value, want, EXACT);
        }

        // sum by (le) of the four request_duration_seconds histograms.
        let summed = [(0.1, 10.0), (0.2, 19.0), (INF, 25.0)];
        assert_close(bucket_quantile(0.3, &mut buckets(&summed)).value, 0.075, EXACT);
        assert_close(
            bucket_quantile(0.5, &mut buckets(&summed)).value,
            0.1277777777777778,
            EXACT,
        );
    }

    #[test]
    fn bucket_quantile_forces_monotonicity() {
        let nonmonotonic = [
            (0.1, 20.0),
            (1.0, 10.0),
            (10.0, 50.0),
            (100.0, 40.0),
            (1000.0, 90.0),
            (INF, 80.0),
        ];
        for (q, want) in [(0.01, 0.0045), (0.5, 8.5), (0.99, 979.75)] {
            let out = bucket_quantile(q, &mut buckets(&nonmonotonic));
            assert_close(out.value, want, EXACT);
            assert!(out.forced_monotonicity && !out.fixed_precision);
            assert_eq!((out.min_bucket, out.max_bucket, out.max_diff), (1.0, INF, 10.0));
        }
        let fine = bucket_quantile(0.5, &mut buckets(&[(1.0, 1.0), (INF, 2.0)]));
        assert!(!fine.forced_monotonicity && !fine.fixed_precision);
    }

    #[test]
    fn bucket_quantile_ignores_float_noise_between_buckets() {
        // A count 1e-13 relative below its predecessor is noise, not a
        // decrease; one 1e-11 below is a decrease.
        let big = 1e12;
        let out = bucket_quantile(
            0.5,
            &mut buckets(&[(1.0, big), (2.0, big * (1.0 - 1e-13)), (INF, 2.0 * big)]),
        );
        assert!(out.fixed_precision && !out.forced_monotonicity);
        // The rank (1e12) is reached at the first bucket's full count.
        assert_close(out.value, 1.0, EXACT);
        let out = bucket_quantile(
            0.5,
            &mut buckets(&[(1.0, big), (2.0, big * (1.0 - 1e-11)), (INF, 2.0 * big)]),
        );
        assert!(out.forced_monotonicity && !out.fixed_precision);
        // Noise upwards is smoothed too, and the later real increase still
        // measures from the accepted count.
        let mut b = buckets(&[(1.0, big), (2.0, big * (1.0 + 1e-13)), (INF, 2.0 * big)]);
        let out = bucket_quantile(0.25, &mut b);
        assert!(out.fixed_precision);
        assert_eq!(b[1].count, big);
        assert_close(out.value, 0.5, EXACT);
        assert!(almost_equal(0.0, 0.0, SMALL_DELTA_TOLERANCE));
        assert!(!almost_equal(0.0, 1e-300, SMALL_DELTA_TOLERANCE));
        assert!(almost_equal(f64::NAN, f64::NAN, SMALL_DELTA_TOLERANCE));
        assert!(!almost_equal(
            tidewatch_model::stale_nan(),
            f64::NAN,
            SMALL_DELTA_TOLERANCE
        ));
    }

    #[test]
    fn bucket_quantile_coalesces_equal_bounds() {
        // le="0.2", "2e-1" and "2.0e-1" are one bucket.
        let mixed = [(0.1, 1.0), (0.2, 1.0), (0.2, 1.0), (0.2, 1.0), (INF, 4.0)];
        for (q, want) in [(0.5, 0.15), (0.75, 0.2), (1.0, 0.2)] {
            assert_close(bucket_quantile(q, &mut buckets(&mixed)).value, want, EXACT);
        }
        let mut b = buckets(&mixed);
        bucket_quantile(0.5, &mut b);
        assert_eq!(b, buckets(&[(0.1, 1.0), (0.2, 3.0), (INF, 4.0)]));
        // le="+inf" and "+Inf": a single bucket, so NaN.
        assert!(
            bucket_quantile(0.5, &mut buckets(&[(INF, 0.0), (INF, 0.0)]))
                .value
                .is_nan()
        );
    }

    #[test]
    fn bucket_quantile_degenerate_inputs() {
        let nan = |b: &[(f64, f64)], q: f64| bucket_quantile(q, &mut buckets(b)).value.is_nan();
        assert!(nan(&[], 0.5));
        assert!(nan(&[(INF, 5.0)], 0.5), "fewer than two buckets");
        assert!(nan(&[(1.0, 1.0), (2.0, 2.0)], 0.5), "no +Inf bucket");
        assert!(nan(&[(0.1, 0.0), (0.2, 0.0), (INF, 0.0)], 0.2), "no observations");
        assert!(
            nan(&[(f64::NAN, 1.0), (1.0, 1.0), (INF, 2.0)], 0.5),
            "NaN bound sorts above +Inf"
        );
        assert_eq!(bucket_quantile(-1.0, &mut Vec::new()).value, f64::NEG_INFINITY);
        assert_eq!(bucket_quantile(2.0, &mut Vec::new()).value, INF);
        // Everything in +Inf: the highest finite bound.
        assert_eq!(bucket_quantile(0.5, &mut buckets(&[(1.0, 0.0), (INF, 4.0)])).value, 1.0);
        // NaN total: the rank search fails everywhere, like Prometheus'.
        assert_eq!(
            bucket_quantile(0.5, &mut buckets(&[(1.0, 1.0), (INF, f64::NAN)])).value,
            1.0
        );
    }

    #[test]
    fn bucket_fraction_from_the_script() {
        let middles = [(0.0, 0.0), (2.0, 1.0), (4.0, 2.0), (6.0, 3.0), (INF, 3.0)];
        let pos = [(1.0, 1.0), (2.0, 3.0), (3.0, 6.0), (INF, 100.0)];
        let neg = [(-3.0, 10.0), (-2.0, 12.0), (-1.0, 15.0), (INF, 100.0)];
        let positive3 = [(0.0, 0.0), (0.1, 50.0), (0.2, 70.0), (1.0, 110.0), (INF, 110.0)];
        let negative3 = [(-0.25, 0.0), (-0.2, 10.0), (-0.1, 20.0), (0.3, 20.0), (INF, 20.0)];
        let crosses = [(-2.0, 5.0), (-1.0, 10.0), (0.0, 15.0), (1.0, 20.0), (INF, 100.0)];
        // (lower, upper, buckets, expected fraction)
        type Case<'a> = (f64, f64, &'a [(f64, f64)], f64);
        let cases: [Case; 22] = [
            (0.0, 4.0, &middles, 0.6666666666666666),
            (0.0, 6.0, &middles, 1.0),
            (0.0, 3.5, &middles, 0.5833333333333334),
            (0.0, 0.2, &positive3, 0.6363636363636364),
            (0.0, 0.2, &negative3, 0.0),
            (0.0, 1.5, &pos, 0.02),
            (-4.0, -2.0, &neg, 0.02),
            (f64::NEG_INFINITY, -1.5, &neg, 0.135),
            (f64::NEG_INFINITY, INF, &pos, 1.0),
            (f64::NEG_INFINITY, INF, &neg, 1.0),
            (4.0, 5.0, &pos, 0.0),
            (0.0, 1.0, &neg, 0.0),
            (2.0, 5.0, &pos, 0.03),
            (400.0, INF, &pos, 0.94),
            (2.0, 2.0, &pos, 0.0),
            (3.0, 2.0, &pos, 0.0),
            (0.0, 1.0, &[(INF, 100.0)], 0.0),
            (2.0, 3.5, &pos, 0.03),
            (0.5, 2.0, &pos, 0.025),
            (1.0, 3.0, &pos, 0.05),
            (0.1, 0.75, &[(0.5, 2.5), (1.0, 7.5), (INF, 100.0)], 0.045),
            (-1.0, 1.0, &crosses, 0.1),
        ];
        for (lower, upper, b, want) in cases {
            assert_close(bucket_fraction(lower, upper, &mut buckets(b)), want, EXACT);
        }
        let few = [(1.0, 1.0), (2.0, 3.0), (INF, 10.0)];
        assert_eq!(bucket_fraction(-10.0, -5.0, &mut buckets(&few)), 0.0);
        assert_eq!(bucket_fraction(5.0, 10.0, &mut buckets(&few)), 0.0);
        let zeros = [(1.0, 0.0), (2.0, 0.0), (3.0, 0.0), (INF, 0.0)];
        assert!(bucket_fraction(0.0, 5.0, &mut buckets(&zeros)).is_nan());
        let two = [(1.0, 1.0), (INF, 100.0)];
        assert!(bucket_fraction(f64::NAN, 1.0, &mut buckets(&two)).is_nan());
        assert!(bucket_fraction(0.0, f64::NAN, &mut buckets(&two)).is_nan());
        assert!(bucket_fraction(0.0, 1.0, &mut Vec::new()).is_nan());
        assert!(bucket_fraction(0.0, 1.0, &mut buckets(&[(1.0, 1.0)])).is_nan());
    }

    // ---- properties ----------------------------------------------------

    /// Sorted distinct finite bounds with strictly increasing cumulative
    /// counts (so no bucket is empty and no interpolation divides 0 by 0) and
    /// a +Inf bucket.
    fn classic_histogram() -> impl Strategy<Value = Vec<Bucket>> {
        prop::collection::vec((-1e6f64..1e6, 0.5f64..1e6), 1..12).prop_filter_map("degenerate", |raw| {
            let mut bounds: Vec<f64> = raw.iter().map(|(b, _)| *b).collect();
            bounds.sort_by(f64::total_cmp);
            bounds.dedup();
            let mut cumulative = 0.0;
            let mut out: Vec<Bucket> = bounds
                .iter()
                .zip(&raw)
                .map(|(&upper_bound, &(_, inc))| {
                    cumulative += inc;
                    Bucket {
                        upper_bound,
                        count: cumulative,
                    }
                })
                .collect();
            cumulative += raw[0].1;
            out.push(Bucket {
                upper_bound: INF,
                count: cumulative,
            });
            (cumulative > 0.0).then_some(out)
        })
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(INF),
            Just(f64::NEG_INFINITY),
            Just(0.0),
            -1e3f64..1e3,
        ]
    }

    proptest! {
        #[test]
        fn quantile_is_monotone_in_q_and_bounded(
            mut xs in prop::collection::vec(-1e6f64..1e6, 1..40),
            q1 in 0f64..=1.0,
            q2 in 0f64..=1.0,
        ) {
            let (lo, hi) = if q1 <= q2 { (q1, q2) } else { (q2, q1) };
            let a = quantile(lo, &mut xs);
            let b = quantile(hi, &mut xs);
            // Interpolation rounds; allow an ulp-scale slack.
            prop_assert!(a <= b + 1e-9, "{a} > {b}");
            prop_assert!(a >= xs[0] - 1e-9 && b <= xs[xs.len() - 1] + 1e-9);
        }

        #[test]
        fn bucket_quantile_is_monotone_and_within_the_bounds(
            hist in classic_histogram(),
            q1 in 0f64..=1.0,
            q2 in 0f64..=1.0,
        ) {
            let (lo, hi) = if q1 <= q2 { (q1, q2) } else { (q2, q1) };
            let floor = hist[0].upper_bound.min(0.0);
            let ceiling = hist[hist.len() - 2].upper_bound;
            // Shuffle by reversing: the kernel must sort.
            let mut reversed: Vec<Bucket> = hist.iter().rev().copied().collect();
            let a = bucket_quantile(lo, &mut reversed);
            let b = bucket_quantile(hi, &mut hist.clone());
            prop_assert!(!a.forced_monotonicity);
            let slack = 1e-9 * (1.0 + floor.abs().max(ceiling.abs()));
            prop_assert!(a.value >= floor - slack && a.value <= ceiling + slack, "{} outside [{floor}, {ceiling}]", a.value);
            prop_assert!(a.value <= b.value + slack, "{} > {}", a.value, b.value);
        }

        #[test]
        fn bucket_fraction_is_a_fraction(hist in classic_histogram(), x in -2e6f64..2e6, y in -2e6f64..2e6) {
            let f = bucket_fraction(x.min(y), x.max(y), &mut hist.clone());
            prop_assert!((-1e-12..=1.0 + 1e-12).contains(&f), "{f}");
            let all = bucket_fraction(f64::NEG_INFINITY, INF, &mut hist.clone());
            prop_assert!((all - 1.0).abs() < 1e-12);
        }

        #[test]
        fn counter_increase_is_never_negative_and_rate_is_increase_per_second(
            steps in prop::collection::vec((1i64..120_000, 0f64..1e6, any::<bool>()), 2..50),
            start_gap in 0i64..600_000,
            end_gap in 0i64..600_000,
        ) {
            // A counter that sometimes resets to a smaller value.
            let mut t = 0;
            let mut v = 0.0;
            let samples: Vec<Sample> = steps.iter().map(|&(dt, inc, reset)| {
                t += dt;
                v = if reset { inc / 2.0 } else { v + inc };
                Sample::new(t, v)
            }).collect();
            let start = samples[0].timestamp - 1 - start_gap;
            let end = samples[samples.len() - 1].timestamp + end_gap;
            let increase = extrapolated_rate(&samples, start, end, true, false).unwrap();
            let rate = extrapolated_rate(&samples, start, end, true, true).unwrap();
            // Never negative but for rounding in last − first + resets.
            prop_assert!(increase >= -1e-9 * samples.iter().map(|s| s.value).fold(1.0, f64::max));
            let per_second = increase / ((end - start) as f64 / 1000.0);
            prop_assert!((rate - per_second).abs() <= 1e-9 * per_second.abs().max(1e-300));
        }

        #[test]
        fn evenly_sampled_line_over_the_whole_window_has_its_slope(
            slope in 0.001f64..1000.0,
            interval in 1i64..60_000,
            n in 2usize..100,
        ) {
            // Samples at interval·1..=n in (0, n·interval]: every gap is one
            // interval, so extrapolation covers exactly the window.
            let samples: Vec<Sample> = (1..=n as i64)
                .map(|k| Sample::new(k * interval, slope * (k * interval) as f64 / 1000.0))
                .collect();
            let end = n as i64 * interval;
            let rate = extrapolated_rate(&samples, 0, end, false, true).unwrap();
            prop_assert!((rate - slope).abs() <= 1e-9 * slope);
            let d = deriv(&samples).unwrap();
            prop_assert!((d - slope).abs() <= 1e-9 * slope);
        }

        #[test]
        fn kernels_never_panic(
            vs in prop::collection::vec(any_f64(), 0..30),
            ts in prop::collection::vec(any::<i64>(), 0..30),
            bounds in prop::collection::vec((any_f64(), any_f64()), 0..12),
            q in any_f64(),
            range_start in any::<i64>(),
            range_end in any::<i64>(),
        ) {
            let mut ts = ts;
            ts.sort_unstable();
            let samples: Vec<Sample> = ts.iter().zip(&vs).map(|(&t, &v)| Sample::new(t, v)).collect();
            for (counter, rate) in [(true, true), (true, false), (false, false)] {
                let _ = extrapolated_rate(&samples, range_start, range_end, counter, rate);
            }
            let _ = instant_rate(&samples, true);
            let _ = instant_rate(&samples, false);
            let _ = (resets(&samples), changes(&samples), deriv(&samples));
            let _ = predict_linear(&samples, range_end, q);
            let _ = double_exponential_smoothing(&samples, 0.5, 0.5);
            let _ = (avg_over_time(&samples), sum_over_time(&samples), stddev_over_time(&samples));
            let _ = (min_over_time(&samples), max_over_time(&samples), mad_over_time(&samples));
            let _ = (ts_of_min_over_time(&samples), ts_of_max_over_time(&samples));
            let _ = quantile(q, &mut vs.clone());
            let mut b = buckets(&bounds);
            let _ = bucket_quantile(q, &mut b.clone());
            let _ = bucket_fraction(q, range_end as f64, &mut b);
        }
    }

    // ---- start timestamps ----------------------------------------------

    /// Samples at `(time, value)` with start timestamps, for the ST kernels.
    fn with_starts(points: &[(i64, f64, i64)]) -> (Vec<Sample>, Vec<TimestampMs>) {
        points.iter().map(|&(t, v, st)| (Sample::new(t, v), st)).unzip()
    }

    /// `increase` over the window (start, end] read with start timestamps,
    /// and as a rate the same over the window's seconds.
    fn assert_increase_with_starts(samples: &[Sample], starts: &[TimestampMs], start: i64, end: i64, increase: f64) {
        let got = counter_rate_with_starts(samples, starts, start, end, false).unwrap();
        assert_close(got, increase, EXACT);
        let rate = counter_rate_with_starts(samples, starts, start, end, true).unwrap();
        assert_close(rate, increase / ((end - start) as f64 / 1000.0), EXACT);
    }

    #[test]
    fn start_timestamp_reset_rules() {
        const NONE: i64 = NO_START_TIMESTAMP;
        // (previous start, previous time, start, time, reset?)
        let cases = [
            (5 * S, 10 * S, NONE, 20 * S, false),    // no start: nothing to learn
            (5 * S, 10 * S, 21 * S, 20 * S, false),  // start after the sample: invalid
            (5 * S, 10 * S, 20 * S, 20 * S, false),  // start at the sample: unknown start
            (5 * S, 10 * S, 5 * S, 20 * S, false),   // cumulative, same start
            (5 * S, 10 * S, 7 * S, 20 * S, false),   // start before the previous sample
            (5 * S, 10 * S, 15 * S, 20 * S, true),   // restarted after the previous sample
            (5 * S, 10 * S, 10 * S, 20 * S, true),   // delta: starts where the last ended
            (NONE, 10 * S, 10 * S, 20 * S, false),   // cumulative whose first start was unknown
            (10 * S, 10 * S, 10 * S, 20 * S, false), // ... or given as the sample's own time
            (11 * S, 10 * S, 10 * S, 20 * S, false), // an invalid previous start is no start
        ];
        for (previous_start, previous_time, start, time, want) in cases {
            assert_eq!(
                start_timestamp_reset(previous_start, previous_time, start, time),
                want,
                "{previous_start} {previous_time} {start} {time}"
            );
        }
    }

    #[test]
    fn start_time_overlap_rules() {
        // Delta and cumulative series do not overlap; a start reaching back
        // before the previous sample with another start than it does.
        assert!(!start_time_overlap(5 * S, 10 * S, 10 * S));
        assert!(!start_time_overlap(5 * S, 10 * S, 5 * S));
        assert!(!start_time_overlap(5 * S, 10 * S, NO_START_TIMESTAMP));
        assert!(!start_time_overlap(5 * S, 10 * S, 12 * S));
        assert!(start_time_overlap(5 * S, 10 * S, 9 * S));
        assert!(start_time_overlap(NO_START_TIMESTAMP, 10 * S, 9 * S));
        let times = [10 * S, 20 * S, 30 * S];
        assert!(!any_start_time_overlap(times, &[5 * S, 10 * S, 20 * S]));
        assert!(any_start_time_overlap(times, &[5 * S, 10 * S, 15 * S]));
        // A single sample has nothing to overlap.
        assert!(!any_start_time_overlap([10 * S], &[S]));
    }

    #[test]
    fn a_start_timestamp_reset_counts_though_the_value_rose() {
        // Restarted at 25 s and already above the value before it.
        let (samples, starts) = with_starts(&[(10 * S, 5.0, S), (20 * S, 10.0, S), (30 * S, 20.0, 25 * S)]);
        // 5 counted from the start at 1 s, 5 more by 20 s, 20 since 25 s.
        let got = counter_rate_with_starts(&samples, &starts, 0, 30 * S, false).unwrap();
        assert_close(got, 30.0, EXACT);
        assert_eq!(resets_with_starts(&samples, &starts), 1.0);
        assert_eq!(resets(&samples), 0.0);
        // irate sees the restart between the last two samples: 20 in 10 s.
        assert_close(counter_instant_rate_with_starts(&samples, &starts).unwrap(), 2.0, EXACT);
        assert_close(instant_rate(&samples, true).unwrap(), 1.0, EXACT);
    }

    #[test]
    fn a_start_inside_the_window_replaces_left_extrapolation() {
        let (samples, starts) = with_starts(&[(20 * S, 2.0, 15 * S), (30 * S, 3.0, 15 * S), (40 * S, 4.0, 15 * S)]);
        // Zero at 15 s, 4 at 40 s (the window's end): an increase of 4.
        assert_increase_with_starts(&samples, &starts, 0, 40 * S, 4.0);
        // Without the start, the left side is guessed: half an interval.
        assert_close(extrapolated_rate(&samples, 0, 40 * S, true, false).unwrap(), 2.5, EXACT);
        // The right side is still extrapolated: 5 s after the last sample,
        // within 1.1 intervals, so all the way (25 s sampled + 5 s).
        assert_close(
            counter_rate_with_starts(&samples, &starts, 5 * S, 45 * S, false).unwrap(),
            4.8,
            EXACT,
        );
    }

    #[test]
    fn a_start_outside_the_window_or_at_its_edge_is_not_used() {
        let (samples, _) = with_starts(&[(20 * S, 2.0, 0), (30 * S, 3.0, 0), (40 * S, 4.0, 0)]);
        let plain = extrapolated_rate(&samples, 10 * S, 40 * S, true, false).unwrap();
        // The window is left-open: a start at its left edge is outside.
        for start in [5 * S, 10 * S] {
            let starts = [start; 3];
            let got = counter_rate_with_starts(&samples, &starts, 10 * S, 40 * S, false).unwrap();
            assert_eq!(got, plain, "start {start}");
        }
        // A start at or after the first sample says nothing about the left.
        for start in [20 * S, 21 * S] {
            let starts = [start, 30 * S, 40 * S];
            let got = counter_rate_with_starts(&samples, &starts, 10 * S, 40 * S, false).unwrap();
            assert_eq!(got, plain, "start {start}");
        }
    }

    #[test]
    fn a_single_sample_has_a_rate_only_with_a_start_inside_the_window() {
        let (samples, starts) = with_starts(&[(50 * S, 3.0, 30 * S)]);
        // No average interval: nothing is extrapolated to the right either.
        assert_increase_with_starts(&samples, &starts, 0, 60 * S, 3.0);
        assert_eq!(counter_rate_with_starts(&samples, &starts, 30 * S, 90 * S, false), None);
        assert_eq!(
            counter_rate_with_starts(&samples, &[NO_START_TIMESTAMP], 0, 60 * S, false),
            None
        );
    }

    #[test]
    fn delta_samples_add_up_through_start_timestamps() {
        // Each sample counts 60 since the previous one (OpenTelemetry deltas).
        let points: Vec<(i64, f64, i64)> = (2..=6).map(|k| (k * M, 60.0, (k - 1) * M)).collect();
        let (samples, starts) = with_starts(&points);
        // Window (2m, 6m]: samples at 3m..6m, each a reset; the first one's
        // count started at 2m, the window's open edge, so it is extrapolated.
        let got = counter_rate_with_starts(&samples[1..], &starts[1..], 2 * M, 6 * M, false).unwrap();
        assert_close(got, 240.0, EXACT);
        assert_eq!(resets_with_starts(&samples, &starts), 4.0);
        assert_close(counter_instant_rate_with_starts(&samples, &starts).unwrap(), 1.0, EXACT);
        // Without start timestamps the constant deltas look like no increase.
        assert_eq!(extrapolated_rate(&samples[1..], 2 * M, 6 * M, true, false), Some(0.0));
    }

    proptest! {
        // Start timestamps that say nothing change nothing.
        #[test]
        fn absent_start_timestamps_give_the_plain_kernels(
            vs in prop::collection::vec(any_f64(), 0..20),
            gaps in prop::collection::vec(1i64..100_000, 0..20),
            range_start in -10_000i64..10_000,
            width in 1i64..2_000_000,
        ) {
            let mut t = 0;
            let samples: Vec<Sample> = gaps.iter().zip(&vs).map(|(&gap, &v)| { t += gap; Sample::new(t, v) }).collect();
            let starts = vec![NO_START_TIMESTAMP; samples.len()];
            let range_end = range_start + width;
            let same = |a: Option<f64>, b: Option<f64>| a.map(f64::to_bits) == b.map(f64::to_bits);
            for is_rate in [true, false] {
                prop_assert!(same(
                    counter_rate_with_starts(&samples, &starts, range_start, range_end, is_rate),
                    extrapolated_rate(&samples, range_start, range_end, true, is_rate),
                ));
            }
            prop_assert!(same(counter_instant_rate_with_starts(&samples, &starts), instant_rate(&samples, true)));
            prop_assert_eq!(resets_with_starts(&samples, &starts), resets(&samples));
            prop_assert!(!any_start_time_overlap(samples.iter().map(|s| s.timestamp), &starts));
        }
    }
}
