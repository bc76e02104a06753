//! `check-config --connect`: whether the daemon could do its work with this configuration,
//! asked of the real services it names, without side effects. [`plan`] derives the list of
//! checks from the configuration (pure, unit-tested); [`run`] performs them, each network
//! call under a deadline, and gives one [`Outcome`] per check.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mongodb::bson::{doc, Document};
use mongodb::Client;
use rdkafka::admin::{AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::clients::{kafka, mongo};
use crate::codec::schema_registry::RegistryClient;
use crate::config::{
    Config, Delivery, FullDocumentBeforeChange, OutputFormat, RecordFormat, SchemaRegistryConfig,
    SourceConfig,
};
use crate::source::membership;
use crate::source::model::{Scope, StartAt};
use crate::source::reader::change_stream_options;
use crate::source::topic::TopicMapper;
use crate::source::topic_creation::{CreationRules, TopicSettings};

/// The MongoDB version that records pre-images (`changeStreamPreAndPostImages`).
const PRE_IMAGES_SINCE: u32 = 6;

/// MongoDB's `Unauthorized` error code.
const UNAUTHORIZED: i32 = 13;

/// One thing to ask of a service; `pipeline` is `source `name`` or `sink `name``.
#[derive(Debug, Clone)]
pub enum Check {
    /// Open (and close at once) the change stream of one reader with the pipeline's options.
    ChangeStream {
        /// The pipeline.
        pipeline: String,
        /// What the reader watches.
        scope: Scope,
    },
    /// The watched collections record pre-images (`full_document_before_change`).
    PreImages {
        /// The pipeline.
        pipeline: String,
        /// What the reader watches.
        scope: Scope,
    },
    /// `listCollections` on the sink's database: the user may see it (no write is tried).
    SinkDatabase {
        /// The pipeline.
        pipeline: String,
        /// The sink's `database`.
        database: String,
    },
    /// A topic a source writes: present, or created by the daemon or by the broker.
    SourceTopic {
        /// The pipeline.
        pipeline: String,
        /// The topic.
        topic: String,
        /// The source's `create_topics`.
        create_topics: bool,
        /// What `create_topics` would create it with (`topic_partitions`,
        /// `topic_replication_factor`, `topic_config`, or its `topic_creation_groups` entry's).
        settings: TopicSettings,
    },
    /// A topic a sink reads: present.
    SinkTopic {
        /// The pipeline.
        pipeline: String,
        /// The topic.
        topic: String,
    },
    /// A source's checkpoint topic: present, or creatable by the daemon.
    CheckpointTopic {
        /// The pipeline.
        pipeline: String,
        /// The topic.
        topic: String,
        /// The partitions the daemon creates it with (`slots`).
        partitions: i32,
    },
    /// An exactly-once source's transactional ids: a throwaway id with its prefix initialised.
    Transactions {
        /// The pipeline.
        pipeline: String,
        /// What every transactional id of the pipeline starts with.
        prefix: String,
    },
    /// A consumer group described through its coordinator.
    ConsumerGroup {
        /// The pipeline.
        pipeline: String,
        /// The group id.
        group: String,
    },
    /// A schema registry answering `GET /subjects` with its credentials.
    Registry {
        /// The pipeline.
        pipeline: String,
        /// The registry.
        registry: SchemaRegistryConfig,
    },
}

impl Check {
    /// Whether the check asks MongoDB (else Kafka or a registry).
    fn is_mongo(&self) -> bool {
        matches!(
            self,
            Self::ChangeStream { .. } | Self::PreImages { .. } | Self::SinkDatabase { .. }
        )
    }

    /// Whether the check asks Kafka.
    fn is_kafka(&self) -> bool {
        !self.is_mongo() && !matches!(self, Self::Registry { .. })
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ChangeStream { pipeline, scope } => {
                write!(f, "{pipeline}: change stream on {}", scope_name(scope))
            }
            Self::PreImages { pipeline, scope } => write!(
                f,
                "{pipeline}: full_document_before_change: pre-images of {}",
                scope_name(scope)
            ),
            Self::SinkDatabase { pipeline, database } => {
                write!(f, "{pipeline}: database: listCollections on `{database}`")
            }
            Self::SourceTopic {
                pipeline, topic, ..
            } => write!(f, "{pipeline}: topic `{topic}`"),
            Self::SinkTopic { pipeline, topic } => write!(f, "{pipeline}: topics: `{topic}`"),
            Self::CheckpointTopic {
                pipeline, topic, ..
            } => write!(f, "{pipeline}: checkpoint_topic `{topic}`"),
            Self::Transactions { pipeline, prefix } => write!(
                f,
                "{pipeline}: delivery = exactly-once: transactional ids `{prefix}*`"
            ),
            Self::ConsumerGroup { pipeline, group } => {
                write!(f, "{pipeline}: consumer group `{group}`")
            }
            Self::Registry { pipeline, registry } => {
                write!(f, "{pipeline}: schema_registry at {}", registry.url)
            }
        }
    }
}

