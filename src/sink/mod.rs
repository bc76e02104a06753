//! Sink pipelines: Kafka topics → MongoDB.
//!
//! [`SinkSupervisor`] is the actor the root supervisor starts for each `[[sink]]`. It owns
//! the pipeline's consumer (its own queue polled on a thread of its own by
//! [`consumer::run`]) and, per partition assigned to it, a [`writer::PartitionWriter`] that
//! takes the records off the partition's own queue. Before the consumer starts, the
//! supervisor counts its topics' partitions to share the prefetch budget ([`prefetch`]).
//! Writers commit offsets only after MongoDB acknowledged the write, under a
//! [`lease::Lease`] that a revoke fences. The supervisor drains them on stop, restarts the
//! pipeline (with backoff) when a failure may pass, and stops it, naming the record, when one
//! cannot be written.

pub mod batch;
pub mod batch_write;
pub mod bulk;
pub mod cdc;
pub mod consumer;
pub mod convert;
pub mod dead_letters;
pub mod decode;
pub mod error;
pub mod id;
pub mod intake;
pub mod lease;
pub mod lifecycle;
pub mod model;
pub mod namespace;
pub mod paths;
pub mod prefetch;
pub mod process;
pub mod rate_limit;
pub mod reassembly;
pub mod rename;
pub mod retries;
pub mod shared;
pub mod stall;
pub mod timeseries;
pub mod turns;
pub mod write_model;
pub mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;
use rdkafka::consumer::Consumer;

use self::consumer::{
    ConsumerHandle, ContextParts, Partitions, RebalanceContext, SinkConsumer, WriterFactory,
};
use self::convert::Converter;
use self::dead_letters::DeadLetters;
use self::error::SinkError;
use self::lease::SessionClock;
use self::lifecycle::{Restarts, Verdict, WriterFailure};
use self::rate_limit::RateLimit;
use self::shared::{WriterFailed, WriterSettings, WriterShared};
use self::writer::{Assignment, Flush, PartitionWriter};
use crate::budget::{Budget, Report as BudgetReport};
use crate::clients::kafka;
use crate::codec::schema_registry::Reachability;
use crate::config::{KafkaConfig, SinkConfig, Tolerance};
use crate::ops::control::PipelineBoard;
use crate::ops::health::{self, Readiness};
use crate::ops::metrics::Metrics;
use crate::ops::status::StatusBoard;
use crate::pipeline::{registry_readiness, PipelineEnv, SetPaused, StopPipeline};

/// Bulk writes a pipeline converts and sends at once, whatever its number of partitions:
/// the driver's default pool holds 10 connections, and what a batch takes beyond its records
/// (statements, command, the driver's copy) stays bounded per pipeline, not per partition.
pub const WRITES_IN_FLIGHT: usize = 8;

/// The subscription of `topics_regex`: librdkafka reads a subscription starting with `^` as
/// a regex; anchored at both ends, the whole name must match, as Kafka Connect's
/// `topics.regex` does.
fn subscribed_regex(regex: &str) -> String {
    format!("^({regex})$")
}

/// How often the consumer reports its lag per partition.
const CONSUMER_STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::sync::oneshot::Receiver<()>,
    consumer: Arc<SinkConsumer>,
    partitions: Arc<Partitions>,
    thread: Arbiter,
}

/// Supervises one sink pipeline.
pub struct SinkSupervisor {
    config: SinkConfig,
    mongo: mongodb::Client,
    kafka: Arc<KafkaConfig>,
    metrics: Metrics,
    readiness: Readiness,
    shutdown_deadline: Duration,
    status: StatusBoard,
    running: Option<Running>,
    stopping: bool,
    restarts: Restarts,
    /// The first incarnation number of the next run.
    next_incarnation: u64,
    /// Where the pipeline's state is reported (`/pipelines`).
    board: PipelineBoard,
    /// Paused by hand: its partitions are paused, in every run (see `consumer.rs`).
    paused: Arc<AtomicBool>,
}

impl SinkSupervisor {
    /// A supervisor for the pipeline `config`.
    pub fn new(config: SinkConfig, env: PipelineEnv) -> Self {
        let PipelineEnv {
            mongo,
            kafka,
            metrics,
            readiness,
            shutdown_deadline,
            status,
            board,
            paused,
        } = env;
        Self {
            config,
            mongo,
            kafka,
            metrics,
            readiness,
            shutdown_deadline,
            status,
            running: None,
            stopping: false,
            restarts: Restarts::default(),
            next_incarnation: 0,
            board,
            paused: Arc::new(AtomicBool::new(paused)),
        }
    }

