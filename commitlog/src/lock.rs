//! One commit log per folder: an exclusive `flock` on `<dir>/lock`.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::{sys, Error};

/// Held for the life of the log; the lock is released when the file closes.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, Error> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, "open lock file", e))?;
        match sys::try_lock_exclusive(&file) {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Err(Error::Locked {
                dir: dir.to_path_buf(),
                source: e,
            }),
            Err(e) => Err(Error::io(&path, "lock folder", e)),
        }
    }
}
