//! The source pipeline's plumbing end to end, where it used to lose, repeat or stall data:
//! a full librdkafka queue under checkpoints and commits, readers restarted before their
//! first checkpoint, and configurations that used to drop events silently.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use mongodb::bson::{doc, Document};

const WAIT: Duration = Duration::from_secs(90);

fn source(name: &str, db: &str, coll: &str, extra: &str) -> String {
    format!(
        "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"{coll}\"\nmax_await_time = \"200ms\"\n{extra}\n"
    )
}

/// The `_id`s in the keys of `records` (as relaxed JSON writes them).
fn key_ids(records: &[common::Consumed]) -> BTreeSet<i64> {
    records
        .iter()
        .filter_map(|r| r.key.as_deref())
        .filter_map(|k| serde_json::from_slice::<serde_json::Value>(k).ok())
        .filter_map(|k| k["_id"].as_i64())
        .collect()
}

async fn collection(db: &str, coll: &str) -> mongodb::Collection<Document> {
    let collection = common::mongo_client()
        .await
        .database(db)
        .collection::<Document>(coll);
    // Some servers only open change streams on collections that exist.
    collection
        .insert_one(doc! { "_id": -1_i64 })
        .await
        .expect("seed");
    collection
}

/// With room for one message in librdkafka's queue, checkpoints (and exactly-once commits)
/// keep meeting a full queue; each `delivery` pipeline must wait for room, never fail.
async fn a_full_queue_slows_checkpoints(delivery: &str) {
    const DOCS: i64 = 300;
    let db = common::unique("qfull");
    let coll = collection(&db, "c").await;
    let name = common::unique("qfsrc");
    let port = common::free_port();
    let config = common::config_toml(
        port,
        &format!(
            "[kafka.producer]\n\"queue.buffering.max.messages\" = 1\n{}",
            source(
                &name,
                &db,
                "c",
                // An exactly-once pipeline never shares its checkpoint topic.
                &format!("checkpoint_interval = \"20ms\"\ndelivery = \"{delivery}\"\ncheckpoint_topic = \"{name}-checkpoints\"")
            )
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    for id in 0..DOCS {
        coll.insert_one(doc! { "_id": id, "v": id })
            .await
            .expect("insert");
    }
    let expected: BTreeSet<i64> = (0..DOCS).collect();
    let records = common::consume_until(
        &format!("{db}.c"),
        WAIT,
        delivery == "exactly-once",
        |records| key_ids(records).is_superset(&expected),
    )
    .await;
    let arrived = key_ids(&records);
    let missing: Vec<_> = expected.difference(&arrived).collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}; log:\n{}",
        daemon.log()
    );
    let pipeline = format!("pipeline=\"{name}\"");
    let restarts = common::metric_with(port, "mkb_actor_restarts_total", &[&pipeline]);
    let log = daemon.log();
    assert!(
        restarts == 0.0 && !log.contains("producer failed"),
        "a full queue restarted the pipeline {restarts} times; log:\n{log}"
    );
    let checkpoints =
        common::metric_with(port, "mkb_source_checkpoints_written_total", &[&pipeline]);
    assert!(checkpoints > 0.0, "no checkpoint written; log:\n{log}");
    daemon.terminate(WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_librdkafka_queue_slows_checkpoints_instead_of_failing_the_pipeline() {
    a_full_queue_slows_checkpoints("at-least-once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_librdkafka_queue_slows_exactly_once_commits_instead_of_failing_them() {
    a_full_queue_slows_checkpoints("exactly-once").await;
}

/// A `latest` reader restarted by a stall (MongoDB hangs right after the stream opened)
/// resumes where its stream opened: the producer acknowledged that position at once (the
/// first, empty, batch carries it), so the changes made meanwhile arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_reader_restarted_before_its_first_checkpoint_loses_no_change() {
    use common::proxy::{self, Proxy};
    const DOCS: i64 = 20;
    let proxy = Proxy::start(&proxy::mongodb_target(&common::mongodb_uri()));
    let db = common::unique("pin");
    let coll = collection(&db, "c").await;
    let name = common::unique("pinsrc");
    let port = common::free_port();
    // The first getMore waits 2 s for changes: MongoDB freezes before it answers, so no
    // position is acknowledged or checkpointed before the stall restart.
    let config = proxy::config_through(
        &common::config_toml(
            port,
            &source(
                &name,
                &db,
                "c",
                "checkpoint_interval = \"100ms\"\nstall_timeout = \"3s\"",
            )
            .replace("max_await_time = \"200ms\"", "max_await_time = \"2s\""),
        ),
        &proxy,
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    proxy.freeze();
    for id in 0..DOCS {
        coll.insert_one(doc! { "_id": id }).await.expect("insert");
    }
    daemon.wait_for_log(
        "change stream has not advanced; restarting the reader",
        1,
        WAIT,
    );
    proxy.forward();
    daemon.wait_for_log("change stream open", 2, WAIT);
    coll.insert_one(doc! { "_id": DOCS }).await.expect("insert");
    let expected: BTreeSet<i64> = (0..=DOCS).collect();
    let records = common::consume_until(&format!("{db}.c"), WAIT, false, |records| {
        key_ids(records).contains(&DOCS)
    })
    .await;
    let arrived = key_ids(&records);
    let missing: Vec<_> = expected.difference(&arrived).collect();
    assert!(
        missing.is_empty(),
        "changes made before the restart were skipped: {missing:?}; log:\n{}",
        daemon.log()
    );
    daemon.terminate(WAIT);
}

/// Sets `configs` on `topic` (the others go back to the broker's defaults).
async fn alter_topic(topic: &str, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::kafka_bootstrap())
        .create()
        .unwrap_or_else(|e| panic!("admin client: {e}"));
    let mut config = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (key, value) in configs {
        config = config.set(key, value);
    }
    let results = admin
        .alter_configs(&[config], &AdminOptions::new())
        .await
        .unwrap_or_else(|e| panic!("altering {topic}: {e}"));
    for result in results {
        if let Err((_, code)) = result {
            panic!("altering {topic}: {code}");
        }
    }
}

/// A `latest` source pipeline on `<db>.c` whose checkpoint topic refuses every record
/// (`max.message.bytes = 1`), so its producer fails at the first checkpoint, before any is
/// stored; [`accept_checkpoints`] lifts that.
struct RefusedCheckpoints {
    daemon: common::Daemon,
    coll: mongodb::Collection<Document>,
    db: String,
    checkpoints: String,
}

impl RefusedCheckpoints {
    async fn start() -> Self {
        let db = common::unique("refck");
        let coll = collection(&db, "c").await;
        // Readers subscribed before a topic exists may not see it for minutes.
        common::create_topic(&format!("{db}.c"), 1).await;
        let checkpoints = common::unique("refckpt");
        common::create_topic_with(
            &checkpoints,
            1,
            &[("cleanup.policy", "compact"), ("max.message.bytes", "1")],
        )
        .await;
        let name = common::unique("refcksrc");
        let port = common::free_port();
        let config = common::config_toml(
            port,
            &source(
                &name,
                &db,
                "c",
                &format!("checkpoint_interval = \"100ms\"\ncheckpoint_topic = \"{checkpoints}\""),
            ),
        );
        let mut daemon = common::Daemon::start(&config);
        daemon.wait_for_log("change stream open", 1, WAIT);
        Self {
            daemon,
            coll,
            db,
            checkpoints,
        }
    }

    /// Lets the checkpoint topic take checkpoints.
    async fn accept_checkpoints(&self) {
        alter_topic(
            &self.checkpoints,
            &[
                ("cleanup.policy", "compact"),
                ("max.message.bytes", "1048588"),
            ],
        )
        .await;
    }

    /// Waits until the records of `ids` arrived; panics naming the missing ones.
    async fn assert_arrived(&self, ids: std::ops::RangeInclusive<i64>, what: &str) {
        let expected: BTreeSet<i64> = ids.collect();
        let records = common::consume_until(&format!("{}.c", self.db), WAIT, false, |records| {
            key_ids(records).is_superset(&expected)
        })
        .await;
        let arrived = key_ids(&records);
        let missing: Vec<_> = expected.difference(&arrived).collect();
        assert!(
            missing.is_empty(),
            "{what}: {missing:?}; log:\n{}",
            self.daemon.log()
        );
    }
}

/// A producer that failed (a checkpoint refused) reported it from a future spawned on its
/// own context just before stopping, so the report was dropped: the pipeline never
/// restarted, its readers restarted for ever against a dead producer, and nothing was
/// published again even once Kafka took checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_producer_restarts_the_pipeline() {
    let mut pipeline = RefusedCheckpoints::start().await;
    pipeline.daemon.wait_for_log("producer failed", 1, WAIT);
    pipeline
        .daemon
        .wait_for_log("restarting the source pipeline", 1, WAIT);
    pipeline.accept_checkpoints().await;
    // A change every few seconds until one arrives: the pipeline publishes again.
    let topic = format!("{}.c", pipeline.db);
    let mut next = 0_i64;
    let published = common::eventually(WAIT, || {
        next += 1;
        let (coll, topic, id) = (pipeline.coll.clone(), topic.clone(), next);
        async move {
            coll.insert_one(doc! { "_id": id }).await.expect("insert");
            !common::consume(&topic, 1, Duration::from_secs(3), false)
                .await
                .is_empty()
        }
    })
    .await;
    assert!(
        published,
        "nothing published after the producer failed; log:\n{}",
        pipeline.daemon.log()
    );
    pipeline.daemon.terminate(WAIT);
}

/// Issue 12, defect 8: a `latest` pipeline restarted (its producer failed) before any
/// checkpoint was stored started at the newest change again at every launch, skipping the
/// changes made while it restarted. The first open fixes the position for every later
/// launch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_pipeline_restarted_before_its_first_checkpoint_loses_no_change() {
    const DOCS: i64 = 20;
    let mut pipeline = RefusedCheckpoints::start().await;
    pipeline
        .daemon
        .wait_for_log("restarting the source pipeline", 1, WAIT);
    // Changes made while the pipeline is down between two launches.
    let docs: Vec<Document> = (0..DOCS).map(|id| doc! { "_id": id }).collect();
    pipeline.coll.insert_many(docs).await.expect("insert");
    pipeline
        .daemon
        .wait_for_log("restarting the source pipeline", 2, WAIT);
    pipeline.accept_checkpoints().await;
    pipeline
        .coll
        .insert_one(doc! { "_id": DOCS })
        .await
        .expect("insert");
    pipeline
        .assert_arrived(
            0..=DOCS,
            "changes made while the pipeline restarted were skipped",
        )
        .await;
    pipeline.daemon.terminate(WAIT);
}

