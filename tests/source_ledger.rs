//! The checkpoint ledger against random histories: batches sent, acknowledged or failed in
//! any order, readers restarted (their old generation still sending and being
//! acknowledged), time passing, drains, exactly-once commits and pipeline restarts. Whatever
//! happens, a checkpoint (written, committed, or handed to a restarting reader) never
//! passes an event whose record Kafka has not acknowledged. Exactly-once, a restarted
//! reader resumes after every event of its reader the open transaction holds (they commit
//! with that position or not at all, so none is published twice), and a transaction
//! holding part of a batch is never committed.
//!
//! Events are numbered per reader from 1; a batch carries the events after its reader's
//! cursor and, as its token, the number of its last event.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bson::{doc, Bson};
use mongo_kafka_bridge::source::ledger::{Action, CheckpointLedger, Closing, Ending, Ticket};
use mongo_kafka_bridge::source::model::{Position, ReaderId};
use proptest::prelude::*;

const READERS: usize = 2;
const INTERVAL: Duration = Duration::from_millis(100);

fn position(event: u64) -> Position {
    let token = bson::from_bson(Bson::Document(doc! { "_data": event.to_string() }));
    Position::stream(token.unwrap_or_else(|e| panic!("{e}")))
}

fn event_of(position: &Position) -> u64 {
    let bson = bson::to_bson(&position.token).unwrap_or_else(|e| panic!("{e}"));
    bson.as_document()
        .and_then(|d| d.get_str("_data").ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a test token: {bson}"))
}

fn namespace(reader: usize) -> String {
    format!("db.c{reader}")
}

#[derive(Debug, Clone)]
enum Op {
    /// The reader's current generation sends its next `events` events (none: an idle
    /// batch), with their token or without one.
    Send {
        reader: usize,
        events: u64,
        token: bool,
    },
    /// The reader's previous generation, not yet stopped, still sends a batch.
    StaleSend { reader: usize, events: u64 },
    /// Kafka acknowledges one of the batches in flight (picked by index).
    Ack(usize),
    /// A record of one of the batches in flight is not delivered.
    Fail(usize),
    /// The supervisor restarts a reader where the producer says.
    Restart(usize),
    /// Time passes; due wake-ups run.
    Tick(u64),
    /// The pipeline drains.
    Flush,
    /// Exactly-once: the open transaction is committed (or the commit fails and the
    /// pipeline restarts).
    Commit { ok: bool },
    /// The pipeline restarts: a new ledger, readers from the stored checkpoints.
    PipelineRestart,
    /// A batch of the reader is refused half-way through being handed to Kafka: the reader
    /// fails, and with it (exactly-once) the pipeline, its producer closed for a failure.
    PartlySent { reader: usize, events: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..READERS, 0..4_u64, prop::bool::weighted(0.85))
            .prop_map(|(reader, events, token)| Op::Send { reader, events, token }),
        1 => (0..READERS, 1..3_u64).prop_map(|(reader, events)| Op::StaleSend { reader, events }),
        6 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::Fail),
        2 => (0..READERS).prop_map(Op::Restart),
        2 => (0..250_u64).prop_map(Op::Tick),
        1 => Just(Op::Flush),
        2 => prop::bool::weighted(0.9).prop_map(|ok| Op::Commit { ok }),
        1 => Just(Op::PipelineRestart),
        1 => (0..READERS, 1..3_u64).prop_map(|(reader, events)| Op::PartlySent { reader, events }),
    ]
}

#[derive(Debug, Clone)]
struct Cursor {
    generation: u64,
    /// The last event read.
    at: u64,
}

#[derive(Debug)]
struct Reader {
    current: Cursor,
    /// The generation before the current one, still able to send.
    previous: Option<Cursor>,
    /// Events whose records Kafka acknowledged, by any generation.
    acknowledged: BTreeSet<u64>,
    /// The checkpoint stored in Kafka last.
    stored: Option<u64>,
    /// The checkpoint the running pipeline loaded at its start.
    loaded: Option<u64>,
    /// The newest token the current generation sent.
    newest_token: Option<u64>,
    /// A batch of the current generation failed.
    failed: bool,
}

struct InFlight {
    reader: usize,
    ticket: Ticket,
    events: std::ops::RangeInclusive<u64>,
}

struct Model {
    exactly_once: bool,
    ledger: CheckpointLedger,
    readers: Vec<Reader>,
    in_flight: Vec<InFlight>,
    /// Exactly-once: the events in the open transaction, by reader.
    in_transaction: Vec<(usize, std::ops::RangeInclusive<u64>)>,
    /// Exactly-once: by reader, the last event of the newest batch in the open transaction
    /// that carried its token (a batch without one is covered by the next token only).
    held_tokens: Vec<Option<u64>>,
    wakes: Vec<(Instant, String)>,
    now: Instant,
}

