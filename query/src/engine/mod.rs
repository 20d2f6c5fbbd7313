//! The PromQL engine.
//!
//! Queries are parsed by `promql-parser` and evaluated here over every step at
//! once ([`data`]): an expression's value is a list of series with their points
//! at the query's steps, so label work (matching, grouping, name dropping) is
//! done once per series and the per-step loops only touch numbers. Selectors
//! push their matchers and exact time range into the read seam, so nothing
//! beyond what the query needs is loaded.
//!
//! Semantics are Prometheus 3's: range windows are left-open, the metric name
//! is dropped at the end of evaluation (delayed name removal), and staleness
//! markers end a series at once.

mod aggregate;
mod binary;
mod data;
mod functions;
mod go_strings;
pub(crate) mod histogram;
mod info;
pub(crate) mod kernels;
mod query_text;
mod selector;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{AtModifier, Expr, Offset};
use tidewatch_model::seam::{SeriesRead, SeriesSamples};
use tidewatch_model::{FloatHistogram, HistogramSample, Labels, Sample, TenantId, TimestampMs};

use crate::error::Error;
use data::{Data, RangeSeries, Series};
use go_strings::GoString;
pub(crate) use kernels::almost_equal;
use query_text::TextPosition;

/// Prometheus' default lookback delta.
pub const DEFAULT_LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// Step of a subquery written without one (`x[10m:]`): Prometheus uses the
/// global evaluation interval, 1 m by default.
pub const DEFAULT_SUBQUERY_STEP_MS: i64 = 60 * 1000;

/// Limits on one query.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Most samples a query may hold at once: the batch of series being read
    /// plus the points kept from earlier ones (as Prometheus'
    /// `--query.max-samples` counts samples in memory, not samples read).
    pub max_samples: usize,
    /// Most series a query may select (summed over its selectors).
    pub max_series: usize,
    /// Most points a range query may return per series.
    pub max_points_per_series: i64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_samples: 50_000_000,
            max_series: 1_000_000,
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
}

/// A query result.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An instant vector at `time`: (labels, value) pairs, float samples
    /// and native histogram samples.
    Vector {
        time: TimestampMs,
        samples: Vec<(Labels, f64)>,
        histograms: Vec<(Labels, FloatHistogram)>,
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

/// A parsed query: its syntax tree and the text it was read from, which
/// annotations point into and whose string literals Prometheus reads with
/// Go's escapes (see [`go_strings`]).
#[derive(Debug, Clone)]
pub struct Query {
    text: String,
    expr: Expr,
}

impl Query {
    /// This query's text with `expr`, its tree changed in modifiers only
    /// (the `@` variants of the promqltest runner): annotations still point
    /// into the text, and its strings keep Go's reading of it.
    pub fn with_modifiers_changed(&self, expr: Expr) -> Query {
        Query {
            text: self.text.clone(),
            expr,
        }
    }

    pub fn expr(&self) -> &Expr {
        &self.expr
    }
}

/// Parses a query with Prometheus' parser, its strings read as Prometheus
/// reads them; errors carry its position and message.
pub fn parse(query: &str) -> Result<Query, Error> {
    let mut expr = promql_parser::parser::parse(query)
        .map_err(|e| Error::bad_data(format!("invalid parameter \"query\": {e}")))?;
    let tokens = query_text::tokens(query);
    // Not found in its own text would be a gap in `query_text`; the tree
    // then keeps promql-parser's strings.
    if let Some(located) = query_text::locate(query, &tokens, &expr) {
        go_strings::apply(query, &tokens, &located, &mut expr)?;
    }
    Ok(Query {
        text: query.to_string(),
        expr,
    })
}

/// Whether every node of `query`'s tree is found in its text, so that
/// positions in messages and Go's string escapes apply to it (`None` when it
/// does not parse). A tree not found keeps promql-parser's reading of its
/// strings and printed positions; the conformance test holds every script
/// expression to this.
pub fn located_in_text(query: &str) -> Option<bool> {
    let expr = promql_parser::parser::parse(query).ok()?;
    Some(query_text::locate(query, &query_text::tokens(query), &expr).is_some())
}

/// Evaluates `query` over `range` against `source`.
pub async fn evaluate<S: SeriesRead>(
    source: &S,
    tenant: &TenantId,
    query: &Query,
    range: EvalRange,
    limits: QueryLimits,
) -> Result<Evaluated, Error> {
    let expr = &query.expr;
    let is_range_query = range.step > 0;
    if is_range_query {
        match expr.value_type() {
            ValueType::Vector | ValueType::Scalar => {}
            other => {
                return Err(Error::bad_data(format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    type_name(other)
                )));
            }
        }
    }
    let mut stats_only = HashSet::new();
    histogram_stats_selectors(expr, false, &mut stats_only);
    let tokens = query_text::tokens(&query.text);
    let (positions, not_utf8) = match query_text::locate(&query.text, &tokens, expr) {
        Some(located) => {
            let positions = located
                .starts
                .iter()
                .map(|(&node, &offset)| (node, TextPosition::of(&query.text, offset)))
                .collect();
            (positions, go_strings::not_utf8_literals(&query.text, &tokens, &located))
        }
        None => (printed_positions(expr), HashMap::new()),
    };
    let shared = Shared {
        positions,
        not_utf8,
        stats_only,
        ..Shared::default()
    };
    let evaluator = Evaluator {
        source,
        tenant,
        start: range.start,
        end: range.end,
        interval: range.step.max(1),
        query_start: range.start,
        query_end: range.end,
        range_query: is_range_query,
        query_step: range.step,
        lookback: range.lookback,
        limits,
        shared: &shared,
    };
    let data = evaluator.eval(expr).await?;
    let value = evaluator.to_value(data, is_range_query)?;
    let annotations = shared.into_annotations();
    Ok(Evaluated { value, annotations })
}

