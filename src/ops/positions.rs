//! Moving a pipeline's positions from the command line: a source pipeline's checkpoints
//! (`mongo-kafka-bridge checkpoints list|set|reset`) and a sink pipeline's committed
//! offsets (`mongo-kafka-bridge offsets list|set|reset`).
//!
//! Rules kept here:
//! - Nothing moves while the pipeline's consumer group has live members (KIP-875's rule):
//!   a running daemon would overwrite the new position with its own, or never read it.
//!   The refusal names every member ([`live_members_refusal`]).
//! - A checkpoint written here wins over every earlier one of its reader: it carries one
//!   more than the highest generation the pipeline ever wrote (`checkpoint.rs`), and goes
//!   to the reader's slot's partition.
//! - A reset writes a tombstone in every partition holding a record of the reader (and in
//!   its slot's): the last record of each is then a tombstone, so no older checkpoint left
//!   in another partition (a changed `slots`) comes back; `startup_mode` decides.
//!
//! What to write is planned by pure functions ([`plan_checkpoints`], [`plan_offsets`]);
//! the I/O (reading the topic, describing the group, writing, committing) is separate.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::cli::{CheckpointsAction, OffsetsAction};
use crate::clients::kafka;
use crate::config::{Config, Delivery, KafkaConfig, SinkConfig, SourceConfig};
use crate::source::checkpoint::{self, Checkpoint, CheckpointKey, StartFrom, Stored};
use crate::source::membership;
use crate::source::model::Scope;
use crate::source::slots::slot_of;

/// Why a position could not be listed or moved: said to the operator as it is.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PositionError(pub String);

fn fail(what: impl std::fmt::Display) -> PositionError {
    PositionError(what.to_string())
}

// ---------------------------------------------------------------- checkpoints (pure)

/// Where `checkpoints set` (or `reset`) moves a source reader.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckpointMove {
    /// Start at this cluster time.
    Timestamp(bson::Timestamp),
    /// Start after this resume token (canonical extended JSON).
    Token(serde_json::Value),
    /// Start at the newest change.
    Latest,
    /// Copy the existing documents again.
    Copy,
    /// Remove the checkpoint: `startup_mode` decides.
    Reset,
}

/// A resume token as given on the command line: its JSON document (`{"_data": "82..."}`)
/// or the bare `_data` string.
pub fn parse_token(text: &str) -> Result<serde_json::Value, String> {
    let text = text.trim();
    if text.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("the resume token `{text}` is not JSON: {e}"))?;
        if !value.is_object() {
            return Err(format!("the resume token `{text}` is not a document"));
        }
        return Ok(value);
    }
    if text.is_empty() {
        return Err("the resume token is empty".into());
    }
    Ok(serde_json::json!({ "_data": text }))
}

/// One checkpoint record to write.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCheckpoint {
    /// Its key.
    pub key: CheckpointKey,
    /// The partition it goes to.
    pub partition: i32,
    /// The checkpoint; `None`: a tombstone.
    pub checkpoint: Option<Checkpoint>,
}

/// The readers a command addresses: `namespace` when given (it must be one of the
/// pipeline's readers, configured or found in the topic), else every configured reader.
pub fn readers(
    pipeline: &str,
    configured: &[String],
    stored: &[Stored],
    namespace: Option<&str>,
) -> Result<Vec<String>, String> {
    let known: BTreeSet<&str> = configured
        .iter()
        .map(String::as_str)
        .chain(stored.iter().map(|s| s.namespace.as_str()))
        .collect();
    match namespace {
        Some(ns) if known.contains(ns) => Ok(vec![ns.to_owned()]),
        Some(ns) => Err(format!(
            "`{ns}` is not a reader of source pipeline `{pipeline}`; its readers: {}",
            known.into_iter().collect::<Vec<_>>().join(", ")
        )),
        None => Ok(configured.to_vec()),
    }
}

