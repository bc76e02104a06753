//! The reader's side of snapshots on demand: takes the namespaces its stream watches from the
//! pipeline's [`SnapshotInbox`], reads one chunk at a time between two watermarks (the
//! server's operation time before and after the read) and emits what the chunk's
//! [`Window`] says, when it says. The rules are in [`super::snapshot`]; this is the I/O.

use std::collections::HashSet;
use std::sync::Arc;

use bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use futures_util::TryStreamExt;
use tokio::sync::mpsc;

use super::batching::ReadItem;
use super::read_loop::ReadLoop;
use super::records::copied_event;
use super::snapshot::{key_of, time, Key, SnapshotCursor, SnapshotQueue, Step, Window};
use crate::budget::Held;
use crate::source::error::SourceError;
use crate::source::model::Position;

/// A chunk row: the copied document.
type Row = RawDocumentBuf;

/// What a reader keeps of the snapshots it runs.
#[derive(Default)]
pub(super) struct Snapshots {
    /// The snapshots left; the current one's `after` is the last `_id` emitted.
    queue: SnapshotQueue,
    /// The chunk read and not yet emitted, with its last `_id` and its room in the
    /// pipeline's memory budget.
    window: Option<(Window<Row>, Bson, Held)>,
    cancels: u64,
    started: bool,
    /// The namespaces whose progress `/status` shows.
    announced: HashSet<String>,
}

impl Snapshots {
    /// The snapshots a checkpoint kept (`None`: none).
    pub fn restored(progress: Option<&SnapshotCursor>) -> Result<Self, String> {
        Ok(Self {
            queue: match progress {
                Some(progress) => SnapshotQueue::restore(progress)?,
                None => SnapshotQueue::default(),
            },
            ..Self::default()
        })
    }

    /// `position` carrying what the checkpoint keeps of the snapshots.
    pub fn carried(&self, position: Position) -> Position {
        Position {
            snapshot: self.queue.progress().map(Arc::new),
            ..position
        }
    }
}

/// The namespace, `_id` key and cluster time of a change event, when it has them.
fn event_place(event: &RawDocument) -> Option<(String, Option<Key>, u64)> {
    let at = event.get_timestamp("clusterTime").ok()?;
    let ns = event.get_document("ns").ok()?;
    let namespace = format!(
        "{}.{}",
        ns.get_str("db").ok()?,
        ns.get_str("coll").unwrap_or_default()
    );
    let key = event
        .get_document("documentKey")
        .ok()
        .and_then(|key| key.get("_id").ok().flatten())
        .and_then(|id| Bson::try_from(id.to_raw_bson()).ok())
        .map(|id| key_of(&id));
    Some((namespace, key, time(at)))
}

impl ReadLoop {
    /// Takes new snapshot commands; drops what runs after a cancel.
    /// Answers whether the snapshots changed (taken or cancelled): the checkpoint should
    /// say so at once, so a reader restarted before its next event does not forget them.
    pub(super) fn snapshot_commands(&self, snapshots: &mut Snapshots) -> bool {
        let inbox = &self.shared.snapshots;
        let mut changed = false;
        let cancels = inbox.cancels();
        if !snapshots.started {
            snapshots.started = true;
            snapshots.cancels = cancels;
        }
        if cancels != snapshots.cancels {
            changed = true;
            snapshots.cancels = cancels;
            snapshots.window = None;
            for namespace in snapshots.queue.cancel() {
                snapshots.announced.remove(&namespace);
                tracing::warn!(pipeline = %self.shared.config.name, %namespace, "snapshot cancelled");
                self.shared.snapshot_progress.ended(&namespace, "cancelled");
            }
        }
        for request in inbox.take(|n| self.watched.covers(n)) {
            tracing::info!(pipeline = %self.shared.config.name, namespaces = ?request.namespaces, filter = ?request.filter, "snapshot asked for");
            snapshots.queue.add(&request);
            changed = true;
        }
        changed
    }

    /// The server's operation time now, by MongoDB's reply to opening a change stream on
    /// `db` (a replica set and the stand-in both answer it with `operationTime`).
    async fn operation_time(&self, db: &str, coll: &str) -> Result<u64, SourceError> {
        let database = self.shared.mongo.database(db);
        let reply = database
            .run_command(doc! {
                "aggregate": coll,
                "pipeline": [{"$changeStream": {}}],
                "cursor": {"batchSize": 0},
            })
            .await
            .map_err(self.mongo_error("taking a snapshot watermark"))?;
        if let Ok(id) = reply.get_document("cursor").and_then(|c| c.get_i64("id")) {
            if id != 0 {
                let _ = database
                    .run_command(doc! {"killCursors": coll, "cursors": [id]})
                    .await;
            }
        }
        reply
            .get_timestamp("operationTime")
            .map(time)
            .map_err(|_| SourceError::Checkpoint {
                namespace: format!("{db}.{coll}"),
                reason: "the server's reply has no `operationTime`: snapshots on demand need a replica set".to_owned(),
            })
    }

