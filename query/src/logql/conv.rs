//! Value conversions with Go's error texts.
//!
//! Label filters and `unwrap` convert label values the way Loki's Go code
//! does (`time.ParseDuration`, go-humanize's `ParseBytes`,
//! `strconv.ParseFloat`), and the conversion error ends up verbatim in
//! `__error_details__` and in the "pipeline error" users see, so the texts
//! are Go's, quoting included.

use std::fmt::Write as _;

use super::lexer::{parse_bytes, parse_go_float};

/// Go's `strconv.Quote`: what Go's `%q` prints for a string.
pub(crate) fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `strconv.ParseFloat(text, 64)`, with its error text.
pub(crate) fn parse_float(text: &str) -> Result<f64, String> {
    let syntax = || format!("strconv.ParseFloat: parsing {}: invalid syntax", go_quote(text));
    // Go reads these spellings of the special values; `parse_go_float`
    // handles only what the LogQL scanner lets through.
    let lower = text.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    if lower.len() - unsigned.len() <= 1 && matches!(unsigned, "inf" | "infinity" | "nan") {
        let value = if unsigned == "nan" { f64::NAN } else { f64::INFINITY };
        return Ok(if lower.starts_with('-') { -value } else { value });
    }
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return Err(syntax());
    }
    // Go's syntax is a subset of Rust's `f64` syntax apart from hex and `_`,
    // which `parse_go_float` knows.
    let value = match digits.parse::<f64>() {
        Ok(value) => value,
        Err(_) => parse_go_float(digits).map_err(|_| syntax())?,
    };
    if value.is_infinite() {
        return Err(format!(
            "strconv.ParseFloat: parsing {}: value out of range",
            go_quote(text)
        ));
    }
    Ok(if negative { -value } else { value })
}

/// `time.ParseDuration`, in nanoseconds, with Go's error texts.
pub(crate) fn parse_duration(text: &str) -> Result<i64, String> {
    const UNITS: [(&str, u64); 8] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("μs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    let invalid = || format!("time: invalid duration {}", go_quote(text));
    let mut rest = text;
    let mut negative = false;
    if let Some(stripped) = rest.strip_prefix('-') {
        negative = true;
        rest = stripped;
    } else if let Some(stripped) = rest.strip_prefix('+') {
        rest = stripped;
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let first = rest.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut value: u64 = 0;
        for digit in rest[..int_len].bytes() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit - b'0')))
                .filter(|&v| v <= 1 << 63)
                .ok_or_else(invalid)?;
        }
        rest = &rest[int_len..];
        let mut fraction: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut fraction_len = 0;
        if let Some(after_dot) = rest.strip_prefix('.') {
            rest = after_dot;
            fraction_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for digit in rest[..fraction_len].bytes() {
                if overflow {
                    continue;
                }
                match fraction
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(digit - b'0')))
                {
                    Some(v) if v <= 1 << 63 => {
                        fraction = v;
                        scale *= 10.0;
                    }
                    _ => overflow = true,
                }
            }
            rest = &rest[fraction_len..];
        }
        if int_len == 0 && fraction_len == 0 {
            return Err(invalid());
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {}", go_quote(text)));
        }
        let Some((_, size)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!(
                "time: unknown unit {} in duration {}",
                go_quote(unit),
                go_quote(text)
            ));
        };
        if value > (1u64 << 63) / size {
            return Err(invalid());
        }
        value *= size;
        if fraction > 0 {
            value += (fraction as f64 * (*size as f64 / scale)) as u64;
            if value > 1 << 63 {
                return Err(invalid());
            }
        }
        total = total.checked_add(value).filter(|&t| t <= 1 << 63).ok_or_else(invalid)?;
    }
    if negative {
        return Ok((total as i64).wrapping_neg());
    }
    if total > i64::MAX as u64 {
        return Err(invalid());
    }
    Ok(total as i64)
}

/// go-humanize's `ParseBytes`, with its error texts.
pub(crate) fn parse_bytes_value(text: &str) -> Result<u64, String> {
    let number_len: usize = text
        .chars()
        .take_while(|&c| c.is_ascii_digit() || c == '.' || c == ',')
        .map(char::len_utf8)
        .sum();
    let number: String = text[..number_len].chars().filter(|&c| c != ',').collect();
    parse_float(&number)?;
    match parse_bytes(text) {
        Some(bytes) => Ok(bytes),
        None => {
            let suffix = text[number_len..].trim().to_lowercase();
            let value = parse_float(&number).unwrap_or(0.0);
            if value.is_finite() && suffix.is_empty() {
                Err(format!("too large: {text}"))
            } else {
                Err(format!("unhandled size name: {suffix}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_fail_as_go() {
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("-5s"), Ok(-5_000_000_000));
        assert_eq!(parse_duration("3600000000µs"), Ok(3_600_000_000_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("oops").unwrap_err(), r#"time: invalid duration "oops""#);
        assert_eq!(
            parse_duration("90").unwrap_err(),
            r#"time: missing unit in duration "90""#
        );
        assert_eq!(
            parse_duration("1d").unwrap_err(),
            r#"time: unknown unit "d" in duration "1d""#
        );
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn bytes_parse_and_fail_as_humanize() {
        assert_eq!(parse_bytes_value("1KB"), Ok(1000));
        assert_eq!(parse_bytes_value("1KiB"), Ok(1024));
        assert_eq!(parse_bytes_value("2,048"), Ok(2048));
        assert_eq!(parse_bytes_value("1.5B"), Ok(1));
        assert_eq!(parse_bytes_value("3mb"), Ok(3_000_000));
        assert_eq!(
            parse_bytes_value("oops").unwrap_err(),
            r#"strconv.ParseFloat: parsing "": invalid syntax"#
        );
        assert_eq!(parse_bytes_value("1XB").unwrap_err(), "unhandled size name: xb");
    }

    #[test]
    fn floats_parse_and_fail_as_strconv() {
        assert_eq!(parse_float("200.0"), Ok(200.0));
        assert_eq!(parse_float("-5"), Ok(-5.0));
        assert_eq!(parse_float("1e3"), Ok(1000.0));
        assert!(parse_float("NaN").unwrap().is_nan());
        assert_eq!(
            parse_float("oops").unwrap_err(),
            r#"strconv.ParseFloat: parsing "oops": invalid syntax"#
        );
        assert!(parse_float("").is_err());
        assert!(parse_float("1e").is_err());
    }

    #[test]
    fn quoting_is_go_s() {
        assert_eq!(go_quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(go_quote("x\ny"), r#""x\ny""#);
    }
}
