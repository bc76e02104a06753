//! The change-stream reader actor: one per watched namespace. It opens the change stream
//! (from a checkpoint, or by the startup mode), copies existing documents when asked,
//! converts events to records and hands them to the producer, awaiting the bounded mailbox,
//! so a slow Kafka stops it pulling from MongoDB.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bson::{doc, Bson, Document, RawDocumentBuf};
use futures_util::future::try_join_all;
use futures_util::TryStreamExt;
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use mongodb::options::{ChangeStreamOptions, FullDocumentBeforeChangeType, FullDocumentType};
use tokio::sync::watch;

use super::copy::{self, CopyProgress};
use super::copy_progress::CopyTracker;
use super::format::{self, Conversion, Converted};
use super::model::{OutgoingRecord, Position, ReaderId, Scope, StartAt};
use super::policy::{EVENT_TOO_LARGE, HISTORY_LOST};
use super::producer::{ProduceBatch, RecordProducer};
use super::progress::now_millis;
pub use super::progress::ReaderProgress;
use super::topic::TopicMapper;
use super::SourceError;
use crate::config::{
    ErrorsConfig, FullDocument, FullDocumentBeforeChange, OutputFormat, SourceConfig, Tolerance,
};
use crate::ops::metrics::{Metrics, MAILBOX_RECORD_PRODUCER, SKIPPED_NO_DOCUMENT};

/// Copied documents per batch handed to the producer, at most.
const COPY_BATCH_DOCUMENTS: usize = 256;
/// Bytes of copied records per batch handed to the producer, at most.
const COPY_BATCH_BYTES: usize = 1024 * 1024;

/// An event that is valid BSON but not a document the daemon can read (a string that is
/// not UTF-8): dead-lettered as its raw bytes with `errors.tolerance = "all"`, else the error
/// that stops the pipeline, naming it.
fn undecodable(
    raw: &RawDocumentBuf,
    reason: &str,
    topics: &TopicMapper,
    errors: &ErrorsConfig,
) -> Result<Option<OutgoingRecord>, SourceError> {
    let ns = raw.get_document("ns").ok();
    let db = ns
        .and_then(|n| n.get_str("db").ok())
        .unwrap_or_default()
        .to_owned();
    let coll = ns.and_then(|n| n.get_str("coll").ok());
    let topic = topics.topic(&db, coll);
    let origin = format!(
        "{db}.{} (an event that does not decode)",
        coll.unwrap_or_default()
    );
    if errors.tolerance == Tolerance::All && errors.dead_letter_topic.is_some() {
        return Ok(Some(OutgoingRecord {
            value: Some(raw.as_bytes().to_vec()),
            failure: Some(format!("decoding the event: {reason}")),
            ..OutgoingRecord::new(topic, None, None, origin)
        }));
    }
    Err(SourceError::Format {
        origin,
        source: format::FormatError::Decode(reason.to_owned()),
    })
}

/// The dead letter of an event that could not be converted: its key and the event as
/// canonical extended JSON (which holds every BSON type), when they can be encoded at all.
fn unconvertible(
    topic: String,
    origin: String,
    key: Option<Bson>,
    event: Document,
    reason: &str,
) -> OutgoingRecord {
    let encode = |doc: Document| format::encode(doc, OutputFormat::CanonicalJson).ok();
    OutgoingRecord {
        key: key.and_then(|k| match k {
            Bson::Document(doc) => encode(doc),
            other => encode(doc! { "_id": other }),
        }),
        value: encode(event),
        failure: Some(format!("converting the event: {reason}")),
        ..OutgoingRecord::new(topic, None, None, origin)
    }
}

