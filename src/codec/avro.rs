//! BSON documents ⇄ Avro, with the schema inferred from each document (like the MongoDB Kafka
//! Connector's `output.schema.infer.value`), and the codecs that put Avro behind a schema
//! registry's wire format.
//!
//! The mapping (the table in `docs/configuration.md` is written from it):
//!
//! | BSON | Avro schema | back to BSON |
//! |---|---|---|
//! | double | `double` | double |
//! | string, symbol | `string` | string |
//! | document | `record` (every field `["null", T]`, default `null`) | document |
//! | array, all items of one schema | `array` of it (`null` items when empty) | array |
//! | array of mixed items | `string`: its relaxed extended JSON | string |
//! | binary | `bytes` | binary (generic subtype) |
//! | ObjectId | `string`, 24 hex digits | string |
//! | boolean | `boolean` | boolean |
//! | date | `long`, `timestamp-millis` | date |
//! | null, undefined | `null` | null |
//! | int32 | `int` | int32 |
//! | int64 | `long` | int64 |
//! | decimal128, finite | `bytes`, `decimal` (scale from the value's exponent) | decimal128 |
//! | decimal128 NaN or infinite; regex, JavaScript, timestamp, min/max key, DBPointer | `string`: canonical extended JSON | string |
//!
//! Field names Avro forbids (`a.b`, `$x`, `1st`) become valid names (`a_b`, `_x`, `_1st`,
//! made unique with a suffix) and keep the original in the field's `mongo_name` attribute,
//! which the reader restores. Record names follow the path (`Document_address_geo`).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use apache_avro::schema::{DecimalSchema, Name, RecordSchema, ResolvedSchema, UnionSchema};
use apache_avro::types::Value;
use apache_avro::{Decimal, Schema};
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Decimal128, Document};
use serde_json::{json, Value as Json};

use crate::codec::schema_registry::{
    self, AwaitsRegistry, Lookup, ParsedSchemas, Reachability, RegistryClient, RegistryError,
};
use crate::config::SchemaRegistryConfig;

/// The field attribute holding a field's MongoDB name where Avro's rules changed it.
pub const MONGO_NAME: &str = "mongo_name";

/// The smallest precision of inferred decimals: Decimal128's 34 digits.
const DECIMAL128_DIGITS: usize = 34;

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

