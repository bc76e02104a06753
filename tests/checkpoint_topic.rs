//! The checkpoint topic over a long run (issue 21): a load reads what compaction leaves,
//! not every checkpoint since the topic was created, and an exactly-once pipeline never
//! starts from a checkpoint another pipeline's open transaction hides.
//!
//! These tests call the checkpoint storage (`source::checkpoint`) directly against the
//! shared broker; they assert on records read, never on time (the load time as a ratio to
//! an empty topic is measured by `scripts/bench.sh checkpoint-load`).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mongo_kafka_bridge::source::checkpoint::{self, CheckpointError, Reading};
use mongo_kafka_bridge::source::slots::slot_of;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

const READERS: usize = 10;

fn key(pipeline: &str, namespace: &str) -> Vec<u8> {
    serde_json::json!({"pipeline": pipeline, "namespace": namespace})
        .to_string()
        .into_bytes()
}

fn value(token: u64) -> Vec<u8> {
    serde_json::json!({"resume_token": {"_data": format!("{token:016X}")}})
        .to_string()
        .into_bytes()
}

fn token_of(checkpoint: &checkpoint::Checkpoint) -> String {
    checkpoint.resume_token["_data"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Writes `count` checkpoints of `READERS` readers of `pipeline`, round robin, each to its
/// slot's partition; the last of reader `i` has token `count - READERS + i`.
fn write_old_checkpoints(topic: &str, pipeline: &str, slots: u32, count: u64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", common::kafka_bootstrap())
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap_or_else(|e| panic!("producer: {e}"));
    let keys: Vec<(Vec<u8>, i32)> = (0..READERS)
        .map(|i| {
            let namespace = format!("db.c{i}");
            (
                key(pipeline, &namespace),
                slot_of(pipeline, &namespace, slots),
            )
        })
        .collect();
    for n in 0..count {
        let (key, partition) = &keys[usize::try_from(n).unwrap_or(0) % READERS];
        let value = value(n);
        let mut record = BaseRecord::to(topic)
            .key(key.as_slice())
            .payload(value.as_slice())
            .partition(*partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, back)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "producing to {topic}: {e}"
                    );
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("flushing to {topic}: {e}"));
}

/// How many records a read of every partition from its start to its end meets: what a load
/// that reads the whole topic reads.
fn records_in(topic: &str) -> u64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", common::kafka_bootstrap())
        .set("group.id", common::unique("checkpoints_count"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut open = 0;
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("watermarks of {topic}: {e}"));
        if high > low {
            open += 1;
            assignment
                .add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .unwrap_or_else(|e| panic!("assigning {topic}: {e}"));
        }
    }
    consumer
        .assign(&assignment)
        .unwrap_or_else(|e| panic!("assigning {topic}: {e}"));
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while open > 0 && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(_)) => count += 1,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    assert_eq!(open, 0, "{topic} was not read to its end in 120 s");
    count
}

/// Issue 21, item 4: every start and rebalance read the checkpoint topic from offset 0,
/// and the topic kept every checkpoint ever written (compacted, but with 1 GiB segments
/// that never close). Created by `ensure_topic`, a topic holding 1,000,000 old checkpoints
/// of ten readers is compacted down to a bounded number of records, and a load reads that
/// many and finds each reader's newest checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_reads_what_compaction_leaves_not_every_old_checkpoint() {
    const OLD: u64 = 1_000_000;
    // What a compacted topic leaves: each reader's newest record, plus the open segment
    // (1 MiB, some thousands of records) and segments not cleaned yet.
    const BOUND: u64 = 50_000;
    let topic = common::unique("checkpoints_age");
    let pipeline = "checkpoints_age";
    let slots = 4;
    let kafka = common::config("").kafka;
    checkpoint::ensure_topic(&kafka, &topic, 4)
        .await
        .unwrap_or_else(|e| panic!("ensure_topic: {e}"));
    let written = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || write_old_checkpoints(&topic, pipeline, slots, OLD))
    };
    written.await.unwrap_or_else(|e| panic!("writer: {e}"));
    // The broker's log cleaner runs every 15 s by default: give it a bounded while.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut left = u64::MAX;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let counted = topic.clone();
        left = tokio::task::spawn_blocking(move || records_in(&counted))
            .await
            .unwrap_or(u64::MAX);
        eprintln!("{left} of {OLD} checkpoints left in {topic}");
        if left <= BOUND {
            break;
        }
    }
    assert!(
        left <= BOUND,
        "the checkpoint topic still holds {left} of {OLD} old checkpoints: a load reads them all"
    );
    let reading = Reading {
        topic: topic.clone(),
        pipeline: pipeline.to_owned(),
        slots,
        exactly_once: false,
        owned: (0..4).collect(),
        legacy_topic: None,
    };
    let loaded = checkpoint::load(&kafka, &reading)
        .await
        .unwrap_or_else(|e| panic!("load: {e}"));
    assert!(
        loaded.records_read <= BOUND,
        "the load read {} records",
        loaded.records_read
    );
    let newest: HashMap<String, String> = loaded
        .checkpoints
        .iter()
        .map(|(namespace, c)| (namespace.clone(), token_of(c)))
        .collect();
    let expected: HashMap<String, String> = (0..READERS)
        .map(|i| {
            (
                format!("db.c{i}"),
                format!("{:016X}", OLD - READERS as u64 + i as u64),
            )
        })
        .collect();
    assert_eq!(newest, expected);
    assert_eq!(loaded.generation, 1, "no checkpoint carried a generation");
}

