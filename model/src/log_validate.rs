//! Validation of log pushes with Loki's limits, defaults and error texts.
//!
//! [`LogLimits`] is Loki's `limits_config` subset that governs ingestion, under
//! Loki's names, so an operator's values carry over. [`validate_push`] checks a
//! decoded [`LogPush`] the way Loki's distributor does: a stream with bad labels
//! is dropped whole, a bad entry alone, and everything valid is kept — the
//! caller stores the valid part and answers 400 with the (grouped) messages,
//! which are Loki's wording so that clients and runbooks recognise them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Deserialize;

use crate::labels::Labels;
use crate::logs::{LogEntry, LogPush, LogStream, TimestampNs};
use crate::loki_push::format_stream_labels;
use crate::time::Clock;

/// Loki's message for a push without streams (answered with 422).
pub const MISSING_STREAMS_MESSAGE: &str = "error at least one valid stream is required for ingestion";
/// Loki's message for a stream without labels.
pub const MISSING_LABELS_MESSAGE: &str = "error at least one label pair is required per stream";
/// Loki adds this label itself and does not count it against the label limit.
const SERVICE_NAME_LABEL: &str = "service_name";
/// Loki's own structured metadata that does not count towards entry sizes.
const DETECTED_LEVEL_LABEL: &str = "detected_level";
/// How many distinct messages a response lists; a push of many bad entries
/// would otherwise produce a body as large as the push.
pub const MAX_LISTED_ERRORS: usize = 100;

const MIB: f64 = 1_048_576.0;

/// Ingestion limits, named and defaulted as in Loki's `limits_config`, and
/// the one query limit of the logs section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogLimits {
    /// Longest accepted line in bytes (`256KB`); 0 disables the check.
    #[serde(deserialize_with = "de_byte_size")]
    pub max_line_size: u64,
    /// Cut long lines to `max_line_size` instead of refusing them.
    pub max_line_size_truncate: bool,
    /// Appended to a cut line (within `max_line_size`).
    pub max_line_size_truncate_identifier: String,
    pub max_label_names_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    pub reject_old_samples: bool,
    /// Entries older than now minus this are refused when `reject_old_samples`.
    #[serde(deserialize_with = "de_duration")]
    pub reject_old_samples_max_age: Duration,
    /// Entries newer than now plus this are refused.
    #[serde(deserialize_with = "de_duration")]
    pub creation_grace_period: Duration,
    /// Per-tenant ingestion rate in MiB/s (line and structured metadata bytes).
    pub ingestion_rate_mb: f64,
    /// Per-tenant burst in MiB: the largest push accepted at once.
    pub ingestion_burst_size_mb: f64,
    /// Active streams per tenant on one node; 0 = unlimited. Enforced by storage.
    pub max_streams_per_user: usize,
    /// Active streams per tenant overall; 0 = unlimited. Enforced by storage.
    pub max_global_streams_per_user: usize,
    pub allow_structured_metadata: bool,
    /// Largest structured metadata of one entry (names plus values); 0 = unlimited.
    #[serde(deserialize_with = "de_byte_size")]
    pub max_structured_metadata_size: u64,
    /// Most structured metadata pairs on one entry; 0 = unlimited.
    pub max_structured_metadata_entries_count: usize,
    /// Most log lines one `/loki/api/v1/patterns` request examines (patterns
    /// are computed from the lines at query time); 0 = unlimited. Not a Loki
    /// key: Loki learns patterns at ingestion.
    pub max_pattern_lines_per_query: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_line_size: 256 * 1024,
            max_line_size_truncate: false,
            max_line_size_truncate_identifier: String::new(),
            max_label_names_per_series: 15,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            reject_old_samples: true,
            reject_old_samples_max_age: Duration::from_secs(7 * 24 * 3600),
            creation_grace_period: Duration::from_secs(10 * 60),
            ingestion_rate_mb: 4.0,
            ingestion_burst_size_mb: 6.0,
            max_streams_per_user: 0,
            max_global_streams_per_user: 5000,
            allow_structured_metadata: true,
            max_structured_metadata_size: 64 * 1024,
            max_structured_metadata_entries_count: 128,
            max_pattern_lines_per_query: 1_000_000,
        }
    }
}

