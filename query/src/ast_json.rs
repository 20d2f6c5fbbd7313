//! A parsed query as the JSON tree `/api/v1/parse_query` answers with — the
//! shape Prometheus' UI draws its tree view from.

use promql_parser::label::{MatchOp, Matchers};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{AtModifier, Expr, LabelModifier, Offset, VectorMatchCardinality};
use serde_json::{Value, json};

use crate::api::format_value;

/// The JSON tree of `expr`.
pub fn translate(expr: &Expr) -> Value {
    match expr {
        Expr::Aggregate(aggregate) => {
            let (grouping, without) = match &aggregate.modifier {
                Some(LabelModifier::Include(labels)) => (labels.labels.clone(), false),
                Some(LabelModifier::Exclude(labels)) => (labels.labels.clone(), true),
                None => (Vec::new(), false),
            };
            json!({
                "type": "aggregation",
                "op": aggregate.op.to_string(),
                "expr": translate(&aggregate.expr),
                "param": aggregate.param.as_deref().map_or(Value::Null, translate),
                "grouping": grouping,
                "without": without,
            })
        }
        Expr::Binary(binary) => {
            let matching = match &binary.modifier {
                Some(modifier) => {
                    let (card, include) = match &modifier.card {
                        VectorMatchCardinality::OneToOne => ("one-to-one", Vec::new()),
                        VectorMatchCardinality::ManyToOne(labels) => ("many-to-one", labels.labels.clone()),
                        VectorMatchCardinality::OneToMany(labels) => ("one-to-many", labels.labels.clone()),
                        VectorMatchCardinality::ManyToMany => ("many-to-many", Vec::new()),
                    };
                    let (labels, on) = match &modifier.matching {
                        Some(LabelModifier::Include(labels)) => (labels.labels.clone(), true),
                        Some(LabelModifier::Exclude(labels)) => (labels.labels.clone(), false),
                        None => (Vec::new(), false),
                    };
                    json!({"card": card, "labels": labels, "on": on, "include": include})
                }
                // Prometheus always has matching for vector-vector operations;
                // set operators are many-to-many.
                None if binary.lhs.value_type() == ValueType::Vector
                    && binary.rhs.value_type() == ValueType::Vector =>
                {
                    let card = if binary.op.is_set_operator() {
                        "many-to-many"
                    } else {
                        "one-to-one"
                    };
                    json!({"card": card, "labels": [], "on": false, "include": []})
                }
                None => Value::Null,
            };
            json!({
                "type": "binaryExpr",
                "op": binary.op.to_string(),
                "lhs": translate(&binary.lhs),
                "rhs": translate(&binary.rhs),
                "matching": matching,
                "bool": binary.return_bool(),
            })
        }
        Expr::Call(call) => json!({
            "type": "call",
            "func": {
                "name": call.func.name,
                "argTypes": call.func.arg_types.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "variadic": call.func.variadic,
                "returnType": call.func.return_type.to_string(),
            },
            "args": call.args.args.iter().map(|a| translate(a)).collect::<Vec<_>>(),
        }),
        Expr::MatrixSelector(matrix) => {
            let vs = &matrix.vs;
            json!({
                "type": "matrixSelector",
                "name": vs.name.clone().unwrap_or_default(),
                "range": millis(matrix.range),
                "offset": offset_ms(&vs.offset),
                "matchers": matchers(&vs.matchers, vs.name.as_deref()),
                "timestamp": timestamp(&vs.at),
                "startOrEnd": start_or_end(&vs.at),
            })
        }
        Expr::Subquery(subquery) => json!({
            "type": "subquery",
            "expr": translate(&subquery.expr),
            "range": millis(subquery.range),
            "offset": offset_ms(&subquery.offset),
            "step": subquery.step.map_or(0, millis),
            "timestamp": timestamp(&subquery.at),
            "startOrEnd": start_or_end(&subquery.at),
        }),
        Expr::NumberLiteral(number) => json!({"type": "numberLiteral", "val": format_value(number.val)}),
        Expr::Paren(paren) => json!({"type": "parenExpr", "expr": translate(&paren.expr)}),
        Expr::StringLiteral(string) => json!({"type": "stringLiteral", "val": string.val}),
        Expr::Unary(unary) => json!({"type": "unaryExpr", "op": "-", "expr": translate(&unary.expr)}),
        Expr::VectorSelector(vs) => json!({
            "type": "vectorSelector",
            "name": vs.name.clone().unwrap_or_default(),
            "offset": offset_ms(&vs.offset),
            "matchers": matchers(&vs.matchers, vs.name.as_deref()),
            "timestamp": timestamp(&vs.at),
            "startOrEnd": start_or_end(&vs.at),
        }),
        Expr::Extension(_) => Value::Null,
    }
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        Some(Offset::Pos(d)) => millis(*d),
        Some(Offset::Neg(d)) => -millis(*d),
        None => 0,
    }
}