fn transactional(id: &str) -> BaseProducer {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", common::kafka_bootstrap())
        .set("transactional.id", id)
        .set("transaction.timeout.ms", "60000")
        .create()
        .unwrap_or_else(|e| panic!("producer {id}: {e}"));
    producer
        .init_transactions(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("init_transactions {id}: {e}"));
    producer
}

fn write_in_transaction(producer: &BaseProducer, topic: &str, key: &[u8], value: &[u8]) {
    producer
        .begin_transaction()
        .unwrap_or_else(|e| panic!("begin: {e}"));
    producer
        .send(BaseRecord::to(topic).key(key).payload(value).partition(0))
        .unwrap_or_else(|(e, _)| panic!("send: {e}"));
    producer
        .flush(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("flush: {e}"));
}

/// Issue 21, item 5: two exactly-once pipelines share the checkpoint topic (one slot each,
/// so one partition). The other pipeline's transaction stays open, and the first
/// pipeline commits a newer checkpoint after it: a `read_committed` load stopped at the
/// open transaction and returned the older checkpoint, and the pipeline published again
/// what it had committed. Now the load refuses, naming both pipelines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_of_another_pipeline_never_makes_a_start_go_back() {
    let topic = common::unique("checkpoints_shared");
    let (first, other) = ("checkpoints_first", "checkpoints_other");
    let kafka = common::config("").kafka;
    checkpoint::ensure_topic(&kafka, &topic, 1)
        .await
        .unwrap_or_else(|e| panic!("ensure_topic: {e}"));
    let exactly_once = |token: u64| {
        let mut value: serde_json::Value =
            serde_json::from_slice(&value(token)).unwrap_or_default();
        value["exactly_once"] = true.into();
        value["generation"] = 1.into();
        value.to_string().into_bytes()
    };
    let (t_first, t_other) = (
        common::unique("checkpoints_tx_first"),
        common::unique("checkpoints_tx_other"),
    );
    let holder = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || {
            let first_producer = transactional(&t_first);
            let other_producer = transactional(&t_other);
            // Both pipelines committed a checkpoint.
            write_in_transaction(
                &first_producer,
                &topic,
                &key(first, "db.c"),
                &exactly_once(1),
            );
            first_producer
                .commit_transaction(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("commit: {e}"));
            write_in_transaction(
                &other_producer,
                &topic,
                &key(other, "db.c"),
                &exactly_once(1),
            );
            other_producer
                .commit_transaction(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("commit: {e}"));
            // The other pipeline's next transaction stays open...
            write_in_transaction(
                &other_producer,
                &topic,
                &key(other, "db.c"),
                &exactly_once(2),
            );
            // ...and the first commits a newer checkpoint after it.
            write_in_transaction(
                &first_producer,
                &topic,
                &key(first, "db.c"),
                &exactly_once(2),
            );
            first_producer
                .commit_transaction(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("commit: {e}"));
            other_producer
        })
        .await
        .unwrap_or_else(|e| panic!("transactions: {e}"))
    };
    let reading = Reading {
        topic: topic.clone(),
        pipeline: first.to_owned(),
        slots: 1,
        exactly_once: true,
        owned: vec![0],
        legacy_topic: None,
    };
    let loaded = checkpoint::load(&kafka, &reading).await;
    let _ = tokio::task::spawn_blocking(move || holder.abort_transaction(Duration::from_secs(30)))
        .await;
    match loaded {
        Err(CheckpointError::Shared { reason }) => {
            assert!(
                reason.contains(first) && reason.contains(other) && reason.contains(&topic),
                "the refusal names both pipelines and the topic: {reason}"
            );
        }
        Ok(loaded) => {
            let token = loaded.checkpoints.get("db.c").map(token_of);
            assert_eq!(
                token.as_deref(),
                Some(format!("{:016X}", 2).as_str()),
                "the load went back to an older checkpoint: the pipeline publishes again what it committed"
            );
        }
        Err(e) => panic!("load: {e}"),
    }
}

