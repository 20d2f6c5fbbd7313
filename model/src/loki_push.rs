//! Loki's push wire formats (`POST /loki/api/v1/push`): the `logproto`
//! protobuf messages sent snappy-compressed by Promtail, Alloy, Fluent Bit and
//! the like, and Loki's JSON form, both decoded to a [`LogPush`].
//!
//! The protobuf form carries each stream's labels as a selector string
//! (`{app="foo", env="prod"}`); [`parse_stream_labels`] reads it with the
//! grammar and string escapes Loki accepts (Prometheus' metric syntax), and
//! [`format_stream_labels`] writes it back.
//!
//! Lines are kept byte for byte, with one exception forced by the model's
//! `String` lines: Loki (Go) keeps a protobuf line that is not valid UTF-8 as
//! raw bytes, so rejecting it would refuse pushes Loki takes; instead each
//! invalid sequence becomes U+FFFD, which is also what Loki shows when it
//! answers such a line in JSON. Structured metadata is converted the same way
//! (validation then turns U+FFFD into a space, as Loki does). Labels must be
//! valid UTF-8: Loki's label parser refuses anything else too.

use std::collections::BTreeMap;
use std::fmt;

use prost::Message;
use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::Error;
use crate::labels::{Label, Labels, METRIC_NAME};
use crate::logs::{LogEntry, LogPush, LogStream, TimestampNs};
use crate::remote_write::DecodeLimits;
use crate::validate::is_valid_label_name;

/// `Content-Type` of a snappy-compressed protobuf push.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";
/// `Content-Type` of a JSON push.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// The `logproto` messages of a push, field for field as in Loki's `push.proto`.
/// Strings that come from outside are read as bytes so that invalid UTF-8 gets
/// the treatment described in the module documentation instead of failing the
/// whole request inside prost.
pub mod proto {
    /// `logproto.PushRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<StreamAdapter>,
        /// `"loki"` or `"otlp"`; clients leave it empty. Not acted on.
        #[prost(string, tag = "2")]
        pub format: String,
    }

    /// `logproto.StreamAdapter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamAdapter {
        /// The label set in selector syntax, `{app="foo"}`.
        #[prost(bytes = "vec", tag = "1")]
        pub labels: Vec<u8>,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<EntryAdapter>,
        /// Loki-internal; clients send 0 and it is ignored.
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }

    /// `logproto.EntryAdapter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EntryAdapter {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(bytes = "vec", tag = "2")]
        pub line: Vec<u8>,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPairAdapter>,
        /// Only used in Loki's query responses; ignored on push.
        #[prost(message, repeated, tag = "4")]
        pub parsed: Vec<LabelPairAdapter>,
    }

    /// `logproto.LabelPairAdapter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPairAdapter {
        #[prost(bytes = "vec", tag = "1")]
        pub name: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    /// `google.protobuf.Timestamp`.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

const NANOS_PER_SECOND: i64 = 1_000_000_000;
/// How much of a label string an error message quotes.
const MAX_QUOTED_INPUT: usize = 256;

/// Decodes a snappy block-compressed `logproto.PushRequest`, the body Promtail
/// and Alloy send, with the default decompression limit.
pub fn decode_push_protobuf(snappy_body: &[u8]) -> Result<LogPush, Error> {
    decode_push_protobuf_limited(snappy_body, DecodeLimits::default())
}

/// [`decode_push_protobuf`] with an explicit limit on the decompressed size.
/// A body over the limit is [`Error::TooLarge`], found from the snappy header
/// before anything is allocated for it.
pub fn decode_push_protobuf_limited(snappy_body: &[u8], limits: DecodeLimits) -> Result<LogPush, Error> {
    decode_push_protobuf_cached(snappy_body, limits, &StreamLabelsCache::default())
}

/// [`decode_push_protobuf_limited`], parsing each stream's labels at most
/// once across requests through `cache`.
pub fn decode_push_protobuf_cached(
    snappy_body: &[u8],
    limits: DecodeLimits,
    cache: &StreamLabelsCache,
) -> Result<LogPush, Error> {
    let claimed = snap::raw::decompress_len(snappy_body).map_err(|e| Error::Snappy(e.to_string()))?;
    if claimed > limits.max_decompressed_bytes {
        return Err(Error::TooLarge(format!(
            "decompressed message size too large than max ({claimed} vs {})",
            limits.max_decompressed_bytes
        )));
    }
    let raw = crate::remote_write::decompress(snappy_body, limits)?;
    decode_push_request_cached(&raw, cache)
}

/// Parsed stream labels by their text. A shipper names the same streams in
/// every request, and at thousands of streams per request parsing them (and
/// dropping the copies) cost about a quarter of a push; with the cache a
/// known stream costs one hash lookup, and its label set is shared.
///
/// foldhash rather than xxh3 through `Hash`: that sets up xxh3's streaming
/// state (~600 bytes) per lookup, 2 % of push CPU at one stream per entry.
/// Seeded per cache, so a client cannot aim label texts at one bucket.
#[derive(Debug, Default)]
pub struct StreamLabelsCache {
    parsed: std::sync::Mutex<std::collections::HashMap<Box<str>, Labels, foldhash::fast::RandomState>>,
}

/// Label texts a [`StreamLabelsCache`] keeps; when full it starts over, so
/// a client sending endless distinct label sets cannot grow it.
pub const STREAM_LABELS_CACHE_ENTRIES: usize = 65_536;

