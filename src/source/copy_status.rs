//! How far each `copy_existing` has come, told as people expect from a long job: the
//! documents to copy (the collection's estimated count when its copy started), percent done
//! and the time left, on `/status`, in metrics, and in a log line every [`LOG_EVERY`] per
//! namespace. The copy workers of a reader report the documents they hand over; the
//! estimates come from [`Progress`].
//!
//! A copy continued after a restart counts the documents copied since, against the whole
//! estimated count: its ratio reads low until the copy ends (then it is 1).
//!
//! Snapshots on demand have metrics of their own: the documents and chunks published
//! (each report of [`CopyTracker::copied`] is one chunk), the snapshots running, and the
//! documents each has left by its estimate.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::ops::metrics::Metrics;
use crate::ops::progress::{human_seconds, Progress};
use crate::ops::status::StatusBoard;

/// How often a copy's progress is logged, per namespace.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The copies of one pipeline.
pub struct CopyTracker {
    pipeline: String,
    metrics: Metrics,
    status: StatusBoard,
    copies: Mutex<HashMap<String, Copy>>,
    /// Reports snapshots on demand (`/status` `snapshot`) rather than `copy_existing`.
    snapshots: bool,
}

struct Copy {
    progress: Progress,
    done: u64,
    logged: Instant,
    /// Started and not ended (snapshots).
    running: bool,
}

impl CopyTracker {
    /// The tracker of `pipeline`'s copies.
    pub fn new(pipeline: &str, metrics: Metrics, status: StatusBoard) -> Self {
        Self {
            pipeline: pipeline.to_owned(),
            metrics,
            status,
            copies: Mutex::default(),
            snapshots: false,
        }
    }

    /// The tracker of `pipeline`'s snapshots on demand: `/status` shows them under
    /// `snapshot` with their state; no copy metric.
    pub fn for_snapshots(pipeline: &str, metrics: Metrics, status: StatusBoard) -> Self {
        metrics.snapshots_running(pipeline, 0);
        Self {
            snapshots: true,
            ..Self::new(pipeline, metrics, status)
        }
    }

    /// The snapshot of `namespace` ended this way (`finished`, `cancelled`).
    pub fn ended(&self, namespace: &str, state: &str) {
        if state == "finished" {
            self.finished(namespace);
        }
        if let Some(copy) = self.copies().get_mut(namespace) {
            copy.running = false;
        }
        self.report_running();
        self.metrics
            .snapshot_remaining(&self.pipeline, namespace, Some(0));
        self.status.snapshot_state(&self.pipeline, namespace, state);
        tracing::info!(pipeline = %self.pipeline, %namespace, %state, "snapshot ended");
    }

    /// The copy of `namespace` starts (or continues after a restart), with `total`
    /// documents by the collection's estimate when it is known.
    pub fn start(&self, namespace: &str, total: Option<u64>) {
        let now = Instant::now();
        let copy = Copy {
            progress: Progress::new(total, now),
            done: 0,
            logged: now,
            running: true,
        };
        self.publish(namespace, &copy);
        self.copies().insert(namespace.to_owned(), copy);
        if self.snapshots {
            self.report_running();
        }
        if self.snapshots {
            tracing::info!(pipeline = %self.pipeline, %namespace, documents = ?total, "snapshot started");
        } else {
            tracing::info!(pipeline = %self.pipeline, %namespace, documents = ?total, "copy of existing documents started");
        }
    }

    /// `count` more documents of `namespace` were handed over for publishing.
    pub fn copied(&self, namespace: &str, count: u64) {
        let now = Instant::now();
        let mut copies = self.copies();
        let Some(copy) = copies.get_mut(namespace) else {
            return;
        };
        copy.done += count;
        copy.progress.advance_to(copy.done, now);
        if self.snapshots {
            self.metrics
                .snapshot_chunk(&self.pipeline, namespace, count);
        }
        self.publish(namespace, copy);
        if now.duration_since(copy.logged) >= LOG_EVERY {
            copy.logged = now;
            let report = copy.progress.report();
            let percent = report.ratio.map(|r| format!("{:.1}%", r * 100.0));
            let left = report.eta_seconds.map(human_seconds);
            tracing::info!(pipeline = %self.pipeline, %namespace, copied = report.done, total = ?report.total, percent = percent.as_deref().unwrap_or("unknown"), time_left = left.as_deref().unwrap_or("unknown"), "{}", if self.snapshots { "snapshot progress" } else { "copy progress" });
        }
    }

