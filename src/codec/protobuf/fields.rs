//! What the encoder, decoder and inference agree on: the name a field has in documents, the
//! default JSON name protoc gives a field, and the well-known messages read as values.

use prost_reflect::{FieldDescriptor, MessageDescriptor};

/// The name of `field` in documents: its JSON name when the schema set one other than the
/// default (the inference does so for renamed fields), else its name.
pub fn document_name(field: &FieldDescriptor) -> String {
    let json = field.json_name();
    if json != default_json_name(field.name()) {
        json.to_owned()
    } else {
        field.name().to_owned()
    }
}

/// The JSON name protoc gives a field that sets none: `_` removed, the letter after it in
/// capitals (`user_id` → `userId`).
pub fn default_json_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The full name of Confluent's decimal message (`confluent/type/decimal.proto`), BSON
/// decimals' twin: the unscaled value as big-endian two's complement bytes, the precision
/// and the scale.
pub const DECIMAL: &str = "confluent.type.Decimal";

/// The full name of the well-known timestamp message, BSON dates' twin.
pub const TIMESTAMP: &str = "google.protobuf.Timestamp";

/// Whether `m` is one of the well-known wrappers (`google.protobuf.Int64Value`...).
pub fn is_wrapper(m: &MessageDescriptor) -> bool {
    m.full_name().starts_with("google.protobuf.")
        && m.full_name().ends_with("Value")
        && !matches!(
            m.full_name(),
            "google.protobuf.Value" | "google.protobuf.ListValue"
        )
        && m.fields().len() == 1
}
