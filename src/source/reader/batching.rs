//! Adaptive batching between a reader's change stream and the producer.
//!
//! A reader reads events one at a time, but hands them to the producer in batches: while one
//! batch is on its way (the producer's bounded mailbox, librdkafka's queue), the events read
//! meanwhile wait in a small bounded queue, and the next hand-off takes all of them at once.
//! An idle stream hands each event over at once (a batch of one, no added latency); a busy
//! one hands over as much as it read while the previous batch travelled, so the per-batch
//! cost (a mailbox round trip, a ledger ticket) is paid once per batch, not per event.
//!
//! Rules:
//! - Order is kept: a batch's records are the read items' records, in reading order.
//! - A batch's position is the last position among its items: positions only move forward
//!   within a reader, and an item without one (nothing read yet) never moves it back.
//! - A batch never exceeds [`MAX_BATCH_RECORDS`] records unless a single item alone does (an
//!   item is never cut: a split event's chunks belong together).
//! - Each item holds its records' room in the pipeline's memory budget ([`record_bytes`]);
//!   a batch holds its items' room until it is released, once librdkafka took the records.

use std::time::Instant;

use crate::budget::Held;
use crate::source::model::{OutgoingRecord, Position};

/// Records per hand-off to the producer, at most (unless one item alone has more).
pub const MAX_BATCH_RECORDS: usize = 500;

/// Items read but not yet handed over, at most: the reader waits beyond that.
pub const PENDING_ITEMS: usize = 1024;

/// What one read produced: its records (none for an idle read or a filtered event) and the
/// stream's position after it.
#[derive(Debug)]
pub struct ReadItem {
    /// The records, in order.
    pub records: Vec<OutgoingRecord>,
    /// The position after them.
    pub position: Option<Position>,
    /// When it was read.
    pub read_at: Instant,
    /// The records' room in the pipeline's memory budget.
    pub held: Held,
}

/// The bytes `records` hold in memory, as counted in the memory budget: their buffers (as
/// allocated, not only as filled) and the record itself.
pub fn record_bytes(records: &[OutgoingRecord]) -> usize {
    records
        .iter()
        .map(|r| {
            std::mem::size_of::<OutgoingRecord>()
                + r.key.as_ref().map_or(0, Vec::capacity)
                + r.value.as_ref().map_or(0, Vec::capacity)
                + r.topic.capacity()
                + r.origin.capacity()
                + r.failure.as_ref().map_or(0, String::capacity)
        })
        .sum()
}

/// Items merged into one hand-off.
#[derive(Debug)]
pub struct PendingBatch {
    records: Vec<OutgoingRecord>,
    position: Option<Position>,
    items: usize,
    held: Held,
    /// When its first, so oldest, item was read (items come in reading order).
    oldest: Instant,
}

impl PendingBatch {
    /// A batch of `first`.
    pub fn new(first: ReadItem) -> Self {
        let mut batch = Self {
            records: Vec::new(),
            position: None,
            items: 0,
            held: Held::default(),
            oldest: first.read_at,
        };
        batch.push(first);
        batch
    }

    /// Whether `next` may join without passing [`MAX_BATCH_RECORDS`].
    pub fn has_room_for(&self, next: &ReadItem) -> bool {
        self.records.len() + next.records.len() <= MAX_BATCH_RECORDS
    }

    /// Whether the batch is full.
    pub fn is_full(&self) -> bool {
        self.records.len() >= MAX_BATCH_RECORDS
    }

    /// Adds `item` after what the batch holds.
    pub fn push(&mut self, item: ReadItem) {
        self.records.extend(item.records);
        if item.position.is_some() {
            self.position = item.position;
        }
        self.items += 1;
        self.held.merge(item.held);
    }

    /// When the oldest item was read.
    pub fn oldest(&self) -> Instant {
        self.oldest
    }

    /// How many reads the batch holds.
    pub fn items(&self) -> usize {
        self.items
    }

