//! The consumer side of a sink pipeline: one Kafka consumer in the pipeline's group,
//! cooperative-sticky by default, whose partitions each get a queue and a
//! [`PartitionWriter`] of their own.
//!
//! Assignment: for each partition assigned, the rebalance callback splits the partition's
//! queue off the consumer (before librdkafka fetches anything for it) and starts a writer
//! under a new [`Lease`] that owns the queue: nothing else reads it. The writer takes each
//! record off the queue once it has the record's room in the pipeline's memory budget
//! (shared by its partitions; it waits while the budget is spent: the same stop, in bytes,
//! whatever the number of partitions), and takes none while it writes a batch: librdkafka
//! stops fetching the partition once its queue holds `queued.max.messages.kbytes`, and
//! nothing is paused, dropped or fetched twice (see `writer` and `intake`). The consumer's
//! own queue, polled by [`run`], serves rebalances, statistics and errors.
//!
//! Revoke: the callback stops the leases of the revoked partitions (no new write starts),
//! waits (up to the shutdown deadline) until the writers finished the write on their way,
//! committed it, stopped and dropped their queues; then it fences the leases, so nothing
//! written or committed afterwards can come from them.
//!
//! Lost assignment: when the group session expired (the process was paused or cut off from
//! the broker past `session.timeout.ms`), librdkafka revokes with the assignment lost. The
//! partitions may have a new owner already: their leases are fenced at once, without
//! waiting for the write on its way or committing it. A process that was stopped that long
//! is caught earlier by [`watch_session`], before librdkafka notices (see [`SessionClock`]).
//!
//! Paused by hand (`POST /pipelines/<name>/pause`, [`ContextParts::paused`]): every
//! partition owned is paused in librdkafka (nothing more is fetched, what waited in its
//! queue is dropped and fetched again at the resume), and so is every partition assigned
//! while paused. [`run`] keeps polling, so the consumer stays in its group and keeps its
//! partitions; their stalls are not watched while paused (deliberate, not a problem).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::StreamExt;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::error::SinkError;
use super::lease::{Incarnation, Lease, LeaseState, SessionClock};
use super::shared::{OffsetCommitter, WriterFailed};
use super::stall::{self, StallChange, StallDetector};
use super::writer::{Assignment, PartitionWriter, Records};
use crate::ops::health::{self, Readiness};
use crate::ops::metrics::Metrics;
use crate::ops::progress::{human_seconds, CatchUp};
use crate::ops::status::StatusBoard;

/// How long a partition may have records waiting (queued or not fetched yet) while none
/// reaches its writer before it is reported as stalled (`/ready`, a metric, a WARN).
pub const STALL_LIMIT: Duration = Duration::from_secs(30);

/// The consumer type of sink pipelines.
pub type SinkConsumer = StreamConsumer<RebalanceContext>;

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    /// The topic.
    pub topic: String,
    /// The partition number.
    pub number: i32,
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.number)
    }
}

/// Makes the writer of an assignment; `None` when the topic cannot be written (its settings
/// are unusable; the supervisor was told).
pub type WriterFactory = Box<dyn Fn(Assignment) -> Option<Addr<PartitionWriter>> + Send + Sync>;

/// A partition this consumer owns now.
pub struct Owned {
    /// Its writer.
    pub writer: Addr<PartitionWriter>,
    /// The writer's lease.
    pub lease: Arc<Lease>,
    /// Records the writer took off its queue so far.
    progress: Arc<AtomicU64>,
    /// Disconnected once the writer and its queue are both gone.
    gone: std::sync::mpsc::Receiver<()>,
}

impl Owned {
    /// The writer and its lease (a drain flushes and closes the writer, then fences the
    /// lease).
    pub fn into_writer(self) -> (Addr<PartitionWriter>, Arc<Lease>) {
        (self.writer, self.lease)
    }
}

/// The partitions the consumer owns, shared by the rebalance callback and the supervisor.
#[derive(Default)]
pub struct Partitions {
    owned: Mutex<HashMap<Partition, Owned>>,
    incarnations: AtomicU64,
}

