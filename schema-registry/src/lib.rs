//! Tributary's UUID-keyed schema registry.
//!
//! * [`schema`]: definitions, their normalized form and UUID, compatibility;
//! * [`wire`]: the framings a message arrives in (AWS Glue, Confluent, Avro
//!   single-object, plain JSON);
//! * [`avro`]: Avro records decoded straight into flat rows by a compiled plan;
//! * `client` (feature `service`): what ingest resolves references with;
//! * `store` (feature `service`): the registry on an object store, shared by
//!   stateless replicas;
//! * `server` (feature `service`): the Confluent-compatible REST API.
//!
//! See DESIGN.md, "Schema registry".
#![deny(missing_docs)]

/// The Avro library whose schemas plans are compiled from.
pub use apache_avro;

pub mod avro;
#[cfg(feature = "service")]
pub mod client;
#[cfg(feature = "service")]
mod glue;
pub mod schema;
#[cfg(feature = "service")]
pub mod server;
#[cfg(feature = "service")]
pub mod store;
pub mod wire;
