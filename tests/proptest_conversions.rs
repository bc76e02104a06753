//! Properties of the conversions between BSON and Kafka records, over arbitrary documents
//! (every BSON type, nested): what a source pipeline writes in `canonical_json` or `bson`,
//! a sink pipeline reads back exactly; `relaxed_json` keeps every value but not the integer
//! width; and the sink's id strategies are deterministic where they promise to be and never
//! panic. No services needed.

use bson::spec::BinarySubtype;
use bson::{
    oid::ObjectId, Binary, Bson, DateTime, Decimal128, Document, JavaScriptCodeWithScope, Regex,
    Timestamp,
};
use mongo_kafka_bridge::codec::extjson::read::document as read_json;
use mongo_kafka_bridge::codec::extjson::write::{self as extjson, Mode};
use mongo_kafka_bridge::config::{KeyMode, OutputFormat, RecordFormat, SinkConfig};
use mongo_kafka_bridge::sink::convert::{Converter, RawRecord};
use mongo_kafka_bridge::sink::decode::{decode_key, decode_value};
use mongo_kafka_bridge::sink::id::IdAssigner;
use mongo_kafka_bridge::sink::model::SinkRecord;
use mongo_kafka_bridge::source::format::{self, Conversion};
use proptest::prelude::*;

/// Field names: any text without NUL (BSON names are C strings) that does not start with
/// `$`, since extended JSON reads `{"$oid": ...}`-like documents as values. Such names are
/// the one thing the JSON formats cannot carry (see the output formats in `docs/configuration.md`).
fn field_name() -> impl Strategy<Value = String> {
    "[^\u{0}$][^\u{0}]{0,6}"
}

fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn binary_subtype() -> impl Strategy<Value = BinarySubtype> {
    prop_oneof![
        Just(BinarySubtype::Generic),
        Just(BinarySubtype::Function),
        Just(BinarySubtype::BinaryOld),
        Just(BinarySubtype::UuidOld),
        Just(BinarySubtype::Uuid),
        Just(BinarySubtype::Md5),
        Just(BinarySubtype::Encrypted),
        Just(BinarySubtype::Column),
        Just(BinarySubtype::Sensitive),
        (0x80u8..=0xff).prop_map(BinarySubtype::UserDefined),
    ]
}

/// Decimal128 values from their text: up to 34 digits and any exponent the type holds, plus
/// the special values.
fn decimal() -> impl Strategy<Value = Decimal128> {
    prop_oneof![
        ("-?", "[0-9]{1,34}", -6176i32..=6111).prop_filter_map(
            "out of Decimal128's range",
            |(sign, digits, exp)| format!("{sign}{digits}E{exp}").parse::<Decimal128>().ok()
        ),
        prop::sample::select(vec![
            "NaN",
            "Infinity",
            "-Infinity",
            "-0",
            "0E-6176",
            "9.999999999999999999999999999999999E+6144",
            "-9.999999999999999999999999999999999E+6144",
            "1E-6176",
        ])
        .prop_filter_map("not a Decimal128", |s| s.parse::<Decimal128>().ok()),
    ]
}

fn regex() -> impl Strategy<Value = Bson> {
    // Options are kept sorted and unique, as MongoDB and extended JSON spell them.
    (
        text(),
        prop::sample::subsequence(vec!['i', 'l', 'm', 's', 'u', 'x'], 0..=6),
    )
        .prop_map(|(pattern, options)| {
            Bson::RegularExpression(Regex {
                pattern,
                options: options.into_iter().collect(),
            })
        })
}

fn db_pointer() -> impl Strategy<Value = Bson> {
    ("[a-z][a-z.]{0,10}", any::<[u8; 12]>()).prop_filter_map(
        "not a DBPointer",
        |(namespace, oid)| {
            Bson::try_from(serde_json::json!({"$dbPointer": {
                "$ref": namespace,
                "$id": {"$oid": ObjectId::from_bytes(oid).to_hex()}
            }}))
            .ok()
        },
    )
}

