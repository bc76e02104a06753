//! The Kafka producer actor of a source pipeline: hands readers' records to librdkafka in
//! order, tracks their acknowledgements, and writes each reader's checkpoint once every
//! record before it is acknowledged.
//!
//! Its mailbox is bounded: a reader awaits `send()`, so when Kafka is slow the readers stop
//! pulling from MongoDB. Kafka's acknowledgements are awaited outside the actor and taken at
//! every message it handles ([`super::acknowledgements`]).

use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode;

use super::acknowledgements::{self, Acknowledgements, Answered};
use super::checkpoint::{self, Checkpoint, CheckpointKey};
use super::error::SourceError;
use super::ledger::{Action, CheckpointLedger, Closing, Commit, Ending};
use super::model::Position;
pub use super::model::{OutgoingRecord, ReaderId};
use super::slots::slot_of;
use super::topic_creator::TopicCreator;
use super::topic_limits::{record_size, TopicLimits};
use crate::chunks::{self, ChunkHeader};
use crate::clients::kafka;
use crate::config::{ErrorsConfig, Oversize, Tolerance};
use crate::ops::metrics::{Metrics, MAILBOX_RECORD_PRODUCER};

/// What the producer does with records that cannot be published as they are.
#[derive(Debug, Clone)]
pub struct RecordPolicy {
    /// `errors`: stop, or dead-letter.
    pub errors: ErrorsConfig,
    /// `oversize`: what to do with a record over `max_message_bytes`.
    pub oversize: Oversize,
    /// The producer's `message.max.bytes`.
    pub max_message_bytes: usize,
    /// Each topic's own `max.message.bytes`, which may be smaller.
    pub topic_limits: std::sync::Arc<TopicLimits>,
    /// With `create_topics`: creates each topic before its first record.
    pub topic_creator: Option<std::sync::Arc<TopicCreator>>,
}

/// Publishes `records`; once they (and everything the reader sent before) are
/// acknowledged, `token` becomes the reader's checkpoint. An empty batch with a token moves
/// an idle reader's checkpoint.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), SourceError>")]
pub struct ProduceBatch {
    /// The sending reader.
    pub reader: ReaderId,
    /// The records, in order.
    pub records: Vec<OutgoingRecord>,
    /// The reader's position after the last record.
    pub token: Option<Position>,
}

/// Where a reader without a position (`latest`, a timestamp) found its stream when it
/// opened: stored as its checkpoint at once (exactly-once: committed), answered once Kafka
/// has it. The reader reads nothing before, so a daemon killed before its first change
/// resumes there instead of at `latest` again, losing what changed while it was down.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), SourceError>")]
pub struct StoreStart {
    /// The reader.
    pub reader: ReaderId,
    /// Where its stream opened.
    pub position: Position,
}

/// The newest position of a reader that Kafka acknowledged, for the reader restarting as
/// this generation.
#[derive(Message, Debug)]
#[rtype(result = "Option<Position>")]
pub struct LastAcknowledged(pub ReaderId);

/// Ends the producer: exactly-once, commits its open transaction on a clean stop and
/// aborts it on a failure (see [`CheckpointLedger::close`]); then waits until every record
/// handed over is acknowledged and every checkpoint written, or until the deadline, and
/// stops. Answers how many batches were still in flight. From the moment it arrives, no
/// batch is taken and no scheduled commit runs.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct Drain {
    /// How long the records in flight may take.
    pub deadline: Duration,
    /// Why the producer ends.
    pub ending: Ending,
}

/// Tells the pipeline supervisor the producer failed; it restarts the pipeline.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ProducerFailed {
    /// The launch of the pipeline the producer served.
    pub launch: u64,
    /// The slot it served.
    pub slot: i32,
    /// Why it failed.
    pub error: SourceError,
}

/// How a producer actor is set up.
#[derive(Debug, Clone)]
pub struct ProducerSetup {
    /// The pipeline's name.
    pub pipeline: String,
    /// Which launch of the pipeline the producer serves: its failure names it, so a late
    /// failure of an earlier launch's producer restarts nothing.
    pub launch: u64,
    /// The slot whose readers it serves (a fencing error loses this slot).
    pub slot: i32,
    /// Where checkpoints go.
    pub checkpoint_topic: String,
    /// The pipeline's slot count: a reader's checkpoints go to its slot's partition.
    pub slots: u32,
    /// A reader's checkpoint (or an exactly-once transaction) is written at most this often.
    pub checkpoint_interval: Duration,
    /// The generation its checkpoints carry (see [`checkpoint::Loaded::generation`]).
    pub generation: u64,
    /// What to do with records that cannot be published as they are.
    pub policy: RecordPolicy,
    /// The bound of its mailbox.
    pub mailbox_capacity: usize,
}

