//! The root actor: connects to MongoDB and Kafka, starts one pipeline supervisor per
//! configured pipeline, probes both services for `/ready`, applies configuration reloads
//! (only to the pipelines that changed), and stops them all on shutdown.
//!
//! Restart policy lives here and in the pipeline supervisors, not in the actors they
//! supervise. Commands by hand ([`Control`]: pause, resume, restart one pipeline) are
//! decided by `ops::control` and carried out here.
//!
//! Across a reload: a removed pipeline is stopped and forgets its pause; a changed one is
//! started anew, paused if it was paused; an unchanged one is left as it is (paused stays
//! paused), unless it failed for good: a reload starts failed pipelines anew.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::{join_all, BoxFuture, Shared};
use futures_util::FutureExt;

use crate::backoff::Backoff;
use crate::clients::{kafka, mongo, ClientError};
use crate::config::{pipeline_names, Config, ConfigDiff};
use crate::ops::control::{
    self, Action, Control, ControlError, Kind, PipelineBoard, PipelineReport, Snapshot,
    SnapshotControl,
};
use crate::ops::health::{self, Readiness};
use crate::ops::metrics::Metrics;
use crate::ops::status::StatusBoard;
use crate::pipeline::{PipelineEnv, SetPaused, StopPipeline};
use crate::sink::SinkSupervisor;
use crate::source::SourceSupervisor;

/// How many control messages may wait in the supervisor's mailbox.
const MAILBOX_CAPACITY: usize = crate::CONTROL_MAILBOX_CAPACITY;

/// How often MongoDB and Kafka are probed once the daemon runs.
const PROBE_INTERVAL: Duration = Duration::from_secs(3);

/// A running pipeline's supervisor.
enum Pipeline {
    Source(Addr<SourceSupervisor>),
    Sink(Addr<SinkSupervisor>),
}

impl Pipeline {
    /// Drains and stops the pipeline; answers what it could not finish, if anything.
    async fn stop(self) -> Result<Option<String>, MailboxError> {
        match self {
            Self::Source(addr) => addr.send(StopPipeline).await,
            Self::Sink(addr) => addr.send(StopPipeline).await,
        }
    }

    /// Pauses or resumes the pipeline; answers once it took effect.
    fn set_paused(
        &self,
        pause: bool,
    ) -> impl std::future::Future<Output = Result<(), MailboxError>> {
        let this = match self {
            Self::Source(addr) => Self::Source(addr.clone()),
            Self::Sink(addr) => Self::Sink(addr.clone()),
        };
        async move {
            match this {
                Self::Source(addr) => addr.send(SetPaused(pause)).await,
                Self::Sink(addr) => addr.send(SetPaused(pause)).await,
            }
        }
    }
}

/// Asks the root supervisor to stop every pipeline, then itself; answers what the
/// pipelines could not finish, one line each (empty when everything was written).
#[derive(Message, Debug)]
#[rtype(result = "Vec<String>")]
pub struct Shutdown;

/// Asks the root supervisor to apply a new (already validated) configuration; answers
/// what changed.
#[derive(Message, Debug)]
#[rtype(result = "ConfigDiff")]
pub struct Reload(pub Config);

/// The pipelines that have not stopped cleanly during a shutdown (still draining, or what
/// they could not finish), by name, for the daemon to report when the deadline passes.
pub type Draining = Arc<Mutex<BTreeMap<String, String>>>;

/// The root supervisor.
pub struct Supervisor {
    config: Arc<Config>,
    readiness: Readiness,
    metrics: Metrics,
    status: StatusBoard,
    mongo: Option<mongodb::Client>,
    pipelines: BTreeMap<String, Pipeline>,
    connect_backoff: Backoff,
    probing: bool,
    /// Services whose last probe failed, to log when they answer again.
    unhealthy: BTreeSet<&'static str>,
    shutting_down: bool,
    draining: Draining,
    /// Every pipeline's state, as `/pipelines` shows it.
    board: PipelineBoard,
    /// The pipelines paused by hand: a reload that starts one anew starts it paused.
    paused: BTreeSet<String>,
    /// The pipelines a restart by hand is stopping, to start anew once stopped, with the
    /// stop (a shutdown meanwhile waits for it too); it answers what was left undone.
    restarting: BTreeMap<String, Shared<BoxFuture<'static, Option<String>>>>,
}

