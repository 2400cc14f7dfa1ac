//! Upsert mode (`[lake.upsert]`): the table holds at most one row per
//! record key, the version that ranks highest by (order column,
//! `_position`, `_partition`), nulls lowest.
//!
//! ```text
//! round's rows, merged per key (compact::rows, by rank)
//!   ─► probe: files whose `_key` min/max may hold an incoming or deleted key
//!      ─► row groups whose `_key` bloom filter may hold one
//!      ─► read only those, only `_key`, the order column, `_position`, `_partition`
//!      ─► per table row of an incoming key: the table row ranks higher → the
//!         incoming row is dropped; else the file is rewritten without it.
//!         A key a tombstone of the round deletes: the table row goes.
//!   ─► take the leases of the rewritten files' partitions, probe again if
//!      the table moved meanwhile
//!   ─► rewrite those files (rewrite::rewrite), renewing the leases
//!   ─► the caller writes the surviving incoming rows and commits adds,
//!      removes and watermarks in one `Merge` commit
//! ```
//!
//! Nothing here writes state of its own: a crash before the commit leaves
//! unreferenced Parquet files, and the next round probes again from the
//! same staged rows.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use deltalake::arrow::array::{Array, ArrayRef, AsArray, new_null_array};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::arrow::row::{Row, RowConverter, Rows, SortField};
use deltalake::kernel::Action;
use deltalake::table::state::DeltaTableState;
use rustc_hash::FxHashMap;
use tributary_config::{CompactConfig, UpsertConfig};
use tributary_lake::Lake;

use crate::error::{Error, Result};
use crate::files::TableFile;
use crate::leases::PartitionLeases;
use crate::rewrite::{self, Candidate, Erase, Erasure, RewriteReport};
use crate::table::{KEY_COLUMN, delta_error};

/// The table property that records upsert mode and its order column.
pub const ORDER_PROPERTY: &str = "tributary.upsert.orderBy";

/// The `delta.`-style configuration a new table is created with.
pub(crate) fn table_properties(
    upsert: Option<&UpsertConfig>,
) -> Vec<(&'static str, Option<String>)> {
    upsert
        .map(|u| (ORDER_PROPERTY, Some(u.order_by.clone())))
        .into_iter()
        .collect()
}

/// Fails unless the table was created in the configured mode: switching a
/// table between insert-only and upsert (or its order column) is never done
/// silently, since rows written in one mode break the other's guarantees.
pub(crate) fn check_mode(
    lake: &Lake,
    table: Option<&DeltaTable>,
    upsert: Option<&UpsertConfig>,
) -> Result<()> {
    let Some(table) = table else {
        return Ok(());
    };
    let state = table.snapshot().map_err(|e| delta_error(lake, "read", e))?;
    let recorded = state
        .metadata()
        .configuration()
        .get(ORDER_PROPERTY)
        .cloned();
    let configured = upsert.map(|u| u.order_by.clone());
    if recorded != configured {
        return Err(Error::UpsertMode {
            url: lake.table_url().to_string(),
            table: recorded,
            configured,
        });
    }
    Ok(())
}

/// Comparable ranks of rows: (order value, `_position`, `_partition`)
/// encoded in Arrow's row format, nulls lowest, so that comparing two
/// versions of a key is one `memcmp`.
pub(crate) struct Ranks {
    converter: RowConverter,
    order_by: String,
    order_type: DataType,
    rows: Vec<Rows>,
}

impl Ranks {
    /// The ranks of every row of `batches` (which share one schema), by
    /// `order_by`; a round without that column ranks every row by position.
    pub(crate) fn new(order_by: &str, batches: &[RecordBatch]) -> Result<Ranks> {
        let order_type = batches
            .first()
            .and_then(|b| {
                let schema = b.schema();
                let field = schema.field_with_name(order_by).ok()?;
                Some(field.data_type().clone())
            })
            .unwrap_or(DataType::Utf8);
        let converter = RowConverter::new(vec![
            SortField::new(order_type.clone()),
            SortField::new(DataType::Int64),
            SortField::new(DataType::Utf8),
        ])
        .map_err(|source| Error::Arrow {
            path: format!("<ranks by {order_by}>"),
            source,
        })?;
        let mut ranks = Ranks {
            converter,
            order_by: order_by.to_string(),
            order_type,
            rows: Vec::with_capacity(batches.len()),
        };
        for batch in batches {
            let rows = ranks.convert(batch, "<staged rows>")?;
            ranks.rows.push(rows);
        }
        Ok(ranks)
    }

