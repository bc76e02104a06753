//! The change-stream reader: one actor per watched namespace. The actor is a shell: it runs
//! the read loop and tells the pipeline supervisor when the loop fails; the supervisor
//! decides what happens next.
//!
//! - [`stream`]: the loop itself (open the change stream, read, hand records to the
//!   producer, awaiting its bounded mailbox so a slow Kafka stops it pulling from MongoDB);
//! - [`copy`]: the workers copying existing documents, over the plan of
//!   [`crate::source::copy_plan`];
//! - [`records`]: change event → record, heartbeats and dead letters (pure);
//! - [`fragments`]: events MongoDB returned in fragments, put back together (pure);
//! - [`settings`]: the configuration resolved once when the pipeline starts (pure);
//! - stall tracking is [`ReaderLiveness`] (`crate::source::liveness`).

pub mod batching;
mod copy;
pub mod fragments;
mod read_loop;
pub mod records;
pub mod settings;
pub mod snapshot;
mod snapshot_io;
mod stream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::watch;

use self::read_loop::ReadLoop;
pub use self::settings::ReaderSettings;
pub(crate) use self::stream::options as change_stream_options;
use super::copy_status::CopyTracker;
use super::format::Conversion;
pub use super::liveness::ReaderLiveness;
use super::model::{ReaderId, Scope, StartAt};
use super::producer::RecordProducer;
use super::topic::TopicMapper;
use crate::budget::Budget;
use crate::config::SourceConfig;
use crate::ops::metrics::Metrics;
use crate::source::error::SourceError;

/// Everything a reader needs, shared by the readers of one pipeline.
pub struct ReaderContext {
    /// The pipeline configuration.
    pub config: SourceConfig,
    /// What of the configuration was parsed and compiled when the pipeline started.
    pub settings: ReaderSettings,
    /// Events → records.
    pub conversion: Conversion,
    /// Namespace → topic.
    pub topics: TopicMapper,
    /// The pipeline's MongoDB client.
    pub mongo: mongodb::Client,
    /// The pipeline's producer.
    pub producer: Addr<RecordProducer>,
    /// Metrics.
    pub metrics: Metrics,
    /// The copies' progress.
    pub copies: Arc<CopyTracker>,
    /// The pipeline's memory budget, shared by the readers of all its slots.
    pub budget: Budget,
    /// Snapshots on demand waiting for the readers watching their namespaces.
    pub snapshots: Arc<snapshot::SnapshotInbox>,
    /// The snapshots' progress (`/status` `snapshot`).
    pub snapshot_progress: Arc<CopyTracker>,
}

/// Tells the pipeline supervisor a reader ended with an error.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReaderFailed {
    /// The reader.
    pub reader: ReaderId,
    /// Why.
    pub error: SourceError,
}

/// Asks a reader to stop after its current batch; answers once it stopped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopReader;

/// Stops a reader at once, abandoning whatever it waits for (a stalled stream).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct AbortReader;

/// The reader actor.
pub struct ChangeStreamReader {
    id: ReaderId,
    watched: Scope,
    start: StartAt,
    shared: Arc<ReaderContext>,
    supervisor: Recipient<ReaderFailed>,
    progress: Arc<ReaderLiveness>,
    stop: Arc<AtomicBool>,
    finished: watch::Sender<bool>,
}

impl ChangeStreamReader {
    /// A reader of `watched`, starting at `start`, reporting its progress to `progress`.
    pub fn new(
        id: ReaderId,
        watched: Scope,
        start: StartAt,
        shared: Arc<ReaderContext>,
        supervisor: Recipient<ReaderFailed>,
        progress: Arc<ReaderLiveness>,
    ) -> Self {
        Self {
            id,
            watched,
            start,
            shared,
            supervisor,
            progress,
            stop: Arc::new(AtomicBool::new(false)),
            finished: watch::channel(false).0,
        }
    }
}

impl Actor for ChangeStreamReader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::CONTROL_MAILBOX_CAPACITY);
        let run = ReadLoop {
            id: self.id.clone(),
            watched: self.watched.clone(),
            shared: self.shared.clone(),
            stop: self.stop.clone(),
            progress: self.progress.clone(),
        }
        .run(self.start.clone());
        ctx.spawn(run.into_actor(self).map(|result, act, ctx| {
            act.finished.send_replace(true);
            if let Err(error) = result {
                let supervisor = act.supervisor.clone();
                let reader = act.id.clone();
                ctx.spawn(
                    async move {
                        let _ = supervisor.send(ReaderFailed { reader, error }).await;
                    }
                    .into_actor(act)
                    .map(|_, _, ctx| ctx.stop()),
                );
            } else {
                ctx.stop();
            }
        }));
    }
}

impl Handler<StopReader> for ChangeStreamReader {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopReader, _: &mut Self::Context) -> Self::Result {
        self.stop.store(true, Ordering::SeqCst);
        let mut finished = self.finished.subscribe();
        Box::pin(async move {
            let _ = finished.wait_for(|done| *done).await;
        })
    }
}

impl Handler<AbortReader> for ChangeStreamReader {
    type Result = ();

    fn handle(&mut self, _: AbortReader, ctx: &mut Self::Context) {
        self.stop.store(true, Ordering::SeqCst);
        self.finished.send_replace(true);
        // Stopping the actor drops the read loop, and with it whatever it waited for.
        ctx.stop();
    }
}