impl Supervisor {
    /// A supervisor for `config`, reporting through `readiness`, `metrics`, `status` and
    /// `board`.
    pub fn new(
        config: Config,
        readiness: Readiness,
        metrics: Metrics,
        status: StatusBoard,
        board: PipelineBoard,
    ) -> Self {
        register(&board, &config);
        Self {
            config: Arc::new(config),
            readiness,
            metrics,
            status,
            mongo: None,
            pipelines: BTreeMap::new(),
            connect_backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
                .with_jitter(),
            probing: false,
            unhealthy: BTreeSet::new(),
            shutting_down: false,
            draining: Draining::default(),
            board,
            paused: BTreeSet::new(),
            restarting: BTreeMap::new(),
        }
    }

    /// The pipelines still draining while a shutdown runs.
    pub fn draining(&self) -> Draining {
        self.draining.clone()
    }

    /// Checks that both services answer, then starts the pipelines; on failure retries
    /// with backoff, staying not ready and saying why.
    fn connect(&mut self, ctx: &mut Context<Self>) {
        let config = self.config.clone();
        let attempt = async move {
            let brokers = kafka::check(&config.kafka).await?;
            let client = mongo::connect(&config.mongodb).await?;
            mongo::ping(&client, &config.mongodb).await?;
            Ok::<_, ClientError>((brokers, client))
        };
        ctx.spawn(attempt.into_actor(self).map(|result, act, ctx| {
            if act.shutting_down {
                return;
            }
            match result {
                Ok((brokers, client)) => {
                    act.connect_backoff.reset();
                    act.mongo = Some(client.clone());
                    let names = pipeline_names(&act.config);
                    for name in names {
                        act.start_pipeline(&name, &client);
                    }
                    act.readiness.clear(health::DAEMON);
                    tracing::info!(
                        kafka_brokers = brokers,
                        mongodb = %mongo::hosts(&act.config.mongodb),
                        sources = act.config.sources.len(),
                        sinks = act.config.sinks.len(),
                        "connected"
                    );
                    ctx.run_interval(PROBE_INTERVAL, |act, ctx| act.probe(ctx));
                }
                Err(error) => {
                    let retry_in = act.connect_backoff.next_delay();
                    tracing::warn!(%error, ?retry_in, "services not reachable; retrying");
                    act.metrics.connect_failed(error.service());
                    act.readiness
                        .set_problem(health::DAEMON, format!("connecting: {error}"));
                    ctx.run_later(retry_in, |act, ctx| act.connect(ctx));
                }
            }
        }));
    }

