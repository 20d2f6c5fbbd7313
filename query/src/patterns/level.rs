//! The level of a log entry, as Loki's distributor detects it at ingestion
//! (`detected_level`, `pkg/distributor/field_detection.go`) and its pattern
//! ingester files it (`pkg/pattern/stream.go`): Loki keeps one Drain per
//! stream and level, and every pattern it answers carries that level.
//!
//! Tidewatch does not add `detected_level` at ingestion, so it is worked
//! out here, at query time, in Loki's order: a `detected_level` the entry
//! already carries; a level label of the stream; a level in the entry's
//! structured metadata; an OTLP `severity_number`; a level field of a JSON
//! or logfmt line; a level word in the line. Anything that is not one of
//! Loki's levels is `unknown`.

use std::borrow::Cow;

use tidewatch_model::Labels;

use super::raw_json::{self, RawValue};
use crate::logql::pipeline::LogfmtDecoder;

/// Loki's structured-metadata name for the level.
pub(crate) const DETECTED_LEVEL: &str = "detected_level";
/// OTLP's severity number, as Loki stores it in structured metadata.
const SEVERITY_NUMBER: &str = "severity_number";

pub(crate) const UNKNOWN: &str = "unknown";
const TRACE: &str = "trace";
const DEBUG: &str = "debug";
const INFO: &str = "info";
const WARN: &str = "warn";
const ERROR: &str = "error";
const FATAL: &str = "fatal";
const CRITICAL: &str = "critical";

/// Loki's levels; patterns are filed under one of these.
const LEVELS: [&str; 8] = [UNKNOWN, DEBUG, INFO, WARN, ERROR, FATAL, CRITICAL, TRACE];

/// Label, metadata and field names that hold a level, first match winning
/// (Loki's `DefaultAllowedLevelFields`).
const LEVEL_FIELDS: [&str; 14] = [
    "level",
    "LEVEL",
    "Level",
    "log.level",
    "severity",
    "SEVERITY",
    "Severity",
    "SeverityText",
    "lvl",
    "LVL",
    "Lvl",
    "severity_text",
    "Severity_Text",
    "SEVERITY_TEXT",
];

/// How deep a JSON line is searched for a level field (Loki's
/// `log_level_from_json_max_depth` default): the top level and one below.
const JSON_LEVEL_MAX_DEPTH: usize = 2;

/// Level words searched for in a line, in this order; the earliest in the
/// line wins, ties going to the first listed.
const LEVEL_WORDS: [(&str, &str); 9] = [
    ("trace", TRACE),
    ("debug", DEBUG),
    ("fatal", FATAL),
    ("critical", CRITICAL),
    ("error", ERROR),
    ("err", ERROR),
    ("warning", WARN),
    ("warn", WARN),
    ("info", INFO),
];

/// The level an entry's patterns are filed under: one of Loki's levels.
pub(crate) fn entry_level(stream: &Labels, metadata: &Labels, line: &str) -> &'static str {
    known_level(detect(stream, metadata, line))
}

/// The level Loki files `level` under (compared without case, as Loki
/// lowercases it first).
fn known_level(level: &str) -> &'static str {
    LEVELS
        .iter()
        .find(|known| known.eq_ignore_ascii_case(level))
        .copied()
        .unwrap_or(UNKNOWN)
}

fn detect<'a>(stream: &'a Labels, metadata: &'a Labels, line: &str) -> &'a str {
    if let Some(level) = metadata.get(DETECTED_LEVEL) {
        return normalize(level);
    }
    if let Some(level) = first_level_field(stream) {
        return normalize(level);
    }
    if let Some(level) = first_level_field(metadata) {
        return normalize(level);
    }
    if let Some(number) = metadata.get(SEVERITY_NUMBER) {
        return otlp_level(number);
    }
    line_level(line)
}

fn first_level_field(labels: &Labels) -> Option<&str> {
    LEVEL_FIELDS.iter().find_map(|name| labels.get(name))
}

/// A level spelled one of the usual ways as Loki's level, else `None`.
fn level_of(value: &str) -> Option<&'static str> {
    let is = |word: &str| value.eq_ignore_ascii_case(word);
    if is("trace") || is("trc") {
        Some(TRACE)
    } else if is("debug") || is("dbg") {
        Some(DEBUG)
    } else if is("info") || is("inf") || is("information") {
        Some(INFO)
    } else if is("warn") || is("wrn") || is("warning") {
        Some(WARN)
    } else if is("error") || is("err") {
        Some(ERROR)
    } else if is("critical") {
        Some(CRITICAL)
    } else if is("fatal") {
        Some(FATAL)
    } else {
        None
    }
}

