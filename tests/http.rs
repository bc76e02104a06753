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
