//! Reading the configuration: the TOML file, then `MKB__` environment overrides, then
//! typed deserialization (with the path of the offending key) and validation.

use std::path::{Path, PathBuf};

use config::{File, FileFormat};

use super::{validate, Config, Violation};

/// Prefix of the environment variables that override file keys (`MKB__MONGODB__URI`).
pub const ENV_PREFIX: &str = "MKB";
/// Separates the prefix and the key path segments of an environment override.
pub const ENV_SEPARATOR: &str = "__";

/// Why a configuration was rejected. Every variant names the file; key-level errors name
/// the key path too.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or is not valid TOML.
    #[error("{file}: {reason}")]
    Read {
        /// The configuration file.
        file: PathBuf,
        /// What went wrong, as the TOML parser or the file system said it.
        reason: String,
    },
    /// A key has the wrong type, is unknown or a required one is missing.
    #[error("{file}: key `{key}`: {reason}")]
    Key {
        /// The configuration file.
        file: PathBuf,
        /// The dotted path of the key (`source[0].name`).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file parsed but describes something impossible.
    #[error("{file}: {}", Violation::list(.violations))]
    Invalid {
        /// The configuration file.
        file: PathBuf,
        /// Every problem found, each naming its key.
        violations: Vec<Violation>,
    },
}

/// Loads, overrides from the environment, and validates the configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        file: path.to_owned(),
        reason: format!("cannot read the file: {e}"),
    })?;
    load_str(&text, path)
}

/// Like [`load`], with the file's text already read; `path` is only used in errors. The
/// environment is the process's.
pub fn load_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    load_with(
        text,
        path,
        std::env::vars(),
        &|name| std::env::var(name).ok(),
        &|file| std::fs::read_to_string(file).map_err(|e| e.to_string()),
    )
}

/// Like [`load_str`], with `vars` as the `MKB__` overrides, `env` resolving `${env:NAME}`
/// and `read` resolving `${file:/path}` ([`super::env`]).
pub(crate) fn load_with(
    text: &str,
    path: &Path,
    vars: impl IntoIterator<Item = (String, String)>,
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Config, ConfigError> {
    let read_error = |e: config::ConfigError| ConfigError::Read {
        file: path.to_owned(),
        reason: without_source_lines(&e.to_string()),
    };
    check_file_types(text, path)?;
    let mut tree: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Read {
        file: path.to_owned(),
        reason: without_source_lines(&e.to_string()),
    })?;
    // Overrides first, so that values set through the environment may be references too.
    let mut violations = super::env::apply_overrides(&mut tree, vars);
    violations.extend(super::env::resolve_references(&mut tree, env, read));
    if !violations.is_empty() {
        return Err(ConfigError::Invalid {
            file: path.to_owned(),
            violations,
        });
    }
    // The tree, typed by the `config` crate: values from the environment are text, read as
    // their key's type.
    let merged_text = toml::to_string(&tree).map_err(|e| ConfigError::Read {
        file: path.to_owned(),
        reason: format!("the configuration with its overrides: {e}"),
    })?;
    let merged = config::Config::builder()
        .add_source(File::from_str(&merged_text, FileFormat::Toml))
        .build()
        .map_err(read_error)?;
    let mut config: Config =
        serde_path_to_error::deserialize(merged).map_err(|e| key_error(path, e))?;
    normalize_env_kafka_keys(&mut config);
    restore_namespace_map_order(&tree, &mut config);
    config.share_schema_registry();
    config.resolve_checkpoint_topics();
    let mut violations = Vec::new();
    match http_token(&config.http, env, read) {
        Ok(token) => config.http.token = token,
        Err(violation) => violations.push(violation),
    }
    violations.extend(validate(&config));
    if violations.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            file: path.to_owned(),
            violations,
        })
    }
}

