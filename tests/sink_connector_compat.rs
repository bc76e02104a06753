//! Issue 23, "a connector user switches without a surprise": the sink's field renames (key
//! and value, by mapping and by regex) and the Qlik Replicate CDC handler against the MongoDB
//! Kafka Connector 2.0.1 itself. The connector runs in a Kafka Connect worker
//! (`test-services/connect.sh`) on the same records; its properties go through our
//! `import-connect`, and the daemon runs what it wrote: both must leave the same documents,
//! and what the connector fails on is dead-lettered by us, naming topic and offset.
//!
//! Only one Connect worker can run on a machine (port 8083, one PID file): both connectors
//! run in one worker, in one test; a worker another test holds is waited for, then the test
//! fails loudly.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::connect::ConnectWorker;
use common::sink::{header, header_i64};
use common::Outgoing;
use mongodb::bson::{doc, Bson, Document};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

/// A `.properties` value: backslashes escaped.
fn prop(value: &str) -> String {
    value.replace('\\', "\\\\")
}

/// One connector's test: its topic, the connector's and our database, its properties.
struct Case {
    name: &'static str,
    topic: String,
    theirs: String,
    ours: String,
    properties: String,
}

impl Case {
    async fn new(name: &'static str, settings: &[(&str, String)]) -> Self {
        let topic = common::unique(&format!("sinkcompat_{name}"));
        common::create_topic(&topic, 1).await;
        let theirs = common::unique(&format!("sinkcompat_{name}_connector"));
        let ours = common::unique(&format!("sinkcompat_{name}_ours"));
        let mut properties = format!(
            "name=sinkcompat-{name}\n\
             connector.class=com.mongodb.kafka.connect.MongoSinkConnector\n\
             topics={topic}\n\
             connection.uri={uri}\n\
             database={theirs}\n\
             collection=docs\n\
             key.converter=org.apache.kafka.connect.storage.StringConverter\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n\
             errors.tolerance=all\n\
             errors.log.enable=true\n",
            uri = common::mongodb_uri(),
        );
        for (key, value) in settings {
            properties.push_str(&format!("{key}={}\n", prop(value)));
        }
        Self {
            name,
            topic,
            theirs,
            ours,
            properties,
        }
    }

    fn write(&self, dir: &Path) -> PathBuf {
        common::write_file(dir, &format!("{}.properties", self.name), &self.properties)
    }

