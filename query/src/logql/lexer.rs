//! LogQL's lexer.
//!
//! Loki lexes with Go's `text/scanner` plus a layer of its own, and several of
//! its rules are visible to users, so this lexer follows them rather than a
//! tidier design:
//!
//! - a number immediately followed by unit letters is a duration when
//!   Prometheus' or Go's duration syntax accepts the run (`5m`, `1h30m`,
//!   `1.5s`, `250ms`), otherwise a byte size when go-humanize accepts it
//!   (`20MB`, `1KiB`, `5k`), otherwise a plain number; `-` directly followed
//!   by a Go duration is a negative duration (`-5m`);
//! - `[…]` is read whole as a *Prometheus* duration (`[1.5s]` is an error);
//! - function names (`rate`, `sum`, `bytes`, `ip`, …) are keywords only when
//!   `(` or `by (`/`without (` follows, so they stay usable as label names,
//!   while the other keywords (`by`, `json`, `or`, `offset`, …) never are;
//! - keywords are case-insensitive; `#` starts a comment to the end of the
//!   line, and so do Go's `//` and `/* */`;
//! - numbers are Go literals (`0x1p3`, `1_000`, `0o17`); whether one makes a
//!   usable value is decided later, as in Loki.
//!
//! Columns count characters from 1, like Go's scanner, so error positions
//! match the ones Loki reports.

use super::Position;
use super::ast::{Duration, RangeOp, UnwrapConversion, VectorOp};

/// A token kind. Its [`describe`](Tok::describe) is the name Loki's
/// generated parser uses in `syntax error: unexpected …` messages.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Comma,
    Dot,
    OpenBrace,
    CloseBrace,
    Eq,
    Neq,
    Re,
    Nre,
    Npa,
    PipeExact,
    PipeMatch,
    PipePattern,
    Pipe,
    OpenParen,
    CloseParen,
    CloseBracket,
    By,
    Without,
    Bool,
    LabelReplace,
    Offset,
    On,
    Ignoring,
    GroupLeft,
    GroupRight,
    Or,
    And,
    Unless,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    CmpEq,
    Gt,
    Gte,
    Lt,
    Lte,
    Json,
    Regexp,
    Logfmt,
    Unpack,
    Pattern,
    LabelFmt,
    LineFmt,
    Ip,
    Decolorize,
    Drop,
    Keep,
    Unwrap,
    RangeOp(RangeOp),
    VectorOp(VectorOp),
    Vector,
    Conv(UnwrapConversion),
    Ident(String),
    Str(String),
    /// The literal's text; it is converted where the grammar knows which
    /// conversion applies (float, integer), with Loki's messages.
    Number(String),
    Duration(Duration),
    Bytes(u64),
    Range(Duration),
    Flag(String),
    Eof,
    /// A lexical error: the parser reports it when it reaches this token.
    Invalid(String),
}

impl Tok {
    pub(crate) fn describe(&self) -> String {
        let fixed = match self {
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::OpenBrace => "{",
            Tok::CloseBrace => "}",
            Tok::Eq => "=",
            Tok::Neq => "!=",
            Tok::Re => "=~",
            Tok::Nre => "!~",
            Tok::Npa => "!>",
            Tok::PipeExact => "|=",
            Tok::PipeMatch => "|~",
            Tok::PipePattern => "|>",
            Tok::Pipe => "|",
            Tok::OpenParen => "(",
            Tok::CloseParen => ")",
            Tok::CloseBracket => "]",
            Tok::By => "by",
            Tok::Without => "without",
            Tok::Bool => "bool",
            Tok::LabelReplace => "label_replace",
            Tok::Offset => "offset",
            Tok::On => "on",
            Tok::Ignoring => "ignoring",
            Tok::GroupLeft => "group_left",
            Tok::GroupRight => "group_right",
            Tok::Or => "or",
            Tok::And => "and",
            Tok::Unless => "unless",
            Tok::Add => "+",
            Tok::Sub => "-",
            Tok::Mul => "*",
            Tok::Div => "/",
            Tok::Mod => "%",
            Tok::Pow => "^",
            Tok::CmpEq => "==",
            Tok::Gt => ">",
            Tok::Gte => ">=",
            Tok::Lt => "<",
            Tok::Lte => "<=",
            Tok::Json => "json",
            Tok::Regexp => "regexp",
            Tok::Logfmt => "logfmt",
            Tok::Unpack => "unpack",
            Tok::Pattern => "pattern",
            Tok::LabelFmt => "label_format",
            Tok::LineFmt => "line_format",
            Tok::Ip => "ip",
            Tok::Decolorize => "decolorize",
            Tok::Drop => "drop",
            Tok::Keep => "keep",
            Tok::Unwrap => "unwrap",
            // Function-only tokens keep their grammar names in Loki's messages.
            Tok::RangeOp(op) => return op.as_str().to_uppercase(),
            Tok::VectorOp(op) => return op.as_str().to_uppercase(),
            Tok::Vector => "VECTOR",
            Tok::Conv(conv) => return format!("{}_CONV", conv.as_str().to_uppercase()),
            Tok::Ident(_) => "IDENTIFIER",
            Tok::Str(_) => "STRING",
            Tok::Number(_) => "NUMBER",
            Tok::Duration(_) => "DURATION",
            Tok::Bytes(_) => "BYTES",
            Tok::Range(_) => "RANGE",
            Tok::Flag(_) => "FUNCTION_FLAG",
            Tok::Eof | Tok::Invalid(_) => "$end",
        };
        fixed.to_string()
    }
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) pos: Position,
}

