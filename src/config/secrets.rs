//! Masking secrets before a configuration is shown (`check-config`, logs).

use super::Config;

const MASK: &str = "****";

/// librdkafka property names whose values are secrets.
fn is_secret_kafka_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas.config",
        "oauthbearer.config",
        "key.pem",
        "token",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// Connection string options whose values are secrets (compared case-insensitively).
const SECRET_URI_OPTIONS: &[&str] = &["tlscertificatekeyfilepassword", "authmechanismproperties"];

/// The characters a connection string reserves, which a user name or password must
/// percent-encode, with their encodings.
const RESERVED: &[(char, &str)] = &[
    ('?', "%3F"),
    ('/', "%2F"),
    ('#', "%23"),
    ('[', "%5B"),
    (']', "%5D"),
    ('@', "%40"),
    (':', "%3A"),
    ('%', "%25"),
];

/// What of a MongoDB connection string may be a password, generously: from the first `:`
/// after the scheme to the last `@`. A password holding characters it should have
/// percent-encoded (`?`, `/`, `#`, `@`) stays inside it, where the driver's own parsing
/// would cut it and quote the pieces as hosts or options.
pub fn uri_password(uri: &str) -> Option<&str> {
    let (_, rest) = uri.split_once("://")?;
    let (userinfo, _) = rest.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, password)| password)
}

/// Whether `text` shows any part of `secret`: any of its pieces between the characters
/// connection strings reserve.
pub fn shows_part_of(text: &str, secret: &str) -> bool {
    secret
        .split(|c| RESERVED.iter().any(|(r, _)| *r == c))
        .filter(|piece| !piece.is_empty())
        .any(|piece| text.contains(piece))
}

/// The characters `secret` holds without percent-encoding them, with their encodings: a
/// `%` counts only when two hexadecimal digits do not follow it.
pub fn unescaped(secret: &str) -> Vec<(char, &'static str)> {
    let bytes = secret.as_bytes();
    let mut found: Vec<(char, &'static str)> = Vec::new();
    for (i, c) in secret.char_indices() {
        let Some(&(r, encoded)) = RESERVED.iter().find(|(r, _)| *r == c) else {
            continue;
        };
        let escape = c == '%'
            && bytes.len() > i + 2
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit();
        if !escape && !found.iter().any(|(f, _)| *f == r) {
            found.push((r, encoded));
        }
    }
    found
}

/// Masks the values of secret options in the query of a connection string.
fn mask_uri_options(uri: &str) -> String {
    let Some((head, query)) = uri.split_once('?') else {
        return uri.to_owned();
    };
    let options: Vec<String> = query
        .split('&')
        .map(|option| match option.split_once('=') {
            Some((key, _)) if SECRET_URI_OPTIONS.contains(&key.to_ascii_lowercase().as_str()) => {
                format!("{key}={MASK}")
            }
            _ => option.to_owned(),
        })
        .collect();
    format!("{head}?{}", options.join("&"))
}

/// Replaces the password of a MongoDB connection string, and the values of its secret
/// options, with `****`.
pub fn mask_uri(uri: &str) -> String {
    mask_uri_options(&mask_uri_password(uri))
}

fn mask_uri_password(uri: &str) -> String {
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
        )
        .chain(out.kafka.schema_registry.as_mut());
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
    fn masks_the_shared_schema_registry_password_and_its_copies() {
        let text = "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"k:9092\"\n\
             schema_registry = { url = \"http://r:8081\", username = \"u\", password = \"hunter2\" }\n\
             [[source]]\nname = \"s\"\nvalue_format = \"avro\"\n\
             [[sink]]\nname = \"k\"\ntopics = [\"t\"]\ndatabase = \"d\"\nkey_format = \"json_schema\"\n";
        let config = super::super::load_str(text, Path::new("t.toml")).expect("valid");
        // Each pipeline says which registry it uses: the shared one.
        assert_eq!(
            config.sources[0].schema_registry,
            config.kafka.schema_registry
        );
        assert_eq!(
            config.sinks[0].schema_registry,
            config.kafka.schema_registry
        );
        let shown = masked(&config);
        assert_eq!(
            shown
                .kafka
                .schema_registry
                .as_ref()
                .and_then(|r| r.password.as_deref()),
            Some(MASK)
        );
        let printed = toml::to_string(&shown).expect("TOML");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("username = \"u\""), "{printed}");
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
    fn masks_secret_uri_options() {
        assert_eq!(
            mask_uri("mongodb://h/?tls=true&tlsCertificateKeyFilePassword=pw&authMechanismProperties=AWS_SESSION_TOKEN:t"),
            "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=****&authMechanismProperties=****"
        );
    }

    #[test]
    fn finds_the_password_and_what_it_leaves_unescaped() {
        let uri = "mongodb://app:Zq7K?Xw9P@db:27017/?replicaSet=rs";
        assert_eq!(uri_password(uri), Some("Zq7K?Xw9P"));
        assert_eq!(uri_password("mongodb://app@db/"), None);
        assert_eq!(uri_password("mongodb://db/"), None);
        assert!(shows_part_of(
            "invalid server address app:Zq7K",
            "Zq7K?Xw9P"
        ));
        assert!(!shows_part_of("password must be URL encoded", "Zq7K?Xw9P"));
        assert_eq!(unescaped("Zq7K?Xw9P"), [('?', "%3F")]);
        assert_eq!(unescaped("a%3Fb%zz/"), [('%', "%25"), ('/', "%2F")]);
        assert_eq!(unescaped("a%3Fb%2"), [('%', "%25")]);
        assert!(unescaped("plain%40").is_empty());
    }

    #[test]
    fn detects_secret_kafka_keys() {
        for key in [
            "sasl.oauthbearer.config",
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
