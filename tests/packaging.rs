//! Packaging: the systemd unit is one systemd accepts (`systemd-analyze verify`, when the
//! machine has it) and says what operators rely on; the Dockerfile keeps its promises. No
//! Docker engine runs here: the Dockerfile's runtime stage is checked as text, and its build
//! stage is replayed (the files it copies, laid out alone, and its cargo command run there).
//! The Kubernetes manifests parse and agree with the binary, the image and the configuration.

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
        "WatchdogSec=",
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
    // Numeric, so Kubernetes' `runAsNonRoot` can tell it is not root.
    let numeric = user
        .split(':')
        .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && id != "0");
    assert!(numeric, "USER {user} is not a numeric uid:gid");
    let healthcheck = dockerfile
        .split("HEALTHCHECK")
        .nth(1)
        .expect("a health check");
    assert!(
        healthcheck.contains("\"healthcheck\"]"),
        "the health check is the daemon's own subcommand: {healthcheck}"
    );
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap_or_default();
    let installs_curl = runtime
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .any(|l| l.contains("curl"));
    assert!(!installs_curl, "no curl in the runtime image");
    // Dependencies are built in a layer before the sources are copied.
    let (before_sources, _) = dockerfile
        .split_once("COPY src ")
        .expect("the sources are copied");
    assert!(
        before_sources.contains("cargo build --release --locked"),
        "the dependencies are not built in a layer of their own"
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

/// The build stage of the Dockerfile, as this test replays it: what it copies (sources
/// relative to the build context, destinations relative to its `WORKDIR`) and the cargo
/// command it runs.
struct BuildStage {
    copies: Vec<(Vec<String>, String)>,
    cargo: Vec<String>,
}

fn build_stage(dockerfile: &str) -> BuildStage {
    let mut stage = BuildStage {
        copies: Vec::new(),
        cargo: Vec::new(),
    };
    let mut from = 0;
    for line in dockerfile.lines().map(str::trim) {
        if line.starts_with("FROM ") {
            from += 1;
            continue;
        }
        if from != 1 {
            continue;
        }
        if let Some(args) = line.strip_prefix("COPY ") {
            assert!(
                !args.starts_with("--"),
                "the build stage copies with flags the test does not replay: {line}"
            );
            let mut words: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
            let to = words.pop().expect("a COPY destination");
            stage.copies.push((words, to));
        } else if let Some(command) = line.strip_prefix("RUN cargo ") {
            stage.cargo = command.split_whitespace().map(str::to_owned).collect();
        }
    }
    assert!(
        !stage.copies.is_empty() && !stage.cargo.is_empty(),
        "the Dockerfile's first stage copies the sources and runs cargo"
    );
    stage
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("dir entry");
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
    }
}

/// The image's build stage builds: exactly the files its `COPY` lines bring in, laid out in an
/// empty folder, pass its cargo command (as `cargo check`, keeping its other arguments, so
/// `--locked` holds). It failed before `benches/` was copied: the manifest names benches there.
#[test]
fn the_dockerfile_build_stage_builds_from_exactly_what_it_copies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stage = build_stage(&read("Dockerfile"));
    let context = tempfile::tempdir().expect("tempdir");
    for (sources, to) in &stage.copies {
        for source in sources {
            let from = root.join(source);
            assert!(
                from.exists(),
                "the Dockerfile copies {source}, which is missing"
            );
            let target = if to.ends_with('/') || sources.len() > 1 || to == "." {
                context.path().join(to).join(
                    Path::new(source)
                        .file_name()
                        .expect("a COPY source with a name"),
                )
            } else {
                context.path().join(to)
            };
            copy_tree(&from, &target);
        }
    }
    let args: Vec<&str> = stage
        .cargo
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--release")
        .map(|a| if a == "build" { "check" } else { a })
        .collect();
    assert_eq!(args.first(), Some(&"check"), "cargo {:?}", stage.cargo);
    // A target folder of its own (this test runs while `cargo test` holds the main one),
    // kept between runs so only the first one checks every dependency.
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(&args)
        .current_dir(context.path())
        .env("CARGO_TARGET_DIR", root.join("target/dockerfile-check"))
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "cargo {} failed in the Dockerfile's build context:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every YAML document of `deploy/kubernetes/`, by file name.
fn kubernetes_manifests() -> Vec<(String, yaml_rust2::Yaml)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut documents = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/kubernetes") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("manifest");
            let docs = yaml_rust2::YamlLoader::load_from_str(&text)
                .unwrap_or_else(|e| panic!("{name} is not YAML: {e}"));
            assert!(!docs.is_empty(), "{name} is empty");
            documents.extend(docs.into_iter().map(|d| (name.clone(), d)));
        }
    }
    documents
}

fn yaml_str<'a>(value: &'a yaml_rust2::Yaml, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

