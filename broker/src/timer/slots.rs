//! The slot files under `<data>/timer/slots/`: one append-only file per due second (see
//! [`super::format`]), a file created on the first timer of its second and removed once
//! the second is delivered and the checkpoint says so. Files are kept open only between
//! two syncs.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::TimerError;
use super::format::{self, Entry, Kind, ENTRY_LEN, HEADER_LEN};

/// Files kept open for appends before a sync closes them, so one that touches many
/// seconds (timers spread over a week) never holds many descriptors.
const MAX_OPEN: usize = 256;

/// Slot files written to but not yet synced, taken out of the [`SlotDir`].
#[derive(Debug, Default)]
pub(crate) struct Unsynced {
    files: Vec<(PathBuf, File)>,
    /// The folder, when a file was created in it.
    dir: Option<PathBuf>,
}

impl Unsynced {
    /// Adds `other`'s files to these.
    pub(crate) fn absorb(&mut self, other: Unsynced) {
        self.files.extend(other.files);
        if other.dir.is_some() {
            self.dir = other.dir;
        }
    }

    /// Syncs every file, then the folder when a file was created. On error the files not
    /// yet synced stay, for the next try.
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn sync(&mut self) -> Result<(), TimerError> {
        while let Some((path, file)) = self.files.last() {
            file.sync_data()
                .map_err(|e| TimerError::io("sync", path, e))?;
            self.files.pop();
        }
        if let Some(dir) = &self.dir {
            crate::store::fsutil::sync_dir(dir)
                .map_err(|e| TimerError::store("syncing", dir.display().to_string(), e))?;
            self.dir = None;
        }
        Ok(())
    }
}

/// Removes the file of a delivered second by its path; gone already is fine.
///
/// # Errors
/// I/O errors other than the file being gone.
pub(crate) fn remove_file(path: &Path) -> Result<(), TimerError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TimerError::io("remove", path, e)),
    }
}

/// The slot folder.
#[derive(Debug)]
pub(crate) struct SlotDir {
    dir: PathBuf,
    /// Files appended to since the last sync.
    open: HashMap<u64, File>,
    /// Whether a file was created since the last sync (the folder needs one too).
    created: bool,
}

impl SlotDir {
    /// Opens (creating) the folder; returns it with the seconds that have a file.
    ///
    /// # Errors
    /// I/O errors listing the folder.
    pub(crate) fn open(dir: &Path) -> Result<(Self, BTreeSet<u64>), TimerError> {
        fs::create_dir_all(dir).map_err(|e| TimerError::io("create", dir, e))?;
        let mut seconds = BTreeSet::new();
        for item in fs::read_dir(dir).map_err(|e| TimerError::io("list", dir, e))? {
            let item = item.map_err(|e| TimerError::io("list", dir, e))?;
            let name = item.file_name();
            // Anything else (a temp file of another tool) is not ours to judge.
            if let Some(s) = name.to_str().and_then(|n| n.parse::<u64>().ok()) {
                seconds.insert(s);
            }
        }
        let slots = Self {
            dir: dir.to_path_buf(),
            open: HashMap::new(),
            created: false,
        };
        Ok((slots, seconds))
    }

    fn path(&self, second: u64) -> PathBuf {
        self.dir.join(format::slot_name(second))
    }

