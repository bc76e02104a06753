//! The change-stream reader actor: one per watched namespace. It opens the change stream
//! (from a checkpoint, or by the startup mode), copies existing documents when asked,
//! converts events to records and hands them to the producer, awaiting the bounded mailbox,
//! so a slow Kafka stops it pulling from MongoDB.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bson::{doc, Bson, Document, Timestamp};
use futures_util::TryStreamExt;
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use mongodb::options::{ChangeStreamOptions, FullDocumentBeforeChangeType, FullDocumentType};
use tokio::sync::watch;

use super::format::{Conversion, Converted};
use super::producer::{OutgoingRecord, ProduceBatch, ReaderId, RecordProducer};
use super::topic::TopicMapper;
use super::SourceError;
use crate::config::{FullDocument, FullDocumentBeforeChange, SourceConfig};
use crate::ops::metrics::Metrics;

/// MongoDB's error codes for a resume point that is gone from the oplog.
const HISTORY_LOST: &[i32] = &[136, 280, 286];

/// What one reader watches.
#[derive(Debug, Clone)]
pub enum Watched {
    /// Every database.
    Deployment,
    /// One database (optionally only collections matching a regex).
    Database {
        /// The database.
        db: String,
        /// Only collections whose names match.
        collection_regex: Option<String>,
    },
    /// One collection.
    Collection {
        /// The database.
        db: String,
        /// The collection.
        coll: String,
    },
}

impl Watched {
    /// The readers of a source pipeline: one per collection, or one for the database or
    /// deployment.
    pub fn of(config: &SourceConfig) -> Vec<Watched> {
        match (&config.database, &config.collection) {
            (Some(db), Some(colls)) => colls
                .names()
                .into_iter()
                .map(|coll| Watched::Collection {
                    db: db.clone(),
                    coll: coll.to_owned(),
                })
                .collect(),
            (Some(db), None) => vec![Watched::Database {
                db: db.clone(),
                collection_regex: config.collection_regex.clone(),
            }],
            (None, _) => vec![Watched::Deployment],
        }
    }

    /// The namespace naming this reader in checkpoints, logs and metrics.
    pub fn namespace(&self) -> String {
        match self {
            Self::Deployment => "*".to_owned(),
            Self::Database {
                db,
                collection_regex: None,
            } => db.clone(),
            Self::Database {
                db,
                collection_regex: Some(re),
            } => format!("{db}./{re}/"),
            Self::Collection { db, coll } => format!("{db}.{coll}"),
        }
    }
}

