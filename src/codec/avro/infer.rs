//! Schema inference: a document's Avro schema and value in one walk ([`infer`]), and its
//! shape, a fingerprint of that schema built without building it ([`shape`]).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use apache_avro::types::Value;
use apache_avro::Decimal;
use bson::{Bson, Decimal128, Document};
use serde_json::{json, Value as Json};

/// The field attribute holding a field's MongoDB name where Avro's rules changed it.
pub const MONGO_NAME: &str = "mongo_name";

/// The smallest precision of inferred decimals: Decimal128's 34 digits.
pub(super) const DECIMAL128_DIGITS: usize = 34;

/// A document's inferred schema (JSON text) and its value under that schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Inferred {
    /// The schema, as the registry stores it.
    pub schema: String,
    /// The document as an Avro value.
    pub value: Value,
}

/// Infers the schema of `doc` as a record named `name` and converts it.
pub fn infer(doc: &Document, name: &str) -> Inferred {
    let (schema, value) = record(doc, name);
    Inferred {
        schema: schema.to_string(),
        value,
    }
}

pub(super) fn record(doc: &Document, name: &str) -> (Json, Value) {
    let mut taken = HashSet::new();
    let mut fields = Vec::with_capacity(doc.len());
    let mut values = Vec::with_capacity(doc.len());
    for (key, bson) in doc {
        let avro_name = unique(avro_name(key), &mut taken);
        let (schema, value) = convert(bson, &format!("{name}_{avro_name}"));
        let (schema, value) = if value == Value::Null {
            (schema, value)
        } else {
            (
                Json::Array(vec![Json::from("null"), schema]),
                Value::Union(1, Box::new(value)),
            )
        };
        let mut field = object([
            ("name", Json::from(avro_name.as_str())),
            ("type", schema),
            ("default", Json::Null),
        ]);
        if avro_name != *key {
            field[MONGO_NAME] = Json::from(key.as_str());
        }
        fields.push(field);
        values.push((avro_name, value));
    }
    (
        object([
            ("type", Json::from("record")),
            ("name", Json::from(name)),
            ("fields", Json::Array(fields)),
        ]),
        Value::Record(values),
    )
}

/// A JSON object of `pairs`, moved in: `json!` would serialize every nested schema again at
/// each level.
pub(super) fn object<const N: usize>(pairs: [(&str, Json); N]) -> Json {
    Json::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// A valid Avro name for `key`: `[A-Za-z_][A-Za-z0-9_]*`.
pub(super) fn avro_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        name.insert(0, '_');
    }
    name
}

/// Whether `key` is a valid Avro name as it is (what [`avro_name`] leaves unchanged).
pub(super) fn is_avro_name(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub(super) fn unique(name: String, taken: &mut HashSet<String>) -> String {
    let mut candidate = name.clone();
    let mut n = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{name}_{n}");
        n += 1;
    }
    candidate
}

