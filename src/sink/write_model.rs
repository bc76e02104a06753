//! Write models: how one (post-processed) document becomes one write, as the MongoDB Kafka
//! Connector's `writemodel.strategy` does.
//!
//! When [`WriteModelBuilder::build`] runs, the value already has its `_id` (from
//! `id_strategy`) and has been projected, renamed and tagged. The models:
//!
//! - `replace_one` (default): replace the document with the value's `_id`, inserting it when
//!   missing. Redelivering a record writes the same document again: at-least-once is harmless.
//! - `replace_business_key`: replace the document whose `business_key_fields` equal the
//!   value's, inserting it when missing. The replacement leaves out `_id`, so a matched
//!   document keeps its own `_id` (the value's was generated and means nothing there).
//! - `update_one`: `$set` the value's fields (without `_id`) on the document with its `_id`,
//!   upserting.
//! - `update_one_timestamps`: as `update_one`; `_modifiedTS` is set on every write,
//!   `_insertedTS` on the first.
//! - `update_business_key_timestamps`: as `update_one_timestamps`, on the document whose
//!   `business_key_fields` equal the value's.
//! - `insert_one`: insert; a redelivered record is refused as a duplicate `_id`.
//! - `delete_one`: delete the document the record's key names; the value is ignored.
//! - `delete_business_key`: delete the document whose `business_key_fields` equal the value's.
//!
//! A tombstone (null value) deletes when `delete_on_null_values` is on, as
//! `delete_write_model` says: the document its key names (`delete_one`), or the one whose
//! `business_key_fields` equal the key's (`delete_tombstone_business_key`). When it is off the
//! tombstone is not an error: like the MongoDB Kafka Connector, which ignores tombstones
//! unless asked to delete, it writes nothing (`Ok(None)`) and the caller counts it as
//! skipped. Under `delete_one` every record deletes, tombstone or not.
//!
//! Every filter holds values, never query operators: a value that MongoDB would read as an
//! operator (a document with a `$` key) or as a pattern (a regex) is refused, so a crafted
//! record cannot make a delete or update match some other document.

use bson::spec::ElementType;
use bson::{doc, Bson, DateTime, Document, RawBson, RawBsonRef, RawDocument, RawDocumentBuf};

use super::id::{key_id, raw_to_bson};
use super::model::{
    element_spans, id_document, raw_with_capacity, RawWrite, RecordError, SinkRecord, Stage,
    UpdateSpec, WriteOp,
};
use super::paths::get_path;
use crate::config::{DeleteWriteModel, SinkConfig, WriteModelKind};

/// The field `update_one_timestamps` sets on each write.
pub const MODIFIED_FIELD: &str = "_modifiedTS";
/// The field `update_one_timestamps` sets when the write inserts the document.
pub const INSERTED_FIELD: &str = "_insertedTS";

/// Builds the writes of one topic.
#[derive(Debug, Clone)]
pub struct WriteModelBuilder {
    kind: WriteModelKind,
    business_key: Vec<String>,
    delete_on_null: bool,
    tombstone: DeleteWriteModel,
}

fn error(message: impl Into<String>) -> RecordError {
    RecordError::new(Stage::WriteModel, message)
}

impl WriteModelBuilder {
    /// The builder `config` asks for (`write_model`, `business_key_fields`,
    /// `delete_on_null_values`).
    pub fn new(config: &SinkConfig) -> Self {
        // A time-series collection takes inserts: the default model becomes `insert_one`, as
        // the connector's DefaultWriteModelStrategy does (validation refuses any other).
        let kind = match (config.write_model, &config.timeseries_time_field) {
            (WriteModelKind::ReplaceOne, Some(_)) => WriteModelKind::InsertOne,
            (kind, _) => kind,
        };
        Self {
            kind,
            business_key: config.business_key_fields.clone(),
            delete_on_null: config.delete_on_null_values,
            tombstone: config.delete_write_model,
        }
    }

    /// The write of `record`; `Ok(None)` when it writes nothing (a tombstone without
    /// `delete_on_null_values`).
    pub fn build(&self, record: &SinkRecord) -> Result<Option<WriteOp>, RecordError> {
        self.build_at(record, DateTime::now())
    }

