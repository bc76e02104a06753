//! Source pipelines: MongoDB change streams → Kafka.
//!
//! [`SourceSupervisor`] is the actor the root supervisor starts for each `[[source]]`. It
//! joins the pipeline's consumer group (`membership.rs`), which hands it slots
//! (`slots.rs`, `ownership.rs`; what it does when they move is `handover.rs`); for the owned slots with readers, it fences their producers,
//! loads the checkpoints, starts one [`producer::RecordProducer`] per slot and one
//! [`reader::ChangeStreamReader`] per watched namespace of those slots, restarts a failed
//! reader with backoff from its newest acknowledged position (other readers keep running),
//! restarts the whole pipeline when a producer fails, stops and starts only the slots the
//! group moves while the others run on (a fenced producer loses its slot, taken again after
//! a delay unless the group moves it), and drains everything on stop.

mod control;
mod failures;
mod group;
mod launch;
mod prepare;
mod readers;
mod slot_moves;
mod state;
mod wind_down;

pub use self::state::SourceSupervisor;

use std::time::Duration;

use actix::prelude::*;

use crate::ops::health;
use crate::source::model::Scope;
use crate::source::signals;

impl SourceSupervisor {}

impl Actor for SourceSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::CONTROL_MAILBOX_CAPACITY);
        self.metrics.pipeline_started("source");
        self.metrics.source_pipeline_series(&self.config.name);
        for watched in Scope::of(&self.config) {
            self.metrics
                .reader_series(&self.config.name, &watched.namespace());
            // A collection's snapshot series exist from the start, at 0; a database or
            // deployment stream's appear with their first snapshot.
            if let Scope::Collection { db, coll } = &watched {
                self.metrics
                    .snapshot_series(&self.config.name, &format!("{db}.{coll}"));
            }
        }
        self.readiness
            .set_problem(health::pipeline(&self.config.name), "starting");
        tracing::info!(pipeline = %self.config.name, "source pipeline started");
        self.hear_from_group(ctx);
        // The first start waits for the group's first assignment: starting before would
        // fence and read checkpoints for no slot, then do it all again.
        self.join_group(ctx);
        if self.start_paused {
            let pausing = self.pause();
            ctx.spawn(pausing);
        }
        let every = (self.config.stall_timeout / 4)
            .clamp(Duration::from_millis(250), Duration::from_secs(10));
        ctx.run_interval(every, |act, ctx| act.check_stalls(ctx));
        if let Some(signals) = self.config.signal_collection.clone() {
            let watch = signals::watch(
                self.config.name.clone(),
                signals,
                self.mongo.clone(),
                ctx.address()
                    .recipient::<crate::ops::control::Snapshot>()
                    .downgrade(),
            );
            ctx.spawn(watch.into_actor(self));
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics.pipeline_stopped("source");
        tracing::info!(pipeline = %self.config.name, "source pipeline stopped");
    }
}

impl SourceSupervisor {}

impl SourceSupervisor {}
