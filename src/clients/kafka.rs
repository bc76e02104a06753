//! Kafka clients: the daemon's settings first, then the user's pass-through properties.

use rdkafka::admin::AdminClient;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{
    BaseProducer, DeliveryResult, FutureProducer, FutureRecord, Producer, ProducerContext,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use super::error::ClientError;

use crate::config::KafkaConfig;

/// How long to wait before offering a record again to a full librdkafka queue.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// The largest record producers built from `kafka` accept (`message.max.bytes`).
pub fn producer_max_message_bytes(kafka: &KafkaConfig) -> usize {
    client_config(kafka, Role::Producer)
        .get("message.max.bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
}

/// Which kind of client a configuration is for; it picks the pass-through section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A producer: `kafka.properties` then `kafka.producer`.
    Producer,
    /// A consumer: `kafka.properties` then `kafka.consumer`.
    Consumer,
    /// An admin or metadata client: `kafka.properties` only.
    Admin,
}

/// The librdkafka configuration for one client of `role`.
pub fn client_config(kafka: &KafkaConfig, role: Role) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    apply(&mut cfg, kafka, role);
    cfg
}

/// Sets the configuration of a client of `role` on `cfg`, over what `cfg` already holds (the
/// daemon's defaults). Values are copied from the typed configuration, never through
/// `ClientConfig::config_map`, which hides secrets (`sasl.password`, ...) behind a placeholder.
fn apply(cfg: &mut ClientConfig, kafka: &KafkaConfig, role: Role) {
    cfg.set("bootstrap.servers", &kafka.bootstrap_servers);
    cfg.set("client.id", "mongo-kafka-bridge");
    for (key, value) in &kafka.properties {
        cfg.set(key, value);
    }
    let role_specific = match role {
        Role::Producer => Some(&kafka.producer),
        Role::Consumer => Some(&kafka.consumer),
        Role::Admin => None,
    };
    for (key, value) in role_specific.into_iter().flatten() {
        cfg.set(key, value);
    }
}

fn error<'a>(
    kafka: &'a KafkaConfig,
    what: &'static str,
) -> impl FnOnce(rdkafka::error::KafkaError) -> ClientError + 'a {
    move |source| ClientError::Kafka {
        servers: kafka.bootstrap_servers.clone(),
        what,
        source: Box::new(source),
        broker_error: None,
    }
}

/// How much an error event that librdkafka reports on its own (not as the answer to a call)
/// deserves: `ERROR` only where an operator must act (credentials, TLS, a fatal client
/// error, anything not known to pass); `WARN` for what the daemon rides out by retrying (a
/// broker unreachable for a while, a subscribed topic that does not exist yet); `DEBUG` for
/// what is information, such as the end of a partition reached while reading checkpoints.
pub fn event_level(error: &KafkaError) -> tracing::Level {
    use RDKafkaErrorCode as Code;
    match error.rdkafka_error_code() {
        Some(Code::PartitionEOF) => tracing::Level::DEBUG,
        Some(
            Code::UnknownTopicOrPartition
            | Code::UnknownTopic
            | Code::UnknownPartition
            | Code::BrokerTransportFailure
            | Code::AllBrokersDown
            | Code::Resolve
            | Code::MessageTimedOut
            | Code::OperationTimedOut
            | Code::RequestTimedOut
            | Code::CoordinatorNotAvailable
            | Code::NotCoordinator
            | Code::CoordinatorLoadInProgress
            | Code::LeaderNotAvailable
            | Code::NotLeaderForPartition
            | Code::NetworkException,
        ) => tracing::Level::WARN,
        _ => tracing::Level::ERROR,
    }
}

/// Whether `error` says a partition has no leader the client knows of yet: a topic just
/// created (its leaders are being elected) or a leader moving. An answer to wait out, briefly.
pub fn leader_not_known_yet(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::LeaderNotAvailable
                | Code::NotLeaderForPartition
                | Code::UnknownTopicOrPartition
                | Code::UnknownPartition
        )
    )
}

/// Logs an error event of librdkafka at the level [`event_level`] gives it.
pub fn log_event(error: &KafkaError, reason: &str) {
    match event_level(error) {
        tracing::Level::DEBUG => tracing::debug!(%error, reason, "librdkafka event"),
        tracing::Level::WARN => {
            tracing::warn!(%error, reason, "librdkafka reported a problem the daemon retries past")
        }
        _ => tracing::error!(%error, reason, "librdkafka reported an error"),
    }
}