/// The producer actor.
pub struct RecordProducer {
    setup: ProducerSetup,
    producer: kafka::KafkaProducer,
    /// At-least-once: the client that writes checkpoints, when not `producer` (see
    /// [`RecordProducer::checkpoints_through`]).
    checkpoint_producer: Option<kafka::KafkaProducer>,
    ledger: CheckpointLedger,
    pending_checkpoint_writes: usize,
    transaction_timeout: Duration,
    /// Draining or failed: no batch is taken, no scheduled commit runs.
    closing: bool,
    /// Records and checkpoints go into Kafka transactions.
    exactly_once: bool,
    supervisor: Recipient<ProducerFailed>,
    metrics: Metrics,
    /// At-least-once: the batches Kafka answered, left by the tasks awaiting them.
    answers: Acknowledgements,
    /// Exactly-once: readers waiting for the commit of where their stream opened
    /// ([`StoreStart`]); dropped, they hear the producer is gone.
    commit_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl RecordProducer {
    /// Writes records and checkpoints in Kafka transactions (the producer must be
    /// transactional and initialised), committed at most `checkpoint_interval` apart; a
    /// commit may take up to `timeout`.
    pub fn exactly_once(mut self, timeout: Duration) -> Self {
        self.ledger = CheckpointLedger::exactly_once(self.setup.checkpoint_interval);
        self.transaction_timeout = timeout;
        self.exactly_once = true;
        self
    }

    /// At-least-once: writes checkpoints through `producer`, a client of their own. librdkafka
    /// sends one partition per request and, idempotent, keeps at most 5 requests in flight per
    /// connection: a reader's checkpoint every `checkpoint_interval` (100 readers, 16
    /// checkpoint partitions) took those places from the records and held them in librdkafka's
    /// queue (issue 24). A checkpoint is written only once every record before it is
    /// acknowledged, so the two clients need no order between them.
    pub fn checkpoints_through(mut self, producer: kafka::KafkaProducer) -> Self {
        self.checkpoint_producer = Some(producer);
        self
    }

    /// A producer set up by `setup`, publishing through `producer`; failures are reported
    /// to `supervisor`.
    pub fn new(
        setup: ProducerSetup,
        producer: kafka::KafkaProducer,
        supervisor: Recipient<ProducerFailed>,
        metrics: Metrics,
    ) -> Self {
        Self {
            ledger: CheckpointLedger::at_least_once(setup.checkpoint_interval),
            setup,
            producer,
            checkpoint_producer: None,
            pending_checkpoint_writes: 0,
            transaction_timeout: Duration::from_secs(30),
            closing: false,
            exactly_once: false,
            supervisor,
            metrics,
            answers: Acknowledgements::default(),
            commit_waiters: Vec::new(),
        }
    }

    fn fail(&mut self, error: SourceError, ctx: &mut Context<Self>) {
        tracing::error!(pipeline = %self.setup.pipeline, %error, "producer failed");
        self.closing = true;
        let supervisor = self.supervisor.clone();
        let (launch, slot) = (self.setup.launch, self.setup.slot);
        // Exactly-once: the open transaction is aborted before the supervisor hears of the
        // failure, so nothing of it can commit once the pipeline restarts.
        let abort = (self.ledger.close(Ending::Failure) == Closing::Abort).then(|| {
            self.ledger.aborted();
            self.abort_transaction()
        });
        // Not on this actor's context: a stopping actor polls none of its futures, so the
        // report would be dropped and the pipeline never restarted.
        actix::spawn(async move {
            if let Some(abort) = abort {
                abort.await;
            }
            let _ = supervisor
                .send(ProducerFailed {
                    launch,
                    slot,
                    error,
                })
                .await;
        });
        ctx.stop();
    }

    /// Exactly-once: the open transaction can only be aborted (`error`: a record of it was
    /// not delivered, librdkafka refused the next one with `State`, or its commit failed that
    /// way). Says so, naming the cause, then fails: the transaction is aborted and the
    /// pipeline starts again from its last committed checkpoint, with nothing of the aborted
    /// transaction visible to a `read_committed` consumer.
    fn abandon_transaction(&mut self, error: SourceError, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        tracing::warn!(pipeline = %self.setup.pipeline, slot = self.setup.slot, cause = %error, "the open Kafka transaction can only be aborted; aborting it, the pipeline starts again from its last committed checkpoint");
        self.metrics
            .produce_error(&self.setup.pipeline, "transaction_aborted");
        self.fail(error, ctx);
    }

    /// Aborts the open transaction, off the actor thread; a failure to abort is logged (a
    /// fenced or failed producer's transaction is aborted by the next `init_transactions`).
    fn abort_transaction(&self) -> impl std::future::Future<Output = ()> {
        let producer = self.producer.clone();
        let timeout = self.transaction_timeout;
        let pipeline = self.setup.pipeline.clone();
        async move {
            let aborted =
                tokio::task::spawn_blocking(move || producer.abort_transaction(timeout)).await;
            match aborted {
                Ok(Ok(())) => {
                    tracing::info!(pipeline = %pipeline, "aborted the open Kafka transaction")
                }
                Ok(Err(error)) => {
                    tracing::warn!(pipeline = %pipeline, %error, "could not abort the open Kafka transaction; the next start fences it")
                }
                Err(error) => {
                    tracing::warn!(pipeline = %pipeline, %error, "could not abort the open Kafka transaction; the next start fences it")
                }
            }
        }
    }

    /// Records every batch Kafka answered since last time in the ledger, and does what it
    /// asks (two checkpoints of one reader released together are written as one, the newer);
    /// a batch not delivered fails the producer.
    fn take_answers(&mut self, ctx: &mut Context<Self>) {
        let mut actions = Vec::new();
        for Answered { ticket, result, at } in self.answers.take() {
            self.metrics
                .acknowledgement_taken(&self.setup.pipeline, at.elapsed());
            if let Err(error) = result {
                self.ledger.failed(&ticket);
                return self.fail(error, ctx);
            }
            actions.extend(self.ledger.acknowledged(&ticket, Instant::now()));
        }
        for action in acknowledgements::latest_per_namespace(actions) {
            self.perform(Some(action), ctx);
        }
    }

    /// Does what the ledger asked.
    fn perform(&mut self, action: Option<Action>, ctx: &mut Context<Self>) {
        match action {
            None => {}
            Some(Action::WakeAfter { namespace, after }) => {
                ctx.run_later(after, move |act, ctx| {
                    let action = act.ledger.wake(&namespace, Instant::now());
                    act.perform(action, ctx);
                });
            }
            Some(Action::Unchanged { namespace }) => self
                .metrics
                .checkpoint_current(&self.setup.pipeline, &namespace),
            Some(Action::Write {
                namespace,
                position,
            }) => self.write_checkpoint(namespace, &position, None, ctx),
        }
    }

    /// Hands the checkpoint of `namespace` at `position` to Kafka, waiting while
    /// librdkafka's queue is full (no other message is handled meanwhile, so checkpoints
    /// reach Kafka in the order they were taken); a failed delivery fails the producer.
    /// `written` hears when Kafka acknowledged it.
    fn write_checkpoint(
        &mut self,
        namespace: String,
        position: &Position,
        written: Option<tokio::sync::oneshot::Sender<()>>,
        ctx: &mut Context<Self>,
    ) {
        let record = match checkpoint_record(&self.setup, &namespace, position, false) {
            Ok(record) => record,
            Err(error) => return self.fail(error, ctx),
        };
        self.pending_checkpoint_writes += 1;
        let producer = self
            .checkpoint_producer
            .clone()
            .unwrap_or_else(|| self.producer.clone());
        let topic = self.setup.checkpoint_topic.clone();
        let metrics = self.metrics.clone();
        let pipeline = self.setup.pipeline.clone();
        let enqueue = async move {
            enqueue_checkpoint(&producer, &topic, &record, || {
                metrics.produce_retried(&pipeline)
            })
            .await
        };
        ctx.wait(enqueue.into_actor(self).map(move |enqueued, act, ctx| {
            let delivery = match enqueued {
                Ok(delivery) => delivery,
                Err(source) => {
                    act.pending_checkpoint_writes -= 1;
                    return act.fail(
                        SourceError::Checkpoint {
                            namespace,
                            reason: source.to_string(),
                        },
                        ctx,
                    );
                }
            };
            act.metrics
                .checkpoint_written(&act.setup.pipeline, &namespace);
            ctx.spawn(delivery.into_actor(act).map(move |result, act, ctx| {
                act.pending_checkpoint_writes -= 1;
                let error = match result {
                    Ok(Ok(_)) => {
                        if let Some(written) = written {
                            let _ = written.send(());
                        }
                        return;
                    }
                    Ok(Err((error, _))) => error.to_string(),
                    Err(_) => "the delivery was cancelled".to_owned(),
                };
                act.fail(
                    SourceError::Checkpoint {
                        namespace,
                        reason: error,
                    },
                    ctx,
                );
            }));
        }));
    }

    /// Exactly-once: writes the checkpoints of the open transaction into it (waiting while
    /// librdkafka's queue is full) and commits it. No batch is handled meanwhile.
    fn commit(&mut self, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let Some(commit) = self.ledger.begin_commit() else {
            return;
        };
        self.commit_with(commit, ctx);
    }

    /// Exactly-once: writes `commit`'s checkpoints into the open transaction and commits it.
    fn commit_with(&mut self, commit: Commit, ctx: &mut Context<Self>) {
        let records = commit
            .checkpoints
            .iter()
            .map(|(namespace, position)| checkpoint_record(&self.setup, namespace, position, true))
            .collect::<Result<Vec<_>, _>>();
        let records = match records {
            Ok(records) => records,
            Err(error) => return self.fail(error, ctx),
        };
        let producer = self.producer.clone();
        let topic = self.setup.checkpoint_topic.clone();
        let metrics = self.metrics.clone();
        let pipeline = self.setup.pipeline.clone();
        let timeout = self.transaction_timeout;
        let commit_transaction = async move {
            for record in &records {
                // Its delivery is part of the commit: a failed record fails the commit.
                enqueue_checkpoint(&producer, &topic, record, || {
                    metrics.produce_retried(&pipeline)
                })
                .await?;
            }
            tokio::task::spawn_blocking(move || producer.commit_transaction(timeout))
                .await
                .unwrap_or(Err(KafkaError::Canceled))
        };
        ctx.wait(
            commit_transaction
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.ledger.commit_finished(commit.clone(), result.is_ok());
                    match result {
                        Ok(()) => {
                            for (namespace, _) in &commit.checkpoints {
                                act.metrics
                                    .checkpoint_written(&act.setup.pipeline, namespace);
                            }
                            // No message is handled while a commit runs: every waiter's
                            // position was in this one.
                            for waiter in act.commit_waiters.drain(..) {
                                let _ = waiter.send(());
                            }
                        }
                        Err(error) => {
                            let error = SourceError::Transaction {
                                what: "committing",
                                source: Box::new(error),
                            };
                            if error_requires_abort(&error) {
                                act.abandon_transaction(error, ctx);
                            } else {
                                act.fail(error, ctx);
                            }
                        }
                    }
                }),
        );
    }

    /// Exactly-once: opens a transaction unless one is open, and schedules its commit.
    fn ensure_transaction(&mut self, ctx: &mut Context<Self>) -> Result<(), SourceError> {
        if !self.ledger.open_transaction() {
            return Ok(());
        }
        self.producer
            .begin_transaction()
            .map_err(|source| SourceError::Transaction {
                what: "beginning",
                source: Box::new(source),
            })?;
        ctx.run_later(self.ledger.interval(), |act, ctx| act.commit(ctx));
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.ledger.in_flight() + self.pending_checkpoint_writes
    }
}

