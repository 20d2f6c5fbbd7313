//! Reading `promqltest` scripts (see `conformance/promql/FORMAT.md`) into commands.

use std::collections::BTreeMap;
use std::sync::Arc;

use tidewatch_model::histogram::{Bucket, CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram};
use tidewatch_model::{Labels, is_stale_nan, stale_nan};

/// One command of a script, with the line it starts on.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    Load(Load),
    Clear,
    Eval(Box<Eval>),
    /// A line or block the runner cannot use; its evals are reported, not run.
    Invalid {
        line: usize,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub line: usize,
    pub interval_ms: i64,
    /// Series in order of appearance (a later line for the same labels wins).
    pub series: Vec<(Labels, Values)>,
    /// Start-timestamp offsets of the series that had an `@st` line.
    pub start_offsets: BTreeMap<Labels, StartOffsets>,
}

/// The offsets of an `@st` line, one per value of its series line: a
/// sample's start timestamp is its own timestamp plus the offset (`None`:
/// the sample has none).
pub(crate) type StartOffsets = Vec<Option<i64>>;

/// What an eval asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Query {
    Instant { at_ms: i64 },
    Range { start_ms: i64, end_ms: i64, step_ms: i64 },
}

/// An expected annotation line (`expect warn msg: …`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TextMatch {
    Any,
    Exact(String),
    Regex(String),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Expectations {
    pub fail: Option<TextMatch>,
    pub warn: Vec<TextMatch>,
    pub no_warn: bool,
    pub info: Vec<TextMatch>,
    pub no_info: bool,
    pub ordered: bool,
    /// `eval_warn` / `eval_info`: at least one of the kind.
    pub some_warn: bool,
    pub some_info: bool,
    /// `expect range vector from … to … step …`.
    pub range_vector: Option<(i64, i64, i64)>,
    pub string: Option<String>,
    pub scalar: Option<f64>,
    /// Expected series in order; values as in `load` (`None` = no point).
    pub series: Vec<(Labels, Values)>,
    /// Why the expectations cannot be checked here.
    pub unsupported: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Eval {
    pub line: usize,
    pub expr: String,
    pub query: Query,
    pub expect: Expectations,
}

/// Splits a script into commands.
pub(crate) fn parse(text: &str) -> Vec<Command> {
    // Comments become empty lines, which end blocks.
    let lines: Vec<(usize, &str)> = text
        .split('\n')
        .enumerate()
        .map(|(i, raw)| {
            let line = raw.trim();
            let line: &str = if line.starts_with('#') { &line[..0] } else { line };
            (i + 1, line)
        })
        .collect();
    let mut commands = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (number, line) = lines[i];
        i += 1;
        if line.is_empty() {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("").to_lowercase();
        // A block runs to the next empty line.
        let block_end = lines[i..]
            .iter()
            .position(|(_, l)| l.is_empty())
            .map_or(lines.len(), |p| i + p);
        let body = &lines[i..block_end];
        if first == "clear" {
            commands.push(Command::Clear);
        } else if first.starts_with("load") {
            i = block_end;
            commands.push(match parse_load(number, line, body) {
                Ok(load) => Command::Load(load),
                Err(message) => Command::Invalid { line: number, message },
            });
        } else if first.starts_with("eval") {
            i = block_end;
            match parse_eval(number, line, body) {
                Ok(eval) => commands.push(Command::Eval(Box::new(eval))),
                Err(message) => commands.push(Command::Invalid { line: number, message }),
            }
        } else {
            commands.push(Command::Invalid {
                line: number,
                message: format!("unknown command {line:?}"),
            });
        }
    }
    commands
}

fn parse_load(number: usize, header: &str, body: &[(usize, &str)]) -> Result<Load, String> {
    let mut words = header.split_whitespace();
    let keyword = words.next().unwrap_or("");
    let interval = words.next().ok_or("load without an interval")?;
    if words.next().is_some() {
        return Err(format!("unexpected text after the interval in {header:?}"));
    }
    let interval_ms = parse_duration(interval).ok_or_else(|| format!("bad interval {interval:?}"))?;
    let with_nhcb = match keyword {
        "load" => false,
        "load_with_nhcb" => true,
        other => return Err(format!("unknown command {other:?}")),
    };
    let mut series: BTreeMap<Labels, usize> = BTreeMap::new();
    let mut ordered: Vec<(Labels, Values)> = Vec::new();
    let mut start_offsets: BTreeMap<Labels, StartOffsets> = BTreeMap::new();
    // An `@st` line waiting for its series line: (line number, labels, offsets).
    let mut pending: Option<(usize, Labels, StartOffsets)> = None;
    for &(line_number, line) in body {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some(metric) = first.strip_suffix("@st") {
            if let Some((pending_line, ..)) = pending {
                return Err(format!("line {pending_line}: @st line has no following sample line"));
            }
            let at = |e: String| format!("line {line_number}: {e}");
            let (labels, rest) = parse_series_labels(metric).map_err(at)?;
            if !rest.trim().is_empty() {
                return Err(at(format!("unexpected {rest:?} before @st")));
            }
            let offsets = parse_start_offsets(&line[first.len()..]).map_err(at)?;
            pending = Some((line_number, labels, offsets));
            continue;
        }
        let (labels, values) = parse_series_line(line).map_err(|e| format!("line {line_number}: {e}"))?;
        match pending.take() {
            Some((pending_line, st_labels, offsets)) => {
                if st_labels != labels {
                    return Err(format!(
                        "line {pending_line}: @st metric does not match the following sample line metric"
                    ));
                }
                if offsets.len() != values.len() {
                    return Err(format!(
                        "line {pending_line}: @st line has {} values but sample line has {}",
                        offsets.len(),
                        values.len()
                    ));
                }
                start_offsets.insert(labels.clone(), offsets);
            }
            // A series line without `@st` replaces one with it.
            None => {
                start_offsets.remove(&labels);
            }
        }
        match series.get(&labels) {
            Some(&index) => ordered[index].1 = values,
            None => {
                series.insert(labels.clone(), ordered.len());
                ordered.push((labels, values));
            }
        }
    }
    if let Some((pending_line, ..)) = pending {
        return Err(format!("line {pending_line}: @st line has no following sample line"));
    }
    if with_nhcb {
        // Built histograms carry no start timestamps.
        for (labels, values) in nhcb_series(&ordered)? {
            start_offsets.remove(&labels);
            match series.get(&labels) {
                Some(&index) => ordered[index].1 = values,
                None => {
                    series.insert(labels.clone(), ordered.len());
                    ordered.push((labels, values));
                }
            }
        }
    }
    Ok(Load {
        line: number,
        interval_ms,
        series: ordered,
        start_offsets,
    })
}

/// The classic histogram parts of one NHCB: bucket series by upper bound,
/// the `_count` and `_sum` series.
#[derive(Default)]
struct ClassicParts<'a> {
    buckets: Vec<(f64, &'a Values)>,
    count: Option<&'a Values>,
    sum: Option<&'a Values>,
}

/// The native histograms with custom buckets `load_with_nhcb` adds for the
/// classic histograms of a load block (FORMAT.md §3).
fn nhcb_series(series: &[(Labels, Values)]) -> Result<Vec<(Labels, Values)>, String> {
    let mut groups: BTreeMap<Labels, ClassicParts> = BTreeMap::new();
    for (labels, values) in series {
        let Some(base) = nhcb_base(labels) else { continue };
        let name = labels.metric_name().unwrap_or_default();
        let parts = groups.entry(base).or_default();
        if name.ends_with("_bucket") {
            let Some(le) = labels.get("le").and_then(parse_number).filter(|b| !b.is_nan()) else {
                continue;
            };
            parts.buckets.push((le, values));
        } else if name.ends_with("_count") {
            parts.count = Some(values);
        } else {
            parts.sum = Some(values);
        }
    }
    let mut out = Vec::new();
    for (labels, mut parts) in groups {
        if parts.buckets.is_empty() {
            continue;
        }
        parts.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let length = parts
            .buckets
            .iter()
            .map(|(_, v)| v.len())
            .chain(parts.count.map(Vec::len))
            .chain(parts.sum.map(Vec::len))
            .max()
            .unwrap_or(0);
        let float_at = |values: &Values, i: usize| match values.get(i) {
            Some(Some(Val::Float(v))) if !is_stale_nan(*v) => Some(*v),
            _ => None,
        };
        let mut values: Values = Vec::with_capacity(length);
        for i in 0..length {
            let cumulative: Vec<(f64, f64)> = parts
                .buckets
                .iter()
                .filter_map(|(le, v)| float_at(v, i).map(|c| (*le, c)))
                .collect();
            let count = parts.count.and_then(|v| float_at(v, i));
            let sum = parts.sum.and_then(|v| float_at(v, i));
            if cumulative.is_empty() && count.is_none() && sum.is_none() {
                values.push(None);
                continue;
            }
            let mut cumulative = cumulative;
            let total = count.or_else(|| cumulative.last().map(|b| b.1)).unwrap_or(0.0);
            if cumulative.last().is_none_or(|b| b.0 != f64::INFINITY) {
                cumulative.push((f64::INFINITY, total));
            }
            let mut previous = 0.0;
            let mut buckets = Vec::with_capacity(cumulative.len());
            for (index, &(_, c)) in cumulative.iter().enumerate() {
                if c < 0.0 {
                    return Err(format!("negative bucket count {c} in classic histogram {labels}"));
                }
                if c < previous {
                    return Err(format!(
                        "bucket counts of classic histogram {labels} are not cumulative"
                    ));
                }
                buckets.push(Bucket {
                    index: index as i32,
                    count: c - previous,
                });
                previous = c;
            }
            if count.is_some_and(|c| c != previous) {
                return Err(format!(
                    "count of classic histogram {labels} differs from its +Inf bucket"
                ));
            }
            let bounds: Vec<f64> = cumulative[..cumulative.len() - 1].iter().map(|b| b.0).collect();
            values.push(Some(Val::Histogram(Box::new(HistogramValue {
                h: FloatHistogram {
                    schema: CUSTOM_BUCKETS_SCHEMA,
                    count: total,
                    sum: sum.unwrap_or(0.0),
                    positive: buckets,
                    custom_values: Arc::from(bounds),
                    ..FloatHistogram::default()
                },
                hint_given: false,
            }))));
        }
        out.push((labels, values));
    }
    Ok(out)
}

/// The native histogram `load_with_nhcb` builds from a classic histogram
/// series: the name without `_bucket`/`_count`/`_sum`, no `le`.
fn nhcb_base(labels: &Labels) -> Option<Labels> {
    let name = labels.metric_name()?;
    let base = ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))?;
    let pairs = labels.iter().filter(|l| l.name != "le").map(|l| {
        if l.name == "__name__" {
            (l.name.clone(), base.to_string())
        } else {
            (l.name.clone(), l.value.clone())
        }
    });
    Some(Labels::from_pairs(pairs))
}

