//! Printing any tree the parser can build and parsing the text gives the
//! same tree back. The trees are generated, so the printer's parenthesising
//! and quoting are tested on shapes no hand-written query covers.

use proptest::prelude::*;
use tidewatch_model::{MatchOp, Matcher};
use tidewatch_query::logql::*;

fn label() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "app",
        "job",
        "pod",
        "level",
        "status",
        "__error__",
        "_x1",
        "rate",
        "sum",
        "bytes",
        "ip",
    ])
    .prop_map(str::to_string)
}

/// Any text, including quotes, escapes, control characters and non-ASCII.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9 ]{0,6}",
        "[\"\\\\\n\t`{}|#=\\x00\\x7f]{0,4}",
        "\\PC{0,4}",
        Just("{{.msg}}".to_string()),
    ]
}

fn regex_text() -> impl Strategy<Value = String> {
    prop::sample::select(vec![".+", "a|b", "x.*", "(?i)foo", "[0-9]+", "\\d+"]).prop_map(str::to_string)
}

fn matcher() -> impl Strategy<Value = Matcher> {
    prop_oneof![
        (label(), text()).prop_map(|(name, value)| Matcher::equal(name, value)),
        (label(), text()).prop_map(|(name, value)| Matcher::new(MatchOp::NotEqual, name, value).unwrap()),
        (label(), regex_text()).prop_map(|(name, value)| Matcher::new(MatchOp::RegexMatch, name, value).unwrap()),
        (label(), regex_text()).prop_map(|(name, value)| Matcher::new(MatchOp::RegexNoMatch, name, value).unwrap()),
    ]
}

fn selector() -> impl Strategy<Value = Vec<Matcher>> {
    // The first matcher cannot match the empty value, as Loki requires.
    (label(), "[a-z]{1,4}", prop::collection::vec(matcher(), 0..3)).prop_map(|(name, value, rest)| {
        let mut matchers = vec![Matcher::equal(name, value)];
        matchers.extend(rest);
        matchers
    })
}

fn cmp_op() -> impl Strategy<Value = CmpOp> {
    prop::sample::select(vec![CmpOp::Eq, CmpOp::Ne, CmpOp::Gt, CmpOp::Ge, CmpOp::Lt, CmpOp::Le])
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
        (-1000i32..1000).prop_map(f64::from),
        Just(-0.0),
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        any::<i64>().prop_map(Duration::from_nanos),
        (0i64..10_000_000).prop_map(|ms| Duration::from_nanos(ms * 1_000_000)),
    ]
}

/// Ranges come from Prometheus durations: whole, non-negative milliseconds.
fn range() -> impl Strategy<Value = Duration> {
    (0i64..9_000_000_000_000).prop_map(|ms| Duration::from_nanos(ms * 1_000_000))
}

fn label_filter_leaf() -> impl Strategy<Value = LabelFilter> {
    prop_oneof![
        matcher().prop_map(LabelFilter::Matcher),
        (label(), any::<bool>(), "[0-9./:]{1,8}").prop_map(|(name, negated, pattern)| LabelFilter::Ip {
            name,
            negated,
            pattern
        }),
        (label(), cmp_op(), duration()).prop_map(|(name, op, value)| LabelFilter::Duration { name, op, value }),
        // Byte sizes are float products in Loki, so they fit in an f64.
        (label(), cmp_op(), 0u64..(1 << 53)).prop_map(|(name, op, value)| LabelFilter::Bytes { name, op, value }),
        (label(), cmp_op(), finite()).prop_map(|(name, op, value)| LabelFilter::Number { name, op, value }),
    ]
}

fn label_filter() -> impl Strategy<Value = LabelFilter> {
    label_filter_leaf().prop_recursive(4, 16, 2, |inner| {
        prop_oneof![
            (
                inner.clone(),
                inner.clone(),
                prop::sample::select(vec![AndKind::Keyword, AndKind::Comma])
            )
                .prop_map(|(left, right, kind)| LabelFilter::And {
                    left: Box::new(left),
                    right: Box::new(right),
                    kind
                }),
            (inner.clone(), inner).prop_map(|(left, right)| LabelFilter::Or {
                left: Box::new(left),
                right: Box::new(right)
            }),
        ]
    })
}

