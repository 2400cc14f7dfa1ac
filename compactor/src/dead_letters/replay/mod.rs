//! `tributary dead-letters replay`: selected dead letters run through the
//! current decoder and flattener into the table's staging, exactly once,
//! and are then retired.
//!
//! # One replay chain per source partition
//!
//! The table's exactly-once protocol (DESIGN.md, `tributary_lake::chain`)
//! already answers "was this staged?" for any `<stream>/<partition>`: a
//! staged row file is created once at a name derived from its first
//! position, and once compacted the table's Delta `txn` watermark for the
//! partition says so, and the compactor drops every later row at or below
//! it. Replay reuses it instead of keeping a ledger of its own: the dead
//! letters of source partition `S` (`_tributary/dead-letter/<S>/…`) are
//! staged on one chain, partition `<S>` of the stream [`REPLAY_STREAM`],
//! whose positions the replay hands out in order: the replay of a
//! dead-letter file `F` takes the next free range `[first, last]` of `S`'s
//! replay chain (one position per selected letter), and all of `F`'s
//! replayed rows go into *one* row file covering it (a dead-letter file
//! holds at most one ingest batch, so this is bounded). A range is free
//! when it is past both the newest row file staged on the chain and the
//! table's watermark for it, read in that order (the compactor commits
//! before it deletes a staged file, so a file compacted between the two
//! reads shows in the watermark).
//!
//! The table's log therefore holds one `txn` entry per source partition
//! that ever had a letter replayed, as it holds one per source partition
//! of the stream itself: bounded by the sources, not by how many files or
//! how often they are replayed. (An earlier version gave every replayed
//! file a chain of its own, and every one left a `txn` entry in the log and
//! each checkpoint for good. Letting `txn` entries expire,
//! `delta.setTransactionRetentionDuration`, was not an option: it is a
//! table-wide property that would expire the watermarks of idle source
//! partitions too, and an expired replay watermark could no longer tell
//! that a replayed file whose retirement was interrupted had been staged.)
//!
//! Handing out ranges needs one replay at a time per table: a replay holds
//! the lease [`REPLAY_LEASE`] while it writes (a killed replay's lease is
//! free at once for a rerun on the same host, else when it expires), checks
//! it right before each write, and finishes every file a stopped replay
//! had decided *before* it decides any new one, so no range is handed out
//! twice and the watermark of `S`'s chain at or past a decided range's
//! first position means that range was staged.
//!
//! Only files of committed batches are replayed: ingest writes a batch's
//! dead letters *before* its row file (the commit point), so until the
//! source partition's chain is staged past the file's last position, ingest
//! may read the batch again (after a crash) and stage those messages
//! itself. Such files are left for a later run (`files_not_committed`).
//!
//! # Letters are named by identity, not by index
//!
//! A letter is named by its source position and, for the rejection of one
//! element of the explode path, that element (`<position>` or
//! `<position>.<element>`): unique within a dead-letter file (a batch holds
//! each source position once, and a message is rejected whole or element
//! by element; a remainder keeps its letters' names and gives an element
//! that fails again its element; files where they are not unique are left
//! alone, `files_with_duplicate_letters`), and kept by every rewrite of the
//! file (`forget` blanks payloads, retention drops letters; neither renames
//! one). An index would not be: a rewrite between a stopped replay and its
//! rerun shifts indexes, and the rerun would stage other letters than the
//! ones decided (one carried in the remainder too, or an erased one).
//!
//! # Steps
//!
//! ```text
//!   1. every F whose remainder R exists (a stopped replay decided it),
//!      whatever the selection is now:
//!        R's range staged (a file at `first`) or committed (watermark ≥ first)?
//!          yes ──► delete F (retired)
//!          no  ──► stage the letters R's header names that F still holds
//!                  whole, as they are now, at R's range ──► delete F
//!   2. every other F the selection picks:
//!        read F; select letters (reason, partition, age; whole payloads only)
//!             │ none selected ──► leave F alone
//!             ▼
//!        take the next free range [first, last] of S's replay chain;
//!        decode the selected letters
//!        (no rows and no new reason ──► leave F alone)
//!             ▼
//!        put R = F.r<n+1>.avro create-only: every letter not replayed, the
//!        ones that failed again with their new reason; header: [first,
//!        last] and the names of the letters that become rows (the decision)
//!             ▼
//!        stage the row file of those letters at `first` on S's chain
//!        (create-only)
//!             ▼
//!        delete F (retired); delete R if it holds no letter
//! ```
//!
//! A `kill -9` anywhere leaves one of: nothing written (the rerun starts
//! over); R written, nothing staged (the rerun stages the letters R's
//! header names that F still holds whole, never more, at R's range); the
//! row file staged or compacted (the rerun finds R's range staged and only
//! deletes F); F deleted (nothing left to do). No letter is staged twice
//! (the chain: a range is staged once, a second copy of its file has every
//! row at or below the watermark and the compactor drops it; and a letter
//! is either in R or named by R's header, never both), and none is lost: a
//! letter is either a row (staged before F is deleted) or in R (written
//! before anything is staged). Retiring is deleting F, which is idempotent.
//! A second replay long after the first finds F gone: nothing of it can
//! be staged again. One that finds F still there (its retirement was
//! interrupted) finds R's range committed: the watermark of S's replay
//! chain is a `txn` entry the log keeps for as long as the table, like a
//! source partition's, so this holds however late the rerun comes. R's
//! letters are the ones not staged; replayed later, they take a range of
//! their own further on the chain. Letters that fail again are never
//! dropped: they are in R with their new reason, and R is an ordinary
//! dead-letter file (listed, shown, erased by `forget`, expired by
//! retention, replayable later).
//!
//! Between the decision and the rerun, `forget` or retention may rewrite F
//! (and R): a letter erased (payload blanked) or expired (dropped) since is
//! not staged, as a letter erased from a staged row file is not committed.
//!
//! Left alone (reported): letters whose payload was cut at
//! `ingest.dead_letter_max_payload_bytes` or blanked by an erasure (not
//! whole, so not decodable), and the compactor's own dead letters
//! (`*.compactor.avro`: rows the table's column types rejected, stored as
//! JSON rows, not as messages). Dead letters keep no source metadata
//! columns (`_kafka_offset`, …), so replayed rows have none.
//!
//! Erasure applies as to any staged row: the compactor drops rows of
//! open requests and of the erasure ledger, and `forget` erases staged
//! row files (the replay stream's too) and dead-letter files (R's too).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Serialize;
use tributary_config::IngestConfig;
use tributary_ingest::batch::{BatchSettings, ColumnTypes};
use tributary_ingest::replay::{Replayed, message_of, replay_letters};
use tributary_ingest::schemas::{self, Schemas};
use tributary_lake::chain::StageOutcome;
use tributary_lake::dead_letter::{StoredLetter, encode_stored, read_dead_letters};
use tributary_lake::lease::{Lease, owner_id};
use tributary_lake::rowfile::RowFile;
use tributary_lake::{Lake, PartitionId, chain, columns};

