//! MongoDB client options the MongoDB Kafka Connector's users set: wire compression (in the
//! connection string) and the Stable API (`server_api_version`). A sink pipeline writes through
//! a daemon configured with them; what the server itself negotiates is checked where it can
//! be, and a server that lacks the feature is reported as a skip of that part, with the reason.

mod common;

use common::sink::Sink;
use common::Outgoing;
use mongodb::bson::{doc, Document};
use serde_json::json;

/// The connection string of the tests with `params` added to its query.
fn uri_with(params: &str) -> String {
    let uri = common::mongodb_uri();
    let separator = if uri.contains('?') {
        "&"
    } else if uri.trim_end_matches('/').matches('/').count() > 2 {
        "?"
    } else {
        "/?"
    };
    format!("{}{separator}{params}", uri.trim_end_matches('/'))
}

/// The compressors the server offers to a client that asks for `wanted` (its handshake answer;
/// `isMaster`, which every server answers, the stand-in included).
async fn negotiated_compressors(wanted: &[&str]) -> Vec<String> {
    let reply = common::mongo_client()
        .await
        .database("admin")
        .run_command(doc! {"isMaster": 1, "compression": wanted.to_vec()})
        .await
        .expect("isMaster");
    reply
        .get_array("compression")
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_sink_writes_through_a_compressed_connection_string() {
    let wanted = ["zstd", "snappy", "zlib"];
    let offered = negotiated_compressors(&wanted).await;
    if offered.is_empty() {
        eprintln!(
            "SKIPPED (in part): the server at {} offers no wire compression (the MongoDB stand-in \
             has no OP_COMPRESSED), so the connection below runs uncompressed; the driver's \
             compressors are still parsed and offered",
            common::mongodb_uri()
        );
    } else {
        assert!(
            offered.iter().all(|c| wanted.contains(&c.as_str())),
            "the server offered {offered:?} for {wanted:?}"
        );
    }
    let sink = Sink::new(1, "id_strategy = \"provided_in_value\"").await;
    let config = sink.config().replace(
        &format!("uri = \"{}\"", common::mongodb_uri()),
        &format!(
            "uri = \"{}\"",
            uri_with("compressors=zstd,snappy,zlib&zlibCompressionLevel=6")
        ),
    );
    assert!(config.contains("compressors=zstd"), "{config}");
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("sink pipeline running", 1, common::sink::WAIT);
    let records: Vec<Outgoing> = (0..20)
        .map(|i| Outgoing::json(json!(null), json!({"_id": i, "text": "x".repeat(2000)})))
        .collect();
    common::produce(&sink.topic, &records).await;
    assert_eq!(sink.wait_for_count(20).await, 20, "log:\n{}", daemon.log());
    sink.stop(daemon).await;
}

#[tokio::test]
async fn the_stable_api_version_is_declared_on_every_command() {
    // Does the server know the Stable API? (MongoDB 5.0+.) A client declaring it shakes hands
    // with `hello`, which older servers (and the stand-in) do not answer.
    let probe = common::mongo_client()
        .await
        .database("admin")
        .run_command(doc! {"hello": 1, "apiVersion": "1"})
        .await;
    if let Err(e) = probe {
        eprintln!(
            "SKIPPED: the server at {} does not take the Stable API (`hello` with apiVersion \"1\": {e})",
            common::mongodb_uri()
        );
        return;
    }
    // A server that knows it refuses a version it does not know: the field reaches it.
    let unknown = common::mongo_client()
        .await
        .database("admin")
        .run_command(doc! {"ping": 1, "apiVersion": "999"})
        .await;
    let sink = Sink::new(1, "").await;
    let config = sink.config().replace(
        "[kafka]",
        "server_api_version = \"1\"\nserver_api_deprecation_errors = true\n[kafka]",
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("sink pipeline running", 1, common::sink::WAIT);
    common::produce(
        &sink.topic,
        &[Outgoing::json(json!({"_id": 1}), json!({"_id": 1, "v": 1}))],
    )
    .await;
    assert_eq!(sink.wait_for_count(1).await, 1, "log:\n{}", daemon.log());
    let stored: Vec<Document> = sink.documents().await.into_values().collect();
    assert_eq!(stored[0].get_i32("v").ok(), Some(1), "{stored:?}");
    if unknown.is_ok() {
        eprintln!(
            "note: the server at {} accepts any apiVersion, so it cannot show that the daemon's \
             commands carry one; a MongoDB 5.0+ server refuses unknown versions",
            common::mongodb_uri()
        );
    }
    sink.stop(daemon).await;
}
