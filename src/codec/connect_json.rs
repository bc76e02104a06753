//! Kafka Connect's `JsonConverter` envelope (`schemas.enable=true`): `{"schema": ...,
//! "payload": ...}`, the payload read with its Connect schema (`key_format` / `value_format =
//! "connect_json"`).
//!
//! | Connect schema | payload | BSON |
//! |---|---|---|
//! | `int8`, `int16`, `int32` | number | int32 |
//! | `int64` | number | int64 |
//! | `float`, `double` | number | double |
//! | `boolean`, `string` | | boolean, string |
//! | `bytes` | base64 string | binary |
//! | `struct` | object | document |
//! | `map` with string keys | object | document |
//! | `array` | array | array |
//! | `org.apache.kafka.connect.data.Timestamp` (`int64`) | milliseconds | date |
//! | `org.apache.kafka.connect.data.Date` (`int32`) | days since 1970 | date |
//! | `org.apache.kafka.connect.data.Decimal` (`bytes`, `scale` parameter) | base64 of the unscaled big-endian two's complement | decimal128 |
//!
//! Values without a schema (a `null` schema) and anything else read as plain JSON.

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Decimal128, Document};
use serde_json::Value;

use super::base64::decode as base64_decode;

const TIMESTAMP: &str = "org.apache.kafka.connect.data.Timestamp";
const DATE: &str = "org.apache.kafka.connect.data.Date";
const DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";

/// The payload of an envelope, read with its schema; `None` for a null payload.
pub fn read(envelope: Value) -> Result<Option<Bson>, String> {
    let Value::Object(mut map) = envelope else {
        return Err("is not a JSON object with `schema` and `payload`".into());
    };
    if map.len() != 2 || !map.contains_key("schema") || !map.contains_key("payload") {
        let keys: Vec<&String> = map.keys().collect();
        return Err(format!(
            "is not a Kafka Connect JSON envelope: its keys are {keys:?}, not `schema` and `payload`"
        ));
    }
    let schema = map.remove("schema").unwrap_or(Value::Null);
    match map.remove("payload").unwrap_or(Value::Null) {
        Value::Null => Ok(None),
        payload => convert(payload, &schema).map(Some),
    }
}

fn convert(payload: Value, schema: &Value) -> Result<Bson, String> {
    if payload.is_null() {
        return Ok(Bson::Null);
    }
    let kind = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = schema
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (kind, name, payload) {
        ("int64", TIMESTAMP, Value::Number(n)) => n
            .as_i64()
            .map(|ms| Bson::DateTime(DateTime::from_millis(ms)))
            .ok_or_else(|| format!("timestamp {n} is not an integer")),
        ("int32", DATE, Value::Number(n)) => n
            .as_i64()
            .map(|days| Bson::DateTime(DateTime::from_millis(days * 86_400_000)))
            .ok_or_else(|| format!("date {n} is not an integer")),
        ("bytes", DECIMAL, Value::String(text)) => {
            let scale = schema
                .pointer("/parameters/scale")
                .and_then(|s| {
                    s.as_str()
                        .map(str::to_owned)
                        .or_else(|| Some(s.to_string()))
                })
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or("a Decimal schema without a `scale` parameter")?;
            decimal(&base64_decode(&text)?, scale)
        }
        ("bytes", _, Value::String(text)) => Ok(Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes: base64_decode(&text)?,
        })),
        ("int8" | "int16" | "int32", _, Value::Number(n)) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .map(Bson::Int32)
            .ok_or_else(|| format!("{n} is not a {kind}")),
        ("int64", _, Value::Number(n)) => n
            .as_i64()
            .map(Bson::Int64)
            .ok_or_else(|| format!("{n} is not an int64")),
        ("float" | "double", _, Value::Number(n)) => n
            .as_f64()
            .map(Bson::Double)
            .ok_or_else(|| format!("{n} is not a number")),
        ("struct", _, Value::Object(map)) => {
            let fields = schema.get("fields").and_then(Value::as_array);
            let mut doc = Document::new();
            for (key, value) in map {
                let field = fields
                    .and_then(|f| {
                        f.iter()
                            .find(|f| f.get("field") == Some(&Value::from(key.as_str())))
                    })
                    .unwrap_or(&Value::Null);
                doc.insert(key, convert(value, field)?);
            }
            Ok(Bson::Document(doc))
        }
        ("map", _, Value::Object(map)) => {
            let values = schema.get("values").unwrap_or(&Value::Null);
            let mut doc = Document::new();
            for (key, value) in map {
                doc.insert(key, convert(value, values)?);
            }
            Ok(Bson::Document(doc))
        }
        ("array", _, Value::Array(items)) => {
            let items_schema = schema.get("items").unwrap_or(&Value::Null);
            items
                .into_iter()
                .map(|i| convert(i, items_schema))
                .collect::<Result<Vec<_>, _>>()
                .map(Bson::Array)
        }
        (_, _, other) => Bson::try_from(other).map_err(|e| format!("not valid JSON for BSON: {e}")),
    }
}