/// Everything a reader needs, shared by the readers of one pipeline.
pub struct ReaderContext {
    /// The pipeline configuration.
    pub config: SourceConfig,
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
    progress: Arc<ReaderProgress>,
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
        progress: Arc<ReaderProgress>,
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

/// The reading itself, kept out of the actor so it is plain async code.
struct ReadLoop {
    id: ReaderId,
    watched: Scope,
    shared: Arc<ReaderContext>,
    stop: Arc<AtomicBool>,
    progress: Arc<ReaderProgress>,
}

impl ReadLoop {
    fn namespace(&self) -> &str {
        &self.id.namespace
    }

    fn mongo_error(
        &self,
        what: &'static str,
    ) -> impl FnOnce(mongodb::error::Error) -> SourceError + '_ {
        move |source| {
            let source = Box::new(source);
            let namespace = self.namespace().to_owned();
            match &*source.kind {
                mongodb::error::ErrorKind::Command(c) if HISTORY_LOST.contains(&c.code) => {
                    SourceError::HistoryLost { namespace, source }
                }
                mongodb::error::ErrorKind::Command(c) if c.code == EVENT_TOO_LARGE => {
                    SourceError::EventTooLarge { namespace, source }
                }
                _ => SourceError::Mongo {
                    namespace,
                    what,
                    source,
                },
            }
        }
    }

    fn options(&self, start: &StartAt) -> ChangeStreamOptions {
        let config = &self.shared.config;
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
        options.batch_size = config.batch_size;
        options.max_await_time = Some(config.max_await_time);
        match start {
            StartAt::Resume(position) => options.start_after = Some(position.token.clone()),
            StartAt::Time(at) => options.start_at_operation_time = Some(*at),
            StartAt::Latest | StartAt::CopyExisting => {}
        }
        options
    }

    fn stages(&self) -> Result<Vec<Document>, SourceError> {
        let mut stages = Vec::new();
        if let Scope::Database {
            collection_regex: Some(re),
            ..
        } = &self.watched
        {
            stages.push(doc! { "$match": { "ns.coll": { "$regex": re.as_str() } } });
        }
        let user = self
            .shared
            .config
            .stages()
            .map_err(|reason| SourceError::Config {
                namespace: self.namespace().to_owned(),
                reason,
            })?;
        stages.extend(user);
        Ok(stages)
    }

    async fn open(&self, start: &StartAt) -> Result<ChangeStream<RawDocumentBuf>, SourceError> {
        let mongo = &self.shared.mongo;
        let options = self.options(start);
        let stages = self.stages()?;
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
        opened
            // Raw: an event the driver could not decode as a `Document` (a string that is
            // not UTF-8) would otherwise fail the stream at the same event forever.
            .map(ChangeStream::with_type::<RawDocumentBuf>)
            .map_err(self.mongo_error("opening the change stream"))
    }

    async fn send(
        &self,
        records: Vec<OutgoingRecord>,
        token: Option<Position>,
    ) -> Result<(), SourceError> {
        let batch = ProduceBatch {
            reader: self.id.clone(),
            records,
            token,
        };
        let pipeline = &self.shared.config.name;
        self.shared
            .metrics
            .mailbox(pipeline, MAILBOX_RECORD_PRODUCER, 1);
        self.progress.waiting_for_kafka(true);
        let sent = self.shared.producer.send(batch).await;
        self.progress.waiting_for_kafka(false);
        match sent {
            Ok(result) => result,
            Err(_) => {
                // The message never reached the handler that counts it out.
                self.shared
                    .metrics
                    .mailbox(pipeline, MAILBOX_RECORD_PRODUCER, -1);
                Err(SourceError::ProducerGone {
                    namespace: self.namespace().to_owned(),
                })
            }
        }
    }

    /// The stream's position as a checkpoint position.
    fn position(token: Option<ResumeToken>) -> Option<Position> {
        token.map(Position::stream)
    }

