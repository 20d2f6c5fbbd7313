//! The functions a Loki template can call: text/template's builtins, the
//! sprig functions Loki enables, Loki's own, and `__line__`/`__timestamp__`.
//!
//! Each function declares Go's parameter types, because Go checks them: a
//! label (a string) passed where `trunc` wants an `int` is an error, while
//! `add` takes `interface{}` and converts whatever it gets (spf13/cast rules:
//! unparsable text is 0). Semantics follow Loki's Go code; where the Go code
//! panics (sprig's byte-indexed `substr`), the rune-safe variant Loki keeps
//! in `fmt.go` is used instead.

use std::borrow::Cow;
use std::rc::Rc;

use base64::Engine as _;
use regex::Regex;

use super::gotime::{self, GoTime};
use super::printf;
use super::value::Value;

/// The largest string a function may build (`repeat`, `indent`, `alignLeft`):
/// a template is user input and must not be able to exhaust memory per line.
pub(super) const MAX_GENERATED_LEN: usize = 16 << 20;

/// Go parameter types, as far as templates can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Param {
    Str,
    Int,
    Float,
    Time,
    Any,
}

impl Param {
    pub(super) fn go_name(self) -> &'static str {
        match self {
            Param::Str => "string",
            Param::Int => "int",
            Param::Float => "float64",
            Param::Time => "time.Time",
            Param::Any => "interface {}",
        }
    }
}

macro_rules! funcs {
    ($($variant:ident = $name:literal,)*) => {
        /// A function a template may call, resolved when the template is parsed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(super) enum Func { $($variant,)* }

        impl Func {
            pub(super) fn from_name(name: &str) -> Option<Func> {
                match name {
                    $($name => Some(Func::$variant),)*
                    _ => None,
                }
            }

            pub(super) fn name(self) -> &'static str {
                match self { $(Func::$variant => $name,)* }
            }
        }
    };
}

funcs! {
    // text/template builtins.
    And = "and", Or = "or", Not = "not", Len = "len", Index = "index", Slice = "slice",
    Print = "print", Printf = "printf", Println = "println", Html = "html", Js = "js",
    UrlQuery = "urlquery", Eq = "eq", Ne = "ne", Lt = "lt", Le = "le", Gt = "gt", Ge = "ge",
    Call = "call",
    // Loki's own (pkg/logql/log/fmt.go).
    Line = "__line__", Timestamp = "__timestamp__",
    GoToLower = "ToLower", GoToUpper = "ToUpper", GoReplace = "Replace", GoTrim = "Trim",
    GoTrimLeft = "TrimLeft", GoTrimRight = "TrimRight", GoTrimPrefix = "TrimPrefix",
    GoTrimSuffix = "TrimSuffix", GoTrimSpace = "TrimSpace",
    RegexReplaceAll = "regexReplaceAll", RegexReplaceAllLiteral = "regexReplaceAllLiteral",
    Count = "count", UrlDecode = "urldecode", UrlEncode = "urlencode", Bytes = "bytes",
    Duration = "duration", DurationSeconds = "duration_seconds",
    UnixEpochMillis = "unixEpochMillis", UnixEpochNanos = "unixEpochNanos",
    ToDateInZone = "toDateInZone", UnixToTime = "unixToTime", AlignLeft = "alignLeft",
    AlignRight = "alignRight", B64Dec = "b64dec",
    // The sprig functions Loki enables.
    B64Enc = "b64enc", Lower = "lower", Upper = "upper", Title = "title", Trunc = "trunc",
    Substr = "substr", Contains = "contains", HasPrefix = "hasPrefix", HasSuffix = "hasSuffix",
    Indent = "indent", Nindent = "nindent", Replace = "replace", Repeat = "repeat",
    Trim = "trim", TrimAll = "trimAll", TrimSuffix = "trimSuffix", TrimPrefix = "trimPrefix",
    Int = "int", Float64 = "float64", Add = "add", Sub = "sub", Mul = "mul", Div = "div",
    Mod = "mod", Addf = "addf", Subf = "subf", Mulf = "mulf", Divf = "divf", Max = "max",
    Min = "min", Maxf = "maxf", Minf = "minf", Ceil = "ceil", Floor = "floor",
    Round = "round", FromJson = "fromJson", Date = "date", ToDate = "toDate", Now = "now",
    UnixEpoch = "unixEpoch", Default = "default",
}

/// Fixed parameters and the type of the variadic tail, if any.
pub(super) struct Signature {
    pub(super) fixed: &'static [Param],
    pub(super) variadic: Option<Param>,
}

const fn sig(fixed: &'static [Param], variadic: Option<Param>) -> Signature {
    Signature { fixed, variadic }
}

use Param::{Any, Float as F, Int as I, Str as S, Time as T};

