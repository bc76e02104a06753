//! BSON documents ⇄ JSON with a JSON Schema inferred from each document, and the codecs that
//! put it behind a schema registry's wire format (`format = "json_schema"`).
//!
//! The JSON is the `simplified_json` output format (ObjectIds as hex strings, dates as ISO-8601
//! strings, decimals as strings, binary as base64; the other types in relaxed extended JSON).
//! The schema (draft-07, which the registries require to name itself in `$schema`) says what
//! each value is: `integer`, `number`, `string`, `boolean`, `null`, `object` with its
//! `properties`, `array` with its `items` when they share one schema; dates are strings with
//! `format: date-time` and binaries strings with `contentEncoding: base64`, which the reader
//! turns back into dates and binaries. Extended JSON objects (`{"$regularExpression": ...}`)
//! are read back as their types.

use std::sync::Arc;

use bson::{Bson, Document};
use serde_json::{json, Map, Value};

use crate::codec::schema_registry::{
    self, AwaitsRegistry, Lookup, ParsedSchemas, Reachability, RegistryClient, RegistryError,
};
use crate::config::{json_schema_validator, SchemaRegistryConfig};

/// The JSON Schema dialect the schemas name.
pub const DRAFT: &str = "http://json-schema.org/draft-07/schema#";

/// Why a document could not be written or read as JSON with a registered schema.
#[derive(Debug, thiserror::Error)]
pub enum JsonSchemaError {
    /// The registry did not answer, refused, or lacks the schema.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The bytes or the schema are not what this format reads.
    #[error("{0}")]
    Invalid(String),
}

impl AwaitsRegistry for JsonSchemaError {
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

/// The schema (titled `title`) and JSON of `doc`.
pub fn infer(doc: &Document, title: &str) -> (Value, Value) {
    let (mut schema, value) = convert(&Bson::Document(doc.clone()));
    schema["$schema"] = Value::from(DRAFT);
    schema["title"] = Value::from(title);
    (schema, value)
}

/// A value that is neither a document nor an array, as `simplified_json` writes it.
fn simple(bson: &Bson) -> Value {
    match bson {
        Bson::ObjectId(oid) => Value::String(oid.to_hex()),
        Bson::DateTime(dt) => dt
            .try_to_rfc3339_string()
            .map(Value::String)
            .unwrap_or_else(|_| Value::from(dt.timestamp_millis())),
        Bson::Int32(i) => Value::from(*i),
        Bson::Int64(i) => Value::from(*i),
        Bson::Double(f) if f.is_finite() => Value::from(*f),
        Bson::Double(f) => Value::String(f.to_string()),
        Bson::Decimal128(d) => Value::String(d.to_string()),
        Bson::Binary(bin) => Value::String(super::base64::encode(&bin.bytes)),
        Bson::Symbol(s) | Bson::String(s) => Value::String(s.clone()),
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Null | Bson::Undefined => Value::Null,
        other => other.clone().into_relaxed_extjson(),
    }
}

fn convert(bson: &Bson) -> (Value, Value) {
    match bson {
        Bson::Document(doc) => {
            let mut properties = Map::new();
            let mut values = Map::new();
            for (key, value) in doc {
                let (schema, value) = convert(value);
                properties.insert(key.clone(), schema);
                values.insert(key.clone(), value);
            }
            // Built by hand: `json!` would serialize the nested schemas again at each level.
            let mut schema = Map::new();
            schema.insert("type".into(), Value::from("object"));
            schema.insert("properties".into(), Value::Object(properties));
            (Value::Object(schema), Value::Object(values))
        }
        Bson::Array(items) => {
            let converted: Vec<(Value, Value)> = items.iter().map(convert).collect();
            let mut schema = json!({ "type": "array" });
            if let Some((first, _)) = converted.first() {
                if converted.iter().all(|(s, _)| s == first) {
                    schema["items"] = first.clone();
                }
            }
            (
                schema,
                Value::Array(converted.into_iter().map(|(_, v)| v).collect()),
            )
        }
        Bson::Int32(_) | Bson::Int64(_) => (json!({ "type": "integer" }), simple(bson)),
        Bson::Double(f) if f.is_finite() => (json!({ "type": "number" }), simple(bson)),
        Bson::Boolean(_) => (json!({ "type": "boolean" }), simple(bson)),
        Bson::Null | Bson::Undefined => (json!({ "type": "null" }), Value::Null),
        Bson::DateTime(_) => match simple(bson) {
            text @ Value::String(_) => (json!({ "type": "string", "format": "date-time" }), text),
            millis => (json!({ "type": "integer" }), millis),
        },
        Bson::Binary(_) => (
            json!({ "type": "string", "contentEncoding": "base64" }),
            simple(bson),
        ),
        _ => {
            let value = simple(bson);
            let schema = match &value {
                Value::String(_) => json!({ "type": "string" }),
                // Relaxed extended JSON of a type JSON has no twin for.
                _ => json!({ "type": "object" }),
            };
            (schema, value)
        }
    }
}

/// JSON read with `schema` as BSON: `date-time` strings become dates, base64 strings binaries,
/// extended JSON objects their types; the rest as plain JSON.
pub fn to_bson(value: Value, schema: &Value) -> Result<Bson, String> {
    match value {
        Value::Object(map) if !map.keys().any(|k| k.starts_with('$')) => {
            let properties = schema.get("properties");
            let mut doc = Document::new();
            for (key, value) in map {
                let schema = properties.and_then(|p| p.get(&key)).unwrap_or(&Value::Null);
                doc.insert(key, to_bson(value, schema)?);
            }
            Ok(Bson::Document(doc))
        }
        Value::Array(items) => {
            let schema = schema.get("items").unwrap_or(&Value::Null);
            items
                .into_iter()
                .map(|i| to_bson(i, schema))
                .collect::<Result<Vec<_>, _>>()
                .map(Bson::Array)
        }
        Value::String(text) if schema.get("format") == Some(&json!("date-time")) => {
            bson::DateTime::parse_rfc3339_str(&text)
                .map(Bson::DateTime)
                .map_err(|e| format!("`{text}` is not a date-time: {e}"))
        }
        Value::String(text) if schema.get("contentEncoding") == Some(&json!("base64")) => {
            Bson::try_from(json!({ "$binary": { "base64": text, "subType": "00" } }))
                .map_err(|e| format!("`{text}` is not base64: {e}"))
        }
        other => Bson::try_from(other).map_err(|e| format!("not valid extended JSON: {e}")),
    }
}

/// Documents → JSON in the registry wire format, registering each new schema (type `JSON`)
/// under its subject: the one given in the configuration, or the one inferred from each
/// document.
#[derive(Debug)]
pub struct JsonSchemaWriter {
    registry: RegistryClient,
    given: Option<Given>,
}

/// A JSON Schema given in the configuration: registered as it is, and every document checked
/// against it before it is written.
#[derive(Debug)]
struct Given {
    /// The schema, compact, as it is registered.
    text: String,
    /// Its `title`, the record name of the subject name strategies.
    title: Option<String>,
    validator: jsonschema::Validator,
}

impl JsonSchemaWriter {
    /// A writer registering in the registry `config` names.
    pub fn new(config: &SchemaRegistryConfig) -> Result<Self, String> {
        Ok(Self {
            registry: RegistryClient::new(config)?,
            given: None,
        })
    }

