//! Sink features whose other tests would still pass if they broke, proved end to end: writes
//! that fail for a while are retried and counted, a write failing past `max_num_retries`
//! gives up and the pipeline starts again from its committed offsets, a batch larger than
//! one command is split, a statement MongoDB refuses is isolated from the rest of its batch,
//! and namespaces are taken from the record key.

mod common;

use std::time::Duration;

use common::proxy::{self, Proxy};
use common::sink::{header, Sink, WAIT};
use common::Outgoing;
use mongodb::bson::{doc, Document};
use serde_json::json;

fn keyed(id: i64, value: serde_json::Value) -> Outgoing {
    Outgoing::json(json!({ "_id": id }), value)
}

/// `n` records keyed and valued by ids from `from`.
fn records(from: i64, n: i64) -> Vec<Outgoing> {
    (from..from + n)
        .map(|i| keyed(i, json!({"_id": i, "n": i})))
        .collect()
}

/// The pipeline's restarts of itself (the sink's give-up path), from `/metrics`.
fn pipeline_restarts(sink: &Sink) -> f64 {
    common::metric_with(
        sink.port,
        "mkb_actor_restarts_total",
        &[
            "actor=\"sink_pipeline\"",
            &format!("pipeline=\"{}\"", sink.name),
        ],
    )
}