impl Func {
    pub(super) fn signature(self) -> Signature {
        match self {
            Func::And | Func::Or => sig(&[Any], Some(Any)),
            Func::Not | Func::Len | Func::FromJson => sig(&[Any], None),
            Func::Index | Func::Slice | Func::Eq | Func::Call => sig(&[Any], Some(Any)),
            Func::Print | Func::Println | Func::Html | Func::Js | Func::UrlQuery => sig(&[], Some(Any)),
            Func::Printf => sig(&[S], Some(Any)),
            Func::Ne | Func::Lt | Func::Le | Func::Gt | Func::Ge => sig(&[Any, Any], None),
            Func::Line | Func::Timestamp | Func::Now => sig(&[], None),
            Func::GoToLower
            | Func::GoToUpper
            | Func::GoTrimSpace
            | Func::UrlDecode
            | Func::UrlEncode
            | Func::Bytes
            | Func::Duration
            | Func::DurationSeconds
            | Func::UnixToTime
            | Func::B64Dec
            | Func::B64Enc
            | Func::Lower
            | Func::Upper
            | Func::Title
            | Func::Trim => sig(&[S], None),
            Func::GoReplace => sig(&[S, S, S, I], None),
            Func::GoTrim
            | Func::GoTrimLeft
            | Func::GoTrimRight
            | Func::GoTrimPrefix
            | Func::GoTrimSuffix
            | Func::Count
            | Func::Contains
            | Func::HasPrefix
            | Func::HasSuffix
            | Func::TrimAll
            | Func::TrimSuffix
            | Func::TrimPrefix
            | Func::ToDate => sig(&[S, S], None),
            Func::RegexReplaceAll | Func::RegexReplaceAllLiteral | Func::Replace | Func::ToDateInZone => {
                sig(&[S, S, S], None)
            }
            Func::UnixEpochMillis | Func::UnixEpochNanos | Func::UnixEpoch => sig(&[T], None),
            Func::AlignLeft | Func::AlignRight | Func::Trunc | Func::Indent | Func::Nindent | Func::Repeat => {
                sig(&[I, S], None)
            }
            Func::Substr => sig(&[I, I, S], None),
            Func::Int | Func::Float64 | Func::Ceil | Func::Floor => sig(&[Any], None),
            Func::Add | Func::Addf => sig(&[], Some(Any)),
            Func::Sub | Func::Div | Func::Mod => sig(&[Any, Any], None),
            Func::Mul | Func::Subf | Func::Mulf | Func::Divf | Func::Max | Func::Min | Func::Maxf | Func::Minf => {
                sig(&[Any], Some(Any))
            }
            Func::Round => sig(&[Any, I], Some(F)),
            Func::Date => sig(&[S, Any], None),
            Func::Default => sig(&[Any], Some(Any)),
        }
    }

    /// Whether the first argument is a regular expression worth compiling
    /// once at parse time when it is a literal.
    pub(super) fn takes_regex(self) -> bool {
        matches!(self, Func::RegexReplaceAll | Func::RegexReplaceAllLiteral | Func::Count)
    }
}

/// What a call may read besides its arguments.
pub(super) struct CallEnv<'a, 'r> {
    pub(super) line: &'a str,
    pub(super) timestamp_ns: i64,
    pub(super) now_ns: i64,
    /// Regexes compiled when the template was parsed, by pattern.
    pub(super) regexes: &'r [(Box<str>, Regex)],
}

fn str_arg<'v, 'a>(args: &'v [Value<'a>], i: usize) -> &'v str {
    match args.get(i) {
        Some(Value::Str(s)) => s,
        _ => "",
    }
}