impl LogLimits {
    /// The ingestion rate in bytes per second.
    pub fn ingestion_rate_bytes(&self) -> f64 {
        self.ingestion_rate_mb * MIB
    }

    /// The burst in bytes.
    pub fn ingestion_burst_bytes(&self) -> f64 {
        self.ingestion_burst_size_mb * MIB
    }
}

/// Deserializes a Prometheus duration (`30s`, `1h30m`) for serde `deserialize_with`.
pub fn de_duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration such as 10m, 168h or 7d (units y w d h m s ms)"
        ))
    })
}

/// Deserializes a byte size (`256KB`, or a plain number of bytes) for serde `deserialize_with`.
pub fn de_byte_size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(bytes) => Ok(bytes),
        Size::Text(text) => parse_byte_size(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a size such as 256KB or 1MB (units B KB MB GB TB, powers of 1024)"
            ))
        }),
    }
}

/// A Prometheus duration as Loki's config takes it: `0`, or units in
/// descending order, each at most once (`1w2d`, `1h30m`, `500ms`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut rest = text;
    let mut total_ms: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // "ms" before "m": the longer unit is tried first at each position.
        let unit = (next_unit..UNITS.len())
            .filter(|&i| rest.starts_with(UNITS[i].0))
            .max_by_key(|&i| UNITS[i].0.len())?;
        rest = &rest[UNITS[unit].0.len()..];
        total_ms = total_ms.checked_add(number.checked_mul(UNITS[unit].1)?)?;
        next_unit = unit + 1;
    }
    (!text.is_empty()).then(|| Duration::from_millis(total_ms))
}

/// A byte size as Loki's config takes it: digits and an optional unit, any
/// case, in powers of 1024 (`256KB` is 262144 bytes).
pub fn parse_byte_size(text: &str) -> Option<u64> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number: u64 = text[..digits].parse().ok()?;
    let shift = match text[digits..].trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" => 10,
        "M" | "MB" => 20,
        "G" | "GB" => 30,
        "T" | "TB" => 40,
        "P" | "PB" => 50,
        "E" | "EB" => 60,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

/// The outcome of [`validate_push`]: what may be stored and what was refused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValidatedPush {
    /// The valid streams and entries, in the order sent; streams left without
    /// entries are dropped.
    pub push: LogPush,
    /// Lines in `push`.
    pub lines: usize,
    /// Bytes in `push` as Loki's rate limit counts them: lines plus structured
    /// metadata names and values.
    pub bytes: usize,
    /// Distinct error messages in first-seen order with how often each
    /// occurred (at most [`MAX_LISTED_ERRORS`] of them).
    pub errors: Vec<(String, usize)>,
    /// Errors beyond the listed distinct messages.
    pub unlisted_errors: usize,
    /// Entries refused (each entry of a stream refused for its labels counts).
    pub rejected_entries: usize,
}

impl ValidatedPush {
    /// Whether anything was refused.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The response body Loki gives for these errors: the distinct messages
    /// joined by `; `, each prefixed with `N errors like: ` when there is more
    /// than one error. `None` when nothing was refused.
    pub fn error_message(&self) -> Option<String> {
        if self.errors.is_empty() {
            return None;
        }
        let grouped = self.errors.len() > 1 || self.unlisted_errors > 0;
        let mut out = String::new();
        for (i, (message, count)) in self.errors.iter().enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            if grouped || *count > 1 {
                let _ = write!(out, "{count} errors like: ");
            }
            out.push_str(message);
        }
        if self.unlisted_errors > 0 {
            let _ = write!(out, "; and {} more errors", self.unlisted_errors);
        }
        Some(out)
    }
}

