//! The shared harness of the integration tests: where the services are, unique names, and
//! a way to run the daemon binary and talk to its HTTP endpoint.
//!
//! The services come from `test-services/services.sh up` (or a real deployment, through
//! `MONGODB_URI` and `KAFKA_BOOTSTRAP`). A test that needs them fails when they are
//! missing; it never skips.
#![allow(dead_code)]

pub mod sink;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mongo_kafka_bridge::config::{self, Config};

pub mod connect;
pub mod proxy;
pub mod registry;
pub mod services;
pub mod tap;
pub mod traffic;

/// The MongoDB the tests use.
pub fn mongodb_uri() -> String {
    std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".to_owned())
}

/// The Kafka cluster the tests use.
pub fn kafka_bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A name no other test (or earlier run) uses: `<prefix>_<pid>_<time>_<counter>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() % 100_000_000)
        .unwrap_or_default();
    format!(
        "{prefix}_{}_{millis}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A TOML configuration pointing at the test services, with `extra` appended.
pub fn config_toml(http_port: u16, extra: &str) -> String {
    format!(
        r#"
[mongodb]
uri = "{mongo}"
connect_timeout = "3s"
[kafka]
bootstrap_servers = "{kafka}"
request_timeout = "5s"
[http]
address = "127.0.0.1:{http_port}"
[log]
level = "info,rdkafka=warn"
[shutdown]
timeout = "20s"
{extra}
"#,
        mongo = mongodb_uri(),
        kafka = kafka_bootstrap(),
    )
}

/// The parsed configuration of [`config_toml`].
pub fn config(extra: &str) -> Config {
    match config::load_str(&config_toml(free_port(), extra), Path::new("test.toml")) {
        Ok(config) => config,
        Err(e) => panic!("test configuration rejected: {e}"),
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Writes `text` to a new file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Err(e) = std::fs::write(&path, text) {
        panic!("writing {}: {e}", path.display());
    }
    path
}

/// The daemon binary built for these tests.
pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mongo-kafka-bridge"))
}

/// Runs `<subcommand> --config FILE` with `text` in FILE and `env` added to the environment,
/// and waits for it to exit (for `check-config`, or `run` with a configuration it refuses):
/// the exit code, stdout and stderr.
pub fn run_to_end(
    subcommand: &str,
    text: &str,
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = write_file(dir.path(), "bridge.toml", text);
    let out = binary()
        .arg(subcommand)
        .arg("--config")
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running {subcommand}: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running daemon; killed if the test ends without stopping it.
pub struct Daemon {
    child: Child,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `run --config` on `config_text`, logging to a temporary file.
    pub fn start(config_text: &str) -> Self {
        Self::start_with_env(config_text, &[])
    }

    /// [`Daemon::start`] with `env` added to the daemon's environment.
    pub fn start_with_env(config_text: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let config = write_file(dir.path(), "bridge.toml", config_text);
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", stderr_path.display()));
        let child = binary()
            .arg("run")
            .arg("--config")
            .arg(&config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the daemon: {e}"));
        Self {
            child,
            stderr_path,
            _dir: dir,
        }
    }

    /// Replaces the daemon's configuration file (send `HUP` to have it read).
    pub fn rewrite_config(&self, config_text: &str) {
        write_file(self._dir.path(), "bridge.toml", config_text);
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`, ...) to the daemon.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "kill -{signal}: {status:?}"
        );
    }

    /// Waits up to `limit` for the daemon to exit.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => panic!("daemon still running after {limit:?}; log:\n{}", self.log()),
                Err(e) => panic!("waiting for the daemon: {e}"),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on 127.0.0.1:`port`: the status code and body, or `None` when nothing
/// answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_request(port, "GET", path).map(|(status, _, body)| (status, body))
}

/// `method path` (no request body) on 127.0.0.1:`port`: the status code, the response head
/// (status line and headers) and the body, or `None` when nothing answers.
pub fn http_request(port: u16, method: &str, path: &str) -> Option<(u16, String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((status, head.to_owned(), body.to_owned()))
}

