//! mongo-kafka-bridge: MongoDB change streams → Kafka topics (source pipelines) and Kafka
//! topics → MongoDB collections (sink pipelines), as actix actors in one process.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod backoff;
pub mod budget;
pub mod chunks;
pub mod cli;
pub mod clients;
pub mod codec;
pub mod config;
pub mod daemon;
pub mod dead_letter;
pub mod ops;
pub mod pipeline;
pub mod sink;
pub mod source;
pub mod supervisor;

/// Mailbox capacity of actors that only receive control messages (stop, reload).
pub const CONTROL_MAILBOX_CAPACITY: usize = 16;
