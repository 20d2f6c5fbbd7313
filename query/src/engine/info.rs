//! `info()`: adds to each series the data labels of the info series it
//! shares its identifying labels with (`instance` and `job`), at each step.
//!
//! Semantics are Prometheus' `info.go`: which info series count
//! ([`info_name_matchers`]), base series that are info series themselves are
//! left alone, among info series of one name the one with the newest sample
//! wins (two equally new ones are an error), and two info metrics giving one
//! data label different values is an error.

use std::collections::{HashMap, HashSet};

use promql_parser::label::{MatchOp, Matcher, Matchers};
use promql_parser::parser::{Expr, VectorSelector};
use tidewatch_model::seam::SeriesRead;
use tidewatch_model::{Label, Labels, METRIC_NAME};

use super::data::{Data, HPoint, Point, Series, StepValue, go_labels_string};
use super::selector::{self, Sampled};
use super::{Evaluator, duplicate_labelset};
use crate::error::Error;

/// The labels that tie a series to its info series.
const IDENTIFYING_LABELS: [&str; 2] = ["instance", "job"];

/// The info metric read when the selector names none.
const TARGET_INFO: &str = "target_info";

/// `info(v, {selector})`.
pub(super) async fn info<S: SeriesRead>(ev: &Evaluator<'_, S>, args: &[&Expr]) -> Result<Data, Error> {
    let Some(&vector) = args.first() else {
        return Err(Error::bad_data("info() needs a vector"));
    };
    let requested: Vec<Matcher> = match args.get(1).copied() {
        Some(Expr::VectorSelector(vs)) => selector_matchers(vs),
        Some(other) => return Err(Error::bad_data(format!("info() takes a selector, got {other}"))),
        None => Vec::new(),
    };
    let (written_name_matchers, data_matchers): (Vec<Matcher>, Vec<Matcher>) =
        requested.into_iter().partition(|m| m.name == METRIC_NAME);
    let name_matchers = info_name_matchers(written_name_matchers);
    let base = ev.eval_vector(vector).await?;
    let is_info_series = |labels: &Labels| {
        let name = labels.metric_name().unwrap_or("");
        name_matchers.iter().all(|m| m.is_match(name))
    };
    let left_alone: Vec<bool> = base.iter().map(|s| is_info_series(&s.labels)).collect();

    let infos = info_series(ev, vector, &base, &left_alone, &name_matchers, &data_matchers).await?;
    let mut by_identity: HashMap<[&str; 2], Vec<usize>> = HashMap::new();
    for (index, entry) in infos.iter().enumerate() {
        by_identity.entry(identity(&entry.labels)).or_default().push(index);
    }
    let join = Join {
        infos: &infos,
        data_label_names: data_matchers.iter().map(|m| m.name.as_str()).collect(),
        accepts_missing: data_matchers.iter().all(|m| m.is_match("")),
    };

    let mut out = Output::default();
    for (index, entry) in base.iter().enumerate() {
        if left_alone[index] {
            out.add_series(entry)?;
            continue;
        }
        let candidates = by_identity
            .get(&identity(&entry.labels))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (step, value) in values_by_step(entry) {
            let Some(labels) = join.labels_at(&entry.labels, candidates, step)? else {
                continue;
            };
            out.add(labels, entry.drop_name, step, value)?;
        }
    }
    Ok(Data::Vector(out.finish()))
}

/// The matchers of the selector argument, the metric name as one of them.
fn selector_matchers(selector: &VectorSelector) -> Vec<Matcher> {
    let mut matchers = selector.matchers.matchers.clone();
    if let Some(name) = &selector.name {
        matchers.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
    }
    matchers
}