    /// Converts one event; `Ok(None)` when nothing is published for it.
    fn record(&self, event: Document) -> Result<Option<OutgoingRecord>, SourceError> {
        // `ns` is on every event MongoDB emits; where a server leaves it out, the watched
        // namespace stands in.
        let ns = event.get_document("ns").ok();
        let (watched_db, watched_coll) = self.watched.default_ns();
        let db = ns
            .and_then(|n| n.get_str("db").ok())
            .or(watched_db)
            .unwrap_or_default()
            .to_owned();
        let coll = ns
            .and_then(|n| n.get_str("coll").ok())
            .or(watched_coll)
            .map(str::to_owned);
        let origin = format!(
            "{db}{}{} {}",
            if coll.is_some() { "." } else { "" },
            coll.as_deref().unwrap_or_default(),
            event
                .get("documentKey")
                .map(Bson::to_string)
                .unwrap_or_else(|| event.get_str("operationType").unwrap_or("event").to_owned())
        );
        let topic = self.shared.topics.topic(&db, coll.as_deref());
        let errors = &self.shared.config.errors;
        // Kept for the dead letter, should the conversion fail.
        let tolerated = (errors.tolerance == Tolerance::All && errors.dead_letter_topic.is_some())
            .then(|| (event.get("documentKey").cloned(), event.clone()));
        match self.shared.conversion.convert(event) {
            Ok(Converted::Record { key, value }) => {
                Ok(Some(OutgoingRecord::new(topic, key, value, origin)))
            }
            Ok(Converted::Skip) => {
                tracing::debug!(pipeline = %self.shared.config.name, %origin, "no document to publish; skipped");
                self.shared
                    .metrics
                    .event_skipped(&self.shared.config.name, SKIPPED_NO_DOCUMENT);
                Ok(None)
            }
            Err(source) if source.is_transient() => Err(SourceError::Format { origin, source }),
            Err(source) => match tolerated {
                Some((key, event)) => Ok(Some(unconvertible(
                    topic,
                    origin,
                    key,
                    event,
                    &source.to_string(),
                ))),
                None => Err(SourceError::Format { origin, source }),
            },
        }
    }

    /// How old a change event is: now minus its wall time (MongoDB 6.0+) or cluster time.
    fn lag(event: &Document) -> Option<Duration> {
        let millis = match (
            event.get_datetime("wallTime"),
            event.get_timestamp("clusterTime"),
        ) {
            (Ok(wall), _) => wall.timestamp_millis(),
            (_, Ok(cluster)) => i64::from(cluster.time) * 1000,
            _ => return None,
        };
        let now = i64::try_from(now_millis()).unwrap_or(i64::MAX);
        Some(Duration::from_millis(
            u64::try_from(now.saturating_sub(millis)).unwrap_or_default(),
        ))
    }

