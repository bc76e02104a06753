//! Extended JSON text → raw BSON in one pass, without building a JSON tree or a
//! [`Document`](bson::Document) first.
//!
//! Plain fields are written straight into the [`RawDocumentBuf`] as the parser meets them.
//! An object whose first key starts with `$` is an extended JSON wrapper (`{"$oid": ...}`,
//! `{"$date": ...}`): that small object alone goes through the `bson` crate's own reading,
//! so every wrapper means exactly what it means there. Whatever this reader does not take
//! the same way as `Bson::try_from(serde_json::Value)` (invalid JSON, a duplicate key, a key
//! holding NUL, a `$` key after a plain one, a top-level `$` key, a wrapper that nests, more
//! than MongoDB's 100 levels) answers `None`, and the
//! caller reads the text the slow way, which says what is wrong. So the two readers agree on
//! every text, which `tests::agrees_with_the_tree_reader` checks.

use std::borrow::Cow;
use std::fmt;

use bson::oid::ObjectId;
use bson::{Bson, DateTime, RawArrayBuf, RawBson, RawBsonRef, RawDocumentBuf};
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

/// MongoDB's nesting limit for documents: deeper ones are refused by the server, so the
/// sink refuses them while decoding (which also bounds the decoder's recursion).
pub const MAX_NESTING_DEPTH: usize = 100;

/// The JSON object `bytes` as raw BSON, no deeper than MongoDB takes and without duplicate
/// keys (both checked while it is written); `None` when the text is not one this reader
/// takes (see the module doc).
pub fn document(bytes: &[u8]) -> Option<RawDocumentBuf> {
    let mut parser = serde_json::Deserializer::from_slice(bytes);
    let doc = (&mut parser).deserialize_map(TopLevel).ok()?;
    parser.end().ok()?;
    Some(doc)
}

/// Gives up on the fast reading; the caller reads the text the slow way.
fn give_up<E: serde::de::Error>() -> E {
    E::custom("not for the one-pass reader")
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
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = RawDocumentBuf;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut doc = RawDocumentBuf::new();
        fill(&mut map, &mut doc, None, 1)?;
        Ok(doc)
    }
}

/// Writes the fields of `map` (after `first`, already read) into `doc`, each at `depth`;
/// gives up on a `$` key, a key holding NUL or one said twice (its last value wins in the
/// slow reader).
fn fill<'de, A: MapAccess<'de>>(
    map: &mut A,
    doc: &mut RawDocumentBuf,
    first: Option<Cow<'de, str>>,
    depth: usize,
) -> Result<(), A::Error> {
    let mut keys: Vec<Cow<'de, str>> = Vec::with_capacity(8);
    let mut next = first;
    if next.is_none() {
        next = map.next_key_seed(Key)?;
    }
    while let Some(key) = next {
        if key.starts_with('$') || key.contains('\0') || keys.contains(&key) {
            return Err(give_up());
        }
        map.next_value_seed(Field {
            doc: &mut *doc,
            key: &key,
            depth,
        })?;
        keys.push(key);
        next = map.next_key_seed(Key)?;
    }
    Ok(())
}

/// Reads one value and appends it to `doc` under `key`; `depth`: the value's, counted as
/// the sink's depth check counts it (the record's fields are at 1).
struct Field<'a> {
    doc: &'a mut RawDocumentBuf,
    key: &'a str,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.depth > MAX_NESTING_DEPTH {
            return Err(give_up());
        }
        d.deserialize_any(self)
    }
}

/// An integer as the slow reader types it: int32 when it fits, else int64.
fn integer(v: i64) -> RawBsonRef<'static> {
    match i32::try_from(v) {
        Ok(small) => RawBsonRef::Int32(small),
        Err(_) => RawBsonRef::Int64(v),
    }
}

fn unsigned(v: u64) -> RawBsonRef<'static> {
    match i64::try_from(v) {
        Ok(v) => integer(v),
        // Beyond int64: a double, as `serde_json::Number::as_f64` gives it.
        Err(_) => RawBsonRef::Double(v as f64),
    }
}

impl<'de> Visitor<'de> for Field<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.doc.append_ref(self.key, RawBsonRef::Boolean(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.doc.append_ref(self.key, integer(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.doc.append_ref(self.key, unsigned(v));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.doc.append_ref(self.key, RawBsonRef::Double(v));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.doc.append_ref(self.key, RawBsonRef::String(v));
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.doc.append_ref(self.key, RawBsonRef::Null);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let array = array(seq, self.depth + 1)?;
        self.doc.append(self.key, array);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        match object(map, self.depth + 1)? {
            RawBson::Document(child) => self.doc.append_ref(self.key, RawBsonRef::Document(&child)),
            other => self.doc.append(self.key, other),
        }
        Ok(())
    }
}

/// An object whose fields are at `depth`: a plain document, or the value an extended JSON
/// wrapper stands for.
fn object<'de, A: MapAccess<'de>>(mut map: A, depth: usize) -> Result<RawBson, A::Error> {
    let Some(first) = map.next_key_seed(Key)? else {
        return Ok(RawBson::Document(RawDocumentBuf::new()));
    };
    if first.starts_with('$') {
        // A wrapper (or a document of `$` keys): small; read it as the `bson` crate does.
        let value: serde_json::Value = map.next_value()?;
        let second = map.next_key_seed(Key)?;
        if second.is_none() {
            // The two wrappers of every change event, taken without the general reading;
            // anything else about them (a bad id or date) is left to it.
            match (first.as_ref(), &value) {
                ("$oid", serde_json::Value::String(hex)) => {
                    if let Ok(id) = ObjectId::parse_str(hex) {
                        return Ok(RawBson::ObjectId(id));
                    }
                }
                ("$date", serde_json::Value::String(text)) => {
                    if let Ok(date) = DateTime::parse_rfc3339_str(text) {
                        return Ok(RawBson::DateTime(date));
                    }
                }
                _ => {}
            }
        }
        let mut object = serde_json::Map::new();
        object.insert(first.into_owned(), value);
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
        return RawBson::try_from(value).map_err(A::Error::custom);
    }
    let mut doc = RawDocumentBuf::new();
    fill(&mut map, &mut doc, Some(first), depth)?;
    Ok(RawBson::Document(doc))
}

/// A JSON array whose elements are at `depth`, each read as [`Element`] reads it.
fn array<'de, A: SeqAccess<'de>>(mut seq: A, depth: usize) -> Result<RawArrayBuf, A::Error> {
    let mut array = RawArrayBuf::new();
    while let Some(value) = seq.next_element_seed(Element { depth })? {
        array.push(value);
    }
    Ok(array)
}

/// One array element, at `depth`.
struct Element {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Element {
    type Value = RawBson;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawBson, D::Error> {
        if self.depth > MAX_NESTING_DEPTH {
            return Err(give_up());
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Element {
    type Value = RawBson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<RawBson, E> {
        Ok(RawBson::Boolean(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<RawBson, E> {
        Ok(integer(v).to_raw_bson())
    }

    fn visit_u64<E>(self, v: u64) -> Result<RawBson, E> {
        Ok(unsigned(v).to_raw_bson())
    }

    fn visit_f64<E>(self, v: f64) -> Result<RawBson, E> {
        Ok(RawBson::Double(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<RawBson, E> {
        Ok(RawBson::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<RawBson, E> {
        Ok(RawBson::String(v))
    }

    fn visit_unit<E>(self) -> Result<RawBson, E> {
        Ok(RawBson::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawBson, A::Error> {
        array(seq, self.depth + 1).map(RawBson::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawBson, A::Error> {
        object(map, self.depth + 1)
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
