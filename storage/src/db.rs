//! The multi-tenant database: wiring WAL, head and blocks per tenant.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use tidewatch_model::histogram::HistogramSample;
use tidewatch_model::raw_write::{RawSeriesRef, RawWriteBatch};
use tidewatch_model::seam::{
    CardinalityStats, Ingest, MetadataRead, MetricMetadata, SeriesRead, SeriesSamples, TimeRange, WriteBatch,
    WriteSummary,
};
use tidewatch_model::validate::{IngestLimits, validate_new_series, validate_raw_samples};
use tidewatch_model::{Clock, Labels, Matcher, Sample, TenantId, TimestampMs};

use crate::block::{Block, BlockWriter, EncodedBlock, META_FILE, Via, Wanted, slice_ms_for_window, write_block};
use crate::error::{Error, Result};
use crate::head::Head;
use crate::histogram_codec::EncodedHistogram;
use crate::logs::{LogHeadFigures, LogStore, StreamRetention};
use crate::segment_cache::SegmentCache;
use crate::shared_labels::SharedLabels;
use crate::wal::{self, FsyncPolicy, Record, RecordBuffer, RefHistogram, RefSample, Wal};

const HOUR_MS: i64 = 3_600_000;
const WAL_DIR: &str = "wal";
/// Series per step of a streaming compaction.
const MERGE_CHUNK_SERIES: usize = 2048;
const BLOCKS_DIR: &str = "blocks";

/// Storage settings.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// Length of the time window a head block covers (Prometheus: 2h).
    pub block_duration_ms: i64,
    /// Blocks whose newest sample is older than this are deleted.
    pub retention_ms: i64,
    /// A sample older than its series' newest sample by more than this is rejected.
    pub out_of_order_window_ms: i64,
    /// Most series one tenant may have in the head; 0 means unlimited.
    pub max_series_per_tenant: usize,
    pub limits: IngestLimits,
    /// Most log streams one tenant may have in the log head (Loki's
    /// `max_global_streams_per_user`, default 5000); 0 means unlimited. A push
    /// that would create more is refused as retryable, naming the stream.
    pub max_log_streams_per_tenant: usize,
    /// Length of the time window a log block covers. One hour: a log head
    /// holds every line of up to one and a half windows (lines weigh ~100×
    /// a sample), Loki cuts chunks after at most 1–2 h for the same reason,
    /// a window's full-text index builds in seconds, and the common query
    /// ranges (last 15 min, 1 h) touch one or two blocks. Compaction merges
    /// small blocks of a day afterwards.
    pub log_block_duration_ms: i64,
    /// Per-stream retention by selector (Loki's `retention_stream`); streams
    /// no rule matches keep `retention_ms`.
    pub log_retention_streams: Vec<StreamRetention>,
    /// Bytes of decoded block samples kept for repeated reads (instant
    /// queries, rules and dashboards read the same recent rows again and
    /// again); 0 turns the cache off.
    pub block_cache_bytes: u64,
}

impl StorageConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StorageConfig {
            data_dir: data_dir.into(),
            fsync: FsyncPolicy::default(),
            block_duration_ms: 2 * HOUR_MS,
            retention_ms: 15 * 24 * HOUR_MS,
            out_of_order_window_ms: 7 * 24 * HOUR_MS,
            max_series_per_tenant: 0,
            limits: IngestLimits::default(),
            max_log_streams_per_tenant: 5000,
            log_block_duration_ms: HOUR_MS,
            log_retention_streams: Vec::new(),
            block_cache_bytes: 256 << 20,
        }
    }
}

/// Counters for self-monitoring.
#[derive(Debug, Default)]
pub struct StorageStats {
    pub samples_appended: AtomicU64,
    pub histograms_appended: AtomicU64,
    pub series_created: AtomicU64,
    pub writes_rejected: AtomicU64,
    pub blocks_written: AtomicU64,
    pub compactions: AtomicU64,
    pub blocks_deleted_by_retention: AtomicU64,
    pub log_entries_appended: AtomicU64,
    pub log_pushes_rejected: AtomicU64,
}

/// Totals over every tenant's head.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeadFigures {
    pub series: u64,
    pub samples: u64,
    pub sample_bytes: u64,
}

/// Samples taken out of the head and not yet in a registered block; readers see them.
#[derive(Debug)]
struct Flushing {
    /// Sorted by labels.
    series: Vec<FlushingSeries>,
}

/// One series' samples taken out of the head. Histograms stay in the head's
/// encoded form: the block writer copies their bytes, and readers decode only
/// the ones they select.
#[derive(Debug)]
struct FlushingSeries {
    labels: Labels,
    samples: Vec<Sample>,
    histograms: Vec<EncodedHistogram>,
}

/// One tenant's WAL, head and blocks.
#[derive(Debug)]
struct TenantDb {
    prefix: StorePath,
    head: RwLock<Head>,
    wal: Mutex<Wal>,
    blocks: RwLock<Vec<Arc<Block>>>,
    flushing: RwLock<Vec<Arc<Flushing>>>,
    /// One flush or compaction at a time per tenant.
    maintenance: tokio::sync::Mutex<()>,
    /// Blocks taken out of `blocks` (compacted or past retention) whose
    /// files wait until no read holds them: a query snapshots its blocks
    /// and opens their files as it goes.
    retired: Mutex<Vec<Arc<Block>>>,
    /// One copy of each label set across the blocks and flushed head series.
    shared_labels: SharedLabels,
}

