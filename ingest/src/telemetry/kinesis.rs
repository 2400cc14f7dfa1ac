//! The Kinesis source's metrics (see the table in [`super`]).

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tributary_lake::PartitionId;

use crate::source::kinesis::ApiError;

/// Metrics of the Kinesis source, labelled by `shard` (bounded by the
/// stream's shard count) where per shard.
#[derive(Debug, Clone)]
pub struct KinesisMetrics {
    records: IntCounterVec,
    bytes: IntCounterVec,
    millis_behind: IntGaugeVec,
    retries: IntCounterVec,
    leases_held: IntGauge,
    lease_changes: IntCounterVec,
}

impl KinesisMetrics {
    pub(super) fn register(registry: &Registry, stream: &str) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| {
            Opts::new(format!("tributary_ingest_kinesis_{name}"), help)
                .const_label("stream", stream)
        };
        let counters = |name: &str, help: &str, label: &str| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(opts(name, help), &[label])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let millis_behind = IntGaugeVec::new(
            opts(
                "millis_behind_latest",
                "How far the last GetRecords answer of each shard was behind its tip, in milliseconds.",
            ),
            &["shard"],
        )?;
        registry.register(Box::new(millis_behind.clone()))?;
        let leases_held =
            IntGauge::with_opts(opts("leases_held", "Shard leases this worker holds."))?;
        registry.register(Box::new(leases_held.clone()))?;
        let lease_changes = counters(
            "lease_changes_total",
            "Shard lease changes of this worker, by change (acquired, released, finished, lost).",
            "change",
        )?;
        for change in ["acquired", "released", "finished", "lost"] {
            lease_changes.with_label_values(&[change]);
        }
        Ok(Self {
            records: counters(
                "records_total",
                "Kinesis records read (an aggregate counts once), per shard.",
                "shard",
            )?,
            bytes: counters(
                "bytes_total",
                "Bytes of Kinesis record data read, per shard.",
                "shard",
            )?,
            millis_behind,
            retries: counters(
                "retries_total",
                "Kinesis calls retried after throttling or a retryable error, per error type.",
                "error",
            )?,
            leases_held,
            lease_changes,
        })
    }

    /// A GetRecords answer of `records` records and `bytes` bytes.
    pub(crate) fn read(
        &self,
        shard: &PartitionId,
        records: usize,
        bytes: u64,
        millis_behind: Option<u64>,
    ) {
        let label = [shard.partition()];
        self.records
            .with_label_values(&label)
            .inc_by(records as u64);
        self.bytes.with_label_values(&label).inc_by(bytes);
        if let Some(ms) = millis_behind {
            self.millis_behind
                .with_label_values(&label)
                .set(i64::try_from(ms).unwrap_or(i64::MAX));
        }
    }

    /// A call failed with a retryable `error` and is retried after a pause.
    pub(crate) fn retried(&self, _shard: &PartitionId, error: &ApiError) {
        self.retries.with_label_values(&[error.retry_label()]).inc();
    }

    /// This worker now holds `n` shard leases.
    pub(crate) fn leases_held(&self, n: i64) {
        self.leases_held.set(n);
    }

    /// A lease was acquired, released, finished with or lost.
    pub(crate) fn lease_changed(&self, change: &'static str) {
        self.lease_changes.with_label_values(&[change]).inc();
    }
}
