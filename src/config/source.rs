//! `[[source]]`: one MongoDB change stream pipeline → Kafka, and its validation.
//!
//! Key names follow the MongoDB Kafka Connector's where one exists (`publish.full.document.only`
//! is `publish_full_document_only` here).

use std::collections::BTreeMap;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::format::{OutputFormat, SubjectNameStrategy};
use super::namespace_map::{self, KeyKind, NamespaceMap, NamespaceRules, TopicTemplate};
use super::registry::{self, SchemaRegistryConfig};
use super::violation::{collection_name, database_name, positive, topic_name, Violation};

/// One `[[source]]` pipeline: MongoDB change streams → Kafka.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique name of the pipeline (letters, digits, `-`, `_`); keys checkpoints and metrics,
    /// so renaming a pipeline starts it afresh.
    pub name: String,
    /// The database to watch. Absent: the whole deployment.
    #[serde(default)]
    pub database: Option<String>,
    /// The collection(s) to watch inside `database`: one name or a list (one change stream
    /// each). Absent (and no `collection_regex`): the whole database.
    #[serde(default)]
    pub collection: Option<Collections>,
    /// Watch the collections of `database` whose names match this regex, through one
    /// database-level change stream (collections created later are picked up).
    #[serde(default)]
    pub collection_regex: Option<String>,
    /// Collections of `database` not to watch nor copy, by name, with or without
    /// `collection_regex` (a database stream, like Debezium's `collection.exclude.list`).
    #[serde(default)]
    pub collection_exclude: Vec<String>,
    /// Aggregation stages appended to `$changeStream`, as a JSON array (extended JSON allowed),
    /// e.g. `'[{"$match": {"operationType": "insert"}}]'`.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// `fullDocument` of update events: `default`, `updateLookup`, `whenAvailable`, `required`.
    #[serde(default)]
    pub full_document: FullDocument,
    /// `fullDocumentBeforeChange`: `off`, `whenAvailable`, `required` (MongoDB 6.0+ with
    /// pre-images enabled on the collection).
    #[serde(default)]
    pub full_document_before_change: FullDocumentBeforeChange,
    /// Events per `getMore` batch; the server's default when absent.
    #[serde(default)]
    pub batch_size: Option<u32>,
    /// How long the server waits for new events before answering an empty batch.
    #[serde(default = "default_max_await_time", with = "humantime_serde")]
    pub max_await_time: Duration,
    /// Publish only the document (`fullDocument`) instead of the whole change event. Events
    /// without a document (deletes) are skipped, or become tombstones with
    /// `tombstone_on_delete`.
    #[serde(default)]
    pub publish_full_document_only: bool,
    /// With `publish_full_document_only`, publish a delete as a tombstone (null value) keyed
    /// by the document key, so compacted topics forget the document.
    #[serde(default)]
    pub tombstone_on_delete: bool,
    /// Where a pipeline without a checkpoint starts: `latest`, `timestamp`, `copy_existing`.
    #[serde(default)]
    pub startup_mode: StartupMode,
    /// With `startup_mode = "timestamp"`: the cluster time to start at (the connector's
    /// `startup.mode.timestamp.start.at.operation.time`): an RFC 3339 time
    /// (`"2026-11-24T10:00:00Z"`), seconds since the epoch (`"1795514400"`), or a BSON
    /// timestamp as extended JSON (`'{"$timestamp": {"t": 1795514400, "i": 3}}'`), which also
    /// names the operation within that second.
    #[serde(default)]
    pub startup_timestamp: Option<String>,
    /// With `copy_existing`: aggregation stages (JSON array) applied to the copied documents.
    #[serde(default)]
    pub copy_existing_pipeline: Option<String>,
    /// With `copy_existing`: copy only the namespaces (`db.coll`) matching this regex.
    #[serde(default)]
    pub copy_existing_namespace_regex: Option<String>,
    /// With `copy_existing`: how many workers copy each collection at once, each an `_id`
    /// range of its own, 1 to 64. Each range's progress is checkpointed, so a restart
    /// continues the copy instead of starting it over.
    #[serde(default = "default_parallelism")]
    pub copy_existing_parallelism: usize,
    /// With `copy_existing`: let MongoDB write to disk when the copy's aggregation outgrows
    /// its memory (a `copy_existing_pipeline` that sorts or groups); the connector's
    /// `startup.mode.copy.existing.allow.disk.use`, on by default as there.
    #[serde(default = "super::root::default_true")]
    pub copy_existing_allow_disk_use: bool,
    /// A collection (`db.coll`) whose inserted documents are commands, by Debezium's
    /// convention: `{type: "execute-snapshot", data: {"data-collections": ["db.coll"]}}`
    /// starts a snapshot on demand, `{type: "stop-snapshot"}` cancels it. Each signal is
    /// marked `processed` once taken. Unset: no signals (the HTTP endpoint still works).
    #[serde(default)]
    pub signal_collection: Option<String>,
    /// Documents per chunk of a snapshot on demand (1 to 100000): each chunk is read between
    /// two watermarks and emitted when the change stream passes the second.
    #[serde(default = "default_snapshot_chunk_size")]
    pub snapshot_chunk_size: u32,
    /// The change stream's collation, as JSON (`'{"locale": "en", "strength": 2}'`): how the
    /// stream's stages compare strings (the connector's `collation`).
    #[serde(default)]
    pub collation: Option<String>,
    /// Ask MongoDB 6.0+ for the expanded events: `create`, `createIndexes`, `dropIndexes`,
    /// `modify`, `shardCollection`, ..., and `updateDescription.disambiguatedPaths` (6.1+)
    /// (the connector's `change.stream.show.expanded.events`).
    #[serde(default)]
    pub show_expanded_events: bool,
    /// Prefix of generated topic names.
    #[serde(default)]
    pub topic_prefix: Option<String>,
    /// Suffix of generated topic names.
    #[serde(default)]
    pub topic_suffix: Option<String>,
    /// Joins prefix, database, collection and suffix into a topic name.
    #[serde(default = "default_topic_separator")]
    pub topic_separator: String,
    /// Namespace → topic rules, as the connector's `topic.namespace.map`: keys `db.coll`,
    /// `db` (the topic, the separator and the collection), `/regex` (the whole namespace,
    /// tried in the order written, `{db}`, `{coll}`, `{sep}`, `{sep_coll}`, `{coll_sep}`,
    /// `{sep_coll_sep}` in the topic) and `*`, tried in that order; this daemon's `db.*` and
    /// `/regex/` keep their earlier meaning, with a warning. The prefix and suffix are still
    /// applied. See [`super::namespace_map`].
    #[serde(default)]
    pub topic_namespace_map: NamespaceMap,
    /// Create each topic the pipeline writes to (with `topic_partitions`,
    /// `topic_replication_factor` and `topic_config`, or the settings of the first
    /// `topic_creation_groups` entry that matches it) before its first record, for every
    /// scope, instead of relying on the broker's auto-creation (Kafka Connect's
    /// `topic.creation.*`; see `source::topic_creation`).
    #[serde(default)]
    pub create_topics: bool,
    /// Partitions of topics created by `create_topics`; -1: the broker's default
    /// (`num.partitions`).
    #[serde(default = "default_one")]
    pub topic_partitions: i32,
    /// Replication factor of topics created by `create_topics`; -1: the broker's default
    /// (`default.replication.factor`).
    #[serde(default = "default_one")]
    pub topic_replication_factor: i32,
    /// Topic configs of topics created by `create_topics` (`cleanup.policy`, `retention.ms`,
    /// `compression.type`, ...; Kafka Connect's other `topic.creation.default.*` settings).
    /// Absent: the broker's defaults.
    #[serde(
        default,
        deserialize_with = "super::root::librdkafka_properties",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub topic_config: BTreeMap<String, String>,
    /// Settings for the topics `create_topics` creates whose names match a group (Kafka
    /// Connect's `topic.creation.groups`): the first group, in the order written, whose
    /// `include` matches the whole topic name and whose `exclude` does not, gives its
    /// settings; a topic no group matches takes `topic_partitions`,
    /// `topic_replication_factor` and `topic_config`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topic_creation_groups: Vec<TopicCreationGroup>,
    /// The record key: `document_key` (the event's `documentKey`, so every change of one
    /// document lands in one partition, in order) or `event_id` (the resume token).
    #[serde(default)]
    pub key: KeyMode,
    /// The record value and key format: `relaxed_json`, `canonical_json`,
    /// `simplified_json`, `bson`, `avro`, `json_schema` or `protobuf` (a schema inferred from
    /// each document, or given in `key_schema` / `value_schema`, registered in the schema
    /// registry under the subject `key_subject_name_strategy` / `value_subject_name_strategy`
    /// name, and the registry's wire format: a zero byte, the schema id, then the Avro binary
    /// datum, the `simplified_json` text, or the message indexes and the Protobuf message).
    #[serde(default)]
    pub format: OutputFormat,
    /// The record key's format, when it differs from `format` (the connector's
    /// `output.format.key`).
    #[serde(default)]
    pub key_format: Option<OutputFormat>,
    /// The record value's format, when it differs from `format` (the connector's
    /// `output.format.value`).
    #[serde(default)]
    pub value_format: Option<OutputFormat>,
    /// The schema of every record key instead of one inferred from each key (the connector's
    /// `output.schema.key`): an Avro schema (a record) with `avro`, a JSON Schema with
    /// `json_schema`, as JSON text; `.proto` text with `protobuf` (its first message). Documents are written in it: fields it lacks are left out,
    /// fields missing from the document take the schema's default.
    #[serde(default)]
    pub key_schema: Option<String>,
    /// The schema of every record value instead of one inferred from each value (the
    /// connector's `output.schema.value`), as `key_schema`.
    #[serde(default)]
    pub value_schema: Option<String>,
    /// The schema registry of the `avro`, `json_schema` and `protobuf` formats. Absent: the
    /// one in `[kafka.schema_registry]`.
    #[serde(default)]
    pub schema_registry: Option<SchemaRegistryConfig>,
    /// The subject the schemas of record keys are registered under (Confluent's
    /// `key.subject.name.strategy`): `topic_name` (`<topic>-key`), `record_name` (the record's
    /// full name: the Avro record's, the JSON Schema's `title`, the Protobuf message's) or
    /// `topic_record_name` (`<topic>-<record name>`).
    #[serde(default)]
    pub key_subject_name_strategy: SubjectNameStrategy,
    /// The subject the schemas of record values are registered under (Confluent's
    /// `value.subject.name.strategy`), as `key_subject_name_strategy` (`<topic>-value` for
    /// `topic_name`).
    #[serde(default)]
    pub value_subject_name_strategy: SubjectNameStrategy,
    /// Publish a heartbeat to `heartbeat_topic` when a watched namespace has been idle this
    /// long, so its checkpoint keeps moving. Absent: no heartbeats.
    #[serde(default, with = "humantime_serde")]
    pub heartbeat_interval: Option<Duration>,
    /// The topic heartbeats go to.
    #[serde(default = "default_heartbeat_topic")]
    pub heartbeat_topic: String,
    /// The compacted topic holding every reader's resume token. Left out, at-least-once
    /// pipelines share [`SHARED_CHECKPOINT_TOPIC`] and an exactly-once pipeline gets one of
    /// its own, `mongo-kafka-bridge-checkpoints-<name>` ([`SourceConfig::resolve_checkpoint_topic`]):
    /// another pipeline's open transaction on a shared partition would hold its checkpoints
    /// back.
    #[serde(default)]
    pub checkpoint_topic: String,
    /// The most often a reader writes its checkpoint.
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// The pipeline's readers are hashed onto this many slots; slot `s` is partition `s` of
    /// `checkpoint_topic` (created with at least this many partitions; a topic with fewer is
    /// grown, its checkpoints kept). Several daemons with one configuration share the slots.
    /// Changing it moves readers between slots: a migration, not a reload
    /// (`docs/scaling-out.md`).
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// `at-least-once`: records are acknowledged before their checkpoint is written, so a
    /// crash may publish some again. `exactly-once`: records and checkpoints are written in
    /// Kafka transactions (committed every `checkpoint_interval`), so a `read_committed`
    /// consumer sees every change once, even across crashes.
    #[serde(default)]
    pub delivery: Delivery,
    /// When the resume point is gone from the oplog: `fail` the pipeline, restart at
    /// `latest`, or `recopy` the namespace's documents and go on from there; the last two log
    /// and count the gap.
    #[serde(default)]
    pub on_lost_resume_point: LostResumePoint,
    /// A reader whose change stream has not advanced (no event, no post-batch resume token)
    /// for this long is reported on `/ready` and restarted.
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// An event larger than the producer's `message.max.bytes`: `fail` (follow
    /// `errors.tolerance`: stop the pipeline, or dead-letter it), `skip` (log and count it,
    /// publish nothing), or `split` (publish it in numbered chunks that sink pipelines
    /// reassemble).
    #[serde(default)]
    pub oversize: Oversize,
    /// Records that may wait for the producer; when full, readers stop pulling from MongoDB.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Bytes of records the pipeline's readers hold at once, from reading an event until
    /// librdkafka took its records (`"64MiB"`, `"500MB"`, or a number of bytes; at least
    /// 1 MiB). While it is spent the readers read no more; an event larger than the whole
    /// budget passes alone. `docs/configuration.md` "Memory" adds what else the daemon
    /// holds.
    #[serde(default = "default_memory_budget")]
    pub memory_budget: ByteSize,
    /// What happens to an event that cannot be converted or is too large for Kafka.
    #[serde(default)]
    pub errors: ErrorsConfig,
}

