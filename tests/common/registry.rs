//! What the schema registry tests of every format share: the registry's address, and the
//! outage every registry format must ride out.

use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};

use super::Outgoing;

/// The Confluent-compatible API of the test registry (`SCHEMA_REGISTRY_URL`, else the one
/// `test-services/services.sh up` starts).
pub fn url() -> String {
    std::env::var("SCHEMA_REGISTRY_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8081/apis/ccompat/v7".to_owned())
}

/// `schema_registry = { url = ... }` for a pipeline table, naming the test registry.
pub fn toml() -> String {
    format!("schema_registry = {{ url = \"{}\" }}\n", url())
}

/// `method path` with `body` on the test registry, over HTTP/1.0 (no chunks): status and
/// body. Panics, saying how to start one, when no registry answers on loopback.
pub fn request(method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let url = url::Url::parse(&format!("{}{path}", url())).expect("registry URL");
    let host = url.host_str().expect("registry host");
    assert!(
        host == "127.0.0.1" || host == "localhost",
        "these tests talk to the registry over plain loopback HTTP; SCHEMA_REGISTRY_URL is {url}"
    );
    let port = url.port().unwrap_or(80);
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        panic!(
            "no schema registry answers at {url}: start it with `test-services/services.sh up` \
             (or `test-services/registry.sh up`), or set SCHEMA_REGISTRY_URL"
        );
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    write!(
        stream,
        "{method} {} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        url.path(),
        body.len()
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("answer");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {response}"));
    let (_, body) = response.split_once("\r\n\r\n").unwrap_or_default();
    (status, body.to_owned())
}

/// `GET path` on the test registry: status and body.
pub fn get(path: &str) -> (u16, String) {
    request("GET", path, "")
}

/// Waits until `/ready` on `http` answers 503 naming the registries of both pipelines `src`
/// and `snk`; its body.
pub fn wait_until_both_held_back(
    http: u16,
    (src, snk): (&str, &str),
    daemon: &super::Daemon,
) -> String {
    let deadline = Instant::now() + super::sink::WAIT;
    loop {
        let answer = super::http_get(http, "/ready");
        if let Some((503, body)) = &answer {
            if body.contains(&format!("schema registry {src}"))
                && body.contains(&format!("schema registry {snk}"))
            {
                return body.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "/ready never named both registries: {answer:?}\nlog:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A source and a sink in `format` reach the registry through a proxy of the test, cut at
/// first: both hold back and `/ready` names each and why; once the registry answers, the
/// source's change and the sink's record (`value`, `{_id: 100, from: "kafka"}` written in
/// `format` under `<sink_topic>-value` with the registry itself, produced to `sink_topic`)
/// arrive, and nothing was dead-lettered. `prefix` names the test's database and pipelines.
pub async fn an_outage_holds_back_both_pipelines_and_loses_nothing(
    format: &str,
    prefix: &str,
    sink_topic: &str,
    value: Vec<u8>,
) {
    let upstream = url::Url::parse(&url())
        .ok()
        .and_then(|u| u.port())
        .expect("the registry's port");
    let proxy = super::proxy::Proxy::start(&format!("127.0.0.1:{upstream}"));
    proxy.cut();
    let through = format!("http://127.0.0.1:{}/apis/ccompat/v7", proxy.port());
    super::produce(
        sink_topic,
        &[Outgoing {
            value: Some(value),
            ..Outgoing::default()
        }],
    )
    .await;
    let db = super::unique(prefix);
    let http = super::free_port();
    let dlq = super::unique(&format!("{prefix}_dlq"));
    let (src, snk) = (
        super::unique(&format!("{prefix}_src")),
        super::unique(&format!("{prefix}_snk")),
    );
    let config = super::config_toml(
        http,
        &format!(
            "[kafka.schema_registry]\nurl = \"{through}\"\ntimeout = \"2s\"\n\
             [[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nformat = \"{format}\"\n\
             publish_full_document_only = true\nmax_await_time = \"300ms\"\n\
             [[sink]]\nname = \"{snk}\"\ntopics = [\"{sink_topic}\"]\ndatabase = \"{db}\"\ncollection = \"copy\"\n\
             value_format = \"{format}\"\nid_strategy = \"provided_in_value\"\nmax_batch_delay = \"50ms\"\n\
             errors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}\n",
        ),
    );
    let mut daemon = super::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, super::sink::WAIT);
    let client = super::mongo_client().await;
    client
        .database(&db)
        .collection::<Document>("c")
        .insert_one(doc! {"_id": 1, "from": "mongodb"})
        .await
        .expect("insert");
    // Both pipelines hold back, and `/ready` says why, for each.
    let body = wait_until_both_held_back(http, (&src, &snk), &daemon);
    assert!(
        body.contains(&through) && body.contains("unreachable") && body.contains("held back"),
        "{body}"
    );
    // The registry answers again: everything arrives, nothing was dead-lettered.
    proxy.forward();
    super::wait_for_status(http, "/ready", 200, super::sink::WAIT);
    let published = super::consume(&format!("{db}.c"), 1, super::sink::WAIT, false).await;
    assert_eq!(published.len(), 1, "log:\n{}", daemon.log());
    let copy = client.database(&db).collection::<Document>("copy");
    let arrived = super::eventually(super::sink::WAIT, || {
        let copy = copy.clone();
        async move {
            copy.find_one(doc! {"_id": 100}).await.ok().flatten()
                == Some(doc! {"_id": 100, "from": "kafka"})
        }
    })
    .await;
    assert!(arrived, "log:\n{}", daemon.log());
    let dead = super::consume(&dlq, 1, Duration::from_secs(2), false).await;
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
    daemon.terminate(super::sink::WAIT);
    let _ = client.database(&db).drop().await;
}

/// A source in `format` on a fresh collection (documents of `every_type`) and a sink replaying its change events, in the
/// same format, into another: inserts of every type, an update adding a field, a delete and a
/// document of another shape arrive as `read_back` says the format carries them.
pub async fn round_trip(
    format: &str,
    every_type: fn(i32) -> Document,
    read_back: fn(Document) -> Document,
) {
    let (status, _) = get("/subjects");
    assert_eq!(status, 200, "the registry's /subjects");
    let db = super::unique(&format.replace('_', ""));
    let topic = format!("{db}.c");
    let registry = toml();
    let config = super::config_toml(
        super::free_port(),
        &format!(
            "[[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nformat = \"{format}\"\n\
             full_document = \"updateLookup\"\ncheckpoint_interval = \"200ms\"\nmax_await_time = \"300ms\"\n{registry}\
             [[sink]]\nname = \"{snk}\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\ncollection = \"c_copy\"\n\
             cdc_handler = \"mongodb\"\nkey_format = \"{format}\"\nvalue_format = \"{format}\"\nmax_batch_delay = \"50ms\"\n{registry}",
            src = super::unique("asrc"),
            snk = super::unique("asnk"),
        ),
    );
    let mut daemon = super::Daemon::start(&config);
    daemon.wait_for_log("change stream open", 1, super::sink::WAIT);
    daemon.wait_for_log("sink pipeline running", 1, super::sink::WAIT);
    let client = super::mongo_client().await;
    let source = client.database(&db).collection::<Document>("c");
    source
        .insert_many([every_type(1), every_type(2), every_type(3)])
        .await
        .expect("insert");
    // A new field: a new schema version under the same subject.
    source
        .update_one(
            doc! {"_id": 1},
            doc! {"$set": {"added": "later", "nested.city": "Bergen"}},
        )
        .await
        .expect("update");
    source.delete_one(doc! {"_id": 2}).await.expect("delete");
    source
        .insert_one(doc! {"_id": 4, "only": "a new shape"})
        .await
        .expect("insert");

    let copy = client.database(&db).collection::<Document>("c_copy");
    let mut expected_one = every_type(1);
    expected_one.insert("added", "later");
    expected_one
        .get_document_mut("nested")
        .expect("nested")
        .insert("city", "Bergen");
    let expected = [
        read_back(expected_one),
        read_back(every_type(3)),
        doc! {"_id": 4, "only": "a new shape"},
    ];
    let arrived = super::eventually(super::sink::WAIT, || {
        let (copy, expected) = (copy.clone(), expected.clone());
        async move {
            let mut found = Vec::new();
            for doc in &expected {
                let id = doc.get_i32("_id").unwrap_or_default();
                found.push(copy.find_one(doc! {"_id": id}).await.ok().flatten());
            }
            let gone = copy
                .find_one(doc! {"_id": 2})
                .await
                .ok()
                .flatten()
                .is_none();
            gone && found
                .iter()
                .zip(&expected)
                .all(|(f, e)| f.as_ref() == Some(e))
        }
    })
    .await;
    if !arrived {
        let mut docs = Vec::new();
        for id in 1..=4 {
            docs.push(copy.find_one(doc! {"_id": id}).await.ok().flatten());
        }
        panic!(
            "the copy is not the source:\n expected {expected:#?}\n found {docs:#?}\nlog:\n{}",
            daemon.log()
        );
    }

    // On the topic: the registry's wire format, with schemas the registry serves.
    let records = super::consume(&topic, 6, super::sink::WAIT, false).await;
    assert_eq!(
        records.len(),
        6,
        "3 inserts, an update, a delete, an insert"
    );
    let mut ids = std::collections::BTreeSet::new();
    for record in &records {
        for part in [record.key.as_deref(), record.value.as_deref()] {
            let bytes = part.expect("key and value");
            assert_eq!(bytes[0], 0, "magic byte");
            ids.insert(u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]));
        }
    }
    for id in &ids {
        let (status, body) = get(&format!("/schemas/ids/{id}"));
        assert_eq!(status, 200, "schema {id}: {body}");
    }
    let (status, versions) = get(&format!("/subjects/{topic}-value/versions"));
    assert_eq!(status, 200, "{versions}");
    let versions: Vec<u32> = serde_json::from_str(&versions).expect("a list of versions");
    // Insert, update (a new field and updateDescription), delete and the new shape differ.
    assert!(
        versions.len() >= 4,
        "versions of {topic}-value: {versions:?}"
    );
    let (status, _) = get(&format!("/subjects/{topic}-key/versions"));
    assert_eq!(status, 200, "the key subject");
    daemon.terminate(super::sink::WAIT);
    let _ = client.database(&db).drop().await;
}
