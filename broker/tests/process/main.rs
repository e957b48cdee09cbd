//! The real `broker` binary as a child process: SIGKILL at random moments, torn files,
//! a full disk, hostile clients in volume, and many queues.
//!
//! `cargo test -p broker --test process` (one module: `--test process kill::`). Long runs
//! are set by environment variables, listed in the README's reliability section.

#[path = "../support/mod.rs"]
mod support;

mod disk_full;
mod hostile;
mod hostile_clients;
mod kill;
mod scale;
mod torn_files;
