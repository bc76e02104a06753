//! Every MongoDB Kafka Connector and Kafka Connect property, with our key or why we have none:
//! the one source of the migration guide's tables (`docs/migrating-from-the-connector.md`,
//! rendered by [`render`] and checked current by a test) and of the reasons `import-connect`
//! prints for what it does not carry over.
//!
//! A name may hold `*` (any text, at least one character) or `<...>` (one or more segments),
//! as `*.converter.schema.registry.url` or `topic.override.<topic>.<property>`.

/// One row of the guide: connector properties that map alike.
#[derive(Debug, Clone, Copy)]
pub struct Property {
    /// The connector's names, as the guide's first column lists them.
    pub names: &'static [&'static str],
    /// Words after the names in the first column (`(worker)`), or empty.
    pub qualifier: &'static str,
    /// Our key, or why there is none.
    pub ours: Ours,
    /// The notes column (Markdown).
    pub notes: &'static str,
    /// Values (lower case) at which the connector does what the daemon does without the
    /// property (`output.schema.infer.value=false`): nothing is lost, nothing is
    /// listed.
    pub unchanged: &'static [&'static str],
}

/// Where a property goes.
#[derive(Debug, Clone, Copy)]
pub enum Ours {
    /// Carried over: the guide's "our key" cell (Markdown).
    Key(&'static str),
    /// Not carried over.
    None(Why),
}

/// Why a property has no key of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The daemon does without it.
    NotNeeded,
    /// Not built yet.
    NotYet,
    /// Something else of ours does its work (Markdown).
    ReplacedBy(&'static str),
}

/// The guide's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// "Kafka Connect and worker properties".
    Worker,
    /// "Source properties".
    Source,
    /// "Sink properties".
    Sink,
    /// "Schema registry settings of the converters".
    Registry,
}

impl Section {
    /// Every section, in the guide's order.
    pub const ALL: [Section; 4] = [
        Section::Worker,
        Section::Source,
        Section::Sink,
        Section::Registry,
    ];

    /// The rows of this section.
    pub fn rows(self) -> &'static [Property] {
        match self {
            Section::Worker => WORKER,
            Section::Source => SOURCE,
            Section::Sink => SINK,
            Section::Registry => REGISTRY,
        }
    }

    /// The marker naming the section in the guide (`<!-- generated: worker -->`).
    pub fn marker(self) -> &'static str {
        match self {
            Section::Worker => "worker",
            Section::Source => "source",
            Section::Sink => "sink",
            Section::Registry => "registry",
        }
    }

    fn header(self) -> &'static str {
        match self {
            Section::Worker => "| property | our key | notes |\n|---|---|---|\n",
            Section::Source => {
                "| connector property | our key (`[[source]]`) | notes |\n|---|---|---|\n"
            }
            Section::Sink => "| connector property | our key (`[[sink]]`) | notes |\n|---|---|---|\n",
            Section::Registry => {
                "| converter property | our key (`schema_registry.`, per pipeline, or `[kafka.schema_registry]` for all) |\n|---|---|\n"
            }
        }
    }
}

impl Ours {
    /// The guide's "our key" cell.
    pub fn cell(&self) -> String {
        match self {
            Ours::Key(text) => (*text).to_owned(),
            Ours::None(Why::NotNeeded) => "none: not needed".to_owned(),
            Ours::None(Why::NotYet) => "none: not yet".to_owned(),
            Ours::None(Why::ReplacedBy(what)) => format!("none: replaced by {what}"),
        }
    }
}

impl Property {
    /// Whether `name` is one of this row's properties.
    pub fn matches(&self, name: &str) -> bool {
        self.names
            .iter()
            .any(|pattern| matches_pattern(pattern, name))
    }

