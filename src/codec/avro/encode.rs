//! BSON → Avro under a schema given in the configuration ([`conform`]): fields matched by
//! name, defaults filled in, decimals rescaled.

use std::collections::HashMap;

use apache_avro::schema::{Name, RecordSchema, ResolvedSchema};
use apache_avro::types::Value;
use apache_avro::{Decimal, Schema};
use bson::spec::BinarySubtype;
use bson::{Bson, Document};
use serde_json::Value as Json;

use super::infer::{decimal, extended_json, twos_complement, MONGO_NAME};

/// `bson` as a value of `schema`, a schema given in the configuration; `at` names the value
/// in errors. Fields are matched by name (or their `mongo_name`); fields the schema lacks are
/// left out, fields the document lacks take the schema's default; decimals are rescaled to
/// the schema's scale (never rounded).
pub(super) fn conform(
    bson: &Bson,
    schema: &Schema,
    names: &Names<'_>,
    at: &str,
) -> Result<Value, String> {
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
pub(super) fn conform_record(
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
    pub(super) fn of(root: &'s Schema) -> Result<Self, String> {
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

pub(super) fn index(i: usize) -> Result<u32, String> {
    u32::try_from(i).map_err(|_| "a union with more than 2^32 branches".to_owned())
}

pub(super) fn type_name(bson: &Bson) -> String {
    format!("{:?}", bson.element_type()).to_lowercase()
}
