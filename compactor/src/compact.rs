//! One compaction round: staged row files → Parquet files → one Delta commit.
//!
//! ```text
//! list staged partitions ─► take each partition's oldest files (bounded)
//!   ─► read headers, merge schema (table columns fixed, new ones widen)
//!   ─► per file: drop rows at or below the partition's watermark,
//!      dead-letter rows the table's types reject, write the rest as Parquet
//!   ─► [create table] ─► [add new columns] ─► commit adds + txn watermarks
//!   ─► delete the compacted staged files
//! ```
//!
//! A crash before the commit leaves only unreferenced Parquet files (vacuum
//! removes them); a crash after it leaves staged files whose rows are all at or
//! below the new watermark, so the next round drops and deletes them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use deltalake::DeltaTable;
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, StringArray, new_null_array,
};
use deltalake::arrow::compute::{cast, filter_record_batch};
use deltalake::arrow::datatypes::Int64Type;
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::json::LineDelimitedWriter;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, StructField, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::state::DeltaTableState;
use object_store::ObjectStoreExt;
use rustc_hash::FxHashMap;
use serde::Serialize;
use tributary_config::{CompactConfig, HOUR_COLUMN};
use tributary_lake::chain::{self, StagedFile};
use tributary_lake::columns::{arrow_type, column_type, json_text, table_columns};
use tributary_lake::dead_letter::{self, DeadLetter, Reason};
use tributary_lake::rowfile::{Codec, ColumnType, RowFile};
use tributary_lake::{Lake, PartitionId};

use crate::error::{Error, Result};
use crate::files::{TableWriter, added_paths, discard_unreferenced};
use crate::forget::{self, HashedIdentifiers};
use crate::partition::{check_cardinality, hour_column, partition_columns};
use crate::rewrite::{self, Erase, PartitionLeases};
use crate::share::Share;

/// The first partition column of every Tributary table (see
/// [`crate::partition`] for the others).
pub const PARTITION_COLUMN: &str = "date";

/// The record-key column of every Tributary table.
pub const KEY_COLUMN: &str = "_key";

/// Columns every table starts with, in order (with `_hour` when it is
/// partitioned by hour).
fn system_columns(partition_columns: &[String]) -> Vec<(String, ColumnType)> {
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

/// The columns rows are converted to in a round, and how.
struct Target {
    /// The table's columns, then new ones.
    columns: Vec<(String, ColumnType)>,
    /// Them as an Arrow schema.
    schema: SchemaRef,
    /// How many leading columns have a fixed type (they are in the table).
    fixed: usize,
    /// The event-time column `_hour` is computed from.
    event_time: Option<String>,
}

/// What compaction did, for logs and reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompactionMetrics {
    /// Delta commits made (not counting table creation and schema changes).
    pub commits: u64,
    /// Staged row files merged and deleted.
    pub files_compacted: u64,
    /// Bytes of those files.
    pub bytes_compacted: u64,
    /// Rows read from them.
    pub rows_read: u64,
    /// Rows added to the table.
    pub rows_written: u64,
    /// Rows dropped because the table already held their position.
    pub rows_below_watermark: u64,
    /// Rows dead-lettered because a table column's type rejects a value.
    pub rows_dead_lettered: u64,
    /// Rows dropped because a later row or tombstone of the round has the
    /// same key (superseded).
    pub rows_deduplicated: u64,
    /// Delete tombstones among the rows read.
    pub tombstones: u64,
    /// Rows dropped because an unfinished `tributary forget` request names
    /// their key or subject.
    pub rows_forgotten: u64,
    /// Rows removed from existing table files by tombstones.
    pub rows_deleted_from_table: u64,
    /// Table files rewritten to remove those rows.
    pub table_files_rewritten: u64,
    /// Parquet files added.
    pub parquet_files: u64,
    /// Table version after the last commit, if the table exists.
    pub table_version: Option<u64>,
    /// Time the Delta commit took, retries included, in milliseconds.
    pub commit_duration_ms: u64,
    /// Times the commit was retried after another writer committed first.
    pub commit_retries: u64,
    /// Compactors dividing the staged partitions in this round, this one
    /// included.
    pub compactors: u64,
    /// Staged row files left for later rounds (of every compactor's share).
    pub backlog_files: u64,
    /// Bytes of those files.
    pub backlog_bytes: u64,
    /// Age of the oldest of those files, in milliseconds (0 when none are left).
    pub backlog_oldest_age_ms: u64,
    /// Data files in the table after the round.
    pub table_files: u64,
    /// Bytes of those files.
    pub table_bytes: u64,
}

