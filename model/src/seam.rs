//! The seams between crates: what a write carries, and the read interface that
//! storage implements and query consumes.
//!
//! Consumers own these traits, so they stay small: two required methods for
//! reading series, the rest defaulted. [`MemSeriesStore`](crate::seam::MemSeriesStore)
//! is a real in-memory implementation for tests of the consumers.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use crate::error::Error;
use crate::histogram::{FloatHistogram, HistogramSample};
use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::raw_write::RawWriteBatch;
use crate::sample::Sample;
use crate::tenant::TenantId;
use crate::time::TimestampMs;

/// The samples of one series.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeriesSamples {
    pub labels: Labels,
    pub samples: Vec<Sample>,
    /// Native histogram samples, ascending by time; a series may hold both
    /// kinds, but never both at one timestamp.
    pub histograms: Vec<HistogramSample>,
    /// When the counts of `samples` and `histograms` started; empty (and
    /// free) for the many series that do not say.
    pub start_timestamps: StartTimestamps,
}

impl SeriesSamples {
    /// A series of float samples only.
    pub fn floats(labels: Labels, samples: Vec<Sample>) -> Self {
        SeriesSamples {
            labels,
            samples,
            histograms: Vec::new(),
            start_timestamps: StartTimestamps::default(),
        }
    }

    /// Drops all but the newest float sample and the newest histogram (and
    /// their start timestamps).
    pub fn keep_latest(&mut self) {
        keep_last(&mut self.samples);
        keep_last(&mut self.histograms);
        keep_last(&mut self.start_timestamps.floats);
        keep_last(&mut self.start_timestamps.histograms);
    }

    /// Whether each list of start timestamps is empty or matches its samples
    /// one to one, as [`StartTimestamps`] requires.
    pub fn start_timestamps_fit(&self) -> bool {
        let fits = |starts: usize, samples: usize| starts == 0 || starts == samples;
        fits(self.start_timestamps.floats.len(), self.samples.len())
            && fits(self.start_timestamps.histograms.len(), self.histograms.len())
    }
}

fn keep_last<T>(items: &mut Vec<T>) {
    if items.len() > 1 {
        items.drain(..items.len() - 1);
    }
}

/// What a sample's start timestamp is when it has none: Prometheus' `0`
/// (a count that started exactly at the epoch cannot be told apart).
pub const NO_START_TIMESTAMP: TimestampMs = 0;

/// Sample start timestamps (Prometheus 3's "ST", OpenTelemetry's start time):
/// when the count a sample reports began. A cumulative counter's samples
/// share the start of the process counting (a later start means it
/// restarted); a delta sample starts where the previous one ended.
///
/// Each list is either empty, when no sample of its kind has a start
/// timestamp, or holds one entry per sample of [`SeriesSamples::samples`]
/// (`floats`) or [`SeriesSamples::histograms`] (`histograms`), in the same
/// order, with [`NO_START_TIMESTAMP`] for a sample without one. Parallel
/// lists rather than a field of every sample: series without start
/// timestamps, the usual case, pay no memory and no per-sample work, and
/// readers slice them with the same indexes as the samples.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartTimestamps {
    pub floats: Vec<TimestampMs>,
    pub histograms: Vec<TimestampMs>,
}

impl StartTimestamps {
    /// Whether no sample has a start timestamp listed.
    pub fn is_empty(&self) -> bool {
        self.floats.is_empty() && self.histograms.is_empty()
    }
}

/// A metric type as remote write and the exposition formats name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MetricType {
    #[default]
    Unknown,
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
}

impl MetricType {
    /// From the protobuf enum of either remote write version (same numbering).
    pub fn from_proto(value: i32) -> Self {
        match value {
            1 => MetricType::Counter,
            2 => MetricType::Gauge,
            3 => MetricType::Histogram,
            4 => MetricType::GaugeHistogram,
            5 => MetricType::Summary,
            6 => MetricType::Info,
            7 => MetricType::StateSet,
            _ => MetricType::Unknown,
        }
    }