/// Loki's `normalizeLogLevel`: a known spelling becomes the level, anything
/// else stays as it is (and later files as `unknown`).
fn normalize(value: &str) -> &str {
    level_of(value).unwrap_or(value)
}

/// OTLP severity numbers: 1–4 trace, 5–8 debug, 9–12 info, 13–16 warn,
/// 17–20 error, 21–24 fatal; 0 and beyond 24 unknown; not a number: info.
fn otlp_level(number: &str) -> &'static str {
    let Ok(number) = number.parse::<i64>() else {
        return INFO;
    };
    match number {
        0 => UNKNOWN,
        n if n <= 4 => TRACE,
        n if n <= 8 => DEBUG,
        n if n <= 12 => INFO,
        n if n <= 16 => WARN,
        n if n <= 20 => ERROR,
        n if n <= 24 => FATAL,
        _ => UNKNOWN,
    }
}

/// The level of a line: its level field when it is JSON or logfmt, else
/// (or when that field holds no known level) the first level word in it.
fn line_level(line: &str) -> &'static str {
    let field: Option<Cow<'_, str>> = if looks_like_json(line) {
        json_level_field(line).map(Cow::Borrowed)
    } else if line.contains('=') {
        logfmt_level_field(line)
    } else {
        None
    };
    field.as_deref().and_then(level_of).unwrap_or_else(|| level_word(line))
}

fn looks_like_json(line: &str) -> bool {
    let trimmed = line.trim();
    trimmed.starts_with('{') && trimmed.ends_with('}')
}

/// The first string member named as a level field, in document order,
/// looking into objects down to [`JSON_LEVEL_MAX_DEPTH`].
fn json_level_field(line: &str) -> Option<&str> {
    fn search(object: &str, depth: usize) -> Option<&str> {
        if depth >= JSON_LEVEL_MAX_DEPTH {
            return None;
        }
        let mut found = None;
        raw_json::each_member(object, |key, value| {
            match value {
                RawValue::String(text) if LEVEL_FIELDS.contains(&key) => found = Some(text),
                RawValue::Object(inner) => found = search(inner, depth + 1),
                _ => {}
            }
            found.is_none()
        });
        found
    }
    search(line, 0)
}

/// The value of the level field listed first in [`LEVEL_FIELDS`] (names
/// compared without case), the earliest in the line among equals.
fn logfmt_level_field(line: &str) -> Option<Cow<'_, str>> {
    let mut best: Option<(usize, Cow<'_, str>)> = None;
    let mut decoder = LogfmtDecoder::new(line);
    while !decoder.at_end() {
        let Some((key, value)) = decoder.next_pair() else {
            break;
        };
        let Some(rank) = LEVEL_FIELDS.iter().position(|field| field.eq_ignore_ascii_case(key)) else {
            continue;
        };
        if best.as_ref().is_none_or(|(best_rank, _)| rank < *best_rank) {
            best = Some((rank, value));
            if rank == 0 {
                break;
            }
        }
    }
    best.map(|(_, value)| value)
}

/// The level word that starts earliest in the line, as a word of its own
/// (Loki's word boundaries), or `unknown`.
fn level_word(line: &str) -> &'static str {
    let lower = line.to_lowercase();
    let mut best: Option<(usize, &'static str)> = None;
    for (word, level) in LEVEL_WORDS {
        let Some(at) = bounded_position(&lower, word) else {
            continue;
        };
        if best.is_some_and(|(best_at, _)| at >= best_at) {
            continue;
        }
        best = Some((at, level));
        if at == 0 {
            break;
        }
    }
    best.map_or(UNKNOWN, |(_, level)| level)
}

