//! Source pipelines: MongoDB change streams → Kafka.
//!
//! [`SourceSupervisor`] is the actor the root supervisor starts for each `[[source]]`. It
//! loads the pipeline's checkpoints, starts one [`producer::RecordProducer`] and one
//! [`reader::ChangeStreamReader`] per watched namespace, restarts a failed reader with
//! backoff from its newest acknowledged position (other readers keep running), restarts the
//! whole pipeline when the producer fails, and drains everything on stop.

pub mod checkpoint;
pub mod copy;
pub mod copy_progress;
pub mod format;
pub mod ledger;
pub mod model;
pub mod policy;
pub mod producer;
pub mod progress;
pub mod reader;
pub mod topic;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::Producer;

use self::checkpoint::Checkpoint;
use self::copy_progress::CopyTracker;
use self::format::{Conversion, FormatError};
use self::model::{Position, Scope, StartAt};
use self::policy::{Decision, Failed, RestartPolicy, ResumeAt};
use self::producer::{
    Drain, LastAcknowledged, ProducerFailed, ProducerSetup, ReaderId, RecordPolicy, RecordProducer,
};
use self::reader::{
    AbortReader, ChangeStreamReader, ReaderContext, ReaderFailed, ReaderProgress, StopReader,
};
use self::topic::TopicMapper;
use crate::backoff::Backoff;
use crate::clients::{kafka, ClientError};
use crate::config::{Delivery, KafkaConfig, SourceConfig, StartupMode};
use crate::ops::health::{self, Readiness};
use crate::ops::metrics::Metrics;
use crate::pipeline::{registry_readiness, PipelineEnv, StopPipeline};

/// Why a source pipeline or one of its readers failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A MongoDB operation failed.
    #[error("{namespace}: {what}: {source}")]
    Mongo {
        /// The reader's namespace.
        namespace: String,
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        source: Box<mongodb::error::Error>,
    },
    /// The resume point is no longer in the oplog.
    #[error("{namespace}: the resume point is gone from the oplog: {source}")]
    HistoryLost {
        /// The reader's namespace.
        namespace: String,
        /// The driver's error.
        source: Box<mongodb::error::Error>,
    },
    /// MongoDB cannot return an event over 16 MiB (error 10334): a restart at the same
    /// resume token meets it again.
    #[error("{namespace}: MongoDB cannot return a change event larger than 16 MiB (error 10334); a `$project` in `pipeline` that leaves out large fields avoids it: {source}")]
    EventTooLarge {
        /// The reader's namespace.
        namespace: String,
        /// The driver's error.
        source: Box<mongodb::error::Error>,
    },
    /// An event could not be converted.
    #[error("converting the event {origin}: {source}")]
    Format {
        /// Namespace and document key of the event.
        origin: String,
        /// Why.
        source: FormatError,
    },
    /// An event is larger than Kafka accepts and `errors.tolerance` is `none`.
    #[error("the event {origin} for topic `{topic}` cannot be published: {reason}")]
    TooLarge {
        /// Namespace and document key of the event.
        origin: String,
        /// Its topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// librdkafka refused a record.
    #[error("producing to `{topic}`: {source}")]
    Kafka {
        /// The topic.
        topic: String,
        /// The client's error.
        source: Box<rdkafka::error::KafkaError>,
    },
    /// Kafka did not acknowledge a record.
    #[error("delivering the event {origin} to `{topic}`: {source}")]
    Delivery {
        /// Namespace and document key of the event.
        origin: String,
        /// The topic.
        topic: String,
        /// The client's error.
        source: Box<rdkafka::error::KafkaError>,
    },
    /// A Kafka transaction could not be begun or committed.
    #[error("{what} the Kafka transaction: {source}")]
    Transaction {
        /// What was being done.
        what: &'static str,
        /// The client's error.
        source: Box<rdkafka::error::KafkaError>,
    },
    /// A checkpoint could not be written or read.
    #[error("checkpoint of {namespace}: {reason}")]
    Checkpoint {
        /// The reader's namespace.
        namespace: String,
        /// Why.
        reason: String,
    },
    /// The pipeline's configuration is unusable (caught at `check-config` normally).
    #[error("{namespace}: configuration: {reason}")]
    Config {
        /// The reader's namespace.
        namespace: String,
        /// Why.
        reason: String,
    },
    /// The producer stopped while a reader was sending to it.
    #[error("{namespace}: the producer is gone")]
    ProducerGone {
        /// The reader's namespace.
        namespace: String,
    },
    /// The pipeline could not start.
    #[error("starting: {0}")]
    Start(String),
}