    pub fn to_proto(self) -> i32 {
        match self {
            MetricType::Unknown => 0,
            MetricType::Counter => 1,
            MetricType::Gauge => 2,
            MetricType::Histogram => 3,
            MetricType::GaugeHistogram => 4,
            MetricType::Summary => 5,
            MetricType::Info => 6,
            MetricType::StateSet => 7,
        }
    }

    /// The lowercase name `/api/v1/metadata` answers with.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Unknown => "unknown",
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
        }
    }
}

/// Metadata of one metric family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetricMetadata {
    pub metric_family_name: String,
    pub metric_type: MetricType,
    pub help: String,
    pub unit: String,
}

/// One decoded write: series with their samples, plus metric metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub series: Vec<SeriesSamples>,
    pub metadata: Vec<MetricMetadata>,
}

impl WriteBatch {
    /// Float samples over all series.
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    /// Native histogram samples over all series.
    pub fn histogram_count(&self) -> usize {
        self.series.iter().map(|s| s.histograms.len()).sum()
    }
}

/// What a write stored, for the remote write 2.0 response headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteSummary {
    pub samples: u64,
    pub histograms: u64,
    pub exemplars: u64,
}

/// Accepts writes. `ingest` returns only once the batch is durable in the WAL:
/// a successful return is an acknowledgement. The batch comes in its zero-copy
/// form; owned batches convert with [`RawWriteBatch::from_batch`].
pub trait Ingest: Send + Sync + 'static {
    fn ingest(
        &self,
        tenant: &TenantId,
        batch: RawWriteBatch,
    ) -> impl Future<Output = Result<WriteSummary, Error>> + Send;
}

/// A time range, both ends inclusive, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: TimestampMs,
    pub end: TimestampMs,
}

impl TimeRange {
    pub const ALL: TimeRange = TimeRange {
        start: TimestampMs::MIN,
        end: TimestampMs::MAX,
    };

    pub fn new(start: TimestampMs, end: TimestampMs) -> Self {
        TimeRange { start, end }
    }

    pub fn contains(&self, timestamp: TimestampMs) -> bool {
        self.start <= timestamp && timestamp <= self.end
    }
}

/// Per-tenant cardinality figures for `/api/v1/status/tsdb`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CardinalityStats {
    pub num_series: u64,
    pub num_label_pairs: u64,
    pub chunk_count: u64,
    pub min_time: TimestampMs,
    pub max_time: TimestampMs,
    /// (metric name, series count), largest first.
    pub series_count_by_metric_name: Vec<(String, u64)>,
    /// (label name, distinct value count), largest first.
    pub label_value_count_by_label_name: Vec<(String, u64)>,
    /// (label name, bytes used by its values), largest first.
    pub memory_in_bytes_by_label_name: Vec<(String, u64)>,
    /// (`name=value`, series count), largest first.
    pub series_count_by_label_value_pair: Vec<(String, u64)>,
}

