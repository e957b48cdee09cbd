//! The generated `apache.rocketmq.v2` messages and service trait (from `proto/`).
#![allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]

tonic::include_proto!("apache.rocketmq.v2");
