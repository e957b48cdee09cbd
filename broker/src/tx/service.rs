//! [`TxService`]: the table of transactions and the operations on them. Blocking: the
//! server calls it on its blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use protocol::time::now_ms;
use protocol::tx::{HALF_TOPIC, OP_TOPIC};

use super::error::TxError;
use super::records::{self, id_text, AckItem};
use crate::groups::ConsumerOffsets;
use crate::store::{MessageId, MessageStore, PutMessage, PutResult, TopicConfig, TopicScope};

/// Default `--tx-timeout-ms`: an open transaction is first checked back after a minute.
pub const DEFAULT_TX_TIMEOUT_MS: u64 = 60_000;
/// Default `--tx-check-interval-ms`.
pub const DEFAULT_TX_CHECK_INTERVAL_MS: u64 = 10_000;
/// Default `--tx-max-checks`.
pub const DEFAULT_TX_MAX_CHECKS: u32 = 15;
/// Default `--tx-max-messages` (acks count separately against the same number).
pub const DEFAULT_TX_MAX_MESSAGES: u32 = 10_000;
/// Default `--tx-max-bytes`: bodies of one transaction.
pub const DEFAULT_TX_MAX_BYTES: u64 = 64 << 20;
/// A finished transaction is remembered this long (so a late commit hears what became of
/// it) once nothing older is open.
pub(super) const REMEMBER_FINISHED_MS: u64 = 10 * 60_000;

/// Settings of transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxConfig {
    /// Open longer than this (unless the begin asked otherwise), a transaction is checked back.
    pub timeout_ms: u64,
    /// Time between two check-backs of one transaction.
    pub check_interval_ms: u64,
    /// Check-backs before an unresolved transaction is rolled back.
    pub max_checks: u32,
    /// Most messages (and, separately, most acks) in one transaction.
    pub max_messages: u32,
    /// Most body bytes in one transaction.
    pub max_bytes: u64,
}

impl Default for TxConfig {
    fn default() -> Self {
        Self {
            timeout_ms: DEFAULT_TX_TIMEOUT_MS,
            check_interval_ms: DEFAULT_TX_CHECK_INTERVAL_MS,
            max_checks: DEFAULT_TX_MAX_CHECKS,
            max_messages: DEFAULT_TX_MAX_MESSAGES,
            max_bytes: DEFAULT_TX_MAX_BYTES,
        }
    }
}

/// Applies a committed transaction's acknowledgements and makes them durable.
pub type ApplyAcks<'a> = &'a (dyn Fn(&[AckItem]) -> Result<(), String> + Sync);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    Open,
    /// A commit or rollback is being written.
    Ending,
    Committed,
    RolledBack(String),
}

#[derive(Debug)]
pub(super) struct Tx {
    pub(super) group: String,
    pub(super) begun_ms: u64,
    pub(super) timeout_ms: u64,
    /// Queue offset of the begin record in `%TXN_HALF%`.
    pub(super) begin_qo: u64,
    pub(super) msgs: Vec<MessageId>,
    pub(super) bytes: u64,
    pub(super) acks: Vec<AckItem>,
    pub(super) checks: u32,
    pub(super) next_check_ms: u64,
    pub(super) phase: Phase,
    /// `%TXN_OP%` offset at or below this transaction's first decision record.
    pub(super) op_floor: Option<u64>,
    pub(super) finished_ms: u64,
    /// Serialises the operations of one transaction (a send and a commit never overlap).
    pub(super) op: Arc<Mutex<()>>,
}

impl Tx {
    pub(super) fn new(group: String, begun_ms: u64, timeout_ms: u64, begin_qo: u64) -> Self {
        Self {
            group,
            begun_ms,
            timeout_ms,
            begin_qo,
            msgs: Vec::new(),
            bytes: 0,
            acks: Vec::new(),
            checks: 0,
            next_check_ms: begun_ms.saturating_add(timeout_ms),
            phase: Phase::Open,
            op_floor: None,
            finished_ms: 0,
            op: Arc::new(Mutex::new(())),
        }
    }

    pub(super) fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Committed | Phase::RolledBack(_))
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) txs: BTreeMap<u64, Tx>,
    /// Begins being written: the `%TXN_HALF%` end before each, which bounds its offset.
    pub(super) begin_floors: HashMap<u64, u64>,
    next_token: u64,
}

