//! Moving slots while the pipeline runs: carrying out what the hand-over rules decided
//! (`handover.rs`), starting the slots the group assigned beside the running ones, stopping
//! those it took away, taking fenced slots again, and reporting the slots owned and fenced.
//!
//! The rules:
//! - [`SourceSupervisor::perform`] does what `Handover` answered and decides nothing:
//!   acknowledge hand-overs, make the first start, restart, stop or start slots, take a
//!   fenced slot again later.
//! - Slots taken while a launch runs start as a launch does (fence their producers, load
//!   their checkpoints, start their readers); the slots kept run on untouched. Only the
//!   slots still owned whose latest start it is start (`Handover::slots_started`). A start
//!   finishing after its launch ended starts nothing (the restart takes the slots owned
//!   then); one that fails restarts the pipeline.
//! - A slot start under way counts as a wind-down: a revoke waits for it, so its fence
//!   never lands after the slot's next owner's.
//! - Slots given up stop: their readers after whole batches, their open transactions
//!   committed (revoked) or aborted (lost), their producers closed; their hand-over is
//!   acknowledged once that is done.
//! - A fenced slot the group still assigns here waits on `/ready` and in
//!   `mkb_source_fenced_slots` until it runs again or the group moves it; it is taken again
//!   after the fence backoff (5 s, doubling to 60 s while fences repeat).
//! - The slots owned, with their readers, are reported on `/status` and in
//!   `mkb_source_owned_slots`.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;

use super::prepare::slot_producers;
use super::state::SourceSupervisor;
use crate::clients::kafka;
use crate::ops::health;
use crate::ops::status::SlotsReport;
use crate::source::checkpoint;
use crate::source::error::SourceError;
use crate::source::handover::Action;
use crate::source::ledger::Ending;
use crate::source::lifecycle::Origin;
use crate::source::model::Scope;

impl SourceSupervisor {
    /// Starts the slots the group assigned while a launch runs, beside the running ones
    /// (`handover.rs`): fences their producers, loads their checkpoints (in that order, as
    /// [`Self::start`] does), then starts their readers; the slots kept run on untouched.
    fn start_slots(&mut self, ticket: u64, slots: Vec<i32>, ctx: &mut Context<Self>) {
        let launch = self.lifecycle.launch();
        let with_readers: Vec<i32> = self
            .readers_by_owned_slot()
            .into_keys()
            .filter(|slot| slots.contains(slot))
            .collect();
        tracing::info!(pipeline = %self.config.name, ?slots, "starting the slots taken; the others run on");
        self.report_slots();
        // A revoke waits for it: its fence must not land after the slot's next owner's.
        self.handover.winding_down();
        let config = self.config.clone();
        let kafka = self.kafka.clone();
        let prepare = async move {
            if with_readers.is_empty() {
                return Ok(None);
            }
            let producers = slot_producers(&kafka, &config, &with_readers).await?;
            let reading = checkpoint::Reading::start(&config, with_readers);
            let began = std::time::Instant::now();
            let loaded = checkpoint::load(&kafka, &reading).await?;
            Ok::<_, SourceError>(Some((producers, loaded, began.elapsed())))
        };
        ctx.spawn(prepare.into_actor(self).map(move |result, act, ctx| {
            let taken = act.handover.slots_started(ticket, &slots);
            let current = act.lifecycle.is_current(Origin::Launch(launch)) && act.running.is_some();
            match result {
                Ok(Some((producers, loaded, took))) if current => {
                    checkpoint::report_load(&act.metrics, &act.config.name, &loaded, took);
                    act.add_slots(producers, loaded, &taken, ctx);
                }
                Ok(_) => {
                    if current {
                        act.report_slots();
                    }
                }
                Err(error) if current => {
                    tracing::warn!(pipeline = %act.config.name, ?slots, %error, "could not start the slots taken; restarting the pipeline");
                    act.retry_pipeline(error, ctx);
                }
                // The launch ended meanwhile: its restart starts the slots owned then.
                Err(_) => {}
            }
            act.handed_over();
        }));
    }

