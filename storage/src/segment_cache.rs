//! Decoded samples of metric-block segments, kept for the reads that come
//! again.
//!
//! Instant queries, rule evaluations and dashboard refreshes read the same
//! few minutes of the same series over and over. For a block, that meant
//! fetching, decompressing and un-delta-ing the same Parquet rows every time:
//! most of an instant query's work at 10k series. A segment — the rows of one
//! series from one restart of its value deltas to the next, at most
//! [`crate::block::KEYFRAME_ROWS`] samples — decodes on its own, so it is the
//! unit kept here, under a byte budget shared by every block of every tenant.
//!
//! Big reads (compaction, a range query over hours of many series) bypass
//! the cache: they would evict the small working set that repeats and pay
//! for inserts that are never read back. A query goes through it or not as
//! a whole, judged by how many samples its selection decodes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quick_cache::Weighter;
use quick_cache::sync::Cache;
use tidewatch_model::Sample;

/// Which segment: the block (a number given when it was opened) and the
/// segment's first row in the block's samples file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SegmentKey {
    pub(crate) block: u64,
    pub(crate) first_row: u64,
}

/// A segment's decoded samples.
pub(crate) type Segment = Arc<[Sample]>;

/// Bookkeeping per entry besides the samples: the key, the `Arc`'s counts and
/// the cache's slot.
const ENTRY_OVERHEAD_BYTES: u64 = 64;

#[derive(Debug, Clone, Copy)]
struct SegmentWeight;

impl Weighter<SegmentKey, Segment> for SegmentWeight {
    fn weight(&self, _key: &SegmentKey, samples: &Segment) -> u64 {
        segment_bytes(samples.len())
    }
}

fn segment_bytes(samples: usize) -> u64 {
    (samples * std::mem::size_of::<Sample>()) as u64 + ENTRY_OVERHEAD_BYTES
}

/// The shared cache of decoded segments.
pub struct SegmentCache {
    segments: Cache<SegmentKey, Segment, SegmentWeight>,
    capacity_bytes: u64,
    next_block: AtomicU64,
}

impl std::fmt::Debug for SegmentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentCache")
            .field("capacity_bytes", &self.capacity_bytes)
            .field("bytes", &self.segments.weight())
            .field("segments", &self.segments.len())
            .finish()
    }
}

impl SegmentCache {
    /// A cache holding at most `capacity_bytes` of decoded samples.
    pub fn new(capacity_bytes: u64) -> Arc<SegmentCache> {
        // A guess at the entry count sizes the table up front: segments of
        // a 2 h block with a 15 s scrape interval hold ~120 samples.
        let typical = segment_bytes(120);
        let estimated_items = (capacity_bytes / typical).clamp(16, 1 << 24) as usize;
        Arc::new(SegmentCache {
            segments: Cache::with_weighter(estimated_items, capacity_bytes.max(1), SegmentWeight),
            capacity_bytes,
            next_block: AtomicU64::new(0),
        })
    }

    /// A number for a block opened now: keys of a block never collide with
    /// those of another, even one with the same name opened again.
    pub(crate) fn block_number(&self) -> u64 {
        self.next_block.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether a query decoding about `samples` samples should go through
    /// the cache: only when they take at most a quarter of the budget.
    pub(crate) fn admits(&self, samples: usize) -> bool {
        self.capacity_bytes > 0 && segment_bytes(samples) <= self.capacity_bytes / 4
    }

    pub(crate) fn get(&self, key: &SegmentKey) -> Option<Segment> {
        self.segments.get(key)
    }

    pub(crate) fn insert(&self, key: SegmentKey, samples: Segment) {
        self.segments.insert(key, samples);
    }

    /// Segments found in the cache so far.
    pub fn hits(&self) -> u64 {
        self.segments.hits()
    }

    /// Segments looked for and decoded so far.
    pub fn misses(&self) -> u64 {
        self.segments.misses()
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.segments.weight()
    }

    /// The byte budget.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(samples: usize) -> Segment {
        (0..samples).map(|i| Sample::new(i as i64, i as f64)).collect()
    }

    #[test]
    fn counts_hits_and_misses_and_keeps_to_its_budget() {
        let cache = SegmentCache::new(64 * 1024);
        let key = |first_row| SegmentKey { block: 1, first_row };
        assert!(cache.get(&key(0)).is_none());
        cache.insert(key(0), segment(120));
        assert_eq!(cache.get(&key(0)).as_deref(), Some(&segment(120)[..]));
        assert!(
            cache.get(&SegmentKey { block: 2, first_row: 0 }).is_none(),
            "another block's segment at the same row is another entry"
        );
        assert_eq!((cache.hits(), cache.misses()), (1, 2));
        for row in 0..1000 {
            cache.insert(key(row * 128), segment(120));
        }
        assert!(cache.bytes() <= cache.capacity_bytes(), "{} bytes held", cache.bytes());
    }

    #[test]
    fn admits_only_reads_small_against_the_budget() {
        let cache = SegmentCache::new(1 << 20);
        assert!(cache.admits(1000));
        assert!(
            !cache.admits(20_000),
            "a read of 320 KB would take a third of a 1 MB cache"
        );
        assert!(cache.admits(16_000), "a read of 256 KB takes a quarter");
        assert!(!SegmentCache::new(0).admits(1), "a zero budget turns the cache off");
    }
}
