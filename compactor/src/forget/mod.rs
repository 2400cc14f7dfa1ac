//! `tributary forget`: erases every row of given subjects (values of
//! `lake.subject_columns`) or record keys, everywhere under the table, and
//! proves it.
//!
//! ```text
//! record the request (_tributary/forget/<id>.json: hashes only)
//!   ─► table: prune files by statistics and bloom filters, rewrite those that
//!      hold a match (under partition leases), one Delta commit
//!   ─► staged row files and dead letters that hold a match: rewritten
//!   ─► replaced table files deleted once the grace period has passed
//!   ─► checkpoint, then every older log entry deleted (their statistics
//!      may hold the identifiers)
//!   ─► verification: every object under the table read
//!   ─► data files the table no longer references that hold a match
//!      (removed by other operations, or a crashed writer's) deleted
//!      after the grace period; the run is complete when no match is left
//! ```
//!
//! The request object holds SHA-256 hashes of the identifiers, never the
//! identifiers, so that it is not itself a copy; a compactor that finds an
//! unfinished request drops matching staged rows by hash. A complete request
//! moves to `<id>.done.json`, beside its report `<id>.report.json`. Every step can be
//! repeated, so a killed run is finished by running it again with the same
//! request id (and the same identifiers).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::arrow::array::{AsArray, BinaryArray, BooleanArray};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::Action;
use deltalake::protocol::DeltaOperation;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;
use tributary_config::CompactConfig;
use tributary_lake::Lake;
use tributary_lake::layout::TRIBUTARY_DIR;
use tributary_lake::rowfile::{self, Codec, RowFile};

pub mod audit;
mod matcher;
pub mod requests;
mod verify;

pub use audit::{AuditReport, audit};
pub use matcher::{Matcher, REDACTED, Residue};

pub use requests::StoredRequest;
use requests::{finish_request, read_object, record_request, report_path, save_request};
use verify::{delete_unreferenced_matches, verify};

use crate::error::{Error, Result};
use crate::events::Operation;
use crate::files::matching_rows;
use crate::rewrite::{self, Erase, Erasure, FreeText, PartitionLeases, RewriteReport};
use crate::table::{Change, KEY_COLUMN, commit, delta_error, maintain_log};

/// What to erase.
#[derive(Debug, Clone, Default)]
pub struct ForgetInput {
    /// Values of the subject columns.
    pub subjects: Vec<String>,
    /// Record keys (`_key`).
    pub keys: Vec<String>,
}

/// How to run a request.
#[derive(Debug, Clone)]
pub struct ForgetOptions {
    /// The request id: `[A-Za-z0-9_.-]`, at most 100 characters.
    pub request_id: String,
    /// Report what would change without changing anything.
    pub dry_run: bool,
    /// Replaced table files are deleted this long after the commit that
    /// replaced them, so running readers can finish.
    pub grace: Duration,
}

/// What a run did: printed as JSON and stored beside the request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForgetReport {
    /// The request id.
    pub request_id: String,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Subject ids requested.
    pub subjects_requested: u64,
    /// Record keys requested.
    pub keys_requested: u64,
    /// The table part: files scanned, pruned, read, rewritten, rows erased.
    pub table: RewriteReport,
    /// Staged row files read.
    pub staged_files_scanned: u64,
    /// Staged row files rewritten.
    pub staged_files_rewritten: u64,
    /// Staged rows erased.
    pub staged_rows_erased: u64,
    /// Dead-letter files rewritten.
    pub dead_letter_files_rewritten: u64,
    /// Dead letters whose payload was erased (or whose text was redacted).
    pub dead_letters_erased: u64,
    /// Values of staged rows' redact columns and of dead letters' text
    /// columns in which an identifier was replaced.
    pub row_file_values_redacted: u64,
    /// Objects and columns a phase read that still hold an identifier after
    /// it (a column that is neither a subject nor a redact column: add it to
    /// `lake.redact_columns`, or erase those rows by key). The request is
    /// not complete while there is any.
    pub residue: Vec<Residue>,
    /// Replaced table files deleted.
    pub objects_deleted: u64,
    /// Replaced table files left for the grace period.
    pub objects_pending_delete: u64,
    /// Delta log entries and checkpoints deleted.
    pub log_entries_expired: u64,
    /// The verification pass.
    pub verification: Verification,
    /// Milliseconds per phase.
    pub timings_ms: BTreeMap<String, u64>,
    /// Whether no copy is left anywhere under the table.
    pub complete: bool,
}