/// Keywords and operators, lower-case (Loki's `tokens` table).
fn keyword(text: &str) -> Option<Tok> {
    Some(match text {
        "," => Tok::Comma,
        "." => Tok::Dot,
        "{" => Tok::OpenBrace,
        "}" => Tok::CloseBrace,
        "=" => Tok::Eq,
        "!=" => Tok::Neq,
        "=~" => Tok::Re,
        "!~" => Tok::Nre,
        "!>" => Tok::Npa,
        "|=" => Tok::PipeExact,
        "|~" => Tok::PipeMatch,
        "|>" => Tok::PipePattern,
        "|" => Tok::Pipe,
        "(" => Tok::OpenParen,
        ")" => Tok::CloseParen,
        "]" => Tok::CloseBracket,
        "unwrap" => Tok::Unwrap,
        "by" => Tok::By,
        "without" => Tok::Without,
        "bool" => Tok::Bool,
        "label_replace" => Tok::LabelReplace,
        "offset" => Tok::Offset,
        "on" => Tok::On,
        "ignoring" => Tok::Ignoring,
        "group_left" => Tok::GroupLeft,
        "group_right" => Tok::GroupRight,
        "or" => Tok::Or,
        "and" => Tok::And,
        "unless" => Tok::Unless,
        "+" => Tok::Add,
        "-" => Tok::Sub,
        "*" => Tok::Mul,
        "/" => Tok::Div,
        "%" => Tok::Mod,
        "^" => Tok::Pow,
        "==" => Tok::CmpEq,
        ">" => Tok::Gt,
        ">=" => Tok::Gte,
        "<" => Tok::Lt,
        "<=" => Tok::Lte,
        "json" => Tok::Json,
        "regexp" => Tok::Regexp,
        "logfmt" => Tok::Logfmt,
        "unpack" => Tok::Unpack,
        "pattern" => Tok::Pattern,
        "label_format" => Tok::LabelFmt,
        "line_format" => Tok::LineFmt,
        "ip" => Tok::Ip,
        "decolorize" => Tok::Decolorize,
        "drop" => Tok::Drop,
        "keep" => Tok::Keep,
        _ => return None,
    })
}

/// Words that are tokens only when called like a function (Loki's
/// `functionTokens`), lower-case.
fn function_keyword(text: &str) -> Option<Tok> {
    if let Some(op) = RangeOp::ALL.into_iter().find(|op| op.as_str() == text) {
        return Some(Tok::RangeOp(op));
    }
    if let Some(op) = VectorOp::ALL.into_iter().find(|op| op.as_str() == text) {
        return Some(Tok::VectorOp(op));
    }
    Some(match text {
        "vector" => Tok::Vector,
        "label_replace" => Tok::LabelReplace,
        "bytes" => Tok::Conv(UnwrapConversion::Bytes),
        "duration" => Tok::Conv(UnwrapConversion::Duration),
        "duration_seconds" => Tok::Conv(UnwrapConversion::DurationSeconds),
        "ip" => Tok::Ip,
        _ => return None,
    })
}

const PARSER_FLAGS: [&str; 2] = ["--strict", "--keep-empty"];

/// Go's scanner treats only these four as white space.
fn is_go_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn is_duration_rune(c: char) -> bool {
    matches!(c, 'n' | 'u' | 'µ' | 'm' | 's' | 'h' | 'd' | 'w' | 'y')
}

fn is_bytes_rune(c: char) -> bool {
    matches!(c, 'B' | 'i' | 'k' | 'K' | 'M' | 'G' | 'T' | 'P')
}

/// Splits `input` into tokens. The list always ends with `Eof` or, after a
/// lexical error, with `Invalid` (Loki stops there too: the first error wins).
pub(crate) fn lex(input: &str) -> Vec<Token> {
    let mut lexer = Lexer::new(input);
    lexer.run();
    lexer.tokens
}

