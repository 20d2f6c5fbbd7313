//! Arithmetic on native histograms with Prometheus' semantics: addition and
//! subtraction across schemas and zero thresholds, custom-bucket
//! reconciliation, counter-reset detection, and the statistics PromQL reads
//! from a histogram (quantile, fraction, variance).
//!
//! Buckets are `(index, count)` lists in ascending index order (see
//! `tidewatch_model::histogram`), so combining two histograms is a merge of
//! two sorted lists, and lowering the resolution maps each index to
//! `((index - 1) >> (from - to)) + 1` and sums neighbours that meet.

use std::sync::Arc;

use tidewatch_model::histogram::{Bucket, CounterResetHint, FloatHistogram, bucket_upper_bound};

/// Prometheus' annotation texts about native histograms, in one place.
pub(crate) mod message {
    pub(crate) fn mixed_layouts(metric: &str) -> String {
        format!(
            "vector contains a mix of histograms with exponential and custom buckets schemas for metric name {metric:?}"
        )
    }

    /// `operation`: "addition", "subtraction" or "aggregation".
    pub(crate) fn bounds_reconciled(operation: &str) -> String {
        format!("mismatched custom buckets were reconciled during {operation}")
    }

    pub(crate) fn not_counter(metric: &str) -> String {
        format!("this native histogram metric is not a counter: {metric:?}")
    }

    pub(crate) fn not_gauge(metric: &str) -> String {
        format!("this native histogram metric is not a gauge: {metric:?}")
    }
}

/// Exponential and custom-bucket histograms cannot be combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IncompatibleSchemas;

/// Side effects of adding or subtracting two histograms that PromQL reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Combined {
    /// One operand said "counter reset" and the other "not a reset".
    pub counter_reset_collision: bool,
    /// Custom bucket bounds differed and were cut down to the common ones.
    pub bounds_reconciled: bool,
}

/// The index of bucket `index` of schema `from` in the coarser schema `to`.
fn target_index(index: i32, from: i32, to: i32) -> i32 {
    ((index - 1) >> (from - to)) + 1
}

/// `buckets` at the coarser schema `to`; neighbours that fall into the same
/// target bucket are summed.
pub(crate) fn reduce_resolution(buckets: &[Bucket], from: i32, to: i32) -> Vec<Bucket> {
    if from <= to {
        return buckets.to_vec();
    }
    let mut out: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for bucket in buckets {
        let index = target_index(bucket.index, from, to);
        match out.last_mut() {
            Some(last) if last.index == index => last.count += bucket.count,
            _ => out.push(Bucket {
                index,
                count: bucket.count,
            }),
        }
    }
    out
}

/// Lower and upper bound of a bucket: positive buckets cover
/// `(bound(i-1), bound(i)]`, negative ones the mirror image.
pub(crate) fn bucket_bounds(h: &FloatHistogram, positive: bool, index: i32) -> (f64, f64) {
    let upper = bucket_upper_bound(index, h.schema, &h.custom_values);
    let lower = bucket_upper_bound(index - 1, h.schema, &h.custom_values);
    if positive { (lower, upper) } else { (-upper, -lower) }
}

/// The zero count `h` would have with the zero threshold raised to at least
/// `larger`, and the threshold actually needed: a threshold inside a
/// populated bucket moves up to that bucket's upper edge.
fn zero_count_for_larger_threshold(h: &FloatHistogram, mut larger: f64) -> (f64, f64) {
    if larger == h.zero_threshold {
        return (h.zero_count, larger);
    }
    'outer: loop {
        let mut zero_count = h.zero_count;
        for bucket in &h.positive {
            let (lower, upper) = bucket_bounds(h, true, bucket.index);
            if lower >= larger {
                break;
            }
            zero_count += bucket.count;
            if upper > larger {
                if bucket.count != 0.0 {
                    larger = upper;
                }
                break;
            }
        }
        for bucket in &h.negative {
            let (lower, upper) = bucket_bounds(h, false, bucket.index);
            if upper <= -larger {
                break;
            }
            zero_count += bucket.count;
            if lower < -larger {
                if bucket.count != 0.0 {
                    larger = -lower;
                    continue 'outer;
                }
                break;
            }
        }
        return (zero_count, larger);
    }
}

/// Drops the buckets that lie within the zero bucket (their counts are
/// already part of the zero count).
fn trim_buckets_in_zero_bucket(h: &mut FloatHistogram) {
    let threshold = h.zero_threshold;
    let (schema, custom) = (h.schema, h.custom_values.clone());
    h.positive
        .retain(|b| bucket_upper_bound(b.index - 1, schema, &custom) >= threshold);
    h.negative
        .retain(|b| bucket_upper_bound(b.index - 1, schema, &custom) >= threshold);
    compact(h);
}

/// Widens the zero bucket of `h` until it covers `other`'s, and returns the
/// zero count `other` has with that threshold.
fn reconcile_zero_buckets(h: &mut FloatHistogram, other: &FloatHistogram) -> f64 {
    let mut other_zero_count = other.zero_count;
    let mut other_threshold = other.zero_threshold;
    while other_threshold != h.zero_threshold {
        if h.zero_threshold > other_threshold {
            (other_zero_count, other_threshold) = zero_count_for_larger_threshold(other, h.zero_threshold);
        }
        if other_threshold > h.zero_threshold {
            (h.zero_count, h.zero_threshold) = zero_count_for_larger_threshold(h, other_threshold);
            trim_buckets_in_zero_bucket(h);
        }
    }
    other_zero_count
}

