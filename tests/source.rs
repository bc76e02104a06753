//! Source pipelines end to end: the daemon binary reads MongoDB change streams and
//! publishes to Kafka; the tests write to MongoDB and read the topics back.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mongo_kafka_bridge::config::OutputFormat;
use mongo_kafka_bridge::source::format;
use mongodb::bson::{doc, Bson, Document};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// A source pipeline on `db.coll` and the daemon configuration around it.
struct Pipeline {
    name: String,
    db: String,
    coll: String,
    extra: String,
    port: u16,
}

impl Pipeline {
    fn new(db: &str, coll: &str, extra: &str) -> Self {
        Self {
            name: common::unique("src"),
            db: db.to_owned(),
            coll: coll.to_owned(),
            extra: extra.to_owned(),
            port: common::free_port(),
        }
    }

    fn config(&self) -> String {
        let source = format!(
            "[[source]]\nname = \"{}\"\ndatabase = \"{}\"\ncollection = \"{}\"\ncheckpoint_interval = \"100ms\"\nmax_await_time = \"200ms\"\n{}\n",
            self.name, self.db, self.coll, self.extra
        );
        common::config_toml(self.port, &source)
    }

    /// Starts the daemon and waits until the change stream is open.
    fn start(&self) -> common::Daemon {
        let mut daemon = common::Daemon::start(&self.config());
        daemon.wait_for_log("change stream open", 1, WAIT);
        daemon
    }

    fn topic(&self) -> String {
        format!("{}.{}", self.db, self.coll)
    }
}

/// The `_id` of the document each record is keyed by.
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

async fn collection(db: &str, coll: &str) -> mongodb::Collection<Document> {
    let client = common::mongo_client().await;
    let collection = client.database(db).collection::<Document>(coll);
    // Some servers only open change streams on collections that exist.
    collection
        .insert_one(doc! { "_id": -1, "seed": true })
        .await
        .expect("seed");
    collection
}

async fn drop_db(db: &str) {
    common::mongo_client()
        .await
        .database(db)
        .drop()
        .await
        .expect("drop");
}

