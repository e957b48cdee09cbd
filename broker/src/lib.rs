//! broker

pub mod groups;

pub mod store;