    /// Counts the partitions of the pipeline's topics (off the actor threads, within the
    /// Kafka request timeout), then starts the pipeline with their share of the prefetch
    /// budget (`prefetch`). A stop meanwhile wins: the pipeline does not start.
    fn begin(&mut self, ctx: &mut Context<Self>) {
        let kafka = self.kafka.clone();
        let counting = async move { kafka::topic_partitions(&kafka).await };
        ctx.spawn(counting.into_actor(self).map(|cluster, act, ctx| {
            if act.stopping || act.running.is_some() {
                return;
            }
            let prefetch = act.prefetch(cluster);
            if let Err(error) = act.start(ctx, prefetch) {
                act.fail(error, ctx);
            }
        }));
    }

    /// Each partition's prefetch, from the partitions the pipeline's topics have in
    /// `cluster`.
    fn prefetch(
        &self,
        cluster: Result<Vec<(String, usize)>, crate::clients::ClientError>,
    ) -> kafka::Prefetch {
        let config = &self.config;
        let budget = prefetch::budget(config.memory_budget.as_u64());
        let partitions = match cluster {
            Ok(cluster) => {
                let regex = config
                    .topics_regex
                    .as_deref()
                    .and_then(|r| regex::Regex::new(&subscribed_regex(r)).ok());
                Some(prefetch::counted(
                    cluster.iter().map(|(name, n)| (name.as_str(), *n)),
                    &config.topics,
                    regex.as_ref(),
                ))
            }
            Err(error) => {
                tracing::warn!(pipeline = %config.name, %error, "could not count the partitions of the pipeline's topics: each prefetches the smallest share until the next start");
                None
            }
        };
        let chosen = prefetch::per_partition(budget, partitions);
        tracing::info!(pipeline = %config.name, ?partitions, budget_bytes = budget, queued_kib = chosen.queued_kib, fetch_bytes = chosen.partition_fetch_bytes, "prefetch per partition");
        chosen
    }

