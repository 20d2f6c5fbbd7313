//! Binary operators: arithmetic, comparisons and set operators between
//! scalars and vectors, with Prometheus' vector matching.
//!
//! Matching signatures depend only on labels, so they are computed once per
//! series; the per-step loops look series up by signature index.

use std::collections::HashMap;

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD, T_MUL, T_NEQ, T_POW,
    T_SUB, TokenId,
};
use std::sync::Arc;

use promql_parser::parser::{BinaryExpr, Expr, LabelModifier, VectorMatchCardinality};
use tidewatch_model::histogram::CounterResetHint;
use tidewatch_model::labels::hash_pairs;
use tidewatch_model::seam::SeriesRead;
use tidewatch_model::{Label, Labels, METRIC_NAME};

use super::Evaluator;
use super::data::{Data, HPoint, Point, Series, StepValue, ValueCursor, go_labels_string};
use super::histogram as hist;
use crate::error::Error;

/// The operator's name in annotations, as Prometheus spells it.
fn op_name(op: TokenId) -> &'static str {
    match op {
        T_ADD => "+",
        T_SUB => "-",
        T_MUL => "*",
        T_DIV => "/",
        T_MOD => "%",
        T_POW => "^",
        T_ATAN2 => "atan2",
        T_EQLC => "==",
        T_NEQ => "!=",
        T_GTR => ">",
        T_LSS => "<",
        T_GTE => ">=",
        T_LTE => "<=",
        _ => "?",
    }
}

/// What an operation between two values noticed, for annotations.
#[derive(Debug, Default)]
struct Notes {
    /// (left type, right type) of operands the operator cannot combine.
    incompatible: Vec<(&'static str, &'static str)>,
    counter_reset_collision: bool,
    bounds_reconciled: bool,
    /// Exponential and custom-bucket histograms met.
    incompatible_layouts: bool,
}

impl Notes {
    fn report<S: SeriesRead>(&self, ev: &Evaluator<'_, S>, op: TokenId, node: &Expr) {
        let name = op_name(op);
        for (l, r) in &self.incompatible {
            ev.shared.info(
                format!("incompatible sample types encountered for binary operator \"{name}\": {l} {name} {r}"),
                node,
            );
        }
        let operation = if op == T_SUB { "subtraction" } else { "addition" };
        if self.counter_reset_collision {
            ev.shared
                .warn(format!("conflicting counter resets during histogram {operation}"), node);
        }
        if self.bounds_reconciled {
            ev.shared.info(hist::message::bounds_reconciled(operation), node);
        }
        if self.incompatible_layouts {
            ev.shared.warn(
                format!("incompatible bucket layout encountered for binary operator {name}"),
                node,
            );
        }
    }
}

/// `lhs op rhs` for values that may be histograms: the result (`None` when
/// the sample is dropped) and, for comparisons, whether it is kept.
fn apply_values(op: TokenId, lhs: &StepValue, rhs: &StepValue, notes: &mut Notes) -> (Option<StepValue>, bool) {
    use StepValue::{Float, Histogram};
    match (lhs, rhs) {
        (Float(l), Float(r)) => {
            let (value, keep) = apply(op, *l, *r);
            (Some(Float(value)), keep)
        }
        (Float(factor), Histogram(h)) | (Histogram(h), Float(factor)) if op == T_MUL => {
            let mut out = (**h).clone();
            hist::mul(&mut out, *factor);
            hist::compact(&mut out);
            (Some(Histogram(Arc::new(out))), true)
        }
        (Histogram(h), Float(divisor)) if op == T_DIV => {
            let mut out = (**h).clone();
            hist::div(&mut out, *divisor);
            hist::compact(&mut out);
            (Some(Histogram(Arc::new(out))), true)
        }
        (Histogram(l), Histogram(r)) if op == T_ADD || op == T_SUB => {
            let mut out = (**l).clone();
            match hist::add(&mut out, r, op == T_SUB) {
                Ok(combined) => {
                    notes.counter_reset_collision |= combined.counter_reset_collision;
                    notes.bounds_reconciled |= combined.bounds_reconciled;
                }
                Err(hist::IncompatibleSchemas) => {
                    notes.incompatible_layouts = true;
                    return (None, false);
                }
            }
            if op == T_SUB {
                out.counter_reset_hint = CounterResetHint::Gauge;
            }
            hist::compact(&mut out);
            (Some(Histogram(Arc::new(out))), true)
        }
        (Histogram(l), Histogram(r)) if op == T_EQLC || op == T_NEQ => {
            let equal = hist::equals(l, r);
            (Some(lhs.clone()), if op == T_EQLC { equal } else { !equal })
        }
        _ => {
            let type_of = |v: &StepValue| match v {
                Float(_) => "float",
                Histogram(_) => "histogram",
            };
            notes.incompatible.push((type_of(lhs), type_of(rhs)));
            (None, false)
        }
    }
}

