//! Rate limiting of a partition writer, as the MongoDB Kafka Connector's `rate.limiting.*`:
//! after every `rate_limiting_every_n` batches written, a pause of `rate_limiting_timeout`
//! before the next one. Pure: it says when to pause; the writer sleeps.

use std::time::Duration;

use crate::config::SinkConfig;

/// Counts the batches of one writer and says when it pauses.
#[derive(Debug, Clone)]
pub struct RateLimit {
    every: Option<usize>,
    pause: Duration,
    written: usize,
}

impl RateLimit {
    /// The limit `config` asks for (none without `rate_limiting_every_n`).
    pub fn new(config: &SinkConfig) -> Self {
        Self {
            every: config.rate_limiting_every_n.filter(|n| *n > 0),
            pause: config.rate_limiting_timeout,
            written: 0,
        }
    }

    /// Counts a written batch; answers how long to pause before the next one, if at all.
    pub fn batch_written(&mut self) -> Option<Duration> {
        let every = self.every?;
        self.written += 1;
        if self.written >= every {
            self.written = 0;
            Some(self.pause)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(extra: &str) -> RateLimit {
        let text = format!("name = \"s\"\ntopics = [\"t\"]\ndatabase = \"db\"\n{extra}");
        let config: SinkConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        RateLimit::new(&config)
    }

    #[test]
    fn every_nth_batch_pauses() {
        let mut l = limit("rate_limiting_every_n = 3\nrate_limiting_timeout = \"250ms\"");
        let pauses: Vec<Option<Duration>> = (0..7).map(|_| l.batch_written()).collect();
        let p = Some(Duration::from_millis(250));
        assert_eq!(pauses, [None, None, p, None, None, p, None]);
    }

    #[test]
    fn without_a_limit_nothing_pauses() {
        let mut l = limit("");
        assert!((0..100).all(|_| l.batch_written().is_none()));
    }
}
