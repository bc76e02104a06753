//! The source supervisor's two decisions about one reader, pure: where a restarted reader
//! starts, and whether a reader's stream stalled.
//!
//! Where a restarted reader starts ([`resume_from`]), by what its failure asked for
//! ([`ResumeAt`]):
//! - `Recopy` copies the namespace again and `Latest` starts at the newest change; both
//!   forget where the reader first opened (its pinned start), which no longer holds.
//! - `Acknowledged` starts after the newest position Kafka acknowledged for the reader;
//!   without one, at its checkpoint; without that either, where it first opened (pinned) or
//!   at the pipeline's initial start ([`Restart::WithoutCheckpoint`]: the supervisor holds
//!   both). Nothing the reader read is skipped.
//!
//! When a reader is stalled ([`stall_verdict`]): a reader with a running actor whose stream
//! has not answered for longer than `stall_timeout` is stalled (reported and restarted); a
//! stalled reader whose stream answered since, within the timeout, has recovered (the
//! report is cleared). A reader waiting for Kafka is not idle (see
//! [`super::liveness::ReaderLiveness`]), and a reader without an actor (restarting) is not
//! judged.

use std::time::Duration;

use super::model::{Position, StartAt};
use super::policy::ResumeAt;

/// Where a restarted reader starts.
#[derive(Debug, Clone)]
pub enum Restart {
    /// At this start.
    At(StartAt),
    /// At this start, after forgetting where the reader first opened.
    Unpinned(StartAt),
    /// Neither an acknowledged position nor a checkpoint: where the reader first opened, or
    /// the pipeline's initial start.
    WithoutCheckpoint,
}

/// Where a reader restarted after a failure asking for `resume` starts, given the newest
/// position Kafka acknowledged for it and where its checkpoint starts (if it has a usable
/// one).
pub fn resume_from(
    resume: ResumeAt,
    acknowledged: Option<Position>,
    checkpoint: Option<StartAt>,
) -> Restart {
    match (resume, acknowledged, checkpoint) {
        (ResumeAt::Recopy, _, _) => Restart::Unpinned(StartAt::CopyExisting),
        (ResumeAt::Latest, _, _) => Restart::Unpinned(StartAt::Latest),
        (ResumeAt::Acknowledged, Some(position), _) => Restart::At(StartAt::Resume(position)),
        (ResumeAt::Acknowledged, None, Some(start)) => Restart::At(start),
        (ResumeAt::Acknowledged, None, None) => Restart::WithoutCheckpoint,
    }
}

/// What a stall check concludes about one reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallVerdict {
    /// Idle for this long, past the timeout: report it and restart the reader.
    Stalled(Duration),
    /// Stalled before, its stream answered since: clear the report.
    Recovered,
    /// Nothing changes.
    Unchanged,
}

/// What a reader's state says about a stall.
#[derive(Debug, Clone, Copy)]
pub struct ReaderState {
    /// How long its stream has not answered; `None` while it waits for Kafka.
    pub idle: Option<Duration>,
    /// Whether its actor runs (a restarting reader is not judged).
    pub running: bool,
    /// Whether it is reported stalled now.
    pub stalled: bool,
    /// Whether its stream ever answered.
    pub advanced: bool,
}

/// The stall check of one reader against `timeout`.
pub fn stall_verdict(reader: ReaderState, timeout: Duration) -> StallVerdict {
    match reader.idle {
        Some(idle) if idle > timeout && reader.running => StallVerdict::Stalled(idle),
        Some(idle) if idle <= timeout && reader.stalled && reader.advanced => {
            StallVerdict::Recovered
        }
        _ => StallVerdict::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(token: &str) -> Position {
        let token = bson::from_bson(bson::Bson::Document(bson::doc! {"_data": token}))
            .unwrap_or_else(|e| panic!("a resume token: {e}"));
        Position::stream(token)
    }

    /// The `_data` of a restart at a position.
    fn data(restart: &Restart) -> Option<String> {
        let Restart::At(StartAt::Resume(position)) = restart else {
            return None;
        };
        let token = bson::to_bson(&position.token).ok()?;
        Some(token.as_document()?.get_str("_data").ok()?.to_owned())
    }

    fn name(restart: &Restart) -> String {
        match restart {
            Restart::At(start) => format!("at {}", start.name()),
            Restart::Unpinned(start) => format!("unpinned {}", start.name()),
            Restart::WithoutCheckpoint => "without checkpoint".to_owned(),
        }
    }

    #[test]
    fn a_restart_starts_after_what_kafka_acknowledged_else_the_checkpoint_else_the_pin() {
        let acknowledged = resume_from(
            ResumeAt::Acknowledged,
            Some(position("b")),
            Some(StartAt::Resume(position("a"))),
        );
        assert_eq!(
            data(&acknowledged).as_deref(),
            Some("b"),
            "{acknowledged:?}"
        );
        let checkpoint = resume_from(
            ResumeAt::Acknowledged,
            None,
            Some(StartAt::Resume(position("a"))),
        );
        assert_eq!(data(&checkpoint).as_deref(), Some("a"), "{checkpoint:?}");
        assert_eq!(
            name(&resume_from(ResumeAt::Acknowledged, None, None)),
            "without checkpoint"
        );
    }

    #[test]
    fn recopy_and_latest_ignore_every_position_and_forget_the_pin() {
        for acknowledged in [None, Some(position("b"))] {
            for checkpoint in [None, Some(StartAt::Resume(position("a")))] {
                let recopy =
                    resume_from(ResumeAt::Recopy, acknowledged.clone(), checkpoint.clone());
                assert_eq!(name(&recopy), "unpinned copy_existing", "{recopy:?}");
                let latest = resume_from(ResumeAt::Latest, acknowledged.clone(), checkpoint);
                assert_eq!(name(&latest), "unpinned latest", "{latest:?}");
            }
        }
    }

    #[test]
    fn a_running_reader_idle_past_the_timeout_is_stalled_and_recovers_once_it_answers() {
        let timeout = Duration::from_secs(60);
        let state = |idle: Option<u64>, running, stalled, advanced| ReaderState {
            idle: idle.map(Duration::from_secs),
            running,
            stalled,
            advanced,
        };
        assert_eq!(
            stall_verdict(state(Some(61), true, false, true), timeout),
            StallVerdict::Stalled(Duration::from_secs(61))
        );
        // Reported again at each check while it stays idle and runs.
        assert_eq!(
            stall_verdict(state(Some(90), true, true, true), timeout),
            StallVerdict::Stalled(Duration::from_secs(90))
        );
        // Exactly the timeout is not past it.
        assert_eq!(
            stall_verdict(state(Some(60), true, false, true), timeout),
            StallVerdict::Unchanged
        );
        // A restarting reader (no actor) is not judged.
        assert_eq!(
            stall_verdict(state(Some(600), false, true, true), timeout),
            StallVerdict::Unchanged
        );
        // Waiting for Kafka is not idle.
        assert_eq!(
            stall_verdict(state(None, true, true, true), timeout),
            StallVerdict::Unchanged
        );
        assert_eq!(
            stall_verdict(state(Some(1), true, true, true), timeout),
            StallVerdict::Recovered
        );
        // A stream that never answered has not recovered.
        assert_eq!(
            stall_verdict(state(Some(1), true, true, false), timeout),
            StallVerdict::Unchanged
        );
        assert_eq!(
            stall_verdict(state(Some(1), true, false, true), timeout),
            StallVerdict::Unchanged
        );
    }
}
