//! Reading series: instant selectors, range selectors and subqueries.

use promql_parser::parser::{Expr, SubqueryExpr, VectorSelector};
use tidewatch_model::seam::{SeriesRead, SeriesSamples, TimeRange};
use tidewatch_model::{Sample, TimestampMs, is_stale_nan};

use super::data::{Data, Point, RangeSeries, Series};
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
}

/// Loads the series `selector` picks with samples in `time_range`, sorted by
/// labels, counting them against the query's sample limit.
async fn load<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    selector: &VectorSelector,
    time_range: TimeRange,
) -> Result<Vec<SeriesSamples>, Error> {
    let sets = selector_matchers(selector)?;
    let mut all: Vec<SeriesSamples> = Vec::new();
    let single = sets.len() == 1;
    for matchers in sets {
        for series in ev.source.select(ev.tenant, &matchers, time_range).await? {
            // `or` alternatives may pick the same series twice.
            if single || !all.iter().any(|s| s.labels == series.labels) {
                all.push(series);
            }
        }
    }
    all.sort_by(|a, b| a.labels.cmp(&b.labels));
    let loaded: usize = all.iter().map(|s| s.samples.len()).sum();
    ev.shared.add_loaded(all.len(), loaded, &ev.limits)?;
    Ok(all)
}

/// The newest sample at or before `t` within the lookback window, unless it is a staleness marker.
fn sample_at(samples: &[Sample], t: TimestampMs, lookback: i64) -> Option<Sample> {
    let index = samples.partition_point(|s| s.timestamp <= t);
    let sample = samples.get(index.checked_sub(1)?)?;
    if sample.timestamp <= t - lookback || is_stale_nan(sample.value) {
        return None;
    }
    Some(*sample)
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
    let loaded = load(ev, selector, time_range).await?;
    let mut out = Vec::with_capacity(loaded.len());
    for entry in loaded {
        let points: Vec<Point> = times
            .iter()
            .enumerate()
            .filter_map(|(step, &t)| {
                sample_at(&entry.samples, t, ev.lookback).map(|sample| Point {
                    step: step as u32,
                    value: match sampled {
                        Sampled::Value => sample.value,
                        Sampled::Timestamp => sample.timestamp as f64 / 1000.0,
                    },
                })
            })
            .collect();
        if !points.is_empty() {
            out.push(Series::new(entry.labels, false, points));
        }
    }
    Ok(out)
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

    /// The range vector at the only step (an instant query's result).
    pub(crate) fn into_single_step(self) -> Vec<RangeSeries> {
        let Some(&(start, end)) = self.bounds.first() else {
            return Vec::new();
        };
        self.series
            .into_iter()
            .filter_map(|mut entry| {
                entry.samples.retain(|s| s.timestamp > start && s.timestamp <= end);
                (!entry.samples.is_empty()).then_some(entry)
            })
            .collect()
    }
}

/// Evaluates a range-vector expression (a range selector or a subquery,
/// possibly in parentheses) for every step.
pub(crate) async fn windows<S: SeriesRead>(ev: &Evaluator<'_, S>, expr: &Expr) -> Result<Windows, Error> {
    match expr {
        Expr::Paren(paren) => Box::pin(windows(ev, &paren.expr)).await,
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
            let loaded = load(ev, selector, TimeRange::new(lo.saturating_add(1), hi)).await?;
            let series = loaded
                .into_iter()
                .filter_map(|mut entry| {
                    entry.samples.retain(|s| !is_stale_nan(s.value));
                    (!entry.samples.is_empty()).then_some(RangeSeries {
                        labels: entry.labels,
                        drop_name: false,
                        samples: entry.samples,
                    })
                })
                .collect();
            Ok(Windows { series, bounds })
        }
        Expr::Subquery(subquery) => subquery_windows(ev, subquery).await,
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
            .map(|entry| RangeSeries {
                labels: entry.labels,
                drop_name: entry.drop_name,
                samples: entry
                    .points
                    .iter()
                    .map(|p| Sample::new(inner.step_time(p.step as usize), p.value))
                    .collect(),
            })
            .collect(),
        Data::Scalar(values) => vec![RangeSeries {
            labels: Default::default(),
            drop_name: false,
            samples: values
                .iter()
                .enumerate()
                .map(|(i, &v)| Sample::new(inner.step_time(i), v))
                .collect(),
        }],
        _ => return Err(Error::bad_data("subquery is only allowed on instant vector")),
    };
    Ok(Windows { series, bounds })
}

pub(crate) fn duration_ms(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
