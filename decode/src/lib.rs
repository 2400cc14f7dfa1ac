//! Tributary's record path, from a message's bytes to the Arrow batch that
//! is staged. It reads top to bottom:
//!
//! 1. [`wire`]: the framing a message arrives in (AWS Glue, Confluent, Avro
//!    single-object, plain JSON) and the schema it names;
//! 2. [`decoder`]: the message's data, by its [`Format`]: Avro through the
//!    schema's compiled [`avro::Plan`], Protobuf through the compiled
//!    [`protobuf::Plan`] of its message type, JSON through the [`flatten`]er
//!    (which documents the flattening rules; [`json_schema`] validates JSON
//!    first when asked), all streaming [`Val`]ues without a value tree;
//! 3. [`builder`]: the values go straight into typed Arrow builders, held to
//!    the stream's [`columns::ColumnTypes`]; a bad message or explode-path
//!    element is a [`Rejection`] with its [`Reason`].
//!
//! Schemas are resolved before a batch is decoded (the registry client, in
//! the schema-registry crate, compiles the plans), and the batch is written
//! as a row file by the lake crate. This crate does no I/O, so the fuzz
//! targets build it quickly.
#![deny(missing_docs)]

/// The Avro library whose schemas plans are compiled from.
pub use apache_avro;
/// The Protobuf descriptors Protobuf plans are compiled from.
pub use prost_reflect;

pub mod avro;
pub mod builder;
pub mod columns;
pub mod decoder;
pub mod flatten;
pub mod json_schema;
pub mod protobuf;
mod reason;
mod value;
pub mod wire;

pub use decoder::{Decoder, Format};
pub use reason::{Reason, Rejection};
pub use value::Val;
