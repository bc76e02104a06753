//! End-to-end benchmark: the daemon against raw baselines, in one run, on the local services.
//! Run through `scripts/bench.sh`; arguments: `<daemon binary> <results dir>`.
//!
//! Scenarios (N from `BENCH_DOCS`, default 20000; ~1 KB documents with nested fields,
//! ObjectIds and dates):
//! - source: N inserts → records readable in Kafka; baseline: draining a change stream of N
//!   inserts with the driver alone, and producing N records of the same size with rdkafka.
//! - sink: N records in an 8-partition topic → documents in MongoDB; baseline: bulk inserts
//!   of N documents in batches of 500 with the driver alone.
//!
//! Figures are only meaningful as ratios measured in the same run; the MongoDB stand-in's
//! absolute rates are not MongoDB's.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

type Error = Box<dyn std::error::Error>;

const KAFKA: &str = "127.0.0.1:9092";
const MONGO: &str = "mongodb://127.0.0.1:27017";

fn document(i: i64) -> Document {
    doc! {
        "_id": i,
        "oid": ObjectId::new(),
        "at": DateTime::now(),
        "customer": {"name": format!("customer {i}"), "tier": i % 5, "tags": ["a", "b", "c"]},
        "lines": (0..5).map(|l| doc! {"sku": format!("SKU-{l}-{i}"), "qty": l, "price": 9.99}).collect::<Vec<_>>(),
        "note": "x".repeat(600),
    }
}

fn unique(prefix: &str) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{prefix}_{}_{ms}", std::process::id())
}

/// The peak resident set (VmHWM) of `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn start_daemon(binary: &str, config: &str) -> Result<(Child, tempfile::TempDir), Error> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, config)?;
    let child = Command::new(binary)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok((child, dir))
}

fn config(body: &str) -> String {
    format!(
        "[mongodb]\nuri = \"{MONGO}\"\n[kafka]\nbootstrap_servers = \"{KAFKA}\"\n[http]\nenabled = false\n[log]\nlevel = \"warn\"\n{body}"
    )
}

fn consumer(group: &str) -> Result<StreamConsumer, Error> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?)
}

async fn count_records(topic: &str, n: usize, limit: Duration) -> Result<usize, Error> {
    let c = consumer(&unique("benchreader"))?;
    c.subscribe(&[topic])?;
    let deadline = Instant::now() + limit;
    let mut seen = 0;
    while seen < n && Instant::now() < deadline {
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), c.recv()).await {
            seen += 1;
        }
    }
    Ok(seen)
}

async fn insert_all(coll: &mongodb::Collection<Document>, n: i64) -> Result<(), Error> {
    let docs: Vec<Document> = (0..n).map(document).collect();
    for chunk in docs.chunks(500) {
        coll.insert_many(chunk.to_vec()).await?;
    }
    Ok(())
}

