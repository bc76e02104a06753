//! Every metric the daemon exports is defined here, once, with its help text and labels,
//! and recorded through the small typed functions below.

use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// Prefix of every metric name.
pub const PREFIX: &str = "mkb";

/// The daemon's metrics and the registry they are exported from.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pipelines_running: IntGaugeVec,
    connect_failures: IntCounterVec,
    events_read: IntCounterVec,
    records_produced: IntCounterVec,
    dead_letters: IntCounterVec,
    checkpoints_written: IntCounterVec,
    actor_restarts: IntCounterVec,
    pipeline_failures: IntCounterVec,
    resume_gaps: IntCounterVec,
    records_consumed: IntCounterVec,
    sink_writes: IntCounterVec,
    records_skipped: IntCounterVec,
    write_retries: IntCounterVec,
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let counter = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(counter.clone()))?;
    Ok(counter)
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some(PREFIX.to_owned()), None)?;
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "Version of the running daemon; always 1."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(build_info))?;
        let pipelines_running = IntGaugeVec::new(
            Opts::new("pipelines_running", "Pipelines currently running, by kind."),
            &["kind"],
        )?;
        registry.register(Box::new(pipelines_running.clone()))?;
        let connect_failures = IntCounterVec::new(
            Opts::new(
                "connect_failures_total",
                "Failed attempts to reach a service at start-up, by service (`kafka`, `mongodb`).",
            ),
            &["service"],
        )?;
        registry.register(Box::new(connect_failures.clone()))?;
        let events_read = counter(
            &registry,
            "source_events_read_total",
            "Change events read from MongoDB, by pipeline and namespace.",
            &["pipeline", "namespace"],
        )?;
        let records_produced = counter(
            &registry,
            "source_records_produced_total",
            "Records handed to Kafka by source pipelines, by pipeline and topic.",
            &["pipeline", "topic"],
        )?;
        let dead_letters = counter(
            &registry,
            "dead_letter_records_total",
            "Records sent to a dead letter topic, by pipeline and reason.",
            &["pipeline", "reason"],
        )?;
        let checkpoints_written = counter(
            &registry,
            "source_checkpoints_written_total",
            "Resume tokens written to the checkpoint topic, by pipeline and namespace.",
            &["pipeline", "namespace"],
        )?;
        let actor_restarts = counter(
            &registry,
            "actor_restarts_total",
            "Actors restarted by their supervisor, by actor kind and cause.",
            &["actor", "reason"],
        )?;
        let pipeline_failures = counter(
            &registry,
            "pipeline_failures_total",
            "Pipelines stopped by an error no restart can fix, by kind and cause.",
            &["kind", "reason"],
        )?;
        let resume_gaps = counter(&registry, "source_resume_gaps_total", "Times a reader's resume point was gone from the oplog and it restarted at the newest change.", &["pipeline", "namespace"])?;
        let records_consumed = counter(
            &registry,
            "sink_records_consumed_total",
            "Records read from Kafka by sink pipelines, by pipeline and topic.",
            &["pipeline", "topic"],
        )?;
        let sink_writes = counter(
            &registry,
            "sink_writes_total",
            "Writes MongoDB acknowledged, by pipeline and operation (`insert`, `replace`, `update`, `delete`).",
            &["pipeline", "operation"],
        )?;
        let records_skipped = counter(
            &registry,
            "sink_records_skipped_total",
            "Records that write nothing by design (tombstones without `delete_on_null_values`, change events without a document effect), by pipeline.",
            &["pipeline"],
        )?;
        let write_retries = counter(
            &registry,
            "sink_write_retries_total",
            "Bulk writes retried after a failure that may pass (network, step-down), by pipeline.",
            &["pipeline"],
        )?;
        Ok(Self {
            registry,
            records_consumed,
            sink_writes,
            records_skipped,
            write_retries,
            events_read,
            records_produced,
            dead_letters,
            checkpoints_written,
            actor_restarts,
            pipeline_failures,
            resume_gaps,
            pipelines_running,
            connect_failures,
        })
    }

    /// Records that a pipeline of `kind` (`source`, `sink`) started.
    pub fn pipeline_started(&self, kind: &str) {
        self.pipelines_running.with_label_values(&[kind]).inc();
    }

    /// Records that a pipeline of `kind` stopped.
    pub fn pipeline_stopped(&self, kind: &str) {
        self.pipelines_running.with_label_values(&[kind]).dec();
    }

    /// Records a failed attempt to reach `service` (`kafka`, `mongodb`).
    pub fn connect_failed(&self, service: &str) {
        self.connect_failures.with_label_values(&[service]).inc();
    }

    /// Records a change event read by a source pipeline.
    pub fn event_read(&self, pipeline: &str, namespace: &str) {
        self.events_read
            .with_label_values(&[pipeline, namespace])
            .inc();
    }

    /// Records a record handed to Kafka by a source pipeline.
    pub fn record_produced(&self, pipeline: &str, topic: &str) {
        self.records_produced
            .with_label_values(&[pipeline, topic])
            .inc();
    }

    /// Records a record sent to the dead letter topic for `reason` (a bounded word).
    pub fn dead_lettered(&self, pipeline: &str, reason: &str) {
        self.dead_letters
            .with_label_values(&[pipeline, reason])
            .inc();
    }

    /// Records a checkpoint written.
    pub fn checkpoint_written(&self, pipeline: &str, namespace: &str) {
        self.checkpoints_written
            .with_label_values(&[pipeline, namespace])
            .inc();
    }

    /// Records a restart of an `actor` kind because of `reason` (a bounded word, never raw
    /// error text).
    pub fn actor_restarted(&self, actor: &str, reason: &str) {
        self.actor_restarts
            .with_label_values(&[actor, reason])
            .inc();
    }

    /// Records a pipeline stopped for good.
    pub fn pipeline_failed(&self, kind: &str, reason: &str) {
        self.pipeline_failures
            .with_label_values(&[kind, reason])
            .inc();
    }

    /// Records a lost resume point skipped over.
    pub fn resume_gap(&self, pipeline: &str, namespace: &str) {
        self.resume_gaps
            .with_label_values(&[pipeline, namespace])
            .inc();
    }

    /// Records `n` records read by a sink pipeline from `topic`.
    pub fn records_consumed(&self, pipeline: &str, topic: &str, n: u64) {
        self.records_consumed
            .with_label_values(&[pipeline, topic])
            .inc_by(n);
    }

    /// Records `n` writes of `operation` acknowledged by MongoDB.
    pub fn sink_written(&self, pipeline: &str, operation: &str, n: u64) {
        self.sink_writes
            .with_label_values(&[pipeline, operation])
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

    /// The registry in Prometheus' text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
