//! [`PartitionWriter`]: the actor that writes one Kafka partition's records to MongoDB.
//!
//! Records arrive in partition order through a bounded mailbox. The writer collects them
//! into a batch (`max_batch_size` records or `max_batch_delay`), converts each, writes the
//! batch with [`bulk::execute`], sends what MongoDB or the converter refused to the dead
//! letter topic (or stops the pipeline, naming the record), and only then commits the
//! partition's offset. While a batch is being written the writer reads no more records, so
//! its mailbox fills and the consumer pauses the partition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

use super::bulk::{self, Item};
use super::consumer::SinkConsumer;
use super::convert::{Converter, RawRecord};
use super::model::{RecordError, Stage};
use super::SinkError;
use crate::backoff::Backoff;
use crate::chunks::{self, ChunkHeader, Fed, Reassembler};
use crate::clients::kafka;
use crate::config::Tolerance;
use crate::ops::metrics::{Metrics, MAILBOX_PARTITION_WRITER};

/// Split events a writer holds at once while their chunks arrive.
const MAX_PENDING_SPLIT_EVENTS: usize = 16;

/// A record of a batch, and why it cannot be written when that is known before converting.
type Entry = (OwnedMessage, Option<RecordError>);

/// One record for the writer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record(pub OwnedMessage);

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
    /// Why.
    pub error: SinkError,
}

/// Where refused records go, when `errors.tolerance = "all"`.
#[derive(Clone)]
pub struct DeadLetters {
    /// The producer.
    pub producer: FutureProducer,
    /// The dead letter topic.
    pub topic: String,
}

/// What every writer of a pipeline shares.
pub struct WriterShared {
    /// The pipeline's name.
    pub pipeline: String,
    /// The MongoDB client.
    pub mongo: mongodb::Client,
    /// The consumer, for committing.
    pub consumer: Arc<SinkConsumer>,
    /// The metrics.
    pub metrics: Metrics,
    /// The supervisor, told when a writer fails.
    pub supervisor: Recipient<WriterFailed>,
}

/// The settings of one writer (its topic's).
pub struct WriterSettings {
    /// Converts the topic's records.
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
    /// Attempts of a bulk write that may pass on a retry.
    pub max_retries: u32,
}

/// Writes one partition.
pub struct PartitionWriter {
    topic: String,
    partition: i32,
    shared: Arc<WriterShared>,
    settings: Arc<WriterSettings>,
    buffer: Vec<Entry>,
    chunks: Reassembler,
    timer: Option<SpawnHandle>,
    committed: Option<i64>,
    closed: bool,
}

impl PartitionWriter {
    /// A writer for `topic`/`partition`.
    pub fn new(
        topic: String,
        partition: i32,
        shared: Arc<WriterShared>,
        settings: Arc<WriterSettings>,
    ) -> Self {
        Self {
            topic,
            partition,
            shared,
            settings,
            buffer: Vec::new(),
            chunks: Reassembler::new(MAX_PENDING_SPLIT_EVENTS),
            timer: None,
            committed: None,
            closed: false,
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
            Ok(None) => return Some((message, None)),
            Ok(Some(header)) => header,
            Err(reason) => {
                return Some((
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
        match fed {
            Fed::Incomplete => None,
            Fed::Orphan(reason) => Some((
                message,
                Some(RecordError::new(
                    Stage::Decode,
                    format!("split event: {reason}"),
                )),
            )),
            Fed::Complete { value, .. } => {
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
                Some((whole, None))
            }
        }
    }

    /// Writes the buffer; the actor reads no message until it is done.
    fn flush(&mut self, mode: CommitMode, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        if self.buffer.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.buffer);
        let job = write_batch(
            self.shared.clone(),
            self.settings.clone(),
            self.topic.clone(),
            self.partition,
            batch,
            self.chunks.oldest_held_offset(),
            mode,
        );
        ctx.wait(job.into_actor(self).map(|result, act, ctx| match result {
            Ok(next) => act.committed = Some(next),
            Err((next, error)) => {
                if let Some(next) = next {
                    act.committed = Some(next);
                }
                act.closed = true;
                let failed = WriterFailed {
                    partition: act.name(),
                    error,
                };
                let supervisor = act.shared.supervisor.clone();
                actix::spawn(async move {
                    let _ = supervisor.send(failed).await;
                });
                ctx.stop();
            }
        }));
    }
}

impl Actor for PartitionWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.settings.mailbox_capacity);
        tracing::debug!(pipeline = %self.shared.pipeline, partition = %self.name(), "partition writer started");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        tracing::debug!(pipeline = %self.shared.pipeline, partition = %self.name(), "partition writer stopped");
    }
}

impl Handler<Record> for PartitionWriter {
    type Result = ();

