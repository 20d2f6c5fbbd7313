//! The full-text index of a log block: a Tantivy index with one document per
//! group of up to [`GROUP_ROWS`] consecutive rows of one stream in
//! `entries.parquet`, holding each distinct word of those lines once.
//!
//! The index narrows, the lines decide: every search and line filter reads
//! the rows of the groups the index names and checks each line itself, so a
//! result is exactly what a scan of every line would give. Grouping is what
//! makes the index cheap to build and small: the lines of a stream repeat
//! most of their words (the log benchmark's lines have 30 words each, 8 of
//! them new to a group of 32), and postings without positions or
//! frequencies (`IndexRecordOption::Basic`) are all a candidate lookup needs.
//!
//! Fields: `line` (the group's distinct words, space-separated, split by
//! Tantivy's whitespace tokenizer: the words were cut by [`WordTokenizer`]
//! when the group was built), `stream` (the stream id, indexed and fast: a
//! search on labels becomes the set of stream ids whose labels match, see
//! [`super::search_query`]), and fast fields `row` (the group's first
//! Parquet row), `rows` (how many), `timestamp` and `oldest` (its newest and
//! oldest entry; `row` is indexed too, for id word lookups). The term
//! dictionary is Tantivy's SSTable one (its `quickwit` feature), which builds
//! faster than the FST one; indexes of older block formats are not opened:
//! those blocks are scanned. Id words (long hexadecimal ids, see
//! [`super::id_words`]) are not Tantivy terms: they go to the block's id
//! word list, which lookups and walks consult beside the dictionary.
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
//! the groups with such tokens for every run hold every matching row. Runs
//! longer than [`MAX_TERM_BYTES`] are not indexed as terms: a line with one
//! gets [`OVERLONG_TERM`] instead, and such rows are always candidates. The
//! token may also be an id word: a condition on a run that could be (part
//! of) one is also looked up in the id word list.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use roaring::RoaringBitmap;
use tantivy::collector::DocSetCollector;
use tantivy::directory::MmapDirectory;
use tantivy::indexer::NoMergePolicy;
use tantivy::indexer::UserOperation;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, RangeQuery};
use tantivy::schema::document::{Document, ReferenceValue, ReferenceValueLeaf, Value};
use tantivy::schema::{FAST, Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{TextAnalyzer, WhitespaceTokenizer};
use tantivy::{DocId, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, TERMINATED, Term};
use tidewatch_model::Labels;
use tidewatch_model::logs::{LogEntry, NsRange, TimestampNs};

use super::id_words::{ID_WORDS_FILE, IdWords, IdWordsBuilder, Walk, is_id_word, may_be_in_id_word};
use super::search_query::{IndexTerms, SearchQuery};
use crate::error::{Error, Result};

/// Runs longer than this are not terms (Tantivy drops terms over 64 KiB, and
/// long runs — base64 blobs, hashes — are never searched for whole anyway).
pub const MAX_TERM_BYTES: usize = 256;
/// The term a line gets for each run longer than [`MAX_TERM_BYTES`]; it
/// starts with a character no word token holds, so no word equals it.
pub const OVERLONG_TERM: &str = "\u{1}overlong";

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

/// The tokens of `text` as the index sees them, borrowed from it (runs over
/// [`MAX_TERM_BYTES`] as [`OVERLONG_TERM`]).
pub fn words(text: &str) -> impl Iterator<Item = &str> + '_ {
    let mut offset = 0;
    std::iter::from_fn(move || {
        let from = run_end(text, offset, false);
        if from >= text.len() {
            offset = text.len();
            return None;
        }
        let to = run_end(text, from, true);
        offset = to;
        Some(if to - from > MAX_TERM_BYTES {
            OVERLONG_TERM
        } else {
            &text[from..to]
        })
    })
}

/// Where each token of `line` equal to `word` (one token as [`words`] cuts
/// it, not [`OVERLONG_TERM`]) ends, or with `prefix`, each token starting
/// with `word`; found with a substring search, without cutting the line.
/// `finder` looks for `word` (built once per query: building one per line
/// cost as much as the search).
pub(crate) fn token_ends<'a>(
    line: &'a str,
    word: &'a str,
    finder: &'a memchr::memmem::Finder<'static>,
    prefix: bool,
) -> impl Iterator<Item = usize> + 'a {
    finder.find_iter(line.as_bytes()).filter_map(move |at| {
        if !starts_token(line, at) {
            return None;
        }
        let end = run_end(line, at, true);
        let fits = if prefix {
            // A run over the limit is the token OVERLONG_TERM, not itself.
            end - at <= MAX_TERM_BYTES
        } else {
            end == at + word.len()
        };
        fits.then_some(end)
    })
}