    /// Asks Kafka for its metadata and MongoDB for a ping, and reports each on `/ready`.
    fn probe(&mut self, ctx: &mut Context<Self>) {
        let Some(client) = self.mongo.clone() else {
            return;
        };
        if self.probing || self.shutting_down {
            return;
        }
        self.probing = true;
        let config = self.config.clone();
        let timeout = config
            .kafka
            .request_timeout
            .max(config.mongodb.connect_timeout);
        let probes = async move {
            let kafka = kafka::check(&config.kafka).await.map(|_| ());
            // A server that stopped answering on an open connection would hang the ping.
            let mongo =
                match tokio::time::timeout(timeout, mongo::ping(&client, &config.mongodb)).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err(format!(
                        "MongoDB at {}: no answer to ping within {timeout:?}",
                        mongo::hosts(&config.mongodb)
                    )),
                };
            (kafka.map_err(|e| e.to_string()), mongo)
        };
        ctx.spawn(probes.into_actor(self).map(|(kafka, mongo), act, _| {
            act.probing = false;
            for (component, service, result) in [
                (health::KAFKA, "kafka", kafka),
                (health::MONGODB, "mongodb", mongo),
            ] {
                match result {
                    Ok(()) => {
                        if act.unhealthy.remove(service) {
                            tracing::info!(service, "answers again");
                        }
                        act.readiness.clear(component);
                    }
                    Err(error) => {
                        tracing::warn!(service, %error, "readiness probe failed");
                        act.unhealthy.insert(service);
                        act.metrics.connect_failed(service);
                        act.readiness.set_problem(component, error);
                    }
                }
            }
        }));
    }

    fn start_pipeline(&mut self, name: &str, mongo: &mongodb::Client) {
        // A restart by hand still stopping it starts it once stopped.
        if self.restarting.contains_key(name) || self.pipelines.contains_key(name) {
            return;
        }
        let env = PipelineEnv {
            mongo: mongo.clone(),
            kafka: Arc::new(self.config.kafka.clone()),
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
            shutdown_deadline: self.config.shutdown.timeout,
            status: self.status.clone(),
            board: self.board.clone(),
            paused: self.paused.contains(name),
        };
        let pipeline = if let Some(source) = self.config.sources.iter().find(|s| s.name == name) {
            self.board.register(name, Kind::Source);
            Pipeline::Source(SourceSupervisor::new(source.clone(), env).start())
        } else if let Some(sink) = self.config.sinks.iter().find(|s| s.name == name) {
            self.board.register(name, Kind::Sink);
            Pipeline::Sink(SinkSupervisor::new(sink.clone(), env).start())
        } else {
            return;
        };
        // Not ready until the pipeline itself says it runs: its actor's `started` runs later
        // on this thread, and a sink counts its topics' partitions first.
        self.readiness
            .set_problem(health::pipeline(name), "starting");
        self.pipelines.insert(name.to_owned(), pipeline);
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.readiness
            .set_problem(health::DAEMON, "connecting to MongoDB and Kafka");
        self.connect(ctx);
    }
}

impl Handler<Reload> for Supervisor {
    type Result = AtomicResponse<Self, ConfigDiff>;

    fn handle(&mut self, Reload(config): Reload, _: &mut Self::Context) -> Self::Result {
        let diff = ConfigDiff::between(&self.config, &config);
        let mongo_changed = self.config.mongodb != config.mongodb;
        self.config = Arc::new(config);
        register(&self.board, &self.config);
        // Failed for good: a reload starts them anew, changed or not.
        let failed: Vec<String> = diff
            .unchanged
            .iter()
            .filter(|name| self.board.get(name).map(|r| r.state) == Some(control::State::Failed))
            .cloned()
            .collect();
        for name in &diff.removed {
            self.paused.remove(name);
        }
        // Not connected yet: the pipelines start with the new configuration once connected.
        let connected = self.mongo.is_some() && !self.shutting_down;
        let stopping: Vec<(String, Pipeline)> = if connected {
            diff.removed
                .iter()
                .chain(&diff.changed)
                .chain(&failed)
                .filter_map(|name| self.pipelines.remove(name).map(|p| (name.clone(), p)))
                .collect()
        } else {
            Vec::new()
        };
        let new_config = self.config.clone();
        // Stop first (their checkpoints and offsets are written), then start anew.
        let work = async move {
            join_all(stopping.into_iter().map(|(name, pipeline)| async move {
                match pipeline.stop().await {
                    Ok(None) => {}
                    Ok(Some(left)) => {
                        tracing::warn!(pipeline = %name, %left, "pipeline stopped before finishing; what was left is read again at its next start")
                    }
                    Err(error) => {
                        tracing::warn!(pipeline = %name, %error, "pipeline was already gone")
                    }
                }
            }))
            .await;
            if mongo_changed {
                // Pipelines of the new `[mongodb]` get a client of their own.
                Some(mongo::connect(&new_config.mongodb).await)
            } else {
                None
            }
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(
            move |new_client, act, _| {
                for name in &diff.removed {
                    act.metrics.forget_pipeline(name);
                    act.status.remove(name);
                    act.board.remove(name);
                }
                if !connected {
                    return diff;
                }
                match new_client {
                    Some(Ok(client)) => act.mongo = Some(client),
                    Some(Err(error)) => {
                        // Validated, but the driver refused it: keep the old client; the
                        // pipelines' own retries and the probe report what fails.
                        tracing::error!(%error, "building the MongoDB client of the new configuration failed; keeping the previous client");
                    }
                    None => {}
                }
                if let Some(client) = act.mongo.clone() {
                    for name in diff.changed.iter().chain(&failed) {
                        act.board.restarted(name);
                    }
                    for name in diff.added.iter().chain(&diff.changed).chain(&failed) {
                        act.metrics.forget_pipeline(name);
                        act.status.remove(name);
                        act.start_pipeline(name, &client);
                    }
                }
                diff
            },
        )))
    }
}

