//! [`PartitionBatch`]: what one batch of a partition's records does, as pure decisions the
//! partition writer carries out. Which records are written, which go to the dead letter
//! topic, where the pipeline stops, and which offset is committed.
//!
//! Rules:
//! - Records are in partition order; a batch's records are written together, the
//!   refused ones (by the converter before the write, by MongoDB in it) are handled after.
//! - Without a dead letter topic, the pipeline stops at the first refused record: nothing
//!   after it is written, and the commit stops at its offset (it is read again).
//! - With one, every refused record is dead-lettered, in order, and the commit covers the
//!   whole batch; when a dead letter cannot be sent, the commit stops at that record.
//! - Converting stops at the first record refused before the write when there is no dead
//!   letter topic, or when the reason may pass ([`PartitionBatch::stops_at`]): nothing after
//!   it is converted or written.
//! - A record refused for a reason that may pass (the schema registry did not answer) is
//!   never dead-lettered: the pipeline stops at it, as without a dead letter topic, and reads
//!   it again after a restart; refused records before it are dead-lettered as usual.
//! - No commit ever passes `hold`, the first chunk of a split event whose other chunks
//!   have not all arrived, nor, when the commit stops at a record, the first chunk of a split
//!   event at or after that record: committing past it would lose the event on a restart.

use super::model::RecordError;

/// A batch of one partition: where each of its records starts and stands, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBatch {
    /// `(first, last)` offsets of each record: the same for an ordinary record; the first and
    /// the last chunk's for a split event put back together.
    offsets: Vec<(i64, i64)>,
    hold: Option<i64>,
    dead_letters: bool,
}

/// What to do once MongoDB answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    /// Records to send to the dead letter topic, by index, in order.
    pub dead_letters: Vec<(usize, RecordError)>,
    /// The record the pipeline stops at (and why), when it has no dead letter topic.
    pub stop: Option<(usize, RecordError)>,
    /// The next offset to read, to commit once the dead letters are sent.
    pub commit: i64,
}

impl PartitionBatch {
    /// A batch of records at `offsets` (`(first, last)` of each, ascending by last); `hold`
    /// is the first chunk of an unfinished split event, if any; `dead_letters` says whether
    /// refused records go to a dead letter topic.
    pub fn new(offsets: Vec<(i64, i64)>, hold: Option<i64>, dead_letters: bool) -> Self {
        Self {
            offsets,
            hold,
            dead_letters,
        }
    }

    /// How many records the batch holds.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Whether records after one refused before the write are still written (they are
    /// only with a dead letter topic).
    pub fn writes_past_refused(&self) -> bool {
        self.dead_letters
    }

    /// Whether converting the batch stops at a record refused before the write (`error`),
    /// writing only what comes before it: without a dead letter topic the pipeline stops at
    /// the record, and a record that may convert later (the registry did not answer) is read
    /// again, so nothing after it may be written first.
    pub fn stops_at(&self, error: &RecordError) -> bool {
        error.transient || !self.dead_letters
    }

    /// The offset to commit so the partition is read again from record `index` on (or
    /// from the end of the batch when `index` is its length): never past the first chunk of
    /// a record from `index` on, nor past the hold.
    pub fn commit_before(&self, index: usize) -> i64 {
        let next = match self.offsets.get(index..) {
            Some(rest) if !rest.is_empty() => {
                rest.iter().map(|(first, _)| *first).min().unwrap_or(0)
            }
            _ => self.offsets.last().map_or(0, |(_, last)| last + 1),
        };
        self.hold.map_or(next, |held| next.min(held))
    }