/// The HTTP control token: `http.token_file`'s content, else `MKB_HTTP_TOKEN`, trimmed;
/// `None` when neither gives one.
fn http_token(
    http: &super::HttpConfig,
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Option<String>, Violation> {
    const KEY: &str = "http.token_file";
    let Some(file) = &http.token_file else {
        return Ok(env(super::HTTP_TOKEN_ENV)
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()));
    };
    let text = read(&file.to_string_lossy())
        .map_err(|e| Violation::new(KEY, format!("cannot read `{}`: {e}", file.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Violation::new(
            KEY,
            format!(
                "`{}` is empty: it must hold the control endpoints' bearer token",
                file.display()
            ),
        ));
    }
    Ok(Some(token.to_owned()))
}

/// The `config` crate coerces scalars (`name = 5` becomes `"5"`, `"yes"` a boolean), which
/// environment overrides need, since they are all strings. The file itself is held to its
/// declared types: deserializing it alone catches a wrong type there. Missing keys are left
/// to the merged pass, since the environment may provide them.
fn check_file_types(text: &str, path: &Path) -> Result<(), ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| ConfigError::Read {
        file: path.to_owned(),
        reason: without_source_lines(&e.to_string()),
    })?;
    match serde_path_to_error::deserialize::<_, Config>(deserializer) {
        Err(e) if !e.inner().message().starts_with("missing field") => {
            let key = display_path(e.path());
            Err(ConfigError::Key {
                file: path.to_owned(),
                key,
                reason: e.inner().message().to_owned(),
            })
        }
        _ => Ok(()),
    }
}

/// A TOML parser's message without the lines of the file it quotes (the line it points
/// at may hold a password): the line and column it names remain.
fn without_source_lines(message: &str) -> String {
    let quoted = |line: &str| {
        let trimmed = line.trim_start();
        let number = trimmed.trim_start_matches(|c: char| c.is_ascii_digit());
        trimmed.starts_with('|')
            || (number.len() < trimmed.len() && number.trim_start().starts_with('|'))
    };
    message
        .lines()
        .filter(|line| !quoted(line))
        .collect::<Vec<_>>()
        .join("\n")
}

fn display_path(path: &serde_path_to_error::Path) -> String {
    let key = path.to_string();
    if key == "." {
        "(top level)".to_owned()
    } else {
        key
    }
}

/// Turns an error of the merged (file + environment) pass into one naming the key.
fn key_error(path: &Path, e: serde_path_to_error::Error<config::ConfigError>) -> ConfigError {
    let at = display_path(e.path());
    let (key, reason) = match e.into_inner() {
        // The crate spells a missing key as `sink[0]collection`; name it as the user writes it.
        config::ConfigError::NotFound(missing) => {
            let field = missing
                .rsplit(['.', ']'])
                .next()
                .unwrap_or(&missing)
                .to_owned();
            let key = if at == "(top level)" {
                field
            } else {
                format!("{at}.{field}")
            };
            (key, "required key is missing".to_owned())
        }
        other => {
            let mut reason = other.to_string();
            // The crate appends its own, less precise, spelling of the key.
            if let Some(cut) = reason.rfind(" for key `") {
                reason.truncate(cut);
            }
            (at, reason)
        }
    };
    ConfigError::Key {
        file: path.to_owned(),
        key,
        reason,
    }
}

/// The `config` crate keeps tables in hash maps, so `topic_namespace_map` (whose regex keys
/// are tried in the order written) comes out of it in no particular order; the TOML tree,
/// with the environment's overrides, holds the order written.
fn restore_namespace_map_order(tree: &toml::Table, config: &mut Config) {
    let Some(toml::Value::Array(sources)) = tree.get("source") else {
        return;
    };
    for (source, written) in config.sources.iter_mut().zip(sources) {
        if let Some(toml::Value::Table(map)) = written.get("topic_namespace_map") {
            source
                .topic_namespace_map
                .reorder(map.keys().map(String::as_str));
        }
    }
}

