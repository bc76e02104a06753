//! What a sink pipeline moves: a Kafka record once decoded ([`SinkRecord`]), the write it
//! becomes ([`WriteOp`]) and why a record could not become one ([`RecordError`]).
//!
//! The path of one record: `decode` (bytes → [`SinkRecord`]) → with a CDC handler, `cdc`
//! (change event → [`WriteOp`]); otherwise `id` (the `_id`), `process` (projections,
//! renames, Kafka metadata) and `write_model` (document → [`WriteOp`]). Partition writers
//! batch the ops into bulk writes.

use std::fmt;
use std::ops::Range;

use bson::{Bson, Document, RawArrayBuf, RawBson, RawBsonRef, RawDocument, RawDocumentBuf};

/// A Kafka record with its key and value decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkRecord {
    /// The topic the record was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The record's timestamp, milliseconds since the epoch, when it has one.
    pub timestamp: Option<i64>,
    /// The key: a document (JSON/BSON keys), a string (`key_format = "string"`) or any other
    /// JSON value; `None` when the record has no key.
    pub key: Option<Bson>,
    /// The value; `None` for a tombstone (null value).
    pub value: Option<Document>,
}

impl SinkRecord {
    /// `topic/partition@offset`, for logs and errors.
    pub fn position(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// One write against one collection.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Insert the document.
    Insert(Document),
    /// Replace the document matching `filter` (inserting `replacement` when none does and
    /// `upsert` is set).
    Replace {
        /// Which document.
        filter: Document,
        /// The new document.
        replacement: Document,
        /// Insert when nothing matches.
        upsert: bool,
    },
    /// Update the document matching `filter`.
    Update {
        /// Which document.
        filter: Document,
        /// The change.
        update: UpdateSpec,
        /// Insert when nothing matches.
        upsert: bool,
    },
    /// Delete the document matching `filter`.
    Delete {
        /// Which document.
        filter: Document,
    },
}

impl WriteOp {
    /// The filter that identifies the document written, `None` for an insert. Two ops with
    /// different filters touch different documents when both filters are on `_id` only.
    pub fn filter(&self) -> Option<&Document> {
        match self {
            Self::Insert(_) => None,
            Self::Replace { filter, .. }
            | Self::Update { filter, .. }
            | Self::Delete { filter } => Some(filter),
        }
    }

    /// The `_id` of the document written, when the op names exactly one.
    pub fn document_id(&self) -> Option<&Bson> {
        match self {
            Self::Insert(doc) => doc.get("_id"),
            Self::Replace { filter, .. }
            | Self::Update { filter, .. }
            | Self::Delete { filter } => filter.get("_id").filter(|_| filter.len() == 1),
        }
    }
}

/// A write as a bulk command carries it: its documents raw BSON, encoded once, moved (never
/// copied) from the record's value into the statement.
#[derive(Debug, Clone, PartialEq)]
pub enum RawWrite {
    /// Insert the document.
    Insert(RawDocumentBuf),
    /// Replace the document matching `filter`.
    Replace {
        /// Which document.
        filter: RawDocumentBuf,
        /// The new document.
        replacement: RawDocumentBuf,
        /// Insert when nothing matches.
        upsert: bool,
    },
    /// Update the document matching `filter`.
    Update {
        /// Which document.
        filter: RawDocumentBuf,
        /// Update operators (a document) or an aggregation pipeline (an array).
        update: RawBson,
        /// Insert when nothing matches.
        upsert: bool,
    },
    /// Delete the document matching `filter`.
    Delete {
        /// Which document.
        filter: RawDocumentBuf,
    },
}

impl RawWrite {
    /// The raw form of `op`: where a write is built as a [`Document`] (CDC replay, business
    /// keys, tombstones), this is the one place it is encoded.
    pub fn encode(op: &WriteOp) -> Result<Self, RecordError> {
        let raw = |doc: &Document| {
            RawDocumentBuf::from_document(doc)
                .map_err(|e| RecordError::new(Stage::Write, format!("cannot encode as BSON: {e}")))
        };
        Ok(match op {
            WriteOp::Insert(doc) => Self::Insert(raw(doc)?),
            WriteOp::Replace {
                filter,
                replacement,
                upsert,
            } => Self::Replace {
                filter: raw(filter)?,
                replacement: raw(replacement)?,
                upsert: *upsert,
            },
            WriteOp::Update {
                filter,
                update,
                upsert,
            } => Self::Update {
                filter: raw(filter)?,
                update: match update {
                    UpdateSpec::Operators(doc) => RawBson::Document(raw(doc)?),
                    UpdateSpec::Pipeline(stages) => {
                        let mut array = RawArrayBuf::new();
                        for stage in stages {
                            array.push(raw(stage)?);
                        }
                        RawBson::Array(array)
                    }
                },
                upsert: *upsert,
            },
            WriteOp::Delete { filter } => Self::Delete {
                filter: raw(filter)?,
            },
        })
    }

    /// The filter that identifies the document written, `None` for an insert.
    pub fn filter(&self) -> Option<&RawDocument> {
        match self {
            Self::Insert(_) => None,
            Self::Replace { filter, .. }
            | Self::Update { filter, .. }
            | Self::Delete { filter } => Some(filter),
        }
    }

