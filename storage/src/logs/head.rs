//! The log head: one tenant's recent log entries in memory, by stream.
//!
//! A stream is found by its label set and addressed by a reference (the one
//! its WAL records use). Entries of a stream are kept sorted by
//! (timestamp, line), so any arrival order is accepted and an identical
//! (timestamp, line) is stored once, as Loki does; the first structured
//! metadata pushed for it stays.

use std::collections::{BTreeMap, HashMap, HashSet};

use tidewatch_model::logs::{LogEntry, NsRange, TimestampNs};
use tidewatch_model::seam::matches_all;
use tidewatch_model::{Labels, Matcher};
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

/// One stream's entries, keyed by (timestamp, line), valued by structured metadata.
pub(crate) type StreamEntries = BTreeMap<(TimestampNs, String), Labels>;

/// A (timestamp, line) key the entries map can be searched by without
/// owning the line: every pushed entry is checked against the head, and
/// copying each line for the lookup cost a malloc and a memcpy per entry.
trait EntryKey {
    fn parts(&self) -> (TimestampNs, &str);
}

impl EntryKey for (TimestampNs, String) {
    fn parts(&self) -> (TimestampNs, &str) {
        (self.0, &self.1)
    }
}

impl EntryKey for (TimestampNs, &str) {
    fn parts(&self) -> (TimestampNs, &str) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn EntryKey + 'a> for (TimestampNs, String) {
    fn borrow(&self) -> &(dyn EntryKey + 'a) {
        self
    }
}

// The order of (timestamp, line) as the owned tuple has it.
impl PartialEq for dyn EntryKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn EntryKey + '_ {}

impl PartialOrd for dyn EntryKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn EntryKey + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
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
    /// with those entries ascending by (timestamp, line).
    pub(crate) streams: Vec<(Labels, Vec<LogEntry>)>,
    /// Label sets of the streams left in the head.
    pub(crate) live: HashSet<Labels>,
}

/// One tenant's log head.
#[derive(Debug, Default)]
pub(crate) struct LogHead {
    // xxh3 rather than SipHash: every pushed stream is looked up here, and
    // hashing its label strings was ~7 % of push CPU at 10k streams. Keys
    // come from authenticated pushes into a per-tenant map, so flooding
    // resistance buys little.
    by_labels: HashMap<Labels, u64, Xxh3DefaultBuilder>,
    streams: HashMap<u64, HeadStream, Xxh3DefaultBuilder>,
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
                entries: StreamEntries::new(),
            },
        );
        stream_ref
    }

    /// Whether the stream holds an entry with this timestamp and line.
    pub(crate) fn contains(&self, stream_ref: u64, timestamp: TimestampNs, line: &str) -> bool {
        let key: &dyn EntryKey = &(timestamp, line);
        self.streams
            .get(&stream_ref)
            .is_some_and(|stream| stream.entries.contains_key(key))
    }

    /// Adds an entry; false when the stream is unknown or already holds it.
    pub(crate) fn insert(&mut self, stream_ref: u64, entry: LogEntry) -> bool {
        let Some(stream) = self.streams.get_mut(&stream_ref) else {
            return false;
        };
        let bytes = entry.line.len() as u64;
        match stream.entries.entry((entry.timestamp, entry.line)) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(entry.structured_metadata);
                self.entries += 1;
                self.line_bytes += bytes;
                true
            }
        }
    }

    /// Oldest and newest entry timestamps, if any entry is held.
    pub(crate) fn time_bounds(&self) -> Option<(TimestampNs, TimestampNs)> {
        let mut bounds: Option<(TimestampNs, TimestampNs)> = None;
        for stream in self.streams.values() {
            let (Some(((first, _), _)), Some(((last, _), _))) =
                (stream.entries.first_key_value(), stream.entries.last_key_value())
            else {
                continue;
            };
            bounds = Some(match bounds {
                None => (*first, *last),
                Some((min, max)) => (min.min(*first), max.max(*last)),
            });
        }
        bounds
    }

    /// Streams matching `matchers` with an entry in `range`, unsorted.
    pub(crate) fn matching<'a>(
        &'a self,
        matchers: &'a [Matcher],
        range: NsRange,
    ) -> impl Iterator<Item = &'a HeadStream> + 'a {
        self.streams
            .values()
            .filter(move |stream| matches_all(&stream.labels, matchers) && has_entry_in(&stream.entries, range))
    }

    pub(crate) fn stream_by_labels(&self, labels: &Labels) -> Option<&HeadStream> {
        self.by_labels.get(labels).and_then(|r| self.streams.get(r))
    }

    /// Removes and returns every entry older than `cutoff` (every entry when
    /// `None`); streams left without entries are dropped (Loki's streams limit
    /// counts live streams).
    pub(crate) fn take_before(&mut self, cutoff: Option<TimestampNs>) -> Taken {
        let mut streams = Vec::new();
        let mut emptied = Vec::new();
        for (&stream_ref, stream) in &mut self.streams {
            let kept = match cutoff {
                Some(cutoff) => stream.entries.split_off(&(cutoff, String::new())),
                None => StreamEntries::new(),
            };
            let taken = std::mem::replace(&mut stream.entries, kept);
            if stream.entries.is_empty() {
                emptied.push(stream_ref);
            }
            if taken.is_empty() {
                continue;
            }
            let entries: Vec<LogEntry> = taken
                .into_iter()
                .map(|((timestamp, line), structured_metadata)| LogEntry {
                    timestamp,
                    line,
                    structured_metadata,
                })
                .collect();
            self.entries -= entries.len() as u64;
            self.line_bytes -= entries.iter().map(|e| e.line.len() as u64).sum::<u64>();
            streams.push((stream.labels.clone(), entries));
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

/// Whether a stream's sorted entries hold one in `range`.
pub(crate) fn has_entry_in(entries: &StreamEntries, range: NsRange) -> bool {
    entries
        .range((range.start, String::new())..)
        .next()
        .is_some_and(|((timestamp, _), _)| *timestamp <= range.end)
}

/// A stream's entries in `range` whose line contains every needle.
pub(crate) fn entries_in(entries: &StreamEntries, range: NsRange, needles: &[String]) -> Vec<LogEntry> {
    let mut out = Vec::new();
    for ((timestamp, line), metadata) in entries.range((range.start, String::new())..) {
        if *timestamp > range.end {
            break;
        }
        if needles.iter().all(|needle| line.contains(needle.as_str())) {
            out.push(LogEntry {
                timestamp: *timestamp,
                line: line.clone(),
                structured_metadata: metadata.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(taken.streams[0].1, vec![LogEntry::new(10, "a")]);
        assert!(taken.live.contains(&api));
        let taken = head.take_before(None);
        assert!(taken.live.is_empty(), "an emptied stream is dropped");
        assert_eq!(head.stream_count(), 0);
        assert_eq!(head.entry_count(), 0);
        let again = head.create(api);
        assert!(again > id, "references are never reused");
    }
}
