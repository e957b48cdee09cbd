//! FerroMQ's broker: the message store over one commit log and its consume queues,
//! consumer groups with exact acknowledgement, retry with delay and dead letters, and the
//! tokio server that puts them on the network. The `broker` binary (`src/main.rs`) reads a
//! [`Config`], starts a [`Broker`] and runs it until a signal.
//!
//! The store, groups and retry are synchronous: std threads, locks and condvars, no tokio.
//! The server is the only async code; it bridges to them through its own threads (the
//! appender) and blocking tasks, so nothing blocks a tokio worker.
//!
//! Modules:
//! - [`store`]: [`store::MessageStore`]: puts, gets, the dispatcher thread that indexes the
//!   log into consume queues, recovery, topics, disk-space reserve.
//! - [`groups`]: membership and queue assignment, committed offsets with exact acks.
//! - [`retry`]: send-back, delay levels in schedule topics, the scheduler thread, `%DLQ%`.
//! - `pop`: per-message acknowledgement: receive with invisibility leases, ack by receipt
//!   handle, change invisibility, reject; lease expiry through the retry topic.
//! - [`timer`]: timer messages (deliver at a time, recall); retries wait on it too.
//! - [`http`]: the HTTP endpoint: Prometheus `/metrics`, the JSON API, the dashboard,
//!   `/healthz` and `/readyz`.
//! - [`server`]: [`Broker`]: listener, connections, request handlers, shutdown.
//! - [`config`]: [`Config`], the TOML file and flags, validated once.
//! - `long_polling`: pulls held at a queue's head until the dispatcher indexes a message.
//! - `stats`: lock-free broker-wide counters for the broker-stats request.
//! - [`tx`]: transactions: half messages, one decision record, check-back, recovery.
//! - [`security`]: TLS on every listener, users (`config/users`), authentication, access rules.
//!
//! # On disk
//!
//! Everything lives under one data directory (`--data-dir`), owned by one broker at a
//! time. Integers are little endian; every record, frame, header and snapshot carries a
//! CRC; journals are sequences of CRC frames whose torn tail is cut at open; whole files are
//! replaced atomically (temp file, fsync, rename, fsync the folder) through the storage
//! seam ([`commitlog::storage`]).
//!
//! | path under `<data>` | format (version) | written by |
//! |---|---|---|
//! | `lock` | empty; an exclusive lock ([`commitlog::DirLock`]: std `File::try_lock`, an `flock`) held while the broker runs | store, at open |
//! | `commitlog/<start offset, 20 digits>` | segments of CRC-checked records and an end-of-segment marker, record version 1; byte table in [`commitlog::format`]; the next segment is created ahead of need | commit log: the store's single writer appends, its flusher syncs |
//! | `commitlog/checkpoint` | 20-byte meta, version 1: the durable end; recovery checks records from here | commit-log flusher, atomically |
//! | `commitlog/clean_shutdown` | 20-byte meta, version 1: the log end at a clean close; removed at open | commit log, atomically at close |
//! | `commitlog/lock` | empty; the commit log's own lock on its folder, the same [`commitlog::DirLock`] | commit log, at open |
//! | `queues/arena/<arena no, 10 digits>.cqa` | consume-queue arenas: a header block, then blocks of 20-byte entries, version 2; byte tables in [`consumequeue::format`]; allocated on disk in steps before use | consume-queue store: sends reserve blocks (growing an arena when short), the dispatcher thread fills them |
//! | `queues/journal/<generation, 20 digits>.cqj` | CRC-framed journal of queue ends, block lists and the dispatched log offset, version 2 | store dispatcher and checkpoints |
//! | `queues/snapshot` | the whole queue table at the start of a journal generation, version 2 | consume-queue store, atomically when the journal rolls |
//! | `config/topics.snap` | topic table, magic `FMTS`, version 1 (`store::topics_format`) | store, atomically when the journal is compacted |
//! | `config/topics.jnl` | CRC frames of topic puts and removes since the snapshot | store, per create or delete (shared fsync) |
//! | `config/offsets` | JSON `{"version": 1, "queues": [...]}`: committed offsets and acked ranges ([`groups::ConsumerOffsets`]) | groups, atomically when the journal is compacted |
//! | `config/offsets.jnl` | CRC frames, each a JSON batch of the queues changed since the snapshot | groups, on each persist |
//! | `config/schedule_offsets` | JSON `{"version": 1, "next": {...}}`: next offset per `%SCHEDULE%` level | retry scheduler, atomically after the log is flushed |
//! | `config/group_policies` | magic `FMGP`, version 1, CRC32, then JSON `{"groups": {...}}`: consumer groups' own retry policies (`retry::policy`) | retry service, atomically on each `mq group set` |
//! | `txn/checkpoint` | JSON `{"version": 1, "half": n, "op": n}`: where transaction recovery starts reading `%TXN_HALF%` and `%TXN_OP%` ([`tx`]) | transaction check-back loop, atomically after a commit-log flush |
//! | `index/<first log offset, 20 digits>.kix` | key index files: header, hash slots, linked entries, version 1; byte table in `store::key_index::format`; allocated on disk in 1 MiB steps before use; none until a message with a key is stored | store dispatcher (with the consume queues); removed with the log segments retention removes |
//! | `index/checkpoint` | 32 bytes, version 1: how far the key index is durable; replayed from at start | store checkpoints, atomically |
//! | `space_probe` | a moment after a failed allocation: the same size allocated for real, then deleted | store disk monitor ([`store::disk`]) |
//! | `config/users` | JSON `{"version": 1, "users": [...]}`: access keys, secrets, admin flags and access rules ([`security`]); mode 0600 | security, atomically on each `mq user` / `mq acl` change |
//! | `<name>.<random>.tmp` | an atomic replacement interrupted by a crash; never read | storage seam |
//!
//! Older layouts are read once and replaced at open: `consumequeue/<topic>/<queue>/` (one
//! file per queue, consume-queue format version 1) and the JSON `checkpoint` of format
//! version 1 are rebuilt into `queues/` from the commit log and deleted; a JSON
//! `config/topics` becomes `config/topics.snap` and is deleted.

pub mod config;
pub mod groups;
mod grpc;
pub mod ha;
pub mod http;
mod long_polling;
mod pop;
pub mod retry;
pub mod security;
pub mod server;
mod stats;
pub mod store;
pub mod timer;
pub mod tx;

pub use config::Config;
pub use server::{Broker, BrokerError, RunningBroker};
