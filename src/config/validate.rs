//! Checks serde cannot express: values that parse but are impossible. No I/O here, and
//! every problem is collected, so a user fixes a file in one pass.

use std::collections::BTreeMap;
use std::time::Duration;

use super::violation::{positive, Violation};
use super::{secrets, Config, KafkaConfig, SinkConfig};

/// librdkafka keys that the daemon sets itself from typed fields or needs to control for
/// its delivery guarantees; setting them through a pass-through map is an error.
const KAFKA_RESERVED_ANY: &[(&str, &str)] = &[
    ("bootstrap.servers", "set `kafka.bootstrap_servers` instead"),
    (
        "metadata.broker.list",
        "set `kafka.bootstrap_servers` instead",
    ),
];
const KAFKA_RESERVED_PRODUCER: &[(&str, &str)] = &[(
    "transactional.id",
    "set per source pipeline by `delivery = \"exactly-once\"`",
)];
const KAFKA_RESERVED_CONSUMER: &[(&str, &str)] = &[
    ("group.id", "set `group_id` on the sink pipeline instead"),
    (
        "enable.auto.commit",
        "offsets are committed only after MongoDB acknowledged the write",
    ),
    (
        "enable.auto.offset.store",
        "offsets are stored only after MongoDB acknowledged the write",
    ),
];

/// What a valid configuration holds that may not do what its author meant, each with its
/// key: logged as warnings at start and reload, printed by `check-config`. Today: the
/// `topic_namespace_map` keys the MongoDB Kafka Connector would read otherwise, and a sink's
/// `queue_capacity`, which no longer does anything.
pub fn warnings(config: &Config) -> Vec<Violation> {
    let mut out = Vec::new();
    for (i, source) in config.sources.iter().enumerate() {
        for (key, message) in super::namespace_map::warnings(&source.topic_namespace_map) {
            out.push(Violation::new(
                format!("source[{i}].topic_namespace_map.\"{key}\""),
                message,
            ));
        }
    }
    for (i, sink) in config.sinks.iter().enumerate() {
        if sink.queue_capacity.is_some() {
            out.push(Violation::new(
                format!("sink[{i}].queue_capacity"),
                "has no effect on a sink pipeline: each partition writer takes its records straight off the partition's librdkafka queue (bounded by `memory_budget`); remove it",
            ));
        }
    }
    out
}

/// Returns every problem found in `config`; empty means valid.
pub fn validate(config: &Config) -> Vec<Violation> {
    let mut out = Vec::new();
    validate_mongodb(config, &mut out);
    validate_kafka(&config.kafka, &mut out);
    validate_log(config, &mut out);
    positive(
        &mut out,
        "shutdown.timeout",
        config.shutdown.timeout,
        "the graceful shutdown deadline",
    );
    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    let shared = config.kafka.schema_registry.as_ref();
    if let Some(registry) = shared {
        registry.validate("kafka.schema_registry", &mut out);
    }
    for (i, source) in config.sources.iter().enumerate() {
        let key = format!("source[{i}]");
        validate_name(&key, &source.name, &mut names, &mut out);
        let mut found = Vec::new();
        source.validate(&key, &mut found);
        transaction_room(&config.kafka, source, &key, &mut found);
        out.extend(without_shared_registry(
            found,
            &key,
            shared.filter(|s| source.schema_registry.as_ref() == Some(*s)),
        ));
    }
    for (i, sink) in config.sinks.iter().enumerate() {
        let key = format!("sink[{i}]");
        let mut found = Vec::new();
        validate_sink(&key, sink, &mut names, &mut found);
        out.extend(without_shared_registry(
            found,
            &key,
            shared.filter(|s| sink.schema_registry.as_ref() == Some(*s)),
        ));
    }
    exactly_once_checkpoint_topics(&config.sources, &mut out);
    out
}

