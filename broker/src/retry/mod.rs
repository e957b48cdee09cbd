//! Retries with delay and dead letters: what happens to a nacked message.
//!
//! [`RetryService::send_back`] reads the delivered record by id and makes a copy with
//! `reconsume_times + 1`, its tags, keys and body, and its origin (`ORIGIN_TOPIC`,
//! `ORIGIN_MSG_ID`, `ORIGIN_QUEUE_ID`, `ORIGIN_QUEUE_OFFSET`; a retry keeps the origin of
//! the first delivery, so consumers always see the original topic and id). Past the
//! group's max reconsume times the copy goes to `%DLQ%<group>` (one queue, created on
//! demand) and stays there. Otherwise it is due after the delay of that attempt and goes
//! to `%RETRY%<group>` (one queue, created on demand) when due.
//!
//! # Per-group retry policy
//!
//! A group may have its own policy (`protocol::group_policy::RetryPolicy`): max reconsume
//! times and either a delay table or an exponential backoff. It is saved to
//! `<data>/config/group_policies` (`policy`) before the request that set it is answered
//! and applies to every retry path: a send-back's delay and dead-lettering, and the
//! dead-lettering of per-message acknowledgement when a lease ends (whose delay is the
//! lease's invisibility, chosen by the client from the same policy). Groups without one
//! use the broker's `retry_delays_ms` and `max_reconsume_times`.
//!
//! # How delays survive a restart
//!
//! RocketMQ's design, chosen because it needs nothing but the store: a delayed copy is
//! an ordinary message in a schedule topic, `%SCHEDULE%<level>` (one queue per delay
//! level), carrying `REAL_TOPIC`, `REAL_QUEUE_ID` and `DUE_AT_MS`. Within a level all
//! delays are equal, so each queue is in due order and only its head needs watching. One
//! scheduler thread serves all levels (a level's work is a read and a put, far too little
//! to need a thread each): it delivers due heads to their real topic and records per level
//! the next offset to deliver in `<data>/config/schedule_offsets`, saved atomically after
//! the commit log is flushed. A crash between delivery and save delivers those copies
//! again (at-least-once); none is lost, because progress never runs ahead of durable
//! deliveries. The thread sleeps on a condvar until the earliest head is due or the
//! store's dispatch hook reports a new schedule-topic message.
//!
//! Changing the delay table keeps parked copies: they carry their due time, and levels
//! beyond a shortened table are still served. A level whose delay grew may hold back
//! newer copies behind older, later-due ones until those are due.

mod config;
mod copy;
mod error;
mod policy;
mod progress;
mod scheduler;
mod service;
mod shared;
mod topics;

pub use config::{
    RetryConfig, DEFAULT_DELAY_LEVELS_MS, DEFAULT_MAX_RECONSUME_TIMES, MAX_DELAY_LEVELS,
};
pub use error::RetryError;
pub(crate) use service::Redelivered;
pub use service::RetryService;
pub use topics::{schedule_topic, SCHEDULE_TOPIC_PREFIX};
