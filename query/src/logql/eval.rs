//! LogQL evaluation over the [`LogRead`] seam: log queries (streams) and
//! metric queries (vectors, matrices, scalars) with Loki's semantics.
//!
//! A metric query is evaluated for all steps at once. Each stream selector
//! is read once per query — the span `(first step − range − offset, last
//! step − offset]` of every range aggregation over it — and each entry runs
//! through those aggregations' pipelines as storage hands the streams over.
//! Only extracted samples are kept, never lines: order-independent
//! functions (`count_over_time`, `rate`, `sum_over_time`, …) fold them into
//! buckets between window edges at once; the others keep `(timestamp,
//! value)` per output series. Then the `(T − range, T]` windows slide. Vector
//! aggregations, binary operators and `label_replace` then work step by
//! step on plain sample vectors, as Loki's step evaluators do, so that
//! matching errors, ordering and NaN handling come out as Loki's.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use regex::Regex;
use tidewatch_model::logs::{Direction, LogEntry, LogRead, LogSelect, NsRange, TimestampNs};
use tidewatch_model::{Label, Labels, MatchOp, TenantId};

use super::ast::*;
use super::conv;
use super::pipeline::{
    ERR_SAMPLE_EXTRACTION, ERROR_LABEL, Grouping as SampleGrouping, LabelState, Pipeline, compile_filters,
};
use crate::error::Error;

/// Loki's cap on `(end − start) / step`.
const MAX_STEPS: i64 = 11_000;

/// Samples a metric query may hold at once (extracted and not yet reduced)
/// unless the caller sets [`LogQueryParams::max_samples`].
pub const DEFAULT_MAX_SAMPLES: usize = 50_000_000;

/// How a query is evaluated: Loki's `query` (instant) and `query_range` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LogQueryParams {
    /// Nanoseconds since the epoch. For an instant query `start == end` is the query time.
    pub start: TimestampNs,
    /// Nanoseconds since the epoch; a metric query's last step is at or before it.
    pub end: TimestampNs,
    /// Nanoseconds between metric steps; ignored for instant queries; must be > 0 otherwise.
    pub step: i64,
    /// Loki's `interval` (nanoseconds; 0 = none), for log queries: going in
    /// `direction` over all streams together, an entry is returned only when
    /// it is at least `interval` away from the previously returned one.
    pub interval: i64,
    /// Order of log entries (`Backward` = newest first, Loki's default).
    pub direction: Direction,
    /// Log queries: the most entries returned, over all streams together
    /// (the newest for `Backward`, the oldest for `Forward`).
    pub limit: usize,
    /// An instant query (`/loki/api/v1/query`) rather than a range query.
    pub instant: bool,
    /// Metric queries fail with an execution error past this many held samples.
    pub max_samples: usize,
}

impl LogQueryParams {
    /// An instant query at `time` (ns).
    pub fn instant(time: TimestampNs, direction: Direction, limit: usize) -> Self {
        LogQueryParams {
            start: time,
            end: time,
            step: 0,
            interval: 0,
            direction,
            limit,
            instant: true,
            max_samples: DEFAULT_MAX_SAMPLES,
        }
    }

    /// A range query over `[start, end]` (ns) with `step` (ns) between metric steps.
    pub fn range(start: TimestampNs, end: TimestampNs, step: i64, direction: Direction, limit: usize) -> Self {
        LogQueryParams {
            start,
            end,
            step,
            interval: 0,
            direction,
            limit,
            instant: false,
            max_samples: DEFAULT_MAX_SAMPLES,
        }
    }
}

/// One stream of a log query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamResult {
    /// The entry labels after the pipeline (stream labels, structured
    /// metadata and parsed fields; values may be empty).
    pub labels: Labels,
    /// Entries in the query's direction; `line` is the line after
    /// `line_format`/`unpack`/`decolorize`.
    pub entries: Vec<LogEntry>,
}

/// One sample of an instant metric query.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSample {
    pub labels: Labels,
    /// Nanoseconds (the query time).
    pub timestamp: TimestampNs,
    pub value: f64,
}

/// One series of a range metric query.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixSeries {
    pub labels: Labels,
    /// `(nanoseconds, value)` at the steps where the series has a value, ascending.
    pub points: Vec<(TimestampNs, f64)>,
}

/// A query's result, in the shapes of Loki's `resultType`.
#[derive(Debug, Clone, PartialEq)]
pub enum LogQueryResult {
    /// A log query: streams sorted by labels.
    Streams(Vec<StreamResult>),
    /// An instant metric query, sorted by labels — or, when the query uses
    /// `sort`/`sort_desc`, in the order they give.
    Vector(Vec<VectorSample>),
    /// A range metric query: series sorted by labels.
    Matrix(Vec<MatrixSeries>),
    /// An instant query of a number (`1 + 1`).
    Scalar { timestamp: TimestampNs, value: f64 },
}

/// Loki refuses log queries as instant queries with this text (a 400).
pub const ERR_INSTANT_LOG_QUERY: &str =
    "log queries are not supported as an instant query type, please change your query to a range query type";

