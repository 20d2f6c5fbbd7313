//! The head: a tenant's recent samples in memory, with the series index.
//!
//! Series get dense ids (their WAL reference) in creation order. Samples of a
//! series are kept sorted by time with one sample per timestamp; a sample for a
//! timestamp already present replaces it (last write wins, as replay does).
//! Float samples and native histograms share that rule: a histogram written
//! at the time of a float sample replaces it, and the other way round.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use tidewatch_model::histogram::HistogramSample;
use tidewatch_model::seam::{CardinalityStats, MetricMetadata, TimeRange};
use tidewatch_model::{Labels, Matcher, Sample, TimestampMs};

use tidewatch_model::raw_write::RawSeriesRef;

use crate::chunk::XorChunk;
use crate::histogram_codec::EncodedHistogram;
use crate::index::Postings;
use crate::shared_labels::SharedLabels;

/// Samples per sealed chunk, as in Prometheus.
const SAMPLES_PER_CHUNK: usize = 120;

/// One series in the head: in-order samples in XOR chunks, late samples in a
/// small sorted buffer that wins over chunk data at the same timestamp.
#[derive(Debug)]
pub(crate) struct MemSeries {
    pub(crate) labels: Labels,
    sealed: Vec<XorChunk>,
    open: XorChunk,
    /// Out-of-order samples, sorted, unique timestamps.
    out_of_order: Vec<Sample>,
    /// Native histograms, sorted, unique timestamps, none at the time of a
    /// float sample. Histogram series are few next to float series, and a
    /// sorted vector keeps late samples as simple as in-order ones.
    histograms: Vec<EncodedHistogram>,
}

impl MemSeries {
    fn new(labels: Labels) -> Self {
        MemSeries {
            labels,
            sealed: Vec::new(),
            open: XorChunk::default(),
            out_of_order: Vec::new(),
            histograms: Vec::new(),
        }
    }

    fn in_order_max(&self) -> Option<TimestampMs> {
        self.open
            .last_time()
            .or_else(|| self.sealed.last().and_then(XorChunk::last_time))
    }

    /// Newest time of a float sample or a histogram.
    pub(crate) fn max_time(&self) -> Option<TimestampMs> {
        let late = self.out_of_order.last().map(|s| s.timestamp);
        let histogram = self.histograms.last().map(|h| h.timestamp);
        self.in_order_max().max(late).max(histogram)
    }

