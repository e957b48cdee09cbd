//! The tokio server in-process over real connections: requests, the frame protocol, long
//! polling, send order, restarts, and consumer groups (their life on the broker and the
//! coordinator with consumer offsets as the server drives them).
//!
//! `cargo test -p broker --test server` (one module: `--test server long_poll::`).

#[path = "../support/mod.rs"]
mod support;

mod groups;
mod groups_lifecycle;
mod groups_rebalance;
mod long_poll;
mod protocol;
mod requests;
mod restart;
mod send_order;