/// Whether a token may start at byte `at` of `text` (no word character
/// right before it).
fn starts_token(text: &str, at: usize) -> bool {
    let Some(before) = text.get(..at) else {
        return false;
    };
    before.chars().next_back().is_none_or(|c| !is_word_char(c))
}

/// The tokens of `text` as the index sees them: maximal runs of word
/// characters, case kept, so that a token is exactly what a case-sensitive
/// filter compares. An IP (`10.0.0.12`), a UUID or a path (`/api/v1/users`)
/// becomes its parts in order, and a search for it is a phrase of those parts.
pub fn tokens(text: &str) -> Vec<String> {
    words(text).map(str::to_string).collect()
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

/// Rows of a stream one document stands for, at most. Larger groups hand
/// Tantivy fewer words (30.2 words per line at one row, 12.7 at 8, 8.1 at
/// 32, 6.7 at 64 on the log benchmark's lines) but make every hit read more
/// rows to verify; 64 rows are a sliver of a 1,024-row Parquet page. From
/// 32 to 64: flush CPU -4 %, index 19 -> 17 MB per 1M lines, searches the
/// same within noise.
pub const GROUP_ROWS: usize = 64;

/// The tokenizer of the `line` field of grouped indexes: the words were cut
/// by [`words`] when the group was built and joined by spaces, which no
/// word holds.
pub const WORD_LIST_TOKENIZER: &str = "tidewatch_word_list";

pub const FIELD_LINE: &str = "line";
/// The newest entry of a document.
pub const FIELD_TIMESTAMP: &str = "timestamp";
pub const FIELD_OLDEST: &str = "oldest";
pub const FIELD_STREAM: &str = "stream";
pub const FIELD_ROW: &str = "row";
pub const FIELD_ROWS: &str = "rows";

/// A needle condition whose terms name more than 1/this of the rows to
/// scan is not read from the index: the lines are scanned instead.
const SCAN_INSTEAD_FRACTION: u64 = 8;

/// Memory the index writer may use before it writes a segment. Each
/// segment repeats the dictionary entries of the words it shares with the
/// others, so fewer, larger segments are a smaller index (and a slightly
/// faster build: 64 MiB segments cost 3 % more disk and 5 % more flush CPU
/// on the log benchmark's lines).
const WRITER_MEMORY_BYTES: usize = 256 << 20;

/// Fields of a block index.
#[derive(Debug, Clone, Copy)]
struct GroupFields {
    line: Field,
    newest: Field,
    oldest: Field,
    stream: Field,
    row: Field,
    rows: Field,
}

fn schema() -> (Schema, GroupFields) {
    let mut builder = Schema::builder();
    let line_indexing = TextFieldIndexing::default()
        .set_tokenizer(WORD_LIST_TOKENIZER)
        // Which groups hold a word is all a lookup needs: the lines answer
        // phrases and counts. No field norms: results are ordered by time.
        .set_index_option(IndexRecordOption::Basic)
        .set_fieldnorms(false);
    let line = builder.add_text_field(FIELD_LINE, TextOptions::default().set_indexing_options(line_indexing));
    let newest = builder.add_i64_field(FIELD_TIMESTAMP, FAST);
    let oldest = builder.add_i64_field(FIELD_OLDEST, FAST);
    // Indexed for label searches (a set of stream ids), without field norms.
    let stream = builder.add_u64_field(FIELD_STREAM, NumericOptions::default().set_indexed().set_fast());
    // Indexed too: a lookup in the id word list names groups by their
    // first row (see [`super::id_words`]).
    let row = builder.add_u64_field(FIELD_ROW, NumericOptions::default().set_indexed().set_fast());
    let rows = builder.add_u64_field(FIELD_ROWS, FAST);
    (
        builder.build(),
        GroupFields {
            line,
            newest,
            oldest,
            stream,
            row,
            rows,
        },
    )
}

/// The fields of the index this build writes, for building queries without
/// an index (the fuzz target).
pub(crate) fn terms_for_queries() -> IndexTerms<'static> {
    let (_, fields) = schema();
    IndexTerms {
        line: fields.line,
        stream: fields.stream,
        row: fields.row,
        ids: None,
    }
}

