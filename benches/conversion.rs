//! The conversion paths, per core, for ~1 KB documents (`benches/common`):
//! - `source_format/<format>`: a change event → the key and value of a Kafka record, in each
//!   output format (`src/source/format.rs`);
//! - `sink_convert/<id_strategy>`: a Kafka record (relaxed JSON key and value) → a write
//!   ready for the bulk command (raw BSON), through decoding, the id strategy,
//!   post-processing and the default write model (`src/sink/convert.rs`), for each id
//!   strategy (`partial_value_block` with a block list, which reads the value as a
//!   `Document`); `update_one_timestamps` the same with that write model;
//!   `sink_convert/cdc_mongodb` replays the source's own change events instead (a
//!   `Document` path). The sink's target (issue 13) is ≥ 300,000 records/s per core.
//!
//! `source_format/avro` and `source_format/json_schema` need the schema registry of
//! `test-services/services.sh up` (or one at `SCHEMA_REGISTRY_URL`), asked once to register
//! the schemas; without one they are left out, saying so. Their figure is the steady state:
//! the schema and the registry's id from the caches. `source_format/avro_infer_each` is the
//! Avro path as it was before schemas were cached by document shape (a schema inferred,
//! serialized and looked up by its text for every key and value), rebuilt here from the
//! crate's public parts, so the two are compared in one run.
//!
//! - `source_raw/<path>/<format>`: what the reader does with each event the driver returns
//!   as raw BSON: `old` decodes it into a `Document` and converts that (the path before issue
//!   12), `raw` writes relaxed or canonical extended JSON straight from the bytes
//!   (`src/source/extjson.rs`). Both in one run, so their ratio is what changed.
//!
//! Criterion runs on one thread, so its `elem/s` is events per second per core; the target of
//! issue 7 is ≥ 200,000, of issue 12 ≥ 300,000 for `source_raw/raw/*`. Run:
//! `cargo bench --bench conversion`.

mod common;

use std::hint::black_box;
use std::sync::Arc;

use bson::{Bson, Document};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mongo_kafka_bridge::config::{KeyMode, OutputFormat, SinkConfig, SourceConfig};
use mongo_kafka_bridge::sink::convert::{Converter, RawRecord};
use mongo_kafka_bridge::source::format::{encode, Conversion, Converted};

/// Events per measured batch: enough that the per-batch overhead of `iter_batched` vanishes.
const BATCH: usize = 64;

