//! Unix signals: SIGHUP asks for a configuration reload; the first SIGTERM/SIGINT asks for
//! a graceful shutdown, and a second one exits at once.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Exit code when a second signal cuts a graceful shutdown short.
pub const EXIT_FORCED: i32 = 130;

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGHUP: read the configuration file again.
    Reload,
    /// SIGTERM or SIGINT: stop gracefully; the name of the signal.
    Shutdown(&'static str),
}

/// The daemon's signals, installed early so a signal during start-up is not lost to the
/// default handler (which would kill the process).
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs handlers for SIGTERM, SIGINT and SIGHUP. Needs a running Tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal.
    pub async fn next(&mut self) -> Request {
        tokio::select! {
            _ = self.term.recv() => Request::Shutdown("SIGTERM"),
            _ = self.int.recv() => Request::Shutdown("SIGINT"),
            _ = self.hup.recv() => Request::Reload,
        }
    }

    /// After the first shutdown signal: a second SIGTERM/SIGINT ends the process at once
    /// with [`EXIT_FORCED`]; SIGHUP is ignored from now on.
    pub fn force_exit_on_second(mut self) {
        actix_rt::spawn(async move {
            loop {
                if let Request::Shutdown(second) = self.next().await {
                    tracing::error!(
                        signal = second,
                        "second signal during shutdown; exiting at once"
                    );
                    std::process::exit(EXIT_FORCED);
                }
            }
        });
    }
}
