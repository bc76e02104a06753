//! A Protobuf message → BSON, by its descriptor: fields in the schema's order, each under
//! its name (or its JSON name, when that was set to something else than the default one).
//! Fields that track presence and are unset are null; unset proto3 scalars take their
//! default, as in every Protobuf reader.

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Decimal128, Document};
use prost_reflect::{DynamicMessage, Kind, MapKey, ReflectMessage, Value};

use super::fields::{document_name, is_wrapper, DECIMAL, TIMESTAMP};
use crate::codec::avro::decimal128;

/// `message` as a document.
pub fn to_document(message: &DynamicMessage) -> Document {
    let mut doc = Document::new();
    for field in message.descriptor().fields() {
        let set = message.has_field(&field);
        let in_oneof = field
            .containing_oneof()
            .is_some_and(|oneof| !oneof.is_synthetic());
        let value = if field.is_list() || field.is_map() || set || !field.supports_presence() {
            to_bson(&message.get_field(&field), &field.kind())
        } else if in_oneof {
            // The alternatives of a oneof not taken are left out.
            continue;
        } else {
            Bson::Null
        };
        doc.insert(document_name(&field), value);
    }
    doc
}

fn to_bson(value: &Value, kind: &Kind) -> Bson {
    match value {
        Value::Bool(b) => Bson::Boolean(*b),
        Value::I32(i) => Bson::Int32(*i),
        Value::I64(i) => Bson::Int64(*i),
        Value::U32(u) => Bson::Int64(i64::from(*u)),
        Value::U64(u) => match i64::try_from(*u) {
            Ok(i) => Bson::Int64(i),
            // Above int64: a decimal, exact.
            Err(_) => u
                .to_string()
                .parse::<Decimal128>()
                .map(Bson::Decimal128)
                .unwrap_or(Bson::Double(*u as f64)),
        },
        Value::F32(f) => Bson::Double(f64::from(*f)),
        Value::F64(f) => Bson::Double(*f),
        Value::String(s) => Bson::String(s.clone()),
        Value::Bytes(b) => Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes: b.to_vec(),
        }),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => match e.get_value(*n) {
                Some(v) => Bson::String(v.name().to_owned()),
                None => Bson::Int32(*n),
            },
            _ => Bson::Int32(*n),
        },
        Value::Message(m) => message(m),
        Value::List(items) => Bson::Array(items.iter().map(|i| to_bson(i, kind)).collect()),
        Value::Map(entries) => {
            let value_kind = match kind {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other.clone(),
            };
            let mut keys: Vec<(String, &Value)> =
                entries.iter().map(|(k, v)| (map_key(k), v)).collect();
            // A map has no order: sorted, so a record always gives the same document.
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            Bson::Document(
                keys.into_iter()
                    .map(|(k, v)| (k, to_bson(v, &value_kind)))
                    .collect(),
            )
        }
    }
}

/// A nested message: dates for timestamps, the value of wrappers, else a document.
fn message(m: &DynamicMessage) -> Bson {
    let desc = m.descriptor();
    if desc.full_name() == TIMESTAMP {
        let seconds = m
            .get_field_by_name("seconds")
            .and_then(|v| v.as_i64())
            .unwrap_or_default();
        let nanos = m
            .get_field_by_name("nanos")
            .and_then(|v| v.as_i32())
            .unwrap_or_default();
        let millis = seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(nanos).div_euclid(1_000_000));
        return Bson::DateTime(DateTime::from_millis(millis));
    }
    if desc.full_name() == DECIMAL {
        let bytes = m
            .get_field_by_name("value")
            .and_then(|v| v.as_bytes().cloned())
            .unwrap_or_default();
        let scale = m
            .get_field_by_name("scale")
            .and_then(|v| v.as_i32())
            .unwrap_or_default();
        // Wider than a decimal128 holds: the message's fields, as they are.
        if let Ok(decimal) = decimal128(&bytes, i64::from(scale)) {
            return Bson::Decimal128(decimal);
        }
    }
    if is_wrapper(&desc) {
        if let Some(field) = desc.fields().next() {
            return to_bson(&m.get_field(&field), &field.kind());
        }
    }
    Bson::Document(to_document(m))
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(i) => i.to_string(),
        MapKey::I64(i) => i.to_string(),
        MapKey::U32(u) => u.to_string(),
        MapKey::U64(u) => u.to_string(),
        MapKey::String(s) => s.clone(),
    }
}