/// The `__name__` matchers an info series must pass: those written, with
/// `=~".+_info"` added when all of them are negative (`!=`, `!~`), and
/// `="target_info"` when there are none.
fn info_name_matchers(written: Vec<Matcher>) -> Vec<Matcher> {
    let positive = written.iter().any(|m| matches!(m.op, MatchOp::Equal | MatchOp::Re(_)));
    if positive {
        return written;
    }
    if written.is_empty() {
        return vec![Matcher::new(MatchOp::Equal, METRIC_NAME, TARGET_INFO)];
    }
    let any_info = match Matcher::new_matcher(
        promql_parser::parser::token::T_EQL_REGEX,
        METRIC_NAME.to_string(),
        ".+_info".to_string(),
    ) {
        Ok(matcher) => matcher,
        Err(_) => unreachable!("`.+_info` compiles"),
    };
    std::iter::once(any_info).chain(written).collect()
}

/// The values of the identifying labels ("" when absent).
fn identity(labels: &Labels) -> [&str; 2] {
    IDENTIFYING_LABELS.map(|name| labels.get(name).unwrap_or(""))
}

/// The info series that may join the base series not left alone: those
/// the name and data matchers select whose identifying labels take values
/// those base series have (a label no base series has is not asked for).
/// None when those base series have no identifying label at all.
async fn info_series<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    vector: &Expr,
    base: &[Series],
    left_alone: &[bool],
    name_matchers: &[Matcher],
    data_matchers: &[Matcher],
) -> Result<Vec<Series>, Error> {
    let mut wanted: [HashSet<&str>; 2] = Default::default();
    for (entry, _) in base.iter().zip(left_alone).filter(|(_, left_alone)| !**left_alone) {
        for (values, name) in wanted.iter_mut().zip(IDENTIFYING_LABELS) {
            if let Some(value) = entry.labels.get(name).filter(|v| !v.is_empty()) {
                values.insert(value);
            }
        }
    }
    if wanted.iter().all(HashSet::is_empty) {
        return Ok(Vec::new());
    }
    let matchers = data_matchers.iter().chain(name_matchers).cloned().collect();
    let mut selector = VectorSelector::new(None, Matchers::new(matchers));
    // Info series are read at the time the base series was read: the `@`
    // and offsets on the way to its first selector apply to them too.
    let (at, offset) = reference_time(vector);
    selector.at = at;
    selector.offset = offset;
    let all = selector::instant(ev, &selector, Sampled::FloatTimestamp).await?;
    let wanted_identity = |labels: &Labels| {
        wanted
            .iter()
            .zip(identity(labels))
            .all(|(values, value)| values.is_empty() || values.contains(value))
    };
    Ok(all.into_iter().filter(|info| wanted_identity(&info.labels)).collect())
}

/// A series' values with their steps, ascending.
fn values_by_step(series: &Series) -> Vec<(u32, StepValue)> {
    let floats = series.points.iter().map(|p| (p.step, StepValue::Float(p.value)));
    let histograms = series
        .histograms
        .iter()
        .map(|h| (h.step, StepValue::Histogram(h.h.clone())));
    let mut values: Vec<(u32, StepValue)> = floats.chain(histograms).collect();
    values.sort_by_key(|(step, _)| *step);
    values
}

/// The float value of `series` at `step`, if it has one.
fn float_at(series: &Series, step: u32) -> Option<f64> {
    let index = series.points.binary_search_by_key(&step, |p| p.step).ok()?;
    Some(series.points[index].value)
}

/// How base series take labels from info series.
struct Join<'a> {
    /// Info series; their points are the time (seconds) of the sample read.
    infos: &'a [Series],
    /// The data labels asked for; all when empty.
    data_label_names: HashSet<&'a str>,
    /// Whether a series no info series joins is kept: the data matchers all
    /// accept a missing label.
    accepts_missing: bool,
}

