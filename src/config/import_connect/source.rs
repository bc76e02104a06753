//! A `MongoSourceConnector`'s properties made into a `[[source]]` table.

use super::converters::{ConverterClass, Converters};
use super::findings::{Out, Props};

/// The `[[source]]` table of the connector's properties; what it takes it removes from `props`.
pub(super) fn translate(
    props: &mut Props,
    name: &str,
    converters: &Converters,
    out: &mut Out,
) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("name".into(), name.into());
    let database = props.take("database");
    if let Some(db) = &database {
        t.insert("database".into(), db.clone().into());
    }
    if let Some(collection) = props.take("collection") {
        if database.is_some() {
            t.insert("collection".into(), collection.into());
        } else {
            out.drop(
                "collection",
                "the connector ignores it without `database` (it watches the whole deployment)",
            );
        }
    }
    if let Some(pipeline) = props.take("pipeline").filter(|p| !is_empty_array(p)) {
        t.insert("pipeline".into(), pipeline.into());
    }
    let batch = props.take("batch.size");
    if let Some(n) = out.integer("batch.size", batch).filter(|n| *n > 0) {
        t.insert("batch_size".into(), n.into());
    }
    change_stream(props, &mut t, out);
    topics(props, &mut t, out);
    formats(props, &mut t, converters, out);
    startup(props, &mut t, out);
    out.note("the connector's resume tokens (in Kafka Connect's offsets topic) are not read: to take over from a running connector, stop it and start this pipeline with `startup_mode = \"timestamp\"` and a `startup_timestamp` a little before it stopped (docs/migrating-from-the-connector.md, \"Moving a running connector over\")");
    errors(props, &mut t, name, out);
    let heartbeat = props.take("heartbeat.interval.ms");
    if let Some(ms) = out
        .integer("heartbeat.interval.ms", heartbeat)
        .filter(|n| *n > 0)
    {
        t.insert("heartbeat_interval".into(), format!("{ms}ms").into());
    }
    if let Some(topic) = props.take("heartbeat.topic.name") {
        if topic != "__mongodb_heartbeats" {
            t.insert("heartbeat_topic".into(), topic.into());
        }
    }
    if let Some(topic) = props.take("offsets.storage.topic") {
        t.insert("checkpoint_topic".into(), topic.into());
        out.note("`checkpoint_topic` holds our checkpoints, not Kafka Connect's offsets: the connector's resume tokens are not read (docs/migrating-from-the-connector.md, \"Moving a running connector over\")");
    }
    exactly_once(props, &mut t, out);
    t
}

fn is_empty_array(text: &str) -> bool {
    text.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        == "[]"
}

fn change_stream(props: &mut Props, t: &mut toml::Table, out: &mut Out) {
    if let Some(value) = props.take("change.stream.full.document") {
        match value.to_ascii_lowercase().as_str() {
            "default" => {}
            "updatelookup" => {
                t.insert("full_document".into(), "updateLookup".into());
            }
            "whenavailable" => {
                t.insert("full_document".into(), "whenAvailable".into());
            }
            "required" => {
                t.insert("full_document".into(), "required".into());
            }
            _ => out.drop(
                "change.stream.full.document",
                format!(
                    "`{value}` is not `default`, `updateLookup`, `whenAvailable` or `required`"
                ),
            ),
        }
    }
    if let Some(value) = props.take("change.stream.full.document.before.change") {
        match value.to_ascii_lowercase().as_str() {
            "default" | "off" => {}
            "whenavailable" => {
                t.insert("full_document_before_change".into(), "whenAvailable".into());
            }
            "required" => {
                t.insert("full_document_before_change".into(), "required".into());
            }
            _ => out.drop(
                "change.stream.full.document.before.change",
                format!("`{value}` is not `default`, `off`, `whenAvailable` or `required`"),
            ),
        }
    }
    let expanded = props.take("change.stream.show.expanded.events");
    if let Some(true) = out.boolean("change.stream.show.expanded.events", expanded) {
        t.insert("show_expanded_events".into(), true.into());
    }
    if let Some(collation) = props.take("collation") {
        match crate::config::parse_collation(&collation) {
            Ok(_) => {
                t.insert("collation".into(), collation.into());
            }
            Err(e) => out.drop(
                "collation",
                format!("`{collation}` is not a collation ({e}); the connector refuses it"),
            ),
        }
    }
    let key = props.take("change.stream.document.key.as.key");
    if let Some(false) = out.boolean("change.stream.document.key.as.key", key) {
        t.insert("key".into(), "event_id".into());
    }
    let only = props.take("publish.full.document.only");
    let only = out.boolean("publish.full.document.only", only) == Some(true);
    if only {
        t.insert("publish_full_document_only".into(), true.into());
    }
    let property = "publish.full.document.only.tombstone.on.delete";
    let tombstone = props.take(property);
    if let Some(true) = out.boolean(property, tombstone) {
        if only {
            t.insert("tombstone_on_delete".into(), true.into());
        } else {
            out.drop(property, "read only with `publish.full.document.only=true`");
        }
    }
    let wait = props.take("poll.await.time.ms");
    if let Some(ms) = out.integer("poll.await.time.ms", wait).filter(|n| *n > 0) {
        t.insert("max_await_time".into(), format!("{ms}ms").into());
        // A reader is restarted when its stream did not move for `stall_timeout` (5 minutes),
        // which must outlast one wait.
        if ms >= 300_000 {
            t.insert("stall_timeout".into(), format!("{}ms", ms * 2).into());
        }
    }
}