impl Partitions {
    /// Partitions numbered from `first_incarnation` on (a pipeline's restarts go on
    /// numbering where the last run stopped).
    pub fn starting_at(first_incarnation: u64) -> Self {
        Self {
            owned: Mutex::default(),
            incarnations: AtomicU64::new(first_incarnation),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Partition, Owned>> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.owned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next incarnation number to use (for the next run of the pipeline).
    pub fn next_incarnation(&self) -> u64 {
        self.incarnations.load(Ordering::SeqCst)
    }

    /// Whether `incarnation` is the current owner of `partition` (`topic/partition`).
    pub fn is_current(&self, partition: &str, incarnation: Incarnation) -> bool {
        self.lock().iter().any(|(p, owned)| {
            owned.lease.incarnation() == incarnation && p.to_string() == partition
        })
    }

    /// How many records `partition`'s writer took off its queue, if this consumer owns it.
    fn progress_of(&self, partition: &Partition) -> Option<u64> {
        self.lock()
            .get(partition)
            .map(|o| o.progress.load(Ordering::Relaxed))
    }

    /// The incarnation owning `partition`, if this consumer owns it.
    pub fn incarnation_of(&self, partition: &Partition) -> Option<Incarnation> {
        self.lock().get(partition).map(|o| o.lease.incarnation())
    }

    /// Takes every owned partition away (the pipeline drains).
    pub fn take_all(&self) -> Vec<(Partition, Owned)> {
        self.lock().drain().collect()
    }

    /// Fences every owned partition's lease (their session is lost), leaving them owned
    /// until librdkafka revokes them; answers which.
    fn fence_all(&self) -> Vec<Partition> {
        let owned = self.lock();
        for o in owned.values() {
            o.lease.fence();
        }
        owned.keys().cloned().collect()
    }

    fn take(&self, partitions: &[Partition]) -> Vec<(Partition, Owned)> {
        let mut owned = self.lock();
        partitions
            .iter()
            .filter_map(|p| owned.remove(p).map(|o| (p.clone(), o)))
            .collect()
    }
}

/// The consumer, for splitting partition queues and committing, without the writers
/// holding it alive (the consumer holds them, through its context).
#[derive(Default)]
pub struct ConsumerHandle(OnceLock<Weak<SinkConsumer>>);

impl ConsumerHandle {
    /// Points at `consumer`, once, before it subscribes.
    pub fn attach(&self, consumer: &Arc<SinkConsumer>) {
        let _ = self.0.set(Arc::downgrade(consumer));
    }

    fn get(&self) -> Option<Arc<SinkConsumer>> {
        self.0.get().and_then(Weak::upgrade)
    }
}

impl OffsetCommitter for ConsumerHandle {
    fn commit(
        &self,
        topic: &str,
        partition: i32,
        next: i64,
        mode: CommitMode,
    ) -> Result<(), KafkaError> {
        let consumer = self.get().ok_or(KafkaError::Canceled)?;
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(topic, partition, Offset::Offset(next))?;
        consumer.commit(&offsets, mode)
    }
}

/// What the consumer's context is made of.
pub struct ContextParts {
    /// The pipeline's name.
    pub pipeline: String,
    /// The partitions owned.
    pub partitions: Arc<Partitions>,
    /// The consumer itself.
    pub consumer: Arc<ConsumerHandle>,
    /// Makes writers.
    pub make_writer: WriterFactory,
    /// How long a revoke waits for the writers.
    pub revoke_deadline: Duration,
    /// The metrics.
    pub metrics: Metrics,
    /// Where stalled partitions are reported.
    pub readiness: Readiness,
    /// Where the catch-up on a backlog is reported (`/status`).
    pub status: StatusBoard,
    /// The group session as this process sees it; every lease belongs to it.
    pub session: Arc<SessionClock>,
    /// Paused by hand: partitions assigned are paused at once.
    pub paused: Arc<AtomicBool>,
}

/// The consumer's context: sets up and tears down partitions on rebalances, exports the
/// consumer lag librdkafka's statistics report and reports partitions that stall.
pub struct RebalanceContext {
    parts: ContextParts,
    stalls: Mutex<StallDetector<Partition>>,
    catch_up: Mutex<CatchUpLog>,
}

/// The pipeline's lag over time, and when it was last logged.
#[derive(Default)]
struct CatchUpLog {
    progress: CatchUp,
    logged: Option<Instant>,
    behind: bool,
}

/// How often a catch-up on a backlog is logged.
const CATCH_UP_LOG_EVERY: Duration = Duration::from_secs(10);

impl RebalanceContext {
    /// A context of `parts`.
    pub fn new(parts: ContextParts) -> Self {
        Self {
            parts,
            stalls: Mutex::new(StallDetector::new(STALL_LIMIT)),
            catch_up: Mutex::default(),
        }
    }

    /// Records the pipeline's whole lag `lag` (the partitions it owns): `/status`, the
    /// estimate metric, and a log line every few seconds while it catches up on a backlog.
    fn report_catch_up(&self, lag: i64, now: Instant) {
        let pipeline = &self.parts.pipeline;
        let mut log = self.catch_up.lock().unwrap_or_else(PoisonError::into_inner);
        log.progress.observe(lag, now);
        let report = log.progress.report();
        self.parts.metrics.catch_up(pipeline, &report);
        self.parts.status.catch_up(pipeline, report.clone());
        if report.lag == 0 {
            if log.behind {
                tracing::info!(pipeline = %pipeline, "caught up: no records wait in the pipeline's partitions");
            }
            log.behind = false;
            return;
        }
        log.behind = true;
        if log
            .logged
            .is_some_and(|at| now.duration_since(at) < CATCH_UP_LOG_EVERY)
        {
            return;
        }
        log.logged = Some(now);
        let left = report.eta_seconds.map_or_else(
            || "unknown (the lag is not falling)".to_owned(),
            human_seconds,
        );
        tracing::info!(pipeline = %pipeline, lag = report.lag, falling_per_second = report.decline_per_second.unwrap_or(0.0), time_left = %left, "catching up");
    }

    fn stalls(&self) -> MutexGuard<'_, StallDetector<Partition>> {
        self.stalls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Carries out a stall change of `partition` (lag `lag`) and republishes the count.
    fn report_stall(&self, partition: &Partition, change: Option<StallChange>, lag: i64) {
        let parts = &self.parts;
        let component = health::partition(&parts.pipeline, &partition.to_string());
        match change {
            Some(StallChange::Stalled) => {
                tracing::warn!(pipeline = %parts.pipeline, %partition, lag, limit = ?STALL_LIMIT, "partition stalled: records are waiting but none reached its writer");
                parts.readiness.set_problem(
                    component,
                    format!("{lag} records waiting, none written for {STALL_LIMIT:?}"),
                );
            }
            Some(StallChange::Recovered) => {
                tracing::info!(pipeline = %parts.pipeline, %partition, "partition flows again");
                parts.readiness.clear(&component);
            }
            None => return,
        }
        let count = self.stalls().stalled().count();
        parts.metrics.stalled_partitions(&parts.pipeline, count);
    }

    /// Splits `partition`'s queue off the consumer and starts its writer, which owns it.
    fn assign(&self, consumer: &Arc<SinkConsumer>, partition: Partition) {
        let parts = &self.parts;
        let Some(queue) = consumer.split_partition_queue(&partition.topic, partition.number) else {
            tracing::error!(pipeline = %parts.pipeline, %partition, "no queue for an assigned partition; it is not read");
            return;
        };
        let incarnation = Incarnation(parts.partitions.incarnations.fetch_add(1, Ordering::SeqCst));
        let lease = Arc::new(Lease::in_session(incarnation, parts.session.clone()));
        let (alive, gone) = std::sync::mpsc::channel();
        let progress = Arc::new(AtomicU64::new(0));
        let records = records_of(SplitQueue {
            queue,
            pipeline: parts.pipeline.clone(),
            partition: partition.clone(),
            _alive: alive.clone(),
        });
        let Some(writer) = (parts.make_writer)(Assignment {
            topic: partition.topic.clone(),
            partition: partition.number,
            lease: lease.clone(),
            records,
            progress: progress.clone(),
            alive,
        }) else {
            return;
        };
        let previous = parts.partitions.lock().insert(
            partition.clone(),
            Owned {
                writer,
                lease,
                progress,
                gone,
            },
        );
        if let Some(previous) = previous {
            // Assigned twice without a revoke between: the earlier writer must not go on.
            tracing::warn!(pipeline = %parts.pipeline, %partition, "a partition was assigned again before being revoked; fencing its earlier writer");
            self.release(vec![(partition, previous)]);
        }
    }

    /// Fences the writers of `owned` at once: their assignment is lost, the partitions may
    /// have a new owner already, so nothing more is written or committed.
    fn release_lost(&self, owned: Vec<(Partition, Owned)>) {
        let parts = &self.parts;
        let names: Vec<String> = owned.iter().map(|(p, _)| p.to_string()).collect();
        tracing::warn!(pipeline = %parts.pipeline, partitions = ?names, session_timeout = ?parts.session.timeout(), "partitions lost: the consumer group session expired; their writers are fenced at once (a write already on its way may still land: `stale_write_guard` keeps it from overwriting a newer version)");
        // Those the session watch fenced already were counted there.
        let newly = owned
            .iter()
            .filter(|(_, o)| o.lease.state() != LeaseState::Fenced)
            .count();
        parts
            .metrics
            .assignments_lost(&parts.pipeline, newly as u64);
        for (_, o) in owned {
            o.lease.fence();
        }
    }

    /// Stops, waits for (up to the deadline) and fences the writers of `owned`.
    fn release(&self, owned: Vec<(Partition, Owned)>) {
        let parts = &self.parts;
        for (_, o) in &owned {
            o.lease.stop();
        }
        let until = Instant::now() + parts.revoke_deadline;
        let mut late = Vec::new();
        for (partition, o) in owned {
            let left = until.saturating_duration_since(Instant::now());
            // Nobody sends: `Disconnected` is the writer and its queue gone.
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) | Ok(()) =
                o.gone.recv_timeout(left)
            {
                late.push(partition);
            }
            o.lease.fence();
        }
        if !late.is_empty() {
            tracing::warn!(pipeline = %parts.pipeline, partitions = ?late.iter().map(ToString::to_string).collect::<Vec<_>>(), deadline = ?parts.revoke_deadline, "writers of revoked partitions did not stop before the deadline; they are fenced: they commit nothing more, but a write already on its way may still land");
        }
    }
}

impl ClientContext for RebalanceContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::clients::kafka::log_event(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        let paused = self.parts.paused.load(Ordering::SeqCst);
        let mut total_lag = 0;
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                if *partition < 0 {
                    continue;
                }
                // A lag of -1 is unknown.
                if p.consumer_lag >= 0 {
                    self.parts.metrics.consumer_lag(
                        &self.parts.pipeline,
                        topic,
                        *partition,
                        p.consumer_lag,
                    );
                }
                let partition = Partition {
                    topic: topic.clone(),
                    number: *partition,
                };
                let Some(progress) = self.parts.partitions.progress_of(&partition) else {
                    continue;
                };
                total_lag += p.consumer_lag.max(0);
                if paused {
                    // Deliberate: records wait, and that is no stall.
                    if self.stalls().forget(&partition) {
                        self.report_stall(&partition, Some(StallChange::Recovered), 0);
                    }
                    continue;
                }
                let waiting = stall::waiting(p.fetchq_cnt, p.next_offset, p.ls_offset, p.hi_offset);
                let change = self
                    .stalls()
                    .observe(&partition, waiting, progress, Instant::now());
                self.report_stall(&partition, change, waiting);
            }
        }
        self.report_catch_up(total_lag, Instant::now());
    }
}

