//! Avro through a real schema registry: Apicurio Registry's Confluent-compatible API from
//! `test-services/registry.sh` (`services.sh up` starts it), or the registry at
//! `SCHEMA_REGISTRY_URL`. Without one these tests fail, saying how to start it.

mod common;

use common::sink::{header, Sink, WAIT};
use common::Outgoing;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, DateTime, Decimal128, Document};

/// A document of every BSON type the Avro mapping carries as itself.
fn every_type(id: i32) -> Document {
    doc! {
        "_id": id,
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
async fn avro_change_events_round_trip_through_the_registry_into_mongodb() {
    // Avro carries every type of `every_type` as itself.
    common::registry::round_trip("avro", every_type, |doc| doc).await;
}

#[tokio::test]
async fn json_schema_change_events_round_trip_through_the_registry_into_mongodb() {
    // JSON carries decimals as strings and 64-bit integers that fit 32 bits as int32.
    common::registry::round_trip("json_schema", every_type, |mut doc| {
        if let Ok(decimal) = doc.get_decimal128("decimal") {
            let text = decimal.to_string();
            doc.insert("decimal", text);
        }
        if let Ok(lines) = doc.get_array_mut("lines") {
            for line in lines.iter_mut() {
                if let Bson::Document(line) = line {
                    let qty = line.get_i64("qty").unwrap_or_default();
                    line.insert("qty", i32::try_from(qty).unwrap_or_default());
                }
            }
        }
        doc
    })
    .await;
}

#[tokio::test]
async fn a_record_with_an_unknown_schema_id_is_dead_lettered_with_the_reason() {
    let (status, _) = common::registry::get("/subjects");
    assert_eq!(status, 200, "the registry's /subjects");
    // Apicurio's ids count up from 1; no test registers two billion schemas.
    let unknown: u32 = 2_000_000_000;
    let (status, _) = common::registry::get(&format!("/schemas/ids/{unknown}"));
    assert_eq!(status, 404, "schema {unknown} should not exist");
    let dlq = common::unique("dlq");
    let sink = Sink::new(
        1,
        &format!(
            "value_format = \"avro\"\nkey_format = \"string\"\nid_strategy = \"kafka_meta\"\n{}\
             errors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}",
            common::registry::toml()
        ),
    )
    .await;
    let daemon = sink.start();
    let mut unknown_id = vec![0];
    unknown_id.extend_from_slice(&unknown.to_be_bytes());
    unknown_id.extend_from_slice(&[2, 2]);
    common::produce(
        &sink.topic,
        &[
            Outgoing {
                key: Some(b"unknown".to_vec()),
                value: Some(unknown_id.clone()),
                ..Outgoing::default()
            },
            Outgoing {
                key: Some(b"json".to_vec()),
                value: Some(br#"{"not": "avro"}"#.to_vec()),
                ..Outgoing::default()
            },
        ],
    )
    .await;
    let dead = common::consume(&dlq, 2, WAIT, false).await;
    assert_eq!(dead.len(), 2, "log:\n{}", daemon.log());
    assert_eq!(dead[0].value.as_deref(), Some(unknown_id.as_slice()));
    assert_eq!(header(&dead[0], "mkb.error.stage"), "decode");
    let reason = header(&dead[0], "mkb.error");
    assert!(
        reason.contains(&format!("no schema with id {unknown}")),
        "{reason}"
    );
    assert!(
        header(&dead[1], "mkb.error").contains("magic byte"),
        "{dead:?}"
    );
    let written = sink
        .collection()
        .await
        .count_documents(doc! {})
        .await
        .expect("count");
    assert_eq!(written, 0, "nothing is written from undecodable records");
    sink.stop(daemon).await;
}

/// `test-services/registry.sh` with `args` and `env`; panics when it fails.
fn registry_script(args: &[&str], env: &[(&str, &str)]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-services/registry.sh");
    let status = std::process::Command::new(script)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .unwrap_or_else(|e| panic!("registry.sh {args:?}: {e}"));
    assert!(status.success(), "registry.sh {args:?}: {status}");
}

/// The `_id` of the `fullDocument` of an Avro change event record, read with `reader`; `None`
/// when the reader's registry does not know the record's schema.
fn full_document_id(
    reader: &mongo_kafka_bridge::codec::avro::AvroReader,
    record: &common::Consumed,
) -> Option<i32> {
    let value = record.value.as_deref()?;
    match mongo_kafka_bridge::codec::schema_registry::blocking(|| reader.read(value)) {
        Ok(Bson::Document(event)) => event.get_document("fullDocument").ok()?.get_i32("_id").ok(),
        _ => None,
    }
}

#[tokio::test]
async fn a_registry_down_mid_stream_delays_the_source_and_loses_nothing() {
    // A registry of this test's own, on a free port, sharing the build of the shared one.
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port().to_string();
    let build = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test-services/.cache/registry/build");
    let cache = dir.path().join("services");
    let env = [
        ("REGISTRY_PORT", port.as_str()),
        ("TEST_SERVICES_CACHE", cache.to_str().expect("path")),
        ("REGISTRY_BUILD", build.to_str().expect("path")),
        ("REGISTRY_HEAP", "256m"),
    ];
    registry_script(&["up"], &env);
    struct Down<'a>(&'a [(&'a str, &'a str)]);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            registry_script(&["down"], self.0);
        }
    }
    let _down = Down(&env);
    let url = format!("http://127.0.0.1:{port}/apis/ccompat/v7");

    let db = common::unique("avrodown");
    let topic = format!("{db}.c");
    let dlq = common::unique("dlq");
    let config = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nformat = \"avro\"\n\
             checkpoint_interval = \"200ms\"\nmax_await_time = \"300ms\"\n\
             schema_registry = {{ url = \"{url}\", timeout = \"2s\" }}\n\
             errors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}\n",
            src = common::unique("dsrc"),
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    let client = common::mongo_client().await;
    let source = client.database(&db).collection::<Document>("c");
    source
        .insert_one(doc! {"_id": 1, "a": "first"})
        .await
        .expect("insert");
    let first = common::consume(&topic, 1, WAIT, false).await;
    assert_eq!(first.len(), 1, "log:\n{}", daemon.log());

    // Down: a document of a new shape needs its schema registered.
    registry_script(&["down"], &env);
    source
        .insert_one(doc! {"_id": 2, "a": "second", "b": true})
        .await
        .expect("insert");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    // Up again (empty: its storage is in memory), and the event is published after all.
    registry_script(&["up"], &env);
    let reader = mongo_kafka_bridge::codec::avro::AvroReader::new(
        &mongo_kafka_bridge::config::SchemaRegistryConfig {
            timeout: std::time::Duration::from_secs(5),
            ..mongo_kafka_bridge::config::SchemaRegistryConfig::at(url.clone())
        },
    )
    .expect("a reader");
    let records = common::consume_until(&topic, WAIT, false, |records| {
        records
            .iter()
            .any(|r| full_document_id(&reader, r) == Some(2))
    })
    .await;
    assert!(
        records
            .iter()
            .any(|r| full_document_id(&reader, r) == Some(2)),
        "the event of document 2 never arrived: {} records; log:\n{}",
        records.len(),
        daemon.log()
    );
    let dead = common::consume(&dlq, 1, std::time::Duration::from_secs(2), false).await;
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

/// Reads one record in the registry wire format (the file `argv[1]`) with fastavro, the
/// schema fetched from the registry at `argv[2]`, and prints it as JSON (bytes as hex, other
/// non-JSON values as `str`).
const FASTAVRO_READER: &str = r#"
import io, json, struct, sys, urllib.request
import fastavro
data = open(sys.argv[1], "rb").read()
assert data[0] == 0, "magic byte"
schema_id = struct.unpack(">I", data[1:5])[0]
with urllib.request.urlopen(f"{sys.argv[2]}/schemas/ids/{schema_id}") as answer:
    schema = json.loads(json.load(answer)["schema"])
record = fastavro.schemaless_reader(io.BytesIO(data[5:]), fastavro.parse_schema(schema))
print(json.dumps(record, default=lambda v: v.hex() if isinstance(v, bytes) else str(v)))
"#;

#[tokio::test]
async fn fastavro_reads_our_avro_records() {
    let (status, _) = common::registry::get("/subjects");
    assert_eq!(status, 200, "the registry's /subjects");
    // A Python with fastavro from PyPI, made once by the project's script.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-services/registry.sh");
    let out = std::process::Command::new(script)
        .arg("fastavro")
        .output()
        .expect("registry.sh fastavro");
    assert!(
        out.status.success(),
        "registry.sh fastavro: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let db = common::unique("fastavro");
    let topic = format!("{db}.c");
    let config = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nformat = \"avro\"\n\
             publish_full_document_only = true\nmax_await_time = \"300ms\"\n{registry}",
            src = common::unique("fsrc"),
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
    let file = dir.path().join("value.bin");
    std::fs::write(&file, records[0].value.as_deref().expect("a value")).expect("write");
    let read = std::process::Command::new(&python)
        .args(["-c", FASTAVRO_READER])
        .arg(&file)
        .arg(common::registry::url())
        .output()
        .expect("python");
    assert!(
        read.status.success(),
        "fastavro failed: {}",
        String::from_utf8_lossy(&read.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&read.stdout).expect("JSON");
    assert_eq!(
        value,
        serde_json::json!({
            "_id": 1,
            "double": 1.25,
            "string": "héllo",
            "int32": -7,
            "int64": i64::MAX,
            "bool": true,
            "date": "2023-11-14 22:13:20.123000+00:00",
            "decimal": "-12345.678",
            "binary": "0001feff",
            "null": null,
            "nested": { "city": "Oslo", "geo": { "lat": 59.9, "lon": 10.7 } },
            "ints": [1, 2, 3],
            "lines": [{ "sku": "a", "qty": 1 }, { "sku": "b", "qty": 2 }],
            "odd_name_1": "kept",
        })
    );
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

#[tokio::test]
async fn a_registry_down_holds_the_sink_back_and_loses_nothing() {
    // A registry of this test's own, fresh, so the schema registered first gets id 1 there
    // again after a restart (its storage is in memory).
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port().to_string();
    let build = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test-services/.cache/registry/build");
    let cache = dir.path().join("services");
    let env = [
        ("REGISTRY_PORT", port.as_str()),
        ("TEST_SERVICES_CACHE", cache.to_str().expect("path")),
        ("REGISTRY_BUILD", build.to_str().expect("path")),
        ("REGISTRY_HEAP", "256m"),
    ];
    struct Down<'a>(&'a [(&'a str, &'a str)]);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            registry_script(&["down"], self.0);
        }
    }
    let _down = Down(&env);
    let config = mongo_kafka_bridge::config::SchemaRegistryConfig {
        timeout: std::time::Duration::from_secs(5),
        ..mongo_kafka_bridge::config::SchemaRegistryConfig::at(format!(
            "http://127.0.0.1:{port}/apis/ccompat/v7"
        ))
    };
    let register = || {
        let writer = mongo_kafka_bridge::codec::avro::AvroWriter::new(&config).expect("a writer");
        (1..=3)
            .map(|i| {
                let doc = doc! {"_id": i, "n": i * 10};
                let value = mongo_kafka_bridge::codec::schema_registry::blocking(|| {
                    writer.write(&doc, "Document", "held-value")
                })
                .expect("registers and encodes");
                assert_eq!(
                    &value[..5],
                    &[0, 0, 0, 0, 1],
                    "schema id 1 on a fresh registry"
                );
                value
            })
            .collect::<Vec<_>>()
    };
    registry_script(&["up"], &env);
    let values = register();
    registry_script(&["down"], &env);

    let dlq = common::unique("dlq");
    let sink = Sink::new(
        1,
        &format!(
            "value_format = \"avro\"\nid_strategy = \"provided_in_value\"\n\
             schema_registry = {{ url = \"{}\", timeout = \"2s\" }}\n\
             errors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}",
            config.url
        ),
    )
    .await;
    let records: Vec<Outgoing> = values
        .into_iter()
        .map(|value| Outgoing {
            value: Some(value),
            ..Outgoing::default()
        })
        .collect();
    common::produce(&sink.topic, &records).await;
    let daemon = sink.start();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let dead = common::consume(&dlq, 1, std::time::Duration::from_secs(2), false).await;
    assert!(
        dead.is_empty(),
        "dead-lettered while the registry was down: {dead:?}"
    );
    let written = sink
        .collection()
        .await
        .count_documents(doc! {})
        .await
        .expect("count");
    assert_eq!(written, 0, "written without a schema?");
    // Back, with the same schema under the same id: the records are written.
    registry_script(&["up"], &env);
    register();
    assert_eq!(sink.wait_for_count(3).await, 3, "log:\n{}", daemon.log());
    let docs = sink.documents().await;
    assert_eq!(docs["1"], doc! {"_id": 1, "n": 10});
    let dead = common::consume(&dlq, 1, std::time::Duration::from_secs(2), false).await;
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
    sink.stop(daemon).await;
}

/// The latest schema under `subject`: its type (`AVRO` when the registry leaves it out) and
/// its text, parsed.
fn latest_schema(subject: &str) -> (String, serde_json::Value) {
    let (status, body) = common::registry::get(&format!("/subjects/{subject}/versions/latest"));
    assert_eq!(status, 200, "{subject}: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let kind = answer["schemaType"].as_str().unwrap_or("AVRO").to_owned();
    let schema = serde_json::from_str(answer["schema"].as_str().expect("a schema")).expect("JSON");
    (kind, schema)
}

/// Waits until the `_id`s `ids` of `copy` hold `expected` (in order); panics with the log.
async fn wait_for_copy(
    copy: &mongodb::Collection<Document>,
    expected: &[Document],
    daemon: &common::Daemon,
) {
    let arrived = common::eventually(WAIT, || {
        let (copy, expected) = (copy.clone(), expected.to_vec());
        async move {
            for doc in &expected {
                let found = copy
                    .find_one(doc! {"_id": doc.get("_id").cloned()})
                    .await
                    .ok()
                    .flatten();
                if found.as_ref() != Some(doc) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    if !arrived {
        let found: Vec<Document> = match copy.find(doc! {}).await {
            Ok(cursor) => futures_util::TryStreamExt::try_collect(cursor)
                .await
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        panic!(
            "the copy is not what was expected:\n expected {expected:#?}\n found {found:#?}\nlog:\n{}",
            daemon.log()
        );
    }
}

#[tokio::test]
async fn key_and_value_formats_apart_round_trip_through_the_shared_registry() {
    let (status, _) = common::registry::get("/subjects");
    assert_eq!(status, 200, "the registry's /subjects");
    let db = common::unique("schm_kv");
    let topic = format!("{db}.c");
    // One registry for every pipeline, in `[kafka]`; neither pipeline names one.
    let config = common::config_toml(
        common::free_port(),
        &format!(
            "[kafka.schema_registry]\nurl = \"{url}\"\n\
             [[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
             key_format = \"avro\"\nvalue_format = \"json_schema\"\n\
             full_document = \"updateLookup\"\nmax_await_time = \"300ms\"\n\
             [[sink]]\nname = \"{snk}\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\ncollection = \"c_copy\"\n\
             cdc_handler = \"mongodb\"\nkey_format = \"avro\"\nvalue_format = \"json_schema\"\nmax_batch_delay = \"50ms\"\n",
            url = common::registry::url(),
            src = common::unique("schm_kvsrc"),
            snk = common::unique("schm_kvsnk"),
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    let client = common::mongo_client().await;
    let source = client.database(&db).collection::<Document>("c");
    let at = DateTime::from_millis(1_700_000_000_123);
    source
        .insert_many([
            doc! {"_id": 1, "name": "one", "at": at, "tags": ["a", "b"]},
            doc! {"_id": 2, "name": "two", "nested": {"n": 2_i64}},
        ])
        .await
        .expect("insert");
    source
        .update_one(doc! {"_id": 1}, doc! {"$set": {"name": "uno"}})
        .await
        .expect("update");
    let copy = client.database(&db).collection::<Document>("c_copy");
    wait_for_copy(
        &copy,
        &[
            doc! {"_id": 1, "name": "uno", "at": at, "tags": ["a", "b"]},
            // JSON carries the int64 2 as a number that fits int32.
            doc! {"_id": 2, "name": "two", "nested": {"n": 2}},
        ],
        &daemon,
    )
    .await;
    // Each part in its own format, under its own subject.
    let (key_type, key_schema) = latest_schema(&format!("{topic}-key"));
    assert_eq!(key_type, "AVRO", "{key_schema}");
    assert_eq!(key_schema["type"], "record", "{key_schema}");
    let (value_type, value_schema) = latest_schema(&format!("{topic}-value"));
    assert_eq!(value_type, "JSON", "{value_schema}");
    assert_eq!(value_schema["type"], "object", "{value_schema}");
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

/// The Avro schema the source is given for document values: a renamed field, a decimal of
/// scale 2, a field with a default.
const GIVEN_VALUE_SCHEMA: &str = r#"{"type": "record", "name": "Product", "namespace": "schm.test", "fields": [
    {"name": "_id", "type": "long"},
    {"name": "name", "type": "string"},
    {"name": "list_price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}, "mongo_name": "list price"},
    {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}
]}"#;

/// The JSON Schema the source is given for keys.
const GIVEN_KEY_SCHEMA: &str = r#"{"$schema": "http://json-schema.org/draft-07/schema#", "title": "ProductKey", "type": "object", "properties": {"_id": {"type": "integer", "minimum": 0}}}"#;

#[tokio::test]
async fn schemas_given_in_the_config_are_registered_and_what_does_not_fit_is_dead_lettered() {
    let (status, _) = common::registry::get("/subjects");
    assert_eq!(status, 200, "the registry's /subjects");
    let db = common::unique("schm_given");
    let topic = format!("{db}.c");
    let dlq = common::unique("schm_dlq");
    let toml_text = |text: &str| format!("'''{text}'''");
    let config = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
             key_format = \"json_schema\"\nvalue_format = \"avro\"\npublish_full_document_only = true\n\
             key_schema = {key_schema}\nvalue_schema = {value_schema}\nmax_await_time = \"300ms\"\n\
             errors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}\n{registry}\
             [[sink]]\nname = \"{snk}\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\ncollection = \"c_copy\"\n\
             key_format = \"json_schema\"\nvalue_format = \"avro\"\nmax_batch_delay = \"50ms\"\n{registry}",
            key_schema = toml_text(GIVEN_KEY_SCHEMA),
            value_schema = toml_text(GIVEN_VALUE_SCHEMA),
            registry = common::registry::toml(),
            src = common::unique("schm_gsrc"),
            snk = common::unique("schm_gsnk"),
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    let client = common::mongo_client().await;
    let source = client.database(&db).collection::<Document>("c");
    let price = |text: &str| text.parse::<Decimal128>().expect("decimal");
    source
        .insert_one(
            doc! {"_id": 1, "name": "kept", "list price": price("9.5"), "not in the schema": true},
        )
        .await
        .expect("insert");
    source
        .insert_one(doc! {"_id": 2, "name": 5, "list price": price("1")})
        .await
        .expect("insert");
    source
        .insert_one(doc! {"_id": 3, "name": "also kept", "list price": 12_i32, "tags": ["x"]})
        .await
        .expect("insert");
    // A key the given JSON Schema refuses (`minimum: 0`): checked before it is written.
    source
        .insert_one(doc! {"_id": -4, "name": "negative key", "list price": price("2")})
        .await
        .expect("insert");
    let copy = client.database(&db).collection::<Document>("c_copy");
    wait_for_copy(
        &copy,
        &[
            // In the schema's shape: `_id` a long, the price at scale 2, the default tags.
            doc! {"_id": 1_i64, "name": "kept", "list price": price("9.50"), "tags": []},
            doc! {"_id": 3_i64, "name": "also kept", "list price": price("12.00"), "tags": ["x"]},
        ],
        &daemon,
    )
    .await;
    let dead = common::consume(&dlq, 2, WAIT, false).await;
    assert_eq!(dead.len(), 2, "log:\n{}", daemon.log());
    let reason = header(&dead[0], "mkb.error");
    assert!(
        reason.contains("does not fit the configured schema") && reason.contains("`name` is int32"),
        "{reason}"
    );
    let reason = header(&dead[1], "mkb.error");
    assert!(
        reason.contains("does not fit the given JSON Schema at `/_id`"),
        "{reason}"
    );
    for id in [2, -4] {
        assert!(
            copy.find_one(doc! {"_id": id})
                .await
                .expect("find")
                .is_none(),
            "document {id} does not fit and is not written"
        );
    }
    // The registry holds the schemas as given.
    let (kind, schema) = latest_schema(&format!("{topic}-value"));
    assert_eq!(kind, "AVRO");
    assert_eq!(
        schema,
        serde_json::from_str::<serde_json::Value>(GIVEN_VALUE_SCHEMA).expect("JSON")
    );
    let (kind, schema) = latest_schema(&format!("{topic}-key"));
    assert_eq!(kind, "JSON");
    assert_eq!(
        schema,
        serde_json::from_str::<serde_json::Value>(GIVEN_KEY_SCHEMA).expect("JSON")
    );
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

#[tokio::test]
async fn schema_evolution_follows_the_subjects_compatibility_and_refusals_are_dead_lettered() {
    let (status, _) = common::registry::get("/subjects");
    assert_eq!(status, 200, "the registry's /subjects");
    let db = common::unique("schm_evo");
    let topic = format!("{db}.c");
    let dlq = common::unique("schm_dlq");
    // The subject's rule, set through the Confluent-compatible API before anything is
    // registered: a new schema must read data written with the one before.
    let (status, body) = common::registry::request(
        "PUT",
        &format!("/config/{topic}-value"),
        r#"{"compatibility": "BACKWARD"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let config = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nformat = \"avro\"\n\
             publish_full_document_only = true\nmax_await_time = \"300ms\"\n\
             errors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}\n{registry}\
             [[sink]]\nname = \"{snk}\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\ncollection = \"c_copy\"\n\
             key_format = \"avro\"\nvalue_format = \"avro\"\nmax_batch_delay = \"50ms\"\n{registry}",
            registry = common::registry::toml(),
            src = common::unique("schm_esrc"),
            snk = common::unique("schm_esnk"),
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    let client = common::mongo_client().await;
    let source = client.database(&db).collection::<Document>("c");
    let docs = [
        doc! {"_id": 1, "a": "first"},
        // A new field: its schema reads the first's records (the field defaults to null).
        doc! {"_id": 2, "a": "second", "b": true},
        // `a` changes type: the registry refuses the schema under BACKWARD.
        doc! {"_id": 3, "a": 3},
        // The field gone again: the first schema, registered already.
        doc! {"_id": 4, "a": "fourth"},
    ];
    for doc in &docs {
        source.insert_one(doc.clone()).await.expect("insert");
    }
    let copy = client.database(&db).collection::<Document>("c_copy");
    wait_for_copy(
        &copy,
        &[docs[0].clone(), docs[1].clone(), docs[3].clone()],
        &daemon,
    )
    .await;
    let dead = common::consume(&dlq, 1, WAIT, false).await;
    assert_eq!(dead.len(), 1, "log:\n{}", daemon.log());
    let reason = header(&dead[0], "mkb.error");
    assert!(
        reason.contains("(HTTP 409): it breaks the subject's compatibility rule")
            && reason.contains(&format!("`{topic}-value`")),
        "the refusal and the subject: {reason}"
    );
    // The refused event is in the dead letter, whole (nothing lost).
    let dead_event = dead[0].json();
    assert_eq!(
        dead_event["fullDocument"]["a"],
        serde_json::json!({"$numberInt": "3"}),
        "{dead_event}"
    );
    assert!(
        copy.find_one(doc! {"_id": 3})
            .await
            .expect("find")
            .is_none(),
        "document 3 was refused"
    );
    let (status, versions) = common::registry::get(&format!("/subjects/{topic}-value/versions"));
    assert_eq!(status, 200, "{versions}");
    let versions: Vec<u32> = serde_json::from_str(&versions).expect("versions");
    assert_eq!(versions.len(), 2, "the first schema and the one with `b`");
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

/// The broker's test TLS material (`services.sh up` makes it): the CA file, and the broker's
/// certificate and key (the key taken out of its PKCS#12 keystore with `openssl`) in `dir`.
fn tls_material(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-services/.cache/tls");
    let (ca, cert, keystore) = (
        tls.join("ca.pem"),
        tls.join("broker.pem"),
        tls.join("broker.p12"),
    );
    assert!(
        ca.exists() && cert.exists() && keystore.exists(),
        "no test TLS material in {}: start the services with `test-services/services.sh up`",
        tls.display()
    );
    let key = dir.join("broker.key.pem");
    // The keystore password of `services.sh` (TLS_STORE_PASSWORD).
    let out = std::process::Command::new("openssl")
        .args([
            "pkcs12",
            "-nocerts",
            "-nodes",
            "-passin",
            "pass:mkb-test-keystore",
            "-in",
        ])
        .arg(&keystore)
        .arg("-out")
        .arg(&key)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl pkcs12: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (ca, cert, key)
}

/// A TLS-terminating proxy made for this test (rustls, with the broker's test certificate)
/// in front of the plain registry on `upstream`, since Apicurio is run without TLS: each
/// connection carries one HTTP/1.0 request and its answer. Answers its port.
fn tls_proxy(cert: &std::path::Path, key: &std::path::Path, upstream: u16) -> u16 {
    tls_proxy_with(cert, key, upstream, None)
}

/// [`tls_proxy`], asking every client for a certificate signed by `client_ca` when given
/// (mutual TLS).
fn tls_proxy_with(
    cert: &std::path::Path,
    key: &std::path::Path,
    upstream: u16,
    client_ca: Option<&std::path::Path>,
) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};
    let chain = CertificateDer::pem_file_iter(cert)
        .expect("the certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM");
    let key = PrivateKeyDer::from_pem_file(key).expect("the key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in CertificateDer::pem_file_iter(ca).expect("the client CA") {
                roots
                    .add(certificate.expect("PEM"))
                    .expect("a CA certificate");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider,
            )
            .build()
            .expect("a client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .expect("a server certificate");
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(connection) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(connection, tcp);
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // The head, then as many body bytes as it announces.
                let complete = |request: &[u8]| {
                    let text = String::from_utf8_lossy(request);
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        return false;
                    };
                    let length = head
                        .lines()
                        .filter_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .next()
                        .unwrap_or(0);
                    body.len() >= length
                };
                while !complete(&request) {
                    match tls.read(&mut buffer) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let Ok(mut plain) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let mut answer = Vec::new();
                if plain.write_all(&request).is_err() || plain.read_to_end(&mut answer).is_err() {
                    return;
                }
                let _ = tls.write_all(&answer);
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

#[tokio::test]
async fn an_https_registry_is_trusted_through_its_ca_file() {
    let (status, _) = common::registry::get("/subjects");
    assert_eq!(status, 200, "the registry's /subjects");
    let upstream = url::Url::parse(&common::registry::url())
        .ok()
        .and_then(|u| u.port())
        .expect("the registry's port");
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = tls_material(dir.path());
    let port = tls_proxy(&cert, &key, upstream);
    let url = format!("https://127.0.0.1:{port}/apis/ccompat/v7");

    // Without the CA file the certificate is not trusted: the registry is unreachable.
    let untrusted = mongo_kafka_bridge::codec::avro::AvroWriter::new(
        &mongo_kafka_bridge::config::SchemaRegistryConfig::at(url.clone()),
    )
    .expect("a writer");
    let err = mongo_kafka_bridge::codec::schema_registry::fetching(|| {
        untrusted.write(&doc! {"_id": 1}, "Document", "schm_untrusted-value")
    })
    .await
    .expect_err("an unknown CA");
    assert!(
        err.to_string().contains("unreachable") && err.to_string().contains("certificate"),
        "{err}"
    );

    let db = common::unique("schm_tls");
    let topic = format!("{db}.c");
    let registry = format!(
        "schema_registry = {{ url = \"{url}\", ca_file = \"{}\" }}\n",
        ca.display()
    );
    let config = common::config_toml(
        common::free_port(),
        &format!(
            "[[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nformat = \"avro\"\n\
             publish_full_document_only = true\nmax_await_time = \"300ms\"\n{registry}\
             [[sink]]\nname = \"{snk}\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\ncollection = \"c_copy\"\n\
             key_format = \"avro\"\nvalue_format = \"avro\"\nmax_batch_delay = \"50ms\"\n{registry}",
            src = common::unique("schm_tsrc"),
            snk = common::unique("schm_tsnk"),
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    daemon.wait_for_log("sink pipeline running", 1, WAIT);
    let client = common::mongo_client().await;
    let doc = doc! {"_id": 1, "over": "tls", "at": DateTime::from_millis(5)};
    client
        .database(&db)
        .collection::<Document>("c")
        .insert_one(doc.clone())
        .await
        .expect("insert");
    let copy = client.database(&db).collection::<Document>("c_copy");
    wait_for_copy(&copy, &[doc], &daemon).await;
    // Registered through the proxy: the plain registry has it.
    let (kind, _) = latest_schema(&format!("{topic}-value"));
    assert_eq!(kind, "AVRO");
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

#[tokio::test]
async fn ready_says_why_while_the_registry_does_not_answer_and_nothing_is_lost() {
    let (status, _) = common::registry::get("/subjects");
    assert_eq!(status, 200, "the registry's /subjects");
    // A record for the sink, written with the registry itself.
    let sink_topic = common::unique("schm_ready_in");
    common::create_topic(&sink_topic, 1).await;
    let writer = mongo_kafka_bridge::codec::avro::AvroWriter::new(
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
        "avro",
        "schm_ready",
        &sink_topic,
        value,
    )
    .await;
}

/// A registry that accepts connections and never answers (a blackholed address): each
/// connection is held open until the test ends.
fn silent_registry() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}

/// The registry is asked off the thread that runs every reader, the producer and `/health`:
/// one pipeline whose registry never answers holds back its own records, and no other
/// pipeline's.
#[tokio::test]
async fn a_silent_registry_of_one_pipeline_does_not_hold_back_another_or_health() {
    let silent = silent_registry();
    let db = common::unique("config_silent");
    let http = common::free_port();
    let config = common::config_toml(
        http,
        &format!(
            "[[source]]\nname = \"{held}\"\ndatabase = \"{db}\"\ncollection = \"held\"\nformat = \"avro\"\n\
             max_await_time = \"300ms\"\n\
             schema_registry = {{ url = \"http://127.0.0.1:{silent}\", timeout = \"60s\" }}\n\
             [[source]]\nname = \"{free}\"\ndatabase = \"{db}\"\ncollection = \"free\"\n\
             max_await_time = \"300ms\"\n",
            held = common::unique("config_held"),
            free = common::unique("config_free"),
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 2, WAIT);
    let client = common::mongo_client().await;
    // The held pipeline asks the silent registry for its first record's schema id, and
    // would wait up to 60 s for the answer: longer than the 20 s shutdown deadline, which
    // the daemon meets all the same below (a stop does not wait for the registry).
    client
        .database(&db)
        .collection::<Document>("held")
        .insert_one(doc! {"_id": 0})
        .await
        .expect("insert");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let free_topic = format!("{db}.free");
    let free = client.database(&db).collection::<Document>("free");
    for id in 1..=3 {
        free.insert_one(doc! {"_id": id}).await.expect("insert");
        // Generous: the other pipeline's records arrive well before the registry's timeout.
        let records = common::consume_until(
            &free_topic,
            std::time::Duration::from_secs(10),
            false,
            |records| {
                records
                    .iter()
                    .any(|r| r.json()["fullDocument"]["_id"] == serde_json::json!(id))
            },
        )
        .await;
        assert!(
            records
                .iter()
                .any(|r| r.json()["fullDocument"]["_id"] == serde_json::json!(id)),
            "record {id} of the other pipeline held back with the silent registry; log:\n{}",
            daemon.log()
        );
        assert_eq!(
            common::http_get(http, "/health").map(|(status, _)| status),
            Some(200),
            "/health did not answer within 5 s"
        );
    }
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

/// An HTTP proxy of this test in front of the registry: while `refusing`, it answers every
/// request with 401 itself (credentials rotated, say); otherwise it forwards the request.
struct RefusingProxy {
    port: u16,
    refusing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl RefusingProxy {
    fn start(upstream: u16) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        let refusing = std::sync::Arc::new(AtomicBool::new(true));
        let refused = std::sync::Arc::new(AtomicUsize::new(0));
        let (flag, count) = (refusing.clone(), refused.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (flag, count) = (flag.clone(), count.clone());
                std::thread::spawn(move || {
                    let _ = Self::serve(client, upstream, &flag, &count);
                });
            }
        });
        Self {
            port,
            refusing,
            refused,
        }
    }

    fn serve(
        mut client: std::net::TcpStream,
        upstream: u16,
        refusing: &std::sync::atomic::AtomicBool,
        refused: &std::sync::atomic::AtomicUsize,
    ) -> std::io::Result<()> {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        client.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if client.read(&mut byte)? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let length = text
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())
                    .flatten()
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        client.read_exact(&mut body)?;
        if refusing.load(Ordering::SeqCst) {
            refused.fetch_add(1, Ordering::SeqCst);
            let answer = r#"{"error_code":40101,"message":"Unauthorized"}"#;
            write!(
                client,
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            )?;
            return Ok(());
        }
        // Forwarded with `Connection: close`, so the answer ends with the connection.
        let head: String = text
            .trim_end()
            .lines()
            .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
            .map(|line| format!("{line}\r\n"))
            .collect();
        let mut server = std::net::TcpStream::connect(("127.0.0.1", upstream))?;
        server.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        write!(server, "{head}Connection: close\r\n\r\n")?;
        server.write_all(&body)?;
        std::io::copy(&mut server, &mut client)?;
        Ok(())
    }

    fn forward(&self) {
        self.refusing
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Credentials the registry refuses (401, a rotation under way) hold the pipelines back, as an
/// unreachable registry does, saying why on `/ready`: with `tolerance = "all"`, nothing is
/// dead-lettered, and once the registry takes the credentials everything arrives.
#[tokio::test]
async fn refused_credentials_hold_the_pipelines_back_and_dead_letter_nothing() {
    let (status, _) = common::registry::get("/subjects");
    assert_eq!(status, 200, "the registry's /subjects");
    let upstream = url::Url::parse(&common::registry::url())
        .ok()
        .and_then(|u| u.port())
        .expect("the registry's port");
    let proxy = RefusingProxy::start(upstream);
    let through = format!("http://127.0.0.1:{}/apis/ccompat/v7", proxy.port);

    // A record for the sink, written with the registry itself.
    let db = common::unique("config_401");
    let sink_topic = common::unique("config_401_in");
    common::create_topic(&sink_topic, 1).await;
    let writer = mongo_kafka_bridge::codec::avro::AvroWriter::new(
        &mongo_kafka_bridge::config::SchemaRegistryConfig::at(common::registry::url()),
    )
    .expect("a writer");
    let doc = doc! {"_id": 100, "from": "kafka"};
    let subject = format!("{sink_topic}-value");
    let value = mongo_kafka_bridge::codec::schema_registry::fetching(|| {
        writer.write(&doc, "Document", &subject)
    })
    .await
    .expect("registers");
    common::produce(
        &sink_topic,
        &[Outgoing {
            value: Some(value),
            ..Outgoing::default()
        }],
    )
    .await;

    let http = common::free_port();
    let (src, snk) = (
        common::unique("config_401src"),
        common::unique("config_401snk"),
    );
    let (src_dlq, snk_dlq) = (
        common::unique("config_401sdlq"),
        common::unique("config_401kdlq"),
    );
    let config = common::config_toml(
        http,
        &format!(
            "[kafka.schema_registry]\nurl = \"{through}\"\nusername = \"bridge\"\npassword = \"rotated\"\ntimeout = \"2s\"\n\
             [[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nformat = \"avro\"\n\
             publish_full_document_only = true\nmax_await_time = \"300ms\"\n\
             errors = {{ tolerance = \"all\", dead_letter_topic = \"{src_dlq}\" }}\n\
             [[sink]]\nname = \"{snk}\"\ntopics = [\"{sink_topic}\"]\ndatabase = \"{db}\"\ncollection = \"copy\"\n\
             value_format = \"avro\"\nid_strategy = \"provided_in_value\"\nmax_batch_delay = \"50ms\"\n\
             errors = {{ tolerance = \"all\", dead_letter_topic = \"{snk_dlq}\" }}\n",
        ),
    );
    let mut daemon = common::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, WAIT);
    let client = common::mongo_client().await;
    client
        .database(&db)
        .collection::<Document>("c")
        .insert_one(doc! {"_id": 1, "from": "mongodb"})
        .await
        .expect("insert");
    // Both pipelines hold back, and `/ready` says why, for each.
    let body = common::registry::wait_until_both_held_back(http, (&src, &snk), &daemon);
    assert!(body.contains("401") && body.contains("held back"), "{body}");
    assert!(
        common::metric_with(
            http,
            "mkb_schema_registry_held_back",
            &[&format!("pipeline=\"{snk}\""), "reason=\"unauthorized\""]
        ) >= 1.0,
        "the held-back metric"
    );
    assert!(daemon.log().contains("WARN"), "a WARN names the refusal");
    // The registry takes the credentials again: everything arrives, nothing was
    // dead-lettered.
    proxy.forward();
    common::wait_for_status(http, "/ready", 200, WAIT);
    let published = common::consume(&format!("{db}.c"), 1, WAIT, false).await;
    assert_eq!(published.len(), 1, "log:\n{}", daemon.log());
    let copy = client.database(&db).collection::<Document>("copy");
    wait_for_copy(&copy, &[doc! {"_id": 100, "from": "kafka"}], &daemon).await;
    for dlq in [&src_dlq, &snk_dlq] {
        let dead = common::consume(dlq, 1, std::time::Duration::from_secs(3), false).await;
        assert!(dead.is_empty(), "dead-lettered on {dlq}: {dead:?}");
    }
    assert!(proxy.refused.load(std::sync::atomic::Ordering::SeqCst) > 0);
    daemon.terminate(WAIT);
    let _ = client.database(&db).drop().await;
}

/// A client certificate (with the `clientAuth` usage) and its key, signed by the test CA of
/// `services.sh`.
fn client_material(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-services/.cache/tls");
    let openssl = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let ca_p12 = tls.join("ca.p12").into_os_string();
    let ca_pem = tls.join("ca.pem").into_os_string();
    // The CA keystore's password is the one of `services.sh` (TLS_STORE_PASSWORD).
    openssl(&[
        &os("pkcs12"),
        &os("-in"),
        &ca_p12,
        &os("-nocerts"),
        &os("-nodes"),
        &os("-passin"),
        &os("pass:mkb-test-keystore"),
        &os("-out"),
        &os("ca.key"),
    ]);
    openssl(&[
        &os("req"),
        &os("-new"),
        &os("-newkey"),
        &os("rsa:2048"),
        &os("-nodes"),
        &os("-keyout"),
        &os("client.key"),
        &os("-subj"),
        &os("/CN=bridge-client"),
        &os("-out"),
        &os("client.csr"),
    ]);
    std::fs::write(dir.join("ext.cnf"), "extendedKeyUsage=clientAuth\n").expect("write");
    openssl(&[
        &os("x509"),
        &os("-req"),
        &os("-in"),
        &os("client.csr"),
        &os("-CA"),
        &ca_pem,
        &os("-CAkey"),
        &os("ca.key"),
        &os("-CAcreateserial"),
        &os("-days"),
        &os("1"),
        &os("-extfile"),
        &os("ext.cnf"),
        &os("-out"),
        &os("client.pem"),
    ]);
    (dir.join("client.pem"), dir.join("client.key"))
}

/// A registry that asks for a client certificate (mutual TLS) gets the one of `cert_file` and
/// `key_file`; without one the handshake fails, and the registry counts as unreachable.
#[tokio::test]
async fn a_registry_asking_for_a_client_certificate_gets_the_configured_one() {
    let (status, _) = common::registry::get("/subjects");
    assert_eq!(status, 200, "the registry's /subjects");
    let upstream = url::Url::parse(&common::registry::url())
        .ok()
        .and_then(|u| u.port())
        .expect("the registry's port");
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = tls_material(dir.path());
    let (client_cert, client_key) = client_material(dir.path());
    let port = tls_proxy_with(&cert, &key, upstream, Some(&ca));
    let at = mongo_kafka_bridge::config::SchemaRegistryConfig {
        ca_file: Some(ca.clone()),
        timeout: std::time::Duration::from_secs(5),
        ..mongo_kafka_bridge::config::SchemaRegistryConfig::at(format!(
            "https://127.0.0.1:{port}/apis/ccompat/v7"
        ))
    };
    let subject = format!("{}-value", common::unique("config_mtls"));
    let doc = doc! {"_id": 1, "over": "mutual TLS"};

    let without = mongo_kafka_bridge::codec::avro::AvroWriter::new(&at).expect("a writer");
    let err = mongo_kafka_bridge::codec::schema_registry::fetching(|| {
        without.write(&doc, "Document", &subject)
    })
    .await
    .expect_err("no client certificate");
    assert!(err.to_string().contains("unreachable"), "{err}");

    let with = mongo_kafka_bridge::codec::avro::AvroWriter::new(
        &mongo_kafka_bridge::config::SchemaRegistryConfig {
            cert_file: Some(client_cert),
            key_file: Some(client_key),
            ..at
        },
    )
    .expect("a writer");
    let value = mongo_kafka_bridge::codec::schema_registry::fetching(|| {
        with.write(&doc, "Document", &subject)
    })
    .await
    .expect("registers through mutual TLS");
    assert_eq!(value.first(), Some(&0), "the wire format");
    let (kind, _) = latest_schema(&subject);
    assert_eq!(kind, "AVRO");
}