    /// Our `[[sink]]`: `import-connect`'s translation of the connector, into our database,
    /// dead letters to `dlq`.
    fn imported(&self, dir: &Path, dlq: &str) -> String {
        let out = common::binary()
            .arg("import-connect")
            .arg(self.write(dir))
            .args(["--bootstrap-servers", &common::kafka_bootstrap()])
            .output()
            .expect("running import-connect");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: import-connect failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "{}: import-connect said:\n{}\n{stdout}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let tree: toml::Table = toml::from_str(&stdout).unwrap_or_else(|e| panic!("{e}\n{stdout}"));
        let mut sink = tree
            .get("sink")
            .and_then(|s| s.as_array())
            .and_then(|s| s.first())
            .and_then(|s| s.as_table())
            .cloned()
            .unwrap_or_else(|| panic!("no [[sink]] in\n{stdout}"));
        sink.insert("name".into(), format!("sinkcompat_{}", self.name).into());
        // The connector's consumer group has read the topic already.
        sink.remove("group_id");
        sink.insert("database".into(), self.ours.clone().into());
        sink.insert("max_batch_delay".into(), "50ms".into());
        let mut errors = toml::Table::new();
        errors.insert("tolerance".into(), "all".into());
        errors.insert("dead_letter_topic".into(), dlq.into());
        sink.insert("errors".into(), errors.into());
        let mut root = toml::Table::new();
        root.insert("sink".into(), toml::Value::Array(vec![sink.into()]));
        toml::to_string(&root).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn text(value: serde_json::Value) -> Option<Vec<u8>> {
    Some(value.to_string().into_bytes())
}

fn record(key: Option<serde_json::Value>, value: serde_json::Value) -> Outgoing {
    Outgoing {
        key: key.and_then(text),
        value: text(value),
        ..Outgoing::default()
    }
}

/// The documents of `db.docs`, in `_id` order, an `ObjectId` `_id` (made up by the writer)
/// replaced by `"<ObjectId>"`.
async fn documents(db: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    let client = common::mongo_client().await;
    let docs: Vec<Document> = client
        .database(db)
        .collection::<Document>("docs")
        .find(doc! {})
        .await
        .unwrap_or_else(|e| panic!("reading {db}.docs: {e}"))
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("reading {db}.docs: {e}"));
    let mut out: Vec<String> = docs
        .into_iter()
        .map(|mut d| {
            if let Some(Bson::ObjectId(_)) = d.get("_id") {
                d.insert("_id", "<ObjectId>");
            }
            Bson::Document(d).into_relaxed_extjson().to_string()
        })
        .collect();
    out.sort();
    out
}

/// Waits until `db.docs` has a document with `filter`.
async fn wait_for(db: &str, filter: Document) -> bool {
    let client = common::mongo_client().await;
    let coll = client.database(db).collection::<Document>("docs");
    common::eventually(WAIT, || {
        let (coll, filter) = (coll.clone(), filter.clone());
        async move { coll.count_documents(filter).await.unwrap_or(0) > 0 }
    })
    .await
}

fn renames_case_settings() -> Vec<(&'static str, String)> {
    let chain = [
        "field.renaming.RenameByMapping",
        "field.renaming.RenameByRegExp",
        "DocumentIdAdder",
    ]
    .map(|c| format!("com.mongodb.kafka.connect.sink.processor.{c}"))
    .join(",");
    vec![
        (
            "document.id.strategy",
            "com.mongodb.kafka.connect.sink.processor.id.strategy.FullKeyStrategy".into(),
        ),
        ("post.processor.chain", chain),
        (
            "field.renamer.mapping",
            json!([
                {"oldName": "key.fieldA", "newName": "field1"},
                {"oldName": "value.xyz", "newName": "abc"},
                {"oldName": "value.sub.x", "newName": "y"},
                {"oldName": "value.a", "newName": "b"},
                {"oldName": "value.list.xyz", "newName": "never"},
                {"oldName": "value.top", "newName": "renamed_top"},
                {"oldName": "value.renamed_top.inner", "newName": "in"},
            ])
            .to_string(),
        ),
        (
            "field.renamer.regexp",
            json!([
                {"regexp": "^key\\..*my.*$", "pattern": "my", "replace": ""},
                {"regexp": "^value\\..*my_.*$", "pattern": "my_", "replace": ""},
                {"regexp": "^value\\.q\\d$", "pattern": "q(\\d)", "replace": "n$1"},
                {"regexp": "^value\\.m\\d$", "pattern": "\\d", "replace": ""},
            ])
            .to_string(),
        ),
    ]
}

/// The records of the renames case: (key, value), the last one the sentinel.
fn renames_records() -> Vec<Outgoing> {
    vec![
        record(
            Some(json!({"fieldA": 1, "my_k": 2})),
            json!({"xyz": "a", "sub": {"x": 1, "my_y": 2, "z": 3}, "list": [{"xyz": 1}],
                   "a": 1, "b": 2, "my_top": {"my_in": 3}, "top": {"inner": 4}, "q7": 5}),
        ),
        // `b` comes first: `a` still goes (its new name is taken).
        record(Some(json!({"fieldA": 2})), json!({"b": 1, "a": 2})),
        // `m1` and `m2` both become `m`: the connector fails the record.
        record(Some(json!({"fieldA": 3})), json!({"m1": 1, "m2": 2})),
        record(Some(json!({"fieldA": 99})), json!({"sentinel": true})),
    ]
}

fn qlik(
    op: &str,
    data: Option<serde_json::Value>,
    before: Option<serde_json::Value>,
) -> serde_json::Value {
    json!({
        "magic": "atMSG", "type": "DT", "headers": null, "messageSchemaId": null,
        "messageSchema": null,
        "message": {
            "data": data, "beforeData": before,
            "headers": {"operation": op, "changeSequence": "20240101000000000000000000001",
                        "timestamp": "2024-01-01T00:00:00.000", "streamPosition": "x",
                        "transactionId": "t1", "changeMask": null, "columnMask": null,
                        "transactionEventCounter": 1, "transactionLastEvent": true}
        }
    })
}

/// The records of the Qlik case, and the offsets the connector fails on.
fn qlik_records() -> (Vec<Outgoing>, Vec<i64>) {
    let k = |id: i64| Some(json!({"id": id}));
    let records = vec![
        // 0..=3: keyed insert, update, delete.
        record(
            k(1),
            qlik("INSERT", Some(json!({"id": 1, "name": "a", "n": 1})), None),
        ),
        record(
            k(2),
            qlik("INSERT", Some(json!({"id": 2, "name": "b"})), None),
        ),
        record(
            k(1),
            qlik(
                "UPDATE",
                Some(json!({"id": 1, "name": "a2", "n": 1})),
                Some(json!({"id": 1, "name": "a", "n": 1})),
            ),
        ),
        record(
            k(2),
            qlik("DELETE", None, Some(json!({"id": 2, "name": "b"}))),
        ),
        // 4..=7: without a key: a new ObjectId, found again by beforeData, deleted by data.
        record(
            None,
            qlik("REFRESH", Some(json!({"id": 3, "name": "c"})), None),
        ),
        record(
            None,
            qlik(
                "UPDATE",
                Some(json!({"id": 3, "name": "c2"})),
                Some(json!({"id": 3, "name": "c"})),
            ),
        ),
        record(None, qlik("INSERT", Some(json!({"id": 4})), None)),
        record(None, qlik("DELETE", Some(json!({"id": 4})), None)),
        // 8: the operation in a top-level `headers`, which the connector does not read.
        record(
            k(5),
            json!({"magic": "atMSG", "type": "DT", "headers": {"operation": "INSERT"},
                   "message": {"data": {"id": 5}}}),
        ),
        // 9: an update without its before image (`beforeData` null).
        record(
            k(1),
            qlik("UPDATE", Some(json!({"id": 1, "name": "a3"})), None),
        ),
        // 10: an unknown operation.
        record(k(1), qlik("MERGE", Some(json!({"id": 1})), None)),
        // 11: a no-op update: nothing written.
        record(
            k(1),
            qlik(
                "UPDATE",
                Some(json!({"id": 1, "name": "a2"})),
                Some(json!({"id": 1, "name": "a2"})),
            ),
        ),
        // 12: an insert without `data`: the connector writes the message's own fields as the
        // row; we refuse it.
        record(
            k(7),
            json!({"magic": "atMSG", "type": "DT", "message": {"headers": {"operation": "INSERT"}}}),
        ),
        // 13: the sentinel.
        record(k(99), qlik("INSERT", Some(json!({"id": 99})), None)),
    ];
    (records, vec![8, 9, 10, 12])
}

#[tokio::test]
async fn renames_and_qlik_messages_write_what_the_connector_writes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let renames = Case::new("ren", &renames_case_settings()).await;
    let qlik_case = Case::new(
        "qlik",
        &[(
            "change.data.capture.handler",
            "com.mongodb.kafka.connect.sink.cdc.qlik.rdbms.RdbmsHandler".into(),
        )],
    )
    .await;
    let rename_records = renames_records();
    let (qlik_records, qlik_failing) = qlik_records();
    common::produce(&renames.topic, &rename_records).await;
    common::produce(&qlik_case.topic, &qlik_records).await;

