//! Exactly-once source pipelines across restarts (issue 12, defect 4): a restart, of one
//! reader or of the whole pipeline, never lets a transaction commit records whose position
//! the checkpoint does not cover, so a `read_committed` consumer sees every change once.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::bson::{doc, Document};

const WAIT: Duration = Duration::from_secs(90);

fn source(name: &str, db: &str, coll: &str, extra: &str) -> String {
    format!(
        // An exactly-once pipeline never shares its checkpoint topic.
        "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"{coll}\"\nmax_await_time = \"200ms\"\ndelivery = \"exactly-once\"\ncheckpoint_topic = \"{name}-checkpoints\"\n{extra}\n"
    )
}

/// How often each `_id` of the keys of `records` (relaxed JSON) was published.
fn key_counts(records: &[common::Consumed]) -> BTreeMap<i64, usize> {
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

/// Every `_id` of `ids` exactly once, or a message naming the missing and the repeated.
fn exactly_once(counts: &BTreeMap<i64, usize>, ids: impl Iterator<Item = i64>) -> Option<String> {
    let missing: Vec<i64> = ids.filter(|id| !counts.contains_key(id)).collect();
    let repeated: Vec<(i64, usize)> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (*id, *n))
        .collect();
    (!missing.is_empty() || !repeated.is_empty())
        .then(|| format!("missing {missing:?}, published more than once {repeated:?}"))
}

/// A stalled reader of an exactly-once pipeline is restarted alone while the open
/// transaction holds its records. It used to restart at the last committed checkpoint (or
/// where its stream first opened) and publish those records again into the same
/// transaction: a `read_committed` consumer saw them twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_stall_restart_of_one_reader_publishes_nothing_twice() {
    use common::proxy::{self, Proxy};
    const DOCS: i64 = 20;
    let proxy = Proxy::start(&proxy::mongodb_target(&common::mongodb_uri()));
    let db = common::unique("own_stall");
    let coll = collection(&db, "c").await;
    let topic = format!("{db}.c");
    common::create_topic(&topic, 1).await;
    let name = common::unique("own_stallsrc");
    let port = common::free_port();
    // The first transaction opens with the stream and commits 30 s later: the restart
    // happens while it holds the records.
    let config = proxy::config_through(
        &common::config_toml(
            port,
            &source(
                &name,
                &db,
                "c",
                "checkpoint_interval = \"30s\"\nstall_timeout = \"2s\"",
            ),
        ),
        &proxy,
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    for id in 0..DOCS {
        coll.insert_one(doc! { "_id": id }).await.expect("insert");
    }
    // Published into the open transaction (visible uncommitted), not yet committed.
    let uncommitted = common::consume_until(&topic, WAIT, false, |records| {
        key_counts(records).len() >= usize::try_from(DOCS).unwrap_or(usize::MAX)
    })
    .await;
    assert_eq!(
        key_counts(&uncommitted).len(),
        usize::try_from(DOCS).unwrap_or(usize::MAX),
        "the changes were not published; log:\n{}",
        daemon.log()
    );
    proxy.freeze();
    daemon.wait_for_log(
        "change stream has not advanced; restarting the reader",
        1,
        WAIT,
    );
    proxy.forward();
    daemon.wait_for_log("change stream open", 2, WAIT);
    coll.insert_one(doc! { "_id": DOCS }).await.expect("insert");
    let records = common::consume_until(&topic, WAIT, true, |records| {
        key_counts(records).contains_key(&DOCS)
    })
    .await;
    // A little longer, so that late duplicates show.
    let again = common::consume(&topic, records.len() + 1, Duration::from_secs(5), true).await;
    let records = if again.len() > records.len() {
        again
    } else {
        records
    };
    let counts = key_counts(&records);
    if let Some(problem) = exactly_once(&counts, 0..=DOCS) {
        panic!(
            "after a stall restart of the reader: {problem}; log:\n{}",
            daemon.log()
        );
    }
    daemon.terminate(WAIT);
}