fn scope_name(scope: &Scope) -> String {
    match scope {
        Scope::Deployment => "the whole deployment".to_owned(),
        Scope::Database { db, .. } => format!("database `{db}`"),
        Scope::Collection { db, coll } => format!("`{db}.{coll}`"),
    }
}

fn source_label(source: &SourceConfig) -> String {
    format!("source `{}`", source.name)
}

/// Whether a source format goes through a schema registry.
fn source_uses_registry(format: OutputFormat) -> bool {
    format.uses_registry()
}

/// Whether a sink format goes through a schema registry.
fn sink_uses_registry(format: RecordFormat) -> bool {
    matches!(
        format,
        RecordFormat::Avro | RecordFormat::JsonSchema | RecordFormat::Protobuf
    )
}

/// The checks `check-config --connect` runs for `config` (loaded, so checkpoint topics and
/// shared registries are filled in), MongoDB's first, then Kafka's, then the registries'.
pub fn plan(config: &Config) -> Vec<Check> {
    let mut mongo = Vec::new();
    let mut kafka = Vec::new();
    let mut registries = Vec::new();
    for source in &config.sources {
        let pipeline = source_label(source);
        let scopes = Scope::of(source);
        for scope in &scopes {
            mongo.push(Check::ChangeStream {
                pipeline: pipeline.clone(),
                scope: scope.clone(),
            });
            if source.full_document_before_change != FullDocumentBeforeChange::Off {
                mongo.push(Check::PreImages {
                    pipeline: pipeline.clone(),
                    scope: scope.clone(),
                });
            }
        }
        let mut topics = BTreeSet::new();
        // Topics of database- and deployment-level streams are named by the events' namespaces:
        // they cannot be known beforehand.
        if let Ok(mapper) = TopicMapper::new(source) {
            for scope in &scopes {
                if let Scope::Collection { db, coll } = scope {
                    topics.insert(mapper.topic(db, Some(coll)));
                }
            }
        }
        if source.heartbeat_interval.is_some() {
            topics.insert(source.heartbeat_topic.clone());
        }
        topics.extend(source.errors.dead_letter_topic.clone());
        // Validation reported a regex that does not compile: the pipeline's own settings then.
        let rules = CreationRules::new(source).ok();
        for topic in topics {
            let settings = match &rules {
                Some(rules) => rules.settings(&topic).clone(),
                None => TopicSettings {
                    group: None,
                    partitions: source.topic_partitions,
                    replication_factor: source.topic_replication_factor,
                    config: source.topic_config.clone(),
                },
            };
            kafka.push(Check::SourceTopic {
                pipeline: pipeline.clone(),
                topic,
                create_topics: source.create_topics,
                settings,
            });
        }
        kafka.push(Check::CheckpointTopic {
            pipeline: pipeline.clone(),
            topic: source.checkpoint_topic.clone(),
            partitions: i32::try_from(source.slots).unwrap_or(i32::MAX),
        });
        if source.delivery == Delivery::ExactlyOnce {
            kafka.push(Check::Transactions {
                pipeline: pipeline.clone(),
                prefix: format!("mongo-kafka-bridge-{}-", source.name),
            });
        }
        kafka.push(Check::ConsumerGroup {
            pipeline: pipeline.clone(),
            group: membership::group_id(&source.name),
        });
        let formats = [source.key_format(), source.value_format()];
        if formats.into_iter().any(source_uses_registry) {
            if let Some(registry) = &source.schema_registry {
                registries.push(Check::Registry {
                    pipeline,
                    registry: registry.clone(),
                });
            }
        }
    }
    for sink in &config.sinks {
        let pipeline = format!("sink `{}`", sink.name);
        mongo.push(Check::SinkDatabase {
            pipeline: pipeline.clone(),
            database: sink.database.clone(),
        });
        for topic in &sink.topics {
            kafka.push(Check::SinkTopic {
                pipeline: pipeline.clone(),
                topic: topic.clone(),
            });
        }
        kafka.push(Check::ConsumerGroup {
            pipeline: pipeline.clone(),
            group: sink.effective_group_id(),
        });
        let formats = [sink.key_format, sink.value_format];
        if formats.into_iter().any(sink_uses_registry) {
            if let Some(registry) = &sink.schema_registry {
                registries.push(Check::Registry {
                    pipeline,
                    registry: registry.clone(),
                });
            }
        }
    }
    mongo.into_iter().chain(kafka).chain(registries).collect()
}

