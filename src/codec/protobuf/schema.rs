//! `.proto` schemas compiled into descriptors: the registry's text (or base64 descriptor) and
//! the schemas given in the configuration, with the files they may import without a schema
//! reference (Google's well-known ones, Confluent's built-in ones).

use prost_reflect::{FileDescriptor, MessageDescriptor};

use super::infer::FILE_NAME;

/// The file a registry's schema text describes, compiled: `.proto` text, or (as Confluent's
/// registry hands out with `format=serialized`, and as Confluent's own clients register) a
/// base64 `FileDescriptorProto`. The well-known `google/protobuf/*.proto` files and Confluent's
/// built-in `confluent/...` files may be imported; other imports (schema references) are not
/// resolved.
pub fn compile(text: &str) -> Result<FileDescriptor, String> {
    let file = match serialized(text) {
        Some(file) => file,
        None => protox::file::File::from_source(FILE_NAME, text).map_err(|e| e.to_string())?,
    };
    let name = file.name().to_owned();
    let mut resolver = protox::file::ChainFileResolver::new();
    resolver.add(OneFile(name.clone(), file));
    resolver.add(ConfluentFiles);
    resolver.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.open_file(&name).map_err(|e| e.to_string())?;
    compiler
        .descriptor_pool()
        .get_file_by_name(&name)
        .ok_or_else(|| format!("`{name}` is missing after compiling it"))
}

/// `text` as a base64 `FileDescriptorProto`, if it is one.
fn serialized(text: &str) -> Option<protox::file::File> {
    let text = text.trim();
    if text.is_empty()
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        return None;
    }
    let bytes = crate::codec::base64::decode(text).ok()?;
    let file = protox::file::File::decode_file_descriptor_proto(bytes.as_slice()).ok()?;
    (!file.name().is_empty()).then_some(file)
}

/// The files Confluent's registry and serializers know without a schema reference, as
/// Confluent's Python client ships them (`confluent_kafka.schema_registry.confluent`).
struct ConfluentFiles;

/// `confluent/type/decimal.proto`, which Kafka Connect's `ProtobufConverter` imports for
/// decimals.
const CONFLUENT_DECIMAL: &str = r#"syntax = "proto3";
package confluent.type;
option go_package = "../decimal";
message Decimal {
  bytes value = 1;
  uint32 precision = 2;
  int32 scale = 3;
}
"#;

/// `confluent/meta.proto`, imported for the `(confluent.field_meta)` options.
const CONFLUENT_META: &str = r#"syntax = "proto3";
package confluent;
import "google/protobuf/descriptor.proto";
option go_package = "../confluent";
message Meta {
  string doc = 1;
  map<string, string> params = 2;
  repeated string tags = 3;
  repeated Rule rules = 4;
}
message Rule {
  string name = 1;
  string doc = 2;
  string expr = 3;
  string sql = 4;
}
extend google.protobuf.FileOptions { Meta file_meta = 1088; }
extend google.protobuf.MessageOptions { Meta message_meta = 1088; }
extend google.protobuf.FieldOptions { Meta field_meta = 1088; }
extend google.protobuf.EnumOptions { Meta enum_meta = 1088; }
extend google.protobuf.EnumValueOptions { Meta enum_value_meta = 1088; }
"#;

impl protox::file::FileResolver for ConfluentFiles {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match name {
            "confluent/type/decimal.proto" => {
                protox::file::File::from_source(name, CONFLUENT_DECIMAL)
            }
            "confluent/meta.proto" => protox::file::File::from_source(name, CONFLUENT_META),
            _ => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// A resolver serving one file by its name.
struct OneFile(String, protox::file::File);

impl protox::file::FileResolver for OneFile {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match name == self.0 {
            true => Ok(self.1.clone()),
            false => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// The first message of the `.proto` text `text`, or why there is none.
pub fn given_message(text: &str) -> Result<MessageDescriptor, String> {
    let file = compile(text).map_err(|e| format!("is not a valid .proto schema: {e}"))?;
    let first = file.messages().next();
    first.ok_or_else(|| "is a .proto schema without a message".to_owned())
}
