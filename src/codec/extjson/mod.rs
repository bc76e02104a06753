//! Extended JSON in both directions, without a `Document` or JSON tree in between:
//! [`write`] writes raw BSON as relaxed or canonical extended JSON (the source's records),
//! [`read`] reads extended JSON text into raw BSON (the sink's records).

pub mod read;
pub mod write;
