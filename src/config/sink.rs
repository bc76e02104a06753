//! `[[sink]]`: one Kafka → MongoDB pipeline, and its validation.
//!
//! Key names follow the MongoDB Kafka Connector's where one exists
//! (`document.id.strategy` is `id_strategy` here, `delete.on.null.values` is
//! `delete_on_null_values`). Every setting below `topic_overrides` in this file may be
//! overridden for one topic in `[sink.topic_overrides."<topic>"]`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::registry::{self, SchemaRegistryConfig};
use super::source::{default_memory_budget, validate_memory_budget, ErrorsConfig};
use super::violation::{collection_name, database_name, topic_name, Violation};

/// Keys that belong to the pipeline as a whole and cannot be overridden per topic.
const PIPELINE_KEYS: &[&str] = &[
    "name",
    "topics",
    "topics_regex",
    "group_id",
    "topic_overrides",
    "queue_capacity",
    "memory_budget",
];

/// The steps `post_processor_chain` may name, each with the key that configures it and the
/// MongoDB Kafka Connector's post-processor it stands for.
pub const POST_PROCESSOR_STEPS: &[(&str, &str, &str)] = &[
    ("id", "id_strategy", "DocumentIdAdder"),
    ("allow_key", "key_allow_fields", "AllowListKeyProjector"),
    ("block_key", "key_block_fields", "BlockListKeyProjector"),
    (
        "allow_value",
        "value_allow_fields",
        "AllowListValueProjector",
    ),
    (
        "block_value",
        "value_block_fields",
        "BlockListValueProjector",
    ),
    ("rename", "field_renames", "RenameByMapping"),
    ("rename_regex", "field_rename_regex", "RenameByRegExp"),
    ("kafka_metadata", "kafka_metadata_field", "KafkaMetaAdder"),
    (
        "remove_nulls",
        "remove_null_fields",
        "NullFieldValueRemover",
    ),
];

