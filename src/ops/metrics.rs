//! Every metric the daemon exports is defined here, once, with its help text, unit and
//! labels, and recorded through the small typed functions below. Labels are bounded:
//! pipeline names, namespaces, topics, partitions and fixed words; never ids or error text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::progress::{CatchUpReport, ProgressReport};
/// Why a change event was published as nothing: with `publish_full_document_only`, it has
/// no document (a delete without `tombstone_on_delete`, an update whose document is gone).
pub const SKIPPED_NO_DOCUMENT: &str = "no_document";

/// Prefix of every metric name.
pub const PREFIX: &str = "mkb";

/// Actor kinds whose mailbox depth is exported.
pub const MAILBOX_RECORD_PRODUCER: &str = "record_producer";
/// See [`MAILBOX_RECORD_PRODUCER`].
pub const MAILBOX_PARTITION_WRITER: &str = "partition_writer";

/// Gauges whose series are state (a lag, an age): kept in a map so that a removed pipeline's
/// series disappear, and rendered at scrape time.
#[derive(Clone)]
struct StateGauge {
    gauge: GaugeVec,
    values: Arc<Mutex<HashMap<Vec<String>, f64>>>,
}

impl StateGauge {
    fn values(&self) -> MutexGuard<'_, HashMap<Vec<String>, f64>> {
        // A panic while holding the lock leaves plain numbers behind: keep using them.
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, labels: &[&str], value: f64) {
        self.values()
            .insert(labels.iter().map(|l| (*l).to_owned()).collect(), value);
    }

    fn remove(&self, labels: &[&str]) {
        let key: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        self.values().remove(&key);
    }

    fn forget_pipeline(&self, pipeline: &str) {
        self.values()
            .retain(|labels, _| labels.first().map(String::as_str) != Some(pipeline));
    }

    fn publish(&self) {
        self.gauge.reset();
        for (labels, value) in self.values().iter() {
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            self.gauge.with_label_values(&labels).set(*value);
        }
    }
}

/// The daemon's metrics and the registry they are exported from. Clones share them: a clone
/// is one reference count, cheap enough to make per record.
#[derive(Clone)]
pub struct Metrics(Arc<Series>);

impl std::ops::Deref for Metrics {
    type Target = Series;

    fn deref(&self) -> &Series {
        &self.0
    }
}

/// Every metric of the daemon, behind [`Metrics`].
pub struct Series {
    registry: Registry,
    /// The process collector's standard `process_*` metrics (CPU, RSS, open files, threads),
    /// exported without the `mkb_` prefix so that dashboards made for any process read them.
    process: Registry,
    pipelines_running: IntGaugeVec,
    pipeline_state: StateGauge,
    connect_failures: IntCounterVec,
    events_read: IntCounterVec,
    bytes_read: IntCounterVec,
    records_produced: IntCounterVec,
    bytes_produced: IntCounterVec,
    produce_errors: IntCounterVec,
    produce_retries: IntCounterVec,
    oversize_events: IntCounterVec,
    events_skipped: IntCounterVec,
    copied_documents: IntCounterVec,
    delivery_duration: HistogramVec,
    handover_duration: HistogramVec,
    ack_recording_duration: HistogramVec,
    event_lag: HistogramVec,
    source_lag: StateGauge,
    checkpoint_age: StateGauge,
    checkpoint_times: Arc<Mutex<HashMap<(String, String), Instant>>>,
    stalled_readers: StateGauge,
    registry_held_back: StateGauge,
    owned_slots: StateGauge,
    fenced_slots: StateGauge,
    config_mismatch: StateGauge,
    rebalances: IntCounterVec,
    dead_letters: IntCounterVec,
    topic_creations: IntCounterVec,
    checkpoints_written: IntCounterVec,
    checkpoint_load_records: StateGauge,
    checkpoint_load_duration: HistogramVec,
    actor_restarts: IntCounterVec,
    pipeline_failures: IntCounterVec,
    resume_gaps: IntCounterVec,
    records_consumed: IntCounterVec,
    bytes_consumed: IntCounterVec,
    sink_writes: IntCounterVec,
    bytes_written: IntCounterVec,
    write_errors: IntCounterVec,
    records_skipped: IntCounterVec,
    stale_writes_skipped: IntCounterVec,
    renamed_fields_dropped: IntCounterVec,
    assignments_lost: IntCounterVec,
    write_retries: IntCounterVec,
    chunk_sets_abandoned: IntCounterVec,
    batch_size: HistogramVec,
    batch_duration: HistogramVec,
    consumer_lag: StateGauge,
    stalled_partitions: StateGauge,
    copy_total: StateGauge,
    copy_progress: StateGauge,
    copy_eta: StateGauge,
    snapshot_documents: IntCounterVec,
    snapshot_chunks: IntCounterVec,
    snapshots_running: StateGauge,
    snapshot_remaining: StateGauge,
    catch_up_eta: StateGauge,
    mailbox_depth: IntGaugeVec,
    budget_bytes: IntGaugeVec,
    budget_held: IntGaugeVec,
    budget_waits: IntCounterVec,
    config_reloads: IntCounterVec,
}

struct Builder {
    registry: Registry,
}

