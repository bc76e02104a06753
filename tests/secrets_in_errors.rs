//! No part of a secret reaches an error: MongoDB connection strings the driver cannot
//! parse (a password with an unescaped `?`, `/`, `#`, `%`, ...), TOML the parser refuses
//! on the line of a password, through `check-config`, `run` and a SIGHUP reload; and
//! `check-config` masks every secret librdkafka property.

mod common;

use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The password's pieces between reserved characters: none may appear anywhere.
const PIECES: &[&str] = &["Zq7K", "Xw9P"];

/// Connection strings whose password the driver cannot read as it is.
const MALFORMED: &[&str] = &[
    "mongodb://app:Zq7K?Xw9P@db.example:27017/",
    "mongodb://app:Zq7K?Xw9P@db.example:notaport/",
    "mongodb+srv://app:Zq7K?Xw9P@db.example/",
    "mongodb://app:Zq7K/Xw9P@db.example:27017/",
    "mongodb://app:Zq7K#Xw9P@db.example:27017/",
    "mongodb://app:Zq7K%zzXw9P@db.example:27017/",
    "mongodb://app:Zq7K:Xw9P@db.example:27017/",
    "mongodb://app:Zq7K[Xw9P@db.example/",
    "mongodb://app:Zq7K@Xw9P@db.example:27017/?replicaSet=rs?0",
];

fn assert_no_piece(output: &str, context: &str) {
    for piece in PIECES {
        assert!(
            !output.contains(piece),
            "{context}: `{piece}` of the password is in:\n{output}"
        );
    }
}

fn config(uri: &str) -> String {
    format!("[mongodb]\nuri = \"{uri}\"\n[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\n")
}

#[test]
fn check_config_and_run_refuse_a_malformed_uri_without_quoting_its_password() {
    for uri in MALFORMED {
        for subcommand in ["check-config", "run"] {
            let (code, stdout, stderr) = common::run_to_end(subcommand, &config(uri), &[]);
            let context = format!("{subcommand} with {uri}");
            assert_ne!(code, Some(0), "{context}: accepted");
            assert!(stderr.contains("mongodb.uri"), "{context}: {stderr}");
            assert_no_piece(&format!("{stdout}{stderr}"), &context);
        }
    }
}

#[test]
fn a_malformed_uri_from_the_environment_is_not_quoted_either() {
    for uri in MALFORMED {
        let (code, stdout, stderr) = common::run_to_end(
            "check-config",
            &config("mongodb://127.0.0.1:27017"),
            &[("MKB__MONGODB__URI", uri)],
        );
        assert_ne!(code, Some(0), "{uri}: accepted");
        assert_no_piece(&format!("{stdout}{stderr}"), uri);
    }
}

#[test]
fn the_reason_names_the_character_to_escape() {
    let (_, _, stderr) = common::run_to_end(
        "check-config",
        &config("mongodb://app:Zq7K?Xw9P@db.example:27017/"),
        &[],
    );
    assert!(stderr.contains("`?`") && stderr.contains("%3F"), "{stderr}");
}

#[test]
fn a_toml_error_on_the_line_of_a_password_does_not_show_the_line() {
    // A backslash in a TOML basic string must be escaped itself.
    let text = "[mongodb]\nuri = \"mongodb://app:Zq7K\\qXw9P@db.example/\"\n[kafka]\nbootstrap_servers = \"h:1\"\n";
    let (code, stdout, stderr) = common::run_to_end("check-config", text, &[]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("line 2"), "{stderr}");
    assert_no_piece(&format!("{stdout}{stderr}"), "a TOML error");
}

#[test]
fn check_config_masks_every_secret_kafka_property() {
    let text = format!(
        "{}[kafka.properties]\n\"sasl.oauthbearer.config\" = \"principal=Zq7K scope=Xw9P\"\n\"sasl.oauthbearer.client.secret\" = \"Zq7K\"\n\"ssl.keystore.password\" = \"Xw9P\"\n",
        config("mongodb://app:Zq7K%3FXw9P@db.example:27017/")
    );
    let (code, stdout, stderr) = common::run_to_end("check-config", &text, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("sasl.oauthbearer.config"), "{stdout}");
    assert_no_piece(&format!("{stdout}{stderr}"), "check-config");
}

