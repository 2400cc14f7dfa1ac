//! Partition completeness: deciding when a date (or hour) partition will
//! receive no more rows, and saying so once, in the Delta log.
//!
//! The rule. A period (a day; an hour in a table partitioned by hour) is
//! complete when
//! - every source partition feeding the table (every Delta `txn` id
//!   `tributary/<stream>/<partition>` a commit has set) has committed a row
//!   whose event time is at least the period's end plus
//!   `events.completeness.allowed_lateness_ms`, or is idle: no row of it
//!   committed for `idle_after_ms` and none staged;
//! - the wall clock is past that instant too (no period completes early);
//! - no staged row file may hold a row of it (each file's header names its
//!   earliest event time);
//! - and every period before it is complete (the first decision on a table
//!   starts at its first period, but at most 31 days back).
//!
//! A source's event time is the latest of its committed rows (the
//! `ingest.flatten.event_time_field` column, else midnight of the row's
//! `date`; never later than the commit), which compaction commits record
//! per source. A row a source sends after it has passed a period's end
//! plus the lateness is *late*: when a compaction commits it (as a new row,
//! not one a delete rewrote) into a complete period, the period is
//! announced again, marked as a correction.
//!
//! ```text
//!  every poll_interval_ms when the log has new entries, else every 30 s
//!  (or half of idle_after_ms), under lease `events/completeness`:
//!    list staged files ─► load the table ─► fold log entries since the state
//!    (each source's latest event time and last commit; late rows since the
//!     `late-rows-checked` txn) ─► frontier = min over busy sources of their
//!    event time, and now, minus the lateness, at a period boundary, and
//!    before the period of the earliest staged row
//!    ─► commit {txn complete-until = frontier, txn late-rows-checked = newest
//!               version folded, commitInfo: one Completion per period}
//!    ─► write _tributary/events/completeness.json (the fold's state)
//! ```
//!
//! The decision is a Delta commit of its own (no files, two `txn`
//! actions), so the events it makes are delivered like every other
//! commit's, and the frontier moves exactly when they are recorded: a
//! crash before the commit decides again, one after it finds the frontier
//! moved. The commit lands right after the version it decided on or not at
//! all (a compaction committed in between may hold late rows the decision
//! did not see; it decides again), and two compactors deciding at once
//! write the same `txn` ids, so Delta lets only one commit.
//!
//! The state file is a cache of the fold; when it is lost or stale the
//! entries are folded again. Entries log cleanup or an erasure removed
//! before they were folded are not: late rows they added are not
//! announced, and, with the state file lost too, a source seen only in
//! them is unknown until it commits again (it holds nothing back
//! meanwhile). The tracker folds within a poll of every commit, so this
//! takes an erasure within that poll of a compaction, or a tracker stopped
//! for longer than `compact.log_retention_ms`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate};
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::protocol::{DeltaOperation, OutputMode};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tributary_config::{CompactConfig, CompletenessConfig, HOUR_COLUMN};
use tributary_lake::chain::{self, EarliestRow, StagedFile};
use tributary_lake::layout::TRIBUTARY_DIR;
use tributary_lake::rowfile::RowFile;
use tributary_lake::{Lake, PartitionId};

use super::dispatch::{Held, Pacing, TaskLease};
use super::store::{get_optional, log_entry, log_versions};
use super::{COMPACTION, Completion, LogEntry, Operation};
use crate::error::{Error, Result};
use crate::leases::PartitionLeases;
use crate::partition::{MICROS_PER_DAY, MICROS_PER_HOUR, table_partition_columns};
use crate::table::{Change, PARTITION_COLUMN, commit, delta_error};
use crate::telemetry::CompactorTelemetry;

/// The `operation` of a completeness commit's summary.
pub(crate) const OPERATION: &str = "complete";

/// The `txn` whose version is the frontier: every period ending at or
/// before it (microseconds since the Unix epoch) has been declared complete.
const FRONTIER: &str = "tributary-events/complete-until";