/// One `[[sink]]` pipeline: Kafka topics → MongoDB collections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique name of the pipeline (letters, digits, `-`, `_`); used in logs and metrics.
    pub name: String,
    /// The topics to consume.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Consume every topic whose name matches this regex (topics created later included).
    #[serde(default)]
    pub topics_regex: Option<String>,
    /// The consumer group. Default: `mongo-kafka-bridge-<name>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Settings for one topic: a table of any per-topic key below, keyed by topic name.
    #[serde(default)]
    pub topic_overrides: BTreeMap<String, toml::Table>,
    /// No effect (accepted so configurations keep loading, with a warning naming it): a
    /// partition writer takes its records straight off the partition's own librdkafka queue,
    /// none while it writes a batch.
    #[serde(default)]
    pub queue_capacity: Option<usize>,
    /// Bytes of records the pipeline's partitions hold at once, all partitions together,
    /// from taking a record off librdkafka's queue until MongoDB acknowledged its write
    /// (`"64MiB"`, `"500MB"`, or a number of bytes; at least 1 MiB). While it is spent the
    /// partitions read no more and records wait in Kafka; a record larger than the whole
    /// budget passes alone. `docs/configuration.md` "Memory" adds what else the daemon
    /// holds.
    #[serde(default = "default_memory_budget")]
    pub memory_budget: ByteSize,

    // ---- per-topic settings ----
    /// The database written to (also the fallback of `namespace_from = "key"|"value"`).
    pub database: String,
    /// The collection written to. Default: the topic's name.
    #[serde(default)]
    pub collection: Option<String>,
    /// Where the target namespace comes from: `config` (`database`/`collection`), or a field
    /// of the record's `key` or `value` (`database_field`, `collection_field`).
    #[serde(default)]
    pub namespace_from: NamespaceFrom,
    /// With `namespace_from = "key"|"value"`: dotted path of the field naming the database.
    /// Absent: `database`.
    #[serde(default)]
    pub database_field: Option<String>,
    /// With `namespace_from = "key"|"value"`: dotted path of the field naming the collection.
    /// Absent: `collection`, then the topic.
    #[serde(default)]
    pub collection_field: Option<String>,
    /// With `namespace_from = "key"|"value"`: a missing, non-string or empty field (or no key
    /// document, no value) is a `namespace` error; `false`: that part of the namespace is
    /// `database` or `collection` (then the topic) instead (the connector's
    /// `namespace.mapper.error.if.invalid`, whose default is `false`).
    #[serde(default = "super::root::default_true")]
    pub error_if_invalid: bool,
    /// How record keys are read: `json` (plain or extended JSON), `bson`, `string`, `avro`,
    /// `json_schema`, `protobuf`, `connect_json` (Kafka Connect's `JsonConverter` envelope).
    #[serde(default)]
    pub key_format: RecordFormat,
    /// How record values are read: `json` (plain or extended JSON), `bson`, `avro`,
    /// `json_schema`, `protobuf` or `connect_json` (Kafka Connect's `JsonConverter` envelope).
    #[serde(default)]
    pub value_format: RecordFormat,
    /// The schema registry `avro`, `json_schema` and `protobuf` records are read through
    /// (their schema id picks the schema; the subject it is under does not matter).
    #[serde(default)]
    pub schema_registry: Option<SchemaRegistryConfig>,
    /// How the `_id` of written documents is chosen.
    #[serde(default)]
    pub id_strategy: IdStrategy,
    /// With `partial_key`/`partial_value`: the dotted paths of the fields forming the `_id`
    /// (`allow`), or left out of it (`block`), per `id_fields_projection`.
    #[serde(default)]
    pub id_fields: Vec<String>,
    /// With `partial_key`/`partial_value`: whether `id_fields` lists what the `_id` keeps
    /// (`allow`, the default) or what it leaves out of the key or value (`block`); the
    /// connector's `document.id.strategy.partial.*.projection.type`.
    #[serde(default)]
    pub id_fields_projection: IdProjection,
    /// Replace an `_id` the value already holds (the MongoDB Kafka Connector's
    /// `document.id.strategy.overwrite.existing`). Off: an existing `_id` is kept.
    #[serde(default)]
    pub id_overwrite_existing: bool,
    /// With `id_strategy = "uuid"`: store the UUID as a `string` or as `binary` (subtype 4).
    #[serde(default)]
    pub uuid_representation: UuidRepresentation,
    /// Keep only these (dotted) fields of the key.
    #[serde(default)]
    pub key_allow_fields: Vec<String>,
    /// Remove these (dotted) fields from the key.
    #[serde(default)]
    pub key_block_fields: Vec<String>,
    /// Keep only these (dotted) fields of the value (`_id` always stays).
    #[serde(default)]
    pub value_allow_fields: Vec<String>,
    /// Remove these (dotted) fields from the value.
    #[serde(default)]
    pub value_block_fields: Vec<String>,
    /// Rename value fields: dotted path → new name of the last segment (the connector's
    /// `field.renamer.mapping` entries whose `oldName` starts with `value.`). A path names
    /// the fields as earlier renames left them, does not reach into arrays, and a new name
    /// the document already has drops the renamed field, as the connector does.
    #[serde(default)]
    pub field_renames: BTreeMap<String, String>,
    /// Rename key fields, as `field_renames` renames value fields (the connector's
    /// `field.renamer.mapping` entries whose `oldName` starts with `key.`).
    #[serde(default)]
    pub key_field_renames: BTreeMap<String, String>,
    /// Rename fields by regex, the rules applied in order (the connector's
    /// `field.renamer.regexp`). With `regexp`: a key or value field whose path, prefixed
    /// `key.` or `value.`, matches `regexp` whole has each match of `pattern` in its name
    /// replaced by `replace`. Without `regexp`: value fields only, `pattern` is matched
    /// against the dotted path and the last segment of the result is the new name.
    #[serde(default)]
    pub field_rename_regex: Vec<RegexRename>,
    /// Add `{topic, partition, offset, timestamp}` of the record under this field of the
    /// document.
    #[serde(default)]
    pub kafka_metadata_field: Option<String>,
    /// Remove the value's null fields, in nested documents and documents in arrays too (the
    /// MongoDB Kafka Connector's `NullFieldValueRemover`).
    #[serde(default)]
    pub remove_null_fields: bool,
    /// The post-processors in the order they run, by the names of [`POST_PROCESSOR_STEPS`];
    /// `None`: the id, projections, renames, Kafka metadata, null removal. `id` runs first
    /// when left out (as the connector's `DocumentIdAdder`).
    #[serde(default)]
    pub post_processor_chain: Option<Vec<String>>,
    /// How a record becomes a write.
    #[serde(default)]
    pub write_model: WriteModelKind,
    /// With the business key write models (`replace_business_key`,
    /// `update_business_key_timestamps`, `delete_business_key`) and `delete_write_model =
    /// "delete_tombstone_business_key"`: the dotted paths that identify a document.
    #[serde(default)]
    pub business_key_fields: Vec<String>,
    /// A record with a null value (tombstone) deletes a document, as `delete_write_model`
    /// says which.
    #[serde(default)]
    pub delete_on_null_values: bool,
    /// With `delete_on_null_values`: how a tombstone deletes (the connector's
    /// `delete.writemodel.strategy`): `delete_one`, the document with the key's `_id`, or
    /// `delete_tombstone_business_key`, the document whose `business_key_fields` equal the
    /// key's.
    #[serde(default)]
    pub delete_write_model: DeleteWriteModel,
    /// A field holding the record's version (a number, a date, the source's cluster time):
    /// a replace or update then overwrites a stored document only when the stored field is
    /// not newer (or missing), and a record older than what is stored is skipped and counted
    /// (`mkb_sink_stale_writes_skipped_total`), so a replayed or late record never writes an
    /// older version over a newer one. With the `_id`-based upserting write models
    /// (`replace_one`, `update_one`, `update_one_timestamps`) and CDC handlers; a record
    /// without the field, and a delete, are written unguarded.
    #[serde(default)]
    pub stale_write_guard: Option<String>,
    /// The write concern of this sink's writes, instead of the connection string's (`w`,
    /// `journal`, `wtimeoutMS`); absent: the connection string's.
    #[serde(default)]
    pub write_concern: Option<WriteConcernConfig>,
    /// Write to a time-series collection whose time field is this top-level field (the
    /// connector's `timeseries.timefield`); the collection is created as one when missing,
    /// and the default `write_model` becomes `insert_one`.
    #[serde(default)]
    pub timeseries_time_field: Option<String>,
    /// With `timeseries_time_field`: make the time field a date when it is a number
    /// (milliseconds since the epoch) or text (RFC 3339, or `timeseries_time_field_format`)
    /// (`timeseries.timefield.auto.convert`).
    #[serde(default)]
    pub timeseries_time_field_auto_convert: bool,
    /// With `timeseries_time_field_auto_convert`: the format of time fields given as text, in
    /// the `time` crate's format description syntax, e.g. `"[day]/[month]/[year]
    /// [hour]:[minute]"` (`timeseries.timefield.auto.convert.date.format`). Absent: RFC 3339,
    /// `YYYY-MM-DD HH:MM:SS[.fff]` or `YYYY-MM-DD`. Without an offset the time is UTC; without
    /// a time of day it is midnight.
    #[serde(default)]
    pub timeseries_time_field_format: Option<String>,
    /// With `timeseries_time_field`: the top-level field holding what identifies a series
    /// (`timeseries.metafield`).
    #[serde(default)]
    pub timeseries_meta_field: Option<String>,
    /// With `timeseries_time_field`: `seconds`, `minutes` or `hours`
    /// (`timeseries.granularity`).
    #[serde(default)]
    pub timeseries_granularity: Option<Granularity>,
    /// With `timeseries_time_field`: documents are removed this long after their time
    /// (`timeseries.expire.after.seconds`).
    #[serde(default, with = "humantime_serde")]
    pub timeseries_expire_after: Option<Duration>,
    /// Replay change events: `none`, `mongodb` (our source's and the MongoDB Kafka
    /// Connector's events), `debezium_mongodb`, `debezium_rdbms` (MySQL, PostgreSQL),
    /// `qlik_rdbms` (Qlik Replicate).
    #[serde(default)]
    pub cdc_handler: CdcHandler,
    /// With a `cdc_handler`: remove null fields from the replacement of a replace and from
    /// the `$set` of an update (the connector's `change.data.capture.handler.remove.null.values`).
    #[serde(default)]
    pub cdc_remove_null_values: bool,
    /// Records per bulk write.
    #[serde(default = "default_max_batch_size")]
    pub max_batch_size: usize,
    /// How long a partial batch waits for more records before it is written.
    #[serde(default = "default_max_batch_delay", with = "humantime_serde")]
    pub max_batch_delay: Duration,
    /// Attempts of a bulk write that failed for a reason that may pass (network, primary
    /// step-down, write conflict), with backoff, before the pipeline restarts from its
    /// committed offsets.
    #[serde(default = "default_max_num_retries")]
    pub max_num_retries: u32,
    /// Pause after every this many batches a partition writer wrote (the connector's
    /// `rate.limiting.every.n`); absent: no pause.
    #[serde(default)]
    pub rate_limiting_every_n: Option<usize>,
    /// With `rate_limiting_every_n`: how long to pause (`rate.limiting.timeout`).
    #[serde(default = "default_rate_limiting_timeout", with = "humantime_serde")]
    pub rate_limiting_timeout: Duration,
    /// What happens to a record that cannot be decoded, mapped or written.
    #[serde(default)]
    pub errors: ErrorsConfig,
}

