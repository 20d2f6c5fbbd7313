//! PromQL evaluation.
//!
//! This slice evaluates what the read API needs before the full engine lands:
//! instant-vector selectors (with the lookback window, staleness markers,
//! `offset` and `@`), range-vector selectors, number and string literals, and
//! parentheses. Any other expression fails with an `execution` error naming it,
//! never a wrong answer. Selectors push their matchers and exact time range into
//! the read seam, so nothing beyond what the query needs is loaded.

use std::time::SystemTime;

use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};
use tidewatch_model::seam::{SeriesRead, SeriesSamples, TimeRange};
use tidewatch_model::{Labels, Sample, TenantId, TimestampMs, is_stale_nan};

use crate::error::Error;
use crate::params::selector_matchers;

/// Prometheus' default lookback delta.
pub const DEFAULT_LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// Limits on one query.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Most samples a query may load.
    pub max_samples: usize,
    /// Most points a range query may return per series.
    pub max_points_per_series: i64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_samples: 50_000_000,
            max_points_per_series: 11_000,
        }
    }
}

/// What a query evaluates.
#[derive(Debug, Clone, Copy)]
pub struct EvalRange {
    pub start: TimestampMs,
    pub end: TimestampMs,
    /// 0 for an instant query.
    pub step: i64,
    pub lookback: i64,
}

impl EvalRange {
    pub fn instant(time: TimestampMs, lookback: i64) -> Self {
        EvalRange {
            start: time,
            end: time,
            step: 0,
            lookback,
        }
    }

    fn steps(&self) -> impl Iterator<Item = TimestampMs> + '_ {
        let step = self.step.max(1);
        (0..)
            .map(move |i: i64| self.start + i * step)
            .take_while(move |&t| t <= self.end)
    }
}

/// A query result.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An instant vector at `time`: (labels, value) pairs.
    Vector {
        time: TimestampMs,
        samples: Vec<(Labels, f64)>,
    },
    /// Series with samples (range vectors and range-query results).
    Matrix(Vec<SeriesSamples>),
    Scalar {
        time: TimestampMs,
        value: f64,
    },
    String {
        time: TimestampMs,
        value: String,
    },
}

/// The engine's annotations of one evaluation, rendered as Prometheus renders
/// them (`PromQL warning: … (line:col)`), each once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
}

/// A query's value and what the engine noticed on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    pub value: Value,
    pub annotations: Annotations,
}

/// Parses a query with Prometheus' parser; errors carry its position and message.
pub fn parse(query: &str) -> Result<Expr, Error> {
    promql_parser::parser::parse(query).map_err(|e| Error::bad_data(format!("invalid parameter \"query\": {e}")))
}

/// Evaluates `expr` over `range` against `source`.
pub async fn evaluate<S: SeriesRead>(
    source: &S,
    tenant: &TenantId,
    expr: &Expr,
    range: EvalRange,
    limits: QueryLimits,
) -> Result<Evaluated, Error> {
    let value = evaluate_value(source, tenant, expr, range, limits).await?;
    Ok(Evaluated {
        value,
        annotations: Annotations::default(),
    })
}

async fn evaluate_value<S: SeriesRead>(
    source: &S,
    tenant: &TenantId,
    expr: &Expr,
    range: EvalRange,
    limits: QueryLimits,
) -> Result<Value, Error> {
    let is_range_query = range.step > 0;
    match expr {
        Expr::Paren(paren) => Box::pin(evaluate_value(source, tenant, &paren.expr, range, limits)).await,
        Expr::NumberLiteral(number) => {
            if is_range_query {
                let samples = range.steps().map(|t| Sample::new(t, number.val)).collect();
                Ok(Value::Matrix(vec![SeriesSamples {
                    labels: Labels::default(),
                    samples,
                }]))
            } else {
                Ok(Value::Scalar {
                    time: range.start,
                    value: number.val,
                })
            }
        }
        Expr::StringLiteral(string) if !is_range_query => Ok(Value::String {
            time: range.start,
            value: string.val.clone(),
        }),
        Expr::StringLiteral(_) => Err(Error::bad_data(
            "invalid expression type \"string\" for range query, must be Scalar or instant Vector",
        )),
        Expr::VectorSelector(selector) => instant_selector(source, tenant, selector, range, limits).await,
        Expr::MatrixSelector(matrix) if !is_range_query => {
            let window = i64::try_from(matrix.range.as_millis()).unwrap_or(i64::MAX);
            let at = effective_time(&matrix.vs, range.start, range);
            // Range windows are left-open: (at - window, at].
            let time_range = TimeRange::new(at.saturating_sub(window).saturating_add(1), at);
            let mut series = select(source, tenant, &matrix.vs, time_range, limits).await?;
            for entry in &mut series {
                entry.samples.retain(|s| !is_stale_nan(s.value));
            }
            series.retain(|s| !s.samples.is_empty());
            Ok(Value::Matrix(series))
        }
        Expr::MatrixSelector(_) => Err(Error::bad_data(
            "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector",
        )),
        other => Err(Error::execution(format!(
            "unsupported expression {}: this build evaluates selectors and literals only; functions, operators and aggregations come with the PromQL engine",
            describe(other)
        ))),
    }
}