/// The hint of a sum of two histograms; `true` when they collide.
fn adjust_counter_reset(h: &mut FloatHistogram, other: &FloatHistogram) -> bool {
    use CounterResetHint::*;
    match (h.counter_reset_hint, other.counter_reset_hint) {
        (a, b) if a == b => false,
        (Gauge, _) => false,
        (_, Gauge) => {
            h.counter_reset_hint = Gauge;
            false
        }
        (Unknown, _) => false,
        (_, Unknown) => {
            h.counter_reset_hint = Unknown;
            false
        }
        _ => {
            h.counter_reset_hint = Unknown;
            true
        }
    }
}

/// Merges `b` into `a` (both ascending by index), combining counts of the
/// same index with `combine(a_count, b_count)` and inserting `b`'s others as
/// `combine(0, b_count)`. Buckets of `b` whose absolute upper bound is at most
/// `skip_below` are left out (they are inside the zero bucket).
fn merge_buckets(
    a: &[Bucket],
    b: &[Bucket],
    mut skip: impl FnMut(i32) -> bool,
    combine: impl Fn(f64, f64) -> f64,
) -> Vec<Bucket> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if j < b.len() && skip(b[j].index) {
            j += 1;
            continue;
        }
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.index == y.index => {
                out.push(Bucket {
                    index: x.index,
                    count: combine(x.count, y.count),
                });
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.index < y.index => {
                out.push(*x);
                i += 1;
            }
            (Some(x), None) => {
                out.push(*x);
                i += 1;
            }
            (_, Some(y)) => {
                out.push(Bucket {
                    index: y.index,
                    count: combine(0.0, y.count),
                });
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// The custom bounds both lists have.
fn intersect_bounds(a: &[f64], b: &[f64]) -> Vec<f64> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(a[i]);
            i += 1;
            j += 1;
        } else if a[i] < b[j] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Custom buckets mapped onto the coarser `target` bounds: each bucket goes
/// to the first target bucket whose upper bound is at least its own.
fn map_custom_buckets(buckets: &[Bucket], bounds: &[f64], target: &[f64], into: &mut [f64], sign: f64) {
    for bucket in buckets {
        let slot = match bounds.get(bucket.index as usize) {
            Some(&upper) => target.partition_point(|&t| t < upper),
            None => target.len(),
        };
        into[slot] += sign * bucket.count;
    }
}

/// `h += other` (or `h -= other` with `subtract`), with Prometheus' rules:
/// the result takes the lower of the two schemas and the wider zero bucket;
/// custom buckets with different bounds are reconciled to the bounds both
/// have. The result may hold empty buckets; [`compact`] removes them.
pub(crate) fn add(
    h: &mut FloatHistogram,
    other: &FloatHistogram,
    subtract: bool,
) -> Result<Combined, IncompatibleSchemas> {
    if h.uses_custom_buckets() != other.uses_custom_buckets() {
        return Err(IncompatibleSchemas);
    }
    let sign = if subtract { -1.0 } else { 1.0 };
    let mut combined = Combined {
        counter_reset_collision: adjust_counter_reset(h, other),
        ..Combined::default()
    };
    if !h.uses_custom_buckets() {
        let other_zero = reconcile_zero_buckets(h, other);
        h.zero_count += sign * other_zero;
    }
    h.count += sign * other.count;
    h.sum += sign * other.sum;
    let combine = move |a: f64, b: f64| a + sign * b;
    if h.uses_custom_buckets() {
        if h.custom_values == other.custom_values || h.custom_values[..] == other.custom_values[..] {
            h.positive = merge_buckets(&h.positive, &other.positive, |_| false, combine);
        } else {
            combined.bounds_reconciled = true;
            let target = intersect_bounds(&h.custom_values, &other.custom_values);
            let mut counts = vec![0.0; target.len() + 1];
            map_custom_buckets(&h.positive, &h.custom_values, &target, &mut counts, 1.0);
            map_custom_buckets(&other.positive, &other.custom_values, &target, &mut counts, sign);
            h.positive = counts
                .into_iter()
                .enumerate()
                .filter(|(_, c)| *c != 0.0)
                .map(|(i, count)| Bucket { index: i as i32, count })
                .collect();
            h.custom_values = Arc::from(target);
        }
        return Ok(combined);
    }
    let (mut other_positive, mut other_negative) = (None, None);
    if other.schema < h.schema {
        h.positive = reduce_resolution(&h.positive, h.schema, other.schema);
        h.negative = reduce_resolution(&h.negative, h.schema, other.schema);
        h.schema = other.schema;
    } else if other.schema > h.schema {
        other_positive = Some(reduce_resolution(&other.positive, other.schema, h.schema));
        other_negative = Some(reduce_resolution(&other.negative, other.schema, h.schema));
    }
    let (schema, threshold) = (h.schema, h.zero_threshold);
    let other_positive = other_positive.as_deref().unwrap_or(&other.positive);
    let other_negative = other_negative.as_deref().unwrap_or(&other.negative);
    // Buckets of `other` inside the zero bucket are left out: bounds grow with
    // the index, so that is a prefix of each sorted list.
    let below_positive = first_above_threshold(other_positive, schema, threshold);
    let below_negative = first_above_threshold(other_negative, schema, threshold);
    h.positive = merge_buckets(&h.positive, other_positive, |index| index < below_positive, combine);
    h.negative = merge_buckets(&h.negative, other_negative, |index| index < below_negative, combine);
    Ok(combined)
}

/// The lowest index among `buckets` whose upper bound is above `threshold`
/// (`i32::MIN` when the threshold is zero: every bucket is above it).
fn first_above_threshold(buckets: &[Bucket], schema: i32, threshold: f64) -> i32 {
    if threshold <= 0.0 {
        return i32::MIN;
    }
    // Usually every bucket is above the (tiny default) zero threshold: one
    // bound answers that instead of a binary search's several.
    if buckets
        .first()
        .is_none_or(|b| exponential_upper(b.index, schema) > threshold)
    {
        return buckets.first().map_or(i32::MAX, |b| b.index);
    }
    let cut = buckets.partition_point(|b| exponential_upper(b.index, schema) <= threshold);
    buckets.get(cut).map_or(i32::MAX, |b| b.index)
}

fn exponential_upper(index: i32, schema: i32) -> f64 {
    tidewatch_model::histogram::exponential_bound(index, schema)
}

/// A running sum of histograms with Kahan compensation, as Prometheus' `sum`
/// and `avg` aggregations and `*_over_time` functions keep it.
#[derive(Debug, Clone)]
pub(crate) struct KahanSum {
    pub sum: FloatHistogram,
    /// The compensation terms, with the same layout as `sum`'s buckets.
    pub compensation: FloatHistogram,
}

impl KahanSum {
    pub(crate) fn new(first: FloatHistogram) -> KahanSum {
        let compensation = FloatHistogram {
            schema: first.schema,
            zero_threshold: first.zero_threshold,
            custom_values: first.custom_values.clone(),
            ..FloatHistogram::default()
        };
        KahanSum {
            sum: first,
            compensation,
        }
    }

    /// Adds `other` with compensated summation of every count.
    pub(crate) fn add(&mut self, other: &FloatHistogram) -> Result<Combined, IncompatibleSchemas> {
        let same_layout = self.sum.schema == other.schema
            && self.sum.zero_threshold == other.zero_threshold
            && self.sum.uses_custom_buckets() == other.uses_custom_buckets()
            && self.sum.custom_values[..] == other.custom_values[..];
        if same_layout {
            return Ok(self.add_same_layout(other));
        }
        self.add_realigning(other)
    }

    /// The common case, without copies: `other` has the sum's schema, zero
    /// threshold and custom bounds, so one walk over the three bucket lists
    /// (sum, compensation, addend) does it.
    fn add_same_layout(&mut self, other: &FloatHistogram) -> Combined {
        let counter_reset_collision = adjust_counter_reset(&mut self.sum, other);
        let (sum, c) = (&mut self.sum, &mut self.compensation);
        (sum.count, c.count) = kahan_inc(other.count, sum.count, c.count);
        (sum.sum, c.sum) = kahan_inc(other.sum, sum.sum, c.sum);
        (sum.zero_count, c.zero_count) = kahan_inc(other.zero_count, sum.zero_count, c.zero_count);
        for (values, compensations, addend) in [
            (&mut sum.positive, &mut c.positive, &other.positive),
            (&mut sum.negative, &mut c.negative, &other.negative),
        ] {
            kahan_merge(values, compensations, addend);
        }
        Combined {
            counter_reset_collision,
            bounds_reconciled: false,
        }
    }

    /// Any other case: a plain addition chooses the layout, then the sum is
    /// redone with compensation on that layout.
    fn add_realigning(&mut self, other: &FloatHistogram) -> Result<Combined, IncompatibleSchemas> {
        let before = self.sum.clone();
        let combined = add(&mut self.sum, other, false)?;
        let mut compensation = std::mem::take(&mut self.compensation);
        align_layout(&mut compensation, &self.sum);
        let mut result = before;
        // Recompute the sum field by field with compensation, on the
        // layout the plain addition chose.
        align_layout(&mut result, &self.sum);
        let mut other = other.clone();
        align_layout(&mut other, &self.sum);
        let (count, c_count) = kahan_inc(other.count, result.count, compensation.count);
        let (sum, c_sum) = kahan_inc(other.sum, result.sum, compensation.sum);
        let (zero, c_zero) = kahan_inc(other.zero_count, result.zero_count, compensation.zero_count);
        self.sum.count = count;
        self.sum.sum = sum;
        self.sum.zero_count = zero;
        compensation.count = c_count;
        compensation.sum = c_sum;
        compensation.zero_count = c_zero;
        for (target, (mine, theirs, comp)) in [
            (
                &mut self.sum.positive,
                (&result.positive, &other.positive, &mut compensation.positive),
            ),
            (
                &mut self.sum.negative,
                (&result.negative, &other.negative, &mut compensation.negative),
            ),
        ] {
            let lookup = |list: &[Bucket], index: i32| {
                list.binary_search_by_key(&index, |b| b.index)
                    .map(|i| list[i].count)
                    .unwrap_or(0.0)
            };
            let mut new_comp = Vec::with_capacity(target.len());
            for bucket in target.iter_mut() {
                let (value, c) = kahan_inc(
                    lookup(theirs, bucket.index),
                    lookup(mine, bucket.index),
                    lookup(comp, bucket.index),
                );
                bucket.count = value;
                new_comp.push(Bucket {
                    index: bucket.index,
                    count: c,
                });
            }
            *comp = new_comp;
        }
        self.compensation = compensation;
        Ok(combined)
    }

    /// The compensated total.
    pub(crate) fn total(mut self) -> FloatHistogram {
        let compensation = std::mem::take(&mut self.compensation);
        self.sum.count += compensation.count;
        self.sum.sum += compensation.sum;
        self.sum.zero_count += compensation.zero_count;
        for (target, comp) in [
            (&mut self.sum.positive, &compensation.positive),
            (&mut self.sum.negative, &compensation.negative),
        ] {
            for bucket in target.iter_mut() {
                if let Ok(i) = comp.binary_search_by_key(&bucket.index, |b| b.index) {
                    bucket.count += comp[i].count;
                }
            }
        }
        self.sum
    }
}

/// Adds `addend`'s buckets into `values` with Kahan compensation; the
/// compensation list keeps the values' indexes (missing entries are zero).
fn kahan_merge(values: &mut Vec<Bucket>, compensations: &mut Vec<Bucket>, addend: &[Bucket]) {
    let aligned =
        compensations.len() == values.len() && compensations.iter().zip(values.iter()).all(|(c, v)| c.index == v.index);
    if aligned && addend.len() == values.len() && addend.iter().zip(values.iter()).all(|(a, v)| a.index == v.index) {
        // Same buckets on all three: update in place.
        for ((value, compensation), add) in values.iter_mut().zip(compensations.iter_mut()).zip(addend) {
            (value.count, compensation.count) = kahan_inc(add.count, value.count, compensation.count);
        }
        return;
    }
    let lookup = |list: &[Bucket], index: i32| {
        list.binary_search_by_key(&index, |b| b.index)
            .map(|i| list[i].count)
            .unwrap_or(0.0)
    };
    let mut merged_values = Vec::with_capacity(values.len().max(addend.len()));
    let mut merged_compensations = Vec::with_capacity(merged_values.capacity());
    let (mut i, mut j) = (0, 0);
    while i < values.len() || j < addend.len() {
        let index = match (values.get(i), addend.get(j)) {
            (Some(v), Some(a)) => v.index.min(a.index),
            (Some(v), None) => v.index,
            (None, Some(a)) => a.index,
            (None, None) => break,
        };
        let value = if values.get(i).is_some_and(|v| v.index == index) {
            i += 1;
            values[i - 1].count
        } else {
            0.0
        };
        let add = if addend.get(j).is_some_and(|a| a.index == index) {
            j += 1;
            addend[j - 1].count
        } else {
            0.0
        };
        let (count, compensation) = kahan_inc(add, value, lookup(compensations, index));
        merged_values.push(Bucket { index, count });
        merged_compensations.push(Bucket {
            index,
            count: compensation,
        });
    }
    *values = merged_values;
    *compensations = merged_compensations;
}

/// A running mean of histograms as Prometheus' `avg` and `avg_over_time`
/// keep it: a compensated sum divided at the end while the sum stays finite,
/// an incremental mean from the first overflow on.
#[derive(Debug, Clone)]
pub(crate) struct HistogramMean {
    /// The sum, or the mean once `incremental` (with its compensation).
    acc: KahanSum,
    count: f64,
    incremental: bool,
}

impl HistogramMean {
    pub(crate) fn new(first: FloatHistogram) -> HistogramMean {
        HistogramMean {
            acc: KahanSum::new(first),
            count: 1.0,
            incremental: false,
        }
    }

    pub(crate) fn add(&mut self, h: &FloatHistogram) -> Result<Combined, IncompatibleSchemas> {
        self.count += 1.0;
        if !self.incremental {
            let mut trial = self.acc.clone();
            let combined = trial.add(h)?;
            if !has_overflow(&trial.sum) {
                self.acc = trial;
                return Ok(combined);
            }
            self.incremental = true;
            div(&mut self.acc.sum, self.count - 1.0);
            div(&mut self.acc.compensation, self.count - 1.0);
        }
        let q = (self.count - 1.0) / self.count;
        mul(&mut self.acc.compensation, q);
        mul(&mut self.acc.sum, q);
        let mut share = h.clone();
        div(&mut share, self.count);
        self.acc.add(&share)
    }

    pub(crate) fn value(self) -> FloatHistogram {
        if self.incremental {
            return self.acc.total();
        }
        let count = self.count;
        let KahanSum {
            mut sum,
            mut compensation,
        } = self.acc;
        div(&mut sum, count);
        div(&mut compensation, count);
        KahanSum { sum, compensation }.total()
    }
}

/// Whether any count or the sum overflowed to infinity.
fn has_overflow(h: &FloatHistogram) -> bool {
    [h.zero_count, h.count, h.sum].iter().any(|v| v.is_infinite())
        || h.positive.iter().chain(&h.negative).any(|b| b.count.is_infinite())
}

/// Brings `h` to the schema, zero threshold and custom bounds of `like`
/// (which must be at most as fine and at least as wide).
fn align_layout(h: &mut FloatHistogram, like: &FloatHistogram) {
    if h.uses_custom_buckets() {
        if h.custom_values[..] != like.custom_values[..] {
            let mut counts = vec![0.0; like.custom_values.len() + 1];
            map_custom_buckets(&h.positive, &h.custom_values, &like.custom_values, &mut counts, 1.0);
            h.positive = counts
                .into_iter()
                .enumerate()
                .filter(|(_, c)| *c != 0.0)
                .map(|(i, count)| Bucket { index: i as i32, count })
                .collect();
            h.custom_values = like.custom_values.clone();
        }
        return;
    }
    if h.schema > like.schema {
        h.positive = reduce_resolution(&h.positive, h.schema, like.schema);
        h.negative = reduce_resolution(&h.negative, h.schema, like.schema);
        h.schema = like.schema;
    }
    if h.zero_threshold < like.zero_threshold {
        let (zero_count, _) = zero_count_for_larger_threshold(h, like.zero_threshold);
        h.zero_count = zero_count;
        h.zero_threshold = like.zero_threshold;
        let (schema, threshold) = (h.schema, h.zero_threshold);
        h.positive
            .retain(|b| exponential_upper(b.index - 1, schema) >= threshold);
        h.negative
            .retain(|b| exponential_upper(b.index - 1, schema) >= threshold);
    }
}

/// Kahan's compensated increment: adds `inc` to `sum` with compensation `c`.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
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

/// Every count times `factor`; a negative factor makes it a gauge histogram.
pub(crate) fn mul(h: &mut FloatHistogram, factor: f64) {
    h.zero_count *= factor;
    h.count *= factor;
    h.sum *= factor;
    h.positive.iter_mut().for_each(|b| b.count *= factor);
    h.negative.iter_mut().for_each(|b| b.count *= factor);
    if factor < 0.0 {
        h.counter_reset_hint = CounterResetHint::Gauge;
    }
}

/// Every count divided by `divisor`; dividing by zero drops the buckets.
pub(crate) fn div(h: &mut FloatHistogram, divisor: f64) {
    h.zero_count /= divisor;
    h.count /= divisor;
    h.sum /= divisor;
    if divisor == 0.0 {
        h.positive.clear();
        h.negative.clear();
        return;
    }
    h.positive.iter_mut().for_each(|b| b.count /= divisor);
    h.negative.iter_mut().for_each(|b| b.count /= divisor);
    if divisor < 0.0 {
        h.counter_reset_hint = CounterResetHint::Gauge;
    }
}

/// Removes empty buckets (Prometheus' `Compact(0)`).
pub(crate) fn compact(h: &mut FloatHistogram) {
    h.positive.retain(|b| b.count != 0.0);
    h.negative.retain(|b| b.count != 0.0);
}

/// Bit-for-bit equality of the data (not of the hint), ignoring empty
/// buckets, as PromQL's `==` between histograms.
pub(crate) fn equals(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    let same_buckets = |x: &[Bucket], y: &[Bucket]| {
        let mut x = x.iter().filter(|b| b.count != 0.0);
        let mut y = y.iter().filter(|b| b.count != 0.0);
        loop {
            match (x.next(), y.next()) {
                (None, None) => return true,
                (Some(p), Some(q)) if p.index == q.index && p.count.to_bits() == q.count.to_bits() => {}
                _ => return false,
            }
        }
    };
    a.schema == b.schema
        && a.count.to_bits() == b.count.to_bits()
        && a.sum.to_bits() == b.sum.to_bits()
        && (!a.uses_custom_buckets() || a.custom_values[..] == b.custom_values[..])
        && a.zero_threshold == b.zero_threshold
        && a.zero_count.to_bits() == b.zero_count.to_bits()
        && same_buckets(&a.positive, &b.positive)
        && same_buckets(&a.negative, &b.negative)
}

/// Whether `current` follows a counter reset after `previous`: a hint says
/// so, or some count went down (compared at the coarser resolution and the
/// wider zero bucket), or the layout changed in a way only a reset allows.
pub(crate) fn detect_reset(current: &FloatHistogram, previous: &FloatHistogram) -> bool {
    match current.counter_reset_hint {
        CounterResetHint::CounterReset => return true,
        CounterResetHint::NotCounterReset => return false,
        _ => {}
    }
    if current.count < previous.count {
        return true;
    }
    if current.uses_custom_buckets() {
        if !previous.uses_custom_buckets() {
            return true;
        }
        if current.custom_values[..] != previous.custom_values[..] {
            return custom_reset_with_mismatched_bounds(current, previous);
        }
    }
    if current.schema > previous.schema {
        return true;
    }
    if current.zero_threshold < previous.zero_threshold {
        return true;
    }
    let (previous_zero, threshold) = zero_count_for_larger_threshold(previous, current.zero_threshold);
    if threshold != current.zero_threshold {
        return true;
    }
    if current.zero_count < previous_zero {
        return true;
    }
    // Each side's buckets at the current resolution, and the first index
    // above the current zero bucket. Nearly always both sides have one
    // layout: then nothing is copied (this runs for every pair of
    // neighbouring samples a rate reads).
    fn above_zero<'a>(
        current: &FloatHistogram,
        h: &FloatHistogram,
        buckets: &'a [Bucket],
    ) -> (std::borrow::Cow<'a, [Bucket]>, i32) {
        let reduced = if h.uses_custom_buckets() || h.schema <= current.schema {
            std::borrow::Cow::Borrowed(buckets)
        } else {
            std::borrow::Cow::Owned(reduce_resolution(buckets, h.schema, current.schema))
        };
        let first = if current.uses_custom_buckets() {
            i32::MIN
        } else {
            first_above_threshold(&reduced, current.schema, current.zero_threshold)
        };
        (reduced, first)
    }
    for (now, before) in [
        (&current.positive, &previous.positive),
        (&current.negative, &previous.negative),
    ] {
        let (now, now_first) = above_zero(current, current, now);
        let (before, before_first) = above_zero(current, previous, before);
        if bucket_decreased(
            now.iter().filter(|b| b.index >= now_first),
            before.iter().filter(|b| b.index >= before_first),
        ) {
            return true;
        }
    }
    false
}