/// Every BSON type that holds no other value.
fn leaf() -> impl Strategy<Value = Bson> {
    prop_oneof![
        any::<f64>().prop_map(Bson::Double),
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            f64::MIN_POSITIVE,
            f64::MAX
        ])
        .prop_map(Bson::Double),
        text().prop_map(Bson::String),
        (binary_subtype(), prop::collection::vec(any::<u8>(), 0..24))
            .prop_map(|(subtype, bytes)| Bson::Binary(Binary { subtype, bytes })),
        Just(Bson::Undefined),
        any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b))),
        any::<bool>().prop_map(Bson::Boolean),
        any::<i64>().prop_map(|ms| Bson::DateTime(DateTime::from_millis(ms))),
        Just(Bson::Null),
        regex(),
        db_pointer(),
        text().prop_map(Bson::JavaScriptCode),
        text().prop_map(Bson::Symbol),
        any::<i32>().prop_map(Bson::Int32),
        (any::<u32>(), any::<u32>())
            .prop_map(|(time, increment)| Bson::Timestamp(Timestamp { time, increment })),
        any::<i64>().prop_map(Bson::Int64),
        decimal().prop_map(Bson::Decimal128),
        Just(Bson::MaxKey),
        Just(Bson::MinKey),
    ]
}

fn document_of(value: impl Strategy<Value = Bson>) -> impl Strategy<Value = Document> {
    prop::collection::btree_map(field_name(), value, 0..6)
        .prop_map(|fields| fields.into_iter().collect())
}

/// Any BSON value, documents and arrays nested a few levels.
fn value() -> impl Strategy<Value = Bson> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Bson::Array),
            document_of(inner.clone()).prop_map(Bson::Document),
            (text(), document_of(inner)).prop_map(|(code, scope)| {
                Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope { code, scope })
            }),
        ]
    })
}

fn document() -> impl Strategy<Value = Document> {
    document_of(value())
}

/// Whether `value` holds a JavaScript code with scope, which the one-pass reader leaves to
/// the tree reader.
fn has_scope(value: &Bson) -> bool {
    match value {
        Bson::JavaScriptCodeWithScope(_) => true,
        Bson::Document(doc) => doc.values().any(has_scope),
        Bson::Array(items) => items.iter().any(has_scope),
        _ => false,
    }
}

/// The canonical extended JSON text: exact (NaN compares equal to itself, -0 differs from 0).
fn canonical(doc: &Document) -> String {
    Bson::Document(doc.clone())
        .into_canonical_extjson()
        .to_string()
}

/// What relaxed extended JSON keeps: every value, but an Int64 that fits 32 bits reads back
/// as Int32.
fn relaxed_shape(value: Bson) -> Bson {
    match value {
        Bson::Int64(i) => i32::try_from(i).map_or(Bson::Int64(i), Bson::Int32),
        Bson::Array(items) => Bson::Array(items.into_iter().map(relaxed_shape).collect()),
        Bson::Document(doc) => Bson::Document(
            doc.into_iter()
                .map(|(k, v)| (k, relaxed_shape(v)))
                .collect(),
        ),
        Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope { code, scope }) => {
            Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                code,
                scope: scope
                    .into_iter()
                    .map(|(k, v)| (k, relaxed_shape(v)))
                    .collect(),
            })
        }
        other => other,
    }
}

/// A sink record with `key` (`None`: no key) at `topic`/`partition`@`offset`.
fn record(key: Option<Bson>, partition: i32, offset: i64) -> SinkRecord {
    SinkRecord {
        topic: "t".into(),
        partition,
        offset,
        timestamp: None,
        key,
        value: None,
    }
}

fn sink_config(extra: &str) -> SinkConfig {
    let text = format!("name = \"s\"\ntopics = [\"t\"]\ndatabase = \"db\"\n{extra}");
    toml::from_str(&text).unwrap_or_else(|e| panic!("{extra}: {e}"))
}

