//! `schema_registry`: the schema registry of a pipeline whose records are Avro or JSON Schema
//! (in `[kafka]`, shared by every pipeline, or in a pipeline, for it alone), and its
//! validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::format::OutputFormat;
use super::violation::Violation;

/// A Confluent-compatible schema registry (Confluent Schema Registry, Apicurio Registry's
/// `/apis/ccompat/v7`, Karapace), for the `avro` and `json_schema` formats. Given in
/// `[kafka.schema_registry]`, it is every pipeline's; a pipeline's own `schema_registry`
/// replaces it (as a whole) for that pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// The registry's base URL, `http://host:port` plus the API's path if it has one
    /// (`http://127.0.0.1:8081/apis/ccompat/v7`), or `https://...` (TLS, the server's
    /// certificate checked against `ca_file`, or else the Mozilla root certificates).
    pub url: String,
    /// HTTP basic authentication: the user.
    #[serde(default)]
    pub username: Option<String>,
    /// HTTP basic authentication: the password (masked in every output).
    #[serde(default)]
    pub password: Option<String>,
    /// With an `https` URL: a PEM file of the certificate authorities the registry's
    /// certificate must chain to (instead of the Mozilla root certificates).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// With an `https` URL: a PEM file of the certificate (chain) the daemon presents to a
    /// registry that asks for client certificates (mutual TLS); needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// With `cert_file`: a PEM file of its private key (PKCS#8, PKCS#1 or SEC1, unencrypted).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The HTTP proxy to reach the registry through (`http://proxy:3128`, credentials
    /// allowed in it and masked in every output). Absent: the `HTTPS_PROXY`, `HTTP_PROXY`,
    /// `ALL_PROXY` and `NO_PROXY` environment variables decide, as for `curl`.
    #[serde(default)]
    pub proxy: Option<String>,
    /// How long one request to the registry may take, connection included. The request
    /// holds back only its own pipeline meanwhile; each address a name resolves to is tried.
    #[serde(default = "default_registry_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl SchemaRegistryConfig {
    /// A registry at `url` with the defaults: no credentials, no CA file, a 10 s timeout.
    pub fn at(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            proxy: None,
            timeout: default_registry_timeout(),
        }
    }
}

fn default_registry_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Where a registry URL points: what an HTTP request needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAddress {
    /// Host name or address.
    pub host: String,
    /// TCP port (80, or 443 with TLS, when the URL gives none).
    pub port: u16,
    /// Whether the registry speaks TLS (`https`).
    pub tls: bool,
    /// The API's path prefix, without a trailing `/` (empty for the root).
    pub path: String,
}

impl SchemaRegistryConfig {
    /// The URL taken apart, or why it is not one the daemon can use.
    pub fn address(&self) -> Result<RegistryAddress, String> {
        let url = url::Url::parse(&self.url).map_err(|e| format!("not a URL: {e}"))?;
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "`{other}` URLs are not supported: give an `http://` or `https://` URL"
                ))
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("holds credentials: give them as `username` and `password`".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must not have a query or fragment".into());
        }
        let host = url
            .host_str()
            .ok_or_else(|| "has no host".to_owned())?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(RegistryAddress {
            host,
            port: url.port().unwrap_or(if tls { 443 } else { 80 }),
            tls,
            path: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Collects the problems of this section, found under `key`.
    pub fn validate(&self, key: &str, out: &mut Vec<Violation>) {
        if let Err(message) = self.address() {
            out.push(Violation::new(format!("{key}.url"), message));
        }
        if self.password.is_some() && self.username.is_none() {
            out.push(Violation::new(
                format!("{key}.username"),
                "is missing: `password` needs it",
            ));
        }
        if self.timeout.is_zero() {
            out.push(Violation::new(
                format!("{key}.timeout"),
                "must be longer than 0",
            ));
        }
        if let Some(proxy) = &self.proxy {
            if let Err(e) = url::Url::parse(proxy) {
                out.push(Violation::new(
                    format!("{key}.proxy"),
                    format!("is not a URL: {e}"),
                ));
            }
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => out.push(Violation::new(
                format!("{key}.key_file"),
                "is missing: `cert_file` needs it",
            )),
            (None, Some(_)) => out.push(Violation::new(
                format!("{key}.cert_file"),
                "is missing: `key_file` needs it",
            )),
            (Some(_), Some(_)) => {
                if let Err(message) = client_identity(self) {
                    out.push(Violation::new(format!("{key}.cert_file"), message));
                }
                if self.address().is_ok_and(|a| !a.tls) {
                    out.push(Violation::new(
                        format!("{key}.cert_file"),
                        "is used only with an `https://` URL",
                    ));
                }
            }
            (None, None) => {}
        }
        if let Some(file) = &self.ca_file {
            if let Err(message) = ca_certificates(file) {
                out.push(Violation::new(format!("{key}.ca_file"), message));
            }
            if self.address().is_ok_and(|a| !a.tls) {
                out.push(Violation::new(
                    format!("{key}.ca_file"),
                    "is used only with an `https://` URL",
                ));
            }
        }
    }
}

/// The validator of a JSON Schema given in the configuration, or why it is not one (no remote
/// `$ref`s: a schema must be whole).
pub fn json_schema_validator(schema: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| format!("is not a valid JSON Schema: {e}"))
}

