//! CDC replay: change events become the writes that reproduce them.
//!
//! - `mongodb`: MongoDB change events, as our source pipeline (and the MongoDB Kafka
//!   Connector) publish them. Inserts and replaces upsert the full document, so a redelivered
//!   event is harmless; updates apply `updateDescription` (`$set`/`$unset`, or a pipeline when
//!   arrays were truncated), or replace with the looked-up `fullDocument`; deletes delete by
//!   `documentKey`. `drop`, `rename`, `dropDatabase` and `invalidate` write nothing.
//! - `debezium_mongodb`: Debezium MongoDB envelopes (`op` c/r/u/d, `after` and `patch` or
//!   `updateDescription`, as JSON strings or documents; a `payload` wrapper is unwrapped).
//! - `debezium_rdbms`: Debezium relational envelopes (MySQL, PostgreSQL): the key's fields are
//!   the `_id`; c/r/u upsert `after`, d deletes, t (truncate) writes nothing.
//! - `qlik_rdbms`: Qlik Replicate messages, as the connector's Qlik `RdbmsHandler`
//!   ([`qlik`]).
//!
//! A tombstone (the null record Debezium and `tombstone_on_delete` send after a delete)
//! writes nothing.

mod qlik;

use bson::{doc, Bson, Document};

use super::model::{RecordError, SinkRecord, Stage, UpdateSpec, WriteOp};
use super::process::remove_nulls;
use crate::config::{CdcHandler, SinkConfig};

/// Replays the change events of one topic.
pub struct CdcReplayer {
    handler: CdcHandler,
    /// `cdc_remove_null_values`.
    remove_nulls: bool,
}

fn error(message: impl Into<String>) -> RecordError {
    RecordError::new(Stage::Cdc, message)
}

impl CdcReplayer {
    /// The replayer `config` asks for.
    pub fn new(config: &SinkConfig) -> Self {
        Self {
            handler: config.cdc_handler,
            remove_nulls: config.cdc_remove_null_values,
        }
    }

    /// The write `record`'s event stands for; `None` for events without a document effect.
    pub fn replay(&self, record: &SinkRecord) -> Result<Option<WriteOp>, RecordError> {
        let Some(value) = &record.value else {
            return Ok(None);
        };
        let op = match self.handler {
            CdcHandler::None => Ok(None),
            CdcHandler::Mongodb => mongodb_event(value),
            CdcHandler::DebeziumMongodb => debezium_mongodb(unwrap(value), record),
            CdcHandler::DebeziumRdbms => debezium_rdbms(unwrap(value), record),
            CdcHandler::QlikRdbms => qlik::replay(unwrap(value), record),
        }?;
        Ok(if self.remove_nulls {
            op.and_then(without_null_values)
        } else {
            op
        })
    }
}

/// `op` without null values, as the connector's `CdcNullFieldValueRemover`: a replacement
/// (or insert) loses its null fields, an update the null fields of its `$set` (a `$set` left
/// empty goes; `$unset` and pipeline updates stay); `None` when nothing is left to write.
pub fn without_null_values(op: WriteOp) -> Option<WriteOp> {
    match op {
        WriteOp::Insert(mut doc) => {
            remove_nulls(&mut doc);
            (!doc.is_empty()).then_some(WriteOp::Insert(doc))
        }
        WriteOp::Replace {
            filter,
            mut replacement,
            upsert,
        } => {
            remove_nulls(&mut replacement);
            (!replacement.is_empty()).then_some(WriteOp::Replace {
                filter,
                replacement,
                upsert,
            })
        }
        WriteOp::Update {
            filter,
            update: UpdateSpec::Operators(mut ops),
            upsert,
        } => {
            if let Ok(set) = ops.get_document_mut("$set") {
                remove_nulls(set);
                if set.is_empty() {
                    ops.remove("$set");
                }
            }
            (!ops.is_empty()).then_some(WriteOp::Update {
                filter,
                update: UpdateSpec::Operators(ops),
                upsert,
            })
        }
        other => Some(other),
    }
}

fn unwrap(value: &Document) -> &Document {
    match value.get("payload") {
        Some(Bson::Document(payload)) if value.contains_key("schema") => payload,
        _ => value,
    }
}