    async fn run(self, start: StartAt) -> Result<(), SourceError> {
        let mut stream = self.open(&start).await?;
        self.progress.advanced();
        if let (StartAt::Latest | StartAt::Time(_), Some(token)) = (&start, stream.resume_token()) {
            // The token of a stream that returned nothing yet: where it opened.
            self.progress.opened(Position::stream(token));
        }
        let copy = match &start {
            StartAt::CopyExisting => Some(CopyProgress::default()),
            StartAt::Resume(position) => position.copy.as_deref().cloned(),
            StartAt::Latest | StartAt::Time(_) => None,
        };
        if let Some(progress) = copy {
            // The copy's checkpoints hold the stream's start, so a restart resumes both.
            let start_token = match &start {
                StartAt::Resume(position) => Some(position.token.clone()),
                _ => stream.resume_token(),
            };
            if !self.copy_existing(progress, start_token).await? {
                return Ok(());
            }
            // Only now may a plain stream checkpoint be stored.
            self.send(Vec::new(), Self::position(stream.resume_token()))
                .await?;
        }
        tracing::info!(pipeline = %self.shared.config.name, namespace = %self.namespace(), "change stream open");
        let heartbeat = self.shared.config.heartbeat_interval;
        let pipeline = &self.shared.config.name;
        let mut last_publish = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            if !stream.is_alive() {
                // After an invalidate (drop, rename) the stream ends; start after it, so a
                // collection created again under the name is followed too.
                let token = stream.resume_token();
                tracing::info!(namespace = %self.namespace(), "change stream invalidated; reopening");
                stream = self
                    .open(&token.map_or(StartAt::Latest, |t| StartAt::Resume(Position::stream(t))))
                    .await?;
                continue;
            }
            let next = stream
                .next_if_any()
                .await
                .map_err(self.mongo_error("reading the change stream"))?;
            self.progress.advanced();
            match next {
                Some(raw) => {
                    let token = stream.resume_token();
                    let records = match Document::try_from(raw.as_ref()) {
                        Ok(event) => {
                            self.shared.metrics.event_read(
                                pipeline,
                                self.namespace(),
                                Self::lag(&event),
                            );
                            self.record(event)?
                        }
                        Err(error) => {
                            self.shared
                                .metrics
                                .event_read(pipeline, self.namespace(), None);
                            undecodable(
                                &raw,
                                &error.to_string(),
                                &self.shared.topics,
                                &self.shared.config.errors,
                            )?
                        }
                    };
                    self.send(records.into_iter().collect(), Self::position(token))
                        .await?;
                    last_publish = Instant::now();
                }
                None => {
                    self.shared
                        .metrics
                        .source_caught_up(pipeline, self.namespace());
                    // Idle: the post-batch token moves the checkpoint without any record.
                    let mut records = Vec::new();
                    if heartbeat.is_some_and(|every| last_publish.elapsed() >= every) {
                        records.push(self.heartbeat(stream.resume_token().as_ref())?);
                        last_publish = Instant::now();
                    }
                    let token = stream.resume_token();
                    if token.is_some() || !records.is_empty() {
                        self.send(records, Self::position(token)).await?;
                    }
                }
            }
        }
        tracing::info!(pipeline = %self.shared.config.name, namespace = %self.namespace(), "reader stopped");
        Ok(())
    }

    fn heartbeat(&self, token: Option<&ResumeToken>) -> Result<OutgoingRecord, SourceError> {
        let config = &self.shared.config;
        let key = serde_json::json!({ "pipeline": config.name, "namespace": self.namespace() });
        let token_json = token
            .and_then(|t| bson::to_bson(t).ok())
            .map(Bson::into_canonical_extjson);
        let value = serde_json::json!({
            "resume_token": token_json,
            "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        });
        let encode = |v: &serde_json::Value| {
            serde_json::to_vec(v).map_err(|e| SourceError::Format {
                origin: "heartbeat".to_owned(),
                source: e.into(),
            })
        };
        Ok(OutgoingRecord::new(
            config.heartbeat_topic.clone(),
            Some(encode(&key)?),
            Some(encode(&value)?),
            format!("{} heartbeat", self.namespace()),
        ))
    }

    /// The collections a copy covers.
    async fn collections_to_copy(&self) -> Result<Vec<(String, String)>, SourceError> {
        let mongo = &self.shared.mongo;
        let mut namespaces = Vec::new();
        let dbs = match &self.watched {
            Scope::Collection { db, coll } => {
                namespaces.push((db.clone(), coll.clone()));
                Vec::new()
            }
            Scope::Database { db, .. } => vec![db.clone()],
            Scope::Deployment => mongo
                .list_database_names()
                .await
                .map_err(self.mongo_error("listing databases"))?,
        };
        let coll_regex = match &self.watched {
            Scope::Database {
                collection_regex: Some(re),
                ..
            } => regex::Regex::new(re).ok(),
            _ => None,
        };
        for db in dbs {
            if matches!(db.as_str(), "admin" | "config" | "local") {
                continue;
            }
            let names = mongo
                .database(&db)
                .list_collection_names()
                .await
                .map_err(self.mongo_error("listing collections"))?;
            for coll in names {
                if coll.starts_with("system.")
                    || coll_regex.as_ref().is_some_and(|re| !re.is_match(&coll))
                {
                    continue;
                }
                namespaces.push((db.clone(), coll));
            }
        }
        let ns_regex = self
            .shared
            .config
            .copy_existing_namespace_regex
            .as_deref()
            .and_then(|re| regex::Regex::new(re).ok());
        namespaces.retain(|(db, coll)| {
            ns_regex
                .as_ref()
                .is_none_or(|re| re.is_match(&format!("{db}.{coll}")))
        });
        copy::copy_order(&mut namespaces);
        Ok(namespaces)
    }

    /// Publishes every existing document as an insert event marked `copyingData`, each
    /// collection split into `_id` ranges copied at once, continuing from `progress`. Every
    /// batch carries the copy's progress at `start_token` for the checkpoint. Answers
    /// `false` when the reader was stopped meanwhile.
    async fn copy_existing(
        &self,
        progress: CopyProgress,
        start_token: Option<ResumeToken>,
    ) -> Result<bool, SourceError> {
        let config = &self.shared.config;
        let user_stages = match &config.copy_existing_pipeline {
            Some(text) => {
                crate::config::parse_pipeline(text).map_err(|reason| SourceError::Config {
                    namespace: self.namespace().to_owned(),
                    reason,
                })?
            }
            None => Vec::new(),
        };
        let started = Instant::now();
        let state = tokio::sync::Mutex::new(progress);
        let copier = Copier {
            reader: self,
            state: &state,
            start_token,
            user_stages,
        };
        for (db, coll) in self.collections_to_copy().await? {
            if !copier.copy_collection(&db, &coll).await? {
                return Ok(false);
            }
        }
        tracing::info!(pipeline = %config.name, namespace = %self.namespace(), elapsed = ?started.elapsed(), "copied existing documents");
        Ok(true)
    }
}

/// One copy of existing documents under way: the reader it publishes through and the
/// progress its workers share.
struct Copier<'a> {
    reader: &'a ReadLoop,
    state: &'a tokio::sync::Mutex<CopyProgress>,
    start_token: Option<ResumeToken>,
    user_stages: Vec<Document>,
}

