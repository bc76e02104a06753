//! The copy of existing documents (`copy_existing`) meets a document whose `_id` does not
//! decode (a string that is not UTF-8, which MongoDB stores as it was given): with
//! `errors.tolerance = "all"` it is dead-lettered and the copy goes on; otherwise the
//! pipeline stops, naming the namespace. Before, the copy restarted forever.

mod common;

use std::time::Duration;

use mongodb::bson::{doc, RawDocumentBuf};

const WAIT: Duration = Duration::from_secs(60);

/// `{_id: <"ab" then the bytes 0xff 0xfe>, n: 2}`: valid BSON, its `_id` not UTF-8.
fn document_with_a_broken_id() -> RawDocumentBuf {
    let mut raw = RawDocumentBuf::new();
    raw.append("_id", "abXY");
    raw.append("n", 2);
    let mut bytes = raw.into_bytes();
    let at = bytes
        .windows(4)
        .position(|w| w == b"abXY")
        .expect("the placeholder");
    bytes[at + 2] = 0xff;
    bytes[at + 3] = 0xfe;
    RawDocumentBuf::from_bytes(bytes).expect("valid BSON")
}

#[tokio::test]
async fn a_copied_document_whose_id_does_not_decode_is_dead_lettered_and_the_copy_goes_on() {
    let db = common::unique("config_copyid");
    let client = common::mongo_client().await;
    let raw = client.database(&db).collection::<RawDocumentBuf>("c");
    raw.insert_one(RawDocumentBuf::from_document(&doc! {"_id": 1, "n": 1}).expect("BSON"))
        .await
        .expect("insert");
    // The stand-in answers with the `_id` in its reply, which the driver cannot read: the
    // document may be stored all the same, which is what is checked below.
    if let Err(error) = raw.insert_one(document_with_a_broken_id()).await {
        eprintln!("inserting the broken _id: {error}");
    }
    raw.insert_one(RawDocumentBuf::from_document(&doc! {"_id": 3, "n": 3}).expect("BSON"))
        .await
        .expect("insert");
    // A server that rewrites what is not UTF-8 (the stand-in decodes strings as Java does)
    // has nothing that fails to decode: then there is nothing to test.
    let stored = raw.find_one(doc! {"n": 2}).await;
    eprintln!("stored: {stored:?}");
    if !matches!(&stored, Ok(Some(doc)) if doc.get("_id").is_err()) {
        eprintln!(
            "SKIPPED: this MongoDB ({}) stored the `_id` as valid UTF-8 (it rewrites invalid \
             strings), so no copied `_id` fails to decode here; run against a real replica set \
             (MONGODB_URI) to test this",
            common::mongodb_uri()
        );
        let _ = client.database(&db).drop().await;
        return;
    }
    let dlq = common::unique("config_copyid_dlq");
    let config = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
             startup_mode = \"copy_existing\"\nmax_await_time = \"300ms\"\n\
             errors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}\n",
            name = common::unique("config_copyid"),
        ),
    );
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
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}
