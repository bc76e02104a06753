//! Sink options taken from the MongoDB Kafka Connector and Kafka Connect: rate limiting
//! (`rate.limiting.*`) and dead letter headers named as Kafka Connect names them
//! (`__connect.errors.*`).

mod common;

use std::time::{Duration, Instant};

use common::sink::{header, Sink, WAIT};
use common::Outgoing;
use mongodb::bson::doc;
use serde_json::json;

#[tokio::test]
async fn a_rate_limited_sink_pauses_after_every_nth_batch() {
    let sink = Sink::new(
        1,
        "id_strategy = \"provided_in_value\"\nmax_batch_size = 5\nrate_limiting_every_n = 1\nrate_limiting_timeout = \"1s\"",
    )
    .await;
    let records: Vec<Outgoing> = (0..20)
        .map(|i| Outgoing::json(json!(null), json!({"_id": i})))
        .collect();
    common::produce(&sink.topic, &records).await;
    let daemon = sink.start();
    let coll = sink.collection().await;
    let first = common::eventually(WAIT, || async {
        coll.count_documents(doc! {}).await.unwrap_or(0) >= 1
    })
    .await;
    assert!(first, "log:\n{}", daemon.log());
    let started = Instant::now();
    assert_eq!(sink.wait_for_count(20).await, 20, "log:\n{}", daemon.log());
    let took = started.elapsed();
    // Four batches of five with a pause of 1 s after each: the last one arrives 3 s or more
    // after the first (a lower bound the pauses guarantee, not a speed measurement).
    assert!(
        took >= Duration::from_millis(2_500),
        "20 records in batches of 5 with a 1 s pause after each arrived within {took:?}"
    );
    sink.stop(daemon).await;
}

#[tokio::test]
async fn dead_letters_carry_kafka_connects_headers_when_asked() {
    let dlq = common::unique("dlq");
    let sink = Sink::new(
        1,
        &format!(
            "[sink.errors]\ntolerance = \"all\"\ndead_letter_topic = \"{dlq}\"\ndead_letter_headers = \"both\""
        ),
    )
    .await;
    let daemon = sink.start();
    common::produce(
        &sink.topic,
        &[
            Outgoing::json(json!({"_id": 1}), json!({"_id": 1})),
            Outgoing {
                key: Some(b"{\"_id\": 2}".to_vec()),
                value: Some(b"{not json".to_vec()),
                ..Outgoing::default()
            },
        ],
    )
    .await;
    let dead = common::consume(&dlq, 1, WAIT, false).await;
    assert_eq!(dead.len(), 1, "log:\n{}", daemon.log());
    let record = &dead[0];
    assert_eq!(header(record, "__connect.errors.topic"), sink.topic);
    assert_eq!(header(record, "__connect.errors.partition"), "0");
    assert_eq!(header(record, "__connect.errors.offset"), "1");
    assert_eq!(header(record, "__connect.errors.connector.name"), sink.name);
    assert_eq!(header(record, "__connect.errors.task.id"), "0");
    assert_eq!(header(record, "__connect.errors.stage"), "VALUE_CONVERTER");
    assert!(!header(record, "__connect.errors.exception.message").is_empty());
    assert_eq!(
        header(record, "__connect.errors.exception.class.name"),
        "mongo-kafka-bridge.sink.decode"
    );
    // `both`: ours too.
    assert_eq!(header(record, "mkb.error.stage"), "decode");
    assert_eq!(header(record, "mkb.source.offset"), "1");
    assert_eq!(record.value.as_deref(), Some(&b"{not json"[..]));
    sink.stop(daemon).await;
}
