//! Sources: where messages come from. Each source partition yields
//! [`SourceItem`](crate::batch::SourceItem)s in position order.

pub mod files;
mod lines;

pub use files::{FilePartition, PartitionRead, ReadLimits, StdinPartition, list_files};
