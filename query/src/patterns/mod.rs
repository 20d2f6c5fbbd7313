//! Log patterns, as Loki's `/loki/api/v1/patterns` answers them for
//! Grafana's Logs Drilldown: the shapes the selected lines take (`level=info
//! msg="user <_> logged in"`), each with its level and its line count per
//! step.
//!
//! Loki learns patterns as lines arrive, in a pattern ingester that keeps a
//! [`Drain`](drain::Drain) per stream and level for the last few hours.
//! Tidewatch has no such ingester: a request runs the same Drain, with
//! Loki's settings and tokenizers, over the selected streams' lines in its
//! range ([`PatternDetector`]). Everything after that is Loki's querier:
//! the per-stream patterns are merged by (level, pattern) with counts summed
//! per step, patterns with fewer than [`MIN_PATTERN_LINES`] lines are dropped
//! and at most [`MAX_PATTERNS`] are kept, most lines first.

mod drain;
mod level;
mod raw_json;
mod tokenize;

use std::collections::{BTreeMap, HashMap};

use tidewatch_model::logs::{LogStream, NsRange, TimestampNs};

use drain::{Drain, DrainConfig, for_range};
use tokenize::{Tokenizer, detect_format};

/// Patterns with fewer lines in the range are left out (Loki's `minClusterSize`).
pub const MIN_PATTERN_LINES: i64 = 30;
/// Most patterns answered (Loki's `maxPatterns`).
pub const MAX_PATTERNS: usize = 300;

const NS_PER_MS: i64 = 1_000_000;

/// The time frame of a patterns request, in Loki's units: ms, with the step
/// no finer than the 10 s the counts are kept at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternRange {
    /// Start, ms (inclusive).
    pub from_ms: i64,
    /// End, ms (exclusive, except for a chunk's last sample; see Loki's `Chunk.ForRange`).
    pub through_ms: i64,
    pub step_ms: i64,
}

impl PatternRange {
    /// The range of a request's `start`, `end` and `step`, in ns, rounded as
    /// Loki rounds them (start down, end up to the ms; step down to the ms
    /// and at least the sample interval).
    pub fn new(start: TimestampNs, end: TimestampNs, step_ns: i64) -> Self {
        let from_ms = start.div_euclid(NS_PER_MS);
        let mut through_ms = end.div_euclid(NS_PER_MS);
        if end.rem_euclid(NS_PER_MS) != 0 {
            through_ms += 1;
        }
        let sample_interval = DrainConfig::default().sample_interval_ms;
        PatternRange {
            from_ms,
            through_ms,
            step_ms: (step_ns / NS_PER_MS).max(sample_interval),
        }
    }

    /// The entries whose counts can land in the range: those in the sample
    /// intervals from the first at or after `from` to the one holding `through`.
    pub fn entries(&self) -> NsRange {
        let interval = DrainConfig::default().sample_interval_ms;
        let first = self.from_ms.div_euclid(interval) + i64::from(self.from_ms.rem_euclid(interval) != 0);
        let last = self.through_ms.div_euclid(interval);
        NsRange::new(
            first.saturating_mul(interval).saturating_mul(NS_PER_MS),
            last.saturating_add(1)
                .saturating_mul(interval)
                .saturating_mul(NS_PER_MS)
                .saturating_sub(1),
        )
    }
}

/// One pattern of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternSeries {
    pub pattern: String,
    /// One of Loki's levels (`info`, `error`, …, `unknown`).
    pub level: &'static str,
    /// (step start in ms, lines), ascending; steps between two counted
    /// ones within an hour's chunk are present with 0, as in Loki.
    pub samples: Vec<(i64, i64)>,
}

impl PatternSeries {
    /// Lines over the whole range.
    pub fn total(&self) -> i64 {
        self.samples.iter().map(|(_, count)| count).sum()
    }
}

/// Runs Drain over streams one at a time and gathers their patterns.
#[derive(Debug)]
pub struct PatternDetector {
    range: PatternRange,
    config: DrainConfig,
    /// (level, pattern) → step start → lines.
    series: HashMap<(&'static str, String), BTreeMap<i64, i64>>,
}

impl PatternDetector {
    pub fn new(range: PatternRange) -> Self {
        PatternDetector {
            range,
            config: DrainConfig::default(),
            series: HashMap::new(),
        }
    }