/// A checkpoint record: the partition of its reader's slot, its key and its value.
struct CheckpointRecord {
    partition: i32,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// The checkpoint record of `namespace` at `position`, for the slot of `namespace`.
/// It carries the start's generation, and whether it is written in a transaction
/// (`exactly_once`).
fn checkpoint_record(
    setup: &ProducerSetup,
    namespace: &str,
    position: &Position,
    exactly_once: bool,
) -> Result<CheckpointRecord, SourceError> {
    let key = CheckpointKey {
        pipeline: setup.pipeline.clone(),
        namespace: namespace.to_owned(),
    };
    let (key, value) = Checkpoint::new(position)
        .map(|cp| cp.stamped(setup.generation, exactly_once))
        .map_err(|e| e.to_string())
        .and_then(|cp| checkpoint::record(&key, &cp).map_err(|e| e.to_string()))
        .map_err(|reason| SourceError::Checkpoint {
            namespace: namespace.to_owned(),
            reason,
        })?;
    Ok(CheckpointRecord {
        partition: slot_of(&setup.pipeline, namespace, setup.slots),
        key,
        value,
    })
}

/// Hands a checkpoint record to librdkafka, to its slot's partition; a full queue is
/// backpressure, not an error: it waits for room, calling `on_wait` each time.
async fn enqueue_checkpoint(
    producer: &kafka::KafkaProducer,
    topic: &str,
    record: &CheckpointRecord,
    on_wait: impl FnMut(),
) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
    kafka::enqueue_to_partition(
        producer,
        topic,
        record.partition,
        &record.key,
        &record.value,
        on_wait,
    )
    .await
}