fn record(doc: &Document, name: &str) -> (Json, Value) {
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
fn object<const N: usize>(pairs: [(&str, Json); N]) -> Json {
    Json::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// A valid Avro name for `key`: `[A-Za-z_][A-Za-z0-9_]*`.
fn avro_name(key: &str) -> String {
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
fn is_avro_name(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn unique(name: String, taken: &mut HashSet<String>) -> String {
    let mut candidate = name.clone();
    let mut n = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{name}_{n}");
        n += 1;
    }
    candidate
}

/// The schema and value of one BSON value; `path` names the records inside it.
fn convert(bson: &Bson, path: &str) -> (Json, Value) {
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

fn extended_json(bson: &Bson) -> (Json, Value) {
    (
        json!("string"),
        Value::String(bson.clone().into_canonical_extjson().to_string()),
    )
}

fn array(items: &[Bson], path: &str) -> (Json, Value) {
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
const SHAPE_RECORD: u8 = 1;
const SHAPE_EMPTY_ARRAY: u8 = 2;
const SHAPE_ARRAY: u8 = 3;
const SHAPE_STRING: u8 = 4;
const SHAPE_DOUBLE: u8 = 5;
const SHAPE_BYTES: u8 = 6;
const SHAPE_BOOLEAN: u8 = 7;
const SHAPE_TIMESTAMP: u8 = 8;
const SHAPE_NULL: u8 = 9;
const SHAPE_INT: u8 = 10;
const SHAPE_LONG: u8 = 11;
const SHAPE_DECIMAL: u8 = 12;

/// A 128-bit fingerprint from two differently seeded hashers: a collision would put a
/// document under another document's schema, so it must never happen in practice.
struct Fingerprint(
    std::collections::hash_map::DefaultHasher,
    std::collections::hash_map::DefaultHasher,
);

impl Fingerprint {
    fn new(class: u8) -> Self {
        let mut one = std::collections::hash_map::DefaultHasher::new();
        let mut two = std::collections::hash_map::DefaultHasher::new();
        0x5eed_u16.hash(&mut two);
        one.write_u8(class);
        two.write_u8(class);
        Self(one, two)
    }

    fn leaf(class: u8) -> u128 {
        Self::new(class).finish()
    }

    fn write_str(&mut self, text: &str) {
        text.hash(&mut self.0);
        text.hash(&mut self.1);
    }

    fn write_u128(&mut self, n: u128) {
        self.0.write_u128(n);
        self.1.write_u128(n);
    }

    fn finish(&self) -> u128 {
        (u128::from(self.0.finish()) << 64) | u128::from(self.1.finish())
    }
}

/// The shape and value of one BSON value, as `convert` would have them.
fn shape_of(bson: &Bson) -> (u128, Value) {
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

fn extended_json_shape(bson: &Bson) -> (u128, Value) {
    let (_, value) = extended_json(bson);
    (Fingerprint::leaf(SHAPE_STRING), value)
}

/// `bson` as a value of `schema`, a schema given in the configuration; `at` names the value
/// in errors. Fields are matched by name (or their `mongo_name`); fields the schema lacks are
/// left out, fields the document lacks take the schema's default; decimals are rescaled to
/// the schema's scale (never rounded).
fn conform(bson: &Bson, schema: &Schema, names: &Names<'_>, at: &str) -> Result<Value, String> {
    let kind = || apache_avro::schema::SchemaKind::from(schema);
    let refused = || {
        format!(
            "`{at}` is {} and cannot be written as Avro `{:?}`",
            type_name(bson),
            kind()
        )
    };
    Ok(match (schema, bson) {
        (Schema::Ref { name }, _) => {
            let named = names.get(name).ok_or_else(|| {
                format!(
                    "`{at}`: the schema names `{}`, which it does not define",
                    name.name
                )
            })?;
            return conform(bson, named, names, at);
        }
        (Schema::Union(union), _) => {
            let null = union.variants().iter().position(|v| *v == Schema::Null);
            if let (Some(i), Bson::Null | Bson::Undefined) = (null, bson) {
                return Ok(Value::Union(index(i)?, Box::new(Value::Null)));
            }
            let mut why = Vec::new();
            for (i, variant) in union.variants().iter().enumerate() {
                if *variant == Schema::Null {
                    continue;
                }
                match conform(bson, variant, names, at) {
                    Ok(value) => return Ok(Value::Union(index(i)?, Box::new(value))),
                    Err(e) => why.push(e),
                }
            }
            return Err(why.pop().unwrap_or_else(refused));
        }
        (Schema::Null, Bson::Null | Bson::Undefined) => Value::Null,
        (Schema::Boolean, Bson::Boolean(b)) => Value::Boolean(*b),
        (Schema::Int, Bson::Int32(i)) => Value::Int(*i),
        (Schema::Int, Bson::Int64(i)) => Value::Int(
            i32::try_from(*i).map_err(|_| format!("`{at}` = {i} does not fit an Avro `int`"))?,
        ),
        (Schema::Long, Bson::Int32(i)) => Value::Long(i64::from(*i)),
        (Schema::Long, Bson::Int64(i)) => Value::Long(*i),
        (Schema::Float, Bson::Double(f)) => Value::Float(*f as f32),
        (Schema::Double, Bson::Double(f)) => Value::Double(*f),
        (Schema::Double, Bson::Int32(i)) => Value::Double(f64::from(*i)),
        (Schema::Double, Bson::Int64(i)) => Value::Double(*i as f64),
        (Schema::Bytes, Bson::Binary(bin)) => Value::Bytes(bin.bytes.clone()),
        (Schema::String, Bson::String(s) | Bson::Symbol(s)) => Value::String(s.clone()),
        (Schema::String, Bson::ObjectId(oid)) => Value::String(oid.to_hex()),
        (Schema::String, Bson::Decimal128(d)) => Value::String(d.to_string()),
        (Schema::String, Bson::Document(_) | Bson::Array(_)) => {
            Value::String(bson.clone().into_relaxed_extjson().to_string())
        }
        // Types Avro has no twin for are their extended JSON, as when inferred.
        (
            Schema::String,
            Bson::RegularExpression(_)
            | Bson::JavaScriptCode(_)
            | Bson::JavaScriptCodeWithScope(_)
            | Bson::Timestamp(_)
            | Bson::MinKey
            | Bson::MaxKey
            | Bson::DbPointer(_),
        ) => extended_json(bson).1,
        (Schema::Enum(e), Bson::String(s)) => match e.symbols.iter().position(|x| x == s) {
            Some(i) => Value::Enum(index(i)?, s.clone()),
            None => {
                return Err(format!(
                    "`{at}` = `{s}` is not a symbol of the schema's enum"
                ))
            }
        },
        (Schema::Uuid, Bson::Binary(bin)) if bin.subtype == BinarySubtype::Uuid => Value::Uuid(
            apache_avro::Uuid::from_slice(&bin.bytes).map_err(|e| format!("`{at}`: {e}"))?,
        ),
        (Schema::TimestampMillis, Bson::DateTime(dt)) => {
            Value::TimestampMillis(dt.timestamp_millis())
        }
        (Schema::LocalTimestampMillis, Bson::DateTime(dt)) => {
            Value::LocalTimestampMillis(dt.timestamp_millis())
        }
        (Schema::TimestampMicros, Bson::DateTime(dt)) => {
            Value::TimestampMicros(dt.timestamp_millis().saturating_mul(1000))
        }
        (Schema::LocalTimestampMicros, Bson::DateTime(dt)) => {
            Value::LocalTimestampMicros(dt.timestamp_millis().saturating_mul(1000))
        }
        (Schema::Date, Bson::DateTime(dt)) => Value::Date(
            i32::try_from(dt.timestamp_millis().div_euclid(86_400_000))
                .map_err(|_| format!("`{at}` is out of an Avro `date`'s range"))?,
        ),
        (Schema::Decimal(d), Bson::Decimal128(_) | Bson::Int32(_) | Bson::Int64(_)) => {
            if *d.inner != Schema::Bytes {
                return Err(format!(
                    "`{at}`: decimals on `fixed` are not supported; use `bytes`"
                ));
            }
            let (unscaled, scale) = match bson {
                Bson::Decimal128(value) => decimal(value)
                    .ok_or_else(|| format!("`{at}` = {value} is not a finite decimal"))?,
                Bson::Int32(i) => (i128::from(*i), 0),
                Bson::Int64(i) => (i128::from(*i), 0),
                _ => return Err(refused()),
            };
            let rescaled = d
                .scale
                .checked_sub(scale)
                .and_then(|up| u32::try_from(up).ok())
                .and_then(|up| 10i128.checked_pow(up))
                .and_then(|factor| unscaled.checked_mul(factor))
                .ok_or_else(|| {
                    format!(
                        "`{at}` has scale {scale}, more than the schema's {} (it would be rounded)",
                        d.scale
                    )
                })?;
            if rescaled.unsigned_abs().to_string().len() > d.precision {
                return Err(format!(
                    "`{at}` has more digits than the schema's precision {}",
                    d.precision
                ));
            }
            Value::Decimal(Decimal::from(twos_complement(rescaled)))
        }
        (Schema::Array(array), Bson::Array(items)) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| conform(item, &array.items, names, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        (Schema::Map(map), Bson::Document(doc)) => Value::Map(
            doc.iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        conform(v, &map.types, names, &format!("{at}.{k}"))?,
                    ))
                })
                .collect::<Result<_, String>>()?,
        ),
        (Schema::Record(record), Bson::Document(doc)) => conform_record(doc, record, names, at)?,
        _ => return Err(refused()),
    })
}

/// `doc` as a value of the record schema `record` (see [`conform`]).
fn conform_record(
    doc: &Document,
    record: &RecordSchema,
    names: &Names<'_>,
    at: &str,
) -> Result<Value, String> {
    let mut fields = Vec::with_capacity(record.fields.len());
    for field in &record.fields {
        let key = field
            .custom_attributes
            .get(MONGO_NAME)
            .and_then(Json::as_str)
            .unwrap_or(&field.name);
        let path = if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        };
        let value = match (doc.get(key), &field.default) {
            (Some(value), _) => conform(value, &field.schema, names, &path)?,
            (None, Some(default)) => Value::from(default.clone())
                .resolve_schemata(&field.schema, vec![names.root])
                .map_err(|e| format!("`{path}`: the schema's default does not fit it: {e}"))?,
            (None, None) => {
                return Err(format!(
                    "`{path}` is missing, and the schema gives it no default"
                ))
            }
        };
        fields.push((field.name.clone(), value));
    }
    Ok(Value::Record(fields))
}

/// A schema given in the configuration, and its named types.
pub(crate) struct Names<'s> {
    root: &'s Schema,
    named: HashMap<Name, &'s Schema>,
}

impl<'s> Names<'s> {
    fn of(root: &'s Schema) -> Result<Self, String> {
        let named = ResolvedSchema::try_from(root)
            .map_err(|e| format!("the configured schema: {e}"))?
            .get_names()
            .clone();
        Ok(Self { root, named })
    }

    fn get(&self, name: &Name) -> Option<&'s Schema> {
        self.named
            .get(name)
            .or_else(|| {
                self.named
                    .iter()
                    .find(|(n, _)| n.name == name.name)
                    .map(|(_, s)| s)
            })
            .copied()
    }
}

