//! The batch pipeline of a partition writer: [`write_batch`] converts one batch of records,
//! writes it to MongoDB, sends what was refused to the dead letter topic and commits the
//! partition's offset, carrying out what [`PartitionBatch`] decides. It does the I/O only.
//!
//! Rules:
//! - A batch is converted and written under one of the pipeline's `writes_in_flight` turns:
//!   the one its writer took before gathering it ([`BatchJob::turn`]), or, without one, the
//!   next free turn. The turn is given back once the batch is written.
//! - Once converted, a batch keeps its records' bytes only for dead letters: without a dead
//!   letter topic they are dropped before the write.
//! - A record whose schema the registry did not give (it did not answer, or refused the
//!   credentials) holds the partition back: the lookup is tried again, with backoff, until
//!   it answers or the lease ends; the pipeline is not failed for it.
//! - The statements are encoded once; a failed bulk write is sent again, with backoff, up to
//!   `max_retries` times, then the pipeline restarts (`SinkError::Unavailable`).
//! - No write starts and no commit happens once the lease ended: the partition's next owner
//!   reads the records again. An offset commit that the broker does not answer within
//!   [`COMMIT_DEADLINE`] is given up (a later one covers it).

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::CommitMode;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tokio::sync::OwnedSemaphorePermit;

use super::batch::PartitionBatch;
use super::bulk::{self, Item, Outcome, Prepared};
use super::convert::RawRecord;
use super::dead_letters::Letter;
use super::error::SinkError;
use super::lease::Lease;
use super::model::RecordError;
use super::namespace::Namespace;
use super::reassembly::Entry;
use super::retries::{Next, Retries};
use super::shared::{WriterSettings, WriterShared};
use super::timeseries;
use crate::backoff::Backoff;
use crate::config::Tolerance;

/// The first wait before asking a registry that did not answer (or refused the
/// credentials) again; it doubles up to [`REGISTRY_RETRY_MAX`].
const REGISTRY_RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two lookups at a registry that holds a partition back.
const REGISTRY_RETRY_MAX: Duration = Duration::from_secs(10);

/// How long a writer waits for the broker to answer an offset commit before it goes on
/// without it (the commit may still land later; a later one covers it either way).
pub const COMMIT_DEADLINE: Duration = Duration::from_secs(10);

/// What a batch needs besides its records.
pub struct BatchJob {
    /// What the pipeline's writers share.
    pub shared: Arc<WriterShared>,
    /// The writer's settings.
    pub settings: Arc<WriterSettings>,
    /// The writer's lease.
    pub lease: Arc<Lease>,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first chunk of a split event still arriving: no commit passes it.
    pub hold: Option<i64>,
    /// How the offset is committed.
    pub mode: CommitMode,
    /// A pause after the batch (`rate_limiting_*`), during which the writer takes nothing.
    pub pause_after: Option<Duration>,
    /// The write turn the writer took before gathering the batch, if it holds one.
    pub turn: Option<OwnedSemaphorePermit>,
}

/// What became of a batch.
pub struct BatchDone {
    /// The next offset to read, when one was committed.
    pub committed: Option<i64>,
    /// Why the writer cannot go on, if it cannot.
    pub failure: Option<SinkError>,
}

impl BatchDone {
    /// Left to the partition's next owner (the lease ended): nothing committed, no failure.
    const LEFT: Self = Self {
        committed: None,
        failure: None,
    };
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
}

/// Converts, writes, dead-letters and commits one batch, as [`PartitionBatch`] decides.
pub async fn write_batch(mut job: BatchJob, entries: Vec<Entry>) -> BatchDone {
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
    let permit = match job.turn.take() {
        Some(turn) => Some(turn),
        None => tokio::select! {
            permit = shared.writes_in_flight.take() => Some(permit),
            () = job.lease.ended() => None,
        },
    };
    let Some(permit) = permit else {
        // Revoked while waiting for its turn: the next owner writes these records.
        return BatchDone::LEFT;
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
                let mut waits = Backoff::new(REGISTRY_RETRY_FIRST, REGISTRY_RETRY_MAX);
                let fetched = loop {
                    let fetched = tokio::select! {
                        fetched = settings.converter.fetch_schemas(raw) => fetched,
                        () = job.lease.ended() => return BatchDone::LEFT,
                    };
                    match fetched {
                        Err(error) if error.transient => {
                            if !job.lease.pause(waits.next_delay()).await {
                                return BatchDone::LEFT;
                            }
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
                let stop = batch.stops_at(&error);
                refused.push((index, error));
                if stop {
                    break;
                }
            }
        }
    }
    let count = entries.len();
    let offsets: Vec<i64> = entries.iter().map(|e| e.message.offset()).collect();
    // Once converted, only a dead letter needs a record's bytes: without a dead letter topic
    // they go now, before the write, rather than stay in memory for as long as it takes.
    let entries = if settings.dead_letters.is_some() {
        entries
    } else {
        Vec::new()
    };
    // Encoded once: a retry sends the same statements again.
    let prepared = bulk::prepare(items, settings.stale_write_guard.as_deref());
    let mut retries = Retries::new(settings.max_retries);
    let outcome = loop {
        if !job.lease.is_live() {
            // Revoked before this write started: the next owner writes these records.
            return BatchDone::LEFT;
        }
        let error = match write_items(&shared, &settings, &prepared).await {
            Ok(outcome) => break outcome,
            Err(error) => error,
        };
        match retries.failed(job.lease.is_live()) {
            Next::Retry(delay) => {
                tracing::warn!(pipeline, partition = %name, %error, retry_in = ?delay, "bulk write failed; retrying the batch");
                shared.metrics.write_retried(pipeline);
                job.lease.pause(delay).await;
            }
            Next::GiveUp => {
                return BatchDone {
                    committed: None,
                    failure: Some(SinkError::Unavailable {
                        partition: name,
                        reason: error,
                    }),
                };
            }
            // Revoked during this write: the next owner writes these records.
            Next::Leave => return BatchDone::LEFT,
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
        let (Some(dead_letters), Some(entry)) = (&settings.dead_letters, entries.get(index)) else {
            continue;
        };
        let message = &entry.message;
        let position = format!("{name}@{}", message.offset());
        let letter = Letter {
            pipeline,
            message,
            position: &position,
            error: &error,
        };
        if let Err(source) = dead_letters
            .send(letter, settings.max_retries, &job.lease)
            .await
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
        let position = format!("{name}@{}", offsets[index]);
        if !error.transient {
            shared.metrics.record_error(pipeline, error.stage.as_str());
        }
        return BatchDone {
            committed,
            failure: Some(SinkError::stopped_at(name, position, error)),
        };
    }
    shared
        .metrics
        .batch_written(pipeline, count, started.elapsed());
    if let Some(pause) = job.pause_after {
        job.lease.pause(pause).await;
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
