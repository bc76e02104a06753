//! `create_topics`: creates each topic a source pipeline writes to before its first record
//! (the rules are in `topic_creation.rs`). One per launch of a pipeline, shared by its
//! producers; the admin calls are asynchronous (never blocking the actor's thread) and each
//! has a deadline (`kafka.request_timeout`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::error::SourceError;
use super::topic_creation::{may_exist_anyway, outcome, CreationRules, KnownTopics, Outcome};
use crate::clients::kafka;
use crate::config::{KafkaConfig, SourceConfig};
use crate::ops::health::{self, Readiness};
use crate::ops::metrics::Metrics;

/// Creates a pipeline's topics, each once.
pub struct TopicCreator {
    pipeline: String,
    admin: Arc<AdminClient<DefaultClientContext>>,
    rules: CreationRules,
    known: Mutex<KnownTopics>,
    deadline: Duration,
    metrics: Metrics,
    /// `/ready` says so while a creation gets no answer.
    readiness: Readiness,
}

impl std::fmt::Debug for TopicCreator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicCreator")
            .field("pipeline", &self.pipeline)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl TopicCreator {
    /// The creator of the pipeline `config` (which has `create_topics`).
    pub fn new(
        kafka_config: &KafkaConfig,
        config: &SourceConfig,
        metrics: Metrics,
        readiness: Readiness,
    ) -> Result<Self, SourceError> {
        let rules = CreationRules::new(config).map_err(|reason| SourceError::Config {
            namespace: config.name.clone(),
            reason,
        })?;
        for label in [
            Outcome::Created,
            Outcome::Existed,
            Outcome::Refused,
            Outcome::Unavailable,
        ] {
            metrics.topic_creation_series(&config.name, label.label());
        }
        Ok(Self {
            pipeline: config.name.clone(),
            admin: Arc::new(kafka::admin(kafka_config)?),
            rules,
            known: Mutex::new(KnownTopics::default()),
            deadline: kafka_config.request_timeout,
            metrics,
            readiness,
        })
    }

    fn needs_creating(&self, topic: &str) -> bool {
        // A poisoned lock holds plain names: keep using them.
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.needs_creating(topic)
    }

    fn exists(&self, topic: &str) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.exists(topic);
    }

    /// Makes sure each of `topics` exists, creating those not known to in one request.
    pub async fn ensure(&self, topics: &[&str]) -> Result<(), SourceError> {
        let mut missing: Vec<&str> = topics
            .iter()
            .copied()
            .filter(|t| self.needs_creating(t))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let settings: Vec<_> = missing.iter().map(|t| self.rules.settings(t)).collect();
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .zip(&settings)
            .map(|(topic, s)| {
                s.config.iter().fold(
                    NewTopic::new(
                        topic,
                        s.partitions,
                        TopicReplication::Fixed(s.replication_factor),
                    ),
                    |new, (key, value)| new.set(key, value),
                )
            })
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(self.deadline))
            .operation_timeout(Some(self.deadline));
        // The admin client's own timeouts end the request; this deadline covers a client
        // that never answers.
        let answered = tokio::time::timeout(
            self.deadline + Duration::from_secs(5),
            self.admin.create_topics(&new, &options),
        )
        .await;
        let results = match answered {
            Ok(Ok(results)) => results,
            Ok(Err(source)) => return Err(self.unavailable(&missing, source)),
            Err(_) => {
                let source = KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut);
                return Err(self.unavailable(&missing, source));
            }
        };
        for (result, s) in results.into_iter().zip(&settings) {
            let (topic, answer) = match result {
                Ok(topic) => (topic, Ok(())),
                Err((topic, code)) => (topic, Err(code)),
            };
            let mut decided = outcome(answer);
            if let Err(code) = answer {
                if decided == Outcome::Refused && may_exist_anyway(code) && self.found(&topic).await
                {
                    decided = Outcome::Existed;
                }
            }
            self.metrics.topic_creation(&self.pipeline, decided.label());
            match decided {
                Outcome::Created => {
                    tracing::info!(pipeline = %self.pipeline, topic, group = s.group.as_deref().unwrap_or("(default)"), partitions = s.partitions, replication_factor = s.replication_factor, config = ?s.config, "created the topic");
                    self.exists(&topic);
                }
                Outcome::Existed => self.exists(&topic),
                Outcome::Refused => {
                    let code = answer.err().unwrap_or(RDKafkaErrorCode::Unknown);
                    tracing::warn!(pipeline = %self.pipeline, topic, error = %code, "the broker refused to create the topic; the pipeline stops (as Kafka Connect fails the task): let the daemon's principal create topics, or create the topic beforehand, then restart the pipeline");
                    return Err(SourceError::TopicRefused {
                        topic,
                        reason: code.to_string(),
                    });
                }
                Outcome::Unavailable => {
                    let code = answer.err().unwrap_or(RDKafkaErrorCode::Unknown);
                    return Err(self.unavailable(&[topic.as_str()], KafkaError::AdminOp(code)));
                }
            }
        }
        // Every topic asked for exists: nothing is held back any more.
        self.readiness
            .clear(&health::topic_creation(&self.pipeline));
        Ok(())
    }

    /// A creation not answered: counted, warned about, and the error that restarts the
    /// pipeline with backoff.
    fn unavailable(&self, topics: &[&str], source: KafkaError) -> SourceError {
        let topic = topics.join(",");
        self.metrics
            .topic_creation(&self.pipeline, Outcome::Unavailable.label());
        tracing::warn!(pipeline = %self.pipeline, topic, error = %source, "could not create the topic before its first record; the pipeline restarts with backoff");
        self.readiness.set_problem(
            health::topic_creation(&self.pipeline),
            format!("topic `{topic}` could not be created before its first record ({source}); its records wait, the pipeline restarts with backoff"),
        );
        SourceError::Kafka {
            topic,
            source: Box::new(source),
        }
    }

    /// Whether the broker's metadata names `topic` (a principal that may not create topics
    /// may still write to one that exists).
    async fn found(&self, topic: &str) -> bool {
        let admin = self.admin.clone();
        let (name, deadline) = (topic.to_owned(), self.deadline);
        let metadata = tokio::task::spawn_blocking(move || {
            admin
                .inner()
                .fetch_metadata(Some(&name), deadline)
                .map(|m| {
                    m.topics().iter().any(|t| {
                        t.name() == name && t.error().is_none() && !t.partitions().is_empty()
                    })
                })
                .unwrap_or(false)
        })
        .await;
        metadata.unwrap_or(false)
    }
}
