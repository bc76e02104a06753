//! The read loop of one reader: opens the change stream (from a checkpoint, or by the
//! startup mode), runs the copy first when one is due, converts each event to a record and
//! hands it to the producer with the stream's position, awaiting the producer's bounded
//! mailbox so a slow Kafka stops it pulling from MongoDB. Reading and handing over run side
//! by side: what is read while one batch travels goes next as one batch (`batching`). Each
//! read takes its records' room in the pipeline's memory budget before it is queued, and
//! the room is released once the producer answered, librdkafka holding the records: the
//! readers of a pipeline hold at most `memory_budget` bytes of records. Plain async code,
//! run by the reader actor.

use std::time::Instant;

use bson::{Document, RawDocumentBuf};
use futures_util::future::try_join;
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use mongodb::options::{ChangeStreamOptions, FullDocumentBeforeChangeType, FullDocumentType};

use tokio::sync::mpsc;

use super::batching::{self, PendingBatch, ReadItem};
use super::copy::Copier;
use super::fragments::Reassembler;
use super::read_loop::ReadLoop;
use super::records;
use super::settings::resumes_after_a_fragment;
use super::snapshot::SnapshotCursor;
use super::snapshot_io::Snapshots;
use crate::budget::Held;
use crate::config::{FullDocument, FullDocumentBeforeChange, SourceConfig};
use crate::source::copy_plan::CopyCursor;
use crate::source::error::SourceError;
use crate::source::model::{OutgoingRecord, Position, Scope, StartAt};
use crate::source::policy::{history_lost, RestartPolicy, TooLarge};
use std::sync::Arc;

/// The code of a command error, 0 for any other error.
fn command_code(error: &mongodb::error::Error) -> i32 {
    match &*error.kind {
        mongodb::error::ErrorKind::Command(command) => command.code,
        _ => 0,
    }
}

/// The options of a change stream opened at `start` for the pipeline `config`.
pub(crate) fn options(config: &SourceConfig, start: &StartAt) -> ChangeStreamOptions {
    let mut options = ChangeStreamOptions::default();
    options.full_document = match config.full_document {
        // As the MongoDB Kafka Connector does: publishing only documents needs the
        // document of updates too, which only a lookup provides.
        FullDocument::Default if config.publish_full_document_only => {
            Some(FullDocumentType::UpdateLookup)
        }
        FullDocument::Default => None,
        FullDocument::UpdateLookup => Some(FullDocumentType::UpdateLookup),
        FullDocument::WhenAvailable => Some(FullDocumentType::WhenAvailable),
        FullDocument::Required => Some(FullDocumentType::Required),
    };
    options.full_document_before_change = match config.full_document_before_change {
        FullDocumentBeforeChange::Off => None,
        FullDocumentBeforeChange::WhenAvailable => {
            Some(FullDocumentBeforeChangeType::WhenAvailable)
        }
        FullDocumentBeforeChange::Required => Some(FullDocumentBeforeChangeType::Required),
    };
    // Validated with the configuration; the reader's settings refuse it first otherwise.
    options.collation = config.collation().ok().flatten();
    options.show_expanded_events = config.show_expanded_events.then_some(true);
    options.batch_size = config.batch_size;
    options.max_await_time = Some(config.max_await_time);
    match start {
        StartAt::Resume(position) => options.start_after = Some(position.token.clone()),
        StartAt::Time(at) => options.start_at_operation_time = Some(*at),
        StartAt::Latest | StartAt::CopyExisting => {}
    }
    options
}

impl ReadLoop {
    /// Opens the change stream at `start`, asking for large events in fragments when
    /// `fragments` says so.
    async fn open(
        &self,
        start: &StartAt,
        fragments: bool,
    ) -> Result<ChangeStream<RawDocumentBuf>, SourceError> {
        let mongo = &self.shared.mongo;
        let options = options(&self.shared.config, start);
        let stages = self
            .shared
            .settings
            .change_stream_stages(&self.watched, fragments);
        let opened = match &self.watched {
            Scope::Deployment => mongo.watch().pipeline(stages).with_options(options).await,
            Scope::Database { db, .. } => {
                mongo
                    .database(db)
                    .watch()
                    .pipeline(stages)
                    .with_options(options)
                    .await
            }
            Scope::Collection { db, coll } => {
                mongo
                    .database(db)
                    .collection::<Document>(coll)
                    .watch()
                    .pipeline(stages)
                    .with_options(options)
                    .await
            }
        };
        let after_fragment = resumes_after_a_fragment(start);
        opened
            // Raw: an event the driver could not decode as a `Document` (a string that is
            // not UTF-8) would otherwise fail the stream at the same event forever.
            .map(ChangeStream::with_type::<RawDocumentBuf>)
            .map_err(self.mongo_error("opening the change stream"))
            .map_err(|error| match error {
                SourceError::HistoryLost { namespace, source }
                    if !history_lost(command_code(&source), after_fragment) =>
                {
                    SourceError::SplitResume { namespace, source }
                }
                other => other,
            })
    }

    /// The stream's position as a checkpoint position.
    fn position(token: Option<ResumeToken>) -> Option<Position> {
        token.map(Position::stream)
    }

