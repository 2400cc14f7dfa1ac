//! Every metric ingest exports, defined in this one place, each updated
//! together with the log line that reports the same event. Updated once per
//! batch, never per record.
//!
//! All metrics carry the constant label `stream`; the only other labels are
//! the dead-letter `reason`, one of [`Reason::ALL`], the `table` of the
//! metrics that are per table (the table's name: the last segment of
//! `lake.table_uri`, or with `[ingest.routing]` the routed table's name, at
//! most `ingest.routing.max_tables` of them), the Kafka `partition`
//! (`<topic>-<n>`) of the lag gauge, present while the partition is assigned
//! to this process, and for Kinesis the `shard`.
//!
//! Per `table`: `received_records`, `received_bytes`, `decoded_records`,
//! `dead_lettered_records`, `staged_rows`, `staged_files`, `staged_bytes`,
//! `duplicate_batches` and `batch_latency_seconds`.
//!
//! | metric | type | meaning |
//! | --- | --- | --- |
//! | `tributary_ingest_received_records_total` | counter | messages read from the source, good and bad |
//! | `tributary_ingest_received_bytes_total` | counter | bytes of those messages |
//! | `tributary_ingest_decoded_records_total` | counter | messages that became rows |
//! | `tributary_ingest_dead_lettered_records_total` | counter | messages dead-lettered, by `reason` |
//! | `tributary_ingest_staged_rows_total` | counter | rows in staged row files |
//! | `tributary_ingest_staged_files_total` | counter | row files staged |
//! | `tributary_ingest_staged_bytes_total` | counter | bytes of row files staged |
//! | `tributary_ingest_duplicate_batches_total` | counter | batches dropped because another writer had staged them (a zombie or an overlapping worker) |
//! | `tributary_ingest_batch_latency_seconds` | histogram | from the start of a batch's read to its row file being staged |
//! | `tributary_ingest_source_up` | gauge | 1 while the source answers (last listing or read succeeded), else 0 |
//! | `tributary_ingest_source_lag_bytes` | gauge | files source: bytes not yet staged (after the staged offset of plain files; the compressed size of `.gz` files not read to their end) |
//! | `tributary_ingest_registry_unavailable_total` | counter | schema lookups that failed because the registry was unreachable (each is retried; no message is dead-lettered for it) |
//! | `tributary_ingest_kafka_lag_records` | gauge | Kafka: per assigned `partition`, the broker's high watermark minus the next offset to stage (messages produced but not yet staged) |
//! | `tributary_ingest_kafka_assigned_partitions` | gauge | Kafka: partitions assigned to this process |
//! | `tributary_ingest_kafka_rebalances_total` | counter | Kafka: assignments and revocations this process took part in |
//! | `tributary_ingest_kinesis_records_total` | counter | Kinesis records read, by `shard` (an aggregate counts once; its user records are `received_records`) |
//! | `tributary_ingest_kinesis_bytes_total` | counter | bytes of Kinesis record data read, by `shard` |
//! | `tributary_ingest_kinesis_millis_behind_latest` | gauge | `MillisBehindLatest` of each shard's last GetRecords answer, by `shard` |
//! | `tributary_ingest_kinesis_retries_total` | counter | Kinesis calls retried after throttling (`error` = the exception name) or a `connection`/`server` error |
//! | `tributary_ingest_kinesis_leases_held` | gauge | shard leases this worker holds |
//! | `tributary_ingest_kinesis_lease_changes_total` | counter | lease changes of this worker, by `change`: `acquired`, `released`, `finished` (shard read to its end), `lost` |

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use serde::Serialize;
use tributary_lake::PartitionId;
use tributary_lake::dead_letter::Reason;

use crate::batch::EncodedBatch;
use crate::route::TableId;

mod kinesis;
pub use kinesis::KinesisMetrics;

/// Ingest's metrics, registered in a Prometheus [`Registry`].
#[derive(Debug, Clone)]
pub struct IngestTelemetry {
    received_records: IntCounterVec,
    received_bytes: IntCounterVec,
    decoded_records: IntCounterVec,
    dead_lettered_records: IntCounterVec,
    staged_rows: IntCounterVec,
    staged_files: IntCounterVec,
    staged_bytes: IntCounterVec,
    duplicate_batches: IntCounterVec,
    batch_latency: HistogramVec,
    /// Tables whose dead-letter series exist (one per reason, from zero).
    tables: Arc<Mutex<BTreeSet<TableId>>>,
    source_up: IntGauge,
    source_lag: IntGauge,
    registry_unavailable: IntCounter,
    kafka_lag: IntGaugeVec,
    kafka_assigned: IntGauge,
    kafka_rebalances: IntCounter,
    /// The Kinesis source's metrics.
    pub(crate) kinesis: KinesisMetrics,
}

