//! Why a sink pipeline stopped ([`SinkError`]), with a bounded label per kind for metrics
//! and whether a restart may get past it. Every part of the sink imports it from here.

use super::model::RecordError;

/// Why a sink pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A record cannot be written and `errors.tolerance` is `none`.
    #[error("record {position}: {error}")]
    Record {
        /// `topic/partition@offset`.
        position: String,
        /// Why.
        error: RecordError,
    },
    /// A refused record could not be sent to the dead letter topic after every retry; the
    /// pipeline restarts.
    #[error("record {position}: sending it to the dead letter topic failed: {source}")]
    DeadLetter {
        /// `topic/partition@offset`.
        position: String,
        /// The client's error.
        source: rdkafka::error::KafkaError,
    },
    /// A record arrived on the consumer's own queue instead of its partition's; the
    /// pipeline restarts from its committed offsets.
    #[error("record {position} arrived outside its partition's queue")]
    Unrouted {
        /// `topic/partition@offset`.
        position: String,
    },
    /// MongoDB kept failing a batch for a reason that may pass; the pipeline restarts.
    #[error("{partition}: writing failed after every retry: {reason}")]
    Unavailable {
        /// `topic/partition`.
        partition: String,
        /// The last failure.
        reason: String,
    },
    /// The pipeline could not start.
    #[error("starting: {0}")]
    Start(String),
}

impl SinkError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Record { error, .. } => error.stage.as_str(),
            Self::DeadLetter { .. } => "dead_letter",
            Self::Unrouted { .. } => "consumer",
            Self::Unavailable { .. } => "mongodb",
            Self::Start(_) => "start",
        }
    }

    /// Whether the failure may pass: the pipeline restarts (with backoff) instead of
    /// staying stopped.
    pub fn may_pass(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::DeadLetter { .. } | Self::Unrouted { .. }
        )
    }
}
