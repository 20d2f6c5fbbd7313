//! Logs: streams of timestamped lines, and the seams storage implements and
//! the LogQL engine consumes.
//!
//! A stream is a label set; an entry is a nanosecond timestamp, the line as it
//! was pushed (byte for byte) and optional structured metadata. Entries of a
//! stream are identified by (timestamp, line): pushing the same pair twice
//! stores it once, as Loki does.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use crate::error::Error;
use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::seam::matches_all;
use crate::tenant::TenantId;

/// Nanoseconds since the Unix epoch, Loki's entry timestamp unit.
pub type TimestampNs = i64;

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogEntry {
    pub timestamp: TimestampNs,
    pub line: String,
    /// Loki's structured metadata: label pairs attached to this entry only.
    pub structured_metadata: Labels,
}

impl LogEntry {
    pub fn new(timestamp: TimestampNs, line: impl Into<String>) -> Self {
        LogEntry {
            timestamp,
            line: line.into(),
            structured_metadata: Labels::default(),
        }
    }
}

/// The entries of one stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogStream {
    pub labels: Labels,
    pub entries: Vec<LogEntry>,
}

/// One decoded push: streams with their entries, in the order sent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogPush {
    pub streams: Vec<LogStream>,
}

impl LogPush {
    pub fn entry_count(&self) -> usize {
        self.streams.iter().map(|s| s.entries.len()).sum()
    }

    /// Bytes of all lines, what Loki's ingestion rate limit counts.
    pub fn line_bytes(&self) -> usize {
        self.streams
            .iter()
            .flat_map(|s| s.entries.iter())
            .map(|e| e.line.len())
            .sum()
    }
}

/// What a log push stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogPushSummary {
    /// Entries stored (duplicates of stored entries are not counted).
    pub entries: u64,
    pub bytes: u64,
}

/// A time range in nanoseconds, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsRange {
    pub start: TimestampNs,
    pub end: TimestampNs,
}

impl NsRange {
    pub const ALL: NsRange = NsRange {
        start: TimestampNs::MIN,
        end: TimestampNs::MAX,
    };

    pub fn new(start: TimestampNs, end: TimestampNs) -> Self {
        NsRange { start, end }
    }

    pub fn contains(&self, timestamp: TimestampNs) -> bool {
        self.start <= timestamp && timestamp <= self.end
    }
}

/// The order entries are handed out in, Loki's `direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Newest first (Loki's default for log queries).
    #[default]
    Backward,
    /// Oldest first.
    Forward,
}

/// What a log read selects.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSelect {
    /// All must hold; an empty list selects nothing.
    pub matchers: Vec<Matcher>,
    pub range: NsRange,
    /// Every one of these must occur in a selected line (case-sensitive
    /// substring). Storage answers them from its full-text index where it can,
    /// but always verifies them on the line, so the result is exactly what a
    /// substring filter over all entries gives. LogQL's `|= "…"` filters are
    /// pushed down here; everything else is applied by the engine.
    pub line_contains: Vec<String>,
}

impl LogSelect {
    pub fn new(matchers: Vec<Matcher>, range: NsRange) -> Self {
        LogSelect {
            matchers,
            range,
            line_contains: Vec::new(),
        }
    }

    /// Whether an entry's line satisfies `line_contains`.
    pub fn line_matches(&self, line: &str) -> bool {
        self.line_contains.iter().all(|needle| line.contains(needle.as_str()))
    }
}

/// Most hits one search page may ask for.
pub const MAX_SEARCH_LIMIT: usize = 5000;

/// A search request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSearchRequest {
    /// Tantivy query syntax over the line (default field) and `labels.<name>`.
    pub query: String,
    pub range: NsRange,
    /// Hits per page, 1 to [`MAX_SEARCH_LIMIT`].
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSearchHit {
    pub labels: Labels,
    pub timestamp: TimestampNs,
    pub line: String,
    pub structured_metadata: Labels,
}

/// One page of hits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSearchPage {
    /// Newest first; ties by stream labels, then line.
    pub hits: Vec<LogSearchHit>,
    /// Hits of the query in the whole range (all pages). An entry held twice
    /// (re-pushed after its block was written, until compaction merges them)
    /// counts twice.
    pub total: u64,
    /// Pass back for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Full-text search over a tenant's logs, in Tantivy's query syntax: terms
