//! [`Lease`]: one incarnation's right to write and commit a partition, and the fence that
//! takes it away when the partition is revoked.
//!
//! A partition assigned to this consumer gets a new lease, with an [`Incarnation`] number no
//! earlier writer of the pipeline had. The lease moves one way:
//! - `Live`: the writer reads, writes and commits.
//! - `Stopping` (revoke or drain begun): the writer starts no new write; the write on its
//!   way finishes and its commit is still allowed.
//! - `Fenced` (the revoke returned, whether or not the writer confirmed): nothing more is
//!   written or committed under this lease. A commit and the fence exclude each other, so a
//!   commit either happens before the revoke returns or not at all.
//!
//! Every message a writer sends carries its incarnation, so the supervisor can tell a
//! current writer's failure from a revoked one's.
//!
//! A lost assignment (the group session expired: the process was paused, or cut off from
//! the broker, longer than `session.timeout.ms`) is fenced at once, without waiting for the
//! write on its way: the partition may have a new owner already. A process that was stopped
//! longer than the session timeout learns it from librdkafka only after it ran again for a
//! moment, so a lease also holds the [`SessionClock`]: once the process has not run for the
//! session timeout, no write starts and nothing is committed under it, whichever thread
//! wakes first.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Which assignment of a partition a writer belongs to; unique within a pipeline
/// supervisor, across its restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Incarnation(pub u64);

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Writing and committing.
    Live,
    /// No new write; the one on its way may finish and commit.
    Stopping,
    /// Nothing more.
    Fenced,
}

/// Whether this process ran recently enough for its consumer group session to be alive:
/// a ticker marks it every few hundred milliseconds; a gap of the session timeout or more
/// means the process was stopped (a paused VM, SIGSTOP) long enough for the broker to give
/// its partitions to another consumer.
#[derive(Debug)]
pub struct SessionClock {
    timeout: Duration,
    last_tick: Mutex<Instant>,
}

impl SessionClock {
    /// A clock for a session of `timeout` (`session.timeout.ms`), marked at `now`.
    pub fn new(timeout: Duration, now: Instant) -> Self {
        Self {
            timeout,
            last_tick: Mutex::new(now),
        }
    }

    /// The session timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the gap between the last mark and `now` still lets the session be alive.
    pub fn may_be_alive(&self, now: Instant) -> bool {
        let last = *self
            .last_tick
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        now.saturating_duration_since(last) < self.timeout
    }

    /// Marks the process running at `now`, after `on_gap` ran with the gap when it was the
    /// session timeout or more (the caller fences its leases there: until the mark, no
    /// lease of this clock is live, so nothing slips between).
    pub fn tick(&self, now: Instant, on_gap: impl FnOnce(Duration)) {
        let mut last = self
            .last_tick
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let gap = now.saturating_duration_since(*last);
        if gap >= self.timeout {
            on_gap(gap);
        }
        *last = now;
    }
}

/// One incarnation's right to write and commit its partition.
#[derive(Debug)]
pub struct Lease {
    incarnation: Incarnation,
    state: watch::Sender<LeaseState>,
    /// Held across a commit and across fencing, so the two never interleave.
    gate: Mutex<()>,
    /// The group session the assignment belongs to, when one is watched.
    session: Option<Arc<SessionClock>>,
}

impl Lease {
    /// A live lease of `incarnation`.
    pub fn new(incarnation: Incarnation) -> Self {
        Self {
            incarnation,
            state: watch::Sender::new(LeaseState::Live),
            gate: Mutex::new(()),
            session: None,
        }
    }

    /// A live lease of `incarnation` in the group session `session`: not live once the
    /// process has not run for the session timeout.
    pub fn in_session(incarnation: Incarnation, session: Arc<SessionClock>) -> Self {
        Self {
            session: Some(session),
            ..Self::new(incarnation)
        }
    }

    fn session_may_be_alive(&self) -> bool {
        self.session
            .as_ref()
            .is_none_or(|s| s.may_be_alive(Instant::now()))
    }

    /// The incarnation holding the lease.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// Where the lease stands now.
    pub fn state(&self) -> LeaseState {
        *self.state.borrow()
    }

    /// Whether a new write may start: the lease is live and its session may be.
    pub fn is_live(&self) -> bool {
        self.state() == LeaseState::Live && self.session_may_be_alive()
    }

