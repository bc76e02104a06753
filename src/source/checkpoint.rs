//! Checkpoints: how a reader's position is stored (a compacted Kafka topic, keyed by
//! pipeline and reader, like Kafka Connect's offsets topic). Which position may be stored
//! is the ledger's business (`ledger.rs`); which partition a reader's checkpoints go to is
//! its slot's (`slots.rs`).
//!
//! Rules kept here:
//! - The topic is compacted with small segments ([`TOPIC_SETTINGS`]), so what a load reads
//!   is bounded by the number of readers and the last few minutes of checkpoints, not by
//!   the topic's age; a topic missing those settings gets them (only those left at the
//!   broker's default: a value someone set is kept).
//! - A reader's newest checkpoint is the latest in its partition (offsets never go back);
//!   across partitions (a changed `slots`, a topic from before slots), the highest
//!   `generation` wins: every start writes one higher than any it read. Clocks play no part.
//! - Exactly-once pipelines write checkpoints in transactions and loads read
//!   `read_committed`: an open transaction holds a partition back for everyone reading it.
//!   So an exactly-once pipeline never shares its checkpoint topic: a load that finds
//!   another pipeline beside an exactly-once one (or a partition held back by an open
//!   transaction it cannot have left itself) refuses, naming both, instead of starting
//!   from an older checkpoint and publishing again what was committed.
//! - librdkafka's blocking calls (metadata, watermarks, polling) run on tokio's blocking
//!   threads, never on the actor thread.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bson::{Bson, Document};
use mongodb::change_stream::event::ResumeToken;
use rdkafka::admin::{
    AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::copy_plan::CopyCursor;
use super::model::{Position, StartAt};
use super::reader::snapshot::SnapshotCursor;
use crate::clients::{kafka, ClientError};
use crate::config::{Delivery, KafkaConfig, SourceConfig};
use crate::ops::metrics::Metrics;

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
    /// The resume token, as canonical extended JSON (`null` when [`Checkpoint::start`]
    /// says where to start instead).
    #[serde(default)]
    pub resume_token: serde_json::Value,
    /// Where the reader starts instead of after a resume token: written by
    /// `mongo-kafka-bridge checkpoints set` (`--timestamp`, `--latest`, `--copy`). Absent
    /// from every checkpoint a pipeline writes, and from those written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartFrom>,
    /// While existing documents are copied: how far the copy got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyCursor>,
    /// While snapshots on demand run: the namespaces left and where each goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotCursor>,
    /// The start of the pipeline that wrote it: one more than the highest generation its
    /// load read. Across partitions the highest wins (0: written before generations).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    /// Written by an exactly-once pipeline, inside a Kafka transaction.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exactly_once: bool,
}

