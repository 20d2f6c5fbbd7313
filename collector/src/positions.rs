//! Per-file read positions, persisted so a restart resumes where the last
//! acknowledged line ended.
//!
//! A file is known by device + inode + a hash of its first bytes: an inode
//! the filesystem reuses for a new file has different first bytes, so it is
//! read from the start rather than from the old file's offset. Positions only
//! move forward when the shipper reports a batch acknowledged (by the server
//! or the spool), so every line before a saved offset is safe.
//!
//! The file is JSON with a version, replaced atomically (write to a temporary
//! file, then rename) so a crash leaves the old or the new one, never half.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const FORMAT_VERSION: u32 = 1;
const FILE_NAME: &str = "positions.json";

/// Bytes hashed to tell one file from another that reuses its inode.
pub const FINGERPRINT_LEN: u64 = 256;

/// A file's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

/// The first bytes of a file, hashed; `len` is how many there were (files
/// shorter than [`FINGERPRINT_LEN`] are fingerprinted over what they have,
/// and the fingerprint is taken again once they grow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u64,
    pub hash: u64,
}

impl Fingerprint {
    pub fn of(first_bytes: &[u8]) -> Fingerprint {
        Fingerprint {
            len: first_bytes.len() as u64,
            hash: xxhash_rust::xxh3::xxh3_64(first_bytes),
        }
    }
}

/// One file's saved position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub key: FileKey,
    pub fingerprint: Fingerprint,
    /// Every line that ends at or before this offset was acknowledged.
    pub offset: u64,
    /// The path it was read through, for people reading the file.
    pub path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct PositionsFile {
    version: u32,
    files: Vec<Position>,
}

/// The shared, persisted table. The tailer registers and forgets files; the
/// shipper advances offsets on acknowledgement; a writer task saves it.
#[derive(Debug, Clone)]
pub struct Positions {
    inner: Arc<Mutex<Table>>,
    path: PathBuf,
}

#[derive(Debug, Default)]
struct Table {
    files: HashMap<FileKey, Position>,
    dirty: bool,
}

impl Positions {
    /// Loads `<state_dir>/positions.json`, or starts empty.
    pub fn load(state_dir: &Path) -> Result<Positions> {
        let path = state_dir.join(FILE_NAME);
        let mut table = Table::default();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: PositionsFile = serde_json::from_slice(&bytes).map_err(|e| Error::CorruptState {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                if file.version != FORMAT_VERSION {
                    return Err(Error::CorruptState {
                        path,
                        message: format!(
                            "format version {} (this collector reads {FORMAT_VERSION})",
                            file.version
                        ),
                    });
                }
                for position in file.files {
                    table.files.insert(position.key, position);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        Ok(Positions {
            inner: Arc::new(Mutex::new(table)),
            path,
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic elsewhere while holding the lock leaves a consistent table
        // (every method finishes its single update), so keep using it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The saved position of a file, if its fingerprint agrees.
    pub fn resume_offset(&self, key: FileKey, first_bytes: &[u8]) -> Option<u64> {
        let table = self.table();
        let saved = table.files.get(&key)?;
        let len = saved.fingerprint.len as usize;
        if first_bytes.len() < len || Fingerprint::of(&first_bytes[..len]) != saved.fingerprint {
            return None;
        }
        Some(saved.offset)
    }

    /// Starts tracking a file at `offset` (replacing whatever the key held).
    pub fn track(&self, key: FileKey, fingerprint: Fingerprint, offset: u64, path: &Path) {
        let mut table = self.table();
        table.files.insert(
            key,
            Position {
                key,
                fingerprint,
                offset,
                path: path.to_path_buf(),
            },
        );
        table.dirty = true;
    }

    /// Updates the fingerprint of a file that grew past its first bytes.
    pub fn refingerprint(&self, key: FileKey, fingerprint: Fingerprint) {
        let mut table = self.table();
        if let Some(position) = table.files.get_mut(&key) {
            position.fingerprint = fingerprint;
            table.dirty = true;
        }
    }

    /// Moves a file's offset forward (never back: acknowledgements arrive in
    /// order, and a truncated file is re-tracked instead).
    pub fn advance(&self, key: FileKey, fingerprint_hash: u64, offset: u64) {
        let mut table = self.table();
        if let Some(position) = table.files.get_mut(&key)
            && position.fingerprint.hash == fingerprint_hash
            && offset > position.offset
        {
            position.offset = offset;
            table.dirty = true;
        }
    }

    /// The acknowledged offset of a tracked file.
    pub fn offset(&self, key: FileKey) -> Option<u64> {
        self.table().files.get(&key).map(|p| p.offset)
    }

    /// Stops tracking a file (it was drained and released).
    pub fn forget(&self, key: FileKey) {
        let mut table = self.table();
        if table.files.remove(&key).is_some() {
            table.dirty = true;
        }
    }

    /// Keys of every tracked file.
    pub fn keys(&self) -> Vec<FileKey> {
        self.table().files.keys().copied().collect()
    }

    /// Writes the table if it changed since the last save.
    pub fn save_if_dirty(&self) -> Result<()> {
        let files = {
            let mut table = self.table();
            if !table.dirty {
                return Ok(());
            }
            table.dirty = false;
            let mut files: Vec<Position> = table.files.values().cloned().collect();
            files.sort_by(|a, b| a.path.cmp(&b.path));
            files
        };
        let body = serde_json::to_vec_pretty(&PositionsFile {
            version: FORMAT_VERSION,
            files,
        })
        .expect("positions serialize");
        let temporary = self.path.with_extension("json.tmp");
        let result = std::fs::write(&temporary, &body).and_then(|()| std::fs::rename(&temporary, &self.path));
        if let Err(e) = result {
            // Try again at the next save.
            self.table().dirty = true;
            return Err(Error::io(&self.path, e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_survive_a_reload_and_only_move_forward() {
        let dir = tempfile::tempdir().unwrap();
        let positions = Positions::load(dir.path()).unwrap();
        let key = FileKey { dev: 1, ino: 2 };
        let first = b"2024-01-01T00:00:00Z stdout F hello\n";
        let fingerprint = Fingerprint::of(first);
        positions.track(key, fingerprint, 0, Path::new("/x.log"));
        positions.advance(key, fingerprint.hash, 36);
        positions.advance(key, fingerprint.hash, 10);
        positions.advance(key, fingerprint.hash ^ 1, 99);
        positions.save_if_dirty().unwrap();

        let reloaded = Positions::load(dir.path()).unwrap();
        assert_eq!(reloaded.resume_offset(key, first), Some(36));
        // Same inode, other content: a new file.
        assert_eq!(
            reloaded.resume_offset(key, b"2025-01-01T00:00:00Z stdout F other\n"),
            None
        );
        // Shorter than the fingerprint: cannot be the same file.
        assert_eq!(reloaded.resume_offset(key, b"2024"), None);
        reloaded.forget(key);
        reloaded.save_if_dirty().unwrap();
        assert!(Positions::load(dir.path()).unwrap().keys().is_empty());
    }

    #[test]
    fn a_corrupt_or_future_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let error = Positions::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains(FILE_NAME), "{error}");
        std::fs::write(dir.path().join(FILE_NAME), br#"{"version":9,"files":[]}"#).unwrap();
        let error = Positions::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("version 9"), "{error}");
    }
}
