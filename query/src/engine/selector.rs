//! Reading series: instant selectors, range selectors and subqueries.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use promql_parser::parser::{Expr, SubqueryExpr, VectorSelector};
use tidewatch_model::seam::{NO_START_TIMESTAMP, SeriesRead, SeriesSamples, TimeRange};
use tidewatch_model::{FloatHistogram, Labels, Sample, TimestampMs, is_stale_nan};

use super::data::{Data, HPoint, HSample, Point, RangeSeries, Series};
use super::{DEFAULT_SUBQUERY_STEP_MS, Evaluator};
use crate::error::Error;
use crate::params::selector_matchers;

/// What an instant selector's points carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sampled {
    /// The sample's value.
    Value,
    /// The sample's own timestamp in seconds (for `timestamp()`).
    Timestamp,
    /// Like `Timestamp`, but only float samples may be read (info series).
    FloatTimestamp,
    /// The sample's start timestamp in seconds, 0 when it has none (for
    /// `start_timestamp()`).
    StartTimestamp,
}

/// How much of each series a selector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    /// Every sample in the time range.
    All,
    /// The newest sample in the time range: an instant selector at one time.
    Newest,
}

/// Series per batch when reading for a query: enough to amortize a block
/// read, few enough that one batch's samples stay small next to the result.
const BATCH_SERIES: usize = 1024;

/// Hands the series `selector` picks (with their samples in `time_range`) to
/// `take` a batch at a time, counting them against the query's limits, so a
/// caller that reduces each batch never holds every sample. Returns whether
/// the batches came in one label order (not so with `or` alternatives, whose
/// series are handed over once each, alternative by alternative).
async fn load_batches<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    selector: &VectorSelector,
    time_range: TimeRange,
    wanted: Wanted,
    mut take: impl FnMut(Vec<SeriesSamples>) -> Result<usize, Error> + Send,
) -> Result<bool, Error> {
    let sets = selector_matchers(selector)?;
    let alternatives = sets.len();
    let stats_only = ev
        .shared
        .stats_only
        .contains(&(selector as *const VectorSelector as usize));
    let mut seen: HashSet<Labels> = HashSet::new();
    for matchers in sets {
        // The seam speaks the model's errors: ours wait here meanwhile.
        let mut failure: Option<Error> = None;
        let visit = |mut batch: Vec<SeriesSamples>| {
            if alternatives > 1 {
                batch.retain(|s| seen.insert(s.labels.clone()));
            }
            if stats_only {
                batch.iter_mut().for_each(|s| histogram_stats(&mut s.histograms));
            }
            // `take` says how many samples or points it keeps of the batch.
            let samples = batch.iter().map(|s| s.samples.len() + s.histograms.len()).sum();
            let taken = ev
                .shared
                .hold(batch.len(), samples, &ev.limits)
                .and_then(|()| take(batch))
                .map(|kept| ev.shared.keep(samples, kept));
            taken.map_err(|e| {
                failure = Some(e);
                tidewatch_model::Error::Invalid("query stopped".to_string())
            })
        };
        let outcome = match wanted {
            Wanted::All => {
                ev.source
                    .select_batches(ev.tenant, &matchers, time_range, BATCH_SERIES, visit)
                    .await
            }
            // Counter-reset detection for histogram statistics needs the
            // samples before the newest one.
            Wanted::Newest if !stats_only => {
                ev.source
                    .select_latest_batches(ev.tenant, &matchers, time_range, BATCH_SERIES, visit)
                    .await
            }
            Wanted::Newest => {
                ev.source
                    .select_batches(ev.tenant, &matchers, time_range, BATCH_SERIES, visit)
                    .await
            }
        };
        if let Some(e) = failure {
            return Err(e);
        }
        outcome?;
    }
    Ok(alternatives == 1)
}

/// The histograms as Prometheus' `HistogramStatsIterator` hands them out:
/// count, sum and schema only, and an unknown counter-reset hint replaced by
/// what comparing with the previous histogram finds.
fn histogram_stats(histograms: &mut [tidewatch_model::HistogramSample]) {
    use tidewatch_model::histogram::CounterResetHint;
    let mut last: Option<FloatHistogram> = None;
    for sample in histograms {
        let full = std::mem::take(&mut sample.histogram);
        if full.is_stale() {
            sample.histogram = FloatHistogram {
                counter_reset_hint: full.counter_reset_hint,
                schema: full.schema,
                count: full.count,
                sum: full.sum,
                ..FloatHistogram::default()
            };
            continue;
        }
        let hint = match (full.counter_reset_hint, &last) {
            (CounterResetHint::Unknown, Some(previous)) => {
                if super::histogram::detect_reset(&full, previous) {
                    CounterResetHint::CounterReset
                } else {
                    CounterResetHint::NotCounterReset
                }
            }
            (hint, _) => hint,
        };
        sample.histogram = FloatHistogram {
            counter_reset_hint: hint,
            schema: full.schema,
            count: full.count,
            sum: full.sum,
            ..FloatHistogram::default()
        };
        let mut remembered = full;
        remembered.counter_reset_hint = hint;
        last = Some(remembered);
    }
}

