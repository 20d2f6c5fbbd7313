//! OpenMetrics 1.0 text, read strictly: the grammar (single spaces, no blank
//! lines, `# EOF` last), the metric family rules (metadata before samples, a
//! family and each of its label groups contiguous, names that do not clash,
//! timestamps in order) and the per-type rules (counters non-negative,
//! histogram buckets ordered and cumulative with a `+Inf` bucket, `_count`
//! equal to it, summaries' quantiles in [0, 1], info values 1, stateset
//! values 0 or 1, exemplars only on `_total` and `_bucket` lines and at most
//! 128 characters of labels).
//!
//! Three rules are relaxed to what Prometheus ingests and client_golang
//! emits (Prometheus' own OpenMetrics fixture has all three): a histogram with
//! negative bucket bounds may have a `_sum` (it may then be negative), and a
//! summary's `_sum` and quantile values may be negative.
//!
//! Beyond OpenMetrics 1.0, metric and label names may be quoted UTF-8 as in
//! Prometheus 3 (`{"my.metric","a.b"="c"}`).

use std::collections::{HashMap, HashSet};

use super::{BUCKET_LABEL, QUANTILE_LABEL};
use super::{
    Exemplar, Scrape, ScrapeBuilder, canonical_nan, is_label_name_char, is_label_name_start, is_metric_name_char,
    is_metric_name_start, name_label, normalize_label_value, parse_om_number, parse_om_real, quote_bytes, unescape,
};
use crate::error::Error;
use crate::labels::{Label, Labels, METRIC_NAME, hash_pairs};
use crate::seam::MetricType;
use crate::time::TimestampMs;

/// Longest exemplar label set, in characters of names and values together.
const MAX_EXEMPLAR_LABEL_CHARS: usize = 128;

const TOTAL: &str = "_total";
const CREATED: &str = "_created";
const BUCKET: &str = "_bucket";
const COUNT: &str = "_count";
const SUM: &str = "_sum";
const GCOUNT: &str = "_gcount";
const GSUM: &str = "_gsum";
const INFO: &str = "_info";

/// Every suffix a family's sample names may carry.
const SUFFIXES: [&str; 8] = [TOTAL, CREATED, BUCKET, COUNT, SUM, GCOUNT, GSUM, INFO];

/// The sample name suffixes a family of this type has (`""` is the bare name).
fn suffixes_of(metric_type: MetricType) -> &'static [&'static str] {
    match metric_type {
        MetricType::Counter => &[TOTAL, CREATED],
        MetricType::Histogram => &[BUCKET, COUNT, SUM, CREATED],
        MetricType::GaugeHistogram => &[BUCKET, GCOUNT, GSUM],
        MetricType::Summary => &["", COUNT, SUM, CREATED],
        MetricType::Info => &[INFO],
        MetricType::Unknown | MetricType::Gauge | MetricType::StateSet => &[""],
    }
}

pub(super) fn parse(body: &[u8], scrape_time_ms: TimestampMs) -> Result<Scrape, Error> {
    let mut parser = OmParser {
        line: 0,
        last_type: MetricType::Unknown,
        families: HashMap::new(),
        family: None,
        groups_seen: HashSet::new(),
        group: None,
        out: ScrapeBuilder::new(scrape_time_ms, body.len()),
    };
    let mut rest = body;
    loop {
        parser.line += 1;
        if rest.is_empty() {
            return Err(parser.error("missing # EOF at the end of the exposition".to_owned()));
        }
        let (line, next, had_newline) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], &rest[end + 1..], true),
            None => (rest, &rest[rest.len()..], false),
        };
        if line == b"# EOF" {
            if !next.is_empty() {
                parser.line += 1;
                return Err(parser.error("unexpected data after # EOF".to_owned()));
            }
            parser.close_family()?;
            return Ok(parser.out.scrape);
        }
        if !had_newline {
            return Err(parser.error("missing # EOF at the end of the exposition".to_owned()));
        }
        if line.is_empty() {
            return Err(parser.error("unexpected empty line".to_owned()));
        }
        if line[0] == b'#' {
            parser.metadata(line)?;
        } else {
            parser.sample(line)?;
        }
        rest = next;
    }
}

#[derive(Debug)]
struct OmParser {
    /// 1-based number of the line being parsed.
    line: usize,
    /// The type of the most recent `# TYPE` line, which Prometheus normalises
    /// `le` and `quantile` values by.
    last_type: MetricType,
    /// Every family seen so far and its type: a family may not come back,
    /// and names may not clash with another family's sample names.
    families: HashMap<String, MetricType>,
    family: Option<Family>,
    /// Label groups (label sets without `le`/`quantile`/the state label) of
    /// the current family that have ended: one may not come back.
    groups_seen: HashSet<u64>,
    group: Option<Group>,
    out: ScrapeBuilder,
}

