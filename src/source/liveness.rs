//! Stall tracking: when a reader last heard from its change stream (or copy), and where
//! a stream opened without a position first found itself. The reader writes it, the
//! supervisor reads it (stall restarts, the pinned start).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::model::Position;

/// When a reader last heard from its change stream (or copy), for stall detection. A
/// reader waiting for room in the producer's mailbox is held back by Kafka, not stalled.
#[derive(Debug)]
pub struct ReaderLiveness {
    started_millis: u64,
    /// 0 until the stream first answered.
    last_millis: AtomicU64,
    /// How many of the reader's tasks wait for Kafka (its mailbox, or room in the memory
    /// budget that records on their way to Kafka hold): reading and handing over run side by
    /// side, and one ending its wait does not end the other's.
    waiting_for_kafka: AtomicUsize,
    /// Where a reader started without a position (`latest`, a timestamp) found its stream
    /// when it opened: every restart before a checkpoint starts there.
    opened_at: std::sync::OnceLock<Position>,
}

pub(super) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

impl Default for ReaderLiveness {
    fn default() -> Self {
        Self {
            started_millis: now_millis(),
            last_millis: AtomicU64::new(0),
            waiting_for_kafka: AtomicUsize::new(0),
            opened_at: std::sync::OnceLock::new(),
        }
    }
}

impl ReaderLiveness {
    /// Records that the stream answered (an event, or an empty batch and its token).
    pub fn advanced(&self) {
        self.last_millis.store(now_millis(), Ordering::Relaxed);
    }

    /// Whether the stream answered at least once since the reader started.
    pub fn has_advanced(&self) -> bool {
        self.last_millis.load(Ordering::Relaxed) != 0
    }

    /// Records where the stream of a reader started without a position opened.
    pub fn opened(&self, position: Position) {
        let _ = self.opened_at.set(position);
    }

    /// Records that one of the reader's tasks starts (`true`) or ends (`false`) waiting for
    /// Kafka: room in the producer's mailbox, or in the memory budget. Calls pair up.
    pub fn waiting_for_kafka(&self, waiting: bool) {
        if waiting {
            self.waiting_for_kafka.fetch_add(1, Ordering::Relaxed);
        } else {
            // Never below 0, should a call be unpaired.
            let _ =
                self.waiting_for_kafka
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Where the stream of a reader started without a position opened, once it did.
    pub fn opened_at(&self) -> Option<Position> {
        self.opened_at.get().cloned()
    }

    /// How long the stream has not advanced (since the reader started, if it never did);
    /// `None` while the reader waits for Kafka.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.waiting_for_kafka.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = self
            .last_millis
            .load(Ordering::Relaxed)
            .max(self.started_millis);
        Some(Duration::from_millis(now_millis().saturating_sub(last)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reports_idle_time_but_not_while_waiting_for_kafka() {
        let progress = ReaderLiveness::default();
        assert!(!progress.has_advanced());
        assert!(progress
            .idle_for()
            .is_some_and(|d| d < Duration::from_secs(5)));
        progress.advanced();
        assert!(progress.has_advanced());
        progress.waiting_for_kafka(true);
        assert_eq!(progress.idle_for(), None);
    }

    #[test]
    fn one_task_ending_its_wait_for_kafka_does_not_end_the_others() {
        let progress = ReaderLiveness::default();
        progress.waiting_for_kafka(true);
        progress.waiting_for_kafka(true);
        progress.waiting_for_kafka(false);
        assert_eq!(progress.idle_for(), None);
        progress.waiting_for_kafka(false);
        progress.waiting_for_kafka(false);
        assert!(progress.idle_for().is_some());
    }
}
