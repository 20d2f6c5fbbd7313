//! LogQL's parser: recursive descent over Loki's yacc grammar.
//!
//! Loki reports two kinds of errors, and the order between them is visible:
//!
//! - syntax and lexical errors stop the parse at the offending token and
//!   carry its position;
//! - checks on what was parsed (a literal that is not a float, `topk(1.5,…)`,
//!   a range aggregation without the `unwrap` it needs, a selector whose
//!   matchers all match the empty string) run only once the whole query has
//!   parsed, walking the tree parent first, left to right.
//!
//! So every node is built together with the first check failure of its
//! subtree ([`Deferred`]) and the failure is raised only after the last
//! token. Regexes (in matchers, `| regexp`, `| pattern`) are compiled while
//! parsing, as Loki does, so their errors are immediate — and unpositioned,
//! as Loki's are.

use regex::Regex;
use tidewatch_model::{MatchOp, Matcher};

use super::ParseError;
use super::ast::*;
use super::lexer::{Tok, Token, lex, parse_go_float};

/// Loki refuses queries of this many bytes or more.
pub const MAX_INPUT_SIZE: usize = 131_072;

type PResult<T> = Result<T, ParseError>;

/// The first post-parse check that failed in a subtree, in Loki's order.
type Deferred = Option<ParseError>;

const ERR_EMPTY_COMPATIBLE_SELECTOR: &str = "queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will";

