//! Tailing container log files into Loki push batches.
//!
//! One thread does all the reading: it re-evaluates the glob every poll
//! interval, reads every file that grew, turns lines into entries and cuts a
//! batch when it is big or old enough. Reads are plain blocking syscalls, so
//! they stay off the async runtime; the shipper on the runtime takes the
//! batches through a bounded channel (a slow server slows reading, nothing
//! piles up in memory).
//!
//! Files are followed by identity (device + inode + fingerprint), not name:
//! - rotation by rename: the path now leads to a new inode; the old file is
//!   read to its end through the handle still open, then released;
//! - copytruncate: the file got shorter (or its first bytes changed); reading
//!   restarts at 0;
//! - deletion while open: drained through the open handle, then released.
//!
//! A file's checkpoint is the offset of the first byte not yet in a shipped
//! batch: the start of an unfinished line, of CRI partial pieces waiting for
//! their final piece, or of a multi-line record still collecting lines.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidewatch_model::logs::{LogEntry, LogPush, LogStream};
use tidewatch_model::{Label, Labels};
use tokio::sync::mpsc;

use crate::config::LogsConfig;
use crate::logline::{self, LineFormat, OutputStream};
use crate::multiline::{Joiner, StartPattern};
use crate::positions::{FINGERPRINT_LEN, FileKey, Fingerprint, Positions};
use crate::ship::{Ack, Outgoing};
use crate::{ContainerRef, PodDirectory, labels};

/// Most bytes read from one file per round, so one busy file cannot starve
/// the others.
const READ_CHUNK: usize = 256 * 1024;
/// The runtime's framing around a line's content (time, stream, tag).
const FRAMING_SLACK: usize = 256;
/// A line still without its newline is cut once it is this many times
/// `max_line_size`: long enough that a line being written in several
/// pieces is whole when read, short enough to bound memory per file.
const UNTERMINATED_LINE_FACTOR: usize = 4;

/// The tailer's counters, exposed on the collector's `/metrics`.
#[derive(Debug, Default)]
pub struct TailStats {
    pub lines_read: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Lines not in the file's format (shipped as they are, timestamped when read).
    pub invalid_lines: AtomicU64,
    /// Lines whose bytes were not UTF-8 (shipped with U+FFFD replacements).
    pub invalid_utf8_lines: AtomicU64,
    /// Lines longer than `max_line_size`, split into pieces.
    pub lines_split: AtomicU64,
    pub files_opened: AtomicU64,
    pub files_released: AtomicU64,
    pub files_rotated: AtomicU64,
    pub files_truncated: AtomicU64,
    pub read_errors: AtomicU64,
    pub files_open: AtomicU64,
    /// Per file: bytes written but not yet acknowledged.
    pub lag: Mutex<Vec<(PathBuf, u64)>>,
}

/// How labels are made for a file's streams.
#[derive(Debug, Clone)]
pub struct StreamLabeler {
    pub node: String,
    pub cluster: String,
    pub static_labels: Vec<(String, String)>,
    pub pods: Arc<dyn PodDirectory>,
}

impl StreamLabeler {
    /// Labels of one output stream of a file; `enriched` says whether the pod
    /// directory knew the pod (if not, they are made again later).
    fn labels(&self, path: &Path, container: Option<&ContainerRef>, stream: OutputStream) -> (Labels, bool) {
        let mut pairs: Vec<Label> = Vec::with_capacity(12);
        let mut enriched = true;
        pairs.push(Label::new(labels::NODE, self.node.as_str()));
        if !self.cluster.is_empty() {
            pairs.push(Label::new(labels::CLUSTER, self.cluster.as_str()));
        }
        match container {
            Some(container) => {
                pairs.push(Label::new(labels::NAMESPACE, container.namespace.as_str()));
                pairs.push(Label::new(labels::POD, container.pod.as_str()));
                pairs.push(Label::new(labels::CONTAINER, container.container.as_str()));
                pairs.push(Label::new(labels::STREAM, stream.as_str()));
                match self
                    .pods
                    .pod_labels(&container.namespace, &container.pod, container.pod_uid.as_deref())
                {
                    Some(extra) => {
                        for label in extra.iter() {
                            if !pairs.iter().any(|p| p.name == label.name) {
                                pairs.push(label.clone());
                            }
                        }
                    }
                    None => enriched = false,
                }
                if let Some(uid) = &container.pod_uid
                    && !pairs.iter().any(|p| p.name == labels::POD_UID)
                {
                    pairs.push(Label::new(labels::POD_UID, uid.as_str()));
                }
            }
            None => {
                pairs.push(Label::new(labels::FILENAME, path.to_string_lossy()));
            }
        }
        for (name, value) in &self.static_labels {
            if !pairs.iter().any(|p| &p.name == name) {
                pairs.push(Label::new(name.as_str(), value.as_str()));
            }
        }
        (
            Labels::from_pairs(pairs.into_iter().map(|l| (l.name, l.value))),
            enriched,
        )
    }
}