    /// Decides what follows the write, given every refused record (before or in the write,
    /// by index, in any order).
    pub fn settle(&self, mut refused: Vec<(usize, RecordError)>) -> Settlement {
        refused.sort_by_key(|(index, _)| *index);
        refused.dedup_by_key(|(index, _)| *index);
        // A record that may convert later ends the batch: nothing after it is settled.
        if let Some(at) = refused.iter().position(|(_, error)| error.transient) {
            refused.truncate(at + 1);
        }
        if self.dead_letters {
            let stop = match refused.last() {
                Some((_, error)) if error.transient => refused.pop(),
                _ => None,
            };
            let commit = match &stop {
                Some((index, _)) => self.commit_before(*index),
                None => self.commit_before(self.len()),
            };
            return Settlement {
                dead_letters: refused,
                stop,
                commit,
            };
        }
        match refused.into_iter().next() {
            Some((index, error)) => Settlement {
                dead_letters: Vec::new(),
                commit: self.commit_before(index),
                stop: Some((index, error)),
            },
            None => Settlement {
                dead_letters: Vec::new(),
                stop: None,
                commit: self.commit_before(self.len()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sink::model::Stage;

    fn plain(offsets: &[i64]) -> Vec<(i64, i64)> {
        offsets.iter().map(|o| (*o, *o)).collect()
    }

    fn refused(index: usize) -> (usize, RecordError) {
        (
            index,
            RecordError::new(Stage::Decode, format!("bad {index}")),
        )
    }

    #[test]
    fn a_clean_batch_commits_past_its_last_record() {
        let batch = PartitionBatch::new(plain(&[10, 11, 12]), None, false);
        let settled = batch.settle(Vec::new());
        assert_eq!(settled.commit, 13);
        assert!(settled.stop.is_none() && settled.dead_letters.is_empty());
    }

    #[test]
    fn without_dead_letters_the_first_refused_record_stops_the_commit() {
        let batch = PartitionBatch::new(plain(&[10, 11, 12, 13]), None, false);
        let settled = batch.settle(vec![refused(2), refused(1)]);
        assert_eq!(settled.commit, 11);
        assert_eq!(settled.stop.map(|(i, _)| i), Some(1));
        assert!(!batch.writes_past_refused());
    }

    #[test]
    fn with_dead_letters_every_refused_record_goes_in_order_and_the_batch_is_committed() {
        let batch = PartitionBatch::new(plain(&[10, 11, 12, 13]), None, true);
        let settled = batch.settle(vec![refused(3), refused(1), refused(1)]);
        assert_eq!(
            settled
                .dead_letters
                .iter()
                .map(|(i, _)| *i)
                .collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(settled.commit, 14);
        assert!(settled.stop.is_none());
    }

    #[test]
    fn no_commit_passes_the_first_chunk_of_an_unfinished_split_event() {
        let batch = PartitionBatch::new(plain(&[10, 11, 12, 13]), Some(11), false);
        assert_eq!(batch.settle(Vec::new()).commit, 11);
        // The failure path too: the refused record comes after the held chunk.
        assert_eq!(batch.settle(vec![refused(3)]).commit, 11);
        assert_eq!(batch.commit_before(3), 11);
        // Before the hold, the refused record's own offset.
        assert_eq!(batch.settle(vec![refused(0)]).commit, 10);
        let with_dead_letters = PartitionBatch::new(plain(&[10, 11]), Some(5), true);
        assert_eq!(with_dead_letters.settle(vec![refused(1)]).commit, 5);
    }

    #[test]
    fn a_stop_never_commits_past_the_first_chunk_of_an_event_after_the_stop() {
        // Offset 10: the first chunk of an event completed at 12; 11 is refused.
        let batch = PartitionBatch::new(vec![(11, 11), (10, 12), (13, 13)], None, false);
        let settled = batch.settle(vec![refused(0)]);
        assert_eq!(settled.stop.map(|(i, _)| i), Some(0));
        assert_eq!(settled.commit, 10);
        // A dead letter failing at 11 resumes there too.
        assert_eq!(batch.commit_before(0), 10);
        // Past the event, the record itself.
        assert_eq!(batch.commit_before(2), 13);
        // The whole batch: past its last record.
        assert_eq!(batch.commit_before(3), 14);
    }

    proptest! {
        #[test]
        fn commits_never_pass_the_hold_the_batch_or_a_stop(
            start in 0i64..1_000,
            gaps in proptest::collection::vec(1i64..4, 1..40),
            backs in proptest::collection::vec(0i64..5, 40),
            refused_at in proptest::collection::vec(0usize..40, 0..6),
            hold in proptest::option::of(0i64..1_200),
            dead_letters in any::<bool>(),
        ) {
            let offsets: Vec<i64> = gaps
                .iter()
                .scan(start, |at, gap| { *at += gap; Some(*at) })
                .collect();
            let n = offsets.len();
            // Some records are split events put back together, starting a few offsets back.
            let spans: Vec<(i64, i64)> =
                offsets.iter().zip(&backs).map(|(o, back)| (o - back, *o)).collect();
            let batch = PartitionBatch::new(spans.clone(), hold, dead_letters);
            let refused: Vec<_> = refused_at.into_iter().filter(|i| *i < n).map(refused).collect();
            let settled = batch.settle(refused.clone());
            prop_assert!(settled.commit <= offsets[n - 1] + 1);
            if let Some(held) = hold {
                prop_assert!(settled.commit <= held);
            }
            match (&settled.stop, refused.iter().map(|(i, _)| *i).min()) {
                (Some((index, _)), Some(first)) => {
                    prop_assert!(!dead_letters);
                    prop_assert_eq!(*index, first);
                    let earliest = spans[first..].iter().map(|(f, _)| *f).min().unwrap_or(i64::MAX);
                    prop_assert!(settled.commit <= earliest);
                }
                (None, Some(_)) => prop_assert!(dead_letters),
                (Some(_), None) => prop_assert!(false, "a stop without a refused record"),
                (None, None) => {}
            }
            // Dead letters are exactly the refused records, once each, in order.
            if dead_letters {
                let mut expected: Vec<usize> = refused.iter().map(|(i, _)| *i).collect();
                expected.sort_unstable();
                expected.dedup();
                let got: Vec<usize> = settled.dead_letters.iter().map(|(i, _)| *i).collect();
                prop_assert_eq!(got, expected);
            } else {
                prop_assert!(settled.dead_letters.is_empty());
            }
        }
    }

    #[test]
    fn converting_stops_at_a_refused_record_without_dead_letters_or_when_it_may_pass() {
        let mut transient = RecordError::new(Stage::Decode, "registry unreachable");
        transient.transient = true;
        let (_, refused) = refused(0);
        let with = PartitionBatch::new(plain(&[10, 11]), None, true);
        assert!(
            !with.stops_at(&refused),
            "dead-lettered: the rest is written"
        );
        assert!(with.stops_at(&transient), "read again: nothing after it");
        let without = PartitionBatch::new(plain(&[10, 11]), None, false);
        assert!(without.stops_at(&refused));
        assert!(without.stops_at(&transient));
    }

    #[test]
    fn a_record_that_may_convert_later_is_never_dead_lettered() {
        let transient = |index: usize| {
            let mut error = RecordError::new(Stage::Decode, "registry unreachable");
            error.transient = true;
            (index, error)
        };
        let batch = PartitionBatch::new(plain(&[10, 11, 12, 13]), None, true);
        let settled = batch.settle(vec![refused(3), transient(2), refused(0)]);
        assert_eq!(
            settled
                .dead_letters
                .iter()
                .map(|(i, _)| *i)
                .collect::<Vec<_>>(),
            [0],
            "refused before it: dead-lettered; after it: read again"
        );
        assert_eq!(settled.stop.as_ref().map(|(i, _)| *i), Some(2));
        assert!(settled.stop.is_some_and(|(_, e)| e.transient));
        assert_eq!(settled.commit, 12);
        let without = PartitionBatch::new(plain(&[10, 11]), None, false);
        let settled = without.settle(vec![transient(1)]);
        assert_eq!(settled.commit, 11);
        assert_eq!(settled.stop.map(|(i, _)| i), Some(1));
    }
}
