//! The scrape formats: what the collector reads from a `/metrics` endpoint.
//!
//! Two text formats are parsed into one [`Scrape`]:
//!
//! - [`parse_text`]: the Prometheus text format 0.0.4, with exactly the leniency
//!   of Prometheus 3's scrape parser (blank lines, free whitespace, optional
//!   commas between labels, any `# …` comment, repeated `# HELP`/`# TYPE`),
//!   plus UTF-8 metric and label names in quotes (`{"my.metric", "a.b"="c"}`).
//! - [`parse_openmetrics`]: OpenMetrics 1.0, strictly: `# EOF` required,
//!   metadata before samples, families and label groups contiguous, histogram,
//!   summary, info and stateset rules, timestamps in seconds, exemplars parsed
//!   and validated. Where Prometheus ingests what the specification forbids and
//!   real clients send it, we follow Prometheus; `OPENMETRICS_DEVIATIONS` in the
//!   conformance test lists those cases.
//!
//! [`parse`] picks the format from the response's `Content-Type` as Prometheus
//! does. Either way the result is what Prometheus would ingest: classic
//! histograms and summaries as their `_bucket`/`_sum`/`_count`/quantile series
//! (`le` and `quantile` values normalised to Prometheus 3's float spelling, so
//! `le="1"` becomes `le="1.0"`), `_created` series kept as ordinary series
//! (Prometheus' default without the created-timestamp feature flag), NaN values
//! canonicalised to Prometheus' "normal NaN" so a scraped NaN is never taken for
//! a staleness marker.
//!
//! Parsing never panics and allocates only what the result holds: each label
//! string once, one shared slice per label set, one sample vector per series.
//!
//! [`render_text`] writes series and metadata back in the text format (the
//! collector's own `/metrics`), and what it writes parses back unchanged.

use std::borrow::Cow;

use crate::error::Error;
use crate::labels::{Label, Labels, METRIC_NAME};
use crate::sample::Sample;
use crate::seam::{MetricMetadata, MetricType, SeriesSamples, WriteBatch};
use crate::time::TimestampMs;

mod openmetrics;
mod render;
mod text;

pub use render::render_text;

/// `Content-Type` of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `Content-Type` of OpenMetrics 1.0 text.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `Accept` header a scraper sends: Prometheus 3's default preference
/// order without the protobuf format, which this module does not parse.
pub const SCRAPE_ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0;q=0.5,\
     application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/// The label of a classic histogram's bucket bound.
pub const BUCKET_LABEL: &str = "le";
/// The label of a summary's quantile.
pub const QUANTILE_LABEL: &str = "quantile";

/// The NaN Prometheus stores for a NaN read from a scrape (`value.NormalNaN`):
/// a fixed payload that is never the staleness marker.
pub const NORMAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0001;

/// One parsed scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// One entry per series in order of first appearance; labels include
    /// `__name__`. Consecutive lines of one series (OpenMetrics allows several
    /// timestamped points) share an entry. A sample without a timestamp of its
    /// own carries the scrape time.
    pub series: Vec<SeriesSamples>,
    /// One entry per family that had a `# HELP`, `# TYPE` or `# UNIT` line, in
    /// order of first appearance. The text format has no units.
    pub metadata: Vec<MetricMetadata>,
    /// Exemplars (OpenMetrics only), each pointing at the series it came with.
    pub exemplars: Vec<Exemplar>,
}

impl Scrape {
    /// The series and metadata as a write; exemplars are not carried (the
    /// write path refuses them until they are stored).
    pub fn into_write_batch(self) -> WriteBatch {
        WriteBatch {
            series: self.series,
            metadata: self.metadata,
        }
    }

    /// Float samples over all series.
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

/// An OpenMetrics exemplar: a labelled example observation attached to a
/// counter's `_total` or a histogram's `_bucket` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// Index into [`Scrape::series`] of the series whose line carried it.
    pub series: usize,
    pub labels: Labels,
    pub value: f64,
    pub timestamp: Option<TimestampMs>,
}

