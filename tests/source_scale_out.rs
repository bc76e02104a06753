//! Several daemons with one configuration share a source pipeline's slots through the
//! consumer group (issue 14): through a `kill -9`, a pause past the session timeout and a
//! daemon joining mid-stream, the slots are owned once each, and a `read_committed`
//! consumer sees every change of every collection (exactly-once: once, in order).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mongodb::bson::{doc, Document};

const WAIT: Duration = Duration::from_secs(120);
const COLLECTIONS: usize = 12;
const SLOTS: i32 = 16;

struct Cluster {
    db: String,
    pipeline: String,
    names: Vec<String>,
    extra: String,
}

impl Cluster {
    /// `collections` collections `c0`, `c1`… of a database named after `prefix`, watched by
    /// one pipeline with `delivery` and a checkpoint topic of its own.
    fn new(prefix: &str, collections: usize, delivery: &str) -> Self {
        Self {
            db: common::unique(prefix),
            pipeline: common::unique(&format!("{prefix}src")),
            names: (0..collections).map(|i| format!("c{i}")).collect(),
            extra: format!(
                "delivery = \"{delivery}\"\ncheckpoint_topic = \"{}\"",
                common::unique(&format!("{prefix}ckpt"))
            ),
        }
    }

    /// Creates each collection (a seed document) and its one-partition topic.
    async fn seed(&self, client: &mongodb::Client) -> Vec<mongodb::Collection<Document>> {
        let mut colls = Vec::new();
        for name in &self.names {
            let coll = client.database(&self.db).collection::<Document>(name);
            coll.insert_one(doc! { "_id": "seed" }).await.expect("seed");
            common::create_topic(&format!("{}.{name}", self.db), 1).await;
            colls.push(coll);
        }
        colls
    }

    fn config(&self, port: u16) -> String {
        format!(
            "{}[[source]]\nname = \"{}\"\ndatabase = \"{}\"\ncollection = {:?}\nmax_await_time = \"200ms\"\ncheckpoint_interval = \"200ms\"\n{}\n",
            common::config_toml(port, "")
                .replace("[kafka]\n", "[kafka]\nconsumer = { \"session.timeout.ms\" = 6000, \"heartbeat.interval.ms\" = 1000 }\n"),
            self.pipeline,
            self.db,
            self.names,
            self.extra
        )
    }

    fn start(&self) -> (common::Daemon, u16) {
        let port = common::free_port();
        (common::Daemon::start(&self.config(port)), port)
    }
}

/// The slots a daemon says it owns on `/status`.
fn owned(port: u16, pipeline: &str) -> Option<BTreeSet<i32>> {
    let (_, body) = common::http_get(port, "/status")?;
    let status: serde_json::Value = serde_json::from_str(&body).ok()?;
    let owned = status["pipelines"][pipeline]["slots"]["owned"].as_object()?;
    Some(owned.keys().filter_map(|k| k.parse().ok()).collect())
}

/// Whether the daemons on `ports` own every slot once between them.
fn slots_split(ports: &[u16], pipeline: &str) -> Result<(), String> {
    let mut seen = BTreeMap::new();
    for &port in ports {
        let slots = owned(port, pipeline).ok_or(format!("no /status on {port}"))?;
        if slots.is_empty() {
            return Err(format!("the daemon on {port} owns no slot"));
        }
        for slot in slots {
            if let Some(other) = seen.insert(slot, port) {
                return Err(format!("slot {slot} owned by {other} and {port}"));
            }
        }
    }
    let missing: Vec<i32> = (0..SLOTS).filter(|s| !seen.contains_key(s)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "slots owned by nobody: {missing:?}; owned: {seen:?}"
        ))
    }
}

async fn await_split(ports: &[u16], pipeline: &str, what: &str, logs: impl Fn() -> String) {
    let settled = common::eventually(WAIT, || {
        let ok = slots_split(ports, pipeline).is_ok();
        async move { ok }
    })
    .await;
    assert!(
        settled,
        "{what}: {:?}; logs:\n{}",
        slots_split(ports, pipeline),
        logs()
    );
}

