//! Security: the daemon talks to Kafka over TLS with SASL/SCRAM (the local broker's
//! SASL_SSL listener, see `test-services/services.sh`), takes secrets from the environment,
//! and never shows them: not in its log, `check-config`, `/ready`, `/metrics` or dead
//! letters.
//!
//! Against other servers: `KAFKA_SASL_SSL_BOOTSTRAP` (default `127.0.0.1:$KAFKA_SSL_PORT`,
//! port 9094), `KAFKA_SSL_CA` (the CA certificate file), `KAFKA_SCRAM_USER` and
//! `KAFKA_SCRAM_PASSWORD` name a SASL_SSL listener with a SCRAM-SHA-512 user.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::sink::{header, WAIT};
use common::Outgoing;
use mongodb::bson::{doc, Document};
use serde_json::json;

fn env_or(name: &str, default: impl FnOnce() -> String) -> String {
    std::env::var(name).unwrap_or_else(|_| default())
}

/// The SASL_SSL listener.
fn sasl_ssl_bootstrap() -> String {
    env_or("KAFKA_SASL_SSL_BOOTSTRAP", || {
        format!(
            "127.0.0.1:{}",
            env_or("KAFKA_SSL_PORT", || "9094".to_owned())
        )
    })
}

/// The CA certificate that signed the listener's certificate.
fn ssl_ca() -> String {
    env_or("KAFKA_SSL_CA", || {
        let cache = std::env::var("TEST_SERVICES_CACHE").map_or_else(
            |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-services/.cache"),
            PathBuf::from,
        );
        cache.join("tls/ca.pem").display().to_string()
    })
}

fn scram_user() -> String {
    env_or("KAFKA_SCRAM_USER", || "mkb-test".to_owned())
}

fn scram_password() -> String {
    env_or("KAFKA_SCRAM_PASSWORD", || "mkb-test-secret".to_owned())
}

/// A daemon configuration reaching Kafka over SASL_SSL, with no password in it: the password
/// comes from `MKB__KAFKA__PROPERTIES__SASL_PASSWORD`.
fn sasl_config(http_port: u16, pipelines: &str) -> String {
    let ca = ssl_ca();
    assert!(
        std::path::Path::new(&ca).is_file(),
        "no CA certificate at {ca}: run test-services/services.sh up, or set KAFKA_SSL_CA"
    );
    common::config_toml(http_port, pipelines).replace(
        &format!("bootstrap_servers = \"{}\"\n", common::kafka_bootstrap()),
        &format!(
            "bootstrap_servers = \"{}\"\nproperties = {{ \"security.protocol\" = \"SASL_SSL\", \
             \"sasl.mechanism\" = \"SCRAM-SHA-512\", \"sasl.username\" = \"{}\", \
             \"ssl.ca.location\" = \"{ca}\" }}\n",
            sasl_ssl_bootstrap(),
            scram_user()
        ),
    )
}