/// The records that move `namespaces` of `pipeline` as `moved` says, given every record of
/// the pipeline in its checkpoint topic. Pure.
pub fn plan_checkpoints(
    source: &SourceConfig,
    namespaces: &[String],
    stored: &[Stored],
    moved: &CheckpointMove,
) -> Vec<PlannedCheckpoint> {
    let pipeline = source.name.as_str();
    // One more than any the pipeline wrote: it wins over every earlier checkpoint.
    let generation = stored
        .iter()
        .filter_map(|s| s.checkpoint.as_ref())
        .map(|c| c.generation)
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let exactly_once = source.delivery == Delivery::ExactlyOnce;
    let mut planned = Vec::new();
    for namespace in namespaces {
        let key = CheckpointKey {
            pipeline: pipeline.to_owned(),
            namespace: namespace.clone(),
        };
        let slot = slot_of(pipeline, namespace, source.slots);
        let checkpoint = match moved {
            CheckpointMove::Reset => None,
            CheckpointMove::Timestamp(at) => Some(Checkpoint::starting(StartFrom::Timestamp {
                t: at.time,
                i: at.increment,
            })),
            CheckpointMove::Latest => Some(Checkpoint::starting(StartFrom::Latest)),
            CheckpointMove::Copy => Some(Checkpoint::starting(StartFrom::CopyExisting)),
            CheckpointMove::Token(token) => Some(Checkpoint {
                resume_token: token.clone(),
                start: None,
                copy: None,
                snapshot: None,
                generation: 0,
                exactly_once: false,
            }),
        };
        match checkpoint {
            Some(checkpoint) => planned.push(PlannedCheckpoint {
                key,
                partition: slot,
                checkpoint: Some(checkpoint.stamped(generation, exactly_once)),
            }),
            None => {
                let partitions: BTreeSet<i32> = stored
                    .iter()
                    .filter(|s| &s.namespace == namespace)
                    .map(|s| s.partition)
                    .chain([slot])
                    .collect();
                planned.extend(partitions.into_iter().map(|partition| PlannedCheckpoint {
                    key: key.clone(),
                    partition,
                    checkpoint: None,
                }));
            }
        }
    }
    planned
}

/// One line of `checkpoints list`: the reader, its slot, and where it starts. Pure.
pub fn describe_checkpoint(namespace: &str, slot: i32, checkpoint: Option<&Checkpoint>) -> String {
    let Some(checkpoint) = checkpoint else {
        return format!("{namespace}\tslot {slot}\tno checkpoint (startup_mode decides)");
    };
    let at = match &checkpoint.start {
        Some(StartFrom::Timestamp { t, i }) => format!("start at timestamp {t}.{i}"),
        Some(StartFrom::Latest) => "start at the newest change".to_owned(),
        Some(StartFrom::CopyExisting) => "copy the existing documents again".to_owned(),
        None => format!("token {}", checkpoint.resume_token),
    };
    let copy = match &checkpoint.copy {
        Some(copy) => format!(
            "\tcopy {}",
            serde_json::to_string(copy).unwrap_or_else(|e| e.to_string())
        ),
        None => String::new(),
    };
    format!(
        "{namespace}\tslot {slot}\t{at}{copy}\tgeneration {}",
        checkpoint.generation
    )
}

// ---------------------------------------------------------------- groups (pure)

/// A live member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its member id.
    pub member_id: String,
    /// Its `client.id`.
    pub client_id: String,
    /// The host it connected from.
    pub host: String,
}

/// Why positions of `pipeline` may not move while `members` are in its group `group`;
/// `None` when the group is empty. Pure.
pub fn live_members_refusal(pipeline: &str, group: &str, members: &[Member]) -> Option<String> {
    if members.is_empty() {
        return None;
    }
    let named: Vec<String> = members
        .iter()
        .map(|m| {
            format!(
                "{} (client id `{}`, host `{}`)",
                m.member_id, m.client_id, m.host
            )
        })
        .collect();
    Some(format!(
        "pipeline `{pipeline}` is running: its consumer group `{group}` has {} live member(s): {}; stop every daemon running it first",
        members.len(),
        named.join(", ")
    ))
}

// ---------------------------------------------------------------- offsets (pure)

/// Where `offsets set` moves a sink's committed offsets.
#[derive(Debug, Clone, PartialEq)]
pub enum OffsetMove {
    /// Each partition's first offset.
    Earliest,
    /// Each partition's end.
    Latest,
    /// The first offset whose timestamp is at or after this (milliseconds since the epoch).
    Timestamp(i64),
    /// These offsets, by partition (one topic).
    Offsets(Vec<(i32, i64)>),
}

/// `P:O,P:O,...` as partitions and offsets.
pub fn parse_offsets(text: &str) -> Result<Vec<(i32, i64)>, String> {
    text.split(',')
        .map(|pair| {
            let (p, o) = pair
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("`{pair}` is not PARTITION:OFFSET"))?;
            let p = p
                .trim()
                .parse()
                .map_err(|_| format!("`{pair}`: `{p}` is not a partition number"))?;
            let o = o
                .trim()
                .parse()
                .map_err(|_| format!("`{pair}`: `{o}` is not an offset"))?;
            Ok((p, o))
        })
        .collect()
}

/// A time as milliseconds since the epoch: RFC 3339, or a number of milliseconds.
pub fn parse_time_millis(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| format!("`{text}` is too large for milliseconds since the epoch"));
    }
    let at = humantime::parse_rfc3339_weak(text).map_err(|e| {
        format!("`{text}` is not an RFC 3339 time or milliseconds since the epoch: {e}")
    })?;
    let millis = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("`{text}` is before 1970"))?
        .as_millis();
    i64::try_from(millis).map_err(|_| format!("`{text}` is too late"))
}

