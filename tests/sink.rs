//! Sink pipelines end to end: the tests produce records to Kafka, the daemon binary writes
//! them to MongoDB, and the tests read the collections (and the dead letter topic) back.

mod common;

use std::time::Duration;

use common::sink::{header, header_i64, Sink, WAIT};
use common::Outgoing;
use mongodb::bson::{doc, Bson, Document};
use serde_json::json;

fn keyed(id: i64, value: serde_json::Value) -> Outgoing {
    Outgoing::json(json!({ "_id": id }), value)
}

#[tokio::test]
async fn the_last_write_per_key_wins_and_offsets_follow_the_writes() {
    let sink = Sink::new(4, "id_strategy = \"provided_in_key\"").await;
    let daemon = sink.start();
    // Three versions of 300 documents, spread over 4 partitions by key.
    let mut records = Vec::new();
    for version in 1..=3 {
        for id in 0..300 {
            records.push(keyed(id, json!({ "n": id, "version": version })));
        }
    }
    common::produce(&sink.topic, &records).await;
    let arrived = common::eventually(WAIT, || async {
        let docs = sink.documents().await;
        docs.len() == 300 && docs.values().all(|d| d.get_i32("version").ok() == Some(3))
    })
    .await;
    let docs = sink.documents().await;
    assert!(
        arrived,
        "{} documents, versions {:?}; log:\n{}",
        docs.len(),
        docs.values()
            .filter(|d| d.get_i32("version").ok() != Some(3))
            .take(5)
            .collect::<Vec<_>>(),
        daemon.log()
    );
    assert_eq!(docs["0"], doc! { "_id": 0, "n": 0, "version": 3 });
    // Offsets are committed once written: all 900 records, over the 4 partitions.
    sink.assert_committed(4, 900).await;
    sink.stop(daemon).await;
}

