//! Small file-system helpers shared by the broker's metadata files.

use std::fs::File;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use commitlog::storage::{RealFs, Storage};

use super::{StoreError, StoreResult};

/// Replaces `path` with `bytes` atomically on the real file system: write a temp file
/// next to it, fsync it, rename it over `path`, fsync the folder. A crash leaves either the
/// old or the new content.
///
/// # Errors
/// `StoreError::Io`; the temp file is removed on failure.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> StoreResult<()> {
    atomic_write_on(&RealFs, path, bytes)
}

/// [`atomic_write`] through a storage seam, so tests can make metadata writes fail as on a
/// full disk. Creates the folder first.
///
/// # Errors
/// `StoreError::Io`; the temp file is removed on failure.
pub fn atomic_write_on(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> StoreResult<()> {
    // The temp name is fixed per target, so two writers of the same file (the dispatcher's
    // periodic checkpoint and `MessageStore::flush`) would truncate each other's temp file
    // and one rename would fail with NotFound. Metadata writes are small and rare:
    // serializing all of them in the process is cheap.
    static WRITING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = path.parent().ok_or_else(|| {
        StoreError::InvalidConfig(format!("{} has no parent folder", path.display()))
    })?;
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io("creating folder", dir, e))?;
    storage
        .write_atomic(path, bytes)
        .map_err(|e| StoreError::io("replacing", path, e))
}

/// Fsyncs a folder so that renames and new files in it survive a power loss.
///
/// # Errors
/// `StoreError::Io`.
pub fn sync_dir(dir: &Path) -> StoreResult<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io("syncing folder", dir, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("config").join("topics");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!dir.path().join("config").join("topics.tmp").exists());
    }
}
