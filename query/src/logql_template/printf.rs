//! Go's `fmt.Sprint`, `Sprintln` and `Sprintf` for template values.
//!
//! Loki users reach these through `print`, `println` and `printf` — mostly
//! for column alignment (`%-40.40s`) and number formatting (`%.2f`, `%d`) —
//! and Go's float printing decides how every number an action prints looks,
//! so both follow Go to the character, wrong-verb markers (`%!d(string=x)`)
//! included. Not implemented: explicit argument indexes (`%[1]d`), `%T`,
//! `%p`, Go-syntax `%#v`, and hexadecimal floats (`%x` on a float64).

use std::fmt::Write as _;

use super::value::Value;

/// `fmt.Sprint`: a space between operands when neither side is a string.
pub(super) fn sprint(args: &[Value<'_>]) -> String {
    let mut out = String::new();
    for (i, arg) in args.iter().enumerate() {
        let is_string = matches!(arg, Value::Str(_));
        if i > 0 && !is_string && !matches!(args[i - 1], Value::Str(_)) {
            out.push(' ');
        }
        arg.write_v(&mut out);
    }
    out
}

/// `fmt.Sprintln`: spaces between all operands and a final newline.
pub(super) fn sprintln(args: &[Value<'_>]) -> String {
    let mut out = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        arg.write_v(&mut out);
    }
    out.push('\n');
    out
}

#[derive(Debug, Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// `fmt.Sprintf`.
pub(super) fn sprintf(format: &str, args: &[Value<'_>]) -> String {
    let mut out = String::with_capacity(format.len() + 16);
    let mut next_arg = 0;
    let mut chars = format.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&(_, flag)) = chars.peek() {
            match flag {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '#' => spec.sharp = true,
                ' ' => spec.space = true,
                '0' => spec.zero = true,
                _ => break,
            }
            chars.next();
        }
        spec.width = read_number(&mut chars, args, &mut next_arg);
        if chars.peek().is_some_and(|&(_, c)| c == '.') {
            chars.next();
            spec.precision = Some(read_number(&mut chars, args, &mut next_arg).unwrap_or(0));
        }
        let Some((_, verb)) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next_arg) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next_arg += 1;
        format_one(&mut out, arg, verb, spec);
    }
    if next_arg < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, arg) in args[next_arg..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(arg.type_name());
            out.push('=');
            arg.write_v(&mut out);
        }
        out.push(')');
    }
    out
}

/// A width or precision: digits, or `*` taking an `int` argument.
fn read_number(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    args: &[Value<'_>],
    next_arg: &mut usize,
) -> Option<usize> {
    if chars.peek().is_some_and(|&(_, c)| c == '*') {
        chars.next();
        let value = match args.get(*next_arg) {
            Some(Value::Int(n)) | Some(Value::Int64(n)) => usize::try_from(*n).ok(),
            _ => None,
        };
        *next_arg += 1;
        // Go caps widths at 1e6 too; beyond that it prints %!(BADWIDTH).
        return value.map(|n| n.min(1_000_000));
    }
    let mut number: Option<usize> = None;
    while let Some(&(_, c)) = chars.peek() {
        let Some(digit) = c.to_digit(10) else { break };
        number = Some((number.unwrap_or(0) * 10 + digit as usize).min(1_000_000));
        chars.next();
    }
    number
}

fn format_one(out: &mut String, arg: &Value<'_>, verb: char, spec: Spec) {
    let body = match arg {
        Value::Bool(b) if matches!(verb, 'v' | 't') => Some(pad(b.to_string(), spec, false)),
        Value::Int(n) | Value::Int64(n) => format_int(*n, verb, spec),
        Value::Float(f) => format_float(*f, verb, spec),
        Value::Str(s) => format_str(s, verb, spec),
        Value::Time(t) => format_str(&t.to_go_string(), verb, spec),
        Value::Nil if verb == 'v' => Some(pad("<nil>".to_string(), spec, false)),
        Value::List(_) | Value::Map(_) | Value::Labels(_) if matches!(verb, 'v' | 's') => {
            let mut text = String::new();
            arg.write_v(&mut text);
            Some(pad(text, spec, false))
        }
        _ => None,
    };
    match body {
        Some(text) => out.push_str(&text),
        None => {
            let _ = write!(out, "%!{verb}(");
            if !matches!(arg, Value::Nil) {
                out.push_str(arg.type_name());
                out.push('=');
            }
            arg.write_v(out);
            out.push(')');
        }
    }
}

/// Pads to the width in runes; zeros go after the sign for numbers.
fn pad(text: String, spec: Spec, numeric: bool) -> String {
    let Some(width) = spec.width else { return text };
    let len = text.chars().count();
    if len >= width {
        return text;
    }
    let fill = width - len;
    if spec.minus {
        return text + &" ".repeat(fill);
    }
    if spec.zero {
        if numeric && (text.starts_with('-') || text.starts_with('+') || text.starts_with(' ')) {
            let (sign, digits) = text.split_at(1);
            return format!("{sign}{}{digits}", "0".repeat(fill));
        }
        return "0".repeat(fill) + &text;
    }
    " ".repeat(fill) + &text
}

fn sign_prefix(negative: bool, spec: Spec) -> &'static str {
    if negative {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    }
}