/// Times `compact_until_empty` runs a round again after losing a commit race.
const ROUND_ATTEMPTS: u32 = 10;

/// Runs rounds until nothing is staged in this compactor's share of the
/// source partitions (all of them when no other compactor runs), retrying a
/// round that lost a commit race. Returns what was done.
pub async fn compact_until_empty(config: &CompactConfig, lake: &Lake) -> Result<CompactionMetrics> {
    let mut share = Share::new(config);
    let result = rounds_until_empty(config, lake, &mut share).await;
    share.leave(lake).await;
    result
}

async fn rounds_until_empty(
    config: &CompactConfig,
    lake: &Lake,
    share: &mut Share,
) -> Result<CompactionMetrics> {
    let mut total = CompactionMetrics::default();
    let mut attempt = 1;
    loop {
        let round = match compact_round(config, lake, share).await {
            Ok(round) => round,
            Err(error) if error.is_commit_conflict() && attempt < ROUND_ATTEMPTS => {
                tracing::info!(%error, attempt, "compaction round lost a commit race; running it again");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(
                    100 + u64::from(chrono::Utc::now().timestamp_subsec_millis()) % 400,
                ))
                .await;
                continue;
            }
            Err(error) => return Err(error),
        };
        attempt = 1;
        let done = round.files_compacted == 0;
        total.commits += round.commits;
        total.files_compacted += round.files_compacted;
        total.bytes_compacted += round.bytes_compacted;
        total.rows_read += round.rows_read;
        total.rows_written += round.rows_written;
        total.rows_below_watermark += round.rows_below_watermark;
        total.rows_dead_lettered += round.rows_dead_lettered;
        total.rows_deduplicated += round.rows_deduplicated;
        total.tombstones += round.tombstones;
        total.rows_forgotten += round.rows_forgotten;
        total.rows_deleted_from_table += round.rows_deleted_from_table;
        total.table_files_rewritten += round.table_files_rewritten;
        total.parquet_files += round.parquet_files;
        total.table_version = round.table_version.or(total.table_version);
        total.commit_duration_ms += round.commit_duration_ms;
        total.commit_retries += round.commit_retries;
        total.compactors = round.compactors;
        total.backlog_files = round.backlog_files;
        total.backlog_bytes = round.backlog_bytes;
        total.backlog_oldest_age_ms = round.backlog_oldest_age_ms;
        total.table_files = round.table_files;
        total.table_bytes = round.table_bytes;
        if done {
            return Ok(total);
        }
    }
}

/// A staged file taken into a round, with its bytes.
struct Taken {
    partition: PartitionId,
    file: StagedFile,
    bytes: Bytes,
}