fn timestamp(at: &Option<AtModifier>) -> Value {
    match at {
        Some(AtModifier::At(time)) => match time.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => json!(millis(after)),
            Err(before) => json!(-millis(before.duration())),
        },
        _ => Value::Null,
    }
}

fn start_or_end(at: &Option<AtModifier>) -> Value {
    match at {
        Some(AtModifier::Start) => json!("start"),
        Some(AtModifier::End) => json!("end"),
        _ => Value::Null,
    }
}

/// A selector's matchers, the metric name first as Prometheus lists it.
fn matchers(matchers: &Matchers, name: Option<&str>) -> Value {
    let mut out = Vec::new();
    let has_name_matcher = matchers.matchers.iter().any(|m| m.name == "__name__");
    if let (Some(name), false) = (name, has_name_matcher) {
        out.push(json!({"name": "__name__", "value": name, "type": "="}));
    }
    for matcher in matchers.matchers.iter().chain(matchers.or_matchers.iter().flatten()) {
        let op = match &matcher.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Re(_) => "=~",
            MatchOp::NotRe(_) => "!~",
        };
        out.push(json!({"name": matcher.name, "value": matcher.value, "type": op}));
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_aggregations_translate_like_prometheus() {
        let expr =
            promql_parser::parser::parse("sum by (job) (rate(http_requests_total{code=~\"5..\"}[5m] offset 1m))")
                .unwrap();
        let tree = translate(&expr);
        assert_eq!(tree["type"], "aggregation");
        assert_eq!(tree["op"], "sum");
        assert_eq!(tree["grouping"], json!(["job"]));
        assert_eq!(tree["without"], false);
        let call = &tree["expr"];
        assert_eq!(call["type"], "call");
        assert_eq!(call["func"]["name"], "rate");
        assert_eq!(call["func"]["returnType"], "vector");
        let matrix = &call["args"][0];
        assert_eq!(matrix["type"], "matrixSelector");
        assert_eq!(matrix["range"], 300_000);
        assert_eq!(matrix["offset"], 60_000);
        assert_eq!(matrix["timestamp"], Value::Null);
        assert_eq!(
            matrix["matchers"],
            json!([
                {"name": "__name__", "value": "http_requests_total", "type": "="},
                {"name": "code", "value": "5..", "type": "=~"}
            ])
        );
    }

    #[test]
    fn binary_expressions_carry_matching() {
        let tree = translate(&promql_parser::parser::parse("a / on(job) group_left(env) b").unwrap());
        assert_eq!(tree["op"], "/");
        assert_eq!(
            tree["matching"],
            json!({"card": "many-to-one", "labels": ["job"], "on": true, "include": ["env"]})
        );
        let scalar = translate(&promql_parser::parser::parse("1 + 2").unwrap());
        assert_eq!(scalar["matching"], Value::Null);
        assert_eq!(scalar["lhs"], json!({"type": "numberLiteral", "val": "1"}));
    }
}
