//! Detected fields (`/loki/api/v1/detected_fields`): which fields the lines
//! of a log query carry, as Grafana's Logs Drilldown lists them.
//!
//! As Loki does: every entry's fields are its structured metadata, the
//! fields the query's own parsers extracted, and what `| json` finds in the
//! line — or, when the line is not JSON, what `| logfmt` finds. A field's
//! type is that of its last value (`int`, `float`, `boolean`, `duration`,
//! `bytes`, else `string`, tried in that order with Go's parsers); its
//! cardinality is the number of distinct values seen (Loki estimates it with
//! a HyperLogLog sketch, exact at these sizes).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use tidewatch_model::logs::LogEntry;
use tidewatch_model::{Label, Labels};

use super::conv::{parse_bytes_value, parse_duration, parse_float};
use super::eval::StreamResult;
use super::pipeline::{ERROR_DETAILS_LABEL, ERROR_LABEL, LabelState, PRESERVE_ERROR_LABEL, Pipeline};
use super::{Expr, parse};

/// A field's type as Loki names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Int,
    Float,
    Boolean,
    Duration,
    Bytes,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Boolean => "boolean",
            FieldType::Duration => "duration",
            FieldType::Bytes => "bytes",
        }
    }

    /// Loki's `determineType`: Go's `ParseInt`, `ParseFloat`, `ParseBool`,
    /// `time.ParseDuration`, humanize's `ParseBytes`, in that order.
    pub fn of(value: &str) -> FieldType {
        if value.parse::<i64>().is_ok() {
            FieldType::Int
        } else if parse_float(value).is_ok() {
            FieldType::Float
        } else if matches!(
            value,
            "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false" | "False"
        ) {
            FieldType::Boolean
        } else if parse_duration(value).is_ok() {
            FieldType::Duration
        } else if parse_bytes_value(value).is_ok() {
            FieldType::Bytes
        } else {
            FieldType::String
        }
    }
}

/// One detected field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectedField {
    pub label: String,
    pub field_type: FieldType,
    pub cardinality: u64,
    /// The line parsers that produced it (`json`, `logfmt`); empty for
    /// structured metadata and fields of the query's own parsers only.
    pub parsers: Vec<&'static str>,
    /// For a field `| json` found: the keys leading to it (`["user", "id"]`
    /// for `user_id`), what Grafana writes into `| json user_id="user.id"`.
    pub json_path: Vec<String>,
}

/// Every field of one entry with its values.
#[derive(Default)]
struct EntryFields {
    /// Structured metadata: fields without a parser.
    metadata: BTreeMap<String, BTreeSet<String>>,
    /// Fields of the query's parsers and of the line parser (`parser`).
    parsed: BTreeMap<String, BTreeSet<String>>,
    parser: Option<&'static str>,
    json_paths: BTreeMap<String, Vec<String>>,
}

/// Runs `| json`, else `| logfmt`, over lines, on top of the stream labels.
pub struct FieldDetector {
    json: Pipeline,
    logfmt: Pipeline,
}

impl std::fmt::Debug for FieldDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FieldDetector")
    }
}

impl Default for FieldDetector {
    fn default() -> Self {
        FieldDetector::new()
    }
}

impl FieldDetector {
    pub fn new() -> FieldDetector {
        let compile = |query: &str| match parse(query) {
            Ok(Expr::Log(log)) => Pipeline::compile(&log, 0).expect("a parser stage compiles"),
            _ => unreachable!("{query} is a log query"),
        };
        FieldDetector {
            json: compile("{x=\"y\"} | json"),
            logfmt: compile("{x=\"y\"} | logfmt"),
        }
    }

