//! [`StallDetector`]: which partitions have records waiting (see [`waiting`]) while nothing
//! reaches their writer, for longer than a limit. Whatever the cause (a writer stuck
//! on MongoDB, a partition nobody reads), such a partition is reported, never silent.
//!
//! Pure: the consumer's statistics callback feeds it each partition's waiting records and a
//! counter of the records handed to the partition's writer, and carries out what it answers.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A partition's stall began or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallChange {
    /// Records waiting and no progress for longer than the limit.
    Stalled,
    /// Progress again, or nothing waiting.
    Recovered,
}

#[derive(Debug, Clone, Copy)]
struct Track {
    progress: u64,
    since: Instant,
    stalled: bool,
}

/// Tracks partitions (keyed by `K`) for stalls.
#[derive(Debug)]
pub struct StallDetector<K> {
    limit: Duration,
    tracks: HashMap<K, Track>,
}

impl<K: Eq + Hash + Clone> StallDetector<K> {
    /// A detector reporting partitions without progress for longer than `limit`.
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            tracks: HashMap::new(),
        }
    }

    /// Records that `partition` has `lag` records waiting and that `progress` records were
    /// handed to its writer so far (a counter that only grows); answers a change of state.
    pub fn observe(
        &mut self,
        partition: &K,
        lag: i64,
        progress: u64,
        now: Instant,
    ) -> Option<StallChange> {
        let track = self.tracks.entry(partition.clone()).or_insert(Track {
            progress,
            since: now,
            stalled: false,
        });
        if lag <= 0 || progress != track.progress {
            track.progress = progress;
            track.since = now;
            return std::mem::take(&mut track.stalled).then_some(StallChange::Recovered);
        }
        if !track.stalled && now.duration_since(track.since) >= self.limit {
            track.stalled = true;
            return Some(StallChange::Stalled);
        }
        None
    }

    /// Stops tracking `partition` (revoked); answers whether it was stalled.
    pub fn forget(&mut self, partition: &K) -> bool {
        self.tracks.remove(partition).is_some_and(|t| t.stalled)
    }

    /// The partitions stalled now.
    pub fn stalled(&self) -> impl Iterator<Item = &K> {
        self.tracks
            .iter()
            .filter(|(_, t)| t.stalled)
            .map(|(partition, _)| partition)
    }
}

/// Records of a partition that nothing has taken yet, from librdkafka's statistics: those
/// fetched and waiting in the partition's queue, plus those not fetched yet up to the end a
/// consumer may read (the last stable offset, else the high watermark). Not its consumer
/// lag: a transaction's commit marker keeps that at 1 for good after the last record.
pub fn waiting(fetchq_cnt: i64, next_offset: i64, ls_offset: i64, hi_offset: i64) -> i64 {
    let end = if ls_offset >= 0 { ls_offset } else { hi_offset };
    let unfetched = if next_offset >= 0 && end >= 0 {
        (end - next_offset).max(0)
    } else {
        0
    };
    fetchq_cnt.max(0) + unfetched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_records_are_queued_or_not_fetched_yet() {
        // 5 in the partition's queue, 20 not fetched up to the last stable offset.
        assert_eq!(waiting(5, 80, 100, 110), 25);
        // Without a last stable offset, up to the high watermark.
        assert_eq!(waiting(0, 80, -1, 100), 20);
        // Everything read, a commit marker last: nothing waits.
        assert_eq!(waiting(0, 101, 101, 101), 0);
        // Fetch position unknown yet: only what is queued counts.
        assert_eq!(waiting(3, -1001, 100, 100), 3);
    }

    const LIMIT: Duration = Duration::from_secs(30);

    #[test]
    fn lag_without_progress_is_a_stall_once_the_limit_passed() {
        let mut d = StallDetector::new(LIMIT);
        let t0 = Instant::now();
        assert_eq!(d.observe(&"p0", 10, 5, t0), None);
        assert_eq!(d.observe(&"p0", 10, 5, t0 + Duration::from_secs(29)), None);
        assert_eq!(
            d.observe(&"p0", 10, 5, t0 + LIMIT),
            Some(StallChange::Stalled)
        );
        // Reported once.
        assert_eq!(d.observe(&"p0", 12, 5, t0 + 2 * LIMIT), None);
        assert_eq!(d.stalled().collect::<Vec<_>>(), [&"p0"]);
        // Progress ends it.
        assert_eq!(
            d.observe(&"p0", 12, 6, t0 + 3 * LIMIT),
            Some(StallChange::Recovered)
        );
        assert_eq!(d.stalled().count(), 0);
    }

    #[test]
    fn progress_or_no_lag_is_never_a_stall() {
        let mut d = StallDetector::new(LIMIT);
        let t0 = Instant::now();
        for i in 0..10u32 {
            let at = t0 + LIMIT * i;
            // Busy: records keep reaching the writer.
            assert_eq!(d.observe(&"busy", 100, u64::from(i), at), None);
            // Idle and caught up.
            assert_eq!(d.observe(&"idle", 0, 7, at), None);
        }
        assert_eq!(d.stalled().count(), 0);
    }

    #[test]
    fn no_lag_ends_a_stall_and_forgetting_answers_whether_it_was_stalled() {
        let mut d = StallDetector::new(LIMIT);
        let t0 = Instant::now();
        d.observe(&"p", 3, 0, t0);
        assert_eq!(
            d.observe(&"p", 3, 0, t0 + LIMIT),
            Some(StallChange::Stalled)
        );
        assert_eq!(
            d.observe(&"p", 0, 0, t0 + LIMIT * 2),
            Some(StallChange::Recovered)
        );
        d.observe(&"q", 3, 0, t0);
        d.observe(&"q", 3, 0, t0 + LIMIT);
        assert!(d.forget(&"q"));
        assert!(!d.forget(&"q"));
        assert!(!d.forget(&"p"));
    }
}
