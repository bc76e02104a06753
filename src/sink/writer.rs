//! [`PartitionWriter`]: the actor that writes one Kafka partition's records to MongoDB.
//!
//! Records arrive in partition order through a bounded mailbox, fed by the partition's
//! reader task (see `consumer`). The writer collects them into a batch (`max_batch_size`
//! records or `max_batch_delay`), waits for one of the pipeline's `WRITES_IN_FLIGHT` turns,
//! converts each record into a raw BSON write, prepares the statements once
//! ([`bulk::prepare`]), writes them with [`bulk::execute`] (again on a retry),
//! sends what MongoDB or the converter refused to the dead letter topic (or stops the
//! pipeline, naming the record), and only then commits the partition's offset, as
//! [`PartitionBatch`] decides. While a batch is being written the writer reads no more
//! records, so its mailbox fills and the reader task waits: librdkafka stops fetching the
//! partition once its own queue of it is full.
//!
//! Every write and commit happens under the writer's [`Lease`]: once the partition is
//! revoked (or the pipeline drains) no new write starts, and once the lease is fenced
//! nothing is committed any more. The writer commits through [`OffsetCommitter`], so it
//! does not know the consumer.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rdkafka::consumer::CommitMode;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};

use super::batch::PartitionBatch;
use super::bulk::{self, Item, Outcome, Prepared};
use super::convert::{Converter, RawRecord};
use super::error::SinkError;
use super::lease::{Incarnation, Lease};
use super::model::{RecordError, Stage};
use super::namespace::Namespace;
use super::rate_limit::RateLimit;
use super::timeseries;
use crate::backoff::Backoff;
use crate::budget::Held;
use crate::chunks::{self, ChunkHeader, Fed, Reassembler};
use crate::clients::kafka;
use crate::config::{DeadLetterHeaders, Tolerance};
use crate::ops::metrics::{Metrics, MAILBOX_PARTITION_WRITER};

/// The first wait before asking a registry that did not answer (or refused the
/// credentials) again; it doubles up to [`REGISTRY_RETRY_MAX`].
const REGISTRY_RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two lookups at a registry that holds a partition back.
const REGISTRY_RETRY_MAX: Duration = Duration::from_secs(10);

/// Bytes of split events a writer holds at once while their chunks arrive, however many
/// events: at least one MongoDB document of 16 MiB as JSON, several times over.
const MAX_PENDING_SPLIT_BYTES: usize = 64 * 1024 * 1024;

/// How long a writer waits for the broker to answer an offset commit before it goes on
/// without it (the commit may still land later; a later one covers it either way).
pub const COMMIT_DEADLINE: Duration = Duration::from_secs(10);

/// A record of a batch.
struct Entry {
    /// The record; a split event whole, at its last chunk's offset.
    message: OwnedMessage,
    /// The offset of its first chunk (its own offset when it was not split).
    first_offset: i64,
    /// Why it cannot be written, when that is known before converting.
    known: Option<RecordError>,
}

impl Entry {
    fn new(message: OwnedMessage, known: Option<RecordError>) -> Self {
        Self {
            first_offset: message.offset(),
            message,
            known,
        }
    }
}

/// Commits a partition's offset: the consumer implements it, writers only see this.
pub trait OffsetCommitter: Send + Sync {
    /// Commits `next` as the next offset to read of `topic`/`partition`.
    fn commit(
        &self,
        topic: &str,
        partition: i32,
        next: i64,
        mode: CommitMode,
    ) -> Result<(), KafkaError>;
}

/// One record for the writer, with its room in the pipeline's memory budget: the writer
/// holds the room until the record's batch is written (or dropped).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record(pub OwnedMessage, pub Held);

/// Writes what is buffered and commits it; with `close`, the writer then ignores anything
/// else it receives and stops. Answers the next offset to read (committed), if any record
/// was written since the writer started.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Option<i64>, SinkError>")]
pub struct Flush {
    /// Stop after this flush.
    pub close: bool,
}

