//! Capped exponential backoff, used wherever something is retried or restarted; with
//! [`Backoff::with_jitter`], every delay after the first is shortened by up to a quarter at
//! random, so that daemons failing together (a broker restart, a MongoDB election) do not
//! all come back at the same instant again and again.

use std::time::Duration;

use tokio::time::Instant;

/// Doubles the delay after every failure, up to `max`; [`Backoff::reset`] after a success,
/// or by itself after a healthy run ([`Backoff::reset_after`]).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
    /// A run at least this long since the last retry forgets the failures before it.
    healthy_after: Option<Duration>,
    /// When the last delay ends: the retried thing runs from then on.
    retry_at: Option<Instant>,
    /// Whether delays after the first are spread over `[3/4, 1]` of their nominal length.
    jitter: bool,
}

impl Backoff {
    /// A backoff starting at `initial` and never waiting longer than `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            failures: 0,
            healthy_after: None,
            retry_at: None,
            jitter: false,
        }
    }

    /// Spreads every delay but the first over `[3/4, 1]` of its nominal length, at random:
    /// for restarts, which many daemons may go through at once. The first stays exact, so a
    /// single failure is retried when the logs say.
    pub fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// Forgets past failures when the retried thing ran for `healthy` before failing again:
    /// for restarts, where no single call says "it works now", so that one crash loop does
    /// not make every later recovery wait `max`.
    pub fn reset_after(mut self, healthy: Duration) -> Self {
        self.healthy_after = Some(healthy);
        self
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let now = Instant::now();
        let ran_healthily = self
            .healthy_after
            .zip(self.retry_at)
            .is_some_and(|(healthy, retry_at)| now.saturating_duration_since(retry_at) >= healthy);
        if ran_healthily {
            self.failures = 0;
        }
        let factor = 2u32.saturating_pow(self.failures.min(31));
        self.failures = self.failures.saturating_add(1);
        let nominal = self.initial.saturating_mul(factor).min(self.max);
        let delay = if self.jitter && self.failures > 1 {
            nominal.mul_f64(1.0 - random_fraction() / 4.0)
        } else {
            nominal
        };
        self.retry_at = Some(now + delay);
        delay
    }

    /// How many failures in a row were recorded since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Forgets past failures after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A number in `[0, 1)`, different at every call: std's randomly keyed hasher over a
/// counter and the clock (no cryptographic quality needed to spread retries).
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    // 53 bits: every value exactly representable.
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_every_delay_but_the_first_within_a_quarter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).with_jitter();
        assert_eq!(
            b.next_delay(),
            Duration::from_millis(100),
            "the first is exact"
        );
        let mut at_cap = Vec::new();
        for failure in 1..60u32 {
            let nominal = Duration::from_millis(100)
                .saturating_mul(2u32.saturating_pow(failure.min(31)))
                .min(Duration::from_secs(1));
            let delay = b.next_delay();
            assert!(
                delay <= nominal && delay >= nominal.mul_f64(0.75),
                "failure {failure}: {delay:?} outside [3/4, 1] of {nominal:?}"
            );
            if nominal == Duration::from_secs(1) {
                at_cap.push(delay);
            }
        }
        at_cap.sort();
        at_cap.dedup();
        assert!(
            at_cap.len() > 10,
            "delays at the cap do not spread: {at_cap:?}"
        );
        b.reset();
        assert_eq!(
            b.next_delay(),
            Duration::from_millis(100),
            "exact again after a reset"
        );
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.failures(), 6);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_healthy_run_resets_by_itself() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
            .reset_after(Duration::from_secs(10));
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        // Failing again 9 s after the retry: not healthy yet.
        tokio::time::advance(Duration::from_millis(100) + Duration::from_secs(9)).await;
        assert_eq!(b.next_delay(), Duration::from_millis(200));
        // 10 s after the retry: healthy.
        tokio::time::advance(Duration::from_millis(200) + Duration::from_secs(10)).await;
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        // Without `reset_after`, time alone resets nothing.
        let mut plain = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        plain.next_delay();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(plain.next_delay(), Duration::from_millis(200));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(60));
        }
    }
}
