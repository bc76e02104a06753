//! Moving a pipeline's positions from the command line (`checkpoints`, `offsets`), end to
//! end against the real services: a source set back to a timestamp publishes the changes
//! since then again, a sink moved to the earliest writes every record again, and both are
//! refused while a daemon runs the pipeline.

mod common;

use std::path::Path;
use std::time::Duration;

use mongodb::bson::{doc, Document};

const WAIT: Duration = Duration::from_secs(60);

/// Runs `mongo-kafka-bridge <args> --config <config>`: exit code, stdout, stderr.
fn command(args: &[&str], config: &Path) -> (Option<i32>, String, String) {
    let out = common::binary()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn source_table(name: &str, db: &str) -> String {
    format!(
        "[[source]]\nname = \"{name}\"\ndatabase = \"{db}\"\ncollection = \"c\"\ncheckpoint_interval = \"100ms\"\nmax_await_time = \"200ms\"\n"
    )
}

fn sink_table(name: &str, topic: &str, db: &str) -> String {
    format!(
        "[[sink]]\nname = \"{name}\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\ncollection = \"docs\"\nmax_batch_delay = \"50ms\"\n"
    )
}

/// The collection, created (some servers open change streams only on existing ones).
async fn collection(db: &str) -> mongodb::Collection<Document> {
    let collection = common::mongo_client()
        .await
        .database(db)
        .collection::<Document>("c");
    collection
        .insert_one(doc! { "_id": -1, "seed": true })
        .await
        .expect("seed");
    collection
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn ids(records: &[common::Consumed]) -> Vec<i64> {
    records
        .iter()
        .map(|r| r.key_json()["_id"].as_i64().unwrap_or(-99))
        .collect()
}

#[tokio::test]
async fn a_source_set_back_to_a_timestamp_publishes_the_changes_since_again() {
    let db = common::unique("posdb");
    let name = common::unique("possrc");
    let coll = collection(&db).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let text = common::config_toml(port, &source_table(&name, &db));
    let path = common::write_file(dir.path(), "bridge.toml", &text);
    let topic = format!("{db}.c");

    let mut daemon = common::Daemon::start(&text);
    daemon.wait_for_log("change stream open", 1, WAIT);
    // Whole seconds apart: a cluster time's resolution is one second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let back_to = now_secs();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for id in 1..=3 {
        coll.insert_one(doc! { "_id": id }).await.expect("insert");
    }
    let first = common::consume_until(&topic, WAIT, false, |r| ids(r).contains(&3)).await;
    assert_eq!(ids(&first), [1, 2, 3], "log:\n{}", daemon.log());
    // Its checkpoint after them is written every 100 ms.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    daemon.terminate(WAIT);
    let (code, listed, err) = command(&["checkpoints", "list", "--pipeline", &name], &path);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        listed.contains(&format!("{db}.c")) && listed.contains("token"),
        "the reader's checkpoint is listed with its token: {listed}"
    );

    let (code, out, err) = command(
        &[
            "checkpoints",
            "set",
            "--pipeline",
            &name,
            "--timestamp",
            &back_to.to_string(),
        ],
        &path,
    );
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    let (_, listed, _) = command(&["checkpoints", "list", "--pipeline", &name], &path);
    assert!(
        listed.contains(&format!("start at timestamp {back_to}.0")),
        "{listed}"
    );
    coll.insert_one(doc! { "_id": 4 }).await.expect("insert");

    let mut daemon = common::Daemon::start(&text);
    let all = common::consume_until(&topic, WAIT, false, |r| {
        let ids = ids(r);
        ids.contains(&4) && ids.iter().filter(|&&id| id == 3).count() >= 2
    })
    .await;
    let all = ids(&all);
    for id in 1..=3 {
        assert_eq!(
            all.iter().filter(|&&i| i == id).count(),
            2,
            "change {id} published again from the timestamp on: {all:?}; log:\n{}",
            daemon.log()
        );
    }
    assert!(all.contains(&4), "{all:?}");
    assert!(
        !all.contains(&-1),
        "the seed, before the time, is not published: {all:?}"
    );
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

/// Waits until the daemon on `port` counts `count` sink writes.
async fn writes_reach(port: u16, count: f64) -> f64 {
    let mut seen = 0.0;
    common::eventually(WAIT, || {
        seen = common::metric_sum(port, "mkb_sink_writes_total");
        let done = seen >= count;
        async move { done }
    })
    .await;
    seen
}

#[tokio::test]
async fn a_sink_moved_to_the_earliest_writes_every_record_again() {
    let name = common::unique("possink");
    let topic = common::unique("posin");
    let db = common::unique("posdb");
    common::create_topic(&topic, 2).await;
    let records: Vec<common::Outgoing> = (0..5)
        .map(|i| {
            common::Outgoing::json(
                serde_json::json!({"_id": i}),
                serde_json::json!({"_id": i, "n": i}),
            )
        })
        .collect();
    common::produce(&topic, &records).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let text = common::config_toml(port, &sink_table(&name, &topic, &db));
    let path = common::write_file(dir.path(), "bridge.toml", &text);

    let mut daemon = common::Daemon::start(&text);
    assert_eq!(writes_reach(port, 5.0).await, 5.0, "log:\n{}", daemon.log());
    // The offsets are committed after the writes.
    let group = format!("mongo-kafka-bridge-{name}");
    let mut committed = 0;
    for _ in 0..100 {
        committed = common::committed_offsets(&group, &topic, 2)
            .iter()
            .map(|o| o.unwrap_or(0))
            .sum();
        if committed == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(committed, 5);
    daemon.terminate(WAIT);
    let (code, listed, err) = command(&["offsets", "list", "--pipeline", &name], &path);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(listed.matches("lag 0").count(), 2, "{listed}");

    let (code, out, err) = command(
        &["offsets", "set", "--pipeline", &name, "--to-earliest"],
        &path,
    );
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert_eq!(out.matches("committed 0").count(), 2, "{out}");
    let lag: i64 = out
        .lines()
        .filter_map(|l| l.rsplit("lag ").next()?.trim().parse::<i64>().ok())
        .sum();
    assert_eq!(lag, 5, "{out}");

    // Started again, it writes every record again: five more writes.
    let mut daemon = common::Daemon::start(&text);
    assert_eq!(writes_reach(port, 5.0).await, 5.0, "log:\n{}", daemon.log());
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.terminate(WAIT);

    // `reset` removes the group's offsets: the sink starts from the earliest again.
    let (code, out, err) = command(&["offsets", "reset", "--pipeline", &name], &path);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    let (_, listed, _) = command(&["offsets", "list", "--pipeline", &name], &path);
    assert_eq!(listed.matches("committed none").count(), 2, "{listed}");
    let mut daemon = common::Daemon::start(&text);
    assert_eq!(writes_reach(port, 5.0).await, 5.0, "log:\n{}", daemon.log());
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

#[tokio::test]
async fn moving_positions_is_refused_while_a_daemon_runs_the_pipeline() {
    let db = common::unique("posdb");
    let source = common::unique("possrc");
    let sink = common::unique("possink");
    let topic = common::unique("posin");
    common::create_topic(&topic, 1).await;
    let _coll = collection(&db).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let text = common::config_toml(
        port,
        &format!(
            "{}\n{}",
            source_table(&source, &db),
            sink_table(&sink, &topic, &db)
        ),
    );
    let path = common::write_file(dir.path(), "bridge.toml", &text);
    let mut daemon = common::Daemon::start(&text);
    common::wait_for_status(port, "/ready", 200, WAIT);
    // Ready is not yet a member of each group: the source has its slots, the sink its
    // partition, once their groups assigned them.
    daemon.wait_for_log("source pipeline running", 1, WAIT);
    daemon.wait_for_log("partitions assigned", 1, WAIT);

    let source_group = format!("mongo-kafka-bridge-source-{source}");
    let sink_group = format!("mongo-kafka-bridge-{sink}");
    let refusals = [
        (
            vec!["checkpoints", "set", "--pipeline", &source, "--latest"],
            &source,
            &source_group,
        ),
        (
            vec!["checkpoints", "reset", "--pipeline", &source],
            &source,
            &source_group,
        ),
        (
            vec!["offsets", "set", "--pipeline", &sink, "--to-earliest"],
            &sink,
            &sink_group,
        ),
        (
            vec!["offsets", "reset", "--pipeline", &sink],
            &sink,
            &sink_group,
        ),
    ];
    for (args, pipeline, group) in &refusals {
        let (code, out, err) = command(args, &path);
        assert_eq!(
            code,
            Some(1),
            "{args:?} refused; stdout: {out}\nstderr: {err}"
        );
        assert!(
            err.contains(&format!("pipeline `{pipeline}` is running"))
                && err.contains(&format!("`{group}` has 1 live member(s)"))
                && err.contains("(client id `mongo-kafka-bridge")
                && err.contains("host `"),
            "{args:?}: the refusal names the group and its member: {err}"
        );
    }
    daemon.terminate(WAIT);
    // Stopped, the same commands go through.
    for (args, _, _) in &refusals {
        let (code, out, err) = command(args, &path);
        assert_eq!(
            code,
            Some(0),
            "{args:?} once stopped; stdout: {out}\nstderr: {err}"
        );
    }
    let _ = common::mongo_client().await.database(&db).drop().await;
}

#[tokio::test]
async fn a_source_set_back_to_an_earlier_token_publishes_what_followed_it_again() {
    let db = common::unique("posdb");
    let name = common::unique("possrc");
    let coll = collection(&db).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = common::config_toml(common::free_port(), &source_table(&name, &db));
    let path = common::write_file(dir.path(), "bridge.toml", &text);
    let topic = format!("{db}.c");

    let mut daemon = common::Daemon::start(&text);
    daemon.wait_for_log("change stream open", 1, WAIT);
    for id in 1..=3 {
        coll.insert_one(doc! { "_id": id }).await.expect("insert");
    }
    let first = common::consume_until(&topic, WAIT, false, |r| ids(r).contains(&3)).await;
    assert_eq!(ids(&first), [1, 2, 3], "log:\n{}", daemon.log());
    // The change event's `_id` is its resume token.
    let token = first[0].json()["_id"].to_string();
    assert!(token.contains("_data"), "a resume token: {token}");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    daemon.terminate(WAIT);

    let (code, out, err) = command(
        &[
            "checkpoints",
            "set",
            "--pipeline",
            &name,
            "--namespace",
            &format!("{db}.c"),
            "--token",
            &token,
        ],
        &path,
    );
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    let mut daemon = common::Daemon::start(&text);
    let all = common::consume_until(&topic, WAIT, false, |r| {
        ids(r).iter().filter(|&&id| id == 3).count() >= 2
    })
    .await;
    let all = ids(&all);
    assert_eq!(
        all,
        [1, 2, 3, 2, 3],
        "what followed the token is published again, not the change it names; log:\n{}",
        daemon.log()
    );
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

#[tokio::test]
async fn a_source_set_to_copy_copies_the_existing_documents_again() {
    let db = common::unique("posdb");
    let name = common::unique("possrc");
    let coll = collection(&db).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = common::config_toml(common::free_port(), &source_table(&name, &db));
    let path = common::write_file(dir.path(), "bridge.toml", &text);
    let topic = format!("{db}.c");

    let mut daemon = common::Daemon::start(&text);
    daemon.wait_for_log("change stream open", 1, WAIT);
    coll.insert_one(doc! { "_id": 1 }).await.expect("insert");
    let first = common::consume_until(&topic, WAIT, false, |r| ids(r).contains(&1)).await;
    assert_eq!(ids(&first), [1], "log:\n{}", daemon.log());
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    daemon.terminate(WAIT);

    let (code, out, err) = command(
        &["checkpoints", "set", "--pipeline", &name, "--copy"],
        &path,
    );
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    let mut daemon = common::Daemon::start(&text);
    let all = common::consume_until(&topic, WAIT, false, |r| {
        let ids = ids(r);
        ids.contains(&-1) && ids.iter().filter(|&&id| id == 1).count() >= 2
    })
    .await;
    let mut copied = ids(&all)[1..].to_vec();
    copied.sort_unstable();
    assert_eq!(
        copied,
        [-1, 1],
        "every existing document copied again; log:\n{}",
        daemon.log()
    );
    daemon.terminate(WAIT);
    let _ = common::mongo_client().await.database(&db).drop().await;
}

/// An exactly-once pipeline upgraded from the shared checkpoint topic resumes from its
/// checkpoints there while its own topic holds none: a reset removes them there too.
#[tokio::test]
async fn a_reset_removes_an_exactly_once_readers_checkpoint_from_the_shared_topic_too() {
    use mongo_kafka_bridge::config::SHARED_CHECKPOINT_TOPIC;
    use mongo_kafka_bridge::source::{checkpoint, slots};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let db = common::unique("posdb");
    let name = common::unique("posxo");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = common::config_toml(
        common::free_port(),
        &format!("{}delivery = \"exactly-once\"\n", source_table(&name, &db)),
    );
    let path = common::write_file(dir.path(), "bridge.toml", &text);
    let config = mongo_kafka_bridge::config::load(&path).expect("configuration");
    let source = &config.sources[0];
    let namespace = format!("{db}.c");
    checkpoint::ensure_topic(&config.kafka, SHARED_CHECKPOINT_TOPIC, 16)
        .await
        .expect("shared topic");
    let key = checkpoint::CheckpointKey {
        pipeline: name.clone(),
        namespace: namespace.clone(),
    };
    let (key, value) = (
        serde_json::to_vec(&key).expect("key"),
        br#"{"resume_token":{"_data":"8200000001"},"generation":3}"#.to_vec(),
    );
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::kafka_bootstrap())
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(SHARED_CHECKPOINT_TOPIC)
                .key(&key)
                .payload(&value)
                .partition(slots::slot_of(&name, &namespace, source.slots)),
            Duration::from_secs(10),
        )
        .await
        .expect("checkpoint written");

    let (code, listed, err) = command(&["checkpoints", "list", "--pipeline", &name], &path);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        listed.contains("8200000001"),
        "the shared topic's checkpoint: {listed}"
    );
    let (code, out, err) = command(&["checkpoints", "reset", "--pipeline", &name], &path);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(out.contains(SHARED_CHECKPOINT_TOPIC), "{out}");
    let (_, listed, _) = command(&["checkpoints", "list", "--pipeline", &name], &path);
    assert!(
        listed.contains("no checkpoint") && !listed.contains("8200000001"),
        "{listed}"
    );
}

#[tokio::test]
async fn offsets_move_to_the_latest_a_time_and_given_offsets() {
    let name = common::unique("possink");
    let topic = common::unique("posin");
    let db = common::unique("posdb");
    common::create_topic(&topic, 1).await;
    let records: Vec<common::Outgoing> = (0..5)
        .map(|i| {
            common::Outgoing::json(serde_json::json!({"_id": i}), serde_json::json!({"_id": i}))
        })
        .collect();
    common::produce(&topic, &records).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = common::config_toml(common::free_port(), &sink_table(&name, &topic, &db));
    let path = common::write_file(dir.path(), "bridge.toml", &text);
    let set = |to: &[&str]| {
        let mut args = vec!["offsets", "set", "--pipeline", name.as_str()];
        args.extend_from_slice(to);
        let (code, out, err) = command(&args, &path);
        assert_eq!(code, Some(0), "{to:?}: stdout: {out}\nstderr: {err}");
        out
    };
    let (_, listed, _) = command(&["offsets", "list", "--pipeline", &name], &path);
    assert!(listed.contains("committed none\tend 5\tlag 5"), "{listed}");
    let out = set(&["--to-latest"]);
    assert!(out.contains("committed 5\tend 5\tlag 0"), "{out}");
    let out = set(&["--topic", &topic, "--to-offset", "0:2"]);
    assert!(out.contains("committed 2\tend 5\tlag 3"), "{out}");
    let out = set(&["--to-timestamp", "0"]);
    assert!(out.contains("committed 0\tend 5\tlag 5"), "{out}");
    let out = set(&["--to-timestamp", "2999-01-01T00:00:00Z"]);
    assert!(
        out.contains("committed 5\tend 5\tlag 0"),
        "a time after every record: the end; {out}"
    );
    let (code, _, err) = command(
        &[
            "offsets",
            "set",
            "--pipeline",
            &name,
            "--topic",
            &topic,
            "--to-offset",
            "0:9",
        ],
        &path,
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "topic `{topic}` partition 0: offset 9 is outside 0..=5"
        )),
        "{err}"
    );
}