/// Stops `pipeline`; answers what it left undone (a pipeline already gone left nothing).
async fn stop_reporting(name: String, pipeline: Pipeline) -> Option<String> {
    match pipeline.stop().await {
        Ok(left) => left,
        Err(error) => {
            tracing::warn!(pipeline = %name, %error, "pipeline was already gone");
            None
        }
    }
}

/// Enters every pipeline of `config` on `board` (those new to it as starting).
fn register(board: &PipelineBoard, config: &Config) {
    for source in &config.sources {
        board.register(&source.name, Kind::Source);
    }
    for sink in &config.sinks {
        board.register(&sink.name, Kind::Sink);
    }
}

impl Supervisor {
    /// Starts the pipeline `name` anew: stops it (drains, writes its checkpoints or
    /// offsets), then starts it with the configuration of then, running.
    fn restart(&mut self, name: String, ctx: &mut Context<Self>) {
        self.paused.remove(&name);
        self.board.restarted(&name);
        self.readiness.clear(&health::pipeline(&name));
        let Some(pipeline) = self.pipelines.remove(&name) else {
            if let Some(client) = self.mongo.clone() {
                self.start_pipeline(&name, &client);
            }
            return;
        };
        tracing::info!(pipeline = %name, "restarting the pipeline by hand");
        let stop = stop_reporting(name.clone(), pipeline).boxed().shared();
        self.restarting.insert(name.clone(), stop.clone());
        ctx.spawn(stop.into_actor(self).map(move |left, act, _| {
            act.restarting.remove(&name);
            if let Some(left) = left {
                tracing::warn!(pipeline = %name, %left, "pipeline stopped before finishing; what was left is read again at its next start");
            }
            // A shutdown meanwhile waited for this stop, and starts nothing.
            if act.shutting_down {
                return;
            }
            if let Some(client) = act.mongo.clone() {
                act.metrics.forget_pipeline(&name);
                act.status.remove(&name);
                act.start_pipeline(&name, &client);
            }
        }));
    }
}

impl Handler<Control> for Supervisor {
    type Result = ResponseActFuture<Self, Result<PipelineReport, ControlError>>;

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) -> Self::Result {
        let Control {
            pipeline: name,
            command,
        } = msg;
        let answer = |result| -> Self::Result { Box::pin(fut::ready(result)) };
        let Some(report) = self.board.get(&name) else {
            return answer(Err(ControlError::NotFound(name)));
        };
        if self.shutting_down {
            return answer(Err(ControlError::Unavailable(
                "the daemon is shutting down".to_owned(),
            )));
        }
        if self.restarting.contains_key(&name) {
            return answer(Err(ControlError::Conflict(format!(
                "pipeline `{name}` is being restarted: it is still stopping"
            ))));
        }
        let action = match control::decide(&name, report.state, command) {
            Ok(Action::Nothing) => return answer(Ok(report)),
            Ok(action) => action,
            Err(error) => return answer(Err(error)),
        };
        if self.mongo.is_none() {
            return answer(Err(ControlError::Unavailable(format!(
                "pipeline `{name}` has not started: the daemon is still connecting to MongoDB and Kafka"
            ))));
        }
        if action == Action::Restart {
            self.restart(name.clone(), ctx);
            return answer(self.board.get(&name).ok_or(ControlError::NotFound(name)));
        }
        let pause = action == Action::Pause;
        let Some(pipeline) = self.pipelines.get(&name) else {
            return answer(Err(ControlError::Unavailable(format!(
                "pipeline `{name}` is not running in this daemon"
            ))));
        };
        if pause {
            self.paused.insert(name.clone());
        } else {
            self.paused.remove(&name);
        }
        Box::pin(
            pipeline
                .set_paused(pause)
                .into_actor(self)
                .map(move |sent, act, _| match sent {
                    Ok(()) => act.board.get(&name).ok_or(ControlError::NotFound(name)),
                    Err(error) => Err(ControlError::Unavailable(format!(
                        "pipeline `{name}` did not take the command: {error}"
                    ))),
                }),
        )
    }
}

