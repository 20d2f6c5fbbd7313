//! What sub-expressions evaluate to inside the engine.
//!
//! Every expression is evaluated once over all steps of the query, not once
//! per step: an instant vector is a list of series, each with the points it
//! has at some of the steps. Label sets are computed once per series, so
//! matching and grouping work on indexes while the per-step loops touch only
//! numbers.

use std::sync::Arc;

use tidewatch_model::seam::StartTimestamps;
use tidewatch_model::{FloatHistogram, HistogramSample, Labels, METRIC_NAME, Sample, TimestampMs};

/// Floats as Go's `strconv.FormatFloat(f, 'f', -1, 64)` writes them (for
/// `count_values` labels and messages), the same as the API's sample values.
pub(crate) use crate::api::format_value as format_float;

/// The value of one series at one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    /// Index of the step in the evaluator's step list.
    pub step: u32,
    pub value: f64,
}

/// A native histogram of one series at one step. Shared, because a selector
/// repeats a sample at every step its lookback reaches.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HPoint {
    pub step: u32,
    pub h: Arc<FloatHistogram>,
}

/// A native histogram sample inside a range vector.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HSample {
    pub timestamp: TimestampMs,
    pub h: Arc<FloatHistogram>,
}

impl From<HistogramSample> for HSample {
    fn from(sample: HistogramSample) -> Self {
        HSample {
            timestamp: sample.timestamp,
            h: Arc::new(sample.histogram),
        }
    }
}

/// A series of an instant vector, over the steps where it has a value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub labels: Labels,
    /// Set by functions and operators that drop the metric name. Prometheus 3
    /// delays the removal to the end of evaluation (`promql-delayed-name-removal`),
    /// so the name stays visible to `label_replace` and friends until then.
    pub drop_name: bool,
    /// Float values, ascending by step, at most one per step.
    pub points: Vec<Point>,
    /// Native histogram values, ascending by step; never at a step that has
    /// a float. Operations that build new series from `points` drop them,
    /// which is what Prometheus does for every float-only function.
    pub histograms: Vec<HPoint>,
}

impl Series {
    pub(crate) fn new(labels: Labels, drop_name: bool, points: Vec<Point>) -> Series {
        Series {
            labels,
            drop_name,
            points,
            histograms: Vec::new(),
        }
    }

    /// Whether the series has no value at any step.
    pub(crate) fn is_empty(&self) -> bool {
        self.points.is_empty() && self.histograms.is_empty()
    }
}

/// A series of a range vector: its samples over the window(s) asked for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RangeSeries {
    pub labels: Labels,
    pub drop_name: bool,
    pub samples: Vec<Sample>,
    /// Ascending by time, never at a float sample's timestamp.
    pub histograms: Vec<HSample>,
    /// The samples' start timestamps, parallel to `samples` and `histograms`
    /// (see [`StartTimestamps`]). Only a range selector reading samples that
    /// have them fills them: a subquery's points have none, as in Prometheus.
    pub start_timestamps: StartTimestamps,
}

impl RangeSeries {
    pub(crate) fn new(labels: Labels, drop_name: bool, samples: Vec<Sample>, histograms: Vec<HSample>) -> Self {
        RangeSeries {
            labels,
            drop_name,
            samples,
            histograms,
            start_timestamps: StartTimestamps::default(),
        }
    }
}

/// A sub-expression's value over all steps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Data {
    /// One value per step.
    Scalar(Vec<f64>),
    String(String),
    Vector(Vec<Series>),
    /// A range vector at a single evaluation time (only an instant query's
    /// top-level range selector or subquery produces one).
    Matrix(Vec<RangeSeries>),
}

/// The labels that go with the metric name: Prometheus' type-and-unit labels
/// describe the metric, so they are dropped together with it.
const NAME_LABELS: [&str; 3] = [METRIC_NAME, "__type__", "__unit__"];

pub(crate) fn without_name(labels: &Labels) -> Labels {
    if !labels.iter().any(|l| NAME_LABELS.contains(&l.name.as_str())) {
        return labels.clone();
    }
    Labels::from_sorted(
        labels
            .iter()
            .filter(|l| !NAME_LABELS.contains(&l.name.as_str()))
            .cloned()
            .collect(),
    )
}

