//! Ingest validation: the Prometheus label grammar and per-tenant limits, with
//! messages that name the offending series.

use crate::error::Error;
use crate::histogram::HistogramSample;
use crate::labels::{Labels, METRIC_NAME};
use crate::raw_write::{RawSeriesRef, RawWriteBatch};
use crate::sample::Sample;
use crate::seam::WriteBatch;
use crate::time::TimestampMs;

/// Limits applied to every write. Defaults let real senders through: requests
/// of tens of thousands of series and samples a week old.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestLimits {
    pub max_labels_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    pub max_samples_per_request: usize,
    /// How far behind the server's clock a sample may be.
    pub max_sample_age_ms: i64,
    /// How far ahead of the server's clock a sample may be.
    pub max_future_ms: i64,
}

pub const HOUR_MS: i64 = 3_600_000;

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_labels_per_series: 40,
            max_label_name_length: 1024,
            max_label_value_length: 4096,
            max_samples_per_request: 5_000_000,
            max_sample_age_ms: 7 * 24 * HOUR_MS,
            max_future_ms: 10 * 60_000,
        }
    }
}

/// Whether `name` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    is_valid_name_bytes(name.as_bytes(), false)
}

/// Whether `name` is a valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    is_valid_name_bytes(name.as_bytes(), true)
}

/// The grammar on bytes: every allowed character is ASCII, so no decoding is needed.
fn is_valid_name_bytes(name: &[u8], colons: bool) -> bool {
    let Some((&first, rest)) = name.split_first() else {
        return false;
    };
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || (colons && b == b':');
    !first.is_ascii_digit() && allowed(first) && rest.iter().all(|&b| allowed(b))
}

/// Checks one series' labels (sorted by name) against the grammar and the limits.
/// `series` renders the series for the error message; it runs only on error.
pub fn validate_label_pairs<'a>(
    pairs: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + Clone,
    limits: &IngestLimits,
    series: impl Fn() -> String,
) -> Result<(), Error> {
    let invalid = |what: String| Err(Error::Invalid(format!("series {}: {what}", series())));
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let count = pairs.len();
    let mut metric_name = None;
    let mut previous: Option<&[u8]> = None;
    for (name, value) in pairs.clone() {
        if previous == Some(name) {
            return invalid(format!("duplicate label name {:?}", text(name)));
        }
        previous = Some(name);
        if name == METRIC_NAME.as_bytes() {
            metric_name = Some(value);
        }
    }
    let Some(metric_name) = metric_name else {
        return invalid(format!("the {METRIC_NAME} label is missing"));
    };
    if !is_valid_name_bytes(metric_name, true) {
        return invalid(format!("invalid metric name {:?}", text(metric_name)));
    }
    if count > limits.max_labels_per_series {
        return invalid(format!(
            "{count} labels exceed the limit of {} labels per series",
            limits.max_labels_per_series
        ));
    }
    for (name, value) in pairs {
        if !is_valid_name_bytes(name, false) {
            return invalid(format!("invalid label name {:?}", text(name)));
        }
        if name.len() > limits.max_label_name_length {
            return invalid(format!(
                "label name {:?} is {} bytes long, over the limit of {}",
                text(name),
                name.len(),
                limits.max_label_name_length
            ));
        }
        if value.len() > limits.max_label_value_length {
            return invalid(format!(
                "value of label {:?} is {} bytes long, over the limit of {}",
                text(name),
                value.len(),
                limits.max_label_value_length
            ));
        }
    }
    Ok(())
}

/// Checks one owned label set against the grammar and the limits.
pub fn validate_labels(labels: &Labels, limits: &IngestLimits) -> Result<(), Error> {
    validate_label_pairs(
        labels.iter().map(|l| (l.name.as_bytes(), l.value.as_bytes())),
        limits,
        || labels.to_string(),
    )
}

/// `kind` names what carries the timestamps ("sample", "histogram") in messages.
fn check_times(
    timestamps: impl Iterator<Item = TimestampMs>,
    kind: &str,
    limits: &IngestLimits,
    now: TimestampMs,
    series: impl Fn() -> String,
) -> Result<(), Error> {
    let oldest_allowed = now.saturating_sub(limits.max_sample_age_ms);
    let newest_allowed = now.saturating_add(limits.max_future_ms);
    for timestamp in timestamps {
        if timestamp < oldest_allowed {
            return Err(Error::Invalid(format!(
                "series {}: {kind} at {timestamp} is too old: samples older than {} ms before now ({now}) are rejected",
                series(),
                limits.max_sample_age_ms
            )));
        }
        if timestamp > newest_allowed {
            return Err(Error::Invalid(format!(
                "series {}: {kind} at {timestamp} is too far in the future: more than {} ms after now ({now})",
                series(),
                limits.max_future_ms
            )));
        }
    }
    Ok(())
}