fn index(i: usize) -> Result<u32, String> {
    u32::try_from(i).map_err(|_| "a union with more than 2^32 branches".to_owned())
}

fn type_name(bson: &Bson) -> String {
    format!("{:?}", bson.element_type()).to_lowercase()
}

/// A finite decimal128 as its unscaled value and scale (≥ 0), when an `i128` holds it.
fn decimal(d: &Decimal128) -> Option<(i128, usize)> {
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
    let mut unscaled: i128 = digits.parse().ok()?;
    let mut scale = i64::try_from(fraction.len()).ok()? - exponent;
    if scale < 0 {
        unscaled = unscaled.checked_mul(10i128.checked_pow(u32::try_from(-scale).ok()?)?)?;
        scale = 0;
    }
    Some((
        if negative { -unscaled } else { unscaled },
        usize::try_from(scale).ok()?,
    ))
}

/// The shortest big-endian two's complement bytes of `n`.
fn twos_complement(n: i128) -> Vec<u8> {
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

/// An Avro value read with `schema` as a BSON value (see the module's table).
pub fn to_bson(value: Value, schema: &Schema) -> Result<Bson, String> {
    Ok(match (value, schema) {
        (Value::Null, _) => Bson::Null,
        (Value::Boolean(b), _) => Bson::Boolean(b),
        (Value::Int(i), _) | (Value::TimeMillis(i), _) => Bson::Int32(i),
        (Value::Long(i), _) | (Value::TimeMicros(i), _) => Bson::Int64(i),
        (Value::Float(f), _) => Bson::Double(f64::from(f)),
        (Value::Double(f), _) => Bson::Double(f),
        (Value::Bytes(bytes), _) | (Value::Fixed(_, bytes), _) => Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes,
        }),
        (Value::String(s), _) | (Value::Enum(_, s), _) => Bson::String(s),
        (Value::Uuid(uuid), _) => Bson::Binary(Binary {
            subtype: BinarySubtype::Uuid,
            bytes: uuid.as_bytes().to_vec(),
        }),
        (Value::Date(days), _) => {
            Bson::DateTime(DateTime::from_millis(i64::from(days) * 86_400_000))
        }
        (Value::TimestampMillis(ms), _) | (Value::LocalTimestampMillis(ms), _) => {
            Bson::DateTime(DateTime::from_millis(ms))
        }
        (Value::TimestampMicros(us), _) | (Value::LocalTimestampMicros(us), _) => {
            Bson::DateTime(DateTime::from_millis(us.div_euclid(1000)))
        }
        (Value::TimestampNanos(ns), _) | (Value::LocalTimestampNanos(ns), _) => {
            Bson::DateTime(DateTime::from_millis(ns.div_euclid(1_000_000)))
        }
        (Value::Decimal(d), Schema::Decimal(DecimalSchema { scale, .. })) => {
            let bytes = Vec::<u8>::try_from(&d).map_err(|e| format!("a decimal: {e}"))?;
            Bson::Decimal128(decimal128(&bytes, *scale)?)
        }
        (Value::BigDecimal(d), _) => Bson::Decimal128(
            d.to_string()
                .parse::<Decimal128>()
                .map_err(|e| format!("decimal {d} does not fit a decimal128: {e}"))?,
        ),
        (Value::Union(index, inner), Schema::Union(union)) => {
            let variant = union_variant(union, index)?;
            to_bson(*inner, variant)?
        }
        (Value::Union(_, inner), _) => to_bson(*inner, &Schema::Null)?,
        (Value::Array(items), Schema::Array(array)) => Bson::Array(
            items
                .into_iter()
                .map(|i| to_bson(i, &array.items))
                .collect::<Result<_, _>>()?,
        ),
        (Value::Map(entries), Schema::Map(map)) => {
            let mut entries: Vec<_> = entries.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut doc = Document::new();
            for (key, value) in entries {
                doc.insert(key, to_bson(value, &map.types)?);
            }
            Bson::Document(doc)
        }
        (Value::Record(fields), Schema::Record(record)) => {
            Bson::Document(document(fields, record)?)
        }
        (Value::Duration(d), _) => Bson::Document(bson::doc! {
            "months": i64::from(u32::from(d.months())),
            "days": i64::from(u32::from(d.days())),
            "millis": i64::from(u32::from(d.millis())),
        }),
        // A named type's later uses are references: read them without names to restore.
        (Value::Array(items), _) => Bson::Array(
            items
                .into_iter()
                .map(|i| to_bson(i, &Schema::Null))
                .collect::<Result<_, _>>()?,
        ),
        (Value::Record(fields), _) => {
            let mut doc = Document::new();
            for (name, value) in fields {
                doc.insert(name, to_bson(value, &Schema::Null)?);
            }
            Bson::Document(doc)
        }
        (Value::Map(entries), _) => {
            let mut doc = Document::new();
            for (key, value) in entries {
                doc.insert(key, to_bson(value, &Schema::Null)?);
            }
            Bson::Document(doc)
        }
        (Value::Decimal(_), _) => return Err("a decimal without its decimal schema".into()),
    })
}