/// Collects the selectors whose native histograms only feed
/// `histogram_count`, `histogram_sum` or `histogram_avg` (and no subquery,
/// bucket-reading function or trim in between). Prometheus reads those
/// through its `HistogramStatsIterator`: buckets are skipped, and counter
/// resets are detected while reading, which shows in the hints (and in
/// the collision warnings of `sum` and `sum_over_time`). Doing the same
/// keeps results and annotations identical.
fn histogram_stats_selectors(expr: &Expr, stats: bool, out: &mut HashSet<usize>) {
    let mut walk = |child: &Expr, stats: bool| histogram_stats_selectors(child, stats, out);
    match expr {
        Expr::VectorSelector(vs) if stats => {
            out.insert(vs as *const promql_parser::parser::VectorSelector as usize);
        }
        Expr::MatrixSelector(ms) if stats => {
            out.insert(&ms.vs as *const promql_parser::parser::VectorSelector as usize);
        }
        Expr::Call(call) => {
            let stats = match call.func.name {
                "histogram_count" | "histogram_sum" | "histogram_avg" => true,
                "histogram_quantile" | "histogram_quantiles" | "histogram_fraction" => false,
                _ => stats,
            };
            call.args.args.iter().for_each(|a| walk(a, stats));
        }
        Expr::Subquery(sq) => walk(&sq.expr, false),
        Expr::Aggregate(a) => {
            walk(&a.expr, stats);
            if let Some(param) = &a.param {
                walk(param, stats);
            }
        }
        Expr::Binary(b) => {
            walk(&b.lhs, stats);
            walk(&b.rhs, stats);
        }
        Expr::Paren(p) => walk(&p.expr, stats),
        Expr::Unary(u) => walk(&u.expr, stats),
        _ => {}
    }
}