use super::{Selection, dead_letter_files, partition_of};
use crate::error::{Error, Result};
use crate::progress::Progress;

mod remainder;
#[cfg(test)]
mod tests;

use remainder::{Decided, Decision, LetterId, remainder_letters, remainder_path};
pub use remainder::{
    META_REPLAY_FIRST, META_REPLAY_LAST, META_REPLAY_LETTERS, META_REPLAY_OF, META_REPLAY_STAGED,
};

/// The stream whose partitions are the replay chains of source partitions
/// (partition `<stream>/<partition>` of the source, in its safe form).
pub const REPLAY_STREAM: &str = "dead-letter-replay";

/// The lease a replay holds while it writes (one replay at a time per
/// table: it hands out positions on the replay chains).
pub const REPLAY_LEASE: &str = "dead-letter-replay";

/// For the crash tests: `<step>:<n>` (`decided` or `staged`) makes a replay
/// wait to be killed after that step of the `n`th file it works on.
pub const PAUSE_AFTER_VARIABLE: &str = "TRIBUTARY_REPLAY_PAUSE_AFTER";

/// How long the lease lasts; renewed before each file once half is gone.
const LEASE_DURATION: Duration = Duration::from_secs(600);

/// Time the lease must still have left when the replay writes.
const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// What `tributary dead-letters replay` did (or, with `--dry-run`, would do).
#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// Dead-letter files read.
    pub files_read: u64,
    /// Letters the selection picked.
    pub letters_selected: u64,
    /// Letters that became rows (some of their elements may fail again).
    pub replayed: u64,
    /// Rows staged.
    pub staged_rows: u64,
    /// Letters that fail again, by their new reason.
    pub still_failing: BTreeMap<String, u64>,
    /// Selected letters whose payload is not whole (cut at
    /// `ingest.dead_letter_max_payload_bytes`, or blanked by an erasure):
    /// kept as they are.
    pub not_replayable: u64,
    /// Letters a stopped replay had decided to stage that were erased or
    /// expired since: not staged.
    pub decided_letters_gone: u64,
    /// Files whose replay an earlier run had staged (it was interrupted
    /// before retiring them).
    pub files_already_staged: u64,
    /// Files deleted: every letter replayed or carried into a remainder.
    pub files_retired: u64,
    /// Remainder files written (`<name>.r<n>.avro`).
    pub remainder_files: u64,
    /// The compactor's own dead-letter files, which are not replayed.
    pub compactor_files_skipped: u64,
    /// Remainders of files a stopped replay had not retired: this run
    /// finished those files; the remainders are replayed by the next run.
    pub remainders_waiting: u64,
    /// Files of batches ingest has not staged yet (it may still stage
    /// their messages itself): left for a later replay.
    pub files_not_committed: u64,
    /// Files in which two letters have the same source position and
    /// element (never written by ingest): left alone, as their letters
    /// cannot be named.
    pub files_with_duplicate_letters: u64,
}

