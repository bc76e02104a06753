//! A proto3 schema (`.proto` text) inferred from a BSON document: one message, its fields in
//! the document's order, numbered from 1; nested documents are nested messages.

use std::collections::HashSet;
use std::fmt::Write;

use bson::{Bson, Document};

use super::fields::default_json_name;
use crate::codec::avro::decimal_parts;

/// The file name inferred and given schemas are compiled under.
pub const FILE_NAME: &str = "schema.proto";

/// The `.proto` text of documents shaped as `doc`, its message named `name` (no package, so
/// the message's full name is `name`).
pub fn infer(doc: &Document, name: &str) -> String {
    let mut body = String::new();
    let mut imports = Imports::default();
    message(doc, name, 0, &mut body, &mut imports);
    let mut text = String::from("syntax = \"proto3\";\n\n");
    if imports.timestamp {
        text.push_str("import \"google/protobuf/timestamp.proto\";\n");
    }
    if imports.decimal {
        text.push_str("import \"confluent/type/decimal.proto\";\n");
    }
    if imports.timestamp || imports.decimal {
        text.push('\n');
    }
    text.push_str(&body);
    text
}

/// The files a schema imports: the well-known timestamp, Confluent's decimal.
#[derive(Debug, Default)]
struct Imports {
    timestamp: bool,
    decimal: bool,
}

/// The message types among the scalars `field_type` names (fields with presence of their own,
/// never `optional`).
fn is_message(type_name: &str) -> bool {
    type_name.contains('.')
}