/// The schema and value of one BSON value; `path` names the records inside it.
pub(super) fn convert(bson: &Bson, path: &str) -> (Json, Value) {
    match bson {
        Bson::Double(f) => (json!("double"), Value::Double(*f)),
        Bson::String(s) | Bson::Symbol(s) => (json!("string"), Value::String(s.clone())),
        Bson::Document(doc) => record(doc, path),
        Bson::Array(items) => array(items, path),
        Bson::Binary(bin) => (json!("bytes"), Value::Bytes(bin.bytes.clone())),
        Bson::ObjectId(oid) => (json!("string"), Value::String(oid.to_hex())),
        Bson::Boolean(b) => (json!("boolean"), Value::Boolean(*b)),
        Bson::DateTime(dt) => (
            json!({ "type": "long", "logicalType": "timestamp-millis" }),
            Value::TimestampMillis(dt.timestamp_millis()),
        ),
        Bson::Null | Bson::Undefined => (json!("null"), Value::Null),
        Bson::Int32(i) => (json!("int"), Value::Int(*i)),
        Bson::Int64(i) => (json!("long"), Value::Long(*i)),
        Bson::Decimal128(d) => match decimal(d) {
            Some((unscaled, scale)) => {
                let digits = unscaled.unsigned_abs().to_string().len();
                let precision = digits.max(scale).max(DECIMAL128_DIGITS);
                (
                    json!({ "type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale }),
                    Value::Decimal(Decimal::from(twos_complement(unscaled))),
                )
            }
            None => extended_json(bson),
        },
        _ => extended_json(bson),
    }
}

pub(super) fn extended_json(bson: &Bson) -> (Json, Value) {
    (
        json!("string"),
        Value::String(bson.clone().into_canonical_extjson().to_string()),
    )
}

pub(super) fn array(items: &[Bson], path: &str) -> (Json, Value) {
    let item_path = format!("{path}_item");
    let converted: Vec<(Json, Value)> = items.iter().map(|i| convert(i, &item_path)).collect();
    let item_schema = match converted.first() {
        None => json!("null"),
        Some((first, _)) if converted.iter().all(|(s, _)| s == first) => first.clone(),
        Some(_) => {
            let relaxed = Bson::Array(items.to_vec()).into_relaxed_extjson();
            return (json!("string"), Value::String(relaxed.to_string()));
        }
    };
    (
        object([("type", Json::from("array")), ("items", item_schema)]),
        Value::Array(converted.into_iter().map(|(_, v)| v).collect()),
    )
}

/// The shape of a document: a fingerprint of the schema [`infer`] gives it (two documents of
/// one shape have one schema), and its Avro value, in one walk that builds no schema. A stream
/// of same-shaped documents infers its schema once.
pub fn shape(doc: &Document) -> (u128, Value) {
    let mut fingerprint = Fingerprint::new(SHAPE_RECORD);
    let mut values = Vec::with_capacity(doc.len());
    // Keys that are valid Avro names already (most) are the names `record` gives them: no
    // renaming, so no name can collide.
    let renamed = !doc.keys().all(|key| is_avro_name(key));
    let mut taken = HashSet::new();
    for (key, bson) in doc {
        let (child, value) = shape_of(bson);
        fingerprint.write_str(key);
        fingerprint.write_u128(child);
        // As in `record`: every field is `["null", T]` but those that are always null.
        let value = match value {
            Value::Null => Value::Null,
            value => Value::Union(1, Box::new(value)),
        };
        let name = match renamed {
            true => unique(avro_name(key), &mut taken),
            false => key.clone(),
        };
        values.push((name, value));
    }
    (fingerprint.finish(), Value::Record(values))
}

/// The schema classes `convert` maps BSON into: values of one class share a schema.
pub(super) const SHAPE_RECORD: u8 = 1;
pub(super) const SHAPE_EMPTY_ARRAY: u8 = 2;
pub(super) const SHAPE_ARRAY: u8 = 3;
pub(super) const SHAPE_STRING: u8 = 4;
pub(super) const SHAPE_DOUBLE: u8 = 5;
pub(super) const SHAPE_BYTES: u8 = 6;
pub(super) const SHAPE_BOOLEAN: u8 = 7;
pub(super) const SHAPE_TIMESTAMP: u8 = 8;
pub(super) const SHAPE_NULL: u8 = 9;
pub(super) const SHAPE_INT: u8 = 10;
pub(super) const SHAPE_LONG: u8 = 11;
pub(super) const SHAPE_DECIMAL: u8 = 12;

/// A 128-bit fingerprint from two differently seeded hashers: a collision would put a
/// document under another document's schema, so it must never happen in practice.
pub(super) struct Fingerprint(
    std::collections::hash_map::DefaultHasher,
    std::collections::hash_map::DefaultHasher,
);

impl Fingerprint {
    pub(super) fn new(class: u8) -> Self {
        let mut one = std::collections::hash_map::DefaultHasher::new();
        let mut two = std::collections::hash_map::DefaultHasher::new();
        0x5eed_u16.hash(&mut two);
        one.write_u8(class);
        two.write_u8(class);
        Self(one, two)
    }

    pub(super) fn leaf(class: u8) -> u128 {
        Self::new(class).finish()
    }

    pub(super) fn write_str(&mut self, text: &str) {
        text.hash(&mut self.0);
        text.hash(&mut self.1);
    }

    pub(super) fn write_u128(&mut self, n: u128) {
        self.0.write_u128(n);
        self.1.write_u128(n);
    }

    pub(super) fn finish(&self) -> u128 {
        (u128::from(self.0.finish()) << 64) | u128::from(self.1.finish())
    }
}

/// The shape and value of one BSON value, as `convert` would have them.
pub(super) fn shape_of(bson: &Bson) -> (u128, Value) {
    match bson {
        Bson::Double(f) => (Fingerprint::leaf(SHAPE_DOUBLE), Value::Double(*f)),
        Bson::String(s) | Bson::Symbol(s) => {
            (Fingerprint::leaf(SHAPE_STRING), Value::String(s.clone()))
        }
        Bson::Document(doc) => shape(doc),
        Bson::Array(items) => {
            let shaped: Vec<(u128, Value)> = items.iter().map(shape_of).collect();
            match shaped.first() {
                None => (
                    Fingerprint::leaf(SHAPE_EMPTY_ARRAY),
                    Value::Array(Vec::new()),
                ),
                Some((first, _)) if shaped.iter().all(|(s, _)| s == first) => {
                    let mut fingerprint = Fingerprint::new(SHAPE_ARRAY);
                    fingerprint.write_u128(*first);
                    let values = shaped.into_iter().map(|(_, v)| v).collect();
                    (fingerprint.finish(), Value::Array(values))
                }
                Some(_) => {
                    let relaxed = Bson::Array(items.clone()).into_relaxed_extjson();
                    (
                        Fingerprint::leaf(SHAPE_STRING),
                        Value::String(relaxed.to_string()),
                    )
                }
            }
        }
        Bson::Binary(bin) => (
            Fingerprint::leaf(SHAPE_BYTES),
            Value::Bytes(bin.bytes.clone()),
        ),
        Bson::ObjectId(oid) => (Fingerprint::leaf(SHAPE_STRING), Value::String(oid.to_hex())),
        Bson::Boolean(b) => (Fingerprint::leaf(SHAPE_BOOLEAN), Value::Boolean(*b)),
        Bson::DateTime(dt) => (
            Fingerprint::leaf(SHAPE_TIMESTAMP),
            Value::TimestampMillis(dt.timestamp_millis()),
        ),
        Bson::Null | Bson::Undefined => (Fingerprint::leaf(SHAPE_NULL), Value::Null),
        Bson::Int32(i) => (Fingerprint::leaf(SHAPE_INT), Value::Int(*i)),
        Bson::Int64(i) => (Fingerprint::leaf(SHAPE_LONG), Value::Long(*i)),
        Bson::Decimal128(d) => match decimal(d) {
            Some((unscaled, scale)) => {
                let mut fingerprint = Fingerprint::new(SHAPE_DECIMAL);
                let digits = unscaled.unsigned_abs().to_string().len();
                fingerprint
                    .0
                    .write_usize(digits.max(scale).max(DECIMAL128_DIGITS));
                fingerprint.0.write_usize(scale);
                fingerprint
                    .1
                    .write_usize(digits.max(scale).max(DECIMAL128_DIGITS));
                fingerprint.1.write_usize(scale);
                (
                    fingerprint.finish(),
                    Value::Decimal(Decimal::from(twos_complement(unscaled))),
                )
            }
            None => extended_json_shape(bson),
        },
        _ => extended_json_shape(bson),
    }
}

pub(super) fn extended_json_shape(bson: &Bson) -> (u128, Value) {
    let (_, value) = extended_json(bson);
    (Fingerprint::leaf(SHAPE_STRING), value)
}

/// A finite decimal128 as its unscaled value and scale (≥ 0), when an `i128` holds it.
pub(crate) fn decimal(d: &Decimal128) -> Option<(i128, usize)> {
    let (mut unscaled, scale) = decimal_parts(d)?;
    if scale < 0 {
        unscaled = unscaled.checked_mul(10i128.checked_pow(u32::try_from(-scale).ok()?)?)?;
    }
    Some((unscaled, usize::try_from(scale.max(0)).ok()?))
}

/// A finite decimal128 as its coefficient and scale (negative for a positive exponent:
/// `1E+3` is 1 and -3), exactly as it is held; `None` for NaN and the infinities.
pub(crate) fn decimal_parts(d: &Decimal128) -> Option<(i128, i64)> {
    let text = d.to_string();
    let (mantissa, exponent) = match text.split_once(['E', 'e']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (text.as_str(), 0),
    };
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None; // NaN, Infinity
    }
    let unscaled: i128 = digits.parse().ok()?;
    let scale = i64::try_from(fraction.len()).ok()? - exponent;
    Some((if negative { -unscaled } else { unscaled }, scale))
}

/// The shortest big-endian two's complement bytes of `n`.
pub(crate) fn twos_complement(n: i128) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (byte, next) = (bytes[start], bytes[start + 1]);
        let redundant = (byte == 0 && next & 0x80 == 0) || (byte == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    bytes[start..].to_vec()
}