/// The fields of an opened index, checked by name: an index of another
/// layout is refused rather than misread.
fn read_fields(index: &Index) -> Result<GroupFields> {
    let schema = index.schema();
    let field = |name: &str| {
        schema
            .get_field(name)
            .map_err(|_| index_error("opening", format!("no field {name:?}")))
    };
    Ok(GroupFields {
        line: field(FIELD_LINE)?,
        newest: field(FIELD_TIMESTAMP)?,
        oldest: field(FIELD_OLDEST)?,
        stream: field(FIELD_STREAM)?,
        row: field(FIELD_ROW)?,
        rows: field(FIELD_ROWS)?,
    })
}

fn register_tokenizer(index: &Index) {
    index
        .tokenizers()
        .register(WORD_LIST_TOKENIZER, TextAnalyzer::from(WhitespaceTokenizer::default()));
}

/// A group of rows on its way to the indexing thread: its distinct words,
/// one copy of each (~60 bytes per line on the benchmark's lines, a third
/// of the lines themselves).
#[derive(Debug)]
struct GroupDoc {
    words: String,
    newest: i64,
    oldest: i64,
    id: u32,
    row: u64,
    rows: u64,
    fields: GroupFields,
}

/// A field value of a [`GroupDoc`].
#[derive(Debug, Clone)]
enum GroupValue<'a> {
    Words(&'a str),
    Timestamp(i64),
    Number(u64),
}

impl<'a> Value<'a> for GroupValue<'a> {
    type ArrayIter = std::iter::Empty<Self>;
    type ObjectIter = std::iter::Empty<(&'a str, Self)>;

    fn as_value(&self) -> ReferenceValue<'a, Self> {
        ReferenceValue::Leaf(match *self {
            GroupValue::Words(words) => ReferenceValueLeaf::Str(words),
            GroupValue::Timestamp(ns) => ReferenceValueLeaf::I64(ns),
            GroupValue::Number(n) => ReferenceValueLeaf::U64(n),
        })
    }
}

impl Document for GroupDoc {
    type Value<'a> = GroupValue<'a>;
    type FieldsValuesIter<'a> = std::array::IntoIter<(Field, GroupValue<'a>), 6>;

    fn iter_fields_and_values(&self) -> Self::FieldsValuesIter<'_> {
        [
            (self.fields.line, GroupValue::Words(&self.words)),
            (self.fields.newest, GroupValue::Timestamp(self.newest)),
            (self.fields.oldest, GroupValue::Timestamp(self.oldest)),
            (self.fields.stream, GroupValue::Number(u64::from(self.id))),
            (self.fields.row, GroupValue::Number(self.row)),
            (self.fields.rows, GroupValue::Number(self.rows)),
        ]
        .into_iter()
    }
}

/// The distinct words of `entries`' lines, space-separated, in order of
/// first appearance, but for id words, which go to `ids` as group `group`'s.
fn distinct_words(entries: &[LogEntry], ids: &mut IdWordsBuilder, group: u32) -> String {
    // foldhash: words are short, and a streaming xxh3 state per word cost
    // more than Tantivy's own indexing of the words it saved.
    let mut seen: HashSet<&str, foldhash::fast::FixedState> =
        HashSet::with_capacity_and_hasher(256, Default::default());
    let mut out = String::with_capacity(512);
    for entry in entries {
        for word in words(&entry.line) {
            if is_id_word(word) {
                // Nearly always new: no set lookup (the list drops repeats).
                ids.add(word, group);
            } else if seen.insert(word) {
                out.push_str(word);
                out.push(' ');
            }
        }
    }
    out
}

/// Builds a block's index from its streams' rows, in row order.
pub(crate) struct IndexBuilder {
    dir: PathBuf,
    index: Index,
    writer: IndexWriter<GroupDoc>,
    fields: GroupFields,
    ids: IdWordsBuilder,
    /// Documents not yet handed to the indexing thread: they go over in
    /// batches of [`SEND_BATCH_DOCS`], since one channel send (and thread
    /// wake-up) per document cost more than tokenizing it.
    pending: Vec<UserOperation<GroupDoc>>,
}

/// Documents handed to Tantivy's indexing thread at once.
const SEND_BATCH_DOCS: usize = 256;

impl std::fmt::Debug for IndexBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexBuilder").finish_non_exhaustive()
    }
}

