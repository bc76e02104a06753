//! The root actor: connects to MongoDB and Kafka, starts one pipeline supervisor per
//! configured pipeline, probes both services for `/ready`, applies configuration reloads
//! (only to the pipelines that changed), and stops them all on shutdown.
//!
//! Restart policy lives here and in the pipeline supervisors, not in the actors they
//! supervise.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;

use crate::backoff::Backoff;
use crate::clients::{kafka, mongo, ClientError};
use crate::config::{Config, SinkConfig, SourceConfig};
use crate::ops::health::{self, Readiness};
use crate::ops::metrics::Metrics;
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
}

/// A pipeline's configuration, to tell what a reload changed.
#[derive(Debug, Clone, PartialEq)]
enum PipelineConfig {
    Source(SourceConfig),
    Sink(SinkConfig),
}

fn pipeline_configs(config: &Config) -> BTreeMap<String, PipelineConfig> {
    config
        .sources
        .iter()
        .map(|s| (s.name.clone(), PipelineConfig::Source(s.clone())))
        .chain(
            config
                .sinks
                .iter()
                .map(|s| (s.name.clone(), PipelineConfig::Sink(s.clone()))),
        )
        .collect()
}

/// What a reload changes, by pipeline name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Pipelines only in the new configuration.
    pub added: Vec<String>,
    /// Pipelines only in the old one.
    pub removed: Vec<String>,
    /// Pipelines in both whose settings (or the clients they use) differ.
    pub changed: Vec<String>,
    /// Pipelines left running as they are.
    pub unchanged: Vec<String>,
    /// Top-level sections that changed but apply only at the next start.
    pub needs_restart: Vec<&'static str>,
}

impl ConfigDiff {
    /// Compares two valid configurations. A change of `[mongodb]` or `[kafka]` changes
    /// every pipeline, since all of them use those clients.
    pub fn between(old: &Config, new: &Config) -> Self {
        let (before, after) = (pipeline_configs(old), pipeline_configs(new));
        let clients_changed = old.mongodb != new.mongodb || old.kafka != new.kafka;
        let mut diff = Self::default();
        for (name, config) in &after {
            match before.get(name) {
                None => diff.added.push(name.clone()),
                Some(previous) if clients_changed || previous != config => {
                    diff.changed.push(name.clone())
                }
                Some(_) => diff.unchanged.push(name.clone()),
            }
        }
        diff.removed = before
            .keys()
            .filter(|name| !after.contains_key(*name))
            .cloned()
            .collect();
        for (section, differs) in [("http", old.http != new.http), ("log", old.log != new.log)] {
            if differs {
                diff.needs_restart.push(section);
            }
        }
        diff
    }

