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
    let deadline = Instant::now() + super::sink::WAIT;
    let body = loop {
        let answer = super::http_get(http, "/ready");
        if let Some((503, body)) = &answer {
            if body.contains(&format!("schema registry {src}"))
                && body.contains(&format!("schema registry {snk}"))
            {
                break body.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "/ready never named both registries: {answer:?}\nlog:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
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
