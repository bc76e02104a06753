//! What the parts of a source pipeline hand each other: what a reader watches and where it
//! starts, its identity and position, and the records it publishes. Plain data, imported by
//! the readers, the producer, the ledger and the supervisor alike, so none of them imports
//! another for its types.

use std::sync::Arc;

use mongodb::change_stream::event::ResumeToken;

use super::copy_plan::CopyCursor;
use super::reader::snapshot::SnapshotCursor;
use crate::config::SourceConfig;

/// Which reader a batch comes from; a restarted reader has a new generation, so late
/// acknowledgements of its predecessor are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReaderId {
    /// The reader's namespace.
    pub namespace: String,
    /// Incremented at every start of the reader.
    pub generation: u64,
}

/// One record to publish.
#[derive(Debug, Clone)]
pub struct OutgoingRecord {
    /// The topic.
    pub topic: String,
    /// The encoded key.
    pub key: Option<Vec<u8>>,
    /// The encoded value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Names the record in errors and dead letters: namespace and document key.
    pub origin: String,
    /// Why the event could not become this record: it goes to the dead letter topic, with
    /// `key` (when it could be encoded) and `value` (the event as canonical extended JSON,
    /// when it could be encoded). Only set with `errors.tolerance = "all"`.
    pub failure: Option<String>,
}

impl OutgoingRecord {
    /// A record to publish as it is.
    pub fn new(
        topic: String,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        origin: String,
    ) -> Self {
        Self {
            topic,
            key,
            value,
            origin,
            failure: None,
        }
    }

    /// Its key and value bytes, as sent to Kafka whole.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len)
    }
}

/// Where a reader is: after its stream's resume token and, while it copies existing
/// documents, how far the copy got (the token is then where the stream began).
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// The change stream's resume token.
    pub token: ResumeToken,
    /// The copy's progress, while one runs.
    pub copy: Option<Arc<CopyCursor>>,
    /// The snapshots on demand under way: what is left of them.
    pub snapshot: Option<Arc<SnapshotCursor>>,
}

impl Position {
    /// A position in the change stream, no copy running.
    pub fn stream(token: ResumeToken) -> Self {
        Self {
            token,
            copy: None,
            snapshot: None,
        }
    }
}

/// Where a reader starts.
#[derive(Debug, Clone)]
pub enum StartAt {
    /// At a position: after its token, continuing its copy if one was running.
    Resume(Position),
    /// At the newest change.
    Latest,
    /// At this cluster time (seconds, and the operation within that second).
    Time(bson::Timestamp),
    /// Copy the existing documents, then follow changes from when the copy began.
    CopyExisting,
}

impl StartAt {
    /// A short name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Resume(Position { copy: Some(_), .. }) => "checkpoint, copying",
            Self::Resume(_) => "checkpoint",
            Self::Latest => "latest",
            Self::Time(_) => "timestamp",
            Self::CopyExisting => "copy_existing",
        }
    }
}

/// What one reader watches: the scope of its change stream.
#[derive(Debug, Clone)]
pub enum Scope {
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

impl Scope {
    /// The readers of a source pipeline: one per collection, or one for the database or
    /// deployment.
    pub fn of(config: &SourceConfig) -> Vec<Scope> {
        match (&config.database, &config.collection) {
            (Some(db), Some(colls)) => colls
                .names()
                .into_iter()
                .map(|coll| Scope::Collection {
                    db: db.clone(),
                    coll: coll.to_owned(),
                })
                .collect(),
            (Some(db), None) => vec![Scope::Database {
                db: db.clone(),
                collection_regex: config.collection_regex.clone(),
            }],
            (None, _) => vec![Scope::Deployment],
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

    /// Whether this scope's change stream carries the events of `namespace` (`db.coll`);
    /// a database's collection regex is left to the caller.
    pub fn covers(&self, namespace: &str) -> bool {
        let Some((db, _)) = namespace.split_once('.') else {
            return false;
        };
        match self {
            Self::Deployment => true,
            Self::Database { db: watched, .. } => watched == db,
            Self::Collection { db, coll } => namespace == format!("{db}.{coll}"),
        }
    }

    /// The database and collection an event of this scope belongs to when the event does
    /// not say (`ns` is on every event MongoDB emits).
    pub fn default_ns(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Self::Collection { db, coll } => (Some(db.as_str()), Some(coll.as_str())),
            Self::Database { db, .. } => (Some(db.as_str()), None),
            Self::Deployment => (None, None),
        }
    }
}