    /// This writer, registering the JSON Schema `text` for every document instead of
    /// inferring one, and checking every document against it: one that does not fit is
    /// [`JsonSchemaError::Invalid`], naming where it does not, and is never written.
    pub fn with_schema(mut self, text: &str) -> Result<Self, String> {
        let schema: Value = serde_json::from_str(text).map_err(|e| format!("is not JSON: {e}"))?;
        if !schema.is_object() {
            return Err("is not a JSON Schema: not a JSON object".into());
        }
        let validator = json_schema_validator(&schema)?;
        // Registered compact, as inferred schemas are.
        self.given = Some(Given {
            text: schema.to_string(),
            title: schema
                .get("title")
                .and_then(Value::as_str)
                .map(str::to_owned),
            validator,
        });
        Ok(self)
    }

    /// This writer, telling `hook` whether the registry answers.
    pub fn reporting_to(mut self, hook: Option<Reachability>) -> Self {
        self.registry = self.registry.reporting_to(hook);
        self
    }

    /// The record name of the documents written when inferred schemas are titled `title`
    /// (what the record name subject strategies name subjects after): the given schema's
    /// `title`, as Confluent's JSON Schema serializer takes it, else `title`.
    pub fn record_name(&self, title: &str) -> String {
        self.given
            .as_ref()
            .and_then(|given| given.title.clone())
            .unwrap_or_else(|| title.to_owned())
    }

    /// `doc` with a schema titled `title`, registered under `subject`.
    pub fn write(
        &self,
        doc: &Document,
        title: &str,
        subject: &str,
    ) -> Result<Vec<u8>, JsonSchemaError> {
        let (schema, value) = infer(doc, title);
        let id = match &self.given {
            Some(given) => {
                given.validator.validate(&value).map_err(|e| {
                    JsonSchemaError::Invalid(format!(
                        "the document does not fit the given JSON Schema at `{}`: {e}",
                        e.instance_path()
                    ))
                })?;
                self.registry.known_id(subject, "JSON", &given.text)?
            }
            None => self
                .registry
                .known_id(subject, "JSON", &schema.to_string())?,
        };
        let json = serde_json::to_vec(&value)
            .map_err(|e| JsonSchemaError::Invalid(format!("encoding JSON: {e}")))?;
        Ok(schema_registry::wire_format(id, &json))
    }
}

/// JSON in the registry wire format → BSON, read with the JSON Schema the registry has under
/// the record's id.
#[derive(Debug)]
pub struct JsonSchemaReader {
    schemas: ParsedSchemas<Value>,
}

impl JsonSchemaReader {
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
        self.schemas.fetch(bytes).await
    }