/// The `txn` whose version is the newest log version whose late rows have
/// been announced.
const LATE_ROWS_CHECKED: &str = "tributary-events/late-rows-checked";

/// The most periods one commit declares complete (a backfill's first
/// pass; the rest follow on the next), besides corrections.
const MAX_PER_COMMIT: usize = 500;

/// How far before the horizon the first decision on a table starts, in
/// microseconds (31 days).
const FIRST_LOOKBACK: i64 = 31 * MICROS_PER_DAY;

/// How long the lease lasts.
const LEASE: Duration = Duration::from_secs(60);

/// The longest time between two decisions when the log does not change
/// (shorter when `idle_after_ms` is: half of it).
const RECHECK: Duration = Duration::from_secs(30);

fn state_path() -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/events/completeness.json"))
}

/// The fold of the log entries so far.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// The next log version to fold.
    next_version: u64,
    /// The frontier as of the entries folded (`None` before the first
    /// completeness commit folded).
    frontier_us: Option<i64>,
    /// Per source partition (its `txn` id).
    sources: BTreeMap<String, Source>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Source {
    /// The latest event time of its committed rows, if any had one.
    latest_event_us: Option<i64>,
    /// When a commit last moved its watermark (milliseconds).
    active_at_ms: i64,
}

/// Decides partition completeness for one table, in the long-running
/// compactor, beside event delivery.
pub struct Tracker {
    config: CompletenessConfig,
    compact: CompactConfig,
    lease: TaskLease,
    /// What staged files' headers say of their earliest rows, by path, so
    /// that a file is read once.
    earliest_rows: HashMap<Path, EarliestRow>,
    /// The fold as last written, while the lease is held.
    state: Option<State>,
    /// When the last full decision was made.
    decided_at: Option<Instant>,
}

impl Tracker {
    /// A tracker deciding by `config`, committing with `compact`'s settings.
    pub fn new(config: &CompletenessConfig, compact: &CompactConfig) -> Self {
        Self {
            config: config.clone(),
            compact: compact.clone(),
            lease: TaskLease::new("events/completeness".into(), LEASE),
            earliest_rows: HashMap::new(),
            state: None,
            decided_at: None,
        }
    }

    /// Decides every `poll` until `shutdown` turns true; failures are
    /// reported and retried after a backoff up to `max_backoff`.
    pub async fn run(
        mut self,
        lake: &Lake,
        telemetry: &CompactorTelemetry,
        mut shutdown: watch::Receiver<bool>,
        poll: Duration,
        max_backoff: Duration,
    ) {
        let mut pacing = Pacing::new(poll, max_backoff);
        while !*shutdown.borrow() {
            let passed = self.pass(lake, telemetry).await;
            if let Err(error) = &passed {
                tracing::warn!(%error, "events: cannot decide partition completeness");
            }
            pacing.pause(passed.is_ok(), &mut shutdown).await;
        }
        self.lease.release(lake).await;
    }

