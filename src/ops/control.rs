//! Controlling pipelines by hand (`POST /pipelines/<name>/pause|resume|restart`) and the
//! state each one is in (`GET /pipelines`, `mkb_pipeline_state`).
//!
//! The rules are pure and live here: [`decide`] says what a command does in each state
//! (or why it is refused), and [`PipelineBoard`] keeps what the pipelines report about
//! themselves (state, last error with its time, restarts). The root supervisor carries the
//! commands out; the pipelines report; the HTTP endpoint reads the board and asks the
//! supervisor. Nothing here does I/O.
//!
//! The states:
//! - `running`: started and working.
//! - `paused`: stopped by `POST .../pause`; it keeps its position (a source's checkpoints, a
//!   sink's committed offsets and its place in its consumer group) until resumed.
//! - `restarting`: starting, or starting again after a failure that may pass, a restart
//!   command or a reload.
//! - `failed`: stopped by a failure no restart fixes; it stays so until restarted by
//!   `POST .../restart`, a reload (SIGHUP) or a restart of the daemon.
//! - `stopped`: stopped on purpose (the daemon shuts down).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use actix::prelude::*;
use serde::Serialize;

use super::metrics::Metrics;

/// What a pipeline is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Started and working.
    Running,
    /// Paused by hand; keeps its position.
    Paused,
    /// Starting, or starting again.
    Restarting,
    /// Stopped by a failure no restart fixes.
    Failed,
    /// Stopped on purpose.
    Stopped,
}

impl State {
    /// Every state, in the order `mkb_pipeline_state` lists them.
    pub const ALL: [State; 5] = [
        State::Running,
        State::Paused,
        State::Restarting,
        State::Failed,
        State::Stopped,
    ];

    /// The state's name (`GET /pipelines`, the metric's `state` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

/// What kind of pipeline it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// MongoDB → Kafka.
    Source,
    /// Kafka → MongoDB.
    Sink,
}

/// A command an operator gives a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stop reading (source) or writing and committing (sink), keeping the position.
    Pause,
    /// Go on from where the pause left it.
    Resume,
    /// Stop the pipeline and start it anew (running, even if it was paused).
    Restart,
}

impl Command {
    /// The command's name, as in its path (`/pipelines/<name>/<command>`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "pause" => Some(Self::Pause),
            "resume" => Some(Self::Resume),
            "restart" => Some(Self::Restart),
            _ => None,
        }
    }
}

/// What the supervisor does about a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pause the pipeline.
    Pause,
    /// Resume the paused pipeline.
    Resume,
    /// Stop it and start it anew.
    Restart,
    /// Nothing: it is in the state asked for already (a command may be given twice).
    Nothing,
}

/// Why a command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No pipeline of that name is configured.
    #[error("no pipeline named `{0}` is configured")]
    NotFound(String),
    /// The command does not apply in the pipeline's state.
    #[error("{0}")]
    Conflict(String),
    /// The daemon cannot carry it out now (still connecting, shutting down).
    #[error("{0}")]
    Unavailable(String),
}

/// How a failed pipeline runs again, as `/ready` and the logs say it.
pub fn failed_until(name: &str) -> String {
    format!("it stays failed until restarted: POST /pipelines/{name}/restart, a reload (SIGHUP) or a restart of the daemon")
}

/// What `command` does to the pipeline `name` in `state`, or why it is refused.
pub fn decide(name: &str, state: State, command: Command) -> Result<Action, ControlError> {
    use Command as C;
    use State as S;
    let conflict = |why: String| Err(ControlError::Conflict(why));
    match (command, state) {
        (C::Pause, S::Running | S::Restarting) => Ok(Action::Pause),
        (C::Pause, S::Paused) | (C::Resume, S::Running | S::Restarting) => Ok(Action::Nothing),
        (C::Resume, S::Paused) => Ok(Action::Resume),
        (C::Pause | C::Resume, S::Failed) => conflict(format!(
            "pipeline `{name}` failed: it runs again only when restarted (POST /pipelines/{name}/restart, a reload or a restart of the daemon)"
        )),
        (C::Restart, S::Running | S::Paused | S::Restarting | S::Failed) => Ok(Action::Restart),
        (_, S::Stopped) => conflict(format!(
            "pipeline `{name}` is stopped: the daemon is shutting down or the pipeline is being removed"
        )),
    }
}

/// What `GET /pipelines` shows of one pipeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineReport {
    /// `source` or `sink`.
    pub kind: Kind,
    /// What it is doing.
    pub state: State,
    /// The last failure (one that restarted it or stopped it for good), if any.
    pub last_error: Option<String>,
    /// When it happened (RFC 3339, UTC).
    pub last_error_at: Option<String>,
    /// How often it was started again (after a failure, by `POST .../restart`, by a reload
    /// that changed it) since the daemon started.
    pub restarts: u64,
}

