//! The message store (RocketMQ's DefaultMessageStore role): one commit log, a consume queue
//! per (topic, queue id), a dispatcher thread that indexes new records, and topic metadata.
//!
//! Writes go through one lock that assigns queue offsets and appends the batch to the log
//! in one call; under `FlushPolicy::Sync` the caller then waits for durability outside the
//! lock, so concurrent producers share flushes. Reads look up the consume queue and return
//! zero-copy [`RecordRef`]s into the log's mappings.
//!
//! Its files under `<data>` (`lock`, `commitlog/`, `queues/`, `config/topics.*`,
//! `space_probe`) are listed with their formats and versions in one place, the crate's
//! [on-disk map](crate#on-disk). No file exists per queue, so fds, mappings, start-up work
//! and checkpoints do not grow with the number of queues.

mod config;
pub mod disk;
mod dispatch;
mod error;
pub mod fsutil;
mod get;
pub(crate) mod journal_frame;
mod key_index;
mod message_id;
mod put;
mod queues;
mod recovery;
mod repair;
mod replica;
mod tags;
mod topic_config;
mod topics;
mod topics_format;
mod topics_journal;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use commitlog::{CommitLog, RecoveryReport};

pub use commitlog::{PhysicalOffset, RecordRef};
pub use config::StoreConfig;
pub use consumequeue::QueueOffset;
pub use disk::{DiskMonitor, DiskReserve, DiskState, DiskStatus};
pub use dispatch::DispatchListener;
pub use error::{StoreError, StoreResult};
pub use get::{GetRequest, GetResult, GetStatus};
#[doc(hidden)]
pub use key_index::fuzz_decode_and_open as fuzz_key_index;
pub use key_index::{KeyIndexConfig, KeyMatches};
pub use message_id::MessageId;
pub use put::{
    GroupsAppended, InvalidSend, PutMessage, PutRange, PutResult, ValidatedBatch, ValidatedSend,
};
pub use tags::{tag_hash, tag_hash_of, TagFilter};
pub use topic_config::{validate_topic_name, Permission, TopicConfig, TopicScope, MAX_QUEUE_COUNT};

use put::Writer;
use queues::QueueTable;
use topics::TopicTable;

/// State shared by the API and the dispatcher thread, in parts owned by the files that
/// use them: `writer` by `put`, `dispatch` by `dispatch`, `damaged` by `repair`.
pub(crate) struct Shared {
    config: StoreConfig,
    log: CommitLog,
    topics: TopicTable,
    queues: QueueTable,
    writer: Mutex<Writer>,
    dispatch: dispatch::DispatchState,
    /// Queues whose indexing failed or whose blocks were found damaged; rebuilt from the log.
    damaged: repair::Damaged,
    /// Free space of the data directory; refuses writes while the disk is full.
    disk: Arc<DiskMonitor>,
    /// Lookups by key; `None` when switched off.
    keys: Option<key_index::KeyIndex>,
}

/// The message store. `Send + Sync`; share it with `Arc`.
pub struct MessageStore {
    shared: Arc<Shared>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
    log_report: RecoveryReport,
    /// Holds `<data>/lock` for the store's lifetime.
    lock: Option<commitlog::DirLock>,
    /// Reads the free space every second; stopped when the store is dropped.
    _disk_watcher: disk::DiskWatcher,
}

impl std::fmt::Debug for MessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStore")
            .field("data_dir", &self.shared.config.data_dir)
            .finish_non_exhaustive()
    }
}

impl MessageStore {
    /// Opens the store: takes `<data>/lock`, recovers the commit log, truncates and rebuilds
    /// the consume queues to match it, then starts the dispatcher thread.
    ///
    /// # Errors
    /// `Locked` when another broker uses the directory, I/O and corruption errors, an
    /// invalid config.
    pub fn open(config: StoreConfig) -> StoreResult<Self> {
        config.validate()?;
        let lock = recovery::lock_data_dir(&config)?;
        // Under `FlushPolicy::Sync` the log shows readers only durable records and its
        // appends never wait: writers wait with `wait_durable` after releasing the store's
        // writer lock, so concurrent producers share flushes.
        let log_config = config.commitlog.clone();
        let storage = Arc::clone(&log_config.storage);
        let disk = Arc::new(DiskMonitor::new(
            &config.data_dir,
            config.disk_reserve,
            Arc::clone(&config.commitlog.storage),
        ));
        disk.poll_every_appended(config.commitlog.segment_size_bytes.min(64 << 20));
        let disk_watcher = disk
            .watch()
            .map_err(|e| StoreError::io("starting disk watcher thread", &config.data_dir, e))?;
        let (log, log_report) = CommitLog::open(log_config)?;
        log_recovery(&log_report);
        let keys = key_index::KeyIndex::open(
            config.key_index.clone(),
            &config.data_dir,
            Arc::clone(&storage),
            log.min_offset().get(),
            log.write_offset().get(),
        );
        let (queues, journaled) = QueueTable::open(&config, storage)?;
        let shared = Arc::new(Shared {
            keys,
            topics: TopicTable::load(&config.config_dir(), config.max_topics)?,
            queues,
            writer: Mutex::new(Writer::default()),
            dispatch: dispatch::DispatchState::default(),
            damaged: repair::Damaged::default(),
            disk,
            log,
            config,
        });
        shared.gate_at_open(journaled);
        shared.recover(journaled)?;
        shared.catch_up_keys(None);
        let worker = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("ferromq-dispatch".into())
            .spawn(move || worker.run_dispatcher())
            .map_err(|e| {
                StoreError::io("starting dispatcher thread", &shared.config.data_dir, e)
            })?;
        Ok(Self {
            shared,
            dispatcher: Mutex::new(Some(handle)),
            log_report,
            lock: Some(lock),
            _disk_watcher: disk_watcher,
        })
    }

