//! The values a template computes with: the Go types Loki's functions take
//! and return, kept apart where Go keeps them apart (`int` and `int64` print
//! alike, but a function with an `int` parameter refuses an `int64`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;

use super::LabelLookup;
use super::gotime::GoTime;

/// A template value. Strings borrow from the labels or the line where they
/// can, so `{{ .a }}` copies the label's bytes once, into the output.
#[derive(Clone)]
pub(super) enum Value<'a> {
    /// Go's invalid value: a nil interface, printed as `<no value>`.
    Nil,
    Bool(bool),
    /// Go `int`: literals, `len`, `count`, `int`.
    Int(i64),
    /// Go `int64`: what sprig's integer arithmetic returns.
    Int64(i64),
    Float(f64),
    Str(Cow<'a, str>),
    Time(Rc<GoTime>),
    /// `[]interface{}` from `fromJson`.
    List(Rc<[Value<'static>]>),
    /// `map[string]interface{}` from `fromJson`, keys sorted as Go prints them.
    Map(Rc<BTreeMap<String, Value<'static>>>),
    /// The entry's labels, the template's initial dot (`map[string]string`).
    Labels(&'a dyn LabelLookup),
}

impl std::fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.type_name(), self.to_go_string())
    }
}

impl<'a> Value<'a> {
    pub(super) fn str(text: impl Into<Cow<'a, str>>) -> Value<'a> {
        Value::Str(text.into())
    }

    /// The Go type name, as error messages and `%!verb(type=…)` show it.
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Int64(_) => "int64",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::Time(_) => "time.Time",
            Value::List(_) => "[]interface {}",
            Value::Map(_) => "map[string]interface {}",
            Value::Labels(_) => "map[string]string",
        }
    }

    /// Go's `isTrue`: empty strings, lists and maps, zero numbers, false and
    /// nil are false; a `time.Time` (a struct) is always true.
    pub(super) fn is_true(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(n) | Value::Int64(n) => *n != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Time(_) => true,
            Value::List(items) => !items.is_empty(),
            Value::Map(map) => !map.is_empty(),
            Value::Labels(labels) => {
                let mut any = false;
                labels.for_each(&mut |_, _| any = true);
                any
            }
        }
    }

    /// The value as an action prints it (`fmt.Fprint`, `<no value>` for nil).
    pub(super) fn write_to(&self, out: &mut String) {
        match self {
            Value::Nil => out.push_str("<no value>"),
            Value::Str(s) => out.push_str(s),
            other => write_plain(other, out),
        }
    }

    pub(super) fn to_go_string(&self) -> String {
        let mut out = String::new();
        self.write_to(&mut out);
        out
    }

    /// Go's `%v` of the value; nil is `<nil>` here, as inside a list.
    pub(super) fn write_v(&self, out: &mut String) {
        write_plain(self, out);
    }
}

fn write_plain(value: &Value<'_>, out: &mut String) {
    match value {
        Value::Nil => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) | Value::Int64(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Float(f) => out.push_str(&super::printf::format_float_g(*f, None)),
        Value::Str(s) => out.push_str(s),
        Value::Time(t) => out.push_str(&t.to_go_string()),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_plain(item, out);
            }
            out.push(']');
        }
        Value::Map(map) => {
            out.push_str("map[");
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(key);
                out.push(':');
                write_plain(item, out);
            }
            out.push(']');
        }
        Value::Labels(labels) => {
            out.push_str("map[");
            let mut pairs = Vec::new();
            labels.for_each(&mut |k, v| pairs.push((k.to_string(), v.to_string())));
            pairs.sort();
            for (i, (key, item)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                let _ = write!(out, "{key}:{item}");
            }
            out.push(']');
        }
    }
}

/// Converts decoded JSON the way Go's `json.Unmarshal` into `interface{}`
/// does: every number becomes a `float64`.
pub(super) fn from_json(json: serde_json::Value) -> Value<'static> {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Value::Str(Cow::Owned(s)),
        serde_json::Value::Array(items) => Value::List(items.into_iter().map(from_json).collect()),
        serde_json::Value::Object(map) => {
            Value::Map(Rc::new(map.into_iter().map(|(k, v)| (k, from_json(v))).collect()))
        }
    }
}
