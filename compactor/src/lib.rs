//! `tributary compact`: merge staged row files into a partitioned Delta Lake
//! table of Parquet files, exactly once.
//!
//! [`run()`](fn@run) is the long-running compactor, serving every table of
//! the configuration ([`tables`]: one, or several with routing);
//! [`compact_until_empty`] is what `tributary compact --once` runs for each
//! table;
//! [`compact_round`] is one bounded round (one Delta commit). The round's
//! steps and crash behaviour are drawn in the [`compact`] module; how
//! several compactors divide the work, in [`share`].
//!
//! Every operation (the round, [`optimize`](mod@optimize) and vacuum, [`rewrite`]s,
//! [`forget`], [`retention`]) builds on the [`table`] kernel (fixed columns, creating and
//! evolving the table, the commit) and the [`partition`]ing, writes files
//! through [`files`], and returns a `Serialize` report; none calls
//! another's internals.
//! Every commit is announced to downstream pipelines by [`events`].
//! [`telemetry`] defines every metric the compactor exports.
#![deny(missing_docs)]

pub mod compact;
pub mod dead_letters;
mod error;
pub mod events;
pub mod files;
pub mod forget;
pub mod leases;
pub mod optimize;
pub mod partition;
pub mod progress;
pub mod retention;
pub mod rewrite;
pub mod row_files;
pub mod run;
pub mod share;
pub mod table;
pub mod tables;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod text_index;
mod upsert;

pub use compact::{CompactionMetrics, compact_round, compact_until_empty};
pub use error::{Error, Result};
pub use optimize::{OptimizeReport, VacuumReport, optimize, vacuum};
pub use run::run;
pub use table::PARTITION_COLUMN;
pub use tables::{ServedTable, Tables};
pub use telemetry::CompactorTelemetry;
pub use upsert::ORDER_PROPERTY as UPSERT_ORDER_PROPERTY;
