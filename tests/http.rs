//! The HTTP endpoint: read-only paths (GET and HEAD; 405 for other methods, 404 for other
//! paths) on a loopback address by default.

mod common;

use std::time::Duration;

const PATHS: [&str; 3] = ["/health", "/ready", "/metrics"];

#[test]
fn only_get_and_head_are_answered_and_other_paths_are_not_found() {
    let port = common::free_port();
    let mut daemon = common::Daemon::start(&common::config_toml(port, ""));
    common::wait_for_status(port, "/ready", 200, Duration::from_secs(60));
    for path in PATHS {
        let (status, _, get_body) =
            common::http_request(port, "GET", path).unwrap_or_else(|| panic!("GET {path}"));
        assert_eq!(status, 200, "GET {path}");
        assert!(!get_body.is_empty(), "GET {path}");
        let (status, head, body) =
            common::http_request(port, "HEAD", path).unwrap_or_else(|| panic!("HEAD {path}"));
        assert_eq!(status, 200, "HEAD {path}: {head}");
        assert_eq!(body, "", "HEAD {path} has a body");
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"] {
            let (status, head, _) = common::http_request(port, method, path)
                .unwrap_or_else(|| panic!("{method} {path}"));
            assert_eq!(status, 405, "{method} {path}: {head}");
            assert!(
                head.to_ascii_lowercase().contains("allow: get, head"),
                "{method} {path}: {head}"
            );
        }
    }
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/admin"),
        ("GET", "/health/../metrics/x"),
        ("POST", "/reload"),
        ("DELETE", "/"),
    ] {
        let (status, head, _) =
            common::http_request(port, method, path).unwrap_or_else(|| panic!("{method} {path}"));
        assert_eq!(status, 404, "{method} {path}: {head}");
    }
    daemon.terminate(Duration::from_secs(30));
}

#[test]
fn the_endpoint_listens_on_loopback_unless_configured_otherwise() {
    // Without `[http]` the effective configuration binds to loopback.
    let without = common::config_toml(common::free_port(), "")
        .lines()
        .filter(|l| !l.starts_with("[http]") && !l.starts_with("address ="))
        .collect::<Vec<_>>()
        .join("\n");
    let (code, stdout, stderr) = common::run_to_end("check-config", &without, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("[http]\nenabled = true\naddress = \"127.0.0.1:9187\""),
        "{stdout}"
    );
}

