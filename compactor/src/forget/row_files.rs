//! The forget pass over row files: staged rows of the identifiers removed,
//! redact columns redacted, dead-letter payloads that hold one blanked.

use std::sync::Arc;

use deltalake::arrow::array::{AsArray, BinaryArray, BooleanArray};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use tributary_lake::Lake;

use super::{ForgetReport, Matcher, Residue};
use crate::error::{Error, Result};
use crate::files::matching_rows;
use crate::rewrite::{self, Erase};
use crate::row_files::{self, Edit, Updated};

/// What [`erase_rows`] left of a row file.
struct ErasedRows {
    rows: RecordBatch,
    /// Staged rows removed, or dead letters whose payload was blanked.
    erased: u64,
    /// Values in which an identifier was replaced.
    redacted: u64,
    /// Columns that still hold an identifier.
    residue: Vec<String>,
}

/// `rows` of a staged row file without the rows whose value in an erased
/// column is erased and with every identifier in the redact columns
/// replaced; or, for a dead-letter file, with the payload of those rows and
/// of rows whose payload holds an identifier blanked, and every identifier
/// in its text columns (reason, error) replaced.
///
/// A dead letter's payload is erased whole rather than redacted: it is the
/// raw message, which failed to decode, so nothing says whose record it is
/// (a payload naming the subject may be the subject's own record, all of it
/// their data), and its encoding (Avro or Protobuf length prefixes,
/// compressed frames) is not text that can be edited in place.
fn erase_rows(
    rows: &RecordBatch,
    matcher: &Matcher,
    erase: &[Erase],
    redact_columns: &[String],
    dead_letters: bool,
) -> std::result::Result<ErasedRows, ArrowError> {
    let mut matches = vec![false; rows.num_rows()];
    for e in erase {
        if let Some(matching) = matching_rows(rows, &e.column, &e.values) {
            for (m, hit) in matches.iter_mut().zip(matching) {
                *m |= hit;
            }
        }
    }
    let payload = rows
        .schema()
        .index_of("payload")
        .ok()
        .filter(|_| dead_letters);
    let (rows, erased, text_columns) = match payload {
        None => {
            let keep: BooleanArray = matches.iter().map(|m| Some(!m)).collect();
            let erased = keep.false_count() as u64;
            (
                filter_record_batch(rows, &keep)?,
                erased,
                redact_columns.to_vec(),
            )
        }
        Some(payload) => {
            let text_columns: Vec<String> = rows
                .schema()
                .fields()
                .iter()
                .filter(|f| f.data_type() == &DataType::Utf8)
                .map(|f| f.name().clone())
                .collect();
            let Some(payloads) = rows.column(payload).as_binary_opt::<i32>() else {
                return Ok(ErasedRows {
                    residue: matcher.columns_holding(rows, &[]),
                    rows: rows.clone(),
                    erased: 0,
                    redacted: 0,
                });
            };
            let mut erased = 0;
            let blanked: BinaryArray = payloads
                .iter()
                .zip(&matches)
                .map(|(bytes, matched)| {
                    if *matched || bytes.is_some_and(|b| matcher.bytes_hold(b)) {
                        erased += 1;
                        bytes.map(|_| &b""[..])
                    } else {
                        bytes
                    }
                })
                .collect();
            let mut columns = rows.columns().to_vec();
            columns[payload] = Arc::new(blanked);
            let rows = RecordBatch::try_new(rows.schema(), columns)?;
            (rows, erased, text_columns)
        }
    };
    let (rows, redacted) = rewrite::redact(&rows, matcher, &text_columns)?;
    Ok(ErasedRows {
        residue: matcher.columns_holding(&rows, &[]),
        rows,
        erased,
        redacted,
    })
}

/// Rewrites staged row files without the matching rows and with the redact
/// columns redacted, and dead letters with the payloads that hold an
/// identifier blanked (the entry itself, its position and reason, stay).
/// Each rewrite is conditional on the version it was computed from
/// ([`row_files::update`]): a concurrent retention run, replay or compaction
/// cannot have its change undone, nor undo this one.
pub(super) async fn erase_from_row_files(
    lake: &Lake,
    matcher: &Matcher,
    erase: &[Erase],
    dry_run: bool,
    report: &mut ForgetReport,
) -> Result<()> {
    for (dir, dead_letters) in [("staging", false), ("dead-letter", true)] {
        for meta in row_files::list(lake, dir).await? {
            let path = meta.location;
            let updated = row_files::update(lake, &path, dry_run, |read| {
                let erased = erase_rows(
                    &read.file.batch,
                    matcher,
                    erase,
                    lake.redact_columns(),
                    dead_letters,
                )
                .map_err(|source| Error::Arrow {
                    path: path.to_string(),
                    source,
                })?;
                let edit = if erased.erased == 0 && erased.redacted == 0 {
                    Edit::Keep
                } else {
                    Edit::Write(erased.rows.clone())
                };
                Ok((edit, erased))
            })
            .await?;
            let erased = match updated {
                Updated::Edited(erased) => erased,
                Updated::Missing => continue,
                Updated::Gone => {
                    report.row_files_gone += 1;
                    continue;
                }
            };
            if !dead_letters {
                report.staged_files_scanned += 1;
            }
            report
                .residue
                .extend(erased.residue.iter().map(|column| Residue {
                    object: path.to_string(),
                    column: column.clone(),
                }));
            if erased.erased == 0 && erased.redacted == 0 {
                continue;
            }
            report.row_file_values_redacted += erased.redacted;
            if dead_letters {
                report.dead_letter_files_rewritten += 1;
                report.dead_letters_erased += erased.erased;
            } else {
                report.staged_files_rewritten += 1;
                report.staged_rows_erased += erased.erased;
            }
        }
    }
    Ok(())
}
