//! `tributary ingest`: read messages from a source, decode and flatten them
//! into rows, and stage them as row files on the lake's position chain.
//!
//! * [`run()`](fn@run) is the run loop most users want: give it the `[ingest]`
//!   configuration and a [`Lake`](tributary_lake::Lake).
//! * [`batch`] turns a batch of raw messages into one row file plus dead
//!   letters: plain JSON, or framed Avro/JSON whose schemas [`schemas`]
//!   resolved through the registry beforehand. The path reads top to bottom:
//!   source → decode (framing, the Avro plan or the JSON flattener) →
//!   [`builder`] (Arrow builders, one batch type from the decoder on) →
//!   stage (a row file written by arrow-avro).
//! * [`flatten`] streams nested JSON into the builder (the flattening rules
//!   are documented there).
//! * [`source`] reads partitions: files in a directory, or stdin.
//! * [`dead_letter`] records every message that could not become a row, with
//!   its reason and position.
//! * [`telemetry`] defines every metric ingest exports.
#![deny(missing_docs)]

pub mod batch;
pub mod builder;
pub use tributary_lake::dead_letter;
mod error;
pub mod flatten;
pub mod run;
pub mod schemas;
pub mod source;
pub mod telemetry;

pub use error::{Error, Result};
pub use run::{Mode, run};
pub use telemetry::{IngestSnapshot, IngestTelemetry};
