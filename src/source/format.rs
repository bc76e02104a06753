//! Change event → Kafka record key and value, in each output format. Pure functions.

use std::sync::Arc;

use bson::{Bson, Document};
use serde_json::Value;

use bson::{RawBsonRef, RawDocument};

use super::topic::TopicMapper;
use crate::codec::avro::{AvroError, AvroWriter};
use crate::codec::base64::encode as base64_encode;
use crate::codec::connector_json::{self, Formatter};
use crate::codec::extjson::write::{to_vec, wrapped_id, Mode, RawError};
use crate::codec::json_schema::{JsonSchemaError, JsonSchemaWriter};
use crate::codec::protobuf::{ProtobufError, ProtobufWriter};
use crate::codec::schema_registry::{AwaitsRegistry, Lookup, Reachability, RegistryError};
use crate::config::{KeyMode, OutputFormat, SourceConfig, SubjectNameStrategy};

/// Why an event could not become a record.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The event lacks a field every change event has.
    #[error("the change event has no `{0}`")]
    MissingField(&'static str),
    /// BSON encoding failed (a document nested too deep, or too large).
    #[error("encoding BSON: {0}")]
    Bson(Box<bson::ser::Error>),
    /// JSON encoding failed.
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The event is BSON, but not a document the daemon can read (a string that is not
    /// UTF-8).
    #[error("decoding the event: {0}")]
    Decode(String),
    /// Avro encoding or the schema registry failed.
    #[error("writing Avro: {0}")]
    Avro(#[from] AvroError),
    /// JSON Schema registration failed.
    #[error("writing JSON with a schema: {0}")]
    JsonSchema(#[from] JsonSchemaError),
    /// Protobuf encoding or the schema registry failed.
    #[error("writing Protobuf: {0}")]
    Protobuf(#[from] ProtobufError),
}

impl FormatError {
    /// Whether converting again later may succeed: the schema registry did not answer. Such
    /// an event is retried, never dead-lettered.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Avro(AvroError::Registry(e))
            | Self::JsonSchema(JsonSchemaError::Registry(e))
            | Self::Protobuf(ProtobufError::Registry(e)) => e.is_transient(),
            _ => false,
        }
    }
}

impl AwaitsRegistry for FormatError {
    fn pending(&self) -> Option<&Lookup> {
        match self {
            Self::Avro(e) => e.pending(),
            Self::JsonSchema(e) => e.pending(),
            Self::Protobuf(e) => e.pending(),
            _ => None,
        }
    }

    fn failed(self, error: RegistryError) -> Self {
        match self {
            Self::JsonSchema(e) => Self::JsonSchema(e.failed(error)),
            Self::Avro(e) => Self::Avro(e.failed(error)),
            Self::Protobuf(e) => Self::Protobuf(e.failed(error)),
            other => other,
        }
    }
}

impl From<bson::ser::Error> for FormatError {
    fn from(e: bson::ser::Error) -> Self {
        Self::Bson(Box::new(e))
    }
}

/// How events become records; built once per pipeline from its configuration.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// What the key holds.
    pub key: KeyMode,
    /// The encoding of the value.
    pub format: OutputFormat,
    /// The encoding of the key.
    pub key_format: OutputFormat,
    /// Publish `fullDocument` instead of the event.
    pub full_document_only: bool,
    /// With `full_document_only`, deletes become tombstones.
    pub tombstone_on_delete: bool,
    /// With `format = "avro"` or `"json_schema"`: the writer and the topics whose subjects
    /// its schemas go under.
    pub registered: Option<Registered>,
}

/// What the formats with a schema registry need besides the document: the registry's writers
/// of key and value (`None` for a part in another format), the topic of each event and the
/// subject name strategies, which name the subjects (`<topic>-key`, `<topic>-value` by
/// default).
#[derive(Debug, Clone)]
pub struct Registered {
    key: Option<Writer>,
    value: Option<Writer>,
    topics: TopicMapper,
    key_strategy: SubjectNameStrategy,
    value_strategy: SubjectNameStrategy,
}

#[derive(Debug, Clone)]
enum Writer {
    Avro(Arc<AvroWriter>),
    JsonSchema(Arc<JsonSchemaWriter>),
    Protobuf(Arc<ProtobufWriter>),
}

impl Writer {
    /// The writer of records in `format` with the schema `given` (else inferred); `None` for
    /// formats without a registry.
    fn new(
        config: &SourceConfig,
        format: OutputFormat,
        given: Option<&str>,
        hook: Option<Reachability>,
    ) -> Result<Option<Self>, String> {
        let registry = || {
            config
                .schema_registry
                .as_ref()
                .ok_or("the `avro`, `json_schema` and `protobuf` formats need `schema_registry`")
        };
        Ok(Some(match format {
            OutputFormat::Avro => {
                let writer = AvroWriter::new(registry()?)?.reporting_to(hook);
                Self::Avro(Arc::new(match given {
                    Some(text) => writer.with_schema(text)?,
                    None => writer,
                }))
            }
            OutputFormat::JsonSchema => {
                let writer = JsonSchemaWriter::new(registry()?)?.reporting_to(hook);
                Self::JsonSchema(Arc::new(match given {
                    Some(text) => writer.with_schema(text)?,
                    None => writer,
                }))
            }
            OutputFormat::Protobuf => {
                let writer = ProtobufWriter::new(registry()?)?.reporting_to(hook);
                Self::Protobuf(Arc::new(match given {
                    Some(text) => writer.with_schema(text)?,
                    None => writer,
                }))
            }
            _ => return Ok(None),
        }))
    }

    /// The full name of the record written when inferred ones are named `name`.
    fn record_name(&self, name: &str) -> String {
        match self {
            Self::Avro(avro) => avro.record_name(name),
            Self::JsonSchema(json) => json.record_name(name),
            Self::Protobuf(protobuf) => protobuf.record_name(name),
        }
    }
}

impl Registered {
    /// The writers of a pipeline whose key or value format is `avro` or `json_schema`, `None`
    /// when neither is; `hook` is told whether the registry answers.
    pub fn for_source(
        config: &SourceConfig,
        hook: Option<Reachability>,
    ) -> Result<Option<Self>, String> {
        let key = Writer::new(
            config,
            config.key_format(),
            config.key_schema.as_deref(),
            hook.clone(),
        )
        .map_err(|e| format!("`key_schema`/`key_format`: {e}"))?;
        let value = Writer::new(
            config,
            config.value_format(),
            config.value_schema.as_deref(),
            hook,
        )
        .map_err(|e| format!("`value_schema`/`value_format`: {e}"))?;
        if key.is_none() && value.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            key,
            value,
            topics: TopicMapper::new(config)?,
            key_strategy: config.key_subject_name_strategy,
            value_strategy: config.value_subject_name_strategy,
        }))
    }

    /// The topic of `event`, from its `ns` as the reader computes it.
    fn topic(&self, event: &Document) -> String {
        let ns = event.get_document("ns").ok();
        let db = ns.and_then(|n| n.get_str("db").ok()).unwrap_or_default();
        let coll = ns.and_then(|n| n.get_str("coll").ok());
        self.topics.topic(db, coll)
    }
}

