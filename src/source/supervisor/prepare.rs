//! What a start prepares on Kafka before its readers run: the producers of the slots it
//! starts ([`slot_producers`]) and the topics known before any event
//! ([`create_known_topics`]). I/O only: no actor state.
//!
//! The rules:
//! - At-least-once: one client, shared by every slot (none when no slot has readers).
//! - Exactly-once: one transactional producer per slot (`transactional.id =
//!   mongo-kafka-bridge-<name>-<slot>`), each initialised, which fences any earlier owner of
//!   the slot and aborts what it left open; the `transactional.id` of versions before slots
//!   (`mongo-kafka-bridge-<name>`) is fenced too. One of them failing fails the start.
//! - Created at the start (`create_topics`): each collection stream's topic, the heartbeat
//!   topic and the dead letter topic; the topics database-wide and deployment-wide streams
//!   name from their events are created before their first record (`producer.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use rdkafka::producer::Producer;

use crate::clients::kafka;
use crate::config::{Delivery, KafkaConfig, SourceConfig};
use crate::source::error::SourceError;
use crate::source::membership;
use crate::source::model::Scope;
use crate::source::topic::TopicMapper;
use crate::source::topic_creator::TopicCreator;

/// The producers of the owned slots with readers. At-least-once: one client shared by all.
/// Exactly-once: one per slot (`transactional.id = mongo-kafka-bridge-<name>-<slot>`), each
/// initialised, which fences any earlier owner of the slot and aborts what it left open; the
/// `transactional.id` of versions before slots is fenced too.
pub(super) async fn slot_producers(
    kafka_config: &KafkaConfig,
    config: &SourceConfig,
    slots: &[i32],
) -> Result<BTreeMap<i32, kafka::KafkaProducer>, SourceError> {
    if config.delivery == Delivery::AtLeastOnce {
        if slots.is_empty() {
            return Ok(BTreeMap::new());
        }
        let producer = kafka::producer(kafka_config)?;
        return Ok(slots.iter().map(|&s| (s, producer.clone())).collect());
    }
    let timeout = kafka_config.request_timeout.max(Duration::from_secs(30));
    let fence = |id: String| async move {
        let producer = kafka::transactional_producer(kafka_config, &id)?;
        let init = producer.clone();
        tokio::task::spawn_blocking(move || init.init_transactions(timeout))
            .await
            .map_err(|e| SourceError::Start(e.to_string()))?
            .map_err(|source| SourceError::Transaction {
                what: "initialising",
                source: Box::new(source),
            })?;
        Ok::<_, SourceError>(producer)
    };
    let legacy = format!("mongo-kafka-bridge-{}", config.name);
    let fenced = join_all(
        slots
            .iter()
            .map(|&slot| fence(membership::transactional_id(&config.name, slot))),
    );
    let (legacy, fenced) = futures_util::future::join(fence(legacy), fenced).await;
    drop(legacy?);
    slots
        .iter()
        .zip(fenced)
        .map(|(&slot, producer)| Ok((slot, producer?)))
        .collect()
}

/// Creates the topics known before any event (a collection stream's, the heartbeat and dead
/// letter topics) at the start; the topics database-wide and deployment-wide streams name
/// from their events are created before their first record (`producer.rs`).
pub(super) async fn create_known_topics(
    creator: &TopicCreator,
    config: &SourceConfig,
) -> Result<(), SourceError> {
    let mapper = TopicMapper::new(config).map_err(|reason| SourceError::Config {
        namespace: config.name.clone(),
        reason,
    })?;
    let mut names: Vec<String> = Scope::of(config)
        .iter()
        .filter_map(|w| match w {
            Scope::Collection { db, coll } => Some(mapper.topic(db, Some(coll))),
            _ => None,
        })
        .collect();
    if config.heartbeat_interval.is_some() {
        names.push(config.heartbeat_topic.clone());
    }
    names.extend(config.errors.dead_letter_topic.clone());
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    creator.ensure(&names).await
}
