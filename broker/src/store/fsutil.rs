//! The broker's metadata files reach the storage seam here: whole-file replacement is
//! `Storage::write_atomic` (one implementation, [`RealFs`]'s), folder syncs `Storage::sync_dir`.

use std::path::Path;

use commitlog::storage::{RealFs, Storage};

use super::{StoreError, StoreResult};

/// Replaces `path` with `bytes` atomically on the real file system ([`RealFs`]'s
/// `write_atomic`: temp file, fsync, rename, fsync the folder). A crash leaves either the
/// old or the new content; concurrent writers of one file each rename a complete file of
/// their own.
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
    RealFs
        .sync_dir(dir)
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
        let names: Vec<_> = std::fs::read_dir(dir.path().join("config"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["topics"], "no temp file is left behind");
    }

    #[test]
    fn concurrent_writers_of_one_file_never_fail_or_tear() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("offsets");
        std::thread::scope(|s| {
            for i in 0..4u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        atomic_write(path, &[i; 4096]).unwrap();
                    }
                });
            }
        });
        let content = std::fs::read(&path).unwrap();
        assert_eq!(content.len(), 4096);
        assert!(content.iter().all(|b| *b == content[0]));
    }
}