    /// [`Self::build`], with `now` as the time `update_one_timestamps` writes.
    pub fn build_at(
        &self,
        record: &SinkRecord,
        now: DateTime,
    ) -> Result<Option<WriteOp>, RecordError> {
        if self.kind == WriteModelKind::DeleteOne {
            return self.delete_by_key(record).map(Some);
        }
        let Some(value) = &record.value else {
            if !self.delete_on_null {
                return Ok(None);
            }
            return match self.tombstone {
                DeleteWriteModel::DeleteOne => self.delete_by_key(record).map(Some),
                DeleteWriteModel::DeleteTombstoneBusinessKey => match &record.key {
                    Some(Bson::Document(key)) => Ok(Some(WriteOp::Delete {
                        filter: self.business_key_filter(key, "key")?,
                    })),
                    _ => Err(error(
                        "a tombstone deletes by the business key of its key (delete_write_model = \"delete_tombstone_business_key\"), but the key is not a document",
                    )),
                },
            };
        };
        let op = match self.kind {
            WriteModelKind::ReplaceOne => WriteOp::Replace {
                filter: id_filter(value_id(value)?)?,
                replacement: value.clone(),
                upsert: true,
            },
            WriteModelKind::ReplaceBusinessKey => WriteOp::Replace {
                filter: self.business_key_filter(value, "document")?,
                replacement: without_id(value),
                upsert: true,
            },
            WriteModelKind::UpdateOne => WriteOp::Update {
                filter: id_filter(value_id(value)?)?,
                update: UpdateSpec::Operators(doc! {"$set": without_id(value)}),
                upsert: true,
            },
            WriteModelKind::UpdateOneTimestamps => {
                timestamped_update(id_filter(value_id(value)?)?, value, now)
            }
            WriteModelKind::UpdateBusinessKeyTimestamps => {
                timestamped_update(self.business_key_filter(value, "document")?, value, now)
            }
            WriteModelKind::DeleteBusinessKey => WriteOp::Delete {
                filter: self.business_key_filter(value, "document")?,
            },
            WriteModelKind::InsertOne => {
                // Without an `_id` a redelivered record would be inserted twice.
                value_id(value)?;
                WriteOp::Insert(value.clone())
            }
            WriteModelKind::DeleteOne => return self.delete_by_key(record).map(Some),
        };
        Ok(Some(op))
    }

    /// [`Self::build_at`] for `record` whose value is `value`, in raw BSON with its `_id`
    /// set: `replace_one` and `insert_one` take the value as the statement's document as it
    /// is, `update_one` and `update_one_timestamps` copy its fields once into their `$set`.
    /// The business key models read the value as a [`Document`], here only.
    pub fn build_raw(
        &self,
        mut record: SinkRecord,
        value: RawDocumentBuf,
        now: DateTime,
    ) -> Result<Option<RawWrite>, RecordError> {
        let encode = |op: Option<WriteOp>| op.as_ref().map(RawWrite::encode).transpose();
        let write = match self.kind {
            WriteModelKind::DeleteOne => return encode(Some(self.delete_by_key(&record)?)),
            WriteModelKind::ReplaceOne => RawWrite::Replace {
                filter: raw_id_filter(&value)?,
                replacement: value,
                upsert: true,
            },
            WriteModelKind::InsertOne => {
                // Without an `_id` a redelivered record would be inserted twice. (An insert
                // has no filter: any `_id` is a value.)
                match value.get("_id") {
                    Ok(Some(_)) => RawWrite::Insert(value),
                    Ok(None) => return Err(error("the document has no `_id`")),
                    Err(e) => return Err(error(format!("the document is not valid BSON: {e}"))),
                }
            }
            WriteModelKind::UpdateOne => {
                let filter = raw_id_filter(&value)?;
                let set = without_raw(&value, &["_id"], None)?;
                let mut update = raw_with_capacity(set.as_bytes().len() + 16);
                update.append_ref("$set", &set);
                RawWrite::Update {
                    filter,
                    update: RawBson::Document(update),
                    upsert: true,
                }
            }
            WriteModelKind::UpdateOneTimestamps => {
                let filter = raw_id_filter(&value)?;
                let set = without_raw(&value, &["_id", INSERTED_FIELD], Some(now))?;
                let mut update = raw_with_capacity(set.as_bytes().len() + 64);
                update.append_ref("$set", &set);
                let mut inserted = RawDocumentBuf::new();
                inserted.append(INSERTED_FIELD, now);
                update.append("$setOnInsert", inserted);
                RawWrite::Update {
                    filter,
                    update: RawBson::Document(update),
                    upsert: true,
                }
            }
            WriteModelKind::ReplaceBusinessKey
            | WriteModelKind::UpdateBusinessKeyTimestamps
            | WriteModelKind::DeleteBusinessKey => {
                record.value = Some(
                    value
                        .to_document()
                        .map_err(|e| error(format!("the document is not valid BSON: {e}")))?,
                );
                return encode(self.build_at(&record, now)?);
            }
        };
        Ok(Some(write))
    }

