//! Removing rows from existing table files: the rows whose key (tombstone
//! deletes) or subject (forget) is in a given set.
//!
//! ```text
//! every file in the snapshot
//!   ─► statistics: skip files whose min/max of the column excludes every value
//!      (and, with free text, whose redact columns are all null)
//!   ─► bloom filters: skip files no row group of which may hold a value, and
//!      whose free-text index (crate::text_index) rules every identifier out
//!   ─► read, drop matching rows, redact the redact columns, search every
//!      other column (a match left there is residue), write the rest (same
//!      layout and order)
//!   ─► `remove` (dataChange) + `add` actions for the caller's commit
//! ```
//!
//! Callers hold the lease of every partition whose files they rewrite (see
//! [`crate::leases`]) from before they read the snapshot until their commit
//! lands.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use deltalake::arrow::array::BooleanArray;
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::{Action, Remove};
use deltalake::table::state::DeltaTableState;
use object_store::path::Path;
use serde::Serialize;
use tributary_config::CompactConfig;
use tributary_lake::Lake;

use crate::error::{Error, Result};
use crate::files::{Mention, TableFile, TableWriter, matching_rows};
use crate::forget::{Matcher, Residue};
use crate::leases::PartitionLeases;
use crate::partition::{TablePartition, table_partition_columns};
use crate::progress::Progress;
use crate::table::delta_error;
use crate::text_index::INDEX_COLUMN;

/// Rows to remove: those whose `column` holds one of `values`.
#[derive(Debug, Clone)]
pub struct Erase {
    /// A string column of the table.
    pub column: String,
    /// The values to remove.
    pub values: HashSet<String>,
}

/// Free text a forget rewrite searches: every string value of every file
/// it reads, for the identifiers as substrings; occurrences in the redact
/// columns are replaced, occurrences elsewhere are residue.
#[derive(Debug, Clone)]
pub struct FreeText {
    /// The request's identifiers.
    pub matcher: Arc<Matcher>,
    /// `lake.redact_columns`.
    pub redact_columns: Vec<String>,
}

/// What a rewrite erases: rows by value, and (for forget) free text.
#[derive(Debug, Clone, Copy)]
pub struct Erasure<'a> {
    /// Rows to remove.
    pub rows: &'a [Erase],
    /// Text to search and redact in every file read.
    pub text: Option<&'a FreeText>,
}

impl FreeText {
    /// Whether any column is redacted (else no file is read for free text
    /// alone).
    fn redacts(&self) -> bool {
        !self.redact_columns.is_empty() && self.matcher.identifiers().next().is_some()
    }
}

/// What a rewrite did, for reports and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RewriteReport {
    /// Table files considered.
    pub files_scanned: u64,
    /// Files skipped because their statistics exclude every value.
    pub pruned_by_statistics: u64,
    /// Files skipped because their bloom filters exclude every value.
    pub pruned_by_bloom_filter: u64,
    /// Files read in full (their bloom filters matched).
    pub files_read: u64,
    /// Files replaced because they held matching rows.
    pub files_rewritten: u64,
    /// Matching rows removed.
    pub rows_erased: u64,
    /// Bytes of the replaced files.
    pub bytes_rewritten: u64,
    /// Values of redact columns in which an identifier was replaced.
    pub values_redacted: u64,
    /// Files read because they hold free text but no free-text index (or
    /// one that does not cover every redact column): written before
    /// `lake.redact_columns` named their columns.
    pub read_without_index: u64,
    /// Columns of files read that still hold an identifier after the
    /// rewrite (columns that are neither subject nor redact columns): the
    /// new file when the file was rewritten.
    pub residue: Vec<Residue>,
    /// The files planning ruled out, each with the reason: what a forget's
    /// verification trusts instead of reading them.
    #[serde(skip)]
    pub pruned: Vec<(Path, Pruned)>,
    /// Time spent reading and writing the files pruning left (the rest of
    /// a rewrite's time is planning).
    #[serde(skip)]
    pub rewrite_time: Duration,
}

/// Why planning ruled a table file out: it proves that no row of the file
/// holds any of the values in the erased columns, nor (with redact columns)
/// any identifier-shaped mention of them in the free text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pruned {
    /// The file's min/max statistics of every erased column exclude every
    /// value.
    Statistics,
    /// The bloom filters of every row group exclude every value, the
    /// free-text index's (`_redact_tokens`) included.
    BloomFilter,
}

/// A table file whose statistics say it may hold a matching row.
#[derive(Debug, Clone)]
pub struct Candidate {
    path: Path,
    size: u64,
    partition: TablePartition,
    remove: Remove,
}

