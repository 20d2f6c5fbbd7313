//! A runner for Loki's `logqltest` scripts: loads their streams into an
//! in-memory [`LogRead`] store, evaluates every `eval` through [`logql::evaluate`] and
//! compares the result as Loki's harness does — series as a set of label
//! sets (positionally under `expect ordered`), one value per step, floats
//! equal within 1e-9 (absolute or relative), errors by substring or regex.
//!
//! Outcomes are reported with the same types as the promqltest runner.
//!
//! The store is [`ScriptStore`] rather than model's `MemLogStore`: the
//! scripts load entries of one stream that differ only by structured
//! metadata (same timestamp and line) and expect each to count, while
//! `MemLogStore` identifies an entry by (timestamp, line) and keeps one.

mod script;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Mutex;

use tidewatch_model::logs::{Direction, LogEntry, LogRead, LogSelect, LogStream, NsRange};
use tidewatch_model::seam::matches_all;
use tidewatch_model::{Labels, Matcher, TenantId};

pub use crate::promqltest::{Outcome, Report, Statement};

use crate::logql::{self, LogQueryParams, LogQueryResult};
use script::{Command, Eval, EvalTime, Expectation, FailMatch, LoadLine};

/// One `eval` of a script, as written: for tests of the parser alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptQuery {
    /// 1-based line of the `eval`.
    pub line: usize,
    pub query: String,
    /// `None` unless the eval expects a failure; then the message it must
    /// contain, if the script names one (`expect fail msg: …`).
    pub expect_fail: Option<Option<String>>,
}

/// The `eval` queries of a script, read by the runner's own script reader.
pub fn script_queries(text: &str) -> Vec<ScriptQuery> {
    script::parse(text)
        .into_iter()
        .filter_map(|command| match command {
            Command::Eval(eval) => Some(ScriptQuery {
                line: eval.line,
                expect_fail: match &eval.expect {
                    Expectation::Fail(FailMatch::Contains(message)) => Some(Some(message.clone())),
                    Expectation::Fail(_) => Some(None),
                    _ => None,
                },
                query: eval.query,
            }),
            _ => None,
        })
        .collect()
}

/// Runs one script; `name` labels its statements.
pub async fn run_script(name: &str, text: &str) -> Report {
    let mut runner = Runner {
        file: name.to_string(),
        store: ScriptStore::default(),
        blocked: None,
        statements: Vec::new(),
    };
    for command in script::parse(text) {
        runner.command(command).await;
    }
    Report {
        statements: runner.statements,
    }
}

struct Runner {
    file: String,
    store: ScriptStore,
    /// Why evals cannot run until the next `clear` (a load failed).
    blocked: Option<String>,
    statements: Vec<Statement>,
}

impl Runner {
    async fn command(&mut self, command: Command) {
        match command {
            Command::Clear => {
                self.store = ScriptStore::default();
                self.blocked = None;
            }
            Command::Invalid { line, message } => {
                self.statements.push(Statement {
                    file: self.file.clone(),
                    line,
                    expr: String::new(),
                    outcome: Outcome::Failed(format!("script error: {message}")),
                });
                self.blocked
                    .get_or_insert(format!("an earlier script error (line {line})"));
            }
            Command::Load(lines) => {
                self.load(lines);
            }
            Command::Eval(eval) => {
                let outcome = match &self.blocked {
                    Some(why) => Outcome::Failed(format!("not run: {why}")),
                    None => self.eval(&eval).await,
                };
                self.statements.push(Statement {
                    file: self.file.clone(),
                    line: eval.line,
                    expr: eval.query.clone(),
                    outcome,
                });
            }
        }
    }

    fn load(&mut self, lines: Vec<LoadLine>) {
        for line in lines {
            for i in 0..line.count {
                self.store.add(
                    &line.stream,
                    LogEntry {
                        timestamp: line.start + line.every * i as i64,
                        line: line.text.replace("{{.i}}", &i.to_string()),
                        structured_metadata: line.metadata.clone(),
                    },
                );
            }
        }
    }