    /// Whether the reload touches any pipeline.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Asks a pipeline supervisor to drain and stop (within the shutdown deadline); answers
/// what it could not finish, if anything.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Option<String>")]
pub struct StopPipeline;

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

/// The names of the pipelines still draining during a shutdown, for the daemon to report
/// when the deadline passes.
pub type Draining = Arc<Mutex<BTreeSet<String>>>;

/// The root supervisor.
pub struct Supervisor {
    config: Arc<Config>,
    readiness: Readiness,
    metrics: Metrics,
    mongo: Option<mongodb::Client>,
    pipelines: BTreeMap<String, Pipeline>,
    connect_backoff: Backoff,
    probing: bool,
    shutting_down: bool,
    draining: Draining,
}

impl Supervisor {
    /// A supervisor for `config`, reporting through `readiness` and `metrics`.
    pub fn new(config: Config, readiness: Readiness, metrics: Metrics) -> Self {
        Self {
            config: Arc::new(config),
            readiness,
            metrics,
            mongo: None,
            pipelines: BTreeMap::new(),
            connect_backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            probing: false,
            shutting_down: false,
            draining: Draining::default(),
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
                    let names: Vec<String> = pipeline_configs(&act.config).into_keys().collect();
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
                        if act.readiness.status().is_err_and(|r| r.contains(component)) {
                            tracing::info!(service, "answers again");
                        }
                        act.readiness.clear(component);
                    }
                    Err(error) => {
                        tracing::warn!(service, %error, "readiness probe failed");
                        act.metrics.connect_failed(service);
                        act.readiness.set_problem(component, error);
                    }
                }
            }
        }));
    }

    fn start_pipeline(&mut self, name: &str, mongo: &mongodb::Client) {
        let kafka = Arc::new(self.config.kafka.clone());
        let deadline = self.config.shutdown.timeout;
        let pipeline = if let Some(source) = self.config.sources.iter().find(|s| s.name == name) {
            Pipeline::Source(
                SourceSupervisor::new(
                    source.clone(),
                    mongo.clone(),
                    kafka,
                    self.metrics.clone(),
                    self.readiness.clone(),
                    deadline,
                )
                .start(),
            )
        } else if let Some(sink) = self.config.sinks.iter().find(|s| s.name == name) {
            Pipeline::Sink(
                SinkSupervisor::new(
                    sink.clone(),
                    mongo.clone(),
                    kafka,
                    self.metrics.clone(),
                    self.readiness.clone(),
                    deadline,
                )
                .start(),
            )
        } else {
            return;
        };
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
        // Not connected yet: the pipelines start with the new configuration once connected.
        let connected = self.mongo.is_some() && !self.shutting_down;
        let stopping: Vec<(String, Pipeline)> = if connected {
            diff.removed
                .iter()
                .chain(&diff.changed)
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
                    for name in diff.added.iter().chain(&diff.changed) {
                        act.metrics.forget_pipeline(name);
                        act.start_pipeline(name, &client);
                    }
                }
                diff
            },
        )))
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, Vec<String>>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        self.readiness.set_problem(health::DAEMON, "shutting down");
        let pipelines = std::mem::take(&mut self.pipelines);
        if let Ok(mut draining) = self.draining.lock() {
            draining.extend(pipelines.keys().cloned());
        }
        let stops: Vec<_> = pipelines
            .into_iter()
            .map(|(name, pipeline)| {
                let draining = self.draining.clone();
                async move {
                    let left = match pipeline.stop().await {
                        Ok(left) => left,
                        Err(error) => {
                            tracing::warn!(pipeline = %name, %error, "pipeline was already gone at shutdown");
                            None
                        }
                    };
                    if let Ok(mut draining) = draining.lock() {
                        draining.remove(&name);
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(pipelines: &str) -> Config {
        let text = format!(
            "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"h:1\"\n{pipelines}"
        );
        crate::config::load_str(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    const A: &str = "[[source]]\nname = \"a\"\ndatabase = \"d\"\n";
    const B: &str = "[[sink]]\nname = \"b\"\ntopics = [\"t\"]\ndatabase = \"d\"\n";
    const C: &str = "[[source]]\nname = \"c\"\ndatabase = \"d\"\ncollection = \"x\"\n";

    #[test]
    fn a_reload_is_split_into_added_removed_changed_and_unchanged() {
        let old = config(&format!("{A}{B}{C}"));
        let changed_c = C.replace("\"x\"", "\"y\"");
        let new = config(&format!(
            "{A}{changed_c}[[sink]]\nname = \"d\"\ntopics = [\"t\"]\ndatabase = \"d\"\n"
        ));
        let diff = ConfigDiff::between(&old, &new);
        assert_eq!(diff.added, ["d"]);
        assert_eq!(diff.removed, ["b"]);
        assert_eq!(diff.changed, ["c"]);
        assert_eq!(diff.unchanged, ["a"]);
        assert!(diff.needs_restart.is_empty());
        assert!(!diff.is_empty());
        let same = ConfigDiff::between(&old, &old);
        assert!(same.is_empty());
        assert_eq!(same.unchanged, ["a", "b", "c"]);
    }

    #[test]
    fn client_changes_change_every_pipeline_and_http_needs_a_restart() {
        let old = config(&format!("{A}{B}"));
        let mut new = old.clone();
        new.kafka.request_timeout = Duration::from_secs(99);
        new.http.address = "127.0.0.1:1".parse().unwrap_or(new.http.address);
        let diff = ConfigDiff::between(&old, &new);
        assert_eq!(diff.changed, ["a", "b"]);
        assert!(diff.unchanged.is_empty());
        assert_eq!(diff.needs_restart, ["http"]);
    }
}
