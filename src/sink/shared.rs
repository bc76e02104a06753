//! What every [`PartitionWriter`](super::writer::PartitionWriter) of a sink pipeline gets:
//! the pipeline's shared parts ([`WriterShared`]), its topic's settings ([`WriterSettings`]),
//! the committer of its offsets and the message telling the supervisor it failed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use rdkafka::consumer::CommitMode;
use rdkafka::error::KafkaError;

use super::convert::Converter;
use super::dead_letters::DeadLetters;
use super::error::SinkError;
use super::lease::Incarnation;
use super::namespace::Namespace;
use super::rate_limit::RateLimit;
use super::turns::WriteTurns;
use crate::budget::Budget;
use crate::config::Tolerance;
use crate::ops::metrics::Metrics;

/// Commits a partition's offset: the consumer implements it, writers only see this.
pub trait OffsetCommitter: Send + Sync {
    /// Commits `next` as the next offset to read of `topic`/`partition`.
    fn commit(
        &self,
        topic: &str,
        partition: i32,
        next: i64,
        mode: CommitMode,
    ) -> Result<(), KafkaError>;
}

/// Sent to the sink supervisor when a writer cannot go on.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct WriterFailed {
    /// `topic/partition`.
    pub partition: String,
    /// The writer's incarnation: a failure of a revoked one is not the current one's.
    pub incarnation: Incarnation,
    /// Why.
    pub error: SinkError,
}

/// What every writer of a pipeline shares.
pub struct WriterShared {
    /// The pipeline's name.
    pub pipeline: String,
    /// The MongoDB client.
    pub mongo: mongodb::Client,
    /// Commits offsets.
    pub committer: Arc<dyn OffsetCommitter>,
    /// The metrics.
    pub metrics: Metrics,
    /// The supervisor, told when a writer fails.
    pub supervisor: Recipient<WriterFailed>,
    /// The time-series collections known to exist (created by a writer, or found).
    pub time_series_ready: Mutex<HashSet<Namespace>>,
    /// The pipeline's write turns (see `turns`): what a batch holds (its records, its
    /// statements, the command, the driver's copy) is held by as many batches at most,
    /// however many partitions the pipeline has.
    pub writes_in_flight: Arc<WriteTurns>,
    /// The pipeline's memory budget: each writer takes a record's room before taking the
    /// record off its partition's queue.
    pub budget: Budget,
}

/// The settings of one writer (its topic's).
pub struct WriterSettings {
    /// Turns records into writes.
    pub converter: Arc<Converter>,
    /// `errors.tolerance`.
    pub tolerance: Tolerance,
    /// The dead letter topic, with `tolerance = "all"`.
    pub dead_letters: Option<DeadLetters>,
    /// Records per bulk write.
    pub max_batch_size: usize,
    /// How long a partial batch waits.
    pub max_batch_delay: Duration,
    /// Attempts of a bulk write (or a dead letter) that may pass on a retry.
    pub max_retries: u32,
    /// When a writer pauses between batches (`rate_limiting_*`); each writer counts its own.
    pub rate_limit: RateLimit,
    /// `stale_write_guard`: the field whose older value never overwrites a newer one.
    pub stale_write_guard: Option<String>,
    /// The sink's own `write_concern`, as the commands carry it; `None`: the connection
    /// string's.
    pub write_concern: Option<bson::RawDocumentBuf>,
}
