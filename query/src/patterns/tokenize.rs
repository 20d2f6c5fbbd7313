//! How Drain sees a line: as tokens, cut by one of three tokenizers chosen
//! from the stream's first line, and how a cluster's tokens are written back
//! as a pattern.
//!
//! Loki's pattern ingester (`pkg/pattern/drain/line_tokenizer.go`) has the
//! same three: plain lines are cut at spaces and punctuation, logfmt lines
//! into key and value tokens (time and trace-id values replaced by `<_>`),
//! JSON lines by their message field only. The rules below are Loki's, so a
//! pattern reads as Loki would print it and works as a `|>` line filter.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use super::raw_json::{self, RawValue};
use crate::logql::pipeline::LogfmtDecoder;

/// What a variable part of a pattern is written as.
pub(crate) const PARAM: &str = "<_>";
/// Longer lines (or JSON messages) are not tokenized, as in Loki.
pub(crate) const MAX_LINE_LENGTH: usize = 3000;
/// After this many tokens the rest of a line is one token (Loki's 127).
const MAX_TOKENS_BEFORE_REST: usize = 127;
/// JSON fields holding the message, in the order they are tried: Loki's
/// `pattern_ingester_tokenizable_json_fields_default`. Loki tries them in
/// map order (random); the first listed wins here.
pub(crate) const JSON_MESSAGE_FIELDS: [&str; 6] = ["log", "message", "msg", "msg_", "_msg", "content"];

/// A stream's line format, guessed from its first line as Loki guesses it
/// (`DetectLogFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Json,
    Logfmt,
    Unknown,
}

/// Loki's logfmt test, a whole-line match of `key=value` pairs. Go's `\w` is
/// ASCII and its `\s` is `[\t\n\f\r ]`, so the classes are spelled out.
static LOGFMT_LINE: LazyLock<Regex> = LazyLock::new(|| {
    let key = "[0-9A-Za-z_]+?";
    let value = r#"([^"][^\t\n\f\r ]*?|"[^\n]+?")"#;
    Regex::new(&format!("^({key}={value} )*?({key}={value})+$"))
        .unwrap_or_else(|_| unreachable!("the logfmt line pattern is valid"))
});

/// Unicode punctuation (Go's `unicode.IsPunct`: categories Pc, Pd, Ps, Pe, Pi, Pf, Po).
static PUNCTUATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\p{P}$").unwrap_or_else(|_| unreachable!("the punctuation class is valid")));

/// The format of a stream whose first line is `line`.
pub(crate) fn detect_format(line: &str) -> LogFormat {
    let bytes = line.as_bytes();
    if bytes.len() < 2 {
        return LogFormat::Unknown;
    }
    if bytes[0] == b'{' && bytes[bytes.len() - 1] == b'}' {
        return LogFormat::Json;
    }
    if LOGFMT_LINE.is_match(line) {
        return LogFormat::Logfmt;
    }
    LogFormat::Unknown
}

/// Spaces around the tokens of a plain line, so the pattern keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Spacing {
    /// Spaces before the first token. Loki's tokenizer loses these (and with
    /// them every later space); they are kept here so the pattern still
    /// matches its lines.
    pub(crate) leading: u32,
    /// Spaces after each token.
    pub(crate) after: Vec<u32>,
}

/// A line cut into tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tokenized<'a> {
    pub(crate) tokens: Vec<Cow<'a, str>>,
    /// For plain and JSON lines; logfmt patterns are re-encoded instead.
    pub(crate) spacing: Option<Spacing>,
}

/// One of Loki's three tokenizers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tokenizer {
    format: LogFormat,
}

impl Tokenizer {
    pub(crate) fn new(format: LogFormat) -> Self {
        Tokenizer { format }
    }

