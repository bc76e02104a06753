//! Launching the pipeline: [`SourceSupervisor::start`] prepares a start attempt (fences the
//! producers of the owned slots, creates the known topics, loads the checkpoints), then
//! `launch` resolves what the slots share and starts, for each owned slot with readers, its
//! [`RecordProducer`] and its readers.
//!
//! The rules:
//! - Fence first, then read the checkpoints: exactly-once, `init_transactions` on each
//!   slot's new producer aborts what an earlier producer of the slot left open and makes any
//!   such zombie fail from then on, so no earlier commit lands after the read (reading first
//!   would publish its records again).
//! - Only the owned slots with readers get a producer. A start attempt overtaken by a newer
//!   one (or a stop) launches nothing: its producers are dropped unused.
//! - A start that fails is tried again after the pipeline's backoff, `/ready` saying why
//!   meanwhile; a configuration that does not resolve (the namespace map, the reader
//!   settings) fails the pipeline for good.
//! - What the slots share is resolved once per launch ([`SlotKit`]): one memory budget for
//!   the pipeline whatever the slots it owns, one topic map, one conversion, one topic
//!   limits cache; at-least-once, one client for every slot's checkpoints, made once some
//!   slot needs it. Exactly-once producers wait at least 30 s for their transactions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::prepare::{create_known_topics, slot_producers};
use super::state::{Running, SlotKit, SlotRun, SourceSupervisor};
use crate::budget::{Budget, Report as BudgetReport};
use crate::clients::kafka;
use crate::config::Delivery;
use crate::ops::health;
use crate::pipeline::registry_readiness;
use crate::source::checkpoint;
use crate::source::error::SourceError;
use crate::source::format::Conversion;
use crate::source::lifecycle::Origin;
use crate::source::producer::{ProducerSetup, RecordPolicy, RecordProducer};
use crate::source::reader::{ReaderContext, ReaderSettings};
use crate::source::topic::TopicMapper;
use crate::source::topic_creator::TopicCreator;
use crate::source::topic_limits::TopicLimits;

impl SourceSupervisor {
    /// Start attempt `attempt`: fences (exactly-once: `init_transactions` on the new
    /// producer, which aborts whatever an earlier producer of the pipeline left open and
    /// makes any such zombie fail from then on), then reads the checkpoints, which no
    /// earlier producer can move any more, then starts the readers. Reading first would let
    /// an earlier producer's commit land after the read: its records published again.
    pub(super) fn start(&mut self, attempt: u64, ctx: &mut Context<Self>) {
        let config = self.config.clone();
        let kafka = self.kafka.clone();
        let metrics = self.metrics.clone();
        let readiness = self.readiness.clone();
        // The owned slots with readers: only they need a producer.
        let slots: Vec<i32> = self.readers_by_owned_slot().into_keys().collect();
        let prepare = async move {
            let partitions = i32::try_from(config.slots).unwrap_or(i32::MAX);
            checkpoint::ensure_topic(&kafka, &config.checkpoint_topic, partitions).await?;
            let producers = slot_producers(&kafka, &config, &slots).await?;
            let creator = if config.create_topics {
                let creator =
                    TopicCreator::new(&kafka, &config, metrics.clone(), readiness.clone())?;
                create_known_topics(&creator, &config).await?;
                Some(Arc::new(creator))
            } else {
                None
            };
            let reading = checkpoint::Reading::start(&config, slots);
            let began = std::time::Instant::now();
            let loaded = checkpoint::load(&kafka, &reading).await?;
            Ok::<_, SourceError>(((loaded, began.elapsed()), (producers, creator)))
        };
        ctx.spawn(prepare.into_actor(self).map(move |result, act, ctx| {
            match result {
                Ok(((loaded, took), (producers, creator))) => {
                    checkpoint::report_load(&act.metrics, &act.config.name, &loaded, took);
                    // An attempt overtaken by a newer one (or a stop) launches nothing; its
                    // producers are dropped unused.
                    if let Some(launch) = act.lifecycle.prepared(attempt) {
                        act.checkpoints = loaded.checkpoints;
                        act.checkpoint_generation = loaded.generation;
                        act.launch(producers, creator, launch, ctx);
                    }
                }
                Err(error) => {
                    if act.lifecycle.is_current(Origin::Start(attempt)) {
                        // Not ready while it cannot start (a checkpoint topic it may not
                        // share, a load that stopped moving): `/ready` says why.
                        act.readiness.set_problem(
                            health::pipeline(&act.config.name),
                            format!("source pipeline cannot start: {error}"),
                        );
                        act.retry_pipeline(error, ctx);
                    }
                }
            }
        }));
    }

