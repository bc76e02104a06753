//! `qlik_rdbms`: Qlik Replicate messages from a relational database, replayed as the MongoDB
//! Kafka Connector's `com.mongodb.kafka.connect.sink.cdc.qlik.rdbms.RdbmsHandler` does.
//!
//! A message is `{magic, type, headers, message: {data, beforeData, headers: {operation}}}`;
//! a value without `message` is the message itself. The operation is `message.headers.operation`
//! or `message.headers_operation` (a message without `headers` holds them itself), any case:
//! - `INSERT`, `REFRESH`, `READ`: replace (upsert) the document whose `_id` is the key's
//!   fields, with `data` and that `_id`; without a key, a new `ObjectId` is the `_id`.
//! - `UPDATE`: `$set` (upsert) the fields of `data` that differ from `beforeData`, on the
//!   document whose `_id` is the key's fields, or without a key the one equal to
//!   `beforeData`; nothing differs: no write.
//! - `DELETE`: delete the document whose `_id` is the key's fields, or without a key the one
//!   equal to `data` (or, `data` missing or null, `beforeData`).
//!
//! An empty value is a tombstone: no write. Anything else fails the record, as the connector
//! fails it: no operation, an unknown one, a key that is not a document, a `data` or
//! `beforeData` that is not a document. Where the connector falls back on the message itself
//! (no `data`, no `beforeData` and no key), we fail the record instead: the connector would
//! write the message's own fields (`headers`, ...) as the row, or filter on them.

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};

use super::super::model::{RecordError, SinkRecord, Stage, UpdateSpec, WriteOp};

fn error(message: impl Into<String>) -> RecordError {
    RecordError::new(Stage::Cdc, message)
}

/// A Qlik operation (the connector's `OperationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Insert,
    Refresh,
    Read,
    Update,
    Delete,
}

impl Operation {
    /// Qlik's name.
    fn name(self) -> &'static str {
        match self {
            Self::Insert => "INSERT",
            Self::Refresh => "REFRESH",
            Self::Read => "READ",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "insert" => Self::Insert,
            "refresh" => Self::Refresh,
            "read" => Self::Read,
            "update" => Self::Update,
            "delete" => Self::Delete,
            _ => return None,
        })
    }
}

/// `field` of `doc` when a document; `None` when missing (or null and `null_is_missing`);
/// an error when anything else.
fn sub<'a>(
    doc: &'a Document,
    field: &str,
    null_is_missing: bool,
) -> Result<Option<&'a Document>, RecordError> {
    match doc.get(field) {
        None => Ok(None),
        Some(Bson::Null) if null_is_missing => Ok(None),
        Some(Bson::Document(d)) => Ok(Some(d)),
        Some(other) => Err(error(format!(
            "the Qlik message's `{field}` is {other}, not a document"
        ))),
    }
}

/// The message: `message` of the value, or the value itself.
fn message(value: &Document) -> Result<&Document, RecordError> {
    Ok(sub(value, "message", false)?.unwrap_or(value))
}

fn operation(message: &Document) -> Result<Operation, RecordError> {
    let headers = sub(message, "headers", false)?.unwrap_or(message);
    let text = match headers.get("operation").or_else(|| headers.get("headers_operation")) {
        Some(Bson::String(text)) => text,
        Some(other) => {
            return Err(error(format!(
                "the Qlik message's operation is {other}, not a string"
            )))
        }
        None => {
            return Err(error(
                "the Qlik message has no operation (`message.headers.operation` or `message.headers_operation`)",
            ))
        }
    };
    Operation::parse(text).ok_or_else(|| error(format!("unknown Qlik operation `{text}`")))
}

/// The key's fields as the `_id` filter; `None` without a key (absent, null or empty).
fn key_filter(record: &SinkRecord) -> Result<Option<Document>, RecordError> {
    match &record.key {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Document(key)) => {
            let key = match key.get("payload") {
                Some(Bson::Document(payload)) if key.contains_key("schema") => payload,
                _ => key,
            };
            Ok((!key.is_empty()).then(|| doc! {"_id": key.clone()}))
        }
        Some(other) => Err(error(format!(
            "the key is {other}, not a document of the row's key fields"
        ))),
    }
}

