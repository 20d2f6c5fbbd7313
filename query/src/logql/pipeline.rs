//! The log pipeline: what happens to one entry between the stream selector
//! and the result — line filters, parsers, label filters, formatting.
//!
//! Each entry starts with three sources of labels, as in Loki: the stream's
//! labels, the entry's structured metadata and, as parsers run, parsed
//! fields. When names clash the base name goes to stream > metadata >
//! parsed, and the value that lost (the latest loser wins the slot) goes to
//! `<name>_extracted`. A stage that fails on an entry (a parser on a
//! malformed line, a label filter that cannot convert a value) does not drop
//! it: it sets `__error__` (and `__error_details__`) and the entry moves on,
//! so that a later `| __error__=""` can drop it — or a metric query fails
//! with Loki's "pipeline error" when it reaches the result.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;

use regex::Regex;
use tidewatch_model::{Label, Labels, Matcher};

use super::ast::{
    CmpOp, LabelExtraction, LabelFilter, LabelFormat, LineFilter, LineFilterOp, LineFilterValue, LogExpr, NamedMatcher,
    Stage,
};
use super::{conv, json, template};
use crate::error::Error;

/// The label a failed stage sets.
pub const ERROR_LABEL: &str = "__error__";
/// The label holding the failure's details.
pub const ERROR_DETAILS_LABEL: &str = "__error_details__";
/// Loki's `__preserve_error__`: never produced here, but treated as special by `keep`.
pub(crate) const PRESERVE_ERROR_LABEL: &str = "__preserve_error__";
/// Appended to a parsed or metadata name that clashes with a higher-precedence source.
const DUPLICATE_SUFFIX: &str = "_extracted";
/// The key `unpack` reads the original line from.
const PACKED_ENTRY_KEY: &str = "_entry";

pub(crate) const ERR_JSON: &str = "JSONParserErr";
pub(crate) const ERR_LOGFMT: &str = "LogfmtParserErr";
pub(crate) const ERR_LABEL_FILTER: &str = "LabelFilterErr";
pub(crate) const ERR_SAMPLE_EXTRACTION: &str = "SampleExtractionErr";
pub(crate) const ERR_TEMPLATE: &str = "TemplateFormatErr";

/// Which source a label came from; the order is the base-name precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Metadata,
    Parsed,
}

/// The labels of one entry while it goes through the pipeline (Loki's
/// `LabelsBuilder`). Stream labels are borrowed; only what stages add,
/// change or delete is owned.
#[derive(Debug)]
pub(crate) struct LabelState<'s> {
    stream: &'s [Label],
    metadata: Vec<(String, String)>,
    parsed: Vec<(String, String)>,
    deleted: Vec<String>,
    error: String,
    error_details: String,
    /// Parsed names set so far: a later parser does not overwrite them
    /// (the first of two equal keys wins, and `json | logfmt` keeps json's).
    extracted: HashSet<String>,
    /// When recording (detected fields), each `| json` field's key path.
    json_paths: Option<Vec<(String, Vec<String>)>>,
}

impl<'s> LabelState<'s> {
    pub(crate) fn new(stream: &'s Labels, metadata: &Labels) -> Self {
        let mut state = LabelState {
            stream: stream.as_slice(),
            metadata: Vec::new(),
            parsed: Vec::new(),
            deleted: Vec::new(),
            error: String::new(),
            error_details: String::new(),
            extracted: HashSet::new(),
            json_paths: None,
        };
        for label in metadata {
            let name = if state.stream_has(&label.name) {
                format!("{}{DUPLICATE_SUFFIX}", label.name)
            } else {
                label.name.clone()
            };
            match name.as_str() {
                ERROR_LABEL => state.error = label.value.clone(),
                ERROR_DETAILS_LABEL => state.error_details = label.value.clone(),
                _ => state.set(Category::Metadata, name, label.value.clone()),
            }
        }
        state
    }

    fn stream_has(&self, name: &str) -> bool {
        self.stream.iter().any(|l| l.name == name)
    }

    fn metadata_has(&self, name: &str) -> bool {
        self.metadata.iter().any(|(n, _)| n == name)
    }

    /// Whether a parsed field named `name` must be renamed `<name>_extracted`.
    fn clashes(&self, name: &str) -> bool {
        self.stream_has(name) || self.metadata_has(name)
    }

    /// The value of `name` if the entry has that label (an empty value counts).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        for (n, v) in self.metadata.iter().chain(self.parsed.iter()) {
            if n == name {
                return Some(v);
            }
        }
        if self.deleted.iter().any(|d| d == name) {
            return None;
        }
        self.stream
            .iter()
            .find(|l| l.name == name && !l.value.is_empty())
            .map(|l| l.value.as_str())
    }

    /// What a string label filter compares: `__error__` reads the error, a
    /// missing label reads as "".
    fn filter_value(&self, name: &str) -> &str {
        if name == ERROR_LABEL {
            return &self.error;
        }
        self.get(name).unwrap_or("")
    }

    fn set(&mut self, category: Category, name: String, value: String) {
        match category {
            Category::Parsed => {
                self.metadata.retain(|(n, _)| *n != name);
                self.extracted.insert(name.clone());
                upsert(&mut self.parsed, name, value);
            }
            Category::Metadata => {
                if self.parsed.iter().any(|(n, _)| *n == name) {
                    return;
                }
                upsert(&mut self.metadata, name, value);
            }
        }
    }

    /// Sets a parsed field unless an earlier parser already did.
    fn set_parsed_once(&mut self, name: String, value: String) {
        if !self.extracted.contains(&name) {
            self.set(Category::Parsed, name, value);
        }
    }

    fn delete(&mut self, name: &str) {
        self.metadata.retain(|(n, _)| n != name);
        self.parsed.retain(|(n, _)| n != name);
        self.deleted.push(name.to_string());
    }

    /// Records the key path of every field `| json` sets (see [`LabelState::json_path`]).
    pub(crate) fn record_json_paths(&mut self) {
        self.json_paths = Some(Vec::new());
    }

    /// The JSON keys a field came from (`["user", "id"]` for `user_id`),
    /// when paths are recorded.
    pub(crate) fn json_path(&self, name: &str) -> Option<&[String]> {
        self.json_paths
            .as_ref()?
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, path)| path.as_slice())
    }

    /// The fields parsers set, in the order they were set.
    pub(crate) fn parsed_fields(&self) -> impl Iterator<Item = (&String, &String)> {
        self.parsed.iter().map(|(n, v)| (n, v))
    }

    pub(crate) fn has_error(&self) -> bool {
        !self.error.is_empty()
    }

    /// Whether the entry's labels are still exactly the stream's: no
    /// metadata, nothing parsed, deleted or failed. Such entries of one
    /// stream share their result labels, which callers compute once.
    pub(crate) fn is_untouched(&self) -> bool {
        self.metadata.is_empty()
            && self.parsed.is_empty()
            && self.deleted.is_empty()
            && self.error.is_empty()
            && self.error_details.is_empty()
    }

    pub(crate) fn set_error(&mut self, error: &str, details: Option<String>) {
        self.error = error.to_string();
        if let Some(details) = details {
            self.error_details = details;
        }
    }

    /// Every label the entry has now, sorted by name (values may be empty:
    /// `--keep-empty` and missing JSON paths produce such labels, and Loki
    /// reports them).
    pub(crate) fn labels(&self) -> Labels {
        let mut pairs: Vec<Label> = Vec::with_capacity(self.stream.len() + self.metadata.len() + self.parsed.len() + 2);
        for label in self.stream {
            let overridden = self.deleted.contains(&label.name)
                || self.metadata_has(&label.name)
                || self.parsed.iter().any(|(n, _)| *n == label.name);
            if !overridden {
                pairs.push(label.clone());
            }
        }
        for (name, value) in &self.metadata {
            if !self.parsed.iter().any(|(n, _)| n == name) {
                pairs.push(Label::new(name.clone(), value.clone()));
            }
        }
        for (name, value) in &self.parsed {
            pairs.push(Label::new(name.clone(), value.clone()));
        }
        if !self.error.is_empty() {
            pairs.push(Label::new(ERROR_LABEL, self.error.clone()));
        }
        if !self.error_details.is_empty() {
            pairs.push(Label::new(ERROR_DETAILS_LABEL, self.error_details.clone()));
        }
        sorted_labels(pairs)
    }

    /// The labels kept by a range aggregation's grouping (`by`/`without`),
    /// or all of them when the entry failed, so the error is never lost.
    pub(crate) fn grouped_labels(&self, grouping: &Grouping) -> Labels {
        if self.has_error() {
            return self.labels();
        }
        match grouping {
            Grouping::All => self.labels(),
            Grouping::By(names) => {
                let mut pairs = Vec::with_capacity(names.len());
                for name in names {
                    if let Some(value) = self.get(name) {
                        pairs.push(Label::new(name.clone(), value));
                    }
                }
                sorted_labels(pairs)
            }
            Grouping::Without(names) => {
                let all = self.labels();
                let kept: Vec<Label> = all.iter().filter(|l| !names.contains(&l.name)).cloned().collect();
                Labels::from_sorted(kept)
            }
        }
    }
}

