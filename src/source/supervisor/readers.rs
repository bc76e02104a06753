//! The readers of the owned slots, one per watched namespace (or database, or deployment):
//! starting them, restarting one that failed or stalled, and the stall check.
//!
//! The rules:
//! - A reader runs only while its slot's producer runs (the launch holds the slot). It
//!   starts at its checkpoint; without one, where its first open found the stream (its
//!   pinned start), else at the pipeline's initial start. A checkpoint that does not give a
//!   start fails the launch, naming the namespace.
//! - A failed or stalled reader restarts alone, after its own backoff; the other readers
//!   run on. Where it starts is `restart::resume_from`'s: after the newest position Kafka
//!   acknowledged for it (its producer knows), else at its checkpoint, else pinned or
//!   initial. A restart stands only while its launch runs and no newer start of the reader
//!   began: else two readers of one namespace would run side by side.
//! - While the launch runs, the stall check (every quarter of `stall_timeout`, from 250 ms
//!   to 10 s) asks `restart::stall_verdict` about each reader. A stalled one is reported on
//!   `/ready`, in `mkb_source_stalled_readers` and in an ERROR log, aborted without waiting
//!   (a stalled read may never finish) and restarted; its report is cleared once its stream
//!   advances again.

use std::sync::Arc;

use actix::prelude::*;

use super::state::{restart_backoff, SourceSupervisor, WatchedReader};
use crate::ops::health;
use crate::source::checkpoint::Checkpoint;
use crate::source::error::SourceError;
use crate::source::lifecycle::{Origin, Phase};
use crate::source::model::{Scope, StartAt};
use crate::source::policy::ResumeAt;
use crate::source::producer::{LastAcknowledged, ReaderId};
use crate::source::reader::{AbortReader, ChangeStreamReader};
use crate::source::restart::{ReaderState, Restart, StallVerdict};
use crate::source::{restart, slots};

impl SourceSupervisor {
    /// Starts the readers of `slots` (running ones) at their checkpoints.
    pub(super) fn start_readers(
        &mut self,
        slots: &[i32],
        launch: u64,
        ctx: &mut Context<Self>,
    ) -> Result<(), SourceError> {
        for watched in Scope::of(&self.config) {
            let namespace = watched.namespace();
            if !slots.contains(&self.slot_of(&namespace)) {
                // Another daemon's, nobody's yet, or a slot already running.
                continue;
            }
            let reader = self
                .readers
                .entry(namespace.clone())
                .or_insert_with(|| WatchedReader {
                    watched,
                    generation: 0,
                    launch,
                    addr: None,
                    backoff: restart_backoff(),
                    progress: Arc::default(),
                    stalled: false,
                    pinned: None,
                });
            reader.generation += 1;
            let start = match self.checkpoints.get(&namespace).map(Checkpoint::start_at) {
                Some(Ok(start)) => start,
                Some(Err(reason)) => return Err(SourceError::Checkpoint { namespace, reason }),
                None => self.start_without_checkpoint(&namespace),
            };
            self.spawn_reader(&namespace, start, ctx);
        }
        Ok(())
    }

    /// Where a reader without an acknowledged position or a checkpoint starts: where its
    /// first open found the stream, or else by the startup mode.
    fn start_without_checkpoint(&mut self, namespace: &str) -> StartAt {
        match self.readers.get_mut(namespace).and_then(WatchedReader::pin) {
            Some(position) => StartAt::Resume(position),
            None => self.initial_start(),
        }
    }

    fn initial_start(&self) -> StartAt {
        match &self.running {
            // Resolved once, when the pipeline launched (which fails on an unusable one).
            Some(running) => running.kit.settings.initial_start.clone(),
            // No pipeline runs: `spawn_reader` starts no reader, whatever this says.
            None => StartAt::Latest,
        }
    }

    fn spawn_reader(&mut self, namespace: &str, start: StartAt, ctx: &mut Context<Self>) {
        let owner = self.slot_of(namespace);
        let Some(run) = self.running.as_ref().and_then(|r| r.slots.get(&owner)) else {
            return;
        };
        let Some(reader) = self.readers.get_mut(namespace) else {
            return;
        };
        let id = ReaderId {
            namespace: namespace.to_owned(),
            generation: reader.generation,
        };
        tracing::info!(pipeline = %self.config.name, namespace, start = start.name(), generation = reader.generation, "starting reader");
        reader.launch = self.lifecycle.launch();
        reader.pin();
        reader.progress = Arc::default();
        reader.addr = Some(
            ChangeStreamReader::new(
                id,
                reader.watched.clone(),
                start,
                run.shared.clone(),
                ctx.address().recipient(),
                reader.progress.clone(),
            )
            .start(),
        );
    }

