//! Delivery: each sink, in a task of its own, follows the Delta log from
//! its cursor, one event after the other, under a lease so that of several
//! compactors exactly one delivers to a sink at a time.
//!
//! ```text
//!  every poll_interval_ms (or after the backoff of a failure), per sink:
//!    lease events/<sink>  (held by another compactor → that one delivers)
//!    cursor: _tributary/events/sinks/<sink>/cursor.json, or the sink's `start`
//!    entry = _delta_log/<cursor>.json, or its spooled events
//!      missing        → caught up (or, when a checkpoint is past it, removed
//!                       by another tool: counted as lost, skipped)
//!      no events      → cursor + 1
//!      events         → each in order: renew the lease if a third of it is
//!                       gone → deliver → lease still held? next : stop
//!                       failure → backoff from 1 s, doubling up to max_backoff_ms
//!                       all delivered → cursor + 1, written
//! ```
//!
//! The lease lasts at least three times the sink's timeout, so a delivery
//! that started with two thirds of it left ends before it runs out; a
//! delivery that outlived it anyway (a paused process) does not write the
//! cursor, so the compactor that took over never sees it move backwards.

use std::time::{Duration, Instant};

use futures::future::join_all;
use object_store::path::Path;
use tokio::sync::watch;
use tributary_config::{CompactConfig, EventStart, EventsConfig};
use tributary_lake::Lake;
use tributary_lake::lease::{Lease, owner_id};

use super::complete::Tracker;
use super::read_events;
use super::sink::Sink;
use super::store::{
    get_optional, log_versions, next_available, pending_versions, read_cursor, write_cursor,
};
use crate::error::{Error, Result};
use crate::telemetry::CompactorTelemetry;

/// The shortest lease on a sink.
const MIN_LEASE: Duration = Duration::from_secs(30);

/// A cursor is rewritten at least this often, moved or not, so that it
/// counts as a sink still delivered to (`store::ABANDONED_AFTER_MS`).
const CURSOR_HEARTBEAT: Duration = Duration::from_secs(3600);

/// Delivers events to every configured sink, and decides partition
/// completeness when `[events.completeness]` is configured.
pub struct Dispatcher {
    deliveries: Vec<Delivery>,
    tracker: Option<Tracker>,
    poll: Duration,
    max_backoff: Duration,
}

impl Dispatcher {
    /// The sinks `config` names, ready to deliver; an error names a sink
    /// that cannot be set up (a secret's variable unset), so that the
    /// process stops at start instead of dropping that sink's events.
    /// Completeness commits are made with `compact`'s settings.
    pub async fn new(config: &EventsConfig, compact: &CompactConfig) -> Result<Self> {
        let mut deliveries = Vec::with_capacity(config.sinks.len());
        for sink in &config.sinks {
            let sink_impl = Sink::new(sink).await.map_err(Error::Events)?;
            deliveries.push(Delivery {
                name: sink.name.clone(),
                start: sink.start,
                lease: TaskLease::new(
                    format!("events/{}", sink.name),
                    MIN_LEASE.max(sink_impl.timeout() * 3),
                ),
                sink: sink_impl,
                next: None,
                saved_at: None,
            });
        }
        Ok(Self {
            deliveries,
            tracker: config
                .completeness
                .as_ref()
                .map(|c| Tracker::new(c, compact)),
            poll: Duration::from_millis(config.poll_interval_ms),
            max_backoff: Duration::from_millis(config.max_backoff_ms),
        })
    }

    /// Delivers until `shutdown` turns true, every sink on its own, so a
    /// slow or failing sink holds back no other. Failures are reported and
    /// retried, never returned.
    pub async fn run(
        self,
        lake: &Lake,
        telemetry: &CompactorTelemetry,
        shutdown: watch::Receiver<bool>,
    ) {
        let (poll, max_backoff) = (self.poll, self.max_backoff);
        let tracker = async {
            if let Some(tracker) = self.tracker {
                tracker
                    .run(lake, telemetry, shutdown.clone(), poll, max_backoff)
                    .await;
            }
        };
        let deliveries =
            join_all(self.deliveries.into_iter().map(|delivery| {
                delivery.run(lake, telemetry, shutdown.clone(), poll, max_backoff)
            }));
        tokio::join!(tracker, deliveries);
    }
}

