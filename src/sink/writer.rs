//! [`PartitionWriter`]: the actor that writes one Kafka partition's records to MongoDB.
//!
//! Records arrive in partition order through a bounded mailbox, fed by the partition's
//! reader task (see `consumer`). The writer puts split events back together
//! ([`Reassembly`]), collects records into a batch (`max_batch_size` records or
//! `max_batch_delay`) and hands each batch to [`write_batch`], which converts, writes,
//! dead-letters and commits it as [`PartitionBatch`](super::batch::PartitionBatch) decides.
//! While a batch is being written the writer reads no more records, so its mailbox fills and
//! the reader task waits: librdkafka stops fetching the partition once its own queue of it is
//! full.
//!
//! Every write and commit happens under the writer's [`Lease`]: once the partition is
//! revoked (or the pipeline drains) no new write starts, and once the lease is fenced
//! nothing is committed any more. The writer commits through
//! [`OffsetCommitter`](super::shared::OffsetCommitter), so it does not know the consumer.

use std::sync::Arc;

use actix::prelude::*;
use rdkafka::consumer::CommitMode;
use rdkafka::message::OwnedMessage;

use super::batch_write::{write_batch, BatchJob};
use super::error::SinkError;
use super::lease::Lease;
use super::rate_limit::RateLimit;
use super::reassembly::{Entry, Reassembly, MAX_PENDING_SPLIT_BYTES};
use super::shared::{WriterFailed, WriterSettings, WriterShared};
use crate::budget::Held;
use crate::ops::metrics::{Metrics, MAILBOX_PARTITION_WRITER};

/// One record for the writer, with its room in the pipeline's memory budget: the writer
/// holds the room until the record's batch is written (or dropped). From [`Record::new`]
/// until the writer takes it (or it is dropped unread, with a stopped writer's mailbox) it
/// counts in the pipeline's `partition_writer` mailbox depth: the only place that counts it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record {
    message: OwnedMessage,
    held: Held,
    queued: Queued,
}

impl Record {
    /// `message`, holding `held`, on its way to a writer of the pipeline `depth` counts.
    pub fn new(message: OwnedMessage, held: Held, depth: &MailboxDepth) -> Self {
        depth
            .metrics
            .mailbox(&depth.pipeline, MAILBOX_PARTITION_WRITER, 1);
        Self {
            message,
            held,
            queued: Queued(depth.clone()),
        }
    }
}

/// The depth of a pipeline's partition writers' mailboxes, as [`Record`] counts it.
#[derive(Clone)]
pub struct MailboxDepth {
    metrics: Metrics,
    pipeline: Arc<str>,
}

impl MailboxDepth {
    /// The mailbox depth of `pipeline`'s writers.
    pub fn new(metrics: Metrics, pipeline: &str) -> Self {
        Self {
            metrics,
            pipeline: pipeline.into(),
        }
    }
}

/// A record's place in the mailbox depth, given back when it is taken or dropped.
struct Queued(MailboxDepth);

impl Drop for Queued {
    fn drop(&mut self) {
        let depth = &self.0;
        depth
            .metrics
            .mailbox(&depth.pipeline, MAILBOX_PARTITION_WRITER, -1);
    }
}

/// Writes what is buffered and commits it; with `close`, the writer then ignores anything
/// else it receives and stops. Answers the next offset to read (committed), if any record
/// was written since the writer started.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Option<i64>, SinkError>")]
pub struct Flush {
    /// Stop after this flush.
    pub close: bool,
}

/// One assignment of a partition to a writer.
pub struct Assignment {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The right to write and commit it.
    pub lease: Arc<Lease>,
    /// Dropped with the writer: whoever holds the receiver learns that it is gone.
    pub alive: std::sync::mpsc::Sender<()>,
}