#[tokio::test]
async fn crud_events_arrive_in_order_keyed_by_document() {
    let db = common::unique("srcdb");
    let coll = collection(&db, "orders").await;
    let pipeline = Pipeline::new(&db, "orders", "full_document = \"updateLookup\"");
    let mut daemon = pipeline.start();

    coll.insert_one(doc! { "_id": 1, "status": "new", "qty": 2 })
        .await
        .expect("insert");
    coll.update_one(
        doc! { "_id": 1 },
        doc! { "$set": { "status": "paid" }, "$unset": { "qty": "" } },
    )
    .await
    .expect("update");
    coll.replace_one(doc! { "_id": 1 }, doc! { "status": "shipped", "qty": 3 })
        .await
        .expect("replace");
    coll.insert_one(doc! { "_id": 2, "status": "new" })
        .await
        .expect("insert 2");
    coll.delete_one(doc! { "_id": 1 }).await.expect("delete");

    let records = common::consume(&pipeline.topic(), 5, WAIT, false).await;
    assert_eq!(
        records.len(),
        5,
        "records: {records:?}\nlog:\n{}",
        daemon.log()
    );
    let ops: Vec<(i64, String)> = records
        .iter()
        .map(|r| {
            (
                r.key_json()["_id"].as_i64().unwrap_or(-99),
                r.json()["operationType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let expected = [
        (1, "insert"),
        (1, "update"),
        (1, "replace"),
        (2, "insert"),
        (1, "delete"),
    ];
    assert_eq!(ops, expected.map(|(id, op)| (id, op.to_owned())));
    let insert = records[0].json();
    assert_eq!(
        insert["fullDocument"],
        json!({"_id": 1, "status": "new", "qty": 2})
    );
    assert_eq!(insert["ns"], json!({"db": db, "coll": "orders"}));
    assert_eq!(insert["documentKey"], json!({"_id": 1}));
    assert!(insert["_id"]["_data"].is_string(), "{insert}");
    let update = records[1].json();
    assert_eq!(
        update["updateDescription"]["updatedFields"],
        json!({"status": "paid"})
    );
    assert_eq!(update["updateDescription"]["removedFields"], json!(["qty"]));
    // The lookup is made when the event is read, as MongoDB does: it may already show the
    // replacement, or nothing once the document is deleted.
    let looked_up = &update["fullDocument"];
    assert!(
        [
            json!({"_id": 1, "status": "paid"}),
            json!({"_id": 1, "status": "shipped", "qty": 3}),
            json!(null),
        ]
        .contains(looked_up),
        "{update}"
    );
    assert_eq!(
        records[2].json()["fullDocument"],
        json!({"_id": 1, "status": "shipped", "qty": 3})
    );
    assert_eq!(records[4].json()["documentKey"], json!({"_id": 1}));
    // Every change of one document lands in one partition, in order.
    assert!(records.iter().all(|r| r.partition == records[0].partition));

    daemon.terminate(WAIT);
    drop_db(&db).await;
}

/// The deprecated types some servers cannot store: the MongoDB stand-in drops the connection
/// on them. Their conversions are covered by the unit tests of `source::format` either way.
/// The fields of [`every_type`] holding the deprecated types and the binary subtypes some
/// servers cannot store: the MongoDB stand-in drops the connection on them (`unhandled type`,
/// `Unknown subtype`). Their conversions are covered by the unit and property tests of
/// `source::format` either way.
const MAYBE_REFUSED: [&str; 11] = [
    "code_w_scope",
    "symbol",
    "dbpointer",
    "binary_function",
    "binary_old",
    "uuid_old",
    "md5",
    "encrypted",
    "column",
    "sensitive",
    "user_defined",
];

/// The fields of [`MAYBE_REFUSED`] the server refuses to store, each probed alone.
async fn refused_fields(coll: &mongodb::Collection<Document>) -> Vec<&'static str> {
    let all = every_type();
    let mut refused = Vec::new();
    for key in MAYBE_REFUSED {
        let Some(value) = all.get(key) else { continue };
        let probe = doc! { "_id": format!("probe-{key}"), key: value.clone() };
        if coll.insert_one(probe).await.is_err() {
            refused.push(key);
        }
        let _ = coll
            .delete_one(doc! { "_id": format!("probe-{key}") })
            .await;
    }
    refused
}

/// A document with every BSON type a client can store.
fn every_type() -> Document {
    let json = json!({
        "_id": 7,
        "oid": {"$oid": "64b7f0c2a1b2c3d4e5f60718"},
        "double": 1.5, "double_integral": 2.0, "nan": {"$numberDouble": "NaN"}, "neg_inf": {"$numberDouble": "-Infinity"},
        "string": "héllo \u{1F600}",
        "doc": {"nested": {"deeper": [1, "two", {"three": 3}]}},
        "array": [1, {"$numberLong": "2"}, 3.5],
        "binary": {"$binary": {"base64": "AAEC/w==", "subType": "00"}},
        "uuid": {"$binary": {"base64": "BwcHBwcHBwcHBwcHBwcHBw==", "subType": "04"}},
        "bool": true,
        "date": {"$date": {"$numberLong": "1700000000123"}},
        "date_before_1970": {"$date": {"$numberLong": "-86400000"}},
        "null": null,
        "regex": {"$regularExpression": {"pattern": "^a.*z$", "options": "im"}},
        "code": {"$code": "function() { return 1; }"},
        "code_w_scope": {"$code": "x + y", "$scope": {"x": 1, "y": 2}},
        "int32": {"$numberInt": "-2147483648"},
        "timestamp": {"$timestamp": {"t": 1700000000, "i": 7}},
        "int64": {"$numberLong": "9223372036854775807"},
        "decimal": {"$numberDecimal": "1.10"},
        "decimal_max": {"$numberDecimal": "9.999999999999999999999999999999999E+6144"},
        "decimal_tiny": {"$numberDecimal": "1E-6176"},
        "minkey": {"$minKey": 1},
        "maxkey": {"$maxKey": 1},
        "symbol": {"$symbol": "sym"},
        "dbpointer": {"$dbPointer": {"$ref": "db.coll", "$id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}}},
        "undefined": {"$undefined": true}
    });
    // The extremes and the rarer subtypes; a second literal, as one would be too deep for
    // `json!`.
    let extremes = json!({
        "double_neg_zero": {"$numberDouble": "-0.0"}, "double_subnormal": 5e-324,
        "double_max": 1.7976931348623157e308,
        "binary_function": {"$binary": {"base64": "AQI=", "subType": "01"}},
        "binary_old": {"$binary": {"base64": "AQID", "subType": "02"}},
        "uuid_old": {"$binary": {"base64": "BwcHBwcHBwcHBwcHBwcHBw==", "subType": "03"}},
        "md5": {"$binary": {"base64": "AAAAAAAAAAAAAAAAAAAAAA==", "subType": "05"}},
        "encrypted": {"$binary": {"base64": "AQ==", "subType": "06"}},
        "column": {"$binary": {"base64": "AQ==", "subType": "07"}},
        "sensitive": {"$binary": {"base64": "AQ==", "subType": "08"}},
        "user_defined": {"$binary": {"base64": "/w==", "subType": "80"}},
        "date_after_9999": {"$date": {"$numberLong": "253402300800000"}},
        "regex_every_flag": {"$regularExpression": {"pattern": "(?<n>é)\\d\\/", "options": "ilmsux"}},
        "timestamp_max": {"$timestamp": {"t": 4294967295u32, "i": 4294967295u32}},
        "small_int64": {"$numberLong": "5"},
        "decimal_min": {"$numberDecimal": "-9.999999999999999999999999999999999E+6144"},
        "decimal_nan": {"$numberDecimal": "NaN"},
        "decimal_inf": {"$numberDecimal": "Infinity"},
        "decimal_neg_inf": {"$numberDecimal": "-Infinity"},
        "decimal_neg_zero": {"$numberDecimal": "-0"},
        "empty_doc": {}, "empty_array": [], "nested_arrays": [[[]], [[1]]]
    });
    match (Bson::try_from(json), Bson::try_from(extremes)) {
        (Ok(Bson::Document(mut doc)), Ok(Bson::Document(more))) => {
            doc.extend(more);
            doc
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn every_output_format_round_trips_every_bson_type() {
    let db = common::unique("fmtdb");
    let coll = collection(&db, "types").await;
    // Probed before the pipelines start, so the probe is not among the events.
    let mut document = every_type();
    let refused = refused_fields(&coll).await;
    if !refused.is_empty() {
        eprintln!(
            "SKIPPED in part: the server cannot store {refused:?}; the round trip covers every \
             other type"
        );
        for key in &refused {
            document.remove(*key);
        }
    }
    let formats = [
        ("relaxed", OutputFormat::RelaxedJson, "relaxed_json"),
        ("canonical", OutputFormat::CanonicalJson, "canonical_json"),
        (
            "simplified",
            OutputFormat::SimplifiedJson,
            "simplified_json",
        ),
        ("bson", OutputFormat::Bson, "bson"),
    ];
    let port = common::free_port();
    let sources: String = formats
        .iter()
        .map(|(prefix, _, name)| {
            format!(
                "[[source]]\nname = \"{}\"\ndatabase = \"{db}\"\ncollection = \"types\"\ntopic_prefix = \"{prefix}\"\nformat = \"{name}\"\nmax_await_time = \"200ms\"\n",
                common::unique(prefix)
            )
        })
        .collect();
    let mut daemon = common::Daemon::start(&common::config_toml(port, &sources));
    daemon.wait_for_log("change stream open", formats.len(), WAIT);

    coll.insert_one(document.clone()).await.expect("insert");
    // What the server stored is the reference: a server may not keep every deprecated type.
    let stored = coll
        .find_one(doc! { "_id": 7 })
        .await
        .expect("find")
        .expect("stored");
    let changed: Vec<String> = document
        .iter()
        .filter(|(k, v)| {
            stored
                .get(k.as_str())
                .map(|s| s.clone().into_canonical_extjson())
                != Some((*v).clone().into_canonical_extjson())
        })
        .map(|(k, v)| format!("{k}: {v:?} became {:?}", stored.get(k.as_str())))
        .collect();
    if !changed.is_empty() {
        eprintln!(
            "NOTE: the server stored these fields differently from what was inserted: {changed:?}"
        );
    }

    for (prefix, format, _) in formats {
        let records = common::consume(&format!("{prefix}.{db}.types"), 1, WAIT, false).await;
        assert_eq!(records.len(), 1, "{prefix}: log:\n{}", daemon.log());
        let value = records[0].value.clone().expect("a value");
        match format {
            OutputFormat::CanonicalJson | OutputFormat::Bson => {
                let event = format::decode(&value, format).expect("decodes");
                let full = event.get_document("fullDocument").expect("fullDocument");
                assert_eq!(
                    Bson::Document(full.clone()).into_canonical_extjson(),
                    Bson::Document(stored.clone()).into_canonical_extjson(),
                    "{prefix}"
                );
                let key = format::decode(records[0].key.as_deref().expect("key"), format)
                    .expect("key decodes");
                assert_eq!(key, doc! { "_id": 7 }, "{prefix}");
            }
            OutputFormat::RelaxedJson => {
                let event: serde_json::Value = serde_json::from_slice(&value).expect("JSON");
                assert_eq!(
                    event["fullDocument"],
                    format::relaxed(Bson::Document(stored.clone()))
                );
                assert_eq!(event["fullDocument"]["small_int64"], 5);
                assert_eq!(
                    event["fullDocument"]["date_after_9999"],
                    json!({"$date": {"$numberLong": "253402300800000"}})
                );
                // Every value comes back; only the width of integers that fit 32 bits is lost.
                let back = format::decode(&value, format).expect("decodes");
                let full = back.get_document("fullDocument").expect("doc");
                for (name, original) in &stored {
                    let expected = match original {
                        Bson::Int64(i) => i32::try_from(*i).map_or(original.clone(), Bson::Int32),
                        Bson::Array(_) => {
                            Bson::try_from(format::relaxed(original.clone())).expect("array")
                        }
                        other => other.clone(),
                    };
                    assert_eq!(
                        full.get(name).map(|v| v.clone().into_canonical_extjson()),
                        Some(expected.into_canonical_extjson()),
                        "{name}"
                    );
                }
            }
            OutputFormat::Avro | OutputFormat::JsonSchema | OutputFormat::Protobuf => {
                unreachable!("{prefix}: registry formats are tested in tests/schema_registry.rs")
            }
            OutputFormat::ConnectorDefaultJson
            | OutputFormat::ConnectorExtendedJson
            | OutputFormat::ConnectorSimplifiedJson => {
                unreachable!(
                    "{prefix}: the connector's formats are tested in tests/connector_json.rs"
                )
            }
            OutputFormat::SimplifiedJson => {
                let event: serde_json::Value = serde_json::from_slice(&value).expect("JSON");
                let full = &event["fullDocument"];
                assert_eq!(full["oid"], "64b7f0c2a1b2c3d4e5f60718");
                assert_eq!(full["date"], "2023-11-14T22:13:20.123Z");
                assert_eq!(full["int64"], i64::MAX);
                assert_eq!(full["decimal"], "1.10");
                assert_eq!(full["binary"], "AAEC/w==");
                assert_eq!(full["string"], "héllo \u{1F600}");
                // What simplified JSON loses: the binary subtype, the decimal and double
                // specials (as text), the date beyond 9999 (as milliseconds), undefined.
                assert_eq!(full["uuid"], "BwcHBwcHBwcHBwcHBwcHBw==");
                assert_eq!(full["user_defined"], "/w==");
                assert_eq!(full["decimal_nan"], "NaN");
                assert_eq!(full["decimal_neg_zero"], "-0");
                assert_eq!(full["nan"], "NaN");
                assert_eq!(full["date_after_9999"], 253_402_300_800_000_i64);
                assert_eq!(full["undefined"], serde_json::Value::Null);
                // Types with no plain twin keep their relaxed form.
                assert_eq!(full["minkey"], json!({"$minKey": 1}));
                assert_eq!(
                    full["timestamp_max"],
                    json!({"$timestamp": {"t": 4_294_967_295_u32, "i": 4_294_967_295_u32}})
                );
                assert_eq!(
                    full["regex_every_flag"]["$regularExpression"]["options"],
                    "ilmsux"
                );
            }
        }
    }
    daemon.terminate(WAIT);
    drop_db(&db).await;
}

#[tokio::test]
async fn publish_full_document_only_with_tombstones() {
    let db = common::unique("fdodb");
    let coll = collection(&db, "items").await;
    let pipeline = Pipeline::new(
        &db,
        "items",
        "publish_full_document_only = true\ntombstone_on_delete = true",
    );
    let mut daemon = pipeline.start();
    coll.insert_one(doc! { "_id": 1, "name": "one" })
        .await
        .expect("insert");
    coll.delete_one(doc! { "_id": 1 }).await.expect("delete");
    let records = common::consume(&pipeline.topic(), 2, WAIT, false).await;
    assert_eq!(records.len(), 2, "log:\n{}", daemon.log());
    assert_eq!(records[0].json(), json!({"_id": 1, "name": "one"}));
    assert_eq!(records[1].key_json(), json!({"_id": 1}));
    assert!(records[1].value.is_none(), "a delete is a tombstone");
    daemon.terminate(WAIT);
    drop_db(&db).await;
}

/// Inserts `ids` one by one, returning when done.
async fn insert_range(coll: &mongodb::Collection<Document>, ids: std::ops::Range<i64>) {
    for id in ids {
        coll.insert_one(doc! { "_id": id, "payload": "x".repeat(100) })
            .await
            .expect("insert");
    }
}

/// Kills the daemon with SIGKILL in the middle of a stream of inserts, writes more while
/// it is down, restarts it, and returns how often each id was published.
async fn kill_and_resume(extra: &str, read_committed: bool) -> (BTreeMap<i64, usize>, String) {
    let db = common::unique("killdb");
    let coll = collection(&db, "events").await;
    let pipeline = Pipeline::new(&db, "events", extra);
    let mut daemon = pipeline.start();
    insert_range(&coll, 0..150).await;
    // Let some, not all, be published and checkpointed before the kill.
    let early = common::consume(&pipeline.topic(), 50, WAIT, read_committed).await;
    assert!(early.len() >= 50, "log:\n{}", daemon.log());
    let writer = {
        let coll = coll.clone();
        tokio::spawn(async move { insert_range(&coll, 150..300).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.signal("KILL");
    daemon.wait(WAIT);
    writer.await.expect("writer");
    insert_range(&coll, 300..400).await;

    let mut restarted = common::Daemon::start(&pipeline.config());
    restarted.wait_for_log("change stream open", 1, WAIT);
    assert!(
        restarted.log().contains("start=\"checkpoint\""),
        "did not resume from a checkpoint:\n{}",
        restarted.log()
    );
    insert_range(&coll, 400..410).await;
    // Read until every id arrived (duplicates do not count), then a little longer so that
    // late duplicates show.
    let all_arrived = |records: &[common::Consumed]| {
        let ids: std::collections::BTreeSet<i64> = key_ids(records).into_iter().collect();
        (0..410).all(|id| ids.contains(&id))
    };
    let records = common::consume_until(&pipeline.topic(), WAIT, read_committed, all_arrived).await;
    let again = common::consume(
        &pipeline.topic(),
        records.len() + 1,
        Duration::from_secs(10),
        read_committed,
    )
    .await;
    let records = if again.len() > records.len() {
        again
    } else {
        records
    };
    let mut counts = BTreeMap::new();
    for id in key_ids(&records) {
        *counts.entry(id).or_insert(0) += 1;
    }
    restarted.terminate(WAIT);
    drop_db(&db).await;
    (counts, restarted.log())
}

#[tokio::test]
async fn sigkill_mid_stream_loses_nothing_at_least_once() {
    let (counts, log) = kill_and_resume("", false).await;
    let missing: Vec<i64> = (0..410).filter(|id| !counts.contains_key(id)).collect();
    assert!(missing.is_empty(), "missing ids {missing:?}; log:\n{log}");
}

#[tokio::test]
async fn sigkill_mid_stream_exactly_once_for_read_committed_consumers() {
    let (counts, log) = kill_and_resume(
        // An exactly-once pipeline never shares its checkpoint topic.
        &format!(
            "delivery = \"exactly-once\"\ncheckpoint_topic = \"{}\"",
            common::unique("killcp")
        ),
        true,
    )
    .await;
    let missing: Vec<i64> = (0..410).filter(|id| !counts.contains_key(id)).collect();
    assert!(missing.is_empty(), "missing ids {missing:?}; log:\n{log}");
    let duplicated: Vec<(&i64, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated ids {duplicated:?}");
}

#[tokio::test]
async fn copy_existing_with_concurrent_writes_loses_nothing() {
    let db = common::unique("copydb");
    let coll = collection(&db, "stock").await;
    insert_range(&coll, 0..500).await;
    let pipeline = Pipeline::new(&db, "stock", "startup_mode = \"copy_existing\"");
    let mut daemon = common::Daemon::start(&pipeline.config());
    // Writes while the copy runs; the change stream opened before the copy sees them.
    insert_range(&coll, 500..700).await;
    // Until every id arrived, not until 701 records did: a concurrent write may arrive twice
    // (copied, and its insert event), and duplicates could fill a count first.
    let (mut seen, mut read) = (BTreeSet::new(), 0);
    let records = common::consume_until(&pipeline.topic(), WAIT, false, |records| {
        seen.extend(key_ids(&records[read..]));
        read = records.len();
        (-1..700).all(|id| seen.contains(&id))
    })
    .await;
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for id in key_ids(&records) {
        *counts.entry(id).or_insert(0) += 1;
    }
    let missing: Vec<i64> = (-1..700).filter(|id| !counts.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}; log:\n{}",
        daemon.log()
    );
    // Documents that existed before are copied once; only concurrent writes may show twice
    // (copied, and their insert event): the documented at-least-once overlap.
    let twice_before: Vec<i64> = (-1..500).filter(|id| counts[id] > 1).collect();
    assert!(twice_before.is_empty(), "copied twice: {twice_before:?}");
    assert!(counts.values().all(|n| *n <= 2), "{counts:?}");
    assert!(
        daemon.log().contains("copied existing documents"),
        "{}",
        daemon.log()
    );
    let copied = records
        .iter()
        .filter(|r| r.json()["_id"]["copyingData"] == json!(true))
        .count();
    assert!(copied >= 501, "{copied} copied records");
    daemon.terminate(WAIT);
    drop_db(&db).await;
}

#[tokio::test]
async fn an_event_too_large_for_kafka_is_dead_lettered_and_the_rest_flows() {
    let db = common::unique("bigdb");
    let coll = collection(&db, "docs").await;
    let dlq = common::unique("dlq");
    let pipeline = Pipeline::new(
        &db,
        "docs",
        &format!("[source.errors]\ntolerance = \"all\"\ndead_letter_topic = \"{dlq}\""),
    );
    let config = pipeline.config().replace(
        "[kafka]\n",
        "[kafka]\nproducer = { \"message.max.bytes\" = 20000 }\n",
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    coll.insert_one(doc! { "_id": 1, "small": true })
        .await
        .expect("insert");
    coll.insert_one(doc! { "_id": 2, "big": "y".repeat(50_000) })
        .await
        .expect("insert");
    coll.insert_one(doc! { "_id": 3, "small": true })
        .await
        .expect("insert");
    let records = common::consume(&pipeline.topic(), 2, WAIT, false).await;
    assert_eq!(key_ids(&records), [1, 3], "log:\n{}", daemon.log());
    let dead = common::consume(&dlq, 1, WAIT, false).await;
    assert_eq!(dead.len(), 1, "log:\n{}", daemon.log());
    assert_eq!(dead[0].key_json(), json!({"_id": 2}));
    assert!(
        daemon.log().contains("dead-lettering an event"),
        "{}",
        daemon.log()
    );
    let metrics = common::wait_for_status(pipeline.port, "/metrics", 200, Duration::from_secs(5));
    assert!(
        metrics.contains("mkb_dead_letter_records_total{pipeline=\""),
        "{metrics}"
    );
    daemon.terminate(WAIT);
    drop_db(&db).await;
}

#[tokio::test]
async fn an_event_too_large_stops_the_pipeline_by_default_and_says_which() {
    let db = common::unique("bigdb");
    let coll = collection(&db, "docs").await;
    let pipeline = Pipeline::new(&db, "docs", "");
    let config = pipeline.config().replace(
        "[kafka]\n",
        "[kafka]\nproducer = { \"message.max.bytes\" = 20000 }\n",
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    coll.insert_one(doc! { "_id": 2, "big": "y".repeat(50_000) })
        .await
        .expect("insert");
    daemon.wait_for_log("source pipeline failed", 1, WAIT);
    let reason = common::wait_for_status(pipeline.port, "/ready", 503, WAIT);
    assert!(
        reason.contains(&pipeline.name) && reason.contains(&format!("{db}.docs")),
        "{reason}"
    );
    daemon.signal("TERM");
    daemon.wait(WAIT);
    drop_db(&db).await;
}

#[tokio::test]
async fn idle_namespaces_publish_heartbeats() {
    let db = common::unique("hbdb");
    let _coll = collection(&db, "quiet").await;
    let topic = common::unique("heartbeats");
    let pipeline = Pipeline::new(
        &db,
        "quiet",
        &format!("heartbeat_interval = \"300ms\"\nheartbeat_topic = \"{topic}\""),
    );
    let mut daemon = pipeline.start();
    let beats = common::consume(&topic, 2, WAIT, false).await;
    assert!(beats.len() >= 2, "log:\n{}", daemon.log());
    assert_eq!(
        beats[0].key_json(),
        json!({"pipeline": pipeline.name, "namespace": format!("{db}.quiet")})
    );
    assert!(beats[0].json()["time"].is_string());
    daemon.terminate(WAIT);
    drop_db(&db).await;
}

#[tokio::test]
async fn database_and_deployment_watches_route_each_collection_to_its_topic() {
    let db = common::unique("watchdb");
    let client = common::mongo_client().await;
    let orders = client.database(&db).collection::<Document>("orders");
    let users = client.database(&db).collection::<Document>("users");
    let logs = client.database(&db).collection::<Document>("audit_log");
    for c in [&orders, &users, &logs] {
        c.insert_one(doc! {"_id": -1}).await.expect("seed");
    }
    let port = common::free_port();
    let db_prefix = common::unique("dbw");
    let all_prefix = common::unique("allw");
    // A database watch limited by a collection regex, with one collection mapped by name; and
    // a deployment watch narrowed to this test's database by a user pipeline.
    let pipelines = format!(
        "[[source]]\nname = \"{}\"\ndatabase = \"{db}\"\ncollection_regex = \"^(orders|users)$\"\ntopic_prefix = \"{db_prefix}\"\nmax_await_time = \"200ms\"\n[source.topic_namespace_map]\n\"{db}.users\" = \"people\"\n\n[[source]]\nname = \"{}\"\ntopic_prefix = \"{all_prefix}\"\nmax_await_time = \"200ms\"\npipeline = '[{{\"$match\": {{\"ns.db\": \"{db}\"}}}}]'\n",
        common::unique("dbwatch"),
        common::unique("allwatch"),
    );
    let mut daemon = common::Daemon::start(&common::config_toml(port, &pipelines));
    daemon.wait_for_log("change stream open", 2, WAIT);
    orders.insert_one(doc! {"_id": 1}).await.expect("insert");
    users.insert_one(doc! {"_id": 2}).await.expect("insert");
    logs.insert_one(doc! {"_id": 3}).await.expect("insert");

    let of = |topic: String, n: usize| async move {
        let records = common::consume(&topic, n, WAIT, false).await;
        key_ids(&records)
    };
    assert_eq!(
        of(format!("{db_prefix}.{db}.orders"), 1).await,
        [1],
        "log:\n{}",
        daemon.log()
    );
    assert_eq!(of(format!("{db_prefix}.people"), 1).await, [2]);
    assert_eq!(of(format!("{all_prefix}.{db}.orders"), 1).await, [1]);
    assert_eq!(of(format!("{all_prefix}.{db}.users"), 1).await, [2]);
    assert_eq!(of(format!("{all_prefix}.{db}.audit_log"), 1).await, [3]);
    // The regex left audit_log out of the database watch.
    let none = common::consume(
        &format!("{db_prefix}.{db}.audit_log"),
        1,
        Duration::from_secs(3),
        false,
    )
    .await;
    assert!(none.is_empty(), "{none:?}");
    daemon.terminate(WAIT);
    drop_db(&db).await;
}