/// Whether some bucket of `before` is populated but missing or lower in `now`.
fn bucket_decreased<'a>(now: impl Iterator<Item = &'a Bucket>, before: impl Iterator<Item = &'a Bucket>) -> bool {
    let mut now = now.peekable();
    for old in before {
        while now.next_if(|b| b.index < old.index).is_some() {}
        match now.peek() {
            Some(new) if new.index == old.index => {
                if new.count < old.count {
                    return true;
                }
            }
            _ => {
                if old.count != 0.0 {
                    return true;
                }
            }
        }
    }
    false
}

/// Reset detection between custom-bucket histograms with different bounds:
/// cumulative counts are compared at every bound both share.
fn custom_reset_with_mismatched_bounds(current: &FloatHistogram, previous: &FloatHistogram) -> bool {
    let shared = intersect_bounds(&current.custom_values, &previous.custom_values);
    let mut now = vec![0.0; shared.len() + 1];
    let mut before = vec![0.0; shared.len() + 1];
    map_custom_buckets(&current.positive, &current.custom_values, &shared, &mut now, 1.0);
    map_custom_buckets(&previous.positive, &previous.custom_values, &shared, &mut before, 1.0);
    now.iter().zip(&before).any(|(n, b)| n < b)
}

/// One bucket as the statistics functions see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BucketRange {
    pub lower: f64,
    pub upper: f64,
    pub count: f64,
    /// Which ends are inclusive, in the API's encoding: 0 `(l,u]`, 1 `[l,u)`,
    /// 2 `(l,u)`, 3 `[l,u]`.
    pub boundary_rule: u8,
}

