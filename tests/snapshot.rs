//! Snapshots on demand (issue 23): chosen collections of a running source pipeline copied
//! again in `_id` chunks interleaved with its change stream, by DBLog's watermarks, started
//! by `POST /pipelines/<name>/snapshot` or a signal document, cancelled by `DELETE` (or a
//! `stop-snapshot` signal), and shown on `/status`.
//!
//! What holds downstream, per key, in topic order (one key, one partition): the versions its
//! records carry (a `$set` of `v` in each update, `v` in the document of inserts and of the
//! snapshot's reads) never decrease, so no record of the snapshot overwrites a newer change;
//! and its last record carries its final version.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);

/// `method path` with a JSON `body` on 127.0.0.1:`port`: the status code and body.
fn request(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to the daemon's HTTP port {port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn status(port: u16) -> Value {
    common::http_get(port, "/status")
        .and_then(|(code, body)| (code == 200).then_some(body))
        .and_then(|body| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null)
}

/// The `snapshot_state` of `namespace` on `/status`.
fn snapshot_state(port: u16, pipeline: &str, namespace: &str) -> String {
    status(port)["pipelines"][pipeline]["snapshot_state"][namespace]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `POST /pipelines/<pipeline>/snapshot` of `namespace`, asserting it is accepted (202).
fn start_snapshot(port: u16, pipeline: &str, namespace: &str) {
    let (code, body) = request(
        port,
        "POST",
        &format!("/pipelines/{pipeline}/snapshot"),
        &format!("{{\"namespaces\": [\"{namespace}\"]}}"),
    );
    assert_eq!(code, 202, "{body}");
}

/// Waits up to `limit` until the snapshot of `namespace` is in `state` on `/status`; fails
/// with `/status` and the log, saying `what` did not happen, otherwise.
async fn wait_for_snapshot_state(
    daemon: &common::Daemon,
    (port, pipeline, namespace): (u16, &str, &str),
    state: &str,
    limit: Duration,
    what: &str,
) {
    let reached = common::eventually(limit, || {
        let done = snapshot_state(port, pipeline, namespace) == state;
        async move { done }
    })
    .await;
    assert!(
        reached,
        "{what}; /status: {}; log:\n{}",
        status(port),
        daemon.log()
    );
}

/// A source pipeline on `db.c`, running.
fn start(db: &str, name: &str, port: u16, extra: &str) -> common::Daemon {
    let mut daemon = common::Daemon::start(&common::config_toml(
        port,
        &format!(
            "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nmax_await_time = \"200ms\"\n{extra}\n"
        ),
    ));
    daemon.wait_for_log("change stream open", 1, WAIT);
    daemon
}

/// One record as the test reads it: the key, the version it carries, whether it is a read
/// of the snapshot.
#[derive(Debug)]
struct Seen {
    key: i64,
    version: Option<i64>,
    snapshot: bool,
}

fn seen(record: &common::Consumed) -> Seen {
    let value = record.json();
    let key = record.key_json()["_id"].as_i64().unwrap_or(-1);
    let snapshot = value["_id"]["copyingData"] == Value::Bool(true);
    let version = value["updateDescription"]["updatedFields"]["v"]
        .as_i64()
        .or_else(|| value["fullDocument"]["v"].as_i64());
    Seen {
        key,
        version,
        snapshot,
    }
}

async fn seed(db: &str, count: i64) -> mongodb::Collection<Document> {
    let coll = common::mongo_client()
        .await
        .database(db)
        .collection::<Document>("c");
    let docs: Vec<Document> = (0..count).map(|i| doc! {"_id": i, "v": 0_i64}).collect();
    coll.insert_many(docs).await.expect("seeding");
    coll
}

#[tokio::test]
async fn a_snapshot_under_concurrent_writes_never_takes_a_key_back_and_ends_at_its_last_version() {
    const KEYS: i64 = 400;
    let began = Instant::now();
    let db = common::unique("snapshot_conc");
    let namespace = format!("{db}.c");
    let coll = seed(&db, KEYS).await;
    let name = common::unique("snapshot_p");
    let port = common::free_port();
    let mut daemon = start(&db, &name, port, "snapshot_chunk_size = 10");

    // A writer updates keys all through the snapshot, each update a higher version.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let coll = coll.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut versions: HashMap<i64, i64> = HashMap::new();
            let mut n: i64 = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let key = (n * 37) % KEYS;
                let version = versions.entry(key).or_insert(0);
                *version += 1;
                let v = *version;
                coll.update_one(doc! {"_id": key}, doc! {"$set": {"v": v}})
                    .await
                    .unwrap_or_else(|e| panic!("update of {key}: {e}"));
                n += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            versions
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    start_snapshot(port, &name, &namespace);
    wait_for_snapshot_state(
        &daemon,
        (port, &name, &namespace),
        "finished",
        WAIT,
        "the snapshot did not finish",
    )
    .await;
    eprintln!("snapshot finished after {:?}", began.elapsed());
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let versions = writer.await.expect("the writer");
    let finals: BTreeMap<i64, i64> = (0..KEYS)
        .map(|k| (k, versions.get(&k).copied().unwrap_or(0)))
        .collect();

    let records = common::consume_until(&namespace, WAIT, false, |records| {
        let mut last: HashMap<i64, Option<i64>> = HashMap::new();
        for record in records {
            let s = seen(record);
            last.insert(s.key, s.version);
        }
        finals
            .iter()
            .filter(|(_, v)| **v > 0)
            .all(|(k, v)| last.get(k) == Some(&Some(*v)))
    })
    .await;
    eprintln!(
        "{} records consumed after {:?}",
        records.len(),
        began.elapsed()
    );
    let seen: Vec<Seen> = records.iter().map(seen).collect();
    let snapshot_reads = seen.iter().filter(|s| s.snapshot).count();
    assert!(
        snapshot_reads > 0,
        "no snapshot record; log:\n{}",
        daemon.log()
    );
    // Writes really happened while the snapshot was emitted.
    let first = seen.iter().position(|s| s.snapshot).unwrap_or(0);
    let last = seen.iter().rposition(|s| s.snapshot).unwrap_or(0);
    let interleaved = seen[first..last].iter().filter(|s| !s.snapshot).count();
    assert!(
        interleaved > 0,
        "no change event between the snapshot's first and last records: not concurrent"
    );
    let mut by_key: BTreeMap<i64, Vec<&Seen>> = BTreeMap::new();
    for s in &seen {
        by_key.entry(s.key).or_default().push(s);
    }
    for (key, final_version) in &finals {
        let records = by_key.get(key).cloned().unwrap_or_default();
        // A key nobody wrote during the test is in the snapshot.
        if *final_version == 0 {
            assert!(
                records.iter().any(|s| s.snapshot),
                "key {key}, untouched, has no snapshot record"
            );
        }
        // Versions in topic order never decrease: no snapshot read overwrote a newer change.
        let versions: Vec<i64> = records.iter().filter_map(|s| s.version).collect();
        assert!(
            versions.windows(2).all(|w| w[0] <= w[1]),
            "key {key} went back: {records:?}"
        );
        // The last record carries the final version.
        if let Some(last) = records.last() {
            assert_eq!(last.version, Some(*final_version), "key {key}: {records:?}");
        }
    }
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

#[tokio::test]
async fn a_signal_document_starts_a_snapshot_with_its_condition() {
    let db = common::unique("snapshot_sig");
    let namespace = format!("{db}.c");
    seed(&db, 30).await;
    let name = common::unique("snapshot_p");
    let port = common::free_port();
    let mut daemon = start(
        &db,
        &name,
        port,
        &format!("signal_collection = \"{db}.signals\"\nsnapshot_chunk_size = 7"),
    );
    let signals = common::mongo_client()
        .await
        .database(&db)
        .collection::<Document>("signals");
    signals
        .insert_one(doc! {
            "_id": "ad-hoc-1",
            "type": "execute-snapshot",
            "data": {
                "data-collections": [&namespace],
                "type": "incremental",
                "additional-conditions": [
                    {"data-collection": &namespace, "filter": "{\"_id\": {\"$gte\": 20}}"}
                ],
            },
        })
        .await
        .expect("signal");
    let records = common::consume(&namespace, 10, WAIT, false).await;
    let mut keys: Vec<i64> = records.iter().map(|r| seen(r).key).collect();
    keys.sort_unstable();
    assert_eq!(keys, (20..30).collect::<Vec<_>>(), "log:\n{}", daemon.log());
    assert!(records.iter().all(|r| seen(r).snapshot));
    wait_for_snapshot_state(
        &daemon,
        (port, &name, &namespace),
        "finished",
        WAIT,
        "the snapshot was not finished",
    )
    .await;
    let signal = signals
        .find_one(doc! {"_id": "ad-hoc-1"})
        .await
        .expect("reading the signal")
        .expect("the signal");
    assert!(signal.contains_key("processed"), "{signal}");
    // Nothing more: the condition held.
    let again = common::consume(&namespace, 11, Duration::from_secs(2), false).await;
    assert_eq!(again.len(), 10);
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

#[tokio::test]
async fn a_snapshot_shows_its_progress_and_stops_when_cancelled() {
    const KEYS: i64 = 2_000;
    let db = common::unique("snapshot_cancel");
    let namespace = format!("{db}.c");
    seed(&db, KEYS).await;
    let name = common::unique("snapshot_p");
    let port = common::free_port();
    // Small chunks, each emitted once the idle stream passed its high watermark: slow
    // enough to be seen under way.
    let mut daemon = start(
        &db,
        &name,
        port,
        &format!("snapshot_chunk_size = 10\nsignal_collection = \"{db}.signals\""),
    );
    let path = format!("/pipelines/{name}/snapshot");
    let (code, body) = request(port, "POST", &path, "{\"namespaces\": [\"nope.c\"]}");
    assert_eq!(code, 409, "a namespace the pipeline does not watch: {body}");
    assert!(body.contains("nope.c"), "{body}");
    let (code, body) = request(port, "POST", &path, "{\"namespace\": []}");
    assert_eq!(code, 400, "{body}");
    start_snapshot(port, &name, &namespace);
    let mut under_way = Value::Null;
    let progressing = common::eventually(WAIT, || {
        under_way = status(port)["pipelines"][&name]["snapshot"][&namespace].clone();
        let going = under_way["done"].as_u64().is_some_and(|d| d >= 30);
        async move { going }
    })
    .await;
    assert!(
        progressing,
        "/status: {}; log:\n{}",
        status(port),
        daemon.log()
    );
    assert_eq!(under_way["total"], Value::from(KEYS), "{under_way}");
    assert!(
        under_way["ratio"]
            .as_f64()
            .is_some_and(|r| r > 0.0 && r < 1.0),
        "{under_way}"
    );
    assert!(under_way.get("eta_seconds").is_some(), "{under_way}");
    assert_eq!(snapshot_state(port, &name, &namespace), "running");

    let (code, body) = request(port, "DELETE", &path, "");
    assert_eq!(code, 202, "{body}");
    wait_for_snapshot_state(
        &daemon,
        (port, &name, &namespace),
        "cancelled",
        WAIT,
        "the snapshot was not cancelled",
    )
    .await;
    let count = |records: &[common::Consumed]| records.len();
    let at_cancel =
        count(&common::consume(&namespace, KEYS as usize, Duration::from_secs(3), false).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later =
        count(&common::consume(&namespace, KEYS as usize, Duration::from_secs(3), false).await);
    assert_eq!(at_cancel, later, "records still came after the cancel");
    assert!(
        later < KEYS as usize,
        "the snapshot ran to its end ({later} records) despite the cancel"
    );

    // Started again, then cancelled by a `stop-snapshot` signal.
    start_snapshot(port, &name, &namespace);
    let running = common::eventually(WAIT, || {
        let going = snapshot_state(port, &name, &namespace) == "running";
        async move { going }
    })
    .await;
    assert!(running, "/status: {}", status(port));
    common::mongo_client()
        .await
        .database(&db)
        .collection::<Document>("signals")
        .insert_one(doc! {"type": "stop-snapshot", "data": {"data-collections": [&namespace], "type": "incremental"}})
        .await
        .expect("signal");
    wait_for_snapshot_state(
        &daemon,
        (port, &name, &namespace),
        "cancelled",
        WAIT,
        "the snapshot was not cancelled",
    )
    .await;
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

#[tokio::test]
async fn a_snapshot_goes_on_after_a_crash_from_its_last_checkpointed_chunk() {
    const KEYS: i64 = 200;
    let db = common::unique("snapshot_crash");
    let namespace = format!("{db}.c");
    seed(&db, KEYS).await;
    let name = common::unique("snapshot_p");
    let port = common::free_port();
    let extra = "snapshot_chunk_size = 10\ncheckpoint_interval = \"200ms\"";
    let mut daemon = start(&db, &name, port, extra);
    start_snapshot(port, &name, &namespace);
    let going = common::eventually(WAIT, || {
        let done = status(port)["pipelines"][&name]["snapshot"][&namespace]["done"]
            .as_u64()
            .is_some_and(|d| d >= 60);
        async move { done }
    })
    .await;
    assert!(going, "/status: {}; log:\n{}", status(port), daemon.log());
    daemon.signal("KILL");
    daemon.wait(WAIT);

    // The killed daemon's slots come free when its group session times out (librdkafka's
    // 45 s), so the restart waits longer than the other steps.
    let mut daemon = common::Daemon::start(&common::config_toml(
        port,
        &format!(
            "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nmax_await_time = \"200ms\"\n{extra}\n"
        ),
    ));
    daemon.wait_for_log("change stream open", 1, Duration::from_secs(60));
    assert!(
        daemon.log().contains("start=\"checkpoint\""),
        "did not resume from a checkpoint:\n{}",
        daemon.log()
    );
    wait_for_snapshot_state(
        &daemon,
        (port, &name, &namespace),
        "finished",
        WAIT,
        "the snapshot did not go on after the restart",
    )
    .await;
    let records = common::consume_until(&namespace, WAIT, false, |records| {
        let keys: std::collections::BTreeSet<i64> = records
            .iter()
            .map(seen)
            .filter(|s| s.snapshot)
            .map(|s| s.key)
            .collect();
        keys.len() as i64 >= KEYS
    })
    .await;
    let mut reads: BTreeMap<i64, usize> = BTreeMap::new();
    for s in records.iter().map(seen).filter(|s| s.snapshot) {
        *reads.entry(s.key).or_default() += 1;
    }
    assert_eq!(
        reads.len() as i64,
        KEYS,
        "every key is read; log:\n{}",
        daemon.log()
    );
    // The restart went on from its checkpoint, not from the start: the first chunk was
    // emitted once (the chunks after the last checkpoint, at most, twice).
    assert_eq!(reads.get(&0), Some(&1), "{reads:?}");
    let twice = reads.values().filter(|n| **n > 1).count();
    assert!(twice < 60, "{twice} keys read again after the restart");
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

#[tokio::test]
async fn a_snapshot_covers_ids_of_mixed_types() {
    let db = common::unique("snapshot_mixed");
    let namespace = format!("{db}.c");
    let coll = common::mongo_client()
        .await
        .database(&db)
        .collection::<Document>("c");
    let mut docs: Vec<Document> = (0..10).map(|i| doc! {"_id": i, "v": 0}).collect();
    docs.extend(["a", "b", "c", "d", "e"].map(|s| doc! {"_id": s, "v": 0}));
    docs.extend((0..3).map(|_| doc! {"_id": mongodb::bson::oid::ObjectId::new(), "v": 0}));
    docs.push(doc! {"_id": {"nested": 1}, "v": 0});
    coll.insert_many(docs).await.expect("seeding");
    let name = common::unique("snapshot_p");
    let port = common::free_port();
    let mut daemon = start(&db, &name, port, "snapshot_chunk_size = 4");
    start_snapshot(port, &name, &namespace);
    wait_for_snapshot_state(
        &daemon,
        (port, &name, &namespace),
        "finished",
        WAIT,
        "the snapshot was not finished",
    )
    .await;
    let records = common::consume(&namespace, 19, Duration::from_secs(10), false).await;
    let keys: std::collections::BTreeSet<String> = records
        .iter()
        .map(|r| r.key_json()["_id"].to_string())
        .collect();
    assert_eq!(
        keys.len(),
        19,
        "every `_id`, whatever its type, is copied once: {keys:?}"
    );
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

/// One scrape of `/metrics`.
fn scrape(port: u16) -> String {
    common::http_get(port, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// The value of `metric` in `body` for the series whose labels hold every one of `labels`.
fn sample(body: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
}

/// The snapshot metrics count what the snapshot copied: while it runs, one snapshot running,
/// its documents and chunks so far, and the documents left by the estimate (all from one
/// scrape); once it finished, every document and chunk, none running, nothing left.
#[tokio::test]
async fn sourcecompat_a_snapshot_is_counted_in_metrics_during_and_after() {
    const KEYS: i64 = 300;
    const CHUNK: i64 = 10;
    let db = common::unique("sourcecompat_snapm");
    let namespace = format!("{db}.c");
    seed(&db, KEYS).await;
    let name = common::unique("sourcecompat_snapm_p");
    let port = common::free_port();
    let mut daemon = start(&db, &name, port, &format!("snapshot_chunk_size = {CHUNK}"));
    let pipeline = format!("pipeline=\"{name}\"");
    let ns = format!("namespace=\"{namespace}\"");
    let labels = [pipeline.as_str(), ns.as_str()];
    start_snapshot(port, &name, &namespace);

    // During: from one scrape.
    let mut during = String::new();
    let under_way = common::eventually(WAIT, || {
        during = scrape(port);
        let documents = sample(&during, "mkb_source_snapshot_documents_total", &labels);
        let going = documents.is_some_and(|d| d >= 30.0 && d < KEYS as f64);
        async move { going }
    })
    .await;
    assert!(
        under_way,
        "no snapshot progress in metrics:\n{during}\nlog:\n{}",
        daemon.log()
    );
    let documents = sample(&during, "mkb_source_snapshot_documents_total", &labels).unwrap_or(0.0);
    let chunks = sample(&during, "mkb_source_snapshot_chunks_total", &labels).unwrap_or(0.0);
    assert_eq!(
        documents,
        chunks * CHUNK as f64,
        "full chunks of {CHUNK}:\n{during}"
    );
    assert_eq!(
        sample(
            &during,
            "mkb_source_snapshots_running",
            &[pipeline.as_str()]
        ),
        Some(1.0),
        "{during}"
    );
    assert_eq!(
        sample(&during, "mkb_source_snapshot_remaining_documents", &labels),
        Some(KEYS as f64 - documents),
        "{during}"
    );

    // After: every document copied, counted.
    wait_for_snapshot_state(
        &daemon,
        (port, &name, &namespace),
        "finished",
        Duration::from_secs(90),
        "the snapshot was not finished",
    )
    .await;
    let copied = common::consume_until(&namespace, WAIT, false, |records| {
        records.iter().filter(|r| seen(r).snapshot).count() >= KEYS as usize
    })
    .await
    .iter()
    .filter(|r| seen(r).snapshot)
    .count();
    let after = scrape(port);
    assert_eq!(copied, KEYS as usize, "snapshot records in the topic");
    assert_eq!(
        sample(&after, "mkb_source_snapshot_documents_total", &labels),
        Some(copied as f64),
        "{after}"
    );
    assert_eq!(
        sample(&after, "mkb_source_snapshot_chunks_total", &labels),
        Some((KEYS / CHUNK) as f64),
        "{after}"
    );
    assert_eq!(
        sample(&after, "mkb_source_snapshots_running", &[pipeline.as_str()]),
        Some(0.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "mkb_source_snapshot_remaining_documents", &labels),
        Some(0.0),
        "a finished snapshot has nothing left:\n{after}"
    );
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}
