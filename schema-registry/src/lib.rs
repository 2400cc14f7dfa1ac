//! Tributary's UUID-keyed schema registry.
//!
//! Empty until the schema-registry issue is built: ingest decodes plain JSON
//! only, and `tributary registry serve` does not exist yet. See DESIGN.md,
//! "Schema registry", for the plan.
#![deny(missing_docs)]
