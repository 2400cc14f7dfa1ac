//! What Tributary's fuzz targets check, shared with the seed generator
//! (`examples/seed_corpus.rs`) so that both agree on the input layout.
//!
//! * [`frame`]: a message's framing ([`wire::parse`] and friends), any bytes;
//! * [`avro`]: Avro records decoded by compiled plans, bare or inside a frame;
//! * [`json`]: a batch of JSON lines flattened into one Arrow batch;
//! * [`protobuf`]: Protobuf messages decoded by compiled plans, checked
//!   against prost-reflect's `DynamicMessage`.
//!
//! Each target panics, and so reports a crash, when a property fails: the
//! library must return an error value for bad input, never panic, hang or
//! allocate without bound.
//!
//! [`wire::parse`]: tributary_decode::wire::parse

pub mod avro;
mod decoded;
pub mod frame;
pub mod json;
pub mod protobuf;

// The quickstart's sample generator (the binary crate has no library target),
// included rather than copied, as ingest's decode benchmark does.
#[path = "../../tributary/src/sample.rs"]
#[allow(dead_code, missing_docs)]
mod sample;
