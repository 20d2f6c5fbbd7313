//! The query's own text, next to the syntax tree `promql-parser` made of it.
//!
//! `promql-parser` keeps no positions, and its printer does not give back the
//! text it read (`+Inf` prints as `Inf`, `sum(x) by (a)` as `sum by (a) (x)`,
//! comments and line breaks go). Prometheus reports annotations at
//! `line:column` of the text it parsed, and reads string literals with Go's
//! escapes (`"\xff"` is the byte 0xff). So the text is split into tokens
//! here, and the tree is walked along them: every node learns where it
//! starts, and every string of the tree which token it came from.

use std::collections::HashMap;
use std::ops::Range;

use promql_parser::parser::{Expr, VectorSelector};

/// What a token is, as far as finding the tree's nodes needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// `(`, `{` or `[`.
    Open(u8),
    /// `)`, `}` or `]`.
    Close(u8),
    Comma,
    /// A quoted string, quotes included.
    Str,
    /// A name, keyword, number or duration.
    Word,
    /// An operator, `@` included.
    Op,
    /// A character no PromQL token starts with.
    Other,
}

/// One token: its kind and its byte range in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Operators of two characters; every other operator is one character.
const TWO_CHARACTER_OPERATORS: [&str; 8] = ["=~", "!~", "==", "!=", "<=", ">=", "</", ">/"];
const OPERATOR_CHARACTERS: &[u8] = b"+-*/%^=<>!~@";

/// Splits `text` into tokens; whitespace and `#` comments are left out.
/// Unterminated strings run to the end of the text (the parser has refused
/// such a query already).
pub(crate) fn tokens(text: &str) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let byte = bytes[i];
        let kind = match byte {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'(' | b'{' | b'[' => {
                i += 1;
                TokenKind::Open(byte)
            }
            b')' | b'}' | b']' => {
                i += 1;
                TokenKind::Close(byte)
            }
            b',' => {
                i += 1;
                TokenKind::Comma
            }
            b'"' | b'\'' | b'`' => {
                i = string_end(bytes, i);
                TokenKind::Str
            }
            b if is_word_byte(b) => {
                i = word_end(bytes, i);
                TokenKind::Word
            }
            b if OPERATOR_CHARACTERS.contains(&b) => {
                let two = text.get(i..i + 2);
                i += if two.is_some_and(|t| TWO_CHARACTER_OPERATORS.contains(&t)) {
                    2
                } else {
                    1
                };
                TokenKind::Op
            }
            _ => {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
                TokenKind::Other
            }
        };
        out.push(Token { kind, start, end: i });
    }
    out
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'.'
}

/// The end of the word at `start`: a name, a duration, or a number whose
/// exponent may carry a sign (`1e-3`).
fn word_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    loop {
        while i < bytes.len() && is_word_byte(bytes[i]) {
            i += 1;
        }
        let word = &bytes[start..i];
        let decimal = (word[0].is_ascii_digit() || word[0] == b'.') && !word[1..].starts_with(b"x");
        let signed_exponent = decimal
            && matches!(word.last(), Some(b'e' | b'E'))
            && matches!(bytes.get(i), Some(b'+' | b'-'))
            && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
        if !signed_exponent {
            return i;
        }
        i += 1;
    }
}

/// The end of the quoted string at `start` (after its closing quote).
fn string_end(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote != b'`' => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// A `line:column` in the query text, as Prometheus ends annotations: lines
/// from 1, the column the byte offset within the line plus 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TextPosition {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl TextPosition {
    pub(crate) fn of(text: &str, offset: usize) -> TextPosition {
        let before = &text.as_bytes()[..offset.min(text.len())];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        TextPosition {
            line,
            column: before.len() - line_start + 1,
        }
    }
}

impl std::fmt::Display for TextPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Where the tree's nodes are in the text. Nodes are keyed by their address
/// in the tree, which stays valid while the tree is neither moved nor
/// changed in shape.
#[derive(Debug, Default)]
pub(crate) struct Located {
    /// The byte offset each expression starts at, as Prometheus counts it:
    /// a binary expression, subquery or range selector starts with its
    /// first operand, a number with its sign.
    pub(crate) starts: HashMap<usize, usize>,
    /// The string token of each string literal expression.
    pub(crate) strings: HashMap<usize, usize>,
    /// The tokens between the braces of each vector selector (by the
    /// selector's address).
    pub(crate) matchers: HashMap<usize, Range<usize>>,
    /// The tokens between the parentheses of each label list of an
    /// aggregation (`by`/`without`) or a binary operation (`on`/`ignoring`,
    /// then `group_left`/`group_right`), in the order written.
    pub(crate) label_lists: HashMap<usize, Vec<Range<usize>>>,
}

