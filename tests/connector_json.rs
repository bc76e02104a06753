//! The `connector_*_json` formats write what the MongoDB Kafka Connector writes with
//! `output.format.key = json`, `output.format.value = json` and each `output.json.formatter`
//! (`DefaultJson`, `ExtendedJson`, `SimplifiedJson`), byte for byte: the real connector runs
//! in a Kafka Connect worker (`test-services/connect.sh`), reads the same change event as the
//! daemon, and the records' keys and values are compared.
//!
//! Nothing is removed before comparing: both read the same change event of the same server,
//! so its resume token (`_id`), `clusterTime` and `wallTime` are the same bytes on both
//! sides. Only one Connect worker can run on a machine (port 8083, one PID file): a worker
//! that does not start fails the test, loudly.

#![recursion_limit = "256"]

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, DateTime, Decimal128, JavaScriptCodeWithScope, Regex, Timestamp};
use common::connect::ConnectWorker;

const WAIT: Duration = Duration::from_secs(90);

/// The connector's formatters and the format of ours that writes the same bytes.
const FORMATTERS: [(&str, &str); 3] = [
    ("DefaultJson", "connector_default_json"),
    ("ExtendedJson", "connector_extended_json"),
    ("SimplifiedJson", "connector_simplified_json"),
];

/// A value of every BSON type, and the edge values of the types whose text the two writers
/// build themselves (doubles, dates, strings, binary subtypes), each in a field of its own.
fn every_type() -> Vec<(&'static str, Bson)> {
    let oid = bson::oid::ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718")
        .unwrap_or_else(|e| panic!("{e}"));
    let decimal = |text: &str| {
        Bson::Decimal128(
            text.parse::<Decimal128>()
                .unwrap_or_else(|e| panic!("{text}: {e}")),
        )
    };
    let binary = |subtype, bytes: Vec<u8>| Bson::Binary(Binary { subtype, bytes });
    let date = |millis| Bson::DateTime(DateTime::from_millis(millis));
    let dbpointer = Bson::try_from(serde_json::json!({
        "$dbPointer": {"$ref": "db.coll", "$id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    vec![
        ("oid", Bson::ObjectId(oid)),
        ("double", Bson::Double(1.5)),
        ("integral", Bson::Double(2.0)),
        ("big", Bson::Double(1e300)),
        ("small", Bson::Double(1.0e-7)),
        ("million", Bson::Double(1_234_567.0)),
        ("ten_million", Bson::Double(12_345_678.9)),
        ("thousandth", Bson::Double(0.001)),
        ("tiny", Bson::Double(5e-324)),
        ("max", Bson::Double(f64::MAX)),
        ("negative_zero", Bson::Double(-0.0)),
        ("sum", Bson::Double(0.1 + 0.2)),
        ("nan", Bson::Double(f64::NAN)),
        ("inf", Bson::Double(f64::INFINITY)),
        ("neg_inf", Bson::Double(f64::NEG_INFINITY)),
        (
            "string",
            Bson::String(
                "h\u{e9}\"llo\\\n\r\t\u{8}\u{c}\u{1}\u{7f}/<>&'\u{ad}\u{301}\u{2028}\u{e000}\u{4e2d}\u{1F600}"
                    .into(),
            ),
        ),
        (
            "doc",
            Bson::Document(doc! { "nested": { "deeper": [1, "two", { "three": 3 }] }, "empty": {} }),
        ),
        ("array", bson::bson!([1_i32, 2_i64, 3.5, [], null])),
        ("binary", binary(BinarySubtype::Generic, vec![0, 1, 2, 3, 255])),
        ("empty_binary", binary(BinarySubtype::Generic, vec![])),
        ("function", binary(BinarySubtype::Function, vec![1])),
        ("old_binary", binary(BinarySubtype::BinaryOld, vec![1, 2])),
        ("old_uuid", binary(BinarySubtype::UuidOld, (0..16).collect())),
        ("uuid", binary(BinarySubtype::Uuid, (0..16).collect())),
        ("md5", binary(BinarySubtype::Md5, vec![9; 16])),
        ("user_defined", binary(BinarySubtype::UserDefined(0x80), vec![7])),
        ("user_defined_ab", binary(BinarySubtype::UserDefined(0xab), vec![7])),
        ("undefined", Bson::Undefined),
        ("true", Bson::Boolean(true)),
        ("false", Bson::Boolean(false)),
        ("date", date(1_700_000_000_123)),
        ("date_120", date(1_700_000_000_120)),
        ("date_whole", date(1_700_000_040_000)),
        ("date_before_1970", date(-1)),
        ("date_year_1", date(-62_135_596_800_000)),
        ("date_year_0", date(-62_135_596_800_001)),
        ("date_year_10000", date(253_402_300_800_000)),
        ("null", Bson::Null),
        (
            "regex",
            Bson::RegularExpression(Regex {
                pattern: "^a\"\\.b".into(),
                options: "xmi".into(),
            }),
        ),
        ("dbpointer", dbpointer),
        ("code", Bson::JavaScriptCode("function() { return \"1\"; }".into())),
        ("symbol", Bson::Symbol("sym".into())),
        (
            "code_w_scope",
            Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                code: "x + y".into(),
                scope: doc! { "x": 1, "y": 2_i64 },
            }),
        ),
        ("int32", Bson::Int32(i32::MIN)),
        ("int32_max", Bson::Int32(i32::MAX)),
        (
            "timestamp",
            Bson::Timestamp(Timestamp {
                time: 1_700_000_000,
                increment: 7,
            }),
        ),
        ("int64", Bson::Int64(i64::MAX)),
        ("int64_min", Bson::Int64(i64::MIN)),
        ("small_int64", Bson::Int64(5)),
        ("decimal", decimal("1.50")),
        ("decimal_max", decimal("9.999999999999999999999999999999999E+6144")),
        ("decimal_small", decimal("-1E-6176")),
        ("decimal_nan", decimal("NaN")),
        ("decimal_inf", decimal("-Infinity")),
        ("decimal_exp", decimal("1.23E+10")),
        ("min_key", Bson::MinKey),
        ("max_key", Bson::MaxKey),
    ]
}

/// The fields of [`every_type`] the server stores and gives back unchanged; each other is
/// named, loudly: the MongoDB stand-in lacks some BSON types (a real replica set,
/// `MONGODB_URI`, has them all).
async fn stored_unchanged(collection: &mongodb::Collection<bson::Document>) -> bson::Document {
    let mut kept = doc! {"_id": "every-type"};
    let mut missing = Vec::new();
    for (name, value) in every_type() {
        let id = format!("probe-{name}");
        let written = doc! {"_id": &id, "v": value.clone()};
        let read = match collection.insert_one(written.clone()).await {
            Ok(_) => collection.find_one(doc! {"_id": &id}).await.ok().flatten(),
            Err(e) => {
                missing.push(format!("{name} (refused: {e})"));
                continue;
            }
        };
        let same = read.as_ref().and_then(|r| bson::to_vec(r).ok()) == bson::to_vec(&written).ok();
        if same {
            kept.insert(name, value);
        } else {
            missing.push(format!(
                "{name} (read back as {:?})",
                read.and_then(|r| r.get("v").cloned())
            ));
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED for these BSON values, which the MongoDB server at {} does not store \
             unchanged (the stand-in lacks them; run with MONGODB_URI against a real replica set \
             to cover them): {}",
            common::mongodb_uri(),
            missing.join("; ")
        );
    }
    kept
}

fn text(bytes: &Option<Vec<u8>>) -> String {
    bytes
        .as_deref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_else(|| "<none>".to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_formatter_is_written_byte_for_byte() {
    let db = common::unique("nsmap_cjson");
    let coll = "every";
    let client = common::mongo_client().await;
    let collection = client.database(&db).collection::<bson::Document>(coll);
    let every = stored_unchanged(&client.database(&db).collection("probe")).await;
    assert!(every.len() > 30, "too few BSON values stored: {every}");
    // Both start at the same operation time, before the insert, so neither depends on when
    // its change stream opens.
    collection
        .insert_one(doc! {"_id": "create"})
        .await
        .unwrap_or_else(|e| panic!("creating {db}.{coll}: {e}"));
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        + 1;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let prefix = common::unique("nsmap_cj");
    let properties: Vec<PathBuf> = FORMATTERS
        .iter()
        .map(|(formatter, _)| {
            common::write_file(
                dir.path(),
                &format!("{formatter}.properties"),
                &format!(
                    "name=nsmap-{formatter}\n\
                     connector.class=com.mongodb.kafka.connect.MongoSourceConnector\n\
                     connection.uri={uri}\n\
                     database={db}\n\
                     collection={coll}\n\
                     topic.prefix={prefix}_connector_{formatter}\n\
                     output.format.key=json\n\
                     output.format.value=json\n\
                     output.json.formatter=com.mongodb.kafka.connect.source.json.formatter.{formatter}\n\
                     startup.mode=timestamp\n\
                     startup.mode.timestamp.start.at.operation.time={start}\n",
                    uri = common::mongodb_uri(),
                ),
            )
        })
        .collect();
    let worker = ConnectWorker::up(&properties);

    collection
        .insert_one(every.clone())
        .await
        .unwrap_or_else(|e| panic!("inserting every type into {db}.{coll}: {e}"));
    let mut theirs = Vec::new();
    for (formatter, _) in FORMATTERS {
        let mut records = common::consume(
            &format!("{prefix}_connector_{formatter}.{db}.{coll}"),
            1,
            WAIT,
            false,
        )
        .await;
        assert_eq!(
            records.len(),
            1,
            "{formatter}: the connector wrote no record"
        );
        eprintln!("connector, {formatter}: {}", text(&records[0].value));
        theirs.push(records.swap_remove(0));
    }
    // The connector's records are read: its worker is not needed any more.
    drop(worker);

    let pipelines: String = FORMATTERS
        .iter()
        .map(|(formatter, format)| {
            format!(
                "[[source]]\nname = \"nsmap_{formatter}\"\ndatabase = \"{db}\"\ncollection = \"{coll}\"\n\
                 topic_prefix = \"{prefix}_ours_{formatter}\"\nformat = \"{format}\"\n\
                 startup_mode = \"timestamp\"\nstartup_timestamp = \"{start}\"\nmax_await_time = \"200ms\"\n"
            )
        })
        .collect();
    let mut daemon = common::Daemon::start(&common::config_toml(common::free_port(), &pipelines));
    daemon.wait_for_log("change stream open", FORMATTERS.len(), WAIT);

    let mut mismatches = Vec::new();
    for ((formatter, format), theirs) in FORMATTERS.iter().zip(&theirs) {
        let ours = common::consume(
            &format!("{prefix}_ours_{formatter}.{db}.{coll}"),
            1,
            WAIT,
            false,
        )
        .await;
        assert_eq!(
            ours.len(),
            1,
            "{format}: the daemon wrote no record; log:\n{}",
            daemon.log()
        );
        for (part, theirs, ours) in [
            ("key", &theirs.key, &ours[0].key),
            ("value", &theirs.value, &ours[0].value),
        ] {
            if theirs != ours {
                mismatches.push(format!(
                    "{formatter} / {format}, {part}:\n  connector: {}\n  ours:      {}",
                    text(theirs),
                    text(ours)
                ));
            }
        }
    }
    daemon.terminate(WAIT);
    client
        .database(&db)
        .drop()
        .await
        .unwrap_or_else(|e| panic!("dropping {db}: {e}"));
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
