//! Avro behind a schema registry's wire format: [`AvroWriter`] registers each schema and
//! writes the header, [`AvroReader`] fetches the schema a record names and reads it back.

use std::sync::Arc;

use apache_avro::types::Value;
use apache_avro::Schema;
use bson::{Bson, Document};

use super::decode::to_bson;
use super::encode::{conform_record, Names};
use super::infer::{infer, shape, Fingerprint, Inferred};
use crate::codec::schema_cache::{SchemaCache, PARSED};
use crate::codec::schema_registry::{
    self, AwaitsRegistry, Lookup, ParsedSchemas, Reachability, RegistryClient, RegistryError,
};
use crate::config::SchemaRegistryConfig;

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
    /// Inferred schemas by the fingerprint of the record name and the document's shape.
    shapes: SchemaCache<u128, Arc<InferredSchema>>,
    /// Ids by the fingerprint of the schema's key (a shape's, or [`GIVEN`]) and the subject.
    ids: SchemaCache<u128, u32>,
}

/// A schema given in the configuration.
#[derive(Debug)]
pub(super) struct Given {
    text: String,
    schema: Schema,
}

/// An inferred schema: its text, as registered, and parsed.
#[derive(Debug)]
pub(super) struct InferredSchema {
    text: String,
    schema: Schema,
}

/// The cache key of the given schema's id (inferred ones are keyed by shape and name).
pub(super) const GIVEN: u128 = 0;

impl AvroWriter {
    /// A writer registering in the registry `config` names.
    pub fn new(config: &SchemaRegistryConfig) -> Result<Self, String> {
        Ok(Self {
            registry: RegistryClient::new(config)?,
            given: None,
            shapes: SchemaCache::default(),
            ids: SchemaCache::default(),
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

    /// The full name of the record a document is written as when inferred ones are named
    /// `name` (what the record name subject strategies name subjects after).
    pub fn record_name(&self, name: &str) -> String {
        match self.given.as_ref().map(|given| &given.schema) {
            Some(Schema::Record(record)) => record.name.fullname(None),
            _ => name.to_owned(),
        }
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
        if let Some(found) = self.shapes.get(&key) {
            return Ok(found);
        }
        let Inferred { schema: text, .. } = infer(doc, name);
        let schema = Schema::parse_str(&text)
            .map_err(|e| AvroError::Invalid(format!("inferred schema {text}: {e}")))?;
        let bytes = 16 + text.len() * (1 + PARSED);
        let found = Arc::new(InferredSchema { text, schema });
        self.shapes.insert(key, found.clone(), bytes);
        Ok(found)
    }

    /// The registry's id of the schema `text` (cached under `key`) under `subject`.
    fn id(&self, key: u128, subject: &str, text: &str) -> Result<u32, AvroError> {
        let mut cached = Fingerprint::new(1);
        cached.write_u128(key);
        cached.write_str(subject);
        let cached = cached.finish();
        if let Some(id) = self.ids.get(&cached) {
            return Ok(id);
        }
        let id = self.registry.known_id(subject, "AVRO", text)?;
        self.ids.insert(cached, id, 20);
        Ok(id)
    }
}

/// `value` in `schema`, behind the wire format's header for schema `id`.
pub(super) fn encode(schema: &Schema, value: Value, id: u32) -> Result<Vec<u8>, AvroError> {
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
        self.schemas.fetch(bytes).await
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
