//! Aggregation operators (`sum`, `avg`, `topk`, `count_values`, …).
//!
//! Groups depend only on labels, so each series' group is found once; the
//! per-step loop then feeds values into per-group accumulators.

use std::collections::HashMap;

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_LIMIT_RATIO, T_LIMITK, T_MAX, T_MIN, T_QUANTILE, T_STDDEV,
    T_STDVAR, T_SUM, T_TOPK, TokenId,
};
use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};
use tidewatch_model::labels::hash_pairs;
use tidewatch_model::seam::SeriesRead;
use tidewatch_model::{Label, Labels, METRIC_NAME};

use std::sync::Arc;

use tidewatch_model::histogram::CounterResetHint;

use super::Evaluator;
use super::data::{Data, HPoint, Point, Series, StepCursor, StepValue, ValueCursor, format_float};
use super::go_strings::GoString;
use super::histogram::{self as hist, HistogramMean, KahanSum};
use super::kernels::{Mean, kahan_sum_inc, quantile};
use crate::error::Error;

pub(crate) async fn eval<S: SeriesRead>(ev: &Evaluator<'_, S>, aggregate: &AggregateExpr) -> Result<Data, Error> {
    let op = aggregate.op.id();
    let param = match &aggregate.param {
        Some(param) => Some(ev.eval(param).await?),
        None => None,
    };
    // With delayed name removal a name an earlier operation will drop still
    // takes part in grouping (`by (__name__)`); a group drops it if any member does.
    let input = ev.eval_vector(&aggregate.expr).await?;
    let grouping = Grouping::of(aggregate);
    let steps = ev.step_count();
    match (op, param) {
        (T_TOPK | T_BOTTOMK | T_LIMITK, Some(Data::Scalar(k))) => {
            let mut ignored_histograms = false;
            let out = select_k(op, &k, input, &grouping, steps, &mut ignored_histograms)?;
            if ignored_histograms {
                ev.shared.info(
                    format!("ignored histogram in {} aggregation", op_name(op)),
                    &aggregate.expr,
                );
            }
            Ok(Data::Vector(out))
        }
        (T_LIMIT_RATIO, Some(Data::Scalar(ratio))) => {
            Ok(Data::Vector(limit_ratio(ev, &ratio, input, param_node(aggregate))))
        }
        (T_COUNT_VALUES, Some(Data::String(label))) => {
            let label = ev.shared.go_string(param_node(aggregate), &label);
            count_values(&label, input, &grouping, steps).map(Data::Vector)
        }
        (T_QUANTILE, Some(Data::Scalar(q))) => {
            let q = (q.as_slice(), param_node(aggregate));
            Ok(Data::Vector(reduce(
                ev,
                op,
                Some(q),
                input,
                &grouping,
                steps,
                &aggregate.expr,
            )))
        }
        (T_SUM | T_AVG | T_COUNT | T_MIN | T_MAX | T_GROUP | T_STDDEV | T_STDVAR, None) => Ok(Data::Vector(reduce(
            ev,
            op,
            None,
            input,
            &grouping,
            steps,
            &aggregate.expr,
        ))),
        _ => Err(Error::bad_data(format!(
            "unsupported aggregation parameters in {aggregate}"
        ))),
    }
}

/// The parameter expression (annotations point at it).
fn param_node(aggregate: &AggregateExpr) -> &Expr {
    aggregate.param.as_deref().unwrap_or(&aggregate.expr)
}

/// `by (…)` or `without (…)`.
#[derive(Debug)]
struct Grouping<'e> {
    without: bool,
    names: Vec<&'e str>,
}