#[derive(Debug)]
struct Family {
    name: String,
    metric_type: MetricType,
    has_type: bool,
    has_help: bool,
    unit: Option<String>,
    has_samples: bool,
    /// Index into the scrape's metadata, once a metadata line named it.
    metadata: Option<usize>,
}

/// One label group of a family (an OpenMetrics "Metric"): its timestamps
/// and the histogram point being read.
#[derive(Debug)]
struct Group {
    key: u64,
    /// Whether its samples carry timestamps (all or none must).
    timestamped: Option<bool>,
    last_timestamp: f64,
    point: Point,
}

/// What a histogram or gauge histogram point has shown so far.
#[derive(Debug, Default)]
struct Point {
    buckets: usize,
    last_bound: f64,
    last_count: f64,
    inf_count: Option<f64>,
    negative_bound: bool,
    count: Option<f64>,
    sum: Option<f64>,
    line: usize,
}

/// The pieces of a sample line.
#[derive(Debug)]
struct SampleLine {
    name: String,
    value: f64,
    timestamp: Option<f64>,
    exemplar: Option<(Vec<Label>, f64, Option<f64>)>,
}

impl OmParser {
    fn error(&self, message: String) -> Error {
        Error::Exposition {
            format: "openmetrics",
            line: self.line,
            message,
        }
    }

    // ---- metadata -------------------------------------------------------

    fn metadata(&mut self, line: &[u8]) -> Result<(), Error> {
        let Some(rest) = line.strip_prefix(b"# ") else {
            return Err(self.error(format!("invalid comment line {}", quote_bytes(line))));
        };
        let (kind, rest) = if let Some(rest) = rest.strip_prefix(b"HELP ") {
            (Metadata::Help, rest)
        } else if let Some(rest) = rest.strip_prefix(b"TYPE ") {
            (Metadata::Type, rest)
        } else if let Some(rest) = rest.strip_prefix(b"UNIT ") {
            (Metadata::Unit, rest)
        } else {
            return Err(self.error(format!(
                "invalid comment line {}: only # HELP, # TYPE, # UNIT and # EOF are allowed",
                quote_bytes(line)
            )));
        };
        let mut cursor = Cursor { text: rest, pos: 0 };
        let name = match cursor.peek() {
            Some(b'"') => {
                let raw = cursor
                    .quoted()
                    .ok_or_else(|| self.error("unterminated quoted metric name".to_owned()))?;
                self.decode(raw, "metric name")?
            }
            _ => {
                let raw = cursor.take_while(is_metric_name_char);
                if raw.is_empty() || !is_metric_name_start(raw[0]) {
                    return Err(self.error(format!(
                        "expected metric name after {}, got {}",
                        kind.keyword(),
                        quote_bytes(rest)
                    )));
                }
                String::from_utf8_lossy(raw).into_owned()
            }
        };
        if name.is_empty() {
            return Err(self.error("metric name must not be empty".to_owned()));
        }
        if cursor.peek() != Some(b' ') {
            return Err(self.error(format!("expected a space and text after # {} {name}", kind.keyword())));
        }
        let text = &rest[cursor.pos + 1..];
        self.metadata_family(&name, kind)?;
        match kind {
            Metadata::Help => {
                let help = unescape(text, true)
                    .map_err(|_| self.error(format!("help text {} is not valid UTF-8", quote_bytes(text))))?;
                let index = self.metadata_index();
                self.out.scrape.metadata[index].help = help.into_owned();
                self.family_mut().has_help = true;
            }
            Metadata::Type => {
                let metric_type = match text {
                    b"counter" => MetricType::Counter,
                    b"gauge" => MetricType::Gauge,
                    b"histogram" => MetricType::Histogram,
                    b"gaugehistogram" => MetricType::GaugeHistogram,
                    b"summary" => MetricType::Summary,
                    b"info" => MetricType::Info,
                    b"stateset" => MetricType::StateSet,
                    b"unknown" => MetricType::Unknown,
                    _ => return Err(self.error(format!("invalid metric type {}", quote_bytes(text)))),
                };
                // The new type's sample names must not be another family.
                for suffix in suffixes_of(metric_type) {
                    if !suffix.is_empty() && self.families.contains_key(&format!("{name}{suffix}")) {
                        return Err(self.error(format!(
                            "metric family {name} of type {} clashes with the family {name}{suffix}",
                            metric_type.as_str()
                        )));
                    }
                }
                self.families.insert(name.clone(), metric_type);
                self.last_type = metric_type;
                let index = self.metadata_index();
                self.out.scrape.metadata[index].metric_type = metric_type;
                let family = self.family_mut();
                family.metric_type = metric_type;
                family.has_type = true;
            }
            Metadata::Unit => {
                let unit = std::str::from_utf8(text)
                    .map_err(|_| self.error(format!("unit {} is not valid UTF-8", quote_bytes(text))))?;
                if !unit.is_empty() && !name.strip_suffix(unit).is_some_and(|stem| stem.ends_with('_')) {
                    return Err(self.error(format!(
                        "unit {unit:?} is not a suffix of the metric family name {name}"
                    )));
                }
                let index = self.metadata_index();
                self.out.scrape.metadata[index].unit = unit.to_owned();
                self.family_mut().unit = Some(unit.to_owned());
            }
        }
        self.check_unit_allowed()
    }