    /// The `_id` of the document written, when the write names exactly one, as the bytes of
    /// a one-field document holding it: two writes with equal keys name the same document.
    pub fn document_id(&self) -> Option<Vec<u8>> {
        let (doc, filter) = match self {
            Self::Insert(doc) => (doc.as_ref(), false),
            Self::Replace { filter, .. }
            | Self::Update { filter, .. }
            | Self::Delete { filter } => (filter.as_ref(), true),
        };
        let mut id = None;
        let mut fields = 0;
        for field in doc.iter() {
            let (key, value) = field.ok()?;
            fields += 1;
            if key == "_id" {
                id = Some(value);
            }
        }
        // A filter on more than `_id` may match no document at all: not one to reorder.
        if filter && fields != 1 {
            return None;
        }
        let mut key = RawDocumentBuf::new();
        key.append_ref("", id?);
        Some(key.into_bytes())
    }

    /// `insert`, `replace`, `update` or `delete`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Insert(_) => "insert",
            Self::Replace { .. } => "replace",
            Self::Update { .. } => "update",
            Self::Delete { .. } => "delete",
        }
    }
}

/// The second argument of an update: update operators, or an aggregation pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateSpec {
    /// `{"$set": {...}, "$unset": {...}}`.
    Operators(Document),
    /// `[{"$set": ...}, ...]`, for changes operators cannot say (truncated arrays).
    Pipeline(Vec<Document>),
}

impl UpdateSpec {
    /// The value of the `u` field of an `update` command statement.
    pub fn to_bson(&self) -> Bson {
        match self {
            Self::Operators(doc) => Bson::Document(doc.clone()),
            Self::Pipeline(stages) => {
                Bson::Array(stages.iter().cloned().map(Bson::Document).collect())
            }
        }
    }
}

/// The step at which a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The key or value bytes are not what `key_format`/`value_format` say.
    Decode,
    /// The target namespace could not be read from the record.
    Namespace,
    /// The `_id` could not be made.
    Id,
    /// Projection, rename or metadata.
    Process,
    /// The change event could not be replayed.
    Cdc,
    /// The write model could not be built from the record.
    WriteModel,
    /// The document is larger than MongoDB accepts.
    Size,
    /// MongoDB refused the write.
    Write,
}

impl Stage {
    /// Every stage, in the order a record goes through them.
    pub const ALL: [Stage; 8] = [
        Self::Decode,
        Self::Namespace,
        Self::Id,
        Self::Process,
        Self::Cdc,
        Self::WriteModel,
        Self::Size,
        Self::Write,
    ];

    /// The name used in dead-letter headers, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Namespace => "namespace",
            Self::Id => "id",
            Self::Process => "process",
            Self::Cdc => "cdc",
            Self::WriteModel => "write_model",
            Self::Size => "size",
            Self::Write => "write",
        }
    }
}

/// Why one record cannot be written. The message names the offending field or value; the
/// caller adds the record's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// Where it failed.
    pub stage: Stage,
    /// What is wrong, naming the field or value.
    pub message: String,
    /// The record may convert later (a schema registry that did not answer): it is neither
    /// dead-lettered nor fatal; the pipeline restarts at it with backoff.
    pub transient: bool,
}

impl RecordError {
    /// An error at `stage`.
    pub fn new(stage: Stage, message: impl Into<String>) -> Self {
        Self {
            stage,
            message: message.into(),
            transient: false,
        }
    }

    /// An error at `stage` that may not recur when the record is converted again.
    pub fn transient(stage: Stage, message: impl Into<String>) -> Self {
        Self {
            transient: true,
            ..Self::new(stage, message)
        }
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stage.as_str(), self.message)
    }
}

impl std::error::Error for RecordError {}

pub use crate::codec::extjson::read::MAX_NESTING_DEPTH;

/// An empty raw document with room for `capacity` bytes, so that appending to it does not
/// grow it.
pub fn raw_with_capacity(capacity: usize) -> RawDocumentBuf {
    let mut bytes = Vec::with_capacity(capacity);
    bytes.extend_from_slice(&5i32.to_le_bytes());
    bytes.push(0);
    RawDocumentBuf::from_bytes(bytes).unwrap_or_default()
}

/// `{_id: id}`, in a buffer of its size (a document id's bytes are known; other ids are small,
/// a string's text aside).
pub fn id_document(id: RawBsonRef<'_>) -> RawDocumentBuf {
    // The document's length, the element's type, name and NUL, its value, the closing NUL.
    let value_len = match id {
        RawBsonRef::Document(doc) => doc.as_bytes().len(),
        RawBsonRef::String(text) => 4 + text.len() + 1,
        _ => 16,
    };
    let mut one = raw_with_capacity(4 + 1 + 4 + value_len + 1);
    one.append_ref("_id", id);
    one
}

/// The elements of `value`, each with where it lies in `value.as_bytes()` (its type, its key
/// and the key's NUL, its value), so that a kept element is copied as it is.
pub fn element_spans(
    value: &RawDocument,
) -> impl Iterator<Item = Result<(bson::raw::RawElement<'_>, Range<usize>), bson::raw::Error>> + '_
{
    // The elements start after the document's length.
    let mut start = 4;
    value.iter_elements().map(move |element| {
        let element = element?;
        let end = start + 1 + element.key().len() + 1 + element.len();
        let span = start..end;
        start = end;
        Ok((element, span))
    })
}

/// MongoDB's largest document, 16 MiB.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