/// One partition of a sink's topics: its offsets and the group's committed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Its first offset.
    pub low: i64,
    /// Its end.
    pub high: i64,
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
}

impl PartitionState {
    /// Records behind the end: from the committed offset, or from the first offset when
    /// nothing was committed (the sink reads from the earliest).
    pub fn lag(&self) -> i64 {
        (self.high - self.committed.unwrap_or(self.low).max(self.low)).max(0)
    }
}

/// The offsets to commit for `states` as `moved` says; `at_time` holds, for a timestamp
/// move, each partition's offset for that time (`None`: no record that late, the end).
/// Pure.
pub fn plan_offsets(
    states: &[PartitionState],
    moved: &OffsetMove,
    at_time: &HashMap<(String, i32), Option<i64>>,
) -> Result<Vec<(String, i32, i64)>, String> {
    if let OffsetMove::Offsets(offsets) = moved {
        let topics: BTreeSet<&str> = states.iter().map(|s| s.topic.as_str()).collect();
        if topics.len() != 1 {
            return Err(format!(
                "--to-offset names partitions of one topic: choose one with --topic (the pipeline reads {})",
                topics.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        return offsets
            .iter()
            .map(|&(partition, offset)| {
                let state = states
                    .iter()
                    .find(|s| s.partition == partition)
                    .ok_or_else(|| {
                        format!("topic `{}` has no partition {partition}", states[0].topic)
                    })?;
                if offset < state.low || offset > state.high {
                    return Err(format!(
                        "topic `{}` partition {partition}: offset {offset} is outside {}..={}",
                        state.topic, state.low, state.high
                    ));
                }
                Ok((state.topic.clone(), partition, offset))
            })
            .collect();
    }
    Ok(states
        .iter()
        .map(|s| {
            let offset = match moved {
                OffsetMove::Earliest => s.low,
                OffsetMove::Latest => s.high,
                OffsetMove::Timestamp(_) => at_time
                    .get(&(s.topic.clone(), s.partition))
                    .copied()
                    .flatten()
                    .unwrap_or(s.high)
                    .clamp(s.low, s.high),
                OffsetMove::Offsets(_) => s.high,
            };
            (s.topic.clone(), s.partition, offset)
        })
        .collect())
}

// ---------------------------------------------------------------- I/O

/// The source pipeline `name` of `config`.
pub fn source<'a>(config: &'a Config, name: &str) -> Result<&'a SourceConfig, PositionError> {
    config
        .sources
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            fail(format!(
                "no source pipeline `{name}` in the configuration (sources: {})",
                config
                    .sources
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The sink pipeline `name` of `config`.
pub fn sink<'a>(config: &'a Config, name: &str) -> Result<&'a SinkConfig, PositionError> {
    config.sinks.iter().find(|s| s.name == name).ok_or_else(|| {
        fail(format!(
            "no sink pipeline `{name}` in the configuration (sinks: {})",
            config
                .sinks
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

fn kafka_error(what: String) -> impl FnOnce(rdkafka::error::KafkaError) -> PositionError {
    move |e| fail(format!("{what}: {e}"))
}

fn metadata_consumer(
    kafka_config: &KafkaConfig,
    group: &str,
) -> Result<BaseConsumer, PositionError> {
    kafka::client_config(kafka_config, kafka::Role::Consumer)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(kafka_error(format!(
            "creating a client for group `{group}`"
        )))
}

/// The live members of consumer group `group` (classic protocol: `DescribeGroups`).
pub fn group_members(
    kafka_config: &KafkaConfig,
    group: &str,
) -> Result<Vec<Member>, PositionError> {
    let consumer = metadata_consumer(kafka_config, group)?;
    let list = consumer
        .fetch_group_list(Some(group), kafka_config.request_timeout)
        .map_err(kafka_error(format!("describing consumer group `{group}`")))?;
    Ok(list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .flat_map(|g| g.members())
        .map(|m| Member {
            member_id: m.id().to_owned(),
            client_id: m.client_id().to_owned(),
            host: m.client_host().to_owned(),
        })
        .collect())
}

fn refuse_while_live(
    kafka_config: &KafkaConfig,
    pipeline: &str,
    group: &str,
) -> Result<(), PositionError> {
    let members = group_members(kafka_config, group)?;
    match live_members_refusal(pipeline, group, &members) {
        Some(reason) => Err(fail(reason)),
        None => Ok(()),
    }
}

/// The pipeline's own checkpoint topic, no slot owned.
fn reading(source: &SourceConfig) -> checkpoint::Reading {
    checkpoint::Reading {
        legacy_topic: None,
        ..checkpoint::Reading::start(source, Vec::new())
    }
}

/// `checkpoints list`: each reader's namespace, slot and where it starts.
pub async fn list_checkpoints(
    kafka_config: &KafkaConfig,
    source: &SourceConfig,
    namespace: Option<&str>,
) -> Result<Vec<String>, PositionError> {
    // What a start loads: the shared topic's too while its own holds none.
    let as_loaded = checkpoint::Reading::start(source, Vec::new());
    let stored = checkpoint::stored_as_loaded(kafka_config, &as_loaded)
        .await
        .map_err(fail)?;
    let configured: Vec<String> = Scope::of(source).iter().map(Scope::namespace).collect();
    let mut namespaces: BTreeSet<String> = readers(&source.name, &configured, &stored, namespace)
        .map_err(fail)?
        .into_iter()
        .collect();
    if namespace.is_none() {
        // Readers no longer configured still have their checkpoints: list them too.
        namespaces.extend(stored.iter().map(|s| s.namespace.clone()));
    }
    let pipeline = source.name.clone();
    let slots = source.slots;
    let newest = checkpoint::newest(stored, |ns| slot_of(&pipeline, ns, slots));
    Ok(namespaces
        .iter()
        .map(|ns| describe_checkpoint(ns, slot_of(&source.name, ns, source.slots), newest.get(ns)))
        .collect())
}

/// `checkpoints set|reset`: refused while a daemon runs the pipeline; else writes what
/// [`plan_checkpoints`] says and returns one line per record written.
pub async fn move_checkpoints(
    kafka_config: &KafkaConfig,
    source: &SourceConfig,
    namespace: Option<&str>,
    moved: &CheckpointMove,
) -> Result<Vec<String>, PositionError> {
    refuse_while_live(
        kafka_config,
        &source.name,
        &membership::group_id(&source.name),
    )?;
    let partitions = i32::try_from(source.slots).unwrap_or(i32::MAX);
    checkpoint::ensure_topic(kafka_config, &source.checkpoint_topic, partitions)
        .await
        .map_err(fail)?;
    let stored = checkpoint::stored(kafka_config, &reading(source))
        .await
        .map_err(fail)?;
    let configured: Vec<String> = Scope::of(source).iter().map(Scope::namespace).collect();
    let namespaces = readers(&source.name, &configured, &stored, namespace).map_err(fail)?;
    let planned = plan_checkpoints(source, &namespaces, &stored, moved);
    let mut written = write(kafka_config, &source.checkpoint_topic, planned).await?;
    // An exactly-once pipeline whose own topic holds none of its checkpoints resumes from
    // the shared topic where it kept them before (`checkpoint::load`): a reset removes them
    // there too, or they would come back.
    if let (CheckpointMove::Reset, Some(legacy)) = (moved, source.legacy_checkpoint_topic()) {
        let earlier = checkpoint::Reading {
            topic: legacy.to_owned(),
            ..reading(source)
        };
        let stored = checkpoint::stored(kafka_config, &earlier)
            .await
            .map_err(fail)?;
        let theirs: Vec<String> = namespaces
            .iter()
            .filter(|ns| stored.iter().any(|s| &s.namespace == *ns))
            .cloned()
            .collect();
        let planned = plan_checkpoints(source, &theirs, &stored, moved);
        let more = write(kafka_config, legacy, planned).await?;
        written.extend(
            more.into_iter()
                .map(|line| format!("{line}\t(in `{legacy}`)")),
        );
    }
    Ok(written)
}

/// Writes `planned` to `topic` off the runtime's threads.
async fn write(
    kafka_config: &KafkaConfig,
    topic: &str,
    planned: Vec<PlannedCheckpoint>,
) -> Result<Vec<String>, PositionError> {
    if planned.is_empty() {
        return Ok(Vec::new());
    }
    let topic = topic.to_owned();
    let config = kafka_config.clone();
    let write = move || write_checkpoints(&config, &topic, &planned);
    tokio::task::spawn_blocking(write)
        .await
        .map_err(|e| fail(format!("writing checkpoints: {e}")))?
}

fn write_checkpoints(
    kafka_config: &KafkaConfig,
    topic: &str,
    planned: &[PlannedCheckpoint],
) -> Result<Vec<String>, PositionError> {
    let producer: BaseProducer = kafka::client_config(kafka_config, kafka::Role::Producer)
        .set("acks", "all")
        .create()
        .map_err(kafka_error(format!(
            "checkpoint topic `{topic}`: creating a producer"
        )))?;
    let mut written = Vec::new();
    for plan in planned {
        let ns = &plan.key.namespace;
        let key = serde_json::to_vec(&plan.key).map_err(fail)?;
        let value = match &plan.checkpoint {
            Some(c) => Some(serde_json::to_vec(c).map_err(fail)?),
            None => None,
        };
        let mut record = BaseRecord::<Vec<u8>, Vec<u8>>::to(topic)
            .key(&key)
            .partition(plan.partition);
        if let Some(value) = &value {
            record = record.payload(value);
        }
        producer.send(record).map_err(|(e, _)| {
            fail(format!(
                "checkpoint topic `{topic}` partition {}: writing `{ns}`: {e}",
                plan.partition
            ))
        })?;
        written.push(match &plan.checkpoint {
            Some(c) => describe_checkpoint(ns, plan.partition, Some(c)),
            None => format!(
                "{ns}\tpartition {}\ttombstone (startup_mode decides)",
                plan.partition
            ),
        });
    }
    producer
        .flush(kafka_config.request_timeout.max(Duration::from_secs(10)))
        .map_err(kafka_error(format!("checkpoint topic `{topic}`: writing")))?;
    Ok(written)
}

/// The topics of `sink` (its `topics`, or those matching `topics_regex`), narrowed to
/// `only` when given.
fn sink_topics(
    consumer: &BaseConsumer,
    sink: &SinkConfig,
    only: Option<&str>,
    timeout: Duration,
) -> Result<Vec<String>, PositionError> {
    let mut topics: Vec<String> = sink.topics.clone();
    if let Some(pattern) = &sink.topics_regex {
        let re = regex::Regex::new(pattern)
            .map_err(|e| fail(format!("sink `{}` topics_regex: {e}", sink.name)))?;
        let metadata = consumer
            .fetch_metadata(None, timeout)
            .map_err(kafka_error("listing topics".into()))?;
        topics.extend(
            metadata
                .topics()
                .iter()
                .map(|t| t.name().to_owned())
                .filter(|t| re.is_match(t)),
        );
    }
    topics.sort();
    topics.dedup();
    match only {
        Some(topic) if topics.iter().any(|t| t == topic) => Ok(vec![topic.to_owned()]),
        Some(topic) => Err(fail(format!(
            "sink pipeline `{}` does not read topic `{topic}` (it reads {})",
            sink.name,
            topics.join(", ")
        ))),
        None => Ok(topics),
    }
}

fn partition_states(
    consumer: &BaseConsumer,
    group: &str,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<PartitionState>, PositionError> {
    let mut states = Vec::new();
    let mut list = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(kafka_error(format!("topic `{topic}`: fetching metadata")))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) =
                    consumer
                        .fetch_watermarks(topic, p.id(), timeout)
                        .map_err(kafka_error(format!(
                            "topic `{topic}` partition {}: fetching offsets",
                            p.id()
                        )))?;
                list.add_partition(topic, p.id());
                states.push(PartitionState {
                    topic: topic.clone(),
                    partition: p.id(),
                    low,
                    high,
                    committed: None,
                });
            }
        }
    }
    if states.is_empty() {
        return Ok(states);
    }
    let committed = consumer
        .committed_offsets(list, timeout)
        .map_err(kafka_error(format!(
            "group `{group}`: fetching committed offsets"
        )))?;
    for state in &mut states {
        if let Some(Offset::Offset(o)) = committed
            .find_partition(&state.topic, state.partition)
            .map(|e| e.offset())
        {
            state.committed = Some(o);
        }
    }
    states.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(states)
}

/// One line of `offsets list`. Pure.
pub fn describe_offsets(state: &PartitionState) -> String {
    let committed = state
        .committed
        .map_or_else(|| "none".to_owned(), |o| o.to_string());
    format!(
        "{}\tpartition {}\tcommitted {committed}\tend {}\tlag {}",
        state.topic,
        state.partition,
        state.high,
        state.lag()
    )
}

/// What an `offsets` command does.
#[derive(Debug, Clone, PartialEq)]
pub enum OffsetsCommand {
    /// List the committed offsets and the lag.
    List,
    /// Commit new offsets.
    Set(OffsetMove),
    /// Remove the group's committed offsets (the group is deleted): the sink starts from
    /// the earliest (its `auto.offset.reset`).
    Reset,
}

/// `offsets list|set|reset` for `sink` (blocking: librdkafka's calls).
pub fn offsets(
    kafka_config: &KafkaConfig,
    sink: &SinkConfig,
    topic: Option<&str>,
    command: &OffsetsCommand,
) -> Result<Vec<String>, PositionError> {
    let group = sink.effective_group_id();
    let timeout = kafka_config.request_timeout;
    if *command != OffsetsCommand::List {
        refuse_while_live(kafka_config, &sink.name, &group)?;
    }
    let consumer = metadata_consumer(kafka_config, &group)?;
    let topics = sink_topics(&consumer, sink, topic, timeout)?;
    let states = partition_states(&consumer, &group, &topics, timeout)?;
    let moved = match command {
        OffsetsCommand::List => return Ok(states.iter().map(describe_offsets).collect()),
        OffsetsCommand::Set(moved) => moved.clone(),
        OffsetsCommand::Reset if topic.is_some() => {
            return Err(fail(
                "`offsets reset` removes the whole group's offsets; for one topic use `offsets set --topic T --to-earliest`",
            ))
        }
        OffsetsCommand::Reset => {
            return reset_group(kafka_config, &group).map(|()| {
                vec![format!(
                    "group `{group}`: committed offsets removed; sink `{}` starts from its `auto.offset.reset` (earliest unless [kafka.consumer] says otherwise)",
                    sink.name
                )]
            })
        }
    };
    let mut at_time = HashMap::new();
    if let OffsetMove::Timestamp(millis) = moved {
        let mut list = TopicPartitionList::new();
        for s in &states {
            list.add_partition_offset(&s.topic, s.partition, Offset::Offset(millis))
                .map_err(kafka_error(format!("topic `{}`", s.topic)))?;
        }
        let found = consumer
            .offsets_for_times(list, timeout)
            .map_err(kafka_error("looking offsets up by time".into()))?;
        for e in found.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            at_time.insert((e.topic().to_owned(), e.partition()), offset);
        }
    }
    let planned = plan_offsets(&states, &moved, &at_time).map_err(fail)?;
    let mut list = TopicPartitionList::new();
    for (t, p, o) in &planned {
        list.add_partition_offset(t, *p, Offset::Offset(*o))
            .map_err(kafka_error(format!("topic `{t}` partition {p}")))?;
    }
    consumer
        .commit(&list, CommitMode::Sync)
        .map_err(kafka_error(format!("group `{group}`: committing offsets")))?;
    let committed = partition_states(&consumer, &group, &topics, timeout)?;
    Ok(committed.iter().map(describe_offsets).collect())
}

fn reset_group(kafka_config: &KafkaConfig, group: &str) -> Result<(), PositionError> {
    let admin = kafka::admin(kafka_config).map_err(fail)?;
    let options =
        rdkafka::admin::AdminOptions::new().request_timeout(Some(kafka_config.request_timeout));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    let results = runtime
        .block_on(admin.delete_groups(&[group], &options))
        .map_err(kafka_error(format!("deleting group `{group}`")))?;
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::GroupIdNotFound)) => {}
            Err((_, code)) => {
                return Err(fail(format!("deleting group `{group}`: {code}")));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- commands

fn load(path: &std::path::Path) -> Result<Config, PositionError> {
    crate::config::load(path).map_err(fail)
}

fn runtime() -> Result<tokio::runtime::Runtime, PositionError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("starting a runtime: {e}")))
}

