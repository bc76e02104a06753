//! What a source supervisor holds: [`SourceSupervisor`] itself, the record of each watched
//! namespace's reader ([`WatchedReader`]) and of a launch ([`Running`], [`SlotRun`],
//! [`SlotKit`]), and the backoffs it restarts with. The files beside this one carry the
//! actor's work out on it, one concern each.
//!
//! The rules the state keeps:
//! - A reader's `generation` moves on at each start, restart and wind-down of it: what an
//!   older generation reports (a failure, a stall) is stale and ignored; its `launch` says
//!   which launch of the pipeline it belongs to.
//! - A reader started without a position (`latest`, a timestamp) is pinned where its first
//!   open found the stream: its restarts before a checkpoint start there, not at `latest`
//!   again, until a failure that asks for another start unpins it.
//! - `running` is the launch: the owned slots with readers, each with its producer, and
//!   what they share. None while the pipeline starts, restarts, is paused or stopped.
//! - A reader or pipeline that ran [`HEALTHY_RUN`] before failing again restarts after the
//!   shortest delay; a fenced slot waits at least 5 s before it is taken again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::backoff::Backoff;
use crate::budget::Budget;
use crate::clients::kafka;
use crate::config::{KafkaConfig, SourceConfig};
use crate::ops::control::PipelineBoard;
use crate::ops::health::Readiness;
use crate::ops::metrics::Metrics;
use crate::ops::status::StatusBoard;
use crate::pipeline::PipelineEnv;
use crate::source::agreement::Agreement;
use crate::source::checkpoint::Checkpoint;
use crate::source::copy_status::CopyTracker;
use crate::source::format::Conversion;
use crate::source::handover::Handover;
use crate::source::lifecycle::Lifecycle;
use crate::source::membership::{Membership, Rebalanced};
use crate::source::model::{Position, Scope};
use crate::source::producer::RecordProducer;
use crate::source::reader::snapshot::SnapshotInbox;
use crate::source::reader::{ChangeStreamReader, ReaderContext, ReaderLiveness, ReaderSettings};
use crate::source::slots;
use crate::source::topic::TopicMapper;
use crate::source::topic_creator::TopicCreator;
use crate::source::topic_limits::TopicLimits;

/// The supervisor's record of one watched namespace (or database, or deployment): its
/// reader's actor while one runs, its restarts, liveness and pinned start.
pub(super) struct WatchedReader {
    pub(super) watched: Scope,
    pub(super) generation: u64,
    /// The launch of the pipeline the running reader belongs to.
    pub(super) launch: u64,
    pub(super) addr: Option<Addr<ChangeStreamReader>>,
    pub(super) backoff: Backoff,
    pub(super) progress: Arc<ReaderLiveness>,
    pub(super) stalled: bool,
    /// Where the reader's first open without a position (`latest`, a timestamp) found its
    /// stream: restarts before a checkpoint start there, not at `latest` again.
    pub(super) pinned: Option<Position>,
}

impl WatchedReader {
    /// The pinned position, taking it from the running reader's progress when it has one.
    pub(super) fn pin(&mut self) -> Option<Position> {
        if self.pinned.is_none() {
            self.pinned = self.progress.opened_at();
        }
        self.pinned.clone()
    }

    /// Forgets the pinned position: the next open without a position pins anew.
    pub(super) fn unpin(&mut self) {
        self.pinned = None;
        self.progress = Arc::default();
    }
}

/// What runs for one owned slot: its producer and what its readers share.
pub(super) struct SlotRun {
    pub(super) producer: Addr<RecordProducer>,
    pub(super) shared: Arc<ReaderContext>,
}

/// A launch: the owned slots with readers, each with its producer.
pub(super) struct Running {
    pub(super) slots: BTreeMap<i32, SlotRun>,
    /// What the slots share, to start slots taken later beside them.
    pub(super) kit: SlotKit,
}

/// What the slots of a launch share: resolved once at the launch.
pub(super) struct SlotKit {
    /// The pipeline's configuration.
    pub(super) settings: ReaderSettings,
    pub(super) topics: TopicMapper,
    pub(super) conversion: Conversion,
    /// One budget for the pipeline, whatever the slots it owns.
    pub(super) budget: Budget,
    pub(super) topic_limits: Arc<TopicLimits>,
    pub(super) creator: Option<Arc<TopicCreator>>,
    pub(super) max_message_bytes: usize,
    /// At-least-once: the client the slots write their checkpoints through.
    pub(super) checkpoint_producer: Option<kafka::KafkaProducer>,
}

