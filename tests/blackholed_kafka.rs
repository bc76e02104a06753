//! Issue 21, item 8: no call that waits on the broker runs on the actor thread. A broker
//! that accepts connections and never answers (SIGSTOP on a broker of the test's own) while
//! the pipelines restart (each asks the broker for metadata, commits offsets, creates
//! producers) must leave the daemon answering: `GET /pipelines` (answered by the supervisor
//! actor) within a second or two, and SIGTERM within the shutdown timeout.

mod common;

use std::time::{Duration, Instant};

use common::services::{OwnService, Paused};

const WAIT: Duration = Duration::from_secs(120);

/// Longer than the test's patience: a metadata call or a commit made on the actor thread
/// holds it that long.
const REQUEST_TIMEOUT: &str = "30s";

/// How long one `GET /pipelines` may take while the broker is silent.
const PROMPT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_silent_broker_leaves_the_supervisor_answering_and_shutdown_in_time() {
    let kafka = OwnService::kafka();
    let db = common::unique("blackhole");
    let source = common::unique("blackhole_src");
    let sink = common::unique("blackhole_sink");
    let sink_topic = common::unique("blackhole_in");
    let port = common::free_port();
    let config = kafka
        .config(&common::config_toml(
            port,
            &format!(
                "[[source]]\nname = \"{source}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
                 max_await_time = \"300ms\"\n\
                 [[sink]]\nname = \"{sink}\"\ntopics = [\"{sink_topic}\"]\ndatabase = \"{db}\"\n\
                 collection = \"out\"\nmax_batch_delay = \"60s\"\n"
            ),
        ))
        .replace(
            "request_timeout = \"5s\"",
            &format!("request_timeout = \"{REQUEST_TIMEOUT}\""),
        )
        .replace("timeout = \"20s\"", "timeout = \"5s\"");
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("source pipeline running", 1, WAIT);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    // Something to commit, so the sink's stop has offsets to hand to the broker.
    let client = common::mongo_client().await;
    client
        .database(&db)
        .collection::<mongodb::bson::Document>("c")
        .insert_one(mongodb::bson::doc! {"_id": 1})
        .await
        .expect("insert");
    let published = common::consume_until_on(
        &kafka.address(),
        &format!("{db}.c"),
        WAIT,
        false,
        |records| !records.is_empty(),
    )
    .await;
    assert_eq!(published.len(), 1, "log:\n{}", daemon.log());
    // Records the sink's writer holds (its batch waits a minute) when the broker goes
    // silent: its stop writes them and commits their offsets.
    common::create_topic_on(&kafka.address(), &sink_topic, 1, &[]).await;
    let records: Vec<common::Outgoing> = (0..3)
        .map(|i| common::Outgoing::json(serde_json::json!({"_id": i}), serde_json::json!({"v": i})))
        .collect();
    let broker = kafka.address();
    common::produce_with(
        &sink_topic,
        &records,
        &[("bootstrap.servers", broker.as_str())],
    )
    .await;
    daemon.wait_for_log("partitions assigned", 1, WAIT);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let paused = Paused::new(kafka.pid());
    for name in [&source, &sink] {
        let answer = common::http_request(port, "POST", &format!("/pipelines/{name}/restart"));
        assert!(
            matches!(answer, Some((200, _, _))),
            "restart {name}: {answer:?}\nlog:\n{}",
            daemon.log()
        );
    }
    // The restarts ask the silent broker for metadata, commit, create producers: a call
    // made on the actor thread would hold it for the whole request timeout.
    let mut slow = Vec::new();
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(20) {
        let asked = Instant::now();
        let answer = common::http_get(port, "/pipelines");
        let took = asked.elapsed();
        if !matches!(answer, Some((200, _))) || took > PROMPT {
            slow.push(format!(
                "at {:?}: {:?} after {took:?}",
                watched.elapsed(),
                answer.map(|(status, _)| status)
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        slow.is_empty(),
        "GET /pipelines was late or failed while the broker was silent:\n{}\nlog:\n{}",
        slow.join("\n"),
        daemon.log()
    );
    // The shutdown timeout (5 s) plus the time to exit.
    let asked = Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait(Duration::from_secs(20));
    assert!(
        asked.elapsed() < Duration::from_secs(12),
        "SIGTERM took {:?} with the broker silent ({status}); log:\n{}",
        asked.elapsed(),
        daemon.log()
    );
    drop(paused);
}