/// The index of the newest item at or before `t`. `cursor` is where the
/// search starts: step times usually ascend, so it only moves forward (it
/// restarts when they do not).
fn newest_at<T>(items: &[T], time_of: impl Fn(&T) -> TimestampMs, t: TimestampMs, cursor: &mut usize) -> Option<usize> {
    if *cursor > 0 && items.get(*cursor - 1).is_some_and(|s| time_of(s) > t) {
        *cursor = 0;
    }
    while *cursor < items.len() && time_of(&items[*cursor]) <= t {
        *cursor += 1;
    }
    cursor.checked_sub(1)
}

/// What an instant selector sees of a series at one time, with the
/// sample's index among the series' floats or histograms.
enum Seen<'a> {
    Float(usize, Sample),
    Histogram(usize, &'a tidewatch_model::HistogramSample),
}

impl Seen<'_> {
    /// The sample's start timestamp, [`NO_START_TIMESTAMP`] when it has none.
    fn start_timestamp(&self, entry: &SeriesSamples) -> TimestampMs {
        let (starts, index) = match self {
            Seen::Float(index, _) => (&entry.start_timestamps.floats, *index),
            Seen::Histogram(index, _) => (&entry.start_timestamps.histograms, *index),
        };
        starts.get(index).copied().unwrap_or(NO_START_TIMESTAMP)
    }
}

/// The newest sample (float or histogram) at or before `t` within the
/// lookback window, unless it is a staleness marker.
fn sample_at<'a>(
    entry: &'a SeriesSamples,
    t: TimestampMs,
    lookback: i64,
    cursors: &mut (usize, usize),
) -> Option<Seen<'a>> {
    let float = newest_at(&entry.samples, |s| s.timestamp, t, &mut cursors.0).map(|i| (i, entry.samples[i]));
    let histogram = newest_at(&entry.histograms, |h| h.timestamp, t, &mut cursors.1).map(|i| (i, &entry.histograms[i]));
    let seen = match (float, histogram) {
        (Some((_, f)), Some((i, h))) if h.timestamp > f.timestamp => Seen::Histogram(i, h),
        (Some((i, f)), _) => Seen::Float(i, f),
        (None, Some((i, h))) => Seen::Histogram(i, h),
        (None, None) => return None,
    };
    let (timestamp, stale) = match &seen {
        Seen::Float(_, f) => (f.timestamp, is_stale_nan(f.value)),
        Seen::Histogram(_, h) => (h.timestamp, h.histogram.is_stale()),
    };
    if timestamp <= t - lookback || stale {
        return None;
    }
    Some(seen)
}

/// An instant-vector selector at every step.
pub(crate) async fn instant<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    selector: &VectorSelector,
    sampled: Sampled,
) -> Result<Vec<Series>, Error> {
    let times: Vec<TimestampMs> = ev
        .step_times()
        .map(|t| ev.effective_time(&selector.at, &selector.offset, t))
        .collect();
    let (Some(&lo), Some(&hi)) = (times.iter().min(), times.iter().max()) else {
        return Ok(Vec::new());
    };
    let time_range = TimeRange::new(lo.saturating_sub(ev.lookback).saturating_add(1), hi);
    let mut out = Vec::new();
    // One evaluation time needs each series' newest sample only.
    let wanted = if lo == hi { Wanted::Newest } else { Wanted::All };
    let sorted = load_batches(ev, selector, time_range, wanted, |batch| {
        convert_to_points(batch, &times, ev.lookback, sampled, &mut out)
    })
    .await?;
    if !sorted {
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
    }
    Ok(out)
}

