//! The actor's own start and stop: what [`SourceSupervisor`] sets up when actix starts it.
//!
//! The rules:
//! - Its mailbox is bounded (`CONTROL_MAILBOX_CAPACITY`): it receives reports and control
//!   messages, no data.
//! - Its metric series exist from the start: the pipeline's, each watched namespace's
//!   reader series, each collection's snapshot series at 0. `/ready` says "starting" until
//!   the first launch runs.
//! - It opens the group's channels, then joins the group (`group.rs`); the first start
//!   waits for the group's first assignment (starting before would fence and read
//!   checkpoints for no slot, then do it all again). A pipeline started paused (a reload of
//!   a paused one) pauses at once.
//! - The stall check (`readers.rs`) runs every quarter of `stall_timeout`, from 250 ms to
//!   10 s; with a `signal_collection`, its signals (snapshots on demand) are watched
//!   (`signals.rs`).

use std::time::Duration;

use actix::prelude::*;

use super::state::SourceSupervisor;
use crate::ops::health;
use crate::source::model::Scope;
use crate::source::signals;

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
