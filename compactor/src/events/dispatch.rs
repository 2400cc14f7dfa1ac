//! Delivery: each sink follows the Delta log from its cursor, one event
//! after the other, under a lease so that of several compactors exactly one
//! delivers to a sink at a time.
//!
//! ```text
//!  every poll_interval_ms, per sink (skipped while backing off):
//!    lease events/<sink>  (held by another compactor → that one delivers)
//!    cursor: _tributary/events/<sink>/cursor.json, or the sink's `start`
//!    entry = _delta_log/<cursor>.json
//!      missing        → caught up (or, when a checkpoint is past it, removed
//!                       by another tool: counted as lost, skipped)
//!      no files       → cursor + 1
//!      an event       → deliver → cursor + 1 (written after each delivery)
//!                       failure → backoff from 1 s, doubling up to max_backoff_ms
//! ```

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::path::Path;
use tokio::sync::watch;
use tributary_config::{EventStart, EventsConfig};
use tributary_lake::Lake;
use tributary_lake::lease::{Lease, owner_id};

use super::sink::Sink;
use super::{get_optional, read_cursor, read_event, write_cursor};
use crate::error::{Error, Result};
use crate::telemetry::CompactorTelemetry;

/// How long a sink's lease lasts; renewed when less than two thirds remain.
const LEASE: Duration = Duration::from_secs(30);

/// One sink's delivery state.
struct Delivery {
    name: String,
    start: EventStart,
    sink: Sink,
    lease: Option<Lease>,
    /// The next version to deliver, once read or chosen.
    next: Option<u64>,
    backoff: Duration,
    retry_at: Option<Instant>,
}

/// Delivers events to every configured sink.
pub struct Dispatcher {
    deliveries: Vec<Delivery>,
    poll: Duration,
    max_backoff: Duration,
}

