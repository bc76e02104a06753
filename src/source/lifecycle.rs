//! The life of a source pipeline as its supervisor runs it: starting (fence the producer,
//! read the checkpoints, start the readers, in that order), running, restarting (readers
//! stopped, the old producer's transaction aborted and the producer closed, a backoff), and
//! stopped for good.
//!
//! It does no I/O: the supervisor reports what happened and asks whether a failure is the
//! current launch's. Every reader of a launch failing at once, a late failure of a producer
//! already replaced, or a start attempt finishing after a newer one began, each used to
//! start a restart of its own (a restart storm; under exactly-once, producers sharing one
//! `transactional.id` fencing each other in a loop). Here they collapse into one restart.
//!
//! A pause by hand (`POST /pipelines/<name>/pause`) winds the launch down as a restart does
//! and holds the next start back until the resume: a restart under way (after a failure, a
//! change of slots) waits for it too, so a paused pipeline reads nothing.

/// What the pipeline is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A start attempt fences its producer and reads the checkpoints.
    Starting,
    /// A launch runs its producer and readers.
    Running,
    /// A restart stops what ran and waits for its backoff.
    Restarting,
    /// Stopped for good (a failure no restart fixes, or told to stop).
    Stopped,
}

/// What a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A part (reader or producer) of this launch.
    Launch(u64),
    /// This start attempt (fencing, reading checkpoints, creating topics).
    Start(u64),
}

