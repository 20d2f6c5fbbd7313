//! A runner for Prometheus' `promqltest` scripts: loads their series into an
//! in-memory store, evaluates every `eval` with the engine and checks the
//! result, annotations and errors as Prometheus' own harness does
//! (`conformance/promql/FORMAT.md` §8), including the `@` variants and the
//! range-mode cross-check of instant evals.

mod script;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use promql_parser::parser::{AtModifier, Expr};
use tidewatch_model::histogram::{CounterResetHint, FloatHistogram, HistogramSample};
use tidewatch_model::seam::{MemSeriesStore, NO_START_TIMESTAMP, SeriesSamples};
use tidewatch_model::{Labels, Sample, TenantId, TimestampMs, is_stale_nan};

use crate::engine::histogram as hist;
use crate::engine::{self, DEFAULT_LOOKBACK_MS, EvalRange, Evaluated, QueryLimits, Value};
use script::{Command, Eval, Expectations, HistogramValue, Load, Query, TextMatch, Val, Values};

/// How one eval statement ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

/// One eval statement's outcome.
#[derive(Debug, Clone)]
pub struct Statement {
    pub file: String,
    pub line: usize,
    pub expr: String,
    pub outcome: Outcome,
}

/// Outcomes of every eval of the scripts run.
#[derive(Debug, Default)]
pub struct Report {
    pub statements: Vec<Statement>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Passed))
    }

    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skipped(_)))
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.statements.iter().filter(|s| f(&s.outcome)).count()
    }

    /// `N passed, M failed` (`, K skipped` when any).
    pub fn summary(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed(), self.failed());
        if self.skipped() > 0 {
            let _ = write!(line, ", {} skipped", self.skipped());
        }
        line
    }
}

/// Runs one script; `name` labels its statements.
pub async fn run_script(name: &str, text: &str) -> Report {
    let mut runner = Runner::new(name);
    for command in script::parse(text) {
        runner.command(command).await;
    }
    Report {
        statements: runner.statements,
    }
}

struct Runner {
    file: String,
    /// Everything loaded since the last `clear`: samples (with their start
    /// timestamps) by time per series.
    data: BTreeMap<Labels, BTreeMap<i64, (Val, TimestampMs)>>,
    store: MemSeriesStore,
    /// Why evals cannot run until the next `clear` (a load failed).
    blocked: Option<Outcome>,
    statements: Vec<Statement>,
}

impl Runner {
    fn new(file: &str) -> Runner {
        Runner {
            file: file.to_string(),
            data: BTreeMap::new(),
            store: MemSeriesStore::new(),
            blocked: None,
            statements: Vec::new(),
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Clear => {
                self.data.clear();
                self.store = MemSeriesStore::new();
                self.blocked = None;
            }
            Command::Invalid { line, message } => self.statements.push(Statement {
                file: self.file.clone(),
                line,
                expr: String::new(),
                outcome: Outcome::Failed(format!("script error: {message}")),
            }),
            Command::Load(load) => {
                if let Err(message) = self.load(&load).await {
                    self.blocked = Some(Outcome::Failed(format!("load at line {} failed: {message}", load.line)));
                }
            }
            Command::Eval(eval) => {
                let outcome = match &self.blocked {
                    Some(outcome) => outcome.clone(),
                    None => self.eval(&eval).await,
                };
                self.statements.push(Statement {
                    file: self.file.clone(),
                    line: eval.line,
                    expr: eval.expr.clone(),
                    outcome,
                });
            }
        }
    }