/// Decodes an uncompressed `logproto.PushRequest`.
pub fn decode_push_request(raw: &[u8]) -> Result<LogPush, Error> {
    decode_push_request_cached(raw, &StreamLabelsCache::default())
}

/// [`decode_push_request`] with stream labels parsed through `cache`.
pub fn decode_push_request_cached(raw: &[u8], cache: &StreamLabelsCache) -> Result<LogPush, Error> {
    let request = proto::PushRequest::decode(raw).map_err(|e| Error::Protobuf(e.to_string()))?;
    // One lock per request; a poisoned cache is only a cache.
    let mut parsed = cache.parsed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut push = LogPush {
        streams: Vec::with_capacity(request.streams.len()),
    };
    for stream in request.streams {
        let labels_text = std::str::from_utf8(&stream.labels).map_err(|_| {
            label_error(
                &String::from_utf8_lossy(&stream.labels),
                "the labels are not valid UTF-8",
                None,
            )
        })?;
        let labels = match parsed.get(labels_text) {
            Some(labels) => labels.clone(),
            None => {
                let labels = parse_stream_labels(labels_text)?;
                if parsed.len() >= STREAM_LABELS_CACHE_ENTRIES {
                    parsed.clear();
                }
                parsed.insert(labels_text.into(), labels.clone());
                labels
            }
        };
        let mut entries = Vec::with_capacity(stream.entries.len());
        for entry in stream.entries {
            let timestamp = timestamp_from_proto(entry.timestamp.unwrap_or_default(), &labels)?;
            let mut metadata = Vec::with_capacity(entry.structured_metadata.len());
            for pair in entry.structured_metadata {
                metadata.push((utf8_or_replaced(pair.name), utf8_or_replaced(pair.value)));
            }
            entries.push(LogEntry {
                timestamp,
                line: utf8_or_replaced(entry.line),
                structured_metadata: Labels::from_pairs(metadata),
            });
        }
        push.streams.push(LogStream { labels, entries });
    }
    Ok(push)
}

/// The bytes as a string, each invalid UTF-8 sequence replaced by U+FFFD. No
/// copy when the bytes are valid, which is the common case.
fn utf8_or_replaced(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Nanoseconds since the epoch from a protobuf timestamp. Go accepts any
/// seconds within years 1–9999 but its `UnixNano` is undefined outside the
/// int64 range, so such timestamps are refused here rather than wrapped.
fn timestamp_from_proto(timestamp: proto::Timestamp, labels: &Labels) -> Result<TimestampNs, Error> {
    if !(0..NANOS_PER_SECOND as i32).contains(&timestamp.nanos) {
        return Err(Error::Invalid(format!(
            "entry for stream '{}' has an invalid timestamp: nanos {} is not in [0, 999999999]",
            format_stream_labels(labels),
            timestamp.nanos
        )));
    }
    let nanos = i128::from(timestamp.seconds) * i128::from(NANOS_PER_SECOND) + i128::from(timestamp.nanos);
    TimestampNs::try_from(nanos).map_err(|_| {
        Error::Invalid(format!(
            "entry for stream '{}' has timestamp {}s, outside the range of nanosecond timestamps (years 1678 to 2262)",
            format_stream_labels(labels),
            timestamp.seconds
        ))
    })
}

fn timestamp_to_proto(timestamp: TimestampNs) -> proto::Timestamp {
    proto::Timestamp {
        seconds: timestamp.div_euclid(NANOS_PER_SECOND),
        // rem_euclid of a divisor below 2^31 always fits.
        nanos: timestamp.rem_euclid(NANOS_PER_SECOND) as i32,
    }
}

/// The `logproto.PushRequest` of a push.
pub fn push_to_proto(push: &LogPush) -> proto::PushRequest {
    let streams = push
        .streams
        .iter()
        .map(|stream| proto::StreamAdapter {
            labels: format_stream_labels(&stream.labels).into_bytes(),
            entries: stream
                .entries
                .iter()
                .map(|entry| proto::EntryAdapter {
                    timestamp: Some(timestamp_to_proto(entry.timestamp)),
                    line: entry.line.as_bytes().to_vec(),
                    structured_metadata: entry
                        .structured_metadata
                        .iter()
                        .map(|l| proto::LabelPairAdapter {
                            name: l.name.as_bytes().to_vec(),
                            value: l.value.as_bytes().to_vec(),
                        })
                        .collect(),
                    parsed: Vec::new(),
                })
                .collect(),
            hash: 0,
        })
        .collect();
    proto::PushRequest {
        streams,
        format: String::new(),
    }
}

/// Encodes a push as Promtail does: protobuf, snappy block-compressed.
pub fn encode_push_protobuf(push: &LogPush) -> Vec<u8> {
    let raw = push_to_proto(push).encode_to_vec();
    // Compressing a byte slice into a fresh buffer fails only for inputs over
    // snappy's 4 GiB block limit, which no push we build reaches.
    snap::raw::Encoder::new().compress_vec(&raw).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Stream label strings
// ---------------------------------------------------------------------------

/// Writes a label set as Loki writes a stream's labels (Prometheus'
/// `labels.String()`): `{app="foo", env="prod"}`, sorted, every label inside
/// the braces. Values are quoted like Go's `strconv.Quote` for ASCII; other
/// characters are written as they are, except control characters (`\u`).
/// Names that are not plain identifiers are quoted, as Prometheus 3 does.
/// [`parse_stream_labels`] reads the result back to the same set.
pub fn format_stream_labels(labels: &Labels) -> String {
    let mut out = String::with_capacity(2 + labels.len() * 16);
    out.push('{');
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if is_valid_label_name(&label.name) {
            out.push_str(&label.name);
        } else {
            push_quoted(&mut out, &label.name);
        }
        out.push('=');
        push_quoted(&mut out, &label.value);
    }
    out.push('}');
    out
}

fn push_quoted(out: &mut String, text: &str) {
    use fmt::Write as _;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The error for a label string that does not parse, in Loki's wording, with
/// the input quoted (cut short when long) and the byte offset of the problem.
fn label_error(input: &str, reason: &str, at: Option<usize>) -> Error {
    let quoted = if input.len() > MAX_QUOTED_INPUT {
        let mut end = MAX_QUOTED_INPUT;
        while !input.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &input[..end])
    } else {
        input.to_string()
    };
    let position = at.map(|at| format!(" at byte {at}")).unwrap_or_default();
    Error::Invalid(format!(
        "error parsing labels '{quoted}' with error: {reason}{position}"
    ))
}

/// Parses a stream's label string as Loki does (Prometheus' `ParseMetric`):
/// an optional metric name, then `{name="value", …}` with an optional
/// trailing comma, `#` comments and spaces, tabs and newlines between tokens.
/// Names are identifiers (`[a-zA-Z_][a-zA-Z0-9_]*`) or quoted strings; a lone
/// quoted string in the braces is the metric name. Values are `"…"` or `'…'`
/// with Go's escapes (`\n`, `\t`, `\\`, the opening quote, `\xHH`, octal
/// `\ooo`, `\uHHHH`, `\UHHHHHHHH`) or raw `` `…` `` strings. Escapes that
/// spell bytes which are not UTF-8 are refused (Go would keep the bytes).
///
/// Empty values are dropped (Loki normalises them away) and duplicate names
/// are kept so that validation can name them. An empty input is the empty
/// label set, which validation refuses with Loki's message.
pub fn parse_stream_labels(input: &str) -> Result<Labels, Error> {
    LabelParser { input, at: 0 }.parse()
}

struct LabelParser<'a> {
    input: &'a str,
    at: usize,
}