fn union_variant(union: &UnionSchema, index: u32) -> Result<&Schema, String> {
    usize::try_from(index)
        .ok()
        .and_then(|i| union.variants().get(i))
        .ok_or_else(|| format!("union branch {index} is not in the schema"))
}

fn document(fields: Vec<(String, Value)>, record: &RecordSchema) -> Result<Document, String> {
    let mut doc = Document::new();
    for (name, value) in fields {
        let field = record.lookup.get(&name).and_then(|i| record.fields.get(*i));
        let key = field
            .and_then(|f| f.custom_attributes.get(MONGO_NAME))
            .and_then(Json::as_str)
            .unwrap_or(&name)
            .to_owned();
        let schema = field.map_or(&Schema::Null, |f| &f.schema);
        doc.insert(key, to_bson(value, schema)?);
    }
    Ok(doc)
}

/// A decimal128 from an Avro decimal's two's complement bytes and scale.
fn decimal128(bytes: &[u8], scale: usize) -> Result<Decimal128, String> {
    if bytes.len() > 16 {
        return Err(format!(
            "a decimal of {} bytes does not fit a decimal128",
            bytes.len()
        ));
    }
    let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        0xff
    } else {
        0
    };
    let mut full = [fill; 16];
    full[16 - bytes.len()..].copy_from_slice(bytes);
    let unscaled = i128::from_be_bytes(full);
    format!("{unscaled}E-{scale}")
        .parse::<Decimal128>()
        .map_err(|e| format!("decimal {unscaled}E-{scale} does not fit a decimal128: {e}"))
}

/// Why a document could not be written or read as Avro.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// The registry did not answer, refused, or lacks the schema.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The bytes or the schema are not what Avro reads.
    #[error("{0}")]
    Invalid(String),
}

impl AwaitsRegistry for AvroError {
    fn pending(&self) -> Option<&Lookup> {
        match self {
            Self::Registry(e) => e.pending(),
            Self::Invalid(_) => None,
        }
    }

    fn failed(self, error: RegistryError) -> Self {
        Self::Registry(error)
    }
}