    /// Makes `name` the current family for a metadata line of `kind`.
    fn metadata_family(&mut self, name: &str, kind: Metadata) -> Result<(), Error> {
        if let Some(family) = &self.family
            && family.name == name
        {
            if family.has_samples {
                return Err(self.error(format!(
                    "# {} for {name} after its samples: metadata must come first",
                    kind.keyword()
                )));
            }
            let repeated = match kind {
                Metadata::Help => family.has_help,
                Metadata::Type => family.has_type,
                Metadata::Unit => family.unit.is_some(),
            };
            if repeated {
                return Err(self.error(format!("second # {} line for {name}", kind.keyword())));
            }
            return Ok(());
        }
        self.open_family(name)
    }

    fn metadata_index(&mut self) -> usize {
        let family = self.family.as_ref().map(|f| (f.metadata, f.name.clone()));
        match family {
            Some((Some(index), _)) => index,
            Some((None, name)) => {
                let index = self.out.metadata_entry(&name);
                self.family_mut().metadata = Some(index);
                index
            }
            None => unreachable!("metadata lines open their family first"),
        }
    }

    fn family_mut(&mut self) -> &mut Family {
        self.family.as_mut().expect("a family is open")
    }

    fn check_unit_allowed(&self) -> Result<(), Error> {
        if let Some(family) = &self.family
            && family.unit.as_ref().is_some_and(|unit| !unit.is_empty())
            && matches!(family.metric_type, MetricType::Info | MetricType::StateSet)
        {
            return Err(self.error(format!(
                "{} metric family {} may not have a unit",
                family.metric_type.as_str(),
                family.name
            )));
        }
        Ok(())
    }

    // ---- families and groups ---------------------------------------------

    /// Closes the current family and opens `name` (of unknown type until a
    /// `# TYPE` says otherwise), refusing a family that was seen before or
    /// whose name is another family's sample name.
    fn open_family(&mut self, name: &str) -> Result<(), Error> {
        self.close_family()?;
        if self.families.contains_key(name) {
            return Err(self.error(format!(
                "metric family {name} appears twice: a family's lines must be contiguous"
            )));
        }
        for suffix in SUFFIXES {
            if let Some(stem) = name.strip_suffix(suffix)
                && let Some(&stem_type) = self.families.get(stem)
                && suffixes_of(stem_type).contains(&suffix)
            {
                return Err(self.error(format!(
                    "{name} belongs to the {} family {stem}, which has ended: a family's lines must be contiguous",
                    stem_type.as_str()
                )));
            }
        }
        self.families.insert(name.to_owned(), MetricType::Unknown);
        self.family = Some(Family {
            name: name.to_owned(),
            metric_type: MetricType::Unknown,
            has_type: false,
            has_help: false,
            unit: None,
            has_samples: false,
            metadata: None,
        });
        self.groups_seen.clear();
        Ok(())
    }

    fn close_family(&mut self) -> Result<(), Error> {
        self.close_group()?;
        self.family = None;
        Ok(())
    }

    fn close_group(&mut self) -> Result<(), Error> {
        if let Some(group) = self.group.take() {
            self.check_point(&group.point)?;
        }
        Ok(())
    }