/// One round over this compactor's `share` of the source partitions: at
/// most `max_files_per_commit` files / `max_bytes_per_commit` bytes /
/// `memory_budget_bytes` of decoded rows, one Delta commit.
pub async fn compact_round(
    config: &CompactConfig,
    lake: &Lake,
    share: &mut Share,
) -> Result<CompactionMetrics> {
    let mut metrics = CompactionMetrics::default();
    let mut taken = take_staged(config, lake, share, &mut metrics).await?;
    let table = lake.load_table().await?;
    metrics.table_version = table.as_ref().and_then(DeltaTable::version);
    if taken.is_empty() {
        if let Some(table) = &table {
            let state = table.snapshot().map_err(|e| delta_error(lake, "read", e))?;
            (metrics.table_files, metrics.table_bytes) = table_size(state);
        }
        return Ok(metrics);
    }

    // Target schema: the table's columns as they are, then new columns widened
    // across every file of the round.
    let partition_columns = partition_columns(lake, table.as_ref())?;
    let mut target: Vec<(String, ColumnType)> = match &table {
        Some(t) => table_columns(t)?,
        None => system_columns(&partition_columns),
    };
    let fixed = target.len();
    let mut sources = Vec::with_capacity(taken.len());
    for t in &taken {
        let (schema, meta) = RowFile::read_header(&t.bytes, t.file.path.as_ref())?;
        for field in schema.fields() {
            let ty = column_type(field.data_type()).ok_or_else(|| {
                tributary_lake::Error::CorruptRowFile {
                    path: t.file.path.to_string(),
                    reason: format!(
                        "column `{}` has type {} that Tributary does not compact",
                        field.name(),
                        field.data_type()
                    ),
                }
            })?;
            match target.iter_mut().position(|(n, _)| n == field.name()) {
                Some(i) if i >= fixed => target[i].1 = target[i].1.widen(&ty),
                Some(_) => {}
                None => target.push((field.name().clone(), ty)),
            }
        }
        let last = chain::last_position(&meta, t.file.path.as_ref())?;
        let source: BTreeMap<String, Vec<u8>> = meta
            .into_iter()
            .filter(|(k, _)| k.starts_with(chain::META_SOURCE_PREFIX))
            .collect();
        sources.push((last, source));
    }
    // A partition column no row has yet is a string column of nulls.
    for column in &partition_columns {
        if !target.iter().any(|(n, _)| n == column) {
            target.push((column.clone(), ColumnType::String));
        }
    }
    let arrow_schema: SchemaRef = Arc::new(Schema::new(
        target
            .iter()
            .map(|(n, t)| Field::new(n, arrow_type(t), true))
            .collect::<Vec<_>>(),
    ));
    let conversion = Arc::new(Target {
        columns: target.clone(),
        schema: arrow_schema.clone(),
        fixed,
        event_time: config.event_time_column.clone(),
    });

    // Watermarks before this round.
    let mut watermarks: BTreeMap<PartitionId, Option<u64>> = BTreeMap::new();
    for t in &taken {
        if !watermarks.contains_key(&t.partition) {
            watermarks.insert(
                t.partition.clone(),
                lake.watermark(table.as_ref(), &t.partition).await?,
            );
        }
    }

    // Decode files in order until a third of the memory budget is used:
    // the rest is for the sort keys, the row group being copied into sorted
    // order and the Parquet writer's buffers (measured: peak RSS about twice
    // the decoded rows).
    let mut batches = Vec::new();
    let mut memory = 0u64;
    let mut new_watermarks: BTreeMap<PartitionId, u64> = BTreeMap::new();
    let mut included = 0;
    for (t, &(last, _)) in taken.iter().zip(&sources) {
        if included > 0 && memory >= config.memory_budget_bytes / 3 {
            // The rest waits for the next round. Files were taken in order per
            // partition, so every partition keeps a prefix and its watermark
            // stays below the files left behind.
            break;
        }
        included += 1;
        let watermark = watermarks.get(&t.partition).copied().flatten();
        let next = new_watermarks.entry(t.partition.clone()).or_insert(0);
        *next = (*next).max(last).max(watermark.unwrap_or(0));
        let (batch, file_metrics, rejected) = {
            let (bytes, path, partition) = (
                t.bytes.clone(),
                t.file.path.to_string(),
                t.partition.clone(),
            );
            let conversion = Arc::clone(&conversion);
            tokio::task::spawn_blocking(move || {
                convert_file(&bytes, &path, &partition, watermark, &conversion)
            })
            .await
            .map_err(Error::Worker)??
        };
        metrics.rows_read += file_metrics.rows_read;
        metrics.rows_below_watermark += file_metrics.rows_below_watermark;
        metrics.rows_dead_lettered += rejected.len() as u64;
        if !rejected.is_empty() {
            let path = t.partition.compactor_dead_letter_file(t.file.first);
            let file =
                dead_letter::encode(&t.partition, t.file.first, last, &rejected, Codec::Zstd)?;
            lake.store()
                .put(&path, file.into())
                .await
                .map_err(|e| tributary_lake::Error::store(&path, e))?;
        }
        if let Some(batch) = batch {
            memory += batch.get_array_memory_size() as u64;
            batches.push(batch);
        }
    }
    taken.truncate(included);

    // Dedupe by key, apply tombstones, drop rows of unfinished erasures.
    let delete = (config.delete_column.clone(), config.delete_value.clone());
    let requests = forget::unfinished_requests(lake).await?;
    let forgotten = requests
        .clone()
        .map(|hashed| (hashed, lake.subject_columns().to_vec()));
    let (batches, merged) = tokio::task::spawn_blocking(move || {
        let merged = merge_rows(&batches, &delete, forgotten.as_ref());
        (batches, merged)
    })
    .await
    .map_err(Error::Worker)?;
    check_cardinality(
        &batches,
        &merged.kept,
        &partition_columns,
        lake.max_partition_values(),
    )?;
    metrics.rows_deduplicated = merged.duplicates;
    metrics.tombstones = merged.tombstones;
    metrics.rows_forgotten = merged.forgotten;

    // Create the table, then evolve its schema, then write and commit data,
    // deletes and watermarks together.
    let table = match table {
        Some(t) => t,
        None => create_table(lake, &target, &partition_columns).await?,
    };
    let mut table = add_new_columns(lake, table, &target).await?;
    let state = table.snapshot().map_err(|e| delta_error(lake, "read", e))?;
    let sort_columns = config.sort_columns.clone().unwrap_or_default();
    let mut writer = TableWriter::new(
        lake,
        state,
        arrow_schema.clone(),
        &sort_columns,
        config.target_file_bytes,
    );
    metrics.rows_written = merged.kept.len() as u64;
    writer.write_sorted(batches, merged.kept).await?;
    let adds = writer.finish().await?;
    metrics.parquet_files = adds.len() as u64;
    let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();

    let mut leases = PartitionLeases::default();
    if !merged.deleted_keys.is_empty() {
        let erase = [Erase {
            column: KEY_COLUMN.into(),
            values: merged.deleted_keys,
        }];
        let target = Some(config.target_file_bytes);
        let deleted = rewrite::rewrite_under_leases(
            config,
            lake,
            &mut table,
            &erase,
            target,
            &mut leases,
            false,
        )
        .await;
        match deleted {
            Ok((removes, report)) => {
                actions.extend(removes);
                metrics.rows_deleted_from_table = report.rows_erased;
                metrics.table_files_rewritten = report.files_rewritten;
            }
            Err(error) => {
                leases.release(lake).await;
                return Err(error);
            }
        }
        // The table may have moved on while we waited for the leases: the
        // round is only valid if no other compactor committed its partitions.
        for (partition, before) in &watermarks {
            if lake.watermark(Some(&table), partition).await? != *before {
                leases.release(lake).await;
                return Err(Error::RoundOvertaken {
                    partition: partition.to_string(),
                });
            }
        }
    }

    let transactions = new_watermarks
        .iter()
        .map(|(p, last)| Transaction::new(p.app_id(), *last as i64))
        .collect();
    let deletes = actions.iter().any(|a| matches!(a, Action::Remove(_)));
    let operation = if !deletes {
        DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(partition_columns.clone()),
            predicate: None,
        }
    } else {
        DeltaOperation::Delete {
            predicate: Some("record keys of delete tombstones".into()),
        }
    };
    // An erasure request recorded while this round ran may name rows it
    // holds: commit nothing, and run the round again with the request.
    if forget::unfinished_requests(lake).await? != requests {
        leases.release(lake).await;
        discard_unreferenced(lake, &added_paths(&actions)).await;
        return Err(Error::ErasureArrived);
    }
    let committed = commit(
        config,
        lake,
        &table,
        &mut leases,
        actions,
        transactions,
        operation,
    )
    .await;
    leases.release(lake).await;
    let committed = committed?;
    metrics.commits = 1;
    metrics.commit_duration_ms = committed.duration_ms;
    metrics.commit_retries = committed.retries;
    metrics.table_version = Some(committed.version);
    (metrics.table_files, metrics.table_bytes) = (committed.table_files, committed.table_bytes);

    // Sources whose positions do not fit a u64 (Kinesis) read the source
    // position of the new watermark from a marker: it is written before the
    // files that also hold it go.
    let mut newest: BTreeMap<&PartitionId, (u64, &BTreeMap<String, Vec<u8>>)> = BTreeMap::new();
    for (t, (last, source)) in taken.iter().zip(&sources) {
        newest.insert(&t.partition, (*last, source));
    }
    for (partition, (last, source)) in newest {
        chain::write_compacted_marker(lake.store().as_ref(), partition, last, source).await?;
    }

    // Only now may the staged files go.
    for t in &taken {
        lake.store()
            .delete(&t.file.path)
            .await
            .map_err(|e| tributary_lake::Error::store(&t.file.path, e))?;
        metrics.files_compacted += 1;
        metrics.bytes_compacted += t.file.size;
    }
    Ok(metrics)
}

