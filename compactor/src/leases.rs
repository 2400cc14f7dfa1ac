//! Partition leases: what a process holds while it rewrites a table
//! partition's existing files, from before it reads the snapshot it plans
//! on until its commit lands.
//!
//! ```text
//! plan_holding:
//!   refresh the table ─► plan on its snapshot ─► every partition leased? ─► the plan
//!                                      │ no
//!          a missing one ordered before one held? ─► release all
//!          ─► take the missing leases in partition order ─► refresh; same
//!             version? keep the plan : plan again
//! ```
//!
//! Delta's conflict checks alone would let an optimize that rewrote the
//! same files concurrently bring removed rows back. Every process takes its
//! leases in one order (partition order), so two never wait on each other's.

use std::collections::BTreeSet;
use std::time::Duration;

use deltalake::DeltaTable;
use deltalake::table::state::DeltaTableState;
use futures::future::BoxFuture;
use tributary_config::CompactConfig;
use tributary_lake::Lake;
use tributary_lake::lease::{Lease, owner_id};

use crate::error::Result;
use crate::partition::TablePartition;
use crate::table::delta_error;

/// The lease that guards rewrites of one table partition's files:
/// `table/date=2026-11-22` (`table/date=2026-11-22/_hour=7/…` with more
/// partition columns).
pub fn partition_lease_name(partition: &TablePartition) -> String {
    format!("table/{}", partition.path())
}

/// A plan being made on a snapshot: the plan, and the partitions whose
/// leases it needs.
pub type Planning<'a, P> = BoxFuture<'a, Result<(P, BTreeSet<TablePartition>)>>;

/// The partition leases a rewrite holds until its commit lands.
#[derive(Debug, Default)]
pub struct PartitionLeases {
    held: Vec<(TablePartition, Lease)>,
}

