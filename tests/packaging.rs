//! Packaging: the systemd unit is one systemd accepts (`systemd-analyze verify`, when the
//! machine has it) and says what operators rely on; the Dockerfile keeps its promises
//! (no Docker engine runs here, so it is checked as text).

mod common;

use std::path::Path;
use std::process::Command;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn the_systemd_unit_is_valid_notify_reloadable_and_hardened() {
    let unit = read("conf/mongo-kafka-bridge.service");
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "DynamicUser=yes",
        "ExecStartPre=/usr/local/bin/mongo-kafka-bridge check-config",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "the unit lacks `{line}`"
        );
    }
    // The commands it runs are the daemon's own, with the flags it has.
    let binary = env!("CARGO_BIN_EXE_mongo-kafka-bridge");
    let local = unit.replace("/usr/local/bin/mongo-kafka-bridge", binary);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/example.toml");
    for line in local.lines().filter(|l| l.starts_with("ExecStartPre=")) {
        let args: Vec<String> = line
            .trim_start_matches("ExecStartPre=")
            .replace(
                "/etc/mongo-kafka-bridge/config.toml",
                &example.to_string_lossy(),
            )
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let status = Command::new(&args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("running {line}: {e}"));
        assert!(status.status.success(), "{line}: {status:?}");
    }
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("SKIPPED: systemd-analyze verify: systemd-analyze is not installed here; the unit was checked as text only");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = common::write_file(dir.path(), "mongo-kafka-bridge.service", &local);
    let out = Command::new(analyze)
        .arg("verify")
        .arg("--man=no")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{stderr}",
        out.status
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn the_dockerfile_builds_in_stages_and_runs_unprivileged_with_a_healthcheck() {
    let dockerfile = read("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "a multi-stage build");
    let toolchain = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .and_then(|l| l.split('-').next())
        .expect("a pinned rust toolchain");
    let manifest = read("Cargo.toml");
    assert!(
        manifest.contains(&format!("rust-version = \"{toolchain}\"")),
        "the image's toolchain {toolchain} is the crate's rust-version"
    );
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER");
    assert!(user != "root" && user != "0", "runs as {user}");
    assert!(dockerfile.contains("HEALTHCHECK"), "a health check");
    assert!(
        dockerfile.contains("/health"),
        "the health check asks /health"
    );
    assert!(dockerfile.contains("/etc/mongo-kafka-bridge/config.toml"));
    assert!(dockerfile.contains("--locked"), "builds from Cargo.lock");
    let ignore = read(".dockerignore");
    for entry in ["target", ".git", "test-services/.cache"] {
        assert!(
            ignore.lines().any(|l| l == entry),
            ".dockerignore lacks {entry}"
        );
    }
}