    /// After MongoDB could not return the next event whole (`error`, a 10334): the stream
    /// opened again at its position, asking for large events in fragments, when the
    /// `oversize` policy says so; else `error`.
    async fn fragmenting(
        &self,
        stream: &ChangeStream<RawDocumentBuf>,
        error: SourceError,
        fragments: bool,
    ) -> Result<ChangeStream<RawDocumentBuf>, SourceError> {
        let decision = RestartPolicy::event_too_large(&self.shared.config, fragments);
        // Without a position the event cannot be found again: never skip silently.
        let (TooLarge::Fragment, Some(token)) = (decision, stream.resume_token()) else {
            return Err(error);
        };
        let pipeline = &self.shared.config.name;
        tracing::warn!(pipeline = %pipeline, namespace = %self.namespace(), "MongoDB cannot return the next change event whole (over 16 MiB); reading it in fragments ($changeStreamSplitLargeEvent), then `oversize` applies");
        self.shared.metrics.oversize_event(pipeline, "fragmented");
        match self
            .open(&StartAt::Resume(Position::stream(token)), true)
            .await
        {
            Ok(stream) => Ok(stream),
            // A server before 6.0.9 refuses the stage: the event stays out of reach, and
            // the pipeline stops saying so rather than restarting into it again.
            Err(SourceError::Mongo { source, .. })
                if matches!(&*source.kind, mongodb::error::ErrorKind::Command(_)) =>
            {
                tracing::error!(pipeline = %pipeline, namespace = %self.namespace(), refused = %source, "the server refused `$changeStreamSplitLargeEvent` (MongoDB 7.0, 6.0.9 or later)");
                Err(error)
            }
            Err(other) => Err(other),
        }
    }

    pub async fn run(self, start: StartAt) -> Result<(), SourceError> {
        // Whether the stream asks for events over 16 MiB in fragments, and those collected.
        let fragments = self.shared.settings.fragments_at(&start);
        let stream = self.open(&start, fragments).await?;
        self.progress.advanced();
        if let (StartAt::Latest | StartAt::Time(_), Some(token)) = (&start, stream.resume_token()) {
            // The token of a stream that returned nothing yet: where it opened. Stored before
            // anything is read, so a restart after a crash resumes here, not at `latest`.
            let opened = Position::stream(token);
            self.progress.opened(opened.clone());
            self.store_start(opened).await?;
        }
        let copy = match &start {
            StartAt::CopyExisting => Some(CopyCursor::default()),
            StartAt::Resume(position) => position.copy.as_deref().cloned(),
            StartAt::Latest | StartAt::Time(_) => None,
        };
        if let Some(progress) = copy {
            // The copy's checkpoints hold the stream's start, so a restart resumes both.
            let start_token = match &start {
                StartAt::Resume(position) => Some(position.token.clone()),
                _ => stream.resume_token(),
            };
            if !Copier::run(&self, progress, start_token).await? {
                return Ok(());
            }
            // Only now may a plain stream checkpoint be stored.
            self.send(Vec::new(), Self::position(stream.resume_token()))
                .await?;
        }
        let restored = match &start {
            StartAt::Resume(position) => position.snapshot.clone(),
            _ => None,
        };
        tracing::info!(pipeline = %self.shared.config.name, namespace = %self.namespace(), "change stream open");
        // Reading and handing over run side by side: what is read while a batch travels to
        // the producer waits in a bounded queue and goes next, as one batch.
        let (items, pending) = mpsc::channel(batching::PENDING_ITEMS);
        try_join(
            self.read_stream(stream, fragments, items, restored),
            self.hand_over(pending),
        )
        .await?;
        tracing::info!(pipeline = %self.shared.config.name, namespace = %self.namespace(), "reader stopped");
        Ok(())
    }

