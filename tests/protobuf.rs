//! Protobuf through a real schema registry (Apicurio Registry's Confluent-compatible API from
//! `test-services/registry.sh`, or `SCHEMA_REGISTRY_URL`), checked with Confluent's own client
//! library: Python's `confluent-kafka` (its ProtobufSerializer and ProtobufDeserializer), in
//! the virtual environment `test-services/registry.sh confluent` makes once from PyPI.
//! Without a registry these tests fail, saying how to start it.
//!
//! Apicurio 2.4.2 keeps a schema's text as registered and ignores `format=serialized`; the
//! helper `tests/fixtures/confluent_protobuf.py` compiles the `.proto` text it serves with
//! Google's protoc for Confluent's deserializer (what Confluent's registry would serve), and
//! says when it did.

mod common;

use common::sink::{header, Sink, WAIT};
use common::Outgoing;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, oid::ObjectId, Binary, Bson, DateTime, Decimal128, Document};
use serde_json::{json, Value};

fn subjects() -> Vec<String> {
    let (status, body) = common::registry::request("GET", "/subjects", "");
    assert_eq!(status, 200, "the registry's /subjects: {body}");
    serde_json::from_str(&body).expect("a list of subjects")
}

/// The Python that has confluent-kafka (made once by the project's script).
fn python() -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-services/registry.sh");
    let out = std::process::Command::new(script)
        .arg("confluent")
        .output()
        .expect("registry.sh confluent");
    assert!(
        out.status.success(),
        "registry.sh confluent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs the Confluent helper with `args`: its JSON output.
fn confluent(args: &[&str]) -> Value {
    let helper = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/confluent_protobuf.py");
    let out = std::process::Command::new(python())
        .arg(helper)
        .args(args)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "confluent_protobuf.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "confluent_protobuf.py {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A document of every BSON type the Protobuf mapping carries.
fn every_type(id: i32) -> Document {
    doc! {
        "_id": id,
        "oid": ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").expect("oid"),
        "double": 1.25,
        "string": "héllo",
        "int32": -7_i32,
        "int64": i64::MAX,
        "bool": true,
        "date": DateTime::from_millis(1_700_000_000_123),
        "decimal": "-12345.678".parse::<Decimal128>().expect("decimal"),
        "binary": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 254, 255] },
        "null": Bson::Null,
        "nested": { "city": "Oslo", "geo": { "lat": 59.9, "lon": 10.7 } },
        "ints": [1, 2, 3],
        "lines": [{ "sku": "a", "qty": 1_i64 }, { "sku": "b", "qty": 2_i64 }],
        "odd name-1": "kept",
    }
}

#[tokio::test]
async fn protobuf_confluents_deserializer_reads_every_field_we_write() {
    subjects();
    let db = common::unique("protobuf_a");
    let topic = format!("{db}.c");
    let config = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nformat = \"protobuf\"\n\
             publish_full_document_only = true\nmax_await_time = \"300ms\"\n{registry}",
            src = common::unique("protobuf_src"),
            registry = common::registry::toml(),
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    let client = common::mongo_client().await;
    client
        .database(&db)
        .collection::<Document>("c")
        .insert_one(every_type(1))
        .await
        .expect("insert");
    let records = common::consume(&topic, 1, WAIT, false).await;
    assert_eq!(records.len(), 1, "log:\n{}", daemon.log());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut read = Vec::new();
    for (part, bytes) in [("key", &records[0].key), ("value", &records[0].value)] {
        let file = dir.path().join(format!("{part}.bin"));
        std::fs::write(&file, bytes.as_deref().expect("bytes")).expect("write");
        read.push(confluent(&[
            "read",
            &common::registry::url(),
            &topic,
            part,
            file.to_str().expect("a path"),
        ]));
    }
    assert_eq!(read[0]["message"], "Key", "{read:?}");
    assert_eq!(read[0]["value"], json!({"_id": 1}));
    assert_eq!(read[1]["message"], "Document", "{read:?}");
    // MessageToDict's JSON: 64-bit integers as strings, bytes in base64, timestamps in RFC
    // 3339, the decimal (a confluent.type.Decimal) as Confluent's own decimal_utils reads it;
    // the null field is unset, so absent.
    assert_eq!(
        read[1]["value"],
        json!({
            "_id": 1,
            "oid": "64b7f0c2a1b2c3d4e5f60718",
            "double": 1.25,
            "string": "héllo",
            "int32": -7,
            "int64": i64::MAX.to_string(),
            "bool": true,
            "date": "2023-11-14T22:13:20.123Z",
            "decimal": "-12345.678",
            "binary": "AAH+/w==",
            "nested": { "city": "Oslo", "geo": { "lat": 59.9, "lon": 10.7 } },
            "ints": [1, 2, 3],
            "lines": [{ "sku": "a", "qty": "1" }, { "sku": "b", "qty": "2" }],
            "odd_name_1": "kept",
        }),
        "{read:?}"
    );
    // Both subjects are the topic's, registered as PROTOBUF.
    let registered = subjects();
    for subject in [format!("{topic}-key"), format!("{topic}-value")] {
        assert!(registered.contains(&subject), "{subject} in {registered:?}");
        let (_, body) =
            common::registry::request("GET", &format!("/subjects/{subject}/versions/latest"), "");
        let answer: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(answer["schemaType"], "PROTOBUF", "{answer}");
    }
    println!(
        "Apicurio served .proto text where Confluent's registry serves descriptors: {}",
        read[1]["registry_served_text"]
    );
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

/// A schema of the kinds other writers use: a first message the records are not of (so their
/// message index is 1), nested messages, enums, maps, well-known types, Confluent's decimal,
/// `optional`.
fn order_proto(package: &str) -> String {
    format!(
        r#"syntax = "proto3";
package {package};
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
import "confluent/type/decimal.proto";
message Unused {{ string x = 1; }}
message Order {{
  message Line {{ string sku = 1; uint32 qty = 2; }}
  enum Status {{ NEW = 0; PAID = 1; }}
  int64 _id = 1;
  string customer = 2;
  repeated Line lines = 3;
  map<string, int32> counts = 4;
  Status status = 5;
  google.protobuf.Timestamp at = 6;
  google.protobuf.StringValue note = 7;
  bytes raw = 8;
  double total = 9;
  optional string coupon = 10;
  bool gift = 11;
  confluent.type.Decimal price = 12;
}}
"#
    )
}

#[tokio::test]
async fn protobuf_records_of_confluents_serializer_are_written_to_mongodb() {
    subjects();
    let package = common::unique("protobuf_b").replace('-', "_");
    let sink = Sink::new(
        1,
        &format!(
            "value_format = \"protobuf\"\nkey_format = \"string\"\nid_strategy = \"provided_in_value\"\n{}",
            common::registry::toml()
        ),
    )
    .await;
    let daemon = sink.start();
    let dir = tempfile::tempdir().expect("tempdir");
    let proto = common::write_file(dir.path(), "order.proto", &order_proto(&package));
    let records = json!([
        {"key": "1", "value": {
            "_id": "1", "customer": "ann", "lines": [{"sku": "a", "qty": 2}], "counts": {"x": 1},
            "status": "PAID", "at": "2024-01-02T03:04:05.678Z", "note": "hi", "raw": "AAE=",
            "total": 9.5, "coupon": "C1", "gift": true,
            "price": {"value": "AeI=", "precision": 3, "scale": 2}}},
        {"key": "2", "value": {"_id": "2"}},
    ]);
    // RecordNameStrategy: the subject is the message's full name, not the topic's.
    let produced = confluent(&[
        "produce",
        &common::registry::url(),
        &common::kafka_bootstrap(),
        &sink.topic,
        "record_name",
        proto.to_str().expect("a path"),
        &format!("{package}.Order"),
        &records.to_string(),
    ]);
    assert_eq!(produced["subjects"], json!([format!("{package}.Order")]));
    let expected = [
        doc! {
            "_id": 1_i64, "customer": "ann", "lines": [{ "sku": "a", "qty": 2_i64 }],
            "counts": { "x": 1 }, "status": "PAID",
            "at": DateTime::parse_rfc3339_str("2024-01-02T03:04:05.678Z").expect("a date"),
            "note": "hi", "raw": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1] },
            "total": 9.5, "coupon": "C1", "gift": true,
            "price": "4.82".parse::<Decimal128>().expect("a decimal"),
        },
        // Unset proto3 scalars are their defaults; unset fields with presence are null.
        doc! {
            "_id": 2_i64, "customer": "", "lines": [], "counts": {}, "status": "NEW",
            "at": Bson::Null, "note": Bson::Null,
            "raw": Binary { subtype: BinarySubtype::Generic, bytes: vec![] },
            "total": 0.0, "coupon": Bson::Null, "gift": false, "price": Bson::Null,
        },
    ];
    let arrived = common::eventually(WAIT, || async {
        sink.documents().await.len() == expected.len()
    })
    .await;
    let written = sink.documents().await;
    assert!(arrived, "{written:#?}\nlog:\n{}", daemon.log());
    for doc in &expected {
        let found = written
            .values()
            .find(|w| w.get("_id") == doc.get("_id"))
            .unwrap_or_else(|| panic!("{doc} not in {written:#?}"));
        assert_eq!(found, doc);
    }
    sink.stop(daemon).await;
}

