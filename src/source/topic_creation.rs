//! Which settings a topic is created with, whether it still needs creating, and what the
//! broker's answer to its creation means. Pure; the admin calls are in `topic_creator.rs`.
//!
//! The rules, as Kafka Connect's `topic.creation.*` (`TopicCreationGroup`,
//! `AbstractWorkerSourceTask::maybeCreateTopic`):
//! - With `create_topics`, every topic a pipeline writes to (a collection's, one a
//!   database-wide or deployment-wide stream names from an event's namespace, the heartbeat
//!   and dead letter topics) is created before its first record. A topic that exists already
//!   is left as it is.
//! - `topic_creation_groups` are tried in the order written: a topic belongs to the first whose
//!   `include` regexes match its whole name (one of them) and whose `exclude` regexes do not
//!   (any of them); `exclude` wins.
//! - A group's topic takes the group's `partitions` and `replication_factor`, or the
//!   pipeline's `topic_partitions` and `topic_replication_factor` where the group gives none,
//!   and the group's `config` alone: `topic_config` is not merged in, as Connect's groups do
//!   not take the default group's topic configs. A topic no group takes gets
//!   `topic_partitions`, `topic_replication_factor` and `topic_config`.
//! - The broker's answer ([`outcome`]): created, or "already exists", and the topic is known
//!   from then on; refused for good (not authorised, a policy, a config or partition count the
//!   broker rejects) and the pipeline stops naming the topic and the reason, as Connect fails
//!   the task ("Ensure that the task is authorized to create topics or that the topic exists
//!   and restart the task"); anything else (a timeout, a broker away) is retried by the
//!   pipeline's restart with backoff, as Connect retries a `RetriableException`.
//! - A topic known to exist is not asked about again while the pipeline runs: [`KnownTopics`]
//!   holds one entry per topic name (Kafka caps a name at 249 bytes), so it grows with the
//!   topics the pipeline wrote to since its launch, which the namespaces it watches bound; a
//!   restart of the pipeline starts it empty.

use std::collections::{BTreeMap, HashSet};

use rdkafka::types::RDKafkaErrorCode;
use regex::Regex;

use crate::config::SourceConfig;

/// What a topic is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSettings {
    /// The group that gave the settings; `None` for the pipeline's own.
    pub group: Option<String>,
    /// Its partition count.
    pub partitions: i32,
    /// Its replication factor.
    pub replication_factor: i32,
    /// Its topic configs.
    pub config: BTreeMap<String, String>,
}

#[derive(Debug)]
struct GroupRule {
    /// `None`: the group lists no `include` and takes no topic.
    include: Option<Regex>,
    exclude: Option<Regex>,
    settings: TopicSettings,
}

/// The settings of each topic a pipeline creates.
#[derive(Debug)]
pub struct CreationRules {
    default: TopicSettings,
    groups: Vec<GroupRule>,
}

/// One regex matching a whole name when any of `regexes` does; `None` for none.
fn whole_name(regexes: &[String]) -> Result<Option<Regex>, regex::Error> {
    if regexes.is_empty() {
        return Ok(None);
    }
    let any = regexes
        .iter()
        .map(|r| format!("(?:{r})"))
        .collect::<Vec<_>>()
        .join("|");
    Regex::new(&format!("^(?:{any})$")).map(Some)
}

