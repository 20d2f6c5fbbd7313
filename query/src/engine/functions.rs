//! PromQL functions: dispatch, argument handling and label work. The numeric
//! cores live in [`kernels`](super::kernels).

use std::collections::HashMap;

use chrono::{Datelike, TimeZone, Timelike};
use promql_parser::parser::{Call, Expr};
use tidewatch_model::seam::{NO_START_TIMESTAMP, SeriesRead};
use tidewatch_model::{FloatHistogram, Label, Labels, METRIC_NAME, Sample, TimestampMs};

use super::Evaluator;
use super::go_strings::GoString;
use std::sync::Arc;

use tidewatch_model::histogram::CounterResetHint;

use super::data::{
    Data, HPoint, HSample, Point, RangeSeries, Series, StepCursor, StepValue, go_max, go_min, without_name,
};
use super::histogram as hist;
use super::histogram::{HistogramMean, KahanSum};
use super::kernels::{self, Bucket};
use super::selector::{self, Sampled, Windows};
use crate::error::Error;

pub(crate) async fn call<S: SeriesRead>(ev: &Evaluator<'_, S>, node: &Expr, call: &Call) -> Result<Data, Error> {
    let name = call.func.name;
    let args: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
    let arg = |i: usize| -> Result<&Expr, Error> {
        args.get(i)
            .copied()
            .ok_or_else(|| Error::bad_data(format!("missing argument {} of {name}()", i + 1)))
    };
    match name {
        "time" => Ok(Data::Scalar(ev.step_times().map(|t| t as f64 / 1000.0).collect())),
        "pi" => Ok(Data::Scalar(vec![std::f64::consts::PI; ev.step_count()])),
        "start" => Ok(Data::Scalar(vec![ev.query_start as f64 / 1000.0; ev.step_count()])),
        "end" => Ok(Data::Scalar(vec![ev.query_end as f64 / 1000.0; ev.step_count()])),
        "range" => Ok(Data::Scalar(vec![
            (ev.query_end - ev.query_start) as f64 / 1000.0;
            ev.step_count()
        ])),
        "step" => Ok(Data::Scalar(vec![ev.query_step as f64 / 1000.0; ev.step_count()])),
        "min_of" | "max_of" => {
            let (a, b) = (ev.eval_scalar(arg(0)?).await?, ev.eval_scalar(arg(1)?).await?);
            let pick = if name == "min_of" { go_min } else { go_max };
            Ok(Data::Scalar(a.iter().zip(&b).map(|(&x, &y)| pick(x, y)).collect()))
        }
        "vector" => {
            let values = ev.eval_scalar(arg(0)?).await?;
            let points = values
                .into_iter()
                .enumerate()
                .map(|(i, value)| Point { step: i as u32, value })
                .collect();
            Ok(Data::Vector(vec![Series::new(Labels::default(), false, points)]))
        }
        "scalar" => {
            let series = ev.eval_vector(arg(0)?).await?;
            let mut values = vec![f64::NAN; ev.step_count()];
            let mut counts = vec![0u32; ev.step_count()];
            for entry in &series {
                for point in &entry.points {
                    counts[point.step as usize] += 1;
                    values[point.step as usize] = point.value;
                }
            }
            for (value, count) in values.iter_mut().zip(counts) {
                if count != 1 {
                    *value = f64::NAN;
                }
            }
            Ok(Data::Scalar(values))
        }
        "timestamp" => {
            let mut inner = arg(0)?;
            while let Expr::Paren(paren) = inner {
                inner = &paren.expr;
            }
            let mut series = match inner {
                // A selector's samples keep their own timestamps.
                Expr::VectorSelector(vs) => selector::instant(ev, vs, Sampled::Timestamp).await?,
                other => {
                    let mut series = ev.eval_vector(other).await?;
                    for entry in &mut series {
                        let histogram_steps = std::mem::take(&mut entry.histograms).into_iter().map(|p| p.step);
                        entry
                            .points
                            .extend(histogram_steps.map(|step| Point { step, value: 0.0 }));
                        entry.points.sort_by_key(|p| p.step);
                        for point in &mut entry.points {
                            point.value = ev.step_time(point.step as usize) as f64 / 1000.0;
                        }
                    }
                    series
                }
            };
            series.iter_mut().for_each(|s| s.drop_name = true);
            Ok(Data::Vector(series))
        }
        "start_timestamp" => {
            let mut inner = arg(0)?;
            while let Expr::Paren(paren) = inner {
                inner = &paren.expr;
            }
            // Only a selector's samples have start timestamps; any other
            // expression's values have none, and give no result (as in
            // Prometheus).
            let mut series = match inner {
                Expr::VectorSelector(vs) => selector::instant(ev, vs, Sampled::StartTimestamp).await?,
                other => {
                    ev.eval_vector(other).await?;
                    Vec::new()
                }
            };
            series.iter_mut().for_each(|s| s.drop_name = true);
            Ok(Data::Vector(series))
        }
        "abs" => map(ev, arg(0)?, f64::abs).await,
        "ceil" => map(ev, arg(0)?, f64::ceil).await,
        "floor" => map(ev, arg(0)?, f64::floor).await,
        "exp" => map(ev, arg(0)?, f64::exp).await,
        "ln" => map(ev, arg(0)?, f64::ln).await,
        "log2" => map(ev, arg(0)?, f64::log2).await,
        "log10" => map(ev, arg(0)?, f64::log10).await,
        "sqrt" => map(ev, arg(0)?, f64::sqrt).await,
        "sgn" => {
            map(ev, arg(0)?, |v| {
                if v < 0.0 {
                    -1.0
                } else if v > 0.0 {
                    1.0
                } else {
                    v
                }
            })
            .await
        }
        "sin" => map(ev, arg(0)?, f64::sin).await,
        "cos" => map(ev, arg(0)?, f64::cos).await,
        "tan" => map(ev, arg(0)?, f64::tan).await,
        "asin" => map(ev, arg(0)?, f64::asin).await,
        "acos" => map(ev, arg(0)?, f64::acos).await,
        "atan" => map(ev, arg(0)?, f64::atan).await,
        "sinh" => map(ev, arg(0)?, f64::sinh).await,
        "cosh" => map(ev, arg(0)?, f64::cosh).await,
        "tanh" => map(ev, arg(0)?, f64::tanh).await,
        "asinh" => map(ev, arg(0)?, f64::asinh).await,
        "acosh" => map(ev, arg(0)?, f64::acosh).await,
        "atanh" => map(ev, arg(0)?, f64::atanh).await,
        "deg" => map(ev, arg(0)?, |v| v * 180.0 / std::f64::consts::PI).await,
        "rad" => map(ev, arg(0)?, |v| v * std::f64::consts::PI / 180.0).await,
        "round" => {
            let to_nearest = match args.get(1) {
                Some(expr) => ev.eval_scalar(expr).await?,
                None => vec![1.0; ev.step_count()],
            };
            map_with(ev, arg(0)?, |v, step| {
                let inverse = 1.0 / to_nearest[step];
                Some((v * inverse + 0.5).floor() / inverse)
            })
            .await
        }
        "clamp" => {
            let min = ev.eval_scalar(arg(1)?).await?;
            let max = ev.eval_scalar(arg(2)?).await?;
            // An empty range (max < min) yields nothing; NaN bounds yield NaN.
            map_with(ev, arg(0)?, |v, step| {
                let empty = max[step] < min[step];
                (!empty).then(|| go_max(min[step], go_min(max[step], v)))
            })
            .await
        }
        "clamp_min" => {
            let min = ev.eval_scalar(arg(1)?).await?;
            map_with(ev, arg(0)?, |v, step| Some(go_max(v, min[step]))).await
        }
        "clamp_max" => {
            let max = ev.eval_scalar(arg(1)?).await?;
            map_with(ev, arg(0)?, |v, step| Some(go_min(v, max[step]))).await
        }
        "minute" | "hour" | "day_of_week" | "day_of_month" | "day_of_year" | "days_in_month" | "month" | "year" => {
            date_function(ev, name, args.first().copied()).await
        }
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" if ev.range_query => {
            ev.shared.warn(
                "sort is ineffective for range queries since results are always ordered by labels".to_string(),
                node,
            );
            Ok(Data::Vector(ev.eval_vector(arg(0)?).await?))
        }
        "sort" | "sort_desc" => {
            let mut series = ev.eval_vector(arg(0)?).await?;
            // Sorting is by float value: histograms are left out.
            series.iter_mut().for_each(|s| s.histograms.clear());
            series.retain(|s| !s.points.is_empty());
            {
                let value = |s: &Series| s.points.first().map_or(f64::NAN, |p| p.value);
                // NaN sorts last either way.
                series.sort_by(|a, b| {
                    let (x, y) = (value(a), value(b));
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if name == "sort" => x.total_cmp(&y),
                        _ => y.total_cmp(&x),
                    }
                });
            }
            Ok(Data::Vector(series))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut series = ev.eval_vector(arg(0)?).await?;
            let mut names = Vec::new();
            for expr in &args[1..] {
                names.push(string_arg(expr)?);
            }
            series.sort_by(|a, b| {
                let mut ordering = std::cmp::Ordering::Equal;
                for name in &names {
                    let (x, y) = (a.labels.get(name).unwrap_or(""), b.labels.get(name).unwrap_or(""));
                    ordering = natural_cmp(x, y);
                    if ordering.is_ne() {
                        break;
                    }
                }
                let ordering = ordering.then_with(|| a.labels.cmp(&b.labels));
                if name == "sort_by_label" {
                    ordering
                } else {
                    ordering.reverse()
                }
            });
            Ok(Data::Vector(series))
        }
        "label_replace" => label_replace(ev, &args).await,
        "info" => super::info::info(ev, &args).await,
        "label_join" => label_join(ev, &args).await,
        "absent" => {
            let series = ev.eval_vector(arg(0)?).await?;
            let mut present = vec![false; ev.step_count()];
            for entry in &series {
                for step in entry
                    .points
                    .iter()
                    .map(|p| p.step)
                    .chain(entry.histograms.iter().map(|p| p.step))
                {
                    present[step as usize] = true;
                }
            }
            Ok(Data::Vector(absent_series(absent_labels(arg(0)?), &present)))
        }
        "absent_over_time" => {
            let windows = selector::windows(ev, arg(0)?).await?;
            let present: Vec<bool> = (0..ev.step_count())
                .map(|step| {
                    (0..windows.series.len())
                        .any(|i| !windows.slice(i, step).is_empty() || !windows.histogram_range(i, step).is_empty())
                })
                .collect();
            Ok(Data::Vector(absent_series(absent_labels(arg(0)?), &present)))
        }
        "histogram_quantile" => {
            let q = ev.eval_scalar(arg(0)?).await?;
            let series = ev.eval_vector(arg(1)?).await?;
            histogram_quantile(ev, &q, series, arg(0)?, arg(1)?)
        }
        "histogram_quantiles" => {
            let series = ev.eval_vector(arg(0)?).await?;
            let label = string_arg(arg(1)?)?;
            if let Some(clash) = series.iter().find(|s| s.labels.get(&label).is_some()) {
                return Err(Error::execution(format!(
                    "label {label:?} already exists on series {}",
                    clash.labels
                )));
            }
            let mut out = Vec::new();
            for q_expr in args.iter().skip(2) {
                let q = ev.eval_scalar(q_expr).await?;
                let Data::Vector(quantiles) = histogram_quantile(ev, &q, series.clone(), q_expr, arg(0)?)? else {
                    continue;
                };
                for mut entry in quantiles {
                    // One quantile per label value; q is constant across steps.
                    let value = open_metrics_float(q.first().copied().unwrap_or(f64::NAN));
                    entry.labels = with_label(&entry.labels, &label, &value);
                    out.push(entry);
                }
            }
            Ok(Data::Vector(out))
        }
        "histogram_fraction" => {
            let lower = ev.eval_scalar(arg(0)?).await?;
            let upper = ev.eval_scalar(arg(1)?).await?;
            let series = ev.eval_vector(arg(2)?).await?;
            histogram_fraction(ev, &lower, &upper, series, arg(2)?)
        }
        // Only native histograms have these; float samples yield nothing.
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev" | "histogram_stdvar" => {
            let series = ev.eval_vector(arg(0)?).await?;
            let statistic = |h: &FloatHistogram| match name {
                "histogram_count" => h.count,
                "histogram_sum" => h.sum,
                "histogram_avg" => h.sum / h.count,
                "histogram_stddev" => hist::variance(h).sqrt(),
                _ => hist::variance(h),
            };
            Ok(Data::Vector(native_values(series, |_, h, _| statistic(h))))
        }
        _ => range_function(ev, name, &args).await,
    }
}