/// Checks a series' native histograms: each must be well formed (a staleness
/// marker always is: it only says the series ended, its layout means
/// nothing), and none may share a timestamp with a float sample of the same
/// series in the same request — which of the two was meant cannot be known.
fn check_histograms(
    samples: &[Sample],
    histograms: &[HistogramSample],
    series: impl Fn() -> String,
) -> Result<(), Error> {
    for sample in histograms {
        if sample.histogram.is_stale() {
            continue;
        }
        if let Err(e) = sample.histogram.validate() {
            return Err(Error::Invalid(format!(
                "series {}: native histogram at {}: {e}",
                series(),
                sample.timestamp
            )));
        }
    }
    if samples.is_empty() || histograms.is_empty() {
        return Ok(());
    }
    let mut float_times: Vec<TimestampMs> = samples.iter().map(|s| s.timestamp).collect();
    float_times.sort_unstable();
    for sample in histograms {
        if float_times.binary_search(&sample.timestamp).is_ok() {
            return Err(Error::Invalid(format!(
                "series {}: both a float sample and a native histogram at {}: send one value per timestamp",
                series(),
                sample.timestamp
            )));
        }
    }
    Ok(())
}

/// `samples` counts float and histogram samples alike.
fn check_sample_count(samples: usize, limits: &IngestLimits) -> Result<(), Error> {
    if samples > limits.max_samples_per_request {
        return Err(Error::Invalid(format!(
            "request carries {samples} samples, over the limit of {} per request",
            limits.max_samples_per_request
        )));
    }
    Ok(())
}

/// Validates a whole batch before anything of it is stored, so a rejected
/// request leaves no partial write behind.
pub fn validate_batch(batch: &WriteBatch, limits: &IngestLimits, now: TimestampMs) -> Result<(), Error> {
    check_sample_count(batch.sample_count() + batch.histogram_count(), limits)?;
    for series in &batch.series {
        validate_labels(&series.labels, limits)?;
        let describe = || series.labels.to_string();
        check_times(
            series.samples.iter().map(|s| s.timestamp),
            "sample",
            limits,
            now,
            describe,
        )?;
        check_times(
            series.histograms.iter().map(|h| h.timestamp),
            "histogram",
            limits,
            now,
            describe,
        )?;
        check_histograms(&series.samples, &series.histograms, describe)?;
    }
    Ok(())
}

/// The part of [`validate_batch`] every series of a raw batch needs: sample
/// count and times, and well-formed histograms. Labels are checked by [`validate_new_series`] for series the
/// store does not know yet — a known series passed when it was created.
pub fn validate_raw_samples(batch: &RawWriteBatch, limits: &IngestLimits, now: TimestampMs) -> Result<(), Error> {
    check_sample_count(batch.sample_count() + batch.histogram_count(), limits)?;
    for series in batch.series() {
        let describe = || series.describe();
        check_times(
            series.samples.iter().map(|s| s.timestamp),
            "sample",
            limits,
            now,
            describe,
        )?;
        if !series.histograms.is_empty() {
            check_times(
                series.histograms.iter().map(|h| h.timestamp),
                "histogram",
                limits,
                now,
                describe,
            )?;
            check_histograms(series.samples, series.histograms, describe)?;
        }
    }
    Ok(())
}