/// Where `word` first occurs in `text` with a boundary on either side. A
/// colon is no boundary on the left (`misc:error` is no level) but is one on
/// the right (`error: …`).
fn bounded_position(text: &str, word: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let left_ok = |at: usize| {
        at == 0
            || matches!(
                bytes[at - 1],
                b' ' | b'\t' | b'\n' | b'[' | b'(' | b'{' | b'"' | b'\'' | b'=' | b'|'
            )
    };
    let right_ok = |end: usize| {
        end >= bytes.len()
            || matches!(
                bytes[end],
                b' ' | b'\t'
                    | b'\n'
                    | b'['
                    | b']'
                    | b'('
                    | b')'
                    | b'{'
                    | b'}'
                    | b':'
                    | b','
                    | b'!'
                    | b'"'
                    | b'\''
                    | b'='
                    | b'|'
            )
    };
    let mut from = 0;
    while let Some(found) = text[from..].find(word) {
        let at = from + found;
        if left_ok(at) && right_ok(at + word.len()) {
            return Some(at);
        }
        // Words are ASCII, so the next byte is a character boundary.
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(stream: &[(&str, &str)], metadata: &[(&str, &str)], line: &str) -> &'static str {
        entry_level(
            &Labels::from_pairs(stream.iter().copied()),
            &Labels::from_pairs(metadata.iter().copied()),
            line,
        )
    }

    #[test]
    fn metadata_and_labels_come_before_the_line() {
        assert_eq!(level(&[], &[("detected_level", "WARNING")], "error!"), "warn");
        assert_eq!(level(&[], &[("detected_level", "Notice")], "error!"), "unknown");
        assert_eq!(level(&[("level", "ERR")], &[], "info"), "error");
        assert_eq!(level(&[("severity", "Information")], &[], "debug"), "info");
        assert_eq!(level(&[], &[("lvl", "dbg")], "error"), "debug");
        // The stream's label wins over the entry's metadata.
        assert_eq!(level(&[("level", "info")], &[("level", "error")], ""), "info");
        // An unknown spelling is not looked up further.
        assert_eq!(level(&[("level", "notice")], &[], "error"), "unknown");
    }

    #[test]
    fn otlp_severity_numbers() {
        for (number, expected) in [
            ("0", "unknown"),
            ("1", "trace"),
            ("8", "debug"),
            ("9", "info"),
            ("16", "warn"),
            ("17", "error"),
            ("24", "fatal"),
            ("25", "unknown"),
            ("x", "info"),
        ] {
            assert_eq!(
                level(&[], &[("severity_number", number)], "error"),
                expected,
                "{number}"
            );
        }
    }

    #[test]
    fn json_lines_by_their_level_field_to_depth_two() {
        assert_eq!(level(&[], &[], r#"{"msg":"an error","level":"INFO"}"#), "info");
        // One level down is searched, and the field beats the words.
        assert_eq!(
            level(&[], &[], r#" {"msg":"fatal crash","log":{"severity":"warning"}} "#),
            "warn"
        );
        // Two levels down is too deep; the words of the line decide.
        assert_eq!(
            level(&[], &[], r#"{"msg":"fatal crash","a":{"b":{"level":"info"}}}"#),
            "fatal"
        );
        // A level field that holds no level falls back to the words too.
        assert_eq!(level(&[], &[], r#"{"level":30,"msg":"[error] x"}"#), "error");
        assert_eq!(level(&[], &[], r#"{"msg":"all good"}"#), "unknown");
    }

    #[test]
    fn logfmt_lines_by_their_level_field() {
        assert_eq!(level(&[], &[], "ts=1 lvl=warn level=debug msg=\"an error\""), "debug");
        assert_eq!(level(&[], &[], "ts=1 LEVEL=Error msg=x"), "error");
        assert_eq!(level(&[], &[], "ts=1 severity=crit msg=\"error here\""), "error");
        assert_eq!(level(&[], &[], "a=1 b=2"), "unknown");
    }

    #[test]
    fn level_words_need_boundaries_and_the_earliest_wins() {
        assert_eq!(level(&[], &[], "2024-01-01 WARN disk almost full, error soon"), "warn");
        assert_eq!(level(&[], &[], "[ERROR] failed"), "error");
        assert_eq!(level(&[], &[], "debug: starting"), "debug");
        assert_eq!(level(&[], &[], "misc:error handled"), "unknown");
        assert_eq!(level(&[], &[], "errors were informational"), "unknown");
        assert_eq!(level(&[], &[], "terror then info"), "info");
        assert_eq!(level(&[], &[], "GET /index.html 200"), "unknown");
        assert_eq!(level(&[], &[], ""), "unknown");
    }
}