    fn float_min_time(&self) -> Option<TimestampMs> {
        let chunked = self
            .sealed
            .first()
            .and_then(XorChunk::first_time)
            .or_else(|| self.open.first_time());
        let late = self.out_of_order.first().map(|s| s.timestamp);
        match (chunked, late) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Oldest time of a float sample or a histogram.
    fn min_time(&self) -> Option<TimestampMs> {
        let floats = self.float_min_time();
        let histogram = self.histograms.first().map(|h| h.timestamp);
        match (floats, histogram) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Stored entries (chunk samples plus late samples plus histograms).
    pub(crate) fn entry_count(&self) -> usize {
        self.sealed.iter().map(XorChunk::len).sum::<usize>()
            + self.open.len()
            + self.out_of_order.len()
            + self.histograms.len()
    }

    /// Bytes of sample data held, for statistics.
    pub(crate) fn sample_bytes(&self) -> usize {
        self.sealed.iter().map(XorChunk::byte_len).sum::<usize>()
            + self.open.byte_len()
            + self.out_of_order.len() * 16
            + self.histograms.iter().map(EncodedHistogram::byte_len).sum::<usize>()
    }

    /// Stores a float sample, replacing a float or histogram at its time;
    /// returns the change in stored entries.
    pub(crate) fn insert(&mut self, sample: Sample) -> i64 {
        let mut change = 0;
        if !self.histograms.is_empty()
            && let Ok(position) = self.histograms.binary_search_by_key(&sample.timestamp, |h| h.timestamp)
        {
            self.histograms.remove(position);
            change -= 1;
        }
        change + self.insert_float(sample) as i64
    }

    /// Stores a histogram, replacing a float or histogram at its time;
    /// returns the change in stored entries.
    pub(crate) fn insert_histogram(&mut self, sample: &HistogramSample) -> i64 {
        let removed = self.remove_float(sample.timestamp) as i64;
        match self.histograms.binary_search_by_key(&sample.timestamp, |h| h.timestamp) {
            Ok(position) => {
                let previous = position.checked_sub(1).map(|p| &self.histograms[p]);
                let next = self.histograms.get(position + 1);
                self.histograms[position] = EncodedHistogram::new(sample, [previous, next]);
                -removed
            }
            Err(position) => {
                let previous = position.checked_sub(1).map(|p| &self.histograms[p]);
                let next = self.histograms.get(position);
                let entry = EncodedHistogram::new(sample, [previous, next]);
                self.histograms.insert(position, entry);
                1 - removed
            }
        }
    }

    /// Removes every float entry at `timestamp` (a chunk's and a late one
    /// that shadows it); returns how many there were. Rare — a series
    /// switching kinds at one timestamp — so rebuilding a chunk is fine.
    fn remove_float(&mut self, timestamp: TimestampMs) -> usize {
        let (Some(min), Some(max)) = (
            self.float_min_time(),
            self.in_order_max().max(self.out_of_order.last().map(|s| s.timestamp)),
        ) else {
            return 0;
        };
        if timestamp < min || timestamp > max {
            return 0;
        }
        let mut removed = 0;
        if let Ok(position) = self.out_of_order.binary_search_by_key(&timestamp, |s| s.timestamp) {
            self.out_of_order.remove(position);
            removed += 1;
        }
        let holds = |chunk: &XorChunk| {
            matches!((chunk.first_time(), chunk.last_time()), (Some(first), Some(last)) if first <= timestamp && timestamp <= last)
                && chunk.iter().any(|s| s.timestamp == timestamp)
        };
        let without = |chunk: &XorChunk| {
            let mut rebuilt = XorChunk::default();
            for sample in chunk.iter().filter(|s| s.timestamp != timestamp) {
                rebuilt.append(sample);
            }
            rebuilt
        };
        if holds(&self.open) {
            self.open = without(&self.open);
            removed += 1;
        } else if let Some(position) = self.sealed.iter().position(holds) {
            let mut rebuilt = without(&self.sealed[position]);
            removed += 1;
            if rebuilt.len() == 0 {
                self.sealed.remove(position);
            } else {
                rebuilt.shrink();
                self.sealed[position] = rebuilt;
            }
        }
        removed
    }

    /// Stores a float sample; returns how many entries were added (0 when it replaced one).
    fn insert_float(&mut self, sample: Sample) -> usize {
        if self.in_order_max().is_none_or(|max| sample.timestamp > max) {
            if self
                .out_of_order
                .last()
                .is_some_and(|s| s.timestamp >= sample.timestamp)
            {
                return self.insert_late(sample);
            }
            self.open.append(sample);
            if self.open.len() == SAMPLES_PER_CHUNK {
                let mut full = std::mem::take(&mut self.open);
                full.shrink();
                self.sealed.push(full);
            }
            return 1;
        }
        self.insert_late(sample)
    }

    fn insert_late(&mut self, sample: Sample) -> usize {
        match self
            .out_of_order
            .binary_search_by_key(&sample.timestamp, |s| s.timestamp)
        {
            Ok(position) => {
                self.out_of_order[position] = sample;
                0
            }
            Err(position) => {
                self.out_of_order.insert(position, sample);
                1
            }
        }
    }

    fn chunks(&self) -> impl DoubleEndedIterator<Item = &XorChunk> {
        self.sealed.iter().chain(std::iter::once(&self.open))
    }

    /// Samples in `range`, sorted, one per timestamp (late samples win).
    pub(crate) fn samples_in(&self, range: TimeRange) -> Vec<Sample> {
        let overlaps = |chunk: &&XorChunk| match (chunk.first_time(), chunk.last_time()) {
            (Some(first), Some(last)) => last >= range.start && first <= range.end,
            _ => false,
        };
        // Room for every sample of the overlapping chunks: growing by
        // doubling showed up as a tenth of a short query's time.
        let mut chunked = Vec::with_capacity(self.chunks().filter(overlaps).map(XorChunk::len).sum());
        for chunk in self.chunks().filter(overlaps) {
            // XOR chunks decode from their start; stop as soon as the range ends.
            chunked.extend(
                chunk
                    .iter()
                    .take_while(|s| s.timestamp <= range.end)
                    .filter(|s| s.timestamp >= range.start),
            );
        }
        let late: Vec<Sample> = self
            .out_of_order
            .iter()
            .copied()
            .filter(|s| range.contains(s.timestamp))
            .collect();
        merge_late(chunked, late)
    }

    /// The newest float sample in `range`. Chunks keep their last sample
    /// beside their bits, so a read of "now" (the usual instant query)
    /// decodes only a chunk that straddles the range's end.
    pub(crate) fn latest_in(&self, range: TimeRange) -> Option<Sample> {
        if !self.out_of_order.is_empty() {
            // Late samples may be newer than any chunk's: take the general path.
            return self.samples_in(range).pop();
        }
        for chunk in self.chunks().rev() {
            let (Some(first), Some(last)) = (chunk.first_time(), chunk.last_time()) else {
                continue;
            };
            if first > range.end {
                continue;
            }
            if last < range.start {
                return None;
            }
            if last <= range.end {
                return chunk.last_sample();
            }
            return chunk
                .iter()
                .take_while(|s| s.timestamp <= range.end)
                .last()
                .filter(|s| s.timestamp >= range.start);
        }
        None
    }

    /// The newest histogram in `range`.
    pub(crate) fn latest_histogram_in(&self, range: TimeRange) -> Option<HistogramSample> {
        EncodedHistogram::in_range(&self.histograms, range)
            .last()
            .map(EncodedHistogram::decode)
    }

    /// Histograms in `range`, sorted.
    pub(crate) fn histograms_in(&self, range: TimeRange) -> Vec<HistogramSample> {
        EncodedHistogram::in_range(&self.histograms, range)
            .iter()
            .map(EncodedHistogram::decode)
            .collect()
    }

    fn has_histogram_in(&self, range: TimeRange) -> bool {
        !EncodedHistogram::in_range(&self.histograms, range).is_empty()
    }

    fn has_sample_in(&self, range: TimeRange) -> bool {
        match (self.min_time(), self.max_time()) {
            (Some(min), Some(max)) if max < range.start || min > range.end => return false,
            (Some(_), Some(_)) => {}
            _ => return false,
        }
        if self.has_histogram_in(range) || self.out_of_order.iter().any(|s| range.contains(s.timestamp)) {
            return true;
        }
        // A chunk's first or last sample in the range answers without
        // decoding; only a range that falls between two samples of one
        // chunk needs a look inside it.
        self.chunks()
            .any(|chunk| match (chunk.first_time(), chunk.last_time()) {
                (Some(first), Some(last)) => {
                    if range.contains(first) || range.contains(last) {
                        true
                    } else if first < range.start && last > range.end {
                        chunk
                            .iter()
                            .map(|s| s.timestamp)
                            .find(|&t| t >= range.start)
                            .is_some_and(|t| t <= range.end)
                    } else {
                        false
                    }
                }
                _ => false,
            })
    }

    /// Removes and returns every float sample and histogram older than `cutoff`.
    fn take_before(&mut self, cutoff: TimestampMs) -> (Vec<Sample>, Vec<EncodedHistogram>) {
        let split = self.histograms.partition_point(|h| h.timestamp < cutoff);
        let histograms: Vec<EncodedHistogram> = self.histograms.drain(..split).collect();
        (self.take_floats_before(cutoff), histograms)
    }

    fn take_floats_before(&mut self, cutoff: TimestampMs) -> Vec<Sample> {
        if self.float_min_time().is_none_or(|min| min >= cutoff) {
            return Vec::new();
        }
        let mut taken = Vec::new();
        let mut kept = Vec::new();
        let mut chunks: Vec<XorChunk> = std::mem::take(&mut self.sealed);
        chunks.push(std::mem::take(&mut self.open));
        let last_index = chunks.len() - 1;
        for (index, chunk) in chunks.into_iter().enumerate() {
            match (chunk.first_time(), chunk.last_time()) {
                (Some(_), Some(last)) if last < cutoff => taken.extend(chunk.iter()),
                (Some(first), Some(_)) if first < cutoff => {
                    let mut rest = XorChunk::default();
                    for sample in chunk.iter() {
                        if sample.timestamp < cutoff {
                            taken.push(sample);
                        } else {
                            rest.append(sample);
                        }
                    }
                    kept.push((index, rest));
                }
                _ => kept.push((index, chunk)),
            }
        }
        for (index, chunk) in kept {
            if index == last_index {
                self.open = chunk;
            } else if chunk.len() > 0 {
                self.sealed.push(chunk);
            }
        }
        let split = self.out_of_order.partition_point(|s| s.timestamp < cutoff);
        let late: Vec<Sample> = self.out_of_order.drain(..split).collect();
        merge_late(taken, late)
    }
}

/// Merges sorted chunk samples with sorted late samples; late wins on equal time.
fn merge_late(chunked: Vec<Sample>, late: Vec<Sample>) -> Vec<Sample> {
    if late.is_empty() {
        return chunked;
    }
    let mut merged = Vec::with_capacity(chunked.len() + late.len());
    let mut late = late.into_iter().peekable();
    for sample in chunked {
        while let Some(l) = late.next_if(|l| l.timestamp < sample.timestamp) {
            merged.push(l);
        }
        match late.peek() {
            Some(l) if l.timestamp == sample.timestamp => {}
            _ => merged.push(sample),
        }
    }
    merged.extend(late);
    merged
}

/// The keys of `by_hash` are already xxh3 hashes: hashing them again is waste.
#[derive(Debug, Default)]
pub(crate) struct HashIsKey(u64);

impl Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else in for correctness.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// A tenant's head.
#[derive(Debug, Default)]
pub(crate) struct Head {
    series: Vec<MemSeries>,
    by_hash: HashMap<u64, Vec<u32>, BuildHasherDefault<HashIsKey>>,
    postings: Postings,
    metadata: BTreeMap<String, Vec<MetricMetadata>>,
    sample_count: u64,
    /// Bumped when series are removed: the label order must then be rebuilt.
    removals: u64,
    /// Series ids in label order, kept across queries (which read the head
    /// under a shared lock) and extended when series are added.
    order: std::sync::Mutex<LabelOrder>,
}

/// The head's series in label order, as of `series` series and `removals`.
#[derive(Debug, Default)]
struct LabelOrder {
    series: usize,
    removals: u64,
    sorted: Vec<u32>,
    /// `rank[id]`: the position of series `id` in `sorted`.
    rank: Vec<u32>,
}

impl Head {
    pub(crate) fn series_count(&self) -> usize {
        self.series.len()
    }

    pub(crate) fn sample_count(&self) -> u64 {
        self.sample_count
    }

    /// Bytes of encoded sample data, for self-monitoring.
    pub(crate) fn sample_bytes(&self) -> u64 {
        self.series.iter().map(|s| s.sample_bytes() as u64).sum()
    }

    /// The id of the series with exactly these labels.
    pub(crate) fn lookup(&self, labels: &Labels, hash: u64) -> Option<u32> {
        self.by_hash
            .get(&hash)?
            .iter()
            .copied()
            .find(|&id| self.series[id as usize].labels == *labels)
    }

    /// The id of the series with exactly the labels of a raw write.
    pub(crate) fn lookup_raw(&self, series: &RawSeriesRef<'_>, hash: u64) -> Option<u32> {
        self.by_hash
            .get(&hash)?
            .iter()
            .copied()
            .find(|&id| series.equals(&self.series[id as usize].labels))
    }

    /// Creates a series with the next id, which must equal `expected_id` when replaying.
    pub(crate) fn create(&mut self, labels: Labels, hash: u64) -> u32 {
        let id = self.series.len() as u32;
        self.postings.add(id, &labels);
        self.by_hash.entry(hash).or_default().push(id);
        self.series.push(MemSeries::new(labels));
        id
    }

    /// Removes series created after the first `keep` (their WAL write failed).
    pub(crate) fn truncate_series(&mut self, keep: usize) {
        self.removals += 1;
        while self.series.len() > keep {
            let id = (self.series.len() - 1) as u32;
            let Some(series) = self.series.pop() else {
                break;
            };
            self.sample_count -= series.entry_count() as u64;
            self.postings.remove(id, &series.labels);
            let hash = series.labels.hash64();
            if let Some(ids) = self.by_hash.get_mut(&hash) {
                ids.retain(|&other| other != id);
                if ids.is_empty() {
                    self.by_hash.remove(&hash);
                }
            }
        }
    }

    /// Gives the series `ids` (ascending) the tenant's shared copy of their
    /// labels, which the blocks they are flushed into will take too.
    pub(crate) fn share_labels(&mut self, ids: &[u32], shared: &SharedLabels) {
        debug_assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let selected = self
            .series
            .iter_mut()
            .enumerate()
            .filter(|(id, _)| ids.binary_search(&(*id as u32)).is_ok())
            .map(|(_, series)| &mut series.labels);
        shared.share(selected);
    }

    pub(crate) fn series(&self, id: u32) -> Option<&MemSeries> {
        self.series.get(id as usize)
    }

    /// Appends a sample to series `id`; unknown ids are ignored (a WAL sample
    /// whose series record was lost to a torn tail).
    pub(crate) fn append(&mut self, id: u32, sample: Sample) -> bool {
        let Some(series) = self.series.get_mut(id as usize) else {
            return false;
        };
        self.sample_count = self.sample_count.saturating_add_signed(series.insert(sample));
        true
    }

    /// Appends a native histogram to series `id`; unknown ids are ignored as in [`Head::append`].
    pub(crate) fn append_histogram(&mut self, id: u32, sample: &HistogramSample) -> bool {
        let Some(series) = self.series.get_mut(id as usize) else {
            return false;
        };
        self.sample_count = self.sample_count.saturating_add_signed(series.insert_histogram(sample));
        true
    }

    /// Records metadata; returns whether it was new.
    pub(crate) fn add_metadata(&mut self, metadata: MetricMetadata) -> bool {
        let known = self.metadata.entry(metadata.metric_family_name.clone()).or_default();
        if known.contains(&metadata) {
            return false;
        }
        known.push(metadata);
        true
    }

    pub(crate) fn metadata(&self) -> &BTreeMap<String, Vec<MetricMetadata>> {
        &self.metadata
    }

    /// Selected series with a sample in `range`: (labels, id), sorted by labels.
    pub(crate) fn select_sorted_ids(&self, matchers: &[Matcher], range: TimeRange) -> Vec<(Labels, u32)> {
        let mut ids: Vec<u32> = self
            .postings
            .select(matchers)
            .iter()
            .filter(|&id| self.series[id as usize].has_sample_in(range))
            .collect();
        {
            let order = self.label_order();
            ids.sort_unstable_by_key(|&id| order.rank[id as usize]);
        }
        ids.into_iter()
            .map(|id| (self.series[id as usize].labels.clone(), id))
            .collect()
    }

    /// The label order of every series, brought up to date: series added
    /// since it was built are sorted and merged in, a removal rebuilds it.
    fn label_order(&self) -> std::sync::MutexGuard<'_, LabelOrder> {
        let mut order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        if order.removals != self.removals || order.series > self.series.len() {
            *order = LabelOrder {
                removals: self.removals,
                ..LabelOrder::default()
            };
        }
        if order.series < self.series.len() {
            let labels_of = |id: &u32| &self.series[*id as usize].labels;
            let mut added: Vec<u32> = (order.series as u32..self.series.len() as u32).collect();
            added.sort_unstable_by(|a, b| labels_of(a).cmp(labels_of(b)));
            let old = std::mem::take(&mut order.sorted);
            let mut merged = Vec::with_capacity(old.len() + added.len());
            let (mut i, mut j) = (0, 0);
            while i < old.len() || j < added.len() {
                let take_old = j == added.len() || (i < old.len() && labels_of(&old[i]) <= labels_of(&added[j]));
                if take_old {
                    merged.push(old[i]);
                    i += 1;
                } else {
                    merged.push(added[j]);
                    j += 1;
                }
            }
            let mut rank = vec![0u32; self.series.len()];
            for (position, &id) in merged.iter().enumerate() {
                rank[id as usize] = position as u32;
            }
            order.sorted = merged;
            order.rank = rank;
            order.series = self.series.len();
        }
        order
    }

    /// The float samples and histograms of series `id` in `range`.
    pub(crate) fn samples_of(&self, id: u32, range: TimeRange) -> (Vec<Sample>, Vec<HistogramSample>) {
        self.series
            .get(id as usize)
            .map_or_else(Default::default, |s| (s.samples_in(range), s.histograms_in(range)))
    }

    /// The newest float sample and the newest histogram of series `id` in `range`.
    pub(crate) fn latest_of(&self, id: u32, range: TimeRange) -> (Vec<Sample>, Vec<HistogramSample>) {
        self.series.get(id as usize).map_or_else(Default::default, |s| {
            (
                s.latest_in(range).into_iter().collect(),
                s.latest_histogram_in(range).into_iter().collect(),
            )
        })
    }

    /// Labels of selected series with a sample in `range`.
    pub(crate) fn select_labels(&self, matchers: &[Matcher], range: TimeRange) -> Vec<Labels> {
        let mut out = Vec::new();
        for id in self.postings.select(matchers) {
            let series = &self.series[id as usize];
            if series.has_sample_in(range) {
                out.push(series.labels.clone());
            }
        }
        out
    }

    /// Oldest and newest sample time, if any sample is held.
    pub(crate) fn time_bounds(&self) -> Option<(TimestampMs, TimestampMs)> {
        let mut bounds: Option<(TimestampMs, TimestampMs)> = None;
        for series in &self.series {
            if let (Some(first), Some(last)) = (series.min_time(), series.max_time()) {
                bounds = Some(match bounds {
                    None => (first, last),
                    Some((lo, hi)) => (lo.min(first), hi.max(last)),
                });
            }
        }
        bounds
    }

    /// Takes every float sample and histogram older than `cutoff` out of
    /// the head, per series id.
    pub(crate) fn take_before(&mut self, cutoff: TimestampMs) -> Vec<(u32, Vec<Sample>, Vec<EncodedHistogram>)> {
        let mut taken = Vec::new();
        for (id, series) in self.series.iter_mut().enumerate() {
            let before = series.entry_count();
            let (samples, histograms) = series.take_before(cutoff);
            self.sample_count -= (before - series.entry_count()) as u64;
            if !samples.is_empty() || !histograms.is_empty() {
                taken.push((id as u32, samples, histograms));
            }
        }
        taken
    }

    /// Cardinality statistics, top `limit` of each list.
    pub(crate) fn cardinality(&self, limit: usize) -> CardinalityStats {
        let mut stats = CardinalityStats {
            num_series: self.series.len() as u64,
            chunk_count: self
                .series
                .iter()
                .map(|s| s.sealed.len() as u64 + u64::from(s.open.len() > 0))
                .sum(),
            ..CardinalityStats::default()
        };
        if let Some((min, max)) = self.time_bounds() {
            stats.min_time = min;
            stats.max_time = max;
        }
        let top = |mut list: Vec<(String, u64)>| {
            list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            list.truncate(limit);
            list
        };
        let mut by_metric = Vec::new();
        let mut value_counts = Vec::new();
        let mut memory = Vec::new();
        let mut pairs = Vec::new();
        for (name, values) in self.postings.iter_names() {
            stats.num_label_pairs += values.len() as u64;
            value_counts.push((name.clone(), values.len() as u64));
            let bytes: u64 = values.keys().map(|v| v.len() as u64).sum();
            memory.push((name.clone(), bytes));
            for (value, postings) in values {
                if name == tidewatch_model::METRIC_NAME {
                    by_metric.push((value.clone(), postings.len()));
                }
                pairs.push((format!("{name}={value}"), postings.len()));
            }
        }
        stats.series_count_by_metric_name = top(by_metric);
        stats.label_value_count_by_label_name = top(value_counts);
        stats.memory_in_bytes_by_label_name = top(memory);
        stats.series_count_by_label_value_pair = top(pairs);
        stats
    }

    pub(crate) fn label_names(&self) -> Vec<String> {
        self.postings.label_names()
    }

    pub(crate) fn label_values(&self, name: &str) -> Vec<String> {
        self.postings.label_values(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tidewatch_model::histogram::FloatHistogram;

    #[test]
    fn out_of_order_and_duplicate_samples_stay_sorted_and_unique() {
        let mut head = Head::default();
        let labels = Labels::from_pairs([("__name__", "up")]);
        let id = head.create(labels.clone(), labels.hash64());
        for (t, v) in [(30, 3.0), (10, 1.0), (20, 2.0), (20, 2.5), (40, f64::NAN)] {
            head.append(id, Sample::new(t, v));
        }
        let samples = head.series(id).unwrap().samples_in(TimeRange::ALL);
        let times: Vec<i64> = samples.iter().map(|s| s.timestamp).collect();
        assert_eq!(times, [10, 20, 30, 40]);
        assert_eq!(samples[1].value, 2.5);
        assert!(samples[3].value.is_nan());
        assert_eq!(head.sample_count(), 4);
        let taken = head.take_before(25);
        assert_eq!(taken[0].1.len(), 2);
        assert_eq!(head.sample_count(), 2);
        let range = TimeRange::new(0, 35);
        let selected = head.select_sorted_ids(&[Matcher::equal("__name__", "up")], range);
        assert_eq!(head.samples_of(selected[0].1, range).0, vec![Sample::new(30, 3.0)]);
    }

    fn histogram(timestamp: TimestampMs, count: f64) -> HistogramSample {
        HistogramSample {
            timestamp,
            histogram: FloatHistogram {
                count,
                schema: -53,
                custom_values: Arc::from(vec![1.0, 5.0]),
                positive: vec![tidewatch_model::histogram::Bucket { index: 1, count }],
                ..FloatHistogram::default()
            },
        }
    }

    #[test]
    fn floats_and_histograms_replace_each_other_at_one_timestamp() {
        let mut head = Head::default();
        let labels = Labels::from_pairs([("__name__", "mixed")]);
        let id = head.create(labels.clone(), labels.hash64());
        // Floats in a sealed chunk, the open chunk, and late.
        for t in 0..130 {
            head.append(id, Sample::new(t * 10, t as f64));
        }
        head.append(id, Sample::new(55, 5.5));
        assert_eq!(head.sample_count(), 131);
        // A histogram over a sealed-chunk float, an open-chunk float and a late float.
        for t in [20, 1250, 55] {
            head.append_histogram(id, &histogram(t, 1.0));
        }
        // Replacing a histogram by a histogram, then by a float.
        head.append_histogram(id, &histogram(20, 2.0));
        head.append_histogram(id, &histogram(5000, 3.0));
        head.append(id, Sample::new(5000, 50.0));
        // 131 floats, 3 of them replaced by histograms, plus the float at 5000.
        assert_eq!(head.sample_count(), 132);
        let series = head.series(id).unwrap();
        assert_eq!(series.entry_count() as u64, head.sample_count());
        let (floats, histograms) = head.samples_of(id, TimeRange::ALL);
        let times: Vec<i64> = histograms.iter().map(|h| h.timestamp).collect();
        assert_eq!(times, [20, 55, 1250]);
        assert_eq!(histograms[0].histogram.count, 2.0);
        assert!(histograms.iter().all(|h| *h.histogram.custom_values == [1.0, 5.0]));
        assert!(floats.iter().all(|s| ![20, 55, 1250].contains(&s.timestamp)));
        assert_eq!(floats.last(), Some(&Sample::new(5000, 50.0)));
        assert_eq!(floats.len() + histograms.len(), 132);
        // Bounds equal to the previous sample's are shared, not copied.
        let stored = &head.series(id).unwrap().histograms;
        assert!(Arc::ptr_eq(&stored[0].custom_values, &stored[1].custom_values));
        // Flushing takes both kinds.
        let taken = head.take_before(100);
        assert_eq!(taken[0].2.len(), 2);
        assert_eq!(head.samples_of(id, TimeRange::ALL).1.len(), 1);
        assert_eq!(head.series(id).unwrap().entry_count() as u64, head.sample_count());
    }

    #[test]
    fn truncate_series_rolls_back_creation() {
        let mut head = Head::default();
        let a = Labels::from_pairs([("__name__", "a")]);
        let b = Labels::from_pairs([("__name__", "b")]);
        head.create(a.clone(), a.hash64());
        head.create(b.clone(), b.hash64());
        head.truncate_series(1);
        assert_eq!(head.lookup(&b, b.hash64()), None);
        assert_eq!(head.lookup(&a, a.hash64()), Some(0));
        assert_eq!(head.label_values("__name__"), vec!["a".to_string()]);
    }

    proptest::proptest! {
        // Range reads (which skip chunks by their bounds and stop decoding
        // at the range's end) and the has-a-sample test agree with filtering
        // every stored sample, across chunk boundaries and late samples.
        #[test]
        fn range_reads_equal_filtering_everything(
            times in proptest::collection::vec(0i64..2_000, 0..400),
            start in -10i64..2_010,
            width in 0i64..600,
        ) {
            let mut series = MemSeries::new(Labels::from_pairs([("__name__", "m")]));
            for (i, t) in times.iter().enumerate() {
                series.insert(Sample::new(*t, i as f64));
            }
            let range = TimeRange::new(start, start + width);
            let everything = series.samples_in(TimeRange::ALL);
            let expected: Vec<Sample> = everything.iter().copied().filter(|s| range.contains(s.timestamp)).collect();
            proptest::prop_assert_eq!(series.samples_in(range), expected.clone());
            proptest::prop_assert_eq!(series.has_sample_in(range), !expected.is_empty());
        }
    }
}