    fn start(
        &mut self,
        ctx: &mut Context<Self>,
        prefetch: kafka::Prefetch,
    ) -> Result<(), SinkError> {
        let config = &self.config;
        let writers_thread = Arbiter::current();
        let partitions = Arc::new(Partitions::starting_at(self.next_incarnation));
        let handle = Arc::new(ConsumerHandle::default());
        let dead_letter_producer = if needs_dead_letters(config) {
            Some(kafka::producer(&self.kafka).map_err(|e| SinkError::Start(e.to_string()))?)
        } else {
            None
        };
        let shared = Arc::new(WriterShared {
            pipeline: config.name.clone(),
            mongo: self.mongo.clone(),
            committer: handle.clone(),
            metrics: self.metrics.clone(),
            supervisor: ctx.address().recipient(),
            time_series_ready: Mutex::default(),
            writes_in_flight: Arc::new(turns::WriteTurns::new(WRITES_IN_FLIGHT)),
            budget: Budget::new(
                &config.name,
                config.memory_budget.as_u64(),
                Some(BudgetReport {
                    metrics: self.metrics.clone(),
                    readiness: self.readiness.clone(),
                }),
            ),
        });
        let make_writer = writer_factory(
            config.clone(),
            shared,
            dead_letter_producer,
            writers_thread,
            registry_readiness(&self.readiness, &self.metrics, &config.name),
        );
        let session = Arc::new(SessionClock::new(
            session_timeout(&self.kafka),
            std::time::Instant::now(),
        ));
        let context = RebalanceContext::new(ContextParts {
            pipeline: config.name.clone(),
            partitions: partitions.clone(),
            consumer: handle.clone(),
            make_writer,
            revoke_deadline: self.shutdown_deadline,
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
            status: self.status.clone(),
            session: session.clone(),
            paused: self.paused.clone(),
        });
        let consumer = Arc::new(
            kafka::consumer_with_context(
                &self.kafka,
                &config.effective_group_id(),
                context,
                Some(CONSUMER_STATISTICS_INTERVAL),
                prefetch,
            )
            .map_err(|e| SinkError::Start(e.to_string()))?,
        );
        // Before subscribing: the first assignment splits queues off this consumer.
        handle.attach(&consumer);
        let mut subscription: Vec<String> = config.topics.clone();
        if let Some(regex) = &config.topics_regex {
            subscription.push(subscribed_regex(regex));
        }
        let names: Vec<&str> = subscription.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| SinkError::Start(format!("subscribing to {names:?}: {e}")))?;
        consumer::watch_session(
            config.name.clone(),
            session,
            Arc::downgrade(&partitions),
            self.metrics.clone(),
        )
        .map_err(|e| SinkError::Start(format!("starting the session watch: {e}")))?;
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let thread = Arbiter::new();
        let pipeline = config.name.clone();
        let polled = consumer.clone();
        let owned = partitions.clone();
        let supervisor = ctx.address().recipient();
        let spawned = thread.spawn(async move {
            consumer::run(pipeline, polled, owned, supervisor, stop_rx).await;
            let _ = done_tx.send(());
        });
        if !spawned {
            return Err(SinkError::Start("the consumer thread did not start".into()));
        }
        self.running = Some(Running {
            stop,
            done,
            consumer,
            partitions,
            thread,
        });
        // A pipeline restarted after a failure stays reported until it ran healthily.
        match self.restarts.healthy_at() {
            Some(at) if self.restarts.is_failing(tokio::time::Instant::now()) => {
                let wait = at.saturating_duration_since(tokio::time::Instant::now());
                ctx.run_later(wait, |act, _| act.check_healthy());
            }
            _ => self.readiness.clear(&health::pipeline(&config.name)),
        }
        if self.paused.load(Ordering::SeqCst) {
            self.board.paused(&config.name);
        } else {
            self.board.running(&config.name);
        }
        tracing::info!(
            pipeline = %config.name,
            topics = ?subscription,
            group_id = %config.effective_group_id(),
            "sink pipeline running"
        );
        Ok(())
    }

    /// Stops the consumer, then writes, commits and closes every writer (each takes no more
    /// records off its queue first) and fences them all; answers how many partitions did not finish within the deadline.
    fn drain(&mut self) -> impl std::future::Future<Output = usize> + 'static {
        let running = self.running.take();
        if let Some(running) = &running {
            self.next_incarnation = running.partitions.next_incarnation();
        }
        // Its partitions stall no more: they are no longer read.
        self.readiness
            .clear_prefix(&health::partition(&self.config.name, ""));
        self.metrics.stalled_partitions(&self.config.name, 0);
        let deadline = self.shutdown_deadline;
        let pipeline = self.config.name.clone();
        async move {
            let Some(running) = running else { return 0 };
            let _ = running.stop.send(());
            let _ = running.done.await;
            let writers: Vec<_> = running
                .partitions
                .take_all()
                .into_iter()
                .map(|(_, owned)| owned.into_writer())
                .collect();
            let flushes = writers.iter().map(|(writer, _)| async move {
                matches!(writer.send(Flush { close: true }).await, Ok(Ok(_)))
            });
            let left = match tokio::time::timeout(deadline, join_all(flushes)).await {
                Ok(results) => results.iter().filter(|ok| !**ok).count(),
                Err(_) => usize::MAX,
            };
            // Whatever did not finish commits nothing more, and writes nothing new. A commit
            // still waiting for a silent broker holds its lease's fence until librdkafka
            // gives up on it: the fences are taken on a blocking thread, and the drain does
            // not wait past the commit deadline for them (a commit landing after the drain
            // commits an offset whose records are written: at worst they are read again).
            let leases: Vec<_> = writers.iter().map(|(_, lease)| lease.clone()).collect();
            let fences = tokio::task::spawn_blocking(move || leases.iter().for_each(|l| l.fence()));
            if tokio::time::timeout(batch_write::COMMIT_DEADLINE, fences)
                .await
                .is_err()
            {
                tracing::warn!(pipeline = %pipeline, "a partition's offset commit is still waiting for the broker; the pipeline stops without it");
            }
            // Leaves the group now rather than when the session times out.
            running.consumer.unsubscribe();
            running.thread.stop();
            left
        }
    }

    /// Clears the pipeline's failure on `/ready` once it ran healthily since its last restart.
    fn check_healthy(&mut self) {
        if self.stopping
            || self.running.is_none()
            || self.restarts.is_failing(tokio::time::Instant::now())
        {
            return;
        }
        if self
            .readiness
            .has_problem(&health::pipeline(&self.config.name))
        {
            tracing::info!(pipeline = %self.config.name, healthy_for = ?lifecycle::HEALTHY_RUN, "sink pipeline healthy again after its restarts");
            self.readiness.clear(&health::pipeline(&self.config.name));
        }
    }

    fn fail(&mut self, error: SinkError, ctx: &mut Context<Self>) {
        tracing::error!(pipeline = %self.config.name, %error, "sink pipeline failed; it stays failed until restarted (POST /pipelines/<name>/restart, a reload or a restart of the daemon)");
        self.metrics
            .pipeline_failed(&self.config.name, "sink", error.kind());
        self.readiness.set_problem(
            health::pipeline(&self.config.name),
            format!(
                "sink pipeline failed: {error}; {}",
                crate::ops::control::failed_until(&self.config.name)
            ),
        );
        self.board.failed(&self.config.name, &error.to_string());
        self.stopping = true;
        ctx.spawn(self.drain().into_actor(self).map(|_, _, _| ()));
    }
}

