//! The tokio server: accept loop, connections, request handlers, and the [`Broker`] that
//! opens the store and services and runs them until shutdown.
//!
//! Request path: `listener` accepts, `connection` cuts frames; a send goes to `send`
//! (prepared, validated once by the store, stored by the appender in arrival order), any
//! other request runs as a task that `handler` answers. Either way the answer goes back
//! through the connection's `session` to the `writer`, which frames it onto the socket.
//! Modules depend one way: `connection` → `send`, `handler` → `session` → `writer`.

mod background;
mod broker;
mod budget;
mod connection;
mod gate;
pub(crate) mod handler;
mod listener;
mod request;
pub mod resources;
pub(crate) mod response;
pub(crate) mod send;
pub(crate) mod services;
mod session;
pub(crate) mod tx_producers;
mod writer;

pub use broker::{Broker, BrokerError, RunningBroker};