fn retries(sink: &Sink) -> f64 {
    common::metric_with(
        sink.port,
        "mkb_sink_write_retries_total",
        &[&format!("pipeline=\"{}\"", sink.name)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_failing_for_a_while_are_retried_and_counted_without_a_restart() {
    let proxy = Proxy::start(&proxy::mongodb_target(&common::mongodb_uri()));
    let sink = Sink::new(
        1,
        "id_strategy = \"provided_in_value\"\nmax_num_retries = 30",
    )
    .await;
    let mut daemon = common::Daemon::start(&proxy::config_through(&sink.config(), &proxy));
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    common::produce(&sink.topic, &records(0, 20)).await;
    assert_eq!(sink.wait_for_count(20).await, 20, "log:\n{}", daemon.log());
    proxy.cut();
    common::produce(&sink.topic, &records(20, 20)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.forward();
    assert_eq!(sink.wait_for_count(40).await, 40, "log:\n{}", daemon.log());
    let retried = retries(&sink);
    assert!(
        retried >= 1.0,
        "the writes during the cut were retried: {retried}; log:\n{}",
        daemon.log()
    );
    assert_eq!(
        pipeline_restarts(&sink),
        0.0,
        "retries within max_num_retries need no restart; log:\n{}",
        daemon.log()
    );
    sink.assert_committed(1, 40).await;
    drop(proxy);
    sink.stop(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_failing_past_max_num_retries_restarts_from_the_committed_offsets() {
    let proxy = Proxy::start(&proxy::mongodb_target(&common::mongodb_uri()));
    let sink = Sink::new(
        1,
        "id_strategy = \"provided_in_value\"\nmax_num_retries = 1",
    )
    .await;
    let mut daemon = common::Daemon::start(&proxy::config_through(&sink.config(), &proxy));
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    common::produce(&sink.topic, &records(0, 10)).await;
    assert_eq!(sink.wait_for_count(10).await, 10, "log:\n{}", daemon.log());
    sink.assert_committed(1, 10).await;
    proxy.cut();
    common::produce(&sink.topic, &records(10, 10)).await;
    // Two attempts (each waits `connect_timeout`, 3 s, for a server) and the give-up.
    let gave_up = common::eventually(WAIT, || async { pipeline_restarts(&sink) >= 1.0 }).await;
    assert!(
        gave_up,
        "the pipeline never gave up on the batch; log:\n{}",
        daemon.log()
    );
    // Each give-up comes after exactly max_num_retries (1) retries; the restarted pipeline
    // may be one retry into its next attempt.
    let (restarts, retried) = (pipeline_restarts(&sink), retries(&sink));
    assert!(
        retried >= restarts && retried <= restarts + 1.0,
        "{retried} retries for {restarts} give-ups with max_num_retries = 1; log:\n{}",
        daemon.log()
    );
    // Nothing past what MongoDB acknowledged was committed.
    assert_eq!(
        common::committed_offsets(&sink.group(), &sink.topic, 1),
        [Some(10)],
        "log:\n{}",
        daemon.log()
    );
    proxy.forward();
    assert_eq!(sink.wait_for_count(20).await, 20, "log:\n{}", daemon.log());
    sink.assert_committed(1, 20).await;
    drop(proxy);
    sink.stop(daemon).await;
}

#[tokio::test]
async fn a_batch_larger_than_one_command_is_split_and_written_whole() {
    // 40 documents of 900 kB: 36 MB, in at most two batches, so at least one batch is far
    // over the 16 MiB a command may hold.
    let sink = Sink::new(
        1,
        "id_strategy = \"provided_in_value\"\nmax_batch_size = 100",
    )
    .await;
    let big = "z".repeat(900_000);
    let records: Vec<Outgoing> = (0..40)
        .map(|i| keyed(i, json!({"_id": i, "text": big})))
        .collect();
    common::produce_with(&sink.topic, &records, &[("message.max.bytes", "2000000")]).await;
    let config = sink
        .config()
        .replace("max_batch_delay = \"50ms\"", "max_batch_delay = \"5s\"");
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    assert_eq!(sink.wait_for_count(40).await, 40, "log:\n{}", daemon.log());
    let coll = sink.collection().await;
    let stored = coll
        .find_one(doc! {"_id": 39})
        .await
        .expect("find")
        .expect("the last document");
    assert_eq!(stored.get_str("text").map(str::len).ok(), Some(900_000));
    let batches = common::metric_with(
        sink.port,
        "mkb_sink_batch_size_records_count",
        &[&format!("pipeline=\"{}\"", sink.name)],
    );
    assert!(
        (1.0..=2.0).contains(&batches),
        "40 records in {batches} batches: the split must have happened inside a batch"
    );
    sink.assert_committed(1, 40).await;
    sink.stop(daemon).await;
}

#[tokio::test]
async fn a_statement_mongodb_refuses_is_dead_lettered_alone() {
    let dlq = common::unique("dlq");
    let sink = Sink::new(
        1,
        &format!(
            "id_strategy = \"provided_in_value\"\nwrite_model = \"insert_one\"\n[sink.errors]\ntolerance = \"all\"\ndead_letter_topic = \"{dlq}\""
        ),
    )
    .await;
    sink.collection()
        .await
        .insert_one(doc! {"_id": 5, "n": "already there"})
        .await
        .expect("seed");
    // All ten in one batch.
    common::produce(&sink.topic, &records(1, 10)).await;
    let config = sink
        .config()
        .replace("max_batch_delay = \"50ms\"", "max_batch_delay = \"2s\"");
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    assert_eq!(sink.wait_for_count(10).await, 10, "log:\n{}", daemon.log());
    let dead = common::consume(&dlq, 1, WAIT, false).await;
    assert_eq!(dead.len(), 1, "log:\n{}", daemon.log());
    assert_eq!(dead[0].key_json(), json!({"_id": 5}));
    assert_eq!(header(&dead[0], "mkb.error.stage"), "write");
    let docs = sink.documents().await;
    assert_eq!(
        docs["5"].get_str("n").ok(),
        Some("already there"),
        "{docs:?}"
    );
    for id in (1..=10).filter(|i| *i != 5) {
        assert_eq!(
            docs[&id.to_string()]
                .get_i64("n")
                .ok()
                .or(docs[&id.to_string()].get_i32("n").ok().map(i64::from)),
            Some(id),
            "{docs:?}"
        );
    }
    sink.assert_committed(1, 10).await;
    // The dead letter topic is the pipeline's, not the test's: leave nothing behind.
    sink.stop(daemon).await;
}

#[tokio::test]
async fn namespaces_come_from_the_record_key() {
    let other_db = common::unique("keyns");
    let dlq = common::unique("dlq");
    let sink = Sink::new(
        1,
        &format!(
            "namespace_from = \"key\"\ndatabase_field = \"target.db\"\ncollection_field = \"target.coll\"\nid_strategy = \"provided_in_value\"\n[sink.errors]\ntolerance = \"all\"\ndead_letter_topic = \"{dlq}\""
        ),
    )
    .await;
    let daemon = sink.start();
    common::produce(
        &sink.topic,
        &[
            Outgoing::json(
                json!({"target": {"db": other_db, "coll": "people"}}),
                json!({"_id": 1, "name": "a"}),
            ),
            Outgoing::json(
                json!({"target": {"db": sink.db, "coll": "places"}}),
                json!({"_id": 2, "name": "b"}),
            ),
            // The key does not name a database: refused, naming the field, never guessed.
            Outgoing::json(
                json!({"target": {"coll": "places"}}),
                json!({"_id": 3, "name": "c"}),
            ),
        ],
    )
    .await;
    let client = common::mongo_client().await;
    let people = client.database(&other_db).collection::<Document>("people");
    let places = client.database(&sink.db).collection::<Document>("places");
    let arrived = common::eventually(WAIT, || async {
        people.count_documents(doc! {"_id": 1}).await.unwrap_or(0) == 1
            && places.count_documents(doc! {"_id": 2}).await.unwrap_or(0) == 1
    })
    .await;
    assert!(
        arrived,
        "each record in the namespace its key names; log:\n{}",
        daemon.log()
    );
    let dead = common::consume(&dlq, 1, WAIT, false).await;
    assert_eq!(dead.len(), 1, "log:\n{}", daemon.log());
    assert_eq!(header(&dead[0], "mkb.error.stage"), "namespace");
    assert!(
        header(&dead[0], "mkb.error").contains("target.db"),
        "{:?}",
        dead[0].headers
    );
    sink.assert_committed(1, 3).await;
    assert_eq!(people.count_documents(doc! {}).await.unwrap_or(0), 1);
    assert_eq!(places.count_documents(doc! {}).await.unwrap_or(0), 1);
    assert_eq!(
        sink.collection()
            .await
            .count_documents(doc! {})
            .await
            .unwrap_or(0),
        0,
        "nothing fell back to `collection`"
    );
    let _ = client.database(&other_db).drop().await;
    sink.stop(daemon).await;
}
