//! Events larger than Kafka allows, published in chunks (`oversize = "split"` on a source)
//! and put back together by sink pipelines. Pure logic, shared by both sides.
//!
//! A split event is `count` consecutive records with the event's key, each carrying a slice
//! of the value and three headers: [`ID`] (the same for every chunk of one event),
//! [`INDEX`] (0-based) and [`COUNT`]. Records of one key land in one partition in order, so
//! a consumer sees the chunks of an event one after the other, perhaps interleaved with
//! records of other keys. When a producer restarts in the middle of an event, it publishes
//! the whole event again under a new id: the first, incomplete set is abandoned.

use std::collections::VecDeque;

/// Header naming the event a chunk belongs to.
pub const ID: &str = "mkb.chunk.id";
/// Header holding the chunk's 0-based position.
pub const INDEX: &str = "mkb.chunk.index";
/// Header holding the number of chunks of the event.
pub const COUNT: &str = "mkb.chunk.count";

/// The smallest chunk worth splitting into; below it, the key alone nearly fills a record.
pub const MIN_CHUNK_BYTES: usize = 1024;

/// Room left in each record for its key, headers and librdkafka's framing.
pub const RECORD_OVERHEAD_BYTES: usize = 1024;

/// The chunk size for records limited to `max_message_bytes` with a key of `key_len`
/// bytes; `None` when too little room is left.
pub fn chunk_size(max_message_bytes: usize, key_len: usize) -> Option<usize> {
    max_message_bytes
        .checked_sub(key_len + RECORD_OVERHEAD_BYTES)
        .filter(|size| *size >= MIN_CHUNK_BYTES)
}

/// The chunk headers of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The event's id.
    pub id: String,
    /// 0-based position.
    pub index: u32,
    /// Number of chunks.
    pub count: u32,
}

impl ChunkHeader {
    /// Reads the chunk headers from `(name, value)` pairs: `Ok(None)` for an ordinary
    /// record, an error naming the header when they are present but unusable.
    pub fn parse<'a>(
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Result<Option<Self>, String> {
        let (mut id, mut index, mut count) = (None, None, None);
        for (name, value) in headers {
            let slot = match name {
                ID => &mut id,
                INDEX => &mut index,
                COUNT => &mut count,
                _ => continue,
            };
            let text = value
                .and_then(|v| std::str::from_utf8(v).ok())
                .ok_or_else(|| format!("header `{name}` is not UTF-8 text"))?;
            *slot = Some(text.to_owned());
        }
        if id.is_none() && index.is_none() && count.is_none() {
            return Ok(None);
        }
        let number = |name: &str, value: Option<String>| -> Result<u32, String> {
            let value = value.ok_or_else(|| format!("header `{name}` is missing"))?;
            value
                .parse()
                .map_err(|_| format!("header `{name}` is `{value}`, not a number"))
        };
        let id = id.ok_or_else(|| format!("header `{ID}` is missing"))?;
        let index = number(INDEX, index)?;
        let count = number(COUNT, count)?;
        if count == 0 || index >= count {
            return Err(format!("chunk {index} of {count} is impossible"));
        }
        Ok(Some(Self { id, index, count }))
    }

    /// The header values of chunk `index` of `count`, as `(name, value)` pairs.
    pub fn render(id: &str, index: usize, count: usize) -> [(&'static str, String); 3] {
        [
            (ID, id.to_owned()),
            (INDEX, index.to_string()),
            (COUNT, count.to_string()),
        ]
    }
}

/// Splits `value` into chunks of at most `size` bytes (at least one chunk).
pub fn split(value: &[u8], size: usize) -> Vec<&[u8]> {
    if value.is_empty() || size == 0 {
        return vec![value];
    }
    value.chunks(size).collect()
}

/// An event whose chunks are still arriving.
#[derive(Debug)]
struct Pending {
    id: String,
    key: Option<Vec<u8>>,
    count: u32,
    next: u32,
    first_offset: i64,
    value: Vec<u8>,
}

/// What a chunk did to the reassembly.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// The event is whole: its value, and the offset of its first chunk.
    Complete {
        /// The reassembled value.
        value: Vec<u8>,
        /// Offset of the event's first chunk.
        first_offset: i64,
    },
    /// More chunks are needed.
    Incomplete,
    /// A chunk that follows none of the pending events (its predecessors were never seen).
    Orphan(String),
}

/// Puts split events of one partition back together. Holds at most `max_pending_bytes` of
/// incomplete events at once (however many events that is; valid traffic interleaves the
/// chunks of many keys); beyond that the oldest are given up, never the one being fed.
#[derive(Debug)]
pub struct Reassembler {
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    max_pending_bytes: usize,
    abandoned: u64,
    over_budget: u64,
}

impl Reassembler {
    /// A reassembler holding at most `max_pending_bytes` of incomplete events.
    pub fn new(max_pending_bytes: usize) -> Self {
        Self {
            pending: VecDeque::new(),
            pending_bytes: 0,
            max_pending_bytes,
            abandoned: 0,
            over_budget: 0,
        }
    }

