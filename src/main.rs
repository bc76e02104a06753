//! The `mongo-kafka-bridge` binary.
#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use mongo_kafka_bridge::cli::{Cli, Command};
use mongo_kafka_bridge::{config, daemon, ops};

/// `check-config --connect`: the static checks, then the services' answers.
fn check_connections(path: &std::path::Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("{}: configuration is valid", path.display());
    for warning in config::warnings(&config) {
        eprintln!("warning: {warning}");
    }
    match ops::preflight::check(&config) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig {
            config: path,
            connect: true,
        } => check_connections(&path),
        Command::CheckConfig { config: path, .. } => match config::load(&path) {
            Ok(config) => match toml::to_string_pretty(&config::masked(&config)) {
                Ok(text) => {
                    print!("{text}");
                    for warning in config::warnings(&config) {
                        eprintln!("warning: {warning}");
                    }
                    eprintln!("{}: configuration is valid", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: printing the configuration: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Healthcheck {
            address,
            ready,
            timeout,
        } => {
            let path = if ready { "/ready" } else { "/health" };
            match ops::healthcheck::probe(address, path, timeout) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ImportConnect {
            connectors,
            bootstrap_servers,
        } => import_connect(&connectors, bootstrap_servers),
        Command::Checkpoints { action } => {
            print_positions(ops::positions::checkpoints_command(&action))
        }
        Command::Offsets { action } => print_positions(ops::positions::offsets_command(&action)),
        Command::Run { config: path } => {
            ops::allocator::return_large_buffers();
            let config = match config::load(&path) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            ops::logging::init(
                &config.log.level,
                cli.log_format.unwrap_or(config.log.format),
            );
            tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %path.display(), "starting");
            for warning in config::warnings(&config) {
                tracing::warn!(key = %warning.key, warning = %warning.message, "configuration warning");
            }
            match daemon::run(config, path) {
                0 => ExitCode::SUCCESS,
                code => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            }
        }
    }
}

/// `import-connect`: reads the connectors' configurations, prints the translation and its
/// findings, and checks that the translation loads.
fn import_connect(paths: &[std::path::PathBuf], bootstrap_servers: Option<String>) -> ExitCode {
    use config::import_connect;
    let mut connectors = Vec::new();
    for path in paths {
        let read = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the file: {e}"))
            .and_then(|text| import_connect::parse(&text, path).map_err(|e| e.to_string()));
        match read {
            Ok(found) => connectors.extend(found),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let options = import_connect::Options {
        bootstrap_servers,
        fallback_name: "connector".to_owned(),
        origin: paths
            .iter()
            .map(|p| format!("`{}`", p.display()))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let translation = match import_connect::translate_all(&connectors, &options) {
        Ok(translation) => translation,
        Err(e) => {
            let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            eprintln!("error: {}: {e}", files.join(", "));
            return ExitCode::FAILURE;
        }
    };
    print!("{}", translation.toml);
    for dropped in &translation.dropped {
        eprintln!("{dropped}");
    }
    for note in &translation.notes {
        eprintln!("note: {note}");
    }
    match import_connect::check(&translation.toml) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the translation does not load yet, edit it first: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints what a `checkpoints` or `offsets` command did, or why it did not.
fn print_positions(result: Result<Vec<String>, ops::positions::PositionError>) -> ExitCode {
    match result {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
