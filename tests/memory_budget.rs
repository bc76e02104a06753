//! `memory_budget`: a record or change event larger than its pipeline's whole budget still
//! passes (it waits until nothing else is held and takes the whole budget), among smaller
//! ones and in order; nothing deadlocks. The budget's bound itself is measured in
//! `tests/paused_services.rs`.

mod common;

use std::time::Duration;

use mongodb::bson::{doc, Document};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);
/// Room in Kafka for the large records: the topic's `max.message.bytes` and the producers'
/// `message.max.bytes`.
const LIMIT: &str = "8388608";
/// Three times the budget of the pipelines below.
const LARGE: usize = 3 * 1024 * 1024;
/// Which of the six records or documents are large.
const LARGE_IDS: [i64; 2] = [1, 4];

fn pad(id: i64) -> String {
    let size = if LARGE_IDS.contains(&id) { LARGE } else { 10 };
    "x".repeat(size)
}

#[tokio::test]
async fn a_record_larger_than_the_sink_budget_is_written() {
    let topic = common::unique("memory_big_sink");
    common::create_topic_with(&topic, 1, &[("max.message.bytes", LIMIT)]).await;
    let db = common::unique("memory_big_sinkdb");
    let port = common::free_port();
    let extra = format!(
        "[[sink]]\nname = \"{}\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\ncollection = \"docs\"\nid_strategy = \"provided_in_key\"\nmemory_budget = \"1MiB\"\n",
        common::unique("memory")
    );
    let mut daemon = common::Daemon::start(&common::config_toml(port, &extra));
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    let records: Vec<common::Outgoing> = (0..6)
        .map(|id| common::Outgoing::json(json!({"_id": id}), json!({"n": id, "pad": pad(id)})))
        .collect();
    common::produce_with(&topic, &records, &[("message.max.bytes", LIMIT)]).await;
    let coll = common::mongo_client()
        .await
        .database(&db)
        .collection::<Document>("docs");
    let written = common::eventually(WAIT, || {
        let coll = coll.clone();
        async move { coll.count_documents(doc! {}).await.unwrap_or(0) == 6 }
    })
    .await;
    assert!(
        written,
        "{} of 6 documents written; log:\n{}",
        coll.count_documents(doc! {}).await.unwrap_or(0),
        daemon.log()
    );
    for id in 0..6 {
        let found = coll
            .find_one(doc! {"_id": id})
            .await
            .ok()
            .flatten()
            .and_then(|d| d.get_str("pad").ok().map(str::len));
        assert_eq!(found, Some(pad(id).len()), "document {id}");
    }
    daemon.terminate(WAIT);
    let _ = coll.drop().await;
}

#[tokio::test]
async fn an_event_larger_than_the_source_budget_is_published() {
    let db = common::unique("memory_big_src");
    let topic = format!("{db}.events");
    common::create_topic_with(&topic, 1, &[("max.message.bytes", LIMIT)]).await;
    let port = common::free_port();
    let extra = format!(
        "[kafka.producer]\n\"message.max.bytes\" = {LIMIT}\n[[source]]\nname = \"{}\"\ndatabase = \"{db}\"\ncollection = \"events\"\nmax_await_time = \"200ms\"\nmemory_budget = \"1MiB\"\n",
        common::unique("memory")
    );
    let mut daemon = common::Daemon::start(&common::config_toml(port, &extra));
    daemon.wait_for_log("change stream open", 1, WAIT);
    let client = common::mongo_client().await;
    let coll = client.database(&db).collection::<Document>("events");
    for id in 0..6 {
        coll.insert_one(doc! {"_id": id, "pad": pad(id)})
            .await
            .expect("insert");
    }
    let records = common::consume_until(&topic, WAIT, false, |records| records.len() >= 6).await;
    let published: Vec<(i64, usize)> = records
        .iter()
        .filter_map(|r| {
            let value = r.json();
            let pad = value["fullDocument"]["pad"].as_str()?.len();
            Some((r.key_json()["_id"].as_i64()?, pad))
        })
        .collect();
    let expected: Vec<(i64, usize)> = (0..6).map(|id| (id, pad(id).len())).collect();
    assert_eq!(published, expected, "log:\n{}", daemon.log());
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

/// The line the sink logs when it chose its prefetch, once it is in the log.
fn prefetch_line(daemon: &common::Daemon) -> Option<String> {
    daemon
        .log()
        .lines()
        .find(|l| l.contains("prefetch per partition"))
        .map(str::to_owned)
}

#[tokio::test]
async fn a_sinks_prefetch_budget_is_shared_by_its_topics_partitions() {
    // 32 partitions named, 8 more matched by the regex: 40 share an eighth of the default
    // 64 MiB budget, 204 KiB each, five sevenths of it queued.
    let prefix = common::unique("prefetch");
    let named = format!("{prefix}_named");
    let matched = format!("{prefix}_matched");
    common::create_topic(&named, 32).await;
    common::create_topic(&matched, 8).await;
    // The daemon counts what the broker's metadata says: wait until it says all of it.
    let counted = common::eventually(WAIT, || {
        let (named, matched) = (named.clone(), matched.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                common::partition_count(&named) == 32 && common::partition_count(&matched) == 8
            })
            .await
            .unwrap_or(false)
        }
    })
    .await;
    assert!(
        counted,
        "the broker's metadata never showed the topics' partitions"
    );
    let port = common::free_port();
    let extra = format!(
        "[[sink]]\nname = \"{}\"\ntopics = [\"{named}\"]\ntopics_regex = \"{prefix}_match.*\"\ndatabase = \"{}\"\ncollection = \"docs\"\nid_strategy = \"provided_in_key\"\n",
        common::unique("prefetch"),
        common::unique("prefetchdb"),
    );
    let mut daemon = common::Daemon::start(&common::config_toml(port, &extra));
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    let line =
        prefetch_line(&daemon).unwrap_or_else(|| panic!("no prefetch line:\n{}", daemon.log()));
    for field in [
        "partitions=Some(40)",
        "budget_bytes=8388608",
        "queued_kib=145",
        "fetch_bytes=60416",
    ] {
        assert!(line.contains(field), "{field} not in: {line}");
    }
    daemon.terminate(WAIT);
}