/// Environment variable names cannot hold dots, so librdkafka keys set through the
/// environment arrive as `sasl_password`; no librdkafka key has an underscore, so reading
/// every `_` as `.` is safe.
fn normalize_env_kafka_keys(config: &mut Config) {
    let kafka = &mut config.kafka;
    for map in [
        &mut kafka.properties,
        &mut kafka.producer,
        &mut kafka.consumer,
    ] {
        let renamed: Vec<String> = map.keys().filter(|k| k.contains('_')).cloned().collect();
        for key in renamed {
            if let Some(value) = map.remove(&key) {
                map.insert(key.replace('_', "."), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[mongodb]
uri = "mongodb://127.0.0.1:27017"
[kafka]
bootstrap_servers = "127.0.0.1:9092"
"#;

    fn load(extra: &str) -> Result<Config, ConfigError> {
        load_str(&format!("{BASE}{extra}"), Path::new("test.toml"))
    }

    /// Asserts that `extra` is rejected with an error naming `key` and the file, whose
    /// reason holds `reason`.
    #[track_caller]
    fn rejected(extra: &str, key: &str, reason: &str) {
        let err = match load(extra) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(err) => err,
        };
        let text = err.to_string();
        assert!(text.starts_with("test.toml: "), "no file in: {text}");
        assert!(
            text.contains(&format!("key `{key}`")),
            "no key `{key}` in: {text}"
        );
        assert!(text.contains(reason), "no `{reason}` in: {text}");
    }

    /// The control token comes from `http.token_file`, else `MKB_HTTP_TOKEN`; off loopback
    /// without one the configuration loads (the control paths are then disabled).
    #[test]
    fn the_control_token_comes_from_the_file_or_the_environment() {
        let with = |extra: &str, env_token: Option<&str>| {
            let env_token = env_token.map(str::to_owned);
            load_with(
                &format!("{BASE}{extra}"),
                Path::new("test.toml"),
                Vec::new(),
                &move |name| {
                    (name == "MKB_HTTP_TOKEN")
                        .then(|| env_token.clone())
                        .flatten()
                },
                &|path| match path {
                    "/run/token" => Ok(" file-token\n".to_owned()),
                    "/run/empty" => Ok("\n".to_owned()),
                    _ => Err("No such file or directory".to_owned()),
                },
            )
        };
        let open = "[http]\naddress = \"0.0.0.0:9187\"\n";
        let without = with(open, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(without.http.token, None);
        let from_env = with(open, Some("env-token")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(from_env.http.token.as_deref(), Some("env-token"));
        let from_file = with(
            &format!("{open}token_file = \"/run/token\"\n"),
            Some("env-token"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            from_file.http.token.as_deref(),
            Some("file-token"),
            "the file wins"
        );
        for (file, reason) in [
            ("/run/missing", "cannot read `/run/missing`"),
            ("/run/empty", "is empty"),
        ] {
            let text = match with(&format!("{open}token_file = \"{file}\"\n"), None) {
                Ok(config) => panic!("accepted: {config:?}"),
                Err(e) => e.to_string(),
            };
            assert!(
                text.contains("key `http.token_file`") && text.contains(reason),
                "{text}"
            );
        }
        // Loopback needs none; a token written in the file itself is no key.
        assert!(with("", None).is_ok_and(|c| c.http.token.is_none()));
        assert!(with("[http]\ntoken = \"x\"\n", None).is_err());
    }

    #[test]
    fn minimal_config_takes_the_defaults() -> Result<(), ConfigError> {
        let config = load("")?;
        assert_eq!(config.mongodb.app_name, "mongo-kafka-bridge");
        assert_eq!(config.http.address.to_string(), "127.0.0.1:9187");
        assert!(config.http.enabled);
        assert_eq!(config.log.level, "info");
        assert_eq!(config.shutdown.timeout, std::time::Duration::from_secs(30));
        assert!(config.sources.is_empty() && config.sinks.is_empty());
        Ok(())
    }

    #[test]
    fn the_example_config_is_valid() -> Result<(), ConfigError> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/example.toml");
        let config = super::load(&path)?;
        assert_eq!(config.sources.len(), 1);
        assert_eq!(config.sinks.len(), 1);
        assert_eq!(
            config.kafka.producer.get("linger.ms").map(String::as_str),
            Some("5")
        );
        Ok(())
    }

    #[test]
    fn pipelines_parse() -> Result<(), ConfigError> {
        let config = load(
            r#"
[[source]]
name = "orders"
database = "shop"
collection = "orders"
[[sink]]
name = "copy"
topics = ["a", "b"]
database = "shop"
collection = "copy"
"#,
        )?;
        assert_eq!(
            config.sources[0].collection.as_ref().map(|c| c.names()),
            Some(vec!["orders"])
        );
        assert_eq!(config.sinks[0].topics, ["a", "b"]);
        assert_eq!(
            config.sinks[0].effective_group_id(),
            "mongo-kafka-bridge-copy"
        );
        Ok(())
    }

    #[test]
    fn librdkafka_values_may_be_numbers_or_booleans() -> Result<(), ConfigError> {
        let config = load("[kafka.producer]\n\"linger.ms\" = 5\n\"enable.idempotence\" = true\n")?;
        assert_eq!(config.kafka.producer["linger.ms"], "5");
        assert_eq!(config.kafka.producer["enable.idempotence"], "true");
        Ok(())
    }

    #[test]
    fn unknown_keys_are_rejected_at_every_level() {
        let top = load_str(&format!("bogus = 1\n{BASE}"), Path::new("test.toml"));
        assert!(
            matches!(top, Err(ConfigError::Key { ref key, .. }) if key == "bogus"),
            "{top:?}"
        );
        rejected("bogus = 1\n", "kafka.bogus", "unknown field `bogus`");
        rejected("[http]\nport = 1\n", "http.port", "unknown field `port`");
        rejected(
            "[[source]]\nname = \"a\"\ncolection = \"x\"\n",
            "source[0].colection",
            "unknown field",
        );
    }

    #[test]
    fn wrong_types_are_rejected() {
        rejected(
            "[http]\nenabled = \"yes\"\n",
            "http.enabled",
            "expected a boolean",
        );
        rejected(
            "[[source]]\nname = 5\n",
            "source[0].name",
            "expected a string",
        );
        rejected(
            "[[sink]]\nname = \"s\"\ntopics = \"t\"\ndatabase = \"d\"\ncollection = \"c\"\n",
            "sink[0].topics",
            "expected a sequence",
        );
        rejected("[shutdown]\ntimeout = 5\n", "shutdown.timeout", "");
        rejected("[shutdown]\ntimeout = \"soon\"\n", "shutdown.timeout", "");
        rejected(
            "[http]\naddress = \"nowhere\"\n",
            "http.address",
            "socket address",
        );
        rejected(
            "[log]\nformat = \"xml\"\n",
            "log.format",
            "unknown variant `xml`",
        );
        rejected(
            "[kafka.consumer]\n\"x.y\" = [1]\n",
            "kafka.consumer.x.y",
            "librdkafka property value",
        );
    }

    #[test]
    fn missing_required_keys_are_named() {
        let err = load_str(
            "[kafka]\nbootstrap_servers = \"h:1\"\n",
            Path::new("test.toml"),
        );
        assert!(
            matches!(err, Err(ConfigError::Key { ref key, .. }) if key == "mongodb"),
            "{err:?}"
        );
        rejected(
            "[[source]]\ndatabase = \"d\"\n",
            "source[0].name",
            "required key is missing",
        );
        rejected(
            "[[sink]]\nname = \"s\"\ntopics = [\"t\"]\n",
            "sink[0].database",
            "required key is missing",
        );
    }

    #[test]
    fn unparsable_toml_names_the_file_and_line() {
        let err = load_str("[mongodb\n", Path::new("broken.toml"));
        let text = err
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(text.starts_with("broken.toml: "), "{text}");
        assert!(text.contains("line 1"), "{text}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = super::load(Path::new("/nonexistent/bridge.toml"));
        let text = err
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            text.contains("/nonexistent/bridge.toml: cannot read the file"),
            "{text}"
        );
    }
}