impl Candidate {
    /// The table partition the file belongs to.
    pub fn partition(&self) -> &TablePartition {
        &self.partition
    }

    /// The file's path under the table root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Files of `state` whose statistics do not rule out every value of
/// `erase`, nor (with `text`) every mention in a redact column: only a
/// redact column that is null in every row of a file rules that out.
pub fn candidates(
    state: &DeltaTableState,
    erasure: Erasure<'_>,
    report: &mut RewriteReport,
) -> Vec<Candidate> {
    let redact_columns = erasure
        .text
        .filter(|t| t.redacts())
        .map(|t| &t.redact_columns);
    let mut found = Vec::new();
    let columns = table_partition_columns(state);
    for file in state.log_data().iter() {
        report.files_scanned += 1;
        let stats: Option<serde_json::Value> =
            file.stats().and_then(|s| serde_json::from_str(&s).ok());
        let may_hold = erasure.rows.iter().any(|e| {
            let bound = |kind: &str| {
                stats
                    .as_ref()
                    .and_then(|s| s[kind][&e.column].as_str())
                    .map(str::to_string)
            };
            match (bound("minValues"), bound("maxValues")) {
                (Some(min), Some(max)) => e
                    .values
                    .iter()
                    .any(|v| min.as_str() <= v.as_str() && v.as_str() <= max.as_str()),
                _ => true,
            }
        }) || redact_columns.is_some_and(|columns| {
            let count = |key: &dyn Fn(&serde_json::Value) -> &serde_json::Value| {
                stats.as_ref().and_then(|s| key(s).as_i64())
            };
            let rows = count(&|s| &s["numRecords"]);
            columns
                .iter()
                .any(|c| rows.is_none() || count(&|s| &s["nullCount"][c]) != rows)
        });
        if !may_hold {
            report.pruned_by_statistics += 1;
            report
                .pruned
                .push((file.object_store_path(), Pruned::Statistics));
            continue;
        }
        let partition = TablePartition::of(&file, &columns);
        found.push(Candidate {
            path: file.object_store_path(),
            size: file.size().max(0) as u64,
            partition,
            remove: file.remove_action(true),
        });
    }
    found
}

/// Plans and runs a rewrite on the table as it is once the leases of every
/// partition it touches are held ([`PartitionLeases::plan_holding`]). The
/// leases stay in `leases` for the caller's commit, and `table` is left at
/// the snapshot the returned actions were planned on. With
/// `target_file_bytes` `None` (a dry run) it takes no lease and only counts.
/// `show_progress` shows files checked.
pub async fn rewrite_under_leases(
    config: &CompactConfig,
    lake: &Lake,
    table: &mut DeltaTable,
    erasure: Erasure<'_>,
    target_file_bytes: Option<u64>,
    leases: &mut PartitionLeases,
    show_progress: bool,
) -> Result<(Vec<Action>, RewriteReport)> {
    let (found, mut report) = leases
        .plan_holding(config, lake, table, |state| {
            let mut report = RewriteReport::default();
            let found = candidates(&state, erasure, &mut report);
            let needed = match target_file_bytes {
                Some(_) => partitions(&found),
                None => BTreeSet::new(),
            };
            Box::pin(std::future::ready(Ok(((found, report), needed))))
        })
        .await?;
    let state = table.snapshot().map_err(|e| delta_error(lake, "read", e))?;
    let mut progress =
        show_progress.then(|| Progress::new("table files checked", found.len() as u64));
    let actions = rewrite(
        lake,
        state,
        found,
        erasure,
        target_file_bytes,
        &mut report,
        progress.as_mut(),
    )
    .await?;
    Ok((actions, report))
}

/// The partitions `candidates` belong to: the leases a rewrite needs.
pub fn partitions(candidates: &[Candidate]) -> BTreeSet<TablePartition> {
    candidates.iter().map(|c| c.partition.clone()).collect()
}

/// Rewrites the candidates that hold matching rows (or, with `text`,
/// mentions in a redact column), in files of at most `target_file_bytes`.
/// Returns the `remove` and `add` actions to commit. The new files keep the
/// old files' row order. With `target_file_bytes` `None` (a dry run) it only
/// counts: the report says what a rewrite would do.
pub async fn rewrite(
    lake: &Lake,
    state: &DeltaTableState,
    candidates: Vec<Candidate>,
    erasure: Erasure<'_>,
    target_file_bytes: Option<u64>,
    report: &mut RewriteReport,
    mut progress: Option<&mut Progress>,
) -> Result<Vec<Action>> {
    let Erasure { rows: erase, text } = erasure;
    let mut actions = Vec::new();
    for candidate in candidates {
        if let Some(progress) = progress.as_deref_mut() {
            progress.step();
        }
        let mut file = TableFile::open(lake, candidate.path.clone(), candidate.size).await?;
        let mut may_hold = false;
        for e in erase {
            if file.may_contain(&e.column, &e.values).await? {
                may_hold = true;
                break;
            }
        }
        if !may_hold && let Some(text) = text.filter(|t| t.redacts()) {
            match file
                .may_mention(&text.redact_columns, text.matcher.identifiers())
                .await?
            {
                Mention::No => {}
                Mention::Maybe => may_hold = true,
                Mention::Unindexed => {
                    report.read_without_index += 1;
                    may_hold = true;
                }
            }
        }
        if !may_hold {
            report.pruned_by_bloom_filter += 1;
            report.pruned.push((candidate.path, Pruned::BloomFilter));
            continue;
        }
        report.files_read += 1;
        let reading = Instant::now();
        let mut rows = file.rows(candidate.partition.clone())?;
        let mut writer = target_file_bytes
            .map(|target| TableWriter::new(lake, state, rows.schema().clone(), &[], target));
        let (mut erased, mut redacted) = (0u64, 0u64);
        let mut residue: BTreeSet<String> = BTreeSet::new();
        while let Some(batch) = rows.next().await? {
            let mut keep = vec![true; batch.num_rows()];
            for e in erase {
                if let Some(matches) = matching_rows(&batch, &e.column, &e.values) {
                    for (k, m) in keep.iter_mut().zip(matches) {
                        *k &= !m;
                    }
                }
            }
            let removed = keep.iter().filter(|k| !**k).count() as u64;
            erased += removed;
            let batch = if removed == 0 {
                batch
            } else {
                filter_record_batch(&batch, &BooleanArray::from(keep)).map_err(|source| {
                    Error::Arrow {
                        path: candidate.path.to_string(),
                        source,
                    }
                })?
            };
            let batch = match text {
                Some(text) => {
                    let (batch, changed) = redact(&batch, &text.matcher, &text.redact_columns)
                        .map_err(|source| Error::Arrow {
                            path: candidate.path.to_string(),
                            source,
                        })?;
                    redacted += changed;
                    residue.extend(text.matcher.columns_holding(&batch, &[INDEX_COLUMN]));
                    batch
                }
                None => batch,
            };
            if let Some(writer) = &mut writer {
                writer.write(&batch).await?;
            }
        }
        report.values_redacted += redacted;
        if erased == 0 && redacted == 0 {
            // A bloom filter false positive, or a file holding identifiers
            // only where they are not erased: keep the file as it is.
            report
                .residue
                .extend(residue.into_iter().map(|column| Residue {
                    object: candidate.path.to_string(),
                    column,
                }));
            if let Some(writer) = writer {
                writer.abort().await;
            }
            report.rewrite_time += reading.elapsed();
            continue;
        }
        report.files_rewritten += 1;
        report.rows_erased += erased;
        report.bytes_rewritten += candidate.size;
        let objects = match writer {
            Some(writer) => {
                let adds = writer.finish().await?;
                let paths: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();
                actions.extend(adds.into_iter().map(Action::Add));
                actions.push(Action::Remove(candidate.remove));
                paths
            }
            None => vec![candidate.path.to_string()],
        };
        for column in residue {
            report.residue.extend(objects.iter().map(|object| Residue {
                object: object.clone(),
                column: column.clone(),
            }));
        }
        report.rewrite_time += reading.elapsed();
    }
    Ok(actions)
}

/// `batch` with every identifier in `columns` (string columns) replaced by
/// [`crate::forget::REDACTED`], and how many values changed.
pub fn redact(
    batch: &RecordBatch,
    matcher: &Matcher,
    columns: &[String],
) -> std::result::Result<(RecordBatch, u64), deltalake::arrow::error::ArrowError> {
    let mut arrays = batch.columns().to_vec();
    let mut changed = 0;
    for name in columns {
        let Ok(i) = batch.schema().index_of(name) else {
            continue;
        };
        if let Some((array, n)) = matcher.redact_array(&arrays[i]) {
            arrays[i] = array;
            changed += n;
        }
    }
    if changed == 0 {
        return Ok((batch.clone(), 0));
    }
    Ok((RecordBatch::try_new(batch.schema(), arrays)?, changed))
}
