//! BSON documents ⇄ Avro, with the schema inferred from each document (like the MongoDB Kafka
//! Connector's `output.schema.infer.value`), and the codecs that put Avro behind a schema
//! registry's wire format.
//!
//! The mapping (the README's table is written from it):
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
use std::sync::{Arc, Mutex, PoisonError};

use apache_avro::schema::{DecimalSchema, RecordSchema, UnionSchema};
use apache_avro::types::Value;
use apache_avro::{Decimal, Schema};
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Decimal128, Document};
use serde_json::{json, Value as Json};

use crate::config::SchemaRegistryConfig;
use crate::schema_registry::{self, RegistryClient, RegistryError};

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

/// Documents → Avro in the registry wire format, registering each new inferred schema under
/// its subject (`<topic>-key` / `<topic>-value`).
#[derive(Debug)]
pub struct AvroWriter {
    registry: RegistryClient,
    schemas: Mutex<HashMap<String, Arc<Schema>>>,
}

impl AvroWriter {
    /// A writer registering in the registry `config` names.
    pub fn new(config: &SchemaRegistryConfig) -> Result<Self, String> {
        Ok(Self {
            registry: RegistryClient::new(config)?,
            schemas: Mutex::default(),
        })
    }

    /// `doc` as a record named `name`, its schema registered under `subject`.
    pub fn write(&self, doc: &Document, name: &str, subject: &str) -> Result<Vec<u8>, AvroError> {
        let Inferred { schema, value } = infer(doc, name);
        let parsed = self.parsed(&schema)?;
        let id = self.registry.register(subject, "AVRO", &schema)?;
        let datum = apache_avro::to_avro_datum(&parsed, value)
            .map_err(|e| AvroError::Invalid(format!("encoding Avro: {e}")))?;
        Ok(schema_registry::wire_format(id, &datum))
    }

    fn parsed(&self, text: &str) -> Result<Arc<Schema>, AvroError> {
        let mut schemas = self.schemas.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(schema) = schemas.get(text) {
            return Ok(schema.clone());
        }
        let schema = Arc::new(
            Schema::parse_str(text)
                .map_err(|e| AvroError::Invalid(format!("inferred schema {text}: {e}")))?,
        );
        schemas.insert(text.to_owned(), schema.clone());
        Ok(schema)
    }
}

/// Avro in the registry wire format → BSON, with the schema the registry has under the id.
#[derive(Debug)]
pub struct AvroReader {
    registry: RegistryClient,
    schemas: Mutex<HashMap<u32, Arc<Schema>>>,
}

impl AvroReader {
    /// A reader fetching schemas from the registry `config` names.
    pub fn new(config: &SchemaRegistryConfig) -> Result<Self, String> {
        Ok(Self {
            registry: RegistryClient::new(config)?,
            schemas: Mutex::default(),
        })
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
        if let Some(schema) = self
            .schemas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Ok(schema.clone());
        }
        let registered = self.registry.schema(id)?;
        if registered.schema_type != "AVRO" {
            return Err(AvroError::Invalid(format!(
                "schema {id} is {}, not Avro",
                registered.schema_type
            )));
        }
        let schema = Arc::new(
            Schema::parse_str(&registered.schema)
                .map_err(|e| AvroError::Invalid(format!("schema {id} is not valid Avro: {e}")))?,
        );
        self.schemas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, schema.clone());
        Ok(schema)
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
        };
        let (schema, back) = round_trip(&doc);
        for name in ["nan", "regex", "ts", "min", "mixed"] {
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

    #[test]
    fn a_new_field_is_a_new_schema_and_the_same_shape_the_same_one() {
        let one = infer(&doc! { "_id": 1, "a": "x" }, "Document");
        let same = infer(&doc! { "_id": 2, "a": "y" }, "Document");
        let more = infer(&doc! { "_id": 3, "a": "z", "b": true }, "Document");
        assert_eq!(one.schema, same.schema);
        assert_ne!(one.schema, more.schema);
    }
}