/// Why `text`, a schema given in the configuration for records in `format`, cannot be used:
/// an Avro schema must parse and be a record, a JSON Schema must be a JSON object describing
/// an object, a `.proto` schema must compile and have a message.
pub fn given_schema(text: &str, format: OutputFormat) -> Result<(), String> {
    match format {
        OutputFormat::Avro => match apache_avro::Schema::parse_str(text) {
            Ok(apache_avro::Schema::Record(_)) => Ok(()),
            Ok(other) => Err(format!(
                "is an Avro `{:?}` schema; documents need a `record`",
                apache_avro::schema::SchemaKind::from(&other)
            )),
            Err(e) => Err(format!("is not a valid Avro schema: {e}")),
        },
        OutputFormat::JsonSchema => {
            let schema: serde_json::Value =
                serde_json::from_str(text).map_err(|e| format!("is not JSON: {e}"))?;
            let Some(object) = schema.as_object() else {
                return Err("is not a JSON Schema: not a JSON object".into());
            };
            match object.get("type") {
                None => {}
                Some(serde_json::Value::String(kind)) if kind == "object" => {}
                Some(other) => {
                    return Err(format!(
                        "describes `\"type\": {other}`; documents need `\"type\": \"object\"`"
                    ))
                }
            }
            json_schema_validator(&schema).map(drop)
        }
        OutputFormat::Protobuf => crate::codec::protobuf::given_message(text).map(drop),
        _ => Err("is used only with the `avro`, `json_schema` and `protobuf` formats".into()),
    }
}

/// The certificates of the PEM file `file`, or why there are none.
pub fn ca_certificates(
    file: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let shown = file.display();
    let certificates = rustls_pki_types::CertificateDer::pem_file_iter(file)
        .map_err(|e| format!("`{shown}` cannot be read: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{shown}` is not a PEM file of certificates: {e}"))?;
    if certificates.is_empty() {
        return Err(format!("`{shown}` holds no PEM certificate"));
    }
    Ok(certificates)
}

/// The client certificate chain and key of `config` (`cert_file`, `key_file`), `None` when
/// it has none, or why they are not usable.
pub fn client_identity(
    config: &SchemaRegistryConfig,
) -> Result<
    Option<(
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    )>,
    String,
> {
    use rustls_pki_types::pem::PemObject;
    let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) else {
        return Ok(None);
    };
    let certificates = ca_certificates(cert)?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("`{}` holds no usable PEM private key: {e}", key.display()))?;
    Ok(Some((certificates, key)))
}