/// Every pipeline's [`PipelineReport`], shared between the pipelines that report, the
/// supervisor that commands and the HTTP endpoint that tells; it keeps
/// `mkb_pipeline_state` in step.
#[derive(Clone)]
pub struct PipelineBoard {
    reports: Arc<RwLock<BTreeMap<String, PipelineReport>>>,
    metrics: Option<Metrics>,
}

impl Default for PipelineBoard {
    fn default() -> Self {
        Self::new(None)
    }
}

impl std::fmt::Debug for PipelineBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBoard").finish_non_exhaustive()
    }
}

impl PipelineBoard {
    /// A board that also sets `mkb_pipeline_state` in `metrics`, when given.
    pub fn new(metrics: Option<Metrics>) -> Self {
        Self {
            reports: Arc::default(),
            metrics,
        }
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut PipelineReport)) {
        let state = {
            let mut reports = self.reports.write().unwrap_or_else(|p| p.into_inner());
            // A pipeline removed meanwhile reports nothing any more.
            let Some(report) = reports.get_mut(name) else {
                return;
            };
            change(report);
            report.state
        };
        if let Some(metrics) = &self.metrics {
            metrics.pipeline_state(name, state.as_str(), &State::ALL.map(State::as_str));
        }
    }

    /// The pipeline `name` of `kind` is configured: a new entry, starting, unless it has
    /// one (which keeps its last error and restarts).
    pub fn register(&self, name: &str, kind: Kind) {
        let inserted = {
            let mut reports = self.reports.write().unwrap_or_else(|p| p.into_inner());
            let mut inserted = false;
            reports.entry(name.to_owned()).or_insert_with(|| {
                inserted = true;
                PipelineReport {
                    kind,
                    state: State::Restarting,
                    last_error: None,
                    last_error_at: None,
                    restarts: 0,
                }
            });
            inserted
        };
        if inserted {
            self.update(name, |_| {});
        }
    }

    /// The pipeline is started anew on purpose (`POST .../restart`, a reload): one restart
    /// more; its last error stays.
    pub fn restarted(&self, name: &str) {
        self.update(name, |r| {
            r.state = State::Restarting;
            r.restarts += 1;
        });
    }

    /// The pipeline runs.
    pub fn running(&self, name: &str) {
        self.update(name, |r| r.state = State::Running);
    }

    /// The pipeline is paused.
    pub fn paused(&self, name: &str) {
        self.update(name, |r| r.state = State::Paused);
    }

    /// The pipeline starts again after `error`, a failure that may pass.
    pub fn restarting_after(&self, name: &str, error: &str) {
        let at = now();
        self.update(name, |r| {
            r.state = State::Restarting;
            r.restarts += 1;
            r.last_error = Some(error.to_owned());
            r.last_error_at = Some(at);
        });
    }

    /// The pipeline starts again (resumed): no failure, no restart counted.
    pub fn resuming(&self, name: &str) {
        self.update(name, |r| r.state = State::Restarting);
    }

    /// The pipeline stopped for good after `error`.
    pub fn failed(&self, name: &str, error: &str) {
        let at = now();
        self.update(name, |r| {
            r.state = State::Failed;
            r.last_error = Some(error.to_owned());
            r.last_error_at = Some(at);
        });
    }

    /// The pipeline stopped on purpose.
    pub fn stopped(&self, name: &str) {
        self.update(name, |r| r.state = State::Stopped);
    }

    /// Forgets the pipeline (removed by a reload).
    pub fn remove(&self, name: &str) {
        self.reports
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(metrics) = &self.metrics {
            metrics.forget_pipeline_state(name);
        }
    }

    /// The pipeline's report, if it is known.
    pub fn get(&self, name: &str) -> Option<PipelineReport> {
        self.reports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Every pipeline's report, by name.
    pub fn all(&self) -> BTreeMap<String, PipelineReport> {
        self.reports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Asks the root supervisor to carry out `command` on the pipeline `pipeline`; answers the
/// pipeline's report once the command took effect (a restart: once it began).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<PipelineReport, ControlError>")]
pub struct Control {
    /// The pipeline's name.
    pub pipeline: String,
    /// What to do.
    pub command: Command,
}

/// A snapshot asked for: namespaces `db.coll` and an optional MongoDB query (the body of
/// `POST /pipelines/<name>/snapshot`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// The namespaces to copy again, `db.coll`.
    pub namespaces: Vec<String>,
    /// Only the documents matching this query.
    #[serde(default)]
    pub filter: Option<bson::Document>,
}

/// What to do about snapshots on demand.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotCommand {
    /// Start one (`POST /pipelines/<name>/snapshot`, an `execute-snapshot` signal).
    Start(SnapshotRequest),
    /// Cancel every snapshot of the pipeline (`DELETE`, a `stop-snapshot` signal).
    Cancel,
}

