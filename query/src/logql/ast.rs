//! The LogQL syntax tree, and its canonical text form.
//!
//! The tree keeps what a query means, not how it was spelled: parentheses,
//! keyword case, `=` versus `==` in label filters, the position of `[range]`
//! relative to the pipeline and whether a grouping came before or after an
//! aggregation's arguments are all gone. `Display` prints the one canonical
//! spelling, with the fewest parentheses that keep the tree, so that
//! `parse(&expr.to_string()) == Ok(expr)` for every tree the parser builds.
//! (A hand-built tree can be inexpressible: `| drop a` directly followed by
//! the line filter `!= "x"` reads back as `drop a!="x"`, in Loki too.)

use std::fmt::{self, Display, Write as _};

use tidewatch_model::Matcher;

/// A LogQL query: a log query (lines) or a metric query (samples).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Log(LogExpr),
    Metric(MetricExpr),
}

/// A stream selector followed by a pipeline: `{app="a"} |= "x" | json`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogExpr {
    /// The stream selector's matchers, in the order written.
    pub matchers: Vec<Matcher>,
    /// The pipeline stages, in the order they run.
    pub pipeline: Vec<Stage>,
}

/// One stage of a log pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// `|= "a"`, `!~ "b" or "c"`, `|> "<_> x"`, `|= ip("10.0.0.0/8")`.
    LineFilter(LineFilter),
    /// `| logfmt [--strict] [--keep-empty] [label="key", …]`.
    Logfmt {
        strict: bool,
        keep_empty: bool,
        extractions: Vec<LabelExtraction>,
    },
    /// `| json [label="path.to[0]", …]`.
    Json { extractions: Vec<LabelExtraction> },
    /// `| regexp "(?P<name>…)"`: the pattern is checked when parsed.
    Regexp(String),
    /// `| pattern "<ip> - <_>"`: the pattern is checked when parsed.
    Pattern(String),
    /// `| unpack`.
    Unpack,
    /// `| status >= 500 and method="GET"`.
    LabelFilter(LabelFilter),
    /// `| line_format "{{.msg}}"`: the Go template, unparsed.
    LineFormat(String),
    /// `| label_format dst=src, dst2="{{.x}}"`.
    LabelFormat(Vec<LabelFormat>),
    /// `| decolorize`.
    Decolorize,
    /// `| drop a, b="x"`.
    Drop(Vec<NamedMatcher>),
    /// `| keep a, b="x"`.
    Keep(Vec<NamedMatcher>),
}

/// The operator of a line filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineFilterOp {
    /// `|=`: the line contains the text.
    Contains,
    /// `!=`: the line does not contain the text.
    NotContains,
    /// `|~`: the line matches the regex (unanchored).
    Regex,
    /// `!~`: the line does not match the regex.
    NotRegex,
    /// `|>`: the line matches the pattern.
    Pattern,
    /// `!>`: the line does not match the pattern.
    NotPattern,
}

impl LineFilterOp {
    pub fn as_str(self) -> &'static str {
        match self {
            LineFilterOp::Contains => "|=",
            LineFilterOp::NotContains => "!=",
            LineFilterOp::Regex => "|~",
            LineFilterOp::NotRegex => "!~",
            LineFilterOp::Pattern => "|>",
            LineFilterOp::NotPattern => "!>",
        }
    }
}

/// A line filter: one operator and the values chained with `or`.
///
/// For the positive operators a line passes if any value matches; for the
/// negative ones (`!=`, `!~`, `!>`) it passes if none does — Loki's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct LineFilter {
    pub op: LineFilterOp,
    /// Never empty.
    pub values: Vec<LineFilterValue>,
}

/// One operand of a line filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineFilterValue {
    /// A string (text, regex or pattern, depending on the operator).
    Text(String),
    /// `ip("…")`: an address, range or CIDR, checked when evaluated.
    Ip(String),
}

/// A parser parameter: `label="expression"` or a bare `label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelExtraction {
    pub label: String,
    /// The JSON path or logfmt key; a bare `label` extracts `label` itself.
    pub expression: String,
}