/// Where a checkpoint written by an operator makes its reader start, other than after a
/// resume token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "at")]
pub enum StartFrom {
    /// At this cluster time (`startAtOperationTime`).
    Timestamp {
        /// Seconds since the epoch.
        t: u32,
        /// The operation within that second.
        i: u32,
    },
    /// At the newest change.
    Latest,
    /// Copy the existing documents again, then follow changes from when the copy began.
    CopyExisting,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Checkpoint {
    /// A checkpoint at `position` (generation 0, at-least-once; see [`Checkpoint::stamped`]).
    pub fn new(position: &Position) -> Result<Self, bson::ser::Error> {
        Ok(Self {
            resume_token: bson::to_bson(&position.token)?.into_canonical_extjson(),
            start: None,
            copy: position.copy.as_deref().cloned(),
            snapshot: position.snapshot.as_deref().cloned(),
            generation: 0,
            exactly_once: false,
        })
    }

    /// A checkpoint that makes its reader start at `start` instead of after a token
    /// (generation 0; see [`Checkpoint::stamped`]).
    pub fn starting(start: StartFrom) -> Self {
        Self {
            resume_token: serde_json::Value::Null,
            start: Some(start),
            copy: None,
            snapshot: None,
            generation: 0,
            exactly_once: false,
        }
    }

    /// Where the reader of this checkpoint starts, or why the checkpoint is unreadable.
    pub fn start_at(&self) -> Result<StartAt, String> {
        Ok(match &self.start {
            Some(StartFrom::Timestamp { t, i }) => StartAt::Time(bson::Timestamp {
                time: *t,
                increment: *i,
            }),
            Some(StartFrom::Latest) => StartAt::Latest,
            Some(StartFrom::CopyExisting) => StartAt::CopyExisting,
            None => StartAt::Resume(self.position()?),
        })
    }

    /// The checkpoint as written by a start of generation `generation`, exactly-once or
    /// not.
    pub fn stamped(self, generation: u64, exactly_once: bool) -> Self {
        Self {
            generation,
            exactly_once,
            ..self
        }
    }

    /// The stored position, or why it is unreadable.
    pub fn position(&self) -> Result<Position, String> {
        let bson = Bson::try_from(self.resume_token.clone()).map_err(|e| e.to_string())?;
        Ok(Position {
            token: bson::from_bson(bson).map_err(|e| e.to_string())?,
            copy: self.copy.clone().map(Arc::new),
            snapshot: self.snapshot.clone().map(Arc::new),
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
    /// The pipeline may not start from this topic: see [`refusal`].
    #[error("{reason}")]
    Shared {
        /// Which pipelines share which partition, and what to do.
        reason: String,
    },
}

/// The topic settings that keep a load's cost independent of the topic's age: compaction
/// keeps the newest record of each key, but only in closed segments, and only once enough
/// of the log is dirty. Small segments closed at least every ten minutes, cleaned once a
/// tenth is dirty, leave a load the readers' records plus a few minutes of checkpoints.
pub const TOPIC_SETTINGS: [(&str, &str); 4] = [
    ("cleanup.policy", "compact"),
    ("segment.bytes", "1048576"),
    ("segment.ms", "600000"),
    ("min.cleanable.dirty.ratio", "0.1"),
];

/// Creates the compacted checkpoint topic with `partitions` partitions (one per slot) and
/// [`TOPIC_SETTINGS`] unless it exists; an existing one with fewer (a topic of a daemon
/// without slots has one) is grown to `partitions`, and given those of [`TOPIC_SETTINGS`]
/// it has at the broker's default. Its checkpoints stay where they are: [`newest`] finds
/// them.
pub async fn ensure_topic(
    kafka_config: &KafkaConfig,
    topic: &str,
    partitions: i32,
) -> Result<(), CheckpointError> {
    let admin = Arc::new(kafka::admin(kafka_config).map_err(Box::new)?);
    let err = |what: &'static str| {
        move |source| CheckpointError::Kafka {
            topic: topic.to_owned(),
            what,
            source,
        }
    };
    let options = AdminOptions::new()
        .operation_timeout(Some(kafka_config.request_timeout))
        .request_timeout(Some(kafka_config.request_timeout));
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    for (key, value) in TOPIC_SETTINGS {
        new = new.set(key, value);
    }
    let results = admin
        .create_topics(&[new], &options)
        .await
        .map_err(err("creating the topic"))?;
    for result in results {
        match result {
            // Created now, with a partition per slot.
            Ok(_) => return Ok(()),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(err("creating the topic")(
                    rdkafka::error::KafkaError::AdminOp(code),
                ))
            }
        }
    }
    apply_settings(&admin, topic, &options).await?;
    let existing = partition_count(&admin, topic, kafka_config.request_timeout).await?;
    if existing >= partitions {
        return Ok(());
    }
    let grow = usize::try_from(partitions).unwrap_or(1);
    let results = admin
        .create_partitions(&[NewPartitions::new(topic, grow)], &options)
        .await
        .map_err(err("adding partitions for the slots"))?;
    for result in results {
        match result {
            // Another daemon grew it meanwhile.
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::InvalidPartitions)) => {}
            Err((_, code)) => {
                return Err(err("adding partitions for the slots")(
                    rdkafka::error::KafkaError::AdminOp(code),
                ))
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

/// One setting of a topic as the broker describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSetting {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: Option<String>,
    /// Set on the topic itself (not inherited from the broker's defaults).
    pub set_on_topic: bool,
}

/// The settings to write on an existing checkpoint topic described as `current`, or `None`
/// when it has every one of [`TOPIC_SETTINGS`] already. Kafka's `AlterConfigs` replaces the
/// topic's whole configuration: the answer carries every setting set on the topic, then
/// those of [`TOPIC_SETTINGS`] left at the broker's default. A value someone set is kept.
/// Pure.
pub fn settings_to_apply(current: &[TopicSetting]) -> Option<Vec<(String, String)>> {
    let set: Vec<(String, String)> = current
        .iter()
        .filter(|s| s.set_on_topic)
        .filter_map(|s| Some((s.name.clone(), s.value.clone()?)))
        .collect();
    let missing: Vec<(String, String)> = TOPIC_SETTINGS
        .iter()
        .filter(|(key, _)| !set.iter().any(|(name, _)| name == key))
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(set.into_iter().chain(missing).collect())
}

/// Gives an existing checkpoint topic those of [`TOPIC_SETTINGS`] it lacks. A refusal
/// (no `AlterConfigs` right) is a WARN, not a failure: the topic works, its loads just
/// grow with its age.
async fn apply_settings(
    admin: &rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>,
    topic: &str,
    options: &AdminOptions,
) -> Result<(), CheckpointError> {
    let err = |what: &'static str| {
        move |source| CheckpointError::Kafka {
            topic: topic.to_owned(),
            what,
            source,
        }
    };
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], options)
        .await
        .map_err(err("describing the topic's settings"))?;
    let Some(Ok(resource)) = described.into_iter().next() else {
        tracing::warn!(
            topic,
            "could not describe the checkpoint topic's settings; loads grow with its age unless it is compacted with small segments"
        );
        return Ok(());
    };
    // A broker that does not say where a setting comes from (before Kafka 1.1): what was
    // set on the topic is unknown, and `AlterConfigs` would reset it.
    if resource
        .entries
        .iter()
        .any(|e| e.source == ConfigSource::Unknown)
    {
        tracing::warn!(
            topic,
            "the broker does not tell which settings of the checkpoint topic were set on it; its compaction settings are left as they are"
        );
        return Ok(());
    }
    let current: Vec<TopicSetting> = resource
        .entries
        .iter()
        .map(|e| TopicSetting {
            name: e.name.clone(),
            value: e.value.clone(),
            set_on_topic: e.source == ConfigSource::DynamicTopic,
        })
        .collect();
    let Some(settings) = settings_to_apply(&current) else {
        return Ok(());
    };
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (key, value) in &settings {
        alter = alter.set(key, value);
    }
    let altered = admin.alter_configs(&[alter], options).await;
    match altered.as_ref().map(|results| results.first()) {
        Ok(Some(Ok(_))) => {
            tracing::info!(
                topic,
                ?settings,
                "gave the checkpoint topic its compaction settings"
            );
        }
        _ => {
            tracing::warn!(
                topic,
                result = ?altered,
                "could not give the checkpoint topic its compaction settings; loads grow with its age"
            );
        }
    }
    Ok(())
}

