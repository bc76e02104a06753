//! Masking secrets before a configuration is shown (`check-config`, logs).

use super::Config;

const MASK: &str = "****";

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

/// Words of a key name that say its value is a secret (compared in lower case, the name split
/// at `.`, `_` and `-`): `sasl.password`, `ssl.keystore.password`, `schema_registry.password`,
/// `sasl.oauthbearer.assertion.private.key.passphrase`, `sasl.oauthbearer.client.secret`,
/// `sasl.jaas.config`, `access_token`...
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credentials",
    "apikey",
    "jaas",
];

/// Last words of a key name that say its value tells where something is, not what it is
/// (`ssl.keystore.location`, `sasl.oauthbearer.token.endpoint.url`,
/// `sasl.oauthbearer.assertion.private.key.file`): shown, with any credentials in a URL
/// masked like every other value's.
const PLACE_WORDS: &[&str] = &["url", "uri", "file", "location", "path", "endpoint"];

/// Whether the key `name` holds a secret, wherever it sits (a typed key, a librdkafka
/// property, a topic override): one rule for every key. A secret word in its name
/// ([`SECRET_WORDS`]) unless it names a place ([`PLACE_WORDS`]); key material
/// (`ssl.key.pem`, `....private.key.pem`, `...private_key`); `sasl.oauthbearer.config`, which holds the
/// client's secret.
pub fn is_secret_key(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let words: Vec<&str> = name
        .split(['.', '_', '-'])
        .filter(|w| !w.is_empty())
        .collect();
    let has = |word: &str| words.contains(&word);
    let last = words.last().copied().unwrap_or_default();
    if PLACE_WORDS.contains(&last) {
        return false;
    }
    SECRET_WORDS.iter().any(|word| has(word))
        || (has("key") && last == "pem")
        || (has("private") && last == "key")
        || (has("oauthbearer") && last == "config")
}

/// A copy of `config` that is safe to print (`check-config`), as the TOML it is printed as:
/// the value of every key that holds a secret ([`is_secret_key`]) is `****`, wherever the key
/// sits, and every connection string or URL shows no password (nor a MongoDB URI's secret
/// options).
pub fn masked(config: &Config) -> toml::Value {
    // Plain data (strings, numbers, maps): it cannot fail to become TOML; should it, nothing
    // is shown rather than something unmasked.
    let mut value =
        toml::Value::try_from(config).unwrap_or_else(|_| toml::Value::Table(toml::Table::new()));
    mask_value(None, &mut value);
    value
}

/// Masks `value`, found under the key `key` (an array's items are under its key).
fn mask_value(key: Option<&str>, value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table.iter_mut() {
                mask_value(Some(key), value);
            }
        }
        toml::Value::Array(items) => {
            for item in items {
                mask_value(key, item);
            }
        }
        _ if key.is_some_and(is_secret_key) => *value = toml::Value::String(MASK.to_owned()),
        toml::Value::String(text) if text.contains("://") => *text = mask_uri(text),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every key of the configuration set, each secret to a value of its own: what
    /// `check-config` prints.
    const EVERY_KEY: &str = r#"
[mongodb]
uri = "mongodb://app:URI-PW-1@db1:27017/?tls=true&tlsCertificateKeyFilePassword=URI-PW-2"
app_name = "shown-app"
connect_timeout = "3s"
server_api_version = "1"
server_api_strict = true
server_api_deprecation_errors = true