/// One `label_format` assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelFormat {
    /// `dst=src`: rename `src` to `dst`.
    Rename { dst: String, src: String },
    /// `dst="{{…}}"`: a Go template, unparsed.
    Template { dst: String, template: String },
}

/// A `drop`/`keep` operand: a label name or a matcher on a label.
#[derive(Debug, Clone, PartialEq)]
pub enum NamedMatcher {
    Name(String),
    Matcher(Matcher),
}

/// A comparison in a numeric, duration or bytes label filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `=` or `==`.
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
        }
    }
}

/// How two label filters were joined by `and`-semantics.
///
/// The grammar groups them differently: `and` is a left-associative
/// operator that binds tighter than `or`, while `,` and plain juxtaposition
/// (`a="x" b="y"`) take everything that follows as their right operand. The
/// tree keeps the difference so that printing and re-parsing rebuilds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AndKind {
    /// `a and b`.
    Keyword,
    /// `a, b` or `a b`.
    Comma,
}

/// A label filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelFilter {
    /// `name="v"`, `name!="v"`, `name=~"re"`, `name!~"re"`.
    Matcher(Matcher),
    /// `name = ip("…")` or `name != ip("…")`.
    Ip {
        name: String,
        negated: bool,
        pattern: String,
    },
    /// `name > 250ms`.
    Duration { name: String, op: CmpOp, value: Duration },
    /// `name > 20MB`: the value in bytes.
    Bytes { name: String, op: CmpOp, value: u64 },
    /// `name > 5`.
    Number { name: String, op: CmpOp, value: f64 },
    And {
        left: Box<LabelFilter>,
        right: Box<LabelFilter>,
        kind: AndKind,
    },
    Or {
        left: Box<LabelFilter>,
        right: Box<LabelFilter>,
    },
}

/// A signed duration in nanoseconds, as Loki keeps `time.Duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(i64);

impl Duration {
    pub const ZERO: Duration = Duration(0);

    pub fn from_nanos(nanos: i64) -> Self {
        Duration(nanos)
    }

    pub fn as_nanos(self) -> i64 {
        self.0
    }

    /// Whole milliseconds, rounded towards zero.
    pub fn as_millis(self) -> i64 {
        self.0 / NANOS_PER_MILLI
    }
}

const NANOS_PER_MILLI: i64 = 1_000_000;

impl fmt::Display for Duration {
    /// Prometheus' spelling (`1h30m`, `2d`, `500ms`) when it can hold the
    /// value — always for ranges — otherwise Go's (`-5m`, `1us500ns`), which
    /// the lexer also accepts for offsets and label filters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PROM_UNITS: [(&str, i64); 7] = [
            ("y", 365 * 24 * 3_600_000),
            ("w", 7 * 24 * 3_600_000),
            ("d", 24 * 3_600_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ];
        const GO_UNITS: [(&str, u64); 6] = [
            ("h", 3_600_000_000_000),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
            ("ns", 1),
        ];
        if self.0 == 0 {
            return f.write_str("0s");
        }
        if self.0 > 0 && self.0 % NANOS_PER_MILLI == 0 {
            let mut millis = self.0 / NANOS_PER_MILLI;
            for (unit, size) in PROM_UNITS {
                if millis >= size {
                    write!(f, "{}{unit}", millis / size)?;
                    millis %= size;
                }
            }
            return Ok(());
        }
        if self.0 < 0 {
            f.write_char('-')?;
        }
        let mut nanos = self.0.unsigned_abs();
        for (unit, size) in GO_UNITS {
            if nanos >= size {
                write!(f, "{}{unit}", nanos / size)?;
                nanos %= size;
            }
        }
        Ok(())
    }
}

/// A metric query.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricExpr {
    RangeAggregation(RangeAggregation),
    VectorAggregation(VectorAggregation),
    Binary(BinaryExpr),
    /// A number literal, sign included (`-1` is one literal in LogQL).
    Literal(f64),
    /// `vector(1)`.
    Vector(f64),
    LabelReplace(LabelReplace),
}

/// `rate({…}[5m])`, `quantile_over_time(0.99, {…} | unwrap x [5m]) by (a)`.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeAggregation {
    pub op: RangeOp,
    /// `quantile_over_time`'s φ; `None` for every other operation.
    pub param: Option<f64>,
    pub range: LogRange,
    pub grouping: Option<Grouping>,
}