/// Supervises one source pipeline.
pub struct SourceSupervisor {
    pub(super) config: SourceConfig,
    pub(super) mongo: mongodb::Client,
    pub(super) kafka: Arc<KafkaConfig>,
    pub(super) metrics: Metrics,
    pub(super) readiness: Readiness,
    pub(super) shutdown_deadline: Duration,
    /// The copies' progress, across launches of the pipeline.
    pub(super) copies: Arc<CopyTracker>,
    /// Snapshots on demand waiting for the readers (`reader::snapshot`).
    pub(super) snapshots: Arc<SnapshotInbox>,
    /// The snapshots' progress.
    pub(super) snapshot_progress: Arc<CopyTracker>,
    pub(super) running: Option<Running>,
    pub(super) checkpoints: HashMap<String, Checkpoint>,
    /// The generation the checkpoints of this launch carry (`checkpoint.rs`).
    pub(super) checkpoint_generation: u64,
    pub(super) readers: BTreeMap<String, WatchedReader>,
    pub(super) pipeline_backoff: Backoff,
    /// Starting, running, restarting or stopped: which failures count, and which start
    /// attempt may launch.
    pub(super) lifecycle: Lifecycle,
    /// Where the slots this daemon owns are reported (`/status`).
    pub(super) status: StatusBoard,
    /// The slots this daemon owns, as the group handed them out, and the hand-overs
    /// waiting for a wind-down (`handover.rs`).
    pub(super) handover: Handover<std::sync::mpsc::Sender<()>>,
    /// This daemon's place in the pipeline's group, once joined.
    pub(super) membership: Option<Membership>,
    /// Where the group's callbacks send their changes (to this actor).
    pub(super) changes: Option<tokio::sync::mpsc::UnboundedSender<Rebalanced>>,
    /// Where the group's thread says whether the members agree on the configuration.
    pub(super) agreements: Option<tokio::sync::mpsc::UnboundedSender<Agreement>>,
    /// Slots whose producer was fenced while the group still assigns them here, until they
    /// run again (or the group moves them): `/ready`, `mkb_source_fenced_slots`.
    pub(super) fenced_waiting: BTreeSet<i32>,
    /// How long a fenced slot waits before it is taken again.
    pub(super) fence_backoff: Backoff,
    /// Where the pipeline's state is reported (`/pipelines`).
    pub(super) board: PipelineBoard,
    /// Start paused (a reload started a paused pipeline anew).
    pub(super) start_paused: bool,
}

/// A reader or pipeline that ran this long before failing again restarts after the shortest
/// delay: its earlier failures are history.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

pub(super) fn restart_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(250), Duration::from_secs(30))
        .reset_after(HEALTHY_RUN)
        .with_jitter()
}

/// How long a fenced slot waits before it is taken again: long enough for a daemon that was
/// paused past its session timeout to hear from the group that the slot is gone (then the
/// fence was its new owner's, and nothing is taken), doubling while fences repeat.
fn fence_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(5), Duration::from_secs(60))
        .reset_after(HEALTHY_RUN)
        .with_jitter()
}

impl SourceSupervisor {
    /// A supervisor for the pipeline `config`.
    pub fn new(config: SourceConfig, env: PipelineEnv) -> Self {
        let PipelineEnv {
            mongo,
            kafka,
            metrics,
            readiness,
            shutdown_deadline,
            status,
            board,
            paused,
        } = env;
        let config_slots = config.slots;
        Self {
            copies: Arc::new(CopyTracker::new(
                &config.name,
                metrics.clone(),
                status.clone(),
            )),
            snapshots: Arc::default(),
            snapshot_progress: Arc::new(CopyTracker::for_snapshots(
                &config.name,
                metrics.clone(),
                status.clone(),
            )),
            status,
            config,
            mongo,
            kafka,
            metrics,
            readiness,
            shutdown_deadline,
            running: None,
            checkpoints: HashMap::new(),
            checkpoint_generation: 0,
            readers: BTreeMap::new(),
            pipeline_backoff: restart_backoff(),
            lifecycle: Lifecycle::new(),
            handover: Handover::new(config_slots),
            membership: None,
            changes: None,
            agreements: None,
            fenced_waiting: std::collections::BTreeSet::new(),
            fence_backoff: fence_backoff(),
            board,
            start_paused: paused,
        }
    }

    /// The slot of the reader `namespace`.
    pub(super) fn slot_of(&self, namespace: &str) -> i32 {
        slots::slot_of(&self.config.name, namespace, self.config.slots)
    }

    /// The readers (namespaces) of each owned slot that has any.
    pub(super) fn readers_by_owned_slot(&self) -> BTreeMap<i32, Vec<String>> {
        let namespaces: Vec<String> = Scope::of(&self.config)
            .iter()
            .map(Scope::namespace)
            .collect();
        let mut map = slots::by_slot(
            &self.config.name,
            namespaces.iter().map(String::as_str),
            self.config.slots,
        );
        map.retain(|slot, _| self.handover.ownership().owned().contains(slot));
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12, defect 7: a reader that crash-looped once waited the 30 s cap at every
    /// later failure, however long it had run healthily in between.
    #[tokio::test(start_paused = true)]
    async fn restart_backoffs_forget_failures_after_a_healthy_period() {
        let mut backoff = restart_backoff();
        for _ in 0..8 {
            let delay = backoff.next_delay();
            tokio::time::advance(delay).await;
        }
        let capped = backoff.next_delay();
        assert!(
            capped <= Duration::from_secs(30) && capped >= Duration::from_millis(22_500),
            "a crash loop backs off to the cap, less its jitter: {capped:?}"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        // Then it runs healthily for an hour, and fails once.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(backoff.next_delay(), Duration::from_millis(250));
    }
}