impl PartitionLeases {
    /// Plans on the table as it is once the lease of every partition the
    /// plan needs is held. `plan` makes a plan on a snapshot and names the
    /// partitions it needs (none for a dry run, which takes no lease). This
    /// refreshes `table` and plans; while the plan needs a partition not
    /// held, it takes the missing leases, refreshes again and plans again
    /// (keeping the plan when no commit landed meanwhile). When a missing
    /// partition is ordered before one already held, it releases every
    /// lease first and takes the whole set in order.
    ///
    /// `plan` gets the snapshot (a cheap clone) rather than a reference and
    /// returns a boxed future, so that the future borrows only what the
    /// caller lends and stays `Send` (the future of an `AsyncFnMut` of a
    /// reference is not provably `Send` inside `tokio::spawn`).
    ///
    /// Returns the plan made on the snapshot `table` is left at; the leases
    /// stay held for the caller's commit.
    pub async fn plan_holding<'a, P>(
        &mut self,
        config: &CompactConfig,
        lake: &Lake,
        table: &mut DeltaTable,
        mut plan: impl FnMut(DeltaTableState) -> Planning<'a, P>,
    ) -> Result<P> {
        let mut previous: Option<(u64, P, BTreeSet<TablePartition>)> = None;
        loop {
            table
                .update_state()
                .await
                .map_err(|e| delta_error(lake, "read", e))?;
            let state = table.snapshot().map_err(|e| delta_error(lake, "read", e))?;
            let version = state.version();
            // A plan of the same version is still right once its leases are
            // held: nothing was committed since.
            let (planned, needed) = match previous.take() {
                Some((v, planned, needed)) if v == version => (planned, needed),
                _ => plan(state.clone()).await?,
            };
            if self.covers(&needed) {
                return Ok(planned);
            }
            let last_held = self.held.iter().map(|(p, _)| p).max();
            if needed
                .iter()
                .any(|p| !self.holds(p) && last_held.is_some_and(|last| p < last))
            {
                self.release(lake).await;
            }
            self.acquire(config, lake, &needed).await?;
            previous = Some((version, planned, needed));
        }
    }

    /// Whether every partition of `needed` is leased.
    pub fn covers(&self, needed: &BTreeSet<TablePartition>) -> bool {
        needed.iter().all(|p| self.holds(p))
    }

    /// Whether `partition` is leased.
    fn holds(&self, partition: &TablePartition) -> bool {
        self.held.iter().any(|(h, _)| h == partition)
    }

    /// Whether no lease is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Renews every lease (between the steps of a long rewrite).
    pub async fn renew(&mut self, lake: &Lake) -> Result<()> {
        for (_, lease) in &mut self.held {
            lease.renew(lake.store().as_ref()).await?;
        }
        Ok(())
    }

    /// Takes the leases of `needed` not held yet, in partition order, waiting
    /// up to twice the lease duration for each.
    pub async fn acquire(
        &mut self,
        config: &CompactConfig,
        lake: &Lake,
        needed: &BTreeSet<TablePartition>,
    ) -> Result<()> {
        let duration = Duration::from_millis(config.lease_ms);
        for partition in needed {
            if self.holds(partition) {
                continue;
            }
            let name = partition_lease_name(partition);
            let lease = Lease::acquire(
                lake.store().as_ref(),
                &name,
                owner_id(),
                duration,
                duration * 2,
            )
            .await?;
            self.held.push((partition.clone(), lease));
        }
        Ok(())
    }

    /// Fails unless every lease has at least a fifth of its duration left:
    /// time enough to commit before another process may take it.
    pub fn ensure_valid(&self, config: &CompactConfig) -> Result<()> {
        let margin = Duration::from_millis(config.lease_ms / 5);
        for (_, lease) in &self.held {
            lease.ensure_valid(margin)?;
        }
        Ok(())
    }

    /// Gives every lease up. Failures are logged: the leases expire anyway.
    pub async fn release(&mut self, lake: &Lake) {
        for (_, lease) in self.held.drain(..) {
            let name = lease.name().to_string();
            if let Err(error) = lease.release(lake.store().as_ref()).await {
                tracing::warn!(lease = %name, %error, "could not release a lease; it will expire");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tributary_config::LakeConfig;
    use tributary_lake::rowfile::ColumnType;

    use super::*;
    use crate::table::create_table;

    #[tokio::test]
    async fn a_partition_ordered_before_a_held_one_retakes_the_whole_set_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(&LakeConfig::new(dir.path().display().to_string())).unwrap();
        let config = CompactConfig::default();
        let columns = [("date".to_string(), ColumnType::Date)];
        let mut table = create_table(&lake, &columns, &["date".into()], None)
            .await
            .unwrap();
        let day = |d: &str| TablePartition::new(&[("date", Some(d))]);
        let (first, second) = (day("2026-11-01"), day("2026-11-02"));
        let plans = AtomicUsize::new(0);
        let plan_needing = |needed: Vec<TablePartition>| {
            let plans = &plans;
            move |_state| -> Planning<'_, usize> {
                let made = plans.fetch_add(1, Ordering::SeqCst) + 1;
                let needed = needed.iter().cloned().collect();
                Box::pin(std::future::ready(Ok((made, needed))))
            }
        };
        let mut leases = PartitionLeases::default();
        let made = leases
            .plan_holding(
                &config,
                &lake,
                &mut table,
                plan_needing(vec![second.clone()]),
            )
            .await
            .unwrap();
        // Planned once, leased, and the plan kept: no commit landed between.
        assert_eq!(made, 1);
        let made = leases
            .plan_holding(
                &config,
                &lake,
                &mut table,
                plan_needing(vec![first.clone(), second.clone()]),
            )
            .await
            .unwrap();
        assert_eq!(made, 2);
        let held: Vec<&TablePartition> = leases.held.iter().map(|(p, _)| p).collect();
        assert_eq!(held, [&first, &second], "released, then taken in order");
        leases.release(&lake).await;
        assert!(leases.is_empty());
    }
}