/// Adds a value to a result series at `step`.
fn push_value(target: &mut Series, step: u32, value: StepValue) {
    match value {
        StepValue::Float(value) => target.points.push(Point { step, value }),
        StepValue::Histogram(h) => target.histograms.push(HPoint { step, h }),
    }
}

/// Whether a result series already has a value at `step`.
fn has_step(target: &Series, step: u32) -> bool {
    target.points.last().is_some_and(|p| p.step == step) || target.histograms.last().is_some_and(|p| p.step == step)
}

pub(crate) async fn eval<S: SeriesRead>(
    ev: &Evaluator<'_, S>,
    node: &Expr,
    binary: &BinaryExpr,
) -> Result<Data, Error> {
    let lhs = ev.eval(&binary.lhs).await?;
    let rhs = ev.eval(&binary.rhs).await?;
    let op = binary.op.id();
    let return_bool = binary.return_bool();
    match (lhs, rhs) {
        (Data::Scalar(l), Data::Scalar(r)) => Ok(Data::Scalar(
            l.iter()
                .zip(&r)
                .map(|(&a, &b)| {
                    let (value, keep) = apply(op, a, b);
                    if is_comparison(op) {
                        f64::from(u8::from(keep))
                    } else {
                        value
                    }
                })
                .collect(),
        )),
        (Data::Vector(v), Data::Scalar(s)) => {
            let mut notes = Notes::default();
            let out = vector_scalar(v, &s, op, return_bool, false, &mut notes);
            notes.report(ev, op, node);
            Ok(Data::Vector(out))
        }
        (Data::Scalar(s), Data::Vector(v)) => {
            let mut notes = Notes::default();
            let out = vector_scalar(v, &s, op, return_bool, true, &mut notes);
            notes.report(ev, op, node);
            Ok(Data::Vector(out))
        }
        (Data::Vector(l), Data::Vector(r)) => {
            let matching = Matching::of(binary);
            let steps = ev.step_count();
            match op {
                T_LAND => Ok(Data::Vector(and_unless(l, &r, &matching, steps, true))),
                T_LUNLESS => Ok(Data::Vector(and_unless(l, &r, &matching, steps, false))),
                T_LOR => Ok(Data::Vector(or(l, r, &matching, steps))),
                _ => {
                    let mut notes = Notes::default();
                    let out = vector_vector(l, r, op, return_bool, &matching, steps, &mut notes)?;
                    notes.report(ev, op, node);
                    Ok(Data::Vector(out))
                }
            }
        }
        _ => Err(Error::bad_data(format!(
            "binary expression must contain only scalar and instant vector types: {binary}"
        ))),
    }
}

fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Arithmetic operators drop the metric name; comparisons and set operators keep it.
fn drops_name(op: TokenId) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_MOD | T_POW | T_ATAN2)
}

/// `lhs op rhs`: the value, and for comparisons whether the sample is kept
/// (the value is then the left operand).
fn apply(op: TokenId, lhs: f64, rhs: f64) -> (f64, bool) {
    match op {
        T_ADD => (lhs + rhs, true),
        T_SUB => (lhs - rhs, true),
        T_MUL => (lhs * rhs, true),
        T_DIV => (lhs / rhs, true),
        // Rust's `%` on floats is C's fmod, like Go's math.Mod.
        T_MOD => (lhs % rhs, true),
        T_POW => (lhs.powf(rhs), true),
        T_ATAN2 => (lhs.atan2(rhs), true),
        T_EQLC => (lhs, lhs == rhs),
        T_NEQ => (lhs, lhs != rhs),
        T_GTR => (lhs, lhs > rhs),
        T_LSS => (lhs, lhs < rhs),
        T_GTE => (lhs, lhs >= rhs),
        T_LTE => (lhs, lhs <= rhs),
        _ => (f64::NAN, false),
    }
}

