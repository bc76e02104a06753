//! `create_topics` for every scope, as Kafka Connect's `topic.creation.*`: the topics of a
//! database-wide and a deployment-wide stream (named from each event's namespace) are created
//! before their first record, with `topic_partitions`, `topic_config` and the settings of the
//! first `topic_creation_groups` entry whose `include` matches the topic.
//!
//! The shared test broker auto-creates topics (`auto.create.topics.enable=true`,
//! `num.partitions=1`, no topic config): these tests tell our creation apart by a partition
//! count and configs the broker's auto-creation does not give.

mod common;

use std::time::Duration;

use bson::{doc, Document};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

const WAIT: Duration = Duration::from_secs(60);

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", common::kafka_bootstrap())
        .create()
        .unwrap_or_else(|e| panic!("admin client: {e}"))
}

/// The topic's config entry `name`, as `describe_configs` says.
async fn topic_config(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    name: &str,
) -> Option<String> {
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .unwrap_or_else(|e| panic!("describe {topic}: {e}"));
    match described.into_iter().next() {
        Some(Ok(resource)) => resource.get(name).and_then(|e| e.value.clone()),
        other => panic!("describe {topic}: {other:?}"),
    }
}

async fn insert(client: &mongodb::Client, db: &str, coll: &str, id: i64) {
    let coll = client.database(db).collection::<Document>(coll);
    coll.insert_one(doc! {"_id": id})
        .await
        .unwrap_or_else(|e| panic!("insert into {}: {e}", coll.namespace()));
}

/// Waits for the event of `_id` `id` in `topic`.
async fn arrived(daemon: &common::Daemon, topic: &str, id: i64) {
    let records = common::consume(topic, 1, WAIT, false).await;
    let ids: Vec<i64> = records
        .iter()
        .filter_map(|r| r.key_json()["_id"].as_i64())
        .collect();
    assert_eq!(ids, [id], "topic {topic}; log:\n{}", daemon.log());
}

/// Two pipelines, one watching a database, one the deployment (narrowed to one database by
/// `pipeline`), each with its own topic prefix.
fn pipelines(db: &str, deployment_db: &str, prefixes: [&str; 2], settings: &str) -> String {
    format!(
        r#"[[source]]
name = "{name_db}"
database = "{db}"
max_await_time = "200ms"
topic_prefix = "{p0}"
create_topics = true
{settings}
[[source]]
name = "{name_all}"
max_await_time = "200ms"
topic_prefix = "{p1}"
pipeline = '[{{"$match": {{"ns.db": "{deployment_db}"}}}}]'
create_topics = true
{settings}
"#,
        name_db = common::unique("sourcecompat_tc_dbpipe"),
        name_all = common::unique("sourcecompat_tc_allpipe"),
        p0 = prefixes[0],
        p1 = prefixes[1],
    )
}

/// A database-wide and a deployment-wide stream with `create_topics` and
/// `topic_partitions = 3`: their topics, which only the events name, have three partitions
/// (the broker's auto-creation gives one) and every event arrived.
#[tokio::test]
async fn sourcecompat_database_and_deployment_streams_create_their_topics() {
    let db = common::unique("sourcecompat_tcdb");
    let deployment_db = common::unique("sourcecompat_tcall");
    let p0 = common::unique("sourcecompat_tcp0");
    let p1 = common::unique("sourcecompat_tcp1");
    let client = common::mongo_client().await;
    let port = common::free_port();
    // -1: the broker's default replication factor, as Kafka Connect's.
    let text = pipelines(
        &db,
        &deployment_db,
        [&p0, &p1],
        "topic_partitions = 3\ntopic_replication_factor = -1",
    );
    let mut daemon = common::Daemon::start(&common::config_toml(port, &text));
    daemon.wait_for_log("change stream open", 2, WAIT);
    insert(&client, &db, "orders", 1).await;
    insert(&client, &deployment_db, "orders", 2).await;
    for (topic, id) in [
        (format!("{p0}.{db}.orders"), 1),
        (format!("{p1}.{deployment_db}.orders"), 2),
    ] {
        arrived(&daemon, &topic, id).await;
        assert_eq!(
            common::partition_count(&topic),
            3,
            "{topic} was not created by the daemon with `topic_partitions = 3` (the broker's auto-creation gives 1); log:\n{}",
            daemon.log()
        );
    }
    daemon.terminate(WAIT);
    for db in [&db, &deployment_db] {
        client.database(db).drop().await.expect("drop");
    }
}