/// The kustomize base in `deploy/kubernetes/`: every manifest parses, what the kustomization
/// names exists, and the Deployment agrees with the binary (its arguments parse as the
/// daemon's command line and its configuration passes `check-config`), with the Dockerfile
/// (user, port) and with the configuration (the HTTP port, a grace period above
/// `shutdown.timeout`); probes and the PodMonitor ask paths the daemon serves.
#[test]
fn the_kubernetes_manifests_parse_and_agree_with_the_binary_and_the_image() {
    use clap::Parser;
    use mongo_kafka_bridge::cli::{Cli, Command as Subcommand};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let manifests = kubernetes_manifests();
    let kind = |kind: &str| {
        manifests
            .iter()
            .find(|(_, d)| d["kind"].as_str() == Some(kind))
            .map(|(_, d)| d)
            .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes"))
    };
    let kustomization = kind("Kustomization");
    for resource in kustomization["resources"].as_vec().expect("resources") {
        let file = yaml_str(resource, "a resource");
        assert!(
            dir.join(file).exists(),
            "the kustomization names {file}, which is missing"
        );
    }
    let generator = &kustomization["configMapGenerator"][0];
    let config_file = yaml_str(&generator["files"][0], "the ConfigMap's file");
    let config_path = dir.join(config_file);
    let secrets = &kustomization["secretGenerator"][0];

    let deployment = kind("Deployment");
    assert_eq!(
        deployment["spec"]["strategy"]["type"].as_str(),
        Some("Recreate")
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // The arguments are the daemon's command line, reading the mounted configuration.
    let args: Vec<&str> = container["args"]
        .as_vec()
        .expect("container args")
        .iter()
        .map(|a| yaml_str(a, "an argument"))
        .collect();
    let cli =
        Cli::try_parse_from(std::iter::once("mongo-kafka-bridge").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("the container's args {args:?}: {e}"));
    let Subcommand::Run { config: mounted } = cli.command else {
        panic!("the container does not `run`: {args:?}");
    };
    let mount = container["volumeMounts"]
        .as_vec()
        .expect("volume mounts")
        .iter()
        .find(|m| m["name"].as_str() == Some("config"))
        .expect("the config volume is mounted");
    assert_eq!(
        Path::new(yaml_str(&mount["mountPath"], "mountPath")).join(config_file),
        mounted,
        "the daemon reads the mounted ConfigMap"
    );
    let volume = pod["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|v| v["name"].as_str() == Some("config"))
        .expect("the config volume");
    assert_eq!(
        volume["configMap"]["name"].as_str(),
        generator["name"].as_str(),
        "the volume is the generated ConfigMap"
    );
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"].as_str(),
        secrets["name"].as_str(),
        "the environment comes from the generated Secret"
    );

    // The configuration, with the Secret's variables, passes check-config.
    let env: Vec<(String, String)> = secrets["literals"]
        .as_vec()
        .expect("secret literals")
        .iter()
        .filter_map(|l| l.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_mongo-kafka-bridge"))
        .args(["check-config", "--config"])
        .arg(&config_path)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("check-config");
    assert!(
        out.status.success(),
        "check-config on {}: {}",
        config_path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // Loaded here too, with the Secret's variables (its control token among them: the
    // endpoint listens beyond loopback); no other test of this file reads them.
    for (key, value) in &env {
        std::env::set_var(key, value);
    }
    let config = mongo_kafka_bridge::config::load(&config_path).expect("the configuration loads");

    // One port everywhere: the container's, the configuration's, the environment's, the image's.
    let port = container["ports"][0]["containerPort"]
        .as_i64()
        .expect("a containerPort");
    let port_name = yaml_str(&container["ports"][0]["name"], "the port's name");
    assert_eq!(i64::from(config.http.address.port()), port, "http.address");
    assert!(
        !config.http.address.ip().is_loopback(),
        "the configuration listens on loopback only: probes cannot reach it"
    );
    let http_env = container["env"]
        .as_vec()
        .expect("env")
        .iter()
        .find(|e| e["name"].as_str() == Some("MKB__HTTP__ADDRESS"))
        .map(|e| yaml_str(&e["value"], "MKB__HTTP__ADDRESS").to_owned())
        .expect("MKB__HTTP__ADDRESS");
    assert!(http_env.ends_with(&format!(":{port}")), "{http_env}");
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains(&format!("EXPOSE {port}")),
        "the image exposes {port}"
    );

    // The probes and the scrape ask what the daemon serves, on the named port.
    for (probe, path) in [("livenessProbe", "/health"), ("readinessProbe", "/ready")] {
        assert_eq!(
            container[probe]["httpGet"]["path"].as_str(),
            Some(path),
            "{probe}"
        );
        assert_eq!(
            container[probe]["httpGet"]["port"].as_str(),
            Some(port_name),
            "{probe}"
        );
    }
    let monitor = &kind("PodMonitor")["spec"]["podMetricsEndpoints"][0];
    assert_eq!(monitor["port"].as_str(), Some(port_name));
    assert_eq!(monitor["path"].as_str(), Some("/metrics"));
    assert!(kind("PodDisruptionBudget")["spec"]["maxUnavailable"]
        .as_i64()
        .is_some());

    // The image's numeric user, and a drain never cut short.
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER");
    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        format!(
            "{}:{}",
            security["runAsUser"].as_i64().unwrap_or(-1),
            security["runAsGroup"].as_i64().unwrap_or(-1)
        ),
        user,
        "the pod runs as the image's user"
    );
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        u64::try_from(grace).unwrap_or(0) > config.shutdown.timeout.as_secs(),
        "a grace period of {grace}s cuts a shutdown of {:?} short",
        config.shutdown.timeout
    );
}
