//! Sink pipelines: Kafka topics → MongoDB.
//!
//! [`SinkSupervisor`] is the actor the root supervisor starts for each `[[sink]]`; it owns
//! the pipeline's MongoDB client and Kafka settings and will own its consumer and
//! partition writers.

pub mod model;

use std::sync::Arc;

use actix::prelude::*;

use crate::config::{KafkaConfig, SinkConfig};
use crate::ops::metrics::Metrics;
use crate::supervisor::StopPipeline;

/// Supervises one sink pipeline.
pub struct SinkSupervisor {
    config: SinkConfig,
    // Held for the consumer and the partition writers the pipeline starts.
    _mongo: mongodb::Client,
    _kafka: Arc<KafkaConfig>,
    metrics: Metrics,
}

impl SinkSupervisor {
    /// A supervisor for the pipeline `config`.
    pub fn new(
        config: SinkConfig,
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
}

impl Actor for SinkSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::CONTROL_MAILBOX_CAPACITY);
        self.metrics.pipeline_started("sink");
        tracing::info!(
            pipeline = %self.config.name,
            topics = ?self.config.topics,
            group_id = %self.config.effective_group_id(),
            database = %self.config.database,
            "sink pipeline started"
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics.pipeline_stopped("sink");
        tracing::info!(pipeline = %self.config.name, "sink pipeline stopped");
    }
}

impl Handler<StopPipeline> for SinkSupervisor {
    type Result = ();

    fn handle(&mut self, _: StopPipeline, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
