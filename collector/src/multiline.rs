//! Joining multi-line records (stack traces) after CRI partial lines were
//! merged: a record starts at a line matching the start pattern; every
//! following line that does not match is appended with `\n`.

use std::time::Duration;

use regex::Regex;

use crate::config::MultilineConfig;

/// A Java record starts with a timestamp or a level, never with whitespace,
/// `at `, `...` or `Caused by:`.
const JAVA_START: &str = r"^[^\s]";
const JAVA_CONTINUATION: &str = r"^(\s|at\s|\.\.\.|Caused by:|Suppressed:)";
/// A Python traceback's continuation lines are indented, or the final
/// `SomeError: message` line after an indented block; a record starts at any
/// unindented line except that final exception line.
const PYTHON_START: &str = r"^[^\s]";
const PYTHON_CONTINUATION: &str = r"^(\s|[A-Za-z_][A-Za-z0-9_.]*(Error|Exception|Warning|Exit|Interrupt)(:|$))";
/// A Go panic: `goroutine N [state]:`, frames and `\t/path/file.go:123`
/// lines, and blank lines inside the dump belong to the panic record.
const GO_START: &str = r"^[^\s]";
const GO_CONTINUATION: &str = r"^(\s|$|goroutine \d+ \[|[A-Za-z0-9_./*()\[\]-]+\(.*\)$|created by |exit status \d+)";

/// Which lines start a record.
#[derive(Debug, Clone)]
pub struct StartPattern {
    start: Regex,
    /// Lines that never start a record even when `start` matches them (the
    /// presets' continuation shapes); `None` for a configured pattern.
    continuation: Option<Regex>,
}

impl StartPattern {
    /// From the config; the message names the bad key.
    pub fn from_config(config: &MultilineConfig) -> Result<StartPattern, String> {
        if let Some(pattern) = &config.start_pattern {
            let start = Regex::new(pattern).map_err(|e| format!("logs.multiline.start_pattern {pattern:?}: {e}"))?;
            return Ok(StartPattern {
                start,
                continuation: None,
            });
        }
        let (start, continuation) = match config.preset.as_deref() {
            Some("java") => (JAVA_START, JAVA_CONTINUATION),
            Some("python") => (PYTHON_START, PYTHON_CONTINUATION),
            Some("go") => (GO_START, GO_CONTINUATION),
            Some(other) => {
                return Err(format!("logs.multiline.preset {other:?}: expected java, python or go"));
            }
            None => return Err("logs.multiline needs a preset or a start_pattern".into()),
        };
        Ok(StartPattern {
            start: Regex::new(start).expect("preset patterns compile"),
            continuation: Some(Regex::new(continuation).expect("preset patterns compile")),
        })
    }

    /// Whether `line` begins a new record.
    pub fn starts_record(&self, line: &str) -> bool {
        if let Some(continuation) = &self.continuation
            && continuation.is_match(line)
        {
            return false;
        }
        self.start.is_match(line)
    }
}

/// One stream's joiner (one per file and CRI stream). Feed lines in order;
/// complete records come out.
#[derive(Debug)]
pub struct Joiner {
    pattern: StartPattern,
    max_lines: usize,
    max_bytes: usize,
    timeout: Duration,
    pending: Option<Pending>,
}

/// A record being assembled: the timestamp of its first line, its text and
/// the file offset just past its last line.
#[derive(Debug)]
struct Pending {
    timestamp: i64,
    start_offset: u64,
    text: String,
    lines: usize,
    end_offset: u64,
}

/// A complete record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub timestamp: i64,
    pub text: String,
    /// File offset just past the record's last line.
    pub end_offset: u64,
}

impl Joiner {
    pub fn new(pattern: StartPattern, max_lines: usize, max_bytes: usize, timeout: Duration) -> Self {
        Joiner {
            pattern,
            max_lines: max_lines.max(1),
            max_bytes: max_bytes.max(1),
            timeout,
            pending: None,
        }
    }