/// Documents → Avro in the registry wire format, registering each new schema under its
/// subject (`<topic>-key` / `<topic>-value`): the schema given in the configuration, or the one
/// inferred from the document, cached by the document's shape, so a stream of same-shaped
/// documents infers, parses and registers one schema.
#[derive(Debug)]
pub struct AvroWriter {
    registry: RegistryClient,
    given: Option<Given>,
    shapes: Mutex<HashMap<u128, Arc<InferredSchema>>>,
    ids: Mutex<HashMap<u128, HashMap<String, u32>>>,
}

/// A schema given in the configuration.
#[derive(Debug)]
struct Given {
    text: String,
    schema: Schema,
}

/// An inferred schema: its text, as registered, and parsed.
#[derive(Debug)]
struct InferredSchema {
    text: String,
    schema: Schema,
}

/// The cache key of the given schema's id (inferred ones are keyed by shape and name).
const GIVEN: u128 = 0;

/// The most inferred schemas (and their ids) a writer keeps: change events whose
/// `updatedFields` name ever new fields are ever new shapes, so the caches start over when
/// full rather than grow without end (a schema dropped is inferred and its id asked again).
const MAX_CACHED_SHAPES: usize = 4096;

impl AvroWriter {
    /// A writer registering in the registry `config` names.
    pub fn new(config: &SchemaRegistryConfig) -> Result<Self, String> {
        Ok(Self {
            registry: RegistryClient::new(config)?,
            given: None,
            shapes: Mutex::default(),
            ids: Mutex::default(),
        })
    }

    /// This writer, writing every document in the schema `text` (a record) instead of
    /// inferring one.
    pub fn with_schema(mut self, text: &str) -> Result<Self, String> {
        let schema =
            Schema::parse_str(text).map_err(|e| format!("is not a valid Avro schema: {e}"))?;
        if !matches!(schema, Schema::Record(_)) {
            return Err("is not an Avro record schema".into());
        }
        // Registered as written: the canonical form would drop logical types and `mongo_name`.
        self.given = Some(Given {
            text: text.trim().to_owned(),
            schema,
        });
        Ok(self)
    }

    /// This writer, telling `hook` whether the registry answers.
    pub fn reporting_to(mut self, hook: Option<Reachability>) -> Self {
        self.registry = self.registry.reporting_to(hook);
        self
    }

    /// `doc` as a record named `name`, its schema registered under `subject`.
    pub fn write(&self, doc: &Document, name: &str, subject: &str) -> Result<Vec<u8>, AvroError> {
        if let Some(given) = &self.given {
            let names = Names::of(&given.schema).map_err(AvroError::Invalid)?;
            let value = match &given.schema {
                Schema::Record(record) => conform_record(doc, record, &names, ""),
                _ => Err("the configured schema is not a record".into()),
            }
            .map_err(|e| AvroError::Invalid(format!("does not fit the configured schema: {e}")))?;
            let id = self.id(GIVEN, subject, &given.text)?;
            return encode(&given.schema, value, id);
        }
        let (shape, value) = shape(doc);
        let mut key = Fingerprint::new(0);
        key.write_str(name);
        key.write_u128(shape);
        let key = key.finish().max(GIVEN + 1);
        let inferred = self.inferred(key, doc, name)?;
        let id = self.id(key, subject, &inferred.text)?;
        encode(&inferred.schema, value, id)
    }

    /// The schema of documents shaped as `doc`, inferred and parsed once.
    fn inferred(
        &self,
        key: u128,
        doc: &Document,
        name: &str,
    ) -> Result<Arc<InferredSchema>, AvroError> {
        let cached = self
            .shapes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(found) = cached {
            return Ok(found);
        }
        let Inferred { schema: text, .. } = infer(doc, name);
        let schema = Schema::parse_str(&text)
            .map_err(|e| AvroError::Invalid(format!("inferred schema {text}: {e}")))?;
        let found = Arc::new(InferredSchema { text, schema });
        let mut shapes = self.shapes.lock().unwrap_or_else(PoisonError::into_inner);
        if shapes.len() >= MAX_CACHED_SHAPES {
            shapes.clear();
            self.ids
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|key, _| *key == GIVEN);
        }
        shapes.insert(key, found.clone());
        Ok(found)
    }

    /// The registry's id of the schema `text` (cached under `key`) under `subject`.
    fn id(&self, key: u128, subject: &str, text: &str) -> Result<u32, AvroError> {
        let cached = self
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .and_then(|subjects| subjects.get(subject).copied());
        if let Some(id) = cached {
            return Ok(id);
        }
        let id = self.registry.known_id(subject, "AVRO", text)?;
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .insert(subject.to_owned(), id);
        Ok(id)
    }
}

/// `value` in `schema`, behind the wire format's header for schema `id`.
fn encode(schema: &Schema, value: Value, id: u32) -> Result<Vec<u8>, AvroError> {
    let datum = apache_avro::to_avro_datum(schema, value)
        .map_err(|e| AvroError::Invalid(format!("encoding Avro: {e}")))?;
    Ok(schema_registry::wire_format(id, &datum))
}

/// Avro in the registry wire format → BSON, with the schema the registry has under the id.
#[derive(Debug)]
pub struct AvroReader {
    schemas: ParsedSchemas<Schema>,
}

