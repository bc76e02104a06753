//! The sink's post-processors as the MongoDB Kafka Connector's: the allow/block projections
//! with `*` and `**` (the connector's `FieldProjectorTest` tables, run through our
//! `PostProcessor`), the null-field remover, the configured chain order, and, against the real
//! services, documents written projected, renamed and without nulls.

mod common;

use mongo_kafka_bridge::config::SinkConfig;
use mongo_kafka_bridge::sink::cdc::CdcReplayer;
use mongo_kafka_bridge::sink::convert::{Converter, RawRecord};
use mongo_kafka_bridge::sink::id::IdAssigner;
use mongo_kafka_bridge::sink::model::{SinkRecord, UpdateSpec, WriteOp};
use mongo_kafka_bridge::sink::process::PostProcessor;
use mongodb::bson::{Bson, Document};

/// A document from (relaxed) extended JSON.
fn d(json: &str) -> Document {
    let value: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    match Bson::try_from(value) {
        Ok(Bson::Document(doc)) => doc,
        other => panic!("not a document: {other:?}"),
    }
}

fn config(extra: &str) -> SinkConfig {
    let text =
        format!("name = \"sinkpp_s\"\ntopics = [\"sinkpp_t\"]\ndatabase = \"sinkpp_db\"\n{extra}");
    toml::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn processor(extra: &str) -> PostProcessor {
    PostProcessor::new(&config(extra)).unwrap_or_else(|e| panic!("{e}: {extra}"))
}

/// The record after the processors of `extra`.
fn processed(extra: &str, key: Document, value: Document) -> SinkRecord {
    let mut record = SinkRecord {
        topic: "sinkpp_t".into(),
        partition: 0,
        offset: 7,
        timestamp: Some(1000),
        key: Some(Bson::Document(key)),
        value: Some(value),
    };
    processor(extra)
        .apply(&mut record)
        .unwrap_or_else(|e| panic!("{e}: {extra}"));
    record
}

/// The TOML list of the connector's comma-separated `list`.
fn toml_list(list: &str) -> String {
    let items: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| format!("\"{s}\""))
        .collect();
    format!("[{}]", items.join(", "))
}