    async fn load(&mut self, load: &Load) -> Result<(), String> {
        for (labels, values) in &load.series {
            let stored = self.data.entry(labels.clone()).or_default();
            let offsets = load.start_offsets.get(labels);
            for (i, value) in values.iter().enumerate() {
                let Some(value) = value else { continue };
                let t = i as i64 * load.interval_ms;
                // A start timestamp is given as an offset from the sample's time.
                let offset = offsets.and_then(|offsets| offsets.get(i).copied().flatten());
                let start = offset.map_or(NO_START_TIMESTAMP, |offset| t.saturating_add(offset));
                match stored.get(&t) {
                    Some((existing, _)) if same_value(existing, value) => {}
                    Some(_) => return Err(format!("duplicate sample for timestamp {t} of {labels}")),
                    None => {
                        stored.insert(t, (value.clone(), start));
                    }
                }
            }
        }
        let series = self
            .data
            .iter()
            .map(|(labels, values)| {
                let mut entry = SeriesSamples::floats(labels.clone(), Vec::new());
                let starts = &mut entry.start_timestamps;
                for (&t, (value, start)) in values {
                    match value {
                        Val::Float(v) => {
                            entry.samples.push(Sample::new(t, *v));
                            starts.floats.push(*start);
                        }
                        Val::Histogram(h) => {
                            entry.histograms.push(HistogramSample {
                                timestamp: t,
                                histogram: h.h.clone(),
                            });
                            starts.histograms.push(*start);
                        }
                    }
                }
                // Most series have none: they list none.
                for starts in [&mut starts.floats, &mut starts.histograms] {
                    if starts.iter().all(|&start| start == NO_START_TIMESTAMP) {
                        starts.clear();
                    }
                }
                stored_hints(&mut entry);
                entry
            })
            .collect();
        self.store = MemSeriesStore::new();
        self.store.insert(&TenantId::default_tenant(), series);
        Ok(())
    }

    async fn eval(&self, eval: &Eval) -> Outcome {
        if let Some(reason) = &eval.expect.unsupported {
            return Outcome::Skipped(reason.clone());
        }
        let query = match engine::parse(&eval.expr) {
            Ok(query) => query,
            // promql-parser reads it, but Prometheus' parser refuses it
            // (a string that is not UTF-8 where a label name must be).
            Err(e) if promql_parser::parser::parse(&eval.expr).is_ok() => {
                return match check_error(Err(e), &eval.expect) {
                    Ok(_) => Outcome::Passed,
                    Err(message) => Outcome::Failed(message),
                };
            }
            Err(e) => return Outcome::Skipped(format!("the PromQL parser cannot read it: {}", e.message)),
        };
        let result = match eval.query {
            Query::Range {
                start_ms,
                end_ms,
                step_ms,
            } => self.check_range(&query, start_ms, end_ms, step_ms, &eval.expect).await,
            Query::Instant { at_ms } => self.check_instant(eval, &query, at_ms).await,
        };
        match result {
            Ok(()) => Outcome::Passed,
            Err(message) => Outcome::Failed(message),
        }
    }

    async fn run(&self, query: &engine::Query, range: EvalRange) -> Result<Evaluated, crate::Error> {
        let limits = QueryLimits::default();
        engine::evaluate(&self.store, &TenantId::default_tenant(), query, range, limits).await
    }

    async fn check_range(
        &self,
        query: &engine::Query,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        expect: &Expectations,
    ) -> Result<(), String> {
        let range = EvalRange {
            start: start_ms,
            end: end_ms,
            step: step_ms,
            lookback: DEFAULT_LOOKBACK_MS,
        };
        let result = self.run(query, range).await;
        let Some(evaluated) = check_error(result, expect)? else {
            return Ok(());
        };
        check_annotations(&evaluated, expect)?;
        if expect.ordered {
            return Err("`expect ordered` with a range query".to_string());
        }
        match &evaluated.value {
            Value::Matrix(series) => compare_matrix(series, expect, start_ms, step_ms),
            other => Err(format!("expected a matrix, got {}", describe(other))),
        }
    }