    /// Adds a line found at `start_offset..end_offset` of its file; returns
    /// the record it completed, if any.
    pub fn push(&mut self, timestamp: i64, line: &str, start_offset: u64, end_offset: u64) -> Option<Record> {
        let starts = self.pattern.starts_record(line);
        if let Some(pending) = &mut self.pending
            && !starts
            && pending.lines < self.max_lines
            && pending.text.len() + 1 + line.len() <= self.max_bytes
        {
            pending.text.push('\n');
            pending.text.push_str(line);
            pending.lines += 1;
            pending.end_offset = end_offset;
            return None;
        }
        let done = self.pending.take().map(Pending::into_record);
        self.pending = Some(Pending {
            timestamp,
            start_offset,
            text: line.to_string(),
            lines: 1,
            end_offset,
        });
        done
    }

    /// Emits the record being assembled (no continuation came in time, or the
    /// file ended).
    pub fn flush(&mut self) -> Option<Record> {
        self.pending.take().map(Pending::into_record)
    }

    /// How long a record waits for continuation lines before it is emitted.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a record is waiting for continuation lines.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// File offset where the pending record starts: a checkpoint must not
    /// pass it, or a restart would lose the record's first lines. `None` when
    /// nothing is pending.
    pub fn pending_start(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.start_offset)
    }
}

impl Pending {
    fn into_record(self) -> Record {
        Record {
            timestamp: self.timestamp,
            text: self.text,
            end_offset: self.end_offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joiner(preset: &str) -> Joiner {
        let config = MultilineConfig {
            preset: Some(preset.into()),
            start_pattern: None,
            timeout: Duration::from_secs(1),
            max_lines: 500,
        };
        Joiner::new(
            StartPattern::from_config(&config).unwrap(),
            500,
            1 << 20,
            config.timeout,
        )
    }

    fn join_all(joiner: &mut Joiner, lines: &[&str]) -> Vec<String> {
        let mut records = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            records.extend(joiner.push(i as i64, line, i as u64, i as u64 + 1).map(|r| r.text));
        }
        records.extend(joiner.flush().map(|r| r.text));
        records
    }

    #[test]
    fn java_stack_trace_is_one_record() {
        let lines = [
            "2024-01-01 ERROR request failed",
            "java.lang.IllegalStateException: boom",
            "\tat com.example.Foo.bar(Foo.java:10)",
            "\tat com.example.Main.main(Main.java:5)",
            "Caused by: java.io.IOException: closed",
            "\t... 2 more",
            "2024-01-01 INFO next",
        ];
        let records = join_all(&mut joiner("java"), &lines);
        assert_eq!(records.len(), 3, "{records:?}");
        assert!(records[1].starts_with("java.lang.IllegalStateException"));
        assert!(records[1].ends_with("... 2 more"));
        assert_eq!(records[2], "2024-01-01 INFO next");
    }

    #[test]
    fn python_traceback_is_one_record() {
        let lines = [
            "Traceback (most recent call last):",
            "  File \"app.py\", line 3, in <module>",
            "    main()",
            "ValueError: bad value",
            "INFO next line",
        ];
        let records = join_all(&mut joiner("python"), &lines);
        assert_eq!(records.len(), 2, "{records:?}");
        assert!(records[0].ends_with("ValueError: bad value"));
    }

    #[test]
    fn go_panic_is_one_record() {
        let lines = [
            "panic: runtime error: index out of range",
            "",
            "goroutine 1 [running]:",
            "main.main()",
            "\t/app/main.go:12 +0x1d",
            "exit status 2",
            "level=info msg=restarted",
        ];
        let records = join_all(&mut joiner("go"), &lines);
        assert_eq!(records.len(), 2, "{records:?}");
        assert!(records[0].ends_with("exit status 2"));
    }

    #[test]
    fn limits_cut_records() {
        let config = MultilineConfig {
            preset: None,
            start_pattern: Some("^START".into()),
            timeout: Duration::from_secs(1),
            max_lines: 2,
        };
        let mut joiner = Joiner::new(StartPattern::from_config(&config).unwrap(), 2, 1 << 20, config.timeout);
        let records = join_all(&mut joiner, &["START a", "b", "c", "START d"]);
        assert_eq!(records, ["START a\nb", "c", "START d"]);
    }
}