/// A decimal128 from the unscaled two's complement bytes of a Connect Decimal.
fn decimal(bytes: &[u8], scale: u32) -> Result<Bson, String> {
    if bytes.is_empty() || bytes.len() > 16 {
        return Err(format!(
            "a decimal of {} bytes does not fit a decimal128",
            bytes.len()
        ));
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut full = [fill; 16];
    full[16 - bytes.len()..].copy_from_slice(bytes);
    let unscaled = i128::from_be_bytes(full);
    format!("{unscaled}E-{scale}")
        .parse::<Decimal128>()
        .map(Bson::Decimal128)
        .map_err(|e| format!("decimal {unscaled}E-{scale} does not fit a decimal128: {e}"))
}

#[cfg(test)]
mod tests {
    use bson::doc;
    use serde_json::json;

    use super::*;

    #[test]
    fn the_payload_is_read_with_its_connect_schema() {
        // What the JsonConverter writes for a struct of every kind Connect has.
        let envelope = json!({
            "schema": {
                "type": "struct", "name": "order", "optional": false,
                "fields": [
                    { "field": "id", "type": "int32" },
                    { "field": "total", "type": "int64" },
                    { "field": "rate", "type": "double" },
                    { "field": "paid", "type": "boolean" },
                    { "field": "at", "type": "int64", "name": TIMESTAMP },
                    { "field": "day", "type": "int32", "name": DATE },
                    { "field": "price", "type": "bytes", "name": DECIMAL, "parameters": { "scale": "2" } },
                    { "field": "blob", "type": "bytes" },
                    { "field": "tags", "type": "array", "items": { "type": "string" } },
                    { "field": "attrs", "type": "map", "keys": { "type": "string" }, "values": { "type": "int32" } },
                    { "field": "note", "type": "string", "optional": true },
                ],
            },
            "payload": {
                "id": 7, "total": 12_345_678_901_i64, "rate": 0.5, "paid": true,
                "at": 1_700_000_000_123_i64, "day": 19_675,
                "price": "/5Q=", "blob": "AAH/", "tags": ["a", "b"], "attrs": { "x": 1 },
                "note": null,
            },
        });
        let read = read(envelope).expect("reads").expect("a payload");
        assert_eq!(
            read,
            Bson::Document(doc! {
                "id": 7_i32,
                "total": 12_345_678_901_i64,
                "rate": 0.5,
                "paid": true,
                "at": DateTime::from_millis(1_700_000_000_123),
                "day": DateTime::from_millis(19_675 * 86_400_000),
                // 0xff94 = -108: -1.08 at scale 2.
                "price": "-1.08".parse::<Decimal128>().expect("decimal"),
                "blob": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 255] },
                "tags": ["a", "b"],
                "attrs": { "x": 1_i32 },
                "note": Bson::Null,
            })
        );
    }

    #[test]
    fn null_payloads_are_tombstones_and_other_shapes_are_refused() {
        assert_eq!(read(json!({"schema": null, "payload": null})), Ok(None));
        assert_eq!(
            read(json!({"schema": null, "payload": {"a": 1}})),
            Ok(Some(Bson::Document(doc! {"a": 1})))
        );
        let err = read(json!({"a": 1})).expect_err("no envelope");
        assert!(err.contains("not a Kafka Connect JSON envelope"), "{err}");
        assert!(read(json!([1])).is_err());
        let err = read(json!({"schema": {"type": "int32"}, "payload": 1.5})).expect_err("float");
        assert!(err.contains("int32"), "{err}");
    }
}
