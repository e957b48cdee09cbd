//! broker

pub mod groups;