    /// The records, the position after them and their room in the memory budget.
    pub fn into_parts(self) -> (Vec<OutgoingRecord>, Option<Position>, Held) {
        (self.records, self.position, self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn record(n: i64) -> OutgoingRecord {
        OutgoingRecord {
            topic: "t".to_owned(),
            key: Some(n.to_string().into_bytes()),
            value: Some(Vec::new()),
            origin: format!("event {n}"),
            failure: None,
        }
    }

    fn position(n: i32) -> Option<Position> {
        let token: mongodb::change_stream::event::ResumeToken =
            bson::from_document(doc! {"_data": format!("{n:04}")}).expect("a token");
        Some(Position::stream(token))
    }

    fn item(records: std::ops::Range<i64>, at: Option<i32>) -> ReadItem {
        ReadItem {
            records: records.map(record).collect(),
            position: at.and_then(position),
            read_at: Instant::now(),
            held: Held::default(),
        }
    }

    fn keys(records: &[OutgoingRecord]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned())
            .collect()
    }

    #[test]
    fn items_merge_in_order_and_the_last_position_wins() {
        let mut batch = PendingBatch::new(item(0..2, Some(1)));
        batch.push(item(2..3, Some(2)));
        batch.push(item(3..3, Some(3)));
        assert_eq!(batch.items(), 3);
        let (records, at, _) = batch.into_parts();
        assert_eq!(keys(&records), ["0", "1", "2"]);
        assert_eq!(at, position(3));
    }

    #[test]
    fn the_oldest_read_time_is_kept() {
        let first = item(0..1, Some(1));
        let read_at = first.read_at;
        let mut batch = PendingBatch::new(first);
        let mut later = item(1..2, Some(2));
        later.read_at = read_at + std::time::Duration::from_millis(5);
        batch.push(later);
        assert_eq!(batch.oldest(), read_at);
    }

    #[test]
    fn an_item_without_a_position_never_moves_it_back() {
        let mut batch = PendingBatch::new(item(0..1, Some(5)));
        batch.push(item(1..2, None));
        let (records, at, _) = batch.into_parts();
        assert_eq!(records.len(), 2);
        assert_eq!(at, position(5));
        let (_, none, _) = PendingBatch::new(item(0..1, None)).into_parts();
        assert_eq!(none, None);
    }

    #[test]
    fn a_batch_stops_at_the_limit_but_never_cuts_an_item() {
        let limit = i64::try_from(MAX_BATCH_RECORDS).expect("small");
        let mut batch = PendingBatch::new(item(0..limit - 1, Some(1)));
        assert!(!batch.is_full());
        assert!(batch.has_room_for(&item(0..1, Some(2))));
        assert!(!batch.has_room_for(&item(0..2, Some(2))));
        batch.push(item(limit - 1..limit, Some(2)));
        assert!(batch.is_full());
        // One item larger than the limit is still one batch.
        let big = PendingBatch::new(item(0..limit + 10, Some(3)));
        assert!(big.is_full());
        assert_eq!(big.into_parts().0.len(), MAX_BATCH_RECORDS + 10);
    }

    #[tokio::test]
    async fn a_batch_holds_its_items_room_until_it_is_dropped() {
        let budget = crate::budget::Budget::new("p", 64 * 1024, None);
        let mut first = item(0..1, Some(1));
        first.held = budget.take(2048, "t").await;
        let mut second = item(1..2, Some(2));
        second.held = budget.take(1024, "t").await;
        let mut batch = PendingBatch::new(first);
        batch.push(second);
        assert_eq!(budget.held_bytes(), 3 * 1024);
        let (_, _, held) = batch.into_parts();
        assert_eq!(held.bytes(), 3 * 1024);
        drop(held);
        assert_eq!(budget.held_bytes(), 0);
    }

    #[test]
    fn record_bytes_count_the_buffers_as_allocated() {
        let mut one = record(1);
        let mut value = Vec::with_capacity(4096);
        value.extend_from_slice(b"{}");
        one.value = Some(value);
        let bytes = record_bytes(&[one]);
        assert!(
            bytes >= 4096 + std::mem::size_of::<OutgoingRecord>(),
            "{bytes}"
        );
        assert_eq!(record_bytes(&[]), 0);
    }
}
