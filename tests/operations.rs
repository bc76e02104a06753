//! Operations end to end: metrics under traffic, SIGHUP reloads under traffic, SIGTERM
//! under load, systemd notifications, and `/ready` following MongoDB (cut through a proxy)
//! and stalled change streams.

mod common;

use std::time::Duration;

use common::proxy::{self, Proxy};
use common::traffic::{self, Traffic};
use mongodb::bson::{doc, Document};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

/// A source on `db.<coll>` publishing to the topic `db.<coll>`.
fn source(name: &str, db: &str, coll: &str, extra: &str) -> String {
    format!(
        "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"{coll}\"\ncheckpoint_interval = \"100ms\"\nmax_await_time = \"200ms\"\n{extra}\n"
    )
}

/// A sink replaying the change events of topic `db.<coll>` into `db.<coll>_copy`.
fn sink(name: &str, db: &str, coll: &str, extra: &str) -> String {
    format!(
        "[[sink]]\nname = \"{name}\"\ntopics = [\"{db}.{coll}\"]\ndatabase = \"{db}\"\ncollection = \"{coll}_copy\"\ncdc_handler = \"mongodb\"\nmax_batch_delay = \"50ms\"\n{extra}\n"
    )
}

/// Counts the log lines ending in `line` (fields come last, so `pipeline=x` ends a line).
fn lines_ending(log: &str, line: &str) -> usize {
    log.lines().filter(|l| l.ends_with(line)).count()
}

