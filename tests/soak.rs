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
