//! How far long jobs have come and when they will be done, as people expect from a long job:
//! a `copy_existing` (documents copied of the collection's estimated count) and a sink's
//! first catch-up on a backlog (its lag and how fast it falls). Pure: the callers feed
//! counts and times, and read ratios, rates and estimates.
//!
//! Rates are measured over the last [`WINDOW`] of samples, so an estimate follows the job's
//! present speed rather than its average since the start; with fewer than two samples, or no
//! progress in the window, there is no estimate (never a made-up one).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How far back rates are measured.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Samples of a count over time, the newest last, none older than [`WINDOW`] before it.
#[derive(Debug, Clone, Default)]
struct Samples(VecDeque<(Instant, f64)>);

impl Samples {
    fn push(&mut self, at: Instant, value: f64) {
        self.0.push_back((at, value));
        while let (Some((first, _)), Some((last, _))) = (self.0.front(), self.0.back()) {
            if self.0.len() > 2 && last.duration_since(*first) > WINDOW {
                self.0.pop_front();
            } else {
                break;
            }
        }
    }

    /// The change per second between the oldest and the newest sample.
    fn slope(&self) -> Option<f64> {
        let (first, last) = (self.0.front()?, self.0.back()?);
        let seconds = last.0.duration_since(first.0).as_secs_f64();
        (seconds > 0.0).then(|| (last.1 - first.1) / seconds)
    }
}

/// The progress of a job with a known (estimated) total.
#[derive(Debug, Clone)]
pub struct Progress {
    total: Option<u64>,
    done: u64,
    samples: Samples,
}

/// What `/status` and the log say of a [`Progress`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressReport {
    /// Done so far.
    pub done: u64,
    /// The total, when it is known (an estimate for a copy).
    pub total: Option<u64>,
    /// Done over total, at most 1 (the estimated total can be below the real one).
    pub ratio: Option<f64>,
    /// Per second, over the last minute.
    pub rate_per_second: Option<f64>,
    /// Seconds until done at that rate.
    pub eta_seconds: Option<f64>,
}

impl Progress {
    /// A job of `total` (when known) starting `now`.
    pub fn new(total: Option<u64>, now: Instant) -> Self {
        let mut samples = Samples::default();
        samples.push(now, 0.0);
        Self {
            total,
            done: 0,
            samples,
        }
    }

    /// `done` so far, at `now`.
    pub fn advance_to(&mut self, done: u64, now: Instant) {
        self.done = done;
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        self.samples.push(now, done as f64);
    }

    /// The report of the progress so far.
    pub fn report(&self) -> ProgressReport {
        #[allow(clippy::cast_precision_loss)]
        let ratio = self.total.map(|t| {
            if t == 0 {
                1.0
            } else {
                (self.done as f64 / t as f64).min(1.0)
            }
        });
        let rate = self.samples.slope().filter(|r| *r > 0.0);
        #[allow(clippy::cast_precision_loss)]
        let eta = match (self.total, rate) {
            // Nothing left: no rate needed.
            (Some(total), _) if self.done >= total => Some(0.0),
            (Some(total), Some(rate)) => Some((total - self.done) as f64 / rate),
            _ => None,
        };
        ProgressReport {
            done: self.done,
            total: self.total,
            ratio,
            rate_per_second: rate,
            eta_seconds: eta,
        }
    }
}

/// A sink's catch-up on a backlog: its lag over time.
#[derive(Debug, Clone, Default)]
pub struct CatchUp {
    lag: i64,
    samples: Samples,
}

/// What `/status` and the log say of a [`CatchUp`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatchUpReport {
    /// Records between the committed offsets and the ends of the partitions.
    pub lag: i64,
    /// How fast the lag falls, records per second over the last minute (positive: falling).
    pub decline_per_second: Option<f64>,
    /// Seconds until the lag is 0 at that rate; 0 when caught up.
    pub eta_seconds: Option<f64>,
}

impl CatchUp {
    /// The lag at `now`.
    pub fn observe(&mut self, lag: i64, now: Instant) {
        self.lag = lag.max(0);
        #[allow(clippy::cast_precision_loss)]
        self.samples.push(now, self.lag as f64);
    }

    /// The report of the catch-up so far.
    pub fn report(&self) -> CatchUpReport {
        let decline = self.samples.slope().map(|s| -s);
        #[allow(clippy::cast_precision_loss)]
        let eta = if self.lag == 0 {
            Some(0.0)
        } else {
            decline.filter(|d| *d > 0.0).map(|d| self.lag as f64 / d)
        };
        CatchUpReport {
            lag: self.lag,
            decline_per_second: decline,
            eta_seconds: eta,
        }
    }
}

/// Seconds as people read them in a log line: `2h05m`, `3m20s`, `45s`.
pub fn human_seconds(seconds: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_reports_its_ratio_rate_and_time_left() {
        let t0 = Instant::now();
        let mut p = Progress::new(Some(10_000), t0);
        assert_eq!(p.report().eta_seconds, None, "no rate before progress");
        p.advance_to(1_000, t0 + Duration::from_secs(10));
        p.advance_to(2_000, t0 + Duration::from_secs(20));
        let r = p.report();
        assert_eq!(r.ratio, Some(0.2));
        assert_eq!(r.rate_per_second, Some(100.0));
        assert_eq!(r.eta_seconds, Some(80.0));
    }

    #[test]
    fn the_rate_follows_the_last_minute() {
        let t0 = Instant::now();
        let mut p = Progress::new(Some(1_000_000), t0);
        // Fast for a minute, then slow: the estimate follows the slow rate.
        p.advance_to(60_000, t0 + Duration::from_secs(60));
        for i in 1..=12 {
            p.advance_to(60_000 + i * 50, t0 + Duration::from_secs(60 + i * 10));
        }
        let rate = p.report().rate_per_second.expect("a rate");
        assert!((rate - 5.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn an_estimated_total_below_the_real_count_caps_at_one() {
        let t0 = Instant::now();
        let mut p = Progress::new(Some(100), t0);
        p.advance_to(120, t0 + Duration::from_secs(1));
        let r = p.report();
        assert_eq!(r.ratio, Some(1.0));
        assert_eq!(r.eta_seconds, Some(0.0));
        let mut unknown = Progress::new(None, t0);
        unknown.advance_to(5, t0 + Duration::from_secs(1));
        assert_eq!(unknown.report().ratio, None);
        assert_eq!(unknown.report().eta_seconds, None);
    }

    #[test]
    fn a_catch_up_estimates_from_the_falling_lag() {
        let t0 = Instant::now();
        let mut c = CatchUp::default();
        c.observe(10_000, t0);
        c.observe(8_000, t0 + Duration::from_secs(10));
        let r = c.report();
        assert_eq!(r.decline_per_second, Some(200.0));
        assert_eq!(r.eta_seconds, Some(40.0));
        // A growing lag has no time to catch up.
        c.observe(9_000, t0 + Duration::from_secs(20));
        c.observe(12_000, t0 + Duration::from_secs(30));
        assert_eq!(c.report().eta_seconds, None);
        c.observe(0, t0 + Duration::from_secs(40));
        assert_eq!(c.report().eta_seconds, Some(0.0));
    }

    #[test]
    fn seconds_read_as_people_write_them() {
        assert_eq!(human_seconds(45.2), "45s");
        assert_eq!(human_seconds(200.0), "3m20s");
        assert_eq!(human_seconds(7_500.0), "2h05m");
    }
}
