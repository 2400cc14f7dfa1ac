//! The long-running compactor: rounds until shut down, with backoff after a
//! failed round, and the table's upkeep between rounds.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tributary_config::CompactConfig;
use tributary_lake::Lake;

use crate::compact::compact_round;
use crate::forget::requests::unfinished_summary;
use crate::optimize::{optimize, vacuum};
use crate::retention::{RetentionOptions, retention};
use crate::share::Share;
use crate::telemetry::CompactorTelemetry;

/// The longest pause after failed rounds; the pause doubles from one second.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How often the erasure ledger is read for the deadline gauges.
const ERASURE_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Runs compaction rounds until `shutdown` turns true: back to back while
/// files are staged, every `config.interval_ms` when none are.
///
/// A failed round (the object store unreachable, a corrupt row file) is
/// counted and logged, and the round is tried again after a backoff; a round
/// that lost a commit race to another compactor is tried again at once; a round is safe to repeat at any point
/// (see [`compact`](crate::compact)). Shutdown is checked between rounds, so
/// a round that has started finishes and commits.
pub async fn run(
    config: &CompactConfig,
    lake: &Lake,
    mut shutdown: watch::Receiver<bool>,
    telemetry: &CompactorTelemetry,
) {
    let interval = Duration::from_millis(config.interval_ms);
    let mut backoff = Duration::from_secs(1);
    let mut upkeep = Upkeep::new(config);
    let mut share = Share::new(config);
    while !*shutdown.borrow() {
        let pause = match compact_round(config, lake, &mut share).await {
            Ok(round) => {
                telemetry.round_finished(&round);
                backoff = Duration::from_secs(1);
                if !*shutdown.borrow() {
                    upkeep
                        .after_round(config, lake, telemetry, round.commits > 0)
                        .await;
                }
                if round.files_compacted > 0 {
                    continue;
                }
                interval
            }
            // Another compactor committed first: try again soon, at a
            // jittered moment so two compactors do not collide again.
            Err(error) if error.is_commit_conflict() => {
                telemetry.round_failed(&error);
                Duration::from_millis(
                    100 + u64::from(chrono::Utc::now().timestamp_subsec_millis()) % 400,
                )
            }
            Err(error) => {
                telemetry.round_failed(&error);
                let pause = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                pause
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => {}
        }
    }
    share.leave(lake).await;
}

/// The table's upkeep: after a round that added files, small files are
/// bin-packed (partitions with `optimize_min_files` of them), and every
/// `vacuum_interval_ms` the table is vacuumed. A failure is counted and
/// logged, and never stops compaction: the next round tries again.
/// Checkpoints and log cleanup happen at commit time (`maintain_log`). Every
/// minute the erasure ledger is read for the unfinished requests' gauges.
/// Every `retention.interval_ms` (from the first round on) the retention
/// rules are applied, as `tributary retention` does.
struct Upkeep {
    next_vacuum: Option<Instant>,
    next_erasure_check: Instant,
    next_retention: Option<Instant>,
}

impl Upkeep {
    fn new(config: &CompactConfig) -> Self {
        Self {
            next_vacuum: vacuum_interval(config).map(|every| Instant::now() + every),
            next_erasure_check: Instant::now(),
            next_retention: retention_interval(config).map(|_| Instant::now()),
        }
    }

    async fn after_round(
        &mut self,
        config: &CompactConfig,
        lake: &Lake,
        telemetry: &CompactorTelemetry,
        added_files: bool,
    ) {
        if added_files && config.optimize_min_files > 0 {
            match optimize(config, lake, None, config.optimize_min_files).await {
                Ok(report) => telemetry.optimized(&report),
                Err(error) => telemetry.upkeep_failed("optimize", &error),
            }
        }
        if let (Some(next), Some(every)) = (self.next_vacuum, vacuum_interval(config))
            && Instant::now() >= next
        {
            self.next_vacuum = Some(Instant::now() + every);
            let retention = Duration::from_millis(config.vacuum_retention_ms);
            match vacuum(lake, retention, false).await {
                Ok(report) => telemetry.vacuumed(&report),
                Err(error) => telemetry.upkeep_failed("vacuum", &error),
            }
        }
        if let (Some(next), Some(every)) = (self.next_retention, retention_interval(config))
            && Instant::now() >= next
        {
            self.next_retention = Some(Instant::now() + every);
            match retention(config, lake, &RetentionOptions::new(config, false)).await {
                Ok(report) => telemetry.retention_ran(&report),
                // Another compactor's run, or the CronJob's.
                Err(crate::Error::Lake(tributary_lake::Error::LeaseHeld { .. })) => {}
                Err(error) => telemetry.upkeep_failed("retention", &error),
            }
        }
        if Instant::now() >= self.next_erasure_check {
            self.next_erasure_check = Instant::now() + ERASURE_CHECK_INTERVAL;
            match unfinished_summary(lake).await {
                Ok((count, oldest)) => telemetry.erasure_requests(count, oldest),
                Err(error) => telemetry.upkeep_failed("erasure_check", &error),
            }
        }
    }
}

fn retention_interval(config: &CompactConfig) -> Option<Duration> {
    let every = config.retention.interval_ms;
    (every > 0).then(|| Duration::from_millis(every))
}

fn vacuum_interval(config: &CompactConfig) -> Option<Duration> {
    (config.vacuum_interval_ms > 0).then(|| Duration::from_millis(config.vacuum_interval_ms))
}