    /// Why the property is not carried over, in plain text for a terminal: the reason and the
    /// notes, without Markdown. `None` when it is carried over.
    pub fn reason(&self) -> Option<String> {
        let Ours::None(why) = self.ours else {
            return None;
        };
        let why = match why {
            Why::NotNeeded => "not needed".to_owned(),
            Why::NotYet => "not supported yet".to_owned(),
            Why::ReplacedBy(what) => format!("replaced by {}", plain(what)),
        };
        Some(if self.notes.is_empty() {
            why
        } else {
            format!("{why} ({})", plain(self.notes))
        })
    }

    fn row(&self, section: Section) -> String {
        let mut names = self
            .names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if !self.qualifier.is_empty() {
            names = format!("{names} {}", self.qualifier);
        }
        match section {
            Section::Registry if self.notes.is_empty() => {
                format!("| {names} | {} |\n", self.ours.cell())
            }
            Section::Registry => format!("| {names} | {}; {} |\n", self.ours.cell(), self.notes),
            _ if self.notes.is_empty() => format!("| {names} | {} | |\n", self.ours.cell()),
            _ => format!("| {names} | {} | {} |\n", self.ours.cell(), self.notes),
        }
    }
}

impl Property {
    /// This row, listing nothing when the value is one of `values`.
    const fn unless(self, values: &'static [&'static str]) -> Self {
        Property {
            unchanged: values,
            ..self
        }
    }

    /// Whether `value` of this row's property loses nothing.
    pub fn is_unchanged(&self, value: &str) -> bool {
        self.unchanged
            .contains(&value.trim().to_ascii_lowercase().as_str())
    }
}

/// The row naming `name` in `section`, if any.
pub fn find(section: Section, name: &str) -> Option<&'static Property> {
    section.rows().iter().find(|row| row.matches(name))
}

/// The guide's table of `section`, header included.
pub fn render(section: Section) -> String {
    let mut out = section.header().to_owned();
    for row in section.rows() {
        out.push_str(&row.row(section));
    }
    out
}

/// Whether `name` matches `pattern`: `*` stands for any text of at least one character,
/// `<...>` for one or more dotted segments; the rest is literal.
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    let mut glob = String::new();
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        match rest.strip_prefix('<').and_then(|r| r.find('>')) {
            Some(end) => {
                glob.push('*');
                rest = &rest[end + 2..];
            }
            None => {
                glob.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    glob_match(glob.as_bytes(), name.as_bytes())
}

fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (1..=name.len()).any(|taken| glob_match(rest, &name[taken..])),
        Some((c, rest)) => name.first() == Some(c) && glob_match(rest, &name[1..]),
    }
}

/// Markdown made plain: backticks dropped, links reduced to their text.
pub fn plain(markdown: &str) -> String {
    let link = regex::Regex::new(r"\[([^\]]+)\]\([^)]+\)").ok();
    let text = match link {
        Some(link) => link.replace_all(markdown, "$1").into_owned(),
        None => markdown.to_owned(),
    };
    text.replace('`', "")
}

const fn key(text: &'static str) -> Ours {
    Ours::Key(text)
}

const NOT_NEEDED: Ours = Ours::None(Why::NotNeeded);
const NOT_YET: Ours = Ours::None(Why::NotYet);

const fn replaced_by(what: &'static str) -> Ours {
    Ours::None(Why::ReplacedBy(what))
}

const fn row(names: &'static [&'static str], ours: Ours, notes: &'static str) -> Property {
    Property {
        names,
        qualifier: "",
        ours,
        notes,
        unchanged: &[],
    }
}

const fn row_q(
    names: &'static [&'static str],
    qualifier: &'static str,
    ours: Ours,
    notes: &'static str,
) -> Property {
    Property {
        names,
        qualifier,
        ours,
        notes,
        unchanged: &[],
    }
}

