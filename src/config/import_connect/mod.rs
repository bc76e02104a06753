//! `mongo-kafka-bridge import-connect`: a MongoDB Kafka Connector configuration (source or
//! sink, converters included) made into our TOML, with every property that could not be
//! carried over and why.
//!
//! Pure: [`parse`] reads the text, [`translate`] returns the TOML and the findings; the CLI
//! only reads the file and prints. What each property becomes, or why it has no key of ours,
//! is [`table`], which the migration guide's tables are rendered from.

mod input;
mod sink;
mod source;
pub mod table;

use std::collections::BTreeMap;
use std::fmt;

pub use input::{parse, Connector};
use table::Section;

/// Why a file could not be translated at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file looked like JSON and is not.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// The file is not a `.properties` file either.
    #[error("not a .properties file: {0}")]
    NotProperties(String),
    /// JSON that holds no connector configuration.
    #[error("not a connector configuration: {0}")]
    NotAConnector(String),
    /// No `connector.class`.
    #[error(
        "no `connector.class`: give a connector's configuration as Kafka Connect's REST API returns it (`GET /connectors/<name>` or `GET /connectors/<name>/config`) or its .properties file"
    )]
    NoClass,
    /// Another connector than MongoDB's.
    #[error(
        "`connector.class` is `{0}`, not the MongoDB Kafka Connector (`{SOURCE_CLASS}` or `{SINK_CLASS}`)"
    )]
    NotMongo(String),
    /// A class in the connector's package that is neither of its connectors.
    #[error(
        "`connector.class` `{0}` is no connector of the MongoDB Kafka Connector this tool knows (`{SOURCE_CLASS}` or `{SINK_CLASS}`)"
    )]
    UnknownMongoClass(String),
    /// Several connectors that cannot share one daemon.
    #[error("{0}")]
    Conflict(String),
    /// A property the pipeline cannot do without is missing.
    #[error("{property}: {reason}")]
    Required {
        /// The connector's property.
        property: &'static str,
        /// What is missing.
        reason: String,
    },
}

/// The source connector's class.
pub const SOURCE_CLASS: &str = "com.mongodb.kafka.connect.MongoSourceConnector";
/// The sink connector's class.
pub const SINK_CLASS: &str = "com.mongodb.kafka.connect.MongoSinkConnector";

/// What the command line adds to the connector's configuration.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `kafka.bootstrap_servers` (the worker's `bootstrap.servers`, not in a connector's
    /// configuration).
    pub bootstrap_servers: Option<String>,
    /// The pipeline's name when a connector has none ([`parse`] names them after their file).
    pub fallback_name: String,
    /// Where the configuration came from, for the TOML's header.
    pub origin: String,
}

/// Which connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `MongoSourceConnector`: a `[[source]]`.
    Source,
    /// `MongoSinkConnector`: a `[[sink]]`.
    Sink,
}

/// A property not carried over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The connector's property.
    pub property: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.property, self.reason)
    }
}

/// The result of [`translate`].
#[derive(Debug, Clone)]
pub struct Translation {
    /// Each connector's pipeline: source or sink, and its name.
    pub pipelines: Vec<(Kind, String)>,
    /// The TOML configuration, with a header of comments.
    pub toml: String,
    /// Every property not carried over, in the connector's order of names.
    pub dropped: Vec<Dropped>,
    /// What the user should check or change: assumptions made, secrets written in clear.
    pub notes: Vec<String>,
}

/// What a connector class names.
pub fn connector_kind(class: &str) -> Result<Kind, ImportError> {
    let class = class.trim();
    let simple = class.rsplit('.').next().unwrap_or(class);
    let mongo_package = class.starts_with("com.mongodb.kafka.connect.") || !class.contains('.');
    match simple {
        "MongoSourceConnector" if mongo_package => Ok(Kind::Source),
        "MongoSinkConnector" if mongo_package => Ok(Kind::Sink),
        _ if class.starts_with("com.mongodb.kafka.") => {
            Err(ImportError::UnknownMongoClass(class.to_owned()))
        }
        _ => Err(ImportError::NotMongo(class.to_owned())),
    }
}

