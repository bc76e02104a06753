//! [`Reassembly`]: a partition's records as its writer batches them, split events put back
//! together (see [`crate::chunks`]), without I/O: the writer logs and counts what it reports.
//!
//! Rules:
//! - A record without chunk headers passes through as it is.
//! - A chunk is kept until its event's last chunk arrives; the whole event then stands at
//!   its last chunk's offset, with its first chunk's offset beside it (no commit may pass
//!   that one while the event is not written), and without the chunk headers.
//! - A record whose chunk headers cannot be read, or a chunk that follows none of the events
//!   being put together, is refused (stage `decode`), not dropped: it goes to the dead
//!   letter topic or stops the pipeline, naming it, like any record that cannot be written.
//! - At most [`MAX_PENDING_SPLIT_BYTES`] of unfinished events are held; beyond that the
//!   oldest is given up (its later chunks arrive as orphans). Given-up events are reported
//!   by [`Reassembly::take_given_up`].

use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};

use super::model::{RecordError, Stage};
use crate::chunks::{self, ChunkHeader, Fed, Reassembler};

/// Bytes of split events a writer holds at once while their chunks arrive, however many
/// events: at least one MongoDB document of 16 MiB as JSON, several times over.
pub const MAX_PENDING_SPLIT_BYTES: usize = 64 * 1024 * 1024;

/// A record of a batch.
#[derive(Debug)]
pub struct Entry {
    /// The record; a split event whole, at its last chunk's offset.
    pub message: OwnedMessage,
    /// The offset of its first chunk (its own offset when it was not split).
    pub first_offset: i64,
    /// Why it cannot be written, when that is known before converting.
    pub known: Option<RecordError>,
}

impl Entry {
    fn new(message: OwnedMessage, known: Option<RecordError>) -> Self {
        Self {
            first_offset: message.offset(),
            message,
            known,
        }
    }

    fn refused(message: OwnedMessage, reason: impl std::fmt::Display) -> Self {
        Self::new(
            message,
            Some(RecordError::new(
                Stage::Decode,
                format!("split event: {reason}"),
            )),
        )
    }
}

/// Split events given up since the last ask.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GivenUp {
    /// Stopped before their last chunk: their producer sent them again, or a chunk was
    /// missing.
    pub abandoned: u64,
    /// The oldest, given up because more than [`MAX_PENDING_SPLIT_BYTES`] were held.
    pub over_budget: u64,
}

/// Puts one partition's split events back together.
#[derive(Debug)]
pub struct Reassembly {
    chunks: Reassembler,
}

impl Default for Reassembly {
    fn default() -> Self {
        Self::new(MAX_PENDING_SPLIT_BYTES)
    }
}

impl Reassembly {
    /// A reassembly holding at most `max_pending_bytes` of unfinished events.
    pub fn new(max_pending_bytes: usize) -> Self {
        Self {
            chunks: Reassembler::new(max_pending_bytes),
        }
    }

    /// Passes ordinary records through and puts split events back together: `None` while
    /// an event's chunks are still arriving.
    pub fn feed(&mut self, message: OwnedMessage) -> Option<Entry> {
        let header = ChunkHeader::parse(
            message
                .headers()
                .into_iter()
                .flat_map(|h| h.iter())
                .map(|h| (h.key, h.value)),
        );
        let header = match header {
            Ok(None) => return Some(Entry::new(message, None)),
            Ok(Some(header)) => header,
            Err(reason) => return Some(Entry::refused(message, reason)),
        };
        let fed = self.chunks.feed(
            &header,
            message.key(),
            message.offset(),
            message.payload().unwrap_or_default(),
        );
        match fed {
            Fed::Incomplete => None,
            Fed::Orphan(reason) => Some(Entry::refused(message, reason)),
            Fed::Complete {
                value,
                first_offset,
            } => {
                let mut headers = OwnedHeaders::new();
                for h in message.headers().into_iter().flat_map(|h| h.iter()) {
                    if ![chunks::ID, chunks::INDEX, chunks::COUNT].contains(&h.key) {
                        headers = headers.insert(Header {
                            key: h.key,
                            value: h.value,
                        });
                    }
                }
                // The whole event stands at its last chunk's offset.
                let whole = OwnedMessage::new(
                    Some(value),
                    message.key().map(<[u8]>::to_vec),
                    message.topic().to_owned(),
                    message.timestamp(),
                    message.partition(),
                    message.offset(),
                    Some(headers),
                );
                Some(Entry {
                    message: whole,
                    first_offset,
                    known: None,
                })
            }
        }
    }

