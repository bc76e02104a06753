//! BSON documents ⇄ Protobuf (proto3), with the schema inferred from each document (or given
//! as `.proto` text), and the codecs that put Protobuf behind a schema registry's wire format.
//!
//! The mapping (the table in `docs/configuration.md` is written from it):
//!
//! | BSON | proto3 field (inferred) | back to BSON |
//! |---|---|---|
//! | double | `optional double` | double |
//! | string, symbol | `optional string` | string |
//! | document | a nested message | document |
//! | array, all items of one type | `repeated` of it (`repeated string` when empty) | array |
//! | array of mixed items, of arrays or with nulls | `optional string`: its relaxed extended JSON | string |
//! | binary | `optional bytes` | binary (generic subtype) |
//! | ObjectId | `optional string`, 24 hex digits | string |
//! | boolean | `optional bool` | boolean |
//! | date | `google.protobuf.Timestamp` | date |
//! | null, undefined | `optional string`, unset | null |
//! | int32 | `optional int32` | int32 |
//! | int64 | `optional int64` | int64 |
//! | decimal128, finite | `confluent.type.Decimal` (as Kafka Connect's `ProtobufConverter`) | decimal128 (same value and scale) |
//! | decimal128 NaN or infinite | `optional string`, its text | string |
//! | regex, JavaScript, timestamp, min/max key, DBPointer | `optional string`: canonical extended JSON | string |
//!
//! Read from other writers' schemas: `int32`, `sint32`, `sfixed32` → int32; `int64`,
//! `sint64`, `sfixed64`, `uint32`, `fixed32` → int64; `uint64`, `fixed64` → int64, or
//! decimal128 above its range; `float`, `double` → double; enums → the value's name;
//! `google.protobuf.Timestamp` → date; `confluent.type.Decimal` → decimal128; the wrappers (`google.protobuf.Int64Value`...) → their
//! value; maps → documents; a field that tracks presence (`optional`, a message) and is unset
//! → null; an unset proto3 scalar → its default (0, "", false); the alternatives of a `oneof`
//! not taken are left out.
//!
//! Field names proto forbids (`a.b`, `$x`, `1st`) become valid names (`a_b`, `_x`, `f_1st`,
//! made unique with a suffix) and keep the original as the field's `json_name`, which the
//! reader restores: a field whose `json_name` is not the default one is read under it. Nested
//! messages are named after their field (`address` → `Address`).
//!
//! In six parts: `infer` (the `.proto` text of a document), `encode` (a document as a message
//! of a descriptor), `decode` (a message → BSON), `fields` (the names and well-known messages
//! those three agree on), `schema` (`.proto` text compiled, with the files it may import) and
//! `registry` (the writer and reader in the registry's wire format).

mod decode;
mod encode;
mod fields;
mod infer;
mod registry;
mod schema;

pub use self::decode::to_document;
pub use self::encode::to_message;
pub use self::infer::infer;
pub use self::registry::{
    message_at, read_indexes, write_indexes, ProtobufError, ProtobufReader, ProtobufWriter,
};
pub use self::schema::{compile, given_message};

#[cfg(test)]
mod tests {
    use bson::spec::BinarySubtype;
    use bson::{doc, oid::ObjectId, Binary, Bson, DateTime, Decimal128, Document};
    use prost::Message;
    use prost_reflect::DynamicMessage;

    use super::*;