fn vector_scalar(
    mut series: Vec<Series>,
    scalar: &[f64],
    op: TokenId,
    return_bool: bool,
    swap: bool,
    notes: &mut Notes,
) -> Vec<Series> {
    let drop = drops_name(op) || return_bool;
    for entry in &mut series {
        // Histograms: scaling works, everything else is an incompatible pair.
        let histograms = std::mem::take(&mut entry.histograms);
        for point in histograms {
            let other = StepValue::Float(scalar[point.step as usize]);
            let own = StepValue::Histogram(point.h);
            let (lhs, rhs) = if swap { (&other, &own) } else { (&own, &other) };
            match apply_values(op, lhs, rhs, notes) {
                (Some(StepValue::Histogram(h)), true) if !return_bool && !is_comparison(op) => {
                    entry.histograms.push(HPoint { step: point.step, h })
                }
                _ => {}
            }
        }
        entry.points.retain_mut(|point| {
            let other = scalar[point.step as usize];
            let (lhs, rhs) = if swap {
                (other, point.value)
            } else {
                (point.value, other)
            };
            let (mut value, keep) = apply(op, lhs, rhs);
            // A comparison keeps the vector's value whichever side it is on.
            if is_comparison(op) && swap {
                value = rhs;
            }
            if return_bool {
                point.value = f64::from(u8::from(keep));
                true
            } else {
                point.value = value;
                keep
            }
        });
        entry.drop_name |= drop;
    }
    series.retain(|s| !s.is_empty());
    series
}

/// How two vectors' series are paired.
#[derive(Debug)]
struct Matching<'e> {
    /// `on(…)` when true, `ignoring(…)` (or nothing) when false.
    on: bool,
    names: Vec<&'e str>,
    card: &'e VectorMatchCardinality,
    /// `fill_left(v)` / `fill_right(v)`: the value standing in for a missing
    /// sample of that side (after group_right's swap: left = the "many" side).
    fill_left: Option<f64>,
    fill_right: Option<f64>,
}

impl<'e> Matching<'e> {
    fn of(binary: &'e BinaryExpr) -> Matching<'e> {
        static ONE_TO_ONE: VectorMatchCardinality = VectorMatchCardinality::OneToOne;
        let Some(modifier) = &binary.modifier else {
            return Matching {
                on: false,
                names: Vec::new(),
                card: &ONE_TO_ONE,
                fill_left: None,
                fill_right: None,
            };
        };
        let (on, names) = match &modifier.matching {
            Some(LabelModifier::Include(labels)) => (true, labels.labels.iter().map(String::as_str).collect()),
            Some(LabelModifier::Exclude(labels)) => (false, labels.labels.iter().map(String::as_str).collect()),
            None => (false, Vec::new()),
        };
        Matching {
            on,
            names,
            card: &modifier.card,
            fill_left: modifier.fill_values.lhs,
            fill_right: modifier.fill_values.rhs,
        }
    }

    /// Whether a label is part of the signature two series must share to match.
    fn keeps(&self, label: &Label) -> bool {
        if self.on {
            self.names.contains(&label.name.as_str())
        } else {
            label.name != METRIC_NAME && !self.names.contains(&label.name.as_str())
        }
    }
}

/// Numbers the distinct signatures of both sides; returns each series' number.
/// Signatures are found by a hash of the matching pairs, so only a new
/// signature's labels are built.
fn signature_ids(lhs: &[Series], rhs: &[Series], matching: &Matching<'_>) -> (Vec<usize>, Vec<usize>, Vec<Labels>) {
    let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut signatures: Vec<Labels> = Vec::new();
    let mut number = |series: &[Series]| -> Vec<usize> {
        series
            .iter()
            .map(|s| {
                let kept = || s.labels.iter().filter(|l| matching.keeps(l));
                let hash = hash_pairs(kept().map(|l| (l.name.as_str(), l.value.as_str())));
                let candidates = by_hash.entry(hash).or_default();
                if let Some(&id) = candidates.iter().find(|&&id| signatures[id].iter().eq(kept())) {
                    return id;
                }
                signatures.push(Labels::from_sorted(kept().cloned().collect()));
                candidates.push(signatures.len() - 1);
                signatures.len() - 1
            })
            .collect()
    };
    let left = number(lhs);
    let right = number(rhs);
    (left, right, signatures)
}

/// `and` (keep = true) and `unless` (keep = false): left samples whose
/// signature the right side has (or lacks) at the same step.
fn and_unless(mut lhs: Vec<Series>, rhs: &[Series], matching: &Matching<'_>, steps: usize, keep: bool) -> Vec<Series> {
    let (left_ids, right_ids, signatures) = signature_ids(&lhs, rhs, matching);
    // present[step][signature] as a flat bitmap.
    let mut present = vec![false; steps * signatures.len()];
    for (series, &id) in rhs.iter().zip(&right_ids) {
        for step in steps_of(series) {
            present[step as usize * signatures.len() + id] = true;
        }
    }
    for (series, &id) in lhs.iter_mut().zip(&left_ids) {
        series
            .points
            .retain(|p| present[p.step as usize * signatures.len() + id] == keep);
        series
            .histograms
            .retain(|p| present[p.step as usize * signatures.len() + id] == keep);
    }
    lhs.retain(|s| !s.is_empty());
    lhs
}

/// `or`: every left sample, and right samples whose signature the left side
/// lacks at that step.
fn or(mut lhs: Vec<Series>, mut rhs: Vec<Series>, matching: &Matching<'_>, steps: usize) -> Vec<Series> {
    let (left_ids, right_ids, signatures) = signature_ids(&lhs, &rhs, matching);
    let mut present = vec![false; steps * signatures.len()];
    for (series, &id) in lhs.iter().zip(&left_ids) {
        for step in steps_of(series) {
            present[step as usize * signatures.len() + id] = true;
        }
    }
    for (series, &id) in rhs.iter_mut().zip(&right_ids) {
        series
            .points
            .retain(|p| !present[p.step as usize * signatures.len() + id]);
        series
            .histograms
            .retain(|p| !present[p.step as usize * signatures.len() + id]);
    }
    rhs.retain(|s| !s.is_empty());
    lhs.extend(rhs);
    lhs
}

/// The steps at which a series has a value of either kind.
fn steps_of(series: &Series) -> impl Iterator<Item = u32> + '_ {
    series
        .points
        .iter()
        .map(|p| p.step)
        .chain(series.histograms.iter().map(|p| p.step))
}

