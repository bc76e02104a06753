//! What every pipeline is, seen from the supervisor above it: the surroundings it is started
//! with and the message that stops it. Source and sink pipelines import this module, never
//! the supervisor, so no import runs back up the tree.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::config::KafkaConfig;
use crate::ops::health::Readiness;
use crate::ops::metrics::Metrics;
use crate::ops::status::StatusBoard;
use crate::schema_registry::Reachability;

/// What every pipeline supervisor gets from the root supervisor besides its configuration.
pub struct PipelineEnv {
    /// The MongoDB client.
    pub mongo: mongodb::Client,
    /// The Kafka settings its clients are built from.
    pub kafka: Arc<KafkaConfig>,
    /// The daemon's metrics.
    pub metrics: Metrics,
    /// The daemon's readiness, where the pipeline reports its problems.
    pub readiness: Readiness,
    /// How long draining may take when the pipeline stops.
    pub shutdown_deadline: Duration,
    /// Where the pipeline reports the progress of long jobs (`/status`).
    pub status: StatusBoard,
}

/// A schema registry hook keeping `pipeline` not ready, saying why, while its registry does
/// not answer: the pipeline holds its records back meanwhile (and retries), so `/ready` is
/// where an operator sees the reason.
pub fn registry_readiness(readiness: &Readiness, pipeline: &str) -> Reachability {
    let readiness = readiness.clone();
    let component = crate::ops::health::schema_registry(pipeline);
    Arc::new(move |_url, error| match error {
        Some(error) => readiness.set_problem(
            component.clone(),
            format!("{error}; records are held back until it answers"),
        ),
        None => readiness.clear(&component),
    })
}

/// Asks a pipeline supervisor to drain and stop (within the shutdown deadline); answers
/// what it could not finish, if anything.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Option<String>")]
pub struct StopPipeline;