impl Builder {
    fn register<C: prometheus::core::Collector + Clone + 'static>(
        &self,
        collector: C,
    ) -> Result<C, prometheus::Error> {
        self.registry.register(Box::new(collector.clone()))?;
        Ok(collector)
    }

    fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, prometheus::Error> {
        self.register(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    fn int_gauge(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, prometheus::Error> {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    fn state_gauge(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<StateGauge, prometheus::Error> {
        Ok(StateGauge {
            gauge: self.register(GaugeVec::new(Opts::new(name, help), labels)?)?,
            values: Arc::default(),
        })
    }

    fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> Result<HistogramVec, prometheus::Error> {
        self.register(HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets),
            labels,
        )?)
    }
}

/// Buckets of durations in seconds: 1 ms to about 33 s.
fn seconds_buckets() -> Result<Vec<f64>, prometheus::Error> {
    prometheus::exponential_buckets(0.001, 2.0, 16)
}

/// Buckets of batch sizes in records: 1 to about 131,000.
fn records_buckets() -> Result<Vec<f64>, prometheus::Error> {
    prometheus::exponential_buckets(1.0, 2.0, 18)
}

/// A registry holding the collector of this process's `process_*` metrics.
fn process_registry() -> Result<Registry, prometheus::Error> {
    let registry = Registry::new();
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(registry)
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let b = Builder {
            registry: Registry::new_custom(Some(PREFIX.to_owned()), None)?,
        };
        let build_info = b.int_gauge(
            "build_info",
            "Version of the running daemon; always 1.",
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(Self(Arc::new(Series {
            pipelines_running: b.int_gauge(
                "pipelines_running",
                "Pipelines currently running, by kind (`source`, `sink`).",
                &["kind"],
            )?,
            pipeline_state: b.state_gauge(
                "pipeline_state",
                "Each pipeline's state: 1 for the one it is in (`running`, `paused`, `restarting`, `failed`, `stopped`), 0 for the others.",
                &["pipeline", "state"],
            )?,
            connect_failures: b.counter(
                "connect_failures_total",
                "Failed attempts to reach a service (`kafka`, `mongodb`), at start-up and by the readiness probes.",
                &["service"],
            )?,
            events_read: b.counter(
                "source_events_read_total",
                "Change events read from MongoDB, by pipeline and namespace.",
                &["pipeline", "namespace"],
            )?,
            bytes_read: b.counter(
                "source_bytes_read_total",
                "Bytes read from MongoDB by source pipelines (change events and copied documents, as BSON), by pipeline and namespace.",
                &["pipeline", "namespace"],
            )?,
            records_produced: b.counter(
                "source_records_produced_total",
                "Records handed to Kafka by source pipelines, by pipeline and topic.",
                &["pipeline", "topic"],
            )?,
            bytes_produced: b.counter(
                "source_bytes_produced_total",
                "Bytes (key and value) of the records handed to Kafka by source pipelines, by pipeline and topic.",
                &["pipeline", "topic"],
            )?,
            produce_errors: b.counter(
                "source_produce_errors_total",
                "Records Kafka refused or did not acknowledge, by pipeline and reason (`too_large`, `refused`, `delivery`).",
                &["pipeline", "reason"],
            )?,
            produce_retries: b.counter(
                "source_produce_retries_total",
                "Times a record waited because librdkafka's queue was full (backpressure from Kafka), by pipeline.",
                &["pipeline"],
            )?,
            oversize_events: b.counter(
                "source_oversize_events_total",
                "Events larger than the producer's `message.max.bytes`, by pipeline and what was done (`split`, `skipped`, `dead_lettered`, `failed`).",
                &["pipeline", "action"],
            )?,
            events_skipped: b.counter(
                "source_events_skipped_total",
                "Change events published as nothing, by pipeline and reason (`no_document`: with `publish_full_document_only`, an event without a document, such as a delete without `tombstone_on_delete`).",
                &["pipeline", "reason"],
            )?,
            copied_documents: b.counter(
                "source_copied_documents_total",
                "Existing documents published by `copy_existing`, by pipeline and namespace.",
                &["pipeline", "namespace"],
            )?,
            delivery_duration: b.histogram(
                "source_delivery_duration_seconds",
                "Time from handing a record to librdkafka to Kafka's acknowledgement, by pipeline.",
                &["pipeline"],
                seconds_buckets()?,
            )?,
            handover_duration: b.histogram(
                "source_handover_duration_seconds",
                "Time from reading a change event to librdkafka holding its record (the reader's queue and the producer's mailbox), for the oldest event of each hand-over, by pipeline.",
                &["pipeline"],
                seconds_buckets()?,
            )?,
            ack_recording_duration: b.histogram(
                "source_ack_recording_duration_seconds",
                "Time from Kafka's acknowledgement of a batch's records (its last delivery report) to the producer recording it in its checkpoint ledger (at-least-once pipelines), by pipeline.",
                &["pipeline"],
                seconds_buckets()?,
            )?,
            event_lag: b.histogram(
                "source_event_lag_seconds",
                "Age of change events when read: the time since the change's cluster time, by pipeline.",
                &["pipeline"],
                seconds_buckets()?,
            )?,
            source_lag: b.state_gauge(
                "source_lag_seconds",
                "Age of the newest change event read by each reader (0 when its stream is caught up), by pipeline and namespace.",
                &["pipeline", "namespace"],
            )?,
            checkpoint_age: b.state_gauge(
                "source_checkpoint_age_seconds",
                "Time since each reader's checkpoint was last written, by pipeline and namespace.",
                &["pipeline", "namespace"],
            )?,
            checkpoint_times: Arc::default(),
            stalled_readers: b.state_gauge(
                "source_stalled_readers",
                "Readers whose change stream has not advanced for longer than `stall_timeout`, by pipeline.",
                &["pipeline"],
            )?,
            owned_slots: b.state_gauge(
                "source_owned_slots",
                "Slots of a source pipeline (partitions of its checkpoint topic) this daemon owns and runs the readers of, by pipeline.",
                &["pipeline"],
            )?,
            fenced_slots: b.state_gauge(
                "source_fenced_slots",
                "Slots of a source pipeline the group assigns to this daemon whose producer was fenced (another producer initialised its transactional.id, or the broker aborted its transaction) and that do not run again yet: their changes wait, by pipeline.",
                &["pipeline"],
            )?,
            config_mismatch: b.state_gauge(
                "source_config_mismatch",
                "1 when daemons in the group of a source pipeline run it with another configuration than this daemon (fingerprints differ), else 0, by pipeline.",
                &["pipeline"],
            )?,
            rebalances: b.counter(
                "source_rebalances_total",
                "Times the consumer group moved slots of a source pipeline to or from this daemon, by pipeline.",
                &["pipeline"],
            )?,
            dead_letters: b.counter(
                "dead_letter_records_total",
                "Records sent to a dead letter topic, by pipeline and reason.",
                &["pipeline", "reason"],
            )?,
            topic_creations: b.counter(
                "source_topic_creations_total",
                "Topics a source pipeline with `create_topics` asked the broker to create before their first record, by pipeline and outcome (`created`, `existed`, `refused`: the pipeline stopped, `unavailable`: not answered, the pipeline restarts).",
                &["pipeline", "outcome"],
            )?,
            checkpoints_written: b.counter(
                "source_checkpoints_written_total",
                "Resume tokens written to the checkpoint topic, by pipeline and namespace.",
                &["pipeline", "namespace"],
            )?,
            checkpoint_load_records: b.state_gauge(
                "source_checkpoint_load_records",
                "Records of the checkpoint topic the last load of a source pipeline's checkpoints read (every pipeline's sharing the topic; compaction bounds it), by pipeline.",
                &["pipeline"],
            )?,
            checkpoint_load_duration: b.histogram(
                "source_checkpoint_load_duration_seconds",
                "Time a load of a source pipeline's checkpoints took (at every start and rebalance), by pipeline.",
                &["pipeline"],
                vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0],
            )?,
            actor_restarts: b.counter(
                "actor_restarts_total",
                "Actors restarted by their supervisor, by pipeline, actor kind and cause.",
                &["pipeline", "actor", "reason"],
            )?,
            pipeline_failures: b.counter(
                "pipeline_failures_total",
                "Pipelines stopped by an error no restart can fix, by pipeline, kind and cause.",
                &["pipeline", "kind", "reason"],
            )?,
            resume_gaps: b.counter(
                "source_resume_gaps_total",
                "Times a reader's resume point was gone from the oplog and it went on from elsewhere (`on_lost_resume_point`), by pipeline and namespace.",
                &["pipeline", "namespace"],
            )?,
            records_consumed: b.counter(
                "sink_records_consumed_total",
                "Records read from Kafka by sink pipelines, by pipeline and topic.",
                &["pipeline", "topic"],
            )?,
            bytes_consumed: b.counter(
                "sink_bytes_consumed_total",
                "Bytes (key and value) of the records read from Kafka by sink pipelines, by pipeline and topic.",
                &["pipeline", "topic"],
            )?,
            bytes_written: b.counter(
                "sink_bytes_written_total",
                "Bytes of the write statements MongoDB acknowledged (documents, filters and updates, as BSON), by pipeline.",
                &["pipeline"],
            )?,
            sink_writes: b.counter(
                "sink_writes_total",
                "Writes MongoDB acknowledged, by pipeline and operation (`insert`, `replace`, `update`, `delete`).",
                &["pipeline", "operation"],
            )?,
            write_errors: b.counter(
                "sink_record_errors_total",
                "Records that could not be written, by pipeline and stage (`decode`, `namespace`, `id`, `process`, `cdc`, `write_model`, `size`, `write`); dead-lettered or stopping the pipeline.",
                &["pipeline", "stage"],
            )?,
            records_skipped: b.counter(
                "sink_records_skipped_total",
                "Records that write nothing by design (tombstones without `delete_on_null_values`, change events without a document effect), by pipeline.",
                &["pipeline"],
            )?,
            stale_writes_skipped: b.counter(
                "sink_stale_writes_skipped_total",
                "Writes the stale write guard skipped because the stored document holds a newer version (`stale_write_guard`), by pipeline.",
                &["pipeline"],
            )?,
            renamed_fields_dropped: b.counter(
                "sink_renamed_fields_dropped_total",
                "Fields a rename dropped because their document already had the new name (the MongoDB Kafka Connector's rule), by pipeline.",
                &["pipeline"],
            )?,
            assignments_lost: b.counter(
                "sink_assignments_lost_total",
                "Partitions whose assignment was lost (the consumer group session expired: the process was paused or cut off past `session.timeout.ms`); their writers were fenced at once, by pipeline.",
                &["pipeline"],
            )?,
            write_retries: b.counter(
                "sink_write_retries_total",
                "Bulk writes retried after a failure that may pass (network, step-down), by pipeline.",
                &["pipeline"],
            )?,
            chunk_sets_abandoned: b.counter(
                "sink_chunk_sets_abandoned_total",
                "Split events given up before their last chunk (their producer restarted and sent the event again, a chunk was missing, or a writer held more unfinished events than its byte budget), by pipeline.",
                &["pipeline"],
            )?,
            batch_size: b.histogram(
                "sink_batch_size_records",
                "Records per bulk write, by pipeline.",
                &["pipeline"],
                records_buckets()?,
            )?,
            batch_duration: b.histogram(
                "sink_batch_duration_seconds",
                "Time to write a batch to MongoDB and commit its offset, retries included, by pipeline.",
                &["pipeline"],
                seconds_buckets()?,
            )?,
            consumer_lag: b.state_gauge(
                "sink_consumer_lag_records",
                "Records between a partition's committed offset and its end, by pipeline, topic and partition (from librdkafka's statistics).",
                &["pipeline", "topic", "partition"],
            )?,
            registry_held_back: b.state_gauge(
                "schema_registry_held_back",
                "1 while a pipeline holds its records back because its schema registry does not answer or refuses it, by pipeline and reason (`unreachable`, `unauthorized`, `forbidden`, `not_found`, `unavailable`).",
                &["pipeline", "reason"],
            )?,
            stalled_partitions: b.state_gauge(
                "sink_stalled_partitions",
                "Partitions with records waiting (queued or not fetched yet) while none reached their writer for longer than the stall limit, by pipeline.",
                &["pipeline"],
            )?,
            copy_total: b.state_gauge(
                "source_copy_total_documents",
                "Documents a `copy_existing` has to copy, by pipeline and namespace: the collection's estimated count when the copy started.",
                &["pipeline", "namespace"],
            )?,
            copy_progress: b.state_gauge(
                "source_copy_progress_ratio",
                "How far a `copy_existing` has come, 0 to 1 (documents copied over the estimated count), by pipeline and namespace.",
                &["pipeline", "namespace"],
            )?,
            copy_eta: b.state_gauge(
                "source_copy_remaining_seconds",
                "Estimated time left of a `copy_existing` at the rate of the last minute, by pipeline and namespace; absent while there is no rate.",
                &["pipeline", "namespace"],
            )?,
            snapshot_documents: b.counter(
                "source_snapshot_documents_total",
                "Documents published by snapshots on demand, by pipeline and namespace.",
                &["pipeline", "namespace"],
            )?,
            snapshot_chunks: b.counter(
                "source_snapshot_chunks_total",
                "`_id` chunks of snapshots on demand published (each of up to `snapshot_chunk_size` documents), by pipeline and namespace.",
                &["pipeline", "namespace"],
            )?,
            snapshots_running: b.state_gauge(
                "source_snapshots_running",
                "Snapshots on demand running (started and not finished nor cancelled), by pipeline.",
                &["pipeline"],
            )?,
            snapshot_remaining: b.state_gauge(
                "source_snapshot_remaining_documents",
                "Documents a running snapshot on demand has left to copy by the collection's estimated count when it started (0 once it ended, and for a watched collection before any), by pipeline and namespace; absent while the count is unknown.",
                &["pipeline", "namespace"],
            )?,
            catch_up_eta: b.state_gauge(
                "sink_catch_up_remaining_seconds",
                "Estimated time until a sink's lag is 0, at the rate its lag fell over the last minute; 0 when caught up, absent while the lag does not fall.",
                &["pipeline"],
            )?,
            mailbox_depth: b.int_gauge(
                "mailbox_depth_messages",
                "Messages waiting in actors' bounded mailboxes, by pipeline and actor kind (`record_producer`, `partition_writer`).",
                &["pipeline", "actor"],
            )?,
            budget_bytes: b.int_gauge(
                "memory_budget_bytes",
                "The `memory_budget` of each pipeline: bytes of records it may hold at once.",
                &["pipeline"],
            )?,
            budget_held: b.int_gauge(
                "memory_budget_held_bytes",
                "Bytes of records each pipeline holds now, counted in its `memory_budget` (a source's readers until librdkafka took the records, a sink's partitions until MongoDB acknowledged them).",
                &["pipeline"],
            )?,
            budget_waits: b.counter(
                "memory_budget_waits_total",
                "Times a reader of a pipeline waited for room in its `memory_budget` (the records it holds are not taken downstream fast enough), by pipeline.",
                &["pipeline"],
            )?,
            config_reloads: b.counter(
                "config_reloads_total",
                "Configuration reloads (SIGHUP), by result (`applied`, `unchanged`, `rejected`).",
                &["result"],
            )?,
            registry: b.registry,
            process: process_registry()?,
        }))
        .with_known_series())
    }

    /// Creates the series whose labels are known from the start, at 0.
    fn with_known_series(self) -> Self {
        for service in ["kafka", "mongodb"] {
            self.connect_failures.with_label_values(&[service]);
        }
        for result in ["applied", "unchanged", "rejected"] {
            self.config_reloads.with_label_values(&[result]);
        }
        self
    }

    /// Records that a pipeline of `kind` (`source`, `sink`) started.
    pub fn pipeline_started(&self, kind: &str) {
        self.pipelines_running.with_label_values(&[kind]).inc();
    }

    /// Records that `pipeline` is in `state`, one of `states` (the others are 0).
    pub fn pipeline_state(&self, pipeline: &str, state: &str, states: &[&str]) {
        for each in states {
            self.pipeline_state
                .set(&[pipeline, each], if *each == state { 1.0 } else { 0.0 });
        }
    }

    /// Drops the `mkb_pipeline_state` series of a removed pipeline.
    pub fn forget_pipeline_state(&self, pipeline: &str) {
        self.pipeline_state.forget_pipeline(pipeline);
    }

    /// Records that a pipeline of `kind` stopped.
    pub fn pipeline_stopped(&self, kind: &str) {
        self.pipelines_running.with_label_values(&[kind]).dec();
    }

    /// Creates the series of a source pipeline whose labels are known in advance, at 0, so
    /// that dashboards show 0 rather than no data until something happens.
    pub fn source_pipeline_series(&self, pipeline: &str) {
        for reason in ["too_large", "refused", "delivery"] {
            self.produce_errors.with_label_values(&[pipeline, reason]);
        }
        self.produce_retries.with_label_values(&[pipeline]);
        self.rebalances.with_label_values(&[pipeline]);
        for action in ["split", "skipped", "dead_lettered", "failed", "fragmented"] {
            self.oversize_events.with_label_values(&[pipeline, action]);
        }
        for reason in ["too_large", "format"] {
            self.dead_letters.with_label_values(&[pipeline, reason]);
        }
        self.events_skipped
            .with_label_values(&[pipeline, SKIPPED_NO_DOCUMENT]);
        self.delivery_duration.with_label_values(&[pipeline]);
        self.ack_recording_duration.with_label_values(&[pipeline]);
        self.event_lag.with_label_values(&[pipeline]);
        self.mailbox_depth
            .with_label_values(&[pipeline, MAILBOX_RECORD_PRODUCER]);
    }

    /// Creates the series of one reader of a source pipeline, at 0.
    pub fn reader_series(&self, pipeline: &str, namespace: &str) {
        self.events_read.with_label_values(&[pipeline, namespace]);
        self.bytes_read.with_label_values(&[pipeline, namespace]);
        self.resume_gaps.with_label_values(&[pipeline, namespace]);
    }

    /// Creates the series of a sink pipeline whose labels are known in advance, at 0.
    pub fn sink_pipeline_series(&self, pipeline: &str, stages: &[&str]) {
        self.bytes_written.with_label_values(&[pipeline]);
        self.records_skipped.with_label_values(&[pipeline]);
        self.stale_writes_skipped.with_label_values(&[pipeline]);
        self.renamed_fields_dropped.with_label_values(&[pipeline]);
        self.assignments_lost.with_label_values(&[pipeline]);
        self.write_retries.with_label_values(&[pipeline]);
        self.chunk_sets_abandoned.with_label_values(&[pipeline]);
        for stage in stages {
            self.write_errors.with_label_values(&[pipeline, stage]);
            self.dead_letters.with_label_values(&[pipeline, stage]);
        }
        self.batch_size.with_label_values(&[pipeline]);
        self.batch_duration.with_label_values(&[pipeline]);
        self.mailbox_depth
            .with_label_values(&[pipeline, MAILBOX_PARTITION_WRITER]);
    }

    /// Drops the state series (lags, ages, depths) of a pipeline that was removed.
    pub fn forget_pipeline(&self, pipeline: &str) {
        for gauge in [
            &self.source_lag,
            &self.checkpoint_age,
            &self.checkpoint_load_records,
            &self.stalled_readers,
            &self.registry_held_back,
            &self.owned_slots,
            &self.fenced_slots,
            &self.config_mismatch,
            &self.consumer_lag,
            &self.stalled_partitions,
            &self.copy_total,
            &self.copy_progress,
            &self.copy_eta,
            &self.snapshots_running,
            &self.snapshot_remaining,
            &self.catch_up_eta,
        ] {
            gauge.forget_pipeline(pipeline);
        }
        self.checkpoint_times_lock()
            .retain(|(p, _), _| p != pipeline);
        for actor in [MAILBOX_RECORD_PRODUCER, MAILBOX_PARTITION_WRITER] {
            let _ = self.mailbox_depth.remove_label_values(&[pipeline, actor]);
        }
    }

    /// Records a failed attempt to reach `service` (`kafka`, `mongodb`).
    pub fn connect_failed(&self, service: &str) {
        self.connect_failures.with_label_values(&[service]).inc();
    }

    /// Records a change event read by a source pipeline, `lag` after its cluster time.
    pub fn event_read(&self, pipeline: &str, namespace: &str, lag: Option<Duration>) {
        self.events_read
            .with_label_values(&[pipeline, namespace])
            .inc();
        if let Some(lag) = lag {
            self.event_lag
                .with_label_values(&[pipeline])
                .observe(lag.as_secs_f64());
            self.source_lag
                .set(&[pipeline, namespace], lag.as_secs_f64());
        }
    }

    /// Records that a reader's change stream is caught up (an empty batch).
    pub fn source_caught_up(&self, pipeline: &str, namespace: &str) {
        self.source_lag.set(&[pipeline, namespace], 0.0);
    }

    /// Records `bytes` read from MongoDB by a source pipeline: a change event or a copied
    /// document, as BSON.
    pub fn source_bytes_read(&self, pipeline: &str, namespace: &str, bytes: usize) {
        self.bytes_read
            .with_label_values(&[pipeline, namespace])
            .inc_by(bytes as u64);
    }

    /// Records a record of `bytes` (key and value) handed to Kafka by a source pipeline.
    pub fn record_produced(&self, pipeline: &str, topic: &str, bytes: usize) {
        self.records_produced
            .with_label_values(&[pipeline, topic])
            .inc();
        self.bytes_produced
            .with_label_values(&[pipeline, topic])
            .inc_by(bytes as u64);
    }

    /// Records a record Kafka refused or did not acknowledge.
    pub fn produce_error(&self, pipeline: &str, reason: &str) {
        self.produce_errors
            .with_label_values(&[pipeline, reason])
            .inc();
    }

    /// Records a wait for room in librdkafka's queue.
    pub fn produce_retried(&self, pipeline: &str) {
        self.produce_retries.with_label_values(&[pipeline]).inc();
    }

    /// Records a change event published as nothing, and why (`SKIPPED_*`).
    pub fn event_skipped(&self, pipeline: &str, reason: &str) {
        self.events_skipped
            .with_label_values(&[pipeline, reason])
            .inc();
    }

    /// Records an event too large for Kafka and what was done with it.
    pub fn oversize_event(&self, pipeline: &str, action: &str) {
        self.oversize_events
            .with_label_values(&[pipeline, action])
            .inc();
    }

    /// Records a document published by `copy_existing`.
    pub fn document_copied(&self, pipeline: &str, namespace: &str) {
        self.copied_documents
            .with_label_values(&[pipeline, namespace])
            .inc();
    }

    /// Records how long Kafka took to acknowledge a record.
    pub fn delivered(&self, pipeline: &str, took: Duration) {
        self.delivery_duration
            .with_label_values(&[pipeline])
            .observe(took.as_secs_f64());
    }

    /// Records how long Kafka's answer for a batch waited for the producer to record it.
    pub fn acknowledgement_taken(&self, pipeline: &str, waited: Duration) {
        self.ack_recording_duration
            .with_label_values(&[pipeline])
            .observe(waited.as_secs_f64());
    }

    /// Records how long the oldest event of a hand-over waited, from its reading to
    /// librdkafka holding its record.
    pub fn handed_over(&self, pipeline: &str, took: Duration) {
        self.handover_duration
            .with_label_values(&[pipeline])
            .observe(took.as_secs_f64());
    }

    /// Records a record sent to the dead letter topic for `reason` (a bounded word).
    pub fn dead_lettered(&self, pipeline: &str, reason: &str) {
        self.dead_letters
            .with_label_values(&[pipeline, reason])
            .inc();
    }

    fn checkpoint_times_lock(&self) -> MutexGuard<'_, HashMap<(String, String), Instant>> {
        self.checkpoint_times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Records a checkpoint written.
    pub fn checkpoint_written(&self, pipeline: &str, namespace: &str) {
        self.checkpoints_written
            .with_label_values(&[pipeline, namespace])
            .inc();
        self.checkpoint_times_lock()
            .insert((pipeline.to_owned(), namespace.to_owned()), Instant::now());
    }

    /// Records that a reader's stored checkpoint is still its position (it did not move,
    /// so none was written): its age starts again.
    pub fn checkpoint_current(&self, pipeline: &str, namespace: &str) {
        self.checkpoint_times_lock()
            .insert((pipeline.to_owned(), namespace.to_owned()), Instant::now());
    }

    /// Records a load of `pipeline`'s checkpoints: how many records of the checkpoint topic
    /// it read, and how long it took.
    pub fn checkpoints_loaded(&self, pipeline: &str, records: u64, took: Duration) {
        // Precise below 2^53 records, far beyond any topic.
        #[allow(clippy::cast_precision_loss)]
        self.checkpoint_load_records
            .set(&[pipeline], records as f64);
        self.checkpoint_load_duration
            .with_label_values(&[pipeline])
            .observe(took.as_secs_f64());
    }

    /// Sets how many readers of `pipeline` are stalled.
    pub fn stalled_readers(&self, pipeline: &str, count: usize) {
        self.stalled_readers.set(&[pipeline], count as f64);
    }

    /// Sets why `pipeline` holds back for its schema registry (`None`: it does not).
    pub fn registry_held_back(&self, pipeline: &str, reason: Option<&str>) {
        self.registry_held_back.forget_pipeline(pipeline);
        if let Some(reason) = reason {
            self.registry_held_back.set(&[pipeline, reason], 1.0);
        }
    }

    /// Counts a move of slots of the source `pipeline` to or from this daemon.
    pub fn rebalanced(&self, pipeline: &str) {
        self.rebalances.with_label_values(&[pipeline]).inc();
    }

    /// Sets how many slots of the source `pipeline` this daemon owns.
    pub fn owned_slots(&self, pipeline: &str, count: usize) {
        self.owned_slots.set(&[pipeline], count as f64);
    }

    /// Sets how many slots of the source `pipeline` wait to be taken again after a fence.
    pub fn fenced_slots(&self, pipeline: &str, count: usize) {
        self.fenced_slots.set(&[pipeline], count as f64);
    }

    /// Sets whether daemons in the group of the source `pipeline` run another configuration.
    pub fn config_mismatch(&self, pipeline: &str, mismatch: bool) {
        self.config_mismatch
            .set(&[pipeline], if mismatch { 1.0 } else { 0.0 });
    }

    /// Records a restart of an `actor` kind of `pipeline` because of `reason` (a bounded
    /// word, never raw error text).
    pub fn actor_restarted(&self, pipeline: &str, actor: &str, reason: &str) {
        self.actor_restarts
            .with_label_values(&[pipeline, actor, reason])
            .inc();
    }

    /// Records the outcome of a topic's creation by `create_topics`.
    pub fn topic_creation(&self, pipeline: &str, outcome: &str) {
        self.topic_creations
            .with_label_values(&[pipeline, outcome])
            .inc();
    }

    /// Creates the series of a topic creation outcome at 0.
    pub fn topic_creation_series(&self, pipeline: &str, outcome: &str) {
        self.topic_creations.with_label_values(&[pipeline, outcome]);
    }

    /// Records a pipeline stopped for good.
    pub fn pipeline_failed(&self, pipeline: &str, kind: &str, reason: &str) {
        self.pipeline_failures
            .with_label_values(&[pipeline, kind, reason])
            .inc();
    }

    /// Records a lost resume point skipped over.
    pub fn resume_gap(&self, pipeline: &str, namespace: &str) {
        self.resume_gaps
            .with_label_values(&[pipeline, namespace])
            .inc();
    }

    /// Records `n` records of `bytes` (keys and values) read by a sink pipeline from `topic`.
    pub fn records_consumed(&self, pipeline: &str, topic: &str, n: u64, bytes: u64) {
        self.records_consumed
            .with_label_values(&[pipeline, topic])
            .inc_by(n);
        self.bytes_consumed
            .with_label_values(&[pipeline, topic])
            .inc_by(bytes);
    }

    /// Records `bytes` of write statements acknowledged by MongoDB.
    pub fn sink_bytes_written(&self, pipeline: &str, bytes: u64) {
        self.bytes_written
            .with_label_values(&[pipeline])
            .inc_by(bytes);
    }

    /// Records `n` writes of `operation` acknowledged by MongoDB.
    pub fn sink_written(&self, pipeline: &str, operation: &str, n: u64) {
        self.sink_writes
            .with_label_values(&[pipeline, operation])
            .inc_by(n);
    }

    /// Records a record that could not be written, at `stage`.
    pub fn record_error(&self, pipeline: &str, stage: &str) {
        self.write_errors
            .with_label_values(&[pipeline, stage])
            .inc();
    }

    /// Records `n` writes skipped by the stale write guard.
    pub fn stale_writes_skipped(&self, pipeline: &str, n: u64) {
        self.stale_writes_skipped
            .with_label_values(&[pipeline])
            .inc_by(n);
    }

    /// Records `n` fields dropped by renames to a name already taken.
    pub fn renamed_fields_dropped(&self, pipeline: &str, n: u64) {
        self.renamed_fields_dropped
            .with_label_values(&[pipeline])
            .inc_by(n);
    }

    /// Records `n` partitions whose assignment was lost.
    pub fn assignments_lost(&self, pipeline: &str, n: u64) {
        self.assignments_lost
            .with_label_values(&[pipeline])
            .inc_by(n);
    }

    /// Records a record that writes nothing by design.
    pub fn record_skipped(&self, pipeline: &str) {
        self.records_skipped.with_label_values(&[pipeline]).inc();
    }

    /// Records a bulk write retried.
    pub fn write_retried(&self, pipeline: &str) {
        self.write_retries.with_label_values(&[pipeline]).inc();
    }

    /// Records an incomplete split event given up.
    pub fn chunk_set_abandoned(&self, pipeline: &str) {
        self.chunk_sets_abandoned
            .with_label_values(&[pipeline])
            .inc();
    }

    /// Records a batch of `records` written in `took`.
    pub fn batch_written(&self, pipeline: &str, records: usize, took: Duration) {
        self.batch_size
            .with_label_values(&[pipeline])
            .observe(records as f64);
        self.batch_duration
            .with_label_values(&[pipeline])
            .observe(took.as_secs_f64());
    }

    /// Sets how far the copy of `namespace` has come.
    pub fn copy_progress(&self, pipeline: &str, namespace: &str, report: &ProgressReport) {
        let labels = [pipeline, namespace];
        if let Some(total) = report.total {
            self.copy_total.set(&labels, total as f64);
        }
        if let Some(ratio) = report.ratio {
            self.copy_progress.set(&labels, ratio);
        }
        match report.eta_seconds {
            Some(eta) => self.copy_eta.set(&labels, eta),
            None => self.copy_eta.remove(&labels),
        }
    }

    /// Records a chunk of `documents` documents of a snapshot on demand of `namespace`
    /// handed over for publishing.
    pub fn snapshot_chunk(&self, pipeline: &str, namespace: &str, documents: u64) {
        self.snapshot_chunks
            .with_label_values(&[pipeline, namespace])
            .inc();
        self.snapshot_documents
            .with_label_values(&[pipeline, namespace])
            .inc_by(documents);
    }

    /// Creates the snapshot series of a collection at 0 (nothing copied, nothing left).
    pub fn snapshot_series(&self, pipeline: &str, namespace: &str) {
        self.snapshot_chunks
            .with_label_values(&[pipeline, namespace]);
        self.snapshot_documents
            .with_label_values(&[pipeline, namespace]);
        self.snapshot_remaining.set(&[pipeline, namespace], 0.0);
    }

    /// Sets the snapshots on demand running in `pipeline`.
    pub fn snapshots_running(&self, pipeline: &str, running: usize) {
        self.snapshots_running.set(&[pipeline], running as f64);
    }

    /// Sets the documents the snapshot of `namespace` has left by its estimate (0 once it
    /// ended); `None` (no estimate) removes the series.
    pub fn snapshot_remaining(&self, pipeline: &str, namespace: &str, remaining: Option<u64>) {
        let labels = [pipeline, namespace];
        match remaining {
            Some(left) => self.snapshot_remaining.set(&labels, left as f64),
            None => self.snapshot_remaining.remove(&labels),
        }
    }

    /// Sets when the sink `pipeline` will have caught up.
    pub fn catch_up(&self, pipeline: &str, report: &CatchUpReport) {
        match report.eta_seconds {
            Some(eta) => self.catch_up_eta.set(&[pipeline], eta),
            None => self.catch_up_eta.remove(&[pipeline]),
        }
    }

    /// Sets a partition's consumer lag.
    pub fn consumer_lag(&self, pipeline: &str, topic: &str, partition: i32, records: i64) {
        self.consumer_lag.set(
            &[pipeline, topic, &partition.to_string()],
            records.max(0) as f64,
        );
    }

    /// Drops the consumer lag series of `pipeline` (its partitions were revoked).
    pub fn forget_consumer_lag(&self, pipeline: &str) {
        self.consumer_lag.forget_pipeline(pipeline);
    }

    /// Sets how many partitions of sink `pipeline` are stalled.
    pub fn stalled_partitions(&self, pipeline: &str, count: usize) {
        self.stalled_partitions.set(&[pipeline], count as f64);
    }

    /// The depth of `actor`'s mailboxes in `pipeline`, to move without a lookup per message.
    pub fn mailbox_gauge(&self, pipeline: &str, actor: &str) -> IntGauge {
        self.mailbox_depth.with_label_values(&[pipeline, actor])
    }

    /// Records a message entering (`delta` 1) or leaving (-1) an actor's mailbox.
    pub fn mailbox(&self, pipeline: &str, actor: &str, delta: i64) {
        self.mailbox_gauge(pipeline, actor).add(delta);
    }

    /// Sets the `memory_budget` of `pipeline`, in bytes, and creates its series at 0.
    pub fn budget_size(&self, pipeline: &str, bytes: u64) {
        self.budget_bytes
            .with_label_values(&[pipeline])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.budget_held.with_label_values(&[pipeline]);
        self.budget_waits.with_label_values(&[pipeline]);
    }

    /// Records bytes taken (`delta` > 0) or released in the `memory_budget` of `pipeline`.
    pub fn budget_held(&self, pipeline: &str, delta: i64) {
        self.budget_held.with_label_values(&[pipeline]).add(delta);
    }

    /// Records a wait for room in the `memory_budget` of `pipeline`.
    pub fn budget_waited(&self, pipeline: &str) {
        self.budget_waits.with_label_values(&[pipeline]).inc();
    }

    /// Records a configuration reload and its `result`.
    pub fn config_reloaded(&self, result: &str) {
        self.config_reloads.with_label_values(&[result]).inc();
    }

    /// The registry in Prometheus' text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        {
            let times = self.checkpoint_times_lock();
            for ((pipeline, namespace), at) in times.iter() {
                self.checkpoint_age
                    .set(&[pipeline, namespace], at.elapsed().as_secs_f64());
            }
        }
        for gauge in [
            &self.source_lag,
            &self.checkpoint_age,
            &self.checkpoint_load_records,
            &self.stalled_readers,
            &self.registry_held_back,
            &self.owned_slots,
            &self.fenced_slots,
            &self.config_mismatch,
            &self.consumer_lag,
            &self.stalled_partitions,
            &self.copy_total,
            &self.copy_progress,
            &self.copy_eta,
            &self.snapshots_running,
            &self.snapshot_remaining,
            &self.catch_up_eta,
            &self.pipeline_state,
        ] {
            gauge.publish();
        }
        let mut buf = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        TextEncoder::new().encode(&families, &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_process_metrics_without_the_prefix() -> Result<(), prometheus::Error> {
        let text = Metrics::new()?.render()?;
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_threads",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing:\n{text}"
            );
        }
        Ok(())
    }

    #[test]
    fn renders_build_info_and_counts_pipelines() -> Result<(), prometheus::Error> {
        let m = Metrics::new()?;
        m.pipeline_started("source");
        m.pipeline_started("source");
        m.pipeline_stopped("source");
        m.connect_failed("mongodb");
        let text = m.render()?;
        assert!(text.contains("mkb_build_info{version=\""), "{text}");
        assert!(
            text.contains("mkb_pipelines_running{kind=\"source\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mkb_connect_failures_total{service=\"mongodb\"} 1"),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn state_gauges_are_rendered_and_forgotten_with_their_pipeline() -> Result<(), prometheus::Error>
    {
        let m = Metrics::new()?;
        m.event_read("a", "db.c", Some(Duration::from_millis(1500)));
        m.checkpoint_written("a", "db.c");
        m.consumer_lag("b", "t", 3, 42);
        m.mailbox("b", MAILBOX_PARTITION_WRITER, 2);
        let text = m.render()?;
        assert!(
            text.contains("mkb_source_lag_seconds{namespace=\"db.c\",pipeline=\"a\"} 1.5"),
            "{text}"
        );
        assert!(
            text.contains("mkb_source_checkpoint_age_seconds{namespace=\"db.c\",pipeline=\"a\"}"),
            "{text}"
        );
        assert!(
            text.contains(
                "mkb_sink_consumer_lag_records{partition=\"3\",pipeline=\"b\",topic=\"t\"} 42"
            ),
            "{text}"
        );
        assert!(
            text.contains("mkb_source_event_lag_seconds_count{pipeline=\"a\"} 1"),
            "{text}"
        );
        m.source_caught_up("a", "db.c");
        assert!(m
            .render()?
            .contains("mkb_source_lag_seconds{namespace=\"db.c\",pipeline=\"a\"} 0"));
        m.forget_pipeline("a");
        m.forget_pipeline("b");
        let text = m.render()?;
        for gone in [
            "mkb_source_lag_seconds{",
            "mkb_source_checkpoint_age_seconds{",
            "mkb_mailbox_depth_messages{",
            "mkb_sink_consumer_lag_records{",
        ] {
            assert!(!text.contains(gone), "{gone} still in {text}");
        }
        Ok(())
    }
}
