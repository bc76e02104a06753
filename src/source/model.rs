//! What the parts of a source pipeline hand each other: the readers' identities and the
//! records they publish. Plain data, imported by the readers, the producer and the ledger
//! alike, so none of them imports another for its types.

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
}