    /// The rank of row `row` of batch `batch`.
    pub(crate) fn rank(&self, batch: usize, row: usize) -> Row<'_> {
        self.rows[batch].row(row)
    }

    /// The ranks of the rows of `batch` (of the round, or read from table
    /// file `path`); a missing column ranks as null.
    fn convert(&self, batch: &RecordBatch, path: &str) -> Result<Rows> {
        let arrow_err = |source| Error::Arrow {
            path: path.to_string(),
            source,
        };
        let column = |name: &str, ty: &DataType| -> Result<ArrayRef> {
            match batch.column_by_name(name) {
                Some(c) if c.data_type() == ty => Ok(c.clone()),
                Some(c) => cast(c, ty).map_err(arrow_err),
                None => Ok(new_null_array(ty, batch.num_rows())),
            }
        };
        let columns = [
            column(&self.order_by, &self.order_type)?,
            column("_position", &DataType::Int64)?,
            column("_partition", &DataType::Utf8)?,
        ];
        self.converter.convert_columns(&columns).map_err(arrow_err)
    }
}

/// What an upsert did to the table, for the round's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UpsertReport {
    /// Table rows replaced by a newer incoming version.
    pub(crate) rows_upserted: u64,
    /// Table rows deleted by a tombstone of the round.
    pub(crate) rows_deleted: u64,
    /// Incoming rows dropped because the table holds a newer version.
    pub(crate) rows_older_than_table: u64,
    /// Table files whose row groups were read.
    pub(crate) files_probed: u64,
    /// Row groups read by the probe.
    pub(crate) row_groups_read: u64,
    /// Files skipped by their `_key` min/max statistics.
    pub(crate) pruned_by_statistics: u64,
    /// Files skipped by their `_key` bloom filters.
    pub(crate) pruned_by_bloom_filter: u64,
    /// Table files rewritten.
    pub(crate) files_rewritten: u64,
}

/// The result of probing a snapshot: per file, the keys whose rows go.
struct Probe {
    replace: Vec<(Candidate, HashSet<String>)>,
    drop_incoming: HashSet<String>,
    report: UpsertReport,
}

/// Applies the round's rows (`kept`, as (batch, row) indices, and the keys
/// its tombstones delete) against the table under the leases of every
/// partition whose files it rewrites. Drops from `kept` the rows the table
/// holds a newer version of, and returns the `remove` and `add` actions of
/// the rewritten files; `table` is left at the snapshot they were planned
/// on, and the leases stay in `leases` for the caller's commit.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn upsert_under_leases(
    config: &CompactConfig,
    lake: &Lake,
    table: &mut DeltaTable,
    batches: &[RecordBatch],
    kept: &mut Vec<(usize, usize)>,
    deleted_keys: &HashSet<String>,
    ranks: &Ranks,
    leases: &mut PartitionLeases,
) -> Result<(Vec<Action>, UpsertReport)> {
    let key_of = |(b, row): (usize, usize)| {
        let keys = batches[b]
            .column_by_name(KEY_COLUMN)?
            .as_string_opt::<i32>()?;
        keys.is_valid(row).then(|| keys.value(row))
    };
    let mut incoming: FxHashMap<&str, (usize, usize)> = FxHashMap::default();
    for &at in kept.iter() {
        if let Some(key) = key_of(at)
            && !deleted_keys.contains(key)
        {
            incoming.insert(key, at);
        }
    }
    let wanted: HashSet<String> = incoming
        .keys()
        .map(|k| k.to_string())
        .chain(deleted_keys.iter().cloned())
        .collect();
    if wanted.is_empty() {
        return Ok((Vec::new(), UpsertReport::default()));
    }
    let (incoming, wanted) = (&incoming, &wanted);
    let probe = leases
        .plan_holding(config, lake, table, |state| {
            Box::pin(async move {
                let probe =
                    probe_table(lake, &state, ranks, incoming, deleted_keys, wanted).await?;
                let needed = probe
                    .replace
                    .iter()
                    .map(|(c, _)| c.partition().clone())
                    .collect();
                Ok((probe, needed))
            })
        })
        .await?;
    let Probe {
        replace,
        drop_incoming,
        mut report,
    } = probe;
    let state = table.snapshot().map_err(|e| delta_error(lake, "read", e))?;
    let renew_every = Duration::from_millis(config.lease_ms / 3);
    let mut renewed = Instant::now();
    let mut actions = Vec::new();
    let mut rewritten = RewriteReport::default();
    for (candidate, keys) in replace {
        if renewed.elapsed() >= renew_every {
            leases.renew(lake).await?;
            renewed = Instant::now();
        }
        let erase = [Erase {
            column: KEY_COLUMN.into(),
            values: keys,
        }];
        let erasure = Erasure {
            rows: &erase,
            text: None,
        };
        let target = Some(config.target_file_bytes);
        let done = rewrite::rewrite(
            lake,
            state,
            vec![candidate],
            erasure,
            target,
            &mut rewritten,
            None,
        )
        .await?;
        actions.extend(done);
    }
    report.rows_upserted = rewritten.rows_erased.saturating_sub(report.rows_deleted);
    report.files_rewritten = rewritten.files_rewritten;
    report.rows_older_than_table = drop_incoming.len() as u64;
    if !drop_incoming.is_empty() {
        kept.retain(|&at| key_of(at).is_none_or(|k| !drop_incoming.contains(k)));
    }
    Ok((actions, report))
}