/// How many partitions `topic` has, asked off the actor thread (librdkafka's metadata call
/// blocks its caller until the broker answers or `timeout` passes).
async fn partition_count(
    admin: &Arc<rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>>,
    topic: &str,
    timeout: Duration,
) -> Result<i32, CheckpointError> {
    let admin = Arc::clone(admin);
    let name = topic.to_owned();
    let counted = tokio::task::spawn_blocking(move || {
        let metadata = admin.inner().fetch_metadata(Some(&name), timeout)?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .map_or(0, |t| t.partitions().len());
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    })
    .await
    .unwrap_or(Err(rdkafka::error::KafkaError::Canceled));
    counted.map_err(|source| CheckpointError::Kafka {
        topic: topic.to_owned(),
        what: "fetching metadata",
        source,
    })
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
    /// Its timestamp (milliseconds), if it has one: the last tie-breaker only, between
    /// checkpoints from before generations in partitions none of which is the reader's.
    pub timestamp: Option<i64>,
    /// The checkpoint; `None` for a tombstone (the reader starts by its startup mode).
    pub checkpoint: Option<Checkpoint>,
}

/// The checkpoint of each reader among `stored`, read in any interleaving of partitions.
/// Within a partition the later offset wins. Across partitions (a topic grown from one
/// partition to one per slot, or a changed `slots`, leaves a reader's older checkpoints in
/// another partition) the higher generation wins, then the reader's own slot (`slot_of`),
/// then, between checkpoints from before generations, the later timestamp. A tombstone
/// ranks with the highest generation its partition held for the reader: one written after
/// a reader's checkpoint in the reader's own partition resets it. Clocks never beat a
/// generation or an offset.
pub fn newest(
    stored: impl IntoIterator<Item = Stored>,
    slot_of: impl Fn(&str) -> i32,
) -> HashMap<String, Checkpoint> {
    let mut last: HashMap<(String, i32), Stored> = HashMap::new();
    let mut generations: HashMap<(String, i32), u64> = HashMap::new();
    for record in stored {
        let key = (record.namespace.clone(), record.partition);
        if let Some(checkpoint) = &record.checkpoint {
            let seen = generations.entry(key.clone()).or_default();
            *seen = (*seen).max(checkpoint.generation);
        }
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
            let generation = r.checkpoint.as_ref().map_or_else(
                || {
                    generations
                        .get(&(namespace.clone(), r.partition))
                        .copied()
                        .unwrap_or(0)
                },
                |c| c.generation,
            );
            (
                generation,
                r.partition == slot_of(&namespace),
                r.timestamp.unwrap_or(i64::MIN),
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

/// What a load reads: whose checkpoints, from where.
#[derive(Debug, Clone)]
pub struct Reading {
    /// The checkpoint topic.
    pub topic: String,
    /// The pipeline.
    pub pipeline: String,
    /// Its slot count.
    pub slots: u32,
    /// Whether it is exactly-once.
    pub exactly_once: bool,
    /// The slots (partitions) whose readers it starts: they must not be shared with
    /// another pipeline when either is exactly-once.
    pub owned: Vec<i32>,
    /// Where its checkpoints were before it had a topic of its own (an exactly-once
    /// pipeline on its default topic: the shared one). Read once, when its own topic holds
    /// none of its checkpoints, so an upgrade resumes where it was.
    pub legacy_topic: Option<String>,
}

impl Reading {
    /// What a start of `config` owning the slots `owned` loads: its topic, and the shared
    /// one it used before while its own holds none.
    pub fn start(config: &SourceConfig, owned: Vec<i32>) -> Self {
        Self {
            topic: config.checkpoint_topic.clone(),
            pipeline: config.name.clone(),
            slots: config.slots,
            exactly_once: config.delivery == Delivery::ExactlyOnce,
            owned,
            legacy_topic: config.legacy_checkpoint_topic().map(str::to_owned),
        }
    }

    /// The reading of the topic its checkpoints were in before it had one of its own
    /// (`legacy_topic`); `None` when there is none.
    pub fn before(&self) -> Option<Reading> {
        self.legacy_topic.as_ref().map(|topic| Reading {
            topic: topic.clone(),
            legacy_topic: None,
            ..self.clone()
        })
    }
}

/// Whether `stored` holds a checkpoint (not only tombstones).
fn holds_checkpoints(stored: &[Stored]) -> bool {
    stored.iter().any(|s| s.checkpoint.is_some())
}

/// What a load found.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The newest checkpoint of each reader of the pipeline.
    pub checkpoints: HashMap<String, Checkpoint>,
    /// The generation the checkpoints of this start carry: one more than any the pipeline
    /// wrote before.
    pub generation: u64,
    /// Records read, of every pipeline sharing the topic: bounded by compaction.
    pub records_read: u64,
}

/// A partition whose reading stopped before its end: an open transaction holds its last
/// stable offset there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBack {
    /// The partition.
    pub partition: i32,
    /// Where `read_committed` reading stopped.
    pub stable: i64,
    /// The partition's end when the load began.
    pub end: i64,
}

/// Another pipeline's checkpoints met in a partition of the pipeline's own slots.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neighbour {
    /// Its name.
    pub pipeline: String,
    /// The partition it was met in.
    pub partition: i32,
    /// Whether its checkpoints there were written exactly-once.
    pub exactly_once: bool,
}

