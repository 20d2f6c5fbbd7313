//! Go text/template, as LogQL's `| line_format "…"` and `| label_format
//! dst="…"` use it, with Loki's template functions.
//!
//! Loki hands these templates to Go's `text/template` with its label map as
//! data (`missingkey=zero`) and a function map of its own plus a fixed list
//! of sprig functions. Queries written for Loki must render the same here,
//! so this module follows Go's grammar, typing, printing and error texts:
//!
//! - text and `{{ }}` actions, trim markers (`{{- ` and ` -}}`), comments
//!   (`{{/* … */}}`), `.label` access (a missing label is `""`, as Loki's
//!   `map[string]string` gives), `$` and `$x := …` / `$x = …` variables,
//!   pipelines, parenthesised calls, string (Go escapes, raw backquotes),
//!   character, number, boolean and `nil` literals;
//! - `if`/`else if`/`else`, `with`/`else with`, and `range` (over what
//!   `fromJson` returns, over the labels, over an integer) with `break` and
//!   `continue`; `define`, `template` and `block` are refused at parse time —
//!   a Loki template is a single expression with no way to name others;
//! - every function Loki's function map holds (see [`FUNCTIONS`]).
//!
//! Deterministic by construction: `now` is the time the caller passes in
//! [`TemplateContext::new`] (the query's evaluation time), never the clock,
//! and the server's "local" zone is UTC.
//!
//! A template is parsed once per query ([`Template::parse`]) and rendered per
//! line ([`Template::render_into`] reuses the caller's buffer); label values
//! are borrowed, not copied, until they reach the output, and regular
//! expressions given as literals are compiled once, at parse time.

mod exec;
mod funcs;
mod gotime;
mod parse;
mod printf;
mod value;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use regex::Regex;

/// Every function name a template may call, in Loki's groups: text/template's
/// builtins, Loki's own, and the sprig functions Loki enables.
pub const FUNCTIONS: &[&str] = &[
    "and",
    "or",
    "not",
    "len",
    "index",
    "slice",
    "print",
    "printf",
    "println",
    "html",
    "js",
    "urlquery",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "call",
    "__line__",
    "__timestamp__",
    "ToLower",
    "ToUpper",
    "Replace",
    "Trim",
    "TrimLeft",
    "TrimRight",
    "TrimPrefix",
    "TrimSuffix",
    "TrimSpace",
    "regexReplaceAll",
    "regexReplaceAllLiteral",
    "count",
    "urldecode",
    "urlencode",
    "bytes",
    "duration",
    "duration_seconds",
    "unixEpochMillis",
    "unixEpochNanos",
    "toDateInZone",
    "unixToTime",
    "alignLeft",
    "alignRight",
    "b64dec",
    "b64enc",
    "lower",
    "upper",
    "title",
    "trunc",
    "substr",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "indent",
    "nindent",
    "replace",
    "repeat",
    "trim",
    "trimAll",
    "trimSuffix",
    "trimPrefix",
    "int",
    "float64",
    "add",
    "sub",
    "mul",
    "div",
    "mod",
    "addf",
    "subf",
    "mulf",
    "divf",
    "max",
    "min",
    "maxf",
    "minf",
    "ceil",
    "floor",
    "round",
    "fromJson",
    "date",
    "toDate",
    "now",
    "unixEpoch",
    "default",
];

/// Why a template failed to parse or render. The message is Go's, e.g.
/// `template: line:1: function "foo" not defined`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template text is not a valid template; the query is bad.
    #[error("{0}")]
    Parse(String),
    /// Rendering one entry failed; Loki records this on the entry
    /// (`__error__="TemplateFormatErr"`) and keeps going.
    #[error("{0}")]
    Exec(String),
}

impl From<TemplateError> for crate::Error {
    fn from(error: TemplateError) -> Self {
        match error {
            TemplateError::Parse(message) => crate::Error::bad_data(message),
            TemplateError::Exec(message) => crate::Error::execution(message),
        }
    }
}

/// Label lookup for one entry: the template's data, as Loki's label map.
pub trait LabelLookup {
    /// The label's value, `None` when the entry has no such label.
    fn get(&self, name: &str) -> Option<&str>;

    /// Calls `f` with every label, in any order (callers sort when Go would).
    fn for_each(&self, f: &mut dyn FnMut(&str, &str));
}

impl LabelLookup for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        for (name, value) in self {
            f(name, value);
        }
    }
}

impl<S: std::hash::BuildHasher> LabelLookup for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        for (name, value) in self {
            f(name, value);
        }
    }
}

/// Pairs in any order; lookup is linear, which beats hashing for the
/// handful of labels a log stream has.
impl<const N: usize> LabelLookup for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str)) {
        for (name, value) in self {
            f(name, value);
        }
    }
}

/// What one render sees: the entry's labels, line and time, and the query's
/// notion of "now".
pub struct TemplateContext<'a> {
    labels: &'a dyn LabelLookup,
    line: &'a str,
    timestamp_ns: i64,
    now_ns: i64,
}

