//! Sink pipelines scaled out (issue 14): three daemons share one sink pipeline through its
//! consumer group on a multi-partition topic while every key is written version after
//! version; mid-load one daemon is killed with `kill -9` and a fourth starts. Nothing is
//! lost (every record's offset is committed) and the last write per key wins (each
//! document ends at its key's last version, never an older one written again after it).

mod common;

use std::time::Duration;

use common::sink::Sink;
use common::Outgoing;
use mongodb::bson::Bson;
use serde_json::json;

const PARTITIONS: i32 = 6;
const KEYS: i64 = 60;
const VERSIONS: i64 = 30;
/// Long enough for the group to notice the killed daemon (session timeout below), hand its
/// partitions over and catch up.
const WAIT: Duration = Duration::from_secs(120);

/// A short session timeout, so the killed daemon's partitions move within seconds.
fn with_short_session(config: &str) -> String {
    config.replace(
        "[kafka]\n",
        "[kafka]\nconsumer = { \"session.timeout.ms\" = 6000, \"heartbeat.interval.ms\" = 1000 }\n",
    )
}

/// Version `version` of every key, in key order; one key's versions land in one partition,
/// so each partition holds them in order.
fn round(version: i64) -> Vec<Outgoing> {
    (0..KEYS)
        .map(|key| Outgoing::json(json!({ "_id": key }), json!({ "key": key, "v": version })))
        .collect()
}

/// The keys whose document is missing or not at `version`, with what they hold.
async fn behind(sink: &Sink, version: i64) -> Vec<String> {
    let docs = sink.documents().await;
    (0..KEYS)
        .filter_map(|key| {
            let doc = docs.get(&key.to_string());
            // JSON numbers arrive as Int32 or Int64, whichever fits.
            let held = doc.and_then(|d| match d.get("v") {
                Some(Bson::Int32(v)) => Some(i64::from(*v)),
                Some(Bson::Int64(v)) => Some(*v),
                _ => None,
            });
            (held != Some(version)).then(|| format!("{key}: {doc:?}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_lose_nothing_and_keep_the_last_write_through_a_kill_and_a_join() {
    let sink = Sink::new(
        PARTITIONS,
        "id_strategy = \"provided_in_key\"\nmax_batch_size = 20",
    )
    .await;
    let start = |port: u16| {
        let mut daemon = common::Daemon::start(&with_short_session(&sink.config_on(port)));
        daemon.wait_for_log("sink pipeline running", 1, WAIT);
        daemon
    };
    let ports: Vec<u16> = (0..4).map(|_| common::free_port()).collect();
    let first = start(ports[0]);
    let mut second = start(ports[1]);
    let third = start(ports[2]);

    let mut fourth = None;
    for version in 1..=VERSIONS {
        common::produce(&sink.topic, &round(version)).await;
        if version == VERSIONS / 3 {
            // Mid-load: the daemons are writing (some keys are there already) when one dies
            // without a word, its batches unfinished and its offsets uncommitted.
            let writing = common::eventually(WAIT, || {
                let sink = &sink;
                async move { !sink.documents().await.is_empty() }
            })
            .await;
            assert!(writing, "nothing written before the kill");
            // It owns partitions: they must move to the others.
            second.wait_for_log("partitions assigned", 1, WAIT);
            second.signal("KILL");
            let _ = second.wait(Duration::from_secs(10));
        }
        if version == VERSIONS / 2 {
            // A fourth joins while the group may still be moving the killed one's partitions.
            fourth = Some(common::Daemon::start(&with_short_session(
                &sink.config_on(ports[3]),
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut fourth = fourth.unwrap_or_else(|| panic!("the fourth daemon never started"));
    fourth.wait_for_log("sink pipeline running", 1, WAIT);

    // Nothing lost: every offset of the topic committed by the group ...
    let total = KEYS * VERSIONS;
    let committed_all = common::eventually(WAIT, || async {
        common::committed_offsets(&sink.group(), &sink.topic, PARTITIONS)
            .iter()
            .map(|o| o.unwrap_or(0))
            .sum::<i64>()
            == total
    })
    .await;
    let committed = common::committed_offsets(&sink.group(), &sink.topic, PARTITIONS);
    assert!(
        committed_all,
        "committed {committed:?}, not {total} offsets; logs:\n{}\n---\n{}\n---\n{}",
        first.log(),
        third.log(),
        fourth.log()
    );
    // ... and the last write per key won: each document at its key's last version.
    let at_last = common::eventually(WAIT, || {
        let sink = &sink;
        async move { behind(sink, VERSIONS).await.is_empty() }
    })
    .await;
    let late = behind(&sink, VERSIONS).await;
    assert!(
        at_last && late.is_empty(),
        "keys not at version {VERSIONS}: {late:?}"
    );
    // Once committed, nothing older comes back: a stale write after the hand-over would
    // show here.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late = behind(&sink, VERSIONS).await;
    assert!(late.is_empty(), "keys moved back from {VERSIONS}: {late:?}");
    let count = sink.documents().await.len();
    assert_eq!(
        count,
        usize::try_from(KEYS).unwrap_or(usize::MAX),
        "one document per key"
    );

    let mut survivors = vec![first, third, fourth];
    for daemon in &mut survivors {
        daemon.terminate(WAIT);
    }
    let _ = common::mongo_client().await.database(&sink.db).drop().await;
}