/// The range-vector operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RangeOp {
    CountOverTime,
    Rate,
    RateCounter,
    BytesOverTime,
    BytesRate,
    AvgOverTime,
    SumOverTime,
    MinOverTime,
    MaxOverTime,
    StdvarOverTime,
    StddevOverTime,
    QuantileOverTime,
    FirstOverTime,
    LastOverTime,
    AbsentOverTime,
}

impl RangeOp {
    pub const ALL: [RangeOp; 15] = [
        RangeOp::CountOverTime,
        RangeOp::Rate,
        RangeOp::RateCounter,
        RangeOp::BytesOverTime,
        RangeOp::BytesRate,
        RangeOp::AvgOverTime,
        RangeOp::SumOverTime,
        RangeOp::MinOverTime,
        RangeOp::MaxOverTime,
        RangeOp::StdvarOverTime,
        RangeOp::StddevOverTime,
        RangeOp::QuantileOverTime,
        RangeOp::FirstOverTime,
        RangeOp::LastOverTime,
        RangeOp::AbsentOverTime,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RangeOp::CountOverTime => "count_over_time",
            RangeOp::Rate => "rate",
            RangeOp::RateCounter => "rate_counter",
            RangeOp::BytesOverTime => "bytes_over_time",
            RangeOp::BytesRate => "bytes_rate",
            RangeOp::AvgOverTime => "avg_over_time",
            RangeOp::SumOverTime => "sum_over_time",
            RangeOp::MinOverTime => "min_over_time",
            RangeOp::MaxOverTime => "max_over_time",
            RangeOp::StdvarOverTime => "stdvar_over_time",
            RangeOp::StddevOverTime => "stddev_over_time",
            RangeOp::QuantileOverTime => "quantile_over_time",
            RangeOp::FirstOverTime => "first_over_time",
            RangeOp::LastOverTime => "last_over_time",
            RangeOp::AbsentOverTime => "absent_over_time",
        }
    }

    /// Whether `by`/`without` may follow the call (Loki allows it only where
    /// the operation keeps per-series values it can regroup).
    pub fn allows_grouping(self) -> bool {
        matches!(
            self,
            RangeOp::AvgOverTime
                | RangeOp::StddevOverTime
                | RangeOp::StdvarOverTime
                | RangeOp::QuantileOverTime
                | RangeOp::MaxOverTime
                | RangeOp::MinOverTime
                | RangeOp::FirstOverTime
                | RangeOp::LastOverTime
        )
    }

    /// Whether the operation may read unwrapped values.
    pub fn allows_unwrap(self) -> bool {
        !matches!(
            self,
            RangeOp::CountOverTime | RangeOp::BytesOverTime | RangeOp::BytesRate
        )
    }

    /// Whether the operation works on lines alone, without `unwrap`.
    pub fn allows_lines(self) -> bool {
        matches!(
            self,
            RangeOp::BytesOverTime
                | RangeOp::BytesRate
                | RangeOp::CountOverTime
                | RangeOp::Rate
                | RangeOp::AbsentOverTime
        )
    }
}

/// A log query over a time range: `{…} | pipeline | unwrap x [5m] offset 1h`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRange {
    pub log: LogExpr,
    pub range: Duration,
    pub offset: Option<Duration>,
    pub unwrap: Option<Unwrap>,
}

/// `| unwrap label`, `| unwrap duration(label)`, with the label filters that follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct Unwrap {
    pub label: String,
    pub conversion: Option<UnwrapConversion>,
    /// `| unwrap x | __error__=""`: filters applied after the conversion.
    pub post_filters: Vec<LabelFilter>,
}

/// How an unwrapped label's value becomes a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnwrapConversion {
    /// `bytes(x)`: `20MB` → 20000000.
    Bytes,
    /// `duration(x)`: `1m30s` → 90 (seconds).
    Duration,
    /// `duration_seconds(x)`: the same as `duration`.
    DurationSeconds,
}

impl UnwrapConversion {
    pub fn as_str(self) -> &'static str {
        match self {
            UnwrapConversion::Bytes => "bytes",
            UnwrapConversion::Duration => "duration",
            UnwrapConversion::DurationSeconds => "duration_seconds",
        }
    }
}