    /// The histogram rules that need the whole point.
    fn check_point(&self, point: &Point) -> Result<(), Error> {
        let Some(family) = &self.family else {
            return Ok(());
        };
        let (count_suffix, sum_suffix) = match family.metric_type {
            MetricType::Histogram => (COUNT, SUM),
            MetricType::GaugeHistogram => (GCOUNT, GSUM),
            _ => return Ok(()),
        };
        if point.buckets == 0 && point.count.is_none() && point.sum.is_none() {
            return Ok(());
        }
        let name = &family.name;
        let fail = |message: String| Error::Exposition {
            format: "openmetrics",
            line: point.line,
            message,
        };
        let Some(inf_count) = point.inf_count else {
            return Err(fail(format!("histogram {name} has no le=\"+Inf\" bucket")));
        };
        if point.count.is_some() != point.sum.is_some() {
            return Err(fail(format!(
                "histogram {name} must have both {name}{count_suffix} and {name}{sum_suffix} or neither"
            )));
        }
        if let Some(count) = point.count
            && count != inf_count
        {
            return Err(fail(format!(
                "histogram {name}: {name}{count_suffix} {count} differs from the le=\"+Inf\" bucket {inf_count}"
            )));
        }
        if let Some(sum) = point.sum
            && sum < 0.0
            && !point.negative_bound
        {
            return Err(fail(format!(
                "histogram {name}: {name}{sum_suffix} is negative but no bucket bound is"
            )));
        }
        Ok(())
    }

    // ---- samples ----------------------------------------------------------

    fn sample(&mut self, line: &[u8]) -> Result<(), Error> {
        self.out.labels.clear();
        let parsed = self.parse_sample_line(line)?;
        let name = parsed.name;

        // Which family, and which of its sample names.
        let current = self.family.as_ref().and_then(|family| {
            let stem_len = family.name.len();
            let suffix = name.strip_prefix(family.name.as_str()).map(|_| &name[stem_len..])?;
            suffixes_of(family.metric_type).iter().find(|s| **s == suffix).copied()
        });
        let suffix = match current {
            Some(suffix) => suffix,
            None => {
                self.open_family(&name)?;
                ""
            }
        };
        let family = self.family.as_ref().expect("open_family succeeded");
        let family_name = family.name.clone();
        let metric_type = family.metric_type;

        self.out.labels.push(name_label(name.clone()));
        if let Err(message) = self.out.sort_labels() {
            return Err(self.error(message));
        }
        let value = parsed.value;
        self.check_value(metric_type, suffix, &family_name, value)?;

        // The label that tells a group's series apart, if any.
        let special = match (metric_type, suffix) {
            (MetricType::Histogram | MetricType::GaugeHistogram, BUCKET) => Some(BUCKET_LABEL),
            (MetricType::Summary, "") => Some(QUANTILE_LABEL),
            (MetricType::StateSet, _) => Some(family_name.as_str()),
            _ => None,
        };
        let special_value = special.and_then(|label| {
            self.out
                .labels
                .iter()
                .find(|l| l.name == label)
                .map(|l| l.value.clone())
        });
        if let Some(label) = special
            && special_value.is_none()
        {
            return Err(self.error(format!("{name} has no {label:?} label")));
        }
        let key = hash_pairs(
            self.out
                .labels
                .iter()
                .filter(|l| l.name != METRIC_NAME && Some(l.name.as_str()) != special)
                .map(|l| (l.name.as_str(), l.value.as_str())),
        );
        self.enter_group(key, &name)?;

        // Timestamps: all or none within a group, never going back.
        if suffix != CREATED {
            self.check_timestamp(parsed.timestamp)?;
        }
        if let Some(bound_text) = &special_value {
            self.check_special(metric_type, suffix, bound_text)?;
        }
        if matches!(metric_type, MetricType::Histogram | MetricType::GaugeHistogram) {
            self.record_point(suffix, value, special_value.as_deref())?;
        }

        // Exemplars only where OpenMetrics allows them.
        if parsed.exemplar.is_some() {
            let allowed = matches!(
                (metric_type, suffix),
                (MetricType::Counter, TOTAL) | (MetricType::Histogram | MetricType::GaugeHistogram, BUCKET)
            );
            if !allowed {
                return Err(self.error(format!(
                    "exemplars are only allowed on counter _total and histogram _bucket samples, not on {name}"
                )));
            }
        }

        self.family_mut().has_samples = true;
        if self.last_type == MetricType::Histogram || self.last_type == MetricType::Summary {
            let last_type = self.last_type;
            for label in &mut self.out.labels {
                let value = std::mem::take(&mut label.value);
                label.value = normalize_label_value(last_type, &label.name, value);
            }
        }
        let timestamp = parsed.timestamp.map(seconds_to_ms);
        let series = self.out.push_sample(canonical_nan(value), timestamp);
        if let Some((mut labels, exemplar_value, exemplar_ts)) = parsed.exemplar {
            labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            labels.retain(|l| !l.value.is_empty());
            self.out.scrape.exemplars.push(Exemplar {
                series,
                labels: Labels::from_sorted_scratch(&mut labels),
                value: canonical_nan(exemplar_value),
                timestamp: exemplar_ts.map(seconds_to_ms),
            });
        }
        Ok(())
    }