    /// One decision: folds the log, and commits the periods that became
    /// complete and the corrections late rows made, if any.
    async fn pass(&mut self, lake: &Lake, telemetry: &CompactorTelemetry) -> Result<()> {
        match self.lease.hold(lake).await? {
            Held::Kept => {}
            // Whoever held it may have moved the fold on.
            Held::Taken => self.state = None,
            Held::Elsewhere => return Ok(()),
        }
        // Without new log entries only the clock can complete a period (a
        // source turning idle, the wall clock passing an end): deciding
        // every `recheck` is enough, and spares loading the table.
        let mut state = match self.state.take() {
            Some(state) => state,
            None => read_state(lake).await?.unwrap_or_default(),
        };
        let recheck = Duration::from_millis(self.config.idle_after_ms / 2).min(RECHECK);
        if self.decided_at.is_some_and(|at| at.elapsed() < recheck)
            && log_versions(lake, state.next_version).await?.is_empty()
        {
            self.state = Some(state);
            return Ok(());
        }
        // Listed before the table is read: a staged file missing from the
        // listing was committed before the read, so its rows are seen.
        let staged = staged_by_source(lake).await?;
        let Some(table) = lake.load_table().await? else {
            return Ok(());
        };
        let Some(latest) = table.version() else {
            return Ok(());
        };
        let snapshot = table.snapshot().map_err(|e| delta_error(lake, "read", e))?;
        let log_store = table.log_store();
        let txn = |app: &'static str| snapshot.transaction_version(log_store.as_ref(), app);
        let frontier = txn(FRONTIER)
            .await
            .map_err(|e| delta_error(lake, "read", e))?;
        let checked = txn(LATE_ROWS_CHECKED)
            .await
            .map_err(|e| delta_error(lake, "read", e))?;
        let hourly = table_partition_columns(snapshot)
            .iter()
            .any(|c| c == HOUR_COLUMN);
        let period = period_micros(hourly);

        let late = fold(lake, &mut state, latest, checked, hourly).await?;
        let rows = rows_by_period(&table, hourly);

        let mut completed: Vec<Completion> = late
            .iter()
            .map(|(&start, &(late_rows, version))| Completion {
                late_rows: Some(late_rows),
                late_version: Some(version),
                ..completion(start, period, hourly, &rows, true)
            })
            .collect();
        let mut until = frontier;
        let horizon = self.horizon(&state, &staged);
        // The first decision starts at the table's first period, but no
        // further back than FIRST_LOOKBACK (a row dated 1970 would
        // otherwise announce decades of empty days).
        let from = frontier.or_else(|| {
            let first = *rows.keys().next()?;
            let lookback = (horizon? - FIRST_LOOKBACK).div_euclid(period) * period;
            Some(first.max(lookback))
        });
        if let (Some(from), Some(horizon)) = (from, horizon) {
            let mut limit = horizon.div_euclid(period) * period;
            if limit > from {
                let staged = self.earliest_staged(lake, &staged).await?;
                limit = limit.min(staged.div_euclid(period).saturating_mul(period));
            }
            let mut start = from;
            while start + period <= limit && completed.len() < MAX_PER_COMMIT {
                completed.push(completion(start, period, hourly, &rows, false));
                start += period;
            }
            if start > from {
                until = Some(start);
            }
        }
        // Corrections come only after a frontier, so there is one.
        if let (false, Some(until)) = (completed.is_empty(), until) {
            let change = Change {
                actions: Vec::new(),
                transactions: vec![
                    Transaction::new(FRONTIER, until),
                    Transaction::new(LATE_ROWS_CHECKED, latest as i64),
                ],
                operation: DeltaOperation::StreamingUpdate {
                    output_mode: OutputMode::Append,
                    query_id: "tributary-events".into(),
                    epoch_id: until,
                },
                event: Operation::Complete { completed },
                // Right after `latest` or not at all: a compaction commit
                // in between would not have been checked for late rows.
                exclusive: true,
            };
            let committed = commit(
                &self.compact,
                lake,
                &table,
                &mut PartitionLeases::default(),
                change,
            )
            .await;
            match committed {
                Ok(_) => {}
                // Another commit came first: decide again on the next pass,
                // from the state as last written (this fold's late rows are
                // not announced yet, so they must be found again).
                Err(error) if error.is_commit_conflict() => {
                    tracing::debug!(%error, "events: a commit came before the completeness commit");
                    self.decided_at = None;
                    return Ok(());
                }
                Err(error) => return Err(error),
            }
        }
        if let Some(until) = until {
            telemetry.complete_until(until);
        }
        write_state(lake, &state).await?;
        self.state = Some(state);
        self.decided_at = Some(Instant::now());
        Ok(())
    }

    /// The instant every busy source's rows have passed, and the clock,
    /// less the allowed lateness: `None` while a busy source has no event
    /// time yet (or a new one has rows staged only).
    fn horizon(&self, state: &State, staged: &BTreeMap<String, Vec<StagedFile>>) -> Option<i64> {
        let now = chrono::Utc::now();
        let idle_since = now.timestamp_millis() - self.config.idle_after_ms as i64;
        let mut horizon = now.timestamp_micros();
        for (app, source) in &state.sources {
            if source.active_at_ms <= idle_since && !staged.contains_key(app) {
                continue;
            }
            horizon = horizon.min(source.latest_event_us?);
        }
        if staged.keys().any(|app| !state.sources.contains_key(app)) {
            return None;
        }
        Some(horizon - self.config.allowed_lateness_ms as i64 * 1_000)
    }

