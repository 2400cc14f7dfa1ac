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
//! them before the commit). Rows staged late for an expired date are
//! compacted into the table and removed by the next run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
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