/// Collects error messages grouped by text.
#[derive(Default)]
struct Errors {
    listed: Vec<(String, usize)>,
    index: HashMap<String, usize>,
    unlisted: usize,
}

impl Errors {
    fn add(&mut self, message: String) {
        if let Some(&i) = self.index.get(&message) {
            self.listed[i].1 += 1;
        } else if self.listed.len() < MAX_LISTED_ERRORS {
            self.index.insert(message.clone(), self.listed.len());
            self.listed.push((message, 1));
        } else {
            self.unlisted += 1;
        }
    }
}

/// Checks a push against `limits` at the clock's now, as Loki's distributor
/// does, in Loki's order: lines are cut first when truncation is on; then a
/// stream's labels (present, how many, name and value lengths, duplicate
/// names) — a stream that fails is refused whole; then each entry (too old,
/// too new, line too long, structured metadata allowed, its size and count).
/// Structured metadata of kept entries is normalised as Loki does: names to
/// Prometheus' legacy charset, U+FFFD in values to a space.
pub fn validate_push(push: LogPush, limits: &LogLimits, clock: &dyn Clock) -> ValidatedPush {
    let now_ns = i128::from(clock.now_ms()) * 1_000_000;
    let oldest_ns = clamp_ns(now_ns - limits.reject_old_samples_max_age.as_nanos() as i128);
    let newest_ns = clamp_ns(now_ns + limits.creation_grace_period.as_nanos() as i128);
    let mut errors = Errors::default();
    let mut out = ValidatedPush::default();
    for mut stream in push.streams {
        // Loki skips empty streams before looking at their labels.
        if stream.entries.is_empty() {
            continue;
        }
        if limits.max_line_size_truncate {
            truncate_lines(&mut stream, limits);
        }
        let labels = stream.labels.clone();
        let stream_text = StreamText::new(&labels);
        if let Some(message) = check_labels(&stream.labels, &stream_text, limits) {
            errors.add(message);
            out.rejected_entries += stream.entries.len();
            continue;
        }
        let mut kept = Vec::with_capacity(stream.entries.len());
        for mut entry in stream.entries {
            let metadata_size = metadata_size(&entry.structured_metadata);
            let checked = check_entry(&entry, metadata_size, &stream_text, limits, oldest_ns, newest_ns)
                .and_then(|()| normalise_metadata(&mut entry, &stream_text));
            match checked {
                Ok(()) => {
                    out.lines += 1;
                    out.bytes += entry.line.len() + metadata_size;
                    kept.push(entry);
                }
                Err(message) => {
                    errors.add(message);
                    out.rejected_entries += 1;
                }
            }
        }
        if !kept.is_empty() {
            out.push.streams.push(LogStream {
                labels: stream.labels,
                entries: kept,
            });
        }
    }
    out.errors = errors.listed;
    out.unlisted_errors = errors.unlisted;
    out
}

fn clamp_ns(value: i128) -> TimestampNs {
    value.clamp(i128::from(TimestampNs::MIN), i128::from(TimestampNs::MAX)) as TimestampNs
}

/// Cuts lines over the limit to the limit, identifier included. Loki cuts at
/// a byte; we cut at the character boundary at or before it so the line stays
/// UTF-8. Like Loki, an identifier as long as the limit leaves lines alone
/// (they are then refused as too long).
fn truncate_lines(stream: &mut LogStream, limits: &LogLimits) {
    let max = usize::try_from(limits.max_line_size).unwrap_or(usize::MAX);
    let suffix = &limits.max_line_size_truncate_identifier;
    if max == 0 || suffix.len() >= max {
        return;
    }
    for entry in &mut stream.entries {
        if entry.line.len() > max {
            let mut cut = max - suffix.len();
            while !entry.line.is_char_boundary(cut) {
                cut -= 1;
            }
            entry.line.truncate(cut);
            entry.line.push_str(suffix);
        }
    }
}