/// The connector's properties, taken one by one as they are carried over; what is left at the
/// end was not.
#[derive(Debug, Default)]
pub(crate) struct Props(BTreeMap<String, String>);

impl Props {
    /// The value of `name`, removed; a blank value is the connector's default, as unset.
    pub(crate) fn take(&mut self, name: &str) -> Option<String> {
        self.0
            .remove(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// Every property starting with `prefix`, removed: the rest of its name and its value
    /// (blank values left out).
    pub(crate) fn take_prefixed(&mut self, prefix: &str) -> Vec<(String, String)> {
        let names: Vec<String> = self
            .0
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        names
            .into_iter()
            .filter_map(|name| {
                let value = self.take(&name)?;
                Some((name[prefix.len()..].to_owned(), value))
            })
            .collect()
    }

    fn rest(self) -> BTreeMap<String, String> {
        self.0
    }
}

/// The findings of a translation so far.
#[derive(Debug, Default)]
pub(crate) struct Out {
    dropped: Vec<Dropped>,
    notes: Vec<String>,
}

impl Out {
    /// `property` is not carried over, because of `reason`.
    pub(crate) fn drop(&mut self, property: impl Into<String>, reason: impl Into<String>) {
        self.dropped.push(Dropped {
            property: one_line(property.into()),
            reason: one_line(reason.into()),
        });
    }

    /// Something the user should know.
    pub(crate) fn note(&mut self, text: impl Into<String>) {
        let text = one_line(text.into());
        if !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }

    /// `value` of `property` as a boolean, or dropped.
    pub(crate) fn boolean(&mut self, property: &str, value: Option<String>) -> Option<bool> {
        let value = value?;
        match value.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.drop(property, format!("`{value}` is not `true` or `false`"));
                None
            }
        }
    }

    /// `value` of `property` as an integer, or dropped.
    pub(crate) fn integer(&mut self, property: &str, value: Option<String>) -> Option<i64> {
        let value = value?;
        match value.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                self.drop(property, format!("`{value}` is not an integer"));
                None
            }
        }
    }

    /// The reason the table gives for `property` of `section`.
    pub(crate) fn drop_as_table(&mut self, section: Section, property: &str, shown: &str) {
        let reason = table::find(section, property)
            .and_then(table::Property::reason)
            .unwrap_or_else(|| UNHANDLED.to_owned());
        self.drop(shown, reason);
    }
}

/// `text` on one line: a finding is one line on stderr and one comment in the TOML.
fn one_line(text: String) -> String {
    if text.contains(['\n', '\r']) {
        text.replace("\r\n", " ").replace(['\n', '\r'], " ")
    } else {
        text
    }
}

/// What a property that the guide says is carried over, but this tool did not take, is told.
pub const UNHANDLED: &str =
    "the migration guide carries it over, but this tool does not yet: set it by hand";

/// What an unknown property is told.
pub const UNKNOWN: &str =
    "not a property of the MongoDB Kafka Connector or of Kafka Connect that this tool knows";

/// One connector translated, before it joins the others.
struct Part {
    kind: Kind,
    name: String,
    connector_name: String,
    mongodb: toml::Table,
    kafka: toml::Table,
    pipeline: toml::Table,
    out: Out,
}

/// Translates a connector's configuration.
pub fn translate(connector: &Connector, options: &Options) -> Result<Translation, ImportError> {
    translate_all(std::slice::from_ref(connector), options)
}

