//! One compaction round: staged row files → Parquet files → one Delta commit.
//!
//! ```text
//! list staged partitions ─► take each partition's oldest files (bounded)
//!   ─► read headers, merge schema (table columns fixed, new ones widen)
//!   ─► per file: drop rows at or below the partition's watermark (or an
//!      earlier file's last: a zombie's file may overlap),
//!      dead-letter rows the table's types reject, write the rest as Parquet
//!   ─► [create table] ─► [add new columns] ─► commit adds + txn watermarks
//!   ─► delete the compacted staged files
//! ```
//!
//! A crash before the commit leaves only unreferenced Parquet files (vacuum
//! removes them); a crash after it leaves staged files whose rows are all at or
//! below the new watermark, so the next round drops and deletes them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use deltalake::DeltaTable;
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::kernel::{Action, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use object_store::ObjectStoreExt;
use serde::Serialize;
use tributary_config::CompactConfig;
use tributary_lake::chain::{self, StagedFile};
use tributary_lake::columns::{arrow_type, column_type, table_columns};
use tributary_lake::dead_letter;
use tributary_lake::rowfile::{Codec, ColumnType, RowFile};
use tributary_lake::{Lake, PartitionId};

use crate::error::{Error, Result};
use crate::events::Operation;
use crate::files::{TableWriter, added_paths, discard_unreferenced};
use crate::forget::requests::{erasure_ledger, redact_ledger_mentions};
use crate::leases::PartitionLeases;
use crate::partition::{check_cardinality, partition_columns};
use crate::retention;
use crate::rewrite::{self, Erase, Erasure};
use crate::share::Share;
use crate::table::{
    Change, KEY_COLUMN, add_new_columns, commit, create_table, delta_error, system_columns,
    table_size,
};
use crate::text_index::INDEX_COLUMN;
use crate::upsert::{self, Ranks};
use rows::{Target, convert_file, merge_rows};

mod rows;

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
    /// Upsert mode: table rows replaced by a newer version of their key.
    pub rows_upserted: u64,
    /// Upsert mode: rows dropped because the table holds a newer version
    /// of their key.
    pub rows_older_than_table: u64,
    /// Upsert mode: rows dropped because a row of the same round with their
    /// key ranks higher (also counted in `rows_deduplicated`).
    pub rows_older_than_round: u64,
    /// Upsert mode: table files whose row groups were read to find the
    /// incoming keys' rows.
    pub upsert_files_probed: u64,
    /// Upsert mode: row groups read for that.
    pub upsert_row_groups_read: u64,
    /// Upsert mode: table files ruled out by their `_key` min/max.
    pub upsert_pruned_by_statistics: u64,
    /// Upsert mode: table files ruled out by their `_key` bloom filters.
    pub upsert_pruned_by_bloom_filter: u64,
    /// Rows dropped because an unfinished `tributary forget` request names
    /// their key or subject.
    pub rows_forgotten: u64,
    /// Rows dropped because they were staged (late) for a date the
    /// retention rules have expired (`[retention]`, the rules object).
    pub rows_expired_late: u64,
    /// Values of redact columns (`lake.redact_columns`) in which a subject
    /// of the erasure ledger was replaced by `[redacted]`.
    pub mentions_redacted: u64,
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

/// Runs rounds until every row file staged when it started is compacted:
/// those of its share of the source partitions by itself, retrying a round
/// that lost a commit race, and those of partitions other compactors hold by
/// waiting for them (or for their leases to run out, when they died).
/// Returns what this process did.
pub async fn compact_until_empty(config: &CompactConfig, lake: &Lake) -> Result<CompactionMetrics> {
    let mut share = Share::new(config);
    let result = rounds_until_empty(config, lake, &mut share).await;
    share.leave(lake).await;
    result
}

/// The paths of every staged row file.
async fn staged_paths(lake: &Lake) -> Result<BTreeSet<object_store::path::Path>> {
    let store = lake.store().as_ref();
    let mut paths = BTreeSet::new();
    for partition in chain::staged_partitions(store).await? {
        for file in chain::staged_files(store, &partition).await? {
            paths.insert(file.path);
        }
    }
    Ok(paths)
}

async fn rounds_until_empty(
    config: &CompactConfig,
    lake: &Lake,
    share: &mut Share,
) -> Result<CompactionMetrics> {
    let mut total = CompactionMetrics::default();
    let mut attempt = 1;
    let mut waiting_for = staged_paths(lake).await?;
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
        total.rows_upserted += round.rows_upserted;
        total.rows_older_than_table += round.rows_older_than_table;
        total.rows_older_than_round += round.rows_older_than_round;
        total.upsert_files_probed += round.upsert_files_probed;
        total.upsert_row_groups_read += round.upsert_row_groups_read;
        total.upsert_pruned_by_statistics += round.upsert_pruned_by_statistics;
        total.upsert_pruned_by_bloom_filter += round.upsert_pruned_by_bloom_filter;
        total.rows_forgotten += round.rows_forgotten;
        total.rows_expired_late += round.rows_expired_late;
        total.mentions_redacted += round.mentions_redacted;
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
            // Nothing of this compactor's share is left; what was staged at
            // the start and is still there belongs to others.
            let staged = staged_paths(lake).await?;
            waiting_for.retain(|p| staged.contains(p));
            if waiting_for.is_empty() {
                return Ok(total);
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
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
    upsert::check_mode(lake, table.as_ref(), config.upsert.as_ref())?;
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
    // The free-text index of the redact columns, filled in by the writer.
    if !lake.redact_columns().is_empty() && !target.iter().any(|(n, _)| n == INDEX_COLUMN) {
        target.push((
            INDEX_COLUMN.into(),
            ColumnType::List(Box::new(ColumnType::String)),
        ));
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
    let mut latest_event_times: BTreeMap<String, i64> = BTreeMap::new();
    let mut included = 0;
    for (t, &(last, _)) in taken.iter_mut().zip(&sources) {
        if included > 0 && memory >= config.memory_budget_bytes / 3 {
            // The rest waits for the next round. Files were taken in order per
            // partition, so every partition keeps a prefix and its watermark
            // stays below the files left behind.
            break;
        }
        included += 1;
        // Rows at or below the watermark, or covered by an earlier file
        // of this round, are there already. Staged files overlap when a
        // writer with a stale view (a zombie) staged after a compaction
        // deleted the file it would have collided with; whichever file comes
        // first in position order gives a position its row.
        let watermark = watermarks
            .get(&t.partition)
            .copied()
            .flatten()
            .max(new_watermarks.get(&t.partition).copied());
        let next = new_watermarks.entry(t.partition.clone()).or_insert(0);
        *next = (*next).max(last).max(watermark.unwrap_or(0));
        let (batch, file_metrics, rejected) = {
            // The staged bytes are not needed after this: let them go.
            let (bytes, path, partition) = (
                std::mem::take(&mut t.bytes),
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
        // A row dated in the future must not make its source look ahead.
        let now = chrono::Utc::now().timestamp_micros();
        if let Some(time) = file_metrics.latest_event_time.map(|t| t.min(now)) {
            let latest = latest_event_times
                .entry(t.partition.app_id())
                .or_insert(time);
            *latest = (*latest).max(time);
        }
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

    // Drop rows staged late for dates retention has expired, redact the
    // ledger's subjects in free text, then dedupe by key, apply tombstones,
    // drop rows the erasure ledger names.
    let delete = (config.delete_column.clone(), config.delete_value.clone());
    let event_time = config.event_time_column.clone();
    let requests = erasure_ledger(lake, config.erasure_ledger_keep_ms).await?;
    let forgotten = requests
        .clone()
        .map(|hashed| (hashed, lake.subject_columns().to_vec()));
    let order_by = config.upsert.as_ref().map(|u| u.order_by.clone());
    let expiry = retention::late_expiry(config, lake).await?;
    let redact_columns = lake.redact_columns().to_vec();
    let (batches, mut merged, ranks, late, mentions) = tokio::task::spawn_blocking(move || {
        let (batches, late) = retention::drop_expired(batches, expiry.as_ref())?;
        let (batches, mentions) = match &forgotten {
            Some((hashed, _)) => {
                redact_ledger_mentions(batches, &redact_columns, hashed, event_time.as_deref())
                    .map_err(|source| Error::Arrow {
                        path: "the round's staged rows".into(),
                        source,
                    })?
            }
            None => (batches, 0),
        };
        let ranks = match order_by {
            Some(column) => Some(Ranks::new(&column, &batches)?),
            None => None,
        };
        let merged = merge_rows(
            &batches,
            &delete,
            forgotten.as_ref(),
            event_time.as_deref(),
            ranks.as_ref(),
        );
        Ok::<_, Error>((batches, merged, ranks, late, mentions))
    })
    .await
    .map_err(Error::Worker)??;
    metrics.rows_expired_late = late;
    metrics.mentions_redacted = mentions;
    check_cardinality(
        &batches,
        &merged.kept,
        &partition_columns,
        lake.max_partition_values(),
    )?;
    metrics.rows_deduplicated = merged.duplicates;
    metrics.tombstones = merged.tombstones;
    metrics.rows_forgotten = merged.forgotten;
    metrics.rows_older_than_round = merged.older;

    // Create the table, then evolve its schema, then write and commit data,
    // deletes and watermarks together.
    let table = match table {
        Some(t) => t,
        None => create_table(lake, &target, &partition_columns, config.upsert.as_ref()).await?,
    };
    let mut table = add_new_columns(lake, table, &target).await?;
    // Upsert mode decides against the table first: rows the table holds a
    // newer version of are not written.
    let mut leases = PartitionLeases::default();
    let mut rewritten = Vec::new();
    if let Some(ranks) = &ranks {
        let upserted = upsert::upsert_under_leases(
            config,
            lake,
            &mut table,
            &batches,
            &mut merged.kept,
            &merged.deleted_keys,
            ranks,
            &mut leases,
        )
        .await;
        match upserted {
            Ok((actions, report)) => {
                rewritten = actions;
                metrics.rows_upserted = report.rows_upserted;
                metrics.rows_deleted_from_table = report.rows_deleted;
                metrics.rows_older_than_table = report.rows_older_than_table;
                metrics.upsert_files_probed = report.files_probed;
                metrics.upsert_row_groups_read = report.row_groups_read;
                metrics.upsert_pruned_by_statistics = report.pruned_by_statistics;
                metrics.upsert_pruned_by_bloom_filter = report.pruned_by_bloom_filter;
                metrics.table_files_rewritten = report.files_rewritten;
            }
            Err(error) => {
                leases.release(lake).await;
                return Err(error);
            }
        }
    }
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
    let written = async {
        writer.write_sorted(batches, merged.kept).await?;
        writer.finish().await
    }
    .await;
    let adds = match written {
        Ok(adds) => adds,
        Err(error) => {
            leases.release(lake).await;
            discard_unreferenced(lake, &added_paths(&rewritten)).await;
            return Err(error);
        }
    };
    metrics.parquet_files = adds.len() as u64;
    let new_files: HashSet<String> = adds.iter().map(|a| a.path.clone()).collect();
    let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
    actions.extend(rewritten);

    let rewrites = ranks.is_some() || !merged.deleted_keys.is_empty();
    if ranks.is_none() && !merged.deleted_keys.is_empty() {
        let erase = [Erase {
            column: KEY_COLUMN.into(),
            values: merged.deleted_keys,
        }];
        let target = Some(config.target_file_bytes);
        let deleted = rewrite::rewrite_under_leases(
            config,
            lake,
            &mut table,
            Erasure {
                rows: &erase,
                text: None,
            },
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
    }
    // The table may have moved on while we waited for the leases: the
    // round is only valid if no other compactor committed its partitions.
    if rewrites {
        for (partition, before) in &watermarks {
            if lake.watermark(Some(&table), partition).await? != *before {
                leases.release(lake).await;
                discard_unreferenced(lake, &added_paths(&actions)).await;
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
    let operation = if ranks.is_some() {
        // Read-the-whole-table semantics: a concurrent commit that added
        // files (another compactor's new version of a key) is a conflict,
        // and the round runs again on the new snapshot.
        DeltaOperation::Merge {
            predicate: None,
            merge_predicate: Some("record keys (upsert)".into()),
            matched_predicates: Vec::new(),
            not_matched_predicates: Vec::new(),
            not_matched_by_source_predicates: Vec::new(),
        }
    } else if !deletes {
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
    if erasure_ledger(lake, config.erasure_ledger_keep_ms).await? != requests {
        leases.release(lake).await;
        discard_unreferenced(lake, &added_paths(&actions)).await;
        return Err(Error::ErasureArrived);
    }
    let change = Change {
        actions,
        transactions,
        operation,
        event: Operation::Compaction {
            latest_event_times,
            new_files,
        },
        exclusive: false,
    };
    let committed = commit(config, lake, &table, &mut leases, change).await;
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
    // Staged bytes decode to several times their size, and a round decodes
    // at most a third of the memory budget: reading more is wasted.
    let byte_limit = config
        .max_bytes_per_commit
        .min(config.memory_budget_bytes / 8);
    for partition in staged {
        let others = !mine.contains(&partition);
        for file in chain::staged_files(store.as_ref(), &partition).await? {
            full = full
                || (!taken.is_empty()
                    && (taken.len() >= config.max_files_per_commit
                        || bytes + file.size > byte_limit));
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

#[cfg(test)]
mod tests {
    use deltalake::arrow::array::{ArrayRef, Date32Array, StringArray};
    use tributary_config::LakeConfig;

    use super::*;

    #[tokio::test]
    async fn overlapping_staged_files_give_each_position_one_row() {
        // A zombie staged [3, 9] after a compaction deleted the file at 3
        // it would have collided with; the owner staged [6, 12] meanwhile.
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(&LakeConfig::new(dir.path().display().to_string())).unwrap();
        let partition = PartitionId::new("s", "p0");
        for (first, last) in [(0, 5), (3, 9), (6, 12)] {
            let columns: [(&str, ArrayRef); 2] = [
                (
                    "_key",
                    Arc::new(StringArray::from_iter_values(
                        (first..=last).map(|p| format!("k{p}")),
                    )),
                ),
                (
                    "date",
                    Arc::new(Date32Array::from(vec![20_787; last - first + 1])),
                ),
            ];
            crate::testing::stage(&lake, &partition, first as u64, columns.into()).await;
        }
        let config = CompactConfig {
            sort_columns: Some(Vec::new()),
            ..CompactConfig::default()
        };
        let metrics = crate::compact_until_empty(&config, &lake).await.unwrap();
        assert_eq!(metrics.rows_read, 6 + 7 + 7);
        assert_eq!(metrics.rows_written, 13);
        assert_eq!(metrics.rows_below_watermark, 3 + 4);
        let table = lake.load_table().await.unwrap().unwrap();
        assert_eq!(
            lake.watermark(Some(&table), &partition).await.unwrap(),
            Some(12)
        );
    }
}
