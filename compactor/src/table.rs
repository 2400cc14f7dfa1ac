//! The table kernel every operation shares: its fixed columns, creating it
//! and adding columns, and the commit (leases renewed first; checkpoints and
//! log cleanup after). The operations themselves (the compaction round,
//! optimize and vacuum, rewrites, forget) each live in their own module and
//! call these, never each other's internals.

use std::collections::HashSet;

use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, StructField, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::state::DeltaTableState;
use object_store::path::Path;
use tributary_config::{CompactConfig, HOUR_COLUMN};
use tributary_lake::Lake;
use tributary_lake::columns::{arrow_type, table_columns};
use tributary_lake::rowfile::ColumnType;

use crate::error::{Error, Result};
use crate::events::{self, Operation};
use crate::files::{added_paths, discard_unreferenced};
use crate::leases::PartitionLeases;

/// The first partition column of every Tributary table (see
/// [`crate::partition`] for the others).
pub const PARTITION_COLUMN: &str = "date";

/// The record-key column of every Tributary table.
pub const KEY_COLUMN: &str = "_key";

/// Columns every table starts with, in order (with `_hour` when it is
/// partitioned by hour).
pub(crate) fn system_columns(partition_columns: &[String]) -> Vec<(String, ColumnType)> {
    let mut columns = vec![
        (KEY_COLUMN.into(), ColumnType::String),
        ("_partition".into(), ColumnType::String),
        ("_position".into(), ColumnType::Long),
        (PARTITION_COLUMN.into(), ColumnType::Date),
    ];
    if partition_columns.iter().any(|c| c == HOUR_COLUMN) {
        columns.push((HOUR_COLUMN.into(), ColumnType::Long));
    }
    columns
}

/// What a commit did.
pub(crate) struct Committed {
    pub version: u64,
    pub retries: u64,
    pub duration_ms: u64,
    pub table_files: u64,
    pub table_bytes: u64,
}

/// What one commit writes.
pub(crate) struct Change {
    /// Files added and removed.
    pub actions: Vec<Action>,
    /// Watermarks set.
    pub transactions: Vec<Transaction>,
    /// The Delta operation `commitInfo` records.
    pub operation: DeltaOperation,
    /// What the commit's data availability event reports (see
    /// [`crate::events`]).
    pub event: Operation,
    /// Commit right after the snapshot read or fail, never after a commit
    /// made meanwhile (delta-rs otherwise commits on top of commits that do
    /// not conflict).
    pub exclusive: bool,
}

/// Commits `change` on the snapshot `table` holds, with its event's summary
/// in `commitInfo`, if every lease in `leases` can be renewed; then
/// writes a checkpoint every `checkpoint_interval` versions and removes
/// expired log entries. When the commit fails, the files its `add` actions
/// name are deleted unless the table references them.
pub(crate) async fn commit(
    config: &CompactConfig,
    lake: &Lake,
    table: &DeltaTable,
    leases: &mut PartitionLeases,
    change: Change,
) -> Result<Committed> {
    let Change {
        actions,
        transactions,
        operation,
        event,
        exclusive,
    } = change;
    let added = added_paths(&actions);
    let started = std::time::Instant::now();
    let finalized = async {
        // Renewing proves no one else took a lease since it was acquired
        // (even one that ran out meanwhile), and leaves the full duration to
        // commit in.
        leases.renew(lake).await?;
        leases.ensure_valid(config)?;
        let snapshot = table
            .snapshot()
            .map_err(|e| delta_error(lake, "commit", e))?;
        let summary = events::summarize(&event, &actions, snapshot);
        let mut properties = CommitProperties::default();
        if exclusive {
            properties = properties.with_max_retries(0);
        }
        CommitBuilder::from(
            properties
                .with_metadata([(events::SUMMARY_KEY.to_string(), summary)])
                .with_application_transactions(transactions)
                .with_create_checkpoint(false)
                .with_cleanup_expired_logs(Some(false)),
        )
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await
        .map_err(|e| delta_error(lake, "commit", e))
    }
    .await;
    let finalized = match finalized {
        Ok(finalized) => finalized,
        Err(error) => {
            discard_unreferenced(lake, &added).await;
            return Err(error);
        }
    };
    let (table_files, table_bytes) = table_size(&finalized.snapshot);
    let committed = Committed {
        version: finalized.version(),
        retries: finalized.metrics.num_retries,
        duration_ms: started.elapsed().as_millis() as u64,
        table_files,
        table_bytes,
    };
    if committed.version > 0 && committed.version.is_multiple_of(config.checkpoint_interval) {
        maintain_log(
            config,
            lake,
            table.log_store().as_ref(),
            committed.version,
            false,
        )
        .await?;
    }
    Ok(committed)
}

