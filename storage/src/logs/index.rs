//! The full-text index of a log block: a Tantivy index with one document per
//! row of `entries.parquet`, so a hit maps straight to a row.
//!
//! Fields: `line` (the line cut into [`WordTokenizer`] tokens, indexed with
//! positions, not stored: the line lives only in Parquet), `stream` (the
//! stream id, indexed and fast: a search on labels becomes the set of stream
//! ids whose labels match, see [`super::search_query`]), and fast fields
//! `timestamp` and `row` (the Parquet row number).
//!
//! Substring filters (LogQL's `|= "…"`) are answered as candidates only,
//! always a superset of the rows whose line contains the needle, which the
//! caller then verifies on the line. How the superset is guaranteed:
//! tokens are the maximal runs of word characters ([`is_word_char`]), case
//! kept; a needle is cut the same way into runs, and for each run what its
//! neighbours inside the needle say about the line's token holding it:
//! - a run with a non-word character on both sides in the needle is a whole
//!   token of the line: an exact term;
//! - a run at the needle's start (nothing before it) may continue leftwards
//!   in the line: a term ending with it; at the end, a term starting with it;
//! - a needle that is one run may sit inside a longer token: a term holding it.
//!
//! A line holding the needle has a token satisfying each run's condition, so
//! the rows with such tokens for every run hold every matching row. Runs
//! longer than [`MAX_TERM_BYTES`] are not indexed as terms: a line with one
//! gets [`OVERLONG_TERM`] instead, and such rows are always candidates.

use std::path::Path;
use std::sync::Arc;