impl Conversion {
    /// The conversion of the pipeline `config` describes. Its registry settings were
    /// validated with the configuration; should they still be unusable, that is logged and
    /// every Avro record fails to convert, saying why.
    pub fn for_source(config: &SourceConfig, hook: Option<Reachability>) -> Self {
        let registered = Registered::for_source(config, hook).unwrap_or_else(|error| {
            tracing::error!(pipeline = %config.name, %error, "schema registry settings");
            None
        });
        Self {
            key: config.key,
            format: config.value_format(),
            key_format: config.key_format(),
            full_document_only: config.publish_full_document_only,
            tombstone_on_delete: config.tombstone_on_delete,
            registered,
        }
    }

    /// Encodes the key or value `doc` of a record on `topic`.
    fn encode(&self, doc: Document, topic: &str, part: Part) -> Result<Vec<u8>, FormatError> {
        let format = match part {
            Part::Key => self.key_format,
            Part::Value => self.format,
        };
        let writer = self.registered.as_ref().and_then(|registered| match part {
            Part::Key => Some((registered.key.as_ref()?, registered.key_strategy)),
            Part::Value => Some((registered.value.as_ref()?, registered.value_strategy)),
        });
        let Some((writer, strategy)) = writer else {
            return encode(doc, format);
        };
        let name = match part {
            Part::Key => "Key",
            Part::Value if self.full_document_only => "Document",
            Part::Value => "ChangeEvent",
        };
        let subject = strategy.subject(topic, matches!(part, Part::Key), &writer.record_name(name));
        match writer {
            Writer::Avro(avro) => Ok(avro.write(&doc, name, &subject)?),
            Writer::JsonSchema(json) => Ok(json.write(&doc, name, &subject)?),
            Writer::Protobuf(protobuf) => Ok(protobuf.write(&doc, name, &subject)?),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Part {
    Key,
    Value,
}

/// The key and value of one record, or why the event is not published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Converted {
    /// Publish this record. A `None` value is a tombstone.
    Record {
        /// The encoded key, if the event has one.
        key: Option<Vec<u8>>,
        /// The encoded value; `None` for a tombstone.
        value: Option<Vec<u8>>,
    },
    /// Nothing to publish (a document-only pipeline and an event without a document).
    Skip,
}

impl Conversion {
    /// Converts one change event.
    pub fn convert(&self, mut event: Document) -> Result<Converted, FormatError> {
        // Registered schemas go under subjects named after the event's topic.
        let topic = self
            .registered
            .as_ref()
            .map(|registered| registered.topic(&event))
            .unwrap_or_default();
        let topic = topic.as_str();
        let key = match self.key {
            KeyMode::DocumentKey => event.get("documentKey").cloned(),
            KeyMode::EventId => Some(
                event
                    .get("_id")
                    .cloned()
                    .ok_or(FormatError::MissingField("_id"))?,
            ),
        };
        let key = match key {
            Some(Bson::Document(doc)) => Some(self.encode(doc, topic, Part::Key)?),
            Some(other) => Some(self.encode(single("_id", other), topic, Part::Key)?),
            None => None,
        };
        if !self.full_document_only {
            return Ok(Converted::Record {
                key,
                value: Some(self.encode(event, topic, Part::Value)?),
            });
        }
        match event.remove("fullDocument") {
            Some(Bson::Document(doc)) => Ok(Converted::Record {
                key,
                value: Some(self.encode(doc, topic, Part::Value)?),
            }),
            _ if self.tombstone_on_delete && event.get_str("operationType") == Ok("delete") => {
                Ok(Converted::Record { key, value: None })
            }
            _ => Ok(Converted::Skip),
        }
    }
}

fn single(name: &str, value: Bson) -> Document {
    let mut doc = Document::new();
    doc.insert(name, value);
    doc
}

/// Encodes a document in `format`.
pub fn encode(doc: Document, format: OutputFormat) -> Result<Vec<u8>, FormatError> {
    Ok(match format {
        OutputFormat::RelaxedJson => serde_json::to_vec(&relaxed(Bson::Document(doc)))?,
        OutputFormat::CanonicalJson => {
            serde_json::to_vec(&Bson::Document(doc).into_canonical_extjson())?
        }
        OutputFormat::SimplifiedJson => serde_json::to_vec(&simplify(Bson::Document(doc)))?,
        OutputFormat::Bson => bson::to_vec(&doc)?,
        OutputFormat::ConnectorDefaultJson => connector_json(&doc, Formatter::Default)?,
        OutputFormat::ConnectorExtendedJson => connector_json(&doc, Formatter::Extended)?,
        OutputFormat::ConnectorSimplifiedJson => connector_json(&doc, Formatter::Simplified)?,
        OutputFormat::Avro | OutputFormat::JsonSchema | OutputFormat::Protobuf => {
            return Err(FormatError::Decode(
                "`avro`, `json_schema` and `protobuf` are written through a schema registry, by a `Conversion`"
                    .into(),
            ))
        }
    })
}

fn connector_json(doc: &Document, formatter: Formatter) -> Result<Vec<u8>, FormatError> {
    let raw =
        bson::RawDocumentBuf::from_document(doc).map_err(|e| FormatError::Decode(e.to_string()))?;
    Ok(connector_json::to_vec(&raw, formatter)?)
}

/// Relaxed extended JSON. The `bson` crate writes the scope of JavaScript-with-scope values
/// through serde rather than as extended JSON, which turns NaN and the infinities in it into
/// `null`; this writes every level itself and leaves only the other values to the crate.
pub fn relaxed(value: Bson) -> Value {
    match value {
        Bson::Document(doc) => {
            Value::Object(doc.into_iter().map(|(k, v)| (k, relaxed(v))).collect())
        }
        Bson::Array(items) => Value::Array(items.into_iter().map(relaxed).collect()),
        Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope { code, scope }) => {
            serde_json::json!({ "$code": code, "$scope": relaxed(Bson::Document(scope)) })
        }
        other => other.into_relaxed_extjson(),
    }
}

/// Plain JSON for consumers that know nothing of BSON: ObjectIds as hex strings, dates as
/// ISO-8601 strings, 64-bit integers as numbers, decimals as strings, binary as base64.
/// Types with no plain twin (regex, code, timestamps, min/max keys, DB pointers) keep their
/// relaxed extended JSON form.
pub fn simplify(value: Bson) -> Value {
    match value {
        Bson::Document(doc) => {
            Value::Object(doc.into_iter().map(|(k, v)| (k, simplify(v))).collect())
        }
        Bson::Array(items) => Value::Array(items.into_iter().map(simplify).collect()),
        Bson::ObjectId(oid) => Value::String(oid.to_hex()),
        Bson::DateTime(dt) => dt
            .try_to_rfc3339_string()
            .map(Value::String)
            .unwrap_or_else(|_| Value::from(dt.timestamp_millis())),
        Bson::Int32(i) => Value::from(i),
        Bson::Int64(i) => Value::from(i),
        Bson::Double(f) if f.is_finite() => Value::from(f),
        Bson::Double(f) => Value::String(f.to_string()),
        Bson::Decimal128(d) => Value::String(d.to_string()),
        Bson::Binary(bin) => Value::String(base64_encode(&bin.bytes)),
        Bson::Symbol(s) | Bson::String(s) => Value::String(s),
        Bson::Boolean(b) => Value::Bool(b),
        Bson::Null | Bson::Undefined => Value::Null,
        other => relaxed(other),
    }
}

/// Decodes a value written in `format` back into a document (tests, and the sink's
/// reading of our own records).
pub fn decode(bytes: &[u8], format: OutputFormat) -> Result<Document, String> {
    match format {
        OutputFormat::Bson => bson::from_slice(bytes).map_err(|e| e.to_string()),
        OutputFormat::Avro | OutputFormat::JsonSchema | OutputFormat::Protobuf => {
            Err("`avro`, `json_schema` and `protobuf` are read through a schema registry".into())
        }
        _ => {
            let json: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            match Bson::try_from(json) {
                Ok(Bson::Document(doc)) => Ok(doc),
                Ok(other) => Err(format!("not a document: {other}")),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

impl From<RawError> for FormatError {
    fn from(e: RawError) -> Self {
        FormatError::Decode(e.to_string())
    }
}

impl Conversion {
    /// The JSON mode this conversion writes straight from raw BSON, if it does: relaxed
    /// and canonical JSON without a schema registry, the same for key and value.
    fn raw_mode(&self) -> Option<Mode> {
        if self.key_format != self.format {
            return None;
        }
        match (self.format, &self.registered) {
            (OutputFormat::RelaxedJson, None) => Some(Mode::Relaxed),
            (OutputFormat::CanonicalJson, None) => Some(Mode::Canonical),
            _ => None,
        }
    }

    /// Converts one change event as the server returned it. Relaxed and canonical JSON are
    /// written from the raw bytes; the other formats decode the event first. An event that
    /// does not decode is [`FormatError::Decode`].
    pub fn convert_raw(&self, event: &RawDocument) -> Result<Converted, FormatError> {
        let Some(mode) = self.raw_mode() else {
            let document =
                bson::Document::try_from(event).map_err(|e| FormatError::Decode(e.to_string()))?;
            return self.convert(document);
        };
        let field = |name: &str| event.get(name).map_err(RawError::from);
        let key = match self.key {
            KeyMode::DocumentKey => field("documentKey")?,
            KeyMode::EventId => Some(field("_id")?.ok_or(FormatError::MissingField("_id"))?),
        };
        let key = match key {
            Some(RawBsonRef::Document(doc)) => Some(to_vec(doc, mode)?),
            Some(other) => Some(wrapped_id(other, mode)?),
            None => None,
        };
        if !self.full_document_only {
            return Ok(Converted::Record {
                key,
                value: Some(to_vec(event, mode)?),
            });
        }
        match field("fullDocument")? {
            Some(RawBsonRef::Document(doc)) => Ok(Converted::Record {
                key,
                value: Some(to_vec(doc, mode)?),
            }),
            _ if self.tombstone_on_delete
                && matches!(field("operationType")?, Some(RawBsonRef::String("delete"))) =>
            {
                Ok(Converted::Record { key, value: None })
            }
            _ => Ok(Converted::Skip),
        }
    }
}

#[cfg(test)]
mod tests {
    use bson::oid::ObjectId;
    use bson::spec::BinarySubtype;
    use bson::{doc, Binary, DateTime, Decimal128, JavaScriptCodeWithScope, Regex, Timestamp};

    use super::*;

    /// A document holding every BSON type, including the ones with no JSON twin.
    fn every_type() -> Document {
        doc! {
            "_id": ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").unwrap(),
            "double": 1.5,
            "double_integral": 2.0,
            "nan": f64::NAN,
            "inf": f64::INFINITY,
            "string": "héllo \u{1F600}",
            "doc": { "nested": { "deeper": [1, "two", { "three": 3 }] } },
            "array": [1_i32, 2_i64, 3.5],
            "binary": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 2, 255] },
            "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] },
            "undefined": Bson::Undefined,
            "bool": true,
            "date": DateTime::from_millis(1_700_000_000_123),
            "date_far": DateTime::MIN,
            "null": Bson::Null,
            "regex": Regex { pattern: "^a.*z$".into(), options: "im".into() },
            "dbpointer": Bson::try_from(serde_json::json!({"$dbPointer": {"$ref": "db.coll", "$id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}}})).unwrap(),
            "code": Bson::JavaScriptCode("function() { return 1; }".into()),
            "symbol": Bson::Symbol("sym".into()),
            "code_w_scope": JavaScriptCodeWithScope { code: "x + y".into(), scope: doc! { "x": 1, "y": 2 } },
            "int32": i32::MIN,
            "timestamp": Timestamp { time: 1_700_000_000, increment: 7 },
            "int64": i64::MAX,
            "small_int64": 5_i64,
            "decimal_max": "9.999999999999999999999999999999999E+6144".parse::<Decimal128>().unwrap(),
            "decimal_min": "-9.999999999999999999999999999999999E+6144".parse::<Decimal128>().unwrap(),
            "decimal_tiny": "1E-6176".parse::<Decimal128>().unwrap(),
            "decimal_nan": "NaN".parse::<Decimal128>().unwrap(),
            "decimal": "1.10".parse::<Decimal128>().unwrap(),
            "minkey": Bson::MinKey,
            "maxkey": Bson::MaxKey,
        }
    }

    fn event(op: &str, full: Option<Document>) -> Document {
        let mut e = doc! {
            "_id": { "_data": "8264B7F0C2000000012B022C0100296E5A1004" },
            "operationType": op,
            "ns": { "db": "shop", "coll": "orders" },
            "documentKey": { "_id": 42 },
        };
        if let Some(full) = full {
            e.insert("fullDocument", full);
        }
        e
    }

    fn conversion(format: OutputFormat) -> Conversion {
        Conversion {
            key: KeyMode::DocumentKey,
            format,
            key_format: format,
            full_document_only: false,
            tombstone_on_delete: false,
            registered: None,
        }
    }

    fn record(converted: Converted) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        match converted {
            Converted::Record { key, value } => (key, value),
            Converted::Skip => panic!("skipped"),
        }
    }

    #[test]
    fn canonical_json_and_bson_round_trip_every_type_exactly() {
        for format in [OutputFormat::CanonicalJson, OutputFormat::Bson] {
            let doc = every_type();
            let bytes = encode(doc.clone(), format).unwrap();
            let back = decode(&bytes, format).unwrap();
            // NaN != NaN: compare the canonical text, which spells NaN out.
            assert_eq!(
                Bson::Document(back).into_canonical_extjson(),
                Bson::Document(doc).into_canonical_extjson(),
                "{format:?}"
            );
        }
    }

    #[test]
    fn relaxed_json_round_trips_every_value() {
        let doc = every_type();
        let back = decode(
            &encode(doc.clone(), OutputFormat::RelaxedJson).unwrap(),
            OutputFormat::RelaxedJson,
        )
        .unwrap();
        assert_eq!(
            back.keys().collect::<Vec<_>>(),
            doc.keys().collect::<Vec<_>>()
        );
        for (name, original) in &doc {
            let decoded = back.get(name).unwrap();
            // Relaxed JSON writes numbers plainly: an Int64 that fits comes back as Int32, a
            // double with an integral value keeps its value. Every other type is exact.
            let same = match (original, decoded) {
                (Bson::Int64(a), Bson::Int32(b)) => *a == i64::from(*b),
                (Bson::Double(a), Bson::Double(b)) if a.is_nan() => b.is_nan(),
                (Bson::Array(_), Bson::Array(_)) => {
                    original.clone().into_relaxed_extjson()
                        == decoded.clone().into_relaxed_extjson()
                }
                _ => original == decoded,
            };
            assert!(same, "{name}: {original:?} came back as {decoded:?}");
        }
        let text = String::from_utf8(encode(doc, OutputFormat::RelaxedJson).unwrap()).unwrap();
        assert!(text.contains("\"int64\":9223372036854775807"), "{text}");
        assert!(
            text.contains("\"date\":{\"$date\":\"2023-11-14T22:13:20.123Z\"}"),
            "{text}"
        );
    }

    #[test]
    fn relaxed_json_keeps_nan_and_infinities_in_a_code_scope() {
        let doc = doc! {
            "f": JavaScriptCodeWithScope { code: "x".into(), scope: doc! { "nan": f64::NAN, "inf": f64::NEG_INFINITY } },
        };
        let text = String::from_utf8(encode(doc, OutputFormat::RelaxedJson).unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"f":{"$code":"x","$scope":{"nan":{"$numberDouble":"NaN"},"inf":{"$numberDouble":"-Infinity"}}}}"#
        );
    }

    #[test]
    fn simplified_json_is_plain() {
        let value = simplify(Bson::Document(every_type()));
        assert_eq!(value["_id"], "64b7f0c2a1b2c3d4e5f60718");
        assert_eq!(value["date"], "2023-11-14T22:13:20.123Z");
        assert_eq!(value["date_far"], i64::MIN);
        assert_eq!(value["int64"], i64::MAX);
        assert_eq!(value["small_int64"], 5);
        assert_eq!(value["decimal"], "1.10");
        assert_eq!(value["binary"], "AAEC/w==");
        assert_eq!(value["nan"], "NaN");
        assert_eq!(value["inf"], "inf");
        assert_eq!(value["symbol"], "sym");
        assert_eq!(value["undefined"], Value::Null);
        assert_eq!(value["doc"]["nested"]["deeper"][2]["three"], 3);
        assert_eq!(value["regex"]["$regularExpression"]["pattern"], "^a.*z$");
        assert_eq!(value["minkey"], serde_json::json!({"$minKey": 1}));
    }

    #[test]
    fn key_is_the_document_key_or_the_event_id() {
        let (key, _) = record(
            conversion(OutputFormat::RelaxedJson)
                .convert(event("insert", Some(doc! {"_id": 42})))
                .unwrap(),
        );
        assert_eq!(key.unwrap(), br#"{"_id":42}"#);
        let by_id = Conversion {
            key: KeyMode::EventId,
            ..conversion(OutputFormat::RelaxedJson)
        };
        let (key, _) = record(by_id.convert(event("insert", None)).unwrap());
        assert_eq!(
            key.unwrap(),
            br#"{"_data":"8264B7F0C2000000012B022C0100296E5A1004"}"#
        );
        // Events without a document (drop, invalidate) have no key: round-robin partitions.
        let mut drop = event("drop", None);
        drop.remove("documentKey");
        let (key, value) = record(conversion(OutputFormat::RelaxedJson).convert(drop).unwrap());
        assert!(key.is_none());
        assert!(value.is_some());
        let mut no_id = event("insert", None);
        no_id.remove("_id");
        assert!(matches!(
            by_id.convert(no_id),
            Err(FormatError::MissingField("_id"))
        ));
    }

    #[test]
    fn value_is_the_whole_event_by_default() {
        let (_, value) = record(
            conversion(OutputFormat::CanonicalJson)
                .convert(event("insert", Some(doc! {"_id": 42, "n": 1})))
                .unwrap(),
        );
        let back = decode(&value.unwrap(), OutputFormat::CanonicalJson).unwrap();
        assert_eq!(back, event("insert", Some(doc! {"_id": 42, "n": 1})));
    }

    #[test]
    fn full_document_only_publishes_the_document_and_tombstones_deletes() {
        let only = Conversion {
            full_document_only: true,
            ..conversion(OutputFormat::RelaxedJson)
        };
        let (_, value) = record(
            only.convert(event("update", Some(doc! {"_id": 42, "n": 2})))
                .unwrap(),
        );
        assert_eq!(value.unwrap(), br#"{"_id":42,"n":2}"#);
        assert_eq!(
            only.convert(event("delete", None)).unwrap(),
            Converted::Skip
        );
        let tomb = Conversion {
            tombstone_on_delete: true,
            ..only.clone()
        };
        let (key, value) = record(tomb.convert(event("delete", None)).unwrap());
        assert_eq!(key.unwrap(), br#"{"_id":42}"#);
        assert!(value.is_none());
        // An update without a looked-up document is not a delete: skipped, not a tombstone.
        assert_eq!(
            tomb.convert(event("update", None)).unwrap(),
            Converted::Skip
        );
    }

    #[test]
    fn only_a_registry_that_did_not_answer_is_transient() {
        use crate::codec::schema_registry::RegistryError;
        let url = "http://r".to_owned();
        let unreachable = RegistryError::Unreachable {
            url: url.clone(),
            message: "refused".into(),
        };
        let refused = |status| RegistryError::Refused {
            url: url.clone(),
            what: "registering".into(),
            status,
            body: String::new(),
        };
        assert!(FormatError::Avro(AvroError::Registry(unreachable)).is_transient());
        assert!(FormatError::Avro(AvroError::Registry(refused(503))).is_transient());
        assert!(!FormatError::Avro(AvroError::Registry(refused(409))).is_transient());
        assert!(!FormatError::Avro(AvroError::Invalid("bad".into())).is_transient());
        assert!(!FormatError::MissingField("_id").is_transient());
        // Protobuf holds back as Avro does.
        assert!(FormatError::Protobuf(ProtobufError::Registry(refused(503))).is_transient());
        assert!(!FormatError::Protobuf(ProtobufError::Registry(refused(422))).is_transient());
        assert!(!FormatError::Protobuf(ProtobufError::Invalid("bad".into())).is_transient());
    }

    #[test]
    fn bson_format_writes_raw_documents() {
        let (key, value) = record(
            conversion(OutputFormat::Bson)
                .convert(event("insert", Some(doc! {"_id": 42})))
                .unwrap(),
        );
        assert_eq!(
            bson::from_slice::<Document>(&key.unwrap()).unwrap(),
            doc! {"_id": 42}
        );
        assert_eq!(
            bson::from_slice::<Document>(&value.unwrap()).unwrap(),
            event("insert", Some(doc! {"_id": 42}))
        );
    }
}
