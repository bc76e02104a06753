//! The source pipeline's plumbing end to end, where it used to lose, repeat or stall data:
//! a full librdkafka queue under checkpoints and commits, readers restarted before their
//! first checkpoint, and configurations that used to drop events silently.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use mongodb::bson::{doc, Document};

const WAIT: Duration = Duration::from_secs(90);

fn source(name: &str, db: &str, coll: &str, extra: &str) -> String {
    format!(
        "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"{coll}\"\nmax_await_time = \"200ms\"\n{extra}\n"
    )
}

/// The `_id`s in the keys of `records` (as relaxed JSON writes them).
fn key_ids(records: &[common::Consumed]) -> BTreeSet<i64> {
    records
        .iter()
        .filter_map(|r| r.key.as_deref())
        .filter_map(|k| serde_json::from_slice::<serde_json::Value>(k).ok())
        .filter_map(|k| k["_id"].as_i64())
        .collect()
}

async fn collection(db: &str, coll: &str) -> mongodb::Collection<Document> {
    let collection = common::mongo_client()
        .await
        .database(db)
        .collection::<Document>(coll);
    // Some servers only open change streams on collections that exist.
    collection
        .insert_one(doc! { "_id": -1_i64 })
        .await
        .expect("seed");
    collection
}

/// With room for one message in librdkafka's queue, checkpoints (and exactly-once commits)
/// keep meeting a full queue; each `delivery` pipeline must wait for room, never fail.
async fn a_full_queue_slows_checkpoints(delivery: &str) {
    const DOCS: i64 = 300;
    let db = common::unique("qfull");
    let coll = collection(&db, "c").await;
    let name = common::unique("qfsrc");
    let port = common::free_port();
    let config = common::config_toml(
        port,
        &format!(
            "[kafka.producer]\n\"queue.buffering.max.messages\" = 1\n{}",
            source(
                &name,
                &db,
                "c",
                &format!("checkpoint_interval = \"20ms\"\ndelivery = \"{delivery}\"")
            )
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    for id in 0..DOCS {
        coll.insert_one(doc! { "_id": id, "v": id })
            .await
            .expect("insert");
    }
    let expected: BTreeSet<i64> = (0..DOCS).collect();
    let records = common::consume_until(
        &format!("{db}.c"),
        WAIT,
        delivery == "exactly-once",
        |records| key_ids(records).is_superset(&expected),
    )
    .await;
    let arrived = key_ids(&records);
    let missing: Vec<_> = expected.difference(&arrived).collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}; log:\n{}",
        daemon.log()
    );
    let pipeline = format!("pipeline=\"{name}\"");
    let restarts = common::metric_with(port, "mkb_actor_restarts_total", &[&pipeline]);
    let log = daemon.log();
    assert!(
        restarts == 0.0 && !log.contains("producer failed"),
        "a full queue restarted the pipeline {restarts} times; log:\n{log}"
    );
    let checkpoints =
        common::metric_with(port, "mkb_source_checkpoints_written_total", &[&pipeline]);
    assert!(checkpoints > 0.0, "no checkpoint written; log:\n{log}");
    daemon.terminate(WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_librdkafka_queue_slows_checkpoints_instead_of_failing_the_pipeline() {
    a_full_queue_slows_checkpoints("at-least-once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_librdkafka_queue_slows_exactly_once_commits_instead_of_failing_them() {
    a_full_queue_slows_checkpoints("exactly-once").await;
}
