//! Reads Loki's `logqltest` scripts (the format as described in
//! `conformance/loki/README.md`): `clear`, `load` blocks of stream lines and
//! `eval` statements with their expectations.

use tidewatch_model::{Label, Labels};

use crate::logql::conv::parse_duration;

/// The scripts' time base, 2026-01-01T00:00:00Z, in nanoseconds.
pub(crate) const TIME_BASE_NS: i64 = 1_767_225_600 * 1_000_000_000;

/// One command of a script.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    Clear,
    Load(Vec<LoadLine>),
    Eval(Eval),
    /// A line the reader could not understand: reported as a failure.
    Invalid {
        line: usize,
        message: String,
    },
}

/// One line of a `load` block: entries of one stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoadLine {
    pub(crate) stream: Labels,
    /// The line text; `{{.i}}` is replaced by the entry's index.
    pub(crate) text: String,
    /// Absolute nanoseconds of the first entry.
    pub(crate) start: i64,
    pub(crate) every: i64,
    pub(crate) count: usize,
    /// Sorted; empty values kept (they are labels too).
    pub(crate) metadata: Labels,
}

/// An `eval` statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Eval {
    pub(crate) line: usize,
    pub(crate) query: String,
    pub(crate) time: EvalTime,
    pub(crate) expect: Expectation,
    pub(crate) ordered: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EvalTime {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

impl EvalTime {
    pub(crate) fn steps(&self) -> usize {
        match *self {
            EvalTime::Instant(_) => 1,
            EvalTime::Range { start, end, step } => ((end - start) / step) as usize + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expectation {
    /// Series with one optional value per step.
    Series(Vec<(Labels, Vec<Option<f64>>)>),
    Scalar(f64),
    Empty,
    Fail(FailMatch),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FailMatch {
    Any,
    Contains(String),
    Regex(String),
}

/// Drops a `#` comment outside `"…"` and `` `…` `` quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '`' => quote = Some(c),
            None if c == '#' => return &line[..i],
            None => {}
        }
    }
    line
}

/// A script time: a Go duration after the time base.
fn parse_time(text: &str) -> Result<i64, String> {
    parse_duration(text).map(|d| TIME_BASE_NS + d)
}

/// Parses a script into commands, in order.
pub(crate) fn parse(text: &str) -> Vec<Command> {
    let lines: Vec<&str> = text.lines().collect();
    let mut commands = Vec::new();
    let mut at = 0;
    while at < lines.len() {
        let number = at + 1;
        let raw = lines[at];
        at += 1;
        let content = strip_comment(raw);
        if content.trim().is_empty() {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            commands.push(Command::Invalid {
                line: number,
                message: format!("indented line outside a block: {}", raw.trim()),
            });
            continue;
        }
        // The block: following indented lines up to an empty or unindented one;
        // comment lines are skipped without ending it.
        let mut block = Vec::new();
        while at < lines.len() {
            let next = lines[at];
            if next.trim().is_empty() {
                break;
            }
            if !next.starts_with([' ', '\t']) {
                if next.trim_start().starts_with('#') {
                    at += 1;
                    continue;
                }
                break;
            }
            let body = strip_comment(next).trim();
            if !body.is_empty() {
                block.push((at + 1, body.to_string()));
            }
            at += 1;
        }
        let command = content.trim();
        let result = if command == "clear" {
            Ok(Command::Clear)
        } else if command == "load" {
            parse_load(&block).map(Command::Load)
        } else if let Some(rest) = command.strip_prefix("eval ") {
            parse_eval(number, rest, &block).map(Command::Eval)
        } else {
            Err(format!("unknown command: {command}"))
        };
        commands.push(result.unwrap_or_else(|message| Command::Invalid { line: number, message }));
    }
    commands
}

fn parse_load(block: &[(usize, String)]) -> Result<Vec<LoadLine>, String> {
    let mut loads = Vec::with_capacity(block.len());
    for (number, line) in block {
        loads.push(parse_load_line(line).map_err(|e| format!("line {number}: {e}"))?);
    }
    Ok(loads)
}

/// Reads `{a="b"}` (a selector with `=` only, or a series' labels) from the
/// start of `text`; returns the labels (empty values kept) and the rest.
fn parse_labels(text: &str) -> Result<(Labels, &str), String> {
    let mut rest = text.trim_start().strip_prefix('{').ok_or("expected '{'")?;
    let mut pairs: Vec<Label> = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            rest = after;
            break;
        }
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if name_len == 0 {
            return Err(format!("expected a label name at {rest:?}"));
        }
        let name = &rest[..name_len];
        rest = rest[name_len..].trim_start();
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("expected '=' after {name}"))?;
        let (value, after) = quoted(rest.trim_start())?;
        pairs.push(Label::new(name, value));
        rest = after.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        }
    }
    pairs.sort_by(|a, b| a.name.cmp(&b.name));
    if pairs.windows(2).any(|w| w[0].name == w[1].name) {
        return Err("duplicate label name".to_string());
    }
    Ok((Labels::from_sorted(pairs), rest))
}