/// Finds the table rows of `wanted` keys in `state`: statistics, then
/// bloom filters per row group, then a projected read of the row groups
/// left. A deleted key's rows go; an incoming key's table row goes when
/// the incoming row ranks higher, else the incoming row is dropped.
async fn probe_table(
    lake: &Lake,
    state: &DeltaTableState,
    ranks: &Ranks,
    incoming: &FxHashMap<&str, (usize, usize)>,
    deleted_keys: &HashSet<String>,
    wanted: &HashSet<String>,
) -> Result<Probe> {
    let erase = [Erase {
        column: KEY_COLUMN.into(),
        values: wanted.clone(),
    }];
    let mut scan = RewriteReport::default();
    let erasure = Erasure {
        rows: &erase,
        text: None,
    };
    let found = rewrite::candidates(state, erasure, &mut scan);
    let mut report = UpsertReport {
        pruned_by_statistics: scan.pruned_by_statistics,
        ..UpsertReport::default()
    };
    let mut replace = Vec::new();
    let mut drop_incoming = HashSet::new();
    let columns = [
        KEY_COLUMN,
        ranks.order_by.as_str(),
        "_position",
        "_partition",
    ];
    for candidate in found {
        let path = candidate.path().to_string();
        let mut file = TableFile::open(lake, candidate.path().clone(), candidate.size()).await?;
        let row_groups = file.row_groups_may_contain(KEY_COLUMN, wanted).await?;
        if row_groups.is_empty() {
            report.pruned_by_bloom_filter += 1;
            continue;
        }
        report.files_probed += 1;
        report.row_groups_read += row_groups.len() as u64;
        let mut rows = file.projected_rows(&columns, row_groups)?;
        let mut keys_here = HashSet::new();
        while let Some(batch) = rows.next().await? {
            let Some(keys) = batch
                .column_by_name(KEY_COLUMN)
                .and_then(|c| c.as_string_opt::<i32>())
            else {
                break;
            };
            let table_ranks = ranks.convert(&batch, &path)?;
            for row in 0..batch.num_rows() {
                if !keys.is_valid(row) {
                    continue;
                }
                let key = keys.value(row);
                if deleted_keys.contains(key) {
                    report.rows_deleted += 1;
                    keys_here.insert(key.to_string());
                } else if let Some(&(b, r)) = incoming.get(key) {
                    if table_ranks.row(row) > ranks.rank(b, r) {
                        drop_incoming.insert(key.to_string());
                    } else {
                        keys_here.insert(key.to_string());
                    }
                }
            }
        }
        if !keys_here.is_empty() {
            replace.push((candidate, keys_here));
        }
    }
    // A key the table holds a newer version of keeps its table row (there
    // is at most one).
    if !drop_incoming.is_empty() {
        for (_, keys) in &mut replace {
            keys.retain(|k| !drop_incoming.contains(k));
        }
        replace.retain(|(_, keys)| !keys.is_empty());
    }
    Ok(Probe {
        replace,
        drop_incoming,
        report,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Date32Array, Int64Array, StringArray};
    use tributary_config::LakeConfig;
    use tributary_lake::PartitionId;

    use super::*;
    use crate::files::TableFile;
    use crate::partition::{TablePartition, table_partition_columns};

    const DAY1: i32 = 20_787;

    /// Stages rows `(key, version, day, op)` at positions `first..` and
    /// compacts them in one round.
    async fn round(
        config: &CompactConfig,
        lake: &Lake,
        first: u64,
        rows: &[(&str, i64, i32, Option<&str>)],
    ) -> crate::Result<crate::CompactionMetrics> {
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "_key",
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            ),
            (
                "date",
                Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.2))),
            ),
            (
                "v",
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ),
            (
                "_op",
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
            ),
        ];
        let partition = PartitionId::new("test", "p0");
        crate::testing::stage(lake, &partition, first, columns).await;
        crate::compact_until_empty(config, lake).await
    }

    /// Every row of the table as (key, version, date partition), sorted.
    async fn table_rows(lake: &Lake) -> Vec<(String, i64, String)> {
        let table = lake.load_table().await.unwrap().unwrap();
        let state = table.snapshot().unwrap();
        let columns = table_partition_columns(state);
        let mut found = Vec::new();
        for file in state.log_data().iter() {
            let partition = TablePartition::of(&file, &columns);
            let opened = TableFile::open(lake, file.object_store_path(), file.size() as u64)
                .await
                .unwrap();
            let mut rows = opened.rows(partition.clone()).unwrap();
            while let Some(batch) = rows.next().await.unwrap() {
                let keys = batch.column_by_name("_key").unwrap().as_string::<i32>();
                let versions = batch
                    .column_by_name("v")
                    .unwrap()
                    .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
                for row in 0..batch.num_rows() {
                    found.push((
                        keys.value(row).to_string(),
                        versions.value(row),
                        partition.path(),
                    ));
                }
            }
        }
        found.sort();
        found
    }

    #[tokio::test]
    async fn newer_versions_replace_rows_anywhere_older_ones_are_dropped_tombstones_delete() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(&LakeConfig::new(dir.path().display().to_string())).unwrap();
        let config = CompactConfig {
            upsert: Some(UpsertConfig {
                order_by: "v".into(),
            }),
            sort_columns: Some(Vec::new()),
            ..CompactConfig::default()
        };
        let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        let first: Vec<(&str, i64, i32, Option<&str>)> =
            keys.iter().map(|k| (k.as_str(), 1, DAY1, None)).collect();
        round(&config, &lake, 0, &first).await.unwrap();

        // k0 moves to the next day with a newer version, k1 is re-sent
        // older, k2 is deleted, k3 re-sent with the same version (the later
        // one wins the tie), k10 is new.
        let metrics = round(
            &config,
            &lake,
            10,
            &[
                ("k0", 2, DAY1 + 1, None),
                ("k1", 0, DAY1, None),
                ("k2", 0, DAY1, Some("delete")),
                ("k3", 1, DAY1, None),
                ("k10", 1, DAY1, None),
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            (
                metrics.rows_upserted,
                metrics.rows_older_than_table,
                metrics.rows_deleted_from_table,
                metrics.rows_written,
                metrics.table_files_rewritten,
            ),
            (2, 1, 1, 3, 1)
        );
        let day1 = "date=2026-11-30".to_string();
        let mut expected: Vec<(String, i64, String)> = (1..11)
            .filter(|&i| i != 2)
            .map(|i| (format!("k{i}"), 1, day1.clone()))
            .collect();
        expected.push(("k0".into(), 2, "date=2026-12-01".into()));
        expected.sort();
        assert_eq!(table_rows(&lake).await, expected);

        // The table records its mode: an insert-only configuration is refused.
        let insert = CompactConfig {
            upsert: None,
            ..config.clone()
        };
        let error = round(&insert, &lake, 15, &[("k4", 5, DAY1, None)])
            .await
            .unwrap_err();
        assert!(matches!(error, Error::UpsertMode { .. }), "{error}");
        assert!(
            error.to_string().contains("upsert mode ordered by `v`"),
            "{error}"
        );
    }
}
