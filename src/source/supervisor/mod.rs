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
use crate::source::error::SourceError;
use crate::source::handover::Action;
use crate::source::ledger::Ending;
use crate::source::lifecycle::Origin;
use crate::source::model::Scope;
use crate::source::policy::ErrorClass;
use crate::source::policy::{Decision, Failed, RestartPolicy, ResumeAt};
use crate::source::producer::{ProducerFailed, ReaderId};
use crate::source::reader::ReaderFailed;
use crate::source::{policy, reader, signals};

impl SourceSupervisor {
    /// Stops every reader, aborts the producer's open transaction and closes it, then
    /// starts again after a backoff. The old producer is closed before the new one exists:
    /// none of its scheduled commits can land once the new start reads the checkpoints.
    fn retry_pipeline(&mut self, error: SourceError, ctx: &mut Context<Self>) {
        if !self.lifecycle.restart() {
            tracing::debug!(pipeline = %self.config.name, %error, "the pipeline is restarting already");
            return;
        }
        let delay = self.pipeline_backoff.next_delay();
        tracing::warn!(pipeline = %self.config.name, %error, retry_in = ?delay, "restarting the source pipeline");
        self.board
            .restarting_after(&self.config.name, &error.to_string());
        self.metrics
            .actor_restarted(&self.config.name, "source_pipeline", error.kind());
        self.restart_after(Ending::Failure, delay, ctx);
    }

    /// Stops the pipeline for good and says why: an error no restart can fix.
    fn fail(&mut self, error: SourceError, ctx: &mut Context<Self>) {
        tracing::error!(pipeline = %self.config.name, %error, "source pipeline failed; it stays failed until restarted (POST /pipelines/<name>/restart, a reload or a restart of the daemon)");
        self.metrics
            .pipeline_failed(&self.config.name, "source", error.kind());
        self.readiness.set_problem(
            health::pipeline(&self.config.name),
            format!(
                "source pipeline failed: {error}; {}",
                crate::ops::control::failed_until(&self.config.name)
            ),
        );
        self.board.failed(&self.config.name, &error.to_string());
        self.lifecycle.stop();
        self.metrics.owned_slots(&self.config.name, 0);
        self.metrics.fenced_slots(&self.config.name, 0);
        self.readiness
            .clear_prefix(&health::slot(&self.config.name, ""));
        // Out of the group, it shares nothing: whether the others agree no longer matters.
        self.metrics.config_mismatch(&self.config.name, false);
        self.readiness.clear(&health::config(&self.config.name));
        let wind_down = self.wind_down(Ending::Failure);
        // Its slots go to the other daemons, if any.
        ctx.spawn(wind_down.into_actor(self).map(|_, act, _| {
            act.handed_over();
            act.leave_group();
        }));
    }
}

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

impl SourceSupervisor {
    /// Carries out what the restart policy decided about `error`, of `reader` if a reader
    /// failed.
    fn decided(
        &mut self,
        decision: Decision,
        reader: Option<ReaderId>,
        error: SourceError,
        ctx: &mut Context<Self>,
    ) {
        match (decision, reader) {
            (Decision::Fail, _) => self.fail(error, ctx),
            (Decision::RestartPipeline, _) | (Decision::RestartReader(_), None) => {
                self.retry_pipeline(error, ctx)
            }
            (Decision::RestartReader(resume), Some(reader)) => {
                if matches!(error, SourceError::HistoryLost { .. }) {
                    let then = match resume {
                        ResumeAt::Recopy => "copying the namespace again",
                        _ => "restarting at the newest change",
                    };
                    tracing::error!(pipeline = %self.config.name, namespace = %reader.namespace, %error, then, "changes were lost from the oplog before they were read");
                    self.metrics
                        .resume_gap(&self.config.name, &reader.namespace);
                } else {
                    tracing::warn!(pipeline = %self.config.name, namespace = %reader.namespace, %error, "reader failed; restarting it");
                    self.metrics.actor_restarted(
                        &self.config.name,
                        "change_stream_reader",
                        error.kind(),
                    );
                }
                self.restart_reader(reader.namespace, resume, ctx);
            }
        }
    }
}

impl Handler<ReaderFailed> for SourceSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ReaderFailed, ctx: &mut Self::Context) {
        let ReaderFailed { reader, error } = msg;
        let current = self.readers.get(&reader.namespace).is_some_and(|slot| {
            slot.generation == reader.generation
                && self.lifecycle.is_current(Origin::Launch(slot.launch))
        });
        if !current {
            return;
        }
        if matches!(error, SourceError::ProducerGone { .. }) {
            // The slot's producer stopped on a failure of its own, which it reports
            // (`ProducerFailed`): that report decides. Deciding here as well raced it, and a
            // fenced slot was taken back at once, fencing its new owner in turn.
            tracing::debug!(pipeline = %self.config.name, namespace = %reader.namespace, "the reader's producer is gone; its own failure decides");
            return;
        }
        let decision = RestartPolicy::decide(Failed::Reader(&error), &self.config);
        self.decided(decision, Some(reader), error, ctx);
    }
}

impl Handler<ProducerFailed> for SourceSupervisor {
    type Result = ();

    fn handle(&mut self, failed: ProducerFailed, ctx: &mut Self::Context) {
        let ProducerFailed {
            launch,
            slot,
            error,
        } = failed;
        // A producer of an earlier launch failing late (its pipeline restarted already), or
        // of a slot given up, restarts nothing.
        let running = self
            .running
            .as_ref()
            .is_some_and(|r| r.slots.contains_key(&slot));
        if !self.lifecycle.is_current(Origin::Launch(launch)) || !running {
            return;
        }
        if policy::classify(&error) == ErrorClass::Fenced {
            // Another producer initialised the slot's transactional.id (a daemon the group
            // gave the slot to while this one was paused, a stray or overtaken start, or the
            // broker aborted a transaction that ran out of time): the slot is lost, not the
            // pipeline. The rest starts again without it; after a delay it is taken again,
            // unless the group moved it meanwhile (issue 21: it used to stay dropped).
            let actions = self.handover.fenced(slot, &mut self.lifecycle);
            if actions.iter().any(|a| matches!(a, Action::RetakeLater(_))) {
                tracing::warn!(pipeline = %self.config.name, slot, %error, "the slot's producer was fenced: dropping the slot; it is taken again after a delay unless the group moves it");
            }
            self.metrics
                .actor_restarted(&self.config.name, "source_pipeline", "slot_lost");
            self.perform(actions, ctx);
            return;
        }
        let decision = RestartPolicy::decide(Failed::Producer(&error), &self.config);
        self.decided(decision, None, error, ctx);
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