fn source_format(c: &mut Criterion) {
    let events: Vec<Document> = (0..BATCH as i64).map(common::insert_event).collect();
    let mut group = c.benchmark_group("source_format");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, format) in [
        ("relaxed_json", OutputFormat::RelaxedJson),
        ("canonical_json", OutputFormat::CanonicalJson),
        ("simplified_json", OutputFormat::SimplifiedJson),
        ("bson", OutputFormat::Bson),
    ] {
        let conversion = Conversion {
            key: KeyMode::DocumentKey,
            format,
            key_format: format,
            full_document_only: false,
            tombstone_on_delete: false,
            registered: None,
        };
        // The reader hands the event over by value: the clone is set-up, not measured.
        group.bench_function(name, |b| {
            b.iter_batched(
                || events.clone(),
                |events| {
                    for event in events {
                        let _ = black_box(conversion.convert(event));
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    for format in ["avro", "json_schema"] {
        let Some(conversion) = registry_conversion(&events, format) else {
            continue;
        };
        group.bench_function(format, |b| {
            b.iter_batched(
                || events.clone(),
                |events| {
                    for event in events {
                        let _ = black_box(conversion.convert(event));
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    let before = InferEach::default();
    group.bench_function("avro_infer_each", |b| {
        b.iter_batched(
            || events.clone(),
            |events| {
                for event in events {
                    let _ = black_box(before.convert(event));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The reader's conversion of raw change events, before and after issue 12, side by side.
fn source_raw(c: &mut Criterion) {
    let events: Vec<bson::RawDocumentBuf> = (0..BATCH as i64)
        .map(|i| {
            bson::RawDocumentBuf::from_document(&common::insert_event(i))
                .unwrap_or_else(|e| panic!("bench event: {e}"))
        })
        .collect();
    let mut group = c.benchmark_group("source_raw");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, format) in [
        ("relaxed_json", OutputFormat::RelaxedJson),
        ("canonical_json", OutputFormat::CanonicalJson),
    ] {
        let conversion = Conversion {
            key: KeyMode::DocumentKey,
            format,
            key_format: format,
            full_document_only: false,
            tombstone_on_delete: false,
            registered: None,
        };
        let old = |raw: &bson::RawDocumentBuf| {
            Document::try_from(raw.as_ref())
                .map_err(|e| e.to_string())
                .and_then(|event| conversion.convert(event).map_err(|e| e.to_string()))
        };
        // Both paths must give the same record, or the comparison would be meaningless.
        for (i, raw) in events.iter().enumerate() {
            let new = conversion.convert_raw(raw).map_err(|e| e.to_string());
            match (old(raw), new) {
                (Ok(a @ Converted::Record { .. }), Ok(b)) if a == b => {}
                other => panic!("{name}: event {i} converts differently: {other:?}"),
            }
        }
        group.bench_function(format!("old/{name}"), |b| {
            b.iter(|| {
                for raw in &events {
                    let _ = black_box(old(raw));
                }
            })
        });
        group.bench_function(format!("raw/{name}"), |b| {
            b.iter(|| {
                for raw in &events {
                    let _ = black_box(conversion.convert_raw(raw));
                }
            })
        });
    }
    group.finish();
}

/// The `format` (`avro`, `json_schema`) conversion, its schemas registered by converting
/// `events[0]` once; `None`, said on stderr, when no registry answers.
fn registry_conversion(events: &[Document], format: &str) -> Option<Conversion> {
    let url = std::env::var("SCHEMA_REGISTRY_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8081/apis/ccompat/v7".to_owned());
    let text = format!(
        "name = \"bench\"\ndatabase = \"shop\"\ncollection = \"orders\"\nformat = \"{format}\"\n\
         schema_registry = {{ url = \"{url}\" }}\n"
    );
    let config: SourceConfig =
        toml::from_str(&text).unwrap_or_else(|e| panic!("bench source config: {e}"));
    let conversion = Conversion::for_source(&config, None);
    match conversion.convert(events.first()?.clone()) {
        Ok(_) => Some(conversion),
        Err(e) => {
            eprintln!("SKIPPED source_format/{format}: no schema registry at {url} ({e}); start one with test-services/services.sh up");
            None
        }
    }
}

/// The Avro path before the shape cache: per key and value, the schema inferred and written
/// out as text, parsed schemas looked up by that text, registry ids by subject and text (the
/// registry itself is not asked: ids are made up, as the cache would have them).
#[derive(Default)]
struct InferEach {
    schemas: std::sync::Mutex<std::collections::HashMap<String, Arc<apache_avro::Schema>>>,
    ids: std::sync::Mutex<std::collections::HashMap<(String, String), u32>>,
}

impl InferEach {
    fn convert(&self, event: Document) -> Option<(Vec<u8>, Vec<u8>)> {
        // The old conversion cloned the whole event to name the subjects.
        let whole = event.clone();
        let ns = whole.get_document("ns").ok()?;
        let topic = format!("{}.{}", ns.get_str("db").ok()?, ns.get_str("coll").ok()?);
        let key = match event.get("documentKey") {
            Some(Bson::Document(key)) => key.clone(),
            _ => return None,
        };
        let key = self.write(&key, "Key", &format!("{topic}-key"))?;
        let value = self.write(&event, "ChangeEvent", &format!("{topic}-value"))?;
        Some((key, value))
    }

    fn write(&self, doc: &Document, name: &str, subject: &str) -> Option<Vec<u8>> {
        let inferred = mongo_kafka_bridge::codec::avro::infer(doc, name);
        let schema = {
            let mut schemas = self.schemas.lock().ok()?;
            match schemas.get(&inferred.schema) {
                Some(schema) => schema.clone(),
                None => {
                    let schema = Arc::new(apache_avro::Schema::parse_str(&inferred.schema).ok()?);
                    schemas.insert(inferred.schema.clone(), schema.clone());
                    schema
                }
            }
        };
        let id = {
            let mut ids = self.ids.lock().ok()?;
            let next = u32::try_from(ids.len()).ok()? + 1;
            *ids.entry((subject.to_owned(), inferred.schema.clone()))
                .or_insert(next)
        };
        let datum = apache_avro::to_avro_datum(&schema, inferred.value).ok()?;
        Some(mongo_kafka_bridge::codec::schema_registry::wire_format(
            id, &datum,
        ))
    }
}

/// The sink's configuration for `extra` (TOML keys of `[[sink]]`).
fn converter(extra: &str) -> Converter {
    let text = format!("name = \"bench\"\ntopics = [\"orders\"]\ndatabase = \"shop\"\n{extra}");
    let config: SinkConfig =
        toml::from_str(&text).unwrap_or_else(|e| panic!("bench sink config: {e}"));
    Converter::new(config).unwrap_or_else(|e| panic!("bench converter: {e}"))
}

/// What the bench records are.
#[derive(Clone, Copy, PartialEq)]
enum Records {
    /// Documents as the source publishes them with `publish_full_document_only` (key: the
    /// document key).
    Documents,
    /// The same with a UUID (as text) for `_id`, in the key and in the value.
    UuidDocuments,
    /// Whole change events.
    Events,
}

/// A Kafka record as the source publishes it, as relaxed JSON.
fn records(kind: Records) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..BATCH as i64)
        .map(|i| {
            let uuid = format!("00112233-4455-6677-8899-{i:012x}");
            let id = match kind {
                Records::UuidDocuments => Bson::String(uuid),
                _ => Bson::Int64(i),
            };
            let key = encode(bson::doc! {"_id": id.clone()}, OutputFormat::RelaxedJson);
            let value = match kind {
                Records::Events => common::insert_event(i),
                Records::Documents => common::document(i, 1_700_000_000_000),
                Records::UuidDocuments => {
                    let mut doc = common::document(i, 1_700_000_000_000);
                    doc.insert("_id", id);
                    doc
                }
            };
            let value = encode(value, OutputFormat::RelaxedJson);
            match (key, value) {
                (Ok(k), Ok(v)) => (k, v),
                _ => panic!("encoding the bench records"),
            }
        })
        .collect()
}

fn sink_convert(c: &mut Criterion) {
    let documents = records(Records::Documents);
    let uuids = records(Records::UuidDocuments);
    let events = records(Records::Events);
    let mut group = c.benchmark_group("sink_convert");
    group.throughput(Throughput::Elements(BATCH as u64));
    let cases = [
        ("object_id", "id_strategy = \"object_id\"", &documents),
        ("kafka_meta", "id_strategy = \"kafka_meta\"", &documents),
        ("full_key", "id_strategy = \"full_key\"", &documents),
        (
            "partial_key",
            "id_strategy = \"partial_key\"\nid_fields = [\"_id\"]",
            &documents,
        ),
        (
            "partial_value",
            "id_strategy = \"partial_value\"\nid_fields = [\"customer.name\", \"customer.tier\"]\nid_overwrite_existing = true",
            &documents,
        ),
        ("provided_in_key", "id_strategy = \"provided_in_key\"", &documents),
        ("provided_in_value", "id_strategy = \"provided_in_value\"", &documents),
        (
            "partial_value_block",
            "id_strategy = \"partial_value\"\nid_fields = [\"note\", \"lines\"]\nid_fields_projection = \"block\"\nid_overwrite_existing = true",
            &documents,
        ),
        ("uuid", "id_strategy = \"uuid\"\nid_overwrite_existing = true", &documents),
        ("uuid_provided_in_key", "id_strategy = \"uuid_provided_in_key\"", &uuids),
        ("uuid_provided_in_value", "id_strategy = \"uuid_provided_in_value\"", &uuids),
        (
            "update_one_timestamps",
            "id_strategy = \"provided_in_value\"\nwrite_model = \"update_one_timestamps\"",
            &documents,
        ),
        ("cdc_mongodb", "cdc_handler = \"mongodb\"", &events),
    ];
    for (name, extra, input) in cases {
        let converter = converter(extra);
        // Every record must become a write, or the figure would measure an error path.
        for (i, (key, value)) in input.iter().enumerate() {
            match converter.convert(raw(i, key, value)) {
                Ok(Some(_)) => {}
                other => panic!("{name}: record {i} did not convert to a write: {other:?}"),
            }
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                for (i, (key, value)) in input.iter().enumerate() {
                    let _ = black_box(converter.convert(raw(i, key, value)));
                }
            })
        });
    }
    group.finish();
}

fn raw<'a>(i: usize, key: &'a [u8], value: &'a [u8]) -> RawRecord<'a> {
    RawRecord {
        topic: "orders",
        partition: 0,
        offset: i as i64,
        timestamp: Some(1_700_000_000_000),
        key: Some(key),
        value: Some(value),
    }
}

/// Prints the sizes the figures are for, once.
fn sizes(_: &mut Criterion) {
    let event = common::insert_event(1);
    let document = match event.get("fullDocument") {
        Some(Bson::Document(d)) => common::bson_size(d),
        _ => 0,
    };
    let json = encode(event.clone(), OutputFormat::RelaxedJson).map_or(0, |v| v.len());
    println!(
        "document: {document} bytes of BSON; change event: {} bytes of BSON, {json} of relaxed JSON",
        common::bson_size(&event)
    );
}

criterion_group!(benches, sizes, source_format, source_raw, sink_convert);
criterion_main!(benches);