fn int_arg(args: &[Value<'_>], i: usize) -> i64 {
    match args.get(i) {
        Some(Value::Int(n) | Value::Int64(n)) => *n,
        _ => 0,
    }
}

fn time_arg(args: &[Value<'_>], i: usize) -> GoTime {
    match args.get(i) {
        Some(Value::Time(t)) => (**t).clone(),
        _ => GoTime::zero(),
    }
}

fn owned<'a>(text: String) -> Value<'a> {
    Value::Str(Cow::Owned(text))
}

fn time_value<'a>(time: GoTime) -> Value<'a> {
    Value::Time(Rc::new(time))
}

fn limited(len: usize) -> Result<(), String> {
    if len > MAX_GENERATED_LEN {
        return Err(format!(
            "result of {len} bytes is over the {MAX_GENERATED_LEN}-byte limit"
        ));
    }
    Ok(())
}

/// Calls `func` with arguments already converted to its parameter types.
/// `and` and `or` never get here: they short-circuit in the evaluator.
pub(super) fn call<'a>(func: Func, mut args: Vec<Value<'a>>, env: &CallEnv<'a, '_>) -> Result<Value<'a>, String> {
    let value = match func {
        Func::And | Func::Or => {
            debug_assert!(false, "and/or are evaluated lazily by the evaluator");
            args.pop().unwrap_or(Value::Nil)
        }
        Func::Not => Value::Bool(!args[0].is_true()),
        Func::Len => Value::Int(length(&args[0])?),
        Func::Index => index(args)?,
        Func::Slice => slice(args)?,
        Func::Print => owned(printf::sprint(&args)),
        Func::Println => owned(printf::sprintln(&args)),
        Func::Printf => {
            let format = str_arg(&args, 0).to_string();
            owned(printf::sprintf(&format, &args[1..]))
        }
        Func::Html => owned(html_escape(&eval_args(&args))),
        Func::Js => owned(js_escape(&eval_args(&args))),
        Func::UrlQuery => owned(query_escape(&eval_args(&args))),
        Func::Eq => Value::Bool(eq(&args[0], &args[1..])?),
        Func::Ne => Value::Bool(!eq(&args[0], &args[1..])?),
        Func::Lt => Value::Bool(lt(&args[0], &args[1])?),
        Func::Le => Value::Bool(lt(&args[0], &args[1])? || eq(&args[0], &args[1..])?),
        Func::Gt => Value::Bool(!(lt(&args[0], &args[1])? || eq(&args[0], &args[1..])?)),
        Func::Ge => Value::Bool(!lt(&args[0], &args[1])?),
        Func::Call => {
            return Err(match &args[0] {
                Value::Nil => "call of nil".to_string(),
                other => format!("non-function of type {}", other.type_name()),
            });
        }
        Func::Line => Value::Str(Cow::Borrowed(env.line)),
        Func::Timestamp => time_value(GoTime::from_unix_nanos(env.timestamp_ns)),
        Func::Now => time_value(GoTime::from_unix_nanos(env.now_ns)),
        Func::GoToLower | Func::Lower => owned(str_arg(&args, 0).to_lowercase()),
        Func::GoToUpper | Func::Upper => owned(str_arg(&args, 0).to_uppercase()),
        Func::GoTrimSpace | Func::Trim => trim_value(args, |s| s.trim_matches(|c: char| c.is_whitespace())),
        Func::GoReplace => {
            let (s, old, new, n) = (
                str_arg(&args, 0),
                str_arg(&args, 1),
                str_arg(&args, 2),
                int_arg(&args, 3),
            );
            let replaced = match usize::try_from(n) {
                Ok(count) => s.replacen(old, new, count),
                Err(_) => s.replace(old, new),
            };
            owned(replaced)
        }
        Func::GoTrim | Func::TrimAll => {
            let (s, cutset) = if func == Func::GoTrim { (0, 1) } else { (1, 0) };
            let cutset = str_arg(&args, cutset).to_string();
            trim_value_at(args, s, |text| text.trim_matches(|c| cutset.contains(c)))
        }
        Func::GoTrimLeft => {
            let cutset = str_arg(&args, 1).to_string();
            trim_value_at(args, 0, |text| text.trim_start_matches(|c| cutset.contains(c)))
        }
        Func::GoTrimRight => {
            let cutset = str_arg(&args, 1).to_string();
            trim_value_at(args, 0, |text| text.trim_end_matches(|c| cutset.contains(c)))
        }
        Func::GoTrimPrefix | Func::TrimPrefix => {
            let (s, affix) = if func == Func::GoTrimPrefix { (0, 1) } else { (1, 0) };
            let prefix = str_arg(&args, affix).to_string();
            trim_value_at(args, s, |text| text.strip_prefix(prefix.as_str()).unwrap_or(text))
        }
        Func::GoTrimSuffix | Func::TrimSuffix => {
            let (s, affix) = if func == Func::GoTrimSuffix { (0, 1) } else { (1, 0) };
            let suffix = str_arg(&args, affix).to_string();
            trim_value_at(args, s, |text| text.strip_suffix(suffix.as_str()).unwrap_or(text))
        }
        Func::RegexReplaceAll | Func::RegexReplaceAllLiteral => {
            let regex = compile(str_arg(&args, 0), env)?;
            let (s, replacement) = (str_arg(&args, 1), str_arg(&args, 2));
            let replaced = if func == Func::RegexReplaceAll {
                regex.replace_all(s, replacement)
            } else {
                regex.replace_all(s, regex::NoExpand(replacement))
            };
            owned(replaced.into_owned())
        }
        Func::Count => {
            let regex = compile(str_arg(&args, 0), env)?;
            Value::Int(regex.find_iter(str_arg(&args, 1)).count() as i64)
        }
        Func::UrlDecode => owned(query_unescape(str_arg(&args, 0))?),
        Func::UrlEncode => owned(query_escape(str_arg(&args, 0))),
        Func::Bytes => Value::Float(parse_bytes(str_arg(&args, 0))?),
        Func::Duration | Func::DurationSeconds => Value::Float(gotime::parse_duration_seconds(str_arg(&args, 0))?),
        Func::UnixEpoch => owned(time_arg(&args, 0).unix().to_string()),
        Func::UnixEpochMillis => owned(time_arg(&args, 0).unix_millis().to_string()),
        Func::UnixEpochNanos => owned(time_arg(&args, 0).unix_nanos().to_string()),
        Func::ToDate => time_value(gotime::parse(str_arg(&args, 0), str_arg(&args, 1)).unwrap_or_else(GoTime::zero)),
        Func::ToDateInZone => {
            // Zones other than UTC fall back to UTC, as Loki does for a zone it
            // cannot load; see the gotime module.
            time_value(gotime::parse(str_arg(&args, 0), str_arg(&args, 2)).unwrap_or_else(GoTime::zero))
        }
        Func::UnixToTime => time_value(unix_to_time(str_arg(&args, 0))?),
        Func::AlignLeft | Func::AlignRight => align(func == Func::AlignLeft, int_arg(&args, 0), args)?,
        Func::B64Dec => owned(base64_decode(str_arg(&args, 0))),
        Func::B64Enc => owned(base64::engine::general_purpose::STANDARD.encode(str_arg(&args, 0))),
        Func::Title => owned(title(str_arg(&args, 0))),
        Func::Trunc => {
            let count = int_arg(&args, 0);
            trim_value_at(args, 1, |s| trunc(count, s))
        }
        Func::Substr => {
            let (start, end) = (int_arg(&args, 0), int_arg(&args, 1));
            trim_value_at(args, 2, |s| substring(start, end, s))
        }
        Func::Contains => Value::Bool(str_arg(&args, 1).contains(str_arg(&args, 0))),
        Func::HasPrefix => Value::Bool(str_arg(&args, 1).starts_with(str_arg(&args, 0))),
        Func::HasSuffix => Value::Bool(str_arg(&args, 1).ends_with(str_arg(&args, 0))),
        Func::Indent | Func::Nindent => {
            let spaces = usize::try_from(int_arg(&args, 0)).unwrap_or(0);
            let text = str_arg(&args, 1);
            limited(
                spaces
                    .saturating_mul(text.matches('\n').count() + 1)
                    .saturating_add(text.len()),
            )?;
            let pad = " ".repeat(spaces);
            let indented = format!("{pad}{}", text.replace('\n', &format!("\n{pad}")));
            owned(if func == Func::Nindent {
                format!("\n{indented}")
            } else {
                indented
            })
        }
        Func::Replace => owned(str_arg(&args, 2).replace(str_arg(&args, 0), str_arg(&args, 1))),
        Func::Repeat => {
            let count = int_arg(&args, 0);
            let Ok(count) = usize::try_from(count) else {
                return Err("strings: negative Repeat count".to_string());
            };
            let text = str_arg(&args, 1);
            limited(text.len().saturating_mul(count))?;
            owned(text.repeat(count))
        }
        Func::Int => Value::Int(to_int64(&args[0])),
        Func::Float64 => Value::Float(to_float64(&args[0])),
        Func::Add => Value::Int64(args.iter().fold(0i64, |sum, v| sum.wrapping_add(to_int64(v)))),
        Func::Sub => Value::Int64(to_int64(&args[0]).wrapping_sub(to_int64(&args[1]))),
        Func::Mul => Value::Int64(
            args[1..]
                .iter()
                .fold(to_int64(&args[0]), |p, v| p.wrapping_mul(to_int64(v))),
        ),
        Func::Div | Func::Mod => {
            let (a, b) = (to_int64(&args[0]), to_int64(&args[1]));
            if b == 0 {
                return Err("runtime error: integer divide by zero".to_string());
            }
            Value::Int64(if func == Func::Div {
                a.wrapping_div(b)
            } else {
                a.wrapping_rem(b)
            })
        }
        Func::Addf => decimal_fold(Value::Float(0.0), &args, DecimalOp::Add)?,
        Func::Subf => decimal_fold(args[0].clone(), &args[1..], DecimalOp::Sub)?,
        Func::Mulf => decimal_fold(args[0].clone(), &args[1..], DecimalOp::Mul)?,
        Func::Divf => decimal_fold(args[0].clone(), &args[1..], DecimalOp::Div)?,
        Func::Max => Value::Int64(args[1..].iter().map(to_int64).fold(to_int64(&args[0]), i64::max)),
        Func::Min => Value::Int64(args[1..].iter().map(to_int64).fold(to_int64(&args[0]), i64::min)),
        Func::Maxf => Value::Float(args[1..].iter().map(to_float64).fold(to_float64(&args[0]), go_max)),
        Func::Minf => Value::Float(args[1..].iter().map(to_float64).fold(to_float64(&args[0]), go_min)),
        Func::Ceil => Value::Float(to_float64(&args[0]).ceil()),
        Func::Floor => Value::Float(to_float64(&args[0]).floor()),
        Func::Round => {
            let round_on = match args.get(2) {
                Some(Value::Float(f)) => *f,
                _ => 0.5,
            };
            Value::Float(round(to_float64(&args[0]), int_arg(&args, 1), round_on))
        }
        Func::FromJson => match serde_json::from_str::<serde_json::Value>(str_arg(&args, 0)) {
            Ok(json) => super::value::from_json(json),
            Err(_) => Value::Nil,
        },
        Func::Date => {
            let time = match &args[1] {
                Value::Time(t) => t.in_utc(),
                Value::Int(n) | Value::Int64(n) => GoTime::from_unix(*n, 0),
                // sprig formats the current time for anything else.
                _ => GoTime::from_unix_nanos(env.now_ns),
            };
            owned(gotime::format(&time, str_arg(&args, 0)))
        }
        Func::Default => {
            let given = args.get(1).filter(|v| !is_empty(v)).cloned();
            given.unwrap_or_else(|| args.swap_remove(0))
        }
    };
    Ok(value)
}