/// One `[[source.topic_creation_groups]]` entry: the settings of the topics it matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicCreationGroup {
    /// The group's name, for logs and errors (Kafka Connect's group alias).
    pub name: String,
    /// Regexes, each matching a whole topic name: a topic matching one of them belongs to the
    /// group (unless `exclude` matches it).
    pub include: Vec<String>,
    /// Regexes, each matching a whole topic name: a topic matching one of them is not in the
    /// group, even if `include` matches it.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Partitions of the group's topics. Absent: `topic_partitions`.
    #[serde(default)]
    pub partitions: Option<i32>,
    /// Replication factor of the group's topics. Absent: `topic_replication_factor`.
    #[serde(default)]
    pub replication_factor: Option<i32>,
    /// Topic configs of the group's topics; `topic_config` does not apply to them (as Kafka
    /// Connect's groups do not take the default group's configs).
    #[serde(
        default,
        deserialize_with = "super::root::librdkafka_properties",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub config: BTreeMap<String, String>,
}

/// One collection or a list of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Collections {
    /// One collection.
    One(String),
    /// Several collections, one change stream each.
    Many(Vec<String>),
}

impl Collections {
    /// The collection names.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Self::One(name) => vec![name.as_str()],
            Self::Many(names) => names.iter().map(String::as_str).collect(),
        }
    }
}