use roaring::RoaringBitmap;
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::indexer::NoMergePolicy;
use tantivy::indexer::UserOperation;
use tantivy::query::{BooleanQuery, Occur, RangeQuery};
use tantivy::schema::document::{Document, ReferenceValue, ReferenceValueLeaf, Value};
use tantivy::schema::{FAST, Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{TextAnalyzer, Token, TokenStream, Tokenizer};
use tantivy::{DocId, DocSet, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TERMINATED, Term};
use tidewatch_model::Labels;
use tidewatch_model::logs::{LogEntry, NsRange, TimestampNs};

use super::search_query::SearchQuery;
use crate::error::{Error, Result};

/// The name the word tokenizer is registered under in every index.
pub const WORD_TOKENIZER: &str = "tidewatch_words";
/// Runs longer than this are not terms (Tantivy drops terms over 64 KiB, and
/// long runs — base64 blobs, hashes — are never searched for whole anyway).
pub const MAX_TERM_BYTES: usize = 256;
/// The term a line gets for each run longer than [`MAX_TERM_BYTES`]; it
/// starts with a character no word token holds, so no word equals it.
pub const OVERLONG_TERM: &str = "\u{1}overlong";

pub const FIELD_LINE: &str = "line";
pub const FIELD_TIMESTAMP: &str = "timestamp";
pub const FIELD_STREAM: &str = "stream";
pub const FIELD_ROW: &str = "row";

/// A needle condition whose terms name more than 1/this of the rows to
/// scan is not read from the index: the lines are scanned instead.
const SCAN_INSTEAD_FRACTION: u64 = 8;

/// Memory the index writer may use before it writes a segment. Each
/// segment repeats the dictionary entries of the words it shares with the
/// others, so fewer, larger segments are a smaller index (and a slightly
/// faster build: 64 MiB segments cost 3 % more disk and 5 % more flush CPU
/// on the log benchmark's lines).
const WRITER_MEMORY_BYTES: usize = 256 << 20;

/// Whether `c` belongs to a token: letters and digits of any script, and `_`
/// (so `user_id` and `level_3` are one word). Everything else separates.
pub fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether the character starting at byte `at` of `text` is a word
/// character, and its width in bytes. Log lines are mostly ASCII: a byte
/// below 128 is answered without decoding a character (the tokenizer ran
/// at 4 % of a flush decoding every one).
#[inline(always)]
fn word_char_at(text: &str, at: usize) -> (bool, usize) {
    let byte = text.as_bytes()[at];
    if byte.is_ascii() {
        return (byte.is_ascii_alphanumeric() || byte == b'_', 1);
    }
    let c = text[at..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
    (is_word_char(c), c.len_utf8())
}

/// Where the run of word characters (`word`) or of separators (`!word`)
/// starting at byte `from` of `text` ends.
#[inline(always)]
fn run_end(text: &str, mut from: usize, word: bool) -> usize {
    while from < text.len() {
        let (is_word, width) = word_char_at(text, from);
        if is_word != word {
            break;
        }
        from += width;
    }
    from
}

/// Cuts text into maximal runs of word characters, keeping case, so that a
/// token is exactly what a case-sensitive filter compares. An IP
/// (`10.0.0.12`), a UUID or a path (`/api/v1/users`) becomes its parts in
/// order, and a search for it is a phrase of those parts.
#[derive(Debug, Clone, Default)]
pub struct WordTokenizer {
    token: Token,
}

/// The tokens of one text, from [`WordTokenizer`].
#[derive(Debug)]
pub struct WordTokenStream<'a> {
    text: &'a str,
    offset: usize,
    token: &'a mut Token,
}

impl Tokenizer for WordTokenizer {
    type TokenStream<'a> = WordTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordTokenStream<'a> {
        self.token.reset();
        WordTokenStream {
            text,
            offset: 0,
            token: &mut self.token,
        }
    }
}

impl TokenStream for WordTokenStream<'_> {
    fn advance(&mut self) -> bool {
        let from = run_end(self.text, self.offset, false);
        if from >= self.text.len() {
            self.offset = self.text.len();
            return false;
        }
        let to = run_end(self.text, from, true);
        let len = to - from;
        self.offset = to;
        self.token.text.clear();
        self.token.text.push_str(if len > MAX_TERM_BYTES {
            OVERLONG_TERM
        } else {
            &self.text[from..to]
        });
        self.token.offset_from = from;
        self.token.offset_to = to;
        self.token.position = self.token.position.wrapping_add(1);
        true
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

/// The tokens of `text` as the index sees them.
pub fn tokens(text: &str) -> Vec<String> {
    let mut tokenizer = WordTokenizer::default();
    let mut stream = tokenizer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// What a line's token must be for the line to possibly contain a needle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TermCondition {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

/// The conditions a needle puts on a line's tokens (all must hold). Empty
/// when the needle has no word character: then the index cannot narrow.
pub fn needle_conditions(needle: &str) -> Vec<TermCondition> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for (at, c) in needle.char_indices() {
        match (is_word_char(c), start) {
            (true, None) => start = Some(at),
            (false, Some(from)) => {
                runs.push((from, at));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(from) = start {
        runs.push((from, needle.len()));
    }
    let mut conditions = Vec::with_capacity(runs.len());
    for (from, to) in runs {
        let run = &needle[from..to];
        let bounded_before = from > 0;
        let bounded_after = to < needle.len();
        if run.len() > MAX_TERM_BYTES {
            // Only in an overlong token of the line, or in an overlong token
            // cut off in the needle: rows with overlong tokens are candidates
            // anyway, and no other token can hold it.
            conditions.push(TermCondition::Exact(OVERLONG_TERM.to_string()));
            continue;
        }
        conditions.push(match (bounded_before, bounded_after) {
            (true, true) => TermCondition::Exact(run.to_string()),
            (true, false) => TermCondition::Prefix(run.to_string()),
            (false, true) => TermCondition::Suffix(run.to_string()),
            (false, false) => TermCondition::Contains(run.to_string()),
        });
    }
    conditions
}

fn index_error(context: &str, error: impl std::fmt::Display) -> Error {
    Error::Task(format!("full-text index: {context}: {error}"))
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    line: Field,
    timestamp: Field,
    stream: Field,
    row: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let line_indexing = TextFieldIndexing::default()
        .set_tokenizer(WORD_TOKENIZER)
        // Positions make phrases (an IP, a path) searchable; no field norms:
        // results are ordered by time, never by score.
        .set_index_option(IndexRecordOption::WithFreqsAndPositions)
        .set_fieldnorms(false);
    let line = builder.add_text_field(FIELD_LINE, TextOptions::default().set_indexing_options(line_indexing));
    let timestamp = builder.add_i64_field(FIELD_TIMESTAMP, FAST);
    // Indexed for label searches (a set of stream ids), without field norms.
    let stream = builder.add_u64_field(FIELD_STREAM, NumericOptions::default().set_indexed().set_fast());
    let row = builder.add_u64_field(FIELD_ROW, FAST);
    (
        builder.build(),
        Fields {
            line,
            timestamp,
            stream,
            row,
        },
    )
}

fn register_tokenizer(index: &Index) {
    index
        .tokenizers()
        .register(WORD_TOKENIZER, TextAnalyzer::from(WordTokenizer::default()));
}

/// Streams (label order, entries ascending) an index is built from, shared
/// with Tantivy's indexing thread, which reads each line where it lies.
pub(crate) type SharedStreams = Arc<Vec<(Labels, Vec<LogEntry>)>>;

/// A row on its way to the indexing thread: where its line is, not a copy.
/// Tantivy queues every document a flush hands it (its channel holds 10,000
/// batches) while the slower indexing thread catches up; as copies, a
/// million-line flush queued ~1 GB of documents.
#[derive(Debug)]
struct RowDoc {
    streams: SharedStreams,
    stream: u32,
    entry: u32,
    id: u32,
    row: u64,
    fields: Fields,
}

/// A field value of a [`RowDoc`].
#[derive(Debug, Clone)]
enum RowValue<'a> {
    Line(&'a str),
    Timestamp(i64),
    Number(u64),
}

impl<'a> Value<'a> for RowValue<'a> {
    type ArrayIter = std::iter::Empty<Self>;
    type ObjectIter = std::iter::Empty<(&'a str, Self)>;

    fn as_value(&self) -> ReferenceValue<'a, Self> {
        ReferenceValue::Leaf(match *self {
            RowValue::Line(line) => ReferenceValueLeaf::Str(line),
            RowValue::Timestamp(ns) => ReferenceValueLeaf::I64(ns),
            RowValue::Number(n) => ReferenceValueLeaf::U64(n),
        })
    }
}

impl Document for RowDoc {
    type Value<'a> = RowValue<'a>;
    type FieldsValuesIter<'a> = std::array::IntoIter<(Field, RowValue<'a>), 4>;

    fn iter_fields_and_values(&self) -> Self::FieldsValuesIter<'_> {
        let (_, entries) = &self.streams[self.stream as usize];
        let entry = &entries[self.entry as usize];
        [
            (self.fields.line, RowValue::Line(&entry.line)),
            (self.fields.timestamp, RowValue::Timestamp(entry.timestamp)),
            (self.fields.stream, RowValue::Number(u64::from(self.id))),
            (self.fields.row, RowValue::Number(self.row)),
        ]
        .into_iter()
    }
}

/// Builds a block's index, a document per row in row order.
pub(crate) struct IndexBuilder {
    index: Index,
    writer: IndexWriter<RowDoc>,
    fields: Fields,
    /// Documents not yet handed to the indexing thread: they go over in
    /// batches of [`SEND_BATCH_DOCS`], since one channel send (and thread
    /// wake-up) per document cost more than tokenizing it.
    pending: Vec<UserOperation<RowDoc>>,
}

/// Documents handed to Tantivy's indexing thread at once.
const SEND_BATCH_DOCS: usize = 1024;

impl std::fmt::Debug for IndexBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexBuilder").finish_non_exhaustive()
    }
}

