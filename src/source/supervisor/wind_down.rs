//! Winding a launch down (all of it, or the slots given up) and starting again after it.
//!
//! The rules:
//! - A wind-down first takes the readers and producers it stops out of the supervisor's
//!   state, moving their generations on: what they report from then on is stale.
//! - The readers stop first, after whole batches; those not stopped by the shutdown
//!   deadline are aborted (a read waiting on a server that does not answer). Then the
//!   producers drain and close, ending their open transactions for the [`Ending`]:
//!   committed on a stop or a clean hand-over, aborted on a failure or a lost slot. What is
//!   left undone (readers aborted, batches Kafka did not acknowledge, sent again at the next
//!   start) is logged at ERROR and answered.
//! - Every wind-down is counted (`Handover::winding_down`) and ends in
//!   [`SourceSupervisor::handed_over`]: the hand-overs waiting are acknowledged only once
//!   none runs any more.
//! - Slots stopped alone stop reporting their stalled readers: not this daemon's any more.
//! - A restart winds the launch down, then starts again after its delay with the slots
//!   owned then, if the lifecycle still allows it (`Lifecycle::start_again`: not paused,
//!   stopped or overtaken).

use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;

use super::state::SourceSupervisor;
use crate::ops::health;
use crate::source::ledger::Ending;
use crate::source::producer::{Drain, RecordProducer};
use crate::source::reader::{AbortReader, StopReader};
use crate::source::slots;

impl SourceSupervisor {
    /// Winds the launch down for `ending`, answers the hand-overs waiting for it, then
    /// starts again after `delay` (with the slots owned then).
    pub(super) fn restart_after(
        &mut self,
        ending: Ending,
        delay: Duration,
        ctx: &mut Context<Self>,
    ) {
        let wind_down = self.wind_down(ending);
        ctx.spawn(wind_down.into_actor(self).map(move |_, act, ctx| {
            act.handed_over();
            ctx.run_later(delay, |act, ctx| {
                if let Some(attempt) = act.lifecycle.start_again() {
                    act.start(attempt, ctx);
                }
            });
        }));
    }

    /// A wind-down finished: once none runs, the revoked or lost slots waiting are handed
    /// over.
    pub(super) fn handed_over(&mut self) {
        for done in self.handover.wound_down() {
            let _ = done.send(());
        }
    }

    /// Takes the readers and the producer of the running launch (failures they report
    /// from here on are stale: their generations move on) and answers the future that stops
    /// the readers (aborting those that do not stop before the shutdown deadline), then
    /// drains and closes the producer for `ending`. It answers what was left undone.
    pub(super) fn wind_down(
        &mut self,
        ending: Ending,
    ) -> impl std::future::Future<Output = Vec<String>> {
        self.wind_down_slots(None, ending)
    }

    /// [`Self::wind_down`] of the slots `only` (`None`: every slot, and the launch ends).
    pub(super) fn wind_down_slots(
        &mut self,
        only: Option<&[i32]>,
        ending: Ending,
    ) -> impl std::future::Future<Output = Vec<String>> {
        // Every wind-down ends in `handed_over`.
        self.handover.winding_down();
        let (pipeline, slots) = (self.config.name.clone(), self.config.slots);
        let stopping = |namespace: &str| {
            only.is_none_or(|only| only.contains(&slots::slot_of(&pipeline, namespace, slots)))
        };
        let mut readers = Vec::new();
        for (namespace, reader) in &mut self.readers {
            if !stopping(namespace) {
                continue;
            }
            reader.generation += 1;
            readers.extend(reader.addr.take());
            if only.is_some() && std::mem::take(&mut reader.stalled) {
                // Not this daemon's to report any more.
                self.readiness
                    .clear(&health::reader(&self.config.name, namespace));
            }
        }
        let producers: Vec<Addr<RecordProducer>> = match only {
            None => self
                .running
                .take()
                .map(|r| r.slots.into_values().map(|run| run.producer).collect())
                .unwrap_or_default(),
            Some(only) => self
                .running
                .as_mut()
                .map(|r| {
                    only.iter()
                        .filter_map(|slot| r.slots.remove(slot))
                        .map(|run| run.producer)
                        .collect()
                })
                .unwrap_or_default(),
        };
        let deadline = self.shutdown_deadline;
        let name = self.config.name.clone();
        async move {
            let mut left = Vec::new();
            let stops = join_all(readers.iter().map(|addr| addr.send(StopReader)));
            if tokio::time::timeout(deadline, stops).await.is_err() {
                // A reader waiting on a server that does not answer: abandon its read.
                tracing::error!(pipeline = %name, "readers did not stop before the shutdown deadline; aborting them");
                join_all(readers.iter().map(|addr| addr.send(AbortReader))).await;
                left.push("readers waiting for MongoDB".to_owned());
            }
            let drains = join_all(
                producers
                    .iter()
                    .map(|producer| producer.send(Drain { deadline, ending })),
            )
            .await;
            let batches: usize = drains.into_iter().filter_map(Result::ok).sum();
            if batches > 0 {
                tracing::error!(pipeline = %name, batches, "records still unacknowledged at shutdown; they will be sent again at the next start");
                left.push(format!("{batches} batches not acknowledged by Kafka"));
            }
            left
        }
    }
}
