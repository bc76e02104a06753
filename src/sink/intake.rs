//! [`Intake`]: what a partition writer does with the records it takes off its partition's
//! queue: when it takes the next one, when it writes the batch it gathered, and what becomes
//! of that batch when the writer drains, fails or loses its lease. The writer's decisions,
//! without the actor, so they are tested without Kafka, MongoDB or an actix `System`.
//!
//! Rules:
//! - The writer takes records one at a time while it is open. While a batch is written it
//!   takes none (the actor waits for the write with `ctx.wait`, which holds its queue's
//!   stream back), so the queue fills and librdkafka stops fetching the partition once the
//!   queue holds `queued.max.messages.kbytes`: nothing is paused, dropped or fetched twice.
//! - A batch is written once it holds `max_batch_size` records, or `max_batch_delay` after
//!   its first record, or when the writer is flushed (a drain: committed synchronously), or
//!   when its queue ran dry while another writer waits for the turn it holds (see `turns`).
//! - A batch is written only under a live lease; without one it is dropped unwritten, and the
//!   partition's next owner reads its records again.
//! - A record taken once the writer is closed, or while its lease is no longer live, is
//!   dropped: it is not committed, so it is read again.
//! - When the lease ends (revoke, lost assignment, a session gone), the writer drops the batch
//!   it gathered, unwritten, takes nothing more and stops after the write already under way
//!   (which still commits under a stopping lease and commits nothing under a fenced one).
//! - After a failure or a closing flush the writer is closed: it takes and writes nothing more.

/// How a written batch's offset is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Without waiting for the broker (the writer goes on at once).
    Async,
    /// Waiting for the broker (a flush, before the writer answers or stops).
    Sync,
}

/// What the writer does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Go on gathering; start the batch delay when `start_delay` (the batch's first record).
    Gather {
        /// The record is the first of its batch.
        start_delay: bool,
    },
    /// Write the batch gathered ([`Intake::take_batch`]), then go on (or stop, when closed).
    Write(Commit),
    /// Nothing to do.
    Nothing,
}

/// The batch a partition writer gathers, and whether it takes more.
#[derive(Debug)]
pub struct Intake<T> {
    batch: Vec<T>,
    max_batch_size: usize,
    delay_running: bool,
    closed: bool,
}

impl<T> Intake<T> {
    /// An open intake writing batches of up to `max_batch_size` records.
    pub fn new(max_batch_size: usize) -> Self {
        Self {
            batch: Vec::new(),
            max_batch_size: max_batch_size.max(1),
            delay_running: false,
            closed: false,
        }
    }

    /// Whether the writer takes records off its queue: until it closes.
    pub fn is_open(&self) -> bool {
        !self.closed
    }

    /// How many records the batch gathered holds.
    pub fn gathered(&self) -> usize {
        self.batch.len()
    }

    /// Whether a record just taken joins the batch (`lease_live`: the lease allows a new
    /// write); one that does not is dropped unread.
    pub fn accepts(&self, lease_live: bool) -> bool {
        !self.closed && lease_live
    }

    /// Adds `record` to the batch (one [`Intake::accepts`]); answers whether to write now.
    pub fn add(&mut self, record: T) -> Step {
        if self.closed {
            return Step::Nothing;
        }
        self.batch.push(record);
        if self.batch.len() >= self.max_batch_size {
            return Step::Write(Commit::Async);
        }
        let start_delay = !self.delay_running;
        self.delay_running = true;
        Step::Gather { start_delay }
    }

    /// `max_batch_delay` passed since the batch's first record.
    pub fn delay_elapsed(&mut self) -> Step {
        self.delay_running = false;
        self.write_gathered()
    }

    /// The queue has nothing ready and another writer waits for the turn this one holds:
    /// write what was gathered rather than hold the turn while the partition is fetched.
    pub fn ran_dry(&mut self) -> Step {
        self.write_gathered()
    }

    /// Write what was gathered, if anything, unless closed.
    fn write_gathered(&self) -> Step {
        if self.closed || self.batch.is_empty() {
            return Step::Nothing;
        }
        Step::Write(Commit::Async)
    }

    /// Flushed from outside (a drain when `close`): write what was gathered, committing
    /// synchronously; with `close`, take nothing more.
    pub fn flush(&mut self, close: bool) -> Step {
        if self.closed {
            return Step::Nothing;
        }
        self.closed = close;
        Step::Write(Commit::Sync)
    }

    /// Takes the batch to write (`lease_live`: the lease allows a new write): `None` when it
    /// is empty, or dropped unwritten because the lease is not live.
    pub fn take_batch(&mut self, lease_live: bool) -> Option<Vec<T>> {
        self.delay_running = false;
        let batch = std::mem::take(&mut self.batch);
        (lease_live && !batch.is_empty()).then_some(batch)
    }

    /// The lease ended: the batch is dropped unwritten and nothing more is taken.
    pub fn lease_ended(&mut self) {
        self.closed = true;
        self.delay_running = false;
        self.batch.clear();
    }

