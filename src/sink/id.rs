//! Document id strategies: how the `_id` of a written document is chosen (the MongoDB Kafka
//! Connector's `document.id.strategy`). A value that already has an `_id` keeps it unless
//! `id_overwrite_existing` is set; `provided_in_key` and `uuid_provided_in_key` always take
//! the key's. The `uuid_provided_*` strategies read a UUID (hyphenated or 32 hex digits, or
//! binary subtype 4) and store it as binary subtype 4, as the connector does.

use bson::{
    oid::ObjectId, spec::BinarySubtype, Binary, Bson, Document, RawBson, RawBsonRef, RawDocument,
    RawDocumentBuf,
};

use super::model::{element_spans, raw_with_capacity, RecordError, SinkRecord, Stage};
use super::paths::{allow_paths, block_paths, get_path, has_wildcard};
use crate::config::{IdProjection, IdStrategy, SinkConfig, UuidRepresentation};

/// Sets `_id` on values, per the topic's strategy.
pub struct IdAssigner {
    strategy: IdStrategy,
    fields: Vec<String>,
    projection: IdProjection,
    overwrite: bool,
    uuid: UuidRepresentation,
}

fn error(message: impl Into<String>) -> RecordError {
    RecordError::new(Stage::Id, message)
}

impl IdAssigner {
    /// The assigner `config` asks for.
    pub fn new(config: &SinkConfig) -> Self {
        Self {
            strategy: config.id_strategy,
            fields: config.id_fields.clone(),
            projection: config.id_fields_projection,
            overwrite: config.id_overwrite_existing,
            uuid: config.uuid_representation,
        }
    }

    /// Sets the `_id` of `value`, the value of `record`.
    pub fn assign(&self, record: &SinkRecord, value: &mut Document) -> Result<(), RecordError> {
        let chosen = self.choose(record, value.get("_id"), || self.partial(value, "value"))?;
        if let Some(id) = chosen {
            value.insert("_id", id);
        }
        Ok(())
    }

    /// [`Self::assign`] for a value in raw BSON: a new `_id` takes the place of the old one,
    /// or goes last when there was none (where [`Document::insert`] puts it).
    pub fn assign_raw(
        &self,
        record: &SinkRecord,
        value: RawDocumentBuf,
    ) -> Result<RawDocumentBuf, RecordError> {
        let existing = match value.get("_id") {
            Ok(Some(id)) => Some(raw_to_bson(id)?),
            Ok(None) => None,
            Err(e) => return Err(error(format!("the value is not valid BSON: {e}"))),
        };
        let chosen = self.choose(record, existing.as_ref(), || {
            self.partial(&self.partial_source(&value)?, "value")
        })?;
        let Some(id) = chosen else { return Ok(value) };
        let id = RawBson::try_from(id).map_err(|e| error(format!("the `_id` is not BSON: {e}")))?;
        with_id(&value, id.as_raw_bson_ref())
    }

    /// What of a raw value `partial_value` reads: with an allow list, only the top-level
    /// fields the list goes through (the projection keeps nothing else), else all of it.
    fn partial_source(&self, value: &RawDocument) -> Result<Document, RecordError> {
        let invalid = |e: bson::raw::Error| error(format!("the value is not valid BSON: {e}"));
        if self.projection == IdProjection::Block {
            return Document::try_from(value).map_err(invalid);
        }
        let mut doc = Document::new();
        for field in value.iter() {
            let (key, field) = field.map_err(invalid)?;
            let used = self.fields.iter().any(|f| f.split('.').next() == Some(key));
            if used {
                doc.insert(key, raw_to_bson(field)?);
            }
        }
        Ok(doc)
    }

