//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::LogFormat;

/// Replicates data between MongoDB and Apache Kafka, in both directions.
#[derive(Debug, Parser)]
#[command(name = "mongo-kafka-bridge", version, about)]
pub struct Cli {
    /// Log line format; wins over `log.format` in the configuration.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    Run {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration and print it as the daemon would use it, secrets masked.
    /// Exits 0 when valid, 1 when not.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// After the static checks, ask the services the configuration names whether the
        /// daemon could do its work (README "Checking a configuration"), printing one line
        /// per check and problem instead of the configuration; exits 1 on any problem.
        #[arg(long)]
        connect: bool,
    },
    /// Ask a running daemon whether it is healthy, for container health checks (no `curl`
    /// in the image). Exits 0 when `/health` (or `/ready` with `--ready`) answers 200,
    /// 1 otherwise, saying why.
    Healthcheck {
        /// The daemon's `http.address`; one on every interface (`0.0.0.0`, `::`) is asked
        /// on loopback.
        #[arg(long, env = "MKB__HTTP__ADDRESS", default_value = "127.0.0.1:9187")]
        address: SocketAddr,
        /// Ask `/ready` (every pipeline moving) instead of `/health` (the daemon alive).
        #[arg(long)]
        ready: bool,
        /// How long to wait to connect, and again for the answer.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}
