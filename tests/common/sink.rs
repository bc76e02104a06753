//! A sink pipeline under test: fresh topics into a fresh database, the daemon configuration
//! around it, and ways to read back what it wrote and dead-lettered.

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document};

/// How long the sink tests wait for anything to arrive.
pub const WAIT: Duration = Duration::from_secs(60);

/// A sink pipeline from fresh topics into the collection `docs` of a fresh database.
pub struct Sink {
    /// The pipeline's name.
    pub name: String,
    /// Its first topic.
    pub topic: String,
    /// Topics added with [`Sink::add_topic`], also consumed by the pipeline.
    pub more_topics: Vec<String>,
    /// The database written to.
    pub db: String,
    /// The daemon's HTTP port.
    pub port: u16,
    /// TOML appended to the `[[sink]]` table.
    pub extra: String,
}

impl Sink {
    /// A pipeline on one new topic of `partitions` partitions, with `extra` in its table.
    pub async fn new(partitions: i32, extra: &str) -> Self {
        Self::with_topic_config(partitions, &[], extra).await
    }

    /// [`Sink::new`], the topic created with the topic configs `topic_config`
    /// (`max.message.bytes`, ...).
    pub async fn with_topic_config(
        partitions: i32,
        topic_config: &[(&str, &str)],
        extra: &str,
    ) -> Self {
        let sink = Self {
            name: super::unique("sink"),
            topic: super::unique("in"),
            more_topics: Vec::new(),
            db: super::unique("sinkdb"),
            port: super::free_port(),
            extra: extra.to_owned(),
        };
        super::create_topic_with(&sink.topic, partitions, topic_config).await;
        sink
    }

    /// Creates one more topic (one partition) for the pipeline and answers its name.
    pub async fn add_topic(&mut self) -> String {
        let topic = super::unique("in");
        super::create_topic(&topic, 1).await;
        self.more_topics.push(topic.clone());
        topic
    }

    /// The consumer group of the pipeline.
    pub fn group(&self) -> String {
        format!("mongo-kafka-bridge-{}", self.name)
    }

    /// The daemon configuration.
    pub fn config(&self) -> String {
        self.config_on(self.port)
    }

    /// The daemon configuration, the HTTP endpoint on `port`.
    pub fn config_on(&self, port: u16) -> String {
        let topics: Vec<String> = std::iter::once(&self.topic)
            .chain(&self.more_topics)
            .map(|t| format!("\"{t}\""))
            .collect();
        let sink = format!(
            "[[sink]]\nname = \"{}\"\ntopics = [{}]\ndatabase = \"{}\"\ncollection = \"docs\"\nmax_batch_delay = \"50ms\"\n{}\n",
            self.name,
            topics.join(", "),
            self.db,
            self.extra
        );
        super::config_toml(port, &sink)
    }

    /// Starts the daemon and waits until the pipeline runs.
    pub fn start(&self) -> super::Daemon {
        let mut daemon = super::Daemon::start(&self.config());
        daemon.wait_for_log("sink pipeline running", 1, WAIT);
        daemon
    }

    /// The target collection.
    pub async fn collection(&self) -> mongodb::Collection<Document> {
        super::mongo_client()
            .await
            .database(&self.db)
            .collection("docs")
    }

    /// Every document of the target collection, by `_id` rendered as JSON.
    pub async fn documents(&self) -> BTreeMap<String, Document> {
        use futures_util::TryStreamExt;
        let docs: Vec<Document> = self
            .collection()
            .await
            .find(doc! {})
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("documents");
        docs.into_iter()
            .map(|d| {
                let id = d
                    .get("_id")
                    .cloned()
                    .unwrap_or(Bson::Null)
                    .into_relaxed_extjson()
                    .to_string();
                (id, d)
            })
            .collect()
    }

    /// Waits until the collection holds `count` documents; answers how many it holds.
    pub async fn wait_for_count(&self, count: u64) -> u64 {
        let coll = self.collection().await;
        super::eventually(WAIT, || {
            let coll = coll.clone();
            async move { coll.count_documents(doc! {}).await.unwrap_or(0) >= count }
        })
        .await;
        coll.count_documents(doc! {}).await.unwrap_or(0)
    }

    /// Waits until the group committed `total` offsets over the topic's `partitions`.
    pub async fn assert_committed(&self, partitions: i32, total: i64) {
        let sum = || {
            super::committed_offsets(&self.group(), &self.topic, partitions)
                .iter()
                .map(|o| o.unwrap_or(0))
                .sum::<i64>()
        };
        let committed = super::eventually(WAIT, || async { sum() == total }).await;
        assert!(committed, "{} of {total} offsets committed", sum());
    }

    /// Stops the daemon with SIGTERM, asserts a clean exit, and drops the database.
    pub async fn stop(self, mut daemon: super::Daemon) {
        daemon.terminate(WAIT);
        let _ = super::mongo_client().await.database(&self.db).drop().await;
    }
}

/// The value of header `key` of a consumed record, as (lossy) text.
pub fn header(record: &super::Consumed, key: &str) -> String {
    record
        .headers
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| panic!("no header {key} in {:?}", record.headers))
}

/// The value of header `key` of a consumed record, as an integer.
pub fn header_i64(record: &super::Consumed, key: &str) -> i64 {
    header(record, key)
        .parse()
        .unwrap_or_else(|e| panic!("header {key}: {e}"))
}