/// Why the load of `reading` must not start the pipeline, given the other pipelines met in
/// its own partitions and its own partitions held back by open transactions; `None` when
/// nothing stands in the way. Pure.
///
/// An exactly-once pipeline's transactions hold back `read_committed` reading of every
/// partition they write to, for every pipeline reading it, until they end; a load that
/// stops there starts from an older checkpoint, and an exactly-once pipeline would publish
/// again what it committed. So an exactly-once pipeline refuses to start from partitions
/// of its slots that another pipeline writes to, and from one held back by an open
/// transaction, which cannot be its own (its producers of those slots were fenced before
/// the load). An at-least-once pipeline beside an exactly-once one is only warned about
/// ([`warnings`]): it may publish some changes again, which at-least-once allows.
pub fn refusal(
    reading: &Reading,
    neighbours: &BTreeSet<Neighbour>,
    held: &[HeldBack],
) -> Option<String> {
    if !reading.exactly_once {
        return None;
    }
    let topic = &reading.topic;
    let pipeline = &reading.pipeline;
    if let Some(n) = neighbours.iter().next() {
        return Some(format!(
            "checkpoint topic `{topic}` partition {partition} is shared by exactly-once pipeline `{pipeline}` and pipeline `{other}`: an open transaction of one holds back the other's checkpoints; give each exactly-once pipeline a `checkpoint_topic` of its own (or, if `{other}` is gone, delete its checkpoints with tombstones)",
            partition = n.partition,
            other = n.pipeline,
        ));
    }
    let held = held.iter().find(|h| reading.owned.contains(&h.partition))?;
    Some(format!(
        "checkpoint topic `{topic}` partition {partition}: an open transaction that is not pipeline `{pipeline}`'s holds back its checkpoints at offset {stable} (end {end}); another exactly-once producer writes to this partition: give each exactly-once pipeline a `checkpoint_topic` of its own",
        partition = held.partition,
        stable = held.stable,
        end = held.end,
    ))
}

/// What an at-least-once load warns about: exactly-once pipelines writing to partitions of
/// its slots (their open transactions hide its newer checkpoints), and partitions of its
/// slots held back. Pure.
pub fn warnings(
    reading: &Reading,
    neighbours: &BTreeSet<Neighbour>,
    held: &[HeldBack],
) -> Vec<String> {
    let topic = &reading.topic;
    let pipeline = &reading.pipeline;
    let shared = neighbours.iter().filter(|n| n.exactly_once).map(|n| {
        format!(
            "checkpoint topic `{topic}` partition {partition} is shared by pipeline `{pipeline}` and exactly-once pipeline `{other}`: its open transactions hold back `{pipeline}`'s checkpoints, which may publish some changes again; give `{other}` a `checkpoint_topic` of its own",
            partition = n.partition,
            other = n.pipeline,
        )
    });
    let held = held
        .iter()
        .filter(|h| reading.owned.contains(&h.partition))
        .map(|h| {
            format!(
                "checkpoint topic `{topic}` partition {partition}: an open transaction holds back pipeline `{pipeline}`'s checkpoints at offset {stable} (end {end}): it starts from older ones and may publish some changes again",
                partition = h.partition,
                stable = h.stable,
                end = h.end,
            )
        });
    shared.chain(held).collect()
}