fn document<'a>(event: &'a Document, field: &str, op: &str) -> Result<&'a Document, RecordError> {
    match event.get(field) {
        Some(Bson::Document(d)) => Ok(d),
        Some(other) => Err(error(format!(
            "`{field}` of a `{op}` event is {other}, not a document"
        ))),
        None => Err(error(format!("a `{op}` event has no `{field}`"))),
    }
}

fn upsert(filter: Document, replacement: Document) -> WriteOp {
    WriteOp::Replace {
        filter,
        replacement,
        upsert: true,
    }
}

fn mongodb_event(event: &Document) -> Result<Option<WriteOp>, RecordError> {
    let op = event
        .get_str("operationType")
        .map_err(|_| error("the event has no string `operationType`"))?;
    match op {
        "insert" | "replace" => {
            let key = document(event, "documentKey", op)?;
            let full = document(event, "fullDocument", op)?;
            Ok(Some(upsert(key.clone(), full.clone())))
        }
        "update" => {
            let key = document(event, "documentKey", op)?;
            match event.get("updateDescription") {
                Some(Bson::Document(description)) => update_from_description(key, description, op),
                _ => match event.get("fullDocument") {
                    Some(Bson::Document(full)) => Ok(Some(upsert(key.clone(), full.clone()))),
                    _ => Err(error(
                        "an `update` event has neither `updateDescription` nor `fullDocument`",
                    )),
                },
            }
        }
        "delete" => Ok(Some(WriteOp::Delete {
            filter: document(event, "documentKey", op)?.clone(),
        })),
        "drop" | "rename" | "dropDatabase" | "invalidate" => Ok(None),
        other => Err(error(format!("unknown operationType `{other}`"))),
    }
}

/// `$set`/`$unset` from an `updateDescription`; a pipeline when arrays were truncated.
fn update_from_description(
    filter: &Document,
    description: &Document,
    op: &str,
) -> Result<Option<WriteOp>, RecordError> {
    let updated = match description.get("updatedFields") {
        Some(Bson::Document(d)) => d.clone(),
        None | Some(Bson::Null) => Document::new(),
        Some(other) => {
            return Err(error(format!(
                "`updateDescription.updatedFields` of an `{op}` event is {other}"
            )))
        }
    };
    let removed: Vec<String> = match description.get("removedFields") {
        Some(Bson::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| error("`removedFields` holds a non-string"))
            })
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    let truncated: Vec<(String, i64)> = match description.get("truncatedArrays") {
        Some(Bson::Array(items)) => items
            .iter()
            .map(|i| {
                let d = i
                    .as_document()
                    .ok_or_else(|| error("`truncatedArrays` holds a non-document"))?;
                let field = d
                    .get_str("field")
                    .map_err(|_| error("`truncatedArrays` entry without `field`"))?;
                let size = match d.get("newSize") {
                    Some(Bson::Int32(n)) => i64::from(*n),
                    Some(Bson::Int64(n)) => *n,
                    _ => return Err(error("`truncatedArrays` entry without integer `newSize`")),
                };
                Ok((field.to_owned(), size))
            })
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    if updated.is_empty() && removed.is_empty() && truncated.is_empty() {
        return Ok(None);
    }
    // A truncation is `$push` of nothing with `$slice`, unless another change touches the
    // same array (operators may not overlap): then an update pipeline says it.
    let overlaps = |field: &str| {
        updated.keys().chain(removed.iter()).any(|p| {
            p == field || p.starts_with(&format!("{field}.")) || field.starts_with(&format!("{p}."))
        })
    };
    let update = if truncated.iter().all(|(f, _)| !overlaps(f)) {
        let mut ops = Document::new();
        if !truncated.is_empty() {
            let push: Document = truncated
                .iter()
                .map(|(f, n)| (f.clone(), Bson::Document(doc! {"$each": [], "$slice": *n})))
                .collect();
            ops.insert("$push", push);
        }
        if !updated.is_empty() {
            ops.insert("$set", updated);
        }
        if !removed.is_empty() {
            let unset: Document = removed
                .into_iter()
                .map(|f| (f, Bson::String(String::new())))
                .collect();
            ops.insert("$unset", unset);
        }
        UpdateSpec::Operators(ops)
    } else {
        let mut stages = Vec::new();
        let slices: Document = truncated
            .into_iter()
            .map(|(f, n)| {
                (
                    f.clone(),
                    Bson::Document(doc! {"$slice": [format!("${f}"), n]}),
                )
            })
            .collect();
        stages.push(doc! {"$set": slices});
        if !updated.is_empty() {
            let literal: Document = updated
                .into_iter()
                .map(|(k, v)| (k, Bson::Document(doc! {"$literal": v})))
                .collect();
            stages.push(doc! {"$set": literal});
        }
        if !removed.is_empty() {
            stages.push(doc! {"$unset": removed});
        }
        UpdateSpec::Pipeline(stages)
    };
    Ok(Some(WriteOp::Update {
        filter: filter.clone(),
        update,
        upsert: false,
    }))
}

