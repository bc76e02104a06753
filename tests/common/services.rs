//! Services of a test's own: a Kafka broker or a MongoDB stand-in started by
//! `test-services/services.sh` on free ports, with its state in a temporary folder, for the
//! tests that pause, stop or kill a service. The shared services on 9092 and 27017 are never
//! paused: other test binaries (and other people's runs) use them at the same time.
//!
//! The jars and the compiled launcher come from the checkout's `test-services/.cache`, which
//! `services.sh up` filled; only data, logs, PIDs and TLS material are the test's own.

use std::path::Path;
use std::process::Command;

/// Which service of `services.sh` this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Kafka,
    Mongo,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Kafka => "kafka",
            Kind::Mongo => "mongo",
        }
    }
}

/// A running service of the test's own; stopped (and its state deleted) when dropped.
pub struct OwnService {
    kind: Kind,
    port: u16,
    env: Vec<(String, String)>,
    state: tempfile::TempDir,
}

impl OwnService {
    /// A single-node KRaft broker of its own (512 MiB heap), answering on `address()`.
    pub fn kafka() -> Self {
        Self::kafka_with(Vec::new())
    }

    /// [`OwnService::kafka`] with a second plain listener on `split_port` that advertises
    /// `advertised_port`, where the test runs a [`super::proxy::Proxy`] to `split_port`: a
    /// client bootstrapping on the proxy reaches the broker only through it, so freezing
    /// the proxy cuts that client alone off the broker (a network split).
    pub fn kafka_behind(split_port: u16, advertised_port: u16) -> Self {
        Self::kafka_with(vec![
            ("KAFKA_SPLIT_PORT".to_owned(), split_port.to_string()),
            (
                "KAFKA_SPLIT_ADVERTISED_PORT".to_owned(),
                advertised_port.to_string(),
            ),
        ])
    }

    fn kafka_with(more: Vec<(String, String)>) -> Self {
        let port = super::free_port();
        let mut env = vec![
            ("KAFKA_PORT".to_owned(), port.to_string()),
            (
                "KAFKA_CONTROLLER_PORT".to_owned(),
                super::free_port().to_string(),
            ),
            ("KAFKA_SSL_PORT".to_owned(), super::free_port().to_string()),
            ("KAFKA_HEAP".to_owned(), "512m".to_owned()),
        ];
        env.extend(more);
        Self::start(Kind::Kafka, port, env)
    }

    /// A MongoDB stand-in of its own (512 MiB heap), answering on `uri()`.
    pub fn mongo() -> Self {
        let port = super::free_port();
        let env = vec![
            ("MONGO_PORT".to_owned(), port.to_string()),
            ("MONGO_HEAP".to_owned(), "512m".to_owned()),
        ];
        Self::start(Kind::Mongo, port, env)
    }

    /// [`OwnService::mongo`] keeping its data and oplog in an H2 file across `down` and
    /// `up`, like a MongoDB restart.
    pub fn mongo_with_a_data_file() -> Self {
        let port = super::free_port();
        let env = vec![
            ("MONGO_PORT".to_owned(), port.to_string()),
            ("MONGO_HEAP".to_owned(), "512m".to_owned()),
            // Relative to the state folder, made absolute in `start`.
            ("MONGO_H2_FILE".to_owned(), "stand-in.h2".to_owned()),
        ];
        Self::start(Kind::Mongo, port, env)
    }

    fn start(kind: Kind, port: u16, mut env: Vec<(String, String)>) -> Self {
        let state = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary folder: {e}"));
        let folder = state
            .path()
            .to_str()
            .expect("a UTF-8 temporary path")
            .to_owned();
        for (key, value) in &mut env {
            if key == "MONGO_H2_FILE" {
                *value = format!("{folder}/{value}");
            }
        }
        env.push(("TEST_SERVICES_CACHE".to_owned(), folder));
        let service = Self {
            kind,
            port,
            env,
            state,
        };
        service.up();
        service
    }

    /// `services.sh up <kind>`: starts it (again) and waits until it answers.
    pub fn up(&self) {
        self.services("up");
    }

    /// `services.sh down <kind>`: stops it, keeping its data for the next `up`.
    pub fn down(&self) {
        self.services("down");
    }

    /// `host:port` of a broker.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `mongodb://host:port` of a stand-in.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// The PID of the running service's process.
    pub fn pid(&self) -> u32 {
        let path = self
            .state
            .path()
            .join(format!("run/{}.pid", self.kind.name()));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
    }

    /// `config` (made by `common::config_toml`) pointed at this service instead of the
    /// shared one.
    pub fn config(&self, config: &str) -> String {
        match self.kind {
            Kind::Kafka => config.replace(
                &format!("bootstrap_servers = \"{}\"", super::kafka_bootstrap()),
                &format!("bootstrap_servers = \"{}\"", self.address()),
            ),
            Kind::Mongo => config.replace(
                &format!("uri = \"{}\"", super::mongodb_uri()),
                &format!("uri = \"{}\"", self.uri()),
            ),
        }
    }

    fn services(&self, command: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-services/services.sh");
        let status = Command::new(script)
            .args([command, self.kind.name()])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .status()
            .unwrap_or_else(|e| panic!("services.sh {command} {}: {e}", self.kind.name()));
        assert!(
            status.success(),
            "services.sh {command} {}: {status}",
            self.kind.name()
        );
    }
}

impl Drop for OwnService {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-services/services.sh");
        // Also after a failed assertion; a failure to stop is reported, never a double panic.
        let stopped = Command::new(script)
            .args(["down", self.kind.name()])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .status();
        if !matches!(stopped, Ok(s) if s.success()) {
            eprintln!(
                "could not stop the test's own {} on port {}: {stopped:?}",
                self.kind.name(),
                self.port
            );
        }
    }
}

/// Stops a process with SIGSTOP; SIGCONT when dropped, even when the test fails.
pub struct Paused(u32);

impl Paused {
    pub fn new(pid: u32) -> Self {
        signal(pid, "STOP");
        Self(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "kill -{name} {pid}: {status:?}"
    );
}