/// A stream's labels as Loki writes them in messages (`{app="api"}`),
/// formatted only when a message needs them: most pushes have none, and
/// formatting every stream of every push cost ~7 % of push CPU at 10k
/// streams.
struct StreamText<'a> {
    labels: &'a Labels,
    text: std::cell::OnceCell<String>,
}

impl<'a> StreamText<'a> {
    fn new(labels: &'a Labels) -> Self {
        StreamText {
            labels,
            text: std::cell::OnceCell::new(),
        }
    }
}

impl std::fmt::Display for StreamText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text.get_or_init(|| format_stream_labels(self.labels)))
    }
}

/// Loki's label checks; the message for the first failure.
fn check_labels(labels: &Labels, stream: &StreamText<'_>, limits: &LogLimits) -> Option<String> {
    if labels.is_empty() {
        return Some(MISSING_LABELS_MESSAGE.to_string());
    }
    let counted = labels.len() - usize::from(labels.get(SERVICE_NAME_LABEL).is_some());
    if counted > limits.max_label_names_per_series {
        return Some(format!(
            "entry for stream '{stream}' has {counted} label names; limit {}",
            limits.max_label_names_per_series
        ));
    }
    let mut previous: Option<&str> = None;
    for label in labels {
        if label.name.len() > limits.max_label_name_length {
            return Some(format!("stream '{stream}' has label name too long: '{}'", label.name));
        }
        if label.value.len() > limits.max_label_value_length {
            return Some(format!("stream '{stream}' has label value too long: '{}'", label.value));
        }
        if previous == Some(label.name.as_str()) {
            return Some(format!("stream '{stream}' has duplicate label name: '{}'", label.name));
        }
        previous = Some(label.name.as_str());
    }
    None
}

/// Structured metadata bytes as Loki counts them (names plus values, its own
/// `detected_level` excepted).
fn metadata_size(metadata: &Labels) -> usize {
    metadata
        .iter()
        .filter(|l| l.name != DETECTED_LEVEL_LABEL)
        .map(|l| l.name.len() + l.value.len())
        .sum()
}

fn check_entry(
    entry: &LogEntry,
    metadata_size: usize,
    stream: &StreamText<'_>,
    limits: &LogLimits,
    oldest_ns: TimestampNs,
    newest_ns: TimestampNs,
) -> Result<(), String> {
    if limits.reject_old_samples && entry.timestamp < oldest_ns {
        return Err(format!(
            "entry for stream '{stream}' has timestamp too old: {}, oldest acceptable timestamp is: {}",
            format_rfc3339(entry.timestamp),
            format_rfc3339(oldest_ns)
        ));
    }
    if entry.timestamp > newest_ns {
        return Err(format!(
            "entry for stream '{stream}' has timestamp too new: {}",
            format_rfc3339(entry.timestamp)
        ));
    }
    if limits.max_line_size != 0 && entry.line.len() as u64 > limits.max_line_size {
        return Err(format!(
            "max entry size '{}' bytes exceeded for stream '{stream}' while adding an entry with length '{}' bytes",
            limits.max_line_size,
            entry.line.len()
        ));
    }
    let metadata_count = entry.structured_metadata.len();
    if metadata_count > 0 {
        if !limits.allow_structured_metadata {
            return Err(format!(
                "stream '{stream}' includes structured metadata, but this feature is disallowed. Please see `limits_config.allow_structured_metadata` or contact your Loki administrator to enable it"
            ));
        }
        let max_size = limits.max_structured_metadata_size;
        if max_size != 0 && metadata_size as u64 > max_size {
            return Err(format!(
                "stream '{stream}' has structured metadata too large: '{metadata_size}' bytes, limit: '{max_size}' bytes. Please see `limits_config.max_structured_metadata_size` or contact your Loki administrator to increase it"
            ));
        }
        let max_count = limits.max_structured_metadata_entries_count;
        if max_count != 0 && metadata_count > max_count {
            return Err(format!(
                "stream '{stream}' has too many structured metadata labels: '{metadata_count}', limit: '{max_count}'. Please see `limits_config.max_structured_metadata_entries_count` or contact your Loki administrator to increase it"
            ));
        }
    }
    Ok(())
}

