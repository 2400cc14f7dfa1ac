//! Every metric the compactor exports, defined in this one place and updated
//! once per round from its [`CompactionMetrics`], together with the round's
//! log line.
//!
//! Every metric carries the label `table` (the table's name: the last segment
//! of its URI, or its `[tables.*]` / routing name), first, before its own
//! labels; a compactor serving several tables reports each through its own
//! [`CompactorTelemetry::for_table`] handle. The number of tables bounds it
//! (`ingest.routing.max_tables`).
//!
//! | metric | type | meaning |
//! | --- | --- | --- |
//! | `tributary_compactor_rounds_total` | counter | rounds run, including those with nothing to do |
//! | `tributary_compactor_failed_rounds_total` | counter | rounds that ended in an error (the compactor retries with backoff) |
//! | `tributary_compactor_commits_total` | counter | Delta commits of compacted data |
//! | `tributary_compactor_commit_duration_seconds` | histogram | time of one Delta commit, retries included |
//! | `tributary_compactor_commit_retries_total` | counter | commit attempts repeated because another writer committed first |
//! | `tributary_compactor_commit_conflicts_total` | counter | commits abandoned on a conflict (the round fails and is retried) |
//! | `tributary_compactor_last_commit_timestamp_seconds` | gauge | Unix time of the last commit |
//! | `tributary_compactor_compacted_files_total` | counter | staged row files merged and deleted |
//! | `tributary_compactor_compacted_bytes_total` | counter | bytes of those files |
//! | `tributary_compactor_compacted_rows_total` | counter | rows added to the table |
//! | `tributary_compactor_duplicate_rows_total` | counter | rows dropped because the table already held their position |
//! | `tributary_compactor_dead_lettered_rows_total` | counter | rows dead-lettered because a table column rejects a value |
//! | `tributary_compactor_written_files_total` | counter | Parquet files added to the table |
//! | `tributary_compactor_superseded_rows_total` | counter | rows dropped because a later row or tombstone of their round has the same key |
//! | `tributary_compactor_tombstones_total` | counter | delete tombstones read |
//! | `tributary_compactor_deleted_rows_total` | counter | rows removed from table files by tombstones |
//! | `tributary_compactor_rewritten_files_total` | counter | table files rewritten to remove those rows |
//! | `tributary_compactor_upsert_replaced_rows_total` | counter | upsert mode: table rows replaced by a newer version of their key |
//! | `tributary_compactor_upsert_outranked_rows_total` | counter | upsert mode: incoming rows dropped because a newer version of their key is in the table (`by="table"`) or in the same round (`by="round"`) |
//! | `tributary_compactor_upsert_probed_files_total` | counter | upsert mode: table files whose row groups were read to find incoming keys |
//! | `tributary_compactor_upsert_row_groups_read_total` | counter | upsert mode: row groups read for that |
//! | `tributary_compactor_upsert_pruned_files_total` | counter | upsert mode: table files ruled out without reading, `by` `statistics` (`_key` min/max) or `bloom_filter` |
//! | `tributary_compactor_backlog_files` | gauge | staged row files waiting after the last round |
//! | `tributary_compactor_backlog_bytes` | gauge | bytes of those files |
//! | `tributary_compactor_backlog_oldest_age_seconds` | gauge | age of the oldest of them (0 when none wait) |
//! | `tributary_compactor_table_files` | gauge | data files in the table |
//! | `tributary_compactor_table_bytes` | gauge | bytes of those files |
//! | `tributary_compactor_table_version` | gauge | the table's Delta version |
//! | `tributary_compactor_compactors` | gauge | compactors dividing the staged source partitions in the last round, this one included |
//! | `tributary_compactor_optimized_files_total` | counter | small table files merged into larger ones by the compactor's upkeep (and removed from the table) |
//! | `tributary_compactor_optimize_added_files_total` | counter | files written in their place |
//! | `tributary_compactor_vacuumed_files_total` | counter | removed and orphaned data files deleted by the upkeep's vacuum |
//! | `tributary_compactor_retention_expired_rows_total` | counter | rows expired by retention rules, by `place` (`table`, `staged`, `dead_letter`; `late_staged`: rows compaction dropped because they arrived for an expired date) |
//! | `tributary_compactor_retention_expired_partitions_total` | counter | table partitions removed whole by the table-wide maximum age |
//! | `tributary_compactor_retention_oldest_event_date_seconds` | gauge | midnight (UTC) of the earliest event date the table holds, in seconds since the Unix epoch, after the last retention run (0 for an empty table) |
//! | `tributary_compactor_upkeep_failures_total` | counter | upkeep runs (optimize, vacuum) that failed; tried again later, compaction goes on |
//! | `tributary_compactor_events_delivered_total` | counter | data availability events delivered, by `kind` and `sink` |
//! | `tributary_compactor_event_delivery_failures_total` | counter | failed delivery attempts, by `sink` (retried with backoff) |
//! | `tributary_compactor_events_pending` | gauge | Delta log entries a sink has not passed yet, by `sink` (0 when it is caught up) |
//! | `tributary_compactor_events_oldest_pending_age_seconds` | gauge | age of the oldest commit a sink has not been told of, by `sink` (0 when none) |
//! | `tributary_compactor_events_lost_total` | counter | log entries removed by another tool before a sink was told of them, by `sink` |
//! | `tributary_compactor_complete_until_timestamp_seconds` | gauge | with `[events.completeness]`: the end of the last period declared complete, in seconds since the Unix epoch (0 before the first; set by the compactor deciding) |

