//! The log head: one tenant's recent log entries in memory, by stream.
//!
//! A stream is found by its label set and addressed by a reference (the one
//! its WAL records use). A stream's entries are handed out sorted by
//! (timestamp, line), so any arrival order is accepted, and an identical
//! (timestamp, line) is stored once, as Loki does; the first structured
//! metadata pushed for it stays. Most of them are held compressed (see
//! [`StreamEntries`]).

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use tidewatch_model::logs::{LogEntry, NsRange, TimestampNs};
use tidewatch_model::seam::matches_all;
use tidewatch_model::{Label, Labels, Matcher};

use super::align_down;

/// A stream's open tail is sealed into a compressed chunk once its encoded
/// entries reach this many bytes. Small enough that 10,000 streams' open
/// tails stay under ~200 MB; large enough for LZ4 to find the repeats in a
/// stream's lines (about 3× on the load generator's).
#[cfg(not(test))]
const SEAL_BYTES: usize = 16 * 1024;
/// Unit tests seal every few entries, so that most entries live in chunks.
#[cfg(test)]
const SEAL_BYTES: usize = 512;

/// One stream's entries in the head.
///
/// The newest arrivals sit uncompressed in an [`OpenTail`], encoded as a
/// chunk's entries are; every [`SEAL_BYTES`] they are compressed into a
/// sealed [`Chunk`]. Entries of one chunk are sorted by (timestamp, line);
/// chunks may overlap in time (entries arrive in any order). Each chunk
/// keeps a hash of every entry's (timestamp, line), so the duplicate check
/// decompresses a chunk only for an entry that is (or collides with) one of
/// its own; an entry newer than every chunk, as most are, checks none.
///
/// Keeping every line as its own `String` in a tree cost ~260 bytes per
/// entry (3 GB of RSS for a 10M-line push of 1.75 GB). A tree of the open
/// entries alone, a `String` each, still cost a fifth of the CPU of a 10M
/// line push and flush at 10k streams: the tree's inserts, and encoding
/// every entry again when it was sealed.
#[derive(Debug, Default)]
pub(crate) struct StreamEntries {
    open: OpenTail,
    sealed: Vec<Chunk>,
    sealed_bytes: usize,
    /// The newest timestamp in any chunk: an entry after it (the common,
    /// in-order case) cannot be in one.
    sealed_max: Option<TimestampNs>,
}

/// Entries of one stream, sorted by (timestamp, line), encoded and
/// compressed (see [`encode_entry`]).
#[derive(Debug)]
struct Chunk {
    compressed: Vec<u8>,
    raw_len: usize,
    /// Bytes of the entries' lines.
    line_bytes: usize,
    min: TimestampNs,
    max: TimestampNs,
    /// [`entry_key`] of each entry, sorted: the duplicate check decompresses
    /// the chunk only on a match.
    keys: Box<[u64]>,
}

impl Chunk {
    fn overlaps(&self, range: NsRange) -> bool {
        self.min <= range.end && range.start <= self.max
    }

    fn memory_bytes(&self) -> usize {
        self.compressed.len() + std::mem::size_of_val(&*self.keys)
    }

    fn raw(&self) -> Vec<u8> {
        let raw = lz4_flex::block::decompress(&self.compressed, self.raw_len);
        // Only this module writes chunks, in memory: a failure is a bug.
        raw.expect("a sealed log chunk decompresses")
    }

    /// Appends the chunk's entries in `range` that `wanted` accepts to
    /// `out`, in order.
    fn extend_in_range(&self, range: NsRange, wanted: impl Fn(&LogEntry) -> bool, out: &mut Vec<LogEntry>) {
        for raw in raw_entries(&self.raw()).filter(|raw| range.contains(raw.timestamp)) {
            let entry = raw.decode();
            if wanted(&entry) {
                out.push(entry);
            }
        }
    }

    /// Appends the chunk's entries older than `cutoff` to `older`, the
    /// others to `newer`, in order.
    fn split_into(&self, cutoff: TimestampNs, older: &mut Vec<LogEntry>, newer: &mut Vec<LogEntry>) {
        for raw in raw_entries(&self.raw()) {
            let side = if raw.timestamp < cutoff {
                &mut *older
            } else {
                &mut *newer
            };
            side.push(raw.decode());
        }
    }