/// `write_concern`: what MongoDB acknowledges before a sink's write counts as done (and its
/// offset is committed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteConcernConfig {
    /// Members that must have applied the write: a number (at least 1), `"majority"` or a
    /// custom write concern's name.
    #[serde(default)]
    pub w: Option<WriteAcknowledgment>,
    /// Whether the write must be in the on-disk journal.
    #[serde(default)]
    pub journal: Option<bool>,
    /// How long the server waits for `w` before it answers with a write concern error
    /// (retried as one).
    #[serde(default, with = "humantime_serde")]
    pub wtimeout: Option<Duration>,
}

/// `write_concern.w`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WriteAcknowledgment {
    /// This many members.
    Nodes(u32),
    /// `"majority"`, or a custom write concern's name.
    Named(String),
}

/// `namespace_from`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceFrom {
    /// `database` and `collection` (or the topic).
    #[default]
    Config,
    /// Fields of the record key.
    Key,
    /// Fields of the record value.
    Value,
}

/// `key_format`, `value_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    /// JSON; extended JSON (`{"$oid": ...}`, `{"$date": ...}`) is read as BSON types.
    #[default]
    Json,
    /// Raw BSON document bytes.
    Bson,
    /// UTF-8 text taken as one string (keys only).
    String,
    /// Avro in a schema registry's wire format (a zero byte, the schema id, the datum), read
    /// with the schema the registry has under that id.
    Avro,
    /// JSON in a schema registry's wire format, read with the JSON Schema the registry has
    /// under its id (dates and binaries restored where the schema says so).
    JsonSchema,
    /// Protobuf in a schema registry's wire format (a zero byte, the schema id, the message
    /// indexes, the message), read with the schema the registry has under that id, the
    /// message picked by the indexes.
    Protobuf,
    /// Kafka Connect's `JsonConverter` with `schemas.enable=true`: `{"schema": ...,
    /// "payload": ...}`, the payload read with its Connect schema (timestamps, dates,
    /// decimals and bytes restored).
    ConnectJson,
}

/// `id_strategy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdStrategy {
    /// A new ObjectId.
    #[default]
    ObjectId,
    /// `"<topic>-<partition>-<offset>"`.
    KafkaMeta,
    /// The whole key.
    FullKey,
    /// The `id_fields` of the key.
    PartialKey,
    /// The `id_fields` of the value.
    PartialValue,
    /// The key's `_id` field.
    ProvidedInKey,
    /// The value's `_id` field.
    ProvidedInValue,
    /// A new random UUID.
    Uuid,
    /// The key's `_id`, a UUID (text, with or without dashes, or binary subtype 4), stored
    /// as binary subtype 4.
    UuidProvidedInKey,
    /// The value's `_id`, a UUID (text, with or without dashes, or binary subtype 4), stored
    /// as binary subtype 4.
    UuidProvidedInValue,
}

/// `timeseries_granularity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// Measurements arrive seconds apart.
    Seconds,
    /// Minutes apart.
    Minutes,
    /// Hours apart.
    Hours,
}

impl Granularity {
    /// The name MongoDB's `create` command takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seconds => "seconds",
            Self::Minutes => "minutes",
            Self::Hours => "hours",
        }
    }
}

/// `id_fields_projection`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdProjection {
    /// The `_id` holds only the `id_fields`.
    #[default]
    Allow,
    /// The `_id` holds everything but the `id_fields` (and any `_id` already there).
    Block,
}

/// `delete_write_model`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteWriteModel {
    /// Delete the document with the key's `_id` (or the whole key).
    #[default]
    DeleteOne,
    /// Delete the document whose `business_key_fields` equal the key's.
    DeleteTombstoneBusinessKey,
}

/// `uuid_representation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UuidRepresentation {
    /// The canonical hyphenated text form.
    #[default]
    String,
    /// BSON binary, subtype 4.
    Binary,
}

/// One `field_rename_regex` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRename {
    /// Which fields: matched whole against each field's dotted path prefixed `key.` or
    /// `value.` (`'^key\..*'` selects every key field); absent: every value field,
    /// `pattern` rewriting its dotted path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<String>,
    /// With `regexp`: matched in the field's name; without: in its dotted path.
    pub pattern: String,
    /// The replacement, as Java's `replaceAll` reads it: `$1` for a group, `\$` for a `$`.
    pub replace: String,
}