/// Writes a checkpoint at `version` and removes log entries older than
/// `log_retention_ms` that the checkpoint makes unnecessary, after spooling
/// the events of those an event sink has not passed (for an `erasure`, the
/// entries go even when that fails). Returns how many it removed.
pub async fn maintain_log(
    config: &CompactConfig,
    lake: &Lake,
    log_store: &dyn deltalake::logstore::LogStore,
    version: u64,
    erasure: bool,
) -> Result<u64> {
    let table = lake
        .table_builder()?
        .with_version(version)
        .load()
        .await
        .map_err(|e| delta_error(lake, "checkpoint", e))?;
    deltalake::checkpoints::create_checkpoint(&table, None)
        .await
        .map_err(|e| delta_error(lake, "checkpoint", e))?;
    let cutoff = chrono::Utc::now().timestamp_millis() - config.log_retention_ms as i64;
    // What an event sink has yet to be told of outlives its log entries.
    // When that cannot be made sure of, log cleanup waits for the next
    // checkpoint, unless every entry must go now (erasure): then the sinks
    // behind lose those events (counted in `…_events_lost_total`).
    if let Err(error) = events::spool_before(lake, version).await {
        if !erasure {
            tracing::warn!(%error, "cannot spool undelivered events; log cleanup waits");
            return Ok(0);
        }
        tracing::error!(%error, "cannot spool undelivered events; the erasure removes the log entries anyway");
    }
    let removed =
        deltalake::checkpoints::cleanup_expired_logs_for(version, log_store, cutoff, None)
            .await
            .map_err(|e| delta_error(lake, "log cleanup", e))?;
    Ok(removed as u64)
}

/// Data files in the table, and their bytes.
pub(crate) fn table_size(state: &DeltaTableState) -> (u64, u64) {
    state.log_data().iter().fold((0, 0), |(files, bytes), f| {
        (files + 1, bytes + f.size().max(0) as u64)
    })
}

/// `table` with the columns of `target` it lacks added.
pub(crate) async fn add_new_columns(
    lake: &Lake,
    table: DeltaTable,
    target: &[(String, ColumnType)],
) -> Result<DeltaTable> {
    let existing: Vec<String> = table_columns(&table)?.into_iter().map(|(n, _)| n).collect();
    let new_fields = target
        .iter()
        .filter(|(n, _)| !existing.contains(n))
        .map(|(n, t)| struct_field(n, t))
        .collect::<Result<Vec<_>>>()?;
    if new_fields.is_empty() {
        return Ok(table);
    }
    table
        .add_columns()
        .with_fields(new_fields)
        .await
        .map_err(|e| delta_error(lake, "add columns", e))
}

fn struct_field(name: &str, ty: &ColumnType) -> Result<StructField> {
    let data_type: deltalake::kernel::DataType =
        (&arrow_type(ty))
            .try_into_kernel()
            .map_err(|e| Error::Delta {
                operation: "schema conversion",
                url: name.to_string(),
                source: Box::new(e.into()),
            })?;
    Ok(StructField::new(name, data_type, true))
}

pub(crate) async fn create_table(
    lake: &Lake,
    columns: &[(String, ColumnType)],
    partition_columns: &[String],
    upsert: Option<&tributary_config::UpsertConfig>,
) -> Result<DeltaTable> {
    let fields = columns
        .iter()
        .map(|(n, t)| struct_field(n, t))
        .collect::<Result<Vec<_>>>()?;
    let table = lake
        .table_builder()?
        .build()
        .map_err(|e| delta_error(lake, "open", e))?;
    table
        .create()
        .with_columns(fields)
        .with_partition_columns(partition_columns.iter().cloned())
        .with_configuration(crate::upsert::table_properties(upsert))
        .with_raise_if_key_not_exists(false)
        .with_save_mode(SaveMode::Ignore)
        .await
        .map_err(|e| delta_error(lake, "create table", e))
}

/// Writes a checkpoint at the latest version and deletes every log entry and
/// checkpoint before it: their `add` statistics may hold values an erasure
/// or an expiry removed. Time travel to versions before it ends here, as
/// erasure requires.
pub(crate) async fn expire_log(config: &CompactConfig, lake: &Lake) -> Result<u64> {
    let Some(table) = lake.load_table().await? else {
        return Ok(0);
    };
    let Some(version) = table.version() else {
        return Ok(0);
    };
    let expire_all = CompactConfig {
        log_retention_ms: 0,
        ..config.clone()
    };
    maintain_log(&expire_all, lake, table.log_store().as_ref(), version, true).await
}

/// The data files the table references now (none without a table).
pub(crate) async fn referenced_files(lake: &Lake) -> Result<HashSet<Path>> {
    let Some(table) = lake.load_table().await? else {
        return Ok(HashSet::new());
    };
    let state = table.snapshot().map_err(|e| delta_error(lake, "read", e))?;
    Ok(state
        .log_data()
        .iter()
        .map(|f| f.object_store_path())
        .collect())
}

pub(crate) fn delta_error(
    lake: &Lake,
    operation: &'static str,
    source: deltalake::DeltaTableError,
) -> Error {
    Error::Delta {
        operation,
        url: lake.table_url().to_string(),
        source: Box::new(source),
    }
}