/// Issue 21, item 5: an exactly-once pipeline's open transaction holds back every
/// `read_committed` reading of the checkpoint partitions it writes to, so a pipeline sharing
/// them would start from older checkpoints. Two pipelines of one configuration may share a
/// `checkpoint_topic` only when both are at-least-once (a start meeting another daemon's
/// pipeline there refuses the same way, at run time).
fn exactly_once_checkpoint_topics(sources: &[super::SourceConfig], out: &mut Vec<Violation>) {
    for (i, source) in sources.iter().enumerate() {
        let earlier = sources[..i]
            .iter()
            .enumerate()
            .find(|(_, other)| other.checkpoint_topic == source.checkpoint_topic);
        let Some((j, other)) = earlier else {
            continue;
        };
        if source.delivery == super::Delivery::ExactlyOnce
            || other.delivery == super::Delivery::ExactlyOnce
        {
            out.push(Violation::new(
                format!("source[{i}].checkpoint_topic"),
                format!(
                    "`{}` is also the checkpoint topic of `source[{j}]` (`{}`), and an exactly-once pipeline's open transactions hold back the checkpoints of every pipeline sharing it: give the exactly-once pipeline a topic of its own (leave `checkpoint_topic` out and it gets `{}`)",
                    source.checkpoint_topic,
                    other.name,
                    super::own_checkpoint_topic(if source.delivery == super::Delivery::ExactlyOnce {
                        &source.name
                    } else {
                        &other.name
                    }),
                ),
            ));
        }
    }
}

/// librdkafka's default `transaction.timeout.ms`.
const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest a commit of a source transaction may take (`RecordProducer::exactly_once`).
fn commit_timeout(kafka: &KafkaConfig) -> Duration {
    kafka.request_timeout.max(Duration::from_secs(30))
}

/// Exactly-once (issue 21, item 2): a transaction opens with the first record after a
/// commit and is committed `checkpoint_interval` later, which may take up to the commit
/// timeout; the broker aborts a transaction older than the producer's
/// `transaction.timeout.ms` (librdkafka: 60 s), and with it everything published in it, in
/// silence. The interval must leave the commit its time within that timeout.
fn transaction_room(
    kafka: &KafkaConfig,
    source: &super::SourceConfig,
    key: &str,
    out: &mut Vec<Violation>,
) {
    let Ok((timeout, from)) = transaction_timeout(kafka) else {
        // Reported once, by `validate_kafka`.
        return;
    };
    if source.delivery != super::Delivery::ExactlyOnce {
        return;
    }
    let commit = commit_timeout(kafka);
    if source.checkpoint_interval + commit > timeout {
        out.push(Violation::new(
            format!("{key}.checkpoint_interval"),
            format!(
                "{} plus the time a commit may take ({} s, from `kafka.request_timeout`, at least 30 s) exceeds {from}: with `delivery = \"exactly-once\"` the broker would abort every transaction before its commit and nothing would reach a `read_committed` consumer; shorten `checkpoint_interval` to at most {} s or raise `{TRANSACTION_TIMEOUT}` in `[kafka.producer]` (the broker caps it at `transaction.max.timeout.ms`, 15 min by default)",
                humantime::format_duration(source.checkpoint_interval),
                commit.as_secs(),
                timeout.saturating_sub(commit).as_secs(),
            ),
        ));
    }
}

const TRANSACTION_TIMEOUT: &str = "transaction.timeout.ms";

/// The producers' `transaction.timeout.ms` and where it comes from (for messages), or the
/// violation of a value that is not a number of milliseconds.
fn transaction_timeout(kafka: &KafkaConfig) -> Result<(Duration, String), Violation> {
    const NAME: &str = TRANSACTION_TIMEOUT;
    // `kafka.producer` wins over `kafka.properties`.
    let set = [
        ("kafka.producer", &kafka.producer),
        ("kafka.properties", &kafka.properties),
    ]
    .into_iter()
    .find_map(|(section, map)| map.get(NAME).map(|value| (section, value)));
    match set {
        None => Ok((
            DEFAULT_TRANSACTION_TIMEOUT,
            format!("`{NAME}` (librdkafka's default, 60 s)"),
        )),
        Some((section, value)) => match value.trim().parse::<u64>() {
            Ok(ms) => Ok((
                Duration::from_millis(ms),
                format!("{section}.\"{NAME}\" ({ms} ms)"),
            )),
            Err(_) => Err(Violation::new(
                format!("{section}.\"{NAME}\""),
                format!("`{value}` is not a number of milliseconds"),
            )),
        },
    }
}