    /// The earliest event time a staged file may hold rows of
    /// (`i64::MIN` when a file does not say, `i64::MAX` when none is staged).
    async fn earliest_staged(
        &mut self,
        lake: &Lake,
        staged: &BTreeMap<String, Vec<StagedFile>>,
    ) -> Result<i64> {
        let paths: Vec<&Path> = staged.values().flatten().map(|f| &f.path).collect();
        self.earliest_rows.retain(|p, _| paths.contains(&p));
        let mut earliest = i64::MAX;
        for path in paths {
            let row = match self.earliest_rows.get(path) {
                Some(row) => *row,
                None => {
                    let Some(bytes) = get_optional(lake, path).await? else {
                        continue; // compacted meanwhile: its rows are in the table
                    };
                    let (_, metadata) = RowFile::read_header(&bytes, path.as_ref())?;
                    let row = chain::earliest_row(&metadata);
                    self.earliest_rows.insert(path.clone(), row);
                    row
                }
            };
            match row {
                EarliestRow::At(time) => earliest = earliest.min(time),
                EarliestRow::Undated => {}
                EarliestRow::Unknown => return Ok(i64::MIN),
            }
        }
        Ok(earliest)
    }
}

/// Folds the log entries from `state.next_version` to `latest` into it:
/// each source's latest event time and last commit, and the frontier.
/// Returns the late rows of entries after `checked`, per period start:
/// (rows, the newest version adding some).
async fn fold(
    lake: &Lake,
    state: &mut State,
    latest: u64,
    checked: Option<i64>,
    hourly: bool,
) -> Result<BTreeMap<i64, (u64, u64)>> {
    let period = period_micros(hourly);
    let mut late: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for version in log_versions(lake, state.next_version).await? {
        if version > latest {
            break;
        }
        let Some(bytes) = get_optional(lake, &log_entry(version)).await? else {
            continue; // removed by log cleanup meanwhile
        };
        let entry = LogEntry::parse(version, &bytes)?;
        let at = entry.committed_at_ms();
        for app in entry.transactions.keys() {
            if app.starts_with("tributary/") {
                let source = state.sources.entry(app.clone()).or_insert(Source {
                    latest_event_us: None,
                    active_at_ms: at,
                });
                source.active_at_ms = source.active_at_ms.max(at);
            }
        }
        let summary = entry.summary();
        for (app, time) in &summary.latest_event_times {
            if let Some(source) = state.sources.get_mut(app) {
                source.latest_event_us =
                    Some(source.latest_event_us.map_or(*time, |t| t.max(*time)));
            }
        }
        if let Some(frontier) = entry.transactions.get(FRONTIER) {
            state.frontier_us = Some(*frontier);
        } else if let Some(frontier) = state.frontier_us
            && summary.operation == COMPACTION
            && checked.is_none_or(|c| version as i64 > c)
        {
            for change in &summary.partitions {
                // Rows from staging, not those a delete rewrote.
                let new_rows = change.new_rows.unwrap_or(change.rows_added);
                if let Some(start) = period_start(&change.values, hourly)
                    && start + period <= frontier
                    && new_rows > 0
                {
                    let entry = late.entry(start).or_default();
                    entry.0 += new_rows;
                    entry.1 = version;
                }
            }
        }
    }
    state.next_version = state.next_version.max(latest + 1);
    Ok(late)
}

/// The staged files of every source partition that has some, by `txn` id.
async fn staged_by_source(lake: &Lake) -> Result<BTreeMap<String, Vec<StagedFile>>> {
    let store = lake.store().as_ref();
    let mut staged = BTreeMap::new();
    for partition in chain::staged_partitions(store).await? {
        let files = chain::staged_files(store, &partition).await?;
        if !files.is_empty() {
            staged.insert(PartitionId::app_id(&partition), files);
        }
    }
    Ok(staged)
}