    /// The `_id` the strategy gives a value whose `_id` is `existing`; `None` keeps it.
    /// `partial_value` makes the `partial_value` strategy's id, when that is the strategy.
    fn choose(
        &self,
        record: &SinkRecord,
        existing: Option<&Bson>,
        partial_value: impl FnOnce() -> Result<Bson, RecordError>,
    ) -> Result<Option<Bson>, RecordError> {
        let id = match self.strategy {
            IdStrategy::ProvidedInValue => {
                return match existing {
                    Some(_) => Ok(None),
                    None => Err(error("the value has no `_id` (id_strategy = \"provided_in_value\")")),
                }
            }
            IdStrategy::ProvidedInKey => match &record.key {
                Some(Bson::Document(key)) => key.get("_id").cloned().ok_or_else(|| {
                    error("the key has no `_id` field (id_strategy = \"provided_in_key\")")
                })?,
                Some(other) => {
                    return Err(error(format!(
                        "the key is {other}, not a document with `_id` (id_strategy = \"provided_in_key\")"
                    )))
                }
                None => return Err(error("the record has no key (id_strategy = \"provided_in_key\")")),
            },
            IdStrategy::UuidProvidedInKey => match &record.key {
                Some(Bson::Document(key)) => uuid_id(key.get("_id"), "key", "uuid_provided_in_key")?,
                Some(other) => {
                    return Err(error(format!(
                        "the key is {other}, not a document with `_id` (id_strategy = \"uuid_provided_in_key\")"
                    )))
                }
                None => {
                    return Err(error(
                        "the record has no key (id_strategy = \"uuid_provided_in_key\")",
                    ))
                }
            },
            IdStrategy::UuidProvidedInValue => {
                uuid_id(existing, "value", "uuid_provided_in_value")?
            }
            _ if existing.is_some() && !self.overwrite => return Ok(None),
            IdStrategy::ObjectId => Bson::ObjectId(ObjectId::new()),
            IdStrategy::KafkaMeta => Bson::String(format!(
                "{}-{}-{}",
                record.topic, record.partition, record.offset
            )),
            IdStrategy::Uuid => {
                let uuid = bson::Uuid::new();
                match self.uuid {
                    UuidRepresentation::String => Bson::String(uuid.to_string()),
                    UuidRepresentation::Binary => Bson::Binary(Binary {
                        subtype: BinarySubtype::Uuid,
                        bytes: uuid.bytes().to_vec(),
                    }),
                }
            }
            IdStrategy::FullKey => match &record.key {
                Some(key) => key.clone(),
                None => return Err(error("the record has no key (id_strategy = \"full_key\")")),
            },
            IdStrategy::PartialKey => match &record.key {
                Some(Bson::Document(key)) => self.partial(key, "key")?,
                _ => {
                    return Err(error(
                        "the key is not a document (id_strategy = \"partial_key\")",
                    ))
                }
            },
            IdStrategy::PartialValue => partial_value()?,
        };
        Ok(Some(id))
    }

    fn partial(&self, doc: &Document, side: &str) -> Result<Bson, RecordError> {
        match self.projection {
            IdProjection::Allow => {
                if let Some(missing) = self
                    .fields
                    .iter()
                    .find(|f| !has_wildcard(f) && get_path(doc, f).is_none())
                {
                    return Err(error(format!(
                        "the {side} has no field `{missing}` (id_fields)"
                    )));
                }
                Ok(Bson::Document(allow_paths(doc.clone(), &self.fields)))
            }
            IdProjection::Block => {
                // The `_id` being made cannot hold the one it replaces.
                let mut rest = doc.clone();
                rest.remove("_id");
                let rest = block_paths(rest, &self.fields);
                if rest.is_empty() {
                    return Err(error(format!(
                        "nothing of the {side} is left for the `_id` once `id_fields` are left out (id_fields_projection = \"block\")"
                    )));
                }
                Ok(Bson::Document(rest))
            }
        }
    }
}

/// `value` with `id` for its `_id`, in place of the old one or last, the other fields' bytes
/// copied as they are into a buffer of the final size.
fn with_id(value: &RawDocument, id: RawBsonRef<'_>) -> Result<RawDocumentBuf, RecordError> {
    let invalid = |e: bson::raw::Error| error(format!("the value is not valid BSON: {e}"));
    let bytes = value.as_bytes();
    // Where the old `_id` element is, else the end.
    let mut old = (bytes.len() - 1, bytes.len() - 1);
    for element in element_spans(value) {
        let (element, span) = element.map_err(invalid)?;
        if element.key() == "_id" {
            old = (span.start, span.end);
            break;
        }
    }
    let mut one = raw_with_capacity(64);
    one.append_ref("_id", id);
    let new = &one.as_bytes()[4..one.as_bytes().len() - 1];
    let mut out = Vec::with_capacity(bytes.len() - (old.1 - old.0) + new.len());
    out.extend_from_slice(&bytes[..old.0]);
    out.extend_from_slice(new);
    out.extend_from_slice(&bytes[old.1..]);
    let len = i32::try_from(out.len())
        .map_err(|_| error("the value with its new `_id` is too large for BSON"))?;
    out[..4].copy_from_slice(&len.to_le_bytes());
    RawDocumentBuf::from_bytes(out).map_err(invalid)
}