/// The pipeline's phase, start attempt and launch.
#[derive(Debug)]
pub struct Lifecycle {
    phase: Phase,
    /// The newest start attempt.
    attempt: u64,
    /// The newest launch (a start attempt that got to start its readers).
    launch: u64,
    /// Paused by hand.
    paused: bool,
    /// A start came due while paused: the resume makes it.
    held: bool,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A pipeline making its first start attempt.
    pub fn new() -> Self {
        Self {
            phase: Phase::Starting,
            attempt: 1,
            launch: 0,
            paused: false,
            held: false,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The newest start attempt.
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// The newest launch.
    pub fn launch(&self) -> u64 {
        self.launch
    }

    /// Start attempt `attempt` fenced its producer and read the checkpoints: the launch
    /// number to start its readers as, or `None` when the attempt is no longer current (a
    /// newer one began, or the pipeline stopped): its producer is then dropped unused.
    pub fn prepared(&mut self, attempt: u64) -> Option<u64> {
        if self.phase != Phase::Starting || attempt != self.attempt {
            return None;
        }
        self.launch += 1;
        self.phase = Phase::Running;
        Some(self.launch)
    }

    /// Whether a failure of `origin` is about what runs now: only then does the
    /// supervisor act on it (restart a reader, restart the pipeline, or fail).
    pub fn is_current(&self, origin: Origin) -> bool {
        match origin {
            Origin::Launch(launch) => self.phase == Phase::Running && launch == self.launch,
            Origin::Start(attempt) => self.phase == Phase::Starting && attempt == self.attempt,
        }
    }

    /// A restart of the whole pipeline begins; `false` when one is under way already or
    /// the pipeline stopped (the failure joins it).
    pub fn restart(&mut self) -> bool {
        match self.phase {
            Phase::Starting | Phase::Running => {
                self.phase = Phase::Restarting;
                true
            }
            Phase::Restarting | Phase::Stopped => false,
        }
    }

    /// What ran is stopped and the backoff passed: the start attempt to make now, or `None`
    /// when the pipeline stopped meanwhile or is paused (the resume starts it).
    pub fn start_again(&mut self) -> Option<u64> {
        if self.phase != Phase::Restarting {
            return None;
        }
        if self.paused {
            self.held = true;
            return None;
        }
        self.attempt += 1;
        self.phase = Phase::Starting;
        Some(self.attempt)
    }

    /// Paused by hand: `true` when what runs (or starts) must be wound down now; `false` when
    /// a restart is under way already (its start is held back) or the pipeline stopped.
    pub fn pause(&mut self) -> bool {
        self.paused = true;
        match self.phase {
            Phase::Starting | Phase::Running => {
                self.phase = Phase::Restarting;
                true
            }
            Phase::Restarting | Phase::Stopped => false,
        }
    }

    /// Resumed: the start attempt to make now, or `None` when none is due yet (a wind-down
    /// or backoff still under way starts it when it ends) or the pipeline is not paused.
    pub fn resume(&mut self) -> Option<u64> {
        if !std::mem::take(&mut self.paused) {
            return None;
        }
        if std::mem::take(&mut self.held) {
            self.start_again()
        } else {
            None
        }
    }

    /// Whether the pipeline is paused by hand.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The pipeline stops for good.
    pub fn stop(&mut self) {
        self.phase = Phase::Stopped;
    }

    /// Whether the pipeline stopped for good.
    pub fn is_stopped(&self) -> bool {
        self.phase == Phase::Stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> Lifecycle {
        let mut life = Lifecycle::new();
        assert_eq!(life.prepared(1), Some(1));
        life
    }

    /// Issue 12, defect 4: one pipeline restart per failed reader.
    #[test]
    fn every_reader_of_a_launch_failing_at_once_restarts_the_pipeline_once() {
        let mut life = running();
        let mut restarts = 0;
        for _reader in 0..5 {
            if life.is_current(Origin::Launch(1)) && life.restart() {
                restarts += 1;
            }
        }
        assert_eq!(restarts, 1);
        assert_eq!(life.phase(), Phase::Restarting);
        assert!(!life.restart(), "a restart is under way");
    }

    #[test]
    fn failures_of_a_replaced_launch_restart_nothing() {
        let mut life = running();
        assert!(life.restart());
        assert_eq!(life.start_again(), Some(2));
        // The old producer, fenced by the new one, fails while the new one starts...
        assert!(!life.is_current(Origin::Launch(1)));
        assert_eq!(life.prepared(2), Some(2));
        // ... or once it runs.
        assert!(!life.is_current(Origin::Launch(1)));
        assert!(life.is_current(Origin::Launch(2)));
    }

    #[test]
    fn a_start_attempt_overtaken_by_a_newer_one_launches_nothing() {
        let mut life = Lifecycle::new();
        assert!(life.is_current(Origin::Start(1)));
        assert!(life.restart(), "attempt 1 could not read the checkpoints");
        assert_eq!(life.start_again(), Some(2));
        assert_eq!(life.prepared(1), None, "attempt 1 finishing late");
        assert!(!life.is_current(Origin::Start(1)));
        assert_eq!(life.prepared(2), Some(1), "the first launch");
        assert_eq!(life.prepared(2), None, "launched once");
    }

    #[test]
    fn a_paused_pipeline_starts_again_only_when_resumed() {
        let mut life = running();
        assert!(life.pause(), "the launch is wound down");
        assert!(
            !life.is_current(Origin::Launch(1)),
            "its failures are stale"
        );
        assert!(!life.restart(), "nothing restarts while paused");
        assert_eq!(
            life.start_again(),
            None,
            "the wound-down launch's start is held"
        );
        assert!(!life.pause(), "paused twice: nothing more to wind down");
        assert_eq!(
            life.resume(),
            Some(2),
            "the held start is made at the resume"
        );
        assert_eq!(life.prepared(2), Some(2));
        assert_eq!(life.resume(), None, "not paused");
    }

    #[test]
    fn a_pause_during_a_restart_holds_its_start_and_a_resume_before_it_leaves_it_due() {
        let mut life = running();
        assert!(life.restart(), "a failure");
        assert!(!life.pause(), "the restart winds down already");
        assert_eq!(life.start_again(), None, "its backoff ends while paused");
        assert_eq!(life.resume(), Some(2));

        let mut life = running();
        assert!(life.restart());
        assert!(!life.pause());
        assert_eq!(life.resume(), None, "the backoff is still under way");
        assert_eq!(
            life.start_again(),
            Some(2),
            "it starts when the backoff ends"
        );
    }

    #[test]
    fn a_pipeline_paused_while_starting_launches_nothing_until_resumed() {
        let mut life = Lifecycle::new();
        assert!(life.pause());
        assert_eq!(
            life.prepared(1),
            None,
            "the start attempt under way is dropped"
        );
        assert_eq!(life.start_again(), None);
        assert_eq!(life.resume(), Some(2));
        assert_eq!(life.prepared(2), Some(1));
    }

    #[test]
    fn a_stopped_pipeline_neither_restarts_nor_launches() {
        let mut life = running();
        assert!(life.restart());
        life.stop();
        assert!(life.is_stopped());
        assert_eq!(life.start_again(), None);
        assert!(!life.restart());
        assert!(!life.is_current(Origin::Launch(1)));
        let mut starting = Lifecycle::new();
        starting.stop();
        assert_eq!(starting.prepared(1), None);
    }
}