/// Asserts that none of `secrets` is in any of `outputs` (name, text).
#[track_caller]
fn assert_no_secret(secrets: &[&str], outputs: &[(&str, &str)]) {
    for secret in secrets {
        for (name, text) in outputs {
            assert!(
                !text.contains(secret),
                "the secret `{secret}` is in the {name}:\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn source_and_sink_run_over_sasl_ssl_and_the_password_stays_secret() {
    let db = common::unique("secdb");
    let topic = format!("sec.{db}.items");
    let dlq = common::unique("secdlq");
    common::create_topic(&topic, 1).await;
    let port = common::free_port();
    let pipelines = format!(
        "[[source]]\nname = \"{src}\"\ndatabase = \"{db}\"\ncollection = \"items\"\n\
         topic_prefix = \"sec\"\npublish_full_document_only = true\nmax_await_time = \"200ms\"\n\
         [[sink]]\nname = \"{snk}\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\n\
         collection = \"copy\"\nid_strategy = \"provided_in_value\"\nmax_batch_delay = \"50ms\"\n\
         errors = {{ tolerance = \"all\", dead_letter_topic = \"{dlq}\" }}\n",
        src = common::unique("secsrc"),
        snk = common::unique("secsnk"),
    );
    let config = sasl_config(port, &pipelines);
    let password = scram_password();
    assert!(!config.contains(&password), "the password is in the file");
    let env = [("MKB__KAFKA__PROPERTIES__SASL_PASSWORD", password.as_str())];
    let mut daemon = common::Daemon::start_with_env(&config, &env);
    daemon.wait_for_log("change stream open", 1, WAIT);
    daemon.wait_for_log("partitions assigned", 1, WAIT);

    let client = common::mongo_client().await;
    let items = client.database(&db).collection::<Document>("items");
    for id in 0..5 {
        items
            .insert_one(doc! { "_id": id, "n": id })
            .await
            .expect("insert");
    }
    // A record the sink refuses, produced on the PLAINTEXT listener: its dead letter goes
    // out over SASL_SSL.
    common::produce(
        &topic,
        &[Outgoing {
            value: Some(b"{not json".to_vec()),
            ..Outgoing::json(json!({"_id": 99}), json!({}))
        }],
    )
    .await;
    let copy = client.database(&db).collection::<Document>("copy");
    let copied = common::eventually(WAIT, || async {
        copy.count_documents(doc! {}).await.unwrap_or(0) == 5
    })
    .await;
    assert!(copied, "log:\n{}", daemon.log());
    assert_eq!(
        copy.find_one(doc! { "_id": 3 }).await.expect("find"),
        Some(doc! { "_id": 3, "n": 3 })
    );
    let dead = common::consume(&dlq, 1, WAIT, false).await;
    assert_eq!(dead.len(), 1, "log:\n{}", daemon.log());
    assert_eq!(header(&dead[0], "mkb.error.stage"), "decode");

    let ready = common::wait_for_status(port, "/ready", 200, Duration::from_secs(5));
    let metrics = common::wait_for_status(port, "/metrics", 200, Duration::from_secs(5));
    let (code, checked, checked_err) = common::run_to_end("check-config", &config, &env);
    assert_eq!(code, Some(0), "{checked_err}");
    assert!(
        checked.contains("\"sasl.password\" = \"****\""),
        "{checked}"
    );
    let headers: String = dead[0]
        .headers
        .iter()
        .map(|(k, v)| format!("{k}={}\n", String::from_utf8_lossy(v)))
        .collect();
    daemon.terminate(WAIT);
    let log = daemon.log();
    assert_no_secret(
        &[&password],
        &[
            ("log", &log),
            ("check-config output", &checked),
            ("check-config errors", &checked_err),
            ("/ready answer", &ready),
            ("metrics", &metrics),
            ("dead letter headers", &headers),
        ],
    );
    let _ = client.database(&db).drop().await;
}

#[test]
fn a_wrong_kafka_password_is_named_as_an_authentication_failure_without_the_password() {
    let port = common::free_port();
    let wrong = "not-the-password-7f3a";
    let mut daemon = common::Daemon::start_with_env(
        &sasl_config(port, ""),
        &[("MKB__KAFKA__PROPERTIES__SASL_PASSWORD", wrong)],
    );
    let deadline = std::time::Instant::now() + WAIT;
    let mut reason = String::new();
    while !reason.contains("uthentication") && std::time::Instant::now() < deadline {
        reason = common::wait_for_status(port, "/ready", 503, WAIT);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        reason.contains("Authentication") && reason.contains(&sasl_ssl_bootstrap()),
        "{reason}\nlog:\n{}",
        daemon.log()
    );
    let metrics = common::wait_for_status(port, "/metrics", 200, Duration::from_secs(5));
    daemon.terminate(WAIT);
    assert_no_secret(
        &[wrong],
        &[
            ("log", &daemon.log()),
            ("/ready answer", &reason),
            ("metrics", &metrics),
        ],
    );
}

#[test]
fn the_mongodb_password_comes_from_the_environment_and_is_never_shown() {
    eprintln!(
        "NOTE: the MongoDB stand-in has no authentication, so no login succeeds here: the test \
         checks that the password is read from MKB__MONGODB__URI, masked by check-config, and \
         absent from /ready, /metrics and the log when the login fails"
    );
    let secret = "mongo-secret-91bd";
    let host = common::mongodb_uri()
        .trim_start_matches("mongodb://")
        .split(['/', '?'])
        .next()
        .unwrap_or_default()
        .to_owned();
    let uri =
        format!("mongodb://bridge:{secret}@{host}/?authSource=admin&authMechanism=SCRAM-SHA-256");
    let env = [("MKB__MONGODB__URI", uri.as_str())];
    let port = common::free_port();
    let config = common::config_toml(port, "");
    let (code, checked, checked_err) = common::run_to_end("check-config", &config, &env);
    assert_eq!(code, Some(0), "{checked_err}");
    assert!(
        checked.contains(&format!("uri = \"mongodb://bridge:****@{host}/")),
        "the URI of the environment is not the one in use: {checked}"
    );
    let mut daemon = common::Daemon::start_with_env(&config, &env);
    let deadline = std::time::Instant::now() + WAIT;
    let mut reason = String::new();
    while !reason.contains("MongoDB at") && std::time::Instant::now() < deadline {
        reason = common::wait_for_status(port, "/ready", 503, WAIT);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(reason.contains(&format!("MongoDB at {host}")), "{reason}");
    let metrics = common::wait_for_status(port, "/metrics", 200, Duration::from_secs(5));
    daemon.terminate(WAIT);
    assert_no_secret(
        &[secret],
        &[
            ("log", &daemon.log()),
            ("check-config output", &checked),
            ("check-config errors", &checked_err),
            ("/ready answer", &reason),
            ("metrics", &metrics),
        ],
    );
}