impl Handler<SnapshotControl> for Supervisor {
    type Result = ResponseActFuture<Self, Result<PipelineReport, ControlError>>;

    fn handle(&mut self, msg: SnapshotControl, _: &mut Self::Context) -> Self::Result {
        let SnapshotControl {
            pipeline: name,
            command,
        } = msg;
        let answer = |result| -> Self::Result { Box::pin(fut::ready(result)) };
        let Some(report) = self.board.get(&name) else {
            return answer(Err(ControlError::NotFound(name)));
        };
        if self.shutting_down {
            return answer(Err(ControlError::Unavailable(
                "the daemon is shutting down".to_owned(),
            )));
        }
        if let Err(error) = control::snapshot_allowed(&name, report.kind, report.state) {
            return answer(Err(error));
        }
        let Some(Pipeline::Source(addr)) = self.pipelines.get(&name) else {
            return answer(Err(ControlError::Unavailable(format!(
                "pipeline `{name}` is not running in this daemon"
            ))));
        };
        Box::pin(addr.send(Snapshot(command)).into_actor(self).map(
            move |sent, act, _| match sent {
                Ok(Ok(())) => act.board.get(&name).ok_or(ControlError::NotFound(name)),
                Ok(Err(refused)) => Err(ControlError::Conflict(refused)),
                Err(error) => Err(ControlError::Unavailable(format!(
                    "pipeline `{name}` did not take the command: {error}"
                ))),
            },
        ))
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, Vec<String>>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        self.readiness.set_problem(health::DAEMON, "shutting down");
        let pipelines = std::mem::take(&mut self.pipelines);
        if let Ok(mut draining) = self.draining.lock() {
            draining.extend(
                pipelines
                    .keys()
                    .map(|name| (name.clone(), "draining".to_owned())),
            );
        }
        // The pipelines a restart by hand is stopping are waited for as well.
        let restarting = std::mem::take(&mut self.restarting);
        if let Ok(mut draining) = self.draining.lock() {
            draining.extend(
                restarting
                    .keys()
                    .map(|name| (name.clone(), "draining".to_owned())),
            );
        }
        let stopping = pipelines
            .into_iter()
            .map(|(name, pipeline)| (name.clone(), stop_reporting(name, pipeline).boxed()))
            .chain(
                restarting
                    .into_iter()
                    .map(|(name, stop)| (name, stop.boxed())),
            );
        let stops: Vec<_> = stopping
            .map(|(name, stop)| {
                let draining = self.draining.clone();
                async move {
                    let left = stop.await;
                    if let Ok(mut draining) = draining.lock() {
                        match &left {
                            None => {
                                draining.remove(&name);
                            }
                            Some(left) => {
                                draining.insert(name.clone(), left.clone());
                            }
                        }
                    }
                    left.map(|left| format!("{name}: {left}"))
                }
            })
            .collect();
        Box::pin(join_all(stops).into_actor(self).map(|left, _, ctx| {
            tracing::info!("all pipelines stopped");
            ctx.stop();
            left.into_iter().flatten().collect()
        }))
    }
}
