//! What the read loop of a reader and its copy share: the [`ReadLoop`] (the reader's
//! identity, context, stop flag and progress) with its error mapping and its hand-over to
//! the producer. `stream` runs the change stream with it, `copy` the copy of existing
//! documents; neither imports the other's internals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::records::Records;
use super::ReaderContext;
use crate::ops::metrics::MAILBOX_RECORD_PRODUCER;
use crate::source::error::SourceError;
use crate::source::liveness::ReaderLiveness;
use crate::source::model::{OutgoingRecord, Position, ReaderId, Scope};
use crate::source::policy::{EVENT_TOO_LARGE, HISTORY_LOST};
use crate::source::producer::{ProduceBatch, StoreStart};

/// The reading itself, kept out of the actor so it is plain async code.
pub(super) struct ReadLoop {
    pub id: ReaderId,
    pub watched: Scope,
    pub shared: Arc<ReaderContext>,
    pub stop: Arc<AtomicBool>,
    pub progress: Arc<ReaderLiveness>,
}

impl ReadLoop {
    pub fn namespace(&self) -> &str {
        &self.id.namespace
    }

    /// The builder of this reader's records.
    pub fn records(&self) -> Records<'_> {
        Records::of(&self.shared, &self.watched, self.namespace())
    }

    pub fn mongo_error(
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

    /// Hands records to the producer with the position they bring the reader to, waiting
    /// for room in its mailbox (not a stall: [`ReaderLiveness::waiting_for_kafka`]).
    pub async fn send(
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

    /// Stores where a stream opened without a position (`latest`, a timestamp) found
    /// itself, waiting until Kafka has it (not a stall either): see [`StoreStart`].
    pub async fn store_start(&self, position: Position) -> Result<(), SourceError> {
        let start = StoreStart {
            reader: self.id.clone(),
            position,
        };
        self.progress.waiting_for_kafka(true);
        let stored = self.shared.producer.send(start).await;
        self.progress.waiting_for_kafka(false);
        stored.unwrap_or_else(|_| {
            Err(SourceError::ProducerGone {
                namespace: self.namespace().to_owned(),
            })
        })
    }

    /// Whether the reader was asked to stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Resolves once the reader is asked to stop (checked every 50 ms): raced with what may
    /// wait long within one event, such as the schema registry.
    pub async fn stopped(&self) {
        while !self.stopping() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