/// `healthcheck --address A [--ready]`: the container's health check without `curl`.
fn healthcheck(port: u16, extra: &[&str]) -> (Option<i32>, String) {
    let out = common::binary()
        .args(["healthcheck", "--address", &format!("0.0.0.0:{port}")])
        .args(extra)
        .env_remove("MKB__HTTP__ADDRESS")
        .output()
        .expect("running healthcheck");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_healthcheck_subcommand_answers_for_a_running_daemon_and_fails_without_one() {
    let port = common::free_port();
    let (code, stderr) = healthcheck(port, &[]);
    assert_eq!(code, Some(1), "nothing runs yet: {stderr}");
    assert!(stderr.contains("nothing answered"), "{stderr}");
    let mut daemon = common::Daemon::start(&common::config_toml(port, ""));
    common::wait_for_status(port, "/ready", 200, Duration::from_secs(60));
    // An address on every interface is asked on loopback, as inside a container.
    let (code, stderr) = healthcheck(port, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = healthcheck(port, &["--ready"]);
    assert_eq!(code, Some(0), "{stderr}");
    daemon.terminate(Duration::from_secs(30));
    let (code, stderr) = healthcheck(port, &["--timeout", "1s"]);
    assert_eq!(code, Some(1), "the daemon stopped: {stderr}");
}

#[test]
fn healthcheck_ready_fails_naming_the_reason_while_mongodb_is_unreachable() {
    let port = common::free_port();
    let unreachable = common::free_port();
    let config = common::config_toml(
        port,
        "[[source]]\nname = \"hc\"\ndatabase = \"hc\"\ncollection = \"c\"\n",
    )
    .replace(
        &format!("uri = \"{}\"", common::mongodb_uri()),
        &format!("uri = \"mongodb://127.0.0.1:{unreachable}/?serverSelectionTimeoutMS=500\""),
    );
    let mut daemon = common::Daemon::start(&config);
    common::wait_for_status(port, "/health", 200, Duration::from_secs(60));
    let (code, stderr) = healthcheck(port, &["--ready"]);
    assert_eq!(code, Some(1), "MongoDB is unreachable: {stderr}");
    assert!(
        stderr.contains("/ready") && stderr.contains("503"),
        "{stderr}"
    );
    let (code, stderr) = healthcheck(port, &[]);
    assert_eq!(code, Some(0), "alive all the same: {stderr}");
    daemon.terminate(Duration::from_secs(30));
}

/// With `WatchdogSec=` systemd sets `WATCHDOG_USEC`; the daemon pings `WATCHDOG=1` on
/// `NOTIFY_SOCKET` at half that period from its actix thread, and a frozen daemon stops.
#[test]
fn the_daemon_pings_systemds_watchdog_and_stops_when_frozen() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("binding the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let port = common::free_port();
    let socket_env = socket_path.to_string_lossy().into_owned();
    let mut daemon = common::Daemon::start_with_env(
        &common::config_toml(port, ""),
        &[("NOTIFY_SOCKET", &socket_env), ("WATCHDOG_USEC", "400000")],
    );
    let pings_within = |limit: Duration| {
        let deadline = std::time::Instant::now() + limit;
        let mut pings = 0;
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                pings += String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .filter(|l| *l == "WATCHDOG=1")
                    .count();
            }
        }
        pings
    };
    common::wait_for_status(port, "/health", 200, Duration::from_secs(60));
    let running = pings_within(Duration::from_secs(2));
    assert!(
        running >= 5,
        "{running} watchdog pings in 2 s at a 400 ms period"
    );
    daemon.signal("STOP");
    // What was sent before the stop may still be queued; then nothing.
    let _ = pings_within(Duration::from_millis(300));
    let frozen = pings_within(Duration::from_secs(1));
    daemon.signal("CONT");
    assert_eq!(frozen, 0, "a stopped daemon pinged the watchdog");
    assert!(
        pings_within(Duration::from_secs(1)) > 0,
        "pings again after SIGCONT"
    );
    daemon.terminate(Duration::from_secs(30));
}

/// `/ready` answers 200 only once every pipeline runs, not as soon as the daemon reached
/// MongoDB and Kafka: a sink whose start is slow (every answer of Kafka delayed by a proxy, so
/// counting its topics' partitions takes seconds) keeps it at 503, naming the pipeline.
#[test]
fn ready_waits_until_every_pipeline_runs() {
    let proxy = common::proxy::Proxy::start(&common::kafka_bootstrap());
    proxy.set_latency(Duration::from_millis(700));
    let port = common::free_port();
    let name = common::unique("ready_slow");
    let config = common::config_toml(
        port,
        &format!(
            "[[sink]]\nname = \"{name}\"\ntopics = [\"{}\"]\ndatabase = \"{}\"\ncollection = \"c\"\n",
            common::unique("ready_slow"),
            common::unique("ready_slowdb"),
        ),
    )
    .replace(
        &format!("bootstrap_servers = \"{}\"", common::kafka_bootstrap()),
        &format!("bootstrap_servers = \"127.0.0.1:{}\"", proxy.port()),
    );
    let mut daemon = common::Daemon::start(&config);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut starting_seen = false;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "/ready never answered 200; log:\n{}",
            daemon.log()
        );
        match common::http_get(port, "/ready") {
            Some((200, body)) => {
                assert!(
                    daemon.log().contains("sink pipeline running"),
                    "/ready answered 200 ({body}) before the sink ran; log:\n{}",
                    daemon.log()
                );
                break;
            }
            Some((_, body)) => {
                starting_seen |= body.contains(&format!("pipeline {name}: starting"));
            }
            None => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        starting_seen,
        "/ready never said the pipeline was starting; log:\n{}",
        daemon.log()
    );
    daemon.terminate(Duration::from_secs(30));
}
