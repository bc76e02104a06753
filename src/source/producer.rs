//! The Kafka producer actor of a source pipeline: hands readers' records to librdkafka in
//! order, tracks their acknowledgements, and writes each reader's checkpoint once every
//! record before it is acknowledged.
//!
//! Its mailbox is bounded: a reader awaits `send()`, so when Kafka is slow the readers stop
//! pulling from MongoDB.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use mongodb::change_stream::event::ResumeToken;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::checkpoint::{self, AckTracker, Checkpoint, CheckpointKey};
use super::SourceError;
use crate::clients::kafka;
use crate::config::{ErrorsConfig, Tolerance};
use crate::ops::metrics::Metrics;

/// One record to publish.
#[derive(Debug, Clone)]
pub struct OutgoingRecord {
    /// The topic.
    pub topic: String,
    /// The encoded key.
    pub key: Option<Vec<u8>>,
    /// The encoded value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Names the record in errors and dead letters: namespace and document key.
    pub origin: String,
}

/// Which reader a batch comes from; a restarted reader has a new generation, so late
/// acknowledgements of its predecessor are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReaderId {
    /// The reader's namespace.
    pub namespace: String,
    /// Incremented at every start of the reader.
    pub generation: u64,
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
    /// The resume token after the last record.
    pub token: Option<ResumeToken>,
}

/// The newest token of `namespace` that Kafka acknowledged, for a restarting reader.
#[derive(Message, Debug)]
#[rtype(result = "Option<ResumeToken>")]
pub struct LastAcknowledged(pub String);

/// Waits until every record handed over is acknowledged and every checkpoint written, or
/// until the deadline; answers how many batches were still in flight.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct Drain(pub Duration);

/// Tells the pipeline supervisor the producer failed; it restarts the pipeline.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ProducerFailed(pub SourceError);

/// The open Kafka transaction of an exactly-once pipeline.
#[derive(Default)]
struct Transaction {
    open: bool,
    committing: bool,
    /// The newest token of each reader whose records are in the open transaction.
    tokens: HashMap<String, ResumeToken>,
}

struct ReaderState {
    generation: u64,
    tracker: AckTracker,
    /// Released by the tracker, not yet written.
    unwritten: Option<ResumeToken>,
    /// Written (handed to Kafka) last.
    written: Option<ResumeToken>,
    last_write: Option<Instant>,
}

/// The producer actor.
pub struct RecordProducer {
    pipeline: String,
    producer: FutureProducer,
    checkpoint_topic: String,
    checkpoint_interval: Duration,
    errors: ErrorsConfig,
    readers: HashMap<String, ReaderState>,
    pending_checkpoint_writes: usize,
    /// `Some` in exactly-once mode.
    transaction: Option<Transaction>,
    transaction_timeout: Duration,
    supervisor: Recipient<ProducerFailed>,
    metrics: Metrics,
    mailbox_capacity: usize,
}

impl RecordProducer {
    /// Writes records and checkpoints in Kafka transactions (the producer must be
    /// transactional and initialised), committed at most `checkpoint_interval` apart; a
    /// commit may take up to `timeout`.
    pub fn exactly_once(mut self, timeout: Duration) -> Self {
        self.transaction = Some(Transaction::default());
        self.transaction_timeout = timeout;
        self
    }