/// A raw value as a [`Bson`] (small values: ids, fields an id is made of).
pub fn raw_to_bson(value: bson::RawBsonRef<'_>) -> Result<Bson, RecordError> {
    Bson::try_from(value.to_raw_bson())
        .map_err(|e| error(format!("the value is not valid BSON: {e}")))
}

/// The UUID in `id` (the `_id` of the record's `side`) as binary subtype 4.
fn uuid_id(id: Option<&Bson>, side: &str, strategy: &str) -> Result<Bson, RecordError> {
    let uuid = match id {
        None | Some(Bson::Null) => {
            return Err(error(format!(
                "the {side} has no `_id` (id_strategy = \"{strategy}\")"
            )))
        }
        Some(Bson::Binary(b))
            if matches!(b.subtype, BinarySubtype::Uuid | BinarySubtype::UuidOld)
                && b.bytes.len() == 16 =>
        {
            return Ok(Bson::Binary(Binary {
                subtype: BinarySubtype::Uuid,
                bytes: b.bytes.clone(),
            }))
        }
        Some(Bson::String(text)) => parse_uuid(text),
        Some(_) => None,
    };
    match uuid {
        Some(uuid) => Ok(Bson::Binary(Binary {
            subtype: BinarySubtype::Uuid,
            bytes: uuid.bytes().to_vec(),
        })),
        None => Err(error(format!(
            "the {side}'s `_id` {} is not a UUID (id_strategy = \"{strategy}\")",
            id.map_or_else(String::new, ToString::to_string)
        ))),
    }
}

/// A UUID written with dashes (36 characters) or without (32 hex digits), as the connector
/// reads them (not braced, not as a URN).
fn parse_uuid(text: &str) -> Option<bson::Uuid> {
    match text.len() {
        32 | 36 => bson::Uuid::parse_str(text).ok(),
        _ => None,
    }
}