/// Lists staged files and reads the oldest of each partition, up to the
/// round's limits; counts the rest as backlog.
async fn take_staged(
    config: &CompactConfig,
    lake: &Lake,
    share: &mut Share,
    metrics: &mut CompactionMetrics,
) -> Result<Vec<Taken>> {
    let store = lake.store();
    let staged = chain::staged_partitions(store.as_ref()).await?;
    let mine = share.claim(lake, &staged).await?;
    metrics.compactors = share.members() as u64;
    let mut taken: Vec<Taken> = Vec::new();
    let mut bytes = 0u64;
    let now = chrono::Utc::now();
    // Once the round is full it takes nothing more, not even a smaller file:
    // skipping a partition's file and taking a later one would move the
    // watermark past the skipped file's rows.
    let mut full = false;
    for partition in staged {
        let others = !mine.contains(&partition);
        for file in chain::staged_files(store.as_ref(), &partition).await? {
            full = full
                || (!taken.is_empty()
                    && (taken.len() >= config.max_files_per_commit
                        || bytes + file.size > config.max_bytes_per_commit));
            // Another compactor's partitions count as backlog here too: the
            // gauge is the table's.
            if full || others {
                let age = (now - file.last_modified).num_milliseconds().max(0) as u64;
                metrics.backlog_files += 1;
                metrics.backlog_bytes += file.size;
                metrics.backlog_oldest_age_ms = metrics.backlog_oldest_age_ms.max(age);
                continue;
            }
            let data = match tributary_lake::read_object(store.as_ref(), &file.path).await {
                Ok(data) => data,
                // Another compactor compacted and deleted it since the listing:
                // this partition's later files wait for a round that sees the
                // new watermark.
                Err(e) if e.is_not_found() => break,
                Err(e) => return Err(e.into()),
            };
            bytes += file.size;
            taken.push(Taken {
                partition: partition.clone(),
                file,
                bytes: data,
            });
        }
    }
    Ok(taken)
}

