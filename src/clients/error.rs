//! Why a client could not be built or a server did not answer ([`ClientError`]).

/// Why a client could not be built or a server did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A Kafka client could not be created or the brokers did not answer.
    #[error("Kafka at {servers}: {what}: {source}{}", .broker_error.as_deref().map(|e| format!("; the last broker error: {e}")).unwrap_or_default())]
    Kafka {
        /// The bootstrap servers that were tried.
        servers: String,
        /// What was being done.
        what: &'static str,
        /// The client's error.
        #[source]
        source: Box<rdkafka::error::KafkaError>,
        /// What librdkafka last reported about the brokers (authentication, TLS, name
        /// resolution), which the call's own error leaves out.
        broker_error: Option<String>,
    },
    /// The MongoDB client could not be created or the server did not answer.
    #[error("MongoDB at {hosts}: {what}: {source}")]
    Mongo {
        /// The hosts of the connection string (never its credentials).
        hosts: String,
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: Box<mongodb::error::Error>,
    },
}

impl ClientError {
    /// The service that failed, as a metric label: `kafka` or `mongodb`.
    pub fn service(&self) -> &'static str {
        match self {
            Self::Kafka { .. } => "kafka",
            Self::Mongo { .. } => "mongodb",
        }
    }
}