    fn delete_by_key(&self, record: &SinkRecord) -> Result<WriteOp, RecordError> {
        // `key_id` reports as the id step; what failed here is building the delete.
        let id = key_id(record).map_err(|e| {
            error(format!(
                "a delete needs the document's `_id` from the record key: {}",
                e.message
            ))
        })?;
        Ok(WriteOp::Delete {
            filter: id_filter(id)?,
        })
    }

    /// The filter on `business_key_fields`, read from `source` (the value, or a tombstone's
    /// key), named `side` in errors.
    fn business_key_filter(&self, source: &Document, side: &str) -> Result<Document, RecordError> {
        if self.business_key.is_empty() {
            // Validation refuses this configuration; an empty filter would match any document.
            return Err(error(
                "a business key write model needs `business_key_fields`",
            ));
        }
        let mut filter = Document::new();
        for path in &self.business_key {
            let found = get_path(source, path).ok_or_else(|| {
                error(format!(
                    "the {side} has no business key field `{path}` (business_key_fields)"
                ))
            })?;
            literal(path, found)?;
            filter.insert(path.clone(), found.clone());
        }
        Ok(filter)
    }
}

/// `$set` the value's fields (without `_id`) with `_modifiedTS` on the document `filter`
/// finds, upserting, with `_insertedTS` set only by the write that inserts it.
fn timestamped_update(filter: Document, value: &Document, now: DateTime) -> WriteOp {
    let mut set = without_id(value);
    // `_insertedTS` belongs to `$setOnInsert`: naming it in `$set` too is a conflict MongoDB
    // refuses, and the first write's time must win.
    set.remove(INSERTED_FIELD);
    set.insert(MODIFIED_FIELD, now);
    WriteOp::Update {
        filter,
        update: UpdateSpec::Operators(doc! {"$set": set, "$setOnInsert": {INSERTED_FIELD: now}}),
        upsert: true,
    }
}

/// `{_id: <the value's _id>}`, refused as [`id_filter`] refuses it.
fn raw_id_filter(value: &RawDocument) -> Result<RawDocumentBuf, RecordError> {
    let id = match value.get("_id") {
        Ok(Some(id)) => id,
        Ok(None) => return Err(error("the document has no `_id`")),
        Err(e) => return Err(error(format!("the document is not valid BSON: {e}"))),
    };
    // Only a document with a `$` key or a regex can be refused, and only those are decoded
    // (for the refusal's words); other ids are taken as they are, a document's keys read
    // from its bytes.
    let suspect = match id {
        RawBsonRef::Document(doc) => doc
            .iter_elements()
            .any(|element| element.map_or(true, |element| element.key().starts_with('$'))),
        RawBsonRef::RegularExpression(_) => true,
        _ => false,
    };
    if suspect {
        literal("_id", &raw_to_bson(id)?)?;
    }
    Ok(id_document(id))
}