    /// Reads the stream until asked to stop, queueing each read's records and position;
    /// `fragments`: whether the stream asks for large events in fragments.
    async fn read_stream(
        &self,
        mut stream: ChangeStream<RawDocumentBuf>,
        mut fragments: bool,
        items: mpsc::Sender<ReadItem>,
        restored: Option<Arc<SnapshotCursor>>,
    ) -> Result<(), SourceError> {
        let mut reassembler = Reassembler::default();
        let heartbeat = self.shared.config.heartbeat_interval;
        let pipeline = &self.shared.config.name;
        let mut last_publish = Instant::now();
        // Snapshots on demand: one chunk at a time, read between watermarks and emitted
        // when the stream passed the second (`snapshot`).
        let mut snapshots =
            Snapshots::restored(restored.as_deref()).map_err(|reason| SourceError::Checkpoint {
                namespace: self.namespace().to_owned(),
                reason: format!("the snapshot's progress does not read back: {reason}"),
            })?;
        while !self.stopping() {
            if !reassembler.in_progress() {
                if self.snapshot_commands(&mut snapshots) {
                    // Every event handed out so far is queued: the stream's token is a
                    // position, now carrying the snapshots.
                    let position = Self::position(stream.resume_token());
                    if let Some(position) = position.map(|p| snapshots.carried(p)) {
                        self.queue(&items, Vec::new(), Some(position)).await?;
                    }
                }
                self.next_chunk(&mut snapshots).await?;
            }
            if !stream.is_alive() {
                // After an invalidate (drop, rename) the stream ends; start after it, so a
                // collection created again under the name is followed too.
                let token = stream.resume_token();
                tracing::info!(namespace = %self.namespace(), "change stream invalidated; reopening");
                let at = token.map_or(StartAt::Latest, |t| StartAt::Resume(Position::stream(t)));
                stream = self.open(&at, fragments).await?;
                continue;
            }
            let next = match stream.next_if_any().await {
                Ok(next) => next,
                Err(error) => match self.mongo_error("reading the change stream")(error) {
                    too_large @ SourceError::EventTooLarge { .. } => {
                        stream = self.fragmenting(&stream, too_large, fragments).await?;
                        fragments = true;
                        continue;
                    }
                    other => return Err(other),
                },
            };
            self.progress.advanced();
            match next {
                Some(fragment) => {
                    let raw = match reassembler.push(fragment) {
                        Ok(Some(event)) => event,
                        // More fragments to come; no position inside an event is sent.
                        Ok(None) => continue,
                        Err(error) => {
                            return Err(SourceError::Fragments {
                                namespace: self.namespace().to_owned(),
                                reason: error.to_string(),
                            })
                        }
                    };
                    let token = stream.resume_token();
                    self.shared
                        .metrics
                        .event_read(pipeline, self.namespace(), records::lag(&raw));
                    self.shared.metrics.source_bytes_read(
                        pipeline,
                        self.namespace(),
                        raw.as_bytes().len(),
                    );
                    self.before_event(&mut snapshots, &raw, &items).await?;
                    let builder = self.records();
                    let records = tokio::select! {
                        biased;
                        records = builder.event(&raw) => records?,
                        // A stop (shutdown, hand-over) does not wait for a schema registry
                        // that does not answer: the event is read again after it.
                        () = self.stopped() => break,
                    };
                    let records = records.into_iter().collect();
                    let position = Self::position(token).map(|p| snapshots.carried(p));
                    self.queue(&items, records, position).await?;
                    last_publish = Instant::now();
                }
                // Between the fragments of one event: its position is no checkpoint.
                None if reassembler.in_progress() => {}
                None => {
                    self.stream_idle(&mut snapshots, &items).await?;
                    self.shared
                        .metrics
                        .source_caught_up(pipeline, self.namespace());
                    // Idle: the post-batch token moves the checkpoint without any record.
                    let mut records = Vec::new();
                    if heartbeat.is_some_and(|every| last_publish.elapsed() >= every) {
                        records.push(self.records().heartbeat(stream.resume_token().as_ref())?);
                        last_publish = Instant::now();
                    }
                    let token = stream.resume_token();
                    if token.is_some() || !records.is_empty() {
                        let position = Self::position(token).map(|p| snapshots.carried(p));
                        self.queue(&items, records, position).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes the room of `records` in the pipeline's memory budget, waiting while it is
    /// spent: the records holding it wait for Kafka, and so does the reader (not a stall).
    async fn room(&self, records: &[OutgoingRecord]) -> Held {
        let bytes = batching::record_bytes(records);
        self.progress.waiting_for_kafka(true);
        let held = self.shared.budget.take(bytes, self.namespace()).await;
        self.progress.waiting_for_kafka(false);
        held
    }

    /// Queues one read for the hand-over, waiting for its room in the memory budget and
    /// while the queue is full.
    pub(super) async fn queue(
        &self,
        items: &mpsc::Sender<ReadItem>,
        records: Vec<OutgoingRecord>,
        position: Option<Position>,
    ) -> Result<(), SourceError> {
        let held = self.room(&records).await;
        items
            .send(ReadItem {
                records,
                position,
                read_at: Instant::now(),
                held,
            })
            .await
            // Only when the hand-over ended, with its error, which is what the reader reports.
            .map_err(|_| SourceError::ProducerGone {
                namespace: self.namespace().to_owned(),
            })
    }

    /// Hands the queued reads to the producer, each time as one batch of all that waits (up
    /// to [`batching::MAX_BATCH_RECORDS`]), until the reading ended and the queue is empty.
    async fn hand_over(&self, mut pending: mpsc::Receiver<ReadItem>) -> Result<(), SourceError> {
        let mut carried = None;
        loop {
            let first = match carried.take() {
                Some(item) => item,
                None => match pending.recv().await {
                    Some(item) => item,
                    None => return Ok(()),
                },
            };
            let mut batch = PendingBatch::new(first);
            while !batch.is_full() {
                match pending.try_recv() {
                    Ok(item) if batch.has_room_for(&item) => batch.push(item),
                    Ok(item) => {
                        carried = Some(item);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let oldest = batch.oldest();
            let (records, position, held) = batch.into_parts();
            self.send(records, position).await?;
            // The producer answered: librdkafka holds the records (or they were refused).
            drop(held);
            self.shared
                .metrics
                .handed_over(&self.shared.config.name, oldest.elapsed());
        }
    }
}
