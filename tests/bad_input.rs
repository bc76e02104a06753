//! Bad input end to end: records a sink cannot write go to the dead letter topic with the
//! stage and a reason naming the problem, the records around them are written, and the
//! daemon keeps running; configurations and hosts that cannot work are named before or
//! while the daemon starts.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::sink::{header, header_i64, Sink, WAIT};
use common::Outgoing;
use mongodb::bson::{doc, Bson, Document};
use serde_json::json;

/// MongoDB's largest document.
const MAX_DOCUMENT: usize = 16 * 1024 * 1024;
/// Room for the 16 MiB record in Kafka: the topic's `max.message.bytes` and the test
/// producer's `message.max.bytes`.
const BIG_RECORD_LIMIT: &str = "20971520";

fn keyed(id: i64, value: serde_json::Value) -> Outgoing {
    Outgoing::json(json!({ "_id": id }), value)
}

fn raw(key: &[u8], value: Option<Vec<u8>>) -> Outgoing {
    Outgoing {
        key: Some(key.to_vec()),
        value,
        ..Outgoing::default()
    }
}

fn bson_bytes(doc: &Document) -> Vec<u8> {
    mongodb::bson::to_vec(doc).unwrap_or_else(|e| panic!("encoding {doc}: {e}"))
}

/// A BSON document of one element: `kind`, the name `field`, then `payload` as is.
fn bson_element(kind: u8, field: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(field.as_bytes());
    body.push(0);
    body.extend_from_slice(payload);
    body.push(0);
    let len = i32::try_from(body.len() + 4).unwrap_or(i32::MAX);
    let mut out = len.to_le_bytes().to_vec();
    out.extend(body);
    out
}

/// `[[[...]]]`, `depth` arrays each holding the next (as the BSON of an array, a document
/// with the field `0`), written in one pass.
fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(depth * 8 + 5);
    for level in (1..=depth).rev() {
        let len = i32::try_from(5 + 8 * level).unwrap_or(i32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&[0x04, b'0', 0]);
    }
    out.extend_from_slice(&[5, 0, 0, 0, 0]);
    out.resize(out.len() + depth, 0);
    out
}

/// `{"_id": id, "a": [[[...]]]}` with `depth` nested arrays.
fn bson_nested_arrays(id: i32, depth: usize) -> Vec<u8> {
    let mut out = bson_bytes(&doc! { "_id": id });
    // Splice the array in before the closing byte of the outer document.
    out.pop();
    out.push(0x04);
    out.extend_from_slice(b"a\0");
    out.extend_from_slice(&nested_arrays(depth));
    out.push(0);
    let len = i32::try_from(out.len()).unwrap_or(i32::MAX);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out
}

/// `{"f": Code("x", {"a": [[[...]]]})}`: JavaScript whose scope nests `depth` arrays.
fn bson_deep_scope(depth: usize) -> Vec<u8> {
    let scope = bson_element(0x04, "a", &nested_arrays(depth));
    let code = b"x\0";
    let total = 4 + 4 + code.len() + scope.len();
    let mut payload = i32::try_from(total)
        .unwrap_or(i32::MAX)
        .to_le_bytes()
        .to_vec();
    payload.extend_from_slice(&2i32.to_le_bytes());
    payload.extend_from_slice(code);
    payload.extend_from_slice(&scope);
    bson_element(0x0f, "f", &payload)
}