/// A `"…"` string with `\"` and `\\` escapes, or a `` `…` `` string taken literally.
fn quoted(text: &str) -> Result<(String, &str), String> {
    if let Some(body) = text.strip_prefix('`') {
        let end = body.find('`').ok_or("unterminated `")?;
        return Ok((body[..end].to_string(), &body[end + 1..]));
    }
    let body = text
        .strip_prefix('"')
        .ok_or_else(|| format!("expected a quoted string at {text:?}"))?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, escaped)) => out.push(escaped),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unterminated string".to_string())
}

fn parse_load_line(line: &str) -> Result<LoadLine, String> {
    let (stream_labels, rest) = parse_labels(line)?;
    // Empty stream label values are dropped on write, as Loki drops them.
    let stream = Labels::from_pairs(stream_labels.iter().map(|l| (l.name.clone(), l.value.clone())));
    let rest = rest.trim_start();
    // The line is taken literally: no escape processing.
    let (quote, body) = match rest.chars().next() {
        Some(q @ ('"' | '`')) => (q, &rest[1..]),
        _ => return Err("expected the log line in quotes".to_string()),
    };
    let end = body.find(quote).ok_or("unterminated log line")?;
    let text = body[..end].to_string();
    let rest = body[end + 1..].trim_start();
    let rest = rest.strip_prefix('@').ok_or("expected '@ <time>'")?.trim_start();
    let time_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let start = parse_time(&rest[..time_len])?;
    let mut rest = rest[time_len..].trim_start();
    let mut every = 0;
    let mut count = 1;
    let mut metadata = Labels::EMPTY;
    while !rest.is_empty() {
        let inner_end = rest.find(']').ok_or("unterminated '['")?;
        let inner = rest.strip_prefix('[').ok_or_else(|| format!("unexpected {rest:?}"))?;
        let inner = &inner[..inner_end - 1];
        if let Some(repeat) = inner.strip_prefix("repeat every ") {
            let (step, times) = repeat.split_once(" for ").ok_or("expected 'repeat every S for N'")?;
            every = parse_duration(step.trim())?;
            count = times.trim().parse().map_err(|_| format!("bad count {times:?}"))?;
            if count == 0 {
                return Err("repeat count must be at least 1".to_string());
            }
        } else if let Some(pairs) = inner.strip_prefix("metadata") {
            metadata = parse_metadata(pairs)?;
        } else {
            return Err(format!("unexpected [{inner}]"));
        }
        rest = rest[inner_end + 1..].trim_start();
    }
    Ok(LoadLine {
        stream,
        text,
        start,
        every,
        count,
        metadata,
    })
}

