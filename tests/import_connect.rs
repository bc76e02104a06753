//! `mongo-kafka-bridge import-connect` on the MongoDB Kafka Connector's own example
//! configurations (`tests/fixtures/connect/`, origins in its `SOURCES.md`): the real binary's
//! exit status, the TOML it prints loaded by the daemon's loader and by `check-config`, the
//! keys it maps, and every property it could not carry over listed with a reason on standard
//! error. No service is needed: nothing here connects anywhere.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mongo_kafka_bridge::config::{
    self, CdcHandler, Config, FullDocument, IdStrategy, OutputFormat, RecordFormat, StartupMode,
    Tolerance, WriteModelKind,
};

/// What one run of `import-connect` gave.
struct Imported {
    config: Config,
    toml: String,
    /// `property: reason` lines.
    dropped: Vec<(String, String)>,
    /// `note: ...` lines.
    notes: Vec<String>,
    stderr: String,
}

impl Imported {
    fn reason(&self, property: &str) -> Option<&str> {
        self.dropped
            .iter()
            .find(|(p, _)| p == property)
            .map(|(_, r)| r.as_str())
    }

    #[track_caller]
    fn assert_dropped(&self, property: &str, reason_holds: &str) {
        match self.reason(property) {
            Some(reason) => assert!(
                reason.contains(reason_holds),
                "{property}: `{reason}` does not hold `{reason_holds}`"
            ),
            None => panic!("{property} is not listed on stderr:\n{}", self.stderr),
        }
    }

