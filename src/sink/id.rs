//! Document id strategies: how the `_id` of a written document is chosen (the MongoDB Kafka
//! Connector's `document.id.strategy`). A value that already has an `_id` keeps it unless
//! `id_overwrite_existing` is set; `provided_in_key` and `uuid_provided_in_key` always take
//! the key's. The `uuid_provided_*` strategies read a UUID (hyphenated or 32 hex digits, or
//! binary subtype 4) and store it as binary subtype 4, as the connector does.

use bson::{
    oid::ObjectId, spec::BinarySubtype, Binary, Bson, Document, RawBson, RawBsonRef, RawDocument,
    RawDocumentBuf,
};

use super::model::{element_spans, id_document, RecordError, SinkRecord, Stage};
use super::paths::{
    allow_paths, allow_paths_raw, block_paths, get_path, has_wildcard, raw_allowable,
};
use crate::config::{IdProjection, IdStrategy, SinkConfig, UuidRepresentation};

/// Sets `_id` on values, per the topic's strategy.
pub struct IdAssigner {
    strategy: IdStrategy,
    fields: Vec<String>,
    projection: IdProjection,
    overwrite: bool,
    uuid: UuidRepresentation,
}

/// An `_id` element's head when its value is a document: its type, its name and the name's NUL.
const ID_HEAD: [u8; 5] = [
    bson::spec::ElementType::EmbeddedDocument as u8,
    b'_',
    b'i',
    b'd',
    0,
];

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
        if self.strategy == IdStrategy::PartialValue
            && self.projection == IdProjection::Allow
            && raw_allowable(&self.fields)
        {
            // `choose`'s rule for the strategies that make an id.
            if existing.is_some() && !self.overwrite {
                return Ok(value);
            }
            if let Some(id) = self.raw_partial(&value)? {
                return with_id_element(&value, &id);
            }
        }
        let chosen = self.choose(record, existing.as_ref(), || {
            self.partial(&self.partial_source(&value)?, "value")
        })?;
        let Some(id) = chosen else { return Ok(value) };
        let id = RawBson::try_from(id).map_err(|e| error(format!("the `_id` is not BSON: {e}")))?;
        with_id(&value, id.as_raw_bson_ref())
    }

    /// The `_id` element (type, name, document) `partial_value` with an allow list that
    /// [`raw_allowable`] takes makes of a raw value, written from its bytes: the document
    /// [`Self::partial`] makes of [`Self::partial_source`], with the same errors for missing
    /// fields. `None` when the value repeats a field name the list keeps (see
    /// [`allow_paths_raw`]); lists with wildcards are read as a [`Document`].
    fn raw_partial(&self, value: &RawDocument) -> Result<Option<Vec<u8>>, RecordError> {
        let invalid = |e: String| error(format!("the value is not valid BSON: {e}"));
        let mut id = Vec::with_capacity(64);
        id.extend_from_slice(&ID_HEAD);
        let mut found = vec![false; self.fields.len()];
        if !allow_paths_raw(value, &self.fields, &mut id, &mut found).map_err(invalid)? {
            return Ok(None);
        }
        // Every field must be found, as the projection found them once it found no name twice
        // (then the first field of a name is the one a `Document` keeps).
        for (field, found) in self.fields.iter().zip(found) {
            if !found {
                return Err(error(format!(
                    "the value has no field `{field}` (id_fields)"
                )));
            }
        }
        Ok(Some(id))
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

/// `value` with `id` for its `_id`, in place of the old one or last.
fn with_id(value: &RawDocument, id: RawBsonRef<'_>) -> Result<RawDocumentBuf, RecordError> {
    let one = id_document(id);
    with_id_element(value, &one.as_bytes()[4..one.as_bytes().len() - 1])
}

/// `value` with `new` (an `_id` element's bytes) in place of its `_id`, or last, the other
/// fields' bytes copied as they are into a buffer of the final size.
fn with_id_element(value: &RawDocument, new: &[u8]) -> Result<RawDocumentBuf, RecordError> {
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

    /// `assign_raw` for `partial_value` as it was before issue 24, the reference the raw `_id`
    /// is held to: the id built as a `Document` ([`IdAssigner::partial_source`], then
    /// [`IdAssigner::partial`]) and encoded.
    fn document_built(
        a: &IdAssigner,
        value: &RawDocumentBuf,
    ) -> Result<RawDocumentBuf, RecordError> {
        let existing = match value.get("_id") {
            Ok(Some(id)) => Some(raw_to_bson(id)?),
            Ok(None) => None,
            Err(e) => return Err(error(format!("the value is not valid BSON: {e}"))),
        };
        let chosen = a.choose(&record(None), existing.as_ref(), || {
            a.partial(&a.partial_source(value)?, "value")
        })?;
        let Some(id) = chosen else {
            return Ok(value.clone());
        };
        let id = RawBson::try_from(id).map_err(|e| error(format!("the `_id` is not BSON: {e}")))?;
        with_id(value, id.as_raw_bson_ref())
    }

    fn partial_value(fields: &[&str], overwrite: bool) -> IdAssigner {
        IdAssigner {
            strategy: IdStrategy::PartialValue,
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            projection: IdProjection::Allow,
            overwrite,
            uuid: UuidRepresentation::String,
        }
    }

    /// A value as a tree, built into raw BSON with what a `Document` does not hold as it is:
    /// a name twice, regular expression options out of order, array items keyed by names.
    #[derive(Debug, Clone)]
    enum Tree {
        Int(i32),
        Text(String),
        Regex(String, String),
        OldBinary(Vec<u8>),
        Doc(Vec<(String, Tree)>),
        Array(Vec<Tree>),
        /// An array whose items are keyed by these names, not 0, 1, ...
        NamedArray(Vec<(String, Tree)>),
        Code(Vec<(String, Tree)>),
    }

    impl Tree {
        fn raw(&self) -> RawBson {
            match self {
                Tree::Int(n) => RawBson::Int32(*n),
                Tree::Text(t) => RawBson::String(t.clone()),
                Tree::Regex(pattern, options) => RawBson::RegularExpression(bson::Regex {
                    pattern: pattern.clone(),
                    options: options.clone(),
                }),
                Tree::OldBinary(bytes) => RawBson::Binary(Binary {
                    subtype: BinarySubtype::BinaryOld,
                    bytes: bytes.clone(),
                }),
                Tree::Doc(fields) | Tree::NamedArray(fields) => RawBson::Document(raw_doc(fields)),
                Tree::Array(items) => {
                    let mut array = bson::RawArrayBuf::new();
                    for item in items {
                        array.push(item.raw());
                    }
                    RawBson::Array(array)
                }
                Tree::Code(scope) => {
                    RawBson::JavaScriptCodeWithScope(bson::RawJavaScriptCodeWithScope {
                        code: "f()".into(),
                        scope: raw_doc(scope),
                    })
                }
            }
        }

        /// Whether a name appears twice in one document anywhere in the tree.
        fn repeats_a_name(&self) -> bool {
            match self {
                Tree::Doc(fields) | Tree::NamedArray(fields) | Tree::Code(fields) => {
                    repeats(fields)
                }
                Tree::Array(items) => items.iter().any(Tree::repeats_a_name),
                _ => false,
            }
        }
    }

    fn repeats(fields: &[(String, Tree)]) -> bool {
        fields.iter().enumerate().any(|(i, (k, v))| {
            fields[..i].iter().any(|(other, _)| other == k) || v.repeats_a_name()
        })
    }

    /// The dotted paths to the fields of `fields` and of the documents in them.
    fn paths_in(fields: &[(String, Tree)], prefix: &str, out: &mut Vec<String>) {
        for (key, value) in fields {
            if key.is_empty() || key.contains('.') {
                continue;
            }
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if let Tree::Doc(inner) = value {
                paths_in(inner, &path, out);
            }
            out.push(path);
        }
    }

    fn raw_doc(fields: &[(String, Tree)]) -> RawDocumentBuf {
        let mut doc = RawDocumentBuf::new();
        let mut arrays = Vec::new();
        for (key, value) in fields {
            if matches!(value, Tree::NamedArray(_)) {
                // The element starts where the document's closing NUL is.
                arrays.push(doc.as_bytes().len() - 1);
            }
            doc.append(key, value.raw());
        }
        let mut bytes = doc.into_bytes();
        for at in arrays {
            bytes[at] = bson::spec::ElementType::Array as u8;
        }
        RawDocumentBuf::from_bytes(bytes).expect("a document")
    }

    fn name() -> impl Strategy<Value = String> + Clone {
        prop_oneof![
            6 => "[a-e]",
            1 => Just("_id".to_owned()),
            1 => Just("a.b".to_owned()),
            1 => Just(String::new()),
        ]
    }

    fn tree() -> impl Strategy<Value = Tree> {
        let leaf = prop_oneof![
            any::<i32>().prop_map(Tree::Int),
            "[a-z]{0,3}".prop_map(Tree::Text),
            ("[a-z]{0,2}", "[imsx]{0,3}").prop_map(|(p, o)| Tree::Regex(p, o)),
            proptest::collection::vec(any::<u8>(), 0..3).prop_map(Tree::OldBinary),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            let fields = proptest::collection::vec((name(), inner.clone()), 0..5);
            prop_oneof![
                4 => fields.clone().prop_map(Tree::Doc),
                3 => proptest::collection::vec(inner, 0..4).prop_map(Tree::Array),
                1 => fields.clone().prop_map(Tree::NamedArray),
                1 => fields.prop_map(Tree::Code),
            ]
        })
    }

    fn id_field() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            12 => "[a-e]",
            1 => Just("_id".to_owned()),
            1 => Just("*".to_owned()),
            1 => Just("a*".to_owned()),
            1 => Just("**".to_owned()),
            1 => Just(String::new()),
        ];
        proptest::collection::vec(segment, 1..4).prop_map(|s| s.join("."))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Issue 24: the `_id` written from the value's bytes is the one built as a `Document`,
        /// byte for byte, and so is every error.
        #[test]
        fn raw_partial_value_ids_are_the_document_built_ones(
            value in proptest::collection::vec((name(), tree()), 0..7),
            picks in proptest::collection::vec(any::<proptest::sample::Index>(), 0..4),
            others in proptest::collection::vec(id_field(), 0..3),
            overwrite in any::<bool>(),
        ) {
            // Mostly paths the value has (an id is made), some that it may not have.
            let mut present = Vec::new();
            paths_in(&value, "", &mut present);
            let mut fields: Vec<&str> = Vec::new();
            if !present.is_empty() {
                fields.extend(picks.iter().map(|i| present[i.index(present.len())].as_str()));
            }
            fields.extend(others.iter().map(String::as_str));
            if fields.is_empty() {
                fields.push("a");
            }
            let a = partial_value(&fields, overwrite);
            let raw = raw_doc(&value);
            let new = a.assign_raw(&record(None), raw.clone()).map(RawDocumentBuf::into_bytes);
            let old = document_built(&a, &raw).map(RawDocumentBuf::into_bytes);
            prop_assert_eq!(&new, &old);
            // Where the raw path takes the value, it does (not a silent fallback).
            if raw_allowable(&a.fields) && !repeats(&value) {
                prop_assert!(a.raw_partial(&raw).map_or(true, |id| id.is_some()));
            }
        }
    }

    #[test]
    fn raw_partial_value_ids_keep_the_values_order_nesting_and_errors() {
        let value = RawDocumentBuf::from_document(&doc! {
            "_id": 1,
            "tier": "gold",
            "customer": {"tier": 2, "name": "Ann", "note": "x", "a.b": 3, "a": {"b": 4, "c": 5}},
            "lines": [{"sku": "s", "qty": 1}, 5, [{"sku": "t", "qty": 2}], {"qty": 3}],
            "q": 9,
        })
        .expect("a document");
        let a = partial_value(
            &["customer.name", "lines", "customer.tier", "customer.a.b"],
            true,
        );
        assert!(matches!(a.raw_partial(&value), Ok(Some(_))));
        let written = a.assign_raw(&record(None), value.clone()).expect("assigns");
        assert_eq!(Some(written.clone()), document_built(&a, &value).ok());
        let written = Document::try_from(written).expect("a document");
        assert_eq!(
            written.get_document("_id").ok(),
            Some(&doc! {
                "customer": {"tier": 2, "name": "Ann", "a.b": 3, "a": {"b": 4}},
                "lines": [{}, 5, [{"sku": "t", "qty": 2}], {}],
            })
        );
        // Not overwritten: the value as it was.
        let kept = partial_value(&["q"], false)
            .assign_raw(&record(None), value.clone())
            .expect("assigns");
        assert_eq!(kept, value);
        // The first missing field in `id_fields` order is named, as before.
        for fields in [
            &["q", "customer.none", "none"][..],
            &["lines.sku"],
            &["q.x"],
        ] {
            let a = partial_value(fields, true);
            let err = a
                .assign_raw(&record(None), value.clone())
                .expect_err("missing");
            assert_eq!(Err(err.clone()), document_built(&a, &value), "{fields:?}");
            assert!(err.message.contains("has no field"), "{err}");
        }
        // A name twice, or a wildcard: read as a `Document`, with the same result.
        let mut twice = RawDocumentBuf::new();
        twice.append("q", 1);
        twice.append("q", 2);
        let a = partial_value(&["q"], true);
        assert!(matches!(a.raw_partial(&twice), Ok(None)));
        let written = a.assign_raw(&record(None), twice.clone()).expect("assigns");
        assert_eq!(Ok(written.clone()), document_built(&a, &twice));
        assert_eq!(
            written
                .get_document("_id")
                .ok()
                .map(|id| id.to_raw_document_buf()),
            RawDocumentBuf::from_document(&doc! {"q": 2}).ok()
        );
        assert!(!raw_allowable(&["customer.*".to_owned()]));
    }

    #[test]
    fn raw_partial_value_ids_of_more_than_64_fields_name_the_missing_one() {
        // 5 documents of 14 fields: 70 paths, no level keeping more than 16.
        let mut value = Document::new();
        let mut fields = Vec::new();
        for top in 0..5 {
            let mut inner = Document::new();
            for leaf in 0..14 {
                inner.insert(format!("f{leaf}"), top * 100 + leaf);
                fields.push(format!("d{top}.f{leaf}"));
            }
            value.insert(format!("d{top}"), inner);
        }
        let value = RawDocumentBuf::from_document(&value).expect("a document");
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        let a = partial_value(&fields, true);
        assert!(matches!(a.raw_partial(&value), Ok(Some(_))));
        let written = a.assign_raw(&record(None), value.clone()).expect("assigns");
        assert_eq!(Ok(written), document_built(&a, &value));
        // A missing field before the 64th, and past it.
        for missing in ["d0.none", "d4.none"] {
            let mut with = fields.clone();
            let at = if missing == "d0.none" { 3 } else { 68 };
            with.insert(at, missing);
            let a = partial_value(&with, true);
            let err = a
                .assign_raw(&record(None), value.clone())
                .expect_err("missing");
            assert_eq!(Err(err.clone()), document_built(&a, &value), "{missing}");
            assert!(err.message.contains(&format!("`{missing}`")), "{err}");
        }
    }
}
