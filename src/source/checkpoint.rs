//! Checkpoints: how a reader's position is stored (a compacted Kafka topic, keyed by
//! pipeline and reader, like Kafka Connect's offsets topic). Which position may be stored
//! is the ledger's business (`ledger.rs`); which partition a reader's checkpoints go to is
//! its slot's (`slots.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bson::{Bson, Document};
use mongodb::change_stream::event::ResumeToken;
use rdkafka::admin::{AdminOptions, NewPartitions, NewTopic, TopicReplication};
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

/// Creates the compacted checkpoint topic with `partitions` partitions (one per slot)
/// unless it exists; an existing one with fewer (a topic of a daemon without slots has one)
/// is grown to `partitions`. Its checkpoints stay where they are: [`newest`] finds them.
pub async fn ensure_topic(
    kafka_config: &KafkaConfig,
    topic: &str,
    partitions: i32,
) -> Result<(), CheckpointError> {
    let admin = kafka::admin(kafka_config).map_err(Box::new)?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact");
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
            // Created now, with a partition per slot.
            Ok(_) => return Ok(()),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(CheckpointError::Kafka {
                    topic: topic.to_owned(),
                    what: "creating the topic",
                    source: rdkafka::error::KafkaError::AdminOp(code),
                })
            }
        }
    }
    let existing = partition_count(&admin, topic, kafka_config.request_timeout)?;
    if existing >= partitions {
        return Ok(());
    }
    let grow = usize::try_from(partitions).unwrap_or(1);
    let results = admin
        .create_partitions(
            &[NewPartitions::new(topic, grow)],
            &AdminOptions::new().operation_timeout(Some(kafka_config.request_timeout)),
        )
        .await
        .map_err(|source| CheckpointError::Kafka {
            topic: topic.to_owned(),
            what: "adding partitions for the slots",
            source,
        })?;
    for result in results {
        match result {
            // Another daemon grew it meanwhile.
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::InvalidPartitions)) => {}
            Err((_, code)) => {
                return Err(CheckpointError::Kafka {
                    topic: topic.to_owned(),
                    what: "adding partitions for the slots",
                    source: rdkafka::error::KafkaError::AdminOp(code),
                })
            }
        }
    }
    tracing::info!(
        topic,
        from = existing,
        to = partitions,
        "grew the checkpoint topic to one partition per slot; its checkpoints are kept"
    );
    Ok(())
}

/// How many partitions `topic` has.
fn partition_count(
    admin: &rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>,
    topic: &str,
    timeout: Duration,
) -> Result<i32, CheckpointError> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| CheckpointError::Kafka {
            topic: topic.to_owned(),
            what: "fetching metadata",
            source,
        })?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    Ok(i32::try_from(count).unwrap_or(i32::MAX))
}

/// One checkpoint record as read from the topic.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The reader.
    pub namespace: String,
    /// Where it was read.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its timestamp (milliseconds), if it has one.
    pub timestamp: Option<i64>,
    /// The checkpoint; `None` for a tombstone (the reader starts by its startup mode).
    pub checkpoint: Option<Checkpoint>,
}

/// The checkpoint of each reader among `stored`, read in any interleaving of partitions.
/// Within a partition the later offset wins. Across partitions the later timestamp wins
/// (ties go to the reader's own slot, `slot_of`): a topic grown from one partition to one per
/// slot, or a changed `slots`, leaves a reader's older checkpoints in another partition,
/// which count until its own partition has a newer one. A tombstone that wins resets the
/// reader.
pub fn newest(
    stored: impl IntoIterator<Item = Stored>,
    slot_of: impl Fn(&str) -> i32,
) -> HashMap<String, Checkpoint> {
    let mut last: HashMap<(String, i32), Stored> = HashMap::new();
    for record in stored {
        let key = (record.namespace.clone(), record.partition);
        if last
            .get(&key)
            .is_none_or(|kept| record.offset > kept.offset)
        {
            last.insert(key, record);
        }
    }
    let mut winners: HashMap<String, Stored> = HashMap::new();
    for ((namespace, _), record) in last {
        let rank = |r: &Stored| {
            (
                r.timestamp.unwrap_or(i64::MIN),
                r.partition == slot_of(&namespace),
            )
        };
        match winners.get(&namespace) {
            Some(kept) if rank(kept) >= rank(&record) => {}
            _ => {
                winners.insert(namespace, record);
            }
        }
    }
    winners
        .into_iter()
        .filter_map(|(namespace, record)| Some((namespace, record.checkpoint?)))
        .collect()
}

/// Reads every checkpoint of `pipeline` stored in `topic`, in every partition; [`newest`]
/// picks each reader's (`slots`: the pipeline's slot count).
pub async fn load(
    kafka_config: &KafkaConfig,
    topic: &str,
    pipeline: &str,
    slots: u32,
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
    let read = tokio::task::spawn_blocking(move || {
        let stored = read_all(&consumer, &topic_owned, &pipeline, timeout)?;
        Ok(newest(stored, |namespace| {
            super::slots::slot_of(&pipeline, namespace, slots)
        }))
    });
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
) -> Result<Vec<Stored>, CheckpointError> {
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
    let mut checkpoints = Vec::new();
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
        let checkpoint = match message.payload().map(serde_json::from_slice::<Checkpoint>) {
            Some(Ok(checkpoint)) => Some(checkpoint),
            // A tombstone resets the reader: it starts by its startup mode again.
            None => None,
            Some(Err(e)) => {
                tracing::warn!(pipeline, namespace = %key.namespace, error = %e, "ignoring an unreadable checkpoint");
                continue;
            }
        };
        checkpoints.push(Stored {
            namespace: key.namespace,
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            checkpoint,
        });
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

    fn stored(partition: i32, offset: i64, timestamp: i64, n: Option<i32>) -> Stored {
        Stored {
            namespace: "db.c".into(),
            partition,
            offset,
            timestamp: Some(timestamp),
            checkpoint: n.map(|n| Checkpoint::new(&token(n)).unwrap()),
        }
    }

    fn resolved(records: Vec<Stored>, slot: i32) -> Option<Position> {
        newest(records, |_| slot)
            .get("db.c")
            .map(|c| c.position().unwrap())
    }

    /// Issue 14: a checkpoint topic of one partition grown to one per slot keeps every
    /// reader's position; the reader's own partition takes over once it has a newer one.
    #[test]
    fn a_reader_moved_to_its_slots_partition_keeps_its_position() {
        // Only the old, one-partition checkpoint.
        assert_eq!(
            resolved(vec![stored(0, 7, 100, Some(1))], 5),
            Some(token(1))
        );
        // Its slot's partition has a newer one, read before or after the old.
        for order in [[0, 1], [1, 0]] {
            let records = [stored(0, 7, 100, Some(1)), stored(5, 0, 200, Some(2))];
            let records = order.iter().map(|&i| records[i].clone()).collect();
            assert_eq!(resolved(records, 5), Some(token(2)));
        }
        // Within a partition, the log's order rules, whatever the clocks said.
        let records = vec![stored(5, 3, 300, Some(3)), stored(5, 4, 250, Some(4))];
        assert_eq!(resolved(records, 5), Some(token(4)));
        // A tie between partitions goes to the reader's own slot.
        let records = vec![stored(5, 0, 100, Some(2)), stored(0, 9, 100, Some(1))];
        assert_eq!(resolved(records, 5), Some(token(2)));
        // A newer tombstone resets the reader.
        let records = vec![stored(0, 1, 100, Some(1)), stored(5, 2, 200, None)];
        assert_eq!(resolved(records, 5), None);
    }
}
