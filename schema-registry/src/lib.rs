//! Tributary's UUID-keyed schema registry.
//!
//! * [`schema`]: definitions, their normalized form and UUID, compatibility;
//! * [`client`]: what ingest resolves the schemas messages name with (and
//!   where their Avro plans are compiled, by the decode crate);
//! * [`store`]: the registry on an object store, shared by stateless
//!   replicas;
//! * [`server`]: the Confluent-compatible REST API.
//!
//! Message framing and decoding live with ingest, in `tributary_decode`.
//! See DESIGN.md, "Schema registry".
#![deny(missing_docs)]

/// The Avro library schemas are parsed and checked with.
pub use apache_avro;

pub mod client;
mod compat;
mod glue;
mod protobuf;
pub mod schema;
pub mod server;
pub mod store;
