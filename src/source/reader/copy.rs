//! The copy of existing documents (`startup_mode = "copy_existing"`): each collection split
//! into `_id` ranges by the plan of [`crate::source::copy_plan`], one worker per range at once.
//! Each worker publishes its documents as insert events marked `copyingData`, in batches
//! that carry the copy's progress for the checkpoint, so a restart continues the copy.

use std::sync::Arc;
use std::time::Instant;

use bson::{doc, Bson, Document, RawBson, RawBsonRef, RawDocument, RawDocumentBuf};
use futures_util::future::try_join_all;
use futures_util::TryStreamExt;
use mongodb::change_stream::event::ResumeToken;
use mongodb::Collection;

use super::read_loop::ReadLoop;
use super::records::copied_event;
use crate::config::{ErrorsConfig, Tolerance};
use crate::source::copy_plan::{self as copy, CopyCursor, RangeCopy};
use crate::source::error::SourceError;
use crate::source::format::FormatError;
use crate::source::model::{OutgoingRecord, Position, Scope};

/// Copied documents per batch handed to the producer, at most.
const COPY_BATCH_DOCUMENTS: usize = 256;
/// Bytes of copied records per batch handed to the producer, at most.
const COPY_BATCH_BYTES: usize = 1024 * 1024;

/// One copy of existing documents under way: the reader it publishes through and the
/// progress its workers share.
pub(super) struct Copier<'a> {
    reader: &'a ReadLoop,
    state: tokio::sync::Mutex<CopyCursor>,
    start_token: Option<ResumeToken>,
}

/// The collection a worker copies a range of.
struct Target<'a> {
    db: &'a str,
    coll: &'a str,
    /// `db.coll`.
    namespace: String,
    collection: Collection<Document>,
}

/// A batch of copied records on its way to the producer.
struct Batch {
    records: Vec<OutgoingRecord>,
    bytes: usize,
    documents: u64,
    /// The last `_id` in it, when `_id`s are tracked.
    last_id: Option<RawBson>,
}

impl Batch {
    fn new() -> Self {
        Self {
            records: Vec::new(),
            bytes: 0,
            documents: 0,
            last_id: None,
        }
    }

    fn full(&self) -> bool {
        self.records.len() >= COPY_BATCH_DOCUMENTS || self.bytes >= COPY_BATCH_BYTES
    }
}

/// The `_id` of a copied document, or why it does not decode (a string that is not UTF-8,
/// which MongoDB stores as it is given): such an `_id` can be neither published as an event
/// nor kept as the copy's position.
fn copied_id(document: &RawDocument) -> Result<RawBsonRef<'_>, String> {
    let id = document
        .get("_id")
        .map_err(|e| e.to_string())?
        .unwrap_or(RawBsonRef::Null);
    Bson::try_from(id.to_raw_bson()).map_err(|e| e.to_string())?;
    Ok(id)
}

/// The dead letter of a copied document whose `_id` does not decode (its raw bytes, with
/// `errors.tolerance = "all"` and a dead letter topic), or the error that stops the pipeline,
/// naming the namespace and the `_id` (read leniently). Not transient: the same document
/// fails the same way at every restart.
fn undecodable_id(
    document: &RawDocument,
    namespace: &str,
    reason: &str,
    topic: String,
    errors: &ErrorsConfig,
) -> Result<OutgoingRecord, SourceError> {
    let shown = bson::from_slice::<bson::serde_helpers::Utf8LossyDeserialization<Document>>(
        document.as_bytes(),
    )
    .ok()
    .and_then(|d| d.0.get("_id").map(ToString::to_string))
    .unwrap_or_else(|| "(unreadable)".to_owned());
    let origin = format!("{namespace} a copied document with `_id` {shown}");
    let reason = format!("the copied document's `_id` does not decode: {reason}");
    if errors.tolerance == Tolerance::All && errors.dead_letter_topic.is_some() {
        return Ok(OutgoingRecord {
            value: Some(document.as_bytes().to_vec()),
            failure: Some(reason),
            ..OutgoingRecord::new(topic, None, None, origin)
        });
    }
    Err(SourceError::Format {
        origin,
        source: FormatError::Decode(reason),
    })
}

impl<'a> Copier<'a> {
    /// Publishes every existing document the reader's scope covers, continuing from
    /// `progress`. Every batch carries the copy's progress at `start_token` (where the
    /// change stream began) for the checkpoint. Answers `false` when the reader was stopped
    /// meanwhile.
    pub async fn run(
        reader: &'a ReadLoop,
        progress: CopyCursor,
        start_token: Option<ResumeToken>,
    ) -> Result<bool, SourceError> {
        let started = Instant::now();
        let copier = Copier {
            reader,
            state: tokio::sync::Mutex::new(progress),
            start_token,
        };
        for (db, coll) in copier.collections().await? {
            if !copier.copy_collection(&db, &coll).await? {
                return Ok(false);
            }
        }
        tracing::info!(pipeline = %reader.shared.config.name, namespace = %reader.namespace(), elapsed = ?started.elapsed(), "copied existing documents");
        Ok(true)
    }