/// Which labels a sample keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grouping {
    All,
    By(Vec<String>),
    Without(Vec<String>),
}

/// Sorts pairs by name; of equal names the first pushed is kept.
fn sorted_labels(mut pairs: Vec<Label>) -> Labels {
    pairs.sort_by(|a, b| a.name.cmp(&b.name));
    pairs.dedup_by(|later, earlier| later.name == earlier.name);
    // `from_sorted` keeps empty values, which result labels may carry.
    Labels::from_sorted(pairs)
}

fn upsert(pairs: &mut Vec<(String, String)>, name: String, value: String) {
    match pairs.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => pairs.push((name, value)),
    }
}

/// Loki's label-key sanitizing: trimmed, a leading digit prefixed with `_`,
/// anything but `[a-zA-Z0-9_]` replaced by `_`.
fn sanitize_key(key: &str) -> String {
    let key = key.trim();
    let mut out = String::with_capacity(key.len() + 1);
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    for c in key.chars() {
        out.push(if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' });
    }
    out
}

/// A compiled pipeline, ready to run over entries.
/// Substrings every line a regex (unanchored, Rust/RE2 syntax as the
/// filter compiles it) matches must contain: the literal parts of its
/// top-level sequence, looking through groups and repeats of at least one.
/// `status=5[0-9]{2}` gives `status=5`; an alternation or a
/// case-insensitive part gives nothing for that part, which only means less
/// narrowing.
fn required_substrings(pattern: &str) -> Vec<String> {
    fn collect(hir: &regex_syntax::hir::Hir, out: &mut Vec<String>) {
        use regex_syntax::hir::HirKind;
        match hir.kind() {
            HirKind::Literal(literal) => {
                if let Ok(text) = std::str::from_utf8(&literal.0) {
                    out.push(text.to_string());
                }
            }
            HirKind::Concat(parts) => parts.iter().for_each(|part| collect(part, out)),
            HirKind::Capture(capture) => collect(&capture.sub, out),
            HirKind::Repetition(repetition) if repetition.min >= 1 => collect(&repetition.sub, out),
            _ => {}
        }
    }
    let Ok(hir) = regex_syntax::Parser::new().parse(pattern) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    collect(&hir, &mut out);
    out.retain(|text| !text.is_empty());
    out
}

#[derive(Debug)]
pub(crate) struct Pipeline {
    stages: Vec<CompiledStage>,
    /// The query's evaluation time (ns): what templates' `now` returns.
    now: i64,
    /// `|= "text"` filters answered by storage (see [`Pipeline::compile`]).
    pushed_down: Vec<String>,
}

impl Pipeline {
    /// Compiles `log`'s stages. Plain `|= "text"` filters that come before
    /// any parser or line-changing stage are taken out of the pipeline and
    /// handed to storage ([`Pipeline::line_contains`]), which answers them
    /// from its index and verifies them on the line, so results are the same.
    /// `now` (ns) is the query's evaluation time, what templates' `now` returns.
    pub(crate) fn compile(log: &LogExpr, now: i64) -> Result<Pipeline, Error> {
        let mut stages = Vec::with_capacity(log.pipeline.len());
        let mut pushed_down = Vec::new();
        let mut pushable = true;
        for stage in &log.pipeline {
            if pushable
                && let Stage::LineFilter(LineFilter {
                    op: LineFilterOp::Contains,
                    values,
                }) = stage
                && let [LineFilterValue::Text(text)] = values.as_slice()
            {
                pushed_down.push(text.clone());
                continue;
            }
            // A regex stays in the pipeline, but the literals every match
            // holds go to storage too, so the index narrows the rows read
            // and lines without them are dropped before they are copied.
            if pushable
                && let Stage::LineFilter(LineFilter {
                    op: LineFilterOp::Regex,
                    values,
                }) = stage
                && let [LineFilterValue::Text(pattern)] = values.as_slice()
            {
                pushed_down.extend(required_substrings(pattern));
            }
            if !matches!(stage, Stage::LineFilter(_) | Stage::LabelFilter(_)) {
                pushable = false;
            }
            stages.push(CompiledStage::compile(stage)?);
        }
        Ok(Pipeline {
            stages,
            now,
            pushed_down,
        })
    }

    /// The substrings storage must find in every line it hands over: the
    /// `|= "text"` filters taken out of the pipeline, and the literals of
    /// `|~` regexes that stay in it.
    pub(crate) fn line_contains(&self) -> &[String] {
        &self.pushed_down
    }

    /// Runs the stages over one entry: `None` when a stage drops it,
    /// otherwise the (possibly rewritten) line; labels are in `state`.
    pub(crate) fn process<'e>(
        &self,
        timestamp: i64,
        line: &'e str,
        state: &mut LabelState<'_>,
    ) -> Option<Cow<'e, str>> {
        let mut current = Cow::Borrowed(line);
        for stage in &self.stages {
            if !stage.process(timestamp, self.now, &mut current, state) {
                return None;
            }
        }
        Some(current)
    }

    /// Runs post-`unwrap` label filters.
    pub(crate) fn filter_only(filters: &[CompiledLabelFilter], state: &mut LabelState<'_>) -> bool {
        filters.iter().all(|f| f.process(state))
    }
}

#[derive(Debug)]
enum CompiledStage {
    LineFilter {
        negated: bool,
        alternatives: Vec<LineMatch>,
    },
    Logfmt {
        strict: bool,
        keep_empty: bool,
    },
    LogfmtExpressions {
        strict: bool,
        expressions: Vec<LabelExtraction>,
    },
    Json,
    JsonExpressions(Vec<(String, Vec<json::PathStep>)>),
    Regexp {
        regex: Regex,
        names: Vec<(usize, String)>,
    },
    Pattern(PatternMatcher),
    Unpack,
    LabelFilter(CompiledLabelFilter),
    LineFormat(template::Template),
    LabelFormat(Vec<CompiledLabelFormat>),
    Decolorize(Regex),
    Drop(Vec<NamedMatcher>),
    Keep(Vec<NamedMatcher>),
}

#[derive(Debug)]
enum CompiledLabelFormat {
    Rename { dst: String, src: String },
    Template { dst: String, template: template::Template },
}

#[derive(Debug)]
enum LineMatch {
    Contains(String),
    Regex(Regex),
    Pattern(PatternMatcher),
    Ip(IpFilter),
}

