//! [`Restarts`]: what the sink supervisor does when a writer fails, when a sink pipeline
//! restarts after a failure that may pass, and whether it is still failing, as pure
//! decisions the supervisor carries out (as the source's `RestartPolicy` and `Lifecycle`).
//!
//! A writer's failure ([`Restarts::writer_failed`]) is ignored while the pipeline stops, and
//! logged only when the writer no longer owns its partition (a revoked writer, or one of an
//! earlier run: the partition's owner meets the same record). Otherwise a failure that may
//! pass restarts the pipeline from its committed offsets, after a backoff, and any other
//! stops it until restarted by hand.
//!
//! A failure that keeps coming back (a dead letter topic the daemon may not write to, or
//! that refuses every record) restarts the pipeline again and again. Such a pipeline is
//! failing the whole time, not only during each backoff: `/ready` says so, with the last
//! reason, from the first failure until the pipeline ran [`HEALTHY_RUN`] without failing
//! again. The backoff grows while it fails, and starts over after such a healthy run, so one
//! bad hour does not make every later recovery wait the longest delay.

use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;

/// How long a restarted pipeline runs without failing before it counts as healthy again:
/// `/ready` stops reporting it and the backoff starts over.
pub const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The first restart's delay.
const FIRST_DELAY: Duration = Duration::from_millis(500);
/// The longest delay between restarts.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// What to do about one failure that may pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// Wait this long, then start the pipeline again.
    pub delay: Duration,
    /// Failures in a row, this one included (since the last healthy run).
    pub in_a_row: u32,
}

/// A writer's failure, as the supervisor sees it when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterFailure {
    /// The pipeline is stopping (stopped by hand, a reload, or failed already).
    pub stopping: bool,
    /// The writer owns its partition in the running consumer.
    pub current: bool,
    /// The failure may pass (`SinkError::may_pass`).
    pub may_pass: bool,
}

/// What the supervisor does about a writer's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing: the pipeline is stopping anyway.
    Ignore,
    /// Only log it: the writer no longer owns its partition.
    NotCurrent,
    /// Drain the pipeline and start it again after the delay.
    Restart(Restart),
    /// Stop the pipeline, saying why, until it is restarted by hand.
    Stop,
}

/// The restarts of one sink pipeline.
#[derive(Debug)]
pub struct Restarts {
    backoff: Backoff,
    healthy_after: Duration,
    /// When the pipeline last started again after a failure, while it has not run
    /// `healthy_after` since.
    failing_since_restart: Option<Instant>,
}

impl Default for Restarts {
    fn default() -> Self {
        Self::new(HEALTHY_RUN)
    }
}

impl Restarts {
    /// Restarts that count a run of `healthy_after` without failure as healthy.
    pub fn new(healthy_after: Duration) -> Self {
        Self {
            backoff: Backoff::new(FIRST_DELAY, MAX_DELAY)
                .reset_after(healthy_after)
                .with_jitter(),
            healthy_after,
            failing_since_restart: None,
        }
    }

    /// The pipeline failed for a reason that may pass, at `now`: when to start it again.
    pub fn failed(&mut self, now: Instant) -> Restart {
        if !self.is_failing(now) {
            // A healthy run lay between: the failures before it are forgotten.
            self.backoff.reset();
        }
        let delay = self.backoff.next_delay();
        self.failing_since_restart = Some(now + delay);
        Restart {
            delay,
            in_a_row: self.backoff.failures(),
        }
    }

    /// What to do about a writer's `failure`, arriving at `now`.
    pub fn writer_failed(&mut self, failure: WriterFailure, now: Instant) -> Verdict {
        if failure.stopping {
            Verdict::Ignore
        } else if !failure.current {
            Verdict::NotCurrent
        } else if failure.may_pass {
            Verdict::Restart(self.failed(now))
        } else {
            Verdict::Stop
        }
    }

    /// Whether the pipeline is still failing at `now`: it failed, and has not run
    /// `healthy_after` since it was started again.
    pub fn is_failing(&self, now: Instant) -> bool {
        self.failing_since_restart
            .is_some_and(|restarted| now.saturating_duration_since(restarted) < self.healthy_after)
    }

    /// When to ask [`Restarts::is_failing`] again to see the pipeline healthy (if it does not
    /// fail meanwhile); `None` when it is not failing.
    pub fn healthy_at(&self) -> Option<Instant> {
        self.failing_since_restart
            .map(|restarted| restarted + self.healthy_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 21, item 12: a failure that keeps coming back keeps the pipeline failing
    /// through every restart, with a growing backoff.
    #[tokio::test(start_paused = true)]
    async fn a_failure_that_keeps_coming_back_stays_failing_with_a_growing_backoff() {
        let mut restarts = Restarts::new(Duration::from_secs(60));
        assert!(!restarts.is_failing(Instant::now()));
        let mut delays = Vec::new();
        for _ in 0..5 {
            let restart = restarts.failed(Instant::now());
            delays.push(restart.delay.as_millis());
            // Started again after the delay, failing again a second later.
            tokio::time::advance(restart.delay).await;
            assert!(
                restarts.is_failing(Instant::now()),
                "failing right after a restart"
            );
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(restarts.is_failing(Instant::now()));
        }
        // Doubling, each after the first spread over [3/4, 1] of its length (jitter).
        for (delay, nominal) in delays.iter().zip([500, 1000, 2000, 4000, 8000]) {
            assert!(*delay <= nominal && *delay * 4 >= nominal * 3, "{delays:?}");
        }
        assert_eq!(delays[0], 500, "the first delay is exact");
        assert_eq!(restarts.failed(Instant::now()).in_a_row, 6);
    }

    /// Issue 21, item 12: after a healthy run the pipeline is no longer failing, and the
    /// next failure waits the first delay again instead of the grown one.
    #[tokio::test(start_paused = true)]
    async fn a_healthy_run_clears_the_failure_and_resets_the_backoff() {
        let mut restarts = Restarts::new(Duration::from_secs(60));
        let mut last = Duration::ZERO;
        for _ in 0..8 {
            last = restarts.failed(Instant::now()).delay;
            tokio::time::advance(last).await;
        }
        assert!(
            last <= MAX_DELAY && last >= MAX_DELAY.mul_f64(0.75),
            "{last:?}"
        );
        let healthy_at = restarts.healthy_at().unwrap_or_else(|| panic!("failing"));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(
            restarts.is_failing(Instant::now()),
            "59 s is not a healthy run"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(Instant::now(), healthy_at);
        assert!(!restarts.is_failing(Instant::now()));
        let restart = restarts.failed(Instant::now());
        assert_eq!(restart.delay, FIRST_DELAY);
        assert_eq!(restart.in_a_row, 1);
        assert!(restarts.is_failing(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_writers_failure_restarts_stops_or_is_ignored() {
        let failure = |stopping, current, may_pass| WriterFailure {
            stopping,
            current,
            may_pass,
        };
        let mut restarts = Restarts::new(Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(
            restarts.writer_failed(failure(true, true, true), now),
            Verdict::Ignore
        );
        assert_eq!(
            restarts.writer_failed(failure(false, false, true), now),
            Verdict::NotCurrent
        );
        assert!(!restarts.is_failing(now), "neither counts as a failure");
        assert_eq!(
            restarts.writer_failed(failure(false, true, false), now),
            Verdict::Stop
        );
        assert_eq!(
            restarts.writer_failed(failure(false, true, true), now),
            Verdict::Restart(Restart {
                delay: FIRST_DELAY,
                in_a_row: 1
            })
        );
        assert!(restarts.is_failing(now));
    }
}