    /// The collections a copy covers, in copy order.
    async fn collections(&self) -> Result<Vec<(String, String)>, SourceError> {
        let reader = self.reader;
        let mongo = &reader.shared.mongo;
        let settings = &reader.shared.settings;
        let mut namespaces = Vec::new();
        let (dbs, coll_regex) = match &reader.watched {
            Scope::Collection { db, coll } => {
                namespaces.push((db.clone(), coll.clone()));
                (Vec::new(), None)
            }
            Scope::Database { db, .. } => (vec![db.clone()], settings.collection_regex.as_ref()),
            Scope::Deployment => (
                mongo
                    .list_database_names()
                    .await
                    .map_err(reader.mongo_error("listing databases"))?,
                None,
            ),
        };
        for db in dbs {
            if matches!(db.as_str(), "admin" | "config" | "local") {
                continue;
            }
            let names = mongo
                .database(&db)
                .list_collection_names()
                .await
                .map_err(reader.mongo_error("listing collections"))?;
            for coll in names {
                let excluded = matches!(reader.watched, Scope::Database { .. })
                    && settings.collection_exclude.contains(&coll);
                if excluded
                    || coll.starts_with("system.")
                    || coll_regex.is_some_and(|re| !re.is_match(&coll))
                {
                    continue;
                }
                namespaces.push((db.clone(), coll));
            }
        }
        namespaces.retain(|(db, coll)| {
            settings
                .copy_namespaces
                .as_ref()
                .is_none_or(|re| re.is_match(&format!("{db}.{coll}")))
        });
        copy::copy_order(&mut namespaces);
        Ok(namespaces)
    }

    /// Copies what is left of `db.coll`; `false` when the reader was stopped meanwhile.
    async fn copy_collection(&self, db: &str, coll: &str) -> Result<bool, SourceError> {
        let reader = self.reader;
        let target = Target {
            db,
            coll,
            namespace: format!("{db}.{coll}"),
            collection: reader.shared.mongo.database(db).collection(coll),
        };
        let namespace = target.namespace.as_str();
        let planned = self.state.lock().await.remaining(namespace);
        let ranges = match planned {
            Some(ranges) => ranges,
            None => {
                let boundaries = self.boundaries(&target.collection).await?;
                let mut state = self.state.lock().await;
                state.plan(namespace, &boundaries);
                state.remaining(namespace).unwrap_or_default()
            }
        };
        if ranges.is_empty() {
            return Ok(true);
        }
        tracing::info!(pipeline = %reader.shared.config.name, namespace = %namespace, ranges = ranges.len(), "copying existing documents");
        // Only the progress estimate needs the count: without it the copy goes on.
        let total = match target.collection.estimated_document_count().await {
            Ok(count) => Some(count),
            Err(error) => {
                tracing::debug!(pipeline = %reader.shared.config.name, namespace = %namespace, %error, "no document count: the copy's progress has no total");
                None
            }
        };
        reader.shared.copies.start(namespace, total);
        let workers = ranges
            .into_iter()
            .map(|(index, range)| self.copy_range(&target, index, range));
        let finished = try_join_all(workers).await?;
        let complete = finished.into_iter().all(|done| done);
        if complete {
            reader.shared.copies.finished(namespace);
        }
        Ok(complete)
    }