/// Translates several connectors into the pipelines of one daemon: they must name one MongoDB
/// deployment and one Kafka cluster. Each finding names its connector when there are several.
pub fn translate_all(
    connectors: &[Connector],
    options: &Options,
) -> Result<Translation, ImportError> {
    let mut parts = connectors
        .iter()
        .map(|c| translate_one(c, options))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(first) = parts.first() else {
        return Err(ImportError::NotAConnector(
            "it holds no connector".to_owned(),
        ));
    };
    let mongodb = first.mongodb.clone();
    let mut kafka = first.kafka.clone();
    let first_name = first.connector_name.clone();
    for part in &parts[1..] {
        if part.mongodb != mongodb {
            return Err(ImportError::Conflict(format!(
                "one MongoDB deployment per daemon: `{first_name}` and `{}` name different `[mongodb]` settings (connection string or Stable API); translate them into separate files",
                part.connector_name
            )));
        }
        merge_kafka(&mut kafka, &part.kafka, "kafka").map_err(|key| {
            ImportError::Conflict(format!(
                "one Kafka cluster per daemon: `{first_name}` and `{}` differ in `{key}`; translate them into separate files",
                part.connector_name
            ))
        })?;
    }
    let several = parts.len() > 1;
    let shared: Vec<String> = first
        .out
        .notes
        .iter()
        .filter(|n| parts.iter().all(|p| p.out.notes.contains(n)))
        .cloned()
        .collect();
    let mut root = toml::Table::new();
    root.insert("mongodb".into(), mongodb.into());
    root.insert("kafka".into(), kafka.into());
    let (mut sources, mut sinks, mut taken) = (Vec::new(), Vec::new(), Vec::<String>::new());
    let mut out = Out::default();
    let mut pipelines = Vec::new();
    for part in &mut parts {
        let mut name = part.name.clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = format!("{}-{n}", part.name);
            n += 1;
        }
        if name != part.name {
            part.out.note(format!(
                "the pipeline is named `{name}`: another connector's pipeline is `{}`",
                part.name
            ));
            part.pipeline.insert("name".into(), name.clone().into());
        }
        taken.push(name.clone());
        pipelines.push((part.kind, name));
        let pipeline = toml::Value::Table(std::mem::take(&mut part.pipeline));
        match part.kind {
            Kind::Source => sources.push(pipeline),
            Kind::Sink => sinks.push(pipeline),
        }
        let whose = |text: String| {
            if several {
                format!("{text} (connector `{}`)", part.connector_name)
            } else {
                text
            }
        };
        for dropped in std::mem::take(&mut part.out.dropped) {
            out.drop(dropped.property, whose(dropped.reason));
        }
        for note in std::mem::take(&mut part.out.notes) {
            // A note every connector has (the bootstrap servers) is said once.
            if shared.contains(&note) {
                out.note(note);
            } else {
                out.note(whose(note));
            }
        }
    }
    if !sources.is_empty() {
        root.insert("source".into(), toml::Value::Array(sources));
    }
    if !sinks.is_empty() {
        root.insert("sink".into(), toml::Value::Array(sinks));
    }
    let body = toml::to_string(&root).map_err(|e| ImportError::NotAConnector(e.to_string()))?;
    let named: Vec<(Kind, &str)> = parts
        .iter()
        .map(|p| (p.kind, p.connector_name.as_str()))
        .collect();
    let toml = header(&named, options, &out) + &body;
    Ok(Translation {
        pipelines,
        toml,
        dropped: out.dropped,
        notes: out.notes,
    })
}

/// Adds `other`'s settings to `into`; the dotted key of the first that differs.
fn merge_kafka(into: &mut toml::Table, other: &toml::Table, path: &str) -> Result<(), String> {
    for (key, value) in other {
        let at = format!("{path}.{key}");
        match (into.get_mut(key), value) {
            (None, _) => {
                into.insert(key.clone(), value.clone());
            }
            (Some(toml::Value::Table(mine)), toml::Value::Table(theirs)) => {
                merge_kafka(mine, theirs, &at)?;
            }
            (Some(mine), theirs) if mine == theirs => {}
            (Some(_), _) => return Err(at),
        }
    }
    Ok(())
}