/// Every bucket from the lowest values to the highest: negative buckets
/// (most negative first), the zero bucket if populated, positive buckets;
/// bounds clipped at the zero threshold as Prometheus' `AllBucketIterator`.
pub(crate) fn all_buckets(h: &FloatHistogram) -> Vec<BucketRange> {
    let mut out = Vec::with_capacity(h.positive.len() + h.negative.len() + 1);
    let threshold = h.zero_threshold;
    for bucket in h.negative.iter().rev() {
        let (mut lower, mut upper) = bucket_bounds(h, false, bucket.index);
        if upper < 0.0 && upper > -threshold {
            upper = -threshold;
        } else if lower > 0.0 && lower < threshold {
            lower = threshold;
        }
        out.push(BucketRange {
            lower,
            upper,
            count: bucket.count,
            boundary_rule: 1,
        });
    }
    if h.zero_count > 0.0 {
        out.push(BucketRange {
            lower: -threshold,
            upper: threshold,
            count: h.zero_count,
            boundary_rule: 3,
        });
    }
    for bucket in &h.positive {
        let (mut lower, mut upper) = bucket_bounds(h, true, bucket.index);
        if lower > 0.0 && lower < threshold {
            lower = threshold;
        } else if upper < 0.0 && upper > -threshold {
            upper = -threshold;
        }
        let boundary_rule = if h.uses_custom_buckets() && bucket.index == 0 {
            3
        } else {
            0
        };
        out.push(BucketRange {
            lower,
            upper,
            count: bucket.count,
            boundary_rule,
        });
    }
    out
}

