//! A client of a Confluent-compatible schema registry (Confluent Schema Registry, Apicurio
//! Registry's `/apis/ccompat/v7`, Karapace): registers schemas under a subject and fetches
//! schemas by id, caching both, so each schema costs one request per process.
//!
//! The requests are async ([`reqwest`] over rustls: proxies from `HTTP(S)_PROXY`/`NO_PROXY`
//! or `proxy`, every resolved address tried, chunked answers, client certificates), awaited
//! by the pipeline's tasks, never on a thread they block: a registry that does not answer
//! holds back its own pipeline for at most `timeout` per request, and nothing else.
//!
//! The record conversions that use it are pure and synchronous: they only read the caches
//! ([`RegistryClient::known_id`], [`ParsedSchemas::get`]). What the caches lack comes back
//! as [`RegistryError::Pending`], carrying the [`Lookup`] to make; the caller awaits
//! [`Lookup::resolve`] and converts again ([`fetching`] does both), so a conversion runs twice
//! once per new schema and once otherwise.
//!
//! Whether the registry answers is told to an optional [`Reachability`] hook after each
//! request, so `/ready` can say why a pipeline holds back.
//!
//! The wire format the schemas are used in: byte 0 is 0 (the format's version), bytes 1..5
//! the schema id, big-endian, then the encoded datum.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

use super::base64::encode as base64;
use super::schema_cache::{SchemaCache, PARSED};
use crate::config::SchemaRegistryConfig;

/// The registry wire format's first byte.
pub const MAGIC_BYTE: u8 = 0;

/// The largest registry answer read: schemas are small, and a bound keeps a wrong server from
/// filling the memory.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The most lookups one conversion may wait for ([`fetching`]): a key and a value, each
/// needing one, with room for a cache that started over meanwhile.
const MAX_LOOKUPS: usize = 8;

/// The error code a Confluent-compatible registry gives a schema id it does not have (with
/// HTTP 404); any other 404 means the URL does not lead to the registry's API.
const SCHEMA_NOT_FOUND: i64 = 40403;

/// Why the registry did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No connection, a timeout, or an answer that is not HTTP: the registry may come back.
    #[error("schema registry at {url} unreachable: {message}")]
    Unreachable {
        /// The registry.
        url: String,
        /// What failed.
        message: String,
    },
    /// The registry has no schema with this id.
    #[error("schema registry at {url} has no schema with id {id}")]
    UnknownId {
        /// The registry.
        url: String,
        /// The id asked for.
        id: u32,
    },
    /// The registry refused a new schema under the subject's compatibility rule (HTTP 409).
    #[error("schema registry at {url} refused the new schema of `{subject}` (HTTP 409): it breaks the subject's compatibility rule: {body}")]
    Incompatible {
        /// The registry.
        url: String,
        /// The subject.
        subject: String,
        /// The registry's reason, cut to 500 bytes.
        body: String,
    },
    /// The registry refused the request (an invalid schema, bad credentials, a wrong path).
    #[error("schema registry at {url} answered {status} to {what}: {body}")]
    Refused {
        /// The registry.
        url: String,
        /// What was asked.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The body of the answer, cut to 500 bytes.
        body: String,
    },
    /// The caches lack what a conversion needs: the caller awaits the lookup and converts
    /// again.
    #[error("{0}")]
    Pending(Lookup),
}

impl RegistryError {
    /// Whether the pipeline holds back and asks again later rather than refusing the record:
    /// the registry is down or overloaded (5xx, 429), refuses the daemon's credentials
    /// (401, 403: a rotation under way), or its URL leads nowhere (404 other than an unknown
    /// schema id). None of these is the record's fault; a record it refused is.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Pending(_) => true,
            Self::Refused { status, .. } => {
                *status >= 500 || matches!(*status, 401 | 403 | 404 | 429)
            }
            Self::UnknownId { .. } | Self::Incompatible { .. } => false,
        }
    }
}

