//! [`DeadLetters`]: sending a record that MongoDB or the converter refused to the dead
//! letter topic (`errors.tolerance = "all"`), with headers saying why and where from.
//!
//! Rules:
//! - A dead letter is the record as it was read (key, value, its own headers), with the
//!   daemon's headers (`crate::dead_letter`) naming the pipeline, the stage, the reason and
//!   the record's topic, partition and offset. It is sent once Kafka acknowledged it.
//! - A record too large for the dead letter topic (or the producer's `message.max.bytes`)
//!   goes without its value and its own headers, then also without its key, saying so in
//!   `mkb.error.omitted`: the original stays in its topic at the offset the headers name.
//! - A send that fails otherwise (a broker restarting) is tried again up to `max_retries`
//!   times, with backoff, while the writer's lease is live; then the failure is the
//!   caller's (the batch commits up to the record and the pipeline stops at it).

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};

use super::lease::Lease;
use super::model::RecordError;
use super::retries::{Next, Retries};
use crate::clients::kafka;
use crate::config::DeadLetterHeaders;

/// Where refused records go, when `errors.tolerance = "all"`.
#[derive(Clone)]
pub struct DeadLetters {
    /// The producer.
    pub producer: kafka::KafkaProducer,
    /// The dead letter topic.
    pub topic: String,
    /// How its headers are named.
    pub headers: DeadLetterHeaders,
}

/// One refused record on its way to the dead letter topic.
#[derive(Clone, Copy)]
pub struct Letter<'a> {
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The record, as it was read (a split event whole).
    pub message: &'a OwnedMessage,
    /// `topic/partition@offset`, as logs and headers name it.
    pub position: &'a str,
    /// Why it was refused.
    pub error: &'a RecordError,
}

/// What a dead letter leaves out of the record it carries, when the whole record does not
/// fit the dead letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Omitted {
    /// The record as it was read.
    Nothing,
    /// Without its value and its own headers.
    ValueAndHeaders,
    /// Without key, value and headers: only the daemon's headers, which say where it is.
    KeyValueAndHeaders,
}

impl Omitted {
    /// The next smaller dead letter to try after the broker or producer refused this one
    /// as too large.
    fn smaller(self) -> Option<Self> {
        match self {
            Self::Nothing => Some(Self::ValueAndHeaders),
            Self::ValueAndHeaders => Some(Self::KeyValueAndHeaders),
            Self::KeyValueAndHeaders => None,
        }
    }

    /// The `mkb.error.omitted` header's value.
    fn header(self) -> Option<&'static str> {
        match self {
            Self::Nothing => None,
            Self::ValueAndHeaders => Some("value, headers"),
            Self::KeyValueAndHeaders => Some("key, value, headers"),
        }
    }
}

impl DeadLetters {
    /// Sends `letter`, retrying a failure that may pass (a broker restarting) up to
    /// `max_retries` times while `lease` is live.
    pub async fn send(
        &self,
        letter: Letter<'_>,
        max_retries: u32,
        lease: &Lease,
    ) -> Result<(), KafkaError> {
        let pipeline = letter.pipeline;
        let mut retries = Retries::new(max_retries);
        loop {
            let Err(failure) = self.send_shrinking(letter).await else {
                return Ok(());
            };
            match retries.failed(lease.is_live()) {
                Next::Retry(delay) => {
                    tracing::warn!(pipeline, record = %letter.position, error = %failure, retry_in = ?delay, "sending a dead letter failed; retrying");
                    if !lease.pause(delay).await {
                        return Err(failure);
                    }
                }
                Next::GiveUp | Next::Leave => return Err(failure),
            }
        }
    }

    /// Sends `letter` whole, or smaller while it is refused as too large.
    async fn send_shrinking(&self, letter: Letter<'_>) -> Result<(), KafkaError> {
        let mut omitted = Omitted::Nothing;
        loop {
            let sent = self.send_once(letter, omitted).await;
            match (sent, omitted.smaller()) {
                (
                    Err(KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge,
                    )),
                    Some(smaller),
                ) => {
                    omitted = smaller;
                    tracing::warn!(pipeline = letter.pipeline, record = %letter.position, topic = %self.topic, omitted = omitted.header().unwrap_or_default(), "the record is too large for the dead letter topic; sending it without some of its parts");
                }
                (sent, _) => return sent,
            }
        }
    }

    /// Sends `letter` without what `omitted` says, and waits for Kafka's acknowledgement.
    async fn send_once(&self, letter: Letter<'_>, omitted: Omitted) -> Result<(), KafkaError> {
        let message = letter.message;
        let mut headers = OwnedHeaders::new();
        if let (Omitted::Nothing, Some(original)) = (omitted, message.headers()) {
            for header in original.iter() {
                headers = headers.insert(Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
        let reason = letter.error.to_string();
        let described = crate::dead_letter::DeadLetter {
            pipeline: letter.pipeline,
            reason: &reason,
            stage: letter.error.stage.as_str(),
            origin: letter.position,
            target_topic: None,
            source: Some((message.topic(), message.partition(), message.offset())),
            omitted: omitted.header(),
        };
        for (key, value) in crate::dead_letter::headers(self.headers, &described) {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_str()),
            });
        }
        let (key, value) = match omitted {
            Omitted::Nothing => (message.key(), message.payload()),
            Omitted::ValueAndHeaders => (message.key(), None),
            Omitted::KeyValueAndHeaders => (None, None),
        };
        let delivery =
            kafka::enqueue(&self.producer, &self.topic, key, value, Some(headers)).await?;
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => Err(error),
            Err(_) => Err(KafkaError::Canceled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_too_large_sheds_value_and_headers_then_its_key_then_gives_up() {
        let mut omitted = Omitted::Nothing;
        let mut headers = vec![omitted.header()];
        while let Some(smaller) = omitted.smaller() {
            omitted = smaller;
            headers.push(omitted.header());
        }
        assert_eq!(
            headers,
            [None, Some("value, headers"), Some("key, value, headers")]
        );
    }
}