/// The points a batch of series has at the step times `times`; returns how
/// many it added.
fn convert_to_points(
    batch: Vec<SeriesSamples>,
    times: &[TimestampMs],
    lookback: i64,
    sampled: Sampled,
    out: &mut Vec<Series>,
) -> Result<usize, Error> {
    let mut added = 0;
    for mut entry in batch {
        let mut cursors = (0, 0);
        let mut series = Series::new(std::mem::take(&mut entry.labels), false, Vec::new());
        // The same stored histogram is shared by every step that sees it.
        let mut shared: Option<(TimestampMs, Arc<FloatHistogram>)> = None;
        for (step, &t) in times.iter().enumerate() {
            let step = step as u32;
            match (sample_at(&entry, t, lookback, &mut cursors), sampled) {
                (None, _) => {}
                (Some(seen), Sampled::StartTimestamp) => series.points.push(Point {
                    step,
                    value: seen.start_timestamp(&entry) as f64 / 1000.0,
                }),
                (Some(Seen::Float(_, sample)), Sampled::Value) => series.points.push(Point {
                    step,
                    value: sample.value,
                }),
                (Some(Seen::Float(_, sample)), Sampled::Timestamp | Sampled::FloatTimestamp) => {
                    series.points.push(Point {
                        step,
                        value: sample.timestamp as f64 / 1000.0,
                    })
                }
                (Some(Seen::Histogram(..)), Sampled::FloatTimestamp) => {
                    return Err(Error::execution("info sample should be float"));
                }
                (Some(Seen::Histogram(_, sample)), Sampled::Timestamp) => series.points.push(Point {
                    step,
                    value: sample.timestamp as f64 / 1000.0,
                }),
                (Some(Seen::Histogram(_, sample)), Sampled::Value) => {
                    let h = match &shared {
                        Some((timestamp, h)) if *timestamp == sample.timestamp => h.clone(),
                        _ => {
                            let h = Arc::new(sample.histogram.clone());
                            shared = Some((sample.timestamp, h.clone()));
                            h
                        }
                    };
                    series.histograms.push(HPoint { step, h });
                }
            }
        }
        if !series.is_empty() {
            added += series.points.len() + series.histograms.len();
            out.push(series);
        }
    }
    Ok(added)
}

/// A range vector over every step: each series' samples covering all the
/// windows, and each step's window.
#[derive(Debug)]
pub(crate) struct Windows {
    pub series: Vec<RangeSeries>,
    /// Per step: the window `(start, end]`.
    pub bounds: Vec<(TimestampMs, TimestampMs)>,
}

impl Windows {
    /// The samples of series `index` in the window of `step`.
    pub(crate) fn slice(&self, index: usize, step: usize) -> &[Sample] {
        let samples = &self.series[index].samples;
        let (start, end) = self.bounds[step];
        let from = samples.partition_point(|s| s.timestamp <= start);
        let to = samples.partition_point(|s| s.timestamp <= end);
        &samples[from..to.max(from)]
    }

    /// Where the histogram samples of series `index` in the window of `step`
    /// are among its histograms (and their start timestamps).
    pub(crate) fn histogram_range(&self, index: usize, step: usize) -> Range<usize> {
        let samples = &self.series[index].histograms;
        let (start, end) = self.bounds[step];
        let from = samples.partition_point(|s| s.timestamp <= start);
        let to = samples.partition_point(|s| s.timestamp <= end);
        from..to.max(from)
    }

    /// How many samples (floats and histograms) the series hold in all.
    pub(crate) fn samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len() + s.histograms.len()).sum()
    }

    /// The samples of series `index` in each step's window, in step order.
    #[cfg(test)]
    pub(crate) fn slices(&self, index: usize) -> impl Iterator<Item = &[Sample]> + '_ {
        let samples = &self.series[index].samples;
        self.slice_ranges(index).map(move |range| &samples[range])
    }

    /// Where the samples of series `index` in each step's window are among
    /// its samples (and their start timestamps), in step order. Windows move
    /// forward with the steps, so two cursors slide along the samples
    /// instead of searching them at every step.
    pub(crate) fn slice_ranges(&self, index: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        let samples = &self.series[index].samples;
        let (mut from, mut to) = (0usize, 0usize);
        self.bounds.iter().map(move |&(start, end)| {
            if from > 0 && samples[from - 1].timestamp > start {
                // The window moved backwards (never for selectors): search again.
                from = samples.partition_point(|s| s.timestamp <= start);
                to = from;
            }
            while from < samples.len() && samples[from].timestamp <= start {
                from += 1;
            }
            if to < from {
                to = from;
            }
            if to > from && samples[to - 1].timestamp > end {
                to = samples.partition_point(|s| s.timestamp <= end).max(from);
            }
            while to < samples.len() && samples[to].timestamp <= end {
                to += 1;
            }
            from..to
        })
    }

    /// The range vector at the only step (an instant query's result).
    pub(crate) fn into_single_step(self) -> Vec<RangeSeries> {
        let Some(&(start, end)) = self.bounds.first() else {
            return Vec::new();
        };
        self.series
            .into_iter()
            .filter_map(|mut entry| {
                let starts = &mut entry.start_timestamps;
                let inside = |t: TimestampMs| t > start && t <= end;
                retain_with_starts(&mut entry.samples, &mut starts.floats, |s| inside(s.timestamp));
                retain_with_starts(&mut entry.histograms, &mut starts.histograms, |s| inside(s.timestamp));
                (!entry.samples.is_empty() || !entry.histograms.is_empty()).then_some(entry)
            })
            .collect()
    }
}

