//! broker

pub mod groups;

pub mod store;
pub mod retry;
