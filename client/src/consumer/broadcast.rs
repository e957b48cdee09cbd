//! Broadcast consumption: every instance of a broadcast group consumes every queue of its
//! topics, and each keeps its own progress in a local file.
//!
//! The progress lives with the instance, not on the broker: an instance is identified by
//! its file, needs no id the broker must track and expire, and a restarted instance
//! resumes from its file while a new one (no file) starts at the latest message. Losing
//! the file only makes the instance start again from `start_from`.
//!
//! File format (text, one queue per line, replaced atomically on each commit):
//!
//! ```text
//! # mq broadcast progress v1 group=GROUP
//! TOPIC QUEUE_ID OFFSET [START-END ...]
//! ```
//! `OFFSET` is the commit position (everything below it handled) and each `START-END` an
//! acked range above it, as in a group commit.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use protocol::messages::{GetTopicRequest, OffsetRange, QueueCommit};

use super::group::{apply_assignment, Next};
use super::{Shared, StartFrom};
use crate::error::{Error, Result};

const HEADER: &str = "# mq broadcast progress v1";

/// Where a broadcast instance keeps its progress.
#[derive(Debug, Clone)]
pub struct BroadcastOptions {
    /// The instance's progress file; two instances must not share one.
    pub progress_file: PathBuf,
    /// Where a queue without progress in the file starts. Default latest: a new
    /// instance gets the messages sent from now on.
    pub start_from: StartFrom,
}

impl BroadcastOptions {
    /// Progress in `progress_file`, new queues from the latest message.
    pub fn new(progress_file: impl Into<PathBuf>) -> Self {
        Self {
            progress_file: progress_file.into(),
            start_from: StartFrom::Latest,
        }
    }
}

/// An instance's progress: what its file holds, and the file.
pub(crate) struct Progress {
    path: PathBuf,
    group: String,
    queues: Mutex<BTreeMap<(String, u32), QueueCommit>>,
    /// One write at a time, so an older state never replaces a newer one.
    write: tokio::sync::Mutex<()>,
}

impl Progress {
    /// Reads the file (absent: no progress yet).
    pub(crate) fn load(path: &Path, group: &str) -> Result<Self> {
        let queues = match std::fs::read_to_string(path) {
            Ok(text) => parse(&text, group).map_err(|reason| file_error(path, invalid(reason)))?,
            Err(e) if e.kind() == ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(file_error(path, e)),
        };
        Ok(Self {
            path: path.to_path_buf(),
            group: group.to_owned(),
            queues: Mutex::new(queues),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// The saved position of a queue.
    pub(crate) fn get(&self, topic: &str, queue_id: u32) -> Option<QueueCommit> {
        self.queues
            .lock()
            .ok()?
            .get(&(topic.to_owned(), queue_id))
            .cloned()
    }

    /// Records `commits` and replaces the file with the whole state.
    pub(crate) async fn save(&self, commits: Vec<QueueCommit>) -> Result<()> {
        let _one = self.write.lock().await;
        let text = {
            let mut q = self
                .queues
                .lock()
                .map_err(|_| Error::InvalidArgument("progress state poisoned".into()))?;
            for c in commits {
                q.insert((c.topic.clone(), c.queue_id), c);
            }
            render(&self.group, &q)
        };
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, text.as_bytes()))
            .await
            .map_err(|e| Error::InvalidArgument(format!("progress writer failed: {e}")))?
            .map_err(|e| file_error(&self.path, e))
    }
}

fn file_error(path: &Path, source: std::io::Error) -> Error {
    Error::ProgressFile {
        path: path.display().to_string(),
        source,
    }
}

fn invalid(reason: String) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, reason)
}

fn render(group: &str, queues: &BTreeMap<(String, u32), QueueCommit>) -> String {
    let mut out = format!("{HEADER} group={group}\n");
    for c in queues.values() {
        out.push_str(&format!("{} {} {}", c.topic, c.queue_id, c.offset));
        for r in &c.acked_above {
            out.push_str(&format!(" {}-{}", r.start, r.end));
        }
        out.push('\n');
    }
    out
}

fn parse(
    text: &str,
    group: &str,
) -> std::result::Result<BTreeMap<(String, u32), QueueCommit>, String> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let Some(owner) = header.strip_prefix(HEADER).map(str::trim) else {
        return Err(format!("not a progress file (first line {header:?})"));
    };
    if owner != format!("group={group}") {
        return Err(format!("it belongs to another group ({owner})"));
    }
    let mut out = BTreeMap::new();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |what: &str| format!("line {}: {what}: {line:?}", n + 2);
        let mut parts = line.split_whitespace();
        let topic = parts.next().ok_or_else(|| bad("no topic"))?.to_owned();
        let queue_id: u32 = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| bad("bad queue id"))?;
        let offset: u64 = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| bad("bad offset"))?;
        let mut acked_above = Vec::new();
        for r in parts {
            let (start, end) = r
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .filter(|(a, b): &(u64, u64)| a < b)
                .ok_or_else(|| bad("bad acked range"))?;
            acked_above.push(OffsetRange { start, end });
        }
        out.insert(
            (topic.clone(), queue_id),
            QueueCommit {
                topic,
                queue_id,
                offset,
                acked_above,
            },
        );
    }
    Ok(out)
}

/// Temp file, fsync, rename, fsync the folder: a crash leaves the old or the new file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(&dir)?.sync_all()
}

/// A broadcast instance's stand-in for a heartbeat: it owns every queue of its topics
/// (learning new queues as topics grow) and no retry topic.
pub(crate) async fn assign_once(shared: &Arc<Shared>) -> Result<Next> {
    let mut wanted = std::collections::BTreeSet::new();
    for s in &shared.subscriptions {
        let req = GetTopicRequest {
            topic: s.topic.clone(),
        };
        let (resp, _) = shared.conn.call(&req, &[]).await?;
        wanted.extend(
            resp.topic
                .queues
                .iter()
                .map(|q| (s.topic.clone(), q.queue_id)),
        );
    }
    apply_assignment(shared, &wanted).await?;
    Ok(Next::Later)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_and_refuses_another_groups_file() {
        let mut q = BTreeMap::new();
        q.insert(
            ("t".to_owned(), 2),
            QueueCommit {
                topic: "t".into(),
                queue_id: 2,
                offset: 7,
                acked_above: vec![OffsetRange { start: 9, end: 12 }],
            },
        );
        let text = render("g", &q);
        assert_eq!(parse(&text, "g").unwrap(), q);
        assert!(parse(&text, "other").unwrap_err().contains("another group"));
        assert!(parse("hello\n", "g").is_err());
        let broken = format!("{HEADER} group=g\nt 2 x\n");
        assert!(parse(&broken, "g").unwrap_err().contains("line 2"));
    }

    #[tokio::test]
    async fn a_saved_progress_is_loaded_by_the_next_instance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let p = Progress::load(&path, "g").unwrap();
        assert_eq!(p.get("t", 0), None);
        let c = QueueCommit {
            topic: "t".into(),
            queue_id: 0,
            offset: 5,
            acked_above: Vec::new(),
        };
        p.save(vec![c.clone()]).await.unwrap();
        assert_eq!(Progress::load(&path, "g").unwrap().get("t", 0), Some(c));
    }
}