/// Issue 12, defect 6: `publish_full_document_only` without `full_document` skipped every
/// update silently (an update event has no `fullDocument` unless asked for). As the MongoDB
/// Kafka Connector does, it now asks for `updateLookup`; what is still skipped (a delete
/// without `tombstone_on_delete`) is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_full_document_only_publishes_updates_as_their_documents() {
    let db = common::unique("fdo");
    let coll = collection(&db, "c").await;
    common::create_topic(&format!("{db}.c"), 1).await;
    let name = common::unique("fdosrc");
    let port = common::free_port();
    let config = common::config_toml(
        port,
        &source(&name, &db, "c", "publish_full_document_only = true"),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    coll.insert_one(doc! { "_id": 1_i64, "v": 1 })
        .await
        .expect("insert");
    coll.update_one(doc! { "_id": 1_i64 }, doc! { "$set": { "v": 2 } })
        .await
        .expect("update");
    // (A lookup finds the document as it is when the event is read: this one stays.)
    coll.insert_one(doc! { "_id": 2_i64 })
        .await
        .expect("insert");
    coll.delete_one(doc! { "_id": 2_i64 })
        .await
        .expect("delete");
    coll.insert_one(doc! { "_id": 3_i64, "v": 3 })
        .await
        .expect("insert");
    let records = common::consume(&format!("{db}.c"), 4, WAIT, false).await;
    let values: Vec<serde_json::Value> = records.iter().map(common::Consumed::json).collect();
    assert_eq!(
        values,
        vec![
            serde_json::json!({ "_id": 1, "v": 1 }),
            serde_json::json!({ "_id": 1, "v": 2 }),
            serde_json::json!({ "_id": 2 }),
            serde_json::json!({ "_id": 3, "v": 3 }),
        ],
        "log:\n{}",
        daemon.log()
    );
    let skipped = common::metric_with(
        port,
        "mkb_source_events_skipped_total",
        &[&format!("pipeline=\"{name}\""), "reason=\"no_document\""],
    );
    assert_eq!(skipped, 1.0, "the delete is skipped, and counted");
    daemon.terminate(WAIT);
}