    /// Runs the prepared producers of the slots `taken` (still owned, latest start) with
    /// the checkpoints `loaded`; the others are dropped unused.
    fn add_slots(
        &mut self,
        producers: BTreeMap<i32, kafka::KafkaProducer>,
        loaded: checkpoint::Loaded,
        taken: &[i32],
        ctx: &mut Context<Self>,
    ) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        let mut started = Vec::new();
        for (slot, producer) in producers {
            if !taken.contains(&slot) || running.slots.contains_key(&slot) {
                continue;
            }
            if let Err(error) = self.checkpoints_client(&mut running.kit, true) {
                self.running = Some(running);
                return self.retry_pipeline(error, ctx);
            }
            let run = self.slot_run(&running.kit, slot, producer, loaded.generation, ctx);
            running.slots.insert(slot, run);
            started.push(slot);
        }
        self.running = Some(running);
        // The checkpoints of the slots started, as loaded now; the others' stay as they were.
        for watched in Scope::of(&self.config) {
            let namespace = watched.namespace();
            if started.contains(&self.slot_of(&namespace)) {
                match loaded.checkpoints.get(&namespace) {
                    Some(checkpoint) => {
                        self.checkpoints.insert(namespace, checkpoint.clone());
                    }
                    None => {
                        self.checkpoints.remove(&namespace);
                    }
                }
            }
        }
        let launch = self.lifecycle.launch();
        if let Err(error) = self.start_readers(&started, launch, ctx) {
            return self.fail(error, ctx);
        }
        self.report_slots();
        tracing::info!(pipeline = %self.config.name, slots = ?started, "slots taken started");
    }

    /// Stops the slots given up while a launch runs (`handover.rs`): their readers after
    /// whole batches, their open transactions ended for `ending`, their producers closed;
    /// then the hand-overs waiting are answered. The other slots run on.
    fn stop_slots(&mut self, slots: &[i32], ending: Ending, ctx: &mut Context<Self>) {
        tracing::info!(pipeline = %self.config.name, ?slots, ?ending, "stopping the slots given up; the others run on");
        let wind_down = self.wind_down_slots(Some(slots), ending);
        self.report_slots();
        ctx.spawn(
            wind_down
                .into_actor(self)
                .map(|_, act, _| act.handed_over()),
        );
    }

    /// Reports the slots this daemon owns, with their readers, on `/status` and in
    /// `mkb_source_owned_slots`.
    pub(super) fn report_slots(&self) {
        let count = self.config.slots;
        let mut owned: BTreeMap<String, Vec<String>> = self
            .handover
            .ownership()
            .owned()
            .iter()
            .map(|slot| (slot.to_string(), Vec::new()))
            .collect();
        for (slot, readers) in self.readers_by_owned_slot() {
            owned.insert(slot.to_string(), readers);
        }
        self.metrics.owned_slots(&self.config.name, owned.len());
        self.status
            .slots(&self.config.name, SlotsReport { count, owned });
    }

    /// Reports the slots waiting after a fence on `/ready` and in `mkb_source_fenced_slots`;
    /// those the group moved meanwhile wait no more (another daemon runs them).
    pub(super) fn report_fenced(&mut self) {
        let ownership = self.handover.ownership();
        self.fenced_waiting.retain(|slot| {
            ownership.fenced_slots().contains(slot) || ownership.owned().contains(slot)
        });
        let name = &self.config.name;
        self.metrics.fenced_slots(name, self.fenced_waiting.len());
        self.readiness.clear_prefix(&health::slot(name, ""));
        for slot in &self.fenced_waiting {
            self.readiness.set_problem(
                health::slot(name, &slot.to_string()),
                format!("slot {slot} of source pipeline {name} was fenced (another producer initialised its transactional.id, or the broker aborted its transaction): its changes wait until it is taken again"),
            );
        }
    }

    /// Takes the fenced slots the group still assigns here over again: a restart with the
    /// slots owned then (fence, checkpoints, readers).
    fn take_fenced_again(&mut self, ctx: &mut Context<Self>) {
        let taken = self.handover.take_again(&mut self.lifecycle);
        self.report_fenced();
        let Some(actions) = taken else {
            return;
        };
        tracing::warn!(pipeline = %self.config.name, slots = ?self.fenced_waiting, "taking fenced slots again: fencing their producers, reading their checkpoints, starting their readers");
        // No action: a restart is under way, its start takes the slots owned then.
        self.perform(actions, ctx);
    }

    /// Carries out what the hand-over rules decided (`handover.rs`).
    pub(super) fn perform(
        &mut self,
        actions: Vec<Action<std::sync::mpsc::Sender<()>>>,
        ctx: &mut Context<Self>,
    ) {
        for action in actions {
            match action {
                Action::Acknowledge(done) => {
                    for done in done {
                        let _ = done.send(());
                    }
                }
                Action::Start(attempt) => self.start(attempt, ctx),
                // Readers stop after whole batches, the open transactions are committed
                // (aborted when slots are lost or fenced), the producers closed; then the
                // slots owned now start at once (fence, checkpoints, readers).
                Action::Restart(ending) => self.restart_after(ending, Duration::ZERO, ctx),
                Action::StopSlots { slots, ending } => self.stop_slots(&slots, ending, ctx),
                Action::StartSlots { ticket, slots } => self.start_slots(ticket, slots, ctx),
                Action::RetakeLater(slot) => {
                    self.fenced_waiting.insert(slot);
                    let delay = self.fence_backoff.next_delay();
                    tracing::debug!(pipeline = %self.config.name, slot, retry_in = ?delay, "taking the fenced slot again after the delay");
                    self.report_fenced();
                    ctx.run_later(delay, |act, ctx| act.take_fenced_again(ctx));
                }
            }
        }
    }
}
