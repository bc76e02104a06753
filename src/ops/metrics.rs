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
        Ok(Self {
            registry,
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