    async fn eval(&self, eval: &Eval) -> Outcome {
        let params = match eval.time {
            EvalTime::Instant(time) => LogQueryParams::instant(time, Direction::Backward, 1000),
            EvalTime::Range { start, end, step } => LogQueryParams::range(start, end, step, Direction::Backward, 1000),
        };
        let result = match logql::parse(&eval.query) {
            Ok(expr) => logql::evaluate(&self.store, &TenantId::default_tenant(), &expr, &params)
                .await
                .map_err(|e| e.message),
            Err(error) => Err(error.to_string()),
        };
        match (&eval.expect, result) {
            (Expectation::Fail(matcher), Err(message)) => check_error(matcher, &message),
            (Expectation::Fail(_), Ok(result)) => {
                Outcome::Failed(format!("expected an error, got {}", describe(&result, eval.time)))
            }
            (_, Err(message)) => Outcome::Failed(format!("unexpected error: {message}")),
            (Expectation::Scalar(expected), Ok(LogQueryResult::Scalar { value, .. })) => {
                if float_equal(*expected, value) {
                    Outcome::Passed
                } else {
                    Outcome::Failed(format!("expected scalar {expected}, got scalar {value}"))
                }
            }
            (Expectation::Scalar(expected), Ok(result)) => Outcome::Failed(format!(
                "expected scalar {expected}, got {}",
                describe(&result, eval.time)
            )),
            (Expectation::Empty, Ok(result)) => {
                let got = series_of(&result, eval.time);
                match got {
                    Ok(series) if series.is_empty() => Outcome::Passed,
                    _ => Outcome::Failed(format!("expected no series, got {}", describe(&result, eval.time))),
                }
            }
            (Expectation::Series(expected), Ok(result)) => match series_of(&result, eval.time) {
                Err(message) => Outcome::Failed(message),
                Ok(got) => compare_series(
                    expected,
                    &got,
                    eval.ordered && matches!(eval.time, EvalTime::Instant(_)),
                )
                .map_or(Outcome::Passed, |message| {
                    Outcome::Failed(format!(
                        "{message}\n     expected:\n{}     got:\n{}",
                        render(expected),
                        render(&got).trim_end()
                    ))
                }),
            },
        }
    }
}

/// The scripts' streams: every loaded entry is kept, even one that differs
/// from another only by its structured metadata (see the module docs).
#[derive(Debug, Default)]
struct ScriptStore {
    streams: Mutex<BTreeMap<Labels, Vec<LogEntry>>>,
}

impl ScriptStore {
    fn add(&self, stream: &Labels, entry: LogEntry) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let entries = streams.entry(stream.clone()).or_default();
        let at = entries.partition_point(|e| (e.timestamp, &e.line) <= (entry.timestamp, &entry.line));
        entries.insert(at, entry);
    }

    fn select(&self, select: &LogSelect) -> Vec<LogStream> {
        if select.matchers.is_empty() {
            return Vec::new();
        }
        let streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (labels, entries) in streams.iter() {
            if !matches_all(labels, &select.matchers) {
                continue;
            }
            let entries: Vec<LogEntry> = entries
                .iter()
                .filter(|e| select.range.contains(e.timestamp) && select.line_matches(&e.line))
                .cloned()
                .collect();
            if !entries.is_empty() {
                out.push(LogStream {
                    labels: labels.clone(),
                    entries,
                });
            }
        }
        out
    }
}

impl LogRead for ScriptStore {
    async fn visit_logs<F>(
        &self,
        _tenant: &TenantId,
        select: &LogSelect,
        mut visit: F,
    ) -> Result<(), tidewatch_model::Error>
    where
        F: FnMut(LogStream) -> Result<(), tidewatch_model::Error> + Send,
    {
        for stream in self.select(select) {
            visit(stream)?;
        }
        Ok(())
    }

    async fn log_series(
        &self,
        _tenant: &TenantId,
        matchers: &[Matcher],
        range: NsRange,
    ) -> Result<Vec<Labels>, tidewatch_model::Error> {
        let select = LogSelect::new(matchers.to_vec(), range);
        Ok(self.select(&select).into_iter().map(|s| s.labels).collect())
    }
}

fn check_error(matcher: &FailMatch, message: &str) -> Outcome {
    match matcher {
        FailMatch::Any => Outcome::Passed,
        FailMatch::Contains(text) if message.contains(text.as_str()) => Outcome::Passed,
        FailMatch::Contains(text) => Outcome::Failed(format!("expected an error containing {text:?}, got {message:?}")),
        FailMatch::Regex(pattern) => match regex::Regex::new(pattern) {
            Ok(regex) if regex.is_match(message) => Outcome::Passed,
            Ok(_) => Outcome::Failed(format!("expected an error matching {pattern:?}, got {message:?}")),
            Err(e) => Outcome::Failed(format!("script error: bad regex {pattern:?}: {e}")),
        },
    }
}

type GotSeries = Vec<(Labels, Vec<Option<f64>>)>;

/// The result as series with one optional value per step.
fn series_of(result: &LogQueryResult, time: EvalTime) -> Result<GotSeries, String> {
    match (result, time) {
        (LogQueryResult::Vector(samples), EvalTime::Instant(_)) => Ok(samples
            .iter()
            .map(|s| (s.labels.clone(), vec![Some(s.value)]))
            .collect()),
        (LogQueryResult::Matrix(matrix), EvalTime::Range { start, step, .. }) => {
            let steps = time.steps();
            let mut out = Vec::with_capacity(matrix.len());
            for series in matrix {
                let mut values = vec![None; steps];
                for &(t, v) in &series.points {
                    let offset = t - start;
                    if offset < 0 || offset % step != 0 || (offset / step) as usize >= steps {
                        return Err(format!("a point at {t} is not at a step time"));
                    }
                    values[(offset / step) as usize] = Some(v);
                }
                out.push((series.labels.clone(), values));
            }
            Ok(out)
        }
        (other, _) => Err(format!("expected series, got {}", describe(other, time))),
    }
}

