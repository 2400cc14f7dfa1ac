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

use bytes::Bytes;
use deltalake::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::Action;
use deltalake::protocol::DeltaOperation;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tributary_config::CompactConfig;
use tributary_lake::Lake;
use tributary_lake::layout::TRIBUTARY_DIR;
use tributary_lake::rowfile::{self, Codec, RowFile};

use crate::error::{Error, Result};
use crate::files::{TableFile, matching_rows};
use crate::optimize::MIN_ORPHAN_AGE;
use crate::partition::TablePartition;
use crate::progress::Progress;
use crate::rewrite::{self, Erase, PartitionLeases, RewriteReport};
use crate::table::{KEY_COLUMN, commit, delta_error, maintain_log};

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

/// The durable request: identifier hashes and progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRequest {
    /// The request id.
    pub id: String,
    /// When it was first recorded, ms since the epoch.
    pub created_at_ms: i64,
    /// SHA-256 (hex) of each subject id.
    pub subject_hashes: Vec<String>,
    /// SHA-256 (hex) of each record key.
    pub key_hashes: Vec<String>,
    /// Replaced table files waiting for the grace period, and when it ends.
    #[serde(default)]
    pub pending_deletes: Vec<String>,
    /// When `pending_deletes` may be deleted, ms since the epoch.
    #[serde(default)]
    pub delete_after_ms: i64,
    /// Whether a verification found no copy left.
    #[serde(default)]
    pub complete: bool,
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
    /// Dead letters whose payload was erased.
    pub dead_letters_erased: u64,
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
}

/// The identifiers of a request, ready to match.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    subjects: HashSet<String>,
    keys: HashSet<String>,
}

impl Matcher {
    /// Whether `text` is an identifier, or JSON text (a Delta log line, the
    /// statistics in a checkpoint) holding one as a string.
    fn text_holds(&self, text: &str) -> bool {
        if self.subjects.contains(text) || self.keys.contains(text) {
            return true;
        }
        let json = text.starts_with('{') || text.starts_with('[');
        json && serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| self.json_holds(&v))
    }

    fn json_holds(&self, value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) => self.text_holds(s),
            serde_json::Value::Array(items) => items.iter().any(|v| self.json_holds(v)),
            serde_json::Value::Object(map) => map
                .iter()
                .any(|(k, v)| self.text_holds(k) || self.json_holds(v)),
            _ => false,
        }
    }

    /// Whether raw bytes (a dead letter's payload, an object that is not
    /// JSON) contain an identifier anywhere.
    fn bytes_hold(&self, bytes: &[u8]) -> bool {
        self.subjects
            .iter()
            .chain(&self.keys)
            .any(|id| !id.is_empty() && bytes.windows(id.len()).any(|w| w == id.as_bytes()))
    }

    /// Whether an object's text holds an identifier: line by line as JSON
    /// when it is JSON (Delta log entries), else as raw bytes.
    fn object_holds(&self, bytes: &[u8]) -> bool {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                text.lines().any(
                    |line| match serde_json::from_str::<serde_json::Value>(line) {
                        Ok(value) => self.json_holds(&value),
                        Err(_) => self.bytes_hold(line.as_bytes()),
                    },
                )
            }
            Err(_) => self.bytes_hold(bytes),
        }
    }
}

/// SHA-256 of an identifier, hex.
pub fn identifier_hash(identifier: &str) -> String {
    let digest = Sha256::digest(identifier.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn request_path(id: &str) -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/forget/{id}.json"))
}

fn done_path(id: &str) -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/forget/{id}.done.json"))
}

fn report_path(id: &str) -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/forget/{id}.report.json"))
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
    let matcher = Matcher {
        subjects: input.subjects.iter().cloned().collect(),
        keys: input.keys.iter().cloned().collect(),
    };
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
    erase_from_table(config, lake, &erase, options, request.as_mut(), &mut report).await?;
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
    report.complete = report.verification.objects_with_matches.is_empty();

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

/// Moves a complete request to `<id>.done.json`, so that compactors, which
/// read every unfinished request each round, no longer read it. Running the
/// same request id again records it anew.
async fn finish_request(lake: &Lake, request: &StoredRequest) -> Result<()> {
    let done = done_path(&request.id);
    let body = serde_json::to_vec_pretty(request).map_err(|e| Error::Forget(e.to_string()))?;
    lake.store()
        .put(&done, PutPayload::from(body))
        .await
        .map_err(|e| tributary_lake::Error::store(&done, e))?;
    let path = request_path(&request.id);
    match lake.store().delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(tributary_lake::Error::store(&path, e).into()),
    }
}