/// A string literal argument (label names in `label_*`, `sort_by_label`).
fn string_arg(expr: &Expr) -> Result<String, Error> {
    match unparenthesized(expr) {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        other => Err(Error::bad_data(format!("expected a string literal, got {other}"))),
    }
}

/// A string literal argument as Prometheus reads it, which may not be UTF-8.
fn go_string_arg<S: SeriesRead>(ev: &Evaluator<'_, S>, expr: &Expr) -> Result<GoString, Error> {
    let value = string_arg(expr)?;
    Ok(ev.shared.go_string(unparenthesized(expr), &value))
}

fn unparenthesized(mut expr: &Expr) -> &Expr {
    while let Expr::Paren(paren) = expr {
        expr = &paren.expr;
    }
    expr
}

async fn map<S: SeriesRead>(ev: &Evaluator<'_, S>, arg: &Expr, f: impl Fn(f64) -> f64) -> Result<Data, Error> {
    map_with(ev, arg, |v, _| Some(f(v))).await
}

/// Applies `f(value, step)` to every point, dropping points where it gives
/// `None`; the metric name goes, as for every function that changes values.
async fn map_with<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    arg: &Expr,
    f: impl Fn(f64, usize) -> Option<f64>,
) -> Result<Data, Error> {
    let mut series = ev.eval_vector(arg).await?;
    for entry in &mut series {
        entry.drop_name = true;
        // Float functions skip native histograms.
        entry.histograms.clear();
        entry.points.retain_mut(|p| match f(p.value, p.step as usize) {
            Some(v) => {
                p.value = v;
                true
            }
            None => false,
        });
    }
    series.retain(|s| !s.points.is_empty());
    Ok(Data::Vector(series))
}