impl Actor for RecordProducer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.setup.mailbox_capacity);
        // An idle producer (no message to handle) takes the answers when they come.
        ctx.add_stream(self.answers.wake_ups());
    }
}

impl StreamHandler<()> for RecordProducer {
    fn handle(&mut self, (): (), ctx: &mut Self::Context) {
        self.take_answers(ctx);
    }

    /// The wake-ups never end; should they, the producer goes on (a drain takes the answers
    /// itself).
    fn finished(&mut self, _: &mut Self::Context) {}
}

fn dead_letter_headers(
    pipeline: &str,
    policy: &RecordPolicy,
    record: &OutgoingRecord,
    reason: &str,
    stage: &str,
) -> OwnedHeaders {
    let letter = crate::dead_letter::DeadLetter {
        pipeline,
        reason,
        stage,
        origin: &record.origin,
        target_topic: Some(&record.topic),
        source: None,
        // The value of a record too large for Kafka is left out: it is what did not fit.
        omitted: (stage == "too_large").then_some("value"),
    };
    crate::dead_letter::headers(policy.errors.dead_letter_headers, &letter)
        .into_iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_str()),
            })
        })
}

/// The error of a failed delivery. The broker refusing a record as too large (a topic's
/// `max.message.bytes` below the producer's) is no transient failure: sent again, it is
/// refused again, so it stops the pipeline naming the record (issue 21, item 9: it used to
/// restart the pipeline into the same event forever). Records over the topic's limit go
/// through `oversize` before they are sent; this is what is left: a limit that could not be
/// read, or several records librdkafka put in one request over the limit.
fn delivery_error(origin: String, topic: String, source: KafkaError) -> SourceError {
    match source {
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge) => {
            SourceError::TooLarge {
                origin,
                topic,
                reason: "the broker refused it as larger than the topic's `max.message.bytes` (or the request holding it as larger: set `kafka.producer` `batch.size` at most the topic's `max.message.bytes`)".to_owned(),
            }
        }
        source => SourceError::Delivery {
            origin,
            topic,
            source: Box::new(source),
        },
    }
}