pub(crate) fn parse(input: &str) -> Result<Expr, ParseError> {
    if input.len() >= MAX_INPUT_SIZE {
        return Err(ParseError::unpositioned(format!(
            "input size too long ({} > {MAX_INPUT_SIZE})",
            input.len()
        )));
    }
    let mut parser = Parser {
        tokens: lex(input),
        at: 0,
    };
    let (expr, deferred) = parser.expr(0)?;
    if *parser.peek()? != Tok::Eof {
        return Err(parser.unexpected(&[]));
    }
    if let Some(error) = deferred {
        return Err(error);
    }
    if let Expr::Log(log) = &expr
        && let Some(error) = check_selector(&log.matchers)
    {
        return Err(error);
    }
    Ok(expr)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    // -- token access -------------------------------------------------------

    fn token(&self, offset: usize) -> &Token {
        let last = self.tokens.len() - 1;
        &self.tokens[(self.at + offset).min(last)]
    }

    /// The next token; a lexical error is raised when the parser reaches it.
    fn peek(&self) -> PResult<&Tok> {
        self.peek_at(0)
    }

    fn peek_at(&self, offset: usize) -> PResult<&Tok> {
        let token = self.token(offset);
        match &token.tok {
            Tok::Invalid(message) => Err(ParseError::at(token.pos, message.clone())),
            tok => Ok(tok),
        }
    }

    fn bump(&mut self) -> Tok {
        let tok = self.token(0).tok.clone();
        if self.at < self.tokens.len() - 1 {
            self.at += 1;
        }
        tok
    }

    fn is(&self, tok: &Tok) -> PResult<bool> {
        Ok(self.peek()? == tok)
    }

    /// `syntax error: unexpected X[, expecting A or B]` at the next token,
    /// or the lexical error that token carries.
    fn unexpected(&self, expecting: &[&str]) -> ParseError {
        let token = self.token(0);
        if let Tok::Invalid(message) = &token.tok {
            return ParseError::at(token.pos, message.clone());
        }
        let mut message = format!("syntax error: unexpected {}", token.tok.describe());
        if !expecting.is_empty() {
            message.push_str(", expecting ");
            message.push_str(&expecting.join(" or "));
        }
        ParseError::at(token.pos, message)
    }

    fn expect(&mut self, tok: Tok) -> PResult<()> {
        if self.is(&tok)? {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected(&[]))
        }
    }

    fn expect_with(&mut self, tok: Tok, expecting: &[&str]) -> PResult<()> {
        if self.is(&tok)? {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected(expecting))
        }
    }

    fn identifier(&mut self, expecting: &[&str]) -> PResult<String> {
        match self.peek()? {
            Tok::Ident(name) => {
                let name = name.clone();
                self.bump();
                Ok(name)
            }
            _ => Err(self.unexpected(expecting)),
        }
    }

    fn string(&mut self, expecting: &[&str]) -> PResult<String> {
        match self.peek()? {
            Tok::Str(value) => {
                let value = value.clone();
                self.bump();
                Ok(value)
            }
            _ => Err(self.unexpected(expecting)),
        }
    }

    // -- expressions -------------------------------------------------------

    /// Precedence climbing over the binary operators; `min` is the weakest
    /// operator this call may consume.
    fn expr(&mut self, min: u8) -> PResult<(Expr, Deferred)> {
        let (mut lhs, mut deferred) = self.operand()?;
        while let Some(op) = binary_op(self.peek()?) {
            let precedence = op.precedence();
            if precedence < min {
                break;
            }
            self.bump();
            let (return_bool, matching) = self.binary_modifier()?;
            let next_min = if op.is_right_associative() {
                precedence
            } else {
                precedence + 1
            };
            let (rhs, rhs_deferred) = self.expr(next_min)?;
            let (binary, own) = make_binary(op, lhs, &deferred, rhs, &rhs_deferred, return_bool, matching);
            lhs = Expr::Metric(binary);
            deferred = own.or(deferred).or(rhs_deferred);
        }
        Ok((lhs, deferred))
    }

    fn operand(&mut self) -> PResult<(Expr, Deferred)> {
        match self.peek()? {
            Tok::OpenBrace => Ok((Expr::Log(self.log_expr(false)?), None)),
            Tok::OpenParen => {
                self.bump();
                let inner = self.expr(0)?;
                self.expect(Tok::CloseParen)?;
                Ok(inner)
            }
            Tok::Number(_) | Tok::Add | Tok::Sub => {
                let (value, deferred) = self.literal()?;
                Ok((Expr::Metric(MetricExpr::Literal(value)), deferred))
            }
            Tok::RangeOp(_) => self.range_aggregation(),
            Tok::VectorOp(_) => self.vector_aggregation(),
            Tok::Vector => self.vector(),
            Tok::LabelReplace => self.label_replace(),
            _ => Err(self.unexpected(&[])),
        }
    }

    /// Where the grammar wants a metric expression: a log query there is a
    /// syntax error at the token after it, as in Loki's parser.
    fn metric_expr(&mut self) -> PResult<(MetricExpr, Deferred)> {
        match self.expr(0)? {
            (Expr::Metric(metric), deferred) => Ok((metric, deferred)),
            (Expr::Log(_), _) => Err(self.unexpected(&[])),
        }
    }

    /// `NUMBER`, `+NUMBER` or `-NUMBER`: one literal, sign included.
    fn literal(&mut self) -> PResult<(f64, Deferred)> {
        let negative = match self.peek()? {
            Tok::Add => {
                self.bump();
                false
            }
            Tok::Sub => {
                self.bump();
                true
            }
            _ => false,
        };
        let Tok::Number(text) = self.peek()?.clone() else {
            return Err(self.unexpected(&["NUMBER"]));
        };
        self.bump();
        match parse_go_float(&text) {
            Ok(value) => Ok((if negative { -value } else { value }, None)),
            Err(error) => Ok((
                f64::NAN,
                Some(ParseError::unpositioned(format!(
                    "unable to parse literal as a float: {error}"
                ))),
            )),
        }
    }

    fn binary_modifier(&mut self) -> PResult<(bool, Option<VectorMatching>)> {
        let return_bool = self.is(&Tok::Bool)?;
        if return_bool {
            self.bump();
        }
        let on = match self.peek()? {
            Tok::On => true,
            Tok::Ignoring => false,
            _ => return Ok((return_bool, None)),
        };
        self.bump();
        let labels = self.label_list()?;
        let group = match self.peek()? {
            Tok::GroupLeft | Tok::GroupRight => {
                let left = self.bump() == Tok::GroupLeft;
                let include = if self.is(&Tok::OpenParen)? {
                    self.label_list()?
                } else {
                    Vec::new()
                };
                Some(if left {
                    MatchGroup::Left(include)
                } else {
                    MatchGroup::Right(include)
                })
            }
            _ => None,
        };
        Ok((return_bool, Some(VectorMatching { on, labels, group })))
    }

    /// `( a, b )`, possibly empty.
    fn label_list(&mut self) -> PResult<Vec<String>> {
        self.expect(Tok::OpenParen)?;
        let mut labels = Vec::new();
        if self.is(&Tok::CloseParen)? {
            self.bump();
            return Ok(labels);
        }
        labels.push(self.identifier(&["IDENTIFIER", ")"])?);
        loop {
            match self.peek()? {
                Tok::Comma => {
                    self.bump();
                    labels.push(self.identifier(&["IDENTIFIER"])?);
                }
                Tok::CloseParen => {
                    self.bump();
                    return Ok(labels);
                }
                _ => return Err(self.unexpected(&[",", ")"])),
            }
        }
    }

    fn grouping(&mut self) -> PResult<Option<Grouping>> {
        let without = match self.peek()? {
            Tok::By => false,
            Tok::Without => true,
            _ => return Ok(None),
        };
        self.bump();
        let labels = self.label_list()?;
        Ok(Some(Grouping { without, labels }))
    }

    fn range_aggregation(&mut self) -> PResult<(Expr, Deferred)> {
        let Tok::RangeOp(op) = self.bump() else {
            unreachable!("range_aggregation is entered on a range operation");
        };
        self.expect_with(Tok::OpenParen, &["("])?;
        let param = match self.peek()? {
            Tok::Number(text) => {
                let text = text.clone();
                self.bump();
                self.expect_with(Tok::Comma, &[","])?;
                Some(text)
            }
            _ => None,
        };
        let range = self.log_range(param.is_some())?;
        self.expect(Tok::CloseParen)?;
        let grouping = self.grouping()?;

        let mut deferred = None;
        let mut value = None;
        match (&param, op) {
            (Some(text), RangeOp::QuantileOverTime) => match parse_go_float(text) {
                Ok(v) => value = Some(v),
                Err(error) => {
                    deferred = Some(format!("invalid parameter for operation {}: {error}", op.as_str()));
                }
            },
            (Some(text), _) => {
                deferred = Some(format!("parameter {text} not supported for operation {}", op.as_str()));
            }
            (None, RangeOp::QuantileOverTime) => {
                deferred = Some(format!("parameter required for operation {}", op.as_str()));
            }
            (None, _) => {}
        }
        if deferred.is_none() {
            deferred = check_range_aggregation(op, grouping.is_some(), range.unwrap.is_some());
        }
        let deferred = deferred
            .map(ParseError::unpositioned)
            .or_else(|| check_selector(&range.log.matchers));
        let aggregation = RangeAggregation {
            op,
            param: value,
            range,
            grouping,
        };
        Ok((Expr::Metric(MetricExpr::RangeAggregation(aggregation)), deferred))
    }

    fn vector_aggregation(&mut self) -> PResult<(Expr, Deferred)> {
        let Tok::VectorOp(op) = self.bump() else {
            unreachable!("vector_aggregation is entered on a vector operation");
        };
        let leading = self.grouping()?;
        self.expect_with(Tok::OpenParen, &["("])?;
        let param = match (self.peek()?, self.peek_at(1)?) {
            (Tok::Number(text), Tok::Comma) => {
                let text = text.clone();
                self.bump();
                self.bump();
                Some(text)
            }
            _ => None,
        };
        let (inner, inner_deferred) = self.metric_expr()?;
        self.expect(Tok::CloseParen)?;
        let grouping = match leading {
            Some(grouping) => Some(grouping),
            None => self.grouping()?,
        };

        let name = op.as_str();
        let mut k = None;
        let own = if op.takes_param() {
            match &param {
                None => Some(format!("parameter required for operation {name}")),
                // Go's Atoi: decimal digits only.
                Some(text) => match text.parse::<i64>() {
                    Err(_) => Some(format!("invalid parameter {name}({text},")),
                    Ok(value) if value <= 0 => {
                        Some(format!("invalid parameter (must be greater than 0) {name}({text}"))
                    }
                    Ok(_) if op == VectorOp::ApproxTopk && grouping.is_some() => {
                        Some(format!("grouping not allowed for {name} aggregation"))
                    }
                    Ok(value) => {
                        k = Some(value);
                        None
                    }
                },
            }
        } else {
            param
                .as_ref()
                .map(|text| format!("unsupported parameter for operation {name}({text},"))
        };
        let sort_grouped = matches!(op, VectorOp::Sort | VectorOp::SortDesc)
            && grouping.as_ref().is_some_and(|g| !g.labels.is_empty());
        let own = own.or_else(|| sort_grouped.then(|| "sort and sort_desc doesn't allow grouping by ".to_string()));
        let deferred = own.map(ParseError::unpositioned).or(inner_deferred);
        let aggregation = VectorAggregation {
            op,
            param: k,
            expr: Box::new(inner),
            grouping,
        };
        Ok((Expr::Metric(MetricExpr::VectorAggregation(aggregation)), deferred))
    }

    fn vector(&mut self) -> PResult<(Expr, Deferred)> {
        self.bump();
        self.expect_with(Tok::OpenParen, &["("])?;
        let Tok::Number(text) = self.peek()?.clone() else {
            return Err(self.unexpected(&["NUMBER"]));
        };
        self.bump();
        self.expect(Tok::CloseParen)?;
        match parse_go_float(&text) {
            Ok(value) => Ok((Expr::Metric(MetricExpr::Vector(value)), None)),
            Err(error) => Ok((
                Expr::Metric(MetricExpr::Vector(f64::NAN)),
                Some(ParseError::unpositioned(format!(
                    "unable to parse vectorExpr as a float: {error}"
                ))),
            )),
        }
    }

    fn label_replace(&mut self) -> PResult<(Expr, Deferred)> {
        self.bump();
        self.expect_with(Tok::OpenParen, &["("])?;
        let (inner, inner_deferred) = self.metric_expr()?;
        self.expect(Tok::Comma)?;
        let mut args = Vec::with_capacity(4);
        for i in 0..4 {
            args.push(self.string(&["STRING"])?);
            if i < 3 {
                self.expect_with(Tok::Comma, &[","])?;
            }
        }
        self.expect_with(Tok::CloseParen, &[")"])?;
        let [dst, replacement, src, regex]: [String; 4] = args.try_into().unwrap_or_else(|_| unreachable!());
        let own = Regex::new(&format!("^(?:{regex})$")).err().map(|e| {
            ParseError::unpositioned(format!("invalid regex in label_replace: {}", regex_message(&e, &regex)))
        });
        let expr = LabelReplace {
            expr: Box::new(inner),
            dst,
            replacement,
            src,
            regex,
        };
        Ok((Expr::Metric(MetricExpr::LabelReplace(expr)), own.or(inner_deferred)))
    }

    // -- log ranges ----------------------------------------------------------

    /// The argument of a range aggregation, in all the spellings Loki takes:
    /// `{…} | p | unwrap x [5m] offset 1m`, `{…}[5m] offset 1m | p | unwrap x`,
    /// `({…} | p | unwrap x)[5m] offset 1m`, and any of them in parentheses.
    fn log_range(&mut self, after_param: bool) -> PResult<LogRange> {
        match self.peek()? {
            Tok::OpenBrace => {
                let log = self.log_expr(true)?;
                let unwrap = self.unwrap()?;
                self.finish_log_range(log, unwrap)
            }
            Tok::OpenParen => {
                self.bump();
                if self.is(&Tok::OpenParen)? {
                    let inner = self.log_range(false)?;
                    self.expect(Tok::CloseParen)?;
                    return Ok(inner);
                }
                if !self.is(&Tok::OpenBrace)? {
                    return Err(self.unexpected(&[]));
                }
                let log = self.log_expr(true)?;
                let unwrap = self.unwrap()?;
                if self.is(&Tok::CloseParen)? {
                    self.bump();
                    let range = self.range()?;
                    let offset = self.offset()?;
                    return Ok(LogRange {
                        log,
                        range,
                        offset,
                        unwrap,
                    });
                }
                let range = self.finish_log_range(log, unwrap)?;
                self.expect(Tok::CloseParen)?;
                Ok(range)
            }
            _ if after_param => Err(self.unexpected(&["{", "("])),
            _ => Err(self.unexpected(&["NUMBER", "{", "("])),
        }
    }

    /// After the selector (and maybe a pipeline and unwrap): `[range]`, then
    /// an offset, then — only if nothing came before the range — a pipeline.
    fn finish_log_range(&mut self, mut log: LogExpr, mut unwrap: Option<Unwrap>) -> PResult<LogRange> {
        let range = self.range()?;
        let offset = self.offset()?;
        if log.pipeline.is_empty() && unwrap.is_none() {
            log.pipeline = self.pipeline(true)?;
            unwrap = self.unwrap()?;
        }
        Ok(LogRange {
            log,
            range,
            offset,
            unwrap,
        })
    }

    fn range(&mut self) -> PResult<Duration> {
        match self.peek()? {
            Tok::Range(range) => {
                let range = *range;
                self.bump();
                Ok(range)
            }
            _ => Err(self.unexpected(&[])),
        }
    }

    fn offset(&mut self) -> PResult<Option<Duration>> {
        if !self.is(&Tok::Offset)? {
            return Ok(None);
        }
        self.bump();
        match self.peek()? {
            Tok::Duration(offset) => {
                let offset = *offset;
                self.bump();
                Ok(Some(offset))
            }
            _ => Err(self.unexpected(&["DURATION"])),
        }
    }

    fn unwrap(&mut self) -> PResult<Option<Unwrap>> {
        if !(self.is(&Tok::Pipe)? && *self.peek_at(1)? == Tok::Unwrap) {
            return Ok(None);
        }
        self.bump();
        self.bump();
        let (label, conversion) = match self.peek()?.clone() {
            Tok::Ident(label) => {
                self.bump();
                (label, None)
            }
            Tok::Conv(conversion) => {
                self.bump();
                self.expect(Tok::OpenParen)?;
                let label = self.identifier(&["IDENTIFIER"])?;
                self.expect(Tok::CloseParen)?;
                (label, Some(conversion))
            }
            _ => return Err(self.unexpected(&[])),
        };
        let mut post_filters = Vec::new();
        while self.is(&Tok::Pipe)? {
            self.bump();
            post_filters.push(self.label_filter()?);
        }
        Ok(Some(Unwrap {
            label,
            conversion,
            post_filters,
        }))
    }

    // -- log queries ---------------------------------------------------------

    /// A selector and its pipeline. `in_range`: a `| unwrap` may follow (the
    /// caller reads it); elsewhere it is a syntax error.
    fn log_expr(&mut self, in_range: bool) -> PResult<LogExpr> {
        let matchers = self.selector()?;
        let pipeline = self.pipeline(in_range)?;
        Ok(LogExpr { matchers, pipeline })
    }

    fn selector(&mut self) -> PResult<Vec<Matcher>> {
        self.expect(Tok::OpenBrace)?;
        let mut matchers = Vec::new();
        if self.is(&Tok::CloseBrace)? {
            self.bump();
            return Ok(matchers);
        }
        loop {
            matchers.push(self.matcher()?);
            match self.peek()? {
                Tok::Comma => {
                    self.bump();
                }
                Tok::CloseBrace => {
                    self.bump();
                    return Ok(matchers);
                }
                _ => return Err(self.unexpected(&["}", ","])),
            }
        }
    }

    fn matcher(&mut self) -> PResult<Matcher> {
        let name = self.identifier(&[])?;
        let op = match self.peek()? {
            Tok::Eq => MatchOp::Equal,
            Tok::Neq => MatchOp::NotEqual,
            Tok::Re => MatchOp::RegexMatch,
            Tok::Nre => MatchOp::RegexNoMatch,
            _ => return Err(self.unexpected(&[])),
        };
        self.bump();
        let value = self.string(&["STRING"])?;
        new_matcher(op, name, value)
    }

    fn pipeline(&mut self, in_range: bool) -> PResult<Vec<Stage>> {
        let mut stages = Vec::new();
        loop {
            let op = match self.peek()? {
                Tok::PipeExact => LineFilterOp::Contains,
                Tok::Neq => LineFilterOp::NotContains,
                Tok::PipeMatch => LineFilterOp::Regex,
                Tok::Nre => LineFilterOp::NotRegex,
                Tok::PipePattern => LineFilterOp::Pattern,
                Tok::Npa => LineFilterOp::NotPattern,
                Tok::Pipe => {
                    if *self.peek_at(1)? == Tok::Unwrap && in_range {
                        return Ok(stages);
                    }
                    self.bump();
                    stages.push(self.stage_after_pipe()?);
                    continue;
                }
                _ => return Ok(stages),
            };
            self.bump();
            stages.push(Stage::LineFilter(self.line_filter(op)?));
        }
    }

    fn line_filter(&mut self, op: LineFilterOp) -> PResult<LineFilter> {
        let mut values = vec![self.line_filter_value()?];
        while self.is(&Tok::Or)? {
            self.bump();
            values.push(self.line_filter_value()?);
        }
        Ok(LineFilter { op, values })
    }

    fn line_filter_value(&mut self) -> PResult<LineFilterValue> {
        match self.peek()?.clone() {
            Tok::Str(text) => {
                self.bump();
                Ok(LineFilterValue::Text(text))
            }
            Tok::Ip => {
                self.bump();
                self.expect(Tok::OpenParen)?;
                let ip = self.string(&["STRING"])?;
                self.expect(Tok::CloseParen)?;
                Ok(LineFilterValue::Ip(ip))
            }
            _ => Err(self.unexpected(&["STRING", "ip"])),
        }
    }

    fn stage_after_pipe(&mut self) -> PResult<Stage> {
        let stage = match self.peek()? {
            Tok::Logfmt => {
                self.bump();
                let (mut strict, mut keep_empty) = (false, false);
                while let Tok::Flag(flag) = self.peek()? {
                    if flag == "--strict" {
                        strict = true;
                    } else {
                        keep_empty = true;
                    }
                    self.bump();
                }
                Stage::Logfmt {
                    strict,
                    keep_empty,
                    extractions: self.extractions()?,
                }
            }
            Tok::Json => {
                self.bump();
                Stage::Json {
                    extractions: self.extractions()?,
                }
            }
            Tok::Regexp => {
                self.bump();
                let pattern = self.string(&["STRING"])?;
                check_regexp_parser(&pattern)?;
                Stage::Regexp(pattern)
            }
            Tok::Pattern => {
                self.bump();
                let pattern = self.string(&["STRING"])?;
                check_pattern_parser(&pattern)?;
                Stage::Pattern(pattern)
            }
            Tok::Unpack => {
                self.bump();
                Stage::Unpack
            }
            Tok::LineFmt => {
                self.bump();
                Stage::LineFormat(self.string(&["STRING"])?)
            }
            Tok::Decolorize => {
                self.bump();
                Stage::Decolorize
            }
            Tok::LabelFmt => {
                self.bump();
                Stage::LabelFormat(self.label_formats()?)
            }
            Tok::Drop => {
                self.bump();
                Stage::Drop(self.named_matchers()?)
            }
            Tok::Keep => {
                self.bump();
                Stage::Keep(self.named_matchers()?)
            }
            Tok::Ident(_) | Tok::OpenParen => Stage::LabelFilter(self.label_filter()?),
            _ => return Err(self.unexpected(&[])),
        };
        Ok(stage)
    }

    /// `a="path", b`: parser parameters, or nothing.
    fn extractions(&mut self) -> PResult<Vec<LabelExtraction>> {
        let mut extractions = Vec::new();
        if !matches!(self.peek()?, Tok::Ident(_)) {
            return Ok(extractions);
        }
        loop {
            let label = self.identifier(&["IDENTIFIER"])?;
            let expression = if self.is(&Tok::Eq)? {
                self.bump();
                self.string(&["STRING"])?
            } else {
                label.clone()
            };
            extractions.push(LabelExtraction { label, expression });
            if !self.is(&Tok::Comma)? {
                return Ok(extractions);
            }
            self.bump();
        }
    }

    fn label_formats(&mut self) -> PResult<Vec<LabelFormat>> {
        let mut formats = Vec::new();
        loop {
            let dst = self.identifier(&["IDENTIFIER"])?;
            self.expect_with(Tok::Eq, &["="])?;
            let format = match self.peek()?.clone() {
                Tok::Ident(src) => LabelFormat::Rename { dst, src },
                Tok::Str(template) => LabelFormat::Template { dst, template },
                _ => return Err(self.unexpected(&["IDENTIFIER", "STRING"])),
            };
            self.bump();
            formats.push(format);
            if !self.is(&Tok::Comma)? {
                return Ok(formats);
            }
            self.bump();
        }
    }

    fn named_matchers(&mut self) -> PResult<Vec<NamedMatcher>> {
        let mut items = Vec::new();
        loop {
            let is_matcher = matches!(self.peek()?, Tok::Ident(_))
                && matches!(self.peek_at(1)?, Tok::Eq | Tok::Neq | Tok::Re | Tok::Nre);
            if is_matcher {
                items.push(NamedMatcher::Matcher(self.matcher()?));
            } else {
                items.push(NamedMatcher::Name(self.identifier(&["IDENTIFIER"])?));
            }
            if !self.is(&Tok::Comma)? {
                return Ok(items);
            }
            self.bump();
        }
    }

    // -- label filters -------------------------------------------------------

    fn label_filter(&mut self) -> PResult<LabelFilter> {
        self.label_filter_min(0)
    }

    /// `or` (weakest, left-associative) and `and` (left-associative); each
    /// operand may extend with `,`/juxtaposition, see [`Self::label_filter_operand`].
    fn label_filter_min(&mut self, min: u8) -> PResult<LabelFilter> {
        let mut left = self.label_filter_operand()?;
        loop {
            match self.peek()? {
                Tok::Or if min <= 1 => {
                    self.bump();
                    let right = self.label_filter_min(2)?;
                    left = LabelFilter::Or {
                        left: Box::new(left),
                        right: Box::new(right),
                    };
                }
                Tok::And if min <= 2 => {
                    self.bump();
                    let right = self.label_filter_min(3)?;
                    left = LabelFilter::And {
                        left: Box::new(left),
                        right: Box::new(right),
                        kind: AndKind::Keyword,
                    };
                }
                _ => return Ok(left),
            }
        }
    }

    /// A filter, and — when `,` or another filter follows — everything after
    /// it as the right operand: Loki's grammar gives `,` and juxtaposition no
    /// precedence, so its parser always shifts and they group to the right.
    fn label_filter_operand(&mut self) -> PResult<LabelFilter> {
        let filter = self.label_filter_primary()?;
        let joined = match self.peek()? {
            Tok::Comma => {
                self.bump();
                true
            }
            Tok::Ident(_) | Tok::OpenParen => true,
            _ => false,
        };
        if !joined {
            return Ok(filter);
        }
        let rest = self.label_filter_min(0)?;
        Ok(LabelFilter::And {
            left: Box::new(filter),
            right: Box::new(rest),
            kind: AndKind::Comma,
        })
    }

    fn label_filter_primary(&mut self) -> PResult<LabelFilter> {
        if self.is(&Tok::OpenParen)? {
            self.bump();
            let inner = self.label_filter()?;
            self.expect(Tok::CloseParen)?;
            return Ok(inner);
        }
        let name = self.identifier(&[])?;
        let op_tok = self.peek()?.clone();
        let (cmp, match_op) = match op_tok {
            Tok::Eq => (CmpOp::Eq, Some(MatchOp::Equal)),
            Tok::Neq => (CmpOp::Ne, Some(MatchOp::NotEqual)),
            Tok::Re => (CmpOp::Eq, Some(MatchOp::RegexMatch)),
            Tok::Nre => (CmpOp::Eq, Some(MatchOp::RegexNoMatch)),
            Tok::CmpEq => (CmpOp::Eq, None),
            Tok::Gt => (CmpOp::Gt, None),
            Tok::Gte => (CmpOp::Ge, None),
            Tok::Lt => (CmpOp::Lt, None),
            Tok::Lte => (CmpOp::Le, None),
            _ => return Err(self.unexpected(&[])),
        };
        self.bump();
        let regex_op = matches!(op_tok, Tok::Re | Tok::Nre);
        let equality_op = matches!(op_tok, Tok::Eq | Tok::Neq);
        match self.peek()?.clone() {
            Tok::Str(value) if match_op.is_some() => {
                self.bump();
                let op = match_op.unwrap_or(MatchOp::Equal);
                Ok(LabelFilter::Matcher(new_matcher(op, name, value)?))
            }
            Tok::Ip if equality_op => {
                self.bump();
                self.expect(Tok::OpenParen)?;
                let pattern = self.string(&["STRING"])?;
                self.expect(Tok::CloseParen)?;
                Ok(LabelFilter::Ip {
                    name,
                    negated: op_tok == Tok::Neq,
                    pattern,
                })
            }
            Tok::Duration(value) if !regex_op => {
                self.bump();
                Ok(LabelFilter::Duration { name, op: cmp, value })
            }
            Tok::Bytes(value) if !regex_op => {
                self.bump();
                Ok(LabelFilter::Bytes { name, op: cmp, value })
            }
            Tok::Number(_) | Tok::Add | Tok::Sub if !regex_op => {
                // Loki converts this literal while parsing, so its error is immediate.
                let (value, deferred) = self.literal()?;
                if let Some(error) = deferred {
                    return Err(error);
                }
                Ok(LabelFilter::Number { name, op: cmp, value })
            }
            _ => Err(self.unexpected(&[])),
        }
    }
}

