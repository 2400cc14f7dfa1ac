//! The table part of a run: expired partitions removed whole, and the files
//! that may hold a tenant's expired rows rewritten without them, in one
//! commit under the leases of every partition it touches.
//!
//! ```text
//! snapshot ─► files of partitions dated before the table cut-off: `remove`
//!          ─► other files, grouped by the tenant rules their date falls under:
//!             rewrite::candidates (statistics) ─► rewrite::rewrite (bloom
//!             filters, then read, drop the tenant's rows, write the rest)
//!          ─► leases missing? take them and plan again
//!          ─► one commit (retried on a lost race)
//! ```

use std::collections::{BTreeMap, BTreeSet};

use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::protocol::DeltaOperation;
use deltalake::table::state::DeltaTableState;
use serde::Serialize;
use tributary_config::CompactConfig;
use tributary_lake::Lake;
use tributary_lake::columns::table_columns;
use tributary_lake::rowfile::ColumnType;

use super::rules::{Cutoffs, parse_date};
use super::{RetentionOptions, State, save_state};
use crate::error::{Error, Result};
use crate::events::Operation;
use crate::leases::PartitionLeases;
use crate::partition::{TablePartition, table_partition_columns};
use crate::progress::Progress;
use crate::rewrite::{self, Candidate, Erasure, RewriteReport};
use crate::table::{Change, PARTITION_COLUMN, commit, delta_error};

/// What the table part did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableExpiry {
    /// Partitions removed whole (`date=2026-11-01`, ...).
    pub partitions_removed: Vec<String>,
    /// Files they held.
    pub files_removed: u64,
    /// Rows in those files (from their statistics).
    pub rows_removed: u64,
    /// Bytes of those files.
    pub bytes_removed: u64,
    /// Tenants' rows: files considered (those dated under a tenant rule),
    /// pruned by statistics and bloom filters, read, rewritten, rows
    /// removed, bytes of the replaced files.
    pub tenants: RewriteReport,
    /// The table's version after the commit; `None` without one.
    pub version: Option<u64>,
}

/// A plan on one snapshot.
struct Plan {
    removes: Vec<Action>,
    partitions: BTreeSet<TablePartition>,
    /// Per group of tenant rules (the index of its first rule), the files
    /// whose statistics allow a match.
    groups: BTreeMap<usize, Vec<Candidate>>,
    expiry: TableExpiry,
}

/// Times a run plans again after losing a commit race.
const ATTEMPTS: u32 = 5;