/// Sent to the sink supervisor when a writer cannot go on.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct WriterFailed {
    /// `topic/partition`.
    pub partition: String,
    /// The writer's incarnation: a failure of a revoked one is not the current one's.
    pub incarnation: Incarnation,
    /// Why.
    pub error: SinkError,
}

/// Where refused records go, when `errors.tolerance = "all"`.
#[derive(Clone)]
pub struct DeadLetters {
    /// The producer.
    pub producer: kafka::KafkaProducer,
    /// The dead letter topic.
    pub topic: String,
    /// How its headers are named.
    pub headers: DeadLetterHeaders,
}

/// What every writer of a pipeline shares.
pub struct WriterShared {
    /// The pipeline's name.
    pub pipeline: String,
    /// The MongoDB client.
    pub mongo: mongodb::Client,
    /// Commits offsets.
    pub committer: Arc<dyn OffsetCommitter>,
    /// The metrics.
    pub metrics: Metrics,
    /// The supervisor, told when a writer fails.
    pub supervisor: Recipient<WriterFailed>,
    /// The time-series collections known to exist (created by a writer, or found).
    pub time_series_ready: Mutex<HashSet<Namespace>>,
    /// Batches being converted and written at once, across the pipeline's writers: what a
    /// batch takes beyond its records (its statements, the command, the driver's copy) is
    /// held by at most this many, however many partitions the pipeline has.
    pub writes_in_flight: tokio::sync::Semaphore,
}