fn binary_op(tok: &Tok) -> Option<BinaryOp> {
    Some(match tok {
        Tok::Or => BinaryOp::Or,
        Tok::And => BinaryOp::And,
        Tok::Unless => BinaryOp::Unless,
        Tok::CmpEq => BinaryOp::Eq,
        Tok::Neq => BinaryOp::Ne,
        Tok::Gt => BinaryOp::Gt,
        Tok::Gte => BinaryOp::Ge,
        Tok::Lt => BinaryOp::Lt,
        Tok::Lte => BinaryOp::Le,
        Tok::Add => BinaryOp::Add,
        Tok::Sub => BinaryOp::Sub,
        Tok::Mul => BinaryOp::Mul,
        Tok::Div => BinaryOp::Div,
        Tok::Mod => BinaryOp::Mod,
        Tok::Pow => BinaryOp::Pow,
        _ => return None,
    })
}

/// Builds a binary expression and its own check failure, in Loki's order:
/// a log query as an operand, then an operand literal that is not a float,
/// then a literal operand of `and`/`or`/`unless`.
fn make_binary(
    op: BinaryOp,
    lhs: Expr,
    lhs_deferred: &Deferred,
    rhs: Expr,
    rhs_deferred: &Deferred,
    return_bool: bool,
    matching: Option<VectorMatching>,
) -> (MetricExpr, Deferred) {
    let leg_type = |side: &str, leg: &Expr| match leg {
        Expr::Log(log) => {
            // Loki names the Go type of the operand it did not expect.
            let type_name = if log.pipeline.is_empty() {
                "*syntax.MatchersExpr"
            } else {
                "*syntax.PipelineExpr"
            };
            Some(ParseError::unpositioned(format!(
                "unexpected type for {side} leg of binary operation ({}): {type_name}",
                op.as_str()
            )))
        }
        Expr::Metric(_) => None,
    };
    let mut own = leg_type("left", &lhs).or_else(|| leg_type("right", &rhs));
    let into_metric = |leg: Expr| match leg {
        Expr::Metric(metric) => metric,
        // Never returned: the error above fails the parse.
        Expr::Log(_) => MetricExpr::Literal(0.0),
    };
    let lhs = into_metric(lhs);
    let rhs = into_metric(rhs);
    if own.is_none() {
        if matches!(lhs, MetricExpr::Literal(_)) && lhs_deferred.is_some() {
            own = lhs_deferred.clone();
        } else if matches!(rhs, MetricExpr::Literal(_)) && rhs_deferred.is_some() {
            own = rhs_deferred.clone();
        }
    }
    if own.is_none() && op.is_set_operator() {
        for (side, leg) in [("left", &lhs), ("right", &rhs)] {
            if let Some(value) = literal_value(leg) {
                own = Some(ParseError::unpositioned(format!(
                    "unexpected literal for {side} leg of logical/set binary operation ({}): {}",
                    op.as_str(),
                    go_float_f(value)
                )));
                break;
            }
        }
    }
    let binary = MetricExpr::Binary(BinaryExpr {
        op,
        lhs: Box::new(lhs),
        rhs: Box::new(rhs),
        return_bool,
        matching,
    });
    (binary, own)
}