fn lock_poisoned<T>(result: std::sync::LockResult<T>) -> T {
    // A panic while holding a lock is a bug we already logged; the data behind
    // the lock is still consistent at every await/return point, so keep serving.
    result.unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TenantDb {
    fn snapshot_blocks(&self) -> Vec<Arc<Block>> {
        lock_poisoned(self.blocks.read()).clone()
    }
}

/// The storage engine for every tenant.
#[derive(Debug)]
pub struct Storage {
    config: StorageConfig,
    clock: Arc<dyn Clock>,
    store: Arc<dyn ObjectStore>,
    tenants: RwLock<HashMap<TenantId, Arc<TenantDb>>>,
    /// Serialises opening tenants (loading blocks, replaying the WAL).
    opening: tokio::sync::Mutex<()>,
    stats: Arc<StorageStats>,
    /// Decoded block segments kept for repeated reads, shared by every tenant.
    segment_cache: Arc<SegmentCache>,
    logs: LogStore,
}

impl Storage {
    /// Opens the data directory: loads every tenant's blocks and replays its WAL.
    pub async fn open(config: StorageConfig, clock: Arc<dyn Clock>) -> Result<Arc<Storage>> {
        let blocks_dir = config.data_dir.join(BLOCKS_DIR);
        std::fs::create_dir_all(&blocks_dir).map_err(|e| Error::io(format!("creating {}", blocks_dir.display()), e))?;
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&blocks_dir)?);
        Self::open_with_store(config, clock, store).await
    }

    /// Like [`Storage::open`] with blocks in the given object store.
    pub async fn open_with_store(
        config: StorageConfig,
        clock: Arc<dyn Clock>,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Arc<Storage>> {
        let wal_root = config.data_dir.join(WAL_DIR);
        std::fs::create_dir_all(&wal_root).map_err(|e| Error::io(format!("creating {}", wal_root.display()), e))?;
        let logs = LogStore::new(&config.data_dir, config.fsync)?;
        let storage = Arc::new(Storage {
            clock,
            store,
            tenants: RwLock::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
            stats: Arc::new(StorageStats::default()),
            segment_cache: SegmentCache::new(config.block_cache_bytes),
            logs,
            config,
        });
        let mut names = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(&wal_root).map_err(|e| Error::io("listing WAL tenants", e))? {
            let entry = entry.map_err(|e| Error::io("listing WAL tenants", e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.insert(name.to_string());
            }
        }
        let listing = storage.store.list_with_delimiter(None).await?;
        for prefix in listing.common_prefixes {
            if let Some(name) = prefix.filename() {
                names.insert(name.to_string());
            }
        }
        for name in names {
            match TenantId::parse(&name) {
                Ok(tenant) => {
                    storage.tenant(&tenant).await?;
                }
                Err(e) => tracing::warn!(name, error = %e, "ignoring data directory entry that is not a tenant"),
            }
        }
        storage.logs.open_all().await?;
        Ok(storage)
    }

    pub(crate) fn log_store(&self) -> &LogStore {
        &self.logs
    }

    /// Log blocks over every tenant, for tests and self-monitoring.
    pub fn log_block_count(&self) -> usize {
        self.logs.block_count()
    }

    /// Streams and entries held in every tenant's log head.
    pub fn log_head_figures(&self) -> LogHeadFigures {
        self.logs.head_figures()
    }

    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    pub fn stats(&self) -> &Arc<StorageStats> {
        &self.stats
    }

    /// The cache of decoded block segments (for its figures).
    pub fn segment_cache(&self) -> &SegmentCache {
        &self.segment_cache
    }

    fn existing_tenant(&self, tenant: &TenantId) -> Option<Arc<TenantDb>> {
        lock_poisoned(self.tenants.read()).get(tenant).cloned()
    }

    /// The tenant's database, opened (blocks loaded, WAL replayed) on first use.
    async fn tenant(&self, tenant: &TenantId) -> Result<Arc<TenantDb>> {
        if let Some(db) = self.existing_tenant(tenant) {
            return Ok(db);
        }
        // One opener at a time: two concurrent first writes must not both replay
        // (and possibly repair) the same WAL while the other appends to it.
        let _opening = self.opening.lock().await;
        if let Some(db) = self.existing_tenant(tenant) {
            return Ok(db);
        }
        let prefix = StorePath::from(tenant.as_str());
        let shared_labels = SharedLabels::default();
        let blocks = self.load_blocks(&prefix, &shared_labels).await?;
        let wal_dir = self.config.data_dir.join(WAL_DIR).join(tenant.as_str());
        let fsync = self.config.fsync;
        let (head, wal) = tokio::task::spawn_blocking(move || replay(&wal_dir, fsync))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        let db = Arc::new(TenantDb {
            prefix,
            head: RwLock::new(head),
            wal: Mutex::new(wal),
            blocks: RwLock::new(blocks),
            flushing: RwLock::new(Vec::new()),
            maintenance: tokio::sync::Mutex::new(()),
            retired: Mutex::new(Vec::new()),
            shared_labels,
        });
        lock_poisoned(self.tenants.write()).insert(tenant.clone(), db.clone());
        Ok(db)
    }

    /// Opens the block in `dir` with the tenant's shared labels and the
    /// storage's segment cache.
    async fn open_block(&self, dir: StorePath, shared_labels: &SharedLabels) -> Result<Block> {
        let mut block = Block::open(self.store.clone(), dir).await?;
        block.share_labels(shared_labels);
        block.use_cache(&self.segment_cache);
        Ok(block)
    }

    async fn load_blocks(&self, prefix: &StorePath, shared_labels: &SharedLabels) -> Result<Vec<Arc<Block>>> {
        let listing = self.store.list_with_delimiter(Some(prefix)).await?;
        let mut blocks = Vec::new();
        for dir in listing.common_prefixes {
            let has_meta = self.store.head(&dir.clone().join(META_FILE)).await.is_ok();
            if !has_meta {
                tracing::warn!(block = %dir, "removing unfinished block without meta.json");
                self.delete_prefix(&dir).await?;
                continue;
            }
            blocks.push(Arc::new(self.open_block(dir, shared_labels).await?));
        }
        // A compacted block names its sources: finish a deletion a crash interrupted.
        let replaced: std::collections::HashSet<String> =
            blocks.iter().flat_map(|b| b.meta().sources.clone()).collect();
        let mut kept = Vec::new();
        for block in blocks {
            if replaced.contains(&block.meta().ulid) {
                tracing::info!(block = %block.meta().ulid, "removing block already replaced by compaction");
                self.delete_prefix(block.dir()).await?;
            } else {
                kept.push(block);
            }
        }
        sort_blocks(&mut kept);
        Ok(kept)
    }

    async fn delete_prefix(&self, prefix: &StorePath) -> Result<()> {
        let paths: Vec<StorePath> = self
            .store
            .list(Some(prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        for path in paths {
            self.store.delete(&path).await?;
        }
        Ok(())
    }

    /// Validates and stores an owned batch; returns once it is in the WAL.
    pub async fn append(&self, tenant: &TenantId, batch: WriteBatch) -> Result<WriteSummary> {
        self.append_raw(tenant, RawWriteBatch::from_batch(&batch)).await
    }

    /// Validates and stores a batch; returns once it is in the WAL.
    pub async fn append_raw(&self, tenant: &TenantId, batch: RawWriteBatch) -> Result<WriteSummary> {
        if let Err(e) = validate_raw_samples(&batch, &self.config.limits, self.clock.now_ms()) {
            self.stats.writes_rejected.fetch_add(1, Ordering::Relaxed);
            return Err(e.into());
        }
        let db = self.tenant(tenant).await?;
        let config = self.config.clone();
        let stats = self.stats.clone();
        let result = tokio::task::spawn_blocking(move || append_blocking(&db, &config, &stats, batch))
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
        if result.is_err() {
            self.stats.writes_rejected.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Tenants with data.
    pub fn tenants(&self) -> Vec<TenantId> {
        let mut tenants: Vec<TenantId> = lock_poisoned(self.tenants.read()).keys().cloned().collect();
        tenants.sort();
        tenants
    }

    /// Writes everything in every tenant's head (metrics and logs) into
    /// blocks; returns when durable.
    pub async fn flush_all(&self) -> Result<()> {
        for tenant in self.tenants() {
            if let Some(db) = self.existing_tenant(&tenant) {
                self.flush_before(&db, TimestampMs::MAX).await?;
            }
        }
        self.logs.flush_all(&self.config).await
    }

    /// Moves head samples older than `cutoff` into blocks (one per block window),
    /// then checkpoints the WAL so it no longer holds them.
    async fn flush_before(&self, db: &Arc<TenantDb>, cutoff: TimestampMs) -> Result<()> {
        let _maintenance = db.maintenance.lock().await;
        let (flushing, wal_cut) = {
            let mut head = lock_poisoned(db.head.write());
            let taken = head.take_before(cutoff);
            let taken_ids: Vec<u32> = taken.iter().map(|(id, ..)| *id).collect();
            head.share_labels(&taken_ids, &db.shared_labels);
            let mut series: Vec<FlushingSeries> = taken
                .into_iter()
                .filter_map(|(id, samples, histograms)| {
                    head.series(id).map(|s| FlushingSeries {
                        labels: s.labels.clone(),
                        samples,
                        histograms,
                    })
                })
                .collect();
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            let flushing = Arc::new(Flushing { series });
            lock_poisoned(db.flushing.write()).push(flushing.clone());
            let wal_cut = lock_poisoned(db.wal.lock()).cut()?;
            (flushing, wal_cut)
        };
        let windows = split_by_window(&flushing.series, self.config.block_duration_ms);
        let slice_ms = slice_ms_for_window(self.config.block_duration_ms);
        for window in windows {
            let source = flushing.clone();
            let encoded = tokio::task::spawn_blocking(move || -> Result<EncodedBlock> {
                let mut writer = BlockWriter::new(1, Vec::new(), slice_ms)?;
                for (index, samples, histograms) in window {
                    let series = &source.series[index];
                    writer.push(&series.labels, &series.samples[samples], &series.histograms[histograms])?;
                }
                writer.finish()
            })
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
            let meta = write_block(&self.store, &db.prefix, encoded).await?;
            let block = self
                .open_block(db.prefix.clone().join(meta.ulid.as_str()), &db.shared_labels)
                .await?;
            tracing::info!(
                block = %meta.ulid,
                series = meta.num_series,
                samples = meta.num_samples,
                histograms = meta.num_histograms,
                "wrote block from head"
            );
            self.stats.blocks_written.fetch_add(1, Ordering::Relaxed);
            let mut blocks = lock_poisoned(db.blocks.write());
            blocks.push(Arc::new(block));
            sort_blocks(&mut blocks);
        }
        lock_poisoned(db.flushing.write()).retain(|f| !Arc::ptr_eq(f, &flushing));
        // Blocks are durable: drop flushed samples from the log.
        let wal_dir = lock_poisoned(db.wal.lock()).dir().to_path_buf();
        tokio::task::spawn_blocking(move || {
            wal::checkpoint(&wal_dir, wal_cut, |record| match record {
                Record::Samples(samples) => {
                    let kept: Vec<RefSample> = samples.into_iter().filter(|s| s.timestamp >= cutoff).collect();
                    (!kept.is_empty()).then_some(Record::Samples(kept))
                }
                Record::Histograms(histograms) => {
                    let kept: Vec<RefHistogram> = histograms.into_iter().filter(|h| h.timestamp >= cutoff).collect();
                    (!kept.is_empty()).then_some(Record::Histograms(kept))
                }
                other => Some(other),
            })
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        Ok(())
    }

    /// Periodic work: WAL sync, cutting head windows into blocks, compaction, retention.
    pub async fn maintain(&self) -> Result<()> {
        let now = self.clock.now_ms();
        // Logs and metrics are maintained independently: a failure of one must
        // not stop the other's flushes; the first error is reported.
        let logs = self.logs.maintain(&self.config, now).await;
        if let Err(e) = &logs {
            tracing::error!(error = %e, "log maintenance failed");
        }
        self.maintain_metrics(now).await?;
        logs
    }

    async fn maintain_metrics(&self, now: TimestampMs) -> Result<()> {
        for tenant in self.tenants() {
            let Some(db) = self.existing_tenant(&tenant) else {
                continue;
            };
            lock_poisoned(db.wal.lock()).sync_if_due()?;
            let bounds = lock_poisoned(db.head.read()).time_bounds();
            let block = self.config.block_duration_ms;
            if let Some((min, max)) = bounds {
                // Keep at least half a block window in the head, as Prometheus does.
                if max - min > block * 3 / 2 {
                    let cutoff = align_down(max - block / 2, block);
                    self.flush_before(&db, cutoff).await?;
                }
            }
            self.compact(&db, now).await?;
            self.apply_retention(&db, now).await?;
            self.delete_retired(&db).await?;
            db.shared_labels.prune();
        }
        Ok(())
    }

    /// Merges blocks lying in the same aligned window of each compaction range
    /// once that window is over, and blocks that overlap.
    async fn compact(&self, db: &Arc<TenantDb>, now: TimestampMs) -> Result<()> {
        let _maintenance = db.maintenance.lock().await;
        let block = self.config.block_duration_ms;
        for range in [block * 3, block * 12] {
            let blocks = db.snapshot_blocks();
            let mut groups: BTreeMap<i64, Vec<Arc<Block>>> = BTreeMap::new();
            for b in blocks {
                let window = align_down(b.meta().min_time, range);
                if b.meta().max_time < window + range {
                    groups.entry(window).or_default().push(b);
                }
            }
            for (window, group) in groups {
                if group.len() < 2 || window + range > now - block / 2 {
                    continue;
                }
                self.merge(db, &group, slice_ms_for_window(range)).await?;
            }
        }
        Ok(())
    }

    async fn merge(&self, db: &Arc<TenantDb>, group: &[Arc<Block>], slice_ms: i64) -> Result<()> {
        // Later sources win on equal timestamps: order by ulid (creation time).
        let mut sources: Vec<Arc<Block>> = group.to_vec();
        sources.sort_by(|a, b| a.meta().ulid.cmp(&b.meta().ulid));
        // Every series of the sources in label order, with each source's id for it.
        // Ids inside a block follow label order, so each source's ids in a chunk
        // of this list ascend, as `read_samples` wants.
        let mut union: BTreeMap<Labels, Vec<(usize, u32)>> = BTreeMap::new();
        for (index, source) in sources.iter().enumerate() {
            for id in 0..source.series_count() as u32 {
                union.entry(source.labels(id).clone()).or_default().push((index, id));
            }
        }
        let level = sources.iter().map(|b| b.meta().level).max().unwrap_or(1) + 1;
        let names: Vec<String> = sources.iter().map(|b| b.meta().ulid.clone()).collect();
        // Stream: read a chunk of series from every source, merge, hand it to the
        // encoder on a blocking thread; memory holds a chunk, not the blocks.
        let (chunks_tx, mut chunks_rx) = tokio::sync::mpsc::channel::<Vec<SeriesSamples>>(2);
        let writer = tokio::task::spawn_blocking(move || -> Result<EncodedBlock> {
            let mut writer = BlockWriter::new(level, names, slice_ms)?;
            while let Some(chunk) = chunks_rx.blocking_recv() {
                for series in chunk {
                    writer.push(&series.labels, &series.samples, &series.histograms)?;
                }
            }
            writer.finish()
        });
        let entries: Vec<(Labels, Vec<(usize, u32)>)> = union.into_iter().collect();
        for chunk in entries.chunks(MERGE_CHUNK_SERIES) {
            let mut ids_per_source: Vec<Vec<u32>> = vec![Vec::new(); sources.len()];
            for (_, refs) in chunk {
                for &(index, id) in refs {
                    ids_per_source[index].push(id);
                }
            }
            let mut read: Vec<HashMap<u32, Part>> = Vec::with_capacity(sources.len());
            for (source, ids) in sources.iter().zip(&ids_per_source) {
                let samples = source.read_samples(ids).await?;
                let histograms = if source.has_histograms() {
                    source.read_histograms(ids).await?
                } else {
                    vec![Vec::new(); ids.len()]
                };
                read.push(ids.iter().copied().zip(samples.into_iter().zip(histograms)).collect());
            }
            let merged: Vec<SeriesSamples> = chunk
                .iter()
                .map(|(labels, refs)| {
                    let (samples, histograms) = merge_parts(
                        refs.iter()
                            .map(|(index, id)| read[*index].remove(id).unwrap_or_default())
                            .collect(),
                    );
                    SeriesSamples {
                        labels: labels.clone(),
                        samples,
                        histograms,
                        start_timestamps: Default::default(),
                    }
                })
                .collect();
            if chunks_tx.send(merged).await.is_err() {
                // The encoder stopped; its error is reported below.
                break;
            }
        }
        drop(chunks_tx);
        let encoded = writer.await.map_err(|e| Error::Task(e.to_string()))??;
        let meta = write_block(&self.store, &db.prefix, encoded).await?;
        let merged_block = Arc::new(
            self.open_block(db.prefix.clone().join(meta.ulid.as_str()), &db.shared_labels)
                .await?,
        );
        {
            let mut blocks = lock_poisoned(db.blocks.write());
            blocks.retain(|b| !sources.iter().any(|s| s.meta().ulid == b.meta().ulid));
            blocks.push(merged_block);
            sort_blocks(&mut blocks);
        }
        // A crash before the deletion is finished on restart: the merged
        // block names its sources.
        lock_poisoned(db.retired.lock()).extend(sources.iter().cloned());
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(block = %meta.ulid, sources = sources.len(), level, "compacted blocks");
        Ok(())
    }

    async fn apply_retention(&self, db: &Arc<TenantDb>, now: TimestampMs) -> Result<()> {
        let _maintenance = db.maintenance.lock().await;
        let oldest_kept = now - self.config.retention_ms;
        let expired: Vec<Arc<Block>> = db
            .snapshot_blocks()
            .into_iter()
            .filter(|b| b.meta().max_time < oldest_kept)
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        lock_poisoned(db.blocks.write()).retain(|b| b.meta().max_time >= oldest_kept);
        for block in &expired {
            tracing::info!(block = %block.meta().ulid, max_time = block.meta().max_time, "deleting block past retention");
            self.stats.blocks_deleted_by_retention.fetch_add(1, Ordering::Relaxed);
        }
        // A crash before the deletion is finished on restart: retention runs again.
        lock_poisoned(db.retired.lock()).extend(expired);
        Ok(())
    }

    /// Deletes the files of retired blocks no read holds any more.
    async fn delete_retired(&self, db: &Arc<TenantDb>) -> Result<()> {
        let unused: Vec<Arc<Block>> = {
            let mut retired = lock_poisoned(db.retired.lock());
            let (unused, held): (Vec<_>, Vec<_>) = std::mem::take(&mut *retired)
                .into_iter()
                .partition(|b| Arc::strong_count(b) == 1);
            *retired = held;
            unused
        };
        for block in unused {
            self.delete_prefix(block.dir()).await?;
        }
        Ok(())
    }

    /// Number of blocks per tenant, for tests and self-monitoring.
    pub fn block_count(&self) -> usize {
        lock_poisoned(self.tenants.read())
            .values()
            .map(|db| lock_poisoned(db.blocks.read()).len())
            .sum()
    }

    /// Series and samples currently held in all heads.
    pub fn head_totals(&self) -> (u64, u64) {
        let totals = self.head_figures();
        (totals.series, totals.samples)
    }

    /// Series, samples and encoded sample bytes held in all heads.
    pub fn head_figures(&self) -> HeadFigures {
        let tenants = lock_poisoned(self.tenants.read());
        let mut figures = HeadFigures::default();
        for db in tenants.values() {
            let head = lock_poisoned(db.head.read());
            figures.series += head.series_count() as u64;
            figures.samples += head.sample_count();
            figures.sample_bytes += head.sample_bytes();
        }
        figures
    }

    /// Bytes of WAL on disk over all tenants.
    pub fn wal_disk_size(&self) -> u64 {
        let tenants = lock_poisoned(self.tenants.read());
        tenants
            .values()
            .map(|db| lock_poisoned(db.wal.lock()).disk_size())
            .sum()
    }

    /// Selected series from head, in-flight flushes and blocks, merged.
    async fn select_merged(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: TimeRange,
    ) -> Result<Vec<SeriesSamples>> {
        let mut out = Vec::new();
        self.select_batched(tenant, matchers, range, usize::MAX, Wanted::All, |batch| {
            out.extend(batch);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Selected series from every source, merged and handed to `visit` in
    /// batches of `batch_series` label sets, in label order. Only one batch's
    /// samples are in memory at a time: the label sets are found first (from
    /// the indexes), then each batch is read from every source that has it.
    async fn select_batched<F>(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: TimeRange,
        batch_series: usize,
        wanted: Wanted,
        mut visit: F,
    ) -> Result<()>
    where
        F: FnMut(Vec<SeriesSamples>) -> Result<()>,
    {
        let Some(db) = self.existing_tenant(tenant) else {
            return Ok(());
        };
        if matchers.is_empty() {
            return Ok(());
        }
        // Oldest source first, so that later parts win on equal timestamps.
        let blocks: Vec<(Arc<Block>, Vec<u32>)> = db
            .snapshot_blocks()
            .into_iter()
            .filter(|b| b.overlaps(range))
            .map(|b| {
                let ids = b.select_ids(matchers, range);
                (b, ids)
            })
            .filter(|(_, ids)| !ids.is_empty())
            .collect();
        // The whole selection goes through the segment cache or none of it:
        // a query is small enough to repeat cheaply (instant queries, rules,
        // dashboards over recent data) or big enough to evict what does.
        let rows: usize = blocks
            .iter()
            .map(|(block, ids)| block.rows_to_read(ids.len(), range, wanted))
            .sum();
        let via = if self.segment_cache.admits(rows) {
            Via::Cache
        } else {
            Via::File
        };
        let flushing: Vec<Arc<Flushing>> = lock_poisoned(db.flushing.read()).clone();
        let head_ids = lock_poisoned(db.head.read()).select_sorted_ids(matchers, range);
        // Each source lists its series in label order: merging the lists
        // compares far fewer label sets than sorting them all would.
        let mut runs: Vec<Vec<&Labels>> = Vec::new();
        for (block, ids) in &blocks {
            runs.push(ids.iter().map(|&id| block.labels(id)).collect());
        }
        for set in &flushing {
            runs.push(
                set.series
                    .iter()
                    .filter(|s| tidewatch_model::seam::matches_all(&s.labels, matchers))
                    .map(|s| &s.labels)
                    .collect(),
            );
        }
        runs.push(head_ids.iter().map(|(labels, _)| labels).collect());
        let all = merge_label_runs(runs);
        let batches: Vec<&[&Labels]> = all.chunks(batch_series.max(1)).collect();
        // A batch's block reads start while the previous batch is merged and
        // handed to `visit`, so decoding and evaluation share the cores.
        let mut next_reads = batches
            .first()
            .map(|batch| spawn_block_reads(&blocks, batch, range, wanted, via));
        for (index, &batch) in batches.iter().enumerate() {
            let (Some(&low), Some(&high)) = (batch.first(), batch.last()) else {
                continue;
            };
            let reads = next_reads.take().unwrap_or_default();
            next_reads = batches
                .get(index + 1)
                .map(|next| spawn_block_reads(&blocks, next, range, wanted, via));
            // Parts of each series of the batch, by its position in `batch`.
            // Every source hands out series in label order, so a cursor per
            // source finds positions without searching.
            // Most series have one or two sources: their parts stay inline.
            let mut parts: Vec<Parts> = vec![Parts::new(); batch.len()];
            let position = |labels: &Labels, cursor: &mut usize| -> Option<usize> {
                while *cursor < batch.len() && batch[*cursor] < labels {
                    *cursor += 1;
                }
                (batch.get(*cursor) == Some(&labels)).then_some(*cursor)
            };
            // Blocks oldest first, so that later sources win in the merge.
            for read in reads {
                let (block, selected, series_parts) = read.join().await?;
                let mut cursor = 0;
                for (&id, part) in selected.iter().zip(series_parts) {
                    if let Some(at) = position(block.labels(id), &mut cursor)
                        && (!part.0.is_empty() || !part.1.is_empty())
                    {
                        parts[at].push(part);
                    }
                }
            }
            for set in &flushing {
                for series in &set.series {
                    if &series.labels < low
                        || &series.labels > high
                        || !tidewatch_model::seam::matches_all(&series.labels, matchers)
                    {
                        continue;
                    }
                    let (samples, histograms) = series.read(range, wanted);
                    if let Ok(at) = batch.binary_search(&&series.labels)
                        && (!samples.is_empty() || !histograms.is_empty())
                    {
                        parts[at].push((samples, histograms));
                    }
                }
            }
            {
                let head = lock_poisoned(db.head.read());
                let from = head_ids.partition_point(|(labels, _)| labels < low);
                let to = head_ids.partition_point(|(labels, _)| labels <= high);
                let mut cursor = 0;
                for (labels, id) in &head_ids[from..to] {
                    let (samples, histograms) = match wanted {
                        Wanted::All => head.samples_of(*id, range),
                        Wanted::Latest => head.latest_of(*id, range),
                    };
                    if let Some(at) = position(labels, &mut cursor)
                        && (!samples.is_empty() || !histograms.is_empty())
                    {
                        parts[at].push((samples, histograms));
                    }
                }
            }
            let merged: Vec<SeriesSamples> = batch
                .iter()
                .zip(parts)
                .filter(|(_, parts)| !parts.is_empty())
                .map(|(labels, parts)| {
                    let (samples, histograms) = merge_parts(parts);
                    let mut series = SeriesSamples {
                        labels: (*labels).clone(),
                        samples,
                        histograms,
                        start_timestamps: Default::default(),
                    };
                    if wanted == Wanted::Latest {
                        series.keep_latest();
                    }
                    series
                })
                .collect();
            if !merged.is_empty() {
                visit(merged)?;
            }
        }
        Ok(())
    }

    async fn series_merged(&self, tenant: &TenantId, matchers: &[Matcher], range: TimeRange) -> Result<Vec<Labels>> {
        let Some(db) = self.existing_tenant(tenant) else {
            return Ok(Vec::new());
        };
        if matchers.is_empty() {
            return Ok(Vec::new());
        }
        let mut all = std::collections::BTreeSet::new();
        for block in db.snapshot_blocks().iter().filter(|b| b.overlaps(range)) {
            for id in block.select_ids(matchers, range) {
                all.insert(block.labels(id).clone());
            }
        }
        for set in lock_poisoned(db.flushing.read()).iter() {
            for series in &set.series {
                let in_range = series.samples.iter().any(|s| range.contains(s.timestamp))
                    || series.histograms.iter().any(|h| range.contains(h.timestamp));
                if in_range && tidewatch_model::seam::matches_all(&series.labels, matchers) {
                    all.insert(series.labels.clone());
                }
            }
        }
        all.extend(lock_poisoned(db.head.read()).select_labels(matchers, range));
        Ok(all.into_iter().collect())
    }
}

impl Storage {
    /// Whether `range` contains every sample of the tenant, so that the label
    /// indexes answer label queries without looking at samples.
    fn covers_all_data(&self, tenant: &TenantId, range: TimeRange) -> bool {
        let Some(db) = self.existing_tenant(tenant) else {
            return true;
        };
        let head_bounds = lock_poisoned(db.head.read()).time_bounds();
        let in_range = |min: TimestampMs, max: TimestampMs| range.start <= min && max <= range.end;
        head_bounds.is_none_or(|(min, max)| in_range(min, max))
            && db
                .snapshot_blocks()
                .iter()
                .all(|b| in_range(b.meta().min_time, b.meta().max_time))
            && lock_poisoned(db.flushing.read()).is_empty()
    }
}

fn sort_blocks(blocks: &mut [Arc<Block>]) {
    blocks.sort_by(|a, b| a.meta().ulid.cmp(&b.meta().ulid));
}

fn align_down(timestamp: TimestampMs, step: i64) -> TimestampMs {
    timestamp.div_euclid(step) * step
}

/// A value with a time, merged across sources.
trait Timed {
    fn time(&self) -> TimestampMs;
}

impl Timed for Sample {
    fn time(&self) -> TimestampMs {
        self.timestamp
    }
}

impl Timed for HistogramSample {
    fn time(&self) -> TimestampMs {
        self.timestamp
    }
}

/// Either kind of value, for merging series that hold both.
enum Value {
    Float(Sample),
    Histogram(HistogramSample),
}

impl Timed for Value {
    fn time(&self) -> TimestampMs {
        match self {
            Value::Float(sample) => sample.timestamp,
            Value::Histogram(sample) => sample.timestamp,
        }
    }
}

/// One block's part of a batch, read on a task of its own: the block, the
/// ids of its series in the batch and their samples, trimmed to the range.
type BlockRead = (Arc<Block>, Vec<u32>, Vec<Part>);

/// A spawned block read, cancelled if dropped unfinished (the query went away
/// or failed).
struct BlockReadTask(tokio::task::JoinHandle<Result<BlockRead>>);

impl BlockReadTask {
    async fn join(mut self) -> Result<BlockRead> {
        (&mut self.0).await.map_err(|e| Error::Task(e.to_string()))?
    }
}

impl Drop for BlockReadTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts reading the series of `batch` (sorted) from each block that holds
/// any, oldest block first.
fn spawn_block_reads(
    blocks: &[(Arc<Block>, Vec<u32>)],
    batch: &[&Labels],
    range: TimeRange,
    wanted: Wanted,
    via: Via,
) -> Vec<BlockReadTask> {
    let (Some(&low), Some(&high)) = (batch.first(), batch.last()) else {
        return Vec::new();
    };
    let mut reads = Vec::new();
    for (block, ids) in blocks {
        // Block ids are rows of its series table, sorted by labels.
        let from = ids.partition_point(|&id| block.labels(id) < low);
        let to = ids.partition_point(|&id| block.labels(id) <= high);
        if from == to {
            continue;
        }
        let (block, selected) = (block.clone(), ids[from..to].to_vec());
        reads.push(BlockReadTask(tokio::spawn(async move {
            let samples = block
                .read_in_parallel(&selected, range, wanted, PARALLEL_READ_MIN_SERIES, via)
                .await?;
            let histograms = if block.has_histograms() {
                block.read_histograms_in(&selected, range).await?
            } else {
                vec![Vec::new(); selected.len()]
            };
            let parts = samples
                .into_iter()
                .zip(histograms)
                .map(|(mut samples, mut histograms)| {
                    samples.retain(|s| range.contains(s.timestamp));
                    histograms.retain(|h| range.contains(h.timestamp));
                    if wanted == Wanted::Latest {
                        keep_last(&mut samples);
                        keep_last(&mut histograms);
                    }
                    (samples, histograms)
                })
                .collect();
            Ok((block, selected, parts))
        })));
    }
    reads
}

/// Keeps only the last (newest) item.
fn keep_last<T>(items: &mut Vec<T>) {
    if items.len() > 1 {
        items.drain(..items.len() - 1);
    }
}

/// One source's float samples and histograms of a series, each sorted.
type Part = (Vec<Sample>, Vec<HistogramSample>);
/// The parts of one series, oldest source first.
type Parts = smallvec::SmallVec<[Part; 2]>;

/// Series below which a block read stays on one task: splitting costs a
/// task and a second pass over the Parquet footer.
const PARALLEL_READ_MIN_SERIES: usize = 256;

/// Merges lists of label sets, each sorted and free of duplicates, into one
/// such list: pairwise, so each set is compared about log(lists) times.
fn merge_label_runs(mut runs: Vec<Vec<&Labels>>) -> Vec<&Labels> {
    runs.retain(|run| !run.is_empty());
    while runs.len() > 1 {
        let mut merged = Vec::with_capacity(runs.len().div_ceil(2));
        let mut pairs = runs.into_iter();
        while let Some(first) = pairs.next() {
            merged.push(match pairs.next() {
                Some(second) => merge_two_label_runs(first, second),
                None => first,
            });
        }
        runs = merged;
    }
    runs.pop().unwrap_or_default()
}

fn merge_two_label_runs<'a>(first: Vec<&'a Labels>, second: Vec<&'a Labels>) -> Vec<&'a Labels> {
    let mut out = Vec::with_capacity(first.len().max(second.len()));
    let (mut a, mut b) = (first.into_iter().peekable(), second.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.cmp(y) {
                std::cmp::Ordering::Less => a.next(),
                std::cmp::Ordering::Greater => b.next(),
                std::cmp::Ordering::Equal => {
                    b.next();
                    a.next()
                }
            },
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        out.extend(next);
    }
    out
}

/// Merges per-source parts of one series; on equal timestamps the later
/// source wins, whatever the kinds of the two values.
fn merge_parts(parts: Parts) -> (Vec<Sample>, Vec<HistogramSample>) {
    let has_floats = parts.iter().any(|(floats, _)| !floats.is_empty());
    let has_histograms = parts.iter().any(|(_, histograms)| !histograms.is_empty());
    if !has_histograms {
        return (
            merge_sorted(parts.into_iter().map(|(floats, _)| floats).collect()),
            Vec::new(),
        );
    }
    if !has_floats {
        return (Vec::new(), merge_sorted(parts.into_iter().map(|(_, h)| h).collect()));
    }
    // Both kinds: merge them as one stream, so a float in a later source
    // replaces a histogram of an earlier one at its time and the other way round.
    let mut streams = Vec::with_capacity(parts.len());
    for (floats, histograms) in parts {
        let mut values: Vec<Value> = floats
            .into_iter()
            .map(Value::Float)
            .chain(histograms.into_iter().map(Value::Histogram))
            .collect();
        // Stable: within one source a time holds one value anyway.
        values.sort_by_key(Timed::time);
        streams.push(values);
    }
    let (mut floats, mut histograms) = (Vec::new(), Vec::new());
    for value in merge_sorted(streams) {
        match value {
            Value::Float(sample) => floats.push(sample),
            Value::Histogram(sample) => histograms.push(sample),
        }
    }
    (floats, histograms)
}

/// Merges per-source sorted lists; on equal timestamps the later list wins.
fn merge_sorted<T: Timed>(mut parts: Vec<Vec<T>>) -> Vec<T> {
    parts.retain(|p| !p.is_empty());
    if parts.len() <= 1 {
        return parts.pop().unwrap_or_default();
    }
    // Usually the sources cover disjoint stretches of time (blocks of
    // different windows, then the head): then merging is concatenating.
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&i| parts[i][0].time());
    let disjoint = order
        .windows(2)
        .all(|w| parts[w[0]][parts[w[0]].len() - 1].time() < parts[w[1]][0].time());
    if disjoint {
        let mut merged = Vec::with_capacity(parts.iter().map(Vec::len).sum());
        for i in order {
            merged.append(&mut parts[i]);
        }
        return merged;
    }
    let mut all: Vec<(usize, T)> = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for (source, samples) in parts.into_iter().enumerate() {
        all.extend(samples.into_iter().map(|s| (source, s)));
    }
    // Stable, so that within one source the later entry stays later.
    all.sort_by_key(|(source, s)| (s.time(), *source));
    let mut merged: Vec<T> = Vec::with_capacity(all.len());
    for (_, sample) in all {
        match merged.last_mut() {
            Some(last) if last.time() == sample.time() => *last = sample,
            _ => merged.push(sample),
        }
    }
    merged
}

/// A series' share of one block window: its index and the ranges of its
/// samples and histograms that fall in the window.
type WindowPart = (usize, std::ops::Range<usize>, std::ops::Range<usize>);

/// Splits flushing series into aligned block windows, each in label order
/// (the series come sorted).
fn split_by_window(series: &[FlushingSeries], window_ms: i64) -> Vec<Vec<WindowPart>> {
    let mut windows: BTreeMap<i64, Vec<WindowPart>> = BTreeMap::new();
    for (index, entry) in series.iter().enumerate() {
        let mut ranges: BTreeMap<i64, (std::ops::Range<usize>, std::ops::Range<usize>)> = BTreeMap::new();
        let mut start = 0;
        while start < entry.samples.len() {
            let window = align_down(entry.samples[start].timestamp, window_ms);
            let end = start + entry.samples[start..].partition_point(|s| s.timestamp < window + window_ms);
            ranges.entry(window).or_insert((0..0, 0..0)).0 = start..end;
            start = end;
        }
        let mut start = 0;
        while start < entry.histograms.len() {
            let window = align_down(entry.histograms[start].timestamp, window_ms);
            let end = start + entry.histograms[start..].partition_point(|h| h.timestamp < window + window_ms);
            ranges.entry(window).or_insert((0..0, 0..0)).1 = start..end;
            start = end;
        }
        for (window, (samples, histograms)) in ranges {
            windows.entry(window).or_default().push((index, samples, histograms));
        }
    }
    windows.into_values().collect()
}

impl FlushingSeries {
    /// Its samples and histograms in `range` (only the newest of each kind for
    /// [`Wanted::Latest`]), decoding only the histograms returned.
    fn read(&self, range: TimeRange, wanted: Wanted) -> (Vec<Sample>, Vec<HistogramSample>) {
        let from = self.samples.partition_point(|s| s.timestamp < range.start);
        let to = self.samples.partition_point(|s| s.timestamp <= range.end).max(from);
        let (samples, histograms) = (
            &self.samples[from..to],
            EncodedHistogram::in_range(&self.histograms, range),
        );
        let (samples, histograms) = match wanted {
            Wanted::All => (samples, histograms),
            Wanted::Latest => (
                &samples[samples.len().saturating_sub(1)..],
                &histograms[histograms.len().saturating_sub(1)..],
            ),
        };
        (
            samples.to_vec(),
            histograms.iter().map(EncodedHistogram::decode).collect(),
        )
    }
}

/// Replays a tenant's WAL into a fresh head.
fn replay(dir: &Path, fsync: FsyncPolicy) -> Result<(Head, Wal)> {
    let mut head = Head::default();
    // WAL references are dense ids of the head that wrote them; a checkpoint keeps
    // them, so map explicitly rather than assume they still line up.
    let mut ref_to_id: HashMap<u64, u32> = HashMap::new();
    let mut orphan_samples = 0u64;
    let started = std::time::Instant::now();
    let (wal, stats) = Wal::open(dir, fsync, &mut |record| match record {
        Record::Series { series_ref, labels } => {
            let hash = labels.hash64();
            let id = match head.lookup(&labels, hash) {
                Some(id) => id,
                None => head.create(labels, hash),
            };
            ref_to_id.insert(series_ref, id);
        }
        Record::Samples(samples) => {
            for sample in samples {
                match ref_to_id.get(&sample.series_ref) {
                    Some(&id) => {
                        head.append(id, Sample::new(sample.timestamp, sample.value));
                    }
                    None => orphan_samples += 1,
                }
            }
        }
        Record::Histograms(histograms) => {
            for sample in histograms {
                match ref_to_id.get(&sample.series_ref) {
                    Some(&id) => {
                        let sample = HistogramSample {
                            timestamp: sample.timestamp,
                            histogram: sample.histogram,
                        };
                        head.append_histogram(id, &sample);
                    }
                    None => orphan_samples += 1,
                }
            }
        }
        Record::Metadata(metadata) => {
            head.add_metadata(metadata);
        }
        // Log records are written to the log WAL only; one here is misplaced.
        Record::LogStream { .. } | Record::LogEntries(_) => orphan_samples += 1,
    })?;
    if orphan_samples > 0 {
        tracing::warn!(dir = %dir.display(), orphan_samples, "WAL samples without a series record were skipped");
    }
    tracing::info!(
        dir = %dir.display(),
        segments = stats.segments,
        records = stats.records,
        series = head.series_count(),
        samples = head.sample_count(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "replayed WAL"
    );
    // Head ids must equal WAL refs from now on: re-log the mapping when they differ.
    let mut wal = wal;
    if ref_to_id.iter().any(|(&r, &id)| r != u64::from(id)) {
        let mut buffer = RecordBuffer::default();
        for id in 0..head.series_count() as u32 {
            if let Some(series) = head.series(id) {
                buffer.series(u64::from(id), &series.labels);
            }
        }
        wal.append(&buffer)?;
    }
    Ok((head, wal))
}

fn append_blocking(
    db: &TenantDb,
    config: &StorageConfig,
    stats: &StorageStats,
    batch: RawWriteBatch,
) -> Result<WriteSummary> {
    let mut head = lock_poisoned(db.head.write());
    let existing_series = head.series_count();
    let mut ids = Vec::with_capacity(batch.len());
    // New series of this batch: (labels, hash), deduplicated within the batch.
    let mut new_series: Vec<(RawSeriesRef<'_>, u64)> = Vec::new();
    let mut new_by_hash: HashMap<u64, Vec<usize>> = HashMap::new();
    // First pass: resolve ids and check everything that can reject the batch,
    // so that a rejected request changes nothing.
    for series in batch.series() {
        let hash = series.hash64();
        match head.lookup_raw(&series, hash) {
            Some(id) => {
                if let Some(max) = head.series(id).and_then(|s| s.max_time()) {
                    let oldest_allowed = max - config.out_of_order_window_ms;
                    let times = series
                        .samples
                        .iter()
                        .map(|s| s.timestamp)
                        .chain(series.histograms.iter().map(|h| h.timestamp));
                    if let Some(old) = times.into_iter().find(|&t| t < oldest_allowed) {
                        return Err(Error::Rejected(format!(
                            "series {}: sample at {old} is out of order by more than the {} ms window (newest sample is at {max})",
                            series.describe(),
                            config.out_of_order_window_ms
                        )));
                    }
                }
                ids.push(Ok(id));
            }
            None => {
                let candidates = new_by_hash.entry(hash).or_default();
                let known = candidates
                    .iter()
                    .copied()
                    .find(|&index| same_raw_labels(&new_series[index].0, &series));
                let index = known.unwrap_or_else(|| {
                    new_series.push((series, hash));
                    candidates.push(new_series.len() - 1);
                    new_series.len() - 1
                });
                ids.push(Err(index));
            }
        }
    }
    if config.max_series_per_tenant > 0 && existing_series + new_series.len() > config.max_series_per_tenant {
        return Err(Error::Limit(format!(
            "series {} would exceed the limit of {} series per tenant ({existing_series} exist, the request adds {})",
            new_series[0].0.describe(),
            config.max_series_per_tenant,
            new_series.len()
        )));
    }
    if batch.histogram_count() > 0 {
        check_kinds_across_entries(&batch, &ids)?;
    }
    let mut new_labels = Vec::with_capacity(new_series.len());
    for (series, _) in &new_series {
        new_labels.push(validate_new_series(series, &config.limits)?);
    }
    let mut buffer = RecordBuffer::default();
    let mut created = Vec::with_capacity(new_series.len());
    for ((_, hash), labels) in new_series.iter().zip(new_labels) {
        buffer.series(u64::from(head.series_count() as u32), &labels);
        created.push(head.create(labels, *hash));
    }
    let mut wal_samples = Vec::with_capacity(batch.sample_count());
    for (series, id) in batch.series().zip(&ids) {
        let id = match id {
            Ok(id) => *id,
            Err(index) => created[*index],
        };
        for sample in series.samples {
            wal_samples.push(RefSample {
                series_ref: u64::from(id),
                timestamp: sample.timestamp,
                value: sample.value,
            });
        }
    }
    buffer.samples(&wal_samples);
    let mut wal_histograms = Vec::with_capacity(batch.histogram_count());
    for (series, id) in batch.series().zip(&ids) {
        let id = match id {
            Ok(id) => *id,
            Err(index) => created[*index],
        };
        for sample in series.histograms {
            wal_histograms.push(RefHistogram {
                series_ref: u64::from(id),
                timestamp: sample.timestamp,
                histogram: sample.histogram.clone(),
            });
        }
    }
    buffer.histograms(&wal_histograms);
    let new_metadata: Vec<&MetricMetadata> = batch
        .metadata
        .iter()
        .filter(|m| {
            head.metadata()
                .get(&m.metric_family_name)
                .is_none_or(|known| !known.contains(m))
        })
        .collect();
    for metadata in &new_metadata {
        buffer.metadata(metadata);
    }
    if let Err(e) = lock_poisoned(db.wal.lock()).append(&buffer) {
        head.truncate_series(existing_series);
        return Err(e);
    }
    for sample in &wal_samples {
        head.append(sample.series_ref as u32, Sample::new(sample.timestamp, sample.value));
    }
    // From the batch, not the WAL copies, to clone each histogram once only.
    for (series, id) in batch.series().zip(&ids) {
        let id = match id {
            Ok(id) => *id,
            Err(index) => created[*index],
        };
        for sample in series.histograms {
            head.append_histogram(id, sample);
        }
    }
    for metadata in new_metadata {
        head.add_metadata(metadata.clone());
    }
    stats.series_created.fetch_add(created.len() as u64, Ordering::Relaxed);
    stats
        .samples_appended
        .fetch_add(wal_samples.len() as u64, Ordering::Relaxed);
    stats
        .histograms_appended
        .fetch_add(wal_histograms.len() as u64, Ordering::Relaxed);
    Ok(WriteSummary {
        samples: wal_samples.len() as u64,
        histograms: wal_histograms.len() as u64,
        ..WriteSummary::default()
    })
}

/// Refuses a batch in which one series gets a float sample and a histogram
/// at the same time through two of its entries (remote write 2.0 may repeat
/// a series, e.g. once with samples and once with histograms). Validation
/// already checked each entry on its own.
fn check_kinds_across_entries(batch: &RawWriteBatch, ids: &[std::result::Result<u32, usize>]) -> Result<()> {
    let mut histogram_times: HashMap<std::result::Result<u32, usize>, std::collections::HashSet<TimestampMs>> =
        HashMap::new();
    for (series, id) in batch.series().zip(ids) {
        if !series.histograms.is_empty() {
            histogram_times
                .entry(*id)
                .or_default()
                .extend(series.histograms.iter().map(|h| h.timestamp));
        }
    }
    for (series, id) in batch.series().zip(ids) {
        let Some(times) = histogram_times.get(id) else {
            continue;
        };
        if let Some(clash) = series.samples.iter().find(|s| times.contains(&s.timestamp)) {
            return Err(Error::Rejected(format!(
                "series {}: both a float sample and a native histogram at {}: send one value per timestamp",
                series.describe(),
                clash.timestamp
            )));
        }
    }
    Ok(())
}

fn same_raw_labels(a: &RawSeriesRef<'_>, b: &RawSeriesRef<'_>) -> bool {
    a.label_bytes().len() == b.label_bytes().len() && a.label_bytes().zip(b.label_bytes()).all(|(x, y)| x == y)
}

impl Ingest for Storage {
    async fn ingest(&self, tenant: &TenantId, batch: RawWriteBatch) -> Result<WriteSummary, tidewatch_model::Error> {
        Ok(self.append_raw(tenant, batch).await?)
    }
}

impl SeriesRead for Storage {
    async fn select_batches<F>(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: TimeRange,
        batch_series: usize,
        mut visit: F,
    ) -> Result<(), tidewatch_model::Error>
    where
        F: FnMut(Vec<SeriesSamples>) -> Result<(), tidewatch_model::Error> + Send,
    {
        // A visitor's error travels as `Error::Model` and comes back out unchanged.
        Ok(self
            .select_batched(tenant, matchers, range, batch_series, Wanted::All, |batch| {
                visit(batch).map_err(Error::Model)
            })
            .await?)
    }

    async fn select_latest_batches<F>(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: TimeRange,
        batch_series: usize,
        mut visit: F,
    ) -> Result<(), tidewatch_model::Error>
    where
        F: FnMut(Vec<SeriesSamples>) -> Result<(), tidewatch_model::Error> + Send,
    {
        Ok(self
            .select_batched(tenant, matchers, range, batch_series, Wanted::Latest, |batch| {
                visit(batch).map_err(Error::Model)
            })
            .await?)
    }

    async fn select(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: TimeRange,
    ) -> Result<Vec<SeriesSamples>, tidewatch_model::Error> {
        Ok(self.select_merged(tenant, matchers, range).await?)
    }

    async fn series(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: TimeRange,
    ) -> Result<Vec<Labels>, tidewatch_model::Error> {
        Ok(self.series_merged(tenant, matchers, range).await?)
    }

    async fn label_names(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: TimeRange,
    ) -> Result<Vec<String>, tidewatch_model::Error> {
        if !matchers.is_empty() || !self.covers_all_data(tenant, range) {
            let matchers = tidewatch_model::seam::all_if_empty(matchers);
            let series = self.series_merged(tenant, &matchers, range).await?;
            let names: std::collections::BTreeSet<String> =
                series.iter().flat_map(|l| l.iter().map(|p| p.name.clone())).collect();
            return Ok(names.into_iter().collect());
        }
        let Some(db) = self.existing_tenant(tenant) else {
            return Ok(Vec::new());
        };
        // No matchers and a range holding all data: answer from the indexes alone.
        let mut names: std::collections::BTreeSet<String> =
            lock_poisoned(db.head.read()).label_names().into_iter().collect();
        for block in db.snapshot_blocks().iter().filter(|b| b.overlaps(range)) {
            names.extend(block.postings().label_names());
        }
        Ok(names.into_iter().collect())
    }

    async fn label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        matchers: &[Matcher],
        range: TimeRange,
    ) -> Result<Vec<String>, tidewatch_model::Error> {
        if !matchers.is_empty() || !self.covers_all_data(tenant, range) {
            let matchers = tidewatch_model::seam::all_if_empty(matchers);
            let series = self.series_merged(tenant, &matchers, range).await?;
            let values: std::collections::BTreeSet<String> =
                series.iter().filter_map(|l| l.get(name).map(str::to_string)).collect();
            return Ok(values.into_iter().collect());
        }
        let Some(db) = self.existing_tenant(tenant) else {
            return Ok(Vec::new());
        };
        let mut values: std::collections::BTreeSet<String> =
            lock_poisoned(db.head.read()).label_values(name).into_iter().collect();
        for block in db.snapshot_blocks().iter().filter(|b| b.overlaps(range)) {
            values.extend(block.postings().label_values(name));
        }
        Ok(values.into_iter().collect())
    }
}

impl MetadataRead for Storage {
    async fn metadata(
        &self,
        tenant: &TenantId,
    ) -> Result<BTreeMap<String, Vec<MetricMetadata>>, tidewatch_model::Error> {
        Ok(self
            .existing_tenant(tenant)
            .map(|db| lock_poisoned(db.head.read()).metadata().clone())
            .unwrap_or_default())
    }

    async fn cardinality(&self, tenant: &TenantId, limit: usize) -> Result<CardinalityStats, tidewatch_model::Error> {
        Ok(self
            .existing_tenant(tenant)
            .map(|db| lock_poisoned(db.head.read()).cardinality(limit))
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn merged_label_runs_equal_sorting_them_all(
            runs in proptest::collection::vec(proptest::collection::btree_set(0u8..40, 0..30), 0..6)
        ) {
            let labels: Vec<Labels> = (0u8..40).map(|n| Labels::from_pairs([("__name__", format!("m{n:02}"))])).collect();
            // Every run but the first holds its own copies, as separate blocks do.
            let runs: Vec<Vec<Labels>> = runs
                .iter()
                .enumerate()
                .map(|(i, run)| run.iter().map(|&n| if i == 0 { labels[n as usize].clone() } else { Labels::from_pairs([("__name__", format!("m{n:02}"))]) }).collect())
                .collect();
            let mut expected: Vec<&Labels> = runs.iter().flatten().collect();
            expected.sort();
            expected.dedup();
            let merged = merge_label_runs(runs.iter().map(|run| run.iter().collect()).collect());
            proptest::prop_assert_eq!(merged, expected);
        }
    }

    #[test]
    fn merge_prefers_later_sources() {
        let merged = merge_sorted(vec![
            vec![Sample::new(1, 1.0), Sample::new(2, 2.0)],
            vec![Sample::new(2, 20.0), Sample::new(3, 3.0)],
        ]);
        assert_eq!(
            merged,
            vec![Sample::new(1, 1.0), Sample::new(2, 20.0), Sample::new(3, 3.0)]
        );
    }

    fn flushing_series(sample_times: &[i64], histogram_times: &[i64]) -> FlushingSeries {
        let histogram = |timestamp: i64| HistogramSample {
            timestamp,
            histogram: tidewatch_model::histogram::FloatHistogram {
                count: timestamp as f64,
                ..Default::default()
            },
        };
        FlushingSeries {
            labels: Labels::from_pairs([("__name__", "a")]),
            samples: sample_times.iter().map(|&t| Sample::new(t, t as f64)).collect(),
            histograms: histogram_times
                .iter()
                .map(|&t| EncodedHistogram::new(&histogram(t), [None, None]))
                .collect(),
        }
    }

    #[test]
    fn splits_into_aligned_windows() {
        let series = vec![flushing_series(&[-1, 5, 10, 25], &[7, 8, 31])];
        let windows = split_by_window(&series, 10);
        let parts: Vec<(usize, std::ops::Range<usize>, std::ops::Range<usize>)> =
            windows.into_iter().flatten().collect();
        assert_eq!(
            parts,
            [
                (0, 0..1, 0..0),
                (0, 1..2, 0..2),
                (0, 2..3, 0..0),
                (0, 3..4, 0..0),
                (0, 0..0, 2..3)
            ]
        );
    }

    #[test]
    fn flushing_series_read_what_is_in_range() {
        let series = flushing_series(&[1, 5, 9], &[2, 6, 10]);
        let times = |(samples, histograms): (Vec<Sample>, Vec<HistogramSample>)| {
            (
                samples.iter().map(|s| s.timestamp).collect::<Vec<_>>(),
                histograms
                    .iter()
                    .map(|h| (h.timestamp, h.histogram.count as i64))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            times(series.read(TimeRange::new(2, 9), Wanted::All)),
            (vec![5, 9], vec![(2, 2), (6, 6)])
        );
        assert_eq!(
            times(series.read(TimeRange::new(2, 9), Wanted::Latest)),
            (vec![9], vec![(6, 6)])
        );
        assert_eq!(
            times(series.read(TimeRange::new(3, 4), Wanted::Latest)),
            (vec![], vec![])
        );
        assert_eq!(
            times(series.read(TimeRange::ALL, Wanted::All)),
            (vec![1, 5, 9], vec![(2, 2), (6, 6), (10, 10)])
        );
    }
}