/// The scrape formats this module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    /// The format a response with this `Content-Type` is parsed as, following
    /// Prometheus: `application/openmetrics-text` is OpenMetrics, anything else
    /// that is not protobuf — `text/plain`, a missing or malformed header, an
    /// unknown type — falls back to the text format. The protobuf format is an
    /// error: the collector never asks for it, so a target that sends it is
    /// misconfigured, and parsing it as text would only produce garbage errors.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Format, Error> {
        let Some(content_type) = content_type else {
            return Ok(Format::Text);
        };
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
            Ok(Format::OpenMetrics)
        } else if media_type.eq_ignore_ascii_case("application/vnd.google.protobuf") {
            Err(Error::Invalid(format!(
                "unsupported scrape content type {content_type:?}: the protobuf exposition format is not supported, \
                 serve text/plain or application/openmetrics-text"
            )))
        } else {
            Ok(Format::Text)
        }
    }
}

/// Parses a scrape body in the format its `Content-Type` names (see
/// [`Format::from_content_type`]).
pub fn parse(content_type: Option<&str>, body: &[u8], scrape_time_ms: TimestampMs) -> Result<Scrape, Error> {
    match Format::from_content_type(content_type)? {
        Format::Text => parse_text(body, scrape_time_ms),
        Format::OpenMetrics => parse_openmetrics(body, scrape_time_ms),
    }
}

/// Parses the Prometheus text format 0.0.4 as Prometheus 3 scrapes it.
/// Timestamps are integer milliseconds; samples without one get
/// `scrape_time_ms`.
pub fn parse_text(body: &[u8], scrape_time_ms: TimestampMs) -> Result<Scrape, Error> {
    text::parse(body, scrape_time_ms)
}

/// Parses OpenMetrics 1.0 text. Timestamps are seconds (with fractions) and
/// are converted to milliseconds as Prometheus does (truncating, saturating at
/// the ends of the range); samples without one get `scrape_time_ms`.
pub fn parse_openmetrics(body: &[u8], scrape_time_ms: TimestampMs) -> Result<Scrape, Error> {
    openmetrics::parse(body, scrape_time_ms)
}

// ---------------------------------------------------------------------------
// Shared by both parsers.

/// Collects series, metadata and exemplars. The current line's labels are
/// built in `labels` (a scratch vector reused for every line).
#[derive(Debug)]
struct ScrapeBuilder {
    scrape_time_ms: TimestampMs,
    scrape: Scrape,
    labels: Vec<Label>,
}

impl ScrapeBuilder {
    fn new(scrape_time_ms: TimestampMs, body_len: usize) -> Self {
        // A typical exposition line is 60–120 bytes: reserving for the body
        // saves the vector's repeated doubling on large pages.
        let series_guess = (body_len / 96).min(1 << 16);
        ScrapeBuilder {
            scrape_time_ms,
            scrape: Scrape {
                series: Vec::with_capacity(series_guess),
                ..Scrape::default()
            },
            labels: Vec::with_capacity(16),
        }
    }

    /// Sorts the scratch labels and reports a name given twice (Prometheus
    /// fails the scrape: a series cannot have two values for one label).
    fn sort_labels(&mut self) -> Result<(), String> {
        self.labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        for pair in self.labels.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(format!("label name {:?} is not unique", pair[0].name));
            }
        }
        Ok(())
    }

    /// Ends the current line: the sorted scratch labels become a series (or
    /// one more sample of the previous line's series). Returns the series'
    /// index.
    fn push_sample(&mut self, value: f64, timestamp: Option<TimestampMs>) -> usize {
        // A label with an empty value is no label (Prometheus drops it too).
        self.labels.retain(|l| !l.value.is_empty());
        let sample = Sample::new(timestamp.unwrap_or(self.scrape_time_ms), value);
        let series = &mut self.scrape.series;
        if let Some(last) = series.last_mut()
            && last.labels.as_slice() == self.labels.as_slice()
        {
            last.samples.push(sample);
            self.labels.clear();
            return series.len() - 1;
        }
        let labels = Labels::from_sorted_scratch(&mut self.labels);
        series.push(SeriesSamples::floats(labels, vec![sample]));
        series.len() - 1
    }

    fn metadata_entry(&mut self, name: &str) -> usize {
        self.scrape.metadata.push(MetricMetadata {
            metric_family_name: name.to_owned(),
            metric_type: MetricType::Unknown,
            help: String::new(),
            unit: String::new(),
        });
        self.scrape.metadata.len() - 1
    }
}

