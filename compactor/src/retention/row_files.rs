//! Expired rows outside the table: staged row files (rows dated past a
//! rule, rewritten away) and dead letters (by the day ingest first wrote
//! each, its `written_at`, which rewrites keep: past the table-wide age a
//! letter is removed, and so is a tenant's, found by its value in the
//! payload; a file left without letters is deleted).

use chrono::NaiveDate;
use deltalake::arrow::array::BooleanArray;
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::record_batch::RecordBatch;
use object_store::path::Path;
use serde::Serialize;
use tributary_lake::Lake;

use super::rules::Cutoffs;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::row_files::{self, Edit, Updated};

/// What the row-file part did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RowFileExpiry {
    /// Staged row files read.
    pub staged_files_scanned: u64,
    /// Staged row files rewritten without their expired rows (a file left
    /// without rows stays, empty, as the position chain's marker).
    pub staged_files_rewritten: u64,
    /// Staged rows removed.
    pub staged_rows_expired: u64,
    /// Dead-letter files read (every one, when there is any rule).
    pub dead_letter_files_scanned: u64,
    /// Dead-letter files deleted (past the table-wide age, or left empty).
    pub dead_letter_files_deleted: u64,
    /// Dead-letter files rewritten without a tenant's expired letters.
    pub dead_letter_files_rewritten: u64,
    /// Dead letters removed.
    pub dead_letters_expired: u64,
    /// Row files deleted by another process (a compaction, a dead-letter
    /// replay) between this run's read and its rewrite: left deleted, not
    /// recreated.
    pub row_files_gone: u64,
    /// Bytes of the row files read.
    pub bytes_read: u64,
}

/// `rows` without those `expired` marks.
fn keep(rows: &RecordBatch, expired: &[bool], path: &Path) -> Result<RecordBatch> {
    let keep: BooleanArray = expired.iter().map(|e| Some(!e)).collect();
    filter_record_batch(rows, &keep).map_err(|source| Error::Arrow {
        path: path.to_string(),
        source,
    })
}

/// Removes expired rows from staged row files and expired dead letters.
/// With `dry_run`, only counts. Each rewrite is conditional on the version
/// it was computed from ([`row_files::update`]), so a concurrent forget,
/// replay or compaction is neither undone nor undoes it.
pub(crate) async fn expire_row_files(
    lake: &Lake,
    cutoffs: &Cutoffs,
    dry_run: bool,
    show_progress: bool,
) -> Result<RowFileExpiry> {
    let mut report = RowFileExpiry::default();
    let staged = row_files::list(lake, "staging").await?;
    let letters = row_files::list(lake, "dead-letter").await?;
    let mut progress = show_progress
        .then(|| Progress::new("row files checked", (staged.len() + letters.len()) as u64));
    for meta in staged {
        if let Some(p) = progress.as_mut() {
            p.step();
        }
        let path = &meta.location;
        let updated = row_files::update(lake, path, dry_run, |read| {
            let expired = cutoffs.expired_rows(&read.file.batch);
            let count = expired.iter().filter(|e| **e).count() as u64;
            let edit = if count == 0 {
                Edit::Keep
            } else {
                Edit::Write(keep(&read.file.batch, &expired, path)?)
            };
            Ok((edit, (count, read.meta.size)))
        })
        .await?;
        let (count, size) = match updated {
            Updated::Edited(figures) => figures,
            Updated::Missing => continue,
            Updated::Gone => {
                report.row_files_gone += 1;
                continue;
            }
        };
        report.staged_files_scanned += 1;
        report.bytes_read += size;
        if count > 0 {
            report.staged_files_rewritten += 1;
            report.staged_rows_expired += count;
        }
    }
    for meta in letters {
        if let Some(p) = progress.as_mut() {
            p.step();
        }
        // No rule at all: nothing to read. Otherwise every file is read:
        // a file rewritten since (by forget, retention or a replay's
        // remainder) is younger than its letters.
        if cutoffs.latest().is_none() {
            continue;
        }
        let path = &meta.location;
        let updated = row_files::update(lake, path, dry_run, |read| {
            let batch = &read.file.batch;
            let written = written_days(batch, read.meta.last_modified.date_naive());
            let payloads = dead_letter_payloads(batch);
            let expired: Vec<bool> = written
                .iter()
                .enumerate()
                .map(|(i, &written)| {
                    cutoffs.letter_expired(written)
                        || payloads
                            .is_some_and(|p| cutoffs.letter_expired_for_tenant(written, p.value(i)))
                })
                .collect();
            let count = expired.iter().filter(|e| **e).count();
            let edit = if count == 0 {
                Edit::Keep
            } else if count == expired.len() {
                Edit::Delete
            } else {
                Edit::Write(keep(batch, &expired, path)?)
            };
            let deleted = matches!(edit, Edit::Delete);
            Ok((edit, (count as u64, deleted, read.meta.size)))
        })
        .await?;
        let (count, deleted, size) = match updated {
            Updated::Edited(figures) => figures,
            Updated::Missing => continue,
            Updated::Gone => {
                report.row_files_gone += 1;
                continue;
            }
        };
        report.dead_letter_files_scanned += 1;
        report.bytes_read += size;
        if count == 0 {
            continue;
        }
        report.dead_letters_expired += count;
        if deleted {
            report.dead_letter_files_deleted += 1;
        } else {
            report.dead_letter_files_rewritten += 1;
        }
    }
    Ok(report)
}

/// The day each letter of a dead-letter file was first written: its
/// `written_at`, else (files from before that column, and the compactor's
/// files of rejected rows) `file_day`, the object's write time.
fn written_days(batch: &RecordBatch, file_day: NaiveDate) -> Vec<NaiveDate> {
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::Int64Type;
    let written = batch
        .column_by_name("written_at")
        .and_then(|c| c.as_primitive_opt::<Int64Type>());
    (0..batch.num_rows())
        .map(|i| {
            written
                .filter(|w| !w.is_null(i))
                .and_then(|w| chrono::DateTime::from_timestamp_millis(w.value(i)))
                .map_or(file_day, |at| at.date_naive())
        })
        .collect()
}

/// The `payload` column of a dead-letter file.
fn dead_letter_payloads(
    batch: &RecordBatch,
) -> Option<&deltalake::arrow::array::GenericBinaryArray<i32>> {
    use deltalake::arrow::array::AsArray;
    batch.column_by_name("payload")?.as_binary_opt::<i32>()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{ArrayRef, Int64Array};

    use super::*;

    #[test]
    fn a_letter_is_as_old_as_its_written_at_else_as_its_file() {
        let day = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
        let ms = day("2026-01-02")
            .and_hms_opt(23, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        let written = Arc::new(Int64Array::from(vec![Some(ms), None])) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("written_at", written)]).unwrap();
        assert_eq!(
            written_days(&batch, day("2026-11-30")),
            [day("2026-01-02"), day("2026-11-30")]
        );
        // A file from before the column: the file's day for every letter.
        let old = RecordBatch::try_from_iter([(
            "_position",
            Arc::new(Int64Array::from(vec![1])) as ArrayRef,
        )])
        .unwrap();
        assert_eq!(written_days(&old, day("2026-11-30")), [day("2026-11-30")]);
    }
}