/// What a statistic noticed about NaN observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NanNote {
    None,
    /// The quantile fell among the NaN observations: the result is NaN.
    QuantileNaN,
    /// NaN observations pushed the quantile up.
    QuantileSkewed,
    /// NaN observations are left out of the fraction.
    FractionExcludesNaN,
}

/// `histogram_quantile(q, h)` for a native histogram.
pub(crate) fn quantile(q: f64, h: &FloatHistogram) -> (f64, NanNote) {
    if q < 0.0 {
        return (f64::NEG_INFINITY, NanNote::None);
    }
    if q > 1.0 {
        return (f64::INFINITY, NanNote::None);
    }
    if h.count == 0.0 || q.is_nan() {
        return (f64::NAN, NanNote::None);
    }
    let buckets = all_buckets(h);
    let forward = h.sum.is_nan() || q < 0.5;
    let mut rank = if forward { q * h.count } else { (1.0 - q) * h.count };
    let order: Box<dyn Iterator<Item = usize>> = if forward {
        Box::new(0..buckets.len())
    } else {
        Box::new((0..buckets.len()).rev())
    };
    let mut order = order.peekable();
    let mut count = 0.0;
    let mut bucket = BucketRange {
        lower: 0.0,
        upper: 0.0,
        count: 0.0,
        boundary_rule: 0,
    };
    for i in order.by_ref() {
        bucket = buckets[i];
        if bucket.count == 0.0 {
            continue;
        }
        count += bucket.count;
        if count >= rank {
            break;
        }
    }
    if !h.uses_custom_buckets() && bucket.lower < 0.0 && bucket.upper > 0.0 {
        if h.negative.is_empty() && !h.positive.is_empty() {
            bucket.lower = 0.0;
        } else if h.positive.is_empty() && !h.negative.is_empty() {
            bucket.upper = 0.0;
        }
    } else if h.uses_custom_buckets() {
        if bucket.lower == f64::NEG_INFINITY {
            if bucket.upper <= 0.0 {
                return (bucket.upper, NanNote::None);
            }
            bucket.lower = 0.0;
        } else if bucket.upper == f64::INFINITY {
            return (bucket.lower, NanNote::None);
        }
    }
    if count > h.count {
        count = h.count;
    }
    if count < rank {
        if h.sum.is_nan() {
            return (f64::NAN, NanNote::QuantileNaN);
        }
        return (bucket.upper, NanNote::None);
    }
    if forward {
        rank -= count - bucket.count;
    } else {
        rank = count - rank;
    }
    let mut note = NanNote::None;
    if h.sum.is_nan() {
        for i in order {
            count += buckets[i].count;
        }
        if count < h.count {
            note = NanNote::QuantileSkewed;
        }
    }
    let fraction = rank / bucket.count;
    if h.uses_custom_buckets() || (bucket.lower <= 0.0 && bucket.upper >= 0.0) {
        return (bucket.lower + (bucket.upper - bucket.lower) * fraction, note);
    }
    let log_lower = bucket.lower.abs().log2();
    let log_upper = bucket.upper.abs().log2();
    if bucket.lower > 0.0 {
        return ((log_lower + (log_upper - log_lower) * fraction).exp2(), note);
    }
    (-(log_upper + (log_lower - log_upper) * (1.0 - fraction)).exp2(), note)
}