/// and phrases over the line, `labels.<name>:<value>` for labels.
pub trait LogSearch: Send + Sync + 'static {
    fn search_logs(
        &self,
        tenant: &TenantId,
        request: &LogSearchRequest,
    ) -> impl Future<Output = Result<LogSearchPage, Error>> + Send;
}

/// Accepts log pushes. `push` returns only once the entries are durable in the
/// WAL: a successful return is an acknowledgement.
pub trait LogIngest: Send + Sync + 'static {
    fn push(&self, tenant: &TenantId, push: LogPush) -> impl Future<Output = Result<LogPushSummary, Error>> + Send;
}

/// Reads logs. Results of one tenant never include another tenant's data.
pub trait LogRead: Send + Sync + 'static {
    /// Streams matching `select` with at least one selected entry, each with its
    /// selected entries ascending by (timestamp, line), handed to `visit` a
    /// stream at a time in label order. A caller that reduces as it goes (a
    /// metric query) never holds every entry at once.
    fn visit_logs<F>(
        &self,
        tenant: &TenantId,
        select: &LogSelect,
        visit: F,
    ) -> impl Future<Output = Result<(), Error>> + Send
    where
        F: FnMut(LogStream) -> Result<(), Error> + Send;

    /// The label sets of the streams matching `matchers` with an entry in
    /// `range`, sorted. Answered from the index without reading lines.
    fn log_series(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: NsRange,
    ) -> impl Future<Output = Result<Vec<Labels>, Error>> + Send;

    /// Sorted, distinct label names of the streams in `range`.
    fn log_label_names(
        &self,
        tenant: &TenantId,
        range: NsRange,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send {
        async move {
            let streams = self.log_series(tenant, &[every_stream()], range).await?;
            let names: BTreeSet<String> = streams.iter().flat_map(|l| l.iter().map(|p| p.name.clone())).collect();
            Ok(names.into_iter().collect())
        }
    }

    /// Sorted, distinct values of label `name` over the streams matching
    /// `matchers` (every stream when empty) in `range`.
    fn log_label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        matchers: &[Matcher],
        range: NsRange,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send {
        async move {
            let matchers = if matchers.is_empty() {
                vec![every_stream()]
            } else {
                matchers.to_vec()
            };
            let streams = self.log_series(tenant, &matchers, range).await?;
            let values: BTreeSet<String> = streams.iter().filter_map(|l| l.get(name).map(str::to_string)).collect();
            Ok(values.into_iter().collect())
        }
    }
}

/// A matcher every stream satisfies (streams need not have any particular
/// label, and a missing label reads as `""`).
pub fn every_stream() -> Matcher {
    Matcher::new(crate::matcher::MatchOp::RegexMatch, "__name__", ".*")
        .unwrap_or_else(|_| Matcher::equal("__name__", ""))
}

/// One tenant's streams in [`MemLogStore`].
type TenantStreams = BTreeMap<Labels, BTreeSet<LogEntry>>;

/// An in-memory [`LogRead`] + [`LogIngest`] for tests of consumers: a plain
/// map, no WAL, no index — obviously correct, so it doubles as an oracle.
#[derive(Debug, Default)]
pub struct MemLogStore {
    tenants: std::sync::Mutex<BTreeMap<TenantId, TenantStreams>>,
}

impl MemLogStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TenantId, TenantStreams>> {
        self.tenants.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn select_now(&self, tenant: &TenantId, select: &LogSelect) -> Vec<LogStream> {
        if select.matchers.is_empty() {
            return Vec::new();
        }
        let tenants = self.lock();
        let Some(streams) = tenants.get(tenant) else {
            return Vec::new();
        };
        streams
            .iter()
            .filter(|(labels, _)| matches_all(labels, &select.matchers))
            .filter_map(|(labels, entries)| {
                let entries: Vec<LogEntry> = entries
                    .iter()
                    .filter(|e| select.range.contains(e.timestamp) && select.line_matches(&e.line))
                    .cloned()
                    .collect();
                (!entries.is_empty()).then(|| LogStream {
                    labels: labels.clone(),
                    entries,
                })
            })
            .collect()
    }
}