/// The value of an operand Loki would have folded into one literal while
/// parsing (it reduces arithmetic between literals on the spot).
fn literal_value(expr: &MetricExpr) -> Option<f64> {
    match expr {
        MetricExpr::Literal(value) => Some(*value),
        MetricExpr::Binary(binary) if !binary.op.is_set_operator() => {
            let l = literal_value(&binary.lhs)?;
            let r = literal_value(&binary.rhs)?;
            let truth = |b: bool| if b { 1.0 } else { 0.0 };
            Some(match binary.op {
                BinaryOp::Add => l + r,
                BinaryOp::Sub => l - r,
                BinaryOp::Mul => l * r,
                BinaryOp::Div if r == 0.0 => f64::NAN,
                BinaryOp::Div => l / r,
                BinaryOp::Mod if r == 0.0 => f64::NAN,
                BinaryOp::Mod => l % r,
                BinaryOp::Pow => l.powf(r),
                BinaryOp::Eq => truth(l == r),
                BinaryOp::Ne => truth(l != r),
                BinaryOp::Gt => truth(l > r),
                BinaryOp::Ge => truth(l >= r),
                BinaryOp::Lt => truth(l < r),
                BinaryOp::Le => truth(l <= r),
                BinaryOp::Or | BinaryOp::And | BinaryOp::Unless => return None,
            })
        }
        _ => None,
    }
}

/// Go's `%f`.
fn go_float_f(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{value:.6}")
    }
}

/// Loki's rules on the stream selector: one matcher must select something
/// specific, i.e. not match the empty value (which every stream lacking the
/// label has).
fn check_selector(matchers: &[Matcher]) -> Deferred {
    if matchers.iter().any(|m| !m.matches_empty()) {
        None
    } else {
        Some(ParseError::unpositioned(ERR_EMPTY_COMPATIBLE_SELECTOR))
    }
}

fn check_range_aggregation(op: RangeOp, grouped: bool, unwrapped: bool) -> Option<String> {
    let name = op.as_str();
    if grouped && !op.allows_grouping() {
        return Some(format!("grouping not allowed for {name} aggregation"));
    }
    if unwrapped {
        return (!op.allows_unwrap()).then(|| format!("invalid aggregation {name} with unwrap"));
    }
    (!op.allows_lines()).then(|| format!("invalid aggregation {name} without unwrap"))
}

