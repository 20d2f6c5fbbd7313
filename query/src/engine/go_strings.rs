//! PromQL string literals as Prometheus reads them.
//!
//! Prometheus unquotes strings with Go's escapes, in which `\xNN` and octal
//! `\NNN` are single bytes: `"\xff"` is the byte 0xff, not UTF-8, and
//! `"\xc3\xbf"` is `ÿ`. promql-parser reads either escape as the character
//! U+00NN (`ÿ` and `Ã¿`). So every string of the tree is read again from the
//! query's text here ([`apply`], once per parse), and the evaluation learns
//! which string literals are not UTF-8 ([`not_utf8_literals`]).
//!
//! Where a string that is not UTF-8 ends up decides what Prometheus does:
//! * a label name it must be (`label_replace`'s and `label_join`'s labels,
//!   `count_values`' label, a quoted `by`/`on` label): an error;
//! * a regex matcher that is not a plain list of alternatives: a parse error
//!   (Go's regexp refuses it), while a list of alternatives (`"a|\xff"`)
//!   simply never equals the alternatives that are not UTF-8;
//! * an `=` or `!=` matcher, a matcher's quoted label name: it never equals
//!   a stored label (storage only keeps UTF-8), so the matcher is replaced by
//!   one that selects nothing (`!~".*"`) or everything (`=~".*"`), as Go's
//!   would (the tree then prints so, and `absent()` leaves its label out);
//! * any other value (a replacement, a separator, a string result): it is
//!   kept with U+FFFD for the bytes that are not UTF-8, which is what
//!   Prometheus' JSON encoder sends.

use std::collections::HashMap;
use std::ops::Range;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::token::{T_EQL, T_EQL_REGEX, T_NEQ, T_NEQ_REGEX};
use promql_parser::parser::{BinModifier, Expr, VectorMatchCardinality, VectorSelector};

use super::data::go_quote;
use super::query_text::{Located, TextPosition, Token, TokenKind};
use crate::error::Error;

/// A string's value as Go sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GoString {
    Utf8(String),
    /// Bytes that are not UTF-8.
    NotUtf8(Vec<u8>),
}

impl GoString {
    /// The value of a quoted literal (`"…"`, `'…'` or `` `…` ``); `None` if
    /// it is not one.
    pub(crate) fn of_literal(literal: &str) -> Option<GoString> {
        let bytes = unquote(literal)?;
        Some(match String::from_utf8(bytes) {
            Ok(text) => GoString::Utf8(text),
            Err(e) => GoString::NotUtf8(e.into_bytes()),
        })
    }

