//! Checkpoints: how a reader's position is stored (a compacted Kafka topic, keyed by
//! pipeline and reader, like Kafka Connect's offsets topic). Which position may be stored
//! is the ledger's business (`ledger.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bson::{Bson, Document};
use mongodb::change_stream::event::ResumeToken;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::copy::CopyProgress;
use super::model::Position;
use crate::clients::{kafka, ClientError};
use crate::config::KafkaConfig;

/// Where a reader is: the key of its checkpoint record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CheckpointKey {
    /// The pipeline's name.
    pub pipeline: String,
    /// The reader's namespace (`db.coll`, `db`, `db./regex/` or `*`).
    pub namespace: String,
}

/// The stored position of a reader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The resume token, as canonical extended JSON.
    pub resume_token: serde_json::Value,
    /// While existing documents are copied: how far the copy got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyProgress>,
}

impl Checkpoint {
    /// A checkpoint at `position`.
    pub fn new(position: &Position) -> Result<Self, bson::ser::Error> {
        Ok(Self {
            resume_token: bson::to_bson(&position.token)?.into_canonical_extjson(),
            copy: position.copy.as_deref().cloned(),
        })
    }

    /// The stored position, or why it is unreadable.
    pub fn position(&self) -> Result<Position, String> {
        let bson = Bson::try_from(self.resume_token.clone()).map_err(|e| e.to_string())?;
        Ok(Position {
            token: bson::from_bson(bson).map_err(|e| e.to_string())?,
            copy: self.copy.clone().map(Arc::new),
        })
    }
}

/// Why checkpoints could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The Kafka client could not be built.
    #[error(transparent)]
    Client(#[from] Box<ClientError>),
    /// Kafka refused or did not answer.
    #[error("checkpoint topic `{topic}`: {what}: {source}")]
    Kafka {
        /// The checkpoint topic.
        topic: String,
        /// What was being done.
        what: &'static str,
        /// The client's error.
        source: rdkafka::error::KafkaError,
    },
}

/// Creates the compacted checkpoint topic unless it exists.
pub async fn ensure_topic(kafka_config: &KafkaConfig, topic: &str) -> Result<(), CheckpointError> {
    let admin = kafka::admin(kafka_config).map_err(Box::new)?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
    let results = admin
        .create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(kafka_config.request_timeout)),
        )
        .await
        .map_err(|source| CheckpointError::Kafka {
            topic: topic.to_owned(),
            what: "creating the topic",
            source,
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(CheckpointError::Kafka {
                    topic: topic.to_owned(),
                    what: "creating the topic",
                    source: rdkafka::error::KafkaError::AdminOp(code),
                })
            }
        }
    }
    Ok(())
}

/// Reads every checkpoint of `pipeline` stored in `topic` (the newest per key wins).
pub async fn load(
    kafka_config: &KafkaConfig,
    topic: &str,
    pipeline: &str,
) -> Result<HashMap<String, Checkpoint>, CheckpointError> {
    let consumer: BaseConsumer<kafka::LeveledEvents> =
        kafka::client_config(kafka_config, kafka::Role::Consumer)
            // A group of its own: readers of several pipelines load at once, and nothing is
            // committed, so the group leaves nothing behind.
            .set(
                "group.id",
                format!(
                    "mongo-kafka-bridge-checkpoint-reader-{pipeline}-{}",
                    bson::oid::ObjectId::new().to_hex()
                ),
            )
            .set("enable.auto.commit", "false")
            // The end of a partition is where its reading stops; offsets cannot tell it, since
            // transaction markers take offsets no record has.
            .set("enable.partition.eof", "true")
            // Exactly-once pipelines write checkpoints in transactions: an aborted one is no
            // checkpoint.
            .set("isolation.level", "read_committed")
            .create_with_context(kafka::LeveledEvents)
            .map_err(|source| CheckpointError::Kafka {
                topic: topic.to_owned(),
                what: "creating a reader",
                source,
            })?;
    let timeout = kafka_config.request_timeout;
    let topic_owned = topic.to_owned();
    let pipeline = pipeline.to_owned();
    // librdkafka's blocking calls stay off the actor threads.
    let read =
        tokio::task::spawn_blocking(move || read_all(&consumer, &topic_owned, &pipeline, timeout));
    match read.await {
        Ok(result) => result,
        Err(_) => Err(CheckpointError::Kafka {
            topic: topic.to_owned(),
            what: "reading checkpoints",
            source: rdkafka::error::KafkaError::Canceled,
        }),
    }
}

