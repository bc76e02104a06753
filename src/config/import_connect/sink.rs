//! A `MongoSinkConnector`'s properties made into a `[[sink]]` table.

use std::collections::BTreeMap;

use super::converters::{ConverterClass, Converters};
use super::error::ImportError;
use super::findings::{Out, Props};
use super::source::dead_letter_settings;
use super::table::{self, Section};

/// What the sink's translation needs besides the properties.
pub(super) struct Context<'a> {
    /// The pipeline's name.
    pub name: &'a str,
    /// The connector's name, as Kafka Connect's consumer group has it.
    pub connector_name: &'a str,
    /// `mongodb.uri`, whose database stands in for a missing `database`.
    pub uri: &'a str,
    /// `consumer.override.group.id`.
    pub group_override: Option<String>,
    /// The converters.
    pub converters: &'a Converters,
}

/// The `[[sink]]` table of the connector's properties; what it takes it removes from `props`.
pub(super) fn translate(
    props: &mut Props,
    ctx: &Context<'_>,
    out: &mut Out,
) -> Result<toml::Table, ImportError> {
    let mut t = toml::Table::new();
    t.insert("name".into(), ctx.name.into());
    let topics = props.take("topics").map(|t| list(&t)).unwrap_or_default();
    let regex = props.take("topics.regex");
    if topics.is_empty() && regex.is_none() {
        return Err(ImportError::Required {
            property: "topics",
            reason: "a sink connector reads `topics` or `topics.regex`, and this one names neither"
                .to_owned(),
        });
    }
    if !topics.is_empty() {
        t.insert("topics".into(), strings(&topics));
    }
    if let Some(regex) = regex {
        t.insert("topics_regex".into(), regex.into());
    }
    let group = ctx.group_override.clone().unwrap_or_else(|| {
        let group = format!("connect-{}", ctx.connector_name);
        out.note(format!(
            "`group_id = \"{group}\"` is the connector's consumer group: stop the connector before starting the pipeline, which goes on from its committed offsets"
        ));
        group
    });
    t.insert("group_id".into(), group.into());
    let raw_overrides = props.take_prefixed("topic.override.");
    let mut base = topic_settings(props, "", out);
    if !base.contains_key("database") {
        let database = url::Url::parse(ctx.uri)
            .ok()
            .map(|u| u.path().trim_start_matches('/').to_owned())
            .filter(|d| !d.is_empty());
        match database {
            Some(database) => {
                out.note(format!(
                    "`database` is not given: the connection string's `{database}` is written"
                ));
                base.insert("database".into(), database.into());
            }
            None => {
                return Err(ImportError::Required {
                    property: "database",
                    reason: "a sink pipeline writes to one database, and neither `database` nor the connection string names one".to_owned(),
                })
            }
        }
    }
    let mut overrides = toml::Table::new();
    for (topic, mut topic_props) in by_topic(raw_overrides, &topics, out) {
        let prefix = format!("topic.override.{topic}.");
        let settings = topic_settings(&mut topic_props, &prefix, out);
        for (property, _) in topic_props.rest() {
            let shown = format!("{prefix}{property}");
            if property.starts_with("errors.") || property.starts_with("mongo.errors.") {
                out.drop(shown, "error handling is set for the whole pipeline");
            } else if table::find(Section::Sink, &property).is_some() {
                out.drop_as_table(Section::Sink, &property, &shown);
            } else {
                out.drop(shown, super::UNKNOWN);
            }
        }
        if !settings.is_empty() {
            overrides.insert(topic, settings.into());
        }
    }
    let key_read = key_is_read(&base)
        || overrides
            .values()
            .any(|o| o.as_table().is_some_and(key_is_read));
    formats(&mut t, ctx.converters, key_read, out);
    t.extend(base);
    let retries = props.take("max.num.retries");
    if let Some(n) = out.integer("max.num.retries", retries).filter(|n| *n >= 0) {
        t.insert("max_num_retries".into(), n.into());
    }
    if props.take("retries.defer.timeout").is_some() {
        out.drop(
            "retries.defer.timeout",
            "replaced by a fixed backoff (200 ms doubling to 30 s)",
        );
    }
    errors(props, &mut t, ctx.name, out);
    if !overrides.is_empty() {
        t.insert("topic_overrides".into(), overrides.into());
    }
    Ok(t)
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn strings(items: &[String]) -> toml::Value {
    toml::Value::Array(items.iter().map(|s| s.clone().into()).collect())
}

/// `topic.override.<topic>.<property>` grouped by topic. A topic name may hold dots, as a
/// property does: the property is the longest per-topic property name ending the rest, else
/// the topic the longest of `topics` starting it.
fn by_topic(
    raw: Vec<(String, String)>,
    topics: &[String],
    out: &mut Out,
) -> BTreeMap<String, Props> {
    let names: Vec<&str> = Section::Sink
        .rows()
        .iter()
        .flat_map(|row| row.names.iter().copied())
        .filter(|n| !n.contains('*') && !n.contains('<'))
        .collect();
    let mut grouped: BTreeMap<String, Props> = BTreeMap::new();
    for (rest, value) in raw {
        let by_property = names
            .iter()
            .filter(|n| rest.len() > n.len() + 1 && rest.ends_with(&format!(".{n}")))
            .max_by_key(|n| n.len())
            .map(|n| (rest[..rest.len() - n.len() - 1].to_owned(), (*n).to_owned()));
        let by_topic = || {
            topics
                .iter()
                .filter(|t| rest.len() > t.len() + 1 && rest.starts_with(&format!("{t}.")))
                .max_by_key(|t| t.len())
                .map(|t| (t.clone(), rest[t.len() + 1..].to_owned()))
        };
        match by_property.or_else(by_topic) {
            Some((topic, property)) => {
                grouped.entry(topic).or_default().0.insert(property, value);
            }
            None => out.drop(
                format!("topic.override.{rest}"),
                "names no topic of `topics` and no per-topic property",
            ),
        }
    }
    grouped
}

/// Whether the settings read the record key as a document.
fn key_is_read(settings: &toml::Table) -> bool {
    let is = |key: &str, values: &[&str]| {
        settings
            .get(key)
            .and_then(toml::Value::as_str)
            .is_some_and(|v| values.contains(&v))
    };
    is(
        "id_strategy",
        &[
            "full_key",
            "partial_key",
            "provided_in_key",
            "uuid_provided_in_key",
        ],
    ) || is("namespace_from", &["key"])
        || is(
            "cdc_handler",
            &["debezium_mongodb", "debezium_rdbms", "qlik_rdbms"],
        )
        || settings.contains_key("key_field_renames")
        || settings.contains_key("delete_on_null_values")
        || settings.contains_key("key_allow_fields")
        || settings.contains_key("key_block_fields")
}

/// `key_format`, `value_format` and the registry, from the converters.
fn formats(t: &mut toml::Table, converters: &Converters, key_read: bool, out: &mut Out) {
    let mut registry_used = false;
    for (side, converter) in [("key", &converters.key), ("value", &converters.value)] {
        let property = format!("{side}.converter");
        let format = match converter.class() {
            // `schemas.enable` without a class: the worker's converter is `JsonConverter`.
            None if converter.schemas_enable.is_some() => {
                out.note(format!(
                    "`{property}` is the worker's, which this tool cannot see; `{property}.schemas.enable` says it is `JsonConverter`"
                ));
                if converter.schemas_enable == Some(true) {
                    "connect_json"
                } else {
                    "json"
                }
            }
            None => {
                out.note(format!(
                    "`{property}` is not in the connector's configuration: the worker's converter applies, which this tool cannot see; `{side}_format` is left at `json` (Kafka Connect's example workers use `JsonConverter` with schemas: `connect_json`)"
                ));
                "json"
            }
            Some(ConverterClass::String) if side == "key" && !key_read => {
                out.note("`key.converter` is `StringConverter` and nothing reads the key as a document: `key_format = \"string\"` (use `json` for keys that are JSON documents)");
                "string"
            }
            Some(ConverterClass::String) => "json",
            Some(ConverterClass::Json) if converter.json_with_schemas() => "connect_json",
            Some(ConverterClass::Json) => "json",
            Some(ConverterClass::ByteArray) => "bson",
            Some(ConverterClass::Avro) => "avro",
            Some(ConverterClass::JsonSchema) => "json_schema",
            Some(ConverterClass::Protobuf) => "protobuf",
            Some(ConverterClass::Other) => {
                out.drop(
                    &property,
                    format!(
                        "`{}` has no counterpart: records are read as JSON",
                        converter.class_name()
                    ),
                );
                "json"
            }
        };
        registry_used |= matches!(format, "avro" | "json_schema" | "protobuf");
        if converter.subject_name_strategy.is_some() {
            out.drop(
                format!("{side}.converter.{side}.subject.name.strategy"),
                "a sink reads each record with the schema its schema id names; the subject it is under does not matter",
            );
        }
        if format != "json" {
            t.insert(format!("{side}_format"), format.into());
        }
    }
    match (&converters.registry, registry_used) {
        (Some(registry), true) => {
            t.insert("schema_registry".into(), registry.clone().into());
        }
        (Some(_), false) => converters.registry_unused(out),
        (None, _) => {}
    }
}

fn errors(props: &mut Props, t: &mut toml::Table, name: &str, out: &mut Out) {
    let tolerance = match (
        props.take("mongo.errors.tolerance"),
        props.take("errors.tolerance"),
    ) {
        (Some(own), Some(_)) => {
            out.drop("errors.tolerance", "`mongo.errors.tolerance` wins over it");
            Some(("mongo.errors.tolerance", own))
        }
        (Some(own), None) => Some(("mongo.errors.tolerance", own)),
        (None, Some(plain)) => Some(("errors.tolerance", plain)),
        (None, None) => None,
    };
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
    let topic = props.take("errors.deadletterqueue.topic.name");
    let mut errors = toml::Table::new();
    dead_letter_settings(props, &mut errors, all, topic, name, out);
    if !errors.is_empty() {
        t.insert("errors".into(), errors.into());
    }
}

/// The settings that may differ per topic; `prefix` names the properties in findings
/// (`topic.override.<topic>.`).
fn topic_settings(props: &mut Props, prefix: &str, out: &mut Out) -> toml::Table {
    let p = |name: &str| format!("{prefix}{name}");
    let mut t = toml::Table::new();
    for (property, key) in [("database", "database"), ("collection", "collection")] {
        if let Some(value) = props.take(property) {
            t.insert(key.into(), value.into());
        }
    }
    namespace(props, &mut t, &p, out);
    let business_key = id_strategy(props, &mut t, &p, out);
    post_processors(props, &mut t, &p, out);
    write_model(props, &mut t, business_key, &p, out);
    let batch = props.take("max.batch.size");
    if let Some(n) = out.integer(&p("max.batch.size"), batch).filter(|n| *n > 0) {
        t.insert("max_batch_size".into(), n.into());
    }
    let every = props.take("rate.limiting.every.n");
    let every = out
        .integer(&p("rate.limiting.every.n"), every)
        .filter(|n| *n > 0);
    let timeout = props.take("rate.limiting.timeout");
    let timeout = out.integer(&p("rate.limiting.timeout"), timeout);
    match (every, timeout) {
        (Some(n), Some(ms)) if ms > 0 => {
            t.insert("rate_limiting_every_n".into(), n.into());
            t.insert("rate_limiting_timeout".into(), format!("{ms}ms").into());
        }
        (Some(_), Some(_)) => out.drop(
            p("rate.limiting.every.n"),
            "with `rate.limiting.timeout=0` there is no pause",
        ),
        (Some(n), None) => {
            t.insert("rate_limiting_every_n".into(), n.into());
        }
        (None, _) => {}
    }
    cdc(props, &mut t, &p, out);
    if t.contains_key("cdc_handler") && t.remove("post_processor_chain").is_some() {
        out.note("a CDC handler writes what the change events say: the post-processor chain does not apply to it (as in the connector)");
    }
    time_series(props, &mut t, &p, out);
    let remove_nulls = props.take("change.data.capture.handler.remove.null.values");
    if let Some(true) = out.boolean(
        &p("change.data.capture.handler.remove.null.values"),
        remove_nulls,
    ) {
        if t.contains_key("cdc_handler") {
            t.insert("cdc_remove_null_values".into(), true.into());
        } else {
            out.drop(
                p("change.data.capture.handler.remove.null.values"),
                "the connector applies it only with a `change.data.capture.handler`, which has none here",
            );
        }
    }
    t
}

fn namespace(props: &mut Props, t: &mut toml::Table, p: &dyn Fn(&str) -> String, out: &mut Out) {
    let mapper = props.take("namespace.mapper");
    let fields: Vec<(&str, &str, Option<String>)> = [
        (
            "key",
            "database_field",
            "namespace.mapper.key.database.field",
        ),
        (
            "key",
            "collection_field",
            "namespace.mapper.key.collection.field",
        ),
        (
            "value",
            "database_field",
            "namespace.mapper.value.database.field",
        ),
        (
            "value",
            "collection_field",
            "namespace.mapper.value.collection.field",
        ),
    ]
    .into_iter()
    .map(|(side, key, property)| (side, key, props.take(property)))
    .collect();
    let strict = props.take("namespace.mapper.error.if.invalid");
    let strict = out.boolean(&p("namespace.mapper.error.if.invalid"), strict);
    let field_path = matches!(
        mapper.as_deref().map(|m| m.rsplit('.').next().unwrap_or(m)),
        Some("FieldPathNamespaceMapper")
    );
    // The connector's default is `false` (fall back to the configured namespace), ours
    // `true`: a field path mapper gets the connector's, unless it said otherwise.
    if field_path && strict != Some(true) {
        t.insert("error_if_invalid".into(), false.into());
    }
    match mapper.as_deref().map(|m| m.rsplit('.').next().unwrap_or(m)) {
        None | Some("DefaultNamespaceMapper" | "FieldPathNamespaceMapper") => {}
        Some(_) => out.drop(
            p("namespace.mapper"),
            format!(
                "`{}` is a custom class",
                mapper.as_deref().unwrap_or_default()
            ),
        ),
    }
    let given: Vec<_> = fields.iter().filter(|(_, _, v)| v.is_some()).collect();
    if !field_path {
        for (side, key, _) in &given {
            let property = format!(
                "namespace.mapper.{side}.{}",
                key.replace("_field", ".field")
            );
            out.drop(p(&property), "read only with `FieldPathNamespaceMapper`");
        }
        return;
    }
    let side = if given.iter().any(|(s, _, _)| *s == "value") {
        "value"
    } else {
        "key"
    };
    for (s, key, value) in &given {
        let property = format!("namespace.mapper.{s}.{}", key.replace("_field", ".field"));
        if *s == side {
            t.insert((*key).into(), value.clone().unwrap_or_default().into());
        } else {
            out.drop(
                p(&property),
                format!("both fields are read from one side: the {side}'s"),
            );
        }
    }
    if given.is_empty() {
        out.drop(
            p("namespace.mapper"),
            "`FieldPathNamespaceMapper` without a field: the configured namespace is used",
        );
    } else {
        t.insert("namespace_from".into(), side.into());
    }
}

/// The id strategy's settings; returns the fields of a partial allow list on the value, which a
/// business key write model takes as its `business_key_fields`.
fn id_strategy(
    props: &mut Props,
    t: &mut toml::Table,
    p: &dyn Fn(&str) -> String,
    out: &mut Out,
) -> Option<Vec<String>> {
    let strategy = props.take("document.id.strategy");
    let overwrite = props.take("document.id.strategy.overwrite.existing");
    let overwrite = out.boolean(&p("document.id.strategy.overwrite.existing"), overwrite);
    let uuid = props.take("document.id.strategy.uuid.format");
    let mut projections = BTreeMap::new();
    for side in ["key", "value"] {
        let kind = props.take(&format!(
            "document.id.strategy.partial.{side}.projection.type"
        ));
        let fields = props
            .take(&format!(
                "document.id.strategy.partial.{side}.projection.list"
            ))
            .map(|l| list(&l))
            .unwrap_or_default();
        projections.insert(side, (kind, fields));
    }
    let ours = match strategy
        .as_deref()
        .map(|s| s.rsplit('.').next().unwrap_or(s))
    {
        None | Some("BsonOidStrategy") => None,
        Some("KafkaMetaDataStrategy") => Some("kafka_meta"),
        Some("FullKeyStrategy") => Some("full_key"),
        Some("PartialKeyStrategy") => Some("partial_key"),
        Some("PartialValueStrategy") => Some("partial_value"),
        Some("ProvidedInKeyStrategy") => Some("provided_in_key"),
        Some("ProvidedInValueStrategy") => Some("provided_in_value"),
        Some("UuidStrategy") => Some("uuid"),
        Some("UuidProvidedInKeyStrategy" | "UuidInKeyStrategy") => Some("uuid_provided_in_key"),
        Some("UuidProvidedInValueStrategy" | "UuidInValueStrategy") => {
            Some("uuid_provided_in_value")
        }
        Some(other) => {
            out.drop(
                p("document.id.strategy"),
                format!("`{other}` is a custom class; `object_id` is written"),
            );
            None
        }
    };
    let mut business_key = None;
    let partial_side = match ours {
        Some("partial_key") => Some("key"),
        Some("partial_value") => Some("value"),
        _ => None,
    };
    for (side, (kind, fields)) in projections {
        let given = kind.is_some() || !fields.is_empty();
        if Some(side) != partial_side {
            if given {
                let shown = if fields.is_empty() { "type" } else { "list" };
                out.drop(
                    p(&format!(
                        "document.id.strategy.partial.{side}.projection.{shown}"
                    )),
                    format!("read only with `Partial{}Strategy`", capitalized(side)),
                );
            }
            continue;
        }
        let projection = kind.as_deref().map(projection_kind);
        match (projection, fields.is_empty()) {
            (Some(Some("none")) | None, _) | (_, true) => {
                // No projection: the whole key or value, as the full strategies.
                let whole = if side == "key" {
                    "full_key"
                } else {
                    "partial_value"
                };
                if whole == "full_key" {
                    t.insert("id_strategy".into(), "full_key".into());
                } else {
                    out.drop(
                        p("document.id.strategy"),
                        "`PartialValueStrategy` without a projection list has no counterpart (the whole value as `_id`)",
                    );
                }
                return None;
            }
            (Some(Some(projection)), false) => {
                if side == "value" && projection == "allow" {
                    business_key = Some(fields.clone());
                }
                t.insert("id_strategy".into(), ours.unwrap_or_default().into());
                t.insert("id_fields".into(), strings(&fields));
                if projection == "block" {
                    t.insert("id_fields_projection".into(), "block".into());
                }
            }
            (Some(None), false) => out.drop(
                p(&format!(
                    "document.id.strategy.partial.{side}.projection.type"
                )),
                format!(
                    "`{}` is not `AllowList` or `BlockList`",
                    kind.unwrap_or_default()
                ),
            ),
        }
    }
    if partial_side.is_none() {
        if let Some(ours) = ours {
            t.insert("id_strategy".into(), ours.into());
        }
    }
    if overwrite == Some(true) {
        t.insert("id_overwrite_existing".into(), true.into());
    }
    if let Some(format) = uuid {
        match format.to_ascii_lowercase().as_str() {
            "string" => {}
            "binary" if ours == Some("uuid") => {
                t.insert("uuid_representation".into(), "binary".into());
            }
            "binary" => out.drop(
                p("document.id.strategy.uuid.format"),
                "read only with `UuidStrategy` (the provided UUID strategies store binary UUIDs)",
            ),
            _ => out.drop(
                p("document.id.strategy.uuid.format"),
                format!("`{format}` is not `string` or `binary`"),
            ),
        }
    }
    business_key
}

fn capitalized(side: &str) -> String {
    let mut chars = side.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// `AllowList` → `allow`, `BlockList` → `block`, `none` → `none`; `None` when unknown.
fn projection_kind(kind: &str) -> Option<&'static str> {
    match kind.to_ascii_lowercase().as_str() {
        "allowlist" | "whitelist" => Some("allow"),
        "blocklist" | "blacklist" => Some("block"),
        "none" => Some("none"),
        _ => None,
    }
}

fn post_processors(
    props: &mut Props,
    t: &mut toml::Table,
    p: &dyn Fn(&str) -> String,
    out: &mut Out,
) {
    let chain: Vec<String> = props
        .take("post.processor.chain")
        .map(|c| list(&c))
        .unwrap_or_default();
    let mut projectors: Vec<(&str, &str)> = Vec::new();
    let (mut by_mapping, mut by_regex) = (false, false);
    // Our steps, in the connector's order (`post_processor_chain`).
    let mut steps: Vec<&str> = Vec::new();
    for class in &chain {
        let simple = class.rsplit('.').next().unwrap_or(class);
        let step = match simple {
            "DocumentIdAdder" => Some("id"),
            "AllowListKeyProjector" | "WhitelistKeyProjector" => Some("allow_key"),
            "BlockListKeyProjector" | "BlacklistKeyProjector" => Some("block_key"),
            "AllowListValueProjector" | "WhitelistValueProjector" => Some("allow_value"),
            "BlockListValueProjector" | "BlacklistValueProjector" => Some("block_value"),
            "RenameByMapping" => Some("rename"),
            "RenameByRegExp" | "RenameByRegex" => Some("rename_regex"),
            "KafkaMetaAdder" => Some("kafka_metadata"),
            "NullFieldValueRemover" => Some("remove_nulls"),
            _ => None,
        };
        steps.extend(step);
        match simple {
            "DocumentIdAdder" => {}
            "AllowListKeyProjector" | "WhitelistKeyProjector" => projectors.push(("key", "allow")),
            "BlockListKeyProjector" | "BlacklistKeyProjector" => projectors.push(("key", "block")),
            "AllowListValueProjector" | "WhitelistValueProjector" => {
                projectors.push(("value", "allow"))
            }
            "BlockListValueProjector" | "BlacklistValueProjector" => {
                projectors.push(("value", "block"))
            }
            "RenameByMapping" => by_mapping = true,
            "RenameByRegExp" | "RenameByRegex" => by_regex = true,
            "KafkaMetaAdder" => {
                t.insert(
                    "kafka_metadata_field".into(),
                    "topic-partition-offset".into(),
                );
                out.note("`KafkaMetaAdder` became `kafka_metadata_field = \"topic-partition-offset\"`, which holds a document `{topic, partition, offset, timestamp}` instead of the connector's `\"<topic>-<partition>-<offset>\"` text and `CreateTime` field");
            }
            "NullFieldValueRemover" => {
                t.insert("remove_null_fields".into(), true.into());
            }
            other => out.drop(
                p("post.processor.chain"),
                format!("`{other}` is a custom post-processor"),
            ),
        }
    }
    for side in ["key", "value"] {
        let kind = props.take(&format!("{side}.projection.type"));
        let fields = props
            .take(&format!("{side}.projection.list"))
            .map(|l| list(&l))
            .unwrap_or_default();
        let projector = projectors.iter().find(|(s, _)| *s == side).map(|(_, k)| *k);
        let kind_given = kind
            .as_deref()
            .and_then(projection_kind)
            .filter(|k| *k != "none");
        match (projector, fields.is_empty()) {
            (Some(projector), false) => {
                if kind_given.is_some_and(|k| k != projector) {
                    out.note(format!(
                        "`{side}.projection.type` disagrees with the projector in `post.processor.chain`: the projector's `{projector}` list is written, as the connector applies it"
                    ));
                }
                t.insert(format!("{side}_{projector}_fields"), strings(&fields));
            }
            (Some(_), true) => {}
            (None, false) if kind_given.is_some() => out.drop(
                p(&format!("{side}.projection.list")),
                format!("the connector applies it only with a {side} projector in `post.processor.chain`, which has none"),
            ),
            (None, _) => {}
        }
    }
    if let Some(mapping) = props
        .take("field.renamer.mapping")
        .filter(|m| m.trim() != "[]")
    {
        let property = p("field.renamer.mapping");
        if !by_mapping {
            out.drop(
                property,
                "the connector applies it only with `RenameByMapping` in `post.processor.chain`",
            );
        } else {
            match renames(&mapping) {
                Ok((value, key)) => {
                    for (setting, renames) in [("field_renames", value), ("key_field_renames", key)]
                    {
                        if !renames.is_empty() {
                            t.insert(setting.into(), renames.into());
                        }
                    }
                }
                Err(reason) => out.drop(property, reason),
            }
        }
    }
    if let Some(rules) = props
        .take("field.renamer.regexp")
        .filter(|m| m.trim() != "[]")
    {
        let property = p("field.renamer.regexp");
        if !by_regex {
            out.drop(
                property,
                "the connector applies it only with `RenameByRegExp` in `post.processor.chain`",
            );
        } else {
            match regex_renames(&rules) {
                Ok(list) => {
                    if !list.is_empty() {
                        t.insert("field_rename_regex".into(), toml::Value::Array(list));
                    }
                }
                Err(reason) => out.drop(property, reason),
            }
        }
    }
    // Our default order runs every configured step as the connector's usual chains do: a
    // chain is written only when the connector's order differs from it.
    let rank = |step: &str| match step {
        "id" => 0,
        "allow_key" | "block_key" => 1,
        "allow_value" | "block_value" => 2,
        "rename" => 3,
        "rename_regex" => 4,
        "kafka_metadata" => 5,
        _ => 6,
    };
    let mut order: Vec<&str> = Vec::with_capacity(steps.len());
    for step in steps {
        let setting = crate::config::POST_PROCESSOR_STEPS
            .iter()
            .find(|(name, _, _)| *name == step)
            .map(|(_, setting, _)| *setting);
        // A projector or renamer the connector runs without its list does nothing: left out.
        let has_setting = match step {
            "id" => true,
            _ => setting.is_some_and(|key| t.contains_key(key)),
        };
        if has_setting && !order.contains(&step) {
            order.push(step);
        }
    }
    if order.windows(2).any(|w| rank(w[0]) > rank(w[1])) {
        t.insert(
            "post_processor_chain".into(),
            toml::Value::Array(order.iter().map(|s| (*s).into()).collect()),
        );
    }
}

/// The connector's JSON array of rules (`field.renamer.*`), read as its `jsonArrayFromString`
/// reads it: single-quoted strings allowed, and when that fails, once more with every
/// backslash doubled (a `\.` in a regex is no JSON escape).
fn connector_rules(json: &str) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, String> {
    let parse = |text: &str| {
        serde_json::from_str::<Vec<serde_json::Map<String, serde_json::Value>>>(&double_quoted(
            text,
        ))
    };
    parse(json).or_else(|first| {
        parse(&json.replace('\\', "\\\\"))
            .map_err(|_| format!("not a JSON array of objects: {first}"))
    })
}

/// `text` with its single-quoted strings and unquoted keys double-quoted, as the
/// connector's JSON reader accepts them.
fn double_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // The quote of the string we are in, if any.
    let mut quote: Option<char> = None;
    // The last character outside strings that was not white space.
    let mut last = ' ';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push('"');
            }
            // A key without quotes: a name after `{` or `,` that a `:` follows.
            (None, c)
                if (c.is_alphabetic() || c == '_' || c == '$') && matches!(last, '{' | ',') =>
            {
                let mut name = String::from(c);
                while let Some(n) = chars.next_if(|n| n.is_alphanumeric() || *n == '_' || *n == '$')
                {
                    name.push(n);
                }
                let mut gap = String::new();
                while let Some(w) = chars.next_if(|w| w.is_whitespace()) {
                    gap.push(w);
                }
                if chars.peek() == Some(&':') {
                    out.push_str(&format!("\"{name}\"{gap}"));
                } else {
                    out.push_str(&name);
                    out.push_str(&gap);
                }
                last = 'a';
            }
            (Some(q), '\\') => match chars.next() {
                Some('\'') if q == '\'' => out.push('\''),
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => out.push('\\'),
            },
            (Some('\''), '"') => out.push_str("\\\""),
            (Some(q), c) if c == q => {
                quote = None;
                last = '"';
                out.push('"');
            }
            (Some(_), c) => out.push(c),
            (None, c) => {
                if !c.is_whitespace() {
                    last = c;
                }
                out.push(c);
            }
        }
    }
    out
}

