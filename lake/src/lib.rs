//! Tributary's lake: what ingest and the compactor both speak.
//!
//! * [`Lake`] opens the object store under a table root and the Delta table.
//! * [`layout`] names every object Tributary writes beside the table.
//! * [`rowfile`] reads and writes row files, the Avro micro-batches that
//!   ingest stages and the compactor merges.
//! * [`chain`] is the exactly-once position chain that connects them.
//! * [`dead_letter`] records what could not become a row, with its reason.
//! * [`lease`] lets one process at a time rewrite a table partition.
#![deny(missing_docs)]

pub mod chain;
pub mod columns;
pub mod dead_letter;
mod error;
pub mod layout;
pub mod lease;
mod local;
pub mod rowfile;
mod store;

pub use error::{Error, Result};
pub use layout::PartitionId;
pub use store::{Lake, read_object};