/// Writes the request (hashes only) create-only; an existing request with
/// the same id must have the same identifiers.
async fn record_request(lake: &Lake, matcher: &Matcher, id: &str) -> Result<StoredRequest> {
    let mut subject_hashes: Vec<String> = matcher
        .subjects
        .iter()
        .map(|s| identifier_hash(s))
        .collect();
    let mut key_hashes: Vec<String> = matcher.keys.iter().map(|k| identifier_hash(k)).collect();
    subject_hashes.sort();
    key_hashes.sort();
    let request = StoredRequest {
        id: id.to_string(),
        created_at_ms: chrono::Utc::now().timestamp_millis(),
        subject_hashes,
        key_hashes,
        pending_deletes: Vec::new(),
        delete_after_ms: 0,
        complete: false,
    };
    let path = request_path(id);
    let body = serde_json::to_vec_pretty(&request).map_err(|e| Error::Forget(e.to_string()))?;
    let put = lake
        .store()
        .put_opts(
            &path,
            PutPayload::from(body),
            PutOptions::from(PutMode::Create),
        )
        .await;
    match put {
        Ok(_) => Ok(request),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let existing = load_request(lake, id).await?;
            if existing.subject_hashes != request.subject_hashes
                || existing.key_hashes != request.key_hashes
            {
                return Err(Error::Forget(format!(
                    "request {id} exists with other identifiers; use a new request id"
                )));
            }
            Ok(existing)
        }
        Err(e) => Err(tributary_lake::Error::store(&path, e).into()),
    }
}

async fn load_request(lake: &Lake, id: &str) -> Result<StoredRequest> {
    let path = request_path(id);
    let bytes = read_object(lake, &path).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Forget(format!("request object {path} is not valid: {e}")))
}

async fn save_request(lake: &Lake, request: &StoredRequest) -> Result<()> {
    let path = request_path(&request.id);
    let body = serde_json::to_vec_pretty(request).map_err(|e| Error::Forget(e.to_string()))?;
    lake.store()
        .put(&path, PutPayload::from(body))
        .await
        .map_err(|e| tributary_lake::Error::store(&path, e))?;
    Ok(())
}

async fn read_object(lake: &Lake, path: &Path) -> Result<Bytes> {
    Ok(tributary_lake::read_object(lake.store().as_ref(), path).await?)
}

/// Hashes of the identifiers of every unfinished request: what the compactor
/// drops from staged rows.
pub async fn unfinished_requests(lake: &Lake) -> Result<Option<HashedIdentifiers>> {
    let dir = Path::from(format!("{TRIBUTARY_DIR}/forget"));
    let objects: Vec<_> = lake
        .store()
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| tributary_lake::Error::store(&dir, e))?;
    let mut hashed = HashedIdentifiers::default();
    for meta in objects {
        let name = meta.location.filename().unwrap_or_default();
        let finished = name.ends_with(".report.json") || name.ends_with(".done.json");
        if !name.ends_with(".json") || finished {
            continue;
        }
        let bytes = read_object(lake, &meta.location).await?;
        let request: StoredRequest = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Forget(format!(
                "request object {} is not valid: {e}",
                meta.location
            ))
        })?;
        if !request.complete {
            hashed.subjects.extend(request.subject_hashes);
            hashed.keys.extend(request.key_hashes);
        }
    }
    Ok((!hashed.subjects.is_empty() || !hashed.keys.is_empty()).then_some(hashed))
}