/// The problems of a pipeline but those of the `[kafka.schema_registry]` it was given
/// (`shared`): they are reported once, under `kafka.schema_registry`.
fn without_shared_registry(
    found: Vec<Violation>,
    key: &str,
    shared: Option<&super::SchemaRegistryConfig>,
) -> Vec<Violation> {
    let own = format!("{key}.schema_registry.");
    found
        .into_iter()
        .filter(|v| shared.is_none() || !v.key.starts_with(&own))
        .collect()
}

/// Why the driver refused `uri`, saying no part of its password: the driver quotes what it
/// cannot parse, and a password with a character it should have percent-encoded (`?`,
/// `/`, `#`) is cut there and quoted as a host or an option.
fn uri_error(uri: &str, error: &mongodb::error::Error) -> String {
    let Some(password) = secrets::uri_password(uri) else {
        return format!("not a valid connection string: {}", error.kind);
    };
    let unescaped = secrets::unescaped(password);
    if !unescaped.is_empty() {
        let listed: Vec<String> = unescaped
            .iter()
            .map(|(c, encoded)| format!("`{c}` (write `{encoded}`)"))
            .collect();
        return format!(
            "not a valid connection string: the user name or password holds {} unescaped; \
             percent-encode it",
            listed.join(", ")
        );
    }
    let reason = error.kind.to_string();
    if secrets::shows_part_of(&reason, password) {
        "not a valid connection string (the driver's reason is not shown: it quotes part of \
         the password)"
            .to_owned()
    } else {
        format!("not a valid connection string: {reason}")
    }
}

fn validate_mongodb(config: &Config, out: &mut Vec<Violation>) {
    let uri = &config.mongodb.uri;
    if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
        out.push(Violation::new(
            "mongodb.uri",
            "must start with `mongodb://` or `mongodb+srv://`",
        ));
    } else {
        match mongodb::options::ConnectionString::parse(uri) {
            Err(e) => out.push(Violation::new("mongodb.uri", uri_error(uri, &e))),
            Ok(parsed) => {
                if let Some(user) = user_without_password(parsed.credential.as_ref()) {
                    out.push(Violation::new(
                        "mongodb.uri",
                        format!(
                            "names the user `{user}` but no password; give the whole connection \
                             string, password included, in the environment as `MKB__MONGODB__URI`"
                        ),
                    ));
                }
            }
        }
    }
    if config.mongodb.app_name.trim().is_empty() {
        out.push(Violation::new("mongodb.app_name", "must not be empty"));
    }
    positive(
        out,
        "mongodb.connect_timeout",
        config.mongodb.connect_timeout,
        "the connection timeout",
    );
    validate_server_api(&config.mongodb, out);
}

/// The Stable API settings: a version the driver knows, and its flags only with it.
fn validate_server_api(mongo: &super::MongoConfig, out: &mut Vec<Violation>) {
    match mongo.server_api_version.as_deref() {
        Some("1") => {}
        Some(other) => out.push(Violation::new(
            "mongodb.server_api_version",
            format!("`{other}` is not a Stable API version; the only one is \"1\""),
        )),
        None => {
            for (key, set) in [
                ("mongodb.server_api_strict", mongo.server_api_strict),
                (
                    "mongodb.server_api_deprecation_errors",
                    mongo.server_api_deprecation_errors,
                ),
            ] {
                if set {
                    out.push(Violation::new(
                        key,
                        "is read only with `server_api_version = \"1\"`",
                    ));
                }
            }
        }
    }
}

/// The user of a credential whose mechanism needs a password (SCRAM, the default, or PLAIN)
/// and that has none.
fn user_without_password(credential: Option<&mongodb::options::Credential>) -> Option<&str> {
    use mongodb::options::AuthMechanism;
    let credential = credential?;
    let needs_password = matches!(
        credential.mechanism,
        None | Some(AuthMechanism::ScramSha1 | AuthMechanism::ScramSha256 | AuthMechanism::Plain)
    );
    if needs_password && credential.password.is_none() {
        credential.username.as_deref()
    } else {
        None
    }
}