/// Removes what has expired from the table (a dry run only counts),
/// recording in `state` what the commit leaves to delete.
pub(crate) async fn expire_table(
    config: &CompactConfig,
    lake: &Lake,
    cutoffs: &Cutoffs,
    options: &RetentionOptions,
    run_id: &str,
    state: &mut State,
) -> Result<TableExpiry> {
    let target_file_bytes = (!options.dry_run).then_some(config.target_file_bytes);
    let Some(mut table) = lake.load_table().await? else {
        return Ok(TableExpiry::default());
    };
    check_tenant_columns(&table, cutoffs)?;
    let mut attempt = 1;
    loop {
        let mut leases = PartitionLeases::default();
        let planned = plan_under_leases(
            config,
            lake,
            &mut table,
            cutoffs,
            target_file_bytes,
            &mut leases,
            options.show_progress,
        )
        .await;
        let (actions, mut expiry) = match planned {
            Ok(done) => done,
            Err(error) => {
                leases.release(lake).await;
                if error.is_commit_conflict() && attempt < ATTEMPTS {
                    attempt += 1;
                    continue;
                }
                return Err(error);
            }
        };
        if actions.is_empty() || target_file_bytes.is_none() {
            leases.release(lake).await;
            return Ok(expiry);
        }
        // The state names the files the commit removes, and the log entries
        // it leaves to expire, before the commit can land: a run killed
        // after it deletes them when run again.
        let after = chrono::Utc::now().timestamp_millis() + options.grace.as_millis() as i64;
        state
            .pending_deletes
            .extend(actions.iter().filter_map(|a| match a {
                Action::Remove(r) => Some((r.path.clone(), after)),
                _ => None,
            }));
        state.expire_log = true;
        save_state(lake, state).await?;
        let change = Change {
            actions,
            transactions: Vec::new(),
            // The predicate names the run, never a tenant's value.
            operation: DeltaOperation::Delete {
                predicate: Some(format!("retention run {run_id}")),
            },
            event: Operation::Retention {
                run_id: run_id.to_string(),
            },
            exclusive: false,
        };
        let committed = commit(config, lake, &table, &mut leases, change).await;
        leases.release(lake).await;
        match committed {
            Ok(committed) => {
                expiry.version = Some(committed.version);
                return Ok(expiry);
            }
            Err(error) if error.is_commit_conflict() && attempt < ATTEMPTS => {
                tracing::info!(%error, attempt, "retention commit conflicted; planning again");
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Plans on the table as it is once the leases of every partition the plan
/// touches are held ([`PartitionLeases::plan_holding`]), then rewrites.
async fn plan_under_leases(
    config: &CompactConfig,
    lake: &Lake,
    table: &mut DeltaTable,
    cutoffs: &Cutoffs,
    target_file_bytes: Option<u64>,
    leases: &mut PartitionLeases,
    show_progress: bool,
) -> Result<(Vec<Action>, TableExpiry)> {
    let Plan {
        mut removes,
        groups,
        mut expiry,
        ..
    } = leases
        .plan_holding(config, lake, table, |state| {
            let plan = plan(&state, cutoffs);
            let needed = match target_file_bytes {
                Some(_) => plan
                    .partitions
                    .iter()
                    .cloned()
                    .chain(plan.groups.values().flat_map(|c| rewrite::partitions(c)))
                    .collect(),
                None => BTreeSet::new(),
            };
            Box::pin(std::future::ready(Ok((plan, needed))))
        })
        .await?;
    let state = table.snapshot().map_err(|e| delta_error(lake, "read", e))?;
    let total = groups.values().map(|c| c.len() as u64).sum();
    let mut progress = show_progress.then(|| Progress::new("table files checked", total));
    for (first, candidates) in groups {
        let erase = cutoffs.erasures(first);
        let actions = rewrite::rewrite(
            lake,
            state,
            candidates,
            Erasure {
                rows: &erase,
                text: None,
            },
            target_file_bytes,
            &mut expiry.tenants,
            progress.as_mut(),
        )
        .await?;
        removes.extend(actions);
        if target_file_bytes.is_some() {
            leases.renew(lake).await?;
        }
    }
    Ok((removes, expiry))
}

/// What has expired in the snapshot: files of partitions past the table
/// cut-off, and per group of tenant rules the files whose statistics allow
/// a tenant's row.
fn plan(state: &DeltaTableState, cutoffs: &Cutoffs) -> Plan {
    let columns = table_partition_columns(state);
    let mut plan = Plan {
        removes: Vec::new(),
        partitions: BTreeSet::new(),
        groups: BTreeMap::new(),
        expiry: TableExpiry::default(),
    };
    // Which group of tenant rules each partition falls under.
    let mut group_of: BTreeMap<TablePartition, usize> = BTreeMap::new();
    for file in state.log_data().iter() {
        let partition = TablePartition::of(&file, &columns);
        let Some(date) = date_of(&partition) else {
            continue;
        };
        if cutoffs.date_expired(date) {
            plan.expiry.files_removed += 1;
            plan.expiry.bytes_removed += file.size().max(0) as u64;
            plan.expiry.rows_removed += file.num_records().unwrap_or(0) as u64;
            plan.removes.push(Action::Remove(file.remove_action(true)));
            plan.partitions.insert(partition);
        } else if let Some(first) = cutoffs.tenant_rules_from(date) {
            plan.expiry.tenants.files_scanned += 1;
            group_of.insert(partition, first);
        }
    }
    plan.expiry.partitions_removed = plan.partitions.iter().map(|p| p.path()).collect();
    let firsts: BTreeSet<usize> = group_of.values().copied().collect();
    for first in firsts {
        // Statistics prune within the group's own partitions only; the
        // counts of `candidates` over the whole snapshot are not kept.
        let mut scratch = RewriteReport::default();
        let found: Vec<Candidate> = rewrite::candidates(
            state,
            Erasure {
                rows: &cutoffs.erasures(first),
                text: None,
            },
            &mut scratch,
        )
        .into_iter()
        .filter(|c| group_of.get(c.partition()) == Some(&first))
        .collect();
        plan.groups.insert(first, found);
    }
    let candidates: u64 = plan.groups.values().map(|c| c.len() as u64).sum();
    plan.expiry.tenants.pruned_by_statistics = plan.expiry.tenants.files_scanned - candidates;
    plan
}

/// Fails when a tenant rule names a column of the table that is not a
/// string column: its values could never match, and every file dated past
/// the rule would be read at every run for nothing.
fn check_tenant_columns(table: &DeltaTable, cutoffs: &Cutoffs) -> Result<()> {
    let columns = table_columns(table)?;
    for (rule, _) in &cutoffs.tenants {
        let found = columns.iter().find(|(name, _)| *name == rule.column);
        if let Some((_, kind)) = found.filter(|(_, kind)| *kind != ColumnType::String) {
            return Err(Error::RetentionRules {
                path: format!("the tenant rule {}={:?}", rule.column, rule.value),
                source: format!(
                    "column {} is of type {kind}, not a string column",
                    rule.column
                )
                .into(),
            });
        }
    }
    Ok(())
}

/// The event date of a partition (its `date` value).
pub(crate) fn date_of(partition: &TablePartition) -> Option<chrono::NaiveDate> {
    partition
        .values()
        .iter()
        .find(|(c, _)| c == PARTITION_COLUMN)
        .and_then(|(_, v)| v.as_deref())
        .and_then(parse_date)
}

/// The earliest event date of the table's partitions.
pub(crate) fn oldest_date(state: &DeltaTableState) -> Option<chrono::NaiveDate> {
    let columns = table_partition_columns(state);
    state
        .log_data()
        .iter()
        .filter_map(|f| date_of(&TablePartition::of(&f, &columns)))
        .min()
}