fn parse_eval(number: usize, header: &str, body: &[(usize, &str)]) -> Result<Eval, String> {
    let (keyword, rest) = header.split_once(char::is_whitespace).ok_or("eval without a query")?;
    let rest = rest.trim_start();
    let mut expect = Expectations::default();
    match keyword {
        "eval" => {}
        "eval_fail" => expect.fail = Some(TextMatch::Any),
        "eval_warn" => expect.some_warn = true,
        "eval_info" => expect.some_info = true,
        "eval_ordered" => expect.ordered = true,
        other => return Err(format!("unknown command {other:?}")),
    }
    let (query, expr) = if let Some(rest) = rest.strip_prefix("instant") {
        let rest = rest
            .trim_start()
            .strip_prefix("at")
            .ok_or("expected `instant at`")?
            .trim_start();
        let (time, expr) = rest
            .split_once(char::is_whitespace)
            .ok_or("instant eval without a query")?;
        let at_ms = parse_duration(time).ok_or_else(|| format!("bad time {time:?}"))?;
        (Query::Instant { at_ms }, expr.trim())
    } else if let Some(rest) = rest.strip_prefix("range") {
        let words: Vec<&str> = rest.split_whitespace().collect();
        let [from, start, to, end, step_word, step, ..] = words.as_slice() else {
            return Err("expected `range from A to B step S EXPR`".to_string());
        };
        if (*from, *to, *step_word) != ("from", "to", "step") {
            return Err("expected `range from A to B step S EXPR`".to_string());
        }
        let start_ms = parse_duration(start).ok_or_else(|| format!("bad start {start:?}"))?;
        let end_ms = parse_duration(end).ok_or_else(|| format!("bad end {end:?}"))?;
        let step_ms = parse_duration(step).ok_or_else(|| format!("bad step {step:?}"))?;
        if end_ms < start_ms {
            return Err("range end before start".to_string());
        }
        // The expression is what follows the step word.
        let after_step = rest
            .find(&format!(" step {step}"))
            .map(|i| &rest[i + 6 + step.len()..])
            .unwrap_or("");
        (
            Query::Range {
                start_ms,
                end_ms,
                step_ms,
            },
            after_step.trim(),
        )
    } else {
        return Err(format!("expected `instant` or `range` in {header:?}"));
    };
    if expr.is_empty() {
        return Err("eval without a query".to_string());
    }
    let mut seen: BTreeMap<Labels, usize> = BTreeMap::new();
    for &(line_number, line) in body {
        if expect.scalar.is_some() {
            return Err(format!("line {line_number}: nothing may follow a scalar"));
        }
        if let Some(message) = line.strip_prefix("expected_fail_message") {
            expect.fail = Some(TextMatch::Exact(message.trim().to_string()));
            break;
        }
        if let Some(regex) = line.strip_prefix("expected_fail_regexp") {
            expect.fail = Some(TextMatch::Regex(regex.trim().to_string()));
            break;
        }
        let mut words = line.split_whitespace();
        if words.next() == Some("expect") {
            parse_expect_line(line, &mut expect).map_err(|e| format!("line {line_number}: {e}"))?;
            continue;
        }
        if let Some(value) = parse_scalar_line(line) {
            expect.scalar = Some(value);
            continue;
        }
        let (labels, values) = parse_series_line(line).map_err(|e| format!("line {line_number}: {e}"))?;
        if matches!(query, Query::Instant { .. }) && expect.range_vector.is_none() && values.len() > 1 {
            return Err(format!(
                "line {line_number}: an instant eval expects one value per series"
            ));
        }
        match seen.get(&labels) {
            Some(&index) => expect.series[index].1 = values,
            None => {
                seen.insert(labels.clone(), expect.series.len());
                expect.series.push((labels, values));
            }
        }
    }
    if let (Some((_, end, _)), Query::Instant { .. }) = (expect.range_vector, &query) {
        // `expect range vector` moves the evaluation to its end.
        return Ok(Eval {
            line: number,
            expr: expr.to_string(),
            query: Query::Instant { at_ms: end },
            expect,
        });
    }
    Ok(Eval {
        line: number,
        expr: expr.to_string(),
        query,
        expect,
    })
}