impl LineMatch {
    fn matches(&self, line: &str) -> bool {
        match self {
            LineMatch::Contains(text) => line.contains(text.as_str()),
            LineMatch::Regex(regex) => regex.is_match(line),
            LineMatch::Pattern(pattern) => pattern.test(line),
            LineMatch::Ip(filter) => filter.find_in(line),
        }
    }
}

/// A stage's error at compile time: Loki reports these as parse errors of the stage.
fn stage_error(stage: &Stage, message: impl std::fmt::Display) -> Error {
    Error::bad_data(format!("parse error : stage '{stage}' : {message}"))
}

impl CompiledStage {
    fn compile(stage: &Stage) -> Result<CompiledStage, Error> {
        Ok(match stage {
            Stage::LineFilter(filter) => {
                let negated = matches!(
                    filter.op,
                    LineFilterOp::NotContains | LineFilterOp::NotRegex | LineFilterOp::NotPattern
                );
                let mut alternatives = Vec::with_capacity(filter.values.len());
                for value in &filter.values {
                    alternatives.push(match value {
                        LineFilterValue::Ip(pattern) => {
                            LineMatch::Ip(IpFilter::new(pattern).map_err(|e| stage_error(stage, e))?)
                        }
                        LineFilterValue::Text(text) => match filter.op {
                            LineFilterOp::Contains | LineFilterOp::NotContains => LineMatch::Contains(text.clone()),
                            LineFilterOp::Regex | LineFilterOp::NotRegex => LineMatch::Regex(
                                Regex::new(text).map_err(|e| Error::bad_data(format!("parse error : {e}")))?,
                            ),
                            LineFilterOp::Pattern | LineFilterOp::NotPattern => {
                                let pattern = PatternMatcher::new(text).map_err(|e| stage_error(stage, e))?;
                                // A line filter only tests the shape: `<_>` alone.
                                if let Some(name) = pattern.names.first() {
                                    return Err(stage_error(
                                        stage,
                                        format!("named captures are not allowed: found '<{name}>'"),
                                    ));
                                }
                                LineMatch::Pattern(pattern)
                            }
                        },
                    });
                }
                CompiledStage::LineFilter { negated, alternatives }
            }
            Stage::Logfmt {
                strict,
                keep_empty,
                extractions,
            } => {
                if extractions.is_empty() {
                    CompiledStage::Logfmt {
                        strict: *strict,
                        keep_empty: *keep_empty,
                    }
                } else {
                    CompiledStage::LogfmtExpressions {
                        strict: *strict,
                        expressions: extractions.clone(),
                    }
                }
            }
            Stage::Json { extractions } => {
                if extractions.is_empty() {
                    CompiledStage::Json
                } else {
                    let mut paths = Vec::with_capacity(extractions.len());
                    for extraction in extractions {
                        let path = json::parse_path(&extraction.expression).map_err(|e| stage_error(stage, e))?;
                        paths.push((extraction.label.clone(), path));
                    }
                    CompiledStage::JsonExpressions(paths)
                }
            }
            Stage::Regexp(pattern) => {
                let regex = Regex::new(pattern).map_err(|e| stage_error(stage, e))?;
                let names = regex
                    .capture_names()
                    .enumerate()
                    .filter_map(|(i, name)| name.map(|n| (i, n.to_string())))
                    .collect();
                CompiledStage::Regexp { regex, names }
            }
            Stage::Pattern(pattern) => {
                CompiledStage::Pattern(PatternMatcher::new(pattern).map_err(|e| stage_error(stage, e))?)
            }
            Stage::Unpack => CompiledStage::Unpack,
            Stage::LabelFilter(filter) => CompiledStage::LabelFilter(CompiledLabelFilter::compile(filter)?),
            Stage::LineFormat(text) => CompiledStage::LineFormat(
                template::Template::parse(text)
                    .map_err(|e| stage_error(stage, format!("invalid line template: {e}")))?,
            ),
            Stage::LabelFormat(formats) => {
                let mut compiled = Vec::with_capacity(formats.len());
                let mut names: Vec<&str> = Vec::with_capacity(formats.len());
                for format in formats {
                    let (LabelFormat::Rename { dst, .. } | LabelFormat::Template { dst, .. }) = format;
                    // Renaming and rewriting one label in one stage would be ambiguous.
                    if dst == ERROR_LABEL {
                        return Err(stage_error(stage, format!("{dst} cannot be formatted")));
                    }
                    if names.contains(&dst.as_str()) {
                        return Err(stage_error(
                            stage,
                            format!("multiple label name '{dst}' not allowed in a single format operation"),
                        ));
                    }
                    names.push(dst);
                    compiled.push(match format {
                        LabelFormat::Rename { dst, src } => CompiledLabelFormat::Rename {
                            dst: dst.clone(),
                            src: src.clone(),
                        },
                        LabelFormat::Template { dst, template } => CompiledLabelFormat::Template {
                            dst: dst.clone(),
                            template: template::Template::parse_label(template)
                                .map_err(|e| stage_error(stage, format!("invalid template for label '{dst}': {e}")))?,
                        },
                    });
                }
                CompiledStage::LabelFormat(compiled)
            }
            Stage::Decolorize => CompiledStage::Decolorize(ansi_regex()),
            Stage::Drop(items) => CompiledStage::Drop(items.clone()),
            Stage::Keep(items) => CompiledStage::Keep(items.clone()),
        })
    }

    fn process(&self, timestamp: i64, now: i64, line: &mut Cow<'_, str>, state: &mut LabelState<'_>) -> bool {
        match self {
            CompiledStage::LineFilter { negated, alternatives } => {
                let any = alternatives.iter().any(|m| m.matches(line));
                any != *negated
            }
            CompiledStage::Logfmt { strict, keep_empty } => {
                parse_logfmt(line, *strict, *keep_empty, state);
                true
            }
            CompiledStage::LogfmtExpressions { strict, expressions } => {
                parse_logfmt_expressions(line, *strict, expressions, state);
                true
            }
            CompiledStage::Json => {
                parse_json(line, state);
                true
            }
            CompiledStage::JsonExpressions(paths) => {
                parse_json_expressions(line, paths, state);
                true
            }
            CompiledStage::Regexp { regex, names } => {
                if let Some(captures) = regex.captures(line) {
                    for (index, name) in names {
                        let value = captures.get(*index).map_or("", |m| m.as_str()).to_string();
                        let mut key = sanitize_key(name);
                        if key.is_empty() {
                            continue;
                        }
                        if state.clashes(&key) {
                            key.push_str(DUPLICATE_SUFFIX);
                        }
                        state.set_parsed_once(key, value);
                    }
                }
                true
            }
            CompiledStage::Pattern(pattern) => {
                let captures = pattern.matches(line);
                for (name, value) in pattern.names.iter().zip(captures) {
                    let mut key = name.clone();
                    if state.clashes(&key) {
                        key.push_str(DUPLICATE_SUFFIX);
                    }
                    state.set_parsed_once(key, value.to_string());
                }
                true
            }
            CompiledStage::Unpack => {
                if let Some(entry) = unpack(line, state) {
                    *line = Cow::Owned(entry);
                }
                true
            }
            CompiledStage::LabelFilter(filter) => filter.process(state),
            CompiledStage::LineFormat(template) => {
                match template.render(&template_data(timestamp, now, line, state)) {
                    Ok(text) => *line = Cow::Owned(text),
                    Err(message) => state.set_error(ERR_TEMPLATE, Some(message)),
                }
                true
            }
            CompiledStage::LabelFormat(formats) => {
                // Loki's order: renames apply at once; templates all see the
                // labels as they were when the first template ran.
                let mut data: Option<template::TemplateData<'_>> = None;
                for format in formats {
                    match format {
                        CompiledLabelFormat::Rename { dst, src } => {
                            if let Some(value) = state.get(src).map(str::to_string) {
                                state.set(Category::Parsed, dst.clone(), value);
                                state.delete(src);
                            }
                        }
                        CompiledLabelFormat::Template { dst, template } => {
                            let data = data.get_or_insert_with(|| template_data(timestamp, now, line, state));
                            match template.render(data) {
                                Ok(value) => state.set(Category::Parsed, dst.clone(), value),
                                Err(message) => state.set_error(ERR_TEMPLATE, Some(message)),
                            }
                        }
                    }
                }
                true
            }
            CompiledStage::Decolorize(regex) => {
                if regex.is_match(line) {
                    *line = Cow::Owned(regex.replace_all(line, "").into_owned());
                }
                true
            }
            CompiledStage::Drop(items) => {
                for item in items {
                    match item {
                        NamedMatcher::Name(name) => match name.as_str() {
                            ERROR_LABEL => state.error.clear(),
                            ERROR_DETAILS_LABEL => state.error_details.clear(),
                            _ => {
                                if state.get(name).is_some() {
                                    state.delete(name);
                                }
                            }
                        },
                        NamedMatcher::Matcher(matcher) => match matcher.name.as_str() {
                            ERROR_LABEL => {
                                if matcher.matches(&state.error) {
                                    state.error.clear();
                                }
                            }
                            ERROR_DETAILS_LABEL => {
                                if matcher.matches(&state.error_details) {
                                    state.error_details.clear();
                                }
                            }
                            name => {
                                if matcher.matches(state.get(name).unwrap_or("")) {
                                    state.delete(name);
                                }
                            }
                        },
                    }
                }
                true
            }
            CompiledStage::Keep(items) => {
                let current = state.labels();
                for label in &current {
                    if matches!(
                        label.name.as_str(),
                        ERROR_LABEL | ERROR_DETAILS_LABEL | PRESERVE_ERROR_LABEL
                    ) {
                        continue;
                    }
                    let keep = items.iter().any(|item| match item {
                        NamedMatcher::Name(name) => *name == label.name,
                        NamedMatcher::Matcher(m) => m.name == label.name && m.matches(&label.value),
                    });
                    if !keep {
                        state.delete(&label.name);
                    }
                }
                true
            }
        }
    }
}

