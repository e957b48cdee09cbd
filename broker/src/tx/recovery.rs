//! The commit append (shared by commit and recovery), the start-up scan that rebuilds
//! the transaction table, and the checkpoint that bounds that scan.

use std::collections::HashMap;

use protocol::time::now_ms;
use protocol::tx::{HALF_TOPIC, OP_TOPIC};
use serde::{Deserialize, Serialize};

use super::error::TxError;
use super::records::{self, id_text, TxRecord};
use super::service::{ApplyAcks, Phase, Tx, TxService};
use crate::store::{
    fsutil, GetRequest, GetStatus, MessageId, PutMessage, PutResult, QueueOffset, RecordRef,
    TagFilter, TopicScope,
};

const SCAN_BATCH: usize = 1024;
const SCAN_MAX_BYTES: usize = 16 << 20;

/// `<data>/txn/checkpoint`: where recovery starts reading the two system topics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    /// `%TXN_HALF%` queue offset: every begin below it belongs to a finished transaction.
    half: u64,
    /// `%TXN_OP%` queue offset: no decision of a transaction begun at or after `half` lies below.
    op: u64,
}

/// What recovery found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Transactions still open (resolved by check-back).
    pub pending: usize,
    /// Committed transactions whose copies or acks were completed at start.
    pub completed: usize,
}