fn read_all(
    consumer: &BaseConsumer<kafka::LeveledEvents>,
    topic: &str,
    pipeline: &str,
    timeout: Duration,
) -> Result<HashMap<String, Checkpoint>, CheckpointError> {
    let err = |what: &'static str| {
        move |source| CheckpointError::Kafka {
            topic: topic.to_owned(),
            what,
            source,
        }
    };
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(err("fetching metadata"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for &partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(err("fetching watermarks"))?;
        if high > low {
            ends.insert(partition, high);
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(err("assigning"))?;
        }
    }
    let mut checkpoints = HashMap::new();
    if ends.is_empty() {
        return Ok(checkpoints);
    }
    consumer.assign(&assignment).map_err(err("assigning"))?;
    let deadline = std::time::Instant::now() + timeout.max(Duration::from_secs(30));
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(CheckpointError::Kafka {
                topic: topic.to_owned(),
                what: "reading to the end",
                source: rdkafka::error::KafkaError::Canceled,
            });
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(rdkafka::error::KafkaError::PartitionEOF(partition)) => {
                ends.remove(&partition);
                continue;
            }
            Err(e) => return Err(err("reading")(e)),
        };
        // The end as it was when the reading began: while other pipelines keep writing,
        // the partition's end moves and no end-of-partition event may ever come.
        if ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() >= end - 1)
        {
            ends.remove(&message.partition());
        }
        let Some(key) = message
            .key()
            .and_then(|k| serde_json::from_slice::<CheckpointKey>(k).ok())
        else {
            continue;
        };
        if key.pipeline != pipeline {
            continue;
        }
        match message.payload().map(serde_json::from_slice::<Checkpoint>) {
            Some(Ok(checkpoint)) => {
                checkpoints.insert(key.namespace, checkpoint);
            }
            // A tombstone resets the reader: it starts by its startup mode again.
            None => {
                checkpoints.remove(&key.namespace);
            }
            Some(Err(e)) => {
                tracing::warn!(pipeline, namespace = %key.namespace, error = %e, "ignoring an unreadable checkpoint")
            }
        }
    }
    Ok(checkpoints)
}

/// The key and value bytes of a checkpoint record.
pub fn record(
    key: &CheckpointKey,
    checkpoint: &Checkpoint,
) -> Result<(Vec<u8>, Vec<u8>), serde_json::Error> {
    Ok((serde_json::to_vec(key)?, serde_json::to_vec(checkpoint)?))
}

/// The resume token as a document, for logs.
pub fn describe(token: &ResumeToken) -> String {
    bson::to_bson(token)
        .ok()
        .and_then(|b| b.as_document().map(Document::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: i32) -> Position {
        Position::stream(
            bson::from_bson(Bson::Document(bson::doc! { "_data": format!("T{n}") })).unwrap(),
        )
    }

    #[test]
    fn checkpoints_round_trip_their_token() {
        let cp = Checkpoint::new(&token(7)).unwrap();
        let (key, value) = record(
            &CheckpointKey {
                pipeline: "p".into(),
                namespace: "db.c".into(),
            },
            &cp,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(key).unwrap(),
            r#"{"pipeline":"p","namespace":"db.c"}"#
        );
        let back: Checkpoint = serde_json::from_slice(&value).unwrap();
        assert_eq!(back.position().unwrap(), token(7));
        assert!(!String::from_utf8(value).unwrap().contains("copy"));
    }

    #[test]
    fn checkpoints_carry_copy_progress() {
        let mut progress = CopyProgress::default();
        progress.plan("db.c", &[Bson::Int32(50)]);
        progress.advance("db.c", 0, Some(&Bson::Int32(7)), false);
        let position = Position {
            copy: Some(Arc::new(progress)),
            ..token(1)
        };
        let cp = Checkpoint::new(&position).unwrap();
        let text = serde_json::to_string(&cp).unwrap();
        let back: Checkpoint = serde_json::from_str(&text).unwrap();
        assert_eq!(back.position().unwrap(), position, "{text}");
    }
}
