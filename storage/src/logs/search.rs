//! Full-text search over a tenant's logs in Tantivy's query syntax, the
//! storage side of `GET /api/v1/logs/search`.
//!
//! The default field is the line (`error`, `"connection refused"`,
//! `10.0.0.12`, `/api/v1/users` — a term with separators is a phrase of its
//! words); labels are `labels.<name>:<value>`. Terms are case-sensitive, as
//! LogQL's line filters are. Hits come newest first. Indexed blocks answer
//! from their index; entries not yet in one (the head, flushes in flight,
//! blocks written without an index) are indexed in memory for the query.
//!
//! Paging: a page holds `limit` hits, plus every other hit at the timestamp
//! of its last one, so a cursor — "older than this timestamp" — never skips
//! or repeats a hit.

use std::collections::BTreeMap;
use std::sync::Arc;

use tidewatch_model::logs::{LogEntry, LogSearchHit, LogSearchPage, LogSearchRequest, NsRange, TimestampNs};
use tidewatch_model::{Labels, TenantId};

use super::block::LogBlock;
use super::index::{BlockIndex, IndexBuilder, IndexHit, SharedStreams};
use super::search_query::SearchQuery;
use super::{LogStore, LogTenant, blocking, lock, merge_entries};
use crate::error::{Error, Result};

pub use tidewatch_model::logs::MAX_SEARCH_LIMIT;

/// A searchable source: an index and how its hits become entries.
enum Source {
    Block(Arc<LogBlock>),
    /// Entries indexed in memory for this query, addressed by row, and the
    /// labels of each stream id.
    Memory {
        index: Box<BlockIndex>,
        /// Row number → (stream id, entry of that stream).
        rows: Vec<(u32, u32)>,
        streams: SharedStreams,
    },
}

impl Source {
    fn index(&self) -> Option<&BlockIndex> {
        match self {
            Source::Block(block) => block.index(),
            Source::Memory { index, .. } => Some(index),
        }
    }

    /// The labels of each stream id the index names.
    fn stream_labels(&self) -> Vec<&Labels> {
        match self {
            Source::Block(block) => block.streams().iter().map(|s| &s.labels).collect(),
            Source::Memory { streams, .. } => streams.iter().map(|(labels, _)| labels).collect(),
        }
    }

    /// The entries of `hits`, in any order.
    fn resolve(&self, hits: &[IndexHit]) -> Result<Vec<LogSearchHit>> {
        match self {
            Source::Memory { rows, streams, .. } => Ok(hits
                .iter()
                .filter_map(|hit| rows.get(hit.row as usize))
                .map(|&(stream, entry)| {
                    let (labels, entries) = &streams[stream as usize];
                    to_hit(labels, entries[entry as usize].clone())
                })
                .collect()),
            Source::Block(block) => {
                // Rows per stream, ascending, read with one row selection.
                let mut by_stream: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
                for hit in hits {
                    by_stream.entry(hit.stream).or_default().push(hit.row as usize);
                }
                let mut ids = Vec::with_capacity(by_stream.len());
                let mut selections = Vec::with_capacity(by_stream.len());
                for (id, mut rows) in by_stream {
                    let Some(stream) = block.streams().get(id as usize) else {
                        return Err(Error::Block {
                            block: block.meta().ulid.clone(),
                            message: format!("index names stream {id}, which the streams table lacks"),
                        });
                    };
                    let own = stream.first_row..stream.first_row + stream.rows;
                    rows.sort_unstable();
                    rows.dedup();
                    rows.retain(|row| own.contains(row));
                    ids.push(id);
                    selections.push(rows.into_iter().map(|row| row..row + 1).collect::<Vec<_>>());
                }
                let entries = block.read_rows(&ids, &selections, NsRange::ALL, &[])?;
                let mut out = Vec::new();
                for (id, entries) in ids.iter().zip(entries) {
                    let labels = &block.streams()[*id as usize].labels;
                    out.extend(entries.into_iter().map(|entry| to_hit(labels, entry)));
                }
                Ok(out)
            }
        }
    }
}