/// The value a comparison or arithmetic gives, or `None` when the sample is
/// dropped; `bool` comparisons give 0 or 1.
fn combine(op: TokenId, return_bool: bool, l: &StepValue, r: &StepValue, notes: &mut Notes) -> Option<StepValue> {
    let (value, keep) = apply_values(op, l, r, notes);
    let value = value?;
    match (return_bool, keep) {
        (true, _) => Some(StepValue::Float(f64::from(u8::from(keep)))),
        (false, false) => None,
        (false, true) => Some(value),
    }
}

/// Arithmetic and comparisons between two vectors.
fn vector_vector(
    lhs: Vec<Series>,
    rhs: Vec<Series>,
    op: TokenId,
    return_bool: bool,
    matching: &Matching<'_>,
    steps: usize,
    notes: &mut Notes,
) -> Result<Vec<Series>, Error> {
    // The "many" side is walked, the "one" side looked up: group_right swaps them.
    let swapped = matches!(matching.card, VectorMatchCardinality::OneToMany(_));
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    let include: Vec<&str> = match matching.card {
        VectorMatchCardinality::ManyToOne(labels) | VectorMatchCardinality::OneToMany(labels) => {
            labels.labels.iter().map(String::as_str).collect()
        }
        _ => Vec::new(),
    };
    let one_to_one = matches!(matching.card, VectorMatchCardinality::OneToOne);
    let (many_ids, one_ids, signatures) = signature_ids(&many, &one, matching);
    let mut out: Vec<Series> = Vec::new();
    let mut out_by_labels: HashMap<Labels, usize> = HashMap::new();
    let mut out_by_pair: HashMap<(usize, usize), usize> = HashMap::new();
    let mut one_at: Vec<Option<usize>> = vec![None; signatures.len()];
    let mut many_seen: Vec<bool> = vec![false; signatures.len()];
    let mut matched: Vec<Option<Vec<usize>>> = vec![None; signatures.len()];
    let mut many_cursor = ValueCursor::new(many.len());
    let mut one_cursor = ValueCursor::new(one.len());
    let drop = drops_name(op) || return_bool;
    for step in 0..steps as u32 {
        one_at.iter_mut().for_each(|slot| *slot = None);
        many_seen.iter_mut().for_each(|seen| *seen = false);
        matched.iter_mut().for_each(|slot| *slot = None);
        for (index, &id) in one_ids.iter().enumerate() {
            if one_cursor.value(&one, index, step).is_none() {
                continue;
            }
            if let Some(previous) = one_at[id] {
                let side = if swapped { "left" } else { "right" };
                return Err(Error::execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    go_labels_string(&signatures[id]),
                    go_labels_string(&one[previous].labels),
                    go_labels_string(&one[index].labels),
                )));
            }
            one_at[id] = Some(index);
        }
        for (index, &id) in many_ids.iter().enumerate() {
            let Some(many_value) = many_cursor.value(&many, index, step) else {
                continue;
            };
            many_seen[id] = true;
            let (one_index, one_value) = match one_at[id] {
                Some(one_index) => (
                    one_index,
                    one_cursor
                        .value(&one, one_index, step)
                        .unwrap_or(StepValue::Float(f64::NAN)),
                ),
                // No partner: `fill_right` stands in for it, under the
                // "many" side's labels with nothing to copy from the other.
                None => match matching.fill_right {
                    Some(fill) => (FILLED, StepValue::Float(fill)),
                    None => continue,
                },
            };
            // Two series of the "many" side matching one partner is an error
            // for one-to-one matching even when a comparison drops them.
            if one_to_one && one_index != FILLED {
                let seen = matched[id].get_or_insert_with(Vec::new);
                if !seen.is_empty() {
                    return Err(Error::execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                    ));
                }
                seen.push(index);
            }
            let (l, r) = if swapped {
                (&one_value, &many_value)
            } else {
                (&many_value, &one_value)
            };
            let Some(value) = combine(op, return_bool, l, r, notes) else {
                continue;
            };
            let out_index = match out_by_pair.get(&(index, one_index)) {
                Some(&i) => i,
                None => {
                    let one_labels = one.get(one_index).map_or(&EMPTY, |s| &s.labels);
                    let labels = result_labels(&many[index].labels, one_labels, matching, &include);
                    let i = *out_by_labels.entry(labels.clone()).or_insert_with(|| {
                        out.push(Series::new(labels, false, Vec::new()));
                        out.len() - 1
                    });
                    out_by_pair.insert((index, one_index), i);
                    i
                }
            };
            if !one_to_one {
                let seen = matched[id].get_or_insert_with(Vec::new);
                if seen.contains(&out_index) {
                    return Err(Error::execution(
                        "multiple matches for labels: grouping labels must ensure unique matches",
                    ));
                }
                seen.push(out_index);
            }
            let target = &mut out[out_index];
            if has_step(target, step) {
                return Err(super::duplicate_labelset());
            }
            target.drop_name |= drop || many[index].drop_name;
            push_value(target, step, value);
        }
        // "One" side samples without a partner: `fill_left` stands in for the
        // missing side, and the result carries the match group's labels.
        if let Some(fill) = matching.fill_left {
            for (index, &id) in one_ids.iter().enumerate() {
                if many_seen[id] || one_at[id] != Some(index) {
                    continue;
                }
                let one_value = one_cursor
                    .value(&one, index, step)
                    .unwrap_or(StepValue::Float(f64::NAN));
                let fill = StepValue::Float(fill);
                let (l, r) = if swapped {
                    (&one_value, &fill)
                } else {
                    (&fill, &one_value)
                };
                let Some(value) = combine(op, return_bool, l, r, notes) else {
                    continue;
                };
                let out_index = *out_by_pair.entry((FILLED, index)).or_insert_with(|| {
                    let labels = signatures[id].clone();
                    *out_by_labels.entry(labels.clone()).or_insert_with(|| {
                        out.push(Series::new(labels, false, Vec::new()));
                        out.len() - 1
                    })
                });
                let target = &mut out[out_index];
                if has_step(target, step) {
                    return Err(super::duplicate_labelset());
                }
                target.drop_name |= drop;
                push_value(target, step, value);
            }
        }
    }
    Ok(out)
}

/// Stands for the missing partner of a filled match.
const FILLED: usize = usize::MAX;
static EMPTY: Labels = Labels::EMPTY;

/// The labels of a matched pair's result: the "many" side's, narrowed to the
/// `on` labels (or without the `ignoring` ones) for one-to-one matching, with
/// `group_x(…)` labels copied from the "one" side.
fn result_labels(many: &Labels, one: &Labels, matching: &Matching<'_>, include: &[&str]) -> Labels {
    let mut pairs: Vec<Label> = many.iter().cloned().collect();
    if matches!(matching.card, VectorMatchCardinality::OneToOne) {
        if matching.on {
            pairs.retain(|l| matching.names.contains(&l.name.as_str()));
        } else {
            pairs.retain(|l| !matching.names.contains(&l.name.as_str()));
        }
    }
    for name in include {
        pairs.retain(|l| l.name != *name);
        if let Some(value) = one.get(name) {
            pairs.push(Label::new(*name, value));
        }
    }
    pairs.sort();
    Labels::from_sorted(pairs)
}