/// Checks the labels of a series about to be created and returns them owned.
pub fn validate_new_series(series: &RawSeriesRef<'_>, limits: &IngestLimits) -> Result<Labels, Error> {
    validate_label_pairs(series.label_bytes(), limits, || series.describe())?;
    series.to_labels()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seam::SeriesSamples;

    fn batch(labels: Labels, timestamp: i64) -> WriteBatch {
        WriteBatch {
            series: vec![SeriesSamples {
                labels,
                samples: vec![Sample::new(timestamp, 1.0)],
                histograms: Vec::new(),
                start_timestamps: Default::default(),
            }],
            metadata: Vec::new(),
        }
    }

    #[test]
    fn grammar() {
        assert!(is_valid_label_name("_a1"));
        assert!(!is_valid_label_name("1a"));
        assert!(!is_valid_label_name("a:b"));
        assert!(is_valid_metric_name("ns:rule:rate5m"));
        assert!(!is_valid_metric_name(""));
    }

    #[test]
    fn messages_name_the_series() {
        let limits = IngestLimits::default();
        let err = validate_batch(&batch(Labels::from_pairs([("job", "x")]), 0), &limits, 0).unwrap_err();
        assert!(err.to_string().contains("__name__ label is missing"), "{err}");
        let bad = Labels::from_pairs([("__name__", "up"), ("bad-name", "x")]);
        let err = validate_batch(&batch(bad, 0), &limits, 0).unwrap_err();
        assert!(err.to_string().contains("up{bad-name=\"x\"}"), "{err}");
        let dup = Labels::from_pairs([("__name__", "up"), ("a", "1"), ("a", "2")]);
        let err = validate_batch(&batch(dup.clone(), 0), &limits, 0).unwrap_err();
        assert!(err.to_string().contains("duplicate label name"), "{err}");
        let raw = RawWriteBatch::from_batch(&batch(dup, 0));
        let err = validate_new_series(&raw.series().next().unwrap(), &limits).unwrap_err();
        assert!(err.to_string().contains("duplicate label name"), "{err}");
    }

    #[test]
    fn histograms_are_validated_and_never_share_a_timestamp_with_a_float() {
        use crate::histogram::{Bucket, FloatHistogram};
        let limits = IngestLimits::default();
        let labels = Labels::from_pairs([("__name__", "latency"), ("job", "api")]);
        let good = FloatHistogram {
            count: 2.0,
            positive: vec![Bucket { index: 1, count: 2.0 }],
            ..FloatHistogram::default()
        };
        let with = |samples: Vec<Sample>, histograms: Vec<(i64, FloatHistogram)>| WriteBatch {
            series: vec![SeriesSamples {
                labels: labels.clone(),
                samples,
                histograms: histograms
                    .into_iter()
                    .map(|(timestamp, histogram)| HistogramSample { timestamp, histogram })
                    .collect(),
                start_timestamps: Default::default(),
            }],
            metadata: Vec::new(),
        };
        let ok = with(vec![Sample::new(1, 1.0)], vec![(2, good.clone())]);
        assert!(validate_batch(&ok, &limits, 0).is_ok());
        assert!(validate_raw_samples(&RawWriteBatch::from_batch(&ok), &limits, 0).is_ok());

        let low_count = FloatHistogram {
            count: 1.0,
            ..good.clone()
        };
        let bad = with(Vec::new(), vec![(3, low_count)]);
        for err in [
            validate_batch(&bad, &limits, 0).unwrap_err(),
            validate_raw_samples(&RawWriteBatch::from_batch(&bad), &limits, 0).unwrap_err(),
        ] {
            let message = err.to_string();
            assert!(
                message.starts_with("series latency{job=\"api\"}: native histogram at 3:"),
                "{message}"
            );
            assert!(message.contains("lower than the sum of its buckets"), "{message}");
        }

        let clash = with(vec![Sample::new(5, 1.0)], vec![(5, good.clone())]);
        let err = validate_raw_samples(&RawWriteBatch::from_batch(&clash), &limits, 0).unwrap_err();
        assert!(
            err.to_string()
                .contains("both a float sample and a native histogram at 5"),
            "{err}"
        );

        // A staleness marker is valid whatever it looks like.
        let stale = FloatHistogram {
            schema: 99,
            ..FloatHistogram::stale_marker()
        };
        assert!(validate_batch(&with(Vec::new(), vec![(6, stale)]), &limits, 0).is_ok());

        let old = with(Vec::new(), vec![(-8 * 24 * HOUR_MS, good)]);
        let err = validate_batch(&old, &limits, 0).unwrap_err();
        assert!(err.to_string().contains("histogram at"), "{err}");
    }

    #[test]
    fn time_bounds() {
        let limits = IngestLimits::default();
        let now = 100 * 24 * HOUR_MS;
        let up = Labels::from_pairs([("__name__", "up")]);
        assert!(validate_batch(&batch(up.clone(), now - 24 * HOUR_MS), &limits, now).is_ok());
        assert!(validate_batch(&batch(up.clone(), now - 8 * 24 * HOUR_MS), &limits, now).is_err());
        assert!(validate_batch(&batch(up, now + HOUR_MS), &limits, now).is_err());
    }
}