#[tokio::test]
async fn protobuf_subjects_match_confluents_for_each_strategy() {
    subjects();
    for (strategy, ours) in [
        ("topic_name", "topic_name"),
        ("record_name", "record_name"),
        ("topic_record_name", "topic_record_name"),
    ] {
        let package = common::unique("protobuf_c").replace('-', "_");
        let db = common::unique("protobuf_c");
        let topic = format!("{db}.c");
        let schema = format!(
            "syntax = \"proto3\";\npackage {package};\nmessage Order {{ int64 _id = 1; string sku = 2; }}\n"
        );
        let config = common::config_toml(
            common::free_port(),
            &format!(
                "[[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
                 value_format = \"protobuf\"\nvalue_subject_name_strategy = \"{ours}\"\n\
                 value_schema = '''{schema}'''\npublish_full_document_only = true\nmax_await_time = \"300ms\"\n{registry}",
                src = common::unique("protobuf_src"),
                registry = common::registry::toml(),
            ),
        );
        let mut daemon = common::Daemon::start(&config);
        daemon.wait_for_log("change stream open", 1, WAIT);
        let client = common::mongo_client().await;
        client
            .database(&db)
            .collection::<Document>("c")
            .insert_one(doc! { "_id": 5_i64, "sku": "a", "extra": true })
            .await
            .expect("insert");
        let records = common::consume(&topic, 1, WAIT, false).await;
        assert_eq!(records.len(), 1, "{strategy}: log:\n{}", daemon.log());
        daemon.terminate(WAIT);
        let ours: Vec<String> = subjects()
            .into_iter()
            .filter(|s| s.contains(&package) || s.starts_with(&topic))
            .collect();
        // Confluent's serializer, for the same topic and message, with the same strategy.
        let dir = tempfile::tempdir().expect("tempdir");
        let proto = common::write_file(dir.path(), "order.proto", &schema);
        let produced = confluent(&[
            "produce",
            &common::registry::url(),
            &common::kafka_bootstrap(),
            &topic,
            strategy,
            proto.to_str().expect("a path"),
            &format!("{package}.Order"),
            &json!([{"key": "6", "value": {"_id": "6", "sku": "b"}}]).to_string(),
        ]);
        let theirs: Vec<String> =
            serde_json::from_value(produced["subjects"].clone()).expect("subjects");
        let expected = match strategy {
            "topic_name" => format!("{topic}-value"),
            "record_name" => format!("{package}.Order"),
            _ => format!("{topic}-{package}.Order"),
        };
        assert_eq!(ours, vec![expected.clone()], "{strategy}: ours");
        assert_eq!(theirs, vec![expected], "{strategy}: Confluent's");
        // Both records on the topic read back by our reader: ours and Confluent's.
        let both = common::consume(&topic, 2, WAIT, false).await;
        let reader = mongo_kafka_bridge::codec::protobuf::ProtobufReader::new(
            &mongo_kafka_bridge::config::SchemaRegistryConfig::at(common::registry::url()),
        )
        .expect("a reader");
        let mut ids = Vec::new();
        for record in &both {
            let value = record.value.as_deref().expect("a value");
            let doc = mongo_kafka_bridge::codec::schema_registry::blocking(|| reader.read(value))
                .unwrap_or_else(|e| panic!("{strategy}: {e}"));
            ids.push(doc.get_i64("_id").unwrap_or_default());
        }
        assert_eq!(ids, [5, 6], "{strategy}");
        let _ = client.database(&db).drop().await;
    }
}