/// Prometheus' stand-in for any NaN read from a scrape.
fn normal_nan() -> f64 {
    f64::from_bits(NORMAL_NAN_BITS)
}

fn canonical_nan(value: f64) -> f64 {
    if value.is_nan() { normal_nan() } else { value }
}

/// First byte of a metric name outside quotes: `[a-zA-Z_:]`.
fn is_metric_name_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_' || byte == b':'
}

fn is_metric_name_char(byte: u8) -> bool {
    is_metric_name_start(byte) || byte.is_ascii_digit()
}

/// First byte of a label name outside quotes: `[a-zA-Z_]`.
fn is_label_name_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_'
}

fn is_label_name_char(byte: u8) -> bool {
    is_label_name_start(byte) || byte.is_ascii_digit()
}

/// Whether `name` can be written without quotes.
fn is_legacy_metric_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty() && is_metric_name_start(bytes[0]) && bytes[1..].iter().all(|&b| is_metric_name_char(b))
}

fn is_legacy_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty() && is_label_name_start(bytes[0]) && bytes[1..].iter().all(|&b| is_label_name_char(b))
}

/// Decodes the escapes both formats share in quoted strings — `\\`, `\"` and
/// `\n` — and keeps any other backslash as it is, as Prometheus and the
/// OpenMetrics reference parser do (`"\z"` is the two characters `\z`).
/// `decode_quote` is false for the text format's `# HELP`, where `\"` stays.
/// Borrows when there is nothing to decode, which is nearly always.
fn unescape(raw: &[u8], decode_quote: bool) -> Result<Cow<'_, str>, std::str::Utf8Error> {
    let text = std::str::from_utf8(raw)?;
    if !raw.contains(&b'\\') {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('\\') => {
                out.push('\\');
                chars.next();
            }
            Some('n') => {
                out.push('\n');
                chars.next();
            }
            Some('"') if decode_quote => {
                out.push('"');
                chars.next();
            }
            // Not an escape: the backslash is literal and the next character
            // is read on its own.
            _ => out.push('\\'),
        }
    }
    Ok(Cow::Owned(out))
}

/// Go's `strconv.ParseFloat(s, 64)` as Prometheus' text parser calls it:
/// decimal numbers, `Inf`/`Infinity` (any case, optional sign) and `NaN` (any
/// case, no sign); hexadecimal floats and `_` separators are refused as
/// Prometheus refuses them; a finite number beyond `f64` is an error ("value
/// out of range"), not an infinity.
fn parse_go_float(text: &[u8]) -> Result<f64, &'static str> {
    if text.iter().any(|&b| matches!(b, b'p' | b'P' | b'_')) {
        return Err("unsupported character in float");
    }
    let (negative, unsigned) = match text.first() {
        Some(b'+') => (false, &text[1..]),
        Some(b'-') => (true, &text[1..]),
        _ => (false, text),
    };
    if unsigned.eq_ignore_ascii_case(b"inf") || unsigned.eq_ignore_ascii_case(b"infinity") {
        return Ok(if negative { f64::NEG_INFINITY } else { f64::INFINITY });
    }
    if text.eq_ignore_ascii_case(b"nan") {
        return Ok(normal_nan());
    }
    let decimal = !unsigned.is_empty()
        && unsigned
            .iter()
            .all(|&b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !decimal {
        return Err("invalid syntax");
    }
    // Rust's grammar for these characters is Go's decimal grammar.
    let text = std::str::from_utf8(text).map_err(|_| "invalid syntax")?;
    let value: f64 = text.parse().map_err(|_| "invalid syntax")?;
    if value.is_infinite() {
        return Err("value out of range");
    }
    Ok(value)
}