/// The pauses of a task that runs in passes: `poll` after a pass that
/// succeeded; after failures a backoff from 1 s, doubling up to
/// `max_backoff`.
pub(super) struct Pacing {
    poll: Duration,
    max_backoff: Duration,
    backoff: Duration,
}

impl Pacing {
    pub(super) fn new(poll: Duration, max_backoff: Duration) -> Self {
        Self {
            poll,
            max_backoff,
            backoff: Duration::ZERO,
        }
    }

    /// Pauses after a pass (`passed`: it succeeded), or until `shutdown`
    /// changes.
    pub(super) async fn pause(&mut self, passed: bool, shutdown: &mut watch::Receiver<bool>) {
        self.backoff = if passed {
            Duration::ZERO
        } else {
            (self.backoff * 2)
                .max(Duration::from_secs(1))
                .min(self.max_backoff)
        };
        let pause = if passed { self.poll } else { self.backoff };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// A lease a task of the compactor holds across its passes (a sink's
/// delivery, the completeness tracker), renewed once a third of it is gone.
pub(super) struct TaskLease {
    name: String,
    duration: Duration,
    lease: Option<Lease>,
}

/// What [`TaskLease::hold`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    /// Still ours since the last pass.
    Kept,
    /// Taken now: whoever held it before may have acted meanwhile.
    Taken,
    /// Another compactor holds it.
    Elsewhere,
}

impl TaskLease {
    pub(super) fn new(name: String, duration: Duration) -> Self {
        Self {
            name,
            duration,
            lease: None,
        }
    }

    /// Keeps the lease (renewing it once a third of it is gone) or takes it.
    pub(super) async fn hold(&mut self, lake: &Lake) -> Result<Held> {
        let store = lake.store().as_ref();
        if let Some(lease) = &mut self.lease {
            if lease.is_valid(self.duration * 2 / 3) || lease.renew(store).await.is_ok() {
                return Ok(Held::Kept);
            }
            self.lease = None;
        }
        match Lease::try_acquire(store, &self.name, owner_id(), self.duration).await? {
            Ok(lease) => {
                self.lease = Some(lease);
                Ok(Held::Taken)
            }
            Err(_) => Ok(Held::Elsewhere),
        }
    }

    /// Whether the lease is still ours now; when not, it is let go.
    pub(super) fn still_held(&mut self) -> bool {
        let held = self
            .lease
            .as_ref()
            .is_some_and(|l| l.is_valid(Duration::ZERO));
        if !held {
            self.lease = None;
        }
        held
    }

    /// Releases the lease, if held (on shutdown).
    pub(super) async fn release(self, lake: &Lake) {
        if let Some(lease) = self.lease {
            let _ = lease.release(lake.store().as_ref()).await;
        }
    }
}

/// One sink's delivery state.
struct Delivery {
    name: String,
    start: EventStart,
    sink: Sink,
    lease: TaskLease,
    /// The cursor as last read or written while holding the lease.
    next: Option<u64>,
    saved_at: Option<Instant>,
}

/// A pass ended in a failure (already reported): back off.
struct Failed;

impl Delivery {
    async fn run(
        mut self,
        lake: &Lake,
        telemetry: &CompactorTelemetry,
        mut shutdown: watch::Receiver<bool>,
        poll: Duration,
        max_backoff: Duration,
    ) {
        let mut pacing = Pacing::new(poll, max_backoff);
        while !*shutdown.borrow() {
            let passed = self.pass(lake, telemetry, &shutdown).await.is_ok();
            pacing.pause(passed, &mut shutdown).await;
        }
        self.lease.release(lake).await;
    }