/// Issue 21, item 5, the transaction alone: the other pipeline never committed a checkpoint
/// in the shared partition, only opened a transaction there. The load sees no other
/// pipeline's checkpoint, but the partition is held back before the first pipeline's newest
/// checkpoint: it refuses rather than start from the older one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_alone_holds_back_an_exactly_once_start() {
    let topic = common::unique("checkpoints_held");
    let (first, other) = ("checkpoints_first", "checkpoints_other");
    let kafka = common::config("").kafka;
    checkpoint::ensure_topic(&kafka, &topic, 1)
        .await
        .unwrap_or_else(|e| panic!("ensure_topic: {e}"));
    let (t_first, t_other) = (
        common::unique("checkpoints_tx_first"),
        common::unique("checkpoints_tx_other"),
    );
    let holder = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || {
            let first_producer = transactional(&t_first);
            let other_producer = transactional(&t_other);
            write_in_transaction(&first_producer, &topic, &key(first, "db.c"), &value(1));
            first_producer
                .commit_transaction(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("commit: {e}"));
            write_in_transaction(&other_producer, &topic, &key(other, "db.c"), &value(1));
            write_in_transaction(&first_producer, &topic, &key(first, "db.c"), &value(2));
            first_producer
                .commit_transaction(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("commit: {e}"));
            other_producer
        })
        .await
        .unwrap_or_else(|e| panic!("transactions: {e}"))
    };
    let reading = Reading {
        topic: topic.clone(),
        pipeline: first.to_owned(),
        slots: 1,
        exactly_once: true,
        owned: vec![0],
        legacy_topic: None,
    };
    let loaded = checkpoint::load(&kafka, &reading).await;
    let _ = tokio::task::spawn_blocking(move || holder.abort_transaction(Duration::from_secs(30)))
        .await;
    match loaded {
        Err(CheckpointError::Shared { reason }) => assert!(
            reason.contains("holds back") && reason.contains(first) && reason.contains(&topic),
            "{reason}"
        ),
        Ok(loaded) => panic!(
            "the load started from {:?} behind an open transaction",
            loaded.checkpoints.get("db.c").map(token_of)
        ),
        Err(e) => panic!("load: {e}"),
    }
}

/// Issue 21, item 4: a checkpoint topic created by an earlier version (compacted, segments
/// at the broker's defaults) is given the settings that keep loads bounded, and a setting
/// someone set on it is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_checkpoint_topic_gets_the_missing_settings_and_keeps_its_own() {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let topic = common::unique("checkpoints_old");
    common::create_topic_with(
        &topic,
        1,
        &[("cleanup.policy", "compact"), ("retention.ms", "86400000")],
    )
    .await;
    let kafka = common::config("").kafka;
    checkpoint::ensure_topic(&kafka, &topic, 1)
        .await
        .unwrap_or_else(|e| panic!("ensure_topic: {e}"));
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", common::kafka_bootstrap())
        .create()
        .unwrap_or_else(|e| panic!("admin: {e}"));
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(&topic)], &AdminOptions::new())
        .await
        .unwrap_or_else(|e| panic!("describe {topic}: {e}"));
    let resource = match described.into_iter().next() {
        Some(Ok(resource)) => resource,
        other => panic!("describe {topic}: {other:?}"),
    };
    let value = |name: &str| resource.get(name).and_then(|e| e.value.clone());
    for (name, expected) in [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "1048576"),
        ("segment.ms", "600000"),
        ("min.cleanable.dirty.ratio", "0.1"),
        ("retention.ms", "86400000"),
    ] {
        assert_eq!(value(name).as_deref(), Some(expected), "{topic}: {name}");
    }
}