/// How one check went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed; what was found.
    Ok(String),
    /// The daemon could not do this part of its work: why.
    Problem(String),
    /// Not asked, because the service did not answer at all (that is a problem of its own).
    Skipped(String),
}

/// The lines `check-config --connect` prints: one per check or problem, then a summary.
/// The second value says whether any problem was found.
pub fn report(outcomes: &[Outcome]) -> (Vec<String>, bool) {
    let mut lines = Vec::with_capacity(outcomes.len() + 1);
    let (mut ok, mut problems, mut skipped) = (0, 0, 0);
    for outcome in outcomes {
        match outcome {
            Outcome::Ok(what) => {
                ok += 1;
                lines.push(format!("ok: {what}"));
            }
            Outcome::Problem(what) => {
                problems += 1;
                lines.push(format!("problem: {what}"));
            }
            Outcome::Skipped(what) => {
                skipped += 1;
                lines.push(format!("skipped: {what}"));
            }
        }
    }
    lines.push(format!(
        "{ok} checks passed, {problems} problem{}, {skipped} skipped",
        if problems == 1 { "" } else { "s" }
    ));
    (lines, problems > 0)
}

/// Runs every check of [`plan`] against the services `config` names.
pub async fn run(config: &Config) -> Vec<Outcome> {
    let checks = plan(config);
    let mut outcomes = Vec::new();
    let mongo_checks: Vec<&Check> = checks.iter().filter(|c| c.is_mongo()).collect();
    outcomes.extend(run_mongo(config, &mongo_checks).await);
    let kafka_checks: Vec<&Check> = checks.iter().filter(|c| c.is_kafka()).collect();
    outcomes.extend(run_kafka(config, &kafka_checks).await);
    for check in &checks {
        if let Check::Registry { registry, .. } = check {
            outcomes.push(ask_registry(check, registry).await);
        }
    }
    outcomes
}

/// The deadline of one MongoDB call: server selection waits `connect_timeout` already.
fn mongo_deadline(config: &Config) -> Duration {
    config.mongodb.connect_timeout + Duration::from_secs(5)
}

async fn within<T>(
    deadline: Duration,
    what: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(deadline, what)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                humantime::format_duration(deadline)
            ))
        })
}

