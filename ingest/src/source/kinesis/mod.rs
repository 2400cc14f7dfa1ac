//! The Kinesis Data Streams source: N workers share a stream's shards
//! through leases on the object store, and each shard is read on the
//! exactly-once position chain (positions and resuming are drawn in `shard.rs`).
//!
//! Every third of `lease_ms`, each worker:
//!
//! ```text
//!  heartbeat  put _tributary/kinesis/<stream>/workers/<worker>.json {expires_at_ms}
//!  renew      every held lease (_tributary/leases/kinesis/<stream>/<shard>/<epoch>.json);
//!             a lease lost to another worker stops its reader without staging
//!  discover   ListShards every list_shards_interval_ms (and after a shard ends)
//!  ready      shards not finished whose parents are finished (or expired):
//!             a child of a split or merge waits until its parents are staged to SHARD_END
//!  balance    share = ready shards / live workers:
//!               holding more than ⌈share⌉, or more than ⌊share⌋ while a live
//!               worker holds fewer than ⌊share⌋ → stop readers, release leases
//!               holding fewer than ⌈share⌉ → take free or expired leases
//! ```
//!
//! A dead worker's leases expire after `lease_ms` and are taken by the
//! others. Two workers overlap on a shard only if a stage outlives the
//! lease's last quarter; the chain's create-only batch files keep that from
//! duplicating rows (the loser continues after the winner's batch).

mod api;
pub mod kpl;
mod shard;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::TryStreamExt;
use futures::stream::FuturesUnordered;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::watch;
use tributary_config::{IngestConfig, KinesisSourceConfig};
use tributary_lake::layout::TRIBUTARY_DIR;
use tributary_lake::lease::Lease;
use tributary_lake::{Lake, PartitionId};

pub use api::{ApiError, KinesisApi, Shard};
use shard::{ShardContext, ShardControl, ShardExit};

use crate::error::{Error, Result};
use crate::run::{Mode, Stager};

/// Name of the lease of shard `id` (`_tributary/leases/<name>/…`).
pub fn lease_name(id: &PartitionId) -> String {
    format!("kinesis/{}/{}", id.stream(), id.partition())
}

fn workers_dir(stream: &str) -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/kinesis/{stream}/workers"))
}

/// A worker id unique to this process.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    )
}

type ShardTask<'a> = Pin<Box<dyn Future<Output = (String, Result<ShardExit>)> + 'a>>;

/// A shard this worker reads.
struct Held {
    lease: Option<Lease>,
    valid_until_ms: Arc<AtomicI64>,
    stop: watch::Sender<bool>,
    /// Asked to stop (rebalance, shutdown, lost lease).
    stopping: bool,
}

struct Coordinator<'a> {
    stager: &'a Stager,
    /// The table whose `_tributary/` holds the shard leases.
    lake: &'a Lake,
    config: &'a KinesisSourceConfig,
    api: &'a KinesisApi,
    stream: &'a str,
    worker: String,
    mode: Mode,
    lease_duration: Duration,
    shards: Vec<Shard>,
    listed_at: Option<Instant>,
    finished: HashSet<String>,
    /// With `--once`: shards read up to their tip, not taken again.
    done: HashSet<String>,
    held: BTreeMap<String, Held>,
}

