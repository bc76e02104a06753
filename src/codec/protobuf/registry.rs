//! Protobuf behind a schema registry's wire format: [`ProtobufWriter`] registers each schema
//! (`schemaType` `PROTOBUF`, `.proto` text) and writes the header, [`ProtobufReader`] fetches
//! the schema a record names, picks the message its indexes name and reads it back.
//!
//! The wire format (Confluent's): byte 0 is 0, bytes 1..5 the schema id, big-endian, then
//! the message indexes (the path from the file's top-level messages to the record's message,
//! as zigzag varints: their count, then each; `[0]`, the first message, is a single 0), then
//! the message.

use bson::Document;
use prost::Message;
use prost_reflect::{DynamicMessage, FileDescriptor, MessageDescriptor};

use super::decode::to_document;
use super::encode::to_message;
use super::infer::infer;
use super::schema::{compile, given_message};
use crate::codec::schema_cache::{SchemaCache, PARSED};
use crate::codec::schema_registry::{
    self, AwaitsRegistry, Lookup, ParsedSchemas, Reachability, RegistryClient, RegistryError,
};
use crate::config::SchemaRegistryConfig;

/// Why a document could not be written or read as Protobuf.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The registry did not answer, refused, or lacks the schema.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The bytes or the schema are not what Protobuf reads.
    #[error("{0}")]
    Invalid(String),
}