    /// The tokens of `line`, or `None` when this tokenizer cannot read it
    /// (too long, bad logfmt, no JSON message field): such lines count
    /// towards no pattern, as in Loki.
    pub(crate) fn tokenize<'a>(&self, line: &'a str) -> Option<Tokenized<'a>> {
        match self.format {
            LogFormat::Unknown => punctuation_tokens(line),
            LogFormat::Logfmt => logfmt_tokens(line),
            LogFormat::Json => {
                let message = json_message(line)?;
                if message.len() > MAX_LINE_LENGTH {
                    return None;
                }
                punctuation_tokens(message)
            }
        }
    }

    /// The pattern a cluster's tokens stand for, runs of `<_>` collapsed to one.
    pub(crate) fn join(&self, tokens: &[String], spacing: Option<&Spacing>) -> String {
        let joined = match self.format {
            LogFormat::Unknown => punctuation_join(tokens, spacing),
            LogFormat::Logfmt => logfmt_join(tokens),
            // The message sits somewhere inside the JSON line.
            LogFormat::Json => format!("{PARAM}{}{PARAM}", punctuation_join(tokens, spacing)),
        };
        collapse_params(joined)
    }
}

/// Whether a plain line is cut at `c`: spaces, `=`, and punctuation other
/// than `_ - . : /` (which stay inside tokens such as paths, times and
/// hostnames).
fn splits_at(c: char) -> bool {
    if c.is_ascii() {
        return matches!(
            c,
            ' ' | '='
                | '!'
                | '"'
                | '#'
                | '%'
                | '&'
                | '\''
                | '('
                | ')'
                | '*'
                | ','
                | ';'
                | '?'
                | '@'
                | '['
                | '\\'
                | ']'
                | '{'
                | '}'
        );
    }
    if c.is_alphanumeric() {
        return false;
    }
    let mut buffer = [0u8; 4];
    PUNCTUATION.is_match(c.encode_utf8(&mut buffer))
}

/// Loki's punctuation tokenizer: words between spaces and punctuation, each
/// punctuation character a token of its own, spaces remembered but not
/// tokens. Go cuts a multi-byte punctuation character after its first byte;
/// here it stays whole (a Rust string cannot be cut inside a character),
/// which gives the same pattern text.
fn punctuation_tokens(line: &str) -> Option<Tokenized<'_>> {
    if line.len() > MAX_LINE_LENGTH {
        return None;
    }
    let mut tokens: Vec<Cow<'_, str>> = Vec::with_capacity(32);
    let mut spacing = Spacing {
        leading: 0,
        after: Vec::with_capacity(32),
    };
    let mut start = 0;
    for (at, c) in line.char_indices() {
        if tokens.len() >= MAX_TOKENS_BEFORE_REST {
            break;
        }
        if !splits_at(c) {
            continue;
        }
        if at > start {
            tokens.push(Cow::Borrowed(&line[start..at]));
            spacing.after.push(0);
        }
        let end = at + c.len_utf8();
        if c == ' ' {
            match spacing.after.last_mut() {
                Some(count) => *count += 1,
                None => spacing.leading += 1,
            }
        } else {
            tokens.push(Cow::Borrowed(&line[at..end]));
            spacing.after.push(0);
        }
        start = end;
    }
    if start < line.len() {
        tokens.push(Cow::Borrowed(&line[start..]));
        spacing.after.push(0);
    }
    Some(Tokenized {
        tokens,
        spacing: Some(spacing),
    })
}

fn punctuation_join(tokens: &[String], spacing: Option<&Spacing>) -> String {
    let mut out = String::with_capacity(tokens.iter().map(|t| t.len() + 1).sum());
    let (leading, after) = match spacing {
        Some(spacing) => (spacing.leading, spacing.after.as_slice()),
        None => (0, &[][..]),
    };
    push_spaces(&mut out, leading);
    for (i, token) in tokens.iter().enumerate() {
        out.push_str(token);
        push_spaces(&mut out, after.get(i).copied().unwrap_or(0));
    }
    out
}

fn push_spaces(out: &mut String, count: u32) {
    for _ in 0..count {
        out.push(' ');
    }
}

/// Keys whose values are always variable: times and trace ids.
fn is_variable_key(key: &str) -> bool {
    key == "t"
        || key.eq_ignore_ascii_case("ts")
        || key.eq_ignore_ascii_case("traceID")
        || key.eq_ignore_ascii_case("time")
        || key.eq_ignore_ascii_case("timestamp")
}