impl LogIngest for MemLogStore {
    async fn push(&self, tenant: &TenantId, push: LogPush) -> Result<LogPushSummary, Error> {
        let mut tenants = self.lock();
        let streams = tenants.entry(tenant.clone()).or_default();
        let mut summary = LogPushSummary::default();
        for stream in push.streams {
            let stored = streams.entry(stream.labels).or_default();
            for entry in stream.entries {
                let bytes = entry.line.len() as u64;
                // Identity is (timestamp, line): metadata does not make a new entry.
                let duplicate = stored
                    .range(LogEntry::new(entry.timestamp, entry.line.clone())..)
                    .next()
                    .is_some_and(|e| e.timestamp == entry.timestamp && e.line == entry.line);
                if !duplicate && stored.insert(entry) {
                    summary.entries += 1;
                    summary.bytes += bytes;
                }
            }
        }
        Ok(summary)
    }
}

impl LogRead for MemLogStore {
    async fn visit_logs<F>(&self, tenant: &TenantId, select: &LogSelect, mut visit: F) -> Result<(), Error>
    where
        F: FnMut(LogStream) -> Result<(), Error> + Send,
    {
        for stream in self.select_now(tenant, select) {
            visit(stream)?;
        }
        Ok(())
    }

    async fn log_series(&self, tenant: &TenantId, matchers: &[Matcher], range: NsRange) -> Result<Vec<Labels>, Error> {
        let select = LogSelect::new(matchers.to_vec(), range);
        Ok(self.select_now(tenant, &select).into_iter().map(|s| s.labels).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn push(stream: Labels, entries: &[(i64, &str)]) -> LogPush {
        LogPush {
            streams: vec![LogStream {
                labels: stream,
                entries: entries.iter().map(|&(t, l)| LogEntry::new(t, l)).collect(),
            }],
        }
    }

    fn read(store: &MemLogStore, select: &LogSelect) -> Vec<LogStream> {
        let mut out = Vec::new();
        poll_once(store.visit_logs(&TenantId::default_tenant(), select, |s| {
            out.push(s);
            Ok(())
        }))
        .unwrap();
        out
    }

    /// These futures never wait, so polling once completes them.
    fn poll_once<T>(future: impl Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("an in-memory store future waited"),
        }
    }

    #[test]
    fn identical_entries_are_stored_once_and_order_does_not_matter() {
        let store = MemLogStore::new();
        let app = labels(&[("app", "api")]);
        let tenant = TenantId::default_tenant();
        let first = poll_once(store.push(&tenant, push(app.clone(), &[(20, "b"), (10, "a")]))).unwrap();
        assert_eq!(first.entries, 2);
        let again = poll_once(store.push(&tenant, push(app.clone(), &[(10, "a"), (10, "a2")]))).unwrap();
        assert_eq!(again.entries, 1, "the repeated (10, a) is not stored twice");
        let all = read(
            &store,
            &LogSelect::new(vec![Matcher::equal("app", "api")], NsRange::ALL),
        );
        let lines: Vec<(i64, &str)> = all[0].entries.iter().map(|e| (e.timestamp, e.line.as_str())).collect();
        assert_eq!(lines, vec![(10, "a"), (10, "a2"), (20, "b")]);
    }

    #[test]
    fn selects_by_matchers_range_and_line_substrings() {
        let store = MemLogStore::new();
        let tenant = TenantId::default_tenant();
        poll_once(store.push(
            &tenant,
            push(
                labels(&[("app", "api")]),
                &[(1, "GET /a 200"), (2, "GET /b 500"), (3, "POST /a 500")],
            ),
        ))
        .unwrap();
        poll_once(store.push(&tenant, push(labels(&[("app", "db")]), &[(2, "GET 500")]))).unwrap();
        let mut select = LogSelect::new(vec![Matcher::equal("app", "api")], NsRange::new(2, 3));
        select.line_contains = vec!["500".into(), "GET".into()];
        let got = read(&store, &select);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].entries, vec![LogEntry::new(2, "GET /b 500")]);
        assert!(
            read(&store, &LogSelect::new(vec![], NsRange::ALL)).is_empty(),
            "no matchers select nothing"
        );
    }
}