fn topics(props: &mut Props, t: &mut toml::Table, out: &mut Out) {
    for (property, key) in [
        ("topic.prefix", "topic_prefix"),
        ("topic.suffix", "topic_suffix"),
    ] {
        if let Some(value) = props.take(property) {
            t.insert(key.into(), value.into());
        }
    }
    if let Some(separator) = props.take("topic.separator") {
        if separator != "." {
            t.insert("topic_separator".into(), separator.into());
        }
    }
    if let Some(map) = props.take("topic.namespace.map") {
        match namespace_map(&map, out) {
            Ok(table) if table.is_empty() => {}
            Ok(table) => {
                t.insert("topic_namespace_map".into(), table.into());
            }
            Err(reason) => out.drop("topic.namespace.map", reason),
        }
    }
    topic_creation(props, t, out);
}

/// Kafka Connect's `topic.creation.*` (KIP-158): `topic.creation.default.partitions` and
/// `.replication.factor` (-1 is the broker's default, as ours), its other settings as
/// `topic_config`, and each group `topic.creation.groups` lists, in its order, as a
/// `topic_creation_groups` entry. A group it does not list is no group, as in Connect: its
/// properties are left over. `topic.creation.enable = false` (the worker's) creates nothing.
fn topic_creation(props: &mut Props, t: &mut toml::Table, out: &mut Out) {
    const PREFIX: &str = "topic.creation.";
    let enabled = props.take("topic.creation.enable");
    if let Some(false) = out.boolean("topic.creation.enable", enabled.clone()) {
        let groups = props.take("topic.creation.groups");
        let mut names: Vec<String> = groups
            .into_iter()
            .map(|_| "topic.creation.groups".to_owned())
            .collect();
        names.extend(
            props
                .take_prefixed(PREFIX)
                .into_iter()
                .map(|(rest, _)| format!("{PREFIX}{rest}")),
        );
        for name in names {
            out.drop(name, "`topic.creation.enable = false`: Kafka Connect creates no topics (our `create_topics` is off)");
        }
        return;
    }
    let mut creating = false;
    for (property, key) in [
        ("topic.creation.default.partitions", "topic_partitions"),
        (
            "topic.creation.default.replication.factor",
            "topic_replication_factor",
        ),
    ] {
        if let Some(n) = number(property, out, props) {
            if n != 1 {
                t.insert(key.into(), n.into());
            }
            creating = true;
        }
    }
    let group_names: Vec<String> = props
        .take("topic.creation.groups")
        .map(|list| split_list(&list))
        .unwrap_or_default();
    let mut groups = Vec::new();
    for name in &group_names {
        let at = |rest: &str| format!("{PREFIX}{name}.{rest}");
        let mut group = toml::Table::new();
        group.insert("name".into(), name.clone().into());
        for field in ["include", "exclude"] {
            let list = props
                .take(&at(field))
                .map(|l| split_list(&l))
                .unwrap_or_default();
            if field == "include" || !list.is_empty() {
                group.insert(field.into(), list.into());
            }
        }
        for (property, key) in [
            ("partitions", "partitions"),
            ("replication.factor", "replication_factor"),
        ] {
            if let Some(n) = number(&at(property), out, props) {
                group.insert(key.into(), n.into());
            }
        }
        let config: toml::Table = props
            .take_prefixed(&at(""))
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        if !config.is_empty() {
            group.insert("config".into(), config.into());
        }
        if group
            .get("include")
            .and_then(toml::Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            out.note(format!("topic creation group `{name}` lists no `include`: it takes no topic, as in Kafka Connect, and is left out"));
            continue;
        }
        groups.push(toml::Value::Table(group));
    }
    // After the groups: a group named `default` would otherwise lose its properties here.
    let config: toml::Table = props
        .take_prefixed("topic.creation.default.")
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    creating |= !config.is_empty() || !groups.is_empty() || enabled_explicitly(enabled.as_deref());
    if !config.is_empty() {
        t.insert("topic_config".into(), config.into());
    }
    if !groups.is_empty() {
        t.insert("topic_creation_groups".into(), groups.into());
    }
    if creating {
        t.insert("create_topics".into(), true.into());
    }
    for (rest, _) in props.take_prefixed(PREFIX) {
        out.drop(
            format!("{PREFIX}{rest}"),
            "not a setting of a group `topic.creation.groups` lists: Kafka Connect ignores it",
        );
    }
}

