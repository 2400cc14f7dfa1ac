//! `tributary ingest`: read messages from a source, decode and flatten them
//! into rows, and stage them as row files on the lake's position chain.
//!
//! * [`run()`](fn@run) is the run loop most users want: give it the `[ingest]`
//!   configuration and a [`Lake`](tributary_lake::Lake).
//!   [`run_tables`] runs it into the [`Tables`] of a configuration, which
//!   with `[ingest.routing]` are a table per Kafka topic ([`route`]), or
//!   for a field-routed topic the tables its rows' values pick, each batch
//!   fanned out to all of them on its own position chain (`fanout`).
//! * [`batch`] turns a batch of raw messages into one row file plus dead
//!   letters: plain JSON, or framed Avro/JSON whose schemas [`schemas`]
//!   resolved through the registry beforehand. The path reads top to bottom:
//!   source → decode (framing, then the Avro plan or the JSON flattener, in
//!   the `tributary_decode` crate, which also documents the flattening
//!   rules) → its Arrow batch builder → stage (a row file written by
//!   arrow-avro).
//! * [`source`] reads partitions: files in a directory, or stdin.
//! * [`replay`] decodes stored dead letters again, for `tributary
//!   dead-letters replay`.
//! * [`dead_letter`] records every message that could not become a row, with
//!   its reason and position.
//! * [`telemetry`] defines every metric ingest exports.
#![deny(missing_docs)]

pub mod batch;
pub use tributary_lake::dead_letter;
mod error;
mod fanout;
pub mod replay;
pub mod route;
pub mod run;
pub mod schemas;
pub mod source;
mod tables;
pub mod telemetry;

pub use error::{Error, Result};
pub use run::{Mode, run, run_tables};
pub use tables::Tables;
pub use telemetry::{IngestSnapshot, IngestTelemetry};