[kafka]
bootstrap_servers = "k:9092"
request_timeout = "4s"
[kafka.properties]
"sasl.username" = "shown-user"
"sasl.password" = "KAFKA-PW-1"
"ssl.key.password" = "KAFKA-PW-2"
"ssl.keystore.password" = "KAFKA-PW-3"
"ssl.key.pem" = "KAFKA-PEM-1"
"sasl.jaas.config" = "KAFKA-JAAS-1"
"sasl.oauthbearer.config" = "KAFKA-OAUTH-1"
"sasl.oauthbearer.client.secret" = "KAFKA-SECRET-1"
"sasl.oauthbearer.assertion.private.key.passphrase" = "KAFKA-PASSPHRASE-1"
"sasl.oauthbearer.assertion.private.key.pem" = "KAFKA-PEM-2"
"sasl.oauthbearer.token.endpoint.url" = "https://tok:TOKEN-URL-PW@idp/token"
[kafka.producer]
"linger.ms" = "5"
"ssl.key.password" = "KAFKA-PW-4"
[kafka.consumer]
"fetch.min.bytes" = "1"
"sasl.password" = "KAFKA-PW-5"
[kafka.schema_registry]
url = "http://shared-registry:8081"
username = "shown-registry-user"
password = "REGISTRY-PW-1"
ca_file = "/shown/ca.pem"
cert_file = "/shown/client.pem"
key_file = "/shown/client.key"
proxy = "http://proxy-user:PROXY-PW-1@proxy:3128"
timeout = "5s"

[http]
enabled = true
address = "127.0.0.1:9999"
token_file = "/shown/token"

[log]
level = "debug"
format = "json"

[shutdown]
timeout = "7s"

[[source]]
name = "shown-source"
database = "shop"
collection = ["a", "b"]
collection_regex = "^shown"
collection_exclude = ["shown-excluded"]
pipeline = '[{"$match": {"shown": 1}}]'
full_document = "updateLookup"
full_document_before_change = "whenAvailable"
batch_size = 10
max_await_time = "1s"
publish_full_document_only = true
tombstone_on_delete = true
startup_mode = "copy_existing"
startup_timestamp = "2024-01-01T00:00:00Z"
copy_existing_pipeline = '[{"$match": {"copied": 1}}]'
copy_existing_namespace_regex = "^shop"
copy_existing_parallelism = 2
copy_existing_allow_disk_use = false
signal_collection = "db.signals"
snapshot_chunk_size = 500
collation = '{"locale": "en"}'
show_expanded_events = true
topic_prefix = "pre"
topic_suffix = "suf"
topic_separator = "-"
topic_namespace_map = { "shop.a" = "shown-topic" }
create_topics = true
topic_partitions = 3
topic_replication_factor = 1
key = "event_id"
format = "avro"
key_format = "json_schema"
value_format = "avro"
key_schema = '{"type": "object"}'
value_schema = '{"type": "record", "name": "D", "fields": []}'
heartbeat_interval = "10s"
heartbeat_topic = "beats"
checkpoint_topic = "checks"
checkpoint_interval = "2s"
slots = 4
delivery = "exactly-once"
on_lost_resume_point = "recopy"
stall_timeout = "9m"
oversize = "split"
queue_capacity = 9
errors = { tolerance = "all", dead_letter_topic = "dlq", dead_letter_headers = "both" }
schema_registry = { url = "http://source-registry:8081", username = "u", password = "REGISTRY-PW-2", ca_file = "/ca", cert_file = "/c", key_file = "/k", proxy = "http://p:PROXY-PW-2@proxy:3128", timeout = "1s" }