fn to_hit(labels: &Labels, entry: LogEntry) -> LogSearchHit {
    LogSearchHit {
        labels: labels.clone(),
        timestamp: entry.timestamp,
        line: entry.line,
        structured_metadata: entry.structured_metadata,
    }
}

fn parse_cursor(cursor: &str) -> Result<TimestampNs> {
    cursor.parse::<TimestampNs>().map_err(|_| {
        Error::Rejected(format!(
            "invalid search cursor {cursor:?}: pass back a next_cursor unchanged"
        ))
    })
}

/// Newest first, then stream labels, then line; each entry once.
fn order_and_dedupe(hits: &mut Vec<LogSearchHit>) {
    hits.sort_by(|a, b| {
        b.timestamp
            .cmp(&a.timestamp)
            .then_with(|| a.labels.cmp(&b.labels))
            .then_with(|| a.line.cmp(&b.line))
    });
    hits.dedup_by(|a, b| a.timestamp == b.timestamp && a.labels == b.labels && a.line == b.line);
}

impl LogStore {
    /// One page of hits of `request` in the tenant's logs.
    pub(crate) async fn search(&self, tenant: &TenantId, request: &LogSearchRequest) -> Result<LogSearchPage> {
        if request.limit == 0 || request.limit > MAX_SEARCH_LIMIT {
            return Err(Error::Rejected(format!(
                "search limit {} is outside 1..={MAX_SEARCH_LIMIT}",
                request.limit
            )));
        }
        // Refuse a malformed query even when there is nothing to search.
        let query = SearchQuery::parse(&request.query)?;
        let Some(db) = self.existing(tenant) else {
            return Ok(LogSearchPage::default());
        };
        let range = request.range;
        let page_end = match &request.cursor {
            Some(cursor) => range.end.min(parse_cursor(cursor)?.saturating_sub(1)),
            None => range.end,
        };
        if range.start > range.end {
            return Ok(LogSearchPage::default());
        }
        let gathered = gather(&db, range);
        let limit = request.limit;
        blocking(move || search_sources(gathered, &query, range, page_end, limit)).await
    }
}

/// What a search reads, taken from a tenant under its locks.
struct Gathered {
    /// Blocks overlapping the range that have a full-text index.
    indexed: Vec<Arc<LogBlock>>,
    /// Blocks overlapping the range without one.
    unindexed_blocks: Vec<Arc<LogBlock>>,
    /// Head and in-flight flush entries in the range, per stream.
    loose: Vec<(Labels, Vec<LogEntry>)>,
}

fn gather(db: &LogTenant, range: NsRange) -> Gathered {
    let (mut indexed, mut unindexed_blocks) = (Vec::new(), Vec::new());
    for block in db.snapshot_blocks().into_iter().filter(|b| b.overlaps(range)) {
        if block.index().is_some() {
            indexed.push(block);
        } else {
            unindexed_blocks.push(block);
        }
    }
    let mut loose: Vec<(Labels, Vec<LogEntry>)> = Vec::new();
    for set in db.snapshot_flushing() {
        for (labels, entries) in set.streams.iter() {
            let kept: Vec<LogEntry> = entries
                .iter()
                .filter(|e| range.contains(e.timestamp))
                .cloned()
                .collect();
            if !kept.is_empty() {
                loose.push((labels.clone(), kept));
            }
        }
    }
    let head = lock(db.head.read());
    for stream in head.matching(&[], range) {
        loose.push((stream.labels.clone(), stream.entries.in_range(range, &[])));
    }
    Gathered {
        indexed,
        unindexed_blocks,
        loose,
    }
}

