//! One Kafka record → one write: decoding, the target namespace, then either CDC replay or
//! id + post-processing + write model, and the size check. Pure: no I/O.

use bson::{Bson, DateTime, Document};

use super::cdc::CdcReplayer;
use super::decode::Decoder;
use super::id::IdAssigner;
use super::model::{RawWrite, RecordError, SinkRecord, Stage, WriteOp};
use super::namespace::Namespace;
use super::process::PostProcessor;
use super::timeseries::TimeSeries;
use super::write_model::WriteModelBuilder;
use crate::codec::schema_registry::Reachability;
use crate::config::{CdcHandler, NamespaceFrom, SinkConfig};

/// A record turned into a write.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// Where it goes.
    pub namespace: Namespace,
    /// What it does, ready for a bulk command.
    pub op: RawWrite,
    /// Fields the renames dropped because their new name was taken (the connector's rule).
    pub renamed_fields_dropped: usize,
}

/// The raw parts of a Kafka record the converter reads.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// Milliseconds since the epoch, when the record has a timestamp.
    pub timestamp: Option<i64>,
    /// The key bytes.
    pub key: Option<&'a [u8]>,
    /// The value bytes; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
}

/// Converts the records of one topic, with that topic's settings.
pub struct Converter {
    config: SinkConfig,
    decoder: Decoder,
    ids: IdAssigner,
    process: PostProcessor,
    model: WriteModelBuilder,
    cdc: CdcReplayer,
    timeseries: Option<TimeSeries>,
    /// Whether values go from their bytes to raw BSON and into the write as they are: no
    /// CDC handler, no time series, nothing that rewrites the value and a namespace that
    /// does not come from it. Otherwise the value is read as a [`Document`].
    raw: bool,
}

impl Converter {
    /// A converter for records read with `config` (already resolved for the topic).
    pub fn new(config: SinkConfig) -> Result<Self, String> {
        let process = PostProcessor::new(&config)?;
        let timeseries = TimeSeries::new(&config)?;
        let raw = config.cdc_handler == CdcHandler::None
            && timeseries.is_none()
            && process.keeps_values()
            && config.namespace_from != NamespaceFrom::Value;
        Ok(Self {
            decoder: Decoder::new(&config)?,
            ids: IdAssigner::new(&config),
            process,
            model: WriteModelBuilder::new(&config),
            cdc: CdcReplayer::new(&config),
            timeseries,
            config,
            raw,
        })
    }

    /// This converter, telling `hook` whether its schema registry answers.
    pub fn reporting_to(mut self, hook: Option<Reachability>) -> Self {
        self.decoder = self.decoder.reporting_to(hook);
        self
    }

    /// Fetches the schemas `raw`'s registry-format parts name, unless at hand: awaited
    /// before [`Self::convert`], which only reads the caches.
    pub async fn fetch_schemas(&self, raw: RawRecord<'_>) -> Result<(), RecordError> {
        self.decoder.fetch_schemas(raw.key, raw.value).await
    }

    /// The write `raw` becomes; `Ok(None)` when it writes nothing (a tombstone without
    /// `delete_on_null_values`, a change event without a document effect).
    pub fn convert(&self, raw: RawRecord<'_>) -> Result<Option<Converted>, RecordError> {
        self.convert_at(raw, DateTime::now())
    }

    /// [`Self::convert`], with `now` as the time `update_one_timestamps` writes.
    fn convert_at(
        &self,
        raw: RawRecord<'_>,
        now: DateTime,
    ) -> Result<Option<Converted>, RecordError> {
        if !self.raw {
            let Some((namespace, op, renamed_fields_dropped)) = self.convert_document(raw, now)?
            else {
                return Ok(None);
            };
            let op = RawWrite::encode(&op)?;
            return Ok(Some(Converted {
                namespace,
                op,
                renamed_fields_dropped,
            }));
        }
        let mut record = SinkRecord {
            topic: raw.topic.to_owned(),
            partition: raw.partition,
            offset: raw.offset,
            timestamp: raw.timestamp,
            key: self.decoder.key(raw.key)?,
            value: None,
        };
        let value = self.decoder.raw_value(raw.value)?;
        let namespace = self.namespace(&record)?;
        let value = match value {
            Some(value) => Some(self.ids.assign_raw(&record, value)?),
            None => None,
        };
        // Key projections and renames only: the value is left as it is (`keeps_values`).
        let renamed_fields_dropped = self.process.apply(&mut record)?;
        let op = match value {
            Some(value) => self.model.build_raw(record, value, now)?,
            None => self
                .model
                .build_at(&record, now)?
                .as_ref()
                .map(RawWrite::encode)
                .transpose()?,
        };
        Ok(op.map(|op| Converted {
            namespace,
            op,
            renamed_fields_dropped,
        }))
    }

