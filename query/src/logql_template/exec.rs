//! Evaluation of a parsed template against one log entry.

use std::borrow::Cow;

use super::funcs::{self, CallEnv, Func, Param};
use super::parse::{Arg, Branch, Command, Node, Number, Pipe, Span};
use super::value::Value;
use super::{Template, TemplateContext, TemplateError};

/// `break`/`continue` travel up to the enclosing `range` as a flow result.
#[derive(Debug, PartialEq)]
enum Flow {
    Normal,
    Break,
    Continue,
}

/// Nesting limit for `(…)` and control structures, so a template cannot
/// overflow the stack; Go's parser stops at 10000 for the same reason.
const MAX_DEPTH: usize = 1000;

pub(super) struct State<'a> {
    template: &'a Template,
    ctx: &'a TemplateContext<'a>,
    env: CallEnv<'a, 'a>,
    vars: Vec<(&'a str, Value<'a>)>,
    depth: usize,
}

impl std::fmt::Debug for State<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("vars", &self.vars.len()).finish()
    }
}

type Result<T> = std::result::Result<T, TemplateError>;

pub(super) fn render<'a>(template: &'a Template, ctx: &'a TemplateContext<'a>, out: &mut String) -> Result<()> {
    let mut state = State {
        template,
        ctx,
        env: CallEnv {
            line: ctx.line,
            timestamp_ns: ctx.timestamp_ns,
            now_ns: ctx.now_ns,
            regexes: &template.regexes,
        },
        vars: Vec::new(),
        depth: 0,
    };
    let dot = Value::Labels(ctx.labels);
    state.walk(&template.root, &dot, out)?;
    Ok(())
}

impl<'a> State<'a> {
    /// Go's execution error: `template: NAME:LINE:COL: executing "NAME" at <CONTEXT>: MESSAGE`.
    fn error(&self, span: Span, message: impl std::fmt::Display) -> TemplateError {
        let src = &self.template.source;
        let start = span.start.min(src.len());
        let line = 1 + src[..start].matches('\n').count();
        let col = start - src[..start].rfind('\n').map_or(0, |i| i + 1);
        let mut context = src.get(span.start..span.end.min(src.len())).unwrap_or("").to_string();
        if context.len() > 20 {
            let mut cut = 20;
            while !context.is_char_boundary(cut) {
                cut -= 1;
            }
            context.truncate(cut);
            context.push_str("...");
        }
        let name = &self.template.name;
        TemplateError::Exec(format!(
            "template: {name}:{line}:{col}: executing \"{name}\" at <{context}>: {message}"
        ))
    }

