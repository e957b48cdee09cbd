//! Topic metadata: names, queue counts, permissions; persisted as a journal over a
//! snapshot in `<data>/config/` (see [`super::topics_format`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use super::topic_config::{TopicConfig, MAX_QUEUE_COUNT};
use super::topics_format::{encode_snapshot, Change};
use super::topics_journal::Journal;
use super::{StoreError, StoreResult};

/// The pretty-printed JSON file of earlier versions, read once as the first snapshot.
#[derive(Serialize, Deserialize)]
struct LegacyTopicsFile {
    version: u32,
    topics: Vec<TopicConfig>,
}

const LEGACY_TOPICS_FILE_VERSION: u32 = 1;

/// Broker-owned topics that never count against the topic limit: one per retry delay
/// level, needed for every group's retries even when the limit is reached.
const UNLIMITED_PREFIX: &str = "%SCHEDULE%";

/// Whether a topic counts against the limit: not the schedule topics, nor the timer's,
/// nor the two of transactions.
fn is_limited(name: &str) -> bool {
    !name.starts_with(UNLIMITED_PREFIX)
        && name != protocol::names::TIMER_TOPIC
        && name != protocol::tx::HALF_TOPIC
        && name != protocol::tx::OP_TOPIC
}

/// The in-memory topic table, each change journaled to disk before it is acknowledged.
///
/// Readers take only the table's `RwLock`, and only for in-memory work. Changes are made
/// one at a time under the journal's writer lock (taken first): the table is updated and
/// the frame written, then both locks are released and the change waits for the fsync it
/// shares with every change written meanwhile. A change is visible to readers from the
/// moment it is written, a moment before it is durable; its caller learns of it only once
/// it is durable.
#[derive(Debug)]
pub(crate) struct TopicTable {
    topics: RwLock<BTreeMap<String, TopicConfig>>,
    journal: Journal,
    max_topics: u32,
}

impl TopicTable {
    /// Loads `<config_dir>/topics.snap` and replays `topics.jnl` over it; without either,
    /// reads the JSON file `topics` of earlier versions once and makes it the snapshot.
    /// At most `max_topics` topics (schedule topics aside) may exist; more are refused.
    pub(crate) fn load(config_dir: &Path, max_topics: u32) -> StoreResult<Self> {
        let (journal, topics) = Journal::open(config_dir, read_legacy)?;
        Ok(Self {
            topics: RwLock::new(topics),
            journal,
            max_topics,
        })
    }

    pub(crate) fn get(&self, name: &str) -> Option<TopicConfig> {
        self.read().get(name).cloned()
    }

    /// Runs `f` on the topic without cloning it.
    pub(crate) fn with<R>(&self, name: &str, f: impl FnOnce(Option<&TopicConfig>) -> R) -> R {
        f(self.read().get(name))
    }

    pub(crate) fn all(&self) -> Vec<TopicConfig> {
        self.read().values().cloned().collect()
    }