    /// Delivers every event from the cursor on, until the log ends, a
    /// delivery fails, the lease is lost or `shutdown` turns true.
    async fn pass(
        &mut self,
        lake: &Lake,
        telemetry: &CompactorTelemetry,
        shutdown: &watch::Receiver<bool>,
    ) -> std::result::Result<(), Failed> {
        let name = self.name.clone();
        let failed = |what: &str, error: &dyn std::fmt::Display| {
            tracing::warn!(sink = %name, %error, "events: {what}");
            Failed
        };
        if !self
            .hold_lease(lake)
            .await
            .map_err(|e| failed("lease", &e))?
        {
            // Another compactor delivers: this one has nothing pending.
            telemetry.events_waiting(&self.name, 0, 0);
            return Ok(());
        }
        let mut next = match self.next {
            Some(next) => next,
            None => {
                let first = self
                    .first_version(lake)
                    .await
                    .map_err(|e| failed("cursor", &e))?;
                self.next = Some(first);
                self.saved_at = Some(Instant::now());
                first
            }
        };
        while !*shutdown.borrow() {
            let events = read_events(lake, next)
                .await
                .map_err(|e| failed("reading the log", &e))?;
            let Some(events) = events else {
                match removed_until(lake, next).await {
                    Ok(Some(resume)) => {
                        telemetry.events_lost(&self.name, resume - next);
                        next = resume;
                        continue;
                    }
                    Ok(None) => {
                        telemetry.events_waiting(&self.name, 0, 0);
                        break;
                    }
                    Err(e) => return Err(failed("reading the log", &e)),
                }
            };
            // A failure part-way delivers the version's earlier events again.
            for event in &events {
                // Taken anew (`next` forgotten): start over from the cursor.
                if !self
                    .hold_lease(lake)
                    .await
                    .map_err(|e| failed("lease", &e))?
                    || self.next.is_none()
                {
                    return Ok(());
                }
                let delivered = self.sink.deliver(event).await;
                if !self.lease.still_held() {
                    // Another compactor may have taken over meanwhile.
                    self.next = None;
                    return Ok(());
                }
                if let Err(error) = delivered {
                    let pending = pending_versions(lake, next).await.map_or(1, |n| n.max(1));
                    let age = chrono::DateTime::parse_from_rfc3339(&event.committed_at)
                        .map_or(0, |t| chrono::Utc::now().timestamp() - t.timestamp());
                    telemetry.event_delivery_failed(&self.name, &error, pending, age);
                    self.save(lake, next).await;
                    return Err(Failed);
                }
                telemetry.event_delivered(&self.name, &event.kind);
            }
            next += 1;
            if !events.is_empty() {
                self.save(lake, next).await;
            }
        }
        self.save(lake, next).await;
        Ok(())
    }

    /// Writes the cursor if it moved or was last written an hour ago (a
    /// failed write is retried with the next one: at worst events are
    /// delivered again).
    async fn save(&mut self, lake: &Lake, next: u64) {
        let fresh = self
            .saved_at
            .is_some_and(|at| at.elapsed() < CURSOR_HEARTBEAT);
        if self.next == Some(next) && fresh {
            return;
        }
        match write_cursor(lake, &self.name, next).await {
            Ok(()) => {
                self.next = Some(next);
                self.saved_at = Some(Instant::now());
            }
            Err(error) => {
                tracing::warn!(sink = %self.name, %error, "events: cannot save the cursor")
            }
        }
    }

    /// Holds the sink's lease: `false` while another compactor holds it.
    async fn hold_lease(&mut self, lake: &Lake) -> Result<bool> {
        let held = self.lease.hold(lake).await?;
        if held != Held::Kept {
            // Whoever held it may have moved the cursor meanwhile.
            self.next = None;
        }
        Ok(held != Held::Elsewhere)
    }

    /// The saved cursor, or (for a new sink) where `start` says, saved at
    /// once so that log cleanup spools what the sink has yet to see.
    async fn first_version(&self, lake: &Lake) -> Result<u64> {
        if let Some(cursor) = read_cursor(lake, &self.name).await? {
            return Ok(cursor.next_version);
        }
        let first = match self.start {
            EventStart::Latest => match lake.load_table().await? {
                Some(table) => table.version().map_or(0, |v| v + 1),
                None => 0,
            },
            EventStart::Earliest => log_versions(lake, 0).await?.first().copied().unwrap_or(0),
        };
        write_cursor(lake, &self.name, first).await?;
        Ok(first)
    }
}

/// When neither entry `missing` nor its spooled event exists although a
/// checkpoint is past it, another tool removed entries from it on: the
/// first version after it that can be read. `None` when the log simply has
/// not reached `missing` yet.
async fn removed_until(lake: &Lake, missing: u64) -> Result<Option<u64>> {
    let path = Path::from("_delta_log/_last_checkpoint");
    let Some(checkpoint) = get_optional(lake, &path).await? else {
        return Ok(None);
    };
    let version = serde_json::from_slice::<serde_json::Value>(&checkpoint)
        .ok()
        .and_then(|c| c["version"].as_u64());
    if version.is_none_or(|v| v < missing) {
        return Ok(None);
    }
    next_available(lake, missing).await
}