/// The context of the daemon's Kafka clients that need no other: librdkafka's error events
/// logged at the level they deserve ([`log_event`]) instead of all at `ERROR`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeveledEvents;

impl ClientContext for LeveledEvents {
    fn error(&self, error: KafkaError, reason: &str) {
        log_event(&error, reason);
    }
}

impl ConsumerContext for LeveledEvents {}

/// The producer of the daemon's pipelines (records, checkpoints, dead letters).
pub type KafkaProducer = FutureProducer<LeveledEvents>;

/// A producer that waits for every in-sync replica (`acks=all`) and never reorders or
/// duplicates on retry (`enable.idempotence`), unless the user's properties say otherwise.
pub fn producer(kafka: &KafkaConfig) -> Result<KafkaProducer, ClientError> {
    let mut cfg = ClientConfig::new();
    producer_defaults(&mut cfg);
    apply(&mut cfg, kafka, Role::Producer);
    cfg.create_with_context(LeveledEvents)
        .map_err(error(kafka, "creating a producer"))
}

/// What every producer starts from, before the user's properties: waits for every in-sync
/// replica, never reorders or duplicates on retry, and buffers at most 16 MiB (librdkafka's
/// default is 1 GiB), so a slow broker slows the readers instead of growing memory.
fn producer_defaults(cfg: &mut ClientConfig) {
    cfg.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("queue.buffering.max.kbytes", "16384");
}

/// A transactional producer (`transactional.id` fences earlier instances of the same
/// pipeline). The caller runs `init_transactions` before using it.
pub fn transactional_producer(
    kafka: &KafkaConfig,
    transactional_id: &str,
) -> Result<KafkaProducer, ClientError> {
    let mut cfg = ClientConfig::new();
    producer_defaults(&mut cfg);
    apply(&mut cfg, kafka, Role::Producer);
    cfg.set("transactional.id", transactional_id)
        .create_with_context(LeveledEvents)
        .map_err(error(kafka, "creating a transactional producer"))
}

/// A consumer in `group_id` that never commits or stores offsets by itself: the caller
/// stores an offset only once the record's effect is durable.
pub fn consumer(
    kafka: &KafkaConfig,
    group_id: &str,
) -> Result<StreamConsumer<LeveledEvents>, ClientError> {
    consumer_with_context(kafka, group_id, LeveledEvents, None, Prefetch::default())
}

/// How far librdkafka fetches ahead of a consumer, per partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetch {
    /// `queued.max.messages.kbytes`: the records queued ahead.
    pub queued_kib: u64,
    /// `max.partition.fetch.bytes`: the fetch on its way (librdkafka grows it for a larger
    /// record).
    pub partition_fetch_bytes: u64,
}

impl Default for Prefetch {
    /// 640 KiB queued and a 256 KiB fetch. Sink consumers split each partition's queue off,
    /// and librdkafka then applies the queue's limit to each partition (64 MiB by default):
    /// 640 KiB holds one default batch (500 records of about 1 KB) ahead of a writer,
    /// refilled while it writes the one before, so the writer finds its next batch ready
    /// when its write returns (with 256 KiB it waited for a fetch in every batch: the
    /// 8-partition sink reached 0.67 to 0.91 of the driver's 8 tasks, 0.91 to 1.02 with
    /// 640; docs/performance.md). A sink pipeline with more partitions shares a budget
    /// instead (`sink::prefetch`).
    fn default() -> Self {
        Self {
            queued_kib: 640,
            partition_fetch_bytes: 256 * 1024,
        }
    }
}

