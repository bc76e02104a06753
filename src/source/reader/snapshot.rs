//! Snapshots on demand (`POST /pipelines/<name>/snapshot`, an `execute-snapshot` signal):
//! the copy of chosen collections of a running pipeline, in `_id` chunks interleaved with
//! its change stream, by the watermarks of Netflix's DBLog (as Debezium's incremental
//! snapshots). Pure: the reader ([`super::stream`]) reads the chunks and the stream and asks
//! this module what to emit.
//!
//! The rules of one chunk ([`Window`]):
//! - `low`: the server's operation time taken before the chunk is read; `high`: taken after.
//! - Every stream event of the namespace with a cluster time in `[low, high]` removes its
//!   key from the chunk (a `documentKey`-less event of the namespace, such as a drop, clears
//!   the chunk): the stream itself carries that key's change, and the chunk's row may be
//!   older or newer than it.
//! - The chunk's remaining rows are emitted before the first event with a cluster time past
//!   `high`, or when a read of the stream that began after `high` was taken came back empty
//!   (everything up to `high` was delivered): no event later than the chunk's read is ever
//!   emitted before a row of the chunk it could supersede.
//!
//! Both bounds are inclusive on the dropping side, so an event with a cluster time equal to
//! a watermark is treated as inside the window (on a replica set `operationTime` is the last
//! visible write; on the stand-in it is the next one to come): dropping a key too many is
//! safe, the stream carries it.

use std::collections::{HashSet, VecDeque};

use bson::{Bson, Document, Timestamp};
use serde::{Deserialize, Serialize};

/// A cluster time as one number (seconds in the high half), ordered as MongoDB orders them.
pub fn time(at: Timestamp) -> u64 {
    (u64::from(at.time) << 32) | u64::from(at.increment)
}

/// A key of the chunk: the `_id`'s canonical bytes (`{_id: <value>}` as BSON).
pub type Key = Vec<u8>;

/// The key of an `_id` value.
pub fn key_of(id: &Bson) -> Key {
    let mut document = Document::new();
    document.insert("_id", id.clone());
    bson::to_vec(&document).unwrap_or_default()
}

/// What one chunk's window says about a stream event.
#[derive(Debug, PartialEq)]
pub enum Step<T> {
    /// Emit the event; the window stays open.
    Pass,
    /// Emit these rows of the chunk first, then the event; the window is closed.
    EmitFirst(Vec<T>),
}

/// One chunk between its watermarks.
#[derive(Debug)]
pub struct Window<T> {
    namespace: String,
    low: u64,
    high: u64,
    /// The chunk's rows in `_id` order, with their keys.
    rows: Vec<(Key, T)>,
    /// Keys the stream changed within `[low, high]`.
    changed: HashSet<Key>,
    /// A `documentKey`-less event of the namespace (drop, rename) came within the window.
    cleared: bool,
}

impl<T> Window<T> {
    /// The chunk `rows` of `namespace`, read between the operation times `low` and `high`.
    pub fn new(namespace: &str, low: u64, high: u64, rows: Vec<(Key, T)>) -> Self {
        Self {
            namespace: namespace.to_owned(),
            low,
            high: high.max(low),
            rows,
            changed: HashSet::new(),
            cleared: false,
        }
    }

    /// The chunk's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A stream event of `namespace` (its `_id` key when it has one) at `cluster_time`,
    /// about to be emitted.
    pub fn observe(&mut self, namespace: &str, key: Option<&Key>, cluster_time: u64) -> Step<T> {
        if cluster_time > self.high {
            return Step::EmitFirst(self.close());
        }
        if cluster_time >= self.low && namespace == self.namespace {
            match key {
                Some(key) => {
                    self.changed.insert(key.clone());
                }
                None => self.cleared = true,
            }
        }
        Step::Pass
    }

    /// A read of the stream that began after `high` was taken returned nothing: every event
    /// up to `high` was observed. The rows to emit now.
    pub fn caught_up(&mut self) -> Vec<T> {
        self.close()
    }