impl Copier<'_> {
    /// Copies what is left of `db.coll`; `false` when the reader was stopped meanwhile.
    async fn copy_collection(&self, db: &str, coll: &str) -> Result<bool, SourceError> {
        let reader = self.reader;
        let namespace = format!("{db}.{coll}");
        let collection = reader
            .shared
            .mongo
            .database(db)
            .collection::<Document>(coll);
        let planned = self.state.lock().await.remaining(&namespace);
        let ranges = match planned {
            Some(ranges) => ranges,
            None => {
                let boundaries = self.boundaries(&collection).await?;
                let mut state = self.state.lock().await;
                state.plan(&namespace, &boundaries);
                state.remaining(&namespace).unwrap_or_default()
            }
        };
        if ranges.is_empty() {
            return Ok(true);
        }
        tracing::info!(pipeline = %reader.shared.config.name, namespace = %namespace, ranges = ranges.len(), "copying existing documents");
        // Only the progress estimate needs the count: without it the copy goes on.
        let total = match collection.estimated_document_count().await {
            Ok(count) => Some(count),
            Err(error) => {
                tracing::debug!(pipeline = %reader.shared.config.name, namespace = %namespace, %error, "no document count: the copy's progress has no total");
                None
            }
        };
        reader.shared.copies.start(&namespace, total);
        let workers = ranges
            .into_iter()
            .map(|(index, range)| self.copy_range(db, coll, &namespace, &collection, index, range));
        let finished = try_join_all(workers).await?;
        let complete = finished.into_iter().all(|done| done);
        if complete {
            reader.shared.copies.finished(&namespace);
        }
        Ok(complete)
    }

    /// The `_id`s where the collection's ranges start (all but the first range).
    async fn boundaries(
        &self,
        collection: &mongodb::Collection<Document>,
    ) -> Result<Vec<Bson>, SourceError> {
        let reader = self.reader;
        let parallelism = reader.shared.config.copy_existing_parallelism;
        if parallelism <= 1 {
            return Ok(Vec::new());
        }
        let count = collection
            .estimated_document_count()
            .await
            .map_err(reader.mongo_error("counting documents to copy"))?;
        let mut boundaries: Vec<Bson> = Vec::new();
        for position in copy::split_positions(count, parallelism) {
            let found = collection
                .aggregate(vec![
                    doc! { "$sort": { "_id": 1 } },
                    doc! { "$skip": i64::try_from(position).unwrap_or(i64::MAX) },
                    doc! { "$limit": 1 },
                    doc! { "$project": { "_id": 1 } },
                ])
                .await
                .map_err(reader.mongo_error("splitting the copy"))?
                .try_next()
                .await
                .map_err(reader.mongo_error("splitting the copy"))?;
            if let Some(id) = found.and_then(|d| d.get("_id").cloned()) {
                if boundaries.last() != Some(&id) {
                    boundaries.push(id);
                }
            }
        }
        Ok(boundaries)
    }

    /// Copies one range; `false` when the reader was stopped meanwhile.
    async fn copy_range(
        &self,
        db: &str,
        coll: &str,
        namespace: &str,
        collection: &mongodb::Collection<Document>,
        index: usize,
        range: copy::RangeCopy,
    ) -> Result<bool, SourceError> {
        let reader = self.reader;
        let filter = range
            .remaining_filter()
            .map_err(|reason| SourceError::Checkpoint {
                namespace: reader.namespace().to_owned(),
                reason,
            })?;
        let mut stages = vec![filter, doc! { "$sort": { "_id": 1 } }];
        stages.extend(self.user_stages.iter().cloned());
        // A user's stages may drop or reorder `_id`s: then only whole ranges count.
        let track_ids = self.user_stages.is_empty();
        let mut cursor = collection
            .aggregate(stages)
            .await
            .map_err(reader.mongo_error("copying existing documents"))?;
        let pipeline = &reader.shared.config.name;
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let mut batch_documents = 0;
        let mut last_id = None;
        while let Some(document) = cursor
            .try_next()
            .await
            .map_err(reader.mongo_error("copying existing documents"))?
        {
            if reader.stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
            reader.progress.advanced();
            let id = document.get("_id").cloned().unwrap_or(Bson::Null);
            if track_ids {
                last_id = Some(id.clone());
            }
            let event = doc! {
                "_id": { "_id": id.clone(), "copyingData": true },
                "operationType": "insert",
                "ns": { "db": db, "coll": coll },
                "documentKey": { "_id": id },
                "fullDocument": document,
            };
            if let Some(record) = reader.record(event)? {
                batch_bytes += record.value.as_ref().map_or(0, Vec::len);
                batch.push(record);
            }
            reader.shared.metrics.document_copied(pipeline, namespace);
            batch_documents += 1;
            if batch.len() >= COPY_BATCH_DOCUMENTS || batch_bytes >= COPY_BATCH_BYTES {
                reader
                    .shared
                    .copies
                    .copied(namespace, std::mem::take(&mut batch_documents));
                self.publish(
                    namespace,
                    index,
                    std::mem::take(&mut batch),
                    last_id.take(),
                    false,
                )
                .await?;
                batch_bytes = 0;
            }
        }
        reader.shared.copies.copied(namespace, batch_documents);
        self.publish(namespace, index, batch, last_id, true).await?;
        Ok(true)
    }

    /// Hands copied records to the producer with the copy's progress including them. The
    /// progress is updated and sent under one lock, so the producer sees the snapshots of
    /// all workers in the order they were taken.
    async fn publish(
        &self,
        namespace: &str,
        index: usize,
        records: Vec<OutgoingRecord>,
        last_id: Option<Bson>,
        done: bool,
    ) -> Result<(), SourceError> {
        let mut state = self.state.lock().await;
        state.advance(namespace, index, last_id.as_ref(), done);
        let position = self.start_token.clone().map(|token| Position {
            token,
            copy: Some(Arc::new(state.clone())),
        });
        self.reader.send(records, position).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unconvertible_event_becomes_a_dead_letter_that_keeps_every_type() {
        let event = doc! {
            "_id": { "_data": "T1" },
            "operationType": "insert",
            "documentKey": { "_id": 7_i64 },
            "fullDocument": { "_id": 7_i64, "d": bson::Decimal128::from_bytes([1; 16]) },
        };
        let record = unconvertible(
            "db.c".into(),
            "db.c { \"_id\": 7 }".into(),
            event.get("documentKey").cloned(),
            event.clone(),
            "encoding BSON: too deep",
        );
        assert_eq!(record.topic, "db.c");
        assert_eq!(
            record.failure.as_deref(),
            Some("converting the event: encoding BSON: too deep")
        );
        assert_eq!(
            record.key.as_deref(),
            Some(br#"{"_id":{"$numberLong":"7"}}"#.as_slice())
        );
        let value: serde_json::Value =
            serde_json::from_slice(record.value.as_deref().unwrap_or_default()).unwrap_or_default();
        let back = Bson::try_from(value).ok();
        assert_eq!(
            back,
            Some(Bson::Document(event)),
            "canonical JSON round-trips"
        );
        // A key that is not a document is wrapped as `{_id: ...}`.
        let plain = unconvertible("t".into(), "o".into(), Some(Bson::Int32(1)), doc! {}, "x");
        assert_eq!(
            plain.key.as_deref(),
            Some(br#"{"_id":{"$numberInt":"1"}}"#.as_slice())
        );
    }

    /// `{ns: {db: "d", coll: "c"}, s: <"ab" then the byte 0xff>}`: valid BSON, not UTF-8.
    fn event_with_a_broken_string() -> RawDocumentBuf {
        let mut raw = RawDocumentBuf::new();
        let mut ns = RawDocumentBuf::new();
        ns.append("db", "d");
        ns.append("coll", "c");
        raw.append("ns", ns);
        raw.append("s", "abc");
        let mut bytes = raw.into_bytes();
        let at = bytes
            .windows(3)
            .position(|w| w == b"abc")
            .unwrap_or_default();
        bytes[at + 2] = 0xff;
        RawDocumentBuf::from_bytes(bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn an_event_that_does_not_decode_is_dead_lettered_raw_or_stops_the_pipeline() {
        let raw = event_with_a_broken_string();
        let error = Document::try_from(raw.as_ref())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!error.is_empty(), "the test event must not decode");
        let config = crate::config::load_str(
            "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"h:1\"\n[[source]]\nname = \"s\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let source = &config.sources[0];
        let topics = TopicMapper::new(source).unwrap_or_else(|e| panic!("{e}"));
        let dead = undecodable(
            &raw,
            &error,
            &topics,
            &ErrorsConfig {
                tolerance: Tolerance::All,
                dead_letter_topic: Some("dlq".into()),
                ..ErrorsConfig::default()
            },
        );
        let Ok(Some(record)) = dead else {
            panic!("expected a dead letter, got {dead:?}")
        };
        assert_eq!(record.topic, "d.c");
        assert_eq!(record.value.as_deref(), Some(raw.as_bytes()));
        assert!(record
            .failure
            .as_deref()
            .is_some_and(|f| f.starts_with("decoding the event: ")));
        let stopped = undecodable(&raw, &error, &topics, &ErrorsConfig::default());
        assert!(
            matches!(&stopped, Err(SourceError::Format { origin, .. }) if origin.starts_with("d.c ")),
            "{stopped:?}"
        );
    }
}