/// `field.renamer.mapping` as `field_renames` (`value.` paths) and `key_field_renames`
/// (`key.` paths); an `oldName` with neither prefix matches nothing in the connector either.
fn renames(json: &str) -> Result<(toml::Table, toml::Table), String> {
    let mut value = toml::Table::new();
    let mut key = toml::Table::new();
    for rule in connector_rules(json)? {
        let field = |k: &str| rule.get(k).and_then(serde_json::Value::as_str);
        let (Some(old), Some(new)) = (field("oldName"), field("newName")) else {
            return Err("each rule needs `oldName` and `newName`".to_owned());
        };
        if let Some(path) = old.strip_prefix("value.") {
            value.insert(path.to_owned(), new.into());
        } else if let Some(path) = old.strip_prefix("key.") {
            key.insert(path.to_owned(), new.into());
        } else {
            return Err(format!(
                "`{old}` starts with neither `key.` nor `value.`: it renames nothing"
            ));
        }
    }
    Ok((value, key))
}

/// `field.renamer.regexp` as `field_rename_regex`, each rule whole.
fn regex_renames(json: &str) -> Result<Vec<toml::Value>, String> {
    let mut list = Vec::new();
    for rule in connector_rules(json)? {
        let field = |k: &str| rule.get(k).and_then(serde_json::Value::as_str);
        let (Some(regexp), Some(pattern), Some(replace)) =
            (field("regexp"), field("pattern"), field("replace"))
        else {
            return Err("each rule needs `regexp`, `pattern` and `replace`".to_owned());
        };
        let mut entry = toml::Table::new();
        entry.insert("regexp".into(), regexp.into());
        entry.insert("pattern".into(), pattern.into());
        entry.insert("replace".into(), replace.into());
        list.push(entry.into());
    }
    Ok(list)
}