    async fn check_instant(&self, eval: &Eval, query: &engine::Query, at_ms: i64) -> Result<(), String> {
        let expect = &eval.expect;
        let result = self.run(query, EvalRange::instant(at_ms, DEFAULT_LOOKBACK_MS)).await;
        let Some(evaluated) = check_error(result, expect)? else {
            return Ok(());
        };
        check_annotations(&evaluated, expect)?;
        compare_instant(&evaluated.value, expect)?;
        if expect.fail.is_some() {
            return Ok(());
        }
        let cross_check = expect.range_vector.is_none()
            && expect.string.is_none()
            && !["start()", "end()", "range()", "step()"]
                .iter()
                .any(|f| eval.expr.contains(f));
        if cross_check {
            self.cross_check(query, at_ms, expect)
                .await
                .map_err(|e| format!("as a range query: {e}"))?;
        }
        // The same expectations hold with every selector pinned to the eval time.
        if !uses_time_functions(query.expr()) {
            let mut pinned_expr = query.expr().clone();
            pin_at(&mut pinned_expr, at_ms);
            // Prometheus runs the changed tree printed. Its positions are
            // the original text's: a script's exact position holds for both
            // in Prometheus, and promql-parser prints differently (`Inf` for
            // `+Inf`), so printing here would move them.
            let pinned = query.with_modifiers_changed(pinned_expr);
            let times: Vec<i64> = if at_ms == 0 {
                vec![-1000, 0, 1000]
            } else {
                vec![-10 * at_ms, 0, at_ms / 5, at_ms, 10 * at_ms]
            };
            for time in times {
                let result = self.run(&pinned, EvalRange::instant(time, DEFAULT_LOOKBACK_MS)).await;
                let context = |e: String| format!("with @ {} evaluated at {}: {e}", at_ms as f64 / 1000.0, time);
                let evaluated = check_error(result, expect)
                    .map_err(context)?
                    .ok_or_else(|| context("no result".into()))?;
                check_annotations(&evaluated, expect).map_err(context)?;
                compare_instant(&evaluated.value, expect).map_err(context)?;
                if cross_check {
                    self.cross_check(&pinned, time, expect).await.map_err(context)?;
                }
            }
        }
        Ok(())
    }

    /// Runs `query` as a range query from `time`−1m to `time`+1m and compares
    /// the points at `time` with the instant expectations.
    async fn cross_check(&self, query: &engine::Query, time: i64, expect: &Expectations) -> Result<(), String> {
        let range = EvalRange {
            start: time - 60_000,
            end: time + 60_000,
            step: 60_000,
            lookback: DEFAULT_LOOKBACK_MS,
        };
        let evaluated = self
            .run(query, range)
            .await
            .map_err(|e| format!("unexpected error: {}", e.message))?;
        let Value::Matrix(series) = &evaluated.value else {
            return Err(format!("expected a matrix, got {}", describe(&evaluated.value)));
        };
        if series.windows(2).any(|w| w[0].labels > w[1].labels) {
            return Err("range result is not sorted by labels".to_string());
        }
        if expect.ordered {
            return Ok(());
        }
        let mut at_time: Vec<(Labels, Got)> = Vec::new();
        for s in series {
            if let Some(p) = s.samples.iter().find(|p| p.timestamp == time) {
                at_time.push((s.labels.clone(), Got::Float(p.value)));
            } else if let Some(h) = s.histograms.iter().find(|h| h.timestamp == time) {
                at_time.push((s.labels.clone(), Got::Histogram(&h.histogram)));
            }
        }
        if let Some(scalar) = expect.scalar {
            return match at_time.first() {
                Some((_, Got::Float(v))) if at_time.len() == 1 && float_equal(scalar, *v) => Ok(()),
                _ => Err(format!("expected scalar {scalar}, got {at_time:?}")),
            };
        }
        compare_vector(&at_time, expect)
    }
}

/// Handles an expected or unexpected error; `Ok(None)` when the expected
/// failure happened (nothing more to compare).
fn check_error(result: Result<Evaluated, crate::Error>, expect: &Expectations) -> Result<Option<Evaluated>, String> {
    match (result, &expect.fail) {
        (Ok(_), Some(_)) => Err("expected the query to fail, it succeeded".to_string()),
        (Ok(evaluated), None) => Ok(Some(evaluated)),
        (Err(e), None) => Err(format!("unexpected error: {}", e.message)),
        (Err(e), Some(expected)) => {
            if text_matches(expected, &e.message)? {
                Ok(None)
            } else {
                Err(format!("expected error {expected:?}, got {:?}", e.message))
            }
        }
    }
}