fn partitions_of(list: &TopicPartitionList) -> Vec<Partition> {
    list.elements()
        .iter()
        .map(|e| Partition {
            topic: e.topic().to_owned(),
            number: e.partition(),
        })
        .collect()
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let owned = self.parts.partitions.take(&partitions_of(revoked));
        if owned.is_empty() {
            return;
        }
        if consumer.assignment_lost() {
            self.parts.metrics.forget_consumer_lag(&self.parts.pipeline);
            for (partition, _) in &owned {
                if self.stalls().forget(partition) {
                    self.report_stall(partition, Some(StallChange::Recovered), 0);
                }
            }
            self.release_lost(owned);
            return;
        }
        let names: Vec<String> = owned.iter().map(|(p, _)| p.to_string()).collect();
        tracing::info!(pipeline = %self.parts.pipeline, partitions = ?names, "partitions revoked: their writers finish the write on its way, commit it and stop");
        // The new owner reports their lag and stalls from now on.
        self.parts.metrics.forget_consumer_lag(&self.parts.pipeline);
        for (partition, _) in &owned {
            if self.stalls().forget(partition) {
                self.report_stall(partition, Some(StallChange::Recovered), 0);
            }
        }
        self.release(owned);
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(assigned) = rebalance else {
            return;
        };
        let assigned = partitions_of(assigned);
        if assigned.is_empty() {
            return;
        }
        let Some(consumer) = self.parts.consumer.get() else {
            return;
        };
        tracing::info!(pipeline = %self.parts.pipeline, partitions = ?assigned.iter().map(ToString::to_string).collect::<Vec<_>>(), "partitions assigned");
        for partition in &assigned {
            self.assign(&consumer, partition.clone());
        }
        if self.parts.paused.load(Ordering::SeqCst) {
            set_paused(&self.parts.pipeline, &consumer, &assigned, true);
            // A resume between the check and the pause saw the partitions unpaused.
            if !self.parts.paused.load(Ordering::SeqCst) {
                set_paused(&self.parts.pipeline, &consumer, &assigned, false);
            }
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        if let Err(error) = result {
            tracing::warn!(pipeline = %self.parts.pipeline, %error, "an offset commit failed");
        }
    }
}