/// Carries out `mongo-kafka-bridge checkpoints ...`: the lines to print.
pub fn checkpoints_command(action: &CheckpointsAction) -> Result<Vec<String>, PositionError> {
    let target = match action {
        CheckpointsAction::List(target) | CheckpointsAction::Reset(target) => target,
        CheckpointsAction::Set { target, .. } => target,
    };
    let config = load(&target.config)?;
    let source = source(&config, &target.pipeline)?;
    let moved = match action {
        CheckpointsAction::List(_) => None,
        CheckpointsAction::Reset(_) => Some(CheckpointMove::Reset),
        CheckpointsAction::Set { to, .. } => Some(if let Some(text) = &to.timestamp {
            CheckpointMove::Timestamp(parse_cluster_time(source, text).map_err(fail)?)
        } else if let Some(text) = &to.token {
            CheckpointMove::Token(parse_token(text).map_err(fail)?)
        } else if to.copy {
            CheckpointMove::Copy
        } else {
            CheckpointMove::Latest
        }),
    };
    let namespace = target.namespace.as_deref();
    runtime()?.block_on(async {
        match &moved {
            None => list_checkpoints(&config.kafka, source, namespace).await,
            Some(moved) => move_checkpoints(&config.kafka, source, namespace, moved).await,
        }
    })
}