    fn launch(
        &mut self,
        producers: BTreeMap<i32, kafka::KafkaProducer>,
        creator: Option<Arc<TopicCreator>>,
        launch: u64,
        ctx: &mut Context<Self>,
    ) {
        // Validation compiled the namespace map's regexes already; should one still fail,
        // the pipeline stops saying which.
        let topics = match TopicMapper::new(&self.config) {
            Ok(topics) => topics,
            Err(reason) => {
                let error = SourceError::Config {
                    namespace: self.config.name.clone(),
                    reason,
                };
                return self.fail(error, ctx);
            }
        };
        let settings = match ReaderSettings::resolve(&self.config) {
            Ok(settings) => settings,
            Err(error) => return self.fail(error, ctx),
        };
        let conversion = Conversion::for_source(
            &self.config,
            Some(registry_readiness(
                &self.readiness,
                &self.metrics,
                &self.config.name,
            )),
        );
        let budget = Budget::new(
            &self.config.name,
            self.config.memory_budget.as_u64(),
            Some(BudgetReport {
                metrics: self.metrics.clone(),
                readiness: self.readiness.clone(),
            }),
        );
        let max_message_bytes = kafka::producer_max_message_bytes(&self.kafka);
        let topic_limits = Arc::new(TopicLimits::new(
            kafka::admin(&self.kafka).ok(),
            self.kafka.request_timeout,
            max_message_bytes,
        ));
        let mut kit = SlotKit {
            settings,
            topics,
            conversion,
            budget,
            topic_limits,
            creator,
            max_message_bytes,
            checkpoint_producer: None,
        };
        if let Err(error) = self.checkpoints_client(&mut kit, !producers.is_empty()) {
            return self.fail(error, ctx);
        }
        let generation = self.checkpoint_generation;
        let slots: BTreeMap<i32, SlotRun> = producers
            .into_iter()
            .map(|(slot, producer)| (slot, self.slot_run(&kit, slot, producer, generation, ctx)))
            .collect();
        let owned: Vec<i32> = slots.keys().copied().collect();
        self.running = Some(Running { slots, kit });
        if let Err(error) = self.start_readers(&owned, launch, ctx) {
            return self.fail(error, ctx);
        }
        self.metrics.stalled_readers(&self.config.name, 0);
        self.report_slots();
        // Fenced slots taken again run now.
        self.fenced_waiting.retain(|slot| !owned.contains(slot));
        self.report_fenced();
        self.readiness.clear(&health::pipeline(&self.config.name));
        self.board.running(&self.config.name);
        tracing::info!(pipeline = %self.config.name, readers = self.readers.values().filter(|r| r.addr.is_some()).count(), slots = ?owned, "source pipeline running");
    }

    /// At-least-once: checkpoints go through a client of their own, shared by the slots
    /// (see `RecordProducer::checkpoints_through`), made once some slot needs it.
    pub(super) fn checkpoints_client(
        &self,
        kit: &mut SlotKit,
        needed: bool,
    ) -> Result<(), SourceError> {
        if self.config.delivery == Delivery::AtLeastOnce
            && needed
            && kit.checkpoint_producer.is_none()
        {
            kit.checkpoint_producer = Some(kafka::producer(&self.kafka)?);
        }
        Ok(())
    }

    /// Starts the producer actor of `slot` and what its readers share.
    pub(super) fn slot_run(
        &self,
        kit: &SlotKit,
        slot: i32,
        producer: kafka::KafkaProducer,
        generation: u64,
        ctx: &mut Context<Self>,
    ) -> SlotRun {
        let producer = RecordProducer::new(
            ProducerSetup {
                pipeline: self.config.name.clone(),
                launch: self.lifecycle.launch(),
                slot,
                checkpoint_topic: self.config.checkpoint_topic.clone(),
                slots: self.config.slots,
                checkpoint_interval: self.config.checkpoint_interval,
                generation,
                policy: RecordPolicy {
                    errors: self.config.errors.clone(),
                    oversize: self.config.oversize,
                    max_message_bytes: kit.max_message_bytes,
                    topic_limits: kit.topic_limits.clone(),
                    topic_creator: kit.creator.clone(),
                },
                mailbox_capacity: self.config.queue_capacity,
            },
            producer,
            ctx.address().recipient(),
            self.metrics.clone(),
        );
        let producer = match (self.config.delivery, &kit.checkpoint_producer) {
            (Delivery::AtLeastOnce, Some(checkpoints)) => {
                producer.checkpoints_through(checkpoints.clone())
            }
            (Delivery::AtLeastOnce, None) => producer,
            (Delivery::ExactlyOnce, _) => {
                producer.exactly_once(self.kafka.request_timeout.max(Duration::from_secs(30)))
            }
        }
        .start();
        let shared = Arc::new(ReaderContext {
            config: self.config.clone(),
            settings: kit.settings.clone(),
            conversion: kit.conversion.clone(),
            topics: kit.topics.clone(),
            mongo: self.mongo.clone(),
            producer: producer.clone(),
            metrics: self.metrics.clone(),
            copies: self.copies.clone(),
            budget: kit.budget.clone(),
            snapshots: self.snapshots.clone(),
            snapshot_progress: self.snapshot_progress.clone(),
        });
        SlotRun { producer, shared }
    }
}