/// The supervisor of the producer under test: it only counts failures.
struct FailureCounter(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl actix::Actor for FailureCounter {
    type Context = actix::Context<Self>;
}

impl actix::Handler<mongo_kafka_bridge::source::producer::ProducerFailed> for FailureCounter {
    type Result = ();

    fn handle(
        &mut self,
        failed: mongo_kafka_bridge::source::producer::ProducerFailed,
        _: &mut Self::Context,
    ) {
        eprintln!("the producer failed: {}", failed.error);
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Issue 24: an acknowledgement is recorded in the producer's ledger before the messages
/// queued behind it are handled, whatever its mailbox holds. The producer's thread is held
/// (as by the readers' work on that thread) while Kafka acknowledges a batch and two more
/// messages queue up behind it; the second asks for the newest acknowledged position.
#[actix_rt::test]
async fn an_acknowledgement_is_recorded_before_the_messages_queued_behind_it() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use actix::Actor;
    use mongo_kafka_bridge::clients::kafka;
    use mongo_kafka_bridge::source::model::{OutgoingRecord, Position, ReaderId};
    use mongo_kafka_bridge::source::producer::{
        LastAcknowledged, ProduceBatch, ProducerSetup, RecordPolicy, RecordProducer,
    };
    use mongo_kafka_bridge::source::topic_limits::TopicLimits;

    let topic = common::unique("latency_acks");
    let checkpoints = common::unique("latency_acks_cp");
    common::create_topic(&topic, 1).await;
    common::create_topic(&checkpoints, 1).await;
    let config = mongo_kafka_bridge::config::load_str(
        // Kafka acknowledges the first batch once the producer's thread is held.
        &common::config_toml(
            common::free_port(),
            "[kafka.producer]\n\"linger.ms\" = \"1000\"\n",
        ),
        std::path::Path::new("test.toml"),
    )
    .expect("config");
    let producer = kafka::producer(&config.kafka).expect("producer");
    let failures = Arc::new(AtomicUsize::new(0));
    let supervisor = FailureCounter(failures.clone()).start();
    let setup = ProducerSetup {
        pipeline: "latency".to_owned(),
        launch: 1,
        slot: 0,
        checkpoint_topic: checkpoints.clone(),
        slots: 1,
        checkpoint_interval: Duration::from_millis(10),
        generation: 1,
        policy: RecordPolicy {
            errors: Default::default(),
            oversize: Default::default(),
            max_message_bytes: kafka::producer_max_message_bytes(&config.kafka),
            topic_limits: Arc::new(TopicLimits::new(None, Duration::from_secs(5), 1 << 20)),
            topic_creator: None,
        },
        mailbox_capacity: 16,
    };
    let metrics = mongo_kafka_bridge::ops::metrics::Metrics::new().expect("metrics");
    let arbiter = actix::Arbiter::new();
    let address = RecordProducer::start_in_arbiter(&arbiter.handle(), move |_| {
        RecordProducer::new(setup, producer, supervisor.recipient(), metrics)
    });
    let reader = ReaderId {
        namespace: "db.c".to_owned(),
        generation: 1,
    };
    let token = |n: i32| {
        Position::stream(
            mongodb::bson::from_bson(mongodb::bson::Bson::Document(
                doc! { "_data": format!("T{n}") },
            ))
            .expect("token"),
        )
    };
    let batch = |n: i32| ProduceBatch {
        reader: reader.clone(),
        records: vec![OutgoingRecord::new(
            topic.clone(),
            Some(format!("{n}").into_bytes()),
            Some(b"{}".to_vec()),
            format!("event {n}"),
        )],
        token: Some(token(n)),
    };
    address
        .send(batch(1))
        .await
        .expect("the producer answers")
        .expect("librdkafka holds the first batch");
    arbiter.spawn(async { std::thread::sleep(Duration::from_secs(4)) });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = address.send(batch(2));
    let asked = address.send(LastAcknowledged(reader.clone()));
    let (second, asked) = futures_util::future::join(second, asked).await;
    second
        .expect("the producer answers")
        .expect("librdkafka holds the second batch");
    assert_eq!(
        asked.expect("the producer answers"),
        Some(token(1)),
        "the first batch's acknowledgement came while the producer was busy; it was not recorded before the messages queued behind it"
    );
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    arbiter.stop();
}
