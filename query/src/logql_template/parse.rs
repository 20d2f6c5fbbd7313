//! Lexing and parsing of Go's text/template syntax into a tree evaluated
//! once per log line. Functions and variables are resolved here, as Go does,
//! so an unknown function fails the query before any line is read.

use super::funcs::Func;

/// Where a node came from: its byte offset (for `line:col` in execution
/// errors) and its source text (the `<…>` context Go prints).
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub(super) start: usize,
    pub(super) end: usize,
}

#[derive(Debug)]
pub(super) enum Node {
    Text(Box<str>),
    Action(Pipe),
    If(Branch),
    With(Branch),
    Range(Branch),
    Break,
    Continue,
}

#[derive(Debug)]
pub(super) struct Branch {
    pub(super) pipe: Pipe,
    pub(super) list: Vec<Node>,
    pub(super) else_list: Vec<Node>,
}

#[derive(Debug)]
pub(super) struct Pipe {
    /// Variables declared (`:=`) or assigned (`=`) by this pipeline.
    pub(super) decl: Vec<Box<str>>,
    pub(super) is_assign: bool,
    pub(super) cmds: Vec<Command>,
}

#[derive(Debug)]
pub(super) struct Command {
    pub(super) args: Vec<Arg>,
}

/// A numeric literal, with the forms Go's `NumberNode` records.
#[derive(Debug, Clone, Copy)]
pub(super) struct Number {
    pub(super) int: Option<i64>,
    pub(super) float: Option<f64>,
    /// Written with `.`, `e` or `p` (and not as a hex integer or a
    /// character): Go then passes it to `interface{}` parameters as float64.
    pub(super) float_syntax: bool,
}

#[derive(Debug)]
pub(super) enum Arg {
    Dot(Span),
    Nil(Span),
    Bool(bool, Span),
    Number(Number, Span),
    Str(Box<str>, Span),
    /// `.a.b`: fields of dot.
    Field(Vec<Box<str>>, Span),
    /// `$x.a.b`; `$` alone is the template's data.
    Variable(Box<str>, Vec<Box<str>>, Span),
    Func(Func, Span),
    /// `(pipeline).a.b`, or a function called through a chain.
    Chain(Box<Arg>, Vec<Box<str>>, Span),
    Pipe(Box<Pipe>, Span),
}