/// Rows the table holds per period start.
fn rows_by_period(table: &DeltaTable, hourly: bool) -> BTreeMap<i64, u64> {
    let mut rows = BTreeMap::new();
    let Ok(snapshot) = table.snapshot() else {
        return rows;
    };
    for file in snapshot.log_data().iter() {
        let values: BTreeMap<String, Option<String>> =
            file.partition_values_map().into_iter().collect();
        if let Some(start) = period_start(&values, hourly) {
            *rows.entry(start).or_default() += file.num_records().unwrap_or(0) as u64;
        }
    }
    rows
}

/// The length of a period: an hour in a table partitioned by hour, else a
/// day.
fn period_micros(hourly: bool) -> i64 {
    if hourly {
        MICROS_PER_HOUR
    } else {
        MICROS_PER_DAY
    }
}

/// The start of the period of a partition's values (`None` for a null
/// `date`).
fn period_start(values: &BTreeMap<String, Option<String>>, hourly: bool) -> Option<i64> {
    let date: NaiveDate = values.get(PARTITION_COLUMN)?.as_deref()?.parse().ok()?;
    let hour: i64 = if hourly {
        values.get(HOUR_COLUMN)?.as_deref()?.parse().ok()?
    } else {
        0
    };
    Some(midnight(date) + hour * MICROS_PER_HOUR)
}

fn midnight(date: NaiveDate) -> i64 {
    date.and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .timestamp_micros()
}

