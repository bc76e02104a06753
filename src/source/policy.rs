//! What the supervisor does when a part of a source pipeline fails: one pure decision per
//! failure, from the error's class and the pipeline's configuration. The supervisor carries
//! it out (with backoff); no actor decides for itself.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::error::SourceError;
use crate::config::{Delivery, LostResumePoint, Oversize, SourceConfig};

/// MongoDB's error codes for a resume point that is gone from the oplog.
pub const HISTORY_LOST: &[i32] = &[136, 280, 286];

/// Whether MongoDB's error `code` means the resume point is gone from the oplog, for a
/// stream opened after a fragment of an event MongoDB split (`after_fragment`) or not.
/// MongoDB answers 280 (`ChangeStreamFatalError`) to a fragment's token without
/// `$changeStreamSplitLargeEvent` in the pipeline: the position is there, the stream was
/// opened wrong. A lost position after a fragment is 286, as servers that split events
/// report it (issue 21, item 3).
pub fn history_lost(code: i32, after_fragment: bool) -> bool {
    HISTORY_LOST.contains(&code) && !(after_fragment && code == 280)
}

/// MongoDB's error code for a document (here: a change event) over 16 MiB, which no
/// restart at the same resume token can get past.
pub const EVENT_TOO_LARGE: i32 = 10334;

/// MongoDB's error codes for a refused authentication or a missing privilege.
const MONGO_AUTH: &[i32] = &[13, 18];

/// Kafka's error codes for a producer another one with the same `transactional.id` took
/// over.
const KAFKA_FENCED: &[RDKafkaErrorCode] = &[
    RDKafkaErrorCode::Fenced,
    RDKafkaErrorCode::ProducerFenced,
    RDKafkaErrorCode::InvalidProducerEpoch,
];

/// Kafka's error codes for a refused authentication or authorisation.
const KAFKA_AUTH: &[RDKafkaErrorCode] = &[
    RDKafkaErrorCode::Authentication,
    RDKafkaErrorCode::SaslAuthenticationFailed,
    RDKafkaErrorCode::TopicAuthorizationFailed,
    RDKafkaErrorCode::ClusterAuthorizationFailed,
    RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
];

/// What failed.
#[derive(Debug, Clone, Copy)]
pub enum Failed<'a> {
    /// One reader, with this error.
    Reader(&'a SourceError),
    /// The pipeline's producer, with this error.
    Producer(&'a SourceError),
}

/// Where a restarted reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeAt {
    /// At the newest position Kafka acknowledged (or the checkpoint, or where the reader
    /// first opened): nothing it read is skipped.
    Acknowledged,
    /// At the newest change: what happened meanwhile is gone (logged and counted).
    Latest,
    /// Copy the namespace's documents again, then follow its changes.
    Recopy,
}

/// What the supervisor does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Stop the pipeline for good, saying why: no restart can fix it.
    Fail,
    /// Restart the failed reader (after its backoff); the others keep running.
    RestartReader(ResumeAt),
    /// Restart the whole pipeline (every reader and a new producer, after a backoff).
    RestartPipeline,
}

/// An error as the restart policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The resume point is gone from the oplog.
    HistoryLost,
    /// The same input will fail the same way: configuration, an event that cannot be
    /// converted or published (with `errors.tolerance = "none"`), an event MongoDB cannot
    /// return (10334).
    Unfixable,
    /// Another producer took over the pipeline's `transactional.id`.
    Fenced,
    /// Authentication or authorisation refused (a password or role may be fixed meanwhile).
    Auth,
    /// The network or a server that could not be reached.
    Network,
    /// Anything else: worth a restart.
    Transient,
}

/// The class of `error`.
pub fn classify(error: &SourceError) -> ErrorClass {
    match error {
        SourceError::HistoryLost { .. } => ErrorClass::HistoryLost,
        // A schema registry that did not answer: the same event converts once it answers.
        SourceError::Format { source, .. } if source.is_transient() => ErrorClass::Network,
        SourceError::Config { .. }
        | SourceError::Format { .. }
        | SourceError::TooLarge { .. }
        | SourceError::TopicRefused { .. }
        | SourceError::EventTooLarge { .. }
        | SourceError::SplitResume { .. } => ErrorClass::Unfixable,
        SourceError::Mongo { source, .. } => classify_mongo(source),
        SourceError::Kafka { source, .. }
        | SourceError::Delivery { source, .. }
        | SourceError::Transaction { source, .. } => classify_kafka(source),
        // The reader starts again at its last position, before the first fragment.
        SourceError::Checkpoint { .. }
        | SourceError::Fragments { .. }
        | SourceError::ProducerGone { .. }
        | SourceError::Start(_) => ErrorClass::Transient,
    }
}