fn new_matcher(op: MatchOp, name: String, value: String) -> PResult<Matcher> {
    Matcher::new(op, name, value).map_err(|error| match error {
        tidewatch_model::Error::Regex { pattern, message } => ParseError::unpositioned(format!(
            "error parsing regexp: {}: `{pattern}`",
            short_regex_message(&message)
        )),
        other => ParseError::unpositioned(other.to_string()),
    })
}

/// The last line of the regex crate's multi-line message (`error: …`), in
/// the shape of Go's `error parsing regexp: <what>: `<pattern>``.
fn short_regex_message(message: &str) -> String {
    let last = message
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or(message);
    last.trim().trim_start_matches("error: ").to_string()
}

fn regex_message(error: &regex::Error, pattern: &str) -> String {
    format!(
        "error parsing regexp: {}: `{pattern}`",
        short_regex_message(&error.to_string())
    )
}

/// `| regexp`: the expression must compile and name at least one capture,
/// each name once (Loki's `NewRegexpParser`, run while parsing).
fn check_regexp_parser(pattern: &str) -> PResult<()> {
    let fail = |message: String| Err(ParseError::unpositioned(format!("invalid regexp parser: {message}")));
    let regex = match Regex::new(pattern) {
        Ok(regex) => regex,
        Err(error) => {
            // Go accepts a repeated group name and Loki then rejects it with
            // its own message; the regex crate refuses to compile it.
            if let Some(name) = duplicate_group_name(pattern) {
                return fail(format!("duplicate extracted label name '{name}'"));
            }
            return fail(regex_message(&error, pattern));
        }
    };
    if regex.capture_names().flatten().next().is_none() {
        return fail("at least one named capture must be supplied".to_string());
    }
    Ok(())
}

/// The first group name that occurs twice in `(?P<name>…)`/`(?<name>…)`.
fn duplicate_group_name(pattern: &str) -> Option<String> {
    let mut seen: Vec<String> = Vec::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' {
            i += 2;
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 4)].iter().collect();
        let skip = if rest.starts_with("(?P<") {
            4
        } else if rest.starts_with("(?<") {
            3
        } else {
            i += 1;
            continue;
        };
        let start = i + skip;
        let end = chars[start..].iter().position(|&c| c == '>').map(|p| start + p)?;
        let name: String = chars[start..end].iter().collect();
        if seen.contains(&name) {
            return Some(name);
        }
        seen.push(name);
        i = end + 1;
    }
    None
}