/// A document field that may be a document or a JSON string of one (Debezium's habit).
fn embedded(event: &Document, field: &str) -> Result<Option<Document>, RecordError> {
    match event.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Document(d)) => Ok(Some(d.clone())),
        Some(Bson::String(text)) => {
            let json: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| error(format!("`{field}` is not JSON: {e}")))?;
            match Bson::try_from(json) {
                Ok(Bson::Document(d)) => Ok(Some(d)),
                _ => Err(error(format!("`{field}` is not a JSON object"))),
            }
        }
        Some(other) => Err(error(format!("`{field}` is {other}, not a document"))),
    }
}

fn debezium_op(event: &Document) -> Result<&str, RecordError> {
    event
        .get_str("op")
        .map_err(|_| error("the envelope has no string `op`"))
}

/// The `_id` of a Debezium MongoDB record: the key's `id` (an extended JSON string), else
/// `after._id`.
fn debezium_mongodb_id(record: &SinkRecord, after: Option<&Document>) -> Result<Bson, RecordError> {
    let key = match &record.key {
        Some(Bson::Document(k)) => match k.get("payload") {
            Some(Bson::Document(p)) => Some(p.clone()),
            _ => Some(k.clone()),
        },
        _ => None,
    };
    if let Some(id) = key.as_ref().and_then(|k| k.get("id")) {
        return match id {
            Bson::String(text) => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(json) => Bson::try_from(json)
                    .map_err(|e| error(format!("key `id` is not extended JSON: {e}"))),
                Err(_) => Ok(Bson::String(text.clone())),
            },
            other => Ok(other.clone()),
        };
    }
    after
        .and_then(|a| a.get("_id").cloned())
        .ok_or_else(|| error("neither the key's `id` nor `after._id` names the document"))
}

fn debezium_mongodb(event: &Document, record: &SinkRecord) -> Result<Option<WriteOp>, RecordError> {
    let op = debezium_op(event)?;
    let after = embedded(event, "after")?;
    match op {
        "c" | "r" => {
            let after = after.ok_or_else(|| error(format!("a `{op}` envelope has no `after`")))?;
            let id = debezium_mongodb_id(record, Some(&after))?;
            Ok(Some(upsert(doc! {"_id": id}, after)))
        }
        "u" => {
            let id = debezium_mongodb_id(record, after.as_ref())?;
            if let Some(after) = after {
                return Ok(Some(upsert(doc! {"_id": id}, after)));
            }
            if let Some(description) = embedded(event, "updateDescription")? {
                let mut description = description;
                if let Some(fields) = embedded(&description, "updatedFields")? {
                    description.insert("updatedFields", fields);
                }
                return update_from_description(&doc! {"_id": id}, &description, "u");
            }
            match embedded(event, "patch")? {
                Some(patch) if patch.keys().any(|k| k.starts_with('$')) => {
                    let mut patch = patch;
                    // Debezium 1.x patches may carry `$v`, which is not an operator.
                    patch.remove("$v");
                    Ok(Some(WriteOp::Update {
                        filter: doc! {"_id": id},
                        update: UpdateSpec::Operators(patch),
                        upsert: false,
                    }))
                }
                Some(full) => Ok(Some(upsert(doc! {"_id": id}, full))),
                None => Err(error(
                    "a `u` envelope has no `after`, `updateDescription` or `patch`",
                )),
            }
        }
        "d" => Ok(Some(WriteOp::Delete {
            filter: doc! {"_id": debezium_mongodb_id(record, None)?},
        })),
        "t" | "m" => Ok(None),
        other => Err(error(format!("unknown Debezium `op` `{other}`"))),
    }
}

