//! The head: a tenant's recent samples in memory, with the series index.
//!
//! Series get dense ids (their WAL reference) in creation order. Samples of a
//! series are kept sorted by time with one sample per timestamp; a sample for a
//! timestamp already present replaces it (last write wins, as replay does).

use std::collections::{BTreeMap, HashMap};

use tidewatch_model::seam::{CardinalityStats, MetricMetadata, SeriesSamples, TimeRange};
use tidewatch_model::{Labels, Matcher, Sample, TimestampMs};

use crate::index::Postings;

/// One series in the head.
#[derive(Debug)]
pub(crate) struct MemSeries {
    pub(crate) labels: Labels,
    /// Sorted by timestamp, unique timestamps.
    pub(crate) samples: Vec<Sample>,
}

impl MemSeries {
    pub(crate) fn max_time(&self) -> Option<TimestampMs> {
        self.samples.last().map(|s| s.timestamp)
    }

    /// Inserts keeping order; the common in-order case is a push.
    pub(crate) fn insert(&mut self, sample: Sample) {
        match self.samples.last() {
            None => self.samples.push(sample),
            Some(last) if last.timestamp < sample.timestamp => self.samples.push(sample),
            Some(_) => match self.samples.binary_search_by_key(&sample.timestamp, |s| s.timestamp) {
                Ok(position) => self.samples[position] = sample,
                Err(position) => self.samples.insert(position, sample),
            },
        }
    }

    fn in_range(&self, range: TimeRange) -> &[Sample] {
        let start = self.samples.partition_point(|s| s.timestamp < range.start);
        let end = self.samples.partition_point(|s| s.timestamp <= range.end);
        &self.samples[start..end.max(start)]
    }
}

/// A tenant's head.
#[derive(Debug, Default)]
pub(crate) struct Head {
    series: Vec<MemSeries>,
    by_hash: HashMap<u64, Vec<u32>>,
    postings: Postings,
    metadata: BTreeMap<String, Vec<MetricMetadata>>,
    sample_count: u64,
}

impl Head {
    pub(crate) fn series_count(&self) -> usize {
        self.series.len()
    }

    pub(crate) fn sample_count(&self) -> u64 {
        self.sample_count
    }

    /// The id of the series with exactly these labels.
    pub(crate) fn lookup(&self, labels: &Labels, hash: u64) -> Option<u32> {
        self.by_hash
            .get(&hash)?
            .iter()
            .copied()
            .find(|&id| self.series[id as usize].labels == *labels)
    }

    /// Creates a series with the next id, which must equal `expected_id` when replaying.
    pub(crate) fn create(&mut self, labels: Labels, hash: u64) -> u32 {
        let id = self.series.len() as u32;
        self.postings.add(id, &labels);
        self.by_hash.entry(hash).or_default().push(id);
        self.series.push(MemSeries {
            labels,
            samples: Vec::new(),
        });
        id
    }

    /// Removes series created after the first `keep` (their WAL write failed).
    pub(crate) fn truncate_series(&mut self, keep: usize) {
        while self.series.len() > keep {
            let id = (self.series.len() - 1) as u32;
            let Some(series) = self.series.pop() else {
                break;
            };
            self.sample_count -= series.samples.len() as u64;
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

    pub(crate) fn series(&self, id: u32) -> Option<&MemSeries> {
        self.series.get(id as usize)
    }

    /// Appends a sample to series `id`; unknown ids are ignored (a WAL sample
    /// whose series record was lost to a torn tail).
    pub(crate) fn append(&mut self, id: u32, sample: Sample) -> bool {
        let Some(series) = self.series.get_mut(id as usize) else {
            return false;
        };
        let before = series.samples.len();
        series.insert(sample);
        self.sample_count += (series.samples.len() - before) as u64;
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

    /// Every series' samples in `range`, for the selected series, skipping series
    /// without samples there.
    pub(crate) fn select(&self, matchers: &[Matcher], range: TimeRange) -> Vec<SeriesSamples> {
        let mut out = Vec::new();
        for id in self.postings.select(matchers) {
            let series = &self.series[id as usize];
            let samples = series.in_range(range);
            if !samples.is_empty() {
                out.push(SeriesSamples {
                    labels: series.labels.clone(),
                    samples: samples.to_vec(),
                });
            }
        }
        out
    }

    /// Labels of selected series with a sample in `range`.
    pub(crate) fn select_labels(&self, matchers: &[Matcher], range: TimeRange) -> Vec<Labels> {
        let mut out = Vec::new();
        for id in self.postings.select(matchers) {
            let series = &self.series[id as usize];
            if !series.in_range(range).is_empty() {
                out.push(series.labels.clone());
            }
        }
        out
    }

    /// Oldest and newest sample time, if any sample is held.
    pub(crate) fn time_bounds(&self) -> Option<(TimestampMs, TimestampMs)> {
        let mut bounds: Option<(TimestampMs, TimestampMs)> = None;
        for series in &self.series {
            if let (Some(first), Some(last)) = (series.samples.first(), series.samples.last()) {
                bounds = Some(match bounds {
                    None => (first.timestamp, last.timestamp),
                    Some((lo, hi)) => (lo.min(first.timestamp), hi.max(last.timestamp)),
                });
            }
        }
        bounds
    }

    /// Takes every sample older than `cutoff` out of the head, per series id.
    pub(crate) fn take_before(&mut self, cutoff: TimestampMs) -> Vec<(u32, Vec<Sample>)> {
        let mut taken = Vec::new();
        for (id, series) in self.series.iter_mut().enumerate() {
            let split = series.samples.partition_point(|s| s.timestamp < cutoff);
            if split == 0 {
                continue;
            }
            let rest = series.samples.split_off(split);
            let old = std::mem::replace(&mut series.samples, rest);
            self.sample_count -= old.len() as u64;
            taken.push((id as u32, old));
        }
        taken
    }

    /// Cardinality statistics, top `limit` of each list.
    pub(crate) fn cardinality(&self, limit: usize) -> CardinalityStats {
        let mut stats = CardinalityStats {
            num_series: self.series.len() as u64,
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

    #[test]
    fn out_of_order_and_duplicate_samples_stay_sorted_and_unique() {
        let mut head = Head::default();
        let labels = Labels::from_pairs([("__name__", "up")]);
        let id = head.create(labels.clone(), labels.hash64());
        for (t, v) in [(30, 3.0), (10, 1.0), (20, 2.0), (20, 2.5), (40, f64::NAN)] {
            head.append(id, Sample::new(t, v));
        }
        let samples = &head.series(id).unwrap().samples;
        let times: Vec<i64> = samples.iter().map(|s| s.timestamp).collect();
        assert_eq!(times, [10, 20, 30, 40]);
        assert_eq!(samples[1].value, 2.5);
        assert_eq!(head.sample_count(), 4);
        let taken = head.take_before(25);
        assert_eq!(taken[0].1.len(), 2);
        assert_eq!(head.sample_count(), 2);
        let selected = head.select(&[Matcher::equal("__name__", "up")], TimeRange::new(0, 35));
        assert_eq!(selected[0].samples, vec![Sample::new(30, 3.0)]);
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
}