    fn enter_group(&mut self, key: u64, name: &str) -> Result<(), Error> {
        if self.group.as_ref().is_some_and(|g| g.key == key) {
            return Ok(());
        }
        self.close_group()?;
        if !self.groups_seen.insert(key) {
            return Err(self.error(format!(
                "{name}: the samples of one label set must be contiguous within their family"
            )));
        }
        self.group = Some(Group {
            key,
            timestamped: None,
            last_timestamp: f64::NEG_INFINITY,
            point: Point {
                line: self.line,
                ..Point::default()
            },
        });
        Ok(())
    }

    fn check_timestamp(&mut self, timestamp: Option<f64>) -> Result<(), Error> {
        let line = self.line;
        let group = self.group.as_mut().expect("enter_group ran");
        match group.timestamped {
            Some(timestamped) if timestamped != timestamp.is_some() => {
                return Err(self.error("either all or none of a label set's samples must have timestamps".to_owned()));
            }
            Some(_) => {}
            None => group.timestamped = Some(timestamp.is_some()),
        }
        let Some(timestamp) = timestamp else {
            return Ok(());
        };
        if timestamp < group.last_timestamp {
            let previous = group.last_timestamp;
            return Err(self.error(format!(
                "timestamp {timestamp} is older than the previous sample's {previous}"
            )));
        }
        if timestamp > group.last_timestamp && group.last_timestamp != f64::NEG_INFINITY {
            // A later timestamp starts the group's next point.
            let finished = std::mem::replace(
                &mut group.point,
                Point {
                    line,
                    ..Point::default()
                },
            );
            group.last_timestamp = timestamp;
            return self.check_point(&finished);
        }
        group.last_timestamp = timestamp;
        Ok(())
    }

    /// Rules for sample values by type and suffix.
    fn check_value(&self, metric_type: MetricType, suffix: &str, family: &str, value: f64) -> Result<(), Error> {
        let counter_like = matches!(
            (metric_type, suffix),
            (MetricType::Counter, TOTAL)
                | (MetricType::Histogram, BUCKET | COUNT)
                | (MetricType::GaugeHistogram, BUCKET | GCOUNT)
                | (MetricType::Summary, COUNT)
        );
        // NaN fails this too: a count is never NaN.
        let non_negative = value >= 0.0;
        if counter_like && !non_negative {
            return Err(self.error(format!("{family}{suffix} must be a non-negative number, got {value}")));
        }
        let not_nan = matches!(
            (metric_type, suffix),
            (MetricType::Histogram, SUM) | (MetricType::GaugeHistogram, GSUM) | (MetricType::Summary, SUM)
        );
        if not_nan && value.is_nan() {
            return Err(self.error(format!("{family}{suffix} must not be NaN")));
        }
        match metric_type {
            MetricType::Info if value != 1.0 => {
                Err(self.error(format!("info metric {family}_info must have the value 1, got {value}")))
            }
            MetricType::StateSet if value != 0.0 && value != 1.0 => {
                Err(self.error(format!("stateset {family} values must be 0 or 1, got {value}")))
            }
            _ => Ok(()),
        }
    }

    /// Rules for `le` and `quantile` values.
    fn check_special(&self, metric_type: MetricType, suffix: &str, text: &str) -> Result<(), Error> {
        match (metric_type, suffix) {
            (MetricType::Histogram | MetricType::GaugeHistogram, BUCKET) => match parse_om_number(text.as_bytes()) {
                Some(bound) if !bound.is_nan() => Ok(()),
                _ => Err(self.error(format!("invalid le label value {text:?}: not a number"))),
            },
            (MetricType::Summary, "") => match parse_om_number(text.as_bytes()) {
                Some(quantile) if (0.0..=1.0).contains(&quantile) => Ok(()),
                _ => Err(self.error(format!(
                    "invalid quantile label value {text:?}: must be a number from 0 to 1"
                ))),
            },
            _ => Ok(()),
        }
    }

