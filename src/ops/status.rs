//! `/status`: what each pipeline is doing, as JSON, for operators and tools: the progress of
//! copies (per namespace) and of a sink's catch-up on its backlog. Shared, like readiness,
//! between the pipelines that know and the HTTP endpoint that tells.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use super::progress::{CatchUpReport, ProgressReport};

/// What one pipeline reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PipelineStatus {
    /// Copies of existing documents, by namespace (finished ones stay, at ratio 1).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub copy: BTreeMap<String, ProgressReport>,
    /// Snapshots on demand (`POST /pipelines/<name>/snapshot`, a signal), by namespace; a
    /// cancelled one stays with `cancelled` in `snapshot_state`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub snapshot: BTreeMap<String, ProgressReport>,
    /// Each snapshot's state (`running`, `finished`, `cancelled`), by namespace.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub snapshot_state: BTreeMap<String, String>,
    /// A sink's catch-up on the records between its committed offsets and the partitions' ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUpReport>,
    /// A source's slots: how many it has, and those this daemon owns with their readers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<SlotsReport>,
}

/// The slots of a source pipeline, as this daemon sees them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SlotsReport {
    /// The pipeline's slot count (`slots`).
    pub count: u32,
    /// The slots this daemon owns (by number, as text: JSON keys), each with the readers
    /// (namespaces) hashed onto it; an owned slot without readers has an empty list.
    pub owned: BTreeMap<String, Vec<String>>,
}

/// Every pipeline's status, by name.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<RwLock<BTreeMap<String, PipelineStatus>>>);

impl StatusBoard {
    fn update(&self, pipeline: &str, change: impl FnOnce(&mut PipelineStatus)) {
        let mut board = self.0.write().unwrap_or_else(|p| p.into_inner());
        change(board.entry(pipeline.to_owned()).or_default());
    }

    /// The copy of `namespace` in `pipeline` has come this far.
    pub fn copy(&self, pipeline: &str, namespace: &str, report: ProgressReport) {
        self.update(pipeline, |s| {
            s.copy.insert(namespace.to_owned(), report);
        });
    }

    /// The snapshot of `namespace` in `pipeline` has come this far.
    pub fn snapshot(&self, pipeline: &str, namespace: &str, report: ProgressReport) {
        self.update(pipeline, |s| {
            s.snapshot.insert(namespace.to_owned(), report);
        });
    }

    /// The snapshot of `namespace` in `pipeline` is in `state`.
    pub fn snapshot_state(&self, pipeline: &str, namespace: &str, state: &str) {
        self.update(pipeline, |s| {
            s.snapshot_state
                .insert(namespace.to_owned(), state.to_owned());
        });
    }

    /// The sink `pipeline` catches up this way.
    pub fn catch_up(&self, pipeline: &str, report: CatchUpReport) {
        self.update(pipeline, |s| s.catch_up = Some(report));
    }

    /// The source `pipeline`'s slots are these.
    pub fn slots(&self, pipeline: &str, report: SlotsReport) {
        self.update(pipeline, |s| s.slots = Some(report));
    }

    /// Forgets `pipeline` (removed, or started again from scratch).
    pub fn remove(&self, pipeline: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pipeline);
    }

    /// What `pipeline` reports, as JSON (`{}` when it reported nothing yet).
    pub fn pipeline_json(&self, pipeline: &str) -> serde_json::Value {
        let board = self.0.read().unwrap_or_else(|p| p.into_inner());
        board
            .get(pipeline)
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or_else(|| serde_json::json!({}))
    }

    /// The board as `/status` answers it: `{"pipelines": {"<name>": {...}}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let board = self.0.read().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({ "pipelines": &*board })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_answers_per_pipeline() {
        let board = StatusBoard::default();
        assert_eq!(board.to_json(), serde_json::json!({"pipelines": {}}));
        board.copy(
            "p",
            "db.c",
            ProgressReport {
                done: 5,
                total: Some(10),
                ratio: Some(0.5),
                rate_per_second: Some(1.0),
                eta_seconds: Some(5.0),
            },
        );
        board.catch_up(
            "s",
            CatchUpReport {
                lag: 0,
                decline_per_second: None,
                eta_seconds: Some(0.0),
            },
        );
        assert_eq!(
            board.to_json(),
            serde_json::json!({"pipelines": {
                "p": {"copy": {"db.c": {"done": 5, "total": 10, "ratio": 0.5, "rate_per_second": 1.0, "eta_seconds": 5.0}}},
                "s": {"catch_up": {"lag": 0, "decline_per_second": null, "eta_seconds": 0.0}},
            }})
        );
        board.remove("p");
        assert!(board.to_json()["pipelines"].get("p").is_none());
    }
}
