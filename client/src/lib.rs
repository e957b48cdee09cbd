//! The FerroMQ client: a multiplexed [`Connection`], admin calls, a pipelining
//! [`Producer`], a group [`PullConsumer`] with exact acknowledgement, and a push-style
//! [`PushConsumer`] running a handler on a bounded worker pool, and a
//! [`TransactionalProducer`] whose sends and acks are committed together.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
mod backoff;
mod connection;
pub mod consumer;
mod error;
mod message;
mod producer;
mod route;
mod security;
mod transaction;

pub use connection::{random_client_id, ConnectOptions, Connection, Pending};
pub use consumer::{BroadcastOptions, OrderedOptions};
pub use consumer::{
    ConsumerEvent, ConsumerOptions, Delivery, Failure, LeasedMessage, PullConsumer, PushConsumer,
    SimpleConsumer, SimpleConsumerOptions, StartFrom,
};
pub use error::{Error, Result};
pub use message::{Message, ReceivedMessage};
pub use producer::{Producer, ProducerOptions, SendHandle, SendResult, TimerHandle};
pub use protocol;
pub use protocol::messages::{DeliverAt, RecallStatus, TimerReceipt};
pub use protocol::receive::ReceiptHandle;
pub use security::{set_default_security, ClientTls, Credentials};
pub use transaction::{
    Transaction, TransactionChecker, TransactionalProducer, TxAdmin, TxResolution,
};