impl AvroReader {
    /// A reader fetching schemas from the registry `config` names.
    pub fn new(config: &SchemaRegistryConfig) -> Result<Self, String> {
        Ok(Self {
            schemas: ParsedSchemas::new(config)?,
        })
    }

    /// This reader, telling `hook` whether the registry answers.
    pub fn reporting_to(self, hook: Option<Reachability>) -> Self {
        Self {
            schemas: self.schemas.reporting_to(hook),
        }
    }

    /// Makes sure the schema a record in the wire format names is at hand for
    /// [`Self::read`]: fetched from the registry unless it was before. Bytes without the
    /// header are left to `read` to refuse.
    pub async fn fetch(&self, bytes: &[u8]) -> Result<(), RegistryError> {
        match schema_registry::split_wire_format(bytes) {
            Ok((id, _)) => self.schemas.fetch(id).await,
            Err(_) => Ok(()),
        }
    }

    /// The value of a record in the wire format.
    pub fn read(&self, bytes: &[u8]) -> Result<Bson, AvroError> {
        let (id, mut datum) =
            schema_registry::split_wire_format(bytes).map_err(AvroError::Invalid)?;
        let schema = self.schema(id)?;
        let value = apache_avro::from_avro_datum(&schema, &mut datum, None)
            .map_err(|e| AvroError::Invalid(format!("is not Avro of schema {id}: {e}")))?;
        if !datum.is_empty() {
            return Err(AvroError::Invalid(format!(
                "has {} bytes after the Avro datum of schema {id}",
                datum.len()
            )));
        }
        to_bson(value, &schema).map_err(AvroError::Invalid)
    }