    /// Infers, compiles, encodes and reads back `doc`, as the source and sink do.
    fn round_trip(doc: &Document) -> (String, Document) {
        let text = infer(doc, "Document");
        let message = given_message(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let value = to_message(doc, &message, "").unwrap_or_else(|e| panic!("{text}: {e}"));
        let bytes = value.encode_to_vec();
        let read = DynamicMessage::decode(message, bytes.as_slice()).expect("decodes");
        (text, to_document(&read))
    }

    #[test]
    fn bson_types_map_to_the_documented_proto_types() {
        let oid = ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").expect("oid");
        let decimal = "-12.345".parse::<Decimal128>().expect("decimal");
        let doc = doc! {
            "_id": oid,
            "double": 1.5,
            "string": "héllo",
            "int32": 7_i32,
            "int64": i64::MAX,
            "bool": true,
            "date": DateTime::from_millis(1_700_000_000_123),
            "before1970": DateTime::from_millis(-1_001),
            "decimal": decimal,
            "binary": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 255] },
            "null": Bson::Null,
            "nested": { "a": { "b": 1 } },
            "list": [1, 2, 3],
            "docs": [{ "x": 1 }, { "x": 2 }],
            "mixed": [1, "two"],
            "empty": [],
            "zero": 0,
            "thousand": "1E+3".parse::<Decimal128>().expect("decimal"),
            "nan": "NaN".parse::<Decimal128>().expect("decimal"),
        };
        let (text, back) = round_trip(&doc);
        for line in [
            "optional string _id = 1;",
            "optional double double = 2;",
            "optional int32 int32 = 4;",
            "optional int64 int64 = 5;",
            "optional bool bool = 6;",
            "google.protobuf.Timestamp date = 7;",
            "confluent.type.Decimal decimal = 9;",
            "optional bytes binary = 10;",
            "Nested nested = 12;",
            "repeated int32 list = 13;",
            "repeated Docs docs = 14;",
            "optional string mixed = 15;",
            "repeated string empty = 16;",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        let mut expected = doc.clone();
        expected.insert("_id", oid.to_hex());
        expected.insert("mixed", r#"[1,"two"]"#);
        // Decimals keep value and scale (`1E+3` has scale -3); NaN is its text.
        expected.insert("nan", "NaN");
        assert_eq!(back, expected, "{text}");
    }

    #[test]
    fn names_proto_forbids_are_renamed_and_restored() {
        let doc = doc! { "n": { "a.b": 1, "a_b": 2, "$x": 3, "1st": 4, "aB": 5, "é": "x" } };
        let (text, back) = round_trip(&doc);
        assert!(
            text.contains("optional int32 a_b = 1 [json_name = \"a.b\"];"),
            "{text}"
        );
        assert!(
            text.contains("optional int32 a_b_2 = 2 [json_name = \"a_b\"];"),
            "{text}"
        );
        assert_eq!(back, doc, "{text}");
        // proto's keywords and type names are field names like any other.
        let doc = doc! {
            "message": 1, "optional": "x", "repeated": [1], "syntax": true, "import": 1,
            "package": 2, "enum": 3, "map": { "max": 1, "to": 2 }, "oneof": 1, "reserved": 1,
            "option": 1, "group": 1, "int32": 1, "true": 1, "stream": 1, "returns": 1,
            "service": 1, "rpc": 1, "extend": 1, "extensions": 1, "required": 1, "string": "s",
            "Map": { "weak": 1, "public": 2, "inf": 3, "nan": 4 }, "google": 1,
        };
        let (text, back) = round_trip(&doc);
        assert_eq!(back, doc, "{text}");
        // The oneof of `optional b` is `_b`, the oneof of `_b` is `X_b`; a message named
        // after `__2` is `M2` (found by tests/proptest_conversions.rs).
        let doc = doc! { "b": 1, "_b": 2, "X_b": 3, "¡": {}, "\u{1}": {} };
        let (text, back) = round_trip(&doc);
        assert_eq!(back, doc, "{text}");
    }

    #[test]
    fn the_types_without_a_proto_twin_become_extended_json() {
        let doc = doc! {
            "regex": bson::Regex { pattern: "^a".into(), options: "i".into() },
            "ts": bson::Timestamp { time: 1, increment: 2 },
            "min": Bson::MinKey,
            "nested": [[1], [2]],
        };
        let (_, back) = round_trip(&doc);
        assert_eq!(
            back.get_str("ts").ok(),
            Some(r#"{"$timestamp":{"t":1,"i":2}}"#)
        );
        assert_eq!(back.get_str("nested").ok(), Some("[[1],[2]]"));
        assert_eq!(back.get_str("min").ok(), Some(r#"{"$minKey":1}"#));
    }

    #[test]
    fn message_indexes_round_trip_in_confluents_encoding() {
        for (indexes, bytes) in [
            (vec![0], vec![0u8]),
            (vec![1], vec![2, 2]),
            (vec![0, 2], vec![4, 0, 4]),
        ] {
            let mut out = Vec::new();
            write_indexes(&indexes, &mut out);
            assert_eq!(out, bytes, "{indexes:?}");
            out.push(0x2a);
            let (read, rest) = read_indexes(&out).expect("reads");
            assert_eq!(read, indexes);
            assert_eq!(rest, [0x2a]);
        }
        assert!(read_indexes(&[]).is_err());
        assert!(read_indexes(&[0x80]).is_err());
        assert!(read_indexes(&[200, 1])
            .unwrap_err()
            .contains("message indexes"));
    }

    const OTHERS: &str = r#"
        syntax = "proto3";
        package shop.v1;
        import "google/protobuf/wrappers.proto";
        message Ignored { string x = 1; }
        message Order {
          message Line { string sku = 1; uint64 qty = 2; }
          enum Status { NEW = 0; PAID = 1; }
          int64 id = 1;
          string user_id = 2;
          repeated Line lines = 3;
          map<string, int32> counts = 4;
          Status status = 5;
          google.protobuf.Int64Value maybe = 6;
          oneof pay { string card = 7; string cash = 8; }
          optional string note = 9;
          bool flag = 10;
        }
    "#;

    #[test]
    fn schemas_of_other_writers_are_read_by_the_message_indexes() {
        let file = compile(OTHERS).expect("compiles");
        let order = message_at(&file, &[1]).expect("Order");
        assert_eq!(order.full_name(), "shop.v1.Order");
        assert_eq!(
            message_at(&file, &[1, 0]).expect("Line").full_name(),
            "shop.v1.Order.Line"
        );
        let err = message_at(&file, &[2]).unwrap_err();
        assert!(
            err.contains("message index 2 is out of range: the schema has 2"),
            "{err}"
        );
        let doc = doc! {
            "id": 7_i64, "user_id": "u", "lines": [{ "sku": "a", "qty": 2_i64 }],
            "counts": { "b": 2, "a": 1 }, "status": "PAID", "maybe": 5_i64, "card": "visa",
        };
        let value = to_message(&doc, &order, "").expect("fits");
        let read = DynamicMessage::decode(order, value.encode_to_vec().as_slice()).expect("reads");
        assert_eq!(
            to_document(&read),
            doc! {
                "id": 7_i64, "user_id": "u", "lines": [{ "sku": "a", "qty": 2_i64 }],
                "counts": { "a": 1, "b": 2 }, "status": "PAID", "maybe": 5_i64, "card": "visa",
                "note": Bson::Null, "flag": false,
            }
        );
    }

    #[test]
    fn serialized_descriptors_are_read_as_confluents_clients_register_them() {
        // What Confluent's Python serializer registers: a base64 `FileDescriptorProto`.
        let file = compile(OTHERS).expect("compiles");
        let encoded = crate::codec::base64::encode(&file.file_descriptor_proto().encode_to_vec());
        let again = compile(&encoded).expect("a serialized descriptor");
        assert_eq!(
            message_at(&again, &[1]).expect("Order").full_name(),
            "shop.v1.Order"
        );
        assert!(compile("not a schema").is_err());
    }

    #[test]
    fn schemas_of_kafka_connects_protobuf_converter_import_confluents_files() {
        // What `ProtobufConverter` registers for a decimal field, without references.
        let text = r#"syntax = "proto3";
            package c;
            import "confluent/meta.proto";
            import "confluent/type/decimal.proto";
            message Row {
              confluent.type.Decimal price = 1 [(confluent.field_meta).doc = "a price"];
            }"#;
        let row = given_message(text).expect("compiles with Confluent's files");
        for (d, scale) in [("-12345.678", 3), ("1E+3", -3), ("0", 0)] {
            let doc = doc! { "price": d.parse::<Decimal128>().expect("decimal") };
            let value = to_message(&doc, &row, "").expect("fits");
            let price = value.get_field_by_name("price").expect("set");
            let price = price.as_message().expect("a message");
            assert_eq!(
                price.get_field_by_name("scale").and_then(|s| s.as_i32()),
                Some(scale),
                "{d}"
            );
            let read = DynamicMessage::decode(row.clone(), value.encode_to_vec().as_slice())
                .expect("reads");
            assert_eq!(to_document(&read), doc, "{d}");
        }
        let nan = doc! { "price": "NaN".parse::<Decimal128>().expect("decimal") };
        let err = to_message(&nan, &row, "").expect_err("NaN is no confluent.type.Decimal");
        assert!(err.contains("`price` is NaN"), "{err}");
    }

    #[test]
    fn documents_that_do_not_fit_a_given_schema_say_where() {
        let order = message_at(&compile(OTHERS).expect("compiles"), &[1]).expect("Order");
        for (doc, why) in [
            (doc! { "id": "x" }, "`id` is string, the schema has int64"),
            (
                doc! { "lines": [{ "qty": -1 }] },
                "`lines[0].qty` is out of the range of uint64",
            ),
            (doc! { "status": "LOST" }, "`status`: `LOST` is not a value"),
            (
                doc! { "lines": { "a": 1 } },
                "`lines` is document, the schema has a list",
            ),
        ] {
            let err = to_message(&doc, &order, "").expect_err("does not fit");
            assert!(err.contains(why), "{doc}: {err}");
        }
    }
}