/// Whether `error` leaves the open Kafka transaction only to be aborted: librdkafka refuses
/// records with `State` once a record or a request of the transaction failed (or outside a
/// transaction), and says of a failed commit whether it requires an abort.
fn error_requires_abort(error: &SourceError) -> bool {
    let source = match error {
        SourceError::Kafka { source, .. }
        | SourceError::Delivery { source, .. }
        | SourceError::Transaction { source, .. } => source,
        _ => return false,
    };
    match source.as_ref() {
        KafkaError::Transaction(error) => error.txn_requires_abort(),
        other => other.rdkafka_error_code() == Some(RDKafkaErrorCode::State),
    }
}

/// The first failed delivery of `deliveries`, as the error naming its record, once all are
/// answered.
async fn first_failure(deliveries: Deliveries) -> Option<SourceError> {
    for (origin, topic, _, delivery) in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((source, _))) => return Some(delivery_error(origin, topic, source)),
            Err(_) => {
                return Some(SourceError::Delivery {
                    origin,
                    topic,
                    source: Box::new(KafkaError::Canceled),
                })
            }
        }
    }
    None
}

/// The deliveries of one batch: what each record was, where it went, when it was handed
/// over, and its acknowledgement.
type Deliveries = Vec<(String, String, Instant, rdkafka::producer::DeliveryFuture)>;

/// What hands a pipeline's records to librdkafka: the producer, the pipeline, what to do
/// with records that cannot be published as they are, and the metrics.
#[derive(Clone)]
struct Publisher {
    producer: kafka::KafkaProducer,
    pipeline: String,
    policy: RecordPolicy,
    metrics: Metrics,
}