/// `value` without the fields `skip`, with `_modifiedTS` set to `modified` when given (in
/// its place when the value has it, else last: where [`Document::insert`] puts it). The
/// fields kept are copied as they are, byte for byte, into a buffer sized once.
fn without_raw(
    value: &RawDocument,
    skip: &[&str],
    modified: Option<DateTime>,
) -> Result<RawDocumentBuf, RecordError> {
    let invalid = |e: bson::raw::Error| error(format!("the document is not valid BSON: {e}"));
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + MODIFIED_FIELD.len() + 10);
    out.extend_from_slice(&[0; 4]);
    let date = |out: &mut Vec<u8>, now: DateTime| {
        out.push(ElementType::DateTime as u8);
        out.extend_from_slice(MODIFIED_FIELD.as_bytes());
        out.push(0);
        out.extend_from_slice(&now.timestamp_millis().to_le_bytes());
    };
    let mut stamped = false;
    for element in element_spans(value) {
        let (element, span) = element.map_err(invalid)?;
        let key = element.key();
        match modified {
            Some(now) if key == MODIFIED_FIELD => {
                date(&mut out, now);
                stamped = true;
            }
            _ if skip.contains(&key) => {}
            _ => out.extend_from_slice(
                bytes
                    .get(span)
                    .ok_or_else(|| error("the document is not valid BSON: a field past its end"))?,
            ),
        }
    }
    if let (Some(now), false) = (modified, stamped) {
        date(&mut out, now);
    }
    out.push(0);
    let len = i32::try_from(out.len()).map_err(|_| error("the document is too large for BSON"))?;
    out[..4].copy_from_slice(&len.to_le_bytes());
    RawDocumentBuf::from_bytes(out).map_err(invalid)
}

fn value_id(value: &Document) -> Result<Bson, RecordError> {
    value
        .get("_id")
        .cloned()
        .ok_or_else(|| error("the document has no `_id`"))
}

fn without_id(value: &Document) -> Document {
    let mut doc = value.clone();
    doc.remove("_id");
    doc
}

fn id_filter(id: Bson) -> Result<Document, RecordError> {
    literal("_id", &id)?;
    Ok(doc! {"_id": id})
}