/// Reads every checkpoint of the pipeline `reading` names, in every partition of its
/// topic; [`newest`] picks each reader's, and [`refusal`] whether it may start at all.
pub async fn load(
    kafka_config: &KafkaConfig,
    reading: &Reading,
) -> Result<Loaded, CheckpointError> {
    let read = read_topic(kafka_config, reading).await?;
    let neighbours = read.neighbours();
    if let Some(reason) = refusal(reading, &neighbours, &read.held) {
        return Err(CheckpointError::Shared { reason });
    }
    for warning in warnings(reading, &neighbours, &read.held) {
        tracing::warn!(
            topic = %reading.topic,
            pipeline = %reading.pipeline,
            reason = %warning,
            "the checkpoint topic is shared with an exactly-once pipeline or held back by an open transaction"
        );
    }
    let mut stored = read.stored;
    let mut records_read = read.records_read;
    if let (false, Some(earlier)) = (holds_checkpoints(&stored), reading.before()) {
        // Its positions from before it had a topic of its own. Other pipelines share that
        // topic by design: only an open transaction in its partitions stands in the way.
        let legacy = &earlier.topic;
        let read = read_topic(kafka_config, &earlier).await?;
        if let Some(reason) = refusal(&earlier, &BTreeSet::new(), &read.held) {
            return Err(CheckpointError::Shared { reason });
        }
        if holds_checkpoints(&read.stored) {
            tracing::info!(
                pipeline = %reading.pipeline,
                from = %legacy,
                to = %reading.topic,
                "resuming from the checkpoints of the shared topic, where this exactly-once pipeline kept them before it had a topic of its own; its next ones go to its own"
            );
        }
        records_read += read.records_read;
        stored.extend(read.stored);
    }
    let generation = stored
        .iter()
        .filter_map(|s| s.checkpoint.as_ref())
        .map(|c| c.generation)
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let pipeline = reading.pipeline.clone();
    let slots = reading.slots;
    Ok(Loaded {
        checkpoints: newest(stored, |namespace| {
            super::slots::slot_of(&pipeline, namespace, slots)
        }),
        generation,
        records_read,
    })
}

/// Every checkpoint record of `reading`'s pipeline in its own topic (not the legacy one),
/// tombstones included, in the order read: what `checkpoints list|set|reset` plans from.
pub async fn stored(
    kafka_config: &KafkaConfig,
    reading: &Reading,
) -> Result<Vec<Stored>, CheckpointError> {
    Ok(read_topic(kafka_config, reading).await?.stored)
}

/// [`stored`] as a start sees it ([`load`]): the checkpoints of its topic, and those of the
/// topic it used before ([`Reading::before`]) while its own holds none; no refusal.
pub async fn stored_as_loaded(
    kafka_config: &KafkaConfig,
    reading: &Reading,
) -> Result<Vec<Stored>, CheckpointError> {
    let mut found = stored(kafka_config, reading).await?;
    if let (false, Some(earlier)) = (holds_checkpoints(&found), reading.before()) {
        found.extend(stored(kafka_config, &earlier).await?);
    }
    Ok(found)
}

/// Reads every record of `reading`'s topic (off the actor threads): the pipeline's
/// checkpoints, the other pipelines met in its partitions, the partitions held back.
async fn read_topic(
    kafka_config: &KafkaConfig,
    reading: &Reading,
) -> Result<Read, CheckpointError> {
    let topic = reading.topic.clone();
    let consumer_config = kafka::client_config(kafka_config, kafka::Role::Consumer)
        // A group of its own: readers of several pipelines load at once, and nothing is
        // committed, so the group leaves nothing behind.
        .set(
            "group.id",
            format!(
                "mongo-kafka-bridge-checkpoint-reader-{}-{}",
                reading.pipeline,
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
        .to_owned();
    // Only for the true end of the partitions (metadata and watermarks), never reading.
    let uncommitted_config = consumer_config
        .clone()
        .set("isolation.level", "read_uncommitted")
        .to_owned();
    let timeout = kafka_config.request_timeout;
    let owned = reading.clone();
    // librdkafka's blocking calls stay off the actor threads.
    let read = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer<kafka::LeveledEvents> = consumer_config
            .create_with_context(kafka::LeveledEvents)
            .map_err(|source| CheckpointError::Kafka {
                topic: owned.topic.clone(),
                what: "creating a reader",
                source,
            })?;
        let uncommitted: BaseConsumer<kafka::LeveledEvents> = uncommitted_config
            .create_with_context(kafka::LeveledEvents)
            .map_err(|source| CheckpointError::Kafka {
                topic: owned.topic.clone(),
                what: "creating a reader",
                source,
            })?;
        read_all(&consumer, &uncommitted, &owned, timeout)
    });
    match read.await {
        Ok(result) => result,
        Err(_) => Err(CheckpointError::Kafka {
            topic,
            what: "reading checkpoints",
            source: rdkafka::error::KafkaError::Canceled,
        }),
    }
}

