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

use super::model::{Position, ReaderId};

/// Where a batch handed to Kafka is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchState {
    Sent,
    Acknowledged,
    /// Never acknowledged: it holds back every token after it for good.
    Failed,
}

/// Orders acknowledgements: batches are numbered as they are handed to Kafka; the resume
/// token of batch N may be stored only once batches 0..=N are all acknowledged.
#[derive(Debug, Default)]
pub struct AckTracker {
    next: u64,
    /// Batches not yet acknowledged or not yet released, with their position.
    pending: BTreeMap<u64, (BatchState, Option<Position>)>,
}

impl AckTracker {
    /// Registers a batch whose records end at `token`; returns its number.
    pub fn push(&mut self, token: Option<Position>) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.pending.insert(seq, (BatchState::Sent, token));
        seq
    }

    /// Marks batch `seq` acknowledged; returns the newest position that may now be stored.
    pub fn ack(&mut self, seq: u64) -> Option<Position> {
        if let Some(entry) = self.pending.get_mut(&seq) {
            if entry.0 == BatchState::Sent {
                entry.0 = BatchState::Acknowledged;
            }
        }
        let mut releasable = None;
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().0 != BatchState::Acknowledged {
                break;
            }
            if let (_, Some(token)) = entry.remove() {
                releasable = Some(token);
            }
        }
        releasable
    }

    /// Marks batch `seq` failed: no token at or after it is ever released.
    pub fn fail(&mut self, seq: u64) {
        if let Some(entry) = self.pending.get_mut(&seq) {
            entry.0 = BatchState::Failed;
        }
    }

    /// Batches handed to Kafka and not yet released.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Batches whose acknowledgement (or failure) has not come yet.
    fn unanswered(&self) -> usize {
        self.pending
            .values()
            .filter(|(delivery, _)| *delivery == BatchState::Sent)
            .count()
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
    /// Nothing to write: the released position of `namespace` is the one written last
    /// (an idle reader whose token did not move). The stored checkpoint is current.
    Unchanged {
        /// The reader's namespace.
        namespace: String,
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

/// How the producer's work ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The pipeline stops cleanly: its readers stopped after whole batches.
    Stop,
    /// Something failed (a reader, the producer, a restart of the pipeline): what the open
    /// transaction holds may be part of a batch whose position was never recorded.
    Failure,
}

/// Exactly-once: what becomes of the open transaction when the producer ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Closing {
    /// Commit it with these checkpoints: every record in it is covered by them.
    Commit(Commit),
    /// Abort it: the pipeline starts again from the committed checkpoints.
    Abort,
    /// No transaction is open (or the pipeline is at-least-once).
    Nothing,
}

/// The checkpoints an exactly-once commit writes into its transaction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Commit {
    /// By namespace: the newest position of the reader's records in the transaction.
    pub checkpoints: Vec<(String, Position)>,
}

#[derive(Debug)]
struct ReaderEntry {
    /// The reader's current generation: only its batches move the checkpoint.
    generation: u64,
    tracker: AckTracker,
    /// Batches of earlier generations not answered yet: in flight, but their tokens count
    /// for nothing (the current generation resumed before them and sends their events
    /// again).
    stale: usize,
    /// Released by the tracker, not yet written.
    unwritten: Option<Position>,
    /// Written (handed to Kafka) last.
    written: Option<Position>,
    last_write: Option<Instant>,
    /// A [`Action::WakeAfter`] is outstanding.
    wake_pending: bool,
}

impl ReaderEntry {
    fn new(generation: u64) -> Self {
        Self {
            generation,
            tracker: AckTracker::default(),
            stale: 0,
            unwritten: None,
            written: None,
            last_write: None,
            wake_pending: false,
        }
    }

    /// Makes `generation` current when it is newer; whether it is current now.
    fn switch_to(&mut self, generation: u64) -> bool {
        if generation > self.generation {
            // What the predecessor left in flight still answers, but releases nothing.
            self.stale += self.tracker.unanswered();
            self.tracker = AckTracker::default();
            self.generation = generation;
        }
        generation == self.generation
    }
}

/// The open Kafka transaction of an exactly-once pipeline.
#[derive(Debug, Default)]
struct Transaction {
    open: bool,
    committing: bool,
    /// The newest token of each reader whose records are in the open transaction.
    tokens: HashMap<String, Position>,
    /// The tokens of the commit under way: committed, or the pipeline restarts.
    committing_tokens: HashMap<String, Position>,
    /// A batch went into the transaction in part, its position never recorded: the
    /// transaction may only be aborted.
    tainted: bool,
}