/// `k="v" "k 2"="v"` pairs.
fn parse_metadata(text: &str) -> Result<Labels, String> {
    let mut pairs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (name, after) = if rest.starts_with('"') {
            quoted(rest)?
        } else {
            let len = rest.find('=').ok_or("expected k=\"v\"")?;
            (rest[..len].trim().to_string(), &rest[len..])
        };
        let after = after.trim_start().strip_prefix('=').ok_or("expected '='")?;
        let (value, after) = quoted(after.trim_start())?;
        pairs.push(Label::new(name, value));
        rest = after.trim_start();
    }
    pairs.sort_by(|a, b| a.name.cmp(&b.name));
    pairs.dedup_by(|later, earlier| later.name == earlier.name);
    Ok(Labels::from_sorted(pairs))
}

/// Splits off the first whitespace-separated word.
fn word(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    if text.is_empty() {
        return None;
    }
    let len = text.find(char::is_whitespace).unwrap_or(text.len());
    Some((&text[..len], &text[len..]))
}

fn parse_eval(number: usize, rest: &str, block: &[(usize, String)]) -> Result<Eval, String> {
    let (kind, rest) = word(rest).ok_or("empty eval")?;
    let (time, query) = match kind {
        "instant" => {
            let (at, rest) = word(rest).ok_or("expected 'at'")?;
            if at != "at" {
                return Err("expected 'eval instant at <time>'".to_string());
            }
            let (time, rest) = word(rest).ok_or("expected a time")?;
            (EvalTime::Instant(parse_time(time)?), rest)
        }
        "range" => {
            let mut fields = Vec::new();
            let mut rest = rest;
            for keyword in ["from", "", "to", "", "step", ""] {
                let (w, after) = word(rest).ok_or("expected 'range from T to T step S'")?;
                if !keyword.is_empty() && w != keyword {
                    return Err(format!("expected {keyword:?}, got {w:?}"));
                }
                if keyword.is_empty() {
                    fields.push(w);
                }
                rest = after;
            }
            let start = parse_time(fields[0])?;
            let end = parse_time(fields[1])?;
            let step = parse_duration(fields[2])?;
            if step <= 0 || end < start {
                return Err("a range eval needs step > 0 and end >= start".to_string());
            }
            (EvalTime::Range { start, end, step }, rest)
        }
        other => return Err(format!("unknown eval kind {other:?}")),
    };
    let query = query.trim().to_string();
    let mut series = Vec::new();
    let mut expect = None;
    let mut ordered = false;
    for (line, body) in block {
        let set = |expect: &mut Option<Expectation>, value: Expectation| {
            if expect.is_some() {
                return Err(format!("line {line}: more than one kind of expectation"));
            }
            *expect = Some(value);
            Ok(())
        };
        if body == "expect empty" {
            set(&mut expect, Expectation::Empty)?;
        } else if body == "expect ordered" {
            ordered = true;
        } else if body.starts_with("skip values-comparison") {
            // Loki-internal (its sharded query path): nothing to do here.
        } else if let Some(fail) = body.strip_prefix("expect fail") {
            let fail = fail.trim();
            let matcher = if fail.is_empty() {
                FailMatch::Any
            } else if let Some(text) = fail.strip_prefix("msg:") {
                FailMatch::Contains(text.trim().to_string())
            } else if let Some(text) = fail.strip_prefix("regex:") {
                FailMatch::Regex(text.trim().to_string())
            } else {
                return Err(format!("line {line}: unknown expect fail form {fail:?}"));
            };
            set(&mut expect, Expectation::Fail(matcher))?;
        } else if body.starts_with('{') {
            let (labels, values) = parse_labels(body).map_err(|e| format!("line {line}: {e}"))?;
            let values = parse_values(values).map_err(|e| format!("line {line}: {e}"))?;
            if values.len() != time.steps() {
                return Err(format!(
                    "line {line}: {} values for {} steps",
                    values.len(),
                    time.steps()
                ));
            }
            series.push((labels, values));
        } else {
            let value = parse_value(body).map_err(|e| format!("line {line}: {e}"))?;
            set(&mut expect, Expectation::Scalar(value))?;
        }
    }
    let expect = match (expect, series.is_empty()) {
        (Some(_), false) => return Err("series and another expectation in one eval".to_string()),
        (Some(expect), true) => expect,
        (None, false) => Expectation::Series(series),
        (None, true) => return Err("the eval expects nothing".to_string()),
    };
    Ok(Eval {
        line: number,
        query,
        time,
        expect,
        ordered,
    })
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "Inf" | "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        other => other.parse().map_err(|_| format!("bad value {other:?}")),
    }
}

