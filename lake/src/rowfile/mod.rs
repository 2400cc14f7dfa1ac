//! Row files: the micro-batches ingest stages and the compactor merges.
//!
//! A row file is an Avro object container file (readable by any Avro
//! library) whose record has one field per column. Tributary writes only
//! records of nullable scalars and lists of nullable scalars, which lets it
//! encode and decode them directly ([`RowFileWriter`], [`RowFile`]) instead of
//! through a generic Avro value tree.

mod container;
mod encoding;
mod schema;

pub use container::{Codec, RowFile, RowFileWriter};
pub use schema::{Column, ColumnType, RowSchema, Value, ValueRef};
