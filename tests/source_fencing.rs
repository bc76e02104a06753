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
