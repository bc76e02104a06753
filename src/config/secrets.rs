//! Masking secrets before a configuration is shown (`check-config`, logs).

use super::Config;

const MASK: &str = "****";

/// librdkafka property names whose values are secrets.
fn is_secret_kafka_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "jaas.config", "key.pem", "token"]
        .iter()
        .any(|word| key.contains(word))
}

/// Replaces the password of a MongoDB connection string with `****`.
pub fn mask_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    // The user-info part ends at the last `@` before the first `/` of the path.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return uri.to_owned();
    };
    let userinfo = &rest[..at];
    let masked_userinfo = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:{MASK}"),
        None => userinfo.to_owned(),
    };
    format!("{scheme}://{masked_userinfo}{}", &rest[at..])
}

/// A copy of `config` that is safe to print: passwords in the MongoDB URI, secret librdkafka
/// properties and schema registry passwords are replaced with `****`.
pub fn masked(config: &Config) -> Config {
    let mut out = config.clone();
    out.mongodb.uri = mask_uri(&config.mongodb.uri);
    let registries = out
        .sources
        .iter_mut()
        .filter_map(|s| s.schema_registry.as_mut())
        .chain(
            out.sinks
                .iter_mut()
                .filter_map(|s| s.schema_registry.as_mut()),
        );
    for registry in registries {
        if registry.password.is_some() {
            registry.password = Some(MASK.to_owned());
        }
    }
    let kafka = &mut out.kafka;
    for map in [
        &mut kafka.properties,
        &mut kafka.producer,
        &mut kafka.consumer,
    ] {
        for (key, value) in map.iter_mut() {
            if is_secret_kafka_key(key) {
                *value = MASK.to_owned();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn masks_schema_registry_passwords_of_sources_and_sinks() {
        let registry = "schema_registry = { url = \"http://r:8081\", username = \"u\", password = \"hunter2\" }";
        let text = format!(
            "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"k:9092\"\n\
             [[source]]\nname = \"s\"\nformat = \"avro\"\n{registry}\n\
             [[sink]]\nname = \"k\"\ntopics = [\"t\"]\ndatabase = \"d\"\nvalue_format = \"avro\"\n{registry}\n"
        );
        let config = super::super::load_str(&text, Path::new("t.toml")).expect("valid");
        let shown = masked(&config);
        for registry in [
            &shown.sources[0].schema_registry,
            &shown.sinks[0].schema_registry,
        ] {
            let registry = registry.as_ref().expect("a registry");
            assert_eq!(registry.password.as_deref(), Some(MASK));
            assert_eq!(registry.username.as_deref(), Some("u"));
        }
        assert!(!format!("{shown:?}").contains("hunter2"));
    }

    #[test]
    fn masks_uri_password_only() {
        assert_eq!(
            mask_uri("mongodb://app:s3cr%40t@db1:27017,db2/admin?replicaSet=rs0"),
            "mongodb://app:****@db1:27017,db2/admin?replicaSet=rs0"
        );
        assert_eq!(
            mask_uri("mongodb+srv://u:p@x.example.net"),
            "mongodb+srv://u:****@x.example.net"
        );
        assert_eq!(mask_uri("mongodb://h:27017"), "mongodb://h:27017");
        assert_eq!(
            mask_uri("mongodb://user@h/?authMechanism=MONGODB-X509"),
            "mongodb://user@h/?authMechanism=MONGODB-X509"
        );
    }

    #[test]
    fn detects_secret_kafka_keys() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "sasl.jaas.config",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
        ] {
            assert!(is_secret_kafka_key(key), "{key}");
        }
        for key in ["sasl.username", "security.protocol", "client.id"] {
            assert!(!is_secret_kafka_key(key), "{key}");
        }
    }
}