fn classify_mongo(error: &mongodb::error::Error) -> ErrorClass {
    use mongodb::error::ErrorKind;
    match &*error.kind {
        ErrorKind::Authentication { .. } => ErrorClass::Auth,
        ErrorKind::Command(command) if MONGO_AUTH.contains(&command.code) => ErrorClass::Auth,
        ErrorKind::Command(command) if HISTORY_LOST.contains(&command.code) => {
            ErrorClass::HistoryLost
        }
        ErrorKind::Command(command) if command.code == EVENT_TOO_LARGE => ErrorClass::Unfixable,
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. } => ErrorClass::Network,
        _ if error.contains_label("ResumableChangeStreamError") => ErrorClass::Network,
        _ => ErrorClass::Transient,
    }
}

fn classify_kafka(error: &KafkaError) -> ErrorClass {
    match error.rdkafka_error_code() {
        Some(code) if KAFKA_FENCED.contains(&code) => ErrorClass::Fenced,
        Some(code) if KAFKA_AUTH.contains(&code) => ErrorClass::Auth,
        // Sent again, the same record is refused again.
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => ErrorClass::Unfixable,
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::NetworkException,
        ) => ErrorClass::Network,
        _ => ErrorClass::Transient,
    }
}

/// What a reader does when MongoDB cannot return the next event whole (error 10334).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooLarge {
    /// Report [`SourceError::EventTooLarge`]: the pipeline stops, saying how to avoid it.
    Fail,
    /// Open the stream again at the same position with `$changeStreamSplitLargeEvent` as
    /// its last stage, put the fragments back together and publish the event through the
    /// `oversize` policy.
    Fragment,
}

/// The restart policy of source pipelines.
pub struct RestartPolicy;

impl RestartPolicy {
    /// What a reader does about an event MongoDB cannot return (10334), its stream already
    /// fetching large events in fragments or not.
    pub fn event_too_large(config: &SourceConfig, fragmenting: bool) -> TooLarge {
        match config.oversize {
            // Fragments that are still too large (a single top-level field over 16 MiB):
            // opening again would meet the same error at the same token.
            _ if fragmenting => TooLarge::Fail,
            Oversize::Fail => TooLarge::Fail,
            Oversize::Skip | Oversize::Split => TooLarge::Fragment,
        }
    }