impl LabelParser<'_> {
    fn fail<T>(&self, reason: &str) -> Result<T, Error> {
        Err(label_error(self.input, reason, Some(self.at)))
    }

    fn peek(&self) -> Option<u8> {
        self.input.as_bytes().get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while let Some(byte) = self.peek() {
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' => self.at += 1,
                b'#' => {
                    // A comment runs to the end of the line, as in PromQL.
                    let rest = &self.input.as_bytes()[self.at..];
                    self.at += rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
                }
                _ => break,
            }
        }
    }

    /// An identifier starting here; `colons` allows `:` (metric names).
    fn identifier(&mut self, colons: bool) -> Option<&str> {
        let bytes = self.input.as_bytes();
        let start = self.at;
        let allowed = |b: u8, first: bool| {
            b.is_ascii_alphabetic() || b == b'_' || (colons && b == b':') || (!first && b.is_ascii_digit())
        };
        if !bytes.get(start).is_some_and(|&b| allowed(b, true)) {
            return None;
        }
        let mut end = start + 1;
        while bytes.get(end).is_some_and(|&b| allowed(b, false)) {
            end += 1;
        }
        self.at = end;
        Some(&self.input[start..end])
    }

    fn parse(mut self) -> Result<Labels, Error> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        self.skip_space();
        if self.peek().is_none() {
            return Ok(Labels::default());
        }
        let metric_name = self.identifier(true).map(str::to_string);
        self.skip_space();
        match self.peek() {
            None if metric_name.is_some() => {}
            Some(b'{') => {
                self.at += 1;
                self.parse_braces(&mut pairs)?;
            }
            _ => return self.fail("expected '{'"),
        }
        self.skip_space();
        if self.peek().is_some() {
            return self.fail("unexpected input after the closing '}'");
        }
        if let Some(name) = metric_name {
            // The name in front wins over one in the braces, as in Prometheus.
            pairs.retain(|(n, _)| n != METRIC_NAME);
            pairs.push((METRIC_NAME.to_string(), name));
        }
        Ok(Labels::from_pairs(pairs))
    }

    /// The label list after `{`, up to and including `}`.
    fn parse_braces(&mut self, pairs: &mut Vec<(String, String)>) -> Result<(), Error> {
        loop {
            self.skip_space();
            match self.peek() {
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                None => return self.fail("unexpected end of input inside braces"),
                _ => {}
            }
            let item_start = self.at;
            let (name, quoted_name) = if let Some(name) = self.identifier(false) {
                (name.to_string(), false)
            } else if matches!(self.peek(), Some(b'"' | b'\'' | b'`')) {
                (self.string()?, true)
            } else {
                return self.fail("expected a label name or '}'");
            };
            self.skip_space();
            let rest = &self.input.as_bytes()[self.at..];
            if rest.starts_with(b"=~") || rest.starts_with(b"!=") || rest.starts_with(b"!~") {
                return self.fail("only '=' is allowed in stream labels");
            }
            if rest.first() == Some(&b'=') {
                self.at += 1;
                self.skip_space();
                if !matches!(self.peek(), Some(b'"' | b'\'' | b'`')) {
                    return self.fail("expected a quoted label value");
                }
                let value = self.string()?;
                if name.is_empty() {
                    self.at = item_start;
                    return self.fail("empty label name");
                }
                pairs.push((name, value));
            } else if quoted_name {
                // `{"name"}`: a quoted string alone is the metric name.
                pairs.push((METRIC_NAME.to_string(), name));
            } else {
                return self.fail("expected '=' after the label name");
            }
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {}
                None => return self.fail("unexpected end of input inside braces"),
                _ => return self.fail("expected ',' or '}'"),
            }
        }
    }

    /// A quoted string starting at the opening quote, unescaped.
    fn string(&mut self) -> Result<String, Error> {
        let bytes = self.input.as_bytes();
        let quote = bytes[self.at];
        let start = self.at;
        self.at += 1;
        if quote == b'`' {
            let Some(length) = bytes[self.at..].iter().position(|&b| b == b'`') else {
                self.at = start;
                return self.fail("unterminated raw string");
            };
            let text = &self.input[self.at..self.at + length];
            self.at += length + 1;
            return Ok(text.to_string());
        }
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(byte) = self.peek() else {
                self.at = start;
                return self.fail("unterminated quoted string");
            };
            match byte {
                b'\n' => {
                    self.at = start;
                    return self.fail("unterminated quoted string");
                }
                b'\\' => {
                    self.at += 1;
                    self.escape(quote, &mut out)?;
                }
                b if b == quote => {
                    self.at += 1;
                    break;
                }
                b => {
                    out.push(b);
                    self.at += 1;
                }
            }
        }
        String::from_utf8(out).or_else(|_| {
            self.at = start;
            self.fail("the escape sequences in this string spell bytes that are not UTF-8")
        })
    }

    /// One escape sequence after its backslash, appended to `out` as bytes.
    fn escape(&mut self, quote: u8, out: &mut Vec<u8>) -> Result<(), Error> {
        let Some(kind) = self.peek() else {
            return self.fail("escape sequence not terminated");
        };
        self.at += 1;
        let simple = match kind {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' => Some(b'\\'),
            q if q == quote => Some(q),
            _ => None,
        };
        if let Some(byte) = simple {
            out.push(byte);
            return Ok(());
        }
        let (digits, base, first_digit_consumed) = match kind {
            b'0'..=b'7' => (3, 8, true),
            b'x' => (2, 16, false),
            b'u' => (4, 16, false),
            b'U' => (8, 16, false),
            _ => {
                self.at -= 1;
                let shown = self.input[self.at..].chars().next().unwrap_or('?');
                return self.fail(&format!("unknown escape sequence '\\{shown}'"));
            }
        };
        let mut value: u32 = 0;
        let mut remaining = digits;
        if first_digit_consumed {
            value = u32::from(kind - b'0');
            remaining -= 1;
        }
        for _ in 0..remaining {
            let digit = self.peek().and_then(|b| char::from(b).to_digit(base));
            let Some(digit) = digit else {
                return if self.peek().is_none() {
                    self.fail("escape sequence not terminated")
                } else {
                    self.fail("illegal character in escape sequence")
                };
            };
            value = value * base + digit;
            self.at += 1;
        }
        match kind {
            // Octal and \x spell one byte, which may be half a UTF-8 sequence.
            b'0'..=b'7' | b'x' => {
                let Ok(byte) = u8::try_from(value) else {
                    return self.fail("octal escape value is larger than 255");
                };
                out.push(byte);
            }
            _ => {
                let Some(c) = char::from_u32(value) else {
                    return self.fail("escape sequence is an invalid Unicode code point");
                };
                let mut buffer = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/// Decodes Loki's JSON push body:
/// `{"streams":[{"stream":{"app":"foo"},"values":[["<unix ns>","line",{"k":"v"}]]}]}`.
///
/// Tolerated as Loki tolerates them: unknown keys anywhere (ignored),
/// `"streams": null`, `"values": null`, `null` in place of an entry (skipped),
/// a missing `"stream"` (an empty label set, refused later by validation),
/// numbers as label values (their text), a repeated label name (the last one
/// wins). Refused as Loki refuses them: a timestamp that is not a string of
/// decimal nanoseconds (JSON numbers included — Loki's v1 push reads only
/// strings), a line that is not a string, structured metadata values that are
/// not strings, label names that are not identifiers. Stricter than Loki:
/// an entry must have two or three elements (Loki reads `["1"]` as an empty
/// line), the body must be valid UTF-8 and hold nothing after the object, and
/// lone UTF-16 surrogate escapes are refused.
pub fn decode_push_json(body: &[u8]) -> Result<LogPush, Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let streams = deserializer
        .deserialize_map(PushVisitor)
        .and_then(|streams| deserializer.end().map(|()| streams))
        .map_err(|e| Error::Invalid(format!("invalid JSON push: {e}")))?;
    Ok(LogPush { streams })
}

struct PushVisitor;

impl<'de> Visitor<'de> for PushVisitor {
    type Value = Vec<LogStream>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with a \"streams\" array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut streams = Vec::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "streams" {
                let list: Option<Vec<JsonStream>> = map.next_value()?;
                streams = list.unwrap_or_default().into_iter().map(|s| s.0).collect();
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(streams)
    }
}

struct JsonStream(LogStream);

impl<'de> serde::Deserialize<'de> for JsonStream {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StreamVisitor)
    }
}