/// Applies a trimming function to argument `i`, keeping a borrowed label
/// borrowed: trimming never needs a copy.
fn trim_value_at<'a>(mut args: Vec<Value<'a>>, i: usize, trim: impl FnOnce(&str) -> &str) -> Value<'a> {
    if i >= args.len() {
        return Value::str("");
    }
    match args.swap_remove(i) {
        Value::Str(Cow::Borrowed(text)) => Value::Str(Cow::Borrowed(trim(text))),
        Value::Str(Cow::Owned(text)) => {
            let (start, len) = {
                let kept = trim(&text);
                (kept.as_ptr() as usize - text.as_ptr() as usize, kept.len())
            };
            if len == text.len() {
                Value::Str(Cow::Owned(text))
            } else {
                owned(text[start..start + len].to_string())
            }
        }
        _ => Value::str(""),
    }
}

fn trim_value<'a>(args: Vec<Value<'a>>, trim: impl FnOnce(&str) -> &str) -> Value<'a> {
    trim_value_at(args, 0, trim)
}

fn compile<'r>(pattern: &str, env: &'r CallEnv<'_, '_>) -> Result<Cow<'r, Regex>, String> {
    if let Some((_, regex)) = env.regexes.iter().find(|(p, _)| &**p == pattern) {
        return Ok(Cow::Borrowed(regex));
    }
    Regex::new(pattern)
        .map(Cow::Owned)
        .map_err(|e| regex_error(pattern, &e))
}