/// Per output stream of a file: CRI/Docker partial pieces and multi-line
/// joining.
#[derive(Debug, Default)]
struct StreamState {
    partial: Vec<u8>,
    partial_start: u64,
    partial_timestamp: i64,
    joiner: Option<Joiner>,
    /// When the joiner last received a line.
    joiner_touched: Option<Instant>,
    labels: Option<Labels>,
}

impl StreamState {
    /// The earliest offset this stream still holds unshipped data from.
    fn held_from(&self) -> Option<u64> {
        let partial = (!self.partial.is_empty()).then_some(self.partial_start);
        let joined = self.joiner.as_ref().and_then(Joiner::pending_start);
        match (partial, joined) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// One open file.
#[derive(Debug)]
struct TrackedFile {
    key: FileKey,
    /// The path the glob matched (a symlink under /var/log/containers).
    path: PathBuf,
    file: File,
    fingerprint: Fingerprint,
    /// Offset of the next byte to read.
    read_offset: u64,
    /// Bytes read that do not end in a newline yet.
    carry: Vec<u8>,
    format: Option<LineFormat>,
    container: Option<ContainerRef>,
    streams: [StreamState; 2],
    /// Labels were made without the pod directory knowing the pod.
    needs_relabel: bool,
    /// The path no longer leads to this file: read it to the end, then release.
    orphaned: bool,
    /// Size seen at the last discovery, to tell when an orphan stopped growing.
    size_at_discovery: u64,
    /// Offset covered by the last batch cut.
    acked_in_batch: u64,
}

impl TrackedFile {
    /// The checkpoint: everything before it is in a cut batch or was skipped.
    fn safe_offset(&self) -> u64 {
        let mut offset = self.read_offset - self.carry.len() as u64;
        for stream in &self.streams {
            if let Some(held) = stream.held_from() {
                offset = offset.min(held);
            }
        }
        offset
    }
}

/// Entries collected for the next push.
#[derive(Debug, Default)]
struct BatchBuilder {
    streams: Vec<LogStream>,
    index: HashMap<(FileKey, u8), usize>,
    /// The last stream added to: lines come in runs from one file and
    /// output stream, so most lines skip the map.
    last: Option<((FileKey, u8), usize)>,
    bytes: usize,
    lines: u64,
    opened_at: Option<Instant>,
}

impl BatchBuilder {
    fn add(
        &mut self,
        file: &mut TrackedFile,
        labeler: &StreamLabeler,
        stream: OutputStream,
        timestamp: i64,
        line: String,
    ) {
        let slot = stream as u8;
        let key = (file.key, slot);
        let cached = self.last.filter(|(last, _)| *last == key).map(|(_, index)| index);
        let index = match cached.or_else(|| self.index.get(&key).copied()) {
            Some(index) => index,
            None => {
                let state = &mut file.streams[slot as usize];
                let labels = match &state.labels {
                    Some(labels) => labels.clone(),
                    None => {
                        let (labels, enriched) = labeler.labels(&file.path, file.container.as_ref(), stream);
                        file.needs_relabel |= !enriched;
                        state.labels = Some(labels.clone());
                        labels
                    }
                };
                self.streams.push(LogStream {
                    labels,
                    entries: Vec::new(),
                });
                self.index.insert(key, self.streams.len() - 1);
                self.streams.len() - 1
            }
        };
        self.last = Some((key, index));
        self.bytes += line.len();
        self.lines += 1;
        self.opened_at.get_or_insert_with(Instant::now);
        self.streams[index].entries.push(LogEntry::new(timestamp, line));
    }
}

/// The tailer: owns the files, produces batches.
#[derive(Debug)]
pub struct Tailer {
    config: LogsConfig,
    multiline: Option<StartPattern>,
    positions: Positions,
    labeler: StreamLabeler,
    stats: Arc<TailStats>,
    out: mpsc::Sender<Outgoing>,
    files: HashMap<FileKey, TrackedFile>,
    by_path: HashMap<PathBuf, FileKey>,
    /// Released files, forgotten from the positions once their last offset
    /// is acknowledged.
    releasing: Vec<(FileKey, u64)>,
    /// Final positions of released files, carried by the next batch.
    pending_final_acks: Vec<Ack>,
    batch: BatchBuilder,
    read_buf: Vec<u8>,
    last_discovery: Option<Instant>,
}

impl Tailer {
    pub fn new(
        config: LogsConfig,
        positions: Positions,
        labeler: StreamLabeler,
        stats: Arc<TailStats>,
        out: mpsc::Sender<Outgoing>,
    ) -> crate::Result<Tailer> {
        let multiline = match &config.multiline {
            Some(multiline) => Some(StartPattern::from_config(multiline).map_err(crate::Error::InvalidConfig)?),
            None => None,
        };
        Ok(Tailer {
            config,
            multiline,
            positions,
            labeler,
            stats,
            out,
            files: HashMap::new(),
            by_path: HashMap::new(),
            releasing: Vec::new(),
            pending_final_acks: Vec::new(),
            batch: BatchBuilder::default(),
            read_buf: Vec::with_capacity(READ_CHUNK + FRAMING_SLACK),
            last_discovery: None,
        })
    }

    /// Runs on the current thread until `stop` is set or the shipper is gone;
    /// the last batch is cut before returning.
    pub fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let due = self
                .last_discovery
                .is_none_or(|at| at.elapsed() >= self.config.poll_interval);
            if due {
                self.discover();
                self.last_discovery = Some(Instant::now());
                // Skipped bytes and released files move checkpoints even
                // when no line was batched.
                if self.batch.lines == 0 && !self.cut_batch() {
                    return;
                }
            }
            let progressed = self.read_round();
            self.flush_idle_records();
            if self.batch_due() && !self.cut_batch() {
                return;
            }
            if !progressed {
                std::thread::sleep(self.idle_sleep());
            }
        }
        // Stopping: what was read goes out; records still collecting lines
        // stay unacknowledged and are read again next time.
        self.cut_batch();
        let _ = self.positions.save_if_dirty();
    }

