//! The command line: `--version`, `check-config` exit codes and output, and `run` from
//! start to a clean SIGTERM exit against the local services.

mod common;

use std::time::Duration;

#[test]
fn version_prints_the_crate_version() {
    let out = common::binary()
        .arg("--version")
        .output()
        .expect("running --version");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("mongo-kafka-bridge {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_accepts_the_example_and_masks_secrets() {
    let out = common::binary()
        .args(["check-config", "--config", "conf/example.toml"])
        .env(
            "MKB__MONGODB__URI",
            "mongodb://bridge:hunter2@db1:27017/?replicaSet=rs0",
        )
        .env("MKB__KAFKA__PROPERTIES__SASL_PASSWORD", "swordfish")
        .output()
        .expect("running check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(
        stderr.contains("conf/example.toml: configuration is valid"),
        "{stderr}"
    );
    // The environment overrides apply, with their secrets masked.
    assert!(
        stdout.contains("uri = \"mongodb://bridge:****@db1:27017/?replicaSet=rs0\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"sasl.password\" = \"****\""), "{stdout}");
    for secret in ["hunter2", "swordfish"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked"
        );
    }
    // The output is itself a valid configuration.
    let dir = tempfile::tempdir().expect("tempdir");
    let reprinted = common::write_file(dir.path(), "effective.toml", &stdout);
    let again = common::binary()
        .args(["check-config", "--config"])
        .arg(&reprinted)
        .output()
        .expect("running check-config");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn check_config_rejects_with_the_file_and_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("unknown.toml", "[mongodb]\nuri = \"mongodb://h\"\nurl = \"x\"\n[kafka]\nbootstrap_servers = \"h:1\"\n", "key `mongodb.url`"),
        ("type.toml", "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"h:1\"\n[http]\nenabled = 3\n", "key `http.enabled`"),
        ("missing.toml", "[mongodb]\nuri = \"mongodb://h\"\n", "key `kafka`"),
        ("invalid.toml", "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"h\"\n", "key `kafka.bootstrap_servers`"),
        ("syntax.toml", "[mongodb\n", "TOML parse error"),
    ];
    for (name, text, expected) in cases {
        let path = common::write_file(dir.path(), name, text);
        let out = common::binary()
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .expect("running check-config");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{name}: no file in {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "{name}: no `{expected}` in {stderr}"
        );
        assert!(out.stdout.is_empty(), "{name}: printed a config");
    }
    let out = common::binary()
        .args(["check-config", "--config", "/nonexistent/bridge.toml"])
        .output()
        .expect("running check-config");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/bridge.toml"));
}

#[test]
fn usage_errors_exit_2() {
    let out = common::binary()
        .arg("check-config")
        .output()
        .expect("running");
    assert_eq!(out.status.code(), Some(2));
    let out = common::binary()
        .arg("frobnicate")
        .output()
        .expect("running");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn run_refuses_an_invalid_config_before_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = common::write_file(
        dir.path(),
        "bad.toml",
        &common::config_toml(
            common::free_port(),
            "[[source]]\nname = \"a\"\ncollection = \"c\"\n",
        ),
    );
    let out = common::binary()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("running");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("key `source[0].collection`: needs `database` too"),
        "{stderr}"
    );
}

#[test]
fn run_becomes_ready_and_stops_cleanly_on_sigterm() {
    let port = common::free_port();
    let pipelines = format!(
        "[[source]]\nname = \"src\"\ndatabase = \"{db}\"\ncollection = \"c\"\n\
         [[sink]]\nname = \"snk\"\ntopics = [\"{topic}\"]\ndatabase = \"{db}\"\ncollection = \"d\"\n",
        db = common::unique("clidb"),
        topic = common::unique("clitopic"),
    );
    let mut daemon = common::Daemon::start(&common::config_toml(port, &pipelines));

    assert_eq!(
        common::wait_for_status(port, "/health", 200, Duration::from_secs(30)),
        "ok\n"
    );
    assert_eq!(
        common::wait_for_status(port, "/ready", 200, Duration::from_secs(60)),
        "ready\n"
    );
    // `/ready` does not wait for each pipeline actor's start (it reports only problems), so
    // on a loaded machine a pipeline may count itself running a moment later.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = common::wait_for_status(port, "/metrics", 200, Duration::from_secs(5));
        let both = metrics.contains("mkb_pipelines_running{kind=\"source\"} 1")
            && metrics.contains("mkb_pipelines_running{kind=\"sink\"} 1");
        if both || std::time::Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        metrics.contains(&format!(
            "mkb_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("mkb_pipelines_running{kind=\"source\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mkb_pipelines_running{kind=\"sink\"} 1"),
        "{metrics}"
    );

    daemon.signal("TERM");
    let status = daemon.wait(Duration::from_secs(30));
    let log = daemon.log();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    for line in [
        "connected",
        "source pipeline started",
        "sink pipeline started",
        "shutting down",
        "source pipeline stopped",
        "sink pipeline stopped",
        "stopped cleanly",
    ] {
        assert!(log.contains(line), "no `{line}` in log:\n{log}");
    }
}

#[test]
fn run_stays_unready_while_mongodb_is_unreachable_and_still_stops() {
    let port = common::free_port();
    let dead = common::free_port();
    let config = common::config_toml(port, "").replace(
        &format!("uri = \"{}\"", common::mongodb_uri()),
        &format!("uri = \"mongodb://127.0.0.1:{dead}\""),
    );
    let mut daemon = common::Daemon::start(&config);
    let body = common::wait_for_status(port, "/ready", 503, Duration::from_secs(30));
    // The first answer may still be "connecting"; wait for the failed attempt's reason.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut reason = body;
    while !reason.contains(&format!("127.0.0.1:{dead}")) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        reason = common::wait_for_status(port, "/ready", 503, Duration::from_secs(5));
    }
    assert!(
        reason.contains(&format!("MongoDB at 127.0.0.1:{dead}")),
        "{reason}"
    );
    let metrics = common::wait_for_status(port, "/metrics", 200, Duration::from_secs(5));
    assert!(
        metrics.contains("mkb_connect_failures_total{service=\"mongodb\"}"),
        "{metrics}"
    );
    daemon.signal("INT");
    assert_eq!(
        daemon.wait(Duration::from_secs(30)).code(),
        Some(0),
        "log:\n{}",
        daemon.log()
    );
}

#[test]
fn json_log_format_writes_json_lines() {
    let port = common::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = common::write_file(dir.path(), "bridge.toml", &common::config_toml(port, ""));
    let child = common::binary()
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starting");
    common::wait_for_status(port, "/health", 200, Duration::from_secs(30));
    let kill = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    assert!(matches!(kill, Ok(s) if s.success()));
    let out = child.wait_with_output().expect("waiting");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{stderr}");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value.get("level").is_some() && value.get("message").is_some(),
            "{line}"
        );
    }
}