fn text_matches(expected: &TextMatch, text: &str) -> Result<bool, String> {
    Ok(match expected {
        TextMatch::Any => true,
        TextMatch::Exact(exact) => exact == text,
        TextMatch::Regex(pattern) => regex::Regex::new(pattern)
            .map_err(|e| format!("bad regex {pattern:?}: {e}"))?
            .is_match(text),
    })
}

fn check_annotations(evaluated: &Evaluated, expect: &Expectations) -> Result<(), String> {
    let kinds = [
        (
            "warning",
            &evaluated.annotations.warnings,
            &expect.warn,
            expect.no_warn,
            expect.some_warn,
        ),
        (
            "info",
            &evaluated.annotations.infos,
            &expect.info,
            expect.no_info,
            expect.some_info,
        ),
    ];
    for (kind, got, expected, none, some) in kinds {
        if none && !got.is_empty() {
            return Err(format!("expected no {kind}, got {got:?}"));
        }
        if some && got.is_empty() {
            return Err(format!("expected a {kind}, got none"));
        }
        if expected.is_empty() {
            continue;
        }
        for line in expected {
            let mut matched = false;
            for text in got.iter() {
                matched |= text_matches(line, text)?;
            }
            if !matched {
                return Err(format!("expected {kind} {line:?}, got {got:?}"));
            }
        }
        for text in got.iter() {
            let mut matched = false;
            for line in expected {
                matched |= text_matches(line, text)?;
            }
            if !matched {
                return Err(format!("unexpected {kind} {text:?}"));
            }
        }
    }
    Ok(())
}

fn compare_instant(value: &Value, expect: &Expectations) -> Result<(), String> {
    if let Some(expected) = &expect.string {
        return match value {
            Value::String { value, .. } if value == expected => Ok(()),
            other => Err(format!("expected string {expected:?}, got {}", describe(other))),
        };
    }
    if let Some(expected) = expect.scalar {
        return match value {
            Value::Scalar { value, .. } if float_equal(expected, *value) => Ok(()),
            other => Err(format!("expected scalar {expected}, got {}", describe(other))),
        };
    }
    match value {
        Value::Vector {
            samples, histograms, ..
        } => {
            if expect.range_vector.is_some() {
                return Err(format!("expected a range vector, got {}", describe(value)));
            }
            let got: Vec<(Labels, Got)> = samples
                .iter()
                .map(|(l, v)| (l.clone(), Got::Float(*v)))
                .chain(histograms.iter().map(|(l, h)| (l.clone(), Got::Histogram(h))))
                .collect();
            compare_vector(&got, expect)
        }
        Value::Matrix(series) => match expect.range_vector {
            Some((start, _, step)) => compare_matrix(series, expect, start, step),
            None => Err(format!("expected a vector, got {}", describe(value))),
        },
        other => Err(format!("expected a vector, got {}", describe(other))),
    }
}

/// A result value under comparison.
#[derive(Debug, Clone, Copy)]
enum Got<'a> {
    Float(f64),
    Histogram(&'a FloatHistogram),
}

impl std::fmt::Display for Got<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Got::Float(v) => write!(f, "{v}"),
            Got::Histogram(h) => write!(f, "{}", histogram_text(h)),
        }
    }
}

/// Whether a result value is the expected one (FORMAT.md §8.3).
fn value_matches(want: Option<&Val>, got: Got<'_>) -> bool {
    match (want, got) {
        (Some(Val::Float(w)), Got::Float(g)) => float_equal(*w, g),
        (Some(Val::Histogram(w)), Got::Histogram(g)) => histogram_equal(w, g),
        (None, Got::Float(g)) => g.is_nan(),
        _ => false,
    }
}