    fn close(&mut self) -> Vec<T> {
        let rows = std::mem::take(&mut self.rows);
        if self.cleared {
            return Vec::new();
        }
        rows.into_iter()
            .filter(|(key, _)| !self.changed.contains(key))
            .map(|(_, row)| row)
            .collect()
    }
}

pub use crate::ops::control::SnapshotRequest;

/// The snapshot of one namespace under way: where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceSnapshot {
    /// `db.coll`.
    pub namespace: String,
    /// Only the documents matching this query.
    pub filter: Option<Document>,
    /// The last `_id` read, the next chunk starts after it.
    pub after: Option<Bson>,
}

impl NamespaceSnapshot {
    /// The query of the next chunk. `$expr` compares across BSON types (a plain
    /// `{_id: {$gt: x}}` only matches `_id`s of `x`'s type), as the copy's ranges do.
    pub fn chunk_filter(&self) -> Document {
        let mut parts = Vec::new();
        if let Some(after) = &self.after {
            parts.push(Bson::Document(
                bson::doc! {"$expr": {"$gt": ["$_id", {"$literal": after.clone()}]}},
            ));
        }
        if let Some(filter) = &self.filter {
            parts.push(Bson::Document(filter.clone()));
        }
        match parts.len() {
            0 => Document::new(),
            1 => match parts.pop() {
                Some(Bson::Document(only)) => only,
                _ => Document::new(),
            },
            _ => bson::doc! {"$and": parts},
        }
    }
}

/// What a checkpoint keeps of a reader's snapshots: the namespaces left, in order, each with
/// its query and the last `_id` emitted (as canonical extended JSON), so a restart goes on
/// after the last chunk emitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotCursor {
    /// The snapshots left, the one under way first.
    pub namespaces: Vec<SavedSnapshot>,
}

/// One namespace of [`SnapshotCursor`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSnapshot {
    /// `db.coll`.
    pub namespace: String,
    /// The query, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<serde_json::Value>,
    /// The last `_id` emitted, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
}

/// The snapshots a reader has to run, in the order asked.
#[derive(Debug, Default)]
pub struct SnapshotQueue {
    queue: VecDeque<NamespaceSnapshot>,
}

impl SnapshotQueue {
    /// Adds the namespaces of `request` (one already queued is not queued twice).
    pub fn add(&mut self, request: &SnapshotRequest) {
        for namespace in &request.namespaces {
            if self.queue.iter().any(|s| &s.namespace == namespace) {
                continue;
            }
            self.queue.push_back(NamespaceSnapshot {
                namespace: namespace.clone(),
                filter: request.filter.clone(),
                after: None,
            });
        }
    }

    /// The snapshot to read the next chunk of.
    pub fn current(&self) -> Option<&NamespaceSnapshot> {
        self.queue.front()
    }

    /// The chunk just read ended at `last` (`None`: it was empty, the namespace is done).
    /// Answers the namespace finished, if one did.
    pub fn advance(&mut self, last: Option<Bson>) -> Option<String> {
        match last {
            Some(last) => {
                if let Some(current) = self.queue.front_mut() {
                    current.after = Some(last);
                }
                None
            }
            None => self.queue.pop_front().map(|s| s.namespace),
        }
    }

    /// What a checkpoint keeps of the queue; `None` when nothing is queued.
    pub fn progress(&self) -> Option<SnapshotCursor> {
        if self.queue.is_empty() {
            return None;
        }
        let namespaces = self
            .queue
            .iter()
            .map(|s| SavedSnapshot {
                namespace: s.namespace.clone(),
                filter: s
                    .filter
                    .clone()
                    .map(|f| Bson::Document(f).into_canonical_extjson()),
                after: s.after.clone().map(Bson::into_canonical_extjson),
            })
            .collect();
        Some(SnapshotCursor { namespaces })
    }