/// A cluster time as `startup_timestamp` takes it: RFC 3339, seconds since the epoch, or a
/// BSON timestamp in extended JSON.
fn parse_cluster_time(source: &SourceConfig, text: &str) -> Result<bson::Timestamp, String> {
    let probe = SourceConfig {
        startup_timestamp: Some(text.to_owned()),
        ..source.clone()
    };
    probe
        .startup_time()
        .map_err(|e| format!("--timestamp: {e}"))?
        .ok_or_else(|| "--timestamp: empty".to_owned())
}

/// Carries out `mongo-kafka-bridge offsets ...`: the lines to print.
pub fn offsets_command(action: &OffsetsAction) -> Result<Vec<String>, PositionError> {
    let (target, command) = match action {
        OffsetsAction::List(target) => (target, OffsetsCommand::List),
        OffsetsAction::Reset(target) => (target, OffsetsCommand::Reset),
        OffsetsAction::Set { target, to } => {
            let moved = if let Some(text) = &to.to_timestamp {
                OffsetMove::Timestamp(parse_time_millis(text).map_err(fail)?)
            } else if let Some(text) = &to.to_offset {
                OffsetMove::Offsets(parse_offsets(text).map_err(fail)?)
            } else if to.to_latest {
                OffsetMove::Latest
            } else {
                OffsetMove::Earliest
            };
            (target, OffsetsCommand::Set(moved))
        }
    };
    let config = load(&target.config)?;
    let sink = sink(&config, &target.pipeline)?;
    offsets(&config.kafka, sink, target.topic.as_deref(), &command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(extra: &str) -> SourceConfig {
        let text = format!(
            "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"h:1\"\n[[source]]\nname = \"s\"\ndatabase = \"db\"\ncollection = [\"a\", \"b\"]\n{extra}\n"
        );
        crate::config::load_str(&text, std::path::Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .sources
            .remove(0)
    }

    fn stored(namespace: &str, partition: i32, offset: i64, generation: Option<u64>) -> Stored {
        Stored {
            namespace: namespace.into(),
            partition,
            offset,
            timestamp: Some(offset),
            checkpoint: generation.map(|g| {
                Checkpoint {
                    resume_token: serde_json::json!({ "_data": format!("T{offset}") }),
                    start: None,
                    copy: None,
                    snapshot: None,
                    generation: 0,
                    exactly_once: false,
                }
                .stamped(g, false)
            }),
        }
    }

    fn slot(ns: &str) -> i32 {
        slot_of("s", ns, source("").slots)
    }

    /// A checkpoint written by `set` wins over every earlier one of its reader, wherever
    /// that one is: `load` then starts the reader where it says.
    #[test]
    fn a_set_checkpoint_wins_over_every_earlier_one() {
        let config = source("");
        // Checkpoints of `db.a` in its slot and in another partition (a changed `slots`),
        // the higher generation in the other.
        let other = (slot("db.a") + 1) % 16;
        let before = vec![
            stored("db.a", slot("db.a"), 4, Some(2)),
            stored("db.a", other, 9, Some(7)),
            stored("db.b", slot("db.b"), 3, Some(3)),
        ];
        let at = bson::Timestamp {
            time: 1_700_000_000,
            increment: 1,
        };
        let planned = plan_checkpoints(
            &config,
            &["db.a".to_owned()],
            &before,
            &CheckpointMove::Timestamp(at),
        );
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].partition, slot("db.a"));
        let written = planned[0].checkpoint.clone().unwrap();
        assert_eq!(written.generation, 8, "one more than the highest (7)");
        let mut after = before.clone();
        after.push(Stored {
            namespace: "db.a".into(),
            partition: planned[0].partition,
            offset: 5,
            timestamp: Some(0),
            checkpoint: Some(written),
        });
        let newest = checkpoint::newest(after, slot);
        assert!(matches!(
            newest["db.a"].start_at(),
            Ok(crate::source::model::StartAt::Time(t)) if t == at
        ));
        // `db.b` untouched.
        assert_eq!(newest["db.b"].resume_token["_data"], "T3");
        // A token, latest and copy, likewise.
        for (moved, expect) in [
            (
                CheckpointMove::Token(serde_json::json!({"_data": "T1"})),
                None,
            ),
            (CheckpointMove::Latest, Some(StartFrom::Latest)),
            (CheckpointMove::Copy, Some(StartFrom::CopyExisting)),
        ] {
            let planned = plan_checkpoints(&config, &["db.b".to_owned()], &before, &moved);
            let c = planned[0].checkpoint.clone().unwrap();
            assert_eq!(c.start, expect);
            assert_eq!(c.generation, 8);
        }
    }

    /// A reset leaves a tombstone last in every partition holding the reader: no older
    /// checkpoint comes back, whatever its generation.
    #[test]
    fn a_reset_removes_the_reader_from_every_partition() {
        let config = source("");
        let other = (slot("db.a") + 1) % 16;
        let before = vec![
            stored("db.a", other, 9, Some(7)),
            stored("db.a", slot("db.a"), 4, Some(2)),
            stored("db.b", slot("db.b"), 3, Some(3)),
        ];
        let planned = plan_checkpoints(
            &config,
            &["db.a".to_owned()],
            &before,
            &CheckpointMove::Reset,
        );
        let mut partitions: Vec<i32> = planned.iter().map(|p| p.partition).collect();
        partitions.sort_unstable();
        let mut expected = vec![other, slot("db.a")];
        expected.sort_unstable();
        assert_eq!(partitions, expected);
        assert!(planned.iter().all(|p| p.checkpoint.is_none()));
        let mut after = before;
        after.extend(planned.iter().enumerate().map(|(n, p)| Stored {
            namespace: "db.a".into(),
            partition: p.partition,
            offset: 100 + n as i64,
            timestamp: Some(0),
            checkpoint: None,
        }));
        let newest = checkpoint::newest(after, slot);
        assert!(!newest.contains_key("db.a"));
        assert!(newest.contains_key("db.b"));
        // A reader without any checkpoint: a tombstone in its slot.
        let planned = plan_checkpoints(&config, &["db.b".to_owned()], &[], &CheckpointMove::Reset);
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].partition, slot("db.b"));
    }

    #[test]
    fn only_the_pipelines_readers_are_addressed() {
        let configured = vec!["db.a".to_owned(), "db.b".to_owned()];
        assert_eq!(readers("s", &configured, &[], None).unwrap(), configured);
        assert_eq!(
            readers("s", &configured, &[], Some("db.b")).unwrap(),
            ["db.b"]
        );
        // A reader gone from the configuration still has its checkpoint.
        let gone = [stored("db.old", 0, 1, Some(1))];
        assert_eq!(
            readers("s", &configured, &gone, Some("db.old")).unwrap(),
            ["db.old"]
        );
        let refused = readers("s", &configured, &[], Some("db.x")).unwrap_err();
        assert!(
            refused.contains("`db.x` is not a reader of source pipeline `s`")
                && refused.contains("db.a, db.b"),
            "{refused}"
        );
    }

    #[test]
    fn tokens_are_documents_or_their_data() {
        assert_eq!(
            parse_token("8263A1").unwrap(),
            serde_json::json!({"_data": "8263A1"})
        );
        assert_eq!(
            parse_token(r#"{"_data": "82"}"#).unwrap(),
            serde_json::json!({"_data": "82"})
        );
        assert!(parse_token("").is_err());
        assert!(parse_token("{nope").is_err());
    }

    #[test]
    fn live_members_are_named_in_the_refusal() {
        assert_eq!(live_members_refusal("p", "g", &[]), None);
        let refused = live_members_refusal(
            "p",
            "g",
            &[Member {
                member_id: "m-1".into(),
                client_id: "mongo-kafka-bridge".into(),
                host: "/127.0.0.1".into(),
            }],
        )
        .unwrap();
        assert!(
            refused.contains("pipeline `p` is running")
                && refused.contains("`g` has 1 live member(s): m-1 (client id `mongo-kafka-bridge`, host `/127.0.0.1`)"),
            "{refused}"
        );
    }

    fn state(
        topic: &str,
        partition: i32,
        low: i64,
        high: i64,
        committed: Option<i64>,
    ) -> PartitionState {
        PartitionState {
            topic: topic.into(),
            partition,
            low,
            high,
            committed,
        }
    }

    #[test]
    fn offsets_are_planned_per_partition() {
        let states = [state("t", 0, 2, 10, Some(10)), state("t", 1, 0, 5, None)];
        let none = HashMap::new();
        assert_eq!(
            plan_offsets(&states, &OffsetMove::Earliest, &none).unwrap(),
            [("t".to_owned(), 0, 2), ("t".to_owned(), 1, 0)]
        );
        assert_eq!(
            plan_offsets(&states, &OffsetMove::Latest, &none).unwrap(),
            [("t".to_owned(), 0, 10), ("t".to_owned(), 1, 5)]
        );
        // By time: the offset found, or the end when no record is that late.
        let at = HashMap::from([(("t".to_owned(), 0), Some(6)), (("t".to_owned(), 1), None)]);
        assert_eq!(
            plan_offsets(&states, &OffsetMove::Timestamp(1), &at).unwrap(),
            [("t".to_owned(), 0, 6), ("t".to_owned(), 1, 5)]
        );
        let given = OffsetMove::Offsets(parse_offsets("1:3").unwrap());
        assert_eq!(
            plan_offsets(&states, &given, &none).unwrap(),
            [("t".to_owned(), 1, 3)]
        );
        let outside = OffsetMove::Offsets(vec![(0, 1)]);
        let refused = plan_offsets(&states, &outside, &none).unwrap_err();
        assert!(
            refused.contains("topic `t` partition 0: offset 1 is outside 2..=10"),
            "{refused}"
        );
        let two = [state("t", 0, 0, 1, None), state("u", 0, 0, 1, None)];
        assert!(plan_offsets(&two, &given, &none)
            .unwrap_err()
            .contains("--topic"));
        assert!(parse_offsets("0:1,x").is_err());
        assert_eq!(states[0].lag(), 0);
        assert_eq!(states[1].lag(), 5);
    }

    #[test]
    fn times_are_rfc3339_or_milliseconds() {
        assert_eq!(
            parse_time_millis("1700000000000").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time_millis("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert!(parse_time_millis("yesterday").is_err());
    }
}
