//! Source features whose other tests would still pass if they broke, proved end to end: a
//! `pipeline` filter keeps what it drops out of Kafka, `full_document = "updateLookup"`
//! publishes the looked-up document (not null), and a dead-lettered event carries every
//! header that says what it was and why.

mod common;

use std::time::Duration;

use mongodb::bson::{doc, Document};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

/// A source on `db.coll` with `extra` in its table.
fn source_config(port: u16, name: &str, db: &str, coll: &str, extra: &str) -> String {
    common::config_toml(
        port,
        &format!(
            "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"{coll}\"\ncheckpoint_interval = \"100ms\"\nmax_await_time = \"200ms\"\n{extra}\n"
        ),
    )
}

/// The collection, created (some servers open change streams only on existing ones).
async fn collection(db: &str, coll: &str) -> mongodb::Collection<Document> {
    let collection = common::mongo_client()
        .await
        .database(db)
        .collection::<Document>(coll);
    collection
        .insert_one(doc! { "_id": -1, "seed": true })
        .await
        .expect("seed");
    collection
}

fn key_id(record: &common::Consumed) -> i64 {
    record.key_json()["_id"].as_i64().unwrap_or(-99)
}

#[tokio::test]
async fn a_pipeline_filter_keeps_what_it_drops_out_of_kafka() {
    let db = common::unique("srcproof");
    let coll = collection(&db, "c").await;
    let name = common::unique("filter");
    let mut daemon = common::Daemon::start(&source_config(
        common::free_port(),
        &name,
        &db,
        "c",
        "pipeline = '[{\"$match\": {\"operationType\": \"insert\", \"fullDocument.keep\": true}}]'",
    ));
    daemon.wait_for_log("change stream open", 1, WAIT);
    for (id, keep) in [(1, false), (2, true), (3, false), (4, true)] {
        coll.insert_one(doc! { "_id": id, "keep": keep })
            .await
            .expect("insert");
    }
    coll.update_one(doc! {"_id": 2}, doc! {"$set": {"touched": true}})
        .await
        .expect("update");
    // The last change passes the filter: once it is there, everything before it was read.
    coll.insert_one(doc! { "_id": 5, "keep": true })
        .await
        .expect("insert");
    let topic = format!("{db}.c");
    let records =
        common::consume_until(&topic, WAIT, false, |r| r.iter().any(|r| key_id(r) == 5)).await;
    let ids: Vec<i64> = records.iter().map(key_id).collect();
    assert_eq!(
        ids,
        [2, 4, 5],
        "only the inserts with keep = true: {records:?}\nlog:\n{}",
        daemon.log()
    );
    for record in &records {
        assert_eq!(record.json()["operationType"], json!("insert"));
        assert_eq!(record.json()["fullDocument"]["keep"], json!(true));
    }
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

#[tokio::test]
async fn update_lookup_publishes_the_document_as_it_is_after_the_update() {
    let db = common::unique("srcproof");
    let coll = collection(&db, "c").await;
    let topic = format!("{db}.c");
    for (mode, extra) in [
        ("updateLookup", "full_document = \"updateLookup\""),
        ("default", ""),
    ] {
        let name = common::unique("lookup");
        let mut daemon = common::Daemon::start(&source_config(
            common::free_port(),
            &name,
            &db,
            "c",
            &format!("{extra}\ntopic_suffix = \"{mode}\""),
        ));
        daemon.wait_for_log("change stream open", 1, WAIT);
        let id = if mode == "default" { 2 } else { 1 };
        coll.insert_one(doc! { "_id": id, "a": 1, "b": "x" })
            .await
            .expect("insert");
        coll.update_one(
            doc! {"_id": id},
            doc! {"$set": {"a": 2, "c": [1, 2]}, "$unset": {"b": ""}},
        )
        .await
        .expect("update");
        // Nothing changes the document after the update, so the lookup can only find this.
        let records = common::consume(&format!("{topic}.{mode}"), 2, WAIT, false).await;
        assert_eq!(records.len(), 2, "{mode}; log:\n{}", daemon.log());
        let update = records[1].json();
        assert_eq!(update["operationType"], json!("update"), "{update}");
        if mode == "updateLookup" {
            assert_eq!(
                update["fullDocument"],
                json!({"_id": id, "a": 2, "c": [1, 2]}),
                "the looked-up document: {update}"
            );
        } else {
            assert!(
                update
                    .get("fullDocument")
                    .is_none_or(serde_json::Value::is_null),
                "no lookup without full_document: {update}"
            );
        }
        assert_eq!(
            update["updateDescription"]["updatedFields"],
            json!({"a": 2, "c": [1, 2]})
        );
        daemon.terminate(WAIT);
    }
    let _ = common::mongo_client().await.database(&db).drop().await;
}

#[tokio::test]
async fn a_dead_lettered_event_says_what_it_was_and_why() {
    let db = common::unique("srcproof");
    let coll = collection(&db, "c").await;
    let dlq = common::unique("dlq");
    let name = common::unique("deadletter");
    let config = source_config(
        common::free_port(),
        &name,
        &db,
        "c",
        &format!("[source.errors]\ntolerance = \"all\"\ndead_letter_topic = \"{dlq}\""),
    )
    .replace(
        "[kafka]\n",
        "[kafka]\nproducer = { \"message.max.bytes\" = 20000 }\n",
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    coll.insert_one(doc! { "_id": 7, "big": "y".repeat(50_000) })
        .await
        .expect("insert");
    let dead = common::consume(&dlq, 1, WAIT, false).await;
    assert_eq!(dead.len(), 1, "log:\n{}", daemon.log());
    let record = &dead[0];
    assert_eq!(record.key_json(), json!({"_id": 7}));
    assert!(
        record.value.is_none(),
        "the value that did not fit is left out"
    );
    let header = |key: &str| -> String {
        record
            .headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| panic!("no header {key}: {:?}", record.headers))
    };
    assert_eq!(header("mkb.pipeline"), name);
    assert_eq!(header("mkb.topic"), format!("{db}.c"));
    assert_eq!(header("mkb.error.stage"), "too_large");
    let origin = header("mkb.origin");
    assert!(
        origin.starts_with(&format!("{db}.c ")) && origin.contains('7'),
        "the origin names the namespace and the document key: {origin}"
    );
    let reason = header("mkb.error");
    assert!(
        reason.contains("20000") || reason.to_lowercase().contains("large"),
        "the reason says it was too large: {reason}"
    );
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

/// Seconds since the epoch now.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_timestamp_start_publishes_the_changes_from_that_time_on() {
    // For each way of writing the time: a change before it, then the time, then changes
    // after it made before the pipeline starts, and changes after the start.
    for form in ["rfc3339", "seconds", "bson_timestamp"] {
        let db = common::unique("srcproof");
        let coll = collection(&db, "c").await;
        coll.insert_one(doc! { "_id": 1, "when": "before" })
            .await
            .expect("insert");
        // Whole seconds apart: a BSON timestamp's time has a resolution of one second.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let start = now_secs();
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        coll.insert_one(doc! { "_id": 2, "when": "after the time, before the start" })
            .await
            .expect("insert");
        let text = match form {
            "rfc3339" => {
                humantime::format_rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(start))
                    .to_string()
            }
            "seconds" => start.to_string(),
            _ => format!("{{\"$timestamp\": {{\"t\": {start}, \"i\": 0}}}}"),
        };
        let name = common::unique("tsstart");
        let mut daemon = common::Daemon::start(&source_config(
            common::free_port(),
            &name,
            &db,
            "c",
            &format!("startup_mode = \"timestamp\"\nstartup_timestamp = '{text}'"),
        ));
        daemon.wait_for_log("change stream open", 1, WAIT);
        coll.insert_one(doc! { "_id": 3, "when": "after the start" })
            .await
            .expect("insert");
        let topic = format!("{db}.c");
        let records =
            common::consume_until(&topic, WAIT, false, |r| r.iter().any(|r| key_id(r) == 3)).await;
        let ids: Vec<i64> = records.iter().map(key_id).collect();
        assert_eq!(
            ids,
            [2, 3],
            "{form} ({text}): the change before the time is not published, the ones after are; log:\n{}",
            daemon.log()
        );
        daemon.terminate(WAIT);
        let _ = common::mongo_client().await.database(&db).drop().await;
    }
}

