//! Crash-safe replacement of a small file: write a sibling temp file, fsync it, rename it
//! over the target, fsync the folder. A reader sees the old or the new content, never a
//! mix, and once this returns the new content survives a power loss.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The temp file used for `path`; a leftover one (a crash mid-write) is simply overwritten.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Atomically replaces `path` with `bytes`. Returns the failing step with the error.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), (&'static str, io::Error)> {
    let tmp = temp_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| ("create temp file", e))?;
    file.write_all(bytes).map_err(|e| ("write temp file", e))?;
    file.sync_all().map_err(|e| ("fsync temp file", e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| ("rename temp file", e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ("fsync folder", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn a_leftover_temp_file_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets");
        fs::write(temp_path(&path), b"torn garb").unwrap();
        atomic_write(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }
}