fn enabled_explicitly(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// A partition count or replication factor: -1 (the broker's default) or positive.
fn number(property: &str, out: &mut Out, props: &mut Props) -> Option<i32> {
    let value = props.take(property);
    out.integer(property, value)
        .and_then(|n| match i32::try_from(n) {
            Ok(n) if n == -1 || n >= 1 => Some(n),
            _ => {
                out.drop(property, format!("`{n}` is not -1 nor a positive count"));
                None
            }
        })
}

/// A Kafka Connect list: comma-separated, each item trimmed, empty ones left out.
fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The connector's `topic.namespace.map` (JSON) as our `topic_namespace_map`: our map reads
/// the connector's keys and topic templates as it does, so they are carried as written, in
/// the order written (serde_json's `preserve_order` keeps an object's order; regex keys are
/// tried in that order). Two spellings the connector reads otherwise than ours are rewritten.
fn namespace_map(json: &str, out: &mut Out) -> Result<toml::Table, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not a JSON object: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("not a JSON object".to_owned());
    };
    let mut table = toml::Table::new();
    for (key, topic) in map {
        let serde_json::Value::String(topic) = topic else {
            return Err(format!("the topic of `{key}` is not a string"));
        };
        if topic.is_empty() {
            // The connector leaves such a key out; so would ours.
            continue;
        }
        let key = match namespace_map_key(&key) {
            Some(ours) => {
                out.note(format!(
                    "`topic.namespace.map` key `{key}` became `{ours}`: written as the connector's, it would be read as this daemon's earlier form (docs/configuration.md, \"Topic names\")"
                ));
                ours
            }
            None => key,
        };
        table.insert(key, topic.into());
    }
    Ok(table)
}

/// Our key for a connector key our map reads otherwise, if any: `/pattern/` is, to the
/// connector, the regex `pattern/` matching the whole namespace (ours: `pattern` anywhere);
/// `db.*` is the collection `*` of `db` (ours: every collection of `db`).
fn namespace_map_key(key: &str) -> Option<String> {
    if let Some(pattern) = key.strip_prefix('/').filter(|p| p.ends_with('/')) {
        // Anchored at both ends, our earlier form means what the connector reads.
        return Some(format!("/^(?:{pattern})$/"));
    }
    let database = key.strip_suffix(".*");
    if database.is_some_and(|db| !db.is_empty() && !db.contains(['.', '/'])) {
        return Some(format!("/{}", regex::escape(key)));
    }
    None
}