/// What a commit did.
pub(crate) struct Committed {
    pub version: u64,
    pub retries: u64,
    pub duration_ms: u64,
    pub table_files: u64,
    pub table_bytes: u64,
}

/// Commits `actions` and `transactions` (watermarks) as `operation` on the
/// snapshot `table` holds, if every lease in `leases` can be renewed; then
/// writes a checkpoint every `checkpoint_interval` versions and removes
/// expired log entries. When the commit fails, the files its `add` actions
/// name are deleted unless the table references them.
pub(crate) async fn commit(
    config: &CompactConfig,
    lake: &Lake,
    table: &DeltaTable,
    leases: &mut PartitionLeases,
    actions: Vec<Action>,
    transactions: Vec<Transaction>,
    operation: DeltaOperation,
) -> Result<Committed> {
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
        CommitBuilder::from(
            CommitProperties::default()
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
        maintain_log(config, lake, table.log_store().as_ref(), committed.version).await?;
    }
    Ok(committed)
}

/// Writes a checkpoint at `version` and removes log entries older than
/// `log_retention_ms` that the checkpoint makes unnecessary. Returns how many
/// it removed.
pub async fn maintain_log(
    config: &CompactConfig,
    lake: &Lake,
    log_store: &dyn deltalake::logstore::LogStore,
    version: u64,
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
    let removed =
        deltalake::checkpoints::cleanup_expired_logs_for(version, log_store, cutoff, None)
            .await
            .map_err(|e| delta_error(lake, "log cleanup", e))?;
    Ok(removed as u64)
}