    // The connector.
    {
        let _worker = ConnectWorker::up(&[renames.write(dir.path()), qlik_case.write(dir.path())]);
        let done = wait_for(&renames.theirs, doc! {"sentinel": true}).await
            && wait_for(&qlik_case.theirs, doc! {"_id": {"id": 99}}).await;
        assert!(done, "the connector wrote no sentinel within {WAIT:?}");
    }

    // Ours, from import-connect's translation.
    let dlq = common::unique("sinkcompat_dlq");
    let pipelines = format!(
        "{}\n{}",
        renames.imported(dir.path(), &dlq),
        qlik_case.imported(dir.path(), &dlq)
    );
    let mut daemon = common::Daemon::start(&common::config_toml(common::free_port(), &pipelines));
    daemon.wait_for_log("sink pipeline running", 2, WAIT);
    let done = wait_for(&renames.ours, doc! {"sentinel": true}).await
        && wait_for(&qlik_case.ours, doc! {"_id": {"id": 99}}).await;
    assert!(done, "the daemon wrote no sentinel; log:\n{}", daemon.log());

    for case in [&renames, &qlik_case] {
        let (mut theirs, ours) = (documents(&case.theirs).await, documents(&case.ours).await);
        if case.name == "qlik" {
            // Our one difference, on purpose: the message without `data`.
            let envelope = r#"{"_id":{"id":7},"headers":{"operation":"INSERT"}}"#;
            let before = theirs.len();
            theirs.retain(|d| d != envelope);
            assert_eq!(
                theirs.len() + 1,
                before,
                "the connector did not write the message itself as the row: {theirs:#?}"
            );
        }
        assert_eq!(
            theirs,
            ours,
            "{}: the connector's documents (left) and ours (right); log:\n{}",
            case.name,
            daemon.log()
        );
        eprintln!("{}: both wrote {theirs:#?}", case.name);
    }

