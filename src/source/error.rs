//! Why a source pipeline or one of its readers failed ([`SourceError`]), with a bounded
//! label per kind for metrics. Every part of the source imports it from here.

use super::checkpoint;
use super::format::FormatError;
use crate::clients::ClientError;

/// Why a source pipeline or one of its readers failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A MongoDB operation failed.
    #[error("{namespace}: {what}: {source}")]
    Mongo {
        /// The reader's namespace.
        namespace: String,
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        source: Box<mongodb::error::Error>,
    },
    /// The resume point is no longer in the oplog.
    #[error("{namespace}: the resume point is gone from the oplog: {source}")]
    HistoryLost {
        /// The reader's namespace.
        namespace: String,
        /// The driver's error.
        source: Box<mongodb::error::Error>,
    },
    /// MongoDB refused to resume after a fragment of an event it split (error 280, although
    /// the stream asked for fragments): the position is not lost from the oplog, and no
    /// restart at it fares better.
    #[error("{namespace}: MongoDB refused to resume after a fragment of a change event it split (`$changeStreamSplitLargeEvent`); the resume point is not lost from the oplog: {source}")]
    SplitResume {
        /// The reader's namespace.
        namespace: String,
        /// The driver's error.
        source: Box<mongodb::error::Error>,
    },
    /// MongoDB cannot return an event over 16 MiB (error 10334): a restart at the same
    /// resume token meets it again.
    #[error("{namespace}: MongoDB cannot return a change event larger than 16 MiB (error 10334); a `$project` in `pipeline` that leaves out large fields avoids it, and so does `oversize = \"skip\"` or `\"split\"` on MongoDB 6.0.9 or later (the event is read in fragments): {source}")]
    EventTooLarge {
        /// The reader's namespace.
        namespace: String,
        /// The driver's error.
        source: Box<mongodb::error::Error>,
    },
    /// The fragments of an event MongoDB split (`$changeStreamSplitLargeEvent`) do not
    /// make one event; the reader starts again before the first one.
    #[error("{namespace}: reassembling a change event MongoDB returned in fragments: {reason}")]
    Fragments {
        /// The reader's namespace.
        namespace: String,
        /// Why.
        reason: String,
    },
    /// An event could not be converted.
    #[error("converting the event {origin}: {source}")]
    Format {
        /// Namespace and document key of the event.
        origin: String,
        /// Why.
        source: FormatError,
    },
    /// An event is larger than Kafka accepts and `errors.tolerance` is `none`.
    #[error("the event {origin} for topic `{topic}` cannot be published: {reason}")]
    TooLarge {
        /// Namespace and document key of the event.
        origin: String,
        /// Its topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// librdkafka refused a record.
    #[error("producing to `{topic}`: {source}")]
    Kafka {
        /// The topic.
        topic: String,
        /// The client's error.
        source: Box<rdkafka::error::KafkaError>,
    },
    /// Kafka did not acknowledge a record.
    #[error("delivering the event {origin} to `{topic}`: {source}")]
    Delivery {
        /// Namespace and document key of the event.
        origin: String,
        /// The topic.
        topic: String,
        /// The client's error.
        source: Box<rdkafka::error::KafkaError>,
    },
    /// The broker refused to create a topic the pipeline writes to (`create_topics`): not
    /// authorised, a policy, or settings it rejects. The pipeline stops, as Kafka Connect
    /// fails the task.
    #[error("the broker refused to create the topic `{topic}` (`create_topics`): {reason}; let the daemon's principal create topics, or create the topic beforehand, then restart the pipeline")]
    TopicRefused {
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// A Kafka transaction could not be begun or committed.
    #[error("{what} the Kafka transaction: {source}")]
    Transaction {
        /// What was being done.
        what: &'static str,
        /// The client's error.
        source: Box<rdkafka::error::KafkaError>,
    },
    /// A checkpoint could not be written or read.
    #[error("checkpoint of {namespace}: {reason}")]
    Checkpoint {
        /// The reader's namespace.
        namespace: String,
        /// Why.
        reason: String,
    },
    /// The pipeline's configuration is unusable (caught at `check-config` normally).
    #[error("{namespace}: configuration: {reason}")]
    Config {
        /// The reader's namespace.
        namespace: String,
        /// Why.
        reason: String,
    },
    /// The producer stopped while a reader was sending to it.
    #[error("{namespace}: the producer is gone")]
    ProducerGone {
        /// The reader's namespace.
        namespace: String,
    },
    /// The pipeline could not start.
    #[error("starting: {0}")]
    Start(String),
}

impl SourceError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Mongo { .. } => "mongodb",
            Self::HistoryLost { .. } => "history_lost",
            Self::SplitResume { .. } => "split_resume",
            Self::Format { .. } => "format",
            Self::TooLarge { .. } => "too_large",
            Self::EventTooLarge { .. } => "event_too_large",
            Self::Fragments { .. } => "fragments",
            Self::Transaction { .. } => "transaction",
            Self::Kafka { .. } | Self::Delivery { .. } => "kafka",
            Self::TopicRefused { .. } => "topic_refused",
            Self::Checkpoint { .. } => "checkpoint",
            Self::Config { .. } => "config",
            Self::ProducerGone { .. } => "producer_gone",
            Self::Start(_) => "start",
        }
    }
}

impl From<ClientError> for SourceError {
    fn from(e: ClientError) -> Self {
        Self::Start(e.to_string())
    }
}

impl From<checkpoint::CheckpointError> for SourceError {
    fn from(e: checkpoint::CheckpointError) -> Self {
        Self::Start(e.to_string())
    }
}