fn describe(expr: &Expr) -> String {
    let text = expr.to_string();
    if text.len() > 80 {
        format!("{}…", &text[..text.floor_char_boundary(80)])
    } else {
        text
    }
}

fn system_time_ms(time: SystemTime) -> TimestampMs {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_millis() as TimestampMs,
        Err(before) => -(before.duration().as_millis() as TimestampMs),
    }
}

fn offset_ms(selector: &VectorSelector) -> i64 {
    match &selector.offset {
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
        None => 0,
    }
}

/// The time a selector reads at for evaluation time `t`: `@` pins it, `offset` shifts it.
fn effective_time(selector: &VectorSelector, t: TimestampMs, range: EvalRange) -> TimestampMs {
    let base = match &selector.at {
        Some(AtModifier::Start) => range.start,
        Some(AtModifier::End) => range.end,
        Some(AtModifier::At(time)) => system_time_ms(*time),
        None => t,
    };
    base.saturating_sub(offset_ms(selector))
}

async fn select<S: SeriesRead>(
    source: &S,
    tenant: &TenantId,
    selector: &VectorSelector,
    time_range: TimeRange,
    limits: QueryLimits,
) -> Result<Vec<SeriesSamples>, Error> {
    let sets = selector_matchers(selector)?;
    let mut all: Vec<SeriesSamples> = Vec::new();
    for matchers in sets {
        for series in source.select(tenant, &matchers, time_range).await? {
            if !all.iter().any(|s| s.labels == series.labels) {
                all.push(series);
            }
        }
    }
    all.sort_by(|a, b| a.labels.cmp(&b.labels));
    let loaded: usize = all.iter().map(|s| s.samples.len()).sum();
    if loaded > limits.max_samples {
        return Err(Error::execution(
            "query processing would load too many samples into memory in query execution",
        ));
    }
    Ok(all)
}

/// The newest sample at or before `t` within the lookback window, unless it is a staleness marker.
fn sample_at(samples: &[Sample], t: TimestampMs, lookback: i64) -> Option<f64> {
    let index = samples.partition_point(|s| s.timestamp <= t);
    let sample = samples.get(index.checked_sub(1)?)?;
    if sample.timestamp <= t - lookback || is_stale_nan(sample.value) {
        return None;
    }
    Some(sample.value)
}