impl Dispatcher {
    /// The sinks `config` names, ready to deliver; an error names a sink
    /// that cannot be set up (its secret's variable unset), so that the
    /// process stops at start instead of dropping that sink's events.
    pub fn new(config: &EventsConfig) -> Result<Self> {
        let deliveries = config
            .sinks
            .iter()
            .map(|sink| {
                Ok(Delivery {
                    name: sink.name.clone(),
                    start: sink.start,
                    sink: Sink::new(sink).map_err(Error::Events)?,
                    lease: None,
                    next: None,
                    backoff: Duration::ZERO,
                    retry_at: None,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            deliveries,
            poll: Duration::from_millis(config.poll_interval_ms),
            max_backoff: Duration::from_millis(config.max_backoff_ms),
        })
    }

    /// Delivers until `shutdown` turns true, then releases the sinks'
    /// leases. Failures are reported and retried, never returned.
    pub async fn run(
        mut self,
        lake: &Lake,
        telemetry: &CompactorTelemetry,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if self.deliveries.is_empty() {
            return;
        }
        while !*shutdown.borrow() {
            for delivery in &mut self.deliveries {
                if delivery.retry_at.is_some_and(|at| Instant::now() < at) {
                    continue;
                }
                match delivery.pass(lake, telemetry, &shutdown).await {
                    Ok(()) => {
                        delivery.backoff = Duration::ZERO;
                        delivery.retry_at = None;
                    }
                    Err(Failed) => {
                        delivery.backoff = (delivery.backoff * 2)
                            .max(Duration::from_secs(1))
                            .min(self.max_backoff);
                        delivery.retry_at = Some(Instant::now() + delivery.backoff);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = shutdown.changed() => {}
            }
        }
        for delivery in self.deliveries {
            if let Some(lease) = delivery.lease {
                let _ = lease.release(lake.store().as_ref()).await;
            }
        }
    }
}

/// A pass ended in a failure (already reported): back off.
struct Failed;

impl Delivery {
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
            return Ok(());
        }
        let mut next = match self.next {
            Some(next) => next,
            None => self
                .first_version(lake)
                .await
                .map_err(|e| failed("cursor", &e))?,
        };
        self.next = Some(next);
        loop {
            if *shutdown.borrow() || !self.lease.as_ref().is_some_and(|l| l.is_valid(LEASE / 3)) {
                break;
            }
            let entry = read_event(lake, next)
                .await
                .map_err(|e| failed("reading the log", &e))?;
            match entry {
                None => match removed_until(lake, next).await {
                    Ok(Some(resume)) => {
                        telemetry.events_lost(&self.name, resume - next);
                        next = resume;
                    }
                    Ok(None) => {
                        telemetry.events_waiting(&self.name, 0, 0);
                        break;
                    }
                    Err(e) => return Err(failed("reading the log", &e)),
                },
                Some(None) => next += 1,
                Some(Some(event)) => {
                    if let Err(error) = self.sink.deliver(&event).await {
                        let pending = pending_entries(lake, next).await.unwrap_or(1);
                        let age = chrono::DateTime::parse_from_rfc3339(&event.committed_at)
                            .map_or(0, |t| chrono::Utc::now().timestamp() - t.timestamp());
                        telemetry.event_delivery_failed(&self.name, &error, pending, age);
                        self.save(lake, next).await;
                        return Err(Failed);
                    }
                    telemetry.event_delivered(&self.name, &event.kind);
                    next += 1;
                    self.save(lake, next).await;
                }
            }
        }
        self.save(lake, next).await;
        Ok(())
    }

    /// Writes the cursor if it moved (a failed write is retried with the
    /// next one: at worst events are delivered again).
    async fn save(&mut self, lake: &Lake, next: u64) {
        if self.next == Some(next) {
            return;
        }
        match write_cursor(lake, &self.name, next).await {
            Ok(()) => self.next = Some(next),
            Err(error) => {
                tracing::warn!(sink = %self.name, %error, "events: cannot save the cursor")
            }
        }
    }

    /// Takes or renews the sink's lease: `false` while another compactor
    /// holds it.
    async fn hold_lease(&mut self, lake: &Lake) -> Result<bool> {
        let store = lake.store().as_ref();
        if let Some(lease) = &mut self.lease {
            if lease.is_valid(LEASE * 2 / 3) {
                return Ok(true);
            }
            if lease.renew(store).await.is_ok() && lease.is_valid(LEASE / 3) {
                return Ok(true);
            }
            self.lease = None;
            // Another compactor may have moved the cursor meanwhile.
            self.next = None;
        }
        let name = format!("events/{}", self.name);
        match Lease::try_acquire(store, &name, owner_id(), LEASE).await? {
            Ok(lease) => {
                self.lease = Some(lease);
                self.next = None;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// The saved cursor, or (for a new sink) where `start` says, saved at
    /// once so that log cleanup keeps what the sink has yet to see.
    async fn first_version(&self, lake: &Lake) -> Result<u64> {
        if let Some(next) = read_cursor(lake, &self.name).await? {
            return Ok(next);
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

/// Versions of the log entries from `from` on, in order.
async fn log_versions(lake: &Lake, from: u64) -> Result<Vec<u64>> {
    let dir = Path::from("_delta_log");
    let offset = Path::from(format!("_delta_log/{from:020}"));
    let objects: Vec<_> = lake
        .store()
        .list_with_offset(Some(&dir), &offset)
        .try_collect()
        .await
        .map_err(|e| tributary_lake::Error::store(&dir, e))?;
    let mut versions: Vec<u64> = objects
        .iter()
        .filter_map(|o| o.location.filename()?.strip_suffix(".json")?.parse().ok())
        .filter(|v| *v >= from)
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// Log entries from `from` on (at least 1: the one that failed).
async fn pending_entries(lake: &Lake, from: u64) -> Result<u64> {
    Ok((log_versions(lake, from).await?.len() as u64).max(1))
}

/// When entry `missing` does not exist (nor its spooled event) although a
/// checkpoint is past it, another tool removed the entries from it up to
/// the first that exists: that version. `None` when the log simply has not
/// reached `missing` yet.
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
    Ok(log_versions(lake, missing).await?.first().copied())
}
