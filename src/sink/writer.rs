//! [`PartitionWriter`]: the actor that owns one assigned Kafka partition. It takes the
//! partition's records off the partition's own librdkafka queue and writes them to MongoDB
//! under the partition's [`Lease`].
//!
//! When the partition is assigned, the consumer splits its queue off (see `consumer`) and
//! hands it to a new writer as a stream of records ([`Records`]); nothing else reads it. The
//! writer takes the records one at a time, in partition order, as a stream of its own
//! context: each once it has its room in the pipeline's memory budget (shared by the
//! pipeline's partitions; it waits while the budget is spent: the same stop, in bytes,
//! whatever the number of partitions). It puts split events back together ([`Reassembly`]),
//! gathers the records into a batch and hands each batch to [`write_batch`], which converts,
//! writes, dead-letters and commits it as [`PartitionBatch`](super::batch::PartitionBatch)
//! decides. When it takes a record, when it writes, and what becomes of the batch it
//! gathered on a drain, a failure or the lease's end, [`Intake`] decides.
//!
//! A batch is gathered under a write turn (one of the pipeline's `writes_in_flight`): the
//! writer takes one once the first record of a batch is off its queue, before it takes that
//! record in, and gives it back once the batch is written (or dropped). A writer waiting for
//! a turn holds that one record; the partition's other records wait in its librdkafka queue,
//! bounded by its prefetch share (`prefetch`), not gathered in memory of ours: with more
//! partitions than turns, only the partitions that write hold a batch. A split event's chunk
//! kept for later gives the turn back while nothing else is gathered.
//!
//! While a batch is being written (`ctx.wait`) the writer takes nothing off its queue:
//! librdkafka stops fetching the partition once the queue holds `queued.max.messages.kbytes`,
//! and nothing is paused, dropped or fetched twice.
//!
//! Every write and commit happens under the writer's lease: once the partition is revoked
//! (or lost, or the session gone) no new write starts: the writer drops the batch it
//! gathered, takes nothing more and stops after the write on its way; once the lease is
//! fenced nothing is committed any more. A drain ([`Flush`] with `close`) stops taking
//! records, writes and commits the batch gathered, and stops. The writer drops its queue
//! when it stops. It commits through [`OffsetCommitter`](super::shared::OffsetCommitter), so
//! it does not know the consumer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use prometheus::IntGauge;
use rdkafka::consumer::CommitMode;
use rdkafka::message::{Headers, Message, OwnedMessage};

use super::batch_write::{write_batch, BatchJob};
use super::error::SinkError;
use super::intake::{Commit, Intake, Step};
use super::lease::Lease;
use super::rate_limit::RateLimit;
use super::reassembly::{Entry, Reassembly, MAX_PENDING_SPLIT_BYTES};
use super::shared::{WriterFailed, WriterSettings, WriterShared};
use super::turns::{Turn, WriteTurns};
use crate::budget::{Budget, Held};
use crate::ops::metrics::{Metrics, MAILBOX_PARTITION_WRITER};

/// A partition's records, as its writer takes them off the partition's own queue. Dropped
/// with the writer, and the queue with it.
pub type Records = BoxStream<'static, OwnedMessage>;

/// The depth of a pipeline's partition writers' batches, as [`Counted`] counts it: the
/// records the writers took off their queues and have not written (or dropped) yet. Holds
/// the pipeline's gauge itself: counting a record is one atomic add, without a label lookup.
#[derive(Clone)]
pub struct MailboxDepth {
    gauge: IntGauge,
}

impl MailboxDepth {
    /// The depth of `pipeline`'s writers.
    pub fn new(metrics: &Metrics, pipeline: &str) -> Self {
        Self {
            gauge: metrics.mailbox_gauge(pipeline, MAILBOX_PARTITION_WRITER),
        }
    }
}

/// Records counted in the pipeline's `partition_writer` depth: counted in when made
/// ([`Counted::one`]), counted out when dropped. The only place that moves the gauge.
struct Counted {
    depth: MailboxDepth,
    records: i64,
}

impl Counted {
    /// One record, counted in `depth`.
    fn one(depth: &MailboxDepth) -> Self {
        depth.gauge.inc();
        Self {
            depth: depth.clone(),
            records: 1,
        }
    }

    /// No record, in `depth`.
    fn none(depth: &MailboxDepth) -> Self {
        Self {
            depth: depth.clone(),
            records: 0,
        }
    }

