//! BSON documents ⇄ Avro, with the schema inferred from each document (like the MongoDB Kafka
//! Connector's `output.schema.infer.value`), and the codecs that put Avro behind a schema
//! registry's wire format.
//!
//! The mapping (the table in `docs/configuration.md` is written from it):
//!
//! | BSON | Avro schema | back to BSON |
//! |---|---|---|
//! | double | `double` | double |
//! | string, symbol | `string` | string |
//! | document | `record` (every field `["null", T]`, default `null`) | document |
//! | array, all items of one schema | `array` of it (`null` items when empty) | array |
//! | array of mixed items | `string`: its relaxed extended JSON | string |
//! | binary | `bytes` | binary (generic subtype) |
//! | ObjectId | `string`, 24 hex digits | string |
//! | boolean | `boolean` | boolean |
//! | date | `long`, `timestamp-millis` | date |
//! | null, undefined | `null` | null |
//! | int32 | `int` | int32 |
//! | int64 | `long` | int64 |
//! | decimal128, finite | `bytes`, `decimal` (scale from the value's exponent) | decimal128 |
//! | decimal128 NaN or infinite; regex, JavaScript, timestamp, min/max key, DBPointer | `string`: canonical extended JSON | string |
//!
//! Field names Avro forbids (`a.b`, `$x`, `1st`) become valid names (`a_b`, `_x`, `_1st`,
//! made unique with a suffix) and keep the original in the field's `mongo_name` attribute,
//! which the reader restores. Record names follow the path (`Document_address_geo`).
//!
//! In four parts: `infer` (schema and value from a document, and its shape), `encode` (a
//! document under a configured schema), `decode` (Avro → BSON) and `registry` (the writer and
//! reader in the registry's wire format).

mod decode;
mod encode;
mod infer;
mod registry;

pub use self::decode::to_bson;
// Decimals as two's complement bytes and a scale: Protobuf's `confluent.type.Decimal` too.
pub(crate) use self::decode::decimal128;
pub(crate) use self::infer::{decimal_parts, twos_complement};
pub use self::infer::{infer, shape, Inferred, MONGO_NAME};
pub use self::registry::{AvroError, AvroReader, AvroWriter};

#[cfg(test)]
mod tests {
    use apache_avro::schema::RecordSchema;

    use apache_avro::Schema;
    use bson::spec::BinarySubtype;
    use bson::{Binary, Bson, DateTime, Decimal128, Document};
    use serde_json::{json, Value as Json};

    use super::decode::*;
    use super::encode::*;
    use super::infer::*;

    use bson::oid::ObjectId;
    use bson::{doc, Regex, Timestamp};

    /// Encodes `doc` with its inferred schema and reads it back, as the sink does.
    fn round_trip(doc: &Document) -> (Json, Document) {
        let Inferred { schema, value } = infer(doc, "Document");
        let parsed = Schema::parse_str(&schema).unwrap_or_else(|e| panic!("{schema}: {e}"));
        let datum =
            apache_avro::to_avro_datum(&parsed, value).unwrap_or_else(|e| panic!("{schema}: {e}"));
        let read =
            apache_avro::from_avro_datum(&parsed, &mut datum.as_slice(), None).expect("reads");
        match to_bson(read, &parsed).expect("converts") {
            Bson::Document(back) => (serde_json::from_str(&schema).expect("JSON"), back),
            other => panic!("not a document: {other}"),
        }
    }