/// A copy of ingest's counters at one moment (for reports and the quickstart).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IngestSnapshot {
    /// Messages read (good and bad).
    pub messages: u64,
    /// Bytes of those messages.
    pub message_bytes: u64,
    /// Rows staged.
    pub rows: u64,
    /// Row files staged.
    pub row_files: u64,
    /// Bytes of row files staged.
    pub row_file_bytes: u64,
    /// Messages dead-lettered.
    pub dead_letters: u64,
    /// Batches dropped because another writer had staged them already.
    pub dropped_batches: u64,
}

/// Buckets of the batch latency histogram, in seconds: a file batch takes
/// milliseconds, a batch that waits for a slow source up to `max_latency_ms`.
const BATCH_LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl IngestTelemetry {
    /// Creates the metrics of `stream` and registers them in `registry`.
    ///
    /// Fails only if `registry` already holds metrics of the same names.
    pub fn register(registry: &Registry, stream: &str) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| {
            Opts::new(format!("tributary_ingest_{name}"), help).const_label("stream", stream)
        };
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::with_opts(opts(name, help))?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let per_table = |name: &str, help: &str| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(opts(name, help), &["table"])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let dead_lettered_records = IntCounterVec::new(
            opts(
                "dead_lettered_records_total",
                "Messages written to the dead-letter store, by reason and table.",
            ),
            &["reason", "table"],
        )?;
        registry.register(Box::new(dead_lettered_records.clone()))?;
        let batch_latency = HistogramVec::new(
            HistogramOpts::from(opts(
                "batch_latency_seconds",
                "Time from the start of a batch's read to its row file being staged.",
            ))
            .buckets(BATCH_LATENCY_BUCKETS.to_vec()),
            &["table"],
        )?;
        registry.register(Box::new(batch_latency.clone()))?;
        let source_up = IntGauge::with_opts(opts(
            "source_up",
            "1 while the source answers (its last listing or read succeeded), else 0.",
        ))?;
        registry.register(Box::new(source_up.clone()))?;
        let source_lag = IntGauge::with_opts(opts(
            "source_lag_bytes",
            "Files source: bytes of the watched files not yet staged.",
        ))?;
        registry.register(Box::new(source_lag.clone()))?;
        let kafka_lag = IntGaugeVec::new(
            opts(
                "kafka_lag_records",
                "Kafka: the partition's high watermark minus the next offset to stage.",
            ),
            &["partition"],
        )?;
        registry.register(Box::new(kafka_lag.clone()))?;
        let kafka_assigned = IntGauge::with_opts(opts(
            "kafka_assigned_partitions",
            "Kafka: partitions assigned to this process.",
        ))?;
        registry.register(Box::new(kafka_assigned.clone()))?;
        Ok(Self {
            received_records: per_table(
                "received_records_total",
                "Messages read from the source, good and bad.",
            )?,
            received_bytes: per_table("received_bytes_total", "Bytes of messages read.")?,
            decoded_records: per_table(
                "decoded_records_total",
                "Messages decoded and flattened into rows.",
            )?,
            dead_lettered_records,
            staged_rows: per_table("staged_rows_total", "Rows in staged row files.")?,
            staged_files: per_table("staged_files_total", "Row files staged.")?,
            staged_bytes: per_table("staged_bytes_total", "Bytes of row files staged.")?,
            duplicate_batches: per_table(
                "duplicate_batches_total",
                "Batches dropped because another writer had staged their positions already.",
            )?,
            batch_latency,
            tables: Arc::default(),
            source_up,
            source_lag,
            registry_unavailable: counter(
                "registry_unavailable_total",
                "Schema lookups that failed because the registry was unreachable (retried).",
            )?,
            kafka_lag,
            kafka_assigned,
            kafka_rebalances: counter(
                "kafka_rebalances_total",
                "Kafka: assignments and revocations this process took part in.",
            )?,
            kinesis: KinesisMetrics::register(registry, stream)?,
        })
    }

    /// The counters now, summed over the tables.
    pub fn snapshot(&self) -> IngestSnapshot {
        IngestSnapshot {
            messages: total(&self.received_records),
            message_bytes: total(&self.received_bytes),
            rows: total(&self.staged_rows),
            row_files: total(&self.staged_files),
            row_file_bytes: total(&self.staged_bytes),
            dead_letters: total(&self.dead_lettered_records),
            dropped_batches: total(&self.duplicate_batches),
        }
    }

    /// Whether the source answered last time it was asked.
    pub fn source_connected(&self) -> bool {
        self.source_up.get() == 1
    }

    /// A schema lookup failed because the registry was unreachable.
    pub(crate) fn registry_unavailable(&self) {
        self.registry_unavailable.inc();
    }

    pub(crate) fn source_answered(&self, up: bool) {
        self.source_up.set(i64::from(up));
    }

    pub(crate) fn source_unread(&self, bytes: u64) {
        self.source_lag
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Kafka: `partition` (`<topic>-<n>`) has `lag` messages not yet staged.
    pub(crate) fn kafka_lag(&self, partition: &str, lag: i64) {
        self.kafka_lag.with_label_values(&[partition]).set(lag);
    }

    /// Kafka: the assignment changed; `assigned` partitions are held now and
    /// `revoked` (by name) are no longer.
    pub(crate) fn kafka_rebalanced(&self, assigned: usize, revoked: &[String]) {
        self.kafka_rebalances.inc();
        self.kafka_assigned
            .set(i64::try_from(assigned).unwrap_or(i64::MAX));
        for partition in revoked {
            // A partition revoked before its first lag reading has no series.
            let _ = self.kafka_lag.remove_label_values(&[partition]);
        }
    }

    /// A batch's row file was created in `table`.
    pub(crate) fn batch_staged(
        &self,
        table: &TableId,
        id: &PartitionId,
        batch: &EncodedBatch,
        latency: Duration,
    ) {
        let label = [table.as_str()];
        self.batch_received(table, batch);
        self.decoded_records
            .with_label_values(&label)
            .inc_by(batch.messages - batch.dead_letters.len() as u64);
        for letter in &batch.dead_letters {
            self.dead_lettered(table, letter.reason);
        }
        self.staged_rows
            .with_label_values(&label)
            .inc_by(batch.rows);
        self.staged_files.with_label_values(&label).inc();
        self.staged_bytes
            .with_label_values(&label)
            .inc_by(batch.row_file.len() as u64);
        self.batch_latency
            .with_label_values(&label)
            .observe(latency.as_secs_f64());
        tracing::debug!(
            %table, partition = %id, first = batch.first, last = batch.last, rows = batch.rows,
            dead_letters = batch.dead_letters.len(), "staged row file"
        );
    }

    /// A batch was dropped: another writer had staged its first position
    /// in `table`.
    pub(crate) fn batch_dropped(
        &self,
        table: &TableId,
        id: &PartitionId,
        batch: &EncodedBatch,
        existing_last: u64,
    ) {
        self.batch_received(table, batch);
        self.duplicate_batches
            .with_label_values(&[table.as_str()])
            .inc();
        tracing::info!(
            %table, partition = %id, first = batch.first, existing_last,
            "batch already staged by another writer; dropped it and continuing after the existing file"
        );
    }

    /// An empty file was recorded as a dead letter of `table`.
    pub(crate) fn empty_file(&self, table: &TableId, id: &PartitionId) {
        self.dead_lettered(table, Reason::EmptyFile);
        tracing::warn!(partition = %id, "empty file recorded as a dead letter");
    }

    fn batch_received(&self, table: &TableId, batch: &EncodedBatch) {
        self.first_seen(table);
        let label = [table.as_str()];
        self.received_records
            .with_label_values(&label)
            .inc_by(batch.messages);
        self.received_bytes
            .with_label_values(&label)
            .inc_by(batch.message_bytes);
    }

    /// Every series of a table starts at zero when its first batch is
    /// staged (each dead-letter reason too), so rate() and alerts see a
    /// series before its first duplicate or bad message.
    fn first_seen(&self, table: &TableId) {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if tables.insert(table.clone()) {
            let label = [table.as_str()];
            for counter in [
                &self.received_records,
                &self.received_bytes,
                &self.decoded_records,
                &self.staged_rows,
                &self.staged_files,
                &self.staged_bytes,
                &self.duplicate_batches,
            ] {
                counter.with_label_values(&label);
            }
            self.batch_latency.with_label_values(&label);
            for reason in Reason::ALL {
                self.dead_lettered_records
                    .with_label_values(&[reason.as_str(), table.as_str()]);
            }
        }
    }

    fn dead_lettered(&self, table: &TableId, reason: Reason) {
        self.first_seen(table);
        self.dead_lettered_records
            .with_label_values(&[reason.as_str(), table.as_str()])
            .inc();
    }
}

/// The sum of a counter's series (over its labels).
fn total(counter: &IntCounterVec) -> u64 {
    counter
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|metric| metric.get_counter().get_value() as u64)
        .sum()
}
