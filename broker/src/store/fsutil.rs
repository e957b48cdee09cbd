//! Small file-system helpers shared by the broker's metadata files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use super::{StoreError, StoreResult};

/// Replaces `path` with `bytes` atomically: write a temp file next to it, fsync it, rename
/// it over `path`, fsync the folder. A crash leaves either the old or the new content.
///
/// # Errors
/// `StoreError::Io` naming the step that failed; the temp file is removed on failure.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> StoreResult<()> {
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
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let result = write_synced(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| StoreError::io("renaming", path, e)))
        .and_then(|()| sync_dir(dir));
    if result.is_err() {
        // Best effort: a leftover temp file is harmless, it is overwritten next time.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_synced(path: &Path, bytes: &[u8]) -> StoreResult<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| StoreError::io("creating", path, e))?;
    f.write_all(bytes)
        .map_err(|e| StoreError::io("writing", path, e))?;
    f.sync_all().map_err(|e| StoreError::io("syncing", path, e))
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