/// `by (a, b)` or `without (a)`; the list may be empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    pub without: bool,
    pub labels: Vec<String>,
}

/// `sum by (a) (…)`, `topk(5, …)`.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorAggregation {
    pub op: VectorOp,
    /// `k` of `topk`, `bottomk` and `approx_topk`; `None` for the others.
    pub param: Option<i64>,
    pub expr: Box<MetricExpr>,
    pub grouping: Option<Grouping>,
}

/// The vector aggregation operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VectorOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    Sort,
    SortDesc,
    ApproxTopk,
}

impl VectorOp {
    pub const ALL: [VectorOp; 12] = [
        VectorOp::Sum,
        VectorOp::Avg,
        VectorOp::Min,
        VectorOp::Max,
        VectorOp::Count,
        VectorOp::Stddev,
        VectorOp::Stdvar,
        VectorOp::Topk,
        VectorOp::Bottomk,
        VectorOp::Sort,
        VectorOp::SortDesc,
        VectorOp::ApproxTopk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VectorOp::Sum => "sum",
            VectorOp::Avg => "avg",
            VectorOp::Min => "min",
            VectorOp::Max => "max",
            VectorOp::Count => "count",
            VectorOp::Stddev => "stddev",
            VectorOp::Stdvar => "stdvar",
            VectorOp::Topk => "topk",
            VectorOp::Bottomk => "bottomk",
            VectorOp::Sort => "sort",
            VectorOp::SortDesc => "sort_desc",
            VectorOp::ApproxTopk => "approx_topk",
        }
    }

    /// Whether the operation takes `k` as its first argument.
    pub fn takes_param(self) -> bool {
        matches!(self, VectorOp::Topk | VectorOp::Bottomk | VectorOp::ApproxTopk)
    }
}

/// `lhs op [bool] [on|ignoring (…)] [group_left|group_right (…)] rhs`.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryExpr {
    pub op: BinaryOp,
    pub lhs: Box<MetricExpr>,
    pub rhs: Box<MetricExpr>,
    /// `bool`: comparisons return 0/1 instead of filtering.
    pub return_bool: bool,
    pub matching: Option<VectorMatching>,
}

/// The binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Or,
    And,
    Unless,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 15] = [
        BinaryOp::Or,
        BinaryOp::And,
        BinaryOp::Unless,
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Mod,
        BinaryOp::Pow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BinaryOp::Or => "or",
            BinaryOp::And => "and",
            BinaryOp::Unless => "unless",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Pow => "^",
        }
    }

    /// Binding strength, Loki's (and Prometheus') order: `or` < `and unless`
    /// < comparisons < `+ -` < `* / %` < `^`.
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And | BinaryOp::Unless => 2,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Lt | BinaryOp::Le => 3,
            BinaryOp::Add | BinaryOp::Sub => 4,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => 5,
            BinaryOp::Pow => 6,
        }
    }

    /// `^` groups to the right; everything else to the left.
    pub fn is_right_associative(self) -> bool {
        self == BinaryOp::Pow
    }

    /// `and`, `or`, `unless`: they cannot take a literal operand.
    pub fn is_set_operator(self) -> bool {
        matches!(self, BinaryOp::Or | BinaryOp::And | BinaryOp::Unless)
    }

    pub fn is_comparison(self) -> bool {
        self.precedence() == 3
    }
}

/// `on (…)`/`ignoring (…)` with an optional `group_left`/`group_right`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorMatching {
    /// `on` when true, `ignoring` when false.
    pub on: bool,
    pub labels: Vec<String>,
    pub group: Option<MatchGroup>,
}

/// Many-to-one or one-to-many matching, with the labels to copy over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchGroup {
    Left(Vec<String>),
    Right(Vec<String>),
}

/// `label_replace(expr, "dst", "replacement", "src", "regex")`.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelReplace {
    pub expr: Box<MetricExpr>,
    pub dst: String,
    pub replacement: String,
    pub src: String,
    pub regex: String,
}

// ---------------------------------------------------------------------------
// Printing.

