//! Controlling pipelines over HTTP (issue 22, "Control and state"): `POST
//! /pipelines/<name>/pause|resume|restart`, `GET /pipelines[/<name>]`, the
//! `mkb_pipeline_state` metric, a failed pipeline staying failed until restarted, the
//! bearer token off loopback, and what a reload does to paused and failed pipelines.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::sink::{Sink, WAIT};
use common::Outgoing;
use mongodb::bson::{doc, Document};
use serde_json::{json, Value};

/// `method path` on 127.0.0.1:`port` with `token` as bearer token: the status and the body.
fn request(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let answer = (|| {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .ok()?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split(' ').nth(1)?.parse().ok()?;
        let (_, body) = response.split_once("\r\n\r\n")?;
        Some((status, body.to_owned()))
    })();
    answer.unwrap_or_else(|| panic!("{method} {path}: no answer"))
}

/// `method path` without a token, its body as JSON.
fn json_request(port: u16, method: &str, path: &str) -> (u16, Value) {
    let (status, body) = request(port, method, path, None);
    let value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{method} {path} answered {status} with no JSON ({e}): {body}"));
    (status, value)
}

/// `POST /pipelines/<name>/<command>`, asserting 200; the pipeline's report.
fn command(daemon: &common::Daemon, port: u16, name: &str, command: &str) -> Value {
    let (status, body) = json_request(port, "POST", &format!("/pipelines/{name}/{command}"));
    assert_eq!(
        status,
        200,
        "{command} {name}: {body}\nlog:\n{}",
        daemon.log()
    );
    body
}

/// The state `GET /pipelines/<name>` reports.
fn state(port: u16, name: &str) -> String {
    let (status, body) = json_request(port, "GET", &format!("/pipelines/{name}"));
    assert_eq!(status, 200, "{body}");
    body["state"].as_str().unwrap_or_default().to_owned()
}

/// Waits until `GET /pipelines/<name>` reports `wanted`.
fn wait_for_state(daemon: &common::Daemon, port: u16, name: &str, wanted: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if state(port, name) == wanted {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "pipeline {name} not {wanted} within {WAIT:?} (it is {}); log:\n{}",
        state(port, name),
        daemon.log()
    );
}

/// A sink pipeline of this file's own names: one new topic into a new database.
async fn control_sink(extra: &str) -> Sink {
    let sink = Sink {
        name: common::unique("control_sink"),
        topic: common::unique("control_in"),
        more_topics: Vec::new(),
        db: common::unique("control_db"),
        port: common::free_port(),
        extra: format!("id_strategy = \"provided_in_key\"\n{extra}"),
    };
    common::create_topic(&sink.topic, 1).await;
    sink
}

fn keyed(id: i64) -> Outgoing {
    Outgoing::json(json!({ "_id": id }), json!({ "n": id }))
}

/// The group's members' ids, as the broker lists them.
fn group_members(group: &str) -> BTreeSet<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::kafka_bootstrap())
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    let groups = consumer
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("listing group {group}: {e}"));
    groups
        .groups()
        .iter()
        .flat_map(|g| g.members().iter().map(|m| m.id().to_owned()))
        .collect()
}

/// Commits `offset` for `group` on partition 0 of `topic` (the group has no live member).
fn commit_offset(group: &str, topic: &str, offset: i64) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::kafka_bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset(topic, 0, rdkafka::Offset::Offset(offset))
        .unwrap_or_else(|e| panic!("{e}"));
    consumer
        .commit(&list, CommitMode::Sync)
        .unwrap_or_else(|e| panic!("committing {offset} for {group}: {e}"));
}