fn debezium_rdbms(event: &Document, record: &SinkRecord) -> Result<Option<WriteOp>, RecordError> {
    let op = debezium_op(event)?;
    let key = match &record.key {
        Some(Bson::Document(k)) => unwrap(k).clone(),
        Some(other) => {
            return Err(error(format!(
                "the key is {other}, not the row's key fields"
            )))
        }
        None => {
            return Err(error(
                "a relational change needs the row's key as the record key",
            ))
        }
    };
    match op {
        "c" | "r" | "u" => {
            let mut after = embedded(event, "after")?
                .ok_or_else(|| error(format!("a `{op}` envelope has no `after`")))?;
            after.insert("_id", key.clone());
            Ok(Some(upsert(doc! {"_id": key}, after)))
        }
        "d" => Ok(Some(WriteOp::Delete {
            filter: doc! {"_id": key},
        })),
        "t" | "m" => Ok(None),
        other => Err(error(format!("unknown Debezium `op` `{other}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(
        handler: &str,
        key: Option<Bson>,
        value: Option<Document>,
    ) -> Result<Option<WriteOp>, RecordError> {
        let text = format!(
            "name = \"s\"\ntopics = [\"t\"]\ndatabase = \"db\"\ncdc_handler = \"{handler}\""
        );
        let config: SinkConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        CdcReplayer::new(&config).replay(&SinkRecord {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key,
            value,
        })
    }

    fn mongo(event: Document) -> Result<Option<WriteOp>, RecordError> {
        replay("mongodb", None, Some(event))
    }

    #[test]
    fn mongodb_events_become_idempotent_writes() {
        assert_eq!(
            mongo(doc! {"operationType": "insert", "documentKey": {"_id": 1}, "fullDocument": {"_id": 1, "a": 1}}).expect("ok"),
            Some(upsert(doc! {"_id": 1}, doc! {"_id": 1, "a": 1}))
        );
        assert_eq!(
            mongo(doc! {"operationType": "update", "documentKey": {"_id": 1}, "updateDescription": {"updatedFields": {"a.b": 2}, "removedFields": ["c"], "truncatedArrays": []}}).expect("ok"),
            Some(WriteOp::Update { filter: doc! {"_id": 1}, update: UpdateSpec::Operators(doc! {"$set": {"a.b": 2}, "$unset": {"c": ""}}), upsert: false })
        );
        assert_eq!(
            mongo(doc! {"operationType": "update", "documentKey": {"_id": 1}, "updateDescription": {"updatedFields": {"x": 1}, "removedFields": [], "truncatedArrays": [{"field": "arr", "newSize": 2}]}}).expect("ok"),
            Some(WriteOp::Update {
                filter: doc! {"_id": 1},
                update: UpdateSpec::Operators(doc! {"$push": {"arr": {"$each": [], "$slice": 2_i64}}, "$set": {"x": 1}}),
                upsert: false
            })
        );
        assert_eq!(
            mongo(doc! {"operationType": "update", "documentKey": {"_id": 1}, "updateDescription": {"updatedFields": {"arr.0": "$notAPath"}, "removedFields": [], "truncatedArrays": [{"field": "arr", "newSize": 2}]}}).expect("ok"),
            Some(WriteOp::Update {
                filter: doc! {"_id": 1},
                update: UpdateSpec::Pipeline(vec![
                    doc! {"$set": {"arr": {"$slice": ["$arr", 2_i64]}}},
                    doc! {"$set": {"arr.0": {"$literal": "$notAPath"}}},
                ]),
                upsert: false
            })
        );
        assert_eq!(
            mongo(doc! {"operationType": "replace", "documentKey": {"_id": 1}, "fullDocument": {"_id": 1, "b": 2}}).expect("ok"),
            Some(upsert(doc! {"_id": 1}, doc! {"_id": 1, "b": 2}))
        );
        assert_eq!(
            mongo(doc! {"operationType": "delete", "documentKey": {"_id": 1}}).expect("ok"),
            Some(WriteOp::Delete {
                filter: doc! {"_id": 1}
            })
        );
        assert_eq!(mongo(doc! {"operationType": "drop"}).expect("ok"), None);
        assert_eq!(replay("mongodb", None, None).expect("tombstone"), None);
    }

    #[test]
    fn malformed_mongodb_events_are_named() {
        let err =
            mongo(doc! {"operationType": "insert", "documentKey": {"_id": 1}}).expect_err("no doc");
        assert!(err.message.contains("fullDocument"), "{err}");
        let err = mongo(doc! {"operationType": "explode"}).expect_err("unknown");
        assert!(err.message.contains("explode"), "{err}");
        assert!(mongo(doc! {"x": 1}).is_err());
    }

    #[test]
    fn debezium_mongodb_envelopes() {
        let key = Some(Bson::Document(
            doc! {"id": "{\"$oid\": \"64b7f0c2a1b2c3d4e5f60718\"}"},
        ));
        let oid = bson::oid::ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").expect("oid");
        let created = replay("debezium_mongodb", key.clone(), Some(doc! {"op": "c", "after": "{\"_id\": {\"$oid\": \"64b7f0c2a1b2c3d4e5f60718\"}, \"n\": 1}"})).expect("ok");
        assert_eq!(
            created,
            Some(upsert(doc! {"_id": oid}, doc! {"_id": oid, "n": 1}))
        );
        let patched = replay(
            "debezium_mongodb",
            key.clone(),
            Some(doc! {"op": "u", "patch": "{\"$v\": 1, \"$set\": {\"n\": 2}}"}),
        )
        .expect("ok");
        assert_eq!(
            patched,
            Some(WriteOp::Update {
                filter: doc! {"_id": oid},
                update: UpdateSpec::Operators(doc! {"$set": {"n": 2}}),
                upsert: false
            })
        );
        let described = replay("debezium_mongodb", key.clone(), Some(doc! {"op": "u", "updateDescription": {"updatedFields": "{\"n\": 3}", "removedFields": ["m"]}})).expect("ok");
        assert_eq!(
            described,
            Some(WriteOp::Update {
                filter: doc! {"_id": oid},
                update: UpdateSpec::Operators(doc! {"$set": {"n": 3}, "$unset": {"m": ""}}),
                upsert: false
            })
        );
        let deleted = replay(
            "debezium_mongodb",
            key,
            Some(doc! {"schema": {}, "payload": {"op": "d"}}),
        )
        .expect("ok");
        assert_eq!(
            deleted,
            Some(WriteOp::Delete {
                filter: doc! {"_id": oid}
            })
        );
    }

    #[test]
    fn debezium_relational_envelopes() {
        let key = Some(Bson::Document(doc! {"id": 5}));
        assert_eq!(
            replay(
                "debezium_rdbms",
                key.clone(),
                Some(doc! {"op": "c", "before": Bson::Null, "after": {"id": 5, "name": "x"}})
            )
            .expect("ok"),
            Some(upsert(
                doc! {"_id": {"id": 5}},
                doc! {"id": 5, "name": "x", "_id": {"id": 5}}
            ))
        );
        assert_eq!(
            replay(
                "debezium_rdbms",
                key.clone(),
                Some(doc! {"op": "d", "before": {"id": 5}, "after": Bson::Null})
            )
            .expect("ok"),
            Some(WriteOp::Delete {
                filter: doc! {"_id": {"id": 5}}
            })
        );
        assert_eq!(
            replay("debezium_rdbms", key, Some(doc! {"op": "t"})).expect("ok"),
            None
        );
        assert!(replay(
            "debezium_rdbms",
            None,
            Some(doc! {"op": "c", "after": {"id": 1}})
        )
        .is_err());
    }

    #[test]
    fn qlik_replicate_messages() {
        let key = Some(Bson::Document(doc! {"id": 7}));
        let inserted = replay(
            "qlik_rdbms",
            key.clone(),
            Some(doc! {"magic": "atMSG", "type": "DT", "headers": Bson::Null, "message": {"data": {"id": 7, "name": "x"}, "beforeData": Bson::Null, "headers": {"operation": "INSERT"}}}),
        )
        .expect("ok");
        assert_eq!(
            inserted,
            Some(upsert(
                doc! {"_id": {"id": 7}},
                doc! {"_id": {"id": 7}, "id": 7, "name": "x"}
            ))
        );
        let unknown = replay(
            "qlik_rdbms",
            key,
            Some(doc! {"message": {"data": {"id": 7}, "headers": {"operation": "MERGE"}}}),
        )
        .expect_err("unknown operation");
        assert!(unknown.message.contains("`MERGE`"), "{unknown}");
    }
}