/// Strategies whose `_id` depends only on the record, with the settings they need.
const DETERMINISTIC: &[&str] = &[
    "id_strategy = \"kafka_meta\"",
    "id_strategy = \"full_key\"",
    "id_strategy = \"partial_key\"\nid_fields = [\"a\", \"b.c\"]",
    "id_strategy = \"partial_value\"\nid_fields = [\"a\", \"b.c\"]",
    "id_strategy = \"provided_in_key\"",
    "id_strategy = \"provided_in_value\"",
];

/// Every strategy, and settings that change how they behave.
const ALL_STRATEGIES: &[&str] = &[
    "id_strategy = \"object_id\"",
    "id_strategy = \"uuid\"",
    "id_strategy = \"uuid\"\nuuid_representation = \"binary\"",
    "id_strategy = \"kafka_meta\"\nid_overwrite_existing = true",
    "id_strategy = \"kafka_meta\"",
    "id_strategy = \"full_key\"",
    "id_strategy = \"partial_key\"\nid_fields = [\"a\", \"b.c\"]",
    "id_strategy = \"partial_value\"\nid_fields = [\"a\", \"b.c\"]",
    "id_strategy = \"provided_in_key\"",
    "id_strategy = \"provided_in_value\"",
];

/// Keys and values that sometimes hold the fields the strategies look for.
fn keyish() -> impl Strategy<Value = Option<Bson>> {
    prop_oneof![
        Just(None),
        value().prop_map(Some),
        (value(), value(), document()).prop_map(|(a, c, mut doc)| {
            doc.insert("_id", a.clone());
            doc.insert("a", a);
            doc.insert("b", bson::doc! { "c": c });
            Some(Bson::Document(doc))
        }),
    ]
}