fn compare_series(expected: &GotSeries, got: &GotSeries, ordered: bool) -> Option<String> {
    let mut seen = HashSet::new();
    for (labels, _) in got {
        if !seen.insert(labels) {
            return Some(format!("duplicate series {}", labels_text(labels)));
        }
    }
    if expected.len() != got.len() {
        return Some(format!("expected {} series, got {}", expected.len(), got.len()));
    }
    for (index, (labels, values)) in expected.iter().enumerate() {
        let found = if ordered {
            got.get(index).filter(|(l, _)| l == labels)
        } else {
            got.iter().find(|(l, _)| l == labels)
        };
        let Some((_, got_values)) = found else {
            return Some(if ordered {
                format!("series {index} should be {}", labels_text(labels))
            } else {
                format!("missing series {}", labels_text(labels))
            });
        };
        for (step, (want, have)) in values.iter().zip(got_values).enumerate() {
            let same = match (want, have) {
                (None, None) => true,
                (Some(w), Some(h)) => float_equal(*w, *h),
                _ => false,
            };
            if !same {
                return Some(format!(
                    "{} at step {step}: expected {}, got {}",
                    labels_text(labels),
                    value_text(*want),
                    value_text(*have)
                ));
            }
        }
    }
    None
}

/// The harness' float equality: both NaN, equal (infinities included), or
/// within 1e-9 absolutely or relatively.
pub fn float_equal(expected: f64, got: f64) -> bool {
    if expected.is_nan() || got.is_nan() {
        return expected.is_nan() && got.is_nan();
    }
    if expected == got {
        return true;
    }
    let difference = (expected - got).abs();
    difference <= 1e-9 || difference / expected.abs().max(got.abs()) <= 1e-9
}

fn labels_text(labels: &Labels) -> String {
    let parts: Vec<String> = labels.iter().map(|l| format!("{}={:?}", l.name, l.value)).collect();
    format!("{{{}}}", parts.join(", "))
}

fn value_text(value: Option<f64>) -> String {
    value.map_or_else(|| "_".to_string(), |v| v.to_string())
}

fn render(series: &GotSeries) -> String {
    let mut out = String::new();
    for (labels, values) in series {
        let values: Vec<String> = values.iter().map(|v| value_text(*v)).collect();
        let _ = writeln!(out, "       {} {}", labels_text(labels), values.join(" "));
    }
    if series.is_empty() {
        out.push_str("       (nothing)\n");
    }
    out
}

fn describe(result: &LogQueryResult, time: EvalTime) -> String {
    match result {
        LogQueryResult::Scalar { value, .. } => format!("scalar {value}"),
        LogQueryResult::Streams(streams) => format!("{} streams", streams.len()),
        other => match series_of(other, time) {
            Ok(series) => format!("{} series:\n{}", series.len(), render(&series)),
            Err(message) => message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_compare_with_the_harness_tolerance() {
        assert!(float_equal(f64::NAN, f64::NAN));
        assert!(float_equal(f64::INFINITY, f64::INFINITY));
        assert!(!float_equal(f64::INFINITY, f64::NEG_INFINITY));
        assert!(float_equal(1.0, 1.0 + 1e-12));
        assert!(float_equal(1e12, 1e12 + 1.0));
        assert!(!float_equal(1.0, 1.001));
        assert!(!float_equal(0.0, f64::NAN));
    }

    #[tokio::test]
    async fn a_small_script_passes_and_a_wrong_expectation_fails() {
        let script = r#"
load
  {app="a"} "level=info n={{.i}}" @ 10s [repeat every 10s for 6]

eval instant at 60s count_over_time({app="a"} | logfmt | n > 2 [1m])
  {app="a", level="info", n="3"} 1
  {app="a", level="info", n="4"} 1
  {app="a", level="info", n="5"} 1
eval range from 30s to 60s step 30s sum(count_over_time({app="a"}[30s]))
  {} 3 3
eval instant at 60s sum(count_over_time({app="a"}[1m]))
  {} 7
eval instant at 60s count_over_time({app="a"} | json [1m])
  expect fail msg: JSONParserErr
"#;
        let report = run_script("t.logqltest", script).await;
        let outcomes: Vec<&Outcome> = report.statements.iter().map(|s| &s.outcome).collect();
        assert_eq!(outcomes[0], &Outcome::Passed);
        assert_eq!(outcomes[1], &Outcome::Passed);
        assert!(matches!(outcomes[2], Outcome::Failed(_)));
        assert_eq!(outcomes[3], &Outcome::Passed);
        assert_eq!(report.summary(), "3 passed, 1 failed");
    }
}