    /// Reads the next chunk when none is open and a snapshot waits: a window to watch the
    /// stream through; namespaces with nothing left are finished on the way.
    pub(super) async fn next_chunk(&self, snapshots: &mut Snapshots) -> Result<(), SourceError> {
        if snapshots.window.is_some() {
            return Ok(());
        }
        let chunk = i64::from(self.shared.config.snapshot_chunk_size);
        while let Some(current) = snapshots.queue.current().cloned() {
            let Some((db, coll)) = current.namespace.split_once('.') else {
                snapshots.queue.advance(None);
                continue;
            };
            let collection = self.shared.mongo.database(db).collection::<Document>(coll);
            if snapshots.announced.insert(current.namespace.clone()) {
                let total = collection.estimated_document_count().await.ok();
                self.shared
                    .snapshot_progress
                    .start(&current.namespace, total);
            }
            let low = self.operation_time(db, coll).await?;
            let rows: Vec<RawDocumentBuf> = collection
                .find(current.chunk_filter())
                .sort(doc! {"_id": 1})
                .limit(chunk)
                .await
                .map_err(self.mongo_error("reading a snapshot chunk"))?
                .with_type::<RawDocumentBuf>()
                .try_collect()
                .await
                .map_err(self.mongo_error("reading a snapshot chunk"))?;
            let high = self.operation_time(db, coll).await?;
            let mut keyed = Vec::with_capacity(rows.len());
            let mut last = None;
            for row in rows {
                let id = row
                    .get("_id")
                    .ok()
                    .flatten()
                    .and_then(|id| Bson::try_from(id.to_raw_bson()).ok());
                // A document whose `_id` does not decode is left to the stream.
                let Some(id) = id else { continue };
                keyed.push((key_of(&id), row));
                last = Some(id);
            }
            match last {
                None => {
                    if let Some(done) = snapshots.queue.advance(None) {
                        snapshots.announced.remove(&done);
                        self.shared.snapshot_progress.ended(&done, "finished");
                    }
                }
                Some(last) => {
                    // The queue moves past the chunk only once it is emitted: a restart
                    // before reads it again.
                    // The chunk holds its room in the memory budget until it is emitted:
                    // while the budget is spent the reader reads no further.
                    let bytes = keyed.iter().map(|(_, row)| row.as_bytes().len()).sum();
                    self.progress.waiting_for_kafka(true);
                    let held = self.shared.budget.take(bytes, &current.namespace).await;
                    self.progress.waiting_for_kafka(false);
                    let window = Window::new(&current.namespace, low, high, keyed);
                    snapshots.window = Some((window, last, held));
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Before `event` goes out: the chunk's rows when the stream passed its high watermark.
    pub(super) async fn before_event(
        &self,
        snapshots: &mut Snapshots,
        event: &RawDocument,
        items: &mpsc::Sender<ReadItem>,
    ) -> Result<(), SourceError> {
        let Some((window, _, _)) = &mut snapshots.window else {
            return Ok(());
        };
        let Some((namespace, key, at)) = event_place(event) else {
            return Ok(());
        };
        if let Step::EmitFirst(rows) = window.observe(&namespace, key.as_ref(), at) {
            if let Some((window, last, held)) = snapshots.window.take() {
                // The records take their own room as they are queued.
                drop(held);
                self.emit_chunk(window.namespace(), rows, items).await?;
                snapshots.queue.advance(Some(last));
            }
        }
        Ok(())
    }

    /// A read of the stream that began after the high watermark came back empty.
    pub(super) async fn stream_idle(
        &self,
        snapshots: &mut Snapshots,
        items: &mpsc::Sender<ReadItem>,
    ) -> Result<(), SourceError> {
        if let Some((mut window, last, held)) = snapshots.window.take() {
            let rows = window.caught_up();
            drop(held);
            self.emit_chunk(window.namespace(), rows, items).await?;
            snapshots.queue.advance(Some(last));
        }
        Ok(())
    }

    /// Queues the chunk's rows as reads (records shaped as `copy_existing`'s), without a
    /// position: the stream's checkpoint does not move with them.
    async fn emit_chunk(
        &self,
        namespace: &str,
        rows: Vec<Row>,
        items: &mpsc::Sender<ReadItem>,
    ) -> Result<(), SourceError> {
        let Some((db, coll)) = namespace.split_once('.') else {
            return Ok(());
        };
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            let Ok(Some(id)) = row.get("_id") else {
                continue;
            };
            let event = copied_event(db, coll, id, row);
            if let Some(record) = self.records().event(&event).await? {
                records.push(record);
            }
            self.shared
                .metrics
                .document_copied(&self.shared.config.name, namespace);
        }
        self.shared
            .snapshot_progress
            .copied(namespace, rows.len() as u64);
        if records.is_empty() {
            return Ok(());
        }
        self.queue(items, records, None).await
    }
}
