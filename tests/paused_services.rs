//! Backpressure: a service the daemon writes to stops answering (SIGSTOP on the process of
//! a service of the test's own, never a shared one) while input keeps coming; the daemon's
//! memory stays bounded, and when the service comes back (SIGCONT) everything arrives.
//!
//! Each test starts its own broker or stand-in on free ports (`common::services`); they live
//! in their own test binary and run one at a time, since RSS is what they measure.

mod common;

use std::time::Duration;

use common::services::{OwnService, Paused};
use mongodb::bson::{doc, Document};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

static PAUSING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The resident set of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}

/// Samples `pid`'s RSS every 100 ms for `period`; answers the largest.
async fn peak_rss_kib(pid: u32, period: Duration) -> u64 {
    let deadline = std::time::Instant::now() + period;
    let mut peak = 0;
    while std::time::Instant::now() < deadline {
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    peak
}

const PAYLOAD: usize = 1000;

/// While MongoDB does not answer, the writers' mailboxes fill, the partition readers stop
/// reading and the records wait in Kafka (librdkafka's per-partition fetch limit), not in the
/// daemon's memory; once MongoDB answers again every record arrives.
#[tokio::test]
async fn a_paused_mongodb_leaves_the_records_in_kafka_and_memory_stays_bounded() {
    let _one_at_a_time = PAUSING.lock().await;
    let mongo = OwnService::mongo();
    let topic = common::unique("slowsink");
    common::create_topic(&topic, 2).await;
    let db = common::unique("slowdb");
    let port = common::free_port();
    let extra = format!(
        "[[sink]]\nname = \"{}\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\ncollection = \"docs\"\nid_strategy = \"provided_in_key\"\nqueue_capacity = 256\nmax_batch_size = 100\n",
        common::unique("slow")
    );
    let mut daemon = common::Daemon::start(&mongo.config(&common::config_toml(port, &extra)));
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    let records = |ids: std::ops::Range<i64>| -> Vec<common::Outgoing> {
        ids.map(|id| {
            common::Outgoing::json(
                json!({"_id": id}),
                json!({"n": id, "pad": "x".repeat(PAYLOAD)}),
            )
        })
        .collect()
    };
    // Warm up, so the baseline includes the writers and connections.
    common::produce(&topic, &records(0..1000)).await;
    let coll = mongodb::Client::with_uri_str(mongo.uri())
        .await
        .expect("MongoDB client")
        .database(&db)
        .collection::<Document>("docs");
    let warm = common::eventually(WAIT, || {
        let coll = coll.clone();
        async move { coll.count_documents(doc! {}).await.unwrap_or(0) == 1000 }
    })
    .await;
    assert!(warm, "log:\n{}", daemon.log());
    let baseline = rss_kib(daemon.pid());

    let total = 60_000;
    {
        let _paused = Paused::new(mongo.pid());
        // 59 MB of records while MongoDB does not answer.
        common::produce(&topic, &records(1000..total)).await;
        let peak = peak_rss_kib(daemon.pid(), Duration::from_secs(5)).await;
        let growth_mib = peak.saturating_sub(baseline) / 1024;
        assert!(
            growth_mib < 40,
            "RSS grew by {growth_mib} MiB (from {baseline} KiB) while 59 MB waited in Kafka"
        );
    }
    let caught_up = common::eventually(WAIT, || {
        let coll = coll.clone();
        async move { coll.count_documents(doc! {}).await.unwrap_or(0) == total as u64 }
    })
    .await;
    assert!(
        caught_up,
        "{} of {total} documents; log:\n{}",
        coll.count_documents(doc! {}).await.unwrap_or(0),
        daemon.log()
    );
    daemon.terminate(WAIT);
    let _ = coll.drop().await;
}

#[tokio::test]
async fn a_paused_kafka_stops_the_readers_and_memory_stays_bounded() {
    let _one_at_a_time = PAUSING.lock().await;
    let kafka = OwnService::kafka();
    let db = common::unique("slowsrc");
    let client = common::mongo_client().await;
    let coll = client.database(&db).collection::<Document>("events");
    coll.insert_one(doc! {"_id": -1}).await.expect("seed");
    let port = common::free_port();
    let topic = format!("{db}.events");
    common::create_topic_on(&kafka.address(), &topic, 1, &[]).await;
    // Small buffers, so that what "bounded" means is visible: at most 1 MiB in librdkafka's
    // queue and 4 batches of 50 events in the producer's mailbox.
    let extra = format!(
        "[kafka.producer]\n\"queue.buffering.max.kbytes\" = 1024\n[[source]]\nname = \"{}\"\ndatabase = \"{db}\"\ncollection = \"events\"\nmax_await_time = \"200ms\"\nqueue_capacity = 4\nbatch_size = 50\n",
        common::unique("slow")
    );
    let mut daemon = common::Daemon::start(&kafka.config(&common::config_toml(port, &extra)));
    daemon.wait_for_log("change stream open", 1, WAIT);
    let insert = |ids: std::ops::Range<i64>| {
        let coll = coll.clone();
        async move {
            let docs: Vec<Document> = ids
                .map(|id| doc! {"_id": id, "pad": "x".repeat(2 * PAYLOAD)})
                .collect();
            for chunk in docs.chunks(500) {
                coll.insert_many(chunk.to_vec()).await.expect("insert");
            }
        }
    };
    insert(0..200).await;
    let warm = common::consume_until_on(&kafka.address(), &topic, WAIT, false, |records| {
        records.len() >= 200
    })
    .await;
    assert_eq!(warm.len(), 200, "log:\n{}", daemon.log());
    let baseline = rss_kib(daemon.pid());
    let events = "mkb_source_events_read_total";

    let total = 6000;
    {
        let _paused = Paused::new(kafka.pid());
        // 12 MB of changes wait in MongoDB while the broker does not answer.
        insert(200..total).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        let read_then = common::metric_sum(port, events);
        let peak = peak_rss_kib(daemon.pid(), Duration::from_secs(4)).await;
        let read_now = common::metric_sum(port, events);
        assert_eq!(
            read_then, read_now,
            "the reader kept reading while Kafka was paused"
        );
        assert!(
            read_now < f64::from(total as i32 - 1000),
            "the reader read {read_now} of {total} changes while Kafka was paused"
        );
        let growth_mib = peak.saturating_sub(baseline) / 1024;
        assert!(
            growth_mib < 20,
            "RSS grew by {growth_mib} MiB (from {baseline} KiB) while Kafka was paused"
        );
    }
    // Each record's key is parsed once: parsing all of them at each new one took minutes.
    let mut seen = std::collections::BTreeSet::new();
    let mut parsed = 0;
    let all = common::consume_until_on(&kafka.address(), &topic, WAIT, false, |records| {
        for r in &records[parsed..] {
            seen.extend(r.key_json()["_id"].as_i64());
        }
        parsed = records.len();
        seen.len() >= total as usize
    })
    .await;
    let ids: std::collections::BTreeSet<i64> = all
        .iter()
        .filter_map(|r| r.key_json()["_id"].as_i64())
        .collect();
    assert_eq!(ids.len(), total as usize, "log:\n{}", daemon.log());
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

/// The memory budget of the pipelines in the two tests below (`memory_budget`).
const BUDGET_MIB: u64 = 8;
/// What the daemon may hold besides the budget in those tests: the driver's current batch
/// of each change stream (`batch_size = 2`), librdkafka's queues (1 MiB per producer, about
/// 1 MiB per sink partition), one event or batch being converted, the allocator's slack.
const OVERHEAD_MIB: u64 = 24;
/// The size of a large document or record in those tests.
const LARGE: usize = 400 * 1024;

/// Several change streams of large documents while Kafka does not answer: the readers stop
/// once the records they hold fill the pipeline's `memory_budget`, so the daemon's memory
/// stays under the budget plus a fixed overhead however much waits in MongoDB.
#[tokio::test]
async fn large_documents_with_a_paused_kafka_stay_within_the_memory_budget() {
    let _one_at_a_time = PAUSING.lock().await;
    let kafka = OwnService::kafka();
    let mongo = OwnService::mongo();
    let db = common::unique("memory_src");
    let client = mongodb::Client::with_uri_str(mongo.uri())
        .await
        .expect("MongoDB client");
    let collections = ["c0", "c1", "c2", "c3"];
    for coll in collections {
        common::create_topic_on(&kafka.address(), &format!("{db}.{coll}"), 1, &[]).await;
    }
    let port = common::free_port();
    let extra = format!(
        "[kafka.producer]\n\"queue.buffering.max.kbytes\" = 1024\n[[source]]\nname = \"{}\"\ndatabase = \"{db}\"\ncollection = {collections:?}\nmax_await_time = \"200ms\"\nbatch_size = 2\nmemory_budget = \"{BUDGET_MIB}MiB\"\n",
        common::unique("memory")
    );
    let config = mongo.config(&kafka.config(&common::config_toml(port, &extra)));
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", collections.len(), WAIT);
    let insert = |coll: &'static str, ids: std::ops::Range<i64>| {
        let coll = client.database(&db).collection::<Document>(coll);
        async move {
            let docs: Vec<Document> = ids
                .map(|id| doc! {"_id": id, "pad": "x".repeat(LARGE)})
                .collect();
            for chunk in docs.chunks(8) {
                coll.insert_many(chunk.to_vec()).await.expect("insert");
            }
        }
    };
    // Warm up: one large document through each stream.
    for coll in collections {
        insert(coll, 0..1).await;
    }
    for coll in collections {
        let topic = format!("{db}.{coll}");
        let warm =
            common::consume_until_on(&kafka.address(), &topic, WAIT, false, |r| !r.is_empty())
                .await;
        assert_eq!(warm.len(), 1, "{topic}; log:\n{}", daemon.log());
    }
    let baseline = rss_kib(daemon.pid());
    let events = "mkb_source_events_read_total";

    let per_collection = 60;
    {
        let _paused = Paused::new(kafka.pid());
        // 4 x 60 documents of 400 KiB (96 MiB) wait in MongoDB while the broker does not
        // answer.
        for coll in collections {
            insert(coll, 1..per_collection).await;
        }
        tokio::time::sleep(Duration::from_secs(6)).await;
        let read_then = common::metric_sum(port, events);
        let peak = peak_rss_kib(daemon.pid(), Duration::from_secs(4)).await;
        let read_now = common::metric_sum(port, events);
        let growth_mib = peak.saturating_sub(baseline) / 1024;
        eprintln!("RSS grew by {growth_mib} MiB while Kafka was paused ({read_now} events read)");
        assert!(
            growth_mib < BUDGET_MIB + OVERHEAD_MIB,
            "RSS grew by {growth_mib} MiB (from {baseline} KiB) while Kafka was paused, over the budget of {BUDGET_MIB} MiB and {OVERHEAD_MIB} MiB of overhead ({read_now} events read)"
        );
        assert_eq!(
            read_then, read_now,
            "the readers kept reading while Kafka was paused"
        );
    }
    for coll in collections {
        let topic = format!("{db}.{coll}");
        let all = common::consume_until_on(&kafka.address(), &topic, WAIT, false, |r| {
            r.len() >= per_collection as usize
        })
        .await;
        let ids: std::collections::BTreeSet<i64> = all
            .iter()
            .filter_map(|r| r.key_json()["_id"].as_i64())
            .collect();
        assert_eq!(
            ids.len(),
            per_collection as usize,
            "{topic}; log:\n{}",
            daemon.log()
        );
    }
    daemon.terminate(WAIT);
}

/// Large records waiting in Kafka while MongoDB does not answer: the partition readers stop
/// once the records the writers hold fill the pipeline's `memory_budget` (shared by its
/// partitions), so the records wait in Kafka and the daemon's memory stays under three times
/// the budget (batches being written also hold their statements and command) plus a fixed
/// overhead.
#[tokio::test]
async fn large_records_with_a_paused_mongodb_stay_within_the_memory_budget() {
    let _one_at_a_time = PAUSING.lock().await;
    let mongo = OwnService::mongo();
    let topic = common::unique("memory_sink");
    common::create_topic(&topic, 2).await;
    let db = common::unique("memory_sinkdb");
    let port = common::free_port();
    let extra = format!(
        "[[sink]]\nname = \"{}\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\ncollection = \"docs\"\nid_strategy = \"provided_in_key\"\nmax_batch_size = 100\nmemory_budget = \"{BUDGET_MIB}MiB\"\n",
        common::unique("memory")
    );
    let mut daemon = common::Daemon::start(&mongo.config(&common::config_toml(port, &extra)));
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    let records = |ids: std::ops::Range<i64>| -> Vec<common::Outgoing> {
        ids.map(|id| {
            common::Outgoing::json(
                json!({"_id": id}),
                json!({"n": id, "pad": "x".repeat(LARGE)}),
            )
        })
        .collect()
    };
    let coll = mongodb::Client::with_uri_str(mongo.uri())
        .await
        .expect("MongoDB client")
        .database(&db)
        .collection::<Document>("docs");
    let count = |coll: mongodb::Collection<Document>, n: u64| async move {
        coll.count_documents(doc! {}).await.unwrap_or(0) == n
    };
    // Warm up, so the baseline includes the writers and connections.
    common::produce(&topic, &records(0..20)).await;
    let warm = common::eventually(WAIT, || count(coll.clone(), 20)).await;
    assert!(warm, "log:\n{}", daemon.log());
    let baseline = rss_kib(daemon.pid());

    let total = 300;
    {
        let _paused = Paused::new(mongo.pid());
        // 280 records of 400 KiB (110 MiB) while MongoDB does not answer.
        for chunk in (20..total).collect::<Vec<i64>>().chunks(40) {
            common::produce(&topic, &records(chunk[0]..chunk[0] + chunk.len() as i64)).await;
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        let peak = peak_rss_kib(daemon.pid(), Duration::from_secs(4)).await;
        let growth_mib = peak.saturating_sub(baseline) / 1024;
        eprintln!("RSS grew by {growth_mib} MiB while MongoDB was paused");
        assert!(
            growth_mib < 3 * BUDGET_MIB + OVERHEAD_MIB,
            "RSS grew by {growth_mib} MiB (from {baseline} KiB) while 110 MiB waited in Kafka, over three times the budget of {BUDGET_MIB} MiB and {OVERHEAD_MIB} MiB of overhead"
        );
    }
    let caught_up = common::eventually(WAIT, || count(coll.clone(), total as u64)).await;
    assert!(
        caught_up,
        "{} of {total} documents; log:\n{}",
        coll.count_documents(doc! {}).await.unwrap_or(0),
        daemon.log()
    );
    daemon.terminate(WAIT);
    let _ = coll.drop().await;
}