    /// Whether the chunk holds this (timestamp, line), compared in place.
    fn holds(&self, timestamp: TimestampNs, line: &[u8]) -> bool {
        raw_entries(&self.raw()).any(|e| e.timestamp == timestamp && e.line == line)
    }
}

/// A stream's newest entries, encoded as a chunk's are ([`encode_entry`]),
/// in arrival order: adding one copies its line once, and sealing entries
/// that arrived in order compresses the buffer as it is.
#[derive(Debug, Default)]
struct OpenTail {
    raw: Vec<u8>,
    /// Timestamp and start in `raw` of each entry, in arrival order.
    starts: Vec<(TimestampNs, usize)>,
    /// Set when an entry arrived before (by timestamp, then line) the one
    /// added before it: arrival order may then not be entry order. Unset,
    /// the entries are sorted.
    unsorted: bool,
    /// Oldest and newest timestamps held (meaningless when empty).
    min: TimestampNs,
    max: TimestampNs,
}

impl OpenTail {
    fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    fn bounds(&self) -> Option<(TimestampNs, TimestampNs)> {
        (!self.is_empty()).then_some((self.min, self.max))
    }

    /// The encoded bytes of entry `at`.
    fn span(&self, at: usize) -> &[u8] {
        let start = self.starts[at].1;
        let end = self.starts.get(at + 1).map_or(self.raw.len(), |&(_, next)| next);
        &self.raw[start..end]
    }

    fn entry(&self, at: usize) -> RawEntry<'_> {
        raw_entries(self.span(at)).next().expect("an open entry decodes")
    }

    fn line(&self, at: usize) -> &[u8] {
        let mut after_timestamp = &self.span(at)[8..];
        take_text(&mut after_timestamp)
    }

    /// Positions of the entries that may have timestamps in `range`: those
    /// that do when sorted, every one otherwise.
    fn positions_in(&self, range: NsRange) -> Range<usize> {
        if self.unsorted {
            return 0..self.starts.len();
        }
        let start = self.starts.partition_point(|&(t, _)| t < range.start);
        let end = start + self.starts[start..].partition_point(|&(t, _)| t <= range.end);
        start..end
    }

    fn contains(&self, timestamp: TimestampNs, line: &[u8]) -> bool {
        if self.is_empty() || timestamp < self.min || timestamp > self.max {
            return false;
        }
        self.positions_in(NsRange::new(timestamp, timestamp))
            .any(|at| self.starts[at].0 == timestamp && self.line(at) == line)
    }

    fn push(&mut self, timestamp: TimestampNs, line: &str, metadata: &Labels) {
        match self.starts.last() {
            Some(&(last, _)) => {
                if !self.unsorted && (timestamp, line.as_bytes()) < (last, self.line(self.starts.len() - 1)) {
                    self.unsorted = true;
                }
                self.min = self.min.min(timestamp);
                self.max = self.max.max(timestamp);
            }
            None => {
                (self.min, self.max) = (timestamp, timestamp);
                // Room for a whole tail at once: growing it step by step
                // copied each stream's lines several times over.
                self.raw.reserve(SEAL_BYTES + SEAL_BYTES / 4);
            }
        }
        self.starts.push((timestamp, self.raw.len()));
        encode_entry(&mut self.raw, timestamp, line, metadata);
    }

    fn encoded_bytes(&self) -> usize {
        self.raw.len()
    }

    fn line_bytes(&self) -> usize {
        (0..self.starts.len()).map(|at| self.line(at).len()).sum()
    }

    fn memory_bytes(&self) -> usize {
        self.raw.capacity() + self.starts.capacity() * std::mem::size_of::<(TimestampNs, usize)>()
    }

    /// Compresses the entries into a chunk, in (timestamp, line) order, and
    /// empties the tail, keeping its buffer for the stream's next entries.
    fn seal(&mut self) -> Option<Chunk> {
        if self.is_empty() {
            return None;
        }
        let mut keys: Vec<u64> = (0..self.starts.len())
            .map(|at| entry_key(self.starts[at].0, self.line(at)))
            .collect();
        keys.sort_unstable();
        let compressed = if self.unsorted {
            let mut order: Vec<usize> = (0..self.starts.len()).collect();
            order.sort_by(|&a, &b| (self.starts[a].0, self.line(a)).cmp(&(self.starts[b].0, self.line(b))));
            let mut sorted = Vec::with_capacity(self.raw.len());
            for at in order {
                sorted.extend_from_slice(self.span(at));
            }
            lz4_flex::block::compress(&sorted)
        } else {
            lz4_flex::block::compress(&self.raw)
        };
        let chunk = Chunk {
            compressed,
            raw_len: self.raw.len(),
            line_bytes: self.line_bytes(),
            min: self.min,
            max: self.max,
            keys: keys.into_boxed_slice(),
        };
        self.raw.clear();
        self.starts.clear();
        self.unsorted = false;
        Some(chunk)
    }

    /// Appends the entries with timestamps in `range` that `wanted` accepts
    /// to `out`; false when they may be out of order.
    fn extend_in_range(&self, range: NsRange, wanted: impl Fn(&LogEntry) -> bool, out: &mut Vec<LogEntry>) -> bool {
        for at in self.positions_in(range) {
            if range.contains(self.starts[at].0) {
                let entry = self.entry(at).decode();
                if wanted(&entry) {
                    out.push(entry);
                }
            }
        }
        !self.unsorted
    }

    fn has_entry_in(&self, range: NsRange) -> bool {
        self.positions_in(range).any(|at| range.contains(self.starts[at].0))
    }

    /// Removes the entries older than `cutoff` and appends them to `out`.
    fn take_before(&mut self, cutoff: TimestampNs, out: &mut Vec<LogEntry>) {
        if self.is_empty() || self.min >= cutoff {
            return;
        }
        if self.max < cutoff {
            out.extend((0..self.starts.len()).map(|at| self.entry(at).decode()));
            // A stream whose newest entry is flushed is likely idle: its
            // buffer goes back rather than waiting for entries.
            *self = OpenTail::default();
            return;
        }
        let mut kept = OpenTail {
            raw: Vec::with_capacity(self.raw.capacity()),
            unsorted: self.unsorted,
            min: TimestampNs::MAX,
            max: TimestampNs::MIN,
            ..OpenTail::default()
        };
        for at in 0..self.starts.len() {
            let timestamp = self.starts[at].0;
            if timestamp < cutoff {
                out.push(self.entry(at).decode());
            } else {
                kept.starts.push((timestamp, kept.raw.len()));
                kept.raw.extend_from_slice(self.span(at));
                kept.min = kept.min.min(timestamp);
                kept.max = kept.max.max(timestamp);
            }
        }
        *self = kept;
    }
}