/// ANSI escape sequences, as `decolorize` strips them.
fn ansi_regex() -> Regex {
    const ANSI: &str = "[\u{1b}\u{9b}][\\[\\]()#;?]*(?:(?:(?:[a-zA-Z\\d]*(?:;[a-zA-Z\\d]*)*)?\u{7})|(?:(?:\\d{1,4}(?:;\\d{0,4})*)?[\\dA-PRZcf-ntqry=><~]))";
    Regex::new(ANSI).unwrap_or_else(|_| unreachable!("the ANSI pattern is valid"))
}

fn template_data<'a>(timestamp: i64, now: i64, line: &'a str, state: &LabelState<'_>) -> template::TemplateData<'a> {
    template::TemplateData {
        line,
        timestamp,
        labels: state.labels(),
        now,
    }
}

// ---------------------------------------------------------------------------
// Parsers.

/// One key/value pair of a logfmt line, Loki's decoder rules (also what
/// the pattern tokenizer reads logfmt lines with).
pub(crate) struct LogfmtDecoder<'a> {
    line: &'a str,
    at: usize,
    /// The syntax error that ended decoding, in Loki's words.
    pub(crate) error: Option<String>,
}

impl<'a> LogfmtDecoder<'a> {
    pub(crate) fn new(line: &'a str) -> Self {
        LogfmtDecoder {
            line,
            at: 0,
            error: None,
        }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.at >= self.line.len()
    }

    fn syntax_error(&mut self, message: String) {
        self.error = Some(format!("logfmt syntax error at pos {} : {message}", self.at + 1));
    }

    /// Skips to the end of the current value after an error.
    fn skip_value(&mut self) {
        let bytes = self.line.as_bytes();
        while self.at < bytes.len() && bytes[self.at] > b' ' {
            self.at += 1;
        }
    }

    /// The next pair: `Some((key, value))`, or `None` when the pair was malformed
    /// (or only spaces were left).
    pub(crate) fn next_pair(&mut self) -> Option<(&'a str, Cow<'a, str>)> {
        let bytes = self.line.as_bytes();
        while self.at < bytes.len() && bytes[self.at] <= b' ' {
            self.at += 1;
        }
        if self.at >= bytes.len() {
            return None;
        }
        let start = self.at;
        while self.at < bytes.len() {
            let c = bytes[self.at];
            if c == b'=' {
                if self.at == start {
                    self.syntax_error("unexpected '='".to_string());
                    self.skip_value();
                    return None;
                }
                let key = &self.line[start..self.at];
                self.at += 1;
                return self.value(key);
            }
            if c == b'"' {
                self.syntax_error("unexpected '\"'".to_string());
                self.skip_value();
                return None;
            }
            if c <= b' ' {
                return Some((&self.line[start..self.at], Cow::Borrowed("")));
            }
            self.at += 1;
        }
        Some((&self.line[start..], Cow::Borrowed("")))
    }

    fn value(&mut self, key: &'a str) -> Option<(&'a str, Cow<'a, str>)> {
        let bytes = self.line.as_bytes();
        match bytes.get(self.at) {
            None => return Some((key, Cow::Borrowed(""))),
            Some(&c) if c <= b' ' => return Some((key, Cow::Borrowed(""))),
            Some(b'"') => return self.quoted(key),
            _ => {}
        }
        let start = self.at;
        while self.at < bytes.len() {
            let c = bytes[self.at];
            if c == b'=' || c == b'"' {
                self.syntax_error(format!("unexpected {}", go_quote_byte(c)));
                self.skip_value();
                return None;
            }
            if c <= b' ' {
                break;
            }
            self.at += 1;
        }
        Some((key, Cow::Borrowed(&self.line[start..self.at])))
    }

    fn quoted(&mut self, key: &'a str) -> Option<(&'a str, Cow<'a, str>)> {
        let bytes = self.line.as_bytes();
        let start = self.at;
        let mut escaped = false;
        let mut has_escape = false;
        let mut at = self.at + 1;
        while at < bytes.len() {
            let c = bytes[at];
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
                has_escape = true;
            } else if c == b'"' {
                self.at = at + 1;
                let inner = &self.line[start + 1..at];
                if !has_escape {
                    return Some((key, Cow::Borrowed(inner)));
                }
                return match unquote(inner) {
                    Some(value) => Some((key, Cow::Owned(value))),
                    None => {
                        self.syntax_error("invalid quoted value".to_string());
                        None
                    }
                };
            }
            at += 1;
        }
        self.at = bytes.len();
        self.syntax_error("unterminated quoted value".to_string());
        None
    }
}

fn go_quote_byte(c: u8) -> String {
    match c {
        b'"' => "'\"'".to_string(),
        c => format!("'{}'", c as char),
    }
}

/// Go's `strconv.Unquote` for the inside of a double-quoted string (the
/// common escapes; anything else makes the value invalid).
fn unquote(inner: &str) -> Option<String> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

fn parse_logfmt(line: &str, strict: bool, keep_empty: bool, state: &mut LabelState<'_>) {
    let mut decoder = LogfmtDecoder::new(line);
    while !decoder.at_end() {
        let Some((key, value)) = decoder.next_pair() else {
            if strict && decoder.error.is_some() {
                break;
            }
            continue;
        };
        let mut name = sanitize_key(key);
        if name.is_empty() {
            continue;
        }
        if state.clashes(&name) {
            name.push_str(DUPLICATE_SUFFIX);
        }
        if !keep_empty && value.is_empty() {
            continue;
        }
        state.set_parsed_once(name, value.into_owned());
    }
    if strict && let Some(error) = decoder.error {
        state.set_error(ERR_LOGFMT, Some(error));
    }
}