impl Join<'_> {
    /// The labels of a base series with `base_labels` at `step`, joined with
    /// info series `candidates` (those with its identity); `None` when it
    /// drops out.
    fn labels_at(&self, base_labels: &Labels, candidates: &[usize], step: u32) -> Result<Option<Labels>, Error> {
        // Per info metric name, the series with the newest sample.
        let mut newest: Vec<(&str, usize, f64)> = Vec::new();
        for &index in candidates {
            let Some(sampled_at) = float_at(&self.infos[index], step) else {
                continue;
            };
            let name = self.infos[index].labels.metric_name().unwrap_or("");
            match newest.iter_mut().find(|(n, _, _)| *n == name) {
                None => newest.push((name, index, sampled_at)),
                Some(slot) if slot.2 < sampled_at => *slot = (name, index, sampled_at),
                Some(slot) if slot.2 == sampled_at => {
                    return Err(Error::execution(format!(
                        "found duplicate series for info metric: existing {} @ {}, new {} @ {}",
                        go_labels_string(&self.infos[slot.1].labels),
                        seconds_to_ms(slot.2),
                        go_labels_string(&self.infos[index].labels),
                        seconds_to_ms(sampled_at),
                    )));
                }
                Some(_) => {}
            }
        }
        if newest.is_empty() {
            return Ok(self.accepts_missing.then(|| base_labels.clone()));
        }
        let mut added: Vec<Label> = Vec::new();
        for &(_, index, _) in &newest {
            for label in &self.infos[index].labels {
                let asked_for = self.data_label_names.is_empty() || self.data_label_names.contains(label.name.as_str());
                if label.name == METRIC_NAME || !asked_for {
                    continue;
                }
                if let Some(earlier) = added.iter().find(|l| l.name == label.name) {
                    if earlier.value != label.value {
                        return Err(Error::execution(format!("conflicting label: {}", label.name)));
                    }
                    continue;
                }
                if base_labels.get(&label.name).is_none() {
                    added.push(label.clone());
                }
            }
        }
        let mut pairs: Vec<Label> = base_labels.iter().cloned().chain(added).collect();
        pairs.sort();
        Ok(Some(Labels::from_sorted(pairs)))
    }
}