impl IndexBuilder {
    /// An index in `dir` (created), for a block.
    pub(crate) fn on_disk(dir: &Path) -> Result<IndexBuilder> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let (schema, _) = schema();
        let directory = MmapDirectory::open(dir).map_err(|e| index_error("opening directory", e))?;
        let index = Index::create(directory, schema, tantivy::IndexSettings::default())
            .map_err(|e| index_error("creating", e))?;
        Self::with_index(index)
    }

    /// An index in memory, for searching entries not yet in an indexed block.
    pub(crate) fn in_ram() -> Result<IndexBuilder> {
        let (schema, _) = schema();
        Self::with_index(Index::create_in_ram(schema))
    }

    fn with_index(index: Index) -> Result<IndexBuilder> {
        let (_, fields) = schema();
        register_tokenizer(&index);
        // One indexing thread: flushes already run on a blocking thread, and
        // the machine's cores serve queries meanwhile.
        let writer: IndexWriter<RowDoc> = index
            .writer_with_num_threads(1, WRITER_MEMORY_BYTES)
            .map_err(|e| index_error("starting writer", e))?;
        writer.set_merge_policy(Box::new(NoMergePolicy));
        Ok(IndexBuilder {
            index,
            writer,
            fields,
            pending: Vec::with_capacity(SEND_BATCH_DOCS),
        })
    }

    fn send_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(SEND_BATCH_DOCS));
        self.writer.run(batch).map_err(|e| index_error("adding documents", e))?;
        Ok(())
    }

    /// Adds entry `entry` of stream `stream` of `streams` as row `row`, of
    /// the block's stream `id`.
    pub(crate) fn add(
        &mut self,
        streams: &SharedStreams,
        stream: usize,
        entry: usize,
        id: u32,
        row: u64,
    ) -> Result<()> {
        let position = |n: usize| u32::try_from(n).map_err(|_| index_error("adding documents", "over 2^32 entries"));
        self.pending.push(UserOperation::Add(RowDoc {
            streams: streams.clone(),
            stream: position(stream)?,
            entry: position(entry)?,
            id,
            row,
            fields: self.fields,
        }));
        if self.pending.len() >= SEND_BATCH_DOCS {
            self.send_pending()?;
        }
        Ok(())
    }

    /// Commits and waits for the writer: on return the index files are on disk
    /// (Tantivy syncs them on commit).
    pub(crate) fn finish(mut self) -> Result<BlockIndex> {
        self.send_pending()?;
        self.writer.commit().map_err(|e| index_error("committing", e))?;
        self.writer
            .wait_merging_threads()
            .map_err(|e| index_error("finishing", e))?;
        BlockIndex::from_index(self.index)
    }
}