fn parse_expect_line(line: &str, expect: &mut Expectations) -> Result<(), String> {
    let rest = line["expect".len()..].trim_start();
    if let Some(range) = rest.strip_prefix("range vector") {
        let words: Vec<&str> = range.split_whitespace().collect();
        let ["from", start, "to", end, "step", step] = words.as_slice() else {
            return Err("expected `expect range vector from A to B step S`".to_string());
        };
        let parse = |w: &str| parse_duration(w).ok_or_else(|| format!("bad duration {w:?}"));
        expect.range_vector = Some((parse(start)?, parse(end)?, parse(step)?));
        return Ok(());
    }
    if let Some(text) = rest.strip_prefix("string") {
        expect.string = Some(unquote(text.trim()).ok_or_else(|| format!("bad string {text:?}"))?);
        return Ok(());
    }
    let (kind, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let tail = tail.trim();
    let text = if let Some(message) = tail.strip_prefix("msg:") {
        TextMatch::Exact(message.trim().to_string())
    } else if let Some(regex) = tail.strip_prefix("regex:") {
        TextMatch::Regex(regex.trim().to_string())
    } else if tail.is_empty() {
        TextMatch::Any
    } else {
        return Err(format!("unexpected {tail:?} after `expect {kind}`"));
    };
    match kind {
        "fail" => {
            if expect.fail.is_some() {
                return Err("more than one `expect fail`".to_string());
            }
            expect.fail = Some(text);
        }
        "warn" => expect.warn.push(text),
        "no_warn" => expect.no_warn = true,
        "info" => expect.info.push(text),
        "no_info" => expect.no_info = true,
        "ordered" => expect.ordered = true,
        other => return Err(format!("unknown expectation {other:?}")),
    }
    if expect.no_warn && !expect.warn.is_empty() {
        return Err("`expect warn` together with `expect no_warn`".to_string());
    }
    if expect.no_info && !expect.info.is_empty() {
        return Err("`expect info` together with `expect no_info`".to_string());
    }
    Ok(())
}

/// A line that is only a number: an expected scalar. Go integer syntax with
/// base prefixes first, then floats.
fn parse_scalar_line(line: &str) -> Option<f64> {
    let text = line.trim();
    if text.contains(char::is_whitespace) {
        return None;
    }
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let integer = if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()
    } else if let Some(octal) = digits.strip_prefix("0o").or_else(|| digits.strip_prefix("0O")) {
        i64::from_str_radix(octal, 8).ok()
    } else if let Some(binary) = digits.strip_prefix("0b").or_else(|| digits.strip_prefix("0B")) {
        i64::from_str_radix(binary, 2).ok()
    } else {
        None
    };
    if let Some(value) = integer {
        return Some(if negative { -(value as f64) } else { value as f64 });
    }
    parse_number(text)
}

