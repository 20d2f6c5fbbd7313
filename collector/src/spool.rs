//! The bounded on-disk buffer batches wait in while the server is down or
//! slow.
//!
//! Each batch is one file, `<sequence>.batch`, holding a small header (magic,
//! version, item count, CRC-32C of the body) and the request body exactly as
//! it will be sent (already encoded and compressed), so draining does no
//! work but reading and sending. Files are written to a temporary name and
//! renamed, so a crash leaves whole batches only; a file that fails its
//! checksum is removed and counted as dropped.
//!
//! When a new batch would take the spool past its size, the oldest batches
//! are dropped and counted: the newest data is the most useful, and the loss
//! is visible in `tidewatch_collector_spool_dropped_*` and the log.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"TWSP";
const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 8 + 4;
const EXTENSION: &str = "batch";

/// One spooled batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledBatch {
    pub sequence: u64,
    /// Lines or samples in the batch, for the dropped counters.
    pub items: u64,
    pub body: Vec<u8>,
}

/// What [`Spool::push`] had to drop to make room.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub batches: u64,
    pub items: u64,
    pub bytes: u64,
}

/// A directory of spooled batches, oldest first.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// (sequence, file size, items) of every batch on disk, oldest first.
    entries: VecDeque<(u64, u64, u64)>,
    bytes: u64,
    next_sequence: u64,
}

impl Spool {
    /// Opens (creating) the directory and indexes the batches already there;
    /// leftovers of an interrupted write are removed.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(sequence) = name
                .strip_suffix(&format!(".{EXTENSION}"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                let size = entry.metadata().map_err(|e| Error::io(&path, e))?.len();
                let items = read_header_items(&path).unwrap_or(0);
                entries.push((sequence, size, items));
            } else if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
            }
        }
        entries.sort_unstable();
        let bytes = entries.iter().map(|e| e.1).sum();
        let next_sequence = entries.last().map_or(0, |e| e.0 + 1);
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            entries: entries.into(),
            bytes,
            next_sequence,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn path_of(&self, sequence: u64) -> PathBuf {
        self.dir.join(format!("{sequence:020}.{EXTENSION}"))
    }

    /// Appends a batch, dropping the oldest ones if it would not fit. A batch
    /// larger than the whole spool is itself dropped.
    pub fn push(&mut self, items: u64, body: &[u8]) -> Result<Dropped> {
        let size = (HEADER_LEN + body.len()) as u64;
        let mut dropped = Dropped::default();
        if size > self.max_bytes {
            return Ok(Dropped {
                batches: 1,
                items,
                bytes: size,
            });
        }
        while self.bytes + size > self.max_bytes {
            let Some((sequence, old_size, old_items)) = self.entries.pop_front() else {
                break;
            };
            self.remove_file(sequence)?;
            self.bytes -= old_size;
            dropped.batches += 1;
            dropped.items += old_items;
            dropped.bytes += old_size;
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let path = self.path_of(sequence);
        let temporary = path.with_extension("tmp");
        let mut file_bytes = Vec::with_capacity(size as usize);
        file_bytes.extend_from_slice(MAGIC);
        file_bytes.push(FORMAT_VERSION);
        file_bytes.extend_from_slice(&items.to_le_bytes());
        file_bytes.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        file_bytes.extend_from_slice(body);
        std::fs::write(&temporary, &file_bytes)
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|e| Error::io(&path, e))?;
        self.entries.push_back((sequence, size, items));
        self.bytes += size;
        Ok(dropped)
    }

    /// The oldest batch, without removing it. A batch that fails to read or
    /// verify is removed and reported as dropped.
    pub fn front(&mut self) -> Result<(Option<SpooledBatch>, Dropped)> {
        let mut dropped = Dropped::default();
        while let Some(&(sequence, size, items)) = self.entries.front() {
            let path = self.path_of(sequence);
            match read_batch(&path) {
                Ok(body) => {
                    return Ok((Some(SpooledBatch { sequence, items, body }), dropped));
                }
                Err(message) => {
                    tracing::error!(path = %path.display(), %message, "spooled batch unreadable, dropped");
                    self.entries.pop_front();
                    self.bytes -= size;
                    let _ = std::fs::remove_file(&path);
                    dropped.batches += 1;
                    dropped.items += items;
                    dropped.bytes += size;
                }
            }
        }
        Ok((None, dropped))
    }

    /// Removes the oldest batch once it was delivered.
    pub fn pop(&mut self, sequence: u64) -> Result<()> {
        if self.entries.front().map(|e| e.0) != Some(sequence) {
            // Dropped to make room while it was being sent.
            return Ok(());
        }
        let (_, size, _) = self.entries.pop_front().expect("front checked");
        self.bytes -= size;
        self.remove_file(sequence)
    }

    fn remove_file(&self, sequence: u64) -> Result<()> {
        let path = self.path_of(sequence);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }
}

fn read_header_items(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut header = [0u8; HEADER_LEN];
    std::fs::File::open(path).ok()?.read_exact(&mut header).ok()?;
    (&header[..4] == MAGIC).then(|| u64::from_le_bytes(header[5..13].try_into().expect("8 bytes")))
}

fn read_batch(path: &Path) -> std::result::Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err("not a spool batch".into());
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(format!("spool format version {}", bytes[4]));
    }
    let crc = u32::from_le_bytes(bytes[13..17].try_into().expect("4 bytes"));
    let body = bytes[HEADER_LEN..].to_vec();
    if crc32c::crc32c(&body) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_come_back_in_order_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..3u8 {
            spool.push(u64::from(i) + 1, &[i; 10]).unwrap();
        }
        drop(spool);
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.len(), 3);
        let mut seen = Vec::new();
        while let (Some(batch), _) = spool.front().unwrap() {
            seen.push((batch.items, batch.body[0]));
            spool.pop(batch.sequence).unwrap();
        }
        assert_eq!(seen, [(1, 0), (2, 1), (3, 2)]);
        assert_eq!(spool.bytes(), 0);
        // New sequence numbers keep growing after a reopen.
        spool.push(1, b"x").unwrap();
        assert!(Spool::open(dir.path(), 1 << 20).unwrap().next_sequence >= 4);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let one = (HEADER_LEN + 100) as u64;
        let mut spool = Spool::open(dir.path(), one * 3).unwrap();
        for i in 0..3u8 {
            assert_eq!(spool.push(5, &[i; 100]).unwrap(), Dropped::default());
        }
        let dropped = spool.push(7, &[9; 100]).unwrap();
        assert_eq!(
            dropped,
            Dropped {
                batches: 1,
                items: 5,
                bytes: one
            }
        );
        let (front, _) = spool.front().unwrap();
        assert_eq!(front.unwrap().body[0], 1);
        // Bigger than the whole spool: refused, counted.
        let huge = spool.push(3, &[0; 1000]).unwrap();
        assert_eq!(huge.batches, 1);
        assert_eq!(spool.len(), 3);
    }

    #[test]
    fn a_corrupt_batch_is_dropped_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.push(4, b"first").unwrap();
        spool.push(2, b"second").unwrap();
        let first = spool.path_of(0);
        let mut bytes = std::fs::read(&first).unwrap();
        *bytes.last_mut().unwrap() ^= 0xff;
        std::fs::write(&first, bytes).unwrap();
        let (batch, dropped) = spool.front().unwrap();
        assert_eq!(batch.unwrap().body, b"second");
        assert_eq!(dropped.items, 4);
    }
}