    fn walk(&mut self, nodes: &'a [Node], dot: &Value<'a>, out: &mut String) -> Result<Flow> {
        for node in nodes {
            let flow = self.walk_node(node, dot, out)?;
            if flow != Flow::Normal {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn walk_node(&mut self, node: &'a Node, dot: &Value<'a>, out: &mut String) -> Result<Flow> {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Action(pipe) => {
                let value = self.pipeline(pipe, dot)?;
                if pipe.decl.is_empty() {
                    value.write_to(out);
                }
            }
            Node::If(branch) | Node::With(branch) => {
                let is_with = matches!(node, Node::With(_));
                let mark = self.vars.len();
                let value = self.pipeline(&branch.pipe, dot)?;
                let flow = if value.is_true() {
                    let inner_dot = if is_with { value } else { dot.clone() };
                    self.nested(|state| state.walk(&branch.list, &inner_dot, out))?
                } else {
                    self.nested(|state| state.walk(&branch.else_list, dot, out))?
                };
                self.vars.truncate(mark);
                return Ok(flow);
            }
            Node::Range(branch) => {
                let mark = self.vars.len();
                let flow = self.range(branch, dot, out);
                self.vars.truncate(mark);
                flow?;
            }
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
        }
        Ok(Flow::Normal)
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= MAX_DEPTH {
            return Err(TemplateError::Exec(format!(
                "template: {}: exceeded maximum template depth ({MAX_DEPTH})",
                self.template.name
            )));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn range(&mut self, branch: &'a Branch, dot: &Value<'a>, out: &mut String) -> Result<()> {
        // The pipeline's own declarations name the key and element, so
        // evaluate it without declaring.
        let value = self.commands(&branch.pipe, dot)?;
        let items: Vec<(Value<'a>, Value<'a>)> = match &value {
            Value::List(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (Value::Int(i as i64), v.clone()))
                .collect(),
            Value::Map(map) => map.iter().map(|(k, v)| (Value::str(k.clone()), v.clone())).collect(),
            Value::Labels(labels) => {
                let mut pairs = Vec::new();
                labels.for_each(&mut |k, v| pairs.push((k.to_string(), v.to_string())));
                pairs.sort_unstable();
                pairs.into_iter().map(|(k, v)| (Value::str(k), Value::str(v))).collect()
            }
            Value::Int(n) | Value::Int64(n) => {
                if branch.pipe.decl.len() > 1 {
                    let span = first_span(&branch.pipe);
                    return Err(self.error(span, "can't use $i, $e with range over int"));
                }
                if *n > funcs::MAX_GENERATED_LEN as i64 {
                    return Err(self.error(first_span(&branch.pipe), format!("range over {n} is too long")));
                }
                (0..*n).map(|i| (Value::Int(i), Value::Int(i))).collect()
            }
            Value::Nil => Vec::new(),
            other => {
                let span = first_span(&branch.pipe);
                return Err(self.error(span, format!("range can't iterate over {}", other.to_go_string())));
            }
        };
        if items.is_empty() {
            self.nested(|state| state.walk(&branch.else_list, dot, out))?;
            return Ok(());
        }
        let mark = self.vars.len();
        for (key, element) in items {
            match branch.pipe.decl.as_slice() {
                [] => {}
                [elem_name] => self.vars.push((elem_name, element.clone())),
                [key_name, elem_name, ..] => {
                    self.vars.push((key_name, key));
                    self.vars.push((elem_name, element.clone()));
                }
            }
            let flow = self.nested(|state| state.walk(&branch.list, &element, out))?;
            self.vars.truncate(mark);
            if flow == Flow::Break {
                break;
            }
        }
        Ok(())
    }

    /// Evaluates a pipeline and applies its declaration or assignment.
    fn pipeline(&mut self, pipe: &'a Pipe, dot: &Value<'a>) -> Result<Value<'a>> {
        let value = self.commands(pipe, dot)?;
        for name in &pipe.decl {
            if pipe.is_assign {
                if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| *n == &**name) {
                    slot.1 = value.clone();
                }
            } else {
                self.vars.push((name, value.clone()));
            }
        }
        Ok(value)
    }

    fn commands(&mut self, pipe: &'a Pipe, dot: &Value<'a>) -> Result<Value<'a>> {
        let mut value: Option<Value<'a>> = None;
        for cmd in &pipe.cmds {
            value = Some(self.command(cmd, dot, value)?);
        }
        Ok(value.unwrap_or(Value::Nil))
    }

    fn command(&mut self, cmd: &'a Command, dot: &Value<'a>, last: Option<Value<'a>>) -> Result<Value<'a>> {
        let first = &cmd.args[0];
        let rest = &cmd.args[1..];
        match first {
            Arg::Field(fields, span) => self.fields(dot.clone(), fields, *span, rest, last, dot),
            Arg::Variable(name, fields, span) if !fields.is_empty() => {
                let base = self.variable(name, *span)?;
                self.fields(base, fields, *span, rest, last, dot)
            }
            Arg::Chain(base, fields, span) => {
                let base = self.nested(|state| state.operand(base, dot))?;
                self.fields(base, fields, *span, rest, last, dot)
            }
            Arg::Func(func, span) => self.call(*func, *span, rest, last, dot),
            _ => {
                if !rest.is_empty() || last.is_some() {
                    let text = self.source(first.span());
                    return Err(self.error(first.span(), format!("can't give argument to non-function {text}")));
                }
                if let Arg::Nil(span) = first {
                    return Err(self.error(*span, "nil is not a command"));
                }
                self.operand(first, dot)
            }
        }
    }

    fn source(&self, span: Span) -> &str {
        self.template.source.get(span.start..span.end).unwrap_or("")
    }

    fn variable(&self, name: &str, span: Span) -> Result<Value<'a>> {
        if name == "$" && !self.vars.iter().any(|(n, _)| *n == "$") {
            return Ok(Value::Labels(self.ctx.labels));
        }
        match self.vars.iter().rev().find(|(n, _)| *n == name) {
            Some((_, value)) => Ok(value.clone()),
            None => Err(self.error(span, format!("undefined variable: {name}"))),
        }
    }

    /// An operand's value without a parameter type in view.
    fn operand(&mut self, arg: &'a Arg, dot: &Value<'a>) -> Result<Value<'a>> {
        match arg {
            Arg::Dot(_) => Ok(dot.clone()),
            Arg::Nil(_) => Ok(Value::Nil),
            Arg::Bool(b, _) => Ok(Value::Bool(*b)),
            Arg::Number(number, span) => self.ideal_number(number, *span),
            Arg::Str(text, _) => Ok(Value::Str(Cow::Borrowed(text))),
            Arg::Field(fields, span) => self.fields(dot.clone(), fields, *span, &[], None, dot),
            Arg::Variable(name, fields, span) => {
                let base = self.variable(name, *span)?;
                self.fields(base, fields, *span, &[], None, dot)
            }
            Arg::Func(func, span) => self.call(*func, *span, &[], None, dot),
            Arg::Chain(base, fields, span) => {
                let base = self.nested(|state| state.operand(base, dot))?;
                self.fields(base, fields, *span, &[], None, dot)
            }
            Arg::Pipe(pipe, _) => {
                let mark = self.vars.len();
                let value = self.nested(|state| state.pipeline(pipe, dot));
                self.vars.truncate(mark);
                value
            }
        }
    }