    /// The free-space monitor of the data directory: its state gates writes; periodic
    /// writers report `ENOSPC` to it.
    pub fn disk(&self) -> &Arc<DiskMonitor> {
        &self.shared.disk
    }

    /// What the commit log found when it recovered at open.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.log_report
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// The underlying commit log (read access for the server: retention stats, offsets).
    pub fn commit_log(&self) -> &CommitLog {
        &self.shared.log
    }

    /// Appends a batch of messages to one queue of a client topic. Queue offsets are
    /// consecutive and assigned atomically with the append; under `FlushPolicy::Sync` this
    /// returns once the batch is durable.
    ///
    /// # Errors
    /// Bad topic name, unknown topic (without auto-create), missing write permission, queue
    /// id out of range, oversized body, malformed properties, commit-log errors.
    pub fn put_batch(
        &self,
        topic: &str,
        queue_id: u32,
        msgs: &[PutMessage<'_>],
    ) -> StoreResult<Vec<PutResult>> {
        self.shared
            .put_batch(TopicScope::Client, topic, queue_id, msgs)
    }

    /// [`MessageStore::put_batch`] for one message.
    ///
    /// # Errors
    /// As for `put_batch`.
    pub fn put(&self, topic: &str, queue_id: u32, msg: &PutMessage<'_>) -> StoreResult<PutResult> {
        let mut out = self.shared.put_batch(
            TopicScope::Client,
            topic,
            queue_id,
            std::slice::from_ref(msg),
        )?;
        out.pop().ok_or(StoreError::Closed)
    }

    /// `put_batch` for a chosen naming scope: the broker uses `TopicScope::Internal` to write
    /// `%RETRY%`/`%DLQ%` topics.
    ///
    /// # Errors
    /// As for `put_batch`.
    pub fn put_batch_scoped(
        &self,
        scope: TopicScope,
        topic: &str,
        queue_id: u32,
        msgs: &[PutMessage<'_>],
    ) -> StoreResult<Vec<PutResult>> {
        self.shared.put_batch(scope, topic, queue_id, msgs)
    }

    /// Checks a send once, for every layer above the append: the topic name for `scope`,
    /// each body against `max_body_bytes`, each property blob (read once, which also finds
    /// the tag hash), and no `DELAY` from a client. Whether the topic and queue exist and
    /// take writes is checked by the append, which holds the current state.
    ///
    /// # Errors
    /// [`InvalidSend`]: the broken rule and the message that broke it.
    pub fn validate_send<'a>(
        &self,
        scope: TopicScope,
        topic: impl Into<std::borrow::Cow<'a, str>>,
        queue_id: u32,
        msgs: impl Into<std::borrow::Cow<'a, [PutMessage<'a>]>>,
    ) -> Result<ValidatedSend<'a>, InvalidSend> {
        self.shared
            .validate_send(scope, topic.into(), queue_id, msgs.into())
    }

    /// [`MessageStore::validate_send`] for messages given as ranges of `data` (a request
    /// body, say), giving a send that owns its data: checked on one thread, appended on
    /// another through [`ValidatedBatch::send`] without being checked again.
    ///
    /// # Errors
    /// As for `validate_send`; a range outside `data` is refused as `BadProperties`.
    pub fn validate_batch(
        &self,
        scope: TopicScope,
        topic: String,
        queue_id: u32,
        data: bytes::Bytes,
        msgs: Vec<PutRange>,
    ) -> Result<ValidatedBatch, InvalidSend> {
        self.shared
            .validate_batch(scope, topic, queue_id, data, msgs)
    }

    /// Stores several groups of messages (each for one queue, each all or nothing) with one
    /// writer-lock acquisition and one commit-log append, so many small sends cost one
    /// append. A group that fails its checks is refused on its own and the others are
    /// stored. Never waits for durability, even under `FlushPolicy::Sync`: the caller
    /// acknowledges after [`MessageStore::wait_durable`] on the returned end, which also
    /// indexes the records for consumers (under async flush this call indexes them itself).
    ///
    /// # Errors
    /// The outer error: the append itself failed (commit-log error, store closed) and none
    /// of the groups was stored. Per group: as for `put_batch`.
    pub fn append_groups(&self, groups: &[ValidatedSend<'_>]) -> StoreResult<GroupsAppended> {
        self.shared.append_groups(groups)
    }

    /// [`MessageStore::append_groups`] if no other write holds the store's writer lock right
    /// now; `None` (and nothing stored) otherwise. For callers that must not block, such as
    /// a network task that would rather hand the write to a thread than wait.
    ///
    /// # Errors
    /// As for `append_groups`.
    pub fn try_append_groups(
        &self,
        groups: &[ValidatedSend<'_>],
    ) -> Option<StoreResult<GroupsAppended>> {
        self.shared.try_append_groups(groups)
    }

    /// Whether acknowledgements must wait for [`MessageStore::wait_durable`]
    /// (`FlushPolicy::Sync`).
    pub fn is_sync(&self) -> bool {
        self.shared.is_sync()
    }

    /// Blocks until the commit log is durable up to `end`, sharing the flush with every
    /// other waiter (group commit), then indexes the now durable records for consumers.
    /// Returns at once under async flush.
    ///
    /// # Errors
    /// The failed flush (the log is then poisoned).
    pub fn wait_durable(&self, end: PhysicalOffset) -> StoreResult<()> {
        self.shared.wait_durable(end)
    }

    /// Reads up to `req.max_count` dispatched messages (and about `req.max_bytes`; at least
    /// one message when any matches) from `req.from`, skipping messages `req.filter` rejects.
    ///
    /// # Errors
    /// Unknown topic or queue, missing read permission, commit-log read errors, an index
    /// entry that does not match its record.
    pub fn get_messages(&self, req: GetRequest<'_>) -> StoreResult<GetResult> {
        self.shared.get_messages(req)
    }

    /// The record a message id points at.
    ///
    /// # Errors
    /// `MessageNotFound` when nothing (or something else) lives there, commit-log errors.
    pub fn get_by_id(&self, id: MessageId) -> StoreResult<RecordRef> {
        self.shared.get_by_id(id)
    }

    /// The messages of `topic` whose keys (the space-separated `KEYS` property) include
    /// `key`, stored within `[from_ms, to_ms]`: the newest `max` of them, oldest first.
    /// Each is read back and checked before it is returned.
    ///
    /// # Errors
    /// `KeyIndexOff`, `KeyIndexBehind` while the index is built or after a write failure,
    /// `KeyIndexDamaged`, an empty key or `max` of 0 or `from_ms > to_ms`
    /// (`InvalidKeyQuery`), unknown topic, missing read permission.
    pub fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        from_ms: u64,
        to_ms: u64,
        max: usize,
    ) -> StoreResult<KeyMatches> {
        self.shared.query_by_key(topic, key, from_ms, to_ms, max)
    }

    /// First queue offset whose message was stored at or after `timestamp_ms` (the max
    /// offset when all are older).
    ///
    /// # Errors
    /// Unknown topic or queue.
    pub fn search_offset_by_time(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: u64,
    ) -> StoreResult<QueueOffset> {
        self.shared
            .search_offset_by_time(topic, queue_id, timestamp_ms)
    }

    /// `(min, max)` dispatched offsets of a queue (max exclusive).
    ///
    /// # Errors
    /// Unknown topic or queue.
    pub fn queue_range(
        &self,
        topic: &str,
        queue_id: u32,
    ) -> StoreResult<(QueueOffset, QueueOffset)> {
        self.shared.queue_range(topic, queue_id)
    }

    /// Creates or updates a topic (client naming rules).
    ///
    /// # Errors
    /// Bad name or queue count, I/O errors persisting the topic table.
    pub fn create_topic(&self, topic: TopicConfig) -> StoreResult<TopicConfig> {
        self.shared.create_topic(TopicScope::Client, topic)
    }

    /// Creates or updates a topic under the given naming scope.
    ///
    /// # Errors
    /// As for `create_topic`.
    pub fn create_topic_scoped(
        &self,
        scope: TopicScope,
        topic: TopicConfig,
    ) -> StoreResult<TopicConfig> {
        self.shared.create_topic(scope, topic)
    }

    /// Deletes a topic's metadata and consume queues. Its records stay in the commit log
    /// until retention but are never served again, even if the name is reused.
    ///
    /// # Errors
    /// I/O errors.
    pub fn delete_topic(&self, name: &str) -> StoreResult<bool> {
        self.shared.delete_topic(name)
    }

    /// A topic's config, if it exists.
    pub fn topic(&self, name: &str) -> Option<TopicConfig> {
        self.shared.topics.get(name)
    }

    /// Every topic, in name order.
    pub fn topics(&self) -> Vec<TopicConfig> {
        self.shared.topics.all()
    }

    /// Up to `max` topics that `keep` accepts, named after `after` (from the first when
    /// `None`), in name order: a page of a topic listing.
    pub fn topics_page(
        &self,
        after: Option<&str>,
        max: usize,
        keep: impl Fn(&TopicConfig) -> bool,
    ) -> Vec<TopicConfig> {
        self.shared.topics.page(after, max, keep)
    }

    /// Registers a hook called from the dispatcher thread with `(topic, queue id, new max
    /// offset)` whenever a queue grows. It must be quick and must not block (wake a task).
    pub fn on_dispatch(&self, listener: DispatchListener) {
        self.shared
            .dispatch
            .listeners
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(listener);
    }

    /// Blocks until the queue's max offset exceeds `offset` or `timeout` passes; returns
    /// whether a message is available. For tests and blocking callers; the server uses
    /// [`MessageStore::on_dispatch`].
    pub fn wait_for_message(
        &self,
        topic: &str,
        queue_id: u32,
        offset: QueueOffset,
        timeout: Duration,
    ) -> bool {
        self.shared
            .wait_for_message(topic, queue_id, offset, timeout)
    }

    /// Commit-log offset up to which records are indexed.
    pub fn dispatched_offset(&self) -> PhysicalOffset {
        PhysicalOffset::new(self.shared.dispatch.dispatched.load(Ordering::Acquire))
    }

    /// Applies commit-log retention now and drops consume-queue segments below the new
    /// minimum (also done periodically in the background).
    ///
    /// # Errors
    /// Commit-log or consume-queue I/O errors.
    pub fn apply_retention(&self, now_ms: u64) -> StoreResult<()> {
        self.shared.log.apply_retention(now_ms)?;
        self.shared.trim_queues()
    }

    /// Flushes the commit log and checkpoints the consume queues.
    ///
    /// # Errors
    /// I/O errors.
    pub fn flush(&self) -> StoreResult<()> {
        self.shared.log.flush()?;
        self.shared.checkpoint()
    }

    /// Where the blocks of a queue sit (arena file, byte offset), in block order; empty for
    /// an unknown queue. For damage tests, which must not depend on the layout.
    pub fn debug_queue_blocks(&self, topic: &str, queue_id: u32) -> Vec<(std::path::PathBuf, u64)> {
        self.shared
            .queues
            .get(topic, queue_id)
            .map(|q| q.debug_block_locations())
            .unwrap_or_default()
    }

    /// Number of consume-queue arena files (each `arena_size_bytes` long, allocated in steps).
    pub fn queue_arena_count(&self) -> u32 {
        self.shared.queues.store().arena_count()
    }

    /// Stops the dispatcher after it indexed everything visible, flushes everything and
    /// closes the commit log (writing its clean-shutdown marker).
    ///
    /// # Errors
    /// I/O errors while flushing or closing.
    pub fn close(mut self) -> StoreResult<()> {
        self.stop_dispatcher();
        self.shared.dispatch_all()?;
        self.shared.checkpoint()?;
        // The data-directory lock is released only after the log is closed.
        let lock = self.lock.take();
        let shared = Arc::clone(&self.shared);
        drop(self);
        let result = match Arc::try_unwrap(shared) {
            Ok(shared) => shared.log.close(),
            // Only the dispatcher ever clones `shared`, and it has been joined.
            Err(shared) => shared.log.flush(),
        };
        drop(lock);
        Ok(result?)
    }

    fn stop_dispatcher(&self) {
        self.shared.dispatch.signal.stop();
        let handle = self
            .dispatcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            // A panicked dispatcher has nothing left to clean up; closing proceeds.
            let _ = h.join();
        }
    }
}

impl Drop for MessageStore {
    fn drop(&mut self) {
        self.stop_dispatcher();
    }
}

#[cfg(test)]
mod tests;

/// Says what commit-log recovery dropped, so an operator learns about lost or damaged data.
fn log_recovery(report: &RecoveryReport) {
    if let Some(d) = &report.dropped {
        tracing::warn!(
            from = %d.from,
            to = %d.to,
            reason = ?d.reason,
            corruption_followed_by_valid_records = report.corruption_followed_by_valid_records,
            "commit log recovery dropped a damaged or torn tail"
        );
    }
    if !report.removed_segments.is_empty() {
        tracing::warn!(
            segments = ?report.removed_segments,
            recovered_end = %report.recovered_end,
            "commit log recovery removed segments beyond the recovered end"
        );
    }
}
