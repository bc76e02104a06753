//! Kafka Connect's converters (`key.converter`, `value.converter` and their settings), as
//! the source's and the sink's translations read them.

use super::findings::{Out, Props};

/// A converter's class, by its simple name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConverterClass {
    /// `StringConverter`.
    String,
    /// `ByteArrayConverter`.
    ByteArray,
    /// `JsonConverter`.
    Json,
    /// Confluent's `AvroConverter`.
    Avro,
    /// Confluent's `JsonSchemaConverter`.
    JsonSchema,
    /// Confluent's `ProtobufConverter`.
    Protobuf,
    /// Any other.
    Other,
}

impl ConverterClass {
    fn of(class: &str) -> Self {
        match class.rsplit('.').next().unwrap_or(class) {
            "StringConverter" => Self::String,
            "ByteArrayConverter" => Self::ByteArray,
            "JsonConverter" => Self::Json,
            "AvroConverter" => Self::Avro,
            "JsonSchemaConverter" => Self::JsonSchema,
            "ProtobufConverter" => Self::Protobuf,
            _ => Self::Other,
        }
    }

    fn uses_registry(self) -> bool {
        matches!(self, Self::Avro | Self::JsonSchema | Self::Protobuf)
    }
}

/// One side's converter (`key.converter` or `value.converter`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Converter {
    /// The class, and its name as given.
    pub class: Option<(ConverterClass, String)>,
    /// `schemas.enable` (`JsonConverter`; Kafka Connect's default is `true`).
    pub schemas_enable: Option<bool>,
    /// The registry settings, as our `schema_registry` table.
    pub registry: Option<toml::Table>,
    /// `<side>.converter.<side>.subject.name.strategy`, as given.
    pub subject_name_strategy: Option<String>,
}

impl Converter {
    /// The class, when given.
    pub fn class(&self) -> Option<ConverterClass> {
        self.class.as_ref().map(|(c, _)| *c)
    }

    /// The class's name as given, or `(none)`.
    pub fn class_name(&self) -> &str {
        self.class.as_ref().map_or("(none)", |(_, n)| n.as_str())
    }

    /// `key_subject_name_strategy` / `value_subject_name_strategy` of this side's
    /// `subject.name.strategy` class: `None` for Confluent's default (`TopicNameStrategy`)
    /// or none given; the class itself when it is not one of Confluent's three.
    pub fn subject_name_strategy(&self) -> Result<Option<&'static str>, &str> {
        let Some(class) = &self.subject_name_strategy else {
            return Ok(None);
        };
        match class.rsplit('.').next().unwrap_or(class) {
            "TopicNameStrategy" => Ok(None),
            "RecordNameStrategy" => Ok(Some("record_name")),
            "TopicRecordNameStrategy" => Ok(Some("topic_record_name")),
            _ => Err(class),
        }
    }

    /// `JsonConverter` with its envelope.
    pub fn json_with_schemas(&self) -> bool {
        self.class() == Some(ConverterClass::Json) && self.schemas_enable.unwrap_or(true)
    }
}

/// Both converters and the registry they share.
#[derive(Debug, Clone, Default)]
pub(crate) struct Converters {
    /// `key.converter`.
    pub key: Converter,
    /// `value.converter`.
    pub value: Converter,
    /// The pipeline's `schema_registry`: the value converter's, else the key converter's.
    pub registry: Option<toml::Table>,
}

impl Converters {
    pub(super) fn take(props: &mut Props, out: &mut Out) -> Self {
        let key = Self::side(props, "key", out);
        let value = Self::side(props, "value", out);
        let registry = match (&key.registry, &value.registry) {
            (Some(k), Some(v)) if k.get("url") != v.get("url") => {
                out.drop(
                    "key.converter.schema.registry.url",
                    "one schema registry per pipeline: the value converter's is kept",
                );
                Some(v.clone())
            }
            (Some(k), Some(v)) => {
                let mut merged = k.clone();
                merged.extend(v.clone());
                Some(merged)
            }
            (k, v) => v.clone().or_else(|| k.clone()),
        };
        if registry.as_ref().is_some_and(|r| {
            r.get("password")
                .and_then(toml::Value::as_str)
                .is_some_and(|p| !p.contains("${"))
        }) {
            out.note(
                "`schema_registry.password` is carried over as written: move it out of the file, e.g. `password = \"${env:SCHEMA_REGISTRY_PASSWORD}\"` or `\"${file:/run/secrets/registry-password}\"`",
            );
        }
        Self {
            key,
            value,
            registry,
        }
    }

    /// The registry settings were given but no format of ours reads through a registry.
    pub(crate) fn registry_unused(&self, out: &mut Out) {
        for (side, converter) in [("key", &self.key), ("value", &self.value)] {
            if converter.registry.is_some() {
                out.drop(
                    format!("{side}.converter.schema.registry.url"),
                    "read only by a registry converter that the pipeline reads or writes (`avro`, `json_schema`, `protobuf`)",
                );
            }
        }
    }