    /// Learns one stream's entries (ascending by time, as [`LogRead`] hands
    /// them out): its format from its first line, a Drain per level.
    ///
    /// [`LogRead`]: tidewatch_model::logs::LogRead
    pub fn add_stream(&mut self, stream: &LogStream) {
        let Some(first) = stream.entries.first() else {
            return;
        };
        let tokenizer = Tokenizer::new(detect_format(&first.line));
        let mut drains: Vec<(&'static str, Drain)> = Vec::new();
        for entry in &stream.entries {
            let level = level::entry_level(&stream.labels, &entry.structured_metadata, &entry.line);
            let at = match drains.iter().position(|(l, _)| *l == level) {
                Some(at) => at,
                None => {
                    drains.push((level, Drain::new(self.config.clone(), tokenizer)));
                    drains.len() - 1
                }
            };
            drains[at].1.train(&entry.line, entry.timestamp);
        }
        let range = self.range;
        let interval = self.config.sample_interval_ms;
        for (level, drain) in &drains {
            for (pattern, cluster) in drain.patterns() {
                let mut samples = Vec::new();
                for chunk in cluster.chunks() {
                    samples.extend(for_range(
                        chunk,
                        range.from_ms,
                        range.through_ms,
                        range.step_ms,
                        interval,
                    ));
                }
                if samples.is_empty() {
                    continue;
                }
                let counts = self.series.entry((level, pattern)).or_default();
                for sample in samples {
                    *counts.entry(sample.timestamp_ms).or_default() += sample.count;
                }
            }
        }
    }

    /// The patterns with at least [`MIN_PATTERN_LINES`] lines, most lines
    /// first (then by pattern and level), at most [`MAX_PATTERNS`].
    pub fn finish(self) -> Vec<PatternSeries> {
        let mut all: Vec<PatternSeries> = self
            .series
            .into_iter()
            .map(|((level, pattern), counts)| PatternSeries {
                pattern,
                level,
                samples: counts.into_iter().collect(),
            })
            .filter(|series| series.total() >= MIN_PATTERN_LINES)
            .collect();
        all.sort_by(|a, b| {
            b.total()
                .cmp(&a.total())
                .then_with(|| a.pattern.cmp(&b.pattern))
                .then_with(|| a.level.cmp(b.level))
        });
        all.truncate(MAX_PATTERNS);
        all
    }
}

#[cfg(test)]
mod tests {
    use tidewatch_model::Labels;
    use tidewatch_model::logs::LogEntry;

    use super::*;

    const SECOND_NS: i64 = 1_000_000_000;

    fn stream(labels: &[(&str, &str)], entries: Vec<(i64, String)>) -> LogStream {
        LogStream {
            labels: Labels::from_pairs(labels.iter().copied()),
            entries: entries.into_iter().map(|(t, line)| LogEntry::new(t, line)).collect(),
        }
    }

    #[test]
    fn ranges_round_like_loki() {
        let range = PatternRange::new(1_500_000, 2_000_001, 1_999_999);
        assert_eq!((range.from_ms, range.through_ms, range.step_ms), (1, 3, 10_000));
        let range = PatternRange::new(0, 60 * SECOND_NS, 30 * SECOND_NS + 5);
        assert_eq!((range.from_ms, range.through_ms, range.step_ms), (0, 60_000, 30_000));
        // Entries from the first whole 10 s at or after the start to the
        // end of the 10 s holding the end.
        let range = PatternRange::new(15 * SECOND_NS, 60 * SECOND_NS, SECOND_NS);
        assert_eq!(range.entries(), NsRange::new(20 * SECOND_NS, 70 * SECOND_NS - 1));
        let range = PatternRange::new(20 * SECOND_NS, 65 * SECOND_NS, SECOND_NS);
        assert_eq!(range.entries(), NsRange::new(20 * SECOND_NS, 70 * SECOND_NS - 1));
    }

    #[test]
    fn streams_merge_by_pattern_and_level_with_counts_per_step() {
        // Two streams with the same shape of line, one second apart.
        let lines = |offset: i64| {
            (0..60)
                .map(|i| {
                    (
                        offset + i * SECOND_NS,
                        format!("level=info msg=\"request done\" took={i}ms"),
                    )
                })
                .collect::<Vec<_>>()
        };
        let a = stream(&[("app", "api"), ("pod", "a")], lines(0));
        let b = stream(&[("app", "api"), ("pod", "b")], lines(30 * SECOND_NS));
        let mut detector = PatternDetector::new(PatternRange::new(0, 120 * SECOND_NS, 30 * SECOND_NS));
        detector.add_stream(&a);
        detector.add_stream(&b);
        let found = detector.finish();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pattern, "level=info msg=\"request done\" took=<_>");
        assert_eq!(found[0].level, "info");
        assert_eq!(found[0].samples, [(0, 30), (30_000, 60), (60_000, 30)]);
        assert_eq!(found[0].total(), 120);
    }