async fn date_function<S: SeriesRead>(ev: &Evaluator<'_, S>, name: &str, arg: Option<&Expr>) -> Result<Data, Error> {
    let series = match arg {
        Some(expr) => ev.eval_vector(expr).await?,
        // Without an argument: vector(time()).
        None => vec![Series::new(
            Labels::default(),
            false,
            ev.step_times()
                .enumerate()
                .map(|(i, t)| Point {
                    step: i as u32,
                    value: t as f64 / 1000.0,
                })
                .collect(),
        )],
    };
    let component = |seconds: f64| -> f64 {
        let Some(time) = chrono::Utc.timestamp_opt(seconds as i64, 0).single() else {
            return f64::NAN;
        };
        match name {
            "minute" => f64::from(time.minute()),
            "hour" => f64::from(time.hour()),
            "day_of_week" => f64::from(time.weekday().num_days_from_sunday()),
            "day_of_month" => f64::from(time.day()),
            "day_of_year" => f64::from(time.ordinal()),
            "days_in_month" => f64::from(days_in_month(time.year(), time.month())),
            "month" => f64::from(time.month()),
            _ => f64::from(time.year()),
        }
    };
    let mut series = series;
    for entry in &mut series {
        entry.drop_name = true;
        // Date functions read float timestamps; histograms have none to give.
        entry.histograms.clear();
        for point in &mut entry.points {
            point.value = component(point.value);
        }
    }
    series.retain(|s| !s.is_empty());
    Ok(Data::Vector(series))
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    chrono::NaiveDate::from_ymd_opt(next_year, next_month, 1)
        .and_then(|d| d.pred_opt())
        .map_or(31, |d| d.day())
}

/// A float as Go's `%g` (shortest) or `%.Ng` writes it in messages.
fn go_g(value: f64, significant: Option<usize>) -> String {
    if !value.is_finite() || value == 0.0 {
        return super::data::format_float(value);
    }
    let exponent = value.abs().log10().floor() as i32;
    let digits = significant.map_or(21, |d| d as i32);
    if exponent < -4 || exponent >= digits {
        let text = match significant {
            Some(d) => format!("{value:.prec$e}", prec = d.saturating_sub(1)),
            // Rust's `{:e}` is the shortest round-trip mantissa, like Go's.
            None => format!("{value:e}"),
        };
        let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.trim_end_matches('0').trim_end_matches('.')
        } else {
            mantissa
        };
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    match significant {
        None => super::data::format_float(value),
        Some(d) => {
            let decimals = (d as i32 - 1 - exponent).max(0) as usize;
            let text = format!("{value:.decimals$}");
            if text.contains('.') {
                text.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                text
            }
        }
    }
}

/// A float as OpenMetrics writes label values: integers keep a `.0`.
fn open_metrics_float(value: f64) -> String {
    let text = super::data::format_float(value);
    if value.is_finite() && !text.contains(['.', 'e']) {
        format!("{text}.0")
    } else {
        text
    }
}

/// Natural order: runs of digits compare as numbers, the rest as text.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let chunks = |s: &str| -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, chunk)) if *d == digit => chunk.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    };
    let (x, y) = (chunks(a), chunks(b));
    for ((dx, cx), (dy, cy)) in x.iter().zip(&y) {
        let ordering = if *dx && *dy {
            let (tx, ty) = (cx.trim_start_matches('0'), cy.trim_start_matches('0'));
            tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty))
        } else {
            cx.cmp(cy)
        };
        if ordering.is_ne() {
            return ordering;
        }
    }
    x.len().cmp(&y.len())
}

async fn label_replace<S: SeriesRead>(ev: &Evaluator<'_, S>, args: &[&Expr]) -> Result<Data, Error> {
    let [vector, dst, replacement, src, regex] = args else {
        return Err(Error::bad_data("label_replace() takes 5 arguments"));
    };
    let (dst, replacement, src, regex_text) = (
        go_string_arg(ev, dst)?,
        string_arg(replacement)?,
        go_string_arg(ev, src)?,
        go_string_arg(ev, regex)?,
    );
    // Prometheus finds these mistakes while evaluating, so they are
    // execution errors (422), not bad data. Go's regexp refuses a pattern
    // that is not UTF-8.
    let regex = match &regex_text {
        GoString::Utf8(text) => regex::Regex::new(&format!("^(?s:{text})$")).ok(),
        GoString::NotUtf8(_) => None,
    };
    let Some(regex) = regex else {
        return Err(Error::execution(format!(
            "invalid regular expression in label_replace(): {}",
            regex_text.lossy()
        )));
    };
    if !dst.is_label_name() {
        return Err(Error::execution(format!(
            "invalid destination label name in label_replace(): {}",
            dst.lossy()
        )));
    }
    let dst = dst.lossy();
    // A source name that is not UTF-8 names no label: its value is "".
    let src = match src {
        GoString::Utf8(name) => Some(name),
        GoString::NotUtf8(_) => None,
    };
    let mut series = ev.eval_vector(vector).await?;
    for entry in &mut series {
        let value = src.as_deref().and_then(|name| entry.labels.get(name)).unwrap_or("");
        if let Some(captures) = regex.captures(value) {
            let mut result = String::new();
            captures.expand(&replacement, &mut result);
            entry.labels = with_label(&entry.labels, &dst, &result);
            if dst == METRIC_NAME {
                entry.drop_name = false;
            }
        }
    }
    Ok(Data::Vector(series))
}

async fn label_join<S: SeriesRead>(ev: &Evaluator<'_, S>, args: &[&Expr]) -> Result<Data, Error> {
    let [vector, dst, separator, sources @ ..] = args else {
        return Err(Error::bad_data("label_join() takes at least 3 arguments"));
    };
    let (dst, separator) = (go_string_arg(ev, dst)?, string_arg(separator)?);
    let mut names = Vec::new();
    for source in sources {
        let name = go_string_arg(ev, source)?;
        if !name.is_label_name() {
            return Err(Error::execution(format!(
                "invalid source label name in label_join(): {}",
                name.lossy()
            )));
        }
        names.push(name.lossy());
    }
    if !dst.is_label_name() {
        return Err(Error::execution(format!(
            "invalid destination label name in label_join(): {}",
            dst.lossy()
        )));
    }
    let dst = dst.lossy();
    let mut series = ev.eval_vector(vector).await?;
    for entry in &mut series {
        let joined = names
            .iter()
            .map(|n| entry.labels.get(n).unwrap_or(""))
            .collect::<Vec<_>>()
            .join(&separator);
        entry.labels = with_label(&entry.labels, &dst, &joined);
        if dst == METRIC_NAME {
            entry.drop_name = false;
        }
    }
    Ok(Data::Vector(series))
}

/// `labels` with `name` set to `value`, or removed when `value` is empty.
fn with_label(labels: &Labels, name: &str, value: &str) -> Labels {
    let mut pairs: Vec<Label> = labels.iter().filter(|l| l.name != name).cloned().collect();
    if !value.is_empty() {
        pairs.push(Label::new(name, value));
        pairs.sort();
    }
    Labels::from_sorted(pairs)
}