/// An open block index.
pub(crate) struct BlockIndex {
    reader: IndexReader,
    fields: Fields,
    /// Oldest and newest entry time indexed: a search whose range covers
    /// them needs no time filter (which would visit every document).
    time_bounds: Option<(TimestampNs, TimestampNs)>,
}

impl std::fmt::Debug for BlockIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockIndex").finish_non_exhaustive()
    }
}

/// One search hit inside a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexHit {
    pub(crate) timestamp: TimestampNs,
    pub(crate) stream: u32,
    pub(crate) row: u64,
}

impl BlockIndex {
    pub(crate) fn open(dir: &Path) -> Result<BlockIndex> {
        let index = Index::open_in_dir(dir).map_err(|e| index_error("opening", e))?;
        Self::from_index(index)
    }

    fn from_index(index: Index) -> Result<BlockIndex> {
        register_tokenizer(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| index_error("opening reader", e))?;
        let (_, fields) = schema();
        let mut time_bounds: Option<(TimestampNs, TimestampNs)> = None;
        for segment in reader.searcher().segment_readers() {
            let column = segment
                .fast_fields()
                .i64(FIELD_TIMESTAMP)
                .map_err(|e| index_error("reading fast fields", e))?;
            if segment.num_docs() == 0 {
                continue;
            }
            let (min, max) = (column.min_value(), column.max_value());
            time_bounds = Some(time_bounds.map_or((min, max), |(lo, hi)| (lo.min(min), hi.max(max))));
        }
        Ok(BlockIndex {
            reader,
            fields,
            time_bounds,
        })
    }