    /// A producer for `pipeline`; failures are reported to `supervisor`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pipeline: String,
        producer: FutureProducer,
        checkpoint_topic: String,
        checkpoint_interval: Duration,
        errors: ErrorsConfig,
        supervisor: Recipient<ProducerFailed>,
        metrics: Metrics,
        mailbox_capacity: usize,
    ) -> Self {
        Self {
            pipeline,
            producer,
            checkpoint_topic,
            checkpoint_interval,
            errors,
            readers: HashMap::new(),
            pending_checkpoint_writes: 0,
            transaction: None,
            transaction_timeout: Duration::from_secs(30),
            supervisor,
            metrics,
            mailbox_capacity,
        }
    }

    fn reader(&mut self, id: &ReaderId) -> &mut ReaderState {
        let state = self
            .readers
            .entry(id.namespace.clone())
            .or_insert_with(|| ReaderState {
                generation: id.generation,
                tracker: AckTracker::default(),
                unwritten: None,
                written: None,
                last_write: None,
            });
        if state.generation != id.generation {
            // A restarted reader resumes from the newest released token: what its
            // predecessor left in flight is sent again.
            state.generation = id.generation;
            state.tracker = AckTracker::default();
        }
        state
    }

    fn fail(&mut self, error: SourceError, ctx: &mut Context<Self>) {
        tracing::error!(pipeline = %self.pipeline, %error, "producer failed");
        let supervisor = self.supervisor.clone();
        ctx.spawn(
            async move {
                let _ = supervisor.send(ProducerFailed(error)).await;
            }
            .into_actor(self),
        );
        ctx.stop();
    }

    fn delivered(
        &mut self,
        reader: &ReaderId,
        seq: u64,
        result: Result<(), SourceError>,
        ctx: &mut Context<Self>,
    ) {
        if let Err(error) = result {
            return self.fail(error, ctx);
        }
        let state = self.reader(reader);
        if state.generation != reader.generation {
            return;
        }
        if let Some(token) = state.tracker.ack(seq) {
            state.unwritten = Some(token);
            self.write_checkpoint_if_due(&reader.namespace, false, ctx);
        }
    }

    /// Writes the released token of `namespace` unless one was written less than
    /// `checkpoint_interval` ago (then a later call, scheduled here, writes it).
    fn write_checkpoint_if_due(&mut self, namespace: &str, force: bool, ctx: &mut Context<Self>) {
        let interval = self.checkpoint_interval;
        let Some(state) = self.readers.get_mut(namespace) else {
            return;
        };
        if state.unwritten.is_none() {
            return;
        }
        if let Some(last) = state.last_write {
            let since = last.elapsed();
            if !force && since < interval {
                let namespace = namespace.to_owned();
                ctx.run_later(interval - since, move |act, ctx| {
                    act.write_checkpoint_if_due(&namespace, false, ctx)
                });
                return;
            }
        }
        let Some(token) = state.unwritten.take() else {
            return;
        };
        state.last_write = Some(Instant::now());
        state.written = Some(token.clone());
        let delivery = match self.send_checkpoint(namespace, &token) {
            Ok(delivery) => delivery,
            Err(error) => return self.fail(error, ctx),
        };
        self.pending_checkpoint_writes += 1;
        let namespace = namespace.to_owned();
        self.metrics.checkpoint_written(&self.pipeline, &namespace);
        ctx.spawn(delivery.into_actor(self).map(move |result, act, ctx| {
            act.pending_checkpoint_writes -= 1;
            let error = match result {
                Ok(Ok(_)) => return,
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
    }

    /// Hands the checkpoint record of `namespace` at `token` to librdkafka.
    fn send_checkpoint(
        &self,
        namespace: &str,
        token: &ResumeToken,
    ) -> Result<rdkafka::producer::DeliveryFuture, SourceError> {
        let checkpoint_error = |reason: String| SourceError::Checkpoint {
            namespace: namespace.to_owned(),
            reason,
        };
        let key = CheckpointKey {
            pipeline: self.pipeline.clone(),
            namespace: namespace.to_owned(),
        };
        let (key_bytes, value_bytes) = Checkpoint::new(token)
            .map_err(|e| e.to_string())
            .and_then(|cp| checkpoint::record(&key, &cp).map_err(|e| e.to_string()))
            .map_err(checkpoint_error)?;
        self.producer
            .send_result(
                FutureRecord::to(&self.checkpoint_topic)
                    .key(&key_bytes)
                    .payload(&value_bytes),
            )
            .map_err(|(error, _)| checkpoint_error(error.to_string()))
    }

    /// Exactly-once: writes the checkpoints of the open transaction into it and commits
    /// it. No batch is handled meanwhile.
    fn commit(&mut self, ctx: &mut Context<Self>) {
        let Some(tx) = self.transaction.as_mut() else {
            return;
        };
        if !tx.open || tx.committing {
            return;
        }
        tx.committing = true;
        let tokens = std::mem::take(&mut tx.tokens);
        for (namespace, token) in &tokens {
            // Its delivery is part of the commit: a failed record fails the commit.
            if let Err(error) = self.send_checkpoint(namespace, token) {
                return self.fail(error, ctx);
            }
        }
        let producer = self.producer.clone();
        let timeout = self.transaction_timeout;
        let commit = async move {
            tokio::task::spawn_blocking(move || producer.commit_transaction(timeout))
                .await
                .unwrap_or(Err(KafkaError::Canceled))
        };
        ctx.wait(commit.into_actor(self).map(move |result, act, ctx| {
            if let Some(tx) = act.transaction.as_mut() {
                tx.open = false;
                tx.committing = false;
            }
            match result {
                Ok(()) => {
                    for (namespace, token) in tokens {
                        act.metrics.checkpoint_written(&act.pipeline, &namespace);
                        if let Some(state) = act.readers.get_mut(&namespace) {
                            state.written = Some(token);
                        }
                    }
                }
                Err(error) => act.fail(
                    SourceError::Checkpoint {
                        namespace: "*".to_owned(),
                        reason: format!("committing the transaction: {error}"),
                    },
                    ctx,
                ),
            }
        }));
    }

    /// Exactly-once: opens a transaction unless one is open, and schedules its commit.
    fn ensure_transaction(&mut self, ctx: &mut Context<Self>) -> Result<(), SourceError> {
        let Some(tx) = self.transaction.as_mut() else {
            return Ok(());
        };
        if tx.open {
            return Ok(());
        }
        self.producer
            .begin_transaction()
            .map_err(|source| SourceError::Kafka {
                topic: "(transaction)".to_owned(),
                source: Box::new(source),
            })?;
        tx.open = true;
        ctx.run_later(self.checkpoint_interval, |act, ctx| act.commit(ctx));
        Ok(())
    }

    fn in_flight(&self) -> usize {
        let open_transaction = self.transaction.as_ref().is_some_and(|tx| tx.open);
        usize::from(open_transaction)
            + self
                .readers
                .values()
                .map(|r| r.tracker.in_flight())
                .sum::<usize>()
            + self.pending_checkpoint_writes
    }
}

impl Actor for RecordProducer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
    }
}

fn dead_letter_headers(pipeline: &str, record: &OutgoingRecord, reason: &str) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: "mkb.error",
            value: Some(reason),
        })
        .insert(Header {
            key: "mkb.pipeline",
            value: Some(pipeline),
        })
        .insert(Header {
            key: "mkb.origin",
            value: Some(record.origin.as_str()),
        })
        .insert(Header {
            key: "mkb.topic",
            value: Some(record.topic.as_str()),
        })
}

