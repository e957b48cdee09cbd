//! One process per folder: an exclusive, non-blocking lock on a lock file (std
//! `File::try_lock`, an `flock` on Unix). The lock is released when the file closes,
//! including when the process dies. The commit log takes `<dir>/lock`; the broker's store
//! takes `<data>/lock` with the same type.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::Error;

/// An exclusive lock on a folder, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Locks `dir` through the file `<dir>/<file_name>` (created if missing).
    ///
    /// # Errors
    /// [`Error::Locked`] when another process (or another handle in this one) holds it,
    /// [`Error::Io`] when the file cannot be opened or locked.
    pub fn acquire(dir: &Path, file_name: &str) -> Result<DirLock, Error> {
        let path = dir.join(file_name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, "open lock file", e))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(Error::Locked {
                dir: dir.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::WouldBlock),
            }),
            Err(TryLockError::Error(e)) => Err(Error::io(&path, "lock folder", e)),
        }
    }
}