impl SourceError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Mongo { .. } => "mongodb",
            Self::HistoryLost { .. } => "history_lost",
            Self::Format { .. } => "format",
            Self::TooLarge { .. } => "too_large",
            Self::EventTooLarge { .. } => "event_too_large",
            Self::Transaction { .. } => "transaction",
            Self::Kafka { .. } | Self::Delivery { .. } => "kafka",
            Self::Checkpoint { .. } => "checkpoint",
            Self::Config { .. } => "config",
            Self::ProducerGone { .. } => "producer_gone",
            Self::Start(_) => "start",
        }
    }
}

impl From<ClientError> for SourceError {
    fn from(e: ClientError) -> Self {
        Self::Start(e.to_string())
    }
}

impl From<checkpoint::CheckpointError> for SourceError {
    fn from(e: checkpoint::CheckpointError) -> Self {
        Self::Start(e.to_string())
    }
}

struct ReaderSlot {
    watched: Scope,
    generation: u64,
    addr: Option<Addr<ChangeStreamReader>>,
    backoff: Backoff,
    progress: Arc<ReaderProgress>,
    stalled: bool,
    /// Where the reader's first open without a position (`latest`, a timestamp) found its
    /// stream: restarts before a checkpoint start there, not at `latest` again.
    pinned: Option<Position>,
}

impl ReaderSlot {
    /// The pinned position, taking it from the running reader's progress when it has one.
    fn pin(&mut self) -> Option<Position> {
        if self.pinned.is_none() {
            self.pinned = self.progress.opened_at();
        }
        self.pinned.clone()
    }

    /// Forgets the pinned position: the next open without a position pins anew.
    fn unpin(&mut self) {
        self.pinned = None;
        self.progress = Arc::default();
    }
}

struct Running {
    producer: Addr<RecordProducer>,
    shared: Arc<ReaderContext>,
}

/// Supervises one source pipeline.
pub struct SourceSupervisor {
    config: SourceConfig,
    mongo: mongodb::Client,
    kafka: Arc<KafkaConfig>,
    metrics: Metrics,
    readiness: Readiness,
    shutdown_deadline: Duration,
    /// The copies' progress, across launches of the pipeline.
    copies: Arc<CopyTracker>,
    running: Option<Running>,
    checkpoints: HashMap<String, Checkpoint>,
    readers: BTreeMap<String, ReaderSlot>,
    pipeline_backoff: Backoff,
    /// How many times the pipeline launched (the current launch's number).
    launches: u64,
    /// A pipeline restart is under way: further failures join it instead of starting
    /// another.
    restarting: bool,
    stopping: bool,
}

/// A reader or pipeline that ran this long before failing again restarts after the shortest
/// delay: its earlier failures are history.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

fn restart_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(250), Duration::from_secs(30)).reset_after(HEALTHY_RUN)
}

impl SourceSupervisor {
    /// A supervisor for the pipeline `config`.
    pub fn new(config: SourceConfig, env: PipelineEnv) -> Self {
        let PipelineEnv {
            mongo,
            kafka,
            metrics,
            readiness,
            shutdown_deadline,
            status,
        } = env;
        Self {
            copies: Arc::new(CopyTracker::new(&config.name, metrics.clone(), status)),
            config,
            mongo,
            kafka,
            metrics,
            readiness,
            shutdown_deadline,
            running: None,
            checkpoints: HashMap::new(),
            readers: BTreeMap::new(),
            pipeline_backoff: restart_backoff(),
            launches: 0,
            restarting: false,
            stopping: false,
        }
    }

    /// Loads checkpoints and creates topics, then starts the producer and the readers.
    fn start(&mut self, ctx: &mut Context<Self>) {
        let config = self.config.clone();
        let kafka = self.kafka.clone();
        let prepare = async move {
            checkpoint::ensure_topic(&kafka, &config.checkpoint_topic).await?;
            if config.create_topics {
                create_topics(&kafka, &config).await?;
            }
            let loaded = checkpoint::load(&kafka, &config.checkpoint_topic, &config.name).await?;
            let producer = match config.delivery {
                Delivery::AtLeastOnce => kafka::producer(&kafka)?,
                Delivery::ExactlyOnce => {
                    let producer = kafka::transactional_producer(
                        &kafka,
                        &format!("mongo-kafka-bridge-{}", config.name),
                    )?;
                    // Fences any earlier instance of this pipeline and aborts what it left open.
                    let init = producer.clone();
                    let timeout = kafka.request_timeout.max(Duration::from_secs(30));
                    tokio::task::spawn_blocking(move || init.init_transactions(timeout))
                        .await
                        .map_err(|e| SourceError::Start(e.to_string()))?
                        .map_err(|source| SourceError::Transaction {
                            what: "initialising",
                            source: Box::new(source),
                        })?;
                    producer
                }
            };
            Ok::<_, SourceError>((loaded, producer))
        };
        ctx.spawn(prepare.into_actor(self).map(|result, act, ctx| {
            if act.stopping {
                return;
            }
            match result {
                Ok((loaded, producer)) => {
                    act.checkpoints = loaded;
                    act.launch(producer, ctx);
                }
                Err(error) => act.retry_pipeline(error, ctx),
            }
        }));
    }