fn translate_one(connector: &Connector, options: &Options) -> Result<Part, ImportError> {
    let mut props = Props(connector.properties.clone());
    let class = props.take("connector.class").ok_or(ImportError::NoClass)?;
    let kind = connector_kind(&class)?;
    let mut out = Out::default();
    provider_references(&props, &mut out);
    let config_name = props.take("name");
    let connector_name = connector
        .name
        .clone()
        .or(config_name)
        .unwrap_or_else(|| options.fallback_name.clone());
    let name = pipeline_name(&connector_name, &mut out);
    props.take("tasks.max");

    let mongodb = mongodb_table(&mut props, &mut out);
    let (kafka, group_override) = kafka_table(&mut props, options, &mut out);
    let converters = Converters::take(&mut props, &mut out);
    let pipeline = match kind {
        Kind::Source => {
            if let Some(group) = group_override {
                out.drop(
                    "consumer.override.group.id",
                    format!("`{group}`: a source has no consumer group"),
                );
            }
            source::translate(&mut props, &name, &converters, &mut out)
        }
        Kind::Sink => {
            let context = sink::Context {
                name: &name,
                connector_name: &connector_name,
                uri: mongodb
                    .get("uri")
                    .and_then(toml::Value::as_str)
                    .unwrap_or_default(),
                group_override,
                converters: &converters,
            };
            sink::translate(&mut props, &context, &mut out)?
        }
    };
    for (property, value) in props.rest() {
        if value.trim().is_empty() || unchanged(kind, &property, &value) {
            continue;
        }
        let reason = leftover_reason(kind, &property);
        out.drop(property, reason);
    }
    out.dropped.sort_by(|a, b| a.property.cmp(&b.property));
    Ok(Part {
        kind,
        name,
        connector_name,
        mongodb,
        kafka,
        pipeline,
        out,
    })
}

/// Loads a translation's TOML with the daemon's loader and validation, as `check-config`
/// would; references (`${env:...}`, `${file:...}`) stand for text, since only the shape is
/// checked.
pub fn check(toml: &str) -> Result<super::Config, super::ConfigError> {
    super::load::load_with(
        toml,
        std::path::Path::new("the translation"),
        Vec::new(),
        &|_| Some("x".to_owned()),
        &|_| Ok("x".to_owned()),
    )
}

/// Kafka Connect's config provider references (`${file:/path:key}`, `${env:NAME}`) in the
/// values: ours read `${env:NAME}` alike, not the others.
fn provider_references(props: &Props, out: &mut Out) {
    let Ok(reference) = regex::Regex::new(r"\$\{([A-Za-z0-9_.-]+):([^}]*)\}") else {
        return;
    };
    for (property, value) in &props.0 {
        for found in reference.captures_iter(value) {
            let (provider, body) = (&found[1], &found[2]);
            match provider {
                "env" => {}
                "file" if body.rfind(':').is_some_and(|i| i > 1) => out.note(format!(
                    "`{property}` holds `{}`, a Kafka Connect `FileConfigProvider` reference to one key of a properties file; ours, `${{file:/path}}`, is a whole file: put the secret alone in a file and write `${{file:/that/file}}`",
                    &found[0]
                )),
                "file" => {}
                other => out.note(format!(
                    "`{property}` holds `{}`, a reference to Kafka Connect's `{other}` config provider, which the daemon does not resolve: give the value, `${{env:NAME}}` or `${{file:/path}}`",
                    &found[0]
                )),
            }
        }
    }
}

/// Whether the table says `value` of `property` loses nothing.
fn unchanged(kind: Kind, property: &str, value: &str) -> bool {
    let own = match kind {
        Kind::Source => Section::Source,
        Kind::Sink => Section::Sink,
    };
    [own, Section::Worker, Section::Registry]
        .into_iter()
        .find_map(|section| table::find(section, property))
        .is_some_and(|row| row.is_unchanged(value))
}

/// Why a property nobody took is left out: the table's reason, or that it is unknown.
fn leftover_reason(kind: Kind, property: &str) -> String {
    let (own, other, other_kind) = match kind {
        Kind::Source => (Section::Source, Section::Sink, "sink"),
        Kind::Sink => (Section::Sink, Section::Source, "source"),
    };
    for section in [own, Section::Worker, Section::Registry] {
        if let Some(row) = table::find(section, property) {
            if kind == Kind::Sink && row.qualifier.starts_with("(source") {
                return "a source connector's setting, which a sink ignores".to_owned();
            }
            return row.reason().unwrap_or_else(|| UNHANDLED.to_owned());
        }
    }
    if table::find(other, property).is_some() {
        return format!("a {other_kind} connector's property, which this connector ignores");
    }
    UNKNOWN.to_owned()
}