    /// The fields of one entry of a result stream. `stream_names` are the
    /// label names of the selected streams: every other label of the result
    /// stream is the entry's structured metadata or was parsed by the query.
    fn entry_fields(&self, result_labels: &Labels, stream_names: &HashSet<String>, entry: &LogEntry) -> EntryFields {
        let mut found = EntryFields::default();
        let mut stream_only = Vec::new();
        for label in result_labels {
            if stream_names.contains(&label.name) {
                stream_only.push(label.clone());
                continue;
            }
            if is_error_label(&label.name) {
                continue;
            }
            let into = if entry.structured_metadata.get(&label.name).is_some() {
                &mut found.metadata
            } else {
                &mut found.parsed
            };
            into.entry(label.name.clone()).or_default().insert(label.value.clone());
        }
        // Parse on the stream labels alone, so a field the query already
        // parsed is not found again as `<name>_extracted`.
        let base = Labels::from_sorted(stream_only);
        for (name, pipeline) in [("json", &self.json), ("logfmt", &self.logfmt)] {
            let mut state = LabelState::new(&base, &Labels::EMPTY);
            state.record_json_paths();
            if pipeline.process(entry.timestamp, &entry.line, &mut state).is_none() || state.has_error() {
                continue;
            }
            for (field, value) in state.parsed_fields() {
                if !is_error_label(field) {
                    found.parsed.entry(field.clone()).or_default().insert(value.clone());
                    if let Some(path) = state.json_path(field) {
                        found.json_paths.insert(field.clone(), path.to_vec());
                    }
                }
            }
            found.parser = Some(name);
            break;
        }
        found
    }

    /// The fields of every entry of `streams`, at most `limit` of them (the
    /// first found), sorted by name.
    pub fn detect(&self, streams: &[StreamResult], stream_names: &HashSet<String>, limit: usize) -> Vec<DetectedField> {
        struct Seen {
            values: HashSet<String>,
            field_type: FieldType,
            parsers: Vec<&'static str>,
            json_path: Vec<String>,
        }
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        for stream in streams {
            for entry in &stream.entries {
                let mut found = self.entry_fields(&stream.labels, stream_names, entry);
                let json_paths = std::mem::take(&mut found.json_paths);
                let metadata = found.metadata.into_iter().map(|field| (field, None));
                let parsed = found.parsed.into_iter().map(|field| (field, found.parser));
                for ((name, values), parser) in metadata.chain(parsed) {
                    if !seen.contains_key(&name) && seen.len() >= limit {
                        continue;
                    }
                    let path = json_paths.get(&name);
                    let field = seen.entry(name).or_insert_with(|| Seen {
                        values: HashSet::new(),
                        field_type: FieldType::String,
                        parsers: Vec::new(),
                        json_path: Vec::new(),
                    });
                    if let Some(path) = path {
                        field.json_path.clone_from(path);
                    }
                    if let Some(parser) = parser
                        && !field.parsers.contains(&parser)
                    {
                        field.parsers.push(parser);
                    }
                    if let Some(last) = values.iter().next_back() {
                        field.field_type = FieldType::of(last);
                    }
                    field.values.extend(values);
                }
            }
        }
        seen.into_iter()
            .map(|(label, field)| DetectedField {
                label,
                field_type: field.field_type,
                cardinality: field.values.len() as u64,
                parsers: field.parsers,
                json_path: field.json_path,
            })
            .collect()
    }

    /// The distinct values of field `name`, at most `limit`, sorted.
    pub fn values(
        &self,
        streams: &[StreamResult],
        stream_names: &HashSet<String>,
        name: &str,
        limit: usize,
    ) -> Vec<String> {
        let mut values = BTreeSet::new();
        'streams: for stream in streams {
            for entry in &stream.entries {
                if values.len() >= limit {
                    break 'streams;
                }
                let mut found = self.entry_fields(&stream.labels, stream_names, entry);
                for these in [found.metadata.remove(name), found.parsed.remove(name)]
                    .into_iter()
                    .flatten()
                {
                    values.extend(these);
                }
            }
        }
        values.into_iter().take(limit).collect()
    }
}

