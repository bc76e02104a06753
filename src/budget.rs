//! Memory budgets: how many bytes of records one pipeline holds at once (`memory_budget`).
//!
//! The bounded mailboxes and queues count messages; a message may be a few bytes or several
//! MiB. A [`Budget`] counts bytes: it is shared by whatever holds a pipeline's records (a
//! source's readers, from reading an event until librdkafka took its records; a sink's
//! partition readers and writers, from taking a record off librdkafka's queue until MongoDB
//! acknowledged its write), and taking room waits while the budget is spent. The waiting
//! part reads no more, so the backpressure chain the mailboxes start goes on in bytes.
//!
//! Rules:
//! - Room is counted in whole KiB, rounded up, and a budget holds `floor(bytes / 1 KiB)` of
//!   them: what is held never exceeds the budget.
//! - Something larger than the whole budget still passes: it takes the whole budget (after
//!   everything else held was released), so nothing deadlocks and it is alone.
//! - Waiting is first come, first served: a large record is not starved by small ones.
//! - Room is released when its [`Held`] is dropped, whatever became of the records
//!   (published, written, refused, dropped with a revoked partition or a stopped reader).
//! - What is held is exported per pipeline (`mkb_memory_budget_held_bytes`, next to
//!   `mkb_memory_budget_bytes`); each wait is counted (`mkb_memory_budget_waits_total`), and
//!   one longer than [`LONG_WAIT`] is logged (WARN) and reported on `/ready` until no wait
//!   that long is left: nothing downstream took room back for that long, a stall.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ops::health::{self, Readiness};
use crate::ops::metrics::Metrics;

/// The unit room is counted in.
pub const UNIT: u64 = 1024;

/// A wait for room longer than this is logged.
pub const LONG_WAIT: Duration = Duration::from_secs(30);

/// The byte budget of one pipeline; clones share it.
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    semaphore: Arc<Semaphore>,
    units: u32,
    pipeline: String,
    report: Option<Report>,
    /// Waits longer than [`LONG_WAIT`] going on.
    long_waits: AtomicUsize,
}

/// Where a budget reports what it holds and its long waits.
#[derive(Clone)]
pub struct Report {
    /// The metrics.
    pub metrics: Metrics,
    /// `/ready`.
    pub readiness: Readiness,
}

/// A wait longer than [`LONG_WAIT`], reported on `/ready` until it ends (or is abandoned).
struct LongWait<'a>(&'a Inner);

impl<'a> LongWait<'a> {
    fn start(inner: &'a Inner, reason: String) -> Self {
        inner.long_waits.fetch_add(1, Ordering::SeqCst);
        if let Some(report) = &inner.report {
            report
                .readiness
                .set_problem(health::memory_budget(&inner.pipeline), reason);
        }
        Self(inner)
    }
}

impl Drop for LongWait<'_> {
    fn drop(&mut self) {
        let inner = self.0;
        if inner.long_waits.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(report) = &inner.report {
                report
                    .readiness
                    .clear(&health::memory_budget(&inner.pipeline));
            }
        }
    }
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("pipeline", &self.inner.pipeline)
            .field("bytes", &self.bytes())
            .field("held", &self.held_bytes())
            .finish()
    }
}

/// Room taken in a [`Budget`]; released when dropped. [`Held::default`] holds nothing.
#[derive(Default)]
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
    budget: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Held({} bytes)", self.bytes())
    }
}

impl Held {
    /// The bytes held (whole units).
    pub fn bytes(&self) -> u64 {
        self.permit
            .as_ref()
            .map_or(0, |p| p.num_permits() as u64 * UNIT)
    }

