//! The consumer side of a sink pipeline: one Kafka consumer in the pipeline's group, polled
//! on its own thread, handing each record to its partition's [`PartitionWriter`].
//!
//! Backpressure: a record goes to its writer with `try_send`; when the writer's mailbox is
//! full, the partition is paused at the consumer and the record waits (with the partition's
//! records fetched meanwhile) until the writer takes it; then the partition resumes. Other
//! partitions keep flowing. Memory stays bounded by the mailboxes plus what librdkafka had
//! fetched before the pause.
//!
//! Rebalance: before partitions are revoked, their writers write what they hold and commit
//! (the consumer thread waits for them, up to a deadline); records not yet handed to them are
//! dropped, uncommitted, for the partitions' next owner. Writers for assigned partitions
//! start with their first record, at the committed offset.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};

use super::writer::{Flush, PartitionWriter, Record};
use crate::ops::metrics::{Metrics, MAILBOX_PARTITION_WRITER};

/// The consumer type of sink pipelines.
pub type SinkConsumer = StreamConsumer<RebalanceContext>;

/// `(topic, partition)`.
pub type Partition = (String, i32);

/// Makes the writer of a partition; `None` when the topic cannot be written (its settings
/// are unusable; the supervisor was told).
pub type WriterFactory = Box<dyn Fn(&str, i32) -> Option<Addr<PartitionWriter>> + Send>;

/// A partition's writer and the records waiting for room in its mailbox.
struct Slot {
    writer: Addr<PartitionWriter>,
    waiting: VecDeque<OwnedMessage>,
    sending: bool,
}

/// The partitions this consumer hands records to; shared by the polling loop and the
/// rebalance callback (both on the consumer's thread).
#[derive(Default)]
pub struct Routes {
    slots: HashMap<Partition, Slot>,
}

/// The consumer's context: flushes writers of revoked partitions before they go, and
/// exports the consumer lag librdkafka's statistics report.
pub struct RebalanceContext {
    pipeline: String,
    routes: Arc<Mutex<Routes>>,
    writers: ArbiterHandle,
    flush_deadline: Duration,
    metrics: Metrics,
}

impl RebalanceContext {
    /// A context for `pipeline`'s consumer; writers run on `writers`.
    pub fn new(
        pipeline: String,
        routes: Arc<Mutex<Routes>>,
        writers: ArbiterHandle,
        flush_deadline: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            pipeline,
            routes,
            writers,
            flush_deadline,
            metrics,
        }
    }

    /// Counts a record into a writer's mailbox.
    fn handed_over(&self) {
        self.metrics
            .mailbox(&self.pipeline, MAILBOX_PARTITION_WRITER, 1);
    }
}

fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    // A panic while holding the lock leaves plain data behind: keep using it.
    routes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes and closes `writers`, waiting up to `deadline` on this (not the writers') thread.
/// Answers the partitions whose writers did not confirm.
pub fn close_writers(
    writers_arbiter: &ArbiterHandle,
    writers: Vec<(Partition, Addr<PartitionWriter>)>,
    deadline: Duration,
) -> Vec<Partition> {
    let (tx, rx) = std::sync::mpsc::channel();
    let count = writers.len();
    for (partition, writer) in writers {
        let tx = tx.clone();
        let spawned = writers_arbiter.spawn(async move {
            let result = writer.send(Flush { close: true }).await;
            let _ = tx.send((partition, matches!(result, Ok(Ok(_)))));
        });
        if !spawned {
            tracing::warn!("the writers' thread is gone");
        }
    }
    drop(tx);
    let until = std::time::Instant::now() + deadline;
    let mut confirmed = Vec::new();
    let mut unconfirmed = Vec::new();
    while confirmed.len() + unconfirmed.len() < count {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((partition, true)) => confirmed.push(partition),
            Ok((partition, false)) => unconfirmed.push(partition),
            Err(_) => break,
        }
    }
    unconfirmed
}

impl ClientContext for RebalanceContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::clients::kafka::log_event(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // -1 is librdkafka's internal "unassigned" partition; a lag of -1 is unknown.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag(&self.pipeline, topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let writers: Vec<(Partition, Addr<PartitionWriter>)> = {
            let mut routes = lock(&self.routes);
            revoked
                .elements()
                .iter()
                .filter_map(|e| {
                    let key = (e.topic().to_owned(), e.partition());
                    routes.slots.remove(&key).map(|slot| (key, slot.writer))
                })
                .collect()
        };
        if writers.is_empty() {
            return;
        }
        tracing::info!(pipeline = %self.pipeline, partitions = writers.len(), "partitions revoked: writing and committing what their writers hold");
        // The new owner reports their lag from now on.
        self.metrics.forget_consumer_lag(&self.pipeline);
        let late = close_writers(&self.writers, writers, self.flush_deadline);
        if !late.is_empty() {
            tracing::warn!(pipeline = %self.pipeline, partitions = ?late, "writers did not finish before their partitions were revoked; their uncommitted records will be written again by the next owner");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            tracing::info!(pipeline = %self.pipeline, partitions = ?assigned.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect::<Vec<_>>(), "partitions assigned");
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        if let Err(error) = result {
            tracing::warn!(pipeline = %self.pipeline, %error, "an offset commit failed");
        }
    }
}