    fn record_point(&mut self, suffix: &str, value: f64, bound_text: Option<&str>) -> Result<(), Error> {
        let line = self.line;
        let group = self.group.as_mut().expect("enter_group ran");
        let point = &mut group.point;
        point.line = line;
        match suffix {
            BUCKET => {
                let text = bound_text.unwrap_or("");
                let bound = parse_om_number(text.as_bytes()).unwrap_or(f64::NAN);
                // A NaN bound (it cannot parse to one) fails as out of order.
                let ascending = bound > point.last_bound;
                if point.buckets > 0 && !ascending {
                    return Err(self.error(format!(
                        "bucket le={text:?} is not above the previous bucket's bound: buckets must be in increasing order"
                    )));
                }
                if point.buckets > 0 && value < point.last_count {
                    return Err(self.error(format!(
                        "bucket le={text:?} counts {value}, less than the previous bucket: bucket counts are cumulative"
                    )));
                }
                point.buckets += 1;
                point.last_bound = bound;
                point.last_count = value;
                point.negative_bound |= bound < 0.0;
                if text == "+Inf" {
                    point.inf_count = Some(value);
                }
            }
            // The guards record the value; they fail only on a second one.
            COUNT | GCOUNT if point.count.replace(value).is_some() => {
                return Err(self.error(format!("second {suffix} sample in one histogram point")));
            }
            SUM | GSUM if point.sum.replace(value).is_some() => {
                return Err(self.error(format!("second {suffix} sample in one histogram point")));
            }
            _ => {}
        }
        Ok(())
    }

    fn decode(&self, raw: &[u8], what: &str) -> Result<String, Error> {
        unescape(raw, true)
            .map(|text| text.into_owned())
            .map_err(|_| self.error(format!("invalid UTF-8 {what}: {}", quote_bytes(raw))))
    }

    /// `name[{labels}] value [timestamp] [# {labels} value [timestamp]]`,
    /// single spaces only. The labels land in the builder's scratch.
    fn parse_sample_line(&mut self, line: &[u8]) -> Result<SampleLine, Error> {
        let mut cursor = Cursor { text: line, pos: 0 };
        let mut name = None;
        if cursor.peek() != Some(b'{') {
            let raw = cursor.take_while(is_metric_name_char);
            if raw.is_empty() || !is_metric_name_start(raw[0]) {
                return Err(self.error(format!("invalid metric name in {}", quote_bytes(line))));
            }
            name = Some(String::from_utf8_lossy(raw).into_owned());
        }
        if cursor.peek() == Some(b'{') {
            let mut labels = std::mem::take(&mut self.out.labels);
            let result = self.parse_labels(&mut cursor, &mut labels, Some(&mut name), line);
            self.out.labels = labels;
            result?;
        }
        let Some(name) = name else {
            return Err(self.error(format!("metric name not set in {}", quote_bytes(line))));
        };
        if name.is_empty() {
            return Err(self.error("metric name must not be empty".to_owned()));
        }
        if !cursor.eat(b' ') {
            return Err(self.error(format!(
                "expected a space and a value after the metric in {}",
                quote_bytes(line)
            )));
        }
        let value = self.number(cursor.token(), "value", line)?;
        let mut timestamp = None;
        let mut exemplar = None;
        if cursor.eat(b' ') {
            if !cursor.rest().starts_with(b"# ") {
                let text = cursor.token();
                timestamp = Some(parse_om_real(text).ok_or_else(|| {
                    self.error(format!(
                        "invalid timestamp {} in {}",
                        quote_bytes(text),
                        quote_bytes(line)
                    ))
                })?);
                if cursor.eat(b' ') && !cursor.rest().starts_with(b"# ") {
                    return Err(self.error(format!("unexpected text after the timestamp in {}", quote_bytes(line))));
                }
            }
            if cursor.rest().starts_with(b"# ") {
                cursor.pos += 2;
                exemplar = Some(self.parse_exemplar(&mut cursor, line)?);
            }
        }
        if !cursor.rest().is_empty() {
            return Err(self.error(format!(
                "unexpected text {} in {}",
                quote_bytes(cursor.rest()),
                quote_bytes(line)
            )));
        }
        Ok(SampleLine {
            name,
            value,
            timestamp,
            exemplar,
        })
    }