    /// What to do about `failed` in the pipeline configured by `config`.
    pub fn decide(failed: Failed<'_>, config: &SourceConfig) -> Decision {
        let (error, from_reader) = match failed {
            Failed::Reader(error) => (error, true),
            Failed::Producer(error) => (error, false),
        };
        match classify(error) {
            ErrorClass::Unfixable | ErrorClass::Fenced => Decision::Fail,
            ErrorClass::HistoryLost if from_reader => match config.on_lost_resume_point {
                LostResumePoint::Fail => Decision::Fail,
                LostResumePoint::Latest => Decision::RestartReader(ResumeAt::Latest),
                LostResumePoint::Recopy => Decision::RestartReader(ResumeAt::Recopy),
            },
            // The producer's records may sit in the open transaction of an exactly-once
            // pipeline: only a restart of the whole pipeline (which aborts it) keeps
            // exactly-once.
            _ if !from_reader || config.delivery == Delivery::ExactlyOnce => {
                Decision::RestartPipeline
            }
            _ => Decision::RestartReader(ResumeAt::Acknowledged),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn config(extra: &str) -> SourceConfig {
        let text = format!(
            "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"h:1\"\n[[source]]\nname = \"s\"\n{extra}\n"
        );
        crate::config::load_str(&text, std::path::Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .sources
            .remove(0)
    }

    fn command_error(code: i32) -> mongodb::error::Error {
        let command: mongodb::error::CommandError =
            bson::from_document(bson::doc! { "code": code, "codeName": "X", "errmsg": "x" })
                .unwrap_or_else(|e| panic!("{e}"));
        mongodb::error::ErrorKind::Command(command).into()
    }

    fn mongo(source: mongodb::error::Error) -> SourceError {
        SourceError::Mongo {
            namespace: "db.c".into(),
            what: "reading the change stream",
            source: Box::new(source),
        }
    }

    fn reader(error: &SourceError, config: &SourceConfig) -> Decision {
        RestartPolicy::decide(Failed::Reader(error), config)
    }

    fn producer(error: &SourceError, config: &SourceConfig) -> Decision {
        RestartPolicy::decide(Failed::Producer(error), config)
    }

    #[test]
    fn history_lost_follows_on_lost_resume_point() {
        let lost = SourceError::HistoryLost {
            namespace: "db.c".into(),
            source: Box::new(command_error(286)),
        };
        assert_eq!(reader(&lost, &config("")), Decision::Fail);
        assert_eq!(
            reader(&lost, &config("on_lost_resume_point = \"latest\"")),
            Decision::RestartReader(ResumeAt::Latest)
        );
        assert_eq!(
            reader(&lost, &config("on_lost_resume_point = \"recopy\"")),
            Decision::RestartReader(ResumeAt::Recopy)
        );
        // However it is reported, a lost resume point is one.
        assert_eq!(
            classify(&mongo(command_error(136))),
            ErrorClass::HistoryLost
        );
    }

    /// Issue 21, item 3: after a fragment's token, 280 is a stream opened without the split
    /// stage, not a lost resume point (which `on_lost_resume_point = "latest"` would skip
    /// past, losing changes).
    #[test]
    fn error_280_after_a_fragment_is_no_lost_resume_point() {
        assert!(history_lost(280, false));
        assert!(!history_lost(280, true));
        assert!(history_lost(286, true));
        assert!(history_lost(136, true));
        assert!(!history_lost(10334, false));
        let refused = SourceError::SplitResume {
            namespace: "db.c".into(),
            source: Box::new(command_error(280)),
        };
        assert_eq!(classify(&refused), ErrorClass::Unfixable);
        assert_eq!(
            reader(&refused, &config("on_lost_resume_point = \"latest\"")),
            Decision::Fail
        );
    }

    #[test]
    fn an_event_mongodb_cannot_return_stops_the_pipeline_instead_of_looping() {
        let too_large = SourceError::EventTooLarge {
            namespace: "db.c".into(),
            source: Box::new(command_error(EVENT_TOO_LARGE)),
        };
        assert_eq!(reader(&too_large, &config("")), Decision::Fail);
        assert_eq!(
            classify(&mongo(command_error(EVENT_TOO_LARGE))),
            ErrorClass::Unfixable
        );
    }

    /// Issue 12, defect 5: with `oversize = "skip"` or `"split"`, an event MongoDB cannot
    /// return whole (10334) is fetched in fragments (`$changeStreamSplitLargeEvent`) and
    /// goes through the `oversize` policy like any large event; only `fail`, or a stream
    /// that fragments already and still meets it, stops the pipeline.
    #[test]
    fn an_event_mongodb_cannot_return_goes_through_the_oversize_policy() {
        let fail = config("");
        let skip = config("oversize = \"skip\"");
        let split = config("oversize = \"split\"");
        assert_eq!(RestartPolicy::event_too_large(&fail, false), TooLarge::Fail);
        assert_eq!(
            RestartPolicy::event_too_large(&skip, false),
            TooLarge::Fragment
        );
        assert_eq!(
            RestartPolicy::event_too_large(&split, false),
            TooLarge::Fragment
        );
        // Fragments that are still too large (one top-level field over 16 MiB): no loop.
        assert_eq!(RestartPolicy::event_too_large(&split, true), TooLarge::Fail);
        assert_eq!(RestartPolicy::event_too_large(&skip, true), TooLarge::Fail);
    }

    #[test]
    fn network_errors_restart_the_reader_or_under_exactly_once_the_pipeline() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let cut = mongo(mongodb::error::ErrorKind::Io(Arc::new(io)).into());
        assert_eq!(classify(&cut), ErrorClass::Network);
        assert_eq!(
            reader(&cut, &config("")),
            Decision::RestartReader(ResumeAt::Acknowledged)
        );
        assert_eq!(
            reader(&cut, &config("delivery = \"exactly-once\"")),
            Decision::RestartPipeline
        );
        let timed_out = SourceError::Delivery {
            origin: "db.c 1".into(),
            topic: "t".into(),
            source: Box::new(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            )),
        };
        assert_eq!(classify(&timed_out), ErrorClass::Network);
        assert_eq!(producer(&timed_out, &config("")), Decision::RestartPipeline);
    }

    #[test]
    fn refused_credentials_restart_with_backoff_until_fixed() {
        for code in MONGO_AUTH {
            let refused = mongo(command_error(*code));
            assert_eq!(classify(&refused), ErrorClass::Auth, "{code}");
            assert_eq!(
                reader(&refused, &config("")),
                Decision::RestartReader(ResumeAt::Acknowledged)
            );
        }
        let kafka = SourceError::Delivery {
            origin: "db.c 1".into(),
            topic: "t".into(),
            source: Box::new(KafkaError::MessageProduction(
                RDKafkaErrorCode::TopicAuthorizationFailed,
            )),
        };
        assert_eq!(classify(&kafka), ErrorClass::Auth);
        assert_eq!(producer(&kafka, &config("")), Decision::RestartPipeline);
    }

    #[test]
    fn a_fenced_producer_stops_the_pipeline_instead_of_fencing_back() {
        for code in KAFKA_FENCED {
            let fenced = SourceError::Transaction {
                what: "committing",
                source: Box::new(KafkaError::MessageProduction(*code)),
            };
            assert_eq!(classify(&fenced), ErrorClass::Fenced, "{code:?}");
            assert_eq!(
                producer(&fenced, &config("delivery = \"exactly-once\"")),
                Decision::Fail
            );
        }
    }

    #[test]
    fn unconvertible_events_and_configuration_errors_stop_the_pipeline() {
        let config_error = SourceError::Config {
            namespace: "db.c".into(),
            reason: "bad".into(),
        };
        assert_eq!(reader(&config_error, &config("")), Decision::Fail);
        let too_large = SourceError::TooLarge {
            origin: "db.c 1".into(),
            topic: "t".into(),
            reason: "big".into(),
        };
        assert_eq!(producer(&too_large, &config("")), Decision::Fail);
        let gone = SourceError::ProducerGone {
            namespace: "db.c".into(),
        };
        assert_eq!(
            reader(&gone, &config("")),
            Decision::RestartReader(ResumeAt::Acknowledged)
        );
    }
}