async fn run_mongo(config: &Config, checks: &[&Check]) -> Vec<Outcome> {
    let deadline = mongo_deadline(config);
    let hosts = mongo::hosts(&config.mongodb);
    let connected = within(deadline, async {
        let client = mongo::connect(&config.mongodb)
            .await
            .map_err(|e| e.to_string())?;
        mongo::ping(&client, &config.mongodb)
            .await
            .map_err(|e| e.to_string())?;
        Ok(client)
    })
    .await;
    let client = match connected {
        Ok(client) => client,
        Err(e) => {
            let mut outcomes = vec![Outcome::Problem(format!(
                "mongodb.uri: MongoDB at {hosts} does not answer: {e}"
            ))];
            outcomes.extend(
                checks
                    .iter()
                    .map(|c| Outcome::Skipped(format!("{c} (MongoDB does not answer)"))),
            );
            return outcomes;
        }
    };
    let mut outcomes = vec![Outcome::Ok(format!(
        "mongodb.uri: MongoDB at {hosts} answers"
    ))];
    let version = within(deadline, server_version(&client)).await;
    for check in checks {
        let outcome = match check {
            Check::ChangeStream { pipeline, scope } => {
                let source = source_named(config, pipeline);
                match source {
                    Some(source) => {
                        open_change_stream(&client, source, scope, deadline, check).await
                    }
                    None => Outcome::Skipped(check.to_string()),
                }
            }
            Check::PreImages { scope, .. } => {
                pre_images(&client, scope, &version, deadline, check).await
            }
            Check::SinkDatabase { database, .. } => {
                let listed = within(deadline, async {
                    client
                        .database(database)
                        .list_collection_names()
                        .await
                        .map_err(|e| mongo_error(&e))
                })
                .await;
                match listed {
                    Ok(names) => Outcome::Ok(format!(
                        "{check}: {} collections (writes are not tried)",
                        names.len()
                    )),
                    Err(e) => Outcome::Problem(format!("{check}: refused: {e}")),
                }
            }
            _ => continue,
        };
        outcomes.push(outcome);
    }
    outcomes
}

fn source_named<'a>(config: &'a Config, pipeline: &str) -> Option<&'a SourceConfig> {
    config.sources.iter().find(|s| source_label(s) == pipeline)
}

/// The server's version, as its major and the whole text.
async fn server_version(client: &Client) -> Result<(u32, String), String> {
    let info = client
        .database("admin")
        .run_command(doc! { "buildInfo": 1 })
        .await
        .map_err(|e| mongo_error(&e))?;
    let text = info
        .get_str("version")
        .map_err(|e| format!("buildInfo has no version: {e}"))?
        .to_owned();
    let major = text
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("buildInfo version `{text}` is not a version"))?;
    Ok((major, text))
}

async fn open_change_stream(
    client: &Client,
    source: &SourceConfig,
    scope: &Scope,
    deadline: Duration,
    check: &Check,
) -> Outcome {
    let stages = match source.stages() {
        Ok(stages) => stages,
        Err(e) => return Outcome::Problem(format!("{check}: pipeline: {e}")),
    };
    let options = change_stream_options(source, &StartAt::Latest);
    let opened = tokio::time::timeout(deadline, async {
        // Each stream is closed (its cursor killed) when dropped, at once.
        match scope {
            Scope::Deployment => client
                .watch()
                .pipeline(stages)
                .with_options(options)
                .await
                .map(drop),
            Scope::Database { db, .. } => client
                .database(db)
                .watch()
                .pipeline(stages)
                .with_options(options)
                .await
                .map(drop),
            Scope::Collection { db, coll } => client
                .database(db)
                .collection::<Document>(coll)
                .watch()
                .pipeline(stages)
                .with_options(options)
                .await
                .map(drop),
        }
    })
    .await;
    match opened {
        Ok(Ok(())) => Outcome::Ok(format!("{check}: opened and closed")),
        Ok(Err(e)) if command_code(&e) == UNAUTHORIZED => Outcome::Problem(format!(
            "{check}: the user may not open it: {}",
            mongo_error(&e)
        )),
        Ok(Err(e)) => Outcome::Problem(format!("{check}: opening it failed: {}", mongo_error(&e))),
        Err(_) => Outcome::Problem(format!(
            "{check}: no answer within {}",
            humantime::format_duration(deadline)
        )),
    }
}

/// A driver error in one line: a command error as its code, name and message (the driver's
/// own text adds the raw server answer).
fn mongo_error(error: &mongodb::error::Error) -> String {
    match &*error.kind {
        mongodb::error::ErrorKind::Command(command) => format!(
            "error {} ({}): {}",
            command.code, command.code_name, command.message
        ),
        _ => error.to_string(),
    }
}

