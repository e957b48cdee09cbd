//! The message store in-process, without the server: round trips, recovery after torn and
//! damaged files, retention and a full disk.
//!
//! `cargo test -p broker --test store` (one module: `--test store recovery::`).

#[path = "../support/mod.rs"]
mod support;

mod basic;
mod damage;
mod disk_full;
mod recovery;
mod replica;
mod retention;
