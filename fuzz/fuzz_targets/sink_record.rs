//! Fuzzes a sink's reading of Kafka records: key and value bytes, in every key and value
//! format, through the decoder and the whole conversion (namespace, id strategy,
//! post-processors, write model or CDC replay) of a set of pipeline settings. Nothing may
//! panic, and what decodes must round-trip through the source formats that promise it.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use bson::{Bson, Document};
use libfuzzer_sys::fuzz_target;
use mongo_kafka_bridge::config::{OutputFormat, RecordFormat, SinkConfig};
use mongo_kafka_bridge::sink::convert::{Converter, RawRecord};
use mongo_kafka_bridge::sink::decode::{decode_key, decode_value};
use mongo_kafka_bridge::sink::model::RawWrite;
use mongo_kafka_bridge::source::format;

/// Pipeline settings the records go through (with each key and value format).
const SETTINGS: &[&str] = &[
    "",
    "id_strategy = \"provided_in_key\"",
    "id_strategy = \"provided_in_value\"\nwrite_model = \"update_one_timestamps\"",
    "id_strategy = \"full_key\"\nwrite_model = \"insert_one\"",
    "id_strategy = \"partial_key\"\nid_fields = [\"a\", \"b.c\"]\nwrite_model = \"delete_one\"",
    "id_strategy = \"partial_value\"\nid_fields = [\"a\", \"b.c\"]\nwrite_model = \"replace_business_key\"\nbusiness_key_fields = [\"a\"]",
    "id_strategy = \"kafka_meta\"\nkafka_metadata_field = \"m.k\"\nvalue_block_fields = [\"b.c\"]\nfield_renames = { \"a\" = \"z\" }\nfield_rename_regex = [{ pattern = \"^(.*)x$\", replace = \"${1}y\" }]",
    "id_strategy = \"uuid\"\nvalue_allow_fields = [\"a\", \"b.c\"]\nkey_block_fields = [\"_id\"]\ndelete_on_null_values = true",
    "namespace_from = \"value\"\ncollection_field = \"ns.coll\"\ndatabase_field = \"ns.db\"",
    "namespace_from = \"key\"\ncollection_field = \"c\"",
    "cdc_handler = \"mongodb\"",
    "cdc_handler = \"debezium_mongodb\"",
    "cdc_handler = \"debezium_rdbms\"",
];

const KEY_FORMATS: [&str; 3] = ["json", "bson", "string"];
const VALUE_FORMATS: [&str; 2] = ["json", "bson"];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    settings: u8,
    key_format: u8,
    value_format: u8,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

/// One converter per settings × key format × value format, built once.
fn converters() -> &'static Vec<Converter> {
    static CONVERTERS: OnceLock<Vec<Converter>> = OnceLock::new();
    CONVERTERS.get_or_init(|| {
        let mut out = Vec::new();
        for settings in SETTINGS {
            for key_format in KEY_FORMATS {
                for value_format in VALUE_FORMATS {
                    let text = format!(
                        "name = \"f\"\ntopics = [\"t\"]\ndatabase = \"db\"\nkey_format = \"{key_format}\"\nvalue_format = \"{value_format}\"\n{settings}"
                    );
                    let config: SinkConfig =
                        toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
                    out.push(Converter::new(config).unwrap_or_else(|e| panic!("{text}: {e}")));
                }
            }
        }
        out
    })
}

fn record_format(name: &str) -> RecordFormat {
    match name {
        "bson" => RecordFormat::Bson,
        "string" => RecordFormat::String,
        _ => RecordFormat::Json,
    }
}

fn canonical(doc: &Document) -> String {
    Bson::Document(doc.clone())
        .into_canonical_extjson()
        .to_string()
}

/// Whether a field name anywhere starts with `$`: extended JSON may read such a document as
/// a value (`{"$oid": ...}`), the one thing the JSON formats do not carry (see `docs/configuration.md`).
fn has_dollar_names(doc: &Document) -> bool {
    fn value(v: &Bson) -> bool {
        match v {
            Bson::Document(d) => has_dollar_names(d),
            Bson::Array(items) => items.iter().any(value),
            Bson::JavaScriptCodeWithScope(c) => has_dollar_names(&c.scope),
            _ => false,
        }
    }
    doc.iter().any(|(k, v)| k.starts_with('$') || value(v))
}

/// A decoded document goes through the source's exact formats and back unchanged.
fn round_trips(doc: &Document) {
    let mut exact = vec![(OutputFormat::Bson, RecordFormat::Bson)];
    if !has_dollar_names(doc) {
        exact.push((OutputFormat::CanonicalJson, RecordFormat::Json));
    }
    for (out, read) in exact {
        let bytes = format::encode(doc.clone(), out)
            .unwrap_or_else(|e| panic!("{out:?} of a decoded document: {e}"));
        match decode_value(Some(&bytes), read) {
            Ok(Some(back)) => assert_eq!(canonical(&back), canonical(doc), "{out:?}"),
            other => panic!("{out:?} of a decoded document does not decode: {other:?}"),
        }
    }
    let _ = format::encode(doc.clone(), OutputFormat::RelaxedJson);
    let _ = format::encode(doc.clone(), OutputFormat::SimplifiedJson);
}

/// The documents of a write, read back as the server would read them: they must be valid
/// BSON however the record was written.
fn check_op(op: &RawWrite) {
    let docs: Vec<&bson::RawDocument> = match op {
        RawWrite::Insert(doc) => vec![doc],
        RawWrite::Replace {
            filter,
            replacement,
            ..
        } => vec![filter, replacement],
        RawWrite::Update { filter, .. } => vec![filter],
        RawWrite::Delete { filter } => vec![filter],
    };
    for doc in docs {
        if let Err(e) = Document::try_from(doc) {
            panic!("a write holds invalid BSON: {e}");
        }
    }
}

fuzz_target!(|input: Input<'_>| {
    let key_format = KEY_FORMATS[usize::from(input.key_format) % KEY_FORMATS.len()];
    let value_format = VALUE_FORMATS[usize::from(input.value_format) % VALUE_FORMATS.len()];
    let _ = decode_key(input.key, record_format(key_format));
    if let Ok(Some(doc)) = decode_value(input.value, record_format(value_format)) {
        round_trips(&doc);
    }
    let index =
        (usize::from(input.settings) % SETTINGS.len()) * KEY_FORMATS.len() * VALUE_FORMATS.len()
            + (usize::from(input.key_format) % KEY_FORMATS.len()) * VALUE_FORMATS.len()
            + usize::from(input.value_format) % VALUE_FORMATS.len();
    let converter = &converters()[index];
    let converted = converter.convert(RawRecord {
        topic: "t",
        partition: input.partition,
        offset: input.offset,
        timestamp: input.timestamp,
        key: input.key,
        value: input.value,
    });
    if let Ok(Some(converted)) = converted {
        check_op(&converted.op);
    }
});
