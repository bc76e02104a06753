//! What a failure does: a reader's or a producer's failure goes to the restart policy
//! (`policy.rs`), whose [`Decision`] is carried out here (restart the reader, restart the
//! pipeline, or stop it failed).
//!
//! The rules:
//! - Only the current launch's failures count: a reader's of an older generation or launch,
//!   a producer's of an earlier launch or of a slot given up, restart nothing.
//! - A reader failing because its producer is gone decides nothing: the producer's own
//!   failure does (deciding on both raced, and a fenced slot was taken back at once,
//!   fencing its new owner in turn).
//! - A fenced producer loses its slot, not the pipeline: `Handover::fenced` drops it (the
//!   rest restarts without it) and takes it again after a delay unless the group moves it.
//! - A pipeline restart winds the launch down, aborting its open transactions, and starts
//!   again after the pipeline's backoff; a restart asked while one is under way joins it
//!   (`Lifecycle::restart`). Restarts count in `mkb_actor_restarts_total` by cause, and
//!   `/pipelines` says why.
//! - Changes lost from the oplog before they were read are logged at ERROR and counted in
//!   `mkb_source_resume_gaps_total`; the reader starts again where the policy says.
//! - A failure no restart can fix stops the pipeline for good: `/ready`, `/pipelines` and
//!   `mkb_pipeline_failures_total` say why until it is restarted (`POST
//!   /pipelines/<name>/restart`, a reload or a restart of the daemon). It winds down,
//!   aborting, and leaves the group: its slots go to the other daemons.

use actix::prelude::*;

use super::state::SourceSupervisor;
use crate::ops::health;
use crate::source::error::SourceError;
use crate::source::handover::Action;
use crate::source::ledger::Ending;
use crate::source::lifecycle::Origin;
use crate::source::policy;
use crate::source::policy::ErrorClass;
use crate::source::policy::{Decision, Failed, RestartPolicy, ResumeAt};
use crate::source::producer::{ProducerFailed, ReaderId};
use crate::source::reader::ReaderFailed;

impl SourceSupervisor {
    /// Stops every reader, aborts the producer's open transaction and closes it, then
    /// starts again after a backoff. The old producer is closed before the new one exists:
    /// none of its scheduled commits can land once the new start reads the checkpoints.
    pub(super) fn retry_pipeline(&mut self, error: SourceError, ctx: &mut Context<Self>) {
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
    pub(super) fn fail(&mut self, error: SourceError, ctx: &mut Context<Self>) {
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
        let current = self.readers.get(&reader.namespace).is_some_and(|watched| {
            watched.generation == reader.generation
                && self.lifecycle.is_current(Origin::Launch(watched.launch))
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