/// Reads series. The contract for every method:
/// - `matchers` must all hold (a missing label reads as `""`); an empty list selects nothing;
/// - `range` is inclusive at both ends and selects by sample time;
/// - results of one tenant never include another tenant's data.
pub trait SeriesRead: Send + Sync + 'static {
    /// Series matching `matchers` with at least one sample in `range`, each with
    /// its samples in `range` in ascending time order (one per timestamp),
    /// sorted by label set.
    fn select(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: TimeRange,
    ) -> impl Future<Output = Result<Vec<SeriesSamples>, Error>> + Send;

    /// What `select` returns, handed to `visit` a batch of about
    /// `batch_series` series at a time, in label order: a caller that reduces
    /// each batch (a query turning samples into points) never holds every
    /// sample at once. The default loads everything, then hands it over.
    fn select_batches<F>(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: TimeRange,
        batch_series: usize,
        mut visit: F,
    ) -> impl Future<Output = Result<(), Error>> + Send
    where
        F: FnMut(Vec<SeriesSamples>) -> Result<(), Error> + Send,
    {
        async move {
            let mut all = self.select(tenant, matchers, range).await?.into_iter();
            loop {
                let batch: Vec<SeriesSamples> = all.by_ref().take(batch_series.max(1)).collect();
                if batch.is_empty() {
                    return Ok(());
                }
                visit(batch)?;
            }
        }
    }

    /// What `select_batches` hands out, except that each series keeps only its
    /// newest float sample and its newest histogram in `range` (either may be
    /// missing): all an instant selector evaluated at `range.end` looks at.
    /// Storage answers this from chunk ends where it can, without decoding.
    fn select_latest_batches<F>(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: TimeRange,
        batch_series: usize,
        mut visit: F,
    ) -> impl Future<Output = Result<(), Error>> + Send
    where
        F: FnMut(Vec<SeriesSamples>) -> Result<(), Error> + Send,
    {
        self.select_batches(tenant, matchers, range, batch_series, move |mut batch| {
            batch.iter_mut().for_each(SeriesSamples::keep_latest);
            visit(batch)
        })
    }

    /// The label sets of the series `select` would return, sorted. Storage answers
    /// this from its index without loading samples where it can.
    fn series(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: TimeRange,
    ) -> impl Future<Output = Result<Vec<Labels>, Error>> + Send;

    /// Sorted, distinct label names of the selected series. With no matchers,
    /// of every series in range.
    fn label_names(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: TimeRange,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send {
        async move {
            let series = self.series(tenant, &all_if_empty(matchers), range).await?;
            let names: BTreeSet<String> = series.iter().flat_map(|l| l.iter().map(|p| p.name.clone())).collect();
            Ok(names.into_iter().collect())
        }
    }

    /// Sorted, distinct values of label `name` over the selected series.
    fn label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        matchers: &[Matcher],
        range: TimeRange,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send {
        async move {
            let series = self.series(tenant, &all_if_empty(matchers), range).await?;
            let values: BTreeSet<String> = series.iter().filter_map(|l| l.get(name).map(str::to_string)).collect();
            Ok(values.into_iter().collect())
        }
    }
}