/// Where every sub-expression starts in the query as printed on one line:
/// the positions of a tree not found in the query's text, which should not
/// happen (the text is the tree's source, modifiers aside).
fn printed_positions(expr: &Expr) -> HashMap<usize, TextPosition> {
    fn children(expr: &Expr) -> Vec<&Expr> {
        match expr {
            Expr::Aggregate(a) => a.param.iter().map(|p| p.as_ref()).chain([a.expr.as_ref()]).collect(),
            Expr::Binary(b) => vec![b.lhs.as_ref(), b.rhs.as_ref()],
            Expr::Paren(p) => vec![p.expr.as_ref()],
            Expr::Unary(u) => vec![u.expr.as_ref()],
            Expr::Subquery(s) => vec![s.expr.as_ref()],
            Expr::Call(c) => c.args.args.iter().map(|a| a.as_ref()).collect(),
            _ => Vec::new(),
        }
    }
    fn walk(expr: &Expr, offset: usize, text: &str, out: &mut HashMap<usize, TextPosition>) {
        let position = TextPosition {
            line: 1,
            column: offset + 1,
        };
        out.insert(expr as *const Expr as usize, position);
        let mut cursor = 0;
        for child in children(expr) {
            let child_text = child.to_string();
            if let Some(found) = text.get(cursor..).and_then(|rest| rest.find(&child_text)) {
                let start = cursor + found;
                walk(child, offset + start, &child_text, out);
                cursor = start + child_text.len();
            }
        }
    }
    let mut out = HashMap::new();
    walk(expr, 0, &expr.to_string(), &mut out);
    out
}

fn type_name(value_type: ValueType) -> &'static str {
    match value_type {
        ValueType::Vector => "instant vector",
        ValueType::Scalar => "scalar",
        ValueType::Matrix => "range vector",
        ValueType::String => "string",
    }
}

/// State every evaluator of one query shares: what was loaded so far (for
/// the limits), annotations, and where each sub-expression starts in the
/// query's text (annotations end with `(line:column)`).
#[derive(Debug, Default)]
struct Shared {
    inner: Mutex<SharedInner>,
    /// Where each sub-expression starts, by its address in the syntax tree.
    positions: HashMap<usize, TextPosition>,
    /// The string literals whose Go value is not UTF-8, by address.
    not_utf8: HashMap<usize, GoString>,
    /// Selectors (by address) whose histograms are only read for their
    /// count and sum (see [`histogram_stats_selectors`]).
    stats_only: HashSet<usize>,
}

