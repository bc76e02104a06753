//! The root actor: connects to MongoDB and Kafka, starts one pipeline supervisor per
//! configured pipeline, reports readiness, and stops them all on shutdown.
//!
//! Restart policy lives here, not in the actors it supervises.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;

use crate::backoff::Backoff;
use crate::clients::{kafka, mongo, ClientError};
use crate::config::Config;
use crate::ops::health::Readiness;
use crate::ops::metrics::Metrics;
use crate::sink::SinkSupervisor;
use crate::source::SourceSupervisor;

/// How many control messages may wait in the supervisor's mailbox.
const MAILBOX_CAPACITY: usize = crate::CONTROL_MAILBOX_CAPACITY;

/// A running pipeline's supervisor.
enum Pipeline {
    Source(Addr<SourceSupervisor>),
    Sink(Addr<SinkSupervisor>),
}

/// Asks a pipeline supervisor to drain and stop.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StopPipeline;

/// Asks the root supervisor to stop every pipeline, then itself.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown;

/// The root supervisor.
pub struct Supervisor {
    config: Arc<Config>,
    readiness: Readiness,
    metrics: Metrics,
    pipelines: BTreeMap<String, Pipeline>,
    connect_backoff: Backoff,
    shutting_down: bool,
}

impl Supervisor {
    /// A supervisor for `config`, reporting through `readiness` and `metrics`.
    pub fn new(config: Config, readiness: Readiness, metrics: Metrics) -> Self {
        Self {
            config: Arc::new(config),
            readiness,
            metrics,
            pipelines: BTreeMap::new(),
            connect_backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            shutting_down: false,
        }
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
                    act.start_pipelines(client);
                    act.readiness.set_ready();
                    tracing::info!(
                        kafka_brokers = brokers,
                        mongodb = %mongo::hosts(&act.config.mongodb),
                        sources = act.config.sources.len(),
                        sinks = act.config.sinks.len(),
                        "ready"
                    );
                }
                Err(error) => {
                    let retry_in = act.connect_backoff.next_delay();
                    tracing::warn!(%error, ?retry_in, "services not reachable; retrying");
                    act.metrics.connect_failed(error.service());
                    act.readiness.set_not_ready(error.to_string());
                    ctx.run_later(retry_in, |act, ctx| act.connect(ctx));
                }
            }
        }));
    }

    fn start_pipelines(&mut self, mongo: mongodb::Client) {
        let kafka = Arc::new(self.config.kafka.clone());
        for source in &self.config.sources {
            let addr = SourceSupervisor::new(
                source.clone(),
                mongo.clone(),
                kafka.clone(),
                self.metrics.clone(),
                self.readiness.clone(),
                self.config.shutdown.timeout,
            )
            .start();
            self.pipelines
                .insert(source.name.clone(), Pipeline::Source(addr));
        }
        for sink in &self.config.sinks {
            let addr = SinkSupervisor::new(
                sink.clone(),
                mongo.clone(),
                kafka.clone(),
                self.metrics.clone(),
                self.readiness.clone(),
                self.config.shutdown.timeout,
            )
            .start();
            self.pipelines
                .insert(sink.name.clone(), Pipeline::Sink(addr));
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.readiness
            .set_not_ready("connecting to MongoDB and Kafka");
        self.connect(ctx);
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        self.readiness.set_not_ready("shutting down");
        let stops: Vec<_> = std::mem::take(&mut self.pipelines)
            .into_iter()
            .map(|(name, pipeline)| async move {
                let result = match pipeline {
                    Pipeline::Source(addr) => addr.send(StopPipeline).await,
                    Pipeline::Sink(addr) => addr.send(StopPipeline).await,
                };
                if let Err(error) = result {
                    tracing::warn!(pipeline = %name, %error, "pipeline was already gone at shutdown");
                }
            })
            .collect();
        Box::pin(join_all(stops).into_actor(self).map(|_, _, ctx| {
            tracing::info!("all pipelines stopped");
            ctx.stop();
        }))
    }
}