/// Evaluates a range-vector expression (a range selector or a subquery,
/// possibly in parentheses) for every step.
pub(crate) async fn windows<S: SeriesRead>(ev: &Evaluator<'_, S>, expr: &Expr) -> Result<Windows, Error> {
    let mut all: Option<Windows> = None;
    let sorted = windows_batches(ev, expr, |batch| {
        let kept = batch.samples();
        match &mut all {
            Some(windows) => windows.series.extend(batch.series),
            None => all = Some(batch),
        }
        Ok(kept)
    })
    .await?;
    match all {
        Some(mut windows) => {
            if !sorted {
                windows.series.sort_by(|a, b| a.labels.cmp(&b.labels));
            }
            Ok(windows)
        }
        None => Ok(Windows {
            series: Vec::new(),
            bounds: Vec::new(),
        }),
    }
}

/// Like [`windows`], a batch of series at a time for range selectors (so a
/// range function never holds every series' samples); a subquery comes in
/// one piece. Batches come in label order unless the selector has `or`
/// alternatives; returns whether they did.
pub(crate) async fn windows_batches<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    expr: &Expr,
    mut each: impl FnMut(Windows) -> Result<usize, Error> + Send,
) -> Result<bool, Error> {
    match expr {
        Expr::Paren(paren) => Box::pin(windows_batches(ev, &paren.expr, each)).await,
        Expr::MatrixSelector(matrix) => {
            let range_ms = duration_ms(matrix.range);
            let selector = &matrix.vs;
            let bounds: Vec<(TimestampMs, TimestampMs)> = ev
                .step_times()
                .map(|t| {
                    let end = ev.effective_time(&selector.at, &selector.offset, t);
                    (end.saturating_sub(range_ms), end)
                })
                .collect();
            let lo = bounds.iter().map(|b| b.0).min().unwrap_or(0);
            let hi = bounds.iter().map(|b| b.1).max().unwrap_or(0);
            let time_range = TimeRange::new(lo.saturating_add(1), hi);
            load_batches(ev, selector, time_range, Wanted::All, |batch| {
                let series = batch
                    .into_iter()
                    .filter_map(|mut entry| {
                        let starts = &mut entry.start_timestamps;
                        retain_with_starts(&mut entry.samples, &mut starts.floats, |s| !is_stale_nan(s.value));
                        let histograms: Vec<HSample> = if starts.histograms.is_empty() {
                            entry
                                .histograms
                                .into_iter()
                                .filter(|h| !h.histogram.is_stale())
                                .map(HSample::from)
                                .collect()
                        } else {
                            retain_with_starts(&mut entry.histograms, &mut starts.histograms, |h| {
                                !h.histogram.is_stale()
                            });
                            entry.histograms.into_iter().map(HSample::from).collect()
                        };
                        if entry.samples.is_empty() && histograms.is_empty() {
                            return None;
                        }
                        let mut series = RangeSeries::new(entry.labels, false, entry.samples, histograms);
                        series.start_timestamps = entry.start_timestamps;
                        Some(series)
                    })
                    .collect();
                each(Windows {
                    series,
                    bounds: bounds.clone(),
                })
            })
            .await
        }
        Expr::Subquery(subquery) => {
            // The inner query counted what it read itself.
            each(subquery_windows(ev, subquery).await?)?;
            Ok(true)
        }
        other => Err(Error::bad_data(format!(
            "expected type range vector, got {}: {other}",
            super::type_name(other.value_type())
        ))),
    }
}

