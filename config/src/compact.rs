use serde::Deserialize;

use crate::error::{Result, invalid};

/// `[compact]`: how `tributary compact` merges row files into the table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactConfig {
    /// How long the long-running compactor waits between rounds when there is
    /// nothing to do, in milliseconds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Most staged row files merged into one Delta commit. Bounds the memory of
    /// one round together with `max_bytes_per_commit`.
    #[serde(default = "default_max_files_per_commit")]
    pub max_files_per_commit: usize,
    /// Most bytes of staged row files (compressed, as stored) merged into one
    /// Delta commit. At least one file is always taken, whatever its size.
    #[serde(default = "default_max_bytes_per_commit")]
    pub max_bytes_per_commit: u64,
    /// Parquet files roll over to a new file once they reach this size.
    #[serde(default = "default_target_file_bytes")]
    pub target_file_bytes: u64,
}

fn default_interval_ms() -> u64 {
    5_000
}
fn default_max_files_per_commit() -> usize {
    1_000
}
fn default_max_bytes_per_commit() -> u64 {
    512 * 1024 * 1024
}
fn default_target_file_bytes() -> u64 {
    256 * 1024 * 1024
}

impl Default for CompactConfig {
    fn default() -> Self {
        Self {
            interval_ms: default_interval_ms(),
            max_files_per_commit: default_max_files_per_commit(),
            max_bytes_per_commit: default_max_bytes_per_commit(),
            target_file_bytes: default_target_file_bytes(),
        }
    }
}

impl CompactConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_files_per_commit == 0 {
            return Err(invalid(
                "compact.max_files_per_commit",
                0,
                "must be at least 1",
            ));
        }
        if self.max_bytes_per_commit == 0 {
            return Err(invalid(
                "compact.max_bytes_per_commit",
                0,
                "must be at least 1",
            ));
        }
        if self.target_file_bytes < 1024 * 1024 {
            return Err(invalid(
                "compact.target_file_bytes",
                self.target_file_bytes,
                "must be at least 1048576 (1 MiB)",
            ));
        }
        Ok(())
    }
}
