//! The journal file: CRC-framed records appended with `pwrite` and made durable with
//! `fdatasync`, in 1 MiB preallocated steps; and reading it back up to the last Commit.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use commitlog::storage::Storage;

use crate::format::{self, Frame, Record};
use crate::{Error, Result};

/// Preallocation step of the journal file.
const STEP_BYTES: u64 = 1 << 20;

/// The batches of one journal file up to its last valid Commit.
#[derive(Debug, Default)]
pub(crate) struct Read {
    /// Committed batches, each ending with its Commit.
    pub(crate) batches: Vec<Vec<Record>>,
    /// Byte position after the last valid Commit.
    pub(crate) end: u64,
    /// A bad frame was followed by a valid Commit: the file is corrupted.
    pub(crate) corrupted: bool,
}

/// Reads `bytes` (a whole journal file) up to its last valid Commit. A bad frame followed
/// only by data without a valid Commit is a torn tail: it ends the journal.
pub(crate) fn parse(bytes: &[u8]) -> Read {
    let mut out = Read::default();
    let mut batch = Vec::new();
    let mut pos = 0usize;
    loop {
        match format::read_frame(bytes, pos) {
            Frame::Record(rec, next) => {
                let commit = matches!(rec, Record::Commit { .. });
                batch.push(rec);
                pos = next;
                if commit {
                    out.batches.push(std::mem::take(&mut batch));
                    out.end = pos as u64;
                }
            }
            Frame::End => return out,
            Frame::Bad => {
                out.corrupted = format::commit_follows(bytes, pos + 1);
                return out;
            }
        }
    }
}

/// The active journal generation, open for appends.
#[derive(Debug)]
pub(crate) struct Journal {
    storage: Arc<dyn Storage>,
    pub(crate) dir: PathBuf,
    pub(crate) generation: u64,
    path: PathBuf,
    file: File,
    pub(crate) pos: u64,
    allocated: u64,
    pub(crate) poisoned: Option<String>,
}

impl Journal {
    /// Opens generation `generation` for appends at `pos`, zeroing whatever follows (an
    /// uncommitted, torn batch) so that it is not read as part of a later batch.
    pub(crate) fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        generation: u64,
        pos: u64,
    ) -> Result<Self> {
        let path = dir.join(format::journal_file_name(generation));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("opening journal", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("inspecting", &path, e))?
            .len();
        if len > pos {
            let zeros = vec![0u8; usize::try_from(len - pos).unwrap_or(0)];
            file.write_all_at(&zeros, pos)
                .and_then(|()| file.sync_data())
                .map_err(|e| Error::io("clearing the torn tail of", &path, e))?;
        }
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("syncing folder", dir, e))?;
        Ok(Self {
            storage,
            dir: dir.to_path_buf(),
            generation,
            path,
            file,
            pos,
            allocated: len,
            poisoned: None,
        })
    }

    /// Appends `bytes` and makes them durable.
    ///
    /// # Errors
    /// I/O errors; a failed `fdatasync` also poisons the journal (no retry may claim
    /// durability for bytes the kernel may have dropped).
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(p) = &self.poisoned {
            return Err(Error::Poisoned(p.clone()));
        }
        let end = self.pos + bytes.len() as u64;
        if end > self.allocated {
            let want = end.div_ceil(STEP_BYTES) * STEP_BYTES;
            self.storage
                .allocate(&self.path, &self.file, want)
                .map_err(|e| Error::io("allocating journal", &self.path, e))?;
            self.allocated = want;
        }
        self.file
            .write_all_at(bytes, self.pos)
            .map_err(|e| Error::io("writing journal", &self.path, e))?;
        if let Err(e) = self.file.sync_data() {
            self.poisoned = Some(format!("{}: {e}", self.path.display()));
            return Err(Error::io("syncing journal", &self.path, e));
        }
        self.pos = end;
        Ok(())
    }
}
