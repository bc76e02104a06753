//! The output formats of a source (`format`, `key_format`, `value_format`), named by the
//! source's configuration and by the schema registry's checks of a given schema.

use serde::{Deserialize, Serialize};

/// `format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// Relaxed extended JSON: plain numbers and ISO dates where lossless.
    #[default]
    RelaxedJson,
    /// Canonical extended JSON: every BSON type explicit, round-trips exactly.
    CanonicalJson,
    /// Plain JSON: ObjectIds as hex strings, dates as ISO-8601 strings, decimals as strings.
    SimplifiedJson,
    /// The MongoDB Kafka Connector's default JSON, byte for byte (`output.format.value =
    /// json` with `output.json.formatter` `DefaultJson`): legacy extended JSON,
    /// `{"$date": <millis>}`, `{"$numberLong": "..."}`.
    ConnectorDefaultJson,
    /// The connector's JSON with the `ExtendedJson` formatter, byte for byte: canonical
    /// extended JSON as the Java driver writes it.
    ConnectorExtendedJson,
    /// The connector's JSON with the `SimplifiedJson` formatter, byte for byte.
    ConnectorSimplifiedJson,
    /// The raw BSON bytes of the document.
    Bson,
    /// Avro in a schema registry's wire format, the schema inferred from each document.
    Avro,
    /// `simplified_json` in a schema registry's wire format, with a JSON Schema inferred from
    /// each document.
    JsonSchema,
    /// Protobuf (proto3) in a schema registry's wire format (with Confluent's message
    /// indexes), with a `.proto` schema inferred from each document or given.
    Protobuf,
}

impl OutputFormat {
    /// Whether records in this format go through a schema registry.
    pub fn uses_registry(self) -> bool {
        matches!(self, Self::Avro | Self::JsonSchema | Self::Protobuf)
    }
}

/// `key_subject_name_strategy`, `value_subject_name_strategy`: the subject a schema is
/// registered under, as Confluent's serializers' `key.subject.name.strategy` /
/// `value.subject.name.strategy` name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectNameStrategy {
    /// `<topic>-key` / `<topic>-value` (`TopicNameStrategy`).
    #[default]
    TopicName,
    /// The record's fully qualified name (`RecordNameStrategy`): the Avro record's full
    /// name, the JSON Schema's `title`, the Protobuf message's full name.
    RecordName,
    /// `<topic>-<record name>` (`TopicRecordNameStrategy`).
    TopicRecordName,
}

impl SubjectNameStrategy {
    /// The subject of the schema of record `record` on `topic`, for its key (`is_key`) or
    /// value.
    pub fn subject(self, topic: &str, is_key: bool, record: &str) -> String {
        match self {
            Self::TopicName if is_key => format!("{topic}-key"),
            Self::TopicName => format!("{topic}-value"),
            Self::RecordName => record.to_owned(),
            Self::TopicRecordName => format!("{topic}-{record}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_named_as_confluents_strategies_name_them() {
        let name = |s: SubjectNameStrategy, key| s.subject("db.orders", key, "shop.Order");
        assert_eq!(name(SubjectNameStrategy::TopicName, true), "db.orders-key");
        assert_eq!(
            name(SubjectNameStrategy::TopicName, false),
            "db.orders-value"
        );
        assert_eq!(name(SubjectNameStrategy::RecordName, false), "shop.Order");
        assert_eq!(
            name(SubjectNameStrategy::TopicRecordName, true),
            "db.orders-shop.Order"
        );
    }
}