/// Writes `s` as a double-quoted string the lexer reads back unchanged
/// (Go's escapes; control characters as `\xNN`, everything else literal).
pub(crate) fn write_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x20 || c == '\u{7f}' => write!(f, "\\x{:02x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_quoted(f, self.0)
    }
}

/// A matcher in LogQL's spelling (model's `Display` uses Rust quoting).
struct MatcherText<'a>(&'a Matcher);

impl fmt::Display for MatcherText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.0.name, self.0.op.as_str(), Quoted(&self.0.value))
    }
}

/// A number as the lexer reads it back: shortest round-trip digits, never
/// an exponent. `-0` alone would lex as a (Go) duration, hence `-0.0`.
pub(crate) fn write_number(f: &mut impl fmt::Write, value: f64) -> fmt::Result {
    if value == 0.0 && value.is_sign_negative() {
        return f.write_str("-0.0");
    }
    write!(f, "{value}")
}

struct Number(f64);

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_number(f, self.0)
    }
}

/// A byte count in the largest unit that holds it exactly.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 10] = [
            ("PiB", 1 << 50),
            ("PB", 1_000_000_000_000_000),
            ("TiB", 1 << 40),
            ("TB", 1_000_000_000_000),
            ("GiB", 1 << 30),
            ("GB", 1_000_000_000),
            ("MiB", 1 << 20),
            ("MB", 1_000_000),
            ("KiB", 1 << 10),
            ("kB", 1_000),
        ];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        // `0B` would lex as an (empty) Go binary literal; `0kB` reads back as 0.
        if self.0 == 0 {
            return f.write_str("0kB");
        }
        write!(f, "{}B", self.0)
    }
}

fn write_list<T>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
    mut item: impl FnMut(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    for (i, value) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        item(f, value)?;
    }
    Ok(())
}

fn write_labels(f: &mut fmt::Formatter<'_>, labels: &[String]) -> fmt::Result {
    f.write_char('(')?;
    write_list(f, labels, |f, label| f.write_str(label))?;
    f.write_char(')')
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Log(log) => log.fmt(f),
            Expr::Metric(metric) => metric.fmt(f),
        }
    }
}

impl fmt::Display for LogExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('{')?;
        write_list(f, &self.matchers, |f, m| MatcherText(m).fmt(f))?;
        f.write_char('}')?;
        for stage in &self.pipeline {
            write!(f, " {stage}")?;
        }
        Ok(())
    }
}

impl fmt::Display for LineFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.op.as_str())?;
        for (i, value) in self.values.iter().enumerate() {
            if i > 0 {
                f.write_str(" or")?;
            }
            match value {
                LineFilterValue::Text(text) => write!(f, " {}", Quoted(text))?,
                LineFilterValue::Ip(ip) => write!(f, " ip({})", Quoted(ip))?,
            }
        }
        Ok(())
    }
}

fn write_extractions(f: &mut fmt::Formatter<'_>, extractions: &[LabelExtraction]) -> fmt::Result {
    if extractions.is_empty() {
        return Ok(());
    }
    f.write_char(' ')?;
    write_list(f, extractions, |f, e| {
        if e.label == e.expression {
            f.write_str(&e.label)
        } else {
            write!(f, "{}={}", e.label, Quoted(&e.expression))
        }
    })
}

