//! The pipeline's consumer group (`membership.rs`): joining it, leaving it, and what it
//! reports (the slots it moved, whether its members run one configuration), which come to
//! the actor as messages.
//!
//! The rules:
//! - The group's callbacks run on its own thread: their reports reach the actor through a
//!   channel each, as [`SlotsChanged`] and [`ConfigCompared`] messages.
//! - The group is joined once the checkpoint topic has a partition per slot (the group
//!   hands those out); a failed join is tried again every 5 s until it succeeds or the
//!   pipeline stops; a join finishing after the stop leaves at once. The first start waits
//!   for the group's first assignment.
//! - A change of the slots goes to `Handover::slots_changed`, and its actions are carried
//!   out (`slot_moves.rs`); a change that moved slots counts in
//!   `mkb_source_rebalances_total`.
//! - Members running another configuration of the pipeline are reported on `/ready`, in
//!   `mkb_source_config_mismatch` and in a WARN log, until they agree again; a stopped
//!   pipeline ignores late reports.
//! - Leaving runs off the actor thread: the revoke it causes is served by the actor first.

use std::time::Duration;

use actix::prelude::*;

use super::state::SourceSupervisor;
use crate::ops::health;
use crate::source::agreement::Agreement;
use crate::source::error::SourceError;
use crate::source::membership::{Agreeing, Join, Membership, Rebalanced};
use crate::source::{agreement, checkpoint};

/// The group told the supervisor its slots changed (see `membership.rs`).
#[derive(Message)]
#[rtype(result = "()")]
struct SlotsChanged(Rebalanced);

/// The group's members were compared with this daemon's configuration (`agreement.rs`),
/// with another outcome than the time before.
#[derive(Message)]
#[rtype(result = "()")]
struct ConfigCompared(Agreement);

impl SourceSupervisor {
    /// Opens the channels the group's thread reports through (its slot changes, its
    /// members' configurations) to this actor.
    pub(super) fn hear_from_group(&mut self, ctx: &mut Context<Self>) {
        // The group's callbacks run on its own thread: their reports come here as messages.
        let (changes, mut received) = tokio::sync::mpsc::unbounded_channel();
        self.changes = Some(changes);
        let me = ctx.address();
        actix::spawn(async move {
            while let Some(change) = received.recv().await {
                if me.send(SlotsChanged(change)).await.is_err() {
                    break;
                }
            }
        });
        let (agreements, mut compared) = tokio::sync::mpsc::unbounded_channel();
        self.agreements = Some(agreements);
        self.metrics.config_mismatch(&self.config.name, false);
        let me = ctx.address();
        actix::spawn(async move {
            while let Some(outcome) = compared.recv().await {
                if me.send(ConfigCompared(outcome)).await.is_err() {
                    break;
                }
            }
        });
    }

    /// Joins the pipeline's group (once the checkpoint topic has a partition per slot: the
    /// group hands those out); tries again every few seconds until it is in.
    pub(super) fn join_group(&mut self, ctx: &mut Context<Self>) {
        let Some(changes) = self.changes.clone() else {
            return;
        };
        let kafka = self.kafka.clone();
        let join = Join {
            pipeline: self.config.name.clone(),
            topic: self.config.checkpoint_topic.clone(),
            handover: self.shutdown_deadline,
            agreement: self.agreements.clone().map(|report| Agreeing {
                fingerprint: agreement::fingerprint(&self.config),
                report,
            }),
        };
        let partitions = i32::try_from(self.config.slots).unwrap_or(i32::MAX);
        let joining = async move {
            checkpoint::ensure_topic(&kafka, &join.topic, partitions).await?;
            Membership::join(&kafka, &join, changes).map_err(SourceError::from)
        };
        ctx.spawn(joining.into_actor(self).map(|joined, act, ctx| match joined {
            Ok(membership) => {
                act.membership = Some(membership);
                if act.lifecycle.is_stopped() {
                    act.leave_group();
                }
            }
            Err(error) => {
                if act.lifecycle.is_stopped() {
                    return;
                }
                tracing::warn!(pipeline = %act.config.name, %error, "could not join the group of the pipeline's daemons; trying again");
                ctx.run_later(Duration::from_secs(5), |act, ctx| act.join_group(ctx));
            }
        }));
    }

    /// Leaves the pipeline's group, off the actor thread (the revoke is served first).
    pub(super) fn leave_group(&mut self) {
        if let Some(membership) = self.membership.take() {
            tokio::task::spawn_blocking(move || membership.leave());
        }
    }
}

impl Handler<SlotsChanged> for SourceSupervisor {
    type Result = ();

    fn handle(&mut self, SlotsChanged(rebalanced): SlotsChanged, ctx: &mut Self::Context) {
        let Rebalanced {
            change,
            handed_over,
        } = rebalanced;
        let before = self.handover.ownership().rebalances();
        let started = self.handover.started();
        let actions = self
            .handover
            .slots_changed(&change, handed_over, &mut self.lifecycle);
        self.report_fenced();
        if self.handover.ownership().rebalances() == before {
            return self.perform(actions, ctx);
        }
        self.metrics.rebalanced(&self.config.name);
        if started && !self.lifecycle.is_stopped() {
            tracing::info!(pipeline = %self.config.name, ?change, owned = ?self.handover.ownership().owned(), "the group moved slots");
        }
        self.perform(actions, ctx);
    }
}

impl Handler<ConfigCompared> for SourceSupervisor {
    type Result = ();

    fn handle(&mut self, ConfigCompared(outcome): ConfigCompared, _: &mut Self::Context) {
        // A late report from a group this pipeline has left.
        if self.lifecycle.is_stopped() {
            return;
        }
        let name = &self.config.name;
        match outcome {
            Agreement::Agreed => {
                self.metrics.config_mismatch(name, false);
                if self.readiness.has_problem(&health::config(name)) {
                    tracing::info!(pipeline = %name, "the daemons of the pipeline's group run one configuration again");
                }
                self.readiness.clear(&health::config(name));
            }
            Agreement::Mismatch { ours, theirs } => {
                let theirs: Vec<String> = theirs.into_iter().collect();
                tracing::warn!(pipeline = %name, ours = %ours, theirs = %theirs.join(","), "daemons sharing this source pipeline's slots run another configuration of it: each publishes its half of the collections its own way; give every daemon the same [[source]] section");
                self.metrics.config_mismatch(name, true);
                self.readiness.set_problem(
                    health::config(name),
                    format!(
                        "daemons of the group run another configuration of source pipeline {name} (this one {ours}, others {})",
                        theirs.join(", ")
                    ),
                );
            }
        }
    }
}