/// Kafka Connect's own properties, in a connector configuration or the worker's.
pub static WORKER: &[Property] = &[
    row(&["name"], key("`name` of the `[[source]]` / `[[sink]]`"), "names checkpoints, groups and metrics; letters, digits, `-` and `_` (`import-connect` turns any other character into `-`)"),
    row(&["connector.class"], key("`[[source]]` or `[[sink]]`"), ""),
    row(&["tasks.max"], NOT_NEEDED, "a source runs one reader per watched namespace, a sink one writer per assigned partition; several daemons share a pipeline ([Scaling out](scaling-out.md#scaling-out))"),
    row_q(&["bootstrap.servers"], "(worker)", key("`kafka.bootstrap_servers`"), "one Kafka cluster per daemon; a connector's configuration does not hold it: `import-connect --bootstrap-servers`"),
    row_q(&["security.protocol", "sasl.*", "ssl.*"], "(worker)", key("`[kafka.properties]` (librdkafka names; PEM files or a PKCS#12 keystore, not JKS: `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`, `ssl.keystore.location`)"), "[Security: TLS and SASL](configuration.md#security-tls-and-sasl)"),
    row(&["consumer.override.group.id"], key("`group_id` (sink)"), "without it a sink connector's group is `connect-<name>`, which `import-connect` sets"),
    row(&["producer.override.*", "consumer.override.*", "admin.override.*"], key("`[kafka.producer]`, `[kafka.consumer]`, `[kafka.properties]`"), "librdkafka property names, for every pipeline of the daemon"),
    row(&["key.converter", "value.converter", "*.converter.schemas.enable", "*.converter.schema.registry.url"], key("formats and `schema_registry`"), "[Converters](#converters)"),
    row(&["header.converter"], NOT_NEEDED, "records are written without headers (but chunks and dead letters); a dead letter keeps the original headers as bytes"),
    row_q(&["transforms", "predicates"], "(single message transforms)", replaced_by("the sink's post-processing keys (`*_allow_fields`, `*_block_fields`, `field_renames`, `field_rename_regex`, `kafka_metadata_field`) and the source's `pipeline` stages"), "no general transform mechanism"),
    row(&["errors.tolerance"], key("`errors.tolerance` (`[source.errors]`, `[sink.errors]`)"), "`none` or `all`, as in Connect"),
    row(&["errors.deadletterqueue.topic.name"], key("`errors.dead_letter_topic`"), "sources too"),
    row(&["errors.deadletterqueue.context.headers.enable"], key("`errors.dead_letter_headers = \"connect\"` or `\"both\"`"), "our own `mkb.*` headers by default"),
    row(&["errors.deadletterqueue.topic.replication.factor"], NOT_NEEDED, "the dead letter topic is created by the broker's auto-creation or beforehand; a source with `create_topics` creates it with `topic_replication_factor` (or its group's in `topic_creation_groups`)"),
    row(&["errors.log.enable", "errors.log.include.messages"], NOT_NEEDED, "every error is logged, with the record's position and never its content"),
    row(&["errors.retry.timeout", "errors.retry.delay.max.ms"], replaced_by("fixed backoffs"), "sink: `max_num_retries` with backoff 200 ms doubling to 30 s ([Retries and restarts](configuration.md#retries-and-restarts))"),
    row_q(&["topic.creation.enable", "topic.creation.default.partitions", "topic.creation.default.replication.factor"], "(source)", key("`create_topics`, `topic_partitions`, `topic_replication_factor`"), "-1 is the broker's default, as in Connect; every scope's topics are created before their first record"),
    row_q(&["topic.creation.default.<property>"], "(source)", key("`topic_config`"), "`cleanup.policy`, `retention.ms`, `compression.type`, ..."),
    row_q(&["topic.creation.groups", "topic.creation.<group>.include", "topic.creation.<group>.exclude", "topic.creation.<group>.partitions", "topic.creation.<group>.replication.factor", "topic.creation.<group>.<property>"], "(source)", key("`[[source.topic_creation_groups]]` `name`, `include`, `exclude`, `partitions`, `replication_factor`, `config`"), "in the order listed; the first group matching a topic gives its settings; a group's topics take its `config` only, not `topic_config`, as in Connect"),
    row_q(&["exactly.once.support", "transaction.boundary", "transaction.boundary.interval.ms"], "(source, KIP-618)", key("`delivery = \"exactly-once\"`, `checkpoint_interval`"), "one transaction per slot every `checkpoint_interval`; `transaction.boundary = connector` has no counterpart"),
    row_q(&["offsets.storage.topic"], "(source)", key("`checkpoint_topic`"), "a compacted topic of resume tokens"),
    row(&["config.action.reload"], replaced_by("SIGHUP"), "[Reload](../README.md#reload)"),
];

