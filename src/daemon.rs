//! `run`: the actix system, the HTTP endpoint, the root supervisor, and the signals around
//! them: SIGHUP reloads the configuration file, SIGTERM/SIGINT shut down gracefully.

use std::path::{Path, PathBuf};

use actix::prelude::*;

use crate::config::{self, Config};
use crate::ops::control::PipelineBoard;
use crate::ops::health::Readiness;
use crate::ops::metrics::Metrics;
use crate::ops::signals::{Request, Signals};
use crate::ops::status::StatusBoard;
use crate::ops::{http, systemd};
use crate::supervisor::{Reload, Shutdown, Supervisor};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metrics registry rejected a definition (a bug, not an operator error).
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    /// The HTTP endpoint could not bind its address.
    #[error("binding the HTTP endpoint to {address} (key `http.address`): {source}")]
    Http {
        /// The configured address.
        address: std::net::SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
}

/// Runs the daemon until SIGTERM/SIGINT, reloading `path` on SIGHUP; returns the process
/// exit code.
pub fn run(config: Config, path: PathBuf) -> i32 {
    let system = actix_rt::System::new();
    let code = system.block_on(async move {
        match serve(config, path).await {
            Ok(code) => code,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                1
            }
        }
    });
    System::current().stop();
    // Dropping the runtime waits for the blocking calls still running: the group leaves
    // (their consumers close, so the group reassigns at once), but also any call waiting
    // for a silent broker (an offset commit), which returns only when librdkafka gives up
    // on it, long after the shutdown deadline. They get EXIT_GRACE, then the process ends.
    std::thread::spawn(move || {
        std::thread::sleep(EXIT_GRACE);
        tracing::warn!(grace = ?EXIT_GRACE, "calls to an unanswering broker are still running after the shutdown; exiting without them");
        std::process::exit(code);
    });
    drop(system);
    code
}

/// How long the exit waits for blocking calls still running after the shutdown (group
/// leaves, a commit to a broker that does not answer).
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

async fn serve(config: Config, path: PathBuf) -> Result<i32, StartError> {
    let mut signals = Signals::install().map_err(StartError::Signals)?;
    let metrics = Metrics::new()?;
    let readiness = Readiness::default();
    let status = StatusBoard::default();
    let board = PipelineBoard::new(Some(metrics.clone()));
    // The supervisor's address before it starts: the HTTP endpoint sends it commands.
    let supervisor_context = actix::Context::<Supervisor>::new();
    let http = if config.http.enabled {
        let address = config.http.address;
        let reporters = http::Reporters {
            readiness: readiness.clone(),
            metrics: metrics.clone(),
            status: status.clone(),
            board: board.clone(),
            control: Some(supervisor_context.address().recipient()),
            snapshots: Some(supervisor_context.address().recipient()),
            token: config.http.token.clone(),
            // A pause waits for the readers to stop and the producers to drain.
            deadline: config.shutdown.timeout + std::time::Duration::from_secs(5),
        };
        let server = http::serve(address, reporters)
            .map_err(|source| StartError::Http { address, source })?;
        let handle = server.handle();
        actix_rt::spawn(server);
        tracing::info!(%address, "HTTP endpoint listening");
        Some(handle)
    } else {
        None
    };
    let mut deadline = config.shutdown.timeout;
    let supervisor = Supervisor::new(config, readiness, metrics.clone(), status, board);
    let draining = supervisor.draining();
    let supervisor = supervisor_context.run(supervisor);
    systemd::ready("running");
    systemd::spawn_watchdog();

    let signal = loop {
        match signals.next().await {
            Request::Shutdown(signal) => break signal,
            Request::Reload => {
                if let Some(new_deadline) = reload(&path, &supervisor, &metrics).await {
                    deadline = new_deadline;
                }
            }
        }
    };
    signals.force_exit_on_second();
    systemd::stopping();
    tracing::info!(signal, ?deadline, "shutting down");
    let stopped = tokio::time::timeout(deadline, supervisor.send(Shutdown)).await;
    if let Some(handle) = http {
        handle.stop(true).await;
    }
    Ok(match stopped {
        Ok(Ok(left)) if left.is_empty() => {
            tracing::info!("stopped cleanly");
            0
        }
        Ok(Ok(left)) => {
            tracing::error!(
                ?deadline,
                left = ?left,
                "graceful shutdown did not finish within `shutdown.timeout`: what was left is read again at the next start"
            );
            1
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "the supervisor was gone before shutdown");
            1
        }
        Err(_) => {
            let left: Vec<String> = draining
                .lock()
                .map(|d| {
                    d.iter()
                        .map(|(name, what)| format!("{name}: {what}"))
                        .collect()
                })
                .unwrap_or_default();
            tracing::error!(
                ?deadline,
                left = ?left,
                "graceful shutdown did not finish within `shutdown.timeout`: what was left is read again at the next start"
            );
            1
        }
    })
}

/// Reads `path` again and, when it is valid, hands it to the supervisor; an invalid file is
/// logged and counted and the running configuration stays. Answers the new shutdown
/// deadline when the reload was applied.
async fn reload(
    path: &Path,
    supervisor: &Addr<Supervisor>,
    metrics: &Metrics,
) -> Option<std::time::Duration> {
    systemd::reloading();
    tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
    let applied = match config::load(path) {
        Err(error) => {
            tracing::error!(%error, "the new configuration is invalid; the running configuration stays");
            metrics.config_reloaded("rejected");
            None
        }
        Ok(config) => {
            for warning in config::warnings(&config) {
                tracing::warn!(key = %warning.key, warning = %warning.message, "configuration warning");
            }
            let deadline = config.shutdown.timeout;
            match supervisor.send(Reload(config)).await {
                Ok(diff) => {
                    for section in &diff.needs_restart {
                        tracing::warn!(
                            section,
                            "this section changed; it applies at the next start of the daemon"
                        );
                    }
                    let result = if diff.is_empty() {
                        "unchanged"
                    } else {
                        "applied"
                    };
                    tracing::info!(
                        added = ?diff.added,
                        removed = ?diff.removed,
                        changed = ?diff.changed,
                        unchanged = ?diff.unchanged,
                        "configuration reloaded"
                    );
                    metrics.config_reloaded(result);
                    Some(deadline)
                }
                Err(error) => {
                    tracing::error!(%error, "the supervisor did not take the new configuration");
                    metrics.config_reloaded("rejected");
                    None
                }
            }
        }
    };
    systemd::ready("running");
    applied
}