fn is_error_label(name: &str) -> bool {
    name == ERROR_LABEL || name == ERROR_DETAILS_LABEL || name == PRESERVE_ERROR_LABEL
}

/// The label names of `streams` (for [`FieldDetector::detect`]'s `stream_names`).
pub fn label_names(streams: &[Labels]) -> HashSet<String> {
    streams
        .iter()
        .flat_map(|labels| labels.iter().map(|l: &Label| l.name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_gos_parsers_in_lokis_order() {
        let cases = [
            ("42", FieldType::Int),
            ("-7", FieldType::Int),
            ("+7", FieldType::Int),
            ("1", FieldType::Int),
            ("3.25", FieldType::Float),
            ("1e3", FieldType::Float),
            ("NaN", FieldType::Float),
            ("true", FieldType::Boolean),
            ("F", FieldType::Boolean),
            ("150ms", FieldType::Duration),
            ("1h30m", FieldType::Duration),
            ("10KB", FieldType::Bytes),
            ("5 MiB", FieldType::Bytes),
            ("GET", FieldType::String),
            ("", FieldType::String),
        ];
        for (value, want) in cases {
            assert_eq!(FieldType::of(value), want, "{value:?}");
        }
    }

    fn stream(labels: &[(&str, &str)], lines: &[&str]) -> StreamResult {
        StreamResult {
            labels: Labels::from_pairs(labels.iter().copied()),
            entries: lines
                .iter()
                .enumerate()
                .map(|(i, line)| LogEntry::new(i as i64, line.to_string()))
                .collect(),
        }
    }

    #[test]
    fn json_then_logfmt_fields_with_types_and_cardinality() {
        let streams = vec![
            stream(
                &[("app", "api")],
                &[
                    r#"{"status":200,"duration":"15ms","user":{"id":"u1"}}"#,
                    r#"{"status":500,"duration":"2s","user":{"id":"u2"}}"#,
                ],
            ),
            stream(
                &[("app", "db")],
                &["level=warn rows=10 size=5MB", "level=info rows=3 size=1KB"],
            ),
            {
                let mut web = stream(&[("app", "web"), ("trace_id", "abc")], &["plain words here"]);
                web.entries[0].structured_metadata = Labels::from_pairs([("trace_id", "abc")]);
                web
            },
        ];
        let names: HashSet<String> = ["app".to_string()].into();
        let detector = FieldDetector::new();
        let fields = detector.detect(&streams, &names, 100);
        let by_name: BTreeMap<&str, &DetectedField> = fields.iter().map(|f| (f.label.as_str(), f)).collect();
        assert_eq!(by_name["status"].field_type, FieldType::Int);
        assert_eq!(by_name["status"].cardinality, 2);
        assert_eq!(by_name["status"].parsers, ["json"]);
        assert_eq!(by_name["duration"].field_type, FieldType::Duration);
        assert_eq!(by_name["user_id"].cardinality, 2);
        assert_eq!(by_name["user_id"].json_path, ["user", "id"]);
        assert_eq!(by_name["status"].json_path, ["status"]);
        assert!(by_name["rows"].json_path.is_empty(), "logfmt fields have no JSON path");
        assert_eq!(by_name["rows"].parsers, ["logfmt"]);
        assert_eq!(by_name["size"].field_type, FieldType::Bytes);
        assert_eq!(by_name["level"].cardinality, 2);
        // A label the selected streams do not have is structured metadata:
        // a field, without a parser.
        assert!(by_name["trace_id"].parsers.is_empty());
        assert!(!by_name.contains_key("app"), "stream labels are not fields");
        assert!(!by_name.keys().any(|k| k.starts_with("__")), "{by_name:?}");

        let limited = detector.detect(&streams, &names, 2);
        assert_eq!(limited.len(), 2);
        let values = detector.values(&streams, &names, "status", 10);
        assert_eq!(values, ["200", "500"]);
    }
}