impl Model {
    fn new(exactly_once: bool) -> Self {
        let mut model = Self {
            exactly_once,
            ledger: Self::ledger(exactly_once),
            readers: (0..READERS)
                .map(|_| Reader {
                    current: Cursor {
                        generation: 1,
                        at: 0,
                    },
                    previous: None,
                    acknowledged: BTreeSet::new(),
                    stored: None,
                    loaded: None,
                    newest_token: None,
                    failed: false,
                })
                .collect(),
            in_flight: Vec::new(),
            in_transaction: Vec::new(),
            held_tokens: vec![None; READERS],
            wakes: Vec::new(),
            now: Instant::now(),
        };
        model.now += Duration::from_secs(1);
        model
    }

    fn ledger(exactly_once: bool) -> CheckpointLedger {
        if exactly_once {
            CheckpointLedger::exactly_once(INTERVAL)
        } else {
            CheckpointLedger::at_least_once(INTERVAL)
        }
    }

    fn reader_index(namespace: &str) -> usize {
        (0..READERS)
            .find(|&r| namespace == self::namespace(r))
            .unwrap_or_else(|| panic!("unknown namespace {namespace}"))
    }

    /// The invariant: every event up to `event` was acknowledged.
    fn assert_covered(&self, reader: usize, event: u64, what: &str) {
        let acknowledged = &self.readers[reader].acknowledged;
        let missing: Vec<u64> = (1..=event).filter(|e| !acknowledged.contains(e)).collect();
        assert!(
            missing.is_empty(),
            "{what} of reader {reader} at event {event} passes events never acknowledged: {missing:?}"
        );
    }

    /// Exactly-once, a restarted reader may start after events of the open transaction:
    /// they are committed with its checkpoint, or the pipeline restarts from the committed
    /// ones. Every event up to `event` is acknowledged or in the open transaction.
    fn assert_covered_or_held(&self, reader: usize, event: u64, what: &str) {
        let acknowledged = &self.readers[reader].acknowledged;
        let held = |e: u64| {
            self.in_transaction
                .iter()
                .any(|(r, events)| *r == reader && events.contains(&e))
        };
        let missing: Vec<u64> = (1..=event)
            .filter(|e| !acknowledged.contains(e) && !held(*e))
            .collect();
        assert!(
            missing.is_empty(),
            "{what} of reader {reader} at event {event} passes events neither acknowledged nor in the open transaction: {missing:?}"
        );
    }

    fn perform(&mut self, action: Option<Action>) {
        match action {
            // The position is the one stored already.
            None | Some(Action::Unchanged { .. }) => {}
            Some(Action::WakeAfter { namespace, after }) => {
                self.wakes.push((self.now + after, namespace));
            }
            Some(Action::Write {
                namespace,
                position,
            }) => {
                let reader = Self::reader_index(&namespace);
                let event = event_of(&position);
                self.assert_covered(reader, event, "a written checkpoint");
                self.readers[reader].stored = Some(event);
            }
        }
    }