    /// Adds what `other` holds to this; both are released together.
    pub fn merge(&mut self, mut other: Held) {
        let Some(permit) = other.permit.take() else {
            return;
        };
        match &mut self.permit {
            Some(mine) => mine.merge(permit),
            None => {
                self.permit = Some(permit);
                self.budget = other.budget.take();
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let bytes = self.bytes();
        if let (Some(budget), true) = (&self.budget, bytes > 0) {
            budget.report_held(-(bytes as i64));
        }
    }
}

impl Inner {
    fn report_held(&self, delta: i64) {
        if let Some(report) = &self.report {
            report.metrics.budget_held(&self.pipeline, delta);
        }
    }
}

/// The units `bytes` take in a budget of `total` units: rounded up to whole units, at most
/// the whole budget.
pub fn units_for(bytes: usize, total: u32) -> u32 {
    let units = (bytes as u64).div_ceil(UNIT);
    u32::try_from(units).unwrap_or(u32::MAX).min(total)
}

impl Budget {
    /// A budget of `bytes` (at least one unit) for `pipeline`, reported to `report`.
    pub fn new(pipeline: &str, bytes: u64, report: Option<Report>) -> Self {
        let units = u32::try_from(bytes / UNIT)
            .unwrap_or(u32::MAX)
            .clamp(1, u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        if let Some(report) = &report {
            report
                .metrics
                .budget_size(pipeline, u64::from(units) * UNIT);
        }
        Self {
            inner: Arc::new(Inner {
                semaphore: Arc::new(Semaphore::new(units as usize)),
                units,
                pipeline: pipeline.to_owned(),
                report,
                long_waits: AtomicUsize::new(0),
            }),
        }
    }

    /// The budget, in bytes (whole units).
    pub fn bytes(&self) -> u64 {
        u64::from(self.inner.units) * UNIT
    }

    /// The bytes held now.
    pub fn held_bytes(&self) -> u64 {
        let free = self.inner.semaphore.available_permits() as u64;
        (u64::from(self.inner.units) - free.min(u64::from(self.inner.units))) * UNIT
    }

    /// Takes room for `bytes`, waiting while the budget is spent; `bytes` beyond the whole
    /// budget take the whole budget. `what` names the holder in the WARN of a long wait.
    pub async fn take(&self, bytes: usize, what: &str) -> Held {
        let inner = &self.inner;
        let units = units_for(bytes, inner.units);
        if units == 0 {
            return Held::default();
        }
        let semaphore = inner.semaphore.clone();
        let permit = match semaphore.clone().try_acquire_many_owned(units) {
            Ok(permit) => Some(permit),
            Err(_) => {
                if let Some(report) = &inner.report {
                    report.metrics.budget_waited(&inner.pipeline);
                }
                let acquire = semaphore.acquire_many_owned(units);
                tokio::pin!(acquire);
                match tokio::time::timeout(LONG_WAIT, &mut acquire).await {
                    Ok(permit) => permit.ok(),
                    Err(_) => {
                        let (budget, held) = (self.bytes(), self.held_bytes());
                        tracing::warn!(pipeline = %inner.pipeline, holder = what, bytes, budget, held, waited_s = LONG_WAIT.as_secs(), "waiting for room in the pipeline's memory_budget: the records it holds are not taken downstream");
                        let _reported = LongWait::start(
                            inner,
                            format!("{what} has waited over {} s for room in memory_budget ({held} of {budget} bytes held, not taken downstream)", LONG_WAIT.as_secs()),
                        );
                        acquire.await.ok()
                    }
                }
            }
        };
        // The semaphore is never closed, so there is always a permit; without one the
        // records pass unaccounted rather than stop the pipeline.
        let Some(permit) = permit else {
            return Held::default();
        };
        inner.report_held(i64::from(units) * UNIT as i64);
        Held {
            permit: Some(permit),
            budget: Some(inner.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_counted_in_whole_units_up_to_the_whole_budget() {
        assert_eq!(units_for(0, 10), 0);
        assert_eq!(units_for(1, 10), 1);
        assert_eq!(units_for(1024, 10), 1);
        assert_eq!(units_for(1025, 10), 2);
        assert_eq!(units_for(100 * 1024 * 1024, 10), 10);
        assert_eq!(units_for(usize::MAX, u32::MAX), u32::MAX);
    }

    #[test]
    fn a_budget_holds_at_most_its_bytes() {
        assert_eq!(Budget::new("p", 64 * 1024 * 1024, None).bytes(), 64 << 20);
        // Rounded down to whole units, and never none.
        assert_eq!(Budget::new("p", 3000, None).bytes(), 2048);
        assert_eq!(Budget::new("p", 0, None).bytes(), 1024);
    }

    #[tokio::test]
    async fn taking_waits_while_the_budget_is_spent_and_dropping_releases() {
        let budget = Budget::new("p", 10 * 1024, None);
        let first = budget.take(6 * 1024, "t").await;
        assert_eq!(budget.held_bytes(), 6 * 1024);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(5 * 1024, "t").await.bytes() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        assert_eq!(waiting.await.ok(), Some(5 * 1024));
        assert_eq!(budget.held_bytes(), 0);
    }

    #[tokio::test]
    async fn something_larger_than_the_budget_takes_all_of_it_and_passes() {
        let budget = Budget::new("p", 4 * 1024, None);
        let small = budget.take(100, "t").await;
        let large = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(1 << 20, "t").await.bytes() }
        });
        tokio::task::yield_now().await;
        assert!(!large.is_finished(), "it waits for the rest to be released");
        drop(small);
        assert_eq!(large.await.ok(), Some(4 * 1024));
    }

    #[tokio::test]
    async fn waiting_is_first_come_first_served() {
        let budget = Budget::new("p", 4 * 1024, None);
        let all = budget.take(4 * 1024, "t").await;
        let large = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(4 * 1024, "t").await }
        });
        tokio::task::yield_now().await;
        let small = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(1, "t").await }
        });
        tokio::task::yield_now().await;
        drop(all);
        let large = large.await.ok();
        tokio::task::yield_now().await;
        assert!(
            !small.is_finished(),
            "the small one waits behind the large one"
        );
        drop(large);
        assert!(small.await.is_ok());
    }

    fn report() -> Option<Report> {
        Some(Report {
            metrics: Metrics::new().ok()?,
            readiness: Readiness::default(),
        })
    }

    #[tokio::test]
    async fn merged_room_is_released_together_and_reported() {
        let report = report();
        let metrics = report.as_ref().map(|r| r.metrics.clone());
        let budget = Budget::new("p", 8 * 1024, report);
        let mut held = Held::default();
        held.merge(budget.take(1024, "t").await);
        held.merge(budget.take(2048, "t").await);
        held.merge(Held::default());
        assert_eq!(held.bytes(), 3 * 1024);
        assert_eq!(budget.held_bytes(), 3 * 1024);
        let rendered = metrics
            .as_ref()
            .and_then(|m| m.render().ok())
            .unwrap_or_default();
        assert!(
            rendered.contains("mkb_memory_budget_held_bytes{pipeline=\"p\"} 3072"),
            "{rendered}"
        );
        assert!(rendered.contains("mkb_memory_budget_bytes{pipeline=\"p\"} 8192"));
        drop(held);
        assert_eq!(budget.held_bytes(), 0);
        let rendered = metrics
            .as_ref()
            .and_then(|m| m.render().ok())
            .unwrap_or_default();
        assert!(rendered.contains("mkb_memory_budget_held_bytes{pipeline=\"p\"} 0"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_wait_is_on_ready_until_it_ends() {
        let report = report();
        let readiness = report.as_ref().map(|r| r.readiness.clone());
        let problem = || {
            readiness
                .as_ref()
                .is_some_and(|r| r.has_problem(&health::memory_budget("p")))
        };
        let budget = Budget::new("p", 1024, report);
        let all = budget.take(1024, "t").await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(1024, "db.coll").await.bytes() }
        });
        tokio::time::sleep(LONG_WAIT - Duration::from_secs(1)).await;
        assert!(!problem(), "not before the long wait");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(problem(), "reported after the long wait");
        let status = readiness.as_ref().map(Readiness::status);
        assert!(
            matches!(&status, Some(Err(e)) if e.contains("memory budget p: db.coll has waited over 30 s")),
            "{status:?}"
        );
        drop(all);
        assert_eq!(waiting.await.ok(), Some(1024));
        assert!(!problem(), "cleared once the wait ended");
        // An abandoned long wait (its reader stopped) clears too.
        let all = budget.take(1024, "t").await;
        let abandoned = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(1024, "t").await.bytes() }
        });
        tokio::time::sleep(LONG_WAIT + Duration::from_secs(1)).await;
        assert!(problem());
        abandoned.abort();
        let _ = abandoned.await;
        assert!(!problem());
        drop(all);
    }

    #[tokio::test]
    async fn a_wait_is_counted() {
        let report = report();
        let metrics = report.as_ref().map(|r| r.metrics.clone());
        let budget = Budget::new("p", 1024, report);
        let all = budget.take(1024, "t").await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(1024, "t").await.bytes() }
        });
        tokio::task::yield_now().await;
        drop(all);
        assert_eq!(waiting.await.ok(), Some(1024));
        let rendered = metrics
            .as_ref()
            .and_then(|m| m.render().ok())
            .unwrap_or_default();
        assert!(
            rendered.contains("mkb_memory_budget_waits_total{pipeline=\"p\"} 1"),
            "{rendered}"
        );
    }
}