    /// The write `raw` becomes, its value read as a [`Document`] (CDC replay, projections,
    /// renames, metadata, time series, a namespace from the value), and the fields the
    /// renames dropped.
    fn convert_document(
        &self,
        raw: RawRecord<'_>,
        now: DateTime,
    ) -> Result<Option<(Namespace, WriteOp, usize)>, RecordError> {
        let mut record = SinkRecord {
            topic: raw.topic.to_owned(),
            partition: raw.partition,
            offset: raw.offset,
            timestamp: raw.timestamp,
            key: self.decoder.key(raw.key)?,
            value: self.decoder.value(raw.value)?,
        };
        let namespace = self.namespace(&record)?;
        let mut dropped = 0;
        let op = if self.config.cdc_handler == CdcHandler::None {
            dropped = self.process.apply_with_id(&mut record, &self.ids)?;
            if let (Some(series), Some(value)) = (&self.timeseries, record.value.as_mut()) {
                series.convert(value)?;
            }
            self.model.build_at(&record, now)?
        } else {
            self.cdc.replay(&record)?
        };
        Ok(op.map(|op| (namespace, op, dropped)))
    }

    /// The time-series settings of the topic, when its collection is one.
    pub fn timeseries(&self) -> Option<&TimeSeries> {
        self.timeseries.as_ref()
    }

    fn namespace(&self, record: &SinkRecord) -> Result<Namespace, RecordError> {
        let default = Namespace {
            db: self.config.database.clone(),
            coll: self.config.collection_for(&record.topic),
        };
        let source = match self.config.namespace_from {
            NamespaceFrom::Config => return Ok(default),
            NamespaceFrom::Key => match &record.key {
                Some(Bson::Document(key)) => Ok(key),
                _ => Err(RecordError::new(
                    Stage::Namespace,
                    "`namespace_from = \"key\"` needs a key that is a document",
                )),
            },
            NamespaceFrom::Value => record.value.as_ref().ok_or_else(|| {
                RecordError::new(
                    Stage::Namespace,
                    "`namespace_from = \"value\"` needs a value; the record is a tombstone",
                )
            }),
        };
        let lenient = !self.config.error_if_invalid;
        // With `error_if_invalid = false`, each part that cannot be read is the default one.
        let part = |path: &Option<String>, default: String| match path {
            None => Ok(default),
            Some(path) => match source.clone().and_then(|doc| name_at(doc, path)) {
                Err(_) if lenient => Ok(default),
                read => read,
            },
        };
        Ok(Namespace {
            db: part(&self.config.database_field, default.db)?,
            coll: part(&self.config.collection_field, default.coll)?,
        })
    }
}

