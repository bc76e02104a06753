//! Change event → record: the topic, the key and value in the pipeline's format, the
//! origin naming the event in errors, and the dead letter of an event that cannot be
//! converted (with `errors.tolerance = "all"`); heartbeats. No I/O: the stream loop and the
//! copy workers hand what comes out to the producer.

use std::time::Duration;

use bson::{Bson, RawBsonRef, RawDocument, RawDocumentBuf};
use mongodb::change_stream::event::ResumeToken;

use super::ReaderContext;
use crate::codec::extjson::write::{self as extjson, Mode};
use crate::codec::schema_registry;
use crate::config::SourceConfig;
use crate::config::{ErrorsConfig, Tolerance};
use crate::ops::metrics::{Metrics, SKIPPED_NO_DOCUMENT};
use crate::source::error::SourceError;
use crate::source::format::{Conversion, Converted, FormatError};
use crate::source::liveness::now_millis;
use crate::source::model::{OutgoingRecord, Scope};
use crate::source::topic::TopicMapper;

/// Builds the records of one reader's events: what of the pipeline's context they need,
/// borrowed, so it is built (and tested) without a MongoDB client or a producer.
pub(super) struct Records<'a> {
    /// The pipeline configuration.
    pub config: &'a SourceConfig,
    /// Events → records.
    pub conversion: &'a Conversion,
    /// Namespace → topic.
    pub topics: &'a TopicMapper,
    /// Metrics.
    pub metrics: &'a Metrics,
    /// What the reader watches (the namespace of events that do not name theirs).
    pub watched: &'a Scope,
    /// The reader's namespace.
    pub namespace: &'a str,
}

impl<'a> Records<'a> {
    /// The record builder of a reader of `watched` in the pipeline `shared`.
    pub fn of(shared: &'a ReaderContext, watched: &'a Scope, namespace: &'a str) -> Self {
        Self {
            config: &shared.config,
            conversion: &shared.conversion,
            topics: &shared.topics,
            metrics: &shared.metrics,
            watched,
            namespace,
        }
    }
}

impl Records<'_> {
    /// The record of an event as the server returned it; `Ok(None)` when nothing is
    /// published for it. An event that does not decode is dead-lettered raw or stops the
    /// pipeline ([`undecodable`]); one that cannot be converted is dead-lettered (with
    /// `errors.tolerance = "all"`) or stops it.
    ///
    /// A conversion that needs the schema registry awaits it (never blocking the thread),
    /// then converts again.
    pub async fn event(&self, event: &RawDocument) -> Result<Option<OutgoingRecord>, SourceError> {
        let converted = schema_registry::fetching(|| self.conversion.convert_raw(event)).await;
        if let Err(FormatError::Decode(reason)) = &converted {
            return undecodable(event, reason, self.topics, &self.config.errors);
        }
        // `ns` is on every event MongoDB emits; where a server leaves it out, the watched
        // namespace stands in.
        let ns = event.get_document("ns").ok();
        let (watched_db, watched_coll) = self.watched.default_ns();
        let db = ns
            .and_then(|n| n.get_str("db").ok())
            .or(watched_db)
            .unwrap_or_default();
        let coll = ns.and_then(|n| n.get_str("coll").ok()).or(watched_coll);
        let key = event.get("documentKey").ok().flatten();
        let named = match key {
            Some(key) => bson::Bson::try_from(key.to_raw_bson()).map_or_else(
                |_| "(a key that does not decode)".to_owned(),
                |k| k.to_string(),
            ),
            None => event.get_str("operationType").unwrap_or("event").to_owned(),
        };
        let origin = match coll {
            Some(coll) => format!("{db}.{coll} {named}"),
            None => format!("{db} {named}"),
        };
        let topic = self.topics.topic(db, coll);
        match converted {
            Ok(Converted::Record { key, value }) => {
                Ok(Some(OutgoingRecord::new(topic, key, value, origin)))
            }
            Ok(Converted::Skip) => {
                tracing::debug!(pipeline = %self.config.name, %origin, "no document to publish; skipped");
                self.metrics
                    .event_skipped(&self.config.name, SKIPPED_NO_DOCUMENT);
                Ok(None)
            }
            Err(source) if source.is_transient() => Err(SourceError::Format { origin, source }),
            Err(source) => {
                let errors = &self.config.errors;
                if errors.tolerance == Tolerance::All && errors.dead_letter_topic.is_some() {
                    let reason = source.to_string();
                    Ok(Some(unconvertible(topic, origin, key, event, &reason)))
                } else {
                    Err(SourceError::Format { origin, source })
                }
            }
        }
    }

    /// The heartbeat record: the pipeline, the namespace and the stream's position.
    pub fn heartbeat(&self, token: Option<&ResumeToken>) -> Result<OutgoingRecord, SourceError> {
        let config = self.config;
        let key = serde_json::json!({ "pipeline": config.name, "namespace": self.namespace });
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
            format!("{} heartbeat", self.namespace),
        ))
    }
}

