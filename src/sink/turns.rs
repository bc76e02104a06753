//! [`WriteTurns`]: a sink pipeline's write turns, shared by its partition writers, and the
//! [`Turn`] one writer holds.
//!
//! Rules:
//! - A pipeline has a fixed number of turns (`WRITES_IN_FLIGHT`), however many partitions it
//!   has. A writer takes one once the first record of a batch is off its queue, gathers,
//!   converts and writes the batch under it, and gives it back when the batch is written or
//!   dropped; a writer that stops gives back the turn it holds.
//! - So at most that many batches are held in memory of ours at once: a writer waiting for a
//!   turn holds one record, the partition's others wait in its librdkafka queue (bounded by
//!   the prefetch share).
//! - A writer holding a turn whose queue has nothing ready writes what it gathered at once
//!   when another writer waits for a turn ([`WriteTurns::anyone_waiting`]), rather than hold
//!   the turn while its partition is fetched; with nobody waiting it gathers a full batch or
//!   waits `max_batch_delay` (see `intake`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// A pipeline's write turns.
#[derive(Debug)]
pub struct WriteTurns {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// Told each time a writer starts waiting.
    wanted: Notify,
}

/// Counts a writer waiting for a turn while it lives (a wait cancelled counts out too).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl WriteTurns {
    /// `turns` turns, none taken.
    pub fn new(turns: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(turns)),
            waiting: AtomicUsize::new(0),
            wanted: Notify::new(),
        }
    }

    /// A turn, waiting for one when none is free; dropped, the turn is given back. Only a
    /// writer that has to wait wakes the writers holding a turn ([`Self::wanted`]).
    pub async fn take(&self) -> OwnedSemaphorePermit {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return permit;
        }
        let _waiting = Waiting::new(&self.waiting);
        self.wanted.notify_waiters();
        match self.permits.clone().acquire_owned().await {
            Ok(permit) => permit,
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }

    /// Whether a writer waits for a turn now.
    pub fn anyone_waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Resolves once a writer waits for a turn (at once when one waits already).
    pub async fn wanted(&self) {
        loop {
            let told = self.wanted.notified();
            tokio::pin!(told);
            // Registered before the count is read: a writer starting to wait in between
            // wakes it.
            told.as_mut().enable();
            if self.anyone_waiting() {
                return;
            }
            told.await;
        }
    }

    /// Turns free now.
    #[cfg(test)]
    pub fn free(&self) -> usize {
        self.permits.available_permits()
    }

    /// Adds `n` turns (tests start with none, then give one).
    #[cfg(test)]
    pub fn add(&self, n: usize) {
        self.permits.add_permits(n);
    }
}

/// The write turn one writer holds, if any: taken by its stream of records before the first
/// record of a batch, handed to the batch's write, given back when that write is done.
#[derive(Clone, Default)]
pub struct Turn(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl Turn {
    fn slot(&self) -> MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the writer holds a turn.
    pub fn held(&self) -> bool {
        self.slot().is_some()
    }

    /// The writer holds `permit`.
    pub fn hold(&self, permit: OwnedSemaphorePermit) {
        *self.slot() = Some(permit);
    }

    /// The turn, no longer the writer's: dropped, it is given back.
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.slot().take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_writers_are_counted_until_served_or_gone() {
        let turns = Arc::new(WriteTurns::new(1));
        let first = turns.take().await;
        assert!(!turns.anyone_waiting(), "the first took a free turn");
        assert_eq!(turns.free(), 0);
        let waiter = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.take().await })
        };
        for _ in 0..100 {
            if turns.anyone_waiting() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(turns.anyone_waiting(), "the second waits");
        tokio::time::timeout(std::time::Duration::from_secs(5), turns.wanted())
            .await
            .unwrap_or_else(|_| panic!("a waiting writer is wanted at once"));
        drop(first);
        let second = waiter.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!turns.anyone_waiting(), "served, it waits no more");
        // A wait given up (the writer stopped) counts out too.
        let given_up =
            tokio::time::timeout(std::time::Duration::from_millis(20), turns.take()).await;
        assert!(given_up.is_err(), "no turn was free");
        assert!(!turns.anyone_waiting());
        let turn = Turn::default();
        turn.hold(second);
        assert!(turn.held());
        drop(turn.take());
        assert!(!turn.held());
        assert_eq!(
            turns.free(),
            1,
            "a turn taken out of the slot and dropped is given back"
        );
    }
}