/// The number of a batch sent by an older generation than its reader's current one.
const STALE: u64 = u64::MAX;

/// The entry of `id`'s reader, switched to `id`'s generation when that is newer; `None` when
/// `id` is of an older generation.
fn current<'a>(
    readers: &'a mut HashMap<String, ReaderEntry>,
    id: &ReaderId,
) -> Option<&'a mut ReaderEntry> {
    let entry = readers
        .entry(id.namespace.clone())
        .or_insert_with(|| ReaderEntry::new(id.generation));
    entry.switch_to(id.generation).then_some(entry)
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

    /// `reader` (re)starts as its generation: from here on, acknowledgements of its earlier
    /// generations move nothing. Answers where it resumes: the newest position Kafka
    /// acknowledged, if any.
    ///
    /// Exactly-once: the newest position whose records are in the open transaction (or the
    /// commit under way) comes first. Those records are committed together with that
    /// position, or the transaction is aborted and the whole pipeline restarts from its
    /// committed checkpoints; resuming before them would put them in the transaction twice.
    pub fn restart(&mut self, reader: &ReaderId) -> Option<Position> {
        let entry = current(&mut self.readers, reader)?;
        let acknowledged = entry.unwritten.clone().or_else(|| entry.written.clone());
        let Some(tx) = self.transaction.as_ref() else {
            return acknowledged;
        };
        tx.tokens
            .get(&reader.namespace)
            .or_else(|| tx.committing_tokens.get(&reader.namespace))
            .cloned()
            .or(acknowledged)
    }

    /// Whether a batch of `reader` may be handed to Kafka at all. Exactly-once: a batch of
    /// an older generation than the reader's current one is refused, since the current one
    /// resumed at the newest position the transaction holds and reads those events again.
    /// At-least-once publishes it (a duplicate at most); its token counts for nothing.
    pub fn admits(&mut self, reader: &ReaderId) -> bool {
        self.transaction.is_none() || current(&mut self.readers, reader).is_some()
    }

    /// Exactly-once: a batch was handed to Kafka in part (a record refused half-way), its
    /// position never recorded. The open transaction can no longer be committed.
    pub fn partly_sent(&mut self) {
        if let Some(tx) = self.transaction.as_mut() {
            if tx.open {
                tx.tainted = true;
            }
        }
    }

    /// A batch of `reader` whose records end at `token` was handed to Kafka; the ticket its
    /// acknowledgement names. `None` in exactly-once mode: the commit resolves the batch.
    /// A batch of an older generation is published all the same, but its token counts for
    /// nothing.
    pub fn sent(&mut self, reader: &ReaderId, token: Option<Position>) -> Option<Ticket> {
        let Some(entry) = current(&mut self.readers, reader) else {
            if self.transaction.is_some() {
                return None;
            }
            if let Some(entry) = self.readers.get_mut(&reader.namespace) {
                entry.stale += 1;
            }
            return Some(Ticket {
                reader: reader.clone(),
                seq: STALE,
            });
        };
        match self.transaction.as_mut() {
            Some(tx) => {
                if let Some(token) = token {
                    tx.tokens.insert(reader.namespace.clone(), token);
                }
                None
            }
            None => Some(Ticket {
                reader: reader.clone(),
                seq: entry.tracker.push(token),
            }),
        }
    }

    /// `reader` opened its stream without a position (`latest`, a timestamp) and found it at
    /// `position`; it hands over nothing until this is stored, so that a restart after a
    /// crash resumes there and not at `latest` again. At-least-once: the write to do now,
    /// whatever the interval. Exactly-once: the open transaction carries it (commit it now);
    /// `None`. `None` as well for an older generation than the reader's current one.
    pub fn opened(
        &mut self,
        reader: &ReaderId,
        position: Position,
        now: Instant,
    ) -> Option<Action> {
        let entry = current(&mut self.readers, reader)?;
        if let Some(tx) = self.transaction.as_mut() {
            tx.tokens.insert(reader.namespace.clone(), position);
            return None;
        }
        entry.unwritten = None;
        entry.last_write = Some(now);
        entry.written = Some(position.clone());
        Some(Action::Write {
            namespace: reader.namespace.clone(),
            position,
        })
    }

    /// The entry of `ticket`'s reader when the ticket is of its current generation;
    /// otherwise counts the stale batch answered.
    fn answered(&mut self, ticket: &Ticket) -> Option<&mut ReaderEntry> {
        let entry = self.readers.get_mut(&ticket.reader.namespace)?;
        if ticket.reader.generation == entry.generation {
            return Some(entry);
        }
        entry.stale = entry.stale.saturating_sub(1);
        None
    }

    /// Kafka acknowledged every record of the batch `ticket`.
    pub fn acknowledged(&mut self, ticket: &Ticket, now: Instant) -> Option<Action> {
        let entry = self.answered(ticket)?;
        let token = entry.tracker.ack(ticket.seq)?;
        entry.unwritten = Some(token);
        self.due(&ticket.reader.namespace, now, false)
    }

    /// A record of the batch `ticket` was not delivered: no token at or after it is ever
    /// released (the producer fails, and the pipeline restarts from its written
    /// checkpoints; or the reader restarts before it).
    pub fn failed(&mut self, ticket: &Ticket) {
        if let Some(entry) = self.answered(ticket) {
            entry.tracker.fail(ticket.seq);
        }
    }

    /// The wake-up [`Action::WakeAfter`] asked for.
    pub fn wake(&mut self, namespace: &str, now: Instant) -> Option<Action> {
        if let Some(entry) = self.readers.get_mut(namespace) {
            entry.wake_pending = false;
        }
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
    /// `interval` ago (then asks to be woken), or it is the one written last: a reader
    /// whose position did not move writes nothing, so an idle pipeline does not fill the
    /// checkpoint topic.
    fn due(&mut self, namespace: &str, now: Instant, force: bool) -> Option<Action> {
        let interval = self.interval;
        let state = self.readers.get_mut(namespace)?;
        state.unwritten.as_ref()?;
        if state.unwritten == state.written {
            state.unwritten = None;
            return Some(Action::Unchanged {
                namespace: namespace.to_owned(),
            });
        }
        if let Some(last) = state.last_write {
            let since = now.saturating_duration_since(last);
            if !force && since < interval {
                // One wake-up per reader at a time: it writes whatever is released by then.
                if state.wake_pending {
                    return None;
                }
                state.wake_pending = true;
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
    /// `None` as well when the transaction holds part of a batch: it may only be aborted.
    pub fn begin_commit(&mut self) -> Option<Commit> {
        let tx = self.transaction.as_mut()?;
        if !tx.open || tx.committing || tx.tainted {
            return None;
        }
        tx.committing = true;
        tx.committing_tokens = std::mem::take(&mut tx.tokens);
        let readers = &self.readers;
        // A reader whose position did not move since its last committed checkpoint writes
        // none.
        let mut checkpoints: Vec<(String, Position)> = tx
            .committing_tokens
            .iter()
            .filter(|(namespace, position)| {
                readers
                    .get(namespace.as_str())
                    .is_none_or(|r| r.written.as_ref() != Some(position))
            })
            .map(|(namespace, position)| (namespace.clone(), position.clone()))
            .collect();
        checkpoints.sort_by(|a, b| a.0.cmp(&b.0));
        Some(Commit { checkpoints })
    }

    /// Exactly-once: what to do with the open transaction as the producer ends for
    /// `ending`. Only a clean stop commits, and only a transaction that holds whole
    /// batches; a failure aborts (the pipeline starts again from its committed
    /// checkpoints, so nothing is published twice and nothing is lost).
    pub fn close(&mut self, ending: Ending) -> Closing {
        let Some(tx) = self.transaction.as_ref() else {
            return Closing::Nothing;
        };
        if !tx.open || tx.committing {
            return Closing::Nothing;
        }
        if ending == Ending::Failure || tx.tainted {
            return Closing::Abort;
        }
        self.begin_commit().map_or(Closing::Abort, Closing::Commit)
    }

    /// Exactly-once: the open transaction was aborted; none of its checkpoints is written.
    pub fn aborted(&mut self) {
        if let Some(tx) = self.transaction.as_mut() {
            *tx = Transaction::default();
        }
    }

    /// Exactly-once: the commit of `commit` ended; with `committed`, its checkpoints are
    /// written.
    pub fn commit_finished(&mut self, commit: Commit, committed: bool) {
        if let Some(tx) = self.transaction.as_mut() {
            tx.committing = false;
            tx.committing_tokens.clear();
            if !committed {
                // The transaction is still open, and may only be aborted now.
                tx.tainted = true;
                return;
            }
            tx.open = false;
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
                .map(|r| r.tracker.in_flight() + r.stale)
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

    fn reader(generation: u64) -> ReaderId {
        ReaderId {
            namespace: "db.c".into(),
            generation,
        }
    }

    fn write(n: i32) -> Option<Action> {
        Some(Action::Write {
            namespace: "db.c".into(),
            position: token(n),
        })
    }

    /// Issue 12, defect 1: a late acknowledgement of generation 1 wiped generation 2's
    /// tracker, a later batch took number 0 again, and generation 2's first acknowledgement
    /// released that batch's token while its records were still in flight.
    #[test]
    fn a_stale_generation_never_touches_the_new_generations_checkpoint() {
        let now = Instant::now();
        let mut ledger = CheckpointLedger::at_least_once(Duration::ZERO);
        let first = ledger.sent(&reader(1), Some(token(1))).unwrap();
        // The reader restarts before its batch is acknowledged: nothing is released yet.
        assert_eq!(ledger.restart(&reader(2)), None);
        let again = ledger.sent(&reader(2), Some(token(1))).unwrap();
        let _second = ledger.sent(&reader(2), Some(token(2))).unwrap();
        // The predecessor's batch is acknowledged late.
        assert_eq!(ledger.acknowledged(&first, now), None);
        let _third = ledger.sent(&reader(2), Some(token(3))).unwrap();
        // Generation 2's first batch: its token, and only its token, may be stored.
        assert_eq!(ledger.acknowledged(&again, now), write(1));
        assert_eq!(ledger.restart(&reader(3)), Some(token(1)));
    }

    /// Where a stream opened without a position is written at once, whatever the interval,
    /// and a restart before any record resumes there.
    #[test]
    fn where_a_stream_opened_is_stored_at_once_and_resumed_from() {
        let now = Instant::now();
        let mut ledger = CheckpointLedger::at_least_once(Duration::from_secs(3600));
        let old = ledger.sent(&reader(1), Some(token(1))).unwrap();
        assert_eq!(ledger.acknowledged(&old, now), write(1));
        // Generation 2 opened at `latest` less than the interval after that write.
        assert_eq!(ledger.opened(&reader(2), token(2), now), write(2));
        assert_eq!(ledger.restart(&reader(3)), Some(token(2)));
        assert_eq!(
            ledger.opened(&reader(2), token(9), now),
            None,
            "an older generation"
        );
        // Its first records move the checkpoint on after the interval, as any.
        let next = ledger.sent(&reader(3), Some(token(3))).unwrap();
        assert!(matches!(
            ledger.acknowledged(&next, now),
            Some(Action::WakeAfter { .. })
        ));
    }

    #[test]
    fn exactly_once_where_a_stream_opened_is_committed_with_the_open_transaction() {
        let now = Instant::now();
        let mut ledger = CheckpointLedger::exactly_once(Duration::from_secs(3600));
        assert!(ledger.open_transaction());
        assert_eq!(ledger.opened(&reader(1), token(1), now), None);
        let commit = ledger.begin_commit().expect("a commit");
        assert_eq!(commit.checkpoints, vec![("db.c".to_owned(), token(1))]);
        ledger.commit_finished(commit, true);
        assert_eq!(ledger.restart(&reader(2)), Some(token(1)));
    }

    #[test]
    fn a_failed_batch_holds_back_every_later_token() {
        let now = Instant::now();
        let mut ledger = CheckpointLedger::at_least_once(Duration::ZERO);
        let a = ledger.sent(&reader(1), Some(token(1))).unwrap();
        let b = ledger.sent(&reader(1), Some(token(2))).unwrap();
        let c = ledger.sent(&reader(1), Some(token(3))).unwrap();
        assert_eq!(ledger.acknowledged(&a, now), write(1));
        ledger.failed(&b);
        assert_eq!(ledger.acknowledged(&c, now), None);
        assert!(ledger.flush(now).is_empty());
        assert_eq!(ledger.restart(&reader(2)), Some(token(1)));
    }

    #[test]
    fn checkpoints_are_written_at_most_once_per_interval_with_one_wake_up() {
        let start = Instant::now();
        let interval = Duration::from_millis(100);
        let mut ledger = CheckpointLedger::at_least_once(interval);
        let a = ledger.sent(&reader(1), Some(token(1))).unwrap();
        let b = ledger.sent(&reader(1), Some(token(2))).unwrap();
        let c = ledger.sent(&reader(1), Some(token(3))).unwrap();
        assert_eq!(ledger.acknowledged(&a, start), write(1), "the first is due");
        let wake = Some(Action::WakeAfter {
            namespace: "db.c".into(),
            after: Duration::from_millis(90),
        });
        let later = start + Duration::from_millis(10);
        assert_eq!(ledger.acknowledged(&b, later), wake);
        assert_eq!(ledger.acknowledged(&c, later), None, "a wake-up is pending");
        assert_eq!(ledger.wake("db.c", start + interval), write(3));
        assert_eq!(ledger.wake("db.c", start + interval), None);
    }

    /// Issue 21, item 4: an idle reader hands over the same resume token every read; it
    /// wrote it as a checkpoint again every interval, filling the checkpoint topic while
    /// nothing happened.
    #[test]
    fn an_idle_reader_whose_position_did_not_move_writes_no_checkpoint() {
        let start = Instant::now();
        let interval = Duration::from_millis(100);
        let mut ledger = CheckpointLedger::at_least_once(interval);
        let first = ledger.sent(&reader(1), Some(token(1))).unwrap();
        assert_eq!(ledger.acknowledged(&first, start), write(1));
        let mut writes = 0;
        for i in 1..=5_u32 {
            let idle = ledger.sent(&reader(1), Some(token(1))).unwrap();
            let at = start + interval * i;
            if let Some(Action::Write { .. }) = ledger.acknowledged(&idle, at) {
                writes += 1;
            }
            for action in ledger.flush(at) {
                if let Action::Write { .. } = action {
                    writes += 1;
                }
            }
        }
        assert_eq!(writes, 0, "an unmoved position was written again");
        // Once it moves, it is written.
        let moved = ledger.sent(&reader(1), Some(token(2))).unwrap();
        assert_eq!(ledger.acknowledged(&moved, start + interval * 7), write(2));
        assert_eq!(ledger.restart(&reader(2)), Some(token(2)));
    }

    #[test]
    fn an_idle_exactly_once_reader_commits_no_checkpoint_again() {
        let mut ledger = CheckpointLedger::exactly_once(Duration::from_secs(1));
        assert!(ledger.open_transaction());
        assert_eq!(ledger.sent(&reader(1), Some(token(1))), None);
        let commit = ledger.begin_commit().unwrap();
        ledger.commit_finished(commit, true);
        assert!(ledger.open_transaction());
        assert_eq!(ledger.sent(&reader(1), Some(token(1))), None);
        let idle = ledger.begin_commit().unwrap();
        assert_eq!(
            idle.checkpoints,
            vec![],
            "an unmoved position was committed again"
        );
        ledger.commit_finished(idle, true);
        assert_eq!(ledger.restart(&reader(2)), Some(token(1)));
    }

    #[test]
    fn a_stale_generations_batches_count_in_flight_until_answered() {
        let now = Instant::now();
        let mut ledger = CheckpointLedger::at_least_once(Duration::ZERO);
        let old = ledger.sent(&reader(1), Some(token(1))).unwrap();
        assert_eq!(ledger.restart(&reader(2)), None);
        let late = ledger.sent(&reader(1), Some(token(2))).unwrap();
        assert_eq!(ledger.in_flight(), 2);
        let new = ledger.sent(&reader(2), Some(token(1))).unwrap();
        assert_eq!(ledger.in_flight(), 3);
        assert_eq!(ledger.acknowledged(&late, now), None);
        ledger.failed(&old);
        assert_eq!(ledger.in_flight(), 1);
        assert_eq!(ledger.acknowledged(&new, now), write(1));
        assert_eq!(ledger.in_flight(), 0);
    }

    #[test]
    fn exactly_once_commits_carry_the_newest_token_of_each_current_reader() {
        let mut ledger = CheckpointLedger::exactly_once(Duration::from_secs(1));
        assert!(ledger.open_transaction());
        assert!(!ledger.open_transaction(), "one transaction at a time");
        assert_eq!(ledger.sent(&reader(1), Some(token(1))), None);
        assert_eq!(ledger.sent(&reader(1), Some(token(2))), None);
        assert_eq!(ledger.in_flight(), 1, "the open transaction");
        let commit = ledger.begin_commit().unwrap();
        assert_eq!(commit.checkpoints, vec![("db.c".to_owned(), token(2))]);
        assert_eq!(ledger.begin_commit(), None, "a commit is under way");
        ledger.commit_finished(commit, true);
        assert_eq!(ledger.in_flight(), 0);
        assert_eq!(ledger.restart(&reader(2)), Some(token(2)));
        // A stale generation's token is published, but never checkpointed.
        assert!(ledger.open_transaction());
        assert_eq!(ledger.sent(&reader(1), Some(token(9))), None);
        assert_eq!(ledger.begin_commit().unwrap().checkpoints, vec![]);
    }

    /// Issue 12, defect 4: a stalled reader restarted alone under exactly-once resumed at
    /// the last committed checkpoint while the open transaction held its newer records, and
    /// published them into it a second time.
    #[test]
    fn an_exactly_once_reader_restarts_after_what_the_open_transaction_holds() {
        let mut ledger = CheckpointLedger::exactly_once(Duration::from_secs(1));
        assert!(ledger.open_transaction());
        assert!(ledger.admits(&reader(1)));
        assert_eq!(ledger.sent(&reader(1), Some(token(1))), None);
        let commit = ledger.begin_commit().unwrap();
        assert_eq!(
            ledger.restart(&reader(1)),
            Some(token(1)),
            "the commit under way carries it"
        );
        ledger.commit_finished(commit, true);
        assert!(ledger.open_transaction());
        assert_eq!(ledger.sent(&reader(1), Some(token(2))), None);
        assert_eq!(ledger.sent(&reader(1), Some(token(3))), None);
        assert_eq!(ledger.restart(&reader(2)), Some(token(3)));
        // The predecessor's batch still in the producer's mailbox is refused, not published.
        assert!(!ledger.admits(&reader(1)));
        assert!(ledger.admits(&reader(2)));
        // The transaction commits the predecessor's token: the successor resumed after it.
        let commit = ledger.begin_commit().unwrap();
        assert_eq!(commit.checkpoints, vec![("db.c".to_owned(), token(3))]);
        ledger.commit_finished(commit, true);
        assert_eq!(ledger.restart(&reader(3)), Some(token(3)));
    }

    #[test]
    fn at_least_once_publishes_a_stale_generations_batch() {
        let mut ledger = CheckpointLedger::at_least_once(Duration::ZERO);
        assert_eq!(ledger.restart(&reader(2)), None);
        assert!(ledger.admits(&reader(1)), "a duplicate at most");
    }

    /// Issue 12, defect 4: a failure drain committed the open transaction, with the part of
    /// a copy batch handed to Kafka before a record was refused and no position recorded.
    #[test]
    fn a_transaction_holding_part_of_a_batch_is_never_committed() {
        let mut ledger = CheckpointLedger::exactly_once(Duration::from_secs(1));
        assert!(ledger.open_transaction());
        assert_eq!(ledger.sent(&reader(1), Some(token(1))), None);
        ledger.partly_sent();
        assert_eq!(ledger.begin_commit(), None, "the scheduled commit");
        assert_eq!(ledger.close(Ending::Stop), Closing::Abort);
        assert_eq!(ledger.close(Ending::Failure), Closing::Abort);
        ledger.aborted();
        assert_eq!(ledger.in_flight(), 0);
        assert_eq!(ledger.close(Ending::Failure), Closing::Nothing);
        // The next transaction starts clean.
        assert!(ledger.open_transaction());
        assert_eq!(ledger.sent(&reader(1), Some(token(2))), None);
        assert!(ledger.begin_commit().is_some());
    }

    #[test]
    fn only_a_clean_stop_commits_the_open_transaction() {
        let mut ledger = CheckpointLedger::exactly_once(Duration::from_secs(1));
        assert_eq!(ledger.close(Ending::Stop), Closing::Nothing, "none open");
        assert!(ledger.open_transaction());
        assert_eq!(ledger.sent(&reader(1), Some(token(1))), None);
        assert_eq!(ledger.close(Ending::Failure), Closing::Abort);
        assert_eq!(
            ledger.close(Ending::Stop),
            Closing::Commit(Commit {
                checkpoints: vec![("db.c".to_owned(), token(1))]
            })
        );
        assert_eq!(ledger.close(Ending::Stop), Closing::Nothing, "committing");
        let mut at_least_once = CheckpointLedger::at_least_once(Duration::ZERO);
        assert_eq!(at_least_once.close(Ending::Failure), Closing::Nothing);
    }
}