/// The `schema_registry` problem of a pipeline that needs one (`needed` names the setting that
/// does) and has none.
pub(super) fn required(
    key: &str,
    registry: Option<&SchemaRegistryConfig>,
    needed: Option<&str>,
    out: &mut Vec<Violation>,
) {
    match (registry, needed) {
        (None, Some(setting)) => out.push(Violation::new(
            format!("{key}.schema_registry"),
            format!("is missing: {setting} needs a schema registry"),
        )),
        (Some(registry), _) => registry.validate(&format!("{key}.schema_registry"), out),
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SubjectNameStrategy;

    fn config(url: &str) -> SchemaRegistryConfig {
        SchemaRegistryConfig::at(url)
    }

    #[test]
    fn avro_pipelines_without_a_registry_are_refused() {
        let text = "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"k:9092\"\n\
             [[source]]\nname = \"s\"\nformat = \"avro\"\n\
             [[sink]]\nname = \"k\"\ntopics = [\"t\"]\ndatabase = \"d\"\nkey_format = \"avro\"\n\
             [sink.topic_overrides.t]\nschema_registry = { url = \"ftp://r\" }\n";
        let message = match super::super::load_str(text, std::path::Path::new("t.toml")) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        assert!(message.contains("3 problems"), "{message}");
        assert!(
            message.contains("`source[0].schema_registry`: is missing: `format = \"avro\"`"),
            "{message}"
        );
        assert!(
            message.contains("`sink[0].schema_registry`: is missing: `key_format = \"avro\"`"),
            "{message}"
        );
        assert!(
            message.contains("`sink[0].topic_overrides.t.schema_registry.url`: `ftp` URLs"),
            "{message}"
        );
    }

    fn load(text: &str) -> Result<super::super::Config, String> {
        let head = "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"k:9092\"\n";
        super::super::load_str(&format!("{head}{text}"), std::path::Path::new("t.toml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn key_and_value_formats_and_schemas_are_checked_at_load_naming_the_key() {
        let message = load(
            "[[source]]\nname = \"s\"\nkey_format = \"json_schema\"\n\
             value_schema = '{\"type\": \"record\", \"name\": \"R\", \"fields\": [{\"name\": \"a\", \"type\": \"strin\"}]}'\n\
             [[source]]\nname = \"t\"\nvalue_format = \"avro\"\nschema_registry = { url = \"http://r\" }\n\
             key_schema = '[1]'\nvalue_schema = '\"string\"'\n\
             [[source]]\nname = \"u\"\nformat = \"json_schema\"\nschema_registry = { url = \"http://r\" }\n\
             key_schema = '{\"type\": \"array\"}'\nvalue_schema = 'nope'\n",
        )
        .expect_err("invalid");
        for expected in [
            "`source[0].schema_registry`: is missing: `key_format = \"json_schema\"` needs a schema registry",
            "`source[0].value_schema`: is used only with the `avro`, `json_schema` and `protobuf` formats",
            "`source[1].key_schema`: is used only with",
            "`source[1].value_schema`: is an Avro `String` schema; documents need a `record`",
            "`source[2].key_schema`: describes `\"type\": \"array\"`",
            "`source[2].value_schema`: is not JSON",
        ] {
            assert!(message.contains(expected), "{expected}\n in {message}");
        }
        assert!(message.contains("6 problems"), "{message}");
        let bad_avro = load(
            "[[source]]\nname = \"s\"\nformat = \"avro\"\nschema_registry = { url = \"http://r\" }\n\
             value_schema = '{\"type\": \"record\", \"name\": \"R\", \"fields\": [{\"name\": \"a\", \"type\": \"strin\"}]}'\n",
        )
        .expect_err("invalid");
        assert!(
            bad_avro.contains("`source[0].value_schema`: is not a valid Avro schema"),
            "{bad_avro}"
        );
        let bad_json_schema = load(
            "[[source]]\nname = \"s\"\nformat = \"json_schema\"\nschema_registry = { url = \"http://r\" }\n\
             value_schema = '{\"type\": \"object\", \"properties\": {\"a\": {\"type\": 5}}}'\n",
        )
        .expect_err("invalid");
        assert!(
            bad_json_schema.contains("`source[0].value_schema`: is not a valid JSON Schema"),
            "{bad_json_schema}"
        );
        let config = load(
            "[[source]]\nname = \"s\"\nkey_format = \"avro\"\nvalue_format = \"json_schema\"\n\
             schema_registry = { url = \"http://r\" }\n\
             key_schema = '{\"type\": \"record\", \"name\": \"K\", \"fields\": [{\"name\": \"_id\", \"type\": \"long\"}]}'\n\
             value_schema = '{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"string\"}}}'\n",
        )
        .expect("valid");
        assert_eq!(config.sources[0].key_format(), OutputFormat::Avro);
        assert_eq!(config.sources[0].value_format(), OutputFormat::JsonSchema);
    }

    #[test]
    fn protobuf_formats_and_subject_name_strategies_are_read_and_checked() {
        let config = load(
            "[[source]]\nname = \"s\"\nformat = \"protobuf\"\nschema_registry = { url = \"http://r\" }\n\
             value_subject_name_strategy = \"topic_record_name\"\n\
             value_schema = 'syntax = \"proto3\"; package p; message Order { int64 id = 1; }'\n\
             [[sink]]\nname = \"k\"\ntopics = [\"t\"]\ndatabase = \"d\"\nvalue_format = \"protobuf\"\n\
             schema_registry = { url = \"http://r\" }\n",
        )
        .expect("valid");
        assert_eq!(config.sources[0].value_format(), OutputFormat::Protobuf);
        assert_eq!(
            config.sources[0].value_subject_name_strategy,
            SubjectNameStrategy::TopicRecordName
        );
        assert_eq!(
            config.sources[0].key_subject_name_strategy,
            SubjectNameStrategy::TopicName
        );
        assert_eq!(
            config.sinks[0].value_format,
            super::super::RecordFormat::Protobuf
        );
        let message = load(
            "[[source]]\nname = \"s\"\nformat = \"protobuf\"\n\
             value_schema = 'message {'\nkey_subject_name_strategy = \"record_name\"\n\
             [[source]]\nname = \"t\"\nkey_subject_name_strategy = \"record_name\"\n",
        )
        .expect_err("invalid");
        for expected in [
            "`source[0].schema_registry`: is missing: `format = \"protobuf\"` needs a schema registry",
            "`source[0].value_schema`: is not a valid .proto schema",
            "`source[1].key_subject_name_strategy`: is used only with the `avro`, `json_schema` and `protobuf` formats",
        ] {
            assert!(message.contains(expected), "{expected}\n in {message}");
        }
    }

    #[test]
    fn the_shared_registry_is_every_pipelines_unless_one_has_its_own_and_reported_once() {
        let config = load(
            "schema_registry = { url = \"http://shared:8081\" }\n\
             [[source]]\nname = \"s\"\nformat = \"avro\"\n\
             [[sink]]\nname = \"k\"\ntopics = [\"t\"]\ndatabase = \"d\"\nvalue_format = \"avro\"\n\
             schema_registry = { url = \"http://own:8081\" }\n",
        );
        // `schema_registry` written after `bootstrap_servers` belongs to `[kafka]`.
        let config = config.expect("valid");
        let url = |r: &Option<SchemaRegistryConfig>| r.as_ref().map(|r| r.url.clone());
        assert_eq!(
            url(&config.sources[0].schema_registry).as_deref(),
            Some("http://shared:8081")
        );
        assert_eq!(
            url(&config.sinks[0].schema_registry).as_deref(),
            Some("http://own:8081")
        );
        let message = load(
            "schema_registry = { url = \"ftp://shared\", timeout = \"0s\" }\n\
             [[source]]\nname = \"s\"\nformat = \"avro\"\n\
             [[source]]\nname = \"t\"\nformat = \"avro\"\n",
        )
        .expect_err("invalid");
        assert!(message.contains("2 problems"), "{message}");
        assert!(
            message.contains("`kafka.schema_registry.url`: `ftp` URLs are not supported"),
            "{message}"
        );
        assert!(
            message.contains("`kafka.schema_registry.timeout`"),
            "{message}"
        );
    }

    #[test]
    fn a_ca_file_must_hold_certificates_and_go_with_https() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = dir.path().join("ca.pem");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        // A self-signed certificate, as PEM (its content is not checked here, only parsed).
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUe7s=\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        for (url, file, why) in [
            (
                "https://r",
                dir.path().join("missing.pem"),
                "cannot be read",
            ),
            ("https://r", junk.clone(), "holds no PEM certificate"),
            ("http://r", pem.clone(), "only with an `https://` URL"),
        ] {
            let mut out = Vec::new();
            SchemaRegistryConfig {
                ca_file: Some(file),
                ..config(url)
            }
            .validate("kafka.schema_registry", &mut out);
            assert_eq!(out.len(), 1, "{out:?}");
            assert_eq!(out[0].key, "kafka.schema_registry.ca_file");
            assert!(out[0].message.contains(why), "{why}: {out:?}");
        }
        let mut out = Vec::new();
        SchemaRegistryConfig {
            ca_file: Some(pem),
            ..config("https://r")
        }
        .validate("k", &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn client_certificates_come_in_pairs_of_usable_files_and_a_proxy_is_a_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        for (changed, key, why) in [
            (
                SchemaRegistryConfig {
                    cert_file: Some(missing.clone()),
                    ..config("https://r")
                },
                "k.key_file",
                "`cert_file` needs it",
            ),
            (
                SchemaRegistryConfig {
                    key_file: Some(missing.clone()),
                    ..config("https://r")
                },
                "k.cert_file",
                "`key_file` needs it",
            ),
            (
                SchemaRegistryConfig {
                    cert_file: Some(missing.clone()),
                    key_file: Some(missing.clone()),
                    ..config("https://r")
                },
                "k.cert_file",
                "cannot be read",
            ),
            (
                SchemaRegistryConfig {
                    proxy: Some("not a url".into()),
                    ..config("https://r")
                },
                "k.proxy",
                "is not a URL",
            ),
        ] {
            let mut out = Vec::new();
            changed.validate("k", &mut out);
            assert!(
                out.iter().any(|v| v.key == key && v.message.contains(why)),
                "{key} {why}: {out:?}"
            );
        }
    }

    #[test]
    fn address_takes_host_port_and_path() {
        assert_eq!(
            config("http://127.0.0.1:8081/apis/ccompat/v7/").address(),
            Ok(RegistryAddress {
                host: "127.0.0.1".into(),
                port: 8081,
                tls: false,
                path: "/apis/ccompat/v7".into()
            })
        );
        assert_eq!(
            config("http://registry.example").address(),
            Ok(RegistryAddress {
                host: "registry.example".into(),
                port: 80,
                tls: false,
                path: String::new()
            })
        );
        assert_eq!(
            config("https://registry.example/api").address(),
            Ok(RegistryAddress {
                host: "registry.example".into(),
                port: 443,
                tls: true,
                path: "/api".into()
            })
        );
        assert_eq!(
            config("http://[::1]:8081").address().map(|a| a.host),
            Ok("::1".to_owned())
        );
    }

    #[test]
    fn unusable_urls_say_why() {
        for (url, why) in [
            ("ftp://r:8081", "not supported"),
            ("r:8081", "not supported"),
            ("not a url", "not a URL"),
            ("http://u:p@r:8081", "credentials"),
            ("http://r:8081/?x=1", "query"),
        ] {
            let mut out = Vec::new();
            config(url).validate("source[0].schema_registry", &mut out);
            assert_eq!(out.len(), 1, "{url}: {out:?}");
            assert_eq!(out[0].key, "source[0].schema_registry.url");
            assert!(out[0].message.contains(why), "{url}: {out:?}");
        }
    }

    #[test]
    fn a_password_needs_a_user_and_a_pipeline_that_needs_a_registry_has_one() {
        let mut out = Vec::new();
        let with_password = SchemaRegistryConfig {
            password: Some("p".into()),
            ..config("http://r:8081")
        };
        with_password.validate("k", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, "k.username");
        let mut out = Vec::new();
        required("sink[1]", None, Some("`value_format = \"avro\"`"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, "sink[1].schema_registry");
        let mut out = Vec::new();
        required("sink[1]", None, None, &mut out);
        assert!(out.is_empty());
    }
}
