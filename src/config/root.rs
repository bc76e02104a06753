//! The root of the configuration file ([`Config`]) and its daemon-wide sections:
//! `[mongodb]`, `[kafka]`, `[http]`, `[log]`, `[shutdown]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::registry::SchemaRegistryConfig;
use super::sink::SinkConfig;
use super::source::SourceConfig;

/// The whole daemon configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How to reach MongoDB.
    pub mongodb: MongoConfig,
    /// How to reach Kafka.
    pub kafka: KafkaConfig,
    /// The HTTP endpoint serving `/health`, `/ready`, `/metrics`, `/status` and the control
    /// of pipelines (`/pipelines`).
    #[serde(default)]
    pub http: HttpConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Shutdown behaviour.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// MongoDB change streams → Kafka pipelines.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// Kafka topics → MongoDB pipelines.
    #[serde(default, rename = "sink")]
    pub sinks: Vec<SinkConfig>,
}

/// `[mongodb]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// A MongoDB connection string (`mongodb://` or `mongodb+srv://`). Credentials may be
    /// given here or through `MKB__MONGODB__URI`; they are masked in every output.
    pub uri: String,
    /// The application name reported to the server (visible in `currentOp` and server logs).
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// How long to wait for a server to answer before a connection attempt fails.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The Stable API version every command declares (`"1"`), so a server upgrade cannot
    /// change the behaviour the daemon relies on (the connector's `server.api.version`).
    /// Needs MongoDB 5.0 or newer. Absent: commands declare none.
    #[serde(default)]
    pub server_api_version: Option<String>,
    /// With `server_api_version`: the server refuses commands outside the Stable API (the
    /// connector's `server.api.strict`).
    #[serde(default)]
    pub server_api_strict: bool,
    /// With `server_api_version`: the server refuses commands deprecated in that version (the
    /// connector's `server.api.deprecationErrors`).
    #[serde(default)]
    pub server_api_deprecation_errors: bool,
}

/// `[kafka]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// librdkafka properties applied to every Kafka client (producers, consumers, admin),
    /// e.g. `"security.protocol" = "SASL_SSL"`. Keys given through the environment
    /// (`MKB__KAFKA__PROPERTIES__SASL_PASSWORD`) have `_` read as `.`.
    #[serde(default, deserialize_with = "librdkafka_properties")]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for producers only; they win over `properties`.
    #[serde(default, deserialize_with = "librdkafka_properties")]
    pub producer: BTreeMap<String, String>,
    /// librdkafka properties for consumers only; they win over `properties`.
    #[serde(default, deserialize_with = "librdkafka_properties")]
    pub consumer: BTreeMap<String, String>,
    /// How long a metadata request or a connectivity check may take.
    #[serde(default = "default_kafka_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The schema registry of every pipeline without a `schema_registry` of its own (the
    /// `avro` and `json_schema` formats).
    #[serde(default)]
    pub schema_registry: Option<SchemaRegistryConfig>,
}

impl Config {
    /// Fills in every source's `checkpoint_topic` left out (see
    /// [`SourceConfig::resolve_checkpoint_topic`]).
    pub fn resolve_checkpoint_topics(&mut self) {
        for source in &mut self.sources {
            source.resolve_checkpoint_topic();
        }
    }

    /// Gives every pipeline without a schema registry of its own the shared one of
    /// `[kafka.schema_registry]`, so each pipeline's settings say which registry it uses.
    pub fn share_schema_registry(&mut self) {
        let Some(shared) = &self.kafka.schema_registry else {
            return;
        };
        let sources = self.sources.iter_mut().map(|s| &mut s.schema_registry);
        let sinks = self.sinks.iter_mut().map(|s| &mut s.schema_registry);
        for registry in sources.chain(sinks) {
            if registry.is_none() {
                *registry = Some(shared.clone());
            }
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve `/health`, `/ready` and `/metrics`. Disable only where nothing scrapes the daemon.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The address to listen on. Loopback by default: expose it deliberately. On any other
    /// address the control endpoints (`/pipelines`) need a token (`token_file` or the
    /// environment variable `MKB_HTTP_TOKEN`): the daemon refuses to start without one.
    #[serde(default = "default_http_address")]
    pub address: SocketAddr,
    /// A file holding the bearer token the control endpoints (`GET /pipelines`,
    /// `POST /pipelines/<name>/...`) require (`Authorization: Bearer <token>`); surrounding
    /// white space is ignored. Without it, the environment variable `MKB_HTTP_TOKEN` gives
    /// the token. Read at start; `/health`, `/ready`, `/metrics` and `/status` stay open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The token read from `token_file` or `MKB_HTTP_TOKEN` (never from the file's keys);
    /// shown masked.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The environment variable giving the HTTP control token when `http.token_file` is not set.
pub const HTTP_TOKEN_ENV: &str = "MKB_HTTP_TOKEN";

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `mongo_kafka_bridge=debug,rdkafka=warn`, ...).
    /// `RUST_LOG`, when set, wins.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` (human-readable) or `json` (one object per line). `--log-format` wins.
    #[serde(default)]
    pub format: LogFormat,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[shutdown]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long a graceful shutdown (drain, flush, commit) may take before the daemon gives
    /// up, says what was left and exits non-zero.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: default_true(),
            address: default_http_address(),
            token_file: None,
            token: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            timeout: default_shutdown_timeout(),
        }
    }
}

/// librdkafka (and Kafka's topic configs) take every property as a string; users write
/// `"linger.ms" = 5` in TOML.
pub(super) fn librdkafka_properties<'de, D>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Scalar(String);

    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl serde::de::Visitor<'_> for Visitor {
                type Value = Scalar;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a librdkafka property value: a string, number or boolean")
                }
                fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_owned()))
                }
                fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }
                fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }
                fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }
                fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }
            }
            d.deserialize_any(Visitor)
        }
    }

    let map = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
    Ok(map.into_iter().map(|(k, Scalar(v))| (k, v)).collect())
}

pub(super) fn default_true() -> bool {
    true
}

fn default_app_name() -> String {
    "mongo-kafka-bridge".to_owned()
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_kafka_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_http_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9187))
}

fn default_log_level() -> String {
    "info".to_owned()
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}
