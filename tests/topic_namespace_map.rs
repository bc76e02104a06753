//! `topic_namespace_map` routes as the MongoDB Kafka Connector's `topic.namespace.map`,
//! end to end: changes written to MongoDB arrive in the topics the connector's rules name
//! (exact keys, then database-only keys, then regex keys in the order written, then `*`).
//! The rules themselves are unit-tested with the connector's examples in `src/source/topic.rs`.

mod common;

use std::time::Duration;

use bson::{doc, Document};

const WAIT: Duration = Duration::from_secs(60);

fn key_ids(records: &[common::Consumed]) -> Vec<i64> {
    records
        .iter()
        .map(|r| {
            r.key_json()["_id"]
                .as_i64()
                .unwrap_or_else(|| panic!("key {}", r.key_json()))
        })
        .collect()
}

#[tokio::test]
async fn changes_arrive_in_the_topics_the_connector_would_choose() {
    let cars = common::unique("nsmap_cars");
    let vertical = common::unique("nsmap_vert");
    let other = common::unique("nsmap_other");
    let t = common::unique("nsmap_t");
    let client = common::mongo_client().await;
    let insert = |db: &str, coll: &str, id: i64| {
        let coll = client.database(db).collection::<Document>(coll);
        async move {
            coll.insert_one(doc! {"_id": id})
                .await
                .unwrap_or_else(|e| panic!("insert into {}: {e}", coll.namespace()));
        }
    };
    // The connector documentation's examples ("Topic Naming"), with this test's names; the
    // `/{vertical}\.z.*` key comes first in the file, though last by its text, and wins.
    let pipelines = format!(
        r#"[[source]]
name = "{name}"
max_await_time = "200ms"
pipeline = '[{{"$match": {{"ns.db": {{"$in": ["{cars}", "{vertical}", "{other}"]}}}}}}]'
[source.topic_namespace_map]
"{cars}" = "{t}_automobiles"
"{cars}.ev" = "{t}_electricVehicles"
"/{vertical}\\.z.*" = "{t}_zfirst{{sep_coll}}"
"/{vertical}(?:\\..*)?" = "{t}_industrial{{sep_coll}}"
"{vertical}.health" = "{t}_healthcare"
"*" = "{t}_otherVehicles"
"#,
        name = common::unique("nsmap_pipe"),
    );
    let port = common::free_port();
    let mut daemon = common::Daemon::start(&common::config_toml(port, &pipelines));
    daemon.wait_for_log("change stream open", 1, WAIT);
    insert(&cars, "ev", 1).await;
    insert(&cars, "sedans", 2).await;
    insert(&vertical, "health", 3).await;
    insert(&vertical, "wasteManagement", 4).await;
    insert(&vertical, "zeta", 5).await;
    insert(&other, "boats", 6).await;

    for (topic, id) in [
        (format!("{t}_electricVehicles"), 1),
        (format!("{t}_automobiles.sedans"), 2),
        (format!("{t}_healthcare"), 3),
        (format!("{t}_industrial.wasteManagement"), 4),
        (format!("{t}_zfirst.zeta"), 5),
        (format!("{t}_otherVehicles"), 6),
    ] {
        let records = common::consume(&topic, 1, WAIT, false).await;
        assert_eq!(
            key_ids(&records),
            [id],
            "topic {topic}; log:\n{}",
            daemon.log()
        );
    }
    // Nothing went to the names the rules replace.
    for topic in [
        format!("{cars}.sedans"),
        format!("{t}_industrial.zeta"),
        format!("{other}.boats"),
    ] {
        let none = common::consume(&topic, 1, Duration::from_secs(2), false).await;
        assert!(none.is_empty(), "{topic}: {none:?}");
    }
    daemon.terminate(WAIT);
    for db in [&cars, &vertical, &other] {
        client.database(db).drop().await.expect("drop");
    }
}

/// Keys the connector would read otherwise are accepted and warned about, each named.
#[test]
fn check_config_warns_about_keys_the_connector_reads_otherwise() {
    let text = common::config_toml(
        common::free_port(),
        "[[source]]\nname = \"nsmap_warn\"\n[source.topic_namespace_map]\n\"/^logs\\\\./\" = \"logs\"\n\"shop.*\" = \"shop\"\n\"a.b*\" = \"ab\"\n\"crm\" = \"people\"\n",
    );
    let (code, _, stderr) = common::run_to_end("check-config", &text, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    for key in ["/^logs\\./", "shop.*", "a.b*"] {
        assert!(
            stderr.contains(&format!(
                "warning: key `source[0].topic_namespace_map.\"{key}\"`"
            )),
            "no warning about `{key}`:\n{stderr}"
        );
    }
    assert!(!stderr.contains("\"crm\"`"), "{stderr}");
}