fn command_code(error: &mongodb::error::Error) -> i32 {
    match &*error.kind {
        mongodb::error::ErrorKind::Command(command) => command.code,
        _ => 0,
    }
}

async fn pre_images(
    client: &Client,
    scope: &Scope,
    version: &Result<(u32, String), String>,
    deadline: Duration,
    check: &Check,
) -> Outcome {
    match version {
        Err(e) => return Outcome::Problem(format!("{check}: the server's version: {e}")),
        Ok((major, text)) if *major < PRE_IMAGES_SINCE => {
            return Outcome::Problem(format!(
                "{check}: pre-images are not supported by the server (MongoDB {text}; \
                 they need {PRE_IMAGES_SINCE}.0 or newer)"
            ))
        }
        Ok(_) => {}
    }
    let (db, filter, regex) = match scope {
        Scope::Deployment => {
            return Outcome::Ok(format!(
                "{check}: the server records pre-images; each collection's \
                 changeStreamPreAndPostImages is not checked for a whole deployment"
            ))
        }
        Scope::Database {
            db,
            collection_regex,
        } => (db, doc! {}, collection_regex.as_deref()),
        Scope::Collection { db, coll } => (db, doc! { "name": coll.as_str() }, None),
    };
    let listed = within(deadline, async {
        let mut cursor = client
            .database(db)
            .list_collections()
            .filter(filter)
            .await
            .map_err(|e| mongo_error(&e))?;
        let mut specs = Vec::new();
        while cursor.advance().await.map_err(|e| mongo_error(&e))? {
            specs.push(
                cursor
                    .deserialize_current()
                    .map_err(|e| format!("listCollections answer: {e}"))?,
            );
        }
        Ok(specs)
    })
    .await;
    let specs = match listed {
        Ok(specs) => specs,
        Err(e) => return Outcome::Problem(format!("{check}: listCollections: {e}")),
    };
    let pattern = regex.and_then(|r| regex::Regex::new(r).ok());
    let lacking: Vec<String> = specs
        .iter()
        .filter(|s| pattern.as_ref().is_none_or(|p| p.is_match(&s.name)))
        .filter(|s| {
            !s.options
                .change_stream_pre_and_post_images
                .as_ref()
                .is_some_and(|o| o.enabled)
        })
        .map(|s| format!("`{db}.{}`", s.name))
        .collect();
    if matches!(scope, Scope::Collection { .. }) && specs.is_empty() {
        return Outcome::Problem(format!(
            "{check}: the collection does not exist, so it cannot record pre-images"
        ));
    }
    if lacking.is_empty() {
        Outcome::Ok(format!("{check}: changeStreamPreAndPostImages enabled"))
    } else {
        Outcome::Problem(format!(
            "{check}: changeStreamPreAndPostImages is not enabled on {} \
             (collMod with changeStreamPreAndPostImages: {{enabled: true}})",
            lacking.join(", ")
        ))
    }
}

/// Runs a blocking librdkafka call off the runtime's threads, under `deadline`.
async fn blocking<T: Send + 'static>(
    deadline: Duration,
    call: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    within(deadline, async {
        tokio::task::spawn_blocking(call)
            .await
            .map_err(|e| format!("the check's thread failed: {e}"))?
    })
    .await
}

/// What Kafka told once, for every Kafka check.
struct Cluster {
    topics: BTreeSet<String>,
    /// The broker's `auto.create.topics.enable`, or why it is unknown.
    auto_create: Result<bool, String>,
}

