//! Source options the MongoDB Kafka Connector has (`change.stream.show.expanded.events`,
//! `collation`, `startup.mode.copy.existing.allow.disk.use`) and an exclude list next to
//! `collection_regex` (`collection_exclude`). What each asks of MongoDB is checked on the
//! wire (a tap in front of the server reads the commands), which works on any server; what
//! the server then does with it is checked where the server has the feature, and skipped,
//! loudly, where it does not (the MongoDB stand-in has no collation and no expanded events;
//! a real replica set, `MONGODB_URI`, has both).

mod common;

use std::time::Duration;

use bson::{doc, Bson, Document};
use common::tap::Tap;

const WAIT: Duration = Duration::from_secs(60);

fn key_ids(records: &[common::Consumed]) -> Vec<i64> {
    let mut ids: Vec<i64> = records
        .iter()
        .filter_map(|r| r.key_json()["_id"].as_i64())
        .collect();
    ids.sort_unstable();
    ids
}

/// The daemon's configuration with MongoDB reached through `tap`.
fn through(tap: &Tap, pipelines: &str) -> String {
    let uri = common::mongodb_uri();
    let config = common::config_toml(common::free_port(), pipelines);
    config.replace(
        &format!("uri = \"{uri}\""),
        &format!(
            "uri = \"{}\"",
            common::proxy::mongodb_uri_through(&uri, tap.port())
        ),
    )
}

/// Whether the `aggregate` opens a change stream.
fn opens_a_change_stream(command: &Document) -> bool {
    command
        .get_array("pipeline")
        .ok()
        .and_then(|p| p.first())
        .and_then(Bson::as_document)
        .is_some_and(|stage| stage.contains_key("$changeStream"))
}