    /// Gives up the oldest events until what is held fits the budget, keeping the newest.
    fn shed(&mut self) {
        while self.pending_bytes > self.max_pending_bytes && self.pending.len() > 1 {
            if let Some(oldest) = self.pending.pop_front() {
                self.pending_bytes -= oldest.value.len();
                self.over_budget += 1;
            }
        }
    }

    fn held_bytes(&self) -> usize {
        self.pending.iter().map(|p| p.value.len()).sum()
    }

    /// Takes the chunk at `offset`; `key` is the record's key.
    pub fn feed(
        &mut self,
        header: &ChunkHeader,
        key: Option<&[u8]>,
        offset: i64,
        value: &[u8],
    ) -> Fed {
        if header.index == 0 {
            // The same key starting over: its producer restarted and sends the event again.
            let before = self.pending.len();
            self.pending
                .retain(|p| p.id != header.id && (key.is_none() || p.key.as_deref() != key));
            self.abandoned += (before - self.pending.len()) as u64;
            self.pending_bytes = self.held_bytes();
            if header.count == 1 {
                return Fed::Complete {
                    value: value.to_vec(),
                    first_offset: offset,
                };
            }
            self.pending_bytes += value.len();
            self.pending.push_back(Pending {
                id: header.id.clone(),
                key: key.map(<[u8]>::to_vec),
                count: header.count,
                next: 1,
                first_offset: offset,
                value: value.to_vec(),
            });
            self.shed();
            return Fed::Incomplete;
        }
        let Some(position) = self.pending.iter().position(|p| p.id == header.id) else {
            return Fed::Orphan(format!(
                "chunk {} of {} of event `{}` arrived without the chunks before it",
                header.index, header.count, header.id
            ));
        };
        let pending = &mut self.pending[position];
        if header.index != pending.next || header.count != pending.count {
            let expected = pending.next;
            if let Some(dropped) = self.pending.remove(position) {
                self.pending_bytes -= dropped.value.len();
            }
            self.abandoned += 1;
            return Fed::Orphan(format!(
                "chunk {} of {} of event `{}` arrived where chunk {expected} was expected",
                header.index, header.count, header.id
            ));
        }
        pending.value.extend_from_slice(value);
        pending.next += 1;
        let complete = pending.next >= pending.count;
        self.pending_bytes += value.len();
        if !complete {
            // The event being fed is the newest to keep: move it to the back.
            if let Some(fed) = self.pending.remove(position) {
                self.pending.push_back(fed);
            }
            self.shed();
            return Fed::Incomplete;
        }
        match self.pending.remove(position) {
            Some(done) => {
                self.pending_bytes -= done.value.len();
                Fed::Complete {
                    value: done.value,
                    first_offset: done.first_offset,
                }
            }
            None => Fed::Incomplete,
        }
    }

    /// The offset of the oldest chunk still held: committing past it would lose the event.
    pub fn oldest_held_offset(&self) -> Option<i64> {
        self.pending.iter().map(|p| p.first_offset).min()
    }

    /// How many incomplete events were given up so far because their producer sent them
    /// again or a chunk was missing (and forgets the count).
    pub fn take_abandoned(&mut self) -> u64 {
        std::mem::take(&mut self.abandoned)
    }

