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

    /// Why the pipeline stops at the record at `position` of `partition`, refused with
    /// `error`: one that may convert later (the schema registry did not answer) restarts the
    /// pipeline at it, with backoff; any other stops the pipeline, naming it.
    pub fn stopped_at(partition: String, position: String, error: RecordError) -> Self {
        if error.transient {
            Self::Unavailable {
                partition,
                reason: format!("{position}: {error}"),
            }
        } else {
            Self::Record { position, error }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::model::Stage;

    #[test]
    fn a_record_that_may_convert_later_restarts_the_pipeline_any_other_stops_it() {
        let mut transient = RecordError::new(Stage::Decode, "registry unreachable");
        transient.transient = true;
        let restart = SinkError::stopped_at("t/0".into(), "t/0@7".into(), transient);
        assert!(restart.may_pass());
        assert!(
            restart.to_string().contains("t/0@7") && restart.to_string().contains("registry"),
            "{restart}"
        );
        let record = RecordError::new(Stage::Decode, "not JSON");
        let stop = SinkError::stopped_at("t/0".into(), "t/0@7".into(), record);
        assert!(!stop.may_pass());
        assert!(matches!(&stop, SinkError::Record { position, .. } if position == "t/0@7"));
        assert_eq!(stop.kind(), "decode");
    }
}