/// `v0 v1 _ 2+3x2 4x3 …`: one optional value per step.
fn parse_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut values = Vec::new();
    for item in text.split_whitespace() {
        if item == "_" {
            values.push(None);
            continue;
        }
        if let Some((series, times)) = item.rsplit_once('x')
            && let Ok(times) = times.parse::<usize>()
            && !series.is_empty()
        {
            // `base[+|-step]xN`: N + 1 values.
            let sign_at = series[1..].find(['+', '-']).map(|i| i + 1);
            let (base, delta) = match sign_at {
                Some(i) => (parse_value(&series[..i])?, parse_value(&series[i..])?),
                None => (parse_value(series)?, 0.0),
            };
            for n in 0..=times {
                values.push(Some(base + delta * n as f64));
            }
            continue;
        }
        values.push(Some(parse_value(item)?));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_blocks_loads_and_evals() {
        let script = r#"
# a comment
clear
load
  {app="a", x=""} `{"a":1} # not a comment` @ 20s [repeat every 20s for 3] [metadata lvl="info" "k 2"="v"]
  # a comment inside the block
  {app="b"} "plain" @ 1m30s

eval range from 40s to 80s step 20s count_over_time({app="a"} [1m]) # overlapping
  {app="a", empty=""} 1+1x2
  {app="b"} _ 2 NaN
eval instant at 60s 1 + 1
  2
eval instant at 60s bad(
  expect fail msg: syntax error
"#;
        let commands = parse(script);
        assert_eq!(commands[0], Command::Clear);
        let Command::Load(loads) = &commands[1] else {
            panic!("{:?}", commands[1])
        };
        assert_eq!(loads.len(), 2);
        assert_eq!(loads[0].text, r#"{"a":1} # not a comment"#);
        assert_eq!(loads[0].stream, Labels::from_pairs([("app", "a")]));
        assert_eq!(loads[0].start, TIME_BASE_NS + 20_000_000_000);
        assert_eq!((loads[0].every, loads[0].count), (20_000_000_000, 3));
        assert_eq!(loads[0].metadata.get("k 2"), Some("v"));
        assert_eq!(loads[1].start, TIME_BASE_NS + 90_000_000_000);
        let Command::Eval(eval) = &commands[2] else {
            panic!("{:?}", commands[2])
        };
        assert_eq!(eval.query, r#"count_over_time({app="a"} [1m])"#);
        let Expectation::Series(series) = &eval.expect else {
            panic!()
        };
        assert_eq!(series[0].0.get("empty"), Some(""));
        assert_eq!(series[0].1, vec![Some(1.0), Some(2.0), Some(3.0)]);
        assert_eq!(series[1].1[0], None);
        assert!(matches!(&commands[3], Command::Eval(Eval { expect: Expectation::Scalar(v), .. }) if *v == 2.0));
        assert!(matches!(
            &commands[4],
            Command::Eval(Eval { expect: Expectation::Fail(FailMatch::Contains(m)), .. }) if m == "syntax error"
        ));
    }

    #[test]
    fn malformed_lines_are_reported() {
        let commands = parse("load\n  {app=\"a\"} \"x\" @ 1q\neval instant at 1s 1\n");
        assert!(matches!(commands[0], Command::Invalid { line: 1, .. }));
        assert!(
            matches!(commands[1], Command::Invalid { line: 3, .. }),
            "{:?}",
            commands[1]
        );
    }
}