fn header(connectors: &[(Kind, &str)], options: &Options, out: &Out) -> String {
    let named: Vec<String> = connectors
        .iter()
        .map(|(kind, name)| {
            let kind = match kind {
                Kind::Source => "source",
                Kind::Sink => "sink",
            };
            format!("{kind} `{}`", one_line((*name).to_owned()))
        })
        .collect();
    let mut text = format!(
        "# Translated by `mongo-kafka-bridge import-connect` from {}\n# (the MongoDB Kafka Connector {}).\n# Check it with `mongo-kafka-bridge check-config --config FILE`.\n",
        one_line(options.origin.clone()),
        named.join(", "),
    );
    if !out.dropped.is_empty() {
        text.push_str("#\n# Not carried over:\n");
        for dropped in &out.dropped {
            text.push_str(&format!("# - {dropped}\n"));
        }
    }
    if !out.notes.is_empty() {
        text.push_str("#\n# Notes:\n");
        for note in &out.notes {
            text.push_str(&format!("# - {note}\n"));
        }
    }
    text.push('\n');
    text
}

/// A pipeline name from a connector's: letters, digits, `-` and `_`.
fn pipeline_name(connector: &str, out: &mut Out) -> String {
    let name: String = connector
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = if name.is_empty() {
        "connector".to_owned()
    } else {
        name
    };
    if name != connector {
        out.note(format!(
            "the pipeline is named `{name}`: a pipeline name holds letters, digits, `-` and `_` only (the connector is `{connector}`)"
        ));
    }
    name
}

/// The connector's default `connection.uri`.
const DEFAULT_URI: &str = "mongodb://localhost:27017,localhost:27018,localhost:27019";

fn mongodb_table(props: &mut Props, out: &mut Out) -> toml::Table {
    let mut table = toml::Table::new();
    let uri = props.take("connection.uri").unwrap_or_else(|| {
        out.note(format!(
            "`connection.uri` is not given: `mongodb.uri` is the connector's default, `{DEFAULT_URI}`"
        ));
        DEFAULT_URI.to_owned()
    });
    if super::secrets::uri_password(&uri).is_some_and(|p| !p.contains("${")) {
        out.note(
            "`mongodb.uri` holds a password, carried over as written: move it out of the file, \
             e.g. `mongodb://user:${env:MONGODB_PASSWORD}@host/` or `${file:/run/secrets/mongodb-password}` \
             (docs/configuration.md, \"Secrets from the environment and from files\")",
        );
    }
    table.insert("uri".into(), uri.into());
    if let Some(version) = props.take("server.api.version") {
        table.insert("server_api_version".into(), version.into());
    }
    for (property, key) in [
        ("server.api.strict", "server_api_strict"),
        (
            "server.api.deprecation.errors",
            "server_api_deprecation_errors",
        ),
    ] {
        let value = props.take(property);
        if let Some(true) = out.boolean(property, value) {
            table.insert(key.into(), true.into());
        }
    }
    for (rest, _) in props.take_prefixed("connection.ssl.") {
        let property = format!("connection.ssl.{rest}");
        let reason = if rest.starts_with("truststore") {
            "a JKS trust store: convert its certificates to a PEM file and add `tlsCAFile=<file>` to `mongodb.uri`"
        } else {
            "a JKS key store: convert it to a PEM file and add `tlsCertificateKeyFile=<file>` (and `tlsCertificateKeyFilePassword`) to `mongodb.uri`"
        };
        out.drop(property, reason);
    }
    for (rest, _) in props.take_prefixed("mongo.custom.auth.mechanism.") {
        out.drop_as_table(
            Section::Source,
            "mongo.custom.auth.mechanism.enable",
            &format!("mongo.custom.auth.mechanism.{rest}"),
        );
    }
    table
}