fn extraction() -> impl Strategy<Value = LabelExtraction> {
    prop_oneof![
        label().prop_map(|label| LabelExtraction {
            expression: label.clone(),
            label
        }),
        (label(), text()).prop_map(|(label, expression)| LabelExtraction { label, expression }),
    ]
}

fn stage() -> impl Strategy<Value = Stage> {
    let line_filter_op = prop::sample::select(vec![
        LineFilterOp::Contains,
        LineFilterOp::NotContains,
        LineFilterOp::Regex,
        LineFilterOp::NotRegex,
        LineFilterOp::Pattern,
        LineFilterOp::NotPattern,
    ]);
    let value = prop_oneof![
        text().prop_map(LineFilterValue::Text),
        text().prop_map(LineFilterValue::Ip)
    ];
    let named = prop_oneof![
        label().prop_map(NamedMatcher::Name),
        matcher().prop_map(NamedMatcher::Matcher)
    ];
    let format = prop_oneof![
        (label(), label()).prop_map(|(dst, src)| LabelFormat::Rename { dst, src }),
        (label(), text()).prop_map(|(dst, template)| LabelFormat::Template { dst, template }),
    ];
    prop_oneof![
        (line_filter_op, prop::collection::vec(value, 1..4))
            .prop_map(|(op, values)| Stage::LineFilter(LineFilter { op, values })),
        (any::<bool>(), any::<bool>(), prop::collection::vec(extraction(), 0..3)).prop_map(
            |(strict, keep_empty, extractions)| Stage::Logfmt {
                strict,
                keep_empty,
                extractions
            }
        ),
        prop::collection::vec(extraction(), 0..3).prop_map(|extractions| Stage::Json { extractions }),
        prop::sample::select(vec!["(?P<a>\\w+)", "(?P<x>.)\"(?P<y>.*)"]).prop_map(|p| Stage::Regexp(p.to_string())),
        prop::sample::select(vec!["<a> <_>", "\"<ip>\" - <b>"]).prop_map(|p| Stage::Pattern(p.to_string())),
        Just(Stage::Unpack),
        label_filter().prop_map(Stage::LabelFilter),
        text().prop_map(Stage::LineFormat),
        prop::collection::vec(format, 1..3).prop_map(Stage::LabelFormat),
        Just(Stage::Decolorize),
        prop::collection::vec(named.clone(), 1..3).prop_map(Stage::Drop),
        prop::collection::vec(named, 1..3).prop_map(Stage::Keep),
    ]
}

/// `| drop a` followed by `!= "x"` (or `!~`) cannot be written: LogQL reads
/// `a != "x"` as a matcher of the `drop`, as Loki's grammar does, so the
/// parser never builds such a pipeline and the printer need not express it.
fn expressible(pipeline: &[Stage]) -> bool {
    pipeline.windows(2).all(|pair| match pair {
        [Stage::Drop(items) | Stage::Keep(items), Stage::LineFilter(filter)] => {
            !(matches!(items.last(), Some(NamedMatcher::Name(_)))
                && matches!(filter.op, LineFilterOp::NotContains | LineFilterOp::NotRegex))
        }
        _ => true,
    })
}

fn log_expr() -> impl Strategy<Value = LogExpr> {
    (selector(), prop::collection::vec(stage(), 0..4))
        .prop_filter("expressible in LogQL", |(_, pipeline)| expressible(pipeline))
        .prop_map(|(matchers, pipeline)| LogExpr { matchers, pipeline })
}

fn grouping() -> impl Strategy<Value = Grouping> {
    (any::<bool>(), prop::collection::vec(label(), 0..3)).prop_map(|(without, labels)| Grouping { without, labels })
}

fn unwrap() -> impl Strategy<Value = Unwrap> {
    let conversion = prop::option::of(prop::sample::select(vec![
        UnwrapConversion::Bytes,
        UnwrapConversion::Duration,
        UnwrapConversion::DurationSeconds,
    ]));
    (label(), conversion, prop::collection::vec(label_filter(), 0..2)).prop_map(|(label, conversion, post_filters)| {
        Unwrap {
            label,
            conversion,
            post_filters,
        }
    })
}