    /// The offset of the first chunk of the oldest unfinished event: no commit passes it.
    pub fn oldest_held_offset(&self) -> Option<i64> {
        self.chunks.oldest_held_offset()
    }

    /// The split events given up since the last ask (and forgets them).
    pub fn take_given_up(&mut self) -> GivenUp {
        GivenUp {
            abandoned: self.chunks.take_abandoned(),
            over_budget: self.chunks.take_over_budget(),
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;

    use super::*;

    fn record(offset: i64, value: &str, chunk: Option<(&str, usize, usize)>) -> OwnedMessage {
        keyed(b"k", offset, value, chunk)
    }

    fn keyed(
        key: &[u8],
        offset: i64,
        value: &str,
        chunk: Option<(&str, usize, usize)>,
    ) -> OwnedMessage {
        let mut headers = OwnedHeaders::new().insert(Header {
            key: "own",
            value: Some("kept"),
        });
        if let Some((id, index, count)) = chunk {
            for (key, value) in ChunkHeader::render(id, index, count) {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_str()),
                });
            }
        }
        OwnedMessage::new(
            Some(value.as_bytes().to_vec()),
            Some(key.to_vec()),
            "t".to_owned(),
            Timestamp::NotAvailable,
            0,
            offset,
            Some(headers),
        )
    }

    #[test]
    fn an_ordinary_record_passes_through() {
        let mut reassembly = Reassembly::default();
        let entry = reassembly.feed(record(7, "v", None)).expect("an entry");
        assert_eq!((entry.first_offset, entry.message.offset()), (7, 7));
        assert!(entry.known.is_none());
        assert_eq!(entry.message.payload(), Some(&b"v"[..]));
    }

    #[test]
    fn a_split_event_stands_whole_at_its_last_chunk_without_the_chunk_headers() {
        let mut reassembly = Reassembly::default();
        assert!(reassembly
            .feed(record(10, "ab", Some(("e", 0, 2))))
            .is_none());
        assert_eq!(reassembly.oldest_held_offset(), Some(10));
        let entry = reassembly
            .feed(record(11, "cd", Some(("e", 1, 2))))
            .expect("the whole event");
        assert_eq!((entry.first_offset, entry.message.offset()), (10, 11));
        assert_eq!(entry.message.payload(), Some(&b"abcd"[..]));
        let keys: Vec<&str> = entry
            .message
            .headers()
            .into_iter()
            .flat_map(|h| h.iter())
            .map(|h| h.key)
            .collect();
        assert_eq!(keys, ["own"]);
        assert_eq!(reassembly.oldest_held_offset(), None);
        assert_eq!(reassembly.take_given_up(), GivenUp::default());
    }

    #[test]
    fn an_orphan_chunk_is_refused_not_dropped() {
        let mut reassembly = Reassembly::default();
        let entry = reassembly
            .feed(record(5, "x", Some(("lost", 1, 2))))
            .expect("a refused entry");
        let error = entry.known.expect("refused");
        assert_eq!(error.stage, Stage::Decode);
        assert!(error.to_string().contains("split event"), "{error}");
    }

    #[test]
    fn an_event_sent_again_gives_the_unfinished_one_up() {
        let mut reassembly = Reassembly::default();
        assert!(reassembly
            .feed(record(1, "a", Some(("e1", 0, 2))))
            .is_none());
        // Its producer restarted and sends the same key's event again.
        assert!(reassembly
            .feed(record(2, "a", Some(("e2", 0, 2))))
            .is_none());
        assert_eq!(reassembly.take_given_up().abandoned, 1);
        assert_eq!(reassembly.take_given_up(), GivenUp::default());
    }

    #[test]
    fn beyond_the_byte_limit_the_oldest_event_is_given_up() {
        let mut reassembly = Reassembly::new(3);
        assert!(reassembly
            .feed(keyed(b"k1", 1, "aa", Some(("e1", 0, 2))))
            .is_none());
        assert!(reassembly
            .feed(keyed(b"k2", 2, "bb", Some(("e2", 0, 2))))
            .is_none());
        assert_eq!(reassembly.take_given_up().over_budget, 1);
        assert_eq!(reassembly.oldest_held_offset(), Some(2));
    }
}