/// Walks the points of many series step by step: at each step, which series
/// have a value. Each series' cursor only moves forward.
#[derive(Debug)]
pub(crate) struct StepCursor {
    positions: Vec<usize>,
}

impl StepCursor {
    pub(crate) fn new(series_count: usize) -> StepCursor {
        StepCursor {
            positions: vec![0; series_count],
        }
    }

    /// The float value of series `index` at `step`, if it has one. Steps must be
    /// asked in ascending order per series.
    pub(crate) fn value(&mut self, series: &[Series], index: usize, step: u32) -> Option<f64> {
        let points = &series[index].points;
        let position = &mut self.positions[index];
        while *position < points.len() && points[*position].step < step {
            *position += 1;
        }
        match points.get(*position) {
            Some(point) if point.step == step => Some(point.value),
            _ => None,
        }
    }
}

/// A series' value at one step: a float or a native histogram.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StepValue {
    Float(f64),
    Histogram(Arc<FloatHistogram>),
}

/// Like [`StepCursor`], for floats and histograms alike.
#[derive(Debug)]
pub(crate) struct ValueCursor {
    floats: StepCursor,
    histograms: Vec<usize>,
}

impl ValueCursor {
    pub(crate) fn new(series_count: usize) -> ValueCursor {
        ValueCursor {
            floats: StepCursor::new(series_count),
            histograms: vec![0; series_count],
        }
    }

    /// The value of series `index` at `step`. Steps must be asked in
    /// ascending order per series.
    pub(crate) fn value(&mut self, series: &[Series], index: usize, step: u32) -> Option<StepValue> {
        if let Some(value) = self.floats.value(series, index, step) {
            return Some(StepValue::Float(value));
        }
        let histograms = &series[index].histograms;
        let position = &mut self.histograms[index];
        while *position < histograms.len() && histograms[*position].step < step {
            *position += 1;
        }
        match histograms.get(*position) {
            Some(point) if point.step == step => Some(StepValue::Histogram(point.h.clone())),
            _ => None,
        }
    }
}

/// Go's `math.Max`: NaN wins, and +0 beats -0 (Rust's `f64::max` ignores NaN).
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { b } else { a }
    } else if a > b {
        a
    } else {
        b
    }
}

/// Go's `math.Min`: NaN wins, and -0 beats +0.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { a } else { b }
    } else if a < b {
        a
    } else {
        b
    }
}

/// A label set as Go's `labels.Labels.String()` writes it, which is how
/// Prometheus' error messages print series: `{__name__="up", job="api"}`.
pub(crate) fn go_labels_string(labels: &Labels) -> String {
    let mut out = String::from("{");
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if is_legacy_label_name(&label.name) {
            out.push_str(&label.name);
        } else {
            out.push_str(&go_quote(&label.name));
        }
        out.push('=');
        out.push_str(&go_quote(&label.value));
    }
    out.push('}');
    out
}

fn is_legacy_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A string quoted as Go's `strconv.Quote` does for printable text.
pub(crate) fn go_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_min_max_propagate_nan_and_order_zeros() {
        assert!(go_max(1.0, f64::NAN).is_nan());
        assert!(go_min(f64::NAN, 1.0).is_nan());
        assert!(go_max(-0.0, 0.0).is_sign_positive());
        assert!(go_min(0.0, -0.0).is_sign_negative());
        assert_eq!(go_max(2.0, 3.0), 3.0);
        assert_eq!(go_min(2.0, 3.0), 2.0);
    }

    #[test]
    fn labels_print_like_go() {
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]);
        assert_eq!(go_labels_string(&labels), "{__name__=\"up\", job=\"a\\\"b\"}");
        assert_eq!(go_labels_string(&Labels::default()), "{}");
    }

    #[test]
    fn step_cursor_finds_points_by_step() {
        let series = vec![Series::new(
            Labels::default(),
            false,
            vec![Point { step: 1, value: 1.0 }, Point { step: 3, value: 3.0 }],
        )];
        let mut cursor = StepCursor::new(1);
        let seen: Vec<Option<f64>> = (0..5).map(|s| cursor.value(&series, 0, s)).collect();
        assert_eq!(seen, [None, Some(1.0), None, Some(3.0), None]);
    }
}