impl AwaitsRegistry for ProtobufError {
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

/// The most message indexes a record may give: deeper nesting is not a schema anyone writes.
const MAX_MESSAGE_INDEXES: usize = 64;

/// The message indexes of a record, as written after the schema id.
pub fn write_indexes(indexes: &[i32], out: &mut Vec<u8>) {
    if indexes == [0] {
        out.push(0);
        return;
    }
    prost::encoding::encode_varint(zigzag(indexes.len() as i64), out);
    for &index in indexes {
        prost::encoding::encode_varint(zigzag(i64::from(index)), out);
    }
}

/// The message indexes at the start of `bytes`, and the message after them.
pub fn read_indexes(mut bytes: &[u8]) -> Result<(Vec<i32>, &[u8]), String> {
    let mut next = |what: &str| -> Result<i64, String> {
        prost::encoding::decode_varint(&mut bytes)
            .map(unzigzag)
            .map_err(|_| format!("has no valid message index {what}"))
    };
    let count = next("count")?;
    if count == 0 {
        return Ok((vec![0], bytes));
    }
    let count = usize::try_from(count)
        .ok()
        .filter(|c| *c <= MAX_MESSAGE_INDEXES)
        .ok_or_else(|| format!("gives {count} message indexes"))?;
    let mut indexes = Vec::with_capacity(count);
    for _ in 0..count {
        let index = next("")?;
        indexes.push(i32::try_from(index).map_err(|_| format!("gives message index {index}"))?);
    }
    Ok((indexes, bytes))
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// The message `indexes` name in `file`: the first picks a top-level message, each next one
/// a message nested in it.
pub fn message_at(file: &FileDescriptor, indexes: &[i32]) -> Result<MessageDescriptor, String> {
    let out_of_range = |index: i32, of: &str, count: usize| {
        format!("message index {index} is out of range: {of} has {count} message(s)")
    };
    let (&first, rest) = indexes
        .split_first()
        .ok_or_else(|| "gives no message index".to_owned())?;
    let top = file.messages().len();
    let mut message = usize::try_from(first)
        .ok()
        .and_then(|i| file.messages().nth(i))
        .ok_or_else(|| out_of_range(first, "the schema", top))?;
    for &index in rest {
        let nested = message.child_messages().len();
        message = usize::try_from(index)
            .ok()
            .and_then(|i| message.child_messages().nth(i))
            .ok_or_else(|| out_of_range(index, message.full_name(), nested))?;
    }
    Ok(message)
}

/// Documents → Protobuf in the registry wire format, registering each new schema under its
/// subject: the schema given in the configuration (its first message), or the one inferred
/// from the document; each schema text compiled once.
#[derive(Debug)]
pub struct ProtobufWriter {
    registry: RegistryClient,
    given: Option<(String, MessageDescriptor)>,
    /// Inferred schemas by their text.
    compiled: SchemaCache<String, MessageDescriptor>,
}

impl ProtobufWriter {
    /// A writer registering in the registry `config` names.
    pub fn new(config: &SchemaRegistryConfig) -> Result<Self, String> {
        Ok(Self {
            registry: RegistryClient::new(config)?,
            given: None,
            compiled: SchemaCache::default(),
        })
    }

    /// This writer, writing every document as the first message of the `.proto` text `text`
    /// instead of inferring a schema.
    pub fn with_schema(mut self, text: &str) -> Result<Self, String> {
        let message = given_message(text)?;
        self.given = Some((text.trim().to_owned(), message));
        Ok(self)
    }

    /// This writer, telling `hook` whether the registry answers.
    pub fn reporting_to(mut self, hook: Option<Reachability>) -> Self {
        self.registry = self.registry.reporting_to(hook);
        self
    }

    /// The full name of the message a document is written as, when inferred ones are named
    /// `name`: what the record name subject strategies name subjects after.
    pub fn record_name(&self, name: &str) -> String {
        match &self.given {
            Some((_, message)) => message.full_name().to_owned(),
            None => name.to_owned(),
        }
    }

    /// `doc` as a message named `name`, its schema registered under `subject`.
    pub fn write(
        &self,
        doc: &Document,
        name: &str,
        subject: &str,
    ) -> Result<Vec<u8>, ProtobufError> {
        let inferred;
        let (text, message) = match &self.given {
            Some((text, message)) => (text.as_str(), message.clone()),
            None => {
                inferred = infer(doc, name);
                let message = self.compiled(&inferred)?;
                (inferred.as_str(), message)
            }
        };
        let value = to_message(doc, &message, "").map_err(|e| {
            ProtobufError::Invalid(format!("does not fit the Protobuf schema: {e}"))
        })?;
        let id = self.registry.known_id(subject, "PROTOBUF", text)?;
        let mut out = schema_registry::wire_format(id, &[]);
        write_indexes(&[0], &mut out);
        value
            .encode(&mut out)
            .map_err(|e| ProtobufError::Invalid(format!("encoding Protobuf: {e}")))?;
        Ok(out)
    }

    /// The first message of the inferred schema `text`, compiled once.
    fn compiled(&self, text: &str) -> Result<MessageDescriptor, ProtobufError> {
        if let Some(message) = self.compiled.get(text) {
            return Ok(message);
        }
        let message = given_message(text)
            .map_err(|e| ProtobufError::Invalid(format!("inferred schema {text}: {e}")))?;
        self.compiled
            .insert(text.to_owned(), message.clone(), text.len() * (1 + PARSED));
        Ok(message)
    }
}

/// Protobuf in the registry wire format → BSON, with the schema the registry has under the
/// id and the message its indexes name.
#[derive(Debug)]
pub struct ProtobufReader {
    schemas: ParsedSchemas<FileDescriptor>,
}

impl ProtobufReader {
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
    /// [`Self::read`]. Bytes without the header are left to `read` to refuse.
    pub async fn fetch(&self, bytes: &[u8]) -> Result<(), RegistryError> {
        self.schemas.fetch(bytes).await
    }

    /// The value of a record in the wire format.
    pub fn read(&self, bytes: &[u8]) -> Result<Document, ProtobufError> {
        let (id, rest) =
            schema_registry::split_wire_format(bytes).map_err(ProtobufError::Invalid)?;
        let (indexes, payload) = read_indexes(rest).map_err(ProtobufError::Invalid)?;
        let file = self.schemas.get(id, |registered| {
            if registered.schema_type != "PROTOBUF" {
                return Err(ProtobufError::Invalid(format!(
                    "schema {id} is {}, not Protobuf",
                    registered.schema_type
                )));
            }
            compile(&registered.schema).map_err(|e| {
                ProtobufError::Invalid(format!("schema {id} is not a usable .proto schema: {e}"))
            })
        })?;
        let message = message_at(&file, &indexes)
            .map_err(|e| ProtobufError::Invalid(format!("schema {id}: {e}")))?;
        let value = DynamicMessage::decode(message.clone(), payload).map_err(|e| {
            ProtobufError::Invalid(format!(
                "is not Protobuf of message {} of schema {id}: {e}",
                message.full_name()
            ))
        })?;
        Ok(to_document(&value))
    }
}
