//! A Kafka Connect worker running the MongoDB Kafka Connector (`test-services/connect.sh`),
//! for the tests that compare the daemon with the connector itself.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A Kafka Connect worker running the connectors of the given properties files; stopped
/// (`connect.sh down`) when dropped, so a failing test stops it too.
pub struct ConnectWorker {
    script: PathBuf,
}

impl ConnectWorker {
    /// Starts the worker. Only one can run on a machine (port 8083, one PID file): while
    /// another test's runs, waits for it up to 5 minutes, then fails loudly.
    pub fn up(properties: &[PathBuf]) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-services/connect.sh");
        let deadline = Instant::now() + Duration::from_secs(300);
        while Command::new(&script)
            .arg("status")
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                Instant::now() < deadline,
                "another Kafka Connect worker has run for 5 minutes: `test-services/connect.sh status`"
            );
            eprintln!("a Kafka Connect worker runs already; waiting for it to stop");
            std::thread::sleep(Duration::from_secs(10));
        }
        let out = Command::new(&script)
            .arg("up")
            .args(properties)
            .env("KAFKA_BOOTSTRAP", super::kafka_bootstrap())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        // Built before checking, so that a worker half started is stopped too.
        let worker = Self { script };
        assert!(
            out.status.success(),
            "the Kafka Connect worker did not start:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        worker
    }
}

impl Drop for ConnectWorker {
    fn drop(&mut self) {
        match Command::new(&self.script).arg("down").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "connect.sh down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("connect.sh down: {e}"),
        }
    }
}
