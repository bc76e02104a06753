//! Sink pipelines across rebalances while MongoDB is slow or hangs: partitions move between
//! daemons of one group, and every partition keeps flowing afterwards.
//!
//! MongoDB is reached through a TCP proxy of the test harness (frozen or delayed there), so
//! the shared MongoDB serves the other tests meanwhile.

mod common;

use std::time::Duration;

use common::proxy::{self, Proxy};
use common::sink::{Sink, WAIT};
use common::Outgoing;
use serde_json::json;

fn keyed(id: i64, value: serde_json::Value) -> Outgoing {
    Outgoing::json(json!({ "_id": id }), value)
}

/// `config` with a shorter graceful deadline than the harness's, so a revoke waiting on a
/// hung MongoDB gives up within seconds.
fn with_shutdown_timeout(config: &str, timeout: &str) -> String {
    config.replace("timeout = \"20s\"", &format!("timeout = \"{timeout}\""))
}

/// Defect 2 of issue 13: a partition whose writer's mailbox was full when it was revoked
/// was left paused, and stayed paused after it was assigned back: its lag never reached 0.
#[tokio::test]
async fn a_partition_full_when_revoked_flows_again_after_it_is_assigned_back() {
    let sink = Sink::new(
        2,
        "id_strategy = \"provided_in_key\"\nqueue_capacity = 2\nmax_batch_size = 10",
    )
    .await;
    let mongo = Proxy::start(&proxy::mongodb_target(&common::mongodb_uri()));
    let config =
        |port| with_shutdown_timeout(&proxy::config_through(&sink.config_on(port), &mongo), "3s");
    let mut first = common::Daemon::start(&config(sink.port));
    first.wait_for_log("sink pipeline running", 1, WAIT);
    // MongoDB hangs: the writers' mailboxes fill up with both partitions' records.
    mongo.freeze();
    let total: i64 = 1000;
    let records: Vec<Outgoing> = (0..total).map(|i| keyed(i, json!({ "n": i }))).collect();
    common::produce(&sink.topic, &records).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A second member joins (reaching MongoDB directly: a daemon waits for its services
    // before it starts): the first's partitions are revoked while their writers are stuck
    // and their mailboxes full, and the group hands them out again.
    let mut second = common::Daemon::start(&with_shutdown_timeout(
        &sink.config_on(common::free_port()),
        "3s",
    ));
    second.wait_for_log("partitions assigned", 1, WAIT);
    first.wait_for_log("partitions revoked", 1, WAIT);
    // MongoDB answers again; the second member leaves, the first takes every partition.
    mongo.forward();
    second.terminate(WAIT);
    first.wait_for_log("partitions assigned", 2, WAIT);
    let count = sink.wait_for_count(total as u64).await;
    let committed = || {
        common::committed_offsets(&sink.group(), &sink.topic, 2)
            .iter()
            .map(|o| o.unwrap_or(0))
            .sum::<i64>()
    };
    let caught_up = common::eventually(WAIT, || async { committed() == total }).await;
    assert!(
        count == total as u64 && caught_up,
        "{count} of {total} documents, {} of {total} offsets committed; first log:\n{}\n---\nsecond log:\n{}",
        committed(),
        first.log(),
        second.log()
    );
    sink.stop(first).await;
}

/// Watches a group's committed offsets on a thread of its own and remembers every time
/// one went backwards.
struct CommitWatch {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<(Vec<String>, Vec<String>)>,
}

impl CommitWatch {
    fn start(group: String, topic: String, partitions: i32) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut last: Vec<Option<i64>> = vec![None; partitions as usize];
            let mut backwards = Vec::new();
            let mut history = Vec::new();
            let started = std::time::Instant::now();
            while let Err(std::sync::mpsc::TryRecvError::Empty) = stopped.try_recv() {
                let now = common::committed_offsets(&group, &topic, partitions);
                for (p, (before, after)) in last.iter_mut().zip(now).enumerate() {
                    if let (Some(b), Some(a)) = (*before, after) {
                        if a < b {
                            backwards.push(format!("partition {p}: {b} then {a}"));
                        }
                    }
                    if after.is_some() && after != *before {
                        history.push(format!("{:?} p{p}={after:?}", started.elapsed()));
                    }
                    if after.is_some() {
                        *before = after;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (backwards, history)
        });
        Self { stop, thread }
    }

    /// Stops watching; answers every step backwards seen, and every commit seen.
    fn finish(self) -> (Vec<String>, Vec<String>) {
        let _ = self.stop.send(());
        self.thread
            .join()
            .unwrap_or_else(|_| panic!("the commit watcher panicked"))
    }
}

/// Defect 1 of issue 13: a revoked writer that did not finish within the deadline went on
/// writing (stale versions over the new owner's newer ones) and committing (moving the
/// group's offset backwards) after its partition had a new owner.
#[tokio::test]
async fn revoked_writers_neither_write_nor_commit_after_the_revoke() {
    let partitions = 2;
    let sink = Sink::new(
        partitions,
        "id_strategy = \"provided_in_key\"\nqueue_capacity = 1000\nmax_batch_size = 10",
    )
    .await;
    let mongo = Proxy::start(&proxy::mongodb_target(&common::mongodb_uri()));
    let config =
        |port| with_shutdown_timeout(&proxy::config_through(&sink.config_on(port), &mongo), "1s");
    let watch = CommitWatch::start(sink.group(), sink.topic.clone(), partitions);
    let mut first = common::Daemon::start(&config(sink.port));
    first.wait_for_log("sink pipeline running", 1, WAIT);
    // A slow MongoDB: every bulk write takes a few hundred milliseconds.
    mongo.set_latency(Duration::from_millis(60));
    let keys: i64 = 600;
    let mut records = Vec::new();
    for version in 1..=3 {
        for id in 0..keys {
            records.push(keyed(id, json!({ "n": id, "version": version })));
        }
    }
    common::produce(&sink.topic, &records).await;
    // Mid-load, a second member joins: partitions move while their writers hold hundreds of
    // records and a bulk write is on its way.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut second = common::Daemon::start(&config(common::free_port()));
    second.wait_for_log("partitions assigned", 1, WAIT);
    first.wait_for_log("partitions revoked", 1, WAIT);
    let arrived = common::eventually(Duration::from_secs(120), || async {
        let docs = sink.documents().await;
        docs.len() == keys as usize && docs.values().all(|d| d.get_i32("version").ok() == Some(3))
    })
    .await;
    let committed = || {
        common::committed_offsets(&sink.group(), &sink.topic, partitions)
            .iter()
            .map(|o| o.unwrap_or(0))
            .sum::<i64>()
    };
    let total = 3 * keys;
    let caught_up = common::eventually(WAIT, || async { committed() == total }).await;
    // Anything a zombie writer still had would land now.
    mongo.set_latency(Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (backwards, history) = watch.finish();
    eprintln!("committed offsets seen: {history:?}");
    let docs = sink.documents().await;
    let stale: Vec<_> = docs
        .values()
        .filter(|d| d.get_i32("version").ok() != Some(3))
        .take(5)
        .collect();
    assert!(
        arrived && caught_up && stale.is_empty() && backwards.is_empty(),
        "{} documents, stale {stale:?}; {} of {total} offsets committed; committed offsets went backwards: {backwards:?}; first log:\n{}\n---\nsecond log:\n{}",
        docs.len(),
        committed(),
        first.log(),
        second.log()
    );
    second.terminate(WAIT);
    sink.stop(first).await;
}

/// Defect 3 of issue 13: a dead letter that could not be sent for longer than the retry
/// budget (here its topic is missing until the test creates it; a broker restart does the
/// same) stopped the pipeline for good.
#[tokio::test]
async fn a_dead_letter_outage_longer_than_the_retries_is_survived() {
    // The producer may not create the topic, and gives a record up after 1.5 s: every
    // dead letter fails until the topic exists.
    let dlq = common::unique("dlq");
    let sink = Sink::new(
        1,
        &format!(
            "id_strategy = \"provided_in_key\"\nmax_num_retries = 1\nerrors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}\n[kafka.producer]\n\"message.timeout.ms\" = \"1500\"\n\"allow.auto.create.topics\" = \"false\""
        ),
    )
    .await;
    let daemon = sink.start();
    let poison = Outgoing {
        key: Some(br#"{"_id": 2}"#.to_vec()),
        value: Some(b"{not json".to_vec()),
        ..Outgoing::default()
    };
    common::produce(
        &sink.topic,
        &[
            keyed(1, json!({"ok": 1})),
            poison,
            keyed(3, json!({"ok": 3})),
        ],
    )
    .await;
    // The dead letter keeps failing past the retry budget.
    let outage_over = "sink pipeline failed|restarting the sink pipeline";
    let gave_up = common::eventually(WAIT, || async {
        outage_over.split('|').any(|n| daemon.log().contains(n))
    })
    .await;
    assert!(gave_up, "the retries never ran out; log:\n{}", daemon.log());
    // While it restarts again and again, `/ready` says why.
    let reason = common::wait_for_status(sink.port, "/ready", 503, WAIT);
    assert!(
        reason.contains(&sink.name) && reason.contains("restarting"),
        "{reason}"
    );
    // The dead letter topic is there now.
    common::create_topic(&dlq, 1).await;
    common::produce(&sink.topic, &[keyed(4, json!({"ok": 4}))]).await;
    let count = sink.wait_for_count(3).await;
    let docs = sink.documents().await;
    let dead = common::consume(&dlq, 1, WAIT, false).await;
    assert!(
        docs.keys().cloned().collect::<Vec<_>>() == ["1", "3", "4"] && dead.len() == 1,
        "{count} documents {:?}, {} dead letters; log:\n{}",
        docs.keys().collect::<Vec<_>>(),
        dead.len(),
        daemon.log()
    );
    sink.assert_committed(1, 4).await;
    sink.stop(daemon).await;
}

/// Defect 2 of issue 13, its other half: a partition with records waiting while none
/// reaches its writer (whatever the cause) is reported on `/ready`, in a metric and in a
/// WARN, and the report ends when it flows again.
#[tokio::test]
async fn a_stalled_partition_is_reported_until_it_flows_again() {
    let sink = Sink::new(
        1,
        "id_strategy = \"provided_in_key\"\nqueue_capacity = 2\nmax_batch_size = 10",
    )
    .await;
    let mongo = Proxy::start(&proxy::mongodb_target(&common::mongodb_uri()));
    let mut daemon = common::Daemon::start(&proxy::config_through(&sink.config(), &mongo));
    daemon.wait_for_log("partitions assigned", 1, WAIT);
    // MongoDB hangs: the writer is stuck in its first bulk write, its mailbox fills, and
    // the records after them wait in Kafka.
    mongo.freeze();
    let total: i64 = 200;
    let records: Vec<Outgoing> = (0..total).map(|i| keyed(i, json!({ "n": i }))).collect();
    common::produce(&sink.topic, &records).await;
    let component = format!("partition {}/{}/0", sink.name, sink.topic);
    let stalled_metric = || {
        common::metric_with(
            sink.port,
            "mkb_sink_stalled_partitions",
            &[&format!("pipeline=\"{}\"", sink.name)],
        )
    };
    // The stall limit is 30 s; statistics come every 5 s.
    let reported = common::eventually(Duration::from_secs(60), || async {
        let ready = common::http_get(sink.port, "/ready").map(|(_, body)| body);
        ready.is_some_and(|body| body.contains(&component)) && stalled_metric() == 1.0
    })
    .await;
    let ready = common::http_get(sink.port, "/ready");
    let log = daemon.log();
    mongo.forward();
    assert!(
        reported && log.contains("partition stalled"),
        "no stall reported; /ready: {ready:?}, metric {}; log:\n{log}",
        stalled_metric()
    );
    let count = sink.wait_for_count(total as u64).await;
    assert_eq!(count, total as u64, "log:\n{}", daemon.log());
    let cleared = common::eventually(Duration::from_secs(30), || async {
        let ready = common::http_get(sink.port, "/ready").map(|(_, body)| body);
        ready.is_some_and(|body| !body.contains(&component)) && stalled_metric() == 0.0
    })
    .await;
    assert!(
        cleared,
        "the stall report stayed; /ready: {:?}; log:\n{}",
        common::http_get(sink.port, "/ready"),
        daemon.log()
    );
    daemon.wait_for_log("partition flows again", 1, WAIT);
    sink.stop(daemon).await;
}

/// Defect 4 of issue 13 (its commit half): a pipeline stopping at a refused record
/// committed that record's offset, past the first chunk of a split event completed after
/// it; read again from there, the event's other chunks were orphans and the event was lost.
#[tokio::test]
async fn a_stop_never_commits_past_the_first_chunk_of_a_split_event_after_it() {
    let sink = Sink::new(1, "id_strategy = \"provided_in_key\"").await;
    let daemon = sink.start();
    let event = json!({ "big": "x".repeat(64) }).to_string().into_bytes();
    let (head, tail) = event.split_at(event.len() / 2);
    let chunk = |index: u32, bytes: &[u8]| Outgoing {
        key: Some(br#"{"_id": 10}"#.to_vec()),
        value: Some(bytes.to_vec()),
        headers: vec![
            ("mkb.chunk.id".into(), b"event-10".to_vec()),
            ("mkb.chunk.index".into(), index.to_string().into_bytes()),
            ("mkb.chunk.count".into(), b"2".to_vec()),
        ],
        ..Outgoing::default()
    };
    // 0: the event's first chunk; 1: a poison record; 2: the event's last chunk; 3: a record.
    common::produce(
        &sink.topic,
        &[
            chunk(0, head),
            Outgoing {
                key: Some(br#"{"_id": 2}"#.to_vec()),
                value: Some(b"{not json".to_vec()),
                ..Outgoing::default()
            },
            chunk(1, tail),
            keyed(3, json!({"ok": 3})),
        ],
    )
    .await;
    // Without a dead letter topic the pipeline stops at the poison record.
    let body = common::wait_for_status(sink.port, "/ready", 503, WAIT);
    assert!(body.contains(&format!("{}/0@1", sink.topic)), "{body}");
    sink_stop_daemon(daemon);
    let committed = common::committed_offsets(&sink.group(), &sink.topic, 1);
    // The operator sends refused records to a dead letter topic and starts again.
    let dlq = common::unique("dlq");
    let again = Sink {
        name: sink.name.clone(),
        topic: sink.topic.clone(),
        more_topics: Vec::new(),
        db: sink.db.clone(),
        port: common::free_port(),
        extra: format!(
            "id_strategy = \"provided_in_key\"\nerrors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}"
        ),
    };
    let daemon = again.start();
    let count = again.wait_for_count(2).await;
    let docs = again.documents().await;
    let dead = common::consume(&dlq, 1, WAIT, false).await;
    // Anything else dead-lettered (an orphan chunk) would have arrived with the poison one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dead_after = common::consume(&dlq, 2, Duration::from_secs(3), false).await;
    assert!(
        docs.keys().cloned().collect::<Vec<_>>() == ["10", "3"]
            && docs.get("10").and_then(|d| d.get_str("big").ok()) == Some(&"x".repeat(64)[..])
            && dead.len() == 1
            && dead_after.len() == 1,
        "committed at the stop: {committed:?}; {count} documents {docs:?}; {} dead letters; log:\n{}",
        dead_after.len(),
        daemon.log()
    );
    again.stop(daemon).await;
}

/// Stops a daemon whose pipeline failed (it still exits 0 on SIGTERM).
fn sink_stop_daemon(mut daemon: common::Daemon) {
    daemon.terminate(WAIT);
}

/// Defect 4 of issue 13 (its bound half): a writer holding more than 16 unfinished split
/// events abandoned the oldest, a valid one (logging, wrongly, that its producer had sent it
/// again), so its later chunks were orphans and the pipeline stopped.
#[tokio::test]
async fn many_split_events_interleaved_are_all_put_back_together() {
    let sink = Sink::new(1, "id_strategy = \"provided_in_key\"").await;
    let daemon = sink.start();
    let events: Vec<(i64, Vec<u8>)> = (0..40)
        .map(|id| {
            (
                id,
                json!({ "n": id, "pad": "y".repeat(100) })
                    .to_string()
                    .into_bytes(),
            )
        })
        .collect();
    let chunk = |id: i64, index: usize, bytes: &[u8]| Outgoing {
        key: Some(format!("{{\"_id\": {id}}}").into_bytes()),
        value: Some(bytes.to_vec()),
        headers: vec![
            ("mkb.chunk.id".into(), format!("event-{id}").into_bytes()),
            ("mkb.chunk.index".into(), index.to_string().into_bytes()),
            ("mkb.chunk.count".into(), b"2".to_vec()),
        ],
        ..Outgoing::default()
    };
    // Forty events of forty keys, interleaved: every first chunk, then every last one.
    let mut records = Vec::new();
    for half in 0..2 {
        for (id, value) in &events {
            let (head, tail) = value.split_at(value.len() / 2);
            records.push(chunk(*id, half, if half == 0 { head } else { tail }));
        }
    }
    common::produce(&sink.topic, &records).await;
    let count = sink.wait_for_count(40).await;
    let docs = sink.documents().await;
    let whole = docs
        .values()
        .filter(|d| d.get_str("pad").ok() == Some(&"y".repeat(100)[..]))
        .count();
    assert!(
        count == 40 && whole == 40,
        "{count} documents, {whole} whole; log:\n{}",
        daemon.log()
    );
    sink.assert_committed(1, 80).await;
    sink.stop(daemon).await;
}
