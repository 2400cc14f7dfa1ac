//! Row files: the micro-batches ingest stages and the compactor merges.
//!
//! A row file is an Avro object container file (readable by any Avro
//! library) holding one Arrow record batch, one Avro field per column, with
//! logical types kept ([`write`](fn@write), [`RowFile::read`]). The rows are encoded
//! from and decoded into Arrow arrays by `arrow-avro`, never one value at a
//! time by Tributary.

mod container;

pub use container::{Codec, RowFile, write};
pub use tributary_decode::columns::ColumnType;