    fn idle_sleep(&self) -> Duration {
        let mut sleep = self.config.poll_interval;
        if let Some(opened) = self.batch.opened_at {
            sleep = sleep.min(self.config.batch_wait.saturating_sub(opened.elapsed()));
        }
        sleep.max(Duration::from_millis(1))
    }

    fn batch_due(&self) -> bool {
        self.batch.bytes as u64 >= self.config.batch_size
            || self
                .batch
                .opened_at
                .is_some_and(|opened| opened.elapsed() >= self.config.batch_wait)
    }

    /// Matches the glob and reconciles the tracked files with what is there.
    fn discover(&mut self) {
        let mut seen_paths = HashSet::new();
        match glob::glob(&self.config.glob) {
            Ok(paths) => {
                for path in paths.flatten() {
                    if self.reconcile_path(path.clone()) {
                        seen_paths.insert(path);
                    }
                }
            }
            Err(error) => tracing::error!(glob = %self.config.glob, %error, "bad log glob"),
        }
        // Paths that vanished: their files are drained, then released.
        let gone: Vec<PathBuf> = self
            .by_path
            .keys()
            .filter(|path| !seen_paths.contains(*path))
            .cloned()
            .collect();
        for path in gone {
            if let Some(key) = self.by_path.remove(&path)
                && let Some(file) = self.files.get_mut(&key)
            {
                file.orphaned = true;
            }
        }
        self.check_files();
        self.finish_releases();
        self.update_lag();
    }