struct Lexer {
    chars: Vec<char>,
    /// The position of every character, plus one for the end of input.
    positions: Vec<Position>,
    at: usize,
    tokens: Vec<Token>,
}

impl Lexer {
    fn new(input: &str) -> Self {
        let chars: Vec<char> = input.chars().collect();
        let mut positions = Vec::with_capacity(chars.len() + 1);
        let (mut line, mut column) = (1u32, 1u32);
        for &c in &chars {
            positions.push(Position { line, column });
            if c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        positions.push(Position { line, column });
        // Go's scanner skips a byte-order mark at the start (its column still counts).
        let at = usize::from(chars.first() == Some(&'\u{feff}'));
        Lexer {
            chars,
            positions,
            at,
            tokens: Vec::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.at + offset).copied()
    }

    fn text(&self, start: usize) -> String {
        self.chars[start..self.at].iter().collect()
    }

    fn run(&mut self) {
        loop {
            while self.peek().is_some_and(is_go_whitespace) {
                self.at += 1;
            }
            let start = self.at;
            let pos = self.positions[start];
            let result = match self.peek() {
                None => {
                    self.tokens.push(Token { tok: Tok::Eof, pos });
                    return;
                }
                Some(c) => self.next_token(c, start),
            };
            match result {
                Ok(None) => {}
                Ok(Some(tok)) => self.tokens.push(Token { tok, pos }),
                Err(message) => {
                    self.tokens.push(Token {
                        tok: Tok::Invalid(message),
                        pos,
                    });
                    return;
                }
            }
        }
    }

    /// Lexes the token starting at `c`; `Ok(None)` for a comment.
    fn next_token(&mut self, c: char, start: usize) -> Result<Option<Tok>, String> {
        if self.chars[start..].first() == Some(&'\0') {
            return Err("invalid character NUL".to_string());
        }
        match c {
            '#' => {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.at += 1;
                }
                Ok(None)
            }
            '/' if matches!(self.peek_at(1), Some('/') | Some('*')) => {
                self.skip_go_comment()?;
                Ok(None)
            }
            c if is_ident_start(c) => Ok(Some(self.word(start))),
            '0'..='9' => {
                self.scan_number(false)?;
                Ok(Some(self.after_number(start)))
            }
            '.' if self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) => {
                self.at += 1;
                self.scan_number(true)?;
                Ok(Some(self.after_number(start)))
            }
            '"' => self.string().map(Some),
            '`' => self.raw_string().map(Some),
            '\'' => {
                self.char_literal()?;
                Ok(Some(Tok::Ident(self.text(start))))
            }
            '[' => self.range().map(Some),
            '-' => {
                self.at += 1;
                if self.peek() == Some('-')
                    && let Some(flag) = self.flag()
                {
                    return Ok(Some(Tok::Flag(flag)));
                }
                if let Some(duration) = self.try_duration("-") {
                    return Ok(Some(Tok::Duration(duration)));
                }
                Ok(Some(Tok::Sub))
            }
            c => {
                self.at += 1;
                if let Some(next) = self.peek() {
                    let pair: String = [c, next].iter().collect();
                    if let Some(tok) = keyword(&pair) {
                        self.at += 1;
                        return Ok(Some(tok));
                    }
                }
                Ok(Some(
                    keyword(&c.to_string()).unwrap_or_else(|| Tok::Ident(c.to_string())),
                ))
            }
        }
    }

    fn skip_go_comment(&mut self) -> Result<(), String> {
        let block = self.peek_at(1) == Some('*');
        self.at += 2;
        if !block {
            while self.peek().is_some_and(|c| c != '\n') {
                self.at += 1;
            }
            return Ok(());
        }
        loop {
            match self.peek() {
                None => return Err("comment not terminated".to_string()),
                Some('*') if self.peek_at(1) == Some('/') => {
                    self.at += 2;
                    return Ok(());
                }
                Some(_) => self.at += 1,
            }
        }
    }

    fn word(&mut self, start: usize) -> Tok {
        self.at += 1;
        while self.peek().is_some_and(is_ident_continue) {
            self.at += 1;
        }
        let text = self.text(start);
        let lower = text.to_lowercase();
        if let Some(tok) = function_keyword(&lower) {
            return if self.is_function_call() { tok } else { Tok::Ident(text) };
        }
        keyword(&lower).unwrap_or(Tok::Ident(text))
    }

    /// Loki's `isFunction`: `(`, `by (` or `without (` follows, after white space.
    fn is_function_call(&self) -> bool {
        let mut at = self.at;
        let skip_space = |mut at: usize| {
            while self.chars.get(at).is_some_and(|c| c.is_whitespace()) {
                at += 1;
            }
            at
        };
        at = skip_space(at);
        if self.chars.get(at) == Some(&'(') {
            return true;
        }
        for word in ["by", "without"] {
            let end = at + word.len();
            if end <= self.chars.len() {
                let candidate: String = self.chars[at..end].iter().collect();
                if candidate.to_lowercase() == word {
                    return self.chars.get(skip_space(end)) == Some(&'(');
                }
            }
        }
        false
    }

    fn flag(&mut self) -> Option<String> {
        let mut end = self.at;
        while self.chars.get(end).is_some_and(|&c| c.is_alphabetic() || c == '-') {
            end += 1;
        }
        let flag: String = std::iter::once('-')
            .chain(self.chars[self.at..end].iter().copied())
            .collect();
        if PARSER_FLAGS.contains(&flag.as_str()) {
            self.at = end;
            Some(flag)
        } else {
            None
        }
    }

    fn after_number(&mut self, start: usize) -> Tok {
        let text = self.text(start);
        if let Some(duration) = self.try_duration(&text) {
            return Tok::Duration(duration);
        }
        if let Some(bytes) = self.try_bytes(&text) {
            return Tok::Bytes(bytes);
        }
        Tok::Number(text)
    }

    /// Extends `prefix` with the unit-like characters that follow and keeps
    /// them if the whole reads as a duration (Loki's `tryScanDuration`).
    fn try_duration(&mut self, prefix: &str) -> Option<Duration> {
        let mut end = self.at;
        while self
            .chars
            .get(end)
            .is_some_and(|&c| !c.is_whitespace() && (c.is_numeric() || is_duration_rune(c) || c == '.'))
        {
            end += 1;
        }
        if end == self.at {
            return None;
        }
        let text: String = prefix.chars().chain(self.chars[self.at..end].iter().copied()).collect();
        let duration = parse_prometheus_duration(&text)
            .or_else(|_| parse_go_duration(&text))
            .ok()?;
        self.at = end;
        Some(duration)
    }

    /// The same for byte sizes (Loki's `tryScanBytes`).
    fn try_bytes(&mut self, prefix: &str) -> Option<u64> {
        let mut end = self.at;
        while self
            .chars
            .get(end)
            .is_some_and(|&c| !c.is_whitespace() && (c.is_numeric() || is_bytes_rune(c) || c == '.'))
        {
            end += 1;
        }
        if end == self.at {
            return None;
        }
        let text: String = prefix.chars().chain(self.chars[self.at..end].iter().copied()).collect();
        let bytes = parse_bytes(&text)?;
        self.at = end;
        Some(bytes)
    }

    fn range(&mut self) -> Result<Tok, String> {
        self.at += 1;
        let start = self.at;
        while let Some(c) = self.peek() {
            if c == ']' {
                let text = self.text(start);
                self.at += 1;
                return parse_prometheus_duration(&text).map(Tok::Range);
            }
            self.at += 1;
        }
        Err("missing closing ']' in duration".to_string())
    }

    /// Go's `scanNumber`, with its messages.
    fn scan_number(&mut self, mut seen_dot: bool) -> Result<(), String> {
        let start = if seen_dot { self.at - 1 } else { self.at };
        let mut base = 10;
        let mut prefix = ' ';
        let mut has_digits = false;
        let mut has_separator = false;
        let mut invalid: Option<char> = None;
        let mut is_float = seen_dot;
        if !seen_dot {
            if self.peek() == Some('0') {
                self.at += 1;
                match self.peek().map(|c| c.to_ascii_lowercase()) {
                    Some('x') => {
                        self.at += 1;
                        (base, prefix) = (16, 'x');
                    }
                    Some('o') => {
                        self.at += 1;
                        (base, prefix) = (8, 'o');
                    }
                    // Loki's scanner peeks at a stale character here, so any
                    // `0b`/`0B` starts a binary literal (`0B` is not 0 bytes).
                    Some('b') => {
                        self.at += 1;
                        (base, prefix) = (2, 'b');
                    }
                    _ => {
                        (base, prefix) = (8, '0');
                        has_digits = true;
                    }
                }
            }
            let (digits, separators) = self.digits(base, &mut invalid);
            has_digits |= digits;
            has_separator |= separators;
            if self.peek() == Some('.') {
                self.at += 1;
                seen_dot = true;
            }
        }
        let mut first_error: Option<String> = None;
        let mut error = |message: String| {
            if first_error.is_none() {
                first_error = Some(message);
            }
        };
        if seen_dot {
            is_float = true;
            if prefix == 'o' || prefix == 'b' {
                error(format!("invalid radix point in {}", literal_name(prefix)));
            }
            let (digits, separators) = self.digits(base, &mut invalid);
            has_digits |= digits;
            has_separator |= separators;
        }
        if !has_digits {
            error(format!("{} has no digits", literal_name(prefix)));
        }
        let exponent = self.peek().map(|c| c.to_ascii_lowercase());
        if exponent == Some('e') || (exponent == Some('p') && prefix == 'x') {
            if exponent == Some('e') && prefix != ' ' && prefix != '0' {
                error(format!(
                    "'{}' exponent requires decimal mantissa",
                    self.peek().unwrap_or('e')
                ));
            }
            self.at += 1;
            is_float = true;
            if matches!(self.peek(), Some('+') | Some('-')) {
                self.at += 1;
            }
            let mut ignored = None;
            let (digits, separators) = self.digits(10, &mut ignored);
            has_separator |= separators;
            if !digits {
                error("exponent has no digits".to_string());
            }
        } else if prefix == 'x' && is_float {
            error("hexadecimal mantissa requires a 'p' exponent".to_string());
        }
        if !is_float && let Some(digit) = invalid {
            error(format!("invalid digit '{digit}' in {}", literal_name(prefix)));
        }
        if has_separator && !separators_ok(&self.text(start)) {
            error("'_' must separate successive digits".to_string());
        }
        match first_error {
            Some(message) => Err(message),
            None => Ok(()),
        }
    }

    /// Go's `digits`: returns whether digits and whether `_` were seen.
    fn digits(&mut self, base: u32, invalid: &mut Option<char>) -> (bool, bool) {
        let (mut digits, mut separators) = (false, false);
        while let Some(c) = self.peek() {
            if c == '_' {
                separators = true;
            } else if base <= 10 && c.is_ascii_digit() {
                digits = true;
                if c.to_digit(10).is_some_and(|d| d >= base) && invalid.is_none() {
                    *invalid = Some(c);
                }
            } else if base == 16 && c.is_ascii_hexdigit() {
                digits = true;
            } else {
                break;
            }
            self.at += 1;
        }
        (digits, separators)
    }

    fn string(&mut self) -> Result<Tok, String> {
        self.at += 1;
        let mut bytes = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err("literal not terminated".to_string());
            };
            self.at += 1;
            match c {
                '"' => break,
                '\n' => return Err("literal not terminated".to_string()),
                '\0' => return Err("invalid character NUL".to_string()),
                '\\' => self.escape(&mut bytes)?,
                c => {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        // Go keeps `\xff` as a raw byte; a Rust string cannot hold one.
        String::from_utf8(bytes)
            .map(Tok::Str)
            .map_err(|_| "invalid UTF-8 in string literal".to_string())
    }

    /// One escape after `\` in a double-quoted string, Go's rules.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        const INVALID_ESCAPE: &str = "invalid char escape";
        let Some(c) = self.peek() else {
            return Err("literal not terminated".to_string());
        };
        self.at += 1;
        let simple = match c {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            _ => None,
        };
        if let Some(byte) = simple {
            out.push(byte);
            return Ok(());
        }
        let (radix, count) = match c {
            '0'..='7' => {
                self.at -= 1;
                (8, 3)
            }
            'x' => (16, 2),
            'u' => (16, 4),
            'U' => (16, 8),
            _ => return Err(INVALID_ESCAPE.to_string()),
        };
        let mut value: u32 = 0;
        for _ in 0..count {
            match self.peek().and_then(|d| d.to_digit(radix)) {
                Some(digit) => {
                    value = value * radix + digit;
                    self.at += 1;
                }
                None => return Err(INVALID_ESCAPE.to_string()),
            }
        }
        // Prometheus' unquoting fails with strconv's "invalid syntax" on values
        // the scanner let through: octal above 255, surrogates, beyond U+10FFFF.
        match c {
            'x' => out.push(value as u8),
            'u' | 'U' => {
                let ch = char::from_u32(value).ok_or_else(|| "invalid syntax".to_string())?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            _ => out.push(u8::try_from(value).map_err(|_| "invalid syntax".to_string())?),
        }
        Ok(())
    }

    fn raw_string(&mut self) -> Result<Tok, String> {
        self.at += 1;
        let start = self.at;
        loop {
            match self.peek() {
                None => return Err("literal not terminated".to_string()),
                Some('`') => {
                    let text = self.text(start);
                    self.at += 1;
                    return Ok(Tok::Str(text));
                }
                Some('\0') => return Err("invalid character NUL".to_string()),
                Some(_) => self.at += 1,
            }
        }
    }

    /// `'x'`: Go's scanner reads a character literal; LogQL has no use for
    /// one, so it becomes an identifier (and a syntax error) — but a literal
    /// of the wrong length is already a lexical error, as in Loki.
    fn char_literal(&mut self) -> Result<(), String> {
        self.at += 1;
        let mut count = 0;
        loop {
            match self.peek() {
                None | Some('\n') => return Err("literal not terminated".to_string()),
                Some('\'') => {
                    self.at += 1;
                    break;
                }
                Some('\\') => {
                    self.at += 1;
                    let mut ignored = Vec::new();
                    if self.peek() == Some('\'') {
                        self.at += 1;
                    } else {
                        self.escape(&mut ignored)?;
                    }
                }
                Some(_) => self.at += 1,
            }
            count += 1;
        }
        if count == 1 {
            Ok(())
        } else {
            Err("invalid char literal".to_string())
        }
    }
}