    /// The queue a checkpoint kept, or why it does not read back.
    pub fn restore(progress: &SnapshotCursor) -> Result<Self, String> {
        let mut queue = VecDeque::new();
        for saved in &progress.namespaces {
            let filter = match saved.filter.clone().map(Bson::try_from).transpose() {
                Ok(None) => None,
                Ok(Some(Bson::Document(filter))) => Some(filter),
                Ok(Some(_)) => {
                    return Err(format!("{}: the filter is not a document", saved.namespace))
                }
                Err(e) => return Err(format!("{}: the filter: {e}", saved.namespace)),
            };
            let after = saved
                .after
                .clone()
                .map(Bson::try_from)
                .transpose()
                .map_err(|e| format!("{}: the last `_id`: {e}", saved.namespace))?;
            queue.push_back(NamespaceSnapshot {
                namespace: saved.namespace.clone(),
                filter,
                after,
            });
        }
        Ok(Self { queue })
    }

    /// Drops every snapshot; answers the namespaces dropped.
    pub fn cancel(&mut self) -> Vec<String> {
        self.queue.drain(..).map(|s| s.namespace).collect()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Where snapshot commands wait for the readers of a pipeline (shared by the pipeline's
/// supervisor, which receives them, and its readers, which take the namespaces they watch).
#[derive(Debug, Default)]
pub struct SnapshotInbox {
    state: std::sync::Mutex<InboxState>,
}

#[derive(Debug, Default)]
struct InboxState {
    requests: Vec<SnapshotRequest>,
    cancels: u64,
}

impl SnapshotInbox {
    fn state(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A snapshot is asked for.
    pub fn push(&self, request: SnapshotRequest) {
        self.state().requests.push(request);
    }

    /// Every snapshot, queued or under way, is cancelled.
    pub fn cancel(&self) {
        let mut state = self.state();
        state.requests.clear();
        state.cancels += 1;
    }

    /// How many cancels there were: a reader that saw fewer drops what it runs.
    pub fn cancels(&self) -> u64 {
        self.state().cancels
    }

    /// Takes the namespaces `covers` says are the caller's, leaving the others.
    pub fn take(&self, covers: impl Fn(&str) -> bool) -> Vec<SnapshotRequest> {
        let mut state = self.state();
        let mut taken = Vec::new();
        for request in &mut state.requests {
            let (mine, others): (Vec<String>, Vec<String>) =
                request.namespaces.drain(..).partition(|n| covers(n));
            request.namespaces = others;
            if !mine.is_empty() {
                taken.push(SnapshotRequest {
                    namespaces: mine,
                    filter: request.filter.clone(),
                });
            }
        }
        state.requests.retain(|r| !r.namespaces.is_empty());
        taken
    }
}

/// The namespaces of `namespaces` the pipeline `config`'s change streams do not follow (not
/// `db.coll`, another database or collection, left out by `collection_regex` or
/// `collection_exclude`): a snapshot of them is refused.
pub fn unwatched<'a>(
    config: &crate::config::SourceConfig,
    namespaces: &'a [String],
) -> Vec<&'a str> {
    let scopes = crate::source::model::Scope::of(config);
    let regex = config
        .collection_regex
        .as_deref()
        .and_then(|re| regex::Regex::new(re).ok());
    namespaces
        .iter()
        .filter(|namespace| {
            let Some((db, coll)) = namespace.split_once('.') else {
                return true;
            };
            if db.is_empty() || coll.is_empty() {
                return true;
            }
            let database_wide = config.database.is_some() && config.collection.is_none();
            let left_out = database_wide
                && (regex.as_ref().is_some_and(|re| !re.is_match(coll))
                    || config.collection_exclude.iter().any(|c| c == coll));
            left_out || !scopes.iter().any(|scope| scope.covers(namespace))
        })
        .map(String::as_str)
        .collect()
}

/// Why a signal document is not a snapshot command.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("signal {id}: {reason}")]
pub struct SignalError {
    /// The signal's `_id`.
    pub id: String,
    /// What is wrong.
    pub reason: String,
}

/// What a signal document asks.
#[derive(Debug, PartialEq)]
pub enum Signal {
    /// `execute-snapshot`.
    Execute(SnapshotRequest),
    /// `stop-snapshot`.
    Stop,
    /// Another type, not ours (Debezium has `log`, `pause-snapshot`, ...): ignored.
    Other(String),
}

/// Reads a signal document by Debezium's convention: `{type: "execute-snapshot", data:
/// {"data-collections": ["db.coll"], "type": "incremental", "additional-conditions":
/// [{"data-collection": "db.coll", "filter": "<query as JSON>"}]}}`; `data` may also be
/// that document as a JSON string, and a filter a document. `stop-snapshot` cancels.
pub fn parse_signal(signal: &Document) -> Result<Signal, SignalError> {
    let id = signal
        .get("_id")
        .map_or_else(|| "(no _id)".to_owned(), ToString::to_string);
    let fail = |reason: String| SignalError {
        id: id.clone(),
        reason,
    };
    let kind = signal
        .get_str("type")
        .map_err(|_| fail("no `type` string".to_owned()))?;
    match kind {
        "execute-snapshot" => {}
        "stop-snapshot" => return Ok(Signal::Stop),
        other => return Ok(Signal::Other(other.to_owned())),
    }
    let data = match signal.get("data") {
        Some(Bson::Document(data)) => data.clone(),
        Some(Bson::String(json)) => {
            let value: serde_json::Value =
                serde_json::from_str(json).map_err(|e| fail(format!("`data` is not JSON: {e}")))?;
            Document::try_from(
                value
                    .as_object()
                    .cloned()
                    .ok_or_else(|| fail("`data` is not a JSON object".to_owned()))?,
            )
            .map_err(|e| fail(format!("`data`: {e}")))?
        }
        _ => return Err(fail("no `data` document".to_owned())),
    };
    if let Ok(kind) = data.get_str("type") {
        if !kind.eq_ignore_ascii_case("incremental") {
            return Err(fail(format!(
                "snapshot type `{kind}`: only `incremental` is supported"
            )));
        }
    }
    let namespaces: Vec<String> = data
        .get_array("data-collections")
        .map_err(|_| fail("no `data-collections` array".to_owned()))?
        .iter()
        .map(|n| {
            n.as_str()
                .map(|s| s.trim_matches('"').to_owned())
                .ok_or_else(|| fail("a `data-collections` entry is not a string".to_owned()))
        })
        .collect::<Result<_, _>>()?;
    if namespaces.is_empty() {
        return Err(fail("`data-collections` is empty".to_owned()));
    }
    let mut filter = None;
    if let Ok(conditions) = data.get_array("additional-conditions") {
        for condition in conditions {
            let Some(condition) = condition.as_document() else {
                return Err(fail(
                    "an `additional-conditions` entry is not a document".into(),
                ));
            };
            filter = Some(query(condition.get("filter")).map_err(fail)?);
        }
    }
    if let Some(single) = data.get("additional-condition") {
        filter = Some(query(Some(single)).map_err(fail)?);
    }
    Ok(Signal::Execute(SnapshotRequest { namespaces, filter }))
}

/// A filter given as a document or as a JSON (extended JSON) string.
fn query(value: Option<&Bson>) -> Result<Document, String> {
    match value {
        Some(Bson::Document(query)) => Ok(query.clone()),
        Some(Bson::String(json)) => {
            let value: serde_json::Value =
                serde_json::from_str(json).map_err(|e| format!("a filter is not JSON: {e}"))?;
            match Bson::try_from(value) {
                Ok(Bson::Document(query)) => Ok(query),
                Ok(_) => Err("a filter is not a JSON object".to_owned()),
                Err(e) => Err(format!("a filter: {e}")),
            }
        }
        _ => Err("a condition without a `filter`".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;
    use proptest::prelude::*;

    use super::*;

    fn k(id: i32) -> Key {
        key_of(&Bson::Int32(id))
    }

    fn chunk(ids: &[i32]) -> Vec<(Key, i32)> {
        ids.iter().map(|&i| (k(i), i)).collect()
    }

    #[test]
    fn keys_changed_between_the_watermarks_are_dropped_and_the_rest_emitted_before_the_first_later_event(
    ) {
        let mut window = Window::new("d.c", 10, 20, chunk(&[1, 2, 3, 4]));
        // Before the low watermark: the chunk already holds its effect.
        assert_eq!(window.observe("d.c", Some(&k(1)), 9), Step::Pass);
        assert_eq!(window.observe("d.c", Some(&k(2)), 10), Step::Pass);
        assert_eq!(window.observe("d.c", Some(&k(3)), 20), Step::Pass);
        // Another namespace's keys do not count.
        assert_eq!(window.observe("d.other", Some(&k(4)), 15), Step::Pass);
        assert_eq!(
            window.observe("d.c", Some(&k(4)), 21),
            Step::EmitFirst(vec![1, 4])
        );
    }

    #[test]
    fn a_stream_caught_up_past_the_high_watermark_emits_the_chunk() {
        let mut window = Window::new("d.c", 10, 20, chunk(&[1, 2]));
        assert_eq!(window.observe("d.c", Some(&k(2)), 12), Step::Pass);
        assert_eq!(window.caught_up(), vec![1]);
    }

    #[test]
    fn a_drop_within_the_window_empties_the_chunk() {
        let mut window = Window::new("d.c", 10, 20, chunk(&[1, 2]));
        assert_eq!(window.observe("d.c", None, 15), Step::Pass);
        assert_eq!(window.caught_up(), Vec::<i32>::new());
    }

    #[test]
    fn the_queue_runs_namespaces_in_order_from_after_the_last_id() {
        let mut queue = SnapshotQueue::default();
        queue.add(&SnapshotRequest {
            namespaces: vec!["d.a".into(), "d.b".into(), "d.a".into()],
            filter: Some(doc! {"x": 1}),
        });
        assert_eq!(
            queue.current().map(|s| s.chunk_filter()),
            Some(doc! {"x": 1})
        );
        assert_eq!(queue.advance(Some(Bson::Int32(7))), None);
        assert_eq!(
            queue.current().map(|s| s.chunk_filter()),
            Some(doc! {"$and": [{"$expr": {"$gt": ["$_id", {"$literal": 7}]}}, {"x": 1}]})
        );
        assert_eq!(queue.advance(None), Some("d.a".to_owned()));
        assert_eq!(queue.current().map(|s| s.namespace.as_str()), Some("d.b"));
        assert_eq!(queue.advance(Some(Bson::Int64(9))), None);
        let saved = queue.progress().expect("queued");
        let text = serde_json::to_string(&saved).unwrap_or_default();
        let back: SnapshotCursor = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let restored = SnapshotQueue::restore(&back).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(restored.current(), queue.current(), "{text}");
        assert_eq!(queue.cancel(), vec!["d.b".to_owned()]);
        assert_eq!(queue.progress(), None);
        assert!(queue.is_empty());
    }

    #[test]
    fn readers_take_the_namespaces_they_watch_and_a_cancel_is_counted() {
        let inbox = SnapshotInbox::default();
        inbox.push(SnapshotRequest {
            namespaces: vec!["d.a".into(), "e.b".into()],
            filter: None,
        });
        let taken = inbox.take(|n| n.starts_with("d."));
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].namespaces, ["d.a"]);
        assert_eq!(inbox.take(|n| n.starts_with("e."))[0].namespaces, ["e.b"]);
        assert!(inbox.take(|_| true).is_empty());
        assert_eq!(inbox.cancels(), 0);
        inbox.cancel();
        assert_eq!(inbox.cancels(), 1);
    }

    #[test]
    fn only_namespaces_the_streams_follow_can_be_snapshotted() {
        let config = |extra: &str| {
            crate::config::load_str(
                &format!("[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"k:9092\"\n[[source]]\nname = \"p\"\n{extra}\n"),
                std::path::Path::new("t.toml"),
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .sources
            .remove(0)
        };
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let asked = names(&["d.a", "d.b", "e.a", "nodot", "d."]);
        let one = config("database = \"d\"\ncollection = \"a\"");
        assert_eq!(unwatched(&one, &asked), ["d.b", "e.a", "nodot", "d."]);
        let database =
            config("database = \"d\"\ncollection_regex = \"^[ab]$\"\ncollection_exclude = [\"b\"]");
        assert_eq!(unwatched(&database, &asked), ["d.b", "e.a", "nodot", "d."]);
        let everything = config("");
        assert_eq!(unwatched(&everything, &asked), ["nodot", "d."]);
    }

    #[test]
    fn signals_are_read_by_debeziums_convention() {
        let execute = doc! {"_id": 1, "type": "execute-snapshot", "data": {
            "data-collections": ["d.a", "\"d.b\""], "type": "incremental",
            "additional-conditions": [{"data-collection": "d.a", "filter": "{\"v\": {\"$gt\": 2}}"}],
        }};
        assert_eq!(
            parse_signal(&execute),
            Ok(Signal::Execute(SnapshotRequest {
                namespaces: vec!["d.a".into(), "d.b".into()],
                filter: Some(doc! {"v": {"$gt": 2}}),
            }))
        );
        let as_json = doc! {"_id": 2, "type": "execute-snapshot",
        "data": "{\"data-collections\": [\"d.a\"]}"};
        assert!(
            matches!(parse_signal(&as_json), Ok(Signal::Execute(r)) if r.namespaces == ["d.a"])
        );
        assert_eq!(
            parse_signal(&doc! {"_id": 3, "type": "stop-snapshot", "data": {}}),
            Ok(Signal::Stop)
        );
        assert_eq!(
            parse_signal(&doc! {"_id": 4, "type": "log"}),
            Ok(Signal::Other("log".into()))
        );
        let blocking = doc! {"_id": 5, "type": "execute-snapshot",
        "data": {"data-collections": ["d.a"], "type": "blocking"}};
        let error = parse_signal(&blocking).expect_err("refused");
        assert!(error.to_string().contains("signal 5") && error.to_string().contains("blocking"));
    }

    /// One write: a key and the cluster time it happened at.
    fn writes() -> impl Strategy<Value = Vec<(i32, u64)>> {
        prop::collection::vec((0..8_i32, 1..60_u64), 0..40).prop_map(|mut writes| {
            writes.sort_by_key(|w| w.1);
            writes
        })
    }

    proptest! {
        /// The invariant: a key the stream changed after the chunk was read (at any time
        /// from the low watermark on) is never emitted from the chunk after that change,
        /// and what is emitted is emitted before every event later than the chunk.
        #[test]
        fn a_key_changed_by_the_stream_after_the_chunk_read_is_never_emitted_after_it(
            writes in writes(),
            low in 1..60_u64,
            span in 0..20_u64,
            caught_up_at in prop::option::of(0..40_usize),
        ) {
            let high = low + span;
            let rows = chunk(&[0, 1, 2, 3, 4, 5, 6, 7]);
            let mut window = Window::new("d.c", low, high, rows);
            let mut emitted: Option<(usize, Vec<i32>)> = None;
            for (at, (key, time)) in writes.iter().enumerate() {
                // The stream may be read to its end (past `high`) before this event.
                if emitted.is_none() && caught_up_at == Some(at) && *time > high {
                    emitted = Some((at, window.caught_up()));
                }
                if emitted.is_none() {
                    if let Step::EmitFirst(rows) = window.observe("d.c", Some(&k(*key)), *time) {
                        emitted = Some((at, rows));
                    }
                }
            }
            let Some((at, rows)) = emitted else { return Ok(()) };
            for (before, (key, time)) in writes.iter().enumerate() {
                if rows.contains(key) {
                    // A key emitted from the chunk was not changed at or after `low` by
                    // an event emitted before the rows ...
                    prop_assert!(before >= at || *time < low, "key {key} changed at {time} in [{low}, {high}] and still emitted");
                    // ... and every event emitted after the rows is later than the chunk.
                    prop_assert!(before < at || *time > high, "event at {time} <= high {high} emitted after the chunk");
                }
            }
        }
    }
}