    /// Tracks the file a matched path leads to; false when it leads to no
    /// readable regular file (a dangling symlink, gone since the glob ran).
    fn reconcile_path(&mut self, path: PathBuf) -> bool {
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => metadata,
            _ => return false,
        };
        let key = FileKey {
            dev: metadata.dev(),
            ino: metadata.ino(),
        };
        match self.by_path.get(&path) {
            Some(&known) if known == key => return true,
            Some(&old) => {
                // Rotated by rename (or replaced): the old file drains.
                if let Some(file) = self.files.get_mut(&old) {
                    file.orphaned = true;
                }
                self.stats.files_rotated.fetch_add(1, Ordering::Relaxed);
                self.by_path.remove(&path);
            }
            None => {}
        }
        if let Some(file) = self.files.get_mut(&key) {
            // A path now leads to a file we already read under another name.
            file.orphaned = false;
            self.by_path.insert(path, key);
            return true;
        }
        match self.open(&path) {
            Some(file) => {
                self.by_path.insert(path, file.key);
                self.files.insert(file.key, file);
                true
            }
            None => false,
        }
    }

    fn open(&mut self, path: &Path) -> Option<TrackedFile> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(error) => {
                self.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %path.display(), %error, "cannot open log file");
                return None;
            }
        };
        let metadata = file.metadata().ok()?;
        let key = FileKey {
            dev: metadata.dev(),
            ino: metadata.ino(),
        };
        let first_bytes = read_first_bytes(&file);
        let fingerprint = Fingerprint::of(&first_bytes);
        let offset = match self.positions.resume_offset(key, &first_bytes) {
            Some(offset) if offset <= metadata.len() => offset,
            _ => 0,
        };
        self.positions.track(key, fingerprint, offset, path);
        let container = std::fs::canonicalize(path)
            .ok()
            .and_then(|target| logline::container_from_link(path, &target))
            .or_else(|| logline::container_from_path(path));
        self.stats.files_opened.fetch_add(1, Ordering::Relaxed);
        self.stats.files_open.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(path = %path.display(), offset, "tailing");
        Some(TrackedFile {
            key,
            path: path.to_path_buf(),
            file,
            fingerprint,
            read_offset: offset,
            carry: Vec::new(),
            format: None,
            container,
            streams: Default::default(),
            needs_relabel: false,
            orphaned: false,
            size_at_discovery: metadata.len(),
            acked_in_batch: offset,
        })
    }

    /// Orphans that stopped growing, fingerprints of files that were short,
    /// pods that became known.
    fn check_files(&mut self) {
        let mut release = Vec::new();
        for file in self.files.values_mut() {
            let size = match file.file.metadata() {
                Ok(metadata) => metadata.len(),
                Err(_) => continue,
            };
            if file.fingerprint.len < FINGERPRINT_LEN && size > file.fingerprint.len {
                let first = read_first_bytes(&file.file);
                let len = file.fingerprint.len as usize;
                if first.len() >= len && Fingerprint::of(&first[..len]) == file.fingerprint {
                    file.fingerprint = Fingerprint::of(&first);
                    self.positions.refingerprint(file.key, file.fingerprint);
                }
            }
            if file.needs_relabel {
                file.needs_relabel = false;
                for stream in &mut file.streams {
                    stream.labels = None;
                }
            }
            if file.orphaned && size == file.size_at_discovery && file.read_offset >= size {
                release.push(file.key);
            }
            file.size_at_discovery = size;
        }
        for key in release {
            self.release(key);
        }
    }

    /// Whether the file has bytes past `read_offset`; first notices a
    /// truncation (copytruncate: shorter than what was read, or different
    /// first bytes because it grew again since) and starts over at 0.
    fn has_new_data(&mut self, file: &mut TrackedFile) -> bool {
        let size = match file.file.metadata() {
            Ok(metadata) => metadata.len(),
            Err(_) => return false,
        };
        if size == file.read_offset {
            return false;
        }
        let truncated = size < file.read_offset || {
            let first = read_first_bytes(&file.file);
            let len = file.fingerprint.len as usize;
            first.len() < len || Fingerprint::of(&first[..len]) != file.fingerprint
        };
        if truncated {
            self.stats.files_truncated.fetch_add(1, Ordering::Relaxed);
            tracing::info!(path = %file.path.display(), "log file truncated, reading from the start");
            file.fingerprint = Fingerprint::of(&read_first_bytes(&file.file));
            file.read_offset = 0;
            file.carry.clear();
            for stream in &mut file.streams {
                stream.partial.clear();
                if let Some(joiner) = &mut stream.joiner {
                    joiner.flush();
                }
            }
            file.acked_in_batch = 0;
            self.positions.track(file.key, file.fingerprint, 0, &file.path);
        }
        size > file.read_offset
    }

    /// Closes a drained file; its position is forgotten once acknowledged.
    fn release(&mut self, key: FileKey) {
        let Some(mut file) = self.files.remove(&key) else {
            return;
        };
        // A final line without a newline, and pieces never finished, are
        // complete now: nothing more will be written.
        if !file.carry.is_empty() {
            let carry = std::mem::take(&mut file.carry);
            let end = file.read_offset;
            let start = end - carry.len() as u64;
            self.process_line(&mut file, &carry, start, end);
        }
        for slot in 0..2 {
            self.finish_stream(&mut file, slot);
        }
        self.releasing.push((key, file.safe_offset()));
        self.stats.files_released.fetch_add(1, Ordering::Relaxed);
        self.stats.files_open.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(path = %file.path.display(), "released drained log file");
        // Its last lines still need acknowledging: keep it until the batch is cut.
        self.pending_final_acks.push(Ack {
            key,
            fingerprint_hash: file.fingerprint.hash,
            offset: file.safe_offset(),
        });
    }

    fn finish_releases(&mut self) {
        let positions = &self.positions;
        self.releasing.retain(|&(key, offset)| {
            let acknowledged = positions.offset(key).is_none_or(|saved| saved >= offset);
            if acknowledged {
                positions.forget(key);
            }
            !acknowledged
        });
    }

    fn update_lag(&self) {
        let mut lag = Vec::with_capacity(self.files.len());
        for file in self.files.values() {
            let acked = self.positions.offset(file.key).unwrap_or(0);
            lag.push((file.path.clone(), file.size_at_discovery.saturating_sub(acked)));
        }
        *self.stats.lag.lock().unwrap_or_else(|p| p.into_inner()) = lag;
    }

    /// Reads every file once (up to [`READ_CHUNK`]); true if anything was read.
    fn read_round(&mut self) -> bool {
        let keys: Vec<FileKey> = self.files.keys().copied().collect();
        let mut progressed = false;
        for key in keys {
            let Some(mut file) = self.files.remove(&key) else {
                continue;
            };
            progressed |= self.read_file(&mut file);
            self.files.insert(key, file);
            if self.batch.bytes as u64 >= self.config.batch_size && !self.cut_batch() {
                break;
            }
        }
        progressed
    }

    fn read_file(&mut self, file: &mut TrackedFile) -> bool {
        if !self.has_new_data(file) {
            return false;
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        buf.clear();
        buf.extend_from_slice(&file.carry);
        let carried = file.carry.len();
        file.carry.clear();
        buf.resize(carried + READ_CHUNK, 0);
        let read = match file.file.read_at(&mut buf[carried..], file.read_offset) {
            Ok(read) => read,
            Err(error) => {
                self.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %file.path.display(), %error, "read failed");
                0
            }
        };
        buf.truncate(carried + read);
        let base = file.read_offset - carried as u64;
        file.read_offset += read as u64;
        self.stats.bytes_read.fetch_add(read as u64, Ordering::Relaxed);

        let mut start = 0;
        while let Some(newline) = memchr::memchr(b'\n', &buf[start..]) {
            let end = start + newline;
            let line_start = base + start as u64;
            let line_end = base + end as u64 + 1;
            self.process_line(file, &buf[start..end], line_start, line_end);
            start = end + 1;
        }
        let limit = self.config.max_line_size as usize * UNTERMINATED_LINE_FACTOR + FRAMING_SLACK;
        while buf.len() - start > limit {
            // No newline within the limit: cut the line here (counted).
            self.stats.lines_split.fetch_add(1, Ordering::Relaxed);
            let end = start + limit;
            self.process_line(file, &buf[start..end], base + start as u64, base + end as u64);
            start = end;
        }
        file.carry.extend_from_slice(&buf[start..]);
        self.read_buf = buf;
        read > 0
    }

    fn process_line(&mut self, file: &mut TrackedFile, line: &[u8], start: u64, end: u64) {
        self.stats.lines_read.fetch_add(1, Ordering::Relaxed);
        let format = *file.format.get_or_insert_with(|| LineFormat::detect(line));
        // Only plain lines (and lines not in their file's format) take the
        // time they are read; CRI and Docker lines carry their own.
        let now = if format == LineFormat::Plain { now_ns() } else { 0 };
        let parsed = match format.parse(line, now) {
            Ok(parsed) => parsed,
            Err(error) => {
                let count = self.stats.invalid_lines.fetch_add(1, Ordering::Relaxed);
                if count.is_power_of_two() {
                    tracing::warn!(path = %file.path.display(), offset = start, reason = error.as_str(), invalid_so_far = count + 1, "line not in the file's format, shipped as is");
                }
                LineFormat::Plain
                    .parse(line, now_ns())
                    .expect("plain lines always parse")
            }
        };
        let slot = parsed.stream as usize;
        let max = self.config.max_line_size as usize;
        if parsed.partial {
            let state = &mut file.streams[slot];
            if state.partial.is_empty() {
                state.partial_start = start;
                state.partial_timestamp = parsed.timestamp;
            }
            state.partial.extend_from_slice(&parsed.content);
            if state.partial.len() >= max {
                // Too long: ship what there is as one piece, keep collecting.
                self.stats.lines_split.fetch_add(1, Ordering::Relaxed);
                let piece = std::mem::take(&mut file.streams[slot].partial);
                let timestamp = file.streams[slot].partial_timestamp;
                self.emit(file, parsed.stream, timestamp, &piece, start, end);
                file.streams[slot].partial_start = end;
            }
            return;
        }
        if file.streams[slot].partial.is_empty() {
            let content = parsed.content;
            self.emit(file, parsed.stream, parsed.timestamp, &content, start, end);
        } else {
            let mut whole = std::mem::take(&mut file.streams[slot].partial);
            whole.extend_from_slice(&parsed.content);
            let first_start = file.streams[slot].partial_start;
            let timestamp = file.streams[slot].partial_timestamp;
            self.emit(file, parsed.stream, timestamp, &whole, first_start, end);
        }
    }

    /// A complete line: split if too long, joined if multi-line, batched.
    fn emit(
        &mut self,
        file: &mut TrackedFile,
        stream: OutputStream,
        timestamp: i64,
        content: &[u8],
        start: u64,
        end: u64,
    ) {
        let max = self.config.max_line_size as usize;
        if content.len() > max {
            self.stats.lines_split.fetch_add(1, Ordering::Relaxed);
            // Each piece a nanosecond later: pieces with equal text stay
            // distinct entries (the server drops exact repeats) and in order.
            for (index, piece) in split_at_char_boundaries(content, max).into_iter().enumerate() {
                self.emit_one(file, stream, timestamp + index as i64, piece, start, end);
            }
        } else {
            self.emit_one(file, stream, timestamp, content, start, end);
        }
    }

    fn emit_one(
        &mut self,
        file: &mut TrackedFile,
        stream: OutputStream,
        timestamp: i64,
        content: &[u8],
        start: u64,
        end: u64,
    ) {
        let text = match std::str::from_utf8(content) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => {
                self.stats.invalid_utf8_lines.fetch_add(1, Ordering::Relaxed);
                String::from_utf8_lossy(content)
            }
        };
        let slot = stream as usize;
        if let Some(pattern) = &self.multiline {
            let config = self.config.multiline.as_ref().expect("pattern comes from config");
            let state = &mut file.streams[slot];
            let joiner = state.joiner.get_or_insert_with(|| {
                Joiner::new(
                    pattern.clone(),
                    config.max_lines,
                    self.config.max_line_size as usize,
                    config.timeout,
                )
            });
            let record = joiner.push(timestamp, &text, start, end);
            state.joiner_touched = Some(Instant::now());
            if let Some(record) = record {
                self.batch
                    .add(file, &self.labeler, stream, record.timestamp, record.text);
            }
            return;
        }
        self.batch
            .add(file, &self.labeler, stream, timestamp, text.into_owned());
    }

    /// Emits multi-line records that waited past their timeout.
    fn flush_idle_records(&mut self) {
        if self.multiline.is_none() {
            return;
        }
        let keys: Vec<FileKey> = self.files.keys().copied().collect();
        for key in keys {
            let Some(mut file) = self.files.remove(&key) else {
                continue;
            };
            for slot in 0..2 {
                let state = &file.streams[slot];
                let idle = match (&state.joiner, state.joiner_touched) {
                    (Some(joiner), Some(touched)) => joiner.is_pending() && touched.elapsed() >= joiner.timeout(),
                    _ => false,
                };
                if idle {
                    self.finish_stream(&mut file, slot);
                }
            }
            self.files.insert(key, file);
        }
    }

    /// Emits whatever a stream holds (partial pieces, a pending record).
    fn finish_stream(&mut self, file: &mut TrackedFile, slot: usize) {
        let stream = if slot == 0 {
            OutputStream::Stdout
        } else {
            OutputStream::Stderr
        };
        if !file.streams[slot].partial.is_empty() {
            let piece = std::mem::take(&mut file.streams[slot].partial);
            let timestamp = file.streams[slot].partial_timestamp;
            let start = file.streams[slot].partial_start;
            let end = file.read_offset;
            self.emit(file, stream, timestamp, &piece, start, end);
        }
        let record = file.streams[slot].joiner.as_mut().and_then(Joiner::flush);
        if let Some(record) = record {
            self.batch
                .add(file, &self.labeler, stream, record.timestamp, record.text);
        }
    }

    /// Encodes the batch and hands it to the shipper (blocking while the
    /// shipper is busy). False when the shipper is gone.
    fn cut_batch(&mut self) -> bool {
        let mut acks = std::mem::take(&mut self.pending_final_acks);
        for file in self.files.values_mut() {
            let safe = file.safe_offset();
            if safe > file.acked_in_batch {
                acks.push(Ack {
                    key: file.key,
                    fingerprint_hash: file.fingerprint.hash,
                    offset: safe,
                });
                file.acked_in_batch = safe;
            }
        }
        let batch = std::mem::take(&mut self.batch);
        if batch.lines == 0 && acks.is_empty() {
            return true;
        }
        let push = LogPush { streams: batch.streams };
        let outgoing = Outgoing {
            body: if batch.lines == 0 {
                Vec::new()
            } else {
                tidewatch_model::loki_push::encode_push_protobuf(&push)
            },
            items: batch.lines,
            raw_bytes: batch.bytes as u64,
            acks,
        };
        self.out.blocking_send(outgoing).is_ok()
    }
}

