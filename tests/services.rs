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