/// Loki's logfmt tokenizer: key, value, key, value… (a bare key has an empty
/// value). A line with a logfmt syntax error is not tokenized at all.
fn logfmt_tokens(line: &str) -> Option<Tokenized<'_>> {
    if line.len() > MAX_LINE_LENGTH {
        return None;
    }
    let mut tokens: Vec<Cow<'_, str>> = Vec::with_capacity(32);
    let mut decoder = LogfmtDecoder::new(line);
    while !decoder.at_end() {
        let Some((key, value)) = decoder.next_pair() else {
            if decoder.error.is_some() {
                return None;
            }
            break;
        };
        tokens.push(Cow::Borrowed(key));
        if is_variable_key(key) {
            tokens.push(Cow::Borrowed(PARAM));
        } else {
            tokens.push(value);
        }
    }
    Some(Tokenized { tokens, spacing: None })
}

/// Writes key/value tokens back as logfmt, as go-logfmt's encoder does:
/// values quoted (with escapes) only when they need it. A key that is empty
/// once cleaned makes the whole pattern empty, as the encoder's error does
/// in Loki.
fn logfmt_join(tokens: &[String]) -> String {
    let mut out = String::with_capacity(tokens.iter().map(|t| t.len() + 2).sum());
    for (i, pair) in tokens.chunks(2).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let key: String = pair[0].chars().filter(|&c| !is_unsafe_logfmt_char(c)).collect();
        if key.is_empty() {
            return String::new();
        }
        out.push_str(&key);
        out.push('=');
        let value = pair.get(1).map_or("", String::as_str);
        if value.chars().any(is_unsafe_logfmt_char) {
            push_quoted(&mut out, value);
        } else {
            out.push_str(value);
        }
    }
    out
}

/// Characters a logfmt key may not hold and that make a value quoted.
fn is_unsafe_logfmt_char(c: char) -> bool {
    c <= ' ' || c == '=' || c == '"' || c == '\u{7f}' || c == char::REPLACEMENT_CHARACTER
}

/// go-logfmt's quoting (Go's JSON string escapes without HTML escaping).
fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' | '"' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if c == char::REPLACEMENT_CHARACTER => out.push_str("\\ufffd"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The raw text (escapes kept, as it appears in the line) of the first of
/// [`JSON_MESSAGE_FIELDS`] that is a top-level string of the JSON object in
/// `line`. A field's first occurrence decides; a non-string there makes the
/// next field's turn.
fn json_message(line: &str) -> Option<&str> {
    let mut found: [Option<Option<&str>>; JSON_MESSAGE_FIELDS.len()] = [None; JSON_MESSAGE_FIELDS.len()];
    raw_json::each_member(line, |key, value| {
        if let Some(index) = JSON_MESSAGE_FIELDS.iter().position(|field| *field == key)
            && found[index].is_none()
        {
            found[index] = Some(match value {
                RawValue::String(text) => Some(text),
                _ => None,
            });
            // The most preferred field decides at once.
            if index == 0 {
                return false;
            }
        }
        true
    });
    found.into_iter().flatten().flatten().next()
}

