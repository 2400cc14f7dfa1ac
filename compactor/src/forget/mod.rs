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
//!   ─► verification: every object under the table read, except table
//!      files the planning proved clean (verify.rs)
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
//! request id (and the same identifiers). Several requests run in one pass
//! ([`forget_batch`], `forget --inbox`): one planning, rewrite, staged-row
//! pass and verification for all, a stored request, report and done file
//! each.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::kernel::Action;
use deltalake::protocol::DeltaOperation;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;
use tributary_config::CompactConfig;
use tributary_lake::Lake;

pub mod audit;
mod matcher;
mod phases;
pub mod requests;
mod row_files;
mod verify;

pub use audit::{AuditReport, audit};
pub use matcher::{Matcher, REDACTED, Residue};
use phases::Phases;
pub use requests::StoredRequest;
use requests::{encode, finish_request, record_request, report_path, save_request};
use row_files::erase_from_row_files;
use verify::{Planned, delete_unreferenced_matches, verify};

use crate::error::{Error, Result};
use crate::events::Operation;
use crate::leases::PartitionLeases;
use crate::rewrite::{self, Erase, Erasure, FreeText, Pruned, RewriteReport};
use crate::table::{Change, KEY_COLUMN, commit, expire_log, referenced_files};

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
    /// Staged row files and dead-letter files deleted by another process
    /// (a compaction, a replay, retention) between this run's read and its
    /// rewrite: left deleted, not recreated.
    pub row_files_gone: u64,
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
    /// The other requests that ran in the same pass (`--inbox`): the
    /// table, staged-row, log and verification figures are the pass's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub batched_with: Vec<String>,
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
    /// Table files not read: the planning's statistics proved they hold no
    /// identifier in the subject and key columns.
    pub proven_clean_by_statistics: u64,
    /// Table files not read: the planning's bloom filters proved it.
    pub proven_clean_by_bloom_filter: u64,
    /// Bytes of the files proven clean.
    pub bytes_proven_clean: u64,
    /// Objects that still hold an identifier (paths only). Replaced files in
    /// their grace period show up here until they are deleted.
    pub objects_with_matches: Vec<String>,
    /// The same, with the column that holds it (empty for an object that is
    /// not rows).
    pub residue: Vec<Residue>,
}

