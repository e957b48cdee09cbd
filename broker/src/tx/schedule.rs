//! What the check-back loop and `mq tx list` read: the open transactions, the check-backs
//! due, and the low-water marks of the recovery checkpoint.

use protocol::tx::{HALF_TOPIC, OP_TOPIC};

use super::records::{self, id_text};
use super::service::{Check, OpenTx, Phase, TxService, REMEMBER_FINISHED_MS};

impl TxService {
    /// The open transactions (and those being ended), oldest first.
    pub fn list(&self) -> Vec<OpenTx> {
        let st = self.lock();
        st.txs
            .iter()
            .filter(|(_, t)| matches!(t.phase, Phase::Open | Phase::Ending))
            .map(|(id, t)| OpenTx {
                id: id_text(*id),
                group: t.group.clone(),
                begun_ms: t.begun_ms,
                checks: t.checks,
                messages: u32::try_from(t.msgs.len()).unwrap_or(u32::MAX),
                acks: u32::try_from(t.acks.len()).unwrap_or(u32::MAX),
            })
            .collect()
    }

    /// Open transactions due for a check-back at `now`, counted as checked; and those past
    /// the check limit, to roll back (with the reason to record).
    pub fn due(&self, now: u64) -> (Vec<Check>, Vec<(String, String)>) {
        let (mut checks, mut expired) = (Vec::new(), Vec::new());
        let mut st = self.lock();
        for (id, tx) in &mut st.txs {
            if tx.phase != Phase::Open || now < tx.next_check_ms {
                continue;
            }
            if tx.checks >= self.config.max_checks {
                expired.push((
                    id_text(*id),
                    format!(
                        "unresolved after {} check-backs to producer group {} (timeout {} ms, one check every {} ms)",
                        tx.checks, tx.group, tx.timeout_ms, self.config.check_interval_ms
                    ),
                ));
                // Not picked again while the rollback is written.
                tx.next_check_ms = u64::MAX;
                continue;
            }
            tx.checks += 1;
            tx.next_check_ms = now.saturating_add(self.config.check_interval_ms);
            checks.push(Check {
                id: id_text(*id),
                group: tx.group.clone(),
                check: tx.checks,
            });
        }
        (checks, expired)
    }

    /// Puts a transaction picked for expiry back in the check schedule (its rollback
    /// could not be written).
    pub fn retry_expiry(&self, id: &str, now: u64) {
        if let Ok(n) = records::parse_id(id) {
            if let Some(tx) = self.lock().txs.get_mut(&n) {
                tx.next_check_ms = now.saturating_add(self.config.check_interval_ms);
            }
        }
    }

    /// `(begin queue offset bound, op queue offset bound)` below which every transaction
    /// record belongs to a transaction that is finished: where recovery may start reading.
    /// Forgets finished transactions below the first bound once remembered long enough.
    pub(super) fn low_water(&self, now: u64) -> (u64, u64) {
        let mut st = self.lock();
        let half_end = self.queue_end(HALF_TOPIC);
        let op_end = self.queue_end(OP_TOPIC);
        let half = st
            .txs
            .values()
            .filter(|t| !t.is_done())
            .map(|t| t.begin_qo)
            .chain(st.begin_floors.values().copied())
            .fold(half_end, u64::min);
        st.txs.retain(|_, t| {
            !(t.is_done() && t.begin_qo < half && t.finished_ms + REMEMBER_FINISHED_MS < now)
        });
        let op = st
            .txs
            .values()
            .filter(|t| t.begin_qo >= half)
            .filter_map(|t| t.op_floor)
            .fold(op_end, u64::min);
        (half, op)
    }
}
