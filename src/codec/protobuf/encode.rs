//! A BSON document as a dynamic message of a given descriptor (inferred or configured):
//! each field of the message takes the document's field of the same name (its JSON name
//! when that is not the default one); fields the message lacks are left out, and null or
//! missing fields are left unset.

use std::collections::HashMap;

use bson::{Bson, Document};
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};

use super::fields::{document_name, is_wrapper, DECIMAL, TIMESTAMP};
use crate::codec::avro::{decimal_parts, twos_complement};

/// `doc` as a message of `desc`; `path` names the document in errors (`""` at the top).
pub fn to_message(
    doc: &Document,
    desc: &MessageDescriptor,
    path: &str,
) -> Result<DynamicMessage, String> {
    let mut message = DynamicMessage::new(desc.clone());
    for field in desc.fields() {
        let name = document_name(&field);
        let at = match path {
            "" => name.clone(),
            _ => format!("{path}.{name}"),
        };
        let Some(value) = doc.get(&name) else {
            continue;
        };
        if let Some(value) = field_value(value, &field, &at)? {
            message.set_field(&field, value);
        }
    }
    Ok(message)
}

fn field_value(value: &Bson, field: &FieldDescriptor, at: &str) -> Result<Option<Value>, String> {
    if matches!(value, Bson::Null | Bson::Undefined) {
        return Ok(None);
    }
    if field.is_map() {
        let Bson::Document(doc) = value else {
            return Err(format!(
                "`{at}` is {}, the schema has a map",
                kind_name(value)
            ));
        };
        let Kind::Message(entry) = field.kind() else {
            return Err(format!("`{at}`: a map without an entry type"));
        };
        let (key_field, value_field) = (entry.map_entry_key_field(), entry.map_entry_value_field());
        let mut map = HashMap::new();
        for (key, item) in doc {
            let item_at = format!("{at}.{key}");
            let key = map_key(key, &key_field.kind())
                .ok_or_else(|| format!("`{item_at}`: `{key}` is not a key of the map's type"))?;
            if let Some(item) = single(item, &value_field.kind(), &item_at)? {
                map.insert(key, item);
            }
        }
        return Ok(Some(Value::Map(map)));
    }
    if field.is_list() {
        let Bson::Array(items) = value else {
            return Err(format!(
                "`{at}` is {}, the schema has a list",
                kind_name(value)
            ));
        };
        let mut list = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_at = format!("{at}[{i}]");
            match single(item, &field.kind(), &item_at)? {
                Some(item) => list.push(item),
                None => return Err(format!("`{item_at}` is null, a list item cannot be")),
            }
        }
        return Ok(Some(Value::List(list)));
    }
    single(value, &field.kind(), at)
}