/// `write_model`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteModelKind {
    /// Replace the document with the same `_id`, inserting it when missing.
    #[default]
    ReplaceOne,
    /// Replace the document matching `business_key_fields`, inserting it when missing.
    ReplaceBusinessKey,
    /// `$set` the value's fields on the document with the same `_id` (upsert); the
    /// connector's `UpdateOneDefaultStrategy`.
    UpdateOne,
    /// `$set` the value's fields on the document with the same `_id` (upsert), keeping
    /// `_insertedTS` from the first write and setting `_modifiedTS` on each.
    UpdateOneTimestamps,
    /// `$set` the value's fields on the document matching `business_key_fields` (upsert),
    /// with `_insertedTS` and `_modifiedTS` as `update_one_timestamps`; the connector's
    /// `UpdateOneBusinessKeyTimestampStrategy`.
    UpdateBusinessKeyTimestamps,
    /// Insert; an existing `_id` is a write error.
    InsertOne,
    /// Delete the document with the key's `_id`.
    DeleteOne,
    /// Delete the document matching the value's `business_key_fields`; the connector's
    /// `DeleteOneBusinessKeyStrategy`.
    DeleteBusinessKey,
}

impl WriteModelKind {
    /// Whether the model finds its document by `business_key_fields`.
    pub fn uses_business_key(self) -> bool {
        matches!(
            self,
            Self::ReplaceBusinessKey | Self::UpdateBusinessKeyTimestamps | Self::DeleteBusinessKey
        )
    }
}

/// `cdc_handler`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CdcHandler {
    /// Records are documents, written by `write_model`.
    #[default]
    None,
    /// MongoDB change events.
    Mongodb,
    /// Debezium MongoDB connector envelopes.
    DebeziumMongodb,
    /// Debezium relational connector envelopes (MySQL, PostgreSQL).
    DebeziumRdbms,
    /// Qlik Replicate messages from a relational database, as the connector's
    /// `com.mongodb.kafka.connect.sink.cdc.qlik.rdbms.RdbmsHandler`.
    QlikRdbms,
}

fn default_max_batch_size() -> usize {
    500
}

fn default_max_num_retries() -> u32 {
    10
}

fn default_rate_limiting_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_max_batch_delay() -> Duration {
    Duration::from_millis(100)
}