async fn run_kafka(config: &Config, checks: &[&Check]) -> Vec<Outcome> {
    let kafka_config = &config.kafka;
    let timeout = kafka_config.request_timeout;
    // Every call gets the client's own timeout plus a margin, after which it is given up.
    let deadline = timeout + Duration::from_secs(5);
    let servers = &kafka_config.bootstrap_servers;
    let reachable = within(deadline, async {
        kafka::check(kafka_config).await.map_err(|e| e.to_string())
    })
    .await;
    if let Err(e) = reachable {
        let mut outcomes = vec![Outcome::Problem(format!(
            "kafka.bootstrap_servers: Kafka at {servers} does not answer: {e}"
        ))];
        outcomes.extend(
            checks
                .iter()
                .map(|c| Outcome::Skipped(format!("{c} (Kafka does not answer)"))),
        );
        return outcomes;
    }
    let mut outcomes = vec![Outcome::Ok(format!(
        "kafka.bootstrap_servers: Kafka at {servers} answers"
    ))];
    let cluster = match cluster(config, deadline).await {
        Ok(cluster) => cluster,
        Err(e) => {
            outcomes.push(Outcome::Problem(format!(
                "kafka.bootstrap_servers: fetching the topics: {e}"
            )));
            return outcomes;
        }
    };
    for check in checks {
        outcomes.push(kafka_check(config, &cluster, check, deadline).await);
    }
    outcomes
}

async fn cluster(config: &Config, deadline: Duration) -> Result<Cluster, String> {
    let cfg = kafka::client_config(&config.kafka, kafka::Role::Admin);
    let timeout = config.kafka.request_timeout;
    let (topics, broker) = blocking(deadline, move || {
        let client: BaseProducer = cfg.create().map_err(|e| e.to_string())?;
        let metadata = client
            .client()
            .fetch_metadata(None, timeout)
            .map_err(|e| e.to_string())?;
        let topics: BTreeSet<String> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| t.name().to_owned())
            .collect();
        Ok((topics, metadata.brokers().first().map(|b| b.id())))
    })
    .await?;
    let auto_create = match broker {
        Some(id) => auto_create(config, id, deadline).await,
        None => Err("the cluster lists no broker".to_owned()),
    };
    Ok(Cluster {
        topics,
        auto_create,
    })
}

async fn auto_create(config: &Config, broker: i32, deadline: Duration) -> Result<bool, String> {
    let admin = kafka::admin(&config.kafka).map_err(|e| e.to_string())?;
    let options = admin_options(config);
    let results = within(deadline, async {
        admin
            .describe_configs(&[ResourceSpecifier::Broker(broker)], &options)
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    let resource = results
        .into_iter()
        .next()
        .ok_or("no answer")?
        .map_err(|code| format!("describing broker {broker}'s configuration: {code}"))?;
    let value = resource
        .get("auto.create.topics.enable")
        .and_then(|entry| entry.value.clone())
        .ok_or("the broker does not say its auto.create.topics.enable")?;
    Ok(value == "true")
}

fn admin_options(config: &Config) -> AdminOptions {
    let timeout = config.kafka.request_timeout;
    AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout))
}