/// What the verification pass read and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    /// Objects read.
    pub objects_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Objects that still hold an identifier (paths only). Replaced files in
    /// their grace period show up here until they are deleted.
    pub objects_with_matches: Vec<String>,
    /// The same, with the column that holds it (empty for an object that is
    /// not rows).
    pub residue: Vec<Residue>,
}

/// Checks a request id.
pub fn validate_request_id(id: &str) -> std::result::Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "request id {id:?} must be 1–100 characters of A-Z, a-z, 0-9, `_`, `.`, `-`"
        ))
    }
}

/// Test hook: when this environment variable names a phase (`record`,
/// `table`, `staged_and_dead_letters`, `delete_replaced`, `expire_log`,
/// `verify`, `delete_unreferenced`), a run stops after that phase and waits
/// to be killed.
pub const PAUSE_AFTER_VARIABLE: &str = "TRIBUTARY_FORGET_PAUSE_AFTER";

/// Runs (or resumes) a request.
pub async fn forget(
    config: &CompactConfig,
    lake: &Lake,
    input: &ForgetInput,
    options: &ForgetOptions,
) -> Result<ForgetReport> {
    let matcher = Matcher::new(input.subjects.iter().cloned(), input.keys.iter().cloned())?;
    let mut report = ForgetReport {
        request_id: options.request_id.clone(),
        dry_run: options.dry_run,
        subjects_requested: matcher.subjects.len() as u64,
        keys_requested: matcher.keys.len() as u64,
        ..Default::default()
    };
    let mut phase = Instant::now();
    let pause_after = std::env::var(PAUSE_AFTER_VARIABLE).ok();
    let mut lap = async |report: &mut ForgetReport, name: &str| {
        report
            .timings_ms
            .insert(name.to_string(), phase.elapsed().as_millis() as u64);
        tracing::info!(request = %options.request_id, phase = name, "forget phase done");
        if pause_after.as_deref() == Some(name) {
            // For the crash tests: wait here to be killed.
            eprintln!("forget paused after phase {name}");
            std::future::pending::<()>().await;
        }
        phase = Instant::now();
    };

    let mut request = if options.dry_run {
        None
    } else {
        Some(record_request(lake, &matcher, &options.request_id).await?)
    };
    lap(&mut report, "record").await;

    let erase = erasures(lake, &matcher);
    let text = FreeText {
        matcher: Arc::new(matcher.clone()),
        redact_columns: lake.redact_columns().to_vec(),
    };
    erase_from_table(
        config,
        lake,
        &erase,
        &text,
        options,
        request.as_mut(),
        &mut report,
    )
    .await?;
    report.residue = report.table.residue.clone();
    lap(&mut report, "table").await;

    erase_from_row_files(lake, &matcher, &erase, options.dry_run, &mut report).await?;
    lap(&mut report, "staged_and_dead_letters").await;

    if let Some(request) = &mut request {
        delete_after_grace(lake, request, &mut report).await?;
        save_request(lake, request).await?;
        lap(&mut report, "delete_replaced").await;

        report.log_entries_expired = expire_log(config, lake).await?;
        lap(&mut report, "expire_log").await;
    }

    let (verification, found) = verify(lake, &matcher).await?;
    report.verification = verification;
    lap(&mut report, "verify").await;
    if !options.dry_run {
        delete_unreferenced_matches(lake, found, options.grace, &mut report).await?;
        lap(&mut report, "delete_unreferenced").await;
    }
    report.residue.sort();
    report.residue.dedup();
    report.complete =
        report.verification.objects_with_matches.is_empty() && report.residue.is_empty();

    if let Some(request) = &mut request {
        let body = serde_json::to_vec_pretty(&report).map_err(|e| Error::Forget(e.to_string()))?;
        let path = report_path(&request.id);
        lake.store()
            .put(&path, PutPayload::from(body))
            .await
            .map_err(|e| tributary_lake::Error::store(&path, e))?;
        request.complete = report.complete;
        if request.complete {
            finish_request(lake, request).await?;
        } else {
            save_request(lake, request).await?;
        }
    }
    Ok(report)
}

