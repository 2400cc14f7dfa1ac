//! The long-running compactor: rounds until shut down, with backoff after a
//! failed round, and the table's upkeep between rounds; and, as its own
//! task beside them, the retention rules on their schedule.
//!
//! ```text
//! run ─┬─ compaction: round ─► upkeep (optimize, vacuum, erasure gauges) ─► round ...
//!      └─ retention (spawned): run ─► sleep retention.interval_ms ─► run ...
//!   shutdown: each finishes the round or run it is in, then both stop
//! ```
//!
//! Retention runs apart so that a long run (a tenant rule rewriting many
//! files) never delays compaction; the two meet only where they change the
//! same partitions, under the partition leases every commit takes (a lost
//! race is retried), and one retention run at a time holds the lease
//! `retention` (another compactor's or the CronJob's run makes this one
//! skip its turn).

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
/// a round that has started finishes and commits. Meanwhile a spawned task
/// applies the retention rules every `retention.interval_ms`; `run`
/// returns once both have stopped.
pub async fn run(
    config: &CompactConfig,
    lake: &Lake,
    shutdown: watch::Receiver<bool>,
    telemetry: &CompactorTelemetry,
) {
    let retention = tokio::spawn(retention_schedule(
        config.clone(),
        lake.clone(),
        shutdown.clone(),
        telemetry.clone(),
    ));
    compaction(config, lake, shutdown, telemetry).await;
    // The retention task stops at the same signal, after its current run.
    if let Err(error) = retention.await {
        tracing::error!(%error, "the retention task failed");
    }
}

async fn compaction(
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
        if !pause_until_shutdown(&mut shutdown, pause).await {
            break;
        }
    }
    share.leave(lake).await;
}

/// Sleeps `pause` or until shutdown is signalled; `false` when it is (or
/// the signal's sender is gone: nothing can stop the process cleanly then,
/// so it stops now).
async fn pause_until_shutdown(shutdown: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        changed = shutdown.changed() => {
            if changed.is_err() {
                return false;
            }
        }
    }
    !*shutdown.borrow()
}

/// Applies the retention rules every `retention.interval_ms` (the first run
/// at start) until shutdown, as `tributary retention` does. A run that has
/// started finishes (it is safe to stop anywhere, but then its lease would
/// hold off the next run until it expires). A failure is counted and
/// logged; the next run tries again.
async fn retention_schedule(
    config: CompactConfig,
    lake: Lake,
    mut shutdown: watch::Receiver<bool>,
    telemetry: CompactorTelemetry,
) {
    let Some(every) = retention_interval(&config) else {
        return;
    };
    while !*shutdown.borrow() {
        match retention(&config, &lake, &RetentionOptions::new(&config, false)).await {
            Ok(report) => telemetry.retention_ran(&report),
            // Another compactor's run, or the CronJob's.
            Err(crate::Error::Lake(tributary_lake::Error::LeaseHeld { .. })) => {}
            Err(error) => telemetry.upkeep_failed("retention", &error),
        }
        if !pause_until_shutdown(&mut shutdown, every).await {
            break;
        }
    }
}

/// The table's upkeep: after a round that added files, small files are
/// bin-packed (partitions with `optimize_min_files` of them), and every
/// `vacuum_interval_ms` the table is vacuumed. A failure is counted and
/// logged, and never stops compaction: the next round tries again.
/// Checkpoints and log cleanup happen at commit time (`maintain_log`). Every
/// minute the erasure ledger is read for the unfinished requests' gauges.
struct Upkeep {
    next_vacuum: Option<Instant>,
    next_erasure_check: Instant,
}

impl Upkeep {
    fn new(config: &CompactConfig) -> Self {
        Self {
            next_vacuum: vacuum_interval(config).map(|every| Instant::now() + every),
            next_erasure_check: Instant::now(),
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