    fn launch(&mut self, producer: kafka::KafkaProducer, ctx: &mut Context<Self>) {
        // Validation compiled the namespace map's regexes already; should one still fail,
        // the pipeline stops saying which.
        let topics = match TopicMapper::new(&self.config) {
            Ok(topics) => topics,
            Err(reason) => {
                let error = SourceError::Config {
                    namespace: self.config.name.clone(),
                    reason,
                };
                return self.fail(error, ctx);
            }
        };
        self.launches += 1;
        let producer = RecordProducer::new(
            ProducerSetup {
                pipeline: self.config.name.clone(),
                launch: self.launches,
                checkpoint_topic: self.config.checkpoint_topic.clone(),
                checkpoint_interval: self.config.checkpoint_interval,
                policy: RecordPolicy {
                    errors: self.config.errors.clone(),
                    oversize: self.config.oversize,
                    max_message_bytes: kafka::producer_max_message_bytes(&self.kafka),
                },
                mailbox_capacity: self.config.queue_capacity,
            },
            producer,
            ctx.address().recipient(),
            self.metrics.clone(),
        );
        let producer = match self.config.delivery {
            Delivery::AtLeastOnce => producer,
            Delivery::ExactlyOnce => {
                producer.exactly_once(self.kafka.request_timeout.max(Duration::from_secs(30)))
            }
        }
        .start();
        let shared = Arc::new(ReaderContext {
            config: self.config.clone(),
            conversion: Conversion::for_source(
                &self.config,
                Some(registry_readiness(&self.readiness, &self.config.name)),
            ),
            topics,
            mongo: self.mongo.clone(),
            producer: producer.clone(),
            metrics: self.metrics.clone(),
            copies: self.copies.clone(),
        });
        self.running = Some(Running { producer, shared });
        for watched in Scope::of(&self.config) {
            let namespace = watched.namespace();
            let slot = self
                .readers
                .entry(namespace.clone())
                .or_insert_with(|| ReaderSlot {
                    watched,
                    generation: 0,
                    addr: None,
                    backoff: restart_backoff(),
                    progress: Arc::default(),
                    stalled: false,
                    pinned: None,
                });
            slot.generation += 1;
            let start = match self.checkpoints.get(&namespace).map(Checkpoint::position) {
                Some(Ok(position)) => StartAt::Resume(position),
                Some(Err(reason)) => {
                    return self.fail(SourceError::Checkpoint { namespace, reason }, ctx);
                }
                None => self.start_without_checkpoint(&namespace),
            };
            self.spawn_reader(&namespace, start, ctx);
        }
        self.metrics.stalled_readers(&self.config.name, 0);
        self.readiness.clear(&health::pipeline(&self.config.name));
        tracing::info!(pipeline = %self.config.name, readers = self.readers.len(), "source pipeline running");
    }

    /// Where a reader without an acknowledged position or a checkpoint starts: where its
    /// first open found the stream, or else by the startup mode.
    fn start_without_checkpoint(&mut self, namespace: &str) -> StartAt {
        match self.readers.get_mut(namespace).and_then(ReaderSlot::pin) {
            Some(position) => StartAt::Resume(position),
            None => self.initial_start(),
        }
    }

    fn initial_start(&self) -> StartAt {
        match self.config.startup_mode {
            StartupMode::Latest => StartAt::Latest,
            StartupMode::Timestamp => match self.config.startup_time() {
                Ok(Some(at)) => StartAt::Time(at),
                _ => StartAt::Latest,
            },
            StartupMode::CopyExisting => StartAt::CopyExisting,
        }
    }