fn literal_name(prefix: char) -> &'static str {
    match prefix {
        'x' => "hexadecimal literal",
        'o' | '0' => "octal literal",
        'b' => "binary literal",
        _ => "decimal literal",
    }
}

/// Go's `invalidSep`: every `_` must sit between digits (a base prefix counts as one).
fn separators_ok(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut hex = false;
    let mut previous = b'.';
    let mut i = 0;
    if bytes.len() >= 2 && bytes[0] == b'0' && matches!(bytes[1].to_ascii_lowercase(), b'x' | b'o' | b'b') {
        hex = bytes[1].eq_ignore_ascii_case(&b'x');
        previous = b'0';
        i = 2;
    }
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'_' {
            if previous != b'0' {
                return false;
            }
            previous = b'_';
        } else if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            previous = b'0';
        } else {
            if previous == b'_' {
                return false;
            }
            previous = b'.';
        }
        i += 1;
    }
    previous != b'_'
}

const NANOS_PER_MILLI: u64 = 1_000_000;

/// Prometheus' `model.ParseDuration`, with its messages: units `ms s m h d w
/// y`, each at most once, largest first, integers only; `0` needs no unit.
pub(crate) fn parse_prometheus_duration(text: &str) -> Result<Duration, String> {
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    match text {
        "0" => return Ok(Duration::ZERO),
        "" => return Err("empty duration string".to_string()),
        _ => {}
    }
    let invalid = || format!("not a valid duration string: \"{text}\"");
    let bytes = text.as_bytes();
    let mut total: u64 = 0;
    let mut last_unit = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            return Err(invalid());
        }
        let digits_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let value: u64 = text[digits_start..i].parse().map_err(|_| invalid())?;
        let unit_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == unit_start {
            return Err(invalid());
        }
        let unit = &text[unit_start..i];
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!("unknown unit \"{unit}\" in duration \"{text}\""));
        };
        let rank = index + 1;
        if rank <= last_unit {
            return Err(invalid());
        }
        last_unit = rank;
        let nanos_per_unit = UNITS[index].1 * NANOS_PER_MILLI;
        if value > (1u64 << 63) / nanos_per_unit {
            return Err("duration out of range".to_string());
        }
        total = total
            .checked_add(value * nanos_per_unit)
            .filter(|&t| t <= i64::MAX as u64)
            .ok_or_else(|| "duration out of range".to_string())?;
    }
    Ok(Duration::from_nanos(total as i64))
}

