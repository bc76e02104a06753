//! Write models: how a (post-processed) document becomes a write, as the MongoDB Kafka
//! Connector's `writemodel.strategy` does. A tombstone deletes the key's document with
//! `delete_on_null_values`, and writes nothing otherwise (counted as skipped).

use bson::{doc, DateTime, Document};

use super::id::key_id;
use super::model::{RecordError, SinkRecord, Stage, UpdateSpec, WriteOp};
use super::process::get_path;
use crate::config::{SinkConfig, WriteModelKind};

/// Builds the writes of one topic.
pub struct WriteModelBuilder {
    kind: WriteModelKind,
    business_key: Vec<String>,
    delete_on_null: bool,
}

fn error(message: impl Into<String>) -> RecordError {
    RecordError::new(Stage::WriteModel, message)
}

impl WriteModelBuilder {
    /// The builder `config` asks for.
    pub fn new(config: &SinkConfig) -> Self {
        Self {
            kind: config.write_model,
            business_key: config.business_key_fields.clone(),
            delete_on_null: config.delete_on_null_values,
        }
    }

    /// The write of `record`; `None` when it writes nothing.
    pub fn build(&self, record: &SinkRecord) -> Result<Option<WriteOp>, RecordError> {
        self.build_at(record, DateTime::now())
    }

    /// [`Self::build`] with `now` as the time of `update_one_timestamps`.
    pub fn build_at(
        &self,
        record: &SinkRecord,
        now: DateTime,
    ) -> Result<Option<WriteOp>, RecordError> {
        if self.kind == WriteModelKind::DeleteOne {
            return Ok(Some(WriteOp::Delete {
                filter: doc! {"_id": key_id(record)?},
            }));
        }
        let Some(value) = &record.value else {
            if !self.delete_on_null {
                return Ok(None);
            }
            return Ok(Some(WriteOp::Delete {
                filter: doc! {"_id": key_id(record)?},
            }));
        };
        let id = || {
            value
                .get("_id")
                .cloned()
                .ok_or_else(|| error("the document has no `_id`"))
        };
        let op = match self.kind {
            WriteModelKind::ReplaceOne => WriteOp::Replace {
                filter: doc! {"_id": id()?},
                replacement: value.clone(),
                upsert: true,
            },
            WriteModelKind::ReplaceBusinessKey => {
                let mut filter = Document::new();
                for path in &self.business_key {
                    let found = get_path(value, path).ok_or_else(|| {
                        error(format!("the document has no business key field `{path}`"))
                    })?;
                    filter.insert(path.clone(), found.clone());
                }
                let mut replacement = value.clone();
                replacement.remove("_id");
                WriteOp::Replace {
                    filter,
                    replacement,
                    upsert: true,
                }
            }
            WriteModelKind::UpdateOneTimestamps => {
                let mut set = value.clone();
                set.remove("_id");
                set.insert("_modifiedTS", now);
                WriteOp::Update {
                    filter: doc! {"_id": id()?},
                    update: UpdateSpec::Operators(
                        doc! {"$set": set, "$setOnInsert": {"_insertedTS": now}},
                    ),
                    upsert: true,
                }
            }
            WriteModelKind::InsertOne => {
                id()?;
                WriteOp::Insert(value.clone())
            }
            WriteModelKind::DeleteOne => WriteOp::Delete {
                filter: doc! {"_id": key_id(record)?},
            },
        };
        Ok(Some(op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::Bson;

    fn builder(extra: &str) -> WriteModelBuilder {
        let text = format!("name = \"s\"\ntopics = [\"t\"]\ndatabase = \"db\"\n{extra}");
        let config: SinkConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        WriteModelBuilder::new(&config)
    }

    fn record(key: Option<Document>, value: Option<Document>) -> SinkRecord {
        SinkRecord {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            timestamp: None,
            key: key.map(Bson::Document),
            value,
        }
    }

    #[test]
    fn each_model_builds_its_write() {
        let r = record(
            Some(doc! {"_id": 1}),
            Some(doc! {"_id": 1, "sku": "A", "q": 2}),
        );
        let now = DateTime::from_millis(5);
        assert_eq!(
            builder("").build_at(&r, now).expect("ok"),
            Some(WriteOp::Replace {
                filter: doc! {"_id": 1},
                replacement: doc! {"_id": 1, "sku": "A", "q": 2},
                upsert: true
            })
        );
        assert_eq!(
            builder("write_model = \"replace_business_key\"\nbusiness_key_fields = [\"sku\"]")
                .build_at(&r, now)
                .expect("ok"),
            Some(WriteOp::Replace {
                filter: doc! {"sku": "A"},
                replacement: doc! {"sku": "A", "q": 2},
                upsert: true
            })
        );
        assert_eq!(
            builder("write_model = \"update_one_timestamps\"")
                .build_at(&r, now)
                .expect("ok"),
            Some(WriteOp::Update {
                filter: doc! {"_id": 1},
                update: UpdateSpec::Operators(
                    doc! {"$set": {"sku": "A", "q": 2, "_modifiedTS": now}, "$setOnInsert": {"_insertedTS": now}}
                ),
                upsert: true
            })
        );
        assert_eq!(
            builder("write_model = \"insert_one\"")
                .build_at(&r, now)
                .expect("ok"),
            Some(WriteOp::Insert(doc! {"_id": 1, "sku": "A", "q": 2}))
        );
        assert_eq!(
            builder("write_model = \"delete_one\"")
                .build_at(&r, now)
                .expect("ok"),
            Some(WriteOp::Delete {
                filter: doc! {"_id": 1}
            })
        );
    }

    #[test]
    fn tombstones_delete_only_when_asked() {
        let r = record(Some(doc! {"_id": 4}), None);
        assert_eq!(builder("").build(&r).expect("ok"), None);
        assert_eq!(
            builder("delete_on_null_values = true")
                .build(&r)
                .expect("ok"),
            Some(WriteOp::Delete {
                filter: doc! {"_id": 4}
            })
        );
        let err = builder("delete_on_null_values = true")
            .build(&record(None, None))
            .expect_err("no key");
        assert_eq!(err.stage, Stage::Id);
    }

    #[test]
    fn missing_fields_are_named() {
        let r = record(None, Some(doc! {"q": 1}));
        assert!(builder("")
            .build(&r)
            .expect_err("no id")
            .message
            .contains("`_id`"));
        let err =
            builder("write_model = \"replace_business_key\"\nbusiness_key_fields = [\"sku\"]")
                .build(&r)
                .expect_err("no sku");
        assert!(err.message.contains("`sku`"), "{err}");
    }
}