struct StreamVisitor;

impl<'de> Visitor<'de> for StreamVisitor {
    type Value = JsonStream;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a stream object with \"stream\" and \"values\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut labels = Labels::default();
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "stream" => labels = map.next_value::<JsonLabelSet>()?.0,
                "values" => {
                    let values: Option<Vec<Option<JsonEntry>>> = map.next_value()?;
                    entries = values.unwrap_or_default().into_iter().flatten().map(|e| e.0).collect();
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(JsonStream(LogStream { labels, entries }))
    }
}

/// `"stream": {"name": "value", …}`.
struct JsonLabelSet(Labels);

impl<'de> serde::Deserialize<'de> for JsonLabelSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(LabelSetVisitor)
    }
}

struct LabelSetVisitor;

impl<'de> Visitor<'de> for LabelSetVisitor {
    type Value = JsonLabelSet;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of label names to string values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // A map, so that a repeated name keeps its last value as Go's map does.
        let mut pairs: BTreeMap<String, String> = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            // Loki re-parses these labels from their selector form, where a
            // name must be an identifier: anything else fails there.
            if !is_valid_label_name(&name) {
                return Err(de::Error::custom(format!(
                    "invalid label name {name:?}: names must match [a-zA-Z_][a-zA-Z0-9_]*"
                )));
            }
            let value = map.next_value::<LabelValue>()?.0;
            pairs.insert(name, value);
        }
        let labels: Vec<Label> = pairs
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| Label { name, value })
            .collect();
        Ok(JsonLabelSet(Labels::from_sorted(labels)))
    }
}

