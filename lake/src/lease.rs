//! Leases on the object store, with nothing but create-only writes.
//!
//! A lease is a chain of small JSON objects, one per change of hands or
//! renewal, named by a dense epoch number:
//!
//! ```text
//! _tributary/leases/<name>/00000000000000000007.json  {"owner": "…", "expires_at_ms": …}
//! ```
//!
//! The newest epoch says who holds the lease and until when. Taking a free or
//! expired lease, renewing it and releasing it all write the next epoch
//! create-only, so of two processes racing for the same epoch exactly one
//! wins, on the local directory store and on S3 alike (`If-None-Match`), and
//! no conditional update is needed. A holder that lost its lease finds out on
//! its next renewal, which fails because the epoch it would write exists.
//!
//! Time is wall-clock time, so holders check [`Lease::is_valid`] with a safety
//! margin before acting on what the lease protects.
//!
//! A lease whose holder is a process of this host that is gone (its owner id,
//! [`owner_id`], names a pid that no longer runs, or this very pid started at
//! another time, as after a container restart) is free at once: a process
//! restarted after a crash need not wait for its own old leases to expire.
//! Holders on other hosts are judged by expiry alone.

use std::sync::OnceLock;
use std::time::Duration;

use chrono::Utc;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout::TRIBUTARY_DIR;

/// What one epoch object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    owner: String,
    expires_at_ms: i64,
}

/// A lease this process holds.
#[derive(Debug, Clone)]
pub struct Lease {
    name: String,
    owner: String,
    epoch: u64,
    expires_at_ms: i64,
    duration: Duration,
}

/// Who holds a lease someone else has, for waiting and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBy {
    /// The holder's owner id.
    pub owner: String,
    /// When its lease runs out, in milliseconds since the epoch.
    pub expires_at_ms: i64,
}

fn prefix(name: &str) -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/leases/{name}"))
}

fn epoch_path(name: &str, epoch: u64) -> Path {
    Path::from(format!("{TRIBUTARY_DIR}/leases/{name}/{epoch:020}.json"))
}

/// Times [`newest`] lists again when the newest epoch it listed was removed
/// before it could be read.
const NEWEST_ATTEMPTS: u32 = 10;

/// The newest epoch of lease `name` and its holder, if it has ever been taken.
///
/// A holder that renews writes the next epoch and then removes the older
/// ones, so the epoch a listing shows as newest may be gone when it is read:
/// a newer one exists, and the listing is repeated.
async fn newest(store: &dyn ObjectStore, name: &str) -> Result<Option<(u64, Holder)>> {
    let dir = prefix(name);
    let mut attempt = 1;
    loop {
        let epochs: Vec<u64> = store
            .list(Some(&dir))
            .map_ok(|meta| meta.location)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| Error::store(&dir, e))?
            .iter()
            .filter_map(|p| p.filename()?.strip_suffix(".json")?.parse().ok())
            .collect();
        let Some(epoch) = epochs.into_iter().max() else {
            return Ok(None);
        };
        let path = epoch_path(name, epoch);
        let bytes = match crate::read_object(store, &path).await {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() && attempt < NEWEST_ATTEMPTS => {
                attempt += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let holder = serde_json::from_slice(&bytes).map_err(|e| Error::CorruptLease {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        return Ok(Some((epoch, holder)));
    }
}

/// Writes `holder` as epoch `epoch` of lease `name`, create-only. `Ok(false)`
/// when another process wrote that epoch first. An epoch that exists with
/// exactly `holder` in it is this process's own write (the store resends a
/// create-only write whose answer was lost), so it counts as written.
async fn write_epoch(
    store: &dyn ObjectStore,
    name: &str,
    epoch: u64,
    holder: &Holder,
) -> Result<bool> {
    let path = epoch_path(name, epoch);
    let body = serde_json::to_vec(holder).map_err(|e| Error::CorruptLease {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    let options = PutOptions::from(PutMode::Create);
    match store
        .put_opts(&path, PutPayload::from(body.clone()), options)
        .await
    {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let existing = crate::read_object(store, &path).await?;
            Ok(existing.as_ref() == body.as_slice())
        }
        Err(e) => Err(Error::store(&path, e)),
    }
}

/// This process's name in leases: `host/pid/start time in ms`.
pub fn owner_id() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| {
        let started = Utc::now().timestamp_millis();
        format!("{}/{}/{started}", host_name(), std::process::id())
    })
}

/// This host's name, read once: every lease check compares against it.
fn host_name() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".into())
    })
}

