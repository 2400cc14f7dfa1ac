//! Sources: where messages come from (files, stdin, Kinesis). Each source partition yields
//! [`SourceItem`](crate::batch::SourceItem)s in position order.

pub mod files;
pub mod kinesis;
mod lines;

pub use files::{FilePartition, PartitionRead, ReadLimits, StdinPartition, list_files};
