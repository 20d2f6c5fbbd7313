//! Writing series in the Prometheus text format, for `/metrics` endpoints.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::{is_legacy_label_name, is_legacy_metric_name};
use crate::labels::METRIC_NAME;
use crate::seam::{MetricMetadata, MetricType, SeriesSamples};

/// The sample name suffixes that put a series in a family of this type, in
/// either format's convention (a text-format counter family is named with its
/// `_total`, an OpenMetrics one without).
fn family_suffixes(metric_type: MetricType) -> &'static [&'static str] {
    match metric_type {
        MetricType::Counter => &["", "_total", "_created"],
        MetricType::Histogram | MetricType::GaugeHistogram => {
            &["_bucket", "_count", "_sum", "_created", "_gcount", "_gsum"]
        }
        MetricType::Summary => &["", "_count", "_sum", "_created"],
        MetricType::Info => &["", "_info"],
        MetricType::Unknown | MetricType::Gauge | MetricType::StateSet => &[""],
    }
}

/// The text format's name for a type. It has no gauge histograms, info or
/// state sets: those are written `untyped`, which any parser accepts.
fn text_type(metric_type: MetricType) -> &'static str {
    match metric_type {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Histogram => "histogram",
        MetricType::Summary => "summary",
        MetricType::Unknown | MetricType::GaugeHistogram | MetricType::Info | MetricType::StateSet => "untyped",
    }
}

/// Writes `series` in the Prometheus text format 0.0.4: each family of
/// `metadata` as `# HELP` (when there is help) and `# TYPE`, followed by its
/// series, in `metadata` order; then the series no family claims, in input
/// order. Every sample is one line with its timestamp. Names outside the
/// legacy character set are quoted (`{"my.metric","a.b"="c"}`) as Prometheus 3
/// writes them. Units are not written (the format has none), and series
/// without a metric name are skipped (no line could name them).
///
/// [`parse_text`](super::parse_text) reads the output back to the same
/// series, values bit for bit except NaN payloads (every NaN reads back as
/// Prometheus' normal NaN), provided timestamps are not negative — the text
/// format's timestamps have no sign.
pub fn render_text(series: &[SeriesSamples], metadata: &[MetricMetadata]) -> String {
    let mut family_of_name: HashMap<&str, usize> = HashMap::with_capacity(metadata.len());
    for (index, family) in metadata.iter().enumerate() {
        family_of_name
            .entry(family.metric_family_name.as_str())
            .or_insert(index);
    }
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); metadata.len()];
    let mut unclaimed = Vec::new();
    for (index, one) in series.iter().enumerate() {
        let Some(name) = one.labels.metric_name() else {
            continue;
        };
        match family_for(name, metadata, &family_of_name) {
            Some(family) => members[family].push(index),
            None => unclaimed.push(index),
        }
    }

    let mut out = String::with_capacity(series.len() * 64 + metadata.len() * 96);
    for (family, indexes) in metadata.iter().zip(&members) {
        let name = &family.metric_family_name;
        if !family.help.is_empty() {
            out.push_str("# HELP ");
            write_name(&mut out, name);
            out.push(' ');
            escape_help(&mut out, &family.help);
            out.push('\n');
        }
        out.push_str("# TYPE ");
        write_name(&mut out, name);
        out.push(' ');
        out.push_str(text_type(family.metric_type));
        out.push('\n');
        for &index in indexes {
            write_series(&mut out, &series[index]);
        }
    }
    for index in unclaimed {
        write_series(&mut out, &series[index]);
    }
    out
}

fn family_for(name: &str, metadata: &[MetricMetadata], family_of_name: &HashMap<&str, usize>) -> Option<usize> {
    if let Some(&index) = family_of_name.get(name) {
        return family_suffixes(metadata[index].metric_type)
            .contains(&"")
            .then_some(index);
    }
    for suffix in [
        "_total", "_created", "_bucket", "_count", "_sum", "_gcount", "_gsum", "_info",
    ] {
        if let Some(stem) = name.strip_suffix(suffix)
            && let Some(&index) = family_of_name.get(stem)
            && family_suffixes(metadata[index].metric_type).contains(&suffix)
        {
            return Some(index);
        }
    }
    None
}

fn write_name(out: &mut String, name: &str) {
    if is_legacy_metric_name(name) {
        out.push_str(name);
    } else {
        out.push('"');
        escape_label_value(out, name);
        out.push('"');
    }
}

fn write_series(out: &mut String, series: &SeriesSamples) {
    let Some(name) = series.labels.metric_name() else {
        return;
    };
    let mut head = String::with_capacity(64);
    let legacy_name = is_legacy_metric_name(name);
    let mut first = true;
    if legacy_name {
        head.push_str(name);
    } else {
        head.push_str("{\"");
        escape_label_value(&mut head, name);
        head.push('"');
        first = false;
    }
    for label in series.labels.iter().filter(|l| l.name != METRIC_NAME) {
        head.push(if first { '{' } else { ',' });
        first = false;
        if is_legacy_label_name(&label.name) {
            head.push_str(&label.name);
        } else {
            head.push('"');
            escape_label_value(&mut head, &label.name);
            head.push('"');
        }
        head.push_str("=\"");
        escape_label_value(&mut head, &label.value);
        head.push('"');
    }
    if !first {
        head.push('}');
    }
    for sample in &series.samples {
        out.push_str(&head);
        out.push(' ');
        write_value(out, sample.value);
        // Writing into a String cannot fail.
        let _ = writeln!(out, " {}", sample.timestamp);
    }
}