/// Whether `owner` (an [`owner_id`]) is a process of this host that no
/// longer runs. Owners of other forms, or of other hosts, are never judged
/// gone; nor is anyone where `/proc` is not mounted.
pub fn owner_is_gone(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, '/');
    let (Some(started), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(_), Ok(pid)) = (started.parse::<i64>(), pid.parse::<u32>()) else {
        return false;
    };
    if host != host_name() || !std::path::Path::new("/proc/self").exists() {
        return false;
    }
    if pid == std::process::id() {
        return owner != owner_id();
    }
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl Lease {
    /// Who holds lease `name` now, without taking it: `None` if it was never
    /// taken. A released lease has `expires_at_ms` 0.
    pub async fn holder(store: &dyn ObjectStore, name: &str) -> Result<Option<HeldBy>> {
        Ok(newest(store, name).await?.map(|(_, h)| HeldBy {
            owner: h.owner,
            expires_at_ms: h.expires_at_ms,
        }))
    }

    /// Takes lease `name` for `owner` for `duration`, if it is free, expired,
    /// or already `owner`'s. `Ok(Err(held))` names the current holder when it
    /// is not.
    pub async fn try_acquire(
        store: &dyn ObjectStore,
        name: &str,
        owner: &str,
        duration: Duration,
    ) -> Result<std::result::Result<Lease, HeldBy>> {
        let now = Utc::now().timestamp_millis();
        let next = match newest(store, name).await? {
            Some((_, holder))
                if holder.owner != owner
                    && holder.expires_at_ms > now
                    && !owner_is_gone(&holder.owner) =>
            {
                return Ok(Err(HeldBy {
                    owner: holder.owner,
                    expires_at_ms: holder.expires_at_ms,
                }));
            }
            Some((epoch, _)) => epoch + 1,
            None => 0,
        };
        let holder = Holder {
            owner: owner.to_string(),
            expires_at_ms: now + duration.as_millis() as i64,
        };
        if !write_epoch(store, name, next, &holder).await? {
            // Another process took this epoch first: it holds the lease now.
            let current = newest(store, name).await?;
            let (owner, expires_at_ms) =
                current.map_or((String::new(), now), |(_, h)| (h.owner, h.expires_at_ms));
            return Ok(Err(HeldBy {
                owner,
                expires_at_ms,
            }));
        }
        let lease = Lease {
            name: name.to_string(),
            owner: owner.to_string(),
            epoch: next,
            expires_at_ms: holder.expires_at_ms,
            duration,
        };
        lease.remove_older_epochs(store).await;
        Ok(Ok(lease))
    }

    /// Takes lease `name`, waiting (polling every 200 ms) while someone else
    /// holds it, for at most `wait`.
    pub async fn acquire(
        store: &dyn ObjectStore,
        name: &str,
        owner: &str,
        duration: Duration,
        wait: Duration,
    ) -> Result<Lease> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match Self::try_acquire(store, name, owner, duration).await? {
                Ok(lease) => return Ok(lease),
                Err(held) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::LeaseHeld {
                        name: name.to_string(),
                        owner: held.owner,
                        expires_at_ms: held.expires_at_ms,
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Extends the lease by its duration from now. Fails with
    /// [`Error::LeaseLost`] when another process took it after it expired.
    pub async fn renew(&mut self, store: &dyn ObjectStore) -> Result<()> {
        let holder = Holder {
            owner: self.owner.clone(),
            expires_at_ms: Utc::now().timestamp_millis() + self.duration.as_millis() as i64,
        };
        if !write_epoch(store, &self.name, self.epoch + 1, &holder).await? {
            return Err(self.lost());
        }
        self.epoch += 1;
        self.expires_at_ms = holder.expires_at_ms;
        self.remove_older_epochs(store).await;
        Ok(())
    }

    /// Whether the lease still has at least `margin` left, by this process's
    /// clock. Check it right before acting on what the lease protects.
    pub fn is_valid(&self, margin: Duration) -> bool {
        Utc::now().timestamp_millis() + (margin.as_millis() as i64) < self.expires_at_ms
    }

    /// [`Error::LeaseLost`] unless [`is_valid`](Self::is_valid) with `margin`.
    pub fn ensure_valid(&self, margin: Duration) -> Result<()> {
        if self.is_valid(margin) {
            Ok(())
        } else {
            Err(self.lost())
        }
    }

    /// Gives the lease up so others need not wait for it to expire. Losing
    /// the race to write the release means someone else holds it already.
    pub async fn release(self, store: &dyn ObjectStore) -> Result<()> {
        let holder = Holder {
            owner: self.owner.clone(),
            expires_at_ms: 0,
        };
        write_epoch(store, &self.name, self.epoch + 1, &holder).await?;
        Ok(())
    }

    /// When the lease runs out, in milliseconds since the Unix epoch.
    pub fn expires_at_ms(&self) -> i64 {
        self.expires_at_ms
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lost(&self) -> Error {
        Error::LeaseLost {
            name: self.name.clone(),
            owner: self.owner.clone(),
        }
    }

    /// Deletes epochs before the current one. Best effort: leftovers are
    /// harmless, only the newest epoch counts.
    async fn remove_older_epochs(&self, store: &dyn ObjectStore) {
        for epoch in self.epoch.saturating_sub(2)..self.epoch {
            let _ = store.delete(&epoch_path(&self.name, epoch)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::local::LocalFileSystem;

    use super::*;

    #[test]
    fn only_vanished_processes_of_this_host_are_gone() {
        let me = owner_id();
        let host = host_name();
        assert!(!owner_is_gone(me));
        // A pid no process has (above Linux's pid_max), and this pid started
        // at another time (a restarted container's pid 1, say).
        assert!(owner_is_gone(&format!("{host}/4294967290/1")));
        assert!(owner_is_gone(&format!("{host}/{}/1", std::process::id())));
        // Other hosts, and owners of other forms, are judged by expiry.
        assert!(!owner_is_gone("elsewhere.example/4294967290/1"));
        assert!(!owner_is_gone("a"));
        assert!(!owner_is_gone(&format!("{host}-4294967290-1")));
    }

    #[tokio::test]
    async fn a_lease_of_a_vanished_process_of_this_host_is_free_at_once() {
        let (_dir, store) = store();
        let gone = format!("{}/4294967290/1", host_name());
        Lease::try_acquire(store.as_ref(), "t/p", &gone, MINUTE)
            .await
            .unwrap()
            .unwrap();
        let taken = Lease::try_acquire(store.as_ref(), "t/p", "b", MINUTE)
            .await
            .unwrap();
        assert!(taken.is_ok(), "{taken:?}");
    }

    fn store() -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        (dir, Arc::new(store))
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn only_one_owner_holds_a_lease_until_it_is_released() {
        let (_dir, store) = store();
        let a = Lease::try_acquire(store.as_ref(), "t/p", "a", MINUTE)
            .await
            .unwrap()
            .unwrap();
        let held = Lease::try_acquire(store.as_ref(), "t/p", "b", MINUTE)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(held.owner, "a");
        assert!(a.is_valid(Duration::from_secs(30)));
        a.release(store.as_ref()).await.unwrap();
        let b = Lease::try_acquire(store.as_ref(), "t/p", "b", MINUTE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.epoch, 2);
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_the_old_holder_cannot_renew() {
        let (_dir, store) = store();
        let mut a = Lease::try_acquire(store.as_ref(), "t/p", "a", Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        assert!(!a.is_valid(Duration::ZERO));
        let b = Lease::try_acquire(store.as_ref(), "t/p", "b", MINUTE)
            .await
            .unwrap()
            .unwrap();
        let lost = a.renew(store.as_ref()).await.unwrap_err();
        assert!(matches!(lost, Error::LeaseLost { .. }), "{lost}");
        assert!(b.is_valid(Duration::ZERO));
    }

    #[tokio::test]
    async fn renewal_moves_the_lease_forward_and_keeps_few_epochs() {
        let (dir, store) = store();
        let mut a = Lease::try_acquire(store.as_ref(), "t/p", "a", MINUTE)
            .await
            .unwrap()
            .unwrap();
        for _ in 0..5 {
            a.renew(store.as_ref()).await.unwrap();
        }
        assert_eq!(a.epoch, 5);
        let left = std::fs::read_dir(dir.path().join("_tributary/leases/t/p"))
            .unwrap()
            .count();
        assert!(left <= 3, "{left} epochs left");
        let held = Lease::try_acquire(store.as_ref(), "t/p", "b", MINUTE)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(held.owner, "a");
    }

    #[tokio::test]
    async fn racing_acquirers_get_one_winner() {
        let (_dir, store) = store();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    Lease::try_acquire(store.as_ref(), "t/p", &format!("w{i}"), MINUTE)
                        .await
                        .unwrap()
                        .is_ok()
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap());
        }
        assert_eq!(winners, 1);
    }
}