/// `MongoSourceConfig`.
pub static SOURCE: &[Property] = &[
    row(&["connection.uri"], key("`mongodb.uri`"), "one MongoDB deployment per daemon; TLS, authentication and compression are options of the connection string, as for the connector"),
    row(&["database"], key("`database`"), ""),
    row(&["collection"], key("`collection`"), "a list is allowed too; `collection_regex` watches the collections matching a regex"),
    row(&["pipeline"], key("`pipeline`"), "the same JSON array; allowed stages are listed in the reference"),
    row(&["batch.size"], key("`batch_size`"), "the cursor batch size"),
    row(&["change.stream.full.document"], key("`full_document`"), "same values: `default`, `updateLookup`, `whenAvailable`, `required`"),
    row(&["change.stream.full.document.before.change"], key("`full_document_before_change`"), "`off` (the connector's `default` and `off`), `whenAvailable`, `required`"),
    row(&["change.stream.show.expanded.events"], key("`show_expanded_events`"), "MongoDB 6.0+"),
    row(&["change.stream.document.key.as.key"], key("`key`"), "`true` (default): `key = \"document_key\"`; `false`: `key = \"event_id\"`, the event's `_id` (resume token)"),
    row(&["collation"], key("`collation`"), "the same JSON object, for the change stream only, as the connector"),
    row(&["publish.full.document.only"], key("`publish_full_document_only`"), "turns on `updateLookup`, as the connector does"),
    row(&["publish.full.document.only.tombstone.on.delete"], key("`tombstone_on_delete`"), ""),
    row(&["poll.max.batch.size"], replaced_by("`queue_capacity` and `memory_budget`"), "readers hand events over in batches of up to 500 records; what may wait is bounded in events and in bytes"),
    row(&["poll.await.time.ms"], key("`max_await_time`"), "the change stream's `maxAwaitTimeMS`; default 1 s (the connector's 5 s)"),
    row(&["topic.prefix"], key("`topic_prefix`"), ""),
    row(&["topic.suffix"], key("`topic_suffix`"), ""),
    row(&["topic.separator"], key("`topic_separator`"), ""),
    row(&["topic.namespace.map"], key("`topic_namespace_map`"), "a TOML table with the connector's keys and rules: `db.coll`, `db` (topic, separator, collection), `/regex` matching the whole namespace, tried in the order written, with `{db}`, `{coll}`, `{sep}`, `{sep_coll}`, `{coll_sep}`, `{sep_coll_sep}`, and `*`; regexes in Rust's syntax (no look-around); our older `db.*` and `/regex/` keys keep their meaning, with a warning ([Topic names](configuration.md#topic-names))"),
    row(&["topic.mapper"], NOT_NEEDED, "custom class; `topic_namespace_map` covers `DefaultTopicMapper`"),
    row(&["output.format.key", "output.format.value"], key("`key_format`, `value_format` (or `format` for both)"), "`json` → one of the JSON formats (next row), `bson` → `bson`, `schema` → `avro` or `json_schema` with a `schema_registry` ([Output formats](configuration.md#output-formats))"),
    row(&["output.json.formatter"], key("`format` (or `key_format`, `value_format`)"), "byte for byte: `DefaultJson` (the connector's default) → `connector_default_json`; `ExtendedJson` → `connector_extended_json`; `SimplifiedJson` → `connector_simplified_json` (compared with the connector's records in `tests/connector_json.rs`). Our `canonical_json`, `relaxed_json` and `simplified_json` hold the same values in another spelling (no spaces, the Rust `bson` crate's numbers and dates) ([Output formats](configuration.md#output-formats))"),
    row(&["output.schema.key", "output.schema.value"], key("`key_schema`, `value_schema`"), "an Avro schema (or a JSON Schema with `json_schema`) as JSON text, registered as given"),
    row(&["output.schema.infer.value"], NOT_NEEDED, "schemas are always inferred unless `key_schema` / `value_schema` is given").unless(&["false"]),
    row(&["startup.mode"], key("`startup_mode`"), "`latest`, `timestamp`, `copy_existing`"),
    row(&["startup.mode.timestamp.start.at.operation.time"], key("`startup_timestamp`"), "RFC 3339, seconds since the epoch or a BSON timestamp"),
    row(&["startup.mode.copy.existing.pipeline", "copy.existing.pipeline"], key("`copy_existing_pipeline`"), ""),
    row(&["startup.mode.copy.existing.namespace.regex", "copy.existing.namespace.regex"], key("`copy_existing_namespace_regex`"), ""),
    row(&["startup.mode.copy.existing.max.threads", "copy.existing.max.threads"], key("`copy_existing_parallelism`"), "workers per collection, each an `_id` range; the copy resumes after a crash"),
    row(&["startup.mode.copy.existing.queue.size", "copy.existing.queue.size"], replaced_by("`queue_capacity` and `memory_budget`"), ""),
    row(&["startup.mode.copy.existing.allow.disk.use", "copy.existing.allow.disk.use"], key("`copy_existing_allow_disk_use`"), "on by default, as the connector's"),
    row(&["copy.existing"], key("`startup_mode = \"copy_existing\"`"), ""),
    row(&["errors.tolerance", "mongo.errors.tolerance"], key("`errors.tolerance`"), "one setting; the connector's override has no counterpart (`mongo.errors.tolerance` wins when both are given)"),
    row(&["errors.deadletterqueue.topic.name", "mongo.errors.deadletterqueue.topic.name"], key("`errors.dead_letter_topic`"), ""),
    row(&["errors.log.enable", "mongo.errors.log.enable"], NOT_NEEDED, "every error is logged"),
    row(&["heartbeat.interval.ms"], key("`heartbeat_interval`"), "a duration (`\"10s\"`); checkpoints of idle readers move without it"),
    row(&["heartbeat.topic.name"], key("`heartbeat_topic`"), "default `__mongodb_heartbeats`, as the connector's"),
    row(&["offset.partition.name"], replaced_by("`name`"), "checkpoints are keyed by pipeline and namespace in `checkpoint_topic`; a renamed pipeline starts afresh"),
    row(&["server.api.version"], key("`mongodb.server_api_version`"), ""),
    row(&["server.api.strict"], key("`mongodb.server_api_strict`"), ""),
    row(&["server.api.deprecation.errors"], key("`mongodb.server_api_deprecation_errors`"), ""),
    row(&["connection.ssl.truststore", "connection.ssl.truststorePassword"], key("`tlsCAFile` in `mongodb.uri`"), "a PEM file, not a JKS store"),
    row(&["connection.ssl.keystore", "connection.ssl.keystorePassword"], key("`tlsCertificateKeyFile`, `tlsCertificateKeyFilePassword` in `mongodb.uri`"), "PEM, not JKS; an encrypted key is not tested here"),
    row(&["mongo.custom.auth.mechanism.enable", "mongo.custom.auth.mechanism.providerClass"], NOT_NEEDED, "no custom credential classes; `authMechanism` in the URI (`MONGODB-AWS` with `--features aws-auth`), secrets from the environment or files"),
    row(&["provider"], NOT_NEEDED, "it names the platform running the connector in the driver's handshake; ours is `mongodb.app_name`"),
];