use std::sync::Arc;

use prometheus::core::{MetricVec, MetricVecBuilder};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::compact::CompactionMetrics;
use crate::error::Error;
use crate::optimize::{OptimizeReport, VacuumReport};
use crate::retention::RetentionReport;

/// The compactor's metrics, registered in a Prometheus [`Registry`].
#[derive(Debug, Clone)]
pub struct CompactorTelemetry {
    rounds: IntCounterVec,
    failed_rounds: IntCounterVec,
    commits: IntCounterVec,
    commit_duration: HistogramVec,
    commit_retries: IntCounterVec,
    commit_conflicts: IntCounterVec,
    last_commit_timestamp: IntGaugeVec,
    compacted_files: IntCounterVec,
    compacted_bytes: IntCounterVec,
    compacted_rows: IntCounterVec,
    duplicate_rows: IntCounterVec,
    dead_lettered_rows: IntCounterVec,
    written_files: IntCounterVec,
    superseded_rows: IntCounterVec,
    tombstones: IntCounterVec,
    deleted_rows: IntCounterVec,
    rewritten_files: IntCounterVec,
    upsert_replaced_rows: IntCounterVec,
    upsert_outranked_rows: IntCounterVec,
    upsert_probed_files: IntCounterVec,
    upsert_row_groups_read: IntCounterVec,
    upsert_pruned_files: IntCounterVec,
    backlog_files: IntGaugeVec,
    backlog_bytes: IntGaugeVec,
    backlog_oldest_age: IntGaugeVec,
    table_files: IntGaugeVec,
    table_bytes: IntGaugeVec,
    table_version: IntGaugeVec,
    compactors: IntGaugeVec,
    optimized_files: IntCounterVec,
    optimize_added_files: IntCounterVec,
    vacuumed_files: IntCounterVec,
    upkeep_failures: IntCounterVec,
    events_delivered: IntCounterVec,
    event_delivery_failures: IntCounterVec,
    events_pending: IntGaugeVec,
    events_oldest_pending_age: IntGaugeVec,
    events_lost: IntCounterVec,
    complete_until: IntGaugeVec,
    erasure_requests_unfinished: IntGaugeVec,
    oldest_erasure_request_age: IntGaugeVec,
    retention_expired_rows: IntCounterVec,
    retention_expired_partitions: IntCounterVec,
    retention_oldest_event_date: IntGaugeVec,
    /// The table this handle's metrics are labelled with.
    table: Arc<str>,
}