    /// The value with U+FFFD for every byte sequence that is not UTF-8.
    pub(crate) fn lossy(&self) -> String {
        match self {
            GoString::Utf8(text) => text.clone(),
            GoString::NotUtf8(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        }
    }

    /// Whether Prometheus accepts it as a label name: UTF-8 and not empty.
    pub(crate) fn is_label_name(&self) -> bool {
        matches!(self, GoString::Utf8(text) if !text.is_empty())
    }

    /// Quoted as Go's `%q` does, bytes that are not UTF-8 as `\xNN`.
    pub(crate) fn quoted(&self) -> String {
        let bytes = match self {
            GoString::Utf8(text) => return go_quote(text),
            GoString::NotUtf8(bytes) => bytes,
        };
        let mut out = String::from("\"");
        for chunk in bytes.utf8_chunks() {
            let valid = go_quote(chunk.valid());
            out.push_str(&valid[1..valid.len() - 1]);
            for byte in chunk.invalid() {
                out.push_str(&format!("\\x{byte:02x}"));
            }
        }
        out.push('"');
        out
    }
}

/// Unquotes a PromQL string literal as Prometheus does: Go's escapes, with
/// `\xNN` and `\NNN` (octal) giving one byte each; single quotes work as
/// double quotes do, and back quotes take the text as it is. `None` for a
/// literal Prometheus would refuse.
pub(crate) fn unquote(literal: &str) -> Option<Vec<u8>> {
    let bytes = literal.as_bytes();
    let (&quote, rest) = bytes.split_first()?;
    let (&last, inner) = rest.split_last()?;
    if last != quote {
        return None;
    }
    match quote {
        b'`' => return (!inner.contains(&b'`')).then(|| inner.to_vec()),
        b'"' | b'\'' => {}
        _ => return None,
    }
    if inner.contains(&b'\n') {
        return None;
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let byte = inner[i];
        if byte == quote {
            return None;
        }
        if byte != b'\\' {
            out.push(byte);
            i += 1;
            continue;
        }
        let escape = *inner.get(i + 1)?;
        i += 2;
        let simple = match escape {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' => Some(b'\\'),
            b'\'' | b'"' if escape == quote => Some(escape),
            _ => None,
        };
        if let Some(value) = simple {
            out.push(value);
            continue;
        }
        match escape {
            b'x' => {
                let digits = inner.get(i..i + 2)?;
                out.push(u8::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let digits = inner.get(i - 1..i + 2)?;
                if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    return None;
                }
                let value = u16::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok()?;
                out.push(u8::try_from(value).ok()?);
                i += 2;
            }
            b'u' | b'U' => {
                let width = if escape == b'u' { 4 } else { 8 };
                let digits = inner.get(i..i + width)?;
                if !digits.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let code = u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()?;
                if code > 0x10ffff {
                    return None;
                }
                // Go encodes a surrogate as U+FFFD.
                let c = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                i += width;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The string literal expressions of the tree whose Go value is not UTF-8,
/// with that value, by the expression's address.
pub(crate) fn not_utf8_literals(text: &str, tokens: &[Token], located: &Located) -> HashMap<usize, GoString> {
    let mut out = HashMap::new();
    for (&address, &token) in &located.strings {
        let token = tokens[token];
        if let Some(value @ GoString::NotUtf8(_)) = GoString::of_literal(&text[token.start..token.end]) {
            out.insert(address, value);
        }
    }
    out
}

/// Puts Go's value of every string of `expr` into it, as described in the
/// module's documentation; fails where Prometheus' parser fails. `located`
/// must be `expr`'s, found in `text`.
pub(crate) fn apply(text: &str, tokens: &[Token], located: &Located, expr: &mut Expr) -> Result<(), Error> {
    let rewrite = Rewrite { text, tokens, located };
    rewrite.expr(expr)
}

struct Rewrite<'a> {
    text: &'a str,
    tokens: &'a [Token],
    located: &'a Located,
}

/// One matcher as written: where it starts, its label name if quoted, its
/// value.
struct WrittenMatcher {
    start: usize,
    name: Option<usize>,
    value: usize,
}

impl Rewrite<'_> {
    fn token_text(&self, index: usize) -> &str {
        let token = self.tokens[index];
        &self.text[token.start..token.end]
    }

    /// Go's value of string token `index`, and promql-parser's.
    fn values(&self, index: usize) -> Option<(GoString, String)> {
        let literal = self.token_text(index);
        let parsed = promql_parser::util::unquote_string(literal).ok()?;
        Some((GoString::of_literal(literal)?, parsed))
    }

    fn parse_error(&self, token: usize, message: String) -> Error {
        let position = TextPosition::of(self.text, self.tokens[token].start);
        Error::bad_data(format!(
            "invalid parameter \"query\": {position}: parse error: {message}"
        ))
    }

    fn expr(&self, expr: &mut Expr) -> Result<(), Error> {
        let address = &*expr as *const Expr as usize;
        match expr {
            Expr::StringLiteral(literal) => {
                if let Some((go, _)) = self.located.strings.get(&address).and_then(|&t| self.values(t)) {
                    literal.val = go.lossy();
                }
            }
            Expr::VectorSelector(selector) => self.selector(selector)?,
            Expr::MatrixSelector(matrix) => self.selector(&mut matrix.vs)?,
            Expr::Paren(paren) => self.expr(&mut paren.expr)?,
            Expr::Unary(unary) => self.expr(&mut unary.expr)?,
            Expr::Subquery(subquery) => self.expr(&mut subquery.expr)?,
            Expr::Call(call) => {
                for arg in &mut call.args.args {
                    self.expr(arg)?;
                }
            }
            Expr::Aggregate(aggregate) => {
                let lists = self.located.label_lists.get(&address);
                if let (Some(modifier), Some([list])) = (&mut aggregate.modifier, lists.map(Vec::as_slice)) {
                    let labels = match modifier {
                        promql_parser::parser::LabelModifier::Include(labels)
                        | promql_parser::parser::LabelModifier::Exclude(labels) => labels,
                    };
                    self.label_list(list.clone(), &mut labels.labels)?;
                }
                if let Some(param) = &mut aggregate.param {
                    self.expr(param)?;
                }
                self.expr(&mut aggregate.expr)?;
            }
            Expr::Binary(binary) => {
                if let (Some(modifier), Some(lists)) = (&mut binary.modifier, self.located.label_lists.get(&address)) {
                    self.binary_label_lists(modifier, lists)?;
                }
                self.expr(&mut binary.lhs)?;
                self.expr(&mut binary.rhs)?;
            }
            Expr::NumberLiteral(_) | Expr::Extension(_) => {}
        }
        Ok(())
    }

    fn binary_label_lists(&self, modifier: &mut BinModifier, lists: &[Range<usize>]) -> Result<(), Error> {
        let mut lists = lists.iter().cloned();
        if let Some(matching) = &mut modifier.matching {
            let labels = match matching {
                promql_parser::parser::LabelModifier::Include(labels)
                | promql_parser::parser::LabelModifier::Exclude(labels) => labels,
            };
            if let Some(list) = lists.next() {
                self.label_list(list, &mut labels.labels)?;
            }
        }
        if let VectorMatchCardinality::ManyToOne(labels) | VectorMatchCardinality::OneToMany(labels) =
            &mut modifier.card
            && let Some(list) = lists.next()
        {
            self.label_list(list, &mut labels.labels)?;
        }
        Ok(())
    }

    /// The labels of a `by (…)`-like list: quoted ones must be label names.
    fn label_list(&self, list: Range<usize>, labels: &mut [String]) -> Result<(), Error> {
        let written: Vec<usize> = list
            .filter(|&t| matches!(self.tokens[t].kind, TokenKind::Word | TokenKind::Str))
            .collect();
        if written.len() != labels.len() {
            return Ok(());
        }
        for (token, label) in written.into_iter().zip(labels) {
            if self.tokens[token].kind != TokenKind::Str {
                continue;
            }
            let Some((go, parsed)) = self.values(token) else {
                continue;
            };
            if parsed != *label {
                continue;
            }
            if !go.is_label_name() {
                return Err(self.parse_error(token, format!("invalid label name for grouping: {}", go.quoted())));
            }
            *label = go.lossy();
        }
        Ok(())
    }

    /// The matchers between the selector's braces, as written.
    fn written_matchers(&self, inside: Range<usize>) -> Option<Vec<WrittenMatcher>> {
        let mut out = Vec::new();
        let mut index = inside.start;
        while index < inside.end {
            let token = self.tokens[index];
            let separator = token.kind == TokenKind::Comma
                || (token.kind == TokenKind::Word && self.token_text(index).eq_ignore_ascii_case("or"));
            if separator {
                index += 1;
                continue;
            }
            let followed_by_operator = index + 1 < inside.end && self.tokens[index + 1].kind == TokenKind::Op;
            if followed_by_operator {
                // name operator value
                let value = index + 2;
                if value >= inside.end || self.tokens[value].kind != TokenKind::Str {
                    return None;
                }
                let name = (token.kind == TokenKind::Str).then_some(index);
                out.push(WrittenMatcher {
                    start: index,
                    name,
                    value,
                });
                index += 3;
            } else if token.kind == TokenKind::Str {
                // A quoted metric name alone: `__name__` equals it.
                out.push(WrittenMatcher {
                    start: index,
                    name: None,
                    value: index,
                });
                index += 1;
            } else {
                return None;
            }
        }
        Some(out)
    }

    fn selector(&self, selector: &mut VectorSelector) -> Result<(), Error> {
        let address = &*selector as *const VectorSelector as usize;
        let Some(inside) = self.located.matchers.get(&address) else {
            return Ok(());
        };
        let Some(written) = self.written_matchers(inside.clone()) else {
            return Ok(());
        };
        let matchers = &mut selector.matchers;
        let count = matchers.matchers.len() + matchers.or_matchers.iter().map(Vec::len).sum::<usize>();
        if count != written.len() {
            return Ok(());
        }
        let all = matchers
            .matchers
            .iter_mut()
            .chain(matchers.or_matchers.iter_mut().flatten());
        for (matcher, written) in all.zip(written) {
            self.matcher(matcher, &written)?;
        }
        Ok(())
    }

    fn matcher(&self, matcher: &mut Matcher, written: &WrittenMatcher) -> Result<(), Error> {
        let name = match written.name {
            Some(token) => match self.values(token) {
                Some((go, parsed)) if parsed == matcher.name => go,
                _ => return Ok(()),
            },
            None => GoString::Utf8(matcher.name.clone()),
        };
        let value = match self.values(written.value) {
            Some((go, parsed)) if parsed == matcher.value => go,
            _ => return Ok(()),
        };
        let unchanged = matches!((&name, &value), (GoString::Utf8(n), GoString::Utf8(v))
            if *n == matcher.name && *v == matcher.value);
        if unchanged {
            return Ok(());
        }
        let on_values = self.on_values(matcher, &value, written.start)?;
        *matcher = match (&name, on_values) {
            (GoString::Utf8(name), OnValues::Compare(value)) => rebuilt(matcher, name, &value)?,
            (GoString::Utf8(name), OnValues::Constant(matches)) => constant_matcher(name, matches),
            // No label has this name: the matcher only ever sees "".
            (GoString::NotUtf8(_), OnValues::Compare(value)) => {
                let matches_empty = rebuilt(matcher, "", &value)?.is_match("");
                constant_matcher(&name.lossy(), matches_empty)
            }
            (GoString::NotUtf8(_), OnValues::Constant(matches)) => constant_matcher(&name.lossy(), matches),
        };
        Ok(())
    }

    /// How a matcher with Go value `value` treats stored (UTF-8) values.
    fn on_values(&self, matcher: &Matcher, value: &GoString, start: usize) -> Result<OnValues, Error> {
        let negated = matches!(matcher.op, MatchOp::NotEqual | MatchOp::NotRe(_));
        let bytes = match value {
            GoString::Utf8(value) => return Ok(OnValues::Compare(value.clone())),
            GoString::NotUtf8(bytes) => bytes,
        };
        if !matches!(matcher.op, MatchOp::Re(_) | MatchOp::NotRe(_)) {
            return Ok(OnValues::Constant(negated));
        }
        let Some(alternatives) = literal_alternatives(bytes) else {
            return Err(self.parse_error(
                start,
                format!(
                    "error parsing regexp: invalid UTF-8: `{}`",
                    String::from_utf8_lossy(bytes)
                ),
            ));
        };
        let utf8: Vec<&str> = alternatives
            .into_iter()
            .filter_map(|a| std::str::from_utf8(a).ok())
            .collect();
        Ok(if utf8.is_empty() {
            OnValues::Constant(negated)
        } else {
            OnValues::Compare(utf8.join("|"))
        })
    }
}

/// What a matcher's value leaves it to do on stored values, which are UTF-8.
enum OnValues {
    /// Compare them with this value, as the operator says.
    Compare(String),
    /// Match every value (`true`) or none.
    Constant(bool),
}

/// The alternatives of a regex that is only literal text separated by `|`
/// (what Prometheus matches as a set of strings without compiling it);
/// `None` for any other regex.
fn literal_alternatives(regex: &[u8]) -> Option<Vec<&[u8]>> {
    const SPECIAL: &[u8] = b"\\.+*?()[]{}^$";
    let alternatives: Vec<&[u8]> = regex.split(|&b| b == b'|').collect();
    let literal = alternatives.iter().all(|a| !a.iter().any(|b| SPECIAL.contains(b)));
    literal.then_some(alternatives)
}

/// `matcher` with a new name and value, its regex compiled again.
fn rebuilt(matcher: &Matcher, name: &str, value: &str) -> Result<Matcher, Error> {
    let token = match matcher.op {
        MatchOp::Equal => T_EQL,
        MatchOp::NotEqual => T_NEQ,
        MatchOp::Re(_) => T_EQL_REGEX,
        MatchOp::NotRe(_) => T_NEQ_REGEX,
    };
    Matcher::new_matcher(token, name.to_string(), value.to_string())
        .map_err(|e| Error::bad_data(format!("invalid parameter \"query\": {e}")))
}

/// A matcher on `name` that matches every series or none.
fn constant_matcher(name: &str, matches_everything: bool) -> Matcher {
    let token = if matches_everything { T_EQL_REGEX } else { T_NEQ_REGEX };
    match Matcher::new_matcher(token, name.to_string(), ".*".to_string()) {
        Ok(matcher) => matcher,
        Err(_) => unreachable!("`.*` compiles"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::query_text::{locate, tokens};

    #[test]
    fn unquote_reads_go_escapes_as_bytes() {
        assert_eq!(unquote(r#""\xff""#).unwrap(), [0xff]);
        assert_eq!(unquote(r#"'\377'"#).unwrap(), [0xff]);
        assert_eq!(unquote(r#""\xc3\xbf""#).unwrap(), "ÿ".as_bytes());
        assert_eq!(unquote(r#""ÿ""#).unwrap(), "ÿ".as_bytes());
        assert_eq!(unquote(r#""\u00ff""#).unwrap(), "ÿ".as_bytes());
        assert_eq!(unquote(r#""\U0001F600\a\t\\\"""#).unwrap(), "😀\x07\t\\\"".as_bytes());
        assert_eq!(unquote(r#"'it\'s'"#).unwrap(), b"it's");
        assert_eq!(unquote(r"`\xff`").unwrap(), br"\xff");
        assert_eq!(unquote(r#""\ud800""#).unwrap(), "\u{fffd}".as_bytes());
        for refused in [
            r#""\x""#,
            r#""\q""#,
            r#""\400""#,
            r#"'a'b'"#,
            r#""a"#,
            "`a`b`",
            r#""\'""#,
        ] {
            assert_eq!(unquote(refused), None, "{refused}");
        }
    }

    #[test]
    fn go_strings_quote_and_validate_like_go() {
        let not_utf8 = GoString::of_literal(r#""a\xff""#).unwrap();
        assert_eq!(not_utf8, GoString::NotUtf8(vec![b'a', 0xff]));
        assert!(!not_utf8.is_label_name());
        assert_eq!(not_utf8.quoted(), r#""a\xff""#);
        assert_eq!(not_utf8.lossy(), "a\u{fffd}");
        let utf8 = GoString::of_literal(r#""\xc3\xbf""#).unwrap();
        assert_eq!(utf8, GoString::Utf8("ÿ".to_string()));
        assert!(utf8.is_label_name());
        assert!(!GoString::Utf8(String::new()).is_label_name());
    }

    /// `query` parsed, with its strings read as Prometheus reads them.
    fn applied(query: &str) -> Result<Expr, Error> {
        let mut expr = promql_parser::parser::parse(query).unwrap();
        let tokens = tokens(query);
        let located = locate(query, &tokens, &expr).unwrap();
        apply(query, &tokens, &located, &mut expr)?;
        Ok(expr)
    }

    fn selector_matchers(expr: &Expr) -> Vec<String> {
        let Expr::VectorSelector(selector) = expr else {
            panic!("not a selector: {expr}");
        };
        let matchers = &selector.matchers;
        matchers
            .matchers
            .iter()
            .chain(matchers.or_matchers.iter().flatten())
            .map(|m| format!("{}{}{:?}", m.name, m.op, m.value))
            .collect()
    }

    #[test]
    fn strings_take_go_values() {
        let expr = applied(r#"label_replace(m, "\xc3\xbf", "\xff", "s", "(.*)")"#).unwrap();
        let Expr::Call(call) = &expr else { panic!() };
        let values: Vec<String> = call.args.args[1..]
            .iter()
            .map(|a| match a.as_ref() {
                Expr::StringLiteral(s) => s.val.clone(),
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(values, ["ÿ", "\u{fffd}", "s", "(.*)"]);
        let expr = applied(r#"m{a="\xc3\xbf", "\xc3\xa9"=~"x|\xc3\xa9"}"#).unwrap();
        assert_eq!(selector_matchers(&expr), [r#"a="ÿ""#, r#"é=~"x|é""#]);
    }

    #[test]
    fn matchers_that_are_not_utf8_match_as_in_go() {
        // `=` never equals a stored value, `!=` always differs from one.
        let expr = applied(r#"m{a="\xff", b!="\xff", c="x"}"#).unwrap();
        assert_eq!(selector_matchers(&expr), [r#"a!~".*""#, r#"b=~".*""#, r#"c="x""#]);
        // A list of alternatives keeps those that are UTF-8.
        let expr = applied(r#"m{a=~"x|\xff|y", b!~"\xff"}"#).unwrap();
        assert_eq!(selector_matchers(&expr), [r#"a=~"x|y""#, r#"b=~".*""#]);
        // A label name that is not UTF-8 names no label: the matcher sees "".
        let expr = applied(r#"m{"\xff"="", "\xfe"="x", "\xfd"!~"\xff|"}"#).unwrap();
        assert_eq!(
            selector_matchers(&expr),
            ["\u{fffd}=~\".*\"", "\u{fffd}!~\".*\"", "\u{fffd}!~\".*\""]
        );
        // Or-ed groups are read as well.
        let expr = applied(r#"{a="x" or b="\xff"}"#).unwrap();
        assert_eq!(selector_matchers(&expr), [r#"a="x""#, r#"b!~".*""#]);
    }

    #[test]
    fn regexes_and_grouping_labels_that_are_not_utf8_fail_to_parse() {
        let err = applied(r#"m{a=~"\xff.*"}"#).unwrap_err();
        assert_eq!(
            err.message,
            "invalid parameter \"query\": 1:3: parse error: error parsing regexp: invalid UTF-8: `\u{fffd}.*`"
        );
        let err = applied("sum by (a, \"\\xff\") (m)").unwrap_err();
        assert_eq!(
            err.message,
            r#"invalid parameter "query": 1:12: parse error: invalid label name for grouping: "\xff""#
        );
        let err = applied("m * on(\"\") group_left m").unwrap_err();
        assert!(err.message.contains("invalid label name for grouping: \"\""), "{err}");
        let expr = applied("sum without (\"\\xc3\\xbf\") (m)").unwrap();
        assert_eq!(expr.to_string(), "sum without (\"ÿ\") (m)");
    }

    #[test]
    fn literals_that_are_not_utf8_are_listed() {
        let query = r#"label_join(m, "d", "\xff", "a", 'b\377')"#;
        let expr = promql_parser::parser::parse(query).unwrap();
        let tokens = tokens(query);
        let located = locate(query, &tokens, &expr).unwrap();
        let listed = not_utf8_literals(query, &tokens, &located);
        let Expr::Call(call) = &expr else { panic!() };
        let address = |i: usize| call.args.args[i].as_ref() as *const Expr as usize;
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[&address(2)], GoString::NotUtf8(vec![0xff]));
        assert_eq!(listed[&address(4)], GoString::NotUtf8(vec![b'b', 0xff]));
    }
}
