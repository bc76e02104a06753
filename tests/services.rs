//! The local services, reached through the same client code the daemon uses: a Kafka
//! produce/consume round trip, and a MongoDB insert read back from a change stream.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use mongo_kafka_bridge::clients::{kafka, mongo};
use mongodb::bson::{doc, Document};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;

#[tokio::test]
async fn kafka_round_trip_through_the_daemon_clients() {
    let config = common::config("");
    let topic = common::unique("roundtrip");

    let admin = kafka::admin(&config.kafka).expect("admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics request");
    assert!(
        created.iter().all(Result::is_ok),
        "creating {topic}: {created:?}"
    );

    let producer = kafka::producer(&config.kafka).expect("producer");
    for i in 0..3 {
        let payload = format!("{{\"n\":{i}}}");
        let key = format!("k{i}");
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Timeout::After(Duration::from_secs(10)),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
    }

    let consumer = kafka::consumer(&config.kafka, &common::unique("group")).expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("no record from {topic} within 30 s; got {seen:?}"))
            .expect("consumer error");
        assert!(message.headers().is_none_or(|h| h.count() == 0));
        seen.push((
            String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
            message.offset(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("k0".to_owned(), "{\"n\":0}".to_owned(), 0),
            ("k1".to_owned(), "{\"n\":1}".to_owned(), 1),
            ("k2".to_owned(), "{\"n\":2}".to_owned(), 2),
        ]
    );
    let deleted = admin.delete_topics(&[&topic], &AdminOptions::new()).await;
    assert!(deleted.is_ok(), "deleting {topic}: {deleted:?}");
}

#[tokio::test]
async fn kafka_check_counts_the_brokers() {
    let config = common::config("");
    let brokers = kafka::check(&config.kafka).await.expect("metadata");
    assert!(brokers >= 1, "{brokers} brokers");
}

#[tokio::test]
async fn kafka_check_names_the_unreachable_servers() {
    let mut config = common::config("");
    config.kafka.bootstrap_servers = format!("127.0.0.1:{}", common::free_port());
    config.kafka.request_timeout = Duration::from_secs(2);
    let err = kafka::check(&config.kafka)
        .await
        .expect_err("nothing listens there");
    assert!(
        err.to_string().contains(&config.kafka.bootstrap_servers),
        "{err}"
    );
}

#[tokio::test]
async fn mongodb_insert_arrives_on_a_change_stream() {
    let config = common::config("");
    let client = mongo::connect(&config.mongodb).await.expect("client");
    mongo::ping(&client, &config.mongodb).await.expect("ping");

    let db = client.database(&common::unique("itest"));
    let coll = db.collection::<Document>("events");
    // The collection must exist before a change stream on it opens on every server.
    coll.insert_one(doc! { "_id": "seed" })
        .await
        .expect("seed insert");
    let mut stream = coll.watch().await.expect("opening a change stream");
    coll.insert_one(doc! { "_id": 1, "name": "first", "nested": { "n": 1.5 } })
        .await
        .expect("insert");

    let event = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("no change event within 30 s")
        .expect("change stream ended")
        .expect("change stream error");
    assert_eq!(
        event.operation_type,
        mongodb::change_stream::event::OperationType::Insert
    );
    assert_eq!(
        event.full_document,
        Some(doc! { "_id": 1, "name": "first", "nested": { "n": 1.5 } })
    );
    assert_eq!(event.document_key, Some(doc! { "_id": 1 }));
    assert!(
        stream.resume_token().is_some(),
        "no resume token after an event"
    );
    db.drop().await.expect("dropping the test database");
}

#[tokio::test]
async fn mongodb_ping_names_the_unreachable_host() {
    let mut config = common::config("");
    let port = common::free_port();
    config.mongodb.uri = format!("mongodb://127.0.0.1:{port}");
    config.mongodb.connect_timeout = Duration::from_millis(500);
    let client = mongo::connect(&config.mongodb).await.expect("client");
    let err = mongo::ping(&client, &config.mongodb)
        .await
        .expect_err("nothing listens there");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

/// `test-services/services.sh ARGS` with `env`: its exit status and what it printed.
fn services_sh(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-services/services.sh");
    let out = std::process::Command::new(script)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("services.sh {args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Starting the stand-in right after stopping it works every time, and `status` then knows it
/// as ours. (It once said "mongo exited during start-up" while the stand-in had started: the
/// PID file was checked before the new process had become Java, and was removed.) The test
/// runs a stand-in of its own, on a free port with its own state folder.
#[test]
fn the_stand_in_starts_right_after_it_stopped_every_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("services");
    // The jars and the compiled launcher of the shared state folder, when it has them, so the
    // test does not resolve them again.
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-services/.cache");
    std::fs::create_dir_all(&cache).expect("state folder");
    for reused in ["lib", "classes"] {
        if shared.join(reused).exists() {
            std::os::unix::fs::symlink(shared.join(reused), cache.join(reused)).expect("symlink");
        }
    }
    let port = common::free_port().to_string();
    let kafka_port = common::free_port().to_string();
    let env = [
        ("MONGO_PORT", port.as_str()),
        ("KAFKA_PORT", kafka_port.as_str()),
        ("TEST_SERVICES_CACHE", cache.to_str().expect("path")),
        ("MONGO_HEAP", "256m"),
    ];
    struct Down<'a>(&'a [(&'a str, &'a str)]);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            services_sh(&["down", "mongo"], self.0);
        }
    }
    let _down = Down(&env);
    for round in 0..5 {
        let (ok, out) = services_sh(&["up", "mongo"], &env);
        assert!(ok, "round {round}: `up mongo` failed:\n{out}");
        let (_, status) = services_sh(&["status"], &env);
        let line = status
            .lines()
            .find(|l| l.starts_with("mongo:"))
            .unwrap_or_default()
            .to_owned();
        assert!(
            line.starts_with("mongo: running (pid "),
            "round {round}: status after `up` says {line:?}:\n{status}"
        );
        let (ok, out) = services_sh(&["down", "mongo"], &env);
        assert!(ok, "round {round}: `down mongo` failed:\n{out}");
        assert!(
            out.contains("mongo stopped"),
            "round {round}: `down` found no stand-in of its own to stop:\n{out}"
        );
    }
}