fn seconds_to_ms(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

/// The result series, one per label set; two values of one label set at
/// one step are an error, as in Prometheus.
#[derive(Default)]
struct Output {
    series: Vec<Series>,
    by_labels: HashMap<Labels, usize>,
    filled: HashSet<(usize, u32)>,
}

impl Output {
    fn slot(&mut self, labels: Labels, drop_name: bool) -> usize {
        if let Some(&slot) = self.by_labels.get(&labels) {
            return slot;
        }
        self.series.push(Series::new(labels.clone(), drop_name, Vec::new()));
        self.by_labels.insert(labels, self.series.len() - 1);
        self.series.len() - 1
    }

    fn add(&mut self, labels: Labels, drop_name: bool, step: u32, value: StepValue) -> Result<(), Error> {
        let slot = self.slot(labels, drop_name);
        if !self.filled.insert((slot, step)) {
            return Err(duplicate_labelset());
        }
        match value {
            StepValue::Float(value) => self.series[slot].points.push(Point { step, value }),
            StepValue::Histogram(h) => self.series[slot].histograms.push(HPoint { step, h }),
        }
        Ok(())
    }

    fn add_series(&mut self, entry: &Series) -> Result<(), Error> {
        for (step, value) in values_by_step(entry) {
            self.add(entry.labels.clone(), entry.drop_name, step, value)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<Series> {
        for series in &mut self.series {
            series.points.sort_by_key(|p| p.step);
            series.histograms.sort_by_key(|h| h.step);
        }
        self.series
    }
}

/// The `@` and total offset that map a step time to the time the first
/// selector of `expr` reads at: walking down, an `@` pins the time and every
/// offset below it shifts it.
fn reference_time(
    expr: &Expr,
) -> (
    Option<promql_parser::parser::AtModifier>,
    Option<promql_parser::parser::Offset>,
) {
    use promql_parser::parser::Offset;
    fn offset_ms(offset: &Option<Offset>) -> i64 {
        match offset {
            Some(Offset::Pos(d)) => d.as_millis() as i64,
            Some(Offset::Neg(d)) => -(d.as_millis() as i64),
            None => 0,
        }
    }
    fn walk(expr: &Expr, at: &mut Option<promql_parser::parser::AtModifier>, offset: &mut i64) -> bool {
        let mut apply = |modifier_at: &Option<promql_parser::parser::AtModifier>, modifier_offset: &Option<Offset>| {
            if modifier_at.is_some() {
                *at = modifier_at.clone();
                *offset = 0;
            }
            *offset += offset_ms(modifier_offset);
        };
        match expr {
            Expr::VectorSelector(vs) => {
                apply(&vs.at, &vs.offset);
                true
            }
            Expr::MatrixSelector(ms) => {
                apply(&ms.vs.at, &ms.vs.offset);
                true
            }
            Expr::Subquery(sq) => {
                apply(&sq.at, &sq.offset);
                walk(&sq.expr, at, offset)
            }
            Expr::Paren(p) => walk(&p.expr, at, offset),
            Expr::Unary(u) => walk(&u.expr, at, offset),
            Expr::Call(call) => call.args.args.iter().any(|a| {
                let (mut a_at, mut a_offset) = (at.clone(), *offset);
                let found = walk(a, &mut a_at, &mut a_offset);
                if found {
                    (*at, *offset) = (a_at, a_offset);
                }
                found
            }),
            Expr::Aggregate(a) => walk(&a.expr, at, offset),
            Expr::Binary(b) => {
                let (mut l_at, mut l_offset) = (at.clone(), *offset);
                if walk(&b.lhs, &mut l_at, &mut l_offset) {
                    (*at, *offset) = (l_at, l_offset);
                    return true;
                }
                walk(&b.rhs, at, offset)
            }
            _ => false,
        }
    }
    let (mut at, mut offset) = (None, 0i64);
    walk(expr, &mut at, &mut offset);
    let offset = match offset {
        0 => None,
        ms if ms > 0 => Some(Offset::Pos(std::time::Duration::from_millis(ms as u64))),
        ms => Some(Offset::Neg(std::time::Duration::from_millis(ms.unsigned_abs()))),
    };
    (at, offset)
}

#[cfg(test)]
mod tests {
    use tidewatch_model::seam::{MemSeriesStore, SeriesSamples};
    use tidewatch_model::{Sample, TenantId};

    use super::*;
    use crate::engine::{DEFAULT_LOOKBACK_MS, EvalRange, QueryLimits, Value, evaluate, parse};

    /// A store of float series, each given as its labels and one value at 0.
    fn store_with(series: &[&[(&str, &str)]]) -> MemSeriesStore {
        let store = MemSeriesStore::new();
        let series = series
            .iter()
            .map(|labels| SeriesSamples::floats(Labels::from_pairs(labels.iter().copied()), vec![Sample::new(0, 1.0)]))
            .collect();
        store.insert(&TenantId::default_tenant(), series);
        store
    }

    /// The label sets `query` returns at time 0, sorted.
    async fn labels_of(store: &MemSeriesStore, query: &str) -> Result<Vec<String>, Error> {
        let range = EvalRange::instant(0, DEFAULT_LOOKBACK_MS);
        let evaluated = evaluate(
            store,
            &TenantId::default_tenant(),
            &parse(query)?,
            range,
            QueryLimits::default(),
        )
        .await?;
        let Value::Vector { samples, .. } = evaluated.value else {
            panic!("expected a vector");
        };
        let mut labels: Vec<String> = samples.iter().map(|(l, _)| l.to_string()).collect();
        labels.sort();
        Ok(labels)
    }

    const METRIC: &[(&str, &str)] = &[("__name__", "metric"), ("instance", "a"), ("job", "1")];
    const TARGET_INFO_SERIES: &[(&str, &str)] = &[
        ("__name__", "target_info"),
        ("instance", "a"),
        ("job", "1"),
        ("data", "info"),
    ];
    const BUILD_INFO_SERIES: &[(&str, &str)] = &[
        ("__name__", "build_info"),
        ("instance", "a"),
        ("job", "1"),
        ("build", "b"),
    ];
    /// Not an info metric, with the same identifying labels as `METRIC`.
    const OTHER: &[(&str, &str)] = &[
        ("__name__", "other"),
        ("instance", "a"),
        ("job", "1"),
        ("data", "other"),
    ];

    #[tokio::test]
    async fn negative_name_matchers_only_select_info_metrics() {
        let store = store_with(&[METRIC, TARGET_INFO_SERIES, BUILD_INFO_SERIES, OTHER]);
        // `other` passes `!~".+_info"` but is no info metric: nothing joins.
        let got = labels_of(&store, r#"info(metric, {__name__!~".+_info", data=~".+"})"#).await;
        assert_eq!(got.unwrap(), Vec::<String>::new());
        let got = labels_of(&store, r#"info(metric, {__name__!="target_info", build=~".+"})"#).await;
        assert_eq!(got.unwrap(), [r#"metric{build="b", instance="a", job="1"}"#]);
        // An info metric the negative matchers let through is left alone.
        let got = labels_of(&store, r#"info({job="1"}, {__name__!="target_info", build=~".+"})"#).await;
        assert_eq!(
            got.unwrap(),
            [
                r#"build_info{build="b", instance="a", job="1"}"#,
                r#"metric{build="b", instance="a", job="1"}"#,
                r#"other{build="b", data="other", instance="a", job="1"}"#,
                r#"target_info{build="b", data="info", instance="a", job="1"}"#,
            ]
        );
    }

    #[tokio::test]
    async fn info_metrics_disagreeing_on_a_label_are_an_error() {
        let conflicting: &[(&str, &str)] = &[
            ("__name__", "build_info"),
            ("instance", "a"),
            ("job", "1"),
            ("data", "x"),
        ];
        let store = store_with(&[METRIC, TARGET_INFO_SERIES, conflicting]);
        let err = labels_of(&store, r#"info(metric, {__name__=~".+_info"})"#)
            .await
            .unwrap_err();
        assert_eq!(err.message, "conflicting label: data");
        // Agreeing is fine.
        let agreeing: &[(&str, &str)] = &[
            ("__name__", "build_info"),
            ("instance", "a"),
            ("job", "1"),
            ("data", "info"),
        ];
        let store = store_with(&[METRIC, TARGET_INFO_SERIES, agreeing]);
        let got = labels_of(&store, r#"info(metric, {__name__=~".+_info"})"#).await;
        assert_eq!(got.unwrap(), [r#"metric{data="info", instance="a", job="1"}"#]);
    }

    #[tokio::test]
    async fn two_equally_new_info_series_of_one_name_are_an_error() {
        let second: &[(&str, &str)] = &[
            ("__name__", "target_info"),
            ("instance", "a"),
            ("job", "1"),
            ("data", "2"),
        ];
        let store = store_with(&[METRIC, TARGET_INFO_SERIES, second]);
        let err = labels_of(&store, "info(metric)").await.unwrap_err();
        assert!(
            err.message
                .starts_with("found duplicate series for info metric: existing {__name__=\"target_info\""),
            "{err}"
        );
    }

    #[tokio::test]
    async fn only_info_series_with_the_identifying_values_asked_for_join() {
        // `only_instance` has no job; `job_only` has job 1 only: Prometheus
        // asks for info series with instance "a" and job "1", so the info
        // series without a job joins neither.
        let only_instance: &[(&str, &str)] = &[("__name__", "m"), ("instance", "a")];
        let job_only: &[(&str, &str)] = &[("__name__", "m"), ("job", "1")];
        let info_without_job: &[(&str, &str)] = &[("__name__", "target_info"), ("instance", "a"), ("data", "x")];
        let store = store_with(&[only_instance, job_only, info_without_job]);
        let got = labels_of(&store, "info(m)").await;
        assert_eq!(got.unwrap(), [r#"m{instance="a"}"#, r#"m{job="1"}"#]);
        let store = store_with(&[only_instance, info_without_job]);
        let got = labels_of(&store, "info(m)").await;
        assert_eq!(got.unwrap(), [r#"m{data="x", instance="a"}"#]);
    }
}
