//! `tributary optimize`: bin-packs a partition's small Parquet files into
//! large sorted ones, and `tributary vacuum`: deletes files the table no
//! longer references.
//!
//! ```text
//! per partition with enough small files (under 3/4 of the target size;
//! two for the command, `optimize_min_files` for the compactor's upkeep):
//!   take the partition's lease ─► plan bins on the table as it is now
//!   ─► per bin: read, sort, write ─► renew the lease, commit remove
//!      (dataChange=false) + add ─► next bin ─► release the lease
//! ```
//!
//! Optimize rewrites existing files, so it holds the partition's lease (see
//! [`crate::rewrite`]); compaction appends need none and go on meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use deltalake::DeltaTable;
use deltalake::arrow::array::{ArrayRef, new_null_array};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::Action;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::DeltaOperation;
use deltalake::table::state::DeltaTableState;
use object_store::path::Path;
use serde::Serialize;
use tributary_config::CompactConfig;
use tributary_lake::Lake;

use crate::error::{Error, Result};
use crate::events::Operation;
use crate::files::{TableFile, TableWriter};
use crate::leases::PartitionLeases;
use crate::partition::{TablePartition, table_partition_columns};
use crate::table::{Change, commit, delta_error};

/// What optimize did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OptimizeReport {
    /// Partitions that had small files to merge.
    pub partitions: u64,
    /// Commits made (one per bin).
    pub commits: u64,
    /// Small files merged and removed from the table.
    pub files_removed: u64,
    /// Their bytes.
    pub bytes_removed: u64,
    /// Files written in their place.
    pub files_added: u64,
    /// Their bytes.
    pub bytes_added: u64,
    /// Rows rewritten.
    pub rows: u64,
}

/// A small file of a partition.
struct Small {
    path: Path,
    size: u64,
    remove: deltalake::kernel::Remove,
}

/// Merges the small files of every partition that has at least `min_files`
/// of them (at least 2), or only of `only`: a date such as `2026-11-22`
/// (every partition of that day), or a partition's path such as
/// `date=2026-11-22/_hour=7`.
pub async fn optimize(
    config: &CompactConfig,
    lake: &Lake,
    only: Option<&str>,
    min_files: usize,
) -> Result<OptimizeReport> {
    let mut report = OptimizeReport::default();
    let Some(mut table) = lake.load_table().await? else {
        return Ok(report);
    };
    let min_files = min_files.max(2);
    let state = table.snapshot().map_err(|e| delta_error(lake, "read", e))?;
    let planned = small_files(config, state, min_files);
    for partition in planned.keys() {
        if only.is_some_and(|p| !partition.matches(p)) {
            continue;
        }
        let mut leases = PartitionLeases::default();
        let merged = optimize_partition(
            config,
            lake,
            &mut table,
            (partition, min_files),
            &mut leases,
            &mut report,
        )
        .await;
        leases.release(lake).await;
        merged?;
    }
    Ok(report)
}

/// Small files per partition, for partitions with at least `min_files`.
fn small_files(
    config: &CompactConfig,
    state: &DeltaTableState,
    min_files: usize,
) -> BTreeMap<TablePartition, Vec<Small>> {
    let mut by_partition: BTreeMap<TablePartition, Vec<Small>> = BTreeMap::new();
    let columns = table_partition_columns(state);
    for file in state.log_data().iter() {
        let size = file.size().max(0) as u64;
        if size >= config.target_file_bytes / 4 * 3 {
            continue;
        }
        let partition = TablePartition::of(&file, &columns);
        by_partition.entry(partition).or_default().push(Small {
            path: file.object_store_path(),
            size,
            remove: file.remove_action(false),
        });
    }
    by_partition.retain(|_, files| files.len() >= min_files);
    by_partition
}

/// Times a partition is planned again after a commit lost to another
/// writer's (a compactor adding columns, say).
const ATTEMPTS: u32 = 5;

