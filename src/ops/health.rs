//! Liveness and readiness, shared between the parts that know what is wrong (the root
//! supervisor's probes of MongoDB and Kafka, pipelines that failed, readers that stalled)
//! and the HTTP endpoint that reports it.
//!
//! Readiness is a set of problems, each owned by one component: the daemon is ready when
//! the set is empty. A component clears only its own problem, so a healthy Kafka probe
//! never hides a failed pipeline.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// The component that owns the problems of the daemon's start and shutdown.
pub const DAEMON: &str = "daemon";
/// The component of the Kafka probe.
pub const KAFKA: &str = "kafka";
/// The component of the MongoDB probe.
pub const MONGODB: &str = "mongodb";

/// The component of a pipeline's own state (failed, starting).
pub fn pipeline(name: &str) -> String {
    format!("pipeline {name}")
}

/// The component of a source pipeline's agreement on its configuration with the other
/// daemons of its group.
pub fn config(pipeline: &str) -> String {
    format!("config {pipeline}")
}

/// The component of one change-stream reader's progress.
pub fn reader(pipeline: &str, namespace: &str) -> String {
    format!("reader {pipeline}/{namespace}")
}

/// The component of one slot of a source pipeline (its producer fenced, waiting to be
/// taken again).
pub fn slot(pipeline: &str, slot: &str) -> String {
    format!("slot {pipeline}/{slot}")
}

/// The component of one sink partition's progress.
pub fn partition(pipeline: &str, partition: &str) -> String {
    format!("partition {pipeline}/{partition}")
}

/// The component of a pipeline's memory budget: not ready while something waits long for
/// room in it.
pub fn memory_budget(pipeline: &str) -> String {
    format!("memory budget {pipeline}")
}

/// The component of a pipeline's schema registry: not ready while it does not answer.
pub fn schema_registry(pipeline: &str) -> String {
    format!("schema registry {pipeline}")
}

/// The component of a source pipeline's topic creation (`create_topics`): not ready while a
/// topic it must create before its next record gets no answer.
pub fn topic_creation(pipeline: &str) -> String {
    format!("topic creation {pipeline}")
}

/// Whether the daemon is ready, and if not, why.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<RwLock<BTreeMap<String, String>>>);

impl Default for Readiness {
    fn default() -> Self {
        let mut problems = BTreeMap::new();
        problems.insert(DAEMON.to_owned(), "starting".to_owned());
        Self(Arc::new(RwLock::new(problems)))
    }
}

impl Readiness {
    /// Records that `component` is not ready, saying why (replaces its earlier reason).
    pub fn set_problem(&self, component: impl Into<String>, reason: impl Into<String>) {
        self.update(|problems| {
            problems.insert(component.into(), reason.into());
        });
    }

    /// Records that `component` is fine again.
    pub fn clear(&self, component: &str) {
        self.update(|problems| {
            problems.remove(component);
        });
    }

    /// Whether `component` reported a problem.
    pub fn has_problem(&self, component: &str) -> bool {
        match self.0.read() {
            Ok(guard) => guard.contains_key(component),
            Err(poisoned) => poisoned.into_inner().contains_key(component),
        }
    }

    /// Clears every component whose name starts with `prefix` (a removed pipeline's readers).
    pub fn clear_prefix(&self, prefix: &str) {
        self.update(|problems| problems.retain(|k, _| !k.starts_with(prefix)));
    }

    fn update(&self, change: impl FnOnce(&mut BTreeMap<String, String>)) {
        // A poisoned lock only means a writer panicked mid-update of a plain map.
        match self.0.write() {
            Ok(mut guard) => change(&mut guard),
            Err(poisoned) => change(&mut poisoned.into_inner()),
        }
    }

    /// `Ok` when ready, else every reason, one per component.
    pub fn status(&self) -> Result<(), String> {
        let render = |problems: &BTreeMap<String, String>| {
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems
                    .iter()
                    .map(|(component, reason)| format!("{component}: {reason}"))
                    .collect::<Vec<_>>()
                    .join("; "))
            }
        };
        match self.0.read() {
            Ok(guard) => render(&guard),
            Err(poisoned) => render(&poisoned.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_not_ready_and_each_component_clears_only_its_own_problem() {
        let r = Readiness::default();
        assert_eq!(r.status(), Err("daemon: starting".to_owned()));
        r.clear(DAEMON);
        assert_eq!(r.status(), Ok(()));
        r.set_problem(KAFKA, "no broker answers");
        r.set_problem(pipeline("orders"), "failed");
        assert_eq!(
            r.status(),
            Err("kafka: no broker answers; pipeline orders: failed".to_owned())
        );
        r.clear(KAFKA);
        assert_eq!(r.status(), Err("pipeline orders: failed".to_owned()));
        r.set_problem(reader("orders", "db.a"), "stalled");
        r.clear_prefix(&pipeline("orders"));
        assert_eq!(r.status(), Err("reader orders/db.a: stalled".to_owned()));
        r.clear_prefix("reader orders/");
        assert_eq!(r.status(), Ok(()));
    }
}