/// `[kafka]`, and the `consumer.override.group.id` if given.
fn kafka_table(
    props: &mut Props,
    options: &Options,
    out: &mut Out,
) -> (toml::Table, Option<String>) {
    let mut table = toml::Table::new();
    let given = props.take("bootstrap.servers");
    let servers = options
        .bootstrap_servers
        .clone()
        .or(given)
        .unwrap_or_else(|| {
            out.note(
                "`kafka.bootstrap_servers` is the Kafka Connect worker's `bootstrap.servers`, which a connector's configuration does not hold: `localhost:9092` is written, give the right one with `--bootstrap-servers`",
            );
            "localhost:9092".to_owned()
        });
    table.insert("bootstrap_servers".into(), servers.into());
    let mut properties = toml::Table::new();
    let mut producer = toml::Table::new();
    let mut consumer = toml::Table::new();
    let group = props.take("consumer.override.group.id");
    let client = |name: String, value: String, into: &mut toml::Table, out: &mut Out| {
        for (key, value) in client_property(&name, &value, out) {
            into.insert(key, value.into());
        }
    };
    if let Some(protocol) = props.take("security.protocol") {
        client("security.protocol".into(), protocol, &mut properties, out);
    }
    for (rest, value) in props.take_prefixed("sasl.") {
        client(format!("sasl.{rest}"), value, &mut properties, out);
    }
    for (rest, value) in props.take_prefixed("ssl.") {
        client(format!("ssl.{rest}"), value, &mut properties, out);
    }
    for (prefix, into) in [
        ("producer.override.", &mut producer),
        ("consumer.override.", &mut consumer),
        ("admin.override.", &mut properties),
    ] {
        for (rest, value) in props.take_prefixed(prefix) {
            out.note(format!(
                "`{prefix}*` properties are carried over with their Java client names: librdkafka refuses a name it does not know when the daemon starts"
            ));
            client(rest, value, into, out);
        }
    }
    for (key, map) in [
        ("properties", properties),
        ("producer", producer),
        ("consumer", consumer),
    ] {
        if !map.is_empty() {
            table.insert(key.into(), map.into());
        }
    }
    (table, group)
}

/// A Kafka client property as librdkafka takes it (none, or several for a JAAS login), or
/// dropped with the reason.
fn client_property(name: &str, value: &str, out: &mut Out) -> Vec<(String, String)> {
    match name {
        "sasl.jaas.config" => {
            let field = |key: &str| {
                regex::Regex::new(&format!(r#"{key}\s*=\s*"([^"]*)""#))
                    .ok()
                    .and_then(|r| r.captures(value))
                    .and_then(|c| c.get(1))
                    .map(|m| m.as_str().to_owned())
            };
            match (field("username"), field("password")) {
                (Some(user), Some(password)) => {
                    out.drop(
                        name,
                        "a JAAS login module: its `username` and `password` became librdkafka's `sasl.username` and `sasl.password`",
                    );
                    out.note(
                        "`sasl.password` is carried over as written: move it out of the file, e.g. `\"sasl.password\" = \"${env:KAFKA_PASSWORD}\"`",
                    );
                    vec![
                        ("sasl.username".to_owned(), user),
                        ("sasl.password".to_owned(), password),
                    ]
                }
                _ => {
                    out.drop(name, "a JAAS login module: give librdkafka's `sasl.username` and `sasl.password` (or its OAUTHBEARER settings) instead");
                    Vec::new()
                }
            }
        }
        n if n.starts_with("ssl.truststore.") || n == "ssl.keystore.type" => {
            out.drop(name, "a JKS store: librdkafka takes PEM files (`ssl.ca.location`) or a PKCS#12 keystore (`ssl.keystore.location`, `ssl.keystore.password`)");
            Vec::new()
        }
        "sasl.mechanism" => vec![("sasl.mechanisms".to_owned(), value.to_owned())],
        _ => vec![(name.to_owned(), value.to_owned())],
    }
}

/// A converter's class, by its simple name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConverterClass {
    /// `StringConverter`.
    String,
    /// `ByteArrayConverter`.
    ByteArray,
    /// `JsonConverter`.
    Json,
    /// Confluent's `AvroConverter`.
    Avro,
    /// Confluent's `JsonSchemaConverter`.
    JsonSchema,
    /// Confluent's `ProtobufConverter`.
    Protobuf,
    /// Any other.
    Other,
}

impl ConverterClass {
    fn of(class: &str) -> Self {
        match class.rsplit('.').next().unwrap_or(class) {
            "StringConverter" => Self::String,
            "ByteArrayConverter" => Self::ByteArray,
            "JsonConverter" => Self::Json,
            "AvroConverter" => Self::Avro,
            "JsonSchemaConverter" => Self::JsonSchema,
            "ProtobufConverter" => Self::Protobuf,
            _ => Self::Other,
        }
    }

    fn uses_registry(self) -> bool {
        matches!(self, Self::Avro | Self::JsonSchema | Self::Protobuf)
    }
}

/// One side's converter (`key.converter` or `value.converter`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Converter {
    /// The class, and its name as given.
    pub class: Option<(ConverterClass, String)>,
    /// `schemas.enable` (`JsonConverter`; Kafka Connect's default is `true`).
    pub schemas_enable: Option<bool>,
    /// The registry settings, as our `schema_registry` table.
    pub registry: Option<toml::Table>,
}