/// Runs the Kinesis source until `shutdown` (or, with [`Mode::Once`],
/// until every shard it could take is read up to its tip).
pub(crate) async fn run(
    config: &IngestConfig,
    kinesis: &KinesisSourceConfig,
    stager: &Stager,
    mode: Mode,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let api = KinesisApi::new(kinesis)
        .await
        .map_err(|source| Error::Kinesis {
            shard: kinesis.stream_name.clone(),
            source,
        })?;
    let worker = kinesis.worker_id.clone().unwrap_or_else(default_worker_id);
    let worker = PartitionId::new("w", &worker).partition().to_string();
    let table = stager.tables.the_table().await?;
    let ctx = ShardContext {
        stager,
        table: &table,
        api: &api,
        config: kinesis,
        stream: &config.stream,
        max_records: config.batch.max_records,
        max_bytes: config.batch.max_bytes,
        max_latency: Duration::from_millis(config.batch.max_latency_ms),
        max_message_bytes: config.max_message_bytes,
        dead_letter_max_payload_bytes: config.dead_letter_max_payload_bytes,
        mode,
        started_ms: chrono::Utc::now().timestamp_millis(),
    };
    let stream = PartitionId::new(&config.stream, "x");
    let mut coordinator = Coordinator {
        stager,
        lake: &table.lake,
        config: kinesis,
        api: &api,
        stream: stream.stream(),
        worker,
        mode,
        lease_duration: Duration::from_millis(kinesis.lease_ms),
        shards: Vec::new(),
        listed_at: None,
        finished: HashSet::new(),
        done: HashSet::new(),
        held: BTreeMap::new(),
    };
    tracing::info!(worker = %coordinator.worker, stream = %kinesis.stream_name, "Kinesis source starting");
    let mut tasks: FuturesUnordered<ShardTask<'_>> = FuturesUnordered::new();
    let mut tick = tokio::time::interval(coordinator.lease_duration / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            _ = tick.tick() => {
                match coordinator.balance(&ctx, &mut tasks).await {
                    Ok(started) => {
                        if mode == Mode::Once && tasks.is_empty() && started == 0 {
                            break Ok(());
                        }
                    }
                    Err(e) => break Err(e),
                }
            }
            Some((shard, result)) = tasks.next(), if !tasks.is_empty() => {
                match coordinator.ended(&shard, result).await {
                    Ok(true) => tick.reset_immediately(),
                    Ok(false) => {}
                    Err(e) => break Err(e),
                }
            }
            _ = shutdown.changed() => break Ok(()),
        }
    };
    // Stop every reader (each stages what it has read), then let go.
    for held in coordinator.held.values_mut() {
        held.stopping = true;
        let _ = held.stop.send(true);
    }
    while let Some((shard, result)) = tasks.next().await {
        if let Err(e) = coordinator.ended(&shard, result).await {
            tracing::error!(shard = %shard, error = %e, "shard reader failed while stopping");
        }
    }
    coordinator.leave().await;
    outcome
}

impl<'a> Coordinator<'a> {
    fn store(&self) -> &Arc<dyn ObjectStore> {
        self.lake.store()
    }

    fn id(&self, shard: &str) -> PartitionId {
        PartitionId::new(self.stream, shard)
    }

    /// One round of heartbeat, renewals, discovery and balancing. Returns
    /// how many readers it started. Errors of the store or of Kinesis that
    /// may pass are logged (the next round tries again); a stream that does
    /// not exist is an error.
    async fn balance(
        &mut self,
        ctx: &'a ShardContext<'a>,
        tasks: &mut FuturesUnordered<ShardTask<'a>>,
    ) -> Result<usize> {
        let now = chrono::Utc::now().timestamp_millis();
        self.heartbeat(now).await;
        self.renew().await;
        let list_every = Duration::from_millis(self.config.list_shards_interval_ms);
        if self.listed_at.is_none_or(|at| at.elapsed() >= list_every) {
            match self.api.list_shards().await {
                Ok(shards) => {
                    self.stager.telemetry.source_answered(true);
                    self.shards = shards;
                    self.listed_at = Some(Instant::now());
                }
                Err(e) if e.is_retryable() => {
                    self.stager.telemetry.source_answered(false);
                    tracing::warn!(error = %e, "ListShards failed; retrying next round");
                }
                Err(source) => {
                    self.stager.telemetry.source_answered(false);
                    return Err(Error::Kinesis {
                        shard: self.config.stream_name.clone(),
                        source,
                    });
                }
            }
        }
        match self.take_share(ctx, tasks).await {
            Ok(started) => Ok(started),
            Err(e) => {
                tracing::warn!(error = %e, "shard balancing failed; retrying next round");
                Ok(0)
            }
        }
    }