fn compare_vector(samples: &[(Labels, Got<'_>)], expect: &Expectations) -> Result<(), String> {
    let expected: HashMap<&Labels, (usize, Option<&Val>)> = expect
        .series
        .iter()
        .enumerate()
        .map(|(i, (labels, values))| (labels, (i, values.first().and_then(|v| v.as_ref()))))
        .collect();
    for (position, (labels, value)) in samples.iter().enumerate() {
        let Some(&(index, want)) = expected.get(labels) else {
            return Err(format!(
                "unexpected series {labels} {value} (expected {})",
                expected_text(expect)
            ));
        };
        if expect.ordered && index != position {
            return Err(format!(
                "{labels} at position {}, expected at {}",
                position + 1,
                index + 1
            ));
        }
        if !value_matches(want, *value) {
            return Err(format!("{labels}: expected {}, got {value}", val_text(want)));
        }
    }
    if samples.len() != expect.series.len() {
        let got: Vec<&Labels> = samples.iter().map(|(l, _)| l).collect();
        return Err(format!(
            "expected {} series ({}), got {} ({got:?})",
            expect.series.len(),
            expected_text(expect),
            samples.len()
        ));
    }
    Ok(())
}

fn compare_matrix(series: &[SeriesSamples], expect: &Expectations, start: i64, step: i64) -> Result<(), String> {
    if series.windows(2).any(|w| w[0].labels > w[1].labels) {
        return Err("matrix is not sorted by labels".to_string());
    }
    let expected: HashMap<&Labels, &Values> = expect.series.iter().map(|(l, v)| (l, v)).collect();
    for entry in series {
        let Some(values) = expected.get(&entry.labels) else {
            return Err(format!(
                "unexpected series {} (expected {})",
                entry.labels,
                expected_text(expect)
            ));
        };
        let wanted: Vec<(i64, &Val)> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().map(|v| (start + i as i64 * step, v)))
            .collect();
        let mut got: Vec<(i64, Got)> = entry
            .samples
            .iter()
            .map(|s| (s.timestamp, Got::Float(s.value)))
            .chain(
                entry
                    .histograms
                    .iter()
                    .map(|h| (h.timestamp, Got::Histogram(&h.histogram))),
            )
            .collect();
        got.sort_by_key(|(t, _)| *t);
        let float_count = |list: &[(i64, &Val)]| list.iter().filter(|(_, v)| matches!(v, Val::Float(_))).count();
        let matches = wanted.len() == got.len()
            && float_count(&wanted) == entry.samples.len()
            && wanted
                .iter()
                .zip(&got)
                .all(|((wt, wv), (gt, gv))| wt == gt && value_matches(Some(wv), *gv));
        if !matches {
            let wanted_text: Vec<String> = wanted
                .iter()
                .map(|(t, v)| format!("{}@{}", val_text(Some(v)), *t as f64 / 1000.0))
                .collect();
            let got_text: Vec<String> = got.iter().map(|(t, v)| format!("{v}@{}", *t as f64 / 1000.0)).collect();
            return Err(format!(
                "{}: expected [{}], got [{}]",
                entry.labels,
                wanted_text.join(" "),
                got_text.join(" ")
            ));
        }
    }
    if series.len() != expect.series.len() {
        let got: Vec<&Labels> = series.iter().map(|s| &s.labels).collect();
        return Err(format!(
            "expected {} series ({}), got {} ({got:?})",
            expect.series.len(),
            expected_text(expect),
            series.len()
        ));
    }
    Ok(())
}

fn val_text(value: Option<&Val>) -> String {
    match value {
        None => "nothing".to_string(),
        Some(Val::Float(v)) => v.to_string(),
        Some(Val::Histogram(h)) => histogram_text(&h.h),
    }
}

/// A histogram in the scripts' literal notation (absolute bucket counts).
fn histogram_text(h: &FloatHistogram) -> String {
    let list = |buckets: &[tidewatch_model::histogram::Bucket]| {
        let counts: Vec<String> = buckets.iter().map(|b| format!("{}:{}", b.index, b.count)).collect();
        counts.join(" ")
    };
    let mut text = format!(
        "{{{{schema:{} count:{} sum:{} z_bucket:{} z_bucket_w:{} buckets:[{}] n_buckets:[{}] counter_reset_hint:{:?}",
        h.schema,
        h.count,
        h.sum,
        h.zero_count,
        h.zero_threshold,
        list(&h.positive),
        list(&h.negative),
        h.counter_reset_hint
    );
    if h.uses_custom_buckets() {
        let _ = write!(text, " custom_values:{:?}", &h.custom_values[..]);
    }
    text.push_str("}}");
    text
}

/// The harness' histogram equality: both compacted, then fields compared
/// with the float rule (the zero threshold exactly), the hint only when the
/// expectation spells it out.
fn histogram_equal(want: &HistogramValue, got: &FloatHistogram) -> bool {
    let (mut w, mut g) = (want.h.clone(), got.clone());
    hist::compact(&mut w);
    hist::compact(&mut g);
    let buckets_equal = |a: &[tidewatch_model::histogram::Bucket], b: &[tidewatch_model::histogram::Bucket]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.index == y.index && float_equal(x.count, y.count))
    };
    w.schema == g.schema
        && float_equal(w.count, g.count)
        && float_equal(w.sum, g.sum)
        && (!w.uses_custom_buckets() || w.custom_values[..] == g.custom_values[..])
        && w.zero_threshold == g.zero_threshold
        && float_equal(w.zero_count, g.zero_count)
        && buckets_equal(&w.positive, &g.positive)
        && buckets_equal(&w.negative, &g.negative)
        && (!want.hint_given || w.counter_reset_hint == g.counter_reset_hint)
}