/// Pauses (`pause`) or resumes fetching `partitions`; a failure is logged (the pipeline
/// then goes on fetching or stays paused, as it was).
fn set_paused(pipeline: &str, consumer: &SinkConsumer, partitions: &[Partition], pause: bool) {
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        list.add_partition(&partition.topic, partition.number);
    }
    let result = if pause {
        consumer.pause(&list)
    } else {
        consumer.resume(&list)
    };
    if let Err(error) = result {
        tracing::warn!(pipeline, partitions = ?partitions.iter().map(ToString::to_string).collect::<Vec<_>>(), pause, %error, "pausing or resuming the partitions failed");
    }
}

/// Pauses (`pause`) or resumes fetching every partition `consumer` owns now.
pub fn pause_owned(pipeline: &str, consumer: &SinkConsumer, pause: bool) {
    match consumer.assignment() {
        Ok(list) => set_paused(pipeline, consumer, &partitions_of(&list), pause),
        Err(error) => {
            tracing::warn!(pipeline, pause, %error, "reading the consumer's assignment to pause or resume it failed");
        }
    }
}

/// A partition's queue, split off the consumer, as its writer reads it. `_alive` goes after
/// the queue: a revoke waiting for it learns that the queue is gone.
struct SplitQueue {
    queue: StreamPartitionQueue<RebalanceContext>,
    pipeline: String,
    partition: Partition,
    _alive: std::sync::mpsc::Sender<()>,
}

