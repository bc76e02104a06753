//! Kafka record bytes → the key and value of a [`SinkRecord`](super::model::SinkRecord).
//!
//! JSON is read as extended JSON (plain JSON is a subset: `{"$oid": ...}` becomes an
//! ObjectId). Nesting deeper than MongoDB's 100 levels is refused, checked without
//! recursion, so a hostile record cannot exhaust the stack.

use bson::{Bson, Document, RawBsonRef, RawDocument, RawDocumentBuf};

use super::model::{RecordError, Stage, MAX_NESTING_DEPTH};
use crate::codec::avro::{AvroError, AvroReader};
use crate::codec::extjson::read as extjson;
use crate::codec::json_schema::{JsonSchemaError, JsonSchemaReader};
use crate::codec::protobuf::{ProtobufError, ProtobufReader};
use crate::codec::schema_registry::{Reachability, RegistryError};
use crate::config::{RecordFormat, SinkConfig};

/// Decodes the keys and values of one topic's records, in its formats; `avro`,
/// `json_schema` and `protobuf` ones through its schema registry (each schema fetched once).
#[derive(Debug)]
pub struct Decoder {
    key_format: RecordFormat,
    value_format: RecordFormat,
    avro: Option<AvroReader>,
    json_schema: Option<JsonSchemaReader>,
    protobuf: Option<ProtobufReader>,
}

impl Decoder {
    /// The decoder of records read with `config`.
    pub fn new(config: &SinkConfig) -> Result<Self, String> {
        let uses = |format| [config.key_format, config.value_format].contains(&format);
        let registry = || {
            config
                .schema_registry
                .as_ref()
                .ok_or("`avro`, `json_schema` and `protobuf` records need `schema_registry`")
        };
        let avro = match uses(RecordFormat::Avro) {
            true => Some(AvroReader::new(registry()?)?),
            false => None,
        };
        let json_schema = match uses(RecordFormat::JsonSchema) {
            true => Some(JsonSchemaReader::new(registry()?)?),
            false => None,
        };
        let protobuf = match uses(RecordFormat::Protobuf) {
            true => Some(ProtobufReader::new(registry()?)?),
            false => None,
        };
        Ok(Self {
            key_format: config.key_format,
            value_format: config.value_format,
            avro,
            json_schema,
            protobuf,
        })
    }

    /// This decoder, telling `hook` whether its schema registry answers.
    pub fn reporting_to(mut self, hook: Option<Reachability>) -> Self {
        self.avro = self.avro.map(|r| r.reporting_to(hook.clone()));
        self.json_schema = self.json_schema.map(|r| r.reporting_to(hook.clone()));
        self.protobuf = self.protobuf.map(|r| r.reporting_to(hook));
        self
    }

    /// A record part in a registry format, read by its reader; `None` for other formats.
    fn registered(
        &self,
        bytes: &[u8],
        format: RecordFormat,
        part: &str,
    ) -> Option<Result<Bson, RecordError>> {
        match (format, &self.avro, &self.json_schema) {
            (RecordFormat::Avro, Some(avro), _) => Some(avro.read(bytes).map_err(|e| match e {
                AvroError::Registry(e) => registry_error(part, e),
                other => error(part, other),
            })),
            (RecordFormat::JsonSchema, _, Some(json)) => {
                Some(json.read(bytes).map_err(|e| match e {
                    JsonSchemaError::Registry(e) => registry_error(part, e),
                    other => error(part, other),
                }))
            }
            (RecordFormat::Protobuf, _, _) => self.protobuf.as_ref().map(|protobuf| {
                protobuf
                    .read(bytes)
                    .map_err(|e| match e {
                        ProtobufError::Registry(e) => registry_error(part, e),
                        other => error(part, other),
                    })
                    .and_then(|doc| {
                        let doc = Bson::Document(doc);
                        check_depth(&doc, part)?;
                        Ok(doc)
                    })
            }),
            _ => None,
        }
    }

