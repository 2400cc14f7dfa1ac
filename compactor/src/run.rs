//! The long-running compactor: rounds until shut down over every table it
//! serves ([`Tables`]), with backoff after a failed round and each table's
//! upkeep after its rounds; and, as tasks of their own beside them, the
//! retention rules on their schedule and each table's event delivery.
//!
//! ```text
//! run ─┬─ compaction: turns ─► the first due table in the queue: round ─► upkeep
//!      │       compacted → back of the queue, due at once
//!      │       idle      → due in compact.interval_ms
//!      │       failed    → due after its own backoff (1 s doubling to 60 s)
//!      │       nothing due → sleep until the earliest due time
//!      │       every interval_ms × 12 (compact.tables = "*"): list the tables again
//!      ├─ retention (spawned): the due table's run ─► ... (one run at a time)
//!      └─ events (spawned per table): deliver each sink, decide completeness
//!   shutdown: each finishes the round or run it is in, then all stop
//! ```
//!
//! **Fair and bounded.** One bounded round of one table runs at a time, with
//! the whole `compact.memory_budget_bytes`, so serving many tables needs the
//! memory of one; a table with a big backlog gets one round per turn like
//! every other table, so its backlog never stops a small table's rounds,
//! and a broken table (its store unreachable, a corrupt file) backs off on
//! its own without holding up the others. Each table keeps its own [`Share`]
//! (heartbeat and source-partition leases under the table), so N compactors
//! serving M tables divide each table's partitions as they would one table.
//!
//! Retention runs apart so that a long run (a tenant rule rewriting many
//! files) never delays compaction; the two meet only where they change the
//! same partitions, under the partition leases every commit takes (a lost
//! race is retried), and one retention run at a time holds the table's lease
//! `retention` (another compactor's or the CronJob's run makes this one
//! skip its turn).

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tributary_config::{CompactConfig, EventsConfig};
use tributary_lake::Lake;

use crate::compact::compact_round;
use crate::error::Result;
use crate::events::dispatch::Dispatcher;
use crate::forget::requests::unfinished_summary;
use crate::optimize::{optimize, vacuum};
use crate::retention::{RetentionOptions, retention};
use crate::share::Share;
use crate::tables::{ServedTable, Tables};
use crate::telemetry::CompactorTelemetry;

/// The longest pause after failed rounds; the pause doubles from one second.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How often the erasure ledger is read for the deadline gauges.
const ERASURE_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// With `compact.tables = "*"`, the tables are listed again every this many
/// `compact.interval_ms`.
const DISCOVERY_INTERVALS: u32 = 12;

/// Runs compaction rounds over `tables` until `shutdown` turns true (see the
/// module docs for the order), delivering `events` for each table beside
/// them.
///
/// A failed round (the object store unreachable, a corrupt row file) is
/// counted and logged, and the table's round is tried again after its
/// backoff; a round that lost a commit race to another compactor is tried
/// again soon; a round is safe to repeat at any point (see
/// [`compact`](crate::compact)). Shutdown is checked between rounds, so a
/// round that has started finishes and commits. Returns once every task has
/// stopped; fails only at start, when the tables cannot be listed or an
/// event sink cannot be set up.
pub async fn run(
    tables: &Tables,
    events: &EventsConfig,
    shutdown: watch::Receiver<bool>,
    telemetry: &CompactorTelemetry,
) -> Result<()> {
    let first = tables.list().await?;
    // Sinks that cannot be set up stop the process now, not their events.
    let mut dispatchers = Vec::with_capacity(first.len());
    for table in &first {
        dispatchers.push(Dispatcher::new(events, &table.config).await?);
    }
    let mut background = JoinSet::new();
    let (served, watched) = watch::channel(Vec::new());
    background.spawn(retention_schedule(watched, shutdown.clone()));
    let mut turns = Turns::new(served, telemetry.clone(), shutdown.clone());
    for (table, dispatcher) in first.into_iter().zip(dispatchers) {
        turns.add(table, dispatcher, &mut background);
    }
    turns.compaction(tables, events, &mut background).await;
    // The other tasks stop at the same signal, after their current run.
    while let Some(ended) = background.join_next().await {
        if let Err(error) = ended {
            tracing::error!(%error, "a compactor task failed");
        }
    }
    Ok(())
}

/// One served table's compaction state.
struct Turn {
    table: ServedTable,
    telemetry: CompactorTelemetry,
    share: Share,
    upkeep: Upkeep,
    backoff: Duration,
    due: Instant,
}

/// The queue of served tables, in turn order.
struct Turns {
    queue: VecDeque<Turn>,
    names: BTreeSet<String>,
    /// The served tables, for the retention task.
    served: watch::Sender<Vec<(ServedTable, CompactorTelemetry)>>,
    telemetry: CompactorTelemetry,
    shutdown: watch::Receiver<bool>,
}