/// `topic_config` and `topic_creation_groups`: a topic matched by a group's `include` (and
/// not its `exclude`) takes the group's partitions and config (not `topic_config`, as Kafka
/// Connect's groups do not inherit the default group's topic configs); the others take
/// `topic_partitions` and `topic_config`. Checked through the admin API for a database-wide
/// and a deployment-wide stream, every event arrived.
#[tokio::test]
async fn sourcecompat_topic_config_and_groups_apply_to_every_scope() {
    let db = common::unique("sourcecompat_tcgdb");
    let deployment_db = common::unique("sourcecompat_tcgall");
    let p0 = common::unique("sourcecompat_tcgp0");
    let p1 = common::unique("sourcecompat_tcgp1");
    let client = common::mongo_client().await;
    let port = common::free_port();
    let settings = r#"topic_partitions = 3
topic_config = { "cleanup.policy" = "compact", "retention.ms" = 3600000 }
[[source.topic_creation_groups]]
name = "audit"
include = ['.*\.audit.*']
exclude = ['.*\.audit_skip']
partitions = 2
config = { "compression.type" = "gzip" }"#;
    let text = pipelines(&db, &deployment_db, [&p0, &p1], settings);
    let mut daemon = common::Daemon::start(&common::config_toml(port, &text));
    daemon.wait_for_log("change stream open", 2, WAIT);
    let mut id = 0;
    let mut expected = Vec::new();
    for (prefix, database) in [(&p0, &db), (&p1, &deployment_db)] {
        for coll in ["orders", "audit", "audit_skip"] {
            id += 1;
            insert(&client, database, coll, id).await;
            expected.push((format!("{prefix}.{database}.{coll}"), id, coll));
        }
    }
    let admin = admin();
    for (topic, id, coll) in &expected {
        arrived(&daemon, topic, *id).await;
        let (want_partitions, cleanup, compression, retention) = if *coll == "audit" {
            (2, "delete", "gzip", None)
        } else {
            (3, "compact", "producer", Some("3600000"))
        };
        assert_eq!(
            common::partition_count(topic),
            want_partitions,
            "{topic}: partitions; log:\n{}",
            daemon.log()
        );
        assert_eq!(
            topic_config(&admin, topic, "cleanup.policy")
                .await
                .as_deref(),
            Some(cleanup),
            "{topic}: cleanup.policy"
        );
        assert_eq!(
            topic_config(&admin, topic, "compression.type")
                .await
                .as_deref(),
            Some(compression),
            "{topic}: compression.type"
        );
        if let Some(retention) = retention {
            assert_eq!(
                topic_config(&admin, topic, "retention.ms").await.as_deref(),
                Some(retention),
                "{topic}: retention.ms"
            );
        }
    }
    daemon.terminate(WAIT);
    for db in [&db, &deployment_db] {
        client.database(db).drop().await.expect("drop");
    }
}

/// A topic the broker refuses to create (here a config value it rejects; an authorisation or
/// policy refusal is mapped alike) stops the pipeline before any record goes to it, as Kafka
/// Connect fails the task: `/ready` names the topic and the reason, the refusal is counted,
/// and nothing was produced (the broker's auto-creation did not step in either).
#[tokio::test]
async fn sourcecompat_a_topic_the_broker_refuses_stops_the_pipeline_naming_it() {
    let db = common::unique("sourcecompat_tcrdb");
    let prefix = common::unique("sourcecompat_tcrp");
    let client = common::mongo_client().await;
    let port = common::free_port();
    let name = common::unique("sourcecompat_tcr_pipe");
    let text = format!(
        r#"[[source]]
name = "{name}"
database = "{db}"
max_await_time = "200ms"
topic_prefix = "{prefix}"
create_topics = true
topic_config = {{ "cleanup.policy" = "shredded" }}
"#
    );
    let mut daemon = common::Daemon::start(&common::config_toml(port, &text));
    daemon.wait_for_log("change stream open", 1, WAIT);
    insert(&client, &db, "orders", 1).await;
    let topic = format!("{prefix}.{db}.orders");
    let body = common::wait_for_status(port, "/ready", 503, WAIT);
    assert!(
        body.contains(&format!("the broker refused to create the topic `{topic}`")),
        "/ready: {body}; log:\n{}",
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .contains("the broker refused to create the topic"),
        "no WARN; log:\n{}",
        daemon.log()
    );
    assert_eq!(
        common::metric_with(
            port,
            "mkb_source_topic_creations_total",
            &[&format!("pipeline=\"{name}\""), "outcome=\"refused\""]
        ),
        1.0
    );
    assert_eq!(common::partition_count(&topic), 0, "{topic} exists");
    daemon.terminate(WAIT);
    client.database(&db).drop().await.expect("drop");
}
