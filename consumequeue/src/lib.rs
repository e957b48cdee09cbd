//! consumequeue