    /// Rows that may hold a line containing `needle`, ascending; `None` when
    /// the index cannot narrow them cheaper than reading the lines would
    /// (`rows` is how many rows a scan would read).
    pub(crate) fn candidate_rows(&self, needle: &str, rows: u64) -> Result<Option<RoaringBitmap>> {
        let conditions = needle_conditions(needle);
        // Exact and prefix conditions walk a sliver of the term dictionary;
        // suffix and substring ones walk all of it. Use the cheap ones when
        // there are any (fewer conditions still give a superset).
        let cheap: Vec<&TermCondition> = conditions
            .iter()
            .filter(|c| matches!(c, TermCondition::Exact(_) | TermCondition::Prefix(_)))
            .collect();
        let chosen: Vec<&TermCondition> = if cheap.is_empty() {
            // At most one full walk: the longest run narrows best.
            conditions
                .iter()
                .max_by_key(|c| match c {
                    TermCondition::Exact(t)
                    | TermCondition::Prefix(t)
                    | TermCondition::Suffix(t)
                    | TermCondition::Contains(t) => t.len(),
                })
                .into_iter()
                .collect()
        } else {
            cheap
        };
        if chosen.is_empty() {
            return Ok(None);
        }
        // Postings are read only for conditions that narrow: a condition
        // whose terms name more than this many rows (a prefix like `5` of
        // every number) costs more to union and to read row by row than a
        // plain scan of the lines.
        let narrowing = rows / SCAN_INSTEAD_FRACTION;
        let searcher = self.reader.searcher();
        let mut result: Option<RoaringBitmap> = None;
        for condition in chosen {
            let mut rows_here = RoaringBitmap::new();
            let mut named = 0u64;
            for segment in searcher.segment_readers() {
                let inverted = segment
                    .inverted_index(self.fields.line)
                    .map_err(|e| index_error("reading postings", e))?;
                let terms = inverted.terms();
                let full_walk = matches!(condition, TermCondition::Suffix(_) | TermCondition::Contains(_));
                // A dictionary larger than the rows to scan costs more to walk
                // than reading the lines: say so and let the caller scan.
                if full_walk && terms.num_terms() as u64 > rows {
                    return Ok(None);
                }
                // Walks stop as soon as the terms name too many rows: a prefix
                // such as `5` names most rows of a block, and walking all its
                // terms in a large segment cost more than the scan it leads to.
                let mut infos: Vec<tantivy::postings::TermInfo> = Vec::new();
                let mut take = |info: &tantivy::postings::TermInfo| {
                    named += u64::from(info.doc_freq);
                    infos.push(info.clone());
                    named <= narrowing
                };
                let mut wanted = vec![(*condition).clone()];
                wanted.push(TermCondition::Exact(OVERLONG_TERM.to_string()));
                'walks: for wanted in &wanted {
                    match wanted {
                        TermCondition::Exact(term) => {
                            if let Some(info) = terms.get(term.as_bytes()).map_err(|e| index_error("term lookup", e))?
                                && !take(&info)
                            {
                                break 'walks;
                            }
                        }
                        TermCondition::Prefix(prefix) => {
                            let mut stream = terms
                                .range()
                                .ge(prefix.as_bytes())
                                .into_stream()
                                .map_err(|e| index_error("term walk", e))?;
                            while stream.advance() {
                                if !stream.key().starts_with(prefix.as_bytes()) {
                                    break;
                                }
                                if !take(stream.value()) {
                                    break 'walks;
                                }
                            }
                        }
                        TermCondition::Suffix(suffix) => {
                            let mut stream = terms.stream().map_err(|e| index_error("term walk", e))?;
                            while stream.advance() {
                                if stream.key().ends_with(suffix.as_bytes()) && !take(stream.value()) {
                                    break 'walks;
                                }
                            }
                        }
                        TermCondition::Contains(part) => {
                            let finder = memchr::memmem::Finder::new(part.as_bytes());
                            let mut stream = terms.stream().map_err(|e| index_error("term walk", e))?;
                            while stream.advance() {
                                if finder.find(stream.key()).is_some() && !take(stream.value()) {
                                    break 'walks;
                                }
                            }
                        }
                    }
                }
                if named > narrowing {
                    break;
                }
                let row_column = segment
                    .fast_fields()
                    .u64(FIELD_ROW)
                    .map_err(|e| index_error("reading row numbers", e))?;
                let mut docs = RoaringBitmap::new();
                for info in &infos {
                    let mut postings = inverted
                        .read_postings_from_terminfo(info, IndexRecordOption::Basic)
                        .map_err(|e| index_error("reading postings", e))?;
                    let mut doc: DocId = postings.doc();
                    while doc != TERMINATED {
                        docs.insert(doc);
                        doc = postings.advance();
                    }
                }
                for doc in docs {
                    if let Some(row) = row_column.first(doc) {
                        rows_here.insert(u32::try_from(row).map_err(|_| index_error("row number", "over 2^32"))?);
                    }
                }
            }
            if named > narrowing {
                // Does not narrow; another condition may.
                continue;
            }
            result = Some(match result {
                None => rows_here,
                Some(previous) => previous & rows_here,
            });
            if result.as_ref().is_some_and(RoaringBitmap::is_empty) {
                break;
            }
        }
        Ok(result)
    }

    /// Hits of `query` in `range`, newest first, at most `limit`, and the
    /// number of all hits in range; `streams[id]` are stream `id`'s labels.
    pub(crate) fn search(
        &self,
        query: &SearchQuery,
        streams: &[&Labels],
        range: NsRange,
        limit: usize,
    ) -> Result<(Vec<IndexHit>, u64)> {
        let parsed = query.index_query(self.fields.line, self.fields.stream, streams)?;
        let covers_all = self
            .time_bounds
            .is_none_or(|(min, max)| range.start <= min && max <= range.end);
        let combined: Box<dyn tantivy::query::Query> = if covers_all {
            parsed
        } else {
            let in_range = RangeQuery::new(
                std::ops::Bound::Included(Term::from_field_i64(self.fields.timestamp, range.start)),
                std::ops::Bound::Included(Term::from_field_i64(self.fields.timestamp, range.end)),
            );
            Box::new(BooleanQuery::new(vec![
                (Occur::Must, parsed),
                (Occur::Must, Box::new(in_range)),
            ]))
        };
        let searcher = self.reader.searcher();
        let top = TopDocs::with_limit(limit.max(1)).order_by_fast_field::<i64>(FIELD_TIMESTAMP, Order::Desc);
        let (docs, total) = searcher
            .search(&combined, &(top, Count))
            .map_err(|e| index_error("searching", e))?;
        let mut hits = Vec::with_capacity(docs.len());
        for (_, address) in docs.into_iter().take(limit) {
            let segment = searcher.segment_reader(address.segment_ord);
            let fast = segment.fast_fields();
            let read = |name: &str| fast.u64(name).map_err(|e| index_error("reading fast fields", e));
            let timestamp = fast
                .i64(FIELD_TIMESTAMP)
                .map_err(|e| index_error("reading fast fields", e))?
                .first(address.doc_id);
            let (Some(timestamp), Some(stream), Some(row)) = (
                timestamp,
                read(FIELD_STREAM)?.first(address.doc_id),
                read(FIELD_ROW)?.first(address.doc_id),
            ) else {
                continue;
            };
            hits.push(IndexHit {
                timestamp,
                stream: stream as u32,
                row,
            });
        }
        Ok((hits, total as u64))
    }

    /// Every hit of `query` at exactly `timestamp` (to complete ties at a page end).
    pub(crate) fn search_at(
        &self,
        query: &SearchQuery,
        streams: &[&Labels],
        timestamp: TimestampNs,
    ) -> Result<Vec<IndexHit>> {
        let at = NsRange::new(timestamp, timestamp);
        let (_, total) = self.search(query, streams, at, 1)?;
        if total == 0 {
            return Ok(Vec::new());
        }
        Ok(self.search(query, streams, at, total as usize)?.0)
    }
}