    fn handle(&mut self, Record(message): Record, ctx: &mut Self::Context) {
        self.shared
            .metrics
            .mailbox(&self.shared.pipeline, MAILBOX_PARTITION_WRITER, -1);
        if self.closed {
            return;
        }
        let Some(entry) = self.reassemble(message) else {
            return;
        };
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

/// Converts, writes, dead-letters and commits one batch; the commit stays before `hold`,
/// the first chunk of a split event still arriving. Answers the next offset to read; on
/// failure, that of the first record not written (if any was) and why.
async fn write_batch(
    shared: Arc<WriterShared>,
    settings: Arc<WriterSettings>,
    topic: String,
    partition: i32,
    batch: Vec<Entry>,
    hold: Option<i64>,
    mode: CommitMode,
) -> Result<i64, (Option<i64>, SinkError)> {
    let started = Instant::now();
    let pipeline = shared.pipeline.as_str();
    shared
        .metrics
        .records_consumed(pipeline, &topic, batch.len() as u64);
    let mut items = Vec::with_capacity(batch.len());
    let mut refused: Vec<(usize, RecordError)> = Vec::new();
    for (index, (message, known)) in batch.iter().enumerate() {
        if let Some(error) = known {
            refused.push((index, error.clone()));
            if settings.tolerance == Tolerance::None {
                break;
            }
            continue;
        }
        let raw = RawRecord {
            topic: &topic,
            partition,
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key(),
            value: message.payload(),
        };
        match settings.converter.convert(raw) {
            Ok(Some(converted)) => items.push(Item {
                index,
                namespace: converted.namespace,
                op: converted.op,
            }),
            Ok(None) => shared.metrics.record_skipped(pipeline),
            Err(error) => {
                let stop = error.transient || settings.tolerance == Tolerance::None;
                refused.push((index, error));
                // Without a dead letter topic the pipeline stops at this record, and a record
                // that may convert later is tried again: write only what comes before it.
                if stop {
                    break;
                }
            }
        }
    }
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let outcome = loop {
        match bulk::execute(&shared.mongo, &items).await {
            Ok(outcome) => break outcome,
            Err(error) if backoff.failures() >= settings.max_retries => {
                return Err((
                    None,
                    SinkError::Unavailable {
                        partition: format!("{topic}/{partition}"),
                        reason: error.to_string(),
                    },
                ));
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(pipeline, partition = %format!("{topic}/{partition}"), %error, retry_in = ?delay, "bulk write failed; retrying the batch");
                shared.metrics.write_retried(pipeline);
                tokio::time::sleep(delay).await;
            }
        }
    };
    for (kind, n) in &outcome.applied {
        shared.metrics.sink_written(pipeline, kind, *n);
    }
    refused.extend(outcome.refused);
    refused.sort_by_key(|(index, _)| *index);
    for (index, error) in refused {
        shared.metrics.record_error(pipeline, error.stage.as_str());
        let message = &batch[index].0;
        let position = format!("{topic}/{partition}@{}", message.offset());
        if error.transient {
            // Everything before it is written: the pipeline restarts at it, with backoff.
            let next = commit(&shared, &topic, partition, message.offset(), mode);
            return Err((
                next,
                SinkError::Unavailable {
                    partition: format!("{topic}/{partition}"),
                    reason: format!("{position}: {error}"),
                },
            ));
        }
        match (&settings.tolerance, &settings.dead_letters) {
            (Tolerance::All, Some(dead_letters)) => {
                if let Err(source) =
                    dead_letter(pipeline, dead_letters, message, &position, &error).await
                {
                    let next = commit(&shared, &topic, partition, message.offset(), mode);
                    return Err((next, SinkError::DeadLetter { position, source }));
                }
                shared.metrics.dead_lettered(pipeline, error.stage.as_str());
                tracing::warn!(pipeline, record = %position, %error, topic = %dead_letters.topic, "record sent to the dead letter topic");
            }
            _ => {
                // Everything before it is written: resume at the refused record.
                let next = commit(&shared, &topic, partition, message.offset(), mode);
                return Err((next, SinkError::Record { position, error }));
            }
        }
    }
    let next = batch.last().map_or(0, |(m, _)| m.offset() + 1);
    let next = hold.map_or(next, |held| next.min(held));
    let committed = commit(&shared, &topic, partition, next, mode);
    shared
        .metrics
        .batch_written(pipeline, batch.len(), started.elapsed());
    match committed {
        Some(next) => Ok(next),
        None => Err((
            None,
            SinkError::Commit {
                partition: format!("{topic}/{partition}"),
            },
        )),
    }
}

/// Commits `next` as the next offset to read of the partition; `None` when the commit was
/// refused (the partition was taken away, or Kafka is unreachable).
fn commit(
    shared: &WriterShared,
    topic: &str,
    partition: i32,
    next: i64,
    mode: CommitMode,
) -> Option<i64> {
    let mut offsets = TopicPartitionList::new();
    if offsets
        .add_partition_offset(topic, partition, Offset::Offset(next))
        .is_err()
    {
        return None;
    }
    match shared.consumer.commit(&offsets, mode) {
        Ok(()) => Some(next),
        Err(error) => {
            tracing::warn!(pipeline = %shared.pipeline, partition = %format!("{topic}/{partition}"), offset = next, %error, "committing the offset failed; the records after the last committed offset will be written again");
            None
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
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let reason = error.to_string();
    for (key, value) in [
        ("mkb.error", Some(reason.as_str())),
        ("mkb.error.stage", Some(error.stage.as_str())),
        ("mkb.error.omitted", omitted.header()),
        ("mkb.pipeline", Some(pipeline)),
        ("mkb.source.topic", Some(message.topic())),
        ("mkb.source.partition", Some(partition.as_str())),
        ("mkb.source.offset", Some(offset.as_str())),
        ("mkb.origin", Some(position)),
    ] {
        if let Some(value) = value {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
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