#[tokio::test]
async fn poison_records_are_dead_lettered_with_headers_and_the_rest_is_written() {
    let dlq = common::unique("dlq");
    let sink = Sink::new(
        1,
        &format!(
            "id_strategy = \"provided_in_key\"\nerrors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}"
        ),
    )
    .await;
    let daemon = sink.start();
    let deep = "[".repeat(5000) + &"]".repeat(5000);
    let records = vec![
        keyed(1, json!({"ok": 1})),
        Outgoing {
            key: Some(br#"{"_id": 2}"#.to_vec()),
            value: Some(b"{not json".to_vec()),
            ..Outgoing::default()
        },
        keyed(3, json!({"ok": 3})),
        Outgoing {
            key: Some(br#"{"_id": 4}"#.to_vec()),
            value: Some(format!("{{\"deep\": {deep}}}").into_bytes()),
            ..Outgoing::default()
        },
        // The key lacks the `_id` the strategy reads.
        Outgoing::json(json!({"id": 5}), json!({"ok": 5})),
        Outgoing {
            key: Some(br#"{"_id": 6}"#.to_vec()),
            value: Some(br#"[1, 2]"#.to_vec()),
            ..Outgoing::default()
        },
        Outgoing {
            headers: vec![("garbage".into(), vec![0xff, 0x00, 0xfe])],
            ..keyed(7, json!({"ok": 7}))
        },
        Outgoing {
            key: Some(br#"{"_id": 8}"#.to_vec()),
            value: Some(Vec::new()),
            ..Outgoing::default()
        },
        keyed(9, json!({"ok": 9})),
    ];
    common::produce(&sink.topic, &records).await;
    let count = sink.wait_for_count(4).await;
    let docs = sink.documents().await;
    assert_eq!(
        docs.keys().cloned().collect::<Vec<_>>(),
        ["1", "3", "7", "9"],
        "{count} documents; log:\n{}",
        daemon.log()
    );
    let dead = common::consume(&dlq, 5, WAIT, false).await;
    assert_eq!(dead.len(), 5, "log:\n{}", daemon.log());
    let offsets: Vec<i64> = dead
        .iter()
        .map(|r| header_i64(r, "mkb.source.offset"))
        .collect();
    assert_eq!(offsets, [1, 3, 4, 5, 7]);
    // Records go to the dead letter topic as they were read.
    assert_eq!(dead[0].value.as_deref(), Some(&b"{not json"[..]));
    assert_eq!(dead[0].key.as_deref(), Some(&br#"{"_id": 2}"#[..]));
    let stages: Vec<String> = dead.iter().map(|r| header(r, "mkb.error.stage")).collect();
    assert_eq!(stages, ["decode", "decode", "id", "decode", "decode"]);
    assert!(header(&dead[2], "mkb.error").contains("_id"), "{dead:?}");
    assert_eq!(header(&dead[0], "mkb.source.topic"), sink.topic);
    sink.stop(daemon).await;
}

#[tokio::test]
async fn a_poison_record_stops_the_pipeline_by_default_and_names_it() {
    let sink = Sink::new(1, "id_strategy = \"provided_in_key\"").await;
    let daemon = sink.start();
    common::produce(
        &sink.topic,
        &[
            keyed(1, json!({"ok": 1})),
            Outgoing {
                key: Some(br#"{"_id": 2}"#.to_vec()),
                value: Some(b"{not json".to_vec()),
                ..Outgoing::default()
            },
            keyed(3, json!({"ok": 3})),
        ],
    )
    .await;
    let body = common::wait_for_status(sink.port, "/ready", 503, WAIT);
    let position = format!("{}/0@1", sink.topic);
    assert!(body.contains(&position), "{body}");
    assert!(daemon.log().contains(&position), "{}", daemon.log());
    // The record before it is written and committed; the bad one is not.
    assert_eq!(sink.wait_for_count(1).await, 1);
    let committed = common::eventually(WAIT, || async {
        common::committed_offsets(&sink.group(), &sink.topic, 1) == [Some(1)]
    })
    .await;
    assert!(
        committed,
        "{:?}",
        common::committed_offsets(&sink.group(), &sink.topic, 1)
    );
    sink.stop(daemon).await;
}

#[tokio::test]
async fn every_id_strategy_sets_the_id_it_promises() {
    let cases: [(&str, &str); 7] = [
        ("object_id", ""),
        ("kafka_meta", ""),
        ("full_key", ""),
        ("partial_key", "id_fields = [\"k.a\"]"),
        ("partial_value", "id_fields = [\"sku\"]"),
        ("provided_in_value", ""),
        ("uuid", ""),
    ];
    for (strategy, extra) in cases {
        let sink = Sink::new(1, &format!("id_strategy = \"{strategy}\"\n{extra}")).await;
        let daemon = sink.start();
        common::produce(
            &sink.topic,
            &[Outgoing::json(
                json!({"k": {"a": 1, "b": 2}}),
                if strategy == "provided_in_value" {
                    json!({"_id": "given", "sku": "X-1", "qty": 5})
                } else {
                    json!({"sku": "X-1", "qty": 5})
                },
            )],
        )
        .await;
        assert_eq!(
            sink.wait_for_count(1).await,
            1,
            "{strategy}; log:\n{}",
            daemon.log()
        );
        let docs = sink.documents().await;
        let stored = docs.values().next().expect("a document");
        let id = stored.get("_id").expect("an _id").clone();
        match strategy {
            "object_id" => assert!(matches!(id, Bson::ObjectId(_)), "{id}"),
            "kafka_meta" => assert_eq!(id, Bson::String(format!("{}-0-0", sink.topic))),
            "full_key" => assert_eq!(id, Bson::Document(doc! {"k": {"a": 1, "b": 2}})),
            "partial_key" => assert_eq!(id, Bson::Document(doc! {"k": {"a": 1}})),
            "partial_value" => assert_eq!(id, Bson::Document(doc! {"sku": "X-1"})),
            "provided_in_value" => assert_eq!(id, Bson::String("given".into())),
            "uuid" => assert!(matches!(&id, Bson::String(s) if s.len() == 36), "{id}"),
            _ => unreachable!(),
        }
        assert_eq!(stored.get_i32("qty").ok(), Some(5), "{strategy}: {stored}");
        sink.stop(daemon).await;
    }
}

#[tokio::test]
async fn write_models_and_post_processors_shape_the_documents() {
    // update_one_timestamps keeps _insertedTS and moves _modifiedTS.
    let sink = Sink::new(
        1,
        "id_strategy = \"provided_in_value\"\nwrite_model = \"update_one_timestamps\"\nvalue_block_fields = [\"secret\"]\nfield_renames = { \"name\" = \"title\" }\nkafka_metadata_field = \"_kafka\"",
    )
    .await;
    let daemon = sink.start();
    common::produce(
        &sink.topic,
        &[
            Outgoing::json(
                json!(null),
                json!({"_id": 1, "name": "a", "secret": "s", "n": 1}),
            ),
            Outgoing::json(
                json!(null),
                json!({"_id": 1, "name": "b", "secret": "s", "m": 2}),
            ),
        ],
    )
    .await;
    let done = common::eventually(WAIT, || async {
        sink.documents()
            .await
            .get("1")
            .is_some_and(|d| d.get_str("title").ok() == Some("b"))
    })
    .await;
    let docs = sink.documents().await;
    assert!(done, "{docs:?}; log:\n{}", daemon.log());
    let stored = &docs["1"];
    assert_eq!(
        stored.get_i32("n").ok(),
        Some(1),
        "$set keeps other fields: {stored}"
    );
    assert_eq!(stored.get_i32("m").ok(), Some(2));
    assert!(stored.get("secret").is_none(), "{stored}");
    assert!(stored.get("name").is_none(), "{stored}");
    let inserted = stored.get_datetime("_insertedTS").expect("_insertedTS");
    let modified = stored.get_datetime("_modifiedTS").expect("_modifiedTS");
    assert!(modified >= inserted);
    let meta = stored.get_document("_kafka").expect("_kafka");
    assert_eq!(meta.get_str("topic").ok(), Some(sink.topic.as_str()));
    assert_eq!(
        meta.get_i64("offset")
            .ok()
            .or(meta.get_i32("offset").ok().map(i64::from)),
        Some(1)
    );
    sink.stop(daemon).await;

    // replace_business_key, delete_on_null_values, insert_one and delete_one.
    let sink = Sink::new(
        1,
        "write_model = \"replace_business_key\"\nbusiness_key_fields = [\"sku\"]\ndelete_on_null_values = true",
    )
    .await;
    let daemon = sink.start();
    common::produce(
        &sink.topic,
        &[
            Outgoing::json(json!({"_id": "k1"}), json!({"sku": "A", "qty": 1})),
            Outgoing::json(json!({"_id": "k2"}), json!({"sku": "A", "qty": 2})),
            Outgoing::json(json!({"_id": "k3"}), json!({"sku": "B", "qty": 3})),
        ],
    )
    .await;
    let done = common::eventually(WAIT, || async {
        let docs = sink.documents().await;
        docs.len() == 2
            && docs
                .values()
                .any(|d| d.get_str("sku").ok() == Some("A") && d.get_i32("qty").ok() == Some(2))
    })
    .await;
    assert!(done, "{:?}; log:\n{}", sink.documents().await, daemon.log());
    sink.stop(daemon).await;

    let sink = Sink::new(
        1,
        "id_strategy = \"provided_in_key\"\ndelete_on_null_values = true",
    )
    .await;
    let daemon = sink.start();
    common::produce(
        &sink.topic,
        &[
            keyed(1, json!({"v": 1})),
            keyed(2, json!({"v": 2})),
            Outgoing {
                key: Some(br#"{"_id": 1}"#.to_vec()),
                value: None,
                ..Outgoing::default()
            },
        ],
    )
    .await;
    let done = common::eventually(WAIT, || async {
        sink.documents().await.keys().cloned().collect::<Vec<_>>() == ["2"]
    })
    .await;
    assert!(done, "{:?}; log:\n{}", sink.documents().await, daemon.log());
    sink.stop(daemon).await;
}

#[tokio::test]
async fn sigkill_mid_load_then_restart_writes_every_record_once() {
    let sink = Sink::new(3, "id_strategy = \"provided_in_key\"\nmax_batch_size = 50").await;
    let daemon = sink.start();
    let records: Vec<Outgoing> = (0..3000).map(|id| keyed(id, json!({"n": id}))).collect();
    let (first, second) = records.split_at(1500);
    common::produce(&sink.topic, first).await;
    // Kill once some, not all, are written.
    let coll = sink.collection().await;
    common::eventually(WAIT, || {
        let coll = coll.clone();
        async move { coll.count_documents(doc! {}).await.unwrap_or(0) >= 300 }
    })
    .await;
    daemon.signal("KILL");
    let mut daemon = daemon;
    daemon.wait(WAIT);
    common::produce(&sink.topic, second).await;
    let restarted = sink.start();
    let count = sink.wait_for_count(3000).await;
    // Upserts by _id: a record written twice is still one document.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        coll.count_documents(doc! {}).await.expect("count"),
        3000,
        "{count}; log:\n{}",
        restarted.log()
    );
    sink.stop(restarted).await;
}

#[tokio::test]
async fn a_second_daemon_joining_the_group_loses_and_duplicates_nothing() {
    let sink = Sink::new(6, "id_strategy = \"provided_in_key\"\nmax_batch_size = 20").await;
    let first = sink.start();
    let records: Vec<Outgoing> = (0..6000)
        .map(|i| keyed(i % 2000, json!({"n": i % 2000, "seq": i})))
        .collect();
    let (a, b) = records.split_at(3000);
    common::produce(&sink.topic, a).await;
    // A second member: the group rebalances while records are being written.
    let mut second = common::Daemon::start(&sink.config_on(common::free_port()));
    second.wait_for_log("sink pipeline running", 1, WAIT);
    // The group rebalances: the first member's writers flush and commit before giving
    // partitions away, and the second gets some.
    second.wait_for_log("partitions assigned", 1, WAIT);
    common::produce(&sink.topic, b).await;
    // The last record of each key (seq 4000..6000) wins, whoever wrote it.
    let done = common::eventually(WAIT, || async {
        let docs = sink.documents().await;
        docs.len() == 2000
            && docs.values().all(|d| {
                d.get_i32("seq")
                    .ok()
                    .zip(d.get_i32("n").ok())
                    .is_some_and(|(seq, n)| seq == n + 4000)
            })
    })
    .await;
    let docs = sink.documents().await;
    assert!(
        done,
        "{} documents, {} not at their last version; logs:\n{}\n---\n{}",
        docs.len(),
        docs.values()
            .filter(|d| d.get_i32("seq").ok() != d.get_i32("n").ok().map(|n| n + 4000))
            .count(),
        first.log(),
        second.log()
    );
    sink.assert_committed(6, 6000).await;
    let both = first.log() + &second.log();
    assert!(
        both.contains("partitions revoked"),
        "no rebalance happened:\n{both}"
    );
    second.terminate(WAIT);
    sink.stop(first).await;
}

#[tokio::test]
async fn a_source_and_a_cdc_sink_replicate_one_collection_into_another() {
    let db = common::unique("repl");
    let client = common::mongo_client().await;
    let a = client.database(&db).collection::<Document>("a");
    a.insert_one(doc! {"_id": "seed", "v": 0})
        .await
        .expect("seed");
    let port = common::free_port();
    let topic = format!("{db}.a");
    common::create_topic(&topic, 1).await;
    let pipelines = format!(
        "[[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"a\"\nmax_await_time = \"200ms\"\nstartup_mode = \"copy_existing\"\n\n[[sink]]\nname = \"{snk}\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\ncollection = \"b\"\ncdc_handler = \"mongodb\"\nmax_batch_delay = \"50ms\"\n",
        src = common::unique("src"),
        snk = common::unique("snk"),
    );
    let mut daemon = common::Daemon::start(&common::config_toml(port, &pipelines));
    daemon.wait_for_log("change stream open", 1, WAIT);
    for i in 0..50 {
        a.insert_one(doc! {"_id": i, "v": i, "tags": ["x", "y", "z"], "sub": {"k": i}})
            .await
            .expect("insert");
    }
    for i in (0..50).step_by(3) {
        a.update_one(
            doc! {"_id": i},
            doc! {"$set": {"v": i * 10, "sub.k": -i}, "$unset": {"tags": ""}},
        )
        .await
        .expect("update");
    }
    for i in (1..50).step_by(5) {
        a.replace_one(doc! {"_id": i}, doc! {"replaced": true, "v": i})
            .await
            .expect("replace");
    }
    for i in (2..50).step_by(7) {
        a.delete_one(doc! {"_id": i}).await.expect("delete");
    }
    a.update_one(doc! {"_id": 4}, doc! {"$push": {"tags": "w"}})
        .await
        .expect("push");
    a.update_one(doc! {"_id": 5}, doc! {"$pop": {"tags": 1}})
        .await
        .expect("pop");
    let read = |coll: mongodb::Collection<Document>| async move {
        use futures_util::TryStreamExt;
        let docs: Vec<Document> = coll
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("docs");
        docs
    };
    let b = client.database(&db).collection::<Document>("b");
    let equal = common::eventually(WAIT, || {
        let (a, b) = (a.clone(), b.clone());
        async move { read(a).await == read(b).await }
    })
    .await;
    assert!(
        equal,
        "A:\n{:?}\nB:\n{:?}\nlog:\n{}",
        read(a.clone()).await,
        read(b.clone()).await,
        daemon.log()
    );
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

#[tokio::test]
async fn insert_and_delete_models_allow_lists_and_regex_renames() {
    let sink = Sink::new(
        1,
        "id_strategy = \"provided_in_value\"\nwrite_model = \"insert_one\"\nvalue_allow_fields = [\"keep\", \"nested.a\", \"src_x\"]\nfield_rename_regex = [{ pattern = \"src_\", replace = \"\" }]",
    )
    .await;
    let daemon = sink.start();
    common::produce(
        &sink.topic,
        &[Outgoing::json(
            json!(null),
            json!({"_id": 1, "keep": 1, "drop": 2, "nested": {"a": 3, "b": 4}, "src_x": 5}),
        )],
    )
    .await;
    assert_eq!(sink.wait_for_count(1).await, 1, "log:\n{}", daemon.log());
    assert_eq!(
        sink.documents().await["1"],
        doc! {"_id": 1, "keep": 1, "nested": {"a": 3}, "x": 5}
    );
    sink.stop(daemon).await;

    let sink = Sink::new(1, "write_model = \"delete_one\"").await;
    sink.collection()
        .await
        .insert_many([doc! {"_id": 1}, doc! {"_id": 2}])
        .await
        .expect("seed");
    let daemon = sink.start();
    common::produce(&sink.topic, &[keyed(1, json!({"ignored": true}))]).await;
    let done = common::eventually(WAIT, || async {
        sink.documents().await.keys().cloned().collect::<Vec<_>>() == ["2"]
    })
    .await;
    assert!(done, "{:?}; log:\n{}", sink.documents().await, daemon.log());
    sink.stop(daemon).await;
}

#[tokio::test]
async fn debezium_envelopes_are_replayed() {
    let sink = Sink::new(1, "cdc_handler = \"debezium_rdbms\"").await;
    let daemon = sink.start();
    let row = |op: &str, id: i64, after: serde_json::Value| {
        Outgoing::json(
            json!({"id": id}),
            json!({"before": null, "after": after, "op": op, "source": {"connector": "mysql"}}),
        )
    };
    common::produce(
        &sink.topic,
        &[
            row("c", 1, json!({"id": 1, "name": "one"})),
            row("c", 2, json!({"id": 2, "name": "two"})),
            row("u", 1, json!({"id": 1, "name": "uno"})),
            Outgoing::json(
                json!({"id": 2}),
                json!({"schema": {}, "payload": {"before": {"id": 2}, "after": null, "op": "d"}}),
            ),
        ],
    )
    .await;
    let done = common::eventually(WAIT, || async {
        let docs = sink.documents().await;
        docs.len() == 1
            && docs.values().next().is_some_and(|d| {
                d.get_str("name").ok() == Some("uno")
                    && d.get_document("_id").ok() == Some(&doc! {"id": 1})
            })
    })
    .await;
    assert!(done, "{:?}; log:\n{}", sink.documents().await, daemon.log());
    sink.stop(daemon).await;

    let sink = Sink::new(1, "cdc_handler = \"debezium_mongodb\"").await;
    let daemon = sink.start();
    let key = |id: i64| json!({"id": id.to_string()});
    common::produce(
        &sink.topic,
        &[
            Outgoing::json(key(1), json!({"op": "c", "after": "{\"_id\": 1, \"n\": 1, \"gone\": true}"})),
            Outgoing::json(key(2), json!({"op": "r", "after": "{\"_id\": 2, \"n\": 2}"})),
            Outgoing::json(
                key(1),
                json!({"op": "u", "updateDescription": {"updatedFields": "{\"n\": 10}", "removedFields": ["gone"]}}),
            ),
            Outgoing::json(key(2), json!({"op": "d"})),
        ],
    )
    .await;
    let done = common::eventually(WAIT, || async {
        let docs = sink.documents().await;
        docs.len() == 1 && docs.get("1") == Some(&doc! {"_id": 1, "n": 10})
    })
    .await;
    assert!(done, "{:?}; log:\n{}", sink.documents().await, daemon.log());
    sink.stop(daemon).await;
}

#[tokio::test]
async fn a_topic_regex_with_per_topic_overrides_and_namespaces_from_the_value() {
    let base = common::unique("rx");
    let (orders, returns) = (format!("{base}.orders"), format!("{base}.returns"));
    common::create_topic(&orders, 1).await;
    common::create_topic(&returns, 1).await;
    let db = common::unique("rxdb");
    let port = common::free_port();
    // Both topics through one regex; `returns` overrides the collection and reads the
    // database from each record's value.
    let pipeline = format!(
        "[[sink]]\nname = \"{}\"\ntopics_regex = \"{base}\\\\..*\"\ndatabase = \"{db}\"\ncollection = \"all\"\nid_strategy = \"provided_in_value\"\nmax_batch_delay = \"50ms\"\n[sink.topic_overrides.\"{returns}\"]\nnamespace_from = \"value\"\ndatabase_field = \"meta.db\"\ncollection = \"returns\"\n",
        common::unique("rx"),
    );
    let mut daemon = common::Daemon::start(&common::config_toml(port, &pipeline));
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    let other_db = format!("{db}_x");
    common::produce(&orders, &[Outgoing::json(json!(null), json!({"_id": 1}))]).await;
    common::produce(
        &returns,
        &[Outgoing::json(
            json!(null),
            json!({"_id": 2, "meta": {"db": other_db}}),
        )],
    )
    .await;
    let client = common::mongo_client().await;
    let all = client.database(&db).collection::<Document>("all");
    let moved = client.database(&other_db).collection::<Document>("returns");
    let arrived = common::eventually(WAIT, || {
        let (all, moved) = (all.clone(), moved.clone());
        async move {
            all.count_documents(doc! {"_id": 1}).await.unwrap_or(0) == 1
                && moved.count_documents(doc! {"_id": 2}).await.unwrap_or(0) == 1
        }
    })
    .await;
    assert!(arrived, "log:\n{}", daemon.log());
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
    let _ = client.database(&other_db).drop().await;
}