#[derive(Debug, Default)]
struct SharedInner {
    series_loaded: usize,
    /// Samples read from storage and points made of them, still held.
    samples_held: usize,
    warnings: BTreeSet<String>,
    infos: BTreeSet<String>,
    order: Vec<(bool, String)>,
    /// How often each warning given with [`Shared::warn_counted`] occurred.
    occurrences: HashMap<String, usize>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SharedInner> {
        // A poisoned lock only means another evaluation task panicked; the
        // counters are still meaningful.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a batch a selector read against the query's limits; it is held
    /// until [`Shared::keep`] says how much of it stays.
    fn hold(&self, series: usize, samples: usize, limits: &QueryLimits) -> Result<(), Error> {
        let mut inner = self.lock();
        inner.series_loaded += series;
        inner.samples_held += samples;
        if inner.series_loaded > limits.max_series {
            return Err(Error::execution(format!(
                "query touched too many series: more than {} (query.max_series)",
                limits.max_series
            )));
        }
        if inner.samples_held > limits.max_samples {
            return Err(Error::execution(
                "query processing would load too many samples into memory in query execution",
            ));
        }
        Ok(())
    }

    /// A held batch of `read` samples was reduced to `kept` samples or points.
    fn keep(&self, read: usize, kept: usize) {
        let mut inner = self.lock();
        inner.samples_held = inner.samples_held.saturating_sub(read) + kept;
    }

    /// `message` with the position of `node`, as Prometheus ends annotations.
    fn at(&self, message: String, node: &Expr) -> String {
        let start_of_text = TextPosition { line: 1, column: 1 };
        let position = self
            .positions
            .get(&(node as *const Expr as usize))
            .copied()
            .unwrap_or(start_of_text);
        format!("{message} ({position})")
    }

    /// The value of string literal `literal` (whose promql-parser value is
    /// `value`) as Prometheus reads it.
    fn go_string(&self, literal: &Expr, value: &str) -> GoString {
        match self.not_utf8.get(&(literal as *const Expr as usize)) {
            Some(not_utf8) => not_utf8.clone(),
            None => GoString::Utf8(value.to_string()),
        }
    }

    fn warn(&self, message: String, node: &Expr) {
        let message = self.at(message, node);
        let mut inner = self.lock();
        if inner.warnings.insert(message.clone()) {
            inner.order.push((true, message));
        }
    }

    /// Like [`Shared::warn`], for a warning Prometheus counts: once per
    /// series and step it occurs at, shown as `(N occurrences)` when more
    /// than once.
    fn warn_counted(&self, message: String, node: &Expr) {
        let message = self.at(message, node);
        let mut inner = self.lock();
        let count = inner.occurrences.entry(message.clone()).or_default();
        *count += 1;
        if *count == 1 && inner.warnings.insert(message.clone()) {
            inner.order.push((true, message));
        }
    }

    fn info(&self, message: String, node: &Expr) {
        let message = self.at(message, node);
        let mut inner = self.lock();
        if inner.infos.insert(message.clone()) {
            inner.order.push((false, message));
        }
    }

    fn into_annotations(self) -> Annotations {
        let inner = self.inner.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut annotations = Annotations::default();
        for (is_warning, message) in inner.order {
            if is_warning {
                let message = match inner.occurrences.get(&message) {
                    Some(&count) if count > 1 => with_occurrences(&message, count),
                    _ => message,
                };
                annotations.warnings.push(format!("PromQL warning: {message}"));
            } else {
                annotations.infos.push(format!("PromQL info: {message}"));
            }
        }
        annotations
    }
}

/// `message (1:col)` as `message (N occurrences) (1:col)`.
fn with_occurrences(message: &str, count: usize) -> String {
    match message.rfind(" (") {
        Some(position) => format!("{} ({count} occurrences){}", &message[..position], &message[position..]),
        None => format!("{message} ({count} occurrences)"),
    }
}

/// Evaluates expressions over one grid of steps: the query's, or a subquery's.
struct Evaluator<'a, S> {
    source: &'a S,
    tenant: &'a TenantId,
    /// First and last step time, and the distance between steps (≥ 1).
    start: TimestampMs,
    end: TimestampMs,
    interval: i64,
    /// The outer query's range, which `@ start()` and `@ end()` refer to.
    query_start: TimestampMs,
    query_end: TimestampMs,
    /// Whether the outer query is a range query (results are then sorted by labels).
    range_query: bool,
    /// The outer query's step (0 for an instant query), which `step()` returns.
    query_step: i64,
    lookback: i64,
    limits: QueryLimits,
    shared: &'a Shared,
}

type EvalFuture<'b> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Data, Error>> + Send + 'b>>;

impl<'a, S: SeriesRead> Evaluator<'a, S> {
    fn step_count(&self) -> usize {
        ((self.end - self.start) / self.interval + 1) as usize
    }

    fn step_time(&self, step: usize) -> TimestampMs {
        self.start + step as i64 * self.interval
    }