    fn field_type<'a>(schema: &'a Json, name: &str) -> &'a Json {
        let fields = schema["fields"].as_array().expect("fields");
        let field = fields
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {schema}"));
        match &field["type"] {
            Json::Array(union) => &union[1],
            other => other,
        }
    }

    #[test]
    fn bson_types_map_to_the_documented_avro_types() {
        let oid = ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").expect("oid");
        let doc = doc! {
            "_id": oid,
            "double": 1.5,
            "string": "héllo",
            "int32": 7_i32,
            "int64": i64::MAX,
            "bool": true,
            "date": DateTime::from_millis(1_700_000_000_123),
            "decimal": "-12.345".parse::<Decimal128>().expect("decimal"),
            "binary": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 255] },
            "null": Bson::Null,
            "nested": { "a": { "b": 1 } },
            "list": [1, 2, 3],
        };
        let (schema, back) = round_trip(&doc);
        assert_eq!(field_type(&schema, "_id"), &json!("string"));
        assert_eq!(field_type(&schema, "double"), &json!("double"));
        assert_eq!(field_type(&schema, "int32"), &json!("int"));
        assert_eq!(field_type(&schema, "int64"), &json!("long"));
        assert_eq!(field_type(&schema, "bool"), &json!("boolean"));
        assert_eq!(
            field_type(&schema, "date"),
            &json!({"type": "long", "logicalType": "timestamp-millis"})
        );
        assert_eq!(
            field_type(&schema, "decimal"),
            &json!({"type": "bytes", "logicalType": "decimal", "precision": 34, "scale": 3})
        );
        assert_eq!(field_type(&schema, "binary"), &json!("bytes"));
        assert_eq!(field_type(&schema, "null"), &json!("null"));
        assert_eq!(field_type(&schema, "nested")["name"], "Document_nested");
        assert_eq!(
            field_type(&schema, "list"),
            &json!({"type": "array", "items": "int"})
        );
        // Every type comes back as itself, but the ObjectId, which is a string in Avro.
        let mut expected = doc.clone();
        expected.insert("_id", oid.to_hex());
        assert_eq!(back, expected);
    }

    #[test]
    fn decimals_keep_their_value_and_scale() {
        for text in [
            "0",
            "1.10",
            "-0.001",
            "12345678901234567890123456789012.34",
            "1E+3",
            "-7E-20",
        ] {
            let d = text.parse::<Decimal128>().expect("decimal");
            let (_, back) = round_trip(&doc! { "d": d });
            let read = back.get("d").expect("d");
            let Bson::Decimal128(read) = read else {
                panic!("{text}: {read:?}")
            };
            // Same value and scale: the text of both, normalised to an exponent form.
            assert_eq!(decimal(read), decimal(&d), "{text}: {read}");
        }
        assert_eq!(decimal(&"1.10".parse().expect("d")), Some((110, 2)));
        assert_eq!(decimal(&"1E+3".parse().expect("d")), Some((1000, 0)));
        assert_eq!(decimal(&"NaN".parse().expect("d")), None);
        assert_eq!(twos_complement(-1), vec![0xff]);
        assert_eq!(twos_complement(128), vec![0, 128]);
        assert_eq!(twos_complement(-129), vec![0xff, 0x7f]);
    }

    #[test]
    fn types_without_an_avro_twin_become_extended_json_strings() {
        let doc = doc! {
            "nan": "NaN".parse::<Decimal128>().expect("decimal"),
            "regex": Regex { pattern: "^a".into(), options: "i".into() },
            "ts": Timestamp { time: 1, increment: 2 },
            "min": Bson::MinKey,
            "mixed": [1, "two", { "three": 3 }],
            "undefined": Bson::Undefined,
            "max": Bson::MaxKey,
            "code": Bson::JavaScriptCode("f()".into()),
            "scoped": bson::JavaScriptCodeWithScope { code: "x".into(), scope: doc! { "x": 1 } },
            "pointer": Bson::try_from(json!({"$dbPointer": {"$ref": "db.c", "$id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"}}})).expect("a DBPointer"),
            "symbol": Bson::Symbol("sym".into()),
            "inf": f64::INFINITY,
        };
        let (schema, back) = round_trip(&doc);
        assert_eq!(field_type(&schema, "symbol"), &json!("string"));
        assert_eq!(back.get_str("symbol").ok(), Some("sym"));
        assert_eq!(field_type(&schema, "inf"), &json!("double"));
        assert_eq!(back.get_f64("inf").ok(), Some(f64::INFINITY));
        assert_eq!(back.get_str("code").ok(), Some(r#"{"$code":"f()"}"#));
        for name in [
            "nan", "regex", "ts", "min", "mixed", "max", "code", "scoped", "pointer",
        ] {
            assert_eq!(field_type(&schema, name), &json!("string"), "{name}");
        }
        assert_eq!(
            back.get_str("ts").ok(),
            Some(r#"{"$timestamp":{"t":1,"i":2}}"#)
        );
        assert_eq!(back.get_str("mixed").ok(), Some(r#"[1,"two",{"three":3}]"#));
        assert_eq!(back.get("undefined"), Some(&Bson::Null));
    }

    #[test]
    fn names_avro_forbids_are_renamed_and_restored() {
        let doc = doc! {
            "updatedFields": { "a.b": 1, "a_b": 2, "$x": 3, "1st": 4, "": 5 },
        };
        let (schema, back) = round_trip(&doc);
        let inner = field_type(&schema, "updatedFields");
        let names: Vec<&str> = inner["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|f| f["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["a_b", "a_b_2", "_x", "_1st", "_"]);
        assert_eq!(inner["fields"][0][MONGO_NAME], "a.b");
        assert_eq!(back, doc);
    }

    #[test]
    fn arrays_of_documents_share_one_record_schema() {
        let doc =
            doc! { "items": [{ "sku": "a", "qty": 1 }, { "sku": "b", "qty": 2 }], "empty": [] };
        let (schema, back) = round_trip(&doc);
        assert_eq!(
            field_type(&schema, "items")["items"]["name"],
            "Document_items_item"
        );
        assert_eq!(
            field_type(&schema, "empty"),
            &json!({"type": "array", "items": "null"})
        );
        assert_eq!(back, doc);
    }

    /// Documents of many shapes, some alike: every BSON type, nesting, arrays of one and of
    /// mixed items, decimals of several scales, renamed fields.
    fn shapes() -> Vec<Document> {
        let decimal = |text: &str| text.parse::<Decimal128>().expect("decimal");
        vec![
            doc! { "_id": 1, "a": "x" },
            doc! { "_id": 2, "a": "y" },
            doc! { "_id": 3_i64, "a": "y" },
            doc! { "a": "y", "_id": 3 },
            doc! { "_id": 4, "a": "z", "b": true },
            doc! { "_id": 5, "a": Bson::Null },
            doc! { "_id": 6, "d": decimal("1.10") },
            doc! { "_id": 7, "d": decimal("2.20") },
            doc! { "_id": 8, "d": decimal("2.2") },
            doc! { "_id": 9, "d": decimal("NaN") },
            doc! { "_id": 10, "l": [1, 2] },
            doc! { "_id": 11, "l": [3] },
            doc! { "_id": 12, "l": [1, "two"] },
            doc! { "_id": 13, "l": [] },
            doc! { "_id": 14, "l": [{ "x": 1 }, { "x": 2 }] },
            doc! { "_id": 15, "l": [{ "x": 1 }, { "y": 2 }] },
            doc! { "_id": 16, "n": { "a.b": 1, "a_b": 2 } },
            doc! { "_id": 17, "n": { "a_b": 1, "a.b": 2 } },
            doc! { "_id": 18, "o": ObjectId::new(), "s": Bson::Symbol("s".into()) },
            doc! { "_id": 19, "o": "text", "s": "text" },
            doc! { "_id": 20, "t": DateTime::from_millis(5), "r": Regex { pattern: "a".into(), options: String::new() } },
            doc! { "_id": 21, "t": DateTime::from_millis(6), "r": Timestamp { time: 1, increment: 1 } },
            doc! { "_id": 22, "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![1] }, "f": 1.5 },
            doc! { "_id": 23, "u": Bson::Undefined, "m": Bson::MaxKey },
        ]
    }

    #[test]
    fn the_shape_walk_gives_the_inferred_value_and_tells_schemas_apart() {
        let docs = shapes();
        for doc in &docs {
            let (_, value) = shape(doc);
            assert_eq!(value, infer(doc, "Document").value, "{doc}");
        }
        // Same fingerprint exactly when same schema.
        for a in &docs {
            for b in &docs {
                let same_shape = shape(a).0 == shape(b).0;
                let same_schema = infer(a, "Document").schema == infer(b, "Document").schema;
                assert_eq!(same_shape, same_schema, "{a} / {b}");
            }
        }
    }

    /// A schema given in the configuration: a record with a renamed field, a nested record
    /// used twice (a reference), a decimal of scale 2, a field with a default.
    const GIVEN: &str = r#"{
        "type": "record", "name": "Order", "fields": [
            {"name": "_id", "type": "long"},
            {"name": "odd_name", "type": "string", "mongo_name": "odd name"},
            {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
            {"name": "at", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null},
            {"name": "ship", "type": {"type": "record", "name": "Address", "fields": [{"name": "city", "type": "string"}]}},
            {"name": "bill", "type": ["null", "Address"], "default": null},
            {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}
        ]}"#;

    fn given() -> (Schema, RecordSchema) {
        let schema = Schema::parse_str(GIVEN).expect("the schema");
        let Schema::Record(record) = schema.clone() else {
            panic!("a record")
        };
        (schema, record)
    }

    fn write_given(doc: &Document) -> Result<Document, String> {
        let (schema, record) = given();
        let names = Names::of(&schema)?;
        let value = conform_record(doc, &record, &names, "")?;
        let datum = apache_avro::to_avro_datum(&schema, value).map_err(|e| e.to_string())?;
        let read = apache_avro::from_avro_datum(&schema, &mut datum.as_slice(), None)
            .map_err(|e| e.to_string())?;
        match to_bson(read, &schema)? {
            Bson::Document(doc) => Ok(doc),
            other => Err(format!("not a document: {other}")),
        }
    }

    #[test]
    fn documents_are_written_in_a_given_schema_by_field_name() {
        let price = "12.5".parse::<Decimal128>().expect("decimal");
        let doc = doc! {
            "_id": 7,
            "odd name": "kept",
            "price": price,
            "ship": { "city": "Oslo", "zip": "0150" },
            "bill": { "city": "Bergen" },
            "not in the schema": true,
        };
        let back = write_given(&doc).expect("fits");
        assert_eq!(
            back,
            doc! {
                "_id": 7_i64,
                "odd name": "kept",
                // Rescaled to the schema's scale 2, same value.
                "price": "12.50".parse::<Decimal128>().expect("decimal"),
                "at": Bson::Null,
                "ship": { "city": "Oslo" },
                "bill": { "city": "Bergen" },
                "tags": [],
            }
        );
    }

    #[test]
    fn documents_that_do_not_fit_a_given_schema_say_where() {
        let base = doc! { "_id": 1, "odd name": "x", "price": 1, "ship": { "city": "c" } };
        if let Err(e) = write_given(&base) {
            panic!("{base}: {e}");
        }
        for (edit, why) in [
            (
                doc! { "price": "1.234".parse::<Decimal128>().expect("d") },
                "`price` has scale 3, more than the schema's 2",
            ),
            (doc! { "ship": { "town": "c" } }, "`ship.city` is missing"),
            (doc! { "_id": "one" }, "`_id` is string"),
            (
                doc! { "price": "123456789.5".parse::<Decimal128>().expect("d") },
                "`price` has more digits than the schema's precision 10",
            ),
            (doc! { "tags": ["a", 2] }, "`tags[1]` is int32"),
        ] {
            let mut doc = base.clone();
            doc.extend(edit);
            let err = write_given(&doc).expect_err("does not fit");
            assert!(err.contains(why), "{doc}: {err}");
        }
    }

    #[test]
    fn a_new_field_is_a_new_schema_and_the_same_shape_the_same_one() {
        let one = infer(&doc! { "_id": 1, "a": "x" }, "Document");
        let same = infer(&doc! { "_id": 2, "a": "y" }, "Document");
        let more = infer(&doc! { "_id": 3, "a": "z", "b": true }, "Document");
        assert_eq!(one.schema, same.schema);
        assert_ne!(one.schema, more.schema);
    }
}