    fn send(
        &mut self,
        reader: usize,
        generation: u64,
        events: std::ops::RangeInclusive<u64>,
        token: bool,
    ) {
        let id = ReaderId {
            namespace: namespace(reader),
            generation,
        };
        if token && generation == self.readers[reader].current.generation {
            self.readers[reader].newest_token = Some(*events.end());
        }
        let last = *events.end();
        let tokened = token;
        let token = token.then(|| position(last));
        if !self.ledger.admits(&id) {
            assert!(
                self.exactly_once && generation < self.readers[reader].current.generation,
                "only an exactly-once predecessor's batch is refused"
            );
            return;
        }
        if self.exactly_once {
            self.ledger.open_transaction();
        }
        match self.ledger.sent(&id, token) {
            Some(ticket) => self.in_flight.push(InFlight {
                reader,
                ticket,
                events,
            }),
            None => {
                assert!(self.exactly_once, "an at-least-once batch needs a ticket");
                if tokened {
                    self.held_tokens[reader] = Some(last);
                }
                self.in_transaction.push((reader, events));
            }
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Send {
                reader,
                events,
                token,
            } => {
                let cursor = &mut self.readers[reader].current;
                let range = cursor.at + 1..=cursor.at + events;
                cursor.at += events;
                let generation = cursor.generation;
                self.send(reader, generation, range, token);
            }
            Op::StaleSend { reader, events } => {
                let Some(cursor) = self.readers[reader].previous.as_mut() else {
                    return;
                };
                let range = cursor.at + 1..=cursor.at + events;
                cursor.at += events;
                let generation = cursor.generation;
                self.send(reader, generation, range, true);
            }
            Op::Ack(pick) | Op::Fail(pick) if self.in_flight.is_empty() => {
                let _ = pick;
            }
            Op::Ack(pick) => {
                let batch = self.in_flight.remove(pick % self.in_flight.len());
                self.readers[batch.reader].acknowledged.extend(batch.events);
                let action = self.ledger.acknowledged(&batch.ticket, self.now);
                self.perform(action);
            }
            Op::Fail(pick) => {
                let batch = self.in_flight.remove(pick % self.in_flight.len());
                let reader = &mut self.readers[batch.reader];
                reader.failed |= batch.ticket.reader.generation == reader.current.generation;
                self.ledger.failed(&batch.ticket);
            }
            Op::Restart(reader) => {
                let state = &mut self.readers[reader];
                let generation = state.current.generation + 1;
                let id = ReaderId {
                    namespace: namespace(reader),
                    generation,
                };
                let resumed = self.ledger.restart(&id).map(|p| event_of(&p));
                // As the supervisor does: the producer's answer, else the loaded
                // checkpoint, else the start.
                let at = resumed.or(state.loaded).unwrap_or(0);
                // Exactly-once: what the open transaction holds of this reader commits
                // with it; resuming before it would publish it twice.
                if let Some(held) = self.held_tokens[reader] {
                    assert!(
                        at >= held,
                        "reader {reader} restarts at event {at}, before event {held} of the open transaction: published twice"
                    );
                }
                state.previous = Some(state.current.clone());
                state.current = Cursor { generation, at };
                state.newest_token = None;
                state.failed = false;
                self.assert_covered_or_held(reader, at, "a restarted reader's start");
            }
            Op::Tick(millis) => {
                self.now += Duration::from_millis(millis);
                let now = self.now;
                let (due, later): (Vec<_>, Vec<_>) =
                    self.wakes.drain(..).partition(|(at, _)| *at <= now);
                self.wakes = later;
                for (_, namespace) in due {
                    let action = self.ledger.wake(&namespace, now);
                    self.perform(action);
                }
            }
            Op::Flush => {
                for action in self.ledger.flush(self.now) {
                    self.perform(Some(action));
                }
            }
            Op::Commit { ok } => {
                if !self.exactly_once {
                    return;
                }
                let Some(commit) = self.ledger.begin_commit() else {
                    return;
                };
                if ok {
                    for (reader, events) in self.in_transaction.drain(..) {
                        self.readers[reader].acknowledged.extend(events);
                    }
                    self.held_tokens = vec![None; READERS];
                    for (namespace, position) in &commit.checkpoints {
                        let reader = Self::reader_index(namespace);
                        let event = event_of(position);
                        self.assert_covered(reader, event, "a committed checkpoint");
                        self.readers[reader].stored = Some(event);
                    }
                    self.ledger.commit_finished(commit, true);
                } else {
                    self.ledger.commit_finished(commit, false);
                    self.apply(Op::PipelineRestart);
                }
            }
            Op::PartlySent { reader, events } => {
                let cursor = &mut self.readers[reader].current;
                let range = cursor.at + 1..=cursor.at + events;
                cursor.at += events;
                if !self.exactly_once {
                    // The reader fails and restarts at its acknowledged position.
                    self.apply(Op::Restart(reader));
                    return;
                }
                self.ledger.open_transaction();
                // Records handed over, their position never recorded.
                self.in_transaction.push((reader, range));
                self.ledger.partly_sent();
                assert_eq!(
                    self.ledger.begin_commit(),
                    None,
                    "a scheduled commit of a transaction holding part of a batch"
                );
                assert_eq!(self.ledger.close(Ending::Failure), Closing::Abort);
                self.ledger.aborted();
                self.apply(Op::PipelineRestart);
            }
            Op::PipelineRestart => {
                // What was in flight answers a producer that is gone; an open transaction
                // is aborted.
                self.in_flight.clear();
                self.in_transaction.clear();
                self.held_tokens = vec![None; READERS];
                self.wakes.clear();
                self.ledger = Self::ledger(self.exactly_once);
                for reader in &mut self.readers {
                    reader.loaded = reader.stored;
                    reader.previous = None;
                    reader.current = Cursor {
                        generation: reader.current.generation + 1,
                        at: reader.stored.unwrap_or(0),
                    };
                    reader.newest_token = None;
                    reader.failed = false;
                }
            }
        }
    }
}

fn replay(exactly_once: bool, ops: Vec<Op>) {
    let mut model = Model::new(exactly_once);
    for op in ops {
        model.apply(op);
    }
    // Drain: everything acknowledged, every checkpoint written.
    while !model.in_flight.is_empty() {
        model.apply(Op::Ack(0));
    }
    model.apply(Op::Commit { ok: true });
    model.apply(Op::Flush);
    // And the ledger is not safe by never writing: once everything is acknowledged, each
    // reader's checkpoint is the newest token its current generation sent.
    for (index, reader) in model.readers.iter().enumerate() {
        if let (Some(newest), false) = (reader.newest_token, reader.failed) {
            assert_eq!(
                reader.stored,
                Some(newest),
                "reader {index}: every record acknowledged, yet the checkpoint lags"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn at_least_once_checkpoints_never_pass_an_unacknowledged_record(
        ops in prop::collection::vec(op(), 1..80)
    ) {
        replay(false, ops);
    }

    #[test]
    fn exactly_once_checkpoints_never_pass_an_uncommitted_record(
        ops in prop::collection::vec(op(), 1..80)
    ) {
        replay(true, ops);
    }
}