/// The labels `absent()` reports: the selector's equality matchers, except
/// names that are matched more than once or otherwise.
fn absent_labels(expr: &Expr) -> Labels {
    let matchers = match expr {
        Expr::VectorSelector(vs) => &vs.matchers,
        Expr::MatrixSelector(ms) => &ms.vs.matchers,
        _ => return Labels::default(),
    };
    let mut set: Vec<Label> = Vec::new();
    let mut removed: Vec<&str> = Vec::new();
    let all = matchers.matchers.iter().chain(matchers.or_matchers.iter().flatten());
    for matcher in all {
        if matcher.name == METRIC_NAME {
            continue;
        }
        let equal = matches!(matcher.op, promql_parser::label::MatchOp::Equal);
        if equal && !set.iter().any(|l| l.name == matcher.name) {
            set.push(Label::new(matcher.name.clone(), matcher.value.clone()));
        } else {
            removed.push(&matcher.name);
        }
    }
    set.retain(|l| !removed.contains(&l.name.as_str()) && !l.value.is_empty());
    set.sort();
    Labels::from_sorted(set)
}

fn absent_series(labels: Labels, present: &[bool]) -> Vec<Series> {
    let points: Vec<Point> = present
        .iter()
        .enumerate()
        .filter(|(_, p)| !**p)
        .map(|(i, _)| Point {
            step: i as u32,
            value: 1.0,
        })
        .collect();
    if points.is_empty() {
        Vec::new()
    } else {
        vec![Series::new(labels, false, points)]
    }
}

/// Buckets of classic histograms, grouped per step by their labels without `le`.
fn bucket_groups<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    series: &[Series],
    node: &Expr,
) -> (Vec<usize>, Vec<Labels>, Vec<Option<f64>>) {
    let mut ids: HashMap<Labels, usize> = HashMap::new();
    let mut groups: Vec<Labels> = Vec::new();
    let mut group_of = Vec::with_capacity(series.len());
    let mut bounds = Vec::with_capacity(series.len());
    for entry in series {
        let bound = entry.labels.get("le").and_then(parse_go_float);
        if bound.is_none() {
            ev.shared.warn(
                format!(
                    "bucket label \"le\" is missing or has a malformed value of {:?} for metric name {:?}",
                    entry.labels.get("le").unwrap_or(""),
                    entry.labels.metric_name().unwrap_or("")
                ),
                node,
            );
        }
        bounds.push(bound);
        let key = Labels::from_sorted(entry.labels.iter().filter(|l| l.name != "le").cloned().collect());
        let id = *ids.entry(key.clone()).or_insert_with(|| {
            groups.push(key);
            groups.len() - 1
        });
        group_of.push(id);
    }
    (group_of, groups, bounds)
}

/// Parses a float as Go's `strconv.ParseFloat` accepts it (for `le` values).
fn parse_go_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// The classic-histogram functions' shared walk: at each step, each group's
/// buckets (series alike but for `le`) go to `reduce`, whose value becomes the
/// group's point; the group's labels lose `le` and the metric name.
fn reduce_buckets<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    series: &[Series],
    node: &Expr,
    mut reduce: impl FnMut(usize, &Labels, &mut Vec<Bucket>) -> f64,
) -> Vec<Series> {
    let (group_of, groups, bounds) = bucket_groups(ev, series, node);
    let mut buckets: Vec<Vec<Bucket>> = vec![Vec::new(); groups.len()];
    let mut out: Vec<Series> = groups
        .iter()
        .map(|l| Series::new(without_name(l), false, Vec::new()))
        .collect();
    let mut cursor = StepCursor::new(series.len());
    for step in 0..ev.step_count() {
        for (index, &group) in group_of.iter().enumerate() {
            let (Some(v), Some(bound)) = (cursor.value(series, index, step as u32), bounds[index]) else {
                continue;
            };
            buckets[group].push(Bucket {
                upper_bound: bound,
                count: v,
            });
        }
        for (group, list) in buckets.iter_mut().enumerate() {
            if list.is_empty() {
                continue;
            }
            let value = reduce(step, &groups[group], list);
            out[group].points.push(Point {
                step: step as u32,
                value,
            });
            list.clear();
        }
    }
    out.retain(|s| !s.points.is_empty());
    out
}

fn histogram_quantile<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    q: &[f64],
    series: Vec<Series>,
    q_node: &Expr,
    vector_node: &Expr,
) -> Result<Data, Error> {
    // Prometheus warns about the quantile even when there is nothing to compute.
    if let Some(bad) = q.iter().find(|q| !(0.0..=1.0).contains(*q)) {
        ev.shared.warn(
            format!(
                "quantile value should be between 0 and 1, got {}",
                super::data::format_float(*bad)
            ),
            q_node,
        );
    }
    let (classic, native) = split_native(ev, series, vector_node);
    let mut notes = Vec::new();
    let mut out = native_values(native, |step, h, name| {
        let (value, note) = hist::quantile(q[step], h);
        notes.push((note, name.to_string()));
        value
    });
    for (note, name) in notes {
        let message = match note {
            hist::NanNote::QuantileNaN => "input to histogram_quantile has NaN observations, result is NaN",
            hist::NanNote::QuantileSkewed => {
                "input to histogram_quantile has NaN observations, result is skewed higher"
            }
            _ => continue,
        };
        ev.shared.info(with_metric_name(message, &name), vector_node);
    }
    out.extend(reduce_buckets(ev, &classic, vector_node, |step, group, buckets| {
        let outcome = kernels::bucket_quantile(q[step], buckets);
        if outcome.forced_monotonicity {
            ev.shared.info(
                format!(
                    "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?}, from buckets {} to {}, with a max diff of {}",
                    group.metric_name().unwrap_or(""),
                    go_g(outcome.min_bucket, None),
                    go_g(outcome.max_bucket, None),
                    go_g(outcome.max_diff, Some(2)),
                ),
                vector_node,
            );
        }
        outcome.value
    }));
    Ok(Data::Vector(out))
}

/// Series with native histograms apart from series with floats (classic
/// buckets): each keeps only its own kind of values. Where a native
/// histogram and classic buckets of the same series meet at one step,
/// neither is used and Prometheus' warning says why.
fn split_native<S: SeriesRead>(ev: &Evaluator<'_, S>, series: Vec<Series>, node: &Expr) -> (Vec<Series>, Vec<Series>) {
    let mut classic: Vec<Series> = Vec::new();
    let mut native = Vec::new();
    for mut entry in series {
        if !entry.histograms.is_empty() {
            let mut histograms = entry.clone();
            histograms.points.clear();
            native.push(histograms);
        }
        if !entry.points.is_empty() {
            entry.histograms.clear();
            classic.push(entry);
        }
    }
    if native.is_empty() || classic.is_empty() {
        return (classic, native);
    }
    let without_le = |labels: &Labels| Labels::from_sorted(labels.iter().filter(|l| l.name != "le").cloned().collect());
    let mut buckets_of: HashMap<Labels, Vec<usize>> = HashMap::new();
    for (index, entry) in classic.iter().enumerate() {
        buckets_of.entry(without_le(&entry.labels)).or_default().push(index);
    }
    for entry in &mut native {
        let Some(indexes) = buckets_of.get(&entry.labels) else {
            continue;
        };
        let mut clash = false;
        entry.histograms.retain(|point| {
            let classic_here = indexes
                .iter()
                .any(|&i| classic[i].points.iter().any(|p| p.step == point.step));
            if classic_here {
                clash = true;
                for &i in indexes {
                    classic[i].points.retain(|p| p.step != point.step);
                }
            }
            !classic_here
        });
        if clash {
            ev.shared.warn(
                format!(
                    "vector contains a mix of classic and native histograms for metric name {:?}",
                    entry.labels.metric_name().unwrap_or_default()
                ),
                node,
            );
        }
    }
    classic.retain(|s| !s.points.is_empty());
    native.retain(|s| !s.histograms.is_empty());
    (classic, native)
}