/// The share of a bucket's width at or below `v` (inside the bucket),
/// linearly or on a logarithmic scale.
fn fraction_below(bucket: &BucketRange, v: f64, linear: bool) -> f64 {
    if linear {
        return (v - bucket.lower) / (bucket.upper - bucket.lower);
    }
    let log_lower = bucket.lower.abs().log2();
    let log_upper = bucket.upper.abs().log2();
    let log_v = v.abs().log2();
    if v > 0.0 {
        (log_v - log_lower) / (log_upper - log_lower)
    } else {
        1.0 - ((log_v - log_upper) / (log_lower - log_upper))
    }
}

/// `histogram_fraction(lower, upper, h)` for a native histogram.
pub(crate) fn fraction(lower: f64, upper: f64, h: &FloatHistogram) -> (f64, NanNote) {
    if h.count == 0.0 || lower.is_nan() || upper.is_nan() {
        return (f64::NAN, NanNote::None);
    }
    if lower >= upper {
        return (0.0, NanNote::None);
    }
    let buckets = all_buckets(h);
    let custom = h.uses_custom_buckets();
    let (mut count, mut rank) = (0.0, 0.0);
    let (mut lower_rank, mut upper_rank) = (0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    let mut next = 0;
    while next < buckets.len() {
        let mut b = buckets[next];
        next += 1;
        count += b.count;
        let mut zero_bucket = false;
        if b.lower <= 0.0 && b.upper >= 0.0 {
            zero_bucket = true;
            if h.negative.is_empty() && !h.positive.is_empty() {
                b.lower = 0.0;
            } else if h.positive.is_empty() && !h.negative.is_empty() {
                b.upper = 0.0;
            }
        }
        let interpolate = |v: f64| {
            if custom || zero_bucket {
                if b.lower == f64::NEG_INFINITY {
                    return b.count;
                }
                rank + b.count * fraction_below(&b, v, true)
            } else {
                rank + b.count * fraction_below(&b, v, false)
            }
        };
        if !lower_set && b.lower >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && b.lower >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && b.lower < lower && b.upper > lower {
            lower_rank = interpolate(lower);
            lower_set = true;
        }
        if !upper_set && b.lower < upper && b.upper > upper {
            upper_rank = interpolate(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank += b.count;
    }
    let mut note = NanNote::None;
    if h.sum.is_nan() {
        count += buckets[next.min(buckets.len())..].iter().map(|b| b.count).sum::<f64>();
        if count < h.count {
            note = NanNote::FractionExcludesNaN;
        }
    } else {
        count = h.count;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    ((upper_rank - lower_rank) / h.count, note)
}

/// The estimated variance of the observations: each bucket's count at its
/// midpoint (geometric for exponential buckets, arithmetic for custom ones,
/// zero for the zero bucket).
pub(crate) fn variance(h: &FloatHistogram) -> f64 {
    let mean = h.sum / h.count;
    let (mut variance, mut c) = (0.0, 0.0);
    for bucket in all_buckets(h) {
        if bucket.count == 0.0 {
            continue;
        }
        let value = if h.uses_custom_buckets() {
            (bucket.upper + bucket.lower) / 2.0
        } else if bucket.lower <= 0.0 && bucket.upper >= 0.0 {
            0.0
        } else {
            let geometric = (bucket.upper * bucket.lower).sqrt();
            if bucket.upper < 0.0 { -geometric } else { geometric }
        };
        let delta = value - mean;
        (variance, c) = kahan_inc(bucket.count * delta * delta, variance, c);
    }
    (variance + c) / h.count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(schema: i32, zero: (f64, f64), positive: &[(i32, f64)], negative: &[(i32, f64)]) -> FloatHistogram {
        let buckets = |list: &[(i32, f64)]| list.iter().map(|&(index, count)| Bucket { index, count }).collect();
        let positive: Vec<Bucket> = buckets(positive);
        let negative: Vec<Bucket> = buckets(negative);
        let count = zero.1 + positive.iter().chain(&negative).map(|b| b.count).sum::<f64>();
        FloatHistogram {
            schema,
            zero_threshold: zero.0,
            zero_count: zero.1,
            count,
            sum: count,
            positive,
            negative,
            ..FloatHistogram::default()
        }
    }

    #[test]
    fn adding_lowers_resolution_to_the_coarser_schema() {
        let mut a = exp(1, (0.0, 0.0), &[(1, 1.0), (2, 2.0)], &[]);
        let b = exp(0, (0.0, 0.0), &[(1, 4.0)], &[]);
        add(&mut a, &b, false).unwrap();
        assert_eq!(a.schema, 0);
        // Schema 1 buckets 1 and 2 both fall into schema 0 bucket 1.
        assert_eq!(a.positive, vec![Bucket { index: 1, count: 7.0 }]);
        assert_eq!(a.count, 7.0);
    }

    #[test]
    fn adding_widens_the_zero_bucket() {
        // Schema 0 bucket 0 is (0.5, 1]; a threshold of 1 swallows it.
        let mut a = exp(0, (0.001, 1.0), &[(0, 2.0), (1, 3.0)], &[]);
        let b = exp(0, (1.0, 4.0), &[(1, 1.0)], &[]);
        add(&mut a, &b, false).unwrap();
        assert_eq!(a.zero_threshold, 1.0);
        assert_eq!(a.zero_count, 7.0);
        assert_eq!(a.positive, vec![Bucket { index: 1, count: 4.0 }]);
    }

    #[test]
    fn custom_buckets_with_different_bounds_meet_on_common_bounds() {
        let custom = |bounds: &[f64], counts: &[f64]| FloatHistogram {
            schema: tidewatch_model::histogram::CUSTOM_BUCKETS_SCHEMA,
            count: counts.iter().sum(),
            positive: counts
                .iter()
                .enumerate()
                .map(|(i, &count)| Bucket { index: i as i32, count })
                .collect(),
            custom_values: Arc::from(bounds.to_vec()),
            ..FloatHistogram::default()
        };
        let mut a = custom(&[1.0, 2.0, 5.0], &[1.0, 1.0, 1.0, 1.0]);
        let b = custom(&[2.0, 10.0], &[3.0, 3.0, 3.0]);
        let combined = add(&mut a, &b, false).unwrap();
        assert!(combined.bounds_reconciled);
        assert_eq!(&a.custom_values[..], &[2.0]);
        assert_eq!(
            a.positive,
            vec![Bucket { index: 0, count: 5.0 }, Bucket { index: 1, count: 8.0 }]
        );
        let exponential = exp(0, (0.0, 0.0), &[], &[]);
        assert_eq!(add(&mut a, &exponential, false), Err(IncompatibleSchemas));
    }

    #[test]
    fn resets_are_detected_per_bucket() {
        let before = exp(0, (0.0, 0.0), &[(1, 2.0), (2, 2.0)], &[]);
        let grown = exp(0, (0.0, 0.0), &[(1, 3.0), (2, 2.0)], &[]);
        assert!(!detect_reset(&grown, &before));
        let moved = exp(0, (0.0, 0.0), &[(1, 4.0), (3, 1.0)], &[]);
        assert!(detect_reset(&moved, &before));
        let finer = exp(1, (0.0, 0.0), &[(1, 4.0)], &[]);
        assert!(detect_reset(&finer, &before));
    }

    #[test]
    fn quantiles_interpolate_exponentially_inside_a_bucket() {
        // One bucket (1, 2] with 4 observations: the median is at sqrt(2).
        let h = exp(0, (0.0, 0.0), &[(1, 4.0)], &[]);
        let (median, _) = quantile(0.5, &h);
        assert!((median - std::f64::consts::SQRT_2).abs() < 1e-12);
        assert_eq!(quantile(-1.0, &h).0, f64::NEG_INFINITY);
        assert!(quantile(0.5, &FloatHistogram::default()).0.is_nan());
        let (below, _) = fraction(0.0, std::f64::consts::SQRT_2, &h);
        assert!((below - 0.5).abs() < 1e-12);
    }

    fn arbitrary_histogram() -> impl proptest::strategy::Strategy<Value = FloatHistogram> {
        use proptest::prelude::*;
        let buckets = || proptest::collection::btree_map(-20i32..20, 0u32..50, 0..8);
        (-2i32..4, buckets(), buckets(), 0u32..5).prop_map(|(schema, positive, negative, zero)| {
            let list = |m: std::collections::BTreeMap<i32, u32>| -> Vec<Bucket> {
                m.into_iter()
                    .map(|(index, count)| Bucket {
                        index,
                        count: f64::from(count),
                    })
                    .collect()
            };
            let mut h = FloatHistogram {
                schema,
                zero_count: f64::from(zero),
                positive: list(positive),
                negative: list(negative),
                ..FloatHistogram::default()
            };
            h.count = h.zero_count + h.positive.iter().chain(&h.negative).map(|b| b.count).sum::<f64>();
            h.sum = h.count;
            h
        })
    }

    fn bucket_total(h: &FloatHistogram) -> f64 {
        h.zero_count + h.positive.iter().chain(&h.negative).map(|b| b.count).sum::<f64>()
    }

    proptest::proptest! {
        // Adding keeps every observation: the buckets of the sum hold what
        // both operands' buckets held, at the coarser schema, and
        // subtracting the addend again gives back the first histogram.
        #[test]
        fn addition_keeps_observations_and_subtraction_undoes_it(a in arbitrary_histogram(), b in arbitrary_histogram()) {
            let mut sum = a.clone();
            add(&mut sum, &b, false).unwrap();
            proptest::prop_assert_eq!(sum.schema, a.schema.min(b.schema));
            proptest::prop_assert_eq!(bucket_total(&sum), bucket_total(&a) + bucket_total(&b));
            proptest::prop_assert_eq!(sum.count, a.count + b.count);
            proptest::prop_assert!(sum.positive.windows(2).all(|w| w[0].index < w[1].index));
            let mut back = sum.clone();
            add(&mut back, &b, true).unwrap();
            compact(&mut back);
            let mut expected = a.clone();
            expected.positive = reduce_resolution(&a.positive, a.schema, sum.schema);
            expected.negative = reduce_resolution(&a.negative, a.schema, sum.schema);
            expected.schema = sum.schema;
            compact(&mut expected);
            proptest::prop_assert_eq!(back.positive, expected.positive);
            proptest::prop_assert_eq!(back.negative, expected.negative);
        }

        // The compensated sum equals a plain sum for whole counts, on the
        // in-place path (one layout) and the realigning one alike.
        #[test]
        fn kahan_sums_equal_plain_sums(histograms in proptest::collection::vec(arbitrary_histogram(), 1..6)) {
            let mut kahan = KahanSum::new(histograms[0].clone());
            let mut plain = histograms[0].clone();
            for h in &histograms[1..] {
                kahan.add(h).unwrap();
                add(&mut plain, h, false).unwrap();
            }
            let mut total = kahan.total();
            compact(&mut total);
            compact(&mut plain);
            proptest::prop_assert_eq!(total, plain);
        }

        // Quantiles never decrease with q and stay within the populated range.
        #[test]
        fn quantiles_are_monotonic(h in arbitrary_histogram(), q1 in 0.0f64..=1.0, q2 in 0.0f64..=1.0) {
            let (low, high) = if q1 <= q2 { (q1, q2) } else { (q2, q1) };
            let (a, _) = quantile(low, &h);
            let (b, _) = quantile(high, &h);
            if h.count > 0.0 {
                proptest::prop_assert!(a <= b + 1e-9 * b.abs().max(1.0), "q {low} -> {a}, q {high} -> {b}");
            }
        }

        // No histogram is a reset of itself, and losing observations is one.
        #[test]
        fn resets_are_decreases(h in arbitrary_histogram()) {
            proptest::prop_assert!(!detect_reset(&h, &h));
            if let Some(bucket) = h.positive.iter().position(|b| b.count > 0.0) {
                let mut fewer = h.clone();
                fewer.positive[bucket].count -= 1.0;
                fewer.count -= 1.0;
                proptest::prop_assert!(detect_reset(&fewer, &h));
            }
        }
    }

    #[test]
    fn kahan_sum_matches_plain_sum_for_simple_inputs() {
        let a = exp(0, (0.0, 0.0), &[(1, 1.0)], &[(2, 1.0)]);
        let b = exp(1, (0.0, 0.0), &[(1, 2.0), (3, 1.0)], &[]);
        let mut kahan = KahanSum::new(a.clone());
        kahan.add(&b).unwrap();
        let mut plain = a;
        add(&mut plain, &b, false).unwrap();
        assert_eq!(kahan.total(), plain);
    }
}
