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
}
