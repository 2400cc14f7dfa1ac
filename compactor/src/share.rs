//! How compactors on one table divide the staged source partitions, so that
//! N compactors compact N times as fast and never redo each other's work.
//!
//! Each compactor announces itself with a heartbeat object,
//! `_tributary/compactors/<owner>.json`, rewritten every round and valid for
//! `compact.lease_ms`; the live ones are the members. A compactor's share is
//! ⌈staged partitions ÷ members⌉ source partitions, each held with a lease
//! (`_tributary/leases/compact/<stream>/<partition>/`, see
//! [`tributary_lake::lease`]) that it renews every round:
//!
//! ```text
//! round: heartbeat ─► count members ─► renew held leases (drop lost ones,
//!        release what is no longer staged or above the share)
//!        ─► take free partitions up to the share ─► compact only those
//! ```
//!
//! A compactor that dies stops renewing: its heartbeat and leases run out
//! after `lease_ms` and the others take its partitions (at once, when it
//! ran on the same host: see [`tributary_lake::lease`]). A new member makes
//! every share smaller, and those above it release partitions. Leases only
//! divide the work; they do not guard the table. Exactly-once still rests on
//! the watermark: a commit carries its partitions' `txn` versions, so if two
//! compactors ever compact the same file (a lease expired mid-round), the
//! second commit conflicts and its retry drops the rows below the new
//! watermark.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tributary_config::CompactConfig;
use tributary_lake::layout::TRIBUTARY_DIR;
use tributary_lake::lease::{Lease, owner_id, owner_is_gone};
use tributary_lake::{Lake, PartitionId};

use crate::error::Result;

/// A compactor's heartbeat.
#[derive(Debug, Serialize, Deserialize)]
struct Heartbeat {
    owner: String,
    expires_at_ms: i64,
}

/// The source partitions this compactor holds, across rounds.
#[derive(Debug)]
pub struct Share {
    held: BTreeMap<PartitionId, Lease>,
    duration: Duration,
    /// Members seen in the last round (this one included).
    members: usize,
}

impl Share {
    /// An empty share whose leases and heartbeat last `compact.lease_ms`.
    pub fn new(config: &CompactConfig) -> Self {
        Self {
            held: BTreeMap::new(),
            duration: Duration::from_millis(config.lease_ms),
            members: 1,
        }
    }

    /// Compactors seen in the last round, this one included.
    pub fn members(&self) -> usize {
        self.members
    }

    /// The partitions of `staged` this compactor compacts this round:
    /// renews its heartbeat and leases, gives up what it no longer needs,
    /// and takes free partitions up to its share.
    pub async fn claim(
        &mut self,
        lake: &Lake,
        staged: &[PartitionId],
    ) -> Result<BTreeSet<PartitionId>> {
        let store = lake.store().as_ref();
        self.members = self.heartbeat(lake).await?;
        let share = staged.len().div_ceil(self.members);
        let staged_set: BTreeSet<&PartitionId> = staged.iter().collect();

        let held = std::mem::take(&mut self.held);
        for (partition, mut lease) in held {
            if !staged_set.contains(&partition) || self.held.len() >= share {
                release(lake, lease).await;
                continue;
            }
            match lease.renew(store).await {
                Ok(()) => {
                    self.held.insert(partition, lease);
                }
                // Another compactor took it after it ran out.
                Err(error @ tributary_lake::Error::LeaseLost { .. }) => {
                    tracing::debug!(%error, "source partition lease lost");
                    tracing::info!(%partition, "lost a source partition to another compactor");
                }
                Err(error) => return Err(error.into()),
            }
        }

        // Start the search at a place of this process's own, so that
        // compactors starting together try different partitions first.
        let start = owner_offset(staged.len());
        for partition in staged.iter().cycle().skip(start).take(staged.len()) {
            if self.held.len() >= share {
                break;
            }
            if self.held.contains_key(partition) {
                continue;
            }
            let name = lease_name(partition);
            if let Ok(lease) = Lease::try_acquire(store, &name, owner_id(), self.duration).await? {
                self.held.insert(partition.clone(), lease);
            }
        }
        Ok(self.held.keys().cloned().collect())
    }

    /// Releases every lease and withdraws the heartbeat, so that others
    /// take the partitions at once (at shutdown, or after `--once`).
    pub async fn leave(&mut self, lake: &Lake) {
        for (_, lease) in std::mem::take(&mut self.held) {
            release(lake, lease).await;
        }
        let path = heartbeat_path(owner_id());
        if let Err(error) = lake.store().delete(&path).await {
            tracing::warn!(%error, "could not withdraw the compactor's heartbeat; it will expire");
        }
    }

    /// Writes this compactor's heartbeat and counts the live ones.
    async fn heartbeat(&self, lake: &Lake) -> Result<usize> {
        let store = lake.store();
        let now = Utc::now().timestamp_millis();
        let beat = Heartbeat {
            owner: owner_id().to_string(),
            expires_at_ms: now + self.duration.as_millis() as i64,
        };
        let path = heartbeat_path(owner_id());
        let body = serde_json::to_vec(&beat).unwrap_or_default();
        store
            .put(&path, PutPayload::from(body))
            .await
            .map_err(|e| tributary_lake::Error::store(&path, e))?;
        let dir = Path::from(format!("{TRIBUTARY_DIR}/compactors"));
        let beats: Vec<Path> = store
            .list(Some(&dir))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| tributary_lake::Error::store(&dir, e))?;
        let mut live = 0;
        for path in beats {
            // A heartbeat deleted since the listing, or unreadable, is not
            // a live member.
            let Ok(bytes) = tributary_lake::read_object(store.as_ref(), &path).await else {
                continue;
            };
            match serde_json::from_slice::<Heartbeat>(&bytes) {
                Ok(beat) if beat.expires_at_ms > now && !owner_is_gone(&beat.owner) => live += 1,
                // Long dead (killed, never withdrawn): tidy it away.
                Ok(beat) if beat.expires_at_ms < now - 10 * self.duration.as_millis() as i64 => {
                    let _ = store.delete(&path).await;
                }
                _ => {}
            }
        }
        Ok(live.max(1))
    }
}

async fn release(lake: &Lake, lease: Lease) {
    let name = lease.name().to_string();
    if let Err(error) = lease.release(lake.store().as_ref()).await {
        tracing::warn!(lease = %name, %error, "could not release a source partition; it will expire");
    }
}

fn lease_name(partition: &PartitionId) -> String {
    format!("compact/{partition}")
}

fn heartbeat_path(owner: &str) -> Path {
    let name: String = owner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Path::from(format!("{TRIBUTARY_DIR}/compactors/{name}.json"))
}

/// Where in a list of `len` partitions this process starts looking.
fn owner_offset(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let hash = owner_id().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (hash % len as u64) as usize
}