/// Writes one partition.
pub struct PartitionWriter {
    topic: String,
    partition: i32,
    lease: Arc<Lease>,
    shared: Arc<WriterShared>,
    settings: Arc<WriterSettings>,
    buffer: Vec<Entry>,
    /// The room of the buffered records in the memory budget.
    held: Held,
    chunks: Reassembly,
    timer: Option<SpawnHandle>,
    committed: Option<i64>,
    closed: bool,
    rate_limit: RateLimit,
    _alive: std::sync::mpsc::Sender<()>,
}

impl PartitionWriter {
    /// A writer for `assignment`.
    pub fn new(
        assignment: Assignment,
        shared: Arc<WriterShared>,
        settings: Arc<WriterSettings>,
    ) -> Self {
        let Assignment {
            topic,
            partition,
            lease,
            alive,
        } = assignment;
        Self {
            topic,
            partition,
            lease,
            shared,
            rate_limit: settings.rate_limit.clone(),
            settings,
            buffer: Vec::new(),
            held: Held::default(),
            chunks: Reassembly::default(),
            timer: None,
            committed: None,
            closed: false,
            _alive: alive,
        }
    }

    fn name(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }

    /// Passes ordinary records through and puts split events back together (`None` while
    /// an event's chunks are still arriving), reporting the events given up.
    fn reassemble(&mut self, message: OwnedMessage) -> Option<Entry> {
        let entry = self.chunks.feed(message);
        let given_up = self.chunks.take_given_up();
        let (pipeline, metrics) = (&self.shared.pipeline, &self.shared.metrics);
        for _ in 0..given_up.abandoned {
            tracing::warn!(pipeline = %pipeline, partition = %self.name(), "a split event stopped before its last chunk; its producer sent it again");
            metrics.chunk_set_abandoned(pipeline);
        }
        for _ in 0..given_up.over_budget {
            tracing::warn!(pipeline = %pipeline, partition = %self.name(), max_bytes = MAX_PENDING_SPLIT_BYTES, "more unfinished split events than the writer may hold: the oldest was given up, its later chunks will be refused as orphans");
            metrics.chunk_set_abandoned(pipeline);
        }
        entry
    }

    /// Writes the buffer; the actor reads no message until it is done. Without a live
    /// lease, the buffer is dropped unwritten (the partition's next owner reads it again).
    fn flush(&mut self, mode: CommitMode, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        if self.buffer.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.buffer);
        // Released once the batch is written, or at once when it is dropped unwritten.
        let held = std::mem::take(&mut self.held);
        if !self.lease.is_live() {
            return;
        }
        let job = BatchJob {
            shared: self.shared.clone(),
            settings: self.settings.clone(),
            lease: self.lease.clone(),
            topic: self.topic.clone(),
            partition: self.partition,
            hold: self.chunks.oldest_held_offset(),
            mode,
            pause_after: self.rate_limit.batch_written(),
        };
        ctx.wait(
            write_batch(job, entries)
                .into_actor(self)
                .map(move |done, act, ctx| {
                    drop(held);
                    if let Some(next) = done.committed {
                        act.committed = Some(next);
                    }
                    if let Some(error) = done.failure {
                        act.fail(error, ctx);
                    }
                }),
        );
    }

    /// Stops after a failure, telling the supervisor unless the partition was taken away
    /// meanwhile (its next owner meets the same record).
    fn fail(&mut self, error: SinkError, ctx: &mut Context<Self>) {
        self.closed = true;
        if self.lease.is_live() {
            let failed = WriterFailed {
                partition: self.name(),
                incarnation: self.lease.incarnation(),
                error,
            };
            let supervisor = self.shared.supervisor.clone();
            actix::spawn(async move {
                let _ = supervisor.send(failed).await;
            });
        } else {
            tracing::info!(pipeline = %self.shared.pipeline, partition = %self.name(), incarnation = %self.lease.incarnation(), %error, "a revoked partition's writer stopped on an error; its next owner reads the records again");
        }
        ctx.stop();
    }

    /// The lease ended: drop what is buffered and stop (after the write on its way, which
    /// `ctx.wait` finishes first).
    fn lease_ended(&mut self, ctx: &mut Context<Self>) {
        self.closed = true;
        self.buffer.clear();
        self.held = Held::default();
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        ctx.stop();
    }
}

