//! Extended JSON text → raw BSON in one pass, without building a JSON tree or a
//! [`Document`](bson::Document) first.
//!
//! Every value is written straight into one buffer as the parser meets it: a nested document
//! or array reserves its length, is filled in place and has its length patched at its end
//! (no buffer per document or array, no string per array element), and the element's type
//! byte is set once its value is read. An object whose first key starts with `$` is an
//! extended JSON wrapper (`{"$oid": ...}`, `{"$date": ...}`): that small object alone goes
//! through the `bson` crate's own reading, so every wrapper means exactly what it means
//! there. Whatever this reader does not take the same way as
//! `Bson::try_from(serde_json::Value)` (invalid JSON, a duplicate key, a key holding NUL, a
//! `$` key after a plain one, a top-level `$` key, a wrapper that nests, more than MongoDB's
//! 100 levels) answers `None`, and the caller reads the text the slow way, which says what is
//! wrong. So the two readers agree on every text, which `tests::agrees_with_the_tree_reader`
//! checks.

use std::borrow::Cow;
use std::fmt;

use bson::oid::ObjectId;
use bson::spec::ElementType;
use bson::{Bson, DateTime, RawBson, RawBsonRef, RawDocumentBuf};
use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde::Deserialize;

/// MongoDB's nesting limit for documents: deeper ones are refused by the server, so the
/// sink refuses them while decoding (which also bounds the decoder's recursion).
pub const MAX_NESTING_DEPTH: usize = 100;

/// The JSON object `bytes` as raw BSON, no deeper than MongoDB takes and without duplicate
/// keys (both checked while it is written); `None` when the text is not one this reader
/// takes (see the module doc).
pub fn document(bytes: &[u8]) -> Option<RawDocumentBuf> {
    // BSON takes about as many bytes as the JSON it is read from: one allocation, mostly.
    let mut out = Out {
        buf: Vec::with_capacity(bytes.len()),
        keys: Vec::with_capacity(16),
    };
    let mut parser = serde_json::Deserializer::from_slice(bytes);
    (&mut parser)
        .deserialize_map(TopLevel { out: &mut out })
        .ok()?;
    parser.end().ok()?;
    RawDocumentBuf::from_bytes(out.buf).ok()
}

/// Gives up on the fast reading; the caller reads the text the slow way.
fn give_up<E: serde::de::Error>() -> E {
    E::custom("not for the one-pass reader")
}

/// The BSON being written, and where the keys of the documents still open are in it.
struct Out {
    buf: Vec<u8>,
    /// The byte range of each key of the open documents, innermost last: a new key is
    /// checked against those of its own document (from the mark its `fill` took).
    keys: Vec<(usize, usize)>,
}

impl Out {
    /// Reserves a document's (or array's) length; [`Self::close`] writes it.
    fn open(&mut self) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        at
    }

    /// Ends the document opened at `at` and writes its length.
    fn close<E: serde::de::Error>(&mut self, at: usize) -> Result<(), E> {
        self.buf.push(0);
        let len = i32::try_from(self.buf.len() - at).map_err(|_| give_up::<E>())?;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }

    /// Starts an element named `key`, its type left to [`Self::typed`]; where the type goes.
    fn element(&mut self, key: &[u8]) -> usize {
        let at = self.buf.len();
        self.buf.push(0);
        self.buf.extend_from_slice(key);
        self.buf.push(0);
        at
    }

    /// [`Self::element`] for the array element at `index`, named by its decimal digits.
    fn index(&mut self, index: usize) -> usize {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        let mut rest = index;
        loop {
            start -= 1;
            digits[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.element(&digits[start..])
    }

    fn typed(&mut self, at: usize, kind: ElementType) {
        self.buf[at] = kind as u8;
    }

    /// An integer as the slow reader types it: int32 when it fits, else int64.
    fn integer(&mut self, v: i64) -> ElementType {
        match i32::try_from(v) {
            Ok(small) => {
                self.buf.extend_from_slice(&small.to_le_bytes());
                ElementType::Int32
            }
            Err(_) => {
                self.buf.extend_from_slice(&v.to_le_bytes());
                ElementType::Int64
            }
        }
    }

    fn double(&mut self, v: f64) -> ElementType {
        self.buf.extend_from_slice(&v.to_le_bytes());
        ElementType::Double
    }

    fn string(&mut self, v: &str) {
        // A BSON string's length counts its NUL; `i32` bounds it as the `bson` crate does.
        self.buf
            .extend_from_slice(&((v.len() + 1) as i32).to_le_bytes());
        self.buf.extend_from_slice(v.as_bytes());
        self.buf.push(0);
    }

    /// Writes `value`'s bytes as the `bson` crate writes them (the rare wrapper values).
    fn value(&mut self, value: RawBsonRef<'_>) -> ElementType {
        let mut one = RawDocumentBuf::new();
        one.append_ref("", value);
        let bytes = one.as_bytes();
        // Length (4), type (1), the empty key's NUL (1), the value, the document's NUL.
        self.buf.extend_from_slice(&bytes[6..bytes.len() - 1]);
        value.element_type()
    }

    /// Whether the document whose keys start at `mark` already has `key`.
    fn has_key(&self, mark: usize, key: &[u8]) -> bool {
        self.keys[mark..]
            .iter()
            .any(|&(start, end)| &self.buf[start..end] == key)
    }
}

/// A map key, borrowed from the input when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// The record's value itself: any `$` key is left to the slow reader.
struct TopLevel<'a> {
    out: &'a mut Out,
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.out.open();
        fill(&mut map, self.out, None, 1)?;
        self.out.close(at)
    }
}

