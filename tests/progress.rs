//! Long jobs show their progress: a `copy_existing` (documents to copy, ratio, time left) and
//! a sink's catch-up on a backlog (lag, how fast it falls, time left), on `/status`, in metrics
//! and in the log.

mod common;

use std::time::Duration;

use common::sink::Sink;
use common::Outgoing;
use mongodb::bson::{doc, Document};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(120);

fn status(port: u16) -> Value {
    common::http_get(port, "/status")
        .and_then(|(code, body)| (code == 200).then_some(body))
        .and_then(|body| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_copy_reports_its_total_ratio_and_end() {
    let db = common::unique("itest_progress");
    let coll = common::mongo_client()
        .await
        .database(&db)
        .collection::<Document>("c");
    let docs: Vec<Document> = (0..3_000).map(|i| doc! {"_id": i, "n": i}).collect();
    coll.insert_many(docs).await.expect("seed");
    let name = common::unique("copyprog");
    let port = common::free_port();
    let mut daemon = common::Daemon::start(&common::config_toml(
        port,
        &format!(
            "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nstartup_mode = \"copy_existing\"\ncopy_existing_parallelism = 2\nmax_await_time = \"200ms\"\n"
        ),
    ));
    daemon.wait_for_log("copy of existing documents finished", 1, WAIT);
    let namespace = format!("{db}.c");
    let copy = status(port)["pipelines"][&name]["copy"][&namespace].clone();
    assert_eq!(copy["done"], json!(3_000), "{copy}");
    assert_eq!(copy["total"], json!(3_000), "{copy}");
    assert_eq!(copy["ratio"], json!(1.0), "{copy}");
    let log = daemon.log();
    assert!(
        log.contains("copy of existing documents started") && log.contains("documents=Some(3000)"),
        "the start names the documents to copy; log:\n{log}"
    );
    let labels = [
        format!("pipeline=\"{name}\""),
        format!("namespace=\"{namespace}\""),
    ];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    assert_eq!(
        common::metric_with(port, "mkb_source_copy_total_documents", &labels),
        3_000.0
    );
    assert_eq!(
        common::metric_with(port, "mkb_source_copy_progress_ratio", &labels),
        1.0
    );
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

#[tokio::test]
async fn a_sink_catching_up_on_a_backlog_says_when_it_will_be_done() {
    // A backlog the sink works through slowly (a pause after every batch of 100), so its
    // lag is seen falling in librdkafka's statistics (every 5 s).
    let sink = Sink::new(
        1,
        "id_strategy = \"provided_in_value\"\nmax_batch_size = 100\nrate_limiting_every_n = 1\nrate_limiting_timeout = \"800ms\"",
    )
    .await;
    let records: Vec<Outgoing> = (0..2_500)
        .map(|i| Outgoing::json(json!(null), json!({"_id": i})))
        .collect();
    common::produce(&sink.topic, &records).await;
    let mut daemon = sink.start();
    let mut seen_estimate = None;
    let estimated = common::eventually(WAIT, || {
        let catch_up = status(sink.port)["pipelines"][&sink.name]["catch_up"].clone();
        let behind = catch_up["lag"].as_i64().unwrap_or(0) > 0;
        let eta = catch_up["eta_seconds"].as_f64();
        if behind && eta.is_some_and(|e| e > 0.0) {
            seen_estimate = Some(catch_up);
        }
        async move { behind && eta.is_some_and(|e| e > 0.0) }
    })
    .await;
    assert!(
        estimated,
        "no estimate while behind; /status: {}; log:\n{}",
        status(sink.port),
        daemon.log()
    );
    let estimate = seen_estimate.unwrap_or_default();
    assert!(
        estimate["decline_per_second"]
            .as_f64()
            .is_some_and(|d| d > 0.0),
        "{estimate}"
    );
    assert!(
        common::metric_with(
            sink.port,
            "mkb_sink_catch_up_remaining_seconds",
            &[&format!("pipeline=\"{}\"", sink.name)]
        ) > 0.0
    );
    daemon.wait_for_log("caught up", 1, WAIT);
    let done = status(sink.port)["pipelines"][&sink.name]["catch_up"].clone();
    assert_eq!(done["lag"], json!(0), "{done}");
    assert_eq!(done["eta_seconds"], json!(0.0), "{done}");
    assert!(
        daemon.log().contains("catching up"),
        "log:\n{}",
        daemon.log()
    );
    sink.stop(daemon).await;
}