    fn spawn_reader(&mut self, namespace: &str, start: StartAt, ctx: &mut Context<Self>) {
        let Some(running) = &self.running else { return };
        let Some(slot) = self.readers.get_mut(namespace) else {
            return;
        };
        let id = ReaderId {
            namespace: namespace.to_owned(),
            generation: slot.generation,
        };
        tracing::info!(pipeline = %self.config.name, namespace, start = start.name(), generation = slot.generation, "starting reader");
        slot.pin();
        slot.progress = Arc::default();
        slot.addr = Some(
            ChangeStreamReader::new(
                id,
                slot.watched.clone(),
                start,
                running.shared.clone(),
                ctx.address().recipient(),
                slot.progress.clone(),
            )
            .start(),
        );
    }

    /// Restarts one reader after its backoff, at `resume`.
    fn restart_reader(&mut self, namespace: String, resume: ResumeAt, ctx: &mut Context<Self>) {
        let Some(slot) = self.readers.get_mut(&namespace) else {
            return;
        };
        slot.addr = None;
        slot.generation += 1;
        let reader = ReaderId {
            namespace: namespace.clone(),
            generation: slot.generation,
        };
        let delay = slot.backoff.next_delay();
        let producer = self.running.as_ref().map(|r| r.producer.clone());
        ctx.run_later(delay, move |act, ctx| {
            if act.stopping {
                return;
            }
            let Some(producer) = producer else { return };
            let ask = async move {
                producer
                    .send(LastAcknowledged(reader))
                    .await
                    .ok()
                    .flatten()
                    .map(|t| (namespace.clone(), Some(t)))
                    .unwrap_or((namespace, None))
            };
            ctx.spawn(
                ask.into_actor(act)
                    .map(move |(namespace, acknowledged), act, ctx| {
                        if act.stopping {
                            return;
                        }
                        let start = match (resume, acknowledged) {
                            (ResumeAt::Recopy | ResumeAt::Latest, _) => {
                                if let Some(slot) = act.readers.get_mut(&namespace) {
                                    slot.unpin();
                                }
                                match resume {
                                    ResumeAt::Recopy => StartAt::CopyExisting,
                                    _ => StartAt::Latest,
                                }
                            }
                            (ResumeAt::Acknowledged, Some(position)) => StartAt::Resume(position),
                            (ResumeAt::Acknowledged, None) => {
                                match act.checkpoints.get(&namespace).map(Checkpoint::position) {
                                    Some(Ok(position)) => StartAt::Resume(position),
                                    _ => act.start_without_checkpoint(&namespace),
                                }
                            }
                        };
                        act.spawn_reader(&namespace, start, ctx);
                    }),
            );
        });
    }

    /// Reports readers whose stream has not advanced for `stall_timeout` on `/ready` and in
    /// the metrics, and restarts them; clears the report once they advance again.
    fn check_stalls(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.running.is_none() {
            return;
        }
        let timeout = self.config.stall_timeout;
        let pipeline = self.config.name.clone();
        let mut stalled = Vec::new();
        for (namespace, slot) in &mut self.readers {
            let component = health::reader(&pipeline, namespace);
            match slot.progress.idle_for() {
                Some(idle) if idle > timeout && slot.addr.is_some() => {
                    tracing::error!(pipeline = %pipeline, namespace = %namespace, idle = ?idle, "change stream has not advanced; restarting the reader");
                    self.readiness.set_problem(
                        component,
                        format!("change stream has not advanced for {}s", idle.as_secs()),
                    );
                    slot.stalled = true;
                    stalled.push(namespace.clone());
                }
                Some(idle) if idle <= timeout && slot.stalled && slot.progress.has_advanced() => {
                    tracing::info!(pipeline = %pipeline, namespace = %namespace, "change stream advances again");
                    self.readiness.clear(&component);
                    slot.stalled = false;
                }
                _ => {}
            }
        }
        let count = self.readers.values().filter(|s| s.stalled).count();
        self.metrics.stalled_readers(&pipeline, count);
        for namespace in stalled {
            if let Some(addr) = self
                .readers
                .get_mut(&namespace)
                .and_then(|slot| slot.addr.take())
            {
                // A stalled reader may never finish its read: abort it, without waiting.
                actix::spawn(async move {
                    let _ = addr.send(AbortReader).await;
                });
            }
            self.metrics
                .actor_restarted(&pipeline, "change_stream_reader", "stalled");
            self.restart_reader(namespace, ResumeAt::Acknowledged, ctx);
        }
    }