/// The settings of one writer (its topic's).
pub struct WriterSettings {
    /// Turns records into writes.
    pub converter: Arc<Converter>,
    /// `errors.tolerance`.
    pub tolerance: Tolerance,
    /// The dead letter topic, with `tolerance = "all"`.
    pub dead_letters: Option<DeadLetters>,
    /// Records per bulk write.
    pub max_batch_size: usize,
    /// How long a partial batch waits.
    pub max_batch_delay: Duration,
    /// The mailbox capacity.
    pub mailbox_capacity: usize,
    /// Attempts of a bulk write (or a dead letter) that may pass on a retry.
    pub max_retries: u32,
    /// When a writer pauses between batches (`rate_limiting_*`); each writer counts its own.
    pub rate_limit: RateLimit,
    /// `stale_write_guard`: the field whose older value never overwrites a newer one.
    pub stale_write_guard: Option<String>,
    /// The sink's own `write_concern`, as the commands carry it; `None`: the connection
    /// string's.
    pub write_concern: Option<bson::RawDocumentBuf>,
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
    chunks: Reassembler,
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
            chunks: Reassembler::new(MAX_PENDING_SPLIT_BYTES),
            timer: None,
            committed: None,
            closed: false,
            _alive: alive,
        }
    }

    fn name(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }

    /// Passes ordinary records through and puts split events back together: `None` while
    /// an event's chunks are still arriving.
    fn reassemble(&mut self, message: OwnedMessage) -> Option<Entry> {
        let header = ChunkHeader::parse(
            message
                .headers()
                .into_iter()
                .flat_map(|h| h.iter())
                .map(|h| (h.key, h.value)),
        );
        let header = match header {
            Ok(None) => return Some(Entry::new(message, None)),
            Ok(Some(header)) => header,
            Err(reason) => {
                return Some(Entry::new(
                    message,
                    Some(RecordError::new(
                        Stage::Decode,
                        format!("split event: {reason}"),
                    )),
                ))
            }
        };
        let fed = self.chunks.feed(
            &header,
            message.key(),
            message.offset(),
            message.payload().unwrap_or_default(),
        );
        for _ in 0..self.chunks.take_abandoned() {
            tracing::warn!(pipeline = %self.shared.pipeline, partition = %self.name(), "a split event stopped before its last chunk; its producer sent it again");
            self.shared
                .metrics
                .chunk_set_abandoned(&self.shared.pipeline);
        }
        for _ in 0..self.chunks.take_over_budget() {
            tracing::warn!(pipeline = %self.shared.pipeline, partition = %self.name(), max_bytes = MAX_PENDING_SPLIT_BYTES, "more unfinished split events than the writer may hold: the oldest was given up, its later chunks will be refused as orphans");
            self.shared
                .metrics
                .chunk_set_abandoned(&self.shared.pipeline);
        }
        match fed {
            Fed::Incomplete => None,
            Fed::Orphan(reason) => Some(Entry::new(
                message,
                Some(RecordError::new(
                    Stage::Decode,
                    format!("split event: {reason}"),
                )),
            )),
            Fed::Complete {
                value,
                first_offset,
            } => {
                let mut headers = OwnedHeaders::new();
                for h in message.headers().into_iter().flat_map(|h| h.iter()) {
                    if ![chunks::ID, chunks::INDEX, chunks::COUNT].contains(&h.key) {
                        headers = headers.insert(Header {
                            key: h.key,
                            value: h.value,
                        });
                    }
                }
                // The whole event stands at its last chunk's offset.
                let whole = OwnedMessage::new(
                    Some(value),
                    message.key().map(<[u8]>::to_vec),
                    message.topic().to_owned(),
                    message.timestamp(),
                    message.partition(),
                    message.offset(),
                    Some(headers),
                );
                Some(Entry {
                    message: whole,
                    first_offset,
                    known: None,
                })
            }
        }
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

    fn handle(&mut self, Record(message, held): Record, ctx: &mut Self::Context) {
        self.shared
            .metrics
            .mailbox(&self.shared.pipeline, MAILBOX_PARTITION_WRITER, -1);
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

/// What a batch needs besides its records.
struct BatchJob {
    shared: Arc<WriterShared>,
    settings: Arc<WriterSettings>,
    lease: Arc<Lease>,
    topic: String,
    partition: i32,
    /// The first chunk of a split event still arriving: no commit passes it.
    hold: Option<i64>,
    mode: CommitMode,
    /// A pause after the batch (`rate_limiting_*`), during which the writer takes nothing.
    pause_after: Option<Duration>,
}

/// What became of a batch.
struct BatchDone {
    /// The next offset to read, when one was committed.
    committed: Option<i64>,
    /// Why the writer cannot go on, if it cannot.
    failure: Option<SinkError>,
}

impl BatchJob {
    fn name(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }

    /// Commits `next` under the lease: `None` when fenced, refused or not answered within
    /// [`COMMIT_DEADLINE`]. A refused commit is not fatal: a later one covers it, and the
    /// records after the last committed offset are written again (idempotently) by the
    /// partition's next reader. librdkafka's synchronous commit waits for the broker without
    /// a deadline, so it runs on a blocking thread, never on the actor thread that runs every
    /// writer and supervisor: a silent broker holds that thread (and the commit's lease)
    /// only.
    async fn commit(&self, next: i64) -> Option<i64> {
        let shared = self.shared.clone();
        let lease = self.lease.clone();
        let topic = self.topic.clone();
        let (partition, mode) = (self.partition, self.mode);
        let call = tokio::task::spawn_blocking(move || {
            lease.commit_with(|| shared.committer.commit(&topic, partition, next, mode))
        });
        let shared = &self.shared;
        let committed = match tokio::time::timeout(COMMIT_DEADLINE, call).await {
            Ok(Ok(committed)) => committed,
            Ok(Err(_)) => Some(Err(KafkaError::Canceled)),
            Err(_) => {
                tracing::warn!(pipeline = %shared.pipeline, partition = %self.name(), offset = next, deadline = ?COMMIT_DEADLINE, "committing the offset got no answer from the broker in time; the writer goes on without it: a later commit covers it, or the records after the last committed offset are written again");
                return None;
            }
        };
        match committed {
            Some(Ok(())) => Some(next),
            Some(Err(error)) => {
                tracing::warn!(pipeline = %shared.pipeline, partition = %self.name(), offset = next, %error, "committing the offset failed; a later commit covers it, or the records after the last committed offset are written again");
                None
            }
            None => {
                tracing::info!(pipeline = %shared.pipeline, partition = %self.name(), incarnation = %self.lease.incarnation(), offset = next, "not committing: the partition was revoked");
                None
            }
        }
    }

    /// Waits `delay`, or less when the lease ends; answers whether it is still live.
    async fn pause(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.lease.ended() => {}
        }
        self.lease.is_live()
    }
}

/// Converts, writes, dead-letters and commits one batch, as [`PartitionBatch`] decides.
async fn write_batch(job: BatchJob, entries: Vec<Entry>) -> BatchDone {
    let started = Instant::now();
    let shared = job.shared.clone();
    let settings = job.settings.clone();
    let pipeline = shared.pipeline.as_str();
    let name = job.name();
    let bytes: usize = entries
        .iter()
        .map(|e| {
            e.message.key().map_or(0, <[u8]>::len) + e.message.payload().map_or(0, <[u8]>::len)
        })
        .sum();
    shared
        .metrics
        .records_consumed(pipeline, &job.topic, entries.len() as u64, bytes as u64);
    let permit = tokio::select! {
        permit = shared.writes_in_flight.acquire() => permit.ok(),
        () = job.lease.ended() => None,
    };
    let Some(permit) = permit else {
        // Revoked while waiting for its turn: the next owner writes these records.
        return BatchDone {
            committed: None,
            failure: None,
        };
    };
    let batch = PartitionBatch::new(
        entries
            .iter()
            .map(|e| (e.first_offset, e.message.offset()))
            .collect(),
        job.hold,
        settings.tolerance == Tolerance::All && settings.dead_letters.is_some(),
    );
    let mut items = Vec::with_capacity(entries.len());
    let mut refused: Vec<(usize, RecordError)> = Vec::new();
    let mut renamed_fields_dropped = 0;
    for (index, entry) in entries.iter().enumerate() {
        let message = &entry.message;
        let converted = match &entry.known {
            Some(error) => Err(error.clone()),
            None => {
                let raw = RawRecord {
                    topic: &job.topic,
                    partition: job.partition,
                    offset: message.offset(),
                    timestamp: message.timestamp().to_millis(),
                    key: message.key(),
                    value: message.payload(),
                };
                // The schema registry is awaited (a revoke does not wait for it), then the
                // conversion reads its cache. A registry that does not answer, or refuses
                // the credentials (a transient error), holds the partition back: the lookup
                // is tried again until it answers or the lease ends, and the pipeline is not
                // failed for it (its `/ready` reason, metric and WARN come from the registry
                // client's reports).
                let mut wait = REGISTRY_RETRY_FIRST;
                let fetched = loop {
                    let fetched = tokio::select! {
                        fetched = settings.converter.fetch_schemas(raw) => fetched,
                        () = job.lease.ended() => return BatchDone { committed: None, failure: None },
                    };
                    match fetched {
                        Err(error) if error.transient => {
                            tokio::select! {
                                () = tokio::time::sleep(wait) => {}
                                () = job.lease.ended() => return BatchDone { committed: None, failure: None },
                            }
                            wait = (wait * 2).min(REGISTRY_RETRY_MAX);
                        }
                        other => break other,
                    }
                };
                fetched.and_then(|()| settings.converter.convert(raw))
            }
        };
        match converted {
            Ok(Some(converted)) => {
                renamed_fields_dropped += converted.renamed_fields_dropped;
                items.push(Item {
                    index,
                    namespace: converted.namespace,
                    op: converted.op,
                });
            }
            Ok(None) => shared.metrics.record_skipped(pipeline),
            Err(error) => {
                let stop = error.transient || !batch.writes_past_refused();
                refused.push((index, error));
                // Without a dead letter topic the pipeline stops at this record, and a record
                // that may convert later is read again: write only what comes before it.
                if stop {
                    break;
                }
            }
        }
    }
    // Encoded once: a retry sends the same statements again.
    let prepared = bulk::prepare(items, settings.stale_write_guard.as_deref());
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let outcome = loop {
        if !job.lease.is_live() {
            // Revoked before this write started: the next owner writes these records.
            return BatchDone {
                committed: None,
                failure: None,
            };
        }
        match write_items(&shared, &settings, &prepared).await {
            Ok(outcome) => break outcome,
            Err(error) if backoff.failures() >= settings.max_retries => {
                return BatchDone {
                    committed: None,
                    failure: Some(SinkError::Unavailable {
                        partition: name,
                        reason: error.to_string(),
                    }),
                };
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(pipeline, partition = %name, %error, retry_in = ?delay, "bulk write failed; retrying the batch");
                shared.metrics.write_retried(pipeline);
                job.pause(delay).await;
            }
        }
    };
    drop(prepared);
    drop(permit);
    for (kind, n) in &outcome.applied {
        shared.metrics.sink_written(pipeline, kind, *n);
    }
    shared
        .metrics
        .sink_bytes_written(pipeline, outcome.applied_bytes);
    // Counted once the documents they left are written.
    if renamed_fields_dropped > 0 {
        shared
            .metrics
            .renamed_fields_dropped(pipeline, renamed_fields_dropped as u64);
        tracing::warn!(pipeline, partition = %name, dropped = renamed_fields_dropped, "renames dropped fields whose new name was taken in their document (the MongoDB Kafka Connector's rule: the existing field is kept)");
    }
    if outcome.stale > 0 {
        shared.metrics.stale_writes_skipped(pipeline, outcome.stale);
        tracing::debug!(pipeline, partition = %name, skipped = outcome.stale, "stale writes skipped: a newer version is stored");
    }
    refused.extend(outcome.refused);
    let settlement = batch.settle(refused);
    for (index, error) in settlement.dead_letters {
        shared.metrics.record_error(pipeline, error.stage.as_str());
        let message = &entries[index].message;
        let position = format!("{name}@{}", message.offset());
        let Some(dead_letters) = &settings.dead_letters else {
            continue;
        };
        if let Err(source) = send_with_retries(&job, dead_letters, message, &position, &error).await
        {
            // Everything before it is written and dead-lettered: resume at this record.
            let committed = job.commit(batch.commit_before(index)).await;
            return BatchDone {
                committed,
                failure: Some(SinkError::DeadLetter { position, source }),
            };
        }
        shared.metrics.dead_lettered(pipeline, error.stage.as_str());
        tracing::warn!(pipeline, record = %position, %error, topic = %dead_letters.topic, "record sent to the dead letter topic");
    }
    let committed = job.commit(settlement.commit).await;
    if let Some((index, error)) = settlement.stop {
        let position = format!("{name}@{}", entries[index].message.offset());
        // A record that may convert later: the pipeline restarts at it, with backoff.
        let failure = if error.transient {
            SinkError::Unavailable {
                partition: name,
                reason: format!("{position}: {error}"),
            }
        } else {
            shared.metrics.record_error(pipeline, error.stage.as_str());
            SinkError::Record { position, error }
        };
        return BatchDone {
            committed,
            failure: Some(failure),
        };
    }
    shared
        .metrics
        .batch_written(pipeline, entries.len(), started.elapsed());
    if let Some(pause) = job.pause_after {
        job.pause(pause).await;
    }
    BatchDone {
        committed,
        failure: None,
    }
}

/// Creates the time-series collections `items` go to that are missing (once per pipeline
/// and namespace), then writes `items`.
async fn write_items(
    shared: &WriterShared,
    settings: &WriterSettings,
    prepared: &Prepared,
) -> Result<Outcome, String> {
    if let Some(series) = settings.converter.timeseries() {
        let missing: Vec<Namespace> = {
            let ready = shared
                .time_series_ready
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut missing: Vec<Namespace> = prepared
                .namespaces()
                .filter(|ns| !ready.contains(*ns))
                .cloned()
                .collect();
            missing.sort();
            missing.dedup();
            missing
        };
        for namespace in missing {
            let created = timeseries::ensure_collection(&shared.mongo, &namespace, series)
                .await
                .map_err(|e| format!("creating the time-series collection {namespace}: {e}"))?;
            if created {
                tracing::info!(pipeline = %shared.pipeline, %namespace, options = %series.create_options(), "created a time-series collection");
            }
            shared
                .time_series_ready
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(namespace);
        }
    }
    bulk::execute(&shared.mongo, prepared, settings.write_concern.as_ref())
        .await
        .map_err(|e| e.to_string())
}

/// Sends one dead letter, retrying a failure that may pass (a broker restarting) up to
/// `max_retries` times while the lease is live.
async fn send_with_retries(
    job: &BatchJob,
    dead_letters: &DeadLetters,
    message: &OwnedMessage,
    position: &str,
    error: &RecordError,
) -> Result<(), KafkaError> {
    let pipeline = job.shared.pipeline.as_str();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        match dead_letter(pipeline, dead_letters, message, position, error).await {
            Ok(()) => return Ok(()),
            Err(failure) if backoff.failures() >= job.settings.max_retries => return Err(failure),
            Err(failure) => {
                let delay = backoff.next_delay();
                tracing::warn!(pipeline, record = %position, error = %failure, retry_in = ?delay, "sending a dead letter failed; retrying");
                if !job.pause(delay).await {
                    return Err(failure);
                }
            }
        }
    }
}

