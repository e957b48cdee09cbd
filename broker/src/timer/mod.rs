//! Timer messages: a message delivered to its queue at a given time, durably, and the
//! one delay path of the broker (consumer groups' retries wait here too).
//!
//! # Design
//!
//! A timer send is stored at once, under the flush policy like any send, as a message of
//! the system topic `%TIMER%` (one queue) carrying its destination and due time
//! (`REAL_TOPIC`, `REAL_QUEUE_ID`, `DUE_AT_MS`). Nothing else needs to be durable for the
//! send to be acknowledged: the commit log is the timer log.
//!
//! One thread (`ferromq-timer`) indexes `%TIMER%` into an on-disk wheel (see
//! [`wheel`](self) and [`format`](self)): one slot file per due second holding 40-byte
//! entries (due ms, queue offset, message id, real topic id, kind, CRC). Only the second
//! being delivered is in memory, sorted by due ms, so a million pending timers cost a
//! million entries on disk and one second of them in memory. The thread sleeps until the
//! earliest due ms of that second (not a 1 s tick), then reads each due message by id
//! and puts a copy into its real queue with its own properties plus `ORIGIN_MSG_ID` (the
//! id the send was acknowledged with, which consumers see as the message id), and
//! `TIMER_DELIVER_MS`. Never early: a timer is handed out only once `now >= due`.
//!
//! A checkpoint (`<data>/timer/checkpoint`) records how far `%TIMER%` is indexed and
//! which seconds are delivered. It is saved only after the slot files are synced and the
//! delivered copies flushed, so after a SIGKILL the thread re-indexes from the
//! checkpoint (a duplicate entry is dropped when its slot loads) and redelivers at most
//! the second being delivered: nothing acknowledged is lost, and start-up reads the
//! pending slots, never the history of `%TIMER%`. The delivering thread never waits on
//! the disk for a save: it waits for the flusher to pass the delivered copies and hands
//! the slot syncs and the checkpoint write to a save thread (`ferromq-timer-save`), and
//! it indexes a burst of new timers a slice at a time between deliveries.
//!
//! Recall: the send's answer carries a recall handle (the timer message's id). A recall
//! appends a tombstone entry to the timer's slot file and syncs it before answering; a
//! timer already handed out answers "already delivered". After its due second has
//! passed, a recalled timer also answers "already delivered" (the slot is gone).
//!
//! A timer whose message was removed by retention before it was due is logged and
//! dropped; a timer whose topic was deleted meanwhile is dropped.

mod error;
mod format;
mod props;
mod saver;
mod service;
mod slots;
mod wheel;

pub use error::TimerError;
pub use service::{Scheduled, TimerConfig, TimerService, DEFAULT_MAX_TIMER_DELAY_MS};