    fn parse_exemplar<'a>(
        &self,
        cursor: &mut Cursor<'a>,
        line: &'a [u8],
    ) -> Result<(Vec<Label>, f64, Option<f64>), Error> {
        if cursor.peek() != Some(b'{') {
            return Err(self.error(format!("expected exemplar labels after # in {}", quote_bytes(line))));
        }
        let mut labels = Vec::new();
        self.parse_labels(cursor, &mut labels, None, line)?;
        let chars: usize = labels
            .iter()
            .map(|l| l.name.chars().count() + l.value.chars().count())
            .sum();
        if chars > MAX_EXEMPLAR_LABEL_CHARS {
            return Err(self.error(format!(
                "exemplar labels have {chars} characters, more than the {MAX_EXEMPLAR_LABEL_CHARS} allowed"
            )));
        }
        if !cursor.eat(b' ') {
            return Err(self.error(format!(
                "expected a space and a value after the exemplar labels in {}",
                quote_bytes(line)
            )));
        }
        let value = self.number(cursor.token(), "exemplar value", line)?;
        let mut timestamp = None;
        if cursor.eat(b' ') {
            let text = cursor.token();
            timestamp = Some(parse_om_real(text).ok_or_else(|| {
                self.error(format!(
                    "invalid exemplar timestamp {} in {}",
                    quote_bytes(text),
                    quote_bytes(line)
                ))
            })?);
        }
        Ok((labels, value, timestamp))
    }

    fn number(&self, text: &[u8], what: &str, line: &[u8]) -> Result<f64, Error> {
        parse_om_number(text)
            .ok_or_else(|| self.error(format!("invalid {what} {} in {}", quote_bytes(text), quote_bytes(line))))
    }

    /// `{name="value",…}` at the cursor, into `labels`; with `metric_name`,
    /// a lone quoted string is the metric name.
    fn parse_labels(
        &self,
        cursor: &mut Cursor<'_>,
        labels: &mut Vec<Label>,
        mut metric_name: Option<&mut Option<String>>,
        line: &[u8],
    ) -> Result<(), Error> {
        cursor.pos += 1;
        if cursor.eat(b'}') {
            return Ok(());
        }
        loop {
            let (name, quoted) = match cursor.peek() {
                Some(b'"') => {
                    let raw = cursor
                        .quoted()
                        .ok_or_else(|| self.error(format!("unterminated quoted name in {}", quote_bytes(line))))?;
                    (self.decode(raw, "label name")?, true)
                }
                Some(byte) if is_label_name_start(byte) => {
                    let raw = cursor.take_while(is_label_name_char);
                    (String::from_utf8_lossy(raw).into_owned(), false)
                }
                _ => return Err(self.error(format!("expected a label name in {}", quote_bytes(line)))),
            };
            let is_metric_name = quoted && matches!(cursor.peek(), Some(b',' | b'}'));
            if is_metric_name {
                match metric_name.as_deref_mut() {
                    Some(slot @ None) => *slot = Some(name),
                    _ => {
                        return Err(self.error(format!(
                            "metric name given twice, or a label without a value, in {}",
                            quote_bytes(line)
                        )));
                    }
                }
            } else {
                if name.is_empty() {
                    return Err(self.error("label name must not be empty".to_owned()));
                }
                if !cursor.eat(b'=') {
                    return Err(self.error(format!("expected = after label name {name:?} in {}", quote_bytes(line))));
                }
                if cursor.peek() != Some(b'"') {
                    return Err(self.error(format!(
                        "expected a quoted value for label {name:?} in {}",
                        quote_bytes(line)
                    )));
                }
                let raw = cursor
                    .quoted()
                    .ok_or_else(|| self.error(format!("unterminated label value in {}", quote_bytes(line))))?;
                let value = self.decode(raw, "label value")?;
                if labels.iter().any(|l| l.name == name) {
                    return Err(self.error(format!("label name {name:?} is not unique")));
                }
                labels.push(Label { name, value });
            }
            if cursor.eat(b'}') {
                return Ok(());
            }
            if !cursor.eat(b',') {
                return Err(self.error(format!("expected , or }} after a label in {}", quote_bytes(line))));
            }
            if cursor.peek() == Some(b'}') {
                return Err(self.error(format!("trailing comma in the labels of {}", quote_bytes(line))));
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Metadata {
    Help,
    Type,
    Unit,
}

impl Metadata {
    fn keyword(self) -> &'static str {
        match self {
            Metadata::Help => "HELP",
            Metadata::Type => "TYPE",
            Metadata::Unit => "UNIT",
        }
    }
}

/// A position in one line.
#[derive(Debug)]
struct Cursor<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn rest(&self) -> &'a [u8] {
        &self.text[self.pos..]
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn take_while(&mut self, mut accept: impl FnMut(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&mut accept) {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    /// Up to the next space or the end of the line.
    fn token(&mut self) -> &'a [u8] {
        self.take_while(|b| b != b' ')
    }

    /// A quoted string at the cursor; `None` when it does not end on this line.
    fn quoted(&mut self) -> Option<&'a [u8]> {
        let open = self.pos;
        let mut i = open + 1;
        while i < self.text.len() {
            match self.text[i] {
                b'"' => {
                    self.pos = i + 1;
                    return Some(&self.text[open + 1..i]);
                }
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        None
    }
}

/// OpenMetrics seconds to Prometheus milliseconds: `int64(ts * 1000)` as
/// Prometheus computes it (truncating), saturating where Go's conversion is
/// undefined.
fn seconds_to_ms(seconds: f64) -> TimestampMs {
    (seconds * 1000.0) as TimestampMs
}

#[cfg(test)]
mod tests {
    use super::super::parse_openmetrics;

    const NOW: i64 = 7;

    fn error(body: &str) -> String {
        match parse_openmetrics(body.as_bytes(), NOW) {
            Ok(scrape) => panic!("{body:?} parsed: {scrape:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn timestamps_are_seconds_truncated_to_milliseconds() {
        let scrape = parse_openmetrics(b"a 1 1.5\nb 2 -0.0015\nc 3\n# EOF\n", NOW).unwrap();
        let ts: Vec<i64> = scrape.series.iter().map(|s| s.samples[0].timestamp).collect();
        assert_eq!(ts, [1500, -1, NOW]);
    }

    #[test]
    fn exemplars_are_kept_with_their_series() {
        let body = "# TYPE a counter\na_total{x=\"1\"} 3 # {trace_id=\"abc\"} 0.5 10.25\n\
                    a_total{x=\"2\"} 4 # {} 1\n# EOF";
        let scrape = parse_openmetrics(body.as_bytes(), NOW).unwrap();
        assert_eq!(scrape.exemplars.len(), 2);
        assert_eq!(scrape.exemplars[0].series, 0);
        assert_eq!(scrape.exemplars[0].labels.get("trace_id"), Some("abc"));
        assert_eq!(scrape.exemplars[0].timestamp, Some(10_250));
        assert_eq!(scrape.exemplars[1].series, 1);
        assert!(scrape.exemplars[1].labels.is_empty());
        assert_eq!(scrape.exemplars[1].timestamp, None);
    }

    #[test]
    fn quoted_utf8_names() {
        let body = "# TYPE \"my.gauge\" gauge\n{\"my.gauge\",\"a.b\"=\"c\"} 1\n# EOF\n";
        let scrape = parse_openmetrics(body.as_bytes(), NOW).unwrap();
        assert_eq!(scrape.metadata[0].metric_family_name, "my.gauge");
        assert_eq!(scrape.series[0].labels.metric_name(), Some("my.gauge"));
        assert_eq!(scrape.series[0].labels.get("a.b"), Some("c"));
    }

    #[test]
    fn strict_where_the_text_format_is_lenient() {
        assert!(error("a 1\r\n# EOF\n").contains("invalid value"));
        assert!(error("a{b=\"1\", c=\"2\"} 1\n# EOF\n").contains("expected a label name"));
        assert!(error("a  1\n# EOF\n").contains("invalid value"));
        assert!(error("# random comment\n# EOF\n").contains("invalid comment line"));
        assert!(error("a 1\n# EOF\n\n").contains("after # EOF"));
        assert!(error("a 1\nb 1\na 2\n# EOF\n").contains("appears twice"));
        assert!(error("a{x=\"1\"} 1\na{x=\"2\"} 1\na{x=\"1\"} 2\n# EOF\n").contains("contiguous"));
        let message = error("a 1\nb{c=\"d\" 1\n# EOF\n");
        assert!(message.starts_with("openmetrics parse error on line 2:"), "{message}");
    }

    #[test]
    fn histogram_points_with_timestamps() {
        let body = "# TYPE h histogram\n\
                    h_bucket{le=\"1\"} 1 10\nh_bucket{le=\"+Inf\"} 2 10\nh_count 2 10\nh_sum 3 10\n\
                    h_bucket{le=\"1\"} 1 20\nh_bucket{le=\"+Inf\"} 3 20\nh_count 3 20\nh_sum 4 20\n# EOF\n";
        let scrape = parse_openmetrics(body.as_bytes(), NOW).unwrap();
        assert_eq!(scrape.series[0].labels.get("le"), Some("1.0"));
        assert_eq!(scrape.sample_count(), 8);
        let bad = body.replace("h_count 3 20", "h_count 4 20");
        assert!(error(&bad).contains("differs from the le=\"+Inf\" bucket"));
    }
}