impl RegistryError {
    /// Why the pipeline holds back, as a metric label: `unreachable`, `unauthorized` (401),
    /// `forbidden` (403), `not_found` (404: the URL leads elsewhere), `unavailable` (5xx,
    /// 429); `refused` for what is the record's fault.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } | Self::Pending(_) => "unreachable",
            Self::Refused { status: 401, .. } => "unauthorized",
            Self::Refused { status: 403, .. } => "forbidden",
            Self::Refused { status: 404, .. } => "not_found",
            Self::Refused { status, .. } if *status >= 500 || *status == 429 => "unavailable",
            Self::Refused { .. } | Self::UnknownId { .. } | Self::Incompatible { .. } => "refused",
        }
    }
}

/// Errors that may carry a registry lookup to await ([`fetching`]).
pub trait AwaitsRegistry: Sized {
    /// The lookup this error waits for, if it is [`RegistryError::Pending`].
    fn pending(&self) -> Option<&Lookup>;
    /// This error with the registry error `error` in place of the pending lookup (the way the
    /// lookup failed).
    fn failed(self, error: RegistryError) -> Self;
}

impl AwaitsRegistry for RegistryError {
    fn pending(&self) -> Option<&Lookup> {
        match self {
            Self::Pending(lookup) => Some(lookup),
            _ => None,
        }
    }

    fn failed(self, error: RegistryError) -> Self {
        error
    }
}

/// Runs `attempt` (a conversion reading the registry's caches) until it needs nothing more
/// of the registry, awaiting each lookup it asks for; a lookup that fails is the error, in
/// the place of the pending one.
pub async fn fetching<T, E: AwaitsRegistry>(
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    for _ in 0..MAX_LOOKUPS {
        match attempt() {
            Err(error) => {
                let Some(lookup) = error.pending().cloned() else {
                    return Err(error);
                };
                if let Err(failed) = lookup.resolve().await {
                    return Err(error.failed(failed));
                }
            }
            done => return done,
        }
    }
    attempt()
}

/// [`fetching`] for callers without an async context (tools, tests, benchmarks): each lookup
/// runs on a thread of its own, with a runtime of its own, while this thread waits. Never
/// on the daemon's threads.
pub fn blocking<T, E: AwaitsRegistry>(mut attempt: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    for _ in 0..MAX_LOOKUPS {
        match attempt() {
            Err(error) => {
                let Some(lookup) = error.pending().cloned() else {
                    return Err(error);
                };
                let resolved = std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .map_err(|e| lookup.client.unreachable(format!("a runtime: {e}")))?
                                .block_on(lookup.resolve())
                        })
                        .join()
                        .unwrap_or_else(|_| {
                            Err(lookup.client.unreachable("the lookup panicked".into()))
                        })
                });
                if let Err(failed) = resolved {
                    return Err(error.failed(failed));
                }
            }
            done => return done,
        }
    }
    attempt()
}

/// The wire format's header: the schema id, and the datum after it.
pub fn split_wire_format(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    match bytes {
        [MAGIC_BYTE, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        [MAGIC_BYTE, ..] => Err(format!(
            "is {} bytes, too short for the schema registry header (5 bytes)",
            bytes.len()
        )),
        [first, ..] => Err(format!(
            "does not start with the schema registry's magic byte 0 (but {first})"
        )),
        [] => Err("is empty".into()),
    }
}

/// `datum` behind the wire format's header for schema `id`.
pub fn wire_format(id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// A schema as the registry holds it: its text and type (`AVRO` when the registry omits it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// The schema's JSON text.
    pub schema: String,
    /// `AVRO`, `JSON` or `PROTOBUF`.
    pub schema_type: String,
}

/// Told after each request to a registry whether it answered: `None` when it did, the
/// error when the pipeline must hold back ([`RegistryError::is_transient`]: unreachable,
/// 5xx/429, 401/403, a path that leads nowhere). `/ready` reports through it.
pub type Reachability = Arc<dyn Fn(&str, Option<&RegistryError>) + Send + Sync>;

/// What a conversion needs of the registry and the caches lack: an id to register (or look
/// up) under a subject, or a schema to fetch by id.
#[derive(Clone)]
pub struct Lookup {
    client: Arc<Client>,
    asked: Asked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Asked {
    Id {
        subject: String,
        schema_type: String,
        schema: String,
    },
    Schema(u32),
}

impl Lookup {
    /// Asks the registry, and keeps the answer in the client's caches.
    pub async fn resolve(&self) -> Result<(), RegistryError> {
        match &self.asked {
            Asked::Id {
                subject,
                schema_type,
                schema,
            } => self
                .client
                .register(subject, schema_type, schema)
                .await
                .map(drop),
            Asked::Schema(id) => self.client.schema(*id).await.map(drop),
        }
    }
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup")
            .field("url", &self.client.url)
            .field("asked", &self.asked)
            .finish()
    }
}

impl std::fmt::Display for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = &self.client.url;
        match &self.asked {
            Asked::Id { subject, .. } => write!(
                f,
                "schema registry at {url}: the id of a schema under `{subject}` is not known yet"
            ),
            Asked::Schema(id) => {
                write!(
                    f,
                    "schema registry at {url}: schema {id} is not fetched yet"
                )
            }
        }
    }
}