/// Only the combinations Loki accepts (the others fail the parse on purpose).
fn range_aggregation() -> impl Strategy<Value = MetricExpr> {
    (
        prop::sample::select(RangeOp::ALL.to_vec()),
        log_expr(),
        range(),
        prop::option::of(duration()),
        unwrap(),
        any::<bool>(),
        grouping(),
        any::<bool>(),
        0.0f64..1.0,
    )
        .prop_map(|(op, log, range, offset, unwrap, use_unwrap, grouping, grouped, phi)| {
            let unwrap = (!op.allows_lines() || (use_unwrap && op.allows_unwrap())).then_some(unwrap);
            MetricExpr::RangeAggregation(RangeAggregation {
                op,
                param: (op == RangeOp::QuantileOverTime).then_some(phi),
                range: LogRange {
                    log,
                    range,
                    offset,
                    unwrap,
                },
                grouping: (grouped && op.allows_grouping()).then_some(grouping),
            })
        })
}

fn is_literal(expr: &MetricExpr) -> bool {
    match expr {
        MetricExpr::Literal(_) => true,
        MetricExpr::Binary(b) => !b.op.is_set_operator() && is_literal(&b.lhs) && is_literal(&b.rhs),
        _ => false,
    }
}

fn vector_matching() -> impl Strategy<Value = Option<VectorMatching>> {
    let group = prop::option::of(prop_oneof![
        prop::collection::vec(label(), 0..2).prop_map(MatchGroup::Left),
        prop::collection::vec(label(), 0..2).prop_map(MatchGroup::Right),
    ]);
    prop::option::of(
        (any::<bool>(), prop::collection::vec(label(), 0..3), group).prop_map(|(on, labels, group)| VectorMatching {
            on,
            labels,
            group,
        }),
    )
}

fn metric_expr() -> impl Strategy<Value = MetricExpr> {
    let leaf = prop_oneof![
        range_aggregation(),
        finite().prop_map(MetricExpr::Literal),
        (0.0f64..1e6).prop_map(MetricExpr::Vector),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (
                prop::sample::select(VectorOp::ALL.to_vec()),
                inner.clone(),
                1i64..100,
                prop::option::of(grouping())
            )
                .prop_map(|(op, expr, k, grouping)| {
                    let grouping = match op {
                        VectorOp::ApproxTopk => None,
                        VectorOp::Sort | VectorOp::SortDesc => grouping.map(|g| Grouping { labels: vec![], ..g }),
                        _ => grouping,
                    };
                    MetricExpr::VectorAggregation(VectorAggregation {
                        op,
                        param: op.takes_param().then_some(k),
                        expr: Box::new(expr),
                        grouping,
                    })
                }),
            (
                prop::sample::select(BinaryOp::ALL.to_vec()),
                inner.clone(),
                inner.clone(),
                any::<bool>(),
                vector_matching()
            )
                .prop_filter("set operators take no literal", |(op, lhs, rhs, _, _)| {
                    !op.is_set_operator() || !(is_literal(lhs) || is_literal(rhs))
                })
                .prop_map(|(op, lhs, rhs, return_bool, matching)| MetricExpr::Binary(BinaryExpr {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                    return_bool,
                    matching,
                })),
            (inner, text(), text(), label(), regex_text()).prop_map(|(expr, dst, replacement, src, regex)| {
                MetricExpr::LabelReplace(LabelReplace {
                    expr: Box::new(expr),
                    dst,
                    replacement,
                    src,
                    regex,
                })
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn log_queries_round_trip(log in log_expr()) {
        let expr = Expr::Log(log);
        let printed = expr.to_string();
        prop_assert_eq!(parse(&printed), Ok(expr), "printed: {}", printed);
    }

    #[test]
    fn metric_queries_round_trip(metric in metric_expr()) {
        let expr = Expr::Metric(metric);
        let printed = expr.to_string();
        prop_assert_eq!(parse(&printed), Ok(expr), "printed: {}", printed);
    }

    /// Whatever parses prints to text that parses to the same tree, and
    /// nothing panics on arbitrary input.
    #[test]
    fn parsed_text_round_trips(input in "[{}()\\[\\]|=!~<>,a-z0-9\"` .+*/%^-]{0,40}") {
        if let Ok(expr) = parse(&input) {
            let printed = expr.to_string();
            prop_assert_eq!(parse(&printed), Ok(expr), "input: {} printed: {}", input, printed);
        }
    }
}