/// Hands one record to librdkafka, waiting while its queue is full.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &[u8],
) -> rdkafka::producer::DeliveryFuture {
    loop {
        match producer.send_result(FutureRecord::to(topic).key(key).payload(value)) {
            Ok(delivery) => return delivery,
            Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

struct Row {
    scenario: &'static str,
    metric: &'static str,
    daemon: f64,
    baseline: f64,
}

async fn source(binary: &str, n: i64, client: &mongodb::Client) -> Result<Vec<Row>, Error> {
    // Baseline: the driver alone drains a change stream of n inserts.
    let db = client.database(&unique("benchcs"));
    let coll = db.collection::<Document>("c");
    coll.insert_one(doc! {"_id": -1}).await?;
    let mut stream = coll.watch().await?;
    let started = Instant::now();
    let writer = {
        let coll = coll.clone();
        tokio::spawn(async move { insert_all(&coll, n).await.map_err(|e| e.to_string()) })
    };
    let mut seen = 0;
    while seen < n {
        match tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
            Ok(Some(Ok(_))) => seen += 1,
            _ => break,
        }
    }
    let drain_rate = seen as f64 / started.elapsed().as_secs_f64();
    writer.await??;
    db.drop().await?;

    // Baseline: rdkafka alone produces n records of the same size (acks=all, idempotent).
    let topic = unique("benchraw");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("queue.buffering.max.kbytes", "16384")
        .create()?;
    let value =
        serde_json::to_vec(&mongodb::bson::Bson::Document(document(0)).into_relaxed_extjson())?;
    let started = Instant::now();
    let mut deliveries = Vec::new();
    for i in 0..n {
        let key = format!("{{\"_id\": {i}}}");
        deliveries.push(send(&producer, &topic, &key, &value).await);
    }
    futures_util::future::join_all(deliveries).await;
    let produce_rate = n as f64 / started.elapsed().as_secs_f64();

    // The daemon.
    let db_name = unique("benchsrc");
    let coll = client.database(&db_name).collection::<Document>("c");
    coll.insert_one(doc! {"_id": -1}).await?;
    let (mut child, _dir) = start_daemon(
        binary,
        &config(&format!(
            "[[source]]\nname = \"{}\"\ndatabase = \"{db_name}\"\ncollection = \"c\"\nmax_await_time = \"100ms\"\n",
            unique("bench")
        )),
    )?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    insert_all(&coll, n).await?;
    let seen = count_records(
        &format!("{db_name}.c"),
        n as usize,
        Duration::from_secs(300),
    )
    .await?;
    let daemon_rate = seen as f64 / started.elapsed().as_secs_f64();
    let rss = peak_rss_mib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    client.database(&db_name).drop().await?;
    Ok(vec![
        Row {
            scenario: "source",
            metric: "events/s vs change-stream drain",
            daemon: daemon_rate,
            baseline: drain_rate,
        },
        Row {
            scenario: "source",
            metric: "events/s vs rdkafka produce",
            daemon: daemon_rate,
            baseline: produce_rate,
        },
        Row {
            scenario: "source",
            metric: "peak RSS MiB (limit 64)",
            daemon: rss,
            baseline: 64.0,
        },
    ])
}

async fn sink(binary: &str, n: i64, client: &mongodb::Client) -> Result<Vec<Row>, Error> {
    // Baseline: the driver alone bulk-inserts n documents, 500 a batch.
    let db = client.database(&unique("benchbulk"));
    let started = Instant::now();
    insert_all(&db.collection("c"), n).await?;
    let bulk_rate = n as f64 / started.elapsed().as_secs_f64();
    db.drop().await?;

    let topic = unique("benchsink");
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", KAFKA)
            .create()?;
    admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(
                &topic,
                8,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .create()?;
    let mut deliveries = Vec::new();
    for i in 0..n {
        let value =
            serde_json::to_vec(&mongodb::bson::Bson::Document(document(i)).into_relaxed_extjson())?;
        let key = format!("{{\"_id\": {i}}}");
        deliveries.push(send(&producer, &topic, &key, &value).await);
    }
    futures_util::future::join_all(deliveries).await;

    let db_name = unique("benchsinkdb");
    let (mut child, _dir) = start_daemon(
        binary,
        &config(&format!(
            "[[sink]]\nname = \"{}\"\ntopics = [\"{topic}\"]\ndatabase = \"{db_name}\"\ncollection = \"c\"\nid_strategy = \"provided_in_value\"\n",
            unique("bench")
        )),
    )?;
    let coll = client.database(&db_name).collection::<Document>("c");
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let count = coll.estimated_document_count().await.unwrap_or(0);
        if count > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if count >= n as u64 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let from = first.unwrap_or(started);
    let daemon_rate = n as f64 / from.elapsed().as_secs_f64();
    let rss = peak_rss_mib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    client.database(&db_name).drop().await?;
    Ok(vec![
        Row {
            scenario: "sink",
            metric: "records/s vs driver bulk insert",
            daemon: daemon_rate,
            baseline: bulk_rate,
        },
        Row {
            scenario: "sink",
            metric: "peak RSS MiB (limit 64)",
            daemon: rss,
            baseline: 64.0,
        },
    ])
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(binary), Some(results)) = (args.get(1), args.get(2)) else {
        return Err("usage: bench_e2e <daemon binary> <results dir>".into());
    };
    let n: i64 = std::env::var("BENCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let client = mongodb::Client::with_uri_str(MONGO).await?;
    let mut rows = source(binary, n, &client).await?;
    rows.extend(sink(binary, n, &client).await?);

    println!("{n} documents of ~1 KB each\n");
    println!(
        "{:<8} {:<34} {:>12} {:>12} {:>7}",
        "scenario", "metric", "daemon", "baseline", "ratio"
    );
    let mut json = Vec::new();
    for r in &rows {
        let ratio = if r.baseline > 0.0 {
            r.daemon / r.baseline
        } else {
            0.0
        };
        println!(
            "{:<8} {:<34} {:>12.1} {:>12.1} {:>7.2}",
            r.scenario, r.metric, r.daemon, r.baseline, ratio
        );
        json.push(serde_json::json!({"scenario": r.scenario, "metric": r.metric, "daemon": r.daemon, "baseline": r.baseline, "ratio": ratio, "documents": n}));
    }
    std::fs::create_dir_all(results)?;
    let path = format!("{results}/{}.json", unique("bench"));
    std::fs::File::create(&path)?.write_all(serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!("\nresults: {path}");
    Ok(())
}