/// Reads metric metadata and index statistics.
pub trait MetadataRead: Send + Sync + 'static {
    /// Metadata by metric family name; several entries when senders disagreed.
    fn metadata(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<BTreeMap<String, Vec<MetricMetadata>>, Error>> + Send;

    /// Cardinality statistics of the tenant's in-memory head, top `limit` of each list.
    fn cardinality(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> impl Future<Output = Result<CardinalityStats, Error>> + Send;
}

/// `matchers`, or a matcher selecting every series when it is empty.
pub fn all_if_empty(matchers: &[Matcher]) -> Vec<Matcher> {
    if matchers.is_empty() {
        vec![select_all()]
    } else {
        matchers.to_vec()
    }
}

/// A matcher every series satisfies (every series has a metric name).
pub fn select_all() -> Matcher {
    // `.+` on the name is recognised as the NonEmpty shape: no regex runs.
    Matcher::new(crate::matcher::MatchOp::RegexMatch, crate::labels::METRIC_NAME, ".+")
        .unwrap_or_else(|_| Matcher::equal(crate::labels::METRIC_NAME, ""))
}

/// Whether every matcher accepts the label set.
pub fn matches_all(labels: &Labels, matchers: &[Matcher]) -> bool {
    matchers.iter().all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
}

/// A stored value in [`MemSeriesStore`].
#[derive(Debug, Clone)]
enum MemValue {
    Float(f64),
    Histogram(FloatHistogram),
}

/// One series in [`MemSeriesStore`]: values by time, and the start
/// timestamps of those that have one (empty for most series).
#[derive(Debug, Default)]
struct MemSeries {
    values: BTreeMap<TimestampMs, MemValue>,
    starts: BTreeMap<TimestampMs, TimestampMs>,
}

/// One tenant's series in [`MemSeriesStore`], per label set.
type TenantSeries = BTreeMap<Labels, MemSeries>;

/// An in-memory [`SeriesRead`] + [`Ingest`] for tests of consumers: a plain map,
/// no WAL, no index — obviously correct, so it doubles as an oracle.
#[derive(Debug, Default)]
pub struct MemSeriesStore {
    tenants: std::sync::Mutex<BTreeMap<TenantId, TenantSeries>>,
    metadata: std::sync::Mutex<BTreeMap<TenantId, BTreeMap<String, Vec<MetricMetadata>>>>,
}

impl MemSeriesStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `series` as they are, histograms and start timestamps
    /// included, replacing values (with their start timestamps) at the same
    /// timestamps: how tests load data the wire formats cannot carry.
    pub fn insert(&self, tenant: &TenantId, series: Vec<SeriesSamples>) {
        let mut tenants = self.lock_tenants();
        let series_map = tenants.entry(tenant.clone()).or_default();
        for series in series {
            debug_assert!(series.start_timestamps_fit(), "start timestamps of {}", series.labels);
            let stored = series_map.entry(series.labels).or_default();
            let float_starts = &series.start_timestamps.floats;
            for (i, sample) in series.samples.into_iter().enumerate() {
                stored.values.insert(sample.timestamp, MemValue::Float(sample.value));
                stored.set_start(sample.timestamp, float_starts.get(i).copied());
            }
            let histogram_starts = &series.start_timestamps.histograms;
            for (i, sample) in series.histograms.into_iter().enumerate() {
                stored
                    .values
                    .insert(sample.timestamp, MemValue::Histogram(sample.histogram));
                stored.set_start(sample.timestamp, histogram_starts.get(i).copied());
            }
        }
    }

    fn lock_tenants(&self) -> std::sync::MutexGuard<'_, BTreeMap<TenantId, TenantSeries>> {
        self.tenants.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn select_now(&self, tenant: &TenantId, matchers: &[Matcher], range: TimeRange) -> Vec<SeriesSamples> {
        if matchers.is_empty() {
            return Vec::new();
        }
        let tenants = self.lock_tenants();
        let Some(series) = tenants.get(tenant) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (labels, stored) in series {
            if !matches_all(labels, matchers) {
                continue;
            }
            let mut selected = SeriesSamples::floats(labels.clone(), Vec::new());
            // Decided once per series: without start timestamps in range the
            // lists stay empty.
            let with_starts = stored.starts.range(range.start..=range.end).next().is_some();
            for (&timestamp, value) in stored.values.range(range.start..=range.end) {
                let start = || stored.starts.get(&timestamp).copied().unwrap_or(NO_START_TIMESTAMP);
                match value {
                    MemValue::Float(v) => {
                        selected.samples.push(Sample::new(timestamp, *v));
                        if with_starts {
                            selected.start_timestamps.floats.push(start());
                        }
                    }
                    MemValue::Histogram(h) => {
                        selected.histograms.push(HistogramSample {
                            timestamp,
                            histogram: h.clone(),
                        });
                        if with_starts {
                            selected.start_timestamps.histograms.push(start());
                        }
                    }
                }
            }
            // A kind whose samples all lack a start timestamp lists none.
            for starts in [
                &mut selected.start_timestamps.floats,
                &mut selected.start_timestamps.histograms,
            ] {
                if starts.iter().all(|&start| start == NO_START_TIMESTAMP) {
                    starts.clear();
                }
            }
            if !selected.samples.is_empty() || !selected.histograms.is_empty() {
                out.push(selected);
            }
        }
        out
    }
}

impl MemSeries {
    /// Records the start timestamp of the value at `timestamp` (forgetting
    /// the one of a value it replaced).
    fn set_start(&mut self, timestamp: TimestampMs, start: Option<TimestampMs>) {
        match start {
            Some(start) if start != NO_START_TIMESTAMP => {
                self.starts.insert(timestamp, start);
            }
            _ => {
                if !self.starts.is_empty() {
                    self.starts.remove(&timestamp);
                }
            }
        }
    }
}

impl Ingest for MemSeriesStore {
    async fn ingest(&self, tenant: &TenantId, batch: RawWriteBatch) -> Result<WriteSummary, Error> {
        let mut batch = batch.to_batch()?;
        let written = batch.series.iter().map(|s| s.samples.len() as u64).sum();
        let histograms = batch.series.iter().map(|s| s.histograms.len() as u64).sum();
        self.insert(tenant, std::mem::take(&mut batch.series));
        let mut metadata = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
        let tenant_metadata = metadata.entry(tenant.clone()).or_default();
        for entry in batch.metadata {
            let known = tenant_metadata.entry(entry.metric_family_name.clone()).or_default();
            if !known.contains(&entry) {
                known.push(entry);
            }
        }
        Ok(WriteSummary {
            samples: written,
            histograms,
            ..WriteSummary::default()
        })
    }
}