    fn side(props: &mut Props, side: &str, out: &mut Out) -> Converter {
        let p = |rest: &str| format!("{side}.converter{rest}");
        let class = props
            .take(&p(""))
            .map(|name| (ConverterClass::of(&name), name));
        let schemas_enable = {
            let value = props.take(&p(".schemas.enable"));
            out.boolean(&p(".schemas.enable"), value)
        };
        if schemas_enable.is_some()
            && class
                .as_ref()
                .is_some_and(|(c, _)| *c != ConverterClass::Json)
        {
            out.drop(p(".schemas.enable"), "read only by `JsonConverter`");
        }
        let mut registry = toml::Table::new();
        let urls = props.take(&p(".schema.registry.url"));
        let source = props.take(&p(".basic.auth.credentials.source"));
        let user_info = props
            .take(&p(".basic.auth.user.info"))
            .or_else(|| props.take(&p(".schema.registry.basic.auth.user.info")));
        let registry_class = class.as_ref().is_some_and(|(c, _)| c.uses_registry());
        if let Some(urls) = urls {
            let mut list = urls.split(',').map(str::trim).filter(|u| !u.is_empty());
            let first = list.next().unwrap_or_default().to_owned();
            if list.next().is_some() {
                out.drop(
                    p(".schema.registry.url"),
                    format!("lists several registries: `{first}` is kept (one URL per registry)"),
                );
            }
            if !registry_class {
                out.drop(
                    p(".schema.registry.url"),
                    format!(
                        "read only by a registry converter, not `{}`",
                        class.as_ref().map_or("(none)", |(_, n)| n.as_str())
                    ),
                );
            } else {
                let mut url = first;
                if let Ok(mut parsed) = url::Url::parse(&url) {
                    if !parsed.username().is_empty() {
                        let user = parsed.username().to_owned();
                        let password = parsed.password().map(str::to_owned);
                        let _ = parsed.set_username("");
                        let _ = parsed.set_password(None);
                        url = parsed.to_string().trim_end_matches('/').to_owned();
                        registry.insert("username".into(), user.into());
                        if let Some(password) = password {
                            registry.insert("password".into(), password.into());
                        }
                    }
                }
                registry.insert("url".into(), url.into());
            }
        }
        match (
            source.as_deref().map(str::to_ascii_uppercase).as_deref(),
            user_info,
        ) {
            (Some("SASL_INHERIT"), _) => out.drop(
                p(".basic.auth.credentials.source"),
                "`SASL_INHERIT`: give the registry's own `username` and `password`",
            ),
            (Some("URL") | None, None) => {}
            (_, Some(info)) if registry.contains_key("url") => match info.split_once(':') {
                Some((user, password)) => {
                    registry.insert("username".into(), user.into());
                    registry.insert("password".into(), password.into());
                }
                None => out.drop(p(".basic.auth.user.info"), "is not `user:password`"),
            },
            (_, Some(_)) => out.drop(
                p(".basic.auth.user.info"),
                "read only with a registry converter and its `schema.registry.url`",
            ),
            (Some(other), None) => out.drop(
                p(".basic.auth.credentials.source"),
                format!("`{other}` without `basic.auth.user.info`"),
            ),
        }
        if let Some(location) = props.take(&p(".schema.registry.ssl.truststore.location")) {
            let pem = [".pem", ".crt", ".cer"]
                .iter()
                .any(|e| location.to_ascii_lowercase().ends_with(e));
            if pem && registry.contains_key("url") {
                registry.insert("ca_file".into(), location.into());
            } else {
                out.drop(
                    p(".schema.registry.ssl.truststore.location"),
                    "a JKS trust store: convert its certificates to a PEM file and give it as `schema_registry.ca_file`",
                );
            }
        }
        for (rest, _) in props.take_prefixed(&p(".schema.registry.ssl.")) {
            let property = p(&format!(".schema.registry.ssl.{rest}"));
            if rest.starts_with("keystore") {
                out.drop(property, "a JKS or PKCS#12 key store: convert it to PEM files and give them as `schema_registry.cert_file` and `key_file`");
            } else {
                out.drop(property, "not needed with PEM files (`schema_registry.ca_file`, `cert_file`, `key_file`)");
            }
        }
        let other = if side == "key" { "value" } else { "key" };
        if props
            .take(&p(&format!(".{other}.subject.name.strategy")))
            .is_some()
        {
            out.drop(
                p(&format!(".{other}.subject.name.strategy")),
                format!("read only by the {other} converter (`{other}.converter.{other}.subject.name.strategy`), not the {side} converter"),
            );
        }
        let subject_name_strategy = props.take(&p(&format!(".{side}.subject.name.strategy")));
        let host = props.take(&p(".proxy.host"));
        let port = props.take(&p(".proxy.port"));
        if let Some(host) = host {
            let proxy = match port {
                Some(port) => format!("http://{host}:{port}"),
                None => format!("http://{host}"),
            };
            if registry.contains_key("url") {
                registry.insert("proxy".into(), proxy.into());
            } else {
                out.drop(p(".proxy.host"), "read only with a registry converter");
            }
        }
        Converter {
            class,
            schemas_enable,
            registry: (!registry.is_empty()).then_some(registry),
            subject_name_strategy,
        }
    }
}