/// Finds `expr`'s nodes in `tokens` of `text`; `None` when the text does not
/// read as the tree does (the tree was not parsed from this text).
pub(crate) fn locate(text: &str, tokens: &[Token], expr: &Expr) -> Option<Located> {
    let mut walk = Walk {
        text,
        tokens,
        next: 0,
        located: Located::default(),
    };
    walk.expr(expr)?;
    (walk.next == tokens.len()).then_some(walk.located)
}

struct Walk<'a> {
    text: &'a str,
    tokens: &'a [Token],
    /// The next token to read.
    next: usize,
    located: Located,
}

impl Walk<'_> {
    fn peek(&self) -> Option<Token> {
        self.tokens.get(self.next).copied()
    }

    fn peek_is(&self, kind: TokenKind, text: &str) -> bool {
        self.peek()
            .is_some_and(|t| t.kind == kind && self.text[t.start..t.end].eq_ignore_ascii_case(text))
    }

    fn peek_is_one_of(&self, kind: TokenKind, texts: &[&str]) -> bool {
        texts.iter().any(|text| self.peek_is(kind, text))
    }

    /// Reads the next token if it is of `kind`; its index.
    fn take(&mut self, kind: TokenKind) -> Option<usize> {
        let token = self.peek()?;
        if token.kind != kind {
            return None;
        }
        self.next += 1;
        Some(self.next - 1)
    }

    /// The offset the next token starts at.
    fn offset(&self) -> Option<usize> {
        self.peek().map(|t| t.start)
    }

    /// Reads a bracketed group whose opening token is next; the tokens
    /// inside it.
    fn group(&mut self, open: u8) -> Option<Range<usize>> {
        let close = match open {
            b'(' => b')',
            b'{' => b'}',
            _ => b']',
        };
        self.take(TokenKind::Open(open))?;
        let inside = self.next;
        let mut depth = 0usize;
        while let Some(token) = self.peek() {
            self.next += 1;
            match token.kind {
                TokenKind::Open(b) if b == open => depth += 1,
                TokenKind::Close(b) if b == close && depth == 0 => return Some(inside..self.next - 1),
                TokenKind::Close(b) if b == close => depth -= 1,
                _ => {}
            }
        }
        None
    }

    fn expr(&mut self, expr: &Expr) -> Option<()> {
        let address = expr as *const Expr as usize;
        if let Expr::NumberLiteral(_) = expr {
            // A sign belongs to the number (`-1`, `+Inf`), as in Prometheus.
            let start = self.offset()?;
            while self.peek_is(TokenKind::Op, "+") || self.peek_is(TokenKind::Op, "-") {
                self.next += 1;
            }
            self.take(TokenKind::Word)?;
            self.located.starts.insert(address, start);
            return Some(());
        }
        // promql-parser drops a unary plus; what follows it is the node.
        while self.peek_is(TokenKind::Op, "+") {
            self.next += 1;
        }
        let start = self.offset()?;
        self.located.starts.insert(address, start);
        match expr {
            Expr::NumberLiteral(_) => unreachable!("handled above"),
            Expr::StringLiteral(_) => {
                let token = self.take(TokenKind::Str)?;
                self.located.strings.insert(address, token);
            }
            Expr::Paren(paren) => {
                self.take(TokenKind::Open(b'('))?;
                self.expr(&paren.expr)?;
                self.take(TokenKind::Close(b')'))?;
            }
            Expr::Unary(unary) => {
                if !self.peek_is(TokenKind::Op, "-") {
                    return None;
                }
                self.next += 1;
                self.expr(&unary.expr)?;
            }
            Expr::VectorSelector(selector) => {
                self.selector(selector)?;
                self.modifiers();
            }
            Expr::MatrixSelector(matrix) => {
                self.selector(&matrix.vs)?;
                self.modifiers();
                self.group(b'[')?;
                self.modifiers();
            }
            Expr::Subquery(subquery) => {
                self.expr(&subquery.expr)?;
                self.group(b'[')?;
                self.modifiers();
            }
            Expr::Call(call) => {
                self.take(TokenKind::Word)?;
                self.take(TokenKind::Open(b'('))?;
                for (index, arg) in call.args.args.iter().enumerate() {
                    if index > 0 {
                        self.take(TokenKind::Comma)?;
                    }
                    self.expr(arg)?;
                }
                self.take(TokenKind::Close(b')'))?;
            }
            Expr::Aggregate(aggregate) => {
                self.take(TokenKind::Word)?;
                let mut grouping = self.grouping()?;
                self.take(TokenKind::Open(b'('))?;
                if let Some(param) = &aggregate.param {
                    self.expr(param)?;
                    self.take(TokenKind::Comma)?;
                }
                self.expr(&aggregate.expr)?;
                self.take(TokenKind::Close(b')'))?;
                if grouping.is_empty() {
                    grouping = self.grouping()?;
                }
                self.located.label_lists.insert(address, grouping);
            }
            Expr::Binary(binary) => {
                self.expr(&binary.lhs)?;
                let operator = self.peek()?;
                if !matches!(operator.kind, TokenKind::Op | TokenKind::Word) {
                    return None;
                }
                self.next += 1;
                let lists = self.binary_modifiers()?;
                self.located.label_lists.insert(address, lists);
                self.expr(&binary.rhs)?;
            }
            Expr::Extension(_) => return None,
        }
        Some(())
    }

    /// A metric name and/or a brace group of matchers.
    fn selector(&mut self, selector: &VectorSelector) -> Option<()> {
        let named = self.take(TokenKind::Word).is_some();
        if self.peek().is_some_and(|t| t.kind == TokenKind::Open(b'{')) {
            let inside = self.group(b'{')?;
            self.located
                .matchers
                .insert(selector as *const VectorSelector as usize, inside);
        } else if !named {
            return None;
        }
        Some(())
    }

    /// Any `offset` and `@` modifiers.
    fn modifiers(&mut self) {
        loop {
            let checkpoint = self.next;
            let read = if self.peek_is(TokenKind::Word, "offset") {
                self.next += 1;
                self.signed_word()
            } else if self.peek_is(TokenKind::Op, "@") {
                self.next += 1;
                if self.peek_is_one_of(TokenKind::Word, &["start", "end"]) {
                    self.next += 1;
                    self.group(b'(').map(|_| ())
                } else {
                    self.signed_word()
                }
            } else {
                return;
            };
            if read.is_none() {
                self.next = checkpoint;
                return;
            }
        }
    }

    fn signed_word(&mut self) -> Option<()> {
        if self.peek_is(TokenKind::Op, "+") || self.peek_is(TokenKind::Op, "-") {
            self.next += 1;
        }
        self.take(TokenKind::Word).map(|_| ())
    }

    /// An optional `by (…)` or `without (…)`: the tokens of its list.
    fn grouping(&mut self) -> Option<Vec<Range<usize>>> {
        if !self.peek_is_one_of(TokenKind::Word, &["by", "without"]) {
            return Some(Vec::new());
        }
        self.next += 1;
        Some(vec![self.group(b'(')?])
    }

    /// `bool`, `on`/`ignoring (…)`, `group_left`/`group_right [(…)]` and
    /// fill modifiers after a binary operator: the label lists read.
    fn binary_modifiers(&mut self) -> Option<Vec<Range<usize>>> {
        let mut lists = Vec::new();
        loop {
            if self.peek_is(TokenKind::Word, "bool") {
                self.next += 1;
            } else if self.peek_is_one_of(TokenKind::Word, &["on", "ignoring"]) {
                self.next += 1;
                lists.push(self.group(b'(')?);
            } else if self.peek_is_one_of(TokenKind::Word, &["group_left", "group_right"]) {
                self.next += 1;
                if self.peek().is_some_and(|t| t.kind == TokenKind::Open(b'(')) {
                    lists.push(self.group(b'(')?);
                }
            } else if self.peek_is_one_of(TokenKind::Word, &["fill", "fill_left", "fill_right"])
                && self
                    .tokens
                    .get(self.next + 1)
                    .is_some_and(|t| t.kind == TokenKind::Open(b'('))
            {
                // Without its `(value)`, `fill` is a metric name.
                self.next += 1;
                self.group(b'(')?;
            } else {
                return Some(lists);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds_and_texts(text: &str) -> Vec<(TokenKind, &str)> {
        tokens(text)
            .into_iter()
            .map(|t| (t.kind, &text[t.start..t.end]))
            .collect()
    }

    #[test]
    fn tokens_split_strings_numbers_operators_and_skip_comments() {
        use TokenKind::*;
        assert_eq!(
            kinds_and_texts("rate(a:b{x=~\"y\\\"}\"}[5m]) # comment\n>= -1e-3 @ start()"),
            [
                (Word, "rate"),
                (Open(b'('), "("),
                (Word, "a:b"),
                (Open(b'{'), "{"),
                (Word, "x"),
                (Op, "=~"),
                (Str, "\"y\\\"}\""),
                (Close(b'}'), "}"),
                (Open(b'['), "["),
                (Word, "5m"),
                (Close(b']'), "]"),
                (Close(b')'), ")"),
                (Op, ">="),
                (Op, "-"),
                (Word, "1e-3"),
                (Op, "@"),
                (Word, "start"),
                (Open(b'('), "("),
                (Close(b')'), ")"),
            ]
        );
        // A hex number has no exponent: `0x1e-3` is a subtraction.
        assert_eq!(
            kinds_and_texts("0x1e-3 'a\\'b' `c\\`"),
            [(Word, "0x1e"), (Op, "-"), (Word, "3"), (Str, "'a\\'b'"), (Str, "`c\\`")]
        );
    }

    #[test]
    fn positions_count_lines_and_bytes() {
        assert_eq!(TextPosition::of("abc", 0).to_string(), "1:1");
        assert_eq!(TextPosition::of("abc", 2).to_string(), "1:3");
        assert_eq!(TextPosition::of("a\nbc", 3).to_string(), "2:2");
        // Columns count bytes, as Go's do.
        assert_eq!(TextPosition::of("\"ÿ\" + x", 7).to_string(), "1:8");
    }

    /// The text each node of `query`'s tree starts at, in the order the
    /// tree is walked (parent before children).
    fn starts(query: &str) -> Vec<String> {
        let expr = promql_parser::parser::parse(query).unwrap();
        let tokens = tokens(query);
        let located = locate(query, &tokens, &expr).expect("the tree is found in its text");
        let mut out = Vec::new();
        fn walk(expr: &Expr, query: &str, located: &Located, out: &mut Vec<String>) {
            let start = located.starts[&(expr as *const Expr as usize)];
            out.push(query[start..].chars().take(6).collect());
            let children: Vec<&Expr> = match expr {
                Expr::Aggregate(a) => a.param.iter().map(|p| p.as_ref()).chain([a.expr.as_ref()]).collect(),
                Expr::Binary(b) => vec![&b.lhs, &b.rhs],
                Expr::Paren(p) => vec![&p.expr],
                Expr::Unary(u) => vec![&u.expr],
                Expr::Subquery(s) => vec![&s.expr],
                Expr::Call(c) => c.args.args.iter().map(|a| a.as_ref()).collect(),
                _ => Vec::new(),
            };
            for child in children {
                walk(child, query, located, out);
            }
        }
        walk(&expr, query, &located, &mut out);
        out
    }

    #[test]
    fn nodes_start_where_prometheus_says() {
        // The unary plus promql-parser drops, and a signed number.
        assert_eq!(
            starts("histogram_fraction(-Inf, +Inf, histogram_nan)"),
            ["histog", "-Inf, ", "+Inf, ", "histog"]
        );
        // Grouping after the aggregated expression, a comment and a line break.
        assert_eq!(
            starts("sum(rate(x[5m])) by (job) # total\n  / on(job) group_left\n  count(up{a=\"b\"} offset -1m @ 10)"),
            ["sum(ra", "sum(ra", "rate(x", "x[5m])", "count(", "up{a=\""]
        );
        assert_eq!(
            starts("topk(3, -foo) or (max_over_time(bar[1h:5m] @ start()))"),
            [
                "topk(3", "topk(3", "3, -fo", "-foo) ", "foo) o", "(max_o", "max_ov", "bar[1h", "bar[1h"
            ]
        );
        assert_eq!(
            starts("count_values by (\"a\") ('v', label_replace(m, 'd', '$1', \"s\", `(.*)`))"),
            [
                "count_", "'v', l", "label_", "m, 'd'", "'d', '", "'$1', ", "\"s\", `", "`(.*)`"
            ]
        );
        assert_eq!(starts("other + fill(0) fill"), ["other ", "other ", "fill"]);
        assert_eq!(
            starts("1 + 2 * 3 > bool 4"),
            ["1 + 2 ", "1 + 2 ", "1 + 2 ", "2 * 3 ", "2 * 3 ", "3 > bo", "4"]
        );
    }

    #[test]
    fn a_tree_not_from_this_text_is_not_located() {
        let expr = promql_parser::parser::parse("sum(x)").unwrap();
        let text = "sum(x) + y";
        assert!(locate(text, &tokens(text), &expr).is_none());
        let text = "count(x)";
        assert!(
            locate(text, &tokens(text), &expr).is_some(),
            "only the shape is compared"
        );
    }
}