    // What the connector failed on is dead-lettered, naming where it was.
    let expected: Vec<(String, i64)> = std::iter::once((renames.topic.clone(), 2))
        .chain(qlik_failing.iter().map(|o| (qlik_case.topic.clone(), *o)))
        .collect();
    let dead = common::consume(&dlq, expected.len(), WAIT, false).await;
    let mut seen: Vec<(String, i64)> = dead
        .iter()
        .map(|r| {
            (
                header(r, "mkb.source.topic"),
                header_i64(r, "mkb.source.offset"),
            )
        })
        .collect();
    seen.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(
        seen,
        expected_sorted,
        "dead letters; log:\n{}",
        daemon.log()
    );
    for r in &dead {
        eprintln!(
            "dead letter {}@{}: {}",
            header(r, "mkb.source.topic"),
            header(r, "mkb.source.offset"),
            header(r, "mkb.error")
        );
    }
    daemon.terminate(WAIT);
    let client = common::mongo_client().await;
    for db in [
        &renames.theirs,
        &renames.ours,
        &qlik_case.theirs,
        &qlik_case.ours,
    ] {
        let _ = client.database(db).drop().await;
    }
}

/// A sink pipeline (one new topic) named for this helper's tests, with `extra` in its table.
async fn new_sink(extra: &str) -> common::sink::Sink {
    let sink = common::sink::Sink {
        name: common::unique("sinkcompat_sink"),
        topic: common::unique("sinkcompat_in"),
        more_topics: Vec::new(),
        db: common::unique("sinkcompat_db"),
        port: common::free_port(),
        extra: extra.to_owned(),
    };
    common::create_topic(&sink.topic, 1).await;
    sink
}

