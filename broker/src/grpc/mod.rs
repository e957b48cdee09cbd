//! The RocketMQ 5 gRPC endpoint (`apache.rocketmq.v2.MessagingService`), so the official
//! RocketMQ 5 clients (Java, Go, Python, Node.js, Rust, C#, C++) connect unchanged, on the
//! same store as the native protocol (`--grpc-listen`, default 127.0.0.1:8081).
//!
//! Mapped onto the broker's own capabilities: SendMessage onto plain sends (a message group
//! picks the queue) and timer messages (a delivery timestamp); ReceiveMessage, AckMessage,
//! ChangeInvisibleDuration and ForwardMessageToDeadLetterQueue onto per-message
//! acknowledgement (`crate::pop`), whose delivery attempts, max reconsume times and
//! `%DLQ%<group>` are the group's retry policy, also announced in the Telemetry settings;
//! ordered delivery of message groups is the broker's (the next message of a group is
//! handed out once the previous one is acked); TRANSACTION sends and EndTransaction onto
//! the broker's transactions, whose check-backs go out on the producer's Telemetry stream. The `.proto` files are vendored in
//! `broker/proto/` and compiled by `build.rs` without a system `protoc`.
//!
//! Modules: `server` (listener, stop), `service` (the RPCs), `route`, `send`, `receive`,
//! `settings` (the Telemetry reply), `tx` (transactions and their check-backs), `convert` (messages both ways), `codes` (statuses),
//! `pb` (generated).

mod codes;
mod convert;
mod pb;
mod receive;
mod route;
mod send;
mod server;
mod service;
mod settings;
mod tx;

pub(crate) use server::GrpcServer;
