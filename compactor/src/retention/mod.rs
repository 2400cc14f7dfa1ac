//! `tributary retention`: rows expire by their event date (the table's
//! `date` partition column), table-wide after `retention.max_age_days` and
//! per tenant (rows whose column holds a value) after the tenant's
//! `keep_days`, and leave no copy behind, as `tributary forget` erases.
//!
//! ```text
//! rules: [retention] + the rules object (read at every run)
//!   ─► table: partitions dated before the table cut-off removed whole, files
//!      that may hold a tenant's expired rows (partition dates, statistics,
//!      bloom filters) rewritten without them; one commit, under the leases
//!      of every partition it touches
//!   ─► staged row files: expired rows rewritten away; dead letters: files
//!      past the table-wide age deleted, a tenant's letters removed
//!   ─► files the commit removed: deleted once the grace period has passed
//!      (listed in _tributary/retention/state.json meanwhile)
//!   ─► after a commit: checkpoint, then every older log entry deleted
//!      (their statistics may hold expired values)
//! ```
//!
//! Every step can be repeated: a killed run leaves at most a commit whose
//! files and log entries the next run deletes (the state object records
//! them before the commit). Rows staged late for an expired date (a replay,
//! a backfill, a source that lags) never reach the table: compaction drops
//! them (`drop_expired`), counted as expired at `late_staged`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use deltalake::arrow::array::BooleanArray;
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::record_batch::RecordBatch;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tributary_config::{CompactConfig, TenantRule};
use tributary_lake::Lake;
use tributary_lake::layout::TRIBUTARY_DIR;
use tributary_lake::lease::{Lease, owner_id};

mod row_files;
pub mod rules;
mod table;

pub use row_files::RowFileExpiry;
pub use rules::{Cutoffs, Rules};
pub use table::TableExpiry;

use crate::error::{Error, Result};
use crate::table::{delta_error, expire_log, referenced_files};

/// How to run.
#[derive(Debug, Clone)]
pub struct RetentionOptions {
    /// Report what would expire without changing anything.
    pub dry_run: bool,
    /// Files the run removes from the table are deleted this long after its
    /// commit, so running readers can finish.
    pub grace: Duration,
    /// The day (UTC) the rules count back from: today.
    pub today: NaiveDate,
    /// Show progress on stderr (the command line; not the compactor).
    pub show_progress: bool,
    /// How long to wait for another process's run to end (one run at a
    /// time per table: the lease `retention`); zero tries once.
    pub lease_wait: Duration,
}

impl RetentionOptions {
    /// A run today with `retention.grace_ms` of `config`.
    pub fn new(config: &CompactConfig, dry_run: bool) -> Self {
        Self {
            dry_run,
            grace: Duration::from_millis(config.retention.grace_ms),
            today: chrono::Utc::now().date_naive(),
            show_progress: false,
            lease_wait: Duration::ZERO,
        }
    }
}

/// What a run did, printed as JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionReport {
    /// The run's id (in the Delta commit's operation parameters).
    pub run_id: String,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// The day the rules counted back from.
    pub today: String,
    /// Partitions dated before this were removed whole.
    pub table_cutoff: Option<String>,
    /// The tenant rules applied (configuration and rules object).
    pub tenant_rules: Vec<TenantRule>,
    /// The table part.
    pub table: TableExpiry,
    /// Staged row files and dead letters.
    pub row_files: RowFileExpiry,
    /// Rows expired everywhere: the table's, staged and dead letters.
    pub rows_expired: u64,
    /// Bytes the run read or removed: table files removed or rewritten,
    /// row files read.
    pub bytes_touched: u64,
    /// Replaced table files deleted (from this run or earlier ones).
    pub objects_deleted: u64,
    /// Replaced table files left for the grace period.
    pub objects_pending_delete: u64,
    /// Delta log entries and checkpoints deleted.
    pub log_entries_expired: u64,
    /// The earliest event date left in the table.
    pub oldest_event_date: Option<String>,
    /// Milliseconds per phase.
    pub timings_ms: BTreeMap<String, u64>,
}

/// What a run leaves for the next: table files to delete once their grace
/// period is over, and whether the log still holds entries to expire.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// `(path under the table, delete after, ms since the epoch)`.
    pending_deletes: Vec<(String, i64)>,
    /// A commit landed (or may have) whose older log entries are not
    /// expired yet.
    expire_log: bool,
}

fn state_path() -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/retention/state.json"))
}

