//! Consumer groups on the broker side: who is in a group and which queues each member
//! owns ([`GroupCoordinator`]), and how far each group got on each queue, with exact
//! acknowledgement ([`ConsumerOffsets`]), and the queue locks of ordered consumption
//! ([`QueueLocks`]).
//!
//! Both are synchronous and keep their state behind a std `Mutex`; neither blocks for
//! long, except [`ConsumerOffsets::persist`], which writes and fsyncs a file and belongs on
//! a blocking thread.

pub mod ack;
mod assignment;
mod consumer_offsets;
mod coordinator;
mod error;
mod queue_locks;

pub use assignment::{AssignmentStrategy, ContiguousEvenSplit};
pub use consumer_offsets::{ConsumerOffsets, OFFSETS_FORMAT_VERSION};
pub use coordinator::{GroupCoordinator, DEFAULT_SESSION_TIMEOUT_MS};
pub use error::OffsetsError;
pub use queue_locks::QueueLocks;
