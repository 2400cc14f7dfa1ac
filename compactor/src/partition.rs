//! The table's partitioning: `lake.partition_by` for a new table, the
//! table's own partition columns for an existing one, and one partition of
//! it as the unit that leases, optimize and rewrites work on.

use std::collections::BTreeSet;

use deltalake::DeltaTable;
use deltalake::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use deltalake::arrow::compute::{cast, max};
use deltalake::arrow::datatypes::{DataType, Date32Type, TimeUnit, TimestampMicrosecondType};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::LogicalFileView;
use deltalake::table::state::DeltaTableState;
use tributary_config::HOUR_COLUMN;
use tributary_lake::Lake;

use crate::error::{Error, Result};
use crate::table::{PARTITION_COLUMN, delta_error};

/// Microseconds in an hour.
pub(crate) const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// Microseconds in a day.
pub(crate) const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// The partition columns of `table` (its own when it exists; then a
/// different `lake.partition_by` is an error), or of a new table.
pub fn partition_columns(lake: &Lake, table: Option<&DeltaTable>) -> Result<Vec<String>> {
    let configured = lake.partition_columns().to_vec();
    let Some(table) = table else {
        return Ok(configured);
    };
    let state = table.snapshot().map_err(|e| delta_error(lake, "read", e))?;
    let existing = table_partition_columns(state);
    if existing != configured {
        return Err(Error::Partitioning {
            url: lake.table_url().to_string(),
            table: existing,
            configured,
        });
    }
    Ok(existing)
}

/// The partition columns of a table snapshot, in order.
pub fn table_partition_columns(state: &DeltaTableState) -> Vec<String> {
    state.metadata().partition_columns().to_vec()
}

/// One partition of the table: its value (as Delta stores it, text; `None`
/// for null) in each partition column, in the table's column order.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TablePartition(Vec<(String, Option<String>)>);

impl TablePartition {
    /// The partition of a table file, for a table partitioned by `columns`.
    pub fn of(file: &LogicalFileView, columns: &[String]) -> Self {
        let mut values = file.partition_values_map();
        Self(
            columns
                .iter()
                .map(|c| (c.clone(), values.remove(c).flatten()))
                .collect(),
        )
    }

    /// A partition with `values` by column, in the table's column order.
    #[cfg(test)]
    pub(crate) fn new(values: &[(&str, Option<&str>)]) -> Self {
        Self(
            values
                .iter()
                .map(|(c, v)| (c.to_string(), v.map(str::to_string)))
                .collect(),
        )
    }

    /// Its values by column.
    pub fn values(&self) -> &[(String, Option<String>)] {
        &self.0
    }

    /// `date=2026-11-22/_hour=7`, with `__null__` for a null value: its name
    /// in lease names and reports.
    pub fn path(&self) -> String {
        self.0
            .iter()
            .map(|(c, v)| format!("{c}={}", v.as_deref().unwrap_or("__null__")))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Whether `selector` names this partition: its [`path`](Self::path),
    /// or its `date` value (every partition of that day).
    pub fn matches(&self, selector: &str) -> bool {
        self.path() == selector
            || self
                .0
                .iter()
                .any(|(c, v)| c == PARTITION_COLUMN && v.as_deref() == Some(selector))
    }

    /// A SQL predicate selecting the partition, for the Delta log's
    /// operation parameters.
    pub fn predicate(&self) -> String {
        self.0
            .iter()
            .map(|(c, v)| match v {
                Some(v) => format!("{c} = '{}'", v.replace('\'', "''")),
                None => format!("{c} IS NULL"),
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }
}

/// The `_hour` column of `batch`: the UTC hour (0–23) of each row's event
/// time in `event_time` (a timestamp column, or RFC 3339 text in a table
/// that predates typed columns); null where it is null or absent.
pub fn hour_column(batch: &RecordBatch, event_time: Option<&str>) -> Result<ArrayRef, ArrowError> {
    let rows = batch.num_rows();
    let Some(times) = event_time.and_then(|name| batch.column_by_name(name)) else {
        return Ok(std::sync::Arc::new(Int64Array::new_null(rows)));
    };
    let micros = cast(
        times,
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    )?;
    let micros = micros.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
    let hours: Int64Array = micros
        .iter()
        .map(|t| t.map(|t| t.div_euclid(MICROS_PER_HOUR).rem_euclid(24)))
        .collect();
    Ok(std::sync::Arc::new(hours))
}

/// The latest event time of `batch`'s rows, in microseconds since the Unix
/// epoch: the greatest value of the `event_time` column, or, where that
/// column is missing or holds no timestamp, midnight (UTC) of the greatest
/// `date` (a lower bound). `None` when no row has either.
pub fn latest_event_time(batch: &RecordBatch, event_time: Option<&str>) -> Option<i64> {
    let timestamp = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let from_column = event_time
        .and_then(|name| batch.column_by_name(name))
        .and_then(|times| cast(times, &timestamp).ok())
        .and_then(|micros| max(micros.as_primitive::<TimestampMicrosecondType>()));
    from_column.or_else(|| {
        let dates = batch.column_by_name(PARTITION_COLUMN)?;
        let days = max(dates.as_primitive_opt::<Date32Type>()?)?;
        Some(i64::from(days) * MICROS_PER_DAY)
    })
}

/// Fails when a round's rows give an extra partition column (not `date` or
/// `_hour`) more than `limit` distinct values: partitioning by a
/// high-cardinality column would make a table of tiny files.
pub fn check_cardinality(
    batches: &[RecordBatch],
    kept: &[(usize, usize)],
    columns: &[String],
    limit: usize,
) -> Result<()> {
    for column in columns
        .iter()
        .filter(|c| *c != PARTITION_COLUMN && *c != HOUR_COLUMN)
    {
        let texts: Vec<Option<ArrayRef>> = batches
            .iter()
            .map(|b| {
                b.column_by_name(column)
                    .map(|c| cast(c, &DataType::Utf8))
                    .transpose()
            })
            .collect::<Result<_, ArrowError>>()
            .map_err(|source| Error::Arrow {
                path: format!("<partition column {column}>"),
                source,
            })?;
        let mut values = BTreeSet::new();
        for &(b, row) in kept {
            let value = texts[b]
                .as_ref()
                .filter(|t| t.is_valid(row))
                .map(|t| t.as_string::<i32>().value(row));
            values.insert(value);
            if values.len() > limit {
                return Err(Error::PartitionCardinality {
                    column: column.clone(),
                    limit,
                });
            }
        }
    }
    Ok(())
}
