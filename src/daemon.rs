//! `run`: the actix system, the HTTP endpoint, the root supervisor and the shutdown
//! sequence around them.

use actix::prelude::*;

use crate::config::Config;
use crate::ops::health::Readiness;
use crate::ops::http;
use crate::ops::metrics::Metrics;
use crate::ops::signals::ShutdownSignals;
use crate::supervisor::{Shutdown, Supervisor};

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

/// Runs the daemon until SIGTERM/SIGINT; returns the process exit code.
pub fn run(config: Config) -> i32 {
    let system = actix_rt::System::new();
    let code = system.block_on(async move {
        match serve(config).await {
            Ok(code) => code,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                1
            }
        }
    });
    System::current().stop();
    code
}

async fn serve(config: Config) -> Result<i32, StartError> {
    let signals = ShutdownSignals::install().map_err(StartError::Signals)?;
    let metrics = Metrics::new()?;
    let readiness = Readiness::default();
    let http = if config.http.enabled {
        let address = config.http.address;
        let server = http::serve(address, readiness.clone(), metrics.clone())
            .map_err(|source| StartError::Http { address, source })?;
        let handle = server.handle();
        actix_rt::spawn(server);
        tracing::info!(%address, "HTTP endpoint listening");
        Some(handle)
    } else {
        None
    };
    let deadline = config.shutdown.timeout;
    let supervisor = Supervisor::new(config, readiness, metrics).start();

    let signal = signals.requested().await;
    tracing::info!(signal, ?deadline, "shutting down");
    let stopped = tokio::time::timeout(deadline, supervisor.send(Shutdown)).await;
    if let Some(handle) = http {
        handle.stop(true).await;
    }
    Ok(match stopped {
        Ok(Ok(())) => {
            tracing::info!("stopped cleanly");
            0
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "the supervisor was gone before shutdown");
            1
        }
        Err(_) => {
            tracing::error!(
                ?deadline,
                "graceful shutdown did not finish within `shutdown.timeout`"
            );
            1
        }
    })
}