/// A copy batch fails half-way through being handed to Kafka (a document too large, with
/// `oversize = "fail"`): the pipeline stops. Its drain used to commit the open transaction,
/// and with it the half of the batch whose position was never recorded: after the
/// configuration was fixed, the copy published those documents a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_drain_commits_no_part_of_a_copy_batch() {
    const DOCS: i64 = 20;
    const BIG: i64 = 10;
    let db = common::unique("own_drain");
    let coll = common::mongo_client()
        .await
        .database(&db)
        .collection::<Document>("c");
    for id in 0..DOCS {
        let document = if id == BIG {
            doc! { "_id": id, "big": "y".repeat(50_000) }
        } else {
            doc! { "_id": id }
        };
        coll.insert_one(document).await.expect("insert");
    }
    let topic = format!("{db}.c");
    common::create_topic(&topic, 1).await;
    let name = common::unique("own_drainsrc");
    let port = common::free_port();
    let config = |oversize: &str| {
        common::config_toml(
            port,
            &source(
                &name,
                &db,
                "c",
                &format!(
                    "startup_mode = \"copy_existing\"\ncheckpoint_interval = \"200ms\"\noversize = \"{oversize}\""
                ),
            ),
        )
        .replace(
            "[kafka]\n",
            "[kafka]\nproducer = { \"message.max.bytes\" = 20000 }\n",
        )
    };
    let mut daemon = common::Daemon::start(&config("fail"));
    daemon.wait_for_log("source pipeline failed", 1, WAIT);
    let committed = common::consume(&topic, 1, Duration::from_secs(5), true).await;
    assert!(
        committed.is_empty(),
        "the failed copy batch was committed in part: {:?}; log:\n{}",
        key_counts(&committed),
        daemon.log()
    );
    daemon.signal("TERM");
    daemon.wait(WAIT);

    // Fixed: the big document is skipped, every other one published once.
    let mut fixed = common::Daemon::start(&config("skip"));
    fixed.wait_for_log("change stream open", 1, WAIT);
    let expected = (0..DOCS).filter(|id| *id != BIG);
    let records = common::consume_until(&topic, WAIT, true, |records| {
        let counts = key_counts(records);
        (0..DOCS)
            .filter(|id| *id != BIG)
            .all(|id| counts.contains_key(&id))
    })
    .await;
    let again = common::consume(&topic, records.len() + 1, Duration::from_secs(5), true).await;
    let records = if again.len() > records.len() {
        again
    } else {
        records
    };
    if let Some(problem) = exactly_once(&key_counts(&records), expected) {
        panic!("after the copy ran again: {problem}; log:\n{}", fixed.log());
    }
    fixed.terminate(WAIT);
}

