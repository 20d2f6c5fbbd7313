//! Id words: the long hexadecimal words of log lines (the parts of UUIDs,
//! trace and span ids, hashes, long numbers), kept out of Tantivy in a
//! sorted word list of their own, `index/id_words`.
//!
//! Why: nearly every such word is new. On the log benchmark's lines a block
//! of 1M lines held 1.17M distinct words, 1.0M of them ids seen once, and
//! Tantivy's cost per distinct word (its term hash table, sorting the terms,
//! writing the dictionary and one posting list each) was 1.3 of the 4.8 CPU
//! seconds its flush took, and 12 of the index's 18 MB. Here an id word
//! costs an entry in a vector, sorted once by an integer key, and about
//! seven bytes on disk: hexadecimal digits packed two to a byte, each word
//! front-coded against the one before it.
//!
//! What an id word is ([`is_id_word`]): a token (as [`super::index::words`]
//! cuts lines) of at least [`MIN_ID_WORD_BYTES`] lowercase hexadecimal
//! digits, one of them a decimal digit (so `deadbeef` and `decade` stay
//! ordinary words). A needle's run can be part of an id word only if it is
//! made of lowercase hexadecimal digits alone ([`may_be_in_id_word`]); only
//! such runs consult the list, the others never could match one.
//!
//! The file: chunks of [`WORDS_PER_CHUNK`] distinct words, ascending, each
//! word written as (bytes shared with the previous word of its chunk and
//! the length of the rest, a nibble each; the rest as packed nibbles; the
//! groups holding it, ascending, the first with a flag for more, the others
//! as their count and deltas); then a footer with
//! the groups (the first row and row count of each: a group is a run of up
//! to [`super::index::GROUP_ROWS`] rows of one stream, as a Tantivy
//! document is) and the first word and offset of each chunk; then the
//! footer's offset and a magic number. Every read is bounds-checked: a
//! damaged file is an error, and its block is scanned instead.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::histogram_codec::{Reader, put_uvarint};

/// The file name, inside the block's `index/` directory.
pub(crate) const ID_WORDS_FILE: &str = "id_words";

/// The shortest id word. Shorter hexadecimal words (UUIDs' 4-digit parts,
/// status codes, small numbers) repeat enough for Tantivy to be cheap.
pub(crate) const MIN_ID_WORD_BYTES: usize = 8;

/// The longest id word: longer runs are one overlong token for the index.
const MAX_ID_WORD_BYTES: usize = super::index::MAX_TERM_BYTES;

/// Distinct words per chunk: an exact lookup decodes one chunk.
const WORDS_PER_CHUNK: usize = 128;

/// Bytes a walk reads at once at most (whole chunks, at least one). A walk
/// starts with one chunk, since a lookup needs no more, and doubles its
/// reads up to this.
const READ_SPAN_BYTES: u64 = 256 << 10;

const MAGIC: &[u8; 8] = b"TWIDW001";

// A group's row count is stored in one byte.
const _: () = assert!(super::index::GROUP_ROWS <= u8::MAX as usize);
const TRAILER_BYTES: u64 = 16;

fn is_lower_hex(byte: u8) -> bool {
    matches!(byte, b'0'..=b'9' | b'a'..=b'f')
}

/// Whether `word` (one token) goes to the id word list rather than Tantivy.
pub(crate) fn is_id_word(word: &str) -> bool {
    let bytes = word.as_bytes();
    (MIN_ID_WORD_BYTES..=MAX_ID_WORD_BYTES).contains(&bytes.len())
        && bytes.iter().copied().all(is_lower_hex)
        && bytes.iter().any(u8::is_ascii_digit)
}

/// Whether a needle's `run` of word characters can lie inside an id word.
pub(crate) fn may_be_in_id_word(run: &str) -> bool {
    !run.is_empty() && run.bytes().all(is_lower_hex)
}

