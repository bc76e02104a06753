//! The copy of existing documents (`copy_existing`) meets a document whose `_id` does not
//! decode (a string that is not UTF-8, which MongoDB stores as it was given): with
//! `errors.tolerance = "all"` it is dead-lettered and the copy goes on; otherwise the
//! pipeline stops, naming the namespace. Before, the copy restarted forever.

mod common;

use std::time::Duration;

use common::tap::{self, Tap};
use mongodb::bson::doc;

const WAIT: Duration = Duration::from_secs(60);

/// The `_id` the test stores, and the bytes the daemon gets in its place: "ab" then 0xff
/// 0xfe, valid BSON (the length is unchanged) but not UTF-8.
const STORED_ID: &[u8] = b"abXY";
const BROKEN_ID: &[u8] = b"ab\xff\xfe";

/// A collection holding `_id`s 1, `abXY` and 3, and the configuration of a pipeline copying
/// it with `errors` through a tap that gives the daemon [`BROKEN_ID`] for [`STORED_ID`].
///
/// A real replica set stores a string that is not UTF-8 as it was given; the stand-in
/// decodes strings as Java does and would rewrite it. So the test stores `abXY` and the tap
/// between the daemon and the server gives the daemon `ab\xff\xfe` in its place: the bytes
/// a real replica set would have sent, on either server.
async fn copied_through_a_tap(db: &str, errors: &str, port: u16) -> (Tap, String) {
    let client = common::mongo_client().await;
    let coll = client
        .database(db)
        .collection::<mongodb::bson::Document>("c");
    coll.insert_many([
        doc! {"_id": 1, "n": 1},
        doc! {"_id": "abXY", "n": 2},
        doc! {"_id": 3, "n": 3},
    ])
    .await
    .expect("insert");
    let uri = common::mongodb_uri();
    let tap = Tap::start(&common::proxy::mongodb_target(&uri));
    tap.rewrite_replies(STORED_ID, BROKEN_ID);
    let config = common::config_toml(
        port,
        &format!(
            "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
             startup_mode = \"copy_existing\"\nmax_await_time = \"300ms\"\nerrors = {errors}\n",
            name = common::unique("config_copyid"),
        ),
    )
    .replace(
        &format!("uri = \"{uri}\""),
        &format!("uri = \"{}\"", tap::uri_through(&uri, tap.port(), "")),
    );
    (tap, config)
}

#[tokio::test]
async fn a_copied_document_whose_id_does_not_decode_is_dead_lettered_and_the_copy_goes_on() {
    let db = common::unique("config_copyid");
    let dlq = common::unique("config_copyid_dlq");
    let (tap, config) = copied_through_a_tap(
        &db,
        &format!("{{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}"),
        common::free_port(),
    )
    .await;
    let mut daemon = common::Daemon::start(&config);
    let topic = format!("{db}.c");
    let published = common::consume(&topic, 2, WAIT, false).await;
    let ids: Vec<serde_json::Value> = published
        .iter()
        .map(|r| r.json()["fullDocument"]["_id"].clone())
        .collect();
    assert_eq!(
        ids,
        [serde_json::json!(1), serde_json::json!(3)],
        "log:\n{}",
        daemon.log()
    );
    let dead = common::consume(&dlq, 1, WAIT, false).await;
    assert_eq!(dead.len(), 1, "log:\n{}", daemon.log());
    daemon.wait_for_log("copied existing documents", 1, WAIT);
    assert!(
        !daemon.log().contains("reader failed"),
        "the copy restarted:\n{}",
        daemon.log()
    );
    assert!(tap.rewritten() > 0, "the tap never met the stored _id");
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

/// Without a dead letter topic the pipeline stops, naming the namespace and the `_id`, and
/// stays stopped (`/ready` says so) instead of copying again and again.
#[tokio::test]
async fn a_copied_document_whose_id_does_not_decode_stops_the_pipeline_naming_it() {
    let db = common::unique("config_copyid");
    let port = common::free_port();
    let (tap, config) = copied_through_a_tap(&db, "{ tolerance = \"none\" }", port).await;
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("does not decode", 1, WAIT);
    let log = daemon.log();
    let namespace = format!("{db}.c");
    assert!(
        log.lines()
            .any(|l| l.contains("does not decode") && l.contains(&namespace) && l.contains("ab")),
        "no line names the namespace and the `_id`:\n{log}"
    );
    // Long enough for several restarts had it been taken for a passing failure.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let log = daemon.log();
    assert_eq!(
        log.matches("copying existing documents").count(),
        1,
        "the copy started again:\n{log}"
    );
    let ready = common::http_get(port, "/ready");
    assert!(
        matches!(&ready, Some((503, body)) if body.contains("failed")),
        "/ready: {ready:?}\n{log}"
    );
    assert!(tap.rewritten() > 0, "the tap never met the stored _id");
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}