/// The completion of the period starting at `start`.
fn completion(
    start: i64,
    period: i64,
    hourly: bool,
    rows: &BTreeMap<i64, u64>,
    correction: bool,
) -> Completion {
    let instant = |micros: i64| {
        DateTime::from_timestamp_micros(micros)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let begins = DateTime::from_timestamp_micros(start).unwrap_or_default();
    let mut values = BTreeMap::from([(
        PARTITION_COLUMN.to_string(),
        begins.date_naive().to_string(),
    )]);
    if hourly {
        values.insert(HOUR_COLUMN.to_string(), begins.format("%-H").to_string());
    }
    Completion {
        values,
        start: instant(start),
        end: instant(start + period),
        rows: rows.get(&start).copied().unwrap_or(0),
        correction,
        late_rows: None,
        late_version: None,
    }
}

/// The fold as last written; `None` when there is none, or it cannot be
/// read (it is a cache: the log is folded again).
async fn read_state(lake: &Lake) -> Result<Option<State>> {
    let path = state_path();
    let Some(bytes) = get_optional(lake, &path).await? else {
        return Ok(None);
    };
    match serde_json::from_slice(&bytes) {
        Ok(state) => Ok(Some(state)),
        Err(error) => {
            tracing::warn!(%path, %error, "events: completeness state unreadable; folding the log again");
            Ok(None)
        }
    }
}

async fn write_state(lake: &Lake, state: &State) -> Result<()> {
    let path = state_path();
    let body = serde_json::to_vec(state)
        .map_err(|e| Error::Events(format!("cannot write {path}: {e}")))?;
    lake.store()
        .put(&path, body.into())
        .await
        .map_err(|e| tributary_lake::Error::store(&path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    fn tracker(lateness_ms: u64, idle_after_ms: u64) -> Tracker {
        let config = CompletenessConfig {
            allowed_lateness_ms: lateness_ms,
            idle_after_ms,
        };
        Tracker::new(&config, &CompactConfig::default())
    }

    fn source(latest: Option<&str>, active_ago_ms: i64) -> Source {
        Source {
            latest_event_us: latest
                .map(|t| DateTime::parse_from_rfc3339(t).unwrap().timestamp_micros()),
            active_at_ms: chrono::Utc::now().timestamp_millis() - active_ago_ms,
        }
    }

    fn state(sources: &[(&str, Source)]) -> State {
        State {
            sources: sources
                .iter()
                .map(|(app, s)| (app.to_string(), *s))
                .collect(),
            ..State::default()
        }
    }

    fn staged(apps: &[&str]) -> BTreeMap<String, Vec<StagedFile>> {
        apps.iter()
            .map(|app| (app.to_string(), Vec::new()))
            .collect()
    }

    fn micros(time: &str) -> i64 {
        DateTime::parse_from_rfc3339(time)
            .unwrap()
            .timestamp_micros()
    }

    #[test]
    fn the_horizon_is_the_slowest_busy_source_less_the_lateness() {
        let state = state(&[
            ("tributary/a/0", source(Some("2026-11-21T05:00:00Z"), 0)),
            ("tributary/b/0", source(Some("2026-11-21T01:00:00Z"), 0)),
        ]);
        let horizon = tracker(HOUR_MS as u64, HOUR_MS as u64).horizon(&state, &staged(&[]));
        assert_eq!(horizon, Some(micros("2026-11-21T00:00:00Z")));
    }

    #[test]
    fn an_idle_source_counts_as_caught_up_unless_it_has_rows_staged() {
        let state = state(&[
            ("tributary/a/0", source(Some("2026-11-21T05:00:00Z"), 0)),
            (
                "tributary/b/0",
                source(Some("2026-11-20T01:00:00Z"), 2 * HOUR_MS),
            ),
        ]);
        let tracker = tracker(0, HOUR_MS as u64);
        assert_eq!(
            tracker.horizon(&state, &staged(&[])),
            Some(micros("2026-11-21T05:00:00Z"))
        );
        assert_eq!(
            tracker.horizon(&state, &staged(&["tributary/b/0"])),
            Some(micros("2026-11-20T01:00:00Z"))
        );
    }

    #[test]
    fn a_busy_source_without_an_event_time_or_a_new_one_holds_everything_back() {
        let known = state(&[("tributary/a/0", source(None, 0))]);
        assert_eq!(tracker(0, 1_000).horizon(&known, &staged(&[])), None);
        let new = state(&[("tributary/a/0", source(Some("2026-11-21T05:00:00Z"), 0))]);
        assert_eq!(
            tracker(0, 1_000).horizon(&new, &staged(&["tributary/b/0"])),
            None
        );
    }

    #[test]
    fn no_period_completes_before_the_clock_passes_it() {
        let future = state(&[("tributary/a/0", source(Some("2999-01-01T00:00:00Z"), 0))]);
        let horizon = tracker(0, 1_000).horizon(&future, &staged(&[])).unwrap();
        assert!(horizon <= chrono::Utc::now().timestamp_micros());
    }

    #[test]
    fn periods_are_days_or_hours_and_name_their_partition() {
        let values = |date: &str, hour: Option<&str>| -> BTreeMap<String, Option<String>> {
            let mut values = BTreeMap::from([("date".into(), Some(date.into()))]);
            if let Some(hour) = hour {
                values.insert(HOUR_COLUMN.into(), Some(hour.into()));
            }
            values
        };
        let day = period_start(&values("2026-11-29", None), false).unwrap();
        assert_eq!(day, micros("2026-11-29T00:00:00Z"));
        let hour = period_start(&values("2026-11-29", Some("7")), true).unwrap();
        assert_eq!(hour, micros("2026-11-29T07:00:00Z"));
        assert_eq!(period_start(&values("2026-11-29", None), true), None);
        let mut nulls = values("2026-11-29", None);
        nulls.insert("date".into(), None);
        assert_eq!(period_start(&nulls, false), None);

        let rows = BTreeMap::from([(hour, 12)]);
        let completed = completion(hour, period_micros(true), true, &rows, false);
        assert_eq!(
            completed.values,
            BTreeMap::from([
                ("date".to_string(), "2026-11-29".to_string()),
                (HOUR_COLUMN.to_string(), "7".to_string()),
            ])
        );
        assert_eq!(
            (
                completed.start.as_str(),
                completed.end.as_str(),
                completed.rows
            ),
            ("2026-11-29T07:00:00Z", "2026-11-29T08:00:00Z", 12)
        );
    }
}