impl IndexBuilder {
    /// An index in `dir` (created), for a block.
    pub(crate) fn on_disk(dir: &Path) -> Result<IndexBuilder> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let (schema, fields) = schema();
        let directory = MmapDirectory::open(dir).map_err(|e| index_error("opening directory", e))?;
        let index = Index::create(directory, schema, tantivy::IndexSettings::default())
            .map_err(|e| index_error("creating", e))?;
        register_tokenizer(&index);
        // One indexing thread: flushes already run on a blocking thread
        // (which cuts the groups' words meanwhile), and the machine's cores
        // serve queries.
        let writer: IndexWriter<GroupDoc> = index
            .writer_with_num_threads(1, WRITER_MEMORY_BYTES)
            .map_err(|e| index_error("starting writer", e))?;
        writer.set_merge_policy(Box::new(NoMergePolicy));
        Ok(IndexBuilder {
            dir: dir.to_path_buf(),
            index,
            writer,
            fields,
            ids: IdWordsBuilder::default(),
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

    /// Adds `entries` (ascending, one stream's) as rows `first_row..` of the
    /// block's stream `id`, a document per [`GROUP_ROWS`] of them.
    pub(crate) fn add(&mut self, entries: &[LogEntry], id: u32, first_row: u64) -> Result<()> {
        for (at, group) in entries.chunks(GROUP_ROWS).enumerate() {
            let (Some(oldest), Some(newest)) = (group.first(), group.last()) else {
                continue;
            };
            let row = first_row + (at * GROUP_ROWS) as u64;
            let number = self.ids.start_group(row, group.len())?;
            self.pending.push(UserOperation::Add(GroupDoc {
                words: distinct_words(group, &mut self.ids, number),
                newest: newest.timestamp,
                oldest: oldest.timestamp,
                id,
                row,
                rows: group.len() as u64,
                fields: self.fields,
            }));
            if self.pending.len() >= SEND_BATCH_DOCS {
                self.send_pending()?;
            }
        }
        Ok(())
    }

    /// Commits and waits for the writer, and writes the id word list: on
    /// return the index files are on disk (Tantivy syncs them on commit).
    pub(crate) fn finish(mut self) -> Result<BlockIndex> {
        self.send_pending()?;
        self.writer.commit().map_err(|e| index_error("committing", e))?;
        self.writer
            .wait_merging_threads()
            .map_err(|e| index_error("finishing", e))?;
        let ids_path = self.dir.join(ID_WORDS_FILE);
        self.ids.write(&ids_path)?;
        BlockIndex::from_index(self.index, &self.dir)
    }
}

/// An open block index.
pub(crate) struct BlockIndex {
    reader: IndexReader,
    fields: GroupFields,
    ids: IdWords,
    /// Oldest and newest entry time indexed: a search whose range covers
    /// them needs no time filter (which would visit every document).
    time_bounds: Option<(TimestampNs, TimestampNs)>,
}

impl std::fmt::Debug for BlockIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockIndex").finish_non_exhaustive()
    }
}

/// Rows of one stream the index names as candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CandidateRows {
    pub(crate) stream: u32,
    pub(crate) rows: Range<usize>,
}

/// What a lookup in the id word list found.
enum IdLookup {
    /// Its groups' rows were added (none, when ids cannot match).
    Named,
    /// More rows than narrowing allows.
    TooMany,
    /// The whole list would have to be walked, and it is longer than a scan.
    WalkTooLong,
}

/// The row range of each document of one segment.
struct SegmentRows {
    stream: tantivy::columnar::Column<u64>,
    row: tantivy::columnar::Column<u64>,
    rows: tantivy::columnar::Column<u64>,
}

impl SegmentRows {
    fn new(segment: &tantivy::SegmentReader) -> Result<SegmentRows> {
        let fast = segment.fast_fields();
        let column = |name: &str| fast.u64(name).map_err(|e| index_error("reading fast fields", e));
        Ok(SegmentRows {
            stream: column(FIELD_STREAM)?,
            row: column(FIELD_ROW)?,
            rows: column(FIELD_ROWS)?,
        })
    }

    fn of(&self, doc: DocId) -> Option<CandidateRows> {
        let first = usize::try_from(self.row.first(doc)?).ok()?;
        let count = usize::try_from(self.rows.first(doc)?).ok()?;
        Some(CandidateRows {
            stream: u32::try_from(self.stream.first(doc)?).ok()?,
            rows: first..first + count,
        })
    }
}

impl BlockIndex {
    pub(crate) fn open(dir: &Path) -> Result<BlockIndex> {
        let index = Index::open_in_dir(dir).map_err(|e| index_error("opening", e))?;
        Self::from_index(index, dir)
    }

