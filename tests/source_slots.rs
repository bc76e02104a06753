//! Slots (issue 14): a source pipeline's readers hashed onto `slots`, one partition of the
//! checkpoint topic each, checkpoints written to their slot's partition, and the
//! one-partition checkpoint topic of a daemon without slots migrated without losing a
//! position.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mongo_kafka_bridge::source::slots::slot_of;
use mongodb::bson::{doc, Document};

const WAIT: Duration = Duration::from_secs(90);
const COLLECTIONS: usize = 4;

fn key_ids(records: &[common::Consumed]) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for id in records
        .iter()
        .filter_map(|r| r.key.as_deref())
        .filter_map(|k| serde_json::from_slice::<serde_json::Value>(k).ok())
        .filter_map(|k| k["_id"].as_i64())
    {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

async fn insert(colls: &[mongodb::Collection<Document>], ids: std::ops::Range<i64>) {
    for coll in colls {
        for id in ids.clone() {
            coll.insert_one(doc! { "_id": id }).await.expect("insert");
        }
    }
}

/// A daemon without slots kept every checkpoint in partition 0 of a one-partition topic
/// (`slots = 1` does the same). Started with the default 16 slots, the daemon grows the
/// topic to 16 partitions, resumes every reader at its old checkpoint (the changes made
/// while it was down arrive), and writes each reader's checkpoints to its slot's partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_partition_checkpoint_topic_is_migrated_without_losing_positions() {
    let db = common::unique("own_slots");
    let client = common::mongo_client().await;
    let names: Vec<String> = (0..COLLECTIONS).map(|i| format!("c{i}")).collect();
    let mut colls = Vec::new();
    for name in &names {
        let coll = client.database(&db).collection::<Document>(name);
        coll.insert_one(doc! { "_id": -1_i64 }).await.expect("seed");
        common::create_topic(&format!("{db}.{name}"), 1).await;
        colls.push(coll);
    }
    let checkpoints = common::unique("own_slotsckpt");
    let pipeline = common::unique("own_slotssrc");
    let port = common::free_port();
    let config = |slots: &str| {
        common::config_toml(
            port,
            &format!(
                "[[source]]\nname = \"{pipeline}\"\ndatabase = \"{db}\"\ncollection = {names:?}\nmax_await_time = \"200ms\"\ncheckpoint_interval = \"100ms\"\ncheckpoint_topic = \"{checkpoints}\"\n{slots}\n"
            ),
        )
    };
    let mut before = common::Daemon::start(&config("slots = 1"));
    before.wait_for_log("change stream open", COLLECTIONS, WAIT);
    insert(&colls, 0..10).await;
    for name in &names {
        let records = common::consume_until(&format!("{db}.{name}"), WAIT, false, |r| {
            key_ids(r).len() >= 10
        })
        .await;
        assert_eq!(
            key_ids(&records).len(),
            10,
            "{name}; log:\n{}",
            before.log()
        );
    }
    before.terminate(WAIT);
    assert_eq!(
        common::partition_count(&checkpoints),
        1,
        "slots = 1 is one partition"
    );

    // Changes while no daemon runs: only a kept checkpoint finds them.
    insert(&colls, 10..20).await;
    let mut after = common::Daemon::start(&config(""));
    after.wait_for_log("change stream open", COLLECTIONS, WAIT);
    let log = after.log();
    assert!(
        log.contains("grew the checkpoint topic"),
        "the topic was not grown; log:\n{log}"
    );
    assert_eq!(
        log.matches("start=\"checkpoint\"").count(),
        COLLECTIONS,
        "every reader resumes at its checkpoint; log:\n{log}"
    );
    assert_eq!(common::partition_count(&checkpoints), 16);
    insert(&colls, 20..25).await;
    for name in &names {
        let expected: BTreeSet<i64> = (0..25).collect();
        let records = common::consume_until(&format!("{db}.{name}"), WAIT, false, |r| {
            key_ids(r)
                .keys()
                .copied()
                .collect::<BTreeSet<_>>()
                .is_superset(&expected)
        })
        .await;
        let arrived: BTreeSet<i64> = key_ids(&records).keys().copied().collect();
        let missing: Vec<_> = expected.difference(&arrived).collect();
        assert!(
            missing.is_empty(),
            "{name}: missing {missing:?} after the migration; log:\n{}",
            after.log()
        );
    }
    after.terminate(WAIT);

    // Every checkpoint written after the migration is in its reader's slot's partition;
    // those before it in partition 0.
    let namespace = |record: &common::Consumed| {
        record.key_json()["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let in_own_slot = |records: &[common::Consumed]| -> BTreeSet<String> {
        records
            .iter()
            .filter(|r| r.partition == slot_of(&pipeline, &namespace(r), 16))
            .map(namespace)
            .collect()
    };
    let records = common::consume_until(&checkpoints, WAIT, false, |r| {
        in_own_slot(r).len() >= COLLECTIONS
    })
    .await;
    for record in records.iter().filter(|r| r.partition != 0) {
        let namespace = namespace(record);
        let slot = slot_of(&pipeline, &namespace, 16);
        assert_eq!(
            record.partition, slot,
            "the checkpoint of {namespace} is in partition {}, its slot is {slot}",
            record.partition
        );
    }
    let expected: BTreeSet<String> = names.iter().map(|n| format!("{db}.{n}")).collect();
    assert_eq!(
        in_own_slot(&records),
        expected,
        "readers with a checkpoint in their slot's partition"
    );
}

/// One daemon owns every slot of its pipeline, as before slots: `/status` lists them (16 by
/// default) with the readers hashed onto each, and `mkb_source_owned_slots` counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_daemon_owns_every_slot_and_says_which_readers_each_holds() {
    let db = common::unique("own_status");
    let client = common::mongo_client().await;
    let names: Vec<String> = (0..COLLECTIONS).map(|i| format!("c{i}")).collect();
    for name in &names {
        let coll = client.database(&db).collection::<Document>(name);
        coll.insert_one(doc! { "_id": -1_i64 }).await.expect("seed");
    }
    let pipeline = common::unique("own_statussrc");
    let port = common::free_port();
    let config = common::config_toml(
        port,
        &format!(
            "[[source]]\nname = \"{pipeline}\"\ndatabase = \"{db}\"\ncollection = {names:?}\nmax_await_time = \"200ms\"\n"
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", COLLECTIONS, WAIT);
    let body = common::wait_for_status(port, "/status", 200, WAIT);
    let status: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"));
    let slots = &status["pipelines"][&pipeline]["slots"];
    assert_eq!(slots["count"], 16, "{body}");
    let owned = slots["owned"]
        .as_object()
        .unwrap_or_else(|| panic!("no owned slots: {body}"));
    let numbers: BTreeSet<i32> = owned.keys().filter_map(|k| k.parse().ok()).collect();
    assert_eq!(numbers, (0..16).collect(), "{body}");
    for name in &names {
        let namespace = format!("{db}.{name}");
        let slot = slot_of(&pipeline, &namespace, 16).to_string();
        let readers = owned[&slot].as_array().cloned().unwrap_or_default();
        assert!(
            readers.contains(&serde_json::Value::String(namespace.clone())),
            "{namespace} is not under its slot {slot}: {body}"
        );
    }
    let listed: usize = owned
        .values()
        .map(|r| r.as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(listed, COLLECTIONS, "each reader once: {body}");
    let label = format!("pipeline=\"{pipeline}\"");
    assert_eq!(
        common::metric_with(port, "mkb_source_owned_slots", &[&label]),
        16.0
    );
    daemon.terminate(WAIT);
}