/// What to erase from table files: each subject column by the subjects,
/// `_key` by the keys.
fn erasures(lake: &Lake, matcher: &Matcher) -> Vec<Erase> {
    let mut erase: Vec<Erase> = lake
        .subject_columns()
        .iter()
        .filter(|_| !matcher.subjects.is_empty())
        .map(|column| Erase {
            column: column.clone(),
            values: matcher.subjects.clone(),
        })
        .collect();
    if !matcher.keys.is_empty() {
        erase.push(Erase {
            column: KEY_COLUMN.into(),
            values: matcher.keys.clone(),
        });
    }
    erase
}

/// Times a table rewrite is planned again after losing a commit race.
const ATTEMPTS: u32 = 5;

/// Rewrites the table files that hold a match, under partition leases, in
/// one commit. The files it replaces are added to the request's pending
/// deletes before the commit, so that a run killed right after the commit
/// still deletes them when it is run again.
async fn erase_from_table(
    config: &CompactConfig,
    lake: &Lake,
    erase: &[Erase],
    text: &FreeText,
    options: &ForgetOptions,
    mut request: Option<&mut StoredRequest>,
    report: &mut ForgetReport,
) -> Result<()> {
    let Some(mut table) = lake.load_table().await? else {
        return Ok(());
    };
    if erase.is_empty() && text.redact_columns.is_empty() {
        return Ok(());
    }
    let mut attempt = 1;
    loop {
        let mut leases = PartitionLeases::default();
        let target = (!options.dry_run).then_some(config.target_file_bytes);
        let result = rewrite::rewrite_under_leases(
            config,
            lake,
            &mut table,
            Erasure {
                rows: erase,
                text: Some(text),
            },
            target,
            &mut leases,
            true,
        )
        .await;
        let (actions, table_report) = match result {
            Ok(done) => done,
            Err(error) => {
                leases.release(lake).await;
                if error.is_commit_conflict() && attempt < ATTEMPTS {
                    tracing::info!(%error, attempt, "forget rewrite lost a lease; planning again");
                    attempt += 1;
                    continue;
                }
                return Err(error);
            }
        };
        report.table = table_report;
        let removed: Vec<String> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove(r) => Some(r.path.clone()),
                _ => None,
            })
            .collect();
        if actions.is_empty() {
            leases.release(lake).await;
            return Ok(());
        }
        if let Some(request) = request.as_deref_mut() {
            request.pending_deletes.extend(removed);
            request.pending_deletes.sort();
            request.pending_deletes.dedup();
            request.delete_after_ms =
                chrono::Utc::now().timestamp_millis() + options.grace.as_millis() as i64;
            save_request(lake, request).await?;
        }
        let operation = DeltaOperation::Delete {
            predicate: Some(format!("forget request {}", options.request_id)),
        };
        let change = Change {
            actions,
            transactions: Vec::new(),
            operation,
            event: Operation::Forget {
                request_id: options.request_id.clone(),
            },
            exclusive: false,
        };
        let committed = commit(config, lake, &table, &mut leases, change).await;
        leases.release(lake).await;
        match committed {
            Ok(_) => return Ok(()),
            Err(error) if error.is_commit_conflict() && attempt < ATTEMPTS => {
                tracing::info!(%error, attempt, "forget commit conflicted; planning again");
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

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

/// Every `.avro` object under `_tributary/<dir>/`.
async fn row_files(lake: &Lake, dir: &str) -> Result<Vec<(Path, u64)>> {
    let prefix = Path::from(format!("{TRIBUTARY_DIR}/{dir}"));
    let objects: Vec<_> = lake
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| tributary_lake::Error::store(&prefix, e))?;
    Ok(objects
        .into_iter()
        .filter(|m| m.location.as_ref().ends_with(".avro"))
        .map(|m| (m.location, m.size))
        .collect())
}

/// Rewrites staged row files without the matching rows and with the redact
/// columns redacted, and dead letters with the payloads that hold an
/// identifier blanked (the entry itself, its position and reason, stay).
async fn erase_from_row_files(
    lake: &Lake,
    matcher: &Matcher,
    erase: &[Erase],
    dry_run: bool,
    report: &mut ForgetReport,
) -> Result<()> {
    for (dir, dead_letters) in [("staging", false), ("dead-letter", true)] {
        for (path, _) in row_files(lake, dir).await? {
            let bytes = match read_object(lake, &path).await {
                Ok(bytes) => bytes,
                // Compacted and deleted since the listing.
                Err(Error::Lake(e)) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            if !dead_letters {
                report.staged_files_scanned += 1;
            }
            let file = RowFile::read(&bytes, path.as_ref())?;
            let erased = erase_rows(
                &file.batch,
                matcher,
                erase,
                lake.redact_columns(),
                dead_letters,
            )
            .map_err(|source| Error::Arrow {
                path: path.to_string(),
                source,
            })?;
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
            let rows = erased.rows;
            if dry_run {
                continue;
            }
            let metadata: Vec<(String, String)> = file
                .metadata
                .iter()
                .filter(|(k, _)| !k.starts_with("avro."))
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            let body = rowfile::write(&rows, Codec::Zstd, metadata)?;
            lake.store()
                .put(&path, PutPayload::from(body))
                .await
                .map_err(|e| tributary_lake::Error::store(&path, e))?;
        }
    }
    Ok(())
}

/// Deletes the request's replaced files once their grace period has passed,
/// except any the table still references (recorded before a commit that
/// then failed).
async fn delete_after_grace(
    lake: &Lake,
    request: &mut StoredRequest,
    report: &mut ForgetReport,
) -> Result<()> {
    if chrono::Utc::now().timestamp_millis() < request.delete_after_ms {
        report.objects_pending_delete = request.pending_deletes.len() as u64;
        return Ok(());
    }
    let active: HashSet<Path> = match lake.load_table().await? {
        Some(table) => table
            .snapshot()
            .map_err(|e| delta_error(lake, "read", e))?
            .log_data()
            .iter()
            .map(|f| f.object_store_path())
            .collect(),
        None => HashSet::new(),
    };
    for file in std::mem::take(&mut request.pending_deletes) {
        let path = Path::from_url_path(&file)
            .map_err(|e| Error::Forget(format!("replaced file {file:?}: {e}")))?;
        if active.contains(&path) {
            continue;
        }
        match lake.store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => report.objects_deleted += 1,
            Err(e) => return Err(tributary_lake::Error::store(&path, e).into()),
        }
    }
    Ok(())
}

/// Writes a checkpoint at the latest version and deletes every log entry and
/// checkpoint before it: their `add` statistics may hold identifiers. Time
/// travel to versions before the erasure ends here, as erasure requires.
async fn expire_log(config: &CompactConfig, lake: &Lake) -> Result<u64> {
    let Some(table) = lake.load_table().await? else {
        return Ok(0);
    };
    let Some(version) = table.version() else {
        return Ok(0);
    };
    let expire_all = CompactConfig {
        log_retention_ms: 0,
        ..config.clone()
    };
    maintain_log(&expire_all, lake, table.log_store().as_ref(), version, true).await
}