/// Runs the connector's table `cases` (projection list → expected document) on `input`
/// through our key projection (which, unlike our value projection, has no `_id` it keeps).
fn key_cases(kind: &str, input: &str, cases: &[(&str, &str)]) {
    let mut failures = Vec::new();
    for (list, expected) in cases {
        let extra = format!("key_{kind}_fields = {}", toml_list(list));
        let record = processed(&extra, d(input), d("{}"));
        let expected = Bson::Document(d(expected));
        if record.key.as_ref() != Some(&expected) {
            failures.push(format!(
                "{extra}: got {:?}, expected {expected}",
                record.key.map(|k| k.to_string())
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const FLAT_KEY: &str = r#"{"_id": "ABC-123", "myBoolean": true, "myInt": 42, "myBytes": {"$binary": {"base64": "QUJD", "subType": "00"}}, "myArray": []}"#;
const FLAT_VALUE: &str = r#"{"_id": "XYZ-789", "myLong": {"$numberLong": "42"}, "myDouble": 23.23, "myString": "BSON", "myBytes": {"$binary": {"base64": "eHl6", "subType": "00"}}, "myArray": []}"#;
const NESTED_KEY: &str = r#"{"_id": "ABC-123", "myInt": 42, "subDoc1": {"myString": "BSON1", "myBoolean": false}, "subDoc2": {"myString": "BSON2", "myBoolean": true}}"#;
const NESTED_VALUE: &str = r#"{"_id": "XYZ-789", "myBoolean": true,
  "subDoc1": {"myFieldA": "some text", "myFieldB": 12.34, "subSubDoc": {"myString": "some text", "myInt": 0, "myBoolean": false}},
  "subDoc2": {"myFieldA": "some text", "myFieldB": 12.34,
              "subSubDoc": {"myBytes": {"$binary": {"base64": "eHl6", "subType": "00"}},
                            "myArray": [{"key": "abc", "value": 123}, {"key": "xyz", "value": 987}]}}}"#;

// The connector's `FieldProjectorTest` (mongo-kafka 3.0, `setupFlatDocMaps` and
// `setupNestedFieldLists`), less its empty lists (an empty list is no projection here).

#[test]
fn block_lists_on_flat_documents_as_the_connector() {
    key_cases(
        "block",
        FLAT_KEY,
        &[
            ("*", "{}"),
            ("**", "{}"),
            ("myB*", r#"{"_id": "ABC-123", "myInt": 42, "myArray": []}"#),
            (
                "_id",
                r#"{"myBoolean": true, "myInt": 42, "myBytes": {"$binary": {"base64": "QUJD", "subType": "00"}}, "myArray": []}"#,
            ),
            (
                "myBoolean, myInt",
                r#"{"_id": "ABC-123", "myBytes": {"$binary": {"base64": "QUJD", "subType": "00"}}, "myArray": []}"#,
            ),
            ("missing1, unknown2", FLAT_KEY),
        ],
    );
    key_cases(
        "block",
        FLAT_VALUE,
        &[
            ("*", "{}"),
            ("**", "{}"),
            ("my*", r#"{"_id": "XYZ-789"}"#),
            (
                "myLong, myDouble",
                r#"{"_id": "XYZ-789", "myString": "BSON", "myBytes": {"$binary": {"base64": "eHl6", "subType": "00"}}, "myArray": []}"#,
            ),
        ],
    );
}

#[test]
fn allow_lists_on_flat_documents_as_the_connector() {
    key_cases(
        "allow",
        FLAT_KEY,
        &[
            ("*", FLAT_KEY),
            ("**", FLAT_KEY),
            (
                "myB*",
                r#"{"myBoolean": true, "myBytes": {"$binary": {"base64": "QUJD", "subType": "00"}}}"#,
            ),
            ("missing1, unknown2", "{}"),
            (
                "myBoolean, myBytes, myArray",
                r#"{"myBoolean": true, "myBytes": {"$binary": {"base64": "QUJD", "subType": "00"}}, "myArray": []}"#,
            ),
        ],
    );
    key_cases(
        "allow",
        FLAT_VALUE,
        &[
            ("*", FLAT_VALUE),
            ("**", FLAT_VALUE),
            (
                "my*",
                r#"{"myLong": {"$numberLong": "42"}, "myDouble": 23.23, "myString": "BSON", "myBytes": {"$binary": {"base64": "eHl6", "subType": "00"}}, "myArray": []}"#,
            ),
            ("_id", r#"{"_id": "XYZ-789"}"#),
        ],
    );
}

#[test]
fn block_lists_on_nested_documents_as_the_connector() {
    key_cases(
        "block",
        NESTED_KEY,
        &[
            (
                "_id, subDoc1.myString, subDoc2.myBoolean",
                r#"{"myInt": 42, "subDoc1": {"myBoolean": false}, "subDoc2": {"myString": "BSON2"}}"#,
            ),
            (
                "*",
                r#"{"subDoc1": {"myString": "BSON1", "myBoolean": false}, "subDoc2": {"myString": "BSON2", "myBoolean": true}}"#,
            ),
            ("**", "{}"),
            (
                "*.myString",
                r#"{"subDoc1": {"myBoolean": false}, "subDoc2": {"myBoolean": true}}"#,
            ),
            ("*.*", r#"{"subDoc1": {}, "subDoc2": {}}"#),
        ],
    );
    key_cases(
        "block",
        NESTED_VALUE,
        &[
            ("_id, subDoc1,subDoc2", r#"{"myBoolean": true}"#),
            ("**", "{}"),
            ("subDoc1.subSubDoc,subDoc2", r#"{"_id": "XYZ-789", "myBoolean": true, "subDoc1": {"myFieldA": "some text", "myFieldB": 12.34}}"#),
            ("*,subDoc1.*,subDoc2.**", r#"{"subDoc1": {"subSubDoc": {"myString": "some text", "myInt": 0, "myBoolean": false}}, "subDoc2": {}}"#),
            ("*.*", r#"{"subDoc1": {"subSubDoc": {"myString": "some text", "myInt": 0, "myBoolean": false}},
                        "subDoc2": {"subSubDoc": {"myBytes": {"$binary": {"base64": "eHl6", "subType": "00"}},
                                                  "myArray": [{"key": "abc", "value": 123}, {"key": "xyz", "value": 987}]}}}"#),
            ("*.subSubDoc", r#"{"subDoc1": {"myFieldA": "some text", "myFieldB": 12.34}, "subDoc2": {"myFieldA": "some text", "myFieldB": 12.34}}"#),
            ("subDoc1.*.myString,subDoc2.subSubDoc.*", r#"{"_id": "XYZ-789", "myBoolean": true,
                        "subDoc1": {"subSubDoc": {"myInt": 0, "myBoolean": false}},
                        "subDoc2": {"myFieldA": "some text", "myFieldB": 12.34, "subSubDoc": {}}}"#),
            ("subDoc1,subDoc2.myFieldA,subDoc2.myFieldB,subDoc2.subSubDoc.myBytes,subDoc2.subSubDoc.myArray.key",
             r#"{"_id": "XYZ-789", "myBoolean": true, "subDoc2": {"subSubDoc": {"myArray": [{"value": 123}, {"value": 987}]}}}"#),
        ],
    );
}

#[test]
fn allow_lists_on_nested_documents_as_the_connector() {
    key_cases(
        "allow",
        NESTED_KEY,
        &[(
            "*",
            r#"{"_id": "ABC-123", "myInt": 42, "subDoc1": {}, "subDoc2": {}}"#,
        )],
    );
    key_cases(
        "allow",
        NESTED_VALUE,
        &[
            ("*", r#"{"_id": "XYZ-789", "myBoolean": true, "subDoc1": {}, "subDoc2": {}}"#),
            ("subDoc1,subDoc1.**,subDoc2,subDoc2.subSubDoc,subDoc2.subSubDoc.myArray,subDoc2.subSubDoc.myArray.*",
             r#"{"subDoc1": {"myFieldA": "some text", "myFieldB": 12.34, "subSubDoc": {"myString": "some text", "myInt": 0, "myBoolean": false}},
                 "subDoc2": {"subSubDoc": {"myArray": [{"key": "abc", "value": 123}, {"key": "xyz", "value": 987}]}}}"#),
            ("**", NESTED_VALUE),
            ("subDoc2,subDoc2.subSubDoc,subDoc2.subSubDoc.myArray,subDoc2.subSubDoc.myArray.key",
             r#"{"subDoc2": {"subSubDoc": {"myArray": [{"key": "abc"}, {"key": "xyz"}]}}}"#),
        ],
    );
}

#[test]
fn value_projections_with_wildcards_keep_the_id_and_the_id_strategy_projects_with_them() {
    let record = processed(
        "value_allow_fields = [\"subDoc1.*\"]",
        d("{}"),
        d(NESTED_VALUE),
    );
    assert_eq!(
        record.value,
        Some(d(
            r#"{"subDoc1": {"myFieldA": "some text", "myFieldB": 12.34, "subSubDoc": {}}, "_id": "XYZ-789"}"#
        ))
    );
    let record = processed("value_block_fields = [\"**\"]", d("{}"), d(NESTED_VALUE));
    assert_eq!(record.value, Some(d(r#"{"_id": "XYZ-789"}"#)));

    // The partial id strategies project with the same rules.
    let ids = IdAssigner::new(&config(
        "id_strategy = \"partial_value\"\nid_fields = [\"subDoc2.subSubDoc.myArray.*\"]",
    ));
    let mut record = processed("", d("{}"), d(NESTED_VALUE));
    let mut value = record.value.take().expect("value");
    value.remove("_id");
    ids.assign(&record, &mut value).expect("an id");
    assert_eq!(
        value.get("_id"),
        Some(&Bson::Document(d(
            r#"{"subDoc2": {"subSubDoc": {"myArray": [{"key": "abc", "value": 123}, {"key": "xyz", "value": 987}]}}}"#
        )))
    );
    let ids = IdAssigner::new(&config(
        "id_strategy = \"partial_value\"\nid_fields_projection = \"block\"\nid_fields = [\"*\", \"subDoc2\"]",
    ));
    let mut value = d(NESTED_VALUE);
    value.remove("_id");
    ids.assign(&record, &mut value).expect("an id");
    assert_eq!(
        value.get("_id"),
        Some(&Bson::Document(d(
            r#"{"subDoc1": {"myFieldA": "some text", "myFieldB": 12.34, "subSubDoc": {"myString": "some text", "myInt": 0, "myBoolean": false}}}"#
        )))
    );
}

/// The examples of docs/configuration.md, "Projections".
#[test]
fn the_configuration_guides_projection_examples_hold() {
    let input = r#"{"a": 1, "sub": {"x": 1, "y": {"z": 2}}, "list": [{"x": 1, "y": 2}]}"#;
    key_cases(
        "allow",
        input,
        &[
            ("*", r#"{"a": 1, "sub": {}, "list": [{}]}"#),
            ("**", input),
            ("sub.*", r#"{"sub": {"x": 1, "y": {}}}"#),
            ("sub.**", r#"{"sub": {"x": 1, "y": {"z": 2}}}"#),
            ("list.x", r#"{"list": [{"x": 1}]}"#),
            ("s*", r#"{"sub": {"x": 1, "y": {"z": 2}}}"#),
        ],
    );
    key_cases(
        "block",
        input,
        &[
            ("*", r#"{"sub": {"x": 1, "y": {"z": 2}}}"#),
            ("**", "{}"),
            (
                "sub.*",
                r#"{"a": 1, "sub": {"y": {"z": 2}}, "list": [{"x": 1, "y": 2}]}"#,
            ),
            (
                "sub.**",
                r#"{"a": 1, "sub": {}, "list": [{"x": 1, "y": 2}]}"#,
            ),
            (
                "list.x",
                r#"{"a": 1, "sub": {"x": 1, "y": {"z": 2}}, "list": [{"y": 2}]}"#,
            ),
            ("s*", r#"{"a": 1, "list": [{"x": 1, "y": 2}]}"#),
        ],
    );
}

/// The problems `validate` finds in a sink with `extra`, as text.
fn violations(extra: &str) -> Vec<String> {
    let mut out = Vec::new();
    config(extra).validate("sink[0]", &mut out);
    out.into_iter().map(|v| v.to_string()).collect()
}

#[test]
fn null_fields_are_removed_as_the_connectors_null_field_value_remover() {
    let record = processed(
        "remove_null_fields = true",
        d("{}"),
        d(
            r#"{"_id": 1, "a": null, "b": {"c": null, "d": 1}, "list": [{"e": null, "f": 2}, null, 3]}"#,
        ),
    );
    // Nested documents and documents in arrays lose their null fields; an array's null
    // items stay, as the connector's `BsonDocumentNullValueRemover` leaves them.
    assert_eq!(
        record.value,
        Some(d(
            r#"{"_id": 1, "b": {"d": 1}, "list": [{"f": 2}, null, 3]}"#
        ))
    );
    let record = processed("", d("{}"), d(r#"{"_id": 1, "a": null}"#));
    assert_eq!(
        record.value,
        Some(d(r#"{"_id": 1, "a": null}"#)),
        "off by default"
    );
}

#[test]
fn the_post_processor_chain_runs_in_the_configured_order() {
    let value = r#"{"_id": 1, "a": 1, "z": null}"#;
    // The default order projects before it renames: `a` is gone before it could be `b`.
    let record = processed(
        "field_renames = { a = \"b\" }\nvalue_allow_fields = [\"b\"]",
        d("{}"),
        d(value),
    );
    assert_eq!(record.value, Some(d(r#"{"_id": 1}"#)));
    let record = processed(
        "field_renames = { a = \"b\" }\nvalue_allow_fields = [\"b\", \"meta.*\", \"z\"]\nkafka_metadata_field = \"meta\"\npost_processor_chain = [\"kafka_metadata\", \"rename\", \"allow_value\", \"remove_nulls\"]",
        d("{}"),
        d(value),
    );
    assert_eq!(
        record.value,
        Some(d(
            r#"{"_id": 1, "b": 1, "meta": {"topic": "sinkpp_t", "partition": 0, "offset": {"$numberLong": "7"}, "timestamp": {"$date": {"$numberLong": "1000"}}}}"#
        ))
    );
}

#[test]
fn the_id_runs_where_the_chain_puts_it_and_first_otherwise() {
    let base =
        "id_strategy = \"partial_value\"\nid_fields = [\"b\"]\nfield_renames = { a = \"b\" }";
    let converted = |extra: &str| {
        let mut record = SinkRecord {
            topic: "sinkpp_t".into(),
            partition: 0,
            offset: 7,
            timestamp: None,
            key: None,
            value: Some(d(r#"{"a": 1, "b": 2}"#)),
        };
        let config = config(&format!("{base}\n{extra}"));
        let ids = IdAssigner::new(&config);
        let outcome = PostProcessor::new(&config)
            .unwrap_or_else(|e| panic!("{e}"))
            .apply_with_id(&mut record, &ids);
        (outcome.map_err(|e| e.to_string()), record.value)
    };
    // First (the default): the id is made of `b`; the rename then finds `b` taken and drops
    // `a`, as the connector's renamer does.
    let (outcome, value) = converted("");
    assert_eq!(outcome, Ok(1));
    assert_eq!(value, Some(d(r#"{"b": 2, "_id": {"b": 2}}"#)));
    // After the rename (and a block of the old `b`): the id is the renamed `a`.
    let (outcome, value) = converted(
        "value_block_fields = [\"b\"]\npost_processor_chain = [\"block_value\", \"rename\", \"id\"]",
    );
    assert_eq!(outcome, Ok(0));
    assert_eq!(value, Some(d(r#"{"b": 1, "_id": {"b": 1}}"#)));
}

#[test]
fn an_impossible_chain_is_refused_naming_its_key() {
    assert!(violations(
        "remove_null_fields = true\npost_processor_chain = [\"id\", \"remove_nulls\"]"
    )
    .is_empty());
    let v = violations("post_processor_chain = [\"id\", \"NullFieldValueRemover\", \"id\"]");
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(
        v[0].contains("sink[0].post_processor_chain[1]") && v[0].contains("remove_nulls"),
        "{v:?}"
    );
    assert!(
        v[1].contains("sink[0].post_processor_chain[2]") && v[1].contains("twice"),
        "{v:?}"
    );
    // A step without its settings, settings without their step.
    let v = violations("value_block_fields = [\"x\"]\npost_processor_chain = [\"allow_value\"]");
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(
        v.iter()
            .any(|v| v.contains("sink[0].post_processor_chain[0]")
                && v.contains("value_allow_fields")),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|v| v.contains("sink[0].value_block_fields") && v.contains("block_value")),
        "{v:?}"
    );
    let v = violations("remove_null_fields = true\npost_processor_chain = []");
    assert!(
        v.iter()
            .any(|v| v.contains("sink[0].remove_null_fields") && v.contains("remove_nulls")),
        "{v:?}"
    );
    let v = violations("cdc_handler = \"mongodb\"\npost_processor_chain = [\"id\"]");
    assert!(
        v.iter()
            .any(|v| v.contains("sink[0].post_processor_chain") && v.contains("cdc_handler")),
        "{v:?}"
    );
}

/// The write the `mongodb` CDC handler makes of `event`, with `extra` settings.
fn replayed(extra: &str, event: &str) -> Option<WriteOp> {
    let config = config(&format!("cdc_handler = \"mongodb\"\n{extra}"));
    let record = SinkRecord {
        topic: "sinkpp_t".into(),
        partition: 0,
        offset: 7,
        timestamp: None,
        key: None,
        value: Some(d(event)),
    };
    CdcReplayer::new(&config)
        .replay(&record)
        .unwrap_or_else(|e| panic!("{e}: {event}"))
}

#[test]
fn cdc_writes_lose_their_null_values_as_the_connectors_cdc_null_field_value_remover() {
    const ON: &str = "cdc_remove_null_values = true";
    let replace = r#"{"operationType": "replace", "documentKey": {"_id": 1}, "fullDocument": {"_id": 1, "a": null, "b": {"c": null, "d": 1}}}"#;
    match replayed(ON, replace) {
        Some(WriteOp::Replace { replacement, .. }) => {
            assert_eq!(replacement, d(r#"{"_id": 1, "b": {"d": 1}}"#));
        }
        other => panic!("{other:?}"),
    }
    match replayed("", replace) {
        Some(WriteOp::Replace { replacement, .. }) => {
            assert_eq!(replacement.get("a"), Some(&Bson::Null), "off by default");
        }
        other => panic!("{other:?}"),
    }
    // An update's `$set` loses its nulls, `$unset` stays; a `$set` left empty goes.
    let update = r#"{"operationType": "update", "documentKey": {"_id": 1}, "updateDescription": {"updatedFields": {"a": null, "b": 2}, "removedFields": ["c"], "truncatedArrays": []}}"#;
    match replayed(ON, update) {
        Some(WriteOp::Update {
            update: UpdateSpec::Operators(ops),
            ..
        }) => {
            assert_eq!(ops, d(r#"{"$set": {"b": 2}, "$unset": {"c": ""}}"#));
        }
        other => panic!("{other:?}"),
    }
    let update = r#"{"operationType": "update", "documentKey": {"_id": 1}, "updateDescription": {"updatedFields": {"a": null}, "removedFields": ["c"], "truncatedArrays": []}}"#;
    match replayed(ON, update) {
        Some(WriteOp::Update {
            update: UpdateSpec::Operators(ops),
            ..
        }) => {
            assert_eq!(ops, d(r#"{"$unset": {"c": ""}}"#));
        }
        other => panic!("{other:?}"),
    }
    // Nothing left to write: no write, as the connector's remover returns none.
    let update = r#"{"operationType": "update", "documentKey": {"_id": 1}, "updateDescription": {"updatedFields": {"a": null}, "removedFields": [], "truncatedArrays": []}}"#;
    assert_eq!(replayed(ON, update), None);
    // Deletes are left as they are.
    let delete = r#"{"operationType": "delete", "documentKey": {"_id": 1}}"#;
    assert!(matches!(replayed(ON, delete), Some(WriteOp::Delete { .. })));
    let v = violations(ON);
    assert!(
        v.iter()
            .any(|v| v.contains("sink[0].cdc_remove_null_values") && v.contains("cdc_handler")),
        "{v:?}"
    );
}

/// Where the converter of a sink with `extra` sends a record of `key` and `value` (JSON).
fn namespace_of(
    extra: &str,
    key: Option<&str>,
    value: Option<&str>,
) -> Result<Option<String>, String> {
    let converter = Converter::new(config(extra)).unwrap_or_else(|e| panic!("{e}"));
    converter
        .convert(RawRecord {
            topic: "sinkpp_t",
            partition: 0,
            offset: 1,
            timestamp: None,
            key: key.map(str::as_bytes),
            value: value.map(str::as_bytes),
        })
        .map(|c| c.map(|c| c.namespace.to_string()))
        .map_err(|e| e.to_string())
}

#[test]
fn an_invalid_namespace_from_a_record_falls_back_with_error_if_invalid_false() {
    const FROM_VALUE: &str = "namespace_from = \"value\"\ndatabase_field = \"db\"\ncollection_field = \"meta.coll\"\ncollection = \"fallback\"\nid_strategy = \"provided_in_value\"";
    let lenient = format!("{FROM_VALUE}\nerror_if_invalid = false");
    let ok = |s: &str| Ok(Some(s.to_owned()));
    assert_eq!(
        namespace_of(
            &lenient,
            None,
            Some(r#"{"_id": 1, "db": "a", "meta": {"coll": "b"}}"#)
        ),
        ok("a.b")
    );
    // Missing, not a string, empty: each part falls back on its own, as the connector's
    // `FieldPathNamespaceMapper` with `namespace.mapper.error.if.invalid=false`.
    assert_eq!(
        namespace_of(&lenient, None, Some(r#"{"_id": 2, "meta": {"coll": 5}}"#)),
        ok("sinkpp_db.fallback")
    );
    assert_eq!(
        namespace_of(
            &lenient,
            None,
            Some(r#"{"_id": 3, "db": "", "meta": {"coll": "c"}}"#)
        ),
        ok("sinkpp_db.c")
    );
    assert_eq!(
        namespace_of(&lenient, None, Some(r#"{"_id": 4, "db": "d", "meta": 1}"#)),
        ok("d.fallback")
    );
    // A tombstone has no value to read the namespace from: the default one, and no write.
    assert_eq!(
        namespace_of(&lenient, Some(r#"{"_id": 5}"#), None),
        Ok(None)
    );
    // The default stays: an invalid namespace is an error naming the field.
    let err = namespace_of(FROM_VALUE, None, Some(r#"{"_id": 2, "meta": {"coll": 5}}"#))
        .expect_err("strict by default");
    assert!(err.contains("`db`") || err.contains("`meta.coll`"), "{err}");
    // Read only with a namespace taken from records.
    let v = violations("error_if_invalid = false");
    assert!(
        v.iter()
            .any(|v| v.contains("sink[0].error_if_invalid") && v.contains("namespace_from")),
        "{v:?}"
    );
}

/// A sink pipeline (one new topic) named for this helper's tests, with `extra` in its table.
async fn sink(extra: &str) -> common::sink::Sink {
    let sink = common::sink::Sink {
        name: common::unique("sinkpp_sink"),
        topic: common::unique("sinkpp_in"),
        more_topics: Vec::new(),
        db: common::unique("sinkpp_db"),
        port: common::free_port(),
        extra: extra.to_owned(),
    };
    common::create_topic(&sink.topic, 1).await;
    sink
}

#[tokio::test]
async fn documents_are_written_projected_renamed_and_without_nulls_in_the_chains_order() {
    use serde_json::json;
    let sink = sink(
        "id_strategy = \"provided_in_value\"\n\
         field_renames = { a = \"b\" }\n\
         value_allow_fields = [\"b\", \"sub.*\", \"list.x\", \"keep\"]\n\
         remove_null_fields = true\n\
         kafka_metadata_field = \"meta\"\n\
         post_processor_chain = [\"rename\", \"allow_value\", \"remove_nulls\", \"kafka_metadata\"]",
    )
    .await;
    let daemon = sink.start();
    common::produce(
        &sink.topic,
        &[common::Outgoing::json(
            json!(null),
            json!({"_id": 1, "a": 1, "c": 2, "sub": {"x": 1, "y": null, "z": {"w": 1}},
                   "list": [{"x": 1, "y": 2}, {"x": null}], "keep": null}),
        )],
    )
    .await;
    assert_eq!(sink.wait_for_count(1).await, 1, "log:\n{}", daemon.log());
    let docs = sink.documents().await;
    let mut written = docs.get("1").cloned().unwrap_or_else(|| panic!("{docs:?}"));
    let meta = written.remove("meta");
    assert_eq!(
        written,
        d(r#"{"_id": 1, "b": 1, "sub": {"x": 1, "z": {}}, "list": [{"x": 1}, {}]}"#),
        "renamed before the projection (so `b` stays), `sub.*` one level deep, nulls removed"
    );
    let meta = match meta {
        Some(Bson::Document(meta)) => meta,
        other => panic!("no Kafka metadata: {other:?}"),
    };
    assert_eq!(meta.get_str("topic").ok(), Some(sink.topic.as_str()));
    assert_eq!(meta.get_i64("offset").ok(), Some(0));
    sink.stop(daemon).await;
}

#[tokio::test]
async fn a_record_naming_no_valid_database_goes_to_the_configured_one_with_error_if_invalid_false()
{
    use serde_json::json;
    let other = common::unique("sinkpp_other");
    let sink = sink(
        "id_strategy = \"provided_in_value\"\nnamespace_from = \"value\"\ndatabase_field = \"db\"\nerror_if_invalid = false",
    )
    .await;
    let daemon = sink.start();
    common::produce(
        &sink.topic,
        &[
            common::Outgoing::json(json!(null), json!({"_id": 1, "db": other})),
            common::Outgoing::json(json!(null), json!({"_id": 2, "db": 5})),
            common::Outgoing::json(json!(null), json!({"_id": 3})),
        ],
    )
    .await;
    assert_eq!(sink.wait_for_count(2).await, 2, "log:\n{}", daemon.log());
    let ids: Vec<String> = sink.documents().await.into_keys().collect();
    assert_eq!(ids, ["2", "3"]);
    let client = common::mongo_client().await;
    let elsewhere = client.database(&other).collection::<Document>("docs");
    let found = common::eventually(common::sink::WAIT, || async {
        elsewhere
            .count_documents(mongodb::bson::doc! {"_id": 1})
            .await
            .unwrap_or(0)
            == 1
    })
    .await;
    assert!(
        found,
        "the record naming `{other}` was not written there; log:\n{}",
        daemon.log()
    );
    let _ = client.database(&other).drop().await;
    sink.stop(daemon).await;
}