impl SinkConfig {
    /// The consumer group this pipeline joins.
    pub fn effective_group_id(&self) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("mongo-kafka-bridge-{}", self.name))
    }

    /// The settings for `topic`: these, with the topic's `topic_overrides` applied.
    pub fn for_topic(&self, topic: &str) -> Result<SinkConfig, String> {
        let Some(overrides) = self.topic_overrides.get(topic) else {
            return Ok(self.clone());
        };
        let mut table = toml::Table::try_from(self).map_err(|e| e.to_string())?;
        table.remove("topic_overrides");
        for (key, value) in overrides {
            if PIPELINE_KEYS.contains(&key.as_str()) {
                return Err(format!(
                    "`{key}` belongs to the whole pipeline and cannot be set per topic"
                ));
            }
            table.insert(key.clone(), value.clone());
        }
        serde_path_to_error::deserialize::<_, SinkConfig>(toml::Value::Table(table)).map_err(|e| {
            match e.path().to_string().as_str() {
                "." => e.inner().to_string(),
                path => format!("`{path}`: {}", e.inner()),
            }
        })
    }

    /// The collection records of `topic` go to when nothing in the record says otherwise.
    pub fn collection_for(&self, topic: &str) -> String {
        self.collection.clone().unwrap_or_else(|| topic.to_owned())
    }

    /// Every problem of this pipeline, keys prefixed with `key` (`sink[0]`).
    pub fn validate(&self, key: &str, out: &mut Vec<Violation>) {
        if self.topics.is_empty() && self.topics_regex.is_none() {
            out.push(Violation::new(
                format!("{key}.topics"),
                "must name at least one topic (or set `topics_regex`)",
            ));
        }
        for (i, topic) in self.topics.iter().enumerate() {
            topic_name(&format!("{key}.topics[{i}]"), topic, out);
        }
        if let Some(regex) = &self.topics_regex {
            if let Err(e) = regex::Regex::new(regex) {
                out.push(Violation::new(
                    format!("{key}.topics_regex"),
                    format!("not a valid regex: {e}"),
                ));
            }
        }
        if self
            .group_id
            .as_deref()
            .is_some_and(|g| g.trim().is_empty())
        {
            out.push(Violation::new(
                format!("{key}.group_id"),
                "must not be empty",
            ));
        }
        if let Some(capacity) = self.queue_capacity {
            at_least_one(&format!("{key}.queue_capacity"), capacity, out);
        }
        validate_memory_budget(&format!("{key}.memory_budget"), self.memory_budget, out);
        self.validate_topic_settings(key, out);
        for topic in self.topic_overrides.keys() {
            let path = format!("{key}.topic_overrides.{topic}");
            let listed = self.topics.contains(topic)
                || self
                    .topics_regex
                    .as_deref()
                    .and_then(|r| regex::Regex::new(r).ok())
                    .is_some_and(|r| r.is_match(topic));
            if !listed {
                out.push(Violation::new(
                    path.clone(),
                    format!("`{topic}` is not among the pipeline's topics"),
                ));
            }
            match self.for_topic(topic) {
                Ok(settings) => settings.validate_topic_settings(&path, out),
                Err(e) => out.push(Violation::new(path, e)),
            }
        }
    }

    /// Whether the post-processor step `name` has its settings (`id` and `remove_nulls`
    /// need none).
    fn post_processor_configured(&self, name: &str) -> bool {
        match name {
            "allow_key" => !self.key_allow_fields.is_empty(),
            "block_key" => !self.key_block_fields.is_empty(),
            "allow_value" => !self.value_allow_fields.is_empty(),
            "block_value" => !self.value_block_fields.is_empty(),
            "rename" => !self.field_renames.is_empty() || !self.key_field_renames.is_empty(),
            "rename_regex" => !self.field_rename_regex.is_empty(),
            "kafka_metadata" => self.kafka_metadata_field.is_some(),
            "remove_nulls" => self.remove_null_fields,
            _ => true,
        }
    }

    /// `post_processor_chain`: known names, each once, each with its settings, and every
    /// configured post-processor in it (a setting left out of the chain would not run).
    fn validate_post_processor_chain(&self, key: &str, out: &mut Vec<Violation>) {
        let Some(chain) = &self.post_processor_chain else {
            return;
        };
        if self.cdc_handler != CdcHandler::None {
            out.push(Violation::new(
                format!("{key}.post_processor_chain"),
                "post-processors do not run with a `cdc_handler` (the events are replayed as they are, as the connector's CDC handlers do)",
            ));
        }
        let names: Vec<&str> = POST_PROCESSOR_STEPS.iter().map(|s| s.0).collect();
        for (i, name) in chain.iter().enumerate() {
            let at = format!("{key}.post_processor_chain[{i}]");
            let Some((_, setting, _)) = POST_PROCESSOR_STEPS.iter().find(|s| s.0 == name) else {
                let connector = name.rsplit('.').next().unwrap_or_default();
                let hint = POST_PROCESSOR_STEPS
                    .iter()
                    .find(|s| s.2 == connector)
                    .map(|s| format!("use `{}` (the connector's `{}`); ", s.0, s.2))
                    .unwrap_or_default();
                out.push(Violation::new(
                    at,
                    format!(
                        "`{name}` is not a post-processor: {hint}the steps are `{}`",
                        names.join("`, `")
                    ),
                ));
                continue;
            };
            if chain[..i].contains(name) {
                out.push(Violation::new(at, format!("`{name}` is listed twice")));
            } else if name != "remove_nulls" && !self.post_processor_configured(name) {
                out.push(Violation::new(
                    at,
                    format!("`{name}` needs `{setting}`: set it, or leave `{name}` out"),
                ));
            }
        }
        for (name, setting, _) in POST_PROCESSOR_STEPS {
            if *name != "id"
                && self.post_processor_configured(name)
                && !chain.iter().any(|c| c == name)
            {
                out.push(Violation::new(
                    format!("{key}.{setting}"),
                    format!("is set but `post_processor_chain` has no `{name}`: it would not run"),
                ));
            }
        }
    }

    /// The checks of the settings that may differ per topic.
    fn validate_topic_settings(&self, key: &str, out: &mut Vec<Violation>) {
        database_name(&format!("{key}.database"), &self.database, out);
        let avro = [
            ("value_format", self.value_format),
            ("key_format", self.key_format),
        ]
        .into_iter()
        .find_map(|(key, format)| match format {
            RecordFormat::Avro => Some(format!("`{key} = \"avro\"`")),
            RecordFormat::JsonSchema => Some(format!("`{key} = \"json_schema\"`")),
            RecordFormat::Protobuf => Some(format!("`{key} = \"protobuf\"`")),
            _ => None,
        });
        registry::required(key, self.schema_registry.as_ref(), avro.as_deref(), out);
        if let Some(collection) = &self.collection {
            collection_name(&format!("{key}.collection"), collection, out);
        }
        if self.namespace_from == NamespaceFrom::Config {
            for (field, set) in [
                ("database_field", self.database_field.is_some()),
                ("collection_field", self.collection_field.is_some()),
                ("error_if_invalid", !self.error_if_invalid),
            ] {
                if set {
                    out.push(Violation::new(
                        format!("{key}.{field}"),
                        "is read only with `namespace_from = \"key\"` or `\"value\"`",
                    ));
                }
            }
        } else if self.database_field.is_none() && self.collection_field.is_none() {
            out.push(Violation::new(
                format!("{key}.namespace_from"),
                "needs `database_field` or `collection_field`",
            ));
        }
        for (field, value) in [
            ("database_field", &self.database_field),
            ("collection_field", &self.collection_field),
            ("kafka_metadata_field", &self.kafka_metadata_field),
        ] {
            if let Some(path) = value {
                field_path(&format!("{key}.{field}"), path, out);
            }
        }
        if self.value_format == RecordFormat::String {
            out.push(Violation::new(
                format!("{key}.value_format"),
                "`string` is for keys only: values must be documents (`json` or `bson`)",
            ));
        }
        let partial = matches!(
            self.id_strategy,
            IdStrategy::PartialKey | IdStrategy::PartialValue
        );
        if partial && self.id_fields.is_empty() {
            out.push(Violation::new(
                format!("{key}.id_fields"),
                "must list at least one field with `id_strategy` `partial_key` or `partial_value`",
            ));
        }
        if !partial && !self.id_fields.is_empty() {
            out.push(Violation::new(
                format!("{key}.id_fields"),
                "is read only with `id_strategy` `partial_key` or `partial_value`",
            ));
        }
        if !partial && self.id_fields_projection != IdProjection::default() {
            out.push(Violation::new(
                format!("{key}.id_fields_projection"),
                "is read only with `id_strategy` `partial_key` or `partial_value`",
            ));
        }
        let lists = [
            ("id_fields", &self.id_fields),
            ("key_allow_fields", &self.key_allow_fields),
            ("key_block_fields", &self.key_block_fields),
            ("value_allow_fields", &self.value_allow_fields),
            ("value_block_fields", &self.value_block_fields),
            ("business_key_fields", &self.business_key_fields),
        ];
        for (field, paths) in lists {
            for (i, path) in paths.iter().enumerate() {
                field_path(&format!("{key}.{field}[{i}]"), path, out);
            }
        }
        for (side, allow, block) in [
            ("key", &self.key_allow_fields, &self.key_block_fields),
            ("value", &self.value_allow_fields, &self.value_block_fields),
        ] {
            if !allow.is_empty() && !block.is_empty() {
                out.push(Violation::new(
                    format!("{key}.{side}_block_fields"),
                    format!("cannot be combined with `{side}_allow_fields`"),
                ));
            }
        }
        for (setting, renames) in [
            ("field_renames", &self.field_renames),
            ("key_field_renames", &self.key_field_renames),
        ] {
            for (from, to) in renames {
                field_path(&format!("{key}.{setting}.\"{from}\""), from, out);
                if to.is_empty() || to.contains('.') {
                    out.push(Violation::new(
                        format!("{key}.{setting}.\"{from}\""),
                        format!("`{to}` must be a non-empty field name without `.`"),
                    ));
                }
            }
        }
        for (i, rename) in self.field_rename_regex.iter().enumerate() {
            let regexes = [
                ("pattern", Some(&rename.pattern)),
                ("regexp", rename.regexp.as_ref()),
            ];
            for (field, text) in regexes {
                if let Some(Err(e)) = text.map(|t| regex::Regex::new(t)) {
                    out.push(Violation::new(
                        format!("{key}.field_rename_regex[{i}].{field}"),
                        format!("not a valid regex: {e}"),
                    ));
                }
            }
        }
        self.validate_post_processor_chain(key, out);
        if self.cdc_remove_null_values && self.cdc_handler == CdcHandler::None {
            out.push(Violation::new(
                format!("{key}.cdc_remove_null_values"),
                "is read only with a `cdc_handler` (`remove_null_fields` removes the nulls of documents written without one)",
            ));
        }
        let tombstone_business_key =
            self.delete_write_model == DeleteWriteModel::DeleteTombstoneBusinessKey;
        let business = self.write_model.uses_business_key() || tombstone_business_key;
        const BUSINESS_KEY_USERS: &str = "`write_model` `replace_business_key`, \
             `update_business_key_timestamps` or `delete_business_key`, or `delete_write_model = \
             \"delete_tombstone_business_key\"`";
        if business && self.business_key_fields.is_empty() {
            out.push(Violation::new(
                format!("{key}.business_key_fields"),
                format!("must list at least one field with {BUSINESS_KEY_USERS}"),
            ));
        }
        if !business && !self.business_key_fields.is_empty() {
            out.push(Violation::new(
                format!("{key}.business_key_fields"),
                format!("is read only with {BUSINESS_KEY_USERS}"),
            ));
        }
        if self.delete_write_model != DeleteWriteModel::default() && !self.delete_on_null_values {
            out.push(Violation::new(
                format!("{key}.delete_write_model"),
                "is read only with `delete_on_null_values = true` (it says how a tombstone deletes)",
            ));
        }
        self.validate_stale_write_guard(key, out);
        if let Some(concern) = &self.write_concern {
            let key = format!("{key}.write_concern");
            if concern == &WriteConcernConfig::default() {
                out.push(Violation::new(
                    &key,
                    "sets nothing: give `w`, `journal` or `wtimeout`, or leave it out for the connection string's",
                ));
            }
            match &concern.w {
                Some(WriteAcknowledgment::Nodes(0)) => out.push(Violation::new(
                    format!("{key}.w"),
                    "must be at least 1: an unacknowledged write (w = 0) cannot be known written before its offset is committed",
                )),
                Some(WriteAcknowledgment::Named(name)) if name.is_empty() => out.push(
                    Violation::new(format!("{key}.w"), "must be a number, \"majority\" or a custom write concern's name"),
                ),
                _ => {}
            }
        }
        self.validate_time_series(key, out);
        if self.rate_limiting_every_n == Some(0) {
            out.push(Violation::new(
                format!("{key}.rate_limiting_every_n"),
                "must be at least 1 (leave it out for no pause)",
            ));
        }
        if self.rate_limiting_every_n.is_some() && self.rate_limiting_timeout.is_zero() {
            out.push(Violation::new(
                format!("{key}.rate_limiting_timeout"),
                "must be longer than 0 with `rate_limiting_every_n`",
            ));
        }
        at_least_one(&format!("{key}.max_batch_size"), self.max_batch_size, out);
        if self.max_batch_size > 100_000 {
            out.push(Violation::new(
                format!("{key}.max_batch_size"),
                "must be at most 100000 (MongoDB's limit of writes per batch)",
            ));
        }
        if self.errors.tolerance == super::Tolerance::All && self.errors.dead_letter_topic.is_none()
        {
            out.push(Violation::new(
                format!("{key}.errors.dead_letter_topic"),
                "is required with `errors.tolerance = \"all\"`",
            ));
        }
        if let Some(topic) = &self.errors.dead_letter_topic {
            topic_name(&format!("{key}.errors.dead_letter_topic"), topic, out);
        }
    }
}

