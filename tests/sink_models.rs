//! The MongoDB Kafka Connector's write models and id strategies that came after the first
//! ones, end to end: records produced to Kafka, written by the daemon binary, read back from
//! MongoDB. (The conversions themselves are unit-tested in `src/sink/write_model.rs` and
//! `src/sink/id.rs`.)

mod common;

use common::sink::{Sink, WAIT};
use common::Outgoing;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Bson, Document};
use serde_json::json;

/// A tombstone keyed by `key`.
fn tombstone(key: serde_json::Value) -> Outgoing {
    Outgoing {
        key: Some(key.to_string().into_bytes()),
        value: None,
        ..Outgoing::default()
    }
}

/// Waits until `check` holds for the sink's documents; fails naming them and the log.
async fn wait_for_documents(
    sink: &Sink,
    daemon: &common::Daemon,
    what: &str,
    check: impl Fn(&[Document]) -> bool,
) {
    let done = common::eventually(WAIT, || async {
        let docs: Vec<Document> = sink.documents().await.into_values().collect();
        check(&docs)
    })
    .await;
    assert!(
        done,
        "{what}: {:?}; log:\n{}",
        sink.documents().await,
        daemon.log()
    );
}

fn by_sku<'a>(docs: &'a [Document], sku: &str) -> Option<&'a Document> {
    docs.iter().find(|d| d.get_str("sku").ok() == Some(sku))
}

#[tokio::test]
async fn update_one_sets_fields_and_keeps_the_others() {
    let sink = Sink::new(
        1,
        "id_strategy = \"provided_in_value\"\nwrite_model = \"update_one\"",
    )
    .await;
    let daemon = sink.start();
    common::produce(
        &sink.topic,
        &[
            Outgoing::json(json!(null), json!({"_id": 1, "a": 1, "b": 1})),
            Outgoing::json(json!(null), json!({"_id": 1, "a": 2})),
        ],
    )
    .await;
    wait_for_documents(&sink, &daemon, "a = 2, b kept", |docs| {
        docs.len() == 1 && docs[0].get_i32("a").ok() == Some(2)
    })
    .await;
    let docs = sink.documents().await;
    let stored = &docs["1"];
    assert_eq!(stored.get_i32("b").ok(), Some(1), "{stored}");
    assert!(
        stored.get("_modifiedTS").is_none(),
        "update_one adds no timestamps: {stored}"
    );
    sink.stop(daemon).await;
}