    /// Appends entries to the file of `second`, creating it. Not durable until
    /// [`Self::sync`].
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn append(&mut self, second: u64, entries: &[Entry]) -> Result<(), TimerError> {
        if !self.open.contains_key(&second) {
            if self.open.len() >= MAX_OPEN {
                self.sync()?;
            }
            let path = self.path(second);
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| TimerError::io("open", &path, e))?;
            let len = file
                .metadata()
                .map_err(|e| TimerError::io("stat", &path, e))?
                .len();
            if len == 0 {
                file.write_all(&format::header())
                    .map_err(|e| TimerError::io("write", &path, e))?;
                self.created = true;
            } else {
                // A torn entry at the end (power loss): appends go after a whole number
                // of entries, so the torn bytes never hide the next entry.
                let (header, entry) = (HEADER_LEN as u64, ENTRY_LEN as u64);
                let body = len.saturating_sub(header);
                if !body.is_multiple_of(entry) {
                    file.set_len(header + body / entry * entry)
                        .map_err(|e| TimerError::io("truncate", &path, e))?;
                }
            }
            self.open.insert(second, file);
        }
        let mut buf = Vec::with_capacity(entries.len() * ENTRY_LEN);
        for e in entries {
            buf.extend_from_slice(&e.encode());
        }
        let path = self.path(second);
        let file = self.open.get_mut(&second).ok_or(TimerError::Closed)?;
        file.write_all(&buf)
            .map_err(|e| TimerError::io("append to", path, e))
    }

    /// Makes every append since the last sync durable and closes the files.
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn sync(&mut self) -> Result<(), TimerError> {
        self.take_unsynced().sync()
    }

    /// Takes the files appended to since the last sync (and whether the folder needs a
    /// sync), so that another thread can make them durable.
    pub(crate) fn take_unsynced(&mut self) -> Unsynced {
        let files = self
            .open
            .drain()
            .map(|(second, file)| (self.dir.join(format::slot_name(second)), file))
            .collect();
        let dir = std::mem::take(&mut self.created).then(|| self.dir.clone());
        Unsynced { files, dir }
    }

    /// Every readable entry of the file of `second`, in file order; none if it has no
    /// file.
    ///
    /// # Errors
    /// I/O errors; a file with a bad header.
    pub(crate) fn read(&self, second: u64) -> Result<Vec<Entry>, TimerError> {
        let path = self.path(second);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(TimerError::io("read", path, e)),
        };
        if bytes.is_empty() {
            // Created, then killed before its header was written.
            return Ok(Vec::new());
        }
        format::check_header(&bytes).map_err(|reason| TimerError::Corrupt {
            path: path.clone(),
            reason: reason.into(),
        })?;
        Ok(format::decode_entries(&bytes[HEADER_LEN..]))
    }

    /// The path of the file of `second`.
    pub(crate) fn path_of(&self, second: u64) -> PathBuf {
        self.path(second)
    }

    /// Removes the file of a delivered second.
    ///
    /// # Errors
    /// I/O errors other than the file being gone already.
    pub(crate) fn remove(&mut self, second: u64) -> Result<(), TimerError> {
        self.open.remove(&second);
        remove_file(&self.path(second))
    }
}

/// A slot's entries read back.
#[derive(Debug, Default)]
pub(crate) struct SlotState {
    /// Pending timers: one per queue offset (an entry indexed twice after a crash counts
    /// once), none recalled or delivered, sorted by due time then queue offset.
    pub(crate) alive: Vec<Entry>,
    /// Queue offsets recalled.
    pub(crate) recalled: BTreeSet<u64>,
    /// Queue offsets delivered.
    pub(crate) delivered: BTreeSet<u64>,
}

/// Reads a slot's entries: timers minus tombstones and delivery marks.
pub(crate) fn live(entries: &[Entry]) -> SlotState {
    let offsets = |kind: Kind| -> BTreeSet<u64> {
        entries
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.queue_offset)
            .collect()
    };
    let recalled = offsets(Kind::Tombstone);
    let delivered = offsets(Kind::Delivered);
    let mut alive: Vec<Entry> = entries
        .iter()
        .filter(|e| {
            e.kind == Kind::Timer
                && !recalled.contains(&e.queue_offset)
                && !delivered.contains(&e.queue_offset)
        })
        .copied()
        .collect();
    alive.sort_by_key(|e| (e.due_ms, e.queue_offset));
    alive.dedup_by_key(|e| e.queue_offset);
    SlotState {
        alive,
        recalled,
        delivered,
    }
}