/// Where a reader starts.
#[derive(Debug, Clone)]
pub enum StartAt {
    /// After this token (a checkpoint).
    Token(ResumeToken),
    /// At the newest change.
    Latest,
    /// At this cluster time (seconds).
    Time(u32),
    /// Copy the existing documents, then follow changes from when the copy began.
    CopyExisting,
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

/// The reader actor.
pub struct ChangeStreamReader {
    id: ReaderId,
    watched: Watched,
    start: StartAt,
    shared: Arc<ReaderContext>,
    supervisor: Recipient<ReaderFailed>,
    stop: Arc<AtomicBool>,
    finished: watch::Sender<bool>,
}

impl ChangeStreamReader {
    /// A reader of `watched`, starting at `start`.
    pub fn new(
        id: ReaderId,
        watched: Watched,
        start: StartAt,
        shared: Arc<ReaderContext>,
        supervisor: Recipient<ReaderFailed>,
    ) -> Self {
        Self {
            id,
            watched,
            start,
            shared,
            supervisor,
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

/// The reading itself, kept out of the actor so it is plain async code.
struct ReadLoop {
    id: ReaderId,
    watched: Watched,
    shared: Arc<ReaderContext>,
    stop: Arc<AtomicBool>,
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
            let history_lost = matches!(&*source.kind, mongodb::error::ErrorKind::Command(c) if HISTORY_LOST.contains(&c.code));
            if history_lost {
                SourceError::HistoryLost {
                    namespace: self.namespace().to_owned(),
                    source,
                }
            } else {
                SourceError::Mongo {
                    namespace: self.namespace().to_owned(),
                    what,
                    source,
                }
            }
        }
    }

    fn options(&self, start: &StartAt) -> ChangeStreamOptions {
        let config = &self.shared.config;
        let mut options = ChangeStreamOptions::default();
        options.full_document = match config.full_document {
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
            StartAt::Token(token) => options.start_after = Some(token.clone()),
            StartAt::Time(secs) => {
                options.start_at_operation_time = Some(Timestamp {
                    time: *secs,
                    increment: 0,
                })
            }
            StartAt::Latest | StartAt::CopyExisting => {}
        }
        options
    }

    fn stages(&self) -> Result<Vec<Document>, SourceError> {
        let mut stages = Vec::new();
        if let Watched::Database {
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

    async fn open(&self, start: &StartAt) -> Result<ChangeStream<Document>, SourceError> {
        let mongo = &self.shared.mongo;
        let options = self.options(start);
        let stages = self.stages()?;
        let opened = match &self.watched {
            Watched::Deployment => mongo.watch().pipeline(stages).with_options(options).await,
            Watched::Database { db, .. } => {
                mongo
                    .database(db)
                    .watch()
                    .pipeline(stages)
                    .with_options(options)
                    .await
            }
            Watched::Collection { db, coll } => {
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
            .map(ChangeStream::with_type::<Document>)
            .map_err(self.mongo_error("opening the change stream"))
    }

    async fn send(
        &self,
        records: Vec<OutgoingRecord>,
        token: Option<ResumeToken>,
    ) -> Result<(), SourceError> {
        let batch = ProduceBatch {
            reader: self.id.clone(),
            records,
            token,
        };
        match self.shared.producer.send(batch).await {
            Ok(result) => result,
            Err(_) => Err(SourceError::ProducerGone {
                namespace: self.namespace().to_owned(),
            }),
        }
    }

    /// Converts one event; `Ok(None)` when nothing is published for it.
    fn record(&self, event: Document) -> Result<Option<OutgoingRecord>, SourceError> {
        // `ns` is on every event MongoDB emits; where a server leaves it out, the watched
        // namespace stands in.
        let ns = event.get_document("ns").ok();
        let (watched_db, watched_coll) = match &self.watched {
            Watched::Collection { db, coll } => (Some(db.as_str()), Some(coll.as_str())),
            Watched::Database { db, .. } => (Some(db.as_str()), None),
            Watched::Deployment => (None, None),
        };
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
        match self.shared.conversion.convert(event) {
            Ok(Converted::Record { key, value }) => Ok(Some(OutgoingRecord {
                topic,
                key,
                value,
                origin,
            })),
            Ok(Converted::Skip) => Ok(None),
            Err(source) => Err(SourceError::Format { origin, source }),
        }
    }

    async fn run(self, start: StartAt) -> Result<(), SourceError> {
        let mut stream = self.open(&start).await?;
        if let StartAt::CopyExisting = start {
            self.copy_existing().await?;
            // Only now may a checkpoint be stored: before, a restart must copy again.
            self.send(Vec::new(), stream.resume_token()).await?;
        }
        tracing::info!(pipeline = %self.shared.config.name, namespace = %self.namespace(), "change stream open");
        let heartbeat = self.shared.config.heartbeat_interval;
        let mut last_publish = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            if !stream.is_alive() {
                // After an invalidate (drop, rename) the stream ends; start after it, so a
                // collection created again under the name is followed too.
                let token = stream.resume_token();
                tracing::info!(namespace = %self.namespace(), "change stream invalidated; reopening");
                stream = self
                    .open(&token.map_or(StartAt::Latest, StartAt::Token))
                    .await?;
                continue;
            }
            let next = stream
                .next_if_any()
                .await
                .map_err(self.mongo_error("reading the change stream"))?;
            match next {
                Some(event) => {
                    self.shared
                        .metrics
                        .event_read(&self.shared.config.name, self.namespace());
                    let token = stream.resume_token();
                    let records = self.record(event)?.into_iter().collect();
                    self.send(records, token).await?;
                    last_publish = Instant::now();
                }
                None => {
                    // Idle: the post-batch token moves the checkpoint without any record.
                    let mut records = Vec::new();
                    if heartbeat.is_some_and(|every| last_publish.elapsed() >= every) {
                        records.push(self.heartbeat(stream.resume_token().as_ref())?);
                        last_publish = Instant::now();
                    }
                    let token = stream.resume_token();
                    if token.is_some() || !records.is_empty() {
                        self.send(records, token).await?;
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
        Ok(OutgoingRecord {
            topic: config.heartbeat_topic.clone(),
            key: Some(encode(&key)?),
            value: Some(encode(&value)?),
            origin: format!("{} heartbeat", self.namespace()),
        })
    }

    /// The collections a copy covers.
    async fn collections_to_copy(&self) -> Result<Vec<(String, String)>, SourceError> {
        let mongo = &self.shared.mongo;
        let mut namespaces = Vec::new();
        let dbs = match &self.watched {
            Watched::Collection { db, coll } => {
                namespaces.push((db.clone(), coll.clone()));
                Vec::new()
            }
            Watched::Database { db, .. } => vec![db.clone()],
            Watched::Deployment => mongo
                .list_database_names()
                .await
                .map_err(self.mongo_error("listing databases"))?,
        };
        let coll_regex = match &self.watched {
            Watched::Database {
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
        Ok(namespaces)
    }

    /// Publishes every existing document as an insert event marked `copyingData`.
    async fn copy_existing(&self) -> Result<(), SourceError> {
        let stages = match &self.shared.config.copy_existing_pipeline {
            Some(text) => super::super::config::parse_pipeline(text).map_err(|reason| {
                SourceError::Config {
                    namespace: self.namespace().to_owned(),
                    reason,
                }
            })?,
            None => Vec::new(),
        };
        let started = Instant::now();
        let mut copied = 0u64;
        for (db, coll) in self.collections_to_copy().await? {
            let collection = self
                .shared
                .mongo
                .database(&db)
                .collection::<Document>(&coll);
            let mut cursor = collection
                .aggregate(stages.clone())
                .await
                .map_err(self.mongo_error("copying existing documents"))?;
            while let Some(document) = cursor
                .try_next()
                .await
                .map_err(self.mongo_error("copying existing documents"))?
            {
                if self.stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                let id = document.get("_id").cloned().unwrap_or(Bson::Null);
                let event = doc! {
                    "_id": { "_id": id.clone(), "copyingData": true },
                    "operationType": "insert",
                    "ns": { "db": &db, "coll": &coll },
                    "documentKey": { "_id": id },
                    "fullDocument": document,
                };
                let records = self.record(event)?.into_iter().collect();
                self.send(records, None).await?;
                copied += 1;
            }
        }
        tracing::info!(pipeline = %self.shared.config.name, namespace = %self.namespace(), documents = copied, elapsed = ?started.elapsed(), "copied existing documents");
        Ok(())
    }
}