    /// Restarts one reader after its backoff, at `resume`.
    pub(super) fn restart_reader(
        &mut self,
        namespace: String,
        resume: ResumeAt,
        ctx: &mut Context<Self>,
    ) {
        let Some(reader) = self.readers.get_mut(&namespace) else {
            return;
        };
        reader.addr = None;
        reader.generation += 1;
        let id = ReaderId {
            namespace: namespace.clone(),
            generation: reader.generation,
        };
        let delay = reader.backoff.next_delay();
        let owner = slots::slot_of(&self.config.name, &namespace, self.config.slots);
        let producer = self
            .running
            .as_ref()
            .and_then(|r| r.slots.get(&owner))
            .map(|run| run.producer.clone());
        let launch = self.lifecycle.launch();
        let generation = reader.generation;
        // Whether the restart still stands: the launch runs and no newer restart of the
        // reader began (else a second reader would run beside the launch's own).
        let stands = move |act: &Self, namespace: &str| {
            act.lifecycle.is_current(Origin::Launch(launch))
                && act
                    .readers
                    .get(namespace)
                    .is_some_and(|reader| reader.generation == generation)
        };
        ctx.run_later(delay, move |act, ctx| {
            if !stands(act, &namespace) {
                return;
            }
            let Some(producer) = producer else { return };
            let ask = async move {
                producer
                    .send(LastAcknowledged(id))
                    .await
                    .ok()
                    .flatten()
                    .map(|t| (namespace.clone(), Some(t)))
                    .unwrap_or((namespace, None))
            };
            ctx.spawn(
                ask.into_actor(act)
                    .map(move |(namespace, acknowledged), act, ctx| {
                        if !stands(act, &namespace) {
                            return;
                        }
                        let checkpoint = act
                            .checkpoints
                            .get(&namespace)
                            .and_then(|c| c.start_at().ok());
                        let start = match restart::resume_from(resume, acknowledged, checkpoint) {
                            Restart::At(start) => start,
                            Restart::Unpinned(start) => {
                                if let Some(reader) = act.readers.get_mut(&namespace) {
                                    reader.unpin();
                                }
                                start
                            }
                            Restart::WithoutCheckpoint => act.start_without_checkpoint(&namespace),
                        };
                        act.spawn_reader(&namespace, start, ctx);
                    }),
            );
        });
    }

    /// Reports readers whose stream has not advanced for `stall_timeout` on `/ready` and in
    /// the metrics, and restarts them; clears the report once they advance again.
    pub(super) fn check_stalls(&mut self, ctx: &mut Context<Self>) {
        if self.lifecycle.phase() != Phase::Running || self.running.is_none() {
            return;
        }
        let timeout = self.config.stall_timeout;
        let pipeline = self.config.name.clone();
        let mut stalled = Vec::new();
        for (namespace, reader) in &mut self.readers {
            let component = health::reader(&pipeline, namespace);
            let state = ReaderState {
                idle: reader.progress.idle_for(),
                running: reader.addr.is_some(),
                stalled: reader.stalled,
                advanced: reader.progress.has_advanced(),
            };
            match restart::stall_verdict(state, timeout) {
                StallVerdict::Stalled(idle) => {
                    tracing::error!(pipeline = %pipeline, namespace = %namespace, idle = ?idle, "change stream has not advanced; restarting the reader");
                    self.readiness.set_problem(
                        component,
                        format!("change stream has not advanced for {}s", idle.as_secs()),
                    );
                    reader.stalled = true;
                    stalled.push(namespace.clone());
                }
                StallVerdict::Recovered => {
                    tracing::info!(pipeline = %pipeline, namespace = %namespace, "change stream advances again");
                    self.readiness.clear(&component);
                    reader.stalled = false;
                }
                StallVerdict::Unchanged => {}
            }
        }
        let count = self.readers.values().filter(|s| s.stalled).count();
        self.metrics.stalled_readers(&pipeline, count);
        for namespace in stalled {
            if let Some(addr) = self
                .readers
                .get_mut(&namespace)
                .and_then(|reader| reader.addr.take())
            {
                // A stalled reader may never finish its read: abort it, without waiting.
                actix::spawn(async move {
                    let _ = addr.send(AbortReader).await;
                });
            }
            self.metrics
                .actor_restarted(&pipeline, "change_stream_reader", "stalled");
            self.restart_reader(namespace, ResumeAt::Acknowledged, ctx);
        }
    }
}