#[tokio::test]
async fn protobuf_bad_records_are_dead_lettered_naming_the_reason() {
    subjects();
    // An Avro schema: its id in a Protobuf record is refused.
    let subject = common::unique("protobuf_d");
    let (status, body) = common::registry::request(
        "POST",
        &format!("/subjects/{subject}/versions"),
        &json!({"schema": "{\"type\":\"record\",\"name\":\"A\",\"fields\":[]}"}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let avro_id = serde_json::from_str::<Value>(&body).expect("JSON")["id"]
        .as_u64()
        .expect("an id") as u32;
    let proto_subject = common::unique("protobuf_d");
    let (status, body) = common::registry::request(
        "POST",
        &format!("/subjects/{proto_subject}/versions"),
        &json!({"schemaType": "PROTOBUF", "schema": format!("syntax = \"proto3\";\npackage {};\nmessage A {{ string s = 1; }}\n", proto_subject)}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let proto_id = serde_json::from_str::<Value>(&body).expect("JSON")["id"]
        .as_u64()
        .expect("an id") as u32;
    let dlq = common::unique("protobuf_dlq");
    let sink = Sink::new(
        1,
        &format!(
            "value_format = \"protobuf\"\nkey_format = \"string\"\nid_strategy = \"kafka_meta\"\n{}\
             errors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}",
            common::registry::toml()
        ),
    )
    .await;
    let daemon = sink.start();
    let framed = |id: u32, rest: &[u8]| {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend_from_slice(rest);
        bytes
    };
    let bad = [
        ("avro", framed(avro_id, &[0])),
        // Message index 3 of a schema with one message.
        ("index", framed(proto_id, &[2, 6])),
        // Field 1 (a string) saying it is 100 bytes long, with 1 after it.
        ("bytes", framed(proto_id, &[0, 0x0a, 100, b'x'])),
        // One good record after them: written.
        ("good", framed(proto_id, &[0, 0x0a, 2, b'o', b'k'])),
    ];
    common::produce(
        &sink.topic,
        &bad.iter()
            .map(|(key, value)| Outgoing {
                key: Some(key.as_bytes().to_vec()),
                value: Some(value.clone()),
                ..Outgoing::default()
            })
            .collect::<Vec<_>>(),
    )
    .await;
    let dead = common::consume(&dlq, 3, WAIT, false).await;
    assert_eq!(dead.len(), 3, "log:\n{}", daemon.log());
    for (record, why) in dead.iter().zip([
        format!("schema {avro_id} is AVRO, not Protobuf"),
        format!("schema {proto_id}: message index 3 is out of range: the schema has 1 message(s)"),
        format!("is not Protobuf of message {proto_subject}.A of schema {proto_id}"),
    ]) {
        assert_eq!(header(record, "mkb.error.stage"), "decode");
        let reason = header(record, "mkb.error");
        assert!(reason.contains(&why), "{why} in {reason}");
    }
    let arrived = common::eventually(WAIT, || async { sink.documents().await.len() == 1 }).await;
    let written = sink.documents().await;
    assert!(arrived, "{written:#?}\nlog:\n{}", daemon.log());
    assert_eq!(
        written.values().next().and_then(|d| d.get_str("s").ok()),
        Some("ok")
    );
    sink.stop(daemon).await;
}

#[tokio::test]
async fn protobuf_change_events_round_trip_through_the_registry_into_mongodb() {
    subjects();
    // Protobuf carries ObjectIds as hex text (decimals as Connect's confluent.type.Decimal):
    // a dotted name in `updatedFields` is renamed in the schema and restored by the sink.
    common::registry::round_trip("protobuf", every_type, |mut doc| {
        if let Ok(oid) = doc.get_object_id("oid") {
            doc.insert("oid", oid.to_hex());
        }
        doc
    })
    .await;
}

#[tokio::test]
async fn protobuf_subject_name_strategies_name_avro_and_json_schema_subjects_too() {
    subjects();
    let db = common::unique("protobuf_e");
    let topic = format!("{db}.c");
    let namespace = common::unique("protobuf_e").replace('-', "_");
    let avro = format!(
        r#"{{"type": "record", "name": "Key", "namespace": "{namespace}", "fields": [{{"name": "_id", "type": "int"}}]}}"#
    );
    let json_schema = format!(
        r#"{{"$schema": "http://json-schema.org/draft-07/schema#", "title": "{namespace}.Order", "type": "object", "properties": {{"sku": {{"type": "string"}}}}}}"#
    );
    let config = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
             key_format = \"avro\"\nkey_schema = '{avro}'\nkey_subject_name_strategy = \"record_name\"\n\
             value_format = \"json_schema\"\nvalue_schema = '{json_schema}'\n\
             value_subject_name_strategy = \"topic_record_name\"\n\
             publish_full_document_only = true\nmax_await_time = \"300ms\"\n{registry}",
            src = common::unique("protobuf_src"),
            registry = common::registry::toml(),
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    let client = common::mongo_client().await;
    client
        .database(&db)
        .collection::<Document>("c")
        .insert_one(doc! { "_id": 1, "sku": "a" })
        .await
        .expect("insert");
    let records = common::consume(&topic, 1, WAIT, false).await;
    assert_eq!(records.len(), 1, "log:\n{}", daemon.log());
    daemon.terminate(WAIT);
    let ours: Vec<String> = subjects()
        .into_iter()
        .filter(|s| s.contains(&namespace) || s.starts_with(&topic))
        .collect();
    // The Avro record's full name; the topic and the JSON Schema's title.
    let mut expected = vec![
        format!("{namespace}.Key"),
        format!("{topic}-{namespace}.Order"),
    ];
    expected.sort();
    let mut ours = ours;
    ours.sort();
    assert_eq!(ours, expected);
    let _ = client.database(&db).drop().await;
}

#[tokio::test]
async fn protobuf_pipelines_hold_back_while_the_registry_does_not_answer_and_lose_nothing() {
    subjects();
    // A record for the sink, written with the registry itself.
    let sink_topic = common::unique("protobuf_hold_in");
    common::create_topic(&sink_topic, 1).await;
    let writer = mongo_kafka_bridge::codec::protobuf::ProtobufWriter::new(
        &mongo_kafka_bridge::config::SchemaRegistryConfig::at(common::registry::url()),
    )
    .expect("a writer");
    let subject = format!("{sink_topic}-value");
    let value = mongo_kafka_bridge::codec::schema_registry::fetching(|| {
        writer.write(&doc! {"_id": 100, "from": "kafka"}, "Document", &subject)
    })
    .await
    .expect("registers");
    common::registry::an_outage_holds_back_both_pipelines_and_loses_nothing(
        "protobuf",
        "protobuf_hold",
        &sink_topic,
        value,
    )
    .await;
}

#[tokio::test]
async fn protobuf_a_bad_record_stops_a_sink_without_dead_letters_naming_where() {
    subjects();
    let sink = Sink::new(
        1,
        &format!(
            "value_format = \"protobuf\"\nkey_format = \"string\"\nid_strategy = \"kafka_meta\"\n{}",
            common::registry::toml()
        ),
    )
    .await;
    let mut daemon = sink.start();
    // Not the wire format at all.
    common::produce(
        &sink.topic,
        &[Outgoing {
            key: Some(b"k".to_vec()),
            value: Some(b"{\"not\": \"protobuf\"}".to_vec()),
            ..Outgoing::default()
        }],
    )
    .await;
    daemon.wait_for_log("sink pipeline failed", 1, WAIT);
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("sink pipeline failed"))
        .unwrap_or_default();
    assert!(
        line.contains(&sink.topic) && line.contains("@0") && line.contains("magic byte"),
        "the failure names the topic, partition and offset and why: {line}"
    );
    sink.stop(daemon).await;
}