/// [`consumer`] with `context` receiving rebalance and commit callbacks, librdkafka's
/// statistics every `statistics` when given, and `prefetch` unless the user's properties
/// set it.
pub fn consumer_with_context<C: ConsumerContext + 'static>(
    kafka: &KafkaConfig,
    group_id: &str,
    context: C,
    statistics: Option<Duration>,
    prefetch: Prefetch,
) -> Result<StreamConsumer<C>, ClientError> {
    let mut cfg = ClientConfig::new();
    cfg.set("auto.offset.reset", "earliest")
        .set(
            "queued.max.messages.kbytes",
            prefetch.queued_kib.to_string(),
        )
        .set(
            "max.partition.fetch.bytes",
            prefetch.partition_fetch_bytes.to_string(),
        )
        // Once a partition's queue is over that limit librdkafka fetches it again only after
        // this back-off (1 s by default): with a queue this small and a writer that empties
        // it in tens of milliseconds, 1 s made a 1-partition sink wait most of the time.
        .set("fetch.queue.backoff.ms", "20");
    if !consumer_group_protocol(kafka) {
        // A rebalance stops only the partitions that move (the user's properties may say
        // otherwise; every member of a group must agree).
        cfg.set("partition.assignment.strategy", "cooperative-sticky");
    }
    if let Some(every) = statistics {
        // The context receives librdkafka's statistics (consumer lag per partition).
        cfg.set("statistics.interval.ms", every.as_millis().to_string());
    }
    apply(&mut cfg, kafka, Role::Consumer);
    cfg.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create_with_context(context)
        .map_err(error(kafka, "creating a consumer"))
}

/// Whether the consumers of `kafka` use Kafka's new group protocol (KIP-848, `group.protocol =
/// "consumer"` in `[kafka.consumer]` or `[kafka.properties]`): the broker assigns partitions
/// there, always incrementally, and librdkafka refuses a `partition.assignment.strategy`.
pub fn consumer_group_protocol(kafka: &KafkaConfig) -> bool {
    kafka
        .consumer
        .get("group.protocol")
        .or_else(|| kafka.properties.get("group.protocol"))
        .is_some_and(|protocol| protocol.eq_ignore_ascii_case("consumer"))
}

/// An admin client, for topic management and metadata.
pub fn admin(kafka: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, ClientError> {
    client_config(kafka, Role::Admin)
        .create()
        .map_err(error(kafka, "creating an admin client"))
}

/// How long a failed check serves librdkafka's queued events, to learn why it failed.
const ERROR_EVENTS_WAIT: Duration = Duration::from_millis(100);

/// Keeps the last error librdkafka reported for a client (authentication, TLS, name
/// resolution): a failed call says only that the broker is unreachable.
#[derive(Default)]
struct LastBrokerError(Mutex<Option<String>>);

impl ClientContext for LastBrokerError {
    fn error(&self, error: KafkaError, reason: &str) {
        // "All broker connections are down" follows the error that brought them down: keep
        // that one.
        let consequence = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !(consequence && last.is_some()) {
            *last = Some(format!("{error}: {reason}"));
        }
    }
}

impl ProducerContext for LastBrokerError {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

impl LastBrokerError {
    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Asks the cluster for its metadata; returns the number of brokers that answered. A failure
/// says what librdkafka last reported about the brokers, e.g. that authentication failed.
pub async fn check(kafka: &KafkaConfig) -> Result<usize, ClientError> {
    metadata(kafka, |m| m.brokers().len()).await
}

/// The cluster's topics, each with its number of partitions.
pub async fn topic_partitions(kafka: &KafkaConfig) -> Result<Vec<(String, usize)>, ClientError> {
    metadata(kafka, |m| {
        m.topics()
            .iter()
            .map(|t| (t.name().to_owned(), t.partitions().len()))
            .collect()
    })
    .await
}

/// What `read` takes from the cluster's metadata, asked within `request_timeout` off the
/// actor threads. A failure says what librdkafka last reported about the brokers, e.g. that
/// authentication failed.
async fn metadata<T: Send + 'static>(
    kafka: &KafkaConfig,
    read: impl FnOnce(&rdkafka::metadata::Metadata) -> T + Send + 'static,
) -> Result<T, ClientError> {
    // A producer serves librdkafka's error events, with their reasons, to its context when
    // polled; it never produces here.
    let client: BaseProducer<LastBrokerError> = client_config(kafka, Role::Admin)
        .create_with_context(LastBrokerError::default())
        .map_err(error(kafka, "creating a metadata client"))?;
    let timeout = kafka.request_timeout;
    // librdkafka's metadata call blocks its thread: keep it off the actor threads.
    let result = tokio::task::spawn_blocking(move || {
        let answer = client
            .client()
            .fetch_metadata(None, timeout)
            .map(|m| read(&m));
        let broker_error = match answer {
            Ok(_) => None,
            Err(_) => {
                // Serves the events queued meanwhile (each poll call serves them until its
                // deadline): the errors among them reach the context.
                client.poll(ERROR_EVENTS_WAIT);
                client.context().take()
            }
        };
        (answer, broker_error)
    })
    .await;
    match result {
        Ok((Ok(answer), _)) => Ok(answer),
        Ok((Err(source), broker_error)) => Err(ClientError::Kafka {
            servers: kafka.bootstrap_servers.clone(),
            what: "fetching cluster metadata",
            source: Box::new(source),
            broker_error,
        }),
        Err(_) => Err(ClientError::Kafka {
            servers: kafka.bootstrap_servers.clone(),
            what: "fetching cluster metadata",
            source: Box::new(rdkafka::error::KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::Fail,
            )),
            broker_error: None,
        }),
    }
}

/// Hands one record to librdkafka, waiting while its local queue is full.
pub async fn enqueue(
    producer: &KafkaProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: Option<OwnedHeaders>,
) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
    enqueue_waiting(producer, topic, key, value, headers, || {}).await
}