/// Asks the root supervisor to hand a snapshot command to the source pipeline `pipeline`;
/// answers the pipeline's report once the pipeline took it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<PipelineReport, ControlError>")]
pub struct SnapshotControl {
    /// The pipeline's name.
    pub pipeline: String,
    /// What to do.
    pub command: SnapshotCommand,
}

/// Hands a snapshot command to a source pipeline's supervisor; answers why it is refused
/// (a namespace none of its readers watches).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), String>")]
pub struct Snapshot(pub SnapshotCommand);

/// Whether a snapshot command applies to a pipeline in `state`.
pub fn snapshot_allowed(name: &str, kind: Kind, state: State) -> Result<(), ControlError> {
    match (kind, state) {
        (Kind::Sink, _) => Err(ControlError::Conflict(format!(
            "pipeline `{name}` is a sink: snapshots are for source pipelines"
        ))),
        (Kind::Source, State::Running | State::Paused | State::Restarting) => Ok(()),
        (Kind::Source, State::Failed) => Err(ControlError::Conflict(format!(
            "pipeline `{name}` failed: {}",
            failed_until(name)
        ))),
        (Kind::Source, State::Stopped) => Err(ControlError::Conflict(format!(
            "pipeline `{name}` is stopped"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_in_each_state() {
        use Action as A;
        use Command as C;
        use State as S;
        let expected = [
            (C::Pause, S::Running, Some(A::Pause)),
            (C::Pause, S::Restarting, Some(A::Pause)),
            (C::Pause, S::Paused, Some(A::Nothing)),
            (C::Pause, S::Failed, None),
            (C::Pause, S::Stopped, None),
            (C::Resume, S::Paused, Some(A::Resume)),
            (C::Resume, S::Running, Some(A::Nothing)),
            (C::Resume, S::Restarting, Some(A::Nothing)),
            (C::Resume, S::Failed, None),
            (C::Resume, S::Stopped, None),
            (C::Restart, S::Running, Some(A::Restart)),
            (C::Restart, S::Paused, Some(A::Restart)),
            (C::Restart, S::Restarting, Some(A::Restart)),
            (C::Restart, S::Failed, Some(A::Restart)),
            (C::Restart, S::Stopped, None),
        ];
        for (command, state, action) in expected {
            let decided = decide("p", state, command);
            match action {
                Some(action) => assert_eq!(decided, Ok(action), "{command:?} in {state:?}"),
                None => assert!(
                    matches!(&decided, Err(ControlError::Conflict(why)) if why.contains("`p`")),
                    "{command:?} in {state:?}: {decided:?}"
                ),
            }
        }
    }

    #[test]
    fn a_failed_pipeline_is_told_how_to_run_again() {
        let Err(ControlError::Conflict(why)) = decide("orders", State::Failed, Command::Pause)
        else {
            panic!("pausing a failed pipeline is refused");
        };
        assert!(why.contains("POST /pipelines/orders/restart"), "{why}");
    }

    #[test]
    fn commands_parse_from_their_path() {
        assert_eq!(Command::parse("pause"), Some(Command::Pause));
        assert_eq!(Command::parse("resume"), Some(Command::Resume));
        assert_eq!(Command::parse("restart"), Some(Command::Restart));
        assert_eq!(Command::parse("stop"), None);
    }

    #[test]
    fn the_board_keeps_state_last_error_and_restarts() {
        let board = PipelineBoard::default();
        board.running("unknown");
        assert!(board.get("unknown").is_none(), "reports of no pipeline");
        board.register("p", Kind::Sink);
        let report = board.get("p").unwrap_or_else(|| panic!("p"));
        assert_eq!(
            (report.state, report.restarts, report.last_error),
            (State::Restarting, 0, None)
        );
        board.running("p");
        board.restarting_after("p", "MongoDB went away");
        let report = board.get("p").unwrap_or_else(|| panic!("p"));
        assert_eq!(report.state, State::Restarting);
        assert_eq!(report.restarts, 1);
        assert_eq!(report.last_error.as_deref(), Some("MongoDB went away"));
        let at = report.last_error_at.unwrap_or_default();
        assert!(humantime::parse_rfc3339(&at).is_ok(), "RFC 3339 time: {at}");
        board.failed("p", "record t/0@5: not JSON");
        assert_eq!(board.get("p").map(|r| r.state), Some(State::Failed));
        // A restart by hand keeps the last error and counts; registering again changes
        // nothing.
        board.restarted("p");
        board.register("p", Kind::Sink);
        let report = board.get("p").unwrap_or_else(|| panic!("p"));
        assert_eq!(report.state, State::Restarting);
        assert_eq!(report.restarts, 2);
        assert_eq!(report.last_error.as_deref(), Some("record t/0@5: not JSON"));
        board.paused("p");
        board.resuming("p");
        assert_eq!(
            board.get("p").map(|r| r.restarts),
            Some(2),
            "a resume is no restart"
        );
        board.remove("p");
        assert!(board.all().is_empty());
    }
}