impl PartialEq for Lookup {
    fn eq(&self, other: &Self) -> bool {
        self.client.url == other.client.url && self.asked == other.asked
    }
}

impl Eq for Lookup {}

/// A registry client with its caches; one per pipeline (or per sink topic). Cheap to clone:
/// the clones share the connection settings and the caches.
#[derive(Clone)]
pub struct RegistryClient {
    client: Arc<Client>,
}

struct Client {
    url: String,
    /// The URL without its trailing `/`: paths are appended to it.
    base: String,
    authorization: Option<String>,
    http: reqwest::Client,
    reachability: Mutex<Option<Reachability>>,
    /// `<subject>\n<schema text>` → id.
    ids: SchemaCache<String, u32>,
    schemas: SchemaCache<u32, Arc<RegisteredSchema>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("url", &self.client.url)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client of the registry `config` names.
    pub fn new(config: &SchemaRegistryConfig) -> Result<Self, String> {
        let address = config.address()?;
        let authorization = config.username.as_ref().map(|user| {
            let pair = format!("{user}:{}", config.password.as_deref().unwrap_or_default());
            format!("Basic {}", base64(pair.as_bytes()))
        });
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(config)?)
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            // One connection per request, as the registry is asked once per new schema: no
            // idle connection outlives the runtime of the task that opened it.
            .pool_max_idle_per_host(0)
            .user_agent(concat!("mongo-kafka-bridge/", env!("CARGO_PKG_VERSION")));
        if let Some(proxy) = &config.proxy {
            let proxy = reqwest::Proxy::all(proxy.as_str())
                .map_err(|e| format!("`proxy` is not usable: {e}"))?;
            builder = builder.proxy(proxy);
        }
        let http = builder
            .build()
            .map_err(|e| format!("the HTTP client: {e}"))?;
        let base = format!(
            "{}://{}{}",
            if address.tls { "https" } else { "http" },
            authority(&address.host, address.port),
            address.path
        );
        Ok(Self {
            client: Arc::new(Client {
                url: config.url.clone(),
                base,
                authorization,
                http,
                reachability: Mutex::new(None),
                ids: SchemaCache::default(),
                schemas: SchemaCache::default(),
            }),
        })
    }

    /// This client, telling `hook` after each request whether the registry answered.
    pub fn reporting_to(self, hook: Option<Reachability>) -> Self {
        *self
            .client
            .reachability
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = hook;
        self
    }

    /// The id of `schema` (`schema_type` `AVRO` or `JSON`) under `subject`, from the cache:
    /// [`RegistryError::Pending`] when it is not there yet (await the lookup, then ask again).
    pub fn known_id(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
    ) -> Result<u32, RegistryError> {
        self.client.cached_id(subject, schema).ok_or_else(|| {
            RegistryError::Pending(Lookup {
                client: self.client.clone(),
                asked: Asked::Id {
                    subject: subject.to_owned(),
                    schema_type: schema_type.to_owned(),
                    schema: schema.to_owned(),
                },
            })
        })
    }

    /// The schema with `id`, from the cache: [`RegistryError::Pending`] when it is not there
    /// yet.
    pub fn known_schema(&self, id: u32) -> Result<Arc<RegisteredSchema>, RegistryError> {
        self.client.cached_schema(id).ok_or_else(|| {
            RegistryError::Pending(Lookup {
                client: self.client.clone(),
                asked: Asked::Schema(id),
            })
        })
    }

    /// The id of `schema` under `subject`, registering it there unless this client did so
    /// before. The registry answers with the id it already has for an identical schema.
    pub async fn register(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
    ) -> Result<u32, RegistryError> {
        self.client.register(subject, schema_type, schema).await
    }

    /// The schema with `id`, from the cache or the registry.
    pub async fn schema(&self, id: u32) -> Result<Arc<RegisteredSchema>, RegistryError> {
        self.client.schema(id).await
    }

    /// How many subjects the registry lists (`GET /subjects`): proves it answers and takes
    /// the credentials, without changing anything (`check-config --connect`).
    pub async fn subjects(&self) -> Result<usize, RegistryError> {
        self.client.subjects().await
    }
}