/// Replays the dead letters `selection` picks with `config`'s decoder,
/// registry and flattening into `lake`'s staging (see the module docs).
/// Fails with `LeaseHeld` while another replay of the table runs.
pub async fn replay(
    lake: &Lake,
    config: &IngestConfig,
    selection: &Selection,
    dry_run: bool,
) -> Result<ReplayReport> {
    let pause_after = std::env::var(PAUSE_AFTER_VARIABLE).ok().and_then(|v| {
        let (step, n) = v.split_once(':')?;
        Some((step.to_string(), n.parse().ok()?))
    });
    replay_pausing(lake, config, selection, dry_run, pause_after).await
}

/// [`replay`], waiting forever after step `pause_after` (see
/// [`PAUSE_AFTER_VARIABLE`]).
async fn replay_pausing(
    lake: &Lake,
    config: &IngestConfig,
    selection: &Selection,
    dry_run: bool,
    pause_after: Option<(String, u64)>,
) -> Result<ReplayReport> {
    let store = lake.store().as_ref();
    let lease = if dry_run {
        None
    } else {
        let wait = Duration::ZERO;
        Some(Lease::acquire(store, REPLAY_LEASE, owner_id(), LEASE_DURATION, wait).await?)
    };
    let mut replayer = Replayer::new(lake, config, dry_run, lease, pause_after).await?;
    let result = replayer.run(selection).await;
    if let Some(lease) = replayer.lease.take()
        && let Err(error) = lease.release(store).await
    {
        tracing::warn!(%error, "could not release the replay lease; it will expire");
    }
    result.map(|()| replayer.report)
}

struct Replayer<'a> {
    lake: &'a Lake,
    settings: BatchSettings,
    registry: Option<tributary_schema_registry::client::Client>,
    types: ColumnTypes,
    table: Option<deltalake::DeltaTable>,
    report: ReplayReport,
    lease: Option<Lease>,
    pause_after: Option<(String, u64)>,
    /// Files worked on (selected letters, not already staged).
    worked: u64,
    /// Where each source partition's chain is committed up to (resume
    /// point: staged or in the table), as read once per run.
    committed: HashMap<PartitionId, Option<u64>>,
    /// The next free position of each replay chain this run handed out
    /// a range of.
    next: HashMap<PartitionId, u64>,
}