    /// The copy of `namespace` is complete: its ratio is 1, whatever the estimate said.
    pub fn finished(&self, namespace: &str) {
        let mut copies = self.copies();
        let Some(copy) = copies.get_mut(namespace) else {
            return;
        };
        let done = copy.done;
        // The estimate may have been off either way: the total is what was copied.
        copy.progress = Progress::new(Some(done), Instant::now());
        copy.progress.advance_to(done, Instant::now());
        self.publish(namespace, copy);
        if !self.snapshots {
            tracing::info!(pipeline = %self.pipeline, %namespace, copied = done, "copy of existing documents finished");
        }
    }

    fn publish(&self, namespace: &str, copy: &Copy) {
        let report = copy.progress.report();
        if self.snapshots {
            if copy.running {
                let left = report.total.map(|total| total.saturating_sub(report.done));
                self.metrics
                    .snapshot_remaining(&self.pipeline, namespace, left);
            }
            self.status.snapshot(&self.pipeline, namespace, report);
            self.status
                .snapshot_state(&self.pipeline, namespace, "running");
            return;
        }
        self.metrics
            .copy_progress(&self.pipeline, namespace, &report);
        self.status.copy(&self.pipeline, namespace, report);
    }

    /// Sets the gauge of the snapshots running.
    fn report_running(&self) {
        let running = self.copies().values().filter(|c| c.running).count();
        self.metrics.snapshots_running(&self.pipeline, running);
    }

    fn copies(&self) -> std::sync::MutexGuard<'_, HashMap<String, Copy>> {
        self.copies.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_reported_on_status_and_ends_at_one() -> Result<(), prometheus::Error> {
        let status = StatusBoard::default();
        let metrics = Metrics::new()?;
        let tracker = CopyTracker::new("p", metrics.clone(), status.clone());
        tracker.start("db.c", Some(200));
        tracker.copied("db.c", 50);
        let json = status.to_json();
        let copy = &json["pipelines"]["p"]["copy"]["db.c"];
        assert_eq!(copy["done"], 50);
        assert_eq!(copy["total"], 200);
        assert_eq!(copy["ratio"], 0.25);
        let rendered = metrics.render()?;
        assert!(
            rendered
                .contains("mkb_source_copy_total_documents{namespace=\"db.c\",pipeline=\"p\"} 200"),
            "{rendered}"
        );
        assert!(
            rendered
                .contains("mkb_source_copy_progress_ratio{namespace=\"db.c\",pipeline=\"p\"} 0.25"),
            "{rendered}"
        );
        // The estimate was low: the copy ends at 1 all the same.
        tracker.copied("db.c", 250);
        tracker.finished("db.c");
        let json = status.to_json();
        assert_eq!(json["pipelines"]["p"]["copy"]["db.c"]["ratio"], 1.0);
        assert_eq!(json["pipelines"]["p"]["copy"]["db.c"]["done"], 300);
        assert_eq!(json["pipelines"]["p"]["copy"]["db.c"]["eta_seconds"], 0.0);
        Ok(())
    }

    #[test]
    fn a_snapshot_is_counted_by_chunk_and_ends_with_nothing_left() -> Result<(), prometheus::Error>
    {
        let status = StatusBoard::default();
        let metrics = Metrics::new()?;
        let tracker = CopyTracker::for_snapshots("p", metrics.clone(), status);
        let series = |name: &str| format!("{name}{{namespace=\"db.c\",pipeline=\"p\"}}");
        tracker.start("db.c", Some(25));
        tracker.copied("db.c", 10);
        tracker.copied("db.c", 10);
        let rendered = metrics.render()?;
        for expected in [
            format!("{} 20", series("mkb_source_snapshot_documents_total")),
            format!("{} 2", series("mkb_source_snapshot_chunks_total")),
            format!("{} 5", series("mkb_source_snapshot_remaining_documents")),
            "mkb_source_snapshots_running{pipeline=\"p\"} 1".to_owned(),
        ] {
            assert!(rendered.contains(&expected), "{expected}:\n{rendered}");
        }
        tracker.copied("db.c", 5);
        tracker.ended("db.c", "finished");
        let rendered = metrics.render()?;
        assert!(rendered.contains(&format!("{} 3", series("mkb_source_snapshot_chunks_total"))));
        assert!(rendered.contains("mkb_source_snapshots_running{pipeline=\"p\"} 0"));
        assert!(
            rendered.contains(&format!(
                "{} 0",
                series("mkb_source_snapshot_remaining_documents")
            )),
            "{rendered}"
        );
        // A copy of `copy_existing` is not a snapshot.
        assert!(
            !rendered.contains("mkb_source_copy_total_documents{"),
            "{rendered}"
        );
        Ok(())
    }
}