impl Publisher {
    /// Hands the records of a batch to librdkafka in order, applying the policy to those that
    /// cannot be published as they are.
    async fn enqueue_batch(&self, records: &[OutgoingRecord]) -> Result<Deliveries, SourceError> {
        let Self {
            producer,
            pipeline,
            policy,
            metrics,
        } = self;
        let pipeline = pipeline.as_str();
        let mut deliveries = Vec::with_capacity(records.len());
        let waited = || metrics.produce_retried(pipeline);
        if let Some(creator) = &policy.topic_creator {
            // Every scope's topics, named by the events' namespaces: created before their
            // first record, in one request for the batch (known ones are not asked again).
            let topics: Vec<&str> = records.iter().map(|r| r.topic.as_str()).collect();
            creator.ensure(&topics).await?;
        }
        for record in records {
            if let Some(reason) = &record.failure {
                let delivery = self.dead_letter(record, reason, "format").await?;
                deliveries.extend(delivery);
                continue;
            }
            let key_len = record.key.as_ref().map_or(0, Vec::len);
            let value_len = record.value.as_ref().map_or(0, Vec::len);
            // A topic set below the producer's limit refuses the record broker-side: the
            // policy applies before it is sent (issue 21, item 9).
            let topic_limit = policy
                .topic_limits
                .limit(&record.topic)
                .await
                .filter(|limit| *limit < policy.max_message_bytes);
            if let Some(limit) = topic_limit {
                if record_size(key_len, value_len, 0) > limit {
                    let reason = format!(
                        "the record ({value_len} bytes of value) is larger than the topic's `max.message.bytes` ({limit} bytes)"
                    );
                    deliveries.extend(self.oversize(record, &reason, limit, true).await?);
                    continue;
                }
            }
            let sent = kafka::enqueue_waiting(
                producer,
                &record.topic,
                record.key.as_deref(),
                record.value.as_deref(),
                None,
                waited,
            )
            .await;
            match sent {
                Ok(delivery) => {
                    metrics.record_produced(pipeline, &record.topic, record.size());
                    deliveries.push((
                        record.origin.clone(),
                        record.topic.clone(),
                        Instant::now(),
                        delivery,
                    ));
                }
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                    let reason = format!(
                        "the record is larger than the producer's `message.max.bytes` ({value_len} bytes of value, limit {})",
                        policy.max_message_bytes,
                    );
                    let limit = policy.max_message_bytes;
                    deliveries.extend(self.oversize(record, &reason, limit, false).await?);
                }
                Err(source) => {
                    metrics.produce_error(pipeline, "refused");
                    return Err(SourceError::Kafka {
                        topic: record.topic.clone(),
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(deliveries)
    }

    /// What `oversize` says for a record over `limit` (`reason` says whose): skipped
    /// (counted), split into chunks that fit (`apart`: each in a request of its own, for a
    /// topic whose limit is below what librdkafka puts in one request), dead-lettered, or
    /// the error that stops the pipeline naming the record.
    async fn oversize(
        &self,
        record: &OutgoingRecord,
        reason: &str,
        limit: usize,
        apart: bool,
    ) -> Result<Deliveries, SourceError> {
        let (pipeline, policy, metrics) = (self.pipeline.as_str(), &self.policy, &self.metrics);
        metrics.produce_error(pipeline, "too_large");
        let key_len = record.key.as_ref().map_or(0, Vec::len);
        match (policy.oversize, chunks::chunk_size(limit, key_len)) {
            (Oversize::Skip, _) => {
                tracing::warn!(pipeline, origin = %record.origin, topic = %record.topic, %reason, "skipping an event too large for Kafka (`oversize = \"skip\"`)");
                metrics.oversize_event(pipeline, "skipped");
                Ok(Vec::new())
            }
            (Oversize::Split, Some(size)) => {
                let parts = self.split(record, size, apart).await?;
                tracing::info!(pipeline, origin = %record.origin, topic = %record.topic, limit, "split an event too large for Kafka");
                metrics.oversize_event(pipeline, "split");
                Ok(parts)
            }
            _ => {
                let delivery = self.dead_letter(record, reason, "too_large").await?;
                metrics.oversize_event(
                    pipeline,
                    if delivery.is_some() {
                        "dead_lettered"
                    } else {
                        "failed"
                    },
                );
                Ok(delivery.into_iter().collect())
            }
        }
    }

    /// Publishes `record`'s value in chunks of at most `size` bytes, all with its key;
    /// `apart`: each chunk in a request of its own (what was handed over before is flushed
    /// first, each chunk acknowledged before the next), so that no request holds more than
    /// one chunk.
    async fn split(
        &self,
        record: &OutgoingRecord,
        size: usize,
        apart: bool,
    ) -> Result<Deliveries, SourceError> {
        let (producer, pipeline, metrics) = (&self.producer, self.pipeline.as_str(), &self.metrics);
        let value = record.value.as_deref().unwrap_or_default();
        let parts = chunks::split(value, size);
        if apart {
            let flushing = producer.clone();
            let flushed =
                tokio::task::spawn_blocking(move || flushing.flush(Duration::from_secs(30)))
                    .await
                    .unwrap_or(Err(KafkaError::Canceled));
            flushed.map_err(|source| SourceError::Kafka {
                topic: record.topic.clone(),
                source: Box::new(source),
            })?;
        }
        let id = bson::oid::ObjectId::new().to_hex();
        let mut deliveries = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            let mut headers = OwnedHeaders::new();
            for (key, value) in ChunkHeader::render(&id, index, parts.len()) {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_str()),
                });
            }
            let delivery = kafka::enqueue_waiting(
                producer,
                &record.topic,
                record.key.as_deref(),
                Some(part),
                Some(headers),
                || metrics.produce_retried(pipeline),
            )
            .await
            .map_err(|source| SourceError::Kafka {
                topic: record.topic.clone(),
                source: Box::new(source),
            })?;
            let key = record.key.as_ref().map_or(0, Vec::len);
            metrics.record_produced(pipeline, &record.topic, key + part.len());
            let origin = format!("{} (chunk {index})", record.origin);
            if apart {
                match delivery.await {
                    Ok(Ok(_)) => continue,
                    Ok(Err((source, _))) => {
                        return Err(delivery_error(origin, record.topic.clone(), source))
                    }
                    Err(_) => {
                        return Err(delivery_error(
                            origin,
                            record.topic.clone(),
                            KafkaError::Canceled,
                        ))
                    }
                }
            }
            deliveries.push((origin, record.topic.clone(), Instant::now(), delivery));
        }
        Ok(deliveries)
    }

    /// Sends `record` to the dead letter topic with headers saying why, when `errors` allow;
    /// otherwise the error that stops the pipeline. The dead letter has the record's key and,
    /// for a record too large, no value (the value is what did not fit).
    async fn dead_letter(
        &self,
        record: &OutgoingRecord,
        reason: &str,
        stage: &'static str,
    ) -> Result<Option<(String, String, Instant, rdkafka::producer::DeliveryFuture)>, SourceError>
    {
        let (producer, pipeline, policy, metrics) = (
            &self.producer,
            self.pipeline.as_str(),
            &self.policy,
            &self.metrics,
        );
        let (Tolerance::All, Some(dlq)) = (
            policy.errors.tolerance,
            policy.errors.dead_letter_topic.as_deref(),
        ) else {
            return Err(SourceError::TooLarge {
                origin: record.origin.clone(),
                topic: record.topic.clone(),
                reason: reason.to_owned(),
            });
        };
        tracing::warn!(pipeline, origin = %record.origin, topic = %record.topic, dead_letter_topic = dlq, %reason, "dead-lettering an event");
        metrics.dead_lettered(pipeline, stage);
        let value = match stage {
            "too_large" => None,
            _ => record.value.as_deref(),
        };
        let delivery = kafka::enqueue_waiting(
            producer,
            dlq,
            record.key.as_deref(),
            value,
            Some(dead_letter_headers(pipeline, policy, record, reason, stage)),
            || metrics.produce_retried(pipeline),
        )
        .await
        .map_err(|source| SourceError::Kafka {
            topic: dlq.to_owned(),
            source: Box::new(source),
        })?;
        Ok(Some((
            record.origin.clone(),
            dlq.to_owned(),
            Instant::now(),
            delivery,
        )))
    }
}

