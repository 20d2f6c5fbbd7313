//! A lenient walk over the members of a JSON object that hands out raw
//! text: string values without their quotes but with their escapes, nested
//! objects as written. Pattern detection needs no more than that (a message
//! field, a level field), and Loki's reader there (`jsonparser`) is just as
//! lenient: members are read in order until the text stops being JSON, so
//! what comes before a broken part is still found.

/// A member's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawValue<'a> {
    /// The text between the quotes, escapes as written.
    String(&'a str),
    /// The object's text, braces included.
    Object(&'a str),
    /// A number, `true`, `false`, `null` or an array.
    Other,
}

/// Calls `visit(key, value)` for each member of the object `text` holds
/// (leading whitespace allowed), in order, until `visit` returns false or
/// the text is no longer well-formed. Keys are raw like string values.
pub(crate) fn each_member<'a>(text: &'a str, mut visit: impl FnMut(&'a str, RawValue<'a>) -> bool) {
    let mut reader = Reader { text, at: 0 };
    reader.skip_space();
    if !reader.eat(b'{') {
        return;
    }
    loop {
        reader.skip_space();
        if reader.eat(b'}') {
            return;
        }
        let Some(key) = reader.string() else {
            return;
        };
        reader.skip_space();
        if !reader.eat(b':') {
            return;
        }
        reader.skip_space();
        let Some(value) = reader.value() else {
            return;
        };
        if !visit(key, value) {
            return;
        }
        reader.skip_space();
        if !reader.eat(b',') {
            return;
        }
    }
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            return true;
        }
        false
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A string at the cursor: its raw inside.
    fn string(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        let bytes = self.text.as_bytes();
        while self.at < bytes.len() {
            match bytes[self.at] {
                b'\\' => self.at += 2,
                b'"' => {
                    let inside = self.text.get(start..self.at)?;
                    self.at += 1;
                    return Some(inside);
                }
                _ => self.at += 1,
            }
        }
        None
    }

    fn value(&mut self) -> Option<RawValue<'a>> {
        match self.peek()? {
            b'"' => self.string().map(RawValue::String),
            b'{' => {
                let start = self.at;
                self.skip_nested()?;
                Some(RawValue::Object(self.text.get(start..self.at)?))
            }
            b'[' => {
                self.skip_nested()?;
                Some(RawValue::Other)
            }
            _ => {
                let start = self.at;
                while let Some(byte) = self.peek() {
                    if matches!(byte, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    if byte == b'"' {
                        return None;
                    }
                    self.at += 1;
                }
                (self.at > start).then_some(RawValue::Other)
            }
        }
    }

    /// Skips a bracketed value (object or array), strings inside included.
    fn skip_nested(&mut self) -> Option<()> {
        let mut depth = 0usize;
        while let Some(byte) = self.peek() {
            match byte {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        self.at += 1;
                        return Some(());
                    }
                }
                _ => {}
            }
            self.at += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(text: &str) -> Vec<(&str, RawValue<'_>)> {
        let mut out = Vec::new();
        each_member(text, |key, value| {
            out.push((key, value));
            true
        });
        out
    }

    #[test]
    fn members_come_in_order_with_raw_text() {
        let text = r#" {"a": "x\"y", "b":{"c":[1,"}"]}, "d":[{"e":1}], "f":-1.5e3,"g":null}"#;
        assert_eq!(
            members(text),
            [
                ("a", RawValue::String(r#"x\"y"#)),
                ("b", RawValue::Object(r#"{"c":[1,"}"]}"#)),
                ("d", RawValue::Other),
                ("f", RawValue::Other),
                ("g", RawValue::Other),
            ]
        );
    }

    #[test]
    fn reading_stops_where_the_json_breaks() {
        assert_eq!(
            members(r#"{"a":"1","b":oops","c":"3"}"#),
            [("a", RawValue::String("1"))]
        );
        assert_eq!(members(r#"{"a":"1" "b":"2"}"#), [("a", RawValue::String("1"))]);
        assert!(members(r#"["a"]"#).is_empty());
        assert!(members(r#"{"a":"unterminated}"#).is_empty());
        assert!(members("").is_empty());
        // Multi-byte text and a cut in the middle of an escape do not panic.
        assert_eq!(members(r#"{"é":"ü"}"#), [("é", RawValue::String("ü"))]);
        assert!(members("{\"a\":\"\\").is_empty());
    }

    #[test]
    fn the_visitor_can_stop_early() {
        let mut seen = 0;
        each_member(r#"{"a":1,"b":2,"c":3}"#, |_, _| {
            seen += 1;
            seen < 2
        });
        assert_eq!(seen, 2);
    }
}
