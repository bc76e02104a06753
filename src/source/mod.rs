//! Source pipelines: MongoDB change streams → Kafka.
//!
//! [`SourceSupervisor`] is the actor the root supervisor starts for each `[[source]]`; it
//! owns the pipeline's MongoDB client and Kafka settings and will own its change-stream
//! readers and producer.

use std::sync::Arc;

use actix::prelude::*;

use crate::config::{KafkaConfig, SourceConfig};
use crate::ops::metrics::Metrics;
use crate::supervisor::StopPipeline;

/// Supervises one source pipeline.
pub struct SourceSupervisor {
    config: SourceConfig,
    // Held for the readers and the producer the pipeline starts.
    _mongo: mongodb::Client,
    _kafka: Arc<KafkaConfig>,
    metrics: Metrics,
}

impl SourceSupervisor {
    /// A supervisor for the pipeline `config`.
    pub fn new(
        config: SourceConfig,
        mongo: mongodb::Client,
        kafka: Arc<KafkaConfig>,
        metrics: Metrics,
    ) -> Self {
        Self {
            config,
            _mongo: mongo,
            _kafka: kafka,
            metrics,
        }
    }

    /// The namespace watched, as MongoDB writes it (`db.coll`, `db`, or `*` for all).
    pub fn namespace(config: &SourceConfig) -> String {
        match (&config.database, &config.collection) {
            (Some(db), Some(coll)) => format!("{db}.{coll}"),
            (Some(db), None) => db.clone(),
            (None, _) => "*".to_owned(),
        }
    }
}

impl Actor for SourceSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::CONTROL_MAILBOX_CAPACITY);
        self.metrics.pipeline_started("source");
        tracing::info!(pipeline = %self.config.name, namespace = %Self::namespace(&self.config), "source pipeline started");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics.pipeline_stopped("source");
        tracing::info!(pipeline = %self.config.name, "source pipeline stopped");
    }
}

impl Handler<StopPipeline> for SourceSupervisor {
    type Result = ();

    fn handle(&mut self, _: StopPipeline, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