/// What a dead letter leaves out of the record it carries, when the whole record does not
/// fit the dead letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Omitted {
    /// The record as it was read.
    Nothing,
    /// Without its value and its own headers.
    ValueAndHeaders,
    /// Without key, value and headers: only the daemon's headers, which say where it is.
    KeyValueAndHeaders,
}

impl Omitted {
    /// The next smaller dead letter to try after the broker or producer refused this one
    /// as too large.
    fn smaller(self) -> Option<Self> {
        match self {
            Self::Nothing => Some(Self::ValueAndHeaders),
            Self::ValueAndHeaders => Some(Self::KeyValueAndHeaders),
            Self::KeyValueAndHeaders => None,
        }
    }

    /// The `mkb.error.omitted` header's value.
    fn header(self) -> Option<&'static str> {
        match self {
            Self::Nothing => None,
            Self::ValueAndHeaders => Some("value, headers"),
            Self::KeyValueAndHeaders => Some("key, value, headers"),
        }
    }
}

/// Sends `message` as it was read to the dead letter topic, with headers saying why and
/// where from, and waits for Kafka's acknowledgement. A record too large for the dead letter
/// topic (or the producer's `message.max.bytes`) goes without its value and headers, then
/// also without its key, saying so in `mkb.error.omitted`: the original stays in its topic at
/// the offset the headers name.
async fn dead_letter(
    pipeline: &str,
    dead_letters: &DeadLetters,
    message: &OwnedMessage,
    position: &str,
    error: &RecordError,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut omitted = Omitted::Nothing;
    loop {
        let sent =
            send_dead_letter(pipeline, dead_letters, message, position, error, omitted).await;
        match (sent, omitted.smaller()) {
            (
                Err(rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge,
                )),
                Some(smaller),
            ) => {
                omitted = smaller;
                tracing::warn!(pipeline, record = %position, topic = %dead_letters.topic, omitted = omitted.header().unwrap_or_default(), "the record is too large for the dead letter topic; sending it without some of its parts");
            }
            (sent, _) => return sent,
        }
    }
}