fn write_named_matchers(f: &mut fmt::Formatter<'_>, keyword: &str, items: &[NamedMatcher]) -> fmt::Result {
    write!(f, "| {keyword} ")?;
    write_list(f, items, |f, item| match item {
        NamedMatcher::Name(name) => f.write_str(name),
        NamedMatcher::Matcher(m) => MatcherText(m).fmt(f),
    })
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::LineFilter(filter) => filter.fmt(f),
            Stage::Logfmt {
                strict,
                keep_empty,
                extractions,
            } => {
                f.write_str("| logfmt")?;
                if *strict {
                    f.write_str(" --strict")?;
                }
                if *keep_empty {
                    f.write_str(" --keep-empty")?;
                }
                write_extractions(f, extractions)
            }
            Stage::Json { extractions } => {
                f.write_str("| json")?;
                write_extractions(f, extractions)
            }
            Stage::Regexp(re) => write!(f, "| regexp {}", Quoted(re)),
            Stage::Pattern(pattern) => write!(f, "| pattern {}", Quoted(pattern)),
            Stage::Unpack => f.write_str("| unpack"),
            Stage::LabelFilter(filter) => write!(f, "| {filter}"),
            Stage::LineFormat(template) => write!(f, "| line_format {}", Quoted(template)),
            Stage::LabelFormat(formats) => {
                f.write_str("| label_format ")?;
                write_list(f, formats, |f, format| match format {
                    LabelFormat::Rename { dst, src } => write!(f, "{dst}={src}"),
                    LabelFormat::Template { dst, template } => write!(f, "{dst}={}", Quoted(template)),
                })
            }
            Stage::Decolorize => f.write_str("| decolorize"),
            Stage::Drop(items) => write_named_matchers(f, "drop", items),
            Stage::Keep(items) => write_named_matchers(f, "keep", items),
        }
    }
}

/// Where a label filter sits relative to its parent, for parenthesising.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FilterSlot {
    Top,
    OrLeft,
    OrRight,
    AndLeft,
    AndRight,
    CommaLeft,
}

impl LabelFilter {
    fn is_leaf(&self) -> bool {
        !matches!(self, LabelFilter::And { .. } | LabelFilter::Or { .. })
    }

    /// Whether this filter, printed bare in `slot`, would re-parse with a
    /// different shape (see [`AndKind`] for the grammar's grouping rules).
    fn needs_parens(&self, slot: FilterSlot) -> bool {
        let comma = matches!(
            self,
            LabelFilter::And {
                kind: AndKind::Comma,
                ..
            }
        );
        let keyword_and = matches!(
            self,
            LabelFilter::And {
                kind: AndKind::Keyword,
                ..
            }
        );
        let or = matches!(self, LabelFilter::Or { .. });
        match slot {
            FilterSlot::Top => false,
            // `(a, b) or c`: a comma would swallow the `or`.
            FilterSlot::OrLeft => comma,
            // `a or (b or c)`: `or` groups to the left.
            FilterSlot::OrRight => or,
            FilterSlot::AndLeft => comma || or,
            FilterSlot::AndRight => or || keyword_and,
            // The left of a comma is one operand: anything compound needs parentheses.
            FilterSlot::CommaLeft => !self.is_leaf(),
        }
    }

    /// Prints the filter in `slot`. `tail`: nothing follows it in the whole
    /// filter — a comma's right operand extends to the end, so a comma that
    /// is not at the tail needs parentheses.
    fn fmt_in(&self, f: &mut fmt::Formatter<'_>, slot: FilterSlot, tail: bool) -> fmt::Result {
        let comma = matches!(
            self,
            LabelFilter::And {
                kind: AndKind::Comma,
                ..
            }
        );
        let parens = self.needs_parens(slot) || (comma && !tail);
        let tail = parens || tail;
        if parens {
            f.write_char('(')?;
        }
        match self {
            LabelFilter::Matcher(m) => MatcherText(m).fmt(f)?,
            LabelFilter::Ip { name, negated, pattern } => {
                let op = if *negated { "!=" } else { "=" };
                write!(f, "{name}{op}ip({})", Quoted(pattern))?;
            }
            LabelFilter::Duration { name, op, value } => write!(f, "{name}{}{value}", op.as_str())?,
            LabelFilter::Bytes { name, op, value } => write!(f, "{name}{}{}", op.as_str(), Bytes(*value))?,
            LabelFilter::Number { name, op, value } => write!(f, "{name}{}{}", op.as_str(), Number(*value))?,
            LabelFilter::And { left, right, kind } => match kind {
                AndKind::Keyword => {
                    left.fmt_in(f, FilterSlot::AndLeft, false)?;
                    f.write_str(" and ")?;
                    right.fmt_in(f, FilterSlot::AndRight, tail)?;
                }
                AndKind::Comma => {
                    left.fmt_in(f, FilterSlot::CommaLeft, false)?;
                    f.write_str(", ")?;
                    right.fmt_in(f, FilterSlot::Top, tail)?;
                }
            },
            LabelFilter::Or { left, right } => {
                left.fmt_in(f, FilterSlot::OrLeft, false)?;
                f.write_str(" or ")?;
                right.fmt_in(f, FilterSlot::OrRight, tail)?;
            }
        }
        if parens {
            f.write_char(')')?;
        }
        Ok(())
    }
}