/// Collapses every run of `<_><_>…` into one `<_>` (Loki's
/// `deduplicatePlaceholders`).
pub(crate) fn collapse_params(pattern: String) -> String {
    let double = "<_><_>";
    if !pattern.contains(double) {
        return pattern;
    }
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern.as_str();
    while let Some(at) = rest.find(PARAM) {
        out.push_str(&rest[..at + PARAM.len()]);
        rest = &rest[at + PARAM.len()..];
        while let Some(after) = rest.strip_prefix(PARAM) {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(tokenizer: Tokenizer, line: &str) -> Option<Vec<String>> {
        tokenizer
            .tokenize(line)
            .map(|t| t.tokens.into_iter().map(Cow::into_owned).collect())
    }

    fn round_trip(tokenizer: Tokenizer, line: &str) -> String {
        let tokenized = tokenizer.tokenize(line).expect("tokenized");
        let owned: Vec<String> = tokenized.tokens.iter().map(|t| t.to_string()).collect();
        tokenizer.join(&owned, tokenized.spacing.as_ref())
    }

    const PLAIN: Tokenizer = Tokenizer {
        format: LogFormat::Unknown,
    };
    const LOGFMT: Tokenizer = Tokenizer {
        format: LogFormat::Logfmt,
    };
    const JSON: Tokenizer = Tokenizer {
        format: LogFormat::Json,
    };

    #[test]
    fn formats_are_guessed_from_the_first_line() {
        assert_eq!(detect_format(r#"{"msg":"hi"}"#), LogFormat::Json);
        assert_eq!(
            detect_format("level=info msg=\"hello world\" took=3ms"),
            LogFormat::Logfmt
        );
        assert_eq!(detect_format("a=1"), LogFormat::Logfmt);
        // One stray word breaks the whole-line logfmt shape.
        assert_eq!(detect_format("level=info hello"), LogFormat::Unknown);
        assert_eq!(detect_format("GET /index.html 200"), LogFormat::Unknown);
        assert_eq!(detect_format("{"), LogFormat::Unknown);
        // Keys are ASCII word characters.
        assert_eq!(detect_format("clé=1"), LogFormat::Unknown);
    }

    #[test]
    fn plain_lines_split_at_spaces_equals_and_punctuation_but_not_path_characters() {
        assert_eq!(
            tokens(PLAIN, "key1=value1 key2=value2").unwrap(),
            ["key1", "=", "value1", "key2", "=", "value2"]
        );
        // `:` `.` `/` `-` `_` stay inside tokens.
        assert_eq!(
            tokens(PLAIN, "key1:value1 key2:value2").unwrap(),
            ["key1:value1", "key2:value2"]
        );
        assert_eq!(
            tokens(PLAIN, r#"msg="this is a message""#).unwrap(),
            ["msg", "=", "\"", "this", "is", "a", "message", "\""]
        );
        // Symbols (`$ ^ £`) are not punctuation; what lies between two cuts is a token.
        assert_eq!(
            tokens(PLAIN, "!@£$%^&*()").unwrap(),
            ["!", "@", "£$", "%", "^", "&", "*", "(", ")"]
        );
        // Two spaces make no empty token; non-ASCII words stay whole.
        assert_eq!(
            tokens(PLAIN, "09:17:38.033366 ▶ INFO  route").unwrap(),
            ["09:17:38.033366", "▶", "INFO", "route"]
        );
        // Non-ASCII punctuation is cut out whole.
        assert_eq!(tokens(PLAIN, "a«b»c").unwrap(), ["a", "«", "b", "»", "c"]);
    }

    #[test]
    fn the_rest_of_a_long_line_is_one_token_and_overlong_lines_are_skipped() {
        let exactly = format!("{}127 128", "A ".repeat(126));
        let got = tokens(PLAIN, &exactly).unwrap();
        assert_eq!(got.len(), 128);
        assert_eq!(got[127], "128");
        let more = format!("{}127 128 129", "A ".repeat(126));
        let got = tokens(PLAIN, &more).unwrap();
        assert_eq!(got.len(), 128);
        assert_eq!(got[127], "128 129");
        assert!(tokens(PLAIN, &"x".repeat(MAX_LINE_LENGTH + 1)).is_none());
        assert!(tokens(PLAIN, &"x".repeat(MAX_LINE_LENGTH)).is_some());
    }

    #[test]
    fn plain_tokens_join_back_to_the_line() {
        for line in [
            "key1=value1 key2=value2",
            r#"ts=2024-05-30T12:50:36.648377186Z caller=scheduler_processor.go:143 level=warn msg="error contacting scheduler" err="rpc error: code = Unavailable desc = connection error: desc = \"error reading server preface: EOF\"" addr=10.0.151.101:9095"#,
            "09:17:38.033366 ▶ INFO  route ops sending",
            "trailing spaces  ",
            "  leading spaces",
            "!@£$%^&*()",
        ] {
            assert_eq!(round_trip(PLAIN, line), line);
        }
    }

    #[test]
    fn logfmt_lines_are_key_value_tokens_with_times_and_trace_ids_variable() {
        assert_eq!(
            tokens(LOGFMT, r#"foo=bar baz="this is a message""#).unwrap(),
            ["foo", "bar", "baz", "this is a message"]
        );
        assert_eq!(tokens(LOGFMT, "foo baz").unwrap(), ["foo", "", "baz", ""]);
        assert_eq!(
            tokens(
                LOGFMT,
                "logger=sqlstore.metrics traceID=c933fefbe893 t=2024-07-10T16:00:15.564896897Z level=debug <REDACTED> error=null"
            )
            .unwrap(),
            ["logger", "sqlstore.metrics", "traceID", "<_>", "t", "<_>", "level", "debug", "<REDACTED>", "", "error", "null"]
        );
        assert_eq!(
            tokens(LOGFMT, "TS=1 Time=2 timestamp=3").unwrap(),
            ["TS", "<_>", "Time", "<_>", "timestamp", "<_>"]
        );
        // Escapes in quoted values are undone.
        assert_eq!(tokens(LOGFMT, r#"err="say \"hi\"""#).unwrap(), ["err", r#"say "hi""#]);
        // A syntax error drops the line.
        assert!(tokens(LOGFMT, r#"a=1 b="unterminated"#).is_none());
        assert!(tokens(LOGFMT, "a=1 =2").is_none());
    }

    #[test]
    fn logfmt_tokens_are_written_back_as_logfmt() {
        let join = |tokens: &[&str]| LOGFMT.join(&tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>(), None);
        assert_eq!(
            join(&["foo", "bar", "baz", "this is a message"]),
            r#"foo=bar baz="this is a message""#
        );
        assert_eq!(join(&["foo", "", "baz", ""]), "foo= baz=");
        assert_eq!(join(&["foo", "", "bar"]), "foo= bar=");
        assert_eq!(join(&["error", "null"]), "error=null");
        assert_eq!(join(&["err", "say \"hi\"\n"]), r#"err="say \"hi\"\n""#);
        assert_eq!(join(&["path", r"C:\dir"]), r"path=C:\dir");
        assert_eq!(join(&["ts", "<_>", "msg", "<_>"]), "ts=<_> msg=<_>");
        assert_eq!(join(&[]), "");
        // A key that is nothing but unsafe characters makes no pattern.
        assert_eq!(join(&["\"", "x", "a", "b"]), "");
        let line = r#"ts=2024-05-30T12:50:36.648377186Z caller=scheduler_processor.go:143 level=warn msg="error contacting scheduler" err="rpc error: code = Unavailable desc = connection error: desc = \"error reading server preface: EOF\"" addr=10.0.151.101:9095"#;
        assert_eq!(
            round_trip(LOGFMT, line),
            line.replace("2024-05-30T12:50:36.648377186Z", "<_>")
        );
    }

    #[test]
    fn json_lines_are_tokenized_by_their_message_field() {
        let line = r#"{"level":30,"time":1719998371869,"pid":17,"amount":{"units":{"low":656}},"msg":"Transaction complete."}"#;
        assert_eq!(tokens(JSON, line).unwrap(), ["Transaction", "complete."]);
        assert_eq!(round_trip(JSON, line), "<_>Transaction complete.<_>");
        // `message` before `msg`, wherever they are; the raw text, escapes kept.
        let line = r#"{"msg":"second","message":"the \"first\" one","log":5}"#;
        assert_eq!(
            tokens(JSON, line).unwrap(),
            ["the", "\\", "\"", "first", "\\", "\"", "one"]
        );
        // Text after the field may be broken JSON.
        let line = r#"{"time":"x","msg":"discovered 15 agents","hostname_short":foobar","n":1}"#;
        assert_eq!(tokens(JSON, line).unwrap(), ["discovered", "15", "agents"]);
        // A message that is an object, or nested deeper, is not a message.
        assert!(tokens(JSON, r#"{"msg":{"message":"deep"},"type":"received event"}"#).is_none());
        assert!(tokens(JSON, r#"{"level":"info"}"#).is_none());
        assert!(tokens(JSON, "not json at all").is_none());
    }

    #[test]
    fn runs_of_placeholders_collapse() {
        assert_eq!(collapse_params("abcd".into()), "abcd");
        assert_eq!(collapse_params("<_><_>abcd".into()), "<_>abcd");
        assert_eq!(collapse_params("<_>".repeat(100)), "<_>");
        assert_eq!(collapse_params("<_> <_>".into()), "<_> <_>");
        assert_eq!(collapse_params("<_><<_>".into()), "<_><<_>");
        assert_eq!(collapse_params("<<<<<<<_><_>>>>>>>>".into()), "<<<<<<<_>>>>>>>>");
        assert_eq!(
            collapse_params(format!("{}<_><_>", "A".repeat(100))),
            format!("{}<_>", "A".repeat(100))
        );
        assert_eq!(
            collapse_params(format!("{} ", "<_>".repeat(100)).repeat(100)),
            "<_> ".repeat(100)
        );
    }
}