fn parse_logfmt_expressions(line: &str, strict: bool, expressions: &[LabelExtraction], state: &mut LabelState<'_>) {
    for extraction in expressions {
        if !state.clashes(&extraction.label) {
            state.set(Category::Parsed, extraction.label.clone(), String::new());
        }
    }
    let mut decoder = LogfmtDecoder::new(line);
    while !decoder.at_end() {
        let Some((key, value)) = decoder.next_pair() else {
            if strict && decoder.error.is_some() {
                break;
            }
            continue;
        };
        let key = sanitize_key(key);
        for extraction in expressions.iter().filter(|e| e.expression == key) {
            let mut name = extraction.label.clone();
            if state.clashes(&name) {
                name.push_str(DUPLICATE_SUFFIX);
            }
            state.set(Category::Parsed, name, value.to_string());
        }
    }
    if strict && let Some(error) = decoder.error {
        state.set_error(ERR_LOGFMT, Some(error));
    }
}

fn parse_json(line: &str, state: &mut LabelState<'_>) {
    match json::parse(line) {
        Ok(json::JsonValue::Object { members, .. }) => {
            let mut prefix = Vec::new();
            extract_json_members(&members, &mut prefix, state);
        }
        Ok(_) => state.set_error(ERR_JSON, Some("Value is not an object".to_string())),
        Err(message) => state.set_error(ERR_JSON, Some(message)),
    }
}

/// Flattens an object into labels: nested keys joined with `_`, arrays and
/// nulls skipped, numbers as written, booleans as `true`/`false`.
fn extract_json_members(
    members: &[(String, json::JsonValue<'_>)],
    prefix: &mut Vec<String>,
    state: &mut LabelState<'_>,
) {
    for (key, value) in members {
        let text = match value {
            json::JsonValue::String(s) => s.clone(),
            json::JsonValue::Number(n) => (*n).to_string(),
            json::JsonValue::Bool(b) => b.to_string(),
            json::JsonValue::Object { members: inner, .. } => {
                prefix.push(key.clone());
                extract_json_members(inner, prefix, state);
                prefix.pop();
                continue;
            }
            json::JsonValue::Null | json::JsonValue::Array { .. } => continue,
        };
        let mut name = String::new();
        for part in prefix.iter().chain(std::iter::once(key)) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if !name.is_empty() {
                name.push('_');
            }
            if name.is_empty() {
                name.push_str(&sanitize_key(part));
            } else {
                name.extend(
                    part.chars()
                        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }),
                );
            }
        }
        if name.is_empty() {
            continue;
        }
        if state.clashes(&name) {
            name.push_str(DUPLICATE_SUFFIX);
        }
        if let Some(paths) = &mut state.json_paths
            && !state.extracted.contains(&name)
        {
            let path = prefix.iter().chain(std::iter::once(key)).cloned().collect();
            paths.push((name.clone(), path));
        }
        state.set_parsed_once(name, text);
    }
}

fn parse_json_expressions(line: &str, paths: &[(String, Vec<json::PathStep>)], state: &mut LabelState<'_>) {
    if line.is_empty() {
        return;
    }
    if !line.starts_with(['"', '{', '[']) {
        state.set_error(ERR_JSON, None);
        return;
    }
    let root = match json::parse(line) {
        Ok(root) => root,
        Err(message) => {
            state.set_error(ERR_JSON, Some(message));
            return;
        }
    };
    for (label, path) in paths {
        let Some(value) = json::lookup(&root, path) else {
            if state.get(label).is_none() {
                state.set(Category::Parsed, label.clone(), String::new());
            }
            continue;
        };
        let text = match value {
            json::JsonValue::Null => String::new(),
            json::JsonValue::String(s) => s.clone(),
            json::JsonValue::Number(n) => (*n).to_string(),
            json::JsonValue::Bool(b) => b.to_string(),
            json::JsonValue::Object { raw, .. } | json::JsonValue::Array { raw, .. } => (*raw).to_string(),
        };
        let mut name = label.clone();
        if state.clashes(&name) {
            name.push_str(DUPLICATE_SUFFIX);
        }
        state.set(Category::Parsed, name, text);
    }
}

/// `unpack`: promotes the string fields of a JSON object; `_entry` replaces
/// the line. As in Loki, fields are promoted only when `_entry` is present.
fn unpack(line: &str, state: &mut LabelState<'_>) -> Option<String> {
    if line.is_empty() {
        return None;
    }
    if !line.starts_with('{') {
        state.set_error(ERR_JSON, Some("expecting json object(6), but it is not".to_string()));
        return None;
    }
    let members = match json::parse(line) {
        Ok(json::JsonValue::Object { members, .. }) => members,
        Ok(_) => return None,
        Err(message) => {
            state.set_error(ERR_JSON, Some(message));
            return None;
        }
    };
    let mut entry = None;
    let mut promoted = Vec::new();
    for (key, value) in members {
        let json::JsonValue::String(text) = value else {
            continue;
        };
        if key == PACKED_ENTRY_KEY {
            entry = Some(text);
            continue;
        }
        let mut name = key;
        if state.clashes(&name) {
            name.push_str(DUPLICATE_SUFFIX);
        }
        if state.extracted.contains(&name) {
            continue;
        }
        promoted.push((sanitize_key(&name), text));
    }
    let entry = entry?;
    for (name, value) in promoted {
        state.set(Category::Parsed, name, value);
    }
    Some(entry)
}

// ---------------------------------------------------------------------------
// Label filters.

/// A compiled label filter.
#[derive(Debug)]
pub(crate) enum CompiledLabelFilter {
    String(Matcher),
    Ip {
        name: String,
        negated: bool,
        filter: IpFilter,
    },
    Duration {
        name: String,
        op: CmpOp,
        nanos: i64,
    },
    Bytes {
        name: String,
        op: CmpOp,
        bytes: u64,
    },
    Number {
        name: String,
        op: CmpOp,
        value: f64,
    },
    And(Box<CompiledLabelFilter>, Box<CompiledLabelFilter>),
    Or(Box<CompiledLabelFilter>, Box<CompiledLabelFilter>),
}

fn compare<T: PartialOrd>(op: CmpOp, left: T, right: T) -> bool {
    match op {
        CmpOp::Eq => left == right,
        CmpOp::Ne => left != right,
        CmpOp::Gt => left > right,
        CmpOp::Ge => left >= right,
        CmpOp::Lt => left < right,
        CmpOp::Le => left <= right,
    }
}

impl CompiledLabelFilter {
    pub(crate) fn compile(filter: &LabelFilter) -> Result<CompiledLabelFilter, Error> {
        Ok(match filter {
            LabelFilter::Matcher(m) => CompiledLabelFilter::String(m.clone()),
            LabelFilter::Ip { name, negated, pattern } => CompiledLabelFilter::Ip {
                name: name.clone(),
                negated: *negated,
                filter: IpFilter::new(pattern).map_err(Error::bad_data)?,
            },
            LabelFilter::Duration { name, op, value } => CompiledLabelFilter::Duration {
                name: name.clone(),
                op: *op,
                nanos: value.as_nanos(),
            },
            LabelFilter::Bytes { name, op, value } => CompiledLabelFilter::Bytes {
                name: name.clone(),
                op: *op,
                bytes: *value,
            },
            LabelFilter::Number { name, op, value } => CompiledLabelFilter::Number {
                name: name.clone(),
                op: *op,
                value: *value,
            },
            LabelFilter::And { left, right, .. } => {
                CompiledLabelFilter::And(Box::new(Self::compile(left)?), Box::new(Self::compile(right)?))
            }
            LabelFilter::Or { left, right } => {
                CompiledLabelFilter::Or(Box::new(Self::compile(left)?), Box::new(Self::compile(right)?))
            }
        })
    }