fn map_key(key: &str, kind: &Kind) -> Option<MapKey> {
    Some(match kind {
        Kind::String => MapKey::String(key.to_owned()),
        Kind::Bool => MapKey::Bool(key.parse().ok()?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(key.parse().ok()?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(key.parse().ok()?),
        Kind::Uint32 | Kind::Fixed32 => MapKey::U32(key.parse().ok()?),
        Kind::Uint64 | Kind::Fixed64 => MapKey::U64(key.parse().ok()?),
        _ => return None,
    })
}

/// One value of type `kind` (not a list or map); `None` for null.
fn single(value: &Bson, kind: &Kind, at: &str) -> Result<Option<Value>, String> {
    let integer = match value {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        _ => None,
    };
    let mismatch = || {
        format!(
            "`{at}` is {}, the schema has {}",
            kind_name(value),
            kind_of(kind)
        )
    };
    let out_of_range = || format!("`{at}` is out of the range of {}", kind_of(kind));
    Ok(Some(match (kind, value) {
        (_, Bson::Null | Bson::Undefined) => return Ok(None),
        (Kind::Double, Bson::Double(f)) => Value::F64(*f),
        (Kind::Double, _) if integer.is_some() => Value::F64(integer.unwrap_or_default() as f64),
        (Kind::Float, Bson::Double(f)) => Value::F32(*f as f32),
        (Kind::Float, _) if integer.is_some() => Value::F32(integer.unwrap_or_default() as f32),
        (Kind::Int32 | Kind::Sint32 | Kind::Sfixed32, _) if integer.is_some() => {
            Value::I32(i32::try_from(integer.unwrap_or_default()).map_err(|_| out_of_range())?)
        }
        (Kind::Int64 | Kind::Sint64 | Kind::Sfixed64, _) if integer.is_some() => {
            Value::I64(integer.unwrap_or_default())
        }
        (Kind::Uint32 | Kind::Fixed32, _) if integer.is_some() => {
            Value::U32(u32::try_from(integer.unwrap_or_default()).map_err(|_| out_of_range())?)
        }
        (Kind::Uint64 | Kind::Fixed64, _) if integer.is_some() => {
            Value::U64(u64::try_from(integer.unwrap_or_default()).map_err(|_| out_of_range())?)
        }
        (Kind::Bool, Bson::Boolean(b)) => Value::Bool(*b),
        (Kind::Bytes, Bson::Binary(b)) => Value::Bytes(b.bytes.clone().into()),
        (Kind::String, other) => Value::String(text(other).ok_or_else(mismatch)?),
        (Kind::Enum(e), Bson::String(name)) => Value::EnumNumber(
            e.get_value_by_name(name)
                .ok_or_else(|| format!("`{at}`: `{name}` is not a value of {}", e.full_name()))?
                .number(),
        ),
        (Kind::Enum(_), _) if integer.is_some() => Value::EnumNumber(
            i32::try_from(integer.unwrap_or_default()).map_err(|_| out_of_range())?,
        ),
        (Kind::Message(m), Bson::DateTime(at_time)) if m.full_name() == TIMESTAMP => {
            let millis = at_time.timestamp_millis();
            let mut ts = DynamicMessage::new(m.clone());
            ts.set_field_by_name("seconds", Value::I64(millis.div_euclid(1000)));
            // Below a second: at most 999,000,000 ns, which fits.
            ts.set_field_by_name(
                "nanos",
                Value::I32((millis.rem_euclid(1000) * 1_000_000) as i32),
            );
            Value::Message(ts)
        }
        (Kind::Message(m), Bson::Decimal128(_) | Bson::Int32(_) | Bson::Int64(_))
            if m.full_name() == DECIMAL =>
        {
            let (unscaled, scale) = match (value, integer) {
                (_, Some(i)) => (i128::from(i), 0),
                (Bson::Decimal128(d), _) => decimal_parts(d)
                    .ok_or_else(|| format!("`{at}` is {d}, which {DECIMAL} cannot hold"))?,
                _ => return Err(mismatch()),
            };
            let digits = unscaled
                .unsigned_abs()
                .checked_ilog10()
                .map_or(1, |d| d + 1);
            let mut message = DynamicMessage::new(m.clone());
            message.set_field_by_name("value", Value::Bytes(twos_complement(unscaled).into()));
            message.set_field_by_name("precision", Value::U32(digits));
            message.set_field_by_name(
                "scale",
                Value::I32(i32::try_from(scale).map_err(|_| out_of_range())?),
            );
            Value::Message(message)
        }
        (Kind::Message(m), other) if is_wrapper(m) => {
            let inner = m
                .get_field_by_name("value")
                .ok_or_else(|| format!("`{at}`: {} has no `value`", m.full_name()))?;
            let mut wrapper = DynamicMessage::new(m.clone());
            if let Some(v) = single(other, &inner.kind(), at)? {
                wrapper.set_field(&inner, v);
            }
            Value::Message(wrapper)
        }
        (Kind::Message(m), Bson::Document(doc)) => Value::Message(to_message(doc, m, at)?),
        _ => return Err(mismatch()),
    }))
}

/// The text a `string` field holds for `value`: strings and symbols as they are, ObjectIds
/// as 24 hex digits, decimals as their text, arrays as relaxed extended JSON, the types
/// without a proto twin as canonical extended JSON; `None` for numbers, booleans, binaries,
/// dates and documents, which have twins of their own.
fn text(value: &Bson) -> Option<String> {
    Some(match value {
        Bson::String(s) | Bson::Symbol(s) => s.clone(),
        Bson::ObjectId(oid) => oid.to_hex(),
        Bson::Decimal128(d) => d.to_string(),
        Bson::Array(_) => value.clone().into_relaxed_extjson().to_string(),
        Bson::RegularExpression(_)
        | Bson::JavaScriptCode(_)
        | Bson::JavaScriptCodeWithScope(_)
        | Bson::Timestamp(_)
        | Bson::MinKey
        | Bson::MaxKey
        | Bson::DbPointer(_) => value.clone().into_canonical_extjson().to_string(),
        _ => return None,
    })
}

fn kind_name(value: &Bson) -> &'static str {
    match value {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Array(_) => "array",
        Bson::Document(_) => "document",
        Bson::Boolean(_) => "boolean",
        Bson::Null => "null",
        Bson::Int32(_) => "int32",
        Bson::Int64(_) => "int64",
        Bson::Binary(_) => "binary",
        Bson::DateTime(_) => "date",
        Bson::ObjectId(_) => "objectId",
        Bson::Decimal128(_) => "decimal128",
        _ => "a BSON type without a twin",
    }
}

fn kind_of(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => m.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}