    /// Go's `idealConstant`: an untyped number as an `interface{}` argument.
    fn ideal_number(&self, number: &Number, span: Span) -> Result<Value<'a>> {
        if number.float_syntax {
            return Ok(Value::Float(number.float.unwrap_or(0.0)));
        }
        match number.int {
            Some(n) => Ok(Value::Int(n)),
            None => Err(self.error(span, format!("{} overflows int", self.source(span)))),
        }
    }

    /// Walks `.a.b.c` from `base`; arguments go to the last element (Go
    /// allows them only for methods).
    fn fields(
        &mut self,
        base: Value<'a>,
        fields: &'a [Box<str>],
        span: Span,
        args: &'a [Arg],
        last: Option<Value<'a>>,
        dot: &Value<'a>,
    ) -> Result<Value<'a>> {
        let mut receiver = base;
        for (i, name) in fields.iter().enumerate() {
            let is_last = i + 1 == fields.len();
            let has_args = is_last && (!args.is_empty() || last.is_some());
            receiver = match receiver {
                Value::Labels(labels) => {
                    if has_args {
                        return Err(self.error(span, format!("{name} is not a method but has arguments")));
                    }
                    Value::Str(Cow::Borrowed(labels.get(name).unwrap_or("")))
                }
                Value::Map(map) => {
                    if has_args {
                        return Err(self.error(span, format!("{name} is not a method but has arguments")));
                    }
                    map.get(&**name).cloned().unwrap_or(Value::Nil)
                }
                Value::Nil => Value::Nil,
                Value::Time(time) => {
                    let method_args = if is_last {
                        let mut values = Vec::with_capacity(args.len() + 1);
                        for arg in args {
                            values.push(self.typed_arg(arg, Param::Str, dot)?);
                        }
                        values.extend(last.clone());
                        values
                    } else {
                        Vec::new()
                    };
                    time_method(&time, name, method_args).map_err(|message| self.error(span, message))?
                }
                other => {
                    return Err(self.error(
                        span,
                        format!("can't evaluate field {name} in type {}", other.type_name()),
                    ));
                }
            };
        }
        Ok(receiver)
    }

    fn call(
        &mut self,
        func: Func,
        span: Span,
        args: &'a [Arg],
        last: Option<Value<'a>>,
        dot: &Value<'a>,
    ) -> Result<Value<'a>> {
        let signature = func.signature();
        let count = args.len() + usize::from(last.is_some());
        let fixed = signature.fixed.len();
        if signature.variadic.is_some() && count < fixed {
            return Err(self.error(
                span,
                format!(
                    "wrong number of args for {}: want at least {fixed} got {count}",
                    func.name()
                ),
            ));
        }
        if signature.variadic.is_none() && count != fixed {
            return Err(self.error(
                span,
                format!("wrong number of args for {}: want {fixed} got {count}", func.name()),
            ));
        }
        if matches!(func, Func::And | Func::Or) {
            // Short-circuit: stop at the first false (and) or true (or) value.
            let mut value = Value::Nil;
            for arg in args {
                value = self.typed_arg(arg, Param::Any, dot)?;
                if value.is_true() == (func == Func::Or) {
                    return Ok(value);
                }
            }
            if let Some(piped) = last {
                value = piped;
            }
            return Ok(value);
        }
        let mut values = Vec::with_capacity(count);
        for (i, arg) in args.iter().enumerate() {
            let param = signature
                .fixed
                .get(i)
                .copied()
                .or(signature.variadic)
                .unwrap_or(Param::Any);
            values.push(self.typed_arg(arg, param, dot)?);
        }
        if let Some(piped) = last {
            let param = signature
                .fixed
                .get(args.len())
                .copied()
                .or(signature.variadic)
                .unwrap_or(Param::Any);
            values.push(self.check_type(piped, param, span)?);
        }
        let name = func.name();
        funcs::call(func, values, &self.env)
            .map_err(|message| self.error(span, format!("error calling {name}: {message}")))
    }

    /// Go's `evalArg`: literals convert to the parameter's type, computed
    /// values must already have it.
    fn typed_arg(&mut self, arg: &'a Arg, param: Param, dot: &Value<'a>) -> Result<Value<'a>> {
        let span = arg.span();
        match (arg, param) {
            (_, Param::Any) => self.operand(arg, dot),
            (Arg::Number(number, _), Param::Int) => match number.int {
                Some(n) => Ok(Value::Int(n)),
                None => Err(self.error(span, format!("expected integer; found {}", self.source(span)))),
            },
            (Arg::Number(number, _), Param::Float) => Ok(Value::Float(number.float.unwrap_or(0.0))),
            (Arg::Number(..), Param::Str) => {
                Err(self.error(span, format!("expected string; found {}", self.source(span))))
            }
            (Arg::Str(..), Param::Int) => {
                Err(self.error(span, format!("expected integer; found {}", self.source(span))))
            }
            (Arg::Str(..), Param::Float) => {
                Err(self.error(span, format!("expected float; found {}", self.source(span))))
            }
            (Arg::Bool(..) | Arg::Str(..) | Arg::Number(..), Param::Time) | (Arg::Bool(..), _) => Err(self.error(
                span,
                format!("can't handle {} for arg of type {}", self.source(span), param.go_name()),
            )),
            (Arg::Nil(_), _) => Err(self.error(span, format!("cannot assign nil to {}", param.go_name()))),
            _ => {
                let value = self.operand(arg, dot)?;
                self.check_type(value, param, span)
            }
        }
    }

    fn check_type(&self, value: Value<'a>, param: Param, span: Span) -> Result<Value<'a>> {
        let fits = match (&value, param) {
            (_, Param::Any) => true,
            (Value::Str(_), Param::Str) => true,
            (Value::Int(_), Param::Int) => true,
            (Value::Float(_), Param::Float) => true,
            (Value::Time(_), Param::Time) => true,
            (Value::Nil, _) => {
                return Err(self.error(span, format!("invalid value; expected {}", param.go_name())));
            }
            _ => false,
        };
        if !fits {
            return Err(self.error(
                span,
                format!(
                    "wrong type for value; expected {}; got {}",
                    param.go_name(),
                    value.type_name()
                ),
            ));
        }
        Ok(value)
    }
}