    #[track_caller]
    fn assert_noted(&self, holds: &str) {
        assert!(
            self.notes.iter().any(|n| n.contains(holds)),
            "no note holds `{holds}`:\n{}",
            self.stderr
        );
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/connect")
        .join(name)
}

fn run(path: &Path) -> std::process::Output {
    common::binary()
        .arg("import-connect")
        .arg(path)
        .args(["--bootstrap-servers", "127.0.0.1:9092"])
        .env_remove("MKB__MONGODB__URI")
        .output()
        .expect("running import-connect")
}

/// Runs `import-connect` on the fixture, expects exit 0, and loads what it printed with the
/// daemon's loader and with `check-config`.
#[track_caller]
fn import(name: &str) -> Imported {
    let out = run(&fixture(name));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{name}: import-connect failed:\n{stderr}\n{stdout}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = common::write_file(dir.path(), "imported.toml", &stdout);
    let config = config::load(&path)
        .unwrap_or_else(|e| panic!("{name}: the translation does not load: {e}\n{stdout}"));
    let check = common::binary()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("running check-config");
    assert!(
        check.status.success(),
        "{name}: check-config refused the translation: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut dropped = Vec::new();
    let mut notes = Vec::new();
    for line in stderr.lines() {
        if let Some(note) = line.strip_prefix("note: ") {
            notes.push(note.to_owned());
        } else if let Some((property, reason)) = line.split_once(": ") {
            assert!(
                !property.contains(' ') && !reason.trim().is_empty(),
                "{name}: not a `property: reason` line: {line}"
            );
            dropped.push((property.to_owned(), reason.to_owned()));
        } else {
            panic!("{name}: a stray line on stderr: {line}");
        }
    }
    // Every line also heads the TOML, so the file keeps what was left out.
    for (property, _) in &dropped {
        assert!(
            stdout.contains(&format!("# - {property}: ")),
            "{name}: {property} is not in the header"
        );
    }
    Imported {
        config,
        toml: stdout,
        dropped,
        notes,
        stderr,
    }
}

#[test]
fn the_source_tutorial_publishes_full_documents() {
    let i = import("tutorial-source.json");
    let s = &i.config.sources[0];
    assert_eq!(s.name, "mongo-simple-source");
    assert_eq!(i.config.mongodb.uri, "mongodb://mongo1");
    assert_eq!(i.config.kafka.bootstrap_servers, "127.0.0.1:9092");
    assert_eq!(s.database.as_deref(), Some("Tutorial1"));
    assert_eq!(
        s.collection.as_ref().map(|c| c.names()),
        Some(vec!["orders"])
    );
    assert!(s.publish_full_document_only);
    // No `output.json.formatter`: the connector's `DefaultJson`, byte for byte.
    assert_eq!(s.format, OutputFormat::ConnectorDefaultJson);
    assert!(i.dropped.is_empty(), "{}", i.stderr);
    assert!(
        !i.notes.iter().any(|n| n.contains("no exact twin")),
        "{}",
        i.stderr
    );
    i.assert_noted("resume tokens (in Kafka Connect's offsets topic) are not read");
    assert!(i.config.sinks.is_empty());
}

#[test]
fn the_sink_tutorial_reads_plain_json() {
    let i = import("tutorial-sink.json");
    let s = &i.config.sinks[0];
    assert_eq!(s.name, "mongo-tutorial-sink");
    assert_eq!(s.topics, ["Tutorial2.pets"]);
    assert_eq!(s.database, "Tutorial2");
    assert_eq!(s.collection.as_deref(), Some("pets"));
    // `JsonConverter` with `schemas.enable: false` (a JSON boolean in the file).
    assert_eq!(s.value_format, RecordFormat::Json);
    // `StringConverter` keys that nothing reads as a document: text.
    assert_eq!(s.key_format, RecordFormat::String);
    assert_eq!(s.group_id.as_deref(), Some("connect-mongo-tutorial-sink"));
    i.assert_noted("connect-mongo-tutorial-sink");
    assert!(i.dropped.is_empty(), "{}", i.stderr);
}

#[test]
fn the_cdc_tutorial_in_the_rest_and_the_bare_shape() {
    let source = import("cdc-source.json");
    assert_eq!(source.config.sources[0].name, "mongo-cdc-source");
    let rest = import("cdc-sink.json");
    let bare = import("cdc-sink-config.json");
    for i in [&rest, &bare] {
        let s = &i.config.sinks[0];
        assert_eq!(s.name, "mongo-cdc-sink");
        assert_eq!(s.cdc_handler, CdcHandler::Mongodb);
        assert_eq!(s.topics, ["CDCTutorial.Source"]);
        assert_eq!(s.collection.as_deref(), Some("Destination"));
        // No converter named: the worker's, which the tool cannot see.
        assert_eq!(s.value_format, RecordFormat::Json);
        i.assert_noted("the worker's converter applies");
    }
    assert_eq!(rest.config, bare.config);
}

#[test]
fn the_debezium_example_takes_the_database_from_the_connection_string() {
    let i = import("debezium-cdc-sink.json");
    let s = &i.config.sinks[0];
    assert_eq!(s.cdc_handler, CdcHandler::DebeziumMongodb);
    assert_eq!(s.database, "kafkaconnect");
    i.assert_noted("the connection string's `kafkaconnect`");
    assert_eq!(s.key_format, RecordFormat::Avro);
    assert_eq!(s.value_format, RecordFormat::Avro);
    let registry = s.schema_registry.as_ref().expect("a registry");
    assert_eq!(registry.url, "http://localhost:8081");
}

#[test]
fn the_time_series_tutorial() {
    let source = import("stock-source.json");
    let s = &source.config.sources[0];
    assert_eq!(
        s.startup_mode,
        StartupMode::CopyExisting,
        "copy.existing=true"
    );
    assert_eq!(s.topic_prefix.as_deref(), Some("marketdata"));
    assert!(s.publish_full_document_only);
    // JsonConverter over the connector's JSON text wrote a quoted string; we write the text.
    source.assert_dropped("value.converter", "in a JSON string");

    let sink = import("stock-sink.json");
    let s = &sink.config.sinks[0];
    assert_eq!(s.timeseries_time_field.as_deref(), Some("tx_time"));
    assert!(s.timeseries_time_field_auto_convert);
    assert_eq!(
        s.timeseries_time_field_format.as_deref(),
        Some("[year]-[month]-[day]T[hour]:[minute]:[second]Z")
    );
    assert_eq!(
        s.write_model,
        WriteModelKind::ReplaceOne,
        "the default, insert_one for time series"
    );
    // JsonConverter without `schemas.enable`: Kafka Connect's default, true.
    assert_eq!(s.value_format, RecordFormat::ConnectJson);
}

#[test]
fn copy_existing_data_examples() {
    let i = import("copy-existing.properties");
    let s = &i.config.sources[0];
    assert_eq!(s.startup_mode, StartupMode::CopyExisting);
    assert_eq!(
        s.copy_existing_pipeline.as_deref(),
        Some("[{ \"$match\": { \"country\": \"Mexico\" } }]")
    );
    assert_eq!(
        s.collection.as_ref().map(|c| c.names()),
        Some(vec!["customers"])
    );
    let i = import("copy-existing-namespaces.properties");
    let s = &i.config.sources[0];
    assert_eq!(s.database.as_deref(), Some("shopping"));
    // Read as Kafka Connect reads a .properties file: `\.` loses its backslash.
    assert_eq!(
        s.copy_existing_namespace_regex.as_deref(),
        Some("^shopping.(customers|products)$")
    );
}

#[test]
fn topic_naming_examples() {
    let i = import("topic-naming.json");
    let s = &i.config.sources[0];
    assert_eq!(s.topic_prefix.as_deref(), Some("myPrefix"));
    assert_eq!(s.topic_suffix.as_deref(), Some("mySuffix"));
    // Our map reads the connector's keys as it does: carried as written, in order.
    let map: Vec<(&str, &str)> = s
        .topic_namespace_map
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        map,
        [
            ("carDb", "automobiles"),
            ("carDb.ev", "electricVehicles"),
            ("/vertical(?:\\..*)?", "industrial{sep_coll}"),
            ("vertical.health", "healthcare"),
            ("*", "otherVehicles"),
        ]
    );
    assert!(
        !i.notes.iter().any(|n| n.contains("topic.namespace.map")),
        "{}",
        i.stderr
    );
}

#[test]
fn a_custom_pipeline_and_a_schema() {
    let i = import("custom-pipeline.properties");
    let stages = i.config.sources[0].stages().expect("valid stages");
    assert_eq!(stages.len(), 2);
    let i = import("schema.properties");
    let s = &i.config.sources[0];
    // `schema` through JsonConverter with schemas: the Connect JSON envelope, not yet ours.
    i.assert_dropped("output.format.value", "not supported yet");
    i.assert_dropped("output.schema.value", "read only with");
    assert_eq!(s.value_format(), OutputFormat::RelaxedJson);
    assert!(s.publish_full_document_only);
}

#[test]
fn converter_examples() {
    let i = import("converter-avro-source.properties");
    let s = &i.config.sources[0];
    assert_eq!(s.format, OutputFormat::Avro);
    assert_eq!(
        s.schema_registry.as_ref().map(|r| r.url.as_str()),
        Some("http://localhost:8081")
    );
    let i = import("converter-json-schema-source.properties");
    assert_eq!(i.config.sources[0].format, OutputFormat::JsonSchema);
    let i = import("converter-json-schema-source-mixed.properties");
    i.assert_dropped("output.format.value", "not supported yet");
    i.assert_dropped("output.schema.infer.value", "not needed");
    let i = import("converter-json-source.properties");
    i.assert_dropped("value.converter", "in a JSON string");

    let i = import("converter-avro-sink.properties");
    let s = &i.config.sinks[0];
    assert_eq!(
        (s.key_format, s.value_format),
        (RecordFormat::Avro, RecordFormat::Avro)
    );
    assert_eq!(s.topics, ["sales.orders"]);
    let i = import("converter-json-schema-sink.properties");
    assert_eq!(i.config.sinks[0].value_format, RecordFormat::JsonSchema);
    let i = import("converter-json-schema-sink-mixed.properties");
    let s = &i.config.sinks[0];
    assert_eq!(
        (s.key_format, s.value_format),
        (RecordFormat::ConnectJson, RecordFormat::ConnectJson)
    );
    let i = import("converter-json-sink.properties");
    assert_eq!(i.config.sinks[0].value_format, RecordFormat::Json);
    let i = import("converter-string-sink.properties");
    let s = &i.config.sinks[0];
    assert_eq!(
        (s.key_format, s.value_format),
        (RecordFormat::String, RecordFormat::Json)
    );
    let i = import("converter-protobuf-sink.properties");
    let s = &i.config.sinks[0];
    assert_eq!(
        (s.key_format, s.value_format),
        (RecordFormat::Protobuf, RecordFormat::Protobuf)
    );
    assert_eq!(
        s.schema_registry.as_ref().map(|r| r.url.as_str()),
        Some("http://localhost:8081")
    );
}

#[test]
fn write_model_and_post_processor_examples() {
    let i = import("business-key.properties");
    let s = &i.config.sinks[0];
    assert_eq!(s.write_model, WriteModelKind::ReplaceBusinessKey);
    assert_eq!(s.business_key_fields, ["flight_no", "airport_code"]);
    assert_eq!(s.id_strategy, IdStrategy::ObjectId);
    i.assert_noted("became `business_key_fields`");
    let i = import("timestamps.properties");
    let s = &i.config.sinks[0];
    assert_eq!(s.write_model, WriteModelKind::UpdateOneTimestamps);
    assert_eq!(s.id_strategy, IdStrategy::ProvidedInValue);
    let i = import("projections.properties");
    let s = &i.config.sinks[0];
    assert_eq!(s.value_allow_fields, ["name", "address.city", "hobbies"]);
    assert_eq!(s.key_block_fields, ["authToken", "registration.source"]);
    assert_eq!(
        s.kafka_metadata_field.as_deref(),
        Some("topic-partition-offset")
    );
    // The key is projected, so read as a document.
    assert_eq!(s.key_format, RecordFormat::Json);
    i.assert_noted("KafkaMetaAdder");
}

#[test]
fn the_connectors_own_example_files() {
    let i = import("MongoSourceConnector.properties");
    let s = &i.config.sources[0];
    assert_eq!(s.name, "mongo-source");
    assert_eq!(
        i.config.mongodb.uri,
        "mongodb://mongo1:27017,mongo2:27017,mongo3:27017"
    );
    assert_eq!(s.full_document, FullDocument::UpdateLookup);
    assert_eq!(s.max_await_time, Duration::from_secs(5));
    assert_eq!(s.batch_size, None, "batch.size=0 is the server's default");
    i.assert_dropped(
        "poll.max.batch.size",
        "replaced by queue_capacity and memory_budget",
    );
    assert!(
        i.reason("collation").is_none(),
        "a blank value is the default"
    );
    assert!(i.reason("tasks.max").is_none());

    let i = import("MongoSinkConnector.properties");
    let s = &i.config.sinks[0];
    assert_eq!(s.name, "mongo-sink");
    assert_eq!(s.topics, ["sourceA", "sourceB"]);
    assert_eq!(
        (s.key_format, s.value_format),
        (RecordFormat::Avro, RecordFormat::Avro)
    );
    assert_eq!(
        s.max_batch_size, 500,
        "max.batch.size = 0 is the connector's 'all at once'"
    );
    assert_eq!(s.rate_limiting_every_n, None);
    let b = s.for_topic("sourceB").expect("sourceB's settings");
    assert_eq!(b.collection.as_deref(), Some("sourceB"));
    assert_eq!(b.id_strategy, IdStrategy::ProvidedInValue);
    // The file's own misspelling of `field.renamer.regexp`.
    i.assert_dropped("field.renamer.regex", "not a property");
}

#[test]
fn secrets_are_carried_over_with_advice_and_errors_keep_their_dead_letters() {
    let i = import("secrets-sink.json");
    let s = &i.config.sinks[0];
    assert_eq!(
        i.config.mongodb.uri,
        "mongodb://writer:hunter2@mongo1:27017/?replicaSet=rs0&authSource=admin"
    );
    i.assert_noted("${env:MONGODB_PASSWORD}");
    let registry = s.schema_registry.as_ref().expect("a registry");
    assert_eq!(registry.url, "https://registry.example.com:8081");
    assert_eq!(registry.username.as_deref(), Some("fred"));
    assert_eq!(registry.password.as_deref(), Some("letmein"));
    i.assert_noted("${env:SCHEMA_REGISTRY_PASSWORD}");
    assert_eq!(s.errors.tolerance, Tolerance::All);
    assert_eq!(s.errors.dead_letter_topic.as_deref(), Some("orders-dlq"));
    assert_eq!(
        s.errors.dead_letter_headers,
        config::DeadLetterHeaders::Connect
    );
    i.assert_dropped("errors.log.enable", "not needed");
    assert!(i
        .toml
        .starts_with("# Translated by `mongo-kafka-bridge import-connect`"));
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("broken.json", "{\"name\": \"x\", \"config\": {", "not JSON"),
        ("list.json", "[1, 2]", "not a connector configuration"),
        ("notes.txt", "hello world\n", "no `connector.class`"),
        (
            "debezium.json",
            "{\"connector.class\": \"io.debezium.connector.mongodb.MongoDbConnector\"}",
            "not the MongoDB Kafka Connector",
        ),
        (
            "unknown.properties",
            "connector.class=com.mongodb.kafka.connect.MongoFooConnector\n",
            "no connector of the MongoDB Kafka Connector this tool knows",
        ),
        (
            "no-topics.json",
            "{\"connector.class\": \"com.mongodb.kafka.connect.MongoSinkConnector\", \"database\": \"d\"}",
            "topics: a sink connector reads",
        ),
    ];
    for (name, text, expected) in cases {
        let path = common::write_file(dir.path(), name, text);
        let out = run(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{name}: no file in {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "{name}: no `{expected}` in {stderr}"
        );
        assert!(out.stdout.is_empty(), "{name}: printed a translation");
    }
    let missing = run(Path::new("/nonexistent/connector.json"));
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read the file"));
    let usage = common::binary()
        .arg("import-connect")
        .output()
        .expect("running");
    assert_eq!(usage.status.code(), Some(2), "no file is a usage error");
}

#[test]
fn a_translation_that_does_not_load_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = common::write_file(
        dir.path(),
        "placeholder.properties",
        "connector.class=com.mongodb.kafka.connect.MongoSinkConnector\nconnection.uri=<your mongodb uri>\ndatabase=d\ntopics=t\n",
    );
    let out = run(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the translation does not load yet"),
        "{stderr}"
    );
    assert!(stderr.contains("mongodb.uri"), "names the key: {stderr}");
    assert!(
        !out.stdout.is_empty(),
        "the translation is printed, to be edited"
    );
}