/// The `_id` a record's key identifies: the key's `_id` field, else the whole key.
pub fn key_id(record: &SinkRecord) -> Result<Bson, RecordError> {
    match &record.key {
        Some(Bson::Document(key)) => Ok(key
            .get("_id")
            .cloned()
            .unwrap_or_else(|| Bson::Document(key.clone()))),
        Some(Bson::Null) | None => Err(error("the record has no key to find the document by")),
        Some(other) => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;
    use proptest::prelude::*;

    fn assigner(extra: &str) -> IdAssigner {
        let text = format!("name = \"s\"\ntopics = [\"t\"]\ndatabase = \"db\"\n{extra}");
        let config: SinkConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        IdAssigner::new(&config)
    }

    fn record(key: Option<Bson>) -> SinkRecord {
        SinkRecord {
            topic: "t".into(),
            partition: 1,
            offset: 7,
            timestamp: None,
            key,
            value: None,
        }
    }

    fn id_of(extra: &str, key: Option<Bson>, mut value: Document) -> Result<Bson, RecordError> {
        assigner(extra).assign(&record(key), &mut value)?;
        Ok(value.get("_id").cloned().unwrap_or(Bson::Null))
    }

    #[test]
    fn every_strategy_sets_its_id() {
        let key = Some(Bson::Document(doc! {"_id": 5, "a": {"b": 1, "c": 2}}));
        assert!(matches!(
            id_of("", key.clone(), doc! {}),
            Ok(Bson::ObjectId(_))
        ));
        assert_eq!(
            id_of("id_strategy = \"kafka_meta\"", None, doc! {}).ok(),
            Some(Bson::String("t-1-7".into()))
        );
        assert_eq!(
            id_of("id_strategy = \"full_key\"", key.clone(), doc! {}).ok(),
            key.clone()
        );
        assert_eq!(
            id_of(
                "id_strategy = \"partial_key\"\nid_fields = [\"a.b\"]",
                key.clone(),
                doc! {}
            )
            .ok(),
            Some(Bson::Document(doc! {"a": {"b": 1}}))
        );
        assert_eq!(
            id_of(
                "id_strategy = \"partial_value\"\nid_fields = [\"sku\"]",
                None,
                doc! {"sku": "x", "q": 1}
            )
            .ok(),
            Some(Bson::Document(doc! {"sku": "x"}))
        );
        assert_eq!(
            id_of(
                "id_strategy = \"provided_in_key\"",
                key.clone(),
                doc! {"_id": 9}
            )
            .ok(),
            Some(Bson::Int32(5))
        );
        assert_eq!(
            id_of("id_strategy = \"provided_in_value\"", None, doc! {"_id": 9}).ok(),
            Some(Bson::Int32(9))
        );
        assert!(
            matches!(id_of("id_strategy = \"uuid\"", None, doc! {}), Ok(Bson::String(s)) if s.len() == 36)
        );
        assert!(matches!(
            id_of("id_strategy = \"uuid\"\nuuid_representation = \"binary\"", None, doc! {}),
            Ok(Bson::Binary(b)) if b.subtype == BinarySubtype::Uuid
        ));
    }

    #[test]
    fn an_existing_id_stays_unless_overwritten() {
        assert_eq!(
            id_of("id_strategy = \"kafka_meta\"", None, doc! {"_id": 1}).ok(),
            Some(Bson::Int32(1))
        );
        assert_eq!(
            id_of(
                "id_strategy = \"kafka_meta\"\nid_overwrite_existing = true",
                None,
                doc! {"_id": 1}
            )
            .ok(),
            Some(Bson::String("t-1-7".into()))
        );
    }

    #[test]
    fn missing_ids_are_named() {
        let err = id_of(
            "id_strategy = \"provided_in_key\"",
            Some(Bson::Document(doc! {"id": 1})),
            doc! {},
        )
        .expect_err("no _id");
        assert!(err.message.contains("`_id`"), "{err}");
        let err = id_of("id_strategy = \"provided_in_value\"", None, doc! {}).expect_err("no _id");
        assert!(err.message.contains("`_id`"), "{err}");
        let err = id_of(
            "id_strategy = \"partial_value\"\nid_fields = [\"a.x\"]",
            None,
            doc! {"a": {}},
        )
        .expect_err("missing");
        assert!(err.message.contains("`a.x`"), "{err}");
        let err = id_of("id_strategy = \"full_key\"", None, doc! {}).expect_err("no key");
        assert_eq!(err.stage, Stage::Id);
    }

    #[test]
    fn key_ids() {
        let r = |k| record(Some(k));
        assert_eq!(
            key_id(&r(Bson::Document(doc! {"_id": 3}))).ok(),
            Some(Bson::Int32(3))
        );
        assert_eq!(
            key_id(&r(Bson::Document(doc! {"a": 3}))).ok(),
            Some(Bson::Document(doc! {"a": 3}))
        );
        assert_eq!(
            key_id(&r(Bson::String("s".into()))).ok(),
            Some(Bson::String("s".into()))
        );
        assert!(key_id(&record(None)).is_err());
    }

    proptest! {
        #[test]
        fn kafka_meta_ids_are_unique_per_position(p1 in 0i32..4, o1 in 0i64..1000, p2 in 0i32..4, o2 in 0i64..1000) {
            let a = assigner("id_strategy = \"kafka_meta\"");
            let mut r = record(None);
            let (mut d1, mut d2) = (doc! {}, doc! {});
            r.partition = p1; r.offset = o1;
            a.assign(&r, &mut d1).expect("assigns");
            r.partition = p2; r.offset = o2;
            a.assign(&r, &mut d2).expect("assigns");
            prop_assert_eq!(d1.get("_id") == d2.get("_id"), (p1, o1) == (p2, o2));
        }

        #[test]
        fn assigning_changes_only_the_id(fields in proptest::collection::btree_map("[a-z]{1,6}", any::<i32>(), 0..8)) {
            let mut value = Document::new();
            for (k, v) in &fields { value.insert(k.clone(), *v); }
            value.remove("_id");
            let before = value.clone();
            assigner("id_strategy = \"uuid\"").assign(&record(None), &mut value).expect("assigns");
            value.remove("_id");
            prop_assert_eq!(value, before);
        }

        #[test]
        fn partial_ids_hold_exactly_the_chosen_fields(fields in proptest::collection::btree_map("[a-z]{1,6}", any::<i64>(), 1..8)) {
            let mut value = Document::new();
            for (k, v) in &fields { value.insert(k.clone(), *v); }
            let chosen: Vec<String> = fields.keys().step_by(2).cloned().collect();
            let a = IdAssigner { strategy: IdStrategy::PartialValue, fields: chosen.clone(), projection: IdProjection::Allow, overwrite: true, uuid: UuidRepresentation::String };
            a.assign(&record(None), &mut value).expect("assigns");
            let id = value.get_document("_id").expect("a document id");
            prop_assert_eq!(id.keys().cloned().collect::<Vec<_>>(), chosen);
        }
    }

    #[test]
    fn uuid_provided_strategies_store_the_given_uuid_as_binary() {
        let text = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
        let expected = Bson::Binary(Binary {
            subtype: BinarySubtype::Uuid,
            bytes: bson::Uuid::parse_str(text).expect("uuid").bytes().to_vec(),
        });
        let key = |id: Bson| Some(Bson::Document(doc! {"_id": id}));
        for given in [
            Bson::String(text.into()),
            Bson::String(text.replace('-', "")),
            expected.clone(),
        ] {
            assert_eq!(
                id_of(
                    "id_strategy = \"uuid_provided_in_key\"",
                    key(given.clone()),
                    doc! {"_id": 1}
                )
                .ok(),
                Some(expected.clone()),
                "key {given}"
            );
            assert_eq!(
                id_of(
                    "id_strategy = \"uuid_provided_in_value\"",
                    None,
                    doc! {"_id": given.clone()}
                )
                .ok(),
                Some(expected.clone()),
                "value {given}"
            );
        }
        for bad in [
            Bson::String("not-a-uuid".into()),
            Bson::String(format!("{{{text}}}")),
            Bson::String(text.replace('-', "_")),
            Bson::Int32(5),
            Bson::Null,
        ] {
            let err = id_of(
                "id_strategy = \"uuid_provided_in_value\"",
                None,
                doc! {"_id": bad.clone()},
            )
            .expect_err("not a uuid");
            assert_eq!(err.stage, Stage::Id);
            assert!(
                err.message.contains("uuid_provided_in_value"),
                "{bad}: {err}"
            );
        }
        let err = id_of(
            "id_strategy = \"uuid_provided_in_value\"",
            None,
            doc! {"v": 1},
        )
        .expect_err("no _id");
        assert!(err.message.contains("no `_id`"), "{err}");
        let err =
            id_of("id_strategy = \"uuid_provided_in_key\"", None, doc! {}).expect_err("no key");
        assert!(err.message.contains("no key"), "{err}");
    }

    #[test]
    fn partial_strategies_with_a_block_list_keep_everything_else() {
        let key = Some(Bson::Document(
            doc! {"_id": 5, "a": {"b": 1, "c": 2}, "d": 3},
        ));
        assert_eq!(
            id_of(
                "id_strategy = \"partial_key\"\nid_fields = [\"a.b\", \"d\"]\nid_fields_projection = \"block\"",
                key,
                doc! {}
            )
            .ok(),
            Some(Bson::Document(doc! {"a": {"c": 2}}))
        );
        assert_eq!(
            id_of(
                "id_strategy = \"partial_value\"\nid_fields = [\"qty\"]\nid_fields_projection = \"block\"\nid_overwrite_existing = true",
                None,
                doc! {"_id": 1, "sku": "x", "qty": 1}
            )
            .ok(),
            Some(Bson::Document(doc! {"sku": "x"}))
        );
        let err = id_of(
            "id_strategy = \"partial_value\"\nid_fields = [\"qty\"]\nid_fields_projection = \"block\"",
            None,
            doc! {"qty": 1},
        )
        .expect_err("nothing left");
        assert!(err.message.contains("nothing of the value"), "{err}");
    }
}
