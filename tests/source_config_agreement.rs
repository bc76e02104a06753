//! Config agreement (issue 14 d), with real daemons against the real broker: two daemons
//! running one source pipeline (one name, one group) with different configurations report
//! the mismatch on `/ready`, in `mkb_source_config_mismatch` and in a WARN naming the
//! pipeline and both fingerprints; two with one configuration report none.

mod common;

use std::time::Duration;

use bson::doc;
use bson::Document;
use mongo_kafka_bridge::source::agreement;

const WAIT: Duration = Duration::from_secs(90);
/// The members compare fingerprints about every 2 s once the group is stable.
const SEVERAL_COMPARISONS: Duration = Duration::from_secs(8);

/// The `[[source]]` section of `pipeline` watching `db.c`, with `extra` keys.
fn source(pipeline: &str, db: &str, extra: &str) -> String {
    format!(
        "[[source]]\nname = \"{pipeline}\"\ndatabase = \"{db}\"\ncollection = \"c\"\nmax_await_time = \"200ms\"\n{extra}\n"
    )
}

/// The fingerprint the daemon computes for `section`.
fn fingerprint_of(section: &str) -> String {
    let config = common::config(section);
    let source = config
        .sources
        .first()
        .unwrap_or_else(|| panic!("no [[source]] in the test config: {section}"));
    agreement::fingerprint(source)
}

async fn seeded_database(prefix: &str) -> String {
    let db = common::unique(prefix);
    let client = common::mongo_client().await;
    client
        .database(&db)
        .collection::<Document>("c")
        .insert_one(doc! { "_id": -1_i64 })
        .await
        .unwrap_or_else(|e| panic!("seeding {db}.c: {e}"));
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_with_different_configs_of_one_pipeline_report_the_mismatch() {
    let db = seeded_database("scl_agree_diff").await;
    let pipeline = common::unique("scl_agree_diffsrc");
    let json = source(&pipeline, &db, "");
    let bson = source(&pipeline, &db, "format = \"bson\"");
    let (fp_json, fp_bson) = (fingerprint_of(&json), fingerprint_of(&bson));
    assert_ne!(fp_json, fp_bson, "the format is part of the fingerprint");

    let (port_a, port_b) = (common::free_port(), common::free_port());
    let mut a = common::Daemon::start(&common::config_toml(port_a, &json));
    let mut b = common::Daemon::start(&common::config_toml(port_b, &bson));
    let label = format!("pipeline=\"{pipeline}\"");

    for (port, daemon, ours, theirs) in [
        (port_a, &mut a, &fp_json, &fp_bson),
        (port_b, &mut b, &fp_bson, &fp_json),
    ] {
        let seen = common::eventually(WAIT, || {
            let value = common::metric_with(port, "mkb_source_config_mismatch", &[&label]);
            async move { value == 1.0 }
        })
        .await;
        assert!(
            seen,
            "mkb_source_config_mismatch never 1 on :{port}; log:\n{}",
            daemon.log()
        );
        let (code, body) = common::http_get(port, "/ready")
            .unwrap_or_else(|| panic!("GET /ready on :{port} did not answer"));
        assert_eq!(code, 503, "{body}");
        assert!(
            body.contains(&format!("config {pipeline}"))
                && body.contains(ours.as_str())
                && body.contains(theirs.as_str()),
            "/ready on :{port} does not name the pipeline and both fingerprints: {body}"
        );
        let log = daemon.log();
        let warned = log.lines().any(|l| {
            l.contains("WARN")
                && l.contains("run another configuration")
                && l.contains(&pipeline)
                && l.contains(ours.as_str())
                && l.contains(theirs.as_str())
        });
        assert!(
            warned,
            "no WARN naming {pipeline}, {ours} and {theirs} on :{port}; log:\n{log}"
        );
    }

    // The odd one out leaves: the other one agrees with the group again.
    b.terminate(WAIT);
    let cleared = common::eventually(WAIT, || {
        let value = common::metric_with(port_a, "mkb_source_config_mismatch", &[&label]);
        let ready = common::http_get(port_a, "/ready").map(|(code, _)| code);
        async move { value == 0.0 && ready == Some(200) }
    })
    .await;
    assert!(
        cleared,
        "the mismatch stayed after the other daemon left; /ready: {:?}",
        common::http_get(port_a, "/ready")
    );
    a.terminate(WAIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_with_one_config_report_no_mismatch() {
    let db = seeded_database("scl_agree_same").await;
    let pipeline = common::unique("scl_agree_samesrc");
    let section = source(&pipeline, &db, "format = \"canonical_json\"");
    let (port_a, port_b) = (common::free_port(), common::free_port());
    let mut a = common::Daemon::start(&common::config_toml(port_a, &section));
    let mut b = common::Daemon::start(&common::config_toml(port_b, &section));
    // Both members in the group, each owning slots: the group is stable and compared.
    for port in [port_a, port_b] {
        common::wait_for_status(port, "/ready", 200, WAIT);
    }
    let label = format!("pipeline=\"{pipeline}\"");
    let both_own = common::eventually(WAIT, || {
        let owned =
            [port_a, port_b].map(|p| common::metric_with(p, "mkb_source_owned_slots", &[&label]));
        async move { owned.iter().all(|n| *n > 0.0) && owned.iter().sum::<f64>() == 16.0 }
    })
    .await;
    assert!(both_own, "the two daemons never shared the 16 slots");
    tokio::time::sleep(SEVERAL_COMPARISONS).await;
    for (port, daemon) in [(port_a, &mut a), (port_b, &mut b)] {
        let metrics = common::http_get(port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("mkb_source_config_mismatch{") && l.contains(&label)),
            "no mkb_source_config_mismatch series for {pipeline} on :{port}"
        );
        assert_eq!(
            common::metric_with(port, "mkb_source_config_mismatch", &[&label]),
            0.0
        );
        let (code, body) = common::http_get(port, "/ready")
            .unwrap_or_else(|| panic!("GET /ready on :{port} did not answer"));
        assert_eq!(code, 200, "{body}");
        let log = daemon.log();
        assert!(
            !log.contains("run another configuration"),
            "a mismatch was reported on :{port}; log:\n{log}"
        );
    }
    a.terminate(WAIT);
    b.terminate(WAIT);
}