#[tokio::test]
async fn bad_records_are_dead_lettered_and_the_records_around_them_are_written() {
    let dlq = common::unique("dlq");
    let mut sink = Sink::with_topic_config(1, &[("max.message.bytes", BIG_RECORD_LIMIT)], "").await;
    let bson_topic = sink.add_topic().await;
    sink.extra = format!(
        "id_strategy = \"provided_in_key\"\nkafka_metadata_field = \"kafka\"\n\
         errors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}\n\
         [sink.topic_overrides.\"{bson_topic}\"]\nkey_format = \"bson\"\nvalue_format = \"bson\"\n"
    );
    let daemon = sink.start();

    // Fits in 16 MiB as it arrives; the `kafka` metadata field pushes it over.
    let big = "x".repeat(MAX_DOCUMENT - 60);
    let huge_header = vec![b'h'; 512 * 1024];
    let json_records = vec![
        keyed(1, json!({"ok": 1})),
        raw(br#"{"_id": 2}"#, Some(b"{\"unterminated\": ".to_vec())),
        keyed(3, json!({"ok": 3})),
        raw(br#"{"_id": 4}"#, Some(Vec::new())),
        keyed(5, json!({"ok": 5})),
        // A tombstone without `delete_on_null_values` writes nothing, by design.
        raw(br#"{"_id": 6}"#, None),
        keyed(7, json!({"ok": 7})),
        Outgoing::json(json!({"id": 8}), json!({"ok": 8})),
        keyed(9, json!({"ok": 9})),
        Outgoing::json(json!({"_id": [10, 10]}), json!({"ok": 10})),
        keyed(11, json!({"ok": 11})),
        raw(
            br#"{"_id": 12}"#,
            Some(format!("{{\"deep\": {}{}}}", "[".repeat(5000), "]".repeat(5000)).into_bytes()),
        ),
        keyed(13, json!({"ok": 13})),
        raw(
            br#"{"_id": 14}"#,
            Some(json!({ "big": big }).to_string().into_bytes()),
        ),
        keyed(15, json!({"ok": 15})),
        Outgoing {
            headers: vec![
                ("garbage".into(), vec![0xff, 0x00, 0xfe, 0xc3]),
                ("\u{1F4A5}".into(), b"emoji key".to_vec()),
            ],
            ..raw(br#"{"_id": 16}"#, Some(b"not json at all".to_vec()))
        },
        Outgoing {
            headers: vec![
                ("garbage".into(), vec![0xc3, 0x28]),
                ("huge".into(), huge_header.clone()),
            ],
            ..keyed(17, json!({"ok": 17}))
        },
        keyed(19, json!({"ok": 19})),
    ];
    let bson_key = |id: i32| bson_bytes(&doc! { "_id": id });
    let bson_records = vec![
        raw(&bson_key(101), Some(bson_bytes(&doc! {"ok": 101}))),
        // A length prefix promising more than there is.
        raw(&bson_key(102), Some(vec![0x40, 0, 0, 0, 0x10, b'a', 0, 1])),
        raw(&bson_key(103), Some(bson_bytes(&doc! {"ok": 103}))),
        raw(&bson_key(104), Some(bson_nested_arrays(104, 5000))),
        raw(&bson_key(105), Some(bson_bytes(&doc! {"ok": 105}))),
        // A regex whose flags are not UTF-8.
        raw(
            &bson_key(106),
            Some(bson_element(0x0b, "re", b"^a\0\xff\xfe")),
        ),
        raw(&bson_key(107), Some(bson_bytes(&doc! {"ok": 107}))),
        // A string that is not UTF-8.
        raw(
            &bson_key(108),
            Some(bson_element(0x02, "s", b"\x03\0\0\0\xff\xfe\0")),
        ),
        raw(&bson_key(109), Some(bson_bytes(&doc! {"ok": 109}))),
        // 100000 levels inside a JavaScript scope (800 KB): decoding it recursively would
        // overflow the writer's stack and abort the daemon.
        raw(&bson_key(110), Some(bson_deep_scope(100_000))),
        raw(&bson_key(111), Some(bson_bytes(&doc! {"ok": 111}))),
    ];
    common::produce_with(
        &sink.topic,
        &json_records,
        &[("message.max.bytes", BIG_RECORD_LIMIT)],
    )
    .await;
    common::produce(&bson_topic, &bson_records).await;

    let good = [
        1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 101, 103, 105, 107, 109, 111,
    ];
    let expected: Vec<String> = {
        let mut ids: Vec<String> = good.iter().map(i64::to_string).collect();
        ids.sort();
        ids
    };
    sink.wait_for_count(good.len() as u64).await;
    let docs = sink.documents().await;
    assert_eq!(
        docs.keys().cloned().collect::<Vec<_>>(),
        expected,
        "log:\n{}",
        daemon.log()
    );
    for (id, document) in &docs {
        assert_eq!(
            document.get("ok").map(Bson::to_string),
            Some(id.clone()),
            "{document}"
        );
        assert!(document.get_document("kafka").is_ok(), "{document}");
    }

    // (topic, offset) → (stage, words the reason must hold)
    let t = sink.topic.as_str();
    let b = bson_topic.as_str();
    let expected_dead: BTreeMap<(&str, i64), (&str, &[&str])> = [
        ((t, 1), ("decode", &["value", "not valid JSON"][..])),
        ((t, 3), ("decode", &["value", "empty"][..])),
        ((t, 7), ("id", &["key", "`_id`"][..])),
        // MongoDB refuses it: "The '_id' value cannot be of type array".
        ((t, 9), ("write", &["_id", "array"][..])),
        ((t, 11), ("decode", &["deeper than 100"][..])),
        ((t, 13), ("size", &["16777216"][..])),
        ((t, 15), ("decode", &["not valid JSON"][..])),
        ((b, 1), ("decode", &["value", "BSON"][..])),
        ((b, 3), ("decode", &["deeper than 100"][..])),
        ((b, 5), ("decode", &["value", "BSON", "utf-8"][..])),
        ((b, 7), ("decode", &["value", "BSON", "utf-8"][..])),
        ((b, 9), ("decode", &["deeper than 100"][..])),
    ]
    .into_iter()
    .collect();
    let dead = common::consume(&dlq, expected_dead.len(), WAIT, false).await;
    let mut seen = BTreeMap::new();
    for record in &dead {
        let topic = header(record, "mkb.source.topic");
        let offset = header_i64(record, "mkb.source.offset");
        let key = if topic == t { t } else { b };
        let stage = header(record, "mkb.error.stage");
        let reason = header(record, "mkb.error");
        seen.insert((key, offset), (stage, reason, record));
    }
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        expected_dead.keys().collect::<Vec<_>>(),
        "dead letters; log:\n{}",
        daemon.log()
    );
    for (position, (stage, words)) in &expected_dead {
        let (got_stage, reason, _) = &seen[position];
        assert_eq!(got_stage, stage, "{position:?}: {reason}");
        for word in *words {
            assert!(
                reason.to_lowercase().contains(&word.to_lowercase()),
                "{position:?}: no `{word}` in `{reason}`"
            );
        }
    }
    // Dead letters keep the record as read, headers included, garbage and all.
    let (_, _, garbage) = &seen[&(t, 15)];
    assert_eq!(garbage.value.as_deref(), Some(&b"not json at all"[..]));
    assert!(
        garbage
            .headers
            .contains(&("garbage".to_owned(), vec![0xff, 0x00, 0xfe, 0xc3])),
        "{:?}",
        garbage.headers
    );
    // The 16 MiB record does not fit the dead letter topic (the daemon's producer keeps
    // librdkafka's 1 MB `message.max.bytes`): it goes without its value, saying so.
    let (_, _, too_big) = &seen[&(t, 13)];
    assert_eq!(too_big.value, None);
    assert_eq!(too_big.key.as_deref(), Some(&br#"{"_id": 14}"#[..]));
    assert_eq!(header(too_big, "mkb.error.omitted"), "value, headers");
    let (_, _, invalid_bson) = &seen[&(b, 1)];
    assert_eq!(
        invalid_bson.value.as_deref(),
        Some(&[0x40, 0, 0, 0, 0x10, b'a', 0, 1][..])
    );

    // Still running and ready; every record committed, the tombstone counted as skipped.
    assert_eq!(
        common::wait_for_status(sink.port, "/ready", 200, Duration::from_secs(5)),
        "ready\n"
    );
    let committed = common::eventually(WAIT, || async {
        common::committed_offsets(&sink.group(), t, 1) == [Some(json_records.len() as i64)]
            && common::committed_offsets(&sink.group(), b, 1) == [Some(bson_records.len() as i64)]
    })
    .await;
    assert!(committed, "offsets not committed; log:\n{}", daemon.log());
    let metrics = common::wait_for_status(sink.port, "/metrics", 200, Duration::from_secs(5));
    assert!(
        metrics.contains(&format!(
            "mkb_sink_records_skipped_total{{pipeline=\"{}\"}} 1",
            sink.name
        )),
        "{metrics}"
    );
    sink.stop(daemon).await;
}

/// `[[sink]]` and `[[source]]` tables that parse but cannot work, each with the key its
/// error must name and words of the reason.
const BAD_CONFIGS: &[(&str, &str, &str)] = &[
    (
        "[[sink]]\nname = \"s\"\ntopics = [\"t\"]\ndatabase = \"d\"\ntopic_overide = {}\n",
        "sink[0].topic_overide",
        "unknown field `topic_overide`",
    ),
    (
        "[[sink]]\nname = \"s\"\ntopics = [\"t\"]\ndatabase = \"d\"\nmax_batch_size = \"ten\"\n",
        "sink[0].max_batch_size",
        "invalid type",
    ),
    (
        "[[sink]]\nname = \"s\"\ntopics_regex = \"orders.(\"\ndatabase = \"d\"\n",
        "sink[0].topics_regex",
        "regex",
    ),
    (
        "[[sink]]\nname = \"s\"\ntopics = [\"t\"]\ndatabase = \"d\"\nfield_rename_regex = [{ pattern = \"a[\", replace = \"b\" }]\n",
        "sink[0].field_rename_regex[0].pattern",
        "not a valid regex",
    ),
    (
        "[[source]]\nname = \"s\"\ndatabase = \"d\"\ncollection_regex = \"*\"\n",
        "source[0].collection_regex",
        "not a valid regex",
    ),
    (
        "[[source]]\nname = \"s\"\ndatabase = \"d\"\npipeline = '[{\"$out\": \"elsewhere\"}]'\n",
        "source[0].pipeline",
        "`$out`",
    ),
    (
        "[[source]]\nname = \"s\"\ndatabase = \"d\"\npipeline = '[{\"$match\": '\n",
        "source[0].pipeline",
        "not valid JSON",
    ),
];

#[test]
fn configurations_that_cannot_work_are_refused_naming_the_key() {
    for (table, key, reason) in BAD_CONFIGS {
        let text = common::config_toml(common::free_port(), table);
        for subcommand in ["check-config", "run"] {
            let (code, stdout, stderr) = common::run_to_end(subcommand, &text, &[]);
            assert_eq!(code, Some(1), "{subcommand} {table}: {stderr}");
            assert!(
                stderr.contains(&format!("key `{key}`")) && stderr.contains(reason),
                "{subcommand} {table}: no key `{key}` and `{reason}` in {stderr}"
            );
            assert!(stdout.is_empty(), "{subcommand}: {stdout}");
        }
    }
}

#[test]
fn credentials_without_their_password_are_refused_naming_the_key() {
    // A user in the connection string, its password expected from MKB__MONGODB__URI, which
    // is not set.
    let uri = common::config_toml(common::free_port(), "").replace(
        &format!("uri = \"{}\"", common::mongodb_uri()),
        "uri = \"mongodb://bridge@db1:27017/?replicaSet=rs0\"",
    );
    let (code, _, stderr) = common::run_to_end("run", &uri, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("key `mongodb.uri`: names the user `bridge` but no password")
            && stderr.contains("MKB__MONGODB__URI"),
        "{stderr}"
    );
    // SCRAM without `sasl.password`, which was meant to come from the environment.
    let sasl = common::config_toml(common::free_port(), "").replace(
        "[kafka]\n",
        "[kafka]\nproperties = { \"security.protocol\" = \"SASL_SSL\", \"sasl.mechanism\" = \"SCRAM-SHA-512\", \"sasl.username\" = \"bridge\" }\n",
    );
    let (code, _, stderr) = common::run_to_end("check-config", &sasl, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("key `kafka.properties.\"sasl.password\"`: is missing")
            && stderr.contains("MKB__KAFKA__PROPERTIES__SASL_PASSWORD"),
        "{stderr}"
    );
    let (code, stdout, stderr) = common::run_to_end(
        "check-config",
        &sasl,
        &[(
            "MKB__KAFKA__PROPERTIES__SASL_PASSWORD",
            "from-the-environment",
        )],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains("from-the-environment"), "{stdout}");
}

/// Starts a daemon on `config` and waits until `/ready` answers 503 naming `host`.
fn assert_unready_naming(config: &str, host: &str) {
    let port = config
        .split("address = \"127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no HTTP port in {config}"));
    let mut daemon = common::Daemon::start(config);
    let deadline = std::time::Instant::now() + WAIT;
    let mut reason = String::new();
    while !reason.contains(host) && std::time::Instant::now() < deadline {
        reason = common::wait_for_status(port, "/ready", 503, WAIT);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(reason.contains(host), "{reason}");
    assert!(
        daemon.log().contains(host),
        "the log does not name {host}:\n{}",
        daemon.log()
    );
    assert_eq!(
        common::http_get(port, "/health").map(|(code, _)| code),
        Some(200)
    );
    daemon.terminate(WAIT);
}

#[test]
fn unreachable_hosts_are_named_in_ready_and_the_log() {
    let base = common::config_toml(common::free_port(), "");
    let dead = common::free_port();
    assert_unready_naming(
        &base.replace(
            &format!("bootstrap_servers = \"{}\"", common::kafka_bootstrap()),
            &format!("bootstrap_servers = \"127.0.0.1:{dead}\""),
        ),
        &format!("Kafka at 127.0.0.1:{dead}"),
    );
    let base = common::config_toml(common::free_port(), "");
    assert_unready_naming(
        &base.replace(
            &format!("bootstrap_servers = \"{}\"", common::kafka_bootstrap()),
            "bootstrap_servers = \"no-such-kafka.invalid:9092\"",
        ),
        "no-such-kafka.invalid:9092",
    );
    let base = common::config_toml(common::free_port(), "");
    assert_unready_naming(
        &base.replace(
            &format!("uri = \"{}\"", common::mongodb_uri()),
            "uri = \"mongodb://no-such-mongo.invalid:27017\"",
        ),
        "MongoDB at no-such-mongo.invalid:27017",
    );
}