/// A float per native histogram point (`f(step, histogram, metric name)`);
/// float points are dropped and the metric name goes.
fn native_values(series: Vec<Series>, mut f: impl FnMut(usize, &FloatHistogram, &str) -> f64) -> Vec<Series> {
    let mut out = Vec::with_capacity(series.len());
    for mut entry in series {
        let name = entry.labels.metric_name().unwrap_or_default().to_string();
        entry.points = entry
            .histograms
            .iter()
            .map(|p| Point {
                step: p.step,
                value: f(p.step as usize, &p.h, &name),
            })
            .collect();
        entry.histograms.clear();
        entry.drop_name = true;
        if !entry.points.is_empty() {
            out.push(entry);
        }
    }
    out
}

/// Prometheus' `maybeAddMetricName`.
fn with_metric_name(message: &str, name: &str) -> String {
    if name.is_empty() {
        message.to_string()
    } else {
        format!("{message} for metric name {name:?}")
    }
}

fn histogram_fraction<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    lower: &[f64],
    upper: &[f64],
    series: Vec<Series>,
    vector_node: &Expr,
) -> Result<Data, Error> {
    let (classic, native) = split_native(ev, series, vector_node);
    let mut nan_names = Vec::new();
    let mut out = native_values(native, |step, h, name| {
        let (value, note) = hist::fraction(lower[step], upper[step], h);
        if note == hist::NanNote::FractionExcludesNaN {
            nan_names.push(name.to_string());
        }
        value
    });
    for name in nan_names {
        ev.shared.info(
            with_metric_name(
                "input to histogram_fraction has NaN observations, which are excluded from all fractions",
                &name,
            ),
            vector_node,
        );
    }
    out.extend(reduce_buckets(ev, &classic, vector_node, |step, _, buckets| {
        kernels::bucket_fraction(lower[step], upper[step], buckets)
    }));
    Ok(Data::Vector(out))
}

/// Functions of a range vector (and possibly scalars): one value per series
/// and step from the samples in that step's window.
async fn range_function<S: SeriesRead>(ev: &Evaluator<'_, S>, name: &str, args: &[&Expr]) -> Result<Data, Error> {
    // Where the range vector is and which scalar arguments come with it.
    let (range_index, scalar_indexes): (usize, &[usize]) = match name {
        "quantile_over_time" => (1, &[0]),
        "predict_linear" => (0, &[1]),
        "double_exponential_smoothing" => (0, &[1, 2]),
        "rate"
        | "increase"
        | "delta"
        | "irate"
        | "idelta"
        | "resets"
        | "changes"
        | "deriv"
        | "avg_over_time"
        | "sum_over_time"
        | "count_over_time"
        | "min_over_time"
        | "max_over_time"
        | "stddev_over_time"
        | "stdvar_over_time"
        | "last_over_time"
        | "first_over_time"
        | "present_over_time"
        | "mad_over_time"
        | "ts_of_min_over_time"
        | "ts_of_max_over_time"
        | "ts_of_first_over_time"
        | "ts_of_last_over_time" => (0, &[]),
        other => return Err(Error::execution(format!("function {other}() is not supported yet"))),
    };
    let mut scalars: Vec<Vec<f64>> = Vec::new();
    for &index in scalar_indexes {
        let expr = args
            .get(index)
            .ok_or_else(|| Error::bad_data(format!("missing argument {} of {name}()", index + 1)))?;
        scalars.push(ev.eval_scalar(expr).await?);
    }
    let range_arg = args
        .get(range_index)
        .ok_or_else(|| Error::bad_data(format!("missing range vector argument of {name}()")))?;
    let keeps_name = matches!(name, "last_over_time" | "first_over_time");
    let mut out: Vec<Series> = Vec::new();
    // A batch of series at a time: their samples are dropped once reduced.
    let sorted = selector::windows_batches(ev, range_arg, |windows| {
        if name == "double_exponential_smoothing" && !windows.series.is_empty() {
            check_smoothing_factors(&scalars)?;
        }
        let one_series = |index: usize| -> Option<Series> {
            let entry = &windows.series[index];
            let mut series = Series::new(entry.labels.clone(), entry.drop_name || !keeps_name, Vec::new());
            let has_histograms = !entry.histograms.is_empty();
            // Start timestamps, for the functions that read them: decided
            // once per series, so series without them run as before.
            let starts = &entry.start_timestamps;
            let float_starts = reads_start_timestamps(name) && !starts.floats.is_empty();
            let histogram_starts = reads_start_timestamps(name) && !starts.histograms.is_empty();
            for (step, range) in windows.slice_ranges(index).enumerate() {
                let samples = &entry.samples[range.clone()];
                let (histograms, histogram_starts) = if has_histograms {
                    let range = windows.histogram_range(index, step);
                    let starts = if histogram_starts {
                        &starts.histograms[range.clone()]
                    } else {
                        &[]
                    };
                    (&entry.histograms[range], starts)
                } else {
                    (&[][..], &[][..])
                };
                if !histograms.is_empty() {
                    let metric = entry.labels.metric_name().unwrap_or_default();
                    let window = windows.bounds[step];
                    let node = range_arg;
                    let float_starts = if float_starts { &starts.floats[range.clone()] } else { &[] };
                    let window_samples = WindowSamples {
                        floats: samples,
                        float_starts,
                        histograms,
                        histogram_starts,
                    };
                    match histogram_range(ev, name, &window_samples, window, metric, node) {
                        Some(StepValue::Float(value)) => series.points.push(Point {
                            step: step as u32,
                            value,
                        }),
                        Some(StepValue::Histogram(h)) => series.histograms.push(HPoint { step: step as u32, h }),
                        None => {}
                    }
                    if !(samples.is_empty() || mixes_floats(name)) {
                        ev.shared.info(
                            format!(
                                "ignored histograms in a range containing both floats and histograms for metric name {metric:?}"
                            ),
                            node,
                        );
                    } else {
                        continue;
                    }
                }
                if samples.is_empty() {
                    continue;
                }
                let scalar = |i: usize| scalars[i][step];
                let value = if float_starts {
                    let starts = &starts.floats[range];
                    if matches!(name, "rate" | "increase")
                        && kernels::any_start_time_overlap(samples.iter().map(|s| s.timestamp), starts)
                    {
                        let metric = entry.labels.metric_name().unwrap_or_default();
                        ev.shared.warn_counted(start_time_overlap_message(metric), range_arg);
                    }
                    apply_range_with_starts(name, samples, starts, windows.bounds[step])
                } else {
                    apply_range(ev, name, samples, &windows, step, &scalar)
                };
                if let Some(value) = value {
                    series.points.push(Point {
                        step: step as u32,
                        value,
                    });
                }
            }
            (!series.is_empty()).then_some(series)
        };
        let reduced = in_parallel(windows.series.len(), windows.samples(), one_series);
        let kept = reduced.iter().map(|s| s.points.len() + s.histograms.len()).sum();
        out.extend(reduced);
        annotate_range_function(ev, name, &windows.series, range_arg);
        Ok(kept)
    })
    .await?;
    if !sorted {
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
    }
    if name == "quantile_over_time"
        && !out.is_empty()
        && let Some(bad) = scalars[0].iter().find(|q| !(0.0..=1.0).contains(*q))
    {
        ev.shared.warn(
            format!(
                "quantile value should be between 0 and 1, got {}",
                super::data::format_float(*bad)
            ),
            args[0],
        );
    }
    Ok(Data::Vector(out))
}

