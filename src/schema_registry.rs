//! A client of a Confluent-compatible schema registry (Confluent Schema Registry, Apicurio
//! Registry's `/apis/ccompat/v7`, Karapace): registers schemas under a subject and fetches
//! schemas by id, caching both, so each schema costs one request per process.
//!
//! It speaks HTTP/1.0 over `std::net` (one connection per request, closed by the server, so
//! no chunked bodies and no connection pool): the registry is asked once per new schema, and
//! no HTTP client crate is in the dependency tree. `https` goes through `rustls` (the MongoDB
//! driver's TLS library), the certificate checked against the configured CA file or the
//! Mozilla roots. Requests block the calling thread for at most `timeout`; callers are the
//! pure record conversions, which have no async context.
//!
//! Whether the registry answers is told to an optional [`Reachability`] hook after each
//! request, so `/ready` can say why a pipeline holds back.
//!
//! The wire format the schemas are used in: byte 0 is 0 (the format's version), bytes 1..5
//! the schema id, big-endian, then the encoded datum.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

use crate::config::{RegistryAddress, SchemaRegistryConfig};

/// The registry wire format's first byte.
pub const MAGIC_BYTE: u8 = 0;

/// The largest registry answer read: schemas are small, and a bound keeps a wrong server from
/// filling the memory.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// The most (subject, schema) → id entries a client keeps.
const MAX_CACHED_IDS: usize = 4096;

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
    /// The registry refused the request (an invalid schema, bad credentials).
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
}

impl RegistryError {
    /// Whether asking again later may succeed (the registry is down or overloaded).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Refused { status, .. } => *status >= 500 || *status == 429,
            Self::UnknownId { .. } | Self::Incompatible { .. } => false,
        }
    }
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
/// error when it could not be reached (or answered 5xx/429). `/ready` reports through it.
pub type Reachability = Arc<dyn Fn(&str, Option<&RegistryError>) + Send + Sync>;

/// A registry client with its caches; one per pipeline (or per sink topic).
pub struct RegistryClient {
    url: String,
    address: RegistryAddress,
    authorization: Option<String>,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
    reachability: Option<Reachability>,
    /// Subject → schema text → id: looked up without copying the text.
    ids: Mutex<HashMap<String, HashMap<String, u32>>>,
    schemas: Mutex<HashMap<u32, Arc<RegisteredSchema>>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("url", &self.url)
            .field("tls", &self.tls.is_some())
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
        let tls = match address.tls {
            true => Some(tls_config(config)?),
            false => None,
        };
        Ok(Self {
            url: config.url.clone(),
            address,
            authorization,
            timeout: config.timeout,
            tls,
            reachability: None,
            ids: Mutex::default(),
            schemas: Mutex::default(),
        })
    }

    /// This client, telling `hook` after each request whether the registry answered.
    pub fn reporting_to(mut self, hook: Option<Reachability>) -> Self {
        self.reachability = hook;
        self
    }

    /// The id of `schema` (`schema_type` `AVRO` or `JSON`) under `subject`, registering it
    /// there unless this client did so before. The registry answers with the id it already
    /// has for an identical schema.
    pub fn register(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
    ) -> Result<u32, RegistryError> {
        let cached = self
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(subject)
            .and_then(|schemas| schemas.get(schema).copied());
        if let Some(id) = cached {
            return Ok(id);
        }
        let mut body = serde_json::json!({ "schema": schema });
        if schema_type != "AVRO" {
            body["schemaType"] = Value::from(schema_type);
        }
        let path = format!("/subjects/{}/versions", percent_encode(subject));
        let what = format!("registering a schema under `{subject}`");
        let body = body.to_string();
        let answer = match self.request("POST", &path, Some(&body), &what) {
            // Apicurio Registry answers 409 ("already exists") when another client registers
            // the same schema text at the same moment (its content is stored once); asked
            // again it answers with the id. A schema refused as incompatible is refused again.
            Err(RegistryError::Refused { status: 409, .. }) => {
                std::thread::sleep(Duration::from_millis(100));
                match self.request("POST", &path, Some(&body), &what) {
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
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        // Ever new schemas (change events naming ever new fields) must not grow it without
        // end: start over when full; a schema dropped costs one request again.
        if ids.values().map(HashMap::len).sum::<usize>() >= MAX_CACHED_IDS {
            ids.clear();
        }
        ids.entry(subject.to_owned())
            .or_default()
            .insert(schema.to_owned(), id);
        Ok(id)
    }

    /// The schema with `id`, from the cache or the registry.
    pub fn schema(&self, id: u32) -> Result<Arc<RegisteredSchema>, RegistryError> {
        if let Some(found) = self
            .schemas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Ok(found.clone());
        }
        let what = format!("fetching schema {id}");
        let answer = match self.request("GET", &format!("/schemas/ids/{id}"), None, &what) {
            Err(RegistryError::Refused { status: 404, .. }) => {
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
        self.schemas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, found.clone());
        Ok(found)
    }

    /// How many subjects the registry lists (`GET /subjects`): proves it answers and takes
    /// the credentials, without changing anything (`check-config --connect`).
    pub fn subjects(&self) -> Result<usize, RegistryError> {
        let answer = self.request("GET", "/subjects", None, "listing the subjects")?;
        Ok(answer.as_array().map_or(0, Vec::len))
    }

    fn unreachable(&self, message: String) -> RegistryError {
        RegistryError::Unreachable {
            url: self.url.clone(),
            message,
        }
    }

    /// One HTTP request; the JSON body of a 2xx answer. Tells the reachability hook how it
    /// went.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        what: &str,
    ) -> Result<Value, RegistryError> {
        let result = self.exchange(method, path, body, what);
        if let Some(hook) = &self.reachability {
            match &result {
                Err(e) if e.is_transient() => hook(&self.url, Some(e)),
                _ => hook(&self.url, None),
            }
        }
        result
    }

    fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        what: &str,
    ) -> Result<Value, RegistryError> {
        let io = |e: std::io::Error| self.unreachable(format!("{what}: {e}"));
        let RegistryAddress {
            host,
            port,
            path: prefix,
            ..
        } = &self.address;
        let addr = (host.as_str(), *port)
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| self.unreachable(format!("{what}: {host} has no address")))?;
        let tcp = TcpStream::connect_timeout(&addr, self.timeout).map_err(io)?;
        tcp.set_read_timeout(Some(self.timeout)).map_err(io)?;
        tcp.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let mut stream: Box<dyn ReadWrite> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| {
                    self.unreachable(format!("{what}: `{host}` is not a TLS server name: {e}"))
                })?;
                let connection = rustls::ClientConnection::new(tls.clone(), name)
                    .map_err(|e| self.unreachable(format!("{what}: TLS: {e}")))?;
                Box::new(rustls::StreamOwned::new(connection, tcp))
            }
        };
        let body = body.unwrap_or_default();
        let mut request = format!(
            "{method} {prefix}{path} HTTP/1.0\r\nHost: {host}:{port}\r\n\
             Accept: application/vnd.schemaregistry.v1+json, application/json\r\n\
             Content-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(authorization) = &self.authorization {
            request.push_str(&format!("Authorization: {authorization}\r\n"));
        }
        request.push_str("Connection: close\r\n\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut answer = Vec::new();
        match stream.take(MAX_RESPONSE_BYTES).read_to_end(&mut answer) {
            Ok(_) => {}
            // A TLS server that closes the connection without `close_notify`: the answer
            // ends with the connection, as in plain HTTP/1.0.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
            Err(e) => return Err(io(e)),
        }
        let (status, body) =
            parse_response(&answer).map_err(|e| self.unreachable(format!("{what}: {e}")))?;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(body);
            return Err(RegistryError::Refused {
                url: self.url.clone(),
                what: what.to_owned(),
                status,
                body: text.chars().take(500).collect(),
            });
        }
        serde_json::from_slice(body)
            .map_err(|e| self.unreachable(format!("{what}: the answer is not JSON: {e}")))
    }
}