/// Writes the fields of `map` (after `first`, already read) into the open document, each at
/// `depth`; gives up on a `$` key, a key holding NUL or one said twice (its last value wins
/// in the slow reader).
fn fill<'de, A: MapAccess<'de>>(
    map: &mut A,
    out: &mut Out,
    first: Option<Cow<'de, str>>,
    depth: usize,
) -> Result<(), A::Error> {
    let mark = out.keys.len();
    let mut next = first;
    if next.is_none() {
        next = map.next_key_seed(Key)?;
    }
    while let Some(key) = next {
        let key = key.as_bytes();
        if key.first() == Some(&b'$') || key.contains(&0) || out.has_key(mark, key) {
            return Err(give_up());
        }
        let at = out.element(key);
        out.keys.push((at + 1, at + 1 + key.len()));
        let kind = map.next_value_seed(Slot {
            out: &mut *out,
            depth,
        })?;
        out.typed(at, kind);
        next = map.next_key_seed(Key)?;
    }
    out.keys.truncate(mark);
    Ok(())
}

/// Reads one value (a field's or an array element's, its key already written) into the
/// buffer, answering its type; `depth`: the value's, counted as the sink's depth check
/// counts it (the record's fields are at 1).
struct Slot<'a> {
    out: &'a mut Out,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Slot<'_> {
    type Value = ElementType;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ElementType, D::Error> {
        if self.depth > MAX_NESTING_DEPTH {
            return Err(give_up());
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Slot<'_> {
    type Value = ElementType;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<ElementType, E> {
        self.out.buf.push(u8::from(v));
        Ok(ElementType::Boolean)
    }

    fn visit_i64<E>(self, v: i64) -> Result<ElementType, E> {
        Ok(self.out.integer(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<ElementType, E> {
        match i64::try_from(v) {
            Ok(v) => Ok(self.out.integer(v)),
            // Beyond int64: a double, as `serde_json::Number::as_f64` gives it.
            Err(_) => Ok(self.out.double(v as f64)),
        }
    }

    fn visit_f64<E>(self, v: f64) -> Result<ElementType, E> {
        Ok(self.out.double(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<ElementType, E> {
        self.out.string(v);
        Ok(ElementType::String)
    }

    fn visit_unit<E>(self) -> Result<ElementType, E> {
        Ok(ElementType::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ElementType, A::Error> {
        let out = self.out;
        let at = out.open();
        let mut index = 0usize;
        loop {
            let element = out.index(index);
            let read = seq.next_element_seed(Slot {
                out: &mut *out,
                depth: self.depth + 1,
            })?;
            match read {
                Some(kind) => out.typed(element, kind),
                None => {
                    out.buf.truncate(element);
                    break;
                }
            }
            index += 1;
        }
        out.close(at)?;
        Ok(ElementType::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ElementType, A::Error> {
        let out = self.out;
        let depth = self.depth + 1;
        let Some(first) = map.next_key_seed(Key)? else {
            let at = out.open();
            out.close(at)?;
            return Ok(ElementType::EmbeddedDocument);
        };
        if first.starts_with('$') {
            return wrapper(map, first, out);
        }
        let at = out.open();
        fill(&mut map, out, Some(first), depth)?;
        out.close(at)?;
        Ok(ElementType::EmbeddedDocument)
    }
}

/// An extended JSON wrapper, its first key `first` read: written as the value it stands for.
fn wrapper<'de, A: MapAccess<'de>>(
    mut map: A,
    first: Cow<'de, str>,
    out: &mut Out,
) -> Result<ElementType, A::Error> {
    // A wrapper (or a document of `$` keys): small; read it as the `bson` crate does.
    let value = map.next_value_seed(FirstValue)?;
    let second = map.next_key_seed(Key)?;
    if let (None, WrapperValue::Text(text)) = (&second, &value) {
        // The two wrappers of every change event, taken without the general reading;
        // anything else about them (a bad id or date) is left to it.
        match first.as_ref() {
            "$oid" => {
                if let Some(id) = object_id(text) {
                    out.buf.extend_from_slice(&id.bytes());
                    return Ok(ElementType::ObjectId);
                }
            }
            "$date" => {
                if let Ok(date) = DateTime::parse_rfc3339_str(text) {
                    out.buf
                        .extend_from_slice(&date.timestamp_millis().to_le_bytes());
                    return Ok(ElementType::DateTime);
                }
            }
            _ => {}
        }
    }
    let mut object = serde_json::Map::new();
    object.insert(first.into_owned(), value.into_json());
    if let Some(second) = second {
        object.insert(second.into_owned(), map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            object.insert(key, value);
        }
    }
    let value = Bson::try_from(serde_json::Value::Object(object)).map_err(A::Error::custom)?;
    // A document of `$` keys or a code with scope nests: rare, and its depth is for the
    // slow reader to count.
    if matches!(
        value,
        Bson::Document(_) | Bson::Array(_) | Bson::JavaScriptCodeWithScope(_)
    ) {
        return Err(give_up());
    }
    let value = RawBson::try_from(value).map_err(A::Error::custom)?;
    Ok(out.value(value.as_raw_bson_ref()))
}

/// The ObjectId of 24 hex digits (either case), as `ObjectId::parse_str` reads it but
/// without its intermediate `Vec`; `None` for any other text.
fn object_id(hex: &str) -> Option<ObjectId> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let text = hex.as_bytes();
    if text.len() != 24 {
        return None;
    }
    let mut bytes = [0u8; 12];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(ObjectId::from_bytes(bytes))
}

/// The value of a wrapper's first key: text (an id's hex, a date) borrowed when it can be,
/// anything else as the JSON the `bson` crate reads.
enum WrapperValue<'de> {
    Text(Cow<'de, str>),
    Json(serde_json::Value),
}

impl WrapperValue<'_> {
    fn into_json(self) -> serde_json::Value {
        match self {
            Self::Text(text) => serde_json::Value::String(text.into_owned()),
            Self::Json(value) => value,
        }
    }
}

/// Reads a [`WrapperValue`].
struct FirstValue;

impl<'de> DeserializeSeed<'de> for FirstValue {
    type Value = WrapperValue<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// Everything but text is read by `serde_json::Value` itself, so it is the value
/// `map.next_value::<serde_json::Value>()` reads.
impl<'de> Visitor<'de> for FirstValue {
    type Value = WrapperValue<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(WrapperValue::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(WrapperValue::Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(WrapperValue::Text(Cow::Owned(v)))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        serde_json::Value::deserialize(v.into_deserializer()).map(WrapperValue::Json)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        serde_json::Value::deserialize(v.into_deserializer()).map(WrapperValue::Json)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        serde_json::Value::deserialize(v.into_deserializer()).map(WrapperValue::Json)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        serde_json::Value::deserialize(v.into_deserializer()).map(WrapperValue::Json)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        serde_json::Value::deserialize(().into_deserializer()).map(WrapperValue::Json)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        serde_json::Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
            .map(WrapperValue::Json)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        serde_json::Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            .map(WrapperValue::Json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slow reader: JSON tree, then `Bson`, then raw BSON.
    fn tree(bytes: &[u8]) -> Option<RawDocumentBuf> {
        let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        match Bson::try_from(value).ok()? {
            Bson::Document(doc) => RawDocumentBuf::from_document(&doc).ok(),
            _ => None,
        }
    }

    #[test]
    fn agrees_with_the_tree_reader() {
        let texts: &[&str] = &[
            r#"{}"#,
            r#"{"a": 1, "b": -2, "c": 3000000000, "d": -3000000000, "e": 18446744073709551615}"#,
            r#"{"f": 1.5, "g": 1e300, "h": -0.0, "i": 2.0}"#,
            r#"{"s": "text", "esc": "a\"b\\c\u00e9\n", "t": true, "n": null}"#,
            r#"{"k\u0041y": 1, "nested": {"x": {"y": [1, "two", {"z": null}, [3]]}}}"#,
            r#"{"_id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}, "at": {"$date": "2023-11-14T22:13:20Z"}}"#,
            r#"{"at": {"$date": {"$numberLong": "1700000000000"}}, "l": {"$numberLong": "5"}}"#,
            r#"{"d": {"$numberDecimal": "1.10"}, "b": {"$binary": {"base64": "AQI=", "subType": "00"}}}"#,
            r#"{"u": {"$uuid": "00112233-4455-6677-8899-aabbccddeeff"}, "r": {"$regularExpression": {"pattern": "a", "options": "i"}}}"#,
            r#"{"arr": [{"$oid": "64b7f0c2a1b2c3d4e5f60718"}, {"$numberDouble": "NaN"}, {"$minKey": 1}]}"#,
            r#"{"ts": {"$timestamp": {"t": 1, "i": 2}}, "c": {"$code": "x"}}"#,
            r#"{"at": {"$date": "2023-11-14T22:13:20.123+02:00"}, "old": {"$date": 5}}"#,
            r#"{"at": {"$date": "1969-12-31T23:59:59.999Z"}, "u": {"$undefined": true}}"#,
        ];
        for text in texts {
            let fast = document(text.as_bytes());
            assert!(fast.is_some(), "the one-pass reader gave up on {text}");
            assert_eq!(fast, tree(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn object_ids_are_read_as_the_bson_crate_reads_them() {
        for hex in [
            "64b7f0c2a1b2c3d4e5f60718",
            "64B7F0C2A1B2C3D4E5F6071f",
            "64b7f0c2a1b2c3d4e5f6071",
            "64b7f0c2a1b2c3d4e5f607189",
            "64b7f0c2a1b2c3d4e5f6071g",
            "+4b7f0c2a1b2c3d4e5f60718",
            "\u{e9}4b7f0c2a1b2c3d4e5f6071",
            "",
        ] {
            assert_eq!(object_id(hex), ObjectId::parse_str(hex).ok(), "{hex}");
        }
    }

    #[test]
    fn takes_documents_up_to_mongodbs_depth_and_no_deeper() {
        let nested = |depth: usize| format!("{}1{}", "{\"a\": ".repeat(depth), "}".repeat(depth));
        let arrays = |depth: usize| {
            format!(
                "{{\"a\": {}1{}}}",
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            )
        };
        for (depth, taken) in [(100, true), (101, false)] {
            assert_eq!(
                document(nested(depth).as_bytes()).is_some(),
                taken,
                "{depth}"
            );
            assert_eq!(
                document(arrays(depth).as_bytes()).is_some(),
                taken,
                "{depth}"
            );
        }
    }

    #[test]
    fn gives_up_where_the_slow_reader_decides() {
        for text in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"x": {"a": 1, "a": 2}}"#,
            r#"{"x": {"a": 1, "$oid": "64b7f0c2a1b2c3d4e5f60718"}}"#,
            r#"{"$oid": "64b7f0c2a1b2c3d4e5f60718"}"#,
            r#"{"a\u0000b": 1}"#,
            r#"{"x": {"$oid": "not an id"}}"#,
            r#"{"x": {"$date": "yesterday"}}"#,
            // Wrappers that nest are left to the slow reader, which counts their depth.
            r#"{"code": {"$code": "x", "$scope": {"a": 1}}}"#,
            r#"{"op": {"$set": {"a": 1}}}"#,
            r#"{"x": {"$oid": "64b7f0c2a1b2c3d4e5f60718", "y": 1}}"#,
            r#"[1]"#,
            r#"{"a": 1"#,
            r#"{"a": 1} trailing"#,
        ] {
            assert_eq!(document(text.as_bytes()), None, "{text}");
        }
    }
}