    /// How many incomplete events were given up so far because more than the byte budget
    /// was held (and forgets the count).
    pub fn take_over_budget(&mut self) -> u64 {
        std::mem::take(&mut self.over_budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: &str, index: u32, count: u32) -> ChunkHeader {
        ChunkHeader {
            id: id.to_owned(),
            index,
            count,
        }
    }

    #[test]
    fn chunk_sizes_leave_room_for_the_key() {
        assert_eq!(chunk_size(1_000_000, 100), Some(1_000_000 - 100 - 1024));
        assert_eq!(chunk_size(2000, 100), None);
        assert_eq!(chunk_size(10, 100), None);
    }

    #[test]
    fn split_and_reassemble_round_trip() {
        let value: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let chunks = split(&value, 3000);
        assert_eq!(chunks.len(), 4);
        let mut r = Reassembler::new(4);
        let mut out = None;
        for (i, chunk) in chunks.iter().enumerate() {
            let fed = r.feed(&header("e1", i as u32, 4), Some(b"k"), 10 + i as i64, chunk);
            if i < 3 {
                assert_eq!(fed, Fed::Incomplete);
                assert_eq!(r.oldest_held_offset(), Some(10));
            } else {
                out = Some(fed);
            }
        }
        assert_eq!(
            out,
            Some(Fed::Complete {
                value,
                first_offset: 10
            })
        );
        assert_eq!(r.oldest_held_offset(), None);
        assert_eq!(split(b"", 10), vec![b"" as &[u8]]);
    }

    #[test]
    fn a_restarted_event_abandons_its_incomplete_first_copy() {
        let mut r = Reassembler::new(4);
        assert_eq!(
            r.feed(&header("a", 0, 3), Some(b"k"), 1, b"x"),
            Fed::Incomplete
        );
        assert_eq!(
            r.feed(&header("a", 1, 3), Some(b"k"), 2, b"y"),
            Fed::Incomplete
        );
        // Another key's event interleaves and completes on its own.
        assert_eq!(
            r.feed(&header("o", 0, 2), Some(b"o"), 3, b"1"),
            Fed::Incomplete
        );
        assert_eq!(
            r.feed(&header("o", 1, 2), Some(b"o"), 4, b"2"),
            Fed::Complete {
                value: b"12".to_vec(),
                first_offset: 3
            }
        );
        assert_eq!(
            r.feed(&header("b", 0, 2), Some(b"k"), 5, b"p"),
            Fed::Incomplete
        );
        assert_eq!(r.take_abandoned(), 1);
        assert_eq!(r.oldest_held_offset(), Some(5));
        assert_eq!(
            r.feed(&header("b", 1, 2), Some(b"k"), 6, b"q"),
            Fed::Complete {
                value: b"pq".to_vec(),
                first_offset: 5
            }
        );
    }

    #[test]
    fn orphans_and_gaps_are_named() {
        let mut r = Reassembler::new(4);
        assert!(matches!(
            r.feed(&header("z", 2, 3), None, 1, b"x"),
            Fed::Orphan(m) if m.contains("without the chunks before it")
        ));
        r.feed(&header("a", 0, 3), None, 2, b"x");
        assert!(matches!(
            r.feed(&header("a", 2, 3), None, 3, b"x"),
            Fed::Orphan(m) if m.contains("chunk 1 was expected")
        ));
        assert_eq!(r.oldest_held_offset(), None);
    }

    #[test]
    fn many_pending_events_within_the_byte_budget_are_all_kept() {
        let mut r = Reassembler::new(1000);
        for i in 0..100 {
            let id = format!("e{i}");
            r.feed(&header(&id, 0, 2), Some(id.as_bytes()), i, b"xxxxx");
        }
        assert_eq!((r.take_abandoned(), r.take_over_budget()), (0, 0));
        for i in 0..100 {
            let id = format!("e{i}");
            let fed = r.feed(&header(&id, 1, 2), Some(id.as_bytes()), 100 + i, b"yy");
            assert_eq!(
                fed,
                Fed::Complete {
                    value: b"xxxxxyy".to_vec(),
                    first_offset: i
                }
            );
        }
        assert_eq!(r.oldest_held_offset(), None);
    }

    #[test]
    fn over_the_byte_budget_the_oldest_events_go_never_the_one_fed() {
        let mut r = Reassembler::new(10);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            r.feed(&header(id, 0, 3), Some(id.as_bytes()), i as i64, b"xxxx");
        }
        // 12 bytes held: `a` goes.
        assert_eq!((r.take_abandoned(), r.take_over_budget()), (0, 1));
        assert_eq!(r.oldest_held_offset(), Some(1));
        // `b` grows past the budget: `c` (now the oldest fed) goes, `b` stays.
        assert_eq!(
            r.feed(&header("b", 1, 3), Some(b"b"), 3, b"xxxx"),
            Fed::Incomplete
        );
        assert_eq!(r.take_over_budget(), 1);
        assert_eq!(r.oldest_held_offset(), Some(1));
        // One event larger than the budget is still kept whole.
        assert!(matches!(
            r.feed(&header("b", 2, 3), Some(b"b"), 4, b"xxxxxxxxxxxx"),
            Fed::Complete {
                first_offset: 1,
                ..
            }
        ));
        assert_eq!(r.take_over_budget(), 0);
    }

    #[test]
    fn headers_parse_or_name_the_problem() {
        let h = |pairs: &[(&'static str, &'static [u8])]| {
            ChunkHeader::parse(pairs.iter().map(|(k, v)| (*k, Some(*v))))
        };
        assert_eq!(h(&[("other", b"1")]), Ok(None));
        assert_eq!(
            h(&[(ID, b"e"), (INDEX, b"1"), (COUNT, b"2")]),
            Ok(Some(header("e", 1, 2)))
        );
        assert!(h(&[(ID, b"e"), (INDEX, b"x"), (COUNT, b"2")])
            .is_err_and(|e| e.contains("`mkb.chunk.index` is `x`")));
        assert!(
            h(&[(ID, b"e"), (INDEX, b"2"), (COUNT, b"2")]).is_err_and(|e| e.contains("impossible"))
        );
        assert!(h(&[(INDEX, b"0"), (COUNT, b"2")]).is_err_and(|e| e.contains("`mkb.chunk.id`")));
        assert!(h(&[(ID, b"\xff"), (INDEX, b"0"), (COUNT, b"2")])
            .is_err_and(|e| e.contains("not UTF-8")));
        let rendered = ChunkHeader::render("e", 0, 2);
        assert_eq!(
            ChunkHeader::parse(rendered.iter().map(|(k, v)| (*k, Some(v.as_bytes())))),
            Ok(Some(header("e", 0, 2)))
        );
    }
}