    fn schema(&self, id: u32) -> Result<Arc<Schema>, AvroError> {
        self.schemas.get(id, |registered| {
            if registered.schema_type != "AVRO" {
                return Err(AvroError::Invalid(format!(
                    "schema {id} is {}, not Avro",
                    registered.schema_type
                )));
            }
            Schema::parse_str(&registered.schema)
                .map_err(|e| AvroError::Invalid(format!("schema {id} is not valid Avro: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use bson::oid::ObjectId;
    use bson::{doc, Regex, Timestamp};

    use super::*;

    /// Encodes `doc` with its inferred schema and reads it back, as the sink does.
    fn round_trip(doc: &Document) -> (Json, Document) {
        let Inferred { schema, value } = infer(doc, "Document");
        let parsed = Schema::parse_str(&schema).unwrap_or_else(|e| panic!("{schema}: {e}"));
        let datum =
            apache_avro::to_avro_datum(&parsed, value).unwrap_or_else(|e| panic!("{schema}: {e}"));
        let read =
            apache_avro::from_avro_datum(&parsed, &mut datum.as_slice(), None).expect("reads");
        match to_bson(read, &parsed).expect("converts") {
            Bson::Document(back) => (serde_json::from_str(&schema).expect("JSON"), back),
            other => panic!("not a document: {other}"),
        }
    }

    fn field_type<'a>(schema: &'a Json, name: &str) -> &'a Json {
        let fields = schema["fields"].as_array().expect("fields");
        let field = fields
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {schema}"));
        match &field["type"] {
            Json::Array(union) => &union[1],
            other => other,
        }
    }

    #[test]
    fn bson_types_map_to_the_documented_avro_types() {
        let oid = ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").expect("oid");
        let doc = doc! {
            "_id": oid,
            "double": 1.5,
            "string": "héllo",
            "int32": 7_i32,
            "int64": i64::MAX,
            "bool": true,
            "date": DateTime::from_millis(1_700_000_000_123),
            "decimal": "-12.345".parse::<Decimal128>().expect("decimal"),
            "binary": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 255] },
            "null": Bson::Null,
            "nested": { "a": { "b": 1 } },
            "list": [1, 2, 3],
        };
        let (schema, back) = round_trip(&doc);
        assert_eq!(field_type(&schema, "_id"), &json!("string"));
        assert_eq!(field_type(&schema, "double"), &json!("double"));
        assert_eq!(field_type(&schema, "int32"), &json!("int"));
        assert_eq!(field_type(&schema, "int64"), &json!("long"));
        assert_eq!(field_type(&schema, "bool"), &json!("boolean"));
        assert_eq!(
            field_type(&schema, "date"),
            &json!({"type": "long", "logicalType": "timestamp-millis"})
        );
        assert_eq!(
            field_type(&schema, "decimal"),
            &json!({"type": "bytes", "logicalType": "decimal", "precision": 34, "scale": 3})
        );
        assert_eq!(field_type(&schema, "binary"), &json!("bytes"));
        assert_eq!(field_type(&schema, "null"), &json!("null"));
        assert_eq!(field_type(&schema, "nested")["name"], "Document_nested");
        assert_eq!(
            field_type(&schema, "list"),
            &json!({"type": "array", "items": "int"})
        );
        // Every type comes back as itself, but the ObjectId, which is a string in Avro.
        let mut expected = doc.clone();
        expected.insert("_id", oid.to_hex());
        assert_eq!(back, expected);
    }

    #[test]
    fn decimals_keep_their_value_and_scale() {
        for text in [
            "0",
            "1.10",
            "-0.001",
            "12345678901234567890123456789012.34",
            "1E+3",
            "-7E-20",
        ] {
            let d = text.parse::<Decimal128>().expect("decimal");
            let (_, back) = round_trip(&doc! { "d": d });
            let read = back.get("d").expect("d");
            let Bson::Decimal128(read) = read else {
                panic!("{text}: {read:?}")
            };
            // Same value and scale: the text of both, normalised to an exponent form.
            assert_eq!(decimal(read), decimal(&d), "{text}: {read}");
        }
        assert_eq!(decimal(&"1.10".parse().expect("d")), Some((110, 2)));
        assert_eq!(decimal(&"1E+3".parse().expect("d")), Some((1000, 0)));
        assert_eq!(decimal(&"NaN".parse().expect("d")), None);
        assert_eq!(twos_complement(-1), vec![0xff]);
        assert_eq!(twos_complement(128), vec![0, 128]);
        assert_eq!(twos_complement(-129), vec![0xff, 0x7f]);
    }

    #[test]
    fn types_without_an_avro_twin_become_extended_json_strings() {
        let doc = doc! {
            "nan": "NaN".parse::<Decimal128>().expect("decimal"),
            "regex": Regex { pattern: "^a".into(), options: "i".into() },
            "ts": Timestamp { time: 1, increment: 2 },
            "min": Bson::MinKey,
            "mixed": [1, "two", { "three": 3 }],
            "undefined": Bson::Undefined,
            "max": Bson::MaxKey,
            "code": Bson::JavaScriptCode("f()".into()),
            "scoped": bson::JavaScriptCodeWithScope { code: "x".into(), scope: doc! { "x": 1 } },
            "pointer": Bson::try_from(json!({"$dbPointer": {"$ref": "db.c", "$id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}}})).expect("a DBPointer"),
            "symbol": Bson::Symbol("sym".into()),
            "inf": f64::INFINITY,
        };
        let (schema, back) = round_trip(&doc);
        assert_eq!(field_type(&schema, "symbol"), &json!("string"));
        assert_eq!(back.get_str("symbol").ok(), Some("sym"));
        assert_eq!(field_type(&schema, "inf"), &json!("double"));
        assert_eq!(back.get_f64("inf").ok(), Some(f64::INFINITY));
        assert_eq!(back.get_str("code").ok(), Some(r#"{"$code":"f()"}"#));
        for name in [
            "nan", "regex", "ts", "min", "mixed", "max", "code", "scoped", "pointer",
        ] {
            assert_eq!(field_type(&schema, name), &json!("string"), "{name}");
        }
        assert_eq!(
            back.get_str("ts").ok(),
            Some(r#"{"$timestamp":{"t":1,"i":2}}"#)
        );
        assert_eq!(back.get_str("mixed").ok(), Some(r#"[1,"two",{"three":3}]"#));
        assert_eq!(back.get("undefined"), Some(&Bson::Null));
    }

    #[test]
    fn names_avro_forbids_are_renamed_and_restored() {
        let doc = doc! {
            "updatedFields": { "a.b": 1, "a_b": 2, "$x": 3, "1st": 4, "": 5 },
        };
        let (schema, back) = round_trip(&doc);
        let inner = field_type(&schema, "updatedFields");
        let names: Vec<&str> = inner["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|f| f["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["a_b", "a_b_2", "_x", "_1st", "_"]);
        assert_eq!(inner["fields"][0][MONGO_NAME], "a.b");
        assert_eq!(back, doc);
    }

    #[test]
    fn arrays_of_documents_share_one_record_schema() {
        let doc =
            doc! { "items": [{ "sku": "a", "qty": 1 }, { "sku": "b", "qty": 2 }], "empty": [] };
        let (schema, back) = round_trip(&doc);
        assert_eq!(
            field_type(&schema, "items")["items"]["name"],
            "Document_items_item"
        );
        assert_eq!(
            field_type(&schema, "empty"),
            &json!({"type": "array", "items": "null"})
        );
        assert_eq!(back, doc);
    }

    /// Documents of many shapes, some alike: every BSON type, nesting, arrays of one and of
    /// mixed items, decimals of several scales, renamed fields.
    fn shapes() -> Vec<Document> {
        let decimal = |text: &str| text.parse::<Decimal128>().expect("decimal");
        vec![
            doc! { "_id": 1, "a": "x" },
            doc! { "_id": 2, "a": "y" },
            doc! { "_id": 3_i64, "a": "y" },
            doc! { "a": "y", "_id": 3 },
            doc! { "_id": 4, "a": "z", "b": true },
            doc! { "_id": 5, "a": Bson::Null },
            doc! { "_id": 6, "d": decimal("1.10") },
            doc! { "_id": 7, "d": decimal("2.20") },
            doc! { "_id": 8, "d": decimal("2.2") },
            doc! { "_id": 9, "d": decimal("NaN") },
            doc! { "_id": 10, "l": [1, 2] },
            doc! { "_id": 11, "l": [3] },
            doc! { "_id": 12, "l": [1, "two"] },
            doc! { "_id": 13, "l": [] },
            doc! { "_id": 14, "l": [{ "x": 1 }, { "x": 2 }] },
            doc! { "_id": 15, "l": [{ "x": 1 }, { "y": 2 }] },
            doc! { "_id": 16, "n": { "a.b": 1, "a_b": 2 } },
            doc! { "_id": 17, "n": { "a_b": 1, "a.b": 2 } },
            doc! { "_id": 18, "o": ObjectId::new(), "s": Bson::Symbol("s".into()) },
            doc! { "_id": 19, "o": "text", "s": "text" },
            doc! { "_id": 20, "t": DateTime::from_millis(5), "r": Regex { pattern: "a".into(), options: String::new() } },
            doc! { "_id": 21, "t": DateTime::from_millis(6), "r": Timestamp { time: 1, increment: 1 } },
            doc! { "_id": 22, "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![1] }, "f": 1.5 },
            doc! { "_id": 23, "u": Bson::Undefined, "m": Bson::MaxKey },
        ]
    }

    #[test]
    fn the_shape_walk_gives_the_inferred_value_and_tells_schemas_apart() {
        let docs = shapes();
        for doc in &docs {
            let (_, value) = shape(doc);
            assert_eq!(value, infer(doc, "Document").value, "{doc}");
        }
        // Same fingerprint exactly when same schema.
        for a in &docs {
            for b in &docs {
                let same_shape = shape(a).0 == shape(b).0;
                let same_schema = infer(a, "Document").schema == infer(b, "Document").schema;
                assert_eq!(same_shape, same_schema, "{a} / {b}");
            }
        }
    }

    /// A schema given in the configuration: a record with a renamed field, a nested record
    /// used twice (a reference), a decimal of scale 2, a field with a default.
    const GIVEN: &str = r#"{
        "type": "record", "name": "Order", "fields": [
            {"name": "_id", "type": "long"},
            {"name": "odd_name", "type": "string", "mongo_name": "odd name"},
            {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
            {"name": "at", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null},
            {"name": "ship", "type": {"type": "record", "name": "Address", "fields": [{"name": "city", "type": "string"}]}},
            {"name": "bill", "type": ["null", "Address"], "default": null},
            {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}
        ]}"#;

    fn given() -> (Schema, RecordSchema) {
        let schema = Schema::parse_str(GIVEN).expect("the schema");
        let Schema::Record(record) = schema.clone() else {
            panic!("a record")
        };
        (schema, record)
    }

    fn write_given(doc: &Document) -> Result<Document, String> {
        let (schema, record) = given();
        let names = Names::of(&schema)?;
        let value = conform_record(doc, &record, &names, "")?;
        let datum = apache_avro::to_avro_datum(&schema, value).map_err(|e| e.to_string())?;
        let read = apache_avro::from_avro_datum(&schema, &mut datum.as_slice(), None)
            .map_err(|e| e.to_string())?;
        match to_bson(read, &schema)? {
            Bson::Document(doc) => Ok(doc),
            other => Err(format!("not a document: {other}")),
        }
    }

    #[test]
    fn documents_are_written_in_a_given_schema_by_field_name() {
        let price = "12.5".parse::<Decimal128>().expect("decimal");
        let doc = doc! {
            "_id": 7,
            "odd name": "kept",
            "price": price,
            "ship": { "city": "Oslo", "zip": "0150" },
            "bill": { "city": "Bergen" },
            "not in the schema": true,
        };
        let back = write_given(&doc).expect("fits");
        assert_eq!(
            back,
            doc! {
                "_id": 7_i64,
                "odd name": "kept",
                // Rescaled to the schema's scale 2, same value.
                "price": "12.50".parse::<Decimal128>().expect("decimal"),
                "at": Bson::Null,
                "ship": { "city": "Oslo" },
                "bill": { "city": "Bergen" },
                "tags": [],
            }
        );
    }

    #[test]
    fn documents_that_do_not_fit_a_given_schema_say_where() {
        let base = doc! { "_id": 1, "odd name": "x", "price": 1, "ship": { "city": "c" } };
        if let Err(e) = write_given(&base) {
            panic!("{base}: {e}");
        }
        for (edit, why) in [
            (
                doc! { "price": "1.234".parse::<Decimal128>().expect("d") },
                "`price` has scale 3, more than the schema's 2",
            ),
            (doc! { "ship": { "town": "c" } }, "`ship.city` is missing"),
            (doc! { "_id": "one" }, "`_id` is string"),
            (
                doc! { "price": "123456789.5".parse::<Decimal128>().expect("d") },
                "`price` has more digits than the schema's precision 10",
            ),
            (doc! { "tags": ["a", 2] }, "`tags[1]` is int32"),
        ] {
            let mut doc = base.clone();
            doc.extend(edit);
            let err = write_given(&doc).expect_err("does not fit");
            assert!(err.contains(why), "{doc}: {err}");
        }
    }

    #[test]
    fn a_new_field_is_a_new_schema_and_the_same_shape_the_same_one() {
        let one = infer(&doc! { "_id": 1, "a": "x" }, "Document");
        let same = infer(&doc! { "_id": 2, "a": "y" }, "Document");
        let more = infer(&doc! { "_id": 3, "a": "z", "b": true }, "Document");
        assert_eq!(one.schema, same.schema);
        assert_ne!(one.schema, more.schema);
    }
}