impl Client {
    fn cached_id(&self, subject: &str, schema: &str) -> Option<u32> {
        self.ids.get(&id_key(subject, schema))
    }

    fn cached_schema(&self, id: u32) -> Option<Arc<RegisteredSchema>> {
        self.schemas.get(&id)
    }

    async fn register(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
    ) -> Result<u32, RegistryError> {
        if let Some(id) = self.cached_id(subject, schema) {
            return Ok(id);
        }
        let mut body = serde_json::json!({ "schema": schema });
        if schema_type != "AVRO" {
            body["schemaType"] = Value::from(schema_type);
        }
        let path = format!("/subjects/{}/versions", percent_encode(subject));
        let what = format!("registering a schema under `{subject}`");
        let body = body.to_string();
        let answer = match self.request(Some(&body), &path, &what).await {
            // Apicurio Registry answers 409 ("already exists") when another client registers
            // the same schema text at the same moment (its content is stored once); asked
            // again it answers with the id. A schema refused as incompatible is refused again.
            Err(RegistryError::Refused { status: 409, .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                match self.request(Some(&body), &path, &what).await {
                    Err(RegistryError::Refused {
                        status: 409, body, ..
                    }) => {
                        return Err(RegistryError::Incompatible {
                            url: self.url.clone(),
                            subject: subject.to_owned(),
                            body,
                        })
                    }
                    other => other?,
                }
            }
            other => other?,
        };
        let id = answer
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| self.unreachable(format!("{what}: the answer has no id: {answer}")))?;
        let key = id_key(subject, schema);
        let bytes = key.len() + 4;
        self.ids.insert(key, id, bytes);
        Ok(id)
    }

