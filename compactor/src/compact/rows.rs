//! The row work of a round, pure and unit-tested: converting one row file
//! to the round's columns (watermark, rejected types, `_hour`), and merging
//! the round's rows (dedupe by key, tombstones, erasures) as indices.

use std::collections::HashSet;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, StringArray, new_null_array,
};
use deltalake::arrow::compute::{cast, filter_record_batch};
use deltalake::arrow::datatypes::{Int64Type, SchemaRef};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::json::LineDelimitedWriter;
use deltalake::arrow::record_batch::RecordBatch;
use rustc_hash::FxHashMap;
use tributary_config::HOUR_COLUMN;
use tributary_lake::PartitionId;
use tributary_lake::columns::{arrow_type, column_type, json_text};
use tributary_lake::dead_letter::{DeadLetter, Reason};
use tributary_lake::rowfile::{ColumnType, RowFile};

use crate::error::{Error, Result};
use crate::forget::requests::{HashedIdentifiers, event_times, is_forgotten};
use crate::partition::{hour_column, latest_event_time};
use crate::table::KEY_COLUMN;
use crate::upsert::Ranks;

/// The columns rows are converted to in a round, and how.
pub(crate) struct Target {
    /// The table's columns, then new ones.
    pub(crate) columns: Vec<(String, ColumnType)>,
    /// Them as an Arrow schema.
    pub(crate) schema: SchemaRef,
    /// How many leading columns have a fixed type (they are in the table).
    pub(crate) fixed: usize,
    /// The event-time column `_hour` is computed from.
    pub(crate) event_time: Option<String>,
}

/// What a round keeps of its rows, as (batch, row) indices into its
/// batches: nothing is copied until the rows are written.
pub(crate) struct Merged {
    pub(crate) kept: Vec<(usize, usize)>,
    pub(crate) deleted_keys: HashSet<String>,
    pub(crate) duplicates: u64,
    /// Upsert mode: rows dropped because a row of the round with the same
    /// key ranks higher.
    pub(crate) older: u64,
    pub(crate) tombstones: u64,
    pub(crate) forgotten: u64,
}