fn same_value(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Float(x), Val::Float(y)) => x.to_bits() == y.to_bits(),
        (Val::Histogram(x), Val::Histogram(y)) => x.h == y.h,
        _ => false,
    }
}

/// The counter-reset hints Prometheus' TSDB hands back for stored
/// histograms: a gauge stays a gauge; in a counter series, a histogram that
/// continues the previous one (no reset, no float in between, same layout
/// basics) reads as "not a reset", any other as "unknown" (its chunk starts
/// there, and TSDB does not trust a chunk's first hint, prometheus#15346).
fn stored_hints(entry: &mut SeriesSamples) {
    let mut previous: Option<FloatHistogram> = None;
    let mut floats = entry.samples.iter().map(|s| s.timestamp).peekable();
    let mut last_time = i64::MIN;
    for sample in &mut entry.histograms {
        let float_between = {
            let mut between = false;
            while let Some(&t) = floats.peek() {
                if t >= sample.timestamp {
                    break;
                }
                between |= t > last_time;
                floats.next();
            }
            between
        };
        last_time = sample.timestamp;
        let h = &mut sample.histogram;
        let original = h.clone();
        if h.counter_reset_hint != CounterResetHint::Gauge {
            let continues = match &previous {
                Some(prev) => {
                    !float_between
                        && prev.counter_reset_hint != CounterResetHint::Gauge
                        && prev.schema == h.schema
                        && prev.zero_threshold == h.zero_threshold
                        && prev.custom_values[..] == h.custom_values[..]
                        && !hist::detect_reset(h, prev)
                }
                None => false,
            };
            h.counter_reset_hint = if continues {
                CounterResetHint::NotCounterReset
            } else {
                CounterResetHint::Unknown
            };
        }
        previous = Some(original);
    }
}

fn expected_text(expect: &Expectations) -> String {
    let labels: Vec<String> = expect.series.iter().map(|(l, _)| l.to_string()).collect();
    labels.join(", ")
}

fn describe(value: &Value) -> String {
    match value {
        Value::Vector {
            samples, histograms, ..
        } => format!(
            "vector of {} ({samples:?}, {} histograms)",
            samples.len() + histograms.len(),
            histograms.len()
        ),
        Value::Matrix(series) => format!("matrix of {} series", series.len()),
        Value::Scalar { value, .. } => format!("scalar {value}"),
        Value::String { value, .. } => format!("string {value:?}"),
    }
}

/// The harness' float equality: staleness markers only equal each other,
/// NaN equals NaN, otherwise a relative tolerance of 1e-6.
pub fn float_equal(expected: f64, got: f64) -> bool {
    if is_stale_nan(expected) || is_stale_nan(got) {
        return is_stale_nan(expected) && is_stale_nan(got);
    }
    if expected.is_nan() && got.is_nan() {
        return true;
    }
    crate::engine::almost_equal(expected, got, 1e-6)
}