fn nibble(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        _ => digit - b'a' + 10,
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn file_error(context: &str, detail: impl std::fmt::Display) -> Error {
    Error::Task(format!("full-text index: id words: {context}: {detail}"))
}

fn damaged() -> Error {
    file_error("reading", "the file is damaged")
}

/// One occurrence of an id word in a group, while building.
#[derive(Debug, Clone, Copy)]
struct Occurrence {
    /// The word's first eight bytes, big-endian: the sort key that decides
    /// most comparisons without touching the text.
    key: u64,
    at: usize,
    len: u16,
    group: u32,
}

/// Collects a block's id words group by group, then writes the file.
#[derive(Debug, Default)]
pub(crate) struct IdWordsBuilder {
    text: Vec<u8>,
    occurrences: Vec<Occurrence>,
    /// First row and row count of each group, in the order they were started.
    groups: Vec<(u32, u8)>,
}

impl IdWordsBuilder {
    /// Starts the group of rows `first_row..first_row + rows` and returns
    /// its number.
    pub(crate) fn start_group(&mut self, first_row: u64, rows: usize) -> Result<u32> {
        let Ok(first) = u32::try_from(first_row) else {
            return Err(file_error("building", "a block of over 2^32 rows"));
        };
        let Ok(rows) = u8::try_from(rows) else {
            return Err(file_error("building", format!("a group of {rows} rows")));
        };
        let number = u32::try_from(self.groups.len()).map_err(|_| file_error("building", "too many groups"))?;
        self.groups.push((first, rows));
        Ok(number)
    }

    /// Notes that `group` holds `word` (an [`is_id_word`]; twice is fine).
    pub(crate) fn add(&mut self, word: &str, group: u32) {
        let bytes = word.as_bytes();
        let mut key = [0u8; 8];
        let head = bytes.len().min(8);
        key[..head].copy_from_slice(&bytes[..head]);
        self.occurrences.push(Occurrence {
            key: u64::from_be_bytes(key),
            at: self.text.len(),
            len: bytes.len() as u16,
            group,
        });
        self.text.extend_from_slice(bytes);
    }

    /// Writes the file to `path` and syncs it.
    pub(crate) fn write(mut self, path: &Path) -> Result<()> {
        let text = std::mem::take(&mut self.text);
        let word = |o: &Occurrence| &text[o.at..o.at + usize::from(o.len)];
        self.occurrences.sort_unstable_by(|a, b| {
            a.key
                .cmp(&b.key)
                .then_with(|| word(a).cmp(word(b)))
                .then(a.group.cmp(&b.group))
        });
        let mut data = Vec::with_capacity(self.occurrences.len() * 8);
        let mut chunks: Vec<(u64, &[u8])> = Vec::new();
        let mut words = 0u64;
        let mut previous: &[u8] = &[];
        let mut groups: Vec<u32> = Vec::new();
        let mut at = 0;
        while at < self.occurrences.len() {
            let current = word(&self.occurrences[at]);
            groups.clear();
            while at < self.occurrences.len() && word(&self.occurrences[at]) == current {
                let group = self.occurrences[at].group;
                if groups.last() != Some(&group) {
                    groups.push(group);
                }
                at += 1;
            }
            let shared = if words.is_multiple_of(WORDS_PER_CHUNK as u64) {
                chunks.push((data.len() as u64, current));
                0
            } else {
                previous.iter().zip(current).take_while(|(a, b)| a == b).count()
            };
            let rest = &current[shared..];
            write_lengths(&mut data, shared, rest.len());
            for pair in rest.chunks(2) {
                let high = nibble(pair[0]) << 4;
                data.push(high | pair.get(1).map_or(0, |&d| nibble(d)));
            }
            // Most id words are in one group: its number and a flag saying
            // whether more follow share one varint.
            let more = groups.len() > 1;
            put_uvarint(&mut data, u64::from(groups[0]) << 1 | u64::from(more));
            if more {
                put_uvarint(&mut data, (groups.len() - 1) as u64);
                for pair in groups.windows(2) {
                    put_uvarint(&mut data, u64::from(pair[1] - pair[0]));
                }
            }
            previous = current;
            words += 1;
        }
        let footer_offset = data.len() as u64;
        put_uvarint(&mut data, words);
        put_uvarint(&mut data, self.groups.len() as u64);
        for &(first, rows) in &self.groups {
            put_uvarint(&mut data, u64::from(first));
            data.push(rows);
        }
        put_uvarint(&mut data, chunks.len() as u64);
        for (offset, first) in &chunks {
            put_uvarint(&mut data, *offset);
            put_uvarint(&mut data, first.len() as u64);
            data.extend_from_slice(first);
        }
        data.extend_from_slice(&footer_offset.to_le_bytes());
        data.extend_from_slice(MAGIC);
        let mut file = File::create(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        file.write_all(&data)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }
}

/// What a walk does after a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    Continue,
    Stop,
}

/// A chunk's place in the file.
#[derive(Debug)]
struct ChunkStart {
    offset: u64,
    first: Box<[u8]>,
}

/// An open id word list: the footer in memory, the chunks read on demand.
#[derive(Debug)]
pub(crate) struct IdWords {
    file: File,
    data_end: u64,
    words: u64,
    groups: Vec<(u32, u8)>,
    chunks: Vec<ChunkStart>,
}

impl IdWords {
    pub(crate) fn open(path: &Path) -> Result<IdWords> {
        let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .len();
        if len < TRAILER_BYTES {
            return Err(damaged());
        }
        let mut trailer = [0u8; TRAILER_BYTES as usize];
        file.read_exact_at(&mut trailer, len - TRAILER_BYTES)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if &trailer[8..] != MAGIC {
            return Err(file_error("reading", "not an id word list"));
        }
        let data_end = u64::from_le_bytes(trailer[..8].try_into().map_err(|_| damaged())?);
        if data_end > len - TRAILER_BYTES {
            return Err(damaged());
        }
        let mut footer = vec![0u8; (len - TRAILER_BYTES - data_end) as usize];
        file.read_exact_at(&mut footer, data_end)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::read_footer(file, data_end, &mut Reader { bytes: &footer }).ok_or_else(damaged)
    }

    fn read_footer(file: File, data_end: u64, reader: &mut Reader<'_>) -> Option<IdWords> {
        let words = reader.uvarint()?;
        let count = usize::try_from(reader.uvarint()?).ok()?;
        let mut groups = Vec::with_capacity(count.min(reader.bytes.len()));
        for _ in 0..count {
            let first = u32::try_from(reader.uvarint()?).ok()?;
            let (&rows, rest) = reader.bytes.split_first()?;
            reader.bytes = rest;
            groups.push((first, rows));
        }
        let count = usize::try_from(reader.uvarint()?).ok()?;
        let mut chunks: Vec<ChunkStart> = Vec::with_capacity(count.min(reader.bytes.len()));
        for _ in 0..count {
            let offset = reader.uvarint()?;
            let len = usize::try_from(reader.uvarint()?).ok()?;
            let (first, rest) = reader.bytes.split_at_checked(len)?;
            reader.bytes = rest;
            let ascending = chunks.last().is_none_or(|c| c.offset < offset && *c.first < *first);
            if offset >= data_end || !ascending {
                return None;
            }
            chunks.push(ChunkStart {
                offset,
                first: first.into(),
            });
        }
        Some(IdWords {
            file,
            data_end,
            words,
            groups,
            chunks,
        })
    }

    /// How many distinct id words the list holds.
    pub(crate) fn len(&self) -> u64 {
        self.words
    }

    /// The rows of group `group`; the first is the `row` of its Tantivy
    /// document.
    pub(crate) fn group_rows(&self, group: u32) -> Result<Range<u32>> {
        let &(first, rows) = self.groups.get(group as usize).ok_or_else(damaged)?;
        Ok(first..first.saturating_add(u32::from(rows)))
    }

    /// The groups holding `word`, ascending (none when it is no id word).
    pub(crate) fn groups_of(&self, word: &str) -> Result<Vec<u32>> {
        let mut found = Vec::new();
        self.walk(word.as_bytes(), |candidate, groups| {
            if candidate == word {
                found.extend_from_slice(groups);
            }
            Walk::Stop
        })?;
        Ok(found)
    }

    /// Calls `visit` with each word from the first one `>= from`, ascending,
    /// and the groups holding it, until it says stop.
    pub(crate) fn walk(&self, from: &[u8], mut visit: impl FnMut(&str, &[u32]) -> Walk) -> Result<()> {
        let first_chunk = self
            .chunks
            .partition_point(|chunk| *chunk.first <= *from)
            .saturating_sub(1);
        let mut word: Vec<u8> = Vec::with_capacity(64);
        let mut groups: Vec<u32> = Vec::new();
        let mut next = first_chunk;
        let mut span_bytes = 0u64;
        while next < self.chunks.len() {
            // Whole chunks, up to span_bytes (at least one).
            let start = self.chunks[next].offset;
            let mut end_chunk = next + 1;
            while end_chunk < self.chunks.len() && self.chunks[end_chunk].offset - start < span_bytes {
                end_chunk += 1;
            }
            span_bytes = (span_bytes.max(1024) * 2).min(READ_SPAN_BYTES);
            let end = self.chunks.get(end_chunk).map_or(self.data_end, |c| c.offset);
            let mut span = vec![0u8; usize::try_from(end - start).map_err(|_| damaged())?];
            self.file
                .read_exact_at(&mut span, start)
                .map_err(|e| Error::io("reading the id word list".to_string(), e))?;
            let mut reader = Reader { bytes: &span };
            for _ in next..end_chunk {
                word.clear();
                for _ in 0..WORDS_PER_CHUNK {
                    if reader.bytes.is_empty() {
                        break;
                    }
                    read_word(&mut reader, &mut word, &mut groups).ok_or_else(damaged)?;
                    if word.as_slice() < from {
                        continue;
                    }
                    let text = std::str::from_utf8(&word).map_err(|_| damaged())?;
                    if visit(text, &groups) == Walk::Stop {
                        return Ok(());
                    }
                }
            }
            next = end_chunk;
        }
        Ok(())
    }
}

/// Lengths below this share one byte, a nibble each; this value in a nibble
/// means the rest of the length follows as a varint.
const LENGTH_ESCAPE: usize = 15;

/// Writes how many bytes a word shares with the one before and how many
/// follow: one byte for nearly every word.
fn write_lengths(data: &mut Vec<u8>, shared: usize, rest: usize) {
    data.push((shared.min(LENGTH_ESCAPE) as u8) << 4 | rest.min(LENGTH_ESCAPE) as u8);
    for length in [shared, rest] {
        if length >= LENGTH_ESCAPE {
            put_uvarint(data, (length - LENGTH_ESCAPE) as u64);
        }
    }
}

fn read_lengths(reader: &mut Reader<'_>) -> Option<(usize, usize)> {
    let (&byte, after) = reader.bytes.split_first()?;
    reader.bytes = after;
    let mut length = |nibble: u8| -> Option<usize> {
        let short = usize::from(nibble);
        if short < LENGTH_ESCAPE {
            return Some(short);
        }
        short.checked_add(usize::try_from(reader.uvarint()?).ok()?)
    };
    let shared = length(byte >> 4)?;
    let rest = length(byte & 0x0f)?;
    Some((shared, rest))
}

/// Reads one word written by [`IdWordsBuilder::write`] after `word` (the
/// previous word of the chunk, or empty), replacing it and `groups`.
fn read_word(reader: &mut Reader<'_>, word: &mut Vec<u8>, groups: &mut Vec<u32>) -> Option<()> {
    let (shared, rest) = read_lengths(reader)?;
    if shared > word.len() || shared.checked_add(rest)? > MAX_ID_WORD_BYTES {
        return None;
    }
    word.truncate(shared);
    let (packed, after) = reader.bytes.split_at_checked(rest.div_ceil(2))?;
    reader.bytes = after;
    for (at, byte) in packed.iter().enumerate() {
        word.push(HEX_DIGITS[usize::from(byte >> 4)]);
        if 2 * at + 1 < rest {
            word.push(HEX_DIGITS[usize::from(byte & 0x0f)]);
        }
    }
    let first = reader.uvarint()?;
    let mut group = u32::try_from(first >> 1).ok()?;
    groups.clear();
    groups.push(group);
    if first & 1 == 1 {
        let more = usize::try_from(reader.uvarint()?).ok()?;
        for _ in 0..more.min(reader.bytes.len()) {
            group = group.checked_add(u32::try_from(reader.uvarint()?).ok()?)?;
            groups.push(group);
        }
        if groups.len() != more + 1 {
            return None;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn id_words_are_long_lowercase_hexadecimal_words_with_a_digit() {
        for word in [
            "550e8400",
            "446655440000",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "12345678",
        ] {
            assert!(is_id_word(word), "{word}");
        }
        for word in [
            "e29b",
            "deadbeef",
            "550E8400",
            "550e840",
            "550e8400x",
            "decade12_",
            "日本550e8400",
        ] {
            assert!(!is_id_word(word), "{word}");
        }
        assert!(!is_id_word(&"1".repeat(MAX_ID_WORD_BYTES + 1)));
        assert!(may_be_in_id_word("dead") && may_be_in_id_word("5"));
        assert!(!may_be_in_id_word("error") && !may_be_in_id_word("") && !may_be_in_id_word("DEAD"));
    }

    fn write(entries: &[(&str, u32)], groups: u32) -> (tempfile::TempDir, IdWords) {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = IdWordsBuilder::default();
        for group in 0..groups {
            assert_eq!(builder.start_group(u64::from(group) * 64, 64).unwrap(), group);
        }
        for (word, group) in entries {
            builder.add(word, *group);
        }
        let path = dir.path().join(ID_WORDS_FILE);
        builder.write(&path).unwrap();
        let words = IdWords::open(&path).unwrap();
        (dir, words)
    }

    #[test]
    fn words_are_found_with_their_groups() {
        let (_dir, words) = write(
            &[
                ("550e8400", 3),
                ("446655440000", 1),
                ("550e8400", 0),
                ("550e8400", 3),
                ("550e8401", 2),
            ],
            4,
        );
        assert_eq!(words.len(), 3);
        assert_eq!(words.groups_of("550e8400").unwrap(), [0, 3]);
        assert_eq!(words.groups_of("550e8401").unwrap(), [2]);
        assert!(words.groups_of("550e8402").unwrap().is_empty());
        assert!(words.groups_of("0").unwrap().is_empty());
        assert_eq!(words.group_rows(3).unwrap(), 192..256);
        assert!(words.group_rows(4).is_err());
    }

    #[test]
    fn a_damaged_file_is_an_error() {
        let (dir, _) = write(&[("550e8400", 0), ("446655440000", 0)], 1);
        let path = dir.path().join(ID_WORDS_FILE);
        let bytes = std::fs::read(&path).unwrap();
        for cut in 0..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(IdWords::open(&path).is_err(), "cut at {cut}");
        }
        // Damage inside the chunks: a walk fails or ends, never panics.
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0xff;
            std::fs::write(&path, &damaged).unwrap();
            if let Ok(words) = IdWords::open(&path) {
                let _ = words.walk(b"", |_, _| Walk::Continue);
                let _ = words.groups_of("550e8400");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever the words (odd lengths, shared prefixes, many chunks),
        /// lookups and walks from any point give what a sorted map gives.
        #[test]
        fn lookups_and_walks_equal_a_sorted_map(
            entries in proptest::collection::vec(("[0-9a-f]{0,3}[0-9][0-9a-f]{7,20}", 0u32..50), 0..600),
            probes in proptest::collection::vec("[0-9a-f]{0,12}", 1..8),
        ) {
            let borrowed: Vec<(&str, u32)> = entries.iter().map(|(w, g)| (w.as_str(), *g)).collect();
            let (_dir, words) = write(&borrowed, 50);
            let mut oracle: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
            for (word, group) in &borrowed {
                oracle.entry(word).or_default().push(*group);
            }
            for groups in oracle.values_mut() {
                groups.sort_unstable();
                groups.dedup();
            }
            proptest::prop_assert_eq!(words.len(), oracle.len() as u64);
            for (word, groups) in &oracle {
                proptest::prop_assert_eq!(&words.groups_of(word).unwrap(), groups);
            }
            for probe in &probes {
                let mut walked: Vec<(String, Vec<u32>)> = Vec::new();
                words.walk(probe.as_bytes(), |word, groups| {
                    walked.push((word.to_string(), groups.to_vec()));
                    Walk::Continue
                }).unwrap();
                let expected: Vec<(String, Vec<u32>)> = oracle
                    .range(probe.as_str()..)
                    .map(|(w, g)| (w.to_string(), g.clone()))
                    .collect();
                proptest::prop_assert_eq!(walked, expected);
            }
        }
    }
}
