//! The checkpoint ledger of a source pipeline: for each reader and generation, which batches
//! are in flight, which resume token may become the reader's checkpoint, and when one is
//! due; for exactly-once pipelines, which checkpoints the open transaction carries.
//!
//! It does no I/O: the producer actor tells it what happened (a batch handed over, a batch
//! acknowledged or failed, a reader restarted, a transaction committed) and does what it
//! answers ([`Action`]). The rule it keeps: a checkpoint never passes a record Kafka has not
//! acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::checkpoint::Position;
use super::model::ReaderId;

/// Orders acknowledgements: batches are numbered as they are handed to Kafka; the resume
/// token of batch N may be stored only once batches 0..=N are all acknowledged.
#[derive(Debug, Default)]
pub struct AckTracker {
    next: u64,
    /// Batches not yet acknowledged or not yet released, with their position.
    pending: BTreeMap<u64, (bool, Option<Position>)>,
}

impl AckTracker {
    /// Registers a batch whose records end at `token`; returns its number.
    pub fn push(&mut self, token: Option<Position>) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.pending.insert(seq, (false, token));
        seq
    }

    /// Marks batch `seq` acknowledged; returns the newest position that may now be stored.
    pub fn ack(&mut self, seq: u64) -> Option<Position> {
        if let Some(entry) = self.pending.get_mut(&seq) {
            entry.0 = true;
        }
        let mut releasable = None;
        while let Some(entry) = self.pending.first_entry() {
            if !entry.get().0 {
                break;
            }
            if let (_, Some(token)) = entry.remove() {
                releasable = Some(token);
            }
        }
        releasable
    }

    /// Batches handed to Kafka and not yet released.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

/// A batch handed to Kafka, as the ledger knows it: the acknowledgement of its records
/// names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The reader (and generation) that sent it.
    pub reader: ReaderId,
    seq: u64,
}

/// What the producer must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write `position` as the checkpoint of `namespace`, now.
    Write {
        /// The reader's namespace.
        namespace: String,
        /// Its new checkpoint.
        position: Position,
    },
    /// Call [`CheckpointLedger::wake`] for `namespace` after `after`: a checkpoint is
    /// released, but the last one was written less than the interval ago.
    WakeAfter {
        /// The reader's namespace.
        namespace: String,
        /// How long to wait.
        after: Duration,
    },
}

/// The checkpoints an exactly-once commit writes into its transaction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Commit {
    /// By namespace: the newest position of the reader's records in the transaction.
    pub checkpoints: Vec<(String, Position)>,
}

#[derive(Debug)]
struct ReaderEntry {
    generation: u64,
    tracker: AckTracker,
    /// Released by the tracker, not yet written.
    unwritten: Option<Position>,
    /// Written (handed to Kafka) last.
    written: Option<Position>,
    last_write: Option<Instant>,
}

/// The open Kafka transaction of an exactly-once pipeline.
#[derive(Debug, Default)]
struct Transaction {
    open: bool,
    committing: bool,
    /// The newest token of each reader whose records are in the open transaction.
    tokens: HashMap<String, Position>,
}

/// The checkpoint bookkeeping of one source pipeline.
#[derive(Debug)]
pub struct CheckpointLedger {
    /// Checkpoints of one reader are written at most this often.
    interval: Duration,
    readers: HashMap<String, ReaderEntry>,
    /// `Some` in exactly-once mode.
    transaction: Option<Transaction>,
}

impl CheckpointLedger {
    /// At-least-once: a reader's checkpoint is written once Kafka acknowledged every record
    /// before it, at most once per `interval`.
    pub fn at_least_once(interval: Duration) -> Self {
        Self {
            interval,
            readers: HashMap::new(),
            transaction: None,
        }
    }

    /// Exactly-once: records and checkpoints go into Kafka transactions, committed at most
    /// `interval` apart.
    pub fn exactly_once(interval: Duration) -> Self {
        Self {
            transaction: Some(Transaction::default()),
            ..Self::at_least_once(interval)
        }
    }

