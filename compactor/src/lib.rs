//! `tributary compact`: merge staged row files into a partitioned Delta Lake
//! table of Parquet files, exactly once.
//!
//! [`compact_until_empty`] is what `tributary compact --once` runs;
//! [`compact_round`] is one bounded round (one Delta commit). The round's
//! steps and crash behaviour are drawn in the [`compact`] module.
#![deny(missing_docs)]

mod arrow_rows;
pub mod compact;
mod error;

pub use compact::{CompactionMetrics, PARTITION_COLUMN, compact_round, compact_until_empty};
pub use error::{Error, Result};