    /// Makes sure the schemas the registry-format parts of a record name are at hand for
    /// [`Self::key`] and [`Self::value`], which only read the caches: each schema is fetched
    /// once, awaited (the registry never blocks the thread). A registry that cannot be asked
    /// is a transient error, an unknown schema id the record's.
    pub async fn fetch_schemas(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), RecordError> {
        for (part, format, bytes) in [
            ("key", self.key_format, key),
            ("value", self.value_format, value),
        ] {
            let Some(bytes) = bytes else { continue };
            let fetched = match (format, &self.avro, &self.json_schema) {
                (RecordFormat::Avro, Some(avro), _) => avro.fetch(bytes).await,
                (RecordFormat::JsonSchema, _, Some(json)) => json.fetch(bytes).await,
                (RecordFormat::Protobuf, _, _) => match &self.protobuf {
                    Some(protobuf) => protobuf.fetch(bytes).await,
                    None => Ok(()),
                },
                _ => Ok(()),
            };
            fetched.map_err(|e| registry_error(part, e))?;
        }
        Ok(())
    }

    /// The key: `None` when the record has none.
    pub fn key(&self, bytes: Option<&[u8]>) -> Result<Option<Bson>, RecordError> {
        match bytes.and_then(|b| self.registered(b, self.key_format, "key")) {
            Some(read) => read.map(Some),
            None => decode_key(bytes, self.key_format),
        }
    }

    /// The value: `None` for a tombstone.
    pub fn value(&self, bytes: Option<&[u8]>) -> Result<Option<Document>, RecordError> {
        match bytes.and_then(|b| self.registered(b, self.value_format, "value")) {
            Some(Ok(Bson::Document(doc))) => Ok(Some(doc)),
            Some(Ok(other)) => Err(error(
                "value",
                format_args!("is {}, expected a document", kind(&other)),
            )),
            Some(Err(e)) => Err(e),
            None => decode_value(bytes, self.value_format),
        }
    }
}

impl Decoder {
    /// The value as raw BSON, for the writes that take it as it is: JSON is read in one
    /// pass ([`extjson`]) and BSON is checked and taken as it came; other formats, and JSON
    /// the one-pass reader leaves alone, go through [`Self::value`].
    pub fn raw_value(&self, bytes: Option<&[u8]>) -> Result<Option<RawDocumentBuf>, RecordError> {
        let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
            return raw(self.value(bytes)?);
        };
        match self.value_format {
            RecordFormat::Json => {
                // Bounded in depth and valid by construction; anything else is read below.
                if let Some(doc) = extjson::document(bytes) {
                    return Ok(Some(doc));
                }
            }
            RecordFormat::Bson => {
                let doc = RawDocument::from_bytes(bytes)
                    .map_err(|e| error("value", format_args!("is not a BSON document: {e}")))?;
                check_raw(doc, "value")?;
                return Ok(Some(doc.to_raw_document_buf()));
            }
            _ => {}
        }
        raw(self.value(Some(bytes))?)
    }
}

/// `doc` as raw BSON.
fn raw(doc: Option<Document>) -> Result<Option<RawDocumentBuf>, RecordError> {
    doc.map(|d| {
        RawDocumentBuf::from_document(&d)
            .map_err(|e| error("value", format_args!("cannot be encoded as BSON: {e}")))
    })
    .transpose()
}

fn error(part: &str, message: impl std::fmt::Display) -> RecordError {
    RecordError::new(Stage::Decode, format!("{part} {message}"))
}

/// A registry that did not answer is transient: the record is read again later, not
/// dead-lettered. An unknown schema id or a refusal is the record's fault.
fn registry_error(part: &str, e: RegistryError) -> RecordError {
    let message = format!("{part} {e}");
    if e.is_transient() {
        RecordError::transient(Stage::Decode, message)
    } else {
        RecordError::new(Stage::Decode, message)
    }
}

