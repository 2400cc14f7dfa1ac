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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use deltalake::DeltaTable;
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, StructField, Transaction};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::state::DeltaTableState;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use object_store::ObjectStoreExt;
use serde::Serialize;
use tributary_config::CompactConfig;
use tributary_lake::chain::{self, StagedFile};
use tributary_lake::columns::{arrow_type, table_columns};
use tributary_lake::dead_letter::{self, DeadLetter, Reason};
use tributary_lake::rowfile::{Codec, ColumnType, RowFile, RowSchema, Value};
use tributary_lake::{Lake, PartitionId};

use crate::arrow_rows::{Source, record_batch};
use crate::error::{Error, Result};

/// The partition column of every Tributary table.
pub const PARTITION_COLUMN: &str = "date";

/// Columns every table starts with, in order.
fn system_columns() -> Vec<(String, ColumnType)> {
    vec![
        ("_key".into(), ColumnType::String),
        ("_partition".into(), ColumnType::String),
        ("_position".into(), ColumnType::Long),
        (PARTITION_COLUMN.into(), ColumnType::String),
    ]
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
    /// Parquet files added.
    pub parquet_files: u64,
    /// Table version after the last commit, if the table exists.
    pub table_version: Option<u64>,
    /// Time the Delta commit took, retries included, in milliseconds.
    pub commit_duration_ms: u64,
    /// Times the commit was retried after another writer committed first.
    pub commit_retries: u64,
    /// Staged row files left for later rounds.
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

/// Runs rounds until nothing is staged. Returns what was done.
pub async fn compact_until_empty(config: &CompactConfig, lake: &Lake) -> Result<CompactionMetrics> {
    let mut total = CompactionMetrics::default();
    loop {
        let round = compact_round(config, lake).await?;
        let done = round.files_compacted == 0;
        total.commits += round.commits;
        total.files_compacted += round.files_compacted;
        total.bytes_compacted += round.bytes_compacted;
        total.rows_read += round.rows_read;
        total.rows_written += round.rows_written;
        total.rows_below_watermark += round.rows_below_watermark;
        total.rows_dead_lettered += round.rows_dead_lettered;
        total.parquet_files += round.parquet_files;
        total.table_version = round.table_version.or(total.table_version);
        total.commit_duration_ms += round.commit_duration_ms;
        total.commit_retries += round.commit_retries;
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

/// One round: at most `max_files_per_commit` files / `max_bytes_per_commit`
/// bytes, one Delta commit.
pub async fn compact_round(config: &CompactConfig, lake: &Lake) -> Result<CompactionMetrics> {
    let store = lake.store();
    let mut metrics = CompactionMetrics::default();
    let mut taken: Vec<Taken> = Vec::new();
    let mut bytes = 0u64;
    let now = chrono::Utc::now();
    // Once the round is full it takes nothing more, not even a smaller file:
    // skipping a partition's file and taking a later one would move the
    // watermark past the skipped file's rows.
    let mut full = false;
    for partition in chain::staged_partitions(store.as_ref()).await? {
        for file in chain::staged_files(store.as_ref(), &partition).await? {
            full = full
                || (!taken.is_empty()
                    && (taken.len() >= config.max_files_per_commit
                        || bytes + file.size > config.max_bytes_per_commit));
            if full {
                let age = (now - file.last_modified).num_milliseconds().max(0) as u64;
                metrics.backlog_files += 1;
                metrics.backlog_bytes += file.size;
                metrics.backlog_oldest_age_ms = metrics.backlog_oldest_age_ms.max(age);
                continue;
            }
            let store_error = |e| tributary_lake::Error::store(&file.path, e);
            let data = store
                .get(&file.path)
                .await
                .map_err(store_error)?
                .bytes()
                .await
                .map_err(store_error)?;
            bytes += file.size;
            taken.push(Taken {
                partition: partition.clone(),
                file,
                bytes: data,
            });
        }
    }
    let mut table = lake.load_table().await?;
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
    let mut target: Vec<(String, ColumnType)> = match &table {
        Some(t) => table_columns(t)?,
        None => system_columns(),
    };
    let fixed = target.len();
    let mut headers = Vec::with_capacity(taken.len());
    for t in &taken {
        let (schema, meta) = RowFile::decode_header(&t.bytes, t.file.path.as_ref())?;
        for column in &schema.columns {
            match target.iter_mut().position(|(n, _)| *n == column.name) {
                Some(i) if i >= fixed => target[i].1 = target[i].1.widen(&column.ty),
                Some(_) => {}
                None => target.push((column.name.clone(), column.ty.clone())),
            }
        }
        let last = chain::last_position(&meta, t.file.path.as_ref())?;
        headers.push((schema, last));
    }
    let arrow_schema: SchemaRef = Arc::new(Schema::new(
        target
            .iter()
            .map(|(n, t)| Field::new(n, arrow_type(t), true))
            .collect::<Vec<_>>(),
    ));

    // Watermarks before this round, and after it.
    let mut watermarks: BTreeMap<PartitionId, Option<u64>> = BTreeMap::new();
    for t in &taken {
        if !watermarks.contains_key(&t.partition) {
            watermarks.insert(
                t.partition.clone(),
                lake.watermark(table.as_ref(), &t.partition).await?,
            );
        }
    }
    let mut new_watermarks: BTreeMap<PartitionId, u64> = BTreeMap::new();

    let mut writer = RecordBatchWriter::try_new(
        lake.table_url().as_str(),
        arrow_schema.clone(),
        Some(vec![PARTITION_COLUMN.into()]),
        Some(lake.storage_options().clone()),
    )
    .map_err(|e| delta_error(lake, "writer setup", e))?
    .with_writer_properties(writer_properties())
    .with_target_file_size(config.target_file_bytes);

    for (t, (schema, last)) in taken.iter().zip(headers) {
        let watermark = watermarks.get(&t.partition).copied().flatten();
        let next = new_watermarks.entry(t.partition.clone()).or_insert(0);
        *next = (*next).max(last).max(watermark.unwrap_or(0));
        let (batch, file_metrics, rejected) = {
            let (bytes, path, partition) = (
                t.bytes.clone(),
                t.file.path.to_string(),
                t.partition.clone(),
            );
            let (arrow_schema, target) = (arrow_schema.clone(), target.clone());
            tokio::task::spawn_blocking(move || {
                convert_file(
                    &bytes,
                    &path,
                    &partition,
                    watermark,
                    &target,
                    &arrow_schema,
                    fixed,
                    schema,
                )
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
            store
                .put(&path, file.into())
                .await
                .map_err(|e| tributary_lake::Error::store(&path, e))?;
        }
        if let Some(batch) = batch {
            metrics.rows_written += batch.num_rows() as u64;
            writer
                .write(batch)
                .await
                .map_err(|e| delta_error(lake, "write", e))?;
        }
    }
    let adds = writer
        .flush()
        .await
        .map_err(|e| delta_error(lake, "write", e))?;
    metrics.parquet_files = adds.len() as u64;

    // Create the table, then evolve its schema, then commit data and watermarks.
    let table = match table.take() {
        Some(t) => t,
        None => create_table(lake, &target).await?,
    };
    let existing: Vec<String> = table_columns(&table)?.into_iter().map(|(n, _)| n).collect();
    let new_fields = target
        .iter()
        .filter(|(n, _)| !existing.contains(n))
        .map(|(n, t)| struct_field(n, t))
        .collect::<Result<Vec<_>>>()?;
    let table = if new_fields.is_empty() {
        table
    } else {
        table
            .add_columns()
            .with_fields(new_fields)
            .await
            .map_err(|e| delta_error(lake, "add columns", e))?
    };

    let transactions = new_watermarks
        .iter()
        .map(|(p, last)| Transaction::new(p.app_id(), *last as i64))
        .collect();
    let snapshot = table
        .snapshot()
        .map_err(|e| delta_error(lake, "commit", e))?;
    let commit_started = std::time::Instant::now();
    let finalized = CommitBuilder::from(
        CommitProperties::default().with_application_transactions(transactions),
    )
    .with_actions(adds.into_iter().map(Action::Add).collect())
    .build(
        Some(snapshot),
        table.log_store(),
        DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(vec![PARTITION_COLUMN.into()]),
            predicate: None,
        },
    )
    .await
    .map_err(|e| delta_error(lake, "commit", e))?;
    metrics.commits = 1;
    metrics.commit_duration_ms = commit_started.elapsed().as_millis() as u64;
    metrics.commit_retries = finalized.metrics.num_retries;
    metrics.table_version = Some(finalized.version());
    (metrics.table_files, metrics.table_bytes) = table_size(&finalized.snapshot);

    // Only now may the staged files go.
    for t in &taken {
        store
            .delete(&t.file.path)
            .await
            .map_err(|e| tributary_lake::Error::store(&t.file.path, e))?;
        metrics.files_compacted += 1;
        metrics.bytes_compacted += t.file.size;
    }
    Ok(metrics)
}

struct FileMetrics {
    rows_read: u64,
    rows_below_watermark: u64,
}

type Converted = (
    Option<deltalake::arrow::record_batch::RecordBatch>,
    FileMetrics,
    Vec<DeadLetter>,
);

/// Decodes one row file and converts the rows above `watermark` that the
/// target types accept; the others are dead letters.
#[allow(clippy::too_many_arguments)]
fn convert_file(
    bytes: &[u8],
    path: &str,
    partition: &PartitionId,
    watermark: Option<u64>,
    target: &[(String, ColumnType)],
    arrow_schema: &SchemaRef,
    fixed: usize,
    schema: RowSchema,
) -> Result<Converted> {
    let file = RowFile::decode(bytes, path)?;
    let by_name: HashMap<&str, usize> = schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let sources: Vec<Source> = target
        .iter()
        .map(|(name, ty)| Source {
            index: by_name.get(name.as_str()).copied(),
            ty: ty.clone(),
        })
        .collect();
    // Columns whose file type the (fixed) table type does not accept need a
    // per-row check; all others always fit.
    let checked: Vec<(usize, &str)> = sources
        .iter()
        .zip(target)
        .take(fixed)
        .filter_map(|(s, (name, ty))| {
            let i = s.index?;
            (!ty.accepts(&schema.columns[i].ty)).then_some((i, name.as_str()))
        })
        .collect();
    let position_index = by_name.get("_position").copied();
    let mut metrics = FileMetrics {
        rows_read: file.rows.len() as u64,
        rows_below_watermark: 0,
    };
    let mut rejected = Vec::new();
    let mut rows = Vec::with_capacity(file.rows.len());
    for row in file.rows {
        let position = match position_index.and_then(|i| row.get(i)) {
            Some(Value::Long(p)) => *p as u64,
            _ => {
                return Err(tributary_lake::Error::CorruptRowFile {
                    path: path.to_string(),
                    reason: "row without a _position".into(),
                }
                .into());
            }
        };
        if watermark.is_some_and(|w| position <= w) {
            metrics.rows_below_watermark += 1;
            continue;
        }
        if let Some((_, name)) = checked
            .iter()
            .find(|(i, _)| !matches!(row[*i], Value::Null))
        {
            let error = format!(
                "column `{name}` has a type in the table that does not accept this row's value"
            );
            let json = row_json(&schema, &row);
            rejected.push(DeadLetter::new(
                position,
                Reason::Schema,
                error,
                json.as_bytes(),
                u64::MAX,
            ));
            continue;
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Ok((None, metrics, rejected));
    }
    let partition_index = target
        .iter()
        .position(|(n, _)| n == "_partition")
        .unwrap_or(usize::MAX);
    let batch = record_batch(
        arrow_schema,
        &sources,
        &rows,
        (partition_index, &partition.to_string()),
    )
    .map_err(|source| Error::Arrow {
        path: path.to_string(),
        source,
    })?;
    Ok((Some(batch), metrics, rejected))
}

fn row_json(schema: &RowSchema, row: &[Value]) -> String {
    let object: serde_json::Map<String, serde_json::Value> = schema
        .columns
        .iter()
        .zip(row)
        .map(|(c, v)| (c.name.clone(), serde_json::Value::String(v.to_json_text())))
        .collect();
    serde_json::Value::Object(object).to_string()
}

/// Data files in the table, and their bytes.
fn table_size(state: &DeltaTableState) -> (u64, u64) {
    state.log_data().iter().fold((0, 0), |(files, bytes), f| {
        (files + 1, bytes + f.size().max(0) as u64)
    })
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build()
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

async fn create_table(lake: &Lake, columns: &[(String, ColumnType)]) -> Result<DeltaTable> {
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
        .with_partition_columns([PARTITION_COLUMN])
        .with_save_mode(SaveMode::Ignore)
        .await
        .map_err(|e| delta_error(lake, "create table", e))
}

fn delta_error(lake: &Lake, operation: &'static str, source: deltalake::DeltaTableError) -> Error {
    Error::Delta {
        operation,
        url: lake.table_url().to_string(),
        source: Box::new(source),
    }
}