/// The sum of every series of `metric` on the daemon's `/metrics` whose labels contain
/// every one of `labels` (e.g. `pipeline="p"`); 0 when there is none.
pub fn metric_with(port: u16, metric: &str, labels: &[&str]) -> f64 {
    let Some((_, body)) = http_get(port, "/metrics") else {
        return 0.0;
    };
    body.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of every series of `metric` on the daemon's `/metrics`.
pub fn metric_sum(port: u16, metric: &str) -> f64 {
    metric_with(port, metric, &[])
}

/// Polls `GET path` until it answers `status`, for at most `limit`; returns the body.
pub fn wait_for_status(port: u16, path: &str, status: u16, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        last = http_get(port, path);
        if let Some((code, body)) = &last {
            if *code == status {
                return body.clone();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("GET {path} did not answer {status} within {limit:?}; last answer: {last:?}");
}

impl Daemon {
    /// Waits until the daemon's log holds `needle` `count` times, for at most `limit`.
    pub fn wait_for_log(&mut self, needle: &str, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.log().matches(needle).count() >= count {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the daemon exited ({status}) before logging `{needle}`; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "`{needle}` not logged {count} times within {limit:?}; log:\n{}",
            self.log()
        );
    }

    /// Sends SIGTERM and asserts the daemon exits 0 within `limit` (a graceful shutdown).
    pub fn terminate(&mut self, limit: Duration) {
        self.signal("TERM");
        let status = self.wait(limit);
        assert_eq!(
            status.code(),
            Some(0),
            "exit {status}; log:\n{}",
            self.log()
        );
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// One consumed record: key, value (`None` for a tombstone), partition, offset.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub partition: i32,
    pub offset: i64,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Consumed {
    /// The value as JSON.
    pub fn json(&self) -> serde_json::Value {
        let bytes = self
            .value
            .as_deref()
            .unwrap_or_else(|| panic!("tombstone at offset {}", self.offset));
        serde_json::from_slice(bytes).unwrap_or_else(|e| {
            panic!(
                "value at offset {} is not JSON ({e}): {}",
                self.offset,
                String::from_utf8_lossy(bytes)
            )
        })
    }

    /// The key as JSON.
    pub fn key_json(&self) -> serde_json::Value {
        let bytes = self
            .key
            .as_deref()
            .unwrap_or_else(|| panic!("no key at offset {}", self.offset));
        serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("key is not JSON ({e})"))
    }
}

/// Reads `topic` from the beginning until `count` records arrived or `limit` passed; with
/// `read_committed`, only committed transactional records are seen.
pub async fn consume(
    topic: &str,
    count: usize,
    limit: Duration,
    read_committed: bool,
) -> Vec<Consumed> {
    consume_until(topic, limit, read_committed, |records| {
        records.len() >= count
    })
    .await
}

/// Reads `topic` from the beginning until `done` holds for the records read so far, or
/// `limit` passed; with `read_committed`, only committed transactional records are seen.
pub async fn consume_until(
    topic: &str,
    limit: Duration,
    read_committed: bool,
    done: impl FnMut(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    consume_until_on(&kafka_bootstrap(), topic, limit, read_committed, done).await
}

/// [`consume_until`] from the broker at `bootstrap`.
pub async fn consume_until_on(
    bootstrap: &str,
    topic: &str,
    limit: Duration,
    read_committed: bool,
    mut done: impl FnMut(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("testreader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    consumer
        .subscribe(&[topic])
        .unwrap_or_else(|e| panic!("subscribe {topic}: {e}"));
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    while !done(&out) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(m)) => out.push(Consumed {
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                partition: m.partition(),
                offset: m.offset(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            // The topic may not exist yet: keep polling until the deadline.
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => break,
        }
    }
    out
}

/// A MongoDB client for the test deployment.
pub async fn mongo_client() -> mongodb::Client {
    mongodb::Client::with_uri_str(mongodb_uri())
        .await
        .unwrap_or_else(|e| panic!("MongoDB client: {e}"))
}

/// Creates `topic` with `partitions` partitions (replication factor 1).
pub async fn create_topic(topic: &str, partitions: i32) {
    create_topic_with(topic, partitions, &[]).await;
}

/// [`create_topic`] with topic configs (`max.message.bytes`, ...).
pub async fn create_topic_with(topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    create_topic_on(&kafka_bootstrap(), topic, partitions, configs).await;
}

/// [`create_topic_with`] on the broker at `bootstrap`.
pub async fn create_topic_on(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap_or_else(|e| panic!("admin client: {e}"));
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new = new.set(key, value);
    }
    let results = admin
        .create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap_or_else(|e| panic!("create topic {topic}: {e}"));
    for result in results {
        if let Err((name, code)) = result {
            panic!("create topic {name}: {code}");
        }
    }
}

/// The topic's partition count, as the broker's metadata says (0: no such topic): asked by a
/// consumer that never makes the broker auto-create the topic (a producer's or the admin
/// client's metadata request may).
pub fn partition_count(topic: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("allow.auto.create.topics", "false")
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len())
}

/// One record to produce: partition, key, value (`None`: a tombstone), headers.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Outgoing {
    /// A record with JSON key and value.
    pub fn json(key: serde_json::Value, value: serde_json::Value) -> Self {
        Self {
            key: Some(key.to_string().into_bytes()),
            value: Some(value.to_string().into_bytes()),
            ..Self::default()
        }
    }
}

/// Produces `records` to `topic` in order (idempotent producer, acks=all) and waits for
/// every acknowledgement.
pub async fn produce(topic: &str, records: &[Outgoing]) {
    produce_with(topic, records, &[]).await;
}

/// [`produce`] with more producer properties (`message.max.bytes`, ...).
pub async fn produce_with(topic: &str, records: &[Outgoing], properties: &[(&str, &str)]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", kafka_bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    for (key, value) in properties {
        config.set(*key, *value);
    }
    let producer: FutureProducer = config.create().unwrap_or_else(|e| panic!("producer: {e}"));
    let mut deliveries = Vec::with_capacity(records.len());
    for record in records {
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(p) = record.partition {
            out = out.partition(p);
        }
        if let Some(k) = &record.key {
            out = out.key(k.as_slice());
        }
        if let Some(v) = &record.value {
            out = out.payload(v.as_slice());
        }
        if !record.headers.is_empty() {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &record.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_slice()),
                });
            }
            out = out.headers(headers);
        }
        loop {
            match producer.send_result(out) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((e, back)) => {
                    if !matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ) {
                        panic!("producing to {topic}: {e}");
                    }
                    out = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            other => panic!("delivery to {topic}: {other:?}"),
        }
    }
}

/// Polls `check` every 200 ms until it answers `true` or `limit` passed; answers the last
/// result.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The offsets `group` committed for `topic`'s partitions `0..partitions`.
pub fn committed_offsets(group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", group)
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("committed offsets of {group}: {e}"));
    (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect()
}