/// The records of `split`'s queue, in order, for its writer to take: a failed read is
/// logged and tried again.
fn records_of(split: SplitQueue) -> Records {
    futures_util::stream::unfold(split, |split| async move {
        loop {
            match split.queue.recv().await.map(|m| m.detach()) {
                Ok(message) => return Some((message, split)),
                Err(error) => {
                    tracing::warn!(pipeline = %split.pipeline, partition = %split.partition, %error, "reading the partition failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    })
    .boxed()
}

/// How often [`watch_session`] marks the process running.
const SESSION_TICK: Duration = Duration::from_millis(200);

/// Marks `session` every [`SESSION_TICK`] on a thread of its own (a revoke blocking the
/// consumer's thread is no pause of the process), until `partitions` is gone; when the
/// process did not run for the session timeout, fences every owned partition at once: the
/// broker gave them away meanwhile, and librdkafka will say so only a moment later.
pub fn watch_session(
    pipeline: String,
    session: Arc<SessionClock>,
    partitions: Weak<Partitions>,
    metrics: Metrics,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("session-{pipeline}"))
        .spawn(move || loop {
            std::thread::sleep(SESSION_TICK);
            let Some(partitions) = partitions.upgrade() else {
                return;
            };
            session.tick(Instant::now(), |gap| {
                let fenced = partitions.fence_all();
                if fenced.is_empty() {
                    return;
                }
                tracing::warn!(pipeline = %pipeline, paused_for = ?gap, session_timeout = ?session.timeout(), partitions = ?fenced.iter().map(ToString::to_string).collect::<Vec<_>>(), "the process did not run for longer than the consumer group session timeout: its partitions belong to another consumer now; their writers are fenced");
                metrics.assignments_lost(&pipeline, fenced.len() as u64);
            });
        })
}

/// Polls the consumer's own queue (rebalances, statistics, errors) until `stop` resolves.
/// Records never arrive there: every assigned partition's queue is split off first. Should
/// one arrive all the same, the pipeline restarts from its committed offsets rather than
/// skip it or write it out of order.
pub async fn run(
    pipeline: String,
    consumer: Arc<SinkConsumer>,
    partitions: Arc<Partitions>,
    supervisor: Recipient<WriterFailed>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => break,
            received = consumer.recv() => match received {
                Ok(message) => {
                    let partition = Partition {
                        topic: message.topic().to_owned(),
                        number: message.partition(),
                    };
                    let position = format!("{partition}@{}", message.offset());
                    // Not owned: its owner reads it from its own queue.
                    let Some(incarnation) = partitions.incarnation_of(&partition) else {
                        continue;
                    };
                    let failed = WriterFailed {
                        partition: partition.to_string(),
                        incarnation,
                        error: SinkError::Unrouted { position },
                    };
                    let _ = supervisor.send(failed).await;
                }
                Err(error) => {
                    tracing::warn!(pipeline = %pipeline, %error, "consuming failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}