    /// The `_id`s where the collection's ranges start (all but the first range).
    async fn boundaries(
        &self,
        collection: &Collection<Document>,
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
                .allow_disk_use(reader.shared.config.copy_existing_allow_disk_use)
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

    /// Copies range `index` of `target`; `false` when the reader was stopped meanwhile.
    async fn copy_range(
        &self,
        target: &Target<'_>,
        index: usize,
        range: RangeCopy,
    ) -> Result<bool, SourceError> {
        let reader = self.reader;
        let filter = range
            .remaining_filter()
            .map_err(|reason| SourceError::Checkpoint {
                namespace: reader.namespace().to_owned(),
                reason,
            })?;
        let user_stages = &reader.shared.settings.copy_stages;
        let mut stages = vec![filter, doc! { "$sort": { "_id": 1 } }];
        stages.extend(user_stages.iter().cloned());
        // A user's stages may drop or reorder `_id`s: then only whole ranges count.
        let track_ids = user_stages.is_empty();
        let mut cursor = target
            .collection
            .aggregate(stages)
            .allow_disk_use(reader.shared.config.copy_existing_allow_disk_use)
            .await
            .map_err(reader.mongo_error("copying existing documents"))?
            // Raw: the event is built and written from the bytes, and a document that does
            // not decode is dead-lettered or named instead of failing the cursor.
            .with_type::<RawDocumentBuf>();
        let pipeline = &reader.shared.config.name;
        let namespace = target.namespace.as_str();
        let mut batch = Batch::new();
        while let Some(document) = cursor
            .try_next()
            .await
            .map_err(reader.mongo_error("copying existing documents"))?
        {
            if reader.stopping() {
                return Ok(false);
            }
            reader.progress.advanced();
            let id = match copied_id(&document) {
                Ok(id) => id,
                Err(reason) => {
                    // Never a position to resume from: the copy goes on past it (dead
                    // letter) or the pipeline stops, naming it; it is not read again.
                    let topic = reader.shared.topics.topic(target.db, Some(target.coll));
                    let errors = &reader.shared.config.errors;
                    let dead = undecodable_id(&document, namespace, &reason, topic, errors)?;
                    tracing::warn!(pipeline = %pipeline, %namespace, %reason, "a copied document's `_id` does not decode; dead-lettered");
                    batch.records.push(dead);
                    batch.documents += 1;
                    continue;
                }
            };
            if track_ids {
                batch.last_id = Some(id.to_raw_bson());
            }
            let event = copied_event(target.db, target.coll, id, &document);
            let builder = reader.records();
            let record = tokio::select! {
                biased;
                record = builder.event(&event) => record?,
                // A stop does not wait for the schema registry: the copy resumes at its
                // last acknowledged `_id`.
                () = reader.stopped() => return Ok(false),
            };
            if let Some(record) = record {
                batch.bytes += record.value.as_ref().map_or(0, Vec::len);
                batch.records.push(record);
            }
            reader.shared.metrics.document_copied(pipeline, namespace);
            reader
                .shared
                .metrics
                .source_bytes_read(pipeline, namespace, document.as_bytes().len());
            batch.documents += 1;
            if batch.full() {
                let full = std::mem::replace(&mut batch, Batch::new());
                self.publish(namespace, index, full, false).await?;
            }
        }
        self.publish(namespace, index, batch, true).await?;
        Ok(true)
    }

    /// Hands copied records to the producer with the copy's progress including them. The
    /// progress is updated and sent under one lock, so the producer sees the snapshots of
    /// all workers in the order they were taken.
    async fn publish(
        &self,
        namespace: &str,
        index: usize,
        batch: Batch,
        done: bool,
    ) -> Result<(), SourceError> {
        self.reader.shared.copies.copied(namespace, batch.documents);
        let last_id =
            batch
                .last_id
                .map(Bson::try_from)
                .transpose()
                .map_err(|e| SourceError::Checkpoint {
                    namespace: namespace.to_owned(),
                    reason: format!("the `_id` of a copied document does not decode: {e}"),
                })?;
        let mut state = self.state.lock().await;
        state.advance(namespace, index, last_id.as_ref(), done);
        let position = self.start_token.clone().map(|token| Position {
            token,
            copy: Some(Arc::new(state.clone())),
            snapshot: None,
        });
        self.reader.send(batch.records, position).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{_id: <"ab" then the bytes 0xff 0xfe>, n: 2}`: valid BSON, its `_id` not UTF-8.
    fn document_with_a_broken_id() -> RawDocumentBuf {
        let mut raw = RawDocumentBuf::new();
        raw.append("_id", "abXY");
        raw.append("n", 2);
        let mut bytes = raw.into_bytes();
        let at = bytes
            .windows(4)
            .position(|w| w == b"abXY")
            .unwrap_or_else(|| panic!("the placeholder"));
        bytes[at + 2] = 0xff;
        bytes[at + 3] = 0xfe;
        RawDocumentBuf::from_bytes(bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_copied_id_that_does_not_decode_is_dead_lettered_or_stops_the_pipeline_naming_it() {
        let broken = document_with_a_broken_id();
        let reason = copied_id(&broken).expect_err("not UTF-8");
        let good =
            RawDocumentBuf::from_document(&doc! {"_id": 7}).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(copied_id(&good).ok(), Some(RawBsonRef::Int32(7)));

        let tolerant = ErrorsConfig {
            tolerance: Tolerance::All,
            dead_letter_topic: Some("dlq".into()),
            ..ErrorsConfig::default()
        };
        let dead = undecodable_id(&broken, "d.c", &reason, "d.c".into(), &tolerant)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dead.value.as_deref(), Some(broken.as_bytes()));
        assert!(
            dead.origin
                .starts_with("d.c a copied document with `_id` \"ab"),
            "{}",
            dead.origin
        );
        assert!(dead.failure.is_some_and(|f| f.contains("does not decode")));

        let strict = ErrorsConfig::default();
        let stop = undecodable_id(&broken, "d.c", &reason, "d.c".into(), &strict)
            .expect_err("stops the pipeline");
        let text = stop.to_string();
        assert!(
            text.contains("d.c") && text.contains("`_id` \"ab"),
            "{text}"
        );
        // Not a restart: the same document fails the same way every time.
        assert_eq!(
            crate::source::policy::classify(&stop),
            crate::source::policy::ErrorClass::Unfixable
        );
    }
}
