//! Time-series sinks (the connector's `timeseries.*`) end to end: the collection is created as
//! a time-series collection when it is missing, time fields given as epoch milliseconds or
//! text arrive as dates, and a record whose time field is no time is dead-lettered naming it.
//! A server without time-series collections (MongoDB before 5.0, the stand-in) is reported as
//! a skip of the parts that need them.

mod common;

use common::sink::{header, Sink, WAIT};
use common::Outgoing;
use mongodb::bson::{doc, Bson, DateTime, Document};
use serde_json::json;

/// Whether the server makes time-series collections: it creates one and lists it as such.
async fn server_has_time_series() -> Result<(), String> {
    let client = common::mongo_client().await;
    let db = client.database(&common::unique("tsprobe"));
    let created = db
        .run_command(doc! {"create": "probe", "timeseries": {"timeField": "t"}})
        .await;
    let listed = db
        .run_command(doc! {"listCollections": 1, "filter": {"name": "probe"}})
        .await;
    let _ = db.drop().await;
    created.map_err(|e| format!("`create` with `timeseries` failed: {e}"))?;
    let listed = listed.map_err(|e| e.to_string())?;
    let kind = listed
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_array("firstBatch").ok())
        .and_then(|b| b.first())
        .and_then(Bson::as_document)
        .and_then(|d| d.get_str("type").ok().map(str::to_owned));
    match kind.as_deref() {
        Some("timeseries") => Ok(()),
        other => Err(format!(
            "it accepted `create` with `timeseries` but lists the collection as {other:?}, not a time-series collection"
        )),
    }
}

#[tokio::test]
async fn a_time_series_sink_creates_its_collection_and_converts_time_fields() {
    let dlq = common::unique("dlq");
    let sink = Sink::new(
        1,
        &format!(
            "timeseries_time_field = \"ts\"\ntimeseries_meta_field = \"sensor\"\ntimeseries_granularity = \"seconds\"\ntimeseries_time_field_auto_convert = true\n[sink.errors]\ntolerance = \"all\"\ndead_letter_topic = \"{dlq}\""
        ),
    )
    .await;
    let capable = server_has_time_series().await;
    if let Err(reason) = &capable {
        eprintln!(
            "SKIPPED (in part): the server at {} has no time-series collections ({reason}); the \
             collection the sink creates is not checked as one",
            common::mongodb_uri()
        );
    }
    let daemon = sink.start();
    common::produce(
        &sink.topic,
        &[
            Outgoing::json(
                json!(null),
                json!({"sensor": "a", "ts": 1_709_296_245_250_i64, "v": 1}),
            ),
            Outgoing::json(
                json!(null),
                json!({"sensor": "a", "ts": "2024-03-01T12:30:46Z", "v": 2}),
            ),
            Outgoing::json(
                json!(null),
                json!({"sensor": "b", "ts": "2024-03-01 12:30:47.5", "v": 3}),
            ),
            Outgoing::json(
                json!(null),
                json!({"sensor": "b", "ts": "yesterday", "v": 4}),
            ),
        ],
    )
    .await;
    assert_eq!(sink.wait_for_count(3).await, 3, "log:\n{}", daemon.log());
    let dead = common::consume(&dlq, 1, WAIT, false).await;
    assert_eq!(dead.len(), 1, "log:\n{}", daemon.log());
    assert_eq!(header(&dead[0], "mkb.error.stage"), "process");
    assert!(
        header(&dead[0], "mkb.error").contains("`ts`"),
        "{:?}",
        dead[0].headers
    );
    let mut times: Vec<(i32, DateTime)> = sink
        .documents()
        .await
        .values()
        .map(|d: &Document| {
            (
                d.get_i32("v").unwrap_or_default(),
                d.get_datetime("ts")
                    .copied()
                    .unwrap_or_else(|e| panic!("{d}: {e}")),
            )
        })
        .collect();
    times.sort();
    assert_eq!(
        times,
        [
            (1, DateTime::from_millis(1_709_296_245_250)),
            (2, DateTime::from_millis(1_709_296_246_000)),
            (3, DateTime::from_millis(1_709_296_247_500)),
        ]
    );
    if capable.is_ok() {
        let listed = common::mongo_client()
            .await
            .database(&sink.db)
            .run_command(doc! {"listCollections": 1, "filter": {"name": "docs"}})
            .await
            .expect("listCollections");
        let info = listed
            .get_document("cursor")
            .ok()
            .and_then(|c| c.get_array("firstBatch").ok())
            .and_then(|b| b.first())
            .and_then(Bson::as_document)
            .cloned()
            .unwrap_or_default();
        assert_eq!(info.get_str("type").ok(), Some("timeseries"), "{info}");
        let options = info
            .get_document("options")
            .and_then(|o| o.get_document("timeseries"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(options.get_str("timeField").ok(), Some("ts"), "{info}");
        assert_eq!(options.get_str("metaField").ok(), Some("sensor"), "{info}");
        assert_eq!(
            options.get_str("granularity").ok(),
            Some("seconds"),
            "{info}"
        );
    }
    assert!(
        daemon.log().contains("created a time-series collection"),
        "the sink created the missing collection; log:\n{}",
        daemon.log()
    );
    sink.stop(daemon).await;
}
