//! Per-message acknowledgement (receive / ack / change invisibility / reject), RocketMQ
//! 5's POP consumption as the broker's own capability.
//!
//! # Design
//!
//! - **Mode.** A group consumes either by offsets (members heartbeat, own queues, commit)
//!   or by receive. A receive for a group with live offset members, or a heartbeat for a
//!   group that received within the session timeout or still holds leases, is refused
//!   with `GroupModeConflict`. The mode lasts while the group is in use; it is not saved.
//! - **Leases.** Each group has one [`table::GroupTable`]: per queue a cursor and the
//!   in-flight leases below it, bounded by `max_in_flight_leases` (past it a receive
//!   returns fewer messages or none and waits for room). Any receiver may get messages of
//!   any queue (queues are visited round robin, the group's retry topic among them), so
//!   many receivers share one queue.
//! - **Receipt handles** ([`protocol::receive::ReceiptHandle`]) name (broker run, lease
//!   epoch, the group table's queue slot, queue offset): four integers, so a receive
//!   writes and an ack reads them without text or allocation. A handle whose lease
//!   expired, was changed or ended is refused with `InvalidReceiptHandle` (epochs are
//!   unique in a run, so a slot reused after the table was rebuilt never matches).
//! - **Acks** go into the same committed state as exact acknowledgement (floor plus acked
//!   ranges, `ConsumerOffsets`), derived from the table: the floor is the lowest in-flight
//!   offset, the ranges are the gaps. An ack is answered once that state is written to
//!   disk (one write for all acks that arrive meanwhile), so a broker crash or restart
//!   redelivers only what was not acked. Leases are not saved: after a crash, what was in
//!   flight is simply delivered again.
//! - **Attempts survive restarts** because they live in the message: a lease that ends
//!   without an ack makes the broker copy the message at once to `%RETRY%<group>` with
//!   `reconsume_times + 1` (delivery attempt = reconsume times + 1) and mark the original
//!   done; past the group's max reconsume times the copy goes to `%DLQ%<group>` instead,
//!   at that moment. A reject copies to `%DLQ%<group>` at once. One timer task ends due
//!   leases (it sleeps until the earliest deadline; a new earlier deadline wakes it).
//! - **Long polling.** A receive with nothing ready waits on the dispatcher's wake-up for
//!   its topic and the group's retry topic (and for room, when the limit is reached),
//!   never in a sleep loop.

mod error;
mod service;
mod table;

pub(crate) use error::PopError;
pub(crate) use service::{Ctx, PopService, Received};

/// Default most in-flight leases per group (`--max-in-flight-leases`).
pub const DEFAULT_MAX_IN_FLIGHT_LEASES: u32 = 100_000;

/// Longest invisibility a receive or change may ask for: 12 hours, as RocketMQ.
pub const MAX_INVISIBLE_MS: u64 = 12 * 3_600_000;
