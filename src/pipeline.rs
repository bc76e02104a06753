//! What every pipeline is, seen from the supervisor above it: the surroundings it is started
//! with and the message that stops it. Source and sink pipelines import this module, never
//! the supervisor, so no import runs back up the tree.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::codec::schema_registry::{Reachability, RegistryError};
use crate::config::KafkaConfig;
use crate::ops::control::PipelineBoard;
use crate::ops::health::Readiness;
use crate::ops::metrics::Metrics;
use crate::ops::status::StatusBoard;

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
    /// Where the pipeline reports its state, failures and restarts (`/pipelines`).
    pub board: PipelineBoard,
    /// Start paused (paused by hand before a reload started it anew).
    pub paused: bool,
}

/// A schema registry hook keeping `pipeline` not ready, saying why, while its registry does
/// not answer or refuses it (401/403, a URL that leads nowhere): the pipeline holds its
/// records back meanwhile (and retries), so `/ready`, the `schema_registry_held_back` metric
/// and a WARN (once per reason) are where an operator sees it.
pub fn registry_readiness(
    readiness: &Readiness,
    metrics: &Metrics,
    pipeline: &str,
) -> Reachability {
    let readiness = readiness.clone();
    let metrics = metrics.clone();
    let pipeline = pipeline.to_owned();
    let component = crate::ops::health::schema_registry(&pipeline);
    let last: std::sync::Mutex<Option<&'static str>> = std::sync::Mutex::new(None);
    Arc::new(move |url, error| {
        let reason = error.map(RegistryError::reason);
        let mut last = last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match error {
            Some(error) => {
                if *last != reason {
                    tracing::warn!(pipeline = %pipeline, registry = %url, reason = reason.unwrap_or_default(), %error, "the schema registry does not answer or refuses the daemon; records are held back until it answers");
                }
                readiness.set_problem(
                    component.clone(),
                    format!("{error}; records are held back until it answers"),
                );
            }
            None => {
                if last.is_some() {
                    tracing::info!(pipeline = %pipeline, registry = %url, "the schema registry answers again");
                }
                readiness.clear(&component);
            }
        }
        if *last != reason {
            metrics.registry_held_back(&pipeline, reason);
        }
        *last = reason;
    })
}

/// Asks a pipeline supervisor to drain and stop (within the shutdown deadline); answers
/// what it could not finish, if anything.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Option<String>")]
pub struct StopPipeline;

/// Asks a pipeline supervisor to pause (`true`) or resume (`false`). A paused source reads
/// nothing and keeps its checkpoints and its slots; a paused sink writes and commits nothing
/// and keeps its partitions (its consumer stays in the group). It answers once a pause took
/// effect (readers stopped, partitions paused) or a resume began.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SetPaused(pub bool);
