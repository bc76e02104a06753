//! The largest record each topic accepts: its `max.message.bytes`, read from the broker
//! (issue 21, item 9). A topic may be set below the producer's `message.max.bytes`; then
//! librdkafka takes a large record, the broker refuses it, and its delivery report says
//! `MessageSizeTooLarge`, which used to restart the pipeline into the same event forever.
//! Knowing the topic's limit, the producer sends such a record through `oversize` instead
//! (skip, split into chunks that fit, or fail naming it).
//!
//! Read with the admin client's `describe_configs`, asynchronously (never on the actor's
//! thread's blocking calls), once per topic and again after a while; a topic that cannot be
//! described (not created yet, no permission) has no known limit, and is asked again soon.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

/// How long a topic's limit is trusted before it is read again.
const REFRESH_AFTER: Duration = Duration::from_secs(600);

/// How long a topic that could not be described waits before it is asked again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The bytes a record batch of one record takes beyond its key, value and headers: the
/// batch header (61 bytes) and the record's own varints, rounded up.
pub const RECORD_BATCH_OVERHEAD: usize = 128;

/// Each topic's `max.message.bytes`, as the broker last said.
pub struct TopicLimits {
    admin: Option<AdminClient<DefaultClientContext>>,
    timeout: Duration,
    /// The producer's `message.max.bytes`: a topic below it is worth a warning.
    producer_max: usize,
    known: Mutex<HashMap<String, (Option<usize>, Instant)>>,
}

impl std::fmt::Debug for TopicLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicLimits")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TopicLimits {
    /// Limits read through `admin` (none known without one), each read taking at most
    /// `timeout`, for a producer whose `message.max.bytes` is `producer_max`.
    pub fn new(
        admin: Option<AdminClient<DefaultClientContext>>,
        timeout: Duration,
        producer_max: usize,
    ) -> Self {
        Self {
            admin,
            timeout,
            producer_max,
            known: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, topic: &str) -> Option<Option<usize>> {
        let known = self.known.lock().ok()?;
        let (limit, at) = known.get(topic)?;
        let fresh = match limit {
            Some(_) => at.elapsed() < REFRESH_AFTER,
            None => at.elapsed() < RETRY_AFTER,
        };
        fresh.then_some(*limit)
    }

    /// The topic's `max.message.bytes`, `None` when it is not known.
    pub async fn limit(&self, topic: &str) -> Option<usize> {
        if let Some(limit) = self.cached(topic) {
            return limit;
        }
        let admin = self.admin.as_ref()?;
        let options = AdminOptions::new().request_timeout(Some(self.timeout));
        let described = admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
            .await;
        let limit = match described {
            Ok(results) => results
                .into_iter()
                .filter_map(Result::ok)
                .find_map(|resource| {
                    resource
                        .get("max.message.bytes")
                        .and_then(|entry| entry.value.as_deref())
                        .and_then(|value| value.parse::<usize>().ok())
                }),
            Err(error) => {
                tracing::debug!(topic, %error, "could not read the topic's max.message.bytes");
                None
            }
        };
        if let Ok(mut known) = self.known.lock() {
            let before = known.insert(topic.to_owned(), (limit, Instant::now()));
            let new = before.is_none_or(|(was, _)| was != limit);
            if let Some(limit) = limit.filter(|l| new && *l < self.producer_max) {
                tracing::warn!(topic, max_message_bytes = limit, producer_message_max_bytes = self.producer_max, "the topic accepts smaller records than the producer: larger events go through `oversize` (skipped, split to fit, or the pipeline stops); librdkafka may still put several records in one request over the topic's limit, which stops the pipeline: set `kafka.producer` `batch.size` at most the topic's `max.message.bytes`");
            }
        }
        limit
    }
}

/// What a record of `key`, `value` and `headers` bytes takes in a batch of its own.
pub fn record_size(key: usize, value: usize, headers: usize) -> usize {
    key + value + headers + RECORD_BATCH_OVERHEAD
}

/// The limit a record to a topic must fit: the producer's, or the topic's when smaller.
pub fn effective_limit(producer: usize, topic: Option<usize>) -> usize {
    topic.map_or(producer, |topic| topic.min(producer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smaller_of_the_producers_and_the_topics_limit_applies() {
        assert_eq!(effective_limit(1_000_000, None), 1_000_000);
        assert_eq!(effective_limit(1_000_000, Some(4000)), 4000);
        assert_eq!(effective_limit(100_000, Some(1_048_588)), 100_000);
        assert!(
            record_size(10, 3900, 0) > 4000,
            "the batch's own bytes count"
        );
    }

    #[tokio::test]
    async fn without_an_admin_client_no_limit_is_known() {
        let limits = TopicLimits::new(None, Duration::from_secs(1), 1_000_000);
        assert_eq!(limits.limit("t").await, None);
    }
}