/// The write `value`, a Qlik message, stands for.
pub fn replay(value: &Document, record: &SinkRecord) -> Result<Option<WriteOp>, RecordError> {
    if value.is_empty() {
        return Ok(None);
    }
    let message = message(value)?;
    let op = operation(message)?;
    let key = key_filter(record)?;
    match op {
        Operation::Insert | Operation::Refresh | Operation::Read => {
            let data = sub(message, "data", false)?
                .ok_or_else(|| error(format!("a Qlik `{}` message has no `data`", op.name())))?;
            let filter = key.unwrap_or_else(|| doc! {"_id": ObjectId::new()});
            let mut replacement = Document::new();
            if let Some(id) = filter.get("_id") {
                replacement.insert("_id", id.clone());
            }
            for (field, value) in data {
                replacement.insert(field.clone(), value.clone());
            }
            Ok(Some(WriteOp::Replace {
                filter,
                replacement,
                upsert: true,
            }))
        }
        Operation::Update => {
            let before = sub(message, "beforeData", false)?;
            let filter = match (key, before) {
                (Some(key), _) => key,
                (None, Some(before)) if !before.is_empty() => before.clone(),
                (None, _) => {
                    return Err(error(
                        "a Qlik `UPDATE` message without a key needs a non-empty `beforeData` to find its row",
                    ))
                }
            };
            let data = sub(message, "data", false)?
                .filter(|d| !d.is_empty())
                .ok_or_else(|| error("a Qlik `UPDATE` message has no (or an empty) `data`"))?;
            let changed: Document = data
                .iter()
                .filter(|(field, value)| before.and_then(|b| b.get(field.as_str())) != Some(value))
                .map(|(field, value)| (field.clone(), value.clone()))
                .collect();
            if changed.is_empty() {
                return Ok(None);
            }
            Ok(Some(WriteOp::Update {
                filter,
                update: UpdateSpec::Operators(doc! {"$set": changed}),
                upsert: true,
            }))
        }
        Operation::Delete => {
            let filter = match key {
                Some(key) => key,
                None => {
                    // The connector's order: `data` (or, in it, a `beforeData`), else
                    // `beforeData`.
                    let found = match sub(message, "data", true)? {
                        Some(data) => Some(sub(data, "beforeData", true)?.unwrap_or(data)),
                        None => sub(message, "beforeData", true)?,
                    };
                    match found {
                        Some(found) if !found.is_empty() => found.clone(),
                        _ => return Err(error(
                            "a Qlik `DELETE` message without a key needs a non-empty `data` or `beforeData` to find its row",
                        )),
                    }
                }
            };
            Ok(Some(WriteOp::Delete { filter }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(json: &str) -> Document {
        let value: serde_json::Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
        match Bson::try_from(value) {
            Ok(Bson::Document(doc)) => doc,
            other => panic!("not a document: {other:?}"),
        }
    }

    fn run(key: Option<&str>, value: &str) -> Result<Option<WriteOp>, RecordError> {
        let record = SinkRecord {
            topic: "t".into(),
            partition: 1,
            offset: 2,
            timestamp: None,
            key: key.map(|k| Bson::Document(d(k))),
            value: None,
        };
        replay(&d(value), &record)
    }

    fn ok(key: Option<&str>, value: &str) -> Option<WriteOp> {
        run(key, value).unwrap_or_else(|e| panic!("{e}: {value}"))
    }

    fn err(key: Option<&str>, value: &str) -> String {
        match run(key, value) {
            Err(e) => e.message,
            Ok(op) => panic!("{value} gave {op:?}, not an error"),
        }
    }

    fn replace(filter: &str, replacement: &str) -> Option<WriteOp> {
        Some(WriteOp::Replace {
            filter: d(filter),
            replacement: d(replacement),
            upsert: true,
        })
    }

    // The connector's `OperationHandlerTest`: the operation in any of its four places, any
    // case; not a string, or missing, fails.
    #[test]
    fn the_operation_is_found_where_the_connector_looks() {
        for op in ["insert", "read", "refresh", "delete", "update"] {
            for template in [
                r#"{"message": {"operation": "OP"}}"#,
                r#"{"headers": {"operation": "OP"}}"#,
                r#"{"message": {"headers": {"operation": "OP"}}}"#,
                r#"{"message": {"headers_operation": "OP"}}"#,
            ] {
                let value = d(&template.replace("OP", &op.to_uppercase()));
                assert_eq!(
                    operation(message(&value).expect("message")).ok(),
                    Operation::parse(op),
                    "{value}"
                );
            }
        }
        for invalid in [
            r#"{"a": 1}"#,
            r#"{"message": {"operation": {"a": 1}}}"#,
            r#"{"headers": {"operation": {"a": 1}}}"#,
            r#"{"message": {"headers": {"operation": {"a": 1}}}}"#,
            r#"{"message": {"headers_operation": {"a": 1}}}"#,
            r#"{"message": {"headers": {"noOperation": "INSERT"}}}"#,
            r#"{"message": {"headers": {"operation": 5}}}"#,
        ] {
            assert!(run(Some(r#"{"id": 1234}"#), invalid).is_err(), "{invalid}");
        }
        let e = err(
            Some(r#"{"id": 1234}"#),
            r#"{"message": {"headers": {"operation": "x"}}}"#,
        );
        assert!(e.contains("unknown Qlik operation `x`"), "{e}");
        let e = err(
            Some(r#"{"id": 1234}"#),
            r#"{"message": {"headers": {"operation": "CREATE"}, "data": {"id": 1234}}}"#,
        );
        assert!(e.contains("`CREATE`"), "{e}");
    }

    // `RdbmsHandlerTest`: an empty value is a tombstone; each operation's write model.
    #[test]
    fn each_operation_becomes_the_connectors_write_model() {
        assert_eq!(ok(Some(r#"{"id": 1234}"#), "{}"), None);
        assert_eq!(ok(None, "{}"), None);
        assert!(matches!(
            ok(
                Some(r#"{"id": 1234}"#),
                r#"{"message": {"data": {"id": 1234, "foo": "bar"}, "headers": {"operation": "INSERT"}}}"#
            ),
            Some(WriteOp::Replace { .. })
        ));
        assert!(matches!(
            ok(
                Some(r#"{"id": 1234}"#),
                r#"{"message": {"data": {"id": 1234, "foo": "bar"}, "headers_operation": "READ"}}"#
            ),
            Some(WriteOp::Replace { .. })
        ));
        assert!(matches!(
            ok(
                Some(r#"{"id": 1234}"#),
                r#"{"message": {"data": {"id": 1234, "foo": "bar"}, "beforeData": {"id": 4321, "foo": "foo"}, "operation": "UPDATE"}}"#
            ),
            Some(WriteOp::Update { upsert: true, .. })
        ));
        assert!(matches!(
            ok(
                Some(r#"{"id": 1234}"#),
                r#"{"data": {"id": 1234, "foo": "bar"}, "headers": {"operation": "DELETE"}}"#
            ),
            Some(WriteOp::Delete { .. })
        ));
        // `testNoUpdateOP`: nothing changed, nothing written.
        assert_eq!(
            ok(
                Some(r#"{"id": 1234}"#),
                r#"{"message": {"data": {"id": 1234, "foo": "bar"}, "beforeData": {"id": 1234, "foo": "bar"}, "headers": {"operation": "UPDATE"}}}"#
            ),
            None
        );
    }

    // `ReplaceTest`.
    #[test]
    fn inserts_replace_by_the_keys_fields_or_a_new_object_id() {
        assert_eq!(
            ok(
                Some(r#"{"id": 1234}"#),
                r#"{"message": {"headers": {"operation": "INSERT"}, "data": {"first_name": "Grace", "last_name": "Hopper"}}}"#
            ),
            replace(
                r#"{"_id": {"id": 1234}}"#,
                r#"{"_id": {"id": 1234}, "first_name": "Grace", "last_name": "Hopper"}"#
            )
        );
        assert_eq!(
            ok(
                Some(r#"{"idA": 123, "idB": "ABC"}"#),
                r#"{"message": {"headers": {"operation": "INSERT"}, "data": {"_id": {"idA": 123, "idB": "ABC"}, "active": true}}}"#
            ),
            replace(
                r#"{"_id": {"idA": 123, "idB": "ABC"}}"#,
                r#"{"_id": {"idA": 123, "idB": "ABC"}, "active": true}"#
            )
        );
        for op in ["INSERT", "READ"] {
            let value = format!(
                r#"{{"message": {{"headers": {{"operation": "{op}"}}, "data": {{"text": "misc", "active": false}}}}}}"#
            );
            let Some(WriteOp::Replace {
                filter,
                replacement,
                upsert: true,
            }) = ok(Some("{}"), &value)
            else {
                panic!("{op}: not an upserting replace");
            };
            let id = filter
                .get_object_id("_id")
                .unwrap_or_else(|e| panic!("{op}: {e}"));
            assert_eq!(filter, doc! {"_id": id});
            assert_eq!(
                replacement,
                doc! {"_id": id, "text": "misc", "active": false}
            );
        }
        let e = err(
            Some(r#"{"op": "INSERT"}"#),
            r#"{"message": {"headers": {"operation": "INSERT"}, "data": "{MAL: FORMED [JSON]}"}}"#,
        );
        assert!(e.contains("`data`"), "{e}");
    }

    // `UpdateTest`.
    #[test]
    fn updates_set_what_changed() {
        assert_eq!(
            ok(
                Some(r#"{"table": 1234, "key": 43214}"#),
                r#"{"message": {"data": {"first_name": "Grace", "last_name": "Hopper"}, "headers": {"operation": "UPDATE"}, "beforeData": {"first_name": "Julie", "last_name": "NotHooper"}}}"#
            ),
            Some(WriteOp::Update {
                filter: d(r#"{"_id": {"table": 1234, "key": 43214}}"#),
                update: UpdateSpec::Operators(d(
                    r#"{"$set": {"first_name": "Grace", "last_name": "Hopper"}}"#
                )),
                upsert: true,
            })
        );
        // Only the changed field; without a key, the row is found by `beforeData`.
        assert_eq!(
            ok(
                None,
                r#"{"message": {"data": {"a": 1, "b": 2}, "beforeData": {"a": 1, "b": 1}, "headers": {"operation": "UPDATE"}}}"#
            ),
            Some(WriteOp::Update {
                filter: d(r#"{"a": 1, "b": 1}"#),
                update: UpdateSpec::Operators(d(r#"{"$set": {"b": 2}}"#)),
                upsert: true,
            })
        );
        let e = err(
            Some(r#"{"id": 1234}"#),
            r#"{"message": {"data": {}, "beforeData": {}, "headers": {"operation": "UPDATE"}}}"#,
        );
        assert!(e.contains("`data`"), "{e}");
        let e = err(
            Some(r#"{"id": 1}"#),
            r#"{"message": {"data": {"a": 1}, "beforeData": null, "headers": {"operation": "UPDATE"}}}"#,
        );
        assert!(e.contains("`beforeData`"), "{e}");
    }

    // `DeleteTest`.
    #[test]
    fn deletes_find_the_row_by_key_data_or_before_data() {
        let delete = |filter: &str| Some(WriteOp::Delete { filter: d(filter) });
        assert_eq!(
            ok(
                Some(r#"{"id": 1004}"#),
                r#"{"message": {"headers": {"operation": "DELETE"}}}"#
            ),
            delete(r#"{"_id": {"id": 1004}}"#)
        );
        assert_eq!(
            ok(
                Some(r#"{"idA": 123, "idB": "ABC"}"#),
                r#"{"message": {"headers": {"operation": "DELETE"}}}"#
            ),
            delete(r#"{"_id": {"idA": 123, "idB": "ABC"}}"#)
        );
        let row = r#"{"text": "misc", "number": 9876, "active": true}"#;
        for value in [
            format!(
                r#"{{"message": {{"headers": {{"operation": "DELETE"}}, "beforeData": {row}}}}}"#
            ),
            format!(
                r#"{{"message": {{"headers": {{"operation": "DELETE"}}, "beforeData": null, "data": {row}}}}}"#
            ),
            format!(r#"{{"message": {{"headers": {{"operation": "DELETE"}}, "data": {row}}}}}"#),
        ] {
            assert_eq!(ok(Some("{}"), &value), delete(row), "{value}");
        }
        let e = err(
            Some("{}"),
            r#"{"message": {"headers": {"operation": "DELETE"}, "beforeData": {}}}"#,
        );
        assert!(e.contains("`data` or `beforeData`"), "{e}");
    }

    // Ours where the connector writes the message itself.
    #[test]
    fn a_message_without_its_row_fails_the_record() {
        let e = err(
            Some(r#"{"id": 1}"#),
            r#"{"magic": "atMSG", "type": "DT", "message": {"headers": {"operation": "INSERT"}}}"#,
        );
        assert!(e.contains("no `data`"), "{e}");
        let e = err(
            None,
            r#"{"message": {"headers": {"operation": "UPDATE"}, "data": {"a": 1}}}"#,
        );
        assert!(e.contains("beforeData"), "{e}");
        let record = SinkRecord {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: Some(Bson::String("1234".into())),
            value: None,
        };
        let value = d(r#"{"message": {"headers": {"operation": "INSERT"}, "data": {"a": 1}}}"#);
        let e = replay(&value, &record).expect_err("a text key");
        assert!(e.message.contains("not a document"), "{e}");
    }
}