/// A label value: a string, or a number taken as its text as Loki does.
struct LabelValue(String);

impl<'de> serde::Deserialize<'de> for LabelValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl Visitor<'_> for ValueVisitor {
            type Value = LabelValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or number label value")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<LabelValue, E> {
                Ok(LabelValue(value.to_string()))
            }
            fn visit_string<E: de::Error>(self, value: String) -> Result<LabelValue, E> {
                Ok(LabelValue(value))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<LabelValue, E> {
                Ok(LabelValue(value.to_string()))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<LabelValue, E> {
                Ok(LabelValue(value.to_string()))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<LabelValue, E> {
                Ok(LabelValue(value.to_string()))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// `["<unix ns>", "line"]` or `["<unix ns>", "line", {"k": "v"}]`.
struct JsonEntry(LogEntry);

impl<'de> serde::Deserialize<'de> for JsonEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = JsonEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an entry [\"<unix nanoseconds>\", \"<line>\"] with optional structured metadata object")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Some(timestamp) = seq.next_element_seed(TimestampSeed)? else {
            return Err(de::Error::invalid_length(0, &self));
        };
        let Some(line) = seq.next_element_seed(LineSeed)? else {
            return Err(de::Error::invalid_length(1, &self));
        };
        let metadata: Option<BTreeMap<String, String>> = seq.next_element()?;
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(4, &self));
        }
        Ok(JsonEntry(LogEntry {
            timestamp,
            line,
            structured_metadata: Labels::from_pairs(metadata.unwrap_or_default()),
        }))
    }
}

/// The entry's timestamp: a JSON string of decimal nanoseconds.
struct TimestampSeed;

impl<'de> DeserializeSeed<'de> for TimestampSeed {
    type Value = TimestampNs;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for TimestampSeed {
    type Value = TimestampNs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a timestamp as a string of Unix nanoseconds, such as \"1700000000000000000\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<TimestampNs, E> {
        parse_timestamp_ns(text).ok_or_else(|| {
            E::custom(format!(
                "invalid timestamp {text:?}: expected Unix nanoseconds as decimal digits"
            ))
        })
    }
}

/// Decimal nanoseconds, optionally negative — what Loki's JSON reader takes.
/// No `+`, no spaces, no fraction, no exponent.
pub fn parse_timestamp_ns(text: &str) -> Option<TimestampNs> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The entry's line: a JSON string, taken whole.
struct LineSeed;

impl<'de> DeserializeSeed<'de> for LineSeed {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_string(self)
    }
}

