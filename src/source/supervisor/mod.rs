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

use crate::ops::control::{Snapshot, SnapshotCommand};
use crate::ops::health;
use crate::pipeline::{SetPaused, StopPipeline};
use crate::source::ledger::Ending;
use crate::source::model::Scope;
use crate::source::{reader, signals};

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

impl Handler<StopPipeline> for SourceSupervisor {
    type Result = ResponseActFuture<Self, Option<String>>;

    fn handle(&mut self, _: StopPipeline, _: &mut Self::Context) -> Self::Result {
        self.lifecycle.stop();
        self.board.stopped(&self.config.name);
        // A stopped pipeline reports nothing any more: a reload may have removed it.
        self.readiness.clear(&health::pipeline(&self.config.name));
        self.readiness.clear(&health::config(&self.config.name));
        self.readiness
            .clear(&health::schema_registry(&self.config.name));
        self.readiness
            .clear(&health::topic_creation(&self.config.name));
        self.readiness
            .clear_prefix(&health::reader(&self.config.name, ""));
        self.readiness
            .clear_prefix(&health::slot(&self.config.name, ""));
        self.metrics.fenced_slots(&self.config.name, 0);
        let wind_down = self.wind_down(Ending::Stop);
        Box::pin(wind_down.into_actor(self).map(|left, act, ctx| {
            act.handed_over();
            act.leave_group();
            ctx.stop();
            (!left.is_empty()).then(|| left.join(", "))
        }))
    }
}

impl SourceSupervisor {
    /// Pauses the pipeline: winds its launch down (readers stopped after their batch, the
    /// open transaction committed, checkpoints written, producers closed) and holds its next
    /// start back until the resume. It stays in its group: its slots stay its own.
    fn pause(&mut self) -> ResponseActFuture<Self, ()> {
        let name = self.config.name.clone();
        // Deliberate: not a readiness problem, whatever kept it from starting before.
        self.readiness.clear(&health::pipeline(&name));
        self.board.paused(&name);
        if !self.lifecycle.pause() {
            tracing::info!(pipeline = %name, "source pipeline paused");
            return Box::pin(fut::ready(()));
        }
        let wind_down = self.wind_down(Ending::Stop);
        Box::pin(wind_down.into_actor(self).map(move |_, act, ctx| {
            act.handed_over();
            // Held back while paused: the resume makes it.
            if let Some(attempt) = act.lifecycle.start_again() {
                act.start(attempt, ctx);
            }
            tracing::info!(pipeline = %name, "source pipeline paused: its readers stopped, its checkpoints are written");
        }))
    }
}

impl Handler<Snapshot> for SourceSupervisor {
    type Result = Result<(), String>;

    fn handle(&mut self, Snapshot(command): Snapshot, _: &mut Self::Context) -> Self::Result {
        let pipeline = &self.config.name;
        match command {
            SnapshotCommand::Cancel => {
                tracing::warn!(pipeline = %pipeline, "snapshots cancelled");
                self.snapshots.cancel();
                Ok(())
            }
            SnapshotCommand::Start(request) => {
                if request.namespaces.is_empty() {
                    return Err(
                        "`namespaces` is empty: name the collections (`db.coll`) to snapshot"
                            .to_owned(),
                    );
                }
                let unwatched = reader::snapshot::unwatched(&self.config, &request.namespaces);
                if !unwatched.is_empty() {
                    return Err(format!(
                        "pipeline `{pipeline}` does not watch {}: a snapshot copies collections its change stream follows (`db.coll`)",
                        unwatched.join(", ")
                    ));
                }
                tracing::info!(pipeline = %pipeline, namespaces = ?request.namespaces, "snapshot on demand queued");
                self.snapshots.push(request);
                Ok(())
            }
        }
    }
}

impl Handler<SetPaused> for SourceSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, SetPaused(pause): SetPaused, ctx: &mut Self::Context) -> Self::Result {
        if self.lifecycle.is_stopped() {
            return Box::pin(fut::ready(()));
        }
        if pause {
            return self.pause();
        }
        if self.lifecycle.is_paused() {
            self.board.resuming(&self.config.name);
            tracing::info!(pipeline = %self.config.name, "source pipeline resumed");
            // Before the group's first assignment the first start waits for it, as always.
            if let Some(attempt) = self.lifecycle.resume() {
                if self.handover.started() {
                    self.start(attempt, ctx);
                }
            }
        }
        Box::pin(fut::ready(()))
    }
}
