//! How Kafka's acknowledgements reach the producer actor of an at-least-once pipeline.
//!
//! The acknowledgements of a batch's records are awaited by a task of their own, outside the
//! actor: the task is woken by its own delivery reports only (an actor's own futures are all
//! polled whenever the actor is woken, on the thread the readers share), and it notes when the
//! last report came. It leaves the batch's answer in [`Acknowledgements`]; the actor takes
//! every answer waiting at the start of each message it handles and, when idle, when the queue
//! wakes it. How long an answer waits is `mkb_source_ack_recording_duration_seconds`.
//!
//! Taking them is plain bookkeeping ([`Acknowledgements::take`]); what the ledger asks in
//! return goes through [`latest_per_namespace`] so that two checkpoints of one reader
//! released in one go are written as one, the newer (the actor queues each write as a
//! `ctx.wait`, and waits queued in one turn run newest first).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures_util::stream::{self, Stream};
use tokio::sync::Notify;

use super::error::SourceError;
use super::ledger::{Action, Ticket};

/// The answer Kafka gave for every record of one batch.
#[derive(Debug)]
pub struct Answered {
    /// The batch.
    pub ticket: Ticket,
    /// Every record acknowledged, or the first that was not.
    pub result: Result<(), SourceError>,
    /// When the last answer came (librdkafka's delivery report, as the task saw it).
    pub at: Instant,
}

/// Where the tasks awaiting acknowledgements leave them for the producer actor: a queue and
/// a wake-up. Cloned into each task.
#[derive(Debug, Clone, Default)]
pub struct Acknowledgements {
    queue: Arc<Mutex<VecDeque<Answered>>>,
    wake: Arc<Notify>,
}

impl Acknowledgements {
    /// Leaves `answered` for the actor and wakes it.
    pub fn push(&self, answered: Answered) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(answered);
        self.wake.notify_one();
    }

    /// Every answer waiting, oldest first.
    pub fn take(&self) -> Vec<Answered> {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect()
    }

    /// Answers waiting.
    pub fn waiting(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// One item each time answers were left since the last item (a wake-up is never lost:
    /// one left while nobody waits is kept for the next poll).
    pub fn wake_ups(&self) -> impl Stream<Item = ()> + 'static {
        stream::unfold(self.wake.clone(), |wake| async move {
            wake.notified().await;
            Some(((), wake))
        })
    }
}

/// `actions` in order, but of several [`Action::Write`]s of one namespace only the last (the
/// newest position: the ledger releases a reader's positions in order), in the place of the
/// first.
pub fn latest_per_namespace(actions: Vec<Action>) -> Vec<Action> {
    let mut kept: Vec<Action> = Vec::with_capacity(actions.len());
    for action in actions {
        if let Action::Write { namespace, .. } = &action {
            let earlier = kept
                .iter_mut()
                .find(|kept| matches!(kept, Action::Write { namespace: n, .. } if n == namespace));
            if let Some(earlier) = earlier {
                *earlier = action;
                continue;
            }
        }
        kept.push(action);
    }
    kept
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bson::Bson;
    use futures_util::StreamExt;

    use super::*;
    use crate::source::ledger::CheckpointLedger;
    use crate::source::model::{Position, ReaderId};

    fn token(n: i32) -> Position {
        Position::stream(
            bson::from_bson(Bson::Document(bson::doc! { "_data": format!("T{n}") })).unwrap(),
        )
    }

    fn write(namespace: &str, n: i32) -> Action {
        Action::Write {
            namespace: namespace.to_owned(),
            position: token(n),
        }
    }

    #[test]
    fn only_the_newest_write_of_a_namespace_is_kept() {
        let wake = Action::WakeAfter {
            namespace: "db.b".to_owned(),
            after: Duration::from_millis(5),
        };
        let actions = vec![
            write("db.a", 1),
            wake.clone(),
            write("db.b", 1),
            write("db.a", 2),
            write("db.a", 3),
        ];
        assert_eq!(
            latest_per_namespace(actions),
            vec![write("db.a", 3), wake, write("db.b", 1)]
        );
    }

    /// With no interval between checkpoints, answers of two batches of one reader taken
    /// together release two positions: only the newer is written.
    #[test]
    fn answers_taken_together_write_one_checkpoint_per_reader() {
        let now = Instant::now();
        let mut ledger = CheckpointLedger::at_least_once(Duration::ZERO);
        let reader = ReaderId {
            namespace: "db.c".into(),
            generation: 1,
        };
        let answers = Acknowledgements::default();
        for n in 1..=3 {
            let ticket = ledger.sent(&reader, Some(token(n))).unwrap();
            answers.push(Answered {
                ticket,
                result: Ok(()),
                at: now,
            });
        }
        assert_eq!(answers.waiting(), 3);
        let actions = answers
            .take()
            .iter()
            .filter_map(|a| ledger.acknowledged(&a.ticket, now))
            .collect();
        assert_eq!(latest_per_namespace(actions), vec![write("db.c", 3)]);
        assert_eq!(answers.waiting(), 0);
        assert_eq!(ledger.in_flight(), 0);
    }

    #[tokio::test]
    async fn an_answer_left_while_nobody_waits_still_wakes() {
        let answers = Acknowledgements::default();
        let mut wake_ups = Box::pin(answers.wake_ups());
        let mut ledger = CheckpointLedger::at_least_once(Duration::ZERO);
        let reader = ReaderId {
            namespace: "db.c".into(),
            generation: 1,
        };
        answers.push(Answered {
            ticket: ledger.sent(&reader, Some(token(1))).unwrap(),
            result: Ok(()),
            at: Instant::now(),
        });
        let woke = tokio::time::timeout(Duration::from_secs(1), wake_ups.next()).await;
        assert_eq!(woke, Ok(Some(())));
        assert_eq!(answers.take().len(), 1);
    }
}
