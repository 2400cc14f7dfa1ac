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
    /// The compactor's memory, in bytes: a round stops taking staged files
    /// once its decoded rows take a third of it (at least one file is always
    /// taken); the rest is for sorting and the Parquet writer, which streams
    /// to the store in parts.
    #[serde(default = "default_memory_budget_bytes")]
    pub memory_budget_bytes: u64,
    /// Columns rows are sorted by within each Parquet file, so min/max
    /// statistics prune well. Columns the table does not have are skipped.
    /// Default: `lake.subject_columns`, then `ingest.flatten.event_time_field`.
    pub sort_columns: Option<Vec<String>>,
    /// The column that marks a delete tombstone. A row whose value in it
    /// equals `delete_value` removes its key: from the rows staged before it
    /// and from the table's files. Tombstones themselves are not written.
    #[serde(default = "default_delete_column")]
    pub delete_column: String,
    /// The value of `delete_column` that marks a tombstone.
    #[serde(default = "default_delete_value")]
    pub delete_value: String,
    /// Write a Delta checkpoint every this many commits, then remove log
    /// entries older than `log_retention_ms`.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: u64,
    /// Delta log entries older than this are removed after a checkpoint, in
    /// milliseconds. Default: 7 days.
    #[serde(default = "default_log_retention_ms")]
    pub log_retention_ms: u64,
    /// A table-partition lease (taken to rewrite table files: tombstone
    /// deletes, optimize, forget) expires this long after its last renewal,
    /// in milliseconds.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// The long-running compactor bin-packs a partition's small files (under
    /// 3/4 of `target_file_bytes`) after a round once the partition holds
    /// this many, as `tributary optimize` does. 0 turns it off.
    #[serde(default = "default_optimize_min_files")]
    pub optimize_min_files: usize,
    /// How often the long-running compactor vacuums the table (deletes data
    /// files removed from it more than `vacuum_retention_ms` ago), in
    /// milliseconds. 0 turns it off. Default: 1 hour.
    #[serde(default = "default_vacuum_interval_ms")]
    pub vacuum_interval_ms: u64,
    /// How long a data file removed from the table is kept for readers of
    /// older versions before vacuum deletes it, in milliseconds. Default: 7
    /// days (Delta's `deletedFileRetentionDuration` default).
    #[serde(default = "default_vacuum_retention_ms")]
    pub vacuum_retention_ms: u64,
    /// How long a completed erasure request stays in the ledger, in
    /// milliseconds: until then the compactor drops every staged record of
    /// its subjects and keys whose event time is at or before the request's
    /// time (a replay, a dead-letter replay or a backfill cannot bring them
    /// back). Default: 30 days; keep it at least as long as any source can
    /// replay (Kafka topic retention, Kinesis stream retention, backfill
    /// files).
    #[serde(default = "default_erasure_ledger_keep_ms")]
    pub erasure_ledger_keep_ms: u64,
    /// Not a key: `ingest.flatten.event_time_field`, which
    /// [`Config::complete`](crate::Config::complete) copies here; the `_hour`
    /// partition column is computed from it.
    #[serde(skip)]
    pub event_time_column: Option<String>,
    /// With routing: the tables this compactor serves, `"*"` (default: the
    /// tables the configuration names and every table found under the
    /// `${table}` template's parent) or a list of table names.
    #[serde(default)]
    pub tables: CompactTables,
    /// Not a key: `[lake.upsert]`, which
    /// [`Config::complete`](crate::Config::complete) copies here.
    #[serde(skip)]
    pub upsert: Option<crate::UpsertConfig>,
    /// Not a key: the `[retention]` section, which
    /// [`Config::complete`](crate::Config::complete) copies here for the
    /// long-running compactor's schedule.
    #[serde(skip)]
    pub retention: crate::RetentionConfig,
}

/// `compact.tables`: which tables of a routed configuration a compactor
/// serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CompactTables {
    /// `"*"`: every table, named or discovered.
    #[default]
    All,
    /// These tables only.
    Listed(Vec<String>),
}

impl<'de> Deserialize<'de> for CompactTables {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            All(String),
            Listed(Vec<String>),
        }
        match Written::deserialize(deserializer)? {
            Written::All(star) if star == "*" => Ok(Self::All),
            Written::All(other) => Err(serde::de::Error::custom(format!(
                "compact.tables is \"*\" or a list of table names, not {other:?}"
            ))),
            Written::Listed(tables) => Ok(Self::Listed(tables)),
        }
    }
}

fn default_erasure_ledger_keep_ms() -> u64 {
    30 * 24 * 3_600_000
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
fn default_memory_budget_bytes() -> u64 {
    1024 * 1024 * 1024
}
fn default_delete_column() -> String {
    "_op".into()
}
fn default_delete_value() -> String {
    "delete".into()
}
fn default_checkpoint_interval() -> u64 {
    10
}
fn default_log_retention_ms() -> u64 {
    7 * 24 * 3600 * 1000
}
fn default_lease_ms() -> u64 {
    60_000
}
fn default_optimize_min_files() -> usize {
    4
}
fn default_vacuum_interval_ms() -> u64 {
    3600 * 1000
}
fn default_vacuum_retention_ms() -> u64 {
    7 * 24 * 3600 * 1000
}

impl Default for CompactConfig {
    fn default() -> Self {
        Self {
            interval_ms: default_interval_ms(),
            max_files_per_commit: default_max_files_per_commit(),
            max_bytes_per_commit: default_max_bytes_per_commit(),
            target_file_bytes: default_target_file_bytes(),
            memory_budget_bytes: default_memory_budget_bytes(),
            sort_columns: None,
            delete_column: default_delete_column(),
            delete_value: default_delete_value(),
            checkpoint_interval: default_checkpoint_interval(),
            log_retention_ms: default_log_retention_ms(),
            lease_ms: default_lease_ms(),
            optimize_min_files: default_optimize_min_files(),
            vacuum_interval_ms: default_vacuum_interval_ms(),
            vacuum_retention_ms: default_vacuum_retention_ms(),
            erasure_ledger_keep_ms: default_erasure_ledger_keep_ms(),
            event_time_column: None,
            tables: CompactTables::All,
            upsert: None,
            retention: crate::RetentionConfig::default(),
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
        for (key, value) in [
            ("compact.memory_budget_bytes", self.memory_budget_bytes),
            ("compact.checkpoint_interval", self.checkpoint_interval),
        ] {
            if value == 0 {
                return Err(invalid(key, 0, "must be at least 1"));
            }
        }
        if self.lease_ms < 1_000 {
            return Err(invalid(
                "compact.lease_ms",
                self.lease_ms,
                "must be at least 1000",
            ));
        }
        if self.optimize_min_files == 1 {
            return Err(invalid(
                "compact.optimize_min_files",
                1,
                "must be 0 (off) or at least 2: one file has nothing to merge with",
            ));
        }
        if self.delete_column.trim().is_empty() {
            return Err(invalid(
                "compact.delete_column",
                &self.delete_column,
                "must not be empty",
            ));
        }
        Ok(())
    }
}