    /// Whether the entry passes. A value that does not convert keeps the
    /// entry and sets `LabelFilterErr` (unless an error is already set).
    pub(crate) fn process(&self, state: &mut LabelState<'_>) -> bool {
        match self {
            CompiledLabelFilter::String(matcher) => matcher.matches(state.filter_value(&matcher.name)),
            CompiledLabelFilter::Ip { name, negated, filter } => {
                if state.has_error() {
                    return true;
                }
                match state.get(name) {
                    None => false,
                    Some(value) => filter.find_in(value) != *negated,
                }
            }
            CompiledLabelFilter::Duration { name, op, nanos } => {
                Self::convert_and_compare(state, name, conv::parse_duration, |v| compare(*op, v, *nanos))
            }
            CompiledLabelFilter::Bytes { name, op, bytes } => {
                Self::convert_and_compare(state, name, conv::parse_bytes_value, |v| compare(*op, v, *bytes))
            }
            CompiledLabelFilter::Number { name, op, value } => {
                Self::convert_and_compare(state, name, conv::parse_float, |v| compare(*op, v, *value))
            }
            CompiledLabelFilter::And(left, right) => {
                let left_ok = left.process(state);
                let right_ok = right.process(state);
                left_ok && right_ok
            }
            CompiledLabelFilter::Or(left, right) => left.process(state) || right.process(state),
        }
    }

    fn convert_and_compare<T>(
        state: &mut LabelState<'_>,
        name: &str,
        convert: fn(&str) -> Result<T, String>,
        test: impl Fn(T) -> bool,
    ) -> bool {
        let Some(text) = state.get(name) else {
            return false;
        };
        match convert(text) {
            Ok(value) => test(value),
            Err(details) => {
                if !state.has_error() {
                    state.set_error(ERR_LABEL_FILTER, Some(details));
                }
                true
            }
        }
    }
}

/// Parses `| unwrap` post filters.
pub(crate) fn compile_filters(filters: &[LabelFilter]) -> Result<Vec<CompiledLabelFilter>, Error> {
    filters.iter().map(CompiledLabelFilter::compile).collect()
}

// ---------------------------------------------------------------------------
// ip().

/// What `ip("…")` matches: one address, a CIDR prefix or an inclusive range.
#[derive(Debug, Clone)]
pub(crate) enum IpFilter {
    Address(IpAddr),
    Prefix { network: IpAddr, bits: u8 },
    Range { low: IpAddr, high: IpAddr },
}

impl IpFilter {
    pub(crate) fn new(pattern: &str) -> Result<IpFilter, String> {
        let invalid = || format!("ip: invalid pattern: {}", conv::go_quote(pattern));
        if let Ok(address) = pattern.parse::<IpAddr>() {
            return Ok(IpFilter::Address(address));
        }
        if let Some((address, bits)) = pattern.split_once('/') {
            let network: IpAddr = address.parse().map_err(|_| invalid())?;
            let bits: u8 = bits.parse().map_err(|_| invalid())?;
            let max = if network.is_ipv4() { 32 } else { 128 };
            if bits > max || bits.to_string().len() != pattern.len() - address.len() - 1 {
                return Err(invalid());
            }
            return Ok(IpFilter::Prefix { network, bits });
        }
        if let Some((low, high)) = pattern.split_once('-') {
            let low: IpAddr = low.parse().map_err(|_| invalid())?;
            let high: IpAddr = high.parse().map_err(|_| invalid())?;
            if low.is_ipv4() != high.is_ipv4() || to_bits(high) < to_bits(low) {
                return Err(invalid());
            }
            return Ok(IpFilter::Range { low, high });
        }
        Err(invalid())
    }

    fn contains(&self, address: IpAddr) -> bool {
        match *self {
            IpFilter::Address(a) => a == address,
            IpFilter::Prefix { network, bits } => {
                if network.is_ipv4() != address.is_ipv4() {
                    return false;
                }
                let width = if network.is_ipv4() { 32 } else { 128 };
                let shift = width - u32::from(bits);
                if shift >= 128 {
                    return true;
                }
                (to_bits(network) >> shift) == (to_bits(address) >> shift)
            }
            IpFilter::Range { low, high } => {
                low.is_ipv4() == address.is_ipv4()
                    && to_bits(low) <= to_bits(address)
                    && to_bits(address) <= to_bits(high)
            }
        }
    }

    /// Whether any address in `text` is matched: Loki scans the text for
    /// runs that look like an address rather than parsing the whole value.
    pub(crate) fn find_in(&self, text: &str) -> bool {
        const V4: &[u8] = b"0123456789.";
        const V6: &[u8] = b"0123456789abcdefABCDEF:.";
        let bytes = text.as_bytes();
        let n = bytes.len();
        let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
        let hex = |b: u8| b.is_ascii_hexdigit();
        let mut i = 0;
        while i < n {
            let charset = if i + 3 < n
                && bytes[i].is_ascii_digit()
                && (bytes[i + 1] == b'.' || bytes[i + 2] == b'.' || bytes[i + 3] == b'.')
            {
                Some(V4)
            } else {
                let p = [at(i), at(i + 1), at(i + 2), at(i + 3), at(i + 4)];
                let v6 = (p[0] == b':' && p[1] == b':' && hex(p[2]))
                    || (hex(p[0]) && p[1] == b':')
                    || (hex(p[0]) && hex(p[1]) && p[2] == b':')
                    || (hex(p[0]) && hex(p[1]) && hex(p[2]) && p[3] == b':')
                    || (hex(p[0]) && hex(p[1]) && hex(p[2]) && hex(p[3]) && p[4] == b':');
                v6.then_some(V6)
            };
            if let Some(charset) = charset {
                let len = bytes[i..].iter().take_while(|b| charset.contains(b)).count();
                if let Ok(address) = text[i..i + len].parse::<IpAddr>()
                    && self.contains(address)
                {
                    return true;
                }
                i += len;
            }
            i += 1;
        }
        false
    }
}

