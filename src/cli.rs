//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    /// Translate MongoDB Kafka Connector configurations (source or sink) into this daemon's
    /// TOML on standard output; every property not carried over is printed on standard error
    /// with the reason (`property: reason`), then notes (`note: ...`). Exits 0 when the
    /// translation loads as `check-config` would load it, 1 when the input cannot be read or
    /// the translation needs editing first.
    ImportConnect {
        /// The connector's configuration: JSON as Kafka Connect's REST API returns it
        /// (`GET /connectors/<name>` or `GET /connectors/<name>/config`), or a `.properties`
        /// file. Several files, or a `GET /connectors?expand=info` answer, become the
        /// pipelines of one daemon.
        #[arg(required = true)]
        connectors: Vec<PathBuf>,
        /// `kafka.bootstrap_servers`: the Kafka Connect worker's `bootstrap.servers`, which a
        /// connector's configuration does not hold. Default: `localhost:9092`, with a note.
        #[arg(long)]
        bootstrap_servers: Option<String>,
    },
    /// A source pipeline's checkpoints: list them, or move its readers (refused while a
    /// daemon runs the pipeline).
    Checkpoints {
        /// What to do.
        #[command(subcommand)]
        action: CheckpointsAction,
    },
    /// A sink pipeline's committed offsets: list them with the lag, or move them (refused
    /// while a daemon runs the pipeline).
    Offsets {
        /// What to do.
        #[command(subcommand)]
        action: OffsetsAction,
    },
}

/// Which source pipeline, and which of its readers.
#[derive(Debug, Args)]
pub struct SourceTarget {
    /// The TOML configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The source pipeline's name.
    #[arg(long)]
    pub pipeline: String,
    /// Only this reader (`db.coll`, `db`, `db./regex/` or `*`); default: every reader.
    #[arg(long)]
    pub namespace: Option<String>,
}

/// Where `checkpoints set` starts the readers.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct CheckpointTo {
    /// At this cluster time: RFC 3339, seconds since the epoch, or
    /// `{"$timestamp": {"t": S, "i": I}}`.
    #[arg(long)]
    pub timestamp: Option<String>,
    /// After this resume token: its document (`{"_data": "82..."}`) or its `_data`.
    #[arg(long)]
    pub token: Option<String>,
    /// At the newest change.
    #[arg(long)]
    pub latest: bool,
    /// Copy the existing documents again, then follow the changes.
    #[arg(long)]
    pub copy: bool,
}

/// `checkpoints` subcommands.
#[derive(Debug, Subcommand)]
pub enum CheckpointsAction {
    /// Print each reader's namespace, slot and position (token, copy progress, generation).
    List(SourceTarget),
    /// Write checkpoints that start the readers elsewhere; they win over every earlier one.
    Set {
        /// The pipeline and readers.
        #[command(flatten)]
        target: SourceTarget,
        /// Where to start.
        #[command(flatten)]
        to: CheckpointTo,
    },
    /// Remove the readers' checkpoints (tombstones): `startup_mode` decides where they
    /// start.
    Reset(SourceTarget),
}

/// Which sink pipeline, and which of its topics.
#[derive(Debug, Args)]
pub struct SinkTarget {
    /// The TOML configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The sink pipeline's name.
    #[arg(long)]
    pub pipeline: String,
    /// Only this topic; default: every topic the pipeline reads.
    #[arg(long)]
    pub topic: Option<String>,
}

/// Where `offsets set` moves the committed offsets.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct OffsetsTo {
    /// Each partition's first offset.
    #[arg(long)]
    pub to_earliest: bool,
    /// Each partition's end (skip everything not yet written).
    #[arg(long)]
    pub to_latest: bool,
    /// The first record at or after this time: RFC 3339 or milliseconds since the epoch.
    #[arg(long)]
    pub to_timestamp: Option<String>,
    /// These offsets of one topic: `PARTITION:OFFSET,...`.
    #[arg(long)]
    pub to_offset: Option<String>,
}

/// `offsets` subcommands.
#[derive(Debug, Subcommand)]
pub enum OffsetsAction {
    /// Print each partition's committed offset, end and lag.
    List(SinkTarget),
    /// Commit new offsets for the pipeline's group.
    Set {
        /// The pipeline and topics.
        #[command(flatten)]
        target: SinkTarget,
        /// Where to move.
        #[command(flatten)]
        to: OffsetsTo,
    },
    /// Remove the group's committed offsets (the group is deleted): the sink starts from
    /// its `auto.offset.reset` (earliest).
    Reset(SinkTarget),
}
