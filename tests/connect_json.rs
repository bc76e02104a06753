//! Kafka Connect's `JsonConverter` envelope (`schemas.enable=true`) read by a sink pipeline
//! with `key_format` / `value_format = "connect_json"`, against the local Kafka and MongoDB.

mod common;

use common::sink::Sink;
use common::Outgoing;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, DateTime, Decimal128};
use serde_json::json;

#[tokio::test]
async fn connect_json_envelopes_are_written_with_their_schema_types() {
    let sink = Sink::new(
        1,
        "key_format = \"connect_json\"\nvalue_format = \"connect_json\"\nid_strategy = \"provided_in_key\"",
    )
    .await;
    let daemon = sink.start();
    // As the JsonConverter writes a struct key and a struct value with logical types.
    let key = json!({
        "schema": { "type": "struct", "fields": [{ "field": "_id", "type": "int64" }] },
        "payload": { "_id": 42 },
    });
    let value = json!({
        "schema": {
            "type": "struct", "name": "order",
            "fields": [
                { "field": "at", "type": "int64", "name": "org.apache.kafka.connect.data.Timestamp" },
                { "field": "price", "type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": { "scale": "2" } },
                { "field": "blob", "type": "bytes" },
                { "field": "qty", "type": "int32" },
            ],
        },
        "payload": { "at": 1_700_000_000_123_i64, "price": "A+c=", "blob": "AAH/", "qty": 3 },
    });
    common::produce(&sink.topic, &[Outgoing::json(key, value)]).await;
    let count = sink.wait_for_count(1).await;
    assert_eq!(count, 1, "log:\n{}", daemon.log());
    let docs = sink.documents().await;
    let written = docs.values().next().expect("a document");
    assert_eq!(
        written,
        &doc! {
            "_id": 42_i64,
            "at": DateTime::from_millis(1_700_000_000_123),
            // 0x03e7 = 999: 9.99 at scale 2.
            "price": "9.99".parse::<Decimal128>().expect("decimal"),
            "blob": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 255] },
            "qty": 3,
        },
        "log:\n{}",
        daemon.log()
    );
    sink.stop(daemon).await;
}