impl CreationRules {
    /// The rules of a pipeline; a regex that does not compile is an error naming its group
    /// (validation reports it first, with its key).
    pub fn new(config: &SourceConfig) -> Result<Self, String> {
        let default = TopicSettings {
            group: None,
            partitions: config.topic_partitions,
            replication_factor: config.topic_replication_factor,
            config: config.topic_config.clone(),
        };
        let groups = config
            .topic_creation_groups
            .iter()
            .map(|group| {
                let named =
                    |e: regex::Error| format!("topic_creation_groups `{}`: {e}", group.name);
                Ok(GroupRule {
                    include: whole_name(&group.include).map_err(named)?,
                    exclude: whole_name(&group.exclude).map_err(named)?,
                    settings: TopicSettings {
                        group: Some(group.name.clone()),
                        partitions: group.partitions.unwrap_or(default.partitions),
                        replication_factor: group
                            .replication_factor
                            .unwrap_or(default.replication_factor),
                        config: group.config.clone(),
                    },
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { default, groups })
    }

    /// The settings `topic` is created with (see the module's rules).
    pub fn settings(&self, topic: &str) -> &TopicSettings {
        self.groups
            .iter()
            .find(|g| {
                g.include.as_ref().is_some_and(|i| i.is_match(topic))
                    && !g.exclude.as_ref().is_some_and(|e| e.is_match(topic))
            })
            .map_or(&self.default, |g| &g.settings)
    }
}

/// The topics known to exist: created, or found existing.
#[derive(Debug, Default)]
pub struct KnownTopics {
    names: HashSet<String>,
}

impl KnownTopics {
    /// Whether `topic` must be created (or found existing) before a record goes to it.
    pub fn needs_creating(&self, topic: &str) -> bool {
        !self.names.contains(topic)
    }

    /// `topic` exists from now on.
    pub fn exists(&mut self, topic: &str) {
        if self.needs_creating(topic) {
            self.names.insert(topic.to_owned());
        }
    }

    /// How many topics are known.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// No topic is known yet.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// What the broker's answer to a topic's creation means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The broker created it.
    Created,
    /// It existed already: left as it is.
    Existed,
    /// Refused for good: the pipeline stops, naming the topic and the reason.
    Refused,
    /// Not answered (a timeout, a broker away): the pipeline restarts with backoff.
    Unavailable,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Existed => "existed",
            Self::Refused => "refused",
            Self::Unavailable => "unavailable",
        }
    }
}

/// What the broker's answer `result` to one topic's creation means.
pub fn outcome(result: Result<(), RDKafkaErrorCode>) -> Outcome {
    match result {
        Ok(()) => Outcome::Created,
        Err(RDKafkaErrorCode::TopicAlreadyExists) => Outcome::Existed,
        Err(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::InvalidConfig
            | RDKafkaErrorCode::InvalidPartitions
            | RDKafkaErrorCode::InvalidReplicationFactor
            | RDKafkaErrorCode::InvalidReplicaAssignment
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidRequest,
        ) => Outcome::Refused,
        Err(_) => Outcome::Unavailable,
    }
}

/// Whether a refusal may only mean this principal may not create topics: the topic may
/// exist already (Connect asks first), which is then enough.
pub fn may_exist_anyway(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(extra: &str) -> CreationRules {
        let text = format!(
            "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"h:1\"\n[[source]]\nname = \"s\"\ncreate_topics = true\ntopic_partitions = 3\ntopic_config = {{ \"cleanup.policy\" = \"compact\" }}\n{extra}\n"
        );
        let config = crate::config::load_str(&text, std::path::Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        CreationRules::new(&config.sources[0]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn without_groups_every_topic_takes_the_pipelines_settings() {
        let rules = rules("");
        let settings = rules.settings("shop.orders");
        assert_eq!(settings.group, None);
        assert_eq!(settings.partitions, 3);
        assert_eq!(settings.replication_factor, 1);
        assert_eq!(settings.config["cleanup.policy"], "compact");
    }

    #[test]
    fn the_first_matching_group_wins_and_exclude_beats_include() {
        let rules = rules(
            "[[source.topic_creation_groups]]\nname = \"logs\"\ninclude = ['logs\\..*', 'audit']\nexclude = ['logs\\.debug.*']\npartitions = 6\nconfig = { \"retention.ms\" = \"1000\" }\n[[source.topic_creation_groups]]\nname = \"all_logs\"\ninclude = ['logs.*']\nreplication_factor = 3\n",
        );
        let logs = rules.settings("logs.app");
        assert_eq!(logs.group.as_deref(), Some("logs"));
        assert_eq!((logs.partitions, logs.replication_factor), (6, 1));
        // The group's config alone: `topic_config` is not merged in.
        assert_eq!(
            logs.config,
            BTreeMap::from([("retention.ms".to_owned(), "1000".to_owned())])
        );
        assert_eq!(rules.settings("audit").group.as_deref(), Some("logs"));
        // Excluded from the first group, the next one takes it, with the pipeline's
        // partitions.
        let debug = rules.settings("logs.debug");
        assert_eq!(debug.group.as_deref(), Some("all_logs"));
        assert_eq!((debug.partitions, debug.replication_factor), (3, 3));
        assert!(debug.config.is_empty());
        // Regexes match the whole name.
        assert_eq!(rules.settings("xaudit").group, None);
        assert_eq!(rules.settings("auditx").group, None);
        assert_eq!(rules.settings("shop.orders").group, None);
    }

    #[test]
    fn a_topic_is_created_once() {
        let mut known = KnownTopics::default();
        assert!(known.needs_creating("t"));
        known.exists("t");
        known.exists("t");
        assert!(!known.needs_creating("t"));
        assert!(known.needs_creating("u"));
        assert_eq!(known.len(), 1);
    }

    #[test]
    fn the_brokers_answers_are_mapped_on_purpose() {
        assert_eq!(outcome(Ok(())), Outcome::Created);
        assert_eq!(
            outcome(Err(RDKafkaErrorCode::TopicAlreadyExists)),
            Outcome::Existed
        );
        for code in [
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::ClusterAuthorizationFailed,
            RDKafkaErrorCode::PolicyViolation,
            RDKafkaErrorCode::InvalidConfig,
            RDKafkaErrorCode::InvalidReplicationFactor,
        ] {
            assert_eq!(outcome(Err(code)), Outcome::Refused, "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::OperationTimedOut,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::NotController,
        ] {
            assert_eq!(outcome(Err(code)), Outcome::Unavailable, "{code:?}");
        }
        assert!(may_exist_anyway(RDKafkaErrorCode::TopicAuthorizationFailed));
        assert!(!may_exist_anyway(RDKafkaErrorCode::PolicyViolation));
    }
}
