//! Ingest validation: the Prometheus label grammar and per-tenant limits, with
//! messages that name the offending series.

use crate::error::Error;
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

fn check_times(
    samples: &[Sample],
    limits: &IngestLimits,
    now: TimestampMs,
    series: impl Fn() -> String,
) -> Result<(), Error> {
    let oldest_allowed = now.saturating_sub(limits.max_sample_age_ms);
    let newest_allowed = now.saturating_add(limits.max_future_ms);
    for sample in samples {
        if sample.timestamp < oldest_allowed {
            return Err(Error::Invalid(format!(
                "series {}: sample at {} is too old: samples older than {} ms before now ({now}) are rejected",
                series(),
                sample.timestamp,
                limits.max_sample_age_ms
            )));
        }
        if sample.timestamp > newest_allowed {
            return Err(Error::Invalid(format!(
                "series {}: sample at {} is too far in the future: more than {} ms after now ({now})",
                series(),
                sample.timestamp,
                limits.max_future_ms
            )));
        }
    }
    Ok(())
}

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
    check_sample_count(batch.sample_count(), limits)?;
    for series in &batch.series {
        validate_labels(&series.labels, limits)?;
        check_times(&series.samples, limits, now, || series.labels.to_string())?;
    }
    Ok(())
}

/// The part of [`validate_batch`] every series of a raw batch needs: sample
/// count and times. Labels are checked by [`validate_new_series`] for series the
/// store does not know yet — a known series passed when it was created.
pub fn validate_raw_samples(batch: &RawWriteBatch, limits: &IngestLimits, now: TimestampMs) -> Result<(), Error> {
    check_sample_count(batch.sample_count(), limits)?;
    for series in batch.series() {
        check_times(series.samples, limits, now, || series.describe())?;
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
    fn time_bounds() {
        let limits = IngestLimits::default();
        let now = 100 * 24 * HOUR_MS;
        let up = Labels::from_pairs([("__name__", "up")]);
        assert!(validate_batch(&batch(up.clone(), now - 24 * HOUR_MS), &limits, now).is_ok());
        assert!(validate_batch(&batch(up.clone(), now - 8 * 24 * HOUR_MS), &limits, now).is_err());
        assert!(validate_batch(&batch(up, now + HOUR_MS), &limits, now).is_err());
    }
}