impl Actor for PartitionWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.settings.mailbox_capacity);
        let lease = self.lease.clone();
        ctx.spawn(
            async move { lease.ended().await }
                .into_actor(self)
                .map(|(), act, ctx| act.lease_ended(ctx)),
        );
        tracing::debug!(pipeline = %self.shared.pipeline, partition = %self.name(), incarnation = %self.lease.incarnation(), "partition writer started");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        tracing::debug!(pipeline = %self.shared.pipeline, partition = %self.name(), incarnation = %self.lease.incarnation(), "partition writer stopped");
    }
}

impl Handler<Record> for PartitionWriter {
    type Result = ();

    fn handle(&mut self, record: Record, ctx: &mut Self::Context) {
        let Record {
            message,
            held,
            queued,
        } = record;
        drop(queued);
        if self.closed || !self.lease.is_live() {
            return;
        }
        let Some(entry) = self.reassemble(message) else {
            // A chunk kept for its split event: the reassembly has a byte limit of its own
            // (`MAX_PENDING_SPLIT_BYTES`), and holding its room until the event completes
            // could wait for room that only the event's later chunks would free.
            return;
        };
        self.held.merge(held);
        self.buffer.push(entry);
        if self.buffer.len() >= self.settings.max_batch_size {
            self.flush(CommitMode::Async, ctx);
        } else if self.timer.is_none() {
            self.timer = Some(ctx.run_later(self.settings.max_batch_delay, |act, ctx| {
                act.timer = None;
                act.flush(CommitMode::Async, ctx);
            }));
        }
    }
}

impl Handler<Flush> for PartitionWriter {
    type Result = ResponseActFuture<Self, Result<Option<i64>, SinkError>>;

    fn handle(&mut self, msg: Flush, ctx: &mut Self::Context) -> Self::Result {
        if !self.closed {
            self.flush(CommitMode::Sync, ctx);
        }
        // Runs after the flush above: `ctx.wait` holds every other future back.
        Box::pin(actix::fut::ready(()).map(move |_, act: &mut Self, ctx| {
            if msg.close {
                act.closed = true;
                ctx.stop();
            }
            Ok(act.committed)
        }))
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;

    use super::*;

    fn depth_of(metrics: &Metrics) -> Result<Option<String>, prometheus::Error> {
        let text = metrics.render()?;
        Ok(text
            .lines()
            .find(|l| l.starts_with("mkb_mailbox_depth_messages{") && l.contains("\"p\""))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned))
    }

    fn record(depth: &MailboxDepth) -> Record {
        let message = OwnedMessage::new(
            None,
            None,
            "t".to_owned(),
            Timestamp::NotAvailable,
            0,
            1,
            None,
        );
        Record::new(message, Held::default(), depth)
    }

    #[test]
    fn a_record_counts_in_the_mailbox_depth_until_taken_or_dropped_unread(
    ) -> Result<(), prometheus::Error> {
        let metrics = Metrics::new()?;
        let depth = MailboxDepth::new(metrics.clone(), "p");
        let taken = record(&depth);
        let unread = record(&depth);
        assert_eq!(depth_of(&metrics)?.as_deref(), Some("2"));
        // Taken by the writer: what its handler does first.
        let Record { queued, .. } = taken;
        drop(queued);
        assert_eq!(depth_of(&metrics)?.as_deref(), Some("1"));
        // Dropped with a stopped writer's mailbox, never handled.
        drop(unread);
        assert_eq!(depth_of(&metrics)?.as_deref(), Some("0"));
        Ok(())
    }
}