    /// Stops every reader and the producer, then starts again after a backoff.
    fn retry_pipeline(&mut self, error: SourceError, ctx: &mut Context<Self>) {
        if self.restarting {
            tracing::debug!(pipeline = %self.config.name, %error, "the pipeline is restarting already");
            return;
        }
        self.restarting = true;
        let delay = self.pipeline_backoff.next_delay();
        tracing::warn!(pipeline = %self.config.name, %error, retry_in = ?delay, "restarting the source pipeline");
        self.metrics
            .actor_restarted(&self.config.name, "source_pipeline", error.kind());
        let readers: Vec<_> = self
            .readers
            .values_mut()
            .filter_map(|slot| slot.addr.take())
            .collect();
        self.running = None;
        let stop_all = join_all(readers.into_iter().map(|addr| async move {
            let _ = addr.send(StopReader).await;
        }));
        ctx.spawn(stop_all.into_actor(self).map(move |_, _, ctx| {
            ctx.run_later(delay, |act, ctx| {
                act.restarting = false;
                if !act.stopping {
                    act.start(ctx);
                }
            });
        }));
    }

    /// Stops the pipeline for good and says why: an error no restart can fix.
    fn fail(&mut self, error: SourceError, ctx: &mut Context<Self>) {
        tracing::error!(pipeline = %self.config.name, %error, "source pipeline failed; it stays stopped until the configuration changes or the daemon restarts");
        self.metrics
            .pipeline_failed(&self.config.name, "source", error.kind());
        self.readiness.set_problem(
            health::pipeline(&self.config.name),
            format!("source pipeline failed: {error}"),
        );
        self.stopping = true;
        let readers: Vec<_> = self
            .readers
            .values_mut()
            .filter_map(|slot| slot.addr.take())
            .collect();
        let producer = self.running.take().map(|r| r.producer);
        let deadline = self.shutdown_deadline;
        ctx.spawn(
            async move {
                join_all(readers.into_iter().map(|addr| async move {
                    let _ = addr.send(StopReader).await;
                }))
                .await;
                if let Some(producer) = producer {
                    let _ = producer.send(Drain(deadline)).await;
                }
            }
            .into_actor(self),
        );
    }
}

/// Creates the topics of the pipeline's collection readers (and its heartbeat and dead
/// letter topics) that do not exist yet.
async fn create_topics(
    kafka_config: &KafkaConfig,
    config: &SourceConfig,
) -> Result<(), SourceError> {
    let mapper = TopicMapper::new(config).map_err(|reason| SourceError::Config {
        namespace: config.name.clone(),
        reason,
    })?;
    let mut names: Vec<String> = Scope::of(config)
        .iter()
        .filter_map(|w| match w {
            Scope::Collection { db, coll } => Some(mapper.topic(db, Some(coll))),
            _ => None,
        })
        .collect();
    if config.heartbeat_interval.is_some() {
        names.push(config.heartbeat_topic.clone());
    }
    names.extend(config.errors.dead_letter_topic.clone());
    let admin = kafka::admin(kafka_config)?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            NewTopic::new(
                n,
                config.topic_partitions,
                TopicReplication::Fixed(config.topic_replication_factor),
            )
        })
        .collect();
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(kafka_config.request_timeout)),
        )
        .await
        .map_err(|source| SourceError::Kafka {
            topic: names.join(","),
            source: Box::new(source),
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(SourceError::Kafka {
                    topic,
                    source: Box::new(rdkafka::error::KafkaError::AdminOp(code)),
                })
            }
        }
    }
    Ok(())
}

impl Actor for SourceSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::CONTROL_MAILBOX_CAPACITY);
        self.metrics.pipeline_started("source");
        self.metrics.source_pipeline_series(&self.config.name);
        for watched in Scope::of(&self.config) {
            self.metrics
                .reader_series(&self.config.name, &watched.namespace());
        }
        self.readiness
            .set_problem(health::pipeline(&self.config.name), "starting");
        tracing::info!(pipeline = %self.config.name, "source pipeline started");
        self.start(ctx);
        let every = (self.config.stall_timeout / 4)
            .clamp(Duration::from_millis(250), Duration::from_secs(10));
        ctx.run_interval(every, |act, ctx| act.check_stalls(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics.pipeline_stopped("source");
        tracing::info!(pipeline = %self.config.name, "source pipeline stopped");
    }
}

