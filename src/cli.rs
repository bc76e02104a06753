//! Command-line interface.

use std::path::PathBuf;

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
    },
}