    /// The value of a record in the wire format.
    pub fn read(&self, bytes: &[u8]) -> Result<Bson, JsonSchemaError> {
        let (id, json) =
            schema_registry::split_wire_format(bytes).map_err(JsonSchemaError::Invalid)?;
        let schema = self.schema(id)?;
        let value: Value = serde_json::from_slice(json)
            .map_err(|e| JsonSchemaError::Invalid(format!("is not JSON: {e}")))?;
        to_bson(value, &schema).map_err(JsonSchemaError::Invalid)
    }

    fn schema(&self, id: u32) -> Result<Arc<Value>, JsonSchemaError> {
        self.schemas.get(id, |registered| {
            if registered.schema_type != "JSON" {
                return Err(JsonSchemaError::Invalid(format!(
                    "schema {id} is {}, not a JSON Schema",
                    registered.schema_type
                )));
            }
            serde_json::from_str(&registered.schema).map_err(|e| {
                JsonSchemaError::Invalid(format!("schema {id} is not valid JSON: {e}"))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use bson::oid::ObjectId;
    use bson::spec::BinarySubtype;
    use bson::{doc, Binary, DateTime, Decimal128, Regex};

    use super::*;

    #[test]
    fn a_document_that_does_not_fit_a_given_schema_is_refused_naming_where() {
        // Nothing answers on port 1: a document that fits gets as far as the registry, one
        // that does not is refused before it.
        let writer = JsonSchemaWriter::new(&SchemaRegistryConfig::at("http://127.0.0.1:1"))
            .and_then(|w| {
                w.with_schema(
                    r#"{"type": "object", "required": ["price"],
                        "properties": {"price": {"type": "number", "minimum": 0}}}"#,
                )
            })
            .expect("a writer");
        let refused = |doc: Document| match writer.write(&doc, "t", "t-value") {
            Err(JsonSchemaError::Invalid(reason)) => reason,
            other => panic!("{doc}: not refused: {other:?}"),
        };
        let negative = refused(doc! {"_id": 1, "price": -2.5});
        assert!(
            negative.contains("does not fit the given JSON Schema at `/price`"),
            "{negative}"
        );
        let missing = refused(doc! {"_id": 1});
        assert!(
            missing.contains("\"price\" is a required property"),
            "{missing}"
        );
        assert!(matches!(
            writer.write(&doc! {"_id": 1, "price": 3}, "t", "t-value"),
            Err(JsonSchemaError::Registry(_))
        ));
    }

    #[test]
    fn a_given_schema_that_is_not_a_json_schema_is_refused() {
        let writer = JsonSchemaWriter::new(&SchemaRegistryConfig::at("http://127.0.0.1:1"))
            .expect("a writer");
        let error = writer
            .with_schema(r#"{"type": "object", "properties": {"price": {"type": 5}}}"#)
            .expect_err("accepted");
        assert!(error.starts_with("is not a valid JSON Schema"), "{error}");
    }

    #[test]
    fn schemas_say_what_each_value_is_and_the_reader_restores_dates_and_binaries() {
        let oid = ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").expect("oid");
        let doc = doc! {
            "_id": oid,
            "n": 7_i32,
            "big": i64::MAX,
            "x": 1.5,
            "s": "héllo",
            "ok": true,
            "none": Bson::Null,
            "at": DateTime::from_millis(1_700_000_000_123),
            "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 255] },
            "price": "9.99".parse::<Decimal128>().expect("decimal"),
            "re": Regex { pattern: "^a".into(), options: "i".into() },
            "nested": { "list": [1, 2], "mixed": [1, "a"] },
        };
        let (schema, value) = infer(&doc, "Document");
        assert_eq!(schema["$schema"], DRAFT);
        assert_eq!(schema["title"], "Document");
        let p = &schema["properties"];
        assert_eq!(p["_id"], json!({"type": "string"}));
        assert_eq!(p["n"], json!({"type": "integer"}));
        assert_eq!(p["x"], json!({"type": "number"}));
        assert_eq!(p["at"], json!({"type": "string", "format": "date-time"}));
        assert_eq!(
            p["bin"],
            json!({"type": "string", "contentEncoding": "base64"})
        );
        assert_eq!(p["re"], json!({"type": "object"}));
        assert_eq!(
            p["nested"]["properties"]["list"],
            json!({"type": "array", "items": {"type": "integer"}})
        );
        assert_eq!(p["nested"]["properties"]["mixed"], json!({"type": "array"}));
        assert_eq!(value["at"], "2023-11-14T22:13:20.123Z");
        let back = to_bson(value, &schema).expect("reads");
        let Bson::Document(back) = back else {
            panic!("{back:?}")
        };
        // Dates, binaries and extended JSON types come back; ObjectIds and decimals are
        // strings, as in `simplified_json`.
        let mut expected = doc.clone();
        expected.insert("_id", oid.to_hex());
        expected.insert("price", "9.99");
        assert_eq!(back, expected);
    }

    #[test]
    fn bad_dates_and_base64_say_why() {
        let schema = json!({"properties": {"at": {"type": "string", "format": "date-time"}}});
        let err = to_bson(json!({"at": "yesterday"}), &schema).expect_err("not a date");
        assert!(err.contains("yesterday"), "{err}");
    }
}