impl SinkConfig {
    fn validate_stale_write_guard(&self, key: &str, out: &mut Vec<Violation>) {
        let Some(field) = &self.stale_write_guard else {
            return;
        };
        let key = format!("{key}.stale_write_guard");
        field_path(&key, field, out);
        if field == "_id" || field.starts_with("_id.") {
            out.push(Violation::new(
                &key,
                "must name a version field, not the `_id` a document is found by",
            ));
        }
        let guarded_model = matches!(
            self.write_model,
            WriteModelKind::ReplaceOne
                | WriteModelKind::UpdateOne
                | WriteModelKind::UpdateOneTimestamps
        );
        if self.cdc_handler == CdcHandler::None && !guarded_model {
            out.push(Violation::new(
                &key,
                "works with the `_id`-based upserting write models (`replace_one`, `update_one`, `update_one_timestamps`) or a `cdc_handler`",
            ));
        }
        if self.timeseries_time_field.is_some() {
            out.push(Violation::new(
                &key,
                "cannot be used with a time-series collection (it takes inserts only)",
            ));
        }
    }

    fn validate_time_series(&self, key: &str, out: &mut Vec<Violation>) {
        let Some(time_field) = &self.timeseries_time_field else {
            for (field, set) in [
                (
                    "timeseries_time_field_auto_convert",
                    self.timeseries_time_field_auto_convert,
                ),
                (
                    "timeseries_time_field_format",
                    self.timeseries_time_field_format.is_some(),
                ),
                (
                    "timeseries_meta_field",
                    self.timeseries_meta_field.is_some(),
                ),
                (
                    "timeseries_granularity",
                    self.timeseries_granularity.is_some(),
                ),
                (
                    "timeseries_expire_after",
                    self.timeseries_expire_after.is_some(),
                ),
            ] {
                if set {
                    out.push(Violation::new(
                        format!("{key}.{field}"),
                        "is read only with `timeseries_time_field`",
                    ));
                }
            }
            return;
        };
        for (field, value) in [
            ("timeseries_time_field", Some(time_field)),
            ("timeseries_meta_field", self.timeseries_meta_field.as_ref()),
        ] {
            if let Some(name) = value {
                if name.is_empty() || name.contains('.') || name.starts_with('$') || name == "_id" {
                    out.push(Violation::new(
                        format!("{key}.{field}"),
                        format!("`{name}` must be a top-level field name (no `.`, no leading `$`, not `_id`)"),
                    ));
                }
            }
        }
        if self.timeseries_meta_field.as_ref() == Some(time_field) {
            out.push(Violation::new(
                format!("{key}.timeseries_meta_field"),
                "must differ from `timeseries_time_field`",
            ));
        }
        if let Some(format) = &self.timeseries_time_field_format {
            if !self.timeseries_time_field_auto_convert {
                out.push(Violation::new(
                    format!("{key}.timeseries_time_field_format"),
                    "is read only with `timeseries_time_field_auto_convert = true`",
                ));
            }
            if let Err(e) = time::format_description::parse_owned::<2>(format) {
                out.push(Violation::new(
                    format!("{key}.timeseries_time_field_format"),
                    format!("not a format description: {e}"),
                ));
            }
        }
        if !matches!(
            self.write_model,
            WriteModelKind::ReplaceOne | WriteModelKind::InsertOne
        ) || self.cdc_handler != CdcHandler::None
        {
            out.push(Violation::new(
                format!("{key}.timeseries_time_field"),
                "time-series collections take inserts: leave `write_model` at its default (it becomes `insert_one`) or set `insert_one`, without a `cdc_handler`",
            ));
        }
    }
}