/// A chunk entry: timestamp (8 bytes LE), line length (4 bytes LE) and line,
/// metadata pair count (4 bytes LE), then each name and value as length and
/// bytes.
fn encode_entry(out: &mut Vec<u8>, timestamp: TimestampNs, line: &str, metadata: &Labels) {
    let put = |out: &mut Vec<u8>, text: &str| {
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    };
    out.extend_from_slice(&timestamp.to_le_bytes());
    put(out, line);
    out.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
    for label in metadata.iter() {
        put(out, &label.name);
        put(out, &label.value);
    }
}

fn take<'a>(at: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, rest) = at.split_at(n);
    *at = rest;
    head
}

fn number(at: &mut &[u8]) -> usize {
    u32::from_le_bytes(take(at, 4).try_into().expect("4 bytes")) as usize
}

fn take_text<'a>(at: &mut &'a [u8]) -> &'a [u8] {
    let len = number(at);
    take(at, len)
}

/// One entry of a decompressed chunk, its texts still bytes in the chunk.
struct RawEntry<'a> {
    timestamp: TimestampNs,
    line: &'a [u8],
    /// (name, value) of each metadata pair.
    metadata: Vec<(&'a [u8], &'a [u8])>,
}

impl RawEntry<'_> {
    fn decode(self) -> LogEntry {
        // Written from `&str`s by `encode_entry`.
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).expect("chunk text is UTF-8");
        let structured_metadata = if self.metadata.is_empty() {
            Labels::default()
        } else {
            Labels::from_sorted(
                self.metadata
                    .into_iter()
                    .map(|(name, value)| Label::new(text(name), text(value)))
                    .collect(),
            )
        };
        LogEntry {
            timestamp: self.timestamp,
            line: text(self.line),
            structured_metadata,
        }
    }
}

/// The entries of a decompressed chunk, in order (see [`encode_entry`]).
fn raw_entries(raw: &[u8]) -> impl Iterator<Item = RawEntry<'_>> {
    let mut at = raw;
    std::iter::from_fn(move || {
        if at.is_empty() {
            return None;
        }
        let timestamp = i64::from_le_bytes(take(&mut at, 8).try_into().expect("8 bytes"));
        let line = take_text(&mut at);
        let metadata = (0..number(&mut at))
            .map(|_| (take_text(&mut at), take_text(&mut at)))
            .collect();
        Some(RawEntry {
            timestamp,
            line,
            metadata,
        })
    })
}