/// The key: `None` when the record has none.
pub fn decode_key(bytes: Option<&[u8]>, format: RecordFormat) -> Result<Option<Bson>, RecordError> {
    let Some(bytes) = bytes else { return Ok(None) };
    if bytes.is_empty() {
        return Err(error("key", "is empty"));
    }
    match format {
        RecordFormat::Json => {
            // A key that is an object (`{"_id": ...}`, the usual one) is read in one pass,
            // as values are: both readers give the same document for every text the fast
            // one takes, and it leaves the others (and every error) to the slow one.
            if let Some(Ok(doc)) = extjson::document(bytes).map(Document::try_from) {
                return Ok(Some(Bson::Document(doc)));
            }
            json(bytes, "key").map(Some)
        }
        RecordFormat::ConnectJson => connect(bytes, "key"),
        RecordFormat::Bson => bson(bytes, "key").map(|d| Some(Bson::Document(d))),
        RecordFormat::String => std::str::from_utf8(bytes)
            .map(|s| Some(Bson::String(s.to_owned())))
            .map_err(|e| error("key", format_args!("is not UTF-8 text: {e}"))),
        RecordFormat::Avro | RecordFormat::JsonSchema | RecordFormat::Protobuf => {
            Err(error("key", "is in a registry format, read by a `Decoder`"))
        }
    }
}

/// The value: `None` for a tombstone.
pub fn decode_value(
    bytes: Option<&[u8]>,
    format: RecordFormat,
) -> Result<Option<Document>, RecordError> {
    let Some(bytes) = bytes else { return Ok(None) };
    if bytes.is_empty() {
        return Err(error("value", "is empty (a tombstone has no value at all)"));
    }
    match format {
        RecordFormat::ConnectJson => match connect(bytes, "value")? {
            Some(Bson::Document(doc)) => Ok(Some(doc)),
            // The converter's envelope of a null value.
            None => Ok(None),
            Some(other) => Err(error(
                "value",
                format_args!(
                    "has a payload that is {}, expected a struct or map",
                    kind(&other)
                ),
            )),
        },
        RecordFormat::Json => match json(bytes, "value")? {
            Bson::Document(doc) => Ok(Some(doc)),
            other => Err(error(
                "value",
                format_args!("is JSON {}, expected an object", kind(&other)),
            )),
        },
        RecordFormat::Bson => bson(bytes, "value").map(Some),
        RecordFormat::String => Err(error("value", "cannot be read as `string`")),
        RecordFormat::Avro | RecordFormat::JsonSchema | RecordFormat::Protobuf => Err(error(
            "value",
            "is in a registry format, read by a `Decoder`",
        )),
    }
}

fn kind(value: &Bson) -> &'static str {
    match value {
        Bson::Array(_) => "an array",
        Bson::String(_) => "a string",
        Bson::Null => "null",
        Bson::Boolean(_) => "a boolean",
        _ => "a number",
    }
}

/// Extended JSON spells some single values as up to three nested objects (`{"$dbPointer":
/// {"$id": {"$oid": ...}}}`): JSON may nest that much deeper than the BSON it stands for.
const EXTJSON_WRAPPER_LEVELS: usize = 3;

fn too_deep(part: &str) -> RecordError {
    error(
        part,
        format_args!("nests deeper than {MAX_NESTING_DEPTH} levels"),
    )
}

fn json(bytes: &[u8], part: &str) -> Result<Bson, RecordError> {
    let value = Bson::try_from(json_value(bytes, part)?)
        .map_err(|e| error(part, format_args!("is not valid extended JSON: {e}")))?;
    check_depth(&value, part)?;
    Ok(value)
}

/// A Kafka Connect JSON envelope's payload, read with its schema; `None` for a null payload.
fn connect(bytes: &[u8], part: &str) -> Result<Option<Bson>, RecordError> {
    let read =
        crate::codec::connect_json::read(json_value(bytes, part)?).map_err(|e| error(part, e))?;
    if let Some(value) = &read {
        check_depth(value, part)?;
    }
    Ok(read)
}