/// A number as series lines write it: decimal floats, `Inf`, `NaN`, signed.
pub(crate) fn parse_number(text: &str) -> Option<f64> {
    let (sign, body) = match text.as_bytes().first() {
        Some(b'-') => (-1.0, &text[1..]),
        Some(b'+') => (1.0, &text[1..]),
        _ => (1.0, text),
    };
    let lower = body.to_ascii_lowercase();
    let value = match lower.as_str() {
        "inf" | "infinity" => f64::INFINITY,
        "nan" => f64::NAN,
        _ if body.starts_with(|c: char| c.is_ascii_digit() || c == '.') => body.parse::<f64>().ok()?,
        _ => return None,
    };
    Some(sign * value)
}

/// One value of a series line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Float(f64),
    Histogram(Box<HistogramValue>),
}

/// A native histogram value, and whether its literal spelled out the
/// counter-reset hint (an expectation checks the hint only then).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HistogramValue {
    pub h: FloatHistogram,
    pub hint_given: bool,
}

/// The values of a series line, one per interval (`None` = no sample).
pub(crate) type Values = Vec<Option<Val>>;

/// `metric{labels} values…`.
pub(crate) fn parse_series_line(line: &str) -> Result<(Labels, Values), String> {
    let (labels, rest) = parse_series_labels(line)?;
    Ok((labels, parse_values(rest)?))
}

fn parse_series_labels(line: &str) -> Result<(Labels, &str), String> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':') {
        i += 1;
    }
    let name = &line[..i];
    let mut pairs: Vec<(String, String)> = Vec::new();
    if !name.is_empty() {
        pairs.push(("__name__".to_string(), name.to_string()));
    }
    let rest = &line[i..];
    if !rest.starts_with('{') {
        if name.is_empty() {
            return Err(format!("no series in {line:?}"));
        }
        return Ok((Labels::from_pairs(pairs), rest));
    }
    let mut chars = rest.char_indices().skip(1).peekable();
    loop {
        // Skip whitespace and commas between items.
        while let Some(&(_, c)) = chars.peek() {
            if c.is_whitespace() || c == ',' {
                chars.next();
            } else {
                break;
            }
        }
        let Some(&(position, c)) = chars.peek() else {
            return Err(format!("unterminated label set in {line:?}"));
        };
        if c == '}' {
            return Ok((Labels::from_pairs(pairs), &rest[position + 1..]));
        }
        let label_name = if c == '"' || c == '\'' || c == '`' {
            let (text, end) = read_quoted(rest, position).ok_or_else(|| format!("bad string in {line:?}"))?;
            while chars.peek().is_some_and(|&(p, _)| p < end) {
                chars.next();
            }
            text
        } else {
            let mut name = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            if name.is_empty() {
                return Err(format!("unexpected {c:?} in {line:?}"));
            }
            name
        };
        while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            Some(&(_, '=')) => {
                chars.next();
                while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
                    chars.next();
                }
                let Some(&(position, _)) = chars.peek() else {
                    return Err(format!("unterminated label set in {line:?}"));
                };
                let (value, end) = read_quoted(rest, position).ok_or_else(|| format!("bad label value in {line:?}"))?;
                while chars.peek().is_some_and(|&(p, _)| p < end) {
                    chars.next();
                }
                pairs.push((label_name, value));
            }
            // A lone quoted string names the metric.
            _ => pairs.push(("__name__".to_string(), label_name)),
        }
    }
}

/// Reads a PromQL string literal starting at byte `start`; returns the text
/// and the byte offset after the closing quote.
fn read_quoted(text: &str, start: usize) -> Option<(String, usize)> {
    let quote = text[start..].chars().next()?;
    let body_start = start + quote.len_utf8();
    if quote == '`' {
        let end = text[body_start..].find('`')? + body_start;
        return Some((text[body_start..end].to_string(), end + 1));
    }
    let mut escaped = false;
    for (offset, c) in text[body_start..].char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
        } else if c == quote {
            let end = body_start + offset;
            return Some((unescape(&text[body_start..end])?, end + 1));
        }
    }
    None
}