/// `| pattern`: Loki's pattern syntax (`<name>` captures, `<_>` skips,
/// everything else literal) with at least one named capture, no two
/// captures side by side, no name twice.
fn check_pattern_parser(pattern: &str) -> PResult<()> {
    enum Node {
        Literal,
        Capture(String),
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut nodes: Vec<Node> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '<'
            && let Some(first) = chars.get(i + 1)
            && (first.is_ascii_alphabetic() || *first == '_')
        {
            let mut end = i + 2;
            while chars.get(end).is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_') {
                end += 1;
            }
            if chars.get(end) == Some(&'>') {
                nodes.push(Node::Capture(chars[i + 1..end].iter().collect()));
                i = end + 1;
                continue;
            }
        }
        if !matches!(nodes.last(), Some(Node::Literal)) {
            nodes.push(Node::Literal);
        }
        i += 1;
    }
    let fail = |message: String| Err(ParseError::unpositioned(format!("invalid pattern parser: {message}")));
    let named: Vec<&String> = nodes
        .iter()
        .filter_map(|node| match node {
            Node::Capture(name) if name != "_" => Some(name),
            _ => None,
        })
        .collect();
    if named.is_empty() {
        return fail("at least one capture is required".to_string());
    }
    for pair in nodes.windows(2) {
        if let [Node::Capture(a), Node::Capture(b)] = pair {
            return fail(format!("found consecutive capture '<{a}><{b}>': invalid expression"));
        }
    }
    for (index, name) in named.iter().enumerate() {
        if named[..index].contains(name) {
            return fail(format!("duplicate capture name ({name}): invalid expression"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logql::{Position, parse};

    /// Parses, and checks the canonical text parses back to the same tree.
    fn ok(query: &str) -> Expr {
        let expr = parse(query).unwrap_or_else(|e| panic!("`{query}` should parse: {e}"));
        let printed = expr.to_string();
        assert_eq!(parse(&printed).as_ref(), Ok(&expr), "`{query}` printed as `{printed}`");
        expr
    }

    fn printed(query: &str) -> String {
        ok(query).to_string()
    }

    fn err(query: &str) -> String {
        match parse(query) {
            Ok(expr) => panic!("`{query}` should not parse, got {expr:?}"),
            Err(error) => error.to_string(),
        }
    }

    fn log(query: &str) -> LogExpr {
        match ok(query) {
            Expr::Log(log) => log,
            other => panic!("not a log query: {other:?}"),
        }
    }

    fn metric(query: &str) -> MetricExpr {
        match ok(query) {
            Expr::Metric(metric) => metric,
            other => panic!("not a metric query: {other:?}"),
        }
    }

    fn label_filter(query: &str) -> LabelFilter {
        match log(query).pipeline.pop() {
            Some(Stage::LabelFilter(filter)) => filter,
            other => panic!("not a label filter: {other:?}"),
        }
    }

    #[test]
    fn stream_selectors() {
        let selector = log(r#"{a="b", c=~"x.*", d!="", e!~"y"}"#);
        let ops: Vec<MatchOp> = selector.matchers.iter().map(|m| m.op).collect();
        assert_eq!(
            ops,
            [
                MatchOp::Equal,
                MatchOp::RegexMatch,
                MatchOp::NotEqual,
                MatchOp::RegexNoMatch
            ]
        );
        assert_eq!(selector.matchers[1].value, "x.*");
        assert_eq!(printed(r#"{ a = "b" ,c=~`x\d`}"#), r#"{a="b", c=~"x\\d"}"#);
        assert_eq!(printed("{app=\"a\\tb\"}"), "{app=\"a\\tb\"}");
    }

    #[test]
    fn selectors_need_a_matcher_that_cannot_match_empty() {
        let message = format!("parse error : {ERR_EMPTY_COMPATIBLE_SELECTOR}");
        for query in [
            r#"{foo!="bar"}"#,
            "{}",
            r#"{app=~".*"}"#,
            r#"{foo!~"bar|baz"}"#,
            r#"{a=""}"#,
            r#"count_over_time({app=~".*"}[5m])"#,
            r#"1 + count_over_time({app=~".+"}[5m]) + count_over_time({app=~".*"}[5m])"#,
        ] {
            assert_eq!(err(query), message, "{query}");
        }
        ok(r#"{app=~".+"}"#);
        ok(r#"{app="baz", foo!="bar"}"#);
        ok(r#"{foo=~"bar|baz"}"#);
    }

    #[test]
    fn line_filters() {
        let pipeline = log(r#"{a="b"} |= "x" != "y" |~ "z.*" !~ "w" |> "<_> a" !> "b <_>""#).pipeline;
        let ops: Vec<LineFilterOp> = pipeline
            .iter()
            .map(|stage| match stage {
                Stage::LineFilter(filter) => filter.op,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            ops,
            [
                LineFilterOp::Contains,
                LineFilterOp::NotContains,
                LineFilterOp::Regex,
                LineFilterOp::NotRegex,
                LineFilterOp::Pattern,
                LineFilterOp::NotPattern
            ]
        );
        let pipeline = log(r#"{a="b"} != "a" or "b" or ip("10.0.0.0/8") |= ip("::1")"#).pipeline;
        assert_eq!(
            pipeline[0],
            Stage::LineFilter(LineFilter {
                op: LineFilterOp::NotContains,
                values: vec![
                    LineFilterValue::Text("a".into()),
                    LineFilterValue::Text("b".into()),
                    LineFilterValue::Ip("10.0.0.0/8".into())
                ],
            })
        );
        assert_eq!(printed(r#"{a="b"}|="x"or"y""#), r#"{a="b"} |= "x" or "y""#);
    }

    #[test]
    fn parsers() {
        let pipeline = log(
            r#"{a="b"} | json | json who="user.id", tag="tags[0]", plain | logfmt --strict --keep-empty x="y", z | logfmt --keep-empty | regexp "(?P<m>\\w+)" | pattern `<ip> - <_> <x>` | unpack"#,
        )
        .pipeline;
        assert_eq!(pipeline[0], Stage::Json { extractions: vec![] });
        assert_eq!(
            pipeline[1],
            Stage::Json {
                extractions: vec![
                    LabelExtraction {
                        label: "who".into(),
                        expression: "user.id".into()
                    },
                    LabelExtraction {
                        label: "tag".into(),
                        expression: "tags[0]".into()
                    },
                    LabelExtraction {
                        label: "plain".into(),
                        expression: "plain".into()
                    },
                ]
            }
        );
        assert!(
            matches!(&pipeline[2], Stage::Logfmt { strict: true, keep_empty: true, extractions } if extractions.len() == 2)
        );
        assert!(
            matches!(&pipeline[3], Stage::Logfmt { strict: false, keep_empty: true, extractions } if extractions.is_empty())
        );
        assert_eq!(pipeline[4], Stage::Regexp(r"(?P<m>\w+)".into()));
        assert_eq!(pipeline[5], Stage::Pattern("<ip> - <_> <x>".into()));
        assert_eq!(pipeline[6], Stage::Unpack);
    }

    #[test]
    fn parser_arguments_are_checked_when_parsed() {
        assert_eq!(
            err(r#"{a="b"} | regexp "nocapture""#),
            "parse error : invalid regexp parser: at least one named capture must be supplied"
        );
        assert_eq!(
            err(r#"{a="b"} | regexp "(?P<x>.)(?P<x>.)""#),
            "parse error : invalid regexp parser: duplicate extracted label name 'x'"
        );
        assert!(
            err(r#"{a="b"} | regexp "(""#).starts_with("parse error : invalid regexp parser: error parsing regexp: ")
        );
        assert_eq!(
            err(r#"{a="b"} | pattern "<_> only""#),
            "parse error : invalid pattern parser: at least one capture is required"
        );
        assert_eq!(
            err(r#"{a="b"} | pattern "<a><b>""#),
            "parse error : invalid pattern parser: found consecutive capture '<a><b>': invalid expression"
        );
        assert_eq!(
            err(r#"{a="b"} | pattern "<a> <a>""#),
            "parse error : invalid pattern parser: duplicate capture name (a): invalid expression"
        );
        assert!(err(r#"{a=~"("}"#).starts_with("parse error : error parsing regexp: "));
    }

    #[test]
    fn label_filter_values() {
        let name = || "x".to_string();
        assert_eq!(
            label_filter(r#"{a="b"} | x > 250ms"#),
            LabelFilter::Duration {
                name: name(),
                op: CmpOp::Gt,
                value: Duration::from_nanos(250_000_000)
            }
        );
        assert_eq!(
            label_filter(r#"{a="b"} | x <= 1h30m"#),
            LabelFilter::Duration {
                name: name(),
                op: CmpOp::Le,
                value: Duration::from_nanos(5_400_000_000_000)
            }
        );
        assert_eq!(
            label_filter(r#"{a="b"} | x == 1.5s"#),
            LabelFilter::Duration {
                name: name(),
                op: CmpOp::Eq,
                value: Duration::from_nanos(1_500_000_000)
            }
        );
        assert_eq!(
            label_filter(r#"{a="b"} | x >= 20MB"#),
            LabelFilter::Bytes {
                name: name(),
                op: CmpOp::Ge,
                value: 20_000_000
            }
        );
        assert_eq!(
            label_filter(r#"{a="b"} | x != 1KiB"#),
            LabelFilter::Bytes {
                name: name(),
                op: CmpOp::Ne,
                value: 1024
            }
        );
        assert_eq!(
            label_filter(r#"{a="b"} | x = -1.5"#),
            LabelFilter::Number {
                name: name(),
                op: CmpOp::Eq,
                value: -1.5
            }
        );
        assert_eq!(
            label_filter(r#"{a="b"} | x < 0x1p3"#),
            LabelFilter::Number {
                name: name(),
                op: CmpOp::Lt,
                value: 8.0
            }
        );
        assert_eq!(
            label_filter(r#"{a="b"} | x != ip("10.0.0.0/8")"#),
            LabelFilter::Ip {
                name: name(),
                negated: true,
                pattern: "10.0.0.0/8".into()
            }
        );
        assert!(matches!(label_filter(r#"{a="b"} | __error__="""#), LabelFilter::Matcher(m) if m.name == "__error__"));
        assert_eq!(printed(r#"{a="b"} | size > 1536B"#), r#"{a="b"} | size>1536B"#);
        assert_eq!(printed(r#"{a="b"} | size > 2048B"#), r#"{a="b"} | size>2KiB"#);
        assert_eq!(printed(r#"{a="b"} | t > 90s"#), r#"{a="b"} | t>1m30s"#);
        assert_eq!(printed(r#"{a="b"} | t > -90s"#), r#"{a="b"} | t>-1m30s"#);
    }

    #[test]
    fn label_filter_value_errors() {
        assert_eq!(
            err(r#"{app="foo"} | logfmt | status_code > 0x10"#),
            r#"parse error : unable to parse literal as a float: strconv.ParseFloat: parsing "0x10": invalid syntax"#
        );
        assert_eq!(
            err(r#"{ foo = "bar" }|logfmt|addr>=ip("1.2.3.4")"#),
            "parse error at line 1, col 30: syntax error: unexpected ip"
        );
        assert_eq!(
            err(r#"{ foo = "bar" }|logfmt|addr>ip("1.2.3.4")"#),
            "parse error at line 1, col 29: syntax error: unexpected ip"
        );
        assert_eq!(
            err(r#"{a="b"} | code == "200""#),
            "parse error at line 1, col 19: syntax error: unexpected STRING"
        );
        assert_eq!(
            err(r#"{a="b"} | x =~ 5"#),
            "parse error at line 1, col 16: syntax error: unexpected NUMBER"
        );
    }

    fn leaf(name: &str) -> Box<LabelFilter> {
        Box::new(LabelFilter::Matcher(Matcher::equal(name, "1")))
    }

    #[test]
    fn label_filter_grouping_follows_lokis_grammar() {
        use AndKind::{Comma, Keyword};
        let and = |l, r, kind| {
            Box::new(LabelFilter::And {
                left: l,
                right: r,
                kind,
            })
        };
        let or = |l, r| Box::new(LabelFilter::Or { left: l, right: r });
        // `and` binds tighter than `or`; both group to the left.
        assert_eq!(
            label_filter(r#"{x="y"} | a="1" or b="1" and c="1""#),
            *or(leaf("a"), and(leaf("b"), leaf("c"), Keyword))
        );
        assert_eq!(
            label_filter(r#"{x="y"} | a="1" and b="1" and c="1""#),
            *and(and(leaf("a"), leaf("b"), Keyword), leaf("c"), Keyword)
        );
        // `,` and juxtaposition take everything after them.
        assert_eq!(
            label_filter(r#"{x="y"} | a="1", b="1" or c="1""#),
            *and(leaf("a"), or(leaf("b"), leaf("c")), Comma)
        );
        assert_eq!(
            label_filter(r#"{x="y"} | a="1" b="1" or c="1""#),
            *and(leaf("a"), or(leaf("b"), leaf("c")), Comma)
        );
        assert_eq!(
            label_filter(r#"{x="y"} | a="1" or b="1", c="1""#),
            *or(leaf("a"), and(leaf("b"), leaf("c"), Comma))
        );
        assert_eq!(
            label_filter(r#"{x="y"} | (a="1" or b="1") and c="1""#),
            *and(or(leaf("a"), leaf("b")), leaf("c"), Keyword)
        );
        // Printing keeps the shape with as few parentheses as needed.
        assert_eq!(
            printed(r#"{x="y"} | (a="1" or b="1") and c="1""#),
            r#"{x="y"} | (a="1" or b="1") and c="1""#
        );
        assert_eq!(
            printed(r#"{x="y"} | (a="1", b="1") and c="1""#),
            r#"{x="y"} | (a="1", b="1") and c="1""#
        );
        assert_eq!(
            printed(r#"{x="y"} | a="1" and (b="1", c="1") and d="1""#),
            r#"{x="y"} | a="1" and (b="1", c="1") and d="1""#
        );
    }

    #[test]
    fn formatting_stages() {
        let pipeline = log(
            r#"{a="b"} | line_format "{{.msg}}" | label_format dst=src, t="{{.x}}" | drop a, b="x", c=~"y.*" | keep d | decolorize"#,
        )
        .pipeline;
        assert_eq!(pipeline[0], Stage::LineFormat("{{.msg}}".into()));
        assert_eq!(
            pipeline[1],
            Stage::LabelFormat(vec![
                LabelFormat::Rename {
                    dst: "dst".into(),
                    src: "src".into()
                },
                LabelFormat::Template {
                    dst: "t".into(),
                    template: "{{.x}}".into()
                },
            ])
        );
        assert!(
            matches!(&pipeline[2], Stage::Drop(items) if items.len() == 3 && items[0] == NamedMatcher::Name("a".into()))
        );
        assert_eq!(pipeline[3], Stage::Keep(vec![NamedMatcher::Name("d".into())]));
        assert_eq!(pipeline[4], Stage::Decolorize);
        // Loki dropped `distinct` from its grammar: it is a syntax error.
        assert_eq!(
            err(r#"{a="b"} | distinct a"#),
            "parse error at line 1, col 20: syntax error: unexpected IDENTIFIER"
        );
    }

    fn range_aggregation(query: &str) -> RangeAggregation {
        match metric(query) {
            MetricExpr::RangeAggregation(agg) => agg,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn range_aggregations() {
        for op in RangeOp::ALL {
            let query = if op == RangeOp::QuantileOverTime {
                r#"quantile_over_time(0.99, {a="b"} | unwrap x [5m])"#.to_string()
            } else if op.allows_lines() {
                format!(r#"{}({{a="b"}}[5m])"#, op.as_str())
            } else {
                format!(r#"{}({{a="b"}} | logfmt | unwrap x [5m])"#, op.as_str())
            };
            assert_eq!(range_aggregation(&query).op, op, "{query}");
        }
        let agg = range_aggregation(
            r#"quantile_over_time(0.5, {a="b"} | json | unwrap duration_seconds(took) | __error__="" [1h30m] offset -5m) by (pod)"#,
        );
        assert_eq!(agg.param, Some(0.5));
        assert_eq!(agg.range.range, Duration::from_nanos(5_400_000_000_000));
        assert_eq!(agg.range.offset, Some(Duration::from_nanos(-300_000_000_000)));
        let unwrap = agg.range.unwrap.expect("unwrap");
        assert_eq!(unwrap.conversion, Some(UnwrapConversion::DurationSeconds));
        assert_eq!(unwrap.label, "took");
        assert_eq!(unwrap.post_filters.len(), 1);
        assert_eq!(
            agg.grouping,
            Some(Grouping {
                without: false,
                labels: vec!["pod".into()]
            })
        );
        // Every spelling of the range argument gives one tree.
        let canonical = range_aggregation(r#"sum_over_time({a="b"} | json | unwrap bytes(x) [5m] offset 1m)"#);
        for other in [
            r#"sum_over_time({a="b"}[5m] offset 1m | json | unwrap bytes(x))"#,
            r#"sum_over_time(({a="b"} | json | unwrap bytes(x))[5m] offset 1m)"#,
            r#"sum_over_time(({a="b"} | json | unwrap bytes(x) [5m] offset 1m))"#,
            r#"SUM_OVER_TIME({a="b"} | JSON | UNWRAP BYTES(x) [5m] OFFSET 1m)"#,
        ] {
            assert_eq!(range_aggregation(other), canonical, "{other}");
        }
        assert_eq!(printed(r#"rate(({a="b"} |= "x")[1m])"#), r#"rate({a="b"} |= "x" [1m])"#);
        assert_eq!(
            printed(r#"absent_over_time({a="b"}[1d])"#),
            r#"absent_over_time({a="b"}[1d])"#
        );
    }

    #[test]
    fn range_aggregation_rules() {
        for (query, message) in [
            (
                r#"count_over_time({a="b"} | unwrap x [1m])"#,
                "invalid aggregation count_over_time with unwrap",
            ),
            (
                r#"sum_over_time({a="b"}[1m])"#,
                "invalid aggregation sum_over_time without unwrap",
            ),
            (
                r#"rate({a="b"}[1m]) by (x)"#,
                "grouping not allowed for rate aggregation",
            ),
            (
                r#"absent_over_time({ foo = "bar" }[5h]) by (foo)"#,
                "grouping not allowed for absent_over_time aggregation",
            ),
            (
                r#"quantile_over_time({a="b"} | unwrap x [1m])"#,
                "parameter required for operation quantile_over_time",
            ),
            (
                r#"sum_over_time(50, {a="b"} | unwrap x [1m])"#,
                "parameter 50 not supported for operation sum_over_time",
            ),
        ] {
            assert_eq!(err(query), format!("parse error : {message}"), "{query}");
        }
    }

    #[test]
    fn range_syntax_errors() {
        assert_eq!(
            err(r#"rate({ foo = "bar" }[5minutes])"#),
            r#"parse error at line 1, col 21: unknown unit "minutes" in duration "5minutes""#
        );
        assert_eq!(
            err(r#"rate({ foo = "bar" }[5)"#),
            "parse error at line 1, col 21: missing closing ']' in duration"
        );
        assert_eq!(
            err(r#"rate({a="b"}[1.5s])"#),
            r#"parse error at line 1, col 13: unknown unit "." in duration "1.5s""#
        );
        assert_eq!(
            err(r#"min({ foo = "bar" }[5m])"#),
            "parse error at line 1, col 20: syntax error: unexpected RANGE"
        );
        assert_eq!(
            err(r#"quantile_over_time(foo,{namespace="tns"} | unwrap latency [5m])"#),
            "parse error at line 1, col 20: syntax error: unexpected IDENTIFIER, expecting NUMBER or { or ("
        );
        assert_eq!(
            err(r#"{a="b"} | unwrap x"#),
            "parse error at line 1, col 11: syntax error: unexpected unwrap"
        );
        assert_eq!(
            err(r#"rate({a="b"} | unwrap x | json [1m])"#),
            "parse error at line 1, col 27: syntax error: unexpected json"
        );
        assert_eq!(
            err(r#"rate({a="b"}[1m] offset 0)"#),
            "parse error at line 1, col 25: syntax error: unexpected NUMBER, expecting DURATION"
        );
    }

    fn vector_aggregation(query: &str) -> VectorAggregation {
        match metric(query) {
            MetricExpr::VectorAggregation(agg) => agg,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn vector_aggregations() {
        let inner = r#"count_over_time({a="b"}[1m])"#;
        for op in VectorOp::ALL {
            let query = if op.takes_param() {
                format!("{}(3, {inner})", op.as_str())
            } else {
                format!("{}({inner})", op.as_str())
            };
            let agg = vector_aggregation(&query);
            assert_eq!(agg.op, op);
            assert_eq!(agg.param, op.takes_param().then_some(3));
        }
        let before = vector_aggregation(&format!("sum by (a, b) ({inner})"));
        let after = vector_aggregation(&format!("sum({inner}) by (a, b)"));
        assert_eq!(before, after);
        assert_eq!(
            vector_aggregation(&format!("topk without () (2, {inner})")).grouping,
            Some(Grouping {
                without: true,
                labels: vec![]
            })
        );
        assert_eq!(
            printed(&format!("topk(2, {inner}) by (a)")),
            format!("topk by (a) (2, {inner})")
        );
        ok(&format!("sort_desc without () ({inner})"));
    }

    #[test]
    fn vector_aggregation_errors() {
        let inner = r#"count_over_time({a="b"}[1m])"#;
        for (query, message) in [
            (format!("sum(3, {inner})"), "unsupported parameter for operation sum(3,"),
            (format!("topk({inner})"), "parameter required for operation topk"),
            (format!("bottomk(1.2, {inner})"), "invalid parameter bottomk(1.2,"),
            (
                format!("topk(0, {inner})"),
                "invalid parameter (must be greater than 0) topk(0",
            ),
            (
                format!("approx_topk(1, {inner}) by (a)"),
                "grouping not allowed for approx_topk aggregation",
            ),
            (
                format!("sort by (a) ({inner})"),
                "sort and sort_desc doesn't allow grouping by ",
            ),
        ] {
            assert_eq!(err(&query), format!("parse error : {message}"), "{query}");
        }
        assert_eq!(
            err(r#"bottomk(he,count_over_time({ foo = "bar" }[5h]))"#),
            "parse error at line 1, col 9: syntax error: unexpected IDENTIFIER"
        );
        assert_eq!(
            err(r#"stddev({ foo = "bar" })"#),
            "parse error at line 1, col 23: syntax error: unexpected )"
        );
        assert_eq!(
            err(r#"count without (rate({namespace="apps"}[15s]))"#),
            "parse error at line 1, col 16: syntax error: unexpected RATE, expecting IDENTIFIER or )"
        );
        assert_eq!(
            err(&format!("sum by (a) ({inner}) by (b)")),
            "parse error at line 1, col 43: syntax error: unexpected by"
        );
    }

    fn binary(query: &str) -> BinaryExpr {
        match metric(query) {
            MetricExpr::Binary(binary) => binary,
            other => panic!("{other:?}"),
        }
    }

    fn lit(value: f64) -> Box<MetricExpr> {
        Box::new(MetricExpr::Literal(value))
    }

    fn bin(op: BinaryOp, lhs: Box<MetricExpr>, rhs: Box<MetricExpr>) -> Box<MetricExpr> {
        Box::new(MetricExpr::Binary(BinaryExpr {
            op,
            lhs,
            rhs,
            return_bool: false,
            matching: None,
        }))
    }

    #[test]
    fn binary_precedence_and_associativity() {
        use BinaryOp::*;
        assert_eq!(metric("1 + 2 * 3"), *bin(Add, lit(1.0), bin(Mul, lit(2.0), lit(3.0))));
        assert_eq!(metric("1 - 2 - 3"), *bin(Sub, bin(Sub, lit(1.0), lit(2.0)), lit(3.0)));
        assert_eq!(metric("2 ^ 3 ^ 2"), *bin(Pow, lit(2.0), bin(Pow, lit(3.0), lit(2.0))));
        // A sign belongs to the literal, so `-2^2` is (-2)^2 in LogQL.
        assert_eq!(metric("-2^2"), *bin(Pow, lit(-2.0), lit(2.0)));
        assert_eq!(metric("1+1--1"), *bin(Sub, bin(Add, lit(1.0), lit(1.0)), lit(-1.0)));
        assert_eq!(metric("1 < 2 + 3"), *bin(Lt, lit(1.0), bin(Add, lit(2.0), lit(3.0))));
        assert_eq!(printed("(1 + 2) * 3"), "(1 + 2) * 3");
        assert_eq!(printed("1 - (2 - 3)"), "1 - (2 - 3)");
        assert_eq!(printed("(2 ^ 3) ^ 2"), "(2 ^ 3) ^ 2");
        let x = r#"count_over_time({a="b"}[1m])"#;
        let tree = binary(&format!("{x} or {x} and {x} unless {x}"));
        assert_eq!(tree.op, Or);
        assert!(matches!(*tree.rhs, MetricExpr::Binary(BinaryExpr { op: Unless, .. })));
        assert_eq!(
            printed(&format!("({x} or {x}) and {x}")),
            format!("({x} or {x}) and {x}")
        );
    }

    #[test]
    fn binary_modifiers() {
        let x = r#"sum by (a, b) (count_over_time({a="b"}[1m]))"#;
        let tree = binary(&format!("{x} > bool on (a) group_left (b) {x}"));
        assert!(tree.return_bool);
        assert_eq!(
            tree.matching,
            Some(VectorMatching {
                on: true,
                labels: vec!["a".into()],
                group: Some(MatchGroup::Left(vec!["b".into()])),
            })
        );
        let tree = binary(&format!("{x} / ignoring () group_right {x}"));
        assert_eq!(
            tree.matching,
            Some(VectorMatching {
                on: false,
                labels: vec![],
                group: Some(MatchGroup::Right(vec![])),
            })
        );
        assert_eq!(
            binary(&format!("{x} * on () group_left () {x}")),
            binary(&format!("{x} * on () group_left {x}"))
        );
        assert_eq!(
            err("bool 1 > 1 > bool 1"),
            "parse error at line 1, col 1: syntax error: unexpected bool"
        );
        assert_eq!(
            err(&format!("{x} bool > {x}")),
            "parse error at line 1, col 46: syntax error: unexpected bool"
        );
    }

    #[test]
    fn binary_operand_rules() {
        let x = r#"count_over_time({a="b"}[1m])"#;
        for (query, message) in [
            (
                r#"{a="b"} + 1"#.to_string(),
                "unexpected type for left leg of binary operation (+): *syntax.MatchersExpr",
            ),
            (
                format!(r#"{x} - {{a="b"}}"#),
                "unexpected type for right leg of binary operation (-): *syntax.MatchersExpr",
            ),
            (
                r#"{a="b"} |= "x" / 2"#.to_string(),
                "unexpected type for left leg of binary operation (/): *syntax.PipelineExpr",
            ),
            (
                "1 and 2".to_string(),
                "unexpected literal for left leg of logical/set binary operation (and): 1.000000",
            ),
            (
                format!("{x} or 1"),
                "unexpected literal for right leg of logical/set binary operation (or): 1.000000",
            ),
            (
                format!("(1 + 1) unless {x}"),
                "unexpected literal for left leg of logical/set binary operation (unless): 2.000000",
            ),
        ] {
            assert_eq!(err(&query), format!("parse error : {message}"), "{query}");
        }
    }

    #[test]
    fn literals_vectors_and_label_replace() {
        assert_eq!(metric("0x1p3"), MetricExpr::Literal(8.0));
        assert_eq!(metric("0X1.8P3"), MetricExpr::Literal(12.0));
        assert_eq!(metric("1e3"), MetricExpr::Literal(1000.0));
        assert_eq!(metric("+.5"), MetricExpr::Literal(0.5));
        assert_eq!(metric("vector(1)"), MetricExpr::Vector(1.0));
        assert_eq!(metric("- 0"), MetricExpr::Literal(-0.0));
        assert_eq!(printed("- 0"), "-0.0");
        for (query, message) in [
            (
                "0x1A",
                r#"unable to parse literal as a float: strconv.ParseFloat: parsing "0x1A": invalid syntax"#,
            ),
            (
                "0b1010",
                r#"unable to parse literal as a float: strconv.ParseFloat: parsing "0b1010": invalid syntax"#,
            ),
            (
                "1e400",
                r#"unable to parse literal as a float: strconv.ParseFloat: parsing "1e400": value out of range"#,
            ),
            (
                "vector(0o7)",
                r#"unable to parse vectorExpr as a float: strconv.ParseFloat: parsing "0o7": invalid syntax"#,
            ),
        ] {
            assert_eq!(err(query), format!("parse error : {message}"), "{query}");
        }
        assert_eq!(
            err("vector(abc)"),
            "parse error at line 1, col 8: syntax error: unexpected IDENTIFIER, expecting NUMBER"
        );
        assert_eq!(
            err(r#"-count_over_time({a="b"}[1m])"#),
            "parse error at line 1, col 2: syntax error: unexpected COUNT_OVER_TIME, expecting NUMBER"
        );
        let replace = metric(r#"label_replace(rate({a="b"}[1m]), "dst", "$1", "src", "(.*)")"#);
        assert!(matches!(&replace, MetricExpr::LabelReplace(lr) if lr.dst == "dst" && lr.regex == "(.*)"));
        assert_eq!(
            err(r#"label_replace(rate({ foo = "bar" }[5m]),"")"#),
            "parse error at line 1, col 43: syntax error: unexpected ), expecting ,"
        );
        assert!(
            err(r#"label_replace(rate({a="b"}[5m]), "d", "r", "s", "\\q")"#)
                .starts_with("parse error : invalid regex in label_replace: error parsing regexp: ")
        );
    }

    #[test]
    fn syntax_error_positions() {
        for (query, message) in [
            (
                r#"unk({ foo = "bar" }[5m])"#,
                "parse error at line 1, col 1: syntax error: unexpected IDENTIFIER",
            ),
            (r#"{foo="bar}"#, "parse error at line 1, col 6: literal not terminated"),
            (
                r#"{foo="bar""#,
                "parse error at line 1, col 11: syntax error: unexpected $end, expecting } or ,",
            ),
            (
                r#"{foo="bar"} |~"#,
                "parse error at line 1, col 15: syntax error: unexpected $end, expecting STRING or ip",
            ),
            (
                r#"{foo="bar"} "foo""#,
                "parse error at line 1, col 13: syntax error: unexpected STRING",
            ),
            (
                r#"{foo="bar"} foo"#,
                "parse error at line 1, col 13: syntax error: unexpected IDENTIFIER",
            ),
            (
                r#"#{app="foo"} | json"#,
                "parse error at line 1, col 20: syntax error: unexpected $end",
            ),
            (
                "sum(\n  rate({a=\"b\"}[1m])\n) foo",
                "parse error at line 3, col 3: syntax error: unexpected IDENTIFIER",
            ),
            (
                r#"{a="é"} | x > 0x"#,
                "parse error at line 1, col 15: hexadecimal literal has no digits",
            ),
            ("", "parse error at line 1, col 1: syntax error: unexpected $end"),
        ] {
            assert_eq!(err(query), message, "{query:?}");
        }
        let error = parse(r#"{foo="bar"} foo"#).unwrap_err();
        assert_eq!(error.position(), Some(Position { line: 1, column: 13 }));
        assert_eq!(error.message(), "syntax error: unexpected IDENTIFIER");
    }

    #[test]
    fn syntax_errors_win_over_later_checks() {
        // The unparsable literal would fail the check, but the syntax error comes first.
        assert_eq!(
            err("0x1A +"),
            "parse error at line 1, col 7: syntax error: unexpected $end"
        );
        // Among checks, the parent's comes before its operands'.
        assert_eq!(
            err(r#"sum(3, count_over_time({a=~".*"}[1m]))"#),
            "parse error : unsupported parameter for operation sum(3,"
        );
    }

    #[test]
    fn long_input_is_refused() {
        let query = format!(r#"{{a="{}"}}"#, "x".repeat(MAX_INPUT_SIZE));
        assert_eq!(
            err(&query),
            format!("parse error : input size too long ({} > {MAX_INPUT_SIZE})", query.len())
        );
    }

    #[test]
    fn parse_errors_are_bad_requests() {
        let error: crate::error::Error = parse("{").unwrap_err().into();
        assert_eq!(error.error_type, crate::error::ErrorType::BadData);
        assert_eq!(
            error.message,
            "parse error at line 1, col 2: syntax error: unexpected $end"
        );
    }
}