/// An open transaction as listed by [`TxService::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTx {
    /// The id.
    pub id: String,
    /// Its producer group.
    pub group: String,
    /// Wall-clock ms it began.
    pub begun_ms: u64,
    /// Check-backs sent.
    pub checks: u32,
    /// Messages held.
    pub messages: u32,
    /// Acks held.
    pub acks: u32,
}

/// A check-back to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The transaction.
    pub id: String,
    /// Its producer group.
    pub group: String,
    /// 1 for the first.
    pub check: u32,
}

/// Transactions: half messages, decisions, check-back scheduling. See the module doc.
#[derive(Debug)]
pub struct TxService {
    pub(super) store: Arc<MessageStore>,
    pub(super) config: TxConfig,
    pub(super) state: Mutex<State>,
    pub(super) checkpoint_path: PathBuf,
    /// Serialises read-modify-write of committed offsets by concurrent commits.
    acks_lock: Mutex<()>,
}

impl TxService {
    /// The service over `store`, creating `%TXN_HALF%` and `%TXN_OP%` (one queue each)
    /// unless they exist. Call [`TxService::recover`] before serving.
    ///
    /// # Errors
    /// The store refused to create a topic.
    pub fn open(store: Arc<MessageStore>, config: TxConfig) -> Result<Self, TxError> {
        for topic in [HALF_TOPIC, OP_TOPIC] {
            if store.topic(topic).is_none() {
                store.create_topic_scoped(TopicScope::Internal, TopicConfig::new(topic, 1))?;
            }
        }
        let checkpoint_path = store.config().data_dir.join("txn").join("checkpoint");
        Ok(Self {
            store,
            config,
            state: Mutex::new(State::default()),
            checkpoint_path,
            acks_lock: Mutex::new(()),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> TxConfig {
        self.config
    }

    /// [`apply_offset_acks`](super::apply_offset_acks), one commit at a time: each reads
    /// a queue's progress and writes it back with its acks added, so two at once would
    /// lose one's acks.
    ///
    /// # Errors
    /// As `apply_offset_acks`.
    pub fn apply_offset_acks(
        &self,
        offsets: &ConsumerOffsets,
        acks: &[AckItem],
    ) -> Result<(), String> {
        let _one = self
            .acks_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        super::acks::apply_offset_acks(offsets, acks)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn queue_end(&self, topic: &str) -> u64 {
        self.store
            .queue_range(topic, 0)
            .map_or(0, |(_, max)| max.get())
    }

    /// Opens a transaction of `group`, durably; returns its id.
    ///
    /// # Errors
    /// The store refused the begin record.
    pub fn begin(&self, group: &str, timeout_ms: Option<u64>) -> Result<String, TxError> {
        let timeout_ms = timeout_ms.unwrap_or(self.config.timeout_ms).max(1);
        let token = {
            let mut st = self.lock();
            let token = st.next_token;
            st.next_token += 1;
            st.begin_floors.insert(token, self.queue_end(HALF_TOPIC));
            token
        };
        let now = now_ms();
        let blob = records::begin(group, timeout_ms);
        let put = self.put(HALF_TOPIC, &blob, &[], now);
        let mut st = self.lock();
        st.begin_floors.remove(&token);
        let r = put?;
        let id = r.physical_offset.get();
        st.txs.insert(
            id,
            Tx::new(group.to_owned(), now, timeout_ms, r.queue_offset.get()),
        );
        Ok(id_text(id))
    }

    fn put(&self, topic: &str, props: &[u8], body: &[u8], born: u64) -> Result<PutResult, TxError> {
        let msg = PutMessage {
            properties: props,
            body,
            born_timestamp_ms: born,
            reconsume_times: 0,
        };
        let mut out = self.store.put_batch_scoped(
            TopicScope::Internal,
            topic,
            0,
            std::slice::from_ref(&msg),
        )?;
        out.pop()
            .ok_or(TxError::Corrupt("the store answered a put with no receipt"))
    }

    /// The operation lock of an open transaction.
    fn op_of(&self, id: &str) -> Result<(u64, Arc<Mutex<()>>), TxError> {
        let n = records::parse_id(id)?;
        let st = self.lock();
        let tx = st
            .txs
            .get(&n)
            .ok_or_else(|| TxError::NotFound { id: id.to_owned() })?;
        Ok((n, Arc::clone(&tx.op)))
    }

    /// Checks under the state lock that `n` is open; `Finished` names its outcome.
    fn open_tx<'s>(st: &'s mut State, id: &str, n: u64) -> Result<&'s mut Tx, TxError> {
        let tx = st
            .txs
            .get_mut(&n)
            .ok_or_else(|| TxError::NotFound { id: id.to_owned() })?;
        let outcome = match &tx.phase {
            Phase::Open => return Ok(tx),
            Phase::Ending => "being ended".to_owned(),
            Phase::Committed => "committed".to_owned(),
            Phase::RolledBack(why) => format!("rolled back ({why})"),
        };
        Err(TxError::Finished {
            id: id.to_owned(),
            outcome,
        })
    }

    /// Adds messages for queue `queue_id` of `topic` as half messages. Returns the index of
    /// the first and the transaction's message count.
    ///
    /// # Errors
    /// Unknown or finished transaction, a limit passed (`TooLarge`), a send the store
    /// refuses (bad properties, body too large, unknown topic or queue), store errors.
    pub fn send(
        &self,
        id: &str,
        topic: &str,
        queue_id: u32,
        msgs: &[PutMessage<'_>],
    ) -> Result<(u32, u32), TxError> {
        let (n, op) = self.op_of(id)?;
        let _serial = op.lock().unwrap_or_else(PoisonError::into_inner);
        let body_bytes: u64 = msgs.iter().map(|m| m.body.len() as u64).sum();
        let first = {
            let mut st = self.lock();
            let tx = Self::open_tx(&mut st, id, n)?;
            let count = (tx.msgs.len() + msgs.len()) as u64;
            self.check_limit(id, count, u64::from(self.config.max_messages), "messages")?;
            self.check_limit(id, tx.bytes + body_bytes, self.config.max_bytes, "bytes")?;
            u32::try_from(tx.msgs.len()).unwrap_or(u32::MAX)
        };
        self.store
            .validate_send(TopicScope::Client, topic, queue_id, msgs)
            .map_err(|e| TxError::Store(e.error))?;
        self.check_destination(topic, queue_id)?;
        let blobs: Vec<Vec<u8>> = msgs
            .iter()
            .zip(first..)
            .map(|(m, i)| records::half_message(n, i, topic, queue_id, m.properties))
            .collect();
        let halves: Vec<PutMessage<'_>> = msgs
            .iter()
            .zip(&blobs)
            .map(|(m, p)| PutMessage {
                properties: p,
                ..*m
            })
            .collect();
        let stored = self
            .store
            .put_batch_scoped(TopicScope::Internal, HALF_TOPIC, 0, &halves)?;
        let mut st = self.lock();
        let tx = Self::open_tx(&mut st, id, n)?;
        tx.msgs.extend(stored.iter().map(|r| r.msg_id));
        tx.bytes += body_bytes;
        Ok((first, u32::try_from(tx.msgs.len()).unwrap_or(u32::MAX)))
    }

    fn check_limit(
        &self,
        id: &str,
        would: u64,
        max: u64,
        unit: &'static str,
    ) -> Result<(), TxError> {
        if would > max {
            return Err(TxError::TooLarge {
                id: id.to_owned(),
                would_hold: would,
                max,
                unit,
            });
        }
        Ok(())
    }

    /// Whether a commit could store messages in this queue (checked again at commit).
    fn check_destination(&self, topic: &str, queue_id: u32) -> Result<(), TxError> {
        let queue_count = match self.store.topic(topic) {
            Some(t) if !t.perm.write => {
                return Err(TxError::Invalid(format!(
                    "topic {topic} does not take writes"
                )))
            }
            Some(t) => t.queue_count,
            None if self.store.config().auto_create_topics => {
                self.store.config().default_queue_count
            }
            None => return Err(crate::store::StoreError::TopicNotFound(topic.to_owned()).into()),
        };
        if queue_id >= queue_count {
            return Err(TxError::Invalid(format!(
                "topic {topic} has {queue_count} queues; there is no queue {queue_id}"
            )));
        }
        Ok(())
    }

    /// Adds acknowledgements (resolved to queue offsets) to a transaction, durably.
    /// Returns the transaction's ack count.
    ///
    /// # Errors
    /// Unknown or finished transaction, the ack limit passed, store errors.
    pub fn ack(&self, id: &str, acks: Vec<AckItem>) -> Result<u32, TxError> {
        let (n, op) = self.op_of(id)?;
        let _serial = op.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut st = self.lock();
            let tx = Self::open_tx(&mut st, id, n)?;
            let count = (tx.acks.len() + acks.len()) as u64;
            self.check_limit(id, count, u64::from(self.config.max_messages), "messages")?;
        }
        let blobs: Vec<Vec<u8>> = acks.iter().map(|a| records::ack(n, a)).collect();
        let now = now_ms();
        let puts: Vec<PutMessage<'_>> = blobs
            .iter()
            .map(|p| PutMessage {
                properties: p,
                body: &[],
                born_timestamp_ms: now,
                reconsume_times: 0,
            })
            .collect();
        self.store
            .put_batch_scoped(TopicScope::Internal, HALF_TOPIC, 0, &puts)?;
        let mut st = self.lock();
        let tx = Self::open_tx(&mut st, id, n)?;
        tx.acks.extend(acks);
        Ok(u32::try_from(tx.acks.len()).unwrap_or(u32::MAX))
    }

    /// Marks an open transaction as being ended; returns its messages and acks.
    fn set_ending(&self, id: &str, n: u64) -> Result<(Vec<MessageId>, Vec<AckItem>), TxError> {
        let floor = self.queue_end(OP_TOPIC);
        let mut st = self.lock();
        let tx = Self::open_tx(&mut st, id, n)?;
        tx.phase = Phase::Ending;
        tx.op_floor.get_or_insert(floor);
        Ok((tx.msgs.clone(), tx.acks.clone()))
    }

    fn set_phase(&self, n: u64, phase: Phase) {
        let mut st = self.lock();
        if let Some(tx) = st.txs.get_mut(&n) {
            if matches!(phase, Phase::Committed | Phase::RolledBack(_)) {
                tx.finished_ms = now_ms();
            }
            tx.phase = phase;
        }
    }

    /// Commits: one append holds the commit record and the committed copies of every
    /// message (in send order), then the acks are applied and made durable by `apply`,
    /// then the done record is written. Returns where the messages went.
    ///
    /// # Errors
    /// Unknown or finished transaction; the append failed (nothing committed, the
    /// transaction stays open); `Acks` when the acks could not be written (the commit
    /// stands; recovery applies them at the next start).
    pub fn commit(&self, id: &str, apply: ApplyAcks<'_>) -> Result<(Vec<PutResult>, u32), TxError> {
        let (n, op) = self.op_of(id)?;
        let _serial = op.lock().unwrap_or_else(PoisonError::into_inner);
        let (msgs, acks) = self.set_ending(id, n)?;
        let stored = match self.append_commit(n, &msgs, 0) {
            Ok(s) => s,
            Err((decided, e)) => {
                if !decided {
                    self.set_phase(n, Phase::Open);
                }
                return Err(e);
            }
        };
        // Still `Ending` (below the checkpoint's low-water mark) until the acks are
        // written: a crash before that must find the transaction and complete it.
        self.finish_commit(n, &acks, apply)?;
        self.set_phase(n, Phase::Committed);
        Ok((stored, u32::try_from(acks.len()).unwrap_or(u32::MAX)))
    }

    /// Applies the acks and writes the done record.
    pub(super) fn finish_commit(
        &self,
        n: u64,
        acks: &[AckItem],
        apply: ApplyAcks<'_>,
    ) -> Result<(), TxError> {
        if !acks.is_empty() {
            apply(acks).map_err(|reason| TxError::Acks {
                id: id_text(n),
                reason,
            })?;
        }
        if let Err(e) = self.put(OP_TOPIC, &records::done(n), &[], now_ms()) {
            // Only costs a repeated (idempotent) apply at the next start.
            tracing::warn!(tx = %id_text(n), error = %e, "done record of a committed transaction not written");
        }
        Ok(())
    }

    /// Rolls back: a durable rollback record carrying `reason`; the half messages are
    /// never copied. Returns the acks it held (receive-mode leases to give back).
    ///
    /// # Errors
    /// Unknown or finished transaction; the store refused the record (still open then).
    pub fn rollback(&self, id: &str, reason: &str) -> Result<Vec<AckItem>, TxError> {
        let (n, op) = self.op_of(id)?;
        let _serial = op.lock().unwrap_or_else(PoisonError::into_inner);
        let (_, acks) = self.set_ending(id, n)?;
        if let Err(e) = self.put(OP_TOPIC, &records::rollback(n, reason), &[], now_ms()) {
            self.set_phase(n, Phase::Open);
            return Err(e);
        }
        self.set_phase(n, Phase::RolledBack(reason.to_owned()));
        tracing::info!(tx = %id, reason, "transaction rolled back");
        Ok(acks)
    }
}
