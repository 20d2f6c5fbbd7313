//! Full-text search over a tenant's logs in Tantivy's query syntax, the
//! storage side of `GET /api/v1/logs/search`.
//!
//! The default field is the line (`error`, `"connection refused"`,
//! `10.0.0.12`, `/api/v1/users` — a term with separators is a phrase of its
//! words); labels are `labels.<name>:<value>`. Terms are case-sensitive, as
//! LogQL's line filters are. Hits come newest first.
//!
//! Every hit is checked on its line ([`SearchQuery::matches`]): an indexed
//! block's index names the groups of rows that may hold hits, and only those
//! rows are read; entries not in an indexed block (the head, flushes in
//! flight, blocks written without an index) are checked one by one. Totals
//! are therefore exact, and equal to the query run over every line.
//!
//! Paging: a page holds `limit` hits, plus every other hit at the timestamp
//! of its last one, so a cursor — "older than this timestamp" — never skips
//! or repeats a hit.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use tidewatch_model::logs::{LogEntry, LogSearchHit, LogSearchPage, LogSearchRequest, NsRange, TimestampNs};
use tidewatch_model::{Labels, TenantId};

use super::block::LogBlock;
use super::search_query::SearchQuery;
use super::{LogStore, LogTenant, blocking, lock, merge_entries};
use crate::error::{Error, Result};

pub use tidewatch_model::logs::MAX_SEARCH_LIMIT;

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
    /// Blocks overlapping the range.
    blocks: Vec<Arc<LogBlock>>,
    /// Head and in-flight flush entries in the range, per stream.
    loose: Vec<(Labels, Vec<LogEntry>)>,
}

fn gather(db: &LogTenant, range: NsRange) -> Gathered {
    let blocks = db.snapshot_blocks().into_iter().filter(|b| b.overlaps(range)).collect();
    let mut loose: Vec<(Labels, Vec<LogEntry>)> = Vec::new();
    for set in db.snapshot_flushing() {
        for (labels, entries) in set.streams.iter() {
            let kept = entries.in_range(range, &[]);
            if !kept.is_empty() {
                loose.push((labels.clone(), kept));
            }
        }
    }
    {
        let head = lock(db.head.read());
        for stream in head.matching(&[], range) {
            loose.push((stream.labels.clone(), stream.entries.in_range(range, &[])));
        }
    }
    // One copy of each (stream, timestamp, line): an entry pushed again
    // while its first copy was being flushed is in both.
    let mut streams: BTreeMap<Labels, Vec<Vec<LogEntry>>> = BTreeMap::new();
    for (labels, entries) in loose {
        streams.entry(labels).or_default().push(entries);
    }
    let loose = streams
        .into_iter()
        .map(|(labels, parts)| (labels, merge_entries(parts)))
        .collect();
    Gathered { blocks, loose }
}

/// The hits of one search as they are found: how many there are in the
/// range and in the page's part of it, and the newest of the page's part
/// (with ties), as few as that takes.
struct PageBuilder {
    range: NsRange,
    page_end: TimestampNs,
    limit: usize,
    total: u64,
    in_page: u64,
    hits: Vec<LogSearchHit>,
    /// Hits older than this cannot be on the page any more.
    floor: TimestampNs,
    /// `hits` is cut back to the page when it grows to this.
    trim_at: usize,
}

impl PageBuilder {
    fn new(range: NsRange, page_end: TimestampNs, limit: usize) -> PageBuilder {
        PageBuilder {
            range,
            page_end,
            limit,
            total: 0,
            in_page: 0,
            hits: Vec::new(),
            floor: TimestampNs::MIN,
            trim_at: 2 * limit + 64,
        }
    }

    /// Counts a hit at `timestamp` (in the range); `hit` makes it when it
    /// may be on the page.
    fn offer(&mut self, timestamp: TimestampNs, hit: impl FnOnce() -> Result<LogSearchHit>) -> Result<()> {
        self.total += 1;
        if timestamp > self.page_end {
            return Ok(());
        }
        self.in_page += 1;
        if timestamp < self.floor {
            return Ok(());
        }
        self.hits.push(hit()?);
        if self.hits.len() >= self.trim_at {
            self.trim();
            // Ties at the floor can keep more than a page: grow, never loop.
            self.trim_at = self.trim_at.max(2 * self.hits.len());
        }
        Ok(())
    }