    fn from_index(index: Index, dir: &Path) -> Result<BlockIndex> {
        register_tokenizer(&index);
        let fields = read_fields(&index)?;
        let ids = IdWords::open(&dir.join(ID_WORDS_FILE))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| index_error("opening reader", e))?;
        let mut time_bounds: Option<(TimestampNs, TimestampNs)> = None;
        for segment in reader.searcher().segment_readers() {
            if segment.num_docs() == 0 {
                continue;
            }
            let fast = segment.fast_fields();
            let column = |name: &str| fast.i64(name).map_err(|e| index_error("reading fast fields", e));
            let newest = column(FIELD_TIMESTAMP)?;
            let oldest = column(FIELD_OLDEST)?.min_value();
            let (min, max) = (oldest, newest.max_value());
            time_bounds = Some(time_bounds.map_or((min, max), |(lo, hi)| (lo.min(min), hi.max(max))));
        }
        Ok(BlockIndex {
            reader,
            fields,
            ids,
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
        // A posting stands for a group: about GROUP_ROWS rows.
        let rows_per_doc = GROUP_ROWS as u64;
        let searcher = self.reader.searcher();
        let mut result: Option<RoaringBitmap> = None;
        for condition in chosen {
            let mut rows_here = RoaringBitmap::new();
            let mut named = 0u64;
            match self.id_rows(condition, rows, narrowing, &mut named, &mut rows_here)? {
                IdLookup::Named => {}
                IdLookup::TooMany => continue,
                IdLookup::WalkTooLong => return Ok(None),
            }
            // A whole id word is never a Tantivy term.
            let segments = if matches!(condition, TermCondition::Exact(term) if is_id_word(term)) {
                &[][..]
            } else {
                searcher.segment_readers()
            };
            for segment in segments {
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
                    named += u64::from(info.doc_freq) * rows_per_doc;
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
                let rows_of = SegmentRows::new(segment)?;
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
                    if let Some(candidate) = rows_of.of(doc) {
                        let (Ok(start), Ok(end)) =
                            (u32::try_from(candidate.rows.start), u32::try_from(candidate.rows.end))
                        else {
                            return Err(index_error("row number", "over 2^32"));
                        };
                        rows_here.insert_range(start..end);
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

    /// Adds to `out` the rows of the groups whose id words satisfy
    /// `condition`, counting them in `named`; says when they are more than
    /// `narrowing`, or when the walk would cost more than scanning `rows`.
    fn id_rows(
        &self,
        condition: &TermCondition,
        rows: u64,
        narrowing: u64,
        named: &mut u64,
        out: &mut RoaringBitmap,
    ) -> Result<IdLookup> {
        let mut groups: Vec<u32> = Vec::new();
        let mut over = false;
        let mut take = |found: &[u32]| {
            groups.extend_from_slice(found);
            *named += found.len() as u64 * GROUP_ROWS as u64;
            over = *named > narrowing;
            if over { Walk::Stop } else { Walk::Continue }
        };
        match condition {
            TermCondition::Exact(word) => {
                if !is_id_word(word) {
                    return Ok(IdLookup::Named);
                }
                take(&self.ids.groups_of(word)?);
            }
            TermCondition::Prefix(prefix) => {
                if !may_be_in_id_word(prefix) {
                    return Ok(IdLookup::Named);
                }
                self.ids.walk(prefix.as_bytes(), |word, found| {
                    if word.starts_with(prefix.as_str()) {
                        take(found)
                    } else {
                        Walk::Stop
                    }
                })?;
            }
            TermCondition::Suffix(part) | TermCondition::Contains(part) => {
                if !may_be_in_id_word(part) {
                    return Ok(IdLookup::Named);
                }
                if self.ids.len() > rows {
                    return Ok(IdLookup::WalkTooLong);
                }
                let suffix = matches!(condition, TermCondition::Suffix(_));
                let finder = memchr::memmem::Finder::new(part.as_bytes());
                self.ids.walk(b"", |word, found| {
                    let holds = if suffix {
                        word.ends_with(part.as_str())
                    } else {
                        finder.find(word.as_bytes()).is_some()
                    };
                    if holds { take(found) } else { Walk::Continue }
                })?;
            }
        }
        if over {
            return Ok(IdLookup::TooMany);
        }
        for group in groups {
            out.insert_range(self.ids.group_rows(group)?);
        }
        Ok(IdLookup::Named)
    }

    /// The rows that may hold a hit of `query` in `range` (a superset: the
    /// caller checks each line with [`SearchQuery::matches`]), in no
    /// particular order; `streams[id]` are stream `id`'s labels.
    pub(crate) fn candidates(
        &self,
        query: &SearchQuery,
        streams: &[&Labels],
        range: NsRange,
    ) -> Result<Vec<CandidateRows>> {
        let terms = IndexTerms {
            line: self.fields.line,
            stream: self.fields.stream,
            row: self.fields.row,
            ids: Some(&self.ids),
        };
        let narrowed = query.candidate_query(&terms, streams)?;
        let covers_all = self
            .time_bounds
            .is_none_or(|(min, max)| range.start <= min && max <= range.end);
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(narrowed) = narrowed {
            clauses.push((Occur::Must, narrowed));
        }
        if !covers_all {
            // Documents overlapping the range: newest ≥ start, oldest ≤ end.
            let oldest = self.fields.oldest;
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    std::ops::Bound::Included(Term::from_field_i64(self.fields.newest, range.start)),
                    std::ops::Bound::Unbounded,
                )),
            ));
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    std::ops::Bound::Unbounded,
                    std::ops::Bound::Included(Term::from_field_i64(oldest, range.end)),
                )),
            ));
        }
        let query: Box<dyn Query> = if clauses.is_empty() {
            Box::new(AllQuery)
        } else {
            Box::new(BooleanQuery::new(clauses))
        };
        let searcher = self.reader.searcher();
        let mut docs: Vec<tantivy::DocAddress> = searcher
            .search(&query, &DocSetCollector)
            .map_err(|e| index_error("searching", e))?
            .into_iter()
            .collect();
        docs.sort_unstable();
        let mut out = Vec::with_capacity(docs.len());
        let mut segment_rows: Option<(u32, SegmentRows)> = None;
        for address in docs {
            if segment_rows.as_ref().is_none_or(|(ord, _)| *ord != address.segment_ord) {
                let segment = searcher.segment_reader(address.segment_ord);
                segment_rows = Some((address.segment_ord, SegmentRows::new(segment)?));
            }
            if let Some((_, rows)) = &segment_rows
                && let Some(candidate) = rows.of(address.doc_id)
            {
                out.push(candidate);
            }
        }
        Ok(out)
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

    /// An index of `streams`' lines, rows numbered in order across them.
    fn build_streams(streams: &[&[&str]]) -> (tempfile::TempDir, BlockIndex) {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = IndexBuilder::on_disk(dir.path()).unwrap();
        let mut row = 0u64;
        for (id, lines) in streams.iter().enumerate() {
            let entries: Vec<LogEntry> = lines
                .iter()
                .enumerate()
                .map(|(at, line)| LogEntry::new(row as i64 + at as i64, *line))
                .collect();
            builder.add(&entries, id as u32, row).unwrap();
            row += lines.len() as u64;
        }
        builder.finish().unwrap();
        let index = BlockIndex::open(dir.path()).unwrap();
        (dir, index)
    }

    /// Stream 0 holds the first line, stream 1 the rest.
    fn build(lines: &[&str]) -> (tempfile::TempDir, BlockIndex) {
        build_streams(&[&lines[..1], &lines[1..]])
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
        // Id words are in the id word list, not Tantivy's dictionary.
        assert!(!line_terms(&index).contains("550e8400"));
        assert!(line_terms(&index).contains("e29b"));
        assert_eq!(index.ids.groups_of("446655440000").unwrap(), [1]);
        for needle in [
            "550e8400",
            "550e8400-e29b-41d4-a716-446655440000",
            " 550e8400-",
            "0e84",
            "-4466554",
            "55440000",
            "a716-446655440000",
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

    /// Rows the index names for `query` whose line then matches it, and
    /// a check that the index named every row that matches.
    fn search_rows(
        index: &BlockIndex,
        lines: &[&str],
        streams: &[&Labels],
        stream_of: &dyn Fn(usize) -> usize,
        query: &str,
    ) -> Vec<usize> {
        let query = SearchQuery::parse(query).unwrap();
        let mut candidates: Vec<usize> = index
            .candidates(&query, streams, NsRange::ALL)
            .unwrap()
            .into_iter()
            .flat_map(|c| c.rows)
            .collect();
        candidates.sort_unstable();
        let hits: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&row| query.matches(streams[stream_of(row)], lines[row]))
            .collect();
        let every: Vec<usize> = (0..lines.len())
            .filter(|&row| query.matches(streams[stream_of(row)], lines[row]))
            .collect();
        assert_eq!(hits, every, "the index missed a hit of {query:?}");
        hits
    }

    #[test]
    fn id_words_name_exactly_their_groups() {
        // One id word per stream, so one group each: more groups than are
        // looked up one by one.
        let owned: Vec<String> = (0..100).map(|n| format!("req 1234abcd{n:04} done")).collect();
        let streams: Vec<[&str; 1]> = owned.iter().map(|line| [line.as_str()]).collect();
        let slices: Vec<&[&str]> = streams.iter().map(|s| &s[..]).collect();
        let (_dir, index) = build_streams(&slices);
        let labels = Labels::from_pairs([("app", "web")]);
        let all_labels: Vec<&Labels> = vec![&labels; owned.len()];
        let candidates = |query: &str| {
            let mut streams: Vec<u32> = index
                .candidates(&SearchQuery::parse(query).unwrap(), &all_labels, NsRange::ALL)
                .unwrap()
                .into_iter()
                .map(|c| c.stream)
                .collect();
            streams.sort_unstable();
            streams
        };
        assert_eq!(candidates("1234abcd0042"), [42]);
        assert!(candidates("1234abcd9999").is_empty());
        assert_eq!(candidates("1234abcd004*"), (40..50).collect::<Vec<u32>>());
        assert_eq!(candidates("1234ab*").len(), 100);
        assert_eq!(candidates("line:/1234abcd00[0-1][0-9]/"), (0..20).collect::<Vec<u32>>());
        assert_eq!(candidates("line:[1234abcd0098 TO 1234abcd0099]"), [98, 99]);
        let rows = |needle: &str| {
            index
                .candidate_rows(needle, u64::MAX)
                .unwrap()
                .map(|r| r.iter().collect::<Vec<u32>>())
        };
        assert_eq!(rows("1234abcd0042"), Some(vec![42]));
        assert_eq!(rows(" 1234abcd0042 d"), Some(vec![42]));
        assert_eq!(rows("1234abcd004"), Some((40..50).collect()));
        assert_eq!(rows("1234abcd9999"), Some(vec![]));
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
        let stream_of = |row: usize| usize::from(row > 0);
        let rows = |query: &str| search_rows(&index, &lines, &streams, &stream_of, query);
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
        assert_eq!(rows("-labels.app:web client"), [1, 2]);
        assert_eq!(rows("(client -connected) OR GET"), [0]);
        // Four words stand between them: slop 4 reaches, 3 does not; the
        // words must come in order.
        assert_eq!(rows("\"client connected\"~4"), [1, 2]);
        assert!(rows("\"client connected\"~3").is_empty());
        assert!(rows("\"connected client\"~9").is_empty());
        // Two of the words are in the group but not in one line.
        assert!(rows("GET AND client").is_empty());
        assert!(rows("\"200 client\"").is_empty());
    }

    #[test]
    fn groups_of_rows_name_every_row_of_a_group_that_may_hold_a_hit() {
        // Two full groups and one of 6 rows, in one stream.
        let count = 2 * GROUP_ROWS + 6;
        let owned: Vec<String> = (0..count)
            .map(|i| match i % 7 {
                0 => format!("req {i} GET /api/v1/users status=200"),
                3 => format!("req {i} POST /api/v1/orders status=500 error"),
                _ => format!("req {i} heartbeat ok"),
            })
            .collect();
        let lines: Vec<&str> = owned.iter().map(String::as_str).collect();
        let (_dir, index) = build_streams(&[&lines]);
        let app = Labels::from_pairs([("app", "web")]);
        let streams = [&app];
        let rows = |query: &str| search_rows(&index, &lines, &streams, &|_| 0, query);
        assert_eq!(rows("error").len(), (3..count).step_by(7).count());
        assert_eq!(rows("POST -error"), Vec::<usize>::new());
        assert_eq!(rows("\"GET /api/v1/users\""), (0..count).step_by(7).collect::<Vec<_>>());
        let last = (count - 1).to_string();
        assert_eq!(rows(&last), [count - 1]);
        assert_eq!(rows("heartbeat -ok").len(), 0);
        // Every group is a candidate for a word on every line; each row once.
        let all = index
            .candidates(&SearchQuery::parse("req").unwrap(), &streams, NsRange::ALL)
            .unwrap();
        let mut covered: Vec<usize> = all.iter().flat_map(|c| c.rows.clone()).collect();
        covered.sort_unstable();
        assert_eq!(covered, (0..count).collect::<Vec<_>>());
        assert_eq!(all.len(), 3, "{all:?}");
        // A time range names only the groups overlapping it (row i is at i ns).
        let late = index
            .candidates(
                &SearchQuery::parse("req").unwrap(),
                &streams,
                NsRange::new(2 * GROUP_ROWS as i64 + 1, 1_000_000),
            )
            .unwrap();
        assert_eq!(
            late,
            [CandidateRows {
                stream: 0,
                rows: 2 * GROUP_ROWS..count
            }]
        );
    }

    const VOCABULARY: [&str; 12] = [
        "GET",
        "POST",
        "error",
        "10.0.0.1",
        "a/b",
        "ok",
        "req",
        "x_1",
        // Id words (see `super::id_words`), one a prefix of another.
        "550e8400",
        "550e8400a1",
        "446655440000",
        "dead-beef0123",
    ];

    fn query_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let word = proptest::sample::select(VOCABULARY.to_vec()).prop_map(str::to_string);
        let leaf = prop_oneof![
            word.clone(),
            (word.clone(), word.clone(), 0u32..3).prop_map(|(a, b, slop)| format!("\"{a} {b}\"~{slop}")),
            word.clone().prop_map(|w| format!("{}*", &w[..1])),
            word.clone().prop_map(|w| format!("{}*", &w[..w.len().min(6)])),
            proptest::sample::select(vec!["/55.*/", "/[0-9a-f]{10}/", "[4 TO 6]", "{550e8400 TO 550e8400a1]"])
                .prop_map(str::to_string),
            proptest::sample::select(vec!["labels.app:web", "labels.app:api", "labels.app:/a.*/"])
                .prop_map(str::to_string),
        ];
        (leaf.clone(), leaf.clone(), leaf, 0usize..5).prop_map(|(a, b, c, shape)| match shape {
            0 => a,
            1 => format!("{a} {b}"),
            2 => format!("{a} OR {b}"),
            3 => format!("{a} -{b}"),
            _ => format!("({a} OR {b}) -({c})"),
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any substring of any line, cut anywhere (inside id words, across
        /// separators), names every row holding it, or says scan.
        #[test]
        fn needles_cut_anywhere_name_every_row_holding_them(
            lines in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(VOCABULARY.to_vec()), 1..5),
                1..150,
            ),
            cuts in proptest::collection::vec((0usize..1000, 0usize..1000, 1usize..30), 1..12),
        ) {
            let owned: Vec<String> = lines.iter().map(|words| words.join(" ")).collect();
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            let (_dir, index) = build(&refs);
            for (line, start, len) in cuts {
                let text = refs[line % refs.len()];
                let start = start % text.len();
                let end = (start + len).min(text.len());
                let needle = &text[start..end];
                let Some(candidates) = index.candidate_rows(needle, u64::MAX).unwrap() else {
                    continue;
                };
                for (row, text) in refs.iter().enumerate() {
                    if text.contains(needle) {
                        proptest::prop_assert!(candidates.contains(row as u32), "{:?} misses row {} ({:?})", needle, row, text);
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Whatever the streams' lengths (groups cut anywhere) and the
        /// query, the rows the index names hold every row whose line
        /// matches (checked inside `search_rows`).
        #[test]
        fn the_index_names_every_row_a_query_matches(
            streams in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(proptest::sample::select(VOCABULARY.to_vec()), 0..6), 1..80),
                1..4,
            ),
            queries in proptest::collection::vec(query_strategy(), 1..6),
        ) {
            let owned: Vec<Vec<String>> = streams.iter().map(|lines| lines.iter().map(|words| words.join(" ")).collect()).collect();
            let per_stream: Vec<Vec<&str>> = owned.iter().map(|lines| lines.iter().map(String::as_str).collect()).collect();
            let slices: Vec<&[&str]> = per_stream.iter().map(Vec::as_slice).collect();
            let (_dir, index) = build_streams(&slices);
            let lines: Vec<&str> = per_stream.iter().flatten().copied().collect();
            let starts: Vec<usize> = per_stream.iter().scan(0, |at, s| { let start = *at; *at += s.len(); Some(start) }).collect();
            let stream_of = |row: usize| starts.partition_point(|&start| start <= row) - 1;
            let labels: Vec<Labels> = (0..per_stream.len())
                .map(|id| Labels::from_pairs([("app", if id % 2 == 0 { "web" } else { "api" })]))
                .collect();
            let streams: Vec<&Labels> = labels.iter().collect();
            for query in &queries {
                search_rows(&index, &lines, &streams, &stream_of, query);
            }
        }
    }
}
