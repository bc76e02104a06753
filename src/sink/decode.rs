//! Kafka record bytes → the key and value of a [`SinkRecord`](super::model::SinkRecord).
//!
//! JSON is read as extended JSON (plain JSON is a subset: `{"$oid": ...}` becomes an
//! ObjectId). Nesting deeper than MongoDB's 100 levels is refused, checked without
//! recursion, so a hostile record cannot exhaust the stack.

use bson::{Bson, Document, RawBsonRef, RawDocument};

use super::model::{RecordError, Stage, MAX_NESTING_DEPTH};
use crate::config::RecordFormat;

fn error(part: &str, message: impl std::fmt::Display) -> RecordError {
    RecordError::new(Stage::Decode, format!("{part} {message}"))
}

/// The key: `None` when the record has none.
pub fn decode_key(bytes: Option<&[u8]>, format: RecordFormat) -> Result<Option<Bson>, RecordError> {
    let Some(bytes) = bytes else { return Ok(None) };
    if bytes.is_empty() {
        return Err(error("key", "is empty"));
    }
    match format {
        RecordFormat::Json => json(bytes, "key").map(Some),
        RecordFormat::Bson => bson(bytes, "key").map(|d| Some(Bson::Document(d))),
        RecordFormat::String => std::str::from_utf8(bytes)
            .map(|s| Some(Bson::String(s.to_owned())))
            .map_err(|e| error("key", format_args!("is not UTF-8 text: {e}"))),
    }
}

/// The value: `None` for a tombstone.
pub fn decode_value(
    bytes: Option<&[u8]>,
    format: RecordFormat,
) -> Result<Option<Document>, RecordError> {
    let Some(bytes) = bytes else { return Ok(None) };
    if bytes.is_empty() {
        return Err(error("value", "is empty (a tombstone has no value at all)"));
    }
    match format {
        RecordFormat::Json => match json(bytes, "value")? {
            Bson::Document(doc) => Ok(Some(doc)),
            other => Err(error(
                "value",
                format_args!("is JSON {}, expected an object", kind(&other)),
            )),
        },
        RecordFormat::Bson => bson(bytes, "value").map(Some),
        RecordFormat::String => Err(error("value", "cannot be read as `string`")),
    }
}

fn kind(value: &Bson) -> &'static str {
    match value {
        Bson::Array(_) => "an array",
        Bson::String(_) => "a string",
        Bson::Null => "null",
        Bson::Boolean(_) => "a boolean",
        _ => "a number",
    }
}

fn json(bytes: &[u8], part: &str) -> Result<Bson, RecordError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            error(
                part,
                format_args!("nests deeper than {MAX_NESTING_DEPTH} levels"),
            )
        } else {
            error(part, format_args!("is not valid JSON: {e}"))
        }
    })?;
    let mut stack = vec![(&value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        if depth > MAX_NESTING_DEPTH {
            return Err(error(
                part,
                format_args!("nests deeper than {MAX_NESTING_DEPTH} levels"),
            ));
        }
        match v {
            serde_json::Value::Array(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
            serde_json::Value::Object(map) => stack.extend(map.values().map(|i| (i, depth + 1))),
            _ => {}
        }
    }
    Bson::try_from(value).map_err(|e| error(part, format_args!("is not valid extended JSON: {e}")))
}

fn bson(bytes: &[u8], part: &str) -> Result<Document, RecordError> {
    let raw = RawDocument::from_bytes(bytes)
        .map_err(|e| error(part, format_args!("is not a BSON document: {e}")))?;
    let mut stack = vec![(RawBsonRef::Document(raw), 0usize)];
    while let Some((value, depth)) = stack.pop() {
        if depth > MAX_NESTING_DEPTH {
            return Err(error(
                part,
                format_args!("nests deeper than {MAX_NESTING_DEPTH} levels"),
            ));
        }
        let children: Box<dyn Iterator<Item = bson::raw::Result<RawBsonRef<'_>>>> = match value {
            RawBsonRef::Document(d) => Box::new(d.iter().map(|r| r.map(|(_, v)| v))),
            RawBsonRef::Array(a) => Box::new(a.into_iter()),
            _ => continue,
        };
        for child in children {
            let child = child.map_err(|e| error(part, format_args!("is not valid BSON: {e}")))?;
            stack.push((child, depth + 1));
        }
    }
    Document::try_from(raw).map_err(|e| error(part, format_args!("is not valid BSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId};

    #[test]
    fn json_values_read_extended_json() {
        let value = decode_value(
            Some(br#"{"_id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}, "n": 1}"#),
            RecordFormat::Json,
        )
        .expect("decodes")
        .expect("a value");
        assert_eq!(
            value.get_object_id("_id").ok(),
            ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").ok()
        );
        assert_eq!(
            decode_value(None, RecordFormat::Json).expect("tombstone"),
            None
        );
    }

    #[test]
    fn bad_values_say_what_they_are() {
        let err = decode_value(Some(b"[1]"), RecordFormat::Json).expect_err("array");
        assert!(err.message.contains("array"), "{err}");
        let err = decode_value(Some(b"{nope"), RecordFormat::Json).expect_err("bad");
        assert!(err.message.contains("not valid JSON"), "{err}");
        let err = decode_value(Some(b""), RecordFormat::Json).expect_err("empty");
        assert!(err.message.contains("empty"), "{err}");
        let err = decode_value(Some(b"\x05\0\0"), RecordFormat::Bson).expect_err("short");
        assert_eq!(err.stage, Stage::Decode);
    }

    #[test]
    fn keys_may_be_strings_or_any_json() {
        assert_eq!(
            decode_key(Some(b"abc"), RecordFormat::String).expect("ok"),
            Some(Bson::String("abc".into()))
        );
        assert_eq!(
            decode_key(Some(b"42"), RecordFormat::Json).expect("ok"),
            Some(Bson::Int32(42))
        );
        assert!(decode_key(Some(b"\xff"), RecordFormat::String).is_err());
        assert_eq!(decode_key(None, RecordFormat::Json).expect("ok"), None);
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing() {
        for depth in [101usize, 127, 5000] {
            let json = format!("{{\"a\": {}{}}}", "[".repeat(depth), "]".repeat(depth));
            let err = decode_value(Some(json.as_bytes()), RecordFormat::Json).expect_err("deep");
            assert!(err.message.contains("deeper"), "{depth}: {err}");
        }
        let ok = format!("{{\"a\": {}{}}}", "[".repeat(50), "]".repeat(50));
        assert!(decode_value(Some(ok.as_bytes()), RecordFormat::Json).is_ok());
        // 5000 nested BSON documents, built from the inside out without recursion.
        let mut bytes = bson::to_vec(&doc! {}).expect("empty");
        for _ in 0..5000 {
            let mut outer = Vec::with_capacity(bytes.len() + 8);
            let len = (bytes.len() + 4 + 1 + 2 + 1) as i32;
            outer.extend_from_slice(&len.to_le_bytes());
            outer.push(0x03);
            outer.extend_from_slice(b"a\0");
            outer.extend_from_slice(&bytes);
            outer.push(0);
            bytes = outer;
        }
        let err = decode_value(Some(&bytes), RecordFormat::Bson).expect_err("deep");
        assert!(err.message.contains("deeper"), "{err}");
        let round = bson::to_vec(&doc! {"x": {"y": [1, {"z": 2}]}}).expect("encodes");
        assert_eq!(
            decode_value(Some(&round), RecordFormat::Bson).expect("ok"),
            Some(doc! {"x": {"y": [1, {"z": 2}]}})
        );
    }
}