    /// Keeps the newest `limit` hits and every hit tied with the last.
    fn trim(&mut self) {
        if self.hits.len() <= self.limit {
            return;
        }
        self.hits.sort_unstable_by_key(|hit| std::cmp::Reverse(hit.timestamp));
        self.floor = self.hits[self.limit - 1].timestamp;
        let keep = self.hits.partition_point(|hit| hit.timestamp >= self.floor);
        self.hits.truncate(keep);
    }

    fn merge(&mut self, other: PageBuilder) {
        self.total += other.total;
        self.in_page += other.in_page;
        self.floor = self.floor.max(other.floor);
        let floor = self.floor;
        self.hits
            .extend(other.hits.into_iter().filter(|hit| hit.timestamp >= floor));
        self.trim();
    }

    fn finish(mut self) -> LogSearchPage {
        self.trim();
        let mut next_cursor = None;
        if self.in_page > self.hits.len() as u64
            && let Some(last) = self.hits.iter().map(|hit| hit.timestamp).min()
        {
            // Older hits exist, below the page's last timestamp.
            next_cursor = Some(last.to_string());
        }
        order_and_dedupe(&mut self.hits);
        LogSearchPage {
            hits: self.hits,
            total: self.total,
            next_cursor,
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

/// Rows of one block to check, a share of a search's work.
struct Piece<'a> {
    block: &'a LogBlock,
    /// Stream ids, and for each the row ranges to read (ascending, disjoint).
    ids: Vec<u32>,
    selections: Vec<Vec<Range<usize>>>,
}

/// Rows a piece holds, about: small enough that a common word's search
/// spreads over every thread, large enough that opening a Parquet reader
/// per piece costs nothing.
const PIECE_ROWS: usize = 64 * 1024;

/// The rows of `block` the index names as candidates (every row in range
/// when it has no index), cut into pieces of whole streams.
fn plan_block<'a>(block: &'a LogBlock, query: &SearchQuery, range: NsRange) -> Result<Vec<Piece<'a>>> {
    let streams = block.streams();
    let mut by_stream: BTreeMap<u32, Vec<Range<usize>>> = BTreeMap::new();
    match block.index() {
        Some(index) => {
            let labels: Vec<&Labels> = streams.iter().map(|s| &s.labels).collect();
            for candidate in index.candidates(query, &labels, range)? {
                let Some(stream) = streams.get(candidate.stream as usize) else {
                    return Err(Error::Block {
                        block: block.meta().ulid.clone(),
                        message: format!("index names stream {}, which the streams table lacks", candidate.stream),
                    });
                };
                let own = stream.first_row..stream.first_row + stream.rows;
                let rows = candidate.rows.start.max(own.start)..candidate.rows.end.min(own.end);
                if !rows.is_empty() {
                    by_stream.entry(candidate.stream).or_default().push(rows);
                }
            }
        }
        None => {
            for (id, stream) in streams.iter().enumerate() {
                by_stream.insert(id as u32, vec![stream.rows_in(range)]);
            }
        }
    }
    let mut pieces = Vec::new();
    let mut piece = Piece {
        block,
        ids: Vec::new(),
        selections: Vec::new(),
    };
    let mut piece_rows = 0;
    for (id, mut rows) in by_stream {
        rows.sort_unstable_by_key(|r| r.start);
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(rows.len());
        for r in rows {
            match merged.last_mut() {
                Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        piece_rows += merged.iter().map(ExactSizeIterator::len).sum::<usize>();
        piece.ids.push(id);
        piece.selections.push(merged);
        if piece_rows >= PIECE_ROWS {
            pieces.push(std::mem::replace(
                &mut piece,
                Piece {
                    block,
                    ids: Vec::new(),
                    selections: Vec::new(),
                },
            ));
            piece_rows = 0;
        }
    }
    if !piece.ids.is_empty() {
        pieces.push(piece);
    }
    Ok(pieces)
}

/// Checks each row of `piece` and offers the hits.
fn search_piece(piece: &Piece<'_>, query: &SearchQuery, page: &mut PageBuilder) -> Result<()> {
    let streams = piece.block.streams();
    piece.block.visit_rows(&piece.selections, page.range, |position, row| {
        let labels = &streams[piece.ids[position] as usize].labels;
        if !query.matches(labels, row.line) {
            return Ok(());
        }
        page.offer(row.timestamp, || Ok(to_hit(labels, row.entry()?)))
    })
}

/// Checks entries not in a block, one by one.
fn search_loose(loose: &[(Labels, Vec<LogEntry>)], query: &SearchQuery, page: &mut PageBuilder) -> Result<()> {
    for (labels, entries) in loose {
        for entry in entries {
            if page.range.contains(entry.timestamp) && query.matches(labels, &entry.line) {
                page.offer(entry.timestamp, || Ok(to_hit(labels, entry.clone())))?;
            }
        }
    }
    Ok(())
}

/// Threads a search's rows are checked on: reading and checking them is
/// the whole cost of a search for a common word.
const SEARCH_THREADS: usize = 2;

fn search_sources(
    gathered: Gathered,
    query: &SearchQuery,
    range: NsRange,
    page_end: TimestampNs,
    limit: usize,
) -> Result<LogSearchPage> {
    let mut page = PageBuilder::new(range, page_end, limit);
    search_loose(&gathered.loose, query, &mut page)?;
    let mut pieces = Vec::new();
    for block in &gathered.blocks {
        pieces.extend(plan_block(block, query, range)?);
    }
    let threads = SEARCH_THREADS.min(pieces.len());
    if threads <= 1 {
        for piece in &pieces {
            search_piece(piece, query, &mut page)?;
        }
        return Ok(page.finish());
    }
    // Each thread takes the next piece not yet taken.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let parts: Vec<Result<PageBuilder>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut part = PageBuilder::new(range, page_end, limit);
                    loop {
                        let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(piece) = pieces.get(at) else {
                            return Ok(part);
                        };
                        search_piece(piece, query, &mut part)?;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(Error::Task("a search thread panicked".to_string())))
            })
            .collect()
    });
    for part in parts {
        page.merge(part?);
    }
    Ok(page.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(timestamp: TimestampNs, line: String) -> LogSearchHit {
        LogSearchHit {
            labels: Labels::from_pairs([("app", "web")]),
            timestamp,
            line,
            structured_metadata: Labels::default(),
        }
    }

    proptest::proptest! {
        /// Hits offered to one builder, or split over two and merged (as the
        /// search threads do), give the page a sort of every hit gives: the
        /// newest `limit` and their ties, the totals, and a cursor exactly
        /// when older hits are left.
        #[test]
        fn pages_equal_sorting_every_hit(
            timestamps in proptest::collection::vec(0i64..40, 0..200),
            split in proptest::collection::vec(proptest::bool::ANY, 200),
            limit in 1usize..12,
            page_end in 0i64..45,
        ) {
            let range = NsRange::new(0, 40);
            let mut one = PageBuilder::new(range, page_end, limit);
            let (mut left, mut right) = (PageBuilder::new(range, page_end, limit), PageBuilder::new(range, page_end, limit));
            for (at, &timestamp) in timestamps.iter().enumerate() {
                let line = format!("line {at}");
                one.offer(timestamp, || Ok(hit(timestamp, line.clone()))).unwrap();
                let part = if split[at] { &mut left } else { &mut right };
                part.offer(timestamp, || Ok(hit(timestamp, line.clone()))).unwrap();
            }
            left.merge(right);
            let mut in_page: Vec<(TimestampNs, String)> = timestamps
                .iter()
                .enumerate()
                .filter(|(_, t)| **t <= page_end)
                .map(|(at, t)| (*t, format!("line {at}")))
                .collect();
            in_page.sort_by_key(|h| std::cmp::Reverse(h.0));
            let expected: Vec<TimestampNs> = match in_page.get(limit - 1) {
                Some((floor, _)) if in_page.len() > limit => in_page.iter().map(|h| h.0).filter(|t| t >= floor).collect(),
                _ => in_page.iter().map(|h| h.0).collect(),
            };
            let older = expected.len() < in_page.len();
            for page in [one.finish(), left.finish()] {
                proptest::prop_assert_eq!(page.total, timestamps.len() as u64);
                let got: Vec<TimestampNs> = page.hits.iter().map(|h| h.timestamp).collect();
                proptest::prop_assert_eq!(&got, &expected);
                proptest::prop_assert_eq!(page.next_cursor.is_some(), older);
                if older {
                    proptest::prop_assert_eq!(page.next_cursor, expected.last().map(|t| t.to_string()));
                }
            }
        }
    }
}
