//! broker

pub mod groups;
pub mod http;

pub mod retry;
pub mod store;

pub mod config;
mod long_polling;
pub mod server;
pub mod stats;

pub use config::Config;
pub use server::{Broker, BrokerError, RunningBroker};