async fn subquery_windows<S: SeriesRead>(ev: &Evaluator<'_, S>, subquery: &SubqueryExpr) -> Result<Windows, Error> {
    let range_ms = duration_ms(subquery.range);
    let step = subquery
        .step
        .map(duration_ms)
        .filter(|&s| s > 0)
        .unwrap_or(DEFAULT_SUBQUERY_STEP_MS);
    let bounds: Vec<(TimestampMs, TimestampMs)> = ev
        .step_times()
        .map(|t| {
            let end = ev.effective_time(&subquery.at, &subquery.offset, t);
            (end.saturating_sub(range_ms), end)
        })
        .collect();
    let lo = bounds.iter().map(|b| b.0).min().unwrap_or(0);
    let hi = bounds.iter().map(|b| b.1).max().unwrap_or(0);
    // The inner steps are aligned to multiples of the step (from the epoch),
    // starting after the first window's open start.
    let mut start = step * (lo / step);
    if start <= lo {
        start += step;
    }
    if start > hi {
        return Ok(Windows {
            series: Vec::new(),
            bounds,
        });
    }
    let inner = Evaluator {
        source: ev.source,
        tenant: ev.tenant,
        start,
        end: start + (hi - start) / step * step,
        interval: step,
        query_start: ev.query_start,
        query_end: ev.query_end,
        range_query: ev.range_query,
        query_step: ev.query_step,
        lookback: ev.lookback,
        limits: ev.limits,
        shared: ev.shared,
    };
    let series = match inner.eval(&subquery.expr).await? {
        Data::Vector(series) => series
            .into_iter()
            .map(|entry| {
                let samples = entry
                    .points
                    .iter()
                    .map(|p| Sample::new(inner.step_time(p.step as usize), p.value))
                    .collect();
                // As in Prometheus, reset hints do not survive a subquery: its
                // steps may skip or repeat the samples a hint relates.
                let histograms = entry
                    .histograms
                    .iter()
                    .map(|p| HSample {
                        timestamp: inner.step_time(p.step as usize),
                        h: unknown_reset_hint(&p.h),
                    })
                    .collect();
                RangeSeries::new(entry.labels, entry.drop_name, samples, histograms)
            })
            .collect(),
        Data::Scalar(values) => vec![RangeSeries::new(
            Default::default(),
            false,
            values
                .iter()
                .enumerate()
                .map(|(i, &v)| Sample::new(inner.step_time(i), v))
                .collect(),
            Vec::new(),
        )],
        _ => return Err(Error::bad_data("subquery is only allowed on instant vector")),
    };
    Ok(Windows { series, bounds })
}

/// Keeps the items `keep` accepts, and their start timestamps with them.
/// `starts` is empty or parallel to `items`; a list that does not fit is
/// dropped rather than trusted.
fn retain_with_starts<T>(items: &mut Vec<T>, starts: &mut Vec<TimestampMs>, keep: impl Fn(&T) -> bool) {
    if starts.len() != items.len() {
        debug_assert!(starts.is_empty(), "start timestamps do not fit their samples");
        starts.clear();
        items.retain(keep);
        return;
    }
    let mut kept = 0;
    for i in 0..items.len() {
        if keep(&items[i]) {
            items.swap(kept, i);
            starts[kept] = starts[i];
            kept += 1;
        }
    }
    items.truncate(kept);
    starts.truncate(kept);
}

/// `h` with a "reset" or "not reset" hint turned into "unknown".
fn unknown_reset_hint(h: &Arc<FloatHistogram>) -> Arc<FloatHistogram> {
    use tidewatch_model::histogram::CounterResetHint::{CounterReset, NotCounterReset, Unknown};
    match h.counter_reset_hint {
        CounterReset | NotCounterReset => {
            let mut copy = (**h).clone();
            copy.counter_reset_hint = Unknown;
            Arc::new(copy)
        }
        _ => h.clone(),
    }
}

pub(crate) fn duration_ms(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tidewatch_model::Labels;

    proptest! {
        // Sliding cursors give exactly the windows a search would, for
        // forward-moving windows and for pinned (repeated) ones.
        #[test]
        fn sliding_windows_equal_searched_windows(
            times in proptest::collection::btree_set(0i64..500, 0..60),
            starts in proptest::collection::vec(-50i64..550, 1..30),
            width in 0i64..200,
            pinned in any::<bool>(),
        ) {
            let mut starts = starts;
            starts.sort_unstable();
            if pinned {
                let first = starts[0];
                starts.iter_mut().for_each(|s| *s = first);
            }
            let windows = Windows {
                series: vec![RangeSeries::new(
                    Labels::default(),
                    false,
                    times.iter().map(|&t| Sample::new(t, t as f64)).collect(),
                    Vec::new(),
                )],
                bounds: starts.iter().map(|&s| (s, s + width)).collect(),
            };
            let slid: Vec<&[Sample]> = windows.slices(0).collect();
            for (step, slice) in slid.iter().enumerate() {
                prop_assert_eq!(*slice, windows.slice(0, step));
            }
        }
    }
}
