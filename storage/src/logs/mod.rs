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
//! Guarantees: `push` returns only once every stored entry is in the WAL
//! (written, and fsynced per the [`FsyncPolicy`](crate::FsyncPolicy)); a
//! restart loads blocks and replays the WAL; an entry is identified by its
//! stream and (timestamp, line), and reads hand out each once whatever number
//! of sources (head, blocks, an interrupted flush) hold it.

mod head;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use tidewatch_model::logs::{LogEntry, LogIngest, LogPush, LogPushSummary, LogRead, LogSelect, LogStream, NsRange};
use tidewatch_model::validate::{IngestLimits, is_valid_label_name};
use tidewatch_model::{Labels, Matcher, TenantId};

use crate::db::{Storage, StorageConfig};
use crate::error::{Error, Result};
use crate::wal::{FsyncPolicy, Record, RecordBuffer, RefLogEntry, Wal};
use head::{LogHead, entries_in};

/// The directory under the data directory that holds every tenant's logs.
pub const LOGS_DIR: &str = "logs";
const WAL_DIR: &str = "wal";
/// Entries per WAL record: keeps records far below the WAL's record size cap
/// whatever a push holds.
const WAL_ENTRIES_PER_RECORD: usize = 4096;
/// Streams read from the sources per step of a read, so that a reducing
/// caller never holds every selected entry at once.
const READ_BATCH_STREAMS: usize = 256;

/// Every tenant's logs.
#[derive(Debug)]
pub(crate) struct LogStore {
    root: PathBuf,
    fsync: FsyncPolicy,
    tenants: RwLock<HashMap<TenantId, Arc<LogTenant>>>,
    /// Serialises opening tenants (replaying the WAL).
    opening: tokio::sync::Mutex<()>,
}

/// One tenant's log WAL and head.
#[derive(Debug)]
struct LogTenant {
    head: RwLock<LogHead>,
    wal: Mutex<Wal>,
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
        let fsync = self.fsync;
        let (head, wal) = blocking(move || replay(&wal_dir, fsync)).await?;
        let db = Arc::new(LogTenant {
            head: RwLock::new(head),
            wal: Mutex::new(wal),
        });
        lock(self.tenants.write()).insert(tenant.clone(), db.clone());
        Ok(db)
    }

    /// Syncs every tenant's log WAL when the interval policy says so.
    pub(crate) fn sync_if_due(&self) -> Result<()> {
        for tenant in self.tenants() {
            if let Some(db) = self.existing(&tenant) {
                lock(db.wal.lock()).sync_if_due()?;
            }
        }
        Ok(())
    }

    /// Streams and entries held in every log head.
    pub(crate) fn head_figures(&self) -> LogHeadFigures {
        let mut figures = LogHeadFigures::default();
        for db in lock(self.tenants.read()).values() {
            let head = lock(db.head.read());
            figures.streams += head.stream_count() as u64;
            figures.entries += head.entry_count();
            figures.line_bytes += head.line_bytes();
        }
        figures
    }

    pub(crate) async fn push(
        &self,
        config: &StorageConfig,
        tenant: &TenantId,
        push: LogPush,
    ) -> Result<LogPushSummary> {
        validate_push(&push, &config.limits)?;
        if push.entry_count() == 0 {
            return Ok(LogPushSummary::default());
        }
        let db = self.tenant(tenant).await?;
        let max_streams = config.max_log_streams_per_tenant;
        blocking(move || push_blocking(&db, max_streams, push)).await
    }

    /// The label sets of the streams that match and have an entry in range,
    /// sorted and distinct.
    fn matching_streams(&self, db: &LogTenant, matchers: &[Matcher], range: NsRange) -> Vec<Labels> {
        let head = lock(db.head.read());
        let mut all: Vec<Labels> = head.matching(matchers, range).map(|s| s.labels.clone()).collect();
        all.sort_unstable();
        all.dedup();
        all
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
        let streams = self.matching_streams(&db, &select.matchers, select.range);
        for batch in streams.chunks(READ_BATCH_STREAMS) {
            let mut parts: Vec<Vec<Vec<LogEntry>>> = vec![Vec::new(); batch.len()];
            {
                let head = lock(db.head.read());
                for (labels, part) in batch.iter().zip(&mut parts) {
                    if let Some(stream) = head.stream_by_labels(labels) {
                        let entries = entries_in(&stream.entries, select.range, &select.line_contains);
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
        Ok(self.matching_streams(&db, matchers, range))
    }
}

/// Totals over every tenant's log head.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogHeadFigures {
    pub streams: u64,
    pub entries: u64,
    pub line_bytes: u64,
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
        if stream.entries.is_empty() {
            targets.push(Err(usize::MAX));
            continue;
        }
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
    // Entries not already held, each (stream, timestamp, line) once.
    let mut seen: HashSet<(u64, i64, &str)> = HashSet::new();
    let mut wal_entries: Vec<RefLogEntry> = Vec::new();
    let mut summary = LogPushSummary::default();
    for (stream, target) in push.streams.iter().zip(&targets) {
        if stream.entries.is_empty() {
            continue;
        }
        let stream_ref = ref_of(target);
        for entry in &stream.entries {
            let known = target.is_ok() && head.contains(stream_ref, entry.timestamp, &entry.line);
            if known || !seen.insert((stream_ref, entry.timestamp, entry.line.as_str())) {
                continue;
            }
            summary.entries += 1;
            summary.bytes += entry.line.len() as u64;
            wal_entries.push(RefLogEntry {
                stream_ref,
                timestamp: entry.timestamp,
                line: entry.line.clone(),
                structured_metadata: entry.structured_metadata.clone(),
            });
            if wal_entries.len() == WAL_ENTRIES_PER_RECORD {
                buffer.log_entries(&wal_entries);
                wal_entries.clear();
            }
        }
    }
    buffer.log_entries(&wal_entries);
    lock(db.wal.lock()).append(&buffer)?;
    for labels in &new_streams {
        let created = head.create((*labels).clone());
        debug_assert!(created >= first_ref, "new streams get the predicted references");
    }
    drop(seen);
    for (stream, target) in push.streams.into_iter().zip(&targets) {
        if stream.entries.is_empty() {
            continue;
        }
        let stream_ref = ref_of(target);
        for entry in stream.entries {
            head.insert(stream_ref, entry);
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