/// `full_document`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FullDocument {
    /// Inserts and replaces carry the document; updates only their delta.
    #[default]
    Default,
    /// Updates carry the current majority-committed document, looked up.
    UpdateLookup,
    /// Post-images where the collection records them.
    WhenAvailable,
    /// Post-images, failing where missing.
    Required,
}

/// `full_document_before_change`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FullDocumentBeforeChange {
    /// No pre-images.
    #[default]
    Off,
    /// Pre-images where recorded.
    WhenAvailable,
    /// Pre-images, failing where missing.
    Required,
}

/// `startup_mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartupMode {
    /// Changes from now on.
    #[default]
    Latest,
    /// Changes from `startup_timestamp` on.
    Timestamp,
    /// Every existing document first, then changes from the moment the copy began.
    CopyExisting,
}

/// `key`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// The event's `documentKey`.
    #[default]
    DocumentKey,
    /// The event's `_id` (its resume token).
    EventId,
}

/// A collation given as JSON (`source.collation`, the connector's `collation`).
pub fn parse_collation(text: &str) -> Result<mongodb::options::Collation, String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let doc = match bson::Bson::try_from(json) {
        Ok(bson::Bson::Document(doc)) => doc,
        _ => return Err("must be a JSON object such as {\"locale\": \"en\"}".to_owned()),
    };
    bson::from_document(doc).map_err(|e| format!("not a collation: {e}"))
}

/// `delivery`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Checkpoints follow acknowledgements; duplicates possible after a crash.
    #[default]
    AtLeastOnce,
    /// Records and checkpoints in one Kafka transaction.
    ExactlyOnce,
}

/// `on_lost_resume_point`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LostResumePoint {
    /// Stop the pipeline with an error.
    #[default]
    Fail,
    /// Start again from the newest change, logging and counting the gap.
    Latest,
    /// Copy the namespace's documents again, then follow its changes from the copy's start.
    Recopy,
}

/// `oversize`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Oversize {
    /// Like any bad event: `errors.tolerance` decides (stop, or dead letter).
    #[default]
    Fail,
    /// Publish nothing for it; log its namespace and document key and count it.
    Skip,
    /// Publish it in chunks under `message.max.bytes`, with headers to reassemble them.
    Split,
}

/// `[source.errors]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorsConfig {
    /// `none`: a bad event stops the pipeline; `all`: it goes to `dead_letter_topic`.
    #[serde(default)]
    pub tolerance: Tolerance,
    /// Where tolerated bad events go, with headers saying why. Required with `all`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// How the headers of dead letters are named: `mkb` (`mkb.error`, ...), `connect` (Kafka
    /// Connect's `__connect.errors.*`, for tools built on them), or `both`.
    #[serde(default)]
    pub dead_letter_headers: DeadLetterHeaders,
}

/// `errors.dead_letter_headers`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterHeaders {
    /// `mkb.error`, `mkb.error.stage`, `mkb.pipeline`, ...
    #[default]
    Mkb,
    /// Kafka Connect's `__connect.errors.*`.
    Connect,
    /// Both sets.
    Both,
}

/// `errors.tolerance`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tolerance {
    /// Stop on the first bad record.
    #[default]
    None,
    /// Dead-letter bad records and go on.
    All,
}

fn default_max_await_time() -> Duration {
    Duration::from_secs(1)
}

fn default_topic_separator() -> String {
    ".".to_owned()
}

fn default_one() -> i32 {
    1
}

fn default_heartbeat_topic() -> String {
    "__mongodb_heartbeats".to_owned()
}

/// The checkpoint topic at-least-once pipelines share when they name none; exactly-once
/// pipelines that name none had it before they got one of their own, and a start that finds
/// nothing in their own reads their checkpoints there once (an upgrade keeps its positions).
pub const SHARED_CHECKPOINT_TOPIC: &str = "mongo-kafka-bridge-checkpoints";

/// The checkpoint topic of an exactly-once pipeline named `name` that names none.
pub fn own_checkpoint_topic(name: &str) -> String {
    format!("{SHARED_CHECKPOINT_TOPIC}-{name}")
}

/// The default of `slots`.
pub const DEFAULT_SLOTS: u32 = 16;

/// The most slots a pipeline may have (partitions of its checkpoint topic).
pub const MAX_SLOTS: u32 = 1024;