/// Distinct terms of an index's `line` field, for tests.
#[cfg(test)]
fn line_terms(index: &BlockIndex) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for segment in index.reader.searcher().segment_readers() {
        let inverted = segment.inverted_index(index.fields.line).unwrap();
        let mut stream = inverted.terms().stream().unwrap();
        while stream.advance() {
            out.insert(String::from_utf8_lossy(stream.key()).into_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_words_numbers_and_the_parts_of_ips_uuids_and_paths() {
        assert_eq!(tokens("GET /api/v1/users 200"), ["GET", "api", "v1", "users", "200"]);
        assert_eq!(
            tokens("client=10.0.0.12:8080"),
            ["client", "10", "0", "0", "12", "8080"]
        );
        assert_eq!(
            tokens("req 550e8400-e29b-41d4-a716-446655440000 done"),
            ["req", "550e8400", "e29b", "41d4", "a716", "446655440000", "done"]
        );
        assert_eq!(
            tokens("user_id=Ünïcode level=ERROR"),
            ["user_id", "Ünïcode", "level", "ERROR"]
        );
        assert_eq!(tokens(&"a".repeat(MAX_TERM_BYTES + 1)), [OVERLONG_TERM]);
        assert!(tokens(" -- ").is_empty());
    }

    proptest::proptest! {
        /// The byte-wise tokenizer cuts any text exactly where the
        /// definition (maximal runs of `is_word_char`) cuts it.
        #[test]
        fn tokens_are_the_maximal_runs_of_word_characters(text in "[a-z0-9_ .:/\\-ÿé日本\u{1F600}\u{0301}\t]{0,40}") {
            let expected: Vec<String> = text
                .split(|c: char| !is_word_char(c))
                .filter(|run| !run.is_empty())
                .map(|run| if run.len() > MAX_TERM_BYTES { OVERLONG_TERM.to_string() } else { run.to_string() })
                .collect();
            proptest::prop_assert_eq!(tokens(&text), expected);
        }
    }

    #[test]
    fn needles_become_conditions_by_what_bounds_each_run() {
        use TermCondition::*;
        assert_eq!(needle_conditions("error"), [Contains("error".into())]);
        assert_eq!(
            needle_conditions("rror: time"),
            [Suffix("rror".into()), Prefix("time".into())]
        );
        assert_eq!(needle_conditions("/api/v1/"), [Exact("api".into()), Exact("v1".into())]);
        assert!(needle_conditions(" - ").is_empty());
    }

    fn build(lines: &[&str]) -> (tempfile::TempDir, BlockIndex) {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = IndexBuilder::on_disk(dir.path()).unwrap();
        // Stream 0 holds the first line, stream 1 the rest.
        let entries = |lines: &[&str], first_row: usize| -> Vec<LogEntry> {
            let rows = first_row..first_row + lines.len();
            rows.zip(lines)
                .map(|(row, line)| LogEntry::new(row as i64, *line))
                .collect()
        };
        let streams: SharedStreams = Arc::new(vec![
            (Labels::from_pairs([("app", "web")]), entries(&lines[..1], 0)),
            (Labels::from_pairs([("app", "api")]), entries(&lines[1..], 1)),
        ]);
        for row in 0..lines.len() {
            let (stream, entry) = if row == 0 { (0, 0) } else { (1, row - 1) };
            builder.add(&streams, stream, entry, stream as u32, row as u64).unwrap();
        }
        builder.finish().unwrap();
        let index = BlockIndex::open(dir.path()).unwrap();
        (dir, index)
    }

    #[test]
    fn candidates_hold_every_matching_row() {
        let lines = [
            "GET /api/v1/users 200",
            "level=error msg=\"xerrors found\"",
            "client 10.0.0.12 connected",
            "id 550e8400-e29b-41d4-a716-446655440000",
            "nothing here",
        ];
        let (_dir, index) = build(&lines);
        assert!(line_terms(&index).contains("550e8400"));
        for needle in [
            "error",
            "rror",
            "errors f",
            "10.0.0.1",
            "0.0.12 con",
            "/v1/",
            "-e29b-",
            "GET /api",
            "missing",
        ] {
            let expected: Vec<u32> = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.contains(needle))
                .map(|(row, _)| row as u32)
                .collect();
            let candidates = index.candidate_rows(needle, u64::MAX).unwrap().expect("narrowed");
            for row in &expected {
                assert!(candidates.contains(*row), "{needle:?} misses row {row}");
            }
        }
        assert!(index.candidate_rows("missing", u64::MAX).unwrap().unwrap().is_empty());
        // Against a scan of 5 rows any posting is too many to pay: scan.
        assert_eq!(index.candidate_rows("GET", lines.len() as u64).unwrap(), None);
        assert!(
            index
                .candidate_rows("/missing/", lines.len() as u64)
                .unwrap()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn searches_ips_uuids_paths_and_labels() {
        let lines = [
            "GET /api/v1/users 200",
            "client 10.0.0.12 connected",
            "client 10.0.0.13 connected",
            "id 550e8400-e29b-41d4-a716-446655440000",
        ];
        let (_dir, index) = build(&lines);
        let (web, api) = (
            Labels::from_pairs([("app", "web")]),
            Labels::from_pairs([("app", "api")]),
        );
        let streams = [&web, &api];
        let search = |query: &str, limit: usize| {
            let query = SearchQuery::parse(query).unwrap();
            index.search(&query, &streams, NsRange::ALL, limit).unwrap()
        };
        let rows = |query: &str| -> Vec<u64> {
            let mut rows: Vec<u64> = search(query, 10).0.iter().map(|h| h.row).collect();
            rows.sort_unstable();
            rows
        };
        assert_eq!(rows("\"10.0.0.12\""), [1]);
        assert_eq!(rows("10.0.0.12"), [1]);
        assert_eq!(rows("550e8400-e29b-41d4-a716-446655440000"), [3]);
        assert_eq!(rows("\"/api/v1/users\""), [0]);
        assert_eq!(rows("client AND labels.app:api"), [1, 2]);
        assert_eq!(rows("labels.app:web OR 10.0.0.13"), [0, 2]);
        assert_eq!(rows("labels.app:/w.b|db/"), [0]);
        assert!(rows("labels.app:db").is_empty());
        assert!(rows("labels.host:*").is_empty());
        assert_eq!(rows("client -\"10.0.0.12\""), [2]);
        assert_eq!(rows("connec*"), [1, 2]);
        assert_eq!(rows("\"client 10.0.0\"*"), [1, 2]);
        assert_eq!(rows("line:/[0-9]+/ AND labels.app:api"), [1, 2, 3]);
        assert_eq!(rows("line: IN [GET id]"), [0, 3]);
        assert_eq!(rows("line:[users TO v1]"), [0]);
        // Four words stand between them: slop 4 reaches, 3 does not.
        assert_eq!(rows("\"client connected\"~4"), [1, 2]);
        assert!(rows("\"client connected\"~3").is_empty());
        let (hits, total) = search("client", 1);
        assert_eq!((hits.len(), total), (1, 2));
        assert_eq!(hits[0].row, 2, "newest first");
    }
}
