//! Where the MongoDB Kafka Connector's users lose data or time, end to end: a parallel copy
//! of existing documents that survives a kill, events larger than Kafka allows, quiet
//! collections whose checkpoints still move, resume points gone from the oplog, and a daemon
//! killed before its first checkpoint.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mongodb::bson::{doc, Document};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

fn source(name: &str, db: &str, coll: &str, extra: &str) -> String {
    format!(
        "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"{coll}\"\ncheckpoint_interval = \"200ms\"\nmax_await_time = \"200ms\"\n{extra}\n"
    )
}

/// The `_id` in a record's key (any integer type).
fn key_id(record: &common::Consumed) -> Option<i64> {
    let key: serde_json::Value = serde_json::from_slice(record.key.as_deref()?).ok()?;
    key["_id"]
        .as_i64()
        .or_else(|| key["_id"]["$numberLong"].as_str()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_parallel_copy_continues_where_it_stopped() {
    const DOCS: i64 = 100_000;
    let db = common::unique("pcopy");
    let client = common::mongo_client().await;
    let coll = client.database(&db).collection::<Document>("big");
    for chunk in (0..DOCS).collect::<Vec<_>>().chunks(5000) {
        let docs: Vec<Document> = chunk
            .iter()
            .map(|i| doc! {"_id": *i, "v": *i, "pad": "p".repeat(40)})
            .collect();
        coll.insert_many(docs).await.expect("insert_many");
    }
    let topic = format!("{db}.big");
    common::create_topic(&topic, 4).await;
    let port = common::free_port();
    let name = common::unique("pcsrc");
    let config = common::config_toml(
        port,
        &source(
            &name,
            &db,
            "big",
            "startup_mode = \"copy_existing\"\ncopy_existing_parallelism = 4\nformat = \"canonical_json\"",
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("copying existing documents", 1, WAIT);
    // Kill it in the middle of the copy.
    let copied_enough = common::eventually(WAIT, || async {
        common::metric_with(port, "mkb_source_copied_documents_total", &[]) >= 30_000.0
    })
    .await;
    assert!(
        copied_enough,
        "the copy did not get going; log:\n{}",
        daemon.log()
    );
    let before_kill = common::metric_with(port, "mkb_source_copied_documents_total", &[]);
    // Changes made during the copy must follow it.
    coll.update_one(doc! {"_id": 7_i64}, doc! {"$set": {"v": -7}})
        .await
        .expect("update");
    daemon.signal("KILL");
    daemon.wait(WAIT);
    assert!(
        before_kill < DOCS as f64,
        "the copy finished before the kill ({before_kill} documents)"
    );
    coll.insert_one(doc! {"_id": DOCS, "v": DOCS})
        .await
        .expect("insert");

    let mut restarted = common::Daemon::start(&config);
    restarted.wait_for_log("change stream open", 1, WAIT);
    let log = restarted.log();
    assert!(log.contains("start=\"checkpoint, copying\""), "{log}");
    coll.insert_one(doc! {"_id": DOCS + 1, "v": DOCS + 1})
        .await
        .expect("insert");
    let copied_again = common::metric_with(port, "mkb_source_copied_documents_total", &[]);

    // The ids seen so far and the change events (not copies) of the three changed ones,
    // updated with each new record only (the check runs per record).
    let mut ids: BTreeSet<i64> = BTreeSet::new();
    let mut changed: BTreeSet<i64> = BTreeSet::new();
    let records = common::consume_until(&topic, WAIT, false, |records| {
        if let Some(record) = records.last() {
            if let Some(id) = key_id(record) {
                ids.insert(id);
                if [7, DOCS, DOCS + 1].contains(&id)
                    && record.json()["_id"]["copyingData"] != json!(true)
                {
                    changed.insert(id);
                }
            }
        }
        ids.len() as i64 >= DOCS + 2 && changed.len() == 3
    })
    .await;
    let mut copies: BTreeMap<i64, usize> = BTreeMap::new();
    let mut changes = BTreeSet::new();
    for r in &records {
        let Some(id) = key_id(r) else { continue };
        let value = r.json();
        if value["_id"]["copyingData"] == json!(true) {
            *copies.entry(id).or_default() += 1;
        } else {
            changes.insert((id, value["operationType"].as_str().unwrap_or("").to_owned()));
        }
    }
    let missing: Vec<i64> = (0..DOCS).filter(|id| !copies.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{} never copied, e.g. {:?}; {} records read, {} copied, before the kill {before_kill}, after {copied_again}; log:\n{}",
        missing.len(),
        &missing[..missing.len().min(20)],
        records.len(),
        copies.len(),
        restarted.log()
    );
    for (id, op) in [(7, "update"), (DOCS, "insert"), (DOCS + 1, "insert")] {
        assert!(
            changes.contains(&(id, op.to_owned())),
            "no {op} of {id} after the copy: {changes:?}"
        );
    }
    // The restart continued the copy: it re-copied only what was in flight at the kill,
    // far less than the part already done.
    let recopied: usize = copies.values().map(|n| n - 1).sum();
    eprintln!(
        "copied before the kill: {before_kill}, copied after the restart: {copied_again}, re-copied: {recopied}"
    );
    assert!(
        (recopied as f64) < before_kill / 2.0,
        "{recopied} documents were copied twice of {before_kill} copied before the kill: the copy started over"
    );
    restarted.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_events_are_split_and_reassembled_or_skipped_and_counted() {
    let db = common::unique("oversize");
    let client = common::mongo_client().await;
    let big = client.database(&db).collection::<Document>("big");
    let skipped = client.database(&db).collection::<Document>("skipped");
    for c in [&big, &skipped] {
        c.insert_one(doc! {"_id": -1_i64}).await.expect("seed");
    }
    let big_topic = format!("{db}.big");
    common::create_topic(&big_topic, 1).await;
    let port = common::free_port();
    let (split_src, skip_src, sink) = (
        common::unique("split"),
        common::unique("skip"),
        common::unique("reasm"),
    );
    let pipelines = source(&split_src, &db, "big", "oversize = \"split\"\nformat = \"bson\"")
        + &source(&skip_src, &db, "skipped", "oversize = \"skip\"")
        + &format!(
            "[[sink]]\nname = \"{sink}\"\ntopics = [\"{big_topic}\"]\ndatabase = \"{db}\"\ncollection = \"big_copy\"\ncdc_handler = \"mongodb\"\nkey_format = \"bson\"\nvalue_format = \"bson\"\nmax_batch_delay = \"50ms\"\n"
        )
        + "[kafka.producer]\n\"message.max.bytes\" = 100000\n";
    let mut daemon = common::Daemon::start(&common::config_toml(port, &pipelines));
    daemon.wait_for_log("change stream open", 2, WAIT);
    let payload: String = (0..350_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    big.insert_one(doc! {"_id": 1_i64, "payload": &payload})
        .await
        .expect("big insert");
    big.insert_one(doc! {"_id": 2_i64, "small": true})
        .await
        .expect("small insert");
    skipped
        .insert_one(doc! {"_id": 1_i64, "payload": &payload})
        .await
        .expect("big insert");
    skipped
        .insert_one(doc! {"_id": 2_i64, "small": true})
        .await
        .expect("small insert");

    // Split: several records with chunk headers, put back together by the sink.
    let copy = client.database(&db).collection::<Document>("big_copy");
    let reassembled = common::eventually(WAIT, || {
        let copy = copy.clone();
        async move {
            copy.count_documents(doc! {"_id": {"$in": [1_i64, 2_i64]}})
                .await
                .unwrap_or(0)
                == 2
        }
    })
    .await;
    assert!(reassembled, "log:\n{}", daemon.log());
    let whole = copy
        .find_one(doc! {"_id": 1_i64})
        .await
        .expect("find")
        .expect("the big document");
    assert_eq!(whole.get_str("payload").ok(), Some(payload.as_str()));
    let records = common::consume(&big_topic, 5, WAIT, false).await;
    let chunks: Vec<&common::Consumed> = records
        .iter()
        .filter(|r| r.headers.iter().any(|(k, _)| k == "mkb.chunk.id"))
        .collect();
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    assert!(chunks
        .iter()
        .all(|c| c.value.as_ref().is_some_and(|v| v.len() <= 100_000)));

    // Skip: nothing published for it, logged with its key, counted; the rest flows.
    let skipped_records = common::consume(&format!("{db}.skipped"), 1, WAIT, false).await;
    assert_eq!(skipped_records.len(), 1);
    assert_eq!(key_id(&skipped_records[0]), Some(2));
    let log = daemon.log();
    assert!(
        log.contains("skipping an event too large for Kafka"),
        "{log}"
    );
    assert!(log.contains(&format!("{db}.skipped {{ \"_id\": ")), "{log}");
    for (pipeline, action) in [(&skip_src, "skipped"), (&split_src, "split")] {
        assert_eq!(
            common::metric_with(
                port,
                "mkb_source_oversize_events_total",
                &[
                    &format!("pipeline=\"{pipeline}\""),
                    &format!("action=\"{action}\"")
                ]
            ),
            1.0,
            "{action}"
        );
    }
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_collection_checkpoint_moves_while_others_are_written() {
    let db = common::unique("quiet");
    let client = common::mongo_client().await;
    let quiet = client.database(&db).collection::<Document>("quiet");
    let busy = client.database(&db).collection::<Document>("busy");
    quiet.insert_one(doc! {"_id": 0_i64}).await.expect("seed");
    let checkpoints = common::unique("quietcp");
    let port = common::free_port();
    let name = common::unique("qsrc");
    let mut daemon = common::Daemon::start(&common::config_toml(
        port,
        &source(
            &name,
            &db,
            "quiet",
            &format!("checkpoint_topic = \"{checkpoints}\""),
        ),
    ));
    daemon.wait_for_log("change stream open", 1, WAIT);
    for i in 0..30_i64 {
        busy.insert_one(doc! {"_id": i}).await.expect("busy insert");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key = json!({"pipeline": name, "namespace": format!("{db}.quiet")}).to_string();
    let records = common::consume_until(&checkpoints, WAIT, false, |records| {
        let tokens: BTreeSet<String> = records
            .iter()
            .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
            .filter_map(|r| r.value.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        tokens.len() >= 3
    })
    .await;
    let tokens: BTreeSet<String> = records
        .iter()
        .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
        .filter_map(|r| r.value.as_ref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        tokens.len() >= 3,
        "the quiet reader's checkpoint did not move: {tokens:?}"
    );
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

/// A resume token from before the oplog's start, in the server's token format; `None` when
/// the server's tokens cannot be made by hand (a real MongoDB's are opaque).
async fn expired_token(coll: &mongodb::Collection<Document>) -> Option<serde_json::Value> {
    let stream = coll.watch().await.ok()?;
    let token = stream.resume_token()?;
    let data = mongodb::bson::to_bson(&token)
        .ok()?
        .as_document()?
        .get_str("_data")
        .ok()?
        .to_owned();
    // The stand-in's tokens are the oplog timestamp in 16 hex digits.
    (data.len() == 16 && data.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| json!({"_data": "0000000100000000"}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_resume_points_follow_the_configured_policy() {
    let db = common::unique("lost");
    let client = common::mongo_client().await;
    let colls: Vec<_> = ["fail", "latest", "recopy"]
        .iter()
        .map(|c| client.database(&db).collection::<Document>(c))
        .collect();
    for c in &colls {
        c.insert_many(vec![doc! {"_id": 1_i64}, doc! {"_id": 2_i64}])
            .await
            .expect("seed");
    }
    let Some(token) = expired_token(&colls[0]).await else {
        eprintln!("SKIPPED: lost resume points: this server's resume tokens are opaque, so an expired one cannot be made; the stand-in's can");
        return;
    };
    let checkpoints = common::unique("lostcp");
    let names: Vec<String> = ["lfail", "llatest", "lrecopy"]
        .iter()
        .map(|n| common::unique(n))
        .collect();
    let mut pipelines = String::new();
    for (name, (coll, policy)) in
        names
            .iter()
            .zip([("fail", "fail"), ("latest", "latest"), ("recopy", "recopy")])
    {
        pipelines += &source(
            name,
            &db,
            coll,
            &format!("checkpoint_topic = \"{checkpoints}\"\non_lost_resume_point = \"{policy}\""),
        );
        let record = common::Outgoing {
            key: Some(
                json!({"pipeline": name, "namespace": format!("{db}.{coll}")})
                    .to_string()
                    .into_bytes(),
            ),
            value: Some(json!({"resume_token": token}).to_string().into_bytes()),
            ..Default::default()
        };
        common::produce(&checkpoints, &[record]).await;
    }
    let port = common::free_port();
    let mut daemon = common::Daemon::start(&common::config_toml(port, &pipelines));
    daemon.wait_for_log("source pipeline failed", 1, WAIT);
    daemon.wait_for_log("change stream open", 2, WAIT);
    let log = daemon.log();
    assert!(
        log.contains(&format!("pipeline={}", names[0]))
            && log.contains("the resume point is gone from the oplog"),
        "{log}"
    );
    let ready = common::wait_for_status(port, "/ready", 503, WAIT);
    assert!(ready.contains(&format!("pipeline {}", names[0])), "{ready}");
    for name in &names[1..] {
        assert_eq!(
            common::metric_with(
                port,
                "mkb_source_resume_gaps_total",
                &[&format!("pipeline=\"{name}\"")]
            ),
            1.0,
            "{name}"
        );
    }
    assert!(log.contains("copying the namespace again"), "{log}");
    assert!(log.contains("restarting at the newest change"), "{log}");
    // recopy: the existing documents are published again; latest: only new changes.
    colls[1]
        .insert_one(doc! {"_id": 3_i64})
        .await
        .expect("insert");
    let recopied = common::consume(&format!("{db}.recopy"), 2, WAIT, false).await;
    let ids: BTreeSet<i64> = recopied.iter().filter_map(key_id).collect();
    assert_eq!(ids, BTreeSet::from([1, 2]));
    let latest = common::consume(&format!("{db}.latest"), 1, WAIT, false).await;
    assert_eq!(latest.iter().filter_map(key_id).collect::<Vec<_>>(), [3]);
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

/// Issue 21, item 9: a topic whose `max.message.bytes` is below the producer's
/// `message.max.bytes` refuses a large record broker-side; the delivery report's
/// `MessageSizeTooLarge` was taken for a transient error and the pipeline restarted on the
/// same event forever. The topic's limit is read (describe_configs) and `oversize` applies:
/// skipped and counted, or split into chunks that fit (the sink puts them back together),
/// or the pipeline stops naming the event. 4000 bytes: a chunk leaves 1 KiB of room for
/// its key and headers and is at least 1 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topics_own_smaller_message_limit_goes_through_the_oversize_policy() {
    let db = common::unique("slots_topiclimit");
    let client = common::mongo_client().await;
    let names = ["split", "skip", "fail"];
    for name in names {
        let coll = client.database(&db).collection::<Document>(name);
        coll.insert_one(doc! {"_id": -1_i64}).await.expect("seed");
        common::create_topic_with(&format!("{db}.{name}"), 1, &[("max.message.bytes", "4000")])
            .await;
    }
    let port = common::free_port();
    let pipeline = |name: &str| format!("{db}_{name}");
    let split_topic = format!("{db}.split");
    let pipelines = source(&pipeline("split"), &db, "split", "oversize = \"split\"\nformat = \"bson\"")
        + &source(&pipeline("skip"), &db, "skip", "oversize = \"skip\"")
        + &source(&pipeline("fail"), &db, "fail", "oversize = \"fail\"")
        + &format!(
            "[[sink]]\nname = \"{db}_reasm\"\ntopics = [\"{split_topic}\"]\ndatabase = \"{db}\"\ncollection = \"split_copy\"\ncdc_handler = \"mongodb\"\nkey_format = \"bson\"\nvalue_format = \"bson\"\nmax_batch_delay = \"50ms\"\n"
        );
    let mut daemon = common::Daemon::start(&common::config_toml(port, &pipelines));
    daemon.wait_for_log("change stream open", 3, WAIT);
    let payload: String = (0..10_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    for name in names {
        let coll = client.database(&db).collection::<Document>(name);
        coll.insert_one(doc! {"_id": 1_i64, "payload": &payload})
            .await
            .expect("big insert");
        tokio::time::sleep(Duration::from_millis(300)).await;
        coll.insert_one(doc! {"_id": 2_i64, "small": true})
            .await
            .expect("small insert");
    }

    // Skip: the big one counted, the small one after it published.
    let skipped = common::consume_until(&format!("{db}.skip"), WAIT, false, |r| {
        r.iter().any(|r| key_id(r) == Some(2))
    })
    .await;
    assert_eq!(
        skipped.iter().filter_map(key_id).collect::<Vec<_>>(),
        [2],
        "skip: the change after the large one did not flow; log:\n{}",
        daemon.log()
    );
    assert_eq!(
        common::metric_with(
            port,
            "mkb_source_oversize_events_total",
            &[
                &format!("pipeline=\"{}\"", pipeline("skip")),
                "action=\"skipped\""
            ]
        ),
        1.0,
        "skip: not counted; log:\n{}",
        daemon.log()
    );

    // Split: chunks that fit the topic, put back together by the sink.
    let copy = client.database(&db).collection::<Document>("split_copy");
    let reassembled = common::eventually(WAIT, || {
        let copy = copy.clone();
        async move {
            copy.count_documents(doc! {"_id": {"$in": [1_i64, 2_i64]}})
                .await
                .unwrap_or(0)
                == 2
        }
    })
    .await;
    assert!(
        reassembled,
        "split: not reassembled; log:\n{}",
        daemon.log()
    );
    let whole = copy
        .find_one(doc! {"_id": 1_i64})
        .await
        .expect("find")
        .expect("the big document");
    assert_eq!(whole.get_str("payload").ok(), Some(payload.as_str()));
    let records = common::consume(&split_topic, 3, WAIT, false).await;
    let chunks: Vec<&common::Consumed> = records
        .iter()
        .filter(|r| r.headers.iter().any(|(k, _)| k == "mkb.chunk.id"))
        .collect();
    assert!(chunks.len() >= 3, "split: {} chunks", chunks.len());

    // Fail: the pipeline stops, naming the event, instead of restarting into it.
    daemon.wait_for_log("source pipeline failed", 1, WAIT);
    let log = daemon.log();
    let failed = log
        .lines()
        .find(|l| l.contains("source pipeline failed"))
        .unwrap_or_default();
    assert!(
        failed.contains(&format!("{db}.fail {{")) && failed.contains("max.message.bytes"),
        "fail: the failure does not name the event and the topic's limit: {failed}"
    );
    assert!(
        !log.contains("restarting the source pipeline"),
        "a pipeline restarted on a record the topic refuses:\n{log}"
    );
    daemon.signal("TERM");
    daemon.wait(WAIT);
    let _ = client.database(&db).drop().await;
}

/// A daemon started at `latest` and killed (SIGKILL) before any change: the changes made
/// while it was down, and after it came back, all reach Kafka. The restart finds where the
/// first start's stream opened in the checkpoint topic, not `latest` again.
async fn killed_before_its_first_change_loses_nothing(delivery: &str) {
    let db = common::unique("kfirst");
    let client = common::mongo_client().await;
    let coll = client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": -1_i64}).await.expect("seed");
    let topic = format!("{db}.c");
    common::create_topic(&topic, 1).await;
    let port = common::free_port();
    let name = common::unique("kfsrc");
    let config = common::config_toml(
        port,
        &source(&name, &db, "c", &format!("delivery = \"{delivery}\"")),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    daemon.signal("KILL");
    daemon.wait(WAIT);
    let first_log = daemon.log();
    for id in 0..5_i64 {
        coll.insert_one(doc! {"_id": id}).await.expect("insert");
    }
    let mut restarted = common::Daemon::start(&config);
    restarted.wait_for_log("change stream open", 1, WAIT);
    for id in 5..10_i64 {
        coll.insert_one(doc! {"_id": id}).await.expect("insert");
    }
    let wanted: BTreeSet<i64> = (0..10).collect();
    let records = common::consume_until(&topic, WAIT, delivery == "exactly-once", |records| {
        let ids: BTreeSet<i64> = records.iter().filter_map(key_id).collect();
        wanted.is_subset(&ids)
    })
    .await;
    let ids: BTreeSet<i64> = records.iter().filter_map(key_id).collect();
    let missing: Vec<&i64> = wanted.difference(&ids).collect();
    assert!(
        missing.is_empty(),
        "{delivery}: changes {missing:?} never reached Kafka (read {ids:?}); first start's log:\n{first_log}\nrestart's log:\n{}",
        restarted.log()
    );
    restarted.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_before_its_first_change_resumes_where_its_stream_opened() {
    killed_before_its_first_change_loses_nothing("at-least-once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_daemon_killed_before_its_first_change_resumes_where_its_stream_opened() {
    killed_before_its_first_change_loses_nothing("exactly-once").await;
}