impl fmt::Display for LabelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_in(f, FilterSlot::Top, true)
    }
}

impl fmt::Display for Grouping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.without { "without " } else { "by " })?;
        write_labels(f, &self.labels)
    }
}

impl fmt::Display for Unwrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.conversion {
            Some(conversion) => write!(f, "| unwrap {}({})", conversion.as_str(), self.label)?,
            None => write!(f, "| unwrap {}", self.label)?,
        }
        for filter in &self.post_filters {
            write!(f, " | {filter}")?;
        }
        Ok(())
    }
}

impl fmt::Display for LogRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.log.fmt(f)?;
        if let Some(unwrap) = &self.unwrap {
            write!(f, " {unwrap}")?;
        }
        if !self.log.pipeline.is_empty() || self.unwrap.is_some() {
            f.write_char(' ')?;
        }
        write!(f, "[{}]", self.range)?;
        if let Some(offset) = self.offset {
            write!(f, " offset {offset}")?;
        }
        Ok(())
    }
}

impl fmt::Display for MetricExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricExpr::RangeAggregation(agg) => {
                write!(f, "{}(", agg.op.as_str())?;
                if let Some(param) = agg.param {
                    write!(f, "{}, ", Number(param))?;
                }
                write!(f, "{})", agg.range)?;
                if let Some(grouping) = &agg.grouping {
                    write!(f, " {grouping}")?;
                }
                Ok(())
            }
            MetricExpr::VectorAggregation(agg) => {
                f.write_str(agg.op.as_str())?;
                if let Some(grouping) = &agg.grouping {
                    write!(f, " {grouping} ")?;
                }
                f.write_char('(')?;
                if let Some(param) = agg.param {
                    write!(f, "{param}, ")?;
                }
                write!(f, "{})", agg.expr)
            }
            MetricExpr::Binary(binary) => binary.fmt(f),
            MetricExpr::Literal(value) => write_number(f, *value),
            MetricExpr::Vector(value) => write!(f, "vector({})", Number(*value)),
            MetricExpr::LabelReplace(lr) => write!(
                f,
                "label_replace({}, {}, {}, {}, {})",
                lr.expr,
                Quoted(&lr.dst),
                Quoted(&lr.replacement),
                Quoted(&lr.src),
                Quoted(&lr.regex)
            ),
        }
    }
}

impl BinaryExpr {
    fn fmt_operand(f: &mut fmt::Formatter<'_>, operand: &MetricExpr, parens: bool) -> fmt::Result {
        if parens {
            write!(f, "({operand})")
        } else {
            operand.fmt(f)
        }
    }
}

impl fmt::Display for BinaryExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let precedence = self.op.precedence();
        let right_assoc = self.op.is_right_associative();
        let child_precedence = |e: &MetricExpr| match e {
            MetricExpr::Binary(b) => Some(b.op.precedence()),
            _ => None,
        };
        let lhs_parens =
            child_precedence(&self.lhs).is_some_and(|p| p < precedence || (p == precedence && right_assoc));
        let rhs_parens =
            child_precedence(&self.rhs).is_some_and(|p| p < precedence || (p == precedence && !right_assoc));
        Self::fmt_operand(f, &self.lhs, lhs_parens)?;
        write!(f, " {}", self.op.as_str())?;
        if self.return_bool {
            f.write_str(" bool")?;
        }
        if let Some(matching) = &self.matching {
            f.write_str(if matching.on { " on " } else { " ignoring " })?;
            write_labels(f, &matching.labels)?;
            match &matching.group {
                Some(MatchGroup::Left(labels)) => {
                    f.write_str(" group_left ")?;
                    write_labels(f, labels)?;
                }
                Some(MatchGroup::Right(labels)) => {
                    f.write_str(" group_right ")?;
                    write_labels(f, labels)?;
                }
                None => {}
            }
        }
        f.write_char(' ')?;
        Self::fmt_operand(f, &self.rhs, rhs_parens)
    }
}
