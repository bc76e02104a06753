//! The sink's post-processors as the MongoDB Kafka Connector's: the allow/block projections
//! with `*` and `**` (the connector's `FieldProjectorTest` tables, run through our
//! `PostProcessor`), the null-field remover, the configured chain order, and, against the real
//! services, documents written projected, renamed and without nulls.

mod common;

use mongo_kafka_bridge::config::SinkConfig;
use mongo_kafka_bridge::sink::id::IdAssigner;
use mongo_kafka_bridge::sink::model::SinkRecord;
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