    async fn take_share(
        &mut self,
        ctx: &'a ShardContext<'a>,
        tasks: &mut FuturesUnordered<ShardTask<'a>>,
    ) -> Result<usize> {
        let store = self.store().clone();
        // Closed shards may be finished; open ones never are.
        for shard in &self.shards {
            if shard.closed && !self.finished.contains(&shard.id) {
                let marker = shard::finished_marker(&self.id(&shard.id));
                match store.head(&marker).await {
                    Ok(_) => {
                        self.finished.insert(shard.id.clone());
                    }
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(tributary_lake::Error::store(&marker, e).into()),
                }
            }
        }
        let listed: HashSet<&str> = self.shards.iter().map(|s| s.id.as_str()).collect();
        let ready: Vec<&Shard> = self
            .shards
            .iter()
            .filter(|s| !self.finished.contains(&s.id) && !self.done.contains(&s.id))
            .filter(|s| {
                s.parents()
                    .all(|p| self.finished.contains(p) || !listed.contains(p))
            })
            .collect();
        let now = chrono::Utc::now().timestamp_millis();
        let mut free = Vec::new();
        let mut loads: HashMap<String, usize> = HashMap::new();
        for shard in &ready {
            if self.held.contains_key(&shard.id) {
                continue;
            }
            match Lease::holder(store.as_ref(), &lease_name(&self.id(&shard.id))).await? {
                Some(h) if h.expires_at_ms > now && h.owner != self.worker => {
                    *loads.entry(h.owner).or_default() += 1;
                }
                _ => free.push((*shard).clone()),
            }
        }
        let live = self.live_workers(now).await?;
        for worker in &live {
            loads.entry(worker.clone()).or_default();
        }
        loads.remove(&self.worker);
        let workers = loads.len() + 1;
        let mine = self.held.values().filter(|h| !h.stopping).count();
        let total = ready.len();
        let (floor, ceil) = match self.mode {
            Mode::Once => (total, total),
            Mode::Follow => (total / workers, total.div_ceil(workers)),
        };
        let underloaded = loads.values().any(|l| *l < floor);
        let give_up = if mine > ceil {
            mine - ceil
        } else if mine > floor && underloaded {
            1
        } else {
            0
        };
        if give_up > 0 {
            let victims: Vec<String> = self
                .held
                .iter()
                .filter(|(_, h)| !h.stopping)
                .map(|(s, _)| s.clone())
                .take(give_up)
                .collect();
            for shard in victims {
                tracing::info!(shard = %shard, mine, ceil, workers, "giving up a shard to rebalance");
                if let Some(h) = self.held.get_mut(&shard) {
                    h.stopping = true;
                    let _ = h.stop.send(true);
                }
            }
            return Ok(0);
        }
        let mut started = 0;
        // Start from a different free shard on each worker, so that workers
        // joining together do not all race for the same lease.
        let offset = self.worker.bytes().map(usize::from).sum::<usize>();
        let count = free.len();
        for i in 0..count {
            if mine + started >= ceil {
                break;
            }
            let shard = &free[(i + offset) % count];
            let id = self.id(&shard.id);
            let taken = Lease::try_acquire(
                store.as_ref(),
                &lease_name(&id),
                &self.worker,
                self.lease_duration,
            )
            .await?;
            let Ok(lease) = taken else { continue };
            self.stager.telemetry.kinesis.lease_changed("acquired");
            tracing::info!(shard = %id, worker = %self.worker, "shard lease acquired");
            let valid_until_ms = Arc::new(AtomicI64::new(lease.expires_at_ms()));
            let (stop_tx, stop_rx) = watch::channel(false);
            let control = ShardControl {
                valid_until_ms: valid_until_ms.clone(),
                stop: stop_rx,
            };
            self.held.insert(
                shard.id.clone(),
                Held {
                    lease: Some(lease),
                    valid_until_ms,
                    stop: stop_tx,
                    stopping: false,
                },
            );
            let has_parents = shard.parent.is_some();
            let shard = shard.clone();
            tasks.push(Box::pin(async move {
                let result = shard::read_shard(ctx, &shard, has_parents, control).await;
                (shard.id, result)
            }));
            started += 1;
        }
        self.stager
            .telemetry
            .kinesis
            .leases_held(self.held.len() as i64);
        Ok(started)
    }