    async fn schema(&self, id: u32) -> Result<Arc<RegisteredSchema>, RegistryError> {
        if let Some(found) = self.cached_schema(id) {
            return Ok(found);
        }
        let what = format!("fetching schema {id}");
        let answer = match self
            .request(None, &format!("/schemas/ids/{id}"), &what)
            .await
        {
            // Only the registry's own "schema not found" is the record's fault; any other
            // 404 (a URL that leads elsewhere) holds the pipeline back.
            Err(RegistryError::Refused {
                status: 404, body, ..
            }) if error_code(&body) == Some(SCHEMA_NOT_FOUND) => {
                return Err(RegistryError::UnknownId {
                    url: self.url.clone(),
                    id,
                })
            }
            other => other?,
        };
        let schema = answer
            .get("schema")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                self.unreachable(format!("{what}: the answer has no schema: {answer}"))
            })?;
        let found = Arc::new(RegisteredSchema {
            schema: schema.to_owned(),
            schema_type: answer
                .get("schemaType")
                .and_then(Value::as_str)
                .unwrap_or("AVRO")
                .to_owned(),
        });
        let bytes = 4 + found.schema.len() + found.schema_type.len();
        self.schemas.insert(id, found.clone(), bytes);
        Ok(found)
    }

    /// How many subjects the registry lists (`GET /subjects`).
    async fn subjects(&self) -> Result<usize, RegistryError> {
        let answer = self
            .request(None, "/subjects", "listing the subjects")
            .await?;
        Ok(answer.as_array().map_or(0, Vec::len))
    }

    fn unreachable(&self, message: String) -> RegistryError {
        RegistryError::Unreachable {
            url: self.url.clone(),
            message,
        }
    }

    /// One HTTP request (a POST of `body`, or a GET): the JSON body of a 2xx answer. Tells
    /// the reachability hook how it went.
    async fn request(
        &self,
        body: Option<&str>,
        path: &str,
        what: &str,
    ) -> Result<Value, RegistryError> {
        let result = self.exchange(body, path, what).await;
        let hook = self
            .reachability
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(hook) = hook {
            match &result {
                Err(e) if e.is_transient() => hook(&self.url, Some(e)),
                _ => hook(&self.url, None),
            }
        }
        result
    }

    async fn exchange(
        &self,
        body: Option<&str>,
        path: &str,
        what: &str,
    ) -> Result<Value, RegistryError> {
        let url = format!("{}{path}", self.base);
        let request = match body {
            Some(body) => self.http.post(&url).body(body.to_owned()),
            None => self.http.get(&url),
        }
        .header(
            reqwest::header::ACCEPT,
            "application/vnd.schemaregistry.v1+json, application/json",
        )
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/vnd.schemaregistry.v1+json",
        )
        // No connection is kept (`pool_max_idle_per_host(0)`): the server need not either.
        .header(reqwest::header::CONNECTION, "close");
        let request = match &self.authorization {
            Some(authorization) => request.header(reqwest::header::AUTHORIZATION, authorization),
            None => request,
        };
        let mut response = request
            .send()
            .await
            .map_err(|e| self.unreachable(format!("{what}: {}", error_chain(&e))))?;
        let status = response.status().as_u16();
        let mut answer = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.unreachable(format!("{what}: {}", error_chain(&e))))?
        {
            if answer.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(self.unreachable(format!(
                    "{what}: the answer is longer than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            answer.extend_from_slice(&chunk);
        }
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&answer);
            return Err(RegistryError::Refused {
                url: self.url.clone(),
                what: what.to_owned(),
                status,
                body: text.chars().take(500).collect(),
            });
        }
        serde_json::from_slice(&answer)
            .map_err(|e| self.unreachable(format!("{what}: the answer is not JSON: {e}")))
    }
}

/// `host:port`, an IPv6 address in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The `error_code` of a registry's error answer, if it has one.
fn error_code(body: &str) -> Option<i64> {
    serde_json::from_str::<Value>(body)
        .ok()?
        .get("error_code")
        .and_then(Value::as_i64)
}