/// Loki rewrites structured metadata names to Prometheus' legacy charset
/// (LogQL can only name such labels) and replaces U+FFFD — what invalid UTF-8
/// decodes to — with a space in values. When two names normalise to the same
/// one, the later pair wins, as in Loki's label builder.
fn normalise_metadata(entry: &mut LogEntry, stream: &StreamText<'_>) -> Result<(), String> {
    let needs_work = entry
        .structured_metadata
        .iter()
        .any(|l| !is_normal_metadata_name(&l.name) || l.value.contains('\u{fffd}'));
    if !needs_work {
        return Ok(());
    }
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(entry.structured_metadata.len());
    for label in &entry.structured_metadata {
        let name = normalise_metadata_name(&label.name).map_err(|reason| {
            format!(
                "stream '{stream}' has invalid structured metadata name '{}': {reason}",
                label.name
            )
        })?;
        let value = label.value.replace('\u{fffd}', " ");
        pairs.retain(|(existing, _)| *existing != name);
        pairs.push((name, value));
    }
    entry.structured_metadata = Labels::from_pairs(pairs);
    Ok(())
}

/// Whether normalisation leaves `name` unchanged: letters, digits and single
/// underscores, not starting with a digit or consisting only of underscores
/// (a `__reserved__` name may have its double underscores).
fn is_normal_metadata_name(name: &str) -> bool {
    normalise_metadata_name(name).is_ok_and(|normal| normal == name)
}

/// OpenTelemetry's label-name normalisation as Loki applies it: every run of
/// characters other than ASCII letters and digits becomes one `_`, a leading
/// digit gets `key_` in front, and `__name__`-style reserved names keep their
/// double underscores around a normalised core.
fn normalise_metadata_name(name: &str) -> Result<String, &'static str> {
    if name.is_empty() {
        return Err("label name is empty");
    }
    let reserved = name.len() >= 4 && name.starts_with("__") && name.ends_with("__");
    let core = if reserved { &name[2..name.len() - 2] } else { name };
    let mut out = String::with_capacity(name.len() + 4);
    if reserved {
        out.push_str("__");
    }
    let mut previous_underscore = false;
    for c in core.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
            previous_underscore = false;
        } else if !previous_underscore {
            out.push('_');
            previous_underscore = true;
        }
    }
    if reserved {
        out.push_str("__");
    }
    if out.as_bytes()[0].is_ascii_digit() {
        out.insert_str(0, "key_");
    }
    if out.bytes().all(|b| b == b'_') {
        return Err("normalization resulted in a name of only underscores");
    }
    Ok(out)
}