[[sink]]
name = "shown-sink"
topics = ["t1", "t2"]
topics_regex = "^t"
group_id = "shown-group"
queue_capacity = 11
database = "shown-db"
collection = "shown-coll"
namespace_from = "key"
database_field = "dbf"
collection_field = "collf"
key_format = "avro"
value_format = "json_schema"
id_strategy = "partial_value"
id_fields = ["a"]
id_fields_projection = "block"
id_overwrite_existing = true
uuid_representation = "binary"
key_allow_fields = ["k"]
key_block_fields = ["kb"]
value_allow_fields = ["v"]
value_block_fields = ["vb"]
field_renames = { "a" = "b" }
key_field_renames = { "k" = "kk" }
field_rename_regex = [{ pattern = "^x", replace = "y" }, { regexp = "^key[.]x", pattern = "x", replace = "z" }]
kafka_metadata_field = "meta"
post_processor_chain = ["id", "allow_key", "block_key", "allow_value", "block_value", "rename", "rename_regex", "kafka_metadata"]
write_model = "update_one"
business_key_fields = ["bk"]
delete_on_null_values = true
delete_write_model = "delete_tombstone_business_key"
stale_write_guard = "version"
write_concern = { w = "majority", journal = true, wtimeout = "5s" }
timeseries_time_field = "ts"
timeseries_time_field_auto_convert = true
timeseries_time_field_format = "%Y"
timeseries_meta_field = "m"
timeseries_granularity = "minutes"
timeseries_expire_after = "1d"
cdc_handler = "mongodb"
max_batch_size = 12
max_batch_delay = "13ms"
max_num_retries = 14
rate_limiting_every_n = 15
rate_limiting_timeout = "16ms"
errors = { tolerance = "all", dead_letter_topic = "sink-dlq", dead_letter_headers = "mkb" }
schema_registry = { url = "http://sink-registry:8081", username = "u", password = "REGISTRY-PW-3", ca_file = "/ca", cert_file = "/c", key_file = "/k", proxy = "http://p:PROXY-PW-3@proxy:3128", timeout = "1s" }
[sink.topic_overrides.t1]
collection = "shown-override"
schema_registry = { url = "http://override-registry:8081", username = "u", password = "REGISTRY-PW-4" }
"#;

    /// Every key name of the values of `value`, as dotted paths; a value that is empty or
    /// null is a key the configuration above leaves out.
    fn leaves(path: &str, value: &serde_json::Value, out: &mut Vec<(String, bool)>) {
        match value {
            serde_json::Value::Object(map) => {
                out.push((path.to_owned(), !map.is_empty()));
                for (key, value) in map {
                    leaves(&format!("{path}.{key}"), value, out);
                }
            }
            serde_json::Value::Array(items) => {
                out.push((path.to_owned(), !items.is_empty()));
                for (i, value) in items.iter().enumerate() {
                    leaves(&format!("{path}[{i}]"), value, out);
                }
            }
            serde_json::Value::Null => out.push((path.to_owned(), false)),
            _ => out.push((path.to_owned(), true)),
        }
    }

    /// Every scalar of `value` with its path (keys joined by `/`), in order.
    fn leaf_values(path: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    leaf_values(&format!("{path}/{key}"), value, out);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, value) in items.iter().enumerate() {
                    leaf_values(&format!("{path}[{i}]"), value, out);
                }
            }
            other => out.push((path.to_owned(), other.to_string())),
        }
    }

    /// `check-config` prints the configuration: whatever key a secret sits under (the
    /// shared, a pipeline's or a topic override's registry, any librdkafka map, a URI),
    /// it is masked, by one rule; everything else is shown.
    #[test]
    fn every_secret_of_a_fully_populated_configuration_is_masked() {
        let config: Config = toml::from_str(EVERY_KEY).unwrap_or_else(|e| panic!("{e}"));
        // Fully populated: every key the configuration has is set above (a key added
        // later must be added there, and its secrets thereby checked).
        let typed = serde_json::to_value(&config).unwrap_or_else(|e| panic!("{e}"));
        let mut keys = Vec::new();
        leaves("", &typed, &mut keys);
        let unset: Vec<&String> = keys
            .iter()
            .filter(|(_, set)| !set)
            .map(|(k, _)| k)
            .collect();
        assert!(unset.is_empty(), "keys left out of EVERY_KEY: {unset:?}");

        // Only what the rule names changes: the value of a secret key, a URL's password.
        let shown = masked(&config);
        let plain = toml::Value::try_from(&config).unwrap_or_else(|e| panic!("{e}"));
        let (mut before, mut after) = (Vec::new(), Vec::new());
        let as_json = |v: &toml::Value| serde_json::to_value(v).unwrap_or_else(|e| panic!("{e}"));
        leaf_values("", &as_json(&plain), &mut before);
        leaf_values("", &as_json(&shown), &mut after);
        assert_eq!(before.len(), after.len());
        for ((key, was), (_, is)) in before.iter().zip(&after) {
            // Keys hold dots (librdkafka's); an array's items are under its key.
            let name = key.rsplit('/').next().unwrap_or_default();
            let name = name.split('[').next().unwrap_or_default();
            if was != is {
                assert!(
                    is_secret_key(name) || was.contains("://"),
                    "{key} masked: {was} -> {is}"
                );
            }
        }
        let printed = toml::to_string_pretty(&shown).unwrap_or_else(|e| panic!("{e}"));
        for secret in [
            "URI-PW-1",
            "URI-PW-2",
            "KAFKA-PW-1",
            "KAFKA-PW-2",
            "KAFKA-PW-3",
            "KAFKA-PW-4",
            "KAFKA-PW-5",
            "KAFKA-PEM-1",
            "KAFKA-PEM-2",
            "KAFKA-JAAS-1",
            "KAFKA-OAUTH-1",
            "KAFKA-SECRET-1",
            "KAFKA-PASSPHRASE-1",
            "TOKEN-URL-PW",
            "REGISTRY-PW-1",
            "REGISTRY-PW-2",
            "REGISTRY-PW-3",
            "REGISTRY-PW-4",
            "PROXY-PW-1",
            "PROXY-PW-2",
            "PROXY-PW-3",
        ] {
            assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
        }
        for shown in [
            "shown-app",
            "shown-user",
            "shown-registry-user",
            "/shown/ca.pem",
            "shown-source",
            "shown-topic",
            "shown-sink",
            "shown-group",
            "shown-override",
            "http://override-registry:8081",
            "mongodb://app:****@db1:27017",
            "event_id",
            "/shown/client.key",
            "/shown/token",
            "http://proxy-user:****@proxy:3128",
        ] {
            assert!(printed.contains(shown), "{shown} masked:\n{printed}");
        }
    }

    /// The control token read from `http.token_file` or `MKB_HTTP_TOKEN` is shown masked,
    /// by the one rule (its key is `token`).
    #[test]
    fn masks_the_http_control_token() {
        let text = "[mongodb]\nuri = \"mongodb://h\"\n[kafka]\nbootstrap_servers = \"k:9092\"\n[http]\naddress = \"0.0.0.0:9187\"\n";
        let config = super::super::load::load_with(
            text,
            Path::new("t.toml"),
            Vec::new(),
            &|name| (name == "MKB_HTTP_TOKEN").then(|| "HTTP-TOKEN-1".to_owned()),
            &|_| Err("no files".to_owned()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.http.token.as_deref(), Some("HTTP-TOKEN-1"));
        let printed = toml::to_string_pretty(&masked(&config)).unwrap_or_else(|e| panic!("{e}"));
        assert!(!printed.contains("HTTP-TOKEN-1"), "{printed}");
        assert!(printed.contains("token = \"****\""), "{printed}");
    }

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
        for pipelines in ["source", "sink"] {
            let registry = &shown[pipelines][0]["schema_registry"];
            assert_eq!(registry["password"].as_str(), Some(MASK));
            assert_eq!(registry["username"].as_str(), Some("u"));
        }
        assert!(!shown.to_string().contains("hunter2"));
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
            shown["kafka"]["schema_registry"]["password"].as_str(),
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
    fn one_rule_finds_secret_keys() {
        for key in [
            "sasl.oauthbearer.config",
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.jaas.config",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "sasl.oauthbearer.assertion.private.key.pem",
            "password",
            "SASL_PASSWORD",
            "access_token",
            "private_key",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "sasl.username",
            "username",
            "security.protocol",
            "client.id",
            "key_format",
            "key",
            "ssl.key.location",
            "ssl.certificate.pem",
            "sasl.oauthbearer.token.endpoint.url",
            "sasl.oauthbearer.assertion.private.key.file",
            "ca_file",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }
}