/// A Qlik message without its row, under the default `errors.tolerance = "none"`, stops the
/// pipeline, `/ready` and the log naming topic, partition and offset; a message without
/// `data` is dead-lettered under `all`. Where the connector would write the message's own
/// fields as the row, we refuse the record.
#[tokio::test]
async fn a_qlik_message_without_its_row_stops_the_pipeline_or_is_dead_lettered() {
    let k = Some(json!({"id": 1}));
    let bad = record(
        k.clone(),
        json!({"magic": "atMSG", "type": "DT", "message": {"headers": {"operation": "INSERT"}}}),
    );
    let good = record(k.clone(), qlik("INSERT", Some(json!({"id": 1})), None));

    let sink = new_sink("cdc_handler = \"qlik_rdbms\"").await;
    let daemon = sink.start();
    common::produce(&sink.topic, &[good, bad]).await;
    let body = common::wait_for_status(sink.port, "/ready", 503, WAIT);
    let position = format!("{}/0@1", sink.topic);
    assert!(body.contains(&position), "{body}");
    assert!(
        daemon.log().contains(&position) && daemon.log().contains("no `data`"),
        "{}",
        daemon.log()
    );
    assert_eq!(sink.wait_for_count(1).await, 1);
    sink.stop(daemon).await;

    let dlq = common::unique("sinkcompat_dlq");
    let sink = new_sink(&format!(
        "cdc_handler = \"qlik_rdbms\"\nerrors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}"
    ))
    .await;
    let daemon = sink.start();
    let bad = record(
        k,
        json!({"message": {"headers": {"operation": "INSERT"}, "beforeData": {"id": 1}}}),
    );
    let unknown = record(
        None,
        json!({"message": {"headers": {"operation": "UPSERT"}}}),
    );
    common::produce(&sink.topic, &[bad, unknown]).await;
    let dead = common::consume(&dlq, 2, WAIT, false).await;
    assert_eq!(dead.len(), 2, "log:\n{}", daemon.log());
    for (record, (offset, words)) in dead
        .iter()
        .zip([(0, "no `data`"), (1, "unknown Qlik operation `UPSERT`")])
    {
        assert_eq!(header(record, "mkb.source.topic"), sink.topic);
        assert_eq!(header_i64(record, "mkb.source.offset"), offset);
        assert!(
            header(record, "mkb.error").contains(words),
            "{}",
            header(record, "mkb.error")
        );
    }
    sink.stop(daemon).await;
}

/// The connector drops a field renamed to a name its document already has, silently; we drop
/// it too (the same document), but count it (`mkb_sink_renamed_fields_dropped_total`) and say
/// so in a WARN.
#[tokio::test]
async fn a_field_dropped_by_a_rename_to_a_taken_name_is_counted_and_warned() {
    let sink = new_sink(
        "id_strategy = \"provided_in_value\"\nfield_renames = { a = \"b\" }\nkey_field_renames = { k = \"j\" }",
    )
    .await;
    let mut daemon = sink.start();
    common::produce(
        &sink.topic,
        &[
            record(
                Some(json!({"k": 1, "j": 2})),
                json!({"_id": 1, "a": 1, "b": 2}),
            ),
            record(None, json!({"_id": 2, "a": 1})),
        ],
    )
    .await;
    assert_eq!(sink.wait_for_count(2).await, 2, "log:\n{}", daemon.log());
    let docs = sink.documents().await;
    assert_eq!(docs.get("1"), Some(&doc! {"_id": 1, "b": 2}), "{docs:?}");
    assert_eq!(docs.get("2"), Some(&doc! {"_id": 2, "b": 1}), "{docs:?}");
    let metric = "mkb_sink_renamed_fields_dropped_total";
    let label = format!("pipeline=\"{}\"", sink.name);
    let counted = common::eventually(WAIT, || async {
        common::metric_with(sink.port, metric, &[&label]) == 2.0
    })
    .await;
    assert!(
        counted,
        "{metric}: {}",
        common::metric_with(sink.port, metric, &[&label])
    );
    daemon.wait_for_log("renames dropped fields whose new name was taken", 1, WAIT);
    sink.stop(daemon).await;
}