    fn step_times(&self) -> impl Iterator<Item = TimestampMs> + '_ {
        (0..self.step_count()).map(|i| self.step_time(i))
    }

    /// The time a selector or subquery reads at for step time `t`: `@` pins
    /// it, `offset` shifts it.
    fn effective_time(&self, at: &Option<AtModifier>, offset: &Option<Offset>, t: TimestampMs) -> TimestampMs {
        let base = match at {
            Some(AtModifier::Start) => self.query_start,
            Some(AtModifier::End) => self.query_end,
            Some(AtModifier::At(time)) => system_time_ms(*time),
            None => t,
        };
        base.saturating_sub(offset_ms(offset))
    }

    fn eval<'b>(&'b self, expr: &'b Expr) -> EvalFuture<'b>
    where
        'a: 'b,
    {
        Box::pin(async move {
            // Yield between nodes, so a timeout or a client that went away
            // (the future is then dropped) stops a long evaluation promptly.
            tokio::task::yield_now().await;
            match expr {
                Expr::Paren(paren) => self.eval(&paren.expr).await,
                Expr::NumberLiteral(number) => Ok(Data::Scalar(vec![number.val; self.step_count()])),
                Expr::StringLiteral(string) => Ok(Data::String(string.val.clone())),
                Expr::Unary(unary) => match self.eval(&unary.expr).await? {
                    Data::Scalar(values) => Ok(Data::Scalar(values.into_iter().map(|v| -v).collect())),
                    Data::Vector(mut series) => {
                        for entry in &mut series {
                            entry.drop_name = true;
                            for point in &mut entry.points {
                                point.value = -point.value;
                            }
                            for point in &mut entry.histograms {
                                let mut negated = (*point.h).clone();
                                histogram::mul(&mut negated, -1.0);
                                point.h = std::sync::Arc::new(negated);
                            }
                        }
                        Ok(Data::Vector(series))
                    }
                    _ => Err(Error::bad_data(
                        "unary expression only allowed on expressions of type scalar or instant vector",
                    )),
                },
                Expr::VectorSelector(selector) => Ok(Data::Vector(
                    selector::instant(self, selector, selector::Sampled::Value).await?,
                )),
                Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                    let windows = selector::windows(self, expr).await?;
                    Ok(Data::Matrix(windows.into_single_step()))
                }
                Expr::Call(call) => functions::call(self, expr, call).await,
                Expr::Aggregate(aggregate) => aggregate::eval(self, aggregate).await,
                Expr::Binary(binary) => binary::eval(self, expr, binary).await,
                Expr::Extension(_) => Err(Error::execution("extension expressions are not supported")),
            }
        })
    }

    /// Evaluates an argument that must be a scalar: one value per step.
    async fn eval_scalar(&self, expr: &Expr) -> Result<Vec<f64>, Error> {
        match self.eval(expr).await? {
            Data::Scalar(values) => Ok(values),
            _ => Err(Error::bad_data(format!("expected type scalar in {expr}"))),
        }
    }

    async fn eval_vector(&self, expr: &Expr) -> Result<Vec<Series>, Error> {
        match self.eval(expr).await? {
            Data::Vector(series) => Ok(series),
            _ => Err(Error::bad_data(format!("expected type instant vector in {expr}"))),
        }
    }

    /// The evaluated top-level expression as the API returns it.
    fn to_value(&self, data: Data, is_range_query: bool) -> Result<Value, Error> {
        match data {
            Data::Scalar(values) if is_range_query => {
                let samples = values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| Sample::new(self.step_time(i), v))
                    .collect();
                Ok(Value::Matrix(vec![SeriesSamples {
                    labels: Labels::default(),
                    samples,
                    histograms: Vec::new(),
                    start_timestamps: Default::default(),
                }]))
            }
            Data::Scalar(values) => Ok(Value::Scalar {
                time: self.start,
                value: values.first().copied().unwrap_or(f64::NAN),
            }),
            Data::String(value) => Ok(Value::String {
                time: self.start,
                value,
            }),
            Data::Matrix(series) => {
                let series = finish_range_series(series)?;
                Ok(Value::Matrix(series))
            }
            Data::Vector(series) => {
                let series = finish_names(series)?;
                if is_range_query {
                    let mut matrix: Vec<SeriesSamples> = series
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .map(|s| SeriesSamples {
                            labels: s.labels,
                            samples: s
                                .points
                                .iter()
                                .map(|p| Sample::new(self.step_time(p.step as usize), p.value))
                                .collect(),
                            histograms: s
                                .histograms
                                .iter()
                                .map(|p| HistogramSample {
                                    timestamp: self.step_time(p.step as usize),
                                    histogram: (*p.h).clone(),
                                })
                                .collect(),
                            start_timestamps: Default::default(),
                        })
                        .collect();
                    matrix.sort_by(|a, b| a.labels.cmp(&b.labels));
                    Ok(Value::Matrix(matrix))
                } else {
                    let mut samples = Vec::new();
                    let mut histograms = Vec::new();
                    for s in series {
                        if let Some(p) = s.points.first() {
                            samples.push((s.labels, p.value));
                        } else if let Some(p) = s.histograms.first() {
                            histograms.push((s.labels, (*p.h).clone()));
                        }
                    }
                    Ok(Value::Vector {
                        time: self.start,
                        samples,
                        histograms,
                    })
                }
            }
        }
    }
}