/// Keeps, per key, the last row of a round's batches (in partition, then
/// position order); a tombstone (`delete.0` equals `delete.1`) drops the
/// key's earlier rows and is not kept itself. Rows whose key or subject (in
/// the given subject columns) the erasure ledger names are dropped (for a
/// completed request, only rows whose `event_time` column is at or before
/// its time). In upsert mode (`order`), a key's row is the one that ranks
/// highest ([`Ranks`]) since its last tombstone, not the last one.
pub(crate) fn merge_rows(
    batches: &[RecordBatch],
    delete: &(String, String),
    forgotten: Option<&(HashedIdentifiers, Vec<String>)>,
    event_time: Option<&str>,
    order: Option<&Ranks>,
) -> Merged {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut last: FxHashMap<&str, (usize, usize)> =
        FxHashMap::with_capacity_and_hasher(rows, Default::default());
    let mut unkeyed = Vec::new();
    let mut deleted_keys = HashSet::new();
    let (mut duplicates, mut older, mut tombstones, mut dropped) = (0, 0, 0, 0);
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
        let times = forgotten
            .filter(|(hashed, _)| hashed.has_time_limits())
            .and_then(|_| event_times(batch, event_time));
        for row in 0..batch.num_rows() {
            if let Some((hashed, _)) = forgotten
                && erased.iter().any(|(is_key, values)| {
                    let time = times
                        .as_ref()
                        .filter(|t| t.is_valid(row))
                        .map(|t| t.value(row));
                    values.is_valid(row) && is_forgotten(values.value(row), *is_key, time, hashed)
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
            } else if let Some(ranks) = order {
                match last.entry(key) {
                    Entry::Vacant(entry) => {
                        entry.insert((b, row));
                    }
                    Entry::Occupied(mut entry) => {
                        duplicates += 1;
                        let (kb, krow) = *entry.get();
                        if ranks.rank(b, row) > ranks.rank(kb, krow) {
                            entry.insert((b, row));
                        } else {
                            older += 1;
                        }
                    }
                }
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
        older,
        tombstones,
        forgotten: dropped,
    }
}

pub(crate) struct FileMetrics {
    pub(crate) rows_read: u64,
    pub(crate) rows_below_watermark: u64,
    /// The latest event time of the converted rows
    /// ([`latest_event_time`]).
    pub(crate) latest_event_time: Option<i64>,
}

pub(crate) type Converted = (Option<RecordBatch>, FileMetrics, Vec<DeadLetter>);

/// Reads one row file and converts the rows above `watermark` into the
/// target schema; rows holding a value that a table column's (fixed) type
/// does not accept are dead letters instead.
pub(crate) fn convert_file(
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
        latest_event_time: None,
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
    metrics.latest_event_time = latest_event_time(&batch, target.event_time.as_deref());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forget::requests::identifier_digest;
    use deltalake::arrow::array::TimestampMicrosecondArray;
    use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn batch(rows: &[(Option<&str>, Option<&str>, &str)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(KEY_COLUMN, DataType::Utf8, true),
            Field::new("_op", DataType::Utf8, true),
            Field::new("user", DataType::Utf8, true),
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
        let merged = merge_rows(&batches, &delete, None, None, None);
        // The later `a`, both unkeyed rows, `c`; `b` deleted.
        assert_eq!(merged.kept, [(0, 2), (1, 0), (1, 2), (1, 3)]);
        assert_eq!(
            (merged.duplicates, merged.tombstones, merged.forgotten),
            (2, 1, 0)
        );
        assert_eq!(merged.deleted_keys, HashSet::from(["b".to_string()]));

        // An unfinished erasure of subject `gone` and key `a`.
        let hashed = HashedIdentifiers {
            subjects: FxHashMap::from_iter([(identifier_digest("gone"), None)]),
            keys: FxHashMap::from_iter([(identifier_digest("a"), None)]),
        };
        let forgotten = (hashed, vec!["user".to_string()]);
        let merged = merge_rows(&batches, &delete, Some(&forgotten), None, None);
        assert_eq!(merged.kept, [(0, 2), (1, 3)]);
        assert_eq!(merged.forgotten, 3);
    }

    #[test]
    fn a_completed_erasure_drops_only_rows_from_before_its_time() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(KEY_COLUMN, DataType::Utf8, true),
            Field::new("user", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let times =
            TimestampMicrosecondArray::from(vec![Some(50), Some(100), Some(150), None, Some(50)])
                .with_timezone("UTC");
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c", "d", "e"])),
                Arc::new(StringArray::from(vec!["u1", "u1", "u1", "u1", "u2"])),
                Arc::new(times),
            ],
        )
        .unwrap();
        // `u1` erased by a request at time 100; a replay sends its rows again.
        let hashed = HashedIdentifiers {
            subjects: FxHashMap::from_iter([(identifier_digest("u1"), Some(100))]),
            keys: FxHashMap::default(),
        };
        let forgotten = (hashed, vec!["user".to_string()]);
        let delete = ("_op".to_string(), "delete".to_string());
        let merged = merge_rows(&[batch], &delete, Some(&forgotten), Some("ts"), None);
        // Times 50 and 100 and the row of unknown time go; 150 (after the
        // request) and the other subject's row stay.
        assert_eq!(merged.kept, [(0, 2), (0, 4)]);
        assert_eq!(merged.forgotten, 3);
    }

    /// Rows of `(key, _op, version, _position)` from source partition `p`.
    fn versions(partition: &str, rows: &[(&str, Option<&str>, Option<i64>, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(KEY_COLUMN, DataType::Utf8, true),
            Field::new("_op", DataType::Utf8, true),
            Field::new("version", DataType::Int64, true),
            Field::new("_position", DataType::Int64, true),
            Field::new("_partition", DataType::Utf8, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(deltalake::arrow::array::Int64Array::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
            Arc::new(deltalake::arrow::array::Int64Array::from_iter_values(
                rows.iter().map(|r| r.3),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|_| partition),
            )),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn upsert_keeps_the_highest_version_per_key_since_its_last_tombstone() {
        let delete = ("_op".to_string(), "delete".to_string());
        let del = Some("delete");
        let batches = [
            versions(
                "p/0",
                &[
                    ("a", None, Some(2), 1),
                    ("b", None, Some(5), 2),
                    // An older re-send of `a` arriving later: ignored.
                    ("a", None, Some(1), 3),
                    // A tie on the version: the higher position wins.
                    ("b", None, Some(5), 4),
                    // A null version ranks lowest.
                    ("c", None, None, 5),
                ],
            ),
            versions(
                "p/0",
                &[
                    ("c", None, Some(0), 6),
                    ("d", None, Some(9), 7),
                    // Deletes `d`; the older version after it comes back.
                    ("d", del, None, 8),
                    ("d", None, Some(3), 9),
                    ("e", None, Some(1), 10),
                    ("e", del, None, 11),
                ],
            ),
        ];
        let ranks = Ranks::new("version", &batches).unwrap();
        let merged = merge_rows(&batches, &delete, None, None, Some(&ranks));
        assert_eq!(merged.kept, [(0, 0), (0, 3), (1, 0), (1, 3)]);
        assert_eq!(
            (merged.duplicates, merged.older, merged.tombstones),
            (5, 1, 2)
        );
        assert_eq!(
            merged.deleted_keys,
            HashSet::from(["d".to_string(), "e".to_string()])
        );

        // Insert mode on the same rows: the last row per key.
        let merged = merge_rows(&batches, &delete, None, None, None);
        assert_eq!(merged.kept, [(0, 2), (0, 3), (1, 0), (1, 3)]);

        // Arrival order as the order column: the last row wins, as in insert
        // mode.
        let ranks = Ranks::new("_position", &batches).unwrap();
        let merged = merge_rows(&batches, &delete, None, None, Some(&ranks));
        assert_eq!(merged.kept, [(0, 2), (0, 3), (1, 0), (1, 3)]);
    }
}