/// An OpenMetrics `realnumber`: `[sign] digits [. digits] [e [sign] digits]`
/// or `[sign] . digits [e …]` — no infinities, NaN, hex or `_`.
fn parse_om_real(text: &[u8]) -> Option<f64> {
    let mut i = 0;
    if matches!(text.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let int_start = i;
    while i < text.len() && text[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < text.len() && text[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < text.len() && text[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return None;
    }
    if i < text.len() && matches!(text[i], b'e' | b'E') {
        i += 1;
        if i < text.len() && matches!(text[i], b'+' | b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < text.len() && text[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return None;
        }
    }
    if i != text.len() {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// An OpenMetrics `number`: a `realnumber`, `[sign] inf|infinity` or `nan`
/// (case-insensitive, as ABNF strings are).
fn parse_om_number(text: &[u8]) -> Option<f64> {
    if let Some(value) = parse_om_real(text) {
        return Some(value);
    }
    let (negative, unsigned) = match text.first() {
        Some(b'+') => (false, &text[1..]),
        Some(b'-') => (true, &text[1..]),
        _ => (false, text),
    };
    if unsigned.eq_ignore_ascii_case(b"inf") || unsigned.eq_ignore_ascii_case(b"infinity") {
        return Some(if negative { f64::NEG_INFINITY } else { f64::INFINITY });
    }
    text.eq_ignore_ascii_case(b"nan").then(normal_nan)
}

/// Prometheus' `FormatOpenMetricsFloat`: Go's shortest `%g` spelling, with
/// `.0` appended when that has neither `.` nor `e` — the canonical form of
/// `le` and `quantile` values since Prometheus 3 (`1` → `1.0`, `1e+06`,
/// `0.0001`, `1e-05`, `+Inf`).
pub fn format_openmetrics_float(value: f64) -> String {
    if value == 0.0 {
        return "0.0".to_owned();
    }
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::with_capacity(digits.len() + 8);
    out.push_str(sign);
    // Go's %g with the shortest precision switches to an exponent when the
    // decimal exponent is below -4 or at least 6 (the default %e precision).
    if !(-4..6).contains(&exponent) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        let magnitude = exponent.unsigned_abs();
        if magnitude < 10 {
            out.push('0');
        }
        out.push_str(&magnitude.to_string());
        return out;
    }
    if exponent < 0 {
        out.push_str("0.");
        for _ in 0..(-exponent - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = exponent as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    if !out.contains('.') {
        out.push_str(".0");
    }
    out
}

/// The `le`/`quantile` value as Prometheus 3 stores it: re-spelt when it is
/// a number of the label the family's type gives meaning to, else unchanged.
fn normalize_label_value(metric_type: MetricType, name: &str, value: String) -> String {
    let applies = (metric_type == MetricType::Histogram && name == BUCKET_LABEL)
        || (metric_type == MetricType::Summary && name == QUANTILE_LABEL);
    if !applies {
        return value;
    }
    match parse_go_float(value.as_bytes()) {
        Ok(number) => {
            let canonical = format_openmetrics_float(number);
            if canonical == value { value } else { canonical }
        }
        Err(_) => value,
    }
}

/// A short, printable rendering of input bytes for error messages.
fn quote_bytes(bytes: &[u8]) -> String {
    const LIMIT: usize = 120;
    let shown = &bytes[..bytes.len().min(LIMIT)];
    let mut text = format!("{:?}", String::from_utf8_lossy(shown));
    if bytes.len() > LIMIT {
        text.push('…');
    }
    text
}

/// The metric name label, built once per line.
fn name_label(name: String) -> Label {
    Label {
        name: METRIC_NAME.to_owned(),
        value: name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_floats_as_prometheus_3_does() {
        let cases = [
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-1.0, "-1.0"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (0.5, "0.5"),
            (2.5, "2.5"),
            (10.0, "10.0"),
            (100000.0, "100000.0"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1e10, "1e+10"),
            (0.0001, "0.0001"),
            (0.00011, "0.00011"),
            (1e-5, "1e-05"),
            (1e-11, "1e-11"),
            (1.1e-3, "0.0011"),
            (-0.005, "-0.005"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (123.456, "123.456"),
        ];
        for (value, expected) in cases {
            assert_eq!(format_openmetrics_float(value), expected, "{value}");
        }
    }

    #[test]
    fn parses_floats_as_go_does() {
        assert_eq!(parse_go_float(b"1"), Ok(1.0));
        assert_eq!(parse_go_float(b"-3e3"), Ok(-3000.0));
        assert_eq!(parse_go_float(b".5"), Ok(0.5));
        assert_eq!(parse_go_float(b"5."), Ok(5.0));
        assert_eq!(parse_go_float(b"+Inf"), Ok(f64::INFINITY));
        assert_eq!(parse_go_float(b"-inf"), Ok(f64::NEG_INFINITY));
        assert_eq!(parse_go_float(b"Infinity"), Ok(f64::INFINITY));
        assert_eq!(parse_go_float(b"NaN").map(f64::to_bits), Ok(NORMAL_NAN_BITS));
        assert_eq!(parse_go_float(b"nan").map(f64::to_bits), Ok(NORMAL_NAN_BITS));
        assert!(parse_go_float(b"+NaN").is_err());
        assert!(parse_go_float(b"1e400").is_err());
        assert!(parse_go_float(b"1_2").is_err());
        assert!(parse_go_float(b"0x1p-3").is_err());
        assert!(parse_go_float(b"0x10").is_err());
        assert!(parse_go_float(b"").is_err());
        assert!(parse_go_float(b"e5").is_err());
        assert!(parse_go_float(b"1\r").is_err());
    }

    #[test]
    fn parses_openmetrics_numbers_strictly() {
        assert_eq!(parse_om_number(b"0000001.2e-1"), Some(0.12));
        assert_eq!(parse_om_number(b"1.5e3"), Some(1500.0));
        assert_eq!(parse_om_number(b"-Inf"), Some(f64::NEG_INFINITY));
        assert!(parse_om_number(b"NaN").is_some_and(f64::is_nan));
        for bad in [
            &b"0x1"[..],
            b"0b1",
            b"0o1",
            b"1_2",
            b"1.1.1",
            b"1z",
            b"",
            b".",
            b"1e",
            b"+nan",
        ] {
            assert_eq!(parse_om_number(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_om_real(b"Inf"), None);
    }

    #[test]
    fn picks_the_format_from_the_content_type() {
        let om = Some("application/openmetrics-text; version=1.0.0; charset=utf-8");
        assert_eq!(Format::from_content_type(om).unwrap(), Format::OpenMetrics);
        assert_eq!(
            Format::from_content_type(Some("Application/OpenMetrics-Text")).unwrap(),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_content_type(Some(TEXT_CONTENT_TYPE)).unwrap(),
            Format::Text
        );
        assert_eq!(Format::from_content_type(None).unwrap(), Format::Text);
        assert_eq!(Format::from_content_type(Some("text/html")).unwrap(), Format::Text);
        assert_eq!(Format::from_content_type(Some(";;;")).unwrap(), Format::Text);
        assert!(
            Format::from_content_type(Some(
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
            ))
            .is_err()
        );
        let scrape = parse(om, b"a 1\n# EOF\n", 5).unwrap();
        assert_eq!(scrape.series.len(), 1);
        assert!(parse(om, b"a 1\n", 5).is_err(), "OpenMetrics needs # EOF");
        assert!(parse(None, b"a 1\n", 5).is_ok());
    }

    #[test]
    fn unescapes_only_the_three_escapes() {
        assert_eq!(unescape(br#"a\\b\"c\nd\te"#, true).unwrap(), "a\\b\"c\nd\\te");
        assert_eq!(unescape(br#"\"x\\"#, false).unwrap(), "\\\"x\\");
        assert_eq!(unescape(br"\\n", true).unwrap(), "\\n");
        assert_eq!(unescape(br"trailing\", true).unwrap(), "trailing\\");
        assert!(matches!(unescape(b"plain", true).unwrap(), Cow::Borrowed(_)));
    }
}