/// Drops the metric name where an operation asked for it, and refuses a
/// result in which two series end up with the same labels at the same step.
fn finish_names(series: Vec<Series>) -> Result<Vec<Series>, Error> {
    let mut out = Vec::with_capacity(series.len());
    let mut seen: std::collections::HashMap<Labels, usize> = std::collections::HashMap::new();
    for mut entry in series {
        if entry.is_empty() {
            continue;
        }
        if entry.drop_name {
            entry.labels = data::without_name(&entry.labels);
            entry.drop_name = false;
        }
        match seen.get(&entry.labels) {
            Some(&index) => {
                let existing: &mut Series = &mut out[index];
                let steps: HashSet<u32> = existing
                    .points
                    .iter()
                    .map(|p| p.step)
                    .chain(existing.histograms.iter().map(|p| p.step))
                    .collect();
                if entry
                    .points
                    .iter()
                    .map(|p| p.step)
                    .chain(entry.histograms.iter().map(|p| p.step))
                    .any(|step| steps.contains(&step))
                {
                    return Err(duplicate_labelset());
                }
                existing.points.extend(entry.points);
                existing.points.sort_by_key(|p| p.step);
                existing.histograms.extend(entry.histograms);
                existing.histograms.sort_by_key(|p| p.step);
            }
            None => {
                seen.insert(entry.labels.clone(), out.len());
                out.push(entry);
            }
        }
    }
    Ok(out)
}

fn finish_range_series(series: Vec<RangeSeries>) -> Result<Vec<SeriesSamples>, Error> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(series.len());
    for entry in series {
        let labels = if entry.drop_name {
            data::without_name(&entry.labels)
        } else {
            entry.labels
        };
        if !seen.insert(labels.clone()) {
            return Err(duplicate_labelset());
        }
        out.push(SeriesSamples {
            labels,
            samples: entry.samples,
            histograms: entry
                .histograms
                .into_iter()
                .map(|h| HistogramSample {
                    timestamp: h.timestamp,
                    histogram: (*h.h).clone(),
                })
                .collect(),
            // Results carry no start timestamps: the API has no place for them.
            start_timestamps: Default::default(),
        });
    }
    Ok(out)
}

pub(crate) fn duplicate_labelset() -> Error {
    Error::execution("vector cannot contain metrics with the same labelset")
}

fn system_time_ms(time: std::time::SystemTime) -> TimestampMs {
    match time.duration_since(std::time::SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_millis() as TimestampMs,
        Err(before) => -(before.duration().as_millis() as TimestampMs),
    }
}

fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidewatch_model::seam::{Ingest, MemSeriesStore, WriteBatch};
    use tidewatch_model::stale_nan;

    async fn store_of(series: Vec<SeriesSamples>) -> MemSeriesStore {
        let store = MemSeriesStore::new();
        let batch = WriteBatch {
            series,
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

    /// One series `m{job="a"}` with `samples`.
    async fn store_with(samples: &[(i64, f64)]) -> MemSeriesStore {
        store_of(vec![SeriesSamples {
            labels: Labels::from_pairs([("__name__", "m"), ("job", "a")]),
            samples: samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
            histograms: Vec::new(),
            start_timestamps: Default::default(),
        }])
        .await
    }

    async fn run(
        store: &MemSeriesStore,
        query: &str,
        range: EvalRange,
        limits: QueryLimits,
    ) -> Result<Evaluated, Error> {
        evaluate(store, &TenantId::default_tenant(), &parse(query)?, range, limits).await
    }

    async fn instant(store: &MemSeriesStore, query: &str, t: i64) -> Value {
        let range = EvalRange::instant(t, DEFAULT_LOOKBACK_MS);
        run(store, query, range, QueryLimits::default()).await.unwrap().value
    }

    fn vector_values(value: Value) -> Vec<f64> {
        match value {
            Value::Vector { samples, .. } => samples.into_iter().map(|(_, v)| v).collect(),
            other => panic!("expected a vector, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn annotations_point_into_the_query_as_written() {
        let store = store_with(&[(0, 1.0)]).await;
        let at_0 = EvalRange::instant(0, DEFAULT_LOOKBACK_MS);
        // promql-parser prints `+Inf` as `Inf`: counted in its print, the
        // second position would be one column short.
        let query = "quantile(+Inf, m) + quantile(2, m)";
        let evaluated = run(&store, query, at_0, QueryLimits::default()).await.unwrap();
        assert_eq!(
            evaluated.annotations.warnings,
            [
                "PromQL warning: quantile value should be between 0 and 1, got +Inf (1:10)",
                "PromQL warning: quantile value should be between 0 and 1, got 2 (1:30)",
            ]
        );
        let query = "sum(m) # every m\n  + quantile(2, m)";
        let evaluated = run(&store, query, at_0, QueryLimits::default()).await.unwrap();
        assert_eq!(
            evaluated.annotations.warnings,
            ["PromQL warning: quantile value should be between 0 and 1, got 2 (2:14)"]
        );
    }

    #[tokio::test]
    async fn strings_are_read_with_go_escapes() {
        let store = store_with(&[(0, 1.0)]).await;
        let at_0 = EvalRange::instant(0, DEFAULT_LOOKBACK_MS);
        // `\xff` and `\377` are the byte 0xff, not UTF-8: no label name or regex.
        let refused = [
            r#"label_replace(m, "\xff", "", "job", "(.*)")"#,
            r#"label_replace(m, "dst", "", "job", "\xff")"#,
            r#"label_join(m, "dst", "-", '\377')"#,
            r#"label_join(m, "\377", "-", "job")"#,
            r#"count_values("\xff", m)"#,
            r#"sum by ("\xff") (m)"#,
            r#"m{job=~"\xff.*"}"#,
        ];
        for query in refused {
            let result = run(&store, query, at_0, QueryLimits::default()).await;
            assert!(result.is_err(), "{query} should fail");
        }
        let err = run(&store, r#"count_values("\xff", m)"#, at_0, QueryLimits::default())
            .await
            .unwrap_err();
        assert_eq!(err.message, r#"invalid label name "\xff""#);
        // `\xc3\xbf` is `ÿ` in UTF-8 (promql-parser reads `Ã¿`).
        let Value::Vector { samples, .. } =
            instant(&store, r#"label_replace(m, "\xc3\xbf", "$1", "job", "(.*)")"#, 0).await
        else {
            panic!("expected a vector");
        };
        assert_eq!(samples[0].0.get("ÿ"), Some("a"));
        // A matcher value that is not UTF-8 equals no stored value.
        assert!(vector_values(instant(&store, r#"m{job="\xff"}"#, 0).await).is_empty());
        assert_eq!(vector_values(instant(&store, r#"m{job!="\xff"}"#, 0).await), [1.0]);
        assert_eq!(vector_values(instant(&store, r#"m{job=~"\xff|a"}"#, 0).await), [1.0]);
    }

    #[tokio::test]
    async fn start_time_overlaps_are_warned_with_their_count() {
        // Every sample claims to have started two minutes before it: each
        // start reaches back over the previous sample.
        let mut series = SeriesSamples::floats(
            Labels::from_pairs([("__name__", "counter_total")]),
            (1..=4).map(|k| Sample::new(k * 60_000, k as f64 * 60.0)).collect(),
        );
        series.start_timestamps.floats = (1..=4).map(|k| (k - 2) * 60_000 + 1).collect();
        let store = MemSeriesStore::new();
        store.insert(&TenantId::default_tenant(), vec![series]);
        let message = "PromQL warning: sample has start time that overlaps with previous sample timestamp \
                       for metric \"counter_total\"";
        let query = "rate(counter_total[3m])";

        let once = run(
            &store,
            query,
            EvalRange::instant(240_000, DEFAULT_LOOKBACK_MS),
            QueryLimits::default(),
        );
        assert_eq!(once.await.unwrap().annotations.warnings, [format!("{message} (1:6)")]);
        // Windows ending at 4m and 5m hold overlapping samples; the one at
        // 6m holds a single sample.
        let range = EvalRange {
            start: 240_000,
            end: 360_000,
            step: 60_000,
            lookback: DEFAULT_LOOKBACK_MS,
        };
        let counted = run(&store, query, range, QueryLimits::default()).await.unwrap();
        assert_eq!(
            counted.annotations.warnings,
            [format!("{message} (2 occurrences) (1:6)")]
        );
        // Functions that do not read start timestamps do not warn.
        let delta = run(&store, "delta(counter_total[3m])", range, QueryLimits::default())
            .await
            .unwrap();
        assert!(delta.annotations.warnings.is_empty());
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
        let value = run(&store, "m", range, QueryLimits::default()).await.unwrap().value;
        let Value::Matrix(series) = value else {
            panic!("expected a matrix")
        };
        let values: Vec<f64> = series[0].samples.iter().map(|s| s.value).collect();
        assert_eq!(values, [1.0, 1.0, 2.0, 2.0, 2.0]);
        let err = run(&store, "m[1m]", range, QueryLimits::default()).await.unwrap_err();
        assert!(err.message.contains("range vector"), "{err}");
        let value = run(&store, "sum(m) * 2", range, QueryLimits::default())
            .await
            .unwrap()
            .value;
        let Value::Matrix(series) = value else {
            panic!("expected a matrix")
        };
        assert_eq!(series[0].labels, Labels::default());
        let values: Vec<f64> = series[0].samples.iter().map(|s| s.value).collect();
        assert_eq!(values, [2.0, 2.0, 4.0, 4.0, 4.0]);
    }

    #[tokio::test]
    async fn sample_limit_fails_the_query() {
        let store = store_with(&[(0, 1.0), (1, 2.0), (2, 3.0)]).await;
        let limits = QueryLimits {
            max_samples: 2,
            ..QueryLimits::default()
        };
        let err = run(&store, "m[1m]", EvalRange::instant(10, DEFAULT_LOOKBACK_MS), limits)
            .await
            .unwrap_err();
        assert!(err.message.contains("too many samples"), "{err}");
    }

    #[tokio::test]
    async fn series_limit_fails_the_query() {
        let store = store_with(&[(0, 1.0)]).await;
        let limits = QueryLimits {
            max_series: 0,
            ..QueryLimits::default()
        };
        let err = run(&store, "sum(m)", EvalRange::instant(10, DEFAULT_LOOKBACK_MS), limits)
            .await
            .unwrap_err();
        assert!(err.message.contains("too many series"), "{err}");
    }

    #[tokio::test]
    async fn sample_limit_counts_what_is_held_not_what_was_read() {
        // 2,000 series × 2 samples: more than the limit in all, but each batch
        // of 1,024 series is reduced to one point per series before the next.
        let store = store_of(
            (0..2000)
                .map(|i| SeriesSamples {
                    labels: Labels::from_pairs([("__name__", "m".to_string()), ("i", i.to_string())]),
                    samples: vec![Sample::new(0, 1.0), Sample::new(1, 2.0)],
                    histograms: Vec::new(),
                    start_timestamps: Default::default(),
                })
                .collect(),
        )
        .await;
        let limits = QueryLimits {
            max_samples: 3000,
            ..QueryLimits::default()
        };
        let at_10 = EvalRange::instant(10, DEFAULT_LOOKBACK_MS);
        let Value::Vector { samples, .. } = run(&store, "count(m)", at_10, limits).await.unwrap().value else {
            panic!("expected a vector");
        };
        assert_eq!(samples[0].1, 2000.0);
        // Keeping every sample (a range vector result) does exceed it.
        let err = run(&store, "m[1m]", at_10, limits).await.unwrap_err();
        assert!(err.message.contains("too many samples"), "{err}");
    }
}