/// The hash of a (timestamp, line) kept for sealed entries. One-shot with
/// the timestamp as seed: the streaming hasher's state is ~600 bytes to set
/// up, which showed as 10 % of push CPU.
fn entry_key(timestamp: TimestampNs, line: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(line, timestamp as u64)
}

impl StreamEntries {
    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty() && self.sealed.is_empty()
    }

    /// About how many bytes the entries hold: compressed chunks with their
    /// entries' hashes, and the open tail's buffers.
    fn memory_bytes(&self) -> usize {
        self.sealed_bytes + self.open.memory_bytes()
    }

    /// Whether an entry with this timestamp and line is held.
    pub(crate) fn contains(&self, timestamp: TimestampNs, line: &str) -> bool {
        let line = line.as_bytes();
        if self.open.contains(timestamp, line) {
            return true;
        }
        if self.sealed_max.is_none_or(|max| timestamp > max) {
            return false;
        }
        // A hash match is checked against the line itself: a collision must
        // not drop an entry.
        let key = entry_key(timestamp, line);
        self.sealed
            .iter()
            .filter(|chunk| chunk.min <= timestamp && timestamp <= chunk.max)
            .any(|chunk| chunk.keys.binary_search(&key).is_ok() && chunk.holds(timestamp, line))
    }

    /// Adds an entry; false when it is already held.
    fn insert(&mut self, entry: LogEntry) -> bool {
        if self.contains(entry.timestamp, &entry.line) {
            return false;
        }
        self.insert_new(entry);
        true
    }

    /// Adds an entry the caller has checked is not held.
    fn insert_new(&mut self, entry: LogEntry) {
        debug_assert!(
            !self.contains(entry.timestamp, &entry.line),
            "insert_new of an entry already held"
        );
        self.open.push(entry.timestamp, &entry.line, &entry.structured_metadata);
        if self.open.encoded_bytes() >= SEAL_BYTES {
            self.seal();
        }
    }

    /// Compresses the open entries into a chunk.
    fn seal(&mut self) {
        if let Some(chunk) = self.open.seal() {
            self.push_chunk(chunk);
        }
    }

    /// Oldest and newest timestamps, if any entry is held.
    fn time_bounds(&self) -> Option<(TimestampNs, TimestampNs)> {
        self.sealed
            .iter()
            .map(|chunk| (chunk.min, chunk.max))
            .chain(self.open.bounds())
            .reduce(|(min, max), (lo, hi)| (min.min(lo), max.max(hi)))
    }

    /// Every entry, sorted by (timestamp, line).
    pub(crate) fn all(&self) -> Vec<LogEntry> {
        self.in_range(NsRange::new(TimestampNs::MIN, TimestampNs::MAX), &[])
    }

    /// Entries in `range` whose line contains every needle, sorted by
    /// (timestamp, line).
    pub(crate) fn in_range(&self, range: NsRange, needles: &[String]) -> Vec<LogEntry> {
        let wanted = |entry: &LogEntry| needles.iter().all(|needle| entry.line.contains(needle.as_str()));
        let overlapping = || self.sealed.iter().filter(|chunk| chunk.overlaps(range));
        // Room for the chunks the range covers whole (a flush takes all).
        let covered: usize = overlapping()
            .filter(|chunk| range.contains(chunk.min) && range.contains(chunk.max))
            .map(|chunk| chunk.keys.len())
            .sum();
        let mut out = Runs::with_capacity(covered + self.open.starts.len());
        for chunk in overlapping() {
            let from = out.start();
            chunk.extend_in_range(range, wanted, &mut out.entries);
            out.end(from, true);
        }
        let from = out.start();
        let sorted = self.open.extend_in_range(range, wanted, &mut out.entries);
        out.end(from, sorted);
        out.into_sorted()
    }

    /// Whether an entry lies in `range`.
    pub(crate) fn has_entry_in(&self, range: NsRange) -> bool {
        if self.open.has_entry_in(range) {
            return true;
        }
        self.sealed.iter().filter(|chunk| chunk.overlaps(range)).any(|chunk| {
            range.contains(chunk.min)
                || range.contains(chunk.max)
                || raw_entries(&chunk.raw()).any(|e| range.contains(e.timestamp))
        })
    }

    /// Moves the entries older than `cutoff` out, into entries of their
    /// own. Chunks wholly older move as they are (compressed), newer ones
    /// stay; only a chunk or open tail holding entries on both sides of the
    /// cutoff is decoded, its entries added again to the side they belong to.
    fn split_before(&mut self, cutoff: TimestampNs) -> StreamEntries {
        if self.time_bounds().is_some_and(|(_, newest)| newest < cutoff) {
            return std::mem::take(self);
        }
        let mut older = StreamEntries::default();
        let (mut older_entries, mut newer_entries) = (Vec::new(), Vec::new());
        let mut kept = Vec::with_capacity(self.sealed.len());
        for chunk in std::mem::take(&mut self.sealed) {
            if chunk.min >= cutoff {
                kept.push(chunk);
            } else if chunk.max < cutoff {
                older.push_chunk(chunk);
            } else {
                chunk.split_into(cutoff, &mut older_entries, &mut newer_entries);
            }
        }
        self.open.take_before(cutoff, &mut older_entries);
        self.sealed_bytes = 0;
        self.sealed_max = None;
        for chunk in kept {
            self.push_chunk(chunk);
        }
        // Entries of one stream are unique already: no need to look each up.
        for entry in newer_entries {
            self.insert_new(entry);
        }
        for entry in older_entries {
            older.insert_new(entry);
        }
        older
    }

    fn push_chunk(&mut self, chunk: Chunk) {
        self.sealed_bytes += chunk.memory_bytes();
        self.sealed_max = Some(self.sealed_max.map_or(chunk.max, |m| m.max(chunk.max)));
        self.sealed.push(chunk);
    }

    /// How many entries are held.
    pub(crate) fn entry_count(&self) -> usize {
        self.sealed.iter().map(|chunk| chunk.keys.len()).sum::<usize>() + self.open.starts.len()
    }

    /// Bytes of the held entries' lines.
    pub(crate) fn line_bytes(&self) -> usize {
        self.sealed.iter().map(|chunk| chunk.line_bytes).sum::<usize>() + self.open.line_bytes()
    }

    /// Starts of the windows (`window` ns long, aligned to multiples of it)
    /// holding an entry, ascending. A chunk's oldest and newest entries name
    /// their windows; only a chunk spanning more than two windows is decoded
    /// to learn which between them it has entries in.
    pub(crate) fn window_starts(&self, window: i64) -> Vec<TimestampNs> {
        let mut starts = std::collections::BTreeSet::new();
        let spans_more = |min: TimestampNs, max: TimestampNs| {
            align_down(max, window).saturating_sub(align_down(min, window)) > window
        };
        for chunk in &self.sealed {
            starts.insert(align_down(chunk.min, window));
            starts.insert(align_down(chunk.max, window));
            if spans_more(chunk.min, chunk.max) {
                starts.extend(raw_entries(&chunk.raw()).map(|e| align_down(e.timestamp, window)));
            }
        }
        if let Some((min, max)) = self.open.bounds() {
            starts.insert(align_down(min, window));
            starts.insert(align_down(max, window));
            if spans_more(min, max) {
                starts.extend(self.open.starts.iter().map(|&(t, _)| align_down(t, window)));
            }
        }
        starts.into_iter().collect()
    }
}