fn to_bits(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

// ---------------------------------------------------------------------------
// Patterns.

/// A compiled `pattern` expression: literals and `<name>`/`<_>` captures.
#[derive(Debug, Clone)]
pub(crate) struct PatternMatcher {
    nodes: Vec<PatternNode>,
    /// The named captures, in order.
    names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternNode {
    Literal(String),
    /// `None` for `<_>`.
    Capture(Option<String>),
}

impl PatternMatcher {
    /// Parses a pattern; `Err` says why (the parser already checked parser patterns).
    pub(crate) fn new(pattern: &str) -> Result<PatternMatcher, String> {
        let mut nodes: Vec<PatternNode> = Vec::new();
        let mut rest = pattern;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('<') {
                let name_len = after
                    .char_indices()
                    .take_while(|&(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
                    .count();
                if name_len > 0 && after[name_len..].starts_with('>') {
                    let name = &after[..name_len];
                    nodes.push(PatternNode::Capture((name != "_").then(|| name.to_string())));
                    rest = &after[name_len + 1..];
                    continue;
                }
            }
            let c = rest.chars().next().unwrap_or_default();
            match nodes.last_mut() {
                Some(PatternNode::Literal(text)) => text.push(c),
                _ => nodes.push(PatternNode::Literal(c.to_string())),
            }
            rest = &rest[c.len_utf8()..];
        }
        for pair in nodes.windows(2) {
            if matches!(pair, [PatternNode::Capture(_), PatternNode::Capture(_)]) {
                return Err("found consecutive capture: invalid expression".to_string());
            }
        }
        let names: Vec<String> = nodes
            .iter()
            .filter_map(|n| match n {
                PatternNode::Capture(Some(name)) => Some(name.clone()),
                _ => None,
            })
            .collect();
        Ok(PatternMatcher { nodes, names })
    }

    /// The named captures' values, possibly fewer than the names when the
    /// line ends early; empty when the line does not start as the pattern does.
    fn matches<'l>(&self, line: &'l str) -> Vec<&'l str> {
        let mut captures = Vec::new();
        if line.is_empty() || self.nodes.is_empty() {
            return captures;
        }
        let mut rest = line;
        let mut nodes = self.nodes.as_slice();
        if let Some(PatternNode::Literal(first)) = nodes.first() {
            if !rest.starts_with(first.as_str()) {
                return captures;
            }
            rest = &rest[first.len()..];
            nodes = &nodes[1..];
        }
        while let Some(PatternNode::Capture(name)) = nodes.first() {
            let Some(PatternNode::Literal(literal)) = nodes.get(1) else {
                if name.is_some() {
                    captures.push(rest);
                }
                return captures;
            };
            nodes = &nodes[2..];
            let Some(index) = rest.find(literal.as_str()) else {
                if name.is_some() {
                    captures.push(rest);
                }
                return captures;
            };
            if name.is_some() {
                captures.push(&rest[..index]);
            }
            rest = &rest[index + literal.len()..];
        }
        captures
    }

    /// Whether the whole line has the pattern's shape (`|>` line filters).
    fn test(&self, line: &str) -> bool {
        if line.is_empty() || self.nodes.is_empty() {
            return line.is_empty() && self.nodes.is_empty();
        }
        let mut offset = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            let PatternNode::Literal(literal) = node else {
                continue;
            };
            let Some(found) = line[offset..].find(literal.as_str()) else {
                return false;
            };
            if i != 0 && found == 0 {
                return false;
            }
            offset += found + literal.len();
        }
        let ends_with_capture = matches!(self.nodes.last(), Some(PatternNode::Capture(_)));
        ends_with_capture == (offset != line.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logql::{Expr, parse};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn log_expr(query: &str) -> LogExpr {
        match parse(query).unwrap() {
            Expr::Log(log) => log,
            Expr::Metric(_) => panic!("not a log query"),
        }
    }

    /// Runs `query`'s pipeline over one line: the kept line and its labels as text.
    fn run(query: &str, stream: &[(&str, &str)], metadata: &[(&str, &str)], line: &str) -> Option<(String, String)> {
        let log = log_expr(query);
        let pipeline = Pipeline::compile(&log, 0).ok()?;
        if !pipeline.line_contains().iter().all(|n| line.contains(n.as_str())) {
            return None;
        }
        let stream = labels(stream);
        let metadata = Labels::from_sorted(metadata.iter().map(|(n, v)| Label::new(*n, *v)).collect::<Vec<_>>());
        let mut state = LabelState::new(&stream, &metadata);
        let out = pipeline.process(0, line, &mut state)?;
        let text: Vec<String> = state
            .labels()
            .iter()
            .map(|l| format!("{}={}", l.name, l.value))
            .collect();
        Some((out.into_owned(), text.join(" ")))
    }

    fn labels_of(query: &str, stream: &[(&str, &str)], metadata: &[(&str, &str)], line: &str) -> String {
        run(query, stream, metadata, line).expect("line kept").1
    }

    #[test]
    fn line_filters_chain_and_negate() {
        let q = r#"{a="b"} |= "err" or "warn" != "debug" |~ "code=\\d+""#;
        assert!(run(q, &[("a", "b")], &[], "warn code=5").is_some());
        assert!(run(q, &[("a", "b")], &[], "info code=5").is_none());
        assert!(run(q, &[("a", "b")], &[], "err debug code=5").is_none());
        assert!(run(q, &[("a", "b")], &[], "err code=x").is_none());
        assert!(run(r#"{a="b"} !~ "x|y""#, &[("a", "b")], &[], "zzz").is_some());
        assert!(run(r#"{a="b"} |> "<_> id=<_>""#, &[("a", "b")], &[], "GET id=5").is_some());
        assert!(run(r#"{a="b"} |> "<_> id=<_>""#, &[("a", "b")], &[], "GET uid").is_none());
        assert!(
            Pipeline::compile(&log_expr(r#"{a="b"} |> "<x> y""#), 0).is_err(),
            "named captures"
        );
        assert!(run(r#"{a="b"} |= ip("10.0.0.0/8")"#, &[("a", "b")], &[], "from 10.1.2.3:80").is_some());
        assert!(run(r#"{a="b"} != ip("10.0.0.0/8")"#, &[("a", "b")], &[], "from 10.1.2.3:80").is_none());
    }

    #[test]
    fn leading_contains_filters_are_pushed_down_and_others_are_not() {
        let log = log_expr(r#"{a="b"} |= "x" |~ "y" |= "z" | json |= "after""#);
        let pipeline = Pipeline::compile(&log, 0).unwrap();
        // `|~ "y"` stays in the pipeline; its literal `y` goes down too.
        assert_eq!(
            pipeline.line_contains(),
            ["x".to_string(), "y".to_string(), "z".to_string()]
        );
        assert_eq!(pipeline.stages.len(), 3, "the regex, json and the last filter");
        let log = log_expr(r#"{a="b"} |= "x" or "y""#);
        assert!(Pipeline::compile(&log, 0).unwrap().line_contains().is_empty());
    }

    #[test]
    fn regex_filters_hand_their_required_literals_to_storage_and_stay_in_the_pipeline() {
        assert_eq!(required_substrings("status=5[0-9]{2}"), ["status=5"]);
        assert_eq!(
            required_substrings("(GET|PUT) /api/(v1)+/users"),
            [" /api/", "v1", "/users"]
        );
        assert_eq!(required_substrings("error.*timeout"), ["error", "timeout"]);
        for nothing in ["a|b", "(?i)error", "x?", "[0-9]+", "(", ""] {
            assert!(required_substrings(nothing).is_empty(), "{nothing:?}");
        }
        // Required literals are a superset condition: every match holds them.
        for (pattern, line) in [
            ("status=5[0-9]{2}", "x status=503 y"),
            ("(GET|PUT) /api/(v1)+/users", "PUT /api/v1v1/users"),
        ] {
            let regex = Regex::new(pattern).unwrap();
            assert!(regex.is_match(line));
            assert!(
                required_substrings(pattern)
                    .iter()
                    .all(|needle| line.contains(needle.as_str()))
            );
        }
        let query = r#"{app="a"} |~ "status=5[0-9]{2}" | logfmt |~ "late""#;
        let pipeline = Pipeline::compile(&log_expr(query), 0).unwrap();
        assert_eq!(
            pipeline.line_contains(),
            ["status=5".to_string()],
            "nothing after a parser"
        );
        assert!(
            run(query, &[("app", "a")], &[], "status=5xx late").is_none(),
            "the regex itself still runs"
        );
        assert!(run(query, &[("app", "a")], &[], "status=503 late").is_some());
    }

    #[test]
    fn logfmt_sanitizes_keeps_first_and_drops_empty() {
        let line = r#"a-b=1 9x=2 dup=first dup=second msg="hi there" empty="#;
        assert_eq!(
            labels_of(r#"{app="a"} | logfmt"#, &[("app", "a")], &[], line),
            "_9x=2 a_b=1 app=a dup=first msg=hi there"
        );
        assert_eq!(
            labels_of(r#"{app="a"} | logfmt --keep-empty"#, &[("app", "a")], &[], line),
            "_9x=2 a_b=1 app=a dup=first empty= msg=hi there"
        );
        assert_eq!(
            labels_of(
                r#"{app="a"} | logfmt"#,
                &[("app", "a")],
                &[],
                r#"good=1 bad="unterminated"#
            ),
            "app=a good=1"
        );
        let strict = labels_of(
            r#"{app="a"} | logfmt --strict"#,
            &[("app", "a")],
            &[],
            r#"good=1 bad="x"#,
        );
        assert!(strict.contains("__error__=LogfmtParserErr"), "{strict}");
        assert_eq!(
            labels_of(
                r#"{app="a"} | logfmt level, code="status""#,
                &[("app", "a")],
                &[],
                "level=info status=200 msg=hi"
            ),
            "app=a code=200 level=info"
        );
    }

    #[test]
    fn clashes_follow_stream_metadata_parsed_precedence() {
        let got = labels_of(
            r#"{app="a"} | logfmt"#,
            &[("app", "a"), ("sl", "s"), ("sm", "s"), ("tri", "s")],
            &[("md", "m"), ("sm", "m"), ("tri", "m")],
            "sl=p md=p tri=p",
        );
        assert_eq!(
            got,
            "app=a md=m md_extracted=p sl=s sl_extracted=p sm=s sm_extracted=m tri=s tri_extracted=p"
        );
    }

    #[test]
    fn json_flattens_and_skips_arrays_and_nulls() {
        let line =
            r#"{"lvl":"warn","obj":{"x":1,"y":{"z":2}},"ok":true,"nil":null,"arr":[1,2],"f":1.5,"a.b":1,"lvl":"x"}"#;
        assert_eq!(
            labels_of(r#"{app="a"} | json"#, &[("app", "a")], &[], line),
            "a_b=1 app=a f=1.5 lvl=warn obj_x=1 obj_y_z=2 ok=true"
        );
        let broken = labels_of(r#"{app="a"} | json"#, &[("app", "a")], &[], "broken");
        assert!(broken.contains("__error__=JSONParserErr"));
        let line = r#"{"user":{"id":"u1"},"tags":["x","y"]}"#;
        assert_eq!(
            labels_of(
                r#"{app="a"} | json who="user.id", tag="tags[0]", age="user.age""#,
                &[("app", "a")],
                &[],
                line
            ),
            "age= app=a tag=x who=u1"
        );
    }

    #[test]
    fn regexp_pattern_and_unpack_extract() {
        assert_eq!(
            labels_of(
                r#"{app="a"} | regexp "(?P<method>\\w+) (?P<path>\\S+)""#,
                &[("app", "a"), ("method", "stream")],
                &[],
                "PUT /x"
            ),
            "app=a method=stream method_extracted=PUT path=/x"
        );
        assert_eq!(
            labels_of(r#"{app="a"} | pattern "<method> <path>""#, &[("app", "a")], &[], "POST"),
            "app=a method=POST"
        );
        let (line, got) = run(
            r#"{app="a"} | unpack | logfmt"#,
            &[("app", "a"), ("lvl", "s")],
            &[],
            r#"{"lvl":"packed","n":5,"_entry":"code=42"}"#,
        )
        .unwrap();
        assert_eq!(line, "code=42");
        assert_eq!(got, "app=a code=42 lvl=s lvl_extracted=packed");
    }

    #[test]
    fn label_filters_convert_compare_and_flag_errors() {
        let q = r#"{app="a"} | logfmt | took > 1s"#;
        assert!(run(q, &[("app", "a")], &[], "took=500ms").is_none());
        assert!(
            run(q, &[("app", "a")], &[], "other=1").is_none(),
            "a missing label drops the line"
        );
        let failed = labels_of(q, &[("app", "a")], &[], "took=90");
        assert!(failed.contains("__error__=LabelFilterErr"));
        assert!(failed.contains(r#"__error_details__=time: missing unit in duration "90""#));
        assert!(run(&format!("{q} | __error__=\"\""), &[("app", "a")], &[], "took=90").is_none());
        let q = r#"{app="a"} | logfmt | size >= 1MB and code == 200 or lvl="x""#;
        assert!(run(q, &[("app", "a")], &[], "size=2MB code=200").is_some());
        assert!(run(q, &[("app", "a")], &[], "size=2kB code=200").is_none());
        assert!(run(q, &[("app", "a")], &[], "lvl=x").is_some());
        let q = r#"{app="a"} | logfmt | addr = ip("10.0.0.0/8")"#;
        assert!(run(q, &[("app", "a")], &[], r#"addr="client 10.0.0.7:80""#).is_some());
        assert!(run(q, &[("app", "a")], &[], "addr=192.168.1.1").is_none());
    }

    #[test]
    fn line_and_label_format_rewrite_with_go_templates() {
        let (line, got) = run(
            r#"{app="a"} | logfmt | line_format "{{.level | upper}}: {{.msg}}" | label_format lvl=level, path="{{.app}}/{{.code}}""#,
            &[("app", "a")],
            &[],
            r#"level=warn msg="disk low" code=7"#,
        )
        .unwrap();
        assert_eq!(line, "WARN: disk low");
        assert_eq!(got, "app=a code=7 lvl=warn msg=disk low path=a/7");
        let (line, got) = run(r#"{app="a"} | line_format "{{ fail }}""#, &[("app", "a")], &[], "x")
            .map_or((String::new(), String::new()), |r| r);
        assert!(
            line.is_empty() && got.is_empty(),
            "an unknown function is a compile error"
        );
        let (line, got) = run(
            r#"{app="a"} | line_format "{{ .n | int | div 1 }}""#,
            &[("app", "a")],
            &[],
            "x",
        )
        .unwrap();
        assert_eq!(line, "x", "a render error keeps the line");
        assert!(got.contains("__error__=TemplateFormatErr"), "{got}");
    }

    #[test]
    fn drop_keep_and_decolorize() {
        assert_eq!(
            labels_of(
                r#"{app="a"} | logfmt | drop x, y="2""#,
                &[("app", "a")],
                &[],
                "x=1 y=2 z=3"
            ),
            "app=a z=3"
        );
        assert_eq!(
            labels_of(r#"{app="a"} | logfmt | keep z"#, &[("app", "a")], &[], "x=1 y=2 z=3"),
            "z=3"
        );
        let (line, _) = run(
            r#"{app="a"} | decolorize"#,
            &[("app", "a")],
            &[],
            "\u{1b}[31mred\u{1b}[0m",
        )
        .unwrap();
        assert_eq!(line, "red");
    }

    const FUZZ_QUERIES: [&str; 9] = [
        r#"{a="b"} | json | logfmt --strict | unpack"#,
        r#"{a="b"} | logfmt --keep-empty | x > 1s or y >= 1MB and z == 3"#,
        r#"{a="b"} | json x="a.b[0]", y="c" | regexp "(?P<w>\\w+)""#,
        r#"{a="b"} | pattern "<x> <_> <y>" |> "<_> <_>" | decolorize"#,
        r#"{a="b"} |= ip("10.0.0.0/8") or ip("::1") | addr = ip("1.2.3.0/24")"#,
        r#"{a="b"} | unpack | line_format "{{.x}}{{__line__}}" | label_format y="{{.z}}""#,
        r#"{a="b"} | logfmt x, y="z" | drop x | keep y, a"#,
        r#"{a="b"} !~ "a+" != "zz" |~ "(?i)k""#,
        r#"{a="b"} | json | __error__="" | label_format n=x"#,
    ];

    #[test]
    fn fuzz_queries_compile() {
        for query in FUZZ_QUERIES {
            assert!(Pipeline::compile(&log_expr(query), 0).is_ok(), "{query}");
        }
    }

    proptest::proptest! {
        /// Lines come from anyone: no stage may panic on any text.
        #[test]
        fn no_stage_panics_on_any_line(line in "(\\PC|[{}\\[\\]\":=, <>.\\\\0-9a-f])*") {
            for query in FUZZ_QUERIES {
                let _ = run(query, &[("a", "b")], &[("m", "v")], &line);
            }
        }
    }

    #[test]
    fn ip_filters_match_addresses_ranges_and_prefixes() {
        let range = IpFilter::new("192.168.1.1-192.168.1.9").unwrap();
        assert!(range.find_in("192.168.1.5"));
        assert!(!range.find_in("192.168.1.10"));
        let v6 = IpFilter::new("2001:db8::/32").unwrap();
        assert!(v6.find_in("2001:db8::1"));
        assert!(IpFilter::new("bogus").unwrap_err().contains("ip: invalid pattern"));
    }
}
