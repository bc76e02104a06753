//! `mongo-kafka-bridge import-connect`: a MongoDB Kafka Connector configuration (source or
//! sink, converters included) made into our TOML, with every property that could not be
//! carried over and why.
//!
//! Pure: [`parse`] reads the text, [`translate`] returns the TOML and the findings; the CLI
//! only reads the file and prints. What each property becomes, or why it has no key of ours,
//! is [`table`], which the migration guide's tables are rendered from.

mod converters;
mod error;
mod findings;
mod input;
mod sink;
mod source;
pub mod table;

use converters::Converters;
pub use error::{ImportError, SINK_CLASS, SOURCE_CLASS};
use findings::{one_line, Out, Props};
pub use findings::{Dropped, UNHANDLED, UNKNOWN};
pub use input::{parse, Connector};
use table::Section;

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

#[cfg(test)]
mod tests;