/// Asks the broker whether it would create `topic` (`validate_only`: nothing is created).
async fn creatable(
    config: &Config,
    topic: &str,
    settings: &TopicSettings,
    deadline: Duration,
) -> Result<(), String> {
    let admin = kafka::admin(&config.kafka).map_err(|e| e.to_string())?;
    let options = admin_options(config).validate_only(true);
    let new = settings.config.iter().fold(
        NewTopic::new(
            topic,
            settings.partitions,
            TopicReplication::Fixed(settings.replication_factor),
        ),
        |new, (key, value)| new.set(key, value),
    );
    let results = within(deadline, async {
        admin
            .create_topics(&[new], &options)
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    match results.into_iter().next() {
        Some(Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(()),
        Some(Err((_, code))) => Err(format!("the broker refuses to create it: {code}")),
        None => Err("the broker did not answer about it".to_owned()),
    }
}

async fn kafka_check(
    config: &Config,
    cluster: &Cluster,
    check: &Check,
    deadline: Duration,
) -> Outcome {
    match check {
        Check::SourceTopic {
            topic,
            create_topics,
            settings,
            ..
        } => {
            if cluster.topics.contains(topic) {
                return Outcome::Ok(format!("{check}: present"));
            }
            if *create_topics {
                return match creatable(config, topic, settings, deadline).await {
                    Ok(()) => Outcome::Ok(format!(
                        "{check}: missing; the daemon creates it (create_topics)"
                    )),
                    Err(e) => Outcome::Problem(format!(
                        "{check}: missing, and create_topics cannot create it: {e}"
                    )),
                };
            }
            match &cluster.auto_create {
                Ok(true) => Outcome::Ok(format!(
                    "{check}: missing; the broker creates it on first use (auto.create.topics.enable)"
                )),
                Ok(false) => Outcome::Problem(format!(
                    "{check}: missing, and neither create_topics nor the broker's \
                     auto.create.topics.enable creates it"
                )),
                Err(e) => Outcome::Problem(format!(
                    "{check}: missing, create_topics is off, and whether the broker creates \
                     it is unknown: {e}"
                )),
            }
        }
        Check::SinkTopic { topic, .. } => {
            if cluster.topics.contains(topic) {
                Outcome::Ok(format!("{check}: present"))
            } else {
                Outcome::Problem(format!("{check}: the topic does not exist"))
            }
        }
        Check::CheckpointTopic {
            topic, partitions, ..
        } => {
            if cluster.topics.contains(topic) {
                return Outcome::Ok(format!("{check}: present"));
            }
            // The daemon creates it with the broker's default replication factor.
            let settings = TopicSettings {
                group: None,
                partitions: *partitions,
                replication_factor: -1,
                config: Default::default(),
            };
            match creatable(config, topic, &settings, deadline).await {
                Ok(()) => Outcome::Ok(format!("{check}: missing; the daemon creates it")),
                Err(e) => Outcome::Problem(format!(
                    "{check}: missing, and the daemon cannot create it: {e}"
                )),
            }
        }
        Check::Transactions { prefix, .. } => transactions(config, prefix, deadline, check).await,
        Check::ConsumerGroup { group, .. } => {
            let cfg = kafka::client_config(&config.kafka, kafka::Role::Admin);
            let timeout = config.kafka.request_timeout;
            let group = group.clone();
            let described = blocking(deadline, move || {
                let client: BaseProducer = cfg.create().map_err(|e| e.to_string())?;
                let list = client
                    .client()
                    .fetch_group_list(Some(&group), timeout)
                    .map_err(|e| e.to_string())?;
                Ok(list
                    .groups()
                    .first()
                    .map(|g| (g.state().to_owned(), g.members().len())))
            })
            .await;
            match described {
                Ok(Some((state, members))) => Outcome::Ok(format!(
                    "{check}: described through its coordinator ({state}, {members} members)"
                )),
                Ok(None) => Outcome::Ok(format!("{check}: described through its coordinator")),
                Err(e) => Outcome::Problem(format!("{check}: cannot be described: {e}")),
            }
        }
        _ => Outcome::Skipped(check.to_string()),
    }
}

/// Initialises a throwaway transactional id with the pipeline's prefix, never one of its
/// own: that would fence a running daemon.
async fn transactions(config: &Config, prefix: &str, deadline: Duration, check: &Check) -> Outcome {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let id = format!("{prefix}check-{}-{nanos}", std::process::id());
    let producer = match kafka::transactional_producer(&config.kafka, &id) {
        Ok(producer) => producer,
        Err(e) => return Outcome::Problem(format!("{check}: {e}")),
    };
    let timeout = config.kafka.request_timeout;
    let initialised = blocking(deadline, move || {
        producer
            .init_transactions(timeout)
            .map_err(|e| e.to_string())
    })
    .await;
    match initialised {
        Ok(()) => Outcome::Ok(format!(
            "{check}: the transaction coordinator initialised `{id}`"
        )),
        Err(e) => Outcome::Problem(format!("{check}: initialising `{id}`: {e}")),
    }
}

async fn ask_registry(check: &Check, registry: &SchemaRegistryConfig) -> Outcome {
    let client = match RegistryClient::new(registry) {
        Ok(client) => client,
        Err(e) => return Outcome::Problem(format!("{check}: {e}")),
    };
    // Connecting and reading each wait `timeout`.
    let deadline = registry.timeout * 2 + Duration::from_secs(1);
    let answered = match tokio::time::timeout(deadline, client.subjects()).await {
        Ok(answer) => answer.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {deadline:?}")),
    };
    match answered {
        Ok(subjects) => Outcome::Ok(format!("{check}: answers ({subjects} subjects)")),
        Err(e) => Outcome::Problem(format!("{check}: {e}")),
    }
}

/// `check-config --connect`: prints one line per check, then a summary; true when every
/// check passed.
pub fn check(config: &Config) -> Result<bool, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let outcomes = runtime.block_on(run(config));
    let (lines, problems) = report(&outcomes);
    for line in lines {
        println!("{line}");
    }
    Ok(!problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[mongodb]\nuri = \"mongodb://127.0.0.1:1\"\n[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\n{extra}"
        );
        crate::config::load_str(&text, std::path::Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_source_is_checked_for_its_streams_topics_checkpoints_and_group() {
        let checks = plan(&config(
            "[[source]]\nname = \"o\"\ndatabase = \"shop\"\ncollection = [\"a\", \"b\"]\n",
        ));
        let lines: Vec<String> = checks.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "source `o`: change stream on `shop.a`",
                "source `o`: change stream on `shop.b`",
                "source `o`: topic `shop.a`",
                "source `o`: topic `shop.b`",
                "source `o`: checkpoint_topic `mongo-kafka-bridge-checkpoints`",
                "source `o`: consumer group `mongo-kafka-bridge-source-o`",
            ]
        );
    }

    #[test]
    fn exactly_once_pre_images_and_registries_add_their_checks() {
        let checks = plan(&config(
            "[kafka.schema_registry]\nurl = \"http://127.0.0.1:1\"\n\
             [[source]]\nname = \"o\"\ndatabase = \"shop\"\ncollection = \"a\"\n\
             delivery = \"exactly-once\"\nfull_document_before_change = \"required\"\n\
             format = \"avro\"\n",
        ));
        let lines: Vec<String> = checks.iter().map(ToString::to_string).collect();
        for expected in [
            "source `o`: full_document_before_change: pre-images of `shop.a`",
            "source `o`: delivery = exactly-once: transactional ids `mongo-kafka-bridge-o-*`",
            "source `o`: checkpoint_topic `mongo-kafka-bridge-checkpoints-o`",
        ] {
            assert!(
                lines.iter().any(|l| l == expected),
                "{expected} in {lines:#?}"
            );
        }
        assert!(checks
            .iter()
            .any(|c| matches!(c, Check::CheckpointTopic { partitions: 16, .. })));
        assert!(checks
            .iter()
            .any(|c| matches!(c, Check::Registry { registry, .. } if registry.url == "http://127.0.0.1:1")));
    }

    #[test]
    fn a_sink_is_checked_for_its_database_topics_group_and_registry() {
        let checks = plan(&config(
            "[[sink]]\nname = \"s\"\ntopics = [\"t1\", \"t2\"]\ndatabase = \"d\"\n",
        ));
        let lines: Vec<String> = checks.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "sink `s`: database: listCollections on `d`",
                "sink `s`: topics: `t1`",
                "sink `s`: topics: `t2`",
                "sink `s`: consumer group `mongo-kafka-bridge-s`",
            ]
        );
        // JSON needs no registry, even when one is configured.
        let checks = plan(&config(
            "[kafka.schema_registry]\nurl = \"http://127.0.0.1:1\"\n\
             [[sink]]\nname = \"s\"\ntopics = [\"t\"]\ndatabase = \"d\"\n",
        ));
        assert!(!checks.iter().any(|c| matches!(c, Check::Registry { .. })));
    }

    #[test]
    fn the_report_has_a_line_per_outcome_and_a_summary() {
        let (lines, problems) = report(&[
            Outcome::Ok("a".to_owned()),
            Outcome::Problem("b".to_owned()),
            Outcome::Skipped("c".to_owned()),
        ]);
        assert!(problems);
        assert_eq!(
            lines,
            [
                "ok: a",
                "problem: b",
                "skipped: c",
                "1 checks passed, 1 problem, 1 skipped"
            ]
        );
        let (_, problems) = report(&[Outcome::Ok("a".to_owned())]);
        assert!(!problems);
    }
}