/// An error with its causes (reqwest's own message says little: "error sending request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The TLS settings of the registry: its CA file's certificates, or the Mozilla roots; the
/// client certificate and key, when given.
fn tls_config(config: &SchemaRegistryConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(file) => {
            for certificate in crate::config::ca_certificates(file)? {
                roots.add(certificate).map_err(|e| {
                    format!("`{}`: a certificate is not usable: {e}", file.display())
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    match crate::config::client_identity(config)? {
        Some((certificates, key)) => tls
            .with_client_auth_cert(certificates, key)
            .map_err(|e| format!("the client certificate is not usable: {e}")),
        None => Ok(tls.with_no_client_auth()),
    }
}

/// `text` as one path segment: everything but RFC 3986's unreserved characters encoded.
fn percent_encode(text: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, RESERVED).to_string()
}

/// The key of a schema's id in a client's cache: its subject and its text.
fn id_key(subject: &str, schema: &str) -> String {
    let mut key = String::with_capacity(subject.len() + 1 + schema.len());
    key.push_str(subject);
    key.push('\n');
    key.push_str(schema);
    key
}

/// The schemas a reader of the wire format met, each parsed once: fetched from the registry
/// the first time its id is seen, then handed out from here. One per reader; what "parsed"
/// means (an Avro schema, a JSON Schema document) is the reader's.
#[derive(Debug)]
pub struct ParsedSchemas<S> {
    registry: RegistryClient,
    parsed: SchemaCache<u32, Arc<S>>,
}

impl<S: Send + Sync + 'static> ParsedSchemas<S> {
    /// Schemas fetched from the registry `config` names.
    pub fn new(config: &SchemaRegistryConfig) -> Result<Self, String> {
        Ok(Self {
            registry: RegistryClient::new(config)?,
            parsed: SchemaCache::default(),
        })
    }

    /// These schemas, telling `hook` whether the registry answers.
    pub fn reporting_to(mut self, hook: Option<Reachability>) -> Self {
        self.registry = self.registry.reporting_to(hook);
        self
    }

    /// The schema under `id`, parsed by `parse` the first time (which also refuses a schema of
    /// the wrong type); a failed parse is not kept, so the next record asks again.
    pub fn get<E: From<RegistryError>>(
        &self,
        id: u32,
        parse: impl FnOnce(&RegisteredSchema) -> Result<S, E>,
    ) -> Result<Arc<S>, E> {
        if let Some(schema) = self.parsed.get(&id) {
            return Ok(schema);
        }
        let registered = self.registry.known_schema(id)?;
        let schema = Arc::new(parse(&registered)?);
        self.parsed
            .insert(id, schema.clone(), 4 + registered.schema.len() * PARSED);
        Ok(schema)
    }

    /// Makes sure the schema a record in the wire format names is at hand for
    /// [`Self::get`]: fetched from the registry unless it was before. Bytes without the
    /// header are left to the reader to refuse.
    pub async fn fetch(&self, bytes: &[u8]) -> Result<(), RegistryError> {
        match split_wire_format(bytes) {
            Ok((id, _)) => self.registry.schema(id).await.map(drop),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn wire_format_round_trips_and_bad_headers_say_why() {
        let bytes = wire_format(0x0102_0304, b"datum");
        assert_eq!(&bytes[..5], &[0, 1, 2, 3, 4]);
        assert_eq!(split_wire_format(&bytes), Ok((0x0102_0304, &b"datum"[..])));
        assert!(split_wire_format(&[0, 1, 2])
            .unwrap_err()
            .contains("too short"));
        assert!(split_wire_format(b"{\"a\":1}")
            .unwrap_err()
            .contains("magic byte"));
        assert!(split_wire_format(b"").unwrap_err().contains("empty"));
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (text, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("user:pä ss", "dXNlcjpww6Qgc3M="),
        ] {
            assert_eq!(base64(text.as_bytes()), encoded, "{text}");
        }
    }

    #[test]
    fn refused_credentials_and_wrong_paths_hold_back_and_refused_records_do_not() {
        let refused = |status| RegistryError::Refused {
            url: "http://r".into(),
            what: "fetching schema 1".into(),
            status,
            body: String::new(),
        };
        for (status, reason) in [
            (401, "unauthorized"),
            (403, "forbidden"),
            (404, "not_found"),
            (429, "unavailable"),
            (503, "unavailable"),
        ] {
            assert!(refused(status).is_transient(), "{status}");
            assert_eq!(refused(status).reason(), reason);
        }
        for status in [400, 409, 422] {
            assert!(!refused(status).is_transient(), "{status}");
        }
        let unknown = RegistryError::UnknownId {
            url: "http://r".into(),
            id: 9,
        };
        assert!(
            !unknown.is_transient(),
            "an unknown id is the record's fault"
        );
    }

    #[test]
    fn subjects_are_escaped_and_error_codes_read() {
        assert_eq!(percent_encode("db.c-value"), "db.c-value");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
        assert_eq!(
            error_code(
                r#"{"message":"No content with id/hash 'contentId-9' was found.","error_code":40403}"#
            ),
            Some(SCHEMA_NOT_FOUND)
        );
        assert_eq!(error_code("<html>Not Found</html>"), None);
        assert_eq!(authority("::1", 8081), "[::1]:8081");
        assert_eq!(authority("r", 80), "r:80");
    }

    /// A registry answering every request with `schema` (type `JSON`), counting requests.
    fn one_schema_registry(schema: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = serde_json::json!({"schema": schema, "schemaType": "JSON"}).to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, requests)
    }

    #[test]
    fn parsed_schemas_parse_each_id_once_and_keep_no_failure() {
        let (url, requests) = one_schema_registry("{\"type\":\"object\"}");
        let schemas: ParsedSchemas<String> =
            ParsedSchemas::new(&SchemaRegistryConfig::at(url)).expect("a registry URL");
        let parses = std::cell::Cell::new(0);
        let parse = |registered: &RegisteredSchema| -> Result<String, RegistryError> {
            parses.set(parses.get() + 1);
            Ok(format!("{} {}", registered.schema_type, registered.schema))
        };
        for _ in 0..3 {
            let schema = blocking(|| schemas.get(7, parse)).expect("schema 7");
            assert_eq!(*schema, "JSON {\"type\":\"object\"}");
        }
        assert_eq!(parses.get(), 1, "parsed once");
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A refused parse is the caller's error, and is asked again next time.
        let refuse = |_: &RegisteredSchema| -> Result<String, RegistryError> {
            Err(RegistryError::UnknownId {
                url: String::new(),
                id: 8,
            })
        };
        assert!(blocking(|| schemas.get(8, refuse)).is_err());
        assert!(schemas.get(8, parse).is_ok(), "the failure was not kept");
    }

    /// A sink reading ever new schema ids (a source inferring a schema per document shape)
    /// kept every schema it fetched, and every parse of one, for good.
    #[tokio::test]
    async fn fetched_and_parsed_schemas_stay_within_their_byte_bound() {
        const BOUND: u64 = super::super::schema_cache::MAX_BYTES;
        let text: &'static str = Box::leak(
            format!("{{\"type\":\"object\",\"title\":\"{}\"}}", "x".repeat(4000)).into_boxed_str(),
        );
        let (url, _) = one_schema_registry(text);
        let schemas: ParsedSchemas<String> =
            ParsedSchemas::new(&SchemaRegistryConfig::at(url)).expect("a registry URL");
        let parse = |registered: &RegisteredSchema| -> Result<String, RegistryError> {
            Ok(registered.schema.clone())
        };
        // 12 MiB of schemas in all, three times the bound.
        for id in 0..3_000_u32 {
            schemas
                .fetch(&wire_format(id, b"datum"))
                .await
                .expect("fetched");
            let parsed = schemas.get(id, parse).expect("parsed");
            assert_eq!(parsed.len(), text.len());
        }
        let (fetched, parsed) = (
            schemas.registry.client.schemas.bytes(),
            schemas.parsed.bytes(),
        );
        assert!(
            fetched <= BOUND && parsed <= BOUND,
            "fetched schemas hold {fetched} bytes, parsed ones {parsed}: over {BOUND}"
        );
        // What was dropped is fetched again when asked for.
        schemas
            .fetch(&wire_format(0, b"datum"))
            .await
            .expect("fetched again");
        assert!(schemas.get(0, parse).is_ok());
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_transient() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let client = RegistryClient::new(&SchemaRegistryConfig {
            timeout: Duration::from_secs(2),
            ..SchemaRegistryConfig::at(format!("http://127.0.0.1:{port}"))
        })
        .expect("a client");
        let told: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let hook: Reachability = {
            let told = told.clone();
            Arc::new(move |_, error| {
                told.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(error.map(ToString::to_string))
            })
        };
        let client = client.reporting_to(Some(hook));
        let err = client.schema(1).await.expect_err("nothing listens");
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("unreachable"), "{err}");
        let told = told.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(told, vec![Some(err.to_string())], "the hook hears why");
    }
}