impl<'e> Grouping<'e> {
    fn of(aggregate: &'e AggregateExpr) -> Grouping<'e> {
        match &aggregate.modifier {
            Some(LabelModifier::Include(labels)) => {
                // Sorted, so `kept` finds them by binary search in label order.
                let mut names: Vec<&str> = labels.labels.iter().map(String::as_str).collect();
                names.sort_unstable();
                names.dedup();
                Grouping { without: false, names }
            }
            Some(LabelModifier::Exclude(labels)) => Grouping {
                without: true,
                names: labels.labels.iter().map(String::as_str).collect(),
            },
            None => Grouping {
                without: false,
                names: Vec::new(),
            },
        }
    }

    fn keeps(&self, label: &Label) -> bool {
        if self.without {
            label.name != METRIC_NAME && !self.names.contains(&label.name.as_str())
        } else {
            self.names.contains(&label.name.as_str())
        }
    }

    fn labels(&self, labels: &Labels) -> Labels {
        Labels::from_sorted(self.kept(labels).into_iter().cloned().collect())
    }

    /// The labels of `labels` the grouping keeps, in label order. `by` looks
    /// its few names up rather than testing every label against them: this
    /// ran for every input series and was ~10 % of a small instant query.
    fn kept<'a>(&self, labels: &'a Labels) -> smallvec::SmallVec<[&'a Label; 8]> {
        if self.without {
            return labels.iter().filter(|l| self.keeps(l)).collect();
        }
        let pairs = labels.as_slice();
        self.names
            .iter()
            .filter_map(|name| {
                pairs
                    .binary_search_by(|l| l.name.as_str().cmp(name))
                    .ok()
                    .map(|at| &pairs[at])
            })
            .collect()
    }

    /// Each series' group number, and the groups' labels in order of first
    /// appearance. Groups are found by a hash of the kept pairs, so only a
    /// new group's labels are built.
    fn assign(&self, input: &[Series]) -> (Vec<usize>, Vec<Labels>) {
        let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut groups: Vec<Labels> = Vec::new();
        let assigned = input
            .iter()
            .map(|s| {
                let kept = self.kept(&s.labels);
                let hash = hash_pairs(kept.iter().map(|l| (l.name.as_str(), l.value.as_str())));
                let candidates = by_hash.entry(hash).or_default();
                if let Some(&id) = candidates
                    .iter()
                    .find(|&&id| groups[id].iter().eq(kept.iter().copied()))
                {
                    return id;
                }
                groups.push(Labels::from_sorted(kept.into_iter().cloned().collect()));
                candidates.push(groups.len() - 1);
                groups.len() - 1
            })
            .collect();
        (assigned, groups)
    }
}

/// One group's running aggregate at one step.
#[derive(Debug, Clone, Default)]
struct Accumulator {
    count: f64,
    value: f64,
    compensation: f64,
    /// Welford's running mean for `stddev`/`stdvar`.
    mean: f64,
    average: Mean,
    values: Vec<f64>,
}

impl Accumulator {
    fn start(&mut self, op: TokenId, v: f64) {
        *self = Accumulator {
            count: 1.0,
            value: v,
            compensation: 0.0,
            mean: v,
            average: Mean::new(v),
            values: std::mem::take(&mut self.values),
        };
        self.values.clear();
        match op {
            T_GROUP => self.value = 1.0,
            T_STDDEV | T_STDVAR => self.value = 0.0,
            T_QUANTILE => self.values.push(v),
            _ => {}
        }
    }

    fn add(&mut self, op: TokenId, v: f64) {
        self.count += 1.0;
        match op {
            T_SUM => (self.value, self.compensation) = kahan_sum_inc(v, self.value, self.compensation),
            T_AVG => self.average.add(v),
            // A NaN is replaced by any later value.
            T_MAX if self.value < v || self.value.is_nan() => self.value = v,
            T_MIN if self.value > v || self.value.is_nan() => self.value = v,
            T_STDDEV | T_STDVAR => {
                // Welford's online variance.
                let delta = v - self.mean;
                self.mean += delta / self.count;
                self.value += delta * (v - self.mean);
            }
            T_QUANTILE => self.values.push(v),
            _ => {}
        }
    }

    fn finish(&mut self, op: TokenId, q: f64) -> f64 {
        match op {
            T_SUM => self.value + self.compensation,
            T_AVG => self.average.value(),
            T_COUNT => self.count,
            T_STDVAR => self.value / self.count,
            T_STDDEV => (self.value / self.count).sqrt(),
            T_QUANTILE => quantile(q, &mut self.values),
            _ => self.value,
        }
    }
}

/// The aggregation's name in annotations.
fn op_name(op: TokenId) -> &'static str {
    match op {
        T_SUM => "sum",
        T_AVG => "avg",
        T_COUNT => "count",
        T_MIN => "min",
        T_MAX => "max",
        T_GROUP => "group",
        T_STDDEV => "stddev",
        T_STDVAR => "stdvar",
        T_QUANTILE => "quantile",
        T_TOPK => "topk",
        T_BOTTOMK => "bottomk",
        T_LIMITK => "limitk",
        _ => "aggregation",
    }
}