/// A quoted string (double quotes or back quotes) as `expect string` writes it.
fn unquote(text: &str) -> Option<String> {
    let (value, end) = read_quoted(text, 0)?;
    (end == text.len()).then_some(value)
}

/// Go/PromQL escapes: `\n \t \\ \" \' \xNN \uNNNN \UNNNNNNNN \NNN` and friends.
fn unescape(body: &str) -> Option<String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let next = chars.next()?;
        match next {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            '\\' | '"' | '\'' | '`' => out.push(next),
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            'u' | 'U' => {
                let len = if next == 'u' { 4 } else { 8 };
                let hex: String = chars.by_ref().take(len).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            '0'..='7' => {
                let rest: String = chars.by_ref().take(2).collect();
                let octal = format!("{next}{rest}");
                out.push(char::from_u32(u32::from_str_radix(&octal, 8).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The items of an `@st` line after its metric (FORMAT.md §3): `_` (one
/// sample without a start timestamp), `_xN` (N of them), and signed
/// durations `d` (one), `dxN` (N+1 alike), `d+exN` / `d-exN` (N+1, the
/// offset growing or shrinking by `e` each time).
fn parse_start_offsets(text: &str) -> Result<StartOffsets, String> {
    let mut offsets = Vec::new();
    for item in text.split_whitespace() {
        expand_start_offset(item, &mut offsets).map_err(|e| format!("invalid @st item {item:?}: {e}"))?;
    }
    Ok(offsets)
}

fn expand_start_offset(item: &str, offsets: &mut StartOffsets) -> Result<(), String> {
    if item == "_" {
        offsets.push(None);
        return Ok(());
    }
    if let Some(count) = item.strip_prefix("_x") {
        let count: usize = count.parse().map_err(|_| "bad repetition count")?;
        if count == 0 {
            return Err("bad repetition count".to_string());
        }
        offsets.extend(std::iter::repeat_n(None, count));
        return Ok(());
    }
    let (base, rest) = signed_duration_prefix(item)?;
    let (step, rest) = match rest.as_bytes().first() {
        Some(b'+' | b'-') => {
            let (step, after) = signed_duration_prefix(rest)?;
            if !after.starts_with('x') {
                return Err("expected x<count> after the step".to_string());
            }
            (step, after)
        }
        _ => (0, rest),
    };
    let times: usize = match rest.strip_prefix('x') {
        Some(count) => count.parse().map_err(|_| "bad repetition count")?,
        None if rest.is_empty() => 0,
        None => return Err(format!("unexpected {rest:?} after the duration")),
    };
    let mut offset = base;
    for _ in 0..=times {
        offsets.push(Some(offset));
        offset = offset.checked_add(step).ok_or("offset out of range")?;
    }
    Ok(())
}

/// A duration with an optional sign at the start of `text` (its units run
/// up to an `x`, sign or the end), in milliseconds, and what follows it.
fn signed_duration_prefix(text: &str) -> Result<(i64, &str), String> {
    let bytes = text.as_bytes();
    let mut end = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let digits_start = end;
    while end < bytes.len() && (bytes[end].is_ascii_digit() || (bytes[end].is_ascii_alphabetic() && bytes[end] != b'x'))
    {
        end += 1;
    }
    if end == digits_start || !bytes[digits_start].is_ascii_digit() {
        return Err(format!("expected a duration in {text:?}"));
    }
    let duration = parse_duration(&text[..end]).ok_or_else(|| format!("bad duration {:?}", &text[..end]))?;
    Ok((duration, &text[end..]))
}

/// The value items of a series line (FORMAT.md §4).
fn parse_values(text: &str) -> Result<Values, String> {
    let mut values = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        if rest.starts_with("{{") {
            rest = expand_histogram_item(rest, &mut values)?;
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let mut floats = Vec::new();
            expand_item(&rest[..end], &mut floats)?;
            values.extend(floats.into_iter().map(|v| v.map(Val::Float)));
            rest = &rest[end..];
        }
        rest = rest.trim_start();
    }
    Ok(values)
}

/// `{{h}}`, `{{h}}xN`, `{{h}}+{{d}}xN` or `{{h}}-{{d}}xN` at the start of
/// `text`; returns what follows the item.
fn expand_histogram_item<'t>(text: &'t str, values: &mut Values) -> Result<&'t str, String> {
    let (base, base_hint, rest) = histogram_literal(text)?;
    let (step, rest) = match rest.as_bytes().first() {
        Some(sign @ (b'+' | b'-')) if rest[1..].starts_with("{{") => {
            let (delta, delta_hint, rest) = histogram_literal(&rest[1..])?;
            (Some((*sign == b'-', delta, delta_hint)), rest)
        }
        _ => (None, rest),
    };
    let (times, rest) = match rest.strip_prefix('x') {
        Some(count) => {
            let end = count.find(|c: char| !c.is_ascii_digit()).unwrap_or(count.len());
            let times: usize = count[..end]
                .parse()
                .map_err(|_| format!("bad repetition after histogram in {text:?}"))?;
            (Some(times), &count[end..])
        }
        None => (None, rest),
    };
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return Err(format!("unexpected {rest:?} after a histogram"));
    }
    let push = |values: &mut Values, h: FloatHistogram, hint_given: bool| {
        values.push(Some(Val::Histogram(Box::new(HistogramValue { h, hint_given }))));
    };
    match (step, times) {
        (None, None) => push(values, base, base_hint),
        (None, Some(times)) => {
            for _ in 0..=times {
                push(values, base.clone(), base_hint);
            }
        }
        (Some((subtract, delta, delta_hint)), Some(times)) => {
            let mut current = base;
            push(values, current.clone(), delta_hint);
            for _ in 0..times {
                if current.schema > delta.schema && !current.uses_custom_buckets() {
                    return Err(format!(
                        "error combining histograms: cannot merge from schema {} to {}",
                        delta.schema, current.schema
                    ));
                }
                crate::engine::histogram::add(&mut current, &delta, subtract)
                    .map_err(|_| "cannot combine exponential and custom-bucket histograms".to_string())?;
                push(values, current.clone(), delta_hint);
            }
        }
        (Some(_), None) => return Err(format!("histogram sum without a repetition count in {text:?}")),
    }
    Ok(rest)
}

/// One `{{…}}` literal at the start of `text`: the histogram, whether it
/// spelled out its counter-reset hint, and what follows it.
fn histogram_literal(text: &str) -> Result<(FloatHistogram, bool, &str), String> {
    let body_start = text.strip_prefix("{{").ok_or("expected {{")?;
    let end = body_start.find("}}").ok_or("unterminated histogram")?;
    let (body, rest) = (&body_start[..end], &body_start[end + 2..]);
    let mut h = FloatHistogram::default();
    let (mut positive, mut negative) = (Vec::new(), Vec::new());
    let (mut offset, mut negative_offset) = (0i32, 0i32);
    let mut seen: Vec<String> = Vec::new();
    let mut hint_given = false;
    let mut cursor = body.trim_start();
    while !cursor.is_empty() {
        let colon = cursor
            .find(':')
            .ok_or_else(|| format!("expected key:value in {body:?}"))?;
        let key = cursor[..colon].trim().to_ascii_lowercase();
        if seen.contains(&key) {
            return Err(format!("duplicate key {key:?} in histogram"));
        }
        seen.push(key.clone());
        let after = cursor[colon + 1..].trim_start();
        let (value, next) = if let Some(list) = after.strip_prefix('[') {
            let close = list.find(']').ok_or("unterminated list in histogram")?;
            (&list[..close], &list[close + 1..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        let number = |v: &str| parse_number(v).ok_or_else(|| format!("bad number {v:?} for {key}"));
        let integer = |v: &str| v.parse::<i32>().map_err(|_| format!("bad integer {v:?} for {key}"));
        let list = |v: &str| v.split_whitespace().map(number).collect::<Result<Vec<f64>, String>>();
        match key.as_str() {
            "schema" => h.schema = integer(value)?,
            "sum" => h.sum = number(value)?,
            "count" => h.count = number(value)?,
            "z_bucket" => h.zero_count = number(value)?,
            "z_bucket_w" => h.zero_threshold = number(value)?,
            "buckets" => positive = list(value)?,
            "n_buckets" => negative = list(value)?,
            "offset" => offset = integer(value)?,
            "n_offset" => negative_offset = integer(value)?,
            "custom_values" => h.custom_values = Arc::from(list(value)?),
            "counter_reset_hint" => {
                hint_given = true;
                h.counter_reset_hint = match value {
                    "unknown" => CounterResetHint::Unknown,
                    "reset" => CounterResetHint::CounterReset,
                    "not_reset" => CounterResetHint::NotCounterReset,
                    "gauge" => CounterResetHint::Gauge,
                    other => return Err(format!("bad counter_reset_hint {other:?}")),
                }
            }
            other => return Err(format!("unknown histogram key {other:?}")),
        }
        cursor = next.trim_start();
    }
    let buckets_at = |start: i32, counts: Vec<f64>| {
        counts
            .into_iter()
            .enumerate()
            .map(|(i, count)| Bucket {
                index: start + i as i32,
                count,
            })
            .collect()
    };
    h.positive = buckets_at(offset, positive);
    h.negative = buckets_at(negative_offset, negative);
    Ok((h, hint_given, rest))
}

fn expand_item(token: &str, values: &mut Vec<Option<f64>>) -> Result<(), String> {
    if token == "_" {
        values.push(None);
        return Ok(());
    }
    if token == "stale" {
        values.push(Some(stale_nan()));
        return Ok(());
    }
    // A trailing `xN` repeats; everything before it is `a` or `a±b`.
    let (head, times) = match token.rfind('x') {
        Some(x) if x > 0 && token[x + 1..].chars().all(|c| c.is_ascii_digit()) && x + 1 < token.len() => {
            let times: usize = token[x + 1..].parse().map_err(|_| format!("bad count in {token:?}"))?;
            (&token[..x], Some(times))
        }
        _ => (token, None),
    };
    if head == "_" {
        let times = times.ok_or_else(|| format!("bad value {token:?}"))?;
        values.extend(std::iter::repeat_n(None, times));
        return Ok(());
    }
    // Split `a+b` / `a-b` at a sign that is neither leading nor an exponent's.
    let bytes = head.as_bytes();
    let split =
        (1..bytes.len()).find(|&i| (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
    match (split, times) {
        (None, None) => values.push(Some(parse_number(head).ok_or_else(|| format!("bad value {token:?}"))?)),
        (None, Some(times)) => {
            let value = parse_number(head).ok_or_else(|| format!("bad value {token:?}"))?;
            values.extend(std::iter::repeat_n(Some(value), times + 1));
        }
        (Some(at), Some(times)) => {
            let start = parse_number(&head[..at]).ok_or_else(|| format!("bad value {token:?}"))?;
            let step = parse_number(&head[at..]).ok_or_else(|| format!("bad step in {token:?}"))?;
            // Repeated addition, as the reference harness computes it.
            let mut current = start;
            values.push(Some(current));
            for _ in 0..times {
                current += step;
                values.push(Some(current));
            }
        }
        (Some(_), None) => return Err(format!("bad value {token:?}")),
    }
    Ok(())
}

/// A script duration: `0`, or `<int><unit>` groups (`1h30m`, `10s53ms`),
/// optionally signed.
pub(crate) fn parse_duration(text: &str) -> Option<i64> {
    let (sign, body) = match text.as_bytes().first() {
        Some(b'-') => (-1, &text[1..]),
        Some(b'+') => (1, &text[1..]),
        _ => (1, text),
    };
    if body == "0" {
        return Some(0);
    }
    let mut total: i64 = 0;
    let bytes = body.as_bytes();
    let mut i = 0;
    if bytes.is_empty() {
        return None;
    }
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let number: i64 = body[start..i].parse().ok()?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_ms = match &body[unit_start..i] {
            "y" => 365 * 24 * 3_600_000,
            "w" => 7 * 24 * 3_600_000,
            "d" => 24 * 3_600_000,
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1000,
            "ms" => 1,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(unit_ms)?)?;
    }
    Some(sign * total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(text: &str) -> Vec<Option<f64>> {
        parse_values(text)
            .unwrap()
            .into_iter()
            .map(|v| match v {
                None => None,
                Some(Val::Float(f)) => Some(f),
                Some(Val::Histogram(_)) => panic!("histogram"),
            })
            .collect()
    }

    fn histograms(text: &str) -> Vec<HistogramValue> {
        parse_values(text)
            .unwrap()
            .into_iter()
            .map(|v| match v {
                Some(Val::Histogram(h)) => *h,
                other => panic!("not a histogram: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn value_items_expand_with_the_right_counts() {
        assert_eq!(floats("1 _ 3"), [Some(1.0), None, Some(3.0)]);
        assert_eq!(floats("5x2"), [Some(5.0); 3]);
        assert_eq!(floats("_x3"), [None; 3]);
        assert_eq!(floats("0+10x3"), [Some(0.0), Some(10.0), Some(20.0), Some(30.0)]);
        assert_eq!(floats("5-1x2"), [Some(5.0), Some(4.0), Some(3.0)]);
        assert_eq!(floats("-2+1x1"), [Some(-2.0), Some(-1.0)]);
        assert_eq!(
            floats("1e3 -Inf +Inf"),
            [Some(1000.0), Some(f64::NEG_INFINITY), Some(f64::INFINITY)]
        );
        assert_eq!(floats("1e-1+1e1x1"), [Some(0.1), Some(10.1)]);
        let stale = floats("stale");
        assert!(tidewatch_model::is_stale_nan(stale[0].unwrap()));
        assert!(floats("NaN")[0].unwrap().is_nan());
        assert_eq!(parse_values("{{schema:1 sum:3}} 1").unwrap().len(), 2);
    }

    #[test]
    fn histogram_literals_and_expansions() {
        let [h] = &histograms(
            "{{schema:1 sum:-3 count:4 z_bucket:1 z_bucket_w:0.5 buckets:[1 2] offset:-1 n_buckets:[0.5] custom_values:[] counter_reset_hint:gauge}}",
        )[..] else {
            panic!()
        };
        assert!(h.hint_given);
        assert_eq!(h.h.schema, 1);
        assert_eq!(h.h.sum, -3.0);
        assert_eq!(h.h.zero_threshold, 0.5);
        assert_eq!(
            h.h.positive,
            vec![Bucket { index: -1, count: 1.0 }, Bucket { index: 0, count: 2.0 }]
        );
        assert_eq!(h.h.negative, vec![Bucket { index: 0, count: 0.5 }]);
        assert_eq!(h.h.counter_reset_hint, CounterResetHint::Gauge);
        let grown = histograms("{{sum:1 count:1 buckets:[1]}}+{{sum:2 count:2 buckets:[2]}}x2");
        let counts: Vec<f64> = grown.iter().map(|v| v.h.count).collect();
        assert_eq!(counts, [1.0, 3.0, 5.0]);
        assert!(!grown[2].hint_given);
        assert_eq!(histograms("{{}}x2").len(), 3);
        assert!(parse_values("{{schema:1 schema:2}}").is_err());
        assert!(parse_values("{{schema:0}}+{{schema:1}}x1").is_ok());
        assert!(parse_values("{{schema:0}}+{{schema:-1}}x1").is_err());
    }

    #[test]
    fn nhcb_is_built_from_classic_buckets() {
        let load = parse_load(
            1,
            "load_with_nhcb 1m",
            &[
                (2, "m_bucket{le=\"1\"} 1 2"),
                (3, "m_bucket{le=\"+Inf\"} 3 5"),
                (4, "m_sum 4 9"),
                (5, "m_count 3 5"),
            ],
        )
        .unwrap();
        let (labels, values) = load.series.last().unwrap();
        assert_eq!(labels.metric_name(), Some("m"));
        let Some(Val::Histogram(second)) = &values[1] else {
            panic!()
        };
        assert_eq!(&second.h.custom_values[..], &[1.0]);
        assert_eq!(
            second.h.positive,
            vec![Bucket { index: 0, count: 2.0 }, Bucket { index: 1, count: 3.0 }]
        );
        assert_eq!((second.h.count, second.h.sum), (5.0, 9.0));
    }

    #[test]
    fn expansion_accumulates_rounding_like_repeated_addition() {
        let values = floats("0+0.1x3");
        assert_eq!(values[3], Some(0.1 + 0.1 + 0.1));
        assert_ne!(values[3], Some(0.3));
    }

    #[test]
    fn series_labels_parse_with_escapes_and_quoted_names() {
        let (labels, values) = parse_series_line(r#"http_requests{job="api\"x", path='/a b'} 1 2"#).unwrap();
        assert_eq!(labels.get("__name__"), Some("http_requests"));
        assert_eq!(labels.get("job"), Some("api\"x"));
        assert_eq!(labels.get("path"), Some("/a b"));
        assert_eq!(values, vec![Some(Val::Float(1.0)), Some(Val::Float(2.0))]);
        let (labels, _) = parse_series_line(r#"{"my.metric", a="b",} 1"#).unwrap();
        assert_eq!(labels.get("__name__"), Some("my.metric"));
        let (labels, _) = parse_series_line("{} 5").unwrap();
        assert!(labels.is_empty());
    }

    #[test]
    fn durations_and_scalars() {
        assert_eq!(parse_duration("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration("10s53ms"), Some(10_053));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("-1m"), Some(-60_000));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_scalar_line("0x10"), Some(16.0));
        assert_eq!(parse_scalar_line("-0.5"), Some(-0.5));
        assert_eq!(parse_scalar_line("{} 5"), None);
        assert_eq!(parse_scalar_line("metric"), None);
    }

    #[test]
    fn commands_and_expectations_parse() {
        let script = "load 5m\n  m{a=\"1\"} 0+1x2\n\n# comment\neval instant at 10m m\n  expect no_warn\n  expect info msg: PromQL info: x (1:1)\n  m{a=\"1\"} 2\n\neval range from 0 to 10m step 5m m\n  m{a=\"1\"} 0 1 _\n\neval_fail instant at 0 nope(\n\nclear\n";
        let commands = parse(script);
        assert!(matches!(&commands[0], Command::Load(load) if load.interval_ms == 300_000 && load.series.len() == 1));
        let Command::Eval(eval) = &commands[1] else {
            panic!("{commands:?}")
        };
        assert_eq!(eval.query, Query::Instant { at_ms: 600_000 });
        assert!(eval.expect.no_warn);
        assert_eq!(eval.expect.info, [TextMatch::Exact("PromQL info: x (1:1)".to_string())]);
        assert_eq!(eval.expect.series[0].1, [Some(Val::Float(2.0))]);
        let Command::Eval(range) = &commands[2] else { panic!() };
        assert_eq!(
            range.query,
            Query::Range {
                start_ms: 0,
                end_ms: 600_000,
                step_ms: 300_000
            }
        );
        assert_eq!(range.expr, "m");
        let Command::Eval(failing) = &commands[3] else { panic!() };
        assert_eq!(failing.expect.fail, Some(TextMatch::Any));
        assert!(matches!(commands[4], Command::Clear));
    }

    #[test]
    fn start_offset_items_expand_with_the_right_counts() {
        let offsets = |text: &str| parse_start_offsets(text).unwrap();
        assert_eq!(offsets("_ _x2"), [None, None, None]);
        assert_eq!(
            offsets("-1m -0ms 0 +1m 1ms"),
            [Some(-60_000), Some(0), Some(0), Some(60_000), Some(1)]
        );
        assert_eq!(offsets("-59999msx2"), [Some(-59_999); 3]);
        assert_eq!(offsets("-30s-1mx2"), [Some(-30_000), Some(-90_000), Some(-150_000)]);
        assert_eq!(offsets("0+1sx1 1m30s"), [Some(0), Some(1000), Some(90_000)]);
        for bad in ["_x0", "1", "1q", "1m+2m", "-", "x3", "1mx"] {
            assert!(parse_start_offsets(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn st_lines_attach_to_the_following_series_line() {
        let load = |body: &str| parse(&format!("load 1m\n{body}\n"));
        let commands = load("  m{a=\"1\"}@st _ -1m\n  m{a=\"1\"} 1 2\n  n 1 2");
        let Command::Load(loaded) = &commands[0] else {
            panic!("{commands:?}")
        };
        let m = Labels::from_pairs([("__name__", "m"), ("a", "1")]);
        assert_eq!(loaded.start_offsets.get(&m), Some(&vec![None, Some(-60_000)]));
        assert_eq!(loaded.start_offsets.len(), 1);
        // A later series line without @st replaces the offsets too.
        let commands = load("  m@st -1m\n  m 1\n  m 2");
        let Command::Load(loaded) = &commands[0] else { panic!() };
        assert!(loaded.start_offsets.is_empty());
        for broken in [
            "  m@st -1m",
            "  m@st -1m\n  n 1",
            "  m@st -1m -1m\n  m 1",
            "  m@st -1m\n  m@st -1m\n  m 1",
        ] {
            assert!(matches!(load(broken)[0], Command::Invalid { .. }), "{broken}");
        }
    }
}