/// A nanosecond timestamp as Go's `time.RFC3339` in UTC: whole seconds, `Z`.
pub fn format_rfc3339(timestamp: TimestampNs) -> String {
    let seconds = timestamp.div_euclid(1_000_000_000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Year, month and day of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualClock;

    /// 2026-01-01T00:00:00Z.
    const NOW_MS: i64 = 1_767_225_600_000;
    const NOW_NS: i64 = NOW_MS * 1_000_000;
    const MINUTE_NS: i64 = 60 * 1_000_000_000;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn stream(pairs: &[(&str, &str)], entries: Vec<LogEntry>) -> LogStream {
        LogStream {
            labels: labels(pairs),
            entries,
        }
    }

    fn validate(streams: Vec<LogStream>, limits: &LogLimits) -> ValidatedPush {
        validate_push(LogPush { streams }, limits, &ManualClock::new(NOW_MS))
    }

    fn messages(validated: &ValidatedPush) -> Vec<&str> {
        validated.errors.iter().map(|(m, _)| m.as_str()).collect()
    }

    #[test]
    fn defaults_are_lokis() {
        let limits = LogLimits::default();
        assert_eq!(limits.max_line_size, 262_144);
        assert_eq!(limits.reject_old_samples_max_age, Duration::from_secs(604_800));
        assert_eq!(limits.ingestion_rate_bytes(), 4_194_304.0);
        assert_eq!(limits.ingestion_burst_bytes(), 6_291_456.0);
        assert_eq!(limits.max_global_streams_per_user, 5000);
    }

    #[test]
    fn limits_deserialize_with_loki_units_and_refuse_unknown_keys() {
        let parsed: LogLimits = serde_json::from_str(
            r#"{"max_line_size": "1MB", "reject_old_samples_max_age": "168h", "creation_grace_period": "1h30m",
                "max_structured_metadata_size": 100, "ingestion_rate_mb": 0.5}"#,
        )
        .unwrap();
        assert_eq!(parsed.max_line_size, 1 << 20);
        assert_eq!(parsed.reject_old_samples_max_age, Duration::from_secs(168 * 3600));
        assert_eq!(parsed.creation_grace_period, Duration::from_secs(5400));
        assert_eq!(parsed.max_structured_metadata_size, 100);
        assert_eq!(parsed.max_label_names_per_series, 15, "unset keys keep Loki's default");
        let unknown = serde_json::from_str::<LogLimits>(r#"{"max_line_sise": "1MB"}"#).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `max_line_sise`"),
            "{unknown}"
        );
        let bad = serde_json::from_str::<LogLimits>(r#"{"creation_grace_period": "10 minutes"}"#).unwrap_err();
        assert!(bad.to_string().contains("is not a duration"), "{bad}");
    }

    #[test]
    fn parses_durations_and_sizes() {
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1w"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m500ms"), Some(Duration::from_millis(60_500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "m", "5", "30m1h", "1h1h", "1.5h", "-1h", "10 m"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(parse_byte_size("256KB"), Some(262_144));
        assert_eq!(parse_byte_size("256kb"), Some(262_144));
        assert_eq!(parse_byte_size("64 MB"), Some(64 << 20));
        assert_eq!(parse_byte_size("100"), Some(100));
        for bad in ["", "KB", "1.5MB", "1XB", "99999999999EB"] {
            assert_eq!(parse_byte_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_times_like_go_rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(NOW_NS + 999_999_999), "2026-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400 * 1_000_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(i64::MIN), "1677-09-21T00:12:43Z");
        assert_eq!(format_rfc3339(i64::MAX), "2262-04-11T23:47:16Z");
    }

    #[test]
    fn a_valid_push_passes_whole() {
        let entries = vec![LogEntry::new(NOW_NS, "a"), LogEntry::new(NOW_NS - MINUTE_NS, "bb")];
        let validated = validate(vec![stream(&[("app", "x")], entries.clone())], &LogLimits::default());
        assert!(!validated.has_errors(), "{:?}", validated.errors);
        assert_eq!(validated.push.streams, vec![stream(&[("app", "x")], entries)]);
        assert_eq!((validated.lines, validated.bytes), (2, 3));
        assert_eq!(validated.error_message(), None);
    }

    #[test]
    fn old_and_future_entries_are_refused_with_lokis_messages() {
        let seven_days_ns = 7 * 24 * 60 * MINUTE_NS;
        let entries = vec![
            LogEntry::new(NOW_NS - seven_days_ns, "exactly seven days old is accepted"),
            LogEntry::new(NOW_NS - seven_days_ns - 1, "older"),
            LogEntry::new(NOW_NS + 10 * MINUTE_NS, "at the grace period"),
            LogEntry::new(NOW_NS + 10 * MINUTE_NS + 1, "beyond"),
        ];
        let validated = validate(vec![stream(&[("app", "x")], entries)], &LogLimits::default());
        let kept: Vec<&str> = validated.push.streams[0]
            .entries
            .iter()
            .map(|e| e.line.as_str())
            .collect();
        assert_eq!(kept, vec!["exactly seven days old is accepted", "at the grace period"]);
        assert_eq!(
            messages(&validated),
            vec![
                "entry for stream '{app=\"x\"}' has timestamp too old: 2025-12-24T23:59:59Z, oldest acceptable timestamp is: 2025-12-25T00:00:00Z",
                "entry for stream '{app=\"x\"}' has timestamp too new: 2026-01-01T00:10:00Z",
            ]
        );
        assert_eq!(validated.rejected_entries, 2);

        let keep_old = LogLimits {
            reject_old_samples: false,
            ..LogLimits::default()
        };
        let validated = validate(
            vec![stream(&[("app", "x")], vec![LogEntry::new(0, "epoch")])],
            &keep_old,
        );
        assert!(!validated.has_errors());
    }

    #[test]
    fn long_lines_are_refused_or_cut() {
        let limits = LogLimits {
            max_line_size: 10,
            ..LogLimits::default()
        };
        let entries = vec![
            LogEntry::new(NOW_NS, "0123456789"),
            LogEntry::new(NOW_NS, "0123456789X"),
        ];
        let validated = validate(vec![stream(&[("app", "x")], entries.clone())], &limits);
        assert_eq!(validated.push.streams[0].entries.len(), 1);
        assert_eq!(
            messages(&validated),
            vec![
                "max entry size '10' bytes exceeded for stream '{app=\"x\"}' while adding an entry with length '11' bytes"
            ]
        );

        let truncate = LogLimits {
            max_line_size_truncate: true,
            max_line_size_truncate_identifier: "…".into(),
            ..limits
        };
        let utf8 = LogEntry::new(NOW_NS, "ééééééé");
        let validated = validate(vec![stream(&[("app", "x")], vec![entries[1].clone(), utf8])], &truncate);
        assert!(!validated.has_errors(), "{:?}", validated.errors);
        let lines: Vec<&str> = validated.push.streams[0]
            .entries
            .iter()
            .map(|e| e.line.as_str())
            .collect();
        // "…" is 3 bytes: 7 bytes are kept, cut back to a character boundary.
        assert_eq!(lines, vec!["0123456…", "ééé…"]);
    }

    #[test]
    fn bad_labels_refuse_the_whole_stream() {
        let entry = || vec![LogEntry::new(NOW_NS, "x"), LogEntry::new(NOW_NS, "y")];
        let limits = LogLimits {
            max_label_names_per_series: 2,
            max_label_name_length: 12,
            max_label_value_length: 5,
            ..LogLimits::default()
        };
        let validated = validate(
            vec![
                stream(&[], entry()),
                stream(&[("a", "1"), ("b", "2"), ("c", "3")], entry()),
                stream(&[("a", "1"), ("b", "2"), ("service_name", "s")], entry()),
                stream(&[("thirteen_char", "1")], entry()),
                stream(&[("a", "toolong")], entry()),
                stream(&[("a", "1"), ("a", "2")], entry()),
                stream(&[("ok", "1")], entry()),
                stream(&[], vec![]),
            ],
            &limits,
        );
        assert_eq!(
            messages(&validated),
            vec![
                "error at least one label pair is required per stream",
                "entry for stream '{a=\"1\", b=\"2\", c=\"3\"}' has 3 label names; limit 2",
                "stream '{thirteen_char=\"1\"}' has label name too long: 'thirteen_char'",
                "stream '{a=\"toolong\"}' has label value too long: 'toolong'",
                "stream '{a=\"1\", a=\"2\"}' has duplicate label name: 'a'",
            ]
        );
        let kept: Vec<Labels> = validated.push.streams.iter().map(|s| s.labels.clone()).collect();
        assert_eq!(
            kept,
            vec![
                labels(&[("a", "1"), ("b", "2"), ("service_name", "s")]),
                labels(&[("ok", "1")])
            ],
            "service_name does not count against the limit, and empty streams are dropped silently"
        );
        assert_eq!(validated.rejected_entries, 10);
    }

    #[test]
    fn structured_metadata_limits_and_normalisation() {
        let with_metadata = |pairs: &[(&str, &str)]| {
            let mut entry = LogEntry::new(NOW_NS, "line");
            entry.structured_metadata = labels(pairs);
            entry
        };
        let limits = LogLimits {
            max_structured_metadata_size: 30,
            max_structured_metadata_entries_count: 2,
            ..LogLimits::default()
        };
        let validated = validate(
            vec![stream(
                &[("app", "x")],
                vec![
                    with_metadata(&[("k", &"x".repeat(30))]),
                    with_metadata(&[("a", "1"), ("b", "2"), ("c", "3")]),
                    with_metadata(&[("trace.id", "bad\u{fffd}byte"), ("1st", "x")]),
                    with_metadata(&[("__", "x")]),
                ],
            )],
            &limits,
        );
        assert_eq!(
            messages(&validated),
            vec![
                "stream '{app=\"x\"}' has structured metadata too large: '31' bytes, limit: '30' bytes. Please see `limits_config.max_structured_metadata_size` or contact your Loki administrator to increase it",
                "stream '{app=\"x\"}' has too many structured metadata labels: '3', limit: '2'. Please see `limits_config.max_structured_metadata_entries_count` or contact your Loki administrator to increase it",
                "stream '{app=\"x\"}' has invalid structured metadata name '__': normalization resulted in a name of only underscores",
            ]
        );
        let kept = &validated.push.streams[0].entries;
        assert_eq!(kept.len(), 1);
        assert_eq!(
            kept[0].structured_metadata,
            labels(&[("key_1st", "x"), ("trace_id", "bad byte")])
        );

        let disallowed = LogLimits {
            allow_structured_metadata: false,
            ..LogLimits::default()
        };
        let validated = validate(
            vec![stream(&[("app", "x")], vec![with_metadata(&[("k", "v")])])],
            &disallowed,
        );
        assert!(messages(&validated)[0].contains("includes structured metadata, but this feature is disallowed"));
    }

    #[test]
    fn normalises_names_like_otel() {
        for (name, normal) in [
            ("trace_id", "trace_id"),
            ("trace.id", "trace_id"),
            ("a..b__c", "a_b_c"),
            ("_private", "_private"),
            ("__name__", "__name__"),
            ("__a.b__", "__a_b__"),
            ("9lives", "key_9lives"),
            ("ünï", "_n_"),
        ] {
            assert_eq!(normalise_metadata_name(name).as_deref(), Ok(normal), "{name}");
        }
        assert!(normalise_metadata_name("").is_err());
        assert!(normalise_metadata_name("...").is_err());
    }

    #[test]
    fn errors_are_grouped_like_loki() {
        let one = ValidatedPush {
            errors: vec![("first".into(), 1)],
            ..ValidatedPush::default()
        };
        assert_eq!(one.error_message().as_deref(), Some("first"));
        let repeated = ValidatedPush {
            errors: vec![("first".into(), 3)],
            ..ValidatedPush::default()
        };
        assert_eq!(repeated.error_message().as_deref(), Some("3 errors like: first"));
        let two = ValidatedPush {
            errors: vec![("first".into(), 1), ("second".into(), 2)],
            ..ValidatedPush::default()
        };
        assert_eq!(
            two.error_message().as_deref(),
            Some("1 errors like: first; 2 errors like: second")
        );

        let old: Vec<LogEntry> = (0..MAX_LISTED_ERRORS as i64 + 5)
            .map(|i| LogEntry::new(i * 1_000_000_000, "old"))
            .collect();
        let validated = validate(vec![stream(&[("app", "x")], old)], &LogLimits::default());
        assert_eq!(validated.errors.len(), MAX_LISTED_ERRORS);
        assert_eq!(validated.unlisted_errors, 5);
        assert!(validated.error_message().unwrap().ends_with("; and 5 more errors"));
    }
}