/// A short, one-line message (regex's own spans several lines).
pub(super) fn regex_error(pattern: &str, error: &regex::Error) -> String {
    let detail = error.to_string();
    let last = detail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("invalid");
    format!(
        "error parsing regexp: {}: `{pattern}`",
        last.trim().trim_start_matches("error: ")
    )
}

fn length(value: &Value<'_>) -> Result<i64, String> {
    Ok(match value {
        Value::Str(s) => s.len() as i64,
        Value::List(items) => items.len() as i64,
        Value::Map(map) => map.len() as i64,
        Value::Labels(labels) => {
            let mut count = 0;
            labels.for_each(&mut |_, _| count += 1);
            count
        }
        Value::Nil => return Err("len of nil pointer".to_string()),
        other => return Err(format!("len of type {}", other.type_name())),
    })
}

fn index_int(value: &Value<'_>) -> Result<i64, String> {
    match value {
        Value::Int(n) | Value::Int64(n) => Ok(*n),
        Value::Nil => Err("cannot index slice/array with nil".to_string()),
        other => Err(format!("cannot index slice/array with type {}", other.type_name())),
    }
}

fn index<'a>(mut args: Vec<Value<'a>>) -> Result<Value<'a>, String> {
    let indexes = args.split_off(1);
    let mut item = args.pop().unwrap_or(Value::Nil);
    for key in indexes {
        item = match item {
            Value::List(items) => {
                let i = index_int(&key)?;
                match usize::try_from(i).ok().and_then(|i| items.get(i)) {
                    Some(found) => found.clone(),
                    None => return Err(format!("error calling index: index out of range: {i}")),
                }
            }
            Value::Str(text) => {
                let i = index_int(&key)?;
                match usize::try_from(i).ok().and_then(|i| text.as_bytes().get(i)) {
                    // Go indexes strings by byte and yields a uint8.
                    Some(byte) => Value::Int(i64::from(*byte)),
                    None => return Err(format!("error calling index: index out of range: {i}")),
                }
            }
            Value::Map(map) => match &key {
                Value::Str(name) => map.get(name.as_ref()).cloned().unwrap_or(Value::Nil),
                other => return Err(format!("value has type {}; should be string", other.type_name())),
            },
            Value::Labels(labels) => match &key {
                Value::Str(name) => Value::Str(Cow::Borrowed(labels.get(name).unwrap_or(""))),
                other => return Err(format!("value has type {}; should be string", other.type_name())),
            },
            Value::Nil => return Err("index of untyped nil".to_string()),
            other => return Err(format!("can't index item of type {}", other.type_name())),
        };
    }
    Ok(item)
}

fn slice<'a>(mut args: Vec<Value<'a>>) -> Result<Value<'a>, String> {
    let bounds = args.split_off(1);
    let item = args.pop().unwrap_or(Value::Nil);
    if bounds.len() > 3 {
        return Err(format!("too many slice indexes: {}", bounds.len()));
    }
    let len = match &item {
        Value::Str(s) => s.len(),
        Value::List(items) => items.len(),
        Value::Nil => return Err("slice of untyped nil".to_string()),
        other => return Err(format!("can't slice item of type {}", other.type_name())),
    };
    if bounds.len() == 3 && matches!(item, Value::Str(_)) {
        return Err("cannot 3-index slice a string".to_string());
    }
    let mut idx = [0usize, len, len];
    for (i, bound) in bounds.iter().enumerate() {
        let n = index_int(bound)?;
        let n = usize::try_from(n).map_err(|_| format!("index out of range: {n}"))?;
        if n > len {
            return Err(format!("index out of range: {n}"));
        }
        idx[i] = n;
    }
    if bounds.len() < 2 {
        idx[1] = len;
    }
    if idx[0] > idx[1] {
        return Err(format!("invalid slice index: {} > {}", idx[0], idx[1]));
    }
    Ok(match item {
        Value::Str(s) => {
            let bytes = &s.as_bytes()[idx[0]..idx[1]];
            owned(String::from_utf8_lossy(bytes).into_owned())
        }
        Value::List(items) => Value::List(items[idx[0]..idx[1]].iter().cloned().collect()),
        _ => Value::Nil,
    })
}