/// Go's `time.ParseDuration` (see [`super::conv::parse_duration`]). The
/// error text never reaches users here: Loki only uses it to decide whether
/// a run of characters is a duration.
pub(crate) fn parse_go_duration(text: &str) -> Result<Duration, ()> {
    super::conv::parse_duration(text)
        .map(Duration::from_nanos)
        .map_err(|_| ())
}

/// go-humanize's `ParseBytes` (the suffix is case-insensitive there; the
/// lexer only lets `B i k K M G T P` through).
pub(crate) fn parse_bytes(text: &str) -> Option<u64> {
    const KIB: u64 = 1 << 10;
    const KB: u64 = 1_000;
    let number_len = text
        .chars()
        .take_while(|&c| c.is_ascii_digit() || c == '.' || c == ',')
        .count();
    let number: String = text.chars().take(number_len).filter(|&c| c != ',').collect();
    let value: f64 = number.parse().ok()?;
    let suffix: String = text.chars().skip(number_len).collect::<String>().trim().to_lowercase();
    let multiplier = match suffix.as_str() {
        "" | "b" => 1,
        "k" | "kb" => KB,
        "ki" | "kib" => KIB,
        "m" | "mb" => KB.pow(2),
        "mi" | "mib" => KIB.pow(2),
        "g" | "gb" => KB.pow(3),
        "gi" | "gib" => KIB.pow(3),
        "t" | "tb" => KB.pow(4),
        "ti" | "tib" => KIB.pow(4),
        "p" | "pb" => KB.pow(5),
        "pi" | "pib" => KIB.pow(5),
        "e" | "eb" => KB.pow(6),
        "ei" | "eib" => KIB.pow(6),
        _ => return None,
    };
    let bytes = value * multiplier as f64;
    if bytes >= u64::MAX as f64 {
        return None;
    }
    Some(bytes as u64)
}