/// `<side>.converter.<side>.subject.name.strategy`: ours when the side is written through a
/// registry.
fn subject_name_strategy(
    side: &str,
    converter: &super::converters::Converter,
    ours: Option<&str>,
    t: &mut toml::Table,
    out: &mut Out,
) {
    let property = format!("{side}.converter.{side}.subject.name.strategy");
    if converter.subject_name_strategy.is_none() {
        return;
    }
    if !matches!(ours, Some("avro" | "json_schema" | "protobuf")) {
        out.drop(
            property,
            "read only with `output.format.*=schema` through a registry converter",
        );
        return;
    }
    match converter.subject_name_strategy() {
        Ok(Some(strategy)) => {
            t.insert(format!("{side}_subject_name_strategy"), strategy.into());
        }
        Ok(None) => {}
        Err(class) => out.drop(
            property,
            format!("`{class}` is not one of Confluent's `TopicNameStrategy`, `RecordNameStrategy`, `TopicRecordNameStrategy`: subjects are `<topic>-{side}`"),
        ),
    }
}

/// `output.format.*`, `output.json.formatter`, `output.schema.*` and the converters.
fn formats(props: &mut Props, t: &mut toml::Table, converters: &Converters, out: &mut Out) {
    // Each of the connector's formatters has a twin writing the same bytes.
    let json_format = match props.take("output.json.formatter") {
        None => "connector_default_json",
        Some(class) => match class.rsplit('.').next().unwrap_or(&class) {
            "DefaultJson" => "connector_default_json",
            "ExtendedJson" => "connector_extended_json",
            "SimplifiedJson" => "connector_simplified_json",
            _ => {
                out.drop(
                    "output.json.formatter",
                    format!("`{class}` is a custom formatter; `connector_default_json` (the connector's default) is written"),
                );
                "connector_default_json"
            }
        },
    };
    let mut chosen = Vec::new();
    for (side, converter) in [("key", &converters.key), ("value", &converters.value)] {
        let property = format!("output.format.{side}");
        let given = props.take(&property).map(|v| v.to_ascii_lowercase());
        let format = given.as_deref().unwrap_or("json");
        let class = converter.class();
        let converter_property = format!("{side}.converter");
        if class.is_none() && format != "schema" {
            out.note(format!(
                "`{converter_property}` is not in the connector's configuration: the worker's converter applies, which this tool cannot see (with `StringConverter` records match ours; with `JsonConverter` they were JSON strings)"
            ));
        }
        let ours = match (format, class) {
            ("json", None | Some(ConverterClass::String)) => Some(json_format),
            ("json", Some(ConverterClass::Json)) => {
                out.drop(
                    &converter_property,
                    "`JsonConverter` with `output.format.*=json` wraps the connector's JSON text in a JSON string (in a `schema`/`payload` envelope unless `schemas.enable=false`); we write the JSON text itself, as `StringConverter` does",
                );
                Some(json_format)
            }
            ("bson", None | Some(ConverterClass::ByteArray)) => Some("bson"),
            ("schema", Some(ConverterClass::Avro)) => Some("avro"),
            ("schema", Some(ConverterClass::JsonSchema)) => Some("json_schema"),
            ("schema", Some(ConverterClass::Json)) if converter.json_with_schemas() => {
                out.drop(
                    &property,
                    "`schema` through `JsonConverter` (the Connect JSON envelope) is not supported yet by sources; relaxed JSON is written",
                );
                None
            }
            ("schema", Some(ConverterClass::Protobuf)) => Some("protobuf"),
            ("schema", None) => {
                out.drop(&property, "`schema` through the worker's converter, which the connector's configuration does not name: give `key.converter`/`value.converter` (`AvroConverter`, `JsonSchemaConverter` or `ProtobufConverter`)");
                None
            }
            ("json" | "bson" | "schema", _) => {
                out.drop(
                    &converter_property,
                    format!(
                        "`{}` cannot carry `output.format.{side}={format}` as the daemon writes it",
                        converter.class_name()
                    ),
                );
                match format {
                    "bson" => Some("bson"),
                    _ => Some(json_format),
                }
            }
            _ => {
                out.drop(
                    &property,
                    format!("`{format}` is not `json`, `bson` or `schema`"),
                );
                None
            }
        };
        subject_name_strategy(side, converter, ours, t, out);
        chosen.push(ours.unwrap_or("relaxed_json"));
        let schema_property = format!("output.schema.{side}");
        if let Some(schema) = props.take(&schema_property) {
            if matches!(ours, Some("avro" | "json_schema")) {
                t.insert(format!("{side}_schema"), schema.into());
            } else if ours == Some("protobuf") {
                out.drop(
                    schema_property,
                    format!("an Avro schema, which the connector turns into a Connect schema for `ProtobufConverter`; our `{side}_schema` with `protobuf` is `.proto` text: give one, or leave it out to infer the schema from each document"),
                );
            } else {
                out.drop(
                    schema_property,
                    format!("read only with `output.format.{side}=schema` through `AvroConverter`, `JsonSchemaConverter` or `ProtobufConverter`"),
                );
            }
        }
    }
    let (key, value) = (chosen[0], chosen[1]);
    if key == value {
        if key != "relaxed_json" {
            t.insert("format".into(), key.into());
        }
    } else {
        t.insert("key_format".into(), key.into());
        t.insert("value_format".into(), value.into());
    }
    if let Some(registry) = &converters.registry {
        if [key, value]
            .iter()
            .any(|f| matches!(*f, "avro" | "json_schema" | "protobuf"))
        {
            t.insert("schema_registry".into(), registry.clone().into());
        } else {
            converters.registry_unused(out);
        }
    }
}