/// How old a change event is: now minus its wall time (MongoDB 6.0+) or cluster time.
pub fn lag(event: &RawDocument) -> Option<Duration> {
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

/// The insert event a copied document is published as, marked `copyingData`.
pub fn copied_event(
    db: &str,
    coll: &str,
    id: RawBsonRef<'_>,
    document: &RawDocument,
) -> RawDocumentBuf {
    let mut event_id = RawDocumentBuf::new();
    event_id.append_ref("_id", id);
    event_id.append("copyingData", true);
    let mut ns = RawDocumentBuf::new();
    ns.append("db", db);
    ns.append("coll", coll);
    let mut key = RawDocumentBuf::new();
    key.append_ref("_id", id);
    let mut event = RawDocumentBuf::new();
    event.append("_id", event_id);
    event.append("operationType", "insert");
    event.append("ns", ns);
    event.append("documentKey", key);
    event.append_ref("fullDocument", document);
    event
}

/// An event that is valid BSON but not a document the daemon can read (a string that is
/// not UTF-8): dead-lettered as its raw bytes with `errors.tolerance = "all"`, else the error
/// that stops the pipeline, naming it.
pub fn undecodable(
    raw: &RawDocument,
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
        source: FormatError::Decode(reason.to_owned()),
    })
}

/// The dead letter of an event that could not be converted: its key and the event as
/// canonical extended JSON (which holds every BSON type), when they can be encoded at all.
fn unconvertible(
    topic: String,
    origin: String,
    key: Option<RawBsonRef<'_>>,
    event: &RawDocument,
    reason: &str,
) -> OutgoingRecord {
    let key = key.and_then(|key| match key {
        RawBsonRef::Document(doc) => extjson::to_vec(doc, Mode::Canonical).ok(),
        other => {
            let mut wrapped = RawDocumentBuf::new();
            wrapped.append_ref("_id", other);
            extjson::to_vec(&wrapped, Mode::Canonical).ok()
        }
    });
    OutgoingRecord {
        key,
        value: extjson::to_vec(event, Mode::Canonical).ok(),
        failure: Some(format!("converting the event: {reason}")),
        ..OutgoingRecord::new(topic, None, None, origin)
    }
}

#[cfg(test)]
mod tests {
    use bson::{doc, Document};

    use super::*;

    #[test]
    fn an_unconvertible_event_becomes_a_dead_letter_that_keeps_every_type() {
        let event = doc! {
            "_id": { "_data": "T1" },
            "operationType": "insert",
            "documentKey": { "_id": 7_i64 },
            "fullDocument": { "_id": 7_i64, "d": bson::Decimal128::from_bytes([1; 16]) },
        };
        let raw = RawDocumentBuf::from_document(&event).unwrap_or_else(|e| panic!("{e}"));
        let record = unconvertible(
            "db.c".into(),
            "db.c { \"_id\": 7 }".into(),
            raw.get("documentKey").ok().flatten(),
            &raw,
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
        let empty = RawDocumentBuf::new();
        let plain = unconvertible(
            "t".into(),
            "o".into(),
            Some(RawBsonRef::Int32(1)),
            &empty,
            "x",
        );
        assert_eq!(
            plain.key.as_deref(),
            Some(br#"{"_id":{"$numberInt":"1"}}"#.as_slice())
        );
    }

    fn pipeline(extra: &str) -> SourceConfig {
        crate::config::load_str(
            &format!("[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"h:1\"\n[[source]]\nname = \"s\"\n{extra}\n"),
            std::path::Path::new("t.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .sources
        .remove(0)
    }

    /// The whole path of an event the stream returns: raw bytes in, the record out, for an
    /// event that converts, one that does not decode, and one without a document.
    #[tokio::test]
    async fn raw_events_become_records_dead_letters_or_nothing() {
        let config = pipeline(
            "errors = { tolerance = \"all\", dead_letter_topic = \"dlq\" }\npublish_full_document_only = true",
        );
        let conversion = Conversion::for_source(&config, None);
        let whole_events = Conversion {
            full_document_only: false,
            ..conversion.clone()
        };
        let topics = TopicMapper::new(&config).unwrap_or_else(|e| panic!("{e}"));
        let metrics = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        let watched = Scope::Deployment;
        let records = Records {
            config: &config,
            conversion: &conversion,
            topics: &topics,
            metrics: &metrics,
            watched: &watched,
            namespace: "*",
        };
        let insert = RawDocumentBuf::from_document(&doc! {
            "_id": { "_data": "01" },
            "operationType": "insert",
            "ns": { "db": "d", "coll": "c" },
            "documentKey": { "_id": 7 },
            "fullDocument": { "_id": 7, "n": 1 },
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let record = records.event(&insert).await;
        let Ok(Some(record)) = record else {
            panic!("expected a record, got {record:?}")
        };
        assert_eq!(record.topic, "d.c");
        assert_eq!(record.origin, "d.c { \"_id\": 7 }");
        assert_eq!(record.key.as_deref(), Some(br#"{"_id":7}"#.as_slice()));
        assert_eq!(
            record.value.as_deref(),
            Some(br#"{"_id":7,"n":1}"#.as_slice())
        );
        assert!(record.failure.is_none());
        // Valid BSON, not UTF-8, in what is published: dead-lettered raw. (Publishing only
        // `fullDocument`, the rest of the event need not decode.)
        let broken = event_with_a_broken_string();
        let dead = Records {
            conversion: &whole_events,
            ..records
        }
        .event(&broken)
        .await;
        let Ok(Some(dead)) = dead else {
            panic!("expected a dead letter, got {dead:?}")
        };
        assert_eq!(dead.value.as_deref(), Some(broken.as_bytes()));
        assert!(dead
            .failure
            .is_some_and(|f| f.starts_with("decoding the event: ")));
        // A delete has no document to publish: nothing, counted.
        let delete = RawDocumentBuf::from_document(&doc! {
            "_id": { "_data": "02" },
            "operationType": "delete",
            "ns": { "db": "d", "coll": "c" },
            "documentKey": { "_id": 7 },
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let skipped = Records {
            conversion: &conversion,
            ..records
        };
        assert!(matches!(skipped.event(&delete).await, Ok(None)));
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