/// The label every compactor metric carries: the table's name.
const TABLE_LABEL: &str = "table";

/// Buckets of the commit duration histogram, in seconds: a local commit takes
/// milliseconds, an S3 commit with retries seconds.
const COMMIT_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl CompactorTelemetry {
    /// Creates the metrics and registers them in `registry`.
    ///
    /// Fails only if `registry` already holds metrics of the same names.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let name = |n: &str| format!("tributary_compactor_{n}");
        // Every metric is per table: `table` first, then the metric's own
        // labels.
        let counters =
            |n: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let labels: Vec<&str> = [TABLE_LABEL].iter().chain(labels).copied().collect();
                let c = IntCounterVec::new(Opts::new(name(n), help), &labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let counter = |n: &str, help: &str| counters(n, help, &[]);
        let gauges = |n: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
            let labels: Vec<&str> = [TABLE_LABEL].iter().chain(labels).copied().collect();
            let g = IntGaugeVec::new(Opts::new(name(n), help), &labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let gauge = |n: &str, help: &str| gauges(n, help, &[]);
        let commit_duration = HistogramVec::new(
            HistogramOpts::new(
                name("commit_duration_seconds"),
                "Time of one Delta commit of compacted data, retries included.",
            )
            .buckets(COMMIT_DURATION_BUCKETS.to_vec()),
            &[TABLE_LABEL],
        )?;
        registry.register(Box::new(commit_duration.clone()))?;
        Ok(Self {
            rounds: counter("rounds_total", "Compaction rounds run.")?,
            failed_rounds: counter(
                "failed_rounds_total",
                "Compaction rounds that ended in an error.",
            )?,
            commits: counter("commits_total", "Delta commits of compacted data.")?,
            commit_duration,
            commit_retries: counter(
                "commit_retries_total",
                "Commit attempts repeated because another writer committed first.",
            )?,
            commit_conflicts: counter(
                "commit_conflicts_total",
                "Commits abandoned on a conflict with another writer.",
            )?,
            last_commit_timestamp: gauge(
                "last_commit_timestamp_seconds",
                "Unix time of the last commit of compacted data.",
            )?,
            compacted_files: counter(
                "compacted_files_total",
                "Staged row files merged into the table and deleted.",
            )?,
            compacted_bytes: counter("compacted_bytes_total", "Bytes of those row files.")?,
            compacted_rows: counter("compacted_rows_total", "Rows added to the table.")?,
            duplicate_rows: counter(
                "duplicate_rows_total",
                "Rows dropped because the table already held their position.",
            )?,
            dead_lettered_rows: counter(
                "dead_lettered_rows_total",
                "Rows dead-lettered because a table column's type rejects a value.",
            )?,
            written_files: counter("written_files_total", "Parquet files added to the table.")?,
            superseded_rows: counter(
                "superseded_rows_total",
                "Rows dropped because a later row or tombstone of their round has the same key.",
            )?,
            tombstones: counter("tombstones_total", "Delete tombstones read.")?,
            deleted_rows: counter(
                "deleted_rows_total",
                "Rows removed from table files by delete tombstones.",
            )?,
            rewritten_files: counter(
                "rewritten_files_total",
                "Table files rewritten to remove deleted rows.",
            )?,
            upsert_replaced_rows: counter(
                "upsert_replaced_rows_total",
                "Upsert mode: table rows replaced by a newer version of their key.",
            )?,
            upsert_outranked_rows: counters(
                "upsert_outranked_rows_total",
                "Upsert mode: incoming rows dropped because a newer version of their key is in the table or in the same round.",
                &["by"],
            )?,
            upsert_probed_files: counter(
                "upsert_probed_files_total",
                "Upsert mode: table files whose row groups were read to find incoming keys.",
            )?,
            upsert_row_groups_read: counter(
                "upsert_row_groups_read_total",
                "Upsert mode: row groups read to find incoming keys.",
            )?,
            upsert_pruned_files: counters(
                "upsert_pruned_files_total",
                "Upsert mode: table files ruled out without reading, by what ruled them out (statistics, bloom_filter).",
                &["by"],
            )?,
            backlog_files: gauge(
                "backlog_files",
                "Staged row files waiting after the last round.",
            )?,
            backlog_bytes: gauge("backlog_bytes", "Bytes of staged row files waiting.")?,
            backlog_oldest_age: gauge(
                "backlog_oldest_age_seconds",
                "Age of the oldest staged row file waiting (0 when none wait).",
            )?,
            table_files: gauge("table_files", "Data files in the table.")?,
            table_bytes: gauge("table_bytes", "Bytes of the table's data files.")?,
            table_version: gauge("table_version", "The table's Delta version.")?,
            compactors: gauge(
                "compactors",
                "Compactors dividing the staged source partitions in the last round.",
            )?,
            optimized_files: counter(
                "optimized_files_total",
                "Small table files merged into larger ones by the compactor's upkeep.",
            )?,
            optimize_added_files: counter(
                "optimize_added_files_total",
                "Table files written by the upkeep's merges.",
            )?,
            vacuumed_files: counter(
                "vacuumed_files_total",
                "Removed or orphaned data files deleted by the upkeep's vacuum.",
            )?,
            upkeep_failures: counter(
                "upkeep_failures_total",
                "Upkeep runs (optimize, vacuum) that failed.",
            )?,
            events_delivered: counters(
                "events_delivered_total",
                "Data availability events delivered.",
                &["kind", "sink"],
            )?,
            event_delivery_failures: counters(
                "event_delivery_failures_total",
                "Failed event delivery attempts (retried with backoff).",
                &["sink"],
            )?,
            events_pending: gauges(
                "events_pending",
                "Delta log entries a sink has not passed yet.",
                &["sink"],
            )?,
            events_oldest_pending_age: gauges(
                "events_oldest_pending_age_seconds",
                "Age of the oldest commit a sink has not been told of.",
                &["sink"],
            )?,
            events_lost: counters(
                "events_lost_total",
                "Log entries removed by another tool before a sink was told of them.",
                &["sink"],
            )?,
            complete_until: gauge(
                "complete_until_timestamp_seconds",
                "The end of the last period declared complete (0 before the first).",
            )?,
            erasure_requests_unfinished: gauge(
                "erasure_requests_unfinished",
                "Erasure (forget) requests recorded in the ledger and not yet complete.",
            )?,
            oldest_erasure_request_age: gauge(
                "oldest_erasure_request_age_seconds",
                "Age of the oldest unfinished erasure request (0 when none); GDPR allows a month.",
            )?,
            retention_expired_rows: counters(
                "retention_expired_rows_total",
                "Rows expired by retention rules, by place (table, staged, dead_letter, late_staged).",
                &["place"],
            )?,
            retention_expired_partitions: counter(
                "retention_expired_partitions_total",
                "Table partitions removed whole by the table-wide maximum age.",
            )?,
            retention_oldest_event_date: gauge(
                "retention_oldest_event_date_seconds",
                "Midnight (UTC) of the earliest event date in the table after the last retention run, in seconds since the Unix epoch.",
            )?,
            table: Arc::from(""),
        })
    }

    /// The same metrics, labelled `table="<name>"`: the handle each table's
    /// rounds, upkeep, retention and event delivery report through.
    /// The table's series of the metrics without other labels exist (at 0)
    /// from then on, as a single table's did before routing.
    pub fn for_table(&self, name: &str) -> Self {
        let handle = Self {
            table: Arc::from(name),
            ..self.clone()
        };
        for counter in [
            &handle.rounds,
            &handle.failed_rounds,
            &handle.commits,
            &handle.commit_retries,
            &handle.commit_conflicts,
            &handle.compacted_files,
            &handle.compacted_bytes,
            &handle.compacted_rows,
            &handle.duplicate_rows,
            &handle.dead_lettered_rows,
            &handle.written_files,
            &handle.superseded_rows,
            &handle.tombstones,
            &handle.deleted_rows,
            &handle.rewritten_files,
            &handle.upsert_replaced_rows,
            &handle.upsert_probed_files,
            &handle.upsert_row_groups_read,
            &handle.optimized_files,
            &handle.optimize_added_files,
            &handle.vacuumed_files,
            &handle.upkeep_failures,
            &handle.retention_expired_partitions,
        ] {
            handle.at(counter);
        }
        for gauge in [
            &handle.last_commit_timestamp,
            &handle.backlog_files,
            &handle.backlog_bytes,
            &handle.backlog_oldest_age,
            &handle.table_files,
            &handle.table_bytes,
            &handle.table_version,
            &handle.compactors,
            &handle.complete_until,
            &handle.erasure_requests_unfinished,
            &handle.oldest_erasure_request_age,
            &handle.retention_oldest_event_date,
        ] {
            handle.at(gauge);
        }
        handle.at(&handle.commit_duration);
        handle
    }

    /// Adds each count to this table's series of `metric` with the given
    /// value of its second label.
    fn add_each(&self, metric: &IntCounterVec, counts: &[(&str, u64)]) {
        for (label, count) in counts {
            metric
                .with_label_values(&[&*self.table, label])
                .inc_by(*count);
        }
    }

    /// This handle's series of `metric`.
    fn at<T: MetricVecBuilder>(&self, metric: &MetricVec<T>) -> T::M {
        metric.with_label_values(&[&*self.table])
    }

    /// Records the erasure ledger: `unfinished` requests, the oldest
    /// recorded at `oldest_ms` (ms since the Unix epoch).
    pub fn erasure_requests(&self, unfinished: u64, oldest_ms: Option<i64>) {
        self.at(&self.erasure_requests_unfinished)
            .set(gauge_value(unfinished));
        let age_ms = oldest_ms.map_or(0, |ms| (chrono::Utc::now().timestamp_millis() - ms).max(0));
        self.at(&self.oldest_erasure_request_age).set(age_ms / 1000);
    }

    /// Records that every period ending by `until_us` (microseconds since
    /// the Unix epoch) is complete.
    pub fn complete_until(&self, until_us: i64) {
        self.at(&self.complete_until)
            .set(until_us.div_euclid(1_000_000));
    }

    /// Records an event of `kind` delivered to `sink`.
    pub fn event_delivered(&self, sink: &str, kind: &str) {
        self.events_delivered
            .with_label_values(&[&*self.table, kind, sink])
            .inc();
    }

    /// Records a failed delivery to `sink`: `pending` log entries wait, the
    /// oldest committed `oldest_age_s` seconds ago.
    pub fn event_delivery_failed(&self, sink: &str, error: &str, pending: u64, oldest_age_s: i64) {
        self.event_delivery_failures
            .with_label_values(&[&*self.table, sink])
            .inc();
        self.events_waiting(sink, pending, oldest_age_s);
        tracing::warn!(
            table = %self.table,
            sink,
            error,
            pending,
            "event delivery failed; retrying with backoff"
        );
    }

    /// Sets `sink`'s backlog gauges (0 and 0 when it is caught up).
    pub fn events_waiting(&self, sink: &str, pending: u64, oldest_age_s: i64) {
        self.events_pending
            .with_label_values(&[&*self.table, sink])
            .set(gauge_value(pending));
        self.events_oldest_pending_age
            .with_label_values(&[&*self.table, sink])
            .set(oldest_age_s.max(0));
    }

    /// Records `lost` log entries removed before `sink` was told of them.
    pub fn events_lost(&self, sink: &str, lost: u64) {
        self.events_lost
            .with_label_values(&[&*self.table, sink])
            .inc_by(lost);
        tracing::error!(
            table = %self.table,
            sink,
            lost,
            "Delta log entries were removed before this sink was told of them"
        );
    }

    /// Records a finished round.
    pub fn round_finished(&self, round: &CompactionMetrics) {
        self.at(&self.rounds).inc();
        self.at(&self.compacted_files).inc_by(round.files_compacted);
        self.at(&self.compacted_bytes).inc_by(round.bytes_compacted);
        self.at(&self.compacted_rows).inc_by(round.rows_written);
        self.at(&self.duplicate_rows)
            .inc_by(round.rows_below_watermark);
        self.at(&self.dead_lettered_rows)
            .inc_by(round.rows_dead_lettered);
        self.at(&self.written_files).inc_by(round.parquet_files);
        self.at(&self.superseded_rows)
            .inc_by(round.rows_deduplicated);
        self.at(&self.tombstones).inc_by(round.tombstones);
        self.add_each(
            &self.retention_expired_rows,
            &[("late_staged", round.rows_expired_late)],
        );
        self.at(&self.deleted_rows)
            .inc_by(round.rows_deleted_from_table);
        self.at(&self.rewritten_files)
            .inc_by(round.table_files_rewritten);
        self.at(&self.upsert_replaced_rows)
            .inc_by(round.rows_upserted);
        self.add_each(
            &self.upsert_outranked_rows,
            &[
                ("table", round.rows_older_than_table),
                ("round", round.rows_older_than_round),
            ],
        );
        self.at(&self.upsert_probed_files)
            .inc_by(round.upsert_files_probed);
        self.at(&self.upsert_row_groups_read)
            .inc_by(round.upsert_row_groups_read);
        self.add_each(
            &self.upsert_pruned_files,
            &[
                ("statistics", round.upsert_pruned_by_statistics),
                ("bloom_filter", round.upsert_pruned_by_bloom_filter),
            ],
        );
        self.at(&self.commit_retries).inc_by(round.commit_retries);
        if round.commits > 0 {
            self.at(&self.commits).inc_by(round.commits);
            self.at(&self.commit_duration)
                .observe(round.commit_duration_ms as f64 / 1000.0);
            self.at(&self.last_commit_timestamp)
                .set(chrono::Utc::now().timestamp());
        }
        self.at(&self.backlog_files)
            .set(gauge_value(round.backlog_files));
        self.at(&self.backlog_bytes)
            .set(gauge_value(round.backlog_bytes));
        self.at(&self.backlog_oldest_age)
            .set(gauge_value(round.backlog_oldest_age_ms / 1000));
        self.at(&self.table_files)
            .set(gauge_value(round.table_files));
        self.at(&self.table_bytes)
            .set(gauge_value(round.table_bytes));
        self.at(&self.compactors).set(gauge_value(round.compactors));
        if let Some(version) = round.table_version {
            self.at(&self.table_version).set(gauge_value(version));
        }
        if round.commits > 0 {
            tracing::info!(
                table = %self.table,
                version = round.table_version,
                files = round.files_compacted,
                rows = round.rows_written,
                parquet_files = round.parquet_files,
                commit_ms = round.commit_duration_ms,
                backlog_files = round.backlog_files,
                compactors = round.compactors,
                "compacted staged row files"
            );
        }
    }

    /// Records the upkeep's merge of small files.
    pub fn optimized(&self, report: &OptimizeReport) {
        self.at(&self.optimized_files).inc_by(report.files_removed);
        self.at(&self.optimize_added_files)
            .inc_by(report.files_added);
        if report.commits > 0 {
            tracing::info!(
                table = %self.table,
                partitions = report.partitions,
                files_removed = report.files_removed,
                files_added = report.files_added,
                bytes_added = report.bytes_added,
                rows = report.rows,
                "merged small table files"
            );
        }
    }

    /// Records the upkeep's vacuum.
    pub fn vacuumed(&self, report: &VacuumReport) {
        let files = report.files_deleted.len() as u64;
        self.at(&self.vacuumed_files).inc_by(files);
        tracing::info!(table = %self.table, files, "vacuumed the table");
    }

    /// Records a retention run (the compactor's, or `tributary retention`'s
    /// when it pushes metrics).
    pub fn retention_ran(&self, report: &RetentionReport) {
        let table = report.table.rows_removed + report.table.tenants.rows_erased;
        self.add_each(
            &self.retention_expired_rows,
            &[
                ("table", table),
                ("staged", report.row_files.staged_rows_expired),
                ("dead_letter", report.row_files.dead_letters_expired),
            ],
        );
        self.at(&self.retention_expired_partitions)
            .inc_by(report.table.partitions_removed.len() as u64);
        let oldest = report
            .oldest_event_date
            .as_deref()
            .and_then(crate::retention::rules::parse_date)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(0, |t| t.and_utc().timestamp());
        self.at(&self.retention_oldest_event_date).set(oldest);
        if report.rows_expired > 0 || report.objects_deleted > 0 {
            tracing::info!(
                table = %self.table,
                rows_expired = report.rows_expired,
                partitions_removed = report.table.partitions_removed.len(),
                files_rewritten = report.table.tenants.files_rewritten,
                objects_deleted = report.objects_deleted,
                oldest_event_date = report.oldest_event_date.as_deref().unwrap_or(""),
                "applied retention rules"
            );
        }
    }

    /// Records an upkeep `operation` that failed with `error`.
    pub fn upkeep_failed(&self, operation: &str, error: &Error) {
        self.at(&self.upkeep_failures).inc();
        tracing::warn!(table = %self.table, operation, error = %DisplayChain(error), "table upkeep failed; trying again later");
    }

    /// Records a round that failed with `error`.
    pub fn round_failed(&self, error: &Error) {
        self.at(&self.rounds).inc();
        self.at(&self.failed_rounds).inc();
        if error.is_commit_conflict() {
            self.at(&self.commit_conflicts).inc();
        }
        tracing::error!(table = %self.table, error = %DisplayChain(error), "compaction round failed; retrying");
    }
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Formats an error with its sources, `a: b: c`.
pub(crate) struct DisplayChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder, TextEncoder};

    use super::*;

    fn exposition(registry: &Registry) -> String {
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .unwrap();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn each_table_reports_its_own_series_upsert_counters_included() {
        let registry = Registry::new();
        let telemetry = CompactorTelemetry::register(&registry).unwrap();
        telemetry.for_table("a").round_finished(&CompactionMetrics {
            rows_written: 5,
            rows_upserted: 2,
            rows_older_than_table: 4,
            upsert_pruned_by_bloom_filter: 3,
            ..CompactionMetrics::default()
        });
        telemetry.for_table("b").round_finished(&CompactionMetrics {
            rows_written: 7,
            ..CompactionMetrics::default()
        });
        let text = exposition(&registry);
        for series in [
            r#"tributary_compactor_compacted_rows_total{table="a"} 5"#,
            r#"tributary_compactor_compacted_rows_total{table="b"} 7"#,
            r#"tributary_compactor_rounds_total{table="b"} 1"#,
            // Series exist from the start, at 0.
            r#"tributary_compactor_commits_total{table="b"} 0"#,
            r#"tributary_compactor_failed_rounds_total{table="a"} 0"#,
            r#"tributary_compactor_upsert_replaced_rows_total{table="a"} 2"#,
            r#"tributary_compactor_upsert_outranked_rows_total{by="table",table="a"} 4"#,
            r#"tributary_compactor_upsert_pruned_files_total{by="bloom_filter",table="a"} 3"#,
        ] {
            assert!(text.contains(series), "{series} not in\n{text}");
        }
    }
}