/// Plans the partition's bins on the table as it is once the lease is held
/// ([`PartitionLeases::plan_holding`]; none when it no longer has
/// `min_files` small files), and commits each; after a commit conflict,
/// plans again.
async fn optimize_partition(
    config: &CompactConfig,
    lake: &Lake,
    table: &mut DeltaTable,
    (partition, min_files): (&TablePartition, usize),
    leases: &mut PartitionLeases,
    report: &mut OptimizeReport,
) -> Result<()> {
    report.partitions += 1;
    let mut attempt = 1;
    loop {
        let files = leases
            .plan_holding(config, lake, table, |state| {
                let files = small_files(config, &state, min_files).remove(partition);
                let needed = files.iter().map(|_| partition.clone()).collect();
                Box::pin(std::future::ready(Ok((files, needed))))
            })
            .await?;
        let Some(files) = files else {
            return Ok(());
        };
        let mut result = Ok(());
        for bin in bins(config, files) {
            result = merge_bin(config, lake, table, partition, bin, leases, report).await;
            if result.is_err() {
                break;
            }
            table
                .update_state()
                .await
                .map_err(|e| delta_error(lake, "read", e))?;
        }
        match result {
            Err(error) if error.is_commit_conflict() && attempt < ATTEMPTS => {
                // The bin's new files are orphans now; vacuum removes them.
                tracing::info!(%error, attempt, "optimize commit conflicted; planning again");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Groups a partition's small files into bins of at most the target size
/// (and an eighth of the memory budget: decoded rows take several times
/// their compressed size, and sorting copies them). Bins of one file are
/// dropped: there is nothing to merge.
fn bins(config: &CompactConfig, mut files: Vec<Small>) -> Vec<Vec<Small>> {
    let limit = config.target_file_bytes.min(config.memory_budget_bytes / 8);
    files.sort_by_key(|f| f.size);
    let mut bins: Vec<Vec<Small>> = Vec::new();
    let mut bin_bytes = 0;
    for file in files {
        match bins.last_mut() {
            Some(bin) if bin_bytes + file.size <= limit => {
                bin_bytes += file.size;
                bin.push(file);
            }
            _ => {
                bin_bytes = file.size;
                bins.push(vec![file]);
            }
        }
    }
    bins.retain(|b| b.len() >= 2);
    bins
}

/// Reads, sorts and rewrites one bin's files as one (or, past the target
/// size, a few) files, and commits the swap.
async fn merge_bin(
    config: &CompactConfig,
    lake: &Lake,
    table: &DeltaTable,
    partition: &TablePartition,
    bin: Vec<Small>,
    leases: &mut PartitionLeases,
    report: &mut OptimizeReport,
) -> Result<()> {
    let state = table.snapshot().map_err(|e| delta_error(lake, "read", e))?;
    let schema = state.snapshot().arrow_schema();
    let mut batches = Vec::new();
    for file in &bin {
        let mut rows = TableFile::open(lake, file.path.clone(), file.size)
            .await?
            .rows(partition.clone())?;
        while let Some(batch) = rows.next().await? {
            batches.push(conform(&batch, &schema).map_err(|source| Error::Arrow {
                path: file.path.to_string(),
                source,
            })?);
        }
    }
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let indices = batches
        .iter()
        .enumerate()
        .flat_map(|(b, batch)| (0..batch.num_rows()).map(move |row| (b, row)))
        .collect();
    let sort_columns = config.sort_columns.clone().unwrap_or_default();
    let mut writer = TableWriter::new(
        lake,
        state,
        schema.clone(),
        &sort_columns,
        config.target_file_bytes,
    );
    writer.write_sorted(batches, indices).await?;
    let adds = writer.finish().await?;
    let merged = OptimizeReport {
        rows: rows as u64,
        files_added: adds.len() as u64,
        bytes_added: adds.iter().map(|a| a.size.max(0) as u64).sum(),
        files_removed: bin.len() as u64,
        bytes_removed: bin.iter().map(|f| f.size).sum(),
        ..Default::default()
    };
    let actions: Vec<Action> = adds
        .into_iter()
        .map(Action::Add)
        .chain(bin.into_iter().map(|f| Action::Remove(f.remove)))
        .collect();
    let operation = DeltaOperation::Optimize {
        predicate: Some(partition.predicate()),
        target_size: config.target_file_bytes as i64,
    };
    let change = Change {
        actions,
        transactions: Vec::new(),
        operation,
        event: Operation::Optimize,
        exclusive: false,
    };
    commit(config, lake, table, leases, change).await?;
    report.commits += 1;
    report.rows += merged.rows;
    report.files_added += merged.files_added;
    report.bytes_added += merged.bytes_added;
    report.files_removed += merged.files_removed;
    report.bytes_removed += merged.bytes_removed;
    Ok(())
}

/// `batch` with the columns of `schema`, in its order: missing columns are
/// null, columns of another type are cast.
fn conform(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(c) if c.data_type() == field.data_type() => Ok(c.clone()),
            Some(c) => cast(c, field.data_type()),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// What vacuum did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VacuumReport {
    /// Files deleted (or, on a dry run, that would be).
    pub files_deleted: Vec<String>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// Files the table stopped referencing this long ago may go; unreferenced
/// files younger than this (a compactor's output not yet committed) never do.
pub const MIN_ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// Deletes data files removed from the table more than `retention` ago, and
/// files never referenced (orphans of failed writes) older than `retention`
/// and [`MIN_ORPHAN_AGE`].
pub async fn vacuum(lake: &Lake, retention: Duration, dry_run: bool) -> Result<VacuumReport> {
    let mut report = VacuumReport {
        dry_run,
        ..Default::default()
    };
    let Some(table) = lake.load_table().await? else {
        return Ok(report);
    };
    let passes = [
        (VacuumMode::Lite, retention),
        (VacuumMode::Full, retention.max(MIN_ORPHAN_AGE)),
    ];
    let mut table = table;
    for (mode, age) in passes {
        let period = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        let (next, metrics) = table
            .vacuum()
            .with_mode(mode)
            .with_retention_period(period)
            .with_enforce_retention_duration(false)
            .with_dry_run(dry_run)
            .await
            .map_err(|e| delta_error(lake, "vacuum", e))?;
        report.files_deleted.extend(metrics.files_deleted);
        table = next;
    }
    report.files_deleted.sort();
    report.files_deleted.dedup();
    Ok(report)
}
