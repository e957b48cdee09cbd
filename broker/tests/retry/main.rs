//! Retry and dead letters against a real message store: delays, concurrent send-backs and
//! restarts of the retry service.
//!
//! `cargo test -p broker --test retry` (one module: `--test retry delays::`).

#[path = "../support/mod.rs"]
mod support;

mod concurrency;
mod delays;
mod restart;
