//! [`Retries`]: whether a partition writer tries a failed attempt again (a bulk write, a
//! dead letter), and after how long, as a pure decision the writer carries out.
//!
//! Rules:
//! - An attempt that failed for a reason that may pass is tried again after a delay that
//!   starts at [`FIRST_DELAY`] and doubles up to [`MAX_DELAY`], without jitter (one writer's
//!   retries, not many daemons' restarts).
//! - It is tried again at most `max_retries` times (`max_num_retries`): the failure after
//!   the last retry gives up, and the pipeline restarts from its committed offsets.
//! - Nothing is tried again once the writer's lease is no longer live: the partition was
//!   revoked (or the pipeline drains), and its next owner reads the records again.
//!   That is checked first: a revoked writer neither retries nor fails the pipeline.

use std::time::Duration;

use crate::backoff::Backoff;

/// The first retry's delay.
pub const FIRST_DELAY: Duration = Duration::from_millis(200);
/// The longest delay between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait this long (less if the lease ends meanwhile), then try again.
    Retry(Duration),
    /// Every retry failed: give up and say why.
    GiveUp,
    /// The lease is no longer live: leave the work to the partition's next owner.
    Leave,
}

/// The attempts at one thing (a batch's bulk write, one dead letter).
#[derive(Debug, Clone)]
pub struct Retries {
    backoff: Backoff,
    max_retries: u32,
}

impl Retries {
    /// Attempts that may be retried `max_retries` times.
    pub fn new(max_retries: u32) -> Self {
        Self {
            backoff: Backoff::new(FIRST_DELAY, MAX_DELAY),
            max_retries,
        }
    }

    /// An attempt failed, the lease being `live` now: what follows.
    pub fn failed(&mut self, live: bool) -> Next {
        if !live {
            Next::Leave
        } else if self.backoff.failures() >= self.max_retries {
            Next::GiveUp
        } else {
            Next::Retry(self.backoff.next_delay())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut retries: Retries, failures: usize) -> Vec<Next> {
        (0..failures).map(|_| retries.failed(true)).collect()
    }

    #[test]
    fn a_failure_is_retried_max_retries_times_with_a_doubling_delay_then_given_up() {
        let ms = |n| Next::Retry(Duration::from_millis(n));
        assert_eq!(
            run(Retries::new(3), 5),
            [ms(200), ms(400), ms(800), Next::GiveUp, Next::GiveUp]
        );
    }

    #[test]
    fn no_retries_gives_up_at_the_first_failure() {
        assert_eq!(run(Retries::new(0), 1), [Next::GiveUp]);
    }

    #[test]
    fn the_delay_never_passes_the_maximum() {
        let last = run(Retries::new(20), 20).pop();
        assert_eq!(last, Some(Next::Retry(MAX_DELAY)));
    }

    #[test]
    fn a_writer_whose_lease_ended_leaves_the_work_instead_of_retrying_or_failing() {
        let mut retries = Retries::new(2);
        assert_eq!(retries.failed(false), Next::Leave);
        // Not counted: a live lease still has its retries.
        assert_eq!(retries.failed(true), Next::Retry(FIRST_DELAY));
        let mut spent = Retries::new(0);
        assert_eq!(spent.failed(false), Next::Leave, "revoked before giving up");
    }
}