/// Below this many samples a range function runs on one thread: starting
/// threads would cost more than it saves.
const PARALLEL_MIN_SAMPLES: usize = 200_000;

/// `f(0..count)` in order, split over the machine's cores when `work`
/// (samples to read) is large enough to pay for the threads.
fn in_parallel<T: Send>(count: usize, work: usize, f: impl Fn(usize) -> Option<T> + Sync) -> Vec<T> {
    // Small work first: asking for the core count reads cgroup files, ~4 %
    // of a 1.5 ms instant query.
    if work < PARALLEL_MIN_SAMPLES {
        return (0..count).filter_map(&f).collect();
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(count.max(1));
    if threads < 2 {
        return (0..count).filter_map(&f).collect();
    }
    let per_thread = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                scope.spawn(move || {
                    (t * per_thread..((t + 1) * per_thread).min(count))
                        .filter_map(f)
                        .collect::<Vec<T>>()
                })
            })
            .collect();
        handles
            .into_iter()
            // A panic in a worker is a bug; surface it where it happened.
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

fn check_smoothing_factors(scalars: &[Vec<f64>]) -> Result<(), Error> {
    for (values, what) in scalars.iter().zip(["smoothing factor", "trend factor"]) {
        if let Some(bad) = values.iter().find(|v| !(**v > 0.0 && **v < 1.0)) {
            // Go's %f: six decimals.
            let short = if what == "smoothing factor" { "sf" } else { "tf" };
            return Err(Error::execution(format!(
                "invalid {what}. Expected: 0 < {short} < 1, got: {bad:.6}"
            )));
        }
    }
    Ok(())
}

/// The range functions that read sample start timestamps, as in Prometheus
/// 3: the counter functions. `delta`, `idelta` and the `*_over_time` family
/// take samples as they are.
fn reads_start_timestamps(name: &str) -> bool {
    matches!(name, "rate" | "increase" | "irate" | "resets")
}

/// Prometheus' warning for a start timestamp that overlaps the previous
/// sample ([`kernels::start_time_overlap`]).
fn start_time_overlap_message(metric: &str) -> String {
    format!("sample has start time that overlaps with previous sample timestamp for metric {metric:?}")
}

/// [`apply_range`] for a function that [reads start
/// timestamps](reads_start_timestamps), over float samples that have them.
fn apply_range_with_starts(
    name: &str,
    samples: &[Sample],
    starts: &[TimestampMs],
    (start, end): (i64, i64),
) -> Option<f64> {
    match name {
        "rate" => kernels::counter_rate_with_starts(samples, starts, start, end, true),
        "increase" => kernels::counter_rate_with_starts(samples, starts, start, end, false),
        "irate" => kernels::counter_instant_rate_with_starts(samples, starts),
        "resets" => Some(kernels::resets_with_starts(samples, starts)),
        _ => None,
    }
}

fn apply_range<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    name: &str,
    samples: &[Sample],
    windows: &Windows,
    step: usize,
    scalar: &dyn Fn(usize) -> f64,
) -> Option<f64> {
    let (start, end) = windows.bounds[step];
    let last = samples.last()?;
    let first = samples.first()?;
    match name {
        "rate" => kernels::extrapolated_rate(samples, start, end, true, true),
        "increase" => kernels::extrapolated_rate(samples, start, end, true, false),
        "delta" => kernels::extrapolated_rate(samples, start, end, false, false),
        "irate" => kernels::instant_rate(samples, true),
        "idelta" => kernels::instant_rate(samples, false),
        "resets" => Some(kernels::resets(samples)),
        "changes" => Some(kernels::changes(samples)),
        "deriv" => kernels::deriv(samples),
        "predict_linear" => kernels::predict_linear(samples, ev.step_time(step), scalar(0)),
        "double_exponential_smoothing" => kernels::double_exponential_smoothing(samples, scalar(0), scalar(1)),
        "avg_over_time" => Some(kernels::avg_over_time(samples)),
        "sum_over_time" => Some(kernels::sum_over_time(samples)),
        "count_over_time" => Some(samples.len() as f64),
        "min_over_time" => Some(kernels::min_over_time(samples)),
        "max_over_time" => Some(kernels::max_over_time(samples)),
        "stddev_over_time" => Some(kernels::stddev_over_time(samples)),
        "stdvar_over_time" => Some(kernels::stdvar_over_time(samples)),
        "mad_over_time" => Some(kernels::mad_over_time(samples)),
        "last_over_time" => Some(last.value),
        "first_over_time" => Some(first.value),
        "present_over_time" => Some(1.0),
        "ts_of_min_over_time" => Some(kernels::ts_of_min_over_time(samples)),
        "ts_of_max_over_time" => Some(kernels::ts_of_max_over_time(samples)),
        "ts_of_first_over_time" => Some(first.timestamp as f64 / 1000.0),
        "ts_of_last_over_time" => Some(last.timestamp as f64 / 1000.0),
        "quantile_over_time" => {
            let mut values: Vec<f64> = samples.iter().map(|s| s.value).collect();
            Some(kernels::quantile(scalar(0), &mut values))
        }
        _ => None,
    }
}

/// Range functions that look at histograms as well as floats in a window;
/// the others compute over the floats and ignore histograms (with an info
/// when both are present).
fn mixes_floats(name: &str) -> bool {
    matches!(
        name,
        "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "sum_over_time"
            | "avg_over_time"
            | "count_over_time"
            | "present_over_time"
            | "last_over_time"
            | "first_over_time"
            | "resets"
            | "changes"
            | "ts_of_last_over_time"
            | "ts_of_first_over_time"
    )
}

/// The samples of one series in one window, and their start timestamps:
/// each list of those is empty when the samples have none or the function
/// does not read them.
#[derive(Debug, Clone, Copy)]
struct WindowSamples<'a> {
    floats: &'a [Sample],
    float_starts: &'a [TimestampMs],
    histograms: &'a [HSample],
    histogram_starts: &'a [TimestampMs],
}

/// One sample of a window in which floats and histograms are merged by time.
#[derive(Debug, Clone, Copy)]
struct MergedSample<'a> {
    timestamp: TimestampMs,
    start: TimestampMs,
    /// The histogram, or `None` for a float.
    h: Option<&'a Arc<FloatHistogram>>,
    /// The float's value (0 for a histogram).
    value: f64,
}