/// text/template's `evalArgs`: `fmt.Sprint` of the arguments.
fn eval_args(args: &[Value<'_>]) -> String {
    match args {
        [Value::Str(s)] => s.to_string(),
        _ => printf::sprint(args),
    }
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn js_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c if !c.is_ascii() && c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Go's `url.QueryEscape`.
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Go's `url.QueryUnescape`.
fn query_unescape(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                let Some(hex) = hex else {
                    let end = (i + 3).min(bytes.len());
                    let shown = String::from_utf8_lossy(&bytes[i..end]);
                    return Err(format!("invalid URL escape {shown:?}"));
                };
                let hex = std::str::from_utf8(hex).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// go-humanize's `ParseBytes`: `42`, `1.5 KB` (1000), `2MiB` (1024²).
fn parse_bytes(text: &str) -> Result<f64, String> {
    let number_len = text
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || *c == ','))
        .map_or(text.len(), |(i, _)| i);
    let number = text[..number_len].replace(',', "");
    let value: f64 = number
        .parse()
        .map_err(|_| format!("strconv.ParseFloat: parsing {number:?}: invalid syntax"))?;
    let unit = text[number_len..].trim().to_lowercase();
    let scale: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024f64.powi(2),
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024f64.powi(3),
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        "p" | "pb" => 1e15,
        "pi" | "pib" => 1024f64.powi(5),
        "e" | "eb" => 1e18,
        "ei" | "eib" => 1024f64.powi(6),
        _ => return Err(format!("unhandled size name: {unit}")),
    };
    let bytes = value * scale;
    if bytes >= u64::MAX as f64 {
        return Err(format!("too large: {text}"));
    }
    // humanize returns a uint64: the fraction of a byte is dropped.
    Ok(bytes.trunc())
}

/// Loki's `unixToTime`: the number of digits says the unit.
fn unix_to_time(epoch: &str) -> Result<GoTime, String> {
    let value: i64 = epoch
        .parse()
        .map_err(|_| format!("unable to parse time '{epoch}': strconv.ParseInt: parsing {epoch:?}: invalid syntax"))?;
    Ok(match epoch.len() {
        5 => GoTime::from_unix(value.saturating_mul(86_400), 0),
        10 => GoTime::from_unix(value, 0),
        13 => GoTime::from_unix(0, value.saturating_mul(1_000_000)),
        16 => GoTime::from_unix(0, value.saturating_mul(1_000)),
        19 => GoTime::from_unix(0, value),
        // Loki wraps a nil error here, which Go prints as %!w(<nil>).
        _ => return Err(format!("unable to parse time '{epoch}': %!w(<nil>)")),
    })
}

fn align<'a>(left: bool, count: i64, args: Vec<Value<'a>>) -> Result<Value<'a>, String> {
    let src = str_arg(&args, 1);
    let runes = src.chars().count();
    let Ok(count) = usize::try_from(count) else {
        return Ok(args.into_iter().nth(1).unwrap_or(Value::Nil));
    };
    if count == runes {
        return Ok(args.into_iter().nth(1).unwrap_or(Value::Nil));
    }
    if count > runes {
        limited(count)?;
        let pad = " ".repeat(count - runes);
        return Ok(owned(if left {
            format!("{src}{pad}")
        } else {
            format!("{pad}{src}")
        }));
    }
    let kept: String = if left {
        src.chars().take(count).collect()
    } else {
        src.chars().skip(runes - count).collect()
    };
    Ok(owned(kept))
}

/// Loki's `b64dec`: pads a short input, and returns Go's error text as the
/// value rather than failing.
fn base64_decode(text: &str) -> String {
    let mut input: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    let remainder = input.len() % 4;
    if remainder == 2 || remainder == 3 {
        input.push_str(&"=".repeat(4 - remainder));
    }
    let config = base64::engine::GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical);
    let engine = base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    match engine.decode(&input) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => {
            let offset = match error {
                base64::DecodeError::InvalidByte(offset, _) => offset,
                base64::DecodeError::InvalidLastSymbol { offset, .. } => offset,
                base64::DecodeError::InvalidLength(len) => len,
                base64::DecodeError::InvalidPadding => input.find('=').unwrap_or(input.len()),
            };
            format!("illegal base64 data at input byte {offset}")
        }
    }
}