impl Turns {
    fn new(
        served: watch::Sender<Vec<(ServedTable, CompactorTelemetry)>>,
        telemetry: CompactorTelemetry,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            queue: VecDeque::new(),
            names: BTreeSet::new(),
            served,
            telemetry,
            shutdown,
        }
    }

    /// Serves `table` from now on: due at once, its events delivered by a
    /// task of its own.
    fn add(&mut self, table: ServedTable, dispatcher: Dispatcher, tasks: &mut JoinSet<()>) {
        let telemetry = self.telemetry.for_table(&table.name);
        tracing::info!(table = %table.name, uri = %table.lake.table_url(), "serving table");
        let (lake, events_telemetry, shutdown) =
            (table.lake.clone(), telemetry.clone(), self.shutdown.clone());
        tasks.spawn(async move { dispatcher.run(&lake, &events_telemetry, shutdown).await });
        self.served
            .send_modify(|served| served.push((table.clone(), telemetry.clone())));
        self.names.insert(table.name.clone());
        self.queue.push_back(Turn {
            share: Share::new(&table.config),
            upkeep: Upkeep::new(&table.config),
            table,
            telemetry,
            backoff: Duration::from_secs(1),
            due: Instant::now(),
        });
    }

    /// Lists the tables again and serves those not served yet. A failure is
    /// logged; the tables served so far go on.
    async fn discover(&mut self, tables: &Tables, events: &EventsConfig, tasks: &mut JoinSet<()>) {
        let found = match tables.list().await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(
                    error = %crate::telemetry::DisplayChain(&error),
                    "cannot list the tables; trying again later"
                );
                return;
            }
        };
        for table in found {
            if self.names.contains(&table.name) {
                continue;
            }
            match Dispatcher::new(events, &table.config).await {
                Ok(dispatcher) => self.add(table, dispatcher, tasks),
                Err(error) => self
                    .telemetry
                    .for_table(&table.name)
                    .upkeep_failed("events", &error),
            }
        }
    }

    /// Runs turns until shutdown, then leaves every table's share.
    async fn compaction(
        &mut self,
        tables: &Tables,
        events: &EventsConfig,
        tasks: &mut JoinSet<()>,
    ) {
        let mut shutdown = self.shutdown.clone();
        let relist = tables.discovers().then(|| {
            Duration::from_millis(tables.config().compact.interval_ms) * DISCOVERY_INTERVALS
        });
        let mut next_listing = relist.map(|every| Instant::now() + every);
        while !*shutdown.borrow() {
            if let (Some(at), Some(every)) = (next_listing, relist)
                && Instant::now() >= at
            {
                self.discover(tables, events, tasks).await;
                next_listing = Some(Instant::now() + every);
            }
            let now = Instant::now();
            let Some(index) = self.queue.iter().position(|turn| turn.due <= now) else {
                let earliest = self.queue.iter().map(|turn| turn.due).min();
                let wake = earliest.into_iter().chain(next_listing).min();
                let pause = wake.map_or(Duration::from_secs(1), |at| {
                    at.saturating_duration_since(now)
                });
                if !pause_until_shutdown(&mut shutdown, pause).await {
                    break;
                }
                continue;
            };
            let Some(mut turn) = self.queue.remove(index) else {
                continue;
            };
            turn.round(&shutdown).await;
            self.queue.push_back(turn);
        }
        for turn in &mut self.queue {
            turn.share.leave(&turn.table.lake).await;
        }
    }
}

impl Turn {
    /// One bounded round of this table, its upkeep, and when it is due next.
    async fn round(&mut self, shutdown: &watch::Receiver<bool>) {
        let (config, lake) = (&self.table.config, &self.table.lake);
        let pause = match compact_round(config, lake, &mut self.share).await {
            Ok(round) => {
                self.telemetry.round_finished(&round);
                self.backoff = Duration::from_secs(1);
                if !*shutdown.borrow() {
                    self.upkeep
                        .after_round(config, lake, &self.telemetry, round.commits > 0)
                        .await;
                }
                if round.files_compacted > 0 {
                    Duration::ZERO
                } else {
                    Duration::from_millis(config.interval_ms)
                }
            }
            // Another compactor committed first: try again soon, at a
            // jittered moment so two compactors do not collide again.
            Err(error) if error.is_commit_conflict() => {
                self.telemetry.round_failed(&error);
                Duration::from_millis(
                    100 + u64::from(chrono::Utc::now().timestamp_subsec_millis()) % 400,
                )
            }
            Err(error) => {
                self.telemetry.round_failed(&error);
                let pause = self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                pause
            }
        };
        self.due = Instant::now() + pause;
    }
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

/// Applies each served table's retention rules every `retention.interval_ms`
/// of that table (the first run at start, or when the table is first
/// served), as `tributary retention` does, one run at a time, until
/// shutdown. A run that has started finishes (it is safe to stop anywhere,
/// but then its lease would hold off the next run until it expires). A
/// failure is counted and logged; the table's next run tries again.
async fn retention_schedule(
    mut served: watch::Receiver<Vec<(ServedTable, CompactorTelemetry)>>,
    mut shutdown: watch::Receiver<bool>,
) {
    // When each table (by its place in `served`, which only grows) is due.
    let mut due: Vec<Option<Instant>> = Vec::new();
    while !*shutdown.borrow() {
        let tables = served.borrow_and_update().clone();
        due.resize(tables.len(), None);
        let now = Instant::now();
        for ((table, telemetry), due) in tables.iter().zip(&mut due) {
            let Some(every) = retention_interval(&table.config) else {
                continue;
            };
            if due.is_some_and(|at| at > now) {
                continue;
            }
            let options = RetentionOptions::new(&table.config, false);
            match retention(&table.config, &table.lake, &options).await {
                Ok(report) => telemetry.retention_ran(&report),
                // Another compactor's run, or the CronJob's.
                Err(crate::Error::Lake(tributary_lake::Error::LeaseHeld { .. })) => {}
                Err(error) => telemetry.upkeep_failed("retention", &error),
            }
            *due = Some(Instant::now() + every);
            if *shutdown.borrow() {
                return;
            }
        }
        let earliest = due.iter().flatten().min().copied();
        let pause = earliest.map_or(Duration::from_secs(3600), |at| {
            at.saturating_duration_since(Instant::now())
        });
        // A newly served table wakes the schedule for its first run.
        // (The sender is gone only once compaction stopped, at shutdown.)
        tokio::select! {
            go_on = pause_until_shutdown(&mut shutdown, pause) => if !go_on { return },
            changed = served.changed() => if changed.is_err() { return },
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