async fn seeded(db: &str, coll: &str) -> mongodb::Collection<Document> {
    let c = common::mongo_client()
        .await
        .database(db)
        .collection::<Document>(coll);
    // Change streams on some servers need the collection to exist.
    c.insert_one(doc! {"_id": -1_i64}).await.expect("seed");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exist_and_move_under_traffic() {
    let db = common::unique("opsm");
    let coll = seeded(&db, "m").await;
    let topic = format!("{db}.m");
    common::create_topic(&topic, 1).await;
    let dlq = common::unique("opsdlq");
    let port = common::free_port();
    let (src, snk) = (common::unique("msrc"), common::unique("msnk"));
    let config = common::config_toml(
        port,
        &(source(&src, &db, "m", "")
            + &sink(
                &snk,
                &db,
                "m",
                &format!("[sink.errors]\ntolerance = \"all\"\ndead_letter_topic = \"{dlq}\"\n"),
            )),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    for i in 0..40_i64 {
        coll.insert_one(doc! {"_id": i, "v": i})
            .await
            .expect("insert");
    }
    // A record the sink cannot read, for the error and dead letter metrics.
    common::produce(
        &topic,
        &[common::Outgoing::json(json!(null), json!("not a document"))],
    )
    .await;
    let copy = common::mongo_client()
        .await
        .database(&db)
        .collection::<Document>("m_copy");
    let written = common::eventually(WAIT, || {
        let copy = copy.clone();
        async move {
            copy.count_documents(doc! {"_id": {"$gte": 0}})
                .await
                .unwrap_or(0)
                == 40
        }
    })
    .await;
    assert!(written, "log:\n{}", daemon.log());
    // The consumer's statistics come every 5 s.
    let lag_reported = common::eventually(Duration::from_secs(20), || async {
        common::http_get(port, "/metrics")
            .is_some_and(|(_, body)| body.contains("mkb_sink_consumer_lag_records{"))
    })
    .await;
    assert!(lag_reported, "no consumer lag reported");
    let (p_src, p_snk) = (format!("pipeline=\"{src}\""), format!("pipeline=\"{snk}\""));
    for (metric, labels, at_least) in [
        ("mkb_source_events_read_total", &p_src, 40.0),
        ("mkb_source_records_produced_total", &p_src, 40.0),
        ("mkb_source_checkpoints_written_total", &p_src, 1.0),
        ("mkb_source_delivery_duration_seconds_count", &p_src, 40.0),
        // At least one hand-over, however the 40 events were batched.
        ("mkb_source_handover_duration_seconds_count", &p_src, 1.0),
        ("mkb_source_event_lag_seconds_count", &p_src, 40.0),
        ("mkb_sink_records_consumed_total", &p_snk, 41.0),
        ("mkb_sink_writes_total", &p_snk, 40.0),
        ("mkb_sink_batch_size_records_count", &p_snk, 1.0),
        ("mkb_sink_batch_duration_seconds_count", &p_snk, 1.0),
        ("mkb_sink_record_errors_total", &p_snk, 1.0),
        ("mkb_dead_letter_records_total", &p_snk, 1.0),
    ] {
        let value = common::metric_with(port, metric, &[labels]);
        assert!(
            value >= at_least,
            "{metric}{{{labels}}} is {value}, expected at least {at_least}"
        );
    }
    // Bytes: each event carries its document (at least its BSON size), each record its JSON,
    // each insert its document; the sink read every produced record and the bad one.
    let doc_bytes = bson::to_vec(&doc! {"_id": 0_i64, "v": 0_i64}).map_or(0, |v| v.len()) as f64;
    let read = common::metric_with(port, "mkb_source_bytes_read_total", &[&p_src]);
    let produced = common::metric_with(port, "mkb_source_bytes_produced_total", &[&p_src]);
    let consumed = common::metric_with(port, "mkb_sink_bytes_consumed_total", &[&p_snk]);
    let written = common::metric_with(port, "mkb_sink_bytes_written_total", &[&p_snk]);
    let json_bytes = r#"{"_id": 0, "v": 0}"#.len() as f64 - 4.0;
    assert!(
        read >= 40.0 * doc_bytes,
        "bytes read {read} < 40 x {doc_bytes}"
    );
    assert!(
        produced >= 40.0 * json_bytes,
        "bytes produced {produced} < 40 x {json_bytes}"
    );
    assert!(
        consumed > produced,
        "bytes consumed {consumed} <= produced {produced} (+ the bad record)"
    );
    assert!(
        written >= 40.0 * doc_bytes,
        "bytes written {written} < 40 x {doc_bytes}"
    );
    let (_, body) = common::http_get(port, "/metrics").expect("metrics");
    for series in [
        format!("mkb_source_lag_seconds{{namespace=\"{db}.m\",{p_src}}}"),
        format!("mkb_source_checkpoint_age_seconds{{namespace=\"{db}.m\",{p_src}}}"),
        format!("mkb_mailbox_depth_messages{{actor=\"record_producer\",{p_src}}}"),
        format!("mkb_mailbox_depth_messages{{actor=\"partition_writer\",{p_snk}}}"),
        format!("mkb_source_stalled_readers{{{p_src}}} 0"),
    ] {
        assert!(body.contains(&series), "no `{series}` in:\n{body}");
    }
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_touches_only_what_changed_and_loses_nothing_under_traffic() {
    let db = common::unique("opsr");
    let colls = ["keep", "change", "remove", "add"];
    let mut handles = Vec::new();
    for c in colls {
        handles.push(seeded(&db, c).await);
        common::create_topic(&format!("{db}.{c}"), 1).await;
    }
    let names: Vec<String> = colls
        .iter()
        .map(|c| common::unique(&format!("r{c}")))
        .collect();
    let keep_sink = common::unique("rsink");
    let port = common::free_port();
    let before = common::config_toml(
        port,
        &(source(&names[0], &db, "keep", "")
            + &source(&names[1], &db, "change", "")
            + &source(&names[2], &db, "remove", "")
            + &sink(&keep_sink, &db, "keep", "")),
    );
    let mut daemon = common::Daemon::start(&before);
    daemon.wait_for_log("change stream open", 3, WAIT);
    let load = Traffic::start(handles.clone(), Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // An invalid file first: rejected, the running configuration stays.
    daemon.rewrite_config(&before.replace("[[sink]]", "[[sink]]\nno_such_key = 1"));
    daemon.signal("HUP");
    daemon.wait_for_log("the new configuration is invalid", 1, WAIT);
    assert!(daemon.log().contains("no_such_key"), "{}", daemon.log());
    let rejected = common::eventually(Duration::from_secs(5), || async {
        common::metric_with(port, "mkb_config_reloads_total", &["result=\"rejected\""]) == 1.0
    })
    .await;
    assert!(rejected, "the rejected reload was not counted");

    let after = common::config_toml(
        port,
        &(source(&names[0], &db, "keep", "")
            + &source(&names[1], &db, "change", "heartbeat_interval = \"1s\"")
            + &source(&names[3], &db, "add", "")
            + &sink(&keep_sink, &db, "keep", "")),
    );
    daemon.rewrite_config(&after);
    daemon.signal("HUP");
    daemon.wait_for_log("configuration reloaded", 1, WAIT);
    let reloaded_at = load.inserted();
    daemon.wait_for_log(
        &format!("change stream open pipeline={}", names[3]),
        1,
        WAIT,
    );
    // A `latest` start follows what comes after its stream opened; the added pipeline opens
    // it once the group of its daemons assigned it its slots, a moment after the reload.
    let opened_at = load.inserted();
    daemon.wait_for_log(
        &format!("change stream open pipeline={}", names[1]),
        2,
        WAIT,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = load.stop().await;
    assert!(
        total > reloaded_at + 20,
        "too little traffic after the reload"
    );

    let log = daemon.log();
    let summary = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap_or_default()
        .to_owned();
    for (field, name) in [
        ("added", &names[3]),
        ("removed", &names[2]),
        ("changed", &names[1]),
    ] {
        assert!(
            summary.contains(&format!("{field}=[\"{name}\"]")),
            "{field} {name}: {summary}"
        );
    }
    // Unchanged pipelines were never stopped or restarted.
    for name in [&names[0], &keep_sink] {
        assert!(summary.contains(&format!("\"{name}\"")), "{summary}");
        assert_eq!(
            lines_ending(&log, &format!("pipeline started pipeline={name}")),
            1,
            "{log}"
        );
        assert_eq!(
            lines_ending(&log, &format!("pipeline stopped pipeline={name}")),
            0,
            "{log}"
        );
    }
    assert_eq!(
        log.matches(&format!("starting reader pipeline={}", names[0]))
            .count(),
        1,
        "{log}"
    );
    assert_eq!(
        lines_ending(
            &log,
            &format!("source pipeline stopped pipeline={}", names[2])
        ),
        1,
        "{log}"
    );
    assert!(common::metric_with(port, "mkb_config_reloads_total", &["result=\"applied\""]) == 1.0);

    // Nothing lost: the unchanged chain delivered every document of `keep` to its copy;
    // the changed source published every document of `change` (resuming from its
    // checkpoint); the added one every document inserted after the reload.
    let client = common::mongo_client().await;
    let keep_copy = client.database(&db).collection::<Document>("keep_copy");
    let keep_ids: Vec<i64> = traffic::ids_of(0, 4, total).collect();
    traffic::assert_arrived(&keep_copy, keep_ids, WAIT, || daemon.log()).await;
    // The added pipeline starts at the newest change: give the stand-in's clock and the
    // insert in flight when its stream opened some room.
    for (index, coll, from) in [
        (1, "change", 0),
        (3, "add", opened_at.max(reloaded_at) + 40),
    ] {
        let expected: Vec<i64> = traffic::ids_of(index, 4, total)
            .filter(|id| *id >= from)
            .collect();
        let records = common::consume_until(&format!("{db}.{coll}"), WAIT, false, |records| {
            let ids: std::collections::BTreeSet<i64> = records
                .iter()
                .filter_map(|r| r.key.as_ref())
                .filter_map(|k| serde_json::from_slice::<serde_json::Value>(k).ok())
                .filter_map(|k| k["_id"].as_i64())
                .collect();
            expected.iter().all(|id| ids.contains(id))
        })
        .await;
        let ids: std::collections::BTreeSet<i64> = records
            .iter()
            .filter_map(|r| r.key.as_ref())
            .filter_map(|k| serde_json::from_slice::<serde_json::Value>(k).ok())
            .filter_map(|k| k["_id"].as_i64())
            .collect();
        let missing: Vec<&i64> = expected.iter().filter(|id| !ids.contains(id)).collect();
        assert!(missing.is_empty(), "{coll}: missing {missing:?}");
    }
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_commits_everything_and_a_restart_duplicates_nothing() {
    let db = common::unique("opst");
    let coll = seeded(&db, "t").await;
    let topic = format!("{db}.t");
    common::create_topic(&topic, 1).await;
    let port = common::free_port();
    let (src, snk) = (common::unique("tsrc"), common::unique("tsnk"));
    let config = common::config_toml(
        port,
        &(source(&src, &db, "t", "") + &sink(&snk, &db, "t", "")),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    let load = Traffic::start(vec![coll.clone()], Duration::from_millis(5));
    tokio::time::sleep(Duration::from_secs(3)).await;
    daemon.terminate(WAIT);
    let log = daemon.log();
    assert!(log.contains("stopped cleanly"), "{log}");
    // Inserts go on while the daemon is down; a restart picks them up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = load.stop().await;
    let mut restarted = common::Daemon::start(&config);
    restarted.wait_for_log("change stream open", 1, WAIT);
    assert!(
        restarted.log().contains("start=\"checkpoint\""),
        "{}",
        restarted.log()
    );
    let copy = common::mongo_client()
        .await
        .database(&db)
        .collection::<Document>("t_copy");
    traffic::assert_arrived(&copy, (0..total).collect(), WAIT, || restarted.log()).await;
    // A graceful stop checkpointed everything it published: no change is published twice.
    let records = common::consume(
        &topic,
        usize::try_from(total).unwrap_or(0) + 1,
        Duration::from_secs(10),
        false,
    )
    .await;
    let mut seen = std::collections::BTreeMap::new();
    for r in &records {
        if let Some(id) = r.key_json()["_id"].as_i64() {
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published twice: {twice:?}");
    restarted.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

#[test]
fn systemd_is_told_ready_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let port = common::free_port();
    let config = common::config_toml(port, "");
    let socket_env = socket_path.to_string_lossy().into_owned();
    let mut daemon = common::Daemon::start_with_env(&config, &[("NOTIFY_SOCKET", &socket_env)]);
    let next = || {
        let mut buf = [0u8; 4096];
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = next();
    assert!(first.contains("READY=1"), "{first}");
    daemon.signal("HUP");
    let reloading = next();
    assert!(reloading.contains("RELOADING=1"), "{reloading}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let ready = next();
    assert!(ready.contains("READY=1"), "{ready}");
    daemon.signal("TERM");
    let stopping = next();
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
    assert_eq!(daemon.wait(WAIT).code(), Some(0), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_mongodb_and_a_stalled_stream_is_reported_and_restarted() {
    let uri = common::mongodb_uri();
    let proxy = Proxy::start(&proxy::mongodb_target(&uri));
    let db = common::unique("opsy");
    let coll = seeded(&db, "s").await;
    let port = common::free_port();
    let name = common::unique("ysrc");
    let config = proxy::config_through(
        &common::config_toml(port, &source(&name, &db, "s", "stall_timeout = \"3s\"")),
        &proxy,
    );
    let mut daemon = common::Daemon::start(&config);
    common::wait_for_status(port, "/ready", 200, WAIT);

    // MongoDB cut off: /ready says so, and recovers when it is back.
    proxy.cut();
    let body = common::wait_for_status(port, "/ready", 503, Duration::from_secs(30));
    assert!(body.contains("mongodb"), "{body}");
    proxy.forward();
    common::wait_for_status(port, "/ready", 200, WAIT);

    // MongoDB hangs: the reader's stream stops advancing, is reported and restarted.
    proxy.freeze();
    let body = common::wait_for_status(port, "/ready", 503, Duration::from_secs(30));
    let stalled = common::eventually(Duration::from_secs(30), || async {
        common::http_get(port, "/ready")
            .is_some_and(|(_, body)| body.contains(&format!("reader {name}/{db}.s")))
    })
    .await;
    assert!(stalled, "{body}; log:\n{}", daemon.log());
    assert!(
        common::metric_with(
            port,
            "mkb_source_stalled_readers",
            &[&format!("pipeline=\"{name}\"")]
        ) >= 1.0
    );
    daemon.wait_for_log(
        "change stream has not advanced; restarting the reader",
        1,
        WAIT,
    );
    assert!(common::metric_with(port, "mkb_actor_restarts_total", &["reason=\"stalled\""]) >= 1.0);
    proxy.forward();
    common::wait_for_status(port, "/ready", 200, WAIT);
    daemon.wait_for_log("change stream advances again", 1, WAIT);
    coll.insert_one(doc! {"_id": 1_i64}).await.expect("insert");
    let records = common::consume(&format!("{db}.s"), 1, WAIT, false).await;
    assert_eq!(records.len(), 1, "log:\n{}", daemon.log());
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

/// A daemon whose sink is writing to a MongoDB that stopped answering (frozen proxy), with
/// `shutdown.timeout` of 2 s: its shutdown cannot finish.
async fn daemon_stuck_writing() -> (common::Daemon, Proxy, String) {
    let proxy = Proxy::start(&proxy::mongodb_target(&common::mongodb_uri()));
    let topic = common::unique("stuck");
    common::create_topic(&topic, 1).await;
    let name = common::unique("stucksink");
    let db = common::unique("stuckdb");
    let port = common::free_port();
    let config = proxy::config_through(
        &common::config_toml(
            port,
            &format!("[[sink]]\nname = \"{name}\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\nid_strategy = \"provided_in_value\"\nmax_batch_delay = \"50ms\"\n"),
        ),
        &proxy,
    )
    .replace("timeout = \"20s\"", "timeout = \"2s\"");
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    common::wait_for_status(port, "/ready", 200, WAIT);
    proxy.freeze();
    common::produce(
        &topic,
        &[common::Outgoing::json(json!(null), json!({"_id": 1}))],
    )
    .await;
    // Give the writer time to start its (hanging) write.
    tokio::time::sleep(Duration::from_secs(1)).await;
    (daemon, proxy, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_past_its_deadline_exits_1_and_names_what_was_left() {
    let (mut daemon, proxy, name) = daemon_stuck_writing().await;
    daemon.signal("TERM");
    let status = daemon.wait(Duration::from_secs(30));
    proxy.forward();
    let log = daemon.log();
    assert_eq!(status.code(), Some(1), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("graceful shutdown did not finish"))
        .unwrap_or_else(|| panic!("no report of what was left: {log}"));
    assert!(line.contains(&name), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_shutdown_exits_at_once() {
    let (mut daemon, proxy, _) = daemon_stuck_writing().await;
    daemon.signal("TERM");
    daemon.wait_for_log("shutting down", 1, WAIT);
    daemon.signal("INT");
    let status = daemon.wait(Duration::from_secs(1));
    proxy.forward();
    assert_eq!(status.code(), Some(130), "{}", daemon.log());
    assert!(daemon.log().contains("second signal during shutdown"));
}