impl<'a> Replayer<'a> {
    async fn new(
        lake: &'a Lake,
        config: &IngestConfig,
        dry_run: bool,
        lease: Option<Lease>,
        pause_after: Option<(String, u64)>,
    ) -> Result<Self> {
        let table = lake.load_table().await?;
        let mut types = ColumnTypes::from_config(&config.flatten);
        if let Some(table) = &table {
            for (name, ty) in columns::table_columns(table)? {
                types.fix_table_column(&name, ty);
            }
        }
        Ok(Self {
            lake,
            settings: BatchSettings::from_config(config),
            registry: schemas::client(config).await?,
            types,
            table,
            report: ReplayReport {
                dry_run,
                ..Default::default()
            },
            lease,
            pause_after,
            worked: 0,
            committed: HashMap::new(),
            next: HashMap::new(),
        })
    }

    /// Finishes every file a stopped replay decided, then replays what
    /// `selection` picks.
    async fn run(&mut self, selection: &Selection) -> Result<()> {
        let files = dead_letter_files(self.lake).await?;
        let listed: BTreeSet<Path> = files.iter().map(|m| m.location.clone()).collect();
        let mut progress = Progress::new("dead-letter files replayed", files.len() as u64);
        // A stopped replay's decisions first, whatever the selection is now:
        // no range is handed out while one it decided may still be staged.
        let (decided, fresh): (Vec<_>, Vec<_>) = files
            .into_iter()
            .partition(|meta| listed.contains(&remainder_path(&meta.location)));
        for meta in decided {
            let remainder = remainder_path(&meta.location);
            self.file(&meta.location, &remainder, None, &listed).await?;
            progress.step();
        }
        for meta in fresh {
            let partition = partition_of(&meta.location);
            if selection.file(&partition, &meta) {
                let remainder = remainder_path(&meta.location);
                self.file(&meta.location, &remainder, Some(selection), &listed)
                    .await?;
            }
            progress.step();
        }
        Ok(())
    }

    async fn pause(&self, step: &str) {
        if self
            .pause_after
            .as_ref()
            .is_some_and(|(s, n)| s == step && *n == self.worked)
        {
            eprintln!("replay paused after {step} of file {}", self.worked);
            std::future::pending::<()>().await;
        }
    }

    /// Renews the lease once half of it is gone, and fails if it is about
    /// to run out: called before each file and each write.
    async fn hold_lease(&mut self) -> Result<()> {
        let store = self.lake.store().as_ref();
        if let Some(lease) = self.lease.as_mut() {
            if !lease.is_valid(LEASE_DURATION / 2) {
                lease.renew(store).await?;
            }
            lease.ensure_valid(LEASE_MARGIN)?;
        }
        Ok(())
    }