/// A plain or TLS connection.
trait ReadWrite: Read + Write {}

impl<T: Read + Write> ReadWrite for T {}

/// The TLS settings of an `https` registry: its CA file's certificates, or the Mozilla roots.
fn tls_config(config: &SchemaRegistryConfig) -> Result<Arc<rustls::ClientConfig>, String> {
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
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

/// The status and body of an HTTP/1.x answer read to its end.
fn parse_response(answer: &[u8]) -> Result<(u16, &[u8]), String> {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no end of headers")?;
    let head = std::str::from_utf8(&answer[..end]).map_err(|_| "the headers are not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("not an HTTP answer: `{status_line}`"))?;
    let chunked = lines.any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let body = &answer[end + 4..];
    if chunked {
        // HTTP/1.0 answers are not chunked; a server that does it anyway is not supported.
        return Err("the answer is chunked, which an HTTP/1.0 request does not expect".into());
    }
    Ok((status, body))
}

/// Subjects are topic names plus `-key`/`-value`; anything else is escaped for the path.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648), for the basic authentication header.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The schemas a reader of the wire format met, each parsed once: fetched from the registry
/// the first time its id is seen, then handed out from here. One per reader; what "parsed"
/// means (an Avro schema, a JSON Schema document) is the reader's.
#[derive(Debug)]
pub struct ParsedSchemas<S> {
    registry: RegistryClient,
    parsed: Mutex<HashMap<u32, Arc<S>>>,
}

impl<S> ParsedSchemas<S> {
    /// Schemas fetched from the registry `config` names.
    pub fn new(config: &SchemaRegistryConfig) -> Result<Self, String> {
        Ok(Self {
            registry: RegistryClient::new(config)?,
            parsed: Mutex::default(),
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
        let known = self
            .parsed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned();
        if let Some(schema) = known {
            return Ok(schema);
        }
        let registered = self.registry.schema(id)?;
        let schema = Arc::new(parse(&registered)?);
        self.parsed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, schema.clone());
        Ok(schema)
    }
}

#[cfg(test)]
mod tests {
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
    fn responses_are_parsed_and_refusals_kept() {
        let answer = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"id\":3}";
        assert_eq!(parse_response(answer), Ok((200, &b"{\"id\":3}"[..])));
        let answer = b"HTTP/1.1 404 Not Found\r\n\r\n{\"error_code\":40403}";
        assert_eq!(parse_response(answer).map(|(s, _)| s), Ok(404));
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc")
                .is_err()
        );
        assert_eq!(percent_encode("db.c-value"), "db.c-value");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
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
            let schema = schemas.get(7, parse).expect("schema 7");
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
        assert!(schemas.get(8, refuse).is_err());
        assert!(schemas.get(8, parse).is_ok(), "the failure was not kept");
    }

    #[test]
    fn an_unreachable_registry_is_transient() {
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
        let err = client.schema(1).expect_err("nothing listens");
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("unreachable"), "{err}");
        let told = told.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(told, vec![Some(err.to_string())], "the hook hears why");
    }
}