/// The non-empty string at dotted `path` of `doc`.
fn name_at(doc: &Document, path: &str) -> Result<String, RecordError> {
    let mut current = doc;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        let value = current.get(segment);
        if segments.peek().is_none() {
            return match value {
                Some(Bson::String(name)) if !name.is_empty() && !name.contains('\0') => {
                    Ok(name.clone())
                }
                Some(other) => Err(RecordError::new(
                    Stage::Namespace,
                    format!("field `{path}` must be a non-empty string, not {other}"),
                )),
                None => Err(RecordError::new(
                    Stage::Namespace,
                    format!("field `{path}` is missing"),
                )),
            };
        }
        match value {
            Some(Bson::Document(inner)) => current = inner,
            _ => {
                return Err(RecordError::new(
                    Stage::Namespace,
                    format!("field `{path}` is missing"),
                ))
            }
        }
    }
    Err(RecordError::new(
        Stage::Namespace,
        format!("`{path}` is not a field path"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn converter(extra: &str) -> Converter {
        let text = format!("name = \"s\"\ntopics = [\"orders\"]\ndatabase = \"shop\"\n{extra}");
        let config: SinkConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        Converter::new(config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn raw<'a>(key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> RawRecord<'a> {
        RawRecord {
            topic: "orders",
            partition: 3,
            offset: 42,
            timestamp: Some(1_700_000_000_000),
            key,
            value,
        }
    }

    #[test]
    fn a_json_document_is_replaced_by_its_id_in_the_topic_collection() {
        let c = converter("id_strategy = \"provided_in_value\"");
        let out = c
            .convert(raw(None, Some(br#"{"_id": 5, "qty": 2}"#)))
            .expect("converts")
            .expect("writes");
        assert_eq!(
            out.namespace,
            Namespace {
                db: "shop".into(),
                coll: "orders".into()
            }
        );
        assert_eq!(
            out.op,
            encoded(WriteOp::Replace {
                filter: doc! {"_id": 5},
                replacement: doc! {"_id": 5, "qty": 2},
                upsert: true
            })
        );
    }

    #[test]
    fn the_namespace_can_come_from_the_value() {
        let c = converter(
            "namespace_from = \"value\"\ncollection_field = \"meta.kind\"\nid_strategy = \"provided_in_value\"",
        );
        let out = c
            .convert(raw(
                None,
                Some(br#"{"_id": 1, "meta": {"kind": "returns"}}"#),
            ))
            .expect("converts")
            .expect("writes");
        assert_eq!(out.namespace.to_string(), "shop.returns");
        let err = c
            .convert(raw(None, Some(br#"{"_id": 1, "meta": {"kind": 7}}"#)))
            .expect_err("not a string");
        assert_eq!(err.stage, Stage::Namespace);
        assert!(err.message.contains("meta.kind"), "{err}");
    }

    #[test]
    fn bad_json_is_a_decode_error() {
        let c = converter("");
        let err = c
            .convert(raw(None, Some(b"{not json")))
            .expect_err("bad JSON");
        assert_eq!(err.stage, Stage::Decode);
    }

    #[test]
    fn a_tombstone_deletes_with_delete_on_null_values() {
        let c = converter("delete_on_null_values = true");
        let out = c
            .convert(raw(Some(br#"{"_id": 9}"#), None))
            .expect("converts")
            .expect("writes");
        assert_eq!(
            out.op,
            encoded(WriteOp::Delete {
                filter: doc! {"_id": 9}
            })
        );
    }

    fn encoded(op: WriteOp) -> RawWrite {
        RawWrite::encode(&op).expect("encodes")
    }

    /// The raw path gives what the document path gives, for every id strategy and write
    /// model it takes, values and tombstones, errors included (same stage, same message).
    #[test]
    fn the_raw_path_writes_what_the_document_path_writes() {
        let now = DateTime::from_millis(1_700_000_000_000);
        // `object_id` and `uuid` make a new id each time: `kafka_meta` stands for them (one
        // code path chooses every generated id).
        let configs = [
            "id_strategy = \"provided_in_value\"",
            "id_strategy = \"kafka_meta\"",
            "id_strategy = \"kafka_meta\"\nid_overwrite_existing = true",
            "id_strategy = \"full_key\"",
            "id_strategy = \"provided_in_key\"",
            "id_strategy = \"partial_key\"\nid_fields = [\"_id\"]",
            "id_strategy = \"partial_value\"\nid_fields = [\"c.n\", \"q\"]\nid_overwrite_existing = true",
            "id_strategy = \"partial_value\"\nid_fields = [\"c.n\"]\nid_fields_projection = \"block\"\nid_overwrite_existing = true",
            "id_strategy = \"uuid_provided_in_value\"",
            "id_strategy = \"uuid_provided_in_key\"",
            "write_model = \"insert_one\"\nid_strategy = \"provided_in_value\"",
            "write_model = \"update_one\"\nid_strategy = \"provided_in_value\"",
            "write_model = \"update_one_timestamps\"\nid_strategy = \"provided_in_value\"",
            "write_model = \"delete_one\"",
            "write_model = \"replace_business_key\"\nbusiness_key_fields = [\"c.n\"]\nid_strategy = \"provided_in_value\"",
            "delete_on_null_values = true\nid_strategy = \"provided_in_value\"",
            "namespace_from = \"key\"\ncollection_field = \"k\"\nid_strategy = \"provided_in_value\"",
            "key_allow_fields = [\"_id\"]\nwrite_model = \"delete_one\"",
            "value_format = \"bson\"\nid_strategy = \"provided_in_value\"",
        ];
        let uuid = "00112233-4455-6677-8899-aabbccddeeff";
        let json_values: Vec<Option<String>> = vec![
            Some(r#"{"_id": 5, "q": 2, "c": {"n": "x"}}"#.into()),
            Some(r#"{"q": 2, "c": {"n": "x"}, "_modifiedTS": 1, "_insertedTS": 2}"#.into()),
            Some(format!(r#"{{"_id": "{uuid}", "q": {{"$numberLong": "7"}}}}"#)),
            Some(r#"{"_id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}, "at": {"$date": "2023-11-14T22:13:20Z"}, "c": {"n": [1, {"a": null}]}}"#.into()),
            Some(r#"{"_id": {"$ne": 1}, "q": 1}"#.into()),
            Some(r#"{"_id": {"$regularExpression": {"pattern": "a", "options": ""}}, "q": 1}"#.into()),
            Some(r#"{"_id": {"a": {"$ne": 1}, "b": [1]}, "q": 1, "c": {"n": {"d": 2}}}"#.into()),
            Some(r#"{"_id": 1, "q": 1, "q": 2}"#.into()),
            Some(r#"{"not json"#.into()),
            None,
        ];
        let keys: Vec<Option<String>> = vec![
            Some(r#"{"_id": 5, "k": "coll"}"#.into()),
            Some(format!(r#"{{"_id": "{uuid}"}}"#)),
            Some(r#"7"#.into()),
            None,
        ];
        for extra in configs {
            let c = converter(extra);
            assert!(c.raw, "{extra}: not on the raw path");
            let bson_values = extra.contains("\"bson\"");
            for value in &json_values {
                let value: Option<Vec<u8>> = match (value, bson_values) {
                    (Some(v), true) => {
                        let parsed: serde_json::Value = match serde_json::from_str(v) {
                            Ok(parsed) => parsed,
                            Err(_) => continue,
                        };
                        match Bson::try_from(parsed) {
                            Ok(Bson::Document(d)) => Some(bson::to_vec(&d).expect("encodes")),
                            _ => continue,
                        }
                    }
                    (Some(v), false) => Some(v.clone().into_bytes()),
                    (None, _) => None,
                };
                for key in &keys {
                    let record = raw(key.as_deref().map(str::as_bytes), value.as_deref());
                    let fast = c.convert_at(record, now);
                    let slow = c.convert_document(record, now).and_then(|out| {
                        out.map(|(namespace, op, renamed_fields_dropped)| {
                            RawWrite::encode(&op).map(|op| Converted {
                                namespace,
                                op,
                                renamed_fields_dropped,
                            })
                        })
                        .transpose()
                    });
                    assert_eq!(fast, slow, "{extra}\nkey {key:?}\nvalue {value:?}");
                }
            }
        }
    }

    #[test]
    fn values_that_are_rewritten_take_the_document_path() {
        for extra in [
            "cdc_handler = \"mongodb\"",
            "value_block_fields = [\"a\"]",
            "field_renames = { a = \"b\" }",
            "kafka_metadata_field = \"meta\"",
            "namespace_from = \"value\"\ncollection_field = \"c\"",
            "timeseries_time_field = \"ts\"",
        ] {
            assert!(!converter(extra).raw, "{extra}");
        }
    }
}