fn write_model(
    props: &mut Props,
    t: &mut toml::Table,
    business_key: Option<Vec<String>>,
    p: &dyn Fn(&str) -> String,
    out: &mut Out,
) {
    let strategy = props.take("writemodel.strategy");
    let ours = match strategy
        .as_deref()
        .map(|s| s.rsplit('.').next().unwrap_or(s))
    {
        None | Some("DefaultWriteModelStrategy") => None,
        Some("ReplaceOneDefaultStrategy") => Some("replace_one"),
        Some("ReplaceOneBusinessKeyStrategy") => Some("replace_business_key"),
        Some("UpdateOneDefaultStrategy") => Some("update_one"),
        Some("UpdateOneTimestampsStrategy") => Some("update_one_timestamps"),
        Some("UpdateOneBusinessKeyTimestampStrategy") => Some("update_business_key_timestamps"),
        Some("InsertOneDefaultStrategy") => Some("insert_one"),
        Some("DeleteOneDefaultStrategy") => Some("delete_one"),
        Some("DeleteOneBusinessKeyStrategy") => Some("delete_business_key"),
        Some(other) => {
            out.drop(
                p("writemodel.strategy"),
                format!("`{other}` is a custom class; `replace_one` is written"),
            );
            None
        }
    };
    let uses_business_key = matches!(
        ours,
        Some("replace_business_key" | "update_business_key_timestamps" | "delete_business_key")
    );
    let mut business_fields = None;
    if uses_business_key {
        match &business_key {
            Some(fields) => {
                business_fields = Some(fields.clone());
                // The partial id only carried the business key to the write model.
                for key in ["id_strategy", "id_fields", "id_fields_projection"] {
                    t.remove(key);
                }
                out.note("the partial id strategy's allow list became `business_key_fields`, read from the value; no id strategy is needed for it");
            }
            None => {
                out.drop(
                    p("writemodel.strategy"),
                    "a business key strategy needs `PartialValueStrategy` with an `AllowList` projection (its fields become `business_key_fields`)",
                );
            }
        }
    }
    if let Some(model) = ours.filter(|_| !uses_business_key || business_fields.is_some()) {
        t.insert("write_model".into(), model.into());
    }
    let delete = props.take("delete.on.null.values");
    let delete = out.boolean(&p("delete.on.null.values"), delete) == Some(true);
    if delete {
        t.insert("delete_on_null_values".into(), true.into());
    }
    let tombstones = props.take("delete.writemodel.strategy");
    match tombstones
        .as_deref()
        .map(|s| s.rsplit('.').next().unwrap_or(s))
    {
        None | Some("DeleteOneDefaultStrategy") => {}
        Some("DeleteOneTombstoneBusinessKeyStrategy") if delete => {
            let fields = business_fields.clone().or_else(|| {
                t.get("id_fields").and_then(toml::Value::as_array).map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
            });
            match fields {
                Some(fields) => {
                    t.insert(
                        "delete_write_model".into(),
                        "delete_tombstone_business_key".into(),
                    );
                    business_fields = Some(fields);
                }
                None => out.drop(
                    p("delete.writemodel.strategy"),
                    "needs the business key's fields (a partial id strategy's allow list)",
                ),
            }
        }
        Some(_) if !delete => out.drop(
            p("delete.writemodel.strategy"),
            "read only with `delete.on.null.values=true`",
        ),
        Some(other) => out.drop(
            p("delete.writemodel.strategy"),
            format!("`{other}` is a custom class"),
        ),
    }
    if let Some(fields) = business_fields {
        t.insert("business_key_fields".into(), strings(&fields));
    }
}