/// The times of the window starting at `start`.
pub(crate) fn window_range(start: TimestampNs, window: i64) -> NsRange {
    NsRange::new(start, start.saturating_add(window - 1))
}

/// Entries gathered run by run (a chunk's, the open tail's), each run
/// sorted or not. They are sorted at the end only when a run was not, or
/// began before the one before it ended: streams whose entries came in
/// order, as most do, hand out their chunks' entries as they are.
struct Runs {
    entries: Vec<LogEntry>,
    sorted: bool,
}

impl Runs {
    fn with_capacity(capacity: usize) -> Runs {
        Runs {
            entries: Vec::with_capacity(capacity),
            sorted: true,
        }
    }

    /// Where the next run starts.
    fn start(&self) -> usize {
        self.entries.len()
    }

    /// Ends the run appended since `from`.
    fn end(&mut self, from: usize, run_sorted: bool) {
        if from == self.entries.len() {
            return;
        }
        self.sorted &= run_sorted && (from == 0 || entry_order(&self.entries[from - 1], &self.entries[from]).is_le());
    }

    fn into_sorted(mut self) -> Vec<LogEntry> {
        if !self.sorted {
            self.entries.sort_by(entry_order);
        }
        self.entries
    }
}

fn entry_order(a: &LogEntry, b: &LogEntry) -> std::cmp::Ordering {
    (a.timestamp, &a.line).cmp(&(b.timestamp, &b.line))
}