#[tokio::test]
async fn business_key_models_update_and_delete_by_the_key_fields() {
    // update_business_key_timestamps: one document per sku, the newest fields, both times.
    let sink = Sink::new(
        1,
        "write_model = \"update_business_key_timestamps\"\nbusiness_key_fields = [\"sku\"]",
    )
    .await;
    let daemon = sink.start();
    common::produce(
        &sink.topic,
        &[
            Outgoing::json(json!(null), json!({"sku": "A", "q": 1, "first": true})),
            Outgoing::json(json!(null), json!({"sku": "A", "q": 2})),
            Outgoing::json(json!(null), json!({"sku": "B", "q": 3})),
        ],
    )
    .await;
    wait_for_documents(&sink, &daemon, "A at q = 2 and B", |docs| {
        docs.len() == 2 && by_sku(docs, "A").and_then(|d| d.get_i32("q").ok()) == Some(2)
    })
    .await;
    let docs: Vec<Document> = sink.documents().await.into_values().collect();
    let a = by_sku(&docs, "A").expect("A");
    assert_eq!(
        a.get_bool("first").ok(),
        Some(true),
        "$set keeps fields: {a}"
    );
    let inserted = a.get_datetime("_insertedTS").expect("_insertedTS");
    let modified = a.get_datetime("_modifiedTS").expect("_modifiedTS");
    assert!(modified >= inserted, "{a}");
    sink.stop(daemon).await;

    // delete_business_key: the record's value names what to delete.
    let sink = Sink::new(
        1,
        "write_model = \"delete_business_key\"\nbusiness_key_fields = [\"sku\", \"size\"]",
    )
    .await;
    sink.collection()
        .await
        .insert_many([
            doc! {"sku": "A", "size": 1},
            doc! {"sku": "A", "size": 2},
            doc! {"sku": "B", "size": 1},
        ])
        .await
        .expect("seed");
    let daemon = sink.start();
    common::produce(
        &sink.topic,
        &[Outgoing::json(
            json!(null),
            json!({"sku": "A", "size": 1, "other": "ignored"}),
        )],
    )
    .await;
    wait_for_documents(&sink, &daemon, "A/1 deleted", |docs| docs.len() == 2).await;
    let docs: Vec<Document> = sink.documents().await.into_values().collect();
    let left: Vec<(String, i32)> = docs
        .iter()
        .map(|d| {
            (
                d.get_str("sku").unwrap_or_default().to_owned(),
                d.get_i32("size").unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        left.contains(&("A".into(), 2)) && left.contains(&("B".into(), 1)),
        "{left:?}"
    );
    sink.stop(daemon).await;

    // delete_write_model = delete_tombstone_business_key: tombstones delete by their key's
    // business key fields, records with values are replaced by it.
    let sink = Sink::new(
        1,
        "write_model = \"replace_business_key\"\nbusiness_key_fields = [\"sku\"]\ndelete_on_null_values = true\ndelete_write_model = \"delete_tombstone_business_key\"",
    )
    .await;
    let daemon = sink.start();
    common::produce(
        &sink.topic,
        &[
            Outgoing::json(json!({"sku": "A"}), json!({"sku": "A", "q": 1})),
            Outgoing::json(json!({"sku": "B"}), json!({"sku": "B", "q": 2})),
            tombstone(json!({"sku": "A"})),
        ],
    )
    .await;
    wait_for_documents(&sink, &daemon, "only B left", |docs| {
        docs.len() == 1 && by_sku(docs, "B").is_some()
    })
    .await;
    sink.stop(daemon).await;
}

#[tokio::test]
async fn uuid_and_block_list_id_strategies_set_the_ids_they_promise() {
    let text = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    let uuid = bson::Uuid::parse_str(text).expect("uuid");
    for (strategy, key, value) in [
        (
            "uuid_provided_in_key",
            json!({"_id": text}),
            json!({"v": 1}),
        ),
        (
            "uuid_provided_in_value",
            json!(null),
            json!({"_id": text.replace('-', ""), "v": 1}),
        ),
    ] {
        let sink = Sink::new(1, &format!("id_strategy = \"{strategy}\"")).await;
        let daemon = sink.start();
        common::produce(&sink.topic, &[Outgoing::json(key, value)]).await;
        assert_eq!(
            sink.wait_for_count(1).await,
            1,
            "{strategy}; log:\n{}",
            daemon.log()
        );
        let docs = sink.documents().await;
        let stored = docs.values().next().expect("a document");
        match stored.get("_id") {
            Some(Bson::Binary(b)) => {
                assert_eq!(b.subtype, BinarySubtype::Uuid, "{strategy}: {stored}");
                assert_eq!(b.bytes, uuid.bytes().to_vec(), "{strategy}: {stored}");
            }
            other => panic!("{strategy}: _id {other:?}, not a binary UUID"),
        }
        assert_eq!(stored.get_i32("v").ok(), Some(1), "{strategy}: {stored}");
        sink.stop(daemon).await;
    }

    let sink = Sink::new(
        1,
        "id_strategy = \"partial_value\"\nid_fields = [\"qty\", \"note\"]\nid_fields_projection = \"block\"",
    )
    .await;
    let daemon = sink.start();
    common::produce(
        &sink.topic,
        &[Outgoing::json(
            json!(null),
            json!({"sku": "X", "region": "eu", "qty": 5, "note": "n"}),
        )],
    )
    .await;
    assert_eq!(sink.wait_for_count(1).await, 1, "log:\n{}", daemon.log());
    let docs = sink.documents().await;
    let stored = docs.values().next().expect("a document");
    assert_eq!(
        stored.get("_id"),
        Some(&Bson::Document(doc! {"sku": "X", "region": "eu"})),
        "{stored}"
    );
    assert_eq!(stored.get_i32("qty").ok(), Some(5), "{stored}");
    sink.stop(daemon).await;
}