    /// The writer failed: nothing more is taken or written.
    pub fn failed(&mut self) {
        self.closed = true;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_full_batch_is_written_and_the_delay_starts_with_the_first_record_only() {
        let mut intake = Intake::new(3);
        assert!(intake.is_open() && intake.accepts(true));
        assert_eq!(intake.add(1), Step::Gather { start_delay: true });
        assert_eq!(intake.add(2), Step::Gather { start_delay: false });
        assert_eq!(intake.add(3), Step::Write(Commit::Async));
        assert_eq!(intake.take_batch(true), Some(vec![1, 2, 3]));
        assert_eq!(intake.gathered(), 0);
        // The next batch starts its own delay.
        assert_eq!(intake.add(4), Step::Gather { start_delay: true });
    }

    #[test]
    fn a_queue_run_dry_writes_what_was_gathered_and_nothing_when_nothing_was() {
        let mut intake = Intake::new(10);
        assert_eq!(intake.ran_dry(), Step::Nothing);
        assert_eq!(intake.add(1), Step::Gather { start_delay: true });
        assert_eq!(intake.ran_dry(), Step::Write(Commit::Async));
        assert_eq!(intake.take_batch(true), Some(vec![1]));
        assert_eq!(intake.add(2), Step::Gather { start_delay: true });
        intake.failed();
        assert_eq!(
            intake.ran_dry(),
            Step::Nothing,
            "a closed writer writes nothing"
        );
    }

    #[test]
    fn the_delay_writes_what_was_gathered_and_nothing_when_nothing_was() {
        let mut intake = Intake::new(10);
        assert_eq!(intake.delay_elapsed(), Step::Nothing);
        intake.add("a");
        assert_eq!(intake.delay_elapsed(), Step::Write(Commit::Async));
        assert_eq!(intake.take_batch(true), Some(vec!["a"]));
        assert_eq!(intake.take_batch(true), None);
        assert_eq!(intake.add("b"), Step::Gather { start_delay: true });
    }

    #[test]
    fn a_closing_flush_writes_synchronously_then_takes_nothing_more() {
        let mut intake = Intake::new(10);
        intake.add(1);
        assert_eq!(intake.flush(true), Step::Write(Commit::Sync));
        assert!(!intake.is_open());
        assert_eq!(intake.take_batch(true), Some(vec![1]));
        assert!(!intake.accepts(true));
        assert_eq!(intake.add(2), Step::Nothing);
        assert_eq!(intake.flush(true), Step::Nothing);
        assert_eq!(intake.delay_elapsed(), Step::Nothing);
        assert_eq!(intake.take_batch(true), None);
        // A flush that does not close leaves the intake open.
        let mut open = Intake::<u8>::new(10);
        assert_eq!(open.flush(false), Step::Write(Commit::Sync));
        assert!(open.is_open());
    }

    #[test]
    fn without_a_live_lease_a_batch_is_dropped_unwritten_and_records_are_refused() {
        let mut intake = Intake::new(10);
        intake.add(1);
        intake.add(2);
        assert!(!intake.accepts(false));
        assert_eq!(intake.take_batch(false), None);
        assert_eq!(intake.gathered(), 0);
        // A revoke: what was gathered is dropped, and nothing more is taken.
        intake.add(3);
        intake.lease_ended();
        assert_eq!(intake.gathered(), 0);
        assert!(!intake.is_open());
        assert_eq!(intake.add(4), Step::Nothing);
        assert_eq!(intake.take_batch(true), None);
    }

    #[test]
    fn after_a_failure_nothing_is_taken_or_written() {
        let mut intake = Intake::new(2);
        intake.add(1);
        intake.failed();
        assert!(!intake.is_open() && !intake.accepts(true));
        assert_eq!(intake.add(2), Step::Nothing);
        assert_eq!(intake.flush(true), Step::Nothing);
    }

    #[derive(Debug, Clone)]
    enum Event {
        Record,
        Delay,
        Dry,
        Flush,
        LeaseEnded,
    }

    proptest! {
        /// Every record accepted is written once or dropped, in order; no batch exceeds the
        /// maximum; nothing is written once closed.
        #[test]
        fn records_are_written_in_order_at_most_once_in_bounded_batches(
            max in 1usize..6,
            events in proptest::collection::vec(
                prop_oneof![
                    8 => Just(Event::Record),
                    2 => Just(Event::Delay),
                    2 => Just(Event::Dry),
                    1 => Just(Event::Flush),
                    1 => Just(Event::LeaseEnded),
                ],
                0..60,
            ),
        ) {
            let mut intake = Intake::new(max);
            let (mut next, mut written) = (0u32, Vec::new());
            for event in events {
                let step = match event {
                    Event::Record if intake.accepts(true) => {
                        next += 1;
                        intake.add(next)
                    }
                    Event::Record => Step::Nothing,
                    Event::Delay => intake.delay_elapsed(),
                    Event::Dry => intake.ran_dry(),
                    Event::Flush => intake.flush(true),
                    Event::LeaseEnded => {
                        intake.lease_ended();
                        Step::Nothing
                    }
                };
                prop_assert!(intake.gathered() < max || matches!(step, Step::Write(_)));
                if let Step::Write(_) = step {
                    if let Some(batch) = intake.take_batch(true) {
                        prop_assert!(batch.len() <= max);
                        written.extend(batch);
                    }
                }
                if !intake.is_open() {
                    prop_assert_eq!(intake.add(0), Step::Nothing);
                }
            }
            prop_assert!(written.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(written.iter().all(|r| *r >= 1 && *r <= next));
        }
    }
}
