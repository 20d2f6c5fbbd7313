//! The Prometheus text format 0.0.4, read the way Prometheus 3's scrape
//! parser (`model/textparse/promparse.go`) reads it — including its leniency,
//! because targets that work with Prometheus must work with Tidewatch:
//!
//! - blank lines and leading blanks are ignored, spaces and tabs may separate
//!   every token, the comma between labels is optional and may trail;
//! - any line starting with `#` that is not `# HELP name …` or
//!   `# TYPE name type` is a comment; `# HELP`/`# TYPE` may repeat or follow
//!   the samples (the last one wins);
//! - a label value may contain a raw newline, and `\` followed by anything but
//!   `\`, `"` or `n` is kept literally;
//! - a NUL byte where a line starts ends the input;
//! - a missing final newline is fine, but `\r` is not whitespace: a CRLF line
//!   ends in a value or timestamp that does not parse, as in Prometheus;
//! - timestamps are digits only (integer milliseconds, no sign).

use std::collections::HashMap;

use super::{
    ScrapeBuilder, canonical_nan, is_label_name_char, is_label_name_start, is_metric_name_char, is_metric_name_start,
    name_label, normalize_label_value, parse_go_float, quote_bytes, unescape,
};
use crate::error::Error;
use crate::labels::Label;
use crate::seam::MetricType;
use crate::time::TimestampMs;

use super::Scrape;

pub(super) fn parse(body: &[u8], scrape_time_ms: TimestampMs) -> Result<Scrape, Error> {
    let mut parser = TextParser {
        body,
        pos: 0,
        line: 1,
        line_start: 0,
        last_type: MetricType::Unknown,
        families: HashMap::new(),
        out: ScrapeBuilder::new(scrape_time_ms, body.len()),
    };
    parser.run()?;
    Ok(parser.out.scrape)
}

#[derive(Debug)]
struct TextParser<'a> {
    body: &'a [u8],
    pos: usize,
    /// 1-based number of the line `pos` is on.
    line: usize,
    /// Where the line being parsed started, for error messages.
    line_start: usize,
    /// The type of the most recent `# TYPE` line: Prometheus normalises `le`
    /// and `quantile` values by it, whichever family the sample is in.
    last_type: MetricType,
    /// Family name → index into the metadata.
    families: HashMap<String, usize>,
    out: ScrapeBuilder,
}

/// What a token error reports.
type ParseResult<T> = Result<T, Error>;

impl<'a> TextParser<'a> {
    fn peek(&self) -> Option<u8> {
        self.body.get(self.pos).copied()
    }