/// A stream in the head.
#[derive(Debug)]
pub(crate) struct HeadStream {
    pub(crate) labels: Labels,
    pub(crate) entries: StreamEntries,
}

/// Entries taken out of the head for a flush, with the streams still live.
#[derive(Debug)]
pub(crate) struct Taken {
    /// Every stream that had entries before the cutoff, in label order, each
    /// with those entries.
    pub(crate) streams: Vec<(Labels, StreamEntries)>,
    /// Label sets of the streams left in the head.
    pub(crate) live: HashSet<Labels>,
}

/// One tenant's log head.
#[derive(Debug, Default)]
pub(crate) struct LogHead {
    // foldhash rather than SipHash or xxh3: every pushed stream is looked up
    // here, and hashing its label strings was ~7 % of push CPU at 10k
    // streams with SipHash, ~4 % with xxh3's streaming state (set up per
    // hash). Seeded per map, so a client cannot aim keys at one bucket.
    by_labels: HashMap<Labels, u64, foldhash::fast::RandomState>,
    streams: HashMap<u64, HeadStream, foldhash::fast::RandomState>,
    /// Every reference handed out so far is below this: a reference is never
    /// reused while a WAL record may still name it.
    next_ref: u64,
    entries: u64,
    line_bytes: u64,
}

impl LogHead {
    pub(crate) fn lookup(&self, labels: &Labels) -> Option<u64> {
        self.by_labels.get(labels).copied()
    }

    pub(crate) fn stream_count(&self) -> usize {
        self.streams.len()
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.entries
    }

    pub(crate) fn line_bytes(&self) -> u64 {
        self.line_bytes
    }