/// One group's running sum of native histograms at one step (`sum`, `avg`).
#[derive(Debug, Clone, Default)]
struct HistogramAccumulator {
    sum: Option<KahanSum>,
    mean: Option<HistogramMean>,
    count: f64,
    has_float: bool,
    /// Exponential and custom-bucket histograms met: no result.
    incompatible: bool,
    counter_reset_seen: bool,
    not_counter_reset_seen: bool,
}

impl HistogramAccumulator {
    fn add<S: SeriesRead>(
        &mut self,
        ev: &Evaluator<'_, S>,
        op: TokenId,
        h: &tidewatch_model::FloatHistogram,
        name: &str,
        node: &Expr,
    ) {
        self.count += 1.0;
        match h.counter_reset_hint {
            CounterResetHint::CounterReset => self.counter_reset_seen = true,
            CounterResetHint::NotCounterReset => self.not_counter_reset_seen = true,
            _ => {}
        }
        if self.incompatible {
            return;
        }
        let added = if op == T_AVG {
            match &mut self.mean {
                None => {
                    self.mean = Some(HistogramMean::new(h.clone()));
                    return;
                }
                Some(mean) => mean.add(h),
            }
        } else {
            match &mut self.sum {
                None => {
                    self.sum = Some(KahanSum::new(h.clone()));
                    return;
                }
                Some(sum) => sum.add(h),
            }
        };
        match added {
            Ok(combined) => {
                if combined.bounds_reconciled {
                    ev.shared.info(hist::message::bounds_reconciled("aggregation"), node);
                }
            }
            Err(hist::IncompatibleSchemas) => {
                self.incompatible = true;
                ev.shared.warn(hist::message::mixed_layouts(name), node);
            }
        }
    }
}

/// Most accumulators the series-major path of [`reduce`] allocates (groups
/// times steps, about 50 bytes each); beyond, the step-major walk keeps
/// memory to one accumulator per group.
const SERIES_MAJOR_MAX_CELLS: usize = 1 << 20;

/// The running value of `sum`, `avg`, `count`, `group`, `min` or `max` for
/// one group at one step (the first sample starts it).
#[derive(Debug, Clone, Copy, Default)]
struct SimpleAccumulator {
    count: f64,
    value: f64,
    compensation: f64,
    average: Mean,
}

impl SimpleAccumulator {
    fn start(v: f64) -> SimpleAccumulator {
        SimpleAccumulator {
            count: 1.0,
            value: v,
            compensation: 0.0,
            average: Mean::new(v),
        }
    }

    fn add(&mut self, op: TokenId, v: f64) {
        self.count += 1.0;
        match op {
            T_SUM => (self.value, self.compensation) = kahan_sum_inc(v, self.value, self.compensation),
            T_AVG => self.average.add(v),
            T_MAX if self.value < v || self.value.is_nan() => self.value = v,
            T_MIN if self.value > v || self.value.is_nan() => self.value = v,
            _ => {}
        }
    }

    fn finish(&self, op: TokenId) -> f64 {
        match op {
            T_SUM => self.value + self.compensation,
            T_AVG => self.average.value(),
            T_COUNT => self.count,
            T_GROUP => 1.0,
            _ => self.value,
        }
    }
}

/// `sum`, `avg`, `count`, `group`, `min` and `max` over float series, series
/// by series: each series' points go straight into its group's accumulator
/// for that step. Per (group, step) the series still arrive in input order,
/// so results equal the step-major walk bit for bit.
fn reduce_series_major(op: TokenId, input: &[Series], group_of: &[usize], out: &mut [Series], steps: usize) {
    let cells = out.len() * steps;
    let mut started = vec![false; cells];
    let mut accumulators = vec![SimpleAccumulator::default(); cells];
    for (series, &group) in input.iter().zip(group_of) {
        for point in &series.points {
            let cell = group * steps + point.step as usize;
            if started[cell] {
                accumulators[cell].add(op, point.value);
            } else {
                started[cell] = true;
                accumulators[cell] = SimpleAccumulator::start(point.value);
            }
        }
    }
    for (group, series) in out.iter_mut().enumerate() {
        for step in 0..steps {
            let cell = group * steps + step;
            if started[cell] {
                let value = accumulators[cell].finish(op);
                series.points.push(Point {
                    step: step as u32,
                    value,
                });
            }
        }
    }
}