/// Issue 21, item 5, the upgrade: an exactly-once pipeline that names no `checkpoint_topic`
/// now gets one of its own; its checkpoints from before are in the shared topic. A start
/// that finds none of its checkpoints in its own topic reads them there (other pipelines'
/// checkpoints beside them are no reason to refuse: sharing that topic was the default);
/// once its own topic holds one, the shared one is not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_pipeline_on_a_topic_of_its_own_resumes_from_the_shared_one() {
    let kafka = common::config("").kafka;
    let legacy = common::unique("checkpoints_legacy");
    let own = common::unique("checkpoints_own");
    let pipeline = "checkpoints_upgraded";
    let slots: u32 = 4;
    for topic in [&legacy, &own] {
        checkpoint::ensure_topic(&kafka, topic, 4)
            .await
            .unwrap_or_else(|e| panic!("ensure_topic {topic}: {e}"));
    }
    {
        let legacy = legacy.clone();
        tokio::task::spawn_blocking(move || {
            write_old_checkpoints(&legacy, pipeline, slots, 30);
            // Another pipeline's checkpoints beside them, as in the shared topic.
            write_old_checkpoints(&legacy, "checkpoints_neighbour", slots, 10);
        })
        .await
        .unwrap_or_else(|e| panic!("writer: {e}"));
    }
    let reading = Reading {
        topic: own.clone(),
        pipeline: pipeline.to_owned(),
        slots,
        exactly_once: true,
        owned: (0..4).collect(),
        legacy_topic: Some(legacy.clone()),
    };
    let loaded = checkpoint::load(&kafka, &reading)
        .await
        .unwrap_or_else(|e| panic!("load: {e}"));
    let tokens: HashMap<String, String> = loaded
        .checkpoints
        .iter()
        .map(|(namespace, c)| (namespace.clone(), token_of(c)))
        .collect();
    let expected: HashMap<String, String> = (0..READERS)
        .map(|i| (format!("db.c{i}"), format!("{:016X}", 20 + i as u64)))
        .collect();
    assert_eq!(
        tokens, expected,
        "the shared topic's checkpoints were not read"
    );

    // Its own topic holds one now: that one counts, the shared topic is left alone.
    {
        let own = own.clone();
        tokio::task::spawn_blocking(move || write_old_checkpoints(&own, pipeline, slots, 1))
            .await
            .unwrap_or_else(|e| panic!("writer: {e}"));
    }
    let loaded = checkpoint::load(&kafka, &reading)
        .await
        .unwrap_or_else(|e| panic!("load: {e}"));
    let tokens: Vec<String> = loaded.checkpoints.values().map(token_of).collect();
    assert_eq!(tokens, ["0000000000000000"], "{:?}", loaded.checkpoints);
}

/// A checkpoint topic read right after it was created: the broker may not have elected the
/// partitions' leaders yet (`NotLeaderForPartition`, `LeaderNotAvailable`), which is an answer
/// to wait out, not a failure. `checkpoints reset` of a new exactly-once pipeline (whose topic
/// it creates) failed so in a full run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_topic_read_right_after_its_creation_is_read() {
    let kafka = common::config("").kafka;
    // Many partitions: their leaders are elected one by one, while the first is read.
    const SLOTS: u32 = 256;
    for round in 0..3 {
        let topic = common::unique("checkpoints_new");
        checkpoint::ensure_topic(&kafka, &topic, SLOTS as i32)
            .await
            .expect("topic created");
        let reading = Reading {
            topic: topic.clone(),
            pipeline: "checkpoints_new".to_owned(),
            slots: SLOTS,
            exactly_once: true,
            owned: (0..SLOTS as i32).collect(),
            legacy_topic: None,
        };
        let stored = checkpoint::stored(&kafka, &reading).await;
        assert!(
            matches!(&stored, Ok(found) if found.is_empty()),
            "round {round}: reading {topic} right after its creation: {stored:?}"
        );
    }
}