impl Handler<ProduceBatch> for RecordProducer {
    type Result = AtomicResponse<Self, Result<(), SourceError>>;

    fn handle(&mut self, batch: ProduceBatch, ctx: &mut Self::Context) -> Self::Result {
        self.metrics
            .mailbox(&self.setup.pipeline, MAILBOX_RECORD_PRODUCER, -1);
        // At-least-once only (an exactly-once batch gets no ticket): what Kafka answered is
        // recorded before the next batch. A checkpoint this writes is queued before the
        // response below, which therefore runs first.
        self.take_answers(ctx);
        // Everything that reads or moves the transaction happens once the response runs, not
        // here. actix queues this response to wait but, in the same turn, still polls the
        // actor's timers; a due commit queues its own wait after it, and the last one queued
        // runs first. The transaction this handler found open was then committed before the
        // batch's first record, which went to librdkafka outside any transaction (`State
        // (Local: Erroneous state)`), restarting the pipeline every few seconds.
        AtomicResponse::new(Box::pin(
            async {}
                .into_actor(self)
                .then(move |(), act, ctx| act.take(batch, ctx)),
        ))
    }
}

impl RecordProducer {
    /// Hands `batch` to librdkafka (exactly-once: into the open transaction, opened here if
    /// none is), with the actor to itself until every record is handed over.
    fn take(
        &mut self,
        batch: ProduceBatch,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<(), SourceError>> {
        if self.closing {
            return Box::pin(actix::fut::ready(Err(SourceError::ProducerGone {
                namespace: batch.reader.namespace,
            })));
        }
        if !self.ledger.admits(&batch.reader) {
            // A restarted reader's predecessor, still in the mailbox: its successor reads
            // these events again.
            tracing::debug!(pipeline = %self.setup.pipeline, namespace = %batch.reader.namespace, generation = batch.reader.generation, "refusing a batch of a restarted reader's predecessor");
            return Box::pin(actix::fut::ready(Ok(())));
        }
        if let Err(error) = self.ensure_transaction(ctx) {
            return Box::pin(actix::fut::ready(Err(error)));
        }
        let publisher = Publisher {
            producer: self.producer.clone(),
            pipeline: self.setup.pipeline.clone(),
            policy: self.setup.policy.clone(),
            metrics: self.metrics.clone(),
        };
        let namespace = batch.reader.namespace.clone();
        let enqueue_all = async move {
            let deliveries = publisher.enqueue_batch(&batch.records).await?;
            Ok::<_, SourceError>((batch.reader, batch.token, deliveries))
        };
        Box::pin(enqueue_all.into_actor(self).map(
            move |result: Result<_, SourceError>, act, ctx| {
                let (reader, token, deliveries) = match result {
                    Ok(sent) => sent,
                    Err(error) => {
                        // Part of the batch may be in the open transaction, its position
                        // never recorded: that transaction may only be aborted.
                        act.ledger.partly_sent();
                        if act.exactly_once && error_requires_abort(&error) {
                            // The producer's own report decides.
                            act.abandon_transaction(error, ctx);
                            return Err(SourceError::ProducerGone { namespace });
                        }
                        return Err(error);
                    }
                };
                let Some(ticket) = act.ledger.sent(&reader, token) else {
                    // Exactly-once: the commit resolves these deliveries, and fails if any
                    // of them did. A failed one leaves the transaction abortable (librdkafka
                    // refuses its next records with `State`): it is aborted at once.
                    ctx.spawn(
                        first_failure(deliveries)
                            .into_actor(act)
                            .map(|failed, act, ctx| {
                                if let (Some(error), false) = (failed, act.closing) {
                                    act.abandon_transaction(error, ctx);
                                }
                            }),
                    );
                    return Ok(());
                };
                let metrics = act.metrics.clone();
                let pipeline = act.setup.pipeline.clone();
                let answers = act.answers.clone();
                let acknowledged = async move {
                    for (origin, topic, took, delivery) in
                        join_all(deliveries.into_iter().map(|(o, t, at, d)| async move {
                            let delivery = d.await;
                            (o, t, at.elapsed(), delivery)
                        }))
                        .await
                    {
                        if !matches!(delivery, Ok(Ok(_))) {
                            metrics.produce_error(&pipeline, "delivery");
                        }
                        match delivery {
                            Ok(Ok(_)) => metrics.delivered(&pipeline, took),
                            Ok(Err((source, _))) => {
                                return Err(delivery_error(origin, topic, source))
                            }
                            Err(_) => {
                                return Err(SourceError::Delivery {
                                    origin,
                                    topic,
                                    source: Box::new(KafkaError::Canceled),
                                })
                            }
                        }
                    }
                    Ok(())
                };
                // Awaited by a task of its own, woken by its own delivery reports only (the
                // actor's futures are all polled whenever it is woken); the answer waits for
                // the actor's next message at most, measured by the ack recording histogram.
                actix::spawn(async move {
                    let result = acknowledged.await;
                    answers.push(Answered {
                        ticket,
                        result,
                        at: Instant::now(),
                    });
                });
                Ok(())
            },
        ))
    }
}

impl Handler<StoreStart> for RecordProducer {
    type Result = ResponseFuture<Result<(), SourceError>>;