/// A field's type, as written before its name.
#[derive(Debug, Clone, PartialEq)]
enum FieldType<'a> {
    /// A scalar type or a well-known message (`string`, `google.protobuf.Timestamp`).
    Scalar(&'static str),
    /// A nested message, of the fields of this document, to be named in the parent.
    Message(&'a Document),
    /// `repeated` of the inner type (never itself repeated).
    Repeated(Box<FieldType<'a>>),
}

fn field_type(value: &Bson) -> FieldType<'_> {
    match value {
        Bson::Double(_) => FieldType::Scalar("double"),
        Bson::Int32(_) => FieldType::Scalar("int32"),
        Bson::Int64(_) => FieldType::Scalar("int64"),
        Bson::Boolean(_) => FieldType::Scalar("bool"),
        Bson::Binary(_) => FieldType::Scalar("bytes"),
        Bson::DateTime(_) => FieldType::Scalar("google.protobuf.Timestamp"),
        // Finite decimals as Kafka Connect's `ProtobufConverter` writes them; NaN and the
        // infinities as their text, below.
        Bson::Decimal128(d) if decimal_parts(d).is_some() => {
            FieldType::Scalar("confluent.type.Decimal")
        }
        Bson::Document(doc) => FieldType::Message(doc),
        Bson::Array(items) => {
            let mut types = items.iter().map(|item| match item {
                Bson::Array(_) | Bson::Null | Bson::Undefined => None,
                other => Some(field_type(other)),
            });
            let Some(Some(first)) = types.next() else {
                return match items.is_empty() {
                    true => FieldType::Repeated(Box::new(FieldType::Scalar("string"))),
                    false => FieldType::Scalar("string"),
                };
            };
            // Documents share one message only when they infer the same one.
            let first_text = match &first {
                FieldType::Message(doc) => Some(message_text(doc)),
                _ => None,
            };
            let same = |t: &FieldType| match (t, &first_text) {
                (FieldType::Message(a), Some(text)) => message_text(a) == *text,
                _ => *t == first,
            };
            if types.all(|t| t.as_ref().is_some_and(same)) {
                FieldType::Repeated(Box::new(first))
            } else {
                FieldType::Scalar("string")
            }
        }
        // Strings, ObjectIds (hex), decimals NaN and infinite (their text), null (never set)
        // and the types without a proto twin (extended JSON).
        _ => FieldType::Scalar("string"),
    }
}

/// The text of the message of `doc` under a fixed name: tells documents' messages apart.
fn message_text(doc: &Document) -> String {
    let mut out = String::new();
    message(doc, "M", 0, &mut out, &mut Imports::default());
    out
}

fn message(doc: &Document, name: &str, depth: usize, out: &mut String, imports: &mut Imports) {
    let indent = "  ".repeat(depth);
    let _ = writeln!(out, "{indent}message {name} {{");
    // proto3 refuses two fields whose JSON names are alike (`a_b`, `aB`): fields are kept
    // apart by those. Fields, the oneof each `optional` field makes (`_a`, or `X_a` for
    // `_a`) and message types share one scope of names, each defined once.
    let mut json_names: HashSet<String> = HashSet::new();
    let mut scope: HashSet<String> = HashSet::new();
    let fields: Vec<(String, &str, FieldType)> = doc
        .iter()
        .map(|(key, value)| {
            let kind = field_type(value);
            let optional = matches!(&kind, FieldType::Scalar(s) if !is_message(s));
            let field = unique(&valid_name(key), |c| {
                let oneof = optional.then(|| synthetic_oneof(c));
                let free = !json_names.contains(&default_json_name(c).to_ascii_lowercase())
                    && !scope.contains(c)
                    && oneof.as_ref().is_none_or(|o| !scope.contains(o) && o != c);
                if free {
                    json_names.insert(default_json_name(c).to_ascii_lowercase());
                    scope.insert(c.to_owned());
                    scope.extend(oneof);
                }
                free
            });
            (field, key.as_str(), kind)
        })
        .collect();
    let mut types = scope;
    for (number, (field, original, kind)) in fields.iter().enumerate() {
        let (repeated, inner) = match kind {
            FieldType::Repeated(inner) => ("repeated ", inner.as_ref()),
            other => ("", other),
        };
        let type_name = match inner {
            FieldType::Scalar(scalar) => {
                imports.timestamp |= *scalar == "google.protobuf.Timestamp";
                imports.decimal |= *scalar == "confluent.type.Decimal";
                (*scalar).to_owned()
            }
            FieldType::Message(nested) => {
                let type_name = unique(&capitalized(field), |c| types.insert(c.to_owned()));
                message(nested, &type_name, depth + 1, out, imports);
                type_name
            }
            FieldType::Repeated(_) => "string".to_owned(),
        };
        let label = match (repeated, inner) {
            ("", FieldType::Scalar(s)) if !is_message(s) => "optional ",
            _ => repeated,
        };
        // A renamed field keeps the document's name as its JSON name, which the reader
        // restores.
        let option = if field != original {
            format!(" [json_name = \"{}\"]", escape(original))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{indent}  {label}{type_name} {field} = {}{option};",
            number + 1
        );
    }
    let _ = writeln!(out, "{indent}}}");
}

/// `name` as a proto identifier: other characters become `_`, a leading digit (or nothing)
/// gets `f_` before it (not `_` alone: `_1st`'s default JSON name would be `1st`, and the
/// reader would not tell it renamed).
pub fn valid_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || c == '_' {
            true => c,
            false => '_',
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "f_");
    }
    out
}

/// The name of the oneof protoc (and protox) make for the proto3 `optional` field `field`.
fn synthetic_oneof(field: &str) -> String {
    match field.starts_with('_') {
        true => format!("X{field}"),
        false => format!("_{field}"),
    }
}

/// A message type's name from its field's (valid) name: without leading `_`, the first letter
/// in capitals (`address` → `Address`); `M` before one that would start with a digit or be
/// empty (`__2` → `M2`).
fn capitalized(name: &str) -> String {
    let trimmed = name.trim_start_matches('_');
    let mut chars = trimmed.chars();
    match chars.next() {
        Some(first) if first.is_ascii_alphabetic() => {
            first.to_ascii_uppercase().to_string() + chars.as_str()
        }
        _ => format!("M{trimmed}"),
    }
}

/// `name`, or `name_2`, `name_3`... the first that `take` accepts (it keeps it as taken).
fn unique(name: &str, mut take: impl FnMut(&str) -> bool) -> String {
    let mut candidate = name.to_owned();
    let mut n = 2;
    while !take(&candidate) {
        candidate = format!("{name}_{n}");
        n += 1;
    }
    candidate
}

/// `text` as the inside of a proto string literal.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(byte as char),
            other => {
                let _ = write!(out, "\\{other:03o}");
            }
        }
    }
    out
}
