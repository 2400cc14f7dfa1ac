//! Where Tributary's objects live under a table, and how positions are named.
//!
//! ```text
//! <table>/_delta_log/…                                          Delta commits
//! <table>/date=YYYY-MM-DD/part-….parquet                        compacted rows
//! <table>/_tributary/staging/<stream>/<partition>/<first>.avro      row files
//! <table>/_tributary/dead-letter/<stream>/<partition>/<first>.avro  rejected messages
//!        (`<first>-<last>.avro` another extent's, `<first>.compactor.avro` the compactor's,
//!        `<name>.r<n>.avro` what a dead-letter replay of `<name>` left)
//! <table>/_tributary/leases/<name>/<epoch>.json                    leases (see [`crate::lease`])
//! <table>/_tributary/compacted/<stream>/<partition>/<last>.json     source positions of compacted batches
//! ```
//!
//! `<first>` is the batch's first source position as 20 zero-padded decimal
//! digits, so that lexical order (the order object stores list in) is
//! position order.

use std::fmt;

use object_store::path::Path;
use tributary_config::{is_safe_name, safe_name};

/// Folder of all of Tributary's own objects under the table. Delta readers and
/// vacuum ignore `_`-prefixed folders, so it never looks like table data.
pub const TRIBUTARY_DIR: &str = "_tributary";

/// A source partition: a file, a Kafka partition, a Kinesis shard — the unit
/// that has one ordered sequence of positions.
///
/// Both parts are restricted to `[A-Za-z0-9._-]`, so they are safe as object
/// path segments and as Delta `txn` application ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    stream: String,
    partition: String,
}

impl PartitionId {
    /// A partition of `stream` named `name` by its source. Characters outside
    /// `[A-Za-z0-9._-]` are replaced by `_`; when that happens a hash of the
    /// original name is appended so that two names never map to one id.
    pub fn new(stream: &str, name: &str) -> Self {
        Self {
            stream: safe_name(stream),
            partition: safe_name(name),
        }
    }

    /// Parses ids already in the safe form, as found in object paths; `None`
    /// if either part is not.
    pub fn from_safe_parts(stream: &str, partition: &str) -> Option<Self> {
        (is_safe_name(stream) && is_safe_name(partition)).then(|| Self {
            stream: stream.to_string(),
            partition: partition.to_string(),
        })
    }

    /// The stream name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The partition name within the stream.
    pub fn partition(&self) -> &str {
        &self.partition
    }

    /// The Delta `txn` application id holding this partition's watermark.
    pub fn app_id(&self) -> String {
        format!("tributary/{}/{}", self.stream, self.partition)
    }

    /// Folder of this partition's staged row files.
    pub fn staging_dir(&self) -> Path {
        Path::from(format!(
            "{TRIBUTARY_DIR}/staging/{}/{}",
            self.stream, self.partition
        ))
    }

    /// Object of the row file whose first position is `first`.
    pub fn staged_file(&self, first: u64) -> Path {
        Path::from(format!(
            "{TRIBUTARY_DIR}/staging/{}/{}/{}.avro",
            self.stream,
            self.partition,
            position_name(first)
        ))
    }

    /// Object of the dead-letter file of the batch whose first position is `first`.
    pub fn dead_letter_file(&self, first: u64) -> Path {
        Path::from(format!(
            "{TRIBUTARY_DIR}/dead-letter/{}/{}/{}.avro",
            self.stream,
            self.partition,
            position_name(first)
        ))
    }

    /// Object of the dead-letter file of a batch `[first, last]` whose
    /// [`dead_letter_file`](Self::dead_letter_file) name another writer took
    /// with another extent (see [`crate::chain::stage_dead_letters`]).
    pub fn dead_letter_file_of_extent(&self, first: u64, last: u64) -> Path {
        Path::from(format!(
            "{TRIBUTARY_DIR}/dead-letter/{}/{}/{}-{}.avro",
            self.stream,
            self.partition,
            position_name(first),
            position_name(last)
        ))
    }
}

impl PartitionId {
    /// Folder of this partition's compacted markers (see
    /// [`crate::chain::write_compacted_marker`]).
    pub fn compacted_dir(&self) -> Path {
        Path::from(format!(
            "{TRIBUTARY_DIR}/compacted/{}/{}",
            self.stream, self.partition
        ))
    }

    /// Object of the compacted marker of the batch whose last position is `last`.
    pub fn compacted_marker(&self, last: u64) -> Path {
        Path::from(format!(
            "{TRIBUTARY_DIR}/compacted/{}/{}/{}.json",
            self.stream,
            self.partition,
            position_name(last)
        ))
    }

    /// Object of the dead letters the compactor wrote for the row file at `first`.
    pub fn compactor_dead_letter_file(&self, first: u64) -> Path {
        Path::from(format!(
            "{TRIBUTARY_DIR}/dead-letter/{}/{}/{}.compactor.avro",
            self.stream,
            self.partition,
            position_name(first)
        ))
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stream, self.partition)
    }
}

/// Folder of every stream's staged row files.
pub fn staging_root() -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/staging"))
}

/// A position as an object name: 20 zero-padded decimal digits.
pub fn position_name(position: u64) -> String {
    format!("{position:020}")
}

/// The first position of a staged or dead-letter file from its object name,
/// `None` for names Tributary does not write.
pub fn parse_position_name(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_suffix(".avro")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_names_sort_numerically() {
        let mut names: Vec<String> = [10_u64, 9, 100, 0, u64::MAX]
            .iter()
            .map(|p| position_name(*p))
            .collect();
        names.sort();
        let parsed: Vec<u64> = names
            .iter()
            .map(|n| parse_position_name(&format!("{n}.avro")).unwrap())
            .collect();
        assert_eq!(parsed, vec![0, 9, 10, 100, u64::MAX]);
        assert_eq!(parse_position_name("12.avro"), None);
        assert_eq!(parse_position_name("0000000000000000001x.avro"), None);
    }

    #[test]
    fn unsafe_partition_names_stay_distinct_and_safe() {
        let a = PartitionId::new("s", "app log.json");
        let b = PartitionId::new("s", "app_log.json");
        let c = PartitionId::new("s", "app/log.json");
        assert_eq!(b.partition(), "app_log.json");
        assert!(a.partition().starts_with("app_log.json-"));
        assert_ne!(a, c);
        assert!(PartitionId::from_safe_parts(a.stream(), a.partition()).is_some());
        assert_eq!(
            a.staged_file(7).as_ref(),
            format!(
                "_tributary/staging/s/{}/00000000000000000007.avro",
                a.partition()
            )
        );
    }
}