fn format_int(n: i64, verb: char, spec: Spec) -> Option<String> {
    let magnitude = n.unsigned_abs();
    let (digits, prefix) = match verb {
        'd' | 'v' => (magnitude.to_string(), ""),
        'b' => (format!("{magnitude:b}"), if spec.sharp { "0b" } else { "" }),
        'o' => (format!("{magnitude:o}"), if spec.sharp { "0" } else { "" }),
        'O' => (format!("{magnitude:o}"), "0o"),
        'x' => (format!("{magnitude:x}"), if spec.sharp { "0x" } else { "" }),
        'X' => (format!("{magnitude:X}"), if spec.sharp { "0X" } else { "" }),
        'c' => {
            let c = u32::try_from(n).ok().and_then(char::from_u32).unwrap_or('\u{FFFD}');
            return Some(pad(c.to_string(), spec, false));
        }
        'q' => {
            let c = u32::try_from(n).ok().and_then(char::from_u32).unwrap_or('\u{FFFD}');
            let mut quoted = String::from("'");
            if c == '\'' {
                quoted.push_str("\\'");
            } else if c != '"' {
                quote_char(c, spec.plus, &mut quoted);
            } else {
                quoted.push('"');
            }
            quoted.push('\'');
            return Some(pad(quoted, spec, false));
        }
        'U' => {
            let text = format!("U+{:04X}", n);
            return Some(pad(text, spec, false));
        }
        _ => return None,
    };
    let mut digits = digits;
    if let Some(precision) = spec.precision {
        if precision == 0 && n == 0 {
            digits.clear();
        }
        if digits.len() < precision {
            digits = "0".repeat(precision - digits.len()) + &digits;
        }
    }
    let text = format!("{}{prefix}{digits}", sign_prefix(n < 0, spec));
    // Go ignores the 0 flag when a precision is given.
    let spec = Spec {
        zero: spec.zero && spec.precision.is_none() && !spec.minus,
        ..spec
    };
    Some(pad(text, spec, true))
}

fn format_float(f: f64, verb: char, spec: Spec) -> Option<String> {
    let body = match verb {
        'v' | 'g' => format_float_g(f.abs(), spec.precision),
        'G' => format_float_g(f.abs(), spec.precision).to_uppercase(),
        'e' => format_float_e(f.abs(), spec.precision.unwrap_or(6)),
        'E' => format_float_e(f.abs(), spec.precision.unwrap_or(6)).to_uppercase(),
        'f' | 'F' => {
            if f.is_finite() {
                format!("{:.*}", spec.precision.unwrap_or(6), f.abs())
            } else {
                format_float_g(f.abs(), None)
            }
        }
        _ => return None,
    };
    if f.is_nan() {
        let text = format!(
            "{}NaN",
            if spec.plus {
                "+"
            } else if spec.space {
                " "
            } else {
                ""
            }
        );
        return Some(pad(text, Spec { zero: false, ..spec }, false));
    }
    let body = body.trim_start_matches('+');
    let text = format!("{}{body}", sign_prefix(f.is_sign_negative(), spec));
    if f.is_infinite() {
        let text = if text.starts_with('-') || spec.plus || spec.space {
            text
        } else {
            format!("+{text}")
        };
        return Some(pad(text, Spec { zero: false, ..spec }, false));
    }
    Some(pad(
        text,
        Spec {
            zero: spec.zero && !spec.minus,
            ..spec
        },
        true,
    ))
}

/// Decimal digits and the exponent of the first one: `x = d.ddd × 10^exp`.
/// `significant` of `None` gives the shortest digits that read back exactly.
fn decimal_digits(f: f64, significant: Option<usize>) -> (String, i32) {
    let text = match significant {
        None => format!("{f:e}"),
        Some(n) => format!("{:.*e}", n.max(1) - 1, f),
    };
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let mut digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    (digits, exponent.parse().unwrap_or(0))
}

/// strconv's `'g'` format of a non-negative float, as `%v` and `%g` print it.
pub(super) fn format_float_g(f: f64, precision: Option<usize>) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let negative = f.is_sign_negative();
    let (digits, exp) = decimal_digits(f.abs(), precision.map(|p| p.max(1)));
    let digit_count = digits.len() as i32;
    let exponent_limit = match precision {
        None => 6,
        Some(p) => {
            let p = p.max(1) as i32;
            if p > digit_count && digit_count > exp {
                digit_count
            } else {
                p
            }
        }
    };
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if exp < -4 || exp >= exponent_limit {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        push_exponent(&mut out, exp);
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = (exp + 1) as usize;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

fn format_float_e(f: f64, precision: usize) -> String {
    if !f.is_finite() {
        return format_float_g(f, None);
    }
    let text = format!("{:.*e}", precision, f);
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let mut out = mantissa.to_string();
    push_exponent(&mut out, exponent.parse().unwrap_or(0));
    out
}

/// Go writes exponents with a sign and at least two digits: `e+06`, `e-10`.
fn push_exponent(out: &mut String, exp: i32) {
    let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.unsigned_abs());
}