fn default_slots() -> u32 {
    DEFAULT_SLOTS
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_queue_capacity() -> usize {
    1024
}

/// The default `memory_budget` of a pipeline, source or sink.
pub(super) fn default_memory_budget() -> ByteSize {
    ByteSize::mib(64)
}

/// The smallest `memory_budget`: below it a pipeline would hold a few large events at most.
pub const MIN_MEMORY_BUDGET: ByteSize = ByteSize::mib(1);

/// Checks the `memory_budget` at `key`.
pub(super) fn validate_memory_budget(key: &str, budget: ByteSize, out: &mut Vec<Violation>) {
    if budget < MIN_MEMORY_BUDGET {
        out.push(Violation::new(
            key,
            format!(
                "must be at least 1 MiB ({} bytes), not {budget}",
                MIN_MEMORY_BUDGET.as_u64()
            ),
        ));
    }
}

fn default_snapshot_chunk_size() -> u32 {
    1024
}

fn default_parallelism() -> usize {
    1
}

fn default_stall_timeout() -> Duration {
    Duration::from_secs(300)
}

/// The most copy workers per collection.
pub const MAX_COPY_PARALLELISM: usize = 64;

/// Aggregation stages allowed after `$changeStream` (MongoDB's list).
const CHANGE_STREAM_STAGES: &[&str] = &[
    "$addFields",
    "$match",
    "$project",
    "$replaceRoot",
    "$replaceWith",
    "$redact",
    "$set",
    "$unset",
    SPLIT_LARGE_EVENT,
];

/// The stage that makes MongoDB (7.0, 6.0.9) return an event over 16 MiB in fragments; it
/// must be the last one.
pub const SPLIT_LARGE_EVENT: &str = "$changeStreamSplitLargeEvent";

/// Parses a JSON array of aggregation stages (extended JSON allowed).
pub fn parse_pipeline(text: &str) -> Result<Vec<bson::Document>, String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let serde_json::Value::Array(stages) = json else {
        return Err("must be a JSON array of stages".to_owned());
    };
    stages
        .into_iter()
        .enumerate()
        .map(|(i, stage)| match bson::Bson::try_from(stage) {
            Ok(bson::Bson::Document(doc)) if doc.len() == 1 => Ok(doc),
            Ok(_) => Err(format!(
                "stage {i} must be an object with exactly one `$stage` key"
            )),
            Err(e) => Err(format!("stage {i} is not valid extended JSON: {e}")),
        })
        .collect()
}

impl SourceConfig {
    /// Fills in a `checkpoint_topic` left out: the shared one for at-least-once, one of its
    /// own for exactly-once. Called once, when the configuration is loaded.
    pub fn resolve_checkpoint_topic(&mut self) {
        if self.checkpoint_topic.is_empty() {
            self.checkpoint_topic = match self.delivery {
                Delivery::ExactlyOnce => own_checkpoint_topic(&self.name),
                Delivery::AtLeastOnce => SHARED_CHECKPOINT_TOPIC.to_owned(),
            };
        }
    }