    fn handle(&mut self, start: StoreStart, ctx: &mut Self::Context) -> Self::Result {
        let namespace = start.reader.namespace.clone();
        let gone = || SourceError::ProducerGone {
            namespace: namespace.clone(),
        };
        if self.closing {
            return Box::pin(std::future::ready(Err(gone())));
        }
        if !self.ledger.admits(&start.reader) {
            // A restarted reader's predecessor: its successor stores its own start.
            return Box::pin(std::future::ready(Ok(())));
        }
        if let Err(error) = self.ensure_transaction(ctx) {
            return Box::pin(std::future::ready(Err(error)));
        }
        let (written, heard) = tokio::sync::oneshot::channel();
        match self
            .ledger
            .opened(&start.reader, start.position, Instant::now())
        {
            Some(Action::Write {
                namespace,
                position,
            }) => self.write_checkpoint(namespace, &position, Some(written), ctx),
            // Exactly-once: the open transaction carries it; committed now.
            None if self.exactly_once => {
                self.commit_waiters.push(written);
                self.commit(ctx);
            }
            // An older generation (at-least-once): nothing to wait for.
            _ => return Box::pin(std::future::ready(Ok(()))),
        }
        let gone = gone();
        Box::pin(async move { heard.await.map_err(|_| gone) })
    }
}

impl Handler<LastAcknowledged> for RecordProducer {
    type Result = Option<Position>;

    fn handle(
        &mut self,
        LastAcknowledged(reader): LastAcknowledged,
        ctx: &mut Self::Context,
    ) -> Self::Result {
        self.take_answers(ctx);
        self.ledger.restart(&reader)
    }
}

impl Handler<Drain> for RecordProducer {
    type Result = ResponseActFuture<Self, usize>;

    fn handle(&mut self, drain: Drain, ctx: &mut Self::Context) -> Self::Result {
        let Drain { deadline, ending } = drain;
        let until = Instant::now() + deadline;
        self.closing = true;
        match self.ledger.close(ending) {
            Closing::Nothing => {}
            Closing::Commit(commit) => self.commit_with(commit, ctx),
            Closing::Abort => {
                self.ledger.aborted();
                ctx.wait(self.abort_transaction().into_actor(self));
            }
        }
        Box::pin(
            async move {}
                .into_actor(self)
                .then(move |_, act, ctx| drain_step(act, ctx, until)),
        )
    }
}

/// One step of draining: write what is released, then wait a little while records are in
/// flight, until none is or the deadline passes.
fn drain_step(
    act: &mut RecordProducer,
    ctx: &mut Context<RecordProducer>,
    until: Instant,
) -> ResponseActFuture<RecordProducer, usize> {
    act.take_answers(ctx);
    for action in act.ledger.flush(Instant::now()) {
        act.perform(Some(action), ctx);
    }
    let in_flight = act.in_flight();
    if in_flight == 0 || Instant::now() >= until {
        let producer = act.producer.clone();
        let checkpoints = act.checkpoint_producer.clone();
        let remaining = until.saturating_duration_since(Instant::now());
        return Box::pin(
            async move {
                // Blocking flush, off the actor thread.
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = producer.flush(remaining);
                    if let Some(checkpoints) = checkpoints {
                        let _ = checkpoints.flush(remaining);
                    }
                })
                .await;
            }
            .into_actor(act)
            .map(move |_, act, _| act.in_flight()),
        );
    }
    Box::pin(
        tokio::time::sleep(Duration::from_millis(10))
            .into_actor(act)
            .then(move |_, act, ctx| drain_step(act, ctx, until)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: RDKafkaErrorCode) -> SourceError {
        SourceError::Kafka {
            topic: "db.c".to_owned(),
            source: Box::new(KafkaError::MessageProduction(code)),
        }
    }

    /// librdkafka refusing a record with `State` inside a transaction means the transaction
    /// can only be aborted: the producer aborts it on purpose and the pipeline starts again
    /// from its last committed checkpoint. Other refusals (a full queue waits, a record too
    /// large goes through `oversize`) are not that.
    #[test]
    fn a_state_refusal_requires_the_transaction_to_be_aborted() {
        assert!(error_requires_abort(&refused(RDKafkaErrorCode::State)));
        let failed_delivery = SourceError::Delivery {
            origin: "event 1".to_owned(),
            topic: "db.c".to_owned(),
            source: Box::new(KafkaError::MessageProduction(RDKafkaErrorCode::State)),
        };
        assert!(error_requires_abort(&failed_delivery));
        assert!(!error_requires_abort(&refused(RDKafkaErrorCode::QueueFull)));
        assert!(!error_requires_abort(&refused(
            RDKafkaErrorCode::MessageSizeTooLarge
        )));
        assert!(!error_requires_abort(&SourceError::ProducerGone {
            namespace: "db.c".to_owned()
        }));
    }
}