/// Go's `strconv.ParseFloat` for what the scanner calls a number: decimal
/// (with `_` separators) and hexadecimal with a `p` exponent. The error is
/// strconv's text, which Loki puts in its messages.
pub(crate) fn parse_go_float(text: &str) -> Result<f64, String> {
    let syntax = || format!("strconv.ParseFloat: parsing \"{text}\": invalid syntax");
    let range = || format!("strconv.ParseFloat: parsing \"{text}\": value out of range");
    if text.contains('_') && !separators_ok(text) {
        return Err(syntax());
    }
    let clean: String = text.chars().filter(|&c| c != '_').collect();
    let lower = clean.to_ascii_lowercase();
    if let Some(hex) = lower.strip_prefix("0x") {
        let (mantissa, exponent) = hex.split_once('p').ok_or_else(syntax)?;
        let exponent: i32 = exponent.parse().map_err(|_| syntax())?;
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(syntax());
        }
        let mut value = 0f64;
        for digit in int_part.chars().chain(frac_part.chars()) {
            value = value * 16.0 + f64::from(digit.to_digit(16).ok_or_else(syntax)?);
        }
        if value == 0.0 {
            // Zero whatever the exponent (`0x0p40000` is 0 in Go; 0 × 2^40000
            // computed in one step is 0 × ∞, NaN).
            return Ok(0.0);
        }
        // Scaled in steps a f64 power of two can hold, so only the result,
        // not an intermediate power, can overflow or underflow.
        let mut shift = exponent.saturating_sub(4 * frac_part.len() as i32);
        let mut result = value;
        while shift != 0 && result.is_finite() && result != 0.0 {
            let step = shift.clamp(-1000, 1000);
            result *= 2f64.powi(step);
            shift -= step;
        }
        return if result.is_infinite() { Err(range()) } else { Ok(result) };
    }
    // Rust's parser takes the same decimal forms but also words ("inf",
    // "nan") that Go's would not see here; refuse anything but digits.
    if !lower
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'+' | b'-'))
    {
        return Err(syntax());
    }
    if lower.starts_with("0o") || lower.starts_with("0b") {
        return Err(syntax());
    }
    let value: f64 = lower.parse().map_err(|_| syntax())?;
    if value.is_infinite() { Err(range()) } else { Ok(value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hexadecimal_floats_scale_without_overflowing_on_the_way() {
        // Found by the logql_parser fuzz target: it parsed as NaN.
        assert_eq!(parse_go_float("0X0p40000"), Ok(0.0));
        assert_eq!(parse_go_float("0x0p-40000"), Ok(0.0));
        assert_eq!(parse_go_float("0x1p-1074"), Ok(f64::from_bits(1)));
        assert_eq!(parse_go_float("0x1p1023"), Ok(2f64.powi(1023)));
        assert_eq!(parse_go_float("0x.1p1027"), Ok(2f64.powi(1023)));
        assert_eq!(parse_go_float("0x10p-1078"), Ok(f64::from_bits(1)));
        assert!(parse_go_float("0x1p1024").unwrap_err().contains("value out of range"));
        assert_eq!(parse_go_float("0x1p-2000"), Ok(0.0));
    }

    fn kinds(input: &str) -> Vec<Tok> {
        lex(input).into_iter().map(|t| t.tok).collect()
    }

    fn ms(millis: i64) -> Duration {
        Duration::from_nanos(millis * 1_000_000)
    }

    #[test]
    fn numbers_with_units_become_durations_or_bytes() {
        assert_eq!(kinds("5m")[0], Tok::Duration(ms(300_000)));
        assert_eq!(kinds("1h30m")[0], Tok::Duration(ms(5_400_000)));
        assert_eq!(kinds("1.5s")[0], Tok::Duration(ms(1_500)));
        assert_eq!(kinds("-5m")[0], Tok::Duration(ms(-300_000)));
        assert_eq!(kinds("20MB")[0], Tok::Bytes(20_000_000));
        assert_eq!(kinds("1KiB")[0], Tok::Bytes(1024));
        assert_eq!(kinds("1.5")[0], Tok::Number("1.5".to_string()));
        // "1mb" is the duration 1m followed by the identifier b, as in Loki.
        assert_eq!(
            kinds("1mb")[..2],
            [Tok::Duration(ms(60_000)), Tok::Ident("b".to_string())]
        );
        // `-0` is Go's zero duration, not a negative number.
        assert_eq!(kinds("-0")[0], Tok::Duration(Duration::ZERO));
        assert_eq!(kinds("- 1")[..2], [Tok::Sub, Tok::Number("1".to_string())]);
    }

    #[test]
    fn ranges_take_prometheus_durations_only() {
        assert_eq!(kinds("[1h30m]")[0], Tok::Range(ms(5_400_000)));
        assert_eq!(kinds("[1d]")[0], Tok::Range(ms(86_400_000)));
        assert_eq!(
            kinds("[1.5s]")[0],
            Tok::Invalid("unknown unit \".\" in duration \"1.5s\"".to_string())
        );
        assert_eq!(
            kinds("[5minutes]")[0],
            Tok::Invalid("unknown unit \"minutes\" in duration \"5minutes\"".to_string())
        );
        assert_eq!(
            kinds("[5m")[0],
            Tok::Invalid("missing closing ']' in duration".to_string())
        );
    }

    #[test]
    fn function_names_need_a_call() {
        assert_eq!(kinds("rate(")[0], Tok::RangeOp(RangeOp::Rate));
        assert_eq!(kinds("rate")[0], Tok::Ident("rate".to_string()));
        assert_eq!(kinds("SUM by (a)")[0], Tok::VectorOp(VectorOp::Sum));
        assert_eq!(kinds("sum > 1")[0], Tok::Ident("sum".to_string()));
        assert_eq!(kinds("JSON")[0], Tok::Json);
        assert_eq!(kinds("ip (")[0], Tok::Ip);
        assert_eq!(kinds("ip")[0], Tok::Ident("ip".to_string()));
    }

    #[test]
    fn strings_follow_go_escapes() {
        assert_eq!(kinds(r#""a\"b\n\x41\u00e9""#)[0], Tok::Str("a\"b\nAé".to_string()));
        assert_eq!(kinds(r"`a\n`")[0], Tok::Str(r"a\n".to_string()));
        assert_eq!(kinds(r#""a\q""#)[0], Tok::Invalid("invalid char escape".to_string()));
        assert_eq!(kinds("\"abc")[0], Tok::Invalid("literal not terminated".to_string()));
        assert_eq!(kinds("'ab'")[0], Tok::Invalid("invalid char literal".to_string()));
    }

    #[test]
    fn comments_and_flags() {
        assert_eq!(kinds("# hi\n1")[0], Tok::Number("1".to_string()));
        assert_eq!(kinds("1 /* x */ + 2")[1], Tok::Add);
        assert_eq!(kinds("--strict")[0], Tok::Flag("--strict".to_string()));
        assert_eq!(kinds("--nope")[..2], [Tok::Sub, Tok::Sub]);
    }

    #[test]
    fn positions_count_characters() {
        let tokens = lex("{é=\"x\"}\n  |= \"y\"");
        assert_eq!(tokens[5].pos, Position { line: 2, column: 3 });
        assert_eq!(tokens[6].pos, Position { line: 2, column: 6 });
        assert_eq!(tokens[7].pos, Position { line: 2, column: 9 });
    }

    #[test]
    fn go_number_rules() {
        assert_eq!(parse_go_float("0x1p3"), Ok(8.0));
        assert_eq!(parse_go_float("0x1.8p3"), Ok(12.0));
        assert_eq!(parse_go_float("1_000"), Ok(1000.0));
        assert!(parse_go_float("0x1A").is_err());
        assert!(parse_go_float("0o17").is_err());
        assert!(parse_go_float("1e400").unwrap_err().ends_with("value out of range"));
        assert_eq!(
            kinds("0x")[0],
            Tok::Invalid("hexadecimal literal has no digits".to_string())
        );
        assert_eq!(kinds("1e")[0], Tok::Invalid("exponent has no digits".to_string()));
        assert_eq!(
            kinds("09")[0],
            Tok::Invalid("invalid digit '9' in octal literal".to_string())
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1.5h"), Ok(ms(5_400_000)));
        assert_eq!(parse_go_duration("1us500ns"), Ok(Duration::from_nanos(1_500)));
        assert_eq!(parse_go_duration("-0"), Ok(Duration::ZERO));
        assert!(parse_go_duration("1d").is_err());
        assert!(parse_go_duration("1").is_err());
        assert!(parse_prometheus_duration("1m1h").is_err());
        assert_eq!(parse_bytes("1.5KiB"), Some(1536));
        assert_eq!(parse_bytes("5k"), Some(5000));
        assert_eq!(parse_bytes("5x"), None);
    }
}