fn startup(props: &mut Props, t: &mut toml::Table, out: &mut Out) {
    let legacy = props.take("copy.existing");
    let legacy = out.boolean("copy.existing", legacy) == Some(true);
    let mode = props.take("startup.mode").map(|m| m.to_ascii_lowercase());
    let time_property = "startup.mode.timestamp.start.at.operation.time";
    let time = props.take(time_property);
    let copying = match mode.as_deref() {
        None => legacy,
        Some(mode) => {
            if legacy && mode != "copy_existing" {
                out.drop(
                    "copy.existing",
                    format!("`startup.mode={mode}` wins over it"),
                );
            }
            match mode {
                "latest" => false,
                "copy_existing" => true,
                "timestamp" => {
                    match &time {
                        Some(time) => {
                            t.insert("startup_mode".into(), "timestamp".into());
                            t.insert("startup_timestamp".into(), time.clone().into());
                        }
                        None => out.note("`startup.mode=timestamp` without a time starts at the newest change, as the connector's (`latest`)"),
                    }
                    false
                }
                other => {
                    out.drop(
                        "startup.mode",
                        format!("`{other}` is not `latest`, `timestamp` or `copy_existing`"),
                    );
                    false
                }
            }
        }
    };
    if time.is_some() && mode.as_deref() != Some("timestamp") {
        out.drop(time_property, "read only with `startup.mode=timestamp`");
    }
    if copying {
        t.insert("startup_mode".into(), "copy_existing".into());
    }
    for (suffix, key) in [
        ("allow.disk.use", "copy_existing_allow_disk_use"),
        ("pipeline", "copy_existing_pipeline"),
        ("namespace.regex", "copy_existing_namespace_regex"),
        ("max.threads", "copy_existing_parallelism"),
    ] {
        let new = format!("startup.mode.copy.existing.{suffix}");
        let old = format!("copy.existing.{suffix}");
        let (property, value) = match (props.take(&new), props.take(&old)) {
            (Some(value), Some(_)) => {
                out.drop(&old, format!("`{new}` wins over it"));
                (new, value)
            }
            (Some(value), None) => (new, value),
            (None, Some(value)) => (old, value),
            (None, None) => continue,
        };
        if key == "copy_existing_allow_disk_use" {
            // On by default, as the connector's: only `false` says something.
            match out.boolean(&property, Some(value)) {
                Some(false) if copying => {
                    t.insert(key.into(), false.into());
                }
                Some(false) => {
                    out.drop(property, "read only with `startup.mode=copy_existing`");
                }
                _ => {}
            }
            continue;
        }
        if !copying {
            out.drop(property, "read only with `startup.mode=copy_existing`");
            continue;
        }
        if key == "copy_existing_parallelism" {
            if let Some(n) = out.integer(&property, Some(value)) {
                let clamped = n.clamp(1, crate::config::MAX_COPY_PARALLELISM as i64);
                if clamped != n {
                    out.note(format!(
                        "`{property}={n}` became `copy_existing_parallelism = {clamped}` (1 to 64)"
                    ));
                }
                if clamped > 1 {
                    t.insert(key.into(), clamped.into());
                }
            }
        } else if !(key == "copy_existing_pipeline" && is_empty_array(&value)) {
            t.insert(key.into(), value.into());
        }
    }
}

