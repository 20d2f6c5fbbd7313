//! Logs: per tenant a log WAL, an in-memory log head, and immutable log
//! blocks, behind the model crate's [`LogIngest`] and [`LogRead`] seams.
//!
//! Everything of a tenant's logs lives under `<data_dir>/logs/<tenant>/`,
//! apart from the metrics directories, so the metrics WAL, its checkpoints
//! and existing data directories are untouched:
//! - `wal/`: segments in [`crate::wal`]'s framing, holding only log stream
//!   records (type 5) and log entry records (type 6);
//! - `blocks/<ulid>/`: closed time windows (see [`block`]).
//!
//! Flushes cut the head at window boundaries ([`StorageConfig::log_block_duration_ms`],
//! 1 h by default): one block per window, then the WAL is checkpointed so it
//! keeps only what is still in the head. Compaction merges small blocks of
//! one day once their windows are closed; retention drops whole streams of a
//! block once their period (per stream by selector, else the global one) is
//! over, and whole blocks once every stream in them is.
//!
//! Guarantees: `push` returns only once every stored entry is in the WAL
//! (written, and fsynced per the [`crate::FsyncPolicy`]); a
//! restart loads blocks and replays the WAL; an entry is identified by its
//! stream and (timestamp, line), and reads hand out each once whatever number
//! of sources (head, blocks, an interrupted flush) hold it.

pub mod block;
mod head;
mod id_words;
pub mod index;
mod search;
mod search_query;

pub use search_query::check_search_on_line;

pub use search::MAX_SEARCH_LIMIT;
pub use tidewatch_model::logs::LogSearchHit;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use tidewatch_model::logs::{
    LogEntry, LogIngest, LogPush, LogPushSummary, LogRead, LogSearch, LogSearchPage, LogSearchRequest, LogSelect,
    LogStream, NsRange,
};
use tidewatch_model::validate::{IngestLimits, is_valid_label_name};
use tidewatch_model::{Labels, Matcher, TenantId};

use crate::db::{Storage, StorageConfig};
use crate::error::{Error, Result};
use crate::wal::{self, FsyncPolicy, LogEntryView, Record, RecordBuffer, RefLogEntry, Wal};
use block::{BlockInput, LogBlock, TMP_SUFFIX};
use head::{LogHead, StreamEntries};

/// The directory under the data directory that holds every tenant's logs.
pub const LOGS_DIR: &str = "logs";
const WAL_DIR: &str = "wal";
const BLOCKS_DIR: &str = "blocks";
/// Nanoseconds per millisecond, for settings given in milliseconds.
pub(crate) const NS_PER_MS: i64 = 1_000_000;
const DAY_NS: i64 = 24 * 3_600 * 1_000_000_000;
/// Blocks with at least this many entries are left alone by compaction, and
/// a merge stops adding sources past it: merging reads its sources whole.
const COMPACT_MAX_ENTRIES: u64 = 1_000_000;
/// Entries per WAL record: keeps records far below the WAL's record size cap
/// whatever a push holds.
const WAL_ENTRIES_PER_RECORD: usize = 4096;
/// Streams read from the sources per step of a read, so that a reducing
/// caller never holds every selected entry at once.
const READ_BATCH_STREAMS: usize = 256;

/// Blocks one read decodes at once: the machine's cores.
fn read_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Every tenant's logs.
#[derive(Debug)]
pub(crate) struct LogStore {
    root: PathBuf,
    fsync: FsyncPolicy,
    tenants: RwLock<HashMap<TenantId, Arc<LogTenant>>>,
    /// Serialises opening tenants (replaying the WAL).
    opening: tokio::sync::Mutex<()>,
}

/// One tenant's log WAL, head and blocks.
#[derive(Debug)]
struct LogTenant {
    blocks_dir: PathBuf,
    head: RwLock<LogHead>,
    wal: Mutex<Wal>,
    /// Ordered by `origin`, then ulid: the order duplicates are resolved in.
    blocks: RwLock<Vec<Arc<LogBlock>>>,
    /// Entries taken out of the head and not yet in a registered block; readers see them.
    flushing: RwLock<Vec<Arc<Flushing>>>,
    /// One flush, compaction or retention pass at a time per tenant.
    maintenance: tokio::sync::Mutex<()>,
}

/// Streams being flushed, in label order, their entries as the head held
/// them (compressed): a flush decodes one stream's entries of one window at
/// a time, and readers decode what they read.
#[derive(Debug)]
struct Flushing {
    streams: Arc<Vec<(Labels, StreamEntries)>>,
}

impl LogTenant {
    fn snapshot_blocks(&self) -> Vec<Arc<LogBlock>> {
        lock(self.blocks.read()).clone()
    }

    fn snapshot_flushing(&self) -> Vec<Arc<Flushing>> {
        lock(self.flushing.read()).clone()
    }

    fn register(&self, added: Vec<Arc<LogBlock>>, removed: &[String]) {
        let mut blocks = lock(self.blocks.write());
        blocks.retain(|b| !removed.contains(&b.meta().ulid));
        blocks.extend(added);
        sort_blocks(&mut blocks);
    }
}

fn sort_blocks(blocks: &mut [Arc<LogBlock>]) {
    blocks.sort_by(|a, b| (&a.meta().origin, &a.meta().ulid).cmp(&(&b.meta().origin, &b.meta().ulid)));
}

fn align_down(timestamp: i64, step: i64) -> i64 {
    timestamp.div_euclid(step) * step
}