/// Above this many records read, a load says the topic is not kept small: compaction is
/// off, or its settings were changed (see [`TOPIC_SETTINGS`]).
pub const LOAD_RECORDS_WARN: u64 = 100_000;

/// Records a load of `pipeline`'s checkpoints in the metrics; a load that read more than
/// [`LOAD_RECORDS_WARN`] records is a WARN: every start and rebalance pays it again.
pub fn report_load(metrics: &Metrics, pipeline: &str, loaded: &Loaded, took: Duration) {
    metrics.checkpoints_loaded(pipeline, loaded.records_read, took);
    if loaded.records_read > LOAD_RECORDS_WARN {
        tracing::warn!(
            pipeline,
            records = loaded.records_read,
            took = ?took,
            "loading the checkpoints read many records: the checkpoint topic is not compacted with small segments (cleanup.policy, segment.bytes, segment.ms, min.cleanable.dirty.ratio); every start and rebalance reads them all"
        );
    } else {
        tracing::debug!(pipeline, records = loaded.records_read, took = ?took, "loaded the checkpoints");
    }
}

/// What reading the topic found.
struct Read {
    stored: Vec<Stored>,
    /// The other pipelines' readers in the owned partitions: whether their newest record
    /// is a checkpoint written exactly-once (`None`: a tombstone, the reader is gone).
    others: HashMap<(String, String, i32), Option<bool>>,
    held: Vec<HeldBack>,
    records_read: u64,
}

impl Read {
    /// The other pipelines still present in the owned partitions.
    fn neighbours(&self) -> BTreeSet<Neighbour> {
        self.others
            .iter()
            .filter_map(|((pipeline, _, partition), exactly_once)| {
                Some(Neighbour {
                    pipeline: pipeline.clone(),
                    partition: *partition,
                    exactly_once: (*exactly_once)?,
                })
            })
            .collect()
    }
}

/// The low and high watermarks of `partition`; while its leader is not known yet (a topic
/// just created, a leader moving: [`kafka::leader_not_known_yet`]) asked again every 100 ms,
/// for up to `timeout`. Blocking: called off the actor threads.
fn watermarks(
    client: &BaseConsumer<kafka::LeveledEvents>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64), rdkafka::error::KafkaError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match client.fetch_watermarks(topic, partition, timeout) {
            Err(error)
                if kafka::leader_not_known_yet(&error) && std::time::Instant::now() < deadline =>
            {
                tracing::debug!(topic, partition, %error, "no leader known yet; asking again");
                std::thread::sleep(Duration::from_millis(100));
            }
            answer => return answer,
        }
    }
}