/// librdkafka's default `session.timeout.ms`.
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(45);

/// The consumer group session timeout the pipeline's consumer runs with
/// (`kafka.consumer` over `kafka.properties`, else librdkafka's default).
fn session_timeout(kafka: &KafkaConfig) -> Duration {
    kafka
        .consumer
        .get("session.timeout.ms")
        .or_else(|| kafka.properties.get("session.timeout.ms"))
        .and_then(|ms| ms.trim().parse::<u64>().ok())
        .map_or(DEFAULT_SESSION_TIMEOUT, Duration::from_millis)
}

/// Whether any topic of the pipeline dead-letters.
fn needs_dead_letters(config: &SinkConfig) -> bool {
    std::iter::once(Ok(config.clone()))
        .chain(config.topic_overrides.keys().map(|t| config.for_topic(t)))
        .flatten()
        .any(|c| c.errors.tolerance == Tolerance::All)
}

/// Makes writers on `writers_thread`, with each topic's settings (built once per topic).
fn writer_factory(
    config: SinkConfig,
    shared: Arc<WriterShared>,
    dead_letter_producer: Option<kafka::KafkaProducer>,
    writers_thread: ArbiterHandle,
    registry_hook: Reachability,
) -> WriterFactory {
    let settings: Mutex<HashMap<String, Arc<WriterSettings>>> = Mutex::new(HashMap::new());
    Box::new(move |assignment: Assignment| {
        let topic = assignment.topic.as_str();
        let mut cache = settings.lock().unwrap_or_else(|p| p.into_inner());
        let settings = match cache.get(topic) {
            Some(settings) => settings.clone(),
            None => {
                let built = config.for_topic(topic).and_then(|c| {
                    let converter = Converter::new(c.clone())?;
                    Ok((c, converter.reporting_to(Some(registry_hook.clone()))))
                });
                let (topic_config, converter) = match built {
                    Ok(built) => built,
                    Err(error) => {
                        tracing::error!(pipeline = %config.name, topic, %error, "the topic's settings are unusable; its records are not read");
                        return None;
                    }
                };
                let dead_letters = match (
                    topic_config.errors.tolerance,
                    &topic_config.errors.dead_letter_topic,
                    &dead_letter_producer,
                ) {
                    (Tolerance::All, Some(topic), Some(producer)) => Some(DeadLetters {
                        producer: producer.clone(),
                        topic: topic.clone(),
                        headers: topic_config.errors.dead_letter_headers,
                    }),
                    _ => None,
                };
                let built = Arc::new(WriterSettings {
                    converter: Arc::new(converter),
                    tolerance: topic_config.errors.tolerance,
                    dead_letters,
                    max_batch_size: topic_config.max_batch_size,
                    max_batch_delay: topic_config.max_batch_delay,
                    max_retries: topic_config.max_num_retries,
                    rate_limit: RateLimit::new(&topic_config),
                    stale_write_guard: topic_config.stale_write_guard.clone(),
                    write_concern: topic_config
                        .write_concern
                        .as_ref()
                        .map(bulk::write_concern_of),
                });
                cache.insert(topic.to_owned(), built.clone());
                built
            }
        };
        let shared = shared.clone();
        Some(PartitionWriter::start_in_arbiter(
            &writers_thread,
            move |_| PartitionWriter::new(assignment, shared, settings),
        ))
    })
}

impl Actor for SinkSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::CONTROL_MAILBOX_CAPACITY);
        self.metrics.pipeline_started("sink");
        self.metrics.sink_pipeline_series(
            &self.config.name,
            &model::Stage::ALL.map(model::Stage::as_str),
        );
        tracing::info!(pipeline = %self.config.name, "sink pipeline started");
        self.begin(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics.pipeline_stopped("sink");
        tracing::info!(pipeline = %self.config.name, "sink pipeline stopped");
    }
}