/// (a) A paused source reads nothing (inserts meanwhile reach no topic) and keeps its
/// position: resumed, every insert arrives, none twice.
#[tokio::test]
async fn a_paused_source_publishes_nothing_and_resumed_publishes_everything_once() {
    let db = common::unique("control_srcdb");
    let name = common::unique("control_src");
    let port = common::free_port();
    let coll = common::mongo_client()
        .await
        .database(&db)
        .collection::<Document>("orders");
    coll.insert_one(doc! { "_id": -1, "seed": true })
        .await
        .expect("seed");
    let config = common::config_toml(
        port,
        &format!(
            "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"orders\"\ncheckpoint_interval = \"100ms\"\nmax_await_time = \"200ms\"\n"
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    let topic = format!("{db}.orders");
    for id in 1..=5 {
        coll.insert_one(doc! { "_id": id }).await.expect("insert");
    }
    let before = common::consume(&topic, 5, WAIT, false).await;
    assert_eq!(before.len(), 5, "log:\n{}", daemon.log());

    let report = command(&daemon, port, &name, "pause");
    assert_eq!(report["state"], "paused", "{report}");
    for id in 6..=10 {
        coll.insert_one(doc! { "_id": id }).await.expect("insert");
    }
    let paused = common::consume(&topic, 6, Duration::from_secs(6), false).await;
    assert_eq!(
        paused.len(),
        5,
        "records published while paused: {:?}\nlog:\n{}",
        paused
            .iter()
            .skip(5)
            .map(|r| r.key_json())
            .collect::<Vec<_>>(),
        daemon.log()
    );
    assert_eq!(state(port, &name), "paused");
    // Deliberate: no readiness problem.
    common::wait_for_status(port, "/ready", 200, Duration::from_secs(10));

    let report = command(&daemon, port, &name, "resume");
    assert_ne!(report["state"], "paused", "{report}");
    let after = common::consume(&topic, 10, WAIT, false).await;
    // Anything more than 10 would be a duplicate: wait a moment for one.
    let after = if after.len() == 10 {
        common::consume(&topic, 11, Duration::from_secs(3), false).await
    } else {
        after
    };
    let ids: Vec<i64> = after
        .iter()
        .map(|r| r.key_json()["_id"].as_i64().unwrap_or(-100))
        .collect();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>(), "log:\n{}", daemon.log());
    wait_for_state(&daemon, port, &name, "running");
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

/// (b) A paused sink writes and commits nothing and stays in its group (the same member,
/// past its session timeout and poll interval); resumed, it writes everything.
#[tokio::test]
async fn a_paused_sink_writes_and_commits_nothing_and_stays_in_its_group() {
    let sink = control_sink("").await;
    let config = format!(
        "{}\n[kafka.consumer]\n\"session.timeout.ms\" = \"6000\"\n\"max.poll.interval.ms\" = \"7000\"\n\"heartbeat.interval.ms\" = \"1000\"\n",
        sink.config()
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    common::produce(&sink.topic, &(1..=3).map(keyed).collect::<Vec<_>>()).await;
    assert_eq!(sink.wait_for_count(3).await, 3, "log:\n{}", daemon.log());
    sink.assert_committed(1, 3).await;
    let members = group_members(&sink.group());
    assert_eq!(members.len(), 1, "{members:?}");

    let report = command(&daemon, sink.port, &sink.name, "pause");
    assert_eq!(report["state"], "paused", "{report}");
    common::produce(&sink.topic, &(4..=6).map(keyed).collect::<Vec<_>>()).await;
    // Longer than the session timeout and the poll interval.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let count = sink
        .collection()
        .await
        .count_documents(doc! {})
        .await
        .expect("count");
    assert_eq!(count, 3, "written while paused; log:\n{}", daemon.log());
    assert_eq!(
        common::committed_offsets(&sink.group(), &sink.topic, 1),
        [Some(3)],
        "committed while paused"
    );
    assert_eq!(
        group_members(&sink.group()),
        members,
        "the paused consumer left or rejoined its group; log:\n{}",
        daemon.log()
    );
    assert_eq!(state(sink.port, &sink.name), "paused");
    common::wait_for_status(sink.port, "/ready", 200, Duration::from_secs(10));

    command(&daemon, sink.port, &sink.name, "resume");
    assert_eq!(sink.wait_for_count(6).await, 6, "log:\n{}", daemon.log());
    sink.assert_committed(1, 6).await;
    wait_for_state(&daemon, sink.port, &sink.name, "running");
    let log = daemon.log();
    assert!(
        !log.contains("partitions revoked"),
        "a rebalance while paused:\n{log}"
    );
    sink.stop(daemon).await;
}

/// (c) Restarting one pipeline leaves another alone: it keeps running, keeps writing, and
/// its restart count stays 0.
#[tokio::test]
async fn restarting_one_pipeline_leaves_the_other_running() {
    let first = control_sink("").await;
    let second = control_sink("").await;
    let second_table = second.config();
    let second_table = &second_table[second_table.find("[[sink]]").unwrap_or(0)..];
    let config = format!("{}\n{second_table}", first.config());
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("sink pipeline running", 2, WAIT);
    let port = first.port;

    let report = command(&daemon, port, &first.name, "restart");
    assert_eq!(report["restarts"], 1, "{report}");
    common::produce(&second.topic, &(1..=3).map(keyed).collect::<Vec<_>>()).await;
    assert_eq!(second.wait_for_count(3).await, 3, "log:\n{}", daemon.log());
    wait_for_state(&daemon, port, &first.name, "running");
    common::produce(&first.topic, &(1..=2).map(keyed).collect::<Vec<_>>()).await;
    assert_eq!(first.wait_for_count(2).await, 2, "log:\n{}", daemon.log());
    let (_, second_report) = json_request(port, "GET", &format!("/pipelines/{}", second.name));
    assert_eq!(second_report["state"], "running", "{second_report}");
    assert_eq!(second_report["restarts"], 0, "{second_report}");
    let (_, first_report) = json_request(port, "GET", &format!("/pipelines/{}", first.name));
    assert_eq!(first_report["restarts"], 1, "{first_report}");
    assert_eq!(
        daemon.log().matches("sink pipeline running").count(),
        3,
        "only the restarted pipeline started again; log:\n{}",
        daemon.log()
    );
    daemon.terminate(WAIT);
    for sink in [first, second] {
        let _ = common::mongo_client().await.database(&sink.db).drop().await;
    }
}

/// (d) `GET /pipelines` and `/pipelines/<name>`: kind, state, last error, restarts and
/// what `/status` shows; `mkb_pipeline_state`; 404 naming an unknown pipeline, 405 for a
/// wrong method.
#[tokio::test]
async fn pipelines_are_listed_with_their_state_and_the_state_metric() {
    let sink = control_sink("").await;
    let db = common::unique("control_srcdb");
    let source = common::unique("control_src");
    let config = format!(
        "{}\n[[source]]\nname = \"{source}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n",
        sink.config()
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    let port = sink.port;
    wait_for_state(&daemon, port, &source, "running");

    let (status, list) = json_request(port, "GET", "/pipelines");
    assert_eq!(status, 200, "{list}");
    let pipelines = list["pipelines"].as_object().cloned().unwrap_or_default();
    assert_eq!(pipelines.len(), 2, "{list}");
    for (name, kind) in [(&sink.name, "sink"), (&source, "source")] {
        let p = &pipelines[name.as_str()];
        assert_eq!(p["name"], name.as_str(), "{p}");
        assert_eq!(p["kind"], kind, "{p}");
        assert_eq!(p["state"], "running", "{p}");
        assert_eq!(p["last_error"], Value::Null, "{p}");
        assert_eq!(p["last_error_at"], Value::Null, "{p}");
        assert_eq!(p["restarts"], 0, "{p}");
        assert!(p["status"].is_object(), "{p}");
    }
    assert!(
        pipelines[source.as_str()]["status"]["slots"].is_object(),
        "the source's /status report: {list}"
    );
    let running = format!("pipeline=\"{}\"", sink.name);
    assert_eq!(
        common::metric_with(port, "mkb_pipeline_state", &[&running, "state=\"running\""]),
        1.0
    );
    assert_eq!(
        common::metric_with(port, "mkb_pipeline_state", &[&running]),
        1.0,
        "one state at 1, the others 0"
    );
    command(&daemon, port, &sink.name, "pause");
    assert_eq!(
        common::metric_with(port, "mkb_pipeline_state", &[&running, "state=\"paused\""]),
        1.0
    );
    assert_eq!(
        common::metric_with(port, "mkb_pipeline_state", &[&running, "state=\"running\""]),
        0.0
    );
    let (_, shown) = json_request(port, "GET", &format!("/pipelines/{}", sink.name));
    assert_eq!(shown["state"], "paused", "{shown}");
    assert_eq!(
        command(&daemon, port, &sink.name, "pause")["state"],
        "paused",
        "pausing twice is no error"
    );
    command(&daemon, port, &sink.name, "resume");
    wait_for_state(&daemon, port, &sink.name, "running");

    for (method, path, code) in [
        ("GET", "/pipelines/control_nope".to_owned(), 404),
        ("POST", "/pipelines/control_nope/pause".to_owned(), 404),
        ("POST", format!("/pipelines/{}/stop", sink.name), 404),
    ] {
        let (status, body) = json_request(port, method, &path);
        assert_eq!(status, code, "{method} {path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("control_nope") || e.contains("stop")),
            "{method} {path}: {body}"
        );
    }
    for (method, path) in [
        ("GET", format!("/pipelines/{}/pause", sink.name)),
        ("DELETE", format!("/pipelines/{}/restart", sink.name)),
        ("POST", format!("/pipelines/{}", sink.name)),
        ("POST", "/pipelines".to_owned()),
    ] {
        let (status, _) = request(port, method, &path, None);
        assert_eq!(status, 405, "{method} {path}");
    }
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&sink.db).drop().await;
}

/// (e) A sink failing for good (a record it cannot read, `errors.tolerance = "none"`)
/// stays failed, on `/ready` and `/pipelines`, refusing pause and resume, until restarted:
/// by `POST .../restart`, then (failed again) by a reload of an unchanged configuration.
#[tokio::test]
async fn a_failed_pipeline_stays_failed_until_restarted_by_hand_or_by_a_reload() {
    let sink = control_sink("").await;
    let daemon = sink.start();
    let port = sink.port;
    let poison = |text: &str| Outgoing {
        key: Some(b"{\"_id\": 99}".to_vec()),
        value: Some(text.as_bytes().to_vec()),
        ..Outgoing::default()
    };
    common::produce(&sink.topic, &[poison("not json {")]).await;
    wait_for_state(&daemon, port, &sink.name, "failed");
    std::thread::sleep(Duration::from_secs(5));
    let (_, report) = json_request(port, "GET", &format!("/pipelines/{}", sink.name));
    assert_eq!(report["state"], "failed", "{report}");
    assert!(
        report["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("@0")),
        "{report}"
    );
    assert!(report["last_error_at"].is_string(), "{report}");
    let (status, ready) = common::http_get(port, "/ready").unwrap_or_default();
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready.contains(&format!("pipeline {}: sink pipeline failed", sink.name))
            && ready.contains("stays failed until restarted"),
        "{ready}"
    );
    for verb in ["pause", "resume"] {
        let (status, body) =
            json_request(port, "POST", &format!("/pipelines/{}/{verb}", sink.name));
        assert_eq!(status, 409, "{verb}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("restart")),
            "{body}"
        );
    }

    // Skip the record (the failed pipeline left its group), then restart it by hand.
    commit_offset(&sink.group(), &sink.topic, 1);
    let report = command(&daemon, port, &sink.name, "restart");
    assert_eq!(report["restarts"], 1, "{report}");
    wait_for_state(&daemon, port, &sink.name, "running");
    common::wait_for_status(port, "/ready", 200, WAIT);
    common::produce(&sink.topic, &[keyed(1)]).await;
    assert_eq!(sink.wait_for_count(1).await, 1, "log:\n{}", daemon.log());

    // Failed again: a reload of the same configuration restarts it.
    common::produce(&sink.topic, &[poison("still not json {")]).await;
    wait_for_state(&daemon, port, &sink.name, "failed");
    commit_offset(&sink.group(), &sink.topic, 3);
    daemon.signal("HUP");
    wait_for_state(&daemon, port, &sink.name, "running");
    common::wait_for_status(port, "/ready", 200, WAIT);
    common::produce(&sink.topic, &[keyed(2)]).await;
    assert_eq!(sink.wait_for_count(2).await, 2, "log:\n{}", daemon.log());
    let (_, report) = json_request(port, "GET", &format!("/pipelines/{}", sink.name));
    assert_eq!(report["restarts"], 2, "{report}");
    sink.stop(daemon).await;
}

/// (e) The same for a source: an event Kafka cannot take (over `message.max.bytes`,
/// `oversize = "fail"`) stops it for good; it stays failed, and a restart by hand starts it
/// again (to fail again on the same event: a restart does not fix that, and says so).
#[tokio::test]
async fn a_failed_source_stays_failed_and_a_restart_by_hand_starts_it_again() {
    let db = common::unique("control_srcdb");
    let name = common::unique("control_src");
    let port = common::free_port();
    let coll = common::mongo_client()
        .await
        .database(&db)
        .collection::<Document>("docs");
    coll.insert_one(doc! { "_id": -1, "seed": true })
        .await
        .expect("seed");
    let config = common::config_toml(
        port,
        &format!(
            "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"docs\"\ncheckpoint_interval = \"100ms\"\nmax_await_time = \"200ms\"\n"
        ),
    )
    .replace(
        "[kafka]\n",
        "[kafka]\nproducer = { \"message.max.bytes\" = 20000 }\n",
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    coll.insert_one(doc! { "_id": 2, "big": "y".repeat(50_000) })
        .await
        .expect("insert");
    wait_for_state(&daemon, port, &name, "failed");
    std::thread::sleep(Duration::from_secs(3));
    let (_, report) = json_request(port, "GET", &format!("/pipelines/{name}"));
    assert_eq!(report["state"], "failed", "{report}");
    assert_eq!(report["kind"], "source", "{report}");
    assert!(report["last_error"].is_string(), "{report}");
    let ready = common::wait_for_status(port, "/ready", 503, WAIT);
    assert!(
        ready.contains(&format!("pipeline {name}: source pipeline failed"))
            && ready.contains("stays failed until restarted"),
        "{ready}"
    );
    let (status, body) = json_request(port, "POST", &format!("/pipelines/{name}/pause"));
    assert_eq!(status, 409, "{body}");

    let report = command(&daemon, port, &name, "restart");
    assert_eq!(report["restarts"], 1, "{report}");
    daemon.wait_for_log("source pipeline failed", 2, WAIT);
    wait_for_state(&daemon, port, &name, "failed");
    daemon.signal("TERM");
    daemon.wait(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

/// (f) Listening off loopback: without a token the control paths are disabled (403, a WARN
/// at start; the daemon still starts, so a container upgraded without one keeps its probes
/// and metrics); with one (from the environment), they answer 401 without it and 200 with it,
/// while `/health`, `/ready` and `/metrics` stay open; `check-config` masks it.
#[tokio::test]
async fn off_loopback_the_control_endpoints_need_the_bearer_token() {
    let sink = control_sink("").await;
    let config = sink.config().replace(
        &format!("address = \"127.0.0.1:{}\"", sink.port),
        &format!("address = \"0.0.0.0:{}\"", sink.port),
    );
    assert!(config.contains("0.0.0.0"), "{config}");
    // Without a token the daemon runs, its probes answer, and its control paths are
    // disabled (403, said at start in a WARN) rather than open to the network.
    let (code, _, stderr) = common::run_to_end("check-config", &config, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    let (status, body) = request(
        sink.port,
        "POST",
        &format!("/pipelines/{}/pause", sink.name),
        None,
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("MKB_HTTP_TOKEN"), "{body}");
    common::wait_for_status(sink.port, "/ready", 200, WAIT);
    assert!(
        daemon
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("control endpoints are disabled")),
        "no WARN said the control endpoints are disabled; log:\n{}",
        daemon.log()
    );
    daemon.terminate(WAIT);

    let token = "control-token-4711";
    let (code, stdout, stderr) =
        common::run_to_end("check-config", &config, &[("MKB_HTTP_TOKEN", token)]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !stdout.contains(token) && stdout.contains("token = \"****\""),
        "{stdout}"
    );

    let mut daemon = common::Daemon::start_with_env(&config, &[("MKB_HTTP_TOKEN", token)]);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    let port = sink.port;
    let pipeline = format!("/pipelines/{}", sink.name);
    for (method, path) in [
        ("GET", "/pipelines".to_owned()),
        ("GET", pipeline.clone()),
        ("POST", format!("{pipeline}/pause")),
    ] {
        for wrong in [None, Some("control-token-4712")] {
            let (status, body) = request(port, method, &path, wrong);
            assert_eq!(status, 401, "{method} {path} with {wrong:?}: {body}");
        }
        let (status, body) = request(port, method, &path, Some(token));
        assert_eq!(status, 200, "{method} {path}: {body}");
    }
    assert_eq!(state_with(port, &pipeline, token), "paused");
    for open in ["/health", "/ready", "/metrics", "/status"] {
        let (status, _) = request(port, "GET", open, None);
        assert_eq!(status, 200, "{open}");
    }
    sink.stop(daemon).await;
}

fn state_with(port: u16, path: &str, token: &str) -> String {
    let (_, body) = request(port, "GET", path, Some(token));
    let value: Value = serde_json::from_str(&body).unwrap_or_default();
    value["state"].as_str().unwrap_or_default().to_owned()
}

/// A reload keeps a pause: an unchanged paused pipeline is left paused, a changed one is
/// started anew paused (a sink and a source); nothing is written or published until the
/// resume, then everything, once.
#[tokio::test]
async fn a_reload_keeps_paused_pipelines_paused() {
    let sink = control_sink("").await;
    let db = common::unique("control_srcdb");
    let source = common::unique("control_src");
    let coll = common::mongo_client()
        .await
        .database(&db)
        .collection::<Document>("orders");
    coll.insert_one(doc! { "_id": -1, "seed": true })
        .await
        .expect("seed");
    let source_table = |await_time: &str| {
        format!(
            "[[source]]\nname = \"{source}\"\ndatabase = \"{db}\"\ncollection = \"orders\"\ncheckpoint_interval = \"100ms\"\nmax_await_time = \"{await_time}\"\n"
        )
    };
    let config = format!("{}\n{}", sink.config(), source_table("200ms"));
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    daemon.wait_for_log("change stream open", 1, WAIT);
    let port = sink.port;
    let topic = format!("{db}.orders");
    coll.insert_one(doc! { "_id": 1 }).await.expect("insert");
    assert_eq!(common::consume(&topic, 1, WAIT, false).await.len(), 1);
    command(&daemon, port, &sink.name, "pause");
    command(&daemon, port, &source, "pause");
    common::produce(&sink.topic, &(1..=3).map(keyed).collect::<Vec<_>>()).await;
    coll.insert_one(doc! { "_id": 2 }).await.expect("insert");

    daemon.signal("HUP");
    daemon.wait_for_log("configuration reloaded", 1, WAIT);
    for name in [&sink.name, &source] {
        assert_eq!(
            state(port, name),
            "paused",
            "unchanged {name}; log:\n{}",
            daemon.log()
        );
    }

    let changed = format!(
        "{}\n{}",
        sink.config()
            .replace("max_batch_delay = \"50ms\"", "max_batch_delay = \"60ms\""),
        source_table("250ms")
    );
    daemon.rewrite_config(&changed);
    daemon.signal("HUP");
    daemon.wait_for_log("configuration reloaded", 2, WAIT);
    daemon.wait_for_log("sink pipeline running", 2, WAIT);
    daemon.wait_for_log("source pipeline paused", 2, WAIT);
    coll.insert_one(doc! { "_id": 3 }).await.expect("insert");
    std::thread::sleep(Duration::from_secs(5));
    for name in [&sink.name, &source] {
        assert_eq!(
            state(port, name),
            "paused",
            "changed {name}; log:\n{}",
            daemon.log()
        );
    }
    let count = sink
        .collection()
        .await
        .count_documents(doc! {})
        .await
        .expect("count");
    assert_eq!(count, 0, "written while paused; log:\n{}", daemon.log());
    let published = common::consume(&topic, 2, Duration::from_secs(3), false).await;
    assert_eq!(
        published.len(),
        1,
        "published while paused; log:\n{}",
        daemon.log()
    );

    command(&daemon, port, &sink.name, "resume");
    command(&daemon, port, &source, "resume");
    assert_eq!(sink.wait_for_count(3).await, 3, "log:\n{}", daemon.log());
    let published = common::consume(&topic, 3, WAIT, false).await;
    let published = if published.len() == 3 {
        common::consume(&topic, 4, Duration::from_secs(3), false).await
    } else {
        published
    };
    let ids: Vec<i64> = published
        .iter()
        .map(|r| r.key_json()["_id"].as_i64().unwrap_or(-100))
        .collect();
    assert_eq!(ids, [1, 2, 3], "log:\n{}", daemon.log());
    sink.stop(daemon).await;
    let _ = common::mongo_client().await.database(&db).drop().await;
}
