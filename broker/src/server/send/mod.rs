//! The send path, start to end: `prepare` decodes a send request and has the store
//! validate it once (the store accepts only a validated send); the `appender` stores the
//! sends of every connection in arrival order, many per commit-log append, and answers
//! each once its flush policy is met.
//!
//! Sends are not request tasks: the connection hands them to a [`SendQueue`], which stores
//! a lone one on the spot when that is safe and queues the rest for the appender thread.

mod appender;
mod prepare;

pub(crate) use appender::{Appender, SendJob, SendQueue};
pub(crate) use prepare::refused;