impl Converter {
    /// The class, when given.
    pub fn class(&self) -> Option<ConverterClass> {
        self.class.as_ref().map(|(c, _)| *c)
    }

    /// The class's name as given, or `(none)`.
    pub fn class_name(&self) -> &str {
        self.class.as_ref().map_or("(none)", |(_, n)| n.as_str())
    }

    /// `JsonConverter` with its envelope.
    pub fn json_with_schemas(&self) -> bool {
        self.class() == Some(ConverterClass::Json) && self.schemas_enable.unwrap_or(true)
    }
}

/// Both converters and the registry they share.
#[derive(Debug, Clone, Default)]
pub(crate) struct Converters {
    /// `key.converter`.
    pub key: Converter,
    /// `value.converter`.
    pub value: Converter,
    /// The pipeline's `schema_registry`: the value converter's, else the key converter's.
    pub registry: Option<toml::Table>,
}

impl Converters {
    fn take(props: &mut Props, out: &mut Out) -> Self {
        let key = Self::side(props, "key", out);
        let value = Self::side(props, "value", out);
        let registry = match (&key.registry, &value.registry) {
            (Some(k), Some(v)) if k.get("url") != v.get("url") => {
                out.drop(
                    "key.converter.schema.registry.url",
                    "one schema registry per pipeline: the value converter's is kept",
                );
                Some(v.clone())
            }
            (Some(k), Some(v)) => {
                let mut merged = k.clone();
                merged.extend(v.clone());
                Some(merged)
            }
            (k, v) => v.clone().or_else(|| k.clone()),
        };
        if registry.as_ref().is_some_and(|r| {
            r.get("password")
                .and_then(toml::Value::as_str)
                .is_some_and(|p| !p.contains("${"))
        }) {
            out.note(
                "`schema_registry.password` is carried over as written: move it out of the file, e.g. `password = \"${env:SCHEMA_REGISTRY_PASSWORD}\"` or `\"${file:/run/secrets/registry-password}\"`",
            );
        }
        Self {
            key,
            value,
            registry,
        }
    }

    /// The registry settings were given but no format of ours reads through a registry.
    pub(crate) fn registry_unused(&self, out: &mut Out) {
        for (side, converter) in [("key", &self.key), ("value", &self.value)] {
            if converter.registry.is_some() {
                out.drop(
                    format!("{side}.converter.schema.registry.url"),
                    "read only by a registry converter that the pipeline reads or writes (`avro`, `json_schema`)",
                );
            }
        }
    }