/// Refuses a filter value MongoDB would not compare by equality.
fn literal(field: &str, value: &Bson) -> Result<(), RecordError> {
    match value {
        Bson::Document(d) => match d.keys().find(|k| k.starts_with('$')) {
            Some(key) => Err(error(format!(
                "`{field}` is {value}: its key `{key}` would be read as a query operator, not a value"
            ))),
            None => Ok(()),
        },
        Bson::RegularExpression(_) => Err(error(format!(
            "`{field}` is the regex {value}: a filter would match it as a pattern, not a value"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: DateTime = DateTime::from_millis(1_700_000_000_000);

    fn builder(extra: &str) -> WriteModelBuilder {
        let text = format!("name = \"s\"\ntopics = [\"t\"]\ndatabase = \"db\"\n{extra}");
        let config: SinkConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        WriteModelBuilder::new(&config)
    }

    fn record(key: Option<Bson>, value: Option<Document>) -> SinkRecord {
        SinkRecord {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            timestamp: None,
            key,
            value,
        }
    }

    fn keyed(value: Option<Document>) -> SinkRecord {
        record(Some(Bson::Document(doc! {"_id": 1})), value)
    }

    fn build(extra: &str, r: &SinkRecord) -> Result<Option<WriteOp>, RecordError> {
        builder(extra).build_at(r, NOW)
    }

    fn value() -> Document {
        doc! {"_id": 1, "sku": "A", "q": 2, "dims": {"w": 3}}
    }

    #[test]
    fn replace_one_upserts_the_value_by_its_id() {
        assert_eq!(
            build("", &keyed(Some(value()))).expect("ok"),
            Some(WriteOp::Replace {
                filter: doc! {"_id": 1},
                replacement: value(),
                upsert: true
            })
        );
        // The key plays no part: the value's `_id` names the document.
        assert_eq!(
            build("", &record(None, Some(value())))
                .expect("ok")
                .and_then(|op| op.document_id().cloned()),
            Some(Bson::Int32(1))
        );
    }

    #[test]
    fn replace_one_needs_an_id() {
        let err = build("", &keyed(Some(doc! {"q": 1}))).expect_err("no _id");
        assert_eq!(err.stage, Stage::WriteModel);
        assert!(err.message.contains("`_id`"), "{err}");
    }

    #[test]
    fn replace_business_key_filters_on_the_key_fields_and_keeps_the_existing_id() {
        let op = build(
            "write_model = \"replace_business_key\"\nbusiness_key_fields = [\"sku\", \"dims.w\"]",
            &keyed(Some(value())),
        )
        .expect("ok");
        let Some(WriteOp::Replace {
            filter,
            replacement,
            upsert,
        }) = op
        else {
            panic!("not a replace: {op:?}");
        };
        assert_eq!(filter, doc! {"sku": "A", "dims.w": 3});
        assert_eq!(
            filter.keys().collect::<Vec<_>>(),
            ["sku", "dims.w"],
            "in the configured order"
        );
        assert_eq!(replacement, doc! {"sku": "A", "q": 2, "dims": {"w": 3}});
        assert!(!replacement.contains_key("_id"));
        assert!(upsert);
    }

    #[test]
    fn replace_business_key_names_the_missing_field() {
        let err = build(
            "write_model = \"replace_business_key\"\nbusiness_key_fields = [\"sku\", \"dims.h\"]",
            &keyed(Some(value())),
        )
        .expect_err("no dims.h");
        assert_eq!(err.stage, Stage::WriteModel);
        assert!(err.message.contains("`dims.h`"), "{err}");
        // An explicit null is a value (it matches null and missing fields, as in MongoDB).
        let op = build(
            "write_model = \"replace_business_key\"\nbusiness_key_fields = [\"sku\"]",
            &keyed(Some(doc! {"_id": 1, "sku": Bson::Null})),
        )
        .expect("null is a value");
        assert_eq!(
            op.and_then(|o| o.filter().cloned()),
            Some(doc! {"sku": Bson::Null})
        );
    }

    #[test]
    fn replace_business_key_without_fields_is_refused_not_an_empty_filter() {
        let config: SinkConfig = toml::from_str(
            "name = \"s\"\ntopics = [\"t\"]\ndatabase = \"db\"\nwrite_model = \"replace_business_key\"",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let err = WriteModelBuilder::new(&config)
            .build_at(&keyed(Some(value())), NOW)
            .expect_err("empty filter");
        assert!(err.message.contains("business_key_fields"), "{err}");
    }

    #[test]
    fn update_one_timestamps_sets_fields_and_stamps_times() {
        let op = build(
            "write_model = \"update_one_timestamps\"",
            &keyed(Some(value())),
        )
        .expect("ok");
        assert_eq!(
            op,
            Some(WriteOp::Update {
                filter: doc! {"_id": 1},
                update: UpdateSpec::Operators(doc! {
                    "$set": {"sku": "A", "q": 2, "dims": {"w": 3}, "_modifiedTS": NOW},
                    "$setOnInsert": {"_insertedTS": NOW},
                }),
                upsert: true
            })
        );
    }

    #[test]
    fn update_one_timestamps_never_sets_the_insert_time_twice() {
        // A value that already carries both stamps (say, copied from a collection written
        // this way): `_insertedTS` stays the first write's, `_modifiedTS` is this write's.
        let old = DateTime::from_millis(5);
        let op = build(
            "write_model = \"update_one_timestamps\"",
            &keyed(Some(
                doc! {"_id": 1, "n": 1, "_insertedTS": old, "_modifiedTS": old},
            )),
        )
        .expect("ok");
        let Some(WriteOp::Update {
            update: UpdateSpec::Operators(update),
            ..
        }) = op
        else {
            panic!("not an update: {op:?}");
        };
        assert_eq!(
            update,
            doc! {"$set": {"n": 1, "_modifiedTS": NOW}, "$setOnInsert": {"_insertedTS": NOW}}
        );
    }

    #[test]
    fn update_one_timestamps_needs_an_id() {
        let err = build(
            "write_model = \"update_one_timestamps\"",
            &keyed(Some(doc! {"n": 1})),
        )
        .expect_err("no _id");
        assert!(err.message.contains("`_id`"), "{err}");
    }

    #[test]
    fn build_uses_the_clock() {
        let before = DateTime::now();
        let op = builder("write_model = \"update_one_timestamps\"")
            .build(&keyed(Some(value())))
            .expect("ok");
        let after = DateTime::now();
        let Some(WriteOp::Update {
            update: UpdateSpec::Operators(update),
            ..
        }) = op
        else {
            panic!("not an update: {op:?}");
        };
        let stamped = update
            .get_document("$set")
            .and_then(|s| s.get_datetime(MODIFIED_FIELD))
            .expect("stamped");
        assert!(before <= *stamped && *stamped <= after);
    }

    #[test]
    fn insert_one_inserts_the_value() {
        assert_eq!(
            build("write_model = \"insert_one\"", &keyed(Some(value()))).expect("ok"),
            Some(WriteOp::Insert(value()))
        );
        let err =
            build("write_model = \"insert_one\"", &keyed(Some(doc! {"n": 1}))).expect_err("no _id");
        assert!(err.message.contains("`_id`"), "{err}");
    }

    #[test]
    fn delete_one_deletes_by_the_key_whatever_the_value() {
        let delete = Some(WriteOp::Delete {
            filter: doc! {"_id": 1},
        });
        let extra = "write_model = \"delete_one\"";
        assert_eq!(build(extra, &keyed(Some(value()))).expect("ok"), delete);
        assert_eq!(
            build(extra, &keyed(Some(doc! {"_id": 99}))).expect("ok"),
            delete
        );
        assert_eq!(build(extra, &keyed(None)).expect("tombstone"), delete);
        // A key without `_id` is the `_id` itself; a scalar key too.
        assert_eq!(
            build(extra, &record(Some(Bson::Document(doc! {"a": 1})), None)).expect("ok"),
            Some(WriteOp::Delete {
                filter: doc! {"_id": {"a": 1}}
            })
        );
        assert_eq!(
            build(extra, &record(Some(Bson::String("k".into())), None)).expect("ok"),
            Some(WriteOp::Delete {
                filter: doc! {"_id": "k"}
            })
        );
        let err = build(extra, &record(None, Some(value()))).expect_err("no key");
        assert_eq!(err.stage, Stage::WriteModel);
        assert!(err.message.contains("key"), "{err}");
    }

    #[test]
    fn tombstones_delete_only_with_delete_on_null_values() {
        assert_eq!(build("", &keyed(None)).expect("skipped"), None);
        for model in [
            "write_model = \"replace_one\"",
            "write_model = \"update_one_timestamps\"",
            "write_model = \"insert_one\"",
            "write_model = \"replace_business_key\"\nbusiness_key_fields = [\"sku\"]",
        ] {
            let deleting = format!("{model}\ndelete_on_null_values = true");
            assert_eq!(
                build(&deleting, &keyed(None)).expect("ok"),
                Some(WriteOp::Delete {
                    filter: doc! {"_id": 1}
                }),
                "{model}"
            );
            assert_eq!(build(model, &keyed(None)).expect("ok"), None, "{model}");
        }
        let err = build("delete_on_null_values = true", &record(None, None)).expect_err("no key");
        assert_eq!(err.stage, Stage::WriteModel);
        assert!(err.message.contains("record key"), "{err}");
        let err = build(
            "delete_on_null_values = true",
            &record(Some(Bson::Null), None),
        )
        .expect_err("null key");
        assert!(err.message.contains("key"), "{err}");
    }

    #[test]
    fn filters_refuse_values_that_are_not_plain_values() {
        let operator = doc! {"$ne": Bson::Null};
        let regex = Bson::RegularExpression(bson::Regex {
            pattern: ".*".into(),
            options: String::new(),
        });
        // From the key: a delete must not match whatever `$ne: null` matches.
        let err = build(
            "write_model = \"delete_one\"",
            &record(Some(Bson::Document(doc! {"_id": operator.clone()})), None),
        )
        .expect_err("operator in key");
        assert!(err.message.contains("`$ne`"), "{err}");
        let err = build(
            "delete_on_null_values = true",
            &record(Some(regex.clone()), None),
        )
        .expect_err("regex key");
        assert!(err.message.contains("regex"), "{err}");
        // From the value.
        for extra in ["", "write_model = \"update_one_timestamps\""] {
            let err = build(extra, &keyed(Some(doc! {"_id": operator.clone(), "n": 1})))
                .expect_err("operator in _id");
            assert!(err.message.contains("`_id`"), "{extra}: {err}");
        }
        let err = build(
            "write_model = \"replace_business_key\"\nbusiness_key_fields = [\"sku\"]",
            &keyed(Some(doc! {"_id": 1, "sku": regex})),
        )
        .expect_err("regex business key");
        assert!(err.message.contains("`sku`"), "{err}");
        // Documents without `$` keys are values.
        assert!(build("", &keyed(Some(doc! {"_id": {"a": {"b": 1}}}))).is_ok());
    }

    #[test]
    fn update_one_sets_the_fields_on_the_document_with_the_id() {
        assert_eq!(
            build("write_model = \"update_one\"", &keyed(Some(value()))).expect("ok"),
            Some(WriteOp::Update {
                filter: doc! {"_id": 1},
                update: UpdateSpec::Operators(
                    doc! {"$set": {"sku": "A", "q": 2, "dims": {"w": 3}}}
                ),
                upsert: true,
            })
        );
        let err =
            build("write_model = \"update_one\"", &keyed(Some(doc! {"q": 1}))).expect_err("no _id");
        assert!(err.message.contains("`_id`"), "{err}");
    }

    #[test]
    fn update_business_key_timestamps_finds_the_document_by_its_business_key() {
        let op = build(
            "write_model = \"update_business_key_timestamps\"\nbusiness_key_fields = [\"sku\", \"dims.w\"]",
            &keyed(Some(value())),
        )
        .expect("ok");
        assert_eq!(
            op,
            Some(WriteOp::Update {
                filter: doc! {"sku": "A", "dims.w": 3},
                update: UpdateSpec::Operators(doc! {
                    "$set": {"sku": "A", "q": 2, "dims": {"w": 3}, MODIFIED_FIELD: NOW},
                    "$setOnInsert": {INSERTED_FIELD: NOW},
                }),
                upsert: true,
            })
        );
        let err = build(
            "write_model = \"update_business_key_timestamps\"\nbusiness_key_fields = [\"color\"]",
            &keyed(Some(value())),
        )
        .expect_err("no such field");
        assert!(err.message.contains("`color`"), "{err}");
    }

    #[test]
    fn delete_business_key_deletes_the_document_matching_the_values_key_fields() {
        assert_eq!(
            build(
                "write_model = \"delete_business_key\"\nbusiness_key_fields = [\"sku\"]",
                &keyed(Some(value()))
            )
            .expect("ok"),
            Some(WriteOp::Delete {
                filter: doc! {"sku": "A"}
            })
        );
        // A filter value that is an operator is refused, never run.
        let err = build(
            "write_model = \"delete_business_key\"\nbusiness_key_fields = [\"sku\"]",
            &keyed(Some(doc! {"sku": {"$exists": true}})),
        )
        .expect_err("operator");
        assert!(err.message.contains("`$exists`"), "{err}");
    }

    #[test]
    fn tombstones_delete_as_the_delete_write_model_says() {
        let tombstone = record(Some(Bson::Document(doc! {"_id": 7, "sku": "A"})), None);
        assert_eq!(
            build("delete_on_null_values = true", &tombstone).expect("ok"),
            Some(WriteOp::Delete {
                filter: doc! {"_id": 7}
            })
        );
        let by_business_key = "write_model = \"replace_business_key\"\nbusiness_key_fields = [\"sku\"]\ndelete_on_null_values = true\ndelete_write_model = \"delete_tombstone_business_key\"";
        assert_eq!(
            build(by_business_key, &tombstone).expect("ok"),
            Some(WriteOp::Delete {
                filter: doc! {"sku": "A"}
            })
        );
        // Records with values still follow `write_model`.
        assert!(matches!(
            build(by_business_key, &keyed(Some(value()))),
            Ok(Some(WriteOp::Replace { .. }))
        ));
        let err = build(
            by_business_key,
            &record(Some(Bson::Document(doc! {"_id": 7})), None),
        )
        .expect_err("no sku in the key");
        assert!(
            err.message
                .contains("the key has no business key field `sku`"),
            "{err}"
        );
        let err = build(
            by_business_key,
            &record(Some(Bson::String("k".into())), None),
        )
        .expect_err("not a document");
        assert!(err.message.contains("not a document"), "{err}");
        // Without `delete_on_null_values` a tombstone writes nothing, whatever the model.
        assert_eq!(
            build(
                "write_model = \"replace_business_key\"\nbusiness_key_fields = [\"sku\"]",
                &tombstone
            )
            .expect("ok"),
            None
        );
    }

    #[test]
    fn a_time_series_collection_takes_inserts_by_default() {
        assert_eq!(
            build("timeseries_time_field = \"ts\"", &keyed(Some(value()))).expect("ok"),
            Some(WriteOp::Insert(value()))
        );
    }
}