/// A range function over a window holding native histograms (and maybe
/// floats); `None` when it yields nothing (including functions that only
/// read floats).
fn histogram_range<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    name: &str,
    window_samples: &WindowSamples<'_>,
    window: (i64, i64),
    metric: &str,
    node: &Expr,
) -> Option<StepValue> {
    let WindowSamples {
        floats,
        float_starts,
        histograms,
        histogram_starts,
    } = *window_samples;
    let start_at = |starts: &[TimestampMs], i: usize| starts.get(i).copied().unwrap_or(NO_START_TIMESTAMP);
    let mixed = || {
        ev.shared.warn(
            format!("encountered a mix of histograms and floats for metric name {metric:?}"),
            node,
        );
        None
    };
    // Floats and histograms in time order, for the functions that walk both.
    let merged = || {
        let floats = floats.iter().enumerate().map(|(i, s)| MergedSample {
            timestamp: s.timestamp,
            start: start_at(float_starts, i),
            h: None,
            value: s.value,
        });
        let histograms = histograms.iter().enumerate().map(|(i, h)| MergedSample {
            timestamp: h.timestamp,
            start: start_at(histogram_starts, i),
            h: Some(&h.h),
            value: 0.0,
        });
        let mut all: Vec<MergedSample> = floats.chain(histograms).collect();
        all.sort_by_key(|e| e.timestamp);
        all
    };
    match name {
        "rate" | "increase" | "delta" => {
            if !floats.is_empty() {
                return mixed();
            }
            let rate = HistogramRate {
                is_counter: name != "delta",
                is_rate: name == "rate",
                window,
                metric,
                node,
            };
            histogram_rate(ev, histograms, histogram_starts, &rate).map(StepValue::Histogram)
        }
        "irate" | "idelta" => {
            let all = merged();
            let [.., previous, last] = all.as_slice() else {
                return None;
            };
            let interval = last.timestamp - previous.timestamp;
            if interval == 0 {
                return None;
            }
            let (Some(before), Some(now)) = (previous.h, last.h) else {
                return mixed();
            };
            let is_rate = name == "irate";
            let gauge = |h: &FloatHistogram| h.counter_reset_hint == CounterResetHint::Gauge;
            if is_rate && (gauge(now) || gauge(before)) {
                ev.shared.warn(hist::message::not_counter(metric), node);
            }
            if !(is_rate || gauge(now) && gauge(before)) {
                ev.shared.warn(hist::message::not_gauge(metric), node);
            }
            let mut result = (**now).clone();
            let start_reset =
                || kernels::start_timestamp_reset(previous.start, previous.timestamp, last.start, last.timestamp);
            if !is_rate || !(start_reset() || hist::detect_reset(now, before)) {
                match hist::add(&mut result, before, true) {
                    Ok(combined) if combined.bounds_reconciled => {
                        ev.shared.info(hist::message::bounds_reconciled("subtraction"), node)
                    }
                    Ok(_) => {}
                    Err(_) => {
                        ev.shared.warn(hist::message::mixed_layouts(metric), node);
                        return None;
                    }
                }
            }
            result.counter_reset_hint = CounterResetHint::Gauge;
            hist::compact(&mut result);
            if is_rate {
                hist::div(&mut result, interval as f64 / 1000.0);
            }
            Some(StepValue::Histogram(Arc::new(result)))
        }
        "sum_over_time" | "avg_over_time" => {
            if !floats.is_empty() {
                return mixed();
            }
            // `sum` for sum_over_time, `mean` for avg_over_time.
            let mut sum = KahanSum::new((*histograms[0].h).clone());
            let mut mean = HistogramMean::new((*histograms[0].h).clone());
            let averaging = name == "avg_over_time";
            let (mut reset, mut not_reset) = (false, false);
            let mut reconciled = false;
            for (i, h) in histograms.iter().enumerate() {
                match h.h.counter_reset_hint {
                    CounterResetHint::CounterReset => reset = true,
                    CounterResetHint::NotCounterReset => not_reset = true,
                    _ => {}
                }
                if i == 0 {
                    continue;
                }
                let added = if averaging { mean.add(&h.h) } else { sum.add(&h.h) };
                match added {
                    Ok(combined) => reconciled |= combined.bounds_reconciled,
                    Err(_) => {
                        ev.shared.warn(hist::message::mixed_layouts(metric), node);
                        return None;
                    }
                }
            }
            if reset && not_reset {
                ev.shared.warn(
                    "conflicting counter resets during histogram aggregation".to_string(),
                    node,
                );
            }
            if reconciled {
                ev.shared.info(hist::message::bounds_reconciled("aggregation"), node);
            }
            let mut total = if averaging { mean.value() } else { sum.total() };
            hist::compact(&mut total);
            Some(StepValue::Histogram(Arc::new(total)))
        }
        "count_over_time" => Some(StepValue::Float((floats.len() + histograms.len()) as f64)),
        "present_over_time" => Some(StepValue::Float(1.0)),
        "last_over_time" | "first_over_time" | "ts_of_last_over_time" | "ts_of_first_over_time" => {
            let all = merged();
            let pick = if name.contains("last") { all.last() } else { all.first() };
            let pick = pick?;
            if name.starts_with("ts_of") {
                return Some(StepValue::Float(pick.timestamp as f64 / 1000.0));
            }
            Some(match pick.h {
                Some(h) => StepValue::Histogram(h.clone()),
                None => StepValue::Float(pick.value),
            })
        }
        "resets" | "changes" => {
            let all = merged();
            let mut count = 0.0;
            for pair in all.windows(2) {
                let (previous, current) = (&pair[0], &pair[1]);
                // Only `resets` reads start timestamps (`changes` has none).
                let start_reset = || {
                    kernels::start_timestamp_reset(previous.start, previous.timestamp, current.start, current.timestamp)
                };
                let differs = match (previous.h, current.h) {
                    (None, None) => {
                        if name == "resets" {
                            current.value < previous.value || start_reset()
                        } else {
                            !(current.value == previous.value || (current.value.is_nan() && previous.value.is_nan()))
                        }
                    }
                    (Some(before), Some(now)) => {
                        if name == "resets" {
                            start_reset() || hist::detect_reset(now, before)
                        } else {
                            !hist::equals(now, before)
                        }
                    }
                    // A switch between floats and histograms counts as both.
                    _ => true,
                };
                if differs {
                    count += 1.0;
                }
            }
            Some(StepValue::Float(count))
        }
        _ => None,
    }
}

/// What a histogram `rate`, `increase` or `delta` computes, and where.
#[derive(Debug, Clone, Copy)]
struct HistogramRate<'a> {
    /// `rate` and `increase`, not `delta`.
    is_counter: bool,
    is_rate: bool,
    /// The window `(start, end]`.
    window: (i64, i64),
    metric: &'a str,
    node: &'a Expr,
}