    /// Where this pipeline's checkpoints were before it had a topic of its own: the shared
    /// topic, for an exactly-once pipeline on its own default topic; `None` otherwise.
    pub fn legacy_checkpoint_topic(&self) -> Option<&'static str> {
        (self.delivery == Delivery::ExactlyOnce
            && self.checkpoint_topic == own_checkpoint_topic(&self.name))
        .then_some(SHARED_CHECKPOINT_TOPIC)
    }

    /// The change stream's `collation`, parsed.
    pub fn collation(&self) -> Result<Option<mongodb::options::Collation>, String> {
        self.collation.as_deref().map(parse_collation).transpose()
    }

    /// The change-stream stages of `pipeline`, validated.
    pub fn stages(&self) -> Result<Vec<bson::Document>, String> {
        let stages = match &self.pipeline {
            Some(text) => parse_pipeline(text)?,
            None => Vec::new(),
        };
        for (i, stage) in stages.iter().enumerate() {
            let name = stage.keys().next().map(String::as_str).unwrap_or_default();
            if !CHANGE_STREAM_STAGES.contains(&name) {
                return Err(format!(
                    "stage {i} `{name}` cannot follow $changeStream; allowed: {}",
                    CHANGE_STREAM_STAGES.join(", ")
                ));
            }
            if name == SPLIT_LARGE_EVENT && i + 1 != stages.len() {
                return Err(format!(
                    "stage {i}: `{SPLIT_LARGE_EVENT}` must be the last stage"
                ));
            }
        }
        Ok(stages)
    }

    /// The start of `startup_mode = "timestamp"`, as a BSON timestamp (seconds since the
    /// epoch, and the increment of the operation within that second).
    pub fn startup_time(&self) -> Result<Option<bson::Timestamp>, String> {
        let Some(text) = &self.startup_timestamp else {
            return Ok(None);
        };
        let text = text.trim();
        let too_late = |_| format!("`{text}` is past what a BSON timestamp holds");
        if text.starts_with('{') {
            let json: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| format!("`{text}` is not extended JSON: {e}"))?;
            return match bson::Bson::try_from(json) {
                Ok(bson::Bson::Timestamp(ts)) => Ok(Some(ts)),
                _ => Err(format!(
                    "`{text}` is not a BSON timestamp (`{{\"$timestamp\": {{\"t\": <seconds>, \"i\": <increment>}}}}`)"
                )),
            };
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            let secs: u64 = text.parse().map_err(|_| format!("`{text}` is too large"))?;
            let time = u32::try_from(secs).map_err(too_late)?;
            return Ok(Some(bson::Timestamp { time, increment: 0 }));
        }
        let at = humantime::parse_rfc3339_weak(text).map_err(|e| {
            format!(
                "`{text}` is not an RFC 3339 time, seconds since the epoch or a BSON timestamp: {e}"
            )
        })?;
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| format!("`{text}` is before 1970"))?
            .as_secs();
        let time = u32::try_from(secs).map_err(too_late)?;
        Ok(Some(bson::Timestamp { time, increment: 0 }))
    }

    /// The format of record keys: `key_format`, else `format`.
    pub fn key_format(&self) -> OutputFormat {
        self.key_format.unwrap_or(self.format)
    }

    /// The format of record values: `value_format`, else `format`.
    pub fn value_format(&self) -> OutputFormat {
        self.value_format.unwrap_or(self.format)
    }

    /// `topic_namespace_map`: every key means something and every topic it can name is a
    /// valid topic name.
    fn validate_namespace_map(&self, key: &str, out: &mut Vec<Violation>) {
        let path = |k: &str| format!("{key}.topic_namespace_map.\"{k}\"");
        if let Err(errors) = NamespaceRules::new(&self.topic_namespace_map) {
            out.extend(errors.into_iter().map(|(k, e)| Violation::new(path(&k), e)));
        }
        for (k, topic) in self.topic_namespace_map.iter() {
            // An empty topic leaves the key out, as in the connector.
            if topic.is_empty() {
                continue;
            }
            match namespace_map::key_kind(k) {
                Ok(KeyKind::Regex(_) | KeyKind::LegacyRegex(_)) => {
                    // Placeholders stand for names, which are valid in topic names.
                    if let Ok(template) = TopicTemplate::parse(topic) {
                        topic_name(&path(k), &template.expand("db", Some("coll"), "."), out);
                    }
                }
                _ => topic_name(&path(k), topic, out),
            }
        }
    }

    /// `topic_config` and `topic_creation_groups`: each problem with its key.
    fn validate_topic_creation(&self, key: &str, out: &mut Vec<Violation>) {
        let creating = self.create_topics;
        let unused = |field: &str, out: &mut Vec<Violation>| {
            out.push(Violation::new(
                format!("{key}.{field}"),
                "only applies with `create_topics = true`",
            ));
        };
        if !self.topic_config.is_empty() && !creating {
            unused("topic_config", out);
        }
        if !self.topic_creation_groups.is_empty() && !creating {
            unused("topic_creation_groups", out);
        }
        topic_configs(&format!("{key}.topic_config"), &self.topic_config, out);
        let mut names = std::collections::BTreeSet::new();
        for (i, group) in self.topic_creation_groups.iter().enumerate() {
            let at = |field: &str| format!("{key}.topic_creation_groups[{i}].{field}");
            if group.name.is_empty() {
                out.push(Violation::new(at("name"), "must not be empty"));
            } else if !names.insert(group.name.as_str()) {
                out.push(Violation::new(
                    at("name"),
                    format!("`{}` names an earlier group too", group.name),
                ));
            }
            if group.include.is_empty() {
                out.push(Violation::new(
                    at("include"),
                    "must list at least one regex: a group without one matches no topic",
                ));
            }
            for (field, regexes) in [("include", &group.include), ("exclude", &group.exclude)] {
                for (j, regex) in regexes.iter().enumerate() {
                    if let Err(e) = regex::Regex::new(regex) {
                        out.push(Violation::new(
                            format!("{}[{j}]", at(field)),
                            format!("not a valid regex: {e}"),
                        ));
                    }
                }
            }
            for (field, value) in [
                ("partitions", group.partitions),
                ("replication_factor", group.replication_factor),
            ] {
                if value.is_some_and(|v| !broker_default_or_positive(v)) {
                    out.push(Violation::new(at(field), BROKER_DEFAULT_OR_POSITIVE));
                }
            }
            topic_configs(&at("config"), &group.config, out);
        }
    }

    /// Checks this pipeline; `key` is its path (`source[0]`).
    pub fn validate(&self, key: &str, out: &mut Vec<Violation>) {
        let at = |field: &str| format!("{key}.{field}");
        let needs_registry = [
            ("key_format", self.key_format()),
            ("value_format", self.value_format()),
        ]
        .into_iter()
        .find_map(|(name, format)| {
            let name = match (name, self.key_format, self.value_format) {
                ("key_format", Some(_), _) | ("value_format", _, Some(_)) => name,
                _ => "format",
            };
            match format {
                OutputFormat::Avro => Some(format!("`{name} = \"avro\"`")),
                OutputFormat::JsonSchema => Some(format!("`{name} = \"json_schema\"`")),
                OutputFormat::Protobuf => Some(format!("`{name} = \"protobuf\"`")),
                _ => None,
            }
        });
        registry::required(
            key,
            self.schema_registry.as_ref(),
            needs_registry.as_deref(),
            out,
        );
        for (name, strategy, format) in [
            (
                "key_subject_name_strategy",
                self.key_subject_name_strategy,
                self.key_format(),
            ),
            (
                "value_subject_name_strategy",
                self.value_subject_name_strategy,
                self.value_format(),
            ),
        ] {
            if strategy != SubjectNameStrategy::TopicName && !format.uses_registry() {
                out.push(Violation::new(
                    at(name),
                    "is used only with the `avro`, `json_schema` and `protobuf` formats",
                ));
            }
        }
        for (name, schema, format) in [
            ("key_schema", &self.key_schema, self.key_format()),
            ("value_schema", &self.value_schema, self.value_format()),
        ] {
            if let Some(text) = schema {
                if let Err(message) = registry::given_schema(text, format) {
                    out.push(Violation::new(at(name), message));
                }
            }
        }
        if let Some(db) = &self.database {
            database_name(&at("database"), db, out);
        }
        if let Some(collections) = &self.collection {
            if self.database.is_none() {
                out.push(Violation::new(at("collection"), "needs `database` too"));
            }
            if self.collection_regex.is_some() {
                out.push(Violation::new(
                    at("collection_regex"),
                    "give `collection` or `collection_regex`, not both",
                ));
            }
            let names = collections.names();
            if names.is_empty() {
                out.push(Violation::new(at("collection"), "the list is empty"));
            }
            for (i, name) in names.iter().enumerate() {
                let path = match collections {
                    Collections::One(_) => at("collection"),
                    Collections::Many(_) => format!("{key}.collection[{i}]"),
                };
                collection_name(&path, name, out);
                if names[..i].contains(name) {
                    out.push(Violation::new(path, format!("`{name}` is listed twice")));
                }
            }
        }
        if let Some(regex) = &self.collection_regex {
            if self.database.is_none() {
                out.push(Violation::new(
                    at("collection_regex"),
                    "needs `database` too",
                ));
            }
            if let Err(e) = regex::Regex::new(regex) {
                out.push(Violation::new(
                    at("collection_regex"),
                    format!("not a valid regex: {e}"),
                ));
            }
        }
        if let Err(e) = self.stages() {
            out.push(Violation::new(at("pipeline"), e));
        }
        if let Err(e) = self.collation() {
            out.push(Violation::new(at("collation"), e));
        }
        if !self.collection_exclude.is_empty()
            && (self.database.is_none() || self.collection.is_some())
        {
            out.push(Violation::new(
                at("collection_exclude"),
                "applies to a database stream: needs `database`, without `collection`",
            ));
        }
        for (i, name) in self.collection_exclude.iter().enumerate() {
            collection_name(&format!("{key}.collection_exclude[{i}]"), name, out);
        }
        if self.batch_size == Some(0) {
            out.push(Violation::new(at("batch_size"), "must be at least 1"));
        }
        positive(out, &at("max_await_time"), self.max_await_time, "the wait");
        if self.tombstone_on_delete && !self.publish_full_document_only {
            out.push(Violation::new(
                at("tombstone_on_delete"),
                "only applies with `publish_full_document_only = true`",
            ));
        }
        match (self.startup_mode, self.startup_time()) {
            (_, Err(e)) => out.push(Violation::new(at("startup_timestamp"), e)),
            (StartupMode::Timestamp, Ok(None)) => out.push(Violation::new(
                at("startup_timestamp"),
                "is required with `startup_mode = \"timestamp\"`",
            )),
            (StartupMode::Latest | StartupMode::CopyExisting, Ok(Some(_))) => {
                out.push(Violation::new(
                    at("startup_timestamp"),
                    "only applies with `startup_mode = \"timestamp\"`",
                ))
            }
            _ => {}
        }
        let copying = self.startup_mode == StartupMode::CopyExisting;
        if let Some(text) = &self.copy_existing_pipeline {
            if !copying {
                out.push(Violation::new(
                    at("copy_existing_pipeline"),
                    "only applies with `startup_mode = \"copy_existing\"`",
                ));
            }
            if let Err(e) = parse_pipeline(text) {
                out.push(Violation::new(at("copy_existing_pipeline"), e));
            }
        }
        if let Some(signals) = &self.signal_collection {
            if !matches!(signals.split_once('.'), Some((db, coll)) if !db.is_empty() && !coll.is_empty())
            {
                out.push(Violation::new(
                    at("signal_collection"),
                    format!("`{signals}` is not `database.collection`"),
                ));
            }
        }
        if !(1..=100_000).contains(&self.snapshot_chunk_size) {
            out.push(Violation::new(
                at("snapshot_chunk_size"),
                "must be 1 to 100000",
            ));
        }
        if !(1..=MAX_COPY_PARALLELISM).contains(&self.copy_existing_parallelism) {
            out.push(Violation::new(
                at("copy_existing_parallelism"),
                format!("must be 1 to {MAX_COPY_PARALLELISM}"),
            ));
        } else if self.copy_existing_parallelism > 1 && !copying {
            out.push(Violation::new(
                at("copy_existing_parallelism"),
                "only applies with `startup_mode = \"copy_existing\"`",
            ));
        }
        if self.stall_timeout <= self.max_await_time {
            out.push(Violation::new(
                at("stall_timeout"),
                "must be longer than `max_await_time`: an idle stream advances once per wait",
            ));
        }
        if let Some(regex) = &self.copy_existing_namespace_regex {
            if !copying {
                out.push(Violation::new(
                    at("copy_existing_namespace_regex"),
                    "only applies with `startup_mode = \"copy_existing\"`",
                ));
            }
            if let Err(e) = regex::Regex::new(regex) {
                out.push(Violation::new(
                    at("copy_existing_namespace_regex"),
                    format!("not a valid regex: {e}"),
                ));
            }
        }
        for (field, value) in [
            ("topic_prefix", &self.topic_prefix),
            ("topic_suffix", &self.topic_suffix),
        ] {
            if let Some(value) = value {
                topic_name(&at(field), value, out);
            }
        }
        if let Some(c) = self
            .topic_separator
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            out.push(Violation::new(
                at("topic_separator"),
                format!("holds `{c}`; Kafka topic names allow letters, digits, `.`, `_`, `-`"),
            ));
        }
        self.validate_namespace_map(key, out);
        for (field, value) in [
            ("topic_partitions", self.topic_partitions),
            ("topic_replication_factor", self.topic_replication_factor),
        ] {
            if !broker_default_or_positive(value) {
                out.push(Violation::new(at(field), BROKER_DEFAULT_OR_POSITIVE));
            }
        }
        self.validate_topic_creation(key, out);
        if let Some(interval) = self.heartbeat_interval {
            positive(
                out,
                &at("heartbeat_interval"),
                interval,
                "the heartbeat interval",
            );
        }
        topic_name(&at("heartbeat_topic"), &self.heartbeat_topic, out);
        topic_name(&at("checkpoint_topic"), &self.checkpoint_topic, out);
        positive(
            out,
            &at("checkpoint_interval"),
            self.checkpoint_interval,
            "the checkpoint interval",
        );
        if self.queue_capacity == 0 {
            out.push(Violation::new(at("queue_capacity"), "must be at least 1"));
        }
        validate_memory_budget(&at("memory_budget"), self.memory_budget, out);
        if !(1..=MAX_SLOTS).contains(&self.slots) {
            out.push(Violation::new(
                at("slots"),
                format!(
                    "must be between 1 and {MAX_SLOTS} (one partition of `checkpoint_topic` each)"
                ),
            ));
        }
        match (&self.errors.tolerance, &self.errors.dead_letter_topic) {
            (Tolerance::All, None) => out.push(Violation::new(
                at("errors.dead_letter_topic"),
                "is required with `errors.tolerance = \"all\"`: bad events are never dropped silently",
            )),
            (_, Some(topic)) => topic_name(&at("errors.dead_letter_topic"), topic, out),
            (Tolerance::None, None) => {}
        }
    }
}