/// `MongoSinkConfig` and `MongoSinkTopicConfig`.
pub static SINK: &[Property] = &[
    row(&["connection.uri"], key("`mongodb.uri`"), "one MongoDB deployment per daemon"),
    row(&["topics"], key("`topics`"), "a TOML list"),
    row(&["topics.regex"], key("`topics_regex`"), ""),
    row(&["database"], key("`database`"), "`import-connect` takes the connection string's database when it is missing"),
    row(&["collection"], key("`collection`"), "defaults to the topic's name, as the connector's"),
    row(&["topic.override.<topic>.<property>"], key("`[sink.topic_overrides.\"<topic>\"]`"), "any per-topic key ([Per-topic overrides](configuration.md#per-topic-overrides))"),
    row(&["namespace.mapper"], key("`namespace_from`"), "`DefaultNamespaceMapper` → `\"config\"`; `FieldPathNamespaceMapper` → `\"key\"` or `\"value\"`"),
    row(&["namespace.mapper.key.database.field", "namespace.mapper.value.database.field"], key("`database_field` with `namespace_from = \"key\"` or `\"value\"`"), ""),
    row(&["namespace.mapper.key.collection.field", "namespace.mapper.value.collection.field"], key("`collection_field` with `namespace_from = \"key\"` or `\"value\"`"), ""),
    row(&["namespace.mapper.error.if.invalid"], key("`error_if_invalid`"), "ours defaults to `true` (a missing or invalid field is a `namespace` error), the connector's to `false` (the configured namespace); `import-connect` writes the connector's default with a field path mapper"),
    row(&["document.id.strategy"], key("`id_strategy`"), "`BsonOidStrategy` → `object_id`, `KafkaMetaDataStrategy` → `kafka_meta`, `FullKeyStrategy` → `full_key`, `PartialKeyStrategy` → `partial_key`, `PartialValueStrategy` → `partial_value`, `ProvidedInKeyStrategy` → `provided_in_key`, `ProvidedInValueStrategy` → `provided_in_value`, `UuidStrategy` → `uuid`, `UuidProvidedInKeyStrategy` → `uuid_provided_in_key`, `UuidProvidedInValueStrategy` → `uuid_provided_in_value` (every strategy the connector ships)"),
    row(&["document.id.strategy.overwrite.existing"], key("`id_overwrite_existing`"), ""),
    row(&["document.id.strategy.uuid.format"], key("`uuid_representation`"), "`string` or `binary`"),
    row(&["document.id.strategy.partial.key.projection.type", "document.id.strategy.partial.value.projection.type"], key("`id_fields_projection`"), "`AllowList` → `allow`, `BlockList` → `block`"),
    row(&["document.id.strategy.partial.key.projection.list", "document.id.strategy.partial.value.projection.list"], key("`id_fields`"), "a TOML list"),
    row(&["key.projection.type", "key.projection.list"], key("`key_allow_fields` or `key_block_fields`"), "the type is which key you set; read only when `post.processor.chain` holds the projector, as the connector does"),
    row(&["value.projection.type", "value.projection.list"], key("`value_allow_fields` or `value_block_fields`"), "`*` and `**` wildcards as the connector's"),
    row(&["field.renamer.mapping"], key("`field_renames`, `key_field_renames`"), "tables of dotted path → new name: `value.` paths in `field_renames`, `key.` paths in `key_field_renames`"),
    row(&["field.renamer.regexp"], key("`field_rename_regex`"), "a list of `{ regexp, pattern, replace }`, each rule as it is; single quotes, unquoted keys and unescaped `\\.` are read as the connector reads them"),
    row(&["post.processor.chain"], key("`post_processor_chain`"), "our step names in the order to run: `DocumentIdAdder` → `id`, `AllowListKeyProjector` → `allow_key`, `BlockListKeyProjector` → `block_key`, `AllowListValueProjector` → `allow_value`, `BlockListValueProjector` → `block_value`, `RenameByMapping` → `rename`, `RenameByRegExp` → `rename_regex`, `KafkaMetaAdder` → `kafka_metadata` (`kafka_metadata_field`), `NullFieldValueRemover` → `remove_nulls` (`remove_null_fields`); without it: id, projections, renames, Kafka metadata, null removal; custom post-processors: none"),
    row(&["field.value.transformer", "field.value.transformer.fields"], NOT_NEEDED, "a custom Java class"),
    row(&["writemodel.strategy"], key("`write_model`"), "`DefaultWriteModelStrategy` → the default `replace_one` (`insert_one` for time series); `ReplaceOneDefaultStrategy` → `replace_one`, `ReplaceOneBusinessKeyStrategy` → `replace_business_key`, `UpdateOneDefaultStrategy` → `update_one`, `UpdateOneTimestampsStrategy` → `update_one_timestamps`, `UpdateOneBusinessKeyTimestampStrategy` → `update_business_key_timestamps`, `InsertOneDefaultStrategy` → `insert_one`, `DeleteOneDefaultStrategy` → `delete_one`, `DeleteOneBusinessKeyStrategy` → `delete_business_key`. Business keys are `business_key_fields`, read from the value ([Write models](configuration.md#write-models)); `import-connect` takes them from the partial id strategy's allow list"),
    row(&["delete.on.null.values"], key("`delete_on_null_values`"), ""),
    row(&["delete.writemodel.strategy"], key("`delete_write_model`"), "`DeleteOneDefaultStrategy` → `delete_one`, `DeleteOneTombstoneBusinessKeyStrategy` → `delete_tombstone_business_key`"),
    row(&["max.batch.size"], key("`max_batch_size`"), "default 500 (the connector's 0: whatever Kafka Connect hands over at once); `max_batch_delay` bounds how long a batch waits"),
    row(&["bulk.write.ordered"], NOT_NEEDED, "a command is unordered when every statement names a different `_id`, ordered otherwise, so changes of one document apply in order ([The path of a record](configuration.md#the-path-of-a-record))"),
    row(&["rate.limiting.every.n"], key("`rate_limiting_every_n`"), ""),
    row(&["rate.limiting.timeout"], key("`rate_limiting_timeout`"), "a duration"),
    row(&["change.data.capture.handler"], key("`cdc_handler`"), "`...cdc.mongodb.ChangeStreamHandler` → `mongodb`; Debezium's `MongoDbHandler` and `ChangeStreamHandler` → `debezium_mongodb`; Debezium's `RdbmsHandler`, `MysqlHandler`, `PostgresHandler` → `debezium_rdbms`; the Qlik Replicate `...cdc.qlik.rdbms.RdbmsHandler` → `qlik_rdbms`"),
    row(&["change.data.capture.handler.remove.null.values"], key("`cdc_remove_null_values`"), "with a `cdc_handler`"),
    row(&["errors.tolerance", "mongo.errors.tolerance"], key("`errors.tolerance`"), "one setting"),
    row(&["errors.deadletterqueue.topic.name"], key("`errors.dead_letter_topic`"), ""),
    row(&["errors.log.enable", "mongo.errors.log.enable"], NOT_NEEDED, "every error is logged"),
    row(&["timeseries.timefield"], key("`timeseries_time_field`"), ""),
    row(&["timeseries.timefield.auto.convert"], key("`timeseries_time_field_auto_convert`"), ""),
    row(&["timeseries.timefield.auto.convert.date.format"], key("`timeseries_time_field_format`"), "the `time` crate's format description, not a Java `DateTimeFormatter` pattern; `import-connect` translates the pattern's common letters"),
    row(&["timeseries.timefield.auto.convert.locale.language.tag"], NOT_NEEDED, "formats are not locale-dependent"),
    row(&["timeseries.metafield"], key("`timeseries_meta_field`"), ""),
    row(&["timeseries.expire.after.seconds"], key("`timeseries_expire_after`"), "a duration"),
    row(&["timeseries.granularity"], key("`timeseries_granularity`"), ""),
    row(&["csfle.enabled", "csfle.key.vault.namespace", "csfle.local.master.key", "csfle.schema.map", "csfle.bypass.query.analysis"], NOT_YET, "client-side field level encryption is not supported").unless(&["false"]),
    row(&["server.api.version", "server.api.strict", "server.api.deprecation.errors"], key("`mongodb.server_api_version`, `mongodb.server_api_strict`, `mongodb.server_api_deprecation_errors`"), ""),
    row(&["connection.ssl.*", "mongo.custom.auth.mechanism.*"], key("as for sources"), ""),
    row(&["provider"], NOT_NEEDED, "as for sources"),
    row_q(&["max.num.retries", "retries.defer.timeout"], "(dropped by the connector in 1.7, which leaves retries to the Java driver)", key("`max_num_retries`; the backoff is fixed"), "retries of a bulk write that may pass, 200 ms doubling to 30 s"),
];

