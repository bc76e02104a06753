//! `schema_registry`: the schema registry of a pipeline whose records are Avro, and its
//! validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::Violation;

/// A Confluent-compatible schema registry (Confluent Schema Registry, Apicurio Registry's
/// `/apis/ccompat/v7`, Karapace), for `format = "avro"` (source) and `key_format` /
/// `value_format = "avro"` (sink).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// The registry's base URL, `http://host:port` plus the API's path if it has one
    /// (`http://127.0.0.1:8081/apis/ccompat/v7`). `https` is not supported yet.
    pub url: String,
    /// HTTP basic authentication: the user.
    #[serde(default)]
    pub username: Option<String>,
    /// HTTP basic authentication: the password (masked in every output).
    #[serde(default)]
    pub password: Option<String>,
    /// How long one request to the registry may take, connection included.
    #[serde(default = "default_registry_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_registry_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Where a registry URL points: what an HTTP request needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAddress {
    /// Host name or address.
    pub host: String,
    /// TCP port (80 when the URL gives none).
    pub port: u16,
    /// The API's path prefix, without a trailing `/` (empty for the root).
    pub path: String,
}

impl SchemaRegistryConfig {
    /// The URL taken apart, or why it is not one the daemon can use.
    pub fn address(&self) -> Result<RegistryAddress, String> {
        let url = url::Url::parse(&self.url).map_err(|e| format!("not a URL: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!(
                "`{}` URLs are not supported yet: give an `http://` URL",
                url.scheme()
            ));
        }
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
            port: url.port().unwrap_or(80),
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
    }
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

    fn config(url: &str) -> SchemaRegistryConfig {
        SchemaRegistryConfig {
            url: url.into(),
            username: None,
            password: None,
            timeout: default_registry_timeout(),
        }
    }

    #[test]
    fn avro_pipelines_without_a_registry_are_refused() {
        let text = "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"k:9092\"\n\
             [[source]]\nname = \"s\"\nformat = \"avro\"\n\
             [[sink]]\nname = \"k\"\ntopics = [\"t\"]\ndatabase = \"d\"\nkey_format = \"avro\"\n\
             [sink.topic_overrides.t]\nschema_registry = { url = \"https://r\" }\n";
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
            message.contains("`sink[0].topic_overrides.t.schema_registry.url`: `https` URLs"),
            "{message}"
        );
    }

    #[test]
    fn address_takes_host_port_and_path() {
        assert_eq!(
            config("http://127.0.0.1:8081/apis/ccompat/v7/").address(),
            Ok(RegistryAddress {
                host: "127.0.0.1".into(),
                port: 8081,
                path: "/apis/ccompat/v7".into()
            })
        );
        assert_eq!(
            config("http://registry.example").address(),
            Ok(RegistryAddress {
                host: "registry.example".into(),
                port: 80,
                path: String::new()
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
            ("https://r:8081", "not supported yet"),
            ("r:8081", "not supported yet"),
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