    /// Up to `max` topics that `keep` accepts, named after `after` (from the first when
    /// `None`), in name order.
    pub(crate) fn page(
        &self,
        after: Option<&str>,
        max: usize,
        keep: impl Fn(&TopicConfig) -> bool,
    ) -> Vec<TopicConfig> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_owned()));
        self.read()
            .range::<String, _>((start, Bound::Unbounded))
            .map(|(_, t)| t)
            .filter(|t| keep(t))
            .take(max)
            .cloned()
            .collect()
    }

    /// Creates or updates a topic; an update keeps `created_at_physical`. Returns the stored
    /// config. `created_at_physical` is used only for a new topic.
    pub(crate) fn upsert(
        &self,
        mut topic: TopicConfig,
        created_at_physical: u64,
    ) -> StoreResult<TopicConfig> {
        if topic.queue_count == 0 || topic.queue_count > MAX_QUEUE_COUNT {
            return Err(StoreError::InvalidConfig(format!(
                "queue_count must be in 1..={MAX_QUEUE_COUNT}, got {}",
                topic.queue_count
            )));
        }
        self.change(|topics| {
            match topics.get(&topic.name) {
                Some(old) => topic.created_at_physical = old.created_at_physical,
                None => {
                    self.check_limit(topics, &topic.name)?;
                    topic.created_at_physical = created_at_physical;
                }
            }
            Ok(Some((Change::Put(topic.clone()), topic.clone())))
        })
        .map(|t| t.unwrap_or(topic))
    }

    /// Creates the topic unless it exists; returns the stored config either way.
    pub(crate) fn get_or_create(
        &self,
        topic: TopicConfig,
        created_at_physical: u64,
    ) -> StoreResult<TopicConfig> {
        if let Some(t) = self.get(&topic.name) {
            return Ok(t);
        }
        let mut existing = None;
        let created = self.change(|topics| {
            if let Some(t) = topics.get(&topic.name) {
                existing = Some(t.clone());
                return Ok(None);
            }
            self.check_limit(topics, &topic.name)?;
            let mut topic = topic.clone();
            topic.created_at_physical = created_at_physical;
            Ok(Some((Change::Put(topic.clone()), topic)))
        })?;
        created
            .or(existing)
            .ok_or_else(|| StoreError::TopicNotFound(topic.name.clone()))
    }

    /// Removes a topic; returns it when it existed.
    pub(crate) fn remove(&self, name: &str) -> StoreResult<Option<TopicConfig>> {
        self.change(|topics| {
            Ok(topics
                .get(name)
                .map(|old| (Change::Remove(name.to_string()), old.clone())))
        })
    }

    /// Lowers creation offsets above `log_end`: after the log lost its tail, new records of
    /// such a topic land below the old creation offset and must still be dispatched.
    pub(crate) fn clamp_created_at(&self, log_end: u64) -> StoreResult<()> {
        let stale: Vec<TopicConfig> = self
            .read()
            .values()
            .filter(|t| t.created_at_physical > log_end)
            .cloned()
            .collect();
        for mut t in stale {
            t.created_at_physical = log_end;
            self.change(|_| Ok(Some((Change::Put(t.clone()), ()))))?;
        }
        Ok(())
    }

    /// Makes one change: `decide` looks at the table and returns the change to make (and
    /// what to return), or `None` for no change. The change is applied in memory and
    /// journaled under the writer lock, then made durable outside every lock. A failed
    /// journal write undoes the in-memory change, so the table always matches the disk.
    fn change<R>(
        &self,
        decide: impl FnOnce(&BTreeMap<String, TopicConfig>) -> StoreResult<Option<(Change, R)>>,
    ) -> StoreResult<Option<R>> {
        let mut writer = self.journal.writer()?;
        let (change, out, undo) = {
            let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
            let Some((change, out)) = decide(&topics)? else {
                return Ok(None);
            };
            let name = match &change {
                Change::Put(t) => t.name.clone(),
                Change::Remove(n) => n.clone(),
            };
            let undo = match topics.get(&name) {
                Some(old) => Change::Put(old.clone()),
                None => Change::Remove(name),
            };
            change.clone().apply(&mut topics);
            (change, out, undo)
        };
        let seq = match writer.append(&change) {
            Ok(seq) => seq,
            Err(e) => {
                undo.apply(&mut self.topics.write().unwrap_or_else(PoisonError::into_inner));
                return Err(e);
            }
        };
        if writer.wants_compaction() {
            // Encoded under the writer lock, so no change slips between the snapshot and
            // the emptied journal; readers only wait for the copy.
            let snapshot = encode_snapshot(&self.read());
            writer.compact(&snapshot);
        }
        drop(writer);
        self.journal.sync_to(seq)?;
        Ok(Some(out))
    }

    /// Refuses a new topic past the limit.
    fn check_limit(&self, topics: &BTreeMap<String, TopicConfig>, name: &str) -> StoreResult<()> {
        if !is_limited(name) {
            return Ok(());
        }
        let limited = topics.keys().filter(|n| is_limited(n)).count();
        if limited >= self.max_topics as usize {
            return Err(StoreError::TopicLimit {
                topic: name.chars().take(200).collect(),
                limit: self.max_topics,
            });
        }
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, TopicConfig>> {
        self.topics.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads the JSON topics file of earlier versions, if there is one.
fn read_legacy(path: &Path) -> StoreResult<Option<BTreeMap<String, TopicConfig>>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("reading", path, e)),
    };
    let file: LegacyTopicsFile =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::CorruptedFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if file.version != LEGACY_TOPICS_FILE_VERSION {
        return Err(StoreError::CorruptedFile {
            path: path.to_path_buf(),
            reason: format!("unsupported version {}", file.version),
        });
    }
    Ok(Some(
        file.topics
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect(),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn load(dir: &Path) -> TopicTable {
        TopicTable::load(dir, 10_000).unwrap()
    }

    #[test]
    fn persists_and_reloads() {
        let dir = tempfile::TempDir::new().unwrap();
        let config = dir.path().join("config");
        let t = load(&config);
        t.upsert(TopicConfig::new("a", 4), 7).unwrap();
        let mut b = TopicConfig::new("b", 2);
        b.perm.write = false;
        t.upsert(b.clone(), 9).unwrap();
        // An update keeps the creation offset.
        t.upsert(TopicConfig::new("a", 8), 100).unwrap();
        assert!(t.upsert(TopicConfig::new("c", 0), 0).is_err());
        assert_eq!(t.remove("zz").unwrap(), None);
        let t = load(&config);
        let a = t.get("a").unwrap();
        assert_eq!((a.queue_count, a.created_at_physical), (8, 7));
        assert!(!t.get("b").unwrap().perm.write);
        assert!(t.remove("a").unwrap().is_some());
        let t = load(&config);
        assert_eq!(t.all().len(), 1);
        std::fs::write(config.join("topics.snap"), b"{nope").unwrap();
        assert!(matches!(
            TopicTable::load(&config, 10),
            Err(StoreError::CorruptedFile { .. })
        ));
    }

    #[test]
    fn the_old_json_file_becomes_the_first_snapshot() {
        let dir = tempfile::TempDir::new().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        let mut old = TopicConfig::new("orders", 3);
        old.created_at_physical = 42;
        let json = serde_json::to_vec_pretty(&LegacyTopicsFile {
            version: LEGACY_TOPICS_FILE_VERSION,
            topics: vec![old.clone(), TopicConfig::new("%RETRY%g", 1)],
        })
        .unwrap();
        std::fs::write(config.join("topics"), json).unwrap();
        let t = load(&config);
        assert_eq!(t.get("orders"), Some(old.clone()));
        assert!(!config.join("topics").exists(), "read once");
        assert!(config.join("topics.snap").exists());
        t.upsert(TopicConfig::new("more", 1), 50).unwrap();
        let t = load(&config);
        assert_eq!(t.get("orders"), Some(old));
        assert_eq!(t.all().len(), 3);
    }

    #[test]
    fn a_create_appends_a_frame_and_the_snapshot_is_rewritten_only_past_twice_its_size() {
        let dir = tempfile::TempDir::new().unwrap();
        let config = dir.path().join("config");
        let t = load(&config);
        let jnl = config.join("topics.jnl");
        let mut compactions = 0;
        let mut last_len = 0;
        for i in 0..1_200u32 {
            t.upsert(TopicConfig::new(format!("topic-{i:05}"), 4), u64::from(i))
                .unwrap();
            let len = std::fs::metadata(&jnl).unwrap().len();
            if len < last_len {
                compactions += 1;
                let snap = std::fs::metadata(config.join("topics.snap")).unwrap().len();
                assert!(last_len * 2 >= snap, "compacted at {last_len} for {snap}");
            } else if i > 0 {
                assert!(len - last_len < 64, "one small frame per create");
            }
            last_len = len;
        }
        // 1,200 creates of ~40-byte frames: a compaction or two, not one per create.
        assert!((1..5).contains(&compactions), "{compactions}");
        let t = load(&config);
        assert_eq!(t.all().len(), 1_200);
        assert_eq!(t.get("topic-01199").unwrap().created_at_physical, 1_199);
    }

    #[test]
    fn a_torn_journal_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::TempDir::new().unwrap();
        let config = dir.path().join("config");
        let t = load(&config);
        t.upsert(TopicConfig::new("a", 1), 0).unwrap();
        t.upsert(TopicConfig::new("b", 1), 0).unwrap();
        drop(t);
        let jnl = config.join("topics.jnl");
        let len = std::fs::metadata(&jnl).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&jnl)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let t = load(&config);
        assert!(t.get("a").is_some() && t.get("b").is_none());
        t.upsert(TopicConfig::new("c", 1), 0).unwrap();
        let t = load(&config);
        assert_eq!(t.all().len(), 2);
    }

    #[test]
    fn the_topic_limit_refuses_new_names_but_not_updates_or_schedule_topics() {
        let dir = tempfile::TempDir::new().unwrap();
        let t = TopicTable::load(dir.path(), 2).unwrap();
        t.upsert(TopicConfig::new("a", 1), 0).unwrap();
        t.get_or_create(TopicConfig::new("b", 1), 0).unwrap();
        let err = t.get_or_create(TopicConfig::new("c", 1), 0).unwrap_err();
        assert!(
            matches!(err, StoreError::TopicLimit { limit: 2, .. }),
            "{err}"
        );
        assert!(t.upsert(TopicConfig::new("c", 1), 0).is_err());
        assert!(t.get("c").is_none());
        t.upsert(TopicConfig::new("a", 5), 0).unwrap();
        t.upsert(TopicConfig::new("%SCHEDULE%3", 1), 0).unwrap();
        t.remove("b").unwrap();
        t.upsert(TopicConfig::new("c", 1), 0).unwrap();
    }

    #[test]
    fn concurrent_creates_share_syncs_and_all_survive() {
        let dir = tempfile::TempDir::new().unwrap();
        let config = dir.path().join("config");
        let t = std::sync::Arc::new(load(&config));
        let threads: Vec<_> = (0..8)
            .map(|n| {
                let t = std::sync::Arc::clone(&t);
                std::thread::spawn(move || {
                    for i in 0..200 {
                        t.get_or_create(TopicConfig::new(format!("t{n}-{i}"), 2), 1)
                            .unwrap();
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        drop(t);
        assert_eq!(load(&config).all().len(), 1_600);
    }

    /// Unmounts a test tmpfs on drop.
    struct Mounted(std::path::PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    #[test]
    fn a_create_on_a_full_disk_fails_as_disk_full_and_changes_nothing() {
        // Only root may mount the small tmpfs.
        if !nix_is_root() {
            eprintln!("skipped: needs root to mount a small tmpfs");
            return;
        }
        let dir = tempfile::TempDir::new().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: mounting a tmpfs failed");
            return;
        }
        let _mounted = Mounted(dir.path().to_path_buf());
        let config = dir.path().join("config");
        let t = load(&config);
        let filler = dir.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![1u8; 4096];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        drop(f);
        let err = t.upsert(TopicConfig::new("a", 1), 0).unwrap_err();
        match &err {
            StoreError::Io { source, .. } => {
                assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{err}");
            }
            other => panic!("expected ENOSPC, got {other}"),
        }
        assert!(t.get("a").is_none(), "the table is unchanged");
        std::fs::remove_file(&filler).unwrap();
        t.upsert(TopicConfig::new("a", 1), 0).unwrap();
        drop(t);
        assert_eq!(load(&config).all().len(), 1);
    }

    fn nix_is_root() -> bool {
        std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                == Some("0")
        })
    }
}
