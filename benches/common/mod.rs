//! The fixed document shape of every benchmark (criterion benches and `examples/bench_e2e.rs`,
//! which includes this file): about 1 KB of BSON with nested fields, arrays, ObjectIds and
//! dates.
#![allow(dead_code)]

use bson::{doc, oid::ObjectId, Bson, DateTime, Document, Timestamp};

/// Document number `i`; `sent_ms` (milliseconds since the epoch) is when it was written,
/// for latency measurements.
pub fn document(i: i64, sent_ms: i64) -> Document {
    doc! {
        "_id": i,
        "sent_ms": sent_ms,
        "oid": ObjectId::new(),
        "at": DateTime::now(),
        "customer": {"name": format!("customer {i}"), "tier": i % 5, "tags": ["a", "b", "c"]},
        "lines": (0..5).map(|l| doc! {"sku": format!("SKU-{l}-{i}"), "qty": l, "price": 9.99}).collect::<Vec<_>>(),
        "note": "x".repeat(600),
    }
}

/// The change event MongoDB emits for inserting `document(i, ..)` into `shop.orders`.
pub fn insert_event(i: i64) -> Document {
    doc! {
        "_id": {"_data": format!("8264B7F0C2{i:016X}2B022C0100296E5A1004")},
        "operationType": "insert",
        "clusterTime": Bson::Timestamp(Timestamp { time: 1_700_000_000, increment: 1 }),
        "wallTime": DateTime::now(),
        "fullDocument": document(i, 1_700_000_000_000),
        "ns": {"db": "shop", "coll": "orders"},
        "documentKey": {"_id": i},
    }
}

/// The size of `doc` as BSON, in bytes.
pub fn bson_size(doc: &Document) -> usize {
    bson::to_vec(doc).map(|v| v.len()).unwrap_or(0)
}