#[tokio::test]
async fn collation_expanded_events_and_disk_use_reach_the_server() {
    let db = common::unique("nsmap_opts");
    let client = common::mongo_client().await;
    for coll in ["c", "ddl"] {
        client
            .database(&db)
            .collection::<Document>(coll)
            .insert_one(doc! {"_id": 1})
            .await
            .unwrap_or_else(|e| panic!("seeding {db}.{coll}: {e}"));
    }
    let tap = Tap::start(&common::proxy::mongodb_target(&common::mongodb_uri()));
    let prefix = common::unique("nsmap_opts");
    // Expanded events in a pipeline of their own: a server before 6.0 refuses the change
    // stream that asks for them (`$changeStream.showExpandedEvents` unknown), and the copy
    // comes after the stream opened.
    let config = through(
        &tap,
        &format!(
            "[[source]]\nname = \"{}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
             topic_prefix = \"{prefix}\"\nstartup_mode = \"copy_existing\"\n\
             copy_existing_allow_disk_use = true\n\
             collation = '{{\"locale\": \"en\", \"strength\": 2}}'\nmax_await_time = \"200ms\"\n\
             [[source]]\nname = \"{}\"\ndatabase = \"{db}\"\ncollection = \"ddl\"\n\
             topic_prefix = \"{prefix}\"\nshow_expanded_events = true\nmax_await_time = \"200ms\"\n",
            common::unique("nsmap_opts"),
            common::unique("nsmap_ddl"),
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    let on = |coll: &'static str, stream: bool| {
        tap.commands("aggregate").into_iter().filter(move |c| {
            c.get_str("aggregate") == Ok(coll) && opens_a_change_stream(c) == stream
        })
    };
    let seen = common::eventually(WAIT, || async {
        on("c", true).next().is_some()
            && on("c", false).next().is_some()
            && on("ddl", true).next().is_some()
    })
    .await;
    assert!(
        seen,
        "no copy and change stream aggregates; log:\n{}",
        daemon.log()
    );
    let records = common::consume(&format!("{prefix}.{db}.c"), 1, WAIT, false).await;
    assert_eq!(key_ids(&records), [1], "the copy; log:\n{}", daemon.log());
    let change_stream = |command: &Document| -> Option<Document> {
        command
            .get_array("pipeline")
            .ok()
            .and_then(|p| p.first())
            .and_then(Bson::as_document)
            .and_then(|s| s.get_document("$changeStream").ok())
            .cloned()
    };
    for command in on("c", true) {
        assert_eq!(
            command.get_document("collation").ok(),
            Some(&doc! {"locale": "en", "strength": 2}),
            "{command}"
        );
        assert!(change_stream(&command).is_some_and(|s| !s.contains_key("showExpandedEvents")));
    }
    for command in on("c", false) {
        assert_eq!(command.get_bool("allowDiskUse"), Ok(true), "{command}");
        // Collation is the change stream's only, as in the connector.
        assert!(!command.contains_key("collation"), "{command}");
    }
    for command in on("ddl", true) {
        assert_eq!(
            change_stream(&command).and_then(|s| s.get_bool("showExpandedEvents").ok()),
            Some(true),
            "{command}"
        );
        assert!(!command.contains_key("collation"), "{command}");
    }
    daemon.terminate(WAIT);
    client.database(&db).drop().await.expect("drop");
}

#[tokio::test]
async fn disk_use_can_be_turned_off_and_is_on_by_default_as_in_the_connector() {
    let db = common::unique("nsmap_disk");
    let client = common::mongo_client().await;
    for coll in ["on", "off"] {
        client
            .database(&db)
            .collection::<Document>(coll)
            .insert_one(doc! {"_id": 1})
            .await
            .unwrap_or_else(|e| panic!("seeding {db}.{coll}: {e}"));
    }
    let tap = Tap::start(&common::proxy::mongodb_target(&common::mongodb_uri()));
    let prefix = common::unique("nsmap_disk");
    let config = through(
        &tap,
        &format!(
            "[[source]]\nname = \"{}\"\ndatabase = \"{db}\"\ncollection = \"on\"\ntopic_prefix = \"{prefix}\"\n\
             startup_mode = \"copy_existing\"\nmax_await_time = \"200ms\"\n\
             [[source]]\nname = \"{}\"\ndatabase = \"{db}\"\ncollection = \"off\"\ntopic_prefix = \"{prefix}\"\n\
             startup_mode = \"copy_existing\"\ncopy_existing_allow_disk_use = false\nmax_await_time = \"200ms\"\n",
            common::unique("nsmap_on"),
            common::unique("nsmap_off"),
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    for coll in ["on", "off"] {
        let records = common::consume(&format!("{prefix}.{db}.{coll}"), 1, WAIT, false).await;
        assert_eq!(key_ids(&records), [1], "{coll}; log:\n{}", daemon.log());
    }
    let copies = |coll: &str| -> Vec<Document> {
        tap.commands("aggregate")
            .into_iter()
            .filter(|c| c.get_str("aggregate") == Ok(coll) && !opens_a_change_stream(c))
            .collect()
    };
    assert!(!copies("on").is_empty() && !copies("off").is_empty());
    for command in copies("on") {
        assert_eq!(command.get_bool("allowDiskUse"), Ok(true), "{command}");
    }
    for command in copies("off") {
        assert_eq!(command.get_bool("allowDiskUse"), Ok(false), "{command}");
    }
    daemon.terminate(WAIT);
    client.database(&db).drop().await.expect("drop");
}

#[tokio::test]
async fn excluded_collections_are_neither_copied_nor_streamed() {
    let db = common::unique("nsmap_excl");
    let client = common::mongo_client().await;
    let orders = client.database(&db).collection::<Document>("orders");
    let audit = client.database(&db).collection::<Document>("audit");
    let other_audit = client.database(&db).collection::<Document>("audit_old");
    orders.insert_one(doc! {"_id": 1}).await.expect("seed");
    audit.insert_one(doc! {"_id": 2}).await.expect("seed");
    other_audit.insert_one(doc! {"_id": 5}).await.expect("seed");
    let prefix = common::unique("nsmap_excl");
    let config = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{}\"\ndatabase = \"{db}\"\ncollection_regex = \"^(orders|audit)\"\n\
             collection_exclude = [\"audit\"]\ntopic_prefix = \"{prefix}\"\n\
             startup_mode = \"copy_existing\"\nmax_await_time = \"200ms\"\n",
            common::unique("nsmap_excl"),
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    orders.insert_one(doc! {"_id": 3}).await.expect("insert");
    audit.insert_one(doc! {"_id": 4}).await.expect("insert");
    other_audit
        .insert_one(doc! {"_id": 6})
        .await
        .expect("insert");
    let records = common::consume(&format!("{prefix}.{db}.orders"), 2, WAIT, false).await;
    assert_eq!(key_ids(&records), [1, 3], "log:\n{}", daemon.log());
    // Only the name given is excluded: `audit_old` matches the regex and is read.
    let records = common::consume(&format!("{prefix}.{db}.audit_old"), 2, WAIT, false).await;
    assert_eq!(key_ids(&records), [5, 6], "log:\n{}", daemon.log());
    let none = common::consume(
        &format!("{prefix}.{db}.audit"),
        1,
        Duration::from_secs(3),
        false,
    )
    .await;
    assert!(
        none.is_empty(),
        "the excluded collection was read: {none:?}"
    );
    daemon.terminate(WAIT);
    client.database(&db).drop().await.expect("drop");
}

/// Whether the server compares strings with a collation (the stand-in ignores it).
async fn honours_collation(client: &mongodb::Client, db: &str) -> bool {
    let probe = client
        .database(db)
        .collection::<Document>("collation_probe");
    if probe.insert_one(doc! {"name": "ABC"}).await.is_err() {
        return false;
    }
    let collation = mongodb::options::Collation::builder()
        .locale("en")
        .strength(mongodb::options::CollationStrength::Secondary)
        .build();
    probe
        .find_one(doc! {"name": "abc"})
        .collation(collation)
        .await
        .ok()
        .flatten()
        .is_some()
}

#[tokio::test]
async fn collation_applies_to_the_change_streams_stages() {
    let db = common::unique("nsmap_coll");
    let client = common::mongo_client().await;
    if !honours_collation(&client, &db).await {
        eprintln!(
            "SKIPPED collation_applies_to_the_change_streams_stages: the MongoDB server at {} \
             does not compare strings by collation (the stand-in has no collation); the option \
             reaching the server is checked by collation_expanded_events_and_disk_use_reach_the_server",
            common::mongodb_uri()
        );
        client.database(&db).drop().await.expect("drop");
        return;
    }
    let people = client.database(&db).collection::<Document>("people");
    let prefix = common::unique("nsmap_coll");
    let config = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{}\"\ndatabase = \"{db}\"\ncollection = \"people\"\n\
             topic_prefix = \"{prefix}\"\nmax_await_time = \"200ms\"\n\
             pipeline = '[{{\"$match\": {{\"fullDocument.name\": \"abc\"}}}}]'\n\
             collation = '{{\"locale\": \"en\", \"strength\": 2}}'\n",
            common::unique("nsmap_coll"),
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    people
        .insert_one(doc! {"_id": 1, "name": "ABC"})
        .await
        .expect("insert");
    people
        .insert_one(doc! {"_id": 2, "name": "xyz"})
        .await
        .expect("insert");
    people
        .insert_one(doc! {"_id": 3, "name": "abc"})
        .await
        .expect("insert");
    let records = common::consume(&format!("{prefix}.{db}.people"), 2, WAIT, false).await;
    assert_eq!(key_ids(&records), [1, 3], "log:\n{}", daemon.log());
    daemon.terminate(WAIT);
    client.database(&db).drop().await.expect("drop");
}

#[tokio::test]
async fn expanded_events_reach_the_topic() {
    let db = common::unique("nsmap_ddl");
    let client = common::mongo_client().await;
    // `hello` (MongoDB 4.4.2+), else the older `isMaster` (the stand-in knows only that).
    let admin = client.database("admin");
    let hello = match admin.run_command(doc! {"hello": 1}).await {
        Ok(reply) => reply,
        Err(_) => admin
            .run_command(doc! {"isMaster": 1})
            .await
            .unwrap_or_else(|e| panic!("isMaster: {e}")),
    };
    let wire = hello.get_i32("maxWireVersion").unwrap_or_default();
    // MongoDB 6.0 (wire version 17) added expanded events.
    if wire < 17 {
        eprintln!(
            "SKIPPED expanded_events_reach_the_topic: the MongoDB server at {} has wire version \
             {wire}; expanded events (createIndexes, ...) need MongoDB 6.0 (17); the option \
             reaching the server is checked by collation_expanded_events_and_disk_use_reach_the_server",
            common::mongodb_uri()
        );
        return;
    }
    let coll = client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1}).await.expect("seed");
    let prefix = common::unique("nsmap_ddl");
    let config = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
             topic_prefix = \"{prefix}\"\nmax_await_time = \"200ms\"\nshow_expanded_events = true\n",
            common::unique("nsmap_ddl"),
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    coll.create_index(
        mongodb::IndexModel::builder()
            .keys(doc! {"name": 1})
            .build(),
    )
    .await
    .expect("createIndexes");
    let records = common::consume_until(&format!("{prefix}.{db}.c"), WAIT, false, |r| {
        r.iter()
            .any(|r| r.value.is_some() && r.json()["operationType"] == "createIndexes")
    })
    .await;
    assert!(
        records
            .iter()
            .any(|r| r.value.is_some() && r.json()["operationType"] == "createIndexes"),
        "no createIndexes event: {records:?}; log:\n{}",
        daemon.log()
    );
    daemon.terminate(WAIT);
    client.database(&db).drop().await.expect("drop");
}