/// Whether `back` is what the Protobuf mapping (`docs/configuration.md`, "Protobuf") reads
/// back for `orig`.
fn protobuf_read_back(orig: &Bson, back: &Bson) -> bool {
    match (orig, back) {
        (Bson::Double(a), Bson::Double(b)) => a.to_bits() == b.to_bits(),
        (Bson::String(a) | Bson::Symbol(a), Bson::String(b)) => a == b,
        (Bson::Int32(a), Bson::Int32(b)) => a == b,
        (Bson::Int64(a), Bson::Int64(b)) => a == b,
        (Bson::Boolean(a), Bson::Boolean(b)) => a == b,
        (Bson::DateTime(a), Bson::DateTime(b)) => a == b,
        // Finite decimals keep value and scale (the sign of a zero aside); the others are text.
        (Bson::Decimal128(a), Bson::Decimal128(b)) => {
            let (a, b) = (a.to_string(), b.to_string());
            a == b || (a.trim_start_matches('-') == b && a.trim_start_matches('-').starts_with("0"))
        }
        (Bson::Decimal128(a), Bson::String(b)) => a.to_string() == *b && b.contains(['N', 'I']),
        (Bson::ObjectId(a), Bson::String(b)) => a.to_hex() == *b,
        (Bson::Binary(a), Bson::Binary(b)) => {
            a.bytes == b.bytes && b.subtype == BinarySubtype::Generic
        }
        (Bson::Null | Bson::Undefined, Bson::Null) => true,
        (Bson::Document(a), Bson::Document(b)) => {
            a.keys().eq(b.keys())
                && a.iter()
                    .zip(b.values())
                    .all(|((_, x), y)| protobuf_read_back(x, y))
        }
        (Bson::Array(a), Bson::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| protobuf_read_back(x, y))
        }
        (Bson::Array(_), Bson::String(b)) => {
            let text = orig.clone().into_relaxed_extjson().to_string();
            text == *b
        }
        (
            Bson::RegularExpression(_)
            | Bson::JavaScriptCode(_)
            | Bson::JavaScriptCodeWithScope(_)
            | Bson::Timestamp(_)
            | Bson::MinKey
            | Bson::MaxKey
            | Bson::DbPointer(_),
            Bson::String(b),
        ) => {
            let text = orig.clone().into_canonical_extjson().to_string();
            text == *b
        }
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn protobuf_infers_a_valid_schema_for_every_document_and_reads_it_back_as_documented(
        doc in document()
    ) {
        use mongo_kafka_bridge::codec::protobuf::{given_message, infer, to_document, to_message};
        use prost::Message;
        let text = infer(&doc, "Document");
        let message = given_message(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let value = to_message(&doc, &message, "").unwrap_or_else(|e| panic!("{text}: {e}"));
        let read = prost_reflect::DynamicMessage::decode(message, value.encode_to_vec().as_slice())
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        let back = Bson::Document(to_document(&read));
        prop_assert!(
            protobuf_read_back(&Bson::Document(doc.clone()), &back),
            "{}\n{:?}\n read back as\n{:?}", text, doc, back
        );
    }

    #[test]
    fn canonical_json_and_bson_round_trip_exactly_through_the_sink_decoder(doc in document()) {
        for (out, read) in [
            (OutputFormat::CanonicalJson, RecordFormat::Json),
            (OutputFormat::Bson, RecordFormat::Bson),
        ] {
            let bytes = format::encode(doc.clone(), out).expect("encodes");
            let back = decode_value(Some(&bytes), read)
                .unwrap_or_else(|e| panic!("{out:?}: {e}"))
                .expect("a value");
            prop_assert_eq!(canonical(&back), canonical(&doc), "{:?}", out);
            // Keys go the same way.
            let key = decode_key(Some(&bytes), read).expect("key decodes");
            prop_assert_eq!(key.map(|k| k.into_canonical_extjson().to_string()), Some(canonical(&doc)));
        }
    }

    #[test]
    fn relaxed_json_round_trips_every_value_modulo_the_integer_width(doc in document()) {
        let bytes = format::encode(doc.clone(), OutputFormat::RelaxedJson).expect("encodes");
        let back = decode_value(Some(&bytes), RecordFormat::Json)
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("a value");
        let expected = relaxed_shape(Bson::Document(doc)).into_canonical_extjson();
        prop_assert_eq!(Bson::Document(back).into_canonical_extjson(), expected);
    }

    /// The sink's one-pass JSON reader (values, and keys that are objects) writes the raw
    /// BSON the tree reader (`serde_json::Value`, then `Bson`) gives, byte for byte, or
    /// leaves the text to it; it leaves alone only what nests a scope.
    #[test]
    fn the_one_pass_json_reader_writes_what_the_tree_reader_gives(doc in document()) {
        for out in [OutputFormat::CanonicalJson, OutputFormat::RelaxedJson] {
            let bytes = format::encode(doc.clone(), out).expect("encodes");
            let tree: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
            let tree = match Bson::try_from(tree) {
                Ok(Bson::Document(d)) => bson::RawDocumentBuf::from_document(&d).expect("encodes"),
                other => panic!("{out:?}: {other:?}"),
            };
            match read_json(&bytes) {
                Some(fast) => prop_assert_eq!(fast, tree, "{:?}", out),
                None => prop_assert!(has_scope(&Bson::Document(doc.clone())), "{:?}: gave up on {}", out, String::from_utf8_lossy(&bytes)),
            }
        }
    }

    /// The source writes relaxed and canonical JSON straight from the raw BSON the driver
    /// returns: byte for byte what the `bson` crate writes through a `Document`.
    #[test]
    fn json_written_from_raw_bson_is_the_bson_crates_byte_for_byte(doc in document()) {
        let raw = bson::RawDocumentBuf::from_document(&doc).expect("encodes");
        let relaxed = serde_json::to_vec(&format::relaxed(Bson::Document(doc.clone()))).expect("JSON");
        let canonical = serde_json::to_vec(&Bson::Document(doc.clone()).into_canonical_extjson()).expect("JSON");
        let from_raw = |mode| {
            let bytes = extjson::to_vec(&raw, mode).unwrap_or_else(|e| panic!("{e}"));
            String::from_utf8(bytes).unwrap_or_else(|e| panic!("{e}"))
        };
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(from_raw(Mode::Relaxed), text(relaxed));
        prop_assert_eq!(from_raw(Mode::Canonical), text(canonical));
    }

    /// A change event converted from raw BSON gives the record the `Document` path gives.
    #[test]
    fn change_events_convert_from_raw_bson_as_from_documents(
        full in document(),
        key in value(),
        operation in prop::sample::select(vec!["insert", "update", "delete"]),
        format in prop::sample::select(vec![OutputFormat::RelaxedJson, OutputFormat::CanonicalJson]),
        key_mode in prop::sample::select(vec![KeyMode::DocumentKey, KeyMode::EventId]),
        only in any::<bool>(),
        tombstone in any::<bool>(),
    ) {
        let mut event = bson::doc! {
            "_id": { "_data": "826E8E8A2C000000012B" },
            "operationType": operation,
            "ns": { "db": "shop", "coll": "orders" },
            "documentKey": key,
        };
        if operation != "delete" {
            event.insert("fullDocument", full);
        }
        let conversion = Conversion {
            key: key_mode,
            format,
            key_format: format,
            full_document_only: only,
            tombstone_on_delete: only && tombstone,
            registered: None,
        };
        let raw = bson::RawDocumentBuf::from_document(&event).expect("encodes");
        let from_raw = conversion.convert_raw(&raw).map_err(|e| e.to_string());
        let from_document = conversion.convert(event).map_err(|e| e.to_string());
        prop_assert_eq!(from_raw, from_document);
    }

    #[test]
    fn simplified_json_is_json_with_the_same_fields(doc in document()) {
        let bytes = format::encode(doc.clone(), OutputFormat::SimplifiedJson).expect("encodes");
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        let keys: Vec<&String> = json.as_object().expect("an object").keys().collect();
        let mut expected: Vec<&String> = doc.keys().collect();
        expected.sort();
        let mut keys = keys;
        keys.sort();
        prop_assert_eq!(keys, expected);
    }

    #[test]
    fn deterministic_id_strategies_give_the_same_id_for_the_same_record(
        key in keyish(),
        mut value in document(),
        id in value(),
        with_id in any::<bool>(),
        partition in 0i32..8,
        offset in 0i64..1_000_000,
    ) {
        if with_id {
            value.insert("_id", id);
        }
        for extra in DETERMINISTIC {
            let ids = IdAssigner::new(&sink_config(extra));
            let r = record(key.clone(), partition, offset);
            let (mut first, mut second) = (value.clone(), value.clone());
            let a = ids.assign(&r, &mut first);
            let b = ids.assign(&r, &mut second);
            prop_assert_eq!(&a, &b, "{}", extra);
            if a.is_ok() {
                prop_assert_eq!(canonical(&first), canonical(&second), "{}", extra);
                prop_assert!(first.contains_key("_id"), "{}: {}", extra, first);
            } else {
                // A refused record is left as it was.
                prop_assert_eq!(canonical(&first), canonical(&value), "{}", extra);
            }
        }
    }

    #[test]
    fn no_id_strategy_panics_and_a_converter_never_panics(
        key in keyish(),
        value in document(),
        partition in any::<i32>(),
        offset in any::<i64>(),
        write_model in prop::sample::select(vec![
            "replace_one", "update_one_timestamps", "insert_one", "delete_one",
        ]),
    ) {
        for extra in ALL_STRATEGIES {
            let config = sink_config(&format!("{extra}\nwrite_model = \"{write_model}\"\nkafka_metadata_field = \"m.k\"\nvalue_block_fields = [\"b.c\"]"));
            let mut assigned = value.clone();
            let _ = IdAssigner::new(&config).assign(&record(key.clone(), partition, offset), &mut assigned);
            let converter = Converter::new(config).expect("a converter");
            let key_bytes = key.clone().map(|k| k.into_relaxed_extjson().to_string().into_bytes());
            let value_bytes = format::encode(value.clone(), OutputFormat::CanonicalJson).expect("encodes");
            let _ = converter.convert(RawRecord {
                topic: "t",
                partition,
                offset,
                timestamp: Some(offset),
                key: key_bytes.as_deref(),
                value: Some(&value_bytes),
            });
        }
    }
}