impl Visitor<'_> for LineSeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the log line as a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
        Ok(text.to_string())
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<String, E> {
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn parse(text: &str) -> Labels {
        parse_stream_labels(text).unwrap_or_else(|e| panic!("{text:?} did not parse: {e}"))
    }

    fn parse_error(text: &str) -> String {
        match parse_stream_labels(text) {
            Ok(labels) => panic!("{text:?} parsed to {labels:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn sample_push() -> LogPush {
        let mut with_metadata = LogEntry::new(1_700_000_000_123_456_789, "GET /api 200");
        with_metadata.structured_metadata = labels(&[("trace_id", "abc"), ("user", "ünïcode")]);
        LogPush {
            streams: vec![
                LogStream {
                    labels: labels(&[("app", "api"), ("env", "prod")]),
                    entries: vec![
                        with_metadata,
                        LogEntry::new(1_700_000_000_123_456_790, ""),
                        LogEntry::new(-5, "before the epoch"),
                        LogEntry::new(7, "x".repeat(300_000)),
                    ],
                },
                LogStream {
                    labels: labels(&[("job", "a\"b\\c\nd\u{1}é")]),
                    entries: vec![LogEntry::new(0, "line with \0 nul and \u{fffd} and emoji 🦀")],
                },
            ],
        }
    }

    #[test]
    fn protobuf_round_trip_keeps_every_byte() {
        let push = sample_push();
        assert_eq!(decode_push_protobuf(&encode_push_protobuf(&push)).unwrap(), push);
    }

    #[test]
    fn the_labels_cache_parses_each_label_text_once_and_refuses_bad_ones_every_time() {
        let cache = StreamLabelsCache::default();
        let push = sample_push();
        let body = encode_push_protobuf(&push);
        let limits = DecodeLimits::default();
        let first = decode_push_protobuf_cached(&body, limits, &cache).unwrap();
        let second = decode_push_protobuf_cached(&body, limits, &cache).unwrap();
        assert_eq!(first, push);
        assert_eq!(second, push);
        let texts = push.streams.len();
        assert_eq!(cache.parsed.lock().unwrap().len(), texts);
        // A cache hit hands out the same label set, not a copy.
        let cached = cache
            .parsed
            .lock()
            .unwrap()
            .get(format_stream_labels(&push.streams[0].labels).as_str())
            .cloned();
        assert!(
            cached.is_some_and(|labels| labels.as_slice().as_ptr() == second.streams[0].labels.as_slice().as_ptr())
        );
        let mut bad = push_to_proto(&push);
        bad.streams[0].labels = b"{job=}".to_vec();
        let bad_body = snap::raw::Encoder::new().compress_vec(&bad.encode_to_vec()).unwrap();
        for _ in 0..2 {
            assert!(decode_push_protobuf_cached(&bad_body, limits, &cache).is_err());
        }
        assert_eq!(
            cache.parsed.lock().unwrap().len(),
            texts,
            "nothing cached for a refused text"
        );
    }

    #[test]
    fn parses_loki_label_strings() {
        assert_eq!(
            parse(r#"{app="foo", env="prod"}"#),
            labels(&[("app", "foo"), ("env", "prod")])
        );
        assert_eq!(parse("{app='foo',}"), labels(&[("app", "foo")]));
        assert_eq!(
            parse(" {\n\tapp = `a\\nb` # comment\n }\n"),
            labels(&[("app", "a\\nb")])
        );
        assert_eq!(parse("{}"), Labels::default());
        assert_eq!(parse(""), Labels::default());
        assert_eq!(parse(r#"{a=""}"#), Labels::default(), "empty values are dropped");
        assert_eq!(parse(r#"up{job="x"}"#), labels(&[("__name__", "up"), ("job", "x")]));
        assert_eq!(parse("ns:metric"), labels(&[("__name__", "ns:metric")]));
        assert_eq!(parse(r#"{"up", job="x"}"#), labels(&[("__name__", "up"), ("job", "x")]));
        assert_eq!(parse(r#"{"service.name"="api"}"#), labels(&[("service.name", "api")]));
        assert_eq!(
            parse(r#"{a="x", a="y"}"#).duplicate_name(),
            Some("a"),
            "duplicates are kept for validation to report"
        );
    }

    #[test]
    fn unescapes_like_go() {
        let value = |text: &str| parse(&format!("{{v={text}}}")).get("v").unwrap_or_default().to_string();
        assert_eq!(value(r#""a\"b\\c\n\t\r\a\b\f\v""#), "a\"b\\c\n\t\r\u{7}\u{8}\u{c}\u{b}");
        assert_eq!(value(r#""\x41\101\u00e9\U0001F980""#), "AAé🦀");
        assert_eq!(value(r#"'it\'s'"#), "it's");
        assert_eq!(value(r#""\xc3\xa9""#), "é", "hex bytes that form UTF-8 are accepted");
        assert_eq!(value("`raw \\n \"quotes\"\nnewline`"), "raw \\n \"quotes\"\nnewline");
        assert_eq!(value("\"ünïcode 🦀\""), "ünïcode 🦀");
    }

    #[test]
    fn malformed_label_strings_are_errors_that_quote_the_input() {
        for (text, reason) in [
            (r#"{app="foo""#, "unexpected end of input inside braces"),
            (r#"{app="foo"#, "unterminated quoted string"),
            (r#"{app="foo}"#, "unterminated quoted string"),
            ("{app=\"a\nb\"}", "unterminated quoted string"),
            ("{app=`foo}", "unterminated raw string"),
            (r#"{app=foo}"#, "expected a quoted label value"),
            (r#"{app}"#, "expected '=' after the label name"),
            (r#"{app=~"x"}"#, "only '=' is allowed"),
            (r#"{app!="x"}"#, "only '=' is allowed"),
            (r#"{app="x" env="y"}"#, "expected ',' or '}'"),
            (r#"{app="x"} extra"#, "unexpected input after the closing '}'"),
            (r#"{,}"#, "expected a label name or '}'"),
            (r#"{1a="x"}"#, "expected a label name or '}'"),
            (r#"{{a="x"}}"#, "expected a label name or '}'"),
            (r#"app="x""#, "expected '{'"),
            (r#"{a="\q"}"#, "unknown escape sequence '\\q'"),
            (r#"{a="\'"}"#, "unknown escape sequence"),
            (r#"{a="\x4"}"#, "illegal character in escape sequence"),
            (r#"{a="\x"#, "escape sequence not terminated"),
            (r#"{a="\400"}"#, "larger than 255"),
            (r#"{a="\ud800"}"#, "invalid Unicode code point"),
            (r#"{a="\U00110000"}"#, "invalid Unicode code point"),
            (r#"{a="\xff"}"#, "not UTF-8"),
            (r#"{""="x"}"#, "empty label name"),
        ] {
            let message = parse_error(text);
            assert!(message.contains(reason), "{text:?}: {message}");
            assert!(
                message.starts_with(&format!("error parsing labels '{text}' with error: ")),
                "{text:?}: {message}"
            );
        }
    }

    #[test]
    fn formats_labels_that_parse_back() {
        let set = labels(&[
            ("__name__", "up"),
            ("b", "say \"hi\"\n"),
            ("a.b", "x"),
            ("c", "\u{7f}\u{85}"),
        ]);
        let text = format_stream_labels(&set);
        assert_eq!(text, r#"{__name__="up", "a.b"="x", b="say \"hi\"\n", c="\x7f\u0085"}"#);
        assert_eq!(parse(&text), set);
    }

    #[test]
    fn invalid_utf8_in_protobuf_lines_becomes_replacement_characters() {
        let request = proto::PushRequest {
            streams: vec![proto::StreamAdapter {
                labels: b"{app=\"x\"}".to_vec(),
                entries: vec![proto::EntryAdapter {
                    timestamp: Some(proto::Timestamp { seconds: 1, nanos: 2 }),
                    line: b"ok \xff\xfe end".to_vec(),
                    structured_metadata: vec![proto::LabelPairAdapter {
                        name: b"k".to_vec(),
                        value: b"v\xc3".to_vec(),
                    }],
                    parsed: Vec::new(),
                }],
                hash: 42,
            }],
            format: String::new(),
        };
        let push = decode_push_request(&request.encode_to_vec()).unwrap();
        let entry = &push.streams[0].entries[0];
        assert_eq!(entry.timestamp, 1_000_000_002);
        assert_eq!(entry.line, "ok \u{fffd}\u{fffd} end");
        assert_eq!(entry.structured_metadata.get("k"), Some("v\u{fffd}"));
    }

    #[test]
    fn bad_protobuf_input_is_an_error() {
        let stream = |labels: &[u8], timestamp: proto::Timestamp| proto::PushRequest {
            streams: vec![proto::StreamAdapter {
                labels: labels.to_vec(),
                entries: vec![proto::EntryAdapter {
                    timestamp: Some(timestamp),
                    ..Default::default()
                }],
                hash: 0,
            }],
            format: String::new(),
        };
        let ok = proto::Timestamp { seconds: 1, nanos: 0 };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not snappy at all".to_vec(), "snappy"),
            (
                snap::raw::Encoder::new().compress_vec(&[0x0a, 0x05, 0x01]).unwrap(),
                "protobuf",
            ),
            (
                snap::raw::Encoder::new()
                    .compress_vec(&stream(b"{app=\"x\xff\"}", ok).encode_to_vec())
                    .unwrap(),
                "not valid UTF-8",
            ),
            (
                snap::raw::Encoder::new()
                    .compress_vec(&stream(b"{app=x}", ok).encode_to_vec())
                    .unwrap(),
                "error parsing labels '{app=x}'",
            ),
            (
                snap::raw::Encoder::new()
                    .compress_vec(&stream(b"{app=\"x\"}", proto::Timestamp { seconds: 1, nanos: -1 }).encode_to_vec())
                    .unwrap(),
                "nanos -1",
            ),
            (
                snap::raw::Encoder::new()
                    .compress_vec(
                        &stream(
                            b"{app=\"x\"}",
                            proto::Timestamp {
                                seconds: i64::MAX / 2,
                                nanos: 0,
                            },
                        )
                        .encode_to_vec(),
                    )
                    .unwrap(),
                "outside the range",
            ),
        ];
        for (body, expected) in cases {
            let message = decode_push_protobuf(&body).unwrap_err().to_string();
            assert!(message.contains(expected), "expected {expected:?} in {message:?}");
        }
    }

    #[test]
    fn an_oversized_snappy_header_is_too_large_before_decompressing() {
        let body = encode_push_protobuf(&sample_push());
        let limits = DecodeLimits {
            max_decompressed_bytes: 1000,
        };
        let error = decode_push_protobuf_limited(&body, limits).unwrap_err();
        assert!(matches!(error, Error::TooLarge(_)), "{error}");
        assert!(error.to_string().contains("vs 1000)"), "{error}");
    }

    #[test]
    fn decodes_loki_json() {
        let body = br#"{
            "streams": [
                {
                    "stream": {"app": "api", "env": "prod", "empty": "", "code": 200},
                    "values": [
                        ["1700000000000000001", "first line"],
                        ["1700000000000000002", "with metadata", {"trace_id": "abc"}],
                        null,
                        ["-3", "esc\u00e9\n\"q\""]
                    ],
                    "extra": {"ignored": [1, 2]}
                },
                {"values": null, "stream": {"app": "x", "app": "y"}},
                {"values": [["5", ""]]}
            ],
            "other": true
        }"#;
        let push = decode_push_json(body).unwrap();
        assert_eq!(push.streams.len(), 3);
        let first = &push.streams[0];
        assert_eq!(
            first.labels,
            labels(&[("app", "api"), ("code", "200"), ("env", "prod")])
        );
        let mut with_metadata = LogEntry::new(1_700_000_000_000_000_002, "with metadata");
        with_metadata.structured_metadata = labels(&[("trace_id", "abc")]);
        assert_eq!(
            first.entries,
            vec![
                LogEntry::new(1_700_000_000_000_000_001, "first line"),
                with_metadata,
                LogEntry::new(-3, "escé\n\"q\""),
            ]
        );
        assert_eq!(
            push.streams[1].labels,
            labels(&[("app", "y")]),
            "the last repeated name wins"
        );
        assert!(push.streams[1].entries.is_empty());
        assert_eq!(push.streams[2].labels, Labels::default());
        assert_eq!(push.streams[2].entries, vec![LogEntry::new(5, "")]);

        assert_eq!(decode_push_json(br#"{"streams": null}"#).unwrap(), LogPush::default());
        assert_eq!(decode_push_json(b"{}").unwrap(), LogPush::default());
    }

    #[test]
    fn malformed_json_is_an_error() {
        for (body, expected) in [
            (&b"not json"[..], "invalid JSON push"),
            (b"", "EOF"),
            (b"[]", "an object with a \"streams\" array"),
            (b"{\"streams\": {}}", "a sequence"),
            (
                br#"{"streams": [{"stream": {"a": "b"}, "values": [[1700000000000000000, "x"]]}]}"#,
                "invalid type: integer",
            ),
            (
                br#"{"streams": [{"stream": {"a": "b"}, "values": [["1.7e18", "x"]]}]}"#,
                "invalid timestamp \"1.7e18\"",
            ),
            (
                br#"{"streams": [{"stream": {"a": "b"}, "values": [["+1", "x"]]}]}"#,
                "invalid timestamp",
            ),
            (
                br#"{"streams": [{"stream": {"a": "b"}, "values": [["", "x"]]}]}"#,
                "invalid timestamp",
            ),
            (
                br#"{"streams": [{"stream": {"a": "b"}, "values": [["99999999999999999999", "x"]]}]}"#,
                "invalid timestamp",
            ),
            (
                br#"{"streams": [{"stream": {"a": "b"}, "values": [["1"]]}]}"#,
                "invalid length 1",
            ),
            (
                br#"{"streams": [{"stream": {"a": "b"}, "values": [["1", "x", {}, 4]]}]}"#,
                "invalid length 4",
            ),
            (
                br#"{"streams": [{"stream": {"a": "b"}, "values": [["1", 2]]}]}"#,
                "invalid type: integer",
            ),
            (
                br#"{"streams": [{"stream": {"a": "b"}, "values": [["1", "x", {"k": 1}]]}]}"#,
                "invalid type",
            ),
            (
                br#"{"streams": [{"stream": {"a": true}, "values": []}]}"#,
                "invalid type: boolean",
            ),
            (
                br#"{"streams": [{"stream": {"a.b": "c"}, "values": []}]}"#,
                "invalid label name \"a.b\"",
            ),
            (
                br#"{"streams": [{"stream": {"a": "b"}, "values": [["1", "x"]]}]} trailing"#,
                "trailing characters",
            ),
            (b"{\"streams\": [{\"stream\": {\"a\": \"\xff\"}}]}", "invalid JSON push"),
            (br#"{"streams": [{"stream": {"a": "\ud800"}}]}"#, "escape"),
        ] {
            let message = decode_push_json(body).unwrap_err().to_string();
            assert!(
                message.contains(expected),
                "{}: expected {expected:?} in {message:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn timestamps_are_decimal_nanoseconds() {
        assert_eq!(parse_timestamp_ns("0"), Some(0));
        assert_eq!(parse_timestamp_ns("007"), Some(7));
        assert_eq!(parse_timestamp_ns("-12"), Some(-12));
        assert_eq!(parse_timestamp_ns("9223372036854775807"), Some(i64::MAX));
        for bad in ["", "-", "+1", " 1", "1 ", "1.0", "1e9", "9223372036854775808", "0x10"] {
            assert_eq!(parse_timestamp_ns(bad), None, "{bad:?}");
        }
    }

    fn label_name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z_][a-zA-Z0-9_]{0,8}",
            // Quoted names, as Prometheus 3 allows.
            "[a-z.\\-/ ]{1,6}",
        ]
    }

    fn any_text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..max).prop_map(|chars| chars.into_iter().collect())
    }

    fn label_set() -> impl Strategy<Value = Labels> {
        proptest::collection::vec((label_name(), any_text(8)), 0..5).prop_map(Labels::from_pairs)
    }

    fn push_strategy() -> impl Strategy<Value = LogPush> {
        let entry =
            (any::<i64>(), any_text(40), label_set()).prop_map(|(timestamp, line, structured_metadata)| LogEntry {
                timestamp,
                line,
                structured_metadata,
            });
        let stream = (label_set(), proptest::collection::vec(entry, 0..5))
            .prop_map(|(labels, entries)| LogStream { labels, entries });
        proptest::collection::vec(stream, 0..4).prop_map(|streams| LogPush { streams })
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(push in push_strategy()) {
            let decoded = decode_push_protobuf(&encode_push_protobuf(&push)).unwrap();
            prop_assert_eq!(decoded, push);
        }

        #[test]
        fn formatted_labels_parse_back(set in label_set()) {
            prop_assert_eq!(parse_stream_labels(&format_stream_labels(&set)).unwrap(), set);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_push_protobuf(&bytes);
            let _ = decode_push_request(&bytes);
            let _ = decode_push_json(&bytes);
            let _ = parse_stream_labels(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn label_strings_never_panic(text in "[{}=,\"'`\\\\a-z0-9 #\n:x\u{e9}]{0,24}") {
            let _ = parse_stream_labels(&text);
        }
    }
}