impl TxService {
    /// Appends the commit record of transaction `n` (saying the copies of messages
    /// `from..` follow it) and those copies, in send order, as one commit-log append, then
    /// waits until it is durable under the flush policy. On error, whether the commit may
    /// have been decided (the append happened but its durability wait failed).
    pub(super) fn append_commit(
        &self,
        n: u64,
        msgs: &[MessageId],
        from: u32,
    ) -> Result<Vec<PutResult>, (bool, TxError)> {
        let undecided = |e: TxError| (false, e);
        let mut copies: Vec<(String, u32, Vec<u8>, RecordRef)> = Vec::with_capacity(msgs.len());
        for id in msgs.iter().skip(from as usize) {
            let rec = self.store.get_by_id(*id).map_err(|e| undecided(e.into()))?;
            let view = rec.view();
            let (topic, queue_id) = records::destination(view.properties()).ok_or_else(|| {
                undecided(TxError::Corrupt("a half message without a destination"))
            })?;
            let props = records::committed_copy(view.properties()).map_err(undecided)?;
            copies.push((topic, queue_id, props, rec));
        }
        let commit_blob = records::commit(n, from);
        let now = now_ms();
        let commit_msg = [PutMessage {
            properties: &commit_blob,
            body: &[],
            born_timestamp_ms: now,
            reconsume_times: 0,
        }];
        let mut sends = vec![self
            .store
            .validate_send(TopicScope::Internal, OP_TOPIC, 0, &commit_msg[..])
            .map_err(|e| undecided(e.error.into()))?];
        // Runs of one destination, in send order: one group each.
        let mut runs: Vec<(String, u32, Vec<PutMessage<'_>>)> = Vec::new();
        for (topic, queue_id, props, rec) in &copies {
            let view = rec.view();
            let m = PutMessage {
                properties: props,
                body: view.body(),
                born_timestamp_ms: view.born_timestamp_ms(),
                reconsume_times: 0,
            };
            match runs.last_mut() {
                Some((t, q, v)) if t == topic && q == queue_id => v.push(m),
                _ => runs.push((topic.clone(), *queue_id, vec![m])),
            }
        }
        for (topic, queue_id, msgs) in &runs {
            // The topic may be created on this first write (auto-create).
            let send = self
                .store
                .validate_send(TopicScope::Internal, topic.as_str(), *queue_id, &msgs[..])
                .map_err(|e| undecided(e.error.into()))?;
            sends.push(send);
        }
        let appended = self
            .store
            .append_groups(&sends)
            .map_err(|e| undecided(e.into()))?;
        let mut results = appended.results.into_iter();
        match results.next() {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(undecided(e.into())),
            None => return Err(undecided(TxError::Corrupt("the store answered no groups"))),
        }
        let mut stored = Vec::with_capacity(copies.len());
        for (r, (topic, queue_id, msgs)) in results.zip(&runs) {
            match r {
                Ok(rs) => stored.extend(rs),
                Err(e) => tracing::error!(
                    tx = %id_text(n), topic = %topic, queue_id, lost = msgs.len(), error = %e,
                    "committed messages refused by their queue (topic deleted or shrunk meanwhile)"
                ),
            }
        }
        self.store
            .wait_durable(appended.end)
            .map_err(|e| (true, e.into()))?;
        Ok(stored)
    }

    /// Rebuilds the table from the system topics (from the checkpoint on): open
    /// transactions wait for check-back; committed ones whose copies or acks may be
    /// missing are completed (copies the crash lost are appended, acks re-applied through
    /// `apply`, which must be idempotent). Call once, before serving.
    ///
    /// # Errors
    /// Store reads or writes failed, or the checkpoint is unreadable.
    pub fn recover(&self, apply: ApplyAcks<'_>) -> Result<Recovered, TxError> {
        let cp = self.load_checkpoint()?;
        let mut txs: std::collections::BTreeMap<u64, Tx> = std::collections::BTreeMap::new();
        self.scan(HALF_TOPIC, cp.half, |rec| {
            let view = rec.view();
            match records::decode(view.properties()) {
                Some(TxRecord::Begin { group, timeout_ms }) => {
                    let tx = Tx::new(
                        group,
                        view.born_timestamp_ms(),
                        timeout_ms,
                        view.queue_offset(),
                    );
                    txs.insert(rec.offset().get(), tx);
                }
                Some(TxRecord::Message { tx, .. }) => {
                    if let Some(t) = txs.get_mut(&tx) {
                        t.msgs.push(MessageId::new(rec.offset(), rec.size()));
                        t.bytes += view.body().len() as u64;
                    }
                }
                Some(TxRecord::Ack { tx, ack }) => {
                    if let Some(t) = txs.get_mut(&tx) {
                        t.acks.push(ack);
                    }
                }
                _ => {}
            }
        })?;
        // Per transaction: its last commit record (from, where the copies follow), done?
        let mut commits: HashMap<u64, (u32, RecordRef)> = HashMap::new();
        self.scan(OP_TOPIC, cp.op, |rec| {
            let view = rec.view();
            let qo = view.queue_offset();
            let (tx, phase) = match records::decode(view.properties()) {
                Some(TxRecord::Commit { tx, from }) => {
                    commits.insert(tx, (from, rec.clone()));
                    (tx, Phase::Ending)
                }
                Some(TxRecord::Rollback { tx, reason }) => (tx, Phase::RolledBack(reason)),
                Some(TxRecord::Done { tx }) => {
                    commits.remove(&tx);
                    (tx, Phase::Committed)
                }
                _ => return,
            };
            if let Some(t) = txs.get_mut(&tx) {
                t.op_floor.get_or_insert(qo);
                t.phase = phase;
                t.finished_ms = now_ms();
            }
        })?;
        let mut report = Recovered::default();
        let now = now_ms();
        for (n, tx) in &mut txs {
            match tx.phase {
                Phase::Open => {
                    report.pending += 1;
                    tx.next_check_ms = tx.next_check_ms.max(now);
                }
                Phase::Ending => {
                    let Some((from, rec)) = commits.get(n) else {
                        continue;
                    };
                    self.complete(*n, tx, *from, rec, apply)?;
                    tx.phase = Phase::Committed;
                    report.completed += 1;
                }
                _ => {}
            }
        }
        if report.pending + report.completed > 0 {
            tracing::info!(
                pending = report.pending,
                completed = report.completed,
                "transactions recovered"
            );
        }
        self.lock().txs = txs;
        Ok(report)
    }

    /// Completes a commit found without its done record: counts the copies stored right
    /// after its last commit record, appends the missing ones behind a new commit record,
    /// applies the acks and writes the done record.
    fn complete(
        &self,
        n: u64,
        tx: &Tx,
        from: u32,
        commit: &RecordRef,
        apply: ApplyAcks<'_>,
    ) -> Result<(), TxError> {
        let want = tx.msgs.len().saturating_sub(from as usize);
        let mut present = 0usize;
        for rec in self.store.commit_log().iter_from(commit.next_offset()) {
            let Ok(rec) = rec else { break };
            if present >= want || records::tx_of(rec.view().properties()) != Some(n) {
                break;
            }
            present += 1;
        }
        let stored = from as usize + present;
        if stored < tx.msgs.len() {
            let from = u32::try_from(stored).unwrap_or(u32::MAX);
            tracing::warn!(tx = %id_text(n), stored, total = tx.msgs.len(), "completing a commit cut by a crash");
            self.append_commit(n, &tx.msgs, from).map_err(|(_, e)| e)?;
        }
        self.finish_commit(n, &tx.acks, apply)
    }

    /// Calls `f` on every record of queue 0 of `topic` from `from` on.
    fn scan(&self, topic: &str, from: u64, mut f: impl FnMut(&RecordRef)) -> Result<(), TxError> {
        let mut next = from;
        loop {
            let got = self.store.get_messages(GetRequest {
                topic,
                queue_id: 0,
                from: QueueOffset::new(next),
                max_count: SCAN_BATCH,
                max_bytes: SCAN_MAX_BYTES,
                filter: &TagFilter::All,
            })?;
            match got.status {
                GetStatus::Found => {
                    got.messages.iter().for_each(&mut f);
                    next = got.next_offset.get();
                }
                GetStatus::OffsetBelowMin { min } => next = min.get(),
                _ => return Ok(()),
            }
        }
    }

    fn load_checkpoint(&self) -> Result<Checkpoint, TxError> {
        match std::fs::read(&self.checkpoint_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                TxError::Checkpoint(format!(
                    "{} does not parse: {e}",
                    self.checkpoint_path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
            Err(e) => Err(TxError::Checkpoint(format!(
                "reading {}: {e}",
                self.checkpoint_path.display()
            ))),
        }
    }

    /// Saves where the next recovery starts unless it is still `last`, after flushing the
    /// commit log so that every finished transaction below it is durable. Forgets old
    /// finished transactions. Returns what the checkpoint holds now.
    ///
    /// # Errors
    /// The flush or the write failed (the old checkpoint stays: recovery reads more).
    pub fn save_checkpoint(&self, last: Option<(u64, u64)>) -> Result<(u64, u64), TxError> {
        let (half, op) = self.low_water(now_ms());
        if last == Some((half, op)) {
            return Ok((half, op));
        }
        self.store
            .commit_log()
            .flush()
            .map_err(|e| TxError::Store(e.into()))?;
        let cp = Checkpoint {
            version: 1,
            half,
            op,
        };
        let dir = self
            .checkpoint_path
            .parent()
            .ok_or(TxError::Checkpoint("checkpoint path has no folder".into()))?;
        std::fs::create_dir_all(dir)
            .map_err(|e| TxError::Checkpoint(format!("creating {}: {e}", dir.display())))?;
        let bytes = serde_json::to_vec(&cp).map_err(|e| TxError::Checkpoint(e.to_string()))?;
        fsutil::atomic_write_on(
            self.store.config().commitlog.storage.as_ref(),
            &self.checkpoint_path,
            &bytes,
        )?;
        Ok((half, op))
    }
}

#[cfg(test)]
mod tests;