    /// About how much memory the entries take (see [`StreamEntries`]).
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.streams.values().map(|s| s.entries.memory_bytes() as u64).sum()
    }

    /// The reference the next new stream gets.
    pub(crate) fn next_ref(&self) -> u64 {
        self.next_ref
    }

    /// Creates a stream under a fresh reference.
    pub(crate) fn create(&mut self, labels: Labels) -> u64 {
        let stream_ref = self.next_ref;
        self.create_with_ref(stream_ref, labels)
    }

    /// Creates a stream under `stream_ref` (replay), or returns the reference
    /// the label set already has: after a flush dropped a stream, a later push
    /// may have logged the same labels under a new reference.
    pub(crate) fn create_with_ref(&mut self, stream_ref: u64, labels: Labels) -> u64 {
        self.next_ref = self.next_ref.max(stream_ref.saturating_add(1));
        if let Some(&existing) = self.by_labels.get(&labels) {
            return existing;
        }
        self.by_labels.insert(labels.clone(), stream_ref);
        self.streams.insert(
            stream_ref,
            HeadStream {
                labels,
                entries: StreamEntries::default(),
            },
        );
        stream_ref
    }

    /// Whether the stream holds an entry with this timestamp and line.
    pub(crate) fn contains(&self, stream_ref: u64, timestamp: TimestampNs, line: &str) -> bool {
        self.streams
            .get(&stream_ref)
            .is_some_and(|stream| stream.entries.contains(timestamp, line))
    }

    /// Adds an entry the caller has checked (under the same lock) is not
    /// held: a push checks every entry before it logs them.
    pub(crate) fn insert_new(&mut self, stream_ref: u64, entry: LogEntry) {
        let Some(stream) = self.streams.get_mut(&stream_ref) else {
            return;
        };
        self.entries += 1;
        self.line_bytes += entry.line.len() as u64;
        stream.entries.insert_new(entry);
    }

    /// Adds an entry; false when the stream is unknown or already holds it.
    pub(crate) fn insert(&mut self, stream_ref: u64, entry: LogEntry) -> bool {
        let Some(stream) = self.streams.get_mut(&stream_ref) else {
            return false;
        };
        let bytes = entry.line.len() as u64;
        if !stream.entries.insert(entry) {
            return false;
        }
        self.entries += 1;
        self.line_bytes += bytes;
        true
    }

    /// Oldest and newest entry timestamps, if any entry is held.
    pub(crate) fn time_bounds(&self) -> Option<(TimestampNs, TimestampNs)> {
        self.streams
            .values()
            .filter_map(|stream| stream.entries.time_bounds())
            .reduce(|(min, max), (lo, hi)| (min.min(lo), max.max(hi)))
    }

    /// Streams matching `matchers` with an entry in `range`, unsorted.
    pub(crate) fn matching<'a>(
        &'a self,
        matchers: &'a [Matcher],
        range: NsRange,
    ) -> impl Iterator<Item = &'a HeadStream> + 'a {
        self.streams
            .values()
            .filter(move |stream| matches_all(&stream.labels, matchers) && stream.entries.has_entry_in(range))
    }

    pub(crate) fn stream_by_labels(&self, labels: &Labels) -> Option<&HeadStream> {
        self.by_labels.get(labels).and_then(|r| self.streams.get(r))
    }

    /// Removes and returns every entry older than `cutoff` (every entry when
    /// `None`), still compressed; streams left without entries are dropped
    /// (Loki's streams limit counts live streams).
    pub(crate) fn take_before(&mut self, cutoff: Option<TimestampNs>) -> Taken {
        let mut streams = Vec::new();
        let mut emptied = Vec::new();
        for (&stream_ref, stream) in &mut self.streams {
            let taken = match cutoff {
                Some(cutoff) => stream.entries.split_before(cutoff),
                None => std::mem::take(&mut stream.entries),
            };
            if stream.entries.is_empty() {
                emptied.push(stream_ref);
            }
            if taken.is_empty() {
                continue;
            }
            self.entries -= taken.entry_count() as u64;
            self.line_bytes -= taken.line_bytes() as u64;
            streams.push((stream.labels.clone(), taken));
        }
        for stream_ref in emptied {
            if let Some(stream) = self.streams.remove(&stream_ref) {
                self.by_labels.remove(&stream.labels);
            }
        }
        streams.sort_by(|a, b| a.0.cmp(&b.0));
        let live = self.by_labels.keys().cloned().collect();
        Taken { streams, live }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;
    use std::collections::BTreeMap;

    type Oracle = BTreeMap<(TimestampNs, String), Labels>;

    fn oracle_in(oracle: &Oracle, range: NsRange, needles: &[String]) -> Vec<LogEntry> {
        oracle
            .iter()
            .filter(|((t, line), _)| range.contains(*t) && needles.iter().all(|n| line.contains(n.as_str())))
            .map(|((timestamp, line), metadata)| LogEntry {
                timestamp: *timestamp,
                line: line.clone(),
                structured_metadata: metadata.clone(),
            })
            .collect()
    }

    fn push_and_check(
        entries: &mut StreamEntries,
        oracle: &mut Oracle,
        pushes: &[(i64, String, bool)],
    ) -> Result<(), TestCaseError> {
        for (timestamp, line, with_metadata) in pushes {
            let metadata = if *with_metadata {
                Labels::from_pairs([("trace_id", format!("t{timestamp}"))])
            } else {
                Labels::default()
            };
            let new = !oracle.contains_key(&(*timestamp, line.clone()));
            if new {
                oracle.insert((*timestamp, line.clone()), metadata.clone());
            }
            let entry = LogEntry {
                timestamp: *timestamp,
                line: line.clone(),
                structured_metadata: metadata,
            };
            prop_assert_eq!(entries.insert(entry), new);
            prop_assert!(entries.contains(*timestamp, line));
        }
        Ok(())
    }

    proptest! {
        // Sealed chunks plus the open tail answer exactly what one sorted
        // map of every entry would, whatever the arrival order (in order for
        // a while, as most streams are, then any), duplicates and cut, and
        // go on doing so for entries pushed after the cut.
        #[test]
        fn stream_entries_match_a_sorted_map(
            mut pushes in proptest::collection::vec((0i64..400, "[a-c ]{0,60}", any::<bool>()), 1..300),
            in_order in 0usize..300,
            later in proptest::collection::vec((0i64..500, "[a-c ]{0,60}", any::<bool>()), 0..100),
            start in 0i64..400,
            span in 0i64..200,
            needle in "[a-c]{0,2}",
            cutoff in 0i64..400,
            window in prop_oneof![Just(1i64), 3i64..40, Just(1000)],
        ) {
            let in_order = in_order.min(pushes.len());
            pushes[..in_order].sort();
            let mut entries = StreamEntries::default();
            let mut oracle = Oracle::new();
            push_and_check(&mut entries, &mut oracle, &pushes)?;
            prop_assert!(entries.sealed.len() >= pushes.len() * 20 / SEAL_BYTES / 2, "chunks get sealed");
            let range = NsRange::new(start, start + span);
            let needles = vec![needle];
            prop_assert_eq!(entries.in_range(range, &needles), oracle_in(&oracle, range, &needles));
            prop_assert_eq!(entries.has_entry_in(range), oracle.keys().any(|(t, _)| range.contains(*t)));
            let bounds = oracle.keys().next().zip(oracle.keys().map(|(t, _)| *t).max()).map(|((min, _), max)| (*min, max));
            prop_assert_eq!(entries.time_bounds(), bounds);
            prop_assert!(!entries.contains(-1, "never pushed"));
            let starts: std::collections::BTreeSet<i64> = oracle.keys().map(|(t, _)| t.div_euclid(window) * window).collect();
            prop_assert_eq!(entries.window_starts(window), starts.into_iter().collect::<Vec<_>>());
            let taken = entries.split_before(cutoff).all();
            let mut kept = oracle.split_off(&(cutoff, String::new()));
            let all = NsRange::new(i64::MIN, i64::MAX);
            prop_assert_eq!(taken, oracle_in(&oracle, all, &[]));
            prop_assert_eq!(entries.all(), oracle_in(&kept, all, &[]));
            prop_assert_eq!(entries.is_empty(), kept.is_empty());
            for (timestamp, line) in oracle.keys() {
                prop_assert!(!entries.contains(*timestamp, line), "taken entries are gone");
            }
            push_and_check(&mut entries, &mut kept, &later)?;
            prop_assert_eq!(entries.all(), oracle_in(&kept, all, &[]));
            let bounds = kept.keys().next().zip(kept.keys().map(|(t, _)| *t).max()).map(|((min, _), max)| (*min, max));
            prop_assert_eq!(entries.time_bounds(), bounds);
        }
    }

    #[test]
    fn entries_in_order_stay_in_arrival_order_until_sealed() {
        let mut entries = StreamEntries::default();
        entries.insert(LogEntry::new(10, "b"));
        entries.insert(LogEntry::new(10, "c"));
        entries.insert(LogEntry::new(11, "a"));
        assert!(!entries.open.unsorted, "ascending (timestamp, line) is in order");
        entries.insert(LogEntry::new(11, "0"));
        assert!(entries.open.unsorted, "a smaller line at the same timestamp is not");
        assert_eq!(
            entries
                .all()
                .iter()
                .map(|e| (e.timestamp, e.line.as_str()))
                .collect::<Vec<_>>(),
            [(10, "b"), (10, "c"), (11, "0"), (11, "a")]
        );
        entries.seal();
        assert!(entries.open.is_empty() && !entries.open.unsorted);
        let chunk: Vec<_> = raw_entries(&entries.sealed[0].raw())
            .map(|e| (e.timestamp, e.line.to_vec()))
            .collect();
        assert_eq!(chunk[2], (11, b"0".to_vec()), "a chunk is sealed sorted");
    }

    #[test]
    fn dedupes_and_takes_before_cutoff() {
        let mut head = LogHead::default();
        let api = Labels::from_pairs([("app", "api")]);
        let id = head.create(api.clone());
        assert!(head.insert(id, LogEntry::new(20, "b")));
        assert!(head.insert(id, LogEntry::new(10, "a")));
        assert!(
            !head.insert(id, LogEntry::new(10, "a")),
            "same (timestamp, line) is stored once"
        );
        assert!(head.contains(id, 10, "a"));
        assert!(!head.contains(id, 10, "a2"));
        assert_eq!(head.time_bounds(), Some((10, 20)));
        let taken = head.take_before(Some(15));
        assert_eq!(taken.streams.len(), 1);
        assert_eq!(taken.streams[0].1.all(), vec![LogEntry::new(10, "a")]);
        assert!(taken.live.contains(&api));
        let taken = head.take_before(None);
        assert!(taken.live.is_empty(), "an emptied stream is dropped");
        assert_eq!(head.stream_count(), 0);
        assert_eq!(head.entry_count(), 0);
        let again = head.create(api);
        assert!(again > id, "references are never reused");
    }
}