    /// Adds what `other` counts to this; both are counted out together.
    fn merge(&mut self, mut other: Counted) {
        self.records += std::mem::take(&mut other.records);
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.records != 0 {
            self.depth.gauge.sub(self.records);
        }
    }
}

/// What takes a writer's records off its queue.
struct Taker {
    records: Records,
    lease: Arc<Lease>,
    budget: Budget,
    name: String,
    turns: Arc<WriteTurns>,
    turn: Turn,
}

/// What a writer's queue gives next.
enum Next {
    /// A record; `None` once the lease ended.
    Record(Option<OwnedMessage>),
    /// Nothing ready, and another writer waits for the turn this one holds.
    Dry,
}

impl Taker {
    /// The next record, or [`Next::Dry`] first when the writer holds a turn another writer
    /// waits for and its queue has nothing ready. (Told so, the writer gives the turn up.)
    async fn next(&mut self) -> Next {
        let holds_turn = self.turn.held();
        tokio::select! {
            biased;
            () = self.lease.ended() => Next::Record(None),
            message = self.records.next() => Next::Record(message),
            () = self.turns.wanted(), if holds_turn => Next::Dry,
        }
    }
}

/// What the writer's stream of records gives it.
pub enum Taken {
    /// A record taken off the queue with its room in the pipeline's memory budget.
    Record {
        /// The record.
        message: OwnedMessage,
        /// Its room.
        held: Held,
    },
    /// The queue has nothing ready while the writer holds a turn another writer waits for.
    Dry,
}

/// A record in the batch gathered: its room in the budget and its place in the depth go with
/// it until its batch is written, or dropped.
struct Gathered {
    entry: Entry,
    held: Held,
    counted: Counted,
}

/// The bytes a record holds in memory, as counted in the memory budget.
fn message_bytes(message: &OwnedMessage) -> usize {
    let headers = message.headers().map_or(0, |headers| {
        headers
            .iter()
            .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
            .sum()
    });
    std::mem::size_of::<OwnedMessage>()
        + message.payload().map_or(0, <[u8]>::len)
        + message.key().map_or(0, <[u8]>::len)
        + message.topic().len()
        + headers
}