fn cdc(props: &mut Props, t: &mut toml::Table, p: &dyn Fn(&str) -> String, out: &mut Out) {
    let Some(handler) = props.take("change.data.capture.handler") else {
        return;
    };
    let simple = handler.rsplit('.').next().unwrap_or(&handler);
    let ours = match simple {
        "ChangeStreamHandler" if handler.contains(".debezium.") => Some("debezium_mongodb"),
        "ChangeStreamHandler" => Some("mongodb"),
        "MongoDbHandler" => Some("debezium_mongodb"),
        "RdbmsHandler" if handler.contains(".qlik.") => Some("qlik_rdbms"),
        "RdbmsHandler" | "MysqlHandler" | "PostgresHandler" => Some("debezium_rdbms"),
        _ => None,
    };
    match ours {
        Some(ours) => {
            t.insert("cdc_handler".into(), ours.into());
        }
        None => out.drop(
            p("change.data.capture.handler"),
            format!("`{handler}` is a custom class"),
        ),
    }
}

fn time_series(props: &mut Props, t: &mut toml::Table, p: &dyn Fn(&str) -> String, out: &mut Out) {
    let field = props.take("timeseries.timefield");
    let convert = props.take("timeseries.timefield.auto.convert");
    let convert = out.boolean(&p("timeseries.timefield.auto.convert"), convert) == Some(true);
    // The connector's default (ISO dates with optional times) is what ours reads unless told.
    let format = props
        .take("timeseries.timefield.auto.convert.date.format")
        .filter(|f| !f.starts_with("yyyy-MM-dd[['T'][ ]]"));
    let meta = props.take("timeseries.metafield");
    let expire = props.take("timeseries.expire.after.seconds");
    let expire = out
        .integer(&p("timeseries.expire.after.seconds"), expire)
        .filter(|n| *n > 0);
    let granularity = props.take("timeseries.granularity");
    let Some(field) = field else {
        for (given, property) in [
            (convert, "timeseries.timefield.auto.convert"),
            (
                format.is_some(),
                "timeseries.timefield.auto.convert.date.format",
            ),
            (meta.is_some(), "timeseries.metafield"),
            (expire.is_some(), "timeseries.expire.after.seconds"),
            (granularity.is_some(), "timeseries.granularity"),
        ] {
            if given {
                out.drop(p(property), "read only with `timeseries.timefield`");
            }
        }
        return;
    };
    t.insert("timeseries_time_field".into(), field.into());
    if convert {
        t.insert("timeseries_time_field_auto_convert".into(), true.into());
    }
    if let Some(pattern) = format {
        let property = p("timeseries.timefield.auto.convert.date.format");
        if !convert {
            out.drop(
                property,
                "read only with `timeseries.timefield.auto.convert=true`",
            );
        } else {
            match java_date_format(&pattern) {
                Ok(ours) => {
                    out.note(format!("`timeseries.timefield.auto.convert.date.format` `{pattern}` became `timeseries_time_field_format = \"{ours}\"` (the `time` crate's format description)"));
                    t.insert("timeseries_time_field_format".into(), ours.into());
                }
                Err(reason) => out.drop(
                    property,
                    format!("`{pattern}`: {reason}; write it as a `time` crate format description in `timeseries_time_field_format`"),
                ),
            }
        }
    }
    if let Some(meta) = meta {
        t.insert("timeseries_meta_field".into(), meta.into());
    }
    if let Some(seconds) = expire {
        t.insert(
            "timeseries_expire_after".into(),
            format!("{seconds}s").into(),
        );
    }
    if let Some(granularity) = granularity {
        match granularity.to_ascii_lowercase().as_str() {
            g @ ("seconds" | "minutes" | "hours") => {
                t.insert("timeseries_granularity".into(), g.into());
            }
            _ => out.drop(
                p("timeseries.granularity"),
                format!("`{granularity}` is not `seconds`, `minutes` or `hours`"),
            ),
        }
    }
    let model = t.get("write_model").and_then(toml::Value::as_str);
    if model.is_some_and(|m| m != "insert_one") {
        t.remove("write_model");
        out.drop(
            p("writemodel.strategy"),
            "a time-series collection takes inserts: the default `insert_one` is written",
        );
    }
}

