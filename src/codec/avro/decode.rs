//! Avro → BSON ([`to_bson`]), by the table in the parent module's doc.

use apache_avro::schema::{DecimalSchema, RecordSchema, UnionSchema};
use apache_avro::types::Value;
use apache_avro::Schema;
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Decimal128, Document};
use serde_json::Value as Json;

use super::infer::MONGO_NAME;

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
            Bson::Decimal128(decimal128(&bytes, *scale as i64)?)
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

pub(super) fn union_variant(union: &UnionSchema, index: u32) -> Result<&Schema, String> {
    usize::try_from(index)
        .ok()
        .and_then(|i| union.variants().get(i))
        .ok_or_else(|| format!("union branch {index} is not in the schema"))
}

pub(super) fn document(
    fields: Vec<(String, Value)>,
    record: &RecordSchema,
) -> Result<Document, String> {
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

/// A decimal128 from a decimal's two's complement bytes and scale (Avro's `decimal`,
/// Protobuf's `confluent.type.Decimal`, whose scale may be negative).
pub(crate) fn decimal128(bytes: &[u8], scale: i64) -> Result<Decimal128, String> {
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
    let exponent = -scale;
    format!("{unscaled}E{exponent}")
        .parse::<Decimal128>()
        .map_err(|e| format!("decimal {unscaled}E{exponent} does not fit a decimal128: {e}"))
}