impl std::fmt::Debug for TemplateContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateContext")
            .field("line", &self.line)
            .field("timestamp_ns", &self.timestamp_ns)
            .field("now_ns", &self.now_ns)
            .finish_non_exhaustive()
    }
}

impl<'a> TemplateContext<'a> {
    /// `labels` are `.name`; `line` is `__line__`; `timestamp_ns` (Unix
    /// nanoseconds) is `__timestamp__`; `now_ns` is what `now` returns —
    /// pass the query's evaluation time so every line sees the same "now".
    pub fn new(labels: &'a dyn LabelLookup, line: &'a str, timestamp_ns: i64, now_ns: i64) -> Self {
        TemplateContext {
            labels,
            line,
            timestamp_ns,
            now_ns,
        }
    }
}

/// A parsed template, ready to render any number of entries.
pub struct Template {
    name: String,
    source: String,
    root: Vec<parse::Node>,
    /// Literal patterns of `regexReplaceAll`, `regexReplaceAllLiteral` and
    /// `count`, compiled once. Invalid ones are left out: Go reports them
    /// when the call runs, per line, and so does the evaluator.
    regexes: Vec<(Box<str>, Regex)>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("name", &self.name)
            .field("source", &self.source)
            .finish()
    }
}

impl Template {
    /// Parses a `line_format` template (Go names it `line`, which error
    /// messages show).
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        Template::parse_named("line", src)
    }

    /// Parses a template under a name of the caller's choosing; Loki uses
    /// `label` for `label_format`.
    pub fn parse_named(name: &str, src: &str) -> Result<Template, TemplateError> {
        let root = parse::parse(src)
            .map_err(|(line, message)| TemplateError::Parse(format!("template: {name}:{line}: {message}")))?;
        let mut regexes = Vec::new();
        collect_regexes(&root, &mut regexes);
        Ok(Template {
            name: name.to_string(),
            source: src.to_string(),
            root,
            regexes,
        })
    }

    /// The template's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders one entry into a new string.
    pub fn render(&self, ctx: &TemplateContext<'_>) -> Result<String, TemplateError> {
        let mut out = String::new();
        self.render_into(ctx, &mut out)?;
        Ok(out)
    }

    /// Renders one entry, appending to `out` (clear it between lines to
    /// reuse its allocation). On error `out` holds a partial rendering.
    pub fn render_into(&self, ctx: &TemplateContext<'_>, out: &mut String) -> Result<(), TemplateError> {
        exec::render(self, ctx, out)
    }

    /// The label names the template reads as `.name`, sorted and without
    /// duplicates (Loki's `RequiredLabelNames`, for pushing label
    /// extraction down).
    pub fn required_labels(&self) -> Vec<&str> {
        let mut names = Vec::new();
        field_names(&self.root, &mut names);
        names.sort_unstable();
        names.dedup();
        names
    }
}

fn for_each_pipe<'t>(nodes: &'t [parse::Node], f: &mut dyn FnMut(&'t parse::Pipe)) {
    for node in nodes {
        match node {
            parse::Node::Action(pipe) => f(pipe),
            parse::Node::If(branch) | parse::Node::With(branch) | parse::Node::Range(branch) => {
                f(&branch.pipe);
                for_each_pipe(&branch.list, f);
                for_each_pipe(&branch.else_list, f);
            }
            parse::Node::Text(_) | parse::Node::Break | parse::Node::Continue => {}
        }
    }
}

fn for_each_arg<'t>(pipe: &'t parse::Pipe, f: &mut dyn FnMut(&'t parse::Arg, Option<&'t parse::Arg>)) {
    for cmd in &pipe.cmds {
        for (i, arg) in cmd.args.iter().enumerate() {
            let next = cmd.args.get(i + 1);
            f(arg, next);
            match arg {
                parse::Arg::Pipe(inner, _) => for_each_arg(inner, f),
                parse::Arg::Chain(base, _, _) => {
                    if let parse::Arg::Pipe(inner, _) = &**base {
                        for_each_arg(inner, f);
                    }
                }
                _ => {}
            }
        }
    }
}

fn collect_regexes(nodes: &[parse::Node], out: &mut Vec<(Box<str>, Regex)>) {
    for_each_pipe(nodes, &mut |pipe| {
        for_each_arg(pipe, &mut |arg, next| {
            let (parse::Arg::Func(func, _), Some(parse::Arg::Str(pattern, _))) = (arg, next) else {
                return;
            };
            if func.takes_regex()
                && !out.iter().any(|(p, _)| p == pattern)
                && let Ok(regex) = Regex::new(pattern)
            {
                out.push((pattern.clone(), regex));
            }
        });
    });
}

fn field_names<'t>(nodes: &'t [parse::Node], out: &mut Vec<&'t str>) {
    for_each_pipe(nodes, &mut |pipe| {
        for_each_arg(pipe, &mut |arg, _| {
            if let parse::Arg::Field(fields, _) = arg {
                out.extend(fields.iter().map(|f| &**f));
            }
        });
    });
}