/// Every property the connector's documentation lists with a literal default, at that default:
/// the translation is our defaults (but the one default that differs), and what is listed is
/// what has no key here, each with the table's reason.
#[test]
fn every_documented_property_at_its_default() {
    let i = import("all-properties-source.properties");
    let s = &i.config.sources[0];
    assert_eq!(s.name, "all-source-defaults");
    assert_eq!(s.startup_mode, StartupMode::Latest);
    assert_eq!(s.full_document, FullDocument::Default);
    assert_eq!(s.format, OutputFormat::ConnectorDefaultJson);
    assert!(s.copy_existing_allow_disk_use && !s.show_expanded_events && s.collation.is_none());
    assert_eq!(s.topic_separator, ".");
    assert_eq!(s.heartbeat_interval, None);
    assert!(s.database.is_none() && s.collection.is_none() && s.pipeline.is_none());
    // The connector waits 5 s for changes, we wait 1 s unless told.
    assert_eq!(s.max_await_time, Duration::from_secs(5));
    let listed: Vec<&str> = i.dropped.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        listed,
        [
            "mongo.errors.log.enable",
            "poll.max.batch.size",
            "startup.mode.copy.existing.queue.size",
            "topic.mapper",
        ]
    );
    for (property, reason) in &i.dropped {
        assert!(
            reason.starts_with("not needed") || reason.starts_with("replaced by"),
            "{property}: {reason}"
        );
    }

    let i = import("all-properties-sink.properties");
    let s = &i.config.sinks[0];
    assert_eq!(s.id_strategy, IdStrategy::ObjectId);
    assert_eq!(s.write_model, WriteModelKind::ReplaceOne);
    assert_eq!(s.cdc_handler, CdcHandler::None);
    assert_eq!(s.max_batch_size, 500);
    assert!(!s.delete_on_null_values && s.timeseries_time_field.is_none());
    assert!(s.field_renames.is_empty() && s.value_allow_fields.is_empty());
    let listed: Vec<&str> = i.dropped.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        listed,
        [
            "bulk.write.ordered",
            "errors.deadletterqueue.topic.replication.factor",
            "errors.log.include.messages",
            "mongo.errors.log.enable",
            "timeseries.timefield.auto.convert.locale.language.tag",
        ]
    );
    // The connector's default (`false`) falls back to the configured namespace, and so does
    // ours now (`error_if_invalid`); with the default mapper it changes nothing.
    assert!(s.error_if_invalid);
}