impl Handler<WriterFailed> for SinkSupervisor {
    type Result = ();

    fn handle(&mut self, msg: WriterFailed, ctx: &mut Self::Context) {
        // A failure of a revoked writer, or of an earlier run, is not the current one's.
        let current = self
            .running
            .as_ref()
            .is_some_and(|r| r.partitions.is_current(&msg.partition, msg.incarnation));
        let failure = WriterFailure {
            stopping: self.stopping,
            current,
            may_pass: msg.error.may_pass(),
        };
        let restart = match self
            .restarts
            .writer_failed(failure, tokio::time::Instant::now())
        {
            Verdict::Ignore => return,
            Verdict::NotCurrent => {
                tracing::info!(pipeline = %self.config.name, partition = %msg.partition, incarnation = %msg.incarnation, error = %msg.error, "ignoring the failure of a writer that no longer owns its partition");
                return;
            }
            Verdict::Stop => {
                tracing::error!(pipeline = %self.config.name, partition = %msg.partition, "partition writer failed");
                self.fail(msg.error, ctx);
                return;
            }
            Verdict::Restart(restart) => restart,
        };
        let delay = restart.delay;
        tracing::warn!(pipeline = %self.config.name, partition = %msg.partition, error = %msg.error, retry_in = ?delay, failures_in_a_row = restart.in_a_row, "restarting the sink pipeline from its committed offsets");
        self.metrics
            .actor_restarted(&self.config.name, "sink_pipeline", msg.error.kind());
        self.board
            .restarting_after(&self.config.name, &msg.error.to_string());
        // `/ready` says why until the pipeline ran healthily again: a failure that keeps
        // coming back (a dead letter topic the daemon may not write to) shows the whole
        // time, not only during each backoff.
        self.readiness.set_problem(
            health::pipeline(&self.config.name),
            format!(
                "sink pipeline failing ({} failures in a row, restarting in {delay:?}) after: {}",
                restart.in_a_row, msg.error
            ),
        );
        let drained = self.drain();
        ctx.spawn(drained.into_actor(self).map(move |_, _, ctx| {
            ctx.run_later(delay, |act, ctx| {
                if act.stopping || act.running.is_some() {
                    return;
                }
                act.begin(ctx);
            });
        }));
    }
}

impl Handler<StopPipeline> for SinkSupervisor {
    type Result = ResponseActFuture<Self, Option<String>>;

    fn handle(&mut self, _: StopPipeline, _: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        self.board.stopped(&self.config.name);
        // A stopped pipeline reports nothing any more: a reload may have removed it.
        self.readiness.clear(&health::pipeline(&self.config.name));
        self.readiness
            .clear(&health::schema_registry(&self.config.name));
        let name = self.config.name.clone();
        Box::pin(self.drain().into_actor(self).map(move |left, _, ctx| {
            ctx.stop();
            (left > 0).then(|| {
                tracing::error!(pipeline = %name, "partition writers did not finish before the shutdown deadline; their uncommitted records will be written again at the next start");
                match left {
                    usize::MAX => "partition writers still writing".to_owned(),
                    n => format!("{n} partition writers still writing"),
                }
            })
        }))
    }
}

impl Handler<SetPaused> for SinkSupervisor {
    type Result = ();

    /// Pauses or resumes the partitions of the running consumer, and of every consumer a
    /// restart makes meanwhile. What the writers hold already is written and committed;
    /// nothing more arrives until the resume.
    fn handle(&mut self, SetPaused(pause): SetPaused, _: &mut Self::Context) {
        if self.stopping {
            return;
        }
        let name = &self.config.name;
        if self.paused.swap(pause, Ordering::SeqCst) == pause {
            return;
        }
        if let Some(running) = &self.running {
            consumer::pause_owned(name, &running.consumer, pause);
        }
        if pause {
            self.board.paused(name);
            tracing::info!(pipeline = %name, "sink pipeline paused: its partitions are paused, its consumer stays in the group");
        } else {
            if self.running.is_some() {
                self.board.running(name);
            } else {
                // Waiting for a restart's backoff: it reports running once started.
                self.board.resuming(name);
            }
            tracing::info!(pipeline = %name, "sink pipeline resumed");
        }
    }
}