impl Arg {
    pub(super) fn span(&self) -> Span {
        match self {
            Arg::Dot(s)
            | Arg::Nil(s)
            | Arg::Bool(_, s)
            | Arg::Number(_, s)
            | Arg::Str(_, s)
            | Arg::Field(_, s)
            | Arg::Variable(_, _, s)
            | Arg::Func(_, s)
            | Arg::Chain(_, _, s)
            | Arg::Pipe(_, s) => *s,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Text(String),
    LeftDelim,
    RightDelim,
    Space,
    Pipe,
    LeftParen,
    RightParen,
    Declare,
    Assign,
    Comma,
    Dot,
    Field(String),
    Variable(String),
    Ident(String),
    Bool(bool),
    Nil,
    Number(String),
    Str(String),
    Char(char),
    Keyword(&'static str),
    Eof,
}

#[derive(Debug, Clone)]
struct Item {
    tok: Tok,
    start: usize,
    end: usize,
    line: usize,
}

const KEYWORDS: [&str; 11] = [
    "block", "break", "continue", "define", "else", "end", "if", "range", "template", "with", "nil",
];

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// A parse error before the template name is added: the line and message.
pub(super) type ParseError = (usize, String);

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
    items: Vec<Item>,
}

impl<'s> Lexer<'s> {
    fn line_at(&self, pos: usize) -> usize {
        1 + self.src[..pos.min(self.src.len())].matches('\n').count()
    }

    fn push(&mut self, tok: Tok, start: usize, end: usize) {
        let line = self.line_at(start);
        self.items.push(Item { tok, start, end, line });
    }

    fn fail(&self, pos: usize, message: String) -> ParseError {
        (self.line_at(pos), message)
    }

    fn run(mut self) -> Result<Vec<Item>, ParseError> {
        let mut trim_next_text = false;
        loop {
            let rest = &self.src[self.pos..];
            let text_len = rest.find("{{").unwrap_or(rest.len());
            let mut text = &rest[..text_len];
            if trim_next_text {
                text = text.trim_start_matches(|c: char| c.is_ascii() && is_space(c as u8));
            }
            let after = &rest[text_len..];
            let trim_left = after.len() >= 4 && after.as_bytes()[2] == b'-' && is_space(after.as_bytes()[3]);
            if trim_left {
                text = text.trim_end_matches(|c: char| c.is_ascii() && is_space(c as u8));
            }
            if !text.is_empty() {
                let start = self.pos;
                self.push(Tok::Text(text.to_string()), start, start + text_len);
            }
            self.pos += text_len;
            if self.pos >= self.src.len() {
                let end = self.src.len();
                self.push(Tok::Eof, end, end);
                return Ok(self.items);
            }
            let delim_start = self.pos;
            self.pos += if trim_left { 4 } else { 2 };
            // Comments must sit right against the delimiters.
            if self.src[self.pos..].starts_with("/*") {
                let Some(close) = self.src[self.pos + 2..].find("*/") else {
                    return Err(self.fail(delim_start, "unclosed comment".into()));
                };
                self.pos += 2 + close + 2;
                let (ok, trim) = self.at_right_delim();
                if !ok {
                    return Err(self.fail(delim_start, "comment ends before closing delimiter".into()));
                }
                self.pos += if trim { 4 } else { 2 };
                trim_next_text = trim;
                continue;
            }
            self.push(Tok::LeftDelim, delim_start, self.pos);
            trim_next_text = self.inside_action()?;
        }
    }

    /// At `}}` or at ` -}}` (a trim marker needs the space before it).
    fn at_right_delim(&self) -> (bool, bool) {
        let rest = &self.src.as_bytes()[self.pos..];
        if rest.starts_with(b"}}") {
            return (true, false);
        }
        if rest.len() >= 4 && is_space(rest[0]) && &rest[1..4] == b"-}}" {
            return (true, true);
        }
        (false, false)
    }

    /// Lexes one action; returns whether it ended with a trim marker.
    fn inside_action(&mut self) -> Result<bool, ParseError> {
        let mut paren_depth = 0usize;
        loop {
            let (at_end, trim) = self.at_right_delim();
            if at_end {
                if paren_depth > 0 {
                    return Err(self.fail(self.pos, "unclosed left paren".into()));
                }
                let start = self.pos;
                self.pos += if trim { 4 } else { 2 };
                self.push(Tok::RightDelim, start, self.pos);
                return Ok(trim);
            }
            let start = self.pos;
            let Some(c) = self.src[self.pos..].chars().next() else {
                return Err(self.fail(self.pos, "unclosed action".into()));
            };
            match c {
                c if c.is_ascii() && is_space(c as u8) => {
                    // Stop before a trim marker so ` -}}` is seen whole.
                    while let Some(&b) = self.src.as_bytes().get(self.pos) {
                        if !is_space(b) || self.at_right_delim().0 {
                            break;
                        }
                        self.pos += 1;
                    }
                    self.push(Tok::Space, start, self.pos);
                }
                '=' => {
                    self.pos += 1;
                    self.push(Tok::Assign, start, self.pos);
                }
                ':' => {
                    if !self.src[self.pos..].starts_with(":=") {
                        return Err(self.fail(self.pos, "expected :=".into()));
                    }
                    self.pos += 2;
                    self.push(Tok::Declare, start, self.pos);
                }
                '|' => {
                    self.pos += 1;
                    self.push(Tok::Pipe, start, self.pos);
                }
                ',' => {
                    self.pos += 1;
                    self.push(Tok::Comma, start, self.pos);
                }
                '(' => {
                    self.pos += 1;
                    paren_depth += 1;
                    self.push(Tok::LeftParen, start, self.pos);
                }
                ')' => {
                    if paren_depth == 0 {
                        return Err(self.fail(self.pos, "unexpected right paren".into()));
                    }
                    paren_depth -= 1;
                    self.pos += 1;
                    self.push(Tok::RightParen, start, self.pos);
                }
                '"' => self.lex_quote(start)?,
                '`' => {
                    let Some(close) = self.src[self.pos + 1..].find('`') else {
                        return Err(self.fail(start, "unterminated raw quoted string".into()));
                    };
                    let body = self.src[self.pos + 1..self.pos + 1 + close].replace('\r', "");
                    self.pos += close + 2;
                    self.push(Tok::Str(body), start, self.pos);
                }
                '\'' => self.lex_char(start)?,
                '$' => {
                    self.pos += 1;
                    let name_len = self.alnum_len();
                    self.pos += name_len;
                    let name = self.src[start..self.pos].to_string();
                    self.push(Tok::Variable(name), start, self.pos);
                }
                '.' => {
                    let next = self.src[self.pos + 1..].chars().next();
                    if next.is_some_and(|c| c.is_ascii_digit()) {
                        self.lex_number(start)?;
                    } else {
                        self.pos += 1;
                        let name_len = self.alnum_len();
                        self.pos += name_len;
                        if name_len == 0 {
                            self.push(Tok::Dot, start, self.pos);
                        } else {
                            let name = self.src[start + 1..self.pos].to_string();
                            self.push(Tok::Field(name), start, self.pos);
                        }
                    }
                }
                '+' | '-' | '0'..='9' => self.lex_number(start)?,
                c if is_alnum(c) => {
                    let word_len = self.alnum_len();
                    self.pos += word_len;
                    let word = &self.src[start..self.pos];
                    if !self.at_terminator() {
                        let bad = self.src[self.pos..].chars().next().unwrap_or(' ');
                        return Err(self.fail(start, format!("bad character {}", go_u(bad))));
                    }
                    let tok = match word {
                        "true" => Tok::Bool(true),
                        "false" => Tok::Bool(false),
                        "nil" => Tok::Nil,
                        _ => match KEYWORDS.iter().find(|k| **k == word) {
                            Some(keyword) => Tok::Keyword(keyword),
                            None => Tok::Ident(word.to_string()),
                        },
                    };
                    self.push(tok, start, self.pos);
                }
                other => {
                    return Err(self.fail(start, format!("unrecognized character in action: {}", go_u(other))));
                }
            }
        }
    }

    fn alnum_len(&self) -> usize {
        self.src[self.pos..]
            .chars()
            .take_while(|c| is_alnum(*c))
            .map(char::len_utf8)
            .sum()
    }

    fn at_terminator(&self) -> bool {
        match self.src[self.pos..].chars().next() {
            None => true,
            Some(c) if c.is_ascii() && is_space(c as u8) => true,
            Some('.' | ',' | '|' | ':' | ')' | '(') => true,
            Some(_) => self.src[self.pos..].starts_with("}}"),
        }
    }

    fn lex_quote(&mut self, start: usize) -> Result<(), ParseError> {
        let bytes = self.src.as_bytes();
        let mut i = self.pos + 1;
        loop {
            match bytes.get(i) {
                None | Some(b'\n') => return Err(self.fail(start, "unterminated quoted string".into())),
                Some(b'\\') => i += 2,
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        let body = &self.src[self.pos + 1..i.min(self.src.len())];
        let value = unquote(body).ok_or_else(|| self.fail(start, "invalid syntax".into()))?;
        self.pos = i + 1;
        self.push(Tok::Str(value), start, self.pos);
        Ok(())
    }

    fn lex_char(&mut self, start: usize) -> Result<(), ParseError> {
        let bytes = self.src.as_bytes();
        let mut i = self.pos + 1;
        loop {
            match bytes.get(i) {
                None | Some(b'\n') => return Err(self.fail(start, "unterminated character constant".into())),
                Some(b'\\') => i += 2,
                Some(b'\'') => break,
                Some(_) => i += 1,
            }
        }
        let body = &self.src[self.pos + 1..i.min(self.src.len())];
        let value = unquote(body).filter(|v| v.chars().count() == 1);
        let Some(c) = value.and_then(|v| v.chars().next()) else {
            return Err(self.fail(start, format!("malformed character constant: {}", &self.src[start..=i])));
        };
        self.pos = i + 1;
        self.push(Tok::Char(c), start, self.pos);
        Ok(())
    }

    fn lex_number(&mut self, start: usize) -> Result<(), ParseError> {
        let bytes = self.src.as_bytes();
        let mut i = self.pos;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let mut digits: &[u8] = b"0123456789_";
        let mut exponent: &[u8] = b"eE";
        if bytes.get(i) == Some(&b'0') {
            match bytes.get(i + 1) {
                Some(b'x' | b'X') => {
                    i += 2;
                    digits = b"0123456789abcdefABCDEF_";
                    exponent = b"pP";
                }
                Some(b'o' | b'O') => {
                    i += 2;
                    digits = b"01234567_";
                    exponent = b"";
                }
                Some(b'b' | b'B') => {
                    i += 2;
                    digits = b"01_";
                    exponent = b"";
                }
                _ => {}
            }
        }
        while bytes.get(i).is_some_and(|b| digits.contains(b)) {
            i += 1;
        }
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            while bytes.get(i).is_some_and(|b| digits.contains(b)) {
                i += 1;
            }
        }
        if !exponent.is_empty() && bytes.get(i).is_some_and(|b| exponent.contains(b)) {
            i += 1;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            while bytes.get(i).is_some_and(|b| b.is_ascii_digit() || *b == b'_') {
                i += 1;
            }
        }
        let text = &self.src[start..i];
        if self.src[i..].chars().next().is_some_and(is_alnum) {
            let end = i + self.src[i..]
                .chars()
                .take_while(|c| is_alnum(*c))
                .map(char::len_utf8)
                .sum::<usize>();
            return Err(self.fail(start, format!("bad number syntax: \"{}\"", &self.src[start..end])));
        }
        if text == "+" || text == "-" {
            return Err(self.fail(start, format!("bad number syntax: \"{text}\"")));
        }
        self.pos = i;
        self.push(Tok::Number(text.to_string()), start, i);
        Ok(())
    }
}

/// Go's `%#U`: `U+0021 '!'`.
fn go_u(c: char) -> String {
    format!("U+{:04X} '{c}'", c as u32)
}

/// `strconv.Unquote` for the body of a `"…"` or `'…'` literal. Escapes that
/// make invalid UTF-8 (`\xff`) become U+FFFD: Rust strings are UTF-8.
fn unquote(body: &str) -> Option<String> {
    let mut bytes: Vec<u8> = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let escape = chars.next()?;
        let simple = match escape {
            'a' => Some(7u8),
            'b' => Some(8),
            'f' => Some(12),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(11),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            '\'' => Some(b'\''),
            _ => None,
        };
        if let Some(byte) = simple {
            bytes.push(byte);
            continue;
        }
        match escape {
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                bytes.push(u8::from_str_radix(&hex, 16).ok().filter(|_| hex.len() == 2)?);
            }
            '0'..='7' => {
                let rest: String = chars.by_ref().take(2).collect();
                let octal = format!("{escape}{rest}");
                let value = u32::from_str_radix(&octal, 8).ok().filter(|_| octal.len() == 3)?;
                bytes.push(u8::try_from(value).ok()?);
            }
            'u' | 'U' => {
                let len = if escape == 'u' { 4 } else { 8 };
                let hex: String = chars.by_ref().take(len).collect();
                if hex.len() != len {
                    return None;
                }
                let c = char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?;
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Go's `NumberNode`: which of int and float64 the literal fits.
fn parse_number(text: &str) -> Option<Number> {
    let clean: String = text.chars().filter(|c| *c != '_').collect();
    let (negative, unsigned) = match clean.as_bytes().first() {
        Some(b'-') => (true, &clean[1..]),
        Some(b'+') => (false, &clean[1..]),
        _ => (false, clean.as_str()),
    };
    let lower = unsigned.to_ascii_lowercase();
    let radix_int = if let Some(hex) = lower.strip_prefix("0x") {
        if hex.contains(['.', 'p']) {
            None
        } else {
            Some(u64::from_str_radix(hex, 16).ok()?)
        }
    } else if let Some(octal) = lower.strip_prefix("0o") {
        Some(u64::from_str_radix(octal, 8).ok()?)
    } else if let Some(binary) = lower.strip_prefix("0b") {
        Some(u64::from_str_radix(binary, 2).ok()?)
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|b| b.is_ascii_digit()) {
        Some(u64::from_str_radix(&lower[1..], 8).ok()?)
    } else if lower.bytes().all(|b| b.is_ascii_digit()) {
        lower.parse::<u64>().ok()
    } else {
        None
    };
    if let Some(magnitude) = radix_int {
        let int = if negative {
            0i64.checked_sub_unsigned(magnitude)
        } else {
            i64::try_from(magnitude).ok()
        };
        let float = magnitude as f64 * if negative { -1.0 } else { 1.0 };
        return Some(Number {
            int,
            float: Some(float),
            float_syntax: false,
        });
    }
    if lower.starts_with("0x") {
        // Hexadecimal floats are too rare in log templates to carry a parser for.
        return None;
    }
    let float: f64 = clean.parse().ok()?;
    if !float.is_finite() {
        return None;
    }
    let int = (float.fract() == 0.0 && float.abs() < 9.2e18).then_some(float as i64);
    Some(Number {
        int,
        float: Some(float),
        float_syntax: true,
    })
}

struct Parser<'s> {
    src: &'s str,
    items: Vec<Item>,
    pos: usize,
    /// Declared variable names, innermost last; `$` is always there.
    vars: Vec<String>,
    range_depth: usize,
    /// Nesting of parentheses and control structures, bounded so a hostile
    /// template cannot overflow the stack of the thread parsing it.
    depth: usize,
}

/// Deeper nesting than any real template needs; Go stops at 10000 with
/// goroutine stacks that grow, our threads' stacks do not.
const MAX_NESTING: usize = 100;

/// Parses `src` into its top-level nodes.
pub(super) fn parse(src: &str) -> Result<Vec<Node>, ParseError> {
    let items = Lexer {
        src,
        pos: 0,
        items: Vec::new(),
    }
    .run()?;
    let mut parser = Parser {
        src,
        items,
        pos: 0,
        vars: vec!["$".to_string()],
        range_depth: 0,
        depth: 0,
    };
    let (nodes, end) = parser.list()?;
    match end {
        ListEnd::Eof => Ok(nodes),
        ListEnd::End(line) => Err((line, "unexpected {{end}}".into())),
        ListEnd::Else(line) => Err((line, "unexpected {{else}}".into())),
    }
}

enum ListEnd {
    Eof,
    End(usize),
    Else(usize),
}

impl<'s> Parser<'s> {
    fn next(&mut self) -> Item {
        let item = self.items[self.pos.min(self.items.len() - 1)].clone();
        if self.pos < self.items.len() - 1 {
            self.pos += 1;
        }
        item
    }

    fn peek(&self) -> &Item {
        &self.items[self.pos.min(self.items.len() - 1)]
    }

    fn next_non_space(&mut self) -> Item {
        loop {
            let item = self.next();
            if item.tok != Tok::Space {
                return item;
            }
        }
    }

    fn peek_non_space(&mut self) -> Item {
        let save = self.pos;
        let item = self.next_non_space();
        self.pos = save;
        item
    }

    fn err<T>(&self, item: &Item, message: impl Into<String>) -> Result<T, ParseError> {
        Err((item.line, message.into()))
    }

    fn unexpected<T>(&self, item: &Item, context: &str) -> Result<T, ParseError> {
        let shown = match &item.tok {
            Tok::Eof => "EOF".to_string(),
            Tok::Keyword(k) => format!("<{k}>"),
            _ => {
                let text = &self.src[item.start..item.end];
                if text.chars().count() > 10 {
                    format!("{:?}...", text.chars().take(10).collect::<String>())
                } else {
                    format!("{text:?}")
                }
            }
        };
        self.err(item, format!("unexpected {shown} in {context}"))
    }

    /// Nodes until `{{end}}`, `{{else}}` or the end of input.
    fn list(&mut self) -> Result<(Vec<Node>, ListEnd), ParseError> {
        let mut nodes = Vec::new();
        loop {
            let item = self.next();
            match item.tok {
                Tok::Eof => return Ok((nodes, ListEnd::Eof)),
                Tok::Text(text) => nodes.push(Node::Text(text.into_boxed_str())),
                Tok::LeftDelim => {
                    let keyword = self.next_non_space();
                    match keyword.tok {
                        Tok::Keyword("end") => {
                            self.expect_right_delim("end")?;
                            return Ok((nodes, ListEnd::End(keyword.line)));
                        }
                        Tok::Keyword("else") => return Ok((nodes, ListEnd::Else(keyword.line))),
                        Tok::Keyword("if") => nodes.push(Node::If(self.branch("if")?)),
                        Tok::Keyword("with") => nodes.push(Node::With(self.branch("with")?)),
                        Tok::Keyword("range") => {
                            self.range_depth += 1;
                            let branch = self.branch("range");
                            self.range_depth -= 1;
                            nodes.push(Node::Range(branch?));
                        }
                        Tok::Keyword(word @ ("break" | "continue")) => {
                            if self.range_depth == 0 {
                                return self.err(&keyword, format!("{{{{{word}}}}} outside {{{{range}}}}"));
                            }
                            self.expect_right_delim(word)?;
                            nodes.push(if word == "break" { Node::Break } else { Node::Continue });
                        }
                        Tok::Keyword(word @ ("define" | "template" | "block")) => {
                            return self.err(&keyword, format!("{{{{{word}}}}} is not supported in log templates"));
                        }
                        _ => {
                            self.pos -= 1;
                            let pipe = self.pipeline("command", &Tok::RightDelim)?;
                            nodes.push(Node::Action(pipe));
                        }
                    }
                }
                _ => return self.unexpected(&item, "input"),
            }
        }
    }

    fn expect_right_delim(&mut self, context: &str) -> Result<(), ParseError> {
        let item = self.next_non_space();
        if item.tok != Tok::RightDelim {
            return self.unexpected(&item, context);
        }
        Ok(())
    }

    /// `if`/`with`/`range`: pipeline, body, optional `else` (or `else if`).
    fn branch(&mut self, context: &str) -> Result<Branch, ParseError> {
        self.depth += 1;
        let branch = self.branch_inner(context);
        self.depth -= 1;
        branch
    }

    fn too_deep(&self) -> Result<(), ParseError> {
        if self.depth > MAX_NESTING {
            return self.err(self.peek(), format!("template nests deeper than {MAX_NESTING} levels"));
        }
        Ok(())
    }

    fn branch_inner(&mut self, context: &str) -> Result<Branch, ParseError> {
        self.too_deep()?;
        let vars_mark = self.vars.len();
        let pipe = self.pipeline(context, &Tok::RightDelim)?;
        let (list, end) = self.list()?;
        let else_list = match end {
            ListEnd::Eof => return self.err(self.peek(), "unexpected EOF"),
            ListEnd::End(_) => Vec::new(),
            ListEnd::Else(_) => {
                let next = self.peek_non_space();
                let chained = match (&next.tok, context) {
                    (Tok::Keyword("if"), "if") => Some("if"),
                    (Tok::Keyword("with"), "with") => Some("with"),
                    _ => None,
                };
                match chained {
                    // `{{else if x}}` is an `if` nested in the else branch that
                    // shares this `{{end}}`.
                    Some(word) => {
                        self.next_non_space();
                        let inner = self.branch(word)?;
                        vec![if word == "if" {
                            Node::If(inner)
                        } else {
                            Node::With(inner)
                        }]
                    }
                    None => {
                        self.expect_right_delim("else")?;
                        let (else_list, end) = self.list()?;
                        match end {
                            ListEnd::End(_) => else_list,
                            ListEnd::Eof => return self.err(self.peek(), "unexpected EOF"),
                            ListEnd::Else(line) => {
                                return Err((line, "expected end; found {{else}}".into()));
                            }
                        }
                    }
                }
            }
        };
        self.vars.truncate(vars_mark);
        Ok(Branch { pipe, list, else_list })
    }

    fn pipeline(&mut self, context: &str, end: &Tok) -> Result<Pipe, ParseError> {
        let mut pipe = Pipe {
            decl: Vec::new(),
            is_assign: false,
            cmds: Vec::new(),
        };
        // Declarations: `$x :=`, `$x =`, and in range `$i, $e :=`.
        let start = self.pos;
        loop {
            let variable = self.peek_non_space();
            let Tok::Variable(name) = &variable.tok else { break };
            let name = name.clone();
            self.next_non_space();
            let following = self.peek_non_space();
            match following.tok {
                Tok::Declare | Tok::Assign => {
                    self.next_non_space();
                    pipe.is_assign = following.tok == Tok::Assign;
                    if pipe.is_assign && !self.vars.contains(&name) {
                        return self.err(&variable, format!("undefined variable {name:?}"));
                    }
                    pipe.decl.push(name.clone().into_boxed_str());
                    if !pipe.is_assign {
                        self.vars.push(name);
                    }
                    break;
                }
                Tok::Comma if context == "range" && pipe.decl.is_empty() => {
                    self.next_non_space();
                    pipe.decl.push(name.clone().into_boxed_str());
                    self.vars.push(name);
                    continue;
                }
                Tok::Comma => return self.err(&following, format!("too many declarations in {context}")),
                _ => {
                    self.pos = start;
                    if !pipe.decl.is_empty() {
                        return self.err(&following, format!("missing := in {context} declaration"));
                    }
                    break;
                }
            }
        }
        loop {
            let item = self.next_non_space();
            if &item.tok == end {
                if pipe.cmds.is_empty() {
                    return self.err(&item, format!("missing value for {context}"));
                }
                for (i, cmd) in pipe.cmds.iter().enumerate().skip(1) {
                    if matches!(
                        cmd.args[0],
                        Arg::Bool(..) | Arg::Dot(_) | Arg::Nil(_) | Arg::Number(..) | Arg::Str(..)
                    ) {
                        return self.err(&item, format!("non executable command in pipeline stage {}", i + 1));
                    }
                }
                return Ok(pipe);
            }
            match item.tok {
                Tok::Bool(_)
                | Tok::Char(_)
                | Tok::Dot
                | Tok::Field(_)
                | Tok::Ident(_)
                | Tok::Number(_)
                | Tok::Nil
                | Tok::Str(_)
                | Tok::Variable(_)
                | Tok::LeftParen => {
                    self.pos -= 1;
                    pipe.cmds.push(self.command()?);
                }
                _ => return self.unexpected(&item, context),
            }
        }
    }

    fn command(&mut self) -> Result<Command, ParseError> {
        let mut args = Vec::new();
        loop {
            self.peek_non_space();
            while self.peek().tok == Tok::Space {
                self.next();
            }
            if let Some(operand) = self.operand()? {
                args.push(operand);
            }
            let item = self.next();
            match item.tok {
                Tok::Space => continue,
                Tok::RightDelim | Tok::RightParen => self.pos -= 1,
                Tok::Pipe => {
                    // A pipe must be followed by a command.
                    let following = self.peek_non_space();
                    if matches!(following.tok, Tok::RightDelim | Tok::RightParen) {
                        return self.err(&following, "missing value for command");
                    }
                }
                _ => return self.unexpected(&item, "operand"),
            }
            break;
        }
        if args.is_empty() {
            return self.err(self.peek(), "empty command");
        }
        Ok(Command { args })
    }

    fn operand(&mut self) -> Result<Option<Arg>, ParseError> {
        let Some(term) = self.term()? else { return Ok(None) };
        if !matches!(self.peek().tok, Tok::Field(_)) {
            return Ok(Some(term));
        }
        let mut fields = Vec::new();
        let mut end = term.span().end;
        while let Tok::Field(name) = &self.peek().tok {
            fields.push(name.clone().into_boxed_str());
            end = self.peek().end;
            self.next();
        }
        let span = Span {
            start: term.span().start,
            end,
        };
        Ok(Some(match term {
            Arg::Field(mut base, _) => {
                base.extend(fields);
                Arg::Field(base, span)
            }
            Arg::Variable(name, mut base, _) => {
                base.extend(fields);
                Arg::Variable(name, base, span)
            }
            Arg::Bool(..) | Arg::Str(..) | Arg::Number(..) | Arg::Nil(_) | Arg::Dot(_) => {
                let text = &self.src[term.span().start..term.span().end];
                let line = 1 + self.src[..span.start].matches('\n').count();
                return Err((line, format!("unexpected . after term {text:?}")));
            }
            other => Arg::Chain(Box::new(other), fields, span),
        }))
    }

    fn term(&mut self) -> Result<Option<Arg>, ParseError> {
        let item = self.next_non_space();
        let span = Span {
            start: item.start,
            end: item.end,
        };
        let line = item.line;
        Ok(Some(match item.tok {
            Tok::Ident(name) => match Func::from_name(&name) {
                Some(func) => Arg::Func(func, span),
                None => return Err((line, format!("function {name:?} not defined"))),
            },
            Tok::Dot => Arg::Dot(span),
            Tok::Nil => Arg::Nil(span),
            Tok::Variable(name) => {
                if !self.vars.contains(&name) {
                    return Err((line, format!("undefined variable {name:?}")));
                }
                Arg::Variable(name.into_boxed_str(), Vec::new(), span)
            }
            Tok::Field(name) => Arg::Field(vec![name.into_boxed_str()], span),
            Tok::Bool(b) => Arg::Bool(b, span),
            Tok::Char(c) => {
                let value = c as i64;
                Arg::Number(
                    Number {
                        int: Some(value),
                        float: Some(value as f64),
                        float_syntax: false,
                    },
                    span,
                )
            }
            Tok::Number(text) => match parse_number(&text) {
                Some(number) => Arg::Number(number, span),
                None => return Err((line, format!("illegal number syntax: {text:?}"))),
            },
            Tok::LeftParen => {
                self.depth += 1;
                let pipe = self
                    .too_deep()
                    .and_then(|()| self.pipeline("parenthesized pipeline", &Tok::RightParen));
                self.depth -= 1;
                let pipe = pipe?;
                let close = self.items[self.pos - 1].end;
                Arg::Pipe(
                    Box::new(pipe),
                    Span {
                        start: item.start,
                        end: close,
                    },
                )
            }
            Tok::Str(text) => Arg::Str(text.into_boxed_str(), span),
            _ => {
                self.pos -= 1;
                return Ok(None);
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_go() {
        let n = parse_number("42").unwrap();
        assert_eq!((n.int, n.float, n.float_syntax), (Some(42), Some(42.0), false));
        let n = parse_number("0x1F").unwrap();
        assert_eq!(n.int, Some(31));
        assert_eq!(parse_number("017").unwrap().int, Some(15));
        assert_eq!(parse_number("0b101").unwrap().int, Some(5));
        assert_eq!(parse_number("1_000").unwrap().int, Some(1000));
        let n = parse_number("1e3").unwrap();
        assert_eq!((n.int, n.float_syntax), (Some(1000), true));
        let n = parse_number("-2.5").unwrap();
        assert_eq!((n.int, n.float), (None, Some(-2.5)));
        assert!(parse_number("09").is_none());
    }

    #[test]
    fn unquote_handles_go_escapes() {
        assert_eq!(
            unquote(r#"a\tb\n\x41\101\u00e9\U0001F600\\\""#).unwrap(),
            "a\tb\nAA\u{e9}\u{1F600}\\\""
        );
        assert!(unquote(r"\q").is_none());
        assert!(unquote(r"\x4").is_none());
    }
}