async fn load_state(lake: &Lake) -> Result<State> {
    let path = state_path();
    match tributary_lake::read_object(lake.store().as_ref(), &path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::RetentionRules {
            path: path.to_string(),
            source: Box::new(e),
        }),
        Err(e) if e.is_not_found() => Ok(State::default()),
        Err(e) => Err(e.into()),
    }
}

async fn save_state(lake: &Lake, state: &State) -> Result<()> {
    let path = state_path();
    let body = serde_json::to_vec_pretty(state).map_err(|e| Error::RetentionRules {
        path: path.to_string(),
        source: Box::new(e),
    })?;
    lake.store()
        .put(&path, PutPayload::from(body))
        .await
        .map_err(|e| tributary_lake::Error::store(&path, e))?;
    Ok(())
}

/// The lease a run holds, so that runs (the compactors', the CronJob's)
/// never interleave their state.
pub const RUN_LEASE: &str = "retention";

/// Applies the retention rules of `config.retention` and the rules object,
/// holding [`RUN_LEASE`] (except a dry run). Fails with
/// `LeaseHeld` when another run holds it past `options.lease_wait`.
pub async fn retention(
    config: &CompactConfig,
    lake: &Lake,
    options: &RetentionOptions,
) -> Result<RetentionReport> {
    if options.dry_run {
        return run(config, lake, options, None).await;
    }
    let store = lake.store().as_ref();
    // A run renews the lease between its phases; a phase may take minutes.
    let duration = Duration::from_millis(config.lease_ms.saturating_mul(10));
    let mut lease =
        Lease::acquire(store, RUN_LEASE, owner_id(), duration, options.lease_wait).await?;
    let result = run(config, lake, options, Some(&mut lease)).await;
    if let Err(error) = lease.release(store).await {
        tracing::warn!(%error, "could not release the retention lease; it will expire");
    }
    result
}

async fn run(
    config: &CompactConfig,
    lake: &Lake,
    options: &RetentionOptions,
    mut lease: Option<&mut Lease>,
) -> Result<RetentionReport> {
    let run_id = format!(
        "retention-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ")
    );
    let mut phase = Instant::now();
    let mut lap = async |report: &mut RetentionReport, name: &str| -> Result<()> {
        if let Some(lease) = lease.as_deref_mut() {
            lease.renew(lake.store().as_ref()).await?;
        }
        let ms = phase.elapsed().as_millis() as u64;
        report.timings_ms.insert(name.to_string(), ms);
        if options.show_progress {
            eprintln!("retention: {name} done in {ms} ms");
        }
        tracing::info!(run = %run_id, phase = name, ms, "retention phase done");
        phase = Instant::now();
        Ok(())
    };
    let rules = Rules::load(&config.retention, lake).await?;
    let cutoffs = Cutoffs::new(&rules, options.today);
    let mut report = RetentionReport {
        run_id: run_id.clone(),
        dry_run: options.dry_run,
        today: options.today.to_string(),
        table_cutoff: cutoffs.table.map(|d| d.to_string()),
        tenant_rules: rules.tenants.clone(),
        ..Default::default()
    };
    lap(&mut report, "rules").await?;
    let mut state = load_state(lake).await?;

    if !rules.is_empty() {
        report.table =
            table::expire_table(config, lake, &cutoffs, options, &run_id, &mut state).await?;
        lap(&mut report, "table").await?;

        report.row_files =
            row_files::expire_row_files(lake, &cutoffs, options.dry_run, options.show_progress)
                .await?;
        lap(&mut report, "staged_and_dead_letters").await?;
    }

    if !options.dry_run {
        delete_after_grace(lake, &mut state, &mut report).await?;
        lap(&mut report, "delete_replaced").await?;
        if state.expire_log {
            report.log_entries_expired = expire_log(config, lake).await?;
            state.expire_log = false;
            lap(&mut report, "expire_log").await?;
        }
        save_state(lake, &state).await?;
    }

    if let Some(table) = lake.load_table().await? {
        let snapshot = table.snapshot().map_err(|e| delta_error(lake, "read", e))?;
        report.oldest_event_date = table::oldest_date(snapshot).map(|d| d.to_string());
    }
    let t = &report.table;
    report.rows_expired = t.rows_removed
        + t.tenants.rows_erased
        + report.row_files.staged_rows_expired
        + report.row_files.dead_letters_expired;
    report.bytes_touched =
        t.bytes_removed + t.tenants.bytes_rewritten + report.row_files.bytes_read;
    Ok(report)
}

/// How long compaction keeps the rules it read (the rules object is read
/// at most this often, not every round).
const LATE_RULES_TTL: Duration = Duration::from_secs(60);