/// Evaluates a parsed LogQL query against `store` for `tenant`.
///
/// For the Loki HTTP API: parse the query with [`crate::logql::parse`]
/// (its error is already a 400 with Loki's text), then
/// - `/loki/api/v1/query?time=T&limit=L&direction=D` →
///   `LogQueryParams::instant(T, D, L)`;
/// - `/loki/api/v1/query_range?start=S&end=E&step=P&interval=I&limit=L&direction=D`
///   → `LogQueryParams::range(S, E, P, D, L)` with `interval = I`
///   (all in nanoseconds; Loki's default step is derived from the range by
///   the HTTP layer, not here),
///
/// and render the result as Loki's `resultType` `streams`, `vector`,
/// `matrix` or `scalar`. Labels may carry empty values (`{age=""}`): Loki
/// reports such labels, so they must be written out.
///
/// Log queries (`{…} | …`) return [`LogQueryResult::Streams`] over
/// `[start, end)` (Loki's end is exclusive for logs); as an instant query
/// they fail with Loki's [`ERR_INSTANT_LOG_QUERY`]. Metric queries return a `Vector`
/// (instant), a `Matrix` (range; steps `start, start + step, … ≤ end`) or a
/// `Scalar` (an instant query of numbers only).
///
/// Errors carry Loki's texts and Loki's classes: what Loki answers with 400
/// is `bad_data` — pipeline errors (`pipeline error: 'JSONParserErr' for
/// series: …`), the `max_samples` limit, bad parameters, templates and
/// patterns that do not compile; vector-matching errors (`multiple matches
/// for labels: …`, a 500 in Loki) are `execution`; storage errors keep the
/// class storage gave them.
pub async fn evaluate<S: LogRead>(
    store: &S,
    tenant: &TenantId,
    expr: &Expr,
    params: &LogQueryParams,
) -> Result<LogQueryResult, Error> {
    if !params.instant && params.step <= 0 {
        return Err(Error::bad_data(
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if params.end < params.start {
        return Err(Error::bad_data("end timestamp must not be before start time"));
    }
    // Loki's HTTP layer refuses more points than this; checked here too so
    // that no caller can make the engine allocate for billions of steps.
    if !params.instant && (params.end - params.start) / params.step > MAX_STEPS {
        return Err(Error::bad_data(
            "exceeded maximum resolution of 11,000 points per time series. Try increasing the value of the step parameter",
        ));
    }
    if params.interval < 0 {
        return Err(Error::bad_data("interval must be >= 0"));
    }
    match expr {
        Expr::Log(log) => evaluate_logs(store, tenant, log, params).await,
        Expr::Metric(metric) => {
            let steps = Steps::new(params);
            let mut evaluator = Evaluator {
                store,
                tenant,
                params,
                steps: &steps,
                held_samples: 0,
                computed: HashMap::new(),
            };
            evaluator.read_selectors(metric).await?;
            let value = evaluator.eval(metric).await?;
            Ok(into_result(value, &steps, params, sorts_by_value(metric)))
        }
    }
}

/// The step timestamps of a metric query.
#[derive(Debug)]
struct Steps {
    times: Vec<i64>,
}

impl Steps {
    fn new(params: &LogQueryParams) -> Steps {
        if params.instant {
            return Steps {
                times: vec![params.start],
            };
        }
        let count = ((params.end - params.start) / params.step) as usize + 1;
        Steps {
            times: (0..count).map(|i| params.start + i as i64 * params.step).collect(),
        }
    }
}

/// One sample of a step vector.
#[derive(Debug, Clone)]
struct Sample {
    labels: Labels,
    value: f64,
}

/// What an expression evaluates to: a number, or a vector per step.
#[derive(Debug)]
enum Value {
    Scalar(f64),
    Vectors(Vec<Vec<Sample>>),
}

/// Whether the query uses `sort`/`sort_desc`, whose order an instant result keeps.
fn sorts_by_value(expr: &MetricExpr) -> bool {
    match expr {
        MetricExpr::VectorAggregation(agg) => {
            matches!(agg.op, VectorOp::Sort | VectorOp::SortDesc) || sorts_by_value(&agg.expr)
        }
        MetricExpr::Binary(binary) => sorts_by_value(&binary.lhs) || sorts_by_value(&binary.rhs),
        MetricExpr::LabelReplace(replace) => sorts_by_value(&replace.expr),
        MetricExpr::RangeAggregation(_) | MetricExpr::Literal(_) | MetricExpr::Vector(_) => false,
    }
}

/// Shapes the steps' vectors as Loki answers: an instant vector sorted by
/// labels unless the query sorts by value, a matrix sorted by labels.
fn into_result(value: Value, steps: &Steps, params: &LogQueryParams, keep_order: bool) -> LogQueryResult {
    match value {
        Value::Scalar(value) if params.instant => LogQueryResult::Scalar {
            timestamp: params.start,
            value,
        },
        Value::Scalar(value) => LogQueryResult::Matrix(vec![MatrixSeries {
            labels: Labels::EMPTY,
            points: steps.times.iter().map(|&t| (t, value)).collect(),
        }]),
        Value::Vectors(mut vectors) if params.instant => {
            let mut vector = vectors.pop().unwrap_or_default();
            if !keep_order {
                vector.sort_by(|a, b| a.labels.cmp(&b.labels));
            }
            LogQueryResult::Vector(
                vector
                    .into_iter()
                    .map(|s| VectorSample {
                        labels: s.labels,
                        timestamp: params.start,
                        value: s.value,
                    })
                    .collect(),
            )
        }
        Value::Vectors(vectors) => {
            let mut series: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
            for (step, vector) in vectors.into_iter().enumerate() {
                for sample in vector {
                    series
                        .entry(sample.labels)
                        .or_default()
                        .push((steps.times[step], sample.value));
                }
            }
            let mut matrix: Vec<MatrixSeries> = series
                .into_iter()
                .map(|(labels, points)| MatrixSeries { labels, points })
                .collect();
            matrix.sort_by(|a, b| a.labels.cmp(&b.labels));
            LogQueryResult::Matrix(matrix)
        }
    }
}

struct Evaluator<'a, S> {
    store: &'a S,
    tenant: &'a TenantId,
    params: &'a LogQueryParams,
    steps: &'a Steps,
    held_samples: usize,
    /// Range aggregations' results by their text (identical ones are read once).
    computed: HashMap<String, Result<Vec<Vec<Sample>>, Error>>,
}

impl<S: LogRead> Evaluator<'_, S> {
    fn eval<'e>(
        &'e mut self,
        expr: &'e MetricExpr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, Error>> + Send + 'e>>
    where
        S: Sync,
    {
        Box::pin(async move {
            // Let a timeout or a dropped request stop the query between nodes.
            tokio::task::yield_now().await;
            match expr {
                MetricExpr::Literal(value) => Ok(Value::Scalar(*value)),
                MetricExpr::Vector(value) => Ok(Value::Vectors(
                    self.steps
                        .times
                        .iter()
                        .map(|_| {
                            vec![Sample {
                                labels: Labels::EMPTY,
                                value: *value,
                            }]
                        })
                        .collect(),
                )),
                MetricExpr::RangeAggregation(agg) => self.range_aggregation(agg, None).await,
                MetricExpr::VectorAggregation(agg) => {
                    if agg.op == VectorOp::ApproxTopk && !self.params.instant {
                        return Err(Error::bad_data(
                            "count min sketches are only supported on instant queries",
                        ));
                    }
                    let inner = match pushed_grouping(agg) {
                        Some((range, grouping)) => self.range_aggregation(range, Some(grouping)).await?,
                        None => self.eval(&agg.expr).await?,
                    };
                    let vectors = match inner {
                        Value::Vectors(vectors) => vectors,
                        Value::Scalar(_) => return Err(Error::bad_data("unexpected scalar in vector aggregation")),
                    };
                    Ok(Value::Vectors(
                        vectors.into_iter().map(|v| vector_aggregation(agg, v)).collect(),
                    ))
                }
                MetricExpr::Binary(binary) => {
                    let lhs = self.eval(&binary.lhs).await?;
                    let rhs = self.eval(&binary.rhs).await?;
                    binary_operation(binary, lhs, rhs)
                }
                MetricExpr::LabelReplace(replace) => {
                    let inner = self.eval(&replace.expr).await?;
                    let regex = Regex::new(&format!("^(?s:{})$", replace.regex))
                        .map_err(|e| Error::bad_data(format!("invalid regular expression in label_replace(): {e}")))?;
                    match inner {
                        Value::Scalar(_) => Err(Error::bad_data("unexpected scalar in label_replace")),
                        Value::Vectors(vectors) => Ok(Value::Vectors(
                            vectors
                                .into_iter()
                                .map(|vector| {
                                    vector
                                        .into_iter()
                                        .map(|s| Sample {
                                            labels: label_replace(&s.labels, replace, &regex),
                                            value: s.value,
                                        })
                                        .collect()
                                })
                                .collect(),
                        )),
                    }
                }
            }
        })
    }

    /// A range aggregation's vectors, computed by [`Evaluator::read_selectors`];
    /// `grouping`: the parent `sum`'s, pushed down (see [`pushed_grouping`]).
    async fn range_aggregation(&mut self, agg: &RangeAggregation, grouping: Option<Grouping>) -> Result<Value, Error> {
        let key = range_key(agg, grouping.as_ref());
        if !self.computed.contains_key(&key) {
            // Not prefetched (cannot happen for a tree walked up front): read it now.
            let job = RangeJob::new(agg, grouping, self.steps, self.params.end)?;
            self.read_group(vec![job]).await?;
        }
        match self.computed.get(&key) {
            Some(Ok(vectors)) => Ok(Value::Vectors(vectors.clone())),
            Some(Err(error)) => Err(Error {
                error_type: error.error_type,
                message: error.message.clone(),
            }),
            None => Err(Error::execution("range aggregation was not evaluated")),
        }
    }

    /// Reads every stream selector of `expr` once: the range aggregations
    /// sharing a selector are fed from one read of their combined span,
    /// each through its own pipeline. Results (or each one's pipeline
    /// error, raised when evaluation reaches it) go to `computed`.
    async fn read_selectors(&mut self, expr: &MetricExpr) -> Result<(), Error> {
        let mut aggregations: Vec<(&RangeAggregation, Option<Grouping>)> = Vec::new();
        collect_range_aggregations(expr, &mut aggregations);
        let mut groups: Vec<Vec<RangeJob<'_>>> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for (agg, grouping) in aggregations {
            let key = range_key(agg, grouping.as_ref());
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let job = RangeJob::new(agg, grouping, self.steps, self.params.end)?;
            match groups
                .iter_mut()
                .find(|group| group[0].agg.range.log.matchers == agg.range.log.matchers)
            {
                Some(group) => group.push(job),
                None => groups.push(vec![job]),
            }
        }
        for group in groups {
            self.read_group(group).await?;
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    async fn read_group(&mut self, mut jobs: Vec<RangeJob<'_>>) -> Result<(), Error> {
        let Some(first) = jobs.first() else {
            return Ok(());
        };
        let mut select = LogSelect::new(
            first.agg.range.log.matchers.clone(),
            NsRange::new(first.span.0, first.span.1),
        );
        // Storage verifies the filters every job pushed down; each job checks its own.
        select.line_contains = first.pipeline.line_contains().to_vec();
        for job in &jobs[1..] {
            select.range.start = select.range.start.min(job.span.0);
            select.range.end = select.range.end.max(job.span.1);
            select
                .line_contains
                .retain(|needle| job.pipeline.line_contains().contains(needle));
        }
        let only_job = jobs.len() == 1;
        let max_samples = self.params.max_samples;
        let mut held = self.held_samples;
        self.store
            .visit_logs(self.tenant, &select, |stream| {
                for job in &mut jobs {
                    job.feed(&stream, !only_job, &mut held, max_samples)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| {
                // The limit is this query's, not storage's; Loki answers its
                // query limits with 400.
                if held > max_samples {
                    Error::bad_data(too_many_samples(max_samples))
                } else {
                    Error::from(e)
                }
            })?;
        self.held_samples = held;
        for job in jobs {
            let key = range_key(job.agg, job.pushed.as_ref());
            let result = job.finish(self.steps);
            self.computed.insert(key, result);
        }
        Ok(())
    }
}

/// Identifies a range aggregation (with a pushed-down grouping): equal
/// ones are computed once.
fn range_key(agg: &RangeAggregation, grouping: Option<&Grouping>) -> String {
    format!("{agg:?}|{grouping:?}")
}

/// Loki's pushdown of a `sum`'s grouping into the range aggregation right
/// below it when that one has none and adds up (`count_over_time`, `rate`,
/// `bytes_*`, `sum_over_time`): the samples are grouped as they are
/// extracted, so a parser's many label combinations never become series.
/// The sums are the same; `sum(…)` without `by` groups into one series.
fn pushed_grouping(agg: &VectorAggregation) -> Option<(&RangeAggregation, Grouping)> {
    let MetricExpr::RangeAggregation(range) = agg.expr.as_ref() else {
        return None;
    };
    let additive = matches!(
        range.op,
        RangeOp::BytesOverTime | RangeOp::BytesRate | RangeOp::SumOverTime | RangeOp::Rate | RangeOp::CountOverTime
    );
    if agg.op != VectorOp::Sum || !additive || range.grouping.is_some() {
        return None;
    }
    let grouping = agg.grouping.clone().unwrap_or(Grouping {
        without: false,
        labels: Vec::new(),
    });
    Some((range, grouping))
}

fn collect_range_aggregations<'e>(expr: &'e MetricExpr, out: &mut Vec<(&'e RangeAggregation, Option<Grouping>)>) {
    match expr {
        MetricExpr::RangeAggregation(agg) => out.push((agg, None)),
        MetricExpr::VectorAggregation(agg) => match pushed_grouping(agg) {
            Some((range, grouping)) => out.push((range, Some(grouping))),
            None => collect_range_aggregations(&agg.expr, out),
        },
        MetricExpr::Binary(binary) => {
            collect_range_aggregations(&binary.lhs, out);
            collect_range_aggregations(&binary.rhs, out);
        }
        MetricExpr::LabelReplace(replace) => collect_range_aggregations(&replace.expr, out),
        MetricExpr::Literal(_) | MetricExpr::Vector(_) => {}
    }
}

/// One range aggregation while its selector's streams are read.
struct RangeJob<'a> {
    agg: &'a RangeAggregation,
    /// The parent `sum`'s grouping, when pushed down.
    pushed: Option<Grouping>,
    pipeline: Pipeline,
    unwrap: Option<(&'a Unwrap, Vec<crate::logql::pipeline::CompiledLabelFilter>)>,
    grouping: SampleGrouping,
    windows: Windows,
    reducible: bool,
    /// The entries it reads, `[start, end]` in ns.
    span: (i64, i64),
    series: HashMap<Labels, Accumulator>,
}

impl<'a> RangeJob<'a> {
    fn new(
        agg: &'a RangeAggregation,
        pushed: Option<Grouping>,
        steps: &Steps,
        now: i64,
    ) -> Result<RangeJob<'a>, Error> {
        let range = agg.range.range.as_nanos();
        let offset = agg.range.offset.map_or(0, Duration::as_nanos);
        let pipeline = Pipeline::compile(&agg.range.log, now)?;
        let unwrap = match &agg.range.unwrap {
            Some(unwrap) => Some((unwrap, compile_filters(&unwrap.post_filters)?)),
            None => None,
        };
        // Saturating: a range or offset of centuries must not overflow.
        let first = steps.times[0].saturating_sub(offset);
        let last = steps.times[steps.times.len() - 1].saturating_sub(offset);
        Ok(RangeJob {
            agg,
            grouping: sample_grouping(agg, pushed.as_ref()),
            pushed,
            pipeline,
            unwrap,
            windows: Windows::new(&steps.times, offset, range),
            reducible: is_reducible(agg.op),
            span: (first.saturating_sub(range).saturating_add(1), last),
            series: HashMap::new(),
        })
    }

    /// Runs one stream's entries through the pipeline into the series.
    /// `shared`: the read serves other jobs too, so entries outside this
    /// job's span or lacking its pushed-down substrings are skipped here.
    fn feed(
        &mut self,
        stream: &tidewatch_model::logs::LogStream,
        shared: bool,
        held: &mut usize,
        max_samples: usize,
    ) -> Result<(), tidewatch_model::Error> {
        // The result labels of this stream's entries that no stage touched.
        let mut untouched_labels: Option<Labels> = None;
        for entry in &stream.entries {
            if shared
                && (entry.timestamp < self.span.0
                    || entry.timestamp > self.span.1
                    || !self
                        .pipeline
                        .line_contains()
                        .iter()
                        .all(|n| entry.line.contains(n.as_str())))
            {
                continue;
            }
            let mut state = LabelState::new(&stream.labels, &entry.structured_metadata);
            let Some(line) = self.pipeline.process(entry.timestamp, &entry.line, &mut state) else {
                continue;
            };
            let value = match &self.unwrap {
                None => match self.agg.op {
                    RangeOp::BytesOverTime | RangeOp::BytesRate => line.len() as f64,
                    _ => 1.0,
                },
                Some((unwrap, post_filters)) => {
                    let text = state.get(&unwrap.label).unwrap_or("");
                    if text.is_empty() {
                        // Loki: a line without the label yields no sample.
                        continue;
                    }
                    let converted = match unwrap.conversion {
                        None => conv::parse_float(text),
                        Some(UnwrapConversion::Bytes) => conv::parse_bytes_value(text).map(|b| b as f64),
                        Some(UnwrapConversion::Duration | UnwrapConversion::DurationSeconds) => {
                            conv::parse_duration(text).map(|ns| ns as f64 / 1e9)
                        }
                    };
                    let value = match converted {
                        Ok(value) => value,
                        Err(details) => {
                            state.set_error(ERR_SAMPLE_EXTRACTION, Some(details));
                            0.0
                        }
                    };
                    if !Pipeline::filter_only(post_filters, &mut state) {
                        continue;
                    }
                    value
                }
            };
            let labels = if state.is_untouched() {
                untouched_labels
                    .get_or_insert_with(|| state.grouped_labels(&self.grouping))
                    .clone()
            } else {
                state.grouped_labels(&self.grouping)
            };
            let reducible = self.reducible;
            let accumulator = self.series.entry(labels).or_insert_with(|| {
                if reducible {
                    Accumulator::Buckets(Vec::new())
                } else {
                    Accumulator::Raw(Vec::new())
                }
            });
            if accumulator.add(&self.windows, entry.timestamp, value) {
                *held += 1;
                if *held > max_samples {
                    return Err(tidewatch_model::Error::Backend {
                        kind: tidewatch_model::ErrorKind::BadData,
                        message: too_many_samples(max_samples),
                    });
                }
            }
        }
        Ok(())
    }

    /// Slides the windows: one vector per step, or the pipeline error.
    fn finish(self, steps: &Steps) -> Result<Vec<Vec<Sample>>, Error> {
        let agg = self.agg;
        let range = agg.range.range.as_nanos();
        let offset = agg.range.offset.map_or(0, Duration::as_nanos);
        let mut vectors: Vec<Vec<Sample>> = vec![Vec::new(); steps.times.len()];
        let mut ordered: Vec<(Labels, Accumulator)> = self.series.into_iter().collect();
        ordered.sort_by(|a, b| a.0.cmp(&b.0));
        for (labels, accumulator) in ordered {
            match accumulator {
                Accumulator::Buckets(buckets) => {
                    for (step, vector) in vectors.iter_mut().enumerate() {
                        let (low, high) = self.windows.step_buckets[step];
                        let from = buckets.partition_point(|(index, _)| *index <= low);
                        let to = buckets.partition_point(|(index, _)| *index <= high);
                        if from >= to {
                            continue;
                        }
                        let mut total = buckets[from].1;
                        for (_, bucket) in &buckets[from + 1..to] {
                            total.merge(bucket);
                        }
                        vector.push(Sample {
                            labels: labels.clone(),
                            value: reduced_function(agg, &total),
                        });
                    }
                }
                Accumulator::Raw(mut points) => {
                    // Streams are read one after another, so samples of a series
                    // that several streams feed arrive out of order.
                    points.sort_by_key(|p| p.0);
                    let times: Vec<i64> = points.iter().map(|p| p.0).collect();
                    for (step, &t) in steps.times.iter().enumerate() {
                        let window_end = t.saturating_sub(offset);
                        let window_start = window_end.saturating_sub(range);
                        let from = times.partition_point(|&ts| ts <= window_start);
                        let to = times.partition_point(|&ts| ts <= window_end);
                        if from >= to {
                            continue;
                        }
                        vectors[step].push(Sample {
                            labels: labels.clone(),
                            value: range_function(agg, &points[from..to], window_end),
                        });
                    }
                }
            }
        }
        check_pipeline_errors(&vectors)?;
        if agg.op == RangeOp::AbsentOverTime {
            let labels = absent_labels(&agg.range.log);
            return Ok(vectors
                .into_iter()
                .map(|v| {
                    if v.is_empty() {
                        vec![Sample {
                            labels: labels.clone(),
                            value: 1.0,
                        }]
                    } else {
                        Vec::new()
                    }
                })
                .collect());
        }
        Ok(vectors)
    }
}

/// The windows of a range aggregation as buckets: the sorted, distinct
/// window edges cut the timeline so that every window `(T − range, T]` is a
/// run of whole buckets. Bucket `j` is `(edges[j − 1], edges[j]]`.
#[derive(Debug)]
struct Windows {
    edges: Vec<i64>,
    /// Per step: the window is buckets `low + 1 ..= high`.
    step_buckets: Vec<(u32, u32)>,
}

impl Windows {
    fn new(steps: &[i64], offset: i64, range: i64) -> Windows {
        let mut edges: Vec<i64> = Vec::with_capacity(steps.len() * 2);
        for &t in steps {
            edges.push(t.saturating_sub(offset).saturating_sub(range));
            edges.push(t.saturating_sub(offset));
        }
        edges.sort_unstable();
        edges.dedup();
        let position = |edge: i64| edges.partition_point(|&e| e < edge) as u32;
        let step_buckets = steps
            .iter()
            .map(|&t| {
                let end = t.saturating_sub(offset);
                (position(end.saturating_sub(range)), position(end))
            })
            .collect();
        Windows { edges, step_buckets }
    }

    /// The bucket of a sample at `timestamp`, `None` outside every window.
    fn bucket(&self, timestamp: i64) -> Option<u32> {
        let index = self.edges.partition_point(|&e| e < timestamp);
        (index > 0 && index < self.edges.len()).then_some(index as u32)
    }
}

/// What one bucket of an order-independent range function keeps.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    count: u64,
    sum: f64,
    /// NaN until a number is seen: Loki's min/max skip NaN unless all are NaN.
    min: f64,
    max: f64,
    first: (i64, f64),
    last: (i64, f64),
}

impl Bucket {
    fn new(timestamp: i64, value: f64) -> Bucket {
        Bucket {
            count: 1,
            sum: value,
            min: value,
            max: value,
            first: (timestamp, value),
            last: (timestamp, value),
        }
    }

    /// Folds `other` in; on equal timestamps the earlier-read sample stays first.
    fn merge(&mut self, other: &Bucket) {
        self.count += other.count;
        self.sum += other.sum;
        if other.min < self.min || self.min.is_nan() {
            self.min = other.min;
        }
        if other.max > self.max || self.max.is_nan() {
            self.max = other.max;
        }
        if other.first.0 < self.first.0 {
            self.first = other.first;
        }
        if other.last.0 >= self.last.0 {
            self.last = other.last;
        }
    }
}

/// Range functions whose result does not depend on the order of samples
/// within a window: they are reduced into buckets as samples arrive, so a
/// query holds a few numbers per bucket instead of every sample.
fn is_reducible(op: RangeOp) -> bool {
    matches!(
        op,
        RangeOp::CountOverTime
            | RangeOp::Rate
            | RangeOp::BytesOverTime
            | RangeOp::BytesRate
            | RangeOp::SumOverTime
            | RangeOp::MinOverTime
            | RangeOp::MaxOverTime
            | RangeOp::FirstOverTime
            | RangeOp::LastOverTime
            | RangeOp::AbsentOverTime
    )
}

/// One output series of a range aggregation while its streams are read.
#[derive(Debug)]
enum Accumulator {
    /// Non-empty buckets, ascending by index.
    Buckets(Vec<(u32, Bucket)>),
    /// Every `(timestamp, value)`, for functions that need them all.
    Raw(Vec<(i64, f64)>),
}

impl Accumulator {
    /// Adds a sample; true when it took new memory (a sample or a bucket).
    fn add(&mut self, windows: &Windows, timestamp: i64, value: f64) -> bool {
        match self {
            Accumulator::Raw(points) => {
                points.push((timestamp, value));
                true
            }
            Accumulator::Buckets(buckets) => {
                let Some(index) = windows.bucket(timestamp) else {
                    return false;
                };
                let sample = Bucket::new(timestamp, value);
                // Samples of one stream arrive in time order: nearly always the last bucket.
                if let Some((last, bucket)) = buckets.last_mut() {
                    if *last == index {
                        bucket.merge(&sample);
                        return false;
                    }
                    if *last > index {
                        let at = buckets.partition_point(|(i, _)| *i < index);
                        if buckets[at].0 == index {
                            buckets[at].1.merge(&sample);
                            return false;
                        }
                        buckets.insert(at, (index, sample));
                        return true;
                    }
                }
                buckets.push((index, sample));
                true
            }
        }
    }
}

/// An order-independent range function over a window's merged buckets.
fn reduced_function(agg: &RangeAggregation, total: &Bucket) -> f64 {
    let range_seconds = agg.range.range.as_nanos() as f64 / 1e9;
    match agg.op {
        RangeOp::CountOverTime => total.count as f64,
        RangeOp::Rate if agg.range.unwrap.is_some() => total.sum / range_seconds,
        RangeOp::Rate => total.count as f64 / range_seconds,
        RangeOp::BytesOverTime | RangeOp::SumOverTime => total.sum,
        RangeOp::BytesRate => total.sum / range_seconds,
        RangeOp::MinOverTime => total.min,
        RangeOp::MaxOverTime => total.max,
        RangeOp::FirstOverTime => total.first.1,
        RangeOp::LastOverTime => total.last.1,
        _ => 1.0,
    }
}

fn too_many_samples(max_samples: usize) -> String {
    format!("the query holds more than {max_samples} samples at once (max_samples)")
}

/// The labels a range aggregation's samples keep, Loki's rules: `by`/`without`
/// (its own, or a parent `sum`'s pushed down) apply at extraction; an
/// unwrapped label is dropped unless grouped by.
fn sample_grouping(agg: &RangeAggregation, pushed: Option<&Grouping>) -> SampleGrouping {
    // absent_over_time only asks whether anything is left: one series will do.
    if agg.op == RangeOp::AbsentOverTime {
        return SampleGrouping::By(Vec::new());
    }
    let unwrapped = agg.range.unwrap.as_ref().map(|u| u.label.clone());
    match (agg.grouping.as_ref().or(pushed), unwrapped) {
        (Some(Grouping { without: false, labels }), _) => SampleGrouping::By(labels.clone()),
        (Some(Grouping { without: true, labels }), unwrapped) => {
            let mut names = labels.clone();
            names.extend(unwrapped);
            SampleGrouping::Without(names)
        }
        (None, Some(label)) => SampleGrouping::Without(vec![label]),
        (None, None) => SampleGrouping::All,
    }
}

/// `absent_over_time`'s labels, Loki's rule: the selector's equality
/// matchers, minus any name that another matcher (or a second `=`) also
/// constrains, since no single value would describe it.
fn absent_labels(log: &LogExpr) -> Labels {
    let mut pairs: Vec<Label> = Vec::new();
    let mut ambiguous: Vec<&str> = Vec::new();
    for matcher in &log.matchers {
        if matcher.name == tidewatch_model::labels::METRIC_NAME {
            continue;
        }
        if matcher.op == MatchOp::Equal && !pairs.iter().any(|l| l.name == matcher.name) {
            pairs.push(Label::new(matcher.name.clone(), matcher.value.clone()));
        } else {
            ambiguous.push(&matcher.name);
        }
    }
    pairs.retain(|l| !ambiguous.contains(&l.name.as_str()));
    Labels::from_pairs(pairs.into_iter().map(|l| (l.name, l.value)))
}

/// Loki refuses metric results that carry `__error__`: the first such
/// sample (earliest step, then label order) is reported.
fn check_pipeline_errors(vectors: &[Vec<Sample>]) -> Result<(), Error> {
    for vector in vectors {
        for sample in vector {
            if let Some(error) = sample.labels.get(ERROR_LABEL) {
                // Loki answers 400: the query must say how to treat failing lines.
                return Err(Error::bad_data(format!(
                    "pipeline error: '{error}' for series: '{}'.\n\
                     Use a label filter to intentionally skip this error. (e.g | __error__!=\"{error}\").\n\
                     To skip all potential errors you can match empty errors.(e.g __error__=\"\")\n\
                     The label filter can also be specified after unwrap. (e.g | unwrap latency | __error__=\"\" )\n",
                    prometheus_labels_text(&sample.labels)
                )));
            }
        }
    }
    Ok(())
}

/// Prometheus' `Labels.String()`: `{a="b", c="d"}` with Go quoting.
fn prometheus_labels_text(labels: &Labels) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|l| format!("{}={}", l.name, conv::go_quote(&l.value)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// One range function over the samples of a window `(end − range, end]`.
fn range_function(agg: &RangeAggregation, points: &[(i64, f64)], window_end: i64) -> f64 {
    let range_seconds = agg.range.range.as_nanos() as f64 / 1e9;
    let values = points.iter().map(|p| p.1);
    match agg.op {
        RangeOp::CountOverTime => points.len() as f64,
        RangeOp::Rate => {
            if agg.range.unwrap.is_some() {
                values.sum::<f64>() / range_seconds
            } else {
                points.len() as f64 / range_seconds
            }
        }
        RangeOp::BytesOverTime | RangeOp::SumOverTime => values.sum(),
        RangeOp::BytesRate => values.sum::<f64>() / range_seconds,
        RangeOp::RateCounter => extrapolated_rate(points, agg.range.range.as_nanos(), window_end),
        RangeOp::AvgOverTime => {
            let mut mean: f64 = 0.0;
            let mut count: f64 = 0.0;
            for value in values {
                count += 1.0;
                if mean.is_infinite() {
                    if value.is_infinite() && (mean > 0.0) == (value > 0.0) {
                        continue;
                    }
                    if value.is_finite() {
                        continue;
                    }
                }
                mean += value / count - mean / count;
            }
            mean
        }
        RangeOp::MaxOverTime => {
            let mut max = f64::NAN;
            for value in values {
                if value > max || max.is_nan() {
                    max = value;
                }
            }
            max
        }
        RangeOp::MinOverTime => {
            let mut min = f64::NAN;
            for value in values {
                if value < min || min.is_nan() {
                    min = value;
                }
            }
            min
        }
        RangeOp::StdvarOverTime => stdvar(values),
        RangeOp::StddevOverTime => stdvar(values).sqrt(),
        RangeOp::QuantileOverTime => quantile(agg.param.unwrap_or(0.0), values.collect()),
        RangeOp::FirstOverTime => points.first().map_or(f64::NAN, |p| p.1),
        RangeOp::LastOverTime => points.last().map_or(f64::NAN, |p| p.1),
        RangeOp::AbsentOverTime => 1.0,
    }
}

fn stdvar(values: impl Iterator<Item = f64>) -> f64 {
    let (mut aux, mut count, mut mean) = (0.0, 0.0, 0.0);
    for value in values {
        count += 1.0;
        let delta = value - mean;
        mean += delta / count;
        aux += delta * (value - mean);
    }
    aux / count
}

/// Prometheus' quantile: linear interpolation between ranks.
fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// `rate_counter`: Prometheus' extrapolated counter rate (Loki returns 0
/// for fewer than two samples).
fn extrapolated_rate(points: &[(i64, f64)], range: i64, range_end: i64) -> f64 {
    if points.len() < 2 {
        return 0.0;
    }
    let range_start = range_end.saturating_sub(range);
    let (first_t, first_v) = points[0];
    let (last_t, last_v) = points[points.len() - 1];
    let mut result = last_v - first_v;
    let mut previous = 0.0;
    for &(_, value) in points {
        if value < previous {
            result += previous;
        }
        previous = value;
    }
    // In floating point: the edges may be saturated extremes.
    let mut to_start = (first_t as f64 - range_start as f64) / 1e9;
    let mut to_end = (range_end as f64 - last_t as f64) / 1e9;
    let sampled = (last_t - first_t) as f64 / 1e9;
    let average = sampled / (points.len() - 1) as f64;
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    let mut to_zero = to_start;
    if result > 0.0 && first_v >= 0.0 {
        to_zero = sampled * (first_v / result);
    }
    if to_zero < to_start {
        to_start = to_zero;
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let interval = sampled + to_start + to_end;
    result * (interval / sampled) / (range as f64 / 1e9)
}

// ---------------------------------------------------------------------------
// Vector aggregations.

/// The group labels of `labels` under a vector aggregation's grouping.
fn group_labels(labels: &Labels, grouping: Option<&Grouping>) -> Labels {
    match grouping {
        None => Labels::EMPTY,
        Some(Grouping {
            without: false,
            labels: names,
        }) => Labels::from_sorted(labels.iter().filter(|l| names.contains(&l.name)).cloned().collect()),
        Some(Grouping {
            without: true,
            labels: names,
        }) => Labels::from_sorted(
            labels
                .iter()
                .filter(|l| !names.contains(&l.name) && l.name != tidewatch_model::labels::METRIC_NAME)
                .cloned()
                .collect(),
        ),
    }
}

/// NaN-aware order for selection: NaN below every number.
fn value_order(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

struct Group {
    labels: Labels,
    value: f64,
    mean: f64,
    count: usize,
    members: Vec<Sample>,
}

fn vector_aggregation(agg: &VectorAggregation, vector: Vec<Sample>) -> Vec<Sample> {
    let k = agg.param.unwrap_or(0);
    if matches!(agg.op, VectorOp::Topk | VectorOp::Bottomk | VectorOp::ApproxTopk) && k < 1 {
        return Vec::new();
    }
    let mut order: Vec<Labels> = Vec::new();
    let mut groups: HashMap<Labels, Group> = HashMap::new();
    for sample in vector {
        let key = group_labels(&sample.labels, agg.grouping.as_ref());
        let Some(group) = groups.get_mut(&key) else {
            order.push(key.clone());
            groups.insert(
                key.clone(),
                Group {
                    labels: key,
                    value: if matches!(agg.op, VectorOp::Stddev | VectorOp::Stdvar) {
                        0.0
                    } else {
                        sample.value
                    },
                    mean: sample.value,
                    count: 1,
                    members: vec![sample],
                },
            );
            continue;
        };
        let value = sample.value;
        match agg.op {
            VectorOp::Sum => group.value += value,
            VectorOp::Avg => {
                group.count += 1;
                let skip = group.mean.is_infinite()
                    && ((value.is_infinite() && (group.mean > 0.0) == (value > 0.0)) || value.is_finite());
                if !skip {
                    group.mean += (value - group.mean) / group.count as f64;
                }
            }
            VectorOp::Max => {
                if group.value < value || group.value.is_nan() {
                    group.value = value;
                }
            }
            VectorOp::Min => {
                if group.value > value || group.value.is_nan() {
                    group.value = value;
                }
            }
            VectorOp::Count => group.count += 1,
            VectorOp::Stddev | VectorOp::Stdvar => {
                group.count += 1;
                let delta = value - group.mean;
                group.mean += delta / group.count as f64;
                group.value += delta * (value - group.mean);
            }
            VectorOp::Topk | VectorOp::Bottomk | VectorOp::ApproxTopk | VectorOp::Sort | VectorOp::SortDesc => {
                group.members.push(sample);
            }
        }
    }
    let mut out = Vec::new();
    for key in order {
        let Some(mut group) = groups.remove(&key) else {
            continue;
        };
        let value = match agg.op {
            VectorOp::Sum | VectorOp::Max | VectorOp::Min => group.value,
            VectorOp::Avg => group.mean,
            VectorOp::Count => group.count as f64,
            VectorOp::Stddev => (group.value / group.count as f64).sqrt(),
            VectorOp::Stdvar => group.value / group.count as f64,
            VectorOp::Topk | VectorOp::ApproxTopk | VectorOp::SortDesc => {
                // Descending, NaN last.
                group.members.sort_by(|a, b| value_order(b.value, a.value));
                if agg.op != VectorOp::SortDesc {
                    group.members.truncate(k as usize);
                }
                out.append(&mut group.members);
                continue;
            }
            VectorOp::Bottomk | VectorOp::Sort => {
                // Ascending, NaN last.
                group
                    .members
                    .sort_by(|a, b| match (a.value.is_nan(), b.value.is_nan()) {
                        (true, true) => Ordering::Equal,
                        (true, false) => Ordering::Greater,
                        (false, true) => Ordering::Less,
                        (false, false) => a.value.partial_cmp(&b.value).unwrap_or(Ordering::Equal),
                    });
                if agg.op == VectorOp::Bottomk {
                    group.members.truncate(k as usize);
                }
                out.append(&mut group.members);
                continue;
            }
        };
        out.push(Sample {
            labels: group.labels,
            value,
        });
    }
    out
}

// ---------------------------------------------------------------------------
// Binary operators.

fn arithmetic(op: BinaryOp, left: f64, right: f64) -> f64 {
    match op {
        BinaryOp::Add => left + right,
        BinaryOp::Sub => left - right,
        BinaryOp::Mul => left * right,
        BinaryOp::Div => {
            if right == 0.0 {
                f64::NAN
            } else {
                left / right
            }
        }
        BinaryOp::Mod => {
            if right == 0.0 {
                f64::NAN
            } else {
                left % right
            }
        }
        BinaryOp::Pow => left.powf(right),
        _ => f64::NAN,
    }
}

fn comparison(op: BinaryOp, left: f64, right: f64) -> bool {
    match op {
        BinaryOp::Eq => left == right,
        BinaryOp::Ne => left != right,
        BinaryOp::Gt => left > right,
        BinaryOp::Ge => left >= right,
        BinaryOp::Lt => left < right,
        BinaryOp::Le => left <= right,
        _ => false,
    }
}

/// Loki's `MergeBinOp` for two values: `None` drops the sample.
/// `keep` is the value a filtering comparison returns (the vector's).
fn merge(op: BinaryOp, left: f64, right: f64, filter: bool, keep: f64) -> Option<f64> {
    if op.is_comparison() {
        let holds = comparison(op, left, right);
        if filter {
            return holds.then_some(keep);
        }
        return Some(if holds { 1.0 } else { 0.0 });
    }
    Some(arithmetic(op, left, right))
}

fn binary_operation(binary: &BinaryExpr, lhs: Value, rhs: Value) -> Result<Value, Error> {
    let op = binary.op;
    match (lhs, rhs) {
        (Value::Scalar(left), Value::Scalar(right)) => {
            if op.is_set_operator() {
                return Err(Error::bad_data(
                    "unexpected literal for left leg of logical/set binary operation",
                ));
            }
            // Between two numbers a comparison is always 0/1.
            Ok(Value::Scalar(merge(op, left, right, false, left).unwrap_or(f64::NAN)))
        }
        (Value::Scalar(left), Value::Vectors(vectors)) => {
            if op.is_set_operator() {
                return Err(Error::bad_data(
                    "unexpected literal for left leg of logical/set binary operation",
                ));
            }
            Ok(Value::Vectors(
                vectors
                    .into_iter()
                    .map(|vector| {
                        vector
                            .into_iter()
                            .filter_map(|s| {
                                merge(op, left, s.value, !binary.return_bool, s.value).map(|value| Sample {
                                    labels: s.labels,
                                    value,
                                })
                            })
                            .collect()
                    })
                    .collect(),
            ))
        }
        (Value::Vectors(vectors), Value::Scalar(right)) => {
            if op.is_set_operator() {
                return Err(Error::bad_data(
                    "unexpected literal for right leg of logical/set binary operation",
                ));
            }
            Ok(Value::Vectors(
                vectors
                    .into_iter()
                    .map(|vector| {
                        vector
                            .into_iter()
                            .filter_map(|s| {
                                merge(op, s.value, right, !binary.return_bool, s.value).map(|value| Sample {
                                    labels: s.labels,
                                    value,
                                })
                            })
                            .collect()
                    })
                    .collect(),
            ))
        }
        (Value::Vectors(left), Value::Vectors(right)) => {
            let mut out = Vec::with_capacity(left.len());
            for (l, r) in left.into_iter().zip(right) {
                out.push(vector_binary(binary, l, r)?);
            }
            Ok(Value::Vectors(out))
        }
    }
}

/// The labels two samples are matched on.
fn signature(labels: &Labels, matching: Option<&VectorMatching>) -> Labels {
    match matching {
        Some(VectorMatching {
            on: true,
            labels: names,
            ..
        }) => Labels::from_sorted(labels.iter().filter(|l| names.contains(&l.name)).cloned().collect()),
        Some(VectorMatching {
            on: false,
            labels: names,
            ..
        }) => Labels::from_sorted(labels.iter().filter(|l| !names.contains(&l.name)).cloned().collect()),
        None => labels.clone(),
    }
}

fn vector_binary(binary: &BinaryExpr, lhs: Vec<Sample>, rhs: Vec<Sample>) -> Result<Vec<Sample>, Error> {
    let matching = binary.matching.as_ref();
    let left_sigs: Vec<Labels> = lhs.iter().map(|s| signature(&s.labels, matching)).collect();
    let right_sigs: Vec<Labels> = rhs.iter().map(|s| signature(&s.labels, matching)).collect();
    match binary.op {
        BinaryOp::And => {
            if lhs.is_empty() || rhs.is_empty() {
                return Ok(Vec::new());
            }
            Ok(lhs
                .into_iter()
                .zip(left_sigs)
                .filter(|(_, sig)| right_sigs.contains(sig))
                .map(|(s, _)| s)
                .collect())
        }
        BinaryOp::Unless => {
            if lhs.is_empty() || rhs.is_empty() {
                return Ok(lhs);
            }
            Ok(lhs
                .into_iter()
                .zip(left_sigs)
                .filter(|(_, sig)| !right_sigs.contains(sig))
                .map(|(s, _)| s)
                .collect())
        }
        BinaryOp::Or => {
            if lhs.is_empty() {
                return Ok(rhs);
            }
            if rhs.is_empty() {
                return Ok(lhs);
            }
            let mut out = lhs;
            for (sample, sig) in rhs.into_iter().zip(right_sigs) {
                if !left_sigs.contains(&sig) {
                    out.push(sample);
                }
            }
            Ok(out)
        }
        op => vector_arithmetic(binary, op, lhs, rhs, left_sigs, right_sigs),
    }
}

/// Loki's `vectorBinop`: one-to-one, many-to-one (`group_left`) or
/// one-to-many (`group_right`, evaluated with the sides swapped).
fn vector_arithmetic(
    binary: &BinaryExpr,
    op: BinaryOp,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    left_sigs: Vec<Labels>,
    right_sigs: Vec<Labels>,
) -> Result<Vec<Sample>, Error> {
    let matching = binary.matching.as_ref();
    let one_to_many = matches!(matching.and_then(|m| m.group.as_ref()), Some(MatchGroup::Right(_)));
    let (many, one, many_sigs, one_sigs) = if one_to_many {
        (rhs, lhs, right_sigs, left_sigs)
    } else {
        (lhs, rhs, left_sigs, right_sigs)
    };
    let mut one_by_sig: HashMap<&Labels, &Sample> = HashMap::with_capacity(one.len());
    for (sample, sig) in one.iter().zip(&one_sigs) {
        if one_by_sig.insert(sig, sample).is_some() {
            let side = if one_to_many { "left" } else { "right" };
            return Err(Error::execution(format!(
                "found duplicate series on the {side} hand-side;many-to-many matching not allowed: matching labels must be unique on one side"
            )));
        }
    }
    let grouped = matching.and_then(|m| m.group.as_ref()).is_some();
    let mut matched: HashMap<&Labels, Vec<Labels>> = HashMap::new();
    let mut out = Vec::new();
    for (sample, sig) in many.iter().zip(&many_sigs) {
        let Some(other) = one_by_sig.get(sig) else {
            continue;
        };
        let labels = result_labels(&sample.labels, &other.labels, matching);
        // Loki's grammar gives every binary expression one-to-one matching
        // options, so the duplicate check always runs.
        let seen = matched.entry(sig).or_default();
        if !grouped {
            if !seen.is_empty() {
                return Err(Error::execution(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                ));
            }
            seen.push(Labels::EMPTY);
        } else {
            if seen.contains(&labels) {
                return Err(Error::execution(
                    "multiple matches for labels: grouping labels must ensure unique matches",
                ));
            }
            seen.push(labels.clone());
        }
        let (left, right) = if one_to_many {
            (other.value, sample.value)
        } else {
            (sample.value, other.value)
        };
        if let Some(value) = merge(op, left, right, !binary.return_bool, left) {
            out.push(Sample { labels, value });
        }
    }
    Ok(out)
}

/// Loki's `resultMetric`: the many side's labels, minus what `on`/`ignoring`
/// drops for one-to-one matching, plus the `group_x` labels of the one side.
fn result_labels(many: &Labels, one: &Labels, matching: Option<&VectorMatching>) -> Labels {
    let Some(matching) = matching else {
        return many.clone();
    };
    let mut pairs: Vec<Label> = many.iter().cloned().collect();
    let include = match &matching.group {
        None => {
            if matching.on {
                pairs.retain(|l| matching.labels.contains(&l.name));
            } else {
                pairs.retain(|l| !matching.labels.contains(&l.name));
            }
            &[][..]
        }
        Some(MatchGroup::Left(include) | MatchGroup::Right(include)) => include.as_slice(),
    };
    for name in include {
        pairs.retain(|l| l.name != *name);
        if let Some(value) = one.get(name)
            && !value.is_empty()
        {
            pairs.push(Label::new(name.clone(), value));
        }
    }
    pairs.sort_by(|a, b| a.name.cmp(&b.name));
    Labels::from_sorted(pairs)
}

/// Prometheus' `label_replace` on one label set.
fn label_replace(labels: &Labels, replace: &LabelReplace, regex: &Regex) -> Labels {
    let source = labels.get(&replace.src).unwrap_or("");
    let Some(captures) = regex.captures(source) else {
        return labels.clone();
    };
    let mut value = String::new();
    captures.expand(&replace.replacement, &mut value);
    let mut pairs: Vec<Label> = labels.iter().filter(|l| l.name != replace.dst).cloned().collect();
    if !value.is_empty() {
        pairs.push(Label::new(replace.dst.clone(), value));
    }
    pairs.sort_by(|a, b| a.name.cmp(&b.name));
    Labels::from_sorted(pairs)
}

// ---------------------------------------------------------------------------
// Log queries.

/// A kept entry waiting in the limit heap; ordered so that the heap's top is
/// the entry to give up first.
#[derive(Debug)]
struct Kept {
    timestamp: i64,
    sequence: u64,
    labels: Labels,
    entry: LogEntry,
    backward: bool,
}

impl Kept {
    fn key(&self) -> (i64, u64) {
        (self.timestamp, self.sequence)
    }
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Kept {}

impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Kept {
    fn cmp(&self, other: &Self) -> Ordering {
        // Backward keeps the newest: the oldest is given up first (top of a max-heap
        // on reversed time). Forward keeps the oldest: the newest is given up first.
        if self.backward {
            other.key().cmp(&self.key())
        } else {
            self.key().cmp(&other.key())
        }
    }
}

async fn evaluate_logs<S: LogRead>(
    store: &S,
    tenant: &TenantId,
    log: &LogExpr,
    params: &LogQueryParams,
) -> Result<LogQueryResult, Error> {
    if params.instant {
        return Err(Error::bad_data(ERR_INSTANT_LOG_QUERY));
    }
    let pipeline = Pipeline::compile(log, params.end)?;
    // Loki reads `[start, end)` for log queries.
    let end = if params.end == params.start {
        params.end
    } else {
        params.end - 1
    };
    let mut select = LogSelect::new(log.matchers.clone(), NsRange::new(params.start, end));
    select.line_contains = pipeline.line_contains().to_vec();
    let backward = params.direction == Direction::Backward;
    let limit = params.limit;
    let interval = params.interval;
    let max_held = params.max_samples;
    // Without `interval` only the `limit` first entries (in direction order)
    // matter: a heap of that size keeps them. With it, which entries survive
    // depends on every earlier one, so all matching entries are held (up to
    // max_samples) and thinned in order afterwards, as Loki does.
    let mut heap: BinaryHeap<Kept> = BinaryHeap::with_capacity(limit.min(65_536) + 1);
    let mut all: Vec<Kept> = Vec::new();
    let mut sequence = 0u64;
    store
        .visit_logs(tenant, &select, |stream| {
            let mut untouched_labels: Option<Labels> = None;
            for entry in &stream.entries {
                if limit == 0 {
                    break;
                }
                let mut state = LabelState::new(&stream.labels, &entry.structured_metadata);
                let Some(line) = pipeline.process(entry.timestamp, &entry.line, &mut state) else {
                    continue;
                };
                let labels = if state.is_untouched() {
                    untouched_labels.get_or_insert_with(|| state.labels()).clone()
                } else {
                    state.labels()
                };
                sequence += 1;
                let kept = Kept {
                    timestamp: entry.timestamp,
                    sequence: if backward { u64::MAX - sequence } else { sequence },
                    labels,
                    entry: LogEntry {
                        timestamp: entry.timestamp,
                        line: line.into_owned(),
                        structured_metadata: entry.structured_metadata.clone(),
                    },
                    backward,
                };
                if interval > 0 {
                    all.push(kept);
                    if all.len() > max_held {
                        return Err(tidewatch_model::Error::Backend {
                            kind: tidewatch_model::ErrorKind::BadData,
                            message: too_many_samples(max_held),
                        });
                    }
                    continue;
                }
                heap.push(kept);
                if heap.len() > limit {
                    heap.pop();
                }
            }
            Ok(())
        })
        .await
        .map_err(Error::from)?;
    if interval > 0 {
        // `Kept` orders by direction: the heap's top is the entry given up first.
        all.sort();
        let mut last: Option<i64> = None;
        for kept in all {
            if heap.len() >= limit {
                break;
            }
            let due = match last {
                None => true,
                Some(last) if backward => kept.timestamp <= last - interval,
                Some(last) => kept.timestamp >= last + interval,
            };
            if due {
                last = Some(kept.timestamp);
                heap.push(kept);
            }
        }
    }
    let mut by_stream: HashMap<Labels, Vec<LogEntry>> = HashMap::new();
    for kept in heap.into_vec() {
        by_stream.entry(kept.labels).or_default().push(kept.entry);
    }
    let mut streams: Vec<StreamResult> = by_stream
        .into_iter()
        .map(|(labels, mut entries)| {
            entries.sort_by(|a, b| a.timestamp.cmp(&b.timestamp).then_with(|| a.line.cmp(&b.line)));
            if backward {
                entries.reverse();
            }
            StreamResult { labels, entries }
        })
        .collect();
    streams.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(LogQueryResult::Streams(streams))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logql::parse;
    use tidewatch_model::logs::{LogIngest, LogPush, LogStream, MemLogStore};

    const S: i64 = 1_000_000_000;

    /// A stream's labels and its `(seconds, line)` entries.
    type StreamSpec<'a> = (&'a [(&'a str, &'a str)], &'a [(i64, &'a str)]);

    fn store(streams: &[StreamSpec<'_>]) -> MemLogStore {
        let store = MemLogStore::new();
        let push = LogPush {
            streams: streams
                .iter()
                .map(|(labels, entries)| LogStream {
                    labels: Labels::from_pairs(labels.iter().copied()),
                    entries: entries.iter().map(|&(t, l)| LogEntry::new(t * S, l)).collect(),
                })
                .collect(),
        };
        poll(store.push(&TenantId::default_tenant(), push)).unwrap();
        store
    }

    /// Runs a query to completion (it yields between expression nodes).
    fn poll<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
            .block_on(future)
    }

    fn run(store: &MemLogStore, query: &str, params: &LogQueryParams) -> Result<LogQueryResult, Error> {
        let expr = parse(query).map_err(Error::from)?;
        poll(evaluate(store, &TenantId::default_tenant(), &expr, params))
    }

    fn instant(store: &MemLogStore, query: &str, at: i64) -> Vec<(String, f64)> {
        match run(store, query, &LogQueryParams::instant(at * S, Direction::Backward, 100)).unwrap() {
            LogQueryResult::Vector(samples) => {
                let mut out: Vec<(String, f64)> = samples.into_iter().map(|s| (text(&s.labels), s.value)).collect();
                out.sort_by(|a, b| a.0.cmp(&b.0));
                out
            }
            other => panic!("not a vector: {other:?}"),
        }
    }

    fn range(store: &MemLogStore, query: &str, start: i64, end: i64, step: i64) -> Vec<(String, Vec<(i64, f64)>)> {
        let params = LogQueryParams::range(start * S, end * S, step * S, Direction::Backward, 100);
        match run(store, query, &params).unwrap() {
            LogQueryResult::Matrix(series) => series
                .into_iter()
                .map(|s| (text(&s.labels), s.points.into_iter().map(|(t, v)| (t / S, v)).collect()))
                .collect(),
            other => panic!("not a matrix: {other:?}"),
        }
    }

    fn text(labels: &Labels) -> String {
        let parts: Vec<String> = labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect();
        parts.join(",")
    }

    fn counters() -> MemLogStore {
        store(&[
            (
                &[("app", "a"), ("pod", "1")],
                &[(10, "x n=1"), (20, "y n=2"), (30, "x n=3"), (40, "x n=4")],
            ),
            (&[("app", "a"), ("pod", "2")], &[(15, "x n=10"), (35, "y n=20")]),
            (&[("app", "b")], &[(25, "x n=5")]),
        ])
    }

    #[test]
    fn count_over_time_windows_are_left_open_and_shift_with_offset() {
        let store = counters();
        assert_eq!(
            range(&store, r#"count_over_time({app="a", pod="1"}[20s])"#, 20, 50, 10),
            vec![(
                "app=a,pod=1".to_string(),
                vec![(20, 2.0), (30, 2.0), (40, 2.0), (50, 1.0)]
            )]
        );
        assert_eq!(
            range(
                &store,
                r#"count_over_time({app="a", pod="1"}[20s] offset 10s)"#,
                20,
                50,
                10
            ),
            vec![(
                "app=a,pod=1".to_string(),
                vec![(20, 1.0), (30, 2.0), (40, 2.0), (50, 2.0)]
            )]
        );
        assert_eq!(
            instant(&store, r#"count_over_time({app="a", pod="1"} |= "x" [1m])"#, 40),
            vec![("app=a,pod=1".to_string(), 3.0)]
        );
    }

    #[test]
    fn rate_bytes_and_unwrap_functions() {
        let store = counters();
        let q = |query: &str| instant(&store, query, 40);
        assert_eq!(q(r#"rate({app="b"}[10s])"#), vec![]);
        assert_eq!(q(r#"rate({app="b"}[20s])"#), vec![("app=b".to_string(), 0.05)]);
        assert_eq!(q(r#"bytes_over_time({app="b"}[1m])"#), vec![("app=b".to_string(), 5.0)]);
        assert_eq!(q(r#"bytes_rate({app="b"}[50s])"#), vec![("app=b".to_string(), 0.1)]);
        let pod1 = r#"{app="a", pod="1"} | logfmt | unwrap n [1m]"#;
        assert_eq!(
            q(&format!("sum_over_time({pod1})")),
            vec![("app=a,pod=1".to_string(), 10.0)]
        );
        assert_eq!(
            q(&format!("avg_over_time({pod1})")),
            vec![("app=a,pod=1".to_string(), 2.5)]
        );
        assert_eq!(
            q(&format!("min_over_time({pod1})")),
            vec![("app=a,pod=1".to_string(), 1.0)]
        );
        assert_eq!(
            q(&format!("max_over_time({pod1})")),
            vec![("app=a,pod=1".to_string(), 4.0)]
        );
        assert_eq!(
            q(&format!("first_over_time({pod1})")),
            vec![("app=a,pod=1".to_string(), 1.0)]
        );
        assert_eq!(
            q(&format!("last_over_time({pod1})")),
            vec![("app=a,pod=1".to_string(), 4.0)]
        );
        assert_eq!(
            q(&format!("stdvar_over_time({pod1})")),
            vec![("app=a,pod=1".to_string(), 1.25)]
        );
        assert_eq!(
            q(&format!("stddev_over_time({pod1})")),
            vec![("app=a,pod=1".to_string(), 1.25f64.sqrt())]
        );
        let counter = [(10 * S, 1.0), (20 * S, 2.0), (30 * S, 3.0), (40 * S, 4.0)];
        assert_eq!(
            q(&format!("rate_counter({pod1})")),
            vec![("app=a,pod=1".to_string(), extrapolated_rate(&counter, 60 * S, 40 * S))]
        );
        assert_eq!(
            q(&format!("quantile_over_time(0.5, {pod1})")),
            vec![("app=a,pod=1".to_string(), 2.5)]
        );
        assert_eq!(
            q(&format!("rate({pod1})")),
            vec![("app=a,pod=1".to_string(), 10.0 / 60.0)]
        );
        // by() on a range aggregation merges the streams before the function.
        assert_eq!(
            q(r#"max_over_time({app="a"} | logfmt | unwrap n [1m]) by (app)"#),
            vec![("app=a".to_string(), 20.0)]
        );
        // Without grouping the unwrapped label leaves the result.
        assert_eq!(
            q(r#"sum_over_time({app="b"} | logfmt | unwrap n [1m])"#),
            vec![("app=b".to_string(), 5.0)]
        );
    }

    #[test]
    fn rate_counter_extrapolates_like_prometheus() {
        // 600 → 660 over 30s in the window (90s, 180s]: the first sample is
        // farther than 1.1 intervals from the start, so the start side
        // extrapolates by half an interval only: 60 × 45/30 / 90s = 1.
        let points = [(150 * S, 600.0), (180 * S, 660.0)];
        let rate = extrapolated_rate(&points, 90 * S, 180 * S);
        assert!((rate - 1.0).abs() < 1e-9, "{rate}");
        // Within the threshold both sides extrapolate to the edges: 60 × 60/30 / 60s = 2.
        let rate = extrapolated_rate(&points, 60 * S, 195 * S);
        assert!((rate - 60.0 * 60.0 / 30.0 / 60.0).abs() < 1e-9, "{rate}");
        assert_eq!(extrapolated_rate(&points[..1], 60 * S, 180 * S), 0.0);
        // A reset adds the value before the drop.
        let reset = [(S, 10.0), (2 * S, 20.0), (3 * S, 5.0)];
        assert!(extrapolated_rate(&reset, 2 * S + S / 2, 3 * S) > 0.0);
    }

    /// The bucketed reduction must agree with folding the raw samples of
    /// each window, for overlapping and disjoint windows and with offsets.
    #[test]
    fn bucketed_windows_agree_with_raw_windows() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let ops = [
            RangeOp::CountOverTime,
            RangeOp::SumOverTime,
            RangeOp::MinOverTime,
            RangeOp::MaxOverTime,
            RangeOp::FirstOverTime,
            RangeOp::LastOverTime,
            RangeOp::BytesRate,
        ];
        for round in 0..200 {
            let mut points: Vec<(i64, f64)> = (0..next(40))
                .map(|_| {
                    let value = match next(10) {
                        0 => f64::NAN,
                        v => v as f64 - 3.0,
                    };
                    (next(100) as i64, value)
                })
                .collect();
            points.sort_by_key(|p| p.0);
            let step = 1 + next(20) as i64;
            let range = 1 + next(30) as i64;
            let offset = next(5) as i64;
            let steps: Vec<i64> = (0..1 + next(12) as i64).map(|i| 10 + i * step).collect();
            let windows = Windows::new(&steps, offset, range);
            // Feed the samples out of order, as several streams would.
            let mut shuffled = points.clone();
            shuffled.reverse();
            let mut accumulator = Accumulator::Buckets(Vec::new());
            for &(t, v) in &shuffled {
                accumulator.add(&windows, t, v);
            }
            let Accumulator::Buckets(buckets) = accumulator else {
                unreachable!()
            };
            for op in ops {
                let agg = RangeAggregation {
                    op,
                    param: None,
                    range: LogRange {
                        log: LogExpr {
                            matchers: vec![],
                            pipeline: vec![],
                        },
                        range: Duration::from_nanos(range),
                        offset: None,
                        unwrap: None,
                    },
                    grouping: None,
                };
                for (step, &t) in steps.iter().enumerate() {
                    let end = t - offset;
                    let raw: Vec<(i64, f64)> = points
                        .iter()
                        .copied()
                        .filter(|&(ts, _)| end - range < ts && ts <= end)
                        .collect();
                    let (low, high) = windows.step_buckets[step];
                    let inside: Vec<&Bucket> = buckets
                        .iter()
                        .filter(|(i, _)| low < *i && *i <= high)
                        .map(|(_, b)| b)
                        .collect();
                    assert_eq!(raw.is_empty(), inside.is_empty(), "round {round} {op:?} step {step}");
                    if raw.is_empty() {
                        continue;
                    }
                    let mut total = *inside[0];
                    for bucket in &inside[1..] {
                        total.merge(bucket);
                    }
                    let want = range_function(&agg, &raw, end);
                    let got = reduced_function(&agg, &total);
                    let same = (want.is_nan() && got.is_nan()) || want == got;
                    // first/last among equal timestamps may differ in which sample wins.
                    let tie = matches!(op, RangeOp::FirstOverTime | RangeOp::LastOverTime)
                        && raw.windows(2).any(|w| w[0].0 == w[1].0);
                    assert!(
                        same || tie,
                        "round {round} {op:?} step {step}: raw {want} buckets {got}"
                    );
                }
            }
        }
    }

    /// Counts reads, to check that a selector is read once per query.
    #[derive(Debug, Default)]
    struct CountingStore {
        inner: MemLogStore,
        reads: std::sync::atomic::AtomicUsize,
    }

    impl LogRead for CountingStore {
        async fn visit_logs<F>(
            &self,
            tenant: &TenantId,
            select: &LogSelect,
            visit: F,
        ) -> Result<(), tidewatch_model::Error>
        where
            F: FnMut(LogStream) -> Result<(), tidewatch_model::Error> + Send,
        {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.visit_logs(tenant, select, visit).await
        }

        async fn log_series(
            &self,
            tenant: &TenantId,
            matchers: &[tidewatch_model::Matcher],
            range: NsRange,
        ) -> Result<Vec<Labels>, tidewatch_model::Error> {
            self.inner.log_series(tenant, matchers, range).await
        }
    }

    #[test]
    fn each_selector_is_read_once_per_query() {
        let store = CountingStore {
            inner: counters(),
            reads: Default::default(),
        };
        let query = r#"sum by (pod) (rate({app="a"} |= "x" [20s])) / sum by (pod) (count_over_time({app="a"} |= "n=" [30s] offset 5s)) + sum by (pod) (rate({app="a"} |= "x" [20s])) or count_over_time({app="b"}[1m])"#;
        let params = LogQueryParams::range(20 * S, 50 * S, 10 * S, Direction::Backward, 100);
        let expr = parse(query).unwrap();
        let together = poll(evaluate(&store, &TenantId::default_tenant(), &expr, &params)).unwrap();
        assert_eq!(
            store.reads.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "one read per selector"
        );
        // The same parts evaluated on their own give the same answer.
        let plain = counters();
        let separate = |q: &str| run(&plain, q, &params).unwrap();
        let LogQueryResult::Matrix(rate) = separate(r#"sum by (pod) (rate({app="a"} |= "x" [20s]))"#) else {
            panic!()
        };
        let LogQueryResult::Matrix(count) =
            separate(r#"sum by (pod) (count_over_time({app="a"} |= "n=" [30s] offset 5s))"#)
        else {
            panic!()
        };
        let LogQueryResult::Matrix(got) = together else {
            panic!()
        };
        for (series, counted) in rate.iter().zip(&count) {
            let combined = got.iter().find(|s| s.labels == series.labels).unwrap();
            for (point, combined_point) in series.points.iter().zip(&combined.points) {
                let divisor = counted.points.iter().find(|p| p.0 == point.0).unwrap().1;
                assert!((combined_point.1 - (point.1 / divisor + point.1)).abs() < 1e-12);
            }
        }
        assert!(got.iter().any(|s| s.labels.get("app") == Some("b")));
    }

    #[test]
    fn quantile_interpolates_and_bounds() {
        assert_eq!(quantile(0.5, vec![1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(quantile(0.0, vec![3.0, 1.0]), 1.0);
        assert_eq!(quantile(1.5, vec![1.0]), f64::INFINITY);
        assert_eq!(quantile(-1.0, vec![1.0]), f64::NEG_INFINITY);
        assert!(quantile(0.5, vec![]).is_nan());
    }

    #[test]
    fn vector_aggregations_group_and_select() {
        let store = counters();
        let q = |query: &str| instant(&store, query, 40);
        let inner = r#"count_over_time({app=~"a|b"}[1m])"#;
        assert_eq!(q(&format!("sum({inner})")), vec![(String::new(), 7.0)]);
        assert_eq!(
            q(&format!("sum by (app) ({inner})")),
            vec![("app=a".to_string(), 6.0), ("app=b".to_string(), 1.0)]
        );
        assert_eq!(q(&format!("sum without (pod) ({inner})")).len(), 2);
        assert_eq!(q(&format!("avg({inner})")), vec![(String::new(), 7.0 / 3.0)]);
        assert_eq!(q(&format!("min({inner})")), vec![(String::new(), 1.0)]);
        assert_eq!(q(&format!("max({inner})")), vec![(String::new(), 4.0)]);
        assert_eq!(q(&format!("count({inner})")), vec![(String::new(), 3.0)]);
        assert_eq!(q(&format!("stdvar by (app) ({inner})"))[0], ("app=a".to_string(), 1.0));
        assert_eq!(q(&format!("stddev by (app) ({inner})"))[0], ("app=a".to_string(), 1.0));
        assert_eq!(q(&format!("topk(1, {inner})")), vec![("app=a,pod=1".to_string(), 4.0)]);
        assert_eq!(q(&format!("bottomk(1, {inner})")), vec![("app=b".to_string(), 1.0)]);
        assert_eq!(q(&format!("topk(1, {inner}) by (app)")).len(), 2);
        let sorted = run(
            &store,
            &format!("sort_desc({inner})"),
            &LogQueryParams::instant(40 * S, Direction::Backward, 100),
        )
        .unwrap();
        let LogQueryResult::Vector(samples) = sorted else {
            panic!()
        };
        let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
        assert_eq!(values, vec![4.0, 2.0, 1.0]);
        let sorted = run(
            &store,
            &format!("sort({inner})"),
            &LogQueryParams::instant(40 * S, Direction::Backward, 100),
        )
        .unwrap();
        let LogQueryResult::Vector(samples) = sorted else {
            panic!()
        };
        let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
        assert_eq!(values, vec![1.0, 2.0, 4.0]);
        assert_eq!(q(&format!("approx_topk(2, {inner})")).len(), 2);
    }

    #[test]
    fn binary_operators_match_like_loki() {
        let store = counters();
        let q = |query: &str| instant(&store, query, 40);
        let a = r#"count_over_time({app="a"}[1m])"#;
        assert_eq!(q(&format!("{a} > 2")), vec![("app=a,pod=1".to_string(), 4.0)]);
        assert_eq!(
            q(&format!("{a} > bool 2")),
            vec![("app=a,pod=1".to_string(), 1.0), ("app=a,pod=2".to_string(), 0.0)]
        );
        assert_eq!(q(&format!("2 < {a}")), vec![("app=a,pod=1".to_string(), 4.0)]);
        assert_eq!(q(&format!("{a} / 0")).len(), 2);
        assert!(q(&format!("{a} / 0"))[0].1.is_nan());
        let share = format!(r#"{a} / on (app) group_left sum by (app) ({a})"#);
        assert_eq!(
            q(&share),
            vec![
                ("app=a,pod=1".to_string(), 4.0 / 6.0),
                ("app=a,pod=2".to_string(), 2.0 / 6.0)
            ]
        );
        let error = run(
            &store,
            &format!(r#"{a} / ignoring (pod) sum by (app) ({a})"#),
            &LogQueryParams::instant(40 * S, Direction::Backward, 100),
        )
        .unwrap_err();
        assert!(
            error.message.contains("many-to-one matching must be explicit"),
            "{}",
            error.message
        );
        assert_eq!(
            q(&format!(
                r#"{a} and on (pod) count_over_time({{app="a", pod="2"}}[1m])"#
            ))
            .len(),
            1
        );
        assert_eq!(
            q(&format!(
                r#"{a} unless on (pod) count_over_time({{app="a", pod="2"}}[1m])"#
            ))
            .len(),
            1
        );
        assert_eq!(q(&format!(r#"{a} or count_over_time({{app="b"}}[1m])"#)).len(), 3);
        assert_eq!(
            run(&store, "2 ^ 3 + 1", &LogQueryParams::instant(0, Direction::Backward, 1)).unwrap(),
            LogQueryResult::Scalar {
                timestamp: 0,
                value: 9.0
            }
        );
        assert_eq!(
            q(r#"label_replace(count_over_time({app="b"}[1m]), "dst", "x-$1", "app", "(.*)")"#),
            vec![("app=b,dst=x-b".to_string(), 1.0)]
        );
        assert_eq!(q("vector(3)"), vec![(String::new(), 3.0)]);
    }

    #[test]
    fn absent_over_time_fills_the_gaps() {
        let store = counters();
        assert_eq!(
            range(&store, r#"absent_over_time({app="b", pod=~".*"}[10s])"#, 20, 50, 10),
            vec![("app=b".to_string(), vec![(20, 1.0), (40, 1.0), (50, 1.0)])]
        );
        assert_eq!(
            instant(&store, r#"absent_over_time({app="b", pod="x", pod!="y"}[10s])"#, 50),
            vec![("app=b".to_string(), 1.0)],
            "a name with two matchers is left out"
        );
    }

    #[test]
    fn pipeline_errors_fail_metric_queries_with_loki_s_text() {
        let store = counters();
        let params = LogQueryParams::instant(40 * S, Direction::Backward, 100);
        let error = run(&store, r#"count_over_time({app="b"} | json [1m])"#, &params).unwrap_err();
        assert_eq!(error.error_type, crate::error::ErrorType::BadData);
        assert!(
            error
                .message
                .starts_with("pipeline error: 'JSONParserErr' for series: '{__error__=\"JSONParserErr\""),
            "{}",
            error.message
        );
        assert!(
            run(
                &store,
                r#"count_over_time({app="b"} | json | __error__="" [1m])"#,
                &params
            )
            .is_ok()
        );
        let mut small = params.clone();
        small.max_samples = 2;
        let error = run(
            &store,
            r#"stdvar_over_time({app="a"} | logfmt | unwrap n [1m])"#,
            &small,
        )
        .unwrap_err();
        assert!(error.message.contains("max_samples"));
        // Counting holds one bucket per series and window edge, not the lines.
        assert!(run(&store, r#"count_over_time({app="a"}[1m])"#, &small).is_ok());
    }

    #[test]
    fn pushed_down_filters_give_the_same_answers() {
        let store = counters();
        for (pushed, kept) in [
            (r#"{app=~"a|b"} |= "x""#, r#"{app=~"a|b"} |~ "x""#),
            (r#"{app=~"a|b"} |= "n=1" | logfmt"#, r#"{app=~"a|b"} | logfmt |~ "n=1""#),
        ] {
            assert_eq!(
                instant(&store, &format!("count_over_time({pushed} [1m])"), 40),
                instant(&store, &format!("count_over_time({kept} [1m])"), 40)
            );
        }
    }

    fn streams(result: LogQueryResult) -> Vec<(String, Vec<(i64, String)>)> {
        let LogQueryResult::Streams(streams) = result else {
            panic!("not streams")
        };
        streams
            .into_iter()
            .map(|s| {
                (
                    text(&s.labels),
                    s.entries.into_iter().map(|e| (e.timestamp / S, e.line)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn log_queries_group_by_final_labels_order_and_limit() {
        let store = counters();
        let backward = LogQueryParams::range(0, 40 * S, S, Direction::Backward, 3);
        let got = streams(run(&store, r#"{app=~"a|b"} |= "x""#, &backward).unwrap());
        // [start, end): the entry at 40s is out; the 3 newest remain.
        assert_eq!(
            got,
            vec![
                ("app=a,pod=1".to_string(), vec![(30, "x n=3".to_string())]),
                ("app=a,pod=2".to_string(), vec![(15, "x n=10".to_string())]),
                ("app=b".to_string(), vec![(25, "x n=5".to_string())]),
            ]
        );
        let forward = LogQueryParams::range(0, 41 * S, S, Direction::Forward, 2);
        let got = streams(
            run(
                &store,
                r#"{app="a", pod="1"} | logfmt | line_format "{{.n}}""#,
                &forward,
            )
            .unwrap(),
        );
        assert_eq!(
            got,
            vec![
                ("app=a,n=1,pod=1".to_string(), vec![(10, "1".to_string())]),
                ("app=a,n=2,pod=1".to_string(), vec![(20, "2".to_string())]),
            ]
        );
        let all = LogQueryParams::range(0, 41 * S, S, Direction::Backward, 100);
        let got = streams(run(&store, r#"{app="a", pod="1"} |= "x""#, &all).unwrap());
        let times: Vec<i64> = got[0].1.iter().map(|e| e.0).collect();
        assert_eq!(times, vec![40, 30, 10], "newest first");
        // `interval` thins the entries of all streams together, in direction order.
        let mut sparse = all.clone();
        sparse.interval = 12 * S;
        let got = streams(run(&store, r#"{app="a"}"#, &sparse).unwrap());
        let times: Vec<Vec<i64>> = got.iter().map(|s| s.1.iter().map(|e| e.0).collect()).collect();
        assert_eq!(times, vec![vec![40, 20]]);
    }

    #[test]
    fn a_sum_s_grouping_is_pushed_into_extraction() {
        let store = counters();
        let mut params = LogQueryParams::instant(40 * S, Direction::Backward, 100);
        params.max_samples = 1;
        // Every line has its own `n`, so per-line labels would make one series each;
        // grouped at extraction the sum holds a single bucket.
        let summed = run(
            &store,
            r#"sum by (app) (count_over_time({app="a"} | logfmt [1m]))"#,
            &params,
        )
        .unwrap();
        let LogQueryResult::Vector(samples) = summed else {
            panic!()
        };
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].value, 6.0);
        let error = run(
            &store,
            r#"max by (app) (count_over_time({app="a"} | logfmt [1m]))"#,
            &params,
        )
        .unwrap_err();
        assert!(error.message.contains("max_samples"), "max needs every series");
        assert_eq!(
            instant(&store, r#"max by (app) (count_over_time({app="a"} | logfmt [1m]))"#, 40),
            vec![("app=a".to_string(), 1.0)]
        );
    }

    /// The HTTP layer runs queries inside axum handlers, which need `Send` futures.
    #[test]
    fn evaluate_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let store = counters();
        let expr = parse(r#"sum(rate({app="a"}[1m]))"#).unwrap();
        let params = LogQueryParams::instant(S, Direction::Backward, 1);
        let tenant = TenantId::default_tenant();
        let future = evaluate(&store, &tenant, &expr, &params);
        assert_send(&future);
        assert!(poll(future).is_ok());
    }

    #[test]
    fn bad_parameters_are_refused() {
        let store = counters();
        let instant_logs = run(
            &store,
            r#"{app="a"}"#,
            &LogQueryParams::instant(S, Direction::Backward, 1),
        )
        .unwrap_err();
        assert_eq!(instant_logs.message, ERR_INSTANT_LOG_QUERY);
        let zero_step = LogQueryParams::range(0, S, 0, Direction::Backward, 1);
        assert_eq!(
            run(&store, "vector(1)", &zero_step).unwrap_err().error_type,
            crate::error::ErrorType::BadData
        );
        // Ranges and offsets of centuries saturate instead of overflowing.
        let huge = run(
            &store,
            r#"count_over_time({app="a"}[290y] offset 290y) or rate_counter({app="a"} | logfmt | unwrap n [290y])"#,
            &LogQueryParams::instant(40 * S, Direction::Backward, 1),
        );
        assert!(huge.is_ok(), "{huge:?}");
        let too_fine = LogQueryParams::range(0, 86_400 * S, 1, Direction::Backward, 1);
        assert!(
            run(&store, "vector(1)", &too_fine)
                .unwrap_err()
                .message
                .contains("11,000 points")
        );
        let range_topk = LogQueryParams::range(0, S, S, Direction::Backward, 1);
        assert!(run(&store, r#"approx_topk(1, count_over_time({app="a"}[1m]))"#, &range_topk).is_err());
    }
}