async fn send_dead_letter(
    pipeline: &str,
    dead_letters: &DeadLetters,
    message: &OwnedMessage,
    position: &str,
    error: &RecordError,
    omitted: Omitted,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut headers = OwnedHeaders::new();
    if let (Omitted::Nothing, Some(original)) = (omitted, message.headers()) {
        for header in original.iter() {
            headers = headers.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    let reason = error.to_string();
    let letter = crate::dead_letter::DeadLetter {
        pipeline,
        reason: &reason,
        stage: error.stage.as_str(),
        origin: position,
        target_topic: None,
        source: Some((message.topic(), message.partition(), message.offset())),
        omitted: omitted.header(),
    };
    for (key, value) in crate::dead_letter::headers(dead_letters.headers, &letter) {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_str()),
        });
    }
    let (key, value) = match omitted {
        Omitted::Nothing => (message.key(), message.payload()),
        Omitted::ValueAndHeaders => (message.key(), None),
        Omitted::KeyValueAndHeaders => (None, None),
    };
    let delivery = kafka::enqueue(
        &dead_letters.producer,
        &dead_letters.topic,
        key,
        value,
        Some(headers),
    )
    .await?;
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(error),
        Err(_) => Err(rdkafka::error::KafkaError::Canceled),
    }
}