    /// How often a reader's checkpoint (or an exactly-once transaction) is written.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn reader(&mut self, id: &ReaderId) -> &mut ReaderEntry {
        let state = self
            .readers
            .entry(id.namespace.clone())
            .or_insert_with(|| ReaderEntry {
                generation: id.generation,
                tracker: AckTracker::default(),
                unwritten: None,
                written: None,
                last_write: None,
            });
        if state.generation != id.generation {
            // A restarted reader resumes from the newest released token: what its
            // predecessor left in flight is sent again.
            state.generation = id.generation;
            state.tracker = AckTracker::default();
        }
        state
    }

    /// `reader` restarts: where it resumes (the newest position Kafka acknowledged), if
    /// anywhere.
    pub fn restart(&mut self, reader: &ReaderId) -> Option<Position> {
        self.readers
            .get(&reader.namespace)
            .and_then(|r| r.unwritten.clone().or_else(|| r.written.clone()))
    }

    /// A batch of `reader` whose records end at `token` was handed to Kafka; the ticket its
    /// acknowledgement names. `None` in exactly-once mode: the commit resolves the batch.
    pub fn sent(&mut self, reader: &ReaderId, token: Option<Position>) -> Option<Ticket> {
        self.reader(reader);
        if let Some(tx) = self.transaction.as_mut() {
            if let Some(token) = token {
                tx.tokens.insert(reader.namespace.clone(), token);
            }
            return None;
        }
        let seq = self.reader(reader).tracker.push(token);
        Some(Ticket {
            reader: reader.clone(),
            seq,
        })
    }

    /// Kafka acknowledged every record of the batch `ticket`.
    pub fn acknowledged(&mut self, ticket: &Ticket, now: Instant) -> Option<Action> {
        let state = self.reader(&ticket.reader);
        if state.generation != ticket.reader.generation {
            return None;
        }
        let token = state.tracker.ack(ticket.seq)?;
        state.unwritten = Some(token);
        self.due(&ticket.reader.namespace, now, false)
    }

    /// A record of the batch `ticket` was not delivered: nothing after it is ever released
    /// (the producer fails, and the pipeline restarts from its written checkpoints).
    pub fn failed(&mut self, _ticket: &Ticket) {}

    /// The wake-up [`Action::WakeAfter`] asked for.
    pub fn wake(&mut self, namespace: &str, now: Instant) -> Option<Action> {
        self.due(namespace, now, false)
    }

    /// Every released checkpoint, due or not (when draining).
    pub fn flush(&mut self, now: Instant) -> Vec<Action> {
        let namespaces: Vec<String> = self.readers.keys().cloned().collect();
        namespaces
            .iter()
            .filter_map(|namespace| self.due(namespace, now, true))
            .collect()
    }

    /// Writes the released token of `namespace` unless one was written less than
    /// `interval` ago (then asks to be woken).
    fn due(&mut self, namespace: &str, now: Instant, force: bool) -> Option<Action> {
        let interval = self.interval;
        let state = self.readers.get_mut(namespace)?;
        state.unwritten.as_ref()?;
        if let Some(last) = state.last_write {
            let since = now.saturating_duration_since(last);
            if !force && since < interval {
                return Some(Action::WakeAfter {
                    namespace: namespace.to_owned(),
                    after: interval - since,
                });
            }
        }
        let position = state.unwritten.take()?;
        state.last_write = Some(now);
        state.written = Some(position.clone());
        Some(Action::Write {
            namespace: namespace.to_owned(),
            position,
        })
    }

    /// Exactly-once: whether a transaction must be begun before the next batch; it counts
    /// as open from here.
    pub fn open_transaction(&mut self) -> bool {
        match self.transaction.as_mut() {
            Some(tx) if !tx.open => {
                tx.open = true;
                true
            }
            _ => false,
        }
    }

    /// Exactly-once: the checkpoints the open transaction carries, to write into it before
    /// committing it; `None` when no transaction is open or one is being committed.
    pub fn begin_commit(&mut self) -> Option<Commit> {
        let tx = self.transaction.as_mut()?;
        if !tx.open || tx.committing {
            return None;
        }
        tx.committing = true;
        Some(Commit {
            checkpoints: std::mem::take(&mut tx.tokens).into_iter().collect(),
        })
    }

    /// Exactly-once: the commit of `commit` ended; with `committed`, its checkpoints are
    /// written.
    pub fn commit_finished(&mut self, commit: Commit, committed: bool) {
        if let Some(tx) = self.transaction.as_mut() {
            tx.open = false;
            tx.committing = false;
        }
        if !committed {
            return;
        }
        for (namespace, position) in commit.checkpoints {
            if let Some(state) = self.readers.get_mut(&namespace) {
                state.written = Some(position);
            }
        }
    }

    /// Batches handed to Kafka and not yet released, plus an open transaction.
    pub fn in_flight(&self) -> usize {
        let open_transaction = self.transaction.as_ref().is_some_and(|tx| tx.open);
        usize::from(open_transaction)
            + self
                .readers
                .values()
                .map(|r| r.tracker.in_flight())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use bson::Bson;

    use super::*;

    fn token(n: i32) -> Position {
        Position::stream(
            bson::from_bson(Bson::Document(bson::doc! { "_data": format!("T{n}") })).unwrap(),
        )
    }

    #[test]
    fn releases_tokens_only_in_order() {
        let mut t = AckTracker::default();
        let a = t.push(Some(token(1)));
        let b = t.push(Some(token(2)));
        let c = t.push(Some(token(3)));
        assert_eq!(t.ack(b), None, "batch 0 is still in flight");
        assert_eq!(t.ack(c), None);
        assert_eq!(t.ack(a), Some(token(3)), "all three are acknowledged");
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn batches_without_a_token_still_hold_the_line() {
        let mut t = AckTracker::default();
        let a = t.push(Some(token(1)));
        let b = t.push(None);
        let c = t.push(Some(token(3)));
        assert_eq!(t.ack(a), Some(token(1)));
        assert_eq!(t.ack(c), None);
        assert_eq!(t.ack(b), Some(token(3)));
        // A token-less batch alone releases nothing.
        let d = t.push(None);
        assert_eq!(t.ack(d), None);
        assert_eq!(t.ack(99), None, "unknown batches are ignored");
    }
}
