//! Why a file could not be translated at all ([`ImportError`]), and the connector classes
//! it names.

/// The source connector's class.
pub const SOURCE_CLASS: &str = "com.mongodb.kafka.connect.MongoSourceConnector";
/// The sink connector's class.
pub const SINK_CLASS: &str = "com.mongodb.kafka.connect.MongoSinkConnector";

/// Why a file could not be translated at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file looked like JSON and is not.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// The file is not a `.properties` file either.
    #[error("not a .properties file: {0}")]
    NotProperties(String),
    /// JSON that holds no connector configuration.
    #[error("not a connector configuration: {0}")]
    NotAConnector(String),
    /// No `connector.class`.
    #[error(
        "no `connector.class`: give a connector's configuration as Kafka Connect's REST API returns it (`GET /connectors/<name>` or `GET /connectors/<name>/config`) or its .properties file"
    )]
    NoClass,
    /// Another connector than MongoDB's.
    #[error(
        "`connector.class` is `{0}`, not the MongoDB Kafka Connector (`{SOURCE_CLASS}` or `{SINK_CLASS}`)"
    )]
    NotMongo(String),
    /// A class in the connector's package that is neither of its connectors.
    #[error(
        "`connector.class` `{0}` is no connector of the MongoDB Kafka Connector this tool knows (`{SOURCE_CLASS}` or `{SINK_CLASS}`)"
    )]
    UnknownMongoClass(String),
    /// Several connectors that cannot share one daemon.
    #[error("{0}")]
    Conflict(String),
    /// A property the pipeline cannot do without is missing.
    #[error("{property}: {reason}")]
    Required {
        /// The connector's property.
        property: &'static str,
        /// What is missing.
        reason: String,
    },
}