/// SHA-256 hashes of identifiers to drop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashedIdentifiers {
    /// Of subject ids.
    pub subjects: HashSet<String>,
    /// Of record keys.
    pub keys: HashSet<String>,
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
    options: &ForgetOptions,
    mut request: Option<&mut StoredRequest>,
    report: &mut ForgetReport,
) -> Result<()> {
    let Some(mut table) = lake.load_table().await? else {
        return Ok(());
    };
    if erase.is_empty() {
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
            erase,
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
        let committed = commit(
            config,
            lake,
            &table,
            &mut leases,
            actions,
            Vec::new(),
            operation,
        )
        .await;
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

/// `rows` of a staged row file without the rows whose value in an erased
/// column is erased; or, for a dead-letter file, with the payload of those
/// rows and of rows whose payload holds an identifier blanked. Also how many
/// rows changed.
fn erase_rows(
    rows: &RecordBatch,
    matcher: &Matcher,
    erase: &[Erase],
    dead_letters: bool,
) -> std::result::Result<(RecordBatch, u64), ArrowError> {
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
    let Some(payload) = payload else {
        let keep: BooleanArray = matches.iter().map(|m| Some(!m)).collect();
        let changed = keep.false_count() as u64;
        return Ok((filter_record_batch(rows, &keep)?, changed));
    };
    let Some(payloads) = rows.column(payload).as_binary_opt::<i32>() else {
        return Ok((rows.clone(), 0));
    };
    let mut changed = 0;
    let blanked: BinaryArray = payloads
        .iter()
        .zip(&matches)
        .map(|(bytes, matched)| {
            if *matched || bytes.is_some_and(|b| matcher.bytes_hold(b)) {
                changed += 1;
                bytes.map(|_| &b""[..])
            } else {
                bytes
            }
        })
        .collect();
    let mut columns = rows.columns().to_vec();
    columns[payload] = Arc::new(blanked);
    Ok((RecordBatch::try_new(rows.schema(), columns)?, changed))
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

/// Rewrites staged row files without the matching rows, and dead letters
/// with the payloads that hold an identifier blanked (the entry itself, its
/// position and reason, stay).
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
            let (rows, changed) =
                erase_rows(&file.batch, matcher, erase, dead_letters).map_err(|source| {
                    Error::Arrow {
                        path: path.to_string(),
                        source,
                    }
                })?;
            if changed == 0 {
                continue;
            }
            if dead_letters {
                report.dead_letter_files_rewritten += 1;
                report.dead_letters_erased += changed;
            } else {
                report.staged_files_rewritten += 1;
                report.staged_rows_erased += changed;
            }
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
    maintain_log(&expire_all, lake, table.log_store().as_ref(), version).await
}

/// Reads every object under the table and lists those that still hold an
/// identifier: Parquet files (data and checkpoints) value by value, row files
/// value by value and payload bytes, everything else (log JSON, requests,
/// leases) as text.
async fn verify(lake: &Lake, matcher: &Matcher) -> Result<(Verification, Vec<ObjectMeta>)> {
    let objects: Vec<_> = lake
        .store()
        .list(None)
        .try_collect()
        .await
        .map_err(|e| tributary_lake::Error::store(&Path::from(""), e))?;
    // Objects are read concurrently, each on a runtime worker, so decoding
    // uses every core.
    let total = objects.len() as u64;
    let matcher = Arc::new(matcher.clone());
    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
    let mut checked = futures::stream::iter(objects)
        .map(|meta| {
            let (lake, matcher) = (lake.clone(), matcher.clone());
            tokio::spawn(async move {
                let found = object_holds(&lake, &meta, &matcher).await?;
                Ok::<_, Error>(found.map(|found| (meta, found)))
            })
        })
        .buffer_unordered(parallelism);
    let mut verification = Verification::default();
    let mut found_in = Vec::new();
    let mut progress = Progress::new("objects verified", total);
    while let Some(result) = checked.next().await {
        progress.step();
        let Some((meta, found)) = result.map_err(Error::Worker)?? else {
            continue;
        };
        verification.objects_read += 1;
        verification.bytes_read += meta.size;
        if found {
            verification
                .objects_with_matches
                .push(meta.location.to_string());
            found_in.push(meta);
        }
    }
    verification.objects_with_matches.sort();
    Ok((verification, found_in))
}

/// Whether the object holds an identifier; `None` when it is gone.
async fn object_holds(lake: &Lake, meta: &ObjectMeta, matcher: &Matcher) -> Result<Option<bool>> {
    let name = meta.location.as_ref();
    if name.ends_with(".parquet") {
        return parquet_holds(lake, &meta.location, meta.size, matcher)
            .await
            .map(Some);
    }
    let bytes = match read_object(lake, &meta.location).await {
        Ok(bytes) => bytes,
        Err(Error::Lake(e)) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    if name.ends_with(".avro") {
        row_file_holds(&bytes, name, matcher).map(Some)
    } else {
        Ok(Some(matcher.object_holds(&bytes)))
    }
}

/// Deletes data files that hold a match but that the table no longer
/// references: files another operation (optimize, a tombstone delete,
/// another request) removed more than `grace` ago, and files no commit ever
/// referenced (a crashed writer's output) older than [`MIN_ORPHAN_AGE`] —
/// younger ones may be a running writer's output about to be committed.
/// What is left stays in the report's matches.
async fn delete_unreferenced_matches(
    lake: &Lake,
    found: Vec<ObjectMeta>,
    grace: Duration,
    report: &mut ForgetReport,
) -> Result<()> {
    let data_files: Vec<ObjectMeta> = found
        .into_iter()
        .filter(|m| {
            m.location.as_ref().ends_with(".parquet")
                && !m.location.as_ref().starts_with("_delta_log/")
        })
        .collect();
    let Some(table) = lake.load_table().await? else {
        return Ok(());
    };
    if data_files.is_empty() {
        return Ok(());
    }
    let state = table.snapshot().map_err(|e| delta_error(lake, "read", e))?;
    let active: HashSet<Path> = state
        .log_data()
        .iter()
        .map(|f| f.object_store_path())
        .collect();
    let tombstones: Vec<_> = state
        .all_tombstones(table.log_store().as_ref())
        .try_collect()
        .await
        .map_err(|e| delta_error(lake, "read", e))?;
    let removed_at: std::collections::HashMap<Path, i64> = tombstones
        .iter()
        .map(|t| {
            (
                Path::from(t.path().as_ref()),
                t.deletion_timestamp().unwrap_or(0),
            )
        })
        .collect();
    let now = chrono::Utc::now();
    for meta in data_files {
        let path = meta.location;
        if active.contains(&path) {
            continue;
        }
        let deletable = match removed_at.get(&path) {
            Some(at) => at + (grace.as_millis() as i64) <= now.timestamp_millis(),
            None => (now - meta.last_modified)
                .to_std()
                .is_ok_and(|age| age >= MIN_ORPHAN_AGE),
        };
        if !deletable {
            continue;
        }
        match lake.store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(tributary_lake::Error::store(&path, e).into()),
        }
        report.objects_deleted += 1;
        report
            .verification
            .objects_with_matches
            .retain(|name| name != path.as_ref());
    }
    Ok(())
}

fn row_file_holds(bytes: &[u8], name: &str, matcher: &Matcher) -> Result<bool> {
    let file = RowFile::read(bytes, name)?;
    Ok(file.batch.columns().iter().any(|c| array_holds(c, matcher)))
}

async fn parquet_holds(lake: &Lake, path: &Path, size: u64, matcher: &Matcher) -> Result<bool> {
    let file = match TableFile::open(lake, path.clone(), size).await {
        Ok(file) => file,
        Err(Error::Parquet { .. }) if !lake_has(lake, path).await? => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut rows = file.rows(TablePartition::default())?;
    while let Some(batch) = rows.next().await? {
        if batch.columns().iter().any(|c| array_holds(c, matcher)) {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn lake_has(lake: &Lake, path: &Path) -> Result<bool> {
    match lake.store().head(path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(tributary_lake::Error::store(path, e).into()),
    }
}

/// Whether any string or binary value in `array` (at any depth) holds an
/// identifier.
fn array_holds(array: &ArrayRef, matcher: &Matcher) -> bool {
    match array.data_type() {
        DataType::Utf8 => array
            .as_string::<i32>()
            .iter()
            .flatten()
            .any(|s| matcher.text_holds(s)),
        DataType::LargeUtf8 => array
            .as_string::<i64>()
            .iter()
            .flatten()
            .any(|s| matcher.text_holds(s)),
        DataType::Utf8View => array
            .as_string_view()
            .iter()
            .flatten()
            .any(|s| matcher.text_holds(s)),
        DataType::Binary => array
            .as_binary::<i32>()
            .iter()
            .flatten()
            .any(|b| matcher.bytes_hold(b)),
        DataType::LargeBinary => array
            .as_binary::<i64>()
            .iter()
            .flatten()
            .any(|b| matcher.bytes_hold(b)),
        DataType::List(_) => array_holds(array.as_list::<i32>().values(), matcher),
        DataType::LargeList(_) => array_holds(array.as_list::<i64>().values(), matcher),
        DataType::Struct(_) => array
            .as_struct()
            .columns()
            .iter()
            .any(|c| array_holds(c, matcher)),
        DataType::Map(_, _) => {
            let map = array.as_map();
            array_holds(map.keys(), matcher) || array_holds(map.values(), matcher)
        }
        _ => false,
    }
}

/// Whether `value` of a subject column (or of `_key`, with `is_key`) is an
/// identifier of an unfinished request: the compactor drops such rows.
pub fn is_forgotten(value: &str, is_key: bool, hashed: &HashedIdentifiers) -> bool {
    let set = if is_key {
        &hashed.keys
    } else {
        &hashed.subjects
    };
    !set.is_empty() && set.contains(&identifier_hash(value))
}