    /// Begins the end: no new write starts (a fenced lease stays fenced).
    pub fn stop(&self) {
        self.state.send_if_modified(|state| {
            let was_live = *state == LeaseState::Live;
            if was_live {
                *state = LeaseState::Stopping;
            }
            was_live
        });
    }

    /// Takes the lease away for good, after any commit on its way.
    pub fn fence(&self) {
        let _gate = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        self.state.send_replace(LeaseState::Fenced);
    }

    /// Runs `commit` unless the lease is fenced, excluding a concurrent [`Lease::fence`];
    /// `None` when fenced.
    pub fn commit_with<T>(&self, commit: impl FnOnce() -> T) -> Option<T> {
        let _gate = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        (self.state() != LeaseState::Fenced && self.session_may_be_alive()).then(commit)
    }

    /// Resolves once the lease is no longer live.
    pub async fn ended(&self) {
        let mut watching = self.state.subscribe();
        // The sender lives as long as `self`, so this only ends when the state changes.
        let _ = watching.wait_for(|state| *state != LeaseState::Live).await;
    }

    /// Waits `delay`, or less when the lease ends; answers whether it is still live.
    pub async fn pause(&self, delay: std::time::Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.ended() => {}
        }
        self.is_live()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_lease_goes_live_stopping_fenced_and_never_back() {
        let lease = Lease::new(Incarnation(3));
        assert!(lease.is_live());
        assert_eq!(lease.commit_with(|| 1), Some(1));
        lease.stop();
        assert_eq!(lease.state(), LeaseState::Stopping);
        assert!(!lease.is_live());
        // The write on its way may still commit.
        assert_eq!(lease.commit_with(|| 2), Some(2));
        lease.fence();
        assert_eq!(lease.commit_with(|| 3), None);
        lease.stop();
        assert_eq!(lease.state(), LeaseState::Fenced);
    }

    #[test]
    fn a_commit_under_way_finishes_before_the_fence_takes_effect() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let lease = Arc::new(Lease::new(Incarnation(1)));
        let done = Arc::new(AtomicBool::new(false));
        let (entered, wait_entered) = std::sync::mpsc::channel();
        let committing = {
            let (lease, done) = (lease.clone(), done.clone());
            std::thread::spawn(move || {
                lease.commit_with(|| {
                    entered.send(()).ok();
                    std::thread::sleep(Duration::from_millis(100));
                    done.store(true, Ordering::SeqCst);
                    "committed"
                })
            })
        };
        wait_entered.recv().ok();
        lease.fence();
        // `fence` returned only after the commit did.
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(committing.join().ok().flatten(), Some("committed"));
        assert_eq!(lease.commit_with(|| "late"), None);
    }

    /// Issue 21, item 11: a process stopped longer than its session timeout starts no
    /// write and commits nothing when it runs again, whether the writer or the ticker wakes
    /// first; the ticker reports the gap once.
    #[test]
    fn a_process_stopped_past_the_session_timeout_writes_and_commits_nothing() {
        let start = Instant::now();
        let clock = Arc::new(SessionClock::new(Duration::from_secs(6), start));
        let lease = Lease::in_session(Incarnation(1), clock.clone());
        assert!(lease.is_live());
        clock.tick(start + Duration::from_secs(5), |_| panic!("no gap yet"));
        assert!(clock.may_be_alive(start + Duration::from_secs(10)));
        // Stopped from 5 s to 12 s: the writer wakes first.
        assert!(!clock.may_be_alive(start + Duration::from_secs(12)));
        let mut gaps = Vec::new();
        clock.tick(start + Duration::from_secs(12), |gap| {
            gaps.push(gap);
            lease.fence();
        });
        assert_eq!(gaps, [Duration::from_secs(7)]);
        assert!(!lease.is_live());
        assert_eq!(lease.commit_with(|| "late"), None);
        clock.tick(start + Duration::from_secs(13), |_| panic!("one gap"));
        // A lease without a session is not affected.
        assert!(Lease::new(Incarnation(2)).is_live());
    }

    #[tokio::test]
    async fn ended_resolves_on_stop_and_on_fence() {
        let lease = Arc::new(Lease::new(Incarnation(1)));
        let waiting = tokio::spawn({
            let lease = lease.clone();
            async move { lease.ended().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        lease.stop();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("ended() did not resolve on stop"));
        let fenced = Lease::new(Incarnation(2));
        fenced.fence();
        tokio::time::timeout(Duration::from_secs(1), fenced.ended())
            .await
            .unwrap_or_else(|_| panic!("ended() did not resolve on fence"));
    }
}