/// SASL mechanisms that authenticate with `sasl.username` and `sasl.password`.
const KAFKA_PASSWORD_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// With SASL PLAIN or SCRAM, every client needs `sasl.username` and `sasl.password`; a
/// missing one is named where it would be set (`kafka.properties` unless only a
/// producer or consumer section lacks it).
fn validate_kafka_credentials(kafka: &KafkaConfig, out: &mut Vec<Violation>) {
    let effective = |role: Option<&BTreeMap<String, String>>| {
        let mut merged = kafka.properties.clone();
        merged.extend(
            role.into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        merged
    };
    let get = |map: &BTreeMap<String, String>, key: &str| {
        map.get(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut reported: Vec<String> = Vec::new();
    for (section, map) in [
        ("kafka.properties", effective(None)),
        ("kafka.producer", effective(Some(&kafka.producer))),
        ("kafka.consumer", effective(Some(&kafka.consumer))),
    ] {
        let protocol = get(&map, "security.protocol").unwrap_or_default();
        if !protocol.to_ascii_uppercase().starts_with("SASL_") {
            continue;
        }
        let mechanism = get(&map, "sasl.mechanism")
            .or_else(|| get(&map, "sasl.mechanisms"))
            .unwrap_or_else(|| "GSSAPI".to_owned())
            .to_ascii_uppercase();
        if !KAFKA_PASSWORD_MECHANISMS.contains(&mechanism.as_str()) {
            continue;
        }
        for (property, env) in [
            ("sasl.username", "MKB__KAFKA__PROPERTIES__SASL_USERNAME"),
            ("sasl.password", "MKB__KAFKA__PROPERTIES__SASL_PASSWORD"),
        ] {
            if get(&map, property).is_some() {
                continue;
            }
            let at = if get(&kafka.properties, property).is_none() {
                "kafka.properties"
            } else {
                section
            };
            let key = format!("{at}.\"{property}\"");
            if reported.contains(&key) {
                continue;
            }
            out.push(Violation::new(
                key.clone(),
                format!(
                    "is missing: `security.protocol = \"{protocol}\"` with \
                     `sasl.mechanism = \"{mechanism}\"` needs it (secrets are best given in the \
                     environment, as `{env}`)"
                ),
            ));
            reported.push(key);
        }
    }
}

fn validate_kafka(kafka: &KafkaConfig, out: &mut Vec<Violation>) {
    validate_kafka_credentials(kafka, out);
    let servers: Vec<&str> = kafka
        .bootstrap_servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if servers.is_empty() {
        out.push(Violation::new(
            "kafka.bootstrap_servers",
            "must name at least one `host:port`",
        ));
    }
    for server in servers {
        let valid = server
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            out.push(Violation::new(
                "kafka.bootstrap_servers",
                format!("`{server}` is not `host:port`"),
            ));
        }
    }
    // `properties` reach producers and consumers, so they may hold neither's reserved keys.
    for (section, map, reaches_producers, reaches_consumers) in [
        ("kafka.properties", &kafka.properties, true, true),
        ("kafka.producer", &kafka.producer, true, false),
        ("kafka.consumer", &kafka.consumer, false, true),
    ] {
        let consumer_reserved = if reaches_consumers {
            KAFKA_RESERVED_CONSUMER
        } else {
            &[]
        };
        let producer_reserved = if reaches_producers {
            KAFKA_RESERVED_PRODUCER
        } else {
            &[]
        };
        for key in map.keys() {
            let path = format!("{section}.\"{key}\"");
            if key.trim().is_empty() {
                out.push(Violation::new(path, "an empty librdkafka property name"));
                continue;
            }
            let clash = KAFKA_RESERVED_ANY
                .iter()
                .chain(consumer_reserved)
                .chain(producer_reserved)
                .find(|(name, _)| name == key);
            if let Some((_, why)) = clash {
                out.push(Violation::new(
                    path,
                    format!("is managed by the daemon: {why}"),
                ));
            }
        }
    }
    positive(
        out,
        "kafka.request_timeout",
        kafka.request_timeout,
        "the request timeout",
    );
    if let Err(violation) = transaction_timeout(kafka) {
        out.push(violation);
    }
}

fn validate_log(config: &Config, out: &mut Vec<Violation>) {
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&config.log.level) {
        out.push(Violation::new(
            "log.level",
            format!("not a valid log filter: {e}"),
        ));
    }
}

fn validate_sink<'a>(
    key: &str,
    sink: &'a SinkConfig,
    names: &mut BTreeMap<&'a str, String>,
    out: &mut Vec<Violation>,
) {
    validate_name(key, &sink.name, names, out);
    sink.validate(key, out);
}