/// Reads the topic with `consumer` (`read_committed`); `uncommitted` (a
/// `read_uncommitted` client) tells the true end of the owned partitions.
fn read_all(
    consumer: &BaseConsumer<kafka::LeveledEvents>,
    uncommitted: &BaseConsumer<kafka::LeveledEvents>,
    reading: &Reading,
    timeout: Duration,
) -> Result<Read, CheckpointError> {
    let topic = reading.topic.as_str();
    let pipeline = reading.pipeline.as_str();
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
    let mut held = Vec::new();
    let mut assignment = TopicPartitionList::new();
    for &partition in &partitions {
        // The true end first, then the last stable offset (a `read_committed` client's
        // high watermark: where the partition's first open transaction begins). In this
        // order, records written in between never look like an open transaction.
        let end = if reading.owned.contains(&partition) {
            let (_, end) = watermarks(uncommitted, topic, partition, timeout)
                .map_err(err("fetching watermarks"))?;
            Some(end)
        } else {
            None
        };
        let (low, high) =
            watermarks(consumer, topic, partition, timeout).map_err(err("fetching watermarks"))?;
        if let Some(end) = end.filter(|end| high < *end) {
            held.push(HeldBack {
                partition,
                stable: high,
                end,
            });
        }
        if high > low {
            ends.insert(partition, high);
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(err("assigning"))?;
        }
    }
    let mut read = Read {
        stored: Vec::new(),
        others: HashMap::new(),
        held,
        records_read: 0,
    };
    if ends.is_empty() {
        return Ok(read);
    }
    let starting_ends = ends.clone();
    consumer.assign(&assignment).map_err(err("assigning"))?;
    // Not a deadline for the whole load (a large topic takes what it takes), but for a
    // load that stopped moving.
    let stall = timeout.max(Duration::from_secs(30));
    let mut last_progress = std::time::Instant::now();
    while !ends.is_empty() {
        if last_progress.elapsed() > stall {
            return Err(CheckpointError::Kafka {
                topic: topic.to_owned(),
                what: "reading to the end (no record for the request timeout)",
                source: rdkafka::error::KafkaError::Canceled,
            });
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        last_progress = std::time::Instant::now();
        let message = match message {
            Ok(message) => message,
            Err(rdkafka::error::KafkaError::PartitionEOF(partition)) => {
                ends.remove(&partition);
                continue;
            }
            Err(e) => return Err(err("reading")(e)),
        };
        read.records_read += 1;
        // The end as it was when the reading began: while other pipelines keep writing,
        // the partition's end moves and no end-of-partition event may ever come.
        if starting_ends
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
        let checkpoint = message.payload().map(serde_json::from_slice::<Checkpoint>);
        if key.pipeline != pipeline {
            if reading.owned.contains(&message.partition()) {
                // Records of a partition come in offset order: the last one counts.
                read.others.insert(
                    (key.pipeline, key.namespace, message.partition()),
                    checkpoint.map(|c| c.is_ok_and(|c| c.exactly_once)),
                );
            }
            continue;
        }
        let checkpoint = match checkpoint {
            Some(Ok(checkpoint)) => Some(checkpoint),
            // A tombstone resets the reader: it starts by its startup mode again.
            None => None,
            Some(Err(e)) => {
                tracing::warn!(pipeline, namespace = %key.namespace, error = %e, "ignoring an unreadable checkpoint");
                continue;
            }
        };
        read.stored.push(Stored {
            namespace: key.namespace,
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            checkpoint,
        });
    }
    Ok(read)
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
        let mut progress = CopyCursor::default();
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

    /// A checkpoint written before `start` existed reads as before; one that names a start
    /// makes its reader start there.
    #[test]
    fn a_checkpoint_from_before_start_points_still_reads() {
        let old = r#"{"resume_token":{"_data":"T3"},"generation":4}"#;
        let back: Checkpoint = serde_json::from_str(old).unwrap();
        assert_eq!(back.start, None);
        assert_eq!(back.generation, 4);
        assert!(matches!(back.start_at(), Ok(StartAt::Resume(p)) if p == token(3)));
        let at = Checkpoint::starting(StartFrom::Timestamp {
            t: 1_700_000_000,
            i: 2,
        });
        let text = serde_json::to_string(&at.clone().stamped(5, false)).unwrap();
        assert_eq!(
            text,
            r#"{"resume_token":null,"start":{"at":"timestamp","t":1700000000,"i":2},"generation":5}"#
        );
        let back: Checkpoint = serde_json::from_str(&text).unwrap();
        assert!(
            matches!(back.start_at(), Ok(StartAt::Time(t)) if t.time == 1_700_000_000 && t.increment == 2)
        );
        let latest: Checkpoint =
            serde_json::from_str(r#"{"start":{"at":"latest"},"generation":1}"#).unwrap();
        assert!(matches!(latest.start_at(), Ok(StartAt::Latest)));
        let copy = Checkpoint::starting(StartFrom::CopyExisting);
        assert!(matches!(copy.start_at(), Ok(StartAt::CopyExisting)));
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

    /// Issue 21, item 6: within a partition the later record wins whatever the clocks
    /// said; across partitions a later start's checkpoint (a higher generation) wins over
    /// one whose producer's clock was ahead.
    #[test]
    fn the_newest_checkpoint_is_chosen_by_offset_and_generation_not_by_clock() {
        // One partition: the later offset wins though its clock is behind.
        let records = vec![stored(5, 3, 9_000, Some(3)), stored(5, 4, 1_000, Some(4))];
        assert_eq!(resolved(records, 5), Some(token(4)));
        // Two partitions (`slots` changed from 16 to 8 and back): the reader wrote to
        // partition 5, then to 3 by a later start whose clock was behind; now its slot is 5
        // again. The later start's checkpoint wins.
        let mut earlier = stored(5, 10, 9_000, Some(1));
        earlier.checkpoint = earlier.checkpoint.map(|c| c.stamped(1, false));
        let mut later = stored(3, 2, 1_000, Some(2));
        later.checkpoint = later.checkpoint.map(|c| c.stamped(2, false));
        for order in [[0, 1], [1, 0]] {
            let records = [earlier.clone(), later.clone()];
            let records = order.iter().map(|&i| records[i].clone()).collect();
            assert_eq!(resolved(records, 5), Some(token(2)));
        }
    }

    /// Issue 21, item 6: a checkpoint of partition 0 left from before slots (its clock
    /// ahead, or uncovered again once compaction dropped what hid it) never beats the
    /// reader's checkpoint in its own slot's partition.
    #[test]
    fn a_checkpoint_from_before_slots_never_beats_the_readers_own_partition() {
        let legacy = stored(0, 7, 5_000, Some(1));
        // Written in the reader's own partition after the migration, by a daemon whose clock
        // is behind the one that wrote the legacy checkpoint.
        let mut own = stored(5, 0, 4_000, Some(2));
        own.checkpoint = own.checkpoint.map(|c| c.stamped(1, false));
        for order in [[0, 1], [1, 0]] {
            let records = [legacy.clone(), own.clone()];
            let records = order.iter().map(|&i| records[i].clone()).collect();
            assert_eq!(resolved(records, 5), Some(token(2)));
        }
        // Even from before generations, the reader's own partition wins over the clock.
        let own_legacy = stored(5, 0, 4_000, Some(2));
        assert_eq!(
            resolved(vec![legacy.clone(), own_legacy], 5),
            Some(token(2))
        );
        // A tombstone in the reader's own partition after its checkpoint resets it.
        let mut own = stored(5, 0, 4_000, Some(2));
        own.checkpoint = own.checkpoint.map(|c| c.stamped(1, false));
        let tombstone = stored(5, 1, 3_000, None);
        assert_eq!(resolved(vec![legacy, own, tombstone], 5), None);
    }

    fn reading(exactly_once: bool) -> Reading {
        Reading {
            topic: "cp".into(),
            pipeline: "a".into(),
            slots: 16,
            exactly_once,
            owned: vec![3],
            legacy_topic: None,
        }
    }

    fn neighbour(exactly_once: bool) -> BTreeSet<Neighbour> {
        BTreeSet::from([Neighbour {
            pipeline: "b".into(),
            partition: 3,
            exactly_once,
        }])
    }

    #[test]
    fn an_exactly_once_pipeline_never_shares_its_checkpoint_partitions() {
        for neighbour_exactly_once in [false, true] {
            let refused = refusal(&reading(true), &neighbour(neighbour_exactly_once), &[]).unwrap();
            assert!(
                refused.contains("exactly-once pipeline `a` and pipeline `b`")
                    && refused.contains("`cp` partition 3"),
                "{refused}"
            );
        }
        // At-least-once beside an exactly-once pipeline: a warning, naming both.
        assert_eq!(refusal(&reading(false), &neighbour(true), &[]), None);
        let warned = warnings(&reading(false), &neighbour(true), &[]);
        assert!(
            warned.len() == 1 && warned[0].contains("`a` and exactly-once pipeline `b`"),
            "{warned:?}"
        );
        assert!(warnings(&reading(false), &neighbour(false), &[]).is_empty());
        assert_eq!(refusal(&reading(true), &BTreeSet::new(), &[]), None);
        let held = [HeldBack {
            partition: 3,
            stable: 10,
            end: 12,
        }];
        let refused = refusal(&reading(true), &BTreeSet::new(), &held).unwrap();
        assert!(refused.contains("offset 10 (end 12)"), "{refused}");
        // At-least-once held back: warned about; a partition it does not own holds back
        // nothing it starts.
        assert_eq!(refusal(&reading(false), &BTreeSet::new(), &held), None);
        assert_eq!(warnings(&reading(false), &BTreeSet::new(), &held).len(), 1);
        let elsewhere = [HeldBack {
            partition: 4,
            ..held[0].clone()
        }];
        assert_eq!(refusal(&reading(true), &BTreeSet::new(), &elsewhere), None);
        assert!(warnings(&reading(false), &BTreeSet::new(), &elsewhere).is_empty());
    }

    #[test]
    fn missing_topic_settings_are_added_and_set_ones_kept() {
        let setting = |name: &str, value: &str, set_on_topic| TopicSetting {
            name: name.into(),
            value: Some(value.into()),
            set_on_topic,
        };
        // A topic created by an earlier version: compacted, segments at the defaults.
        let current = vec![
            setting("cleanup.policy", "compact", true),
            setting("segment.bytes", "1073741824", false),
            setting("segment.ms", "604800000", false),
            setting("retention.ms", "86400000", true),
            setting("min.cleanable.dirty.ratio", "0.5", false),
        ];
        let apply = settings_to_apply(&current).unwrap();
        assert_eq!(
            apply,
            vec![
                ("cleanup.policy".to_owned(), "compact".to_owned()),
                ("retention.ms".to_owned(), "86400000".to_owned()),
                ("segment.bytes".to_owned(), "1048576".to_owned()),
                ("segment.ms".to_owned(), "600000".to_owned()),
                ("min.cleanable.dirty.ratio".to_owned(), "0.1".to_owned()),
            ]
        );
        // Someone chose their own segment size: kept; nothing else missing, nothing to do.
        let current = vec![
            setting("cleanup.policy", "compact", true),
            setting("segment.bytes", "2097152", true),
            setting("segment.ms", "600000", true),
            setting("min.cleanable.dirty.ratio", "0.2", true),
        ];
        assert_eq!(settings_to_apply(&current), None);
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