/// Issue 21, item 1: a stray producer takes the `transactional.id` of the pipeline's slot
/// (`init_transactions`) while the daemon stays in the group. The slot used to be dropped
/// for good (`source pipeline running readers=0 slots=[]`, the partition still assigned
/// here, `/ready` 200): the changes after the fence never arrived. The slot must be taken
/// again, nothing published twice to a `read_committed` consumer, and the wait visible on
/// `/ready`, in `mkb_source_fenced_slots` and in a WARN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_fenced_by_a_stray_producer_is_taken_again_without_duplicates() {
    use rdkafka::producer::{BaseProducer, Producer};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    const DOCS: i64 = 20;
    let db = common::unique("slots_fence");
    let coll = collection(&db, "c").await;
    let topic = format!("{db}.c");
    common::create_topic(&topic, 1).await;
    let name = common::unique("slots_fencesrc");
    let port = common::free_port();
    // MongoDB through a proxy the test freezes: the reader sends nothing while the commit
    // finds the fence, so the producer's failure, not the reader's "producer gone", reaches
    // the supervisor (as with a quiet collection on a real replica set).
    use common::proxy::{self, Proxy};
    let proxy = Proxy::start(&proxy::mongodb_target(&common::mongodb_uri()));
    let config = proxy::config_through(
        &common::config_toml(
            port,
            &format!(
                "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"c\"\ndelivery = \"exactly-once\"\nslots = 1\nmax_await_time = \"200ms\"\ncheckpoint_interval = \"2s\"\ncheckpoint_topic = \"{}\"\n",
                common::unique("slots_fenceckpt")
            ),
        ),
        &proxy,
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    common::wait_for_status(port, "/ready", 200, WAIT);
    for id in 0..DOCS / 2 {
        coll.insert_one(doc! { "_id": id }).await.expect("insert");
    }
    let before = common::consume_until(&topic, WAIT, true, |records| {
        (0..DOCS / 2).all(|id| key_counts(records).contains_key(&id))
    })
    .await;
    assert_eq!(
        key_counts(&before).len(),
        usize::try_from(DOCS / 2).unwrap_or(usize::MAX),
        "the first changes were not committed; log:\n{}",
        daemon.log()
    );

    // What `/ready` and the metric say from now on.
    let watching = Arc::new(AtomicBool::new(true));
    let seen: Arc<Mutex<(Vec<String>, f64)>> = Arc::default();
    let watcher = {
        let (watching, seen) = (watching.clone(), seen.clone());
        std::thread::spawn(move || {
            while watching.load(Ordering::SeqCst) {
                if let Some((503, body)) = common::http_get(port, "/ready") {
                    let fenced = common::metric_sum(port, "mkb_source_fenced_slots");
                    if let Ok(mut seen) = seen.lock() {
                        seen.0.push(body);
                        seen.1 = seen.1.max(fenced);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // One change into a new transaction, then the stray producer: the slot's
    // transactional.id, initialised, which aborts that transaction.
    coll.insert_one(doc! { "_id": DOCS / 2 })
        .await
        .expect("insert");
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.freeze();
    let stray: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::kafka_bootstrap())
        .set("transactional.id", format!("mongo-kafka-bridge-{name}-0"))
        .create()
        .expect("stray producer");
    let stray = tokio::task::spawn_blocking(move || {
        stray
            .init_transactions(Duration::from_secs(30))
            .map(|()| stray)
    })
    .await
    .expect("join")
    .expect("init_transactions of the stray producer");
    // The commit finds the fence.
    daemon.wait_for_log("producer failed", 1, WAIT);
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.forward();
    for id in DOCS / 2 + 1..DOCS {
        coll.insert_one(doc! { "_id": id }).await.expect("insert");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records = common::consume_until(&topic, WAIT, true, |records| {
        (0..DOCS).all(|id| key_counts(records).contains_key(&id))
    })
    .await;
    // A little longer, so that late duplicates show.
    let again = common::consume(&topic, records.len() + 1, Duration::from_secs(5), true).await;
    let records = if again.len() > records.len() {
        again
    } else {
        records
    };
    watching.store(false, Ordering::SeqCst);
    let _ = watcher.join();
    drop(stray);
    if let Some(problem) = exactly_once(&key_counts(&records), 0..DOCS) {
        panic!(
            "after the slot's producer was fenced: {problem}; log:\n{}",
            daemon.log()
        );
    }
    let (bodies, fenced) = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(
        bodies.iter().any(|b| b.contains("fenced")),
        "/ready never said the slot was fenced: {bodies:?}; log:\n{}",
        daemon.log()
    );
    assert!(fenced >= 1.0, "mkb_source_fenced_slots stayed 0");
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("fenced") && l.contains("again")),
        "no WARN said the slot is taken again; log:\n{log}"
    );
    common::wait_for_status(port, "/ready", 200, WAIT);
    assert_eq!(common::metric_sum(port, "mkb_source_fenced_slots"), 0.0);
    daemon.terminate(WAIT);
}

/// The value of `v` a change event of [`txn_steady_load_commits_every_change_once_without_restarts`]
/// carries: `fullDocument.v` of the insert, `updateDescription.updatedFields.v` of an update.
fn txn_change_v(record: &common::Consumed) -> Option<i64> {
    let value: serde_json::Value = serde_json::from_slice(record.value.as_deref()?).ok()?;
    let v = [
        &value["fullDocument"]["v"],
        &value["updateDescription"]["updatedFields"]["v"],
    ]
    .into_iter()
    .find(|v| !v.is_null())?
    .clone();
    v.as_i64()
        .or_else(|| v["$numberLong"].as_str().and_then(|n| n.parse().ok()))
        .or_else(|| v["$numberInt"].as_str().and_then(|n| n.parse().ok()))
}

/// An exactly-once pipeline under steady load (a write every 5 ms, commits every 500 ms):
/// a batch taken from the mailbox in the same turn as the commit timer fired used to be
/// handed to librdkafka only after that commit, outside any transaction (`State (Local:
/// Erroneous state)`), and the pipeline restarted every few seconds with a growing backoff.
/// Now no restart happens, and a `read_committed` consumer sees every change once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_steady_load_commits_every_change_once_without_restarts() {
    const WRITING: Duration = Duration::from_secs(15);
    let db = common::unique("txn_load");
    let coll = collection(&db, "c").await;
    let topic = format!("{db}.c");
    common::create_topic(&topic, 4).await;
    let name = common::unique("txn_loadsrc");
    let port = common::free_port();
    let config = common::config_toml(
        port,
        &format!(
            "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"c\"\ndelivery = \"exactly-once\"\ncheckpoint_interval = \"500ms\"\nmax_await_time = \"300ms\"\ncheckpoint_topic = \"{}\"\n",
            common::unique("txn_loadckpt")
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    let started = std::time::Instant::now();
    let mut written = 0_i64;
    while started.elapsed() < WRITING {
        written += 1;
        coll.update_one(
            doc! { "_id": written % 300 },
            doc! { "$set": { "v": written } },
        )
        .upsert(true)
        .await
        .expect("update");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let values = |records: &[common::Consumed]| {
        let mut counts = BTreeMap::new();
        for v in records.iter().filter_map(txn_change_v) {
            *counts.entry(v).or_insert(0_usize) += 1;
        }
        counts
    };
    let records = common::consume_until(&topic, WAIT, true, |records| {
        values(records).len() >= usize::try_from(written).unwrap_or(usize::MAX)
    })
    .await;
    // A little longer, so that late duplicates show.
    let again = common::consume(&topic, records.len() + 1, Duration::from_secs(5), true).await;
    let records = if again.len() > records.len() {
        again
    } else {
        records
    };
    let log = daemon.log();
    let restarts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("restarting the source pipeline") || l.contains("producer failed"))
        .collect();
    assert!(
        restarts.is_empty(),
        "the pipeline restarted {} times under steady load ({written} writes), first: {}",
        restarts.len(),
        restarts[0]
    );
    if let Some(problem) = exactly_once(&values(&records), 1..=written) {
        panic!(
            "{written} changes under steady load: {}; log:\n{log}",
            problem.chars().take(2000).collect::<String>()
        );
    }
    daemon.terminate(WAIT);
}

/// Issue 21, item 2: the broker aborts a transaction that outlived the producer's
/// `transaction.timeout.ms` (here the daemon frozen past it, as a paused VM or a long stop
/// of the process would), and with it every change published in it. The daemon finds the
/// abort when it commits: the changes of the aborted transaction are published again, once,
/// a `read_committed` consumer sees every change exactly once, and the pipeline does not
/// restart again and again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_the_broker_aborted_is_published_again_once_without_restarting_forever() {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;
    // The smallest timeout the configuration accepts with a 1 s interval (1 s + 30 s for
    // a commit); the broker looks for timed-out transactions every 10 s.
    const TIMEOUT: Duration = Duration::from_secs(32);
    let db = common::unique("txn_abort");
    let coll = collection(&db, "c").await;
    let topic = format!("{db}.c");
    common::create_topic(&topic, 1).await;
    let name = common::unique("txn_abortsrc");
    let port = common::free_port();
    let config = common::config_toml(
        port,
        &format!(
            "[kafka.producer]\n\"transaction.timeout.ms\" = \"{}\"\n{}",
            TIMEOUT.as_millis(),
            source(&name, &db, "c", "checkpoint_interval = \"1s\"")
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    common::wait_for_status(port, "/ready", 200, WAIT);

    // A write every 20 ms, from before the freeze until after it.
    let writing = Arc::new(AtomicBool::new(true));
    let written = Arc::new(AtomicI64::new(0));
    let writer = {
        let (writing, written, coll) = (writing.clone(), written.clone(), coll.clone());
        tokio::spawn(async move {
            let mut id = 0_i64;
            while writing.load(Ordering::SeqCst) {
                coll.insert_one(doc! { "_id": id }).await.expect("insert");
                id += 1;
                written.store(id, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Some changes committed, then the freeze with a transaction open.
    let committed = common::consume_until(&topic, WAIT, true, |records| {
        key_counts(records).len() >= 50
    })
    .await;
    assert!(
        key_counts(&committed).len() >= 50,
        "nothing committed before the freeze; log:\n{}",
        daemon.log()
    );
    daemon.signal("STOP");
    tokio::time::sleep(TIMEOUT + Duration::from_secs(15)).await;
    daemon.signal("CONT");
    tokio::time::sleep(Duration::from_secs(10)).await;
    writing.store(false, Ordering::SeqCst);
    writer.await.expect("writer");
    let total = written.load(Ordering::SeqCst);

    // Counted once per check: thousands of records.
    let records = common::consume_until(&topic, WAIT, true, |records| {
        let counts = key_counts(records);
        (0..total).all(|id| counts.contains_key(&id))
    })
    .await;
    // A little longer, so that late duplicates show.
    let again = common::consume(&topic, records.len() + 1, Duration::from_secs(5), true).await;
    let records = if again.len() > records.len() {
        again
    } else {
        records
    };
    if let Some(problem) = exactly_once(&key_counts(&records), 0..total) {
        panic!(
            "after the broker aborted a transaction: {problem}; log:\n{}",
            daemon.log()
        );
    }
    // Recovered, and not restarting any more.
    common::wait_for_status(port, "/ready", 200, WAIT);
    let failures = common::metric_sum(port, "mkb_pipeline_failures_total");
    for id in total..total + 20 {
        coll.insert_one(doc! { "_id": id }).await.expect("insert");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let later = common::consume_until(&topic, WAIT, true, |records| {
        let counts = key_counts(records);
        (total..total + 20).all(|id| counts.contains_key(&id))
    })
    .await;
    assert!(
        exactly_once(&key_counts(&later), 0..total + 20).is_none(),
        "the changes after the recovery: {:?}; log:\n{}",
        exactly_once(&key_counts(&later), 0..total + 20),
        daemon.log()
    );
    let failures_after = common::metric_sum(port, "mkb_pipeline_failures_total");
    assert_eq!(
        failures,
        failures_after,
        "the pipeline kept failing after it recovered; log:\n{}",
        daemon.log()
    );
    assert!(
        failures <= 3.0,
        "{failures} pipeline failures for one aborted transaction; log:\n{}",
        daemon.log()
    );
    daemon.terminate(WAIT);
}