impl Verification {
    /// Counts a table file proven clean by `reason` instead of read.
    fn count_proven_clean(&mut self, reason: Pruned, bytes: u64) {
        match reason {
            Pruned::Statistics => self.proven_clean_by_statistics += 1,
            Pruned::BloomFilter => self.proven_clean_by_bloom_filter += 1,
        }
        self.bytes_proven_clean += bytes;
    }
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

/// One request of a batch ([`forget_batch`]).
#[derive(Debug, Clone)]
pub struct ForgetRequest {
    /// The request id: `[A-Za-z0-9_.-]`, at most 100 characters.
    pub id: String,
    /// What to erase.
    pub input: ForgetInput,
}

/// Runs (or resumes) a request.
pub async fn forget(
    config: &CompactConfig,
    lake: &Lake,
    input: &ForgetInput,
    options: &ForgetOptions,
) -> Result<ForgetReport> {
    let request = ForgetRequest {
        id: options.request_id.clone(),
        input: input.clone(),
    };
    let batch = forget_batch(config, lake, &[request], options.dry_run, options.grace).await?;
    match batch.into_iter().next() {
        Some((_, report)) => report,
        None => Err(Error::NoReport {
            request_id: options.request_id.clone(),
        }),
    }
}

/// Runs (or resumes) several requests in one pass: each is recorded on its
/// own, then one planning, one table rewrite (one commit), one pass over
/// staged rows and dead letters, one log expiry and one verification serve
/// them all; each gets its own report, stored beside its request, and is
/// complete once no object holds one of its identifiers. A request that
/// cannot be recorded (its id exists with other identifiers) fails alone
/// and is left out of the pass; an error of the pass fails the call.
/// Returns each request's id and outcome, in order.
pub async fn forget_batch(
    config: &CompactConfig,
    lake: &Lake,
    requests: &[ForgetRequest],
    dry_run: bool,
    grace: Duration,
) -> Result<Vec<(String, Result<ForgetReport>)>> {
    let mut phases = Phases::new();
    let mut outcomes = Vec::new();
    let mut members = Vec::new();
    for request in requests {
        let matcher = match matcher_of(&request.input) {
            Ok(matcher) => matcher,
            Err(error) => {
                outcomes.push((request.id.clone(), Err(error)));
                continue;
            }
        };
        let stored = if dry_run {
            None
        } else {
            match record_request(lake, &matcher, &request.id).await {
                Ok(stored) => Some(stored),
                Err(error) => {
                    outcomes.push((request.id.clone(), Err(error)));
                    continue;
                }
            }
        };
        let report = ForgetReport {
            request_id: request.id.clone(),
            dry_run,
            subjects_requested: matcher.subjects.len() as u64,
            keys_requested: matcher.keys.len() as u64,
            ..Default::default()
        };
        members.push(Member {
            matcher,
            stored,
            report,
        });
    }
    if members.is_empty() {
        return Ok(outcomes);
    }
    let ids: Vec<String> = members
        .iter()
        .map(|m| m.report.request_id.clone())
        .collect();
    // The batch's name in the Delta commit and its event: the ids, which
    // hold no comma.
    let options = ForgetOptions {
        request_id: ids.join(","),
        dry_run,
        grace,
    };
    phases.label = options.request_id.clone();
    let matcher = matcher_of(&ForgetInput {
        subjects: requests_of(&members, |m| &m.subjects),
        keys: requests_of(&members, |m| &m.keys),
    })?;
    // Pass-wide figures, copied into every request's report.
    let mut pass = ForgetReport {
        dry_run,
        ..Default::default()
    };
    phases.end("record", "record", None).await;

    let erase = erasures(lake, &matcher);
    let text = FreeText {
        matcher: Arc::new(matcher.clone()),
        redact_columns: lake.redact_columns().to_vec(),
    };
    let rewrite_time = erase_from_table(
        config,
        lake,
        &erase,
        &text,
        &options,
        &mut members,
        &mut pass.table,
    )
    .await?;
    pass.residue = pass.table.residue.clone();
    // Planning: the snapshot, statistics, bloom filters, leases; rewrite:
    // reading and writing the files left, and the commit.
    phases
        .end("table", "planning", Some(("rewrite", rewrite_time)))
        .await;

    erase_from_row_files(lake, &matcher, &erase, dry_run, &mut pass).await?;
    phases.end("staged_and_dead_letters", "staged", None).await;

    if !dry_run {
        delete_after_grace(lake, &mut members).await?;
        phases.end("delete_replaced", "delete_replaced", None).await;
        pass.log_entries_expired = expire_log(config, lake).await?;
        phases.end("expire_log", "log", None).await;
    }

    let planned: Planned = pass.table.pruned.iter().cloned().collect();
    // With several requests, verification also tells, in the same read of
    // each object, which request's identifiers it holds.
    let matchers: Vec<Matcher> = if members.len() > 1 {
        members.iter().map(|m| m.matcher.clone()).collect()
    } else {
        Vec::new()
    };
    let (verification, found) = verify(lake, &matcher, &matchers, &planned).await?;
    pass.verification = verification;
    // Which request's identifiers each object holds: with one request, its.
    // An object no request claims counts for every request: a report never
    // says complete while an object it read held an identifier.
    let mut holding: Vec<HashSet<String>> = vec![HashSet::new(); members.len()];
    for found in &found {
        let claimed: Vec<bool> = if members.len() == 1 {
            vec![true]
        } else {
            found.held_by.clone()
        };
        let any = claimed.contains(&true);
        for (i, held) in holding.iter_mut().enumerate() {
            if !any || claimed.get(i).copied().unwrap_or(false) {
                held.insert(found.meta.location.to_string());
            }
        }
    }
    phases.end("verify", "verification", None).await;
    if !dry_run {
        let deleted =
            delete_unreferenced_matches(lake, found.into_iter().map(|f| f.meta), grace).await?;
        for (member, held) in members.iter_mut().zip(&mut holding) {
            for path in &deleted {
                if held.remove(path) {
                    member.report.objects_deleted += 1;
                }
            }
        }
        phases
            .end("delete_unreferenced", "delete_unreferenced", None)
            .await;
    }

    // What the table rewrite and the staged-row pass left: verification
    // reads each of those objects again (rewritten files and row files are
    // never proven clean) and attributes what it finds to requests, so a
    // request's residue is the part in objects still holding its own
    // identifiers, and one request's residue never holds back another.
    pass.residue.sort();
    pass.residue.dedup();
    for (member, held) in members.into_iter().zip(holding) {
        let own = member.report;
        let id = own.request_id.clone();
        let mut objects_with_matches: Vec<String> = held.into_iter().collect();
        objects_with_matches.sort();
        let its = |residue: &[Residue]| -> Vec<Residue> {
            residue
                .iter()
                .filter(|r| objects_with_matches.contains(&r.object))
                .cloned()
                .collect()
        };
        let residue = its(&pass.residue);
        let verification_residue = its(&pass.verification.residue);
        // The request's own figures; the rest are the pass's.
        let report = ForgetReport {
            request_id: own.request_id,
            subjects_requested: own.subjects_requested,
            keys_requested: own.keys_requested,
            objects_deleted: own.objects_deleted,
            objects_pending_delete: own.objects_pending_delete,
            batched_with: ids.iter().filter(|other| **other != id).cloned().collect(),
            complete: objects_with_matches.is_empty(),
            residue,
            verification: Verification {
                objects_with_matches,
                residue: verification_residue,
                ..pass.verification.clone()
            },
            timings_ms: phases.timings_ms.clone(),
            ..pass.clone()
        };
        let outcome = match member.stored {
            Some(mut stored) => store_report(lake, &mut stored, &report)
                .await
                .map(|()| report),
            None => Ok(report),
        };
        outcomes.push((id, outcome));
    }
    let order: HashMap<&str, usize> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    outcomes.sort_by_key(|(id, _)| order.get(id.as_str()).copied());
    Ok(outcomes)
}

/// A request of a running batch.
struct Member {
    matcher: Matcher,
    /// The recorded request (none in a dry run).
    stored: Option<StoredRequest>,
    /// Its own part of the report.
    report: ForgetReport,
}

/// The identifiers of every member, once each.
fn requests_of(members: &[Member], of: impl Fn(&Matcher) -> &HashSet<String>) -> Vec<String> {
    let all: HashSet<&String> = members.iter().flat_map(|m| of(&m.matcher)).collect();
    all.into_iter().cloned().collect()
}

/// The matcher of a request's identifiers.
fn matcher_of(input: &ForgetInput) -> Result<Matcher> {
    Matcher::new(input.subjects.iter().cloned(), input.keys.iter().cloned())
}

/// Stores a report beside its request, then marks the request complete
/// (moving it to `<id>.done.json`) or saves its progress.
async fn store_report(
    lake: &Lake,
    request: &mut StoredRequest,
    report: &ForgetReport,
) -> Result<()> {
    let path = report_path(&request.id);
    let body = encode(report, &path)?;
    lake.store()
        .put(&path, PutPayload::from(body))
        .await
        .map_err(|e| tributary_lake::Error::store(&path, e))?;
    request.complete = report.complete;
    if request.complete {
        finish_request(lake, request).await
    } else {
        save_request(lake, request).await
    }
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
/// one commit, and returns the time spent reading and writing files and
/// committing (the rest is planning). The files it replaces are added to
/// each recorded request's pending deletes before the commit, so that a run
/// killed right after the commit still deletes them when it is run again.
async fn erase_from_table(
    config: &CompactConfig,
    lake: &Lake,
    erase: &[Erase],
    text: &FreeText,
    options: &ForgetOptions,
    members: &mut [Member],
    table_report: &mut RewriteReport,
) -> Result<Duration> {
    let mut rewrite_time = Duration::ZERO;
    let Some(mut table) = lake.load_table().await? else {
        return Ok(rewrite_time);
    };
    if erase.is_empty() && text.redact_columns.is_empty() {
        return Ok(rewrite_time);
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
        let (actions, planned) = match result {
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
        rewrite_time += planned.rewrite_time;
        *table_report = planned;
        if actions.is_empty() {
            leases.release(lake).await;
            return Ok(rewrite_time);
        }
        let committing = Instant::now();
        let removed: Vec<String> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove(r) => Some(r.path.clone()),
                _ => None,
            })
            .collect();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let grace_ms = i64::try_from(options.grace.as_millis()).unwrap_or(i64::MAX);
        for request in members.iter_mut().filter_map(|m| m.stored.as_mut()) {
            request.add_pending_deletes(&removed, now_ms, grace_ms);
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
        rewrite_time += committing.elapsed();
        match committed {
            Ok(_) => return Ok(rewrite_time),
            Err(error) if error.is_commit_conflict() && attempt < ATTEMPTS => {
                tracing::info!(%error, attempt, "forget commit conflicted; planning again");
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Deletes each recorded request's replaced files whose grace period has
/// passed (each counted from the commit that removed it), except any the
/// table still references (recorded before a commit that then failed), and
/// saves the requests.
async fn delete_after_grace(lake: &Lake, members: &mut [Member]) -> Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut active: Option<HashSet<Path>> = None;
    // The requests of a batch share their replaced files: each is deleted
    // once, and counted for every request.
    let mut deleted: HashSet<Path> = HashSet::new();
    for member in members {
        let Some(request) = member.stored.as_mut() else {
            continue;
        };
        let report = &mut member.report;
        let (due, waiting): (Vec<String>, Vec<String>) =
            std::mem::take(&mut request.pending_deletes)
                .into_iter()
                .partition(|file| request.delete_after_ms_of(file) <= now);
        request.pending_deletes = waiting;
        report.objects_pending_delete = request.pending_deletes.len() as u64;
        if active.is_none() && !due.is_empty() {
            active = Some(referenced_files(lake).await?);
        }
        for file in due {
            request.delete_after_ms_of.remove(&file);
            let path = Path::from_url_path(&file).map_err(|source| Error::ReplacedFilePath {
                request_id: request.id.clone(),
                file: file.clone(),
                source,
            })?;
            if active.as_ref().is_some_and(|a| a.contains(&path)) {
                continue;
            }
            if !deleted.contains(&path) {
                match lake.store().delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(tributary_lake::Error::store(&path, e).into()),
                }
                deleted.insert(path);
            }
            report.objects_deleted += 1;
        }
        save_request(lake, request).await?;
    }
    Ok(())
}
