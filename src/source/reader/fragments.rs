//! Change events MongoDB returned in fragments (`$changeStreamSplitLargeEvent`, MongoDB 7.0
//! and 6.0.9+), put back together into the one event they were split from. Pure: the stream
//! loop feeds it every event it reads and publishes what comes out.
//!
//! What MongoDB documents and this relies on:
//! - An event over 16 MiB is split by its top-level fields into fragments returned one after
//!   the other, each carrying `splitEvent: {fragment: <1-based index>, of: <count>}` and a
//!   resume token of its own in `_id`. The first fragment holds as many fields as fit.
//! - Resuming after a fragment's token starts at the next fragment; after the last one, at
//!   the next event. So the reassembled event takes the last fragment's `_id`, and no
//!   position inside an incomplete event may become a checkpoint
//!   ([`Reassembler::in_progress`]): a restart then starts at the first fragment again.

use bson::{RawBsonRef, RawDocument, RawDocumentBuf};
use mongodb::change_stream::event::ResumeToken;

/// The field marking a fragment.
pub const SPLIT_EVENT: &str = "splitEvent";

/// Why fragments could not be put together. The stream restarts at its last checkpoint
/// (before the first fragment), where the server sends the whole sequence again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// `splitEvent` is not `{fragment: n, of: m}` with `1 <= n <= m`.
    #[error("`splitEvent` is not `{{fragment: <1..of>, of: <count>}}`: {0}")]
    Malformed(String),
    /// A fragment other than the next one arrived (or a whole event inside a sequence).
    #[error("expected fragment {expected} of {of}, got {got}")]
    OutOfOrder {
        /// The fragment the sequence needs next (1-based).
        expected: i64,
        /// The sequence's count.
        of: i64,
        /// What arrived: `fragment k of n`, or `an event that is not a fragment`.
        got: String,
    },
}

/// Collects the fragments of one event at a time.
#[derive(Debug, Default)]
pub struct Reassembler {
    /// The fragments of the event under way, in order, and its count.
    pending: Vec<RawDocumentBuf>,
    of: i64,
}