/// [`enqueue`], calling `on_wait` each time the full queue makes it wait.
pub async fn enqueue_waiting(
    producer: &KafkaProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: Option<OwnedHeaders>,
    on_wait: impl FnMut(),
) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
    let record = || {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        if let Some(headers) = headers.clone() {
            record = record.headers(headers);
        }
        record
    };
    send_waiting(producer, record, on_wait).await
}

/// [`enqueue_waiting`] of a keyed record to `partition`, chosen by the caller rather than
/// by librdkafka's partitioner (a source's checkpoints go to their slot's partition).
pub async fn enqueue_to_partition(
    producer: &KafkaProducer,
    topic: &str,
    partition: i32,
    key: &[u8],
    value: &[u8],
    on_wait: impl FnMut(),
) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
    let record = || {
        FutureRecord::<'_, [u8], [u8]>::to(topic)
            .partition(partition)
            .key(key)
            .payload(value)
    };
    send_waiting(producer, record, on_wait).await
}

/// Hands the record `record()` makes to librdkafka; a full queue is backpressure, not an
/// error: it waits and tries again (with a new record: librdkafka hands the refused one
/// back), calling `on_wait` each time.
async fn send_waiting<'a>(
    producer: &KafkaProducer,
    record: impl Fn() -> FutureRecord<'a, [u8], [u8]>,
    mut on_wait: impl FnMut(),
) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
    loop {
        match producer.send_result(record()) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                on_wait();
                tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
            }
            Err((error, _)) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_group_protocol_is_read_from_consumer_or_shared_properties() {
        let kafka = |text: &str| {
            crate::config::load_str(
                &format!("[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"k:9092\"\n{text}"),
                std::path::Path::new("t.toml"),
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .kafka
        };
        assert!(!consumer_group_protocol(&kafka("")));
        assert!(consumer_group_protocol(&kafka(
            "[kafka.consumer]\n\"group.protocol\" = \"consumer\"\n"
        )));
        assert!(consumer_group_protocol(&kafka(
            "[kafka.properties]\n\"group.protocol\" = \"CONSUMER\"\n"
        )));
        // The consumer's own setting wins over the shared one.
        assert!(!consumer_group_protocol(&kafka(
            "[kafka.properties]\n\"group.protocol\" = \"consumer\"\n[kafka.consumer]\n\"group.protocol\" = \"classic\"\n"
        )));
    }

    fn global(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::Global(code)
    }

    #[test]
    fn the_end_of_a_partition_is_information() {
        assert_eq!(
            event_level(&global(RDKafkaErrorCode::PartitionEOF)),
            tracing::Level::DEBUG
        );
    }

    #[test]
    fn what_the_daemon_retries_past_is_a_warning() {
        for code in [
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::Resolve,
            RDKafkaErrorCode::CoordinatorNotAvailable,
        ] {
            assert_eq!(event_level(&global(code)), tracing::Level::WARN, "{code:?}");
        }
    }

    #[test]
    fn what_an_operator_must_fix_is_an_error() {
        for code in [
            RDKafkaErrorCode::Authentication,
            RDKafkaErrorCode::SaslAuthenticationFailed,
            RDKafkaErrorCode::SSL,
            RDKafkaErrorCode::Fatal,
            RDKafkaErrorCode::TopicAuthorizationFailed,
        ] {
            assert_eq!(
                event_level(&global(code)),
                tracing::Level::ERROR,
                "{code:?}"
            );
        }
    }
}