fn errors(props: &mut Props, t: &mut toml::Table, name: &str, out: &mut Out) {
    let mut errors = toml::Table::new();
    let pick = |props: &mut Props, out: &mut Out, own: &str, plain: &str| match (
        props.take(own),
        props.take(plain),
    ) {
        (Some(value), Some(_)) => {
            out.drop(plain, format!("`{own}` wins over it"));
            Some((own.to_owned(), value))
        }
        (Some(value), None) => Some((own.to_owned(), value)),
        (None, Some(value)) => Some((plain.to_owned(), value)),
        (None, None) => None,
    };
    let tolerance = pick(props, out, "mongo.errors.tolerance", "errors.tolerance");
    let dead_letters = pick(
        props,
        out,
        "mongo.errors.deadletterqueue.topic.name",
        "errors.deadletterqueue.topic.name",
    );
    let all = match tolerance {
        Some((property, value)) => match value.to_ascii_lowercase().as_str() {
            "none" => false,
            "all" => true,
            _ => {
                out.drop(property, format!("`{value}` is not `none` or `all`"));
                false
            }
        },
        None => false,
    };
    let topic = dead_letters.map(|(_, topic)| topic);
    dead_letter_settings(props, &mut errors, all, topic, name, out);
    if !errors.is_empty() {
        t.insert("errors".into(), errors.into());
    }
}

/// `errors.tolerance`, the dead letter topic and its headers, shared with sinks.
pub(super) fn dead_letter_settings(
    props: &mut Props,
    errors: &mut toml::Table,
    all: bool,
    topic: Option<String>,
    name: &str,
    out: &mut Out,
) {
    if all {
        errors.insert("tolerance".into(), "all".into());
    }
    let topic = match (all, topic) {
        (true, None) => {
            let topic = format!("{name}-dead-letters");
            out.note(format!(
                "`errors.tolerance=all` without a dead letter queue drops bad records silently in the connector; the daemon never drops silently, so they go to `errors.dead_letter_topic = \"{topic}\"`"
            ));
            Some(topic)
        }
        (_, topic) => topic,
    };
    if let Some(topic) = topic {
        errors.insert("dead_letter_topic".into(), topic.into());
    }
    let property = "errors.deadletterqueue.context.headers.enable";
    let headers = props.take(property);
    if let Some(true) = out.boolean(property, headers) {
        if errors.contains_key("dead_letter_topic") {
            errors.insert("dead_letter_headers".into(), "connect".into());
        } else {
            out.drop(property, "read only with a dead letter topic");
        }
    }
}

fn exactly_once(props: &mut Props, t: &mut toml::Table, out: &mut Out) {
    if let Some(support) = props.take("exactly.once.support") {
        match support.to_ascii_lowercase().as_str() {
            "required" | "requested" => {
                t.insert("delivery".into(), "exactly-once".into());
            }
            _ => out.drop(
                "exactly.once.support",
                format!("`{support}` is not `required` or `requested`"),
            ),
        }
    }
    let interval = props.take("transaction.boundary.interval.ms");
    match props
        .take("transaction.boundary")
        .map(|b| b.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("poll") => {
            if interval.is_some() {
                out.drop(
                    "transaction.boundary.interval.ms",
                    "read only with `transaction.boundary=interval`",
                );
            }
        }
        Some("interval") => {
            if let Some(ms) = out
                .integer("transaction.boundary.interval.ms", interval)
                .filter(|n| *n > 0)
            {
                t.insert("checkpoint_interval".into(), format!("{ms}ms").into());
            }
        }
        Some(other) => out.drop(
            "transaction.boundary",
            format!("`{other}`: transactions are committed every `checkpoint_interval` per slot"),
        ),
    }
}