impl Reassembler {
    /// Whether fragments of an event are held: the stream's position is then inside an
    /// event and must not become a checkpoint.
    pub fn in_progress(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes the next event of the stream: the whole event once complete (an event that is
    /// not a fragment comes back as it is), `None` while fragments are missing.
    pub fn push(&mut self, event: RawDocumentBuf) -> Result<Option<RawDocumentBuf>, FragmentError> {
        let Some((fragment, of)) = split_event(&event)? else {
            if self.in_progress() {
                return Err(self.out_of_order("an event that is not a fragment".to_owned()));
            }
            return Ok(Some(event));
        };
        let expected = i64::try_from(self.pending.len()).unwrap_or(i64::MAX) + 1;
        let continues = if self.in_progress() {
            of == self.of
        } else {
            true
        };
        if fragment != expected || !continues {
            let got = format!("fragment {fragment} of {of}");
            if self.in_progress() {
                return Err(self.out_of_order(got));
            }
            return Err(FragmentError::OutOfOrder {
                expected: 1,
                of,
                got,
            });
        }
        self.of = of;
        self.pending.push(event);
        if fragment < of {
            return Ok(None);
        }
        let fragments = std::mem::take(&mut self.pending);
        join(&fragments).map(Some)
    }

    fn out_of_order(&mut self, got: String) -> FragmentError {
        let error = FragmentError::OutOfOrder {
            expected: i64::try_from(self.pending.len()).unwrap_or(i64::MAX) + 1,
            of: self.of,
            got,
        };
        // What was held cannot be completed any more.
        self.pending.clear();
        error
    }
}

/// The fragment number (0-based) a resume token carries: `Some` for the token of a fragment
/// of an event MongoDB split, which MongoDB resumes after only with
/// `$changeStreamSplitLargeEvent` in the pipeline (without it: error 280).
///
/// The token's `_data` is a hex KeyString of, in order (MongoDB's `resume_token.cpp`): the
/// cluster time, the version, the token type, `txnOpIndex`, `fromInvalidate`, the
/// collection's UUID (or null), the event identifier (an object), then, for a fragment
/// (version 2 on), its number. The header is read up to the event identifier; the number,
/// if any, is what follows the identifier's closing byte, before the end marker. A token
/// in another shape (an older version, a high-water mark, another server's) carries none.
pub fn token_fragment(token: &ResumeToken) -> Option<u64> {
    let bson::Bson::Document(token) = bson::to_bson(token).ok()? else {
        return None;
    };
    keystring_fragment(&hex(token.get_str("_data").ok()?)?)
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// KeyString type bytes (MongoDB's `key_string.h`, `CType`).
mod ctype {
    pub const NULLISH: u8 = 20;
    pub const NUMERIC_ZERO: u8 = 41;
    pub const NUMERIC_POSITIVE_1_BYTE_INT: u8 = 43;
    pub const NUMERIC_POSITIVE_8_BYTE_INT: u8 = 50;
    pub const OBJECT: u8 = 70;
    pub const BIN_DATA: u8 = 90;
    pub const BOOL_FALSE: u8 = 110;
    pub const BOOL_TRUE: u8 = 111;
    pub const TIMESTAMP: u8 = 130;
    pub const END: u8 = 4;
}

/// A non-negative integer at `at` (zero, or 1 to 8 big-endian bytes holding the value
/// shifted left by one, the low bit saying a fraction follows), moving `at` past it.
fn keystring_uint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let kind = *bytes.get(*at)?;
    *at += 1;
    match kind {
        ctype::NUMERIC_ZERO => Some(0),
        ctype::NUMERIC_POSITIVE_1_BYTE_INT..=ctype::NUMERIC_POSITIVE_8_BYTE_INT => {
            let len = usize::from(kind - ctype::NUMERIC_POSITIVE_1_BYTE_INT) + 1;
            let raw = bytes.get(*at..*at + len)?;
            *at += len;
            let shifted = raw.iter().fold(0_u64, |n, b| (n << 8) | u64::from(*b));
            (shifted & 1 == 0).then_some(shifted >> 1)
        }
        _ => None,
    }
}

fn keystring_fragment(bytes: &[u8]) -> Option<u64> {
    let mut at = 0;
    if *bytes.first()? != ctype::TIMESTAMP {
        return None;
    }
    at += 1 + 8;
    let version = keystring_uint(bytes, &mut at)?;
    if version < 2 {
        // Fragments came with version 2.
        return None;
    }
    let _token_type = keystring_uint(bytes, &mut at)?;
    let _txn_op_index = keystring_uint(bytes, &mut at)?;
    match *bytes.get(at)? {
        ctype::BOOL_FALSE | ctype::BOOL_TRUE => at += 1,
        _ => return None,
    }
    match *bytes.get(at)? {
        ctype::NULLISH => at += 1,
        // A one-byte size (a UUID's 16), the subtype, the bytes.
        ctype::BIN_DATA => at += 3 + usize::from(*bytes.get(at + 1)?),
        _ => return None,
    }
    if *bytes.get(at)? != ctype::OBJECT || *bytes.last()? != ctype::END {
        // A high-water mark has no event identifier.
        return None;
    }
    let rest = bytes.get(at..bytes.len() - 1)?;
    // The identifier closes with 0; a fragment number follows it. Without one, the last
    // byte is that 0, which none of these forms ends in.
    match *rest {
        [.., 0, ctype::NUMERIC_ZERO] => Some(0),
        [.., 0, kind @ ctype::NUMERIC_POSITIVE_1_BYTE_INT, n] if n != 0 => {
            keystring_uint(&[kind, n], &mut 0)
        }
        [.., 0, kind @ 44, high, low] if low != 0 => keystring_uint(&[kind, high, low], &mut 0),
        _ => None,
    }
}

/// `(fragment, of)` of a fragment, `None` for an event that is not one.
fn split_event(event: &RawDocument) -> Result<Option<(i64, i64)>, FragmentError> {
    let malformed = |what: &str| FragmentError::Malformed(what.to_owned());
    let split = match event.get(SPLIT_EVENT) {
        Ok(None) => return Ok(None),
        Ok(Some(RawBsonRef::Document(split))) => split,
        Ok(Some(_)) => return Err(malformed("not a document")),
        Err(e) => return Err(FragmentError::Malformed(e.to_string())),
    };
    let number = |name: &str| match split.get(name) {
        Ok(Some(RawBsonRef::Int32(n))) => Ok(i64::from(n)),
        Ok(Some(RawBsonRef::Int64(n))) => Ok(n),
        Ok(Some(_)) => Err(FragmentError::Malformed(format!(
            "`{name}` is not an integer"
        ))),
        Ok(None) => Err(FragmentError::Malformed(format!("no `{name}`"))),
        Err(e) => Err(FragmentError::Malformed(e.to_string())),
    };
    let (fragment, of) = (number("fragment")?, number("of")?);
    if fragment < 1 || fragment > of {
        return Err(FragmentError::Malformed(format!(
            "fragment {fragment} of {of}"
        )));
    }
    Ok(Some((fragment, of)))
}

/// One event from its fragments: the last fragment's `_id` (the token to resume after the
/// whole event), then every other field in the order the fragments hold them, without
/// `splitEvent`. Fields are copied as bytes, undecoded: one that does not decode (a string
/// that is not UTF-8) reaches the record builder, which dead-letters the event or stops the
/// pipeline naming it, as for any event.
fn join(fragments: &[RawDocumentBuf]) -> Result<RawDocumentBuf, FragmentError> {
    let total: usize = fragments.iter().map(|f| f.as_bytes().len()).sum();
    let mut bytes = Vec::with_capacity(total);
    bytes.extend_from_slice(&[0; 4]);
    let last = fragments.len().saturating_sub(1);
    for pass in [Pass::Id, Pass::Fields] {
        for (i, fragment) in fragments.iter().enumerate() {
            for (name, element) in elements(fragment)? {
                let keep = match pass {
                    Pass::Id => name == "_id" && i == last,
                    Pass::Fields => name != "_id" && name != SPLIT_EVENT,
                };
                if keep {
                    bytes.extend_from_slice(element);
                }
            }
        }
    }
    bytes.push(0);
    let length = i32::try_from(bytes.len())
        .map_err(|_| FragmentError::Malformed("the joined event exceeds 2 GiB".into()))?;
    bytes[..4].copy_from_slice(&length.to_le_bytes());
    RawDocumentBuf::from_bytes(bytes).map_err(|e| FragmentError::Malformed(e.to_string()))
}

#[derive(Clone, Copy)]
enum Pass {
    Id,
    Fields,
}

/// The top-level elements of `doc`: each name and the element's bytes (type, name, value).
fn elements(doc: &RawDocument) -> Result<Vec<(&str, &[u8])>, FragmentError> {
    let bytes = doc.as_bytes();
    let mut at = 4;
    let mut out = Vec::new();
    for element in doc.iter_elements() {
        let element = element.map_err(|e| FragmentError::Malformed(e.to_string()))?;
        // Type byte, the name and its NUL, the value: elements follow one another.
        let length = 2 + element.key().len() + element.len();
        let slice = bytes
            .get(at..at + length)
            .ok_or_else(|| FragmentError::Malformed("an element runs past its fragment".into()))?;
        out.push((element.key(), slice));
        at += length;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use bson::{doc, Document};

    use super::*;

    fn raw(doc: Document) -> RawDocumentBuf {
        RawDocumentBuf::from_document(&doc).unwrap_or_else(|e| panic!("{e}"))
    }

    fn document(raw: &RawDocumentBuf) -> Document {
        raw.to_document().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The three fragments of the update in MongoDB's documentation of
    /// `$changeStreamSplitLargeEvent`: a document of almost 16 MB updated with pre- and
    /// post-images on, the context and `updateDescription` first, then `fullDocument`,
    /// then `fullDocumentBeforeChange` (large strings shortened).
    fn documented_fragments() -> Vec<Document> {
        vec![
            doc! {
                "_id": { "_data": "826E8E8A2C000000012B042C0100296E5A100416E3B7B3F7AF4C26B5B4E8FB27F0E3B1463C6F7065726174696F6E54797065003C7570646174650046646F63756D656E744B657900461E5F6964002B00000004", "_typeBits": { "$binary": { "base64": "goA=", "subType": "00" } } },
                "splitEvent": { "fragment": 1, "of": 3 },
                "wallTime": bson::DateTime::from_millis(1_687_176_236_127),
                "clusterTime": bson::Timestamp { time: 1_687_176_236, increment: 1 },
                "operationType": "update",
                "ns": { "db": "test", "coll": "myCollection" },
                "documentKey": { "_id": 0 },
                "updateDescription": { "updatedFields": { "largeField": "b" }, "removedFields": [], "truncatedArrays": [] },
            },
            doc! {
                "_id": { "_data": "826E8E8A2C000000012B042C0100296E5A100416E3B7B3F7AF4C26B5B4E8FB27F0E3B1463C6F7065726174696F6E54797065003C7570646174650046646F63756D656E744B657900461E5F6964002B00000004", "_typeBits": { "$binary": { "base64": "goA=", "subType": "00" } }, "fragmentNum": 1 },
                "splitEvent": { "fragment": 2, "of": 3 },
                "fullDocument": { "_id": 0, "largeField": "bbbb" },
            },
            doc! {
                "_id": { "_data": "826E8E8A2C000000012B042C0100296E5A100416E3B7B3F7AF4C26B5B4E8FB27F0E3B1463C6F7065726174696F6E54797065003C7570646174650046646F63756D656E744B657900461E5F6964002B00000004", "_typeBits": { "$binary": { "base64": "goA=", "subType": "00" } }, "fragmentNum": 2 },
                "splitEvent": { "fragment": 3, "of": 3 },
                "fullDocumentBeforeChange": { "_id": 0, "largeField": "aaaa" },
            },
        ]
    }

    #[test]
    fn the_documented_fragments_become_one_event_with_the_last_token() {
        let fragments = documented_fragments();
        let mut reassembler = Reassembler::default();
        assert_eq!(reassembler.push(raw(fragments[0].clone())), Ok(None));
        assert!(reassembler.in_progress(), "no checkpoint inside an event");
        assert_eq!(reassembler.push(raw(fragments[1].clone())), Ok(None));
        let whole = reassembler
            .push(raw(fragments[2].clone()))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("the last fragment completes the event"));
        assert!(!reassembler.in_progress());
        let event = document(&whole);
        assert_eq!(
            event.keys().collect::<Vec<_>>(),
            [
                "_id",
                "wallTime",
                "clusterTime",
                "operationType",
                "ns",
                "documentKey",
                "updateDescription",
                "fullDocument",
                "fullDocumentBeforeChange"
            ]
        );
        assert_eq!(event.get("_id"), fragments[2].get("_id"));
        assert_eq!(event.get_str("operationType"), Ok("update"));
        assert_eq!(
            event.get_document("fullDocument").ok(),
            fragments[1].get_document("fullDocument").ok()
        );
        assert_eq!(
            event.get_document("fullDocumentBeforeChange").ok(),
            fragments[2].get_document("fullDocumentBeforeChange").ok()
        );
    }

    #[test]
    fn whole_events_pass_through_untouched_and_one_fragment_of_one_is_whole() {
        let mut reassembler = Reassembler::default();
        let plain = raw(doc! { "_id": { "_data": "01" }, "operationType": "insert" });
        assert_eq!(reassembler.push(plain.clone()), Ok(Some(plain)));
        let single = doc! { "_id": { "_data": "02" }, "splitEvent": { "fragment": 1_i64, "of": 1_i64 }, "operationType": "delete" };
        let whole = reassembler
            .push(raw(single))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            whole.as_ref().map(document),
            Some(doc! { "_id": { "_data": "02" }, "operationType": "delete" })
        );
    }

    #[test]
    fn fragments_out_of_order_or_interrupted_are_refused_and_forgotten() {
        let fragments = documented_fragments();
        // A stream resumed inside an event (after fragment 1's token) starts at fragment 2.
        let mut reassembler = Reassembler::default();
        assert_eq!(
            reassembler.push(raw(fragments[1].clone())),
            Err(FragmentError::OutOfOrder {
                expected: 1,
                of: 3,
                got: "fragment 2 of 3".into()
            })
        );
        // Fragment 3 right after fragment 1.
        assert_eq!(reassembler.push(raw(fragments[0].clone())), Ok(None));
        assert_eq!(
            reassembler.push(raw(fragments[2].clone())),
            Err(FragmentError::OutOfOrder {
                expected: 2,
                of: 3,
                got: "fragment 3 of 3".into()
            })
        );
        assert!(!reassembler.in_progress(), "the broken sequence is dropped");
        // A whole event inside a sequence.
        assert_eq!(reassembler.push(raw(fragments[0].clone())), Ok(None));
        let got = reassembler.push(raw(doc! { "_id": 1, "operationType": "insert" }));
        assert!(
            matches!(&got, Err(FragmentError::OutOfOrder { expected: 2, got, .. }) if got == "an event that is not a fragment"),
            "{got:?}"
        );
        // The whole sequence again (as after a restart at the checkpoint) completes.
        let mut again = Reassembler::default();
        let mut last = None;
        for fragment in &fragments {
            last = again
                .push(raw(fragment.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(last.is_some());
    }

    #[test]
    fn a_field_that_does_not_decode_is_kept_for_the_record_builder_to_report() {
        let first = raw(
            doc! { "_id": { "_data": "01" }, "splitEvent": { "fragment": 1, "of": 2 }, "operationType": "insert" },
        );
        let mut second = raw(doc! { "_id": { "_data": "02" }, "splitEvent": { "fragment": 2, "of": 2 }, "fullDocument": { "s": "abc" } }).into_bytes();
        let at = second
            .windows(3)
            .position(|w| w == b"abc")
            .unwrap_or_default();
        second[at + 2] = 0xff;
        let second = RawDocumentBuf::from_bytes(second).unwrap_or_else(|e| panic!("{e}"));
        let mut reassembler = Reassembler::default();
        assert_eq!(reassembler.push(first), Ok(None));
        let whole = reassembler
            .push(second)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("complete"));
        assert!(
            whole.to_document().is_err(),
            "the broken string is still there"
        );
        assert_eq!(whole.get_str("operationType"), Ok("insert"));
        assert!(whole.as_bytes().windows(3).any(|w| w == b"ab\xff"));
    }

    fn token(hex: &str) -> ResumeToken {
        bson::from_document(doc! { "_data": hex }).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Tokens as MongoDB's `resume_token.cpp` writes them: the header of the documented
    /// example (cluster time, v2, event token, txnOpIndex 0, not from an invalidate, the
    /// UUID), the event identifier `{operationType: "update", documentKey: {_id: 0}}`, then
    /// the fragment number (0-based) of a fragment.
    #[test]
    fn the_fragment_number_is_read_from_the_resume_token() {
        const HEADER: &str =
            "826E8E8A2C000000012B042C0100296E5A100416E3B7B3F7AF4C26B5B4E8FB27F0E3B1";
        const IDENTIFIER: &str = "463C6F7065726174696F6E54797065003C7570646174650046646F63756D656E744B657900461E5F69640029000000";
        let with = |fragment: &str| token(&format!("{HEADER}{IDENTIFIER}{fragment}04"));
        assert_eq!(token_fragment(&with("")), None, "a whole event");
        assert_eq!(token_fragment(&with("29")), Some(0));
        assert_eq!(token_fragment(&with("2B02")), Some(1));
        assert_eq!(token_fragment(&with("2B04")), Some(2));
        assert_eq!(token_fragment(&with("2C0102")), Some(129));
        // A version 2 high-water mark: no UUID (null), no identifier.
        assert_eq!(
            token_fragment(&token("826E8E8A2C000000012B0429296E1404")),
            None
        );
        // The documentation's example token; the stand-in's, and anything else.
        assert_eq!(
            token_fragment(&token("826E8E8A2C000000012B042C0100296E5A100416E3B7B3F7AF4C26B5B4E8FB27F0E3B1463C6F7065726174696F6E54797065003C7570646174650046646F63756D656E744B657900461E5F6964002B00000004")),
            None
        );
        assert_eq!(token_fragment(&token("not hex")), None);
        assert_eq!(token_fragment(&token("")), None);
        let other: ResumeToken =
            bson::from_document(doc! { "_data": 5 }).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(token_fragment(&other), None);
    }

    #[test]
    fn malformed_split_markers_are_named() {
        for (split, reason) in [
            (bson::Bson::String("1/3".into()), "not a document"),
            (doc! { "of": 3 }.into(), "no `fragment`"),
            (doc! { "fragment": 1 }.into(), "no `of`"),
            (doc! { "fragment": 0, "of": 3 }.into(), "fragment 0 of 3"),
            (doc! { "fragment": 4, "of": 3 }.into(), "fragment 4 of 3"),
            (
                doc! { "fragment": 1.5, "of": 3 }.into(),
                "`fragment` is not an integer",
            ),
        ] {
            let mut reassembler = Reassembler::default();
            let got = reassembler.push(raw(doc! { "_id": 1, "splitEvent": split }));
            assert_eq!(got, Err(FragmentError::Malformed(reason.into())));
        }
    }
}