/// Writes what is gathered and commits it; with `close`, the writer takes nothing more and
/// stops. Answers the next offset to read (committed), if any record was written since the
/// writer started.
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
    /// The partition's records, off its own queue.
    pub records: Records,
    /// Counts the records the writer took off its queue (the stall watch reads it).
    pub progress: Arc<AtomicU64>,
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
    /// The partition's records, until the writer started taking them.
    records: Option<Records>,
    /// Taking records off the queue, until the writer closes.
    taking: Option<SpawnHandle>,
    progress: Arc<AtomicU64>,
    intake: Intake<Gathered>,
    depth: MailboxDepth,
    chunks: Reassembly,
    timer: Option<SpawnHandle>,
    committed: Option<i64>,
    rate_limit: RateLimit,
    turn: Turn,
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
            records,
            progress,
            alive,
        } = assignment;
        Self {
            topic,
            partition,
            lease,
            depth: MailboxDepth::new(&shared.metrics, &shared.pipeline),
            shared,
            rate_limit: settings.rate_limit.clone(),
            intake: Intake::new(settings.max_batch_size),
            settings,
            records: Some(records),
            taking: None,
            progress,
            chunks: Reassembly::default(),
            timer: None,
            committed: None,
            turn: Turn::default(),
            _alive: alive,
        }
    }

    fn name(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }

    /// Starts taking the partition's records, each once it has its room in the budget. The
    /// stream ends once the lease stops or is fenced, before taking another record: a record
    /// taken off the queue after a revoke could belong to the partition's next owner.
    fn start_taking(&mut self, ctx: &mut Context<Self>) {
        let Some(records) = self.records.take() else {
            return;
        };
        let taker = Taker {
            records,
            lease: self.lease.clone(),
            budget: self.shared.budget.clone(),
            name: self.name(),
            turns: self.shared.writes_in_flight.clone(),
            turn: self.turn.clone(),
        };
        let taken = futures_util::stream::unfold(taker, |mut taker| async move {
            // Holding a turn another writer waits for, the writer writes what it gathered
            // when its queue has nothing ready.
            let message = match taker.next().await {
                Next::Record(message) => message?,
                Next::Dry => return Some((Taken::Dry, taker)),
            };
            // Its room goes with it and is released once its batch is written.
            let held = tokio::select! {
                biased;
                () = taker.lease.ended() => None,
                held = taker.budget.take(message_bytes(&message), &taker.name) => Some(held),
            }?;
            // The first record of a batch waits for a write turn (the actor holds none
            // between batches: each write takes the turn over).
            if !taker.turn.held() {
                let permit = tokio::select! {
                    biased;
                    () = taker.lease.ended() => None,
                    permit = taker.turns.take() => Some(permit),
                }?;
                taker.turn.hold(permit);
            }
            Some((Taken::Record { message, held }, taker))
        });
        self.taking = Some(ctx.add_stream(taken));
    }

    /// Takes no more records; the queue is dropped, and the write turn given back.
    fn stop_taking(&mut self, ctx: &mut Context<Self>) {
        self.records = None;
        if let Some(taking) = self.taking.take() {
            ctx.cancel_future(taking);
        }
        self.turn.take();
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

    /// Carries out what the intake decided.
    fn carry_out(&mut self, step: Step, ctx: &mut Context<Self>) {
        match step {
            Step::Gather { start_delay: true } => {
                self.timer = Some(ctx.run_later(self.settings.max_batch_delay, |act, ctx| {
                    act.timer = None;
                    let step = act.intake.delay_elapsed();
                    act.carry_out(step, ctx);
                }));
            }
            Step::Gather { start_delay: false } | Step::Nothing => {}
            Step::Write(commit) => self.write(commit, ctx),
        }
    }

    /// Writes the batch gathered; the actor takes no record and reads no message until it
    /// is done. Without a live lease, the batch is dropped unwritten (the partition's next
    /// owner reads it again).
    fn write(&mut self, commit: Commit, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        // The batch's write takes the turn over; without a batch it is given back.
        let turn = self.turn.take();
        let Some(batch) = self.intake.take_batch(self.lease.is_live()) else {
            return;
        };
        // Released (and counted out) once the batch is written.
        let mut held = Held::default();
        let mut counted = Counted::none(&self.depth);
        let entries: Vec<Entry> = batch
            .into_iter()
            .map(|gathered| {
                held.merge(gathered.held);
                counted.merge(gathered.counted);
                gathered.entry
            })
            .collect();
        let job = BatchJob {
            shared: self.shared.clone(),
            settings: self.settings.clone(),
            lease: self.lease.clone(),
            topic: self.topic.clone(),
            partition: self.partition,
            hold: self.chunks.oldest_held_offset(),
            mode: match commit {
                Commit::Async => CommitMode::Async,
                Commit::Sync => CommitMode::Sync,
            },
            pause_after: self.rate_limit.batch_written(),
            turn,
        };
        ctx.wait(
            write_batch(job, entries)
                .into_actor(self)
                .map(move |done, act, ctx| {
                    drop((held, counted));
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
        self.intake.failed();
        self.stop_taking(ctx);
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

    /// The lease ended: drop what is gathered, take nothing more and stop (after the write
    /// on its way, which `ctx.wait` finishes first).
    fn lease_ended(&mut self, ctx: &mut Context<Self>) {
        self.intake.lease_ended();
        self.stop_taking(ctx);
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        ctx.stop();
    }
}

impl Actor for PartitionWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Its mailbox carries flushes only: its records come off its own queue.
        ctx.set_mailbox_capacity(crate::CONTROL_MAILBOX_CAPACITY);
        let lease = self.lease.clone();
        ctx.spawn(
            async move { lease.ended().await }
                .into_actor(self)
                .map(|(), act, ctx| act.lease_ended(ctx)),
        );
        self.start_taking(ctx);
        tracing::debug!(pipeline = %self.shared.pipeline, partition = %self.name(), incarnation = %self.lease.incarnation(), "partition writer started");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        tracing::debug!(pipeline = %self.shared.pipeline, partition = %self.name(), incarnation = %self.lease.incarnation(), "partition writer stopped");
    }
}

impl StreamHandler<Taken> for PartitionWriter {
    fn handle(&mut self, taken: Taken, ctx: &mut Self::Context) {
        let (message, held) = match taken {
            Taken::Record { message, held } => (message, held),
            Taken::Dry => {
                // The write takes the turn over; with nothing to write it is given back
                // here, so the writer is not told again while it holds none.
                let step = self.intake.ran_dry();
                if step == Step::Nothing {
                    self.turn.take();
                }
                self.carry_out(step, ctx);
                return;
            }
        };
        self.progress.fetch_add(1, Ordering::Relaxed);
        if !self.intake.accepts(self.lease.is_live()) {
            return;
        }
        let Some(entry) = self.reassemble(message) else {
            // A chunk kept for its split event: the reassembly has a byte limit of its own
            // (`MAX_PENDING_SPLIT_BYTES`), and holding its room until the event completes
            // could wait for room that only the event's later chunks would free. Nor does
            // it hold a turn while nothing is gathered: its later chunks may be slow.
            if self.intake.gathered() == 0 {
                self.turn.take();
            }
            return;
        };
        let step = self.intake.add(Gathered {
            entry,
            held,
            counted: Counted::one(&self.depth),
        });
        self.carry_out(step, ctx);
    }

    /// The lease ended (the records never end otherwise).
    fn finished(&mut self, ctx: &mut Self::Context) {
        self.taking = None;
        self.lease_ended(ctx);
    }
}

impl Handler<Flush> for PartitionWriter {
    type Result = ResponseActFuture<Self, Result<Option<i64>, SinkError>>;

    fn handle(&mut self, msg: Flush, ctx: &mut Self::Context) -> Self::Result {
        let step = self.intake.flush(msg.close);
        if msg.close {
            self.stop_taking(ctx);
        }
        self.carry_out(step, ctx);
        // Runs after the write above: `ctx.wait` holds every other future back.
        Box::pin(actix::fut::ready(()).map(move |_, act: &mut Self, ctx| {
            if msg.close {
                ctx.stop();
            }
            Ok(act.committed)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_of(metrics: &Metrics) -> Result<Option<String>, prometheus::Error> {
        let text = metrics.render()?;
        Ok(text
            .lines()
            .find(|l| l.starts_with("mkb_mailbox_depth_messages{") && l.contains("\"p\""))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned))
    }

    #[test]
    fn a_record_counts_in_the_depth_until_its_batch_is_written_or_dropped(
    ) -> Result<(), prometheus::Error> {
        let metrics = Metrics::new()?;
        let depth = MailboxDepth::new(&metrics, "p");
        let (first, second, dropped) = (
            Counted::one(&depth),
            Counted::one(&depth),
            Counted::one(&depth),
        );
        assert_eq!(depth_of(&metrics)?.as_deref(), Some("3"));
        // A batch of two being written: still counted until the write is done.
        let mut batch = Counted::none(&depth);
        batch.merge(first);
        batch.merge(second);
        assert_eq!(depth_of(&metrics)?.as_deref(), Some("3"));
        drop(batch);
        assert_eq!(depth_of(&metrics)?.as_deref(), Some("1"));
        // Dropped unwritten (a revoke).
        drop(dropped);
        assert_eq!(depth_of(&metrics)?.as_deref(), Some("0"));
        Ok(())
    }

    /// Commits nothing (no write reaches MongoDB in these tests).
    struct NoCommits;

    impl super::super::shared::OffsetCommitter for NoCommits {
        fn commit(
            &self,
            _: &str,
            _: i32,
            _: i64,
            _: CommitMode,
        ) -> Result<(), rdkafka::error::KafkaError> {
            Ok(())
        }
    }

    /// Stands in for the supervisor.
    struct Supervisor;

    impl Actor for Supervisor {
        type Context = Context<Self>;
    }

    impl Handler<WriterFailed> for Supervisor {
        type Result = ();

        fn handle(&mut self, _: WriterFailed, _: &mut Self::Context) {}
    }

    /// A writer over a channel of records, without MongoDB or Kafka, with `turns` write
    /// turns. Its records are Avro whose schema the registry (nothing listens) never gives,
    /// so a batch handed to a write stays under way, holding its turn, until the lease ends.
    struct Harness {
        writer: Addr<PartitionWriter>,
        records: tokio::sync::mpsc::UnboundedSender<OwnedMessage>,
        lease: Arc<Lease>,
        progress: Arc<AtomicU64>,
        /// Records taken off the queue, whatever became of them.
        pulled: Arc<AtomicU64>,
        gone: std::sync::mpsc::Receiver<()>,
        metrics: Metrics,
        budget: Budget,
        turns: Arc<WriteTurns>,
    }

    async fn harness(max_batch_size: usize, turns: usize) -> Harness {
        harness_sharing(max_batch_size, Arc::new(WriteTurns::new(turns))).await
    }

    /// A writer taking its turns from `turns`.
    async fn harness_sharing(max_batch_size: usize, turns: Arc<WriteTurns>) -> Harness {
        let metrics = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        let budget = Budget::new("p", 1 << 20, None);
        let config: crate::config::SinkConfig = toml::from_str(
            "name = \"p\"\ntopics = [\"t\"]\ndatabase = \"d\"\nvalue_format = \"avro\"\n\
             [schema_registry]\nurl = \"http://127.0.0.1:9\"",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let converter =
            super::super::convert::Converter::new(config.clone()).unwrap_or_else(|e| panic!("{e}"));
        let mongo = mongodb::Client::with_uri_str("mongodb://127.0.0.1:9")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let shared = Arc::new(WriterShared {
            pipeline: "p".into(),
            mongo,
            committer: Arc::new(NoCommits),
            metrics: metrics.clone(),
            supervisor: Supervisor.start().recipient(),
            time_series_ready: std::sync::Mutex::default(),
            writes_in_flight: turns.clone(),
            budget: budget.clone(),
        });
        let settings = Arc::new(WriterSettings {
            converter: Arc::new(converter),
            tolerance: config.errors.tolerance,
            dead_letters: None,
            max_batch_size,
            max_batch_delay: std::time::Duration::from_secs(3600),
            max_retries: 0,
            rate_limit: RateLimit::new(&config),
            stale_write_guard: None,
            write_concern: None,
        });
        let (records, mut queue) = tokio::sync::mpsc::unbounded_channel();
        let pulled = Arc::new(AtomicU64::new(0));
        let queue = {
            let pulled = pulled.clone();
            futures_util::stream::poll_fn(move |cx| queue.poll_recv(cx)).inspect(move |_| {
                pulled.fetch_add(1, Ordering::Relaxed);
            })
        };
        let lease = Arc::new(Lease::new(super::super::lease::Incarnation(1)));
        let progress = Arc::new(AtomicU64::new(0));
        let (alive, gone) = std::sync::mpsc::channel();
        let writer = PartitionWriter::new(
            Assignment {
                topic: "t".into(),
                partition: 0,
                lease: lease.clone(),
                records: queue.boxed(),
                progress: progress.clone(),
                alive,
            },
            shared,
            settings,
        )
        .start();
        Harness {
            writer,
            records,
            lease,
            progress,
            pulled,
            gone,
            metrics,
            budget,
            turns,
        }
    }

    impl Harness {
        fn send(&self, offsets: std::ops::Range<i64>) {
            for offset in offsets {
                // Avro in the registry's wire format: a zero byte, schema id 1, a datum.
                let message = OwnedMessage::new(
                    Some(vec![0, 0, 0, 0, 1, 0]),
                    Some(b"k".to_vec()),
                    "t".to_owned(),
                    rdkafka::Timestamp::NotAvailable,
                    0,
                    offset,
                    None,
                );
                self.records
                    .send(message)
                    .unwrap_or_else(|e| panic!("the writer dropped its queue: {e}"));
            }
        }

        fn taken(&self) -> u64 {
            self.progress.load(Ordering::Relaxed)
        }

        fn pulled(&self) -> u64 {
            self.pulled.load(Ordering::Relaxed)
        }

        /// Waits up to 5 s for the writer to have taken `n` records.
        async fn until_taken(&self, n: u64) {
            for _ in 0..500 {
                if self.taken() >= n {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("the writer took {} records, not {n}", self.taken());
        }

        /// Waits up to 5 s for the writer and its queue to be gone.
        async fn until_gone(&self) {
            for _ in 0..500 {
                if let Err(std::sync::mpsc::TryRecvError::Disconnected) = self.gone.try_recv() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("the writer did not stop");
        }
    }

    #[actix::test]
    async fn a_writer_takes_nothing_while_a_write_is_under_way_nor_after_a_revoke(
    ) -> Result<(), prometheus::Error> {
        let h = harness(2, 1).await;
        h.send(0..5);
        // A batch of two goes to its write, which waits for the registry.
        h.until_taken(2).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(h.taken(), 2, "nothing is taken while a write is under way");
        assert_eq!(h.pulled(), 2, "nor pulled off the queue");
        assert_eq!(depth_of(&h.metrics)?.as_deref(), Some("2"));
        assert!(h.budget.held_bytes() > 0);
        assert_eq!(h.turns.free(), 0, "the write holds the turn");
        // The revoke: the write on its way is left to the next owner, the writer stops and
        // drops its queue without taking another record.
        h.lease.stop();
        h.until_gone().await;
        assert_eq!(h.taken(), 2, "no record is taken once the lease stopped");
        assert_eq!(
            h.pulled(),
            2,
            "nor pulled off the queue: it may be the next owner's"
        );
        assert!(
            h.records.is_closed(),
            "the queue is dropped with the writer"
        );
        assert_eq!(depth_of(&h.metrics)?.as_deref(), Some("0"));
        assert_eq!(h.budget.held_bytes(), 0);
        assert_eq!(h.turns.free(), 1, "the turn is given back");
        Ok(())
    }

    #[actix::test]
    async fn a_fenced_writer_drops_the_batch_it_gathered_and_stops() -> Result<(), prometheus::Error>
    {
        let h = harness(10, 1).await;
        h.send(0..3);
        h.until_taken(3).await;
        assert_eq!(depth_of(&h.metrics)?.as_deref(), Some("3"));
        assert!(h.budget.held_bytes() > 0);
        assert_eq!(h.turns.free(), 0, "a batch is gathered under a turn");
        h.lease.fence();
        h.until_gone().await;
        assert!(h.records.is_closed());
        assert_eq!(depth_of(&h.metrics)?.as_deref(), Some("0"));
        assert_eq!(h.budget.held_bytes(), 0);
        assert_eq!(h.turns.free(), 1, "the turn is given back");
        Ok(())
    }

    #[actix::test]
    async fn a_writer_waiting_for_a_turn_holds_one_record_and_gathers_none(
    ) -> Result<(), prometheus::Error> {
        let h = harness(10, 0).await;
        h.send(0..5);
        for _ in 0..500 {
            if h.pulled() >= 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(
            h.pulled(),
            1,
            "one record is off the queue, the rest wait in it"
        );
        assert_eq!(h.taken(), 0, "and none is gathered without a turn");
        assert_eq!(depth_of(&h.metrics)?.as_deref(), Some("0"));
        let one = h.budget.held_bytes();
        assert!(one > 0, "the record off the queue holds its room");
        // A turn comes free: the writer gathers.
        h.turns.add(1);
        h.until_taken(5).await;
        assert_eq!(depth_of(&h.metrics)?.as_deref(), Some("5"));
        assert!(h.budget.held_bytes() > one);
        assert_eq!(h.turns.free(), 0);
        h.lease.stop();
        h.until_gone().await;
        assert_eq!(h.budget.held_bytes(), 0);
        assert_eq!(h.turns.free(), 1, "the turn is given back");
        Ok(())
    }

    #[actix::test]
    async fn a_writer_holding_a_turn_another_waits_for_writes_what_it_gathered() {
        let turns = Arc::new(WriteTurns::new(1));
        let (a, b) = (
            harness_sharing(10, turns.clone()).await,
            harness_sharing(10, turns.clone()).await,
        );
        a.send(0..3);
        a.until_taken(3).await;
        assert_eq!(turns.free(), 0, "a gathers under the only turn");
        // b waits for the turn: a's queue has nothing ready, so a writes its three (the
        // write waits for the registry) and, while it writes, takes nothing more.
        b.send(0..1);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        a.send(3..5);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(a.taken(), 3, "a's batch went to its write when b waited");
        assert_eq!(a.pulled(), 3);
        assert_eq!(b.taken(), 0, "b waits for the turn");
        // a's write is left to the next owner: the turn goes to b.
        a.lease.stop();
        a.until_gone().await;
        b.until_taken(1).await;
        assert_eq!(turns.free(), 0, "b gathers under it");
    }

    #[actix::test]
    async fn a_closing_flush_stops_taking_records_and_the_writer() {
        let h = harness(10, 1).await;
        let answer = h.writer.send(Flush { close: true }).await;
        assert!(matches!(answer, Ok(Ok(None))), "nothing was written");
        h.until_gone().await;
        assert!(h.records.is_closed());
        assert_eq!(h.pulled(), 0);
    }
}
