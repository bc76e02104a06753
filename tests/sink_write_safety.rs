//! Issue 21, items 10-12: what a sink writes is as safe as configured and stays safe across
//! retries, restarts and ownership changes. Each test names the defect it proves fixed.

mod common;

use std::time::Duration;

use common::sink::{Sink, WAIT};
use common::tap::{self, Tap};
use common::Outgoing;
use mongodb::bson::{doc, Bson};
use serde_json::json;

fn keyed(id: i64, value: serde_json::Value) -> Outgoing {
    Outgoing::json(json!({ "_id": id }), value)
}

/// The daemon configuration of `sink` with MongoDB reached through `tap`, the URI carrying
/// `options`.
fn config_through_tap(sink: &Sink, tap: &Tap, options: &str) -> String {
    let uri = common::mongodb_uri();
    sink.config().replace(
        &format!("uri = \"{uri}\""),
        &format!("uri = \"{}\"", tap::uri_through(&uri, tap.port(), options)),
    )
}

/// Item 10: the write concern of the URI (`w`, `journal`, `wtimeoutMS`) is sent on every
/// `insert`, `update` and `delete` command, as the server received it.
#[tokio::test]
async fn every_write_command_carries_the_configured_write_concern() {
    let mut sink = Sink::new(
        1,
        "id_strategy = \"provided_in_key\"\ndelete_on_null_values = true",
    )
    .await;
    let inserts = sink.add_topic().await;
    sink.extra.push_str(&format!(
        "\ntopic_overrides = {{ \"{inserts}\" = {{ write_model = \"insert_one\", delete_on_null_values = false }} }}"
    ));
    let tap = Tap::start(&common::proxy::mongodb_target(&common::mongodb_uri()));
    let config = config_through_tap(&sink, &tap, "w=1&journal=true&wtimeoutMS=4321");
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    common::produce(
        &sink.topic,
        &[
            keyed(1, json!({"v": 1})),
            keyed(2, json!({"v": 2})),
            Outgoing {
                key: Some(br#"{"_id": 2}"#.to_vec()),
                value: None,
                ..Outgoing::default()
            },
        ],
    )
    .await;
    common::produce(&inserts, &[keyed(10, json!({"v": 10}))]).await;
    let written = common::eventually(WAIT, || async {
        let docs = sink.documents().await;
        docs.len() == 2 && docs.contains_key("1") && docs.contains_key("10")
    })
    .await;
    assert!(
        written,
        "{:?}; log:\n{}",
        sink.documents().await,
        daemon.log()
    );
    let expected = doc! { "w": 1, "wtimeout": 4321, "j": true };
    for name in ["insert", "update", "delete"] {
        let commands = tap.commands(name);
        assert!(
            !commands.is_empty(),
            "no `{name}` command reached the server; log:\n{}",
            daemon.log()
        );
        for command in commands {
            let concern = command
                .get_document("writeConcern")
                .unwrap_or_else(|_| panic!("`{name}` without writeConcern: {command}"));
            for (key, value) in &expected {
                let sent = concern.get(key).cloned().map(|v| match v {
                    Bson::Int64(n) => Bson::Int32(n as i32),
                    other => other,
                });
                assert_eq!(
                    sent.as_ref(),
                    Some(value),
                    "`{name}` writeConcern.{key}: {concern}"
                );
            }
        }
    }
    sink.stop(daemon).await;
}

/// Item 10: a sink's own `write_concern` (here on one topic) replaces the connection
/// string's on that sink's commands.
#[tokio::test]
async fn a_sinks_own_write_concern_replaces_the_connection_strings() {
    let mut sink = Sink::new(1, "id_strategy = \"provided_in_key\"").await;
    let other = sink.add_topic().await;
    sink.extra.push_str(&format!(
        "\ntopic_overrides = {{ \"{other}\" = {{ collection = \"other\", write_concern = {{ w = 1, journal = false, wtimeout = \"2s\" }} }} }}"
    ));
    let tap = Tap::start(&common::proxy::mongodb_target(&common::mongodb_uri()));
    let config = config_through_tap(&sink, &tap, "w=1&journal=true&wtimeoutMS=4321");
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    common::produce(&sink.topic, &[keyed(1, json!({"v": 1}))]).await;
    common::produce(&other, &[keyed(2, json!({"v": 2}))]).await;
    let written = common::eventually(WAIT, || async {
        let updates = tap.commands("update");
        ["docs", "other"].iter().all(|coll| {
            updates
                .iter()
                .any(|c| c.get_str("update").ok() == Some(*coll))
        })
    })
    .await;
    assert!(written, "log:\n{}", daemon.log());
    for command in tap.commands("update") {
        let concern = command
            .get_document("writeConcern")
            .unwrap_or_else(|_| panic!("without writeConcern: {command}"));
        let journal = concern.get_bool("j").ok();
        let timeout = concern.get("wtimeout").and_then(|t| match t {
            Bson::Int32(n) => Some(i64::from(*n)),
            Bson::Int64(n) => Some(*n),
            _ => None,
        });
        match command.get_str("update") {
            Ok("other") => assert_eq!((journal, timeout), (Some(false), Some(2000)), "{command}"),
            _ => assert_eq!((journal, timeout), (Some(true), Some(4321)), "{command}"),
        }
    }
    let _ = common::mongo_client()
        .await
        .database(&sink.db)
        .collection::<mongodb::bson::Document>("other")
        .drop()
        .await;
    sink.stop(daemon).await;
}

/// Item 12: an `insert_one` batch whose first attempt was applied but whose reply was lost
/// (a cut connection) is retried; the retry meets its own documents (E11000) and must take
/// them as written, not stop the pipeline (`errors.tolerance = "none"`).
#[tokio::test]
async fn an_insert_batch_retried_after_it_was_applied_is_not_a_duplicate_key_failure() {
    let sink = Sink::new(
        1,
        "id_strategy = \"provided_in_key\"\nwrite_model = \"insert_one\"",
    )
    .await;
    let tap = Tap::start(&common::proxy::mongodb_target(&common::mongodb_uri()));
    let config = config_through_tap(&sink, &tap, "");
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    tap.lose_reply_to("insert", "docs");
    let records: Vec<Outgoing> = (1..=5).map(|id| keyed(id, json!({ "n": id }))).collect();
    common::produce(&sink.topic, &records).await;
    let committed = common::eventually(WAIT, || async {
        common::committed_offsets(&sink.group(), &sink.topic, 1) == [Some(5)]
    })
    .await;
    assert!(
        committed,
        "offsets {:?}; log:\n{}",
        common::committed_offsets(&sink.group(), &sink.topic, 1),
        daemon.log()
    );
    assert_eq!(tap.lost(), 1, "the reply to the first insert was not lost");
    let docs = sink.documents().await;
    assert_eq!(docs.len(), 5, "{docs:?}");
    let log = daemon.log();
    assert!(!log.contains("sink pipeline failed"), "log:\n{log}");
    assert!(
        log.contains("bulk write failed; retrying the batch"),
        "the batch was not retried; log:\n{log}"
    );
    sink.stop(daemon).await;
}

/// Item 12: a dead letter topic that refuses every record (here: larger than its
/// `max.message.bytes`, even without key, value and headers) restarts the pipeline again
/// and again; `/ready` says so, with the reason, the whole time, not only during each
/// backoff.
#[tokio::test]
async fn a_dead_letter_topic_that_always_fails_keeps_ready_failing_with_its_reason() {
    let dlq = common::unique("sink_dlq");
    common::create_topic_with(&dlq, 1, &[("max.message.bytes", "1")]).await;
    let sink = Sink::new(
        1,
        &format!(
            "id_strategy = \"provided_in_key\"\nmax_num_retries = 1\nerrors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}"
        ),
    )
    .await;
    let mut daemon = sink.start();
    common::produce(
        &sink.topic,
        &[Outgoing {
            key: Some(br#"{"_id": 1}"#.to_vec()),
            value: Some(b"{not json".to_vec()),
            ..Outgoing::default()
        }],
    )
    .await;
    daemon.wait_for_log("restarting the sink pipeline", 1, WAIT);
    // From the first failure on, every answer of `/ready` says the pipeline is failing,
    // through its restarts (each retries the record and fails again).
    let until = std::time::Instant::now() + Duration::from_secs(12);
    let mut answers = Vec::new();
    while std::time::Instant::now() < until {
        answers.push(common::http_get(sink.port, "/ready"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let healthy: Vec<_> = answers
        .iter()
        .filter(|a| !matches!(a, Some((503, body)) if body.contains(&sink.name) && body.contains("dead letter")))
        .collect();
    assert!(
        healthy.is_empty(),
        "{} of {} answers of /ready did not report the failing dead letter topic, e.g. {:?}; log:\n{}",
        healthy.len(),
        answers.len(),
        healthy.first(),
        daemon.log()
    );
    assert!(
        daemon.log().matches("restarting the sink pipeline").count() >= 2,
        "the pipeline restarted only once; log:\n{}",
        daemon.log()
    );
    sink.stop(daemon).await;
}

/// Item 11: with `stale_write_guard = "version"`, a record older than the stored document
/// (replayed, or republished by a source after a change of owner) does not overwrite it:
/// it is skipped and counted, in one batch (newer then older) and across batches.
#[tokio::test]
async fn the_stale_write_guard_keeps_the_newer_version() {
    let sink = Sink::new(
        1,
        "id_strategy = \"provided_in_key\"\nstale_write_guard = \"version\"",
    )
    .await;
    let daemon = sink.start();
    // In one batch: id 1 at version 2, then the older version 1; id 2 written once.
    common::produce(
        &sink.topic,
        &[
            keyed(1, json!({"version": 2, "v": "new"})),
            keyed(1, json!({"version": 1, "v": "old"})),
            keyed(2, json!({"version": 5, "v": "five"})),
        ],
    )
    .await;
    sink.assert_committed(1, 3).await;
    // A later batch: id 2 replayed at an older version, id 1 at the same version (written
    // again: not older), id 3 new.
    common::produce(
        &sink.topic,
        &[
            keyed(2, json!({"version": 4, "v": "four"})),
            keyed(1, json!({"version": 2, "v": "again"})),
            keyed(3, json!({"v": "no version"})),
        ],
    )
    .await;
    sink.assert_committed(1, 6).await;
    let docs = sink.documents().await;
    assert_eq!(
        docs["1"],
        doc! {"_id": 1, "version": 2, "v": "again"},
        "{docs:?}"
    );
    assert_eq!(
        docs["2"],
        doc! {"_id": 2, "version": 5, "v": "five"},
        "{docs:?}"
    );
    assert_eq!(docs["3"], doc! {"_id": 3, "v": "no version"}, "{docs:?}");
    let skipped = common::metric_with(
        sink.port,
        "mkb_sink_stale_writes_skipped_total",
        &[&format!("pipeline=\"{}\"", sink.name)],
    );
    assert_eq!(skipped, 2.0, "stale writes counted; log:\n{}", daemon.log());
    sink.stop(daemon).await;
}

/// Consumer settings for a short group session, appended to a daemon configuration.
const SHORT_SESSION: &str =
    "\n[kafka.consumer]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n";

/// Item 11: a daemon stopped (SIGSTOP) past its consumer group session timeout, with a
/// record buffered in its writer, loses the partition to a second daemon, which writes a
/// newer version. When the first one runs again, it must not write its older version over
/// the new owner's: its lease is fenced as soon as it wakes.
#[tokio::test]
async fn a_daemon_stopped_past_its_session_writes_nothing_over_the_new_owner() {
    let sink = Sink::new(1, "id_strategy = \"provided_in_key\"").await;
    // The first daemon holds what it reads for 15 s before writing it.
    let slow = sink
        .config()
        .replace("max_batch_delay = \"50ms\"", "max_batch_delay = \"15s\"")
        + SHORT_SESSION;
    let mut first = common::Daemon::start(&slow);
    first.wait_for_log("partitions assigned", 1, WAIT);
    common::produce(&sink.topic, &[keyed(1, json!({"v": "old"}))]).await;
    let produced = std::time::Instant::now();
    // Time to read it into the writer's buffer (nothing shows a buffered record).
    tokio::time::sleep(Duration::from_secs(3)).await;
    first.signal("STOP");
    let second_port = common::free_port();
    let mut second = common::Daemon::start(&(sink.config_on(second_port) + SHORT_SESSION));
    second.wait_for_log("partitions assigned", 1, WAIT);
    common::produce(&sink.topic, &[keyed(1, json!({"v": "new"}))]).await;
    let coll = sink.collection().await;
    the_newer_version_survives_the_wake(&first, sink.port, &second, &coll, produced).await;
    first.terminate(WAIT);
    sink.stop(second).await;
}

/// The end of the item 11 tests: once the second daemon wrote the newer version of `_id` 1,
/// waits until the first daemon's batch (read at `produced`, held 15 s) is due, wakes the
/// first daemon (SIGCONT) and checks that the newer version stays and that the first
/// daemon counted its lost assignment on `first_port`.
async fn the_newer_version_survives_the_wake(
    first: &common::Daemon,
    first_port: u16,
    second: &common::Daemon,
    coll: &mongodb::Collection<mongodb::bson::Document>,
    produced: std::time::Instant,
) {
    let newer = common::eventually(WAIT, || {
        let coll = coll.clone();
        async move {
            coll.find_one(doc! {"_id": 1})
                .await
                .ok()
                .flatten()
                .is_some_and(|d| d.get_str("v").ok() == Some("new"))
        }
    })
    .await;
    assert!(
        newer,
        "the second daemon did not write; log:\n{}",
        second.log()
    );
    // Past the first daemon's batch delay: its timer is due the moment it runs again.
    let due = Duration::from_secs(17).saturating_sub(produced.elapsed());
    tokio::time::sleep(due).await;
    first.signal("CONT");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let stored = coll.find_one(doc! {"_id": 1}).await.ok().flatten();
    let first_log = first.log();
    assert_eq!(
        stored.as_ref().and_then(|d| d.get_str("v").ok()),
        Some("new"),
        "the stopped daemon wrote its older version over the new owner's; its log:\n{first_log}"
    );
    assert!(
        common::metric_with(first_port, "mkb_sink_assignments_lost_total", &[]) >= 1.0,
        "the lost assignment is not counted; log:\n{first_log}"
    );
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

/// Item 12: once the failure passes and the pipeline ran a healthy minute, `/ready` answers
/// 200 again and the restart backoff starts over: the next failure waits 500 ms, not the
/// delay the earlier failures had grown it to.
#[tokio::test]
async fn a_healthy_minute_clears_ready_and_starts_the_restart_backoff_over() {
    let dlq = common::unique("sink_dlq");
    common::create_topic_with(&dlq, 1, &[("max.message.bytes", "1")]).await;
    let sink = Sink::new(
        1,
        &format!(
            "id_strategy = \"provided_in_key\"\nmax_num_retries = 1\nerrors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}"
        ),
    )
    .await;
    let mut daemon = sink.start();
    let poison = |id: i64| Outgoing {
        key: Some(format!("{{\"_id\": {id}}}").into_bytes()),
        value: Some(b"{not json".to_vec()),
        ..Outgoing::default()
    };
    common::produce(&sink.topic, &[poison(1)]).await;
    daemon.wait_for_log("restarting the sink pipeline", 3, WAIT);
    // The dead letter topic takes the record now: the next run goes through.
    alter_topic(&dlq, &[]).await;
    let dead = common::consume(&dlq, 1, WAIT, false).await;
    assert_eq!(dead.len(), 1, "log:\n{}", daemon.log());
    let body = common::wait_for_status(sink.port, "/ready", 200, Duration::from_secs(120));
    assert!(!body.contains(&sink.name), "{body}");
    // It fails again: the backoff starts over.
    alter_topic(&dlq, &[("max.message.bytes", "1")]).await;
    let before = daemon.log().matches("restarting the sink pipeline").count();
    common::produce(&sink.topic, &[poison(2)]).await;
    daemon.wait_for_log("restarting the sink pipeline", before + 1, WAIT);
    let log = daemon.log();
    let last = log
        .lines()
        .rfind(|l| l.contains("restarting the sink pipeline"))
        .unwrap_or_default();
    assert!(
        last.contains("retry_in=500ms"),
        "the backoff did not start over: {last}"
    );
    let ready = common::http_get(sink.port, "/ready");
    assert!(
        matches!(&ready, Some((503, body)) if body.contains(&sink.name)),
        "{ready:?}"
    );
    sink.stop(daemon).await;
}

/// Item 11, a pause and a network split at once: a daemon stopped (SIGSTOP) past its session
/// timeout with a record waiting in its writer, whose broker connection stays cut (a proxy
/// in front of a listener of its own, frozen) when it runs again. librdkafka cannot hear
/// from the broker that the assignment is gone, so nothing but the daemon's own clock tells
/// the writer, whose batch timer is due the moment it runs: it must write nothing over the
/// version the new owner wrote meanwhile.
#[tokio::test]
async fn a_daemon_stopped_and_cut_off_from_the_broker_writes_nothing_over_the_new_owner() {
    use common::proxy::Proxy;
    use common::services::OwnService;
    let split_port = common::free_port();
    let to_kafka = Proxy::start(&format!("127.0.0.1:{split_port}"));
    let kafka = OwnService::kafka_behind(split_port, to_kafka.port());
    let topic = common::unique("split_in");
    common::create_topic_on(&kafka.address(), &topic, 1, &[]).await;
    let db = common::unique("split_db");
    let name = common::unique("split_sink");
    let sink = |port: u16, delay: &str| {
        kafka.config(&common::config_toml(
            port,
            &format!(
                "[[sink]]\nname = \"{name}\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\n\
                 collection = \"docs\"\nmax_batch_delay = \"{delay}\"\n\
                 id_strategy = \"provided_in_key\"\n{SHORT_SESSION}"
            ),
        ))
    };
    // The first daemon reaches the broker through the proxy, and holds what it reads for
    // 15 s before writing it.
    let first_port = common::free_port();
    let first_config = sink(first_port, "15s").replace(
        &format!("bootstrap_servers = \"{}\"", kafka.address()),
        &format!("bootstrap_servers = \"127.0.0.1:{}\"", to_kafka.port()),
    );
    let mut first = common::Daemon::start(&first_config);
    first.wait_for_log("partitions assigned", 1, WAIT);
    let broker = kafka.address();
    let direct = [("bootstrap.servers", broker.as_str())];
    common::produce_with(&topic, &[keyed(1, json!({"v": "old"}))], &direct).await;
    let produced = std::time::Instant::now();
    // Time to read it into the writer's buffer (nothing shows a buffered record).
    tokio::time::sleep(Duration::from_secs(3)).await;
    to_kafka.freeze();
    first.signal("STOP");
    let second_port = common::free_port();
    let mut second = common::Daemon::start(&sink(second_port, "50ms"));
    second.wait_for_log("partitions assigned", 1, WAIT);
    common::produce_with(&topic, &[keyed(1, json!({"v": "new"}))], &direct).await;
    let coll = common::mongo_client()
        .await
        .database(&db)
        .collection::<mongodb::bson::Document>("docs");
    // Its broker connection is still cut when it wakes.
    the_newer_version_survives_the_wake(&first, first_port, &second, &coll, produced).await;
    first.signal("KILL");
    second.terminate(WAIT);
    let _ = coll.drop().await;
}