fn read_first_bytes(file: &File) -> Vec<u8> {
    let mut first = vec![0u8; FINGERPRINT_LEN as usize];
    let mut filled = 0;
    while filled < first.len() {
        match file.read_at(&mut first[filled..], filled as u64) {
            Ok(0) | Err(_) => break,
            Ok(read) => filled += read,
        }
    }
    first.truncate(filled);
    first
}

/// Pieces of at most `max` bytes, cut only between UTF-8 characters when the
/// text is UTF-8.
fn split_at_char_boundaries(content: &[u8], max: usize) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut rest = content;
    while rest.len() > max {
        let mut cut = max;
        // Back up over continuation bytes (10xxxxxx), at most 3.
        while cut > max.saturating_sub(3) && cut > 0 && (rest[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        if cut == 0 || (rest[cut] & 0xC0) == 0x80 {
            // No character boundary in reach: not UTF-8 here, cut anywhere.
            cut = max;
        }
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    pieces.push(rest);
    pieces
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Knows one pod, by UID.
    #[derive(Debug)]
    struct OnePod;

    impl PodDirectory for OnePod {
        fn pod_labels(&self, namespace: &str, pod: &str, pod_uid: Option<&str>) -> Option<Arc<[Label]>> {
            (namespace == "shop" && pod == "web-1" && pod_uid.is_none_or(|uid| uid == "uid-new")).then(|| {
                Arc::from(vec![
                    Label::new(labels::POD_UID, "uid-new"),
                    Label::new(labels::WORKLOAD, "web"),
                    Label::new(labels::WORKLOAD_KIND, "Deployment"),
                ])
            })
        }
    }

    #[test]
    fn streams_carry_the_pods_workload_and_never_another_pods() {
        let labeler = StreamLabeler {
            node: "node-a".into(),
            cluster: "prod".into(),
            static_labels: vec![("team".into(), "shop".into())],
            pods: Arc::new(OnePod),
        };
        let container = ContainerRef {
            namespace: "shop".into(),
            pod: "web-1".into(),
            pod_uid: Some("uid-new".into()),
            container: "nginx".into(),
            container_id: None,
        };
        let (labels, enriched) = labeler.labels(Path::new("/x.log"), Some(&container), OutputStream::Stderr);
        assert!(enriched);
        let text = labels.to_string();
        for pair in [
            r#"cluster="prod""#,
            r#"container="nginx""#,
            r#"namespace="shop""#,
            r#"node="node-a""#,
            r#"pod="web-1""#,
            r#"pod_uid="uid-new""#,
            r#"stream="stderr""#,
            r#"team="shop""#,
            r#"workload="web""#,
            r#"workload_kind="Deployment""#,
        ] {
            assert!(text.contains(pair), "{pair} missing from {text}");
        }
        // The old pod of the same name (another UID): no workload labels, and
        // marked for relabelling once the directory knows it.
        let old = ContainerRef {
            pod_uid: Some("uid-old".into()),
            ..container
        };
        let (labels, enriched) = labeler.labels(Path::new("/x.log"), Some(&old), OutputStream::Stdout);
        assert!(!enriched);
        assert_eq!(labels.get(labels::POD_UID), Some("uid-old"));
        assert_eq!(labels.get(labels::WORKLOAD), None);
        // Outside the kubelet's layout: the file name.
        let (labels, _) = labeler.labels(Path::new("/var/log/app.log"), None, OutputStream::Stdout);
        assert_eq!(labels.get(labels::FILENAME), Some("/var/log/app.log"));
        assert_eq!(labels.get(labels::POD), None);
    }

    #[test]
    fn long_lines_split_between_characters() {
        let text = "aé".repeat(10); // 3 bytes per repetition
        let pieces = split_at_char_boundaries(text.as_bytes(), 4);
        assert!(
            pieces.iter().all(|p| p.len() <= 4 && std::str::from_utf8(p).is_ok()),
            "{pieces:?}"
        );
        assert_eq!(pieces.concat(), text.as_bytes());
        // Not UTF-8 at all: cut at the limit.
        let bytes = [0x80u8; 10];
        let pieces = split_at_char_boundaries(&bytes, 4);
        assert_eq!(pieces.iter().map(|p| p.len()).collect::<Vec<_>>(), [4, 4, 2]);
    }
}
