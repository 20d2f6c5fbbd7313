//! A small JSON reader for the `json` and `unpack` stages.
//!
//! serde_json would do, but Loki's parsers have their own rules that a
//! general decoder hides: the first of two equal keys wins, numbers keep
//! their text (`1.50` stays `1.50`), an object's raw text can become a label
//! value, and what follows the first value is ignored. So this reader keeps
//! members in order, with the raw text of every value.

/// A JSON value; strings are unescaped, numbers and raw text are slices of the line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JsonValue<'a> {
    Null,
    Bool(bool),
    Number(&'a str),
    String(String),
    /// Members in the order written, duplicates kept; `raw` is the object's text.
    Object {
        members: Vec<(String, JsonValue<'a>)>,
        raw: &'a str,
    },
    Array {
        items: Vec<JsonValue<'a>>,
        raw: &'a str,
    },
}

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 512;

/// Parses the first JSON value of `text` (leading whitespace allowed; what
/// follows the value is ignored, as Loki's parser ignores it).
pub(crate) fn parse(text: &str) -> Result<JsonValue<'_>, String> {
    let mut reader = Reader { text, at: 0 };
    reader.skip_space();
    reader.value(0)
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.at) {
            self.at += 1;
        }
    }

    fn error(&self, what: &str) -> String {
        format!("{what} at offset {}", self.at)
    }

    fn value(&mut self, depth: usize) -> Result<JsonValue<'a>, String> {
        if depth > MAX_DEPTH {
            return Err(self.error("json nested too deeply"));
        }
        match self.bytes().get(self.at) {
            None => Err(self.error("unexpected end of json")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(JsonValue::String(self.string()?)),
            Some(b't') => self.literal("true", JsonValue::Bool(true)),
            Some(b'f') => self.literal("false", JsonValue::Bool(false)),
            Some(b'n') => self.literal("null", JsonValue::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("unknown value type")),
        }
    }

    fn literal(&mut self, word: &str, value: JsonValue<'a>) -> Result<JsonValue<'a>, String> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.error("unknown value type"))
        }
    }

    fn number(&mut self) -> Result<JsonValue<'a>, String> {
        let start = self.at;
        while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.bytes().get(self.at) {
            self.at += 1;
        }
        let text = &self.text[start..self.at];
        if text.parse::<f64>().is_err() {
            return Err(self.error("malformed number"));
        }
        Ok(JsonValue::Number(text))
    }

    fn string(&mut self) -> Result<String, String> {
        debug_assert_eq!(self.bytes()[self.at], b'"');
        self.at += 1;
        let mut out = String::new();
        let mut chunk_start = self.at;
        loop {
            match self.bytes().get(self.at) {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    out.push_str(&self.text[chunk_start..self.at]);
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    out.push_str(&self.text[chunk_start..self.at]);
                    self.at += 1;
                    let escaped = *self
                        .bytes()
                        .get(self.at)
                        .ok_or_else(|| self.error("unterminated string"))?;
                    self.at += 1;
                    match escaped {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let first = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&first) && self.text[self.at..].starts_with("\\u") {
                                self.at += 2;
                                let second = self.hex4()?;
                                let combined =
                                    0x10000 + ((first - 0xD800) << 10) + (second.wrapping_sub(0xDC00) & 0x3ff);
                                char::from_u32(combined).unwrap_or('\u{fffd}')
                            } else {
                                char::from_u32(first).unwrap_or('\u{fffd}')
                            };
                            out.push(c);
                        }
                        _ => return Err(self.error("invalid escape")),
                    }
                    chunk_start = self.at;
                }
                Some(_) => self.at += 1,
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .text
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.error("invalid escape"))?;
        let value = u32::from_str_radix(digits, 16).map_err(|_| self.error("invalid escape"))?;
        self.at += 4;
        Ok(value)
    }

    fn object(&mut self, depth: usize) -> Result<JsonValue<'a>, String> {
        let start = self.at;
        self.at += 1;
        let mut members = Vec::new();
        self.skip_space();
        if self.bytes().get(self.at) == Some(&b'}') {
            self.at += 1;
            return Ok(JsonValue::Object {
                members,
                raw: &self.text[start..self.at],
            });
        }
        loop {
            self.skip_space();
            if self.bytes().get(self.at) != Some(&b'"') {
                return Err(self.error("expected a key"));
            }
            let key = self.string()?;
            self.skip_space();
            if self.bytes().get(self.at) != Some(&b':') {
                return Err(self.error("expected ':'"));
            }
            self.at += 1;
            self.skip_space();
            let value = self.value(depth + 1)?;
            members.push((key, value));
            self.skip_space();
            match self.bytes().get(self.at) {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(JsonValue::Object {
                        members,
                        raw: &self.text[start..self.at],
                    });
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<JsonValue<'a>, String> {
        let start = self.at;
        self.at += 1;
        let mut items = Vec::new();
        self.skip_space();
        if self.bytes().get(self.at) == Some(&b']') {
            self.at += 1;
            return Ok(JsonValue::Array {
                items,
                raw: &self.text[start..self.at],
            });
        }
        loop {
            self.skip_space();
            items.push(self.value(depth + 1)?);
            self.skip_space();
            match self.bytes().get(self.at) {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(JsonValue::Array {
                        items,
                        raw: &self.text[start..self.at],
                    });
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }
}

/// One step of a `| json label="path"` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathStep {
    Key(String),
    Index(usize),
}

/// Parses Loki's JSON path expressions: `a.b`, `a[0]`, `["a.b"]`, `a["b"][1].c`.
pub(crate) fn parse_path(expression: &str) -> Result<Vec<PathStep>, String> {
    let fail = |why: &str| Err(format!("cannot parse expression [{expression}]: {why}"));
    let bytes = expression.as_bytes();
    let mut steps = Vec::new();
    let mut at = 0;
    let mut expect_key = true;
    while at < bytes.len() {
        match bytes[at] {
            b'.' => {
                if expect_key || at + 1 >= bytes.len() {
                    return fail("syntax error: unexpected .");
                }
                expect_key = true;
                at += 1;
            }
            b'[' => {
                at += 1;
                if bytes.get(at) == Some(&b'"') {
                    let Some(len) = expression[at + 1..].find('"') else {
                        return fail("syntax error: unterminated string");
                    };
                    steps.push(PathStep::Key(expression[at + 1..at + 1 + len].to_string()));
                    at += len + 2;
                } else {
                    let digits = bytes[at..].iter().take_while(|b| b.is_ascii_digit()).count();
                    if digits == 0 {
                        return fail("syntax error: unexpected end of input, expecting INDEX or STRING");
                    }
                    let Ok(index) = expression[at..at + digits].parse() else {
                        return fail("index out of range");
                    };
                    steps.push(PathStep::Index(index));
                    at += digits;
                }
                if bytes.get(at) != Some(&b']') {
                    return fail("syntax error: expecting ]");
                }
                at += 1;
                expect_key = false;
            }
            _ => {
                if !expect_key {
                    return fail("syntax error: unexpected field");
                }
                let len = bytes[at..]
                    .iter()
                    .take_while(|&&b| b != b'.' && b != b'[' && b != b']')
                    .count();
                if bytes.get(at + len) == Some(&b']') {
                    return fail("syntax error: unexpected ]");
                }
                steps.push(PathStep::Key(expression[at..at + len].to_string()));
                at += len;
                expect_key = false;
            }
        }
    }
    if steps.is_empty() {
        return fail("syntax error: empty expression");
    }
    Ok(steps)
}

/// Follows `path` from `value`; the first of duplicate keys wins.
pub(crate) fn lookup<'v, 'a>(value: &'v JsonValue<'a>, path: &[PathStep]) -> Option<&'v JsonValue<'a>> {
    let mut current = value;
    for step in path {
        current = match (step, current) {
            (PathStep::Key(key), JsonValue::Object { members, .. }) => &members.iter().find(|(name, _)| name == key)?.1,
            (PathStep::Index(index), JsonValue::Array { items, .. }) => items.get(*index)?,
            _ => return None,
        };
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_values_keeping_raw_text_and_order() {
        let value = parse(r#" {"a":1.50,"b":{"c":[1, "x"]},"a":2,"s":"q\"\u00e9"} trailing"#).unwrap();
        let JsonValue::Object { members, .. } = &value else {
            panic!("not an object")
        };
        assert_eq!(members[0], ("a".to_string(), JsonValue::Number("1.50")));
        assert_eq!(members[2].0, "a");
        assert_eq!(members[3].1, JsonValue::String("q\"é".into()));
        let path = parse_path("b.c[1]").unwrap();
        assert_eq!(lookup(&value, &path), Some(&JsonValue::String("x".into())));
        assert_eq!(
            lookup(&value, &parse_path("a").unwrap()),
            Some(&JsonValue::Number("1.50"))
        );
        assert_eq!(
            lookup(&value, &parse_path(r#"["b"].c[0]"#).unwrap()),
            Some(&JsonValue::Number("1"))
        );
        assert_eq!(lookup(&value, &parse_path("b.missing").unwrap()), None);
    }

    #[test]
    fn malformed_json_and_paths_fail() {
        assert!(parse("broken").is_err());
        assert!(parse(r#"{"a":}"#).is_err());
        assert!(parse(r#"{"a":1"#).is_err());
        assert!(parse_path("user[").unwrap_err().starts_with("cannot parse expression"));
        assert!(parse_path("a..b").is_err());
        assert_eq!(
            parse_path("tags[0]").unwrap(),
            vec![PathStep::Key("tags".into()), PathStep::Index(0)]
        );
    }
}