    /// A reader ended: release its lease. `Ok(true)` when the shard was
    /// finished, so its children may be ready now.
    async fn ended(&mut self, shard: &str, result: Result<ShardExit>) -> Result<bool> {
        let held = self.held.remove(shard);
        self.stager
            .telemetry
            .kinesis
            .leases_held(self.held.len() as i64);
        let lease = held.and_then(|h| h.lease);
        match result {
            Ok(ShardExit::Finished) => {
                self.release(shard, lease, "finished").await;
                self.finished.insert(shard.to_string());
                // Its children are listed by now; look again right away.
                self.listed_at = None;
                Ok(true)
            }
            Ok(ShardExit::Stopped) => {
                self.release(shard, lease, "released").await;
                if self.mode == Mode::Once {
                    self.done.insert(shard.to_string());
                }
                Ok(false)
            }
            Ok(ShardExit::LeaseExpired) => {
                self.stager.telemetry.kinesis.lease_changed("lost");
                Ok(false)
            }
            Err(e) => {
                self.release(shard, lease, "released").await;
                Err(e)
            }
        }
    }

    async fn release(&self, shard: &str, lease: Option<Lease>, change: &'static str) {
        if let Some(lease) = lease {
            self.stager.telemetry.kinesis.lease_changed(change);
            if let Err(e) = lease.release(self.store().as_ref()).await {
                tracing::warn!(shard, error = %e, "could not release a shard lease; it expires");
            }
        }
    }

    /// Renews every held lease; a lease lost to another worker stops its
    /// reader, which stages nothing more.
    async fn renew(&mut self) {
        let store = self.store().clone();
        for (shard, held) in &mut self.held {
            let Some(lease) = held.lease.as_mut() else {
                continue;
            };
            match lease.renew(store.as_ref()).await {
                Ok(()) => held
                    .valid_until_ms
                    .store(lease.expires_at_ms(), Ordering::SeqCst),
                Err(tributary_lake::Error::LeaseLost { .. }) => {
                    tracing::warn!(shard = %shard, "shard lease lost to another worker");
                    held.valid_until_ms.store(0, Ordering::SeqCst);
                    held.lease = None;
                    held.stopping = true;
                    let _ = held.stop.send(true);
                    self.stager.telemetry.kinesis.lease_changed("lost");
                }
                Err(e) => {
                    tracing::warn!(shard = %shard, error = %e, "shard lease not renewed; retrying next round");
                }
            }
        }
    }

    async fn heartbeat(&self, now: i64) {
        let path = workers_dir(self.stream)
            .clone()
            .join(format!("{}.json", self.worker));
        let body = serde_json::json!({
            "worker": self.worker,
            "expires_at_ms": now + self.lease_duration.as_millis() as i64,
        });
        if let Err(e) = self
            .store()
            .put(&path, PutPayload::from(body.to_string()))
            .await
        {
            tracing::warn!(error = %e, "could not write the worker heartbeat");
        }
    }

    /// Workers whose heartbeat has not run out (this one included).
    async fn live_workers(&self, now: i64) -> Result<Vec<String>> {
        let dir = workers_dir(self.stream);
        let store = self.store();
        let listed: Vec<_> = store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| tributary_lake::Error::store(&dir, e))?;
        let mut live = Vec::new();
        for meta in listed {
            let Ok(bytes) = tributary_lake::read_object(store.as_ref(), &meta.location).await
            else {
                continue;
            };
            #[derive(serde::Deserialize)]
            struct Beat {
                worker: String,
                expires_at_ms: i64,
            }
            match serde_json::from_slice::<Beat>(&bytes) {
                Ok(beat) if beat.expires_at_ms > now => live.push(beat.worker),
                // Dead for a while: tidy up.
                Ok(beat)
                    if beat.expires_at_ms < now - 10 * self.lease_duration.as_millis() as i64 =>
                {
                    let _ = store.delete(&meta.location).await;
                }
                Ok(_) | Err(_) => {}
            }
        }
        Ok(live)
    }

    /// Removes this worker's heartbeat so others rebalance at once.
    async fn leave(&self) {
        let path = workers_dir(self.stream)
            .clone()
            .join(format!("{}.json", self.worker));
        let _ = self.store().delete(&path).await;
        self.stager.telemetry.kinesis.leases_held(0);
    }
}