    fn side(props: &mut Props, side: &str, out: &mut Out) -> Converter {
        let p = |rest: &str| format!("{side}.converter{rest}");
        let class = props
            .take(&p(""))
            .map(|name| (ConverterClass::of(&name), name));
        let schemas_enable = {
            let value = props.take(&p(".schemas.enable"));
            out.boolean(&p(".schemas.enable"), value)
        };
        if schemas_enable.is_some()
            && class
                .as_ref()
                .is_some_and(|(c, _)| *c != ConverterClass::Json)
        {
            out.drop(p(".schemas.enable"), "read only by `JsonConverter`");
        }
        let mut registry = toml::Table::new();
        let urls = props.take(&p(".schema.registry.url"));
        let source = props.take(&p(".basic.auth.credentials.source"));
        let user_info = props
            .take(&p(".basic.auth.user.info"))
            .or_else(|| props.take(&p(".schema.registry.basic.auth.user.info")));
        let registry_class = class.as_ref().is_some_and(|(c, _)| c.uses_registry());
        if let Some(urls) = urls {
            let mut list = urls.split(',').map(str::trim).filter(|u| !u.is_empty());
            let first = list.next().unwrap_or_default().to_owned();
            if list.next().is_some() {
                out.drop(
                    p(".schema.registry.url"),
                    format!("lists several registries: `{first}` is kept (one URL per registry)"),
                );
            }
            if !registry_class {
                out.drop(
                    p(".schema.registry.url"),
                    format!(
                        "read only by a registry converter, not `{}`",
                        class.as_ref().map_or("(none)", |(_, n)| n.as_str())
                    ),
                );
            } else {
                let mut url = first;
                if let Ok(mut parsed) = url::Url::parse(&url) {
                    if !parsed.username().is_empty() {
                        let user = parsed.username().to_owned();
                        let password = parsed.password().map(str::to_owned);
                        let _ = parsed.set_username("");
                        let _ = parsed.set_password(None);
                        url = parsed.to_string().trim_end_matches('/').to_owned();
                        registry.insert("username".into(), user.into());
                        if let Some(password) = password {
                            registry.insert("password".into(), password.into());
                        }
                    }
                }
                registry.insert("url".into(), url.into());
            }
        }
        match (
            source.as_deref().map(str::to_ascii_uppercase).as_deref(),
            user_info,
        ) {
            (Some("SASL_INHERIT"), _) => out.drop(
                p(".basic.auth.credentials.source"),
                "`SASL_INHERIT`: give the registry's own `username` and `password`",
            ),
            (Some("URL") | None, None) => {}
            (_, Some(info)) if registry.contains_key("url") => match info.split_once(':') {
                Some((user, password)) => {
                    registry.insert("username".into(), user.into());
                    registry.insert("password".into(), password.into());
                }
                None => out.drop(p(".basic.auth.user.info"), "is not `user:password`"),
            },
            (_, Some(_)) => out.drop(
                p(".basic.auth.user.info"),
                "read only with a registry converter and its `schema.registry.url`",
            ),
            (Some(other), None) => out.drop(
                p(".basic.auth.credentials.source"),
                format!("`{other}` without `basic.auth.user.info`"),
            ),
        }
        if let Some(location) = props.take(&p(".schema.registry.ssl.truststore.location")) {
            let pem = [".pem", ".crt", ".cer"]
                .iter()
                .any(|e| location.to_ascii_lowercase().ends_with(e));
            if pem && registry.contains_key("url") {
                registry.insert("ca_file".into(), location.into());
            } else {
                out.drop(
                    p(".schema.registry.ssl.truststore.location"),
                    "a JKS trust store: convert its certificates to a PEM file and give it as `schema_registry.ca_file`",
                );
            }
        }
        for (rest, _) in props.take_prefixed(&p(".schema.registry.ssl.")) {
            let property = p(&format!(".schema.registry.ssl.{rest}"));
            if rest.starts_with("keystore") {
                out.drop(property, "a JKS or PKCS#12 key store: convert it to PEM files and give them as `schema_registry.cert_file` and `key_file`");
            } else {
                out.drop(property, "not needed with PEM files (`schema_registry.ca_file`, `cert_file`, `key_file`)");
            }
        }
        let host = props.take(&p(".proxy.host"));
        let port = props.take(&p(".proxy.port"));
        if let Some(host) = host {
            let proxy = match port {
                Some(port) => format!("http://{host}:{port}"),
                None => format!("http://{host}"),
            };
            if registry.contains_key("url") {
                registry.insert("proxy".into(), proxy.into());
            } else {
                out.drop(p(".proxy.host"), "read only with a registry converter");
            }
        }
        Converter {
            class,
            schemas_enable,
            registry: (!registry.is_empty()).then_some(registry),
        }
    }
}

#[cfg(test)]
mod tests;
