//! Sources: where messages come from: files and stdin ([`files`]), Kafka
//! (`kafka`, a consumer-group member), Kinesis ([`kinesis`], shard leases).
//! Each source partition yields [`SourceItem`](crate::batch::SourceItem)s in
//! position order.

pub mod files;
pub(crate) mod kafka;
pub mod kinesis;
mod lines;

pub use files::{FilePartition, PartitionRead, ReadLimits, StdinPartition, list_files};