/// The rows of a round after dedupe, tombstones and erasures.
/// What a round keeps of its rows, as (batch, row) indices into its
/// batches: nothing is copied until the rows are written.
struct Merged {
    kept: Vec<(usize, usize)>,
    deleted_keys: HashSet<String>,
    duplicates: u64,
    tombstones: u64,
    forgotten: u64,
}

/// Keeps, per key, the last row of a round's batches (in partition, then
/// position order); a tombstone (`delete.0` equals `delete.1`) drops the
/// key's earlier rows and is not kept itself. Rows whose key or subject (in
/// the given subject columns) an unfinished erasure names are dropped.
fn merge_rows(
    batches: &[RecordBatch],
    delete: &(String, String),
    forgotten: Option<&(HashedIdentifiers, Vec<String>)>,
) -> Merged {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut last: FxHashMap<&str, (usize, usize)> =
        FxHashMap::with_capacity_and_hasher(rows, Default::default());
    let mut unkeyed = Vec::new();
    let mut deleted_keys = HashSet::new();
    let (mut duplicates, mut tombstones, mut dropped) = (0, 0, 0);
    for (b, batch) in batches.iter().enumerate() {
        let string_column = |name: &str| batch.column_by_name(name)?.as_string_opt::<i32>();
        let keys = string_column(KEY_COLUMN);
        let ops = string_column(&delete.0);
        let erased: Vec<(bool, &StringArray)> = forgotten
            .map(|(_, subject_columns)| {
                std::iter::once((true, KEY_COLUMN))
                    .chain(subject_columns.iter().map(|c| (false, c.as_str())))
                    .filter_map(|(is_key, name)| Some((is_key, string_column(name)?)))
                    .collect()
            })
            .unwrap_or_default();
        for row in 0..batch.num_rows() {
            if let Some((hashed, _)) = forgotten
                && erased.iter().any(|(is_key, values)| {
                    values.is_valid(row) && forget::is_forgotten(values.value(row), *is_key, hashed)
                })
            {
                dropped += 1;
                continue;
            }
            let Some(key) = keys.filter(|k| k.is_valid(row)).map(|k| k.value(row)) else {
                unkeyed.push((b, row));
                continue;
            };
            if ops.is_some_and(|o| o.is_valid(row) && o.value(row) == delete.1) {
                tombstones += 1;
                if last.remove(key).is_some() {
                    duplicates += 1;
                }
                deleted_keys.insert(key.to_string());
            } else if last.insert(key, (b, row)).is_some() {
                duplicates += 1;
            }
        }
    }
    let mut kept: Vec<(usize, usize)> = last.into_values().chain(unkeyed).collect();
    kept.sort_unstable();
    Merged {
        kept,
        deleted_keys,
        duplicates,
        tombstones,
        forgotten: dropped,
    }
}