fn one_partition(partition: &Partition) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    list.add_partition(&partition.0, partition.1);
    list
}

/// Polls `consumer` and routes records to writers until `stop` resolves; answers the
/// writers it routed to, for the caller to flush.
pub async fn run(
    pipeline: String,
    consumer: Arc<SinkConsumer>,
    routes: Arc<Mutex<Routes>>,
    make_writer: WriterFactory,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<(Partition, Addr<PartitionWriter>)> {
    // A send to a full mailbox, one per paused partition.
    let mut sends = FuturesUnordered::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some((partition, delivered)) = sends.next(), if !sends.is_empty() => {
                let delivered: bool = delivered;
                if let Some(send) = on_sent(&consumer, &routes, partition, delivered) {
                    sends.push(send);
                }
            }
            received = consumer.recv() => match received {
                Ok(message) => {
                    let partition = (message.topic().to_owned(), message.partition());
                    let message = message.detach();
                    if let Some(send) = route(&pipeline, &consumer, &routes, &make_writer, partition, message) {
                        sends.push(send);
                    }
                }
                Err(error) => {
                    tracing::warn!(pipeline = %pipeline, %error, "consuming failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
    let mut routes = lock(&routes);
    routes
        .slots
        .drain()
        .map(|(partition, slot)| (partition, slot.writer))
        .collect()
}

type PendingSend = std::pin::Pin<Box<dyn std::future::Future<Output = (Partition, bool)> + Send>>;

/// Hands `message` to its partition's writer, or queues it and pauses the partition.
fn route(
    pipeline: &str,
    consumer: &SinkConsumer,
    routes: &Mutex<Routes>,
    make_writer: &WriterFactory,
    partition: Partition,
    message: OwnedMessage,
) -> Option<PendingSend> {
    let mut routes = lock(routes);
    if !routes.slots.contains_key(&partition) {
        let writer = make_writer(&partition.0, partition.1)?;
        routes.slots.insert(
            partition.clone(),
            Slot {
                writer,
                waiting: VecDeque::new(),
                sending: false,
            },
        );
    }
    let slot = routes.slots.get_mut(&partition)?;
    if slot.sending || !slot.waiting.is_empty() {
        slot.waiting.push_back(message);
        return None;
    }
    match slot.writer.try_send(Record(message)) {
        Ok(()) => {
            consumer.context().handed_over();
            None
        }
        Err(SendError::Full(Record(message))) => {
            if let Err(error) = consumer.pause(&one_partition(&partition)) {
                tracing::warn!(pipeline, partition = %format!("{}/{}", partition.0, partition.1), %error, "pausing the partition failed");
            }
            Some(send_waiting(slot, partition, message))
        }
        Err(SendError::Closed(_)) => {
            // The writer stopped (it failed and told the supervisor): its records stay
            // uncommitted for the next start.
            None
        }
    }
}

/// Starts waiting for room in the writer's mailbox for `message`.
fn send_waiting(slot: &mut Slot, partition: Partition, message: OwnedMessage) -> PendingSend {
    slot.sending = true;
    let writer = slot.writer.clone();
    Box::pin(async move {
        let delivered = writer.send(Record(message)).await.is_ok();
        (partition, delivered)
    })
}

/// A waiting record was taken: hand over the others, resuming the partition when all are.
fn on_sent(
    consumer: &SinkConsumer,
    routes: &Mutex<Routes>,
    partition: Partition,
    delivered: bool,
) -> Option<PendingSend> {
    let mut routes = lock(routes);
    // Revoked meanwhile: its waiting records were dropped with it.
    let slot = routes.slots.get_mut(&partition)?;
    slot.sending = false;
    if !delivered {
        slot.waiting.clear();
        return None;
    }
    consumer.context().handed_over();
    while let Some(message) = slot.waiting.pop_front() {
        match slot.writer.try_send(Record(message)) {
            Ok(()) => consumer.context().handed_over(),
            Err(SendError::Full(Record(message))) => {
                return Some(send_waiting(slot, partition, message));
            }
            Err(SendError::Closed(_)) => {
                slot.waiting.clear();
                return None;
            }
        }
    }
    if let Err(error) = consumer.resume(&one_partition(&partition)) {
        tracing::warn!(partition = %format!("{}/{}", partition.0, partition.1), %error, "resuming the partition failed");
    }
    None
}
