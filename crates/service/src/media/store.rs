//! Media files on disk, named by the SHA-256 of their content, so one file
//! uploaded twice is kept once. A file is written under `tmp/` while it
//! arrives, hashed on the way, synced, and renamed into place only when
//! whole: a crash leaves at most a temporary file, which the next start
//! removes, never a half file under a hash name.
//!
//! Which media use a file is in the database (`media_file_refs`); a file
//! no row refers to (the crash window between the rename and the metadata
//! write, or a deleted upload) is removed at start.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{Error, ErrorCode, Result, utils};

/// Where media files live: `<root>/sha256/ab/cd/<hash>` and `<root>/tmp/`.
#[derive(Clone, Debug)]
pub struct FileStore {
    root: PathBuf,
}

/// A file being written. Dropped before `finish` (an error, a client
/// that went away), it deletes what it wrote.
pub struct Incoming {
    path: PathBuf,
    file: tokio::fs::File,
    hasher: Sha256,
    size: u64,
    limit: u64,
    finished: bool,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A file stored whole under its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub sha256: String,
    pub size: u64,
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::internal(format!("media store: {what}: {e}"))
}

/// The `413` of a file over the limit.
pub fn too_large(limit: u64) -> Error {
    Error::new(
        ErrorCode::TooLarge,
        format!("The file is larger than {limit} bytes."),
    )
}

impl FileStore {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Creates the directories and removes what a crash left behind:
    /// temporary files, and files no media refers to (`is_referenced`).
    pub fn open(&self, is_referenced: impl Fn(&str) -> bool) -> Result<usize> {
        let tmp = self.root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io_error("clearing tmp", e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io_error("creating tmp", e))?;
        let files = self.root.join("sha256");
        std::fs::create_dir_all(&files).map_err(|e| io_error("creating sha256", e))?;
        let mut removed = 0;
        for path in walk(&files)? {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !is_referenced(name) {
                std::fs::remove_file(&path).map_err(|e| io_error("removing an orphan", e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The path of a stored file.
    pub fn path(&self, sha256: &str) -> PathBuf {
        let (a, b) = (
            &sha256[..2.min(sha256.len())],
            &sha256[2.min(sha256.len())..4.min(sha256.len())],
        );
        self.root.join("sha256").join(a).join(b).join(sha256)
    }

    /// Starts writing a file of at most `limit` bytes.
    pub async fn incoming(&self, limit: u64) -> Result<Incoming> {
        let path = self.root.join("tmp").join(utils::random_string(24));
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| io_error("creating a temporary file", e))?;
        Ok(Incoming {
            path,
            file,
            hasher: Sha256::new(),
            size: 0,
            limit,
            finished: false,
        })
    }

    /// Stores bytes that are already in memory (thumbnails, fetched media).
    pub async fn store_bytes(&self, bytes: &[u8]) -> Result<Stored> {
        let mut incoming = self.incoming(u64::MAX).await?;
        incoming.write(bytes).await?;
        incoming.finish(self).await
    }

    /// Deletes a stored file (when nothing refers to it any more).
    pub fn remove(&self, sha256: &str) -> Result<()> {
        match std::fs::remove_file(self.path(sha256)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("removing a file", e)),
        }
    }
}

impl Incoming {
    /// Appends a chunk; past the limit the file is dropped and `413`.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            let _ = tokio::fs::remove_file(&self.path).await;
            return Err(too_large(self.limit));
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| io_error("writing", e))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Syncs the file and moves it under its hash (an identical file
    /// already there is kept, this one dropped).
    pub async fn finish(mut self, store: &FileStore) -> Result<Stored> {
        self.file
            .flush()
            .await
            .map_err(|e| io_error("flushing", e))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| io_error("syncing", e))?;
        let sha256 = hex(&Digest::finalize_reset(&mut self.hasher));
        let target = store.path(&sha256);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_error("creating a directory", e))?;
        }
        if !tokio::fs::try_exists(&target).await.unwrap_or(false) {
            tokio::fs::rename(&self.path, &target)
                .await
                .map_err(|e| io_error("moving into place", e))?;
            self.finished = true;
        }
        Ok(Stored {
            sha256,
            size: self.size,
        })
    }

    /// Drops what was written.
    pub async fn abort(self) {
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io_error("listing", e))? {
            let entry = entry.map_err(|e| io_error("listing", e))?;
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_are_named_by_content_and_crash_leftovers_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().to_owned());
        store.open(|_| true).unwrap();
        let a = store.store_bytes(b"hello").await.unwrap();
        let b = store.store_bytes(b"hello").await.unwrap();
        assert_eq!(a, b, "the same content is one file");
        assert_eq!(
            a.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(std::fs::read(store.path(&a.sha256)).unwrap(), b"hello");

        // Over the limit: an error, and nothing left behind.
        let mut big = store.incoming(4).await.unwrap();
        let err = big.write(b"12345").await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::TooLarge));
        // A write given up is gone at once; one cut off by a crash (never
        // dropped) and a file nobody refers to go at the next start.
        let mut given_up = store.incoming(100).await.unwrap();
        given_up.write(b"half").await.unwrap();
        drop(given_up);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        let mut cut = store.incoming(100).await.unwrap();
        cut.write(b"half").await.unwrap();
        std::mem::forget(cut);
        let orphan = store.store_bytes(b"orphan").await.unwrap();
        let removed = store.open(|sha| sha == a.sha256).unwrap();
        assert_eq!(removed, 1);
        assert!(!store.path(&orphan.sha256).exists());
        assert!(store.path(&a.sha256).exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