impl SourceSupervisor {
    /// Carries out what the restart policy decided about `error`, of `reader` if a reader
    /// failed.
    fn decided(
        &mut self,
        decision: Decision,
        reader: Option<ReaderId>,
        error: SourceError,
        ctx: &mut Context<Self>,
    ) {
        match (decision, reader) {
            (Decision::Fail, _) => self.fail(error, ctx),
            (Decision::RestartPipeline, _) | (Decision::RestartReader(_), None) => {
                self.retry_pipeline(error, ctx)
            }
            (Decision::RestartReader(resume), Some(reader)) => {
                if matches!(error, SourceError::HistoryLost { .. }) {
                    let then = match resume {
                        ResumeAt::Recopy => "copying the namespace again",
                        _ => "restarting at the newest change",
                    };
                    tracing::error!(pipeline = %self.config.name, namespace = %reader.namespace, %error, then, "changes were lost from the oplog before they were read");
                    self.metrics
                        .resume_gap(&self.config.name, &reader.namespace);
                } else {
                    tracing::warn!(pipeline = %self.config.name, namespace = %reader.namespace, %error, "reader failed; restarting it");
                    self.metrics.actor_restarted(
                        &self.config.name,
                        "change_stream_reader",
                        error.kind(),
                    );
                }
                self.restart_reader(reader.namespace, resume, ctx);
            }
        }
    }
}

impl Handler<ReaderFailed> for SourceSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ReaderFailed, ctx: &mut Self::Context) {
        let ReaderFailed { reader, error } = msg;
        let current = self
            .readers
            .get(&reader.namespace)
            .is_some_and(|s| s.generation == reader.generation);
        if self.stopping || !current {
            return;
        }
        let decision = RestartPolicy::decide(Failed::Reader(&error), &self.config);
        self.decided(decision, Some(reader), error, ctx);
    }
}

impl Handler<ProducerFailed> for SourceSupervisor {
    type Result = ();

    fn handle(&mut self, failed: ProducerFailed, ctx: &mut Self::Context) {
        let ProducerFailed { launch, error } = failed;
        // A producer of an earlier launch failing late (its pipeline restarted already)
        // restarts nothing.
        if self.stopping || launch != self.launches {
            return;
        }
        let decision = RestartPolicy::decide(Failed::Producer(&error), &self.config);
        self.decided(decision, None, error, ctx);
    }
}

impl Handler<StopPipeline> for SourceSupervisor {
    type Result = ResponseActFuture<Self, Option<String>>;

    fn handle(&mut self, _: StopPipeline, _: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        // A stopped pipeline reports nothing any more: a reload may have removed it.
        self.readiness.clear(&health::pipeline(&self.config.name));
        self.readiness
            .clear(&health::schema_registry(&self.config.name));
        self.readiness
            .clear_prefix(&health::reader(&self.config.name, ""));
        let readers: Vec<_> = self
            .readers
            .values_mut()
            .filter_map(|slot| slot.addr.take())
            .collect();
        let producer = self.running.take().map(|r| r.producer);
        let deadline = self.shutdown_deadline;
        let name = self.config.name.clone();
        Box::pin(
            async move {
                let mut left = Vec::new();
                let stops = join_all(readers.iter().map(|addr| addr.send(StopReader)));
                if tokio::time::timeout(deadline, stops).await.is_err() {
                    // A reader waiting on a server that does not answer: abandon its read.
                    tracing::error!(pipeline = %name, "readers did not stop before the shutdown deadline; aborting them");
                    join_all(readers.iter().map(|addr| addr.send(AbortReader))).await;
                    left.push("readers waiting for MongoDB".to_owned());
                }
                if let Some(producer) = producer {
                    if let Ok(batches) = producer.send(Drain(deadline)).await {
                        if batches > 0 {
                            tracing::error!(pipeline = %name, batches, "records still unacknowledged at shutdown; they will be sent again at the next start");
                            left.push(format!("{batches} batches not acknowledged by Kafka"));
                        }
                    }
                }
                (!left.is_empty()).then(|| left.join(", "))
            }
            .into_actor(self)
            .map(|left, _, ctx| {
                ctx.stop();
                left
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12, defect 7: a reader that crash-looped once waited the 30 s cap at every
    /// later failure, however long it had run healthily in between.
    #[tokio::test(start_paused = true)]
    async fn restart_backoffs_forget_failures_after_a_healthy_period() {
        let mut backoff = restart_backoff();
        for _ in 0..8 {
            let delay = backoff.next_delay();
            tokio::time::advance(delay).await;
        }
        assert_eq!(
            backoff.next_delay(),
            Duration::from_secs(30),
            "a crash loop backs off"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        // Then it runs healthily for an hour, and fails once.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(backoff.next_delay(), Duration::from_millis(250));
    }
}