/// Functions whose value depends on the evaluation time: their `@` variants
/// would legitimately differ.
fn uses_time_functions(expr: &Expr) -> bool {
    const TIME_FUNCTIONS: [&str; 15] = [
        "time",
        "timestamp",
        "predict_linear",
        "start",
        "end",
        "range",
        "step",
        "minute",
        "hour",
        "day_of_week",
        "day_of_month",
        "day_of_year",
        "days_in_month",
        "month",
        "year",
    ];
    match expr {
        Expr::Call(call) => {
            TIME_FUNCTIONS.contains(&call.func.name) || call.args.args.iter().any(|a| uses_time_functions(a))
        }
        Expr::Aggregate(a) => uses_time_functions(&a.expr) || a.param.as_deref().is_some_and(uses_time_functions),
        Expr::Binary(b) => uses_time_functions(&b.lhs) || uses_time_functions(&b.rhs),
        Expr::Paren(p) => uses_time_functions(&p.expr),
        Expr::Unary(u) => uses_time_functions(&u.expr),
        Expr::Subquery(s) => uses_time_functions(&s.expr),
        _ => false,
    }
}

/// Adds `@ at_ms` to every selector and subquery that has none, leaving the
/// inside of every subquery alone.
fn pin_at(expr: &mut Expr, at_ms: i64) {
    let at = || {
        let time = if at_ms >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms as u64)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_millis(at_ms.unsigned_abs())
        };
        Some(AtModifier::At(time))
    };
    match expr {
        Expr::VectorSelector(vs) if vs.at.is_none() => vs.at = at(),
        Expr::MatrixSelector(ms) if ms.vs.at.is_none() => ms.vs.at = at(),
        // A subquery gets the `@` itself; its inside stays relative to the
        // subquery's own steps (as Prometheus' harness rewrites it).
        Expr::Subquery(sq) if sq.at.is_none() => sq.at = at(),
        Expr::Call(call) => call.args.args.iter_mut().for_each(|a| pin_at(a, at_ms)),
        Expr::Aggregate(a) => {
            pin_at(&mut a.expr, at_ms);
            if let Some(param) = a.param.as_mut() {
                pin_at(param, at_ms);
            }
        }
        Expr::Binary(b) => {
            pin_at(&mut b.lhs, at_ms);
            pin_at(&mut b.rhs, at_ms);
        }
        Expr::Paren(p) => pin_at(&mut p.expr, at_ms),
        Expr::Unary(u) => pin_at(&mut u.expr, at_ms),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_equality_follows_the_harness() {
        assert!(float_equal(1.0, 1.0 + 1e-9));
        assert!(!float_equal(1.0, 1.001));
        assert!(float_equal(f64::NAN, f64::NAN));
        assert!(!float_equal(tidewatch_model::stale_nan(), f64::NAN));
        assert!(float_equal(tidewatch_model::stale_nan(), tidewatch_model::stale_nan()));
        assert!(!float_equal(0.0, 1e-300));
        assert!(float_equal(f64::INFINITY, f64::INFINITY));
        assert!(!float_equal(f64::INFINITY, f64::NEG_INFINITY));
    }

    #[tokio::test]
    async fn a_script_passes_and_fails_where_it_should() {
        let script = "load 1m\n  m{job=\"a\"} 0+1x10\n  m{job=\"b\"} 5x10\n\n\
eval instant at 5m sum(m)\n  {} 10\n\n\
eval instant at 5m m\n  m{job=\"a\"} 5\n  m{job=\"b\"} 6\n\n\
eval range from 0 to 2m step 1m m{job=\"a\"}\n  m{job=\"a\"} 0 1 2\n\n\
eval instant at 0m m +\n\n";
        let report = run_script("inline", script).await;
        let outcomes: Vec<&Outcome> = report.statements.iter().map(|s| &s.outcome).collect();
        assert_eq!(outcomes[0], &Outcome::Passed, "{report:?}");
        assert!(
            matches!(outcomes[1], Outcome::Failed(m) if m.contains("expected 6, got 5")),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[2], &Outcome::Passed);
        assert!(matches!(outcomes[3], Outcome::Skipped(_)));
        assert_eq!(report.summary(), "2 passed, 1 failed, 1 skipped");
    }
}