/// A running daemon (no pipelines) gets a malformed URI at a reload: it rejects the file,
/// and its log quotes no part of the password.
#[test]
fn a_reload_with_a_malformed_uri_logs_no_part_of_the_password() {
    let port = common::free_port();
    let mut daemon = common::Daemon::start(&common::config_toml(port, ""));
    common::wait_for_status(port, "/ready", 200, WAIT);
    let valid = common::config_toml(port, "");
    for (n, uri) in MALFORMED.iter().enumerate() {
        let text = valid.replace(
            &format!("uri = \"{}\"", common::mongodb_uri()),
            &format!("uri = \"{uri}\""),
        );
        assert_ne!(text, valid, "the test configuration names its URI");
        daemon.rewrite_config(&text);
        daemon.signal("HUP");
        daemon.wait_for_log("the running configuration stays", n + 1, WAIT);
    }
    let log = daemon.log();
    assert_no_piece(&log, "the reload log");
    let (_, metrics) = common::http_get(port, "/metrics").unwrap_or_default();
    let (_, ready) = common::http_get(port, "/ready").unwrap_or_default();
    assert_no_piece(&format!("{metrics}{ready}"), "/metrics and /ready");
    daemon.terminate(WAIT);
}

/// Per-pipeline keys, secrets among them, come from the environment: `MKB__SOURCE__0__...`
/// indexes the file's `[[source]]` tables; and any string value may be (or hold) a
/// `${env:NAME}` or `${file:/path}` reference (systemd `LoadCredential`, Kubernetes secrets),
/// read when the configuration is loaded.
#[test]
fn pipeline_keys_and_secrets_come_from_the_environment_and_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A credential file as systemd and Kubernetes write them: the secret, maybe a newline.
    let user_file = common::write_file(dir.path(), "registry-user", "user-from-file\n");
    let password_file = common::write_file(dir.path(), "registry-password", "Pw-From-File");
    let text = format!(
        "[mongodb]\nuri = \"mongodb://app:${{env:CONFIG_TEST_MONGO_PW}}@db.example:27017/\"\n\
         [kafka]\nbootstrap_servers = \"127.0.0.1:1\"\n\
         [[source]]\nname = \"orders\"\ndatabase = \"shop\"\ncollection = \"orders\"\nformat = \"avro\"\n\
         schema_registry = {{ url = \"http://r:8081\", username = \"${{file:{}}}\", password = \"${{file:{}}}\" }}\n\
         [[sink]]\nname = \"copy\"\ntopics = [\"t\"]\ndatabase = \"shop\"\nvalue_format = \"avro\"\n\
         schema_registry = {{ url = \"http://r:8081\" }}\n",
        user_file.display(),
        password_file.display(),
    );
    let env = [
        ("CONFIG_TEST_MONGO_PW", "Pw-From-Env"),
        ("MKB__SOURCE__0__TOPIC_PREFIX", "from-env"),
        (
            "MKB__SINK__0__SCHEMA_REGISTRY__USERNAME",
            "sink-user-from-env",
        ),
        (
            "MKB__SINK__0__SCHEMA_REGISTRY__PASSWORD",
            "Sink-Pw-From-Env",
        ),
    ];
    let (code, out, err) = common::run_to_end("check-config", &text, &env);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    for shown in [
        "topic_prefix = \"from-env\"",
        "username = \"user-from-file\"",
        "username = \"sink-user-from-env\"",
        "mongodb://app:****@db.example",
    ] {
        assert!(out.contains(shown), "no `{shown}` in:\n{out}");
    }
    for secret in ["Pw-From-Env", "Pw-From-File", "Sink-Pw-From-Env", "${"] {
        assert!(!out.contains(secret), "`{secret}` in:\n{out}");
    }

    // What cannot be read is named by its key, in one pass, and the reference is not
    // quoted with a secret.
    let missing = text.replace("CONFIG_TEST_MONGO_PW", "CONFIG_TEST_UNSET_VARIABLE");
    let broken = missing.replace(&password_file.display().to_string(), "/nonexistent/pw");
    let (code, out, err) = common::run_to_end("check-config", &broken, &[]);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("key `mongodb.uri`") && err.contains("CONFIG_TEST_UNSET_VARIABLE"),
        "{err}"
    );
    assert!(
        err.contains("key `source[0].schema_registry.password`") && err.contains("/nonexistent/pw"),
        "{err}"
    );
    // An index past the file's pipelines is named, not silently dropped.
    let (code, _, err) = common::run_to_end(
        "check-config",
        &text,
        &[
            ("CONFIG_TEST_MONGO_PW", "x"),
            ("MKB__SOURCE__3__TOPIC_PREFIX", "p"),
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("MKB__SOURCE__3__TOPIC_PREFIX"), "{err}");
}