    /// Replays the letters `selection` picks of the dead-letter file at
    /// `path`; with no selection, finishes what an earlier run decided for
    /// it (its `remainder` exists). `listed` is every dead-letter file.
    async fn file(
        &mut self,
        path: &Path,
        remainder: &Path,
        selection: Option<&Selection>,
        listed: &BTreeSet<Path>,
    ) -> Result<()> {
        if path.as_ref().ends_with(".compactor.avro") {
            self.report.compactor_files_skipped += 1;
            return Ok(());
        }
        let (Some(source), Some(name)) = (source_partition(path), path.filename()) else {
            return Ok(());
        };
        self.hold_lease().await?;
        let bytes = match tributary_lake::read_object(self.lake.store().as_ref(), path).await {
            Ok(bytes) => bytes,
            // Retired by another replay since the listing.
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let (_, metadata) = RowFile::read_header(&bytes, path.as_ref())?;
        let origin = metadata
            .get(META_REPLAY_OF)
            .map(|o| Path::from(String::from_utf8_lossy(o).as_ref()));
        if origin.as_ref().is_some_and(|o| listed.contains(o)) {
            // The remainder of a file a stopped replay has not retired yet:
            // its letters may still become rows from there (this run
            // finishes that file first); replay this one next time.
            self.report.remainders_waiting += 1;
            return Ok(());
        }
        let extent = chain::last_position(&metadata, path.as_ref())?;
        if origin.is_none() && !self.batch_committed(&source, extent).await? {
            // Ingest writes a batch's dead letters before its row file, the
            // commit point: until that is staged, ingest may read the batch
            // again and stage these messages itself.
            self.report.files_not_committed += 1;
            return Ok(());
        }
        let letters = read_dead_letters(&bytes, path.as_ref())?;
        self.report.files_read += 1;
        if letters.is_empty() && origin.is_some() && !self.report.dry_run {
            // A decision that carried no letter, of a file retired since.
            return self.delete(path).await;
        }
        let Some(selection) = selection else {
            return self
                .resume(path, remainder, &source, (name, extent), &letters)
                .await;
        };
        let names: BTreeSet<LetterId> = letters.iter().map(LetterId::of).collect();
        if names.len() != letters.len() {
            self.report.files_with_duplicate_letters += 1;
            return Ok(());
        }
        let mut selected = Vec::new();
        for (index, letter) in letters.iter().enumerate() {
            if !selection.reason(&letter.reason) {
                continue;
            }
            self.report.letters_selected += 1;
            if letter.is_whole() {
                selected.push(index);
            } else {
                self.report.not_replayable += 1;
            }
        }
        if selected.is_empty() {
            return Ok(());
        }
        self.worked += 1;
        let chain_id = replay_chain(&source);
        let first = self.next_position(&chain_id).await?;
        let last = first + selected.len() as u64 - 1;
        // Each selected letter's position on the chain, and back.
        let chosen: Vec<(u64, StoredLetter)> = (first..)
            .zip(&selected)
            .map(|(at, &index)| (at, letters[index].clone()))
            .collect();
        let index_at: BTreeMap<u64, usize> = (first..).zip(selected.iter().copied()).collect();
        let replayed = self
            .decode(&source, &chain_id, (first, last), &chosen)
            .await?;
        self.count(&replayed);
        let unchanged = replayed.replayed.is_empty()
            && replayed.failed.iter().all(|(at, new)| {
                let old = index_at.get(at).and_then(|&i| letters.get(i));
                old.is_some_and(|old| {
                    (&old.reason, &old.error, old.element) == (&new.reason, &new.error, new.element)
                })
            });
        if unchanged || self.report.dry_run {
            return Ok(());
        }
        let decision = Decision {
            first,
            last,
            letters: replayed
                .replayed
                .iter()
                .filter_map(|at| index_at.get(at).map(|&i| LetterId::of(&letters[i])))
                .collect(),
        };
        let carried = remainder_letters(&letters, &index_at, &replayed);
        self.write_remainder(path, remainder, &carried, &decision)
            .await?;
        self.pause("decided").await;
        self.stage(&chain_id, &decision, &replayed).await?;
        self.pause("staged").await;
        self.retire(path, remainder, carried.is_empty()).await
    }

    /// Finishes the replay of the file at `path` (named `name`, covering
    /// source positions up to `extent`) that an earlier run decided (it
    /// wrote `remainder`) and was stopped before retiring: stages the
    /// letters that run decided become rows that `letters` (the file as it
    /// is now) still holds whole, unless their range is staged already,
    /// and retires the file.
    async fn resume(
        &mut self,
        path: &Path,
        remainder: &Path,
        source: &PartitionId,
        (name, extent): (&str, u64),
        letters: &[StoredLetter],
    ) -> Result<()> {
        let (decided, carries) = remainder::decision(self.lake, remainder, path).await?;
        let decision = match decided {
            Decided::Named(decision) => decision,
            Decided::Indexed => {
                // Its chain was the file's own; a rewrite of the file since
                // may have shifted the indexes its header names.
                let own = PartitionId::new(REPLAY_STREAM, &format!("{source}/{name}/{extent}"));
                if self.range_staged(&own, 0).await? {
                    self.report.files_already_staged += 1;
                    return self.retire(path, remainder, !carries).await;
                }
                return Err(Error::ReplayIndexedRemainder {
                    path: path.to_string(),
                    remainder: remainder.to_string(),
                });
            }
        };
        let chain_id = replay_chain(source);
        if !decision.letters.is_empty() && self.range_staged(&chain_id, decision.first).await? {
            self.report.files_already_staged += 1;
            return self.retire(path, remainder, !carries).await;
        }
        self.worked += 1;
        // The decided letters the file still holds whole: one erased
        // (blanked) or expired (dropped) since is left out.
        let now: HashMap<LetterId, &StoredLetter> =
            letters.iter().map(|l| (LetterId::of(l), l)).collect();
        let chosen: Vec<(u64, StoredLetter)> = (decision.first..)
            .zip(&decision.letters)
            .filter_map(|(at, id)| now.get(id).map(|l| (at, (*l).clone())))
            .filter(|(_, l)| l.is_whole())
            .collect();
        self.report.decided_letters_gone += (decision.letters.len() - chosen.len()) as u64;
        let range = (decision.first, decision.last);
        let replayed = self.decode(source, &chain_id, range, &chosen).await?;
        if let Some((at, letter)) = replayed
            .failed
            .iter()
            .find(|(at, _)| !replayed.replayed.contains(at))
        {
            return Err(Error::ReplayDecidedLetterFails {
                path: path.to_string(),
                remainder: remainder.to_string(),
                letter: LetterId::of(letter).to_string(),
                at: *at,
                failure: format!("{}: {}", letter.reason, letter.error),
            });
        }
        self.count(&replayed);
        if self.report.dry_run {
            return Ok(());
        }
        self.stage(&chain_id, &decision, &replayed).await?;
        self.pause("staged").await;
        self.retire(path, remainder, !carries).await
    }

    /// Whether `source`'s chain has staged (or committed) past `last`.
    async fn batch_committed(&mut self, source: &PartitionId, last: u64) -> Result<bool> {
        let resume = match self.committed.get(source) {
            Some(resume) => *resume,
            None => {
                let watermark = self.lake.watermark(self.table.as_ref(), source).await?;
                let resume =
                    chain::resume_after(self.lake.store().as_ref(), source, watermark).await?;
                self.committed.insert(source.clone(), resume);
                resume
            }
        };
        Ok(resume.is_some_and(|r| r >= last))
    }

    /// The table's watermark for `chain_id`, read from the table as it is
    /// now (the compactor may have committed since this run began).
    async fn fresh_watermark(&mut self, chain_id: &PartitionId) -> Result<Option<u64>> {
        self.table = self.lake.load_table().await?;
        Ok(self.lake.watermark(self.table.as_ref(), chain_id).await?)
    }

    /// Whether the range of `chain_id` that starts at `first` is staged or
    /// committed. The staged file is looked for first: the compactor
    /// commits before it deletes one, so one gone since is in the
    /// watermark read after.
    async fn range_staged(&mut self, chain_id: &PartitionId, first: u64) -> Result<bool> {
        let file = chain_id.staged_file(first);
        match self.lake.store().head(&file).await {
            Ok(_) => return Ok(true),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(tributary_lake::Error::store(&file, e).into()),
        }
        Ok(self
            .fresh_watermark(chain_id)
            .await?
            .is_some_and(|w| w >= first))
    }

    /// The first free position of `chain_id`: past its newest staged file
    /// and its watermark (read in that order, see [`Self::range_staged`]),
    /// and past every range this run handed out.
    async fn next_position(&mut self, chain_id: &PartitionId) -> Result<u64> {
        if let Some(next) = self.next.get(chain_id) {
            return Ok(*next);
        }
        let store = self.lake.store().as_ref();
        let staged = match chain::staged_files(store, chain_id).await?.last() {
            Some(newest) => Some(chain::last_position_of(store, &newest.path).await?),
            None => None,
        };
        let watermark = self.fresh_watermark(chain_id).await?;
        let next = staged.max(watermark).map_or(0, |last| last + 1);
        self.next.insert(chain_id.clone(), next);
        Ok(next)
    }

    /// Resolves the letters' schemas (waiting out a registry outage, as
    /// ingest does) and decodes them off the reactor.
    async fn decode(
        &mut self,
        source: &PartitionId,
        chain_id: &PartitionId,
        range: (u64, u64),
        letters: &[(u64, StoredLetter)],
    ) -> Result<Replayed> {
        let items: Vec<_> = letters.iter().map(|(_, l)| message_of(l)).collect();
        let schemas = Schemas::resolve(self.registry.as_ref(), &items, |reference, error, wait| {
            tracing::warn!(
                schema = %tributary_schema_registry::client::describe(reference),
                %error,
                retry_in_ms = wait.as_millis() as u64,
                "waiting for the schema registry"
            );
        })
        .await;
        let (source, chain_id) = (source.clone(), chain_id.clone());
        let settings = self.settings.clone();
        let mut types = std::mem::take(&mut self.types);
        let letters = letters.to_vec();
        let (types, replayed) = tokio::task::spawn_blocking(move || {
            let replayed = replay_letters(
                &source, &chain_id, range, &settings, &schemas, &mut types, &letters,
            );
            (types, replayed)
        })
        .await
        .map_err(Error::Worker)?;
        self.types = types;
        Ok(replayed?)
    }

    fn count(&mut self, replayed: &Replayed) {
        self.report.replayed += replayed.replayed.len() as u64;
        self.report.staged_rows += replayed.rows;
        for (_, letter) in &replayed.failed {
            *self
                .report
                .still_failing
                .entry(letter.reason.clone())
                .or_default() += 1;
        }
    }

    /// Puts the remainder of `of` create-only: `letters`, with `decision`
    /// in its header.
    async fn write_remainder(
        &mut self,
        of: &Path,
        remainder: &Path,
        letters: &[StoredLetter],
        decision: &Decision,
    ) -> Result<()> {
        let first = letters.iter().map(|l| l.position).min().unwrap_or(0);
        let last = letters.iter().map(|l| l.position).max().unwrap_or(0);
        let source = source_partition(of).unwrap_or_else(|| PartitionId::new("unknown", "unknown"));
        let metadata = chain::file_metadata(&source, first, last)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain([(META_REPLAY_OF.to_string(), of.to_string())])
            .chain(decision.metadata());
        let body = encode_stored(letters, self.settings.codec, metadata)?;
        self.hold_lease().await?;
        let options = PutOptions::from(PutMode::Create);
        match self
            .lake
            .store()
            .put_opts(remainder, PutPayload::from(body), options)
            .await
        {
            Ok(_) => {
                self.report.remainder_files += 1;
                Ok(())
            }
            Err(object_store::Error::AlreadyExists { .. }) => Err(Error::ReplayRaced {
                path: of.to_string(),
                remainder: remainder.to_string(),
            }),
            Err(e) => Err(tributary_lake::Error::store(remainder, e).into()),
        }
    }

    /// Stages `replayed`'s row file at `decision`'s range of `chain_id`.
    async fn stage(
        &mut self,
        chain_id: &PartitionId,
        decision: &Decision,
        replayed: &Replayed,
    ) -> Result<()> {
        if let Some(next) = self.next.get_mut(chain_id) {
            *next = (*next).max(decision.last + 1);
        }
        let Some(file) = &replayed.row_file else {
            return Ok(());
        };
        self.hold_lease().await?;
        let store = self.lake.store().as_ref();
        match chain::stage(store, chain_id, decision.first, file.clone()).await? {
            StageOutcome::Staged => Ok(()),
            // Only this replay's decision stages at its range, and only
            // after checking it is not staged: a file there is a writer
            // that did not hold the lease.
            StageOutcome::AlreadyStaged { existing_last } if existing_last == decision.last => {
                Ok(())
            }
            StageOutcome::AlreadyStaged { existing_last } => Err(Error::ReplayChainClash {
                path: chain_id.staged_file(decision.first).to_string(),
                existing_last,
                decided_last: decision.last,
                lease: REPLAY_LEASE,
            }),
        }
    }

    /// Deletes the replayed file at `path`, and its `remainder` when that
    /// holds no letter (it only recorded the decision).
    async fn retire(&mut self, path: &Path, remainder: &Path, empty_remainder: bool) -> Result<()> {
        if self.report.dry_run {
            return Ok(());
        }
        self.delete(path).await?;
        self.report.files_retired += 1;
        if empty_remainder {
            self.delete(remainder).await?;
        }
        Ok(())
    }

    async fn delete(&self, path: &Path) -> Result<()> {
        match self.lake.store().delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(tributary_lake::Error::store(path, e).into()),
        }
    }
}

/// The replay chain of source partition `source`.
fn replay_chain(source: &PartitionId) -> PartitionId {
    PartitionId::new(REPLAY_STREAM, &source.to_string())
}

/// The source partition of a dead-letter file from its path
/// (`_tributary/dead-letter/<stream>/<partition>/<name>`).
fn source_partition(path: &Path) -> Option<PartitionId> {
    let (stream, partition) = partition_of(path)
        .split_once('/')
        .map(|(s, p)| (s.to_string(), p.to_string()))?;
    PartitionId::from_safe_parts(&stream, &partition)
}