    fn skip_blanks(&mut self) {
        while let Some(b' ' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// At a newline or the end of input (Prometheus appends a final newline).
    fn at_line_end(&self) -> bool {
        matches!(self.peek(), None | Some(b'\n'))
    }

    fn end_line(&mut self) {
        if self.peek() == Some(b'\n') {
            self.pos += 1;
            self.line += 1;
        }
    }

    fn error(&self, message: String) -> Error {
        Error::Exposition {
            format: "text format",
            line: self.line,
            message,
        }
    }

    /// Prometheus' shape: what was expected, the offending input, and the
    /// line up to and including it.
    fn unexpected(&self, expected: &str) -> Error {
        let got_end = (self.pos + 1).min(self.body.len());
        let got = if self.pos >= self.body.len() {
            &b"\n"[..]
        } else {
            &self.body[self.pos..got_end]
        };
        let context = &self.body[self.line_start.min(got_end)..got_end];
        self.error(format!(
            "{expected}, got {} while parsing: {}",
            quote_bytes(got),
            quote_bytes(context)
        ))
    }

    fn run(&mut self) -> ParseResult<()> {
        loop {
            self.line_start = self.pos;
            self.skip_blanks();
            let Some(byte) = self.peek() else {
                return Ok(());
            };
            match byte {
                0 => return Ok(()),
                b'\n' => self.end_line(),
                b'#' => self.comment()?,
                b'{' => self.sample(None)?,
                byte if is_metric_name_start(byte) => {
                    let start = self.pos;
                    while self.peek().is_some_and(is_metric_name_char) {
                        self.pos += 1;
                    }
                    // Unquoted names are ASCII by construction.
                    let name = String::from_utf8_lossy(&self.body[start..self.pos]).into_owned();
                    self.sample(Some(name))?;
                }
                _ => return Err(self.unexpected("expected a valid start token")),
            }
        }
    }

    /// A `#` line: `# HELP`, `# TYPE`, or a comment.
    fn comment(&mut self) -> ParseResult<()> {
        self.pos += 1;
        let blanks_start = self.pos;
        self.skip_blanks();
        let keyword = if self.pos == blanks_start {
            None
        } else if self.body[self.pos..].starts_with(b"HELP") {
            Some(MetadataKind::Help)
        } else if self.body[self.pos..].starts_with(b"TYPE") {
            Some(MetadataKind::Type)
        } else {
            None
        };
        // `HELP`/`TYPE` only count when blanks follow them: `# HELPful` and
        // `# HELP` alone are comments.
        let keyword = keyword.filter(|_| matches!(self.body.get(self.pos + 4), Some(b' ' | b'\t')));
        let Some(kind) = keyword else {
            self.skip_comment();
            return Ok(());
        };
        self.pos += 4;
        self.skip_blanks();
        let name = match self.peek() {
            Some(b'"') => {
                let raw = self.quoted()?;
                self.decode(raw, true, "metric name")?
            }
            Some(byte) if is_metric_name_start(byte) => {
                let start = self.pos;
                while self.peek().is_some_and(is_metric_name_char) {
                    self.pos += 1;
                }
                String::from_utf8_lossy(&self.body[start..self.pos]).into_owned()
            }
            _ => return Err(self.unexpected(&format!("expected metric name after {}", kind.keyword()))),
        };
        let rest_start = self.pos;
        while !self.at_line_end() {
            self.pos += 1;
        }
        let rest = &self.body[rest_start..self.pos];
        // Prometheus' lexer reads the rest of the line as one token and drops
        // its first byte (the separator); a rest of only blanks is empty.
        let text = if rest.iter().all(|b| matches!(b, b' ' | b'\t')) {
            &[][..]
        } else {
            &rest[1..]
        };
        let index = self.family(&name);
        match kind {
            MetadataKind::Help => {
                let help = unescape(text, false)
                    .map_err(|_| self.error(format!("help text {} is not a valid utf8 string", quote_bytes(text))))?;
                self.out.scrape.metadata[index].help = help.into_owned();
            }
            MetadataKind::Type => {
                let metric_type = match text {
                    b"counter" => MetricType::Counter,
                    b"gauge" => MetricType::Gauge,
                    b"histogram" => MetricType::Histogram,
                    b"summary" => MetricType::Summary,
                    b"untyped" => MetricType::Unknown,
                    _ => return Err(self.error(format!("invalid metric type {}", quote_bytes(text)))),
                };
                self.out.scrape.metadata[index].metric_type = metric_type;
                self.last_type = metric_type;
            }
        }
        self.end_line();
        Ok(())
    }

    fn skip_comment(&mut self) {
        while !self.at_line_end() {
            self.pos += 1;
        }
        self.end_line();
    }

    fn family(&mut self, name: &str) -> usize {
        if let Some(&index) = self.families.get(name) {
            return index;
        }
        let index = self.out.metadata_entry(name);
        self.families.insert(name.to_owned(), index);
        index
    }

    /// A quoted string `"(\\.|[^\\"])*"` starting at `pos`; returns its raw
    /// contents. It may span lines, as in Prometheus' lexer.
    fn quoted(&mut self) -> ParseResult<&'a [u8]> {
        let open = self.pos;
        self.pos += 1;
        loop {
            match self.peek() {
                None => {
                    self.pos = open;
                    return Err(self.unexpected("unterminated quoted string"));
                }
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(&self.body[open + 1..self.pos - 1]);
                }
                Some(b'\\') => match self.body.get(self.pos + 1) {
                    // The escaped character may be anything but a newline.
                    Some(b'\n') | None => {
                        self.pos += 1;
                        return Err(self.unexpected("invalid escape in quoted string"));
                    }
                    Some(_) => self.pos += 2,
                },
                Some(b'\n') => {
                    self.pos += 1;
                    self.line += 1;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    fn decode(&self, raw: &[u8], quote: bool, what: &str) -> ParseResult<String> {
        unescape(raw, quote)
            .map(|text| text.into_owned())
            .map_err(|_| self.error(format!("invalid UTF-8 {what}: {}", quote_bytes(raw))))
    }

    /// A sample line from after its metric name (or from its `{` when the
    /// name is quoted inside the braces).
    fn sample(&mut self, name: Option<String>) -> ParseResult<()> {
        self.out.labels.clear();
        let mut metric_name = name;
        if metric_name.is_some() {
            self.skip_blanks();
        }
        if self.peek() == Some(b'{') {
            self.labels(&mut metric_name)?;
        }
        let Some(metric_name) = metric_name else {
            let context = &self.body[self.line_start..self.pos];
            return Err(self.error(format!("metric name not set while parsing: {}", quote_bytes(context))));
        };
        if metric_name.is_empty() {
            return Err(self.error("metric name must not be empty".to_owned()));
        }
        self.skip_blanks();
        let value_start = self.pos;
        while let Some(byte) = self.peek() {
            if matches!(byte, b' ' | b'\t' | b'\n' | b'{') {
                break;
            }
            self.pos += 1;
        }
        if self.pos == value_start {
            return Err(self.unexpected("expected value after metric"));
        }
        let value_text = &self.body[value_start..self.pos];
        let value = parse_go_float(value_text).map_err(|reason| {
            self.error(format!(
                "strconv.ParseFloat: parsing {}: {reason} while parsing: {}",
                quote_bytes(value_text),
                quote_bytes(&self.body[self.line_start..self.pos])
            ))
        })?;
        self.skip_blanks();
        let mut timestamp = None;
        if !self.at_line_end() {
            let ts_start = self.pos;
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
            if self.pos == ts_start {
                return Err(self.unexpected("expected timestamp or new record"));
            }
            let digits = &self.body[ts_start..self.pos];
            let parsed = std::str::from_utf8(digits).ok().and_then(|d| d.parse::<i64>().ok());
            let Some(ts) = parsed else {
                return Err(self.error(format!(
                    "strconv.ParseInt: parsing {}: value out of range",
                    quote_bytes(digits)
                )));
            };
            timestamp = Some(ts);
            self.skip_blanks();
            if !self.at_line_end() {
                return Err(self.unexpected("expected next entry after timestamp"));
            }
        }
        self.out.labels.push(name_label(metric_name));
        if let Err(message) = self.out.sort_labels() {
            return Err(self.error(message));
        }
        self.out.push_sample(canonical_nan(value), timestamp);
        self.end_line();
        Ok(())
    }

    /// `{…}` at `pos`: label pairs, and possibly the quoted metric name.
    fn labels(&mut self, metric_name: &mut Option<String>) -> ParseResult<()> {
        self.pos += 1;
        self.skip_blanks();
        loop {
            let (name, quoted) = match self.peek() {
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'"') => {
                    let raw = self.quoted()?;
                    (self.decode(raw, true, "label name")?, true)
                }
                Some(byte) if is_label_name_start(byte) => {
                    let start = self.pos;
                    while self.peek().is_some_and(is_label_name_char) {
                        self.pos += 1;
                    }
                    (String::from_utf8_lossy(&self.body[start..self.pos]).into_owned(), false)
                }
                _ => return Err(self.unexpected("expected label name")),
            };
            self.skip_blanks();
            // A quoted string followed by `,` or `}` is the metric name.
            if quoted && matches!(self.peek(), Some(b',' | b'}')) {
                if metric_name.is_some() {
                    let context = &self.body[self.line_start..self.pos];
                    return Err(self.error(format!(
                        "metric name already set while parsing: {}",
                        quote_bytes(context)
                    )));
                }
                *metric_name = Some(name);
                if self.peek() == Some(b',') {
                    self.pos += 1;
                    self.skip_blanks();
                }
                continue;
            }
            if self.peek() != Some(b'=') {
                return Err(self.unexpected("expected equal"));
            }
            self.pos += 1;
            self.skip_blanks();
            if self.peek() != Some(b'"') {
                return Err(self.unexpected("expected label value"));
            }
            let raw = self.quoted()?;
            let value = self.decode(raw, true, "label value")?;
            if name.is_empty() {
                return Err(self.error("label name must not be empty".to_owned()));
            }
            let value = normalize_label_value(self.last_type, &name, value);
            self.out.labels.push(Label { name, value });
            self.skip_blanks();
            if self.peek() == Some(b',') {
                self.pos += 1;
                self.skip_blanks();
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum MetadataKind {
    Help,
    Type,
}

impl MetadataKind {
    fn keyword(self) -> &'static str {
        match self {
            MetadataKind::Help => "HELP",
            MetadataKind::Type => "TYPE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NORMAL_NAN_BITS, parse_text};
    use crate::error::Error;
    use crate::labels::Labels;
    use crate::seam::MetricType;

    const NOW: i64 = 1_000;

    fn one(body: &str) -> (Labels, f64, i64) {
        let scrape = parse_text(body.as_bytes(), NOW).unwrap_or_else(|e| panic!("{body:?}: {e}"));
        assert_eq!(scrape.series.len(), 1, "{body:?}");
        let series = &scrape.series[0];
        (
            series.labels.clone(),
            series.samples[0].value,
            series.samples[0].timestamp,
        )
    }

    fn error(body: &str) -> String {
        match parse_text(body.as_bytes(), NOW) {
            Ok(scrape) => panic!("{body:?} parsed: {scrape:?}"),
            Err(e @ Error::Exposition { .. }) => e.to_string(),
            Err(e) => panic!("{body:?}: unexpected error kind {e:?}"),
        }
    }

    #[test]
    fn reads_names_labels_values_and_timestamps() {
        let (labels, value, ts) = one("http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n");
        assert_eq!(labels.to_string(), "http_requests_total{code=\"200\", method=\"post\"}");
        assert_eq!((value, ts), (1027.0, 1_395_066_363_000));
        let (_, value, ts) = one("a 1.5e3");
        assert_eq!((value, ts), (1500.0, NOW), "no final newline, no timestamp");
        assert_eq!(one("a -Inf\n").1, f64::NEG_INFINITY);
        assert_eq!(one("a +Inf\n").1, f64::INFINITY);
        assert_eq!(one("a Inf\n").1, f64::INFINITY);
        assert_eq!(
            one("a NaN\n").1.to_bits(),
            NORMAL_NAN_BITS,
            "NaN is Prometheus' normal NaN"
        );
        assert_eq!(one("a 0 -0\n".replace(" -0", "").as_str()).1, 0.0);
    }

    #[test]
    fn escapes_decode_as_prometheus_does() {
        let (labels, ..) = one(r#"a{b="q\"uote",c="back\\slash",d="new\nline",e="tab\tx",f="\\n"} 1"#);
        assert_eq!(labels.get("b"), Some("q\"uote"));
        assert_eq!(labels.get("c"), Some("back\\slash"));
        assert_eq!(labels.get("d"), Some("new\nline"));
        assert_eq!(labels.get("e"), Some("tab\\tx"), "unknown escapes stay literal");
        assert_eq!(labels.get("f"), Some("\\n"));
        let scrape = parse_text(b"# HELP a x\\ny\\\\z\\\"q\na 1\n", NOW).unwrap();
        assert_eq!(
            scrape.metadata[0].help, "x\ny\\z\\\"q",
            "help decodes \\\\ and \\n only"
        );
    }

    #[test]
    fn whitespace_comments_and_blank_lines_are_free() {
        let body = "\n\n  # a comment\n#no space\n# HELP\n#\n  #  TYPE   a counter\n\
                    a { b = \"1\" , c=\"2\" d=\"3\", } 1\t 5 \n\n";
        let scrape = parse_text(body.as_bytes(), NOW).unwrap();
        assert_eq!(scrape.series.len(), 1);
        assert_eq!(scrape.series[0].labels.len(), 4);
        assert_eq!(scrape.series[0].samples[0].timestamp, 5);
        assert_eq!(scrape.metadata.len(), 1);
        assert_eq!(scrape.metadata[0].metric_type, MetricType::Counter);
        assert!(parse_text(b"", NOW).unwrap().series.is_empty());
        // The type is everything after one separator, as in Prometheus.
        assert!(error("# TYPE a  counter\n").contains("invalid metric type \" counter\""));
        assert!(parse_text(b"\n\n\n", NOW).unwrap().series.is_empty());
    }

    #[test]
    fn metadata_last_one_wins() {
        let body = "# HELP a first\n# TYPE a gauge\na 1\n# HELP a second\n# TYPE a counter\n# HELP b  two  spaces\n";
        let scrape = parse_text(body.as_bytes(), NOW).unwrap();
        assert_eq!(scrape.metadata.len(), 2);
        assert_eq!(scrape.metadata[0].help, "second");
        assert_eq!(scrape.metadata[0].metric_type, MetricType::Counter);
        assert_eq!(
            scrape.metadata[1].help, " two  spaces",
            "one separator is dropped, as Prometheus does"
        );
        assert!(error("# TYPE a gaugehistogram\n").contains("invalid metric type"));
        assert!(error("# TYPE a counter \n").contains("invalid metric type"));
        assert!(error("# HELP 0a x\n").contains("expected metric name after HELP"));
    }

    #[test]
    fn duplicate_label_names_fail_the_scrape() {
        assert!(error("a{b=\"1\",b=\"2\"} 1\n").contains("label name \"b\" is not unique"));
        assert!(error("a{__name__=\"x\"} 1\n").contains("\"__name__\" is not unique"));
    }

    #[test]
    fn timestamps_are_unsigned_integer_milliseconds() {
        assert_eq!(one("a 1 0\n").2, 0);
        assert!(error("a 1 -5\n").contains("expected timestamp or new record"));
        assert!(error("a 1 2.5\n").contains("expected next entry after timestamp"));
        assert!(error("a 1 99999999999999999999\n").contains("out of range"));
        assert!(error("a 1 2 3\n").contains("expected next entry after timestamp"));
    }

    #[test]
    fn crlf_fails_on_sample_lines_as_in_prometheus() {
        assert!(error("a 1\r\n").contains("ParseFloat"));
        assert!(error("a 1 5\r\n").contains("expected next entry after timestamp"));
        // A comment or help line keeps its `\r`.
        let scrape = parse_text(b"# comment\r\n# HELP a x\r\na 1\n", NOW).unwrap();
        assert_eq!(scrape.metadata[0].help, "x\r");
    }

    #[test]
    fn utf8_names_in_quotes() {
        let (labels, ..) = one("{\"my.metric\", \"a.b\"=\"c\", d=\"e\"} 1\n");
        assert_eq!(labels.metric_name(), Some("my.metric"));
        assert_eq!(labels.get("a.b"), Some("c"));
        let (labels, ..) = one("{a=\"1\",\"name after\"} 2\n");
        assert_eq!(labels.metric_name(), Some("name after"));
        let scrape = parse_text(b"# TYPE \"my.metric\" gauge\n{\"my.metric\"} 1\n", NOW).unwrap();
        assert_eq!(scrape.metadata[0].metric_family_name, "my.metric");
        assert!(error("a{\"b\"} 1\n").contains("metric name already set"));
        assert!(error("{a=\"b\"} 1\n").contains("metric name not set"));
        assert!(error("{\"\"} 1\n").contains("must not be empty"));
        assert!(error("a{\"\"=\"x\"} 1\n").contains("must not be empty"));
    }

    #[test]
    fn le_and_quantile_are_normalised_after_a_type_line() {
        let body = "# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_bucket{le=\"1e+06\"} 0\nh_bucket{le=\"+Inf\"} 0\n\
                    h_bucket{le=\"abc\"} 0\n# TYPE s summary\ns{quantile=\"0.50\"} 1\n";
        let scrape = parse_text(body.as_bytes(), NOW).unwrap();
        let values: Vec<&str> = scrape
            .series
            .iter()
            .map(|s| s.labels.get("le").or(s.labels.get("quantile")).unwrap())
            .collect();
        assert_eq!(values, ["1.0", "1e+06", "+Inf", "abc", "0.5"]);
        let untyped = parse_text(b"h_bucket{le=\"1\"} 0\n", NOW).unwrap();
        assert_eq!(
            untyped.series[0].labels.get("le"),
            Some("1"),
            "no # TYPE, no normalisation"
        );
    }

    #[test]
    fn nul_and_newlines_in_values() {
        let (labels, ..) = one("a{b=\"x\0y\"} 1\n");
        assert_eq!(labels.get("b"), Some("x\0y"));
        let scrape = parse_text(b"a 1\n\0garbage that is never read", NOW).unwrap();
        assert_eq!(scrape.series.len(), 1, "NUL where a line starts ends the input");
        let scrape = parse_text(b"a{b=\"two\nlines\"} 1\nc 2\n", NOW).unwrap();
        assert_eq!(scrape.series[0].labels.get("b"), Some("two\nlines"));
        assert!(error("a{b=\"x\\\ny\"} 1\n").contains("invalid escape"));
        let invalid = parse_text(b"a{b=\"\xff\"} 1\n", NOW).unwrap_err().to_string();
        assert!(invalid.contains("invalid UTF-8 label value"), "{invalid}");
    }

    #[test]
    fn errors_name_the_line_and_what_was_expected() {
        let message = error("a 1\nb 2\n\nc{d='x'} 3\n");
        assert!(
            message.starts_with("text format parse error on line 4: expected label value"),
            "{message}"
        );
        assert!(error("a\n").contains("expected value after metric"));
        assert!(error("a true\n").contains("strconv.ParseFloat: parsing \"true\": invalid syntax"));
        assert!(error("a 1_0\n").contains("unsupported character in float"));
        assert!(error("a{b=\"c\"").contains("expected label name, got \"\\n\""));
        assert!(error("a{b=\"c").contains("unterminated"));
        assert!(error("@a 1\n").contains("expected a valid start token"));
        assert!(error("a{b+=\"c\"} 1\n").contains("expected equal"));
    }

    #[test]
    fn consecutive_lines_of_one_series_share_an_entry() {
        let scrape = parse_text(b"a 1 1\na 2 2\nb 3\na 4 4\n", NOW).unwrap();
        let counts: Vec<usize> = scrape.series.iter().map(|s| s.samples.len()).collect();
        assert_eq!(counts, [2, 1, 1]);
    }
}