fn first_span(pipe: &Pipe) -> Span {
    pipe.cmds
        .first()
        .map_or(Span { start: 0, end: 0 }, |cmd| cmd.args[0].span())
}

/// The `time.Time` methods a template can call on `__timestamp__`, `now`
/// and dates: `{{ (__timestamp__).Unix }}`, `{{ now.Format "15:04" }}`.
fn time_method<'a>(
    time: &super::gotime::GoTime,
    name: &str,
    args: Vec<Value<'a>>,
) -> std::result::Result<Value<'a>, String> {
    use chrono::{Datelike, Timelike};
    let want = usize::from(name == "Format");
    if args.len() != want {
        return Err(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        ));
    }
    let civil = chrono::DateTime::from_timestamp(time.secs.saturating_add(i64::from(time.offset)), time.nanos)
        .map(|t| t.naive_utc())
        .unwrap_or_default();
    Ok(match name {
        "Unix" => Value::Int64(time.unix()),
        "UnixMilli" => Value::Int64(time.unix_millis()),
        "UnixMicro" => Value::Int64(
            time.secs
                .saturating_mul(1_000_000)
                .saturating_add(i64::from(time.nanos / 1000)),
        ),
        "UnixNano" => Value::Int64(time.unix_nanos()),
        "Year" => Value::Int(i64::from(civil.year())),
        "YearDay" => Value::Int(i64::from(civil.ordinal())),
        "Day" => Value::Int(i64::from(civil.day())),
        "Hour" => Value::Int(i64::from(civil.hour())),
        "Minute" => Value::Int(i64::from(civil.minute())),
        "Second" => Value::Int(i64::from(civil.second())),
        "Nanosecond" => Value::Int(i64::from(time.nanos)),
        "UTC" | "Local" => Value::Time(std::rc::Rc::new(time.in_utc())),
        "IsZero" => Value::Bool(*time == super::gotime::GoTime::zero()),
        "String" => Value::str(time.to_go_string()),
        "Format" => match &args[0] {
            Value::Str(layout) => Value::str(super::gotime::format(time, layout)),
            _ => return Err("wrong type for value; expected string".to_string()),
        },
        _ => return Err(format!("can't evaluate field {name} in type time.Time")),
    })
}