/// Pipeline names key checkpoints and metrics, so they are unique across sources and sinks.
fn validate_name<'a>(
    key: &str,
    name: &'a str,
    names: &mut BTreeMap<&'a str, String>,
    out: &mut Vec<Violation>,
) {
    let path = format!("{key}.name");
    if name.is_empty() {
        out.push(Violation::new(path, "must not be empty"));
        return;
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        out.push(Violation::new(
            path,
            format!("`{name}` may hold only letters, digits, `-` and `_`"),
        ));
        return;
    }
    if let Some(first) = names.get(name) {
        out.push(Violation::new(
            path,
            format!("`{name}` is already the name of {first}"),
        ));
    } else {
        names.insert(name, key.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{load_str, ConfigError};
    use super::*;

    fn sources(pipelines: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        crate::config::load_str(
            &format!("[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"h:1\"\n{pipelines}"),
            std::path::Path::new("t.toml"),
        )
    }

    #[test]
    fn a_sinks_queue_capacity_loads_with_a_warning_naming_it() {
        let config = sources(
            "[[sink]]\nname = \"a\"\ntopics = [\"t\"]\ndatabase = \"d\"\nqueue_capacity = 64\n\
             [[sink]]\nname = \"b\"\ntopics = [\"t\"]\ndatabase = \"d\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let warned: Vec<String> = warnings(&config).iter().map(ToString::to_string).collect();
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("`sink[0].queue_capacity`") && warned[0].contains("no effect"),
            "{warned:?}"
        );
        let zero = sources(
            "[[sink]]\nname = \"a\"\ntopics = [\"t\"]\ndatabase = \"d\"\nqueue_capacity = 0\n",
        );
        assert!(
            matches!(&zero, Err(e) if e.to_string().contains("sink[0].queue_capacity")),
            "{zero:?}"
        );
    }

    #[test]
    fn an_exactly_once_pipeline_gets_a_checkpoint_topic_of_its_own_unless_it_names_one() {
        let config = sources(
            "[[source]]\nname = \"a\"\ndatabase = \"d\"\n\
             [[source]]\nname = \"b\"\ndatabase = \"d\"\n\
             [[source]]\nname = \"e\"\ndatabase = \"d\"\ndelivery = \"exactly-once\"\n\
             [[source]]\nname = \"f\"\ndatabase = \"d\"\ndelivery = \"exactly-once\"\ncheckpoint_topic = \"f-positions\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let topics: Vec<&str> = config
            .sources
            .iter()
            .map(|s| s.checkpoint_topic.as_str())
            .collect();
        assert_eq!(
            topics,
            [
                "mongo-kafka-bridge-checkpoints",
                "mongo-kafka-bridge-checkpoints",
                "mongo-kafka-bridge-checkpoints-e",
                "f-positions"
            ]
        );
        let legacy: Vec<Option<&str>> = config
            .sources
            .iter()
            .map(|s| s.legacy_checkpoint_topic())
            .collect();
        assert_eq!(
            legacy,
            [None, None, Some("mongo-kafka-bridge-checkpoints"), None],
            "only a defaulted exactly-once topic looks for its older checkpoints in the shared one"
        );
    }

    #[test]
    fn an_exactly_once_pipeline_sharing_a_checkpoint_topic_is_refused_naming_both() {
        let error = sources(
            "[[source]]\nname = \"a\"\ndatabase = \"d\"\ncheckpoint_topic = \"pos\"\n\
             [[source]]\nname = \"e\"\ndatabase = \"d\"\ndelivery = \"exactly-once\"\ncheckpoint_topic = \"pos\"\n",
        )
        .map(|_| ())
        .expect_err("refused");
        let text = error.to_string();
        assert!(
            text.contains("source[1].checkpoint_topic")
                && text.contains("source[0]")
                && text.contains("`a`"),
            "{text}"
        );
        // At-least-once pipelines may share one.
        assert!(sources(
            "[[source]]\nname = \"a\"\ndatabase = \"d\"\ncheckpoint_topic = \"pos\"\n\
             [[source]]\nname = \"b\"\ndatabase = \"d\"\ncheckpoint_topic = \"pos\"\n",
        )
        .is_ok());
    }

    const BASE: &str = r#"
[mongodb]
uri = "mongodb://127.0.0.1:27017"
[kafka]
bootstrap_servers = "127.0.0.1:9092"
"#;

    /// The violations of `BASE` with `extra` appended, where `base` may be edited first.
    fn violations(edit: impl Fn(&str) -> String, extra: &str) -> Vec<Violation> {
        match load_str(&format!("{}{extra}", edit(BASE)), Path::new("t.toml")) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { violations, .. }) => violations,
            Err(other) => panic!("not a validation error: {other}"),
        }
    }

    #[track_caller]
    fn invalid(extra: &str, key: &str, message: &str) {
        invalid_edit(|b| b.to_owned(), extra, key, message);
    }

    #[track_caller]
    fn invalid_edit(edit: impl Fn(&str) -> String, extra: &str, key: &str, message: &str) {
        let found = violations(edit, extra);
        assert!(
            found
                .iter()
                .any(|v| v.key == key && v.message.contains(message)),
            "expected `{key}`: {message}, got {found:?}"
        );
    }

    fn replace(from: &'static str, to: &'static str) -> impl Fn(&str) -> String {
        move |base| base.replace(from, to)
    }

    #[test]
    fn a_valid_config_has_no_violations() {
        assert_eq!(violations(|b| b.to_owned(), ""), []);
    }

    #[test]
    fn stable_api_settings() {
        let edit = |line: &'static str| {
            move |base: &str| base.replace("[mongodb]\n", &format!("[mongodb]\n{line}\n"))
        };
        assert_eq!(
            violations(
                edit("server_api_version = \"1\"\nserver_api_strict = true\nserver_api_deprecation_errors = true"),
                ""
            ),
            []
        );
        invalid_edit(
            edit("server_api_version = \"2\""),
            "",
            "mongodb.server_api_version",
            "the only one is \"1\"",
        );
        invalid_edit(
            edit("server_api_strict = true"),
            "",
            "mongodb.server_api_strict",
            "only with `server_api_version",
        );
        invalid_edit(
            edit("server_api_deprecation_errors = true"),
            "",
            "mongodb.server_api_deprecation_errors",
            "only with `server_api_version",
        );
    }

    #[test]
    fn mongodb_uri() {
        invalid_edit(
            replace("mongodb://127.0.0.1:27017", "http://db"),
            "",
            "mongodb.uri",
            "must start with `mongodb://`",
        );
        invalid_edit(
            replace("mongodb://127.0.0.1:27017", "mongodb://h:notaport"),
            "",
            "mongodb.uri",
            "not a valid connection string",
        );
        invalid_edit(
            replace(
                "mongodb://127.0.0.1:27017",
                "mongodb://u:hunter2@h:1/?maxPoolSize=banana",
            ),
            "",
            "mongodb.uri",
            "not a valid connection string",
        );
        let found = violations(
            replace("mongodb://127.0.0.1:27017", "mongodb://u:hunter2@h:x"),
            "",
        );
        assert!(!format!("{found:?}").contains("hunter2"), "{found:?}");
    }

    #[test]
    fn credentials_without_their_password_are_named() {
        invalid_edit(
            replace("mongodb://127.0.0.1:27017", "mongodb://bridge@db:27017/"),
            "",
            "mongodb.uri",
            "names the user `bridge` but no password",
        );
        for fine in [
            "mongodb://bridge:pw@db:27017/",
            "mongodb://bridge@db/?authMechanism=MONGODB-X509",
            "mongodb://db:27017/",
        ] {
            let found = violations(|b| b.replace("mongodb://127.0.0.1:27017", fine), "");
            assert_eq!(found, [], "{fine}");
        }
        let sasl = "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n";
        let found = violations(
            |b| b.to_owned(),
            &format!("{sasl}\"sasl.username\" = \"u\"\n"),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].key, "kafka.properties.\"sasl.password\"");
        assert!(
            found[0]
                .message
                .contains("MKB__KAFKA__PROPERTIES__SASL_PASSWORD"),
            "{found:?}"
        );
        invalid(sasl, "kafka.properties.\"sasl.username\"", "is missing");
        // Only the consumer lacks it (an empty override).
        invalid(
            &format!("{sasl}\"sasl.username\" = \"u\"\n\"sasl.password\" = \"p\"\n[kafka.consumer]\n\"sasl.password\" = \"\"\n"),
            "kafka.consumer.\"sasl.password\"",
            "is missing",
        );
        // GSSAPI (the default mechanism) and OAUTHBEARER need no password.
        let gssapi = "[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n";
        assert_eq!(violations(|b| b.to_owned(), gssapi), []);
        assert_eq!(
            violations(
                |b| b.to_owned(),
                &format!("{sasl}\"sasl.username\" = \"u\"\n\"sasl.password\" = \"p\"\n")
            ),
            []
        );
    }

    #[test]
    fn mongodb_app_name() {
        invalid_edit(
            replace("[mongodb]\n", "[mongodb]\napp_name = \" \"\n"),
            "",
            "mongodb.app_name",
            "must not be empty",
        );
    }

    #[test]
    fn kafka_bootstrap_servers() {
        invalid_edit(
            replace("127.0.0.1:9092", ""),
            "",
            "kafka.bootstrap_servers",
            "at least one",
        );
        invalid_edit(
            replace("127.0.0.1:9092", "a:1,b"),
            "",
            "kafka.bootstrap_servers",
            "`b` is not `host:port`",
        );
        invalid_edit(
            replace("127.0.0.1:9092", "a:99999"),
            "",
            "kafka.bootstrap_servers",
            "`a:99999`",
        );
    }

    #[test]
    fn kafka_properties_the_daemon_manages() {
        invalid(
            "[kafka.properties]\n\"bootstrap.servers\" = \"x:1\"\n",
            "kafka.properties.\"bootstrap.servers\"",
            "kafka.bootstrap_servers",
        );
        invalid(
            "[kafka.consumer]\n\"group.id\" = \"g\"\n",
            "kafka.consumer.\"group.id\"",
            "group_id",
        );
        invalid(
            "[kafka.properties]\n\"enable.auto.commit\" = true\n",
            "kafka.properties.\"enable.auto.commit\"",
            "acknowledged",
        );
        invalid(
            "[kafka.consumer]\n\"enable.auto.offset.store\" = true\n",
            "kafka.consumer.\"enable.auto.offset.store\"",
            "acknowledged",
        );
        invalid(
            "[kafka.producer]\n\"transactional.id\" = \"t\"\n",
            "kafka.producer.\"transactional.id\"",
            "exactly-once",
        );
        // Producers have no consumer group: the same key is fine there.
        assert_eq!(
            violations(|b| b.to_owned(), "[kafka.producer]\n\"group.id\" = \"g\"\n"),
            []
        );
    }

    #[test]
    fn durations_must_be_positive() {
        invalid(
            "[shutdown]\ntimeout = \"0s\"\n",
            "shutdown.timeout",
            "longer than 0",
        );
        invalid_edit(
            replace("[kafka]\n", "[kafka]\nrequest_timeout = \"0ms\"\n"),
            "",
            "kafka.request_timeout",
            "longer than 0",
        );
        invalid_edit(
            replace("[mongodb]\n", "[mongodb]\nconnect_timeout = \"0s\"\n"),
            "",
            "mongodb.connect_timeout",
            "longer than 0",
        );
    }

    #[test]
    fn log_level() {
        invalid(
            "[log]\nlevel = \"info,[[\"\n",
            "log.level",
            "not a valid log filter",
        );
    }

    #[test]
    fn pipeline_names() {
        invalid(
            "[[source]]\nname = \"\"\n",
            "source[0].name",
            "must not be empty",
        );
        invalid(
            "[[source]]\nname = \"a b\"\n",
            "source[0].name",
            "only letters",
        );
        invalid(
            "[[source]]\nname = \"x\"\n[[sink]]\nname = \"x\"\ntopics = [\"t\"]\ndatabase = \"d\"\ncollection = \"c\"\n",
            "sink[0].name",
            "already the name of source[0]",
        );
    }

    #[test]
    fn source_namespaces_and_topics() {
        invalid(
            "[[source]]\nname = \"s\"\ncollection = \"c\"\n",
            "source[0].collection",
            "needs `database`",
        );
        invalid(
            "[[source]]\nname = \"s\"\ndatabase = \"a.b\"\n",
            "source[0].database",
            "forbids",
        );
        invalid(
            "[[source]]\nname = \"s\"\ndatabase = \"d\"\ncollection = \"system.views\"\n",
            "source[0].collection",
            "system collection",
        );
        invalid(
            "[[source]]\nname = \"s\"\ndatabase = \"d\"\ncollection = \"a$b\"\n",
            "source[0].collection",
            "`$`",
        );
        invalid(
            "[[source]]\nname = \"s\"\ndatabase = \"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\"\n",
            "source[0].database",
            "63-byte",
        );
        invalid(
            "[[source]]\nname = \"s\"\ntopic_prefix = \"bad/prefix\"\n",
            "source[0].topic_prefix",
            "holds `/`",
        );
    }

    #[test]
    fn sink_topics_and_target() {
        let sink = |topics: &str, group: &str| {
            format!("[[sink]]\nname = \"s\"\ntopics = {topics}\n{group}database = \"d\"\ncollection = \"c\"\n")
        };
        invalid(&sink("[]", ""), "sink[0].topics", "at least one topic");
        invalid(
            &sink("[\"ok\", \"no way\"]", ""),
            "sink[0].topics[1]",
            "holds ` `",
        );
        invalid(
            &sink("[\"..\"]", ""),
            "sink[0].topics[0]",
            "not a topic name",
        );
        let long = format!("[\"{}\"]", "t".repeat(250));
        invalid(&sink(&long, ""), "sink[0].topics[0]", "249");
        invalid(
            &sink("[\"t\"]", "group_id = \" \"\n"),
            "sink[0].group_id",
            "must not be empty",
        );
        invalid(
            "[[sink]]\nname = \"s\"\ntopics = [\"t\"]\ndatabase = \"\"\ncollection = \"\"\n",
            "sink[0].collection",
            "must not be empty",
        );
    }

    /// Issue 21, item 2: with `checkpoint_interval = "90s"` an exactly-once pipeline opened
    /// transactions that the broker aborted at librdkafka's `transaction.timeout.ms` (60 s)
    /// before any commit: nothing reached a `read_committed` consumer, silently.
    #[test]
    fn an_exactly_once_checkpoint_interval_must_leave_room_in_the_transaction_timeout() {
        let source = |extra: &str| {
            format!("[[source]]\nname = \"s\"\ndelivery = \"exactly-once\"\n{extra}\n")
        };
        invalid(
            &source("checkpoint_interval = \"90s\""),
            "source[0].checkpoint_interval",
            "`transaction.timeout.ms`",
        );
        // A producer option moves the limit, both ways.
        invalid(
            &format!(
                "[kafka.producer]\n\"transaction.timeout.ms\" = \"40000\"\n{}",
                source("checkpoint_interval = \"20s\"")
            ),
            "source[0].checkpoint_interval",
            "kafka.producer.\"transaction.timeout.ms\"",
        );
        assert_eq!(
            violations(
                |b| b.to_owned(),
                &format!(
                    "[kafka.producer]\n\"transaction.timeout.ms\" = \"300000\"\n{}",
                    source("checkpoint_interval = \"90s\"")
                )
            ),
            []
        );
        assert_eq!(
            violations(|b| b.to_owned(), &source("checkpoint_interval = \"30s\"")),
            []
        );
        // At least once opens no transaction.
        assert_eq!(
            violations(
                |b| b.to_owned(),
                "[[source]]\nname = \"s\"\ncheckpoint_interval = \"90s\"\n"
            ),
            []
        );
        invalid(
            "[kafka.producer]\n\"transaction.timeout.ms\" = \"soon\"\n",
            "kafka.producer.\"transaction.timeout.ms\"",
            "milliseconds",
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let found = violations(
            replace("127.0.0.1:9092", "nope"),
            "[shutdown]\ntimeout = \"0s\"\n[[source]]\nname = \"\"\n",
        );
        let keys: Vec<&str> = found.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "kafka.bootstrap_servers",
                "shutdown.timeout",
                "source[0].name"
            ]
        );
        assert!(Violation::list(&found).starts_with("3 problems in the configuration:"));
    }
}