    #[test]
    fn levels_are_separate_patterns_and_small_ones_are_dropped() {
        let mut entries = Vec::new();
        for i in 0..40 {
            entries.push((i * SECOND_NS, format!("[INFO] job {i} started on worker 7")));
            entries.push((i * SECOND_NS + 1, format!("[ERROR] job {i} started on worker 7")));
        }
        for i in 0..29 {
            entries.push((i * SECOND_NS + 2, format!("[WARN] disk {i} is filling up fast")));
        }
        entries.sort();
        let mut detector = PatternDetector::new(PatternRange::new(0, 100 * SECOND_NS, 100 * SECOND_NS));
        detector.add_stream(&stream(&[("app", "jobs")], entries));
        let found: Vec<(String, &str, i64)> = detector
            .finish()
            .into_iter()
            .map(|s| (s.pattern.clone(), s.level, s.total()))
            .collect();
        // Equal totals: by pattern; the 29 warnings are below the minimum.
        assert_eq!(
            found,
            [
                ("[ERROR] job <_> started on worker 7".to_string(), "error", 40),
                ("[INFO] job <_> started on worker 7".to_string(), "info", 40),
            ]
        );
    }

    #[test]
    fn counts_add_up_to_the_lines_in_the_range() {
        let entries: Vec<(i64, String)> = (0..1000)
            .map(|i| (i * SECOND_NS / 4, format!("GET /api/items/{i} 200 {}ms", i % 17)))
            .collect();
        for step in [10, 15, 60, 250] {
            let mut detector = PatternDetector::new(PatternRange::new(0, 250 * SECOND_NS, step * SECOND_NS));
            detector.add_stream(&stream(&[("app", "web")], entries.clone()));
            let found = detector.finish();
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].pattern, "GET <_> 200 <_>");
            // [0, 250 s) holds all 1000 lines.
            assert_eq!(found[0].total(), 1000, "step {step}");
            for (t, _) in &found[0].samples {
                assert_eq!(t % (step * 1000), 0, "step {step}: samples start on step boundaries");
            }
        }
    }

    /// How long patterns take over 100k lines of ten streams (logfmt, JSON
    /// and plain text, a few hundred shapes): the median of five runs.
    /// `cargo test -p tidewatch-query --lib --config
    /// 'profile.test.package.tidewatch-query.opt-level=3' -- --ignored --nocapture timing`
    #[test]
    #[ignore = "a timing, not a check"]
    fn timing_over_100k_lines() {
        let mut streams = Vec::new();
        for s in 0..10i64 {
            let entries: Vec<(i64, String)> = (0..10_000i64)
                .map(|i| {
                    let t = i * SECOND_NS / 10 + s;
                    let line = match s % 3 {
                        0 => format!(
                            "ts=2024-05-0{}T12:00:{:02}Z level={} caller=handler{}.go:{} msg=\"request {} done\" path=/api/v{}/items/{} status={} took={}ms",
                            s,
                            i % 60,
                            ["info", "warn", "error"][(i % 3) as usize],
                            i % 7,
                            100 + i % 13,
                            ["GET", "POST", "PUT"][(i % 3) as usize],
                            i % 4,
                            i,
                            [200, 404, 500][(i % 3) as usize],
                            i % 997
                        ),
                        1 => format!(
                            r#"{{"time":"2024-05-01T12:00:{:02}Z","level":"info","msg":"user {} logged in from 10.0.{}.{} after {} attempts","step":{}}}"#,
                            i % 60,
                            i,
                            i % 256,
                            i % 100,
                            i % 5,
                            i % 11
                        ),
                        _ => format!(
                            "I0507 11:59:{:02}.{:06} {} reconciler_{}.go:{}] \"operation {} started for volume {}\" pod=\"ns/pod-{}\"",
                            i % 60,
                            i,
                            3000 + s,
                            i % 20,
                            i % 300,
                            ["Mount", "Unmount", "Attach", "Detach"][(i % 4) as usize],
                            i,
                            i % 50
                        ),
                    };
                    (t, line)
                })
                .collect();
            streams.push(stream(&[("app", "bench"), ("stream", &s.to_string())], entries));
        }
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..5 {
            let started = std::time::Instant::now();
            let mut detector = PatternDetector::new(PatternRange::new(0, 1_000 * SECOND_NS, 10 * SECOND_NS));
            for stream in &streams {
                detector.add_stream(stream);
            }
            found = detector.finish().len();
            times.push(started.elapsed());
        }
        times.sort();
        eprintln!("100k lines, {found} patterns: median {:?} (runs {times:?})", times[2]);
    }
}
