//! Kafka's new consumer group protocol (KIP-848, `group.protocol = "consumer"`, Kafka 4.0 or
//! later), chosen in `[kafka.consumer]`: the broker assigns partitions, so the daemon sets no
//! `partition.assignment.strategy` of its own (librdkafka refuses one with that protocol).
//! A source pipeline (its slots shared through its group) and a sink pipeline (its topic's
//! partitions) both run on it.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::traffic;
use mongodb::bson::{doc, Document};

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_and_sink_run_on_the_consumer_group_protocol_of_kip_848() {
    let db = common::unique("scl_kip848");
    let client = common::mongo_client().await;
    let source = client.database(&db).collection::<Document>("c");
    source.insert_one(doc! {"_id": -1_i64}).await.expect("seed");
    let topic = format!("{db}.c");
    common::create_topic(&topic, 2).await;
    let pipeline = common::unique("scl_kip848src");
    let port = common::free_port();
    let config = common::config_toml(
        port,
        &format!(
            "[kafka.consumer]\n\"group.protocol\" = \"consumer\"\n\
             [[source]]\nname = \"{pipeline}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nmax_await_time = \"200ms\"\n\
             [[sink]]\nname = \"{sink}\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\ncollection = \"c_copy\"\n\
             cdc_handler = \"mongodb\"\nmax_batch_delay = \"50ms\"\n",
            sink = common::unique("scl_kip848snk"),
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    // The source's group handed this daemon, its only member, every slot.
    let body = common::wait_for_status(port, "/status", 200, WAIT);
    let status: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"));
    let owned: BTreeSet<String> = status["pipelines"][&pipeline]["slots"]["owned"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    assert!(!owned.is_empty(), "no slot owned: {body}");
    for id in 0..50_i64 {
        source.insert_one(doc! {"_id": id}).await.expect("insert");
    }
    let copy = client.database(&db).collection::<Document>("c_copy");
    traffic::assert_arrived(&copy, (0..50).collect(), WAIT, || daemon.log()).await;
    let log = daemon.log();
    assert!(
        !log.contains("partition.assignment.strategy"),
        "the daemon set an assignor the new protocol refuses:\n{log}"
    );
    // What the new protocol cannot do is said, not skipped in silence.
    assert!(
        log.contains("cannot compare their configurations"),
        "no word that configurations go unchecked:\n{log}"
    );
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}
