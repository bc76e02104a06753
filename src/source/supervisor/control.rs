//! The operator's controls (`ops/control.rs`, `/pipelines`): stop, pause and resume, and
//! snapshots on demand.
//!
//! The rules:
//! - A stop winds the launch down committing (readers stopped after their batch,
//!   checkpoints written), clears all the pipeline reported on `/ready` (a reload may have
//!   removed it), leaves the group and stops the actor; it answers what was left undone.
//! - A pause winds the launch down as a stop does, but stays in the group (its slots stay
//!   its own) and holds the next start back until the resume; a paused pipeline is not a
//!   readiness problem. A resume starts it again, unless the group has not assigned its
//!   first slots yet (the first start waits for them). A stopped pipeline ignores both.
//! - A snapshot on demand names collections the pipeline's change streams follow
//!   (`db.coll`); any other request is refused, saying why. It is queued for the readers
//!   (`reader::snapshot`); a cancel drops every snapshot.

use actix::prelude::*;

use super::state::SourceSupervisor;
use crate::ops::control::{Snapshot, SnapshotCommand};
use crate::ops::health;
use crate::pipeline::{SetPaused, StopPipeline};
use crate::source::ledger::Ending;
use crate::source::reader;

impl SourceSupervisor {
    /// Pauses the pipeline: winds its launch down (readers stopped after their batch, the
    /// open transaction committed, checkpoints written, producers closed) and holds its next
    /// start back until the resume. It stays in its group: its slots stay its own.
    pub(super) fn pause(&mut self) -> ResponseActFuture<Self, ()> {
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
