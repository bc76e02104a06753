//! The soak run: a source → sink chain under continuous traffic for `SOAK_SECONDS`
//! (default 300), with a fault every `SOAK_FAULT_EVERY` seconds (default 20) in turn: the
//! daemon killed with SIGKILL and restarted, MongoDB connections cut, a configuration
//! reload, a reader restart (MongoDB frozen past the source's `stall_timeout`, so the
//! supervisor aborts the stalled reader and starts it again at its acknowledged position),
//! and with `SOAK_RESTART_KAFKA=1` the Kafka broker restarted (local services only: the
//! broker others share is left alone unless asked). At the end every document written is in
//! the copy, and the daemon's memory did not grow past a bound.
//!
//! Too long for CI: `scripts/soak.sh` runs it (`cargo test --release --test soak -- --ignored`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::proxy::{self, Proxy};
use common::traffic::{self, Traffic};
use mongodb::bson::{doc, Document};

const WAIT: Duration = Duration::from_secs(300);

/// What the daemon logs when it restarts a stalled reader.
const READER_RESTARTED: &str = "change stream has not advanced; restarting the reader";

fn seconds(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs for minutes: scripts/soak.sh"]
async fn soak_under_faults_loses_nothing_and_memory_stays_flat() {
    let duration = seconds("SOAK_SECONDS", 300);
    let fault_every = seconds("SOAK_FAULT_EVERY", 20);
    let uri = common::mongodb_uri();
    let proxy = Proxy::start(&proxy::mongodb_target(&uri));
    let db = common::unique("soak");
    let client = common::mongo_client().await;
    let coll = client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": -1_i64}).await.expect("seed");
    common::create_topic(&format!("{db}.c"), 4).await;
    let port = common::free_port();
    // Names of their own: checkpoints and the sink's consumer group never meet another run's.
    let (source, sink) = (common::unique("soaksrc"), common::unique("soaksnk"));
    let pipelines = format!(
        "[[source]]\nname = \"{source}\"\ndatabase = \"{db}\"\ncollection = \"c\"\ncheckpoint_interval = \"500ms\"\nmax_await_time = \"500ms\"\nstall_timeout = \"3s\"\n\
         [[sink]]\nname = \"{sink}\"\ntopics = [\"{db}.c\"]\ndatabase = \"{db}\"\ncollection = \"c_copy\"\ncdc_handler = \"mongodb\"\nmax_num_retries = 30\n"
    );
    let config = proxy::config_through(&common::config_toml(port, &pipelines), &proxy);
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    let load = Traffic::start(vec![coll], Duration::from_millis(2));
    let restart_kafka = std::env::var("SOAK_RESTART_KAFKA").is_ok_and(|v| v == "1");
    let kafka_is_local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test-services/.cache/run/kafka.pid")
        .exists();
    if !restart_kafka {
        eprintln!("soak: SKIPPING the Kafka broker restart fault: the broker may be shared (set SOAK_RESTART_KAFKA=1 to restart it)");
    }
    let faults = if restart_kafka { 5 } else { 4 };
    let mut reader_restarts = 0;
    let started = Instant::now();
    let mut round = 0;
    let mut rss = Vec::new();
    while started.elapsed() < duration {
        tokio::time::sleep(fault_every).await;
        rss.push(rss_mib(daemon.pid()));
        round += 1;
        match round % faults {
            0 => {
                eprintln!("soak: SIGKILL and restart");
                daemon.signal("KILL");
                daemon.wait(WAIT);
                daemon = common::Daemon::start(&config);
                daemon.wait_for_log("sink pipeline running", 1, WAIT);
            }
            1 => {
                eprintln!("soak: MongoDB connections cut for 2 s");
                proxy.cut();
                tokio::time::sleep(Duration::from_secs(2)).await;
                proxy.forward();
            }
            2 => {
                eprintln!("soak: reload");
                daemon.signal("HUP");
            }
            3 => {
                eprintln!("soak: reader restart (MongoDB frozen past stall_timeout)");
                let before = daemon.log().matches(READER_RESTARTED).count();
                proxy.freeze();
                daemon.wait_for_log(READER_RESTARTED, before + 1, WAIT);
                proxy.forward();
                reader_restarts += 1;
            }
            _ if kafka_is_local => {
                eprintln!("soak: Kafka broker restarted");
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("test-services/services.sh");
                for action in ["down", "up"] {
                    let status = Command::new(&script)
                        .args([action, "kafka"])
                        .status()
                        .expect("services.sh");
                    assert!(status.success(), "services.sh {action} kafka");
                }
            }
            _ => eprintln!("soak: (the broker is not local: no broker restart)"),
        }
    }
    let total = load.stop().await;
    let copy = client.database(&db).collection::<Document>("c_copy");
    traffic::assert_arrived(&copy, (0..total).collect(), WAIT, || daemon.log()).await;
    eprintln!(
        "soak: {total} documents through {round} faults ({reader_restarts} reader restarts) in {:?}; RSS samples (MiB): {rss:?}",
        started.elapsed()
    );
    assert!(
        reader_restarts > 0 || round < 4,
        "no reader restart was injected in {round} rounds"
    );
    // Restarts reset the process; within one process, memory must not keep growing.
    let peak = rss.iter().copied().fold(0.0, f64::max);
    assert!(peak < 256.0, "RSS peaked at {peak} MiB");
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

/// How many keys each collection of the scale-out soak writes versions of.
const KEYS: i64 = 300;
/// The scale-out soak's collections.
const SCALE_COLLECTIONS: usize = 4;

/// One write of the scale-out traffic: collection, key and the version it set (versions are
/// unique over the whole run, so a change seen twice downstream is a duplicate).
#[derive(Debug, Clone, Copy)]
struct Write {
    coll: usize,
    key: i64,
    version: i64,
}

/// Upserts `{_id: key, v: version}` with a new version each time, over `SCALE_COLLECTIONS`
/// collections and `KEYS` keys each, until stopped (at most 200,000 writes); answers every
/// write MongoDB acknowledged and the versions whose write failed (they may or may not have
/// been applied, so they are neither expected nor counted as duplicates).
fn versioned_traffic(
    colls: Vec<mongodb::Collection<Document>>,
    pause: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<Write>, Vec<i64>)> {
    use std::sync::atomic::Ordering;
    tokio::spawn(async move {
        let (mut written, mut uncertain) = (Vec::new(), Vec::new());
        let mut version = 0_i64;
        while !stop.load(Ordering::SeqCst) && version < 200_000 {
            version += 1;
            let coll = usize::try_from(version).unwrap_or(0) % colls.len();
            // Spread over the keys, each key written again and again; the collections'
            // keys are disjoint, so one sink collection holds them all.
            let key = i64::try_from(coll).unwrap_or(0) * KEYS + (version * 7919) % KEYS;
            let result = colls[coll]
                .update_one(doc! {"_id": key}, doc! {"$set": {"v": version}})
                .upsert(true)
                .await;
            match result {
                Ok(_) => written.push(Write { coll, key, version }),
                Err(_) => uncertain.push(version),
            }
            tokio::time::sleep(pause).await;
        }
        (written, uncertain)
    })
}

/// The version a change event record (relaxed JSON value) carries: `fullDocument.v` of an
/// insert or replace, `updateDescription.updatedFields.v` of an update.
fn version_of(value: &serde_json::Value) -> Option<i64> {
    value["fullDocument"]["v"]
        .as_i64()
        .or_else(|| value["updateDescription"]["updatedFields"]["v"].as_i64())
}

/// Fences one slot's producer as a stale daemon would: a producer of the test with the
/// slot's `transactional.id` calls `init_transactions`.
async fn fence_slot(bootstrap: &str, pipeline: &str, slot: i32) {
    use rdkafka::producer::{BaseProducer, Producer};
    let id = format!("mongo-kafka-bridge-{pipeline}-{slot}");
    let bootstrap = bootstrap.to_owned();
    let result = tokio::task::spawn_blocking(move || {
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("transactional.id", &id)
            .create()
            .map_err(|e| e.to_string())?;
        producer
            .init_transactions(Duration::from_secs(30))
            .map_err(|e| e.to_string())
    })
    .await;
    eprintln!("soak: fenced slot {slot}: {result:?}");
}

/// The scale-out soak: three daemons share one exactly-once source pipeline (its slots) and
/// one sink pipeline (its consumer group) for `SOAK_SECONDS` (default 3600), under versioned
/// upserts, with a fault every `SOAK_FAULT_EVERY` seconds (default 60), in turn: `kill -9`
/// of one daemon (started again), `SIGSTOP` of one past the session timeout (then `SIGCONT`),
/// a slot's producer fenced from outside, the schema registry (keys are Avro) unreachable
/// for 15 s, the Kafka broker restarted (the test's own), and a reload of every daemon.
/// At the end a `read_committed` consumer sees every acknowledged change exactly once, the
/// sink's copy holds every key at its last version, no daemon's RSS went past 256 MiB or
/// grew over the run, and a restarted daemon's time to open its streams did not grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs for an hour: SOAK_MODE=scale-out scripts/soak.sh"]
async fn soak_scale_out_three_daemons_exactly_once_every_key_at_its_last_version() {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let duration = seconds("SOAK_SECONDS", 3600);
    let fault_every = seconds("SOAK_FAULT_EVERY", 60);
    let kafka = common::services::OwnService::kafka();
    let registry_url = std::env::var("SCHEMA_REGISTRY_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8081/apis/ccompat/v7".to_owned());
    let registry_target = url::Url::parse(&registry_url)
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .expect("SCHEMA_REGISTRY_URL is a URL with a host");
    let registry = Proxy::start(&registry_target);
    let registry_through = registry_url.replacen(
        &registry_target,
        &format!("127.0.0.1:{}", registry.port()),
        1,
    );
    let db = common::unique("soakscale");
    let client = common::mongo_client().await;
    let names: Vec<String> = (0..SCALE_COLLECTIONS).map(|i| format!("c{i}")).collect();
    let mut colls = Vec::new();
    for name in &names {
        let coll = client.database(&db).collection::<Document>(name);
        coll.insert_one(doc! {"_id": "seed"}).await.expect("seed");
        common::create_topic_on(&kafka.address(), &format!("{db}.{name}"), 4, &[]).await;
        colls.push(coll);
    }
    let (source, sink) = (
        common::unique("soakscalesrc"),
        common::unique("soakscalesnk"),
    );
    let topics: Vec<String> = names.iter().map(|n| format!("{db}.{n}")).collect();
    let pipelines = format!(
        "[kafka.schema_registry]\nurl = \"{registry_through}\"\ntimeout = \"2s\"\n\
         [[source]]\nname = \"{source}\"\ndatabase = \"{db}\"\ncollection = {names:?}\n\
         delivery = \"exactly-once\"\ncheckpoint_interval = \"500ms\"\nmax_await_time = \"300ms\"\n\
         key_format = \"avro\"\nvalue_format = \"relaxed_json\"\n\
         [[sink]]\nname = \"{sink}\"\ntopics = {topics:?}\ndatabase = \"{db}\"\ncollection = \"copy\"\n\
         cdc_handler = \"mongodb\"\nkey_format = \"avro\"\nvalue_format = \"json\"\nmax_num_retries = 30\n"
    );
    let config = |port: u16| {
        kafka.config(&common::config_toml(port, &pipelines)).replace(
            "[kafka]\n",
            "[kafka]\nconsumer = { \"session.timeout.ms\" = 6000, \"heartbeat.interval.ms\" = 1000 }\n",
        )
    };
    let mut daemons: Vec<common::Daemon> = (0..3)
        .map(|_| common::Daemon::start(&config(common::free_port())))
        .collect();
    for daemon in &mut daemons {
        daemon.wait_for_log("sink pipeline running", 1, WAIT);
    }
    let opened = common::eventually(WAIT, || {
        let open: usize = daemons
            .iter()
            .map(|d| d.log().matches("change stream open").count())
            .sum();
        async move { open >= SCALE_COLLECTIONS }
    })
    .await;
    assert!(opened, "not every collection opened");

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = versioned_traffic(colls, Duration::from_millis(5), stop.clone());
    let started = Instant::now();
    let mut round = 0_usize;
    // RSS samples per process (a killed daemon's successor is a new process).
    let mut rss: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    // Seconds from a restarted daemon's start to its first stream opened (checkpoints loaded).
    let mut reopen = Vec::new();
    let mut faults = BTreeMap::<&str, usize>::new();
    loop {
        tokio::time::sleep(fault_every).await;
        if started.elapsed() >= duration {
            break;
        }
        for daemon in &daemons {
            rss.entry(daemon.pid())
                .or_default()
                .push(rss_mib(daemon.pid()));
        }
        let victim = round % daemons.len();
        let fault = match round % 6 {
            0 => {
                daemons[victim].signal("KILL");
                daemons[victim].wait(WAIT);
                let at = Instant::now();
                daemons[victim] = common::Daemon::start(&config(common::free_port()));
                daemons[victim].wait_for_log("sink pipeline running", 1, WAIT);
                // Its slots come back to it, or stay with the others: time the first stream
                // it opens, if the group gives it slots within the wait.
                let reopened = common::eventually(Duration::from_secs(60), || {
                    let open = daemons[victim].log().contains("change stream open");
                    async move { open }
                })
                .await;
                if reopened {
                    reopen.push(at.elapsed().as_secs_f64());
                }
                "kill -9"
            }
            1 => {
                daemons[victim].signal("STOP");
                tokio::time::sleep(Duration::from_secs(10)).await;
                daemons[victim].signal("CONT");
                "SIGSTOP past the session timeout"
            }
            2 => {
                let slot = i32::try_from(round % 16).unwrap_or(0);
                fence_slot(&kafka.address(), &source, slot).await;
                "a slot's producer fenced"
            }
            3 => {
                registry.cut();
                tokio::time::sleep(Duration::from_secs(15)).await;
                registry.forward();
                "registry unreachable for 15 s"
            }
            4 => {
                kafka.down();
                tokio::time::sleep(Duration::from_secs(3)).await;
                kafka.up();
                "broker restarted"
            }
            _ => {
                for daemon in &daemons {
                    daemon.signal("HUP");
                }
                "reload"
            }
        };
        eprintln!(
            "soak scale-out: round {round} at {:?}: {fault}",
            started.elapsed()
        );
        *faults.entry(fault).or_default() += 1;
        round += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let (written, uncertain) = traffic.await.expect("traffic");
    let uncertain: BTreeSet<i64> = uncertain.into_iter().collect();
    let logs = || {
        daemons
            .iter()
            .map(common::Daemon::log)
            .collect::<Vec<_>>()
            .join("\n---\n")
    };

    // Every acknowledged change exactly once, read_committed, on its collection's topic.
    for (index, topic) in topics.iter().enumerate() {
        let expected: BTreeSet<i64> = written
            .iter()
            .filter(|w| w.coll == index)
            .map(|w| w.version)
            .collect();
        // Incremental: the closure sees every record read so far at each new one, and
        // parsing them all again each time is quadratic (tens of thousands of records).
        let (mut seen_so_far, mut looked) = (BTreeSet::new(), 0);
        let records = common::consume_until_on(&kafka.address(), topic, WAIT, true, |r| {
            for c in r[looked..].iter().filter(|c| c.value.is_some()) {
                if let Some(version) = version_of(&c.json()) {
                    seen_so_far.insert(version);
                }
            }
            looked = r.len();
            expected.is_subset(&seen_so_far)
        })
        .await;
        let mut seen = BTreeMap::<i64, usize>::new();
        for record in records.iter().filter(|c| c.value.is_some()) {
            if let Some(version) = version_of(&record.json()) {
                *seen.entry(version).or_default() += 1;
            }
        }
        let missing: Vec<&i64> = expected.iter().filter(|v| !seen.contains_key(v)).collect();
        let twice: Vec<(&i64, &usize)> = seen
            .iter()
            .filter(|(v, n)| **n > 1 && !uncertain.contains(v))
            .collect();
        assert!(
            missing.is_empty() && twice.is_empty(),
            "{topic}: missing {} versions (first {:?}), {} seen more than once (first {:?}); logs:\n{}",
            missing.len(),
            missing.iter().take(10).collect::<Vec<_>>(),
            twice.len(),
            twice.iter().take(10).collect::<Vec<_>>(),
            logs()
        );
    }

    // Every key of every collection at its last version in the sink's copy (one collection
    // for all four: their keys are disjoint).
    let mut last = BTreeMap::<i64, i64>::new();
    for w in &written {
        let entry = last.entry(w.key).or_insert(w.version);
        *entry = (*entry).max(w.version);
    }
    let copy = client.database(&db).collection::<Document>("copy");
    let at_last = common::eventually(WAIT, || {
        let (copy, last) = (copy.clone(), last.clone());
        async move { behind(&copy, &last).await.is_empty() }
    })
    .await;
    assert!(
        at_last,
        "keys not at their last version (key, expected, found): {:?}; logs:\n{}",
        behind(&copy, &last)
            .await
            .into_iter()
            .take(20)
            .collect::<Vec<_>>(),
        logs()
    );

    eprintln!(
        "soak scale-out: {} writes ({} uncertain) through {round} faults {faults:?} in {:?}; \
         RSS samples per process (MiB): {rss:?}; seconds to reopen after kill -9: {reopen:?}",
        written.len(),
        uncertain.len(),
        started.elapsed()
    );
    for (pid, samples) in &rss {
        let peak = samples.iter().copied().fold(0.0, f64::max);
        assert!(peak < 256.0, "daemon {pid}: RSS peaked at {peak} MiB");
        // Flat: over a process's life, its last samples are not far above its early ones.
        if samples.len() >= 8 {
            let quarter = samples.len() / 4;
            let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
            let (early, late) = (
                mean(&samples[..quarter]),
                mean(&samples[samples.len() - quarter..]),
            );
            assert!(
                late < early * 1.5 + 16.0,
                "daemon {pid}: RSS grew from {early:.0} to {late:.0} MiB: {samples:?}"
            );
        }
    }
    if reopen.len() >= 4 {
        let half = reopen.len() / 2;
        let (first, second) = (&reopen[..half], &reopen[half..]);
        let worst_first = first.iter().copied().fold(0.0, f64::max);
        let worst_second = second.iter().copied().fold(0.0, f64::max);
        assert!(
            worst_second < worst_first * 2.0 + 10.0,
            "reopening after a kill -9 got slower over the run (checkpoint load time): {reopen:?}"
        );
    }
    for daemon in &mut daemons {
        daemon.terminate(WAIT);
    }
    let _ = client.database(&db).drop().await;
}

/// `(key, expected, found)` for each key of `last` whose document in `copy` is not at its
/// last version.
async fn behind(
    copy: &mongodb::Collection<Document>,
    last: &std::collections::BTreeMap<i64, i64>,
) -> Vec<(i64, i64, Option<i64>)> {
    use futures_util::TryStreamExt;
    let found: std::collections::BTreeMap<i64, i64> = match copy.find(doc! {}).await {
        Ok(cursor) => cursor
            .try_collect::<Vec<Document>>()
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|d| {
                let id = match d.get("_id")? {
                    mongodb::bson::Bson::Int64(id) => *id,
                    mongodb::bson::Bson::Int32(id) => i64::from(*id),
                    _ => return None,
                };
                let v = match d.get("v")? {
                    mongodb::bson::Bson::Int64(v) => *v,
                    mongodb::bson::Bson::Int32(v) => i64::from(*v),
                    _ => return None,
                };
                Some((id, v))
            })
            .collect(),
        Err(_) => std::collections::BTreeMap::new(),
    };
    last.iter()
        .filter(|(k, v)| found.get(k) != Some(v))
        .map(|(k, v)| (*k, *v, found.get(k).copied()))
        .collect()
}