/// The rules read last for compaction: (table URL, when, rules).
static LATE_RULES: std::sync::Mutex<Option<(String, Instant, Rules)>> = std::sync::Mutex::new(None);

/// The cut-offs compaction drops late rows by, today: `None` when no rule
/// is set. The rules object is read at most every [`LATE_RULES_TTL`].
pub(crate) async fn late_expiry(config: &CompactConfig, lake: &Lake) -> Result<Option<Cutoffs>> {
    let url = lake.table_url().to_string();
    let cached = {
        let guard = LATE_RULES.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .filter(|(u, at, _)| *u == url && at.elapsed() < LATE_RULES_TTL)
            .map(|(_, _, rules)| rules.clone())
    };
    let rules = match cached {
        Some(rules) => rules,
        None => {
            let rules = Rules::load(&config.retention, lake).await?;
            *LATE_RULES.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((url, Instant::now(), rules.clone()));
            rules
        }
    };
    let today = chrono::Utc::now().date_naive();
    Ok((!rules.is_empty()).then(|| Cutoffs::new(&rules, today)))
}

/// `batches` (a compaction round's converted rows) without the rows that
/// have expired under `cutoffs` ([`Cutoffs::expired_rows`]: by their `date`
/// column, table-wide and per tenant), and how many were dropped.
pub(crate) fn drop_expired(
    batches: Vec<RecordBatch>,
    cutoffs: Option<&Cutoffs>,
) -> Result<(Vec<RecordBatch>, u64)> {
    let Some(cutoffs) = cutoffs else {
        return Ok((batches, 0));
    };
    let mut dropped = 0;
    let mut kept = Vec::with_capacity(batches.len());
    for batch in batches {
        let expired = cutoffs.expired_rows(&batch);
        let count = expired.iter().filter(|e| **e).count();
        if count == 0 {
            kept.push(batch);
            continue;
        }
        dropped += count as u64;
        let keep: BooleanArray = expired.iter().map(|e| Some(!e)).collect();
        let batch = filter_record_batch(&batch, &keep).map_err(|source| Error::Arrow {
            path: "the round's staged rows".into(),
            source,
        })?;
        if batch.num_rows() > 0 {
            kept.push(batch);
        }
    }
    Ok((kept, dropped))
}

/// Deletes the pending files whose grace period has passed, except any the
/// table references (listed before a commit that then failed).
async fn delete_after_grace(
    lake: &Lake,
    state: &mut State,
    report: &mut RetentionReport,
) -> Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut state.pending_deletes)
        .into_iter()
        .partition(|(_, after)| *after <= now);
    state.pending_deletes = waiting;
    report.objects_pending_delete = state.pending_deletes.len() as u64;
    if due.is_empty() {
        return Ok(());
    }
    let active = referenced_files(lake).await?;
    for (file, _) in due {
        let path = Path::from_url_path(&file).map_err(|e| Error::RetentionRules {
            path: file.clone(),
            source: Box::new(e),
        })?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{AsArray, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn compaction_drops_rows_staged_late_for_an_expired_date() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("date", DataType::Utf8, true),
            Field::new("account", DataType::Utf8, true),
        ]));
        let batch = |dates: Vec<Option<&str>>, accounts: Vec<&str>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(dates)),
                    Arc::new(StringArray::from(accounts)),
                ],
            )
            .unwrap()
        };
        let batches = vec![
            batch(
                vec![
                    Some("2026-10-01"),
                    Some("2026-11-29"),
                    None,
                    Some("2026-11-20"),
                ],
                vec!["x", "x", "x", "acme"],
            ),
            // Every row expired: the batch goes.
            batch(vec![Some("2026-09-01")], vec!["x"]),
        ];
        let rules = Rules {
            max_age_days: Some(30),
            tenants: vec![TenantRule {
                column: "account".into(),
                value: "acme".into(),
                keep_days: 7,
            }],
        };
        let today = rules::parse_date("2026-11-30").unwrap();
        let cutoffs = Cutoffs::new(&rules, today);
        let (kept, dropped) = drop_expired(batches.clone(), Some(&cutoffs)).unwrap();
        assert_eq!(dropped, 3);
        assert_eq!(kept.len(), 1);
        let dates: Vec<Option<&str>> = kept[0].column(0).as_string::<i32>().iter().collect();
        assert_eq!(dates, [Some("2026-11-29"), None]);
        // No rules: nothing is looked at.
        let (kept, dropped) = drop_expired(batches, None).unwrap();
        assert_eq!((kept.len(), dropped), (2, 0));
    }
}