/// A topic's partitions or replication factor: `-1` asks for the broker's default (Kafka
/// 2.4+), as Kafka Connect's `topic.creation.default.*`.
fn broker_default_or_positive(value: i32) -> bool {
    value == -1 || value >= 1
}

const BROKER_DEFAULT_OR_POSITIVE: &str = "must be at least 1, or -1 for the broker's default";

/// Topic config names look like Kafka's (`cleanup.policy`): the broker refuses unknown ones
/// when it creates the topic, which stops the pipeline; what can be told here is told here.
fn topic_configs(key: &str, configs: &BTreeMap<String, String>, out: &mut Vec<Violation>) {
    for (name, value) in configs {
        let at = format!("{key}.\"{name}\"");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.')
        {
            out.push(Violation::new(
                &at,
                "is not a Kafka topic config name (lowercase words joined by `.`, as `cleanup.policy`)",
            ));
        }
        if value.is_empty() {
            out.push(Violation::new(&at, "must not be empty"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{load_str, ConfigError};

    fn source(extra: &str) -> Result<SourceConfig, Vec<Violation>> {
        let text = format!(
            "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"h:1\"\n[[source]]\nname = \"s\"\n{extra}"
        );
        match load_str(&text, Path::new("t.toml")) {
            Ok(mut config) => Ok(config.sources.remove(0)),
            Err(ConfigError::Invalid { violations, .. }) => Err(violations),
            Err(other) => panic!("{other}"),
        }
    }

    #[track_caller]
    fn invalid(extra: &str, key: &str, message: &str) {
        let found = source(extra).err().unwrap_or_default();
        assert!(
            found
                .iter()
                .any(|v| v.key == key && v.message.contains(message)),
            "expected `{key}`: {message}; got {found:?}"
        );
    }

    #[test]
    fn defaults_match_the_connector() {
        let s = source("").unwrap();
        assert_eq!(s.full_document, FullDocument::Default);
        assert_eq!(s.startup_mode, StartupMode::Latest);
        assert_eq!(s.format, OutputFormat::RelaxedJson);
        assert_eq!(s.key, KeyMode::DocumentKey);
        assert_eq!(s.delivery, Delivery::AtLeastOnce);
        assert_eq!(s.topic_separator, ".");
        assert_eq!(s.heartbeat_topic, "__mongodb_heartbeats");
        assert_eq!(s.errors.tolerance, Tolerance::None);
        assert!(s.stages().unwrap().is_empty());
    }

    #[test]
    fn topic_creation_settings_are_checked_each_with_its_key() {
        let ok = source(
            "create_topics = true\ntopic_config = { \"cleanup.policy\" = \"compact\", \"retention.ms\" = 60000 }\n[[source.topic_creation_groups]]\nname = \"a\"\ninclude = ['a\\..*']\npartitions = 2\n",
        )
        .unwrap_or_else(|v| panic!("{v:?}"));
        assert_eq!(ok.topic_config["retention.ms"], "60000");
        assert_eq!(ok.topic_creation_groups[0].partitions, Some(2));
        invalid(
            "topic_config = { \"cleanup.policy\" = \"compact\" }",
            "source[0].topic_config",
            "only applies with `create_topics = true`",
        );
        let groups = "create_topics = true\ntopic_config = { \"Bad Name\" = \"x\" }\n[[source.topic_creation_groups]]\nname = \"a\"\ninclude = []\n[[source.topic_creation_groups]]\nname = \"a\"\ninclude = ['(']\nexclude = ['[']\npartitions = 0\nreplication_factor = 0\nconfig = { \"x\" = \"\" }\n";
        for (key, message) in [
            (
                "source[0].topic_config.\"Bad Name\"",
                "not a Kafka topic config name",
            ),
            (
                "source[0].topic_creation_groups[0].include",
                "at least one regex",
            ),
            (
                "source[0].topic_creation_groups[1].name",
                "names an earlier group",
            ),
            (
                "source[0].topic_creation_groups[1].include[0]",
                "not a valid regex",
            ),
            (
                "source[0].topic_creation_groups[1].exclude[0]",
                "not a valid regex",
            ),
            (
                "source[0].topic_creation_groups[1].partitions",
                "at least 1",
            ),
            (
                "source[0].topic_creation_groups[1].replication_factor",
                "at least 1",
            ),
            (
                "source[0].topic_creation_groups[1].config.\"x\"",
                "must not be empty",
            ),
        ] {
            invalid(groups, key, message);
        }
    }

    #[test]
    fn collections_may_be_one_or_many() {
        let s = source("database = \"d\"\ncollection = [\"a\", \"b\"]\n").unwrap();
        assert_eq!(s.collection.unwrap().names(), ["a", "b"]);
        invalid(
            "database = \"d\"\ncollection = [\"a\", \"a\"]\n",
            "source[0].collection[1]",
            "listed twice",
        );
        invalid(
            "database = \"d\"\ncollection = []\n",
            "source[0].collection",
            "empty",
        );
        invalid(
            "collection = \"a\"\n",
            "source[0].collection",
            "needs `database`",
        );
        invalid(
            "database = \"d\"\ncollection = \"a\"\ncollection_regex = \"x\"\n",
            "source[0].collection_regex",
            "not both",
        );
        invalid(
            "database = \"d\"\ncollection_regex = \"(\"\n",
            "source[0].collection_regex",
            "not a valid regex",
        );
    }

    /// Issue 12, defect 5: `$changeStreamSplitLargeEvent` (MongoDB 7.0, 6.0.9) is how a
    /// change stream returns an event over 16 MiB; it must be the last stage.
    #[test]
    fn split_large_event_is_allowed_as_the_last_stage() {
        let s = source("pipeline = '[{\"$match\": {}}, {\"$changeStreamSplitLargeEvent\": {}}]'\n")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.stages().map(|s| s.len()), Ok(2));
        invalid(
            "pipeline = '[{\"$changeStreamSplitLargeEvent\": {}}, {\"$match\": {}}]'\n",
            "source[0].pipeline",
            "`$changeStreamSplitLargeEvent` must be the last stage",
        );
    }

    #[test]
    fn pipelines_are_checked_stage_by_stage() {
        let s = source("pipeline = '[{\"$match\": {\"operationType\": \"insert\"}}]'\n").unwrap();
        assert_eq!(
            s.stages().unwrap()[0].keys().next().map(String::as_str),
            Some("$match")
        );
        invalid(
            "pipeline = '[{\"$out\": \"x\"}]'\n",
            "source[0].pipeline",
            "`$out` cannot follow $changeStream",
        );
        invalid(
            "pipeline = '{\"$match\": {}}'\n",
            "source[0].pipeline",
            "JSON array",
        );
        invalid(
            "pipeline = '[{\"$match\": {}'\n",
            "source[0].pipeline",
            "not valid JSON",
        );
        invalid(
            "pipeline = '[{\"$match\": {}, \"$project\": {}}]'\n",
            "source[0].pipeline",
            "exactly one",
        );
        invalid(
            "startup_mode = \"copy_existing\"\ncopy_existing_pipeline = '[1]'\n",
            "source[0].copy_existing_pipeline",
            "stage 0",
        );
    }

    #[test]
    fn startup_modes_need_their_settings() {
        let s =
            source("startup_mode = \"timestamp\"\nstartup_timestamp = \"2026-11-24T10:00:00Z\"\n")
                .unwrap();
        assert_eq!(
            s.startup_time().unwrap(),
            Some(bson::Timestamp {
                time: 1_795_514_400,
                increment: 0
            })
        );
        for (text, increment) in [
            ("1795514400", 0),
            ("{\"$timestamp\": {\"t\": 1795514400, \"i\": 3}}", 3),
        ] {
            let s = source(&format!(
                "startup_mode = \"timestamp\"\nstartup_timestamp = '{text}'\n"
            ))
            .unwrap();
            assert_eq!(
                s.startup_time().unwrap(),
                Some(bson::Timestamp {
                    time: 1_795_514_400,
                    increment
                }),
                "{text}"
            );
        }
        invalid(
            "startup_mode = \"timestamp\"\nstartup_timestamp = '{\"$date\": 1}'\n",
            "source[0].startup_timestamp",
            "not a BSON timestamp",
        );
        invalid(
            "startup_mode = \"timestamp\"\nstartup_timestamp = \"99999999999\"\n",
            "source[0].startup_timestamp",
            "past what a BSON timestamp holds",
        );
        invalid(
            "startup_mode = \"timestamp\"\n",
            "source[0].startup_timestamp",
            "is required",
        );
        invalid(
            "startup_timestamp = \"2026-11-24T10:00:00Z\"\n",
            "source[0].startup_timestamp",
            "only applies",
        );
        invalid(
            "startup_mode = \"timestamp\"\nstartup_timestamp = \"yesterday\"\n",
            "source[0].startup_timestamp",
            "RFC 3339",
        );
        invalid(
            "copy_existing_namespace_regex = \"x\"\n",
            "source[0].copy_existing_namespace_regex",
            "only applies",
        );
        invalid(
            "startup_mode = \"copy_existing\"\ncopy_existing_namespace_regex = \"[\"\n",
            "source[0].copy_existing_namespace_regex",
            "not a valid regex",
        );
        let s =
            source("startup_mode = \"copy_existing\"\ncopy_existing_parallelism = 4\n").unwrap();
        assert_eq!(s.copy_existing_parallelism, 4);
        invalid(
            "copy_existing_parallelism = 4\n",
            "source[0].copy_existing_parallelism",
            "only applies",
        );
        invalid(
            "startup_mode = \"copy_existing\"\ncopy_existing_parallelism = 0\n",
            "source[0].copy_existing_parallelism",
            "1 to 64",
        );
    }

    #[test]
    fn stalls_oversize_and_lost_history_policies() {
        let s = source(
            "oversize = \"split\"\non_lost_resume_point = \"recopy\"\nstall_timeout = \"30s\"\n",
        )
        .unwrap();
        assert_eq!(s.oversize, Oversize::Split);
        assert_eq!(s.on_lost_resume_point, LostResumePoint::Recopy);
        assert_eq!(s.stall_timeout, Duration::from_secs(30));
        let s = source("").unwrap();
        assert_eq!(s.oversize, Oversize::Fail);
        assert_eq!(s.stall_timeout, Duration::from_secs(300));
        invalid(
            "stall_timeout = \"1s\"\nmax_await_time = \"2s\"\n",
            "source[0].stall_timeout",
            "longer than `max_await_time`",
        );
        let text = "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"h:1\"\n[[source]]\nname = \"s\"\noversize = \"chop\"\n";
        match load_str(text, Path::new("t.toml")) {
            Err(ConfigError::Key { key, reason, .. }) => {
                assert_eq!(key, "source[0].oversize");
                assert!(reason.contains("unknown variant `chop`"), "{reason}");
            }
            other => panic!("expected a key error, got {other:?}"),
        }
    }

    #[test]
    fn topics_and_errors() {
        invalid(
            "topic_suffix = \"a b\"\n",
            "source[0].topic_suffix",
            "holds ` `",
        );
        invalid(
            "topic_separator = \"/\"\n",
            "source[0].topic_separator",
            "holds `/`",
        );
        invalid(
            "[source.topic_namespace_map]\n\"a/b\" = \"t\"\n",
            "source[0].topic_namespace_map.\"a/b\"",
            "`/` is not allowed",
        );
        invalid(
            "[source.topic_namespace_map]\n\"db.*\" = \"bad topic\"\n",
            "source[0].topic_namespace_map.\"db.*\"",
            "holds ` `",
        );
        invalid(
            "[source.topic_namespace_map]\n\"/a(/\" = \"t\"\n",
            "source[0].topic_namespace_map.\"/a(/\"",
            "not a valid regex",
        );
        invalid(
            "[source.topic_namespace_map]\n\"/^a/\" = \"{db} x\"\n",
            "source[0].topic_namespace_map.\"/^a/\"",
            "holds ` `",
        );
        assert!(
            source("[source.topic_namespace_map]\n\"/^logs\\\\./\" = \"{db}-{coll}\"\n").is_ok(),
            "a regex key with placeholders is valid"
        );
        invalid(
            "[source.topic_namespace_map]\n\"/a\" = \"{DB}\"\n",
            "source[0].topic_namespace_map.\"/a\"",
            "is not a placeholder",
        );
        invalid(
            "[source.topic_namespace_map]\n\"/(?=a)\" = \"t\"\n",
            "source[0].topic_namespace_map.\"/(?=a)\"",
            "not a valid regex",
        );
        assert!(
            source("[source.topic_namespace_map]\n\"/a\" = \"\"\n\"b\" = \"\"\n").is_ok(),
            "an empty topic leaves its key out, as in the connector"
        );
        invalid(
            "topic_partitions = 0\n",
            "source[0].topic_partitions",
            "at least 1",
        );
        invalid("slots = 0\n", "source[0].slots", "between 1 and 1024");
        invalid("slots = 5000\n", "source[0].slots", "between 1 and 1024");
        assert_eq!(
            source("").map(|s| s.slots).ok(),
            Some(DEFAULT_SLOTS),
            "16 slots unless told"
        );
        assert_eq!(source("slots = 1\n").map(|s| s.slots).ok(), Some(1));
        invalid(
            "tombstone_on_delete = true\n",
            "source[0].tombstone_on_delete",
            "publish_full_document_only",
        );
        invalid(
            "[source.errors]\ntolerance = \"all\"\n",
            "source[0].errors.dead_letter_topic",
            "never dropped",
        );
        invalid("batch_size = 0\n", "source[0].batch_size", "at least 1");
        invalid(
            "collation = '{\"strength\": 2}'\n",
            "source[0].collation",
            "not a collation",
        );
        invalid("collation = '[1]'\n", "source[0].collation", "JSON object");
        assert!(
            source("database = \"d\"\ncollation = '{\"locale\": \"en\", \"strength\": 2}'\n")
                .is_ok()
        );
        invalid(
            "collection_exclude = [\"a\"]\n",
            "source[0].collection_exclude",
            "needs `database`",
        );
        invalid(
            "database = \"d\"\ncollection = \"a\"\ncollection_exclude = [\"b\"]\n",
            "source[0].collection_exclude",
            "without `collection`",
        );
        assert!(source("database = \"d\"\ncollection_exclude = [\"b\"]\n").is_ok());
        invalid(
            "queue_capacity = 0\n",
            "source[0].queue_capacity",
            "at least 1",
        );
        invalid(
            "memory_budget = \"512KiB\"\n",
            "source[0].memory_budget",
            "at least 1 MiB",
        );
        invalid(
            "heartbeat_interval = \"0s\"\n",
            "source[0].heartbeat_interval",
            "longer than 0",
        );
        let s = source(
            "[source.topic_namespace_map]\n\"*\" = \"all\"\n\"db.*\" = \"db\"\n\"db.c\" = \"c\"\n",
        )
        .unwrap();
        assert_eq!(s.topic_namespace_map.len(), 3);
    }

    /// Regex keys are tried in the order written, so loading (which goes through the
    /// `config` crate's unordered tables) keeps the map's document order; the connector's
    /// database-only keys are valid.
    #[test]
    fn the_namespace_map_keeps_its_order_through_loading() {
        let keys = [
            "/z.*", "carDb", "/a.*", "carDb.ev", "*", "/m[0-9]+", "/b.*", "/y.*", "/c.*", "/x.*",
            "/d.*", "/w.*",
        ];
        let table: String = keys
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k:?} = \"t{i}\"\n"))
            .collect();
        let s = source(&format!("[source.topic_namespace_map]\n{table}"))
            .unwrap_or_else(|v| panic!("{v:?}"));
        let loaded: Vec<&str> = s
            .topic_namespace_map
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(loaded, keys);
    }

    #[test]
    fn unknown_options_and_values_name_the_key() {
        let text = "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"h:1\"\n[[source]]\nname = \"s\"\nfull_document = \"sometimes\"\n";
        let err = load_str(text, Path::new("t.toml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("key `source[0].full_document`")
                && err.contains("unknown variant `sometimes`"),
            "{err}"
        );
        let text = text.replace(
            "full_document = \"sometimes\"",
            "fulldocument = \"updateLookup\"",
        );
        let err = load_str(&text, Path::new("t.toml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("key `source[0].fulldocument`") && err.contains("unknown field"),
            "{err}"
        );
    }
}