async fn instant_selector<S: SeriesRead>(
    source: &S,
    tenant: &TenantId,
    selector: &VectorSelector,
    range: EvalRange,
    limits: QueryLimits,
) -> Result<Value, Error> {
    let first = effective_time(selector, range.start, range);
    let last = effective_time(selector, range.end, range);
    let (lo, hi) = (first.min(last), first.max(last));
    let time_range = TimeRange::new(lo.saturating_sub(range.lookback).saturating_add(1), hi);
    let series = select(source, tenant, selector, time_range, limits).await?;
    if range.step == 0 {
        let mut samples = Vec::new();
        for entry in series {
            if let Some(value) = sample_at(&entry.samples, first, range.lookback) {
                samples.push((entry.labels, value));
            }
        }
        return Ok(Value::Vector {
            time: range.start,
            samples,
        });
    }
    let mut matrix = Vec::new();
    for entry in series {
        let points: Vec<Sample> = range
            .steps()
            .filter_map(|t| {
                sample_at(&entry.samples, effective_time(selector, t, range), range.lookback).map(|v| Sample::new(t, v))
            })
            .collect();
        if !points.is_empty() {
            matrix.push(SeriesSamples {
                labels: entry.labels,
                samples: points,
            });
        }
    }
    Ok(Value::Matrix(matrix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidewatch_model::seam::{Ingest, MemSeriesStore, WriteBatch};
    use tidewatch_model::stale_nan;

    async fn store_with(samples: &[(i64, f64)]) -> MemSeriesStore {
        let store = MemSeriesStore::new();
        let batch = WriteBatch {
            series: vec![SeriesSamples {
                labels: Labels::from_pairs([("__name__", "m"), ("job", "a")]),
                samples: samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
            }],
            metadata: Vec::new(),
        };
        store
            .ingest(
                &TenantId::default_tenant(),
                tidewatch_model::raw_write::RawWriteBatch::from_batch(&batch),
            )
            .await
            .unwrap();
        store
    }

    async fn instant(store: &MemSeriesStore, query: &str, t: i64) -> Value {
        let expr = parse(query).unwrap();
        evaluate(
            store,
            &TenantId::default_tenant(),
            &expr,
            EvalRange::instant(t, DEFAULT_LOOKBACK_MS),
            QueryLimits::default(),
        )
        .await
        .unwrap()
        .value
    }

    fn vector_values(value: Value) -> Vec<f64> {
        match value {
            Value::Vector { samples, .. } => samples.into_iter().map(|(_, v)| v).collect(),
            other => panic!("expected a vector, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn lookback_offset_and_staleness() {
        let store = store_with(&[(0, 1.0), (60_000, 2.0), (120_000, stale_nan())]).await;
        assert_eq!(vector_values(instant(&store, "m", 60_000).await), [2.0]);
        assert_eq!(vector_values(instant(&store, "m", 100_000).await), [2.0]);
        // A staleness marker ends the series at once.
        assert!(vector_values(instant(&store, "m", 130_000).await).is_empty());
        // Beyond the lookback window nothing is returned.
        assert!(vector_values(instant(&store, "m", 60_000 + DEFAULT_LOOKBACK_MS).await).is_empty());
        assert_eq!(vector_values(instant(&store, "m offset 1m", 60_000).await), [1.0]);
        assert_eq!(vector_values(instant(&store, "m @ 0", 100_000).await), [1.0]);
    }

    #[tokio::test]
    async fn range_selector_is_left_open() {
        let store = store_with(&[(0, 1.0), (30_000, 2.0), (60_000, 3.0)]).await;
        let Value::Matrix(series) = instant(&store, "m[1m]", 60_000).await else {
            panic!("expected a matrix");
        };
        let times: Vec<i64> = series[0].samples.iter().map(|s| s.timestamp).collect();
        assert_eq!(times, [30_000, 60_000]);
    }

    #[tokio::test]
    async fn range_query_steps_and_errors() {
        let store = store_with(&[(0, 1.0), (60_000, 2.0)]).await;
        let range = EvalRange {
            start: 0,
            end: 120_000,
            step: 30_000,
            lookback: DEFAULT_LOOKBACK_MS,
        };
        let value = evaluate(
            &store,
            &TenantId::default_tenant(),
            &parse("m").unwrap(),
            range,
            QueryLimits::default(),
        )
        .await
        .unwrap()
        .value;
        let Value::Matrix(series) = value else {
            panic!("expected a matrix")
        };
        let values: Vec<f64> = series[0].samples.iter().map(|s| s.value).collect();
        assert_eq!(values, [1.0, 1.0, 2.0, 2.0, 2.0]);
        let err = evaluate(
            &store,
            &TenantId::default_tenant(),
            &parse("m[1m]").unwrap(),
            range,
            QueryLimits::default(),
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("range vector"), "{err}");
        let err = evaluate(
            &store,
            &TenantId::default_tenant(),
            &parse("sum(m)").unwrap(),
            range,
            QueryLimits::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.error_type, crate::error::ErrorType::Execution);
    }

    #[tokio::test]
    async fn sample_limit_fails_the_query() {
        let store = store_with(&[(0, 1.0), (1, 2.0), (2, 3.0)]).await;
        let limits = QueryLimits {
            max_samples: 2,
            ..QueryLimits::default()
        };
        let err = evaluate(
            &store,
            &TenantId::default_tenant(),
            &parse("m[1m]").unwrap(),
            EvalRange::instant(10, DEFAULT_LOOKBACK_MS),
            limits,
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("too many samples"), "{err}");
    }
}
