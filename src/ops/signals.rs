//! Unix signals: the first SIGTERM/SIGINT asks for a graceful shutdown, a second one
//! exits at once.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Exit code when a second signal cuts a graceful shutdown short.
pub const EXIT_FORCED: i32 = 130;

/// The shutdown signals, installed early so a signal during start-up is not lost to the
/// default handler.
pub struct ShutdownSignals {
    term: Signal,
    int: Signal,
}

impl ShutdownSignals {
    /// Installs handlers for SIGTERM and SIGINT. Needs a running Tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// Waits for the first signal and returns its name. From then on, a second one ends
    /// the process immediately with [`EXIT_FORCED`].
    pub async fn requested(mut self) -> &'static str {
        let first = self.next().await;
        actix_rt::spawn(async move {
            let second = self.next().await;
            tracing::error!(
                signal = second,
                "second signal during shutdown; exiting at once"
            );
            std::process::exit(EXIT_FORCED);
        });
        first
    }
}