/// A Java `DateTimeFormatter` pattern as a `time` crate format description (version 2), for
/// the letters dates and times are usually written with.
pub(super) fn java_date_format(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut ours = String::new();
    let literal = |c: char, ours: &mut String| {
        if matches!(c, '[' | ']' | '\\') {
            ours.push('\\');
        }
        ours.push(c);
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                literal('\'', &mut ours);
                i += 2;
                continue;
            }
            let end = chars[i + 1..]
                .iter()
                .position(|&q| q == '\'')
                .ok_or("an unclosed quote")?;
            for &q in &chars[i + 1..i + 1 + end] {
                literal(q, &mut ours);
            }
            i += end + 2;
            continue;
        }
        if c == '[' || c == ']' {
            return Err("optional sections (`[...]`) have no counterpart".to_owned());
        }
        if !c.is_ascii_alphabetic() {
            literal(c, &mut ours);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&d| d == c).count();
        let component = match (c, run) {
            ('y' | 'u', 2) => "[year repr:last_two]".to_owned(),
            ('y' | 'u', _) => "[year]".to_owned(),
            ('M', 1) => "[month padding:none]".to_owned(),
            ('M', 2) => "[month]".to_owned(),
            ('M', 3) => "[month repr:short]".to_owned(),
            ('M', _) => "[month repr:long]".to_owned(),
            ('d', 1) => "[day padding:none]".to_owned(),
            ('d', _) => "[day]".to_owned(),
            ('H', 1) => "[hour padding:none]".to_owned(),
            ('H', _) => "[hour]".to_owned(),
            ('h', _) => "[hour repr:12]".to_owned(),
            ('m', _) => "[minute]".to_owned(),
            ('s', _) => "[second]".to_owned(),
            ('S', n @ 1..=9) => format!("[subsecond digits:{n}]"),
            ('a', 1) => "[period]".to_owned(),
            _ => {
                return Err(format!(
                    "the pattern letters `{}` have no counterpart",
                    c.to_string().repeat(run)
                ))
            }
        };
        ours.push_str(&component);
        i += run;
    }
    time::format_description::parse_owned::<2>(&ours)
        .map_err(|e| format!("made `{ours}`, which is no format description: {e}"))?;
    Ok(ours)
}