fn at_least_one(key: &str, value: usize, out: &mut Vec<Violation>) {
    if value == 0 {
        out.push(Violation::new(key, "must be at least 1"));
    }
}

/// A dotted field path: non-empty segments, no `$` at a segment's start.
fn field_path(key: &str, path: &str, out: &mut Vec<Violation>) {
    if path.split('.').any(|s| s.is_empty() || s.starts_with('$')) {
        out.push(Violation::new(
            key,
            format!("`{path}` is not a field path (`a.b.c`, no empty or `$` segment)"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(extra: &str) -> SinkConfig {
        let text = format!("name = \"s\"\ntopics = [\"t\"]\ndatabase = \"db\"\n{extra}");
        match toml::from_str(&text) {
            Ok(sink) => sink,
            Err(e) => panic!("{e}\n{text}"),
        }
    }

    fn violations(extra: &str) -> Vec<String> {
        let mut out = Vec::new();
        sink(extra).validate("sink[0]", &mut out);
        out.into_iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn a_write_concern_acknowledges_every_write() {
        assert!(violations(
            "write_concern = { w = \"majority\", journal = true, wtimeout = \"5s\" }"
        )
        .is_empty());
        assert!(violations("write_concern = { w = 2 }").is_empty());
        let refused = violations("write_concern = { w = 0 }");
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].contains("sink[0].write_concern.w"),
            "{refused:?}"
        );
        assert_eq!(violations("write_concern = {}").len(), 1);
        let parsed = sink("write_concern = { w = \"majority\", wtimeout = \"1500ms\" }");
        assert_eq!(
            parsed.write_concern,
            Some(WriteConcernConfig {
                w: Some(WriteAcknowledgment::Named("majority".into())),
                journal: None,
                wtimeout: Some(Duration::from_millis(1500)),
            })
        );
    }

    #[test]
    fn the_stale_write_guard_names_a_version_field_of_an_upserting_model() {
        assert!(violations("stale_write_guard = \"version\"").is_empty());
        assert!(
            violations("stale_write_guard = \"meta.v\"\nwrite_model = \"update_one\"").is_empty()
        );
        assert!(violations("stale_write_guard = \"v\"\ncdc_handler = \"mongodb\"").is_empty());
        let refused = violations("stale_write_guard = \"_id\"\nwrite_model = \"insert_one\"");
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused
            .iter()
            .all(|v| v.contains("sink[0].stale_write_guard")));
        assert!(refused[1].contains("upserting write models"), "{refused:?}");
        assert_eq!(violations("stale_write_guard = \"a..b\"").len(), 1);
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(violations(""), Vec::<String>::new());
        let s = sink("");
        assert_eq!(s.collection_for("orders"), "orders");
        assert_eq!(s.id_strategy, IdStrategy::ObjectId);
        assert_eq!(s.write_model, WriteModelKind::ReplaceOne);
        assert_eq!(s.max_batch_size, 500);
        assert_eq!(s.memory_budget, ByteSize::mib(64));
    }

    #[test]
    fn the_memory_budget_is_a_size_of_at_least_1_mib() {
        assert_eq!(
            sink("memory_budget = \"8MiB\"").memory_budget.as_u64(),
            8 << 20
        );
        assert_eq!(
            sink("memory_budget = \"500 MB\"").memory_budget.as_u64(),
            500_000_000
        );
        assert_eq!(
            sink("memory_budget = 2097152").memory_budget.as_u64(),
            2 << 20
        );
        assert_eq!(
            violations("memory_budget = \"100KiB\""),
            ["key `sink[0].memory_budget`: must be at least 1 MiB (1048576 bytes), not 100.0 KiB"]
        );
    }

    #[test]
    fn topic_overrides_apply_to_their_topic_only() {
        let s = sink(
            "collection = \"all\"\n[topic_overrides.t]\ncollection = \"tees\"\nmax_batch_size = 7\nerrors = { tolerance = \"all\", dead_letter_topic = \"dlq\" }\n",
        );
        let t = s.for_topic("t").expect("override applies");
        assert_eq!(t.collection_for("t"), "tees");
        assert_eq!(t.max_batch_size, 7);
        assert_eq!(t.errors.dead_letter_topic.as_deref(), Some("dlq"));
        assert_eq!(s.for_topic("u").expect("no override"), s);
        assert_eq!(
            violations("[topic_overrides.t]\ncollection = \"x\"\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn bad_overrides_name_the_key() {
        let v = violations("[topic_overrides.t]\nmax_batch_size = \"many\"\n");
        assert!(
            v[0].contains("sink[0].topic_overrides.t") && v[0].contains("max_batch_size"),
            "{v:?}"
        );
        let v = violations("[topic_overrides.t]\ngroup_id = \"g\"\n");
        assert!(v[0].contains("cannot be set per topic"), "{v:?}");
        let v = violations("[topic_overrides.t]\nno_such_key = 1\n");
        assert!(v[0].contains("no_such_key"), "{v:?}");
        let v = violations("[topic_overrides.other]\ncollection = \"x\"\n");
        assert!(v[0].contains("not among the pipeline's topics"), "{v:?}");
        let v = violations("[topic_overrides.t]\nid_strategy = \"partial_key\"\n");
        assert!(v[0].contains("topic_overrides.t.id_fields"), "{v:?}");
    }

    #[test]
    fn impossible_combinations_are_named() {
        let cases = [
            ("id_strategy = \"partial_value\"", "sink[0].id_fields"),
            ("id_fields = [\"a\"]", "sink[0].id_fields"),
            (
                "write_model = \"replace_business_key\"",
                "sink[0].business_key_fields",
            ),
            (
                "key_allow_fields = [\"a\"]\nkey_block_fields = [\"b\"]",
                "sink[0].key_block_fields",
            ),
            ("value_format = \"string\"", "sink[0].value_format"),
            ("namespace_from = \"key\"", "sink[0].namespace_from"),
            ("database_field = \"db\"", "sink[0].database_field"),
            (
                "value_block_fields = [\"a..b\"]",
                "sink[0].value_block_fields[0]",
            ),
            (
                "field_rename_regex = [{pattern = \"(\", replace = \"\"}]",
                "sink[0].field_rename_regex[0].pattern",
            ),
            ("field_renames = {a = \"b.c\"}", "sink[0].field_renames"),
            (
                "field_rename_regex = [{regexp = \"(\", pattern = \"a\", replace = \"\"}]",
                "sink[0].field_rename_regex[0].regexp",
            ),
            ("key_field_renames = {a = \"\"}", "sink[0].key_field_renames"),
            ("max_batch_size = 0", "sink[0].max_batch_size"),
            (
                "errors = {tolerance = \"all\"}",
                "sink[0].errors.dead_letter_topic",
            ),
            ("topics_regex = \"(\"", "sink[0].topics_regex"),
            ("collection = \"a$b\"", "sink[0].collection"),
            (
                "id_fields_projection = \"block\"",
                "sink[0].id_fields_projection",
            ),
            (
                "write_model = \"update_business_key_timestamps\"",
                "sink[0].business_key_fields",
            ),
            (
                "write_model = \"delete_business_key\"",
                "sink[0].business_key_fields",
            ),
            (
                "delete_on_null_values = true\ndelete_write_model = \"delete_tombstone_business_key\"",
                "sink[0].business_key_fields",
            ),
            (
                "delete_write_model = \"delete_tombstone_business_key\"\nbusiness_key_fields = [\"a\"]",
                "sink[0].delete_write_model",
            ),
            (
                "write_model = \"update_one\"\nbusiness_key_fields = [\"a\"]",
                "sink[0].business_key_fields",
            ),
            ("rate_limiting_every_n = 0", "sink[0].rate_limiting_every_n"),
            (
                "rate_limiting_every_n = 2\nrate_limiting_timeout = \"0s\"",
                "sink[0].rate_limiting_timeout",
            ),
            (
                "timeseries_granularity = \"hours\"",
                "sink[0].timeseries_granularity",
            ),
            (
                "timeseries_time_field = \"a.b\"",
                "sink[0].timeseries_time_field",
            ),
            (
                "timeseries_time_field = \"t\"\nwrite_model = \"update_one\"",
                "sink[0].timeseries_time_field",
            ),
            (
                "timeseries_time_field = \"t\"\ntimeseries_meta_field = \"t\"",
                "sink[0].timeseries_meta_field",
            ),
            (
                "timeseries_time_field = \"t\"\ntimeseries_time_field_auto_convert = true\ntimeseries_time_field_format = \"[nonsense\"",
                "sink[0].timeseries_time_field_format",
            ),
            (
                "timeseries_time_field = \"t\"\ntimeseries_time_field_format = \"[year]\"",
                "sink[0].timeseries_time_field_format",
            ),
        ];
        for (extra, key) in cases {
            let v = violations(extra);
            assert!(
                v.iter().any(|v| v.contains(&format!("`{key}"))),
                "{extra}: {v:?}"
            );
        }
    }

    #[test]
    fn topics_or_a_regex_are_required() {
        let s: SinkConfig =
            toml::from_str("name = \"s\"\ndatabase = \"db\"\ntopics_regex = \"^orders\\\\..*\"")
                .expect("parses");
        let mut out = Vec::new();
        s.validate("sink[0]", &mut out);
        assert!(out.is_empty(), "{out:?}");
        let s: SinkConfig = toml::from_str("name = \"s\"\ndatabase = \"db\"").expect("parses");
        s.validate("sink[0]", &mut out);
        assert_eq!(out[0].key, "sink[0].topics");
    }
}
