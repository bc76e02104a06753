//! The codecs: documents to bytes and back, whatever the pipeline around them. Pure
//! conversions (the registry client aside, which the Avro and JSON Schema codecs read through
//! its caches); nothing here imports a pipeline (`source`, `sink`) or the daemon.
//!
//! - [`extjson`]: extended JSON, both directions, straight from and into raw BSON.
//! - [`connector_json`]: the MongoDB Kafka Connector's JSON formats, byte for byte.
//! - [`connect_json`]: Kafka Connect's `JsonConverter` envelope, read.
//! - [`avro`]: BSON ⇄ Avro with inferred schemas, and its registry wire format.
//! - [`json_schema`]: BSON ⇄ JSON with an inferred JSON Schema.
//! - [`protobuf`]: BSON ⇄ Protobuf with inferred or given `.proto` schemas, and its registry
//!   wire format (message indexes).
//! - [`schema_registry`]: the schema registry client and its caches.
//! - [`schema_cache`]: the one cache every schema kept here lives in, bounded in bytes.
//! - [`base64`]: how binary data is spelled in JSON and in basic authentication.

pub mod avro;
pub mod base64;
pub mod connect_json;
pub mod connector_json;
pub mod extjson;
pub mod json_schema;
pub mod protobuf;
pub mod schema_cache;
pub mod schema_registry;
