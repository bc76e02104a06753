//! Source pipelines end to end: the daemon binary reads MongoDB change streams and
//! publishes to Kafka; the tests write to MongoDB and read the topics back.

mod common;

use std::time::Duration;

use mongodb::bson::{doc, Document};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// A daemon with one source pipeline on `db.coll` (plus `extra` keys in the `[[source]]`).
fn start(db: &str, coll: &str, extra: &str) -> (common::Daemon, u16) {
    let port = common::free_port();
    let source = format!(
        "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"{coll}\"\ncheckpoint_interval = \"100ms\"\nmax_await_time = \"200ms\"\n{extra}\n",
        name = common::unique("src"),
    );
    let mut daemon = common::Daemon::start(&common::config_toml(port, &source));
    daemon.wait_for_log("change stream open", 1, WAIT);
    (daemon, port)
}

#[tokio::test]
async fn crud_events_arrive_in_order_keyed_by_document() {
    let db_name = common::unique("srcdb");
    let client = common::mongo_client().await;
    let coll = client.database(&db_name).collection::<Document>("orders");
    coll.insert_one(doc! { "_id": "seed" }).await.expect("seed");
    let (mut daemon, _) = start(&db_name, "orders", "full_document = \"updateLookup\"");

    coll.insert_one(doc! { "_id": 1, "status": "new", "qty": 2 })
        .await
        .expect("insert");
    coll.update_one(doc! { "_id": 1 }, doc! { "$set": { "status": "paid" } })
        .await
        .expect("update");
    coll.replace_one(doc! { "_id": 1 }, doc! { "status": "shipped", "qty": 3 })
        .await
        .expect("replace");
    coll.insert_one(doc! { "_id": 2, "status": "new" })
        .await
        .expect("insert 2");
    coll.delete_one(doc! { "_id": 1 }).await.expect("delete");

    let topic = format!("{db_name}.orders");
    let records = common::consume(&topic, 5, WAIT, false).await;
    assert_eq!(
        records.len(),
        5,
        "records: {records:?}\nlog:\n{}",
        daemon.log()
    );
    let ops: Vec<(serde_json::Value, String)> = records
        .iter()
        .map(|r| {
            (
                r.key_json(),
                r.json()["operationType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            (json!({"_id": 1}), "insert".to_owned()),
            (json!({"_id": 1}), "update".to_owned()),
            (json!({"_id": 1}), "replace".to_owned()),
            (json!({"_id": 2}), "insert".to_owned()),
            (json!({"_id": 1}), "delete".to_owned()),
        ]
    );
    let insert = records[0].json();
    assert_eq!(
        insert["fullDocument"],
        json!({"_id": 1, "status": "new", "qty": 2})
    );
    assert_eq!(insert["ns"], json!({"db": db_name, "coll": "orders"}));
    assert!(insert["_id"]["_data"].is_string(), "{insert}");
    let update = records[1].json();
    assert_eq!(
        update["updateDescription"]["updatedFields"],
        json!({"status": "paid"})
    );
    assert_eq!(
        update["fullDocument"],
        json!({"_id": 1, "status": "paid", "qty": 2})
    );
    assert_eq!(
        records[2].json()["fullDocument"],
        json!({"_id": 1, "status": "shipped", "qty": 3})
    );

    daemon.signal("TERM");
    assert_eq!(daemon.wait(WAIT).code(), Some(0), "log:\n{}", daemon.log());
    client.database(&db_name).drop().await.expect("drop");
}
