//! Expired rows outside the table: staged row files (rows dated past a
//! rule, rewritten away) and dead letters (by the day their file was
//! written: past the table-wide age the file is deleted; a tenant's, found
//! by its value in the payload, removed from the file).

use deltalake::arrow::array::BooleanArray;
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::record_batch::RecordBatch;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Serialize;
use tributary_lake::Lake;

use super::rules::Cutoffs;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::row_files;

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
    /// Dead-letter files read (those written before some rule's cut-off;
    /// no rule reaches the others).
    pub dead_letter_files_scanned: u64,
    /// Dead-letter files deleted (past the table-wide age, or left empty).
    pub dead_letter_files_deleted: u64,
    /// Dead-letter files rewritten without a tenant's expired letters.
    pub dead_letter_files_rewritten: u64,
    /// Dead letters removed.
    pub dead_letters_expired: u64,
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
/// With `dry_run`, only counts.
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
        let Some(file) = row_files::read(lake, &meta.location).await? else {
            continue;
        };
        report.staged_files_scanned += 1;
        report.bytes_read += meta.size;
        let expired = cutoffs.expired_rows(&file.batch);
        let count = expired.iter().filter(|e| **e).count() as u64;
        if count == 0 {
            continue;
        }
        report.staged_files_rewritten += 1;
        report.staged_rows_expired += count;
        if !dry_run {
            let rows = keep(&file.batch, &expired, &meta.location)?;
            row_files::rewrite(lake, &meta.location, &file, &rows).await?;
        }
    }
    for meta in letters {
        if let Some(p) = progress.as_mut() {
            p.step();
        }
        let written = meta.last_modified.date_naive();
        // Written on or after every cut-off: no rule reaches its letters.
        if cutoffs.latest().is_none_or(|latest| written >= latest) {
            continue;
        }
        let Some(file) = row_files::read(lake, &meta.location).await? else {
            continue;
        };
        report.dead_letter_files_scanned += 1;
        report.bytes_read += meta.size;
        let rows = file.batch.num_rows();
        let expired: Vec<bool> = if cutoffs.letter_expired(written) {
            vec![true; rows]
        } else {
            let payloads = dead_letter_payloads(&file.batch);
            (0..rows)
                .map(|i| {
                    payloads.is_some_and(|p| cutoffs.letter_expired_for_tenant(written, p.value(i)))
                })
                .collect()
        };
        let count = expired.iter().filter(|e| **e).count();
        if count == 0 {
            continue;
        }
        report.dead_letters_expired += count as u64;
        if count == rows {
            report.dead_letter_files_deleted += 1;
            if !dry_run {
                match lake.store().delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(tributary_lake::Error::store(&meta.location, e).into()),
                }
            }
        } else {
            report.dead_letter_files_rewritten += 1;
            if !dry_run {
                let kept = keep(&file.batch, &expired, &meta.location)?;
                row_files::rewrite(lake, &meta.location, &file, &kept).await?;
            }
        }
    }
    Ok(report)
}

/// The `payload` column of a dead-letter file.
fn dead_letter_payloads(
    batch: &RecordBatch,
) -> Option<&deltalake::arrow::array::GenericBinaryArray<i32>> {
    use deltalake::arrow::array::AsArray;
    batch.column_by_name("payload")?.as_binary_opt::<i32>()
}