#[tokio::test]
async fn regex_keys_of_the_namespace_map_route_whole_families_of_collections() {
    let db = common::unique("srcproof");
    let client = common::mongo_client().await;
    for coll in ["archive_2023", "archive_2024", "live"] {
        client
            .database(&db)
            .collection::<Document>(coll)
            .insert_one(doc! {"_id": -1, "seed": true})
            .await
            .expect("seed");
    }
    let name = common::unique("regexmap");
    let config = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\nmax_await_time = \"200ms\"\ncheckpoint_interval = \"100ms\"\n[source.topic_namespace_map]\n\"/\\\\.archive_[0-9]+$/\" = \"{{db}}-archive\"\n"
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    for (coll, id) in [("archive_2023", 1), ("archive_2024", 2), ("live", 3)] {
        client
            .database(&db)
            .collection::<Document>(coll)
            .insert_one(doc! {"_id": id})
            .await
            .expect("insert");
    }
    let archive = common::consume(&format!("{db}-archive"), 2, WAIT, false).await;
    let mut ids: Vec<i64> = archive.iter().map(key_id).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [1, 2],
        "both archives in one topic; log:\n{}",
        daemon.log()
    );
    let live = common::consume(&format!("{db}.live"), 1, WAIT, false).await;
    assert_eq!(live.iter().map(key_id).collect::<Vec<_>>(), [3]);
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

#[tokio::test]
async fn a_source_dead_letter_can_carry_kafka_connects_headers() {
    let db = common::unique("srcproof");
    let coll = collection(&db, "c").await;
    let dlq = common::unique("dlq");
    let name = common::unique("connecthdr");
    let config = source_config(
        common::free_port(),
        &name,
        &db,
        "c",
        &format!("[source.errors]\ntolerance = \"all\"\ndead_letter_topic = \"{dlq}\"\ndead_letter_headers = \"connect\""),
    )
    .replace(
        "[kafka]\n",
        "[kafka]\nproducer = { \"message.max.bytes\" = 20000 }\n",
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    coll.insert_one(doc! { "_id": 8, "big": "y".repeat(50_000) })
        .await
        .expect("insert");
    let dead = common::consume(&dlq, 1, WAIT, false).await;
    assert_eq!(dead.len(), 1, "log:\n{}", daemon.log());
    let header = |key: &str| -> Option<String> {
        dead[0]
            .headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("__connect.errors.topic"), Some(format!("{db}.c")));
    assert_eq!(
        header("__connect.errors.connector.name"),
        Some(name.clone())
    );
    assert_eq!(
        header("__connect.errors.stage").as_deref(),
        Some("KAFKA_PRODUCE")
    );
    assert!(header("__connect.errors.exception.message").is_some_and(|m| !m.is_empty()));
    assert_eq!(
        header("mkb.error"),
        None,
        "`connect` only: {:?}",
        dead[0].headers
    );
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}