fn reduce<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    op: TokenId,
    q: Option<(&[f64], &Expr)>,
    input: Vec<Series>,
    grouping: &Grouping<'_>,
    steps: usize,
    node: &Expr,
) -> Vec<Series> {
    let (group_of, groups) = grouping.assign(&input);
    if matches!(op, T_SUM | T_AVG | T_COUNT | T_GROUP | T_MIN | T_MAX)
        && groups.len().saturating_mul(steps) <= SERIES_MAJOR_MAX_CELLS
        && input.iter().all(|s| s.histograms.is_empty())
    {
        let mut out: Vec<Series> = groups.into_iter().map(|l| Series::new(l, false, Vec::new())).collect();
        for (series, &group) in input.iter().zip(&group_of) {
            out[group].drop_name |= series.drop_name;
        }
        reduce_series_major(op, &input, &group_of, &mut out, steps);
        out.retain(|s| !s.is_empty());
        return out;
    }
    let mut out: Vec<Series> = groups.into_iter().map(|l| Series::new(l, false, Vec::new())).collect();
    for (series, &group) in input.iter().zip(&group_of) {
        out[group].drop_name |= series.drop_name;
    }
    let mut accumulators = vec![Accumulator::default(); out.len()];
    let sums_histograms = matches!(op, T_SUM | T_AVG);
    let mut histogram_sums = vec![HistogramAccumulator::default(); out.len()];
    let mut started = vec![false; out.len()];
    let mut touched = Vec::new();
    let mut cursor = ValueCursor::new(input.len());
    let mut warned_quantile = false;
    for step in 0..steps as u32 {
        for (index, &group) in group_of.iter().enumerate() {
            let Some(value) = cursor.value(&input, index, step) else {
                continue;
            };
            let v = match &value {
                StepValue::Float(v) => *v,
                StepValue::Histogram(_) if matches!(op, T_SUM | T_AVG | T_COUNT | T_GROUP) => 0.0,
                StepValue::Histogram(_) => {
                    ev.shared
                        .info(format!("ignored histogram in {} aggregation", op_name(op)), node);
                    continue;
                }
            };
            if started[group] {
                accumulators[group].add(op, v);
            } else {
                started[group] = true;
                touched.push(group);
                accumulators[group].start(op, v);
                histogram_sums[group] = HistogramAccumulator::default();
            }
            match value {
                StepValue::Float(_) => histogram_sums[group].has_float = true,
                StepValue::Histogram(h) if sums_histograms => {
                    let name = input[index].labels.metric_name().unwrap_or_default();
                    histogram_sums[group].add(ev, op, &h, name, node);
                }
                StepValue::Histogram(_) => {}
            }
        }
        let q_now = q.map_or(f64::NAN, |(q, _)| q[step as usize]);
        if let Some((_, node)) = q
            && !touched.is_empty()
            && !(0.0..=1.0).contains(&q_now)
            && !warned_quantile
        {
            warned_quantile = true;
            ev.shared.warn(
                format!("quantile value should be between 0 and 1, got {}", format_float(q_now)),
                node,
            );
        }
        touched.sort_unstable();
        for group in touched.drain(..) {
            started[group] = false;
            let value = accumulators[group].finish(op, q_now);
            let histograms = std::mem::take(&mut histogram_sums[group]);
            if histograms.sum.is_none() && histograms.mean.is_none() {
                out[group].points.push(Point { step, value });
                continue;
            }
            if histograms.has_float {
                ev.shared.warn(
                    "encountered a mix of histograms and floats for aggregation".to_string(),
                    node,
                );
                continue;
            }
            if histograms.counter_reset_seen && histograms.not_counter_reset_seen {
                ev.shared.warn(
                    "conflicting counter resets during histogram aggregation".to_string(),
                    node,
                );
            }
            if histograms.incompatible {
                continue;
            }
            let mut total = match (histograms.sum, histograms.mean) {
                (Some(sum), _) => sum.total(),
                (None, Some(mean)) => mean.value(),
                (None, None) => continue,
            };
            hist::compact(&mut total);
            out[group].histograms.push(HPoint {
                step,
                h: Arc::new(total),
            });
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// A per-step count parameter (`topk`, `bottomk`, `limitk`) as an integer.
fn count_param(value: f64) -> Result<i64, Error> {
    if value.is_nan() {
        return Err(Error::execution("Parameter value is NaN"));
    }
    if value >= i64::MAX as f64 || value <= i64::MIN as f64 {
        return Err(Error::execution(format!(
            "Scalar value {} overflows int64",
            format_float(value)
        )));
    }
    Ok(value as i64)
}

/// `topk`, `bottomk` and `limitk`: up to k series per group at each step,
/// keeping the input series' labels.
fn select_k(
    op: TokenId,
    k: &[f64],
    input: Vec<Series>,
    grouping: &Grouping<'_>,
    steps: usize,
    ignored_histograms: &mut bool,
) -> Result<Vec<Series>, Error> {
    let (group_of, groups) = grouping.assign(&input);
    let mut members: Vec<Vec<(usize, StepValue)>> = vec![Vec::new(); groups.len()];
    let mut out: Vec<Series> = input
        .iter()
        .map(|s| Series::new(s.labels.clone(), s.drop_name, Vec::new()))
        .collect();
    let mut order: Vec<usize> = Vec::new();
    let mut cursor = ValueCursor::new(input.len());
    let is_instant = steps == 1;
    for step in 0..steps as u32 {
        let k = count_param(k[step as usize])?;
        for (index, &group) in group_of.iter().enumerate() {
            match cursor.value(&input, index, step) {
                // Only limitk keeps histograms; topk and bottomk rank floats.
                Some(StepValue::Histogram(_)) if op != T_LIMITK => *ignored_histograms = true,
                Some(v) => members[group].push((index, v)),
                None => {}
            }
        }
        if k < 1 {
            members.iter_mut().for_each(Vec::clear);
            continue;
        }
        for group in &mut members {
            if group.is_empty() {
                continue;
            }
            // NaN ranks last for both; limitk keeps the input order. Stable
            // sorts keep equal values in input order.
            let float = |v: &StepValue| match v {
                StepValue::Float(f) => *f,
                StepValue::Histogram(_) => f64::NAN,
            };
            match op {
                T_TOPK => group.sort_by(|a, b| rank_desc(float(&a.1), float(&b.1))),
                T_BOTTOMK => group.sort_by(|a, b| rank_asc(float(&a.1), float(&b.1))),
                _ => {}
            }
            group.truncate(usize::try_from(k).unwrap_or(usize::MAX));
            for (index, value) in group.drain(..) {
                match value {
                    StepValue::Float(value) => out[index].points.push(Point { step, value }),
                    StepValue::Histogram(h) => out[index].histograms.push(HPoint { step, h }),
                }
                if is_instant {
                    order.push(index);
                }
            }
        }
    }
    if is_instant {
        // An instant query returns each group's selection in rank order.
        let mut ranked: Vec<Series> = Vec::with_capacity(order.len());
        let mut slots: Vec<Option<Series>> = out.into_iter().map(Some).collect();
        for index in order {
            if let Some(series) = slots[index].take() {
                ranked.push(series);
            }
        }
        return Ok(ranked);
    }
    out.retain(|s| !s.is_empty());
    Ok(out)
}

/// Descending by value, NaN last.
fn rank_desc(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal),
    }
}

/// Ascending by value, NaN last.
fn rank_asc(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

/// `limit_ratio(r, v)`: a stable sample of series chosen by label hash, the
/// same series at every step; a negative ratio picks the complement.
fn limit_ratio<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    ratio: &[f64],
    mut input: Vec<Series>,
    node: &Expr,
) -> Vec<Series> {
    let mut warned = false;
    let offsets: Vec<f64> = input
        .iter()
        .map(|s| prometheus_labels_hash(&s.labels) as f64 / u64::MAX as f64)
        .collect();
    for (series, offset) in input.iter_mut().zip(offsets) {
        let keep = |r: f64| (r >= 0.0 && offset < r) || (r < 0.0 && offset >= 1.0 + r);
        series
            .histograms
            .retain(|p| keep(ratio[p.step as usize].clamp(-1.0, 1.0)));
        series.points.retain(|p| {
            let mut r = ratio[p.step as usize];
            if !(-1.0..=1.0).contains(&r) {
                let capped = r.clamp(-1.0, 1.0);
                if !warned {
                    warned = true;
                    ev.shared.warn(
                        format!(
                            "ratio value should be between -1 and 1, got {}, capping to {}",
                            format_float(r),
                            format_float(capped)
                        ),
                        node,
                    );
                }
                r = capped;
            }
            keep(r)
        });
    }
    input.retain(|s| !s.is_empty());
    input
}

/// Prometheus' `labels.Labels.Hash()`: xxHash64 of `name 0xff value 0xff …`.
fn prometheus_labels_hash(labels: &Labels) -> u64 {
    let mut bytes = Vec::with_capacity(256);
    for label in labels {
        bytes.extend_from_slice(label.name.as_bytes());
        bytes.push(0xff);
        bytes.extend_from_slice(label.value.as_bytes());
        bytes.push(0xff);
    }
    xxhash_rust::xxh64::xxh64(&bytes, 0)
}

/// `count_values("label", v)`: per group, how many series have each value.
fn count_values(
    label_name: &GoString,
    input: Vec<Series>,
    grouping: &Grouping<'_>,
    steps: usize,
) -> Result<Vec<Series>, Error> {
    if !label_name.is_label_name() {
        return Err(Error::execution(format!("invalid label name {}", label_name.quoted())));
    }
    let owned_label = label_name.lossy();
    let label = owned_label.as_str();
    let group_labels: Vec<Labels> = input.iter().map(|s| grouping.labels(&s.labels)).collect();
    let mut out: Vec<Series> = Vec::new();
    let mut by_labels: HashMap<Labels, usize> = HashMap::new();
    let mut cursor = StepCursor::new(input.len());
    for step in 0..steps as u32 {
        for (index, base) in group_labels.iter().enumerate() {
            let Some(v) = cursor.value(&input, index, step) else {
                continue;
            };
            let mut pairs: Vec<Label> = base.iter().filter(|l| l.name != label).cloned().collect();
            pairs.push(Label::new(label, format_float(v)));
            pairs.sort();
            let labels = Labels::from_sorted(pairs);
            let slot = *by_labels.entry(labels.clone()).or_insert_with(|| {
                out.push(Series::new(labels, false, Vec::new()));
                out.len() - 1
            });
            out[slot].drop_name |= input[index].drop_name;
            match out[slot].points.last_mut() {
                Some(point) if point.step == step => point.value += 1.0,
                _ => out[slot].points.push(Point { step, value: 1.0 }),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The step-major walk the general path of `reduce` does, for comparison.
    fn step_major(op: TokenId, input: &[Series], group_of: &[usize], groups: usize, steps: usize) -> Vec<Vec<Point>> {
        let mut out = vec![Vec::new(); groups];
        let mut cursor = StepCursor::new(input.len());
        for step in 0..steps as u32 {
            let mut accumulators: Vec<Option<Accumulator>> = vec![None; groups];
            for (index, &group) in group_of.iter().enumerate() {
                let Some(v) = cursor.value(input, index, step) else {
                    continue;
                };
                match &mut accumulators[group] {
                    Some(acc) => acc.add(op, v),
                    slot @ None => {
                        let mut acc = Accumulator::default();
                        acc.start(op, v);
                        *slot = Some(acc);
                    }
                }
            }
            for (group, acc) in accumulators.iter_mut().enumerate() {
                if let Some(acc) = acc {
                    out[group].push(Point {
                        step,
                        value: acc.finish(op, f64::NAN),
                    });
                }
            }
        }
        out
    }

    proptest! {
        // Series by series gives bit-identical results to step by step.
        #[test]
        fn series_major_equals_step_major(
            op in prop_oneof![Just(T_SUM), Just(T_AVG), Just(T_COUNT), Just(T_GROUP), Just(T_MIN), Just(T_MAX)],
            series in proptest::collection::vec(
                (0usize..4, proptest::collection::btree_map(0u32..12, prop_oneof![-1e6f64..1e6, Just(f64::NAN), Just(1e308)], 0..12)),
                0..20,
            ),
        ) {
            let steps = 12;
            let input: Vec<Series> = series
                .iter()
                .map(|(_, points)| {
                    let points = points.iter().map(|(&step, &value)| Point { step, value }).collect();
                    Series::new(Labels::default(), false, points)
                })
                .collect();
            let group_of: Vec<usize> = series.iter().map(|(g, _)| *g).collect();
            let mut out: Vec<Series> = (0..4).map(|_| Series::new(Labels::default(), false, Vec::new())).collect();
            reduce_series_major(op, &input, &group_of, &mut out, steps);
            let expected = step_major(op, &input, &group_of, 4, steps);
            for (got, want) in out.iter().zip(&expected) {
                prop_assert_eq!(got.points.len(), want.len());
                for (g, w) in got.points.iter().zip(want) {
                    prop_assert_eq!(g.step, w.step);
                    prop_assert_eq!(g.value.to_bits(), w.value.to_bits());
                }
            }
        }
    }
}