struct FileMetrics {
    rows_read: u64,
    rows_below_watermark: u64,
}

type Converted = (Option<RecordBatch>, FileMetrics, Vec<DeadLetter>);

/// Reads one row file and converts the rows above `watermark` into the
/// target schema; rows holding a value that a table column's (fixed) type
/// does not accept are dead letters instead.
fn convert_file(
    bytes: &[u8],
    path: &str,
    partition: &PartitionId,
    watermark: Option<u64>,
    target: &Target,
) -> Result<Converted> {
    let arrow_err = |source| Error::Arrow {
        path: path.to_string(),
        source,
    };
    let rows = RowFile::read(bytes, path)?.batch;
    let mut metrics = FileMetrics {
        rows_read: rows.num_rows() as u64,
        rows_below_watermark: 0,
    };
    let positions = rows
        .column_by_name("_position")
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .filter(|p| p.null_count() == 0)
        .ok_or_else(|| tributary_lake::Error::CorruptRowFile {
            path: path.to_string(),
            reason: "no _position column of longs without nulls".into(),
        })?;
    let rows = match watermark {
        Some(w) => {
            let above: BooleanArray = positions.iter().map(|p| p.map(|p| p as u64 > w)).collect();
            metrics.rows_below_watermark = above.false_count() as u64;
            filter_record_batch(&rows, &above).map_err(arrow_err)?
        }
        None => rows,
    };

    // Columns whose file type the (fixed) table type does not accept: a row
    // with a value there is a dead letter.
    let schema = rows.schema();
    let checked: Vec<(&String, &ArrayRef)> = target.columns[..target.fixed]
        .iter()
        .filter_map(|(name, ty)| {
            let (i, field) = schema.column_with_name(name)?;
            let accepted = column_type(field.data_type()).is_some_and(|t| ty.accepts(&t));
            (!accepted).then(|| (name, rows.column(i)))
        })
        .collect();
    let (rows, rejected) = if checked.is_empty() {
        (rows, Vec::new())
    } else {
        let bad: BooleanArray = (0..rows.num_rows())
            .map(|row| Some(checked.iter().any(|(_, c)| c.is_valid(row))))
            .collect();
        let rejected = rejected_rows(&rows, &bad, &checked).map_err(arrow_err)?;
        let good = deltalake::arrow::compute::not(&bad).map_err(arrow_err)?;
        (
            filter_record_batch(&rows, &good).map_err(arrow_err)?,
            rejected,
        )
    };
    if rows.num_rows() == 0 {
        return Ok((None, metrics, rejected));
    }

    let columns = target
        .columns
        .iter()
        .map(|(name, ty)| {
            let to = arrow_type(ty);
            match rows.column_by_name(name) {
                _ if name == "_partition" => Ok(Arc::new(StringArray::from_iter_values(
                    std::iter::repeat_n(partition.to_string(), rows.num_rows()),
                )) as ArrayRef),
                _ if name == HOUR_COLUMN => {
                    cast(&hour_column(&rows, target.event_time.as_deref())?, &to)
                }
                None => Ok(new_null_array(&to, rows.num_rows())),
                Some(column) if *ty == ColumnType::String => json_text(column),
                Some(column) => cast(column, &to),
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(arrow_err)?;
    let batch = RecordBatch::try_new(Arc::clone(&target.schema), columns).map_err(arrow_err)?;
    Ok((Some(batch), metrics, rejected))
}

/// The dead letters of the rows `bad` marks, each holding its row as JSON.
fn rejected_rows(
    rows: &RecordBatch,
    bad: &BooleanArray,
    checked: &[(&String, &ArrayRef)],
) -> std::result::Result<Vec<DeadLetter>, ArrowError> {
    let indices: Vec<usize> = (0..rows.num_rows()).filter(|&i| bad.value(i)).collect();
    let bad_rows = filter_record_batch(rows, bad)?;
    let mut json = LineDelimitedWriter::new(Vec::new());
    json.write(&bad_rows)?;
    json.finish()?;
    let json = json.into_inner();
    let positions = rows
        .column_by_name("_position")
        .and_then(|c| c.as_primitive_opt::<Int64Type>());
    Ok(indices
        .iter()
        .zip(json.split(|b| *b == b'\n'))
        .map(|(&row, line)| {
            let column = checked
                .iter()
                .find(|(_, c)| c.is_valid(row))
                .map_or("?", |(name, _)| name.as_str());
            let error = format!(
                "column `{column}` has a type in the table that does not accept this row's value"
            );
            let position = positions.map_or(0, |p| p.value(row) as u64);
            DeadLetter::new(position, Reason::Schema, error, line, u64::MAX)
        })
        .collect())
}

/// Data files in the table, and their bytes.
fn table_size(state: &DeltaTableState) -> (u64, u64) {
    state.log_data().iter().fold((0, 0), |(files, bytes), f| {
        (files + 1, bytes + f.size().max(0) as u64)
    })
}

/// `table` with the columns of `target` it lacks added.
async fn add_new_columns(
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

async fn create_table(
    lake: &Lake,
    columns: &[(String, ColumnType)],
    partition_columns: &[String],
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
        .with_save_mode(SaveMode::Ignore)
        .await
        .map_err(|e| delta_error(lake, "create table", e))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forget::identifier_hash;

    fn batch(rows: &[(Option<&str>, Option<&str>, &str)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                KEY_COLUMN,
                deltalake::arrow::datatypes::DataType::Utf8,
                true,
            ),
            Field::new("_op", deltalake::arrow::datatypes::DataType::Utf8, true),
            Field::new("user", deltalake::arrow::datatypes::DataType::Utf8, true),
        ]));
        let column = |values: Vec<Option<&str>>| Arc::new(StringArray::from(values)) as ArrayRef;
        let columns = vec![
            column(rows.iter().map(|r| r.0).collect()),
            column(rows.iter().map(|r| r.1).collect()),
            column(rows.iter().map(|r| Some(r.2)).collect()),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn merge_keeps_the_last_row_per_key_applies_tombstones_and_drops_forgotten_rows() {
        let delete = ("_op".to_string(), "delete".to_string());
        let batches = [
            batch(&[
                (Some("a"), None, "u1"),
                (Some("b"), None, "u1"),
                (None, None, "u2"),
            ]),
            batch(&[
                (Some("a"), None, "u1"),
                (Some("b"), Some("delete"), "u1"),
                (Some("c"), None, "gone"),
                (None, None, "u3"),
            ]),
        ];
        let merged = merge_rows(&batches, &delete, None);
        // The later `a`, both unkeyed rows, `c`; `b` deleted.
        assert_eq!(merged.kept, [(0, 2), (1, 0), (1, 2), (1, 3)]);
        assert_eq!(
            (merged.duplicates, merged.tombstones, merged.forgotten),
            (2, 1, 0)
        );
        assert_eq!(merged.deleted_keys, HashSet::from(["b".to_string()]));

        // An unfinished erasure of subject `gone` and key `a`.
        let hashed = HashedIdentifiers {
            subjects: HashSet::from([identifier_hash("gone")]),
            keys: HashSet::from([identifier_hash("a")]),
        };
        let merged = merge_rows(&batches, &delete, Some(&(hashed, vec!["user".to_string()])));
        assert_eq!(merged.kept, [(0, 2), (1, 3)]);
        assert_eq!(merged.forgotten, 3);
    }
}