/// Shortest text that reads back as the same `f64`.
fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        // `{:?}` is Rust's shortest round-trip spelling ("1.0", "1e-7").
        let _ = write!(out, "{value:?}");
    }
}

fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;
    use crate::sample::Sample;

    #[test]
    fn writes_families_then_strays_with_quoted_utf8_names() {
        let series = vec![
            SeriesSamples::floats(
                Labels::from_pairs([("__name__", "stray"), ("a", "x\"y\\z\nw")]),
                vec![Sample::new(5, 1.5)],
            ),
            SeriesSamples::floats(
                Labels::from_pairs([("__name__", "http_requests_total"), ("code", "200")]),
                vec![Sample::new(1, 3.0), Sample::new(2, f64::INFINITY)],
            ),
            SeriesSamples::floats(
                Labels::from_pairs([("__name__", "my.metric"), ("a.b", "c")]),
                vec![Sample::new(7, f64::NAN)],
            ),
        ];
        let metadata = vec![MetricMetadata {
            metric_family_name: "http_requests".to_owned(),
            metric_type: MetricType::Counter,
            help: "Requests\\served\nso far.".to_owned(),
            unit: String::new(),
        }];
        let text = render_text(&series, &metadata);
        assert_eq!(
            text,
            "# HELP http_requests Requests\\\\served\\nso far.\n\
             # TYPE http_requests counter\n\
             http_requests_total{code=\"200\"} 3.0 1\n\
             http_requests_total{code=\"200\"} +Inf 2\n\
             stray{a=\"x\\\"y\\\\z\\nw\"} 1.5 5\n\
             {\"my.metric\",\"a.b\"=\"c\"} NaN 7\n"
        );
    }
}

#[cfg(test)]
mod round_trip {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::render_text;
    use crate::exposition::parse_text;
    use crate::labels::Labels;
    use crate::sample::Sample;
    use crate::seam::{MetricMetadata, MetricType, SeriesSamples};

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            (-1_000_000i64..1_000_000).prop_map(|v| v as f64 / 100.0),
        ]
    }

    /// Metric names: mostly legacy, some needing quotes.
    fn metric_name() -> impl Strategy<Value = String> {
        prop_oneof![4 => "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", 1 => "[a-z.\\-/ é]{1,8}"]
    }

    fn label_name() -> impl Strategy<Value = String> {
        prop_oneof![4 => "[a-zA-Z_][a-zA-Z0-9_]{0,8}", 1 => "[a-z.\\- é]{1,6}"]
            .prop_filter("__name__ is the metric name", |n| n != "__name__")
    }

    /// Any text, with the characters that need escaping well represented.
    fn label_value() -> impl Strategy<Value = String> {
        prop_oneof!["[ -~]{0,10}", "[\\\\\"\n\t\r{}#, a-z\u{0}é☃]{0,10}"]
    }

    fn help() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z][\\\\\"\n\t\r a-zé]{0,20}"]
    }

    proptest! {
        #[test]
        fn rendered_text_parses_back(
            families in proptest::collection::btree_map(
                metric_name(),
                (
                    prop_oneof![Just(MetricType::Counter), Just(MetricType::Gauge), Just(MetricType::Unknown)],
                    help(),
                ),
                0..4,
            ),
            raw_series in proptest::collection::btree_map(
                (metric_name(), proptest::collection::btree_map(label_name(), label_value(), 0..4)),
                proptest::collection::vec((0i64..i64::MAX, value()), 1..3),
                0..12,
            ),
        ) {
            let metadata: Vec<MetricMetadata> = families
                .into_iter()
                .map(|(name, (metric_type, help))| MetricMetadata {
                    metric_family_name: name,
                    metric_type,
                    help,
                    unit: String::new(),
                })
                .collect();
            // Distinct label sets (empty values vanish, so sets are keyed after building).
            let mut by_labels = BTreeMap::new();
            for ((name, pairs), samples) in raw_series {
                let labels = Labels::from_pairs(
                    std::iter::once(("__name__".to_owned(), name)).chain(pairs),
                );
                let mut samples: Vec<Sample> = samples.into_iter().map(|(t, v)| Sample::new(t, v)).collect();
                samples.sort_by_key(|s| s.timestamp);
                by_labels.insert(labels, samples);
            }
            let series: Vec<SeriesSamples> =
                by_labels.into_iter().map(|(labels, samples)| SeriesSamples::floats(labels, samples)).collect();

            let text = render_text(&series, &metadata);
            let parsed = parse_text(text.as_bytes(), -1).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;

            let mut got = parsed.series.clone();
            got.sort_by(|a, b| a.labels.cmp(&b.labels));
            prop_assert_eq!(got.len(), series.len(), "{}", text);
            for (want, have) in series.iter().zip(&got) {
                prop_assert_eq!(&want.labels, &have.labels, "{}", text);
                prop_assert_eq!(want.samples.len(), have.samples.len());
                for (w, h) in want.samples.iter().zip(&have.samples) {
                    prop_assert_eq!(w.timestamp, h.timestamp);
                    let same = w.value.to_bits() == h.value.to_bits() || (w.value.is_nan() && h.value.is_nan());
                    prop_assert!(same, "{} became {}", w.value, h.value);
                }
            }
            // Help and type come back; a help of only blanks reads as none.
            prop_assert_eq!(parsed.metadata.len(), metadata.len());
            for (want, have) in metadata.iter().zip(&parsed.metadata) {
                prop_assert_eq!(&want.metric_family_name, &have.metric_family_name);
                prop_assert_eq!(want.metric_type, have.metric_type);
                prop_assert_eq!(&want.help, &have.help);
            }
        }
    }
}