impl Handler<ProduceBatch> for RecordProducer {
    type Result = AtomicResponse<Self, Result<(), SourceError>>;

    fn handle(&mut self, batch: ProduceBatch, ctx: &mut Self::Context) -> Self::Result {
        if let Err(error) = self.ensure_transaction(ctx) {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(error))));
        }
        let producer = self.producer.clone();
        let pipeline = self.pipeline.clone();
        let errors = self.errors.clone();
        let metrics = self.metrics.clone();
        let enqueue_all = async move {
            let mut deliveries = Vec::with_capacity(batch.records.len());
            for record in &batch.records {
                let sent = kafka::enqueue(
                    &producer,
                    &record.topic,
                    record.key.as_deref(),
                    record.value.as_deref(),
                    None,
                )
                .await;
                match sent {
                    Ok(delivery) => {
                        metrics.record_produced(&pipeline, &record.topic);
                        deliveries.push((record.origin.clone(), record.topic.clone(), delivery));
                    }
                    Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                        let reason = format!(
                            "the record is larger than the producer's `message.max.bytes` ({} bytes of value)",
                            record.value.as_ref().map_or(0, Vec::len)
                        );
                        let (Tolerance::All, Some(dlq)) =
                            (errors.tolerance, errors.dead_letter_topic.as_deref())
                        else {
                            return Err(SourceError::TooLarge {
                                origin: record.origin.clone(),
                                topic: record.topic.clone(),
                                reason,
                            });
                        };
                        tracing::warn!(pipeline = %pipeline, origin = %record.origin, topic = %record.topic, dead_letter_topic = dlq, %reason, "dead-lettering an event");
                        metrics.dead_lettered(&pipeline, "too_large");
                        // The dead letter carries the key only: the value is what did not fit.
                        let delivery = kafka::enqueue(
                            &producer,
                            dlq,
                            record.key.as_deref(),
                            None,
                            Some(dead_letter_headers(&pipeline, record, &reason)),
                        )
                        .await
                        .map_err(|source| SourceError::Kafka {
                            topic: dlq.to_owned(),
                            source: Box::new(source),
                        })?;
                        deliveries.push((record.origin.clone(), dlq.to_owned(), delivery));
                    }
                    Err(source) => {
                        return Err(SourceError::Kafka {
                            topic: record.topic.clone(),
                            source: Box::new(source),
                        })
                    }
                }
            }
            Ok((batch.reader, batch.token, deliveries))
        };
        AtomicResponse::new(Box::pin(enqueue_all.into_actor(self).map(
            |result, act, ctx| {
                let (reader, token, deliveries) = result?;
                act.reader(&reader);
                if let Some(tx) = act.transaction.as_mut() {
                    // The commit resolves these deliveries, and fails if any of them did.
                    drop(deliveries);
                    if let Some(token) = token {
                        tx.tokens.insert(reader.namespace, token);
                    }
                    return Ok(());
                }
                let seq = act.reader(&reader).tracker.push(token);
                let acknowledged = async move {
                    for (origin, topic, delivery) in join_all(
                        deliveries
                            .into_iter()
                            .map(|(o, t, d)| async move { (o, t, d.await) }),
                    )
                    .await
                    {
                        match delivery {
                            Ok(Ok(_)) => {}
                            Ok(Err((source, _))) => {
                                return Err(SourceError::Delivery {
                                    origin,
                                    topic,
                                    source: Box::new(source),
                                })
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
                ctx.spawn(
                    acknowledged
                        .into_actor(act)
                        .map(move |result, act, ctx| act.delivered(&reader, seq, result, ctx)),
                );
                Ok(())
            },
        )))
    }
}

impl Handler<LastAcknowledged> for RecordProducer {
    type Result = Option<ResumeToken>;

    fn handle(&mut self, msg: LastAcknowledged, _: &mut Self::Context) -> Self::Result {
        self.readers
            .get(&msg.0)
            .and_then(|r| r.unwritten.clone().or_else(|| r.written.clone()))
    }
}

impl Handler<Drain> for RecordProducer {
    type Result = ResponseActFuture<Self, usize>;

    fn handle(&mut self, Drain(deadline): Drain, _: &mut Self::Context) -> Self::Result {
        let until = Instant::now() + deadline;
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
    act.commit(ctx);
    let namespaces: Vec<String> = act.readers.keys().cloned().collect();
    for namespace in namespaces {
        act.write_checkpoint_if_due(&namespace, true, ctx);
    }
    let in_flight = act.in_flight();
    if in_flight == 0 || Instant::now() >= until {
        let producer = act.producer.clone();
        let remaining = until.saturating_duration_since(Instant::now());
        return Box::pin(
            async move {
                // Blocking flush, off the actor thread.
                let _ = tokio::task::spawn_blocking(move || producer.flush(remaining)).await;
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