/// Indexes `loose` entries and those of unindexed blocks in memory.
fn memory_source(
    unindexed_blocks: &[Arc<LogBlock>],
    mut loose: Vec<(Labels, Vec<LogEntry>)>,
    range: NsRange,
) -> Result<Source> {
    for block in unindexed_blocks {
        let ids: Vec<u32> = (0..block.streams().len() as u32).collect();
        let entries = block.read(&ids, range, &[])?;
        for (id, entries) in ids.iter().zip(entries) {
            loose.push((block.streams()[*id as usize].labels.clone(), entries));
        }
    }
    // One copy of each (stream, timestamp, line) across these sources.
    let mut streams: BTreeMap<Labels, Vec<Vec<LogEntry>>> = BTreeMap::new();
    for (labels, entries) in loose {
        streams.entry(labels).or_default().push(entries);
    }
    let streams: SharedStreams = Arc::new(
        streams
            .into_iter()
            .map(|(labels, parts)| (labels, merge_entries(parts)))
            .collect(),
    );
    let mut builder = IndexBuilder::in_ram()?;
    let mut rows = Vec::new();
    for (id, (_, entries)) in streams.iter().enumerate() {
        for entry in 0..entries.len() {
            builder.add(&streams, id, entry, id as u32, rows.len() as u64)?;
            rows.push((id as u32, entry as u32));
        }
    }
    Ok(Source::Memory {
        index: Box::new(builder.finish()?),
        rows,
        streams,
    })
}

fn search_sources(
    gathered: Gathered,
    query: &SearchQuery,
    range: NsRange,
    page_end: TimestampNs,
    limit: usize,
) -> Result<LogSearchPage> {
    let mut sources: Vec<Source> = gathered.indexed.into_iter().map(Source::Block).collect();
    // An in-memory index costs a writer thread and its arena: only when
    // something is not in an indexed block.
    if !gathered.unindexed_blocks.is_empty() || !gathered.loose.is_empty() {
        sources.push(memory_source(&gathered.unindexed_blocks, gathered.loose, range)?);
    }
    let indexes: Vec<&BlockIndex> = sources.iter().filter_map(Source::index).collect();
    debug_assert_eq!(indexes.len(), sources.len(), "every source has an index");
    let labels: Vec<Vec<&Labels>> = sources.iter().map(Source::stream_labels).collect();
    let mut total = 0u64;
    let mut page_total = 0u64;
    let mut fetched: Vec<(usize, IndexHit)> = Vec::new();
    for (position, index) in indexes.iter().enumerate() {
        let streams = &labels[position];
        if page_end < range.end {
            total += index.search(query, streams, range, 1)?.1;
        }
        if page_end < range.start {
            continue;
        }
        let (hits, in_page) = index.search(query, streams, NsRange::new(range.start, page_end), limit)?;
        if page_end >= range.end {
            // The first page spans the whole range: its count is the total.
            total += in_page;
        }
        page_total += in_page;
        fetched.extend(hits.into_iter().map(|hit| (position, hit)));
    }
    fetched.sort_by_key(|(_, hit)| std::cmp::Reverse(hit.timestamp));
    let mut next_cursor = None;
    // Every source handed out min(limit, its hits): when they add up to more
    // than a page, the limit-th newest is the page's last timestamp.
    if page_total > limit as u64 && fetched.len() >= limit {
        let last = fetched[limit - 1].1.timestamp;
        fetched.retain(|(_, hit)| hit.timestamp > last);
        let mut older = 0u64;
        for (position, index) in indexes.iter().enumerate() {
            let streams = &labels[position];
            fetched.extend(
                index
                    .search_at(query, streams, last)?
                    .into_iter()
                    .map(|hit| (position, hit)),
            );
            if last > range.start {
                older += index.search(query, streams, NsRange::new(range.start, last - 1), 1)?.1;
            }
        }
        if older > 0 {
            next_cursor = Some(last.to_string());
        }
    }
    let mut per_source: Vec<Vec<IndexHit>> = vec![Vec::new(); sources.len()];
    for (position, hit) in fetched {
        per_source[position].push(hit);
    }
    let mut hits = Vec::new();
    for (source, wanted) in sources.iter().zip(per_source) {
        if !wanted.is_empty() {
            hits.extend(source.resolve(&wanted)?);
        }
    }
    order_and_dedupe(&mut hits);
    Ok(LogSearchPage {
        hits,
        total,
        next_cursor,
    })
}