/// `rate`, `increase` (counters) and `delta` of native histograms, with
/// Prometheus' extrapolation to the window edges. `starts` are the samples'
/// start timestamps (empty when they have none): as for floats, they reveal
/// resets, and a counter that started inside the window is counted from
/// zero there instead of being extrapolated to the left.
fn histogram_rate<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    histograms: &[HSample],
    starts: &[TimestampMs],
    rate: &HistogramRate<'_>,
) -> Option<Arc<FloatHistogram>> {
    let HistogramRate {
        is_counter,
        is_rate,
        window: (range_start, range_end),
        metric,
        node,
    } = *rate;
    let (first_sample, last_sample) = (histograms.first()?, histograms.last()?);
    let start_at = |i: usize| starts.get(i).copied().unwrap_or(NO_START_TIMESTAMP);
    let counter_start = if is_counter {
        kernels::start_inside_window(start_at(0), range_start, first_sample.timestamp)
    } else {
        None
    };
    let window = kernels::Window {
        first: first_sample.timestamp,
        last: last_sample.timestamp,
        intervals: histograms.len() - 1,
        range_start,
        range_end,
    };
    if histograms.len() == 1 {
        // A single sample has an increase only from a start inside the
        // window. Prometheus hands the sample on as it is, hint included.
        let start = counter_start?;
        let mut result = (*first_sample.h).clone();
        hist::mul(&mut result, kernels::start_anchored_factor(window, start, is_rate));
        return Some(Arc::new(result));
    }
    let not_counter = || ev.shared.warn(hist::message::not_counter(metric), node);
    let mixed_layouts = || {
        ev.shared.warn(hist::message::mixed_layouts(metric), node);
        None
    };
    let gauge = |h: &FloatHistogram| h.counter_reset_hint == CounterResetHint::Gauge;
    let (first, last) = (&first_sample.h, &last_sample.h);
    if is_counter && (gauge(first) || gauge(last)) {
        not_counter();
    }
    // Whether the counter reset between samples `i - 1` and `i`, by their
    // start timestamps (only when they have them).
    let start_reset = |i: usize| {
        !starts.is_empty()
            && kernels::start_timestamp_reset(
                start_at(i - 1),
                histograms[i - 1].timestamp,
                start_at(i),
                histograms[i].timestamp,
            )
    };
    // A reset between the first two samples: the first one does not count
    // (nor does its layout).
    let mut previous: FloatHistogram = (**first).clone();
    if is_counter && (start_reset(1) || hist::detect_reset(&histograms[1].h, first)) {
        let second = &histograms[1].h;
        previous = FloatHistogram {
            schema: second.schema,
            custom_values: second.custom_values.clone(),
            ..FloatHistogram::default()
        };
    }
    let custom = previous.uses_custom_buckets();
    if last.uses_custom_buckets() != custom {
        return mixed_layouts();
    }
    let mut min_schema = last.schema.min(previous.schema);
    for sample in &histograms[1..histograms.len() - 1] {
        if !is_counter {
            continue;
        }
        if gauge(&sample.h) {
            not_counter();
        }
        min_schema = min_schema.min(sample.h.schema);
        if sample.h.uses_custom_buckets() != custom {
            return mixed_layouts();
        }
    }
    let mut result = (**last).clone();
    if !result.uses_custom_buckets() && result.schema > min_schema {
        result.positive = hist::reduce_resolution(&result.positive, result.schema, min_schema);
        result.negative = hist::reduce_resolution(&result.negative, result.schema, min_schema);
        result.schema = min_schema;
    }
    match hist::add(&mut result, &previous, true) {
        Ok(combined) if combined.bounds_reconciled => {
            ev.shared.info(hist::message::bounds_reconciled("subtraction"), node)
        }
        Ok(_) => {}
        Err(_) => return mixed_layouts(),
    }
    if is_counter {
        if kernels::any_start_time_overlap(histograms.iter().map(|h| h.timestamp), starts) {
            ev.shared.warn_counted(start_time_overlap_message(metric), node);
        }
        let mut prev = &previous;
        for (i, sample) in histograms.iter().enumerate().skip(1) {
            if start_reset(i) || hist::detect_reset(&sample.h, prev) {
                match hist::add(&mut result, prev, false) {
                    Ok(combined) if combined.bounds_reconciled => {
                        ev.shared.info(hist::message::bounds_reconciled("addition"), node)
                    }
                    Ok(_) => {}
                    Err(_) => return mixed_layouts(),
                }
            }
            prev = &sample.h;
        }
    } else if !gauge(first) || !gauge(last) {
        ev.shared.warn(hist::message::not_gauge(metric), node);
    }
    result.counter_reset_hint = CounterResetHint::Gauge;
    hist::compact(&mut result);

    let factor = match counter_start {
        Some(start) => {
            // The first sample's observations were counted from zero at
            // `start`, inside the window.
            match hist::add(&mut result, first, false) {
                Ok(combined) if combined.bounds_reconciled => {
                    ev.shared.info(hist::message::bounds_reconciled("addition"), node)
                }
                Ok(_) => {}
                Err(_) => return mixed_layouts(),
            }
            kernels::start_anchored_factor(window, start, is_rate)
        }
        None => {
            // Extrapolation as for floats, the observation count standing in
            // for the value when looking for the counter's zero point.
            let zero_point =
                (is_counter && result.count > 0.0 && first.count >= 0.0).then(|| first.count / result.count);
            kernels::extrapolation_factor(window, zero_point, is_rate)
        }
    };
    hist::mul(&mut result, factor);
    Some(Arc::new(result))
}

/// Prometheus' hints about functions used on the wrong kind of series.
fn annotate_range_function<S: SeriesRead>(ev: &Evaluator<'_, S>, name: &str, series: &[RangeSeries], node: &Expr) {
    if !matches!(name, "rate" | "increase") {
        return;
    }
    for entry in series {
        let Some(metric) = entry.labels.metric_name() else {
            continue;
        };
        // Native histograms are counters by type; only float series get the hint.
        if entry.samples.is_empty() {
            continue;
        }
        if !["_total", "_sum", "_count", "_bucket"]
            .iter()
            .any(|suffix| metric.ends_with(suffix))
        {
            ev.shared.info(
                format!("metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric:?}"),
                node,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_compares_digit_runs_as_numbers() {
        assert!(natural_cmp("a2", "a10").is_lt());
        assert!(natural_cmp("a10", "a2").is_gt());
        assert!(natural_cmp("abc", "abd").is_lt());
        assert!(natural_cmp("a", "a1").is_lt());
        assert!(natural_cmp("x01", "x1").is_eq());
    }

    #[test]
    fn floats_print_like_go_g() {
        assert_eq!(go_g(10.0, Some(2)), "10");
        assert_eq!(go_g(0.123, Some(2)), "0.12");
        assert_eq!(go_g(123.0, Some(2)), "1.2e+02");
        assert_eq!(go_g(0.5, None), "0.5");
        assert_eq!(go_g(f64::INFINITY, None), "+Inf");
        assert_eq!(go_g(1e-5, None), "1e-05");
    }

    #[test]
    fn days_in_month_knows_leap_years() {
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2023, 2), 28);
        assert_eq!(days_in_month(2023, 12), 31);
    }

    #[test]
    fn go_float_parsing_accepts_inf_spellings() {
        assert_eq!(parse_go_float("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_go_float("0.5"), Some(0.5));
        assert_eq!(parse_go_float("x"), None);
    }
}