/// Go's deprecated `strings.Title`: upper-cases letters that follow a separator.
fn title(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut previous = ' ';
    for c in text.chars() {
        let separator = if previous.is_ascii() {
            !(previous.is_ascii_alphanumeric() || previous == '_')
        } else {
            previous.is_whitespace()
        };
        if separator {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        previous = c;
    }
    out
}

fn trunc(count: i64, text: &str) -> &str {
    let runes = text.chars().count() as i64;
    if count < 0 && runes + count > 0 {
        return rune_suffix(text, (runes + count) as usize);
    }
    if count >= 0 && runes > count {
        return rune_prefix(text, count as usize);
    }
    text
}

fn substring(start: i64, end: i64, text: &str) -> &str {
    let runes = text.chars().count() as i64;
    let end = end.min(runes);
    let start = start.min(runes);
    if start < 0 {
        if end < 0 {
            return "";
        }
        return rune_prefix(text, end as usize);
    }
    if end < 0 {
        return rune_suffix(text, start as usize);
    }
    if start > end {
        return "";
    }
    rune_suffix(rune_prefix(text, end as usize), start as usize)
}

fn rune_prefix(text: &str, runes: usize) -> &str {
    match text.char_indices().nth(runes) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

fn rune_suffix(text: &str, skip: usize) -> &str {
    match text.char_indices().nth(skip) {
        Some((i, _)) => &text[i..],
        None => "",
    }
}

/// spf13/cast's `ToInt64`: numbers truncate, text parses (`0x1f`, `3.7` → 3),
/// anything unparsable is 0.
pub(super) fn to_int64(value: &Value<'_>) -> i64 {
    match value {
        Value::Int(n) | Value::Int64(n) => *n,
        Value::Float(f) => {
            if f.is_nan() {
                i64::MIN
            } else {
                *f as i64
            }
        }
        Value::Bool(b) => i64::from(*b),
        Value::Str(s) => parse_cast_int(s).unwrap_or(0),
        _ => 0,
    }
}

fn parse_cast_int(text: &str) -> Option<i64> {
    let mut text = text;
    if text.contains('.') {
        // cast keeps the integer part of plain decimals ("3.7", "-.5").
        let (int_part, frac) = text.split_once('.')?;
        let sign_len = usize::from(int_part.starts_with(['+', '-']));
        let valid =
            int_part[sign_len..].bytes().all(|b| b.is_ascii_digit()) && frac.bytes().all(|b| b.is_ascii_digit());
        if !valid {
            return None;
        }
        text = int_part;
        if text.len() == sign_len {
            return Some(0);
        }
    }
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, body) = if let Some(rest) = lower.strip_prefix("0x") {
        (16, rest.to_string())
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (8, rest.to_string())
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (2, rest.to_string())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string())
    } else {
        (10, lower.clone())
    };
    if body.is_empty() || body.starts_with('_') || body.ends_with('_') || (radix == 10 && body.contains('_')) {
        return None;
    }
    let magnitude = u64::from_str_radix(&body.replace('_', ""), radix).ok()?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// spf13/cast's `ToFloat64`.
pub(super) fn to_float64(value: &Value<'_>) -> f64 {
    match value {
        Value::Int(n) | Value::Int64(n) => *n as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Str(s) => s.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Go's `math.Max`: NaN wins, +0 beats -0.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == b && a == 0.0 {
        return if a.is_sign_negative() { b } else { a };
    }
    if a > b { a } else { b }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == b && a == 0.0 {
        return if a.is_sign_negative() { a } else { b };
    }
    if a < b { a } else { b }
}

/// sprig's `round`: rounds up when the fraction reaches `round_on`.
fn round(value: f64, places: i64, round_on: f64) -> f64 {
    let pow = 10f64.powf(places as f64);
    let digit = pow * value;
    let fraction = digit.fract();
    let rounded = if fraction >= round_on {
        digit.ceil()
    } else {
        digit.floor()
    };
    rounded / pow
}

/// sprig's `empty`, which `default` uses.
fn is_empty(value: &Value<'_>) -> bool {
    match value {
        Value::Time(_) => false,
        Value::Labels(_) | Value::List(_) | Value::Map(_) => !value.is_true(),
        other => !other.is_true(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DecimalOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// A decimal number `coefficient × 10^exponent`, how shopspring/decimal
/// (behind sprig's `addf`, `subf`, `mulf`, `divf`) computes: each float is
/// taken at its shortest decimal form, so `addf 0.1 0.2` is exactly 0.3.
#[derive(Debug, Clone, Copy)]
struct Decimal {
    coefficient: i128,
    exponent: i32,
}

impl Decimal {
    fn from_f64(f: f64) -> Result<Decimal, String> {
        if !f.is_finite() {
            return Err(format!(
                "Cannot create a Decimal from {}",
                printf::format_float_g(f, None)
            ));
        }
        let text = format!("{f:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits = format!("{int_part}{frac_part}");
        let coefficient: i128 = digits.parse().map_err(|_| "invalid decimal".to_string())?;
        let exponent: i32 = exponent.parse().unwrap_or(0);
        Ok(Decimal {
            coefficient,
            exponent: exponent - frac_part.len() as i32,
        })
    }

    fn to_f64(self) -> f64 {
        format!("{}e{}", self.coefficient, self.exponent)
            .parse()
            .unwrap_or(f64::NAN)
    }

    fn rescale(self, exponent: i32) -> Option<Decimal> {
        debug_assert!(exponent <= self.exponent);
        let shift = u32::try_from(self.exponent - exponent).ok()?;
        let factor = 10i128.checked_pow(shift)?;
        Some(Decimal {
            coefficient: self.coefficient.checked_mul(factor)?,
            exponent,
        })
    }

    fn apply(self, op: DecimalOp, other: Decimal) -> Option<Decimal> {
        match op {
            DecimalOp::Add | DecimalOp::Sub => {
                let exponent = self.exponent.min(other.exponent);
                let (a, b) = (self.rescale(exponent)?, other.rescale(exponent)?);
                let coefficient = if op == DecimalOp::Add {
                    a.coefficient.checked_add(b.coefficient)?
                } else {
                    a.coefficient.checked_sub(b.coefficient)?
                };
                Some(Decimal { coefficient, exponent })
            }
            DecimalOp::Mul => Some(Decimal {
                coefficient: self.coefficient.checked_mul(other.coefficient)?,
                exponent: self.exponent.checked_add(other.exponent)?,
            }),
            DecimalOp::Div => {
                // shopspring divides to 16 decimal places, rounding half away from zero.
                const PLACES: i32 = 16;
                if other.coefficient == 0 {
                    return None;
                }
                let shift = self.exponent - other.exponent + PLACES + 1;
                let (numerator, denominator) = if shift >= 0 {
                    (
                        self.coefficient
                            .checked_mul(10i128.checked_pow(u32::try_from(shift).ok()?)?)?,
                        other.coefficient,
                    )
                } else {
                    (
                        self.coefficient,
                        other
                            .coefficient
                            .checked_mul(10i128.checked_pow(u32::try_from(-shift).ok()?)?)?,
                    )
                };
                let quotient = numerator / denominator;
                let rounded = (quotient + quotient.signum() * 5) / 10;
                Some(Decimal {
                    coefficient: rounded,
                    exponent: -PLACES,
                })
            }
        }
    }
}

fn decimal_fold<'a>(first: Value<'a>, rest: &[Value<'a>], op: DecimalOp) -> Result<Value<'a>, String> {
    let mut float = to_float64(&first);
    let mut decimal = Some(Decimal::from_f64(float)?);
    for value in rest {
        let operand = to_float64(value);
        let next = Decimal::from_f64(operand)?;
        if op == DecimalOp::Div && next.coefficient == 0 {
            return Err("decimal division by 0".to_string());
        }
        float = match op {
            DecimalOp::Add => float + operand,
            DecimalOp::Sub => float - operand,
            DecimalOp::Mul => float * operand,
            DecimalOp::Div => float / operand,
        };
        // Beyond 38 digits (1e300 + 1e-300) plain float arithmetic stands in.
        decimal = decimal.and_then(|d| d.apply(op, next));
    }
    Ok(Value::Float(decimal.map_or(float, Decimal::to_f64)))
}

/// Go's `basicKind` classes, for `eq`/`lt`.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Kind {
    Bool,
    Int,
    Float,
    Str,
    Other,
}

fn kind(value: &Value<'_>) -> Kind {
    match value {
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) | Value::Int64(_) => Kind::Int,
        Value::Float(_) => Kind::Float,
        Value::Str(_) => Kind::Str,
        _ => Kind::Other,
    }
}

const BAD_COMPARISON: &str = "incompatible types for comparison";
const BAD_COMPARISON_TYPE: &str = "invalid type for comparison";

/// text/template's `eq`: true when the first argument equals any other.
fn eq(first: &Value<'_>, others: &[Value<'_>]) -> Result<bool, String> {
    if others.is_empty() {
        return Err("missing argument for comparison".to_string());
    }
    let first_kind = kind(first);
    for other in others {
        let other_kind = kind(other);
        let equal = if first_kind != other_kind {
            if !matches!(first, Value::Nil) && !matches!(other, Value::Nil) {
                return Err(BAD_COMPARISON.to_string());
            }
            false
        } else {
            match (first, other) {
                (Value::Bool(a), Value::Bool(b)) => a == b,
                (Value::Int(a) | Value::Int64(a), Value::Int(b) | Value::Int64(b)) => a == b,
                (Value::Float(a), Value::Float(b)) => a == b,
                (Value::Str(a), Value::Str(b)) => a == b,
                (Value::Nil, Value::Nil) => true,
                (Value::Nil, _) | (_, Value::Nil) => false,
                (Value::Time(a), Value::Time(b)) => a == b,
                (a, b) => {
                    return Err(format!(
                        "non-comparable types {}: {}, {}: {}",
                        a.to_go_string(),
                        a.type_name(),
                        b.type_name(),
                        b.to_go_string()
                    ));
                }
            }
        };
        if equal {
            return Ok(true);
        }
    }
    Ok(false)
}

fn lt(a: &Value<'_>, b: &Value<'_>) -> Result<bool, String> {
    let (ka, kb) = (kind(a), kind(b));
    if ka == Kind::Other || kb == Kind::Other {
        return Err(BAD_COMPARISON_TYPE.to_string());
    }
    if ka != kb {
        return Err(BAD_COMPARISON.to_string());
    }
    if ka == Kind::Bool {
        return Err(BAD_COMPARISON_TYPE.to_string());
    }
    Ok(match (a, b) {
        (Value::Int(x) | Value::Int64(x), Value::Int(y) | Value::Int64(y)) => x < y,
        (Value::Float(x), Value::Float(y)) => x < y,
        (Value::Str(x), Value::Str(y)) => x < y,
        _ => false,
    })
}