/// A per-stream retention period, like Loki's `retention_stream`: streams
/// matching every matcher keep entries for `period_ms` instead of the global
/// retention. When several rules match, the highest `priority` wins, then the
/// longest period.
#[derive(Debug, Clone)]
pub struct StreamRetention {
    pub matchers: Vec<Matcher>,
    pub period_ms: i64,
    pub priority: u32,
}

/// How long a stream's entries are kept, in nanoseconds.
fn retention_ns(config: &StorageConfig, labels: &Labels) -> i64 {
    let mut best: Option<&StreamRetention> = None;
    for rule in &config.log_retention_streams {
        if !tidewatch_model::seam::matches_all(labels, &rule.matchers) {
            continue;
        }
        if best.is_none_or(|b| (rule.priority, rule.period_ms) > (b.priority, b.period_ms)) {
            best = Some(rule);
        }
    }
    best.map_or(config.retention_ms, |rule| rule.period_ms)
        .saturating_mul(NS_PER_MS)
}

fn lock<T>(result: std::sync::LockResult<T>) -> T {
    // As in `db`: the data behind a lock is consistent at every return point,
    // so a panic elsewhere while holding it is no reason to stop serving.
    result.unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

impl LogStore {
    pub(crate) fn new(data_dir: &Path, fsync: FsyncPolicy) -> Result<LogStore> {
        let root = data_dir.join(LOGS_DIR);
        std::fs::create_dir_all(&root).map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        Ok(LogStore {
            root,
            fsync,
            tenants: RwLock::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
        })
    }

    /// Opens every tenant that has a log directory.
    pub(crate) async fn open_all(&self) -> Result<()> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(|e| Error::io("listing log tenants", e))? {
            let entry = entry.map_err(|e| Error::io("listing log tenants", e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        for name in names {
            match TenantId::parse(&name) {
                Ok(tenant) => {
                    self.tenant(&tenant).await?;
                }
                Err(e) => tracing::warn!(name, error = %e, "ignoring log directory entry that is not a tenant"),
            }
        }
        Ok(())
    }

    fn existing(&self, tenant: &TenantId) -> Option<Arc<LogTenant>> {
        lock(self.tenants.read()).get(tenant).cloned()
    }

    /// Tenants with logs, sorted.
    pub(crate) fn tenants(&self) -> Vec<TenantId> {
        let mut tenants: Vec<TenantId> = lock(self.tenants.read()).keys().cloned().collect();
        tenants.sort();
        tenants
    }

    /// The tenant's logs, opened (WAL replayed) on first use.
    async fn tenant(&self, tenant: &TenantId) -> Result<Arc<LogTenant>> {
        if let Some(db) = self.existing(tenant) {
            return Ok(db);
        }
        let _opening = self.opening.lock().await;
        if let Some(db) = self.existing(tenant) {
            return Ok(db);
        }
        let dir = self.root.join(tenant.as_str());
        let wal_dir = dir.join(WAL_DIR);
        let blocks_dir = dir.join(BLOCKS_DIR);
        let fsync = self.fsync;
        let (head, wal, blocks) = {
            let blocks_dir = blocks_dir.clone();
            blocking(move || {
                let blocks = load_blocks(&blocks_dir)?;
                let (head, wal) = replay(&wal_dir, fsync)?;
                Ok((head, wal, blocks))
            })
            .await?
        };
        let db = Arc::new(LogTenant {
            blocks_dir,
            head: RwLock::new(head),
            wal: Mutex::new(wal),
            blocks: RwLock::new(blocks),
            flushing: RwLock::new(Vec::new()),
            maintenance: tokio::sync::Mutex::new(()),
        });
        lock(self.tenants.write()).insert(tenant.clone(), db.clone());
        Ok(db)
    }

    /// Blocks over every tenant.
    pub(crate) fn block_count(&self) -> usize {
        lock(self.tenants.read())
            .values()
            .map(|db| lock(db.blocks.read()).len())
            .sum()
    }

    pub(crate) fn head_figures(&self) -> LogHeadFigures {
        let mut figures = LogHeadFigures::default();
        for db in lock(self.tenants.read()).values() {
            let head = lock(db.head.read());
            figures.streams += head.stream_count() as u64;
            figures.entries += head.entry_count();
            figures.line_bytes += head.line_bytes();
            figures.memory_bytes += head.memory_bytes();
        }
        figures
    }

    pub(crate) async fn push(
        &self,
        config: &StorageConfig,
        tenant: &TenantId,
        mut push: LogPush,
    ) -> Result<LogPushSummary> {
        validate_push(&push, &config.limits)?;
        // A stream without entries stores nothing and creates no stream.
        push.streams.retain(|s| !s.entries.is_empty());
        if push.entry_count() == 0 {
            return Ok(LogPushSummary::default());
        }
        let db = self.tenant(tenant).await?;
        let max_streams = config.max_log_streams_per_tenant;
        blocking(move || push_blocking(&db, max_streams, push)).await
    }

    /// The label sets of the streams that match and have an entry in range,
    /// sorted and distinct, from the stream tables and the head (no lines read).
    fn matching_streams(
        db: &LogTenant,
        blocks: &[(Arc<LogBlock>, Vec<u32>)],
        flushing: &[Arc<Flushing>],
        matchers: &[Matcher],
        range: NsRange,
    ) -> Vec<Labels> {
        let mut all: Vec<Labels> = Vec::new();
        for (block, ids) in blocks {
            all.extend(ids.iter().map(|&id| block.streams()[id as usize].labels.clone()));
        }
        for set in flushing {
            for (labels, entries) in set.streams.iter() {
                if tidewatch_model::seam::matches_all(labels, matchers) && entries.has_entry_in(range) {
                    all.push(labels.clone());
                }
            }
        }
        {
            let head = lock(db.head.read());
            all.extend(head.matching(matchers, range).map(|s| s.labels.clone()));
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Blocks overlapping `range` with the ids of their matching streams.
    fn selected_blocks(db: &LogTenant, matchers: &[Matcher], range: NsRange) -> Vec<(Arc<LogBlock>, Vec<u32>)> {
        db.snapshot_blocks()
            .into_iter()
            .filter(|b| b.overlaps(range))
            .map(|b| {
                let ids = b.select_ids(matchers, range);
                (b, ids)
            })
            .filter(|(_, ids)| !ids.is_empty())
            .collect()
    }

    pub(crate) async fn visit<F>(&self, tenant: &TenantId, select: &LogSelect, mut visit: F) -> Result<()>
    where
        F: FnMut(LogStream) -> Result<()>,
    {
        let Some(db) = self.existing(tenant) else {
            return Ok(());
        };
        if select.matchers.is_empty() || select.range.start > select.range.end {
            return Ok(());
        }
        let range = select.range;
        let blocks = Self::selected_blocks(&db, &select.matchers, range);
        let flushing = db.snapshot_flushing();
        let streams = Self::matching_streams(&db, &blocks, &flushing, &select.matchers, range);
        let needles = Arc::new(select.line_contains.clone());
        for batch in streams.chunks(READ_BATCH_STREAMS) {
            let (Some(low), Some(high)) = (batch.first(), batch.last()) else {
                continue;
            };
            // Parts of each stream of the batch, oldest source first.
            let mut parts: Vec<Vec<Vec<LogEntry>>> = vec![Vec::new(); batch.len()];
            let mut reads = Vec::with_capacity(blocks.len());
            for (block, ids) in &blocks {
                // Block ids follow label order, as the batch does.
                let labels_of = |id: &u32| &block.streams()[*id as usize].labels;
                let from = ids.partition_point(|id| labels_of(id) < low);
                let to = ids.partition_point(|id| labels_of(id) <= high);
                if from == to {
                    continue;
                }
                let selected = ids[from..to].to_vec();
                let (block, needles) = (block.clone(), needles.clone());
                reads.push(blocking(move || {
                    let entries = read_block(&block, &selected, range, &needles)?;
                    Ok((block, selected, entries))
                }));
            }
            // Blocks decompress on several cores at once; `buffered` hands the
            // results back in block order (oldest first, which decides whose
            // structured metadata a duplicate keeps).
            let read: Vec<_> = futures::stream::iter(reads)
                .buffered(read_parallelism())
                .try_collect()
                .await?;
            for (block, selected, entries) in read {
                for (id, entries) in selected.iter().zip(entries) {
                    if entries.is_empty() {
                        continue;
                    }
                    if let Ok(at) = batch.binary_search(&block.streams()[*id as usize].labels) {
                        parts[at].push(entries);
                    }
                }
            }
            for set in &flushing {
                for (labels, entries) in set.streams.iter() {
                    if labels < low || labels > high {
                        continue;
                    }
                    let Ok(at) = batch.binary_search(labels) else {
                        continue;
                    };
                    let mut kept = entries.in_range(range, &[]);
                    kept.retain(|e| select.line_matches(&e.line));
                    if !kept.is_empty() {
                        parts[at].push(kept);
                    }
                }
            }
            {
                let head = lock(db.head.read());
                for (labels, part) in batch.iter().zip(&mut parts) {
                    if let Some(stream) = head.stream_by_labels(labels) {
                        let entries = stream.entries.in_range(range, &select.line_contains);
                        if !entries.is_empty() {
                            part.push(entries);
                        }
                    }
                }
            }
            for (labels, part) in batch.iter().zip(parts) {
                let entries = merge_entries(part);
                if !entries.is_empty() {
                    visit(LogStream {
                        labels: labels.clone(),
                        entries,
                    })?;
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn series(&self, tenant: &TenantId, matchers: &[Matcher], range: NsRange) -> Result<Vec<Labels>> {
        let Some(db) = self.existing(tenant) else {
            return Ok(Vec::new());
        };
        if matchers.is_empty() || range.start > range.end {
            return Ok(Vec::new());
        }
        let blocks = Self::selected_blocks(&db, matchers, range);
        let flushing = db.snapshot_flushing();
        let candidates = Self::matching_streams(&db, &blocks, &flushing, matchers, range);
        // Stream bounds overlapping the range do not prove an entry in it:
        // confirm those only a block vouches for, reading timestamps only where
        // the bounds do not settle it.
        let mut out = Vec::with_capacity(candidates.len());
        for labels in candidates {
            if self.has_entry(&db, &blocks, &flushing, &labels, range).await? {
                out.push(labels);
            }
        }
        Ok(out)
    }

    async fn has_entry(
        &self,
        db: &LogTenant,
        blocks: &[(Arc<LogBlock>, Vec<u32>)],
        flushing: &[Arc<Flushing>],
        labels: &Labels,
        range: NsRange,
    ) -> Result<bool> {
        if lock(db.head.read())
            .stream_by_labels(labels)
            .is_some_and(|s| s.entries.has_entry_in(range))
        {
            return Ok(true);
        }
        for set in flushing {
            if let Ok(at) = set.streams.binary_search_by(|(l, _)| l.cmp(labels))
                && set.streams[at].1.has_entry_in(range)
            {
                return Ok(true);
            }
        }
        let mut unsettled = Vec::new();
        for (block, ids) in blocks {
            for &id in ids {
                let stream = &block.streams()[id as usize];
                if &stream.labels != labels {
                    continue;
                }
                // Either end inside the range proves an entry in it.
                if range.contains(stream.min_time) || range.contains(stream.max_time) {
                    return Ok(true);
                }
                unsettled.push((block.clone(), id));
            }
        }
        for (block, id) in unsettled {
            let found = blocking(move || Ok(block.read(&[id], range, &[])?.iter().any(|e| !e.is_empty()))).await?;
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Flushes every tenant's whole log head into blocks; returns when durable.
    pub(crate) async fn flush_all(&self, config: &StorageConfig) -> Result<()> {
        for tenant in self.tenants() {
            if let Some(db) = self.existing(&tenant) {
                self.flush(config, &db, None).await?;
            }
        }
        Ok(())
    }

    /// Periodic work: WAL sync, flushing closed windows, compaction, retention.
    pub(crate) async fn maintain(&self, config: &StorageConfig, now_ms: i64) -> Result<()> {
        let window = log_window_ns(config);
        let now = now_ms.saturating_mul(NS_PER_MS);
        for tenant in self.tenants() {
            let Some(db) = self.existing(&tenant) else {
                continue;
            };
            lock(db.wal.lock()).sync_if_due()?;
            let bounds = lock(db.head.read()).time_bounds();
            if let Some((min, max)) = bounds {
                // A window is closed half a window after it ended (by the
                // newest entry, or the clock if entries come from the future):
                // late entries meanwhile still land in the head.
                let reference = max.min(now);
                let cutoff = align_down(reference.saturating_sub(window / 2), window);
                if min < cutoff {
                    self.flush(config, &db, Some(cutoff)).await?;
                }
            }
            self.compact(config, &db, now).await?;
            self.apply_retention(config, &db, now).await?;
        }
        Ok(())
    }

    /// Moves head entries older than `cutoff` (all when `None`) into one block
    /// per window, then checkpoints the WAL so it no longer holds them. On
    /// failure the entries go back into the head: nothing acknowledged is lost.
    async fn flush(&self, config: &StorageConfig, db: &Arc<LogTenant>, cutoff: Option<i64>) -> Result<()> {
        let _maintenance = db.maintenance.lock().await;
        let (flushing, live, cut) = {
            let mut head = lock(db.head.write());
            let taken = head.take_before(cutoff);
            if taken.streams.is_empty() {
                return Ok(());
            }
            let flushing = Arc::new(Flushing {
                streams: Arc::new(taken.streams),
            });
            lock(db.flushing.write()).push(flushing.clone());
            // Cut while still holding the head lock: pushes log under it, so
            // every record below the cut was in the head at the take, and a
            // late entry pushed after the take (older than the cutoff, not
            // taken) lands above the cut, where the checkpoint cannot drop it.
            let cut = lock(db.wal.lock()).cut();
            (flushing, taken.live, cut)
        };
        let written = match cut {
            Ok(cut) => self.write_windows(config, db, &flushing).await.map(|()| cut),
            Err(e) => Err(e),
        };
        let cut = match written {
            Ok(cut) => cut,
            Err(e) => {
                tracing::error!(error = %e, "log flush failed; entries stay in the head");
                let restored = restore(db, &flushing);
                lock(db.flushing.write()).retain(|f| !Arc::ptr_eq(f, &flushing));
                restored?;
                return Err(e);
            }
        };
        lock(db.flushing.write()).retain(|f| !Arc::ptr_eq(f, &flushing));
        let wal_dir = lock(db.wal.lock()).dir().to_path_buf();
        blocking(move || {
            // What the flush left in the head: entries from the cutoff on.
            let kept = match cutoff {
                None => wal::LogEntriesKept::None,
                Some(cutoff) => wal::LogEntriesKept::From(cutoff),
            };
            wal::checkpoint_settling(&wal_dir, cut, kept, |record| keep_after_flush(record, kept, &live))?;
            Ok(())
        })
        .await
    }

    async fn write_windows(&self, config: &StorageConfig, db: &Arc<LogTenant>, flushing: &Arc<Flushing>) -> Result<()> {
        let window = log_window_ns(config);
        for (start, streams) in streams_by_window(&flushing.streams, window) {
            let blocks_dir = db.blocks_dir.clone();
            let input = FlushWindow {
                streams: flushing.streams.clone(),
                selected: streams,
                range: head::window_range(start, window),
            };
            let block = blocking(move || block::write_block(&blocks_dir, &input, 1, Vec::new(), None, true)).await?;
            tracing::info!(
                block = %block.meta().ulid,
                streams = block.meta().num_streams,
                entries = block.meta().num_entries,
                "wrote log block from head"
            );
            db.register(vec![Arc::new(block)], &[]);
        }
        Ok(())
    }

    /// Merges small blocks of one day whose windows are closed.
    async fn compact(&self, config: &StorageConfig, db: &Arc<LogTenant>, now: i64) -> Result<()> {
        let _maintenance = db.maintenance.lock().await;
        let window = log_window_ns(config);
        let closed_before = align_down(now.saturating_sub(window / 2), window);
        let mut by_day: BTreeMap<i64, Vec<Arc<LogBlock>>> = BTreeMap::new();
        for block in db.snapshot_blocks() {
            let meta = block.meta();
            let day = align_down(meta.min_time, DAY_NS);
            if meta.num_entries < COMPACT_MAX_ENTRIES && meta.max_time < closed_before && meta.max_time < day + DAY_NS {
                by_day.entry(day).or_default().push(block);
            }
        }
        for (_, mut candidates) in by_day {
            candidates.sort_by_key(|b| (b.meta().min_time, b.meta().ulid.clone()));
            let mut group: Vec<Arc<LogBlock>> = Vec::new();
            let mut entries = 0u64;
            for block in candidates {
                if !group.is_empty() && entries + block.meta().num_entries > COMPACT_MAX_ENTRIES {
                    if group.len() > 1 {
                        self.rewrite(db, std::mem::take(&mut group), |_| None).await?;
                    }
                    group.clear();
                    entries = 0;
                }
                entries += block.meta().num_entries;
                group.push(block);
            }
            if group.len() > 1 {
                self.rewrite(db, group, |_| None).await?;
            }
        }
        Ok(())
    }

    /// Drops the streams of each block whose retention is over in that block
    /// (their newest entry there is older than their period): a block with
    /// nothing left is deleted, one with some left is rewritten.
    async fn apply_retention(&self, config: &StorageConfig, db: &Arc<LogTenant>, now: i64) -> Result<()> {
        let _maintenance = db.maintenance.lock().await;
        for block in db.snapshot_blocks() {
            let expired = |labels: &Labels, max_time: i64| max_time < now.saturating_sub(retention_ns(config, labels));
            let expired_count = block
                .streams()
                .iter()
                .filter(|s| expired(&s.labels, s.max_time))
                .count();
            if expired_count == 0 {
                continue;
            }
            if expired_count == block.streams().len() {
                tracing::info!(block = %block.meta().ulid, max_time = block.meta().max_time, "deleting log block past retention");
                db.register(Vec::new(), std::slice::from_ref(&block.meta().ulid));
                block.mark_obsolete();
                continue;
            }
            let drop_labels: HashSet<Labels> = block
                .streams()
                .iter()
                .filter(|s| expired(&s.labels, s.max_time))
                .map(|s| s.labels.clone())
                .collect();
            tracing::info!(block = %block.meta().ulid, streams = drop_labels.len(), "dropping log streams past their retention");
            self.rewrite(db, vec![block], move |labels| Some(drop_labels.contains(labels)))
                .await?;
        }
        Ok(())
    }

    /// Replaces `sources` by one block holding their entries, each
    /// (stream, timestamp, line) once, less the streams `drop` says to drop
    /// (`None` from `drop` means keep).
    async fn rewrite(
        &self,
        db: &Arc<LogTenant>,
        mut sources: Vec<Arc<LogBlock>>,
        drop: impl Fn(&Labels) -> Option<bool> + Send + 'static,
    ) -> Result<()> {
        sort_blocks(&mut sources);
        let blocks_dir = db.blocks_dir.clone();
        let names: Vec<String> = sources.iter().map(|b| b.meta().ulid.clone()).collect();
        let level = sources.iter().map(|b| b.meta().level).max().unwrap_or(1) + u32::from(sources.len() > 1);
        let origin = sources.iter().map(|b| b.meta().origin.clone()).min();
        let with_index = sources.iter().all(|b| b.meta().has_index);
        let read_sources = sources.clone();
        let names_for_block = names.clone();
        let merged = blocking(move || {
            let mut streams: BTreeMap<Labels, Vec<Vec<LogEntry>>> = BTreeMap::new();
            for source in &read_sources {
                for (labels, entries) in source.read_all()? {
                    if drop(&labels) == Some(true) {
                        continue;
                    }
                    streams.entry(labels).or_default().push(entries);
                }
            }
            let streams: Vec<(Labels, Vec<LogEntry>)> = streams
                .into_iter()
                .map(|(labels, parts)| (labels, merge_entries(parts)))
                .filter(|(_, entries)| !entries.is_empty())
                .collect();
            if streams.is_empty() {
                return Ok(None);
            }
            let input = WholeStreams(streams);
            block::write_block(&blocks_dir, &input, level, names_for_block, origin, with_index).map(Some)
        })
        .await?;
        let added: Vec<Arc<LogBlock>> = merged.into_iter().map(Arc::new).collect();
        if let Some(block) = added.first() {
            tracing::info!(block = %block.meta().ulid, sources = names.len(), level, "rewrote log blocks");
        }
        db.register(added, &names);
        for source in &sources {
            source.mark_obsolete();
        }
        Ok(())
    }
}

fn log_window_ns(config: &StorageConfig) -> i64 {
    config.log_block_duration_ms.max(1).saturating_mul(NS_PER_MS)
}

/// Reads the selected streams' entries of a block in `range` whose lines
/// contain every needle. With needles and an index, only the rows the index
/// names as candidates are read (then verified, as every row is).
fn read_block(block: &LogBlock, ids: &[u32], range: NsRange, needles: &[String]) -> Result<Vec<Vec<LogEntry>>> {
    let index = match block.index() {
        Some(index) if !needles.is_empty() => index,
        _ => return block.read(ids, range, needles),
    };
    let ranges: Vec<std::ops::Range<usize>> = ids
        .iter()
        .map(|&id| block.streams()[id as usize].rows_in(range))
        .collect();
    let scan_rows: u64 = ranges.iter().map(|r| r.len() as u64).sum();
    let mut candidates: Option<roaring::RoaringBitmap> = None;
    for needle in needles {
        if let Some(rows) = index.candidate_rows(needle, scan_rows)? {
            candidates = Some(match candidates {
                None => rows,
                Some(previous) => previous & rows,
            });
        }
    }
    let Some(candidates) = candidates else {
        return block.read(ids, range, needles);
    };
    let mut selections = Vec::with_capacity(ranges.len());
    for rows in &ranges {
        let (Ok(start), Ok(end)) = (u32::try_from(rows.start), u32::try_from(rows.end)) else {
            return block.read(ids, range, needles);
        };
        let mut selected: Vec<std::ops::Range<usize>> = Vec::new();
        for row in candidates.range(start..end) {
            let row = row as usize;
            match selected.last_mut() {
                Some(last) if last.end == row => last.end = row + 1,
                _ => selected.push(row..row + 1),
            }
        }
        selections.push(selected);
    }
    block.read_rows(ids, &selections, range, needles)
}

/// For each aligned window holding entries, oldest first, the streams
/// (positions in `streams`, label order) with entries in it.
fn streams_by_window(streams: &[(Labels, StreamEntries)], window: i64) -> BTreeMap<i64, Vec<usize>> {
    let mut windows: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (at, (_, entries)) in streams.iter().enumerate() {
        for start in entries.window_starts(window) {
            windows.entry(start).or_default().push(at);
        }
    }
    windows
}

/// One window of the streams a flush took, as a block's input: each
/// stream's entries are decoded when the block writer comes to it, so a
/// flush holds one stream's lines of one window at a time. Decoding the
/// whole flush up front (a `String` per line) was a tenth of the flush's CPU,
/// a third of it faulting in fresh pages.
struct FlushWindow {
    streams: Arc<Vec<(Labels, StreamEntries)>>,
    selected: Vec<usize>,
    range: NsRange,
}

impl BlockInput for FlushWindow {
    fn stream_count(&self) -> usize {
        self.selected.len()
    }

    fn labels(&self, at: usize) -> &Labels {
        &self.streams[self.selected[at]].0
    }

    fn entries(&self, at: usize) -> Cow<'_, [LogEntry]> {
        Cow::Owned(self.streams[self.selected[at]].1.in_range(self.range, &[]))
    }
}

/// Streams with all their entries (label order, entries ascending), as a
/// block's input: what a compaction or retention rewrite has read.
struct WholeStreams(Vec<(Labels, Vec<LogEntry>)>);

impl BlockInput for WholeStreams {
    fn stream_count(&self) -> usize {
        self.0.len()
    }

    fn labels(&self, at: usize) -> &Labels {
        &self.0[at].0
    }

    fn entries(&self, at: usize) -> Cow<'_, [LogEntry]> {
        Cow::Borrowed(&self.0[at].1)
    }
}

/// Puts a failed flush's entries back into the head. Streams the flush
/// dropped are re-created, and their new references logged, so that later
/// entries of theirs replay.
fn restore(db: &LogTenant, flushing: &Flushing) -> Result<()> {
    let mut head = lock(db.head.write());
    let mut buffer = RecordBuffer::default();
    for (labels, entries) in flushing.streams.iter() {
        let stream_ref = match head.lookup(labels) {
            Some(stream_ref) => stream_ref,
            None => {
                let stream_ref = head.create(labels.clone());
                buffer.log_stream(stream_ref, labels);
                stream_ref
            }
        };
        for entry in entries.all() {
            head.insert(stream_ref, entry);
        }
    }
    lock(db.wal.lock()).append(&buffer)
}

/// Which records of a segment older than a flush's cut the checkpoint
/// keeps: entries the flush did not take, and the streams still in the head
/// (by label set: a re-created stream may have records under two references).
fn keep_after_flush(record: Record, kept: wal::LogEntriesKept, live: &HashSet<Labels>) -> Option<Record> {
    match record {
        Record::LogStream { ref labels, .. } => live.contains(labels).then_some(record),
        Record::LogEntries(entries) => {
            let kept: Vec<RefLogEntry> = entries.into_iter().filter(|e| kept.keeps(e.timestamp)).collect();
            (!kept.is_empty()).then_some(Record::LogEntries(kept))
        }
        // Nothing else is written to a log WAL.
        _ => None,
    }
}

fn remove_block_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", dir.display()), e)),
    }
}

/// Opens a tenant's log blocks: removes unfinished ones (`.tmp`, or without
/// meta), finishes deletions a crash interrupted (blocks a rewrite replaced),
/// and skips — keeps on disk, says so — a block that does not open.
fn load_blocks(dir: &Path) -> Result<Vec<Arc<LogBlock>>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut blocks = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))? {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !path.is_dir() {
            continue;
        }
        if name.ends_with(TMP_SUFFIX) || !path.join(block::META_FILE).exists() {
            tracing::warn!(block = %path.display(), "removing unfinished log block");
            remove_block_dir(&path)?;
            continue;
        }
        match LogBlock::open(&path) {
            Ok(block) => blocks.push(Arc::new(block)),
            Err(e) => tracing::error!(block = %path.display(), error = %e, "skipping log block that does not open"),
        }
    }
    let replaced: HashSet<String> = blocks.iter().flat_map(|b| b.meta().sources.clone()).collect();
    let mut kept = Vec::with_capacity(blocks.len());
    for block in blocks {
        if replaced.contains(&block.meta().ulid) {
            tracing::info!(block = %block.meta().ulid, "removing log block already replaced");
            remove_block_dir(block.dir())?;
        } else {
            kept.push(block);
        }
    }
    sort_blocks(&mut kept);
    Ok(kept)
}

/// Totals over every tenant's log head.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogHeadFigures {
    pub streams: u64,
    pub entries: u64,
    pub line_bytes: u64,
    /// What the head's entries take in memory: compressed, far less than
    /// `line_bytes`.
    pub memory_bytes: u64,
}

/// Per-source entries of one stream, each sorted by (timestamp, line), the
/// oldest source first; the result holds each (timestamp, line) once, with
/// the structured metadata of the oldest source that has it.
fn merge_entries(mut parts: Vec<Vec<LogEntry>>) -> Vec<LogEntry> {
    parts.retain(|p| !p.is_empty());
    if parts.len() <= 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut all: Vec<(usize, LogEntry)> = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for (source, entries) in parts.into_iter().enumerate() {
        all.extend(entries.into_iter().map(|e| (source, e)));
    }
    all.sort_by(|(sa, a), (sb, b)| (a.timestamp, &a.line, sa).cmp(&(b.timestamp, &b.line, sb)));
    let mut merged: Vec<LogEntry> = Vec::with_capacity(all.len());
    for (_, entry) in all {
        let duplicate = merged
            .last()
            .is_some_and(|last| last.timestamp == entry.timestamp && last.line == entry.line);
        if !duplicate {
            merged.push(entry);
        }
    }
    merged
}

/// Rejects a push that breaks the label grammar or the limits, before
/// anything is stored: a push is taken whole or not at all.
fn validate_push(push: &LogPush, limits: &IngestLimits) -> Result<()> {
    for stream in &push.streams {
        let labels = &stream.labels;
        let invalid = |what: String| Err(Error::Rejected(format!("stream {labels}: {what}")));
        if labels.is_empty() {
            return Err(Error::Rejected(
                "a stream has no labels: at least one label pair is required per stream".to_string(),
            ));
        }
        if let Some(name) = labels.duplicate_name() {
            return invalid(format!("duplicate label name {name:?}"));
        }
        if labels.len() > limits.max_labels_per_series {
            return invalid(format!(
                "{} labels exceed the limit of {} labels per stream",
                labels.len(),
                limits.max_labels_per_series
            ));
        }
        for label in labels {
            if !is_valid_label_name(&label.name) {
                return invalid(format!("invalid label name {:?}", label.name));
            }
            if label.name.len() > limits.max_label_name_length {
                return invalid(format!(
                    "label name {:?} is {} bytes long, over the limit of {}",
                    label.name,
                    label.name.len(),
                    limits.max_label_name_length
                ));
            }
            if label.value.len() > limits.max_label_value_length {
                return invalid(format!(
                    "value of label {:?} is {} bytes long, over the limit of {}",
                    label.name,
                    label.value.len(),
                    limits.max_label_value_length
                ));
            }
        }
    }
    Ok(())
}

/// Stores a validated push under the tenant's head lock: resolves streams,
/// checks the streams limit, writes the WAL, and only then changes the head.
fn push_blocking(db: &LogTenant, max_streams: usize, push: LogPush) -> Result<LogPushSummary> {
    let mut head = lock(db.head.write());
    // Where each pushed stream goes: Ok(existing ref) or Err(index of a new stream).
    let mut targets: Vec<std::result::Result<u64, usize>> = Vec::with_capacity(push.streams.len());
    let mut new_streams: Vec<&Labels> = Vec::new();
    let mut new_index: HashMap<&Labels, usize> = HashMap::new();
    for stream in &push.streams {
        match head.lookup(&stream.labels) {
            Some(stream_ref) => targets.push(Ok(stream_ref)),
            None => {
                let index = *new_index.entry(&stream.labels).or_insert_with(|| {
                    new_streams.push(&stream.labels);
                    new_streams.len() - 1
                });
                targets.push(Err(index));
            }
        }
    }
    let existing = head.stream_count();
    if max_streams > 0
        && let Some(first_new) = new_streams.first()
        && existing + new_streams.len() > max_streams
    {
        return Err(Error::Throttled(format!(
            "stream {first_new} would exceed the limit of {max_streams} active log streams per tenant \
             ({existing} exist, the push adds {}); reduce the number of label combinations or raise \
             max_log_streams_per_tenant",
            new_streams.len()
        )));
    }
    // New streams get the head's next references in order, as `create` will.
    let first_ref = head.next_ref();
    let ref_of = |target: &std::result::Result<u64, usize>| match *target {
        Ok(stream_ref) => stream_ref,
        Err(index) => first_ref + index as u64,
    };
    let mut buffer = RecordBuffer::default();
    for (index, labels) in new_streams.iter().enumerate() {
        buffer.log_stream(first_ref + index as u64, labels);
    }
    // Entries not already held, each (stream, timestamp, line) once. Within
    // one pushed stream whose timestamps ascend strictly no two entries are
    // equal, so only a stream named twice in the push, or out of order,
    // needs `seen` (foldhash, not SipHash: it hashes each such line).
    let mut seen: HashSet<(u64, i64, &str), foldhash::fast::RandomState> = HashSet::default();
    let mut named_twice: HashSet<u64, foldhash::fast::RandomState> = HashSet::default();
    {
        let mut named: HashSet<u64, foldhash::fast::RandomState> = HashSet::default();
        for target in &targets {
            let stream_ref = ref_of(target);
            if !named.insert(stream_ref) {
                named_twice.insert(stream_ref);
            }
        }
    }
    let mut wal_entries: Vec<LogEntryView<'_>> = Vec::new();
    let mut summary = LogPushSummary::default();
    let mut is_new: Vec<bool> = Vec::new();
    for (stream, target) in push.streams.iter().zip(&targets) {
        let stream_ref = ref_of(target);
        let needs_seen =
            named_twice.contains(&stream_ref) || !stream.entries.windows(2).all(|w| w[0].timestamp < w[1].timestamp);
        for entry in &stream.entries {
            let known = target.is_ok() && head.contains(stream_ref, entry.timestamp, &entry.line);
            let new = !known && (!needs_seen || seen.insert((stream_ref, entry.timestamp, entry.line.as_str())));
            is_new.push(new);
            if !new {
                continue;
            }
            summary.entries += 1;
            summary.bytes += entry.line.len() as u64;
            wal_entries.push(LogEntryView {
                stream_ref,
                timestamp: entry.timestamp,
                line: &entry.line,
                structured_metadata: &entry.structured_metadata,
            });
            if wal_entries.len() == WAL_ENTRIES_PER_RECORD {
                buffer.log_entry_views(&wal_entries);
                wal_entries.clear();
            }
        }
    }
    buffer.log_entry_views(&wal_entries);
    drop(wal_entries);
    lock(db.wal.lock()).append(&buffer)?;
    for labels in &new_streams {
        let created = head.create((*labels).clone());
        debug_assert!(created >= first_ref, "new streams get the predicted references");
    }
    drop(seen);
    // Exactly the entries logged above go in, as chosen there under the same
    // head lock: the head need not look each up again.
    let mut new_entries = is_new.into_iter();
    for (stream, target) in push.streams.into_iter().zip(&targets) {
        let stream_ref = ref_of(target);
        for entry in stream.entries {
            if new_entries.next() == Some(true) {
                head.insert_new(stream_ref, entry);
            }
        }
    }
    Ok(summary)
}

/// Replays a tenant's log WAL into a fresh head.
fn replay(dir: &Path, fsync: FsyncPolicy) -> Result<(LogHead, Wal)> {
    let mut head = LogHead::default();
    // A WAL reference to the head's reference for its label set: after a
    // flush dropped a stream and a push re-created it, two references may
    // name one label set.
    let mut refs: HashMap<u64, u64> = HashMap::new();
    let mut orphans = 0u64;
    let mut foreign = 0u64;
    let started = std::time::Instant::now();
    let (wal, stats) = Wal::open(dir, fsync, &mut |record| match record {
        Record::LogStream { stream_ref, labels } => {
            let id = head.create_with_ref(stream_ref, labels);
            refs.insert(stream_ref, id);
        }
        Record::LogEntries(entries) => {
            for entry in entries {
                match refs.get(&entry.stream_ref) {
                    Some(&id) => {
                        head.insert(
                            id,
                            LogEntry {
                                timestamp: entry.timestamp,
                                line: entry.line,
                                structured_metadata: entry.structured_metadata,
                            },
                        );
                    }
                    None => orphans += 1,
                }
            }
        }
        _ => foreign += 1,
    })?;
    if orphans > 0 || foreign > 0 {
        tracing::warn!(dir = %dir.display(), orphans, foreign, "log WAL held entries without a stream record or metric records; skipped");
    }
    tracing::info!(
        dir = %dir.display(),
        segments = stats.segments,
        records = stats.records,
        streams = head.stream_count(),
        entries = head.entry_count(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "replayed log WAL"
    );
    Ok((head, wal))
}

impl LogIngest for Storage {
    async fn push(&self, tenant: &TenantId, push: LogPush) -> Result<LogPushSummary, tidewatch_model::Error> {
        let entries = push.entry_count() as u64;
        match self.log_store().push(self.config(), tenant, push).await {
            Ok(summary) => {
                self.stats()
                    .log_entries_appended
                    .fetch_add(summary.entries, Ordering::Relaxed);
                Ok(summary)
            }
            Err(e) => {
                self.stats().log_pushes_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(tenant = %tenant.as_str(), entries, error = %e, "log push refused");
                Err(e.into())
            }
        }
    }
}

impl LogRead for Storage {
    async fn visit_logs<F>(
        &self,
        tenant: &TenantId,
        select: &LogSelect,
        mut visit: F,
    ) -> Result<(), tidewatch_model::Error>
    where
        F: FnMut(LogStream) -> Result<(), tidewatch_model::Error> + Send,
    {
        // A visitor's error travels as `Error::Model` and comes back out unchanged.
        Ok(self
            .log_store()
            .visit(tenant, select, |stream| visit(stream).map_err(Error::Model))
            .await?)
    }

    async fn log_series(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: NsRange,
    ) -> Result<Vec<Labels>, tidewatch_model::Error> {
        Ok(self.log_store().series(tenant, matchers, range).await?)
    }
}

impl LogSearch for Storage {
    async fn search_logs(
        &self,
        tenant: &TenantId,
        request: &LogSearchRequest,
    ) -> Result<LogSearchPage, tidewatch_model::Error> {
        Ok(self.log_store().search(tenant, request).await?)
    }
}
