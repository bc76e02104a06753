//! Checkpoint load benchmark (issue 21, item 4): how long a start or a rebalance takes to
//! load a pipeline's checkpoints from a topic that holds 1,000,000 old checkpoints, as a
//! ratio to the same load from a topic holding one checkpoint per reader. Both topics are
//! created by the daemon's own `ensure_topic` (compacted, small segments); the old one is
//! loaded once the broker's log cleaner has compacted it (a bounded wait), which is what a
//! daemon meets after a month. Run by `scripts/bench.sh` (`BENCH_CHECKPOINT_LOAD=0` skips
//! it) or alone: `cargo run --release --example bench_checkpoint_load`.
//!
//! Environment: `KAFKA_BOOTSTRAP` (default `127.0.0.1:9092`), `BENCH_CHECKPOINTS` (old
//! checkpoints, default 1,000,000), `BENCH_LOADS` (loads timed per topic, default 5).

use std::path::Path;
use std::time::{Duration, Instant};

use mongo_kafka_bridge::config;
use mongo_kafka_bridge::source::checkpoint::{self, Reading};
use mongo_kafka_bridge::source::slots::slot_of;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

const READERS: u64 = 100;
const SLOTS: u32 = 16;
const PIPELINE: &str = "bench_checkpoint_load";

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes `count` checkpoints of `READERS` readers, round robin, each to its slot.
fn write(bootstrap: &str, topic: &str, count: u64) -> BenchResult<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "50")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    for n in 0..count {
        let namespace = format!("db.c{}", n % READERS);
        let key = serde_json::json!({"pipeline": PIPELINE, "namespace": namespace}).to_string();
        let value = serde_json::json!({"resume_token": {"_data": format!("{n:016X}")}}).to_string();
        let mut record = BaseRecord::to(topic)
            .key(key.as_bytes())
            .payload(value.as_bytes())
            .partition(slot_of(PIPELINE, &namespace, SLOTS));
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    producer.flush(Duration::from_secs(300))?;
    Ok(())
}

/// The median of `loads` loads of `topic`, and the records the last one read.
async fn time_loads(
    kafka: &config::KafkaConfig,
    topic: &str,
    loads: u64,
) -> BenchResult<(Duration, u64)> {
    let reading = Reading {
        topic: topic.to_owned(),
        pipeline: PIPELINE.to_owned(),
        slots: SLOTS,
        exactly_once: false,
        owned: (0..16).collect(),
        legacy_topic: None,
    };
    let mut times = Vec::new();
    let mut records = 0;
    for _ in 0..loads.max(1) {
        let began = Instant::now();
        let loaded = checkpoint::load(kafka, &reading).await?;
        times.push(began.elapsed());
        records = loaded.records_read;
        if loaded.checkpoints.len() as u64 != READERS {
            return Err(format!("{topic}: {} readers loaded", loaded.checkpoints.len()).into());
        }
    }
    times.sort();
    Ok((times[times.len() / 2], records))
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let bootstrap =
        std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let old = env_or("BENCH_CHECKPOINTS", 1_000_000);
    let loads = env_or("BENCH_LOADS", 5);
    let toml = format!(
        "[mongodb]\nuri = \"mongodb://127.0.0.1:27017\"\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\n"
    );
    let kafka = config::load_str(&toml, Path::new("bench.toml"))?.kafka;
    let stamp = std::process::id();
    let fresh = format!("bench-checkpoints-fresh-{stamp}");
    let aged = format!("bench-checkpoints-aged-{stamp}");
    let partitions = i32::try_from(SLOTS)?;
    for topic in [&fresh, &aged] {
        checkpoint::ensure_topic(&kafka, topic, partitions).await?;
    }
    {
        let (bootstrap, fresh, aged) = (bootstrap.clone(), fresh.clone(), aged.clone());
        tokio::task::spawn_blocking(move || {
            write(&bootstrap, &fresh, READERS)?;
            write(&bootstrap, &aged, old)
        })
        .await??;
    }
    // What the broker's cleaner leaves within a bounded wait: the state after a long run.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut aged_result = time_loads(&kafka, &aged, 1).await?;
    while aged_result.1 > old / 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(10)).await;
        aged_result = time_loads(&kafka, &aged, 1).await?;
    }
    let (fresh_time, fresh_records) = time_loads(&kafka, &fresh, loads).await?;
    let (aged_time, aged_records) = time_loads(&kafka, &aged, loads).await?;
    let ratio = aged_time.as_secs_f64() / fresh_time.as_secs_f64().max(1e-6);
    println!("checkpoint load, {READERS} readers, {SLOTS} slots, median of {loads}:");
    println!("  fresh topic ({READERS} checkpoints):   {fresh_time:>10.1?}, {fresh_records} records read");
    println!("  aged topic ({old} checkpoints): {aged_time:>10.1?}, {aged_records} records read");
    println!(
        "  ratio aged / fresh: {ratio:.2} (target <= 3: independent of the topic's age) {}",
        if ratio <= 3.0 { "yes" } else { "NO" }
    );
    Ok(())
}