/// The schema registry settings of Confluent's converters.
pub static REGISTRY: &[Property] = &[
    row(
        &["*.converter.schema.registry.url"],
        key("`url` (one registry per pipeline; per topic in a sink's `topic_overrides`)"),
        "",
    ),
    row(
        &[
            "*.converter.basic.auth.credentials.source",
            "*.converter.basic.auth.user.info",
        ],
        key("`username`, `password`"),
        "",
    ),
    row(
        &["*.converter.schema.registry.ssl.truststore.location"],
        key("`ca_file` (PEM)"),
        "",
    ),
    row(
        &["*.converter.schema.registry.ssl.keystore.location"],
        key("`cert_file`, `key_file` (PEM)"),
        "",
    ),
    row(
        &["*.converter.proxy.host", "*.converter.proxy.port"],
        key("`proxy`"),
        "",
    ),
    row(
        &[
            "*.converter.key.subject.name.strategy",
            "*.converter.value.subject.name.strategy",
        ],
        key("a source's `key_subject_name_strategy`, `value_subject_name_strategy`"),
        "`TopicNameStrategy` → `topic_name`, `RecordNameStrategy` → `record_name`, `TopicRecordNameStrategy` → `topic_record_name`; a sink reads each record by its schema id and needs none",
    ),
    row(
        &[
            "*.converter.auto.register.schemas",
            "*.converter.use.latest.version",
        ],
        NOT_NEEDED,
        "a source registers each new schema once, a sink reads the schema by the id in each record",
    ),
    row_q(
        &["*.converter.schemas.enable"],
        "(`JsonConverter`)",
        key("`connect_json` (`true`) or `json` (`false`)"),
        "",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names() {
        assert!(matches_pattern(
            "*.converter.schema.registry.url",
            "value.converter.schema.registry.url"
        ));
        assert!(!matches_pattern(
            "*.converter.schema.registry.url",
            ".converter.schema.registry.url"
        ));
        assert!(matches_pattern(
            "topic.override.<topic>.<property>",
            "topic.override.a.b.collection"
        ));
        assert!(!matches_pattern(
            "topic.override.<topic>.<property>",
            "topic.override.a"
        ));
        assert!(matches_pattern("collection", "collection"));
        assert!(!matches_pattern("collection", "collections"));
    }

    #[test]
    fn reasons_are_plain_text() {
        let row = find(Section::Worker, "tasks.max").expect("a row");
        let reason = row.reason().expect("not carried over");
        assert!(reason.starts_with("not needed (a source runs"), "{reason}");
        assert!(reason.contains("(Scaling out)"), "{reason}");
        assert!(!reason.contains('`') && !reason.contains("]("), "{reason}");
        assert_eq!(
            find(Section::Source, "database").and_then(Property::reason),
            None
        );
    }
}