/// The JSON text, parsed, and bounded in depth before anything recursive reads it.
fn json_value(bytes: &[u8], part: &str) -> Result<serde_json::Value, RecordError> {
    // serde_json's recursion limit (128) keeps its parser off the end of the stack.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            too_deep(part)
        } else {
            error(part, format_args!("is not valid JSON: {e}"))
        }
    })?;
    // A first bound before the recursive conversion to BSON; the exact one follows on it.
    let mut stack = vec![(&value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        if depth > MAX_NESTING_DEPTH + EXTJSON_WRAPPER_LEVELS {
            return Err(too_deep(part));
        }
        match v {
            serde_json::Value::Array(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
            serde_json::Value::Object(map) => stack.extend(map.values().map(|i| (i, depth + 1))),
            _ => {}
        }
    }
    Ok(value)
}

/// The exact depth bound, counted as in BSON.
fn check_depth(value: &Bson, part: &str) -> Result<(), RecordError> {
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        if depth > MAX_NESTING_DEPTH {
            return Err(too_deep(part));
        }
        match v {
            Bson::Array(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
            Bson::Document(doc) => stack.extend(doc.values().map(|i| (i, depth + 1))),
            Bson::JavaScriptCodeWithScope(c) => {
                stack.extend(c.scope.values().map(|i| (i, depth + 2)))
            }
            _ => {}
        }
    }
    Ok(())
}

fn bson(bytes: &[u8], part: &str) -> Result<Document, RecordError> {
    let raw = RawDocument::from_bytes(bytes)
        .map_err(|e| error(part, format_args!("is not a BSON document: {e}")))?;
    check_raw(raw, part)?;
    Document::try_from(raw).map_err(|e| error(part, format_args!("is not valid BSON: {e}")))
}

/// Walks every element of `raw` (which validates it) and bounds its depth, without recursion.
fn check_raw(raw: &RawDocument, part: &str) -> Result<(), RecordError> {
    let mut stack = vec![(RawBsonRef::Document(raw), 0usize)];
    while let Some((value, depth)) = stack.pop() {
        if depth > MAX_NESTING_DEPTH {
            return Err(too_deep(part));
        }
        let children: Box<dyn Iterator<Item = bson::raw::Result<RawBsonRef<'_>>>> = match value {
            RawBsonRef::Document(d) => Box::new(d.iter().map(|r| r.map(|(_, v)| v))),
            RawBsonRef::Array(a) => Box::new(a.into_iter()),
            // A scope is a document too, decoded recursively like any other.
            RawBsonRef::JavaScriptCodeWithScope(c) => {
                Box::new(std::iter::once(Ok(RawBsonRef::Document(c.scope))))
            }
            _ => continue,
        };
        for child in children {
            let child = child.map_err(|e| error(part, format_args!("is not valid BSON: {e}")))?;
            stack.push((child, depth + 1));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId};

    #[test]
    fn json_values_read_extended_json() {
        let value = decode_value(
            Some(br#"{"_id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}, "n": 1}"#),
            RecordFormat::Json,
        )
        .expect("decodes")
        .expect("a value");
        assert_eq!(
            value.get_object_id("_id").ok(),
            ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").ok()
        );
        assert_eq!(
            decode_value(None, RecordFormat::Json).expect("tombstone"),
            None
        );
    }

    #[test]
    fn connect_json_envelopes_are_unwrapped_and_bounded_in_depth() {
        let envelope = br#"{"schema": {"type": "struct", "fields": [{"field": "at", "type": "int64", "name": "org.apache.kafka.connect.data.Timestamp"}]}, "payload": {"at": 5}}"#;
        assert_eq!(
            decode_value(Some(envelope), RecordFormat::ConnectJson).expect("decodes"),
            Some(doc! { "at": bson::DateTime::from_millis(5) })
        );
        let null = br#"{"schema": null, "payload": null}"#;
        assert_eq!(
            decode_value(Some(null), RecordFormat::ConnectJson).expect("decodes"),
            None
        );
        let err = decode_value(Some(br#"{"_id": 1}"#), RecordFormat::ConnectJson)
            .expect_err("not an envelope");
        assert!(err.message.contains("envelope"), "{err}");
        let deep = format!(
            "{{\"schema\": null, \"payload\": {{\"a\": {}1{}}}}}",
            "[".repeat(101),
            "]".repeat(101)
        );
        let err = decode_value(Some(deep.as_bytes()), RecordFormat::ConnectJson).expect_err("deep");
        assert!(err.message.contains("deeper"), "{err}");
        assert_eq!(
            decode_key(
                Some(br#"{"schema": {"type": "int64"}, "payload": 7}"#),
                RecordFormat::ConnectJson
            )
            .expect("decodes"),
            Some(Bson::Int64(7))
        );
    }

    #[test]
    fn only_a_registry_that_did_not_answer_is_transient() {
        let url = "http://r".to_owned();
        let down = RegistryError::Unreachable {
            url: url.clone(),
            message: "refused".into(),
        };
        let unknown = RegistryError::UnknownId { url, id: 9 };
        let err = registry_error("value", down);
        assert!(err.transient, "{err}");
        assert_eq!(err.stage, Stage::Decode);
        let err = registry_error("value", unknown);
        assert!(!err.transient, "{err}");
        assert!(err.message.contains("no schema with id 9"), "{err}");
        assert!(!error("value", "x").transient);
    }

    #[test]
    fn bad_values_say_what_they_are() {
        let err = decode_value(Some(b"[1]"), RecordFormat::Json).expect_err("array");
        assert!(err.message.contains("array"), "{err}");
        let err = decode_value(Some(b"{nope"), RecordFormat::Json).expect_err("bad");
        assert!(err.message.contains("not valid JSON"), "{err}");
        let err = decode_value(Some(b""), RecordFormat::Json).expect_err("empty");
        assert!(err.message.contains("empty"), "{err}");
        let err = decode_value(Some(b"\x05\0\0"), RecordFormat::Bson).expect_err("short");
        assert_eq!(err.stage, Stage::Decode);
    }

    #[test]
    fn keys_may_be_strings_or_any_json() {
        assert_eq!(
            decode_key(Some(b"abc"), RecordFormat::String).expect("ok"),
            Some(Bson::String("abc".into()))
        );
        assert_eq!(
            decode_key(Some(b"42"), RecordFormat::Json).expect("ok"),
            Some(Bson::Int32(42))
        );
        assert!(decode_key(Some(b"\xff"), RecordFormat::String).is_err());
        assert_eq!(decode_key(None, RecordFormat::Json).expect("ok"), None);
    }

    /// `{"a": {"a": ... {"a": leaf}}}` with `levels` documents.
    fn nested(levels: usize, leaf: Bson) -> Document {
        let mut doc = doc! { "a": leaf };
        for _ in 1..levels {
            doc = doc! { "a": doc };
        }
        doc
    }

    #[test]
    fn the_depth_limit_is_the_same_for_json_and_bson() {
        use crate::config::OutputFormat;
        use crate::source::format::encode;
        // Extended JSON spells some values as nested objects (`{"$date": {"$numberLong":
        // ...}}`): they are one level, as in BSON.
        let leaves = [
            Bson::Int32(1),
            Bson::DateTime(bson::DateTime::from_millis(-1)),
            Bson::Binary(bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: vec![1],
            }),
            Bson::try_from(serde_json::json!({"$dbPointer": {"$ref": "a.b", "$id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}}}))
                .expect("a DBPointer"),
        ];
        for leaf in leaves {
            let deepest = nested(MAX_NESTING_DEPTH, leaf.clone());
            let too_deep = nested(MAX_NESTING_DEPTH + 1, leaf.clone());
            for (out, read) in [
                (OutputFormat::Bson, RecordFormat::Bson),
                (OutputFormat::CanonicalJson, RecordFormat::Json),
                (OutputFormat::RelaxedJson, RecordFormat::Json),
            ] {
                let bytes = encode(deepest.clone(), out).expect("encodes");
                assert!(
                    decode_value(Some(&bytes), read).is_ok(),
                    "{out:?} {leaf:?}: {:?}",
                    decode_value(Some(&bytes), read)
                );
                let bytes = encode(too_deep.clone(), out).expect("encodes");
                let err = decode_value(Some(&bytes), read).expect_err("too deep");
                assert!(err.message.contains("deeper"), "{out:?}: {err}");
            }
        }
    }

    #[test]
    fn the_raw_reader_refuses_what_the_document_reader_refuses() {
        let config: SinkConfig = toml::from_str("name = \"s\"\ntopics = [\"t\"]\ndatabase = \"d\"")
            .unwrap_or_else(|e| panic!("{e}"));
        let decoder = Decoder::new(&config).unwrap_or_else(|e| panic!("{e}"));
        for depth in [1usize, 98, 99, 100, 101, 102, 126, 127, 200] {
            let docs = format!("{}1{}", "{\"a\": ".repeat(depth), "}".repeat(depth));
            let arrays = format!(
                "{{\"a\": {}1{}}}",
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            );
            let mixed = format!(
                "{}[{{\"d\": {{\"$date\": \"2023-11-14T22:13:20Z\"}}}}]{}",
                "{\"a\": ".repeat(depth - 1),
                "}".repeat(depth - 1)
            );
            for text in [docs, arrays, mixed] {
                let slow = decode_value(Some(text.as_bytes()), RecordFormat::Json);
                let fast = decoder.raw_value(Some(text.as_bytes()));
                match (&slow, &fast) {
                    (Ok(Some(slow)), Ok(Some(fast))) => {
                        assert_eq!(&fast.to_document().expect("valid"), slow, "{depth}: {text}")
                    }
                    (Err(slow), Err(fast)) => assert_eq!(slow, fast, "{depth}"),
                    _ => panic!("{depth}: {slow:?} against {fast:?}"),
                }
            }
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing() {
        for depth in [101usize, 127, 5000] {
            let json = format!("{{\"a\": {}{}}}", "[".repeat(depth), "]".repeat(depth));
            let err = decode_value(Some(json.as_bytes()), RecordFormat::Json).expect_err("deep");
            assert!(err.message.contains("deeper"), "{depth}: {err}");
        }
        let ok = format!("{{\"a\": {}{}}}", "[".repeat(50), "]".repeat(50));
        assert!(decode_value(Some(ok.as_bytes()), RecordFormat::Json).is_ok());
        // 5000 nested BSON documents, built from the inside out without recursion.
        let mut bytes = bson::to_vec(&doc! {}).expect("empty");
        for _ in 0..5000 {
            let mut outer = Vec::with_capacity(bytes.len() + 8);
            let len = (bytes.len() + 4 + 1 + 2 + 1) as i32;
            outer.extend_from_slice(&len.to_le_bytes());
            outer.push(0x03);
            outer.extend_from_slice(b"a\0");
            outer.extend_from_slice(&bytes);
            outer.push(0);
            bytes = outer;
        }
        let err = decode_value(Some(&bytes), RecordFormat::Bson).expect_err("deep");
        assert!(err.message.contains("deeper"), "{err}");
        // The same inside the scope of a JavaScript-with-scope value, 200000 levels deep (a
        // 2 MB record): refused before anything recurses into it.
        let levels = 200_000usize;
        let mut scope = Vec::with_capacity(levels * 8 + 5);
        for level in (1..=levels).rev() {
            // Each level is 8 bytes around the one inside it: length, type, "a\0", end.
            scope.extend_from_slice(&((5 + 8 * level) as i32).to_le_bytes());
            scope.extend_from_slice(&[0x03, b'a', 0]);
        }
        scope.extend_from_slice(&[5, 0, 0, 0, 0]);
        scope.resize(scope.len() + levels, 0);
        let code = b"x\0";
        let mut cws = ((4 + 4 + code.len() + scope.len()) as i32)
            .to_le_bytes()
            .to_vec();
        cws.extend_from_slice(&(code.len() as i32).to_le_bytes());
        cws.extend_from_slice(code);
        cws.extend_from_slice(&scope);
        let mut value = ((4 + 3 + cws.len() + 1) as i32).to_le_bytes().to_vec();
        value.extend_from_slice(&[0x0f, b'f', 0]);
        value.extend_from_slice(&cws);
        value.push(0);
        let err = decode_value(Some(&value), RecordFormat::Bson).expect_err("deep scope");
        assert!(err.message.contains("deeper"), "{err}");
        let round = bson::to_vec(&doc! {"x": {"y": [1, {"z": 2}]}}).expect("encodes");
        assert_eq!(
            decode_value(Some(&round), RecordFormat::Bson).expect("ok"),
            Some(doc! {"x": {"y": [1, {"z": 2}]}})
        );
    }
}
