//! Running a log query's pipeline over entries as they arrive, for
//! `/loki/api/v1/tail`: the same stages, label rules and line rewriting as a
//! `query_range`, applied one pushed stream at a time.

use tidewatch_model::logs::{LogEntry, LogStream};
use tidewatch_model::seam::matches_all;
use tidewatch_model::{Labels, Matcher};

use super::ast::{Expr, LogExpr};
use super::eval::StreamResult;
use super::pipeline::{LabelState, Pipeline};
use crate::error::Error;

/// A compiled log query that filters and rewrites live entries.
#[derive(Debug)]
pub struct LiveFilter {
    log: LogExpr,
    pipeline: Pipeline,
}

impl LiveFilter {
    /// Compiles a log query (`{…} | …`); metric queries cannot be tailed.
    pub fn compile(expr: &Expr, now: i64) -> Result<LiveFilter, Error> {
        let Expr::Log(log) = expr else {
            return Err(Error::bad_data("only log queries can be tailed, not metric queries"));
        };
        Ok(LiveFilter {
            pipeline: Pipeline::compile(log, now)?,
            log: log.clone(),
        })
    }

    /// The stream selector's matchers.
    pub fn matchers(&self) -> &[Matcher] {
        &self.log.matchers
    }

    /// The log expression, for reading history with [`super::evaluate`].
    pub fn log(&self) -> &LogExpr {
        &self.log
    }

    /// The entries of `stream` the query keeps, grouped by their final labels
    /// (in arrival order within each group).
    pub fn apply(&self, stream: &LogStream) -> Vec<StreamResult> {
        if !matches_all(&stream.labels, &self.log.matchers) {
            return Vec::new();
        }
        let mut out: Vec<StreamResult> = Vec::new();
        for entry in &stream.entries {
            // Filters storage would have answered are checked here.
            if !self
                .pipeline
                .line_contains()
                .iter()
                .all(|needle| entry.line.contains(needle.as_str()))
            {
                continue;
            }
            let mut state = LabelState::new(&stream.labels, &entry.structured_metadata);
            let Some(line) = self.pipeline.process(entry.timestamp, &entry.line, &mut state) else {
                continue;
            };
            let labels: Labels = state.labels();
            let kept = LogEntry {
                timestamp: entry.timestamp,
                line: line.into_owned(),
                structured_metadata: entry.structured_metadata.clone(),
            };
            match out.iter_mut().find(|r| r.labels == labels) {
                Some(group) => group.entries.push(kept),
                None => out.push(StreamResult {
                    labels,
                    entries: vec![kept],
                }),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logql::parse;

    fn stream(lines: &[(i64, &str)]) -> LogStream {
        LogStream {
            labels: Labels::from_pairs([("app", "api")]),
            entries: lines.iter().map(|&(t, l)| LogEntry::new(t, l)).collect(),
        }
    }

    #[test]
    fn filters_parses_and_rewrites_like_a_query() {
        let expr = parse(r#"{app="api"} |= "GET" | logfmt | status >= 500 | line_format "{{.path}}""#).unwrap();
        let filter = LiveFilter::compile(&expr, 0).unwrap();
        let got = filter.apply(&stream(&[
            (1, "method=GET path=/a status=500"),
            (2, "method=POST path=/b status=500"),
            (3, "method=GET path=/c status=200"),
            (4, "method=GET path=/d status=503"),
        ]));
        assert_eq!(got.len(), 2, "two label sets: status 500 and 503");
        let lines: Vec<(&str, i64, &str)> = got
            .iter()
            .flat_map(|r| {
                r.entries
                    .iter()
                    .map(|e| (r.labels.get("status").unwrap(), e.timestamp, e.line.as_str()))
            })
            .collect();
        assert_eq!(lines, vec![("500", 1, "/a"), ("503", 4, "/d")]);
        let other = LogStream {
            labels: Labels::from_pairs([("app", "db")]),
            entries: vec![LogEntry::new(1, "method=GET status=500")],
        };
        assert!(filter.apply(&other).is_empty(), "the selector applies too");
        assert!(LiveFilter::compile(&parse(r#"count_over_time({app="api"}[1m])"#).unwrap(), 0).is_err());
    }
}