/// Several connectors become several pipelines of one daemon: given as several files, or as
/// one `GET /connectors?expand=info` answer.
#[test]
fn several_connectors_become_one_daemons_pipelines() {
    let out = common::binary()
        .arg("import-connect")
        .arg(fixture("cdc-source.json"))
        .arg(fixture("cdc-sink.json"))
        .args(["--bootstrap-servers", "127.0.0.1:9092"])
        .output()
        .expect("running import-connect");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = common::write_file(dir.path(), "both.toml", &stdout);
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}\n{stdout}"));
    assert_eq!(config.sources[0].name, "mongo-cdc-source");
    assert_eq!(config.sinks[0].name, "mongo-cdc-sink");
    assert_eq!(config.sinks[0].cdc_handler, CdcHandler::Mongodb);

    // `GET /connectors?expand=info`: every connector of a Kafka Connect cluster at once.
    let info = |file: &str| {
        let text = std::fs::read_to_string(fixture(file)).expect("fixture");
        let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
        value["tasks"] = serde_json::json!([]);
        value["type"] = serde_json::json!(if file.contains("source") {
            "source"
        } else {
            "sink"
        });
        (
            value["name"].as_str().unwrap_or_default().to_owned(),
            serde_json::json!({ "info": value }),
        )
    };
    let (a, a_info) = info("tutorial-source.json");
    let (b, b_info) = info("tutorial-sink.json");
    let cluster = serde_json::json!({ a: a_info, b: b_info });
    let path = common::write_file(dir.path(), "connectors.json", &cluster.to_string());
    let out = run(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = common::write_file(dir.path(), "cluster.toml", &stdout);
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}\n{stdout}"));
    assert_eq!(config.sources[0].name, "mongo-simple-source");
    assert_eq!(config.sinks[0].name, "mongo-tutorial-sink");

    // One MongoDB deployment per daemon.
    let out = common::binary()
        .arg("import-connect")
        .arg(fixture("tutorial-source.json"))
        .arg(fixture("secrets-sink.json"))
        .output()
        .expect("running import-connect");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("one MongoDB deployment per daemon"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2"),
        "a password in an error: {stderr}"
    );
    assert!(out.stdout.is_empty());
}