/// The `seq`s of the records of `topic`, in the order read (relaxed JSON values).
fn seqs(records: &[common::Consumed]) -> Vec<i64> {
    records
        .iter()
        .filter_map(|r| r.value.as_deref())
        .filter_map(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
        .filter_map(|v| v["fullDocument"]["seq"].as_i64())
        .collect()
}

/// The sequence numbers of `topic` once it holds `expected` distinct ones (read committed for
/// exactly-once); exactly-once reads a little longer, so that late duplicates show.
async fn delivered(topic: &str, expected: usize, exactly_once: bool) -> Vec<i64> {
    let records = common::consume_until(topic, WAIT, exactly_once, |r| {
        let got: BTreeSet<i64> = seqs(r).into_iter().collect();
        got.len() >= expected
    })
    .await;
    if !exactly_once {
        return seqs(&records);
    }
    let again = common::consume(topic, records.len() + 1, Duration::from_secs(5), true).await;
    seqs(if again.len() > records.len() {
        &again
    } else {
        &records
    })
}

async fn scale_out(delivery: &str) {
    const PER_COLLECTION: i64 = 60;
    let cluster = Cluster::new("own_scale", COLLECTIONS, delivery);
    let client = common::mongo_client().await;
    let colls = cluster.seed(&client).await;
    let (mut a, port_a) = cluster.start();
    let (mut b, port_b) = cluster.start();
    let (mut c, port_c) = cluster.start();
    for daemon in [&mut a, &mut b, &mut c] {
        daemon.wait_for_log("source pipeline running", 1, WAIT);
    }
    await_split(
        &[port_a, port_b, port_c],
        &cluster.pipeline,
        "three daemons",
        || format!("{}\n---\n{}\n---\n{}", a.log(), b.log(), c.log()),
    )
    .await;
    // Every collection open somewhere before the writes start.
    let opened = common::eventually(WAIT, || {
        let open: usize = [&a, &b, &c]
            .iter()
            .map(|d| d.log().matches("change stream open").count())
            .sum();
        async move { open >= COLLECTIONS }
    })
    .await;
    assert!(opened, "not every collection opened");

    let writer = {
        let colls = colls.clone();
        tokio::spawn(async move {
            for seq in 0..PER_COLLECTION {
                for coll in &colls {
                    coll.insert_one(doc! { "_id": seq, "seq": seq })
                        .await
                        .expect("insert");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.signal("KILL");
    a.wait(WAIT);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Paused past the session timeout: the group moves its slots; resumed, it is fenced.
    b.signal("STOP");
    tokio::time::sleep(Duration::from_secs(9)).await;
    b.signal("CONT");
    let (mut d, port_d) = cluster.start();
    writer.await.expect("writer");
    d.wait_for_log("source pipeline running", 1, WAIT);
    let live = [port_b, port_c, port_d];
    await_split(&live, &cluster.pipeline, "after the faults", || {
        format!("{}\n---\n{}\n---\n{}", b.log(), c.log(), d.log())
    })
    .await;
    // The faults did what they should: the paused daemon found its slots gone (lost, or
    // fenced by their new owners), and the one that joined took some over.
    let paused = b.log();
    assert!(
        paused.contains("slots lost") || paused.contains("fenced by another daemon"),
        "the paused daemon never noticed its slots were gone:\n{paused}\n---\n{}\n---\n{}",
        c.log(),
        d.log()
    );
    assert!(
        !owned(port_d, &cluster.pipeline)
            .unwrap_or_default()
            .is_empty(),
        "the joining daemon owns nothing"
    );

    let exactly_once = delivery == "exactly-once";
    let expected: Vec<i64> = (0..PER_COLLECTION).collect();
    for name in &cluster.names {
        let topic = format!("{}.{name}", cluster.db);
        let got = delivered(&topic, expected.len(), exactly_once).await;
        let distinct: BTreeSet<i64> = got.iter().copied().collect();
        let missing: Vec<&i64> = expected.iter().filter(|s| !distinct.contains(s)).collect();
        assert!(
            missing.is_empty(),
            "{topic}: missing {missing:?}; logs:\n{}\n---\n{}\n---\n{}",
            b.log(),
            c.log(),
            d.log()
        );
        if exactly_once {
            assert_eq!(
                got,
                expected,
                "{topic}: not exactly once in order; logs:\n{}\n---\n{}\n---\n{}",
                b.log(),
                c.log(),
                d.log()
            );
        }
    }
    for daemon in [&mut b, &mut c, &mut d] {
        daemon.terminate(WAIT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_share_the_slots_through_a_kill_a_pause_and_a_join_exactly_once() {
    scale_out("exactly-once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_share_the_slots_through_a_kill_a_pause_and_a_join_at_least_once() {
    scale_out("at-least-once").await;
}

/// The lines of `log` that say `what` about the reader `namespace`.
fn reader_lines(log: &str, what: &str, namespace: &str) -> usize {
    // Displayed (`reader stopped`) or debug-formatted (`starting reader`).
    let plain = format!("namespace={namespace}");
    let quoted = format!("namespace=\"{namespace}\"");
    log.lines()
        .filter(|l| l.contains(what))
        .filter(|l| l.contains(&quoted) || l.split_whitespace().any(|field| field == plain))
        .count()
}

/// Issue 24: a daemon joining moves only the slots it takes. The first daemon hands those
/// over (their readers stopped, their transactions committed) and its kept slots' readers
/// run on untouched: no "reader stopped", no second "starting reader" for them; when the
/// second daemon leaves, the first takes its slots back beside them, still untouched. Every
/// change arrives once, in order (exactly-once), or at least once (at-least-once), through
/// both hand-overs.
async fn kept_slots_run_on(delivery: &str) {
    const PER_COLLECTION: i64 = 50;
    const READERS: usize = 8;
    let cluster = Cluster::new("ho_keep", READERS, delivery);
    let client = common::mongo_client().await;
    let colls = cluster.seed(&client).await;
    let (mut a, port_a) = cluster.start();
    a.wait_for_log("change stream open", READERS, WAIT);
    await_split(&[port_a], &cluster.pipeline, "one daemon", || a.log()).await;

    let write = |seqs: std::ops::Range<i64>| {
        let colls = colls.clone();
        tokio::spawn(async move {
            for seq in seqs {
                for coll in &colls {
                    coll.insert_one(doc! { "_id": seq, "seq": seq })
                        .await
                        .expect("insert");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let writer = write(0..PER_COLLECTION);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut b, port_b) = cluster.start();
    await_split(&[port_a, port_b], &cluster.pipeline, "two daemons", || {
        format!("{}\n---\n{}", a.log(), b.log())
    })
    .await;
    writer.await.expect("writer");

    // The readers the first daemon kept: those of the slots it still owns.
    let status = common::http_get(port_a, "/status").map(|(_, body)| body);
    let status: serde_json::Value = status
        .as_deref()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or_default();
    let kept: Vec<String> = status["pipelines"][&cluster.pipeline]["slots"]["owned"]
        .as_object()
        .map(|owned| {
            owned
                .values()
                .filter_map(serde_json::Value::as_array)
                .flatten()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !kept.is_empty() && kept.len() < READERS,
        "the first daemon should keep some readers and give some: {status}"
    );
    let untouched = |what: &str| {
        let log_a = a.log();
        for namespace in &kept {
            assert_eq!(
                (
                    reader_lines(&log_a, "starting reader", namespace),
                    reader_lines(&log_a, "reader stopped", namespace)
                ),
                (1, 0),
                "{what}: {namespace} stays on the first daemon: its reader must run on untouched; log:\n{log_a}"
            );
        }
    };
    untouched("a daemon joined");

    // The second daemon leaves: the first takes its slots back beside the ones it kept.
    let writer = write(PER_COLLECTION..2 * PER_COLLECTION);
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.terminate(WAIT);
    await_split(
        &[port_a],
        &cluster.pipeline,
        "after the second left",
        || format!("{}\n---\n{}", a.log(), b.log()),
    )
    .await;
    writer.await.expect("writer");
    untouched("the daemon that joined left");

    let exactly_once = delivery == "exactly-once";
    let expected: Vec<i64> = (0..2 * PER_COLLECTION).collect();
    for name in &cluster.names {
        let topic = format!("{}.{name}", cluster.db);
        let got = delivered(&topic, expected.len(), exactly_once).await;
        if !exactly_once {
            let distinct: Vec<i64> = got
                .into_iter()
                .collect::<BTreeSet<i64>>()
                .into_iter()
                .collect();
            assert_eq!(
                distinct,
                expected,
                "{topic}: not every change; logs:\n{}\n---\n{}",
                a.log(),
                b.log()
            );
            continue;
        }
        assert_eq!(
            got,
            expected,
            "{topic}: not exactly once in order; logs:\n{}\n---\n{}",
            a.log(),
            b.log()
        );
    }
    a.terminate(WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_daemon_leaves_the_first_daemons_kept_slots_running() {
    kept_slots_run_on("exactly-once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_daemon_leaves_the_first_daemons_kept_slots_running_at_least_once() {
    kept_slots_run_on("at-least-once").await;
}