fn format_str(s: &str, verb: char, spec: Spec) -> Option<String> {
    let limited: &str = match spec.precision {
        Some(precision) => match s.char_indices().nth(precision) {
            Some((end, _)) => &s[..end],
            None => s,
        },
        None => s,
    };
    let text = match verb {
        's' | 'v' => limited.to_string(),
        'q' => go_quote(limited, spec.plus),
        'x' | 'X' => {
            let mut hex = String::with_capacity(limited.len() * 2);
            for byte in limited.bytes() {
                if verb == 'x' {
                    let _ = write!(hex, "{byte:02x}");
                } else {
                    let _ = write!(hex, "{byte:02X}");
                }
            }
            hex
        }
        _ => return None,
    };
    Some(pad(text, spec, false))
}

/// `strconv.Quote` (or `QuoteToASCII` when `ascii_only`).
pub(super) fn go_quote(s: &str, ascii_only: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' {
            out.push_str("\\\"");
        } else {
            quote_char(c, ascii_only, &mut out);
        }
    }
    out.push('"');
    out
}

fn quote_char(c: char, ascii_only: bool, out: &mut String) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if c.is_control() || (ascii_only && !c.is_ascii()) => {
            if (c as u32) < 0x10000 {
                let _ = write!(out, "\\u{:04x}", c as u32);
            } else {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value<'static> {
        Value::str(text.to_string())
    }

    #[test]
    fn floats_print_like_go() {
        let cases = [
            (10.5, "10.5"),
            (124.0, "124"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (0.0, "0"),
            (f64::INFINITY, "+Inf"),
            (f64::NAN, "NaN"),
        ];
        for (value, want) in cases {
            assert_eq!(format_float_g(value, None), want, "{value}");
        }
    }

    #[test]
    fn printf_verbs() {
        let cases: Vec<(&str, Vec<Value<'static>>, &str)> = vec![
            ("%s|%v|%q", vec![s("a\"b"), s("x"), s("a\"b\n")], "a\"b|x|\"a\\\"b\\n\""),
            (
                "%d %5d %-5d| %05d %+d %x %X %#x %o %b",
                vec![
                    Value::Int(42),
                    Value::Int(42),
                    Value::Int(42),
                    Value::Int(-42),
                    Value::Int(7),
                    Value::Int(255),
                    Value::Int(255),
                    Value::Int(255),
                    Value::Int(8),
                    Value::Int(5),
                ],
                "42    42 42   | -0042 +7 ff FF 0xff 10 101",
            ),
            (
                "%.2f %f %8.3f %-8.1f| %e %E %g",
                vec![
                    Value::Float(1.23456),
                    Value::Float(1.0),
                    Value::Float(-2.5),
                    Value::Float(2.25),
                    Value::Float(123456.789),
                    Value::Float(0.000123),
                    Value::Float(100000000.0),
                ],
                "1.23 1.000000   -2.500 2.2     | 1.234568e+05 1.230000E-04 1e+08",
            ),
            (
                "%.3g %g %.3s %x %c %U %t %v",
                vec![
                    Value::Float(1.23456),
                    Value::Float(2.5),
                    s("abcdef"),
                    s("hi"),
                    Value::Int(65),
                    Value::Int(0x1F600),
                    Value::Bool(true),
                    Value::Nil,
                ],
                "1.23 2.5 abc 6869 A U+1F600 true <nil>",
            ),
            (
                "%-40.40s|%15.15s|",
                vec![s("/a/509965767/alternative.html"), s("client-host-name-long")],
                "/a/509965767/alternative.html           |client-host-nam|",
            ),
            ("100%% %d", vec![Value::Int64(3)], "100% 3"),
        ];
        for (format, args, want) in cases {
            assert_eq!(sprintf(format, &args), want, "{format}");
        }
    }

    #[test]
    fn printf_marks_mistakes_like_go() {
        assert_eq!(sprintf("%d", &[s("x")]), "%!d(string=x)");
        assert_eq!(sprintf("%f", &[Value::Int(3)]), "%!f(int=3)");
        assert_eq!(sprintf("%d %d", &[Value::Int(1)]), "1 %!d(MISSING)");
        assert_eq!(
            sprintf("%d", &[Value::Int(1), s("a"), Value::Float(2.5)]),
            "1%!(EXTRA string=a, float64=2.5)"
        );
        assert_eq!(sprintf("%d", &[Value::Nil]), "%!d(<nil>)");
        assert_eq!(sprintf("%", &[]), "%!(NOVERB)");
    }

    #[test]
    fn sprint_spacing() {
        assert_eq!(sprint(&[s("a"), s("b")]), "ab");
        assert_eq!(sprint(&[Value::Int(1), Value::Int(2), s("x"), Value::Int(3)]), "1 2x3");
        assert_eq!(sprintln(&[s("a"), Value::Int(1)]), "a 1\n");
    }
}