impl SeriesRead for MemSeriesStore {
    async fn select(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: TimeRange,
    ) -> Result<Vec<SeriesSamples>, Error> {
        Ok(self.select_now(tenant, matchers, range))
    }

    async fn series(&self, tenant: &TenantId, matchers: &[Matcher], range: TimeRange) -> Result<Vec<Labels>, Error> {
        Ok(self
            .select_now(tenant, matchers, range)
            .into_iter()
            .map(|s| s.labels)
            .collect())
    }
}

impl MetadataRead for MemSeriesStore {
    async fn metadata(&self, tenant: &TenantId) -> Result<BTreeMap<String, Vec<MetricMetadata>>, Error> {
        let metadata = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
        Ok(metadata.get(tenant).cloned().unwrap_or_default())
    }

    async fn cardinality(&self, tenant: &TenantId, limit: usize) -> Result<CardinalityStats, Error> {
        let tenants = self.lock_tenants();
        let mut stats = CardinalityStats::default();
        let Some(series) = tenants.get(tenant) else {
            return Ok(stats);
        };
        let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
        for labels in series.keys() {
            stats.num_series += 1;
            *by_name
                .entry(labels.metric_name().unwrap_or_default().to_string())
                .or_default() += 1;
        }
        let mut by_name: Vec<(String, u64)> = by_name.into_iter().collect();
        by_name.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        by_name.truncate(limit);
        stats.series_count_by_metric_name = by_name;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str) -> Labels {
        Labels::from_pairs([(crate::labels::METRIC_NAME, name)])
    }

    fn select(store: &MemSeriesStore, range: TimeRange) -> Vec<SeriesSamples> {
        store.select_now(&TenantId::default_tenant(), &[select_all()], range)
    }

    #[test]
    fn start_timestamps_are_kept_per_sample_and_only_where_given() {
        let store = MemSeriesStore::new();
        let mut with_starts = SeriesSamples::floats(
            labels("with"),
            vec![Sample::new(10, 1.0), Sample::new(20, 2.0), Sample::new(30, 3.0)],
        );
        with_starts.start_timestamps.floats = vec![5, NO_START_TIMESTAMP, 25];
        let without = SeriesSamples::floats(labels("without"), vec![Sample::new(10, 1.0)]);
        store.insert(&TenantId::default_tenant(), vec![with_starts, without]);

        let all = select(&store, TimeRange::ALL);
        assert_eq!(all[0].start_timestamps.floats, [5, NO_START_TIMESTAMP, 25]);
        assert!(all[1].start_timestamps.is_empty());
        // A range whose samples have none lists none.
        let middle = select(&store, TimeRange::new(15, 20));
        assert!(middle[0].start_timestamps.is_empty());
        let tail = select(&store, TimeRange::new(20, 30));
        assert_eq!(tail[0].start_timestamps.floats, [NO_START_TIMESTAMP, 25]);
    }

    #[test]
    fn replacing_a_value_replaces_its_start_timestamp() {
        let store = MemSeriesStore::new();
        let mut first = SeriesSamples::floats(labels("x"), vec![Sample::new(10, 1.0)]);
        first.start_timestamps.floats = vec![5];
        store.insert(&TenantId::default_tenant(), vec![first]);
        store.insert(
            &TenantId::default_tenant(),
            vec![SeriesSamples::floats(labels("x"), vec![Sample::new(10, 2.0)])],
        );
        assert!(select(&store, TimeRange::ALL)[0].start_timestamps.is_empty());
    }

    #[test]
    fn keep_latest_keeps_start_timestamps_aligned() {
        let mut series = SeriesSamples::floats(labels("x"), vec![Sample::new(10, 1.0), Sample::new(20, 2.0)]);
        series.start_timestamps.floats = vec![5, 15];
        series.keep_latest();
        assert_eq!(series.samples, [Sample::new(20, 2.0)]);
        assert_eq!(series.start_timestamps.floats, [15]);
        assert!(series.start_timestamps_fit());
    }
}
